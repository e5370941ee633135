/* data/idx.c — idx files (the MNIST container: big-endian magic and dimensions, then raw u8
 * data), gzip-compressed or plain, and the Fashion-MNIST data set built from them. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "data.h"

/* Larger files are certainly not what the caller meant; the bound also keeps sizes far from
 * int64 overflow when dimensions are multiplied. */
#define IDX_MAX_BYTES ((int64_t)1 << 40)

/* Reads up to n bytes (n may exceed gzread's unsigned range); returns the count read, or -1 on a
 * decompression error. */
static int64_t gz_read_all(gzFile f, uint8_t *buf, int64_t n)
{
    int64_t got = 0;
    while (got < n) {
        int64_t want = n - got;
        unsigned chunk = want > (1 << 30) ? 1u << 30 : (unsigned)want;
        int r = gzread(f, buf + got, chunk);
        if (r < 0) return -1;
        if (r == 0) break;
        got += r;
    }
    return got;
}

/* Bytes left until the end of f, or -1 on a decompression error. */
static int64_t gz_count_rest(gzFile f)
{
    uint8_t scratch[65536];
    int64_t total = 0;
    int r;
    while ((r = gzread(f, scratch, sizeof scratch)) > 0) total += r;
    return r < 0 ? -1 : total;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static vnm_status gz_error(gzFile f, const char *path, char *err, size_t err_len)
{
    int code;
    const char *msg = gzerror(f, &code);
    return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "idx '%s': cannot decompress: %s", path, msg);
}

vnm_status vnm_idx_read(const char *path, int ndim, int64_t *dims, uint8_t **data, char *err,
                        size_t err_len)
{
    if (!path || !dims || !data) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "idx: NULL argument");
    if (ndim < 1 || ndim > 3)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "idx '%s': ndim %d, expected 1..3", path, ndim);
    *data = NULL;
    errno = 0;
    gzFile f = gzopen(path, "rb"); /* reads plain files as they are */
    if (!f)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "idx '%s': cannot open: %s", path,
                             errno ? strerror(errno) : "out of memory");

    vnm_status st = VNM_ERR_INPUT;
    uint32_t magic_want = 0x800u | (uint32_t)ndim; /* 0x08: u8 elements */
    int64_t header = 4 + 4 * (int64_t)ndim;
    uint8_t head[16];
    int64_t got = gz_read_all(f, head, header);
    if (got < 0) {
        st = gz_error(f, path, err, err_len);
        goto done;
    }
    if (got >= 4 && be32(head) != magic_want) {
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "idx '%s': bad magic 0x%08x, expected 0x%08x (u8, %d dims)",
                      path, be32(head), magic_want, ndim);
        goto done;
    }
    if (got < header) {
        vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                      "idx '%s': truncated header: expected %lld bytes, the file holds %lld",
                      path, (long long)header, (long long)got);
        goto done;
    }
    int64_t payload = 1;
    for (int d = 0; d < ndim; d++) {
        uint32_t v = be32(head + 4 + 4 * d);
        if (v == 0 || v > INT32_MAX) {
            vnm_errbuf(err, err_len, VNM_ERR_INPUT, "idx '%s': dimension %d is %u, expected 1..%d", path, d,
                          v, INT32_MAX);
            goto done;
        }
        dims[d] = v;
        payload *= v;
        if (payload > IDX_MAX_BYTES) {
            vnm_errbuf(err, err_len, VNM_ERR_INPUT, "idx '%s': announces more than %lld bytes", path,
                          (long long)IDX_MAX_BYTES);
            goto done;
        }
    }
    uint8_t *buf = malloc((size_t)payload);
    if (!buf) {
        st = VNM_ERR_RUNTIME;
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "idx '%s': out of memory for %lld bytes", path,
                      (long long)payload);
        goto done;
    }
    got = gz_read_all(f, buf, payload);
    int64_t rest = got == payload ? gz_count_rest(f) : 0;
    if (got < 0 || rest < 0) {
        free(buf);
        st = gz_error(f, path, err, err_len);
        goto done;
    }
    if (got < payload || rest > 0) {
        free(buf);
        int code;
        gzerror(f, &code); /* Z_BUF_ERROR: the compressed stream itself was cut */
        const char *how = gzdirect(f)        ? ""
                          : code == Z_BUF_ERROR ? " (decompressed; the gzip stream ends early)"
                                                : " (decompressed)";
        vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                      "idx '%s': %s: expected %lld bytes (header %lld + data %lld), the file "
                      "holds %lld%s",
                      path, got < payload ? "truncated" : "trailing bytes",
                      (long long)(header + payload), (long long)header, (long long)payload,
                      (long long)(header + got + rest), how);
        goto done;
    }
    *data = buf;
    st = VNM_OK;
done:
    gzclose(f);
    return st;
}

vnm_status vnm_dataset_load_idx(const char *images_path, const char *labels_path, int classes,
                                vnm_dataset *out, char *err, size_t err_len)
{
    if (!out) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "dataset: out is NULL");
    memset(out, 0, sizeof *out);
    if (classes < 1 || classes > 256)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "dataset: classes %d, expected 1..256 (u8 labels)",
                             classes);
    int64_t idims[3], ldims[1];
    uint8_t *images, *labels;
    vnm_status st = vnm_idx_read(images_path, 3, idims, &images, err, err_len);
    if (st) return st;
    st = vnm_idx_read(labels_path, 1, ldims, &labels, err, err_len);
    if (st) {
        free(images);
        return st;
    }
    if (idims[0] != ldims[0]) {
        st = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "dataset: '%s' holds %lld images but '%s' %lld labels",
                           images_path, (long long)idims[0], labels_path, (long long)ldims[0]);
        goto fail;
    }
    for (int64_t i = 0; i < ldims[0]; i++)
        if (labels[i] >= classes) {
            st = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "dataset: '%s': label %d at index %lld, expected < %d",
                               labels_path, labels[i], (long long)i, classes);
            goto fail;
        }
    *out = (vnm_dataset){.n = idims[0], .channels = 1, .height = (int)idims[1],
                         .width = (int)idims[2], .classes = classes, .images = images,
                         .labels = labels};
    return VNM_OK;
fail:
    free(images);
    free(labels);
    return st;
}

vnm_status vnm_fashion_mnist_load(const char *dir, bool train, vnm_dataset *out, char *err,
                                  size_t err_len)
{
    if (!dir) dir = VNM_FASHION_MNIST_DIR;
    const char *split = train ? "train" : "t10k";
    char images[4096], labels[4096];
    int ni = snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte.gz", dir, split);
    int nl = snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte.gz", dir, split);
    if (ni < 0 || nl < 0 || (size_t)ni >= sizeof images || (size_t)nl >= sizeof labels)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "fashion-mnist: directory path too long: '%s'", dir);
    return vnm_dataset_load_idx(images, labels, 10, out, err, err_len);
}

void vnm_dataset_free(vnm_dataset *ds)
{
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}
