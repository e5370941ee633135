/* sparse/cpu/spmm_dx.c — input gradient dx[T][I] += dy[T][O]·W of a compressed weight.
 *
 * Each work item packs the dy of its tiles of TT tokens with the stored-row order applied (row o
 * holds dy column rows[o], zeros for padding rows), so a row block's dy is one contiguous
 * [V][TT] slab. Within
 * each (block, group) the rows are sorted by slot code into the 6 classes s0 < s1; the kernel
 * keeps the 4 slot accumulators [4][TT] in registers and walks the classes with the slots fixed
 * at compile time, so each row costs one dy load and 2/M of the dense FMAs with no per-element
 * choice. After the group the 4 accumulators are added into the kept columns of a per-thread dx
 * tile [I + 1][TT] (row I takes padding columns), which is unpacked into dx at the end. The
 * values are copied into class order first, so the kernel streams them contiguously. OpenMP
 * runs over groups of token tiles; every dx element is summed over blocks, groups and classes in
 * the same order whatever the thread count. Slot codes outside the 6 legal ones (a malformed
 * weight) take the reference path.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "spmm_impl.h"

enum {
    TT = 24, /* tokens per tile: 4 slots × 3 ymm accumulators + 3 ymm of dy fill 16 registers */
    NTG = 4, /* tiles per work item: the weights of a block are reused across them from L2 */
};

/* For every group g < gp of one block: dx[cols[g][s]] += Σ over the rows o using slot s of
 * value k·dy[o] (TT tokens), with the block's class lists (vnm_spmm_classes: order, start, vals
 * in class order) and padding columns into row `trash`. */
typedef void dx_kernel(const float *dy, const float *vals, int64_t gp, const int32_t *cols,
                       const uint8_t *order, const uint16_t *start, int64_t V, float *dx,
                       int64_t trash);

#if VNM_SPMM_X86
/* One class: slots S0 < S1 known at compile time, so the accumulators stay in registers. */
#define DX_CLASS(S0, S1, C)                                                                       \
    for (int i = st[C]; i < st[C + 1]; i++) {                                                     \
        const float *d = dy + ord[i] * TT, *v = vg + 2 * i;                                       \
        __m256 d0 = _mm256_load_ps(d), d1 = _mm256_load_ps(d + 8);                               \
        __m256 d2 = _mm256_load_ps(d + 16);                                                       \
        __m256 u = _mm256_broadcast_ss(v);                                                        \
        a##S0##0 = _mm256_fmadd_ps(u, d0, a##S0##0);                                              \
        a##S0##1 = _mm256_fmadd_ps(u, d1, a##S0##1);                                              \
        a##S0##2 = _mm256_fmadd_ps(u, d2, a##S0##2);                                              \
        u = _mm256_broadcast_ss(v + 1);                                                           \
        a##S1##0 = _mm256_fmadd_ps(u, d0, a##S1##0);                                              \
        a##S1##1 = _mm256_fmadd_ps(u, d1, a##S1##1);                                              \
        a##S1##2 = _mm256_fmadd_ps(u, d2, a##S1##2);                                              \
    }

#define DX_FLUSH(S)                                                                               \
    {                                                                                             \
        float *o = dx + (cg[S] >= 0 ? cg[S] : trash) * TT;                                        \
        _mm256_store_ps(o, _mm256_add_ps(_mm256_load_ps(o), a##S##0));                           \
        _mm256_store_ps(o + 8, _mm256_add_ps(_mm256_load_ps(o + 8), a##S##1));                    \
        _mm256_store_ps(o + 16, _mm256_add_ps(_mm256_load_ps(o + 16), a##S##2));                  \
    }

static VNM_AVX2 void dx_kernel_avx2(const float *dy, const float *vals, int64_t gp,
                                    const int32_t *cols, const uint8_t *order,
                                    const uint16_t *start, int64_t V, float *dx, int64_t trash)
{
    for (int64_t g = 0; g < gp; g++) {
        const float *vg = vals + g * V * 2;
        const uint8_t *ord = order + g * V;
        const uint16_t *st = start + g * (VNM_SPMM_CLASSES + 1);
        const int32_t *cg = cols + g * 4;
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
        __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
        DX_CLASS(0, 1, 0)
        DX_CLASS(0, 2, 1)
        DX_CLASS(0, 3, 2)
        DX_CLASS(1, 2, 3)
        DX_CLASS(1, 3, 4)
        DX_CLASS(2, 3, 5)
        DX_FLUSH(0)
        DX_FLUSH(1)
        DX_FLUSH(2)
        DX_FLUSH(3)
    }
}
#undef DX_CLASS
#undef DX_FLUSH
#endif

static void dx_kernel_portable(const float *dy, const float *vals, int64_t gp, const int32_t *cols,
                               const uint8_t *order, const uint16_t *start, int64_t V, float *dx,
                               int64_t trash)
{
    for (int64_t g = 0; g < gp; g++) {
        float acc[4][TT] = {{0}};
        for (int c = 0; c < VNM_SPMM_CLASSES; c++) {
            const int s0 = vnm_spmm_class_code[c] & 3, s1 = vnm_spmm_class_code[c] >> 2;
            const uint16_t *st = start + g * (VNM_SPMM_CLASSES + 1);
            for (int i = st[c]; i < st[c + 1]; i++) {
                const float *d = dy + order[g * V + i] * TT, *v = vals + (g * V + i) * 2;
                for (int t = 0; t < TT; t++) acc[s0][t] += v[0] * d[t];
                for (int t = 0; t < TT; t++) acc[s1][t] += v[1] * d[t];
            }
        }
        for (int s = 0; s < 4; s++) {
            const int32_t c = cols[g * 4 + s];
            float *o = dx + (c >= 0 ? c : trash) * TT;
            for (int t = 0; t < TT; t++) o[t] += acc[s][t];
        }
    }
}

void vnm_spmm_dx(const vnm_spmm_weight *w, const float *dy, int64_t T, float *dx)
{
    if (T <= 0) return;
    const int64_t V = w->pat.V, nb = w->O_pad / V, gp = w->Gp, I_ = w->I;
    const int64_t ntiles = (T + TT - 1) / TT, items = (ntiles + NTG - 1) / NTG;
    const int64_t dy_stride = vnm_spmm_tile_stride(w->O_pad, TT);
    const int64_t dx_stride = vnm_spmm_tile_stride(I_ + 1, TT); /* row I_: padding columns */
    const bool parallel = T * w->O_pad * gp > 65536;
    const int nthreads = parallel ? omp_get_max_threads() : 1;
    const int64_t nst = gp * 2 * (VNM_SPMM_CLASSES + 1); /* class starts + scratch per block */
    uint8_t *order = malloc((size_t)(w->O_pad * gp));       /* [nb][gp][V] */
    uint16_t *start = malloc((size_t)(nb * nst) * sizeof *start);
    float *vs = vnm_spmm_alloc(w->O_pad * gp * 2);           /* [nb][gp][V][2] class order */
    float *dyt = vnm_spmm_alloc(nthreads * NTG * dy_stride); /* [threads][NTG][O_pad][TT] */
    float *dxt = vnm_spmm_alloc(nthreads * NTG * dx_stride); /* [threads][NTG][I+1][TT] */
    bool ok = order && start && vs && dyt && dxt;
    if (ok) {
#pragma omp parallel for schedule(static) reduction(&& : ok) if (parallel)
        for (int64_t b = 0; b < nb; b++)
            ok = vnm_spmm_classes(w, b, order + b * gp * V, start + b * nst, vs + b * gp * V * 2) &&
                 ok;
    }
    if (!ok) {
        free(order);
        free(start);
        free(vs);
        free(dyt);
        free(dxt);
        vnm_spmm_dx_ref(w, dy, T, dx);
        return;
    }
    dx_kernel *kernel = dx_kernel_portable;
#if VNM_SPMM_X86
    if (vnm_spmm_use_avx2()) kernel = dx_kernel_avx2;
#endif
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t item = 0; item < items; item++) {
        const int64_t k0 = item * NTG, nk = ntiles - k0 < NTG ? ntiles - k0 : NTG;
        float *d = dyt + omp_get_thread_num() * NTG * dy_stride;
        float *acc = dxt + omp_get_thread_num() * NTG * dx_stride;
        for (int64_t j = 0; j < nk; j++) {
            const int64_t t0 = (k0 + j) * TT;
            vnm_spmm_pack_tile(dy + t0 * w->O, w->O, T - t0 < TT ? T - t0 : TT, w->rows,
                               w->O_pad, w->O_pad, TT, d + j * dy_stride);
        }
        memset(acc, 0, (size_t)(nk * dx_stride) * sizeof(float));
        for (int64_t b = 0; b < nb; b++)
            for (int64_t j = 0; j < nk; j++)
                kernel(d + j * dy_stride + b * V * TT, vs + b * gp * V * 2, gp,
                       w->cols + b * gp * 4, order + b * gp * V, start + b * nst, V,
                       acc + j * dx_stride, I_);
        for (int64_t j = 0; j < nk; j++) {
            const int64_t t0 = (k0 + j) * TT, nt = T - t0 < TT ? T - t0 : TT;
            vnm_spmm_unpack_add(acc + j * dx_stride, TT, nt, NULL, I_, dx + t0 * I_, I_);
        }
    }
    free(order);
    free(start);
    free(vs);
    free(dyt);
    free(dxt);
}
