/* autograd/op_elementwise.c — add, sub, mul, div with numpy broadcasting, and scale. Inputs are
 * read through strided layouts (no copies for views or broadcasts); gradients of broadcast inputs
 * are summed back to the input's shape. */
#include "internal.h"

static const char *const binary_names[] = {"add", "sub", "mul", "div"};

/* Layout reading x as if it had shape out[ndim]: missing leading dims and size-1 dims get stride 0. */
static vnm_layout broadcast_layout(const vnm_tensor *x, const int64_t *strides, int ndim,
                                   const int64_t *out)
{
    vnm_layout l;
    l.ndim = ndim;
    int shift = ndim - x->ndim;
    for (int i = 0; i < ndim; i++) {
        l.shape[i] = out[i];
        int j = i - shift;
        l.strides[i] = (j >= 0 && x->shape[j] == out[i] && out[i] != 1) ? strides[j] : 0;
    }
    return l;
}

static bool broadcast_shape(vnm_ctx *ctx, const char *op, const vnm_tensor *a,
                            const vnm_tensor *b, int *ndim, int64_t *out)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char s1[96], s2[96];
            vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                         "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)", op,
                         vnm_shape_str(a, s1, sizeof s1), vnm_shape_str(b, s2, sizeof s2), i,
                         (long long)da, (long long)db);
            return false;
        }
        out[i] = da == 1 ? db : da;
    }
    *ndim = n;
    return true;
}

/* x.grad += sum of g[out shape] over the dims x was broadcast along. */
static void reduce_into(vnm_ctx *ctx, vnm_tensor *x, const vnm_tensor *g)
{
    if (vnm_same_shape(x, g)) {
        float beta; /* a new buffer is written (a copy), not cleared and added into */
        vnm_tensor *gx = vnm_grad_slot(ctx, x, &beta);
        if (!gx) return;
        if (beta == 0.0f)
            ctx->be->copy(gx->data, g->data, (size_t)vnm_numel(g) * sizeof(float));
        else
            ctx->be->axpy(VNM_F32(gx), VNM_F32(g), 1.0f, vnm_numel(g));
        return;
    }
    vnm_tensor *gx = vnm_grad_buffer(ctx, x);
    if (!gx) return;
    vnm_layout d = broadcast_layout(gx, gx->strides, g->ndim, g->shape);
    vnm_layout s = vnm_layout_of(g);
    ctx->be->copy_strided(VNM_F32(gx), &d, VNM_F32(g), &s, true);
}

static void binary_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *a = node->in[0], *b = node->in[1], *out = node->out, *g = out->grad;
    vnm_binary_op op = (vnm_binary_op)node->iarg[0];
    const vnm_backend *be = ctx->be;
    vnm_layout lo = vnm_layout_of(out);
    vnm_layout la = broadcast_layout(a, a->strides, out->ndim, out->shape);
    vnm_layout lb = broadcast_layout(b, b->strides, out->ndim, out->shape);
    int64_t n = vnm_numel(out);
    vnm_tensor *tmp = NULL;
    if (op != VNM_BINARY_ADD) {
        tmp = vnm_tensor_like(ctx, out);
        if (!tmp) return;
    }
    switch (op) {
    case VNM_BINARY_ADD:
        /* b first: a may then take g itself as its gradient (a residual stream's sum) */
        reduce_into(ctx, b, g);
        if (vnm_same_shape(a, g))
            vnm_grad_take(ctx, a, g);
        else
            reduce_into(ctx, a, g);
        break;
    case VNM_BINARY_SUB:
        reduce_into(ctx, a, g);
        be->scale(VNM_F32(tmp), VNM_F32(g), -1.0f, n);
        reduce_into(ctx, b, tmp);
        break;
    case VNM_BINARY_MUL:
        if (a->requires_grad) {
            be->binary(VNM_BINARY_MUL, VNM_F32(tmp), &lo, VNM_F32(g), &lo, VNM_F32(b), &lb);
            reduce_into(ctx, a, tmp);
        }
        if (b->requires_grad) {
            be->binary(VNM_BINARY_MUL, VNM_F32(tmp), &lo, VNM_F32(g), &lo, VNM_F32(a), &la);
            reduce_into(ctx, b, tmp);
        }
        break;
    case VNM_BINARY_DIV:
        /* d/da = g/b; d/db = -g·a/b² = -(g/b)·out */
        be->binary(VNM_BINARY_DIV, VNM_F32(tmp), &lo, VNM_F32(g), &lo, VNM_F32(b), &lb);
        reduce_into(ctx, a, tmp);
        if (b->requires_grad) {
            be->binary(VNM_BINARY_MUL, VNM_F32(tmp), &lo, VNM_F32(tmp), &lo, VNM_F32(out), &lo);
            be->scale(VNM_F32(tmp), VNM_F32(tmp), -1.0f, n);
            reduce_into(ctx, b, tmp);
        }
        break;
    }
}

static vnm_tensor *binary(vnm_ctx *ctx, vnm_binary_op op, vnm_tensor *a, vnm_tensor *b)
{
    const char *name = binary_names[op];
    if (!a || !b) return NULL;
    if (!vnm_check_f32(ctx, name, a, "a") || !vnm_check_f32(ctx, name, b, "b")) return NULL;
    int ndim;
    int64_t shape[VNM_MAX_DIMS];
    if (!broadcast_shape(ctx, name, a, b, &ndim, shape)) return NULL;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, ndim, shape); /* written whole */
    if (!y) return NULL;
    vnm_layout lo = vnm_layout_of(y);
    vnm_layout la = broadcast_layout(a, a->strides, ndim, shape);
    vnm_layout lb = broadcast_layout(b, b->strides, ndim, shape);
    ctx->be->binary(op, VNM_F32(y), &lo, VNM_F32(a), &la, VNM_F32(b), &lb);
    vnm_tensor *in[2] = {a, b};
    vnm_node *node = vnm_tape_record(ctx, name, binary_backward, y, 2, in);
    static const unsigned reads[] = {0, 0, VNM_READS_IN(0) | VNM_READS_IN(1),
                                     VNM_READS_IN(1) | VNM_READS_OUT}; /* add, sub, mul, div */
    vnm_node_reads(node, reads[op]);
    if (node) node->iarg[0] = op;
    return y;
}

vnm_tensor *vnm_add(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b)
{
    return binary(ctx, VNM_BINARY_ADD, a, b);
}

vnm_tensor *vnm_sub(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b)
{
    return binary(ctx, VNM_BINARY_SUB, a, b);
}

vnm_tensor *vnm_mul(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b)
{
    return binary(ctx, VNM_BINARY_MUL, a, b);
}

vnm_tensor *vnm_div(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b)
{
    return binary(ctx, VNM_BINARY_DIV, a, b);
}

static void scale_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *dx = vnm_grad_buffer(ctx, node->in[0]);
    if (dx) ctx->be->axpy(VNM_F32(dx), VNM_F32(node->out->grad), node->farg[0], vnm_numel(dx));
}

vnm_tensor *vnm_scale(vnm_ctx *ctx, vnm_tensor *a, float s)
{
    if (!a || !vnm_check_f32(ctx, "scale", a, "input")) return NULL;
    a = vnm_contiguous(ctx, a);
    if (!a) return NULL;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, a->ndim, a->shape); /* written whole */
    if (!y) return NULL;
    ctx->be->scale(VNM_F32(y), VNM_F32(a), s, vnm_numel(a));
    vnm_node *node = vnm_tape_record(ctx, "scale", scale_backward, y, 1, &a);
    vnm_node_reads(node, 0);
    if (node) node->farg[0] = s;
    return y;
}
