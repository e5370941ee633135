/* autograd/op_linear.c — linear (x·Wᵀ + b over any leading dims) and batched matmul. Both run as
 * GEMMs on contiguous operands with no transposed copies: the backward products pass transpose
 * flags and accumulate straight into the gradient buffers (beta = 1).
 *
 * A frozen weight may be bf16 or f16 (a LoRA base held at half the memory): each product
 * converts it to f32 into a buffer freed right after (forward, and again for dX), so no f32 copy
 * outlives the product and the step's peak holds at most one such copy at a time. */
#include "internal.h"

/* W as f32 for one product: the tensor's own data, or a converted copy to release with
 * weight_f32_done. NULL when out of memory (the context says so). */
static const float *weight_f32(vnm_ctx *ctx, const vnm_tensor *w)
{
    if (w->dtype == VNM_DTYPE_F32) return VNM_F32(w);
    int64_t n = vnm_numel(w);
    float *f = ctx->be->alloc((size_t)n * sizeof(float));
    if (!f) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "linear: out of memory converting weight '%s' to f32",
                     w->name ? w->name : "");
        return NULL;
    }
    ctx->be->convert(f, VNM_DTYPE_F32, w->data, w->dtype, n);
    return f;
}

static void weight_f32_done(vnm_ctx *ctx, const vnm_tensor *w, const float *f)
{
    if (f && f != w->data) ctx->be->free((void *)f);
}

static void linear_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
    const float *dy = VNM_F32(node->out->grad); /* [T, O] */
    int64_t T = node->iarg[0], O = node->iarg[1], I = node->iarg[2];
    const vnm_backend *be = ctx->be;
    float bx, bw, bb;
    vnm_tensor *dx = vnm_grad_slot(ctx, x, &bx), *dw = vnm_grad_slot(ctx, w, &bw);
    vnm_tensor *db = vnm_grad_slot(ctx, b, &bb);
    if (dx) {
        const float *wf = weight_f32(ctx, w); /* [O, I] */
        if (wf) be->gemm(false, false, T, I, O, 1.0f, dy, O, wf, I, bx, VNM_F32(dx), I);
        weight_f32_done(ctx, w, wf);
    }
    if (dw) be->gemm(true, false, O, I, T, 1.0f, dy, O, VNM_F32(x), I, bw, VNM_F32(dw), I);
    if (db) be->sum_axis(VNM_F32(db), dy, 1, T, O, bb != 0.0f);
}

/* f32, or a frozen (no gradient) bf16/f16 weight. */
static bool weight_ok(vnm_ctx *ctx, const char *op, const vnm_tensor *w)
{
    bool half = w->dtype == VNM_DTYPE_BF16 || w->dtype == VNM_DTYPE_F16;
    if (half && !w->requires_grad) return true;
    if (half) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: a %s weight must be frozen (requires_grad off); "
                     "trainable weights are f32", op, vnm_dtype_name(w->dtype));
        return false;
    }
    return vnm_check_f32(ctx, op, w, "weight");
}

vnm_tensor *vnm_linear(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, vnm_tensor *b)
{
    static const char *op = "linear";
    if (!x || !w) return NULL;
    if (!vnm_check_f32(ctx, op, x, "input") || !weight_ok(ctx, op, w) ||
        !vnm_check_ndim(ctx, op, x, "input", 1, VNM_MAX_DIMS) ||
        !vnm_check_ndim(ctx, op, w, "weight", 2, 2))
        return NULL;
    int64_t O = w->shape[0], I = w->shape[1];
    char s1[96], s2[96];
    if (x->shape[x->ndim - 1] != I) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "linear: input %s has %lld features, weight %s expects %lld",
                     vnm_shape_str(x, s1, sizeof s1), (long long)x->shape[x->ndim - 1],
                     vnm_shape_str(w, s2, sizeof s2), (long long)I);
        return NULL;
    }
    if (b && (!vnm_check_f32(ctx, op, b, "bias") || b->ndim != 1 || b->shape[0] != O)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "linear: bias %s must be [%lld] for weight %s",
                     vnm_shape_str(b, s1, sizeof s1), (long long)O, vnm_shape_str(w, s2, sizeof s2));
        return NULL;
    }
    x = vnm_contiguous(ctx, x);
    w = vnm_contiguous(ctx, w);
    if (!x || !w) return NULL;
    vnm_ctx_call_linear_hook(ctx, w->name, x);
    int64_t shape[VNM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = O;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, shape); /* [..., O] */
    if (!y) return NULL;
    int64_t T = vnm_numel(x) / (I ? I : 1);
    float beta = 0.0f;
    if (b) {
        vnm_layout d = {2, {T, O}, {O, 1}}, s = {2, {T, O}, {0, 1}};
        ctx->be->copy_strided(VNM_F32(y), &d, VNM_F32(b), &s, false);
        beta = 1.0f;
    }
    const float *wf = weight_f32(ctx, w); /* [O, I] */
    if (!wf) return NULL;
    ctx->be->gemm(false, true, T, O, I, 1.0f, VNM_F32(x), I, wf, I, beta, VNM_F32(y), O);
    weight_f32_done(ctx, w, wf);
    vnm_tensor *in[3] = {x, w, b};
    vnm_node *node = vnm_tape_record(ctx, op, linear_backward, y, 3, in);
    if (node) {
        node->iarg[0] = T;
        node->iarg[1] = O;
        node->iarg[2] = I;
    }
    return y;
}

/* iarg: batch, M, K, N, b shared (stride 0) */
static void matmul_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *a = node->in[0], *b = node->in[1];
    const float *dy = VNM_F32(node->out->grad); /* [batch, M, N] */
    int64_t batch = node->iarg[0], M = node->iarg[1], K = node->iarg[2], N = node->iarg[3];
    bool shared = node->iarg[4] != 0;
    int64_t sb = shared ? 0 : K * N;
    const vnm_backend *be = ctx->be;
    float ba, bb;
    vnm_tensor *da = vnm_grad_slot(ctx, a, &ba), *db = vnm_grad_slot(ctx, b, &bb);
    if (da)
        be->gemm_batched(false, true, M, K, N, 1.0f, dy, N, M * N, VNM_F32(b), N, sb, ba,
                         VNM_F32(da), K, M * K, batch);
    if (db && shared) /* Σ over the batch of aᵀ·dy is one GEMM over the stacked rows */
        be->gemm(true, false, K, N, batch * M, 1.0f, VNM_F32(a), K, dy, N, bb, VNM_F32(db), N);
    else if (db)
        be->gemm_batched(true, false, K, N, M, 1.0f, VNM_F32(a), K, M * K, dy, N, M * N, bb,
                         VNM_F32(db), N, K * N, batch);
}

vnm_tensor *vnm_matmul(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b)
{
    static const char *op = "matmul";
    if (!a || !b) return NULL;
    if (!vnm_check_f32(ctx, op, a, "a") || !vnm_check_f32(ctx, op, b, "b") ||
        !vnm_check_ndim(ctx, op, a, "a", 2, VNM_MAX_DIMS) ||
        !vnm_check_ndim(ctx, op, b, "b", 2, VNM_MAX_DIMS))
        return NULL;
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1];
    int64_t N = b->shape[b->ndim - 1];
    bool shared = b->ndim == 2;
    bool batch_ok = shared || a->ndim == b->ndim;
    for (int i = 0; batch_ok && !shared && i < a->ndim - 2; i++)
        batch_ok = a->shape[i] == b->shape[i];
    if (b->shape[b->ndim - 2] != K || !batch_ok) {
        char s1[96], s2[96];
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "matmul: cannot multiply %s by %s (need a[..., M, K] · b[..., K, N] with "
                     "equal batch dims, or a 2-D b)",
                     vnm_shape_str(a, s1, sizeof s1), vnm_shape_str(b, s2, sizeof s2));
        return NULL;
    }
    a = vnm_contiguous(ctx, a);
    b = vnm_contiguous(ctx, b);
    if (!a || !b) return NULL;
    int64_t shape[VNM_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    shape[a->ndim - 1] = N;
    /* [..., M, N]; cleared when K = 0, where the GEMM writes nothing */
    vnm_tensor *y = K > 0 ? vnm_tensor_empty(ctx, VNM_DTYPE_F32, a->ndim, shape)
                          : vnm_tensor_new(ctx, VNM_DTYPE_F32, a->ndim, shape);
    if (!y) return NULL;
    int64_t batch = M * K > 0 ? vnm_numel(a) / (M * K) : 0;
    ctx->be->gemm_batched(false, false, M, N, K, 1.0f, VNM_F32(a), K, M * K, VNM_F32(b), N,
                          shared ? 0 : K * N, 0.0f, VNM_F32(y), N, M * N, batch);
    vnm_tensor *in[2] = {a, b};
    vnm_node *node = vnm_tape_record(ctx, op, matmul_backward, y, 2, in);
    if (node) {
        node->iarg[0] = batch;
        node->iarg[1] = M;
        node->iarg[2] = K;
        node->iarg[3] = N;
        node->iarg[4] = shared;
    }
    return y;
}
