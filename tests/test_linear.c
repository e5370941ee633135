/* tests/test_linear.c — linear and batched matmul: forward against a naive double reference,
 * finite-difference gradients, shape errors. */
#include <math.h>
#include <stdlib.h>

#include "autograd/backend.h"
#include "test_util.h"

static void ref_linear(const float *x, const float *w, const float *b, double *y, int64_t T,
                       int64_t I, int64_t O)
{
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < O; o++) {
            double acc = b ? b[o] : 0.0;
            for (int64_t i = 0; i < I; i++) acc += (double)x[t * I + i] * w[o * I + i];
            y[t * O + o] = acc;
        }
}

static void check_linear_forward(vnm_ctx *ctx, int ndim, const int64_t *xs, int64_t O, bool bias)
{
    int64_t I = xs[ndim - 1];
    vnm_tensor *x = tu_param(ctx, ndim, xs, -1, 1);
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    vnm_tensor *b = bias ? tu_param(ctx, 1, VNM_SHAPE(O), -1, 1) : NULL;
    vnm_tensor *y = vnm_linear(ctx, x, w, b);
    assert_non_null(y);
    assert_int_equal(y->ndim, ndim);
    assert_int_equal(y->shape[ndim - 1], O);
    int64_t T = vnm_numel(x) / I;
    float *hx = tu_host(ctx, x), *hw = tu_host(ctx, w), *hb = bias ? tu_host(ctx, b) : NULL;
    float *hy = tu_host(ctx, y);
    double *ref = malloc((size_t)(T * O) * sizeof *ref);
    ref_linear(hx, hw, hb, ref, T, I, O);
    tu_assert_close(hy, ref, T * O, 1e-5, 1e-5, "linear forward");
    free(hx);
    free(hw);
    free(hb);
    free(hy);
    free(ref);
}

static void test_linear_forward_2d(void **state)
{
    check_linear_forward(*state, 2, VNM_SHAPE(7, 13), 5, true);
}

static void test_linear_forward_3d_no_bias(void **state)
{
    check_linear_forward(*state, 3, VNM_SHAPE(2, 3, 11), 9, false);
}

static void test_linear_forward_4d(void **state)
{
    check_linear_forward(*state, 4, VNM_SHAPE(2, 2, 3, 8), 4, true);
}

static vnm_tensor *f_linear(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_linear(ctx, in[0], in[1], in[2]);
}

static void test_linear_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[3] = {tu_param(ctx, 3, VNM_SHAPE(2, 3, 6), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(4, 6), -1, 1),
                         tu_param(ctx, 1, VNM_SHAPE(4), -1, 1)};
    tu_gradcheck(ctx, f_linear, 3, in, NULL);
}

static void test_linear_gradcheck_no_bias(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[3] = {tu_param(ctx, 2, VNM_SHAPE(5, 3), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(7, 3), -1, 1), NULL};
    tu_gradcheck(ctx, f_linear, 3, in, NULL);
}

static vnm_tensor *f_linear_transposed_input(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_linear(ctx, vnm_transpose(ctx, in[0], 0, 1), in[1], NULL);
}

static void test_linear_gradcheck_strided_input(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[2] = {tu_param(ctx, 2, VNM_SHAPE(4, 5), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1)};
    tu_gradcheck(ctx, f_linear_transposed_input, 2, in, NULL);
}

static void test_linear_weight_used_twice_accumulates(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1);
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(4, 4), -1, 1);
    vnm_tensor *y = vnm_linear(ctx, vnm_linear(ctx, x, w, NULL), w, NULL);
    assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, y, VNM_ALL_DIMS, false)), VNM_OK);
    /* reference: d/dW Σ (x Wᵀ) Wᵀ = 1ᵀ·(xWᵀ) + (1·W)ᵀ·x, in double */
    float *hx = tu_host(ctx, x), *hw = tu_host(ctx, w);
    double h[3][4], want[16] = {0};
    for (int t = 0; t < 3; t++)
        for (int o = 0; o < 4; o++) {
            h[t][o] = 0;
            for (int i = 0; i < 4; i++) h[t][o] += (double)hx[t * 4 + i] * hw[o * 4 + i];
        }
    for (int o = 0; o < 4; o++)
        for (int i = 0; i < 4; i++) {
            double colsum = 0; /* Σ_o' W[o', o] for the first use's output grad */
            for (int k = 0; k < 4; k++) colsum += hw[k * 4 + o];
            for (int t = 0; t < 3; t++) want[o * 4 + i] += h[t][i] + colsum * hx[t * 4 + i];
        }
    float *g = tu_host(ctx, w->grad);
    tu_assert_close(g, want, 16, 1e-4, 1e-4, "shared weight grad");
    free(hx);
    free(hw);
    free(g);
}

static void test_linear_shape_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1);
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(5, 6), -1, 1);
    assert_null(vnm_linear(ctx, x, w, NULL));
    tu_assert_error(ctx, "expects 6");
    vnm_tensor *w2 = tu_param(ctx, 2, VNM_SHAPE(5, 4), -1, 1);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(4), -1, 1);
    assert_null(vnm_linear(ctx, x, w2, b));
    tu_assert_error(ctx, "bias");
    vnm_tensor *w3 = tu_param(ctx, 1, VNM_SHAPE(4), -1, 1);
    assert_null(vnm_linear(ctx, x, w3, NULL));
    tu_assert_error(ctx, "weight must have 2 dims");
    assert_null(vnm_linear(ctx, NULL, w2, NULL)); /* NULL propagates without a new message */
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}

static void ref_matmul(const float *a, const float *b, double *y, int64_t batch, int64_t M,
                       int64_t K, int64_t N, bool shared)
{
    for (int64_t p = 0; p < batch; p++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double acc = 0;
                const float *bp = b + (shared ? 0 : p * K * N);
                for (int64_t k = 0; k < K; k++) acc += (double)a[p * M * K + m * K + k] * bp[k * N + n];
                y[p * M * N + m * N + n] = acc;
            }
}

static void check_matmul(vnm_ctx *ctx, int ndim, const int64_t *as, const int64_t *bs, int bdim)
{
    vnm_tensor *a = tu_param(ctx, ndim, as, -1, 1), *b = tu_param(ctx, bdim, bs, -1, 1);
    vnm_tensor *y = vnm_matmul(ctx, a, b);
    assert_non_null(y);
    int64_t M = as[ndim - 2], K = as[ndim - 1], N = bs[bdim - 1];
    int64_t batch = vnm_numel(a) / (M * K);
    float *ha = tu_host(ctx, a), *hb = tu_host(ctx, b), *hy = tu_host(ctx, y);
    double *ref = malloc((size_t)(batch * M * N) * sizeof *ref);
    ref_matmul(ha, hb, ref, batch, M, K, N, bdim == 2);
    tu_assert_close(hy, ref, batch * M * N, 1e-5, 1e-5, "matmul forward");
    free(ha);
    free(hb);
    free(hy);
    free(ref);
}

static void test_matmul_forward_2d(void **state)
{
    check_matmul(*state, 2, VNM_SHAPE(5, 7), VNM_SHAPE(7, 3), 2);
}

static void test_matmul_forward_batched(void **state)
{
    check_matmul(*state, 4, VNM_SHAPE(2, 3, 4, 5), VNM_SHAPE(2, 3, 5, 6), 4);
}

static void test_matmul_forward_shared_b(void **state)
{
    check_matmul(*state, 3, VNM_SHAPE(3, 4, 5), VNM_SHAPE(5, 2), 2);
}

static vnm_tensor *f_matmul(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_matmul(ctx, in[0], in[1]);
}

static void test_matmul_gradcheck_batched(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[2] = {tu_param(ctx, 3, VNM_SHAPE(2, 3, 4), -1, 1),
                         tu_param(ctx, 3, VNM_SHAPE(2, 4, 5), -1, 1)};
    tu_gradcheck(ctx, f_matmul, 2, in, NULL);
}

static void test_matmul_gradcheck_shared_b(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[2] = {tu_param(ctx, 4, VNM_SHAPE(2, 2, 3, 4), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(4, 3), -1, 1)};
    tu_gradcheck(ctx, f_matmul, 2, in, NULL);
}

static vnm_tensor *f_matmul_bt(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* q·kᵀ as in attention: b is a transposed view */
    return vnm_matmul(ctx, in[0], vnm_transpose(ctx, in[1], -1, -2));
}

static void test_matmul_gradcheck_transposed_view(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[2] = {tu_param(ctx, 3, VNM_SHAPE(2, 3, 4), -1, 1),
                         tu_param(ctx, 3, VNM_SHAPE(2, 5, 4), -1, 1)};
    tu_gradcheck(ctx, f_matmul_bt, 2, in, NULL);
}

static void test_matmul_shape_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *a = tu_param(ctx, 3, VNM_SHAPE(2, 3, 4), -1, 1);
    vnm_tensor *b = tu_param(ctx, 3, VNM_SHAPE(2, 5, 6), -1, 1);
    assert_null(vnm_matmul(ctx, a, b));
    tu_assert_error(ctx, "cannot multiply");
    vnm_tensor *c = tu_param(ctx, 3, VNM_SHAPE(3, 4, 6), -1, 1);
    assert_null(vnm_matmul(ctx, a, c));
    tu_assert_error(ctx, "equal batch dims");
    vnm_tensor *d = tu_param(ctx, 1, VNM_SHAPE(4), -1, 1);
    assert_null(vnm_matmul(ctx, a, d));
    tu_assert_error(ctx, "b must have 2 to 4 dims");
}


/* beta = 0 means C is not read (the CPU kernel clears it itself, faster than OpenBLAS does): NaN
 * in C does not leak into the product, and a C with a row stride wider than N keeps its gaps. */
static void test_gemm_beta_zero_ignores_c(void **state)
{
    (void)state;
    const vnm_backend *be = vnm_backend_cpu();
    enum { M = 300, N = 70, K = 33, LDC = 75 };
    float *a = malloc(M * K * sizeof *a), *b = malloc(K * N * sizeof *b);
    float *c = malloc(M * LDC * sizeof *c);
    for (int i = 0; i < M * K; i++) a[i] = sinf(0.1f * (float)i);
    for (int i = 0; i < K * N; i++) b[i] = cosf(0.2f * (float)i);
    for (int i = 0; i < M * LDC; i++) c[i] = NAN;
    be->gemm(false, false, M, N, K, 1.0f, a, K, b, N, 0.0f, c, LDC);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < LDC; j++) {
            if (j >= N) {
                assert_true(isnan(c[i * LDC + j]));
                continue;
            }
            double want = 0;
            for (int k = 0; k < K; k++) want += (double)a[i * K + k] * b[k * N + j];
            assert_true(fabs(c[i * LDC + j] - want) <= 1e-5 * (1 + fabs(want)));
        }
    for (int i = 0; i < M * LDC; i++) c[i] = NAN; /* the batched entry, 3 matrices of M/3 rows */
    be->gemm_batched(false, false, M / 3, N, K, 1.0f, a, K, (M / 3) * K, b, N, 0, 0.0f, c, LDC,
                     (M / 3) * LDC, 3);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) assert_true(isfinite(c[i * LDC + j]));
    free(a);
    free(b);
    free(c);
}

/* A frozen bf16/f16 weight computes exactly what f32 weights of the same values compute (forward
 * and dX), the step arena holds at most one f32 copy of it at a time, and a trainable one is
 * refused. */
static void test_linear_frozen_half_weight(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t T = 3, O = 256, I = 512;
    const vnm_dtype dts[2] = {VNM_DTYPE_BF16, VNM_DTYPE_F16};
    for (int k = 0; k < 2; k++) {
        vnm_tensor *w32 = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
        vnm_tensor *wh = vnm_buffer_new(ctx, dts[k], 2, VNM_SHAPE(O, I), "w.half");
        vnm_tensor *c = vnm_to_dtype(ctx, w32, dts[k]);
        void *bits = malloc((size_t)(O * I) * 2);
        assert_int_equal(vnm_tensor_to_host(ctx, c, bits), VNM_OK);
        assert_int_equal(vnm_tensor_from_host(ctx, wh, bits), VNM_OK);
        free(bits);
        vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(O), -1, 1);
        vnm_tensor *x1 = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
        vnm_tensor *x2 = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
        float *xh = tu_host(ctx, x1);
        assert_int_equal(vnm_tensor_from_host(ctx, x2, xh), VNM_OK);
        size_t before = vnm_ctx_step_bytes(ctx);
        vnm_tensor *yh = vnm_linear(ctx, x1, wh, b);
        assert_non_null(yh);
        assert_int_equal(vnm_backward_seed(ctx, yh, vnm_scale(ctx, yh, 1.0f)), VNM_OK);
        /* forward and backward each widen W, but the first copy is given back before the
         * second is made: the step's peak grew by at most one [O, I] f32 copy (and the small
         * outputs), not two */
        size_t copy = (size_t)(O * I) * sizeof(float);
        assert_true(vnm_ctx_step_bytes(ctx) - before < copy * 3 / 2);
        float *a = tu_host(ctx, yh), *ga = tu_host(ctx, x1->grad);
        vnm_ctx_reset_step(ctx); /* the second product on a tape of its own */
        vnm_tensor *wr = vnm_to_dtype(ctx, wh, VNM_DTYPE_F32); /* the same values in f32 */
        vnm_tensor *yr = vnm_linear(ctx, x2, wr, b);
        assert_int_equal(vnm_backward_seed(ctx, yr, vnm_scale(ctx, yr, 1.0f)), VNM_OK);
        float *r = tu_host(ctx, yr), *gr = tu_host(ctx, x2->grad);
        assert_memory_equal(a, r, (size_t)(T * O) * sizeof *a);
        assert_memory_equal(ga, gr, (size_t)(T * I) * sizeof *ga);
        assert_null(wh->grad);
        free(a), free(r), free(ga), free(gr), free(xh);
        wh->requires_grad = true;
        assert_null(vnm_linear(ctx, x1, wh, b));
        tu_assert_error(ctx, "must be frozen");
        vnm_ctx_reset_step(ctx);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_beta_zero_ignores_c),
        cmocka_unit_test_setup_teardown(test_linear_forward_2d, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_forward_3d_no_bias, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_forward_4d, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_gradcheck_no_bias, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_gradcheck_strided_input, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_weight_used_twice_accumulates, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_shape_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_frozen_half_weight, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_forward_2d, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_forward_batched, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_forward_shared_b, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_gradcheck_batched, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_gradcheck_shared_b, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_gradcheck_transposed_view, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_shape_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("linear", tests, NULL, NULL);
}
