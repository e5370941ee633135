/* autograd/op_softmax.c — softmax and log-softmax over the last dim. The input is viewed as
 * x[rows, D]; backward needs only the output (for both forms), so the node keeps no input data. */
#include "internal.h"

/* iarg: rows, D, take_log; the node's output is the saved softmax (or log-softmax) */
static void softmax_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *dx = vnm_grad_buffer(ctx, node->in[0]);
    if (dx)
        ctx->be->softmax_bwd(VNM_F32(dx), VNM_F32(node->out), VNM_F32(node->out->grad),
                             node->iarg[0], node->iarg[1], node->iarg[2] != 0);
}

static vnm_tensor *softmax(vnm_ctx *ctx, const char *op, vnm_tensor *x, bool take_log)
{
    if (!x) return NULL;
    if (!vnm_check_f32(ctx, op, x, "input") ||
        !vnm_check_ndim(ctx, op, x, "input", 1, VNM_MAX_DIMS) ||
        !vnm_check_kernel(ctx, op, ctx->be->softmax_fwd && ctx->be->softmax_bwd))
        return NULL;
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    int64_t D = x->shape[x->ndim - 1], rows = 1;
    for (int i = 0; i < x->ndim - 1; i++) rows *= x->shape[i];
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, x->shape); /* x's shape */
    if (!y) return NULL;
    ctx->be->softmax_fwd(VNM_F32(y), VNM_F32(x), rows, D, take_log);
    vnm_node *node = vnm_tape_record(ctx, op, softmax_backward, y, 1, &x);
    vnm_node_reads(node, VNM_READS_OUT);
    if (node) {
        node->iarg[0] = rows;
        node->iarg[1] = D;
        node->iarg[2] = take_log;
    }
    return y;
}

vnm_tensor *vnm_softmax(vnm_ctx *ctx, vnm_tensor *x) { return softmax(ctx, "softmax", x, false); }

vnm_tensor *vnm_log_softmax(vnm_ctx *ctx, vnm_tensor *x)
{
    return softmax(ctx, "log_softmax", x, true);
}
