/* tests/test_mixed_precision.c — the products of linear and matmul with bf16/f16 operands
 * (vnm_ctx_set_matmul_dtype): forward and every gradient against a double reference computed from
 * operands rounded on the host, which must also differ measurably from the unrounded f32
 * reference (so a product that ignored the setting fails); a frozen weight of the matmul dtype used
 * without a copy; f16 overflow reaching the output as inf (what loss scaling detects); bad
 * settings; the activations' half copies of their inputs for backward. The cross-backend agreement
 * of the same products is in test_backends.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "test_util.h"

static const vnm_dtype HALVES[2] = {VNM_DTYPE_BF16, VNM_DTYPE_F16};

static float round_to(vnm_dtype dt, float v)
{
    return dt == VNM_DTYPE_BF16 ? vnm_bf16_to_f32(vnm_f32_to_bf16(v))
                                : vnm_f16_to_f32(vnm_f32_to_f16(v));
}

/* A copy of h[n] rounded to dt (dt f32: unrounded). */
static float *rounded(vnm_dtype dt, const float *h, int64_t n)
{
    float *r = malloc((size_t)n * sizeof *r);
    assert_non_null(r);
    for (int64_t i = 0; i < n; i++) r[i] = dt == VNM_DTYPE_F32 ? h[i] : round_to(dt, h[i]);
    return r;
}

/* C[M,N] = op(A)·op(B) in double, row-major, A [M,K] or [K,M] (ta), B [K,N] or [N,K] (tb). */
static void ref_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                     const float *B, double *C)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * M + m] : A[m * K + k], b = tb ? B[n * K + k] : B[k * N + n];
                acc += a * b;
            }
            C[m * N + n] = acc;
        }
}

static double max_diff(const float *got, const double *want, int64_t n)
{
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs(got[i] - want[i]));
    return d;
}

/* got agrees with the reference from rounded operands and is measurably away from the unrounded
 * one (the rounding of a half dtype moves sums of 40+ products of O(1) terms by ≥ 1e-4). */
static void assert_half_result(const char *what, const float *got, const double *want,
                               const double *unrounded, int64_t n)
{
    tu_assert_close(got, want, n, 1e-5, 1e-5, what);
    assert_true(max_diff(got, unrounded, n) > 1e-4);
}

/* y = x·Wᵀ + b, then backward from a seed s: y, dx, dW against references from rounded x, W, s
 * (db sums the unrounded s: it is no product). */
static void check_linear(vnm_ctx *ctx, vnm_dtype dt)
{
    enum { T = 9, I = 48, O = 40 };
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, dt), VNM_OK);
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(O), -1, 1);
    vnm_tensor *s = tu_param(ctx, 2, VNM_SHAPE(T, O), -1, 1);
    s->requires_grad = false;
    vnm_tensor *y = vnm_linear(ctx, x, w, b);
    assert_non_null(y);
    assert_int_equal(vnm_backward_seed(ctx, y, s), VNM_OK);
    float *hx = tu_host(ctx, x), *hw = tu_host(ctx, w), *hb = tu_host(ctx, b);
    float *hs = tu_host(ctx, s), *hy = tu_host(ctx, y), *gx = tu_host(ctx, x->grad);
    float *gw = tu_host(ctx, w->grad), *gb = tu_host(ctx, b->grad);
    double want[3][T * I > O * I ? T * I : O * I], raw[3][T * I > O * I ? T * I : O * I];
    for (int k = 0; k < 2; k++) {
        vnm_dtype r = k == 0 ? dt : VNM_DTYPE_F32;
        float *rx = rounded(r, hx, T * I), *rw = rounded(r, hw, O * I), *rs = rounded(r, hs, T * O);
        double(*out)[T * I > O * I ? T * I : O * I] = k == 0 ? want : raw;
        ref_gemm(false, true, T, O, I, rx, rw, out[0]);
        for (int64_t i = 0; i < T * O; i++) out[0][i] += hb[i % O];
        ref_gemm(false, false, T, I, O, rs, rw, out[1]);
        ref_gemm(true, false, O, I, T, rs, rx, out[2]);
        free(rx), free(rw), free(rs);
    }
    assert_half_result("linear y", hy, want[0], raw[0], T * O);
    assert_half_result("linear dx", gx, want[1], raw[1], T * I);
    assert_half_result("linear dW", gw, want[2], raw[2], O * I);
    for (int o = 0; o < O; o++) {
        double sum = 0;
        for (int t = 0; t < T; t++) sum += hs[t * O + o];
        assert_true(fabs(gb[o] - sum) <= 1e-5);
    }
    free(hx), free(hw), free(hb), free(hs), free(hy), free(gx), free(gw), free(gb);
}

static void test_linear_half_products(void **state)
{
    for (int d = 0; d < 2; d++) {
        check_linear(*state, HALVES[d]);
        vnm_ctx_reset_step(*state);
    }
}

/* y = a·b batched ([P, M, K]·[P, K, N]) or with a shared b ([K, N]), then backward from s. */
static void check_matmul(vnm_ctx *ctx, vnm_dtype dt, bool shared)
{
    enum { P = 3, M = 5, K = 44, N = 6 };
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, dt), VNM_OK);
    vnm_tensor *a = tu_param(ctx, 3, VNM_SHAPE(P, M, K), -1, 1);
    vnm_tensor *b = shared ? tu_param(ctx, 2, VNM_SHAPE(K, N), -1, 1)
                           : tu_param(ctx, 3, VNM_SHAPE(P, K, N), -1, 1);
    vnm_tensor *s = tu_param(ctx, 3, VNM_SHAPE(P, M, N), -1, 1);
    s->requires_grad = false;
    vnm_tensor *y = vnm_matmul(ctx, a, b);
    assert_non_null(y);
    assert_int_equal(vnm_backward_seed(ctx, y, s), VNM_OK);
    float *ha = tu_host(ctx, a), *hb = tu_host(ctx, b), *hs = tu_host(ctx, s);
    float *hy = tu_host(ctx, y), *ga = tu_host(ctx, a->grad), *gb = tu_host(ctx, b->grad);
    int64_t nb = shared ? K * N : P * K * N;
    double want[3][P * K * N], raw[3][P * K * N];
    for (int k = 0; k < 2; k++) {
        vnm_dtype r = k == 0 ? dt : VNM_DTYPE_F32;
        float *ra = rounded(r, ha, P * M * K), *rb = rounded(r, hb, nb);
        float *rs = rounded(r, hs, P * M * N);
        double(*out)[P * K * N] = k == 0 ? want : raw;
        for (int64_t i = 0; i < nb; i++) out[2][i] = 0;
        for (int p = 0; p < P; p++) {
            const float *bp = rb + (shared ? 0 : p * K * N);
            double part[K * N];
            ref_gemm(false, false, M, N, K, ra + p * M * K, bp, out[0] + p * M * N);
            ref_gemm(false, true, M, K, N, rs + p * M * N, bp, out[1] + p * M * K);
            ref_gemm(true, false, K, N, M, ra + p * M * K, rs + p * M * N, part);
            for (int i = 0; i < K * N; i++) out[2][(shared ? 0 : p * K * N) + i] += part[i];
        }
        free(ra), free(rb), free(rs);
    }
    assert_half_result("matmul y", hy, want[0], raw[0], P * M * N);
    assert_half_result("matmul da", ga, want[1], raw[1], P * M * K);
    assert_half_result("matmul db", gb, want[2], raw[2], nb);
    free(ha), free(hb), free(hs), free(hy), free(ga), free(gb);
}

static void test_matmul_half_products(void **state)
{
    for (int d = 0; d < 2; d++)
        for (int shared = 0; shared < 2; shared++) {
            check_matmul(*state, HALVES[d], shared);
            vnm_ctx_reset_step(*state);
        }
}

/* A frozen bf16 weight under bf16 products goes in as it is: the step holds no converted copy,
 * and the result equals the one from an f32 weight of the same values. */
static void test_frozen_weight_of_matmul_dtype_used_as_is(void **state)
{
    vnm_ctx *ctx = *state;
    enum { T = 4, O = 256, I = 512 };
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, VNM_DTYPE_BF16), VNM_OK);
    vnm_tensor *w32 = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    vnm_tensor *wh = vnm_buffer_new(ctx, VNM_DTYPE_BF16, 2, VNM_SHAPE(O, I), "w.bf16");
    vnm_tensor *c = vnm_to_dtype(ctx, w32, VNM_DTYPE_BF16);
    uint16_t *bits = malloc((size_t)(O * I) * 2);
    assert_int_equal(vnm_tensor_to_host(ctx, c, bits), VNM_OK);
    assert_int_equal(vnm_tensor_from_host(ctx, wh, bits), VNM_OK);
    free(bits);
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
    vnm_ctx_reset_step(ctx);
    size_t before = vnm_ctx_step_bytes(ctx);
    vnm_tensor *y = vnm_linear(ctx, x, wh, NULL);
    assert_non_null(y);
    assert_true(vnm_ctx_step_bytes(ctx) - before < (size_t)(O * I) * 2 / 2);
    float *a = tu_host(ctx, y);
    vnm_tensor *wr = vnm_to_dtype(ctx, wh, VNM_DTYPE_F32);
    float *r = tu_host(ctx, vnm_linear(ctx, x, wr, NULL));
    assert_memory_equal(a, r, (size_t)(T * O) * sizeof *a);
    free(a), free(r);
}

/* f16 tops out at 65504: an operand beyond it becomes inf, and so does the product. */
static void test_f16_overflow_reaches_the_output(void **state)
{
    vnm_ctx *ctx = *state;
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, VNM_DTYPE_F16), VNM_OK);
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(2, 8), 1e5f, 2e5f);
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(3, 8), 0.5f, 1);
    float *y = tu_host(ctx, vnm_linear(ctx, x, w, NULL));
    for (int i = 0; i < 6; i++) assert_true(isinf(y[i]));
    free(y);
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, VNM_DTYPE_BF16), VNM_OK); /* bf16 has range */
    y = tu_host(ctx, vnm_linear(ctx, x, w, NULL));
    for (int i = 0; i < 6; i++) assert_true(isfinite(y[i]));
    free(y);
}

/* y = act(x) (in[1] NULL) or swiglu(in[0], in[1]) */
static vnm_tensor *apply(vnm_ctx *ctx, int which, vnm_tensor *const *in)
{
    switch (which) {
    case 0: return vnm_gelu(ctx, in[0]);
    case 1: return vnm_silu(ctx, in[0]);
    default: return vnm_swiglu(ctx, in[0], in[1]);
    }
}

/* Output and input gradients of Σ apply(x)·r with products in dt, on inputs h (n each). */
static void run_activation(vnm_ctx *ctx, int which, vnm_dtype dt, float *const *h, int64_t n,
                           float *out, float **grad)
{
    vnm_ctx_reset_step(ctx);
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, dt), VNM_OK);
    int n_in = which == 2 ? 2 : 1;
    vnm_tensor *in[2] = {NULL, NULL};
    for (int i = 0; i < n_in; i++) {
        in[i] = vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(n), "x");
        assert_int_equal(vnm_tensor_from_host(ctx, in[i], h[i]), VNM_OK);
    }
    vnm_tensor *y = apply(ctx, which, in);
    assert_non_null(y);
    assert_non_null(y->node);
    /* a half copy serves backward: the f32 inputs are not read */
    assert_int_equal(y->node->reads, dt == VNM_DTYPE_F32 ? (1u << n_in) - 1 : 0u);
    float r[64];
    for (int i = 0; i < n; i++) r[i] = (float)(i % 5 - 2) / 4.0f;
    vnm_tensor *rt = vnm_tensor_from(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(n), r);
    assert_int_equal(vnm_tensor_to_host(ctx, y, out), VNM_OK);
    assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, vnm_mul(ctx, y, rt), VNM_ALL_DIMS, false)),
                     VNM_OK);
    for (int i = 0; i < n_in; i++)
        assert_int_equal(vnm_tensor_to_host(ctx, in[i]->grad, grad[i]), VNM_OK);
}

/* Activations keep a half copy of their input for backward: the forward is the f32 op's on the
 * exact input, the gradient the f32 op's on the rounded input (and not the exact one's). */
static void test_activations_save_half_inputs(void **state)
{
    vnm_ctx *ctx = *state;
    enum { N = 64 };
    float x[2][N], xr[2][N];
    for (int i = 0; i < N; i++) {
        x[0][i] = 3.0f * sinf(1.3f * (float)i + 0.1f);
        x[1][i] = 2.0f * cosf(0.7f * (float)i);
    }
    for (int d = 0; d < 2; d++)
        for (int which = 0; which < 3; which++) {
            for (int k = 0; k < 2; k++)
                for (int i = 0; i < N; i++) xr[k][i] = round_to(HALVES[d], x[k][i]);
            float out[3][N], g[3][2][N];
            float *hx[2] = {x[0], x[1]}, *hr[2] = {xr[0], xr[1]};
            run_activation(ctx, which, HALVES[d], hx, N, out[0], (float *[]){g[0][0], g[0][1]});
            run_activation(ctx, which, VNM_DTYPE_F32, hx, N, out[1], (float *[]){g[1][0], g[1][1]});
            run_activation(ctx, which, VNM_DTYPE_F32, hr, N, out[2], (float *[]){g[2][0], g[2][1]});
            assert_memory_equal(out[0], out[1], sizeof out[0]);
            for (int k = 0; k < (which == 2 ? 2 : 1); k++) {
                assert_memory_equal(g[0][k], g[2][k], sizeof g[0][k]);
                if (!memcmp(g[0][k], g[1][k], sizeof g[0][k]))
                    fail_msg("activation %d: the gradient ignores the rounding", which);
            }
        }
}

static void test_bad_matmul_dtype(void **state)
{
    vnm_ctx *ctx = *state;
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, VNM_DTYPE_I32), VNM_ERR_INPUT);
    tu_assert_error(ctx, "matmul dtype must be f32, bf16 or f16");
    assert_int_equal(vnm_ctx_matmul_dtype(ctx), VNM_DTYPE_F32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_linear_half_products, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_half_products, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_frozen_weight_of_matmul_dtype_used_as_is, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_f16_overflow_reaches_the_output, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_activations_save_half_inputs, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bad_matmul_dtype, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("mixed_precision", tests, NULL, NULL);
}
