/* autograd/op_scatter.c — scatter by index into a new dense tensor (vnm_scatter), e.g. the values
 * of a compressed weight laid out as the dense matrix they stand for; backward gathers. */
#include "internal.h"

/* saved[0]: the index (the caller's) */
static void scatter_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *dsrc = vnm_grad_buffer(ctx, node->in[0]);
    if (dsrc)
        ctx->be->gather_add(VNM_F32(dsrc), VNM_F32(node->out->grad), vnm_numel(node->out),
                            node->saved[0]->data, vnm_numel(dsrc));
}

vnm_tensor *vnm_scatter(vnm_ctx *ctx, vnm_tensor *src, vnm_tensor *index, int ndim,
                        const int64_t *shape)
{
    static const char *op = "scatter";
    if (!src || !index) return NULL;
    char s1[96], s2[96];
    if (!vnm_check_f32(ctx, op, src, "source") ||
        !vnm_check_kernel(ctx, op, ctx->be->scatter && ctx->be->gather_add))
        return NULL;
    if (index->dtype != VNM_DTYPE_I32 || vnm_numel(index) != vnm_numel(src) ||
        !vnm_is_contiguous(index) || !vnm_is_contiguous(src) || index->device != src->device) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "scatter: the source %s and the index %s must be "
                     "contiguous, the index i32 with one entry per source element, on one device",
                     vnm_shape_str(src, s1, sizeof s1), vnm_shape_str(index, s2, sizeof s2));
        return NULL;
    }
    vnm_tensor *out = vnm_tensor_new(ctx, VNM_DTYPE_F32, ndim, shape); /* zeros */
    if (!out) return NULL;
    ctx->be->scatter(VNM_F32(out), vnm_numel(out), VNM_F32(src), index->data, vnm_numel(src));
    vnm_node *node = vnm_tape_record(ctx, op, scatter_backward, out, 1, &src);
    vnm_node_reads(node, 0);
    if (node) node->saved[0] = index;
    return out;
}
