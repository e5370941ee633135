/* autograd/cpu/attention.c — scaled dot-product attention, forward and backward, with grouped KV
 * heads, on operands read through strides (the contiguous entries are the strided ones with
 * contiguous strides). Threads split the heads (forward) or the KV groups (backward).
 *
 * Two ways to do one head, chosen by its size alone (so a given problem always runs the same
 * code, whatever the thread count):
 *   - large heads: a few OpenBLAS GEMMs around a row softmax (OpenBLAS runs single-threaded
 *     inside the parallel region, its OpenMP build, or with its own threads when there is a single
 *     head to work on); row strides become the GEMMs' leading dimensions;
 *   - small heads (a small vision transformer's: T = S = 17, D = 24), where a GEMM call costs
 *     more than its arithmetic: AVX2 + FMA register-tiled loops, when the CPU has them (simd.h),
 *     about 4x faster there. Their softmax is softmax_row.h's AVX2 row, so the probabilities
 *     are those of the softmax kernel on the same scores.
 *
 * Causal mask: query t sees keys s ≤ t + (S - T) (last query aligned with the last key; the op
 * guarantees T ≤ S so every row sees at least one key). Masked probabilities are stored as 0, so
 * the backward needs no mask of its own. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "simd.h"
#include "softmax_row.h"

/* Below this many multiply-adds a thread team costs more than it saves. */
#define ATTENTION_PARALLEL_WORK 16384
/* Heads with at most this many score multiply-adds (T·S·D), at most so many queries and keys,
 * and a transposed K small enough for the stack, take the small-head loops. */
#define ATTENTION_SMALL_HEAD 65536
#define SMALL_HEAD_MAX_ROWS 256
#define SMALL_HEAD_MAX_DS 8192 /* D·S (S padded to 8): a transposed K or V on the stack */

/* One head's operands: first row and row stride of each. */
typedef struct {
    const float *q, *k, *v; /* [T, D], [S, D], [S, D] */
    int64_t ldq, ldk, ldv;
} head_in;

static int64_t visible(int64_t t, int64_t T, int64_t S, bool causal)
{
    return causal ? t + S - T + 1 : S;
}

/* Row softmax of the scaled scores in p[T, S], in place, over the keys each query may see. */
static void softmax_rows(float *p, int64_t T, int64_t S, bool causal)
{
    for (int64_t t = 0; t < T; t++) {
        float *row = p + t * S; /* [S] */
        int64_t n = visible(t, T, S, causal);
        vnm_cpu_softmax_row(row, row, n);
        for (int64_t s = n; s < S; s++) row[s] = 0.0f;
    }
}

static void fwd_head_blas(float *o, int64_t ldo, float *p, head_in h, int64_t T, int64_t S,
                          int64_t D, bool causal, float scale)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)T, (blasint)S, (blasint)D, scale,
                h.q, (blasint)h.ldq, h.k, (blasint)h.ldk, 0.0f, p, (blasint)S);
    softmax_rows(p, T, S, causal);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)T, (blasint)D, (blasint)S,
                1.0f, p, (blasint)S, h.v, (blasint)h.ldv, 0.0f, o, (blasint)ldo);
}

/* With P = softmax(scale·Q·Kᵀ) and O = P·V, for one query head of a KV group:
 *   dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ⊙ (dP - rowsum(P ⊙ dP)),
 *   dQ += scale·dS·K,  dK += scale·dSᵀ·Q,
 * where += becomes = for the outputs whose beta is 0. ds: [T, S] scratch. */
typedef struct {
    float *dq, *dk, *dv; /* NULL: not needed */
    int64_t lddq, lddk, lddv;
    float beta_q, beta_kv; /* 0: overwrite, 1: accumulate */
} head_grads;

static void bwd_head_blas(head_grads g, const float *dout, int64_t lddo, const float *p, head_in h,
                          float *ds, int64_t T, int64_t S, int64_t D, float scale)
{
    if (g.dv)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)S, (blasint)D, (blasint)T,
                    1.0f, p, (blasint)S, dout, (blasint)lddo, g.beta_kv, g.dv, (blasint)g.lddv);
    if (!g.dq && !g.dk) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)T, (blasint)S, (blasint)D, 1.0f,
                dout, (blasint)lddo, h.v, (blasint)h.ldv, 0.0f, ds, (blasint)S);
    for (int64_t t = 0; t < T; t++) {
        const float *pr = p + t * S; /* [S] */
        float *dr = ds + t * S;      /* [S]: dP, then dS */
        double dot = 0.0;
        for (int64_t s = 0; s < S; s++) dot += (double)pr[s] * dr[s];
        float c = (float)dot;
        for (int64_t s = 0; s < S; s++) dr[s] = pr[s] * (dr[s] - c);
    }
    if (g.dq)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)T, (blasint)D, (blasint)S,
                    scale, ds, (blasint)S, h.k, (blasint)h.ldk, g.beta_q, g.dq, (blasint)g.lddq);
    if (g.dk)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)S, (blasint)D, (blasint)T,
                    scale, ds, (blasint)S, h.q, (blasint)h.ldq, g.beta_kv, g.dk, (blasint)g.lddk);
}

#if VNM_CPU_X86
/* ---- small heads, AVX2 + FMA ----
 * Every product of a head is one register-tiled loop (`product`): a few rows of the result times
 * up to 24 columns held in registers, so each row of the right operand that is loaded serves
 * several output rows. The products with Kᵀ and Vᵀ first transpose K or V (padded to whole
 * vectors) into a stack buffer. Sums over the reduced dim run in order; the row sums of P ⊙ dP
 * accumulate in double, as the GEMM path's do. */

/* Row chunk c (8 floats from 8·c) of a row of D floats; only the last chunk can be partial. */
VNM_CPU_AVX2_INLINE __m256 load_chunk(const float *x, int64_t D, int64_t d)
{
    return D - d >= 8 ? _mm256_loadu_ps(x + d)
                      : _mm256_maskload_ps(x + d, vnm_v8_tail_mask(D - d));
}

VNM_CPU_AVX2_INLINE void store_chunk(float *x, int64_t D, int64_t d, __m256 v)
{
    if (D - d >= 8) {
        _mm256_storeu_ps(x + d, v);
    } else { /* no masked store: slow on some CPUs */
        float buf[8];
        _mm256_storeu_ps(buf, v);
        memcpy(x + d, buf, (size_t)((D - d) & 7) * sizeof *buf); /* D - d < 8 here */
    }
}

/* Rows r0 .. r0+R of a small product, columns d0 .. d0 + 8·NC of D:
 *   out_r = beta·out_r + alpha·Σ_{k<n} w[r·wr + k·wk]·y_k,   out_r = out + r·ldo, y_k = y + k·ldy,
 * with R·NC accumulators in registers (R·NC ≤ 9), so each y_k chunk loaded serves R rows. Both
 * P·V (w = P, wr = S, wk = 1) and Pᵀ·X (w = P, wr = 1, wk = S) are this. */
VNM_CPU_AVX2_INLINE void tile(float *out, int64_t ldo, const float *w, int64_t wr, int64_t wk,
                              const float *y, int64_t ldy, int64_t n, int64_t D, int64_t d0,
                              const int R, const int NC, float alpha, float beta, bool ypad)
{
    __m256 acc[4][3];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t k = 0; k < n; k++) {
        const float *yk = y + k * ldy;
        __m256 yv[3];
        for (int c = 0; c < NC; c++)
            yv[c] = ypad ? _mm256_loadu_ps(yk + d0 + 8 * c) : load_chunk(yk, D, d0 + 8 * c);
        for (int r = 0; r < R; r++) {
            __m256 wv = _mm256_set1_ps(w[r * wr + k * wk]);
            for (int c = 0; c < NC; c++) acc[r][c] = _mm256_fmadd_ps(wv, yv[c], acc[r][c]);
        }
    }
    const __m256 va = _mm256_set1_ps(alpha);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NC; c++) {
            __m256 v = _mm256_mul_ps(acc[r][c], va);
            if (beta != 0.0f) v = _mm256_add_ps(load_chunk(out + r * ldo, D, d0 + 8 * c), v);
            store_chunk(out + r * ldo, D, d0 + 8 * c, v);
        }
}

/* Rows 0 .. rows of the product above, in tiles; row r sums k < nk(r) = min(n0 + r·dn, n)
 * (causal attention: each query sees one key more than the one before; dn = 0 otherwise).
 * A tile sums up to its last row's count: the weights past a row's own count are 0. ypad: the
 * rows y_k may be read in whole vectors past D (padded), which spares masked loads. */
VNM_CPU_AVX2_INLINE void product(float *out, int64_t ldo, const float *w, int64_t wr, int64_t wk,
                                 const float *y, int64_t ldy, int64_t rows, int64_t n0,
                                 int64_t dn, int64_t n, int64_t D, float alpha, float beta,
                                 bool ypad)
{
    for (int64_t d0 = 0; d0 < D; d0 += 24) {
        int NC = D - d0 >= 24 ? 3 : (int)((D - d0 + 7) / 8);
        int RM = NC == 3 ? 3 : 4;
        for (int64_t r0 = 0; r0 < rows; r0 += RM) {
            int R = rows - r0 < RM ? (int)(rows - r0) : RM;
            int64_t nk = n0 + (r0 + R - 1) * dn;
            nk = nk < n ? nk : n;
            float *o = out + r0 * ldo;
            const float *wp = w + r0 * wr;
#define TILE(r, c)                                                                                 \
    tile(o, ldo, wp, wr, wk, y, ldy, nk, D, d0, r, c, alpha, beta, ypad)
            switch (NC * 8 + R) {
            case 3 * 8 + 3: TILE(3, 3); break;
            case 3 * 8 + 2: TILE(2, 3); break;
            case 3 * 8 + 1: TILE(1, 3); break;
            case 2 * 8 + 4: TILE(4, 2); break;
            case 2 * 8 + 3: TILE(3, 2); break;
            case 2 * 8 + 2: TILE(2, 2); break;
            case 2 * 8 + 1: TILE(1, 2); break;
            case 1 * 8 + 4: TILE(4, 1); break;
            case 1 * 8 + 3: TILE(3, 1); break;
            case 1 * 8 + 2: TILE(2, 1); break;
            default: TILE(1, 1); break;
            }
#undef TILE
        }
    }
}

VNM_CPU_AVX2_INLINE void transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

/* xt[D][Sp] = rows x_s (s < S, x_s = x + s·ldx, [D]) transposed, padded with zeros to Sp, a
 * multiple of 8: whole 8×8 blocks in registers, the edges element by element. */
VNM_CPU_AVX2_INLINE void transpose_rows(float *xt, int64_t Sp, const float *x, int64_t ldx,
                                        int64_t S, int64_t D)
{
    int64_t S8 = S / 8 * 8, D8 = D / 8 * 8;
    for (int64_t s0 = 0; s0 < S8; s0 += 8)
        for (int64_t d0 = 0; d0 < D8; d0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(x + (s0 + i) * ldx + d0);
            transpose8(r);
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(xt + (d0 + i) * Sp + s0, r[i]);
        }
    for (int64_t d = 0; d < D; d++)
        for (int64_t s = S8; s < Sp; s++) xt[d * Sp + s] = s < S ? x[s * ldx + d] : 0.0f;
    for (int64_t s = 0; s < S8; s++)
        for (int64_t d = D8; d < D; d++) xt[d * Sp + s] = x[s * ldx + d];
}

/* Σ a[s]·b[s] in double */
VNM_CPU_AVX2_INLINE double dot_f64(const float *a, const float *b, int64_t n)
{
    __m256d acc = _mm256_setzero_pd();
    int64_t s = 0;
    for (; s + 4 <= n; s += 4)
        acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + s)),
                                               _mm256_cvtps_pd(_mm_loadu_ps(b + s))));
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
    double r = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; s < n; s++) r += (double)a[s] * b[s];
    return r;
}

/* One phase at a time over all rows (scores, softmax, products): the rows of a phase do not
 * depend on each other, so their latencies overlap. The softmax is the same row function as the
 * softmax and cross-entropy kernels' (softmax_row.h); keys past a row's visible ones get 0. */
/* Scores = scale·Q·Kᵀ as the tiled product with K transposed (kt: [D, S] scratch); then the row
 * softmax of softmax_row.h, one step at a time over all rows, the exponentials taken over the
 * whole [T, S] block at once (the keys a row may not see hold -inf until then); O = P·V. */
VNM_CPU_AVX2_INLINE void fwd_head_avx2_d(float *o, int64_t ldo, float *p, head_in h, int64_t T,
                                         int64_t S, int64_t D, bool causal, float scale)
{
    float kt[SMALL_HEAD_MAX_DS]; /* [D, Sp] */
    int64_t Sp = (S + 7) / 8 * 8;
    transpose_rows(kt, Sp, h.k, h.ldk, S, D);
    product(p, S, h.q, h.ldq, 1, kt, Sp, T, D, 0, D, S, scale, 0.0f, true);
    for (int64_t t = 0; t < T; t++) {
        float *row = p + t * S; /* [S] */
        int64_t n = visible(t, T, S, causal), j = 0;
        float m = vnm_cpu_softmax_max_avx2(row, n);
        const __m256 vm = _mm256_set1_ps(m);
        for (; j + 8 <= n; j += 8) _mm256_storeu_ps(row + j, _mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
        for (; j < n; j++) row[j] -= m;
        for (; j < S; j++) row[j] = -INFINITY;
    }
    int64_t n = T * S, j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(p + j, vnm_v8_exp(_mm256_loadu_ps(p + j)));
    if (j < n) {
        float buf[8] = {0};
        memcpy(buf, p + j, (size_t)((n - j) & 7) * sizeof *buf);
        _mm256_storeu_ps(buf, vnm_v8_exp(_mm256_loadu_ps(buf)));
        memcpy(p + j, buf, (size_t)((n - j) & 7) * sizeof *buf);
    }
    for (int64_t t = 0; t < T; t++) {
        float *row = p + t * S; /* [S]: exp(x - max), 0 past the visible keys */
        int64_t nv = visible(t, T, S, causal), k = 0;
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        for (; k < nv; k += 8) { /* as vnm_cpu_softmax_exp_avx2 adds them */
            __m256 e = nv - k >= 8 ? _mm256_loadu_ps(row + k)
                                   : _mm256_maskload_ps(row + k, vnm_v8_tail_mask(nv - k));
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        }
        s0 = _mm256_add_pd(s0, s1);
        __m128d d = _mm_add_pd(_mm256_castpd256_pd128(s0), _mm256_extractf128_pd(s0, 1));
        vnm_cpu_softmax_scale_avx2(row, nv, _mm_cvtsd_f64(_mm_add_sd(d, _mm_unpackhi_pd(d, d))));
    }
    /* O = P·V */
    product(o, ldo, p, S, 1, h.v, h.ldv, T, visible(0, T, S, causal), causal ? 1 : 0, S, D, 1.0f,
            0.0f, false);
}

/* dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP - rowsum(P ⊙ dP)), dQ = scale·dS·K, dK = scale·dSᵀ·Q
 * (= or += by the betas). The transposed products sum over all T queries: a masked P or dS is 0. */
VNM_CPU_AVX2_INLINE void bwd_head_avx2_d(head_grads g, const float *dout, int64_t lddo,
                                         const float *p, head_in h, float *ds, int64_t T,
                                         int64_t S, int64_t D, float scale)
{
    if (g.dv) product(g.dv, g.lddv, p, 1, S, dout, lddo, S, T, 0, T, D, 1.0f, g.beta_kv, false);
    if (!g.dq && !g.dk) return;
    float vt[SMALL_HEAD_MAX_DS]; /* [D, Sp] */
    int64_t Sp = (S + 7) / 8 * 8;
    transpose_rows(vt, Sp, h.v, h.ldv, S, D);
    product(ds, S, dout, lddo, 1, vt, Sp, T, D, 0, D, S, 1.0f, 0.0f, true); /* dP = dO·Vᵀ */
    for (int64_t t = 0; t < T; t++) {
        const float *pr = p + t * S; /* [S] */
        float *dr = ds + t * S;      /* [S]: dP, then dS */
        float c = (float)dot_f64(pr, dr, S);
        for (int64_t s = 0; s < S; s++) dr[s] = pr[s] * (dr[s] - c);
    }
    if (g.dq) product(g.dq, g.lddq, ds, S, 1, h.k, h.ldk, T, S, 0, S, D, scale, g.beta_q, false);
    if (g.dk) product(g.dk, g.lddk, ds, 1, S, h.q, h.ldq, S, T, 0, T, D, scale, g.beta_kv, false);
}

/* Copies of the head kernels for the usual head sizes, where the compiler knows D (the chunk
 * loops unroll and the tail tests vanish): about 1.7x faster than the general one. */
#define HEAD_SIZES(X) X(16) X(24) X(32) X(48) X(64)
#define FWD_D(d)                                                                                   \
    static VNM_CPU_AVX2 void fwd_head_avx2_##d(float *o, int64_t ldo, float *p, head_in h,          \
                                               int64_t T, int64_t S, bool causal, float scale)     \
    {                                                                                              \
        fwd_head_avx2_d(o, ldo, p, h, T, S, d, causal, scale);                                     \
    }
#define BWD_D(d)                                                                                   \
    static VNM_CPU_AVX2 void bwd_head_avx2_##d(head_grads g, const float *dout, int64_t lddo,      \
                                               const float *p, head_in h, float *ds, int64_t T,    \
                                               int64_t S, float scale)                             \
    {                                                                                              \
        bwd_head_avx2_d(g, dout, lddo, p, h, ds, T, S, d, scale);                                  \
    }
HEAD_SIZES(FWD_D)
HEAD_SIZES(BWD_D)

static VNM_CPU_AVX2 void fwd_head_avx2(float *o, int64_t ldo, float *p, head_in h, int64_t T,
                                       int64_t S, int64_t D, bool causal, float scale)
{
    switch (D) {
#define FWD_CASE(d)                                                                                \
    case d: fwd_head_avx2_##d(o, ldo, p, h, T, S, causal, scale); return;
        HEAD_SIZES(FWD_CASE)
    default: fwd_head_avx2_d(o, ldo, p, h, T, S, D, causal, scale);
    }
}

static VNM_CPU_AVX2 void bwd_head_avx2(head_grads g, const float *dout, int64_t lddo,
                                       const float *p, head_in h, float *ds, int64_t T, int64_t S,
                                       int64_t D, float scale)
{
    switch (D) {
#define BWD_CASE(d)                                                                                \
    case d: bwd_head_avx2_##d(g, dout, lddo, p, h, ds, T, S, scale); return;
        HEAD_SIZES(BWD_CASE)
    default: bwd_head_avx2_d(g, dout, lddo, p, h, ds, T, S, D, scale);
    }
}
#endif

static bool small_heads(int64_t T, int64_t S, int64_t D)
{
#if VNM_CPU_X86
    return T * S * D <= ATTENTION_SMALL_HEAD && T <= SMALL_HEAD_MAX_ROWS &&
           S <= SMALL_HEAD_MAX_ROWS && D * ((S + 7) / 8 * 8) <= SMALL_HEAD_MAX_DS &&
           vnm_cpu_use_avx2();
#else
    (void)T, (void)S, (void)D;
    return false;
#endif
}

static void cpu_attention_fwd_strided(float *o, vnm_attn_strides os, float *p, const float *q,
                                      vnm_attn_strides qs, const float *k, vnm_attn_strides ks,
                                      const float *v, vnm_attn_strides vs, int64_t B, int64_t Hq,
                                      int64_t Hkv, int64_t T, int64_t S, int64_t D, bool causal,
                                      float scale)
{
    int64_t heads = B * Hq, rep = Hq / Hkv, work = heads * T * S * D;
    if (T == 0) return;
    bool small = small_heads(T, S, D);
#pragma omp parallel for schedule(static) if (heads > 1 && work > ATTENTION_PARALLEL_WORK)
    for (int64_t bh = 0; bh < heads; bh++) {
        int64_t b = bh / Hq, hq = bh % Hq, hk = hq / rep;
        head_in in = {q + b * qs.b + hq * qs.h, k + b * ks.b + hk * ks.h, v + b * vs.b + hk * vs.h,
                      qs.t, ks.t, vs.t};
        float *oh = o + b * os.b + hq * os.h; /* [T, D] rows os.t apart */
        float *ph = p + bh * T * S;           /* [T, S] */
#if VNM_CPU_X86
        if (small) {
            fwd_head_avx2(oh, os.t, ph, in, T, S, D, causal, scale);
            continue;
        }
#endif
        fwd_head_blas(oh, os.t, ph, in, T, S, D, causal, scale);
    }
    (void)small;
}

/* The kernel table has no error channel: if the scratch cannot be allocated, NaN gradients make
 * the failure visible (non-finite loss / gradient norm) instead of silently wrong. */
static void poison(float *x, vnm_attn_strides xs, int64_t B, int64_t H, int64_t R, int64_t D)
{
    if (!x) return;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t d = 0; d < D; d++) x[b * xs.b + h * xs.h + r * xs.t + d] = NAN;
}

/* Threads split the KV groups and each loops over its query heads in order, so the sums into a
 * shared dK/dV run in a fixed order without atomics. With overwrite, the first query head of a
 * group writes dK/dV and the others add to it. */
static void cpu_attention_bwd_strided(float *dq, vnm_attn_strides dqs, float *dk,
                                      vnm_attn_strides dks, float *dv, vnm_attn_strides dvs,
                                      bool overwrite, const float *dout, vnm_attn_strides dos,
                                      const float *p, const float *q, vnm_attn_strides qs,
                                      const float *k, vnm_attn_strides ks, const float *v,
                                      vnm_attn_strides vs, int64_t B, int64_t Hq, int64_t Hkv,
                                      int64_t T, int64_t S, int64_t D, float scale)
{
    int64_t groups = B * Hkv, rep = Hq / Hkv;
    if (T == 0) {
        /* no query: the gradients of k and v are 0 */
        if (overwrite) {
            for (int64_t b = 0; b < B; b++)
                for (int64_t h = 0; h < Hkv; h++)
                    for (int64_t s = 0; s < S; s++)
                        for (int64_t d = 0; d < D; d++) {
                            if (dk) dk[b * dks.b + h * dks.h + s * dks.t + d] = 0.0f;
                            if (dv) dv[b * dvs.b + h * dvs.h + s * dvs.t + d] = 0.0f;
                        }
        }
        return;
    }
    bool parallel = groups > 1 && B * Hq * T * S * D > ATTENTION_PARALLEL_WORK;
    bool need_ds = dq || dk;
    bool small = small_heads(T, S, D);
    int threads = parallel ? omp_get_max_threads() : 1;
    float *scratch = need_ds ? malloc((size_t)threads * (size_t)(T * S) * sizeof *scratch) : NULL;
    if (need_ds && !scratch) {
        poison(dq, dqs, B, Hq, T, D);
        poison(dk, dks, B, Hkv, S, D);
        poison(dv, dvs, B, Hkv, S, D);
        return;
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t grp = 0; grp < groups; grp++) {
        float *ds = need_ds ? scratch + (int64_t)omp_get_thread_num() * T * S : NULL; /* [T, S] */
        int64_t b = grp / Hkv, hk = grp % Hkv;
        for (int64_t r = 0; r < rep; r++) {
            int64_t hq = hk * rep + r, bh = b * Hq + hq;
            head_in in = {q + b * qs.b + hq * qs.h, k + b * ks.b + hk * ks.h,
                          v + b * vs.b + hk * vs.h, qs.t, ks.t, vs.t};
            head_grads g = {dq ? dq + b * dqs.b + hq * dqs.h : NULL,
                            dk ? dk + b * dks.b + hk * dks.h : NULL,
                            dv ? dv + b * dvs.b + hk * dvs.h : NULL,
                            dqs.t, dks.t, dvs.t,
                            overwrite ? 0.0f : 1.0f,
                            overwrite && r == 0 ? 0.0f : 1.0f};
            const float *doh = dout + b * dos.b + hq * dos.h; /* [T, D] rows dos.t apart */
            const float *ph = p + bh * T * S;                  /* [T, S] */
#if VNM_CPU_X86
            if (small) {
                bwd_head_avx2(g, doh, dos.t, ph, in, ds, T, S, D, scale);
                continue;
            }
#endif
            bwd_head_blas(g, doh, dos.t, ph, in, ds, T, S, D, scale);
        }
    }
    (void)small;
    free(scratch);
}

static vnm_attn_strides contiguous(int64_t H, int64_t R, int64_t D)
{
    return (vnm_attn_strides){H * R * D, R * D, D};
}

static void cpu_attention_fwd(float *o, float *p, const float *q, const float *k, const float *v,
                              int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                              bool causal, float scale)
{
    vnm_attn_strides qs = contiguous(Hq, T, D), ks = contiguous(Hkv, S, D);
    cpu_attention_fwd_strided(o, qs, p, q, qs, k, ks, v, ks, B, Hq, Hkv, T, S, D, causal, scale);
}

static void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *p,
                              const float *q, const float *k, const float *v, int64_t B,
                              int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                              float scale)
{
    vnm_attn_strides qs = contiguous(Hq, T, D), ks = contiguous(Hkv, S, D);
    cpu_attention_bwd_strided(dq, qs, dk, ks, dv, ks, false, dout, qs, p, q, qs, k, ks, v, ks, B,
                              Hq, Hkv, T, S, D, scale);
}

void vnm_cpu_register_attention(vnm_backend *be)
{
    be->attention_fwd = cpu_attention_fwd;
    be->attention_bwd = cpu_attention_bwd;
    be->attention_fwd_strided = cpu_attention_fwd_strided;
    be->attention_bwd_strided = cpu_attention_bwd_strided;
}
