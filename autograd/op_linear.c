/* autograd/op_linear.c — linear (x·Wᵀ + b over any leading dims) and batched matmul. Both run as
 * GEMMs on contiguous operands with no transposed copies: the backward products pass transpose
 * flags and accumulate straight into the gradient buffers (beta = 1). The linear forward uses the
 * backend's fused product with the bias epilogue when it has one (linear_fwd).
 *
 * Mixed precision (vnm_ctx_set_matmul_dtype bf16/f16): the forward converts both operands to the
 * half dtype into step tensors, multiplies them with f32 accumulation and output, and keeps the
 * half copies on the tape for backward, which converts the output gradient too. The gradients
 * reach the f32 master weights unrounded (PyTorch's autocast rounds dW to bf16 first). A frozen
 * half weight of that dtype is used as it is, with no copy.
 *
 * In f32, a frozen weight may be bf16 or f16 (a LoRA base held at half the memory): each product
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

/* t (contiguous) as an operand of a half product: t itself when it has dtype dt, else a step
 * copy. NULL when out of memory. */
static vnm_tensor *half_operand(vnm_ctx *ctx, vnm_tensor *t, vnm_dtype dt)
{
    return t->dtype == dt ? t : vnm_to_dtype(ctx, t, dt);
}

/* Keeps the half operand h of input t for backward (NULL in f32): owned by the node when it is a
 * copy, not when t already had the half dtype. */
static void save_operand(vnm_node *node, int i, vnm_tensor *h, vnm_tensor *t)
{
    if (h && h != t) vnm_node_own(node, i, h);
    else node->saved[i] = h;
}

/* C = op(A)·op(B) + beta·C over `batch` matrices (gemm_batched's arguments, alpha 1), with A and
 * B in dt: f32, or a half dtype through gemm_half. */
static void product(vnm_ctx *ctx, vnm_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                    const void *A, int64_t lda, int64_t sa, const void *B, int64_t ldb, int64_t sb,
                    float beta, float *C, int64_t ldc, int64_t sc, int64_t batch)
{
    const vnm_backend *be = ctx->be;
    if (dt != VNM_DTYPE_F32)
        be->gemm_half(dt, ta, tb, M, N, K, 1.0f, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
    else if (batch == 1)
        be->gemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    else
        be->gemm_batched(ta, tb, M, N, K, 1.0f, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

/* y[T, O] = x·wᵀ + b with x, w in dt: fused where the backend offers it (cuBLASLt's bias
 * epilogue), else the bias broadcast into y and a product adding to it. */
static void linear_product(vnm_ctx *ctx, vnm_dtype dt, int64_t T, int64_t O, int64_t I,
                           const void *x, const void *w, const vnm_tensor *b, vnm_tensor *y)
{
    const float *bias = b ? VNM_F32(b) : NULL;
    if (ctx->be->linear_fwd && ctx->be->linear_fwd(dt, T, O, I, x, w, bias, VNM_F32(y))) return;
    float beta = 0.0f;
    if (b) {
        vnm_layout d = {2, {T, O}, {O, 1}}, s = {2, {T, O}, {0, 1}};
        ctx->be->copy_strided(VNM_F32(y), &d, bias, &s, false);
        beta = 1.0f;
    }
    product(ctx, dt, false, true, T, O, I, x, I, 0, w, I, 0, beta, VNM_F32(y), O, 0, 1);
}

/* The output gradient of node as the operand of its backward products: itself in f32, or the
 * half copy of the dtype of the node's saved operands. */
static vnm_tensor *dy_operand(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *dy = node->out->grad;
    return node->saved[0] ? half_operand(ctx, dy, node->saved[0]->dtype) : dy;
}

/* saved: the half copies of x and W in mixed precision, NULL in f32 */
static void linear_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
    vnm_tensor *xh = node->saved[0], *wh = node->saved[1];
    int64_t T = node->iarg[0], O = node->iarg[1], I = node->iarg[2];
    float bx, bw, bb;
    vnm_tensor *dx = vnm_grad_slot(ctx, x, &bx), *dw = vnm_grad_slot(ctx, w, &bw);
    vnm_tensor *db = vnm_grad_slot(ctx, b, &bb);
    vnm_tensor *dy = dy_operand(ctx, node); /* [T, O] */
    if (!dy) return;
    vnm_dtype dt = dy->dtype;
    if (dx && xh) {
        product(ctx, dt, false, false, T, I, O, dy->data, O, 0, wh->data, I, 0, bx, VNM_F32(dx),
                I, 0, 1);
    } else if (dx) {
        const float *wf = weight_f32(ctx, w); /* [O, I] */
        if (wf) product(ctx, dt, false, false, T, I, O, dy->data, O, 0, wf, I, 0, bx, VNM_F32(dx),
                        I, 0, 1);
        weight_f32_done(ctx, w, wf);
    }
    if (dw)
        product(ctx, dt, true, false, O, I, T, dy->data, O, 0, xh ? xh->data : x->data, I, 0, bw,
                VNM_F32(dw), I, 0, 1);
    if (db) ctx->be->sum_axis(VNM_F32(db), VNM_F32(node->out->grad), 1, T, O, bb != 0.0f);
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
    vnm_dtype dt = ctx->matmul_dtype;
    vnm_tensor *xh = NULL, *wh = NULL; /* [T, I], [O, I] in dt */
    if (dt != VNM_DTYPE_F32) {
        xh = half_operand(ctx, x, dt);
        wh = half_operand(ctx, w, dt);
        if (!xh || !wh) return NULL;
        linear_product(ctx, dt, T, O, I, xh->data, wh->data, b, y);
    } else {
        const float *wf = weight_f32(ctx, w); /* [O, I] */
        if (!wf) return NULL;
        linear_product(ctx, dt, T, O, I, x->data, wf, b, y);
        weight_f32_done(ctx, w, wf);
    }
    vnm_tensor *in[3] = {x, w, b};
    vnm_node *node = vnm_tape_record(ctx, op, linear_backward, y, 3, in);
    vnm_node_reads(node, xh ? 0 : VNM_READS_IN(0) | VNM_READS_IN(1)); /* half: the saved copies */
    if (node) {
        save_operand(node, 0, xh, x);
        save_operand(node, 1, wh, w);
        node->iarg[0] = T;
        node->iarg[1] = O;
        node->iarg[2] = I;
    }
    return y;
}

/* iarg: batch, M, K, N, b shared (stride 0); saved: the half copies of a and b in mixed
 * precision, NULL in f32 */
static void matmul_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *a = node->in[0], *b = node->in[1];
    vnm_tensor *ah = node->saved[0] ? node->saved[0] : a, *bh = node->saved[1] ? node->saved[1] : b;
    int64_t batch = node->iarg[0], M = node->iarg[1], K = node->iarg[2], N = node->iarg[3];
    bool shared = node->iarg[4] != 0;
    int64_t sb = shared ? 0 : K * N;
    float ba, bb;
    vnm_tensor *da = vnm_grad_slot(ctx, a, &ba), *db = vnm_grad_slot(ctx, b, &bb);
    vnm_tensor *dy = dy_operand(ctx, node); /* [batch, M, N] */
    if (!dy) return;
    vnm_dtype dt = dy->dtype;
    if (da)
        product(ctx, dt, false, true, M, K, N, dy->data, N, M * N, bh->data, N, sb, ba,
                VNM_F32(da), K, M * K, batch);
    if (db && shared) /* Σ over the batch of aᵀ·dy is one GEMM over the stacked rows */
        product(ctx, dt, true, false, K, N, batch * M, ah->data, K, 0, dy->data, N, 0, bb,
                VNM_F32(db), N, 0, 1);
    else if (db)
        product(ctx, dt, true, false, K, N, M, ah->data, K, M * K, dy->data, N, M * N, bb,
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
    vnm_dtype dt = ctx->matmul_dtype;
    vnm_tensor *ah = NULL, *bh = NULL; /* a, b in dt (mixed precision) */
    if (dt != VNM_DTYPE_F32 && (!(ah = half_operand(ctx, a, dt)) || !(bh = half_operand(ctx, b, dt))))
        return NULL;
    product(ctx, dt, false, false, M, N, K, ah ? ah->data : a->data, K, M * K,
            bh ? bh->data : b->data, N, shared ? 0 : K * N, 0.0f, VNM_F32(y), N, M * N, batch);
    vnm_tensor *in[2] = {a, b};
    vnm_node *node = vnm_tape_record(ctx, op, matmul_backward, y, 2, in);
    vnm_node_reads(node, ah ? 0 : VNM_READS_IN(0) | VNM_READS_IN(1));
    if (node) {
        save_operand(node, 0, ah, a);
        save_operand(node, 1, bh, b);
        node->iarg[0] = batch;
        node->iarg[1] = M;
        node->iarg[2] = K;
        node->iarg[3] = N;
        node->iarg[4] = shared;
    }
    return y;
}
