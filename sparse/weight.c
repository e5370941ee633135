/* sparse/weight.c — a compressed weight on a context: the canonical arrays of a vnm_sparse_host
 * as tensors (vals a parameter, the structure fixed buffers), and back; the index of the dense
 * form, and the choice between the forms. */
#include <stdlib.h>

#include "internal.h"

bool vnm_sparse_dense_form(const vnm_ctx *ctx)
{
    const char *e = getenv("VNM_SPARSE_DENSE");
    return (e && e[0] == '1') || vnm_ctx_device(ctx) != VNM_DEVICE_CPU;
}

int32_t vnm_sparse_kept_col(const vnm_sparse_weight *w, const uint8_t *slots,
                            const int32_t *cols, int64_t o, int64_t g, int j)
{
    int code = slots[o * w->Gp + g];
    int s = j ? code >> 2 : code & 3;
    return cols[((o / w->pat.V) * w->Gp + g) * 4 + s];
}

vnm_status vnm_sparse_weight_dense_index(vnm_ctx *ctx, vnm_sparse_weight *w)
{
    if (w->dense_index) return VNM_OK;
    vnm_sparse_host h;
    if (vnm_sparse_weight_to_host(ctx, w, &h) != VNM_OK) return vnm_ctx_status(ctx);
    int64_t n = w->O_pad * w->Gp * 2;
    int32_t *idx = malloc((size_t)n * sizeof *idx + 1);
    if (!idx) {
        vnm_sparse_host_free(&h);
        return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "sparse weight '%s': out of memory", w->name);
    }
    for (int64_t o = 0; o < w->O_pad; o++)
        for (int64_t g = 0; g < w->Gp; g++)
            for (int j = 0; j < 2; j++) {
                int32_t c = vnm_sparse_kept_col(w, h.slots, h.cols, o, g, j), r = h.rows[o];
                idx[(o * w->Gp + g) * 2 + j] = r >= 0 && c >= 0 ? (int32_t)(r * w->I + c) : -1;
            }
    vnm_sparse_host_free(&h);
    w->dense_index = vnm_buffer_new(ctx, VNM_DTYPE_I32, 3, VNM_SHAPE(w->O_pad, w->Gp, 2),
                                    "dense_index");
    vnm_status st = w->dense_index ? vnm_tensor_from_host(ctx, w->dense_index, idx)
                                   : vnm_ctx_status(ctx);
    free(idx);
    return st;
}

vnm_sparse_weight *vnm_sparse_weight_new(vnm_ctx *ctx, const vnm_sparse_host *h, const char *name)
{
    vnm_sparse_weight *w = calloc(1, sizeof *w);
    if (!w) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of memory for sparse weight '%s'", name);
        return NULL;
    }
    int64_t blocks = h->O_pad / h->pat.V;
    *w = (vnm_sparse_weight){h->pat, h->O, h->I, h->O_pad, h->G, h->Gp, NULL, NULL, NULL, NULL,
                             name, NULL};
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
