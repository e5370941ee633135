/* tests/test_norm.c — LayerNorm (torch.nn.functional.layer_norm over the last dim) and RMSNorm
 * (Hugging Face LlamaRMSNorm): forward against double references, finite-difference gradients for
 * every optional-argument combination, backward against the explicit Jacobian on a threaded size,
 * independence from the thread count, degenerate rows, argument errors. */
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/cpu/simd.h"
#include "test_util.h"

static const float LN_EPS = 1e-5f, RMS_EPS = 1e-6f;

/* Row statistics in double: mean (0 when not centred) and 1/sqrt(var + eps). */
static void ref_row_stats(const float *x, int64_t D, bool center, double eps, double *m,
                          double *r)
{
    double s = 0.0, ss = 0.0;
    for (int64_t j = 0; j < D; j++) s += x[j];
    *m = center ? s / (double)D : 0.0;
    for (int64_t j = 0; j < D; j++) ss += (x[j] - *m) * (x[j] - *m);
    *r = 1.0 / sqrt(ss / (double)D + eps);
}

/* y = (x - mean)·r·w + b; center false, b NULL: LlamaRMSNorm. */
static void ref_norm(const float *x, const float *w, const float *b, double *y, int64_t rows,
                     int64_t D, bool center, double eps)
{
    for (int64_t i = 0; i < rows; i++) {
        double m, r;
        ref_row_stats(x + i * D, D, center, eps, &m, &r);
        for (int64_t j = 0; j < D; j++)
            y[i * D + j] = (x[i * D + j] - m) * r * (w ? w[j] : 1.0) + (b ? b[j] : 0.0);
    }
}

/* Backward through the explicit Jacobian of x̂ = (x - mean)·r:
 * ∂x̂_k/∂x_j = r·(δ_kj - [center]/D - x̂_k·x̂_j/D). dx, dw, db [rows·D, D, D] are overwritten. */
static void ref_norm_backward(const float *x, const float *w, const float *dy, int64_t rows,
                              int64_t D, bool center, double eps, double *dx, double *dw,
                              double *db)
{
    double *xh = malloc((size_t)D * sizeof *xh);
    for (int64_t j = 0; j < D; j++) dw[j] = db[j] = 0.0;
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * D, *dyr = dy + i * D;
        double m, r;
        ref_row_stats(xr, D, center, eps, &m, &r);
        for (int64_t k = 0; k < D; k++) {
            xh[k] = (xr[k] - m) * r;
            dw[k] += dyr[k] * xh[k];
            db[k] += dyr[k];
        }
        for (int64_t j = 0; j < D; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < D; k++) {
                double jac = r * ((k == j) - (center ? 1.0 / (double)D : 0.0) -
                                  xh[k] * xh[j] / (double)D);
                acc += dyr[k] * (w ? w[k] : 1.0) * jac;
            }
            dx[i * D + j] = acc;
        }
    }
    free(xh);
}

/* Forward of layernorm (center) or rmsnorm on x (any layout) against ref_norm. */
static void check_norm(vnm_ctx *ctx, bool center, vnm_tensor *x, vnm_tensor *w, vnm_tensor *b)
{
    vnm_tensor *y = center ? vnm_layernorm(ctx, x, w, b, LN_EPS) : vnm_rmsnorm(ctx, x, w, RMS_EPS);
    assert_non_null(y);
    assert_true(vnm_same_shape(x, y));
    int64_t D = x->shape[x->ndim - 1], n = vnm_numel(x);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    float *hw = w ? tu_host(ctx, w) : NULL, *hb = b ? tu_host(ctx, b) : NULL;
    double *ref = malloc((size_t)n * sizeof *ref);
    ref_norm(hx, hw, hb, ref, n / D, D, center, center ? LN_EPS : RMS_EPS);
    tu_assert_close(hy, ref, n, 1e-5, 1e-5, center ? "layernorm" : "rmsnorm");
    free(hx);
    free(hy);
    free(hw);
    free(hb);
    free(ref);
}

/* Several shapes: 1-D, odd sizes, 4-D, and one large enough for the threaded path. x is offset
 * from 0 so centring matters. */
static void check_norm_shapes(vnm_ctx *ctx, bool center)
{
    const int64_t shapes[][4] = {{19}, {7, 13}, {2, 3, 2, 10}, {150, 130}};
    const int ndims[] = {1, 2, 4, 2};
    for (int s = 0; s < 4; s++) {
        int64_t D = shapes[s][ndims[s] - 1];
        vnm_tensor *x = tu_param(ctx, ndims[s], shapes[s], -1, 3);
        vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(D), 0.5f, 1.5f);
        vnm_tensor *b = center ? tu_param(ctx, 1, VNM_SHAPE(D), -1, 1) : NULL;
        check_norm(ctx, center, x, w, b);
    }
}

static void test_layernorm_forward(void **state) { check_norm_shapes(*state, true); }

static void test_rmsnorm_forward(void **state) { check_norm_shapes(*state, false); }

static void test_norm_forward_optional_args(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(6, 11), -1, 3);
    vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(11), 0.5f, 1.5f);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(11), -1, 1);
    check_norm(ctx, true, x, NULL, NULL);
    check_norm(ctx, true, x, w, NULL);
    check_norm(ctx, true, x, NULL, b);
    check_norm(ctx, false, x, NULL, NULL);
}

static void test_norm_forward_transposed_view(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 3, VNM_SHAPE(2, 9, 5), -1, 3);
    vnm_tensor *xt = vnm_transpose(ctx, x, 1, 2); /* [2, 5, 9], strided */
    assert_false(vnm_is_contiguous(xt));
    vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(9), 0.5f, 1.5f);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(9), -1, 1);
    check_norm(ctx, true, xt, w, b);
    check_norm(ctx, false, xt, w, NULL);
}

/* A constant row has zero variance: layernorm gives b exactly (eps keeps rstd finite), rmsnorm of
 * a zero row gives 0; gradients stay finite. */
static void test_norm_degenerate_rows(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t D = 8;
    vnm_tensor *x = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(2, D), "x");
    float hx[16];
    for (int j = 0; j < 16; j++) hx[j] = j < 8 ? 2.5f : 0.0f;
    assert_int_equal(vnm_tensor_from_host(ctx, x, hx), VNM_OK);
    vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(D), 0.5f, 1.5f);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(D), -1, 1);
    vnm_tensor *ln = vnm_layernorm(ctx, x, w, b, LN_EPS), *rms = vnm_rmsnorm(ctx, x, w, RMS_EPS);
    assert_non_null(ln);
    assert_non_null(rms);
    float *hl = tu_host(ctx, ln), *hr = tu_host(ctx, rms), *hb = tu_host(ctx, b);
    for (int j = 0; j < 16; j++) assert_float_equal(hl[j], hb[j % D], 1e-6);
    for (int j = 8; j < 16; j++) assert_float_equal(hr[j], 0.0f, 0.0f);
    vnm_tensor *loss = vnm_add(ctx, vnm_sum(ctx, vnm_mul(ctx, ln, ln), VNM_ALL_DIMS, false),
                               vnm_sum(ctx, rms, VNM_ALL_DIMS, false));
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    float *gx = tu_host(ctx, x->grad), *gw = tu_host(ctx, w->grad);
    for (int j = 0; j < 16; j++) assert_true(isfinite(gx[j]));
    for (int j = 0; j < D; j++) assert_true(isfinite(gw[j]));
    free(hl);
    free(hr);
    free(hb);
    free(gx);
    free(gw);
}

static vnm_tensor *f_layernorm(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_layernorm(ctx, in[0], in[1], in[2], LN_EPS);
}

static vnm_tensor *f_rmsnorm(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_rmsnorm(ctx, in[0], in[1], RMS_EPS);
}

static void test_layernorm_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 3, VNM_SHAPE(3, 2, 7), -1, 1);
    vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(7), -1, 1);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(7), -1, 1);
    for (int combo = 0; combo < 4; combo++) { /* with and without w and b */
        vnm_tensor *in[3] = {x, combo & 1 ? w : NULL, combo & 2 ? b : NULL};
        tu_gradcheck(ctx, f_layernorm, 3, in, NULL);
    }
}

static void test_rmsnorm_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[2] = {tu_param(ctx, 3, VNM_SHAPE(3, 2, 7), -1, 1),
                         tu_param(ctx, 1, VNM_SHAPE(7), -1, 1)};
    tu_gradcheck(ctx, f_rmsnorm, 2, in, NULL);
    in[1] = NULL;
    tu_gradcheck(ctx, f_rmsnorm, 2, in, NULL);
}

/* Both norms read x through a transposed view (each op makes its own contiguous copy). */
static vnm_tensor *f_norms_transposed(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    vnm_tensor *xt = vnm_transpose(ctx, in[0], 0, 1);
    return vnm_add(ctx, vnm_layernorm(ctx, xt, in[1], in[2], LN_EPS),
                   vnm_rmsnorm(ctx, xt, in[1], RMS_EPS));
}

static void test_norm_gradcheck_transposed_view(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[3] = {tu_param(ctx, 2, VNM_SHAPE(6, 4), -1, 1), /* used as [4, 6] */
                         tu_param(ctx, 1, VNM_SHAPE(6), -1, 1),
                         tu_param(ctx, 1, VNM_SHAPE(6), -1, 1)};
    tu_gradcheck(ctx, f_norms_transposed, 3, in, NULL);
}

/* layernorm(x, w, b) + rmsnorm(x, w) + (x·w + b), the last term recorded last: its backward runs
 * first, so both norms must add (+=) into non-zero dx, dw and db. */
static vnm_tensor *f_norms_accumulate(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    vnm_tensor *x = in[0], *w = in[1], *b = in[2];
    vnm_tensor *ln = vnm_layernorm(ctx, x, w, b, LN_EPS), *rms = vnm_rmsnorm(ctx, x, w, RMS_EPS);
    vnm_tensor *norms = vnm_add(ctx, ln, rms);
    vnm_tensor *affine = vnm_add(ctx, vnm_mul(ctx, x, w), b);
    return vnm_add(ctx, norms, affine);
}

static void test_norm_gradcheck_accumulates(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[3] = {tu_param(ctx, 2, VNM_SHAPE(4, 6), -1, 1),
                         tu_param(ctx, 1, VNM_SHAPE(6), -1, 1),
                         tu_param(ctx, 1, VNM_SHAPE(6), -1, 1)};
    tu_gradcheck(ctx, f_norms_accumulate, 3, in, NULL);
}

/* Forward + backward with seed dy on x[rows, D]; host copies of dx, dw, db (db only for
 * layernorm) in out[0..2]. */
static void run_norm_backward(vnm_ctx *ctx, bool center, vnm_tensor *x, vnm_tensor *w,
                              vnm_tensor *b, vnm_tensor *dy, float *out[3])
{
    vnm_ctx_reset_step(ctx);
    vnm_zero_grad(ctx, (vnm_tensor *[]){x, w, b}, 3);
    vnm_tensor *y = center ? vnm_layernorm(ctx, x, w, b, LN_EPS) : vnm_rmsnorm(ctx, x, w, RMS_EPS);
    assert_int_equal(vnm_backward_seed(ctx, y, dy), VNM_OK);
    out[0] = tu_host(ctx, x->grad);
    out[1] = tu_host(ctx, w->grad);
    out[2] = center ? tu_host(ctx, b->grad) : NULL;
}

enum { BIG_ROWS = 300, BIG_D = 70 }; /* threaded; D is not a multiple of the column block */

static void check_norm_backward_large(vnm_ctx *ctx, bool center)
{
    const int64_t rows = BIG_ROWS, D = BIG_D;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(rows, D), -1, 3);
    vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(D), 0.5f, 1.5f);
    vnm_tensor *b = center ? tu_param(ctx, 1, VNM_SHAPE(D), -1, 1) : NULL;
    vnm_tensor *dy = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(rows, D), "dy");
    assert_int_equal(vnm_rng_uniform(ctx, dy, -1, 1), VNM_OK);
    float *g[3];
    run_norm_backward(ctx, center, x, w, b, dy, g);
    float *hx = tu_host(ctx, x), *hw = tu_host(ctx, w), *hdy = tu_host(ctx, dy);
    double *dx = malloc((size_t)(rows * D) * sizeof *dx), dw[BIG_D], db[BIG_D];
    ref_norm_backward(hx, hw, hdy, rows, D, center, center ? LN_EPS : RMS_EPS, dx, dw, db);
    /* dw and db sum 300 rows of O(1) terms in f32 */
    tu_assert_close(g[0], dx, rows * D, 1e-4, 1e-4, "dx");
    tu_assert_close(g[1], dw, D, 1e-3, 1e-4, "dw");
    if (center) tu_assert_close(g[2], db, D, 1e-3, 1e-4, "db");
    for (int i = 0; i < 3; i++) free(g[i]);
    free(hx);
    free(hw);
    free(hdy);
    free(dx);
}

static void test_layernorm_backward_large(void **state) { check_norm_backward_large(*state, true); }

static void test_rmsnorm_backward_large(void **state) { check_norm_backward_large(*state, false); }

/* The same gradients, bit for bit, with 1 and 3 threads (the dw/db reductions run in a fixed
 * order whatever the thread count). */
static void test_norm_backward_independent_of_threads(void **state)
{
#ifdef _OPENMP
    vnm_ctx *ctx = *state;
    const int64_t rows = BIG_ROWS, D = BIG_D;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(rows, D), -1, 3);
    vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(D), 0.5f, 1.5f);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(D), -1, 1);
    vnm_tensor *dy = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(rows, D), "dy");
    assert_int_equal(vnm_rng_uniform(ctx, dy, -1, 1), VNM_OK);
    int saved = omp_get_max_threads();
    const size_t sizes[3] = {(size_t)(rows * D) * sizeof(float), (size_t)D * sizeof(float),
                             (size_t)D * sizeof(float)};
    for (int center = 0; center < 2; center++) {
        float *one[3], *three[3];
        omp_set_num_threads(1);
        run_norm_backward(ctx, center, x, w, b, dy, one);
        omp_set_num_threads(3);
        run_norm_backward(ctx, center, x, w, b, dy, three);
        for (int i = 0; i < (center ? 3 : 2); i++) assert_memory_equal(one[i], three[i], sizes[i]);
        for (int i = 0; i < 3; i++) {
            free(one[i]);
            free(three[i]);
        }
    }
    omp_set_num_threads(saved);
#else
    skip();
#endif
}

static void test_norm_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1);
    vnm_tensor *w4 = tu_param(ctx, 1, VNM_SHAPE(4), -1, 1);
    vnm_tensor *w5 = tu_param(ctx, 1, VNM_SHAPE(5), -1, 1);
    vnm_tensor *w22 = tu_param(ctx, 2, VNM_SHAPE(2, 2), -1, 1);
    vnm_tensor *xi = vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(3, 4));
    assert_null(vnm_layernorm(ctx, x, w5, NULL, LN_EPS));
    tu_assert_error(ctx, "layernorm: weight [5] f32 must be [4] for input [3, 4] f32");
    assert_null(vnm_layernorm(ctx, x, w4, w5, LN_EPS));
    tu_assert_error(ctx, "layernorm: bias [5] f32 must be [4]");
    assert_null(vnm_layernorm(ctx, x, w22, NULL, LN_EPS));
    tu_assert_error(ctx, "weight [2, 2] f32 must be [4]");
    assert_null(vnm_rmsnorm(ctx, x, w5, RMS_EPS));
    tu_assert_error(ctx, "rmsnorm: weight [5] f32 must be [4]");
    assert_null(vnm_layernorm(ctx, xi, NULL, NULL, LN_EPS));
    tu_assert_error(ctx, "layernorm: input must be f32");
    assert_null(vnm_rmsnorm(ctx, xi, NULL, RMS_EPS));
    tu_assert_error(ctx, "rmsnorm: input must be f32");
    vnm_tensor *wi = vnm_tensor_new(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(4));
    assert_null(vnm_rmsnorm(ctx, x, wi, RMS_EPS));
    tu_assert_error(ctx, "rmsnorm: weight must be f32");
    assert_null(vnm_layernorm(ctx, x, NULL, NULL, -1e-5f));
    tu_assert_error(ctx, "layernorm: eps must be finite and >= 0");
    assert_null(vnm_rmsnorm(ctx, x, NULL, NAN));
    tu_assert_error(ctx, "rmsnorm: eps must be finite and >= 0");
    vnm_tensor *empty = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(3, 0));
    assert_null(vnm_rmsnorm(ctx, empty, NULL, RMS_EPS));
    tu_assert_error(ctx, "empty last dim");
    /* NULL inputs propagate without a new message */
    assert_null(vnm_layernorm(ctx, NULL, w4, NULL, LN_EPS));
    assert_null(vnm_rmsnorm(ctx, NULL, w4, RMS_EPS));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}


/* The AVX2 row kernels (the default where the CPU has them) and the portable ones: each against
 * the references, on rows that are whole vectors (96, the quickstart's) and that are not, and
 * with each other; the weight and bias gradients add the same products in the same order. */
static void norm_run(vnm_ctx *ctx, bool center, vnm_tensor **in, float **out)
{
    vnm_ctx_reset_step(ctx);
    vnm_zero_grad(ctx, in, 3);
    vnm_tensor *y = center ? f_layernorm(ctx, in, NULL) : f_rmsnorm(ctx, in, NULL);
    assert_non_null(y);
    int64_t n = vnm_numel(y);
    float *hr = malloc((size_t)n * sizeof *hr); /* the same weights for both kernels */
    for (int64_t i = 0; i < n; i++) hr[i] = sinf(0.7f * (float)i);
    vnm_tensor *r = vnm_tensor_from(ctx, VNM_DTYPE_F32, y->ndim, y->shape, hr);
    free(hr);
    assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, vnm_mul(ctx, y, r), VNM_ALL_DIMS, false)),
                     VNM_OK);
    out[0] = tu_host(ctx, y);
    out[1] = tu_host(ctx, in[0]->grad);
    out[2] = tu_host(ctx, in[1]->grad);
    out[3] = center ? tu_host(ctx, in[2]->grad) : NULL;
}

static void test_norm_both_kernels(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t dims[] = {96, 13, 8, 40};
    for (int center = 0; center <= 1; center++)
        for (int k = 0; k < 4; k++) {
            int64_t D = dims[k], rows = 150;
            vnm_tensor *in[3] = {tu_param(ctx, 2, VNM_SHAPE(rows, D), -1, 3),
                                 tu_param(ctx, 1, VNM_SHAPE(D), 0.5f, 1.5f),
                                 center ? tu_param(ctx, 1, VNM_SHAPE(D), -1, 1) : NULL};
            float *got[2][4];
            for (int portable = 0; portable <= 1; portable++) {
                vnm_cpu_force_portable(portable);
                check_norm(ctx, center, in[0], in[1], in[2]);
                norm_run(ctx, center, in, got[portable]);
            }
            vnm_cpu_force_portable(false);
            int64_t sizes[4] = {rows * D, rows * D, D, D};
            for (int t = 0; t < (center ? 4 : 3); t++) {
                double *w = malloc((size_t)sizes[t] * sizeof *w);
                for (int64_t i = 0; i < sizes[t]; i++) w[i] = got[1][t][i];
                tu_assert_close(got[0][t], w, sizes[t], 1e-6, 1e-5, "avx2 vs portable norm");
                free(w);
            }
            for (int portable = 0; portable <= 1; portable++)
                for (int t = 0; t < 4; t++) free(got[portable][t]);
        }
    for (int portable = 0; portable <= 1; portable++) { /* the gradients on their own too */
        vnm_cpu_force_portable(portable);
        vnm_tensor *in[3] = {tu_param(ctx, 2, VNM_SHAPE(3, 19), -1, 1),
                             tu_param(ctx, 1, VNM_SHAPE(19), -1, 1),
                             tu_param(ctx, 1, VNM_SHAPE(19), -1, 1)};
        tu_gradcheck(ctx, f_layernorm, 3, in, NULL);
        tu_gradcheck(ctx, f_rmsnorm, 2, in, NULL);
    }
}

static int reset_kernels(void **state)
{
    vnm_cpu_force_portable(false);
    return tu_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_norm_both_kernels, tu_setup, reset_kernels),
        cmocka_unit_test_setup_teardown(test_layernorm_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rmsnorm_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_norm_forward_optional_args, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_norm_forward_transposed_view, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_norm_degenerate_rows, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_layernorm_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rmsnorm_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_norm_gradcheck_transposed_view, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_norm_gradcheck_accumulates, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_layernorm_backward_large, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rmsnorm_backward_large, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_norm_backward_independent_of_threads, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_norm_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("norm", tests, NULL, NULL);
}
