/* tests/test_dropout.c — dropout and drop-path: identity outside training, masks against an
 * independent Philox reference, drop rate and scaling, reproducibility from the RNG state and
 * independence from the thread count, backward, finite-difference gradients, bad arguments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.h"

/* Keep decision i of a stream at (seed, offset), written out from the documented convention:
 * word i%4 of the Philox block at counter offset + i/4, 24-bit uniform, kept iff u >= p. */
static bool ref_keep(uint64_t seed, uint64_t offset, int64_t i, float p)
{
    uint32_t r[4];
    vnm_philox4x32(seed, offset + (uint64_t)(i / 4), 0, r);
    return (double)(r[i % 4] >> 8) / 16777216.0 >= (double)p;
}

/* Input values in [0.5, 1): an output of exactly 0 then means "dropped". */
static vnm_tensor *positive(vnm_ctx *ctx, int ndim, const int64_t *shape)
{
    return tu_param(ctx, ndim, shape, 0.5f, 1.0f);
}

/* Host copy of dropout(x, p), failing the test if the op fails. */
static float *dropout_host(vnm_ctx *ctx, vnm_tensor *x, float p)
{
    vnm_tensor *y = vnm_dropout(ctx, x, p);
    if (!y) fail_msg("dropout failed: %s", vnm_ctx_error(ctx));
    return tu_host(ctx, y);
}

static void test_dropout_identity_outside_training(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = positive(ctx, 2, VNM_SHAPE(4, 5));
    vnm_rng_state before = vnm_ctx_rng_get(ctx);
    vnm_ctx_set_training(ctx, false);
    assert_ptr_equal(vnm_dropout(ctx, x, 0.5f), x);
    assert_ptr_equal(vnm_drop_path(ctx, x, 0.5f), x);
    vnm_ctx_set_training(ctx, true);
    assert_ptr_equal(vnm_dropout(ctx, x, 0.0f), x);
    assert_ptr_equal(vnm_drop_path(ctx, x, 0.0f), x);
    assert_null(x->node);
    assert_true(vnm_ctx_rng_get(ctx).offset == before.offset); /* no draws either */
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}

static void test_dropout_matches_philox_reference(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t n = 1001; /* not a multiple of 4: the last block is partly used */
    const float p = 0.35f;
    vnm_tensor *x = positive(ctx, 3, VNM_SHAPE(7, 11, 13));
    vnm_rng_state st = vnm_ctx_rng_get(ctx);
    vnm_tensor *y = vnm_dropout(ctx, x, p);
    assert_non_null(y);
    assert_true(vnm_ctx_rng_get(ctx).offset == st.offset + (uint64_t)(n + 3) / 4);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double *want = malloc((size_t)n * sizeof *want);
    for (int64_t i = 0; i < n; i++)
        want[i] = ref_keep(st.seed, st.offset, i, p) ? (double)hx[i] / (1.0 - p) : 0.0;
    tu_assert_close(hy, want, n, 0.0, 1e-6, "dropout vs philox reference");
    free(hx);
    free(hy);
    free(want);
}

static void test_dropout_rate_and_scale(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t n = 100003;
    const float ps[] = {0.1f, 0.5f, 0.9f};
    vnm_tensor *x = positive(ctx, 1, VNM_SHAPE(n));
    float *hx = tu_host(ctx, x);
    for (int k = 0; k < 3; k++) {
        float *hy = dropout_host(ctx, x, ps[k]);
        int64_t zeros = 0;
        for (int64_t i = 0; i < n; i++) {
            if (hy[i] == 0.0f) {
                zeros++;
                continue;
            }
            double want = (double)hx[i] / (1.0 - ps[k]);
            if (fabs(hy[i] - want) > 1e-6 * want)
                fail_msg("p=%g element %lld: kept value %.9g, want %.9g", (double)ps[k],
                         (long long)i, (double)hy[i], want);
        }
        double frac = (double)zeros / (double)n;
        if (fabs(frac - ps[k]) > 0.01)
            fail_msg("p=%g: fraction of zeros %.4f", (double)ps[k], frac);
        free(hy);
    }
    free(hx);
}

static void test_dropout_same_rng_state_same_mask(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = positive(ctx, 2, VNM_SHAPE(33, 17));
    int64_t n = vnm_numel(x);
    vnm_rng_state st = vnm_ctx_rng_get(ctx);
    float *a = dropout_host(ctx, x, 0.5f);
    float *next = dropout_host(ctx, x, 0.5f); /* the stream moved on */
    vnm_ctx_rng_set(ctx, st);
    float *b = dropout_host(ctx, x, 0.5f);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    assert_memory_not_equal(a, next, (size_t)n * sizeof *a);
    free(a);
    free(b);
    free(next);
}

/* Outputs with 1 then 2 threads, sizes above the kernels' parallel thresholds. */
typedef vnm_tensor *(*drop_op)(vnm_ctx *, vnm_tensor *, float);

static void check_thread_independent(vnm_ctx *ctx, drop_op op, vnm_tensor *x, const char *what)
{
    int64_t n = vnm_numel(x);
    vnm_tensor *dy = vnm_buffer_new(ctx, VNM_DTYPE_F32, x->ndim, x->shape, "dy");
    assert_int_equal(vnm_rng_uniform(ctx, dy, -1, 1), VNM_OK);
    vnm_rng_state st = vnm_ctx_rng_get(ctx);
#ifdef _OPENMP
    int threads = omp_get_max_threads();
#endif
    float *out[2], *grad[2];
    for (int t = 0; t < 2; t++) {
#ifdef _OPENMP
        omp_set_num_threads(t + 1);
#endif
        vnm_ctx_reset_step(ctx); /* a fresh tape: one backward per step */
        vnm_ctx_rng_set(ctx, st);
        vnm_zero_grad(ctx, &x, 1);
        vnm_tensor *y = op(ctx, x, 0.3f);
        assert_non_null(y);
        assert_int_equal(vnm_backward_seed(ctx, y, dy), VNM_OK);
        out[t] = tu_host(ctx, y);
        grad[t] = tu_host(ctx, x->grad);
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    if (memcmp(out[0], out[1], (size_t)n * sizeof(float)) != 0)
        fail_msg("%s forward differs between 1 and 2 threads", what);
    if (memcmp(grad[0], grad[1], (size_t)n * sizeof(float)) != 0)
        fail_msg("%s backward differs between 1 and 2 threads", what);
    for (int t = 0; t < 2; t++) {
        free(out[t]);
        free(grad[t]);
    }
}

static void test_dropout_mask_independent_of_threads(void **state)
{
    vnm_ctx *ctx = *state;
    check_thread_independent(ctx, vnm_dropout, positive(ctx, 2, VNM_SHAPE(400, 501)), "dropout");
    check_thread_independent(ctx, vnm_drop_path, positive(ctx, 3, VNM_SHAPE(1001, 10, 20)),
                             "drop_path");
}

static void test_dropout_backward_is_mask_times_scale(void **state)
{
    vnm_ctx *ctx = *state;
    const float p = 0.4f;
    vnm_tensor *x = positive(ctx, 2, VNM_SHAPE(9, 23));
    int64_t n = vnm_numel(x);
    vnm_tensor *y = vnm_dropout(ctx, x, p);
    /* x also feeds the sum directly: dropout's backward must add to that gradient */
    vnm_tensor *z = vnm_add(ctx, y, x);
    vnm_tensor *dz = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, z->shape);
    assert_int_equal(vnm_rng_uniform(ctx, dz, -1, 1), VNM_OK);
    assert_int_equal(vnm_backward_seed(ctx, z, dz), VNM_OK);
    float *hy = tu_host(ctx, y), *hdz = tu_host(ctx, dz), *g = tu_host(ctx, x->grad);
    double *want = malloc((size_t)n * sizeof *want);
    for (int64_t i = 0; i < n; i++)
        want[i] = (hy[i] != 0.0f ? (double)hdz[i] / (1.0 - p) : 0.0) + hdz[i];
    tu_assert_close(g, want, n, 1e-6, 1e-6, "dropout backward");
    free(hy);
    free(hdz);
    free(g);
    free(want);
}

static vnm_tensor *f_dropout(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_dropout(ctx, in[0], 0.4f);
}

static vnm_tensor *f_drop_path_transposed(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_drop_path(ctx, vnm_transpose(ctx, in[0], 0, 1), 0.5f);
}

static void test_dropout_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 3, VNM_SHAPE(3, 5, 7), -1, 1);
    tu_gradcheck(ctx, f_dropout, 1, &x, NULL);
    vnm_tensor *x2 = tu_param(ctx, 3, VNM_SHAPE(3, 8, 2), -1, 1); /* 8 samples after transpose */
    tu_gradcheck(ctx, f_drop_path_transposed, 1, &x2, NULL);
}

/* a fixed mask: y = x where it is 1, 0 elsewhere (also in eval mode); finite differences; shape
 * and dtype errors */
static vnm_tensor *f_mask(vnm_ctx *ctx, vnm_tensor **in, void *mask)
{
    return vnm_mask(ctx, in[0], mask);
}

static void test_mask(void **state)
{
    vnm_ctx *ctx = *state;
    enum { N = 37 };
    uint8_t m[N];
    for (int i = 0; i < N; i++) m[i] = (uint8_t)(i % 3 != 0);
    vnm_tensor *mask = vnm_buffer_new(ctx, VNM_DTYPE_U8, 2, VNM_SHAPE(1, N), "mask");
    assert_int_equal(vnm_tensor_from_host(ctx, mask, m), VNM_OK);
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(1, N), -2, 2);
    vnm_ctx_set_training(ctx, false);
    float *y = tu_host(ctx, vnm_mask(ctx, x, mask)), *h = tu_host(ctx, x);
    for (int i = 0; i < N; i++) assert_true(y[i] == (m[i] ? h[i] : 0.0f));
    free(y);
    free(h);
    vnm_tensor *in[1] = {x};
    tu_gradcheck(ctx, f_mask, 1, in, mask);
    assert_null(vnm_mask(ctx, tu_param(ctx, 2, VNM_SHAPE(N, 1), -1, 1), mask));
    tu_assert_error(ctx, "must be a contiguous u8 tensor of the input's shape");
}

static void test_drop_path_whole_samples(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t N = 20000, inner = 5;
    const float p = 0.25f;
    vnm_tensor *x = positive(ctx, 3, VNM_SHAPE(N, 1, inner));
    vnm_rng_state st = vnm_ctx_rng_get(ctx);
    vnm_tensor *y = vnm_drop_path(ctx, x, p);
    assert_non_null(y);
    assert_true(vnm_ctx_rng_get(ctx).offset == st.offset + (uint64_t)(N + 3) / 4);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double *want = malloc((size_t)(N * inner) * sizeof *want);
    int64_t dropped = 0;
    for (int64_t s = 0; s < N; s++) {
        bool keep = ref_keep(st.seed, st.offset, s, p);
        dropped += !keep;
        for (int64_t j = 0; j < inner; j++)
            want[s * inner + j] = keep ? (double)hx[s * inner + j] / (1.0 - p) : 0.0;
    }
    tu_assert_close(hy, want, N * inner, 0.0, 1e-6, "drop_path vs per-sample reference");
    double frac = (double)dropped / (double)N;
    if (fabs(frac - p) > 0.01) fail_msg("fraction of dropped samples %.4f, p %g", frac, (double)p);
    free(hx);
    free(hy);
    free(want);
}

static void test_drop_path_backward(void **state)
{
    vnm_ctx *ctx = *state;
    const float p = 0.5f;
    vnm_tensor *x = positive(ctx, 2, VNM_SHAPE(16, 3));
    vnm_tensor *y = vnm_drop_path(ctx, x, p);
    assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, y, VNM_ALL_DIMS, false)), VNM_OK);
    float *hy = tu_host(ctx, y), *g = tu_host(ctx, x->grad);
    double want[48];
    int kept = 0;
    for (int s = 0; s < 16; s++) {
        bool keep = hy[s * 3] != 0.0f;
        kept += keep;
        for (int j = 0; j < 3; j++) want[s * 3 + j] = keep ? 1.0 / (1.0 - p) : 0.0;
    }
    assert_true(kept > 0 && kept < 16); /* both branches exercised */
    tu_assert_close(g, want, 48, 1e-6, 1e-6, "drop_path backward");
    free(hy);
    free(g);
}

static void test_dropout_argument_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = positive(ctx, 2, VNM_SHAPE(2, 3));
    const float bad[] = {-0.1f, 1.0f, 1.5f, NAN};
    for (int k = 0; k < 4; k++) {
        assert_null(vnm_dropout(ctx, x, bad[k]));
        tu_assert_error(ctx, "dropout: drop probability p must be in [0, 1)");
        assert_null(vnm_drop_path(ctx, x, bad[k]));
        tu_assert_error(ctx, "drop_path: drop probability p must be in [0, 1)");
    }
    vnm_ctx_set_training(ctx, false); /* a bad p is reported in eval mode too */
    assert_null(vnm_dropout(ctx, x, 1.0f));
    tu_assert_error(ctx, "must be in [0, 1), got 1");
    vnm_ctx_set_training(ctx, true);
    vnm_tensor *ids = vnm_tensor_new(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(4));
    assert_null(vnm_dropout(ctx, ids, 0.5f));
    tu_assert_error(ctx, "dropout: input must be f32");
    vnm_tensor *scalar = vnm_tensor_new(ctx, VNM_DTYPE_F32, 0, NULL);
    assert_null(vnm_drop_path(ctx, scalar, 0.5f));
    tu_assert_error(ctx, "drop_path: input must have 1 to 4 dims");
    assert_null(vnm_dropout(ctx, NULL, 0.5f));
    assert_null(vnm_drop_path(ctx, NULL, 0.5f));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dropout_identity_outside_training, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_dropout_matches_philox_reference, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_dropout_rate_and_scale, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dropout_same_rng_state_same_mask, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_dropout_mask_independent_of_threads, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_dropout_backward_is_mask_times_scale, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_dropout_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mask, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_drop_path_whole_samples, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_drop_path_backward, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dropout_argument_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("dropout", tests, NULL, NULL);
}
