/* autograd/op_loss.c — losses reduced to a mean of shape [1]: cross-entropy with hard labels
 * (ignore_index, label smoothing) or soft targets, matching torch.nn.functional.cross_entropy with
 * reduction='mean', and mean squared error. The cross-entropy kernel saves the softmax of the
 * logits, from which backward gets d/dlogits without recomputing the log-sum-exp. Labels and soft
 * targets are constants: no gradient flows to them (mixup/cutmix targets are built from labels).
 *
 * When every row is ignored (or N = 0) PyTorch returns NaN (0/0). Here the loss is 0 and the
 * gradient 0 instead: a batch whose tokens are all padding then contributes nothing to training
 * rather than turning every parameter into NaN through the optimiser. */
#include <stdlib.h>

#include "internal.h"

/* saved[0]: prob [N, C]; saved[1]: labels [N] or targets [N, C];
 * iarg: N, C, ignore_index, counted rows, labels are i64, soft targets; farg[0]: smoothing */
static void cross_entropy_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *dx = vnm_grad_buffer(ctx, node->in[0]); /* [N, C] */
    int64_t count = node->iarg[3];
    if (!dx || count == 0) return; /* no counted row: the loss is the constant 0 */
    bool soft = node->iarg[5] != 0;
    vnm_tensor *lab = node->saved[1];
    float g = vnm_item(ctx, node->out->grad) / (float)count;
    ctx->be->cross_entropy_bwd(VNM_F32(dx), VNM_F32(node->saved[0]), soft ? NULL : lab->data,
                               node->iarg[4] != 0, soft ? VNM_F32(lab) : NULL, node->iarg[0],
                               node->iarg[1], node->iarg[2], node->farg[0], g);
}

static bool check_logits(vnm_ctx *ctx, const char *op, const vnm_tensor *logits)
{
    if (!vnm_check_f32(ctx, op, logits, "logits") ||
        !vnm_check_ndim(ctx, op, logits, "logits [N, C]", 2, 2))
        return false;
    if (logits->shape[1] < 1) {
        char s[96];
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: logits %s have no classes (C = 0)", op,
                     vnm_shape_str(logits, s, sizeof s));
        return false;
    }
    return true;
}

/* Exactly one of labels [N] (i32/i64, checked) and targets [N, C] (f32) is given. */
static vnm_tensor *cross_entropy(vnm_ctx *ctx, const char *op, vnm_tensor *logits,
                                 vnm_tensor *labels, vnm_tensor *targets, int64_t ignore_index,
                                 float smoothing)
{
    if (!vnm_check_kernel(ctx, op, ctx->be->cross_entropy_fwd && ctx->be->cross_entropy_bwd))
        return NULL;
    logits = vnm_contiguous(ctx, logits);
    if (targets) targets = vnm_contiguous(ctx, targets);
    if (!logits || (!labels && !targets)) return NULL;
    int64_t N = logits->shape[0], C = logits->shape[1];
    vnm_tensor *loss = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(1));      /* [1] */
    vnm_tensor *prob = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 2, logits->shape); /* [N, C] */
    if (!loss || !prob) return NULL;
    bool labels64 = labels && labels->dtype == VNM_DTYPE_I64;
    int64_t count = 0; /* a host value: backward divides d(loss) by it */
    ctx->be->cross_entropy_fwd(VNM_F32(loss), VNM_F32(prob), &count, VNM_F32(logits),
                               labels ? labels->data : NULL, labels64,
                               targets ? VNM_F32(targets) : NULL, N, C, ignore_index, smoothing);
    vnm_node *node = vnm_tape_record(ctx, op, cross_entropy_backward, loss, 1, &logits);
    vnm_node_reads(node, 0); /* the saved softmax and labels */
    if (node) {
        vnm_node_own(node, 0, prob);
        node->saved[1] = labels ? labels : targets;
        node->iarg[0] = N;
        node->iarg[1] = C;
        node->iarg[2] = ignore_index;
        node->iarg[3] = count;
        node->iarg[4] = labels64;
        node->iarg[5] = targets != NULL;
        node->farg[0] = smoothing;
    }
    return loss;
}

/* Labels are read on the host so that a bad one is reported by row instead of reading outside
 * the logits row in a kernel. */
static bool check_labels(vnm_ctx *ctx, const vnm_tensor *labels, int64_t C, int64_t ignore_index)
{
    int64_t N = labels->shape[0];
    bool is64 = labels->dtype == VNM_DTYPE_I64;
    void *host = malloc((size_t)N * vnm_dtype_size(labels->dtype) + 1);
    if (!host) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "cross_entropy: out of host memory for %lld labels",
                     (long long)N);
        return false;
    }
    bool ok = vnm_tensor_to_host(ctx, labels, host) == VNM_OK;
    for (int64_t i = 0; ok && i < N; i++) {
        int64_t y = is64 ? ((const int64_t *)host)[i] : ((const int32_t *)host)[i];
        if (y != ignore_index && (y < 0 || y >= C)) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                         "cross_entropy: label %lld at row %lld is out of range [0, %lld) and is "
                         "not ignore_index (%lld)",
                         (long long)y, (long long)i, (long long)C, (long long)ignore_index);
            ok = false;
        }
    }
    free(host);
    return ok;
}

vnm_tensor *vnm_cross_entropy(vnm_ctx *ctx, vnm_tensor *logits, vnm_tensor *labels,
                              int64_t ignore_index, float label_smoothing)
{
    static const char *op = "cross_entropy";
    if (!logits || !labels) return NULL;
    if (!check_logits(ctx, op, logits)) return NULL;
    char s1[96], s2[96];
    if ((labels->dtype != VNM_DTYPE_I32 && labels->dtype != VNM_DTYPE_I64) || labels->ndim != 1 ||
        labels->shape[0] != logits->shape[0]) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "cross_entropy: labels %s must be i32 or i64 of shape [%lld] for logits %s",
                     vnm_shape_str(labels, s1, sizeof s1), (long long)logits->shape[0],
                     vnm_shape_str(logits, s2, sizeof s2));
        return NULL;
    }
    if (!vnm_is_contiguous(labels)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "cross_entropy: labels %s must be contiguous",
                     vnm_shape_str(labels, s1, sizeof s1));
        return NULL;
    }
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "cross_entropy: label_smoothing must be in [0, 1], got %g",
                     (double)label_smoothing);
        return NULL;
    }
    if (!check_labels(ctx, labels, logits->shape[1], ignore_index)) return NULL;
    return cross_entropy(ctx, op, logits, labels, NULL, ignore_index, label_smoothing);
}

vnm_tensor *vnm_cross_entropy_soft(vnm_ctx *ctx, vnm_tensor *logits, vnm_tensor *targets)
{
    static const char *op = "cross_entropy_soft";
    if (!logits || !targets) return NULL;
    if (!check_logits(ctx, op, logits) || !vnm_check_f32(ctx, op, targets, "targets"))
        return NULL;
    if (!vnm_same_shape(logits, targets)) {
        char s1[96], s2[96];
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "cross_entropy_soft: targets %s must have the shape of logits %s",
                     vnm_shape_str(targets, s1, sizeof s1), vnm_shape_str(logits, s2, sizeof s2));
        return NULL;
    }
    /* with soft targets every row counts: ignore_index and smoothing do not apply */
    return cross_entropy(ctx, op, logits, NULL, targets, 0, 0.0f);
}

vnm_tensor *vnm_mse(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b)
{
    static const char *op = "mse";
    if (!a || !b) return NULL;
    if (!vnm_check_f32(ctx, op, a, "a") || !vnm_check_f32(ctx, op, b, "b")) return NULL;
    if (!vnm_same_shape(a, b)) {
        char s1[96], s2[96];
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "mse: shapes %s and %s must be equal (no broadcasting)",
                     vnm_shape_str(a, s1, sizeof s1), vnm_shape_str(b, s2, sizeof s2));
        return NULL;
    }
    vnm_tensor *d = vnm_sub(ctx, a, b); /* a's shape */
    return vnm_mean(ctx, vnm_mul(ctx, d, d), VNM_ALL_DIMS, false);
}
