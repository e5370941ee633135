/* tests/test_tensor.c — dtypes and conversions, Philox known answers and thread independence,
 * tensor creation and views, arenas, and the tape (no-grad, accumulation, errors). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.h"

static void test_dtype_sizes_and_names(void **state)
{
    (void)state;
    assert_int_equal(vnm_dtype_size(VNM_DTYPE_F32), 4);
    assert_int_equal(vnm_dtype_size(VNM_DTYPE_BF16), 2);
    assert_int_equal(vnm_dtype_size(VNM_DTYPE_F16), 2);
    assert_int_equal(vnm_dtype_size(VNM_DTYPE_I32), 4);
    assert_int_equal(vnm_dtype_size(VNM_DTYPE_I64), 8);
    assert_int_equal(vnm_dtype_size(VNM_DTYPE_U8), 1);
    assert_string_equal(vnm_dtype_name(VNM_DTYPE_BF16), "bf16");
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    assert_int_equal(vnm_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is a tie between 0x3f80 and 0x3f81: ties go to even */
    assert_int_equal(vnm_f32_to_bf16(1.00390625f), 0x3f80);
    /* 1 + 3·2^-8 ties between 0x3f81 and 0x3f82: even is 0x3f82 */
    assert_int_equal(vnm_f32_to_bf16(1.01171875f), 0x3f82);
    assert_int_equal(vnm_f32_to_bf16(-2.0f), 0xc000);
    assert_true(isnan(vnm_bf16_to_f32(vnm_f32_to_bf16(NAN))));
    assert_true(isinf(vnm_bf16_to_f32(vnm_f32_to_bf16(INFINITY))));
    assert_true(vnm_bf16_to_f32(0x3fc0) == 1.5f);
}

static void test_f16_known_values_and_round_trip(void **state)
{
    (void)state;
    assert_int_equal(vnm_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(vnm_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(vnm_f32_to_f16(65520.0f), 0x7c00); /* rounds to infinity */
    assert_int_equal(vnm_f32_to_f16(0.1f), 0x2e66);
    assert_int_equal(vnm_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(vnm_f32_to_f16(ldexpf(1.0f, -24)), 0x0001); /* smallest subnormal */
    assert_int_equal(vnm_f32_to_f16(ldexpf(1.0f, -26)), 0x0000); /* below half of it */
    /* every finite f16 survives f16 -> f32 -> f16 */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (vnm_f32_to_f16(vnm_f16_to_f32((uint16_t)h)) != h) fail_msg("f16 0x%04x round trip", h);
    }
}

static void test_to_dtype_tensor(void **state)
{
    vnm_ctx *ctx = *state;
    float v[4] = {1.0f, -2.5f, 0.1f, 3.0e4f};
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(2, 2), v);
    vnm_tensor *h = vnm_to_dtype(ctx, x, VNM_DTYPE_BF16);
    vnm_tensor *back = vnm_to_dtype(ctx, h, VNM_DTYPE_F32);
    assert_non_null(back);
    float *hb = tu_host(ctx, back);
    for (int i = 0; i < 4; i++) assert_true(hb[i] == vnm_bf16_to_f32(vnm_f32_to_bf16(v[i])));
    free(hb);
    assert_null(vnm_to_dtype(ctx, vnm_tensor_new(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(2)),
                             VNM_DTYPE_F32));
    tu_assert_error(ctx, "not i32 to f32");
}

static void test_philox_known_answers(void **state)
{
    (void)state; /* Random123 philox4x32-10 known-answer vectors */
    uint32_t r[4];
    vnm_philox4x32(0, 0, 0, r);
    assert_int_equal(r[0], 0x6627e8d5);
    assert_int_equal(r[3], 0x9b00dbd8);
    vnm_philox4x32(UINT64_MAX, UINT64_MAX, UINT64_MAX, r);
    assert_int_equal(r[0], 0x408f276d);
    assert_int_equal(r[1], 0x41c83b0e);
    vnm_philox4x32(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull, r);
    assert_int_equal(r[0], 0xd16cfe09);
    assert_int_equal(r[1], 0x94fdcceb);
    assert_int_equal(r[2], 0x5001e420);
    assert_int_equal(r[3], 0x24126ea1);
}

static float *fill_normal_with_threads(int threads, int64_t n)
{
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    vnm_ctx *ctx = tu_ctx();
    vnm_tensor *t = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(n));
    vnm_rng_uniform(ctx, t, 0, 1); /* advance the stream first */
    vnm_rng_normal(ctx, t, 0, 1);
    float *h = tu_host(ctx, t);
    vnm_ctx_destroy(ctx);
    return h;
}

static void test_rng_independent_of_threads(void **state)
{
    (void)state;
    const int64_t n = 300001; /* large enough for the parallel path, not a multiple of 4 */
    float *a = fill_normal_with_threads(1, n), *b = fill_normal_with_threads(2, n);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += a[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += (a[i] - mean) * (a[i] - mean);
    var /= (double)n;
    assert_true(fabs(mean) < 0.01);
    assert_true(fabs(var - 1.0) < 0.01);
    free(a);
    free(b);
}

static void test_rng_state_resumes_stream(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *a = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(10));
    vnm_tensor *b = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(10));
    vnm_rng_state s = vnm_ctx_rng_get(ctx);
    vnm_rng_uniform(ctx, a, -1, 1);
    vnm_rng_uniform(ctx, b, -1, 1);
    float *ha = tu_host(ctx, a), *hb = tu_host(ctx, b);
    assert_memory_not_equal(ha, hb, 40); /* consecutive draws differ */
    vnm_ctx_rng_set(ctx, s);
    vnm_rng_uniform(ctx, b, -1, 1);
    float *hb2 = tu_host(ctx, b);
    assert_memory_equal(ha, hb2, 40);
    for (int i = 0; i < 10; i++) assert_true(ha[i] >= -1 && ha[i] < 1);
    free(ha);
    free(hb);
    free(hb2);
}

static void test_tensor_creation_errors(void **state)
{
    vnm_ctx *ctx = *state;
    assert_null(vnm_tensor_new(ctx, VNM_DTYPE_F32, 5, VNM_SHAPE(1, 1, 1, 1, 1)));
    tu_assert_error(ctx, "between 0 and 4");
    assert_null(vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(2, -3)));
    tu_assert_error(ctx, "negative size");
    vnm_tensor *t = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(2, 3));
    char s[64];
    assert_string_equal(vnm_shape_str(t, s, sizeof s), "[2, 3] f32");
    float *h = tu_host(ctx, t);
    for (int i = 0; i < 6; i++) assert_true(h[i] == 0.0f); /* zero-filled */
    free(h);
}

static void test_views_share_storage(void **state)
{
    vnm_ctx *ctx = *state;
    float v[6] = {0, 1, 2, 3, 4, 5};
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(2, 3), v);
    vnm_tensor *t = vnm_transpose(ctx, x, 0, 1);
    assert_ptr_equal(t->data, x->data);
    assert_ptr_equal(t->base, x);
    assert_false(vnm_is_contiguous(t));
    float h[6];
    assert_int_equal(vnm_tensor_to_host(ctx, t, h), VNM_OK);
    const float want[6] = {0, 3, 1, 4, 2, 5};
    assert_memory_equal(h, want, sizeof want);
    vnm_tensor *s = vnm_slice(ctx, t, 0, 1, 3);
    assert_true(vnm_item(ctx, s) == 1.0f);
}

static void test_step_arena_reuses_memory(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *a = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(1000));
    void *first = a->data;
    assert_true(vnm_ctx_step_bytes(ctx) >= 4000);
    vnm_ctx_reset_step(ctx);
    vnm_tensor *b = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(1000));
    assert_ptr_equal(b->data, first);
    /* a step larger than one chunk still works, and the next step gets one big chunk */
    vnm_tensor *big = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(40 << 20));
    assert_non_null(big);
    vnm_ctx_reset_step(ctx);
    assert_non_null(vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(40 << 20)));
    size_t before = vnm_ctx_persistent_bytes(ctx);
    vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(16), "p");
    assert_true(vnm_ctx_persistent_bytes(ctx) >= before + 64);
}

static void test_no_grad_records_nothing(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(3, 3), -1, 1);
    bool prev = vnm_ctx_set_grad_enabled(ctx, false);
    assert_true(prev);
    vnm_tensor *y = vnm_mul(ctx, w, w);
    assert_false(y->requires_grad);
    assert_null(y->node);
    vnm_ctx_set_grad_enabled(ctx, true);
    assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, y, VNM_ALL_DIMS, false)), VNM_ERR_INPUT);
    tu_assert_error(ctx, "does not require grad");
}

static void test_backward_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(2, 2), -1, 1);
    vnm_tensor *y = vnm_scale(ctx, w, 2.0f);
    assert_int_equal(vnm_backward(ctx, y), VNM_ERR_INPUT);
    tu_assert_error(ctx, "must have one element");
    vnm_tensor *seed = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(4));
    assert_int_equal(vnm_backward_seed(ctx, y, seed), VNM_ERR_INPUT);
    tu_assert_error(ctx, "of the output's shape");
}

static void test_grads_accumulate_until_zeroed(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(3), -1, 1);
    for (int step = 0; step < 2; step++) {
        vnm_tensor *loss = vnm_sum(ctx, vnm_scale(ctx, w, 3.0f), VNM_ALL_DIMS, false);
        assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
        vnm_ctx_reset_step(ctx);
    }
    float *g = tu_host(ctx, w->grad);
    for (int i = 0; i < 3; i++) assert_true(g[i] == 6.0f);
    free(g);
    vnm_zero_grad(ctx, &w, 1);
    g = tu_host(ctx, w->grad);
    for (int i = 0; i < 3; i++) assert_true(g[i] == 0.0f);
    free(g);
}

static void test_backward_skips_unreached_branches(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *a = tu_param(ctx, 1, VNM_SHAPE(2), -1, 1);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(2), -1, 1);
    vnm_tensor *used = vnm_sum(ctx, vnm_scale(ctx, a, 2.0f), VNM_ALL_DIMS, false);
    vnm_scale(ctx, b, 5.0f); /* recorded after, never reaches the loss */
    assert_int_equal(vnm_backward(ctx, used), VNM_OK);
    assert_non_null(a->grad);
    assert_null(b->grad);
}

static void test_cuda_unavailable_is_refused_with_reason(void **state)
{
    (void)state;
    char reason[256] = "";
    bool available = vnm_device_available(VNM_DEVICE_CUDA, reason, sizeof reason);
    vnm_ctx_config cfg = {VNM_DEVICE_CUDA, 1, 0};
    vnm_ctx *ctx = vnm_ctx_create(&cfg);
    if (available) {
        assert_non_null(ctx);
        vnm_ctx_destroy(ctx);
    } else {
        assert_null(ctx); /* refused with the reason, never a crash */
        assert_true(strlen(reason) > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_sizes_and_names),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_f16_known_values_and_round_trip),
        cmocka_unit_test_setup_teardown(test_to_dtype_tensor, tu_setup, tu_teardown),
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_rng_independent_of_threads),
        cmocka_unit_test_setup_teardown(test_rng_state_resumes_stream, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_tensor_creation_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_views_share_storage, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_step_arena_reuses_memory, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_no_grad_records_nothing, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_backward_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_grads_accumulate_until_zeroed, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_backward_skips_unreached_branches, tu_setup,
                                        tu_teardown),
        cmocka_unit_test(test_cuda_unavailable_is_refused_with_reason),
    };
    return cmocka_run_group_tests_name("tensor", tests, NULL, NULL);
}
