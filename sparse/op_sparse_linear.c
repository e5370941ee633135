/* sparse/op_sparse_linear.c — the sparse-linear op in mask-fixed mode: y = x·(W⊙Mk)ᵀ + b with the
 * compressed values as the parameter (or any tensor of their shape, e.g. a LoRA effective
 * weight). On the CPU all three products run on the compressed form (forward, dX, dW at kept
 * positions only), so the gradient of vals has the compressed shape and pruned weights never
 * exist. Elsewhere (the dense form, sparse.h) the values are scattered into the dense weight,
 * which a dense linear multiplies; the gradient of vals is gathered from the dense one. */
#include "internal.h"

static vnm_spmm_weight spmm_view(const vnm_sparse_weight *w, const vnm_tensor *vals)
{
    vnm_spmm_weight v = {w->pat, w->O, w->I, w->O_pad, w->G, w->Gp,
                         (const float *)vals->data, (const uint8_t *)w->slots->data,
                         (const int32_t *)w->cols->data, (const int32_t *)w->rows->data};
    return v;
}

/* extra: the weight; iarg[0]: T */
static void sparse_linear_backward(vnm_ctx *ctx, vnm_node *node)
{
    const vnm_sparse_weight *w = node->extra;
    vnm_tensor *x = node->in[0], *vals = node->in[1], *b = node->in[2];
    const float *dy = (const float *)node->out->grad->data; /* [T, O] */
    int64_t T = node->iarg[0];
    vnm_spmm_weight v = spmm_view(w, vals);
    vnm_tensor *dx = vnm_grad_buffer(ctx, x), *dv = vnm_grad_buffer(ctx, vals);
    vnm_tensor *db = vnm_grad_buffer(ctx, b);
    if (dx) vnm_spmm_dx(&v, dy, T, (float *)dx->data);
    if (dv) vnm_spmm_dw(&v, dy, (const float *)x->data, T, (float *)dv->data);
    if (db) vnm_spmm_bias_grad((float *)db->data, dy, T, w->O);
}

/* Shared argument checks of the mask-fixed and SR-STE ops. */
bool vnm_sparse_linear_check(vnm_ctx *ctx, const char *op, const vnm_tensor *x, int64_t O,
                             int64_t I, const vnm_tensor *b, bool dense)
{
    char s[96];
    if (!dense && vnm_ctx_device(ctx) != VNM_DEVICE_CPU) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: sparse kernels exist for the cpu backend only", op);
        return false;
    }
    if (x->dtype != VNM_DTYPE_F32 || x->ndim < 1 || x->shape[x->ndim - 1] != I) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: input %s must be f32 [..., %lld]", op,
                     vnm_shape_str(x, s, sizeof s), (long long)I);
        return false;
    }
    if (b && (b->dtype != VNM_DTYPE_F32 || b->ndim != 1 || b->shape[0] != O)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: bias %s must be f32 [%lld]", op,
                     vnm_shape_str(b, s, sizeof s), (long long)O);
        return false;
    }
    return true;
}

/* x·(scatter of vals into [O, I])ᵀ + b */
static vnm_tensor *dense_form(vnm_ctx *ctx, vnm_tensor *x, vnm_sparse_weight *w,
                              vnm_tensor *vals, vnm_tensor *b)
{
    if (vnm_sparse_weight_dense_index(ctx, w) != VNM_OK) return NULL;
    vnm_ctx_call_linear_hook(ctx, w->name, x); /* the dense weight below has no name */
    vnm_tensor *W = vnm_scatter(ctx, vals, w->dense_index, 2, VNM_SHAPE(w->O, w->I)); /* [O, I] */
    return vnm_linear(ctx, x, W, b);
}

vnm_tensor *vnm_sparse_linear(vnm_ctx *ctx, vnm_tensor *x, vnm_sparse_weight *w, vnm_tensor *b)
{
    return w ? vnm_sparse_linear_vals(ctx, x, w, w->vals, b) : NULL;
}

vnm_tensor *vnm_sparse_linear_vals(vnm_ctx *ctx, vnm_tensor *x, const vnm_sparse_weight *w,
                                   vnm_tensor *vals, vnm_tensor *b)
{
    static const char *op = "sparse_linear";
    char s[96];
    if (!x || !w || !vals) return NULL;
    bool dense = vnm_sparse_dense_form(ctx);
    if (!vnm_sparse_linear_check(ctx, op, x, w->O, w->I, b, dense)) return NULL;
    if (vals->dtype != VNM_DTYPE_F32 || vals->ndim != 3 || vals->shape[0] != w->O_pad ||
        vals->shape[1] != w->Gp || vals->shape[2] != 2 || !vnm_is_contiguous(vals)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: values %s of '%s' must be contiguous f32 "
                     "[%lld, %lld, 2]", op, vnm_shape_str(vals, s, sizeof s), w->name,
                     (long long)w->O_pad, (long long)w->Gp);
        return NULL;
    }
    if (dense) return dense_form(ctx, x, (vnm_sparse_weight *)w, vals, b);
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    vnm_ctx_call_linear_hook(ctx, w->name, x);
    int64_t shape[VNM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = w->O;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, shape); /* [..., O] */
    if (!y) return NULL;
    int64_t T = w->I ? vnm_numel(x) / w->I : 0;
    vnm_spmm_weight v = spmm_view(w, vals);
    vnm_spmm_bias_fill((float *)y->data, b ? (const float *)b->data : NULL, T, w->O);
    vnm_spmm_fwd(&v, (const float *)x->data, T, (float *)y->data);
    vnm_tensor *in[3] = {x, vals, b};
    vnm_node *node = vnm_tape_record(ctx, op, sparse_linear_backward, y, 3, in);
    vnm_node_reads(node, VNM_READS_IN(0) | VNM_READS_IN(1)); /* x for dvals, vals for dx */
    if (node) {
        node->extra = (void *)w;
        node->iarg[0] = T;
    }
    return y;
}
