/* tests/test_attention_half.c — attention in the half dtype of mixed precision (the backend's
 * fused entries, op_attention_half.c) on the CPU:
 *   - vnm_attention and vnm_attention_qkv with bf16/f16 products give exactly the f32 op's results
 *     on q, k, v rounded to that dtype, with the output and gradients rounded in turn (the CPU
 *     entries widen and run the f32 kernels, so the agreement is exact), for grouped KV heads,
 *     causal masking, transposed-view inputs, all or only the first queries; and they differ from
 *     the unrounded f32 results, so ignoring the setting fails;
 *   - a gradient buffer that already holds a gradient is added to;
 *   - the node keeps no [B, H, T, S] probabilities and reads none of its f32 inputs;
 *   - the per-row log-sum-exp the entry returns against a double reference;
 *   - a case the entries decline (causal with fewer queries than keys) runs the f32 kernels, and
 *     so does a context asking for determinism where the entries are not deterministic.
 * test_backends compares the CUDA entries (cuDNN) with these. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/backend.h"
#include "autograd/internal.h"
#include "test_util.h"

static float round_to(float x, vnm_dtype dt)
{
    return dt == VNM_DTYPE_BF16 ? vnm_bf16_to_f32(vnm_f32_to_bf16(x))
                                : vnm_f16_to_f32(vnm_f32_to_f16(x));
}

/* A parameter of the given shape with values in [-2, 2], rounded to dt when dt is a half dtype. */
static vnm_tensor *param(vnm_ctx *ctx, int ndim, const int64_t *shape, vnm_dtype dt, int seed)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *h = malloc((size_t)n * sizeof *h);
    for (int64_t i = 0; i < n; i++) {
        float x = 2.0f * sinf(0.7f * (float)i + (float)seed) * cosf(0.13f * (float)i);
        h[i] = dt == VNM_DTYPE_F32 ? x : round_to(x, dt);
    }
    vnm_tensor *t = vnm_param_new(ctx, VNM_DTYPE_F32, ndim, shape, "x");
    assert_int_equal(vnm_tensor_from_host(ctx, t, h), VNM_OK);
    free(h);
    return t;
}

typedef struct {
    int64_t B, Hq, Hkv, T, S, D;
    bool causal;
    bool q_view; /* q as the transposed view of a [B, T, Hq, D] parameter */
    int64_t heads, queries; /* heads > 0: attention_qkv of the first `queries` (T, or 0 for all)
                             * of S tokens [B, S, 3·heads·D] */
} half_case;

typedef struct {
    int n_in;
    int64_t n_out, n[3]; /* element counts of the output and the inputs */
    float *o, *g[3];     /* host copies of the output and the gradients */
    bool reads_nothing;  /* the node reads none of its inputs in backward */
    int64_t largest_saved; /* elements of the largest tensor the node keeps */
} run_result;

static vnm_tensor *forward(vnm_ctx *ctx, const half_case *c, vnm_tensor *const *in)
{
    static const int swap12[4] = {0, 2, 1, 3};
    if (c->heads) return vnm_attention_qkv(ctx, in[0], c->heads, c->queries, c->causal, 0);
    vnm_tensor *q = c->q_view ? vnm_permute(ctx, in[0], swap12) : in[0];
    return vnm_attention(ctx, q, in[1], in[2], c->causal, 0);
}

/* Forward and backward of L = Σ out·R (R's entries k/8, exact in bf16 and f16) with products in
 * dt, on inputs rounded to `round` (f32: as drawn). */
static run_result run(vnm_ctx *ctx, const half_case *c, vnm_dtype dt, vnm_dtype round)
{
    vnm_ctx_reset_step(ctx);
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, dt), VNM_OK);
    run_result r = {0};
    vnm_tensor *in[3];
    if (c->heads) {
        r.n_in = 1;
        in[0] = param(ctx, 3, VNM_SHAPE(c->B, c->S, 3 * c->heads * c->D), round, 1);
    } else {
        r.n_in = 3;
        in[0] = c->q_view ? param(ctx, 4, VNM_SHAPE(c->B, c->T, c->Hq, c->D), round, 1)
                          : param(ctx, 4, VNM_SHAPE(c->B, c->Hq, c->T, c->D), round, 1);
        in[1] = param(ctx, 4, VNM_SHAPE(c->B, c->Hkv, c->S, c->D), round, 2);
        in[2] = param(ctx, 4, VNM_SHAPE(c->B, c->Hkv, c->S, c->D), round, 3);
    }
    vnm_tensor *out = forward(ctx, c, in);
    assert_non_null(out);
    const vnm_node *node = out->node;
    assert_non_null(node);
    r.reads_nothing = node->reads_declared && node->reads == 0;
    for (int i = 0; i < VNM_NODE_MAX_SAVED; i++)
        if (node->saved[i] && vnm_numel(node->saved[i]) > r.largest_saved)
            r.largest_saved = vnm_numel(node->saved[i]);
    r.n_out = vnm_numel(out);
    float *R = malloc((size_t)r.n_out * sizeof *R);
    for (int64_t i = 0; i < r.n_out; i++) R[i] = (float)((i * 7) % 17 - 8) / 8.0f;
    vnm_tensor *rt = vnm_tensor_from(ctx, VNM_DTYPE_F32, out->ndim, out->shape, R);
    free(R);
    r.o = tu_host(ctx, out);
    assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, vnm_mul(ctx, out, rt), VNM_ALL_DIMS, false)),
                     VNM_OK);
    for (int i = 0; i < r.n_in; i++) {
        r.n[i] = vnm_numel(in[i]);
        r.g[i] = tu_host(ctx, in[i]->grad);
    }
    return r;
}

static void result_free(run_result *r)
{
    free(r->o);
    for (int i = 0; i < r->n_in; i++) free(r->g[i]);
}

/* got == want rounded to dt, element for element; returns how many differ from want unrounded */
static int64_t check_rounded(const float *got, const float *want, int64_t n, vnm_dtype dt,
                             const char *what)
{
    int64_t changed = 0;
    for (int64_t i = 0; i < n; i++) {
        float w = round_to(want[i], dt);
        if (got[i] != w) fail_msg("%s [%lld]: %.9g, want %.9g", what, (long long)i, got[i], w);
        changed += got[i] != want[i];
    }
    return changed;
}

static void check_case(vnm_ctx *ctx, half_case c, vnm_dtype dt)
{
    run_result h = run(ctx, &c, dt, dt), ref = run(ctx, &c, VNM_DTYPE_F32, dt);
    assert_true(h.reads_nothing);
    assert_false(ref.reads_nothing);
    /* the f32 op keeps the probabilities [B, H, T, S] */
    assert_true(ref.largest_saved == c.B * c.Hq * c.T * c.S);
    /* the fused node's largest is the half copy of q, k, v */
    assert_int_equal(h.largest_saved, h.n[0] + h.n[1] + h.n[2]);
    int64_t changed = check_rounded(h.o, ref.o, h.n_out, dt, "output");
    for (int i = 0; i < h.n_in; i++)
        changed += check_rounded(h.g[i], ref.g[i], h.n[i], dt, "gradient");
    assert_true(changed > 0);
    result_free(&h);
    result_free(&ref);
}

static void test_half_noncausal(void **state)
{
    half_case c = {.B = 2, .Hq = 3, .Hkv = 3, .T = 70, .S = 90, .D = 16};
    check_case(*state, c, VNM_DTYPE_BF16);
    check_case(*state, c, VNM_DTYPE_F16);
}

static void test_half_causal_gqa_view(void **state)
{
    half_case c = {.B = 1, .Hq = 4, .Hkv = 2, .T = 65, .S = 65, .D = 8, .causal = true,
                   .q_view = true};
    check_case(*state, c, VNM_DTYPE_BF16);
}

static void test_half_qkv(void **state)
{
    half_case all = {.B = 2, .T = 50, .S = 50, .D = 8, .heads = 3, .queries = 0};
    all.Hq = all.Hkv = 3;
    check_case(*state, all, VNM_DTYPE_BF16);
    half_case prefix = all; /* the rows past the first queries get no query gradient */
    prefix.queries = prefix.T = 2;
    check_case(*state, prefix, VNM_DTYPE_F16);
    half_case causal = all;
    causal.causal = true;
    check_case(*state, causal, VNM_DTYPE_BF16);
}

/* q used again after the attention: its gradient buffer exists when the attention's backward
 * runs, which adds the (rounded) attention gradient to it */
static void test_half_adds_to_gradient(void **state)
{
    vnm_ctx *ctx = *state;
    float *gq[2];
    for (int k = 0; k < 2; k++) {
        vnm_ctx_reset_step(ctx);
        assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, VNM_DTYPE_BF16), VNM_OK);
        vnm_tensor *q = param(ctx, 4, VNM_SHAPE(1, 2, 9, 8), VNM_DTYPE_F32, 1);
        vnm_tensor *kv = param(ctx, 4, VNM_SHAPE(1, 2, 9, 8), VNM_DTYPE_F32, 2);
        vnm_tensor *loss = vnm_sum(ctx, vnm_attention(ctx, q, kv, kv, false, 0), VNM_ALL_DIMS,
                                   false);
        if (k) loss = vnm_add(ctx, loss, vnm_sum(ctx, vnm_mul(ctx, q, q), VNM_ALL_DIMS, false));
        assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
        float *host = tu_host(ctx, q);
        gq[k] = tu_host(ctx, q->grad);
        if (k)
            for (int i = 0; i < 2 * 9 * 8; i++) gq[1][i] -= 2.0f * host[i];
        free(host);
    }
    double want[2 * 9 * 8];
    for (int i = 0; i < 2 * 9 * 8; i++) want[i] = gq[0][i];
    tu_assert_close(gq[1], want, 2 * 9 * 8, 1e-6, 1e-6, "q gradient added to");
    free(gq[0]);
    free(gq[1]);
}

/* The entry's stats: each row's log-sum-exp of its scaled scores, masked keys left out. */
static void test_half_stats(void **state)
{
    (void)state;
    const vnm_backend *be = vnm_backend_cpu();
    enum { B = 1, H = 2, T = 5, D = 8 };
    uint16_t q[B * H * T * D], k[B * H * T * D], v[B * H * T * D], o[B * H * T * D];
    float fq[B * H * T * D], fk[B * H * T * D], stats[B * H * T];
    for (int i = 0; i < B * H * T * D; i++) {
        q[i] = vnm_f32_to_bf16(1.5f * sinf((float)i)), fq[i] = vnm_bf16_to_f32(q[i]);
        k[i] = vnm_f32_to_bf16(1.5f * cosf(0.3f * (float)i)), fk[i] = vnm_bf16_to_f32(k[i]);
        v[i] = vnm_f32_to_bf16((float)i / 40.0f);
    }
    vnm_attn_strides s = {H * T * D, T * D, D};
    float scale = 0.4f;
    assert_true(be->attention_half_fwd(VNM_DTYPE_BF16, o, s, stats, q, s, k, s, v, s, B, H, H, T,
                                       T, D, true, scale));
    double want[B * H * T];
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++) {
            double sum = 0;
            for (int j = 0; j <= t; j++) {
                double dot = 0;
                for (int d = 0; d < D; d++)
                    dot += (double)fq[(h * T + t) * D + d] * fk[(h * T + j) * D + d];
                sum += exp(scale * dot);
            }
            want[h * T + t] = log(sum);
        }
    tu_assert_close(stats, want, B * H * T, 1e-5, 1e-5, "log-sum-exp");
    assert_false(be->attention_half_fwd(VNM_DTYPE_BF16, o, s, stats, q, s, k, s, v, s, B, H, H,
                                        T - 1, T, D, true, scale)); /* causal, T < S */
}

/* Causal with fewer queries than keys is declined: the f32 kernels run, unrounded. */
static void test_half_declined_runs_f32(void **state)
{
    vnm_ctx *ctx = *state;
    half_case c = {.B = 1, .Hq = 2, .Hkv = 1, .T = 3, .S = 7, .D = 8, .causal = true};
    run_result h = run(ctx, &c, VNM_DTYPE_BF16, VNM_DTYPE_F32);
    run_result ref = run(ctx, &c, VNM_DTYPE_F32, VNM_DTYPE_F32);
    assert_false(h.reads_nothing);
    assert_memory_equal(h.o, ref.o, (size_t)h.n_out * sizeof *h.o);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(h.g[i], ref.g[i], (size_t)h.n[i] * sizeof *h.g[i]);
    result_free(&h);
    result_free(&ref);
}

/* A context that asks for determinism leaves out fused entries that do not repeat their bits
 * (cuDNN's backward): here the CPU's table with that flag cleared. */
static void test_half_deterministic_context(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_backend nondeterministic = *ctx->be;
    nondeterministic.attention_half_deterministic = false;
    const vnm_backend *cpu = ctx->be;
    ctx->be = &nondeterministic;
    half_case c = {.B = 1, .Hq = 2, .Hkv = 2, .T = 9, .S = 9, .D = 8};
    for (int det = 0; det < 2; det++) {
        vnm_ctx_set_deterministic(ctx, det);
        run_result r = run(ctx, &c, VNM_DTYPE_BF16, VNM_DTYPE_F32);
        assert_true(r.reads_nothing == !det); /* fused: reads nothing; f32 kernels: q, k, v */
        result_free(&r);
    }
    vnm_ctx_set_deterministic(ctx, false);
    ctx->be = cpu;
    run_result r = run(ctx, &c, VNM_DTYPE_BF16, VNM_DTYPE_F32); /* the CPU's entries repeat */
    assert_true(r.reads_nothing);
    result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_half_noncausal, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_half_causal_gqa_view, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_half_qkv, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_half_adds_to_gradient, tu_setup, tu_teardown),
        cmocka_unit_test(test_half_stats),
        cmocka_unit_test_setup_teardown(test_half_declined_runs_f32, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_half_deterministic_context, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
