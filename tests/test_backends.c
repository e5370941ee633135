/* tests/test_backends.c — every op on every backend present: each case builds the same op from the
 * same inputs on the CPU and on the CUDA backend, runs forward and backward with the same seed
 * gradient and compares the outputs and every input gradient; the CUDA result then passes the
 * finite-difference check as well (f32 cases; the bf16/f16 products of mixed precision compare
 * backends only). Kernels reached outside the tape (random fills, dtype conversion, the optimiser
 * updates, sum of squares) are compared directly, bit for bit where the CPU kernel is exact by
 * construction. Without a device every case is skipped with the reason. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { MAX_IN = 4 };

typedef struct {
    int ndim;
    int64_t shape[VNM_MAX_DIMS];
    float lo, hi;
} bk_input;

typedef struct {
    const char *name;
    tu_fn f;
    int n_in;
    bk_input in[MAX_IN];
    double atol, rtol; /* output and gradient agreement */
    bool training;     /* dropout and drop-path active */
    vnm_dtype matmul;  /* f32 (0), or bf16/f16 products (mixed precision) */
} bk_case;

/* ---- contexts ---- */

static vnm_ctx *cpu_ctx(void)
{
    vnm_ctx_config cfg = {VNM_DEVICE_CPU, 1234, 0};
    vnm_ctx *ctx = vnm_ctx_create(&cfg);
    assert_non_null(ctx);
    return ctx;
}

/* Host values in [lo, hi) from Philox (seed, stream): the same on every backend. */
static float *host_uniform(int64_t n, float lo, float hi, uint64_t stream)
{
    float *h = malloc((size_t)n * sizeof *h + 1);
    assert_non_null(h);
    for (int64_t i = 0; i < n; i += 4) {
        uint32_t r[4];
        vnm_philox4x32(0x5eed, (uint64_t)i / 4, stream, r);
        for (int j = 0; j < 4 && i + j < n; j++) h[i + j] = lo + (hi - lo) * vnm_philox_uniform(r[j]);
    }
    return h;
}

static int64_t shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

static vnm_tensor *upload_param(vnm_ctx *ctx, const bk_input *in, uint64_t stream)
{
    vnm_tensor *t = vnm_param_new(ctx, VNM_DTYPE_F32, in->ndim, in->shape, "input");
    assert_non_null(t);
    float *h = host_uniform(shape_numel(in->ndim, in->shape), in->lo, in->hi, stream);
    assert_int_equal(vnm_tensor_from_host(ctx, t, h), VNM_OK);
    free(h);
    return t;
}

/* ---- one case on one backend ---- */

typedef struct {
    int64_t n_out;
    float *out;
    float *grad[MAX_IN];
} bk_result;

static bk_result run_case(vnm_ctx *ctx, const bk_case *c, vnm_tensor **in)
{
    for (int k = 0; k < c->n_in; k++) in[k] = upload_param(ctx, &c->in[k], (uint64_t)k + 1);
    vnm_ctx_set_training(ctx, c->training);
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, c->matmul), VNM_OK);
    vnm_ctx_rng_set(ctx, (vnm_rng_state){77, 5});
    vnm_tensor *out = c->f(ctx, in, NULL);
    if (!out) fail_msg("%s on %s: forward failed: %s", c->name, vnm_ctx_device(ctx) ? "cuda" : "cpu",
                       vnm_ctx_error(ctx));
    bk_result r = {vnm_numel(out), tu_host(ctx, out), {0}};
    float *proj = host_uniform(r.n_out, -1, 1, 99);
    vnm_tensor *seed = vnm_tensor_from(ctx, VNM_DTYPE_F32, out->ndim, out->shape, proj);
    free(proj);
    if (vnm_backward_seed(ctx, out, seed) != VNM_OK)
        fail_msg("%s: backward failed: %s", c->name, vnm_ctx_error(ctx));
    for (int k = 0; k < c->n_in; k++) r.grad[k] = tu_host(ctx, in[k]->grad);
    return r;
}

static void assert_agree(const char *what, const float *cpu, const float *cuda, int64_t n,
                         double atol, double rtol)
{
    double *want = malloc((size_t)n * sizeof *want + 1);
    for (int64_t i = 0; i < n; i++) want[i] = cpu[i];
    tu_assert_close(cuda, want, n, atol, rtol, what);
    free(want);
}

static void test_case(void **state)
{
    const bk_case *c = *state;
    vnm_ctx *gpu = tu_cuda_ctx_or_skip();
    vnm_ctx *cpu = cpu_ctx();
    vnm_tensor *in_cpu[MAX_IN], *in_gpu[MAX_IN];
    bk_result a = run_case(cpu, c, in_cpu), b = run_case(gpu, c, in_gpu);
    assert_int_equal(a.n_out, b.n_out);
    double atol = c->atol > 0 ? c->atol : 1e-5, rtol = c->rtol > 0 ? c->rtol : 1e-4;
    char what[128];
    snprintf(what, sizeof what, "%s: output cuda vs cpu", c->name);
    assert_agree(what, a.out, b.out, a.n_out, atol, rtol);
    for (int k = 0; k < c->n_in; k++) {
        snprintf(what, sizeof what, "%s: gradient of input %d cuda vs cpu", c->name, k);
        assert_agree(what, a.grad[k], b.grad[k], vnm_numel(in_cpu[k]), atol, rtol);
        free(a.grad[k]);
        free(b.grad[k]);
    }
    free(a.out);
    free(b.out);
    /* rounded operands defeat finite differences; test_mixed_precision checks those products */
    if (c->matmul == VNM_DTYPE_F32) tu_gradcheck(gpu, c->f, c->n_in, in_gpu, NULL);
    vnm_ctx_destroy(cpu);
    vnm_ctx_destroy(gpu);
}

/* ---- the op builders ---- */

static vnm_tensor *f_linear(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_linear(ctx, in[0], in[1], in[2]);
}

static vnm_tensor *f_linear_nobias(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_linear(ctx, in[0], in[1], NULL);
}

/* x and b as views starting 4 bytes past an alignment boundary (rows of 37 floats; the bias from
 * its second element): the fused cuBLASLt product must pick an algorithm that copes */
static vnm_tensor *f_linear_unaligned(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_linear(ctx, vnm_slice(ctx, in[0], 0, 1, in[0]->shape[0]), in[1],
                      vnm_slice(ctx, in[2], 0, 1, in[2]->shape[0]));
}

static vnm_tensor *f_matmul(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_matmul(ctx, in[0], in[1]);
}

/* a fixed u8 mask (every third element zeroed) on a [5, 33] input */
static vnm_tensor *f_mask(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    uint8_t m[5 * 33];
    for (int i = 0; i < 5 * 33; i++) m[i] = (uint8_t)(i % 3 != 0);
    return vnm_mask(ctx, in[0], vnm_tensor_from(ctx, VNM_DTYPE_U8, 2, VNM_SHAPE(5, 33), m));
}

/* 60 values into a [9, 11] matrix at distinct positions, every fourth value dropped (-1), every
 * tenth pointing past the end (skipped) */
static vnm_tensor *f_scatter(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    int32_t idx[60];
    for (int k = 0; k < 60; k++)
        idx[k] = k % 4 == 3 ? -1 : k % 10 == 5 ? 99 + k : (int32_t)((k * 37) % 99);
    vnm_tensor *index = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(6, 10), idx);
    return vnm_scatter(ctx, in[0], index, 2, VNM_SHAPE(9, 11));
}

static vnm_tensor *f_add(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_add(ctx, in[0], in[1]);
}

static vnm_tensor *f_sub(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_sub(ctx, in[0], in[1]);
}

static vnm_tensor *f_mul(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_mul(ctx, in[0], in[1]);
}

static vnm_tensor *f_div(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_div(ctx, in[0], in[1]);
}

static vnm_tensor *f_scale(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_scale(ctx, in[0], -1.75f);
}

/* permute, transpose, slice, concat, split and reshape chained, then made contiguous */
static vnm_tensor *f_shapes(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    vnm_tensor *p = vnm_permute(ctx, in[0], (const int[]){2, 0, 1}); /* [4,2,3] → [3,4,2] */
    vnm_tensor *t = vnm_transpose(ctx, p, 0, 2);                      /* [2,4,3] */
    vnm_tensor *parts[2];                                             /* [2,1,3], [2,3,3] */
    if (vnm_split(ctx, t, 1, 2, VNM_SHAPE(1, 3), parts) != VNM_OK) return NULL;
    vnm_tensor *s = vnm_slice(ctx, parts[1], 1, 1, 3);                /* [2,2,3] */
    vnm_tensor *cat = vnm_concat(ctx, 2, (vnm_tensor *[]){parts[0], vnm_contiguous(ctx, s)}, 1);
    return vnm_reshape(ctx, vnm_contiguous(ctx, cat), 2, VNM_SHAPE(-1, 2));
}

static vnm_tensor *f_sum_mean(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    vnm_tensor *s = vnm_sum(ctx, in[0], 1, false);      /* [3, 5] */
    vnm_tensor *m = vnm_mean(ctx, in[0], -1, true);     /* [3, 4, 1] */
    vnm_tensor *all = vnm_sum(ctx, in[0], VNM_ALL_DIMS, false);
    vnm_tensor *sm = vnm_mean(ctx, s, 0, true);         /* [1, 5] */
    vnm_tensor *r = vnm_add(ctx, vnm_reshape(ctx, m, 2, VNM_SHAPE(3, 4)), all);
    return vnm_concat(ctx, 2, (vnm_tensor *[]){vnm_reshape(ctx, r, 1, VNM_SHAPE(-1)),
                                                vnm_reshape(ctx, sm, 1, VNM_SHAPE(-1))}, 0);
}

static vnm_tensor *f_gelu(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_gelu(ctx, in[0]);
}

static vnm_tensor *f_gelu_tanh(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_gelu_tanh(ctx, in[0]);
}

static vnm_tensor *f_silu(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_silu(ctx, in[0]);
}

static vnm_tensor *f_swiglu(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_swiglu(ctx, in[0], in[1]);
}

static vnm_tensor *f_layernorm(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_layernorm(ctx, in[0], in[1], in[2], 1e-6f);
}

static vnm_tensor *f_layernorm_plain(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_layernorm(ctx, in[0], NULL, NULL, 1e-5f);
}

static vnm_tensor *f_rmsnorm(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_rmsnorm(ctx, in[0], in[1], 1e-6f);
}

static vnm_tensor *f_softmax(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_softmax(ctx, in[0]);
}

static vnm_tensor *f_log_softmax(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_log_softmax(ctx, in[0]);
}

static vnm_tensor *f_attention(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_attention(ctx, in[0], in[1], in[2], false, 0.0f);
}

static vnm_tensor *f_attention_causal(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_attention(ctx, in[0], in[1], in[2], true, 0.3f);
}

static vnm_tensor *f_embedding(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    static const int32_t ids32[] = {3, 0, 3, 6, 1, 3, 5, 0};
    static const int64_t ids64[] = {6, 6, 2, 4};
    vnm_tensor *a = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(2, 4), ids32);
    vnm_tensor *b = vnm_tensor_from(ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(4), ids64);
    vnm_tensor *ea = vnm_reshape(ctx, vnm_embedding(ctx, a, in[0]), 2, VNM_SHAPE(8, -1));
    return vnm_concat(ctx, 2, (vnm_tensor *[]){ea, vnm_embedding(ctx, b, in[0])}, 0);
}

static vnm_tensor *f_rope(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_rope(ctx, in[0], 3, 10000.0f);
}

static vnm_tensor *f_dropout(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_drop_path(ctx, vnm_dropout(ctx, in[0], 0.3f), 0.4f);
}

static vnm_tensor *f_cross_entropy(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    static const int64_t labels[] = {2, -100, 0, 6, 6, 1};
    vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(6), labels);
    static const int32_t labels32[] = {1, 5, 0, 6, 2, 3};
    vnm_tensor *y32 = vnm_tensor_from(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(6), labels32);
    vnm_tensor *a = vnm_cross_entropy(ctx, in[0], y, -100, 0.1f);
    vnm_tensor *b = vnm_cross_entropy(ctx, in[0], y32, -100, 0.0f);
    /* soft targets are constants (no gradient flows to them): a softmax of fixed values */
    float t[42];
    for (int i = 0; i < 42; i++) t[i] = (float)sin(0.3 * i);
    bool prev = vnm_ctx_set_grad_enabled(ctx, false);
    vnm_tensor *targets = vnm_softmax(ctx, vnm_tensor_from(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(6, 7), t));
    vnm_ctx_set_grad_enabled(ctx, prev);
    vnm_tensor *c = vnm_cross_entropy_soft(ctx, in[0], targets);
    vnm_tensor *d = vnm_mse(ctx, in[0], in[1]);
    return vnm_concat(ctx, 4, (vnm_tensor *[]){a, b, c, d}, 0);
}

#define IN(lo_, hi_, nd, ...) {nd, {__VA_ARGS__}, lo_, hi_}
#define CASE(name_, f_, n_, ...) {.name = name_, .f = f_, .n_in = n_, .in = {__VA_ARGS__}}

/* attention on a packed [B, T, 3·4·D] projection: the first 3 queries, or all of them causally */
static vnm_tensor *f_attention_qkv_prefix(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_attention_qkv(ctx, in[0], 4, 3, false, 0.0f);
}

static vnm_tensor *f_attention_qkv_causal(vnm_ctx *ctx, vnm_tensor **in, void *u)
{
    (void)u;
    return vnm_attention_qkv(ctx, in[0], 2, 0, true, 0.0f);
}

/* Half-precision attention (the fused entries: cuDNN against the CPU's reference): both round
 * the output and gradients to the half dtype, and cuDNN also rounds the probabilities before
 * the products with V and dO, so they agree to a few half-precision steps. */
#define HALF_ATTENTION(name_, f_, dt_, n_, ...)                                                   \
    {.name = name_, .f = f_, .n_in = n_, .matmul = dt_, .atol = 3e-2, .rtol = 3e-2,              \
     .in = {__VA_ARGS__}}

static const bk_case cases[] = {
    CASE("linear", f_linear, 3, IN(-1, 1, 3, 3, 5, 37), IN(-1, 1, 2, 19, 37), IN(-1, 1, 1, 19)),
    CASE("linear_nobias", f_linear_nobias, 2, IN(-1, 1, 2, 65, 70), IN(-1, 1, 2, 33, 70)),
    CASE("linear_unaligned", f_linear_unaligned, 3, IN(-1, 1, 2, 9, 37), IN(-1, 1, 2, 19, 37),
         IN(-1, 1, 1, 20)),
    CASE("matmul_batched", f_matmul, 2, IN(-1, 1, 4, 2, 3, 4, 5), IN(-1, 1, 4, 2, 3, 5, 6)),
    CASE("matmul_shared", f_matmul, 2, IN(-1, 1, 3, 2, 7, 9), IN(-1, 1, 2, 9, 4)),
    {.name = "linear_bf16", .f = f_linear, .n_in = 3, .matmul = VNM_DTYPE_BF16,
     .in = {IN(-1, 1, 3, 3, 5, 37), IN(-1, 1, 2, 19, 37), IN(-1, 1, 1, 19)}},
    {.name = "linear_f16", .f = f_linear_nobias, .n_in = 2, .matmul = VNM_DTYPE_F16,
     .in = {IN(-1, 1, 2, 65, 70), IN(-1, 1, 2, 33, 70)}},
    {.name = "matmul_bf16_batched", .f = f_matmul, .n_in = 2, .matmul = VNM_DTYPE_BF16,
     .in = {IN(-1, 1, 4, 2, 3, 4, 5), IN(-1, 1, 4, 2, 3, 5, 6)}},
    {.name = "matmul_f16_shared", .f = f_matmul, .n_in = 2, .matmul = VNM_DTYPE_F16,
     .in = {IN(-1, 1, 3, 2, 7, 9), IN(-1, 1, 2, 9, 4)}},
    CASE("add_broadcast", f_add, 2, IN(-2, 2, 3, 2, 3, 4), IN(-2, 2, 2, 3, 1)),
    CASE("sub_broadcast", f_sub, 2, IN(-2, 2, 2, 1, 5), IN(-2, 2, 3, 2, 3, 1)),
    CASE("mul_broadcast", f_mul, 2, IN(-2, 2, 3, 4, 1, 6), IN(-2, 2, 2, 5, 6)),
    CASE("div_broadcast", f_div, 2, IN(-2, 2, 2, 3, 8), IN(0.5, 2, 1, 8)),
    CASE("scale", f_scale, 1, IN(-3, 3, 2, 300, 301)),
    CASE("mask", f_mask, 1, IN(-3, 3, 2, 5, 33)),
    CASE("scatter", f_scatter, 1, IN(-3, 3, 2, 6, 10)),
    CASE("shape_views", f_shapes, 1, IN(-1, 1, 3, 4, 2, 3)),
    CASE("sum_mean", f_sum_mean, 1, IN(-1, 1, 3, 3, 4, 5)),
    CASE("gelu", f_gelu, 1, IN(-5, 5, 2, 170, 123)),
    CASE("gelu_tanh", f_gelu_tanh, 1, IN(-5, 5, 2, 17, 13)),
    CASE("silu", f_silu, 1, IN(-8, 8, 3, 3, 50, 41)),
    CASE("swiglu", f_swiglu, 2, IN(-4, 4, 2, 9, 33), IN(-2, 2, 2, 9, 33)),
    CASE("layernorm", f_layernorm, 3, IN(-2, 3, 3, 2, 5, 384), IN(0.5, 1.5, 1, 384), IN(-1, 1, 1, 384)),
    CASE("layernorm_plain", f_layernorm_plain, 1, IN(-2, 2, 2, 7, 33)),
    CASE("rmsnorm", f_rmsnorm, 2, IN(-2, 2, 2, 6, 257), IN(0.5, 1.5, 1, 257)),
    CASE("softmax", f_softmax, 1, IN(-6, 6, 3, 2, 5, 300)),
    CASE("log_softmax", f_log_softmax, 1, IN(-2, 2, 2, 7, 1000)),
    CASE("attention", f_attention, 3,
     IN(-1, 1, 4, 2, 3, 6, 16), IN(-1, 1, 4, 2, 3, 9, 16), IN(-1, 1, 4, 2, 3, 9, 16)),
    CASE("attention_gqa_causal", f_attention_causal, 3,
     IN(-1, 1, 4, 1, 4, 5, 8), IN(-1, 1, 4, 1, 2, 7, 8), IN(-1, 1, 4, 1, 2, 7, 8)),
    CASE("attention_long", f_attention, 3,
     IN(-1, 1, 4, 1, 2, 65, 64), IN(-1, 1, 4, 1, 2, 197, 64), IN(-1, 1, 4, 1, 2, 197, 64)),
    HALF_ATTENTION("attention_bf16", f_attention, VNM_DTYPE_BF16, 3,
                   IN(-1, 1, 4, 2, 4, 64, 64), IN(-1, 1, 4, 2, 4, 96, 64),
                   IN(-1, 1, 4, 2, 4, 96, 64)),
    HALF_ATTENTION("attention_bf16_gqa_causal", f_attention_causal, VNM_DTYPE_BF16, 3,
                   IN(-1, 1, 4, 1, 4, 64, 64), IN(-1, 1, 4, 1, 2, 64, 64),
                   IN(-1, 1, 4, 1, 2, 64, 64)),
    HALF_ATTENTION("attention_qkv_f16_prefix", f_attention_qkv_prefix, VNM_DTYPE_F16, 1,
                   IN(-1, 1, 3, 2, 50, 3 * 4 * 32)),
    HALF_ATTENTION("attention_qkv_bf16_causal", f_attention_qkv_causal, VNM_DTYPE_BF16, 1,
                   IN(-1, 1, 3, 1, 128, 3 * 2 * 64)),
    CASE("embedding", f_embedding, 1, IN(-1, 1, 2, 7, 10)),
    CASE("rope", f_rope, 1, IN(-1, 1, 4, 2, 3, 5, 16)),
    {.name = "dropout_drop_path", .f = f_dropout, .n_in = 1, .in = {IN(-1, 1, 3, 8, 9, 10)},
     .training = true},
    CASE("cross_entropy_mse", f_cross_entropy, 2, IN(-2, 2, 2, 6, 7), IN(-1, 1, 2, 6, 7)),
};

/* ---- kernels outside the tape ---- */

static void test_random_fills(void **state)
{
    (void)state;
    vnm_ctx *gpu = tu_cuda_ctx_or_skip(), *cpu = cpu_ctx();
    const int64_t n = 100003; /* not a multiple of 4 */
    vnm_tensor *u[2], *g[2];
    vnm_ctx *ctxs[2] = {cpu, gpu};
    for (int i = 0; i < 2; i++) {
        vnm_ctx_rng_set(ctxs[i], (vnm_rng_state){42, 1000});
        u[i] = vnm_tensor_new(ctxs[i], VNM_DTYPE_F32, 1, VNM_SHAPE(n));
        g[i] = vnm_tensor_new(ctxs[i], VNM_DTYPE_F32, 1, VNM_SHAPE(n));
        assert_int_equal(vnm_rng_uniform(ctxs[i], u[i], -2, 3), VNM_OK);
        assert_int_equal(vnm_rng_normal(ctxs[i], g[i], 0.5f, 2.0f), VNM_OK);
    }
    float *ua = tu_host(cpu, u[0]), *ub = tu_host(gpu, u[1]);
    assert_memory_equal(ua, ub, (size_t)n * sizeof *ua); /* bit-identical by construction */
    float *ga = tu_host(cpu, g[0]), *gb = tu_host(gpu, g[1]);
    assert_agree("rng_normal cuda vs cpu", ga, gb, n, 1e-6, 1e-6);
    free(ua), free(ub), free(ga), free(gb);
    vnm_ctx_destroy(cpu);
    vnm_ctx_destroy(gpu);
}

static void test_dtype_conversion(void **state)
{
    (void)state;
    vnm_ctx *gpu = tu_cuda_ctx_or_skip(), *cpu = cpu_ctx();
    enum { N = 4099 };
    float *h = host_uniform(N, -70000, 70000, 3);
    h[0] = NAN, h[1] = INFINITY, h[2] = -0.0f, h[3] = 1e-40f, h[4] = 65520.0f, h[5] = 3e-8f;
    const vnm_dtype dts[2] = {VNM_DTYPE_BF16, VNM_DTYPE_F16};
    for (int d = 0; d < 2; d++) {
        uint16_t half[2][N];
        float back[2][N];
        vnm_ctx *ctxs[2] = {cpu, gpu};
        for (int i = 0; i < 2; i++) {
            vnm_tensor *x = vnm_tensor_from(ctxs[i], VNM_DTYPE_F32, 1, VNM_SHAPE(N), h);
            vnm_tensor *y = vnm_to_dtype(ctxs[i], x, dts[d]);
            assert_non_null(y);
            assert_int_equal(vnm_tensor_to_host(ctxs[i], y, half[i]), VNM_OK);
            vnm_tensor *z = vnm_to_dtype(ctxs[i], y, VNM_DTYPE_F32);
            assert_int_equal(vnm_tensor_to_host(ctxs[i], z, back[i]), VNM_OK);
        }
        assert_memory_equal(half[0], half[1], sizeof half[0]);
        assert_memory_equal(back[0], back[1], sizeof back[0]);
    }
    free(h);
    vnm_ctx_destroy(cpu);
    vnm_ctx_destroy(gpu);
}

/* Three SGD (Nesterov) and three AdamW steps on the same parameters and gradients: the updates are
 * elementwise f32 formulas written operation by operation, so both backends agree bit for bit. */
static void test_optimiser_updates(void **state)
{
    (void)state;
    vnm_ctx *gpu = tu_cuda_ctx_or_skip(), *cpu = cpu_ctx();
    const int64_t n = 70001;
    vnm_ctx *ctxs[2] = {cpu, gpu};
    float *res[2][3];
    double ss[2];
    for (int i = 0; i < 2; i++) {
        vnm_ctx *ctx = ctxs[i];
        bk_input in = IN(-1, 1, 1, n);
        vnm_tensor *p = upload_param(ctx, &in, 1), *q = upload_param(ctx, &in, 2);
        vnm_tensor *buf = vnm_buffer_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(n), "buf");
        vnm_tensor *m = vnm_buffer_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(n), "m");
        vnm_tensor *v = vnm_buffer_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(n), "v");
        vnm_tensor *gp = vnm_grad_buffer(ctx, p), *gq = vnm_grad_buffer(ctx, q);
        for (int step = 1; step <= 3; step++) {
            float *g = host_uniform(n, -0.1f, 0.1f, 10 + (uint64_t)step);
            assert_int_equal(vnm_tensor_from_host(ctx, gp, g), VNM_OK);
            assert_int_equal(vnm_tensor_from_host(ctx, gq, g), VNM_OK);
            free(g);
            assert_int_equal(vnm_sgd_update(ctx, p, buf, 0.1, 0.9, 0.0, 1e-4, true, step == 1),
                             VNM_OK);
            assert_int_equal(vnm_adamw_update(ctx, q, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.05, step),
                             VNM_OK);
        }
        ss[i] = vnm_sum_squares(ctx, gq);
        res[i][0] = tu_host(ctx, p);
        res[i][1] = tu_host(ctx, q);
        res[i][2] = tu_host(ctx, v);
    }
    for (int k = 0; k < 3; k++) {
        assert_memory_equal(res[0][k], res[1][k], (size_t)n * sizeof(float));
        free(res[0][k]);
        free(res[1][k]);
    }
    assert_true(fabs(ss[0] - ss[1]) <= 1e-12 * ss[0]);
    vnm_ctx_destroy(cpu);
    vnm_ctx_destroy(gpu);
}

int main(void)
{
    enum { N_CASES = sizeof cases / sizeof cases[0] };
    struct CMUnitTest tests[N_CASES + 3];
    for (int i = 0; i < N_CASES; i++)
        tests[i] = (struct CMUnitTest){cases[i].name, test_case, NULL, NULL, (void *)&cases[i]};
    tests[N_CASES] = (struct CMUnitTest)cmocka_unit_test(test_random_fills);
    tests[N_CASES + 1] = (struct CMUnitTest)cmocka_unit_test(test_dtype_conversion);
    tests[N_CASES + 2] = (struct CMUnitTest)cmocka_unit_test(test_optimiser_updates);
    return _cmocka_run_group_tests("backends", tests, N_CASES + 3, NULL, NULL);
}
