/* tests/test_activation.c — GELU (erf and tanh forms), SiLU and SwiGLU: forward against double
 * references of the PyTorch definitions, finite-difference gradients, extreme inputs, errors; the
 * CPU's vector exp and erf (autograd/cpu/simd.h) against double libm, and exact GELU's AVX2 and
 * portable kernels over the whole float range, both ways of writing the gradient, and the
 * independence of a value from its position in the array and the thread count. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/backend.h"
#include "autograd/cpu/simd.h"
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


/* ---- the vector math and exact GELU's two CPU kernels ---- */

static double ulp_of(double v)
{
    double a = fabs(v);
    if (a < FLT_MIN) return ldexp(1.0, -149);
    int e;
    frexp(a, &e);
    return ldexp(1.0, e - 24);
}

#if VNM_CPU_X86
static VNM_CPU_AVX2 void v8_apply(bool is_erf, const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(y + i, is_erf ? vnm_v8_erf(v) : vnm_v8_exp(v));
    }
}
#endif

/* Every k-th float between lo and hi (of one sign), then the vector function against double
 * libm: at most max_ulp units in the last place. */
static void check_v8_range(bool is_erf, float lo, float hi, uint32_t k, double max_ulp)
{
#if VNM_CPU_X86
    uint32_t a, b;
    float alo = fabsf(lo), ahi = fabsf(hi);
    memcpy(&a, &alo, 4);
    memcpy(&b, &ahi, 4);
    if (a > b) {
        uint32_t t = a;
        a = b;
        b = t;
    }
    float sign = lo < 0 || hi < 0 ? -1.0f : 1.0f;
    int64_t n = ((int64_t)(b - a) / k + 8) / 8 * 8;
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = a + (uint32_t)(i * (int64_t)k < (int64_t)(b - a) ? i * (int64_t)k : b - a);
        memcpy(&x[i], &u, 4);
        x[i] *= sign;
    }
    v8_apply(is_erf, x, y, n);
    double worst = 0;
    float at = 0;
    for (int64_t i = 0; i < n; i++) {
        double want = is_erf ? erf((double)x[i]) : exp((double)x[i]);
        if (isinf(want) || want > FLT_MAX) {
            if (!isinf(y[i])) fail_msg("%s(%g) = %g, want inf", is_erf ? "erf" : "exp", x[i], y[i]);
            continue;
        }
        double e = fabs((double)y[i] - want) / ulp_of(want);
        if (!(e <= worst)) {
            worst = e;
            at = x[i];
        }
    }
    if (!(worst <= max_ulp))
        fail_msg("%s: %.3f ulp at %.9g (allowed %.2f)", is_erf ? "vnm_v8_erf" : "vnm_v8_exp", worst,
                 at, max_ulp);
    free(x);
    free(y);
#else
    (void)is_erf, (void)lo, (void)hi, (void)k, (void)max_ulp;
#endif
}

static void test_vector_exp_erf_accuracy(void **state)
{
    (void)state;
    if (!vnm_cpu_use_avx2()) skip();
    check_v8_range(false, -103.9f, -87.0f, 61, 1.0);  /* subnormal results */
    check_v8_range(false, -87.0f, -1.0f, 997, 1.05);
    check_v8_range(false, -1.0f, -1e-30f, 1009, 1.0);
    check_v8_range(false, 1e-30f, 1.0f, 1009, 1.0);
    check_v8_range(false, 1.0f, 88.72f, 997, 1.05);
    check_v8_range(true, 1e-38f, 0.5f, 1013, 1.0);
    check_v8_range(true, 0.5f, 1.0f, 37, 1.0);
    check_v8_range(true, 1.0f, 6.0f, 37, 1.0);
    check_v8_range(true, -6.0f, -1e-38f, 1013, 1.0);
#if VNM_CPU_X86
    const float special[8] = {INFINITY, -INFINITY, NAN, 1e30f, -1e30f, 0.0f, -0.0f, 1e-45f};
    float e[8], f[8];
    v8_apply(false, special, e, 8);
    v8_apply(true, special, f, 8);
    assert_true(isinf(e[0]) && e[0] > 0 && e[1] == 0.0f && isnan(e[2]) && isinf(e[3]));
    assert_true(e[4] == 0.0f && e[5] == 1.0f && e[6] == 1.0f && e[7] == 1.0f);
    assert_true(f[0] == 1.0f && f[1] == -1.0f && isnan(f[2]) && f[3] == 1.0f && f[4] == -1.0f);
    assert_true(f[5] == 0.0f && !signbit(f[5]) && f[6] == 0.0f && signbit(f[6]));
    assert_true(f[7] > 0.0f && f[7] < 1e-44f);
#endif
}

/* Inputs covering the whole float range: a dense grid where GELU bends, spread magnitudes from
 * subnormal to FLT_MAX, both signs, and the specials. */
static float *gelu_inputs(int64_t *count)
{
    enum { GRID = 40001, SPREAD = 600 };
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, FLT_MAX, -FLT_MAX,
                             FLT_MIN, -FLT_MIN, 1e-45f, -1e-45f, 1.0f, -1.0f,
                             1.41421354f, -1.41421354f, 1.41421366f, -1.41421366f, 5.6568542f,
                             -5.6568542f, 5.6568546f, -5.6568546f, 13.5f, -13.5f, 100.0f, -100.0f};
    int64_t ns = (int64_t)(sizeof special / sizeof *special), n = GRID + 2 * SPREAD + ns;
    float *x = malloc((size_t)n * sizeof *x);
    int64_t k = 0;
    for (int64_t i = 0; i < GRID; i++) x[k++] = -10.0f + 20.0f * (float)i / (GRID - 1);
    for (int64_t i = 0; i < SPREAD; i++) {
        float m = powf(10.0f, -44.0f + 82.0f * (float)i / SPREAD);
        x[k++] = m;
        x[k++] = -m;
    }
    for (int64_t i = 0; i < ns; i++) x[k++] = special[i];
    *count = k;
    return x;
}

static double ref_gelu(double x) { return ref_act(GELU, x); }
static double ref_gelu_grad(double x) { return ref_act_grad(GELU, x); }

/* got against want: NaN where want is NaN, the same inf, else within the op tests' tolerance
 * (the 1 + erf of the formula cancels for x < 0, so far from zero the error is absolute). */
static void check_value(const char *what, float x, float got, double want)
{
    if (isnan(want)) {
        if (!isnan(got)) fail_msg("%s(%g) = %g, want NaN", what, x, got);
        return;
    }
    if (isinf(want)) {
        if (got != (float)want) fail_msg("%s(%g) = %g, want %g", what, x, got, want);
        return;
    }
    if (!(fabs(got - want) <= 1e-6 + 1e-5 * fabs(want) || fabs(got - want) <= 2 * ulp_of(want)))
        fail_msg("%s(%.9g) = %.9g, want %.9g", what, x, got, want);
}

static void check_gelu_kernels(bool portable)
{
    vnm_cpu_force_portable(portable);
    const vnm_backend *be = vnm_backend_cpu();
    int64_t n;
    float *x = gelu_inputs(&n);
    float *y = malloc((size_t)n * sizeof *y), *dy = malloc((size_t)n * sizeof *dy);
    float *dx = malloc((size_t)n * sizeof *dx), *acc = malloc((size_t)n * sizeof *acc);
    for (int64_t i = 0; i < n; i++) {
        dy[i] = 1.0f;
        dx[i] = NAN; /* act_bwd_set must not read it */
        acc[i] = 0.25f;
    }
    be->act_fwd(VNM_ACT_GELU, y, x, n);
    be->act_bwd_set(VNM_ACT_GELU, dx, x, dy, n);
    be->act_bwd(VNM_ACT_GELU, acc, x, dy, n);
    for (int64_t i = 0; i < n; i++) {
        double gx = ref_gelu(x[i]), gd = ref_gelu_grad(x[i]);
        if (isinf(x[i])) gd = NAN; /* x·φ(x) is inf·0 in the formula, as in PyTorch */
        if (x[i] == -INFINITY) gx = NAN; /* -inf·(1 + erf(-inf)) = -inf·0 */
        check_value(portable ? "gelu (portable)" : "gelu (avx2)", x[i], y[i], gx);
        check_value(portable ? "gelu' (portable)" : "gelu' (avx2)", x[i], dx[i], gd);
        if (isnan(gd))
            assert_true(isnan(acc[i]));
        else if (!(fabsf(acc[i] - (0.25f + dx[i])) <= 1e-7f * (1.0f + fabsf(dx[i]))))
            fail_msg("act_bwd adds: %g + %g != %g at x = %g", 0.25, dx[i], acc[i], x[i]);
    }
    for (int64_t i = 0; i < n; i++) /* ±0 keep their sign */
        if (x[i] == 0.0f) assert_true(y[i] == 0.0f && signbit(y[i]) == signbit(x[i]));
    free(x);
    free(y);
    free(dy);
    free(dx);
    free(acc);
    vnm_cpu_force_portable(false);
}

/* A failed assertion leaves the test early: the kernel choice goes back to run-time selection
 * whatever happened. */
static int reset_kernels(void **state)
{
    vnm_cpu_force_portable(false);
    return tu_teardown(state);
}

static int reset_kernels_only(void **state)
{
    (void)state;
    vnm_cpu_force_portable(false);
    return 0;
}

static void test_gelu_kernels_portable(void **state)
{
    (void)state;
    check_gelu_kernels(true);
}

static void test_gelu_kernels_avx2(void **state)
{
    (void)state;
    if (!vnm_cpu_use_avx2()) skip();
    check_gelu_kernels(false);
}

/* SwiGLU's kernels (portable, AVX2) against double references over a dense grid and spread
 * magnitudes: y = silu(g)·u, dgate += dy·u·silu'(g), dup += dy·silu(g), for an odd n so the
 * vector kernel's masked tail is used. */
static void check_swiglu_kernels(bool portable)
{
    vnm_cpu_force_portable(portable);
    const vnm_backend *be = vnm_backend_cpu();
    enum { N = 20011 };
    float *g = malloc(N * sizeof *g), *u = malloc(N * sizeof *u), *y = malloc(N * sizeof *y);
    float *dy = malloc(N * sizeof *dy), *dg = malloc(N * sizeof *dg), *du = malloc(N * sizeof *du);
    for (int64_t i = 0; i < N; i++) {
        float spread = powf(10.0f, -30.0f + 33.0f * (float)(i % 997) / 997);
        g[i] = i < N - 2000 ? -30.0f + 60.0f * (float)i / (N - 2001) : (i % 2 ? -spread : spread);
        u[i] = 0.5f + (float)(i % 7) * 0.25f;
        dy[i] = 1.0f - (float)(i % 5) * 0.125f;
        dg[i] = du[i] = 0.0f;
    }
    be->swiglu_fwd(y, g, u, N);
    be->swiglu_bwd(dg, du, g, u, dy, N);
    const char *k = portable ? "portable" : "avx2";
    char what[64];
    for (int64_t i = 0; i < N; i++) {
        snprintf(what, sizeof what, "swiglu (%s)", k);
        check_value(what, g[i], y[i], ref_act(SILU, g[i]) * u[i]);
        snprintf(what, sizeof what, "swiglu dgate (%s)", k);
        check_value(what, g[i], dg[i], (double)dy[i] * u[i] * ref_act_grad(SILU, g[i]));
        snprintf(what, sizeof what, "swiglu dup (%s)", k);
        check_value(what, g[i], du[i], (double)dy[i] * ref_act(SILU, g[i]));
    }
    free(g), free(u), free(y), free(dy), free(dg), free(du);
    vnm_cpu_force_portable(false);
}

static void test_swiglu_kernels_both(void **state)
{
    (void)state;
    check_swiglu_kernels(true);
    if (vnm_cpu_use_avx2()) check_swiglu_kernels(false);
}

/* A value's result does not depend on where it lies (whole vectors, the masked tail) nor on the
 * thread count; the two kernels agree to about an ulp. */
static void test_gelu_kernels_position_and_threads(void **state)
{
    (void)state;
    const vnm_backend *be = vnm_backend_cpu();
    enum { N = 70001 }; /* over the threading threshold, not a multiple of 8 */
    float *x = malloc(N * sizeof *x), *y1 = malloc(N * sizeof *y1), *y2 = malloc(N * sizeof *y2);
    float *d1 = malloc(N * sizeof *d1), *d2 = malloc(N * sizeof *d2), *one = malloc(N * sizeof *one);
    float *yp = malloc(N * sizeof *yp), *dp = malloc(N * sizeof *dp);
    for (int i = 0; i < N; i++) {
        x[i] = 6.0f * sinf((float)i * 0.37f) * (i % 7 == 0 ? 2.0f : 1.0f);
        one[i] = 1.0f;
    }
    int threads = omp_get_max_threads();
    be->act_fwd(VNM_ACT_GELU, y1, x, N);
    be->act_bwd_set(VNM_ACT_GELU, d1, x, one, N);
    omp_set_num_threads(1);
    for (int off = 0; off < 9; off++) { /* each start shifts every value to another lane */
        be->act_fwd(VNM_ACT_GELU, y2, x + off, N - off);
        be->act_bwd_set(VNM_ACT_GELU, d2, x + off, one, N - off);
        assert_memory_equal(y2, y1 + off, (size_t)(N - off) * sizeof *y2);
        assert_memory_equal(d2, d1 + off, (size_t)(N - off) * sizeof *d2);
    }
    for (int len = 1; len < 17; len++) { /* arrays shorter than a vector or two */
        be->act_fwd(VNM_ACT_GELU, y2, x + 100, len);
        assert_memory_equal(y2, y1 + 100, (size_t)len * sizeof *y2);
    }
    omp_set_num_threads(threads);
    vnm_cpu_force_portable(true);
    be->act_fwd(VNM_ACT_GELU, yp, x, N);
    be->act_bwd_set(VNM_ACT_GELU, dp, x, one, N);
    vnm_cpu_force_portable(false);
    for (int i = 0; i < N; i++) {
        assert_true(fabsf(y1[i] - yp[i]) <= 3e-7f * (1.0f + fabsf(x[i])));
        assert_true(fabsf(d1[i] - dp[i]) <= 3e-7f * (1.0f + fabsf(x[i])));
    }
    free(x);
    free(y1);
    free(y2);
    free(d1);
    free(d2);
    free(one);
    free(yp);
    free(dp);
}

/* The op's backward writes a new gradient buffer (act_bwd_set) and adds into one that exists:
 * the same gradients either way, with the portable kernels too. */
static vnm_tensor *f_gelu_twice(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user; /* x's gradient: new for the second gelu's backward, existing for the first's */
    return vnm_add(ctx, vnm_gelu(ctx, in[0]), vnm_scale(ctx, vnm_gelu(ctx, in[0]), 0.5f));
}

static void test_gelu_gradcheck_both_kernels(void **state)
{
    vnm_ctx *ctx = *state;
    for (int portable = 0; portable <= 1; portable++) {
        vnm_cpu_force_portable(portable);
        vnm_tensor *in[1] = {tu_param(ctx, 2, VNM_SHAPE(7, 9), -4, 4)};
        tu_gradcheck(ctx, f_gelu_twice, 1, in, NULL);
        gradcheck_act(ctx, GELU);
    }
    vnm_cpu_force_portable(false);
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
        cmocka_unit_test(test_vector_exp_erf_accuracy),
        cmocka_unit_test_teardown(test_gelu_kernels_portable, reset_kernels_only),
        cmocka_unit_test_teardown(test_swiglu_kernels_both, reset_kernels_only),
        cmocka_unit_test_teardown(test_gelu_kernels_avx2, reset_kernels_only),
        cmocka_unit_test_teardown(test_gelu_kernels_position_and_threads, reset_kernels_only),
        cmocka_unit_test_setup_teardown(test_gelu_gradcheck_both_kernels, tu_setup, reset_kernels),
    };
    return cmocka_run_group_tests_name("activation", tests, NULL, NULL);
}
