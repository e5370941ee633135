/* sparse/kernels.h — the three products of a compressed V:N:M weight (METHOD §5, §7), internal to
 * sparse/. Activations are token-major at this boundary (x[T, I], y[T, O]); a kernel packs them
 * however its micro-kernels want. Every product ACCUMULATES (+=) into its output, so callers
 * pre-fill y with the bias (or zeros) and gradients add up across uses. Stored row o writes output
 * column rows[o] (the output permutation is undone on store); rows[o] < 0 and cols < 0 are
 * padding and contribute nothing. All kernels are deterministic for a fixed thread count, and with
 * integer-valued inputs small enough for exact f32 sums they are bit-identical to the references.
 */
#ifndef VNM_SPARSE_KERNELS_H
#define VNM_SPARSE_KERNELS_H

#include "sparse.h"

typedef struct {
    vnm_pattern pat;
    int64_t O, I, O_pad, G, Gp;
    const float *vals;    /* [O_pad][Gp][2] */
    const uint8_t *slots; /* [O_pad][Gp] */
    const int32_t *cols;  /* [O_pad / V][Gp][4] */
    const int32_t *rows;  /* [O_pad] */
} vnm_spmm_weight;

vnm_spmm_weight vnm_spmm_weight_of_host(const vnm_sparse_host *w);

/* y[T][O] += x[T][I] · Wᵀ */
void vnm_spmm_fwd(const vnm_spmm_weight *w, const float *x, int64_t T, float *y);
/* dx[T][I] += dy[T][O] · W */
void vnm_spmm_dx(const vnm_spmm_weight *w, const float *dy, int64_t T, float *dx);
/* dvals[O_pad][Gp][2] += (dyᵀ · x) at the kept positions */
void vnm_spmm_dw(const vnm_spmm_weight *w, const float *dy, const float *x, int64_t T,
                 float *dvals);

/* Bias of a token-major output: y[T][O] = b (broadcast); db[O] += Σ_t dy[T][O] in token order. */
void vnm_spmm_bias_fill(float *y, const float *b, int64_t T, int64_t O);
void vnm_spmm_bias_grad(float *db, const float *dy, int64_t T, int64_t O);

/* Plain-loop references (one output element at a time, tokens in order): the oracle for tests. */
void vnm_spmm_fwd_ref(const vnm_spmm_weight *w, const float *x, int64_t T, float *y);
void vnm_spmm_dx_ref(const vnm_spmm_weight *w, const float *dy, int64_t T, float *dx);
void vnm_spmm_dw_ref(const vnm_spmm_weight *w, const float *dy, const float *x, int64_t T,
                     float *dvals);

#endif
