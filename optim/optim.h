/* optim/optim.h — the public interface of the optim module.
 *
 * Owns: the optimisers (SGD with momentum/dampening/Nesterov, AdamW) over parameter groups that
 * each carry their own weight decay and learning-rate scale; the timm rule that splits parameters
 * into a decay and a no-decay group; global gradient-norm clipping; learning-rate schedules as pure
 * functions of the step; and the optimiser state (per-parameter moments and step counts) exposed
 * for checkpoints and as a self-describing byte buffer.
 *
 * Conformance: an update is torch.optim.SGD / torch.optim.AdamW (foreach=False) on CPU, and
 * clipping is torch.nn.utils.clip_grad_norm_; tests/test_optim.c replays trajectories written by
 * tools/gen_optim_fixture.py. Differences from torch, on purpose:
 *   - vnm_optim_zero_grad zeroes gradient buffers (torch's set_to_none=False): a parameter whose
 *     gradient is zero is still updated (weight decay, momentum). Parameters whose gradient was
 *     never allocated are skipped, as torch skips p.grad is None.
 *   - the total gradient norm is summed in double (torch: an f32 reduction), so it can differ
 *     from torch's by an ulp, and so can the clip coefficient. Given the same coefficient, SGD
 *     steps are bit-identical to torch's FMA CPU kernels; AdamW's hyper-parameters reach the
 *     backend as f32 (0.999f is not 0.999), which leaves an ulp here and there.
 *
 * Memory: the optimiser itself is host memory freed by vnm_optim_destroy; its state tensors live in
 * the context's persistent arena and last as long as the context.
 *
 * Errors: functions taking a vnm_optim report through its context (vnm_ctx_error), naming the
 * function ("optim_add_group: ...").
 */
#ifndef VNM_OPTIM_H
#define VNM_OPTIM_H

#include "../autograd/autograd.h"

typedef enum { VNM_OPTIM_SGD, VNM_OPTIM_ADAMW } vnm_optim_kind;

typedef struct {
    vnm_optim_kind kind;
    double lr;           /* base learning rate; group g steps with lr · lr_scale[g] */
    double momentum;     /* SGD; 0 keeps no momentum buffer */
    double dampening;    /* SGD */
    bool nesterov;       /* SGD; needs momentum > 0 and dampening 0 */
    double beta1, beta2; /* AdamW */
    double eps;          /* AdamW */
    double weight_decay; /* the decay group's weight decay in vnm_optim_add_decay_groups */
} vnm_optim_config;

typedef struct vnm_optim vnm_optim;

/* torch's defaults for kind: SGD lr 1e-3, no momentum, no decay; AdamW lr 1e-3, betas
 * (0.9, 0.999), eps 1e-8, weight decay 1e-2. */
vnm_optim_config vnm_optim_config_default(vnm_optim_kind kind);
const char *vnm_optim_kind_name(vnm_optim_kind kind); /* "sgd", "adamw" */

/* NULL with a message on ctx when a hyper-parameter is out of range (torch's checks). */
vnm_optim *vnm_optim_create(vnm_ctx *ctx, const vnm_optim_config *cfg);
void vnm_optim_destroy(vnm_optim *opt);
vnm_ctx *vnm_optim_ctx(const vnm_optim *opt);

/* Adds a group of n parameters (f32, contiguous, requiring grad, not already in the optimiser) and
 * their zero-initialised state. Returns the group's index, or -1 with a message. */
int vnm_optim_add_group(vnm_optim *opt, vnm_tensor *const *params, int n, double weight_decay,
                        double lr_scale);

/* The decay rule: true (no weight decay) for tensors of at most one dim (biases, norm weights)
 * and for names matching one of the fnmatch globs. globs NULL means the defaults "*pos_embed",
 * "*cls_token", "*dist_token", "*embed_tokens.weight". An unnamed tensor is matched as "". */
bool vnm_optim_is_no_decay(const vnm_tensor *p, const char *const *globs, int n_globs);
/* timm's param_groups_weight_decay: adds group 0 (no decay, by the rule above) and group 1
 * (cfg.weight_decay), both with lr scale 1, in that order and even when one is empty. Parameters
 * that do not require grad are left out. */
vnm_status vnm_optim_add_decay_groups(vnm_optim *opt, vnm_tensor *const *params, int n,
                                      const char *const *globs, int n_globs);

void vnm_optim_set_lr(vnm_optim *opt, double lr); /* the base lr of the following steps */
double vnm_optim_lr(const vnm_optim *opt);

/* One update of every parameter that has a gradient buffer; counts a step. */
vnm_status vnm_optim_step(vnm_optim *opt);
void vnm_optim_zero_grad(vnm_optim *opt);
int64_t vnm_optim_steps(const vnm_optim *opt); /* vnm_optim_step calls so far (or as restored) */
void vnm_optim_set_steps(vnm_optim *opt, int64_t steps);

/* Global gradient-norm clipping, torch.nn.utils.clip_grad_norm_: the 2-norm of all gradients
 * together (parameters without a gradient buffer are skipped) is returned, and when
 * max_norm / (total + 1e-6) < 1 every gradient is scaled by it (computed in f32, as torch does).
 * Only norm_type 2 is supported. A total that is not finite in f32 is returned with the gradients
 * left as they are and an error (VNM_ERR_RUNTIME) set, so the caller can skip the step and clear
 * the error (vnm_ctx_clear_error).
 * NaN with a message on bad arguments. */
double vnm_clip_grad_norm(vnm_ctx *ctx, vnm_tensor *const *params, int n, double max_norm,
                          double norm_type);
double vnm_optim_clip_grad_norm(vnm_optim *opt, double max_norm); /* over all its parameters */

/* ---- state, for checkpoints: parameter i (in the order groups added them) has
 * vnm_optim_state_count() state tensors of its own shape and a step count (the number of updates
 * applied to it: SGD starts its momentum buffer at the gradient when it is 0, AdamW's bias
 * correction uses it). Write state tensors in place (vnm_tensor_from_host) to restore them. ---- */
int vnm_optim_num_params(const vnm_optim *opt);
vnm_tensor *vnm_optim_param(const vnm_optim *opt, int i);
int vnm_optim_param_group(const vnm_optim *opt, int i);
int vnm_optim_state_count(const vnm_optim *opt); /* SGD: 1 with momentum, else 0; AdamW: 2 */
const char *vnm_optim_state_name(const vnm_optim *opt, int k); /* "momentum_buffer"; "m", "v" */
vnm_tensor *vnm_optim_state(const vnm_optim *opt, int i, int k);
int64_t vnm_optim_param_steps(const vnm_optim *opt, int i);
void vnm_optim_set_param_steps(vnm_optim *opt, int i, int64_t steps);

/* The whole state as bytes (little-endian): "VNMOPTIM", u32 version (1), u32 kind, u32 params,
 * u32 states per param, i64 steps; then per parameter: u32 name length, the name, i64 step count,
 * u32 ndim, i64 shape[ndim], and each state tensor as f32[numel]. Hyper-parameters are not part of
 * it (a resumed run may change them). vnm_optim_load checks every name and shape before it changes
 * anything and fails on any difference. */
size_t vnm_optim_state_bytes(const vnm_optim *opt);
vnm_status vnm_optim_save(vnm_optim *opt, void *buf, size_t len);
vnm_status vnm_optim_load(vnm_optim *opt, const void *buf, size_t len);

/* ---- learning-rate schedules: lr(step) for step counted from 0 (the lr of the first update).
 * A linear warm-up from warmup_start_lr (step 0) towards base_lr (reached at warmup_steps), then:
 *   constant  base_lr
 *   cosine    min_lr + (base_lr - min_lr)·(1 + cos(π·t))/2, t = (step - warmup) / (total - warmup),
 *             and min_lr from total_steps on: timm's CosineLRScheduler with warmup_prefix=True,
 *             t_initial = total_steps - warmup_steps, lr_min = min_lr
 *   step      base_lr · gamma^floor((step - warmup) / step_size)
 *   linear    base_lr to min_lr linearly over [warmup, total], then min_lr ---- */
typedef enum {
    VNM_SCHEDULE_CONSTANT,
    VNM_SCHEDULE_COSINE,
    VNM_SCHEDULE_STEP,
    VNM_SCHEDULE_LINEAR,
} vnm_schedule_kind;

typedef struct {
    vnm_schedule_kind kind;
    double base_lr;
    int64_t warmup_steps; /* 0: no warm-up */
    double warmup_start_lr;
    int64_t total_steps; /* cosine, linear: warm-up included */
    double min_lr;       /* cosine, linear */
    int64_t step_size;   /* step */
    double gamma;        /* step */
} vnm_schedule;

double vnm_schedule_lr(const vnm_schedule *s, int64_t step);
/* "constant", "cosine", "step", "linear"; an unknown name is VNM_ERR_INPUT with a message listing
 * the known ones in err (when err is not NULL). */
vnm_status vnm_schedule_parse_kind(const char *name, vnm_schedule_kind *kind, char *err,
                                   size_t err_len);
const char *vnm_schedule_kind_name(vnm_schedule_kind kind);
/* VNM_ERR_INPUT with a message in err for values lr() cannot use: negative rates or steps, a
 * cosine/linear decay that ends before the warm-up does, a step schedule without step_size > 0. */
vnm_status vnm_schedule_validate(const vnm_schedule *s, char *err, size_t err_len);

#endif
