/* tests/test_embedding.c — embedding lookup: i32 and i64 ids of 1 to 3 dims, the scatter-add of
 * the backward with repeated ids, finite-difference gradients of the table, and errors for
 * out-of-range ids, float ids and bad shapes. */
#include <stdlib.h>

#include "test_util.h"

/* Deterministic ids in [0, V) with repeats: a multiplicative hash of the position. */
static int64_t id_of(int64_t i, int64_t V) { return (i * 7919 + 13) % V; }

static vnm_tensor *make_ids(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape, int64_t V)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    int64_t *h64 = malloc((size_t)n * sizeof *h64);
    int32_t *h32 = malloc((size_t)n * sizeof *h32);
    for (int64_t i = 0; i < n; i++) h32[i] = (int32_t)(h64[i] = id_of(i, V));
    /* persistent: the gradient check resets the step arena between evaluations */
    vnm_tensor *ids = vnm_buffer_new(ctx, dt, ndim, shape, "ids");
    assert_non_null(ids);
    assert_int_equal(vnm_tensor_from_host(ctx, ids, dt == VNM_DTYPE_I64 ? (void *)h64 : h32),
                     VNM_OK);
    free(h64);
    free(h32);
    return ids;
}

static void check_forward(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape, int64_t V,
                          int64_t D)
{
    vnm_tensor *ids = make_ids(ctx, dt, ndim, shape, V);
    vnm_tensor *table = tu_param(ctx, 2, VNM_SHAPE(V, D), -1, 1);
    vnm_tensor *y = vnm_embedding(ctx, ids, table);
    assert_non_null(y);
    assert_int_equal(y->ndim, ndim + 1);
    for (int i = 0; i < ndim; i++) assert_int_equal(y->shape[i], shape[i]);
    assert_int_equal(y->shape[ndim], D);
    int64_t n = vnm_numel(ids);
    float *ht = tu_host(ctx, table), *hy = tu_host(ctx, y);
    double *ref = malloc((size_t)(n * D) * sizeof *ref);
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < D; d++) ref[i * D + d] = ht[id_of(i, V) * D + d];
    tu_assert_close(hy, ref, n * D, 0, 0, "embedding forward"); /* a copy: exact */
    free(ht);
    free(hy);
    free(ref);
}

static void test_embedding_forward_i32(void **state)
{
    check_forward(*state, VNM_DTYPE_I32, 2, VNM_SHAPE(3, 5), 11, 7);
    check_forward(*state, VNM_DTYPE_I32, 1, VNM_SHAPE(4), 3, 1);
}

static void test_embedding_forward_i64_3d(void **state)
{
    check_forward(*state, VNM_DTYPE_I64, 3, VNM_SHAPE(2, 3, 4), 9, 5);
}

/* Big enough for the kernels' parallel paths. */
static void test_embedding_forward_parallel(void **state)
{
    check_forward(*state, VNM_DTYPE_I64, 2, VNM_SHAPE(4, 150), 50, 130);
}

/* dtable[v] = Σ over the positions i with ids[i] = v of dy[i]; tokens outnumber rows, so most
 * rows collect several; rows no id names stay 0. Parallel over column blocks (D = 130). */
static void test_embedding_backward_repeated_ids_accumulate(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t T = 300, V = 11, D = 130;
    vnm_tensor *ids = make_ids(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(T), V - 1); /* row V-1 unused */
    vnm_tensor *table = tu_param(ctx, 2, VNM_SHAPE(V, D), -1, 1);
    vnm_tensor *y = vnm_embedding(ctx, ids, table);
    assert_non_null(y);
    vnm_tensor *seed = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, D));
    assert_int_equal(vnm_rng_uniform(ctx, seed, -1, 1), VNM_OK);
    assert_int_equal(vnm_backward_seed(ctx, y, seed), VNM_OK);
    float *hs = tu_host(ctx, seed);
    double *want = calloc((size_t)(V * D), sizeof *want);
    for (int64_t i = 0; i < T; i++)
        for (int64_t d = 0; d < D; d++) want[id_of(i, V - 1) * D + d] += hs[i * D + d];
    float *g = tu_host(ctx, table->grad);
    tu_assert_close(g, want, V * D, 1e-5, 1e-5, "embedding table gradient");
    for (int64_t d = 0; d < D; d++) assert_true(g[(V - 1) * D + d] == 0.0f);
    free(hs);
    free(want);
    free(g);
}

static vnm_tensor *f_embedding(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    return vnm_embedding(ctx, user, in[0]);
}

static void test_embedding_gradcheck_table(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *ids = make_ids(ctx, VNM_DTYPE_I64, 2, VNM_SHAPE(3, 4), 5);
    vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(6, 3), -1, 1)};
    tu_gradcheck(ctx, f_embedding, 1, in, ids);
}

static void test_embedding_out_of_range_id(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *table = tu_param(ctx, 2, VNM_SHAPE(10, 4), -1, 1);
    int32_t big[6] = {0, 9, 3, 4, 10, 12};
    vnm_tensor *ids = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(2, 3), big);
    assert_null(vnm_embedding(ctx, ids, table));
    tu_assert_error(ctx, "id 10 at ids[1, 1] of [2, 3] i32 is out of range for a table of 10 rows");
    int64_t neg[4] = {1, 2, 3, -1};
    vnm_tensor *ids64 = vnm_tensor_from(ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(4), neg);
    assert_null(vnm_embedding(ctx, ids64, table));
    tu_assert_error(ctx, "id -1 at ids[3]");
}

static void test_embedding_float_ids(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *table = tu_param(ctx, 2, VNM_SHAPE(10, 4), -1, 1);
    vnm_tensor *ids = tu_param(ctx, 1, VNM_SHAPE(3), 0, 9);
    assert_null(vnm_embedding(ctx, ids, table));
    tu_assert_error(ctx, "embedding: ids must be i32 or i64, got [3] f32");
}

static void test_embedding_shape_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *table = tu_param(ctx, 2, VNM_SHAPE(10, 4), -1, 1);
    vnm_tensor *ids4 = vnm_tensor_new(ctx, VNM_DTYPE_I32, 4, VNM_SHAPE(1, 2, 2, 2));
    assert_null(vnm_embedding(ctx, ids4, table));
    tu_assert_error(ctx, "ids must have 1 to 3 dims");
    vnm_tensor *ids = vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(2, 3));
    vnm_tensor *flat = tu_param(ctx, 1, VNM_SHAPE(10), -1, 1);
    assert_null(vnm_embedding(ctx, ids, flat));
    tu_assert_error(ctx, "table must have 2 dims");
    vnm_tensor ids_t = *ids; /* a transposed view, built by hand: the shape ops take f32 only */
    ids_t.shape[0] = 3;
    ids_t.shape[1] = 2;
    ids_t.strides[0] = 1;
    ids_t.strides[1] = 3;
    assert_null(vnm_embedding(ctx, &ids_t, table));
    tu_assert_error(ctx, "ids [3, 2] i32 must be contiguous");
    vnm_tensor *itable = vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(10, 4));
    assert_null(vnm_embedding(ctx, ids, itable));
    tu_assert_error(ctx, "table must be f32");
    assert_null(vnm_embedding(ctx, NULL, table)); /* NULL propagates silently */
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_embedding_forward_i32, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_embedding_forward_i64_3d, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_embedding_forward_parallel, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_embedding_backward_repeated_ids_accumulate, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_embedding_gradcheck_table, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_embedding_out_of_range_id, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_embedding_float_ids, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_embedding_shape_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("embedding", tests, NULL, NULL);
}
