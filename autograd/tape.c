/* autograd/tape.c — the Wengert list. Ops append nodes in execution order, so walking the list
 * backwards visits every node after all of its consumers; each node's backward adds into the
 * gradient buffers of its inputs. A step allows one backward; vnm_ctx_reset_step clears the tape.
 *
 * Release during backward (vnm_ctx_set_free_in_backward): once node j's backward has run, nothing
 * left to run reads what node j's op made — its output, the output's gradient, the tensors it owns
 * (vnm_node_own) — because every other reader was recorded after it and has run. Those headers
 * are released: each storage counts the headers using it (its own and its views, gradients handed
 * on by vnm_grad_take included) and goes back to the step arena when the count reaches zero. An
 * output is node j's only when its header was made in node j's window (born == j), which leaves
 * out tensors a caller made and an op merely passed on. Outputs no backward reads (each node
 * declares what it reads, vnm_node_reads; saved tensors always count as read) are released as
 * backward starts: only their shapes are used from then on. */
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

vnm_node *vnm_tape_record(vnm_ctx *ctx, const char *op, vnm_backward_fn fn, vnm_tensor *out,
                          int n_in, vnm_tensor *const *in)
{
    if (ctx->profile) vnm_profile_mark(ctx, op);
    if (!ctx->grad_enabled) return NULL;
    bool needed = false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) needed = true;
    return needed ? vnm_tape_push(ctx, op, fn, out, n_in, in) : NULL;
}

vnm_node *vnm_tape_push(vnm_ctx *ctx, const char *op, vnm_backward_fn fn, vnm_tensor *out,
                        int n_in, vnm_tensor *const *in)
{
    if (ctx->tape_len == ctx->tape_cap) {
        int64_t cap = ctx->tape_cap ? ctx->tape_cap * 2 : 256;
        vnm_node **t = realloc(ctx->tape, (size_t)cap * sizeof *t);
        if (!t) {
            vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of memory growing the tape");
            return NULL;
        }
        ctx->tape = t;
        ctx->tape_cap = cap;
    }
    vnm_node *node = vnm_step_meta_alloc(ctx, sizeof *node);
    if (!node) return NULL;
    node->op = op;
    node->backward = fn;
    node->out = out;
    node->n_in = n_in;
    for (int i = 0; i < n_in; i++) node->in[i] = in[i];
    out->requires_grad = true;
    out->node = node;
    ctx->tape[ctx->tape_len++] = node;
    return node;
}

vnm_tensor *vnm_grad_buffer(vnm_ctx *ctx, vnm_tensor *t)
{
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) t->grad = vnm_tensor_alloc(ctx, VNM_DTYPE_F32, t->ndim, t->shape, t->persistent);
    return t->grad;
}

vnm_tensor *vnm_grad_slot(vnm_ctx *ctx, vnm_tensor *t, float *beta)
{
    *beta = 1.0f;
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad && !t->persistent) {
        t->grad = vnm_tensor_empty(ctx, VNM_DTYPE_F32, t->ndim, t->shape);
        *beta = 0.0f;
        return t->grad;
    }
    return vnm_grad_buffer(ctx, t);
}

void vnm_grad_accumulate(vnm_ctx *ctx, vnm_tensor *t, const vnm_tensor *g)
{
    vnm_tensor *buf = vnm_grad_buffer(ctx, t);
    if (buf) ctx->be->axpy(VNM_F32(buf), VNM_F32(g), 1.0f, vnm_numel(buf));
}

void vnm_grad_take(vnm_ctx *ctx, vnm_tensor *t, vnm_tensor *g)
{
    if (!t || !t->requires_grad) return;
    if (!t->grad && !t->persistent && !g->persistent && vnm_is_contiguous(g) &&
        vnm_numel(g) == vnm_numel(t)) {
        int64_t strides[VNM_MAX_DIMS];
        vnm_contiguous_strides(t->ndim, t->shape, strides);
        t->grad = vnm_tensor_view(ctx, g, t->ndim, t->shape, strides, 0);
        return;
    }
    vnm_grad_accumulate(ctx, t, g);
}

void vnm_zero_grad(vnm_ctx *ctx, vnm_tensor *const *params, int n)
{
    for (int i = 0; i < n; i++)
        if (params[i] && params[i]->grad)
            ctx->be->memset0(params[i]->grad->data, (size_t)vnm_numel(params[i]->grad) * 4);
}

void vnm_node_reads(vnm_node *node, unsigned what)
{
    if (!node) return;
    node->reads = what;
    node->reads_declared = true;
}

void vnm_node_own(vnm_node *node, int i, vnm_tensor *t)
{
    node->saved[i] = t;
    if (t) node->own_saved |= 1u << i;
}

/* Drops t's hold on its storage; the last holder gives the storage back to the step arena. */
static void release(vnm_ctx *ctx, vnm_tensor *t)
{
    if (!t || t->persistent || t->released) return;
    t->released = true;
    vnm_tensor *owner = t->base ? t->base : t;
    if (owner->persistent || --owner->holders != 0) return;
    /* given back once: a view made of the storage afterwards (for its shape) cannot bring the
     * count back to zero */
    owner->holders = INT32_MIN / 2;
    vnm_arena_free(&ctx->step_data, owner->data,
                   (size_t)vnm_numel(owner) * vnm_dtype_size(owner->dtype));
}

void vnm_release(vnm_ctx *ctx, vnm_tensor *t) { release(ctx, t); }

/* After node j's backward: what its op made for it (see the top of the file). `start` is the
 * tensor backward started from, which the caller may still read. */
static void release_node(vnm_ctx *ctx, vnm_node *node, int64_t j, const vnm_tensor *start)
{
    for (int k = 0; k < VNM_NODE_MAX_SAVED; k++)
        if (node->own_saved & (1u << k)) release(ctx, node->saved[k]);
    if (node->out->born != j || node->out == start) return;
    release(ctx, node->out->grad);
    release(ctx, node->out);
}

static bool reads(const vnm_node *node, unsigned what)
{
    return !node->reads_declared || (node->reads & what);
}

/* Flags what the backward of nodes first..last reads. */
static void mark_read(vnm_ctx *ctx, int64_t first, int64_t last)
{
    for (int64_t i = first; i <= last; i++) {
        vnm_node *node = ctx->tape[i];
        for (int k = 0; k < node->n_in; k++)
            if (node->in[k] && reads(node, VNM_READS_IN(k))) node->in[k]->read_in_backward = true;
        for (int k = 0; k < VNM_NODE_MAX_SAVED; k++)
            if (node->saved[k]) node->saved[k]->read_in_backward = true;
        if (reads(node, VNM_READS_OUT)) node->out->read_in_backward = true;
    }
}

void vnm_release_made_since(vnm_ctx *ctx, const vnm_tensor *mark, int64_t first,
                            const vnm_tensor *keep)
{
    mark_read(ctx, first, ctx->tape_len - 1);
    for (vnm_tensor *t = ctx->last_made; t && t != mark; t = t->prev_made)
        if (t != keep && !t->read_in_backward) release(ctx, t);
}

/* As backward starts: the outputs of nodes first..last that no backward reads (their gradients
 * are made and released later, by the nodes themselves). */
static void release_unread(vnm_ctx *ctx, int64_t first, int64_t last, const vnm_tensor *start)
{
    mark_read(ctx, first, last);
    for (int64_t i = first; i <= last; i++) {
        vnm_tensor *o = ctx->tape[i]->out;
        if (o->born == i && o != start && !o->read_in_backward) release(ctx, o);
    }
}

vnm_status vnm_tape_run(vnm_ctx *ctx, int64_t first, int64_t last, const vnm_tensor *start)
{
    if (ctx->free_in_backward) release_unread(ctx, first, last, start);
    /* ctx->tape is read afresh each time: a node's backward may record (and drop) nodes */
    for (int64_t i = last; i >= first && ctx->status == VNM_OK; i--) {
        vnm_node *node = ctx->tape[i];
        if (node->out->grad) {
            if (ctx->profile)
                vnm_profile_backward(ctx, node);
            else
                node->backward(ctx, node);
        }
        if (ctx->free_in_backward) release_node(ctx, node, i, start);
    }
    return ctx->status;
}

void vnm_tape_drop(vnm_ctx *ctx, int64_t first, const vnm_tensor *keep)
{
    for (int64_t j = first; j < ctx->tape_len; j++) release_node(ctx, ctx->tape[j], j, keep);
    ctx->tape_len = first;
}

static vnm_status run_backward(vnm_ctx *ctx, vnm_tensor *out)
{
    int64_t last = ctx->tape_len - 1;
    while (last >= 0 && ctx->tape[last] != out->node) last--;
    return vnm_tape_run(ctx, 0, last, out);
}

static bool backward_ok(vnm_ctx *ctx, const vnm_tensor *out)
{
    if (!out) return false;
    if (!out->requires_grad) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "backward: the tensor does not require grad (no parameter reaches it, or "
                     "it was computed with grad disabled)");
        return false;
    }
    if (out->dtype != VNM_DTYPE_F32) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "backward: start tensor must be f32, got %s",
                     vnm_dtype_name(out->dtype));
        return false;
    }
    return true;
}

vnm_status vnm_backward(vnm_ctx *ctx, vnm_tensor *loss)
{
    if (!backward_ok(ctx, loss)) return ctx->status ? ctx->status : VNM_ERR_INPUT;
    if (vnm_numel(loss) != 1) {
        char s[96];
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                            "backward: loss must have one element, got %s (use "
                            "vnm_backward_seed for other shapes)",
                            vnm_shape_str(loss, s, sizeof s));
    }
    vnm_tensor *g = vnm_grad_buffer(ctx, loss);
    if (!g) return ctx->status;
    ctx->be->fill(VNM_F32(g), 1, 1.0f);
    return run_backward(ctx, loss);
}

vnm_status vnm_backward_seed(vnm_ctx *ctx, vnm_tensor *out, vnm_tensor *seed)
{
    if (!backward_ok(ctx, out) || !seed) return ctx->status ? ctx->status : VNM_ERR_INPUT;
    if (!vnm_same_shape(out, seed) || seed->dtype != VNM_DTYPE_F32 || !vnm_is_contiguous(seed)) {
        char a[96], b[96];
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                            "backward: seed %s must be contiguous f32 of the output's shape %s",
                            vnm_shape_str(seed, b, sizeof b), vnm_shape_str(out, a, sizeof a));
    }
    vnm_grad_accumulate(ctx, out, seed);
    return run_backward(ctx, out);
}
