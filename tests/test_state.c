/* tests/test_state.c — the complete training state (train/state.c): a small hand-built model (dense
 * linears, one permuted V:N:M sparse linear, dropout, a bf16 buffer) trained 3 steps, saved, and
 * resumed on a fresh context with different initial values must reproduce the next 3 losses and
 * every parameter, compressed array and optimiser moment bit for bit (AdamW and SGD with momentum);
 * the file layout is exactly DESIGN.md's; load errors name the file and the object and change
 * nothing; `vnm inspect` summarises the file. Each test runs in its own mkdtemp directory. */
#include "test_util.h"

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hdf5.h>

#include "sparse/sparse.h"
#include "train/checkpoint.h"
#include "train/state.h"

#define ERR_LEN 2048
#define T 8    /* tokens per batch */
#define IN 12  /* model input */
#define H 32   /* hidden = sparse layer input */
#define SO 20  /* sparse layer output: not a multiple of V, so O_pad > O */
#define C 3    /* head output */
#define NB 5   /* bf16 buffer */
#define RECIPE "name: state-test\nmodel:\n  hidden: 32\n"

/* ---- the model ---- */

typedef struct {
    vnm_ctx *ctx;
    vnm_tensor *w0, *b0, *sb, *w2, *b2, *buf;
    vnm_sparse_weight *sw;
    int32_t perm_in[H];
    int64_t kept; /* weights kept by the sparse layer's mask */
    vnm_optim *opt;
    vnm_optim_config cfg;
    vnm_state_tensor tensors[7];
    vnm_state_sparse sparse[1];
    vnm_run_state st;
} model;

/* Deterministic host values in [-1, 1) from a 64-bit LCG, independent of the context RNG. */
static float lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(*s >> 40) / (double)(1ULL << 24)) * 2.0f - 1.0f;
}

static vnm_tensor *named_param(vnm_ctx *ctx, int ndim, const int64_t *shape, const char *name)
{
    vnm_tensor *t = vnm_param_new(ctx, VNM_DTYPE_F32, ndim, shape, name);
    assert_non_null(t);
    assert_int_equal(vnm_rng_uniform(ctx, t, -0.5f, 0.5f), VNM_OK);
    return t;
}

/* W[SO, H] from seed, permuted by reversing the rows and striding the inputs, masked on its
 * magnitude in the permuted order. */
static void make_sparse(model *m, uint64_t seed, const char *pattern)
{
    vnm_pattern p;
    char err[ERR_LEN];
    assert_int_equal(vnm_pattern_parse(pattern, &p, err, sizeof err), VNM_OK);
    float W[SO * H], S[SO * H], Sp[SO * H]; // [SO, H]
    uint8_t mask[SO * H];                  // [SO, H] permuted order
    int32_t perm_out[SO];
    for (int i = 0; i < SO * H; i++) W[i] = lcg(&seed);
    for (int o = 0; o < SO; o++) perm_out[o] = SO - 1 - o;
    for (int j = 0; j < H; j++) m->perm_in[j] = (j * 7) % H;
    assert_int_equal(vnm_score_compute(VNM_SCORE_MAGNITUDE, W, SO, H, NULL, 0, S, err, sizeof err),
                     VNM_OK);
    for (int o = 0; o < SO; o++)
        for (int j = 0; j < H; j++) Sp[o * H + j] = S[perm_out[o] * H + m->perm_in[j]];
    assert_int_equal(vnm_mask_select(p, VNM_SELECT_L1, Sp, SO, H, mask, err, sizeof err), VNM_OK);
    vnm_sparse_host h;
    if (vnm_sparse_compress(p, W, mask, SO, H, perm_out, m->perm_in, &h, err, sizeof err) != VNM_OK)
        fail_msg("compress: %s", err);
    m->sw = vnm_sparse_weight_new(m->ctx, &h, "sp.weight");
    assert_non_null(m->sw);
    vnm_sparse_host_free(&h);
    m->kept = 0;
    for (int i = 0; i < SO * H; i++) m->kept += mask[i];
}

static void model_init(model *m, uint64_t seed, vnm_optim_kind kind, const char *pattern)
{
    memset(m, 0, sizeof *m);
    vnm_ctx_config cc = {VNM_DEVICE_CPU, seed, 0};
    m->ctx = vnm_ctx_create(&cc);
    assert_non_null(m->ctx);
    m->w0 = named_param(m->ctx, 2, VNM_SHAPE(H, IN), "fc0.weight");
    m->b0 = named_param(m->ctx, 1, VNM_SHAPE(H), "fc0.bias");
    m->sb = named_param(m->ctx, 1, VNM_SHAPE(SO), "sp.bias");
    m->w2 = named_param(m->ctx, 2, VNM_SHAPE(C, SO), "head.weight");
    m->b2 = named_param(m->ctx, 1, VNM_SHAPE(C), "head.bias");
    m->buf = vnm_buffer_new(m->ctx, VNM_DTYPE_BF16, 1, VNM_SHAPE(NB), "buf");
    assert_non_null(m->buf);
    uint16_t bits[NB];
    for (int i = 0; i < NB; i++) bits[i] = vnm_f32_to_bf16((float)(seed * 10 + (uint64_t)i));
    assert_int_equal(vnm_tensor_from_host(m->ctx, m->buf, bits), VNM_OK);
    make_sparse(m, seed * 977, pattern);

    m->cfg = vnm_optim_config_default(kind);
    m->cfg.lr = 0.05;
    if (kind == VNM_OPTIM_SGD) {
        m->cfg.momentum = 0.9;
        m->cfg.weight_decay = 1e-3;
    }
    m->opt = vnm_optim_create(m->ctx, &m->cfg);
    assert_non_null(m->opt);
    vnm_tensor *params[] = {m->w0, m->b0, m->sw->vals, m->sb, m->w2, m->b2};
    assert_int_equal(vnm_optim_add_decay_groups(m->opt, params, 6, NULL, 0), VNM_OK);

    const char *names[] = {"fc0.weight", "fc0.bias", "sp.bias", "head.weight", "head.bias", "buf"};
    vnm_tensor *ts[] = {m->w0, m->b0, m->sb, m->w2, m->b2, m->buf};
    for (int i = 0; i < 6; i++) m->tensors[i] = (vnm_state_tensor){names[i], ts[i]};
    m->sparse[0] = (vnm_state_sparse){"sp.weight", m->sw, m->perm_in, "magnitude"};
    m->st = (vnm_run_state){.ctx = m->ctx,
                            .tensors = m->tensors,
                            .n_tensors = 6,
                            .sparse = m->sparse,
                            .n_sparse = 1,
                            .optim = m->opt,
                            .optim_cfg = &m->cfg,
                            .recipe = RECIPE};
}

static void model_free(model *m)
{
    vnm_optim_destroy(m->opt);
    vnm_sparse_weight_free(m->sw);
    vnm_ctx_destroy(m->ctx);
}

/* One training step on batch k (inputs depend on k only; dropout draws from the context RNG). */
static float train_step(model *m, int k)
{
    vnm_ctx *ctx = m->ctx;
    float x[T * IN], y[T * C]; // [T, IN], [T, C]
    for (int i = 0; i < T * IN; i++) x[i] = (float)((i * 37 + k * 11) % 19) / 19.0f - 0.5f;
    for (int i = 0; i < T * C; i++) y[i] = (float)((i * 5 + k * 3) % 7) / 7.0f - 0.5f;
    vnm_ctx_set_training(ctx, true);
    vnm_tensor *xt = vnm_tensor_from(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, IN), x);
    vnm_tensor *yt = vnm_tensor_from(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, C), y);
    vnm_tensor *h = vnm_gelu(ctx, vnm_linear(ctx, xt, m->w0, m->b0)); // [T, H]
    h = vnm_dropout(ctx, h, 0.25f);
    vnm_tensor *s = vnm_sparse_linear(ctx, h, m->sw, m->sb); // [T, SO]
    vnm_tensor *loss = vnm_mse(ctx, vnm_linear(ctx, s, m->w2, m->b2), yt);
    if (!loss) fail_msg("forward: %s", vnm_ctx_error(ctx));
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    float l = vnm_item(ctx, loss);
    assert_int_equal(vnm_optim_step(m->opt), VNM_OK);
    vnm_optim_zero_grad(m->opt);
    vnm_ctx_reset_step(ctx);
    return l;
}

static void append(vnm_ctx *ctx, const vnm_tensor *t, unsigned char **buf, size_t *len)
{
    size_t n = (size_t)vnm_numel(t) * vnm_dtype_size(t->dtype);
    *buf = realloc(*buf, *len + n);
    assert_non_null(*buf);
    assert_int_equal(vnm_tensor_to_host(ctx, t, *buf + *len), VNM_OK);
    *len += n;
}

/* Every byte of the state: tensors, the four compressed arrays, optimiser states. */
static unsigned char *snapshot(const model *m, size_t *len)
{
    unsigned char *buf = NULL;
    *len = 0;
    for (int i = 0; i < m->st.n_tensors; i++) append(m->ctx, m->tensors[i].t, &buf, len);
    vnm_tensor *arrays[] = {m->sw->vals, m->sw->slots, m->sw->cols, m->sw->rows};
    for (int i = 0; i < 4; i++) append(m->ctx, arrays[i], &buf, len);
    for (int i = 0; i < vnm_optim_num_params(m->opt); i++)
        for (int k = 0; k < vnm_optim_state_count(m->opt); k++)
            append(m->ctx, vnm_optim_state(m->opt, i, k), &buf, len);
    return buf;
}

/* ---- fixtures ---- */

/* Model A (seed 1) trained 3 steps and saved at step 3; path receives the file. */
static void train_and_save(model *a, vnm_optim_kind kind, const char *dir, char *path)
{
    char err[ERR_LEN];
    model_init(a, 1, kind, "16:2:5");
    for (int k = 0; k < 3; k++) train_step(a, k);
    a->st.progress = (vnm_progress){3, 1, 2, 1};
    a->st.data_pos = (vnm_sampler_pos){1, 7};
    a->st.data_seed = 4242;
    if (vnm_state_save(dir, 2, &a->st, path, PATH_MAX, err, sizeof err) != VNM_OK)
        fail_msg("save: %s", err);
}

/* ---- tests ---- */

static void check_resume(const char *dir, vnm_optim_kind kind)
{
    char err[ERR_LEN], path[PATH_MAX];
    model a, b;
    train_and_save(&a, kind, dir, path);
    vnm_rng_state rng_a = vnm_ctx_rng_get(a.ctx);
    float loss_a[3], loss_b[3];
    for (int k = 0; k < 3; k++) loss_a[k] = train_step(&a, 3 + k);
    size_t len_a, len_b;
    unsigned char *snap_a = snapshot(&a, &len_a);

    model_init(&b, 2, kind, "16:2:5");
    size_t len_b0;
    unsigned char *snap_b0 = snapshot(&b, &len_b0);
    assert_int_equal(len_b0, len_a);
    assert_true(memcmp(snap_b0, snap_a, len_a) != 0); /* the fresh model really differs */
    free(snap_b0);
    char *recipe = NULL;
    if (vnm_state_load(dir, &b.st, &recipe, err, sizeof err) != VNM_OK) fail_msg("load: %s", err);
    assert_string_equal(recipe, RECIPE);
    free(recipe);
    assert_int_equal(b.st.progress.step, 3);
    assert_int_equal(b.st.progress.epoch, 1);
    assert_int_equal(b.st.progress.stage_index, 2);
    assert_int_equal(b.st.progress.stage_step, 1);
    assert_int_equal(b.st.data_pos.epoch, 1);
    assert_int_equal(b.st.data_pos.index, 7);
    assert_int_equal(b.st.data_seed, 4242);
    vnm_rng_state rng_b = vnm_ctx_rng_get(b.ctx);
    assert_int_equal(rng_b.seed, rng_a.seed);
    assert_int_equal(rng_b.offset, rng_a.offset);
    assert_int_equal(vnm_optim_steps(b.opt), 3);
    for (int i = 0; i < vnm_optim_num_params(b.opt); i++)
        assert_int_equal(vnm_optim_param_steps(b.opt, i), 3);

    for (int k = 0; k < 3; k++) loss_b[k] = train_step(&b, 3 + k);
    unsigned char *snap_b = snapshot(&b, &len_b);
    assert_int_equal(len_b, len_a);
    assert_memory_equal(loss_b, loss_a, sizeof loss_a);
    assert_memory_equal(snap_b, snap_a, len_a);
    free(snap_a);
    free(snap_b);
    model_free(&a);
    model_free(&b);
}

static void test_resume_adamw(void **state) { check_resume(*state, VNM_OPTIM_ADAMW); }

static void test_resume_sgd_momentum(void **state) { check_resume(*state, VNM_OPTIM_SGD); }

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void test_layout(void **state)
{
    char err[ERR_LEN], path[PATH_MAX];
    model a;
    train_and_save(&a, VNM_OPTIM_ADAMW, *state, path);
    const char *want[] = {
        "/data/epoch",          "/data/index",          "/data/seed",
        "/model/buf",           "/model/fc0.bias",      "/model/fc0.weight",
        "/model/head.bias",     "/model/head.weight",   "/model/sp.bias",
        "/optim/fc0.bias/m",    "/optim/fc0.bias/v",    "/optim/fc0.weight/m",
        "/optim/fc0.weight/v",  "/optim/head.bias/m",   "/optim/head.bias/v",
        "/optim/head.weight/m", "/optim/head.weight/v", "/optim/sp.bias/m",
        "/optim/sp.bias/v",     "/optim/sp.weight/m",   "/optim/sp.weight/v",
        "/rng/offset",          "/rng/seed",            "/sparse/sp.weight/cols",
        "/sparse/sp.weight/perm_in", "/sparse/sp.weight/perm_out", "/sparse/sp.weight/rows",
        "/sparse/sp.weight/slots",   "/sparse/sp.weight/vals",
    };
    int64_t n_want = (int64_t)(sizeof want / sizeof *want);
    vnm_ckpt_reader *r = vnm_ckpt_open(path, err, sizeof err);
    if (!r) fail_msg("open: %s", err);
    char **names;
    int64_t count;
    assert_int_equal(vnm_ckpt_list(r, "/", &names, &count, err, sizeof err), VNM_OK);
    qsort(names, (size_t)count, sizeof *names, cmp_str);
    assert_int_equal(count, n_want);
    for (int64_t i = 0; i < count; i++) assert_string_equal(names[i], want[i]);
    vnm_ckpt_free_names(names, count);

    /* dtypes and shapes: bf16 stays bf16; moments of a sparse weight have the compressed shape */
    vnm_ckpt_dtype dt;
    int nd;
    int64_t shape[VNM_CKPT_MAX_DIMS];
    assert_int_equal(vnm_ckpt_shape(r, "/model/buf", &dt, &nd, shape, err, sizeof err), VNM_OK);
    assert_int_equal(dt, VNM_CKPT_BF16);
    assert_int_equal(vnm_ckpt_shape(r, "/optim/sp.weight/m", &dt, &nd, shape, err, sizeof err),
                     VNM_OK);
    assert_int_equal(dt, VNM_CKPT_F32);
    assert_int_equal(nd, 3);
    assert_int_equal(shape[0], a.sw->O_pad);
    assert_int_equal(shape[1], a.sw->Gp);
    assert_int_equal(shape[2], 2);
    assert_int_equal(vnm_ckpt_shape(r, "/sparse/sp.weight/perm_out", &dt, &nd, shape, err,
                                    sizeof err),
                     VNM_OK);
    assert_int_equal(dt, VNM_CKPT_I32);
    assert_int_equal(shape[0], SO);

    char *s = NULL;
    int64_t v;
    double f;
    assert_int_equal(vnm_ckpt_get_str(r, "/sparse/sp.weight", "pattern", &s, err, sizeof err),
                     VNM_OK);
    assert_string_equal(s, "16:2:5");
    free(s);
    assert_int_equal(vnm_ckpt_get_str(r, "/sparse/sp.weight", "score", &s, err, sizeof err),
                     VNM_OK);
    assert_string_equal(s, "magnitude");
    free(s);
    assert_int_equal(vnm_ckpt_get_i64(r, "/sparse/sp.weight", "O", &v, err, sizeof err), VNM_OK);
    assert_int_equal(v, SO);
    assert_int_equal(vnm_ckpt_get_i64(r, "/sparse/sp.weight", "I", &v, err, sizeof err), VNM_OK);
    assert_int_equal(v, H);
    assert_int_equal(vnm_ckpt_get_i64(r, "/sparse/sp.weight", "permuted", &v, err, sizeof err),
                     VNM_OK);
    assert_int_equal(v, 1);
    assert_int_equal(vnm_ckpt_get_str(r, "/optim/fc0.weight", "optimizer", &s, err, sizeof err),
                     VNM_OK);
    assert_string_equal(s, "adamw");
    free(s);
    assert_int_equal(vnm_ckpt_get_i64(r, "/optim/sp.weight", "step", &v, err, sizeof err), VNM_OK);
    assert_int_equal(v, 3);
    assert_int_equal(vnm_ckpt_get_f64(r, "/optim/sp.weight", "beta2", &f, err, sizeof err),
                     VNM_OK);
    assert_true(f == 0.999);
    assert_int_equal(vnm_ckpt_get_i64(r, "/optim", "steps", &v, err, sizeof err), VNM_OK);
    assert_int_equal(v, 3);
    assert_int_equal(vnm_ckpt_get_f64(r, "/optim", "lr", &f, err, sizeof err), VNM_OK);
    assert_true(f == 0.05);
    int32_t perm_in[H];
    assert_int_equal(vnm_ckpt_read(r, "/sparse/sp.weight/perm_in", VNM_CKPT_I32, 1,
                                   VNM_SHAPE(H), perm_in, err, sizeof err),
                     VNM_OK);
    assert_memory_equal(perm_in, a.perm_in, sizeof perm_in);
    assert_int_equal(vnm_ckpt_step(r), 3);
    vnm_ckpt_close(r);
    model_free(&a);
}

/* Loads into b, expects failure naming `needle` and the file, and b unchanged. */
static void expect_load_error(model *b, const char *ckpt, const char *needle, const char *file)
{
    char err[ERR_LEN] = "";
    size_t len0, len1;
    unsigned char *before = snapshot(b, &len0);
    vnm_rng_state rng0 = vnm_ctx_rng_get(b->ctx);
    char *recipe = (char *)"untouched";
    assert_int_equal(vnm_state_load(ckpt, &b->st, &recipe, err, sizeof err), VNM_ERR_INPUT);
    assert_null(recipe);
    tu_assert_has(err, needle);
    if (file) tu_assert_has(err, file);
    unsigned char *after = snapshot(b, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    assert_int_equal(vnm_ctx_rng_get(b->ctx).offset, rng0.offset);
    free(before);
    free(after);
}

static void test_load_errors(void **state)
{
    const char *dir = *state;
    char path[PATH_MAX];
    model a, b;
    train_and_save(&a, VNM_OPTIM_ADAMW, dir, path);

    model_init(&b, 2, VNM_OPTIM_ADAMW, "16:2:5");
    /* wrong shape (the buffer: optimiser parameters are checked to be listed) */
    vnm_tensor *wrong = vnm_buffer_new(b.ctx, VNM_DTYPE_BF16, 1, VNM_SHAPE(NB + 1), "buf");
    b.tensors[5].t = wrong;
    expect_load_error(&b, dir, "/model/buf is bf16 [5], expected bf16 [6]", path);
    /* wrong dtype: a bf16 file entry into an f32 tensor */
    vnm_tensor *f32buf = vnm_buffer_new(b.ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(NB), "buf");
    b.tensors[5].t = f32buf;
    expect_load_error(&b, dir, "/model/buf is bf16 [5], expected f32 [5]", path);
    b.tensors[5].t = b.buf;
    /* missing from the file */
    vnm_tensor *extra = vnm_buffer_new(b.ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(2), "extra");
    b.tensors[6] = (vnm_state_tensor){"extra", extra};
    b.st.n_tensors = 7;
    expect_load_error(&b, dir, "missing dataset /model/extra", path);
    /* unexpected in the file */
    b.st.n_tensors = 5;
    expect_load_error(&b, dir, "unexpected dataset /model/buf", path);
    b.st.n_tensors = 6;
    /* an optimiser parameter the run does not describe cannot be saved */
    char err[ERR_LEN];
    b.st.n_tensors = 4;
    assert_int_equal(vnm_state_save(dir, 0, &b.st, NULL, 0, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "head.bias");
    b.st.n_tensors = 6;
    /* another optimiser kind: its states are not in the file */
    model c;
    model_init(&c, 3, VNM_OPTIM_SGD, "16:2:5");
    expect_load_error(&c, dir, "unexpected dataset /optim/fc0.bias/m", path);
    model_free(&c);
    /* a non-vnm file */
    char junk[PATH_MAX];
    snprintf(junk, sizeof junk, "%s/junk.h5", dir);
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    fputs("not an HDF5 file\n", f);
    fclose(f);
    expect_load_error(&b, junk, "junk.h5", NULL);
    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/nothing_here", dir);
    expect_load_error(&b, missing, "nothing_here", NULL);
    model_free(&b);

    /* a sparse weight with another pattern (same array shapes: Gp is 8 for M = 5 and 6) */
    model_init(&b, 2, VNM_OPTIM_ADAMW, "16:2:6");
    assert_int_equal(b.sw->Gp, a.sw->Gp);
    expect_load_error(&b, dir, "/sparse/sp.weight: pattern 16:2:5", path);
    model_free(&b);

    /* corrupted slots: an invalid code (s0 = s1 = 3) caught by vnm_sparse_validate */
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t ds = H5Dopen2(file, "/sparse/sp.weight/slots", H5P_DEFAULT);
    assert_true(ds >= 0);
    size_t n_slots = (size_t)(a.sw->O_pad * a.sw->Gp);
    uint8_t *slots = malloc(n_slots);
    assert_non_null(slots);
    assert_true(H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, slots) >= 0);
    slots[0] = 0xF;
    assert_true(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, slots) >= 0);
    free(slots);
    H5Dclose(ds);
    H5Fclose(file);
    model_init(&b, 2, VNM_OPTIM_ADAMW, "16:2:5");
    expect_load_error(&b, path, "/sparse/sp.weight: invalid", path);
    model_free(&b);
    model_free(&a);
}

/* Model-only load (no optimiser): /optim is skipped, the weights still arrive. */
static void test_load_without_optim(void **state)
{
    char err[ERR_LEN], path[PATH_MAX];
    model a, b;
    train_and_save(&a, VNM_OPTIM_ADAMW, *state, path);
    model_init(&b, 2, VNM_OPTIM_ADAMW, "16:2:5");
    b.st.optim = NULL;
    if (vnm_state_load(path, &b.st, NULL, err, sizeof err) != VNM_OK) fail_msg("load: %s", err);
    float *wa = tu_host(a.ctx, a.sw->vals), *wb = tu_host(b.ctx, b.sw->vals);
    assert_memory_equal(wa, wb, (size_t)vnm_numel(a.sw->vals) * sizeof(float));
    free(wa);
    free(wb);
    assert_int_equal(vnm_optim_steps(b.opt), 0);
    model_free(&a);
    model_free(&b);
}

static void test_inspect(void **state)
{
    char err[ERR_LEN], path[PATH_MAX];
    model a;
    train_and_save(&a, VNM_OPTIM_ADAMW, *state, path);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    vnm_status rc = vnm_inspect_print(*state, out, err, sizeof err);
    fclose(out);
    if (rc != VNM_OK) fail_msg("inspect: %s (output: %s)", err, text);
    char line[256];
    tu_assert_has(text, path);
    tu_assert_has(text, "version 1");
    tu_assert_has(text, "step 3, epoch 1, stage 2 (step 1 in stage)");
    snprintf(line, sizeof line, "vnm %s", VNM_VERSION);
    tu_assert_has(text, line);
    /* dense: fc0 (H·IN + H), sp.bias, head (C·SO + C), buf */
    snprintf(line, sizeof line, "dense: 6 tensors, %d parameters",
             H * IN + H + SO + C * SO + C + NB);
    tu_assert_has(text, line);
    snprintf(line, sizeof line, "%dx%d  kept %.4f (%lld)  permuted", SO, H,
             (double)a.kept / (SO * H), (long long)a.kept);
    tu_assert_has(text, line);
    tu_assert_has(text, "sp.weight");
    tu_assert_has(text, "16:2:5");
    tu_assert_has(text, "optimizer: adamw, step 3, lr 0.05");
    tu_assert_has(text, "data: epoch 1, index 7, seed 4242");
    tu_assert_has(text, "  name: state-test");
    free(text);

    /* bad input: the command exits 2 */
    char bad[PATH_MAX];
    snprintf(bad, sizeof bad, "%s/missing.h5", (const char *)*state);
    out = open_memstream(&text, &len);
    assert_int_equal(vnm_inspect_print(bad, out, err, sizeof err), VNM_ERR_INPUT);
    fclose(out);
    free(text);
    tu_assert_has(err, "missing.h5");
    char *argv[] = {bad};
    assert_int_equal(vnm_cmd_inspect(1, argv), 2);
    assert_int_equal(vnm_cmd_inspect(0, argv), 2);
    model_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resume_adamw, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_resume_sgd_momentum, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_layout, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_load_errors, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_load_without_optim, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_inspect, tu_setup_tmpdir, tu_teardown_tmpdir),
    };
    return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
