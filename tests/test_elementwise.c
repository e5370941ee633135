/* tests/test_elementwise.c — add, sub, mul, div with broadcasting and scale: forward against a
 * double reference, finite-difference gradients (broadcast inputs included), shape errors. */
#include <stdlib.h>

#include "test_util.h"

typedef double (*ref_fn)(double, double);
static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }

typedef vnm_tensor *(*op_fn)(vnm_ctx *, vnm_tensor *, vnm_tensor *);

/* Index of out element `flat` (shape out[4], padded) in an input of shape in[4] (padded). */
static int64_t bcast_index(int64_t flat, const int64_t *out, const int64_t *in)
{
    int64_t idx = 0, mul = 1;
    for (int d = 3; d >= 0; d--) {
        int64_t i = flat % out[d];
        flat /= out[d];
        idx += (in[d] == 1 ? 0 : i) * mul;
        mul *= in[d];
    }
    return idx;
}

static void pad4(const vnm_tensor *t, int64_t *s)
{
    int shift = 4 - t->ndim;
    for (int d = 0; d < 4; d++) s[d] = d < shift ? 1 : t->shape[d - shift];
}

static void check_binary(vnm_ctx *ctx, op_fn op, ref_fn ref, int na, const int64_t *sa, int nb,
                         const int64_t *sb, float lo_b)
{
    vnm_tensor *a = tu_param(ctx, na, sa, -1, 1), *b = tu_param(ctx, nb, sb, lo_b, 1);
    vnm_tensor *y = op(ctx, a, b);
    assert_non_null(y);
    int64_t n = vnm_numel(y), pa[4], pb[4], po[4];
    pad4(a, pa);
    pad4(b, pb);
    pad4(y, po);
    float *ha = tu_host(ctx, a), *hb = tu_host(ctx, b), *hy = tu_host(ctx, y);
    double *want = malloc((size_t)n * sizeof *want);
    for (int64_t i = 0; i < n; i++)
        want[i] = ref(ha[bcast_index(i, po, pa)], hb[bcast_index(i, po, pb)]);
    tu_assert_close(hy, want, n, 1e-6, 1e-6, "binary forward");
    free(ha);
    free(hb);
    free(hy);
    free(want);
}

static void test_add_same_shape(void **state)
{
    check_binary(*state, vnm_add, r_add, 2, VNM_SHAPE(3, 5), 2, VNM_SHAPE(3, 5), -1);
}

static void test_add_broadcast_bias(void **state)
{
    check_binary(*state, vnm_add, r_add, 3, VNM_SHAPE(2, 3, 5), 1, VNM_SHAPE(5), -1);
}

static void test_sub_broadcast_both(void **state)
{
    check_binary(*state, vnm_sub, r_sub, 3, VNM_SHAPE(2, 1, 5), 2, VNM_SHAPE(4, 1), -1);
}

static void test_mul_broadcast_4d(void **state)
{
    check_binary(*state, vnm_mul, r_mul, 4, VNM_SHAPE(2, 3, 4, 5), 4, VNM_SHAPE(1, 3, 1, 5), -1);
}

static void test_div_broadcast_scalar(void **state)
{
    check_binary(*state, vnm_div, r_div, 2, VNM_SHAPE(3, 4), 1, VNM_SHAPE(1), 0.5f);
}

typedef struct {
    op_fn op;
} binary_case;

static vnm_tensor *f_binary(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    return ((binary_case *)user)->op(ctx, in[0], in[1]);
}

static void grad_binary(vnm_ctx *ctx, op_fn op, int na, const int64_t *sa, int nb,
                        const int64_t *sb, float lo_b)
{
    binary_case c = {op};
    vnm_tensor *in[2] = {tu_param(ctx, na, sa, -1, 1), tu_param(ctx, nb, sb, lo_b, 1)};
    tu_gradcheck(ctx, f_binary, 2, in, &c);
}

static void test_add_gradcheck_broadcast(void **state)
{
    grad_binary(*state, vnm_add, 3, VNM_SHAPE(2, 3, 4), 2, VNM_SHAPE(1, 4), -1);
}

static void test_sub_gradcheck_broadcast(void **state)
{
    grad_binary(*state, vnm_sub, 2, VNM_SHAPE(3, 1), 2, VNM_SHAPE(1, 4), -1);
}

static void test_mul_gradcheck_broadcast(void **state)
{
    grad_binary(*state, vnm_mul, 4, VNM_SHAPE(2, 1, 3, 2), 3, VNM_SHAPE(2, 1, 2), -1);
}

static void test_div_gradcheck_broadcast(void **state)
{
    grad_binary(*state, vnm_div, 2, VNM_SHAPE(3, 4), 1, VNM_SHAPE(4), 0.5f);
}

static vnm_tensor *f_mul_self(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* x·x: both gradient paths land in the same buffer */
    return vnm_mul(ctx, in[0], in[0]);
}

static void test_mul_same_tensor_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(3, 3), -1, 1)};
    tu_gradcheck(ctx, f_mul_self, 1, in, NULL);
}

static vnm_tensor *f_add_views(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* a transposed view plus a slice view: strided reads without copies */
    return vnm_add(ctx, vnm_transpose(ctx, in[0], 0, 1), vnm_slice(ctx, in[1], 0, 1, 4));
}

static void test_binary_views_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[2] = {tu_param(ctx, 2, VNM_SHAPE(2, 3), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(5, 2), -1, 1)};
    tu_gradcheck(ctx, f_add_views, 2, in, NULL);
}

static vnm_tensor *f_scale(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_scale(ctx, in[0], -2.5f);
}

static void test_scale_forward_and_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 3, VNM_SHAPE(2, 3, 5), -1, 1);
    vnm_tensor *y = vnm_scale(ctx, x, -2.5f);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double want[30];
    for (int i = 0; i < 30; i++) want[i] = (float)(-2.5f * hx[i]); /* exact in f32 */
    tu_assert_close(hy, want, 30, 0, 0, "scale forward");
    free(hx);
    free(hy);
    vnm_tensor *in[1] = {x};
    tu_gradcheck(ctx, f_scale, 1, in, NULL);
}

static void test_binary_shape_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *a = tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1);
    vnm_tensor *b = tu_param(ctx, 2, VNM_SHAPE(2, 4), -1, 1);
    assert_null(vnm_add(ctx, a, b));
    tu_assert_error(ctx, "do not broadcast");
    assert_null(vnm_mul(ctx, a, tu_param(ctx, 1, VNM_SHAPE(3), -1, 1)));
    tu_assert_error(ctx, "mul: shapes [3, 4] f32 and [3] f32 do not broadcast");
    vnm_tensor *ids = vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(3, 4));
    assert_null(vnm_sub(ctx, a, ids));
    tu_assert_error(ctx, "b must be f32");
}


/* Same-shape contiguous operands take one flat loop split in blocks over threads (above its
 * threshold, with a partial last block); a broadcast still goes row by row. */
static void test_binary_large_contiguous(void **state)
{
    vnm_ctx *ctx = *state;
    op_fn ops[] = {vnm_add, vnm_sub, vnm_mul, vnm_div};
    ref_fn refs[] = {r_add, r_sub, r_mul, r_div};
    for (int k = 0; k < 4; k++) {
        vnm_ctx_reset_step(ctx);
        check_binary(ctx, ops[k], refs[k], 2, VNM_SHAPE(300, 131), 2, VNM_SHAPE(300, 131), 0.5f);
        check_binary(ctx, ops[k], refs[k], 1, VNM_SHAPE(7), 1, VNM_SHAPE(7), 0.5f);
        check_binary(ctx, ops[k], refs[k], 3, VNM_SHAPE(40, 17, 96), 1, VNM_SHAPE(96), 0.5f);
    }
}

/* Backward hands an output's gradient down to a step tensor that has none yet (add's first
 * operand, reshape, contiguous) instead of clearing a buffer and adding; a permutation or a
 * concat writes a new gradient instead of adding into zeros. A tensor reached along several such
 * paths must still sum them all. */
static vnm_tensor *f_gradient_handoffs(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    vnm_tensor *h = vnm_mul(ctx, in[0], in[0]);                        /* [4, 6], a step tensor */
    vnm_tensor *a = vnm_add(ctx, vnm_add(ctx, h, in[1]), h);           /* h twice */
    vnm_tensor *r = vnm_reshape(ctx, h, 2, VNM_SHAPE(6, 4));           /* a view of h */
    vnm_tensor *t = vnm_contiguous(ctx, vnm_transpose(ctx, h, 0, 1));  /* [6, 4], a copy */
    vnm_tensor *c = vnm_concat(ctx, 2, (vnm_tensor *[]){t, r}, 0);     /* [12, 4] */
    vnm_tensor *s = vnm_add(ctx, vnm_reshape(ctx, a, 2, VNM_SHAPE(12, 2)),
                            vnm_reshape(ctx, vnm_slice(ctx, c, 1, 0, 2), 2, VNM_SHAPE(12, 2)));
    return vnm_add(ctx, s, vnm_reshape(ctx, h, 2, VNM_SHAPE(12, 2)));
}

static void test_gradient_handoffs_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[2] = {tu_param(ctx, 2, VNM_SHAPE(4, 6), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(4, 6), -1, 1)};
    tu_gradcheck(ctx, f_gradient_handoffs, 2, in, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_binary_large_contiguous, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_gradient_handoffs_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_add_same_shape, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_add_broadcast_bias, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sub_broadcast_both, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mul_broadcast_4d, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_div_broadcast_scalar, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_add_gradcheck_broadcast, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sub_gradcheck_broadcast, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mul_gradcheck_broadcast, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_div_gradcheck_broadcast, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mul_same_tensor_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_binary_views_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_scale_forward_and_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_binary_shape_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("elementwise", tests, NULL, NULL);
}
