/* autograd/checkpoint.c — activation checkpointing (vnm_checkpoint): a segment of the forward pass
 * runs as usual, then the nodes it recorded are dropped from the tape and what their ops made is
 * given back, its output excepted, which one "checkpoint" node now produces. That node's backward
 * runs the segment again from its inputs with the state of the first run restored (RNG position,
 * so dropout draws the same masks; training flag; matmul dtype), back-propagates the output's
 * gradient through the nodes the re-run recorded (appended after the tape's end and dropped
 * again), and hands the gradients of the inputs on. Parameters inside the segment get theirs from
 * that inner backward, so the node is recorded when the output needs a gradient, even if none of
 * the inputs does (a LoRA adapter on a frozen base). */
#include "internal.h"

typedef struct {
    vnm_segment_fn fn;
    void *user;
    vnm_rng_state rng; /* at the start of the first run */
    bool training;
    vnm_dtype matmul_dtype;
} segment;

/* A leaf sharing t's storage, for the re-run: its gradient is t's part of the segment's. */
static vnm_tensor *alias(vnm_ctx *ctx, vnm_tensor *t)
{
    vnm_tensor *a = vnm_tensor_view(ctx, t, t->ndim, t->shape, t->strides, 0);
    if (a) a->requires_grad = t->requires_grad;
    return a;
}

static void checkpoint_backward(vnm_ctx *ctx, vnm_node *node)
{
    const segment *seg = node->extra;
    int n = node->n_in;
    vnm_tensor *xs[VNM_NODE_MAX_IN] = {NULL};
    for (int i = 0; i < n; i++)
        if (!(xs[i] = alias(ctx, node->in[i]))) return;
    vnm_rng_state rng = ctx->rng;
    bool training = ctx->training;
    vnm_dtype dt = ctx->matmul_dtype;
    ctx->rng = seg->rng;
    ctx->training = seg->training;
    ctx->matmul_dtype = seg->matmul_dtype;
    int64_t first = ctx->tape_len;
    vnm_tensor *y = seg->fn(ctx, xs, n, seg->user);
    ctx->rng = rng;
    ctx->training = training;
    ctx->matmul_dtype = dt;
    if (y && !vnm_same_shape(y, node->out))
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "checkpoint: the segment's re-run gave another shape");
    if (y && y->node && ctx->status == VNM_OK) {
        vnm_grad_take(ctx, y, node->out->grad);
        vnm_tape_run(ctx, first, ctx->tape_len - 1, y);
    }
    vnm_tape_drop(ctx, first, NULL);
    for (int i = 0; i < n; i++) {
        if (xs[i]->grad) vnm_grad_take(ctx, node->in[i], xs[i]->grad);
        vnm_release(ctx, xs[i]->grad);
        vnm_release(ctx, xs[i]);
    }
}

static bool inputs_ok(vnm_ctx *ctx, const char *op, int n_in, vnm_tensor *const *in)
{
    if (n_in < 1 || n_in > VNM_NODE_MAX_IN) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: 1 to %d inputs, got %d", op, VNM_NODE_MAX_IN,
                     n_in);
        return false;
    }
    for (int i = 0; i < n_in; i++)
        if (!in[i]) return false;
    return true;
}

vnm_tensor *vnm_segment(vnm_ctx *ctx, vnm_segment_fn fn, void *user, int n_in,
                        vnm_tensor *const *in)
{
    if (!inputs_ok(ctx, "segment", n_in, in)) return NULL;
    /* without grad nothing is read later: all but the output can go */
    bool give_back = !ctx->grad_enabled || ctx->free_in_backward;
    vnm_tensor *mark = ctx->last_made;
    int64_t first = ctx->tape_len;
    vnm_tensor *y = fn(ctx, in, n_in, user);
    if (y && give_back) vnm_release_made_since(ctx, mark, first, y);
    return y;
}

vnm_tensor *vnm_checkpoint(vnm_ctx *ctx, vnm_segment_fn fn, void *user, int n_in,
                           vnm_tensor *const *in)
{
    if (!inputs_ok(ctx, "checkpoint", n_in, in)) return NULL;
    if (!ctx->grad_enabled || ctx->linear_hook) /* calibration must see one run */
        return vnm_segment(ctx, fn, user, n_in, in);
    segment *seg = vnm_step_meta_alloc(ctx, sizeof *seg);
    if (!seg) return NULL;
    *seg = (segment){fn, user, ctx->rng, ctx->training, ctx->matmul_dtype};
    int64_t first = ctx->tape_len;
    vnm_tensor *y = fn(ctx, in, n_in, user);
    /* a segment that recorded nothing, or handed an input back, has nothing to drop */
    bool made = y && ctx->tape_len > first && y->node && y->born >= first;
    if (!made || !y->requires_grad) {
        if (made) vnm_tape_drop(ctx, first, y);
        return y;
    }
    vnm_tape_drop(ctx, first, y);
    y->node = NULL;
    y->born = ctx->tape_len; /* the checkpoint node's own output from now on */
    vnm_node *node = vnm_tape_push(ctx, "checkpoint", checkpoint_backward, y, n_in, in);
    if (!node) return NULL;
    node->extra = seg;
    vnm_node_reads(node, (1u << n_in) - 1); /* the inputs, to run the segment again */
    return y;
}
