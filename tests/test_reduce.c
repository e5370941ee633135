/* tests/test_reduce.c — sum and mean over one dim (keepdim or not, negative dims) or all dims:
 * forward against a double reference, finite-difference gradients, errors. */
#include <stdlib.h>

#include "test_util.h"

/* Reference reduction of x[outer, n, inner] along the middle axis. */
static void ref_reduce(const float *x, double *y, int64_t outer, int64_t n, int64_t inner,
                       bool mean)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double acc = 0;
            for (int64_t k = 0; k < n; k++) acc += x[(o * n + k) * inner + i];
            y[o * inner + i] = mean ? acc / (double)n : acc;
        }
}

static void check_reduce(vnm_ctx *ctx, bool mean, int dim, bool keepdim, int want_ndim)
{
    vnm_tensor *x = tu_param(ctx, 3, VNM_SHAPE(3, 5, 7), -1, 1);
    vnm_tensor *y = mean ? vnm_mean(ctx, x, dim, keepdim) : vnm_sum(ctx, x, dim, keepdim);
    assert_non_null(y);
    assert_int_equal(y->ndim, want_ndim);
    int64_t outer = 1, n = 105, inner = 1;
    if (dim != VNM_ALL_DIMS) {
        int d = dim < 0 ? dim + 3 : dim;
        outer = d == 0 ? 1 : (d == 1 ? 3 : 15);
        n = x->shape[d];
        inner = d == 2 ? 1 : (d == 1 ? 7 : 35);
    }
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double *want = malloc((size_t)(outer * inner) * sizeof *want);
    ref_reduce(hx, want, outer, n, inner, mean);
    tu_assert_close(hy, want, outer * inner, 1e-5, 1e-5, mean ? "mean" : "sum");
    free(hx);
    free(hy);
    free(want);
}

static void test_sum_dim0(void **state) { check_reduce(*state, false, 0, false, 2); }
static void test_sum_middle_keepdim(void **state) { check_reduce(*state, false, 1, true, 3); }
static void test_sum_last_negative(void **state) { check_reduce(*state, false, -1, false, 2); }
static void test_sum_all(void **state) { check_reduce(*state, false, VNM_ALL_DIMS, false, 1); }
static void test_mean_middle(void **state) { check_reduce(*state, true, 1, false, 2); }
static void test_mean_all_keepdim(void **state) { check_reduce(*state, true, VNM_ALL_DIMS, true, 3); }

typedef struct {
    bool mean;
    int dim;
} reduce_case;

static vnm_tensor *f_reduce(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    const reduce_case *c = user;
    return c->mean ? vnm_mean(ctx, in[0], c->dim, false) : vnm_sum(ctx, in[0], c->dim, true);
}

static void test_sum_gradcheck_each_dim(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 3, VNM_SHAPE(2, 3, 4), -1, 1)};
    for (int d = -3; d < 3; d++) {
        reduce_case c = {false, d};
        tu_gradcheck(ctx, f_reduce, 1, in, &c);
    }
}

static void test_mean_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 4, VNM_SHAPE(2, 3, 2, 3), -1, 1)};
    reduce_case all = {true, VNM_ALL_DIMS}, mid = {true, 2};
    tu_gradcheck(ctx, f_reduce, 1, in, &all);
    tu_gradcheck(ctx, f_reduce, 1, in, &mid);
}

static vnm_tensor *f_sum_of_view(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_sum(ctx, vnm_transpose(ctx, in[0], 0, 1), 1, false);
}

static void test_sum_gradcheck_view(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1)};
    tu_gradcheck(ctx, f_sum_of_view, 1, in, NULL);
}

static void test_reduce_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1);
    assert_null(vnm_sum(ctx, x, 2, false));
    tu_assert_error(ctx, "sum: dim 2 out of range");
    assert_null(vnm_mean(ctx, x, -3, false));
    tu_assert_error(ctx, "mean: dim -3 out of range");
    vnm_tensor *e = tu_param(ctx, 2, VNM_SHAPE(3, 0), -1, 1);
    assert_null(vnm_mean(ctx, e, 1, false));
    tu_assert_error(ctx, "empty");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sum_dim0, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sum_middle_keepdim, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sum_last_negative, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sum_all, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mean_middle, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mean_all_keepdim, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sum_gradcheck_each_dim, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mean_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sum_gradcheck_view, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_reduce_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("reduce", tests, NULL, NULL);
}
