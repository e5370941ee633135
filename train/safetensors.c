/* train/safetensors.c — safetensors reader (single files and sharded sets, everything in the
 * header checked against the file size before data is read) and writer (the Python library's
 * exact layout, written to a temporary name and renamed). */
#include "safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

typedef struct {
    vnm_safetensors_tensor pub;
    uint64_t base; /* file offset of the data section: 8 + header length */
} entry;

struct vnm_safetensors {
    size_t n;
    entry *t;       /* [n] in load order */
    entry **byname; /* [n] sorted by name, for lookups and the uniqueness check */
    size_t n_files;
    char **files;
    size_t n_meta;
    char **meta; /* [2 n_meta] key, value */
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* The file's dtype names; the Python library orders tensors by these ranks (its Dtype enum order),
 * larger first. */
static const struct {
    const char *name;
    vnm_dtype dt;
    int rank;
} dtypes[] = {
    {"F32", VNM_DTYPE_F32, 4}, {"BF16", VNM_DTYPE_BF16, 2}, {"F16", VNM_DTYPE_F16, 1},
    {"I32", VNM_DTYPE_I32, 3}, {"I64", VNM_DTYPE_I64, 5},   {"U8", VNM_DTYPE_U8, 0},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

static int dtype_index(vnm_dtype dt)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dt == dt) return (int)i;
    return -1;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(entry *const *)a)->pub.name, (*(entry *const *)b)->pub.name);
}

static int cmp_entry_begin(const void *a, const void *b)
{
    uint64_t x = (*(entry *const *)a)->pub.begin, y = (*(entry *const *)b)->pub.begin;
    return x < y ? -1 : x > y;
}

static vnm_status add_meta(vnm_safetensors *st, const char *key, const char *value)
{
    char **m = realloc(st->meta, (st->n_meta + 1) * 2 * sizeof *m);
    if (!m) return VNM_ERR_RUNTIME;
    st->meta = m;
    m[2 * st->n_meta] = dup_str(key);
    m[2 * st->n_meta + 1] = dup_str(value);
    st->n_meta++;
    return m[2 * st->n_meta - 2] && m[2 * st->n_meta - 1] ? VNM_OK : VNM_ERR_RUNTIME;
}

/* Checks one header member and fills e (name and file still to be set by the caller). */
static vnm_status parse_tensor(const char *path, const char *name, const vnm_json *v,
                               uint64_t data_len, entry *e, char *err, size_t err_len)
{
    if (v->kind != VNM_JSON_OBJECT)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s': expected an object, found %s",
                    path, name, vnm_json_kind_name(v->kind));
    const vnm_json *dt = vnm_json_get(v, "dtype"), *shape = vnm_json_get(v, "shape"),
                   *off = vnm_json_get(v, "data_offsets");
    if (!dt || dt->kind != VNM_JSON_STRING)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s': expected a string \"dtype\"",
                    path, name);
    size_t d = 0;
    while (d < N_DTYPES && strcmp(dtypes[d].name, dt->string)) d++;
    if (d == N_DTYPES)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                    "%s: tensor '%s': unsupported dtype '%s' (expected F32, BF16, F16, I32, I64 or "
                    "U8)",
                    path, name, dt->string);
    e->pub.dtype = dtypes[d].dt;
    if (!shape || shape->kind != VNM_JSON_ARRAY)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s': expected an array \"shape\"",
                    path, name);
    if (shape->count > VNM_MAX_DIMS)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                    "%s: tensor '%s': shape has %zu dims (vnm supports at most %d)", path, name,
                    shape->count, VNM_MAX_DIMS);
    e->pub.ndim = (int)shape->count;
    e->pub.numel = 1;
    for (size_t i = 0; i < shape->count; i++) {
        const vnm_json *s = shape->items[i];
        if (s->kind != VNM_JSON_NUMBER || !s->is_int || s->integer < 0)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                        "%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name, i);
        if (s->integer && e->pub.numel > INT64_MAX / 8 / s->integer)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s': shape is too large", path,
                        name);
        e->pub.shape[i] = s->integer;
        e->pub.numel *= s->integer;
    }
    if (!off || off->kind != VNM_JSON_ARRAY || off->count != 2 ||
        off->items[0]->kind != VNM_JSON_NUMBER || !off->items[0]->is_int ||
        off->items[1]->kind != VNM_JSON_NUMBER || !off->items[1]->is_int ||
        off->items[0]->integer < 0 || off->items[1]->integer < off->items[0]->integer)
        return vnm_errbuf(
            err, err_len, VNM_ERR_INPUT,
            "%s: tensor '%s': expected \"data_offsets\" [begin, end] with 0 <= begin <= end", path,
            name);
    e->pub.begin = (uint64_t)off->items[0]->integer;
    e->pub.end = (uint64_t)off->items[1]->integer;
    if (e->pub.end > data_len)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                    "%s: tensor '%s': data_offsets [%llu, %llu] extend beyond the %llu data bytes "
                    "(truncated file?)",
                    path, name, (unsigned long long)e->pub.begin, (unsigned long long)e->pub.end,
                    (unsigned long long)data_len);
    uint64_t bytes = (uint64_t)e->pub.numel * vnm_dtype_size(e->pub.dtype);
    if (bytes != e->pub.end - e->pub.begin)
        return vnm_errbuf(
            err, err_len, VNM_ERR_INPUT,
            "%s: tensor '%s': shape and dtype %s need %llu bytes but data_offsets span %llu", path,
            name, dt->string, (unsigned long long)bytes,
            (unsigned long long)(e->pub.end - e->pub.begin));
    return VNM_OK;
}

/* Reads the header of one file and appends its tensors (and, when want_meta, its __metadata__). */
static vnm_status load_file(vnm_safetensors *st, const char *path, int want_meta, char *err,
                            size_t err_len)
{
    char **files = realloc(st->files, (st->n_files + 1) * sizeof *files);
    if (!files) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    st->files = files;
    const char *fpath = files[st->n_files] = dup_str(path);
    if (!fpath) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    st->n_files++;

    FILE *f = fopen(path, "rb");
    if (!f) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    unsigned char len8[8];
    uint64_t file_size = 0, n = 0;
    char *text = NULL;
    vnm_json *h = NULL;
    vnm_status s = VNM_OK;
    if (fseeko(f, 0, SEEK_END) == 0) {
        off_t end = ftello(f);
        file_size = end > 0 ? (uint64_t)end : 0;
    }
    rewind(f);
    if (file_size < 8 || fread(len8, 1, 8, f) != 8) {
        s = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                 "%s: truncated: %llu bytes, shorter than the 8-byte header length", path,
                 (unsigned long long)file_size);
        goto done;
    }
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    if (n < 2 || n > VNM_SAFETENSORS_MAX_HEADER || n > file_size - 8) {
        s = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                 "%s: header length %llu is invalid (file has %llu bytes after the length; "
                 "expected 2 to %llu)",
                 path, (unsigned long long)n, (unsigned long long)(file_size - 8),
                 VNM_SAFETENSORS_MAX_HEADER);
        goto done;
    }
    text = malloc(n);
    if (!text) {
        s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory for a %llu-byte header", path,
                 (unsigned long long)n);
        goto done;
    }
    if (fread(text, 1, n, f) != n) {
        s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: read error in the header", path);
        goto done;
    }
    char src[4096];
    snprintf(src, sizeof src, "%s (header)", path);
    h = vnm_json_parse(text, n, src, err, err_len);
    if (!h) {
        s = VNM_ERR_INPUT;
        goto done;
    }
    if (h->kind != VNM_JSON_OBJECT) {
        s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: header is a JSON %s, expected an object", path,
                 vnm_json_kind_name(h->kind));
        goto done;
    }
    entry *t = realloc(st->t, (st->n + h->count) * sizeof *t);
    if (!t) {
        s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
        goto done;
    }
    st->t = t;
    uint64_t data_len = file_size - 8 - n;
    size_t first = st->n;
    for (size_t i = 0; i < h->count && !s; i++) {
        const char *key = h->keys[i];
        const vnm_json *v = h->items[i];
        if (!strcmp(key, "__metadata__")) {
            if (v->kind != VNM_JSON_OBJECT) {
                s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: __metadata__ must be an object", path);
                break;
            }
            for (size_t j = 0; j < v->count && !s; j++) {
                if (v->items[j]->kind != VNM_JSON_STRING)
                    s = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                             "%s: __metadata__ key '%s': expected a string value, found %s", path,
                             v->keys[j], vnm_json_kind_name(v->items[j]->kind));
                else if (want_meta && add_meta(st, v->keys[j], v->items[j]->string))
                    s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
            }
            continue;
        }
        entry *e = &st->t[st->n];
        memset(e, 0, sizeof *e);
        s = parse_tensor(path, key, v, data_len, e, err, err_len);
        if (s) break;
        e->base = 8 + n;
        e->pub.file = fpath;
        if (!(e->pub.name = dup_str(key)))
            s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "out of memory");
        else
            st->n++;
    }
    if (s) goto done;
    /* Overlap check on this file's tensors in offset order. */
    size_t m = st->n - first;
    entry **order = malloc((m ? m : 1) * sizeof *order);
    if (!order) {
        s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < m; i++) order[i] = &st->t[first + i];
    qsort(order, m, sizeof *order, cmp_entry_begin);
    for (size_t i = 1; i < m && !s; i++)
        if (order[i]->pub.begin < order[i - 1]->pub.end)
            s = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                     "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", path,
                     order[i - 1]->pub.name, (unsigned long long)order[i - 1]->pub.begin,
                     (unsigned long long)order[i - 1]->pub.end, order[i]->pub.name,
                     (unsigned long long)order[i]->pub.begin,
                     (unsigned long long)order[i]->pub.end);
    free(order);
done:
    vnm_json_free(h);
    free(text);
    fclose(f);
    return s;
}

/* Sorts names for lookups and refuses duplicates (within a file or across shards). */
static vnm_status index_names(vnm_safetensors *st, char *err, size_t err_len)
{
    st->byname = malloc((st->n ? st->n : 1) * sizeof *st->byname);
    if (!st->byname) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "out of memory");
    for (size_t i = 0; i < st->n; i++) st->byname[i] = &st->t[i];
    qsort(st->byname, st->n, sizeof *st->byname, cmp_entry_name);
    for (size_t i = 1; i < st->n; i++) {
        const vnm_safetensors_tensor *a = &st->byname[i - 1]->pub, *b = &st->byname[i]->pub;
        if (strcmp(a->name, b->name)) continue;
        if (a->file == b->file)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: duplicate tensor name '%s'", b->file,
                        b->name);
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: duplicate tensor name '%s' (also in %s)",
                    b->file, b->name, a->file);
    }
    return VNM_OK;
}

/* Sharded set: loads each shard named in weight_map (relative to the index's directory) and
 * checks that the map and the shards' contents agree both ways. */
static vnm_status open_index(vnm_safetensors *st, const char *path, char *err, size_t err_len)
{
    vnm_json *idx = vnm_json_parse_file(path, err, err_len);
    if (!idx) return VNM_ERR_INPUT;
    vnm_status s = VNM_OK;
    const vnm_json *wm = vnm_json_get(idx, "weight_map"), *meta = vnm_json_get(idx, "metadata");
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    if (!wm || wm->kind != VNM_JSON_OBJECT) {
        s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: expected an object \"weight_map\"", path);
        goto done;
    }
    for (size_t i = 0; meta && meta->kind == VNM_JSON_OBJECT && i < meta->count && !s; i++) {
        const vnm_json *v = meta->items[i];
        char num[32];
        if (v->kind == VNM_JSON_NUMBER && v->is_int)
            snprintf(num, sizeof num, "%lld", (long long)v->integer);
        else if (v->kind != VNM_JSON_STRING)
            continue; /* only strings and integers (total_size) have a text form callers need */
        if (add_meta(st, meta->keys[i], v->kind == VNM_JSON_STRING ? v->string : num))
            s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "out of memory");
    }
    for (size_t i = 0; i < wm->count && !s; i++) {
        const vnm_json *v = wm->items[i];
        if (v->kind != VNM_JSON_STRING || !v->string_len || strchr(v->string, '/')) {
            s = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                     "%s: weight_map['%s']: expected a shard file name (no directories)", path,
                     wm->keys[i]);
            break;
        }
        size_t seen = 0;
        while (seen < i && strcmp(wm->items[seen]->string, v->string)) seen++;
        if (seen < i) continue;
        char *shard = malloc(dir_len + v->string_len + 1);
        if (!shard) {
            s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "out of memory");
            break;
        }
        memcpy(shard, path, dir_len);
        memcpy(shard + dir_len, v->string, v->string_len + 1);
        s = load_file(st, shard, 0, err, err_len);
        free(shard);
    }
    if (!s) s = index_names(st, err, err_len);
    for (size_t i = 0; i < wm->count && !s; i++) {
        const vnm_safetensors_tensor *t = vnm_safetensors_find(st, wm->keys[i]);
        const char *want = wm->items[i]->string;
        if (!t || strcmp(t->file + dir_len, want))
            s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: weight_map puts tensor '%s' in %s, but %s",
                     path, wm->keys[i], want, t ? "it is in another shard" : "no shard has it");
    }
    for (size_t i = 0; i < st->n && !s; i++)
        if (!vnm_json_get(wm, st->t[i].pub.name))
            s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s' of %s is not in weight_map",
                     path, st->t[i].pub.name, st->t[i].pub.file);
done:
    vnm_json_free(idx);
    return s;
}

vnm_status vnm_safetensors_open(const char *path, vnm_safetensors **out, char *err, size_t err_len)
{
    *out = NULL;
    vnm_safetensors *st = calloc(1, sizeof *st);
    if (!st) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    size_t len = strlen(path);
    vnm_status s;
    if (len >= 11 && !strcmp(path + len - 11, ".index.json")) {
        s = open_index(st, path, err, err_len);
    } else {
        s = load_file(st, path, 1, err, err_len);
        if (!s) s = index_names(st, err, err_len);
    }
    if (s) {
        vnm_safetensors_close(st);
        return s;
    }
    *out = st;
    return VNM_OK;
}

void vnm_safetensors_close(vnm_safetensors *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->n; i++) free((char *)st->t[i].pub.name);
    for (size_t i = 0; i < st->n_files; i++) free(st->files[i]);
    for (size_t i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->t);
    free(st->byname);
    free(st->files);
    free(st->meta);
    free(st);
}

size_t vnm_safetensors_count(const vnm_safetensors *st) { return st ? st->n : 0; }

const vnm_safetensors_tensor *vnm_safetensors_tensor_at(const vnm_safetensors *st, size_t i)
{
    return st && i < st->n ? &st->t[i].pub : NULL;
}

const vnm_safetensors_tensor *vnm_safetensors_find(const vnm_safetensors *st, const char *name)
{
    if (!st || !name || !st->byname) return NULL;
    entry key = {.pub.name = name}, *kp = &key;
    entry **hit = bsearch(&kp, st->byname, st->n, sizeof *st->byname, cmp_entry_name);
    return hit ? &(*hit)->pub : NULL;
}

const char *vnm_safetensors_metadata(const vnm_safetensors *st, const char *key)
{
    for (size_t i = 0; st && key && i < st->n_meta; i++)
        if (!strcmp(st->meta[2 * i], key)) return st->meta[2 * i + 1];
    return NULL;
}

static const vnm_safetensors_tensor *lookup(const vnm_safetensors *st, const char *name, char *err,
                                            size_t err_len)
{
    const vnm_safetensors_tensor *t = vnm_safetensors_find(st, name);
    if (!t)
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: no tensor named '%s'",
             st && st->n_files ? st->files[0] : "safetensors", name ? name : "(null)");
    return t;
}

vnm_status vnm_safetensors_read(const vnm_safetensors *st, const char *name, void *buf,
                                size_t buf_bytes, char *err, size_t err_len)
{
    const vnm_safetensors_tensor *t = lookup(st, name, err, err_len);
    if (!t) return VNM_ERR_INPUT;
    uint64_t bytes = t->end - t->begin;
    if (buf_bytes != bytes)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                    "%s: tensor '%s': buffer has %zu bytes, tensor has %llu", t->file, name,
                    buf_bytes, (unsigned long long)bytes);
    const entry *e = (const entry *)t; /* pub is the first member */
    FILE *f = fopen(t->file, "rb");
    if (!f)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: cannot open: %s", t->file, strerror(errno));
    int ok =
        fseeko(f, (off_t)(e->base + t->begin), SEEK_SET) == 0 && fread(buf, 1, bytes, f) == bytes;
    fclose(f);
    if (!ok)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                    "%s: tensor '%s': short read (file truncated since it was opened?)", t->file,
                    name);
    return VNM_OK;
}

vnm_status vnm_safetensors_read_f32(const vnm_safetensors *st, const char *name, float *buf,
                                    size_t n, char *err, size_t err_len)
{
    const vnm_safetensors_tensor *t = lookup(st, name, err, err_len);
    if (!t) return VNM_ERR_INPUT;
    if ((int64_t)n != t->numel)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                    "%s: tensor '%s': buffer has %zu floats, tensor "
                    "has %lld elements",
                    t->file, name, n, (long long)t->numel);
    if (t->dtype == VNM_DTYPE_F32) return vnm_safetensors_read(st, name, buf, n * 4, err, err_len);
    size_t bytes = (size_t)(t->end - t->begin);
    void *raw = malloc(bytes ? bytes : 1);
    if (!raw) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", t->file);
    vnm_status s = vnm_safetensors_read(st, name, raw, bytes, err, err_len);
    for (size_t i = 0; !s && i < n; i++) {
        switch (t->dtype) {
        case VNM_DTYPE_BF16: buf[i] = vnm_bf16_to_f32(((const uint16_t *)raw)[i]); break;
        case VNM_DTYPE_F16: buf[i] = vnm_f16_to_f32(((const uint16_t *)raw)[i]); break;
        case VNM_DTYPE_I32: buf[i] = (float)((const int32_t *)raw)[i]; break;
        case VNM_DTYPE_I64: buf[i] = (float)((const int64_t *)raw)[i]; break;
        case VNM_DTYPE_U8: buf[i] = (float)((const uint8_t *)raw)[i]; break;
        case VNM_DTYPE_F32: break; /* read directly above */
        }
    }
    free(raw);
    return s;
}

/* Writer order: the Python library's (dtype rank descending, then name). */
static int cmp_write(const void *a, const void *b)
{
    const vnm_safetensors_entry *x = *(const vnm_safetensors_entry *const *)a,
                                *y = *(const vnm_safetensors_entry *const *)b;
    int rx = dtypes[dtype_index(x->dtype)].rank, ry = dtypes[dtype_index(y->dtype)].rank;
    if (rx != ry) return ry - rx;
    return strcmp(x->name, y->name);
}

static int cmp_meta(const void *a, const void *b)
{
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

static uint64_t entry_bytes(const vnm_safetensors_entry *t)
{
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
    return numel * vnm_dtype_size(t->dtype);
}

/* {"dtype":..,"shape":[..],"data_offsets":[begin,end]}; NULL when out of memory. The builders take
 * ownership of what they are given, even on failure, so one flag tracks the whole chain. */
static vnm_json *tensor_json(const vnm_safetensors_entry *t, uint64_t begin, uint64_t end)
{
    vnm_json *o = vnm_json_new(VNM_JSON_OBJECT), *shape = vnm_json_new(VNM_JSON_ARRAY),
             *off = vnm_json_new(VNM_JSON_ARRAY);
    int bad = 0;
    for (int d = 0; d < t->ndim; d++) bad |= vnm_json_push(shape, vnm_json_new_int(t->shape[d]));
    bad |= vnm_json_push(off, vnm_json_new_int((int64_t)begin));
    bad |= vnm_json_push(off, vnm_json_new_int((int64_t)end));
    bad |= vnm_json_add(o, "dtype", vnm_json_new_string(dtypes[dtype_index(t->dtype)].name));
    bad |= vnm_json_add(o, "shape", shape);
    bad |= vnm_json_add(o, "data_offsets", off);
    if (bad) {
        vnm_json_free(o);
        return NULL;
    }
    return o;
}

/* Builds the header for tensors in `order`, metadata keys sorted (meta keys already unique). */
static vnm_json *build_header(const vnm_safetensors_entry *const *order, size_t n,
                              const char *const *const *meta_sorted, size_t n_meta)
{
    vnm_json *h = vnm_json_new(VNM_JSON_OBJECT);
    int bad = 0;
    if (n_meta) {
        vnm_json *m = vnm_json_new(VNM_JSON_OBJECT);
        for (size_t i = 0; i < n_meta; i++)
            bad |= vnm_json_add(m, meta_sorted[i][0], vnm_json_new_string(meta_sorted[i][1]));
        bad |= vnm_json_add(h, "__metadata__", m);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t end = offset + entry_bytes(order[i]);
        bad |= vnm_json_add(h, order[i]->name, tensor_json(order[i], offset, end));
        offset = end;
    }
    if (bad) {
        vnm_json_free(h);
        return NULL;
    }
    return h;
}

static int cmp_write_name(const void *a, const void *b)
{
    return strcmp((*(const vnm_safetensors_entry *const *)a)->name,
                  (*(const vnm_safetensors_entry *const *)b)->name);
}

/* What the writers accept: unique, non-reserved names, known dtypes, valid shapes, data. */
static vnm_status check_entries(const char *path, const vnm_safetensors_entry *tensors, size_t n,
                                char *err, size_t err_len)
{
    for (size_t i = 0; i < n; i++) {
        const vnm_safetensors_entry *t = &tensors[i];
        if (!t->name || !*t->name || !strcmp(t->name, "__metadata__"))
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor %zu: empty or reserved name", path,
                        i);
        if (dtype_index(t->dtype) < 0 || t->ndim < 0 || t->ndim > VNM_MAX_DIMS ||
            (!t->shape && t->ndim))
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s': bad dtype or ndim %d", path,
                        t->name, t->ndim);
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0)
                return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s': negative shape[%d]",
                            path, t->name, d);
        if (!t->data)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s': no data", path, t->name);
    }
    const vnm_safetensors_entry **byname = malloc((n ? n : 1) * sizeof *byname);
    if (!byname) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) byname[i] = &tensors[i];
    qsort(byname, n, sizeof *byname, cmp_write_name);
    vnm_status s = VNM_OK;
    for (size_t i = 1; i < n && !s; i++)
        if (!strcmp(byname[i]->name, byname[i - 1]->name))
            s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: duplicate tensor name '%s'", path,
                     byname[i]->name);
    free(byname);
    return s;
}

/* Writes the chunks to "<path>.tmp" and renames it over path, so readers never see a partial
 * file. */
static vnm_status write_atomic(const char *path, const void *const *chunks, const size_t *sizes,
                               size_t n, char *err, size_t err_len)
{
    char *tmp = malloc(strlen(path) + 5);
    if (!tmp) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    sprintf(tmp, "%s.tmp", path);
    vnm_status s = VNM_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        int ok = 1;
        for (size_t i = 0; ok && i < n; i++) ok = fwrite(chunks[i], 1, sizes[i], f) == sizes[i];
        ok = fclose(f) == 0 && ok;
        if (!ok || rename(tmp, path)) {
            s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: write failed: %s", path, strerror(errno));
            remove(tmp);
        }
    }
    free(tmp);
    return s;
}

vnm_status vnm_safetensors_write(const char *path, const vnm_safetensors_entry *tensors, size_t n,
                                 const char *const *meta, size_t n_meta, char *err, size_t err_len)
{
    vnm_status s = check_entries(path, tensors, n, err, err_len);
    if (s) return s;
    const vnm_safetensors_entry **order = malloc((n ? n : 1) * sizeof *order);
    if (!order) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) order[i] = &tensors[i];
    qsort(order, n, sizeof *order, cmp_write);
    const char *const **mk = malloc((n_meta ? n_meta : 1) * sizeof *mk);
    vnm_json *h = NULL;
    char *text = NULL;
    size_t len = 0;
    if (!mk) s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    for (size_t i = 0; i < n_meta && !s; i++) mk[i] = &meta[2 * i];
    if (!s) qsort(mk, n_meta, sizeof *mk, cmp_meta);
    for (size_t i = 1; i < n_meta && !s; i++)
        if (!strcmp(*mk[i], *mk[i - 1]))
            s = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: duplicate metadata key '%s'", path, *mk[i]);
    if (!s && !(h = build_header(order, n, mk, n_meta)))
        s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    if (!s) s = vnm_json_write(h, &text, &len, err, err_len);
    if (s) goto done;
    /* Space padding to a multiple of 8 keeps the data section aligned, as the Python library does.
     */
    size_t padded = (len + 7) / 8 * 8;
    char *p = realloc(text, padded);
    const void **chunks = malloc((n + 2) * sizeof *chunks);
    size_t *sizes = malloc((n + 2) * sizeof *sizes);
    if (!p || !chunks || !sizes) {
        if (p) text = p;
        free(chunks);
        free(sizes);
        s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
        goto done;
    }
    text = p;
    memset(text + len, ' ', padded - len);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    chunks[0] = len8, sizes[0] = 8;
    chunks[1] = text, sizes[1] = padded;
    for (size_t i = 0; i < n; i++)
        chunks[i + 2] = order[i]->data, sizes[i + 2] = (size_t)entry_bytes(order[i]);
    s = write_atomic(path, chunks, sizes, n + 2, err, err_len);
    free(chunks);
    free(sizes);
done:
    free(text);
    vnm_json_free(h);
    free(mk);
    free(order);
    return s;
}

vnm_status vnm_safetensors_write_sharded(const char *index_path,
                                         const vnm_safetensors_entry *tensors, size_t n,
                                         const char *const *meta, size_t n_meta,
                                         uint64_t max_shard_bytes, char *err, size_t err_len)
{
    static const char suffix[] = ".safetensors.index.json";
    size_t plen = strlen(index_path), slen = sizeof suffix - 1;
    if (plen <= slen || strcmp(index_path + plen - slen, suffix))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                    "%s: a sharded set's index must be named "
                    "<base>%s",
                    index_path, suffix);
    /* Shards are contiguous runs of the caller's order (as transformers splits a state dict); a
     * tensor larger than the budget gets a shard of its own. */
    vnm_status s = check_entries(index_path, tensors, n, err, err_len);
    if (s) return s;
    size_t *first = malloc((n + 1) * sizeof *first), n_shards = 0;
    char *shard = malloc(plen + 64); /* room for "-%05zu-of-%05zu.safetensors" at any count */
    vnm_json *idx = vnm_json_new(VNM_JSON_OBJECT), *md = vnm_json_new(VNM_JSON_OBJECT),
             *wm = vnm_json_new(VNM_JSON_OBJECT);
    /* idx owns md and wm from here (the adds free them on failure). */
    int bad = !first || !shard;
    bad |= vnm_json_add(idx, "metadata", md);
    bad |= vnm_json_add(idx, "weight_map", wm);
    char *text = NULL;
    size_t len = 0;
    if (bad) s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", index_path);
    uint64_t run = 0, total = 0;
    for (size_t i = 0; i < n && !s; i++) {
        uint64_t b = entry_bytes(&tensors[i]);
        if (i == 0 || run + b > max_shard_bytes) first[n_shards++] = i, run = 0;
        run += b;
        total += b;
    }
    if (!s) first[n_shards] = n;
    size_t base_len = plen - slen, dir_len = 0;
    for (size_t i = 0; i < base_len; i++)
        if (index_path[i] == '/') dir_len = i + 1;
    for (size_t k = 0; k < n_shards && !s; k++) {
        sprintf(shard, "%.*s-%05zu-of-%05zu.safetensors", (int)base_len, index_path, k + 1,
                n_shards);
        s = vnm_safetensors_write(shard, tensors + first[k], first[k + 1] - first[k], meta, n_meta,
                                  err, err_len);
        for (size_t i = first[k]; i < first[k + 1] && !s; i++)
            if (vnm_json_add(wm, tensors[i].name, vnm_json_new_string(shard + dir_len)))
                s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", index_path);
    }
    if (!s && vnm_json_add(md, "total_size", vnm_json_new_int((int64_t)total)))
        s = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", index_path);
    if (!s) s = vnm_json_write(idx, &text, &len, err, err_len);
    if (!s) {
        const void *chunk = text;
        s = write_atomic(index_path, &chunk, &len, 1, err, err_len);
    }
    free(text);
    vnm_json_free(idx);
    free(first);
    free(shard);
    return s;
}
