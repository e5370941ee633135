/* sparse/cpu/spmm_dw.c — weight gradient dvals += (dyᵀ·x) at the kept positions of a compressed
 * weight (an SDDMM: only the 2/M kept products are computed).
 *
 * x is packed into blocks of tb tokens, each a feature-major [I + 1][tb] slab (row I zero), and
 * each work item packs the dy of its row block and token block the same way ([V][tb], stored-row
 * order, zeros for padding rows) just before using it, so every kept (row, column) pair is a dot
 * product of two contiguous tb-float rows. Within a (row block, group) the rows are walked class
 * by class (vnm_spmm_classes): all rows of a class read the same 2 x rows, so a tile of up to R
 * rows of one class loads each x vector once for 2R FMAs and keeps its 2R partial sums in
 * registers over the tb tokens, reduced once per token block. Padding columns read a zero row
 * and are never stored; padding rows are not in the classes. OpenMP runs over (row block, group
 * range) items: every dvals element is summed over token blocks in order by one item, whatever
 * the thread count.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "spmm_impl.h"

enum { R = 6 }; /* rows per tile: 12 accumulators */

/* s[i][k] = Σ_{t<tb} dy[rows[i]][t] · (k ? x1 : x0)[t] for i < n; dy rows are tb floats apart,
 * tb a multiple of 8. */
typedef void dw_kernel(const float *dy, int64_t tb, const uint8_t *rows, int64_t n,
                       const float *x0, const float *x1, float *s);

/* Tokens per block: long, since each block ends in a reduction and a pass over the block's
 * gradients, but with the row block's dy slab ([V][tb], re-read for every group) within half of
 * a 512 KiB L2; blocks of equal length, so a short last block wastes nothing. */
static int64_t token_block(int64_t T, int64_t V)
{
    int64_t most = 65536 / V < 256 ? 256 : 65536 / V > 1024 ? 1024 : 65536 / V;
    int64_t n = (T + most - 1) / most;
    return ((T + n - 1) / n + 7) / 8 * 8;
}

#if VNM_SPMM_X86
/* One tile of N ≤ R rows (N a constant once inlined, so the accumulators live in registers). */
static inline __attribute__((always_inline)) VNM_AVX2 void
dw_tile_avx2(const float *dy, int64_t tb, const uint8_t *rows, const int N, const float *x0,
             const float *x1, float *s)
{
    const float *d[R];
    __m256 a[2 * R + 4];
    for (int i = 0; i < N; i++) d[i] = dy + rows[i] * tb;
    for (int i = 0; i < 2 * R + 4; i++) a[i] = _mm256_setzero_ps();
    for (int64_t t = 0; t < tb; t += 8) {
        const __m256 u = _mm256_load_ps(x0 + t), v = _mm256_load_ps(x1 + t);
        for (int i = 0; i < N; i++) {
            __m256 e = _mm256_load_ps(d[i] + t);
            /* Keep e in a register: GCC would otherwise fold it into both FMAs as a memory
             * operand, loading it twice, and the loads are the scarce resource. */
            __asm__("" : "+x"(e));
            a[2 * i] = _mm256_fmadd_ps(e, u, a[2 * i]);
            a[2 * i + 1] = _mm256_fmadd_ps(e, v, a[2 * i + 1]);
        }
    }
    /* Horizontal sums, 8 accumulators at a time: lane j of the result = sum of a[j]. */
    for (int i = 0; i < 2 * N; i += 8) {
        const __m256 *b = a + i;
        const __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(b[0], b[1]), _mm256_hadd_ps(b[2], b[3]));
        const __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(b[4], b[5]), _mm256_hadd_ps(b[6], b[7]));
        _mm256_storeu_ps(s + i, _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                                              _mm256_permute2f128_ps(q0, q1, 0x31)));
    }
}

static VNM_AVX2 void dw_kernel_avx2(const float *dy, int64_t tb, const uint8_t *rows, int64_t n,
                                    const float *x0, const float *x1, float *s)
{
    for (; n >= R; n -= R, rows += R, s += 2 * R) dw_tile_avx2(dy, tb, rows, R, x0, x1, s);
    switch (n) {
    case 5: dw_tile_avx2(dy, tb, rows, 5, x0, x1, s); break;
    case 4: dw_tile_avx2(dy, tb, rows, 4, x0, x1, s); break;
    case 3: dw_tile_avx2(dy, tb, rows, 3, x0, x1, s); break;
    case 2: dw_tile_avx2(dy, tb, rows, 2, x0, x1, s); break;
    case 1: dw_tile_avx2(dy, tb, rows, 1, x0, x1, s); break;
    default: break;
    }
}
#endif

static void dw_kernel_portable(const float *dy, int64_t tb, const uint8_t *rows, int64_t n,
                               const float *x0, const float *x1, float *s)
{
    for (int64_t i = 0; i < n; i++) {
        const float *d = dy + rows[i] * tb;
        float s0 = 0.0f, s1 = 0.0f;
        /* simd reduction: vector partial sums, in an order fixed at compile time */
#pragma omp simd reduction(+ : s0, s1)
        for (int64_t t = 0; t < tb; t++) {
            s0 += d[t] * x0[t];
            s1 += d[t] * x1[t];
        }
        s[2 * i] = s0;
        s[2 * i + 1] = s1;
    }
}

void vnm_spmm_dw(const vnm_spmm_weight *w, const float *dy, const float *x, int64_t T,
                 float *dvals)
{
    if (T <= 0) return;
    const int64_t V = w->pat.V, nb = w->O_pad / V, gp = w->Gp, I_ = w->I;
    const int64_t tb = token_block(T, V), nblk = (T + tb - 1) / tb;
    const int64_t x_stride = vnm_spmm_tile_stride(I_ + 1, (int)tb); /* row I_: zeros */
    const bool parallel = T * w->O_pad * gp > 65536;
    const int nthreads = parallel ? omp_get_max_threads() : 1;
    /* Row blocks split into group ranges only where they alone would leave threads unbalanced
     * (each part packs the block's dy again). */
    int64_t want = nb % nthreads == 0 || nb >= 4 * nthreads ? 1 : (4 * nthreads + nb - 1) / nb;
    want = want < gp ? want : gp;
    const int64_t part_groups = (gp + want - 1) / want;
    const int64_t parts = (gp + part_groups - 1) / part_groups;
    const int64_t nst = gp * 2 * (VNM_SPMM_CLASSES + 1); /* class starts + scratch per block */
    uint8_t *order = malloc((size_t)(w->O_pad * gp));     /* [nb][gp][V] */
    uint16_t *start = malloc((size_t)(nb * nst) * sizeof *start);
    float *xp = vnm_spmm_alloc(nblk * x_stride);        /* [nblk][I + 1][tb] */
    float *dyb = vnm_spmm_alloc(nthreads * V * tb);     /* [threads][V][tb] */
    bool ok = order && start && xp && dyb;
    if (ok) {
#pragma omp parallel for schedule(static) reduction(&& : ok) if (parallel)
        for (int64_t b = 0; b < nb; b++)
            ok = vnm_spmm_classes(w, b, order + b * gp * V, start + b * nst, NULL) && ok;
    }
    if (!ok) {
        free(order);
        free(start);
        free(xp);
        free(dyb);
        vnm_spmm_dw_ref(w, dy, x, T, dvals);
        return;
    }
    vnm_spmm_pack(x, T, I_, NULL, I_, I_ + 1, (int)tb, x_stride, xp);
    dw_kernel *kernel = dw_kernel_portable;
#if VNM_SPMM_X86
    if (vnm_spmm_use_avx2()) kernel = dw_kernel_avx2;
#endif
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t item = 0; item < nb * parts; item++) {
        const int64_t b = item / parts, g0 = item % parts * part_groups;
        const int64_t g1 = g0 + part_groups < gp ? g0 + part_groups : gp;
        float s[2 * 256 + 16]; /* [V][2] sums of a class, room for a full 8-wide reduction */
        float *d = dyb + omp_get_thread_num() * V * tb; /* [V][tb] */
        for (int64_t k = 0; k < nblk; k++) {
            const int64_t t0 = k * tb;
            vnm_spmm_pack_tile(dy + t0 * w->O, w->O, T - t0 < tb ? T - t0 : tb, w->rows + b * V, V,
                               V, (int)tb, d);
            for (int64_t g = g0; g < g1; g++) {
                const int32_t *cg = w->cols + (b * gp + g) * 4;
                const uint8_t *ord = order + (b * gp + g) * V;
                const uint16_t *st = start + b * nst + g * (VNM_SPMM_CLASSES + 1);
                for (int c = 0; c < VNM_SPMM_CLASSES; c++) {
                    const int32_t c0 = cg[vnm_spmm_class_code[c] & 3];
                    const int32_t c1 = cg[vnm_spmm_class_code[c] >> 2];
                    const int64_t n = st[c + 1] - st[c];
                    if (!n) continue;
                    kernel(d, tb, ord + st[c], n,
                           xp + k * x_stride + (c0 >= 0 ? c0 : I_) * tb,
                           xp + k * x_stride + (c1 >= 0 ? c1 : I_) * tb, s);
                    for (int64_t i = 0; i < n; i++) {
                        float *dv = dvals + ((b * V + ord[st[c] + i]) * gp + g) * 2;
                        if (c0 >= 0) dv[0] += s[2 * i];
                        if (c1 >= 0) dv[1] += s[2 * i + 1];
                    }
                }
            }
        }
    }
    free(order);
    free(start);
    free(xp);
    free(dyb);
}
