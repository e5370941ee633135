/* autograd/op_attention.c — scaled dot-product attention with grouped KV heads (GQA/MQA).
 * softmax(scale·q·kᵀ + mask)·v per (batch, query head); query head h reads KV head
 * h / (Hq/Hkv), as Hugging Face's repeat_kv. The probabilities are kept for backward, so the
 * backward costs no recomputation at the price of [B, Hq, T, S] floats of step memory.
 *
 * Causal alignment: query t may attend key s iff s ≤ t + (S - T), i.e. the last query sees every
 * key. With T == S this is torch SDPA's is_causal; with T < S (queries continuing a cached
 * prefix) it is the bottom-right alignment of flash-attention and of Hugging Face's KV cache, not
 * torch SDPA's top-left one. T > S would leave the first queries with no key at all, so causal
 * attention rejects it. */
#include <math.h>

#include "internal.h"

/* iarg: B, Hq, Hkv, T, S, D; farg[0]: scale; saved[0]: p [B, Hq, T, S] */
static void attention_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
    vnm_tensor *dq = vnm_grad_buffer(ctx, q), *dk = vnm_grad_buffer(ctx, k);
    vnm_tensor *dv = vnm_grad_buffer(ctx, v);
    if (!dq && !dk && !dv) return;
    const int64_t *a = node->iarg;
    ctx->be->attention_bwd(dq ? VNM_F32(dq) : NULL, dk ? VNM_F32(dk) : NULL,
                           dv ? VNM_F32(dv) : NULL, VNM_F32(node->out->grad),
                           VNM_F32(node->saved[0]), VNM_F32(q), VNM_F32(k), VNM_F32(v), a[0],
                           a[1], a[2], a[3], a[4], a[5], node->farg[0]);
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
    q = vnm_contiguous(ctx, q);
    k = vnm_contiguous(ctx, k);
    v = vnm_contiguous(ctx, v);
    if (!q || !k || !v) return NULL;
    int64_t B = q->shape[0], Hq = q->shape[1], T = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], S = k->shape[2];
    if (scale <= 0.0f) scale = 1.0f / sqrtf((float)D);
    /* o [B, Hq, T, D]; p [B, Hq, T, S]: the probabilities, kept for backward */
    vnm_tensor *o = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 4, q->shape);
    vnm_tensor *p = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(B, Hq, T, S));
    if (!o || !p) return NULL;
    ctx->be->attention_fwd(VNM_F32(o), VNM_F32(p), VNM_F32(q), VNM_F32(k), VNM_F32(v), B, Hq, Hkv,
                           T, S, D, causal, scale);
    vnm_tensor *in[3] = {q, k, v};
    vnm_node *node = vnm_tape_record(ctx, op, attention_backward, o, 3, in);
    if (node) {
        int64_t args[6] = {B, Hq, Hkv, T, S, D};
        for (int i = 0; i < 6; i++) node->iarg[i] = args[i];
        node->farg[0] = scale;
        node->saved[0] = p;
    }
    return o;
}
