/* tests/test_checkpoint.c — the HDF5 checkpoint file layer (train/checkpoint.c): round trips of every
 * dtype and attribute kind, the `latest` pointer and its fallback, keep_last pruning, format and
 * version checks, corrupt files, type/shape checks on read, a writer killed with SIGKILL mid-save,
 * and h5py reading our files. Each test runs in its own mkdtemp directory. */
#include "test_util.h"

#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>

#include "train/checkpoint.h"

#define ERR_LEN 1024

static bool exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%s/ckpt/%s", dir, name);
    return stat(p, &st) == 0;
}

/* Files in <dir>/ckpt. */
static int count_files(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/ckpt", dir);
    DIR *d = opendir(p);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/ckpt/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const int64_t W_SHAPE[2] = {2, 3};

/* A minimal checkpoint: meta and /model/w = step + k/10 ([2, 3] f32). */
static vnm_ckpt_writer *begin_simple(const char *dir, int64_t step)
{
    char err[ERR_LEN];
    vnm_ckpt_writer *w = vnm_ckpt_begin(dir, step, err, sizeof err);
    if (!w) fail_msg("%s", err);
    vnm_ckpt_meta meta = {.epoch = step / 10, .stage_index = 1, .stage_step = step - 1,
                          .recipe = "run:\n  name: t\n"};
    float v[6]; // [2, 3]
    for (int k = 0; k < 6; k++) v[k] = (float)step + (float)k / 10.0f;
    if (vnm_ckpt_write_meta(w, &meta, err, sizeof err) ||
        vnm_ckpt_write(w, "/model/w", VNM_CKPT_F32, 2, W_SHAPE, v, err, sizeof err))
        fail_msg("%s", err);
    return w;
}

static void commit_simple(const char *dir, int64_t step, int keep_last)
{
    char err[ERR_LEN];
    vnm_ckpt_writer *w = begin_simple(dir, step);
    if (vnm_ckpt_commit(w, keep_last, NULL, 0, err, sizeof err)) fail_msg("%s", err);
}

/* Opens `path`, checks the step and the /model/w written by begin_simple. */
static void assert_opens_step(const char *path, int64_t step)
{
    char err[ERR_LEN];
    vnm_ckpt_reader *r = vnm_ckpt_open(path, err, sizeof err);
    if (!r) fail_msg("%s", err);
    assert_int_equal(vnm_ckpt_step(r), step);
    float v[6]; // [2, 3]
    if (vnm_ckpt_read(r, "/model/w", VNM_CKPT_F32, 2, W_SHAPE, v, err, sizeof err))
        fail_msg("%s", err);
    for (int k = 0; k < 6; k++) assert_true(v[k] == (float)step + (float)k / 10.0f);
    vnm_ckpt_close(r);
}

static void assert_open_fails(const char *path, const char *needle)
{
    char err[ERR_LEN] = "";
    vnm_ckpt_reader *r = vnm_ckpt_open(path, err, sizeof err);
    if (r) {
        vnm_ckpt_close(r);
        fail_msg("open %s succeeded, expected an error with \"%s\"", path, needle);
    }
    tu_assert_has(err, path);
    tu_assert_has(err, needle);
}

static void test_roundtrip_dtypes(void **state)
{
    const char *dir = *state;
    char err[ERR_LEN], path[PATH_MAX];
    float f32[35]; // [5, 7]
    uint16_t bf16[6]; // [2, 3]
    uint8_t u8[24]; // [2, 3, 4]
    int32_t i32[5]; // [5]
    int64_t i64[3] = {INT64_MIN, -1, INT64_MAX};
    uint64_t u64[2] = {UINT64_MAX, 12345678901234567890ull};
    double f64 = -1.0 / 3.0; // scalar
    for (int k = 0; k < 35; k++) f32[k] = (float)(k * 37 % 11) - 5.25f;
    for (int k = 0; k < 6; k++) bf16[k] = (uint16_t)(0x3f80 + k * 0x111);
    for (int k = 0; k < 24; k++) u8[k] = (uint8_t)(k * 11);
    for (int k = 0; k < 5; k++) i32[k] = (k - 2) * 1000003;
    struct {
        const char *path;
        vnm_ckpt_dtype dt;
        int ndim;
        int64_t shape[3];
        const void *data;
        size_t bytes;
    } cases[] = {
        {"/model/blocks.0.attn.qkv.weight", VNM_CKPT_F32, 2, {5, 7}, f32, sizeof f32},
        {"/model/blocks.0.norm1.bias", VNM_CKPT_BF16, 2, {2, 3}, bf16, sizeof bf16},
        {"/sparse/blocks.1.mlp.fc1/slots", VNM_CKPT_U8, 3, {2, 3, 4}, u8, sizeof u8},
        {"/sparse/blocks.1.mlp.fc1/cols", VNM_CKPT_I32, 1, {5}, i32, sizeof i32},
        {"/data/position", VNM_CKPT_I64, 1, {3}, i64, sizeof i64},
        {"/rng/global", VNM_CKPT_U64, 1, {2}, u64, sizeof u64},
        {"/optim/lr", VNM_CKPT_F64, 0, {0}, &f64, sizeof f64},
        {"/model/empty", VNM_CKPT_F32, 2, {0, 4}, NULL, 0},
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    vnm_ckpt_writer *w = vnm_ckpt_begin(dir, 7, err, sizeof err);
    if (!w) fail_msg("%s", err);
    vnm_ckpt_meta meta = {0};
    if (vnm_ckpt_write_meta(w, &meta, err, sizeof err)) fail_msg("%s", err);
    for (int c = 0; c < n; c++)
        if (vnm_ckpt_write(w, cases[c].path, cases[c].dt, cases[c].ndim, cases[c].shape,
                           cases[c].data, err, sizeof err))
            fail_msg("%s", err);
    if (vnm_ckpt_commit(w, 0, path, sizeof path, err, sizeof err)) fail_msg("%s", err);
    tu_assert_has(path, "/ckpt/step_00000007.h5");

    vnm_ckpt_reader *r = vnm_ckpt_open(path, err, sizeof err);
    if (!r) fail_msg("%s", err);
    assert_string_equal(vnm_ckpt_file(r), path);
    for (int c = 0; c < n; c++) {
        vnm_ckpt_dtype dt;
        int nd;
        int64_t shape[VNM_CKPT_MAX_DIMS];
        if (vnm_ckpt_shape(r, cases[c].path, &dt, &nd, shape, err, sizeof err))
            fail_msg("%s", err);
        assert_int_equal(dt, cases[c].dt);
        assert_int_equal(nd, cases[c].ndim);
        for (int d = 0; d < nd; d++) assert_int_equal(shape[d], cases[c].shape[d]);
        unsigned char got[512];
        memset(got, 0xA5, sizeof got);
        if (vnm_ckpt_read(r, cases[c].path, cases[c].dt, cases[c].ndim, cases[c].shape, got, err,
                          sizeof err))
            fail_msg("%s", err);
        if (cases[c].bytes) assert_memory_equal(got, cases[c].data, cases[c].bytes);
        char *tag = NULL;
        if (vnm_ckpt_get_str(r, cases[c].path, "dtype", &tag, err, sizeof err))
            fail_msg("%s", err);
        assert_string_equal(tag, vnm_ckpt_dtype_name(cases[c].dt));
        free(tag);
    }

    char **names;
    int64_t count;
    if (vnm_ckpt_list(r, "/", &names, &count, err, sizeof err)) fail_msg("%s", err);
    const char *want[] = {"/data/position", "/model/blocks.0.attn.qkv.weight",
                          "/model/blocks.0.norm1.bias", "/model/empty", "/optim/lr",
                          "/rng/global", "/sparse/blocks.1.mlp.fc1/cols",
                          "/sparse/blocks.1.mlp.fc1/slots"};
    assert_int_equal(count, 8);
    for (int k = 0; k < 8; k++) assert_string_equal(names[k], want[k]);
    vnm_ckpt_free_names(names, count);
    if (vnm_ckpt_list(r, "/sparse/", &names, &count, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(count, 2);
    assert_string_equal(names[0], "/sparse/blocks.1.mlp.fc1/cols");
    vnm_ckpt_free_names(names, count);
    assert_int_not_equal(vnm_ckpt_list(r, "/lora", &names, &count, err, sizeof err), VNM_OK);
    tu_assert_has(err, "no group /lora");
    vnm_ckpt_close(r);
}

static void test_attributes(void **state)
{
    const char *dir = *state;
    char err[ERR_LEN], path[PATH_MAX];
    const char *recipe = "run:\n  name: deit – ß ü 日本\nmodel: {arch: vit}\n"; // UTF-8
    vnm_ckpt_writer *w = vnm_ckpt_begin(dir, 1234, err, sizeof err);
    if (!w) fail_msg("%s", err);
    vnm_ckpt_meta meta = {.epoch = 3, .stage_index = 2, .stage_step = 99, .recipe = recipe};
    float x = 1.5f;
    if (vnm_ckpt_write_meta(w, &meta, err, sizeof err) ||
        vnm_ckpt_write(w, "/lora/blocks.0.attn.qkv/A", VNM_CKPT_F32, 1, (int64_t[]){1}, &x, err,
                       sizeof err) ||
        /* group that does not exist yet, and one that the dataset above created */
        vnm_ckpt_set_str(w, "/sparse/blocks.2.mlp.fc2", "pattern", "64:2:5", err, sizeof err) ||
        vnm_ckpt_set_i64(w, "/sparse/blocks.2.mlp.fc2", "O", -3072, err, sizeof err) ||
        vnm_ckpt_set_f64(w, "/lora/blocks.0.attn.qkv", "alpha", 0.125, err, sizeof err) ||
        vnm_ckpt_set_f64(w, "/lora/blocks.0.attn.qkv/A", "scale", -2.5e-7, err, sizeof err) ||
        vnm_ckpt_set_i64(w, "/", "epoch", 4, err, sizeof err)) /* replaces an attribute */
        fail_msg("%s", err);
    if (vnm_ckpt_commit(w, 3, path, sizeof path, err, sizeof err)) fail_msg("%s", err);
    /* other writers (numpy bytes, Fortran tools) store fixed-length, null-padded strings */
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), t = H5Tcopy(H5T_C_S1),
          sp = H5Screate(H5S_SCALAR);
    assert_true(f >= 0 && t >= 0 && sp >= 0 && H5Tset_size(t, 8) >= 0 &&
                H5Tset_strpad(t, H5T_STR_NULLPAD) >= 0);
    hid_t a = H5Acreate2(f, "fixed", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0 && H5Awrite(a, t, "abc\0\0\0\0\0") >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);

    vnm_ckpt_reader *r = vnm_ckpt_open(dir, err, sizeof err);
    if (!r) fail_msg("%s", err);
    assert_int_equal(vnm_ckpt_step(r), 1234);
    int64_t i;
    double d;
    char *s;
    struct { const char *name; int64_t want; } ints[] = {
        {"format_version", 1}, {"step", 1234}, {"epoch", 4}, {"stage_index", 2},
        {"stage_step", 99}};
    for (int k = 0; k < 5; k++) {
        if (vnm_ckpt_get_i64(r, "/", ints[k].name, &i, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(i, ints[k].want);
    }
    struct { const char *path, *name, *want; } strs[] = {
        {"/", "format", "vnm-checkpoint"}, {"/", "program_version", VNM_VERSION},
        {"/", "recipe", recipe}, {"/sparse/blocks.2.mlp.fc2", "pattern", "64:2:5"},
        {"/", "fixed", "abc"}};
    for (int k = 0; k < 5; k++) {
        if (vnm_ckpt_get_str(r, strs[k].path, strs[k].name, &s, err, sizeof err))
            fail_msg("%s", err);
        assert_string_equal(s, strs[k].want);
        free(s);
    }
    if (vnm_ckpt_get_str(r, "/", "created", &s, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(strlen(s), 20); // 2026-01-02T03:04:05Z
    assert_true(s[4] == '-' && s[10] == 'T' && s[19] == 'Z');
    free(s);
    if (vnm_ckpt_get_i64(r, "/sparse/blocks.2.mlp.fc2", "O", &i, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(i, -3072);
    if (vnm_ckpt_get_f64(r, "/lora/blocks.0.attn.qkv", "alpha", &d, err, sizeof err))
        fail_msg("%s", err);
    assert_true(d == 0.125);
    if (vnm_ckpt_get_f64(r, "/lora/blocks.0.attn.qkv/A", "scale", &d, err, sizeof err))
        fail_msg("%s", err);
    assert_true(d == -2.5e-7);

    assert_int_equal(vnm_ckpt_get_i64(r, "/", "format", &i, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "attribute format is not a scalar integer");
    assert_int_equal(vnm_ckpt_get_f64(r, "/", "step", &d, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "attribute step is not a scalar float");
    assert_int_equal(vnm_ckpt_get_str(r, "/", "nope", &s, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "/ has no attribute 'nope'");
    assert_int_equal(vnm_ckpt_get_i64(r, "/model/x", "a", &i, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "no object /model/x");
    vnm_ckpt_close(r);
}

static void test_latest_and_keep_last(void **state)
{
    const char *dir = *state;
    char p[PATH_MAX];
    commit_simple(dir, 1, 2);
    /* things that are not checkpoints are never pruned */
    write_text(dir, "notes.txt", "keep me");
    write_text(dir, "step_1.h5", "not the pattern");
    write_text(dir, "step_00000000.h5.bak", "not the pattern");
    for (int64_t s = 2; s <= 4; s++) commit_simple(dir, s, 2);
    assert_false(exists(dir, "step_00000001.h5"));
    assert_false(exists(dir, "step_00000002.h5"));
    assert_true(exists(dir, "step_00000003.h5"));
    assert_true(exists(dir, "step_00000004.h5"));
    assert_true(exists(dir, "notes.txt") && exists(dir, "step_1.h5") &&
                exists(dir, "step_00000000.h5.bak"));
    assert_int_equal(count_files(dir), 6); /* 2 checkpoints, latest, 3 others */
    snprintf(p, sizeof p, "%s/ckpt/latest", dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char line[64] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "step_00000004.h5\n");

    /* the run dir, the ckpt dir and the file itself */
    assert_opens_step(dir, 4);
    snprintf(p, sizeof p, "%s/ckpt", dir);
    assert_opens_step(p, 4);
    snprintf(p, sizeof p, "%s/ckpt/step_00000003.h5", dir);
    assert_opens_step(p, 3);

    /* an earlier step written after later ones (a rerun) is kept and becomes latest */
    commit_simple(dir, 2, 1);
    assert_true(exists(dir, "step_00000002.h5"));
    assert_true(exists(dir, "step_00000004.h5"));
    assert_false(exists(dir, "step_00000003.h5"));
    assert_opens_step(dir, 2);
}

static void test_latest_fallback(void **state)
{
    const char *dir = *state;
    char p[PATH_MAX], err[ERR_LEN];
    snprintf(p, sizeof p, "%s/ckpt", dir);
    assert_int_equal(mkdir(p, 0777), 0);
    assert_open_fails(dir, "no checkpoint found");
    for (int64_t s = 1; s <= 3; s++) commit_simple(dir, s, 0);
    write_text(dir, "latest", "step_00000002.h5\n");
    assert_opens_step(dir, 2); /* latest wins over the highest number */
    write_text(dir, "latest", "step_00000009.h5\n"); /* points to a missing file */
    assert_opens_step(dir, 3);
    write_text(dir, "latest", "../../etc/passwd\n");
    assert_opens_step(dir, 3);
    snprintf(p, sizeof p, "%s/ckpt/latest", dir);
    assert_int_equal(unlink(p), 0);
    assert_opens_step(dir, 3);
    snprintf(p, sizeof p, "%s/nowhere", dir);
    assert_null(vnm_ckpt_open(p, err, sizeof err));
    tu_assert_has(err, "no such file or directory");
}

static void test_corrupt_file(void **state)
{
    const char *dir = *state;
    char p[PATH_MAX], err[ERR_LEN];
    vnm_ckpt_writer *w = begin_simple(dir, 5);
    float big[4096] = {0}; /* makes the data part of the file dominate */
    if (vnm_ckpt_write(w, "/model/big", VNM_CKPT_F32, 1, (int64_t[]){4096}, big, err,
                       sizeof err) ||
        vnm_ckpt_commit(w, 0, p, sizeof p, err, sizeof err))
        fail_msg("%s", err);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(truncate(p, st.st_size / 2), 0);
    assert_open_fails(p, "truncated or corrupt");
    assert_open_fails(dir, "truncated or corrupt"); /* latest points at it: no silent fallback */
    assert_int_equal(truncate(p, 0), 0);
    assert_open_fails(p, "not an HDF5 file");
    write_text(dir, "step_00000005.h5", "garbage, not HDF5\n");
    assert_open_fails(p, "not an HDF5 file");
}

static void test_wrong_format(void **state)
{
    const char *dir = *state;
    char p[PATH_MAX], err[ERR_LEN];
    vnm_ckpt_writer *w = begin_simple(dir, 1);
    if (vnm_ckpt_set_str(w, "/", "format", "other-tool", err, sizeof err) ||
        vnm_ckpt_commit(w, 0, p, sizeof p, err, sizeof err))
        fail_msg("%s", err);
    assert_open_fails(p, "not a vnm checkpoint (root attribute format is \"other-tool\"");

    w = begin_simple(dir, 2);
    if (vnm_ckpt_set_i64(w, "/", "format", 7, err, sizeof err) ||
        vnm_ckpt_commit(w, 0, p, sizeof p, err, sizeof err))
        fail_msg("%s", err);
    assert_open_fails(p, "not a vnm checkpoint");
}

static void test_newer_version(void **state)
{
    const char *dir = *state;
    char p[PATH_MAX], err[ERR_LEN];
    vnm_ckpt_writer *w = begin_simple(dir, 1);
    if (vnm_ckpt_set_i64(w, "/", "format_version", 2, err, sizeof err) ||
        vnm_ckpt_commit(w, 0, p, sizeof p, err, sizeof err))
        fail_msg("%s", err);
    assert_open_fails(p, "format_version 2 is newer than this program supports (1)");
    w = begin_simple(dir, 2);
    if (vnm_ckpt_set_i64(w, "/", "format_version", 0, err, sizeof err) ||
        vnm_ckpt_commit(w, 0, p, sizeof p, err, sizeof err))
        fail_msg("%s", err);
    assert_open_fails(p, "invalid format_version 0");
}

static void test_read_mismatch(void **state)
{
    const char *dir = *state;
    char err[ERR_LEN];
    commit_simple(dir, 1, 0);
    vnm_ckpt_reader *r = vnm_ckpt_open(dir, err, sizeof err);
    if (!r) fail_msg("%s", err);
    float buf[6];
    assert_int_equal(vnm_ckpt_read(r, "/model/w", VNM_CKPT_F32, 2, (int64_t[]){3, 2}, buf, err,
                                   sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, vnm_ckpt_file(r));
    tu_assert_has(err, "dataset /model/w is f32 [2, 3], expected f32 [3, 2]");
    assert_int_equal(vnm_ckpt_read(r, "/model/w", VNM_CKPT_F32, 1, (int64_t[]){6}, buf, err,
                                   sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "is f32 [2, 3], expected f32 [6]");
    assert_int_equal(
        vnm_ckpt_read(r, "/model/w", VNM_CKPT_I32, 2, W_SHAPE, buf, err, sizeof err),
        VNM_ERR_INPUT);
    tu_assert_has(err, "is f32 [2, 3], expected i32 [2, 3]");
    assert_int_equal(
        vnm_ckpt_read(r, "/model/w", VNM_CKPT_BF16, 2, W_SHAPE, buf, err, sizeof err),
        VNM_ERR_INPUT);
    tu_assert_has(err, "expected bf16 [2, 3]");
    assert_int_equal(
        vnm_ckpt_read(r, "/model/v", VNM_CKPT_F32, 2, W_SHAPE, buf, err, sizeof err),
        VNM_ERR_INPUT);
    tu_assert_has(err, "no dataset /model/v");
    assert_int_equal(vnm_ckpt_read(r, "/model", VNM_CKPT_F32, 2, W_SHAPE, buf, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "/model is not a dataset");
    vnm_ckpt_close(r);
}

static void test_writer_errors(void **state)
{
    const char *dir = *state;
    char err[ERR_LEN];
    float x = 0;
    /* no meta: refused, temp removed, nothing committed */
    vnm_ckpt_writer *w = vnm_ckpt_begin(dir, 1, err, sizeof err);
    if (!w) fail_msg("%s", err);
    assert_true(exists(dir, "step_00000001.h5.tmp"));
    assert_int_equal(vnm_ckpt_commit(w, 0, NULL, 0, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "vnm_ckpt_write_meta was not called");
    assert_int_equal(count_files(dir), 0);

    /* a failed write poisons the checkpoint */
    w = begin_simple(dir, 2);
    assert_int_equal(
        vnm_ckpt_write(w, "/model/w", VNM_CKPT_F32, 2, W_SHAPE, &x, err, sizeof err),
        VNM_ERR_INPUT);
    tu_assert_has(err, "dataset /model/w: already written");
    assert_int_equal(vnm_ckpt_write(w, "model/y", VNM_CKPT_F32, 0, NULL, &x, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "path must be absolute");
    assert_int_equal(vnm_ckpt_write(w, "/model/z", VNM_CKPT_F32, 2, (int64_t[]){2, -1}, &x, err,
                                    sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "negative dimension in shape [2, -1]");
    /* a dataset cannot hold a child: HDF5's failure comes back as a message, not a crash */
    assert_int_equal(vnm_ckpt_write(w, "/model/w/sub", VNM_CKPT_F32, 0, NULL, &x, err,
                                    sizeof err),
                     VNM_ERR_RUNTIME);
    tu_assert_has(err, "/model/w/sub");
    tu_assert_has(err, "checkpoint.c:");
    assert_int_equal(vnm_ckpt_commit(w, 0, NULL, 0, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "an earlier write failed");
    assert_int_equal(count_files(dir), 0);

    w = begin_simple(dir, 3);
    vnm_ckpt_abort(w);
    assert_int_equal(count_files(dir), 0);
    vnm_ckpt_abort(NULL);

    assert_null(vnm_ckpt_begin(dir, -1, err, sizeof err));
    tu_assert_has(err, "step must be >= 0");
    assert_null(vnm_ckpt_begin("/proc/no_such_dir", 1, err, sizeof err));
    tu_assert_has(err, "cannot create directory /proc/no_such_dir");
}

/* The child writes step 2 until killed; the parent kills it mid-dataset. */
static void test_kill_during_write(void **state)
{
    const char *dir = *state;
    char err[ERR_LEN];
    commit_simple(dir, 1, 3);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* no cmocka asserts here: a failure must not run the rest of the suite */
        close(fds[0]);
        vnm_ckpt_meta meta = {0};
        vnm_ckpt_writer *w = vnm_ckpt_begin(dir, 2, err, sizeof err);
        if (!w || vnm_ckpt_write_meta(w, &meta, err, sizeof err)) _exit(3);
        enum { N = 1 << 18 };
        float *big = calloc(N, sizeof *big); // [N]
        if (!big) _exit(3);
        for (int k = 0; k < 512; k++) {
            char p[64];
            snprintf(p, sizeof p, "/model/big.%d", k);
            if (vnm_ckpt_write(w, p, VNM_CKPT_F32, 1, (int64_t[]){N}, big, err, sizeof err))
                _exit(4);
            if (k == 0 && write(fds[1], "x", 1) != 1) _exit(5);
        }
        pause(); /* never commit: the kill must find the write unfinished */
        _exit(0);
    }
    close(fds[1]);
    char c;
    int status;
    if (read(fds[0], &c, 1) != 1) {
        waitpid(pid, &status, 0);
        fail_msg("writer child died before writing (exit status %d)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    close(fds[0]);
    usleep(20000);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    assert_true(exists(dir, "step_00000002.h5.tmp"));
    assert_opens_step(dir, 1);
    /* the next writer removes the stale temp file */
    vnm_ckpt_writer *w = begin_simple(dir, 3);
    assert_false(exists(dir, "step_00000002.h5.tmp"));
    if (vnm_ckpt_commit(w, 3, NULL, 0, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(count_files(dir), 3); /* steps 1 and 3, latest */
    assert_opens_step(dir, 3);
}

/* Runs the h5py checker on `path`; returns its exit status, output in out. */
static int run_h5py(const char *script, const char *path, char *out, size_t len)
{
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s' 2>&1", script, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_h5py_reads(void **state)
{
    const char *dir = *state;
    char err[ERR_LEN], path[PATH_MAX], script[PATH_MAX], out[8192];
    if (system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
        print_message("# skipped: /usr/bin/python3 cannot import h5py (tools/bootstrap.sh installs "
                      "python3-h5py)\n");
        skip();
    }
    const char *root = getenv("VNM_SOURCE_ROOT");
    if (!root) {
        print_message("# skipped: VNM_SOURCE_ROOT is unset, so tools/ cannot be located\n");
        skip();
    }
    snprintf(script, sizeof script, "%s/tools/check_checkpoint_h5py.py", root);
    vnm_ckpt_writer *w = begin_simple(dir, 42);
    uint16_t bf[6] = {0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0}; // [2, 3]
    if (vnm_ckpt_write(w, "/model/blocks.0.attn.qkv.weight", VNM_CKPT_BF16, 2, W_SHAPE, bf, err,
                       sizeof err) ||
        vnm_ckpt_set_str(w, "/sparse/blocks.0.mlp.fc1", "pattern", "64:2:5", err, sizeof err) ||
        vnm_ckpt_commit(w, 0, path, sizeof path, err, sizeof err))
        fail_msg("%s", err);
    int rc = run_h5py(script, path, out, sizeof out);
    if (rc != 0) fail_msg("h5py checker exited %d:\n%s", rc, out);
    tu_assert_has(out, "dataset /model/blocks.0.attn.qkv.weight [2, 3] uint16 dtype=bf16");
    tu_assert_has(out, "dataset /model/w [2, 3] float32 dtype=f32");
    tu_assert_has(out, "attr format = 'vnm-checkpoint'");
    tu_assert_has(out, "attr step = 42");

    /* the checker itself rejects a file that is not ours */
    w = begin_simple(dir, 43);
    if (vnm_ckpt_set_str(w, "/", "format", "x", err, sizeof err) ||
        vnm_ckpt_commit(w, 0, path, sizeof path, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(run_h5py(script, path, out, sizeof out), 1);
    tu_assert_has(out, "not a vnm checkpoint");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_dtypes, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_attributes, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_latest_and_keep_last, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_latest_fallback, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_corrupt_file, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_wrong_format, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_newer_version, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_read_mismatch, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_writer_errors, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_kill_during_write, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_h5py_reads, tu_setup_tmpdir, tu_teardown_tmpdir),
    };
    return cmocka_run_group_tests_name("checkpoint", tests, NULL, NULL);
}
