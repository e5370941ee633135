/* autograd/cpu/softmax_row.h — the softmax of one row, shared by the softmax, attention and
 * cross-entropy kernels so all three round the same way. The row maximum is subtracted before
 * exponentiating (no overflow at any magnitude) and the sum is accumulated in double.
 *
 * vnm_cpu_softmax_row (autograd/cpu/softmax.c) picks, once per CPU, between the portable row
 * (libm expf, sum in index order) and the AVX2 + FMA row (simd.h's exp, sum in 8 double lanes);
 * a vector kernel may inline the AVX2 row directly, which gives the same values. */
#ifndef VNM_CPU_SOFTMAX_ROW_H
#define VNM_CPU_SOFTMAX_ROW_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

static inline float vnm_cpu_row_max(const float *x, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

/* y[n] = softmax(x[n]) (y may be x); returns log Σ exp(x). n ≥ 1. */
double vnm_cpu_softmax_row(float *y, const float *x, int64_t n);

static inline double vnm_cpu_softmax_row_portable(float *y, const float *x, int64_t n)
{
    float mx = vnm_cpu_row_max(x, n);
    double sum = 0.0;
    for (int64_t j = 0; j < n; j++) {
        float e = expf(x[j] - mx);
        y[j] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n; j++) y[j] *= inv;
    return mx + log(sum);
}

#if VNM_CPU_X86
/* The same row with 8 lanes, in three steps (max; exp and sum; scale) that a kernel with many
 * short rows can run step by step over all its rows, so that the rows' latencies overlap; the
 * values are the same either way. The maximum ignores NaN as the portable loop does (max_ps
 * returns its second operand when either is NaN); the last partial vector is loaded masked with
 * -inf in its empty lanes, which add exp(-inf) = 0, and stored through a small buffer (masked
 * stores are slow on some CPUs). */
VNM_CPU_AVX2_INLINE __m256 vnm_cpu_softmax_tail_avx2(const float *x, int64_t n)
{
    int64_t n8 = n / 8 * 8;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    if (n == n8) return ninf;
    __m256i m = vnm_v8_tail_mask(n - n8);
    return _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + n8, m), _mm256_castsi256_ps(m));
}

VNM_CPU_AVX2_INLINE float vnm_cpu_softmax_max_avx2(const float *x, int64_t n)
{
    __m256 mv = vnm_cpu_softmax_tail_avx2(x, n);
    for (int64_t j = 0; j + 8 <= n; j += 8) mv = _mm256_max_ps(_mm256_loadu_ps(x + j), mv);
    __m128 h = _mm_max_ps(_mm256_extractf128_ps(mv, 1), _mm256_castps256_ps128(mv));
    h = _mm_max_ps(_mm_movehl_ps(h, h), h);
    h = _mm_max_ss(_mm_movehdup_ps(h), h);
    return _mm_cvtss_f32(h);
}

/* y = exp(x - mx), returns Σ y in double (y may be x) */
VNM_CPU_AVX2_INLINE double vnm_cpu_softmax_exp_avx2(float *y, const float *x, int64_t n, float mx)
{
    int64_t n8 = n / 8 * 8, j;
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    __m256 xt = vnm_cpu_softmax_tail_avx2(x, n);
    for (j = 0; j < n8; j += 8) {
        __m256 e = vnm_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmx));
        _mm256_storeu_ps(y + j, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    if (n > n8) {
        float buf[8];
        __m256 e = vnm_v8_exp(_mm256_sub_ps(xt, vmx));
        _mm256_storeu_ps(buf, e);
        memcpy(y + n8, buf, (size_t)((n - n8) & 7) * sizeof *buf);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    s0 = _mm256_add_pd(s0, s1);
    __m128d d = _mm_add_pd(_mm256_castpd256_pd128(s0), _mm256_extractf128_pd(s0, 1));
    return _mm_cvtsd_f64(_mm_add_sd(d, _mm_unpackhi_pd(d, d)));
}

/* y *= (float)(1 / sum) */
VNM_CPU_AVX2_INLINE void vnm_cpu_softmax_scale_avx2(float *y, int64_t n, double sum)
{
    float invf = (float)(1.0 / sum);
    const __m256 inv = _mm256_set1_ps(invf);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(y + j), inv));
    for (; j < n; j++) y[j] *= invf;
}

VNM_CPU_AVX2_INLINE double vnm_cpu_softmax_row_avx2(float *y, const float *x, int64_t n)
{
    float mx = vnm_cpu_softmax_max_avx2(x, n);
    double sum = vnm_cpu_softmax_exp_avx2(y, x, n, mx);
    vnm_cpu_softmax_scale_avx2(y, n, sum);
    return mx + log(sum);
}
#endif

#endif
