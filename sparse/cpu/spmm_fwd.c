/* sparse/cpu/spmm_fwd.c — forward product y[T][O] += x[T][I]·Wᵀ of a compressed weight.
 *
 * x is packed into tiles of TT tokens (spmm_impl.h), so every input column is a contiguous row
 * of TT floats, with a zero row I for padding columns. The weights are repacked once per
 * call in kernel order: per row pair and group, the 4 values and the byte offsets of the x rows
 * they multiply (slot codes and block columns resolved). Each row adds its 2 values per group
 * times those rows ("gather-AXPY": only the 2/M kept products are computed, addressed without a
 * branch), TT tokens of both rows of a pair in registers; the x loads, not the FMAs, bound the
 * loop. Groups run in chunks of KC so the x rows a row block reads stay in L1 across its V rows;
 * partial sums wait in a buffer [TG][V][TT]. Tokens run in groups of TG tiles, packed just
 * before use so that they stay in cache while every row block reads them; within a group
 * OpenMP runs over (row block, tile range) items, each owning its outputs, so sums never depend
 * on the thread count. Padding rows are computed and never stored.
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

/* Rows a = 2p and b = 2p + 1 of a row pair in one group: their values (a0 a1 b0 b1) and the byte
 * offsets of the x rows each multiplies, in a packed x tile. */
typedef struct {
    float v[4];
    uint32_t off[4];
} pair_group;

/* c[r][0..TT) += Σ_{g<ng} Σ_k value k of (r, g) · its x row, for the 2·npairs rows of a chunk;
 * q is [npairs][ng]. */
typedef void fwd_kernel(const float *xt, const pair_group *q, int64_t npairs, int64_t ng,
                        float *c);

static const float *x_at(const float *xt, uint32_t off)
{
    return (const float *)(const void *)((const char *)xt + off);
}

#if VNM_SPMM_X86
static VNM_AVX2 void fwd_kernel_avx2(const float *xt, const pair_group *q, int64_t npairs,
                                     int64_t ng, float *c)
{
    for (int64_t p = 0; p < npairs; p++) {
        float *ca = c + 2 * p * TT, *cb = ca + TT;
        __m256 a0 = _mm256_load_ps(ca), a1 = _mm256_load_ps(ca + 8);
        __m256 a2 = _mm256_load_ps(ca + 16), a3 = _mm256_load_ps(ca + 24);
        __m256 b0 = _mm256_load_ps(cb), b1 = _mm256_load_ps(cb + 8);
        __m256 b2 = _mm256_load_ps(cb + 16), b3 = _mm256_load_ps(cb + 24);
        for (const pair_group *e = q + p * ng; e < q + (p + 1) * ng; e++) {
            uint64_t oa, ob; /* two offsets per load */
            memcpy(&oa, e->off, sizeof oa);
            memcpy(&ob, e->off + 2, sizeof ob);
            /* One load for the 4 values, splatted in registers: the load ports are the limit. */
            const __m256 v = _mm256_broadcast_ps((const __m128 *)e->v);
            const float *x0 = x_at(xt, (uint32_t)oa), *x1 = x_at(xt, (uint32_t)(oa >> 32));
            __m256 w = _mm256_permute_ps(v, 0x00);
            a0 = _mm256_fmadd_ps(w, _mm256_load_ps(x0), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 24), a3);
            w = _mm256_permute_ps(v, 0x55);
            a0 = _mm256_fmadd_ps(w, _mm256_load_ps(x1), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 24), a3);
            x0 = x_at(xt, (uint32_t)ob);
            x1 = x_at(xt, (uint32_t)(ob >> 32));
            w = _mm256_permute_ps(v, 0xAA);
            b0 = _mm256_fmadd_ps(w, _mm256_load_ps(x0), b0);
            b1 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 8), b1);
            b2 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 16), b2);
            b3 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 24), b3);
            w = _mm256_permute_ps(v, 0xFF);
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

static void fwd_kernel_portable(const float *xt, const pair_group *q, int64_t npairs, int64_t ng,
                                float *c)
{
    for (int64_t p = 0; p < npairs; p++)
        for (int r = 0; r < 2; r++) {
            float acc[TT];
            memcpy(acc, c + (2 * p + r) * TT, sizeof acc);
            for (const pair_group *e = q + p * ng; e < q + (p + 1) * ng; e++)
                for (int k = 0; k < 2; k++) {
                    const float v = e->v[2 * r + k], *xr = x_at(xt, e->off[2 * r + k]);
                    for (int t = 0; t < TT; t++) acc[t] += v * xr[t];
                }
            memcpy(c + (2 * p + r) * TT, acc, sizeof acc);
        }
}

/* The weights of row block b in kernel order, [chunk][pair][group in chunk]. */
static void pack_block(const vnm_spmm_weight *w, int64_t b, pair_group *q)
{
    const int64_t V = w->pat.V, gp = w->Gp;
    for (int64_t g0 = 0; g0 < gp; g0 += KC) {
        const int64_t ng = gp - g0 < KC ? gp - g0 : KC;
        for (int64_t p = 0; p < V / 2; p++)
            for (int64_t g = g0; g < g0 + ng; g++, q++) {
                const int32_t *cg = w->cols + (b * gp + g) * 4;
                for (int i = 0; i < 4; i++) {
                    const int64_t o = b * V + 2 * p + i / 2;
                    const unsigned code = w->slots[o * gp + g];
                    const int32_t c = cg[i % 2 ? code >> 2 & 3 : code & 3];
                    q->v[i] = w->vals[(o * gp + g) * 2 + i % 2];
                    q->off[i] = (uint32_t)((c >= 0 ? c : w->I) * TT * (int64_t)sizeof(float));
                }
            }
    }
}

/* Brings the outputs of row block b for tokens t0 … t1-1 towards the cache ahead of their
 * update: y rows are T-major lines the hardware prefetcher cannot guess. */
static void prefetch_outputs(const vnm_spmm_weight *w, int64_t b, int64_t t0, int64_t t1,
                             float *y)
{
    const int64_t V = w->pat.V;
    for (int64_t t = t0; t < t1; t++)
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
    float *xp = vnm_spmm_alloc(TG * stride);                       /* [TG][I + 1][TT] */
    pair_group *q = malloc((size_t)(nb * V / 2 * gp) * sizeof *q); /* [nb][chunk][V/2][ng] */
    float *acc = vnm_spmm_alloc(nthreads * TG * V * TT);           /* [threads][TG][V][TT] */
    if (!xp || !q || !acc || (I_ + 1) * TT * (int64_t)sizeof(float) > (int64_t)UINT32_MAX) {
        free(xp);
        free(q);
        free(acc);
        vnm_spmm_fwd_ref(w, x, T, y);
        return;
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t b = 0; b < nb; b++) pack_block(w, b, q + b * V / 2 * gp);
    /* A group's tiles split into ranges only where the row blocks alone would leave threads
     * unbalanced. */
    const int64_t parts = nb % nthreads == 0 || nb >= 4 * nthreads
                              ? 1
                              : ((4 * nthreads + nb - 1) / nb < TG ? (4 * nthreads + nb - 1) / nb
                                                                    : TG);
    fwd_kernel *kernel = fwd_kernel_portable;
#if VNM_SPMM_X86
    if (vnm_spmm_use_avx2()) kernel = fwd_kernel_avx2;
#endif
    for (int64_t k0 = 0; k0 < ntiles; k0 += TG) {
        const int64_t nk = ntiles - k0 < TG ? ntiles - k0 : TG, per = (nk + parts - 1) / parts;
        vnm_spmm_pack(x + k0 * TT * I_, T - k0 * TT < nk * TT ? T - k0 * TT : nk * TT, I_, NULL,
                      I_, I_ + 1, TT, stride, xp);
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t item = 0; item < nb * parts; item++) {
            const int64_t b = item / parts, j0 = item % parts * per;
            const int64_t j1 = j0 + per < nk ? j0 + per : nk;
            if (j0 >= j1) continue;
            const int64_t t0 = (k0 + j0) * TT, t1 = T < (k0 + j1) * TT ? T : (k0 + j1) * TT;
            float *c = acc + omp_get_thread_num() * TG * V * TT; /* [j1 - j0][V][TT] */
            memset(c, 0, (size_t)((j1 - j0) * V * TT) * sizeof(float));
            /* Chunk outside the tiles: a chunk's weights serve all the tiles from L1/L2. */
            for (int64_t g0 = 0; g0 < gp; g0 += KC) {
                if (g0 + KC >= gp) /* the last chunk: the outputs arrive as it runs */
                    prefetch_outputs(w, b, t0, t1, y);
                for (int64_t j = j0; j < j1; j++)
                    kernel(xp + j * stride, q + (b * gp + g0) * V / 2, V / 2,
                           gp - g0 < KC ? gp - g0 : KC, c + (j - j0) * V * TT);
            }
            for (int64_t j = j0; j < j1; j++) {
                const int64_t tj = (k0 + j) * TT, nt = T - tj < TT ? T - tj : TT;
                vnm_spmm_unpack_add(c + (j - j0) * V * TT, TT, nt, w->rows + b * V, V,
                                    y + tj * w->O, w->O);
            }
        }
    }
    free(xp);
    free(q);
    free(acc);
}
