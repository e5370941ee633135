/* tests/test_activation.c — GELU (erf and tanh forms), SiLU and SwiGLU: forward against double
 * references of the PyTorch definitions, finite-difference gradients, extreme inputs, errors. */
#include <math.h>
#include <stdlib.h>

#include "test_util.h"

typedef enum { GELU, GELU_TANH, SILU } act_kind;

static const char *const act_names[] = {"gelu", "gelu_tanh", "silu"};

static double ref_act(act_kind k, double x)
{
    switch (k) {
    case GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case SILU: return x / (1.0 + exp(-x));
    }
    return NAN;
}

/* Derivatives written from the definitions above (not from the kernel's formulas). */
static double ref_act_grad(act_kind k, double x)
{
    switch (k) {
    case GELU: return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
    case GELU_TANH: {
        double u = sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
        double du = sqrt(2.0 / M_PI) * (1.0 + 3.0 * 0.044715 * x * x);
        double sech = 1.0 / cosh(u); /* 0 once cosh overflows, as it should */
        return 0.5 * (1.0 + tanh(u)) + 0.5 * x * sech * sech * du;
    }
    case SILU: {
        double s = 1.0 / (1.0 + exp(-x));
        return s + x * s * (1.0 - s);
    }
    }
    return NAN;
}

static vnm_tensor *apply_act(vnm_ctx *ctx, act_kind k, vnm_tensor *x)
{
    switch (k) {
    case GELU: return vnm_gelu(ctx, x);
    case GELU_TANH: return vnm_gelu_tanh(ctx, x);
    case SILU: return vnm_silu(ctx, x);
    }
    return NULL;
}

/* Forward of act on x (any layout) against the double reference of x's row-major values. */
static void check_act(vnm_ctx *ctx, act_kind k, vnm_tensor *x)
{
    vnm_tensor *y = apply_act(ctx, k, x);
    assert_non_null(y);
    assert_true(vnm_same_shape(x, y));
    int64_t n = vnm_numel(x);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double *ref = malloc((size_t)n * sizeof *ref + 1);
    for (int64_t i = 0; i < n; i++) ref[i] = ref_act(k, hx[i]);
    tu_assert_close(hy, ref, n, 1e-6, 1e-5, act_names[k]);
    free(hx);
    free(hy);
    free(ref);
}

static void check_act_shapes(vnm_ctx *ctx, act_kind k)
{
    check_act(ctx, k, tu_param(ctx, 1, VNM_SHAPE(37), -4, 4));
    check_act(ctx, k, tu_param(ctx, 2, VNM_SHAPE(5, 13), -4, 4));
    check_act(ctx, k, tu_param(ctx, 4, VNM_SHAPE(2, 3, 2, 9), -4, 4));
    check_act(ctx, k, tu_param(ctx, 2, VNM_SHAPE(150, 123), -6, 6)); /* the threaded path */
}

static void test_gelu_forward(void **state) { check_act_shapes(*state, GELU); }

static void test_gelu_tanh_forward(void **state) { check_act_shapes(*state, GELU_TANH); }

static void test_silu_forward(void **state) { check_act_shapes(*state, SILU); }

static void check_swiglu(vnm_ctx *ctx, vnm_tensor *gate, vnm_tensor *up)
{
    vnm_tensor *y = vnm_swiglu(ctx, gate, up);
    assert_non_null(y);
    assert_true(vnm_same_shape(gate, y));
    int64_t n = vnm_numel(gate);
    float *hg = tu_host(ctx, gate), *hu = tu_host(ctx, up), *hy = tu_host(ctx, y);
    double *ref = malloc((size_t)n * sizeof *ref + 1);
    for (int64_t i = 0; i < n; i++) ref[i] = ref_act(SILU, hg[i]) * hu[i];
    tu_assert_close(hy, ref, n, 1e-6, 1e-5, "swiglu");
    free(hg);
    free(hu);
    free(hy);
    free(ref);
}

static void test_swiglu_forward(void **state)
{
    vnm_ctx *ctx = *state;
    check_swiglu(ctx, tu_param(ctx, 1, VNM_SHAPE(11), -4, 4),
                 tu_param(ctx, 1, VNM_SHAPE(11), -2, 2));
    check_swiglu(ctx, tu_param(ctx, 3, VNM_SHAPE(3, 5, 7), -4, 4),
                 tu_param(ctx, 3, VNM_SHAPE(3, 5, 7), -2, 2));
    check_swiglu(ctx, tu_param(ctx, 4, VNM_SHAPE(2, 1, 3, 5), -4, 4),
                 tu_param(ctx, 4, VNM_SHAPE(2, 1, 3, 5), -2, 2));
}

static void test_activation_forward_transposed_view(void **state)
{
    vnm_ctx *ctx = *state;
    for (int k = GELU; k <= SILU; k++) {
        vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(9, 5), -4, 4);
        vnm_tensor *xt = vnm_transpose(ctx, x, 0, 1); /* [5, 9], strided */
        assert_false(vnm_is_contiguous(xt));
        check_act(ctx, (act_kind)k, xt);
    }
    vnm_tensor *g = tu_param(ctx, 3, VNM_SHAPE(2, 7, 3), -4, 4);
    vnm_tensor *u = tu_param(ctx, 3, VNM_SHAPE(2, 3, 7), -2, 2);
    check_swiglu(ctx, vnm_transpose(ctx, g, 1, 2), u);
}

/* Inputs where exp/erf/tanh saturate: outputs and gradients must stay finite and exact. */
static void test_activation_extreme_inputs(void **state)
{
    vnm_ctx *ctx = *state;
    const float xs[] = {-1000, -100, -30, -10, -1e-3f, 0, 1e-3f, 10, 30, 100, 1000};
    const int64_t n = sizeof xs / sizeof xs[0];
    for (int k = GELU; k <= SILU; k++) {
        vnm_ctx_reset_step(ctx);
        vnm_tensor *x = vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(n), "x");
        assert_int_equal(vnm_tensor_from_host(ctx, x, xs), VNM_OK);
        vnm_tensor *y = apply_act(ctx, (act_kind)k, x);
        assert_non_null(y);
        assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, y, VNM_ALL_DIMS, false)), VNM_OK);
        float *hy = tu_host(ctx, y), *hg = tu_host(ctx, x->grad);
        double want[sizeof xs / sizeof xs[0]], dwant[sizeof xs / sizeof xs[0]];
        for (int64_t i = 0; i < n; i++) {
            assert_true(isfinite(hy[i]) && isfinite(hg[i]));
            want[i] = ref_act((act_kind)k, xs[i]);
            dwant[i] = ref_act_grad((act_kind)k, xs[i]);
        }
        tu_assert_close(hy, want, n, 1e-6, 1e-6, act_names[k]);
        tu_assert_close(hg, dwant, n, 1e-6, 1e-5, act_names[k]);
        free(hy);
        free(hg);
    }
}

static vnm_tensor *f_act(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    return apply_act(ctx, *(const act_kind *)user, in[0]);
}

static void gradcheck_act(vnm_ctx *ctx, act_kind k)
{
    vnm_tensor *in[1] = {tu_param(ctx, 3, VNM_SHAPE(2, 3, 7), -3, 3)};
    tu_gradcheck(ctx, f_act, 1, in, &k);
}

static void test_gelu_gradcheck(void **state) { gradcheck_act(*state, GELU); }

static void test_gelu_tanh_gradcheck(void **state) { gradcheck_act(*state, GELU_TANH); }

static void test_silu_gradcheck(void **state) { gradcheck_act(*state, SILU); }

/* gelu(x) + gelu_tanh(x) + silu(x) + x. The x term is recorded last, so its backward runs first
 * and every activation's backward must add (+=) into an already non-zero gradient. */
static vnm_tensor *f_act_accumulates(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    vnm_tensor *x = in[0];
    vnm_tensor *a = vnm_gelu(ctx, x), *b = vnm_gelu_tanh(ctx, x), *c = vnm_silu(ctx, x);
    vnm_tensor *sum = vnm_add(ctx, vnm_add(ctx, a, b), c);
    return vnm_add(ctx, sum, x);
}

static void test_activation_gradcheck_accumulates(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(4, 5), -3, 3)};
    tu_gradcheck(ctx, f_act_accumulates, 1, in, NULL);
}

static vnm_tensor *f_swiglu(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_swiglu(ctx, in[0], in[1]);
}

/* swiglu(gate, up) + gate + up, the sum recorded last: dgate and dup must accumulate (+=). */
static vnm_tensor *f_swiglu_accumulates(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    vnm_tensor *y = vnm_swiglu(ctx, in[0], in[1]);
    return vnm_add(ctx, y, vnm_add(ctx, in[0], in[1]));
}

static vnm_tensor *f_swiglu_transposed_gate(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_swiglu(ctx, vnm_transpose(ctx, in[0], 0, 1), in[1]);
}

static void test_swiglu_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[2] = {tu_param(ctx, 3, VNM_SHAPE(2, 3, 5), -3, 3),
                         tu_param(ctx, 3, VNM_SHAPE(2, 3, 5), -2, 2)};
    tu_gradcheck(ctx, f_swiglu, 2, in, NULL);
    tu_gradcheck(ctx, f_swiglu_accumulates, 2, in, NULL);
    /* one side frozen: the kernel gets a NULL gradient pointer for it */
    vnm_tensor *frozen_up[2] = {in[0], vnm_buffer_new(ctx, VNM_DTYPE_F32, 3, in[1]->shape, "up")};
    assert_int_equal(vnm_rng_uniform(ctx, frozen_up[1], -2, 2), VNM_OK);
    tu_gradcheck(ctx, f_swiglu, 2, frozen_up, NULL);
    vnm_tensor *frozen_gate[2] = {frozen_up[1], in[1]};
    tu_gradcheck(ctx, f_swiglu, 2, frozen_gate, NULL);
    vnm_tensor *view[2] = {tu_param(ctx, 2, VNM_SHAPE(6, 4), -3, 3),
                           tu_param(ctx, 2, VNM_SHAPE(4, 6), -2, 2)};
    tu_gradcheck(ctx, f_swiglu_transposed_gate, 2, view, NULL);
}

static void test_activation_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *xi = vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(2, 3));
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(2, 3), -1, 1);
    assert_null(vnm_gelu(ctx, xi));
    tu_assert_error(ctx, "gelu: input must be f32");
    assert_null(vnm_gelu_tanh(ctx, xi));
    tu_assert_error(ctx, "gelu_tanh: input must be f32");
    assert_null(vnm_silu(ctx, xi));
    tu_assert_error(ctx, "silu: input must be f32");
    assert_null(vnm_swiglu(ctx, x, xi));
    tu_assert_error(ctx, "swiglu: up must be f32");
    assert_null(vnm_swiglu(ctx, x, tu_param(ctx, 2, VNM_SHAPE(3, 2), -1, 1)));
    tu_assert_error(ctx, "gate [2, 3] f32 and up [3, 2] f32 must have the same shape");
    assert_null(vnm_swiglu(ctx, x, tu_param(ctx, 1, VNM_SHAPE(6), -1, 1)));
    tu_assert_error(ctx, "must have the same shape");
    /* NULL inputs propagate without a new message */
    assert_null(vnm_gelu(ctx, NULL));
    assert_null(vnm_swiglu(ctx, NULL, x));
    assert_null(vnm_swiglu(ctx, x, NULL));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gelu_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_gelu_tanh_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_silu_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_swiglu_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_activation_forward_transposed_view, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_activation_extreme_inputs, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_gelu_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_gelu_tanh_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_silu_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_activation_gradcheck_accumulates, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_swiglu_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_activation_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("activation", tests, NULL, NULL);
}
