/* autograd/op_attention_half.c — attention in the half dtype of mixed precision, through the
 * backend's fused entries (attention_half_fwd/bwd: cuDNN's flash-attention SDPA on CUDA, a
 * reference on the CPU). vnm_attention and vnm_attention_qkv come here first when the context
 * multiplies in bf16/f16 (vnm_ctx_set_matmul_dtype) and the backend has the entries (and they
 * are deterministic, where the context asks for it); a case the backend declines runs the f32
 * kernels.
 *
 * As PyTorch's autocast runs scaled_dot_product_attention in the autocast dtype: q, k and v are
 * rounded to it, the kernel accumulates in f32 and rounds its output, which is widened to f32 for
 * the next op; the gradients of q, k and v come back rounded and are widened into theirs. The node
 * keeps only half-precision operands, linear in the sequence length: one half copy holding q, k
 * and v, the half output and one f32 log-sum-exp per query row, no [B, H, T, S] probabilities.
 * It reads none of its f32 inputs, which a segment (vnm_segment) then gives back. */
#include "internal.h"

/* What backward needs to call the entry again. The half copy x16 holds q, k, v at the element
 * offsets off[] with strides in[]; input i of the node has its gradient at element sec[i] of a
 * buffer laid out as x16 (contiguous with the input's shape). */
typedef struct {
    int64_t B, Hq, Hkv, T, S, D;
    bool causal, clear; /* clear: q, k, v do not cover x16 (fewer queries than tokens) */
    float scale;
    int64_t off[3], sec[3];
    vnm_attn_strides in[3], out;
} fused_case;

static void *at(const vnm_tensor *t, int64_t elem)
{
    return (char *)t->data + elem * (int64_t)vnm_dtype_size(t->dtype);
}

/* g's values (dt, numel of t) into t's gradient buffer: written when it is new, else added. */
static void add_grad(vnm_ctx *ctx, vnm_tensor *t, const void *g, vnm_dtype dt)
{
    float beta;
    vnm_tensor *slot = vnm_grad_slot(ctx, t, &beta);
    if (!slot) return;
    int64_t n = vnm_numel(t);
    if (beta == 0.0f) {
        ctx->be->convert(slot->data, VNM_DTYPE_F32, g, dt, n);
        return;
    }
    vnm_tensor *w = vnm_tensor_empty(ctx, VNM_DTYPE_F32, t->ndim, t->shape);
    if (!w) return;
    ctx->be->convert(w->data, VNM_DTYPE_F32, g, dt, n);
    ctx->be->axpy(VNM_F32(slot), VNM_F32(w), 1.0f, n);
    vnm_release(ctx, w);
}

/* saved: x16, o16, stats (owned); extra: the fused_case */
static void fused_backward(vnm_ctx *ctx, vnm_node *node)
{
    const fused_case *c = node->extra;
    vnm_tensor *x16 = node->saved[0], *o16 = node->saved[1], *stats = node->saved[2];
    vnm_dtype dt = x16->dtype;
    const vnm_backend *be = ctx->be;
    vnm_tensor *g = node->out->grad;
    vnm_tensor *dout = vnm_to_dtype(ctx, g, dt); /* laid out as o16 */
    vnm_tensor *d16 = vnm_tensor_empty(ctx, dt, x16->ndim, x16->shape);
    if (dout && d16) {
        if (c->clear) be->memset0(d16->data, (size_t)vnm_numel(d16) * vnm_dtype_size(dt));
        bool ok = be->attention_half_bwd(
            dt, at(d16, c->off[0]), c->in[0], at(d16, c->off[1]), c->in[1], at(d16, c->off[2]),
            c->in[2], dout->data, c->out, o16->data, c->out, VNM_F32(stats), at(x16, c->off[0]),
            c->in[0], at(x16, c->off[1]), c->in[1], at(x16, c->off[2]), c->in[2], c->B, c->Hq,
            c->Hkv, c->T, c->S, c->D, c->causal, c->scale);
        if (!ok)
            vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "%s: the fused %s backward failed on %s",
                         node->op, vnm_dtype_name(dt), be->name);
        for (int i = 0; ok && i < node->n_in; i++)
            add_grad(ctx, node->in[i], at(d16, c->sec[i]), dt);
    }
    vnm_release(ctx, d16);
    vnm_release(ctx, dout);
}

/* Runs the fused forward on x16 (owned by the caller until then) and records the node. False,
 * with x16 given back and nothing else done, when the backend declines the case. */
static bool fused_forward(vnm_ctx *ctx, const char *op, const fused_case *c, vnm_tensor *x16,
                          vnm_tensor *o, int n_in, vnm_tensor *const *in)
{
    vnm_dtype dt = x16->dtype;
    vnm_tensor *o16 = vnm_tensor_empty(ctx, dt, o->ndim, o->shape);
    vnm_tensor *stats = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 3, VNM_SHAPE(c->B, c->Hq, c->T));
    bool ran = o16 && stats &&
               ctx->be->attention_half_fwd(dt, o16->data, c->out, VNM_F32(stats),
                                           at(x16, c->off[0]), c->in[0], at(x16, c->off[1]),
                                           c->in[1], at(x16, c->off[2]), c->in[2], c->B, c->Hq,
                                           c->Hkv, c->T, c->S, c->D, c->causal, c->scale);
    if (ran) ctx->be->convert(o->data, VNM_DTYPE_F32, o16->data, dt, vnm_numel(o));
    vnm_node *node = ran ? vnm_tape_record(ctx, op, fused_backward, o, n_in, in) : NULL;
    fused_case *kept = node ? vnm_step_meta_alloc(ctx, sizeof *kept) : NULL;
    if (kept) {
        *kept = *c;
        node->extra = kept;
        vnm_node_reads(node, 0);
        vnm_node_own(node, 0, x16);
        vnm_node_own(node, 1, o16);
        vnm_node_own(node, 2, stats);
        return true;
    }
    if (node) vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "%s: out of memory for the node", op);
    vnm_release(ctx, stats);
    vnm_release(ctx, o16);
    vnm_release(ctx, x16);
    bool out_of_memory = !o16 || !stats; /* the context says so: handled, as a failure */
    return ran || out_of_memory;
}

static bool applies(const vnm_ctx *ctx)
{
    const vnm_backend *be = ctx->be;
    return ctx->matmul_dtype != VNM_DTYPE_F32 && be->attention_half_fwd &&
           be->attention_half_bwd && (be->attention_half_deterministic || !ctx->deterministic);
}

/* t (f32, any strides) into dst (contiguous, dt) */
static bool convert_into(vnm_ctx *ctx, void *dst, vnm_dtype dt, vnm_tensor *t)
{
    const vnm_backend *be = ctx->be;
    if (vnm_is_contiguous(t)) {
        be->convert(dst, dt, t->data, VNM_DTYPE_F32, vnm_numel(t));
        return true;
    }
    vnm_tensor *c = vnm_tensor_empty(ctx, VNM_DTYPE_F32, t->ndim, t->shape);
    if (!c) return false;
    vnm_layout d = {t->ndim, {0}, {0}}, s = d;
    for (int i = 0; i < t->ndim; i++) {
        d.shape[i] = s.shape[i] = t->shape[i];
        d.strides[i] = c->strides[i];
        s.strides[i] = t->strides[i];
    }
    be->copy_strided(VNM_F32(c), &d, VNM_F32(t), &s, false);
    be->convert(dst, dt, c->data, VNM_DTYPE_F32, vnm_numel(t));
    vnm_release(ctx, c);
    return true;
}

bool vnm_attention_half(vnm_ctx *ctx, vnm_tensor *q, vnm_tensor *k, vnm_tensor *v, bool causal,
                        float scale, vnm_tensor **out)
{
    if (!applies(ctx)) return false;
    int64_t B = q->shape[0], Hq = q->shape[1], T = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], S = k->shape[2], nq = vnm_numel(q), nkv = vnm_numel(k);
    vnm_dtype dt = ctx->matmul_dtype;
    /* x16 = q | k | v, each contiguous */
    vnm_tensor *x16 = vnm_tensor_empty(ctx, dt, 1, VNM_SHAPE(nq + 2 * nkv));
    vnm_tensor *o = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 4, q->shape);
    *out = NULL;
    if (!x16 || !o || !convert_into(ctx, at(x16, 0), dt, q) ||
        !convert_into(ctx, at(x16, nq), dt, k) || !convert_into(ctx, at(x16, nq + nkv), dt, v))
        return true;
    vnm_attn_strides cq = {Hq * T * D, T * D, D}, ckv = {Hkv * S * D, S * D, D};
    fused_case c = {B, Hq, Hkv, T, S, D, causal, false, scale, {0, nq, nq + nkv},
                    {0, nq, nq + nkv}, {cq, ckv, ckv}, cq};
    vnm_tensor *in[3] = {q, k, v};
    if (!fused_forward(ctx, "attention", &c, x16, o, 3, in)) {
        vnm_release(ctx, o);
        return false;
    }
    *out = ctx->status == VNM_OK ? o : NULL;
    return true;
}

bool vnm_attention_qkv_half(vnm_ctx *ctx, vnm_tensor *qkv, int64_t heads, int64_t queries,
                            bool causal, float scale, vnm_tensor **out)
{
    if (!applies(ctx)) return false;
    int64_t B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2] / 3, D = C / heads;
    *out = NULL;
    vnm_tensor *x16 = vnm_to_dtype(ctx, qkv, ctx->matmul_dtype); /* [B, T, 3, H, D] */
    vnm_tensor *o = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 3, VNM_SHAPE(B, queries, C));
    if (!x16 || !o) return true;
    vnm_attn_strides in = {T * 3 * C, D, 3 * C}, os = {queries * C, D, C};
    fused_case c = {B, heads, heads, queries, T, D, causal, queries < T, scale, {0, C, 2 * C},
                    {0, 0, 0}, {in, in, in}, os};
    if (!fused_forward(ctx, "attention_qkv", &c, x16, o, 1, &qkv)) {
        vnm_release(ctx, o);
        return false;
    }
    *out = ctx->status == VNM_OK ? o : NULL;
    return true;
}
