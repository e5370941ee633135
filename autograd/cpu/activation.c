/* autograd/cpu/activation.c — GELU (exact erf form and tanh approximation, as PyTorch), SiLU and
 * SwiGLU, forward and backward. Every element is independent, so the loops split freely over
 * threads; the formulas follow PyTorch's CPU kernels term for term.
 *
 * Exact GELU (the ViT MLP's activation) and SwiGLU (LLaMA's) also have AVX2 + FMA variants
 * (chosen at run time, see simd.h) with the vector erf and exp of simd.h in place of libm's erff
 * and expf: the same formulas, within about an ulp of the portable variant, 5-10x faster. */
#include <math.h>

#include "../act_math.h"
#include "../backend.h"
#include "simd.h"

/* Below this many elements a thread team costs more than it saves. */
enum { PAR_MIN = 32768 };

#if VNM_CPU_X86
/* gelu(x) = 0.5·x·(1 + erf(x/√2)) and its derivative 0.5·(1 + erf(x/√2)) + x·φ(x) with
 * φ(x) = exp(-x²/2)/√(2π), evaluated in the scalar code's order; exp(-x²/2) is taken as
 * exp(-(x/√2)²), which erf's large branch needs too. */
VNM_CPU_AVX2_INLINE __m256 gelu8(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(VNM_INV_SQRT2));
    __m256 a = _mm256_andnot_ps(sign, z);
    __m256 erf = vnm_v8_erf_abs(a, _mm256_mul_ps(a, a), NULL);
    erf = _mm256_or_ps(erf, _mm256_and_ps(sign, z));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x),
                         _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
}

/* For |x| < √2 (|x/√2| < 1, erf's first branch) the derivative is 0.5 + x·R(x²) with R even and
 * smooth: R(u) = erf(√(u/2))/(2√u) + exp(-u/2)/√(2π), a degree-6 minimax fit on u in [0, 2]
 * (absolute error of x·R 4.4e-9), with no exp at all. Vectors with a lane past that take the
 * full formula; a lane's result does not depend on the other lanes. */
VNM_CPU_AVX2_INLINE __m256 gelu8_derivative_small(__m256 x)
{
    __m256 u = _mm256_mul_ps(x, x);
    __m256 r = _mm256_set1_ps(5.5377472563122865e-06f);
    r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(-0.00010304816532880068f));
    r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(0.0011394242756068707f));
    r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(-0.009486813098192215f));
    r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(0.0598364993929863f));
    r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(-0.2659606337547302f));
    r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(0.7978845238685608f));
    return _mm256_fmadd_ps(x, r, _mm256_set1_ps(0.5f));
}

VNM_CPU_AVX2_INLINE __m256 gelu8_derivative(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(VNM_INV_SQRT2));
    __m256 a = _mm256_andnot_ps(sign, z);
    __m256 small = gelu8_derivative_small(x);
    __m256 large_lane = _mm256_cmp_ps(a, _mm256_set1_ps(1.0f), _CMP_GE_OQ);
    if (_mm256_testz_ps(large_lane, large_lane)) return small;
    __m256 u = _mm256_mul_ps(a, a);
    __m256 e = vnm_v8_exp(_mm256_sub_ps(_mm256_setzero_ps(), u));
    __m256 erf = vnm_v8_erf_abs(a, u, &e);
    erf = _mm256_or_ps(erf, _mm256_and_ps(sign, z));
    __m256 cdf = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
    __m256 full = _mm256_fmadd_ps(_mm256_mul_ps(x, _mm256_set1_ps(VNM_INV_SQRT_2PI)), e, cdf);
    return _mm256_blendv_ps(small, full, large_lane);
}

/* Whole vectors split over threads; the last n % 8 elements go through the same vector code
 * with masked loads and stores, so no element's result depends on where it lies. */
static VNM_CPU_AVX2 void gelu_fwd_avx2(float *y, const float *x, int64_t n)
{
    int64_t nv = n / 8;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t v = 0; v < nv; v++) _mm256_storeu_ps(y + 8 * v, gelu8(_mm256_loadu_ps(x + 8 * v)));
    if (n > nv * 8) {
        __m256i m = vnm_v8_tail_mask(n - nv * 8);
        _mm256_maskstore_ps(y + nv * 8, m, gelu8(_mm256_maskload_ps(x + nv * 8, m)));
    }
}

/* dx += dy·gelu'(x), or dx = dy·gelu'(x) when set (dx is then only written) */
static VNM_CPU_AVX2 void gelu_bwd_avx2(float *dx, const float *x, const float *dy, int64_t n,
                                       bool set)
{
    int64_t nv = n / 8;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t v = 0; v < nv; v++) {
        int64_t i = 8 * v;
        __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dy + i), gelu8_derivative(_mm256_loadu_ps(x + i)));
        _mm256_storeu_ps(dx + i, set ? g : _mm256_add_ps(_mm256_loadu_ps(dx + i), g));
    }
    if (n > nv * 8) {
        int64_t i = nv * 8;
        __m256i m = vnm_v8_tail_mask(n - i);
        __m256 g = _mm256_mul_ps(_mm256_maskload_ps(dy + i, m),
                                 gelu8_derivative(_mm256_maskload_ps(x + i, m)));
        _mm256_maskstore_ps(dx + i, m, set ? g : _mm256_add_ps(_mm256_maskload_ps(dx + i, m), g));
    }
}

/* sigmoid(x) = 1 / (1 + exp(-x)), as vnm_sigmoid */
VNM_CPU_AVX2_INLINE __m256 sigmoid8(__m256 x)
{
    __m256 e = vnm_v8_exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* One vector of SwiGLU at i (m: the lanes to touch): y = silu(g)·u, or its gradients
 * dgate += dy·u·s·(1 + g·(1 − s)), dup += dy·silu(g) with s = sigmoid(g). */
VNM_CPU_AVX2_INLINE void swiglu8(float *y, float *dgate, float *dup, const float *gate,
                                 const float *up, const float *dy, int64_t i, __m256i m)
{
    __m256 g = _mm256_maskload_ps(gate + i, m), s = sigmoid8(g), silu = _mm256_mul_ps(g, s);
    if (y) {
        _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(silu, _mm256_maskload_ps(up + i, m)));
        return;
    }
    __m256 d = _mm256_maskload_ps(dy + i, m);
    if (dgate) {
        const __m256 one = _mm256_set1_ps(1.0f);
        __m256 ds = _mm256_mul_ps(s, _mm256_fmadd_ps(g, _mm256_sub_ps(one, s), one));
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_maskload_ps(up + i, m)), ds);
        _mm256_maskstore_ps(dgate + i, m, _mm256_add_ps(_mm256_maskload_ps(dgate + i, m), t));
    }
    if (dup)
        _mm256_maskstore_ps(dup + i, m,
                            _mm256_add_ps(_mm256_maskload_ps(dup + i, m), _mm256_mul_ps(d, silu)));
}

/* forward when y, else backward; the tail through the same vector code, masked */
static VNM_CPU_AVX2 void swiglu_avx2(float *y, float *dgate, float *dup, const float *gate,
                                     const float *up, const float *dy, int64_t n)
{
    int64_t nv = n / 8;
    const __m256i all = _mm256_set1_epi32(-1);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t v = 0; v < nv; v++) swiglu8(y, dgate, dup, gate, up, dy, 8 * v, all);
    if (n > nv * 8) swiglu8(y, dgate, dup, gate, up, dy, nv * 8, vnm_v8_tail_mask(n - nv * 8));
}
#endif

static void cpu_act_fwd(vnm_act act, float *y, const float *x, int64_t n)
{
#if VNM_CPU_X86
    if (act == VNM_ACT_GELU && vnm_cpu_use_avx2()) {
        gelu_fwd_avx2(y, x, n);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = vnm_act_value(act, x[i]);
}

static void cpu_act_bwd(vnm_act act, float *dx, const float *x, const float *dy, int64_t n)
{
#if VNM_CPU_X86
    if (act == VNM_ACT_GELU && vnm_cpu_use_avx2()) {
        gelu_bwd_avx2(dx, x, dy, n, false);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * vnm_act_derivative(act, x[i]);
}

static void cpu_act_bwd_set(vnm_act act, float *dx, const float *x, const float *dy, int64_t n)
{
#if VNM_CPU_X86
    if (act == VNM_ACT_GELU && vnm_cpu_use_avx2()) {
        gelu_bwd_avx2(dx, x, dy, n, true);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * vnm_act_derivative(act, x[i]);
}

static void cpu_swiglu_fwd(float *y, const float *gate, const float *up, int64_t n)
{
#if VNM_CPU_X86
    if (vnm_cpu_use_avx2()) {
        swiglu_avx2(y, NULL, NULL, gate, up, NULL, n);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = vnm_act_value(VNM_ACT_SILU, gate[i]) * up[i];
}

static void cpu_swiglu_bwd(float *dgate, float *dup, const float *gate, const float *up,
                           const float *dy, int64_t n)
{
#if VNM_CPU_X86
    if (vnm_cpu_use_avx2()) {
        swiglu_avx2(NULL, dgate, dup, gate, up, dy, n);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        if (dgate) dgate[i] += dy[i] * up[i] * vnm_act_derivative(VNM_ACT_SILU, gate[i]);
        if (dup) dup[i] += dy[i] * vnm_act_value(VNM_ACT_SILU, gate[i]);
    }
}

void vnm_cpu_register_activation(vnm_backend *be)
{
    be->act_fwd = cpu_act_fwd;
    be->act_bwd = cpu_act_bwd;
    be->act_bwd_set = cpu_act_bwd_set;
    be->swiglu_fwd = cpu_swiglu_fwd;
    be->swiglu_bwd = cpu_swiglu_bwd;
}
