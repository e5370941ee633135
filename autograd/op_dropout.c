/* autograd/op_dropout.c — dropout (per element), drop-path (per sample along dim 0, as timm's
 * DropPath) and the product with a given mask (vnm_mask: dropout's kernels at p = 0). Dropout and
 * drop-path are the identity, returning x itself with no tape node, unless the context is
 * training and p > 0. Kept values are scaled by 1/(1-p) so the expectation is unchanged. The keep
 * decisions come from the context's Philox stream (one reserved block per four decisions) and are
 * saved on the node as a u8 step tensor, so backward replays exactly the forward's mask. */
#include "internal.h"

/* Checks shared by both ops, done in eval mode too so a bad p fails before training starts.
 * Returns -1 on bad input (message set), 0 for the identity, 1 when something must be dropped. */
static int drop_mode(vnm_ctx *ctx, const char *op, const vnm_tensor *x, float p)
{
    if (!vnm_check_f32(ctx, op, x, "input") ||
        !vnm_check_ndim(ctx, op, x, "input", 1, VNM_MAX_DIMS))
        return -1;
    if (!(p >= 0.0f && p < 1.0f)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: drop probability p must be in [0, 1), got %g", op,
                     (double)p);
        return -1;
    }
    return vnm_ctx_training(ctx) && p > 0.0f;
}

/* saved[0]: mask [x's shape] u8; farg[0]: p */
static void dropout_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *dx = vnm_grad_buffer(ctx, node->in[0]);
    if (!dx) return;
    ctx->be->dropout_bwd(VNM_F32(dx), node->saved[0]->data, VNM_F32(node->out->grad),
                         vnm_numel(dx), node->farg[0]);
}

vnm_tensor *vnm_dropout(vnm_ctx *ctx, vnm_tensor *x, float p)
{
    static const char *op = "dropout";
    if (!x) return NULL;
    int mode = drop_mode(ctx, op, x, p);
    if (mode <= 0) return mode == 0 ? x : NULL;
    if (!vnm_check_kernel(ctx, op, ctx->be->dropout_fwd && ctx->be->dropout_bwd)) return NULL;
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    int64_t n = vnm_numel(x);
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, x->shape);    /* x's shape */
    vnm_tensor *mask = vnm_tensor_empty(ctx, VNM_DTYPE_U8, x->ndim, x->shape); /* x's shape */
    if (!y || !mask) return NULL;
    uint64_t offset = vnm_ctx_rng_reserve(ctx, (uint64_t)(n + 3) / 4);
    ctx->be->dropout_fwd(VNM_F32(y), mask->data, VNM_F32(x), n, p, ctx->rng.seed, offset);
    vnm_node *node = vnm_tape_record(ctx, op, dropout_backward, y, 1, &x);
    vnm_node_reads(node, 0);
    if (node) {
        vnm_node_own(node, 0, mask);
        node->farg[0] = p;
    }
    return y;
}

vnm_tensor *vnm_mask(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *mask)
{
    static const char *op = "mask";
    if (!x || !mask) return NULL;
    char s1[96], s2[96];
    if (!vnm_check_f32(ctx, op, x, "input") ||
        !vnm_check_kernel(ctx, op, ctx->be->dropout_bwd != NULL))
        return NULL;
    if (mask->dtype != VNM_DTYPE_U8 || !vnm_same_shape(x, mask) || !vnm_is_contiguous(mask) ||
        mask->device != x->device) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "mask: the mask %s must be a contiguous u8 tensor of the "
                     "input's shape %s on its device", vnm_shape_str(mask, s1, sizeof s1),
                     vnm_shape_str(x, s2, sizeof s2));
        return NULL;
    }
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    vnm_tensor *y = vnm_tensor_new(ctx, VNM_DTYPE_F32, x->ndim, x->shape); /* zeros, then += */
    if (!y) return NULL;
    ctx->be->dropout_bwd(VNM_F32(y), mask->data, VNM_F32(x), vnm_numel(x), 0.0f);
    vnm_node *node = vnm_tape_record(ctx, op, dropout_backward, y, 1, &x);
    vnm_node_reads(node, 0);
    if (node) node->saved[0] = mask; /* the caller's: not owned */
    return y;
}

/* saved[0]: keep [N] u8; iarg: N, inner; farg[0]: p */
static void drop_path_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *dx = vnm_grad_buffer(ctx, node->in[0]);
    if (!dx) return;
    ctx->be->drop_path_bwd(VNM_F32(dx), node->saved[0]->data, VNM_F32(node->out->grad),
                           node->iarg[0], node->iarg[1], node->farg[0]);
}

vnm_tensor *vnm_drop_path(vnm_ctx *ctx, vnm_tensor *x, float p)
{
    static const char *op = "drop_path";
    if (!x) return NULL;
    int mode = drop_mode(ctx, op, x, p);
    if (mode <= 0) return mode == 0 ? x : NULL;
    if (!vnm_check_kernel(ctx, op, ctx->be->drop_path_fwd && ctx->be->drop_path_bwd))
        return NULL;
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    int64_t N = x->shape[0];
    int64_t inner = N > 0 ? vnm_numel(x) / N : 0;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, x->shape); /* x's shape */
    vnm_tensor *keep = vnm_tensor_empty(ctx, VNM_DTYPE_U8, 1, &N);          /* [N] */
    if (!y || !keep) return NULL;
    uint64_t offset = vnm_ctx_rng_reserve(ctx, (uint64_t)(N + 3) / 4);
    ctx->be->drop_path_fwd(VNM_F32(y), keep->data, VNM_F32(x), N, inner, p, ctx->rng.seed,
                           offset);
    vnm_node *node = vnm_tape_record(ctx, op, drop_path_backward, y, 1, &x);
    vnm_node_reads(node, 0);
    if (node) {
        vnm_node_own(node, 0, keep);
        node->iarg[0] = N;
        node->iarg[1] = inner;
        node->farg[0] = p;
    }
    return y;
}
