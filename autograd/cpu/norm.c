/* autograd/cpu/norm.c — LayerNorm and RMSNorm over the rows of x[rows, D], forward and backward.
 * RMSNorm is LayerNorm without centring and bias, so both share one row kernel with mean == NULL
 * meaning "not centred". Row statistics accumulate in double. The weight and bias gradients are
 * sums over rows: threads own blocks of columns and add the rows in order, so the result does not
 * depend on the thread count and needs no atomics.
 *
 * Each row (and column block) kernel has a portable and an AVX2 + FMA variant, chosen at run time
 * (simd.h). They compute the same float expressions in the same order; only the double row sums
 * are added in a different order (in vector lanes), which can move a result by a rounding. */
#include <math.h>

#include "../backend.h"
#include "simd.h"

enum { PAR_MIN = 16384, COLS = 16 }; /* COLS: one cache line of floats per row and block */

/* ---- portable ---- */

/* y = (x - mean)·rstd·w + b for one row; mean NULL: RMSNorm (no centring), in the order of
 * Hugging Face's LlamaRMSNorm, w·(x·rstd). */
static void fwd_row(float *yr, float *mean, float *rstd, const float *xr, const float *w,
                    const float *b, int64_t D, float eps)
{
    double m = 0.0, ss = 0.0;
    if (mean) {
        for (int64_t j = 0; j < D; j++) m += xr[j];
        m /= (double)D;
    }
    for (int64_t j = 0; j < D; j++) ss += ((double)xr[j] - m) * ((double)xr[j] - m);
    float mf = (float)m, rs = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
    if (mean) *mean = mf;
    *rstd = rs;
    for (int64_t j = 0; j < D; j++) {
        float v = (xr[j] - mf) * rs;
        if (w) v *= w[j];
        if (b) v += b[j];
        yr[j] = v;
    }
}

/* dx += rstd·(g - mean(g) - x̂·mean(g·x̂)) with g = dy·w and x̂ the normalised row; without
 * centring (mean NULL) the mean(g) term drops out. */
static void bwd_input_row(float *dxr, const float *dyr, const float *xr, const float *mean,
                          float rs, const float *w, int64_t D)
{
    float m = mean ? *mean : 0.0f;
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

/* dw[j0 ..] += Σ_rows dy·x̂, db[j0 ..] += Σ_rows dy over nc ≤ COLS columns, rows in order. */
static void bwd_params_block(float *dw, float *db, const float *dy, const float *x,
                             const float *mean, const float *rstd, int64_t rows, int64_t D,
                             int64_t j0, int64_t nc)
{
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

/* ---- AVX2 + FMA ---- */
#if VNM_CPU_X86
VNM_CPU_AVX2_INLINE double hsum_pd(__m256d v)
{
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

VNM_CPU_AVX2_INLINE __m256d lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
VNM_CPU_AVX2_INLINE __m256d hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

static VNM_CPU_AVX2 void fwd_row_avx2(float *yr, float *mean, float *rstd, const float *xr,
                                      const float *w, const float *b, int64_t D, float eps)
{
    int64_t D8 = D / 8 * 8, j;
    double m = 0.0, ss = 0.0;
    if (mean) {
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        for (j = 0; j < D8; j += 8) {
            __m256 v = _mm256_loadu_ps(xr + j);
            s0 = _mm256_add_pd(s0, lo_pd(v));
            s1 = _mm256_add_pd(s1, hi_pd(v));
        }
        m = hsum_pd(_mm256_add_pd(s0, s1));
        for (; j < D; j++) m += xr[j];
        m /= (double)D;
    }
    {
        const __m256d vm = _mm256_set1_pd(m);
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        for (j = 0; j < D8; j += 8) {
            __m256 v = _mm256_loadu_ps(xr + j);
            __m256d d0 = _mm256_sub_pd(lo_pd(v), vm), d1 = _mm256_sub_pd(hi_pd(v), vm);
            s0 = _mm256_add_pd(s0, _mm256_mul_pd(d0, d0));
            s1 = _mm256_add_pd(s1, _mm256_mul_pd(d1, d1));
        }
        ss = hsum_pd(_mm256_add_pd(s0, s1));
        for (; j < D; j++) ss += ((double)xr[j] - m) * ((double)xr[j] - m);
    }
    float mf = (float)m, rs = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
    if (mean) *mean = mf;
    *rstd = rs;
    const __m256 vmf = _mm256_set1_ps(mf), vrs = _mm256_set1_ps(rs);
    for (j = 0; j < D8; j += 8) {
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j), vmf), vrs);
        if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + j));
        if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + j));
        _mm256_storeu_ps(yr + j, v);
    }
    for (; j < D; j++) {
        float v = (xr[j] - mf) * rs;
        if (w) v *= w[j];
        if (b) v += b[j];
        yr[j] = v;
    }
}

static VNM_CPU_AVX2 void bwd_input_row_avx2(float *dxr, const float *dyr, const float *xr,
                                            const float *mean, float rs, const float *w,
                                            int64_t D)
{
    int64_t D8 = D / 8 * 8, j;
    float m = mean ? *mean : 0.0f;
    const __m256 vm = _mm256_set1_ps(m), vrs = _mm256_set1_ps(rs);
    __m256d g0 = _mm256_setzero_pd(), g1 = _mm256_setzero_pd();
    __m256d x0 = _mm256_setzero_pd(), x1 = _mm256_setzero_pd();
    for (j = 0; j < D8; j += 8) {
        __m256 g = _mm256_loadu_ps(dyr + j);
        if (w) g = _mm256_mul_ps(g, _mm256_loadu_ps(w + j));
        __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j), vm), vrs);
        __m256d gl = lo_pd(g), gh = hi_pd(g);
        g0 = _mm256_add_pd(g0, gl);
        g1 = _mm256_add_pd(g1, gh);
        x0 = _mm256_fmadd_pd(gl, lo_pd(xh), x0); /* the product is exact: as mul then add */
        x1 = _mm256_fmadd_pd(gh, hi_pd(xh), x1);
    }
    double sg = hsum_pd(_mm256_add_pd(g0, g1)), sgx = hsum_pd(_mm256_add_pd(x0, x1));
    for (; j < D; j++) {
        float g = w ? dyr[j] * w[j] : dyr[j];
        sg += g;
        sgx += (double)g * ((xr[j] - m) * rs);
    }
    float a = mean ? (float)(sg / (double)D) : 0.0f, c = (float)(sgx / (double)D);
    const __m256 va = _mm256_set1_ps(a), vc = _mm256_set1_ps(c);
    for (j = 0; j < D8; j += 8) {
        __m256 g = _mm256_loadu_ps(dyr + j);
        if (w) g = _mm256_mul_ps(g, _mm256_loadu_ps(w + j));
        __m256 xhc = _mm256_mul_ps(
            _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j), vm), vrs), vc);
        __m256 t = _mm256_mul_ps(vrs, _mm256_sub_ps(_mm256_sub_ps(g, va), xhc));
        _mm256_storeu_ps(dxr + j, _mm256_add_ps(_mm256_loadu_ps(dxr + j), t));
    }
    for (; j < D; j++) {
        float g = w ? dyr[j] * w[j] : dyr[j];
        dxr[j] += rs * (g - a - (xr[j] - m) * rs * c);
    }
}

static VNM_CPU_AVX2 void bwd_params_block_avx2(float *dw, float *db, const float *dy,
                                               const float *x, const float *mean,
                                               const float *rstd, int64_t rows, int64_t D,
                                               int64_t j0, int64_t nc)
{
    if (nc != COLS) {
        bwd_params_block(dw, db, dy, x, mean, rstd, rows, D, j0, nc);
        return;
    }
    __m256d aw[4], ab[4];
    for (int k = 0; k < 4; k++) aw[k] = ab[k] = _mm256_setzero_pd();
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D + j0, *dyr = dy + r * D + j0;
        const __m256 vm = _mm256_set1_ps(mean ? mean[r] : 0.0f), vrs = _mm256_set1_ps(rstd[r]);
        for (int h = 0; h < 2; h++) {
            __m256 d = _mm256_loadu_ps(dyr + 8 * h);
            __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + 8 * h), vm), vrs);
            __m256d dl = lo_pd(d), dh = hi_pd(d);
            aw[2 * h] = _mm256_fmadd_pd(dl, lo_pd(xh), aw[2 * h]); /* exact product */
            aw[2 * h + 1] = _mm256_fmadd_pd(dh, hi_pd(xh), aw[2 * h + 1]);
            ab[2 * h] = _mm256_add_pd(ab[2 * h], dl);
            ab[2 * h + 1] = _mm256_add_pd(ab[2 * h + 1], dh);
        }
    }
    for (int k = 0; k < 4; k++) {
        __m128 w4 = _mm256_cvtpd_ps(aw[k]), b4 = _mm256_cvtpd_ps(ab[k]);
        if (dw) _mm_storeu_ps(dw + j0 + 4 * k, _mm_add_ps(_mm_loadu_ps(dw + j0 + 4 * k), w4));
        if (db) _mm_storeu_ps(db + j0 + 4 * k, _mm_add_ps(_mm_loadu_ps(db + j0 + 4 * k), b4));
    }
}
#endif

/* ---- kernels ---- */

typedef void (*fwd_row_fn)(float *, float *, float *, const float *, const float *, const float *,
                           int64_t, float);
typedef void (*bwd_input_row_fn)(float *, const float *, const float *, const float *, float,
                                 const float *, int64_t);
typedef void (*bwd_params_block_fn)(float *, float *, const float *, const float *, const float *,
                                    const float *, int64_t, int64_t, int64_t, int64_t);

static void norm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                     const float *b, int64_t rows, int64_t D, float eps)
{
    fwd_row_fn row = fwd_row;
#if VNM_CPU_X86
    if (vnm_cpu_use_avx2()) row = fwd_row_avx2;
#endif
#pragma omp parallel for schedule(static) if (rows * D > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        row(y + r * D, mean ? mean + r : NULL, rstd + r, x + r * D, w, b, D, eps);
}

static void norm_bwd_input(float *dx, const float *dy, const float *x, const float *mean,
                           const float *rstd, const float *w, int64_t rows, int64_t D)
{
    bwd_input_row_fn row = bwd_input_row;
#if VNM_CPU_X86
    if (vnm_cpu_use_avx2()) row = bwd_input_row_avx2;
#endif
#pragma omp parallel for schedule(static) if (rows * D > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        row(dx + r * D, dy + r * D, x + r * D, mean ? mean + r : NULL, rstd[r], w, D);
}

/* dw += Σ_rows dy·x̂, db += Σ_rows dy (either may be NULL), rows added in order per column. */
static void norm_bwd_params(float *dw, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, int64_t rows, int64_t D)
{
    bwd_params_block_fn block = bwd_params_block;
#if VNM_CPU_X86
    if (vnm_cpu_use_avx2()) block = bwd_params_block_avx2;
#endif
    int64_t blocks = (D + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (rows * D > PAR_MIN)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t j0 = blk * COLS, nc = D - j0 < COLS ? D - j0 : COLS;
        block(dw, db, dy, x, mean, rstd, rows, D, j0, nc);
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
