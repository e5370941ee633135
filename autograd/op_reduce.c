/* autograd/op_reduce.c — sum and mean along one dim (or all). The input is viewed as
 * [outer, n, inner]; backward broadcasts the output gradient back along the reduced dim. */
#include "internal.h"

/* iarg: outer, n, inner; farg[0]: factor (1 for sum, 1/n for mean) */
static void reduce_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0];
    vnm_tensor *gx = vnm_grad_buffer(ctx, x);
    if (!gx) return;
    int64_t outer = node->iarg[0], n = node->iarg[1], inner = node->iarg[2];
    const float *g = VNM_F32(node->out->grad); /* [outer, inner] */
    float f = node->farg[0];
    if (f != 1.0f) {
        vnm_tensor *tmp = vnm_tensor_like(ctx, node->out->grad);
        if (!tmp) return;
        ctx->be->scale(VNM_F32(tmp), g, f, outer * inner);
        g = VNM_F32(tmp);
    }
    vnm_layout d = {3, {outer, n, inner}, {n * inner, inner, 1}};
    vnm_layout s = {3, {outer, n, inner}, {inner, 0, 1}};
    ctx->be->copy_strided(VNM_F32(gx), &d, g, &s, true);
}

static vnm_tensor *reduce(vnm_ctx *ctx, const char *op, vnm_tensor *x, int dim, bool keepdim,
                          bool mean)
{
    if (!x || !vnm_check_f32(ctx, op, x, "input")) return NULL;
    int64_t outer = 1, n, inner = 1;
    int ndim = 0;
    int64_t shape[VNM_MAX_DIMS];
    if (dim == VNM_ALL_DIMS) {
        n = vnm_numel(x);
        ndim = keepdim ? x->ndim : 1;
        for (int i = 0; i < ndim; i++) shape[i] = 1;
    } else {
        int d = vnm_norm_dim(ctx, op, x, dim);
        if (d < 0) return NULL;
        for (int i = 0; i < d; i++) outer *= x->shape[i];
        for (int i = d + 1; i < x->ndim; i++) inner *= x->shape[i];
        n = x->shape[d];
        for (int i = 0; i < x->ndim; i++)
            if (i != d) shape[ndim++] = x->shape[i];
            else if (keepdim) shape[ndim++] = 1;
        if (ndim == 0) shape[ndim++] = 1;
    }
    if (mean && n == 0) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: mean over an empty dim", op);
        return NULL;
    }
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    vnm_tensor *y = vnm_tensor_new(ctx, VNM_DTYPE_F32, ndim, shape);
    if (!y) return NULL;
    float f = mean ? 1.0f / (float)n : 1.0f;
    ctx->be->sum_axis(VNM_F32(y), VNM_F32(x), outer, n, inner, false);
    if (mean) ctx->be->scale(VNM_F32(y), VNM_F32(y), f, vnm_numel(y));
    vnm_node *node = vnm_tape_record(ctx, op, reduce_backward, y, 1, &x);
    vnm_node_reads(node, 0);
    if (node) {
        node->iarg[0] = outer;
        node->iarg[1] = n;
        node->iarg[2] = inner;
        node->farg[0] = f;
    }
    return y;
}

vnm_tensor *vnm_sum(vnm_ctx *ctx, vnm_tensor *x, int dim, bool keepdim)
{
    return reduce(ctx, "sum", x, dim, keepdim, false);
}

vnm_tensor *vnm_mean(vnm_ctx *ctx, vnm_tensor *x, int dim, bool keepdim)
{
    return reduce(ctx, "mean", x, dim, keepdim, true);
}
