/* autograd/op_linear.c — linear (x·Wᵀ + b over any leading dims) and batched matmul. Both run as
 * GEMMs on contiguous operands with no transposed copies: the backward products pass transpose
 * flags and accumulate straight into the gradient buffers (beta = 1). The linear forward uses the
 * backend's fused product with the bias epilogue when it has one (linear_fwd).
 *
 * Backward reads only the operands a gradient needs: x (matmul's a) for dW (db), W (b) for dx
 * (da); a frozen weight's linear does not hold its input.
 *
 * Mixed precision (vnm_ctx_set_matmul_dtype bf16/f16): every product, forward and backward, takes
 * its operands rounded to the half dtype. The half copies the backward needs are made once, in
 * forward, and kept on the node in place of the f32 operands: the activations a step holds for
 * its products are half precision (with vnm_segment, the f32 ones go as their block ends), and
 * the half copy of a weight is cached as PyTorch's autocast caches it. Products of the same
 * activation (LLaMA's q, k and v projections of one normalised input) share the copy the first
 * of them kept, which owns it: its backward runs after theirs. A frozen weight of that dtype is
 * used as it is. The gradients reach the f32 master weights unrounded (PyTorch's
 * autocast rounds dW to bf16 first).
 *
 * Operands in another dtype than the product's that are not kept are converted into step
 * temporaries given back right after the product (vnm_release): in f32, a frozen bf16/f16 weight
 * (a LoRA base held at half the memory) is widened for each product, so at most one f32 copy
 * exists at a time; dy is rounded for each backward product. */
#include "internal.h"

/* t (contiguous) as an operand in dtype dt: t itself, the half copy an earlier product of the
 * step kept, or a step copy to give back with temp_done. NULL when out of memory (the context
 * says so). */
static vnm_tensor *temp_as(vnm_ctx *ctx, vnm_tensor *t, vnm_dtype dt)
{
    vnm_tensor *h = t->half_copy;
    if (h && !h->released && h->dtype == dt) return h;
    return t->dtype == dt ? t : vnm_to_dtype(ctx, t, dt);
}

static void temp_done(vnm_ctx *ctx, vnm_tensor *tmp, const vnm_tensor *t)
{
    if (tmp && tmp != t && tmp != t->half_copy) vnm_release(ctx, tmp);
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

/* The operand a backward product reads: the copy kept on the node, else t in dt as a temporary
 * (given back with temp_done). */
static vnm_tensor *operand(vnm_ctx *ctx, vnm_tensor *kept, vnm_tensor *t, vnm_dtype dt)
{
    return kept ? kept : temp_as(ctx, t, dt);
}

static void operand_done(vnm_ctx *ctx, vnm_tensor *o, const vnm_tensor *kept, const vnm_tensor *t)
{
    if (o != kept) temp_done(ctx, o, t);
}

/* Keeps the converted operand tmp (made from t) on node as saved[i] when the backward needs it
 * and it is a half copy (shared when an earlier product kept it, else owned and offered to later
 * products of a step tensor); else gives it back. Returns whether node now reads t itself. */
static bool keep_operand(vnm_ctx *ctx, vnm_node *node, int i, vnm_tensor *tmp, vnm_tensor *t,
                         bool needed)
{
    bool keep = needed && tmp != t && tmp->dtype != VNM_DTYPE_F32;
    if (keep && tmp == t->half_copy) {
        node->saved[i] = tmp;
    } else if (keep) {
        vnm_node_own(node, i, tmp);
        if (!t->persistent) t->half_copy = tmp;
    } else {
        temp_done(ctx, tmp, t);
    }
    return needed && !keep;
}

/* iarg: T, O, I, the product dtype; saved[0], saved[1]: the half copies of W and x (owned) that
 * mixed precision kept for dx and dW */
static void linear_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
    int64_t T = node->iarg[0], O = node->iarg[1], I = node->iarg[2];
    vnm_dtype dt = (vnm_dtype)node->iarg[3];
    float bx, bw, bb;
    vnm_tensor *dx = vnm_grad_slot(ctx, x, &bx), *dw = vnm_grad_slot(ctx, w, &bw);
    vnm_tensor *db = vnm_grad_slot(ctx, b, &bb);
    vnm_tensor *g = node->out->grad;  /* [T, O] f32 */
    vnm_tensor *dy = temp_as(ctx, g, dt); /* [T, O] in dt */
    if (!dy) return;
    if (dx) {
        vnm_tensor *wo = operand(ctx, node->saved[0], w, dt); /* [O, I] */
        if (wo)
            product(ctx, dt, false, false, T, I, O, dy->data, O, 0, wo->data, I, 0, bx,
                    VNM_F32(dx), I, 0, 1);
        operand_done(ctx, wo, node->saved[0], w);
    }
    if (dw) {
        vnm_tensor *xo = operand(ctx, node->saved[1], x, dt); /* [T, I] */
        if (xo)
            product(ctx, dt, true, false, O, I, T, dy->data, O, 0, xo->data, I, 0, bw,
                    VNM_F32(dw), I, 0, 1);
        operand_done(ctx, xo, node->saved[1], x);
    }
    if (db) ctx->be->sum_axis(VNM_F32(db), VNM_F32(g), 1, T, O, bb != 0.0f);
    temp_done(ctx, dy, g);
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
    vnm_tensor *xo = temp_as(ctx, x, dt), *wo = temp_as(ctx, w, dt); /* [T, I], [O, I] in dt */
    if (xo && wo) linear_product(ctx, dt, T, O, I, xo->data, wo->data, b, y);
    if (!xo || !wo) {
        temp_done(ctx, xo, x);
        temp_done(ctx, wo, w);
        return NULL;
    }
    vnm_tensor *in[3] = {x, w, b};
    vnm_node *node = vnm_tape_record(ctx, op, linear_backward, y, 3, in);
    /* half copies serve backward too; a widened frozen weight is given back */
    bool reads_w = keep_operand(ctx, node, 0, wo, w, node && x->requires_grad);
    bool reads_x = keep_operand(ctx, node, 1, xo, x, node && w->requires_grad);
    vnm_node_reads(node, (reads_x ? VNM_READS_IN(0) : 0) | (reads_w ? VNM_READS_IN(1) : 0));
    if (node) {
        node->iarg[0] = T;
        node->iarg[1] = O;
        node->iarg[2] = I;
        node->iarg[3] = dt;
    }
    return y;
}

/* iarg: batch, M, K, N, b shared (stride 0), the product dtype; saved[0], saved[1]: the half
 * copies of a and b (owned) that mixed precision kept for db and da */
static void matmul_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *a = node->in[0], *b = node->in[1];
    int64_t batch = node->iarg[0], M = node->iarg[1], K = node->iarg[2], N = node->iarg[3];
    bool shared = node->iarg[4] != 0;
    vnm_dtype dt = (vnm_dtype)node->iarg[5];
    int64_t sb = shared ? 0 : K * N;
    float ba, bb;
    vnm_tensor *da = vnm_grad_slot(ctx, a, &ba), *db = vnm_grad_slot(ctx, b, &bb);
    vnm_tensor *g = node->out->grad, *dy = temp_as(ctx, g, dt); /* [batch, M, N] */
    if (!dy) return;
    if (da) {
        vnm_tensor *bo = operand(ctx, node->saved[1], b, dt);
        if (bo)
            product(ctx, dt, false, true, M, K, N, dy->data, N, M * N, bo->data, N, sb, ba,
                    VNM_F32(da), K, M * K, batch);
        operand_done(ctx, bo, node->saved[1], b);
    }
    vnm_tensor *ao = db ? operand(ctx, node->saved[0], a, dt) : NULL;
    if (ao && shared) /* Σ over the batch of aᵀ·dy is one GEMM over the stacked rows */
        product(ctx, dt, true, false, K, N, batch * M, ao->data, K, 0, dy->data, N, 0, bb,
                VNM_F32(db), N, 0, 1);
    else if (ao)
        product(ctx, dt, true, false, K, N, M, ao->data, K, M * K, dy->data, N, M * N, bb,
                VNM_F32(db), N, K * N, batch);
    if (ao) operand_done(ctx, ao, node->saved[0], a);
    temp_done(ctx, dy, g);
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
    vnm_tensor *ao = temp_as(ctx, a, dt), *bo = temp_as(ctx, b, dt); /* a, b in dt */
    if (ao && bo)
        product(ctx, dt, false, false, M, N, K, ao->data, K, M * K, bo->data, N,
                shared ? 0 : K * N, 0.0f, VNM_F32(y), N, M * N, batch);
    if (!ao || !bo) {
        temp_done(ctx, ao, a);
        temp_done(ctx, bo, b);
        return NULL;
    }
    vnm_tensor *in[2] = {a, b};
    vnm_node *node = vnm_tape_record(ctx, op, matmul_backward, y, 2, in);
    bool reads_a = keep_operand(ctx, node, 0, ao, a, node && b->requires_grad);
    bool reads_b = keep_operand(ctx, node, 1, bo, b, node && a->requires_grad);
    vnm_node_reads(node, (reads_a ? VNM_READS_IN(0) : 0) | (reads_b ? VNM_READS_IN(1) : 0));
    if (node) {
        node->iarg[5] = dt;
        node->iarg[0] = batch;
        node->iarg[1] = M;
        node->iarg[2] = K;
        node->iarg[3] = N;
        node->iarg[4] = shared;
    }
    return y;
}
