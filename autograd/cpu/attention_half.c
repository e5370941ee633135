/* autograd/cpu/attention_half.c — the fused half-precision attention entries (attention_half_fwd,
 * attention_half_bwd) on the CPU: the reference the GPU's fused kernel is compared with, and what
 * bf16/f16 training on the CPU runs, so that both devices round the same values.
 *
 * Method: the half operands are widened into f32 scratch and the table's f32 strided entries run
 * on them; the forward rounds the output to the half dtype and derives each row's log-sum-exp
 * from its largest probability p* and that key's score s* (stats = s* - log p*, well conditioned
 * since p* ≥ 1/S); the backward recomputes the probabilities by running the forward again (as
 * flash attention recomputes them from the stats) and rounds the gradients. Its dS uses
 * rowsum(P ⊙ dP) where a flash kernel uses rowsum(dO ⊙ O) with the rounded O: equal in exact
 * arithmetic, so the two agree to half-precision rounding. Scratch is malloc'd per call; if it
 * cannot be, the forward declines and the backward fills its gradients with NaN. */
#include <math.h>
#include <stdlib.h>

#include "../backend.h"

/* x[B, H, R, D] (strided, dt) into dst [B, H, R, D] contiguous f32, or back with `to_half`. */
static void widen(float *dst, const void *src, vnm_attn_strides s, vnm_dtype dt, int64_t B,
                  int64_t H, int64_t R, int64_t D)
{
    const uint16_t *x = src;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t d = 0; d < D; d++) {
                    uint16_t v = x[b * s.b + h * s.h + r * s.t + d];
                    *dst++ = dt == VNM_DTYPE_BF16 ? vnm_bf16_to_f32(v) : vnm_f16_to_f32(v);
                }
}

static void round_to(void *dst, vnm_attn_strides s, const float *src, vnm_dtype dt, int64_t B,
                     int64_t H, int64_t R, int64_t D)
{
    uint16_t *y = dst;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t d = 0; d < D; d++) {
                    float v = *src++;
                    y[b * s.b + h * s.h + r * s.t + d] =
                        dt == VNM_DTYPE_BF16 ? vnm_f32_to_bf16(v) : vnm_f32_to_f16(v);
                }
}

static vnm_attn_strides contiguous(int64_t H, int64_t R, int64_t D)
{
    return (vnm_attn_strides){H * R * D, R * D, D};
}

/* The widened operands, the f32 output and the probabilities of one call. */
typedef struct {
    float *q, *k, *v, *o, *p;
} scratch;

static void scratch_free(scratch *w)
{
    free(w->q);
    free(w->k);
    free(w->v);
    free(w->o);
    free(w->p);
}

/* Widens q, k, v and runs the f32 forward into w->o, w->p. False when out of memory. */
static bool forward_f32(scratch *w, vnm_dtype dt, const void *q, vnm_attn_strides qs,
                        const void *k, vnm_attn_strides ks, const void *v, vnm_attn_strides vs,
                        int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                        bool causal, float scale)
{
    size_t nq = (size_t)(B * Hq * T * D), nkv = (size_t)(B * Hkv * S * D);
    *w = (scratch){malloc(nq * sizeof(float)), malloc(nkv * sizeof(float)),
                   malloc(nkv * sizeof(float)), malloc(nq * sizeof(float)),
                   malloc((size_t)(B * Hq * T * S) * sizeof(float) + 1)};
    if (!w->q || !w->k || !w->v || !w->o || !w->p) return false;
    widen(w->q, q, qs, dt, B, Hq, T, D);
    widen(w->k, k, ks, dt, B, Hkv, S, D);
    widen(w->v, v, vs, dt, B, Hkv, S, D);
    vnm_attn_strides cq = contiguous(Hq, T, D), ckv = contiguous(Hkv, S, D);
    vnm_backend_cpu()->attention_fwd_strided(w->o, cq, w->p, w->q, cq, w->k, ckv, w->v, ckv, B,
                                             Hq, Hkv, T, S, D, causal, scale);
    return true;
}

static bool cpu_attention_half_fwd(vnm_dtype dt, void *o, vnm_attn_strides os, float *stats,
                                   const void *q, vnm_attn_strides qs, const void *k,
                                   vnm_attn_strides ks, const void *v, vnm_attn_strides vs,
                                   int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S,
                                   int64_t D, bool causal, float scale)
{
    if (causal && T != S) return false;
    scratch w;
    if (!forward_f32(&w, dt, q, qs, k, ks, v, vs, B, Hq, Hkv, T, S, D, causal, scale)) {
        scratch_free(&w);
        return false;
    }
    round_to(o, os, w.o, dt, B, Hq, T, D);
    int64_t rep = Hq / Hkv;
    for (int64_t row = 0; row < B * Hq * T; row++) {
        const float *pr = w.p + row * S; /* [S] */
        int64_t best = 0;
        for (int64_t s = 1; s < S; s++)
            if (pr[s] > pr[best]) best = s;
        int64_t bh = row / T, b = bh / Hq, hk = bh % Hq / rep;
        const float *qr = w.q + row * D, *kr = w.k + ((b * Hkv + hk) * S + best) * D;
        float dot = 0.0f;
        for (int64_t d = 0; d < D; d++) dot += qr[d] * kr[d];
        stats[row] = scale * dot - logf(pr[best]);
    }
    scratch_free(&w);
    return true;
}

static void poison(void *x, vnm_attn_strides s, vnm_dtype dt, int64_t B, int64_t H, int64_t R,
                   int64_t D)
{
    float *nan = malloc((size_t)(B * H * R * D) * sizeof *nan + 1);
    if (!nan) abort(); /* not even the NaN fill fits: the gradients cannot be made visible */
    for (int64_t i = 0; i < B * H * R * D; i++) nan[i] = NAN;
    round_to(x, s, nan, dt, B, H, R, D);
    free(nan);
}

static bool cpu_attention_half_bwd(vnm_dtype dt, void *dq, vnm_attn_strides dqs, void *dk,
                                   vnm_attn_strides dks, void *dv, vnm_attn_strides dvs,
                                   const void *dout, vnm_attn_strides dos, const void *o,
                                   vnm_attn_strides os, const float *stats, const void *q,
                                   vnm_attn_strides qs, const void *k, vnm_attn_strides ks,
                                   const void *v, vnm_attn_strides vs, int64_t B, int64_t Hq,
                                   int64_t Hkv, int64_t T, int64_t S, int64_t D, bool causal,
                                   float scale)
{
    (void)o, (void)os, (void)stats; /* the probabilities are recomputed from q, k, v */
    size_t nq = (size_t)(B * Hq * T * D), nkv = (size_t)(B * Hkv * S * D);
    scratch w;
    float *g = malloc((nq + 2 * nkv) * sizeof *g), *gout = malloc(nq * sizeof *gout);
    bool ok = g && gout && forward_f32(&w, dt, q, qs, k, ks, v, vs, B, Hq, Hkv, T, S, D, causal,
                                       scale);
    if (ok) {
        float *gq = g, *gk = g + nq, *gv = g + nq + nkv;
        vnm_attn_strides cq = contiguous(Hq, T, D), ckv = contiguous(Hkv, S, D);
        widen(gout, dout, dos, dt, B, Hq, T, D);
        vnm_backend_cpu()->attention_bwd_strided(gq, cq, gk, ckv, gv, ckv, true, gout, cq, w.p,
                                                 w.q, cq, w.k, ckv, w.v, ckv, B, Hq, Hkv, T, S,
                                                 D, scale);
        round_to(dq, dqs, gq, dt, B, Hq, T, D);
        round_to(dk, dks, gk, dt, B, Hkv, S, D);
        round_to(dv, dvs, gv, dt, B, Hkv, S, D);
    } else {
        poison(dq, dqs, dt, B, Hq, T, D);
        poison(dk, dks, dt, B, Hkv, S, D);
        poison(dv, dvs, dt, B, Hkv, S, D);
    }
    if (g && gout) scratch_free(&w);
    free(g);
    free(gout);
    return true;
}

void vnm_cpu_register_attention_half(vnm_backend *be)
{
    be->attention_half_fwd = cpu_attention_half_fwd;
    be->attention_half_bwd = cpu_attention_half_bwd;
    be->attention_half_deterministic = true;
}
