/* sparse/internal.h — what the sparse ops share and nothing outside sparse/ includes. */
#ifndef VNM_SPARSE_INTERNAL_H
#define VNM_SPARSE_INTERNAL_H

#include "kernels.h"

/* Writes the message into err (when not NULL) and returns VNM_ERR_INPUT: the error convention
 * of the host-side sparse functions. */
vnm_status vnm_sparse_fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Argument checks of the sparse-linear ops: cpu context, x f32 [..., I], b NULL or f32 [O]. */
bool vnm_sparse_linear_check(vnm_ctx *ctx, const char *op, const vnm_tensor *x, int64_t O,
                             int64_t I, const vnm_tensor *b);

#endif
