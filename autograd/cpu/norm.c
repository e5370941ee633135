/* autograd/cpu/norm.c — LayerNorm and RMSNorm over the rows of x[rows, D], forward and backward.
 * RMSNorm is LayerNorm without centring and bias, so both share one row kernel with mean == NULL
 * meaning "not centred". Row statistics accumulate in double. The weight and bias gradients are
 * sums over rows: threads own blocks of columns and add the rows in order, so the result does not
 * depend on the thread count and needs no atomics. */
#include <math.h>

#include "../backend.h"

enum { PAR_MIN = 16384, COLS = 16 }; /* COLS: one cache line of floats per row and block */

/* y = (x - mean)·rstd·w + b per row; mean NULL: RMSNorm (no centring), in the order of Hugging
 * Face's LlamaRMSNorm, w·(x·rstd). */
static void norm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                     const float *b, int64_t rows, int64_t D, float eps)
{
#pragma omp parallel for schedule(static) if (rows * D > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D; /* [D] */
        float *yr = y + r * D;       /* [D] */
        double m = 0.0, ss = 0.0;
        if (mean) {
            for (int64_t j = 0; j < D; j++) m += xr[j];
            m /= (double)D;
        }
        for (int64_t j = 0; j < D; j++) ss += ((double)xr[j] - m) * ((double)xr[j] - m);
        float mf = (float)m, rs = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
        if (mean) mean[r] = mf;
        rstd[r] = rs;
        for (int64_t j = 0; j < D; j++) {
            float v = (xr[j] - mf) * rs;
            if (w) v *= w[j];
            if (b) v += b[j];
            yr[j] = v;
        }
    }
}

/* dx += rstd·(g - mean(g) - x̂·mean(g·x̂)) with g = dy·w and x̂ the normalised row; without
 * centring (mean NULL) the mean(g) term drops out. */
static void norm_bwd_input(float *dx, const float *dy, const float *x, const float *mean,
                           const float *rstd, const float *w, int64_t rows, int64_t D)
{
#pragma omp parallel for schedule(static) if (rows * D > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D, *dyr = dy + r * D; /* [D] */
        float *dxr = dx + r * D;                        /* [D] */
        float m = mean ? mean[r] : 0.0f, rs = rstd[r];
        double sg = 0.0, sgx = 0.0;
        for (int64_t j = 0; j < D; j++) {
            float g = w ? dyr[j] * w[j] : dyr[j];
            sg += g;
            sgx += (double)g * ((xr[j] - m) * rs);
        }
        float a = mean ? (float)(sg / (double)D) : 0.0f, c = (float)(sgx / (double)D);
        for (int64_t j = 0; j < D; j++) {
            float g = w ? dyr[j] * w[j] : dyr[j];
            dxr[j] += rs * (g - a - (xr[j] - m) * rs * c);
        }
    }
}

/* dw += Σ_rows dy·x̂, db += Σ_rows dy (either may be NULL), rows added in order per column. */
static void norm_bwd_params(float *dw, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, int64_t rows, int64_t D)
{
    int64_t blocks = (D + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (rows * D > PAR_MIN)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t j0 = blk * COLS, nc = D - j0 < COLS ? D - j0 : COLS;
        double accw[COLS] = {0}, accb[COLS] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * D + j0, *dyr = dy + r * D + j0;
            float m = mean ? mean[r] : 0.0f, rs = rstd[r];
            for (int64_t j = 0; j < nc; j++) {
                accw[j] += (double)dyr[j] * ((xr[j] - m) * rs);
                accb[j] += dyr[j];
            }
        }
        for (int64_t j = 0; j < nc; j++) {
            if (dw) dw[j0 + j] += (float)accw[j];
            if (db) db[j0 + j] += (float)accb[j];
        }
    }
}

static void cpu_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                              const float *b, int64_t rows, int64_t D, float eps)
{
    norm_fwd(y, mean, rstd, x, w, b, rows, D, eps);
}

static void cpu_layernorm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                              const float *mean, const float *rstd, const float *w, int64_t rows,
                              int64_t D)
{
    if (dx) norm_bwd_input(dx, dy, x, mean, rstd, w, rows, D);
    if (dw || db) norm_bwd_params(dw, db, dy, x, mean, rstd, rows, D);
}

static void cpu_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int64_t rows,
                            int64_t D, float eps)
{
    norm_fwd(y, NULL, rstd, x, w, NULL, rows, D, eps);
}

static void cpu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x,
                            const float *rstd, const float *w, int64_t rows, int64_t D)
{
    if (dx) norm_bwd_input(dx, dy, x, NULL, rstd, w, rows, D);
    if (dw) norm_bwd_params(dw, NULL, dy, x, NULL, rstd, rows, D);
}

void vnm_cpu_register_norm(vnm_backend *be)
{
    be->layernorm_fwd = cpu_layernorm_fwd;
    be->layernorm_bwd = cpu_layernorm_bwd;
    be->rmsnorm_fwd = cpu_rmsnorm_fwd;
    be->rmsnorm_bwd = cpu_rmsnorm_bwd;
}
