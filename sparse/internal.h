/* sparse/internal.h — what the sparse ops share and nothing outside sparse/ includes. */
#ifndef VNM_SPARSE_INTERNAL_H
#define VNM_SPARSE_INTERNAL_H

#include "kernels.h"

/* The error convention of the host-side sparse functions: a message in err, VNM_ERR_INPUT. */
#define vnm_sparse_fail(err, err_len, ...) vnm_errbuf((err), (err_len), VNM_ERR_INPUT, __VA_ARGS__)

/* Argument checks of the sparse-linear ops: x f32 [..., I], b NULL or f32 [O], and a cpu
 * context unless the dense form runs. */
bool vnm_sparse_linear_check(vnm_ctx *ctx, const char *op, const vnm_tensor *x, int64_t O,
                             int64_t I, const vnm_tensor *b, bool dense);
/* Whether the dense form runs: on backends without the sparse kernels, or VNM_SPARSE_DENSE=1. */
bool vnm_sparse_dense_form(const vnm_ctx *ctx);
/* w->dense_index, made from the compressed arrays on the first call. */
vnm_status vnm_sparse_weight_dense_index(vnm_ctx *ctx, vnm_sparse_weight *w);
/* The column of the block of stored row o that slot j of group g keeps, -1 when unused. */
int32_t vnm_sparse_kept_col(const vnm_sparse_weight *w, const uint8_t *slots,
                            const int32_t *cols, int64_t o, int64_t g, int j);

/* A malloc'd f32 host copy of a f32/bf16/f16 tensor (NULL with a message on ctx on failure). */
float *vnm_lora_weight_to_f32(vnm_ctx *ctx, const vnm_tensor *W);
/* Uploads the masks to l->mask_dev / l->pruned_dev (the dense form), creating them first. */
vnm_status vnm_lora_refresh_dense_masks(vnm_ctx *ctx, vnm_lora *l);

#endif
