/* tests/test_attention.c — scaled dot-product attention: forward against a naive double reference
 * (non-causal, causal with T == S and T < S, grouped and multi-query KV heads, explicit scale,
 * transposed-view inputs), finite-difference gradients of q, k and v, and argument errors. */
#include <math.h>
#include <stdlib.h>

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
    };
    return cmocka_run_group_tests_name("attention", tests, NULL, NULL);
}
