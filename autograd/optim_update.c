/* autograd/optim_update.c — the fused parameter updates optim/ builds on: argument checks, then one
 * backend kernel per tensor. No tape: these change parameters and optimiser state in place. */
#include <math.h>

#include "internal.h"

/* t is f32 and contiguous (the kernels see a flat array) and, when like is given, has its shape. */
static bool check_flat(vnm_ctx *ctx, const char *op, const vnm_tensor *t, const char *what,
                       const vnm_tensor *like)
{
    if (!t) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: %s is missing", op, what);
        return false;
    }
    if (!vnm_check_f32(ctx, op, t, what)) return false;
    char s[96], l[96];
    if (!vnm_is_contiguous(t)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: %s %s must be contiguous", op, what,
                     vnm_shape_str(t, s, sizeof s));
        return false;
    }
    if (like && !vnm_same_shape(t, like)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: %s has shape %s, expected the parameter's %s", op,
                     what, vnm_shape_str(t, s, sizeof s), vnm_shape_str(like, l, sizeof l));
        return false;
    }
    return true;
}

/* The parameter and its gradient, which must exist: updating from no gradient is a caller bug. */
static bool check_param(vnm_ctx *ctx, const char *op, const vnm_tensor *p)
{
    if (!check_flat(ctx, op, p, "parameter", NULL)) return false;
    if (!p->grad) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: parameter '%s' has no gradient", op,
                     p->name ? p->name : "(unnamed)");
        return false;
    }
    return check_flat(ctx, op, p->grad, "gradient", p);
}

double vnm_sum_squares(vnm_ctx *ctx, const vnm_tensor *x)
{
    if (!check_flat(ctx, "sum_squares", x, "input", NULL) ||
        !vnm_check_kernel(ctx, "sum_squares", ctx->be->sum_squares))
        return NAN;
    double out;
    ctx->be->sum_squares(&out, VNM_F32(x), vnm_numel(x));
    return out;
}

vnm_status vnm_sgd_update(vnm_ctx *ctx, vnm_tensor *p, vnm_tensor *buf, double lr,
                          double momentum, double dampening, double weight_decay, bool nesterov,
                          bool first_step)
{
    const char *op = "sgd_update";
    if (!check_param(ctx, op, p)) return ctx->status;
    if (momentum != 0.0 && !check_flat(ctx, op, buf, "momentum buffer", p)) return ctx->status;
    if (!vnm_check_kernel(ctx, op, ctx->be->sgd_step)) return ctx->status;
    ctx->be->sgd_step(VNM_F32(p), VNM_F32(p->grad), momentum != 0.0 ? VNM_F32(buf) : NULL,
                      vnm_numel(p), lr, momentum, dampening, weight_decay, nesterov, first_step);
    return VNM_OK;
}

vnm_status vnm_adamw_update(vnm_ctx *ctx, vnm_tensor *p, vnm_tensor *m, vnm_tensor *v, double lr,
                            double beta1, double beta2, double eps, double weight_decay,
                            int64_t step)
{
    const char *op = "adamw_update";
    if (!check_param(ctx, op, p) || !check_flat(ctx, op, m, "first moment m", p) ||
        !check_flat(ctx, op, v, "second moment v", p))
        return ctx->status;
    if (step < 1)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "adamw_update: step is %lld, counted from 1",
                            (long long)step);
    if (!vnm_check_kernel(ctx, op, ctx->be->adamw_step)) return ctx->status;
    ctx->be->adamw_step(VNM_F32(p), VNM_F32(p->grad), VNM_F32(m), VNM_F32(v), vnm_numel(p), lr,
                        beta1, beta2, eps, weight_decay, step);
    return VNM_OK;
}
