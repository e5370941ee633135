/* autograd/cpu/softmax_row.h — the softmax of one row, shared by the softmax, attention and
 * cross-entropy kernels so all three round the same way. The row maximum is subtracted before
 * exponentiating (no overflow at any magnitude) and the sum is accumulated in double. */
#ifndef VNM_CPU_SOFTMAX_ROW_H
#define VNM_CPU_SOFTMAX_ROW_H

#include <math.h>
#include <stdint.h>

static inline float vnm_cpu_row_max(const float *x, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

/* y[n] = softmax(x[n]) (y may be x); returns log Σ exp(x). n ≥ 1. */
static inline double vnm_cpu_softmax_row(float *y, const float *x, int64_t n)
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

#endif
