/* tests/test_attention.c — scaled dot-product attention: forward against a naive double reference
 * (non-causal, causal with T == S and T < S, grouped and multi-query KV heads, explicit scale,
 * transposed-view inputs), finite-difference gradients of q, k and v, and argument errors; the
 * CPU's two ways of doing a head (AVX2 small-head loops, OpenBLAS) and its strided entries
 * (overwriting or adding gradients); attention on a packed qkv projection against the same
 * computation through the generic ops, with all or only the first queries. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/backend.h"
#include "autograd/cpu/simd.h"
#include "test_util.h"

typedef struct {
    int64_t B, Hq, Hkv, T, S, D;
    bool causal;
    float scale; /* <= 0: 1/sqrt(D) */
} attn_case;

/* o[B, Hq, T, D] from q[B, Hq, T, D], k/v[B, Hkv, S, D]: masked scores are -inf before a softmax
 * in double; query head h reads KV head h·Hkv/Hq. */
static void ref_attention(const float *q, const float *k, const float *v, double *o,
                          const attn_case *c)
{
    double scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)c->D);
    double *w = malloc((size_t)c->S * sizeof *w);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->Hq; h++) {
            int64_t kvh = h * c->Hkv / c->Hq;
            const float *qh = q + (b * c->Hq + h) * c->T * c->D;
            const float *kh = k + (b * c->Hkv + kvh) * c->S * c->D;
            const float *vh = v + (b * c->Hkv + kvh) * c->S * c->D;
            for (int64_t t = 0; t < c->T; t++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t s = 0; s < c->S; s++) {
                    double dot = 0;
                    for (int64_t d = 0; d < c->D; d++)
                        dot += (double)qh[t * c->D + d] * kh[s * c->D + d];
                    bool masked = c->causal && s - (c->S - c->T) > t;
                    w[s] = masked ? -INFINITY : dot * scale;
                    mx = fmax(mx, w[s]);
                }
                for (int64_t s = 0; s < c->S; s++) sum += w[s] = exp(w[s] - mx);
                double *oh = o + ((b * c->Hq + h) * c->T + t) * c->D;
                for (int64_t d = 0; d < c->D; d++) {
                    oh[d] = 0;
                    for (int64_t s = 0; s < c->S; s++) oh[d] += w[s] / sum * vh[s * c->D + d];
                }
            }
        }
    free(w);
}

/* Runs the op on q, k, v (any layout) and compares with the reference on their host copies. */
static void check_against_ref(vnm_ctx *ctx, vnm_tensor *q, vnm_tensor *k, vnm_tensor *v,
                              const attn_case *c)
{
    vnm_tensor *o = vnm_attention(ctx, q, k, v, c->causal, c->scale);
    assert_non_null(o);
    assert_int_equal(o->ndim, 4);
    int64_t want_shape[4] = {c->B, c->Hq, c->T, c->D};
    for (int i = 0; i < 4; i++) assert_int_equal(o->shape[i], want_shape[i]);
    int64_t n = vnm_numel(o);
    float *hq = tu_host(ctx, q), *hk = tu_host(ctx, k), *hv = tu_host(ctx, v);
    float *ho = tu_host(ctx, o);
    double *ref = malloc((size_t)n * sizeof *ref);
    ref_attention(hq, hk, hv, ref, c);
    tu_assert_close(ho, ref, n, 1e-5, 1e-5, "attention forward");
    free(hq);
    free(hk);
    free(hv);
    free(ho);
    free(ref);
}

/* Values in [-2, 2] make the scores spread enough that the softmax is far from uniform. */
static void check_forward(vnm_ctx *ctx, attn_case c)
{
    vnm_tensor *q = tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hq, c.T, c.D), -2, 2);
    vnm_tensor *k = tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -2, 2);
    vnm_tensor *v = tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -2, 2);
    check_against_ref(ctx, q, k, v, &c);
}

static void test_attention_forward_noncausal(void **state)
{
    check_forward(*state, (attn_case){2, 3, 3, 5, 7, 4, false, 0});
}

static void test_attention_forward_causal_square(void **state)
{
    check_forward(*state, (attn_case){1, 2, 2, 6, 6, 5, true, 0});
}

/* Three queries continuing a 4-key prefix: query t sees keys 0 .. t + 4. */
static void test_attention_forward_causal_fewer_queries(void **state)
{
    check_forward(*state, (attn_case){2, 2, 2, 3, 7, 4, true, 0});
    check_forward(*state, (attn_case){1, 2, 2, 1, 5, 3, true, 0}); /* one decoding step */
}

/* Large enough for the kernel's parallel path over heads. */
static void test_attention_forward_gqa(void **state)
{
    check_forward(*state, (attn_case){2, 4, 2, 64, 64, 32, true, 0});
    check_forward(*state, (attn_case){1, 6, 2, 3, 5, 4, false, 0});
}

static void test_attention_forward_mqa(void **state)
{
    check_forward(*state, (attn_case){2, 3, 1, 4, 9, 6, false, 0});
}

static void test_attention_forward_custom_scale(void **state)
{
    check_forward(*state, (attn_case){1, 2, 2, 5, 5, 4, true, 0.9f});
}

/* q, k, v come as [B, T, H, D] and are transposed to [B, H, T, D] views, as a model does after
 * the q/k/v projections. */
static void test_attention_forward_transposed_views(void **state)
{
    vnm_ctx *ctx = *state;
    attn_case c = {2, 4, 2, 5, 5, 3, true, 0};
    vnm_tensor *q = tu_param(ctx, 4, VNM_SHAPE(c.B, c.T, c.Hq, c.D), -2, 2);
    vnm_tensor *k = tu_param(ctx, 4, VNM_SHAPE(c.B, c.S, c.Hkv, c.D), -2, 2);
    vnm_tensor *v = tu_param(ctx, 4, VNM_SHAPE(c.B, c.S, c.Hkv, c.D), -2, 2);
    vnm_tensor *qt = vnm_transpose(ctx, q, 1, 2), *kt = vnm_transpose(ctx, k, 1, 2);
    vnm_tensor *vt = vnm_transpose(ctx, v, 1, 2);
    assert_false(vnm_is_contiguous(qt));
    check_against_ref(ctx, qt, kt, vt, &c);
}

static vnm_tensor *f_attention(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    const attn_case *c = user;
    return vnm_attention(ctx, in[0], in[1], in[2], c->causal, c->scale);
}

/* Big enough (B·Hq·T·S·D > the kernel's threshold) that the backward splits KV groups over
 * threads; each KV head sums the gradients of two query heads. */
static void test_attention_gradcheck_causal_gqa(void **state)
{
    vnm_ctx *ctx = *state;
    attn_case c = {2, 4, 2, 16, 20, 8, true, 0};
    vnm_tensor *in[3] = {tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hq, c.T, c.D), -1, 1),
                         tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -1, 1),
                         tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -1, 1)};
    tu_gradcheck(ctx, f_attention, 3, in, &c);
}

static void test_attention_gradcheck_noncausal(void **state)
{
    vnm_ctx *ctx = *state;
    attn_case c = {1, 2, 2, 3, 5, 3, false, 0.7f};
    vnm_tensor *in[3] = {tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hq, c.T, c.D), -1, 1),
                         tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -1, 1),
                         tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -1, 1)};
    tu_gradcheck(ctx, f_attention, 3, in, &c);
}

/* Only k and v need gradients (a frozen query path): the kernel gets dq = NULL. */
static void test_attention_gradcheck_kv_only_mqa(void **state)
{
    vnm_ctx *ctx = *state;
    attn_case c = {1, 3, 1, 4, 4, 2, true, 0};
    vnm_tensor *q = vnm_buffer_new(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(c.B, c.Hq, c.T, c.D), "q");
    assert_int_equal(vnm_rng_uniform(ctx, q, -1, 1), VNM_OK);
    vnm_tensor *in[3] = {q, tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -1, 1),
                         tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -1, 1)};
    tu_gradcheck(ctx, f_attention, 3, in, &c);
}

static vnm_tensor *f_self_attention_views(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* one [B, T, H, D] tensor as q, k and v: three gradients add into one buffer */
    vnm_tensor *x = vnm_transpose(ctx, in[0], 1, 2);
    return vnm_attention(ctx, x, x, x, true, 0);
}

static void test_attention_gradcheck_shared_input_views(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 4, VNM_SHAPE(1, 4, 2, 3), -1, 1)};
    tu_gradcheck(ctx, f_self_attention_views, 1, in, NULL);
}

static void test_attention_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *q = tu_param(ctx, 4, VNM_SHAPE(2, 4, 3, 8), -1, 1);
    vnm_tensor *k = tu_param(ctx, 4, VNM_SHAPE(2, 2, 5, 8), -1, 1);
    vnm_tensor *v = tu_param(ctx, 4, VNM_SHAPE(2, 2, 5, 8), -1, 1);
    vnm_tensor *k_batch = tu_param(ctx, 4, VNM_SHAPE(1, 2, 5, 8), -1, 1);
    assert_null(vnm_attention(ctx, q, k_batch, k_batch, false, 0));
    tu_assert_error(ctx, "must agree in batch B and head size D");
    vnm_tensor *k_dim = tu_param(ctx, 4, VNM_SHAPE(2, 2, 5, 6), -1, 1);
    assert_null(vnm_attention(ctx, q, k_dim, k_dim, false, 0));
    tu_assert_error(ctx, "must agree in batch B and head size D");
    vnm_tensor *v_len = tu_param(ctx, 4, VNM_SHAPE(2, 2, 6, 8), -1, 1);
    assert_null(vnm_attention(ctx, q, k, v_len, false, 0));
    tu_assert_error(ctx, "must have the same shape [B, Hkv, S, D]");
    vnm_tensor *k3 = tu_param(ctx, 4, VNM_SHAPE(2, 3, 5, 8), -1, 1);
    assert_null(vnm_attention(ctx, q, k3, k3, false, 0));
    tu_assert_error(ctx, "4 heads, not a multiple of the 3 KV heads");
    vnm_tensor *q_long = tu_param(ctx, 4, VNM_SHAPE(2, 4, 6, 8), -1, 1);
    assert_null(vnm_attention(ctx, q_long, k, v, true, 0));
    tu_assert_error(ctx, "T must be <= S");
    assert_non_null(vnm_attention(ctx, q_long, k, v, false, 0)); /* fine without the mask */
    vnm_tensor *q3 = tu_param(ctx, 3, VNM_SHAPE(4, 3, 8), -1, 1);
    assert_null(vnm_attention(ctx, q3, k, v, false, 0));
    tu_assert_error(ctx, "q must have 4 dims");
    vnm_tensor *qi = vnm_tensor_new(ctx, VNM_DTYPE_I32, 4, VNM_SHAPE(2, 4, 3, 8));
    assert_null(vnm_attention(ctx, qi, k, v, false, 0));
    tu_assert_error(ctx, "q must be f32");
    assert_null(vnm_attention(ctx, q, NULL, v, false, 0)); /* NULL propagates silently */
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}


/* ---- the CPU kernels: small-head loops and OpenBLAS, strided entries ---- */

static int reset_kernels(void **state)
{
    vnm_cpu_force_portable(false);
    return tu_teardown(state);
}

/* The forward cases above again with either kernel, plus head sizes the small-head loops have
 * copies for (16, 24, 32, 48, 64), ones they do not (5, 20), key counts that are not whole
 * vectors, and one head too large for them (OpenBLAS either way). */
static void test_attention_both_kernels(void **state)
{
    vnm_ctx *ctx = *state;
    const attn_case cases[] = {
        {2, 3, 3, 5, 7, 4, false, 0},    {1, 2, 2, 6, 6, 5, true, 0},
        {2, 2, 2, 3, 7, 4, true, 0},     {1, 6, 2, 3, 5, 4, false, 0},
        {2, 3, 1, 4, 9, 6, false, 0},    {2, 4, 4, 17, 17, 24, false, 0},
        {1, 2, 2, 17, 17, 24, true, 0},  {2, 4, 2, 9, 13, 16, false, 0.3f},
        {1, 2, 1, 11, 11, 32, true, 0},  {1, 1, 1, 7, 25, 48, false, 0},
        {1, 2, 2, 8, 16, 64, false, 0},  {2, 2, 2, 17, 17, 20, false, 0},
        {1, 3, 3, 33, 33, 5, true, 0},   {1, 2, 2, 48, 48, 40, false, 0},
    };
    for (int portable = 0; portable <= 1; portable++) {
        vnm_cpu_force_portable(portable);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            vnm_ctx_reset_step(ctx);
            check_forward(ctx, cases[i]);
        }
        attn_case c = {2, 4, 2, 6, 9, 24, true, 0};
        vnm_tensor *in[3] = {tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hq, c.T, c.D), -1, 1),
                             tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -1, 1),
                             tu_param(ctx, 4, VNM_SHAPE(c.B, c.Hkv, c.S, c.D), -1, 1)};
        tu_gradcheck(ctx, f_attention, 3, in, &c);
        attn_case g = {1, 2, 2, 5, 7, 20, false, 0.5f};
        vnm_tensor *in2[3] = {tu_param(ctx, 4, VNM_SHAPE(g.B, g.Hq, g.T, g.D), -1, 1),
                              tu_param(ctx, 4, VNM_SHAPE(g.B, g.Hkv, g.S, g.D), -1, 1),
                              tu_param(ctx, 4, VNM_SHAPE(g.B, g.Hkv, g.S, g.D), -1, 1)};
        tu_gradcheck(ctx, f_attention, 3, in2, &g);
    }
}

static float *filled(int64_t n, float v)
{
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = v;
    return x;
}

/* Strided entries on q, k, v, dout laid out as [B, rows, H, D] inside wider rows: backward with
 * overwrite into NaN-filled gradients equals backward adding into zeros (grouped KV heads: the
 * second query head of a group adds to what the first wrote). */
static void check_strided_overwrite(int64_t D)
{
    const vnm_backend *be = vnm_backend_cpu();
    const int64_t B = 2, Hq = 4, Hkv = 2, T = 5, S = 7, W = 3; /* rows W·H·D wide */
    vnm_attn_strides qs = {T * W * Hq * D, D, W * Hq * D}, ks = {S * W * Hkv * D, D, W * Hkv * D};
    int64_t nq = B * T * W * Hq * D, nk = B * S * W * Hkv * D;
    float *q = filled(nq, 0), *k = filled(nk, 0), *v = filled(nk, 0), *dout = filled(nq, 0);
    for (int64_t i = 0; i < nq; i++) {
        q[i] = sinf(0.1f * (float)i);
        dout[i] = cosf(0.07f * (float)i);
    }
    for (int64_t i = 0; i < nk; i++) {
        k[i] = cosf(0.13f * (float)i);
        v[i] = sinf(0.05f * (float)i + 1.0f);
    }
    float *o = filled(nq, 0), *p = filled(B * Hq * T * S, 0);
    be->attention_fwd_strided(o, qs, p, q, qs, k, ks, v, ks, B, Hq, Hkv, T, S, D, false, 0.3f);
    float *dq0 = filled(nq, 0), *dk0 = filled(nk, 0), *dv0 = filled(nk, 0);
    float *dq1 = filled(nq, NAN), *dk1 = filled(nk, NAN), *dv1 = filled(nk, NAN);
    be->attention_bwd_strided(dq0, qs, dk0, ks, dv0, ks, false, dout, qs, p, q, qs, k, ks, v, ks, B,
                              Hq, Hkv, T, S, D, 0.3f);
    be->attention_bwd_strided(dq1, qs, dk1, ks, dv1, ks, true, dout, qs, p, q, qs, k, ks, v, ks, B,
                              Hq, Hkv, T, S, D, 0.3f);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t d = 0; d < D; d++) {
                    int64_t i = b * qs.b + h * qs.h + t * qs.t + d;
                    assert_true(dq1[i] == dq0[i] && isfinite(dq0[i]));
                }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hkv; h++)
            for (int64_t t = 0; t < S; t++)
                for (int64_t d = 0; d < D; d++) {
                    int64_t i = b * ks.b + h * ks.h + t * ks.t + d;
                    assert_true(dk1[i] == dk0[i] && isfinite(dk0[i]));
                    assert_true(dv1[i] == dv0[i] && isfinite(dv0[i]));
                }
    /* elements outside the views are left alone */
    assert_true(isnan(dq1[D * Hq]) && isnan(dk1[D * Hkv]) && isnan(dv1[D * Hkv]));
    float *bufs[] = {q, k, v, dout, o, p, dq0, dk0, dv0, dq1, dk1, dv1};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

static void test_attention_strided_overwrite(void **state)
{
    (void)state;
    for (int portable = 0; portable <= 1; portable++) {
        vnm_cpu_force_portable(portable);
        check_strided_overwrite(24);
        check_strided_overwrite(6);
    }
}

/* ---- attention on a packed qkv projection ---- */

typedef struct {
    int64_t heads, queries;
    bool causal;
} qkv_case;

/* The generic-op version: slices of qkv as [B, H, rows, D] views, vnm_attention, merged back. */
static vnm_tensor *qkv_composed(vnm_ctx *ctx, vnm_tensor *qkv, const qkv_case *c)
{
    static const int swap12[4] = {0, 2, 1, 3};
    int64_t B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2] / 3, H = c->heads;
    int64_t Tq = c->queries ? c->queries : T;
    vnm_tensor *h[3];
    for (int i = 0; i < 3; i++) {
        vnm_tensor *t = vnm_slice(ctx, qkv, 2, i * C, (i + 1) * C);
        if (i == 0) t = vnm_slice(ctx, t, 1, 0, Tq);
        t = vnm_reshape(ctx, t, 4, VNM_SHAPE(B, i == 0 ? Tq : T, H, C / H));
        h[i] = vnm_permute(ctx, t, swap12);
    }
    vnm_tensor *a = vnm_attention(ctx, h[0], h[1], h[2], c->causal, 0);
    return vnm_reshape(ctx, vnm_permute(ctx, a, swap12), 3, VNM_SHAPE(B, Tq, C));
}

static vnm_tensor *f_qkv(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    const qkv_case *c = user;
    return vnm_attention_qkv(ctx, in[0], c->heads, c->queries, c->causal, 0);
}

/* out and qkv's gradient of L = Σ out·R, R fixed; out and the gradient are returned (malloc'd). */
static void qkv_run(vnm_ctx *ctx, vnm_tensor *qkv, const qkv_case *c, bool composed, float **out,
                    float **grad)
{
    vnm_ctx_reset_step(ctx);
    vnm_zero_grad(ctx, &qkv, 1);
    vnm_tensor *o = composed ? qkv_composed(ctx, qkv, c) : f_qkv(ctx, &qkv, (void *)c);
    assert_non_null(o);
    int64_t n = vnm_numel(o);
    float *r = malloc((size_t)n * sizeof *r);
    for (int64_t i = 0; i < n; i++) r[i] = sinf(0.3f * (float)i);
    vnm_tensor *rt = vnm_tensor_from(ctx, VNM_DTYPE_F32, o->ndim, o->shape, r);
    assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, vnm_mul(ctx, o, rt), VNM_ALL_DIMS, false)),
                     VNM_OK);
    *out = tu_host(ctx, o);
    *grad = tu_host(ctx, qkv->grad);
    free(r);
}

static void check_qkv_case(vnm_ctx *ctx, int64_t B, int64_t T, int64_t D, qkv_case c)
{
    vnm_tensor *qkv = tu_param(ctx, 3, VNM_SHAPE(B, T, 3 * c.heads * D), -1.5f, 1.5f);
    float *o1, *g1, *o2, *g2;
    qkv_run(ctx, qkv, &c, false, &o1, &g1);
    qkv_run(ctx, qkv, &c, true, &o2, &g2);
    int64_t Tq = c.queries ? c.queries : T, no = B * Tq * c.heads * D, ng = vnm_numel(qkv);
    double *w = malloc((size_t)(no > ng ? no : ng) * sizeof *w);
    for (int64_t i = 0; i < no; i++) w[i] = o2[i];
    tu_assert_close(o1, w, no, 1e-5, 1e-5, "attention_qkv forward");
    for (int64_t i = 0; i < ng; i++) w[i] = g2[i];
    tu_assert_close(g1, w, ng, 1e-5, 1e-4, "attention_qkv gradient");
    free(o1);
    free(g1);
    free(o2);
    free(g2);
    free(w);
}

static void test_attention_qkv_matches_composed(void **state)
{
    vnm_ctx *ctx = *state;
    for (int portable = 0; portable <= 1; portable++) {
        vnm_cpu_force_portable(portable);
        check_qkv_case(ctx, 2, 17, 24, (qkv_case){4, 0, false}); /* the quickstart's heads */
        check_qkv_case(ctx, 2, 17, 24, (qkv_case){4, 1, false}); /* the class token alone */
        check_qkv_case(ctx, 1, 9, 8, (qkv_case){3, 2, false});
        check_qkv_case(ctx, 1, 5, 20, (qkv_case){2, 0, false});
        check_qkv_case(ctx, 2, 6, 4, (qkv_case){2, 0, true});
        check_qkv_case(ctx, 1, 40, 64, (qkv_case){1, 0, false}); /* an OpenBLAS head */
        check_qkv_case(ctx, 1, 40, 64, (qkv_case){1, 3, false});
    }
}

static void test_attention_qkv_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    for (int portable = 0; portable <= 1; portable++) {
        vnm_cpu_force_portable(portable);
        const qkv_case cases[] = {{2, 0, false}, {2, 2, false}, {1, 0, true}};
        for (int i = 0; i < 3; i++) {
            vnm_tensor *in[1] = {tu_param(ctx, 3, VNM_SHAPE(2, 5, 3 * cases[i].heads * 3), -1, 1)};
            tu_gradcheck(ctx, f_qkv, 1, in, (void *)&cases[i]);
        }
    }
}

static void test_attention_qkv_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *qkv = tu_param(ctx, 3, VNM_SHAPE(2, 5, 24), -1, 1);
    assert_null(vnm_attention_qkv(ctx, qkv, 5, 0, false, 0));
    tu_assert_error(ctx, "must be [B, T, 3·H·D] with D >= 1 for 5 heads");
    assert_null(vnm_attention_qkv(ctx, qkv, 0, 0, false, 0));
    tu_assert_error(ctx, "for 0 heads");
    assert_null(vnm_attention_qkv(ctx, qkv, 2, 6, false, 0));
    tu_assert_error(ctx, "6 queries");
    assert_null(vnm_attention_qkv(ctx, qkv, 2, -1, false, 0));
    tu_assert_error(ctx, "-1 queries");
    assert_null(vnm_attention_qkv(ctx, qkv, 2, 3, true, 0));
    tu_assert_error(ctx, "all of them when causal");
    vnm_tensor *q4 = tu_param(ctx, 4, VNM_SHAPE(2, 5, 2, 12), -1, 1);
    assert_null(vnm_attention_qkv(ctx, q4, 2, 0, false, 0));
    tu_assert_error(ctx, "qkv must have 3 dims");
    vnm_tensor *o = vnm_attention_qkv(ctx, qkv, 2, 2, false, 0);
    assert_non_null(o);
    assert_int_equal(o->shape[1], 2);
    assert_int_equal(o->shape[2], 8);
    assert_null(vnm_attention_qkv(ctx, NULL, 2, 0, false, 0)); /* NULL propagates silently */
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_attention_forward_noncausal, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_forward_causal_square, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_forward_causal_fewer_queries, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_forward_gqa, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_forward_mqa, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_forward_custom_scale, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_forward_transposed_views, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_gradcheck_causal_gqa, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_gradcheck_noncausal, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_gradcheck_kv_only_mqa, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_gradcheck_shared_input_views, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_attention_both_kernels, tu_setup, reset_kernels),
        cmocka_unit_test_setup_teardown(test_attention_strided_overwrite, tu_setup, reset_kernels),
        cmocka_unit_test_setup_teardown(test_attention_qkv_matches_composed, tu_setup,
                                        reset_kernels),
        cmocka_unit_test_setup_teardown(test_attention_qkv_gradcheck, tu_setup, reset_kernels),
        cmocka_unit_test_setup_teardown(test_attention_qkv_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("attention", tests, NULL, NULL);
}
