/* autograd/op_shape.c — reshape, transpose, permute, slice and split as views sharing storage;
 * contiguous and concat as copies. Backward of a view adds the output gradient into the input
 * gradient through the same strided mapping; where the two gradients have the same layout
 * (reshape, contiguous) the input takes the output's gradient itself, and where the mapping covers
 * the whole input (permute, concat) a new input gradient is written rather than cleared first. */
#include "internal.h"

/* Adds g (contiguous, the view's shape) into gx seen through (strides, offset), or writes it
 * there when `write` (g then covers every element of gx). */
static void view_backward_into(vnm_ctx *ctx, vnm_tensor *gx, const vnm_tensor *g,
                               const int64_t *grad_strides, int64_t offset, bool write)
{
    vnm_layout d, s = vnm_layout_of(g);
    d.ndim = g->ndim;
    for (int i = 0; i < VNM_MAX_DIMS; i++) {
        d.shape[i] = i < g->ndim ? g->shape[i] : 1;
        d.strides[i] = i < g->ndim ? grad_strides[i] : 0;
    }
    ctx->be->copy_strided(VNM_F32(gx) + offset, &d, VNM_F32(g), &s, !write);
}

/* Same-order backward (reshape, contiguous): element i of out is element i of in, and x.grad
 * has the layout of out.grad (both contiguous), so x may take out.grad as it is. */
static void flat_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_grad_take(ctx, node->in[0], node->out->grad);
}

vnm_tensor *vnm_contiguous(vnm_ctx *ctx, vnm_tensor *x)
{
    if (!x) return NULL;
    if (vnm_is_contiguous(x)) return x;
    if (!vnm_check_f32(ctx, "contiguous", x, "input")) return NULL;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, x->shape); /* written whole */
    if (!y) return NULL;
    vnm_layout d = vnm_layout_of(y), s = vnm_layout_of(x);
    ctx->be->copy_strided(VNM_F32(y), &d, VNM_F32(x), &s, false);
    vnm_node_reads(vnm_tape_record(ctx, "contiguous", flat_backward, y, 1, &x), 0);
    return y;
}

vnm_tensor *vnm_reshape(vnm_ctx *ctx, vnm_tensor *x, int ndim, const int64_t *shape)
{
    if (!x) return NULL;
    char s[96];
    if (ndim < 1 || ndim > VNM_MAX_DIMS) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "reshape: %d dims requested, 1 to %d supported", ndim,
                     VNM_MAX_DIMS);
        return NULL;
    }
    int64_t full[VNM_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        full[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] < 0) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "reshape: bad size %lld at dim %d (only one -1)",
                         (long long)shape[i], i);
            return NULL;
        } else {
            known *= shape[i];
        }
    }
    int64_t n = vnm_numel(x);
    if (infer >= 0) full[infer] = known ? n / known : 0;
    int64_t total = known * (infer >= 0 ? full[infer] : 1);
    if (total != n) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "reshape: cannot view %s (%lld elements) as %d dims "
                     "with %lld elements", vnm_shape_str(x, s, sizeof s), (long long)n, ndim,
                     (long long)total);
        return NULL;
    }
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    int64_t strides[VNM_MAX_DIMS];
    vnm_contiguous_strides(ndim, full, strides);
    vnm_tensor *y = vnm_tensor_view(ctx, x, ndim, full, strides, 0);
    if (y) vnm_node_reads(vnm_tape_record(ctx, "reshape", flat_backward, y, 1, &x), 0);
    return y;
}

/* iarg[0..3]: perm */
static void permute_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0];
    float beta; /* a permutation covers every element: a new buffer is written, not cleared */
    vnm_tensor *gx = vnm_grad_slot(ctx, x, &beta);
    if (!gx) return;
    int64_t strides[VNM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) strides[i] = gx->strides[node->iarg[i]];
    view_backward_into(ctx, gx, node->out->grad, strides, 0, beta == 0.0f);
}

vnm_tensor *vnm_permute(vnm_ctx *ctx, vnm_tensor *x, const int *perm)
{
    if (!x) return NULL;
    bool seen[VNM_MAX_DIMS] = {false};
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || seen[perm[i]]) {
            char s[96];
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "permute: entry %d (%d) is not a permutation of "
                         "the %d dims of %s", i, perm[i], x->ndim, vnm_shape_str(x, s, sizeof s));
            return NULL;
        }
        seen[perm[i]] = true;
    }
    if (!vnm_check_f32(ctx, "permute", x, "input")) return NULL;
    int64_t shape[VNM_MAX_DIMS], strides[VNM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        shape[i] = x->shape[perm[i]];
        strides[i] = x->strides[perm[i]];
    }
    vnm_tensor *y = vnm_tensor_view(ctx, x, x->ndim, shape, strides, 0);
    if (!y) return NULL;
    vnm_node *node = vnm_tape_record(ctx, "permute", permute_backward, y, 1, &x);
    vnm_node_reads(node, 0);
    if (node)
        for (int i = 0; i < x->ndim; i++) node->iarg[i] = perm[i];
    return y;
}

vnm_tensor *vnm_transpose(vnm_ctx *ctx, vnm_tensor *x, int d0, int d1)
{
    if (!x) return NULL;
    int a = vnm_norm_dim(ctx, "transpose", x, d0), b = vnm_norm_dim(ctx, "transpose", x, d1);
    if (a < 0 || b < 0) return NULL;
    int perm[VNM_MAX_DIMS] = {0, 1, 2, 3};
    perm[a] = b;
    perm[b] = a;
    return vnm_permute(ctx, x, perm);
}

/* iarg[0]: dim, iarg[1]: start */
static void slice_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0];
    vnm_tensor *gx = vnm_grad_buffer(ctx, x);
    if (!gx) return;
    int64_t offset = node->iarg[1] * gx->strides[node->iarg[0]];
    view_backward_into(ctx, gx, node->out->grad, gx->strides, offset, false);
}

vnm_tensor *vnm_slice(vnm_ctx *ctx, vnm_tensor *x, int dim, int64_t start, int64_t end)
{
    if (!x) return NULL;
    int d = vnm_norm_dim(ctx, "slice", x, dim);
    if (d < 0) return NULL;
    if (start < 0 || end < start || end > x->shape[d]) {
        char s[96];
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "slice: range [%lld, %lld) out of bounds for dim %d of %s",
                     (long long)start, (long long)end, d, vnm_shape_str(x, s, sizeof s));
        return NULL;
    }
    if (!vnm_check_f32(ctx, "slice", x, "input")) return NULL;
    int64_t shape[VNM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[d] = end - start;
    vnm_tensor *y = vnm_tensor_view(ctx, x, x->ndim, shape, x->strides, start * x->strides[d]);
    if (!y) return NULL;
    vnm_node *node = vnm_tape_record(ctx, "slice", slice_backward, y, 1, &x);
    vnm_node_reads(node, 0);
    if (node) {
        node->iarg[0] = d;
        node->iarg[1] = start;
    }
    return y;
}

vnm_status vnm_split(vnm_ctx *ctx, vnm_tensor *x, int dim, int n, const int64_t *sizes,
                     vnm_tensor **out)
{
    if (!x) return ctx->status ? ctx->status : VNM_ERR_INPUT;
    int d = vnm_norm_dim(ctx, "split", x, dim);
    if (d < 0) return ctx->status;
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    if (n < 1 || total != x->shape[d]) {
        char s[96];
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "split: %d sizes summing to %lld do not cover "
                            "dim %d of %s", n, (long long)total, d, vnm_shape_str(x, s, sizeof s));
    }
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        out[i] = vnm_slice(ctx, x, d, start, start + sizes[i]);
        if (!out[i]) return ctx->status;
        start += sizes[i];
    }
    return VNM_OK;
}

/* Concat keeps n inputs (any count) in node->extra; iarg[0]: dim. */
typedef struct {
    int n;
    vnm_tensor **xs;
} concat_inputs;

static void concat_backward(vnm_ctx *ctx, vnm_node *node)
{
    const concat_inputs *ci = node->extra;
    vnm_tensor *g = node->out->grad;
    int d = (int)node->iarg[0];
    int64_t start = 0;
    for (int i = 0; i < ci->n; i++) {
        vnm_tensor *x = ci->xs[i];
        float beta; /* x's part of g covers all of x: a new buffer is written, not cleared */
        vnm_tensor *gx = vnm_grad_slot(ctx, x, &beta);
        if (gx) {
            vnm_layout dl = vnm_layout_of(gx), sl = vnm_layout_of(gx);
            for (int k = 0; k < g->ndim; k++) sl.strides[k] = g->strides[k];
            ctx->be->copy_strided(VNM_F32(gx), &dl, VNM_F32(g) + start * g->strides[d], &sl,
                                  beta != 0.0f);
        }
        start += x->shape[d];
    }
}

static bool concat_ok(vnm_ctx *ctx, int n, vnm_tensor *const *xs, int d)
{
    for (int i = 0; i < n; i++) {
        if (!vnm_check_f32(ctx, "concat", xs[i], "input")) return false;
        bool ok = xs[i]->ndim == xs[0]->ndim;
        for (int k = 0; ok && k < xs[0]->ndim; k++)
            ok = k == d || xs[i]->shape[k] == xs[0]->shape[k];
        if (!ok) {
            char s1[96], s2[96];
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "concat: input %d %s does not match input 0 %s "
                         "outside dim %d", i, vnm_shape_str(xs[i], s1, sizeof s1),
                         vnm_shape_str(xs[0], s2, sizeof s2), d);
            return false;
        }
    }
    return true;
}

vnm_tensor *vnm_concat(vnm_ctx *ctx, int n, vnm_tensor *const *xs, int dim)
{
    if (n < 1) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "concat: needs at least one input");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i]) return NULL;
    int d = vnm_norm_dim(ctx, "concat", xs[0], dim);
    if (d < 0 || !concat_ok(ctx, n, xs, d)) return NULL;
    int64_t shape[VNM_MAX_DIMS];
    for (int k = 0; k < xs[0]->ndim; k++) shape[k] = xs[0]->shape[k];
    shape[d] = 0;
    for (int i = 0; i < n; i++) shape[d] += xs[i]->shape[d];
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, xs[0]->ndim, shape); /* written whole */
    if (!y) return NULL;
    int64_t start = 0;
    bool any_grad = false;
    for (int i = 0; i < n; i++) {
        vnm_layout dl = vnm_layout_of(xs[i]), sl = vnm_layout_of(xs[i]);
        for (int k = 0; k < y->ndim; k++) dl.strides[k] = y->strides[k];
        ctx->be->copy_strided(VNM_F32(y) + start * y->strides[d], &dl, VNM_F32(xs[i]), &sl, false);
        start += xs[i]->shape[d];
        any_grad = any_grad || xs[i]->requires_grad;
    }
    if (!any_grad || !vnm_ctx_grad_enabled(ctx)) return y;
    concat_inputs *ci = vnm_step_meta_alloc(ctx, sizeof *ci);
    vnm_tensor **copy = ci ? vnm_step_meta_alloc(ctx, (size_t)n * sizeof *copy) : NULL;
    if (!copy) return NULL;
    for (int i = 0; i < n; i++) copy[i] = xs[i];
    ci->n = n;
    ci->xs = copy;
    /* The node lists up to VNM_NODE_MAX_IN inputs; the full list lives in extra. Marking the
     * output through the first input that needs grad is enough for the tape. */
    vnm_tensor *marker[1] = {NULL};
    for (int i = 0; i < n && !marker[0]; i++)
        if (xs[i]->requires_grad) marker[0] = xs[i];
    vnm_node *node = vnm_tape_record(ctx, "concat", concat_backward, y, 1, marker);
    vnm_node_reads(node, 0);
    if (node) {
        node->iarg[0] = d;
        node->extra = ci;
    }
    return y;
}
