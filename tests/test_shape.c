/* tests/test_shape.c — reshape, transpose, permute, contiguous, slice, split, concat, scatter:
 * forward against index arithmetic, views share storage, finite-difference gradients, errors. */
#include <stdlib.h>

#include "test_util.h"

static void test_reshape_is_view_with_inferred_dim(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 3, VNM_SHAPE(2, 3, 4), -1, 1);
    vnm_tensor *y = vnm_reshape(ctx, x, 2, VNM_SHAPE(-1, 4));
    assert_non_null(y);
    assert_int_equal(y->shape[0], 6);
    assert_int_equal(y->shape[1], 4);
    assert_ptr_equal(y->data, x->data);
    assert_true(vnm_is_contiguous(y));
}

static void test_reshape_of_transpose_copies(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(2, 3), -1, 1);
    vnm_tensor *y = vnm_reshape(ctx, vnm_transpose(ctx, x, 0, 1), 1, VNM_SHAPE(6));
    assert_non_null(y);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double want[6];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) want[i * 2 + j] = hx[j * 3 + i];
    tu_assert_close(hy, want, 6, 0, 0, "reshape of transpose");
    free(hx);
    free(hy);
}

static void test_permute_forward(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 4, VNM_SHAPE(2, 3, 4, 5), -1, 1);
    vnm_tensor *y = vnm_permute(ctx, x, (const int[]){0, 2, 1, 3}); /* [B,T,H,D] -> [B,H,T,D] */
    assert_non_null(y);
    assert_ptr_equal(y->data, x->data);
    assert_int_equal(y->shape[1], 4);
    assert_int_equal(y->shape[2], 3);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double want[120];
    for (int b = 0; b < 2; b++)
        for (int h = 0; h < 4; h++)
            for (int t = 0; t < 3; t++)
                for (int d = 0; d < 5; d++)
                    want[((b * 4 + h) * 3 + t) * 5 + d] = hx[((b * 3 + t) * 4 + h) * 5 + d];
    tu_assert_close(hy, want, 120, 0, 0, "permute");
    free(hx);
    free(hy);
}

static vnm_tensor *f_permute(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_permute(ctx, in[0], (const int[]){2, 0, 1});
}

static void test_permute_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 3, VNM_SHAPE(2, 3, 4), -1, 1)};
    tu_gradcheck(ctx, f_permute, 1, in, NULL);
}

static vnm_tensor *f_transpose_contiguous_reshape(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    vnm_tensor *t = vnm_contiguous(ctx, vnm_transpose(ctx, in[0], 0, 2));
    return vnm_reshape(ctx, t, 2, VNM_SHAPE(4, -1));
}

static void test_transpose_contiguous_reshape_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 3, VNM_SHAPE(3, 2, 4), -1, 1)};
    tu_gradcheck(ctx, f_transpose_contiguous_reshape, 1, in, NULL);
}

static void test_slice_forward_is_view(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(4, 6), -1, 1);
    vnm_tensor *y = vnm_slice(ctx, x, 1, 2, 5);
    assert_non_null(y);
    assert_false(vnm_is_contiguous(y));
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double want[12];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) want[i * 3 + j] = hx[i * 6 + 2 + j];
    tu_assert_close(hy, want, 12, 0, 0, "slice");
    free(hx);
    free(hy);
}

static vnm_tensor *f_slice_twice(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* overlapping slices: their gradients add up in the shared input */
    vnm_tensor *a = vnm_slice(ctx, in[0], 1, 0, 3), *b = vnm_slice(ctx, in[0], 1, 1, 4);
    return vnm_mul(ctx, a, b);
}

static void test_slice_gradcheck_overlapping(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(3, 5), -1, 1)};
    tu_gradcheck(ctx, f_slice_twice, 1, in, NULL);
}

static vnm_tensor *f_split(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* qkv-style split along the last dim, parts recombined unevenly */
    vnm_tensor *parts[3];
    if (vnm_split(ctx, in[0], -1, 3, VNM_SHAPE(2, 2, 2), parts) != VNM_OK) return NULL;
    return vnm_add(ctx, vnm_mul(ctx, parts[0], parts[1]), parts[2]);
}

static void test_split_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(3, 6), -1, 1)};
    tu_gradcheck(ctx, f_split, 1, in, NULL);
}

static void test_concat_forward(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *a = tu_param(ctx, 2, VNM_SHAPE(2, 3), -1, 1);
    vnm_tensor *b = tu_param(ctx, 2, VNM_SHAPE(2, 1), -1, 1);
    vnm_tensor *y = vnm_concat(ctx, 2, (vnm_tensor *[]){a, b}, 1);
    assert_non_null(y);
    assert_int_equal(y->shape[1], 4);
    float *ha = tu_host(ctx, a), *hb = tu_host(ctx, b), *hy = tu_host(ctx, y);
    double want[8];
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 3; j++) want[i * 4 + j] = ha[i * 3 + j];
        want[i * 4 + 3] = hb[i];
    }
    tu_assert_close(hy, want, 8, 0, 0, "concat");
    free(ha);
    free(hb);
    free(hy);
}

static vnm_tensor *f_concat(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* five inputs (more than a node holds), one of them a transposed view */
    vnm_tensor *xs[5] = {in[0], in[1], vnm_transpose(ctx, in[2], 0, 1), in[0], in[3]};
    return vnm_concat(ctx, 5, xs, 0);
}

static void test_concat_gradcheck_many_inputs(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[4] = {tu_param(ctx, 2, VNM_SHAPE(2, 3), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(1, 3), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(3, 2), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(4, 3), -1, 1)};
    tu_gradcheck(ctx, f_concat, 4, in, NULL);
}

static void test_shape_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1);
    assert_null(vnm_reshape(ctx, x, 2, VNM_SHAPE(5, -1)));
    tu_assert_error(ctx, "cannot view [3, 4] f32");
    assert_null(vnm_reshape(ctx, x, 2, VNM_SHAPE(-1, -1)));
    tu_assert_error(ctx, "only one -1");
    assert_null(vnm_permute(ctx, x, (const int[]){0, 0}));
    tu_assert_error(ctx, "not a permutation");
    assert_null(vnm_transpose(ctx, x, 0, 2));
    tu_assert_error(ctx, "dim 2 out of range");
    assert_null(vnm_slice(ctx, x, 1, 2, 5));
    tu_assert_error(ctx, "range [2, 5) out of bounds");
    vnm_tensor *parts[2];
    assert_int_equal(vnm_split(ctx, x, 1, 2, VNM_SHAPE(1, 2), parts), VNM_ERR_INPUT);
    tu_assert_error(ctx, "do not cover");
    vnm_tensor *y = tu_param(ctx, 2, VNM_SHAPE(3, 5), -1, 1);
    assert_null(vnm_concat(ctx, 2, (vnm_tensor *[]){x, y}, 0));
    tu_assert_error(ctx, "does not match input 0");
}

/* scatter: values to their positions, -1 and an index past the end dropped, zeros elsewhere;
 * finite differences; a bad index shape */
static vnm_tensor *f_scatter(vnm_ctx *ctx, vnm_tensor **in, void *index)
{
    return vnm_scatter(ctx, in[0], index, 2, VNM_SHAPE(3, 4));
}

static void test_scatter(void **state)
{
    vnm_ctx *ctx = *state;
    const int32_t idx[6] = {5, -1, 0, 11, 7, 12}; /* 12: past the end, skipped */
    vnm_tensor *index = vnm_buffer_new(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(6), "index");
    assert_int_equal(vnm_tensor_from_host(ctx, index, idx), VNM_OK);
    vnm_tensor *src = tu_param(ctx, 1, VNM_SHAPE(6), -1, 1);
    float *y = tu_host(ctx, vnm_scatter(ctx, src, index, 2, VNM_SHAPE(3, 4)));
    float *h = tu_host(ctx, src), want[12] = {0};
    for (int k = 0; k < 6; k++)
        if (idx[k] >= 0 && idx[k] < 12) want[idx[k]] = h[k];
    assert_memory_equal(y, want, sizeof want);
    free(y);
    free(h);
    tu_gradcheck(ctx, f_scatter, 1, &src, index);
    vnm_tensor *bad = tu_param(ctx, 1, VNM_SHAPE(5), -1, 1);
    assert_null(vnm_scatter(ctx, bad, index, 2, VNM_SHAPE(3, 4)));
    tu_assert_error(ctx, "one entry per source element");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scatter, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_reshape_is_view_with_inferred_dim, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_reshape_of_transpose_copies, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_transpose_contiguous_reshape_gradcheck, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_slice_forward_is_view, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_slice_gradcheck_overlapping, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_split_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_concat_forward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_concat_gradcheck_many_inputs, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_shape_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("shape", tests, NULL, NULL);
}
