/* tests/test_data.c — the data module: idx parsing and its errors, Fashion-MNIST loading, epoch
 * shuffles, resume from a sampler position, crop/flip augmentation, normalisation, prefetch
 * bit-exactness and drop_last.
 *
 * Fixtures: the idx files are written by the tests themselves (gzip through zlib, or plain) into a
 * fresh mkdtemp directory per test, removed in the teardown, so every broken variant (bad magic,
 * truncated, trailing bytes, count mismatch) is generated next to the check that uses it. */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "data/data.h"
#include "test_util.h"

/* ---- fixtures ---- */

static int fx_setup(void **state)
{
    char *dir = strdup("/tmp/vnm_test_data_XXXXXX");
    if (!dir || !mkdtemp(dir)) return -1;
    *state = dir;
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int fx_teardown(void **state)
{
    char *dir = *state;
    int rc = nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(dir);
    return rc;
}

/* dir/name: big-endian magic and dims, then data_bytes bytes of data (which may differ from the
 * announced size, to build truncated or oversized files). Returns the path (static buffer). */
static const char *write_idx(const char *dir, const char *name, bool gz, uint32_t magic, int ndim,
                             const uint32_t *dims, const uint8_t *data, size_t data_bytes)
{
    static char path[4][512];
    static int which;
    char *p = path[which++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    uint8_t head[16];
    uint32_t words[4] = {magic, ndim > 0 ? dims[0] : 0, ndim > 1 ? dims[1] : 0,
                         ndim > 2 ? dims[2] : 0};
    for (int w = 0; w < 4; w++)
        for (int b = 0; b < 4; b++) head[4 * w + b] = (uint8_t)(words[w] >> (24 - 8 * b));
    size_t hlen = 4 + 4 * (size_t)ndim;
    if (gz) {
        gzFile f = gzopen(p, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, head, (unsigned)hlen), (int)hlen);
        if (data_bytes) assert_int_equal(gzwrite(f, data, (unsigned)data_bytes), (int)data_bytes);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(p, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(head, 1, hlen, f), hlen);
        if (data_bytes) assert_int_equal(fwrite(data, 1, data_bytes, f), data_bytes);
        assert_int_equal(fclose(f), 0);
    }
    return p;
}

/* Images [n, 3, 4] with pixel (i, k) = 7i + k mod 256, labels i mod 10. */
static void fill_fixture(int n, uint8_t *images, uint8_t *labels)
{
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 12; k++) images[i * 12 + k] = (uint8_t)((7 * i + k) % 256);
        labels[i] = (uint8_t)(i % 10);
    }
}

static void assert_err(vnm_status st, const char *err, const char *needle)
{
    assert_int_not_equal(st, VNM_OK);
    if (!strstr(err, needle)) fail_msg("error '%s' lacks '%s'", err, needle);
}

/* ---- idx ---- */

static void test_idx_parse_plain_and_gzip(void **state)
{
    const char *dir = *state;
    uint8_t images[5 * 12], labels[5];
    fill_fixture(5, images, labels);
    for (int gz = 0; gz < 2; gz++) {
        const char *ip = write_idx(dir, gz ? "i.gz" : "i", gz, 0x803, 3, (uint32_t[]){5, 3, 4},
                                   images, sizeof images);
        const char *lp = write_idx(dir, gz ? "l.gz" : "l", gz, 0x801, 1, (uint32_t[]){5}, labels,
                                   sizeof labels);
        int64_t dims[3];
        uint8_t *raw;
        char err[256] = "";
        assert_int_equal(vnm_idx_read(ip, 3, dims, &raw, err, sizeof err), VNM_OK);
        assert_int_equal(dims[0], 5);
        assert_int_equal(dims[1], 3);
        assert_int_equal(dims[2], 4);
        assert_memory_equal(raw, images, sizeof images);
        free(raw);

        vnm_dataset ds;
        assert_int_equal(vnm_dataset_load_idx(ip, lp, 10, &ds, err, sizeof err), VNM_OK);
        assert_int_equal(ds.n, 5);
        assert_int_equal(ds.channels, 1);
        assert_int_equal(ds.height, 3);
        assert_int_equal(ds.width, 4);
        assert_int_equal(ds.classes, 10);
        assert_memory_equal(ds.images, images, sizeof images);
        assert_memory_equal(ds.labels, labels, sizeof labels);
        vnm_dataset_free(&ds);
        assert_null(ds.images);
    }
}

static void test_idx_bad_magic(void **state)
{
    const char *dir = *state;
    uint8_t images[5 * 12], labels[5];
    fill_fixture(5, images, labels);
    char err[256];
    int64_t dims[3];
    uint8_t *raw;
    /* an image file where labels are expected */
    const char *ip = write_idx(dir, "i.gz", true, 0x803, 3, (uint32_t[]){5, 3, 4}, images,
                               sizeof images);
    assert_err(vnm_idx_read(ip, 1, dims, &raw, err, sizeof err), err,
               "bad magic 0x00000803, expected 0x00000801");
    assert_non_null(strstr(err, ip));
    /* i32 elements (type byte 0x0c) are not u8 */
    const char *bp = write_idx(dir, "b", false, 0xC03, 3, (uint32_t[]){5, 3, 4}, images,
                               sizeof images);
    assert_err(vnm_idx_read(bp, 3, dims, &raw, err, sizeof err), err, "bad magic 0x00000c03");
    assert_null(raw);
    /* zero dimension */
    const char *zp = write_idx(dir, "z", false, 0x803, 3, (uint32_t[]){5, 0, 4}, images, 0);
    assert_err(vnm_idx_read(zp, 3, dims, &raw, err, sizeof err), err, "dimension 1 is 0");
}

static void test_idx_truncated(void **state)
{
    const char *dir = *state;
    uint8_t images[5 * 12 + 3] = {0}, labels[5];
    fill_fixture(5, images, labels);
    char err[256];
    int64_t dims[3];
    uint8_t *raw;
    for (int gz = 0; gz < 2; gz++) {
        /* header 16 + 60 announced, 50 present */
        const char *tp = write_idx(dir, gz ? "t.gz" : "t", gz, 0x803, 3, (uint32_t[]){5, 3, 4},
                                   images, 50);
        assert_err(vnm_idx_read(tp, 3, dims, &raw, err, sizeof err), err,
                   "truncated: expected 76 bytes (header 16 + data 60), the file holds 66");
        assert_non_null(strstr(err, tp));
        assert_null(raw);
        /* 3 bytes more than announced */
        const char *xp = write_idx(dir, gz ? "x.gz" : "x", gz, 0x803, 3, (uint32_t[]){5, 3, 4},
                                   images, sizeof images);
        assert_err(vnm_idx_read(xp, 3, dims, &raw, err, sizeof err), err,
                   "trailing bytes: expected 76 bytes (header 16 + data 60), the file holds 79");
    }
    /* a gzip stream cut short (trailer and some deflate data gone) */
    const char *cp = write_idx(dir, "c.gz", true, 0x803, 3, (uint32_t[]){5, 3, 4}, images, 60);
    FILE *f = fopen(cp, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    assert_int_equal(ftruncate(fileno(f), ftell(f) - 12), 0);
    fclose(f);
    assert_err(vnm_idx_read(cp, 3, dims, &raw, err, sizeof err), err,
               "truncated: expected 76 bytes");
    assert_non_null(strstr(err, "the gzip stream ends early"));
    assert_non_null(strstr(err, cp));
    /* a damaged gzip stream (the CRC check at the least) */
    const char *dp = write_idx(dir, "d.gz", true, 0x803, 3, (uint32_t[]){5, 3, 4}, images, 60);
    f = fopen(dp, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 14, SEEK_SET), 0);
    assert_int_equal(fwrite("\xff\xff\xff\xff", 1, 4, f), 4);
    fclose(f);
    assert_err(vnm_idx_read(dp, 3, dims, &raw, err, sizeof err), err, "cannot decompress");
    assert_non_null(strstr(err, dp));
    /* a header cut inside the dimensions */
    const char *hp = write_idx(dir, "h", false, 0x803, 1, (uint32_t[]){5}, NULL, 0);
    assert_err(vnm_idx_read(hp, 3, dims, &raw, err, sizeof err), err,
               "truncated header: expected 16 bytes, the file holds 8");
}

static void test_idx_count_mismatch(void **state)
{
    const char *dir = *state;
    uint8_t images[5 * 12], labels[5];
    fill_fixture(5, images, labels);
    char err[512];
    vnm_dataset ds;
    const char *ip = write_idx(dir, "i.gz", true, 0x803, 3, (uint32_t[]){5, 3, 4}, images,
                               sizeof images);
    const char *lp = write_idx(dir, "l.gz", true, 0x801, 1, (uint32_t[]){4}, labels, 4);
    assert_err(vnm_dataset_load_idx(ip, lp, 10, &ds, err, sizeof err), err,
               "holds 5 images but");
    assert_non_null(strstr(err, "4 labels"));
    assert_null(ds.images);
    /* a label outside the classes */
    labels[3] = 10;
    lp = write_idx(dir, "l2.gz", true, 0x801, 1, (uint32_t[]){5}, labels, 5);
    assert_err(vnm_dataset_load_idx(ip, lp, 10, &ds, err, sizeof err), err,
               "label 10 at index 3, expected < 10");
}

static void test_idx_missing_file(void **state)
{
    const char *dir = *state;
    char err[512], path[512];
    int64_t dims[1];
    uint8_t *raw;
    snprintf(path, sizeof path, "%s/nope.gz", dir);
    assert_err(vnm_idx_read(path, 1, dims, &raw, err, sizeof err), err, "cannot open");
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));
    /* the Fashion-MNIST loader names the file it looked for under the given directory */
    vnm_dataset ds;
    assert_err(vnm_fashion_mnist_load(dir, false, &ds, err, sizeof err), err,
               "t10k-images-idx3-ubyte.gz");
    assert_non_null(strstr(err, dir));
}

static void test_fashion_mnist_dir_override(void **state)
{
    const char *dir = *state;
    uint8_t images[6 * 12], labels[6];
    fill_fixture(6, images, labels);
    write_idx(dir, "train-images-idx3-ubyte.gz", true, 0x803, 3, (uint32_t[]){6, 3, 4}, images,
              sizeof images);
    write_idx(dir, "train-labels-idx1-ubyte.gz", true, 0x801, 1, (uint32_t[]){6}, labels, 6);
    write_idx(dir, "t10k-images-idx3-ubyte.gz", true, 0x803, 3, (uint32_t[]){2, 3, 4}, images,
              24);
    write_idx(dir, "t10k-labels-idx1-ubyte.gz", true, 0x801, 1, (uint32_t[]){2}, labels, 2);
    vnm_dataset train, test;
    char err[512] = "";
    assert_int_equal(vnm_fashion_mnist_load(dir, true, &train, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_fashion_mnist_load(dir, false, &test, err, sizeof err), VNM_OK);
    assert_int_equal(train.n, 6);
    assert_int_equal(test.n, 2);
    assert_memory_equal(train.images, images, sizeof images);
    assert_memory_equal(test.labels, labels, 2);
    vnm_dataset_free(&train);
    vnm_dataset_free(&test);
}

static void test_fashion_mnist_real(void **state)
{
    (void)state;
    if (access(VNM_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        print_message("# skipped: " VNM_FASHION_MNIST_DIR
                      " is not installed (tools/bootstrap.sh)\n");
        skip();
    }
    vnm_dataset train, test;
    char err[512] = "";
    vnm_status st = vnm_fashion_mnist_load(NULL, true, &train, err, sizeof err);
    if (st) fail_msg("%s", err);
    st = vnm_fashion_mnist_load(NULL, false, &test, err, sizeof err);
    if (st) fail_msg("%s", err);
    assert_int_equal(train.n, 60000);
    assert_int_equal(test.n, 10000);
    vnm_dataset *sets[2] = {&train, &test};
    for (int s = 0; s < 2; s++) {
        assert_int_equal(sets[s]->height, 28);
        assert_int_equal(sets[s]->width, 28);
        assert_int_equal(sets[s]->channels, 1);
        int64_t hist[10] = {0};
        for (int64_t i = 0; i < sets[s]->n; i++) hist[sets[s]->labels[i]]++;
        for (int c = 0; c < 10; c++) assert_int_equal(hist[c], sets[s]->n / 10);
        /* pixel mean near the documented normalisation mean (train: 0.2860) */
        double sum = 0;
        int64_t npx = sets[s]->n * 28 * 28;
        for (int64_t k = 0; k < npx; k++) sum += sets[s]->images[k];
        assert_true(fabs(sum / npx / 255.0 - VNM_FASHION_MNIST_MEAN) < 0.005);
    }
    vnm_dataset_free(&train);
    vnm_dataset_free(&test);
}

/* ---- loader ---- */

/* n images [C, H, W]; pixel 0 of image i is i (n ≤ 256), the rest pseudo-random; label i mod 10. */
static vnm_dataset make_dataset(int64_t n, int C, int H, int W)
{
    vnm_dataset ds = {.n = n, .channels = C, .height = H, .width = W, .classes = 10};
    int64_t sample = (int64_t)C * H * W;
    ds.images = malloc((size_t)(n * sample));
    ds.labels = malloc((size_t)n);
    uint32_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t k = 0; k < sample; k++) {
            s = s * 1664525u + 1013904223u;
            ds.images[i * sample + k] = (uint8_t)(s >> 24);
        }
        ds.images[i * sample] = (uint8_t)i;
        ds.labels[i] = (uint8_t)(i % 10);
    }
    return ds;
}

static vnm_loader_config plain_config(int64_t batch, uint64_t seed)
{
    vnm_loader_config cfg = vnm_loader_config_default();
    cfg.batch = batch;
    cfg.seed = seed;
    cfg.augment = false;
    cfg.mean = 0.0f;
    cfg.std = 1.0f;
    cfg.prefetch = false;
    return cfg;
}

static vnm_loader *make_loader(const vnm_dataset *ds, const vnm_loader_config *cfg)
{
    vnm_loader *l;
    char err[256] = "";
    vnm_status st = vnm_loader_create(ds, cfg, &l, err, sizeof err);
    if (st) fail_msg("loader_create: %s", err);
    return l;
}

static vnm_batch next_batch(vnm_loader *l)
{
    vnm_batch b;
    char err[256] = "";
    if (vnm_loader_next(l, &b, err, sizeof err)) fail_msg("loader_next: %s", err);
    return b;
}

static void test_shuffle_permutation(void **state)
{
    (void)state;
    const int64_t n = 37;
    vnm_dataset ds = make_dataset(n, 1, 2, 3);
    vnm_loader_config cfg = plain_config(8, 42);
    vnm_loader *a = make_loader(&ds, &cfg), *b = make_loader(&ds, &cfg);
    cfg.seed = 43;
    vnm_loader *c = make_loader(&ds, &cfg);
    int64_t p0[37], p1[37], q0[37], r0[37];
    vnm_loader_epoch_order(a, 0, p0);
    vnm_loader_epoch_order(a, 1, p1);
    vnm_loader_epoch_order(b, 0, q0);
    vnm_loader_epoch_order(c, 0, r0);
    assert_memory_equal(p0, q0, sizeof p0); /* same (seed, epoch) */
    assert_memory_not_equal(p0, p1, sizeof p0);
    assert_memory_not_equal(p0, r0, sizeof p0);
    for (int e = 0; e < 4; e++) {
        int64_t perm[37];
        int seen[37] = {0};
        vnm_loader_epoch_order(a, e, perm);
        for (int64_t i = 0; i < n; i++) {
            assert_in_range(perm[i], 0, n - 1);
            seen[perm[i]]++;
        }
        for (int64_t i = 0; i < n; i++) assert_int_equal(seen[i], 1);
    }
    /* the batches follow the order: pixel 0 identifies the sample, labels go with it */
    for (int e = 0; e < 2; e++) {
        int64_t perm[37], at = 0;
        vnm_loader_epoch_order(a, e, perm);
        while (at < n) {
            vnm_batch bt = next_batch(a);
            assert_int_equal(bt.pos.epoch, e);
            assert_int_equal(bt.pos.index, at);
            for (int64_t k = 0; k < bt.size; k++) {
                assert_true(bt.images[k * 6] == (float)perm[at + k] / 255.0f);
                assert_int_equal(bt.labels[k], perm[at + k] % 10);
            }
            at += bt.size;
            assert_true(bt.last_in_epoch == (at == n));
        }
    }
    vnm_loader_free(a);
    vnm_loader_free(b);
    vnm_loader_free(c);
    /* uniform over permutations: all 6 orders of 3 samples about equally often over 600 epochs
     * (a Sattolo-style off-by-one would only give the 2 cyclic ones); expected 100, sd 9.1 */
    vnm_dataset tiny = make_dataset(3, 1, 1, 1);
    a = make_loader(&tiny, &cfg);
    int counts[9] = {0};
    for (int e = 0; e < 600; e++) {
        int64_t perm[3];
        vnm_loader_epoch_order(a, e, perm);
        counts[perm[0] * 3 + perm[1]]++;
    }
    for (int k = 0; k < 9; k++)
        if (k / 3 != k % 3) assert_in_range(counts[k], 65, 135);
    vnm_loader_free(a);
    vnm_dataset_free(&tiny);
    /* shuffle off: dataset order */
    cfg.shuffle = false;
    a = make_loader(&ds, &cfg);
    vnm_loader_epoch_order(a, 3, p0);
    for (int64_t i = 0; i < n; i++) assert_int_equal(p0[i], i);
    vnm_loader_free(a);
    vnm_dataset_free(&ds);
}

static void assert_batch_equal(const vnm_batch *x, const vnm_batch *y, int64_t sample)
{
    assert_int_equal(x->size, y->size);
    assert_int_equal(x->pos.epoch, y->pos.epoch);
    assert_int_equal(x->pos.index, y->pos.index);
    assert_int_equal(x->last_in_epoch, y->last_in_epoch);
    assert_memory_equal(x->images, y->images, (size_t)(x->size * sample) * sizeof(float));
    assert_memory_equal(x->labels, y->labels, (size_t)x->size * sizeof(int32_t));
}

/* Batches of a reference loader (no prefetch) kept as copies. */
typedef struct {
    int64_t count, sample;
    vnm_batch *b;
} batch_log;

static batch_log record(vnm_loader *l, int64_t count, int64_t sample)
{
    batch_log log = {count, sample, calloc((size_t)count, sizeof(vnm_batch))};
    for (int64_t i = 0; i < count; i++) {
        vnm_batch b = next_batch(l);
        float *im = malloc((size_t)(b.size * sample) * sizeof(float));
        int32_t *lb = malloc((size_t)b.size * sizeof(int32_t));
        memcpy(im, b.images, (size_t)(b.size * sample) * sizeof(float));
        memcpy(lb, b.labels, (size_t)b.size * sizeof(int32_t));
        b.images = im;
        b.labels = lb;
        log.b[i] = b;
    }
    return log;
}

static void log_free(batch_log *log)
{
    for (int64_t i = 0; i < log->count; i++) {
        free((void *)log->b[i].images);
        free((void *)log->b[i].labels);
    }
    free(log->b);
}

static void test_resume_from_position(void **state)
{
    (void)state;
    vnm_dataset ds = make_dataset(45, 1, 5, 5);
    vnm_loader_config cfg = vnm_loader_config_default();
    cfg.batch = 7;
    cfg.seed = 9;
    cfg.pad = 2;
    cfg.prefetch = false;
    vnm_loader *ref = make_loader(&ds, &cfg);
    batch_log log = record(ref, 20, 25); /* 7 batches per epoch: nearly 3 epochs */
    vnm_loader_free(ref);
    for (int pf = 0; pf < 2; pf++) {
        cfg.prefetch = pf;
        vnm_loader *l = make_loader(&ds, &cfg);
        vnm_sampler_pos saved[20];
        for (int i = 0; i < 10; i++) {
            saved[i] = vnm_loader_get_pos(l);
            vnm_batch b = next_batch(l);
            assert_batch_equal(&b, &log.b[i], 25);
        }
        vnm_loader_free(l);
        /* a fresh loader resumed at each saved position continues like the reference */
        for (int k = 0; k < 10; k += 3) {
            l = make_loader(&ds, &cfg);
            char err[256];
            assert_int_equal(vnm_loader_set_pos(l, saved[k], err, sizeof err), VNM_OK);
            assert_int_equal(vnm_loader_get_pos(l).index, saved[k].index);
            for (int i = k; i < 20; i++) {
                vnm_batch b = next_batch(l);
                assert_batch_equal(&b, &log.b[i], 25);
            }
            vnm_loader_free(l);
        }
    }
    /* positions: after the last batch of an epoch the next one starts the next epoch */
    assert_int_equal(log.b[6].pos.index, 42);
    assert_true(log.b[6].last_in_epoch);
    assert_int_equal(log.b[7].pos.epoch, 1);
    assert_int_equal(log.b[7].pos.index, 0);
    vnm_loader *l = make_loader(&ds, &cfg);
    char err[256];
    assert_int_equal(vnm_loader_set_pos(l, (vnm_sampler_pos){1, 45}, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_loader_get_pos(l).epoch, 2);
    assert_int_equal(vnm_loader_get_pos(l).index, 0);
    assert_err(vnm_loader_set_pos(l, (vnm_sampler_pos){0, 46}, err, sizeof err), err,
               "index 46}, expected epoch ≥ 0 and index in [0, 45]");
    assert_err(vnm_loader_set_pos(l, (vnm_sampler_pos){-1, 0}, err, sizeof err), err,
               "epoch -1");
    vnm_loader_free(l);
    log_free(&log);
    vnm_dataset_free(&ds);
}

/* Independent reference: build the zero-padded image explicitly, cut the window, mirror it. */
static void ref_crop_flip(const uint8_t *src, uint8_t *dst, int C, int H, int W, int p, int dy,
                          int dx, bool flip)
{
    int PH = H + 2 * p, PW = W + 2 * p;
    uint8_t *padded = calloc((size_t)(C * PH * PW), 1);
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                padded[(c * PH + y + p) * PW + x + p] = src[(c * H + y) * W + x];
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                uint8_t v = padded[(c * PH + y + dy) * PW + x + dx];
                dst[(c * H + y) * W + (flip ? W - 1 - x : x)] = v;
            }
    free(padded);
}

static void test_crop_flip_hand(void **state)
{
    (void)state;
    /* 3×4 image, values 1..12 row-major */
    const uint8_t img[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uint8_t out[12];
    vnm_augment_crop_flip(img, out, 1, 3, 4, 0, 0, 0, true);
    const uint8_t mirrored[12] = {4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9};
    assert_memory_equal(out, mirrored, 12);
    /* offset (0, 0) with pad 1 shifts the content down-right and zero-fills row 0, column 0 */
    vnm_augment_crop_flip(img, out, 1, 3, 4, 1, 0, 0, false);
    const uint8_t shifted[12] = {0, 0, 0, 0, 0, 1, 2, 3, 0, 5, 6, 7};
    assert_memory_equal(out, shifted, 12);
    /* offset (2, 1) with pad 1: up by one, no horizontal shift; the last row is zero */
    vnm_augment_crop_flip(img, out, 1, 3, 4, 1, 2, 1, false);
    const uint8_t up[12] = {5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0};
    assert_memory_equal(out, up, 12);
    /* centre offset is the identity */
    vnm_augment_crop_flip(img, out, 1, 3, 4, 2, 2, 2, false);
    assert_memory_equal(out, img, 12);
    /* crop then mirror: the shifted image mirrored */
    vnm_augment_crop_flip(img, out, 1, 3, 4, 1, 0, 0, true);
    const uint8_t shifted_mirrored[12] = {0, 0, 0, 0, 3, 2, 1, 0, 7, 6, 5, 0};
    assert_memory_equal(out, shifted_mirrored, 12);
    /* every offset and flip on a 2-channel odd-sized image against the reference */
    uint8_t src[2 * 5 * 7], got[2 * 5 * 7], want[2 * 5 * 7];
    for (int k = 0; k < 70; k++) src[k] = (uint8_t)(k * 37 + 1);
    for (int p = 0; p <= 3; p++)
        for (int dy = 0; dy <= 2 * p; dy++)
            for (int dx = 0; dx <= 2 * p; dx++)
                for (int f = 0; f < 2; f++) {
                    vnm_augment_crop_flip(src, got, 2, 5, 7, p, dy, dx, f);
                    ref_crop_flip(src, want, 2, 5, 7, p, dy, dx, f);
                    assert_memory_equal(got, want, sizeof got);
                }
}

/* With augmentation each output is one of the crop/flip variants of its source image; the
 * variants are drawn uniformly enough, and eval (augment off) leaves images alone. */
static void test_loader_augmentation(void **state)
{
    (void)state;
    const int n = 240, H = 6, W = 5, pad = 2, span = 2 * pad + 1;
    vnm_dataset ds = make_dataset(n, 1, H, W);
    vnm_loader_config cfg = plain_config(16, 5);
    cfg.augment = true;
    cfg.pad = pad;
    cfg.shuffle = false;
    vnm_loader *l = make_loader(&ds, &cfg);
    int flips = 0, dy_hist[5] = {0}, dx_hist[5] = {0}, same_as_epoch1 = 0;
    float first[240][30];
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < n;) {
            vnm_batch b = next_batch(l);
            for (int64_t k = 0; k < b.size; k++, i++) {
                const float *x = b.images + k * H * W;
                if (e == 0) memcpy(first[i], x, sizeof first[i]);
                else same_as_epoch1 += !memcmp(first[i], x, sizeof first[i]);
                if (e) continue;
                int matches = 0;
                for (int dy = 0; dy < span; dy++)
                    for (int dx = 0; dx < span; dx++)
                        for (int f = 0; f < 2; f++) {
                            uint8_t v[30];
                            vnm_augment_crop_flip(ds.images + i * H * W, v, 1, H, W, pad, dy, dx,
                                                  f);
                            bool eq = true;
                            for (int q = 0; q < H * W; q++) eq = eq && x[q] == v[q] / 255.0f;
                            if (eq) {
                                matches++;
                                flips += f;
                                dy_hist[dy]++;
                                dx_hist[dx]++;
                            }
                        }
                assert_int_equal(matches, 1);
            }
        }
    /* binomial(240, 0.5): mean 120, sd 7.7; uniform offsets: 48 each, sd 6.2 */
    assert_in_range(flips, 90, 150);
    for (int d = 0; d < span; d++) {
        assert_in_range(dy_hist[d], 24, 72);
        assert_in_range(dx_hist[d], 24, 72);
    }
    assert_true(same_as_epoch1 < n / 4); /* the draws depend on the epoch */
    vnm_loader_free(l);
    /* eval: no augmentation */
    cfg.augment = false;
    l = make_loader(&ds, &cfg);
    vnm_batch b = next_batch(l);
    for (int q = 0; q < 16 * H * W; q++) assert_true(b.images[q] == ds.images[q] / 255.0f);
    vnm_loader_free(l);
    vnm_dataset_free(&ds);
}

static void test_normalisation(void **state)
{
    (void)state;
    vnm_dataset ds = make_dataset(3, 1, 16, 16);
    for (int k = 0; k < 256; k++) ds.images[256 + k] = (uint8_t)k; /* image 1: every value */
    vnm_loader_config cfg = vnm_loader_config_default();
    cfg.augment = false;
    cfg.shuffle = false;
    cfg.batch = 3;
    vnm_loader *l = make_loader(&ds, &cfg);
    vnm_batch b = next_batch(l);
    assert_int_equal(b.size, 3);
    double want[3 * 256];
    for (int k = 0; k < 3 * 256; k++) want[k] = (ds.images[k] / 255.0 - 0.2860) / 0.3530;
    tu_assert_close(b.images, want, 3 * 256, 1e-6, 1e-6, "normalised pixels");
    assert_true(fabs(b.images[256] + 0.2860 / 0.3530) < 1e-6);       /* pixel 0 */
    assert_true(fabs(b.images[511] - (1 - 0.2860) / 0.3530) < 1e-6); /* pixel 255 */
    for (int i = 0; i < 3; i++) assert_int_equal(b.labels[i], i);
    vnm_loader_free(l);
    vnm_dataset_free(&ds);
}

static void test_prefetch_bit_identical(void **state)
{
    (void)state;
    vnm_dataset ds = make_dataset(53, 2, 7, 6);
    vnm_loader_config cfg = vnm_loader_config_default();
    cfg.batch = 8;
    cfg.seed = 77;
    cfg.pad = 3;
    for (int drop = 0; drop < 2; drop++) {
        cfg.drop_last = drop;
        cfg.prefetch = false;
        vnm_loader *sync = make_loader(&ds, &cfg);
        cfg.prefetch = true;
        vnm_loader *pre = make_loader(&ds, &cfg);
        int64_t per = vnm_loader_batches_per_epoch(sync);
        assert_int_equal(per, drop ? 6 : 7);
        char err[256];
        for (int64_t i = 0; i < 2 * per + 3; i++) {
            if (i == per + 2) /* a jump while the thread has a batch in flight */
                for (int k = 0; k < 2; k++)
                    assert_int_equal(vnm_loader_set_pos(k ? pre : sync, (vnm_sampler_pos){0, 16},
                                                        err, sizeof err),
                                     VNM_OK);
            vnm_batch a = next_batch(sync), b = next_batch(pre);
            assert_batch_equal(&a, &b, 2 * 7 * 6);
            assert_int_equal(vnm_loader_get_pos(sync).index, vnm_loader_get_pos(pre).index);
        }
        vnm_loader_free(sync);
        vnm_loader_free(pre);
    }
    /* freeing a loader whose thread waits on a full ring, and one never used */
    cfg.prefetch = true;
    vnm_loader *l = make_loader(&ds, &cfg);
    next_batch(l);
    usleep(2000);
    vnm_loader_free(l);
    vnm_loader_free(make_loader(&ds, &cfg));
    vnm_dataset_free(&ds);
}

static void test_drop_last(void **state)
{
    (void)state;
    vnm_dataset ds = make_dataset(10, 1, 2, 2);
    vnm_loader_config cfg = plain_config(4, 3);
    const int64_t keep_sizes[3] = {4, 4, 2};
    for (int drop = 0; drop < 2; drop++) {
        cfg.drop_last = drop;
        vnm_loader *l = make_loader(&ds, &cfg);
        int64_t per = vnm_loader_batches_per_epoch(l);
        assert_int_equal(per, drop ? 2 : 3);
        for (int e = 0; e < 2; e++) {
            int64_t perm[10];
            vnm_loader_epoch_order(l, e, perm);
            for (int64_t i = 0; i < per; i++) {
                vnm_batch b = next_batch(l);
                assert_int_equal(b.size, keep_sizes[i]);
                assert_int_equal(b.pos.epoch, e);
                assert_int_equal(b.pos.index, 4 * i);
                assert_true(b.last_in_epoch == (i == per - 1));
                for (int64_t k = 0; k < b.size; k++)
                    assert_true(b.images[k * 4] == (float)perm[4 * i + k] / 255.0f);
            }
        }
        vnm_sampler_pos p = vnm_loader_get_pos(l);
        assert_int_equal(p.epoch, 2);
        assert_int_equal(p.index, 0);
        vnm_loader_free(l);
    }
    /* a dataset smaller than one batch has no batch with drop_last */
    cfg.batch = 11;
    vnm_loader *l;
    char err[256];
    assert_err(vnm_loader_create(&ds, &cfg, &l, err, sizeof err), err,
               "batch 11 with drop_last exceeds the 10 samples");
    assert_null(l);
    cfg.drop_last = false;
    l = make_loader(&ds, &cfg);
    vnm_batch b = next_batch(l);
    assert_int_equal(b.size, 10);
    assert_true(b.last_in_epoch);
    vnm_loader_free(l);
    vnm_dataset_free(&ds);
}

static void test_loader_errors(void **state)
{
    (void)state;
    vnm_dataset ds = make_dataset(10, 1, 4, 4);
    vnm_loader *l;
    char err[256];
    vnm_loader_config cfg = plain_config(0, 0);
    assert_err(vnm_loader_create(&ds, &cfg, &l, err, sizeof err), err,
               "batch 0, expected ≥ 1");
    cfg = plain_config(4, 0);
    cfg.augment = true;
    cfg.pad = -1;
    assert_err(vnm_loader_create(&ds, &cfg, &l, err, sizeof err), err, "pad -1, expected 0..4");
    cfg.pad = 5;
    assert_err(vnm_loader_create(&ds, &cfg, &l, err, sizeof err), err, "pad 5");
    cfg = plain_config(4, 0);
    cfg.std = 0.0f;
    assert_err(vnm_loader_create(&ds, &cfg, &l, err, sizeof err), err, "std > 0");
    cfg.std = 1.0f;
    cfg.mean = NAN;
    assert_err(vnm_loader_create(&ds, &cfg, &l, err, sizeof err), err, "expected finite");
    cfg.mean = 0.0f;
    vnm_dataset empty = ds;
    empty.n = 0;
    assert_err(vnm_loader_create(&empty, &cfg, &l, err, sizeof err), err, "empty dataset");
    assert_err(vnm_loader_create(NULL, &cfg, &l, err, sizeof err), err, "NULL dataset");
    vnm_dataset_free(&ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idx_parse_plain_and_gzip, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_idx_bad_magic, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_idx_truncated, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_idx_count_mismatch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_idx_missing_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fashion_mnist_dir_override, fx_setup, fx_teardown),
        cmocka_unit_test(test_fashion_mnist_real),
        cmocka_unit_test(test_shuffle_permutation),
        cmocka_unit_test(test_resume_from_position),
        cmocka_unit_test(test_crop_flip_hand),
        cmocka_unit_test(test_loader_augmentation),
        cmocka_unit_test(test_normalisation),
        cmocka_unit_test(test_prefetch_bit_identical),
        cmocka_unit_test(test_drop_last),
        cmocka_unit_test(test_loader_errors),
    };
    return cmocka_run_group_tests_name("data", tests, NULL, NULL);
}
