/* autograd/op_rope.c — rotary position embedding, Hugging Face rotate-half convention: the pairs
 * (x[i], x[i + D/2]) of each head vector rotate by the angle (pos_offset + t)·theta^(-2i/D).
 * A rotation's transpose is its inverse, so backward rotates the gradient the other way. */
#include "internal.h"

/* iarg: B·H, T, D, pos_offset; farg[0]: theta */
static void rope_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0];
    float beta;
    vnm_tensor *dx = vnm_grad_slot(ctx, x, &beta);
    if (!dx) return;
    /* the kernel overwrites its output: rotate into a fresh buffer unless dx is one */
    vnm_tensor *g = beta == 0.0f ? dx : vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, x->shape);
    if (!g) return;
    ctx->be->rope(VNM_F32(g), VNM_F32(node->out->grad), node->iarg[0], node->iarg[1],
                  node->iarg[2], node->iarg[3], node->farg[0], true);
    if (g != dx) ctx->be->axpy(VNM_F32(dx), VNM_F32(g), 1.0f, vnm_numel(dx));
}

vnm_tensor *vnm_rope(vnm_ctx *ctx, vnm_tensor *x, int64_t pos_offset, float theta)
{
    static const char *op = "rope";
    if (!x) return NULL;
    if (!vnm_check_f32(ctx, op, x, "input") || !vnm_check_ndim(ctx, op, x, "input", 4, 4) ||
        !vnm_check_kernel(ctx, op, ctx->be->rope != NULL))
        return NULL;
    char s[96];
    int64_t D = x->shape[3];
    if (D % 2 != 0) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "rope: head size D = %lld of input %s [B, H, T, D] must be even (rotate-half "
                     "pairs x[i] with x[i + D/2])",
                     (long long)D, vnm_shape_str(x, s, sizeof s));
        return NULL;
    }
    if (!(theta > 0.0f) || pos_offset < 0) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "rope: need theta > 0 and pos_offset >= 0, got theta %g, "
                     "pos_offset %lld", (double)theta, (long long)pos_offset);
        return NULL;
    }
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    int64_t BH = x->shape[0] * x->shape[1], T = x->shape[2];
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 4, x->shape); /* [B, H, T, D] */
    if (!y) return NULL;
    ctx->be->rope(VNM_F32(y), VNM_F32(x), BH, T, D, pos_offset, theta, false);
    vnm_node *node = vnm_tape_record(ctx, op, rope_backward, y, 1, &x);
    vnm_node_reads(node, 0);
    if (node) {
        node->iarg[0] = BH;
        node->iarg[1] = T;
        node->iarg[2] = D;
        node->iarg[3] = pos_offset;
        node->farg[0] = theta;
    }
    return y;
}
