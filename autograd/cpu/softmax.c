/* autograd/cpu/softmax.c — softmax and log-softmax over the rows of x[rows, D], forward and
 * backward. The row maximum is subtracted before exponentiating so no exp overflows, whatever the
 * magnitude of the inputs; rows are independent, so threads split them. Also the choice between
 * the portable and the AVX2 row of softmax_row.h (vnm_cpu_softmax_row). */
#include <math.h>

#include "../backend.h"
#include "softmax_row.h"

#if VNM_CPU_X86
static VNM_CPU_AVX2 double softmax_row_avx2(float *y, const float *x, int64_t n)
{
    return vnm_cpu_softmax_row_avx2(y, x, n);
}
#endif

double vnm_cpu_softmax_row(float *y, const float *x, int64_t n)
{
#if VNM_CPU_X86
    if (vnm_cpu_use_avx2()) return softmax_row_avx2(y, x, n);
#endif
    return vnm_cpu_softmax_row_portable(y, x, n);
}

static void cpu_softmax_fwd(float *y, const float *x, int64_t rows, int64_t D, bool take_log)
{
#pragma omp parallel for schedule(static) if (rows * D > 16384)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D; /* [D] */
        float *yr = y + r * D;       /* [D] */
        if (!take_log) {
            vnm_cpu_softmax_row(yr, xr, D);
            continue;
        }
        float mx = vnm_cpu_row_max(xr, D);
        double sum = 0.0;
        for (int64_t j = 0; j < D; j++) sum += expf(xr[j] - mx);
        /* (x - max) first: adding max back into the log-sum would round it at max's scale */
        float ls = (float)log(sum);
        for (int64_t j = 0; j < D; j++) yr[j] = (xr[j] - mx) - ls;
    }
}

/* softmax: dx += y·(dy - Σ dy·y); log-softmax: dx += dy - exp(y)·Σ dy */
static void cpu_softmax_bwd(float *dx, const float *y, const float *dy, int64_t rows, int64_t D,
                            bool take_log)
{
#pragma omp parallel for schedule(static) if (rows * D > 16384)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * D, *dyr = dy + r * D; /* [D] */
        float *dxr = dx + r * D;                        /* [D] */
        double acc = 0.0;
        for (int64_t j = 0; j < D; j++) acc += take_log ? (double)dyr[j] : (double)dyr[j] * yr[j];
        float s = (float)acc;
        if (take_log)
            for (int64_t j = 0; j < D; j++) dxr[j] += dyr[j] - expf(yr[j]) * s;
        else
            for (int64_t j = 0; j < D; j++) dxr[j] += yr[j] * (dyr[j] - s);
    }
}

void vnm_cpu_register_softmax(vnm_backend *be)
{
    be->softmax_fwd = cpu_softmax_fwd;
    be->softmax_bwd = cpu_softmax_bwd;
}
