/* sparse/cpu/spmm_fwd.c — forward product y[T][O] += x[T][I]·Wᵀ of a compressed weight.
 *
 * x is packed once into tiles of TT tokens (spmm_impl.h), so every input column is a contiguous
 * row of TT floats, with a zero row I for padding columns. The slot codes and block columns are
 * resolved once per call into the byte offsets of the 2 x rows each (row, group) reads. Each row
 * then adds its 2 values per group times those rows ("gather-AXPY": only the 2/M kept products
 * are computed, addressed without a branch). Rows run in pairs with TT tokens of both in
 * registers; the x loads, not the FMAs, bound the loop. Groups run in chunks of KC so the x rows
 * a row block reads stay in L1 across its V rows; partial sums wait in an L1 buffer [V][TT].
 * Tokens run in groups of TG tiles (the packed x of a group stays in cache while every row block
 * reads it); within a group OpenMP runs over (row block, tile) items, each owning its outputs,
 * so sums never depend on the thread count. Padding rows are computed and never stored.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "spmm_impl.h"

enum {
    TT = 32, /* tokens per tile: 4 ymm per row */
    KC = 32, /* groups per chunk: the block reads 4·KC x rows (16 KiB) per chunk */
    TG = 8,  /* tiles per token group */
};

/* c[r][0..TT) += Σ_{g<ng} Σ_k vals[r][g][k] · x row at byte offset off[r][g][k] from xt, for an
 * even nrows; vals and off have row stride gp groups. */
typedef void fwd_kernel(const float *xt, const uint32_t *off, const float *vals, int64_t gp,
                        int64_t nrows, int64_t ng, float *c);

static const float *x_at(const float *xt, uint32_t off)
{
    return (const float *)(const void *)((const char *)xt + off);
}

#if VNM_SPMM_X86
static VNM_AVX2 void fwd_kernel_avx2(const float *xt, const uint32_t *off, const float *vals,
                                     int64_t gp, int64_t nrows, int64_t ng, float *c)
{
    for (int64_t r = 0; r < nrows; r += 2) {
        const float *va = vals + r * gp * 2, *vb = va + gp * 2;
        const uint32_t *oa = off + r * gp * 2, *ob = oa + gp * 2;
        float *ca = c + r * TT, *cb = ca + TT;
        __m256 a0 = _mm256_load_ps(ca), a1 = _mm256_load_ps(ca + 8);
        __m256 a2 = _mm256_load_ps(ca + 16), a3 = _mm256_load_ps(ca + 24);
        __m256 b0 = _mm256_load_ps(cb), b1 = _mm256_load_ps(cb + 8);
        __m256 b2 = _mm256_load_ps(cb + 16), b3 = _mm256_load_ps(cb + 24);
        for (int64_t g = 0; g < ng; g++) {
            uint64_t pa, pb; /* both offsets of a (row, group) in one load */
            memcpy(&pa, oa + 2 * g, sizeof pa);
            memcpy(&pb, ob + 2 * g, sizeof pb);
            const float *x0 = x_at(xt, (uint32_t)pa), *x1 = x_at(xt, (uint32_t)(pa >> 32));
            __m256 w = _mm256_broadcast_ss(va + 2 * g);
            a0 = _mm256_fmadd_ps(w, _mm256_load_ps(x0), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 24), a3);
            w = _mm256_broadcast_ss(va + 2 * g + 1);
            a0 = _mm256_fmadd_ps(w, _mm256_load_ps(x1), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 24), a3);
            x0 = x_at(xt, (uint32_t)pb);
            x1 = x_at(xt, (uint32_t)(pb >> 32));
            w = _mm256_broadcast_ss(vb + 2 * g);
            b0 = _mm256_fmadd_ps(w, _mm256_load_ps(x0), b0);
            b1 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 8), b1);
            b2 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 16), b2);
            b3 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 24), b3);
            w = _mm256_broadcast_ss(vb + 2 * g + 1);
            b0 = _mm256_fmadd_ps(w, _mm256_load_ps(x1), b0);
            b1 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 8), b1);
            b2 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 16), b2);
            b3 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 24), b3);
        }
        _mm256_store_ps(ca, a0);
        _mm256_store_ps(ca + 8, a1);
        _mm256_store_ps(ca + 16, a2);
        _mm256_store_ps(ca + 24, a3);
        _mm256_store_ps(cb, b0);
        _mm256_store_ps(cb + 8, b1);
        _mm256_store_ps(cb + 16, b2);
        _mm256_store_ps(cb + 24, b3);
    }
}
#endif

static void fwd_kernel_portable(const float *xt, const uint32_t *off, const float *vals,
                                int64_t gp, int64_t nrows, int64_t ng, float *c)
{
    for (int64_t r = 0; r < nrows; r++) {
        const float *v = vals + r * gp * 2;
        const uint32_t *o = off + r * gp * 2;
        float acc[TT];
        memcpy(acc, c + r * TT, sizeof acc);
        for (int64_t g = 0; g < ng; g++) {
            const float *x0 = x_at(xt, o[2 * g]), *x1 = x_at(xt, o[2 * g + 1]);
            for (int t = 0; t < TT; t++) acc[t] += v[2 * g] * x0[t];
            for (int t = 0; t < TT; t++) acc[t] += v[2 * g + 1] * x1[t];
        }
        memcpy(c + r * TT, acc, sizeof acc);
    }
}

/* off[o][g][k]: byte offset in a packed x tile of the row value k of (o, g) multiplies. */
static void row_offsets(const vnm_spmm_weight *w, int64_t b, uint32_t *off)
{
    const int64_t V = w->pat.V, gp = w->Gp;
    for (int64_t o = b * V; o < (b + 1) * V; o++)
        for (int64_t g = 0; g < gp; g++) {
            const int32_t *cg = w->cols + (b * gp + g) * 4;
            const unsigned code = w->slots[o * gp + g];
            const int32_t c0 = cg[code & 3], c1 = cg[code >> 2 & 3];
            off[(o * gp + g) * 2] = (uint32_t)((c0 >= 0 ? c0 : w->I) * TT * sizeof(float));
            off[(o * gp + g) * 2 + 1] = (uint32_t)((c1 >= 0 ? c1 : w->I) * TT * sizeof(float));
        }
}

/* Brings the outputs of (row block b, tile k) towards the cache before its long kernel run:
 * the rows of y it adds into are scattered T-major lines the hardware prefetcher cannot guess. */
static void prefetch_outputs(const vnm_spmm_weight *w, int64_t b, int64_t t0, int64_t nt,
                             float *y)
{
    const int64_t V = w->pat.V;
    for (int64_t t = t0; t < t0 + nt; t++)
        for (int64_t r = 0; r < V; r += 16)
            if (w->rows[b * V + r] >= 0) __builtin_prefetch(y + t * w->O + w->rows[b * V + r], 1);
}

void vnm_spmm_fwd(const vnm_spmm_weight *w, const float *x, int64_t T, float *y)
{
    if (T <= 0) return;
    const int64_t V = w->pat.V, nb = w->O_pad / V, gp = w->Gp, I_ = w->I;
    const int64_t ntiles = (T + TT - 1) / TT;
    const int64_t stride = vnm_spmm_tile_stride(I_ + 1, TT); /* row I_: zeros */
    const bool parallel = T * w->O_pad * gp > 65536;
    const int nthreads = parallel ? omp_get_max_threads() : 1;
    float *xp = vnm_spmm_alloc(ntiles * stride);                  /* [ntiles][I + 1][TT] */
    uint32_t *off = malloc((size_t)(w->O_pad * gp * 2) * sizeof *off); /* [O_pad][gp][2] */
    float *acc = vnm_spmm_alloc(nthreads * V * TT);               /* [threads][V][TT] */
    if (!xp || !off || !acc || (I_ + 1) * TT * sizeof(float) > UINT32_MAX) {
        free(xp);
        free(off);
        free(acc);
        vnm_spmm_fwd_ref(w, x, T, y);
        return;
    }
    vnm_spmm_pack(x, T, I_, NULL, I_, I_ + 1, TT, stride, xp);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t b = 0; b < nb; b++) row_offsets(w, b, off);
    fwd_kernel *kernel = fwd_kernel_portable;
#if VNM_SPMM_X86
    if (vnm_spmm_use_avx2()) kernel = fwd_kernel_avx2;
#endif
    for (int64_t k0 = 0; k0 < ntiles; k0 += TG) {
        const int64_t nk = ntiles - k0 < TG ? ntiles - k0 : TG;
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t item = 0; item < nb * nk; item++) {
            const int64_t b = item / nk, k = k0 + item % nk;
            const int64_t t0 = k * TT, nt = T - t0 < TT ? T - t0 : TT;
            float *c = acc + omp_get_thread_num() * V * TT; /* [V][TT] */
            prefetch_outputs(w, b, t0, nt, y);
            memset(c, 0, (size_t)(V * TT) * sizeof(float));
            for (int64_t g0 = 0; g0 < gp; g0 += KC)
                kernel(xp + k * stride, off + (b * V * gp + g0) * 2,
                       w->vals + (b * V * gp + g0) * 2, gp, V, gp - g0 < KC ? gp - g0 : KC, c);
            vnm_spmm_unpack_add(c, TT, nt, w->rows + b * V, V, y + t0 * w->O, w->O);
        }
    }
    free(xp);
    free(off);
    free(acc);
}
