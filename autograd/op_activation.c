/* autograd/op_activation.c — elementwise activations (GELU exact and tanh, SiLU) and the gated
 * SwiGLU = silu(gate)·up of LLaMA MLPs. Backward recomputes the activation from the saved input
 * rather than keeping its output, which costs one exp/erf per element and no memory.
 *
 * With mixed precision (vnm_ctx_set_matmul_dtype bf16/f16) the input is saved for backward as a
 * half copy, as PyTorch's autocast holds the bf16 output of the product before it: the forward
 * computes from the f32 input, the backward from the rounded one (widened into a temporary), and
 * the op reads none of its f32 inputs, which a segment (vnm_segment) then gives back. */
#include "internal.h"

/* Saves half copies of the node's inputs as saved[i] when the context multiplies in a half
 * dtype, and declares what backward reads: the f32 inputs otherwise. False when out of memory. */
static bool save_inputs(vnm_ctx *ctx, vnm_node *node)
{
    if (!node) return true;
    vnm_dtype dt = ctx->matmul_dtype;
    if (dt == VNM_DTYPE_F32) {
        vnm_node_reads(node, (1u << node->n_in) - 1);
        return true;
    }
    for (int i = 0; i < node->n_in; i++) {
        vnm_tensor *h = vnm_to_dtype(ctx, node->in[i], dt);
        if (!h) return false;
        vnm_node_own(node, i, h);
    }
    vnm_node_reads(node, 0);
    return true;
}

/* Input i as f32 for backward: the input itself, or its half copy widened into a temporary
 * (given back with input_done). */
static vnm_tensor *input_f32(vnm_ctx *ctx, vnm_node *node, int i)
{
    return node->saved[i] ? vnm_to_dtype(ctx, node->saved[i], VNM_DTYPE_F32) : node->in[i];
}

static void input_done(vnm_ctx *ctx, vnm_node *node, int i, vnm_tensor *t)
{
    if (t != node->in[i]) vnm_release(ctx, t);
}

static const char *const act_names[] = {"gelu", "gelu_tanh", "silu"};

/* iarg[0]: the vnm_act. A new gradient buffer is written by act_bwd_set where the backend has it,
 * rather than cleared and added into. */
static void act_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *x = node->in[0];
    const vnm_backend *be = ctx->be;
    float beta = 1.0f;
    vnm_tensor *dx = be->act_bwd_set ? vnm_grad_slot(ctx, x, &beta) : vnm_grad_buffer(ctx, x);
    vnm_tensor *xs = dx ? input_f32(ctx, node, 0) : NULL;
    if (!xs) return;
    (beta == 0.0f ? be->act_bwd_set : be->act_bwd)((vnm_act)node->iarg[0], VNM_F32(dx),
                                                   VNM_F32(xs), VNM_F32(node->out->grad),
                                                   vnm_numel(x));
    input_done(ctx, node, 0, xs);
}

static vnm_tensor *activation(vnm_ctx *ctx, vnm_act act, vnm_tensor *x)
{
    const char *op = act_names[act];
    if (!x) return NULL;
    if (!vnm_check_f32(ctx, op, x, "input") ||
        !vnm_check_kernel(ctx, op, ctx->be->act_fwd && ctx->be->act_bwd))
        return NULL;
    x = vnm_contiguous(ctx, x);
    if (!x) return NULL;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, x->shape); /* x's shape */
    if (!y) return NULL;
    ctx->be->act_fwd(act, VNM_F32(y), VNM_F32(x), vnm_numel(x));
    vnm_node *node = vnm_tape_record(ctx, op, act_backward, y, 1, &x);
    if (!save_inputs(ctx, node)) return NULL;
    if (node) node->iarg[0] = act;
    return y;
}

vnm_tensor *vnm_gelu(vnm_ctx *ctx, vnm_tensor *x) { return activation(ctx, VNM_ACT_GELU, x); }

vnm_tensor *vnm_gelu_tanh(vnm_ctx *ctx, vnm_tensor *x)
{
    return activation(ctx, VNM_ACT_GELU_TANH, x);
}

vnm_tensor *vnm_silu(vnm_ctx *ctx, vnm_tensor *x) { return activation(ctx, VNM_ACT_SILU, x); }

static void swiglu_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *dgate = vnm_grad_buffer(ctx, node->in[0]), *dup = vnm_grad_buffer(ctx, node->in[1]);
    if (!dgate && !dup) return;
    vnm_tensor *gate = input_f32(ctx, node, 0), *up = input_f32(ctx, node, 1);
    if (gate && up)
        ctx->be->swiglu_bwd(dgate ? VNM_F32(dgate) : NULL, dup ? VNM_F32(dup) : NULL,
                            VNM_F32(gate), VNM_F32(up), VNM_F32(node->out->grad),
                            vnm_numel(gate));
    if (gate) input_done(ctx, node, 0, gate);
    if (up) input_done(ctx, node, 1, up);
}

vnm_tensor *vnm_swiglu(vnm_ctx *ctx, vnm_tensor *gate, vnm_tensor *up)
{
    static const char *op = "swiglu";
    if (!gate || !up) return NULL;
    if (!vnm_check_f32(ctx, op, gate, "gate") || !vnm_check_f32(ctx, op, up, "up") ||
        !vnm_check_kernel(ctx, op, ctx->be->swiglu_fwd && ctx->be->swiglu_bwd))
        return NULL;
    if (!vnm_same_shape(gate, up)) {
        char s1[96], s2[96];
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "swiglu: gate %s and up %s must have the same shape",
                     vnm_shape_str(gate, s1, sizeof s1), vnm_shape_str(up, s2, sizeof s2));
        return NULL;
    }
    gate = vnm_contiguous(ctx, gate);
    up = vnm_contiguous(ctx, up);
    if (!gate || !up) return NULL;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, gate->ndim, gate->shape); /* gate's */
    if (!y) return NULL;
    ctx->be->swiglu_fwd(VNM_F32(y), VNM_F32(gate), VNM_F32(up), vnm_numel(y));
    vnm_tensor *in[2] = {gate, up};
    return save_inputs(ctx, vnm_tape_record(ctx, op, swiglu_backward, y, 2, in)) ? y : NULL;
}
