/* autograd/op_norm.c — LayerNorm (torch.nn.functional.layer_norm over the last dim) and RMSNorm
 * (Hugging Face LlamaRMSNorm: w·x/sqrt(mean(x²) + eps)). The input is viewed as x[rows, D]; the
 * per-row mean and 1/std are kept on the node so backward does not recompute the statistics. */
#include <math.h>

#include "internal.h"

/* Checks shared by both norms: f32 input with a non-empty last dim, an optional f32 [D] weight or
 * bias, eps ≥ 0. */
static bool norm_args_ok(vnm_ctx *ctx, const char *op, const vnm_tensor *x, const vnm_tensor *w,
                         const vnm_tensor *b, float eps)
{
    if (!vnm_check_f32(ctx, op, x, "input") ||
        !vnm_check_ndim(ctx, op, x, "input", 1, VNM_MAX_DIMS) ||
        (w && !vnm_check_f32(ctx, op, w, "weight")) || (b && !vnm_check_f32(ctx, op, b, "bias")))
        return false;
    char s1[96], s2[96];
    int64_t D = x->shape[x->ndim - 1];
    if (D == 0) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: input %s has an empty last dim", op,
                     vnm_shape_str(x, s1, sizeof s1));
        return false;
    }
    const vnm_tensor *affine[2] = {w, b};
    const char *what[2] = {"weight", "bias"};
    for (int i = 0; i < 2; i++) {
        const vnm_tensor *p = affine[i];
        if (p && (p->ndim != 1 || p->shape[0] != D)) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: %s %s must be [%lld] for input %s", op, what[i],
                         vnm_shape_str(p, s1, sizeof s1), (long long)D,
                         vnm_shape_str(x, s2, sizeof s2));
            return false;
        }
    }
    if (!(eps >= 0.0f) || isinf(eps)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: eps must be finite and >= 0, got %g", op,
                     (double)eps);
        return false;
    }
    return true;
}

static float *f32_or_null(vnm_tensor *t) { return t ? VNM_F32(t) : NULL; }

/* iarg: rows, D; saved: mean [rows], rstd [rows] */
static void layernorm_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
    vnm_tensor *dx = vnm_grad_buffer(ctx, x), *dw = vnm_grad_buffer(ctx, w);
    vnm_tensor *db = vnm_grad_buffer(ctx, b);
    if (!dx && !dw && !db) return;
    ctx->be->layernorm_bwd(f32_or_null(dx), f32_or_null(dw), f32_or_null(db),
                           VNM_F32(node->out->grad), VNM_F32(x), VNM_F32(node->saved[0]),
                           VNM_F32(node->saved[1]), f32_or_null(w), node->iarg[0], node->iarg[1]);
}

vnm_tensor *vnm_layernorm(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, vnm_tensor *b, float eps)
{
    static const char *op = "layernorm";
    if (!x) return NULL;
    if (!norm_args_ok(ctx, op, x, w, b, eps) ||
        !vnm_check_kernel(ctx, op, ctx->be->layernorm_fwd && ctx->be->layernorm_bwd))
        return NULL;
    vnm_tensor *wc = w ? vnm_contiguous(ctx, w) : NULL, *bc = b ? vnm_contiguous(ctx, b) : NULL;
    x = vnm_contiguous(ctx, x);
    if (!x || (w && !wc) || (b && !bc)) return NULL;
    w = wc;
    b = bc;
    int64_t D = x->shape[x->ndim - 1], rows = vnm_numel(x) / D;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, x->shape); /* x's shape */
    vnm_tensor *mean = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 1, &rows);      /* [rows] */
    vnm_tensor *rstd = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 1, &rows);      /* [rows] */
    if (!y || !mean || !rstd) return NULL;
    ctx->be->layernorm_fwd(VNM_F32(y), VNM_F32(mean), VNM_F32(rstd), VNM_F32(x), f32_or_null(w),
                           f32_or_null(b), rows, D, eps);
    vnm_tensor *in[3] = {x, w, b};
    vnm_node *node = vnm_tape_record(ctx, op, layernorm_backward, y, 3, in);
    vnm_node_reads(node, VNM_READS_IN(0) | VNM_READS_IN(1));
    if (node) {
        vnm_node_own(node, 0, mean);
        vnm_node_own(node, 1, rstd);
        node->iarg[0] = rows;
        node->iarg[1] = D;
    }
    return y;
}

/* iarg: rows, D; saved: rstd [rows] */
static void rmsnorm_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0], *w = node->in[1];
    vnm_tensor *dx = vnm_grad_buffer(ctx, x), *dw = vnm_grad_buffer(ctx, w);
    if (!dx && !dw) return;
    ctx->be->rmsnorm_bwd(f32_or_null(dx), f32_or_null(dw), VNM_F32(node->out->grad), VNM_F32(x),
                         VNM_F32(node->saved[0]), f32_or_null(w), node->iarg[0], node->iarg[1]);
}

vnm_tensor *vnm_rmsnorm(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, float eps)
{
    static const char *op = "rmsnorm";
    if (!x) return NULL;
    if (!norm_args_ok(ctx, op, x, w, NULL, eps) ||
        !vnm_check_kernel(ctx, op, ctx->be->rmsnorm_fwd && ctx->be->rmsnorm_bwd))
        return NULL;
    vnm_tensor *wc = w ? vnm_contiguous(ctx, w) : NULL;
    x = vnm_contiguous(ctx, x);
    if (!x || (w && !wc)) return NULL;
    w = wc;
    int64_t D = x->shape[x->ndim - 1], rows = vnm_numel(x) / D;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, x->shape); /* x's shape */
    vnm_tensor *rstd = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 1, &rows);      /* [rows] */
    if (!y || !rstd) return NULL;
    ctx->be->rmsnorm_fwd(VNM_F32(y), VNM_F32(rstd), VNM_F32(x), f32_or_null(w), rows, D, eps);
    vnm_tensor *in[2] = {x, w};
    vnm_node *node = vnm_tape_record(ctx, op, rmsnorm_backward, y, 2, in);
    vnm_node_reads(node, VNM_READS_IN(0) | VNM_READS_IN(1));
    if (node) {
        vnm_node_own(node, 0, rstd);
        node->iarg[0] = rows;
        node->iarg[1] = D;
    }
    return y;
}
