/* optim/optim.c — optimisers: configuration checks, parameter groups and the decay rule, the step
 * (one fused update per parameter through autograd's vnm_sgd_update / vnm_adamw_update), and
 * global gradient-norm clipping. */
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>

#include "internal.h"

vnm_optim_config vnm_optim_config_default(vnm_optim_kind kind)
{
    return (vnm_optim_config){.kind = kind, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
                              .eps = 1e-8, .weight_decay = kind == VNM_OPTIM_ADAMW ? 1e-2 : 0.0};
}

const char *vnm_optim_kind_name(vnm_optim_kind kind)
{
    return kind == VNM_OPTIM_SGD ? "sgd" : kind == VNM_OPTIM_ADAMW ? "adamw" : "unknown";
}

/* torch's constructor checks; `!(x >= 0)` also rejects NaN. */
static bool config_ok(vnm_ctx *ctx, const vnm_optim_config *c)
{
    const char *op = "optim_create";
    if (c->kind != VNM_OPTIM_SGD && c->kind != VNM_OPTIM_ADAMW) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: unknown optimiser kind %d", op, (int)c->kind);
        return false;
    }
    const struct {
        const char *what;
        double value;
        bool applies;
    } nonneg[] = {
        {"learning rate", c->lr, true},
        {"weight_decay", c->weight_decay, true},
        {"momentum", c->momentum, c->kind == VNM_OPTIM_SGD},
        {"epsilon", c->eps, c->kind == VNM_OPTIM_ADAMW},
    };
    for (size_t i = 0; i < sizeof nonneg / sizeof *nonneg; i++) {
        if (nonneg[i].applies && !(nonneg[i].value >= 0.0)) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: invalid %s %g, expected >= 0", op,
                         nonneg[i].what, nonneg[i].value);
            return false;
        }
    }
    if (c->kind == VNM_OPTIM_SGD && c->nesterov && (c->momentum <= 0.0 || c->dampening != 0.0)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "%s: Nesterov momentum requires a momentum and zero dampening (got momentum "
                     "%g, dampening %g)", op, c->momentum, c->dampening);
        return false;
    }
    if (c->kind == VNM_OPTIM_ADAMW && (!(c->beta1 >= 0.0 && c->beta1 < 1.0) ||
                                       !(c->beta2 >= 0.0 && c->beta2 < 1.0))) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: invalid betas (%g, %g), each must be in [0, 1)", op,
                     c->beta1, c->beta2);
        return false;
    }
    return true;
}

vnm_optim *vnm_optim_create(vnm_ctx *ctx, const vnm_optim_config *cfg)
{
    if (!config_ok(ctx, cfg)) return NULL;
    vnm_optim *opt = calloc(1, sizeof *opt);
    if (!opt) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "optim_create: out of host memory");
        return NULL;
    }
    opt->ctx = ctx;
    opt->cfg = *cfg;
    opt->n_state = cfg->kind == VNM_OPTIM_ADAMW ? 2 : cfg->momentum != 0.0 ? 1 : 0;
    return opt;
}

void vnm_optim_destroy(vnm_optim *opt)
{
    if (!opt) return;
    free(opt->slots);
    free(opt->groups);
    free(opt);
}

vnm_ctx *vnm_optim_ctx(const vnm_optim *opt) { return opt->ctx; }

static bool contains(vnm_tensor *const *list, int n, const vnm_tensor *t)
{
    for (int i = 0; i < n; i++)
        if (list[i] == t) return true;
    return false;
}

static bool already_added(const vnm_optim *opt, const vnm_tensor *t)
{
    for (int i = 0; i < opt->n_params; i++)
        if (opt->slots[i].param == t) return true;
    return false;
}

/* Every check before anything changes, so a failed add leaves the optimiser as it was. */
static bool group_ok(vnm_optim *opt, vnm_tensor *const *params, int n, double weight_decay,
                     double lr_scale)
{
    const char *op = "optim_add_group";
    vnm_ctx *ctx = opt->ctx;
    if (n < 0 || (n > 0 && !params)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: bad parameter list (n = %d, params %s)", op, n,
                     params ? "given" : "NULL");
        return false;
    }
    if (!(weight_decay >= 0.0) || !(lr_scale >= 0.0)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "%s: weight_decay %g and lr_scale %g must both be >= 0", op, weight_decay,
                     lr_scale);
        return false;
    }
    for (int i = 0; i < n; i++) {
        const vnm_tensor *p = params[i];
        if (!p) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: parameter %d is NULL", op, i);
            return false;
        }
        const char *name = p->name ? p->name : "(unnamed)";
        char s[96];
        if (p->dtype != VNM_DTYPE_F32 || !vnm_is_contiguous(p) || !p->requires_grad) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                         "%s: parameter %d '%s' %s must be a contiguous f32 tensor that requires "
                         "grad", op, i, name, vnm_shape_str(p, s, sizeof s));
            return false;
        }
        if (already_added(opt, p) || contains(params, i, p)) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                         "%s: parameter %d '%s' appears in more than one parameter group", op, i,
                         name);
            return false;
        }
    }
    return true;
}

static bool reserve(vnm_optim *opt, int more_params)
{
    if (opt->n_groups == opt->cap_groups) {
        int cap = opt->cap_groups ? 2 * opt->cap_groups : 4;
        vnm_optim_group *g = realloc(opt->groups, (size_t)cap * sizeof *g);
        if (!g) return false;
        opt->groups = g;
        opt->cap_groups = cap;
    }
    if (opt->n_params + more_params > opt->cap_params) {
        int cap = opt->cap_params ? 2 * opt->cap_params : 16;
        while (cap < opt->n_params + more_params) cap *= 2;
        vnm_optim_slot *s = realloc(opt->slots, (size_t)cap * sizeof *s);
        if (!s) return false;
        opt->slots = s;
        opt->cap_params = cap;
    }
    return true;
}

int vnm_optim_add_group(vnm_optim *opt, vnm_tensor *const *params, int n, double weight_decay,
                        double lr_scale)
{
    vnm_ctx *ctx = opt->ctx;
    if (!group_ok(opt, params, n, weight_decay, lr_scale)) return -1;
    if (!reserve(opt, n)) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "optim_add_group: out of host memory");
        return -1;
    }
    int group = opt->n_groups;
    for (int i = 0; i < n; i++) {
        vnm_optim_slot *slot = &opt->slots[opt->n_params + i];
        *slot = (vnm_optim_slot){.param = params[i], .group = group};
        for (int k = 0; k < opt->n_state; k++) {
            slot->state[k] = vnm_buffer_new(ctx, VNM_DTYPE_F32, params[i]->ndim,
                                            params[i]->shape, NULL);
            if (!slot->state[k]) return -1;
        }
    }
    opt->n_params += n;
    opt->groups[opt->n_groups++] = (vnm_optim_group){weight_decay, lr_scale};
    return group;
}

static const char *const default_no_decay_globs[] = {
    "*pos_embed", "*cls_token", "*dist_token", "*embed_tokens.weight",
};

bool vnm_optim_is_no_decay(const vnm_tensor *p, const char *const *globs, int n_globs)
{
    if (p->ndim <= 1) return true;
    if (!globs) {
        globs = default_no_decay_globs;
        n_globs = (int)(sizeof default_no_decay_globs / sizeof *default_no_decay_globs);
    }
    const char *name = p->name ? p->name : "";
    for (int i = 0; i < n_globs; i++)
        if (fnmatch(globs[i], name, 0) == 0) return true;
    return false;
}

vnm_status vnm_optim_add_decay_groups(vnm_optim *opt, vnm_tensor *const *params, int n,
                                      const char *const *globs, int n_globs)
{
    vnm_ctx *ctx = opt->ctx;
    if (n < 0 || (n > 0 && !params))
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                            "optim_add_decay_groups: bad parameter list (n = %d, params %s)", n,
                            params ? "given" : "NULL");
    for (int i = 0; i < n; i++)
        if (!params[i])
            return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "optim_add_decay_groups: parameter %d is NULL",
                                i);
    vnm_tensor **split = malloc((size_t)(n > 0 ? n : 1) * sizeof *split); /* no decay | decay */
    if (!split) return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "optim_add_decay_groups: out of memory");
    int n_no = 0, n_yes = 0;
    for (int i = 0; i < n; i++)
        if (params[i]->requires_grad && vnm_optim_is_no_decay(params[i], globs, n_globs))
            split[n_no++] = params[i];
    for (int i = 0; i < n; i++)
        if (params[i]->requires_grad && !vnm_optim_is_no_decay(params[i], globs, n_globs))
            split[n_no + n_yes++] = params[i];
    bool ok = vnm_optim_add_group(opt, split, n_no, 0.0, 1.0) >= 0 &&
              vnm_optim_add_group(opt, split + n_no, n_yes, opt->cfg.weight_decay, 1.0) >= 0;
    free(split);
    return ok ? VNM_OK : vnm_ctx_status(ctx);
}

void vnm_optim_set_lr(vnm_optim *opt, double lr) { opt->cfg.lr = lr; }
double vnm_optim_lr(const vnm_optim *opt) { return opt->cfg.lr; }
int64_t vnm_optim_steps(const vnm_optim *opt) { return opt->steps; }
void vnm_optim_set_steps(vnm_optim *opt, int64_t steps) { opt->steps = steps; }

vnm_status vnm_optim_step(vnm_optim *opt)
{
    const vnm_optim_config *c = &opt->cfg;
    for (int i = 0; i < opt->n_params; i++) {
        vnm_optim_slot *s = &opt->slots[i];
        if (!s->param->grad) continue;
        const vnm_optim_group *g = &opt->groups[s->group];
        double lr = c->lr * g->lr_scale;
        vnm_status st =
            c->kind == VNM_OPTIM_SGD
                ? vnm_sgd_update(opt->ctx, s->param, s->state[0], lr, c->momentum, c->dampening,
                                 g->weight_decay, c->nesterov, s->steps == 0)
                : vnm_adamw_update(opt->ctx, s->param, s->state[0], s->state[1], lr, c->beta1,
                                   c->beta2, c->eps, g->weight_decay, s->steps + 1);
        if (st != VNM_OK) return st;
        s->steps++;
    }
    opt->steps++;
    return VNM_OK;
}

void vnm_optim_zero_grad(vnm_optim *opt)
{
    for (int i = 0; i < opt->n_params; i++) vnm_zero_grad(opt->ctx, &opt->slots[i].param, 1);
}

double vnm_clip_grad_norm(vnm_ctx *ctx, vnm_tensor *const *params, int n, double max_norm,
                          double norm_type)
{
    const char *op = "clip_grad_norm";
    if (!(max_norm > 0.0) || isinf(max_norm)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: max_norm must be positive and finite, got %g", op,
                     max_norm);
        return NAN;
    }
    if (norm_type != 2.0) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: only norm_type 2 is supported, got %g", op,
                     norm_type);
        return NAN;
    }
    if (n < 0 || (n > 0 && !params)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: bad parameter list (n = %d, params %s)", op, n,
                     params ? "given" : "NULL");
        return NAN;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        if (!params[i]) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: parameter %d is NULL", op, i);
            return NAN;
        }
        if (!params[i]->grad) continue;
        double s = vnm_sum_squares(ctx, params[i]->grad);
        if (isnan(s) && vnm_ctx_status(ctx) != VNM_OK) return NAN; /* a failed check, not data */
        sum += s;
    }
    double total = sqrt(sum);
    /* torch's f32 norm overflows to inf where the double one would still be finite */
    if (!isfinite((float)total)) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME,
                     "%s: the total gradient norm is %g; the gradients were left unscaled", op,
                     total);
        return total;
    }
    /* torch: clamp(max_norm / (total + 1e-6), max=1) on an f32 tensor, where a / t is computed as
     * t.reciprocal() * a. */
    float coef = (1.0f / ((float)total + 1e-6f)) * (float)max_norm;
    if (coef < 1.0f)
        for (int i = 0; i < n; i++)
            if (params[i]->grad && vnm_scale_inplace(ctx, params[i]->grad, coef) != VNM_OK)
                return NAN;
    return total;
}

double vnm_optim_clip_grad_norm(vnm_optim *opt, double max_norm)
{
    vnm_tensor **params = malloc((size_t)(opt->n_params > 0 ? opt->n_params : 1) * sizeof *params);
    if (!params) {
        vnm_ctx_fail(opt->ctx, VNM_ERR_RUNTIME, "clip_grad_norm: out of host memory");
        return NAN;
    }
    for (int i = 0; i < opt->n_params; i++) params[i] = opt->slots[i].param;
    double total = vnm_clip_grad_norm(opt->ctx, params, opt->n_params, max_norm, 2.0);
    free(params);
    return total;
}
