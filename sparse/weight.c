/* sparse/weight.c — a compressed weight on a context: the canonical arrays of a vnm_sparse_host
 * as tensors (vals a parameter, the structure fixed buffers), and back. */
#include <stdlib.h>

#include "sparse.h"

vnm_sparse_weight *vnm_sparse_weight_new(vnm_ctx *ctx, const vnm_sparse_host *h, const char *name)
{
    if (vnm_ctx_device(ctx) != VNM_DEVICE_CPU) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "sparse weight '%s': sparse kernels exist for the cpu "
                     "backend only", name ? name : "");
        return NULL;
    }
    vnm_sparse_weight *w = calloc(1, sizeof *w);
    if (!w) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of memory for sparse weight '%s'", name);
        return NULL;
    }
    int64_t blocks = h->O_pad / h->pat.V;
    *w = (vnm_sparse_weight){h->pat, h->O, h->I, h->O_pad, h->G, h->Gp, NULL, NULL, NULL, NULL,
                             name};
    w->vals = vnm_param_new(ctx, VNM_DTYPE_F32, 3, VNM_SHAPE(h->O_pad, h->Gp, 2), name);
    w->slots = vnm_buffer_new(ctx, VNM_DTYPE_U8, 2, VNM_SHAPE(h->O_pad, h->Gp), "slots");
    w->cols = vnm_buffer_new(ctx, VNM_DTYPE_I32, 3, VNM_SHAPE(blocks, h->Gp, 4), "cols");
    w->rows = vnm_buffer_new(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(h->O_pad), "rows");
    if (!w->vals || !w->slots || !w->cols || !w->rows ||
        vnm_tensor_from_host(ctx, w->vals, h->vals) != VNM_OK ||
        vnm_tensor_from_host(ctx, w->slots, h->slots) != VNM_OK ||
        vnm_tensor_from_host(ctx, w->cols, h->cols) != VNM_OK ||
        vnm_tensor_from_host(ctx, w->rows, h->rows) != VNM_OK) {
        free(w);
        return NULL;
    }
    w->name = w->vals->name;
    return w;
}

void vnm_sparse_weight_free(vnm_sparse_weight *w) { free(w); }

vnm_status vnm_sparse_weight_to_host(vnm_ctx *ctx, const vnm_sparse_weight *w,
                                     vnm_sparse_host *out)
{
    if (vnm_sparse_host_alloc(out, w->pat, w->O, w->I) != VNM_OK)
        return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of memory copying sparse weight '%s'",
                            w->name ? w->name : "");
    vnm_status st = vnm_tensor_to_host(ctx, w->vals, out->vals);
    if (st == VNM_OK) st = vnm_tensor_to_host(ctx, w->slots, out->slots);
    if (st == VNM_OK) st = vnm_tensor_to_host(ctx, w->cols, out->cols);
    if (st == VNM_OK) st = vnm_tensor_to_host(ctx, w->rows, out->rows);
    if (st != VNM_OK) vnm_sparse_host_free(out);
    return st;
}
