/* autograd/cpu/attention.c — scaled dot-product attention, forward and backward, with grouped KV
 * heads. Each (batch, head) pair is a few OpenBLAS GEMMs around a row softmax; threads split the
 * heads, and OpenBLAS runs single-threaded inside the parallel region (its OpenMP build), or with
 * its own threads when there is a single head to work on.
 *
 * Causal mask: query t sees keys s ≤ t + (S - T) (last query aligned with the last key; the op
 * guarantees T ≤ S so every row sees at least one key). Masked probabilities are stored as 0, so
 * the backward needs no mask of its own. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "../backend.h"
#include "softmax_row.h"

/* Below this many multiply-adds a thread team costs more than it saves. */
#define ATTENTION_PARALLEL_WORK 16384

/* Row softmax of the scaled scores in p[T, S], in place, over the keys each query may see. */
static void softmax_rows(float *p, int64_t T, int64_t S, bool causal)
{
    for (int64_t t = 0; t < T; t++) {
        float *row = p + t * S; /* [S] */
        int64_t n = causal ? t + S - T + 1 : S; /* keys this query sees */
        vnm_cpu_softmax_row(row, row, n);
        for (int64_t s = n; s < S; s++) row[s] = 0.0f;
    }
}

static void cpu_attention_fwd(float *o, float *p, const float *q, const float *k, const float *v,
                              int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                              bool causal, float scale)
{
    int64_t heads = B * Hq, rep = Hq / Hkv, work = heads * T * S * D;
    if (T == 0) return;
#pragma omp parallel for schedule(static) if (heads > 1 && work > ATTENTION_PARALLEL_WORK)
    for (int64_t bh = 0; bh < heads; bh++) {
        int64_t kv = (bh / Hq) * Hkv + (bh % Hq) / rep;
        const float *qh = q + bh * T * D;                       /* [T, D] */
        const float *kh = k + kv * S * D, *vh = v + kv * S * D; /* [S, D] */
        float *ph = p + bh * T * S;                             /* [T, S] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)T, (blasint)S, (blasint)D,
                    scale, qh, (blasint)D, kh, (blasint)D, 0.0f, ph, (blasint)S);
        softmax_rows(ph, T, S, causal);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)T, (blasint)D, (blasint)S,
                    1.0f, ph, (blasint)S, vh, (blasint)D, 0.0f, o + bh * T * D, (blasint)D);
    }
}

/* The kernel table has no error channel: if the scratch cannot be allocated, NaN gradients make
 * the failure visible (non-finite loss / gradient norm) instead of silently wrong. */
static void poison(float *x, int64_t n)
{
    if (!x) return;
    for (int64_t i = 0; i < n; i++) x[i] = NAN;
}

/* With P = softmax(scale·Q·Kᵀ) and O = P·V, per query head h of KV group g:
 *   dV_g += Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ⊙ (dP - rowsum(P ⊙ dP)),
 *   dQ_h += scale·dS·K_g,  dK_g += scale·dSᵀ·Q_h.
 * Threads split the KV groups and each loops over its query heads in order, so the sums into a
 * shared dK/dV run in a fixed order without atomics. */
static void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *p,
                              const float *q, const float *k, const float *v, int64_t B,
                              int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                              float scale)
{
    int64_t groups = B * Hkv, rep = Hq / Hkv;
    if (T == 0) return;
    bool parallel = groups > 1 && B * Hq * T * S * D > ATTENTION_PARALLEL_WORK;
    bool need_ds = dq || dk;
    int threads = parallel ? omp_get_max_threads() : 1;
    float *scratch = need_ds ? malloc((size_t)threads * (size_t)(T * S) * sizeof *scratch) : NULL;
    if (need_ds && !scratch) {
        poison(dq, B * Hq * T * D);
        poison(dk, B * Hkv * S * D);
        poison(dv, B * Hkv * S * D);
        return;
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t g = 0; g < groups; g++) {
        float *ds = need_ds ? scratch + (int64_t)omp_get_thread_num() * T * S : NULL; /* [T, S] */
        const float *kg = k + g * S * D, *vg = v + g * S * D; /* [S, D] */
        float *dkg = dk ? dk + g * S * D : NULL, *dvg = dv ? dv + g * S * D : NULL;
        for (int64_t r = 0; r < rep; r++) {
            int64_t bh = (g / Hkv) * Hq + (g % Hkv) * rep + r;
            const float *ph = p + bh * T * S;                         /* [T, S] */
            const float *doh = dout + bh * T * D, *qh = q + bh * T * D; /* [T, D] */
            if (dvg)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)S, (blasint)D,
                            (blasint)T, 1.0f, ph, (blasint)S, doh, (blasint)D, 1.0f, dvg,
                            (blasint)D);
            if (!need_ds) continue;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)T, (blasint)S, (blasint)D,
                        1.0f, doh, (blasint)D, vg, (blasint)D, 0.0f, ds, (blasint)S);
            for (int64_t t = 0; t < T; t++) {
                const float *pr = ph + t * S; /* [S] */
                float *dr = ds + t * S;       /* [S]: dP, then dS */
                double dot = 0.0;
                for (int64_t s = 0; s < S; s++) dot += (double)pr[s] * dr[s];
                float c = (float)dot;
                for (int64_t s = 0; s < S; s++) dr[s] = pr[s] * (dr[s] - c);
            }
            if (dq)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)T, (blasint)D,
                            (blasint)S, scale, ds, (blasint)S, kg, (blasint)D, 1.0f,
                            dq + bh * T * D, (blasint)D);
            if (dkg)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)S, (blasint)D,
                            (blasint)T, scale, ds, (blasint)S, qh, (blasint)D, 1.0f, dkg,
                            (blasint)D);
        }
    }
    free(scratch);
}

void vnm_cpu_register_attention(vnm_backend *be)
{
    be->attention_fwd = cpu_attention_fwd;
    be->attention_bwd = cpu_attention_bwd;
}
