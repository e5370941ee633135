/* autograd/cpu/simd.h — the run-time ISA choice of the CPU kernels in autograd/cpu/ and the
 * AVX2 + FMA vector math they share (exp, erf), for kernels that have a vector variant.
 *
 * A build stays portable (no -march): vector code is compiled with target("avx2,fma") and a kernel
 * picks it at run time through vnm_cpu_use_avx2(), which tests can switch off to run the portable
 * variant on the same machine. Either variant gives the same result for an element whatever the
 * thread count or the element's position in the array (the vector paths run the array's tail
 * through the same vector code, masked), so only the CPU model decides which rounding you get.
 *
 * Accuracy (checked in tests/test_activation.c against double libm): vnm_v8_exp within 1.01 ulp
 * of exp over the whole float range (subnormal results included), vnm_v8_erf within 1 ulp of erf
 * (glibc's erff: 0.97); both propagate NaN and take ±inf to their limits. */
#ifndef VNM_CPU_SIMD_H
#define VNM_CPU_SIMD_H

#include <stdbool.h>
#include <stdint.h>

/* Tests: true forces the portable kernels, false returns to run-time selection. */
void vnm_cpu_force_portable(bool on);
/* Whether the AVX2 + FMA kernels run: the CPU has them and they are not forced off. */
bool vnm_cpu_use_avx2(void);

#if defined(__x86_64__) && defined(__GNUC__)
#define VNM_CPU_X86 1
#include <immintrin.h>
#define VNM_CPU_AVX2 __attribute__((target("avx2,fma")))
#define VNM_CPU_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* Lanes [0, n) set, n in 0..8: the mask of a partial vector at an array's tail. */
VNM_CPU_AVX2_INLINE __m256i vnm_v8_tail_mask(int64_t n)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane);
}

/* exp(x): x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts), e^r by Cephes' expf polynomial,
 * then 2^n applied as two factors so that subnormal results round once more instead of
 * flushing to 0. x ≥ 88.73 gives inf, x ≤ -103.98 gives 0, NaN stays NaN. */
VNM_CPU_AVX2_INLINE __m256 vnm_v8_exp(__m256 x)
{
    /* max/min return their second operand when either is NaN: x goes second to keep NaN */
    x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);
    x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    /* 1 + (r + r²·p): one rounding at the end, so the result stays within 1 ulp */
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    /* 2^n = 2^h · 2^(n-h), h = n/2 rounded down: both factors are normal floats for n in
     * [-150, 128] */
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i h = _mm256_srai_epi32(ni, 1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* erf(|z|) given a = |z| and u = a², the pieces GELU also needs:
 *   a < 1:  a + a·Q(u), Q a degree-6 minimax fit of erf(a)/a - 1 (relative error 1.2e-9);
 *   a ≥ 1:  1 - e·G(min(a, 4)), e = exp(-u) supplied by the caller, G a degree-8 fit of
 *           erfc(a)·exp(a²) in (a - 2.5) (absolute error of erfc 2.4e-9); past a ≈ 3.92 the
 *           difference rounds to 1, as erff's value does.
 * The second branch is computed only when some lane needs it; a lane's result is the same
 * either way. NaN lanes take the first branch and stay NaN. */
VNM_CPU_AVX2_INLINE __m256 vnm_v8_erf_abs_small(__m256 a, __m256 u)
{
    __m256 q = _mm256_set1_ps(7.853857823647559e-05f);
    q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(-0.0008010192541405559f));
    q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(0.005188327748328447f));
    q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(-0.026853810995817184f));
    q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(0.1128358542919159f));
    q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(-0.3761262595653534f));
    q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(0.12837916612625122f));
    return _mm256_fmadd_ps(a, q, a);
}

VNM_CPU_AVX2_INLINE __m256 vnm_v8_erf_abs_large(__m256 a, __m256 e)
{
    __m256 s = _mm256_sub_ps(_mm256_min_ps(_mm256_set1_ps(4.0f), a), _mm256_set1_ps(2.5f));
    __m256 g = _mm256_set1_ps(0.00010684288281481713f);
    g = _mm256_fmadd_ps(g, s, _mm256_set1_ps(0.00022506105597130954f));
    g = _mm256_fmadd_ps(g, s, _mm256_set1_ps(0.0005433166516013443f));
    g = _mm256_fmadd_ps(g, s, _mm256_set1_ps(-0.0006611228454858065f));
    g = _mm256_fmadd_ps(g, s, _mm256_set1_ps(0.002302503911778331f));
    g = _mm256_fmadd_ps(g, s, _mm256_set1_ps(-0.008132250048220158f));
    g = _mm256_fmadd_ps(g, s, _mm256_set1_ps(0.02491462603211403f));
    g = _mm256_fmadd_ps(g, s, _mm256_set1_ps(-0.07434218376874924f));
    g = _mm256_fmadd_ps(g, s, _mm256_set1_ps(0.21080760657787323f));
    return _mm256_fnmadd_ps(e, g, _mm256_set1_ps(1.0f));
}

/* erf(|z|) for a = |z|, u = a·a; e = exp(-u) is computed here unless the caller has it
 * (e_in non-NULL). */
VNM_CPU_AVX2_INLINE __m256 vnm_v8_erf_abs(__m256 a, __m256 u, const __m256 *e_in)
{
    __m256 small = vnm_v8_erf_abs_small(a, u);
    __m256 large_lane = _mm256_cmp_ps(a, _mm256_set1_ps(1.0f), _CMP_GE_OQ);
    if (_mm256_testz_ps(large_lane, large_lane)) return small;
    __m256 e = e_in ? *e_in : vnm_v8_exp(_mm256_sub_ps(_mm256_setzero_ps(), u));
    return _mm256_blendv_ps(small, vnm_v8_erf_abs_large(a, e), large_lane);
}

VNM_CPU_AVX2_INLINE __m256 vnm_v8_erf(__m256 z)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, z);
    __m256 r = vnm_v8_erf_abs(a, _mm256_mul_ps(a, a), NULL);
    return _mm256_or_ps(r, _mm256_and_ps(sign, z));
}
#else
#define VNM_CPU_X86 0
#endif

#endif
