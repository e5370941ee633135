/* sparse/cpu/spmm_dw.c — weight gradient dvals += (dyᵀ·x) at the kept positions of a compressed
 * weight (an SDDMM: only the 2/M kept products are computed).
 *
 * x and dy (stored-row order, zeros for padding rows) are packed into blocks of TB tokens, each
 * a feature-major [rows][TB] slab, so every kept (row, column) pair is a dot product of two
 * contiguous TB-float rows. A tile of R rows × 2 kept values per group keeps its 2R partial sums
 * in registers over the TB tokens, reading the x rows its slot codes name, and reduces them once
 * per token block. Groups run in chunks of KC so the chunk's x rows and the tile's dy rows stay
 * in L1. Padding columns read a zero row and are never stored; padding rows are never stored.
 * OpenMP runs over (row block, row part) items: every dvals element is summed over token blocks
 * in order by one item, whatever the thread count.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "spmm_impl.h"

enum {
    TB = 256, /* tokens per block: the reduction kept in registers */
    R = 4,    /* rows per tile: 8 accumulators */
    KC = 4,   /* groups per chunk: 16 x rows of 1 KiB */
};

/* s[g][r][k] = Σ_{t<TB} dy[r][t]·x[cols[g][slot k of slots[r][g]]][t] for r < R, g < ng; dy rows
 * and x rows are TB floats apart, slots has row stride gp, padding columns read x row `zero`. */
typedef void dw_kernel(const float *dy, const float *x, const int32_t *cols,
                       const uint8_t *slots, int64_t gp, int64_t ng, int64_t zero, float *s);

static const float *x_row(const float *x, const int32_t *cg, unsigned slot, int64_t zero)
{
    return x + (cg[slot] >= 0 ? cg[slot] : zero) * TB;
}

#if VNM_SPMM_X86
static VNM_AVX2 void dw_kernel_avx2(const float *dy, const float *x, const int32_t *cols,
                                    const uint8_t *slots, int64_t gp, int64_t ng, int64_t zero,
                                    float *s)
{
    for (int64_t g = 0; g < ng; g++) {
        const int32_t *cg = cols + g * 4;
        const float *xr[2 * R];
        for (int r = 0; r < R; r++) {
            unsigned k = slots[r * gp + g];
            xr[2 * r] = x_row(x, cg, k & 3, zero);
            xr[2 * r + 1] = x_row(x, cg, k >> 2 & 3, zero);
        }
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int t = 0; t < TB; t += 8) {
            __m256 d = _mm256_load_ps(dy + t);
            a0 = _mm256_fmadd_ps(d, _mm256_load_ps(xr[0] + t), a0);
            a1 = _mm256_fmadd_ps(d, _mm256_load_ps(xr[1] + t), a1);
            d = _mm256_load_ps(dy + TB + t);
            a2 = _mm256_fmadd_ps(d, _mm256_load_ps(xr[2] + t), a2);
            a3 = _mm256_fmadd_ps(d, _mm256_load_ps(xr[3] + t), a3);
            d = _mm256_load_ps(dy + 2 * TB + t);
            a4 = _mm256_fmadd_ps(d, _mm256_load_ps(xr[4] + t), a4);
            a5 = _mm256_fmadd_ps(d, _mm256_load_ps(xr[5] + t), a5);
            d = _mm256_load_ps(dy + 3 * TB + t);
            a6 = _mm256_fmadd_ps(d, _mm256_load_ps(xr[6] + t), a6);
            a7 = _mm256_fmadd_ps(d, _mm256_load_ps(xr[7] + t), a7);
        }
        /* Horizontal sums of the 8 accumulators, lane i = sum of a_i. */
        __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
        __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
        __m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                                   _mm256_permute2f128_ps(q0, q1, 0x31));
        _mm256_storeu_ps(s + g * 2 * R, sum);
    }
}
#endif

static void dw_kernel_portable(const float *dy, const float *x, const int32_t *cols,
                               const uint8_t *slots, int64_t gp, int64_t ng, int64_t zero,
                               float *s)
{
    for (int64_t g = 0; g < ng; g++)
        for (int r = 0; r < R; r++) {
            unsigned k = slots[r * gp + g];
            const float *x0 = x_row(x, cols + g * 4, k & 3, zero);
            const float *x1 = x_row(x, cols + g * 4, k >> 2 & 3, zero);
            float a0[8] = {0}, a1[8] = {0};
            for (int t = 0; t < TB; t += 8)
                for (int l = 0; l < 8; l++) {
                    a0[l] += dy[r * TB + t + l] * x0[t + l];
                    a1[l] += dy[r * TB + t + l] * x1[t + l];
                }
            float s0 = 0.0f, s1 = 0.0f;
            for (int l = 0; l < 8; l++) {
                s0 += a0[l];
                s1 += a1[l];
            }
            s[(g * R + r) * 2] = s0;
            s[(g * R + r) * 2 + 1] = s1;
        }
}

void vnm_spmm_dw(const vnm_spmm_weight *w, const float *dy, const float *x, int64_t T,
                 float *dvals)
{
    if (T <= 0) return;
    const int64_t V = w->pat.V, nb = w->O_pad / V, gp = w->Gp, I_ = w->I;
    const int64_t nblk = (T + TB - 1) / TB;
    const int64_t x_stride = vnm_spmm_tile_stride(I_ + 1, TB); /* row I_: zeros */
    const int64_t dy_stride = vnm_spmm_tile_stride(w->O_pad, TB);
    const bool parallel = T * w->O_pad * gp > 65536;
    const int nthreads = parallel ? omp_get_max_threads() : 1;
    /* Enough items to balance the threads even with few row blocks; parts are whole tiles. */
    int64_t parts = (4 * nthreads + nb - 1) / nb;
    if (parts > V / R) parts = V / R;
    const int64_t part_rows = (V / R + parts - 1) / parts * R;
    parts = (V + part_rows - 1) / part_rows;
    float *xp = vnm_spmm_alloc(nblk * x_stride);   /* [nblk][I + 1][TB] */
    float *dyp = vnm_spmm_alloc(nblk * dy_stride); /* [nblk][O_pad][TB] */
    if (!xp || !dyp) {
        free(xp);
        free(dyp);
        vnm_spmm_dw_ref(w, dy, x, T, dvals);
        return;
    }
    vnm_spmm_pack(x, T, I_, NULL, I_, I_ + 1, TB, x_stride, xp);
    vnm_spmm_pack(dy, T, w->O, w->rows, w->O_pad, w->O_pad, TB, dy_stride, dyp);
    dw_kernel *kernel = dw_kernel_portable;
#if VNM_SPMM_X86
    if (vnm_spmm_use_avx2()) kernel = dw_kernel_avx2;
#endif
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t item = 0; item < nb * parts; item++) {
        const int64_t b = item / parts, r0 = b * V + item % parts * part_rows;
        const int64_t r1 = r0 + part_rows < (b + 1) * V ? r0 + part_rows : (b + 1) * V;
        const int32_t *cols = w->cols + b * gp * 4;
        float s[KC * R * 2]; /* [KC][R][2] */
        for (int64_t k = 0; k < nblk; k++)
            for (int64_t g0 = 0; g0 < gp; g0 += KC) {
                const int64_t ng = gp - g0 < KC ? gp - g0 : KC;
                for (int64_t r = r0; r < r1; r += R) {
                    kernel(dyp + k * dy_stride + r * TB, xp + k * x_stride, cols + g0 * 4,
                           w->slots + r * gp + g0, gp, ng, I_, s);
                    for (int i = 0; i < R; i++) {
                        if (w->rows[r + i] < 0) continue;
                        float *dv = dvals + ((r + i) * gp + g0) * 2;
                        for (int64_t g = 0; g < ng; g++) {
                            unsigned code = w->slots[(r + i) * gp + g0 + g];
                            if (cols[(g0 + g) * 4 + (code & 3)] >= 0)
                                dv[g * 2] += s[(g * R + i) * 2];
                            if (cols[(g0 + g) * 4 + (code >> 2 & 3)] >= 0)
                                dv[g * 2 + 1] += s[(g * R + i) * 2 + 1];
                        }
                    }
                }
            }
    }
    free(xp);
    free(dyp);
}
