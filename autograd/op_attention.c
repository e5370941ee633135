/* autograd/op_attention.c — scaled dot-product attention with grouped KV heads (GQA/MQA).
 * softmax(scale·q·kᵀ + mask)·v per (batch, query head); query head h reads KV head
 * h / (Hq/Hkv), as Hugging Face's repeat_kv. The probabilities are kept for backward, so the
 * backward costs no recomputation at the price of [B, Hq, T, S] floats of step memory.
 *
 * Causal alignment: query t may attend key s iff s ≤ t + (S - T), i.e. the last query sees every
 * key. With T == S this is torch SDPA's is_causal; with T < S (queries continuing a cached
 * prefix) it is the bottom-right alignment of flash-attention and of Hugging Face's KV cache, not
 * torch SDPA's top-left one. T > S would leave the first queries with no key at all, so causal
 * attention rejects it.
 *
 * Where the backend has the strided attention entries, q, k and v views whose last dim is
 * contiguous are read in place (no copies), and vnm_attention_qkv reads all three straight out of
 * a packed [B, T, 3·H·D] projection and writes [B, T, H·D], so neither the head split and merge
 * nor their gradients cost a copy; its backward writes the whole qkv gradient when it is new.
 *
 * With bf16/f16 products (vnm_ctx_set_matmul_dtype), both ops run in that dtype through the
 * backend's fused entries where it has them (op_attention_half.c). */
#include <math.h>

#include "internal.h"

static vnm_attn_strides strides_of(const vnm_tensor *t)
{
    return (vnm_attn_strides){t->strides[0], t->strides[1], t->strides[2]};
}

/* A view the strided kernels read as it is: 4 dims, the last one contiguous. */
static bool strided_ok(const vnm_tensor *t) { return t->shape[3] == 1 || t->strides[3] == 1; }

/* iarg: B, Hq, Hkv, T, S, D; farg[0]: scale; saved[0]: p [B, Hq, T, S]. q, k, v may be strided
 * views when the backend has the strided kernels; their gradients are contiguous. */
static void attention_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
    vnm_tensor *dq = vnm_grad_buffer(ctx, q), *dk = vnm_grad_buffer(ctx, k);
    vnm_tensor *dv = vnm_grad_buffer(ctx, v);
    if (!dq && !dk && !dv) return;
    const int64_t *a = node->iarg;
    const vnm_backend *be = ctx->be;
    float *dqp = dq ? VNM_F32(dq) : NULL, *dkp = dk ? VNM_F32(dk) : NULL;
    float *dvp = dv ? VNM_F32(dv) : NULL;
    if (be->attention_bwd_strided) {
        vnm_attn_strides qs = strides_of(q), ks = strides_of(k), vs = strides_of(v);
        vnm_attn_strides cq = {a[1] * a[3] * a[5], a[3] * a[5], a[5]};
        vnm_attn_strides ckv = {a[2] * a[4] * a[5], a[4] * a[5], a[5]};
        be->attention_bwd_strided(dqp, cq, dkp, ckv, dvp, ckv, false, VNM_F32(node->out->grad), cq,
                                  VNM_F32(node->saved[0]), VNM_F32(q), qs, VNM_F32(k), ks,
                                  VNM_F32(v), vs, a[0], a[1], a[2], a[3], a[4], a[5],
                                  node->farg[0]);
        return;
    }
    be->attention_bwd(dqp, dkp, dvp, VNM_F32(node->out->grad), VNM_F32(node->saved[0]), VNM_F32(q),
                      VNM_F32(k), VNM_F32(v), a[0], a[1], a[2], a[3], a[4], a[5], node->farg[0]);
}

static bool attention_shapes_ok(vnm_ctx *ctx, const vnm_tensor *q, const vnm_tensor *k,
                                const vnm_tensor *v, bool causal)
{
    char sq[96], sk[96], sv[96];
    vnm_shape_str(q, sq, sizeof sq);
    vnm_shape_str(k, sk, sizeof sk);
    vnm_shape_str(v, sv, sizeof sv);
    if (!vnm_same_shape(k, v)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "attention: k %s and v %s must have the same shape [B, Hkv, S, D]", sk, sv);
        return false;
    }
    if (q->shape[0] != k->shape[0] || q->shape[3] != k->shape[3]) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "attention: q %s and k %s must agree in batch B and head size D "
                     "(q[B, Hq, T, D], k[B, Hkv, S, D])", sq, sk);
        return false;
    }
    int64_t Hq = q->shape[1], Hkv = k->shape[1], T = q->shape[2], S = k->shape[2];
    if (Hkv < 1 || Hq % Hkv != 0) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "attention: q %s has %lld heads, not a multiple of the %lld KV heads of k %s",
                     sq, (long long)Hq, (long long)Hkv, sk);
        return false;
    }
    if (S < 1 || q->shape[3] < 1) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "attention: need at least one key and a head size D >= 1, got q %s, k %s", sq,
                     sk);
        return false;
    }
    if (causal && T > S) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "attention: causal with %lld queries but only %lld keys (q %s, k %s): the "
                     "last query is aligned with the last key, so T must be <= S",
                     (long long)T, (long long)S, sq, sk);
        return false;
    }
    return true;
}

vnm_tensor *vnm_attention(vnm_ctx *ctx, vnm_tensor *q, vnm_tensor *k, vnm_tensor *v, bool causal,
                          float scale)
{
    static const char *op = "attention";
    if (!q || !k || !v) return NULL;
    if (!vnm_check_f32(ctx, op, q, "q") || !vnm_check_f32(ctx, op, k, "k") ||
        !vnm_check_f32(ctx, op, v, "v") || !vnm_check_ndim(ctx, op, q, "q", 4, 4) ||
        !vnm_check_ndim(ctx, op, k, "k", 4, 4) || !vnm_check_ndim(ctx, op, v, "v", 4, 4) ||
        !attention_shapes_ok(ctx, q, k, v, causal) ||
        !vnm_check_kernel(ctx, op, ctx->be->attention_fwd && ctx->be->attention_bwd))
        return NULL;
    if (scale <= 0.0f) scale = 1.0f / sqrtf((float)q->shape[3]);
    vnm_tensor *fused;
    if (vnm_attention_half(ctx, q, k, v, causal, scale, &fused)) return fused;
    const vnm_backend *be = ctx->be;
    bool strided = be->attention_fwd_strided && be->attention_bwd_strided;
    if (!strided || !strided_ok(q)) q = vnm_contiguous(ctx, q);
    if (!strided || !strided_ok(k)) k = vnm_contiguous(ctx, k);
    if (!strided || !strided_ok(v)) v = vnm_contiguous(ctx, v);
    if (!q || !k || !v) return NULL;
    int64_t B = q->shape[0], Hq = q->shape[1], T = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], S = k->shape[2];
    /* o [B, Hq, T, D]; p [B, Hq, T, S]: the probabilities, kept for backward */
    vnm_tensor *o = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 4, q->shape);
    vnm_tensor *p = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(B, Hq, T, S));
    if (!o || !p) return NULL;
    if (strided)
        be->attention_fwd_strided(VNM_F32(o), strides_of(o), VNM_F32(p), VNM_F32(q), strides_of(q),
                                  VNM_F32(k), strides_of(k), VNM_F32(v), strides_of(v), B, Hq, Hkv,
                                  T, S, D, causal, scale);
    else
        be->attention_fwd(VNM_F32(o), VNM_F32(p), VNM_F32(q), VNM_F32(k), VNM_F32(v), B, Hq, Hkv,
                          T, S, D, causal, scale);
    vnm_tensor *in[3] = {q, k, v};
    vnm_node *node = vnm_tape_record(ctx, op, attention_backward, o, 3, in);
    vnm_node_reads(node, VNM_READS_IN(0) | VNM_READS_IN(1) | VNM_READS_IN(2));
    if (node) {
        int64_t args[6] = {B, Hq, Hkv, T, S, D};
        for (int i = 0; i < 6; i++) node->iarg[i] = args[i];
        node->farg[0] = scale;
        vnm_node_own(node, 0, p);
    }
    return o;
}

/* iarg: B, H, T, D, Tq; farg[0]: scale; saved[0]: p [B, H, Tq, T]. q, k, v are read in place from
 * qkv [B, T, 3, H, D]; the output and its gradient are [B, Tq, H, D]. With all T tokens as queries
 * the kernel writes every element of a new qkv gradient; with fewer, the rows past Tq get no
 * query gradient, so the buffer is cleared and the kernel adds. */
static void attention_qkv_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *qkv = node->in[0];
    int64_t B = node->iarg[0], H = node->iarg[1], T = node->iarg[2], D = node->iarg[3];
    int64_t Tq = node->iarg[4], C = H * D;
    float beta = 1.0f;
    vnm_tensor *g = Tq == T ? vnm_grad_slot(ctx, qkv, &beta) : vnm_grad_buffer(ctx, qkv);
    if (!g) return;
    vnm_attn_strides in = {T * 3 * C, D, 3 * C}, out = {Tq * C, D, C};
    const float *x = VNM_F32(qkv);
    float *gx = VNM_F32(g);
    ctx->be->attention_bwd_strided(gx, in, gx + C, in, gx + 2 * C, in, beta == 0.0f,
                                   VNM_F32(node->out->grad), out, VNM_F32(node->saved[0]), x, in,
                                   x + C, in, x + 2 * C, in, B, H, H, Tq, T, D, node->farg[0]);
}

/* The same computation through the generic ops, for backends without strided kernels. */
static vnm_tensor *attention_qkv_composed(vnm_ctx *ctx, vnm_tensor *qkv, int64_t H, int64_t Tq,
                                          bool causal, float scale)
{
    static const int swap12[4] = {0, 2, 1, 3};
    int64_t B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2] / 3;
    vnm_tensor *heads[3]; /* q [B, H, Tq, D], k, v [B, H, T, D] */
    for (int i = 0; i < 3; i++) {
        int64_t rows = i == 0 ? Tq : T;
        vnm_tensor *t = vnm_slice(ctx, qkv, 2, i * C, (i + 1) * C); /* [B, T, C] */
        if (rows < T) t = vnm_slice(ctx, t, 1, 0, rows);          /* [B, Tq, C] */
        t = vnm_reshape(ctx, t, 4, VNM_SHAPE(B, rows, H, C / H)); /* [B, rows, H, D] */
        heads[i] = vnm_permute(ctx, t, swap12);
    }
    vnm_tensor *a = vnm_attention(ctx, heads[0], heads[1], heads[2], causal, scale);
    return vnm_reshape(ctx, vnm_permute(ctx, a, swap12), 3, VNM_SHAPE(B, Tq, C)); /* [B, Tq, C] */
}

vnm_tensor *vnm_attention_qkv(vnm_ctx *ctx, vnm_tensor *qkv, int64_t heads, int64_t queries,
                              bool causal, float scale)
{
    static const char *op = "attention_qkv";
    if (!qkv) return NULL;
    if (!vnm_check_f32(ctx, op, qkv, "qkv") || !vnm_check_ndim(ctx, op, qkv, "qkv", 3, 3))
        return NULL;
    int64_t B = qkv->shape[0], T = qkv->shape[1], C3 = qkv->shape[2];
    char s[96];
    if (heads < 1 || C3 == 0 || C3 % (3 * heads) != 0) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "attention_qkv: qkv %s must be [B, T, 3·H·D] with D >= 1 for %lld heads",
                     vnm_shape_str(qkv, s, sizeof s), (long long)heads);
        return NULL;
    }
    int64_t Tq = queries == 0 ? T : queries;
    if (queries < 0 || Tq > T || (causal && Tq != T)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "attention_qkv: %lld queries for qkv %s: need 0 (all) or 1 to T%s",
                     (long long)queries, vnm_shape_str(qkv, s, sizeof s),
                     causal ? ", and all of them when causal" : "");
        return NULL;
    }
    const vnm_backend *be = ctx->be;
    if (!be->attention_fwd_strided || !be->attention_bwd_strided)
        return attention_qkv_composed(ctx, qkv, heads, Tq, causal, scale);
    qkv = vnm_contiguous(ctx, qkv);
    if (!qkv) return NULL;
    int64_t C = C3 / 3, D = C / heads;
    if (scale <= 0.0f) scale = 1.0f / sqrtf((float)D);
    vnm_tensor *fused;
    if (vnm_attention_qkv_half(ctx, qkv, heads, Tq, causal, scale, &fused)) return fused;
    /* o [B, Tq, H·D]; p [B, H, Tq, T]: the probabilities, kept for backward */
    vnm_tensor *o = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 3, VNM_SHAPE(B, Tq, C));
    vnm_tensor *p = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(B, heads, Tq, T));
    if (!o || !p) return NULL;
    vnm_attn_strides in = {T * C3, D, C3}, out = {Tq * C, D, C};
    const float *x = VNM_F32(qkv);
    be->attention_fwd_strided(VNM_F32(o), out, VNM_F32(p), x, in, x + C, in, x + 2 * C, in, B,
                              heads, heads, Tq, T, D, causal, scale);
    vnm_node *node = vnm_tape_record(ctx, op, attention_qkv_backward, o, 1, &qkv);
    vnm_node_reads(node, VNM_READS_IN(0));
    if (node) {
        int64_t args[5] = {B, heads, T, D, Tq};
        for (int i = 0; i < 5; i++) node->iarg[i] = args[i];
        node->farg[0] = scale;
        vnm_node_own(node, 0, p);
    }
    return o;
}
