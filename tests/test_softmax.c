/* tests/test_softmax.c — softmax and log-softmax over the last dim: forward against a double
 * reference, stability at ±1000, finite-difference gradients, backward against the explicit
 * Jacobian on a threaded size, errors. */
#include <math.h>
#include <stdlib.h>

#include "autograd/cpu/simd.h"
#include "test_util.h"

/* Row-wise softmax (or log-softmax) of x[rows, D] in double. */
static void ref_softmax(const float *x, double *y, int64_t rows, int64_t D, bool take_log)
{
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * D;
        double m = -INFINITY, s = 0.0;
        for (int64_t j = 0; j < D; j++) m = fmax(m, xr[j]);
        for (int64_t j = 0; j < D; j++) s += exp(xr[j] - m);
        for (int64_t j = 0; j < D; j++)
            y[i * D + j] = take_log ? xr[j] - m - log(s) : exp(xr[j] - m) / s;
    }
}

static vnm_tensor *apply(vnm_ctx *ctx, vnm_tensor *x, bool take_log)
{
    return take_log ? vnm_log_softmax(ctx, x) : vnm_softmax(ctx, x);
}

/* Forward on x (any layout) against ref_softmax. */
static void check_softmax(vnm_ctx *ctx, vnm_tensor *x, bool take_log)
{
    vnm_tensor *y = apply(ctx, x, take_log);
    assert_non_null(y);
    assert_true(vnm_same_shape(x, y));
    int64_t D = x->shape[x->ndim - 1], n = vnm_numel(x);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double *ref = malloc((size_t)n * sizeof *ref);
    ref_softmax(hx, ref, n / D, D, take_log);
    tu_assert_close(hy, ref, n, 1e-6, 1e-5, take_log ? "log_softmax" : "softmax");
    free(hx);
    free(hy);
    free(ref);
}

/* 1-D, odd sizes, a size-1 last dim, 4-D, and one large enough for the threaded path. */
static void check_softmax_shapes(vnm_ctx *ctx, bool take_log)
{
    const int64_t shapes[][4] = {{23}, {7, 13}, {5, 1}, {2, 3, 2, 9}, {130, 150}};
    const int ndims[] = {1, 2, 2, 4, 2};
    for (int s = 0; s < 5; s++)
        check_softmax(ctx, tu_param(ctx, ndims[s], shapes[s], -5, 5), take_log);
}

static void test_softmax_forward(void **state) { check_softmax_shapes(*state, false); }

static void test_log_softmax_forward(void **state) { check_softmax_shapes(*state, true); }

static void test_softmax_forward_transposed_view(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 3, VNM_SHAPE(2, 9, 5), -5, 5);
    vnm_tensor *xt = vnm_transpose(ctx, x, 1, 2); /* [2, 5, 9], strided */
    assert_false(vnm_is_contiguous(xt));
    check_softmax(ctx, xt, false);
    check_softmax(ctx, xt, true);
}

/* Inputs of magnitude 1000: exp would overflow without the max shift. Outputs match the double
 * reference, softmax rows sum to 1, and the gradients are finite. */
static void test_softmax_large_inputs(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t D = 4;
    const float hx[] = {1000, 999, -1000, 0,  -1000, -1000, -1000, -1000,
                        1000, 1000, 1000, 1000, -1000, -999, -998, 1000,
                        500,  -500, 1e-3f, 800};
    const int64_t rows = sizeof hx / sizeof hx[0] / D;
    for (int take_log = 0; take_log < 2; take_log++) {
        vnm_ctx_reset_step(ctx);
        vnm_tensor *x = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(rows, D), "x");
        assert_int_equal(vnm_tensor_from_host(ctx, x, hx), VNM_OK);
        check_softmax(ctx, x, take_log);
        vnm_tensor *y = apply(ctx, x, take_log);
        float *hy = tu_host(ctx, y);
        for (int64_t i = 0; i < rows && !take_log; i++) {
            double s = 0.0;
            for (int64_t j = 0; j < D; j++) s += hy[i * D + j];
            assert_float_equal(s, 1.0, 1e-6);
        }
        vnm_tensor *seed = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(rows, D));
        assert_int_equal(vnm_rng_uniform(ctx, seed, -1, 1), VNM_OK);
        assert_int_equal(vnm_backward_seed(ctx, y, seed), VNM_OK);
        float *g = tu_host(ctx, x->grad);
        for (int64_t i = 0; i < rows * D; i++) assert_true(isfinite(hy[i]) && isfinite(g[i]));
        free(hy);
        free(g);
    }
}

static vnm_tensor *f_softmax(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_softmax(ctx, in[0]);
}

static vnm_tensor *f_log_softmax(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_log_softmax(ctx, in[0]);
}

static void test_softmax_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 3, VNM_SHAPE(3, 2, 7), -2, 2)};
    tu_gradcheck(ctx, f_softmax, 1, in, NULL);
}

static void test_log_softmax_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 3, VNM_SHAPE(3, 2, 7), -2, 2)};
    tu_gradcheck(ctx, f_log_softmax, 1, in, NULL);
}

/* softmax(xᵀ) + log_softmax(xᵀ): gradients flow back through the view. */
static vnm_tensor *f_both_transposed(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    vnm_tensor *xt = vnm_transpose(ctx, in[0], 0, 1);
    return vnm_add(ctx, vnm_softmax(ctx, xt), vnm_log_softmax(ctx, xt));
}

static void test_softmax_gradcheck_transposed_view(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(6, 5), -2, 2)};
    tu_gradcheck(ctx, f_both_transposed, 1, in, NULL);
}

/* softmax(x) + log_softmax(x) + x, the x term recorded last: its backward runs first, so both
 * softmax backward passes must add (+=) into a non-zero gradient. */
static vnm_tensor *f_accumulates(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    vnm_tensor *x = in[0];
    vnm_tensor *both = vnm_add(ctx, vnm_softmax(ctx, x), vnm_log_softmax(ctx, x));
    return vnm_add(ctx, both, x);
}

static void test_softmax_gradcheck_accumulates(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(5, 6), -2, 2)};
    tu_gradcheck(ctx, f_accumulates, 1, in, NULL);
}

/* Backward on a threaded size against the explicit Jacobian of the double reference:
 * softmax ∂y_k/∂x_j = p_k(δ_kj - p_j), log-softmax ∂y_k/∂x_j = δ_kj - p_j. */
static void check_softmax_backward_large(vnm_ctx *ctx, bool take_log)
{
    const int64_t rows = 200, D = 101;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(rows, D), -5, 5);
    vnm_tensor *dy = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(rows, D));
    assert_int_equal(vnm_rng_uniform(ctx, dy, -1, 1), VNM_OK);
    vnm_tensor *y = apply(ctx, x, take_log);
    assert_int_equal(vnm_backward_seed(ctx, y, dy), VNM_OK);
    float *hx = tu_host(ctx, x), *hdy = tu_host(ctx, dy), *g = tu_host(ctx, x->grad);
    double *p = malloc((size_t)(rows * D) * sizeof *p);
    double *want = malloc((size_t)(rows * D) * sizeof *want);
    ref_softmax(hx, p, rows, D, false);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < D; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < D; k++) {
                double pk = p[i * D + k], pj = p[i * D + j];
                acc += hdy[i * D + k] * (take_log ? (k == j) - pj : pk * ((k == j) - pj));
            }
            want[i * D + j] = acc;
        }
    tu_assert_close(g, want, rows * D, 1e-5, 1e-4, take_log ? "log_softmax dx" : "softmax dx");
    free(hx);
    free(hdy);
    free(g);
    free(p);
    free(want);
}

static void test_softmax_backward_large(void **state)
{
    check_softmax_backward_large(*state, false);
}

static void test_log_softmax_backward_large(void **state)
{
    check_softmax_backward_large(*state, true);
}

static void test_softmax_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *xi = vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(2, 3));
    assert_null(vnm_softmax(ctx, xi));
    tu_assert_error(ctx, "softmax: input must be f32");
    assert_null(vnm_log_softmax(ctx, xi));
    tu_assert_error(ctx, "log_softmax: input must be f32");
    vnm_tensor *scalar = vnm_tensor_new(ctx, VNM_DTYPE_F32, 0, NULL);
    assert_non_null(scalar);
    assert_null(vnm_softmax(ctx, scalar));
    tu_assert_error(ctx, "softmax: input must have 1 to 4 dims");
    /* NULL inputs propagate without a new message */
    assert_null(vnm_softmax(ctx, NULL));
    assert_null(vnm_log_softmax(ctx, NULL));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}


/* The AVX2 row (the default where the CPU has it) and the portable row, on every row length from
 * 1 to 40 (whole vectors, partial last vectors), the shapes above and inputs of magnitude 1000. */
static void test_softmax_both_kernels(void **state)
{
    vnm_ctx *ctx = *state;
    for (int portable = 0; portable <= 1; portable++) {
        vnm_cpu_force_portable(portable);
        for (int64_t D = 1; D <= 40; D++)
            for (int take_log = 0; take_log <= 1; take_log++)
                check_softmax(ctx, tu_param(ctx, 2, VNM_SHAPE(3, D), -8, 8), take_log);
        check_softmax_shapes(ctx, false);
        check_softmax_shapes(ctx, true);
        test_softmax_large_inputs(state);
    }
    vnm_cpu_force_portable(false);
}

static int reset_kernels(void **state)
{
    vnm_cpu_force_portable(false);
    return tu_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_softmax_both_kernels, tu_setup, reset_kernels),
        cmocka_unit_test_setup_teardown(test_softmax_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_log_softmax_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_forward_transposed_view, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_large_inputs, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_log_softmax_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_gradcheck_transposed_view, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_gradcheck_accumulates, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_backward_large, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_log_softmax_backward_large, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_softmax_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("softmax", tests, NULL, NULL);
}
