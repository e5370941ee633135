/* tests/test_rope.c — rotary embedding (rotate-half): forward against a double reference at
 * several offsets and bases, Hugging Face's f32 angles at large positions, the rotation's norm
 * preservation, finite-difference gradients, and argument errors. */
#include <math.h>
#include <stdlib.h>

#include "test_util.h"

/* transformers' LlamaRotaryEmbedding: inv_freq = 1.0 / (base ** (arange(0, D, 2).float() / D)),
 * freqs = position_ids.float() · inv_freq, all f32 */
static double hf_angle(int64_t pos, int64_t i, int64_t D, double theta)
{
    float inv_freq = 1.0f / powf((float)theta, (float)(2 * i) / (float)D);
    return (float)pos * inv_freq;
}

/* y = x·cos + rotate_half(x)·sin, rotate_half(x) = cat(-x[D/2:], x[:D/2]), element by element
 * with the angle of element d taken from its frequency index d mod D/2. f32_angles computes the
 * angle the way Hugging Face does; otherwise everything is in double. */
static void ref_rope(const float *x, double *y, int64_t BH, int64_t T, int64_t D, int64_t off,
                     double theta, bool f32_angles)
{
    int64_t half = D / 2;
    for (int64_t r = 0; r < BH * T; r++) {
        int64_t pos = off + r % T;
        const float *xr = x + r * D;
        for (int64_t d = 0; d < D; d++) {
            int64_t i = d % half;
            double angle = f32_angles ? hf_angle(pos, i, D, theta)
                                      : (double)pos * pow(theta, -2.0 * (double)i / (double)D);
            double rot = d < half ? -(double)xr[d + half] : (double)xr[d - half];
            y[r * D + d] = xr[d] * cos(angle) + rot * sin(angle);
        }
    }
}

static void check_forward(vnm_ctx *ctx, const int64_t *shape, int64_t off, float theta)
{
    vnm_tensor *x = tu_param(ctx, 4, shape, -1, 1);
    vnm_tensor *y = vnm_rope(ctx, x, off, theta);
    assert_non_null(y);
    assert_true(vnm_same_shape(x, y));
    int64_t n = vnm_numel(x), D = shape[3];
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double *ref = malloc((size_t)n * sizeof *ref);
    ref_rope(hx, ref, shape[0] * shape[1], shape[2], D, off, theta, false);
    /* angles reach ~45 rad here, where f32 angles carry up to ~5e-6 absolute error */
    tu_assert_close(hy, ref, n, 1e-5, 1e-5, "rope forward");
    free(hx);
    free(hy);
    free(ref);
}

static void test_rope_forward_offset0_theta10000(void **state)
{
    check_forward(*state, VNM_SHAPE(2, 3, 5, 8), 0, 10000.0f);
    check_forward(*state, VNM_SHAPE(1, 1, 7, 2), 0, 10000.0f);
}

static void test_rope_forward_offset5_theta500000(void **state)
{
    check_forward(*state, VNM_SHAPE(2, 2, 7, 6), 5, 500000.0f); /* D/2 = 3 is odd */
    check_forward(*state, VNM_SHAPE(1, 4, 9, 16), 5, 10000.0f);
}

/* Large enough for the kernel's parallel path. */
static void test_rope_forward_parallel(void **state)
{
    check_forward(*state, VNM_SHAPE(4, 8, 40, 64), 3, 500000.0f);
}

/* At position ~1e5 an f32 angle is off from the exact one by up to half an ulp of 1e5 (~4e-3
 * rad): the op must round where Hugging Face rounds. */
static void test_rope_large_position_matches_hf_f32(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t off = 100003, BH = 2, T = 3, D = 16, n = BH * T * D;
    vnm_tensor *x = tu_param(ctx, 4, VNM_SHAPE(1, BH, T, D), -1, 1);
    vnm_tensor *y = vnm_rope(ctx, x, off, 10000.0f);
    assert_non_null(y);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    double *hf = malloc((size_t)n * sizeof *hf), *exact = malloc((size_t)n * sizeof *exact);
    ref_rope(hx, hf, BH, T, D, off, 10000.0, true);
    ref_rope(hx, exact, BH, T, D, off, 10000.0, false);
    tu_assert_close(hy, hf, n, 2e-6, 0, "rope at large positions vs HF f32 angles");
    double gap = 0; /* the test means something only if the two conventions differ here */
    for (int64_t i = 0; i < n; i++) gap = fmax(gap, fabs(hf[i] - exact[i]));
    assert_true(gap > 1e-4);
    free(hx);
    free(hy);
    free(hf);
    free(exact);
}

/* Each pair (x[i], x[i + D/2]) is rotated, so its length is kept; position 0 is the identity. */
static void test_rope_preserves_pair_norms(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t BH = 6, T = 7, D = 10, half = D / 2;
    vnm_tensor *x = tu_param(ctx, 4, VNM_SHAPE(2, 3, T, D), -1, 1);
    vnm_tensor *y = vnm_rope(ctx, x, 0, 10000.0f);
    assert_non_null(y);
    float *hx = tu_host(ctx, x), *hy = tu_host(ctx, y);
    float *got = malloc((size_t)(BH * T * half) * sizeof *got);
    double *want = malloc((size_t)(BH * T * half) * sizeof *want);
    for (int64_t r = 0; r < BH * T; r++) {
        for (int64_t i = 0; i < half; i++) {
            const float *xr = hx + r * D, *yr = hy + r * D;
            got[r * half + i] = yr[i] * yr[i] + yr[i + half] * yr[i + half];
            want[r * half + i] = (double)xr[i] * xr[i] + (double)xr[i + half] * xr[i + half];
        }
        if (r % T == 0)
            for (int64_t d = 0; d < D; d++) assert_true(hy[r * D + d] == hx[r * D + d]);
    }
    tu_assert_close(got, want, BH * T * half, 1e-6, 1e-5, "rope pair norms");
    free(hx);
    free(hy);
    free(got);
    free(want);
}

typedef struct {
    int64_t off;
    float theta;
} rope_args;

static vnm_tensor *f_rope(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    const rope_args *a = user;
    return vnm_rope(ctx, in[0], a->off, a->theta);
}

static void test_rope_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    rope_args a = {3, 10000.0f};
    vnm_tensor *in[1] = {tu_param(ctx, 4, VNM_SHAPE(2, 2, 3, 6), -1, 1)};
    tu_gradcheck(ctx, f_rope, 1, in, &a);
}

static vnm_tensor *f_rope_view_twice(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* a [B, T, H, D] projection seen as [B, H, T, D], rotated at two offsets: the
                 * second backward adds into a gradient the first one created */
    vnm_tensor *x = vnm_contiguous(ctx, vnm_transpose(ctx, in[0], 1, 2));
    return vnm_add(ctx, vnm_rope(ctx, x, 0, 500000.0f), vnm_rope(ctx, x, 7, 500000.0f));
}

static void test_rope_gradcheck_view_used_twice(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *in[1] = {tu_param(ctx, 4, VNM_SHAPE(1, 4, 3, 8), -1, 1)};
    tu_gradcheck(ctx, f_rope_view_twice, 1, in, NULL);
}

static void test_rope_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *odd = tu_param(ctx, 4, VNM_SHAPE(1, 2, 3, 5), -1, 1);
    assert_null(vnm_rope(ctx, odd, 0, 10000.0f));
    tu_assert_error(ctx, "D = 5 of input [1, 2, 3, 5] f32 [B, H, T, D] must be even");
    vnm_tensor *x3 = tu_param(ctx, 3, VNM_SHAPE(2, 3, 4), -1, 1);
    assert_null(vnm_rope(ctx, x3, 0, 10000.0f));
    tu_assert_error(ctx, "rope: input must have 4 dims");
    vnm_tensor *x = tu_param(ctx, 4, VNM_SHAPE(1, 2, 3, 4), -1, 1);
    assert_null(vnm_rope(ctx, x, 0, 0.0f));
    tu_assert_error(ctx, "need theta > 0");
    assert_null(vnm_rope(ctx, x, -1, 10000.0f));
    tu_assert_error(ctx, "pos_offset >= 0");
    vnm_tensor *xi = vnm_tensor_new(ctx, VNM_DTYPE_I32, 4, VNM_SHAPE(1, 2, 3, 4));
    assert_null(vnm_rope(ctx, xi, 0, 10000.0f));
    tu_assert_error(ctx, "input must be f32");
    assert_null(vnm_rope(ctx, NULL, 0, 10000.0f)); /* NULL propagates silently */
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rope_forward_offset0_theta10000, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_rope_forward_offset5_theta500000, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_rope_forward_parallel, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rope_large_position_matches_hf_f32, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_rope_preserves_pair_norms, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rope_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rope_gradcheck_view_used_twice, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_rope_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("rope", tests, NULL, NULL);
}
