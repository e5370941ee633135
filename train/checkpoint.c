/* train/checkpoint.c — HDF5 checkpoint files: atomic write (tmp → fsync → rename → fsync dir →
 * `latest`), keep_last pruning, directory resolution and checked reads. See checkpoint.h.
 *
 * Every HDF5 call goes through VNM_H5_CHECK, which turns a failure into a message naming the file,
 * the object, HDF5's innermost error and this file's line; HDF5's own stack printing is off. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#define LATEST "latest"
#define LATEST_TMP "latest.tmp"

struct vnm_ckpt_writer {
    char dir[PATH_MAX];  /* <run>/ckpt */
    char tmp[PATH_MAX];  /* <dir>/step_XXXXXXXX.h5.tmp */
    char name[64];       /* step_XXXXXXXX.h5 */
    int64_t step;
    hid_t file;
    bool failed;         /* some write failed: the file is incomplete and must not be committed */
    bool have_meta;
};

struct vnm_ckpt_reader {
    char file_path[PATH_MAX];
    hid_t file;
    int64_t step;
};

/* ---- errors ---- */

/* System-call failure: the message ends with strerror(errno). */
static vnm_status sys_fail(char *err, size_t err_len, const char *what, const char *path)
{
    return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "checkpoint: %s %s: %s", what, path,
                     strerror(errno));
}

static herr_t innermost_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    if (n == 0 && e->desc) snprintf((char *)data, 256, "%s", e->desc);
    return 0;
}

static vnm_status h5_fail(char *err, size_t err_len, vnm_status st, const char *src, int line,
                          const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static vnm_status h5_fail(char *err, size_t err_len, vnm_status st, const char *src, int line,
                          const char *fmt, ...)
{
    char what[768], hint[256] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_cb, hint);
    H5Eclear2(H5E_DEFAULT);
    return vnm_errbuf(err, err_len, st, "%s (HDF5: %s) [%s:%d]", what,
                     hint[0] ? hint : "no detail", src, line);
}

/* Needs `err`, `err_len`, a `vnm_status rc` and a `fail:` label in scope; a negative result (HDF5's
 * failure value for both hid_t and herr_t) sets rc and jumps there. */
#define VNM_H5_CHECK(call, st, ...)                                                          \
    do {                                                                                     \
        if ((call) < 0) {                                                                    \
            rc = h5_fail(err, err_len, (st), __FILE__, __LINE__, __VA_ARGS__);              \
            goto fail;                                                                       \
        }                                                                                    \
    } while (0)

static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* ---- names and types ---- */

const char *vnm_ckpt_dtype_name(vnm_ckpt_dtype dt)
{
    switch (dt) {
    case VNM_CKPT_F32: return "f32";
    case VNM_CKPT_BF16: return "bf16";
    case VNM_CKPT_U8: return "u8";
    case VNM_CKPT_I32: return "i32";
    case VNM_CKPT_I64: return "i64";
    case VNM_CKPT_U64: return "u64";
    case VNM_CKPT_F64: return "f64";
    }
    return "?";
}

static bool dtype_valid(vnm_ckpt_dtype dt) { return dt >= VNM_CKPT_F32 && dt <= VNM_CKPT_F64; }

static hid_t mem_type(vnm_ckpt_dtype dt)
{
    switch (dt) {
    case VNM_CKPT_F32: return H5T_NATIVE_FLOAT;
    case VNM_CKPT_BF16: return H5T_NATIVE_UINT16;
    case VNM_CKPT_U8: return H5T_NATIVE_UINT8;
    case VNM_CKPT_I32: return H5T_NATIVE_INT32;
    case VNM_CKPT_I64: return H5T_NATIVE_INT64;
    case VNM_CKPT_U64: return H5T_NATIVE_UINT64;
    case VNM_CKPT_F64: return H5T_NATIVE_DOUBLE;
    }
    return -1;
}

/* Little-endian on disk whatever the host, so files move between machines unchanged. */
static hid_t file_type(vnm_ckpt_dtype dt)
{
    switch (dt) {
    case VNM_CKPT_F32: return H5T_IEEE_F32LE;
    case VNM_CKPT_BF16: return H5T_STD_U16LE;
    case VNM_CKPT_U8: return H5T_STD_U8LE;
    case VNM_CKPT_I32: return H5T_STD_I32LE;
    case VNM_CKPT_I64: return H5T_STD_I64LE;
    case VNM_CKPT_U64: return H5T_STD_U64LE;
    case VNM_CKPT_F64: return H5T_IEEE_F64LE;
    }
    return -1;
}

static void fmt_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < len) snprintf(buf + k, len - k, "]");
}

/* True for exactly "step_" + at least 8 digits + ".h5": nothing else in a ckpt dir is ever pruned
 * or resolved to. */
static bool parse_step_name(const char *name, int64_t *step)
{
    if (strncmp(name, "step_", 5) != 0) return false;
    const char *p = name + 5, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q - p < 8 || q - p > 18 || strcmp(q, ".h5") != 0) return false;
    *step = strtoll(p, NULL, 10);
    return true;
}

static bool is_stale_tmp(const char *name)
{
    size_t n = strlen(name);
    if (strcmp(name, LATEST_TMP) == 0) return true;
    if (n < 5 || strcmp(name + n - 4, ".tmp") != 0) return false;
    char base[256];
    if (n - 4 >= sizeof base) return false;
    memcpy(base, name, n - 4);
    base[n - 4] = '\0';
    int64_t step;
    return parse_step_name(base, &step);
}

/* ---- file-system helpers ---- */

static vnm_status mkdir_p(const char *path, char *err, size_t err_len)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint: path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return sys_fail(err, err_len, "cannot create directory", buf);
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return sys_fail(err, err_len, "cannot create directory", buf);
    return VNM_OK;
}

/* fsync of a file's data, or of a directory's entries (so a rename survives a power cut). */
static vnm_status fsync_path(const char *path, bool is_dir, char *err, size_t err_len)
{
    int fd = open(path, is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return sys_fail(err, err_len, "cannot open for fsync", path);
    int r = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return r == 0 ? VNM_OK : sys_fail(err, err_len, "fsync failed on", path);
}

/* dir/name into out[PATH_MAX]; false if it does not fit. */
static bool path_join(char *out, const char *dir, const char *name)
{
    return snprintf(out, PATH_MAX, "%s/%s", dir, name) < PATH_MAX;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Steps of the complete checkpoints in dir, descending; *steps is malloc'd. */
static vnm_status list_steps(const char *dir, int64_t **steps, int64_t *count, char *err,
                             size_t err_len)
{
    *steps = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return sys_fail(err, err_len, "cannot read directory", dir);
    int64_t cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        int64_t s;
        if (!parse_step_name(e->d_name, &s)) continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *grown = realloc(*steps, (size_t)cap * sizeof *grown);
            if (!grown) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "checkpoint: out of memory");
            }
            *steps = grown;
        }
        (*steps)[(*count)++] = s;
    }
    closedir(d);
    for (int64_t a = 1; a < *count; a++) /* insertion sort, descending: a handful of files */
        for (int64_t b = a; b > 0 && (*steps)[b - 1] < (*steps)[b]; b--) {
            int64_t t = (*steps)[b];
            (*steps)[b] = (*steps)[b - 1];
            (*steps)[b - 1] = t;
        }
    return VNM_OK;
}

static void step_name(char *buf, size_t len, int64_t step)
{
    snprintf(buf, len, "step_%08lld.h5", (long long)step);
}

/* ---- writing ---- */

/* Creates (or replaces) scalar attribute `name` on an open object. */
static vnm_status write_attr(hid_t obj, const char *file, const char *path, const char *name,
                             hid_t type, const void *value, char *err, size_t err_len)
{
    vnm_status rc = VNM_OK;
    hid_t space = -1, attr = -1;
    htri_t exists;
    VNM_H5_CHECK(space = H5Screate(H5S_SCALAR), VNM_ERR_RUNTIME,
                 "checkpoint %s: %s: cannot create dataspace for attribute %s", file, path, name);
    VNM_H5_CHECK(exists = H5Aexists(obj, name), VNM_ERR_RUNTIME,
                 "checkpoint %s: %s: cannot look up attribute %s", file, path, name);
    if (exists)
        VNM_H5_CHECK(H5Adelete(obj, name), VNM_ERR_RUNTIME,
                     "checkpoint %s: %s: cannot replace attribute %s", file, path, name);
    VNM_H5_CHECK(attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT),
                 VNM_ERR_RUNTIME, "checkpoint %s: %s: cannot create attribute %s", file, path,
                 name);
    VNM_H5_CHECK(H5Awrite(attr, type, value), VNM_ERR_RUNTIME,
                 "checkpoint %s: %s: cannot write attribute %s", file, path, name);
fail:
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    return rc;
}

/* Variable-length UTF-8: what h5py reads back as str. */
static hid_t utf8_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static hid_t lcpl_intermediate(void)
{
    hid_t p = H5Pcreate(H5P_LINK_CREATE);
    if (p >= 0 && H5Pset_create_intermediate_group(p, 1) < 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

/* Whether `path` names an object; a missing intermediate group is "no", not an error. */
static htri_t path_exists(hid_t file, const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    if (strcmp(buf, "/") == 0) return 1;
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        htri_t e = H5Lexists(file, buf, H5P_DEFAULT);
        if (e <= 0) return e;
        if (c == '\0') return 1;
        *p = c;
    }
}

static vnm_status writer_check(const vnm_ckpt_writer *w, const char *path, const char *what,
                               char *err, size_t err_len)
{
    if (!w) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: writer is NULL", what);
    if (!path || path[0] != '/')
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                         "checkpoint %s: %s: path must be absolute (start with '/'), got '%s'",
                         w->tmp, what, path ? path : "(null)");
    return VNM_OK;
}

vnm_ckpt_writer *vnm_ckpt_begin(const char *dir, int64_t step, char *err, size_t err_len)
{
    h5_quiet();
    if (!dir || !dir[0]) {
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint: run directory is empty");
        return NULL;
    }
    if (step < 0) {
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: step must be >= 0, got %lld", dir,
                  (long long)step);
        return NULL;
    }
    vnm_ckpt_writer *w = calloc(1, sizeof *w);
    if (!w) {
        vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "checkpoint: out of memory");
        return NULL;
    }
    w->file = -1;
    w->step = step;
    step_name(w->name, sizeof w->name, step);
    if (snprintf(w->dir, sizeof w->dir, "%s/ckpt", dir) >= (int)sizeof w->dir ||
        snprintf(w->tmp, sizeof w->tmp, "%s/%s.tmp", w->dir, w->name) >= (int)sizeof w->tmp) {
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint: path too long: %s", dir);
        free(w);
        return NULL;
    }
    if (mkdir_p(w->dir, err, err_len) != VNM_OK) {
        free(w);
        return NULL;
    }
    /* A writer killed mid-save leaves its .tmp behind; only one writer per directory exists. */
    DIR *d = opendir(w->dir);
    if (!d) {
        sys_fail(err, err_len, "cannot read directory", w->dir);
        free(w);
        return NULL;
    }
    for (struct dirent *e; (e = readdir(d));) {
        char p[PATH_MAX];
        if (is_stale_tmp(e->d_name) && path_join(p, w->dir, e->d_name))
            unlink(p);
    }
    closedir(d);
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        h5_fail(err, err_len, VNM_ERR_RUNTIME, __FILE__, __LINE__,
                "checkpoint %s: cannot create file", w->tmp);
        free(w);
        return NULL;
    }
    return w;
}

static vnm_status set_attr(vnm_ckpt_writer *w, const char *path, const char *name, hid_t type,
                           const void *value, char *err, size_t err_len)
{
    vnm_status rc = writer_check(w, path, "attribute", err, err_len);
    if (rc != VNM_OK) return rc;
    if (!name || !name[0]) {
        w->failed = true;
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: %s: attribute name is empty",
                         w->tmp, path);
    }
    hid_t obj = -1, lcpl = -1;
    htri_t exists;
    VNM_H5_CHECK(exists = path_exists(w->file, path), VNM_ERR_RUNTIME,
                 "checkpoint %s: cannot look up %s", w->tmp, path);
    if (exists) {
        VNM_H5_CHECK(obj = H5Oopen(w->file, path, H5P_DEFAULT), VNM_ERR_RUNTIME,
                     "checkpoint %s: cannot open %s", w->tmp, path);
    } else {
        VNM_H5_CHECK(lcpl = lcpl_intermediate(), VNM_ERR_RUNTIME,
                     "checkpoint %s: cannot create property list", w->tmp);
        VNM_H5_CHECK(obj = H5Gcreate2(w->file, path, lcpl, H5P_DEFAULT, H5P_DEFAULT),
                     VNM_ERR_RUNTIME, "checkpoint %s: cannot create group %s", w->tmp, path);
    }
    rc = write_attr(obj, w->tmp, path, name, type, value, err, err_len);
fail:
    if (obj >= 0) H5Oclose(obj);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (rc != VNM_OK) w->failed = true;
    return rc;
}

vnm_status vnm_ckpt_set_str(vnm_ckpt_writer *w, const char *path, const char *name,
                            const char *value, char *err, size_t err_len)
{
    if (w && !value) {
        w->failed = true;
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: %s: attribute %s is NULL",
                         w->tmp, path ? path : "(null)", name ? name : "(null)");
    }
    hid_t t = utf8_type();
    if (t < 0) {
        if (w) w->failed = true;
        return h5_fail(err, err_len, VNM_ERR_RUNTIME, __FILE__, __LINE__,
                       "checkpoint: cannot create string type");
    }
    vnm_status rc = set_attr(w, path, name, t, &value, err, err_len);
    H5Tclose(t);
    return rc;
}

vnm_status vnm_ckpt_set_i64(vnm_ckpt_writer *w, const char *path, const char *name, int64_t value,
                            char *err, size_t err_len)
{
    return set_attr(w, path, name, H5T_NATIVE_INT64, &value, err, err_len);
}

vnm_status vnm_ckpt_set_f64(vnm_ckpt_writer *w, const char *path, const char *name, double value,
                            char *err, size_t err_len)
{
    return set_attr(w, path, name, H5T_NATIVE_DOUBLE, &value, err, err_len);
}

vnm_status vnm_ckpt_write_meta(vnm_ckpt_writer *w, const vnm_ckpt_meta *meta, char *err,
                               size_t err_len)
{
    if (!w) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint meta: writer is NULL");
    if (!meta) {
        w->failed = true;
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: meta is NULL", w->tmp);
    }
    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    vnm_status rc;
    if ((rc = vnm_ckpt_set_str(w, "/", "format", VNM_CKPT_FORMAT, err, err_len)) ||
        (rc = vnm_ckpt_set_i64(w, "/", "format_version", VNM_CKPT_FORMAT_VERSION, err, err_len)) ||
        (rc = vnm_ckpt_set_i64(w, "/", "step", w->step, err, err_len)) ||
        (rc = vnm_ckpt_set_i64(w, "/", "epoch", meta->epoch, err, err_len)) ||
        (rc = vnm_ckpt_set_i64(w, "/", "stage_index", meta->stage_index, err, err_len)) ||
        (rc = vnm_ckpt_set_i64(w, "/", "stage_step", meta->stage_step, err, err_len)) ||
        (rc = vnm_ckpt_set_str(w, "/", "created", created, err, err_len)) ||
        (rc = vnm_ckpt_set_str(w, "/", "program_version", VNM_VERSION, err, err_len)) ||
        (rc = vnm_ckpt_set_str(w, "/", "recipe", meta->recipe ? meta->recipe : "", err,
                               err_len)))
        return rc;
    w->have_meta = true;
    return VNM_OK;
}

vnm_status vnm_ckpt_write(vnm_ckpt_writer *w, const char *path, vnm_ckpt_dtype dt, int ndim,
                          const int64_t *shape, const void *data, char *err, size_t err_len)
{
    vnm_status rc = writer_check(w, path, "dataset", err, err_len);
    if (rc != VNM_OK) return rc;
    hid_t space = -1, lcpl = -1, ds = -1, str_t = -1;
    int64_t numel = 1;
    hsize_t dims[VNM_CKPT_MAX_DIMS];
    if (!dtype_valid(dt)) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: dataset %s: invalid dtype %d",
                       w->tmp, path, (int)dt);
        goto fail;
    }
    if (ndim < 0 || ndim > VNM_CKPT_MAX_DIMS || (ndim > 0 && !shape)) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                       "checkpoint %s: dataset %s: ndim must be 0..%d with a shape, got %d",
                       w->tmp, path, VNM_CKPT_MAX_DIMS, ndim);
        goto fail;
    }
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) {
            char s[160];
            fmt_shape(s, sizeof s, ndim, shape);
            rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                           "checkpoint %s: dataset %s: negative dimension in shape %s", w->tmp,
                           path, s);
            goto fail;
        }
        dims[d] = (hsize_t)shape[d];
        numel *= shape[d];
    }
    if (numel > 0 && !data) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: dataset %s: data is NULL",
                       w->tmp, path);
        goto fail;
    }
    htri_t exists;
    VNM_H5_CHECK(exists = path_exists(w->file, path), VNM_ERR_RUNTIME,
                 "checkpoint %s: cannot look up %s", w->tmp, path);
    if (exists) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                       "checkpoint %s: dataset %s: already written", w->tmp, path);
        goto fail;
    }
    VNM_H5_CHECK(space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR),
                 VNM_ERR_RUNTIME, "checkpoint %s: dataset %s: cannot create dataspace", w->tmp,
                 path);
    VNM_H5_CHECK(lcpl = lcpl_intermediate(), VNM_ERR_RUNTIME,
                 "checkpoint %s: cannot create property list", w->tmp);
    VNM_H5_CHECK(ds = H5Dcreate2(w->file, path, file_type(dt), space, lcpl, H5P_DEFAULT,
                                 H5P_DEFAULT),
                 VNM_ERR_RUNTIME, "checkpoint %s: cannot create dataset %s", w->tmp, path);
    if (numel > 0)
        VNM_H5_CHECK(H5Dwrite(ds, mem_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
                     VNM_ERR_RUNTIME, "checkpoint %s: cannot write dataset %s", w->tmp, path);
    VNM_H5_CHECK(str_t = utf8_type(), VNM_ERR_RUNTIME,
                 "checkpoint %s: cannot create string type", w->tmp);
    const char *name = vnm_ckpt_dtype_name(dt);
    rc = write_attr(ds, w->tmp, path, "dtype", str_t, &name, err, err_len);
fail:
    if (str_t >= 0) H5Tclose(str_t);
    if (ds >= 0) H5Dclose(ds);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (space >= 0) H5Sclose(space);
    if (rc != VNM_OK) w->failed = true;
    return rc;
}

void vnm_ckpt_abort(vnm_ckpt_writer *w)
{
    if (!w) return;
    if (w->file >= 0) H5Fclose(w->file);
    unlink(w->tmp);
    free(w);
}

/* `latest` is replaced by rename, so a reader sees the old or the new name, never a torn one. */
static vnm_status write_latest(const char *dir, const char *name, char *err, size_t err_len)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    if (!path_join(tmp, dir, LATEST_TMP) || !path_join(dst, dir, LATEST))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint: path too long: %s", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return sys_fail(err, err_len, "cannot create", tmp);
    char line[80];
    int n = snprintf(line, sizeof line, "%s\n", name);
    bool ok = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    errno = saved;
    if (!ok) {
        unlink(tmp);
        return sys_fail(err, err_len, "cannot write", tmp);
    }
    if (rename(tmp, dst) != 0) return sys_fail(err, err_len, "cannot rename to", dst);
    return fsync_path(dir, true, err, err_len);
}

static vnm_status prune(const char *dir, int keep_last, int64_t keep_step, char *err,
                        size_t err_len)
{
    if (keep_last <= 0) return VNM_OK;
    int64_t *steps, n;
    vnm_status rc = list_steps(dir, &steps, &n, err, err_len);
    if (rc != VNM_OK) return rc;
    for (int64_t k = keep_last; k < n; k++) {
        if (steps[k] == keep_step) continue;
        char name[64], p[PATH_MAX];
        step_name(name, sizeof name, steps[k]);
        if (path_join(p, dir, name) && unlink(p) != 0 && errno != ENOENT) {
            rc = sys_fail(err, err_len, "cannot delete old checkpoint", p);
            break;
        }
    }
    free(steps);
    return rc;
}

vnm_status vnm_ckpt_commit(vnm_ckpt_writer *w, int keep_last, char *path_out, size_t path_len,
                           char *err, size_t err_len)
{
    if (!w) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint commit: writer is NULL");
    vnm_status rc = VNM_OK;
    char final[PATH_MAX];
    if (w->failed || !w->have_meta) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: not committed: %s", w->tmp,
                       w->failed ? "an earlier write failed"
                                 : "vnm_ckpt_write_meta was not called");
        vnm_ckpt_abort(w);
        return rc;
    }
    hid_t file = w->file;
    w->file = -1;
    VNM_H5_CHECK(H5Fclose(file), VNM_ERR_RUNTIME, "checkpoint %s: cannot close file", w->tmp);
    if ((rc = fsync_path(w->tmp, false, err, err_len)) != VNM_OK) goto fail;
    /* cannot overflow: w->tmp, the same path plus ".tmp", fitted */
    if (!path_join(final, w->dir, w->name) || rename(w->tmp, final) != 0) {
        rc = sys_fail(err, err_len, "cannot rename to", final);
        goto fail;
    }
    if (path_out && path_len) snprintf(path_out, path_len, "%s", final);
    /* From here the new file is complete; failures below leave it in place for the fallback. */
    if ((rc = fsync_path(w->dir, true, err, err_len)) == VNM_OK &&
        (rc = write_latest(w->dir, w->name, err, err_len)) == VNM_OK)
        rc = prune(w->dir, keep_last, w->step, err, err_len);
    free(w);
    return rc;
fail:
    vnm_ckpt_abort(w);
    return rc;
}

/* ---- reading ---- */

/* A directory resolves through `latest`, else to the highest complete step_*.h5. */
static vnm_status resolve(const char *path, char *out /* [PATH_MAX] */, char *err,
                          size_t err_len)
{
    if (is_file(path))
        return snprintf(out, PATH_MAX, "%s", path) < PATH_MAX
                   ? VNM_OK
                   : vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: path too long", path);
    if (!is_dir(path))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                         "checkpoint %s: no such file or directory (expected a checkpoint file, "
                         "a ckpt directory or a run directory)",
                         path);
    char dir[PATH_MAX], p[PATH_MAX];
    if (!path_join(p, path, "ckpt") || snprintf(dir, sizeof dir, "%s", is_dir(p) ? p : path) < 0 ||
        !path_join(p, dir, LATEST))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: path too long", path);
    FILE *f = fopen(p, "r");
    if (f) {
        char name[256] = "";
        bool got = fgets(name, sizeof name, f) != NULL;
        fclose(f);
        name[strcspn(name, "\r\n")] = '\0';
        int64_t s;
        if (got && parse_step_name(name, &s) &&
            path_join(out, dir, name) && is_file(out))
            return VNM_OK;
    }
    int64_t *steps, n;
    vnm_status rc = list_steps(dir, &steps, &n, err, err_len);
    if (rc != VNM_OK) return rc;
    if (n == 0)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                         "checkpoint %s: no checkpoint found (no step_*.h5 file)", dir);
    char name[64];
    step_name(name, sizeof name, steps[0]);
    free(steps);
    return path_join(out, dir, name)
               ? VNM_OK
               : vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: path too long", dir);
}

/* Opens scalar attribute `name` of object `path` and checks its HDF5 type class. */
static vnm_status open_attr(vnm_ckpt_reader *r, const char *path, const char *name,
                            H5T_class_t want, const char *want_name, hid_t *out, char *err,
                            size_t err_len)
{
    vnm_status rc = VNM_OK;
    hid_t obj = -1, attr = -1, type = -1, space = -1;
    htri_t e;
    *out = -1;
    if (!r || !path || !name)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint: reader, path or name is NULL");
    VNM_H5_CHECK(e = path_exists(r->file, path), VNM_ERR_INPUT,
                 "checkpoint %s: cannot look up %s", r->file_path, path);
    if (!e) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: no object %s", r->file_path,
                       path);
        goto fail;
    }
    VNM_H5_CHECK(obj = H5Oopen(r->file, path, H5P_DEFAULT), VNM_ERR_INPUT,
                 "checkpoint %s: cannot open %s", r->file_path, path);
    VNM_H5_CHECK(e = H5Aexists(obj, name), VNM_ERR_INPUT,
                 "checkpoint %s: %s: cannot look up attribute %s", r->file_path, path, name);
    if (!e) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: %s has no attribute '%s'",
                       r->file_path, path, name);
        goto fail;
    }
    VNM_H5_CHECK(attr = H5Aopen(obj, name, H5P_DEFAULT), VNM_ERR_INPUT,
                 "checkpoint %s: %s: cannot open attribute %s", r->file_path, path, name);
    VNM_H5_CHECK(type = H5Aget_type(attr), VNM_ERR_INPUT,
                 "checkpoint %s: %s: cannot read type of attribute %s", r->file_path, path, name);
    VNM_H5_CHECK(space = H5Aget_space(attr), VNM_ERR_INPUT,
                 "checkpoint %s: %s: cannot read shape of attribute %s", r->file_path, path,
                 name);
    if (H5Tget_class(type) != want || H5Sget_simple_extent_npoints(space) != 1) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                       "checkpoint %s: %s: attribute %s is not a scalar %s", r->file_path, path,
                       name, want_name);
        goto fail;
    }
    *out = attr;
    attr = -1;
fail:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    if (obj >= 0) H5Oclose(obj);
    return rc;
}

static vnm_status get_number(vnm_ckpt_reader *r, const char *path, const char *name,
                             H5T_class_t cls, hid_t mtype, void *out, char *err, size_t err_len)
{
    hid_t attr;
    vnm_status rc = open_attr(r, path, name, cls, cls == H5T_INTEGER ? "integer" : "float",
                              &attr, err, err_len);
    if (rc != VNM_OK) return rc;
    VNM_H5_CHECK(H5Aread(attr, mtype, out), VNM_ERR_INPUT,
                 "checkpoint %s: %s: cannot read attribute %s", r->file_path, path, name);
fail:
    H5Aclose(attr);
    return rc;
}

vnm_status vnm_ckpt_get_i64(vnm_ckpt_reader *r, const char *path, const char *name, int64_t *out,
                            char *err, size_t err_len)
{
    return get_number(r, path, name, H5T_INTEGER, H5T_NATIVE_INT64, out, err, err_len);
}

vnm_status vnm_ckpt_get_f64(vnm_ckpt_reader *r, const char *path, const char *name, double *out,
                            char *err, size_t err_len)
{
    return get_number(r, path, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, out, err, err_len);
}

vnm_status vnm_ckpt_get_str(vnm_ckpt_reader *r, const char *path, const char *name, char **out,
                            char *err, size_t err_len)
{
    hid_t attr, ftype = -1, mtype = -1;
    *out = NULL;
    vnm_status rc = open_attr(r, path, name, H5T_STRING, "string", &attr, err, err_len);
    if (rc != VNM_OK) return rc;
    htri_t vlen;
    VNM_H5_CHECK(ftype = H5Aget_type(attr), VNM_ERR_INPUT,
                 "checkpoint %s: %s: cannot read type of attribute %s", r->file_path, path, name);
    VNM_H5_CHECK(vlen = H5Tis_variable_str(ftype), VNM_ERR_INPUT,
                 "checkpoint %s: %s: bad string type of attribute %s", r->file_path, path, name);
    VNM_H5_CHECK(mtype = H5Tcopy(ftype), VNM_ERR_INPUT, "checkpoint %s: cannot copy type",
                 r->file_path);
    if (vlen) {
        char *s = NULL;
        VNM_H5_CHECK(H5Aread(attr, mtype, &s), VNM_ERR_INPUT,
                     "checkpoint %s: %s: cannot read attribute %s", r->file_path, path, name);
        *out = strdup(s ? s : "");
        H5free_memory(s);
    } else {
        size_t n = H5Tget_size(ftype);
        *out = calloc(n + 1, 1);
        if (*out)
            VNM_H5_CHECK(H5Aread(attr, mtype, *out), VNM_ERR_INPUT,
                         "checkpoint %s: %s: cannot read attribute %s", r->file_path, path, name);
    }
    if (!*out) rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "checkpoint: out of memory");
fail:
    if (rc != VNM_OK) {
        free(*out);
        *out = NULL;
    }
    if (mtype >= 0) H5Tclose(mtype);
    if (ftype >= 0) H5Tclose(ftype);
    H5Aclose(attr);
    return rc;
}

void vnm_ckpt_close(vnm_ckpt_reader *r)
{
    if (!r) return;
    if (r->file >= 0) H5Fclose(r->file);
    free(r);
}

vnm_ckpt_reader *vnm_ckpt_open(const char *path, char *err, size_t err_len)
{
    h5_quiet();
    if (!path) {
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint: path is NULL");
        return NULL;
    }
    vnm_ckpt_reader *r = calloc(1, sizeof *r);
    if (!r) {
        vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "checkpoint: out of memory");
        return NULL;
    }
    r->file = -1;
    vnm_status rc = resolve(path, r->file_path, err, err_len);
    if (rc != VNM_OK) goto fail;
    VNM_H5_CHECK(r->file = H5Fopen(r->file_path, H5F_ACC_RDONLY, H5P_DEFAULT), VNM_ERR_INPUT,
                 "checkpoint %s: cannot open: not an HDF5 file, or truncated or corrupt",
                 r->file_path);
    char *format = NULL;
    if (vnm_ckpt_get_str(r, "/", "format", &format, err, err_len) != VNM_OK ||
        strcmp(format, VNM_CKPT_FORMAT) != 0) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                       "checkpoint %s: not a vnm checkpoint (root attribute format is %s%s%s, "
                       "expected \"" VNM_CKPT_FORMAT "\")",
                       r->file_path, format ? "\"" : "",
                       format ? format : "missing or not a string", format ? "\"" : "");
        free(format);
        goto fail;
    }
    free(format);
    int64_t version;
    if ((rc = vnm_ckpt_get_i64(r, "/", "format_version", &version, err, err_len)) != VNM_OK)
        goto fail;
    if (version > VNM_CKPT_FORMAT_VERSION || version < 1) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                       version > VNM_CKPT_FORMAT_VERSION
                           ? "checkpoint %s: format_version %lld is newer than this program "
                             "supports (%d)"
                           : "checkpoint %s: invalid format_version %lld (this program reads %d)",
                       r->file_path, (long long)version, VNM_CKPT_FORMAT_VERSION);
        goto fail;
    }
    if ((rc = vnm_ckpt_get_i64(r, "/", "step", &r->step, err, err_len)) != VNM_OK) goto fail;
    return r;
fail:
    vnm_ckpt_close(r);
    return NULL;
}

const char *vnm_ckpt_file(const vnm_ckpt_reader *r) { return r ? r->file_path : NULL; }
int64_t vnm_ckpt_step(const vnm_ckpt_reader *r) { return r ? r->step : -1; }

typedef struct {
    const char *prefix; /* the group path without trailing '/' ("" for the root) */
    size_t prefix_len;
    char **names;
    int64_t count, cap;
    bool oom;
} list_acc;

static herr_t list_cb(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    (void)obj;
    list_acc *acc = data;
    if (info->type != H5O_TYPE_DATASET) return 0;
    if (acc->count == acc->cap) {
        int64_t cap = acc->cap ? 2 * acc->cap : 16;
        char **grown = realloc(acc->names, (size_t)cap * sizeof *grown);
        if (!grown) {
            acc->oom = true;
            return 1;
        }
        acc->names = grown;
        acc->cap = cap;
    }
    size_t n = acc->prefix_len + strlen(name) + 2;
    char *full = malloc(n);
    if (!full) {
        acc->oom = true;
        return 1;
    }
    snprintf(full, n, "%.*s/%s", (int)acc->prefix_len, acc->prefix, name);
    acc->names[acc->count++] = full;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void vnm_ckpt_free_names(char **names, int64_t count)
{
    for (int64_t k = 0; k < count && names; k++) free(names[k]);
    free(names);
}

vnm_status vnm_ckpt_list(vnm_ckpt_reader *r, const char *path, char ***names, int64_t *count,
                         char *err, size_t err_len)
{
    if (!r || !path || !names || !count)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint list: NULL argument");
    *names = NULL;
    *count = 0;
    vnm_status rc = VNM_OK;
    list_acc acc = {.prefix = path, .prefix_len = strlen(path)};
    while (acc.prefix_len > 0 && path[acc.prefix_len - 1] == '/') acc.prefix_len--;
    hid_t grp = -1;
    htri_t e;
    VNM_H5_CHECK(e = path_exists(r->file, path), VNM_ERR_INPUT,
                 "checkpoint %s: cannot look up %s", r->file_path, path);
    if (!e) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: no group %s", r->file_path,
                       path);
        goto fail;
    }
    VNM_H5_CHECK(grp = H5Gopen2(r->file, path, H5P_DEFAULT), VNM_ERR_INPUT,
                 "checkpoint %s: %s is not a group", r->file_path, path);
    VNM_H5_CHECK(H5Ovisit2(grp, H5_INDEX_NAME, H5_ITER_INC, list_cb, &acc, H5O_INFO_BASIC),
                 VNM_ERR_INPUT, "checkpoint %s: cannot list group %s", r->file_path, path);
    if (acc.oom) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "checkpoint: out of memory");
        goto fail;
    }
    if (acc.count) qsort(acc.names, (size_t)acc.count, sizeof *acc.names, cmp_str);
    *names = acc.names;
    *count = acc.count;
    acc.names = NULL;
    acc.count = 0;
fail:
    vnm_ckpt_free_names(acc.names, acc.count);
    if (grp >= 0) H5Gclose(grp);
    return rc;
}

/* Opens dataset `path` and reports its dtype and shape; *ds stays open on success. */
static vnm_status open_dataset(vnm_ckpt_reader *r, const char *path, hid_t *ds,
                               vnm_ckpt_dtype *dt, int *ndim, int64_t *shape, char *err,
                               size_t err_len)
{
    vnm_status rc = VNM_OK;
    hid_t type = -1, space = -1;
    htri_t e;
    *ds = -1;
    if (!r || !path)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint: reader or path is NULL");
    VNM_H5_CHECK(e = path_exists(r->file, path), VNM_ERR_INPUT,
                 "checkpoint %s: cannot look up %s", r->file_path, path);
    if (!e) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: no dataset %s",
                       r->file_path, path);
        goto fail;
    }
    VNM_H5_CHECK(*ds = H5Dopen2(r->file, path, H5P_DEFAULT), VNM_ERR_INPUT,
                 "checkpoint %s: %s is not a dataset", r->file_path, path);
    VNM_H5_CHECK(space = H5Dget_space(*ds), VNM_ERR_INPUT,
                 "checkpoint %s: dataset %s: cannot read shape", r->file_path, path);
    int nd;
    VNM_H5_CHECK(nd = H5Sget_simple_extent_ndims(space), VNM_ERR_INPUT,
                 "checkpoint %s: dataset %s: cannot read rank", r->file_path, path);
    if (nd > VNM_CKPT_MAX_DIMS) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                       "checkpoint %s: dataset %s has %d dimensions, at most %d supported",
                       r->file_path, path, nd, VNM_CKPT_MAX_DIMS);
        goto fail;
    }
    hsize_t dims[VNM_CKPT_MAX_DIMS];
    VNM_H5_CHECK(H5Sget_simple_extent_dims(space, dims, NULL), VNM_ERR_INPUT,
                 "checkpoint %s: dataset %s: cannot read shape", r->file_path, path);
    *ndim = nd;
    for (int d = 0; d < nd; d++) shape[d] = (int64_t)dims[d];
    VNM_H5_CHECK(type = H5Dget_type(*ds), VNM_ERR_INPUT,
                 "checkpoint %s: dataset %s: cannot read type", r->file_path, path);
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    bool sgn = cls == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_2;
    bool bf16 = false;
    if (cls == H5T_INTEGER && size == 2 && !sgn) {
        char *tag = NULL;
        bf16 = vnm_ckpt_get_str(r, path, "dtype", &tag, err, err_len) == VNM_OK &&
               strcmp(tag, "bf16") == 0;
        free(tag);
    }
    if (cls == H5T_FLOAT && size == 4) *dt = VNM_CKPT_F32;
    else if (cls == H5T_FLOAT && size == 8) *dt = VNM_CKPT_F64;
    else if (bf16) *dt = VNM_CKPT_BF16;
    else if (cls == H5T_INTEGER && size == 1 && !sgn) *dt = VNM_CKPT_U8;
    else if (cls == H5T_INTEGER && size == 4 && sgn) *dt = VNM_CKPT_I32;
    else if (cls == H5T_INTEGER && size == 8 && sgn) *dt = VNM_CKPT_I64;
    else if (cls == H5T_INTEGER && size == 8 && !sgn) *dt = VNM_CKPT_U64;
    else {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                       "checkpoint %s: dataset %s has an unsupported type (HDF5 class %d, %zu "
                       "bytes%s)",
                       r->file_path, path, (int)cls, size,
                       cls == H5T_INTEGER ? (sgn ? ", signed" : ", unsigned") : "");
        goto fail;
    }
fail:
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (rc != VNM_OK && *ds >= 0) {
        H5Dclose(*ds);
        *ds = -1;
    }
    return rc;
}

vnm_status vnm_ckpt_shape(vnm_ckpt_reader *r, const char *path, vnm_ckpt_dtype *dt, int *ndim,
                          int64_t *shape, char *err, size_t err_len)
{
    hid_t ds;
    vnm_status rc = open_dataset(r, path, &ds, dt, ndim, shape, err, err_len);
    if (rc == VNM_OK) H5Dclose(ds);
    return rc;
}

vnm_status vnm_ckpt_read(vnm_ckpt_reader *r, const char *path, vnm_ckpt_dtype dt, int ndim,
                         const int64_t *shape, void *out, char *err, size_t err_len)
{
    hid_t ds;
    vnm_ckpt_dtype got_dt;
    int got_nd;
    int64_t got[VNM_CKPT_MAX_DIMS];
    if (ndim < 0 || ndim > VNM_CKPT_MAX_DIMS || (ndim > 0 && !shape) || !dtype_valid(dt))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                         "checkpoint read %s: bad request (ndim %d, dtype %d)",
                         path ? path : "(null)", ndim, (int)dt);
    vnm_status rc = open_dataset(r, path, &ds, &got_dt, &got_nd, got, err, err_len);
    if (rc != VNM_OK) return rc;
    bool same = got_dt == dt && got_nd == ndim;
    int64_t numel = 1;
    for (int d = 0; d < ndim && same; d++) {
        same = got[d] == shape[d];
        numel *= shape[d];
    }
    if (!same) {
        char a[160], b[160];
        fmt_shape(a, sizeof a, got_nd, got);
        fmt_shape(b, sizeof b, ndim, shape);
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                       "checkpoint %s: dataset %s is %s %s, expected %s %s", r->file_path, path,
                       vnm_ckpt_dtype_name(got_dt), a, vnm_ckpt_dtype_name(dt), b);
        goto fail;
    }
    if (numel > 0 && !out) {
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: dataset %s: out is NULL",
                       r->file_path, path);
        goto fail;
    }
    if (numel > 0)
        VNM_H5_CHECK(H5Dread(ds, mem_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, out),
                     VNM_ERR_INPUT, "checkpoint %s: cannot read dataset %s (truncated or corrupt?)",
                     r->file_path, path);
fail:
    H5Dclose(ds);
    return rc;
}
