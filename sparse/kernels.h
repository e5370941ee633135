/* sparse/kernels.h — internal to sparse/: the reference products the fast kernels (declared in
 * sparse.h, "products of a compressed weight") are tested against, and the bias helpers of the
 * sparse-linear ops. */
#ifndef VNM_SPARSE_KERNELS_H
#define VNM_SPARSE_KERNELS_H

#include "sparse.h"

/* Bias of a token-major output: y[T][O] = b (broadcast); db[O] += Σ_t dy[T][O] in token order. */
void vnm_spmm_bias_fill(float *y, const float *b, int64_t T, int64_t O);
void vnm_spmm_bias_grad(float *db, const float *dy, int64_t T, int64_t O);

/* Plain-loop references (one output element at a time, tokens in order): the oracle for tests. */
void vnm_spmm_fwd_ref(const vnm_spmm_weight *w, const float *x, int64_t T, float *y);
void vnm_spmm_dx_ref(const vnm_spmm_weight *w, const float *dy, int64_t T, float *dx);
void vnm_spmm_dw_ref(const vnm_spmm_weight *w, const float *dy, const float *x, int64_t T,
                     float *dvals);

#endif
