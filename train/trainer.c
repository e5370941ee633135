/* train/trainer.c — the training loop behind `vnm train` and `vnm resume` (see trainer.h),
 * independent of the model family: run set-up from a recipe, the step plan and lr schedules, the
 * stages, backward, clipping and the optimiser, evaluation records, logging to the console,
 * log.txt and metrics.jsonl, checkpoints and resume, and the read-only restore (resume without a
 * run directory or optimiser) behind `vnm eval` and `vnm export`. What is specific to a model
 * family (data, model, forward, pruning, its checkpoint entries) is its task (train/task.h),
 * picked from model.arch.
 *
 * Optimiser hand-over when the task's parameter list changes (a prune, the end of an SR-STE
 * stage): the optimiser is rebuilt over the new list. Parameters that stay keep their moments and
 * step counts; new ones (the compressed vals of a pruned layer) start with zero moments (dense
 * moments are not carried into the compressed layout, as a one-shot prune starts a new phase).
 * The old optimiser's state stays in the persistent arena.
 */
#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../optim/loss_scale.h"
#include "../optim/optim.h"
#include "checkpoint.h"
#include "recipe.h"
#include "state.h"
#include "task.h"

#define ERR_LEN 1024
#define PATH_LEN 4096

struct vnm_trainer {
    vnm_recipe r;
    char *recipe_text; /* resolved YAML, stored in checkpoints and recipe.yaml */
    const char *dir;   /* run.output_dir */
    vnm_ctx *ctx;
    const vnm_task_iface *task;
    void *ts;          /* the task's state */
    /* what the task sees; read_only (vnm_trainer_restore: `vnm eval`, `vnm export`): the run
     * directory is not touched, the console stays quiet, no optimiser is built; no_data: the
     * data set is not loaded either; cmd: the command restoring, for messages ("resume", ...) */
    vnm_task_env env;
    vnm_optim_config ocfg;
    vnm_optim *opt;
    uint64_t opt_version;      /* the task's params_version the optimiser was built over */
    bool loss_scaling;         /* f16 products: dynamic loss scaling */
    vnm_loss_scaler scaler;
    vnm_schedule sched;        /* over the whole run */
    vnm_schedule *stage_sched; /* [n_stages] over each stage's steps (schedule.per_stage) */
    int64_t *stage_steps;      /* [n_stages] optimiser steps of each stage */
    int64_t total_steps;
    vnm_progress prog;
    FILE *log, *metrics;
    char metrics_path[PATH_LEN];
    double t0, window_s; /* window_s: training-step seconds since the last progress line */
    int64_t window_items;
    double last_loss;
    vnm_task_eval val;  /* the last evaluation */
    double val_s;       /* seconds it took */
    char ckpt[PATH_LEN]; /* the checkpoint file restored from */
    char err[ERR_LEN];
};
typedef struct vnm_trainer trainer;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* What the console shows, also appended to log.txt. */
static void vsay(trainer *t, const char *fmt, va_list ap)
{
    if (t->env.read_only) return;
    va_list copy;
    va_copy(copy, ap);
    vprintf(fmt, ap);
    fflush(stdout);
    if (t->log) {
        vfprintf(t->log, fmt, copy);
        fflush(t->log);
    }
    va_end(copy);
}

static void say(trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(trainer *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(t, fmt, ap);
    va_end(ap);
}

static int fail(trainer *t, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(trainer *t, int code, const char *fmt, ...)
{
    char msg[2 * ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "vnm: %s\n", msg);
    if (t->log) {
        fprintf(t->log, "vnm: %s\n", msg);
        fflush(t->log);
    }
    return code;
}

/* A task entry's exit code, its message printed when not 0. */
static int task_rc(trainer *t, int rc)
{
    return rc ? fail(t, rc, "%s", t->env.msg) : 0;
}

/* ---- what the loop provides to tasks (task.h) ---- */

void vnm_task_say(const vnm_task_env *env, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(env->loop, fmt, ap);
    va_end(ap);
}

int vnm_task_fail(vnm_task_env *env, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(env->msg, sizeof env->msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *vnm_task_stage_kind(vnm_recipe_stage_kind k)
{
    static const char *const names[] = {"dense", "prune", "sparse_fixed", "sparse_srste",
                                        "lora_dense", "lora_sparse_dynamic", "lora_sparse_fixed"};
    return names[k];
}

/* ---- set-up ---- */

/* Picks the task of model.arch and checks that the recipe is one the trainer runs. */
static int check_supported(trainer *t)
{
    const vnm_recipe *r = &t->r;
    t->task = r->model.arch == VNM_RECIPE_ARCH_VIT ? &vnm_task_vit : &vnm_task_llama;
    int rc = task_rc(t, t->task->check(&t->env));
    if (rc) return rc;
    for (int64_t i = 0; i < r->n_stages; i++) {
        if ((rc = task_rc(t, t->task->check_stage(&t->env, i)))) return rc;
        /* the optimiser's groups fix these at creation; only lr and clipping vary per stage */
        if (!isnan(r->stages[i].optim.weight_decay) || !isnan(r->stages[i].optim.momentum))
            return fail(t, 2, "stages[%lld] '%s': optim.weight_decay and optim.momentum cannot be "
                              "set per stage yet (lr and clip_grad_norm can)", (long long)i,
                        r->stages[i].name);
    }
    return 0;
}

/* Resolves every stage's length to optimiser steps (see trainer.h). */
static int resolve_steps(trainer *t)
{
    const vnm_recipe *r = &t->r;
    /* an optimiser step takes gradient_accumulation_steps batches */
    int64_t bpe = t->task->batches_per_epoch(t->ts) / r->optim.gradient_accumulation_steps;
    int64_t fixed = 0;
    if (bpe < 1) bpe = 1;
    double frac = 0;
    t->stage_steps = calloc((size_t)r->n_stages, sizeof *t->stage_steps);
    t->stage_sched = calloc((size_t)r->n_stages, sizeof *t->stage_sched);
    if (!t->stage_steps || !t->stage_sched) return fail(t, 1, "out of memory");
    for (int64_t i = 0; i < r->n_stages; i++) {
        const vnm_recipe_stage *s = &r->stages[i];
        if (s->kind == VNM_RECIPE_STAGE_PRUNE) continue;
        if (s->steps > 0) t->stage_steps[i] = s->steps;
        else if (!isnan(s->epochs)) t->stage_steps[i] = llround(s->epochs * (double)bpe);
        else frac += s->fraction;
        if (t->stage_steps[i] == 0 && isnan(s->fraction)) t->stage_steps[i] = 1;
        fixed += t->stage_steps[i];
    }
    int64_t total = fixed;
    if (frac > 0) {
        if (frac >= 1 - 1e-9 || fixed == 0)
            return fail(t, 2, "stages: fractions need other stages given in steps or epochs "
                              "(they share what is left of the run)");
        total = llround((double)fixed / (1 - frac));
        for (int64_t i = 0; i < r->n_stages; i++)
            if (r->stages[i].kind != VNM_RECIPE_STAGE_PRUNE && !isnan(r->stages[i].fraction)) {
                int64_t n = llround(r->stages[i].fraction * (double)total);
                t->stage_steps[i] = n > 0 ? n : 1;
            }
        total = 0;
        for (int64_t i = 0; i < r->n_stages; i++) total += t->stage_steps[i];
    }
    t->total_steps = total;
    return 0;
}

static int setup_schedule(trainer *t)
{
    const vnm_recipe *r = &t->r;
    static const vnm_schedule_kind kinds[] = {VNM_SCHEDULE_CONSTANT, VNM_SCHEDULE_COSINE,
                                              VNM_SCHEDULE_STEP, VNM_SCHEDULE_LINEAR};
    /* one schedule over the run, or (per_stage) one over each training stage's steps */
    for (int64_t i = -1; i < r->n_stages; i++) {
        bool run = i < 0;
        if (!run && (!r->schedule.per_stage || r->stages[i].kind == VNM_RECIPE_STAGE_PRUNE))
            continue;
        int64_t steps = run ? t->total_steps : t->stage_steps[i];
        int64_t warm = r->schedule.warmup_steps;
        if (!isnan(r->schedule.warmup_fraction))
            warm = llround(r->schedule.warmup_fraction * (double)steps);
        vnm_schedule *sc = run ? &t->sched : &t->stage_sched[i];
        *sc = (vnm_schedule){kinds[r->schedule.name], r->optim.lr, warm, 0, steps,
                             r->schedule.min_lr, r->schedule.step_size, r->schedule.gamma};
        if (vnm_schedule_validate(sc, t->err, sizeof t->err))
            return run ? fail(t, 2, "schedule: %s", t->err)
                       : fail(t, 2, "schedule (per_stage) in stages[%lld] '%s': %s",
                              (long long)i, r->stages[i].name, t->err);
    }
    t->ocfg = vnm_trainer_optim_config(r);
    return 0;
}

vnm_optim_config vnm_trainer_optim_config(const vnm_recipe *r)
{
    vnm_optim_config c = vnm_optim_config_default(r->optim.name == VNM_RECIPE_OPTIM_SGD
                                                      ? VNM_OPTIM_SGD
                                                      : VNM_OPTIM_ADAMW);
    c.lr = r->optim.lr;
    c.momentum = r->optim.momentum;
    c.nesterov = r->optim.nesterov;
    c.beta1 = r->optim.betas[0];
    c.beta2 = r->optim.betas[1];
    c.eps = r->optim.eps;
    c.weight_decay = r->optim.weight_decay;
    return c;
}

/* (Re)builds the optimiser over the task's current parameters; tensors that were in `old`
 * keep their state and step counts. */
static int build_optim(trainer *t)
{
    int n = t->task->n_params(t->ts);
    vnm_tensor **params = malloc((size_t)n * sizeof *params);
    if (!params) return fail(t, 1, "out of memory");
    for (int i = 0; i < n; i++) params[i] = t->task->param(t->ts, i);
    vnm_optim *old = t->opt, *opt = vnm_optim_create(t->ctx, &t->ocfg);
    if (!opt || vnm_optim_add_decay_groups(opt, params, n, NULL, 0)) {
        free(params);
        vnm_optim_destroy(opt);
        return fail(t, 2, "optim: %s", vnm_ctx_error(t->ctx));
    }
    free(params);
    if (old) {
        for (int i = 0; i < vnm_optim_num_params(opt); i++)
            for (int j = 0; j < vnm_optim_num_params(old); j++) {
                if (vnm_optim_param(old, j) != vnm_optim_param(opt, i)) continue;
                vnm_optim_set_param_steps(opt, i, vnm_optim_param_steps(old, j));
                for (int k = 0; k < vnm_optim_state_count(opt); k++) {
                    vnm_tensor *src = vnm_optim_state(old, j, k), *dst = vnm_optim_state(opt, i, k);
                    float *buf = malloc((size_t)vnm_numel(src) * sizeof *buf);
                    if (!buf) return fail(t, 1, "out of memory");
                    vnm_tensor_to_host(t->ctx, src, buf);
                    vnm_tensor_from_host(t->ctx, dst, buf);
                    free(buf);
                }
            }
        vnm_optim_set_steps(opt, vnm_optim_steps(old));
        vnm_optim_destroy(old);
    }
    t->opt = opt;
    t->opt_version = t->task->params_version(t->ts);
    return 0;
}

/* After a task entry that may change the parameter list: the optimiser follows it. */
static int follow_params(trainer *t)
{
    return t->task->params_version(t->ts) == t->opt_version ? 0 : build_optim(t);
}

/* mkdir -p: the default output_dir runs/<name> may need runs/ too. */
static int make_dirs(const char *dir)
{
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(path, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(path, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

static int open_run_dir(trainer *t, bool resume)
{
    char path[PATH_LEN];
    if (make_dirs(t->dir))
        return fail(t, 2, "run.output_dir: cannot create '%s': %s", t->dir, strerror(errno));
    snprintf(path, sizeof path, "%s/ckpt/latest", t->dir);
    struct stat sb;
    if (!resume && stat(path, &sb) == 0)
        return fail(t, 2, "run.output_dir: '%s' already holds checkpoints; continue it with "
                          "`vnm resume %s` or choose another run.output_dir", t->dir, t->dir);
    snprintf(path, sizeof path, "%s/recipe.yaml", t->dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(t->recipe_text, f) < 0 || fclose(f) != 0)
        return fail(t, 2, "cannot write '%s': %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/log.txt", t->dir);
    t->log = fopen(path, resume ? "a" : "w");
    if (!t->log) return fail(t, 2, "cannot write '%s': %s", path, strerror(errno));
    if (t->r.log.metrics) snprintf(path, sizeof path, "%s", t->r.log.metrics);
    else snprintf(path, sizeof path, "%s/metrics.jsonl", t->dir);
    snprintf(t->metrics_path, sizeof t->metrics_path, "%s", path);
    t->metrics = fopen(path, resume ? "a" : "w");
    if (!t->metrics) return fail(t, 2, "log.metrics: cannot write '%s': %s", path,
                                 strerror(errno));
    return 0;
}

/* On resume, records of steps after the checkpoint's (written before the interruption) are
 * dropped: the resumed run writes them again, so every step appears once. */
static int trim_metrics(trainer *t)
{
    char tmp[PATH_LEN + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", t->metrics_path);
    fclose(t->metrics);
    t->metrics = NULL;
    FILE *in = fopen(t->metrics_path, "r"), *out = in ? fopen(tmp, "w") : NULL;
    char *line = NULL;
    size_t cap = 0;
    bool ok = out != NULL;
    while (ok && getline(&line, &cap, in) > 0) {
        const char *at = strstr(line, "\"step\":");
        if (!at || strtoll(at + 7, NULL, 10) <= t->prog.step) ok = fputs(line, out) >= 0;
    }
    free(line);
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = false;
    if (!ok || rename(tmp, t->metrics_path) != 0) {
        unlink(tmp);
        return fail(t, 2, "log.metrics: cannot rewrite '%s': %s", t->metrics_path,
                    strerror(errno));
    }
    t->metrics = fopen(t->metrics_path, "a");
    return t->metrics ? 0
                      : fail(t, 2, "log.metrics: cannot write '%s': %s", t->metrics_path,
                             strerror(errno));
}

/* Everything but the checkpoint: context, the task (data, model), step plan, run directory. */
static int setup(trainer *t, bool resume)
{
    t->env.r = &t->r;
    t->env.loop = t;
    int rc = check_supported(t);
    if (rc) return rc;
    t->dir = t->r.run.output_dir;
    char ckdir[PATH_LEN];
    snprintf(ckdir, sizeof ckdir, "%s/ckpt", t->dir);
    if (t->r.checkpoint.dir && strcmp(t->r.checkpoint.dir, ckdir))
        return fail(t, 2, "checkpoint.dir: '%s': checkpoints go to <run.output_dir>/ckpt ('%s')",
                    t->r.checkpoint.dir, ckdir);
    bool cuda = t->r.run.device == VNM_RECIPE_DEVICE_CUDA;
    char reason[256];
    if (cuda && !vnm_device_available(VNM_DEVICE_CUDA, reason, sizeof reason))
        return fail(t, 2, "run.device: cuda: %s", reason);
    vnm_ctx_config cc = {cuda ? VNM_DEVICE_CUDA : VNM_DEVICE_CPU, (uint64_t)t->r.run.seed,
                         (int)t->r.run.threads};
    t->ctx = t->env.ctx = vnm_ctx_create(&cc);
    if (!t->ctx) return fail(t, 1, "cannot create a %s context", cuda ? "cuda" : "cpu");
    vnm_ctx_set_training(t->ctx, true);
    vnm_ctx_set_free_in_backward(t->ctx, true); /* nothing reads a step's activations after it */
    vnm_ctx_set_deterministic(t->ctx, t->r.run.deterministic);
    static const vnm_dtype operand[] = {VNM_DTYPE_F32, VNM_DTYPE_BF16, VNM_DTYPE_F16};
    if (vnm_ctx_set_matmul_dtype(t->ctx, operand[t->r.run.precision]))
        return fail(t, 2, "run.precision: %s", vnm_ctx_error(t->ctx));
    t->loss_scaling = t->r.run.precision == VNM_RECIPE_PRECISION_F16;
    t->scaler = vnm_loss_scaler_init((float)t->r.run.loss_scale,
                                     t->r.run.loss_scale_growth_interval);
    if ((!t->env.read_only && (rc = open_run_dir(t, resume))) ||
        (rc = task_rc(t, t->task->setup(&t->env, &t->ts))))
        return rc;
    if (t->env.read_only) return 0;
    if ((rc = resolve_steps(t)) || (rc = setup_schedule(t))) return rc;
    say(t, "%s", t->recipe_text);
    say(t, "model: %s %lld params, %lld steps in %lld stages (%lld batches per epoch)\n",
        t->task->name, (long long)t->task->numel(t->ts), (long long)t->total_steps,
        (long long)t->r.n_stages, (long long)t->task->batches_per_epoch(t->ts));
    return 0;
}

static void teardown(trainer *t)
{
    vnm_optim_destroy(t->opt);
    if (t->task) t->task->free(t->ts);
    if (t->ctx) vnm_ctx_destroy(t->ctx);
    free(t->stage_steps);
    free(t->stage_sched);
    free(t->recipe_text);
    if (t->log) fclose(t->log);
    if (t->metrics) fclose(t->metrics);
    vnm_recipe_free(&t->r);
}

/* ---- evaluation, logging, checkpoints ---- */

/* The metrics of e beside the loss as the console shows them, each after sep (" top1 12.34%"),
 * or (json) as members of a record, keys prefixed by prefix (",\"val_top1\":0.123400"). */
static void metrics_text(const trainer *t, const vnm_task_eval *e, bool json, const char *pre,
                         char *buf, size_t len)
{
    int n = 0;
    buf[0] = 0;
    if (t->task->metrics & VNM_TASK_TOP1)
        n += json ? snprintf(buf + n, len - (size_t)n, ",\"%stop1\":%.6f", pre, e->top1)
                  : snprintf(buf + n, len - (size_t)n, "%stop1 %.2f%%", pre, 100 * e->top1);
    if (t->task->metrics & VNM_TASK_PPL)
        snprintf(buf + n, len - (size_t)n, json ? ",\"%sppl\":%.9g" : "%sppl %.2f", pre, e->ppl);
}

static int evaluate(trainer *t, const char *stage)
{
    double start = now_s();
    vnm_task_eval e;
    int rc = task_rc(t, t->task->evaluate(t->ts, t->prog.step, &e));
    if (rc) return rc;
    t->val = e;
    t->val_s = now_s() - start;
    char text[256];
    metrics_text(t, &e, false, " ", text, sizeof text);
    say(t, "eval step %lld [%s] val loss %.4f%s\n", (long long)t->prog.step, stage, e.loss, text);
    if (!t->metrics) return 0;
    metrics_text(t, &e, true, "", text, sizeof text);
    fprintf(t->metrics, "{\"step\":%lld,\"stage\":\"%s\",\"split\":\"val\",\"loss\":%.9g%s}\n",
            (long long)t->prog.step, stage, e.loss, text);
    fflush(t->metrics);
    return 0;
}

int vnm_task_evaluate(vnm_task_env *env, const char *label)
{
    trainer *t = env->loop;
    int rc = evaluate(t, label);
    return rc ? vnm_task_fail(env, rc, "%s", "evaluation failed") : 0;
}

void vnm_task_reset_optim_state(const vnm_task_env *env, vnm_tensor *const *params, int n)
{
    trainer *t = env->loop;
    for (int i = 0; t->opt && i < vnm_optim_num_params(t->opt); i++)
        for (int j = 0; j < n; j++) {
            if (vnm_optim_param(t->opt, i) != params[j]) continue;
            for (int k = 0; k < vnm_optim_state_count(t->opt); k++)
                vnm_tensor_fill(t->ctx, vnm_optim_state(t->opt, i, k), 0.0f);
            vnm_optim_set_param_steps(t->opt, i, 0);
        }
}

/* The run's state as a checkpoint holds it: the task's entries and the loop's own. */
static void fill_state(trainer *t, vnm_run_state *st, vnm_state_tensor *dense,
                       vnm_state_sparse *sparse)
{
    int nd = 0, ns = 0;
    t->task->state_entries(t->ts, dense, &nd, sparse, &ns);
    *st = (vnm_run_state){t->ctx, dense, nd, sparse, ns, t->opt, &t->ocfg,
                          t->loss_scaling && t->opt ? &t->scaler : NULL,
                          t->task->get_pos(t->ts), (uint64_t)t->r.run.seed, t->prog,
                          t->recipe_text};
    st->progress.epoch = st->data_pos.epoch;
}

static int save_checkpoint(trainer *t, char *path, size_t path_len)
{
    int rc = task_rc(t, t->task->state_saving(t->ts));
    if (rc) return rc;
    int n = t->task->state_capacity(t->ts);
    vnm_state_tensor *dense = malloc((size_t)n * sizeof *dense);
    vnm_state_sparse *sparse = malloc((size_t)n * sizeof *sparse);
    if (!dense || !sparse) {
        free(dense);
        free(sparse);
        return fail(t, 1, "out of memory");
    }
    vnm_run_state st;
    fill_state(t, &st, dense, sparse);
    vnm_status st_rc = vnm_state_save(t->dir, (int)t->r.checkpoint.keep_last, &st, path,
                                      path_len, t->err, sizeof t->err);
    free(dense);
    free(sparse);
    if (st_rc) return fail(t, 1, "checkpoint: %s", t->err);
    say(t, "checkpoint %s\n", path);
    return 0;
}

static void format_eta(double s, char *buf, size_t len)
{
    long v = s > 0 && s < 1e8 ? lround(s) : 0;
    if (v >= 3600) snprintf(buf, len, "%ldh%02ldm", v / 3600, v / 60 % 60);
    else snprintf(buf, len, "%ldm%02lds", v / 60, v % 60);
}

static void log_step(trainer *t, const char *stage, double lr)
{
    double now = now_s();
    double ips = t->window_s > 0 ? (double)t->window_items / t->window_s : 0;
    double per_step = (now - t->t0) / (double)(t->prog.step > 0 ? t->prog.step : 1);
    size_t mem = vnm_ctx_step_bytes(t->ctx) + vnm_ctx_persistent_bytes(t->ctx);
    char eta[32];
    format_eta(per_step * (double)(t->total_steps - t->prog.step), eta, sizeof eta);
    char scale[96] = "", scale_json[96] = "";
    if (t->loss_scaling) {
        snprintf(scale, sizeof scale, " scale %g", (double)t->scaler.scale);
        snprintf(scale_json, sizeof scale_json, ",\"loss_scale\":%.9g,\"skipped_steps\":%lld",
                 (double)t->scaler.scale, (long long)t->scaler.skipped);
    }
    say(t, "step %lld/%lld [%s] loss %.3f lr %.1e%s %.0f %s ETA %s mem %.0f MB\n",
        (long long)t->prog.step, (long long)t->total_steps, stage, t->last_loss, lr, scale, ips,
        t->task->unit, eta, (double)mem / 1e6);
    fprintf(t->metrics, "{\"step\":%lld,\"stage\":\"%s\",\"split\":\"train\",\"loss\":%.9g,"
                        "\"lr\":%.9g,\"throughput\":%.1f,\"unit\":\"%s\",\"mem_bytes\":%zu%s}\n",
            (long long)t->prog.step, stage, t->last_loss, lr, ips, t->task->unit, mem, scale_json);
    fflush(t->metrics);
    t->window_s = 0;
    t->window_items = 0;
}

/* ---- the loop ---- */

/* Below this the loss scale is given up on (torch's GradScaler goes on halving forever). */
#define MIN_LOSS_SCALE (1.0 / 65536)

/* Backward from weight·loss, times the loss scale when scaling (torch: scaler.scale(loss)). */
static int backward(trainer *t, vnm_tensor *loss, double weight)
{
    vnm_ctx *ctx = t->ctx;
    vnm_tensor *seed = NULL;
    double v = (t->loss_scaling ? (double)t->scaler.scale : 1.0) * weight;
    if (v != 1.0) {
        seed = vnm_tensor_empty(ctx, VNM_DTYPE_F32, loss->ndim, loss->shape);
        if (seed && vnm_tensor_fill(ctx, seed, (float)v)) seed = NULL;
    }
    if ((v != 1.0 && !seed) ||
        (seed ? vnm_backward_seed(ctx, loss, seed) : vnm_backward(ctx, loss)))
        return fail(t, 1, "step %lld: backward: %s", (long long)t->prog.step + 1,
                    vnm_ctx_error(ctx));
    return 0;
}

/* One batch's forward and backward, its gradients added to the parameters' (weighted 1/accum);
 * the regulariser (extra_loss) joins the first batch, once per step. *loss_out: its loss. */
static int micro_step(trainer *t, const vnm_recipe_stage *s, int64_t a, int64_t accum,
                      double *loss_out, int64_t *items)
{
    vnm_ctx *ctx = t->ctx;
    vnm_tensor *loss = NULL, *term = NULL;
    int rc;
    if ((rc = task_rc(t, t->task->train_forward(t->ts, &loss, items)))) return rc;
    if (loss && a == 0 && t->task->extra_loss) {
        if ((rc = task_rc(t, t->task->extra_loss(t->ts, &term)))) return rc;
        /* weighted 1/accum below like the batch's loss, so scaled up here to count once */
        if (term) loss = vnm_add(ctx, loss, accum == 1 ? term : vnm_scale(ctx, term, (float)accum));
    }
    if (!loss) return fail(t, 1, "step %lld: %s", (long long)t->prog.step + 1, vnm_ctx_error(ctx));
    float lv = vnm_item(ctx, loss);
    if (!isfinite(lv))
        return fail(t, 1, "step %lld [%s]: loss is %g; stopping without a checkpoint (the last "
                          "good one stays)%s", (long long)t->prog.step + 1, s->name, (double)lv,
                    t->loss_scaling ? " (with f16 products a forward activation may have passed "
                                      "65504; bf16 has f32's range)" : "");
    *loss_out = lv;
    if ((rc = backward(t, loss, 1.0 / (double)accum))) return rc;
    if (a + 1 < accum) vnm_ctx_reset_step(ctx); /* the parameters' gradients stay */
    return 0;
}

static int train_step(trainer *t, const vnm_recipe_stage *s, double *lr_out)
{
    vnm_ctx *ctx = t->ctx;
    double start = now_s();
    int64_t accum = t->r.optim.gradient_accumulation_steps, items = 0;
    double loss_sum = 0;
    int rc;
    if ((rc = task_rc(t, t->task->step_begin(t->ts, t->prog.step)))) return rc;
    vnm_optim_zero_grad(t->opt);
    for (int64_t a = 0; a < accum; a++) {
        double lv = 0;
        int64_t n = 0;
        if ((rc = micro_step(t, s, a, accum, &lv, &n))) return rc;
        loss_sum += lv;
        items += n;
    }
    double scale = isnan(s->optim.lr) ? 1.0 : s->optim.lr / t->r.optim.lr;
    double lr = t->r.schedule.per_stage
                    ? vnm_schedule_lr(&t->stage_sched[t->prog.stage_index], t->prog.stage_step)
                    : vnm_schedule_lr(&t->sched, t->prog.step);
    lr *= scale;
    *lr_out = lr;
    t->last_loss = loss_sum / (double)accum;
    t->window_items += items;
    if (t->loss_scaling) {
        float used = t->scaler.scale;
        bool finite = vnm_loss_scaler_unscale(&t->scaler, t->opt);
        if (vnm_ctx_status(ctx))
            return fail(t, 1, "step %lld: unscaling: %s", (long long)t->prog.step + 1,
                        vnm_ctx_error(ctx));
        vnm_loss_scaler_update(&t->scaler, finite);
        if (!finite) {
            say(t, "step %lld [%s]: f16 gradients overflowed at loss scale %g; step skipped, scale "
                   "now %g\n", (long long)t->prog.step + 1, s->name, (double)used,
                (double)t->scaler.scale);
            if (t->scaler.scale < MIN_LOSS_SCALE)
                return fail(t, 1, "step %lld [%s]: the loss scale fell below %g after %lld skipped "
                                  "steps: the f16 gradients overflow at any scale; use "
                                  "run.precision: bf16", (long long)t->prog.step + 1, s->name,
                            MIN_LOSS_SCALE, (long long)t->scaler.skipped);
            vnm_ctx_reset_step(ctx);
            t->window_s += now_s() - start;
            return 0;
        }
    }
    double clip = isnan(s->optim.clip_grad_norm) ? t->r.optim.clip_grad_norm
                                                 : s->optim.clip_grad_norm;
    if (clip > 0) {
        double norm = vnm_optim_clip_grad_norm(t->opt, clip);
        if (!isfinite(norm))
            return fail(t, 1, "step %lld [%s]: gradient norm is %g; stopping without a "
                              "checkpoint (the last good one stays)",
                        (long long)t->prog.step + 1, s->name, norm);
    }
    vnm_optim_set_lr(t->opt, lr);
    if (vnm_optim_step(t->opt))
        return fail(t, 1, "step %lld: optimiser: %s", (long long)t->prog.step + 1,
                    vnm_ctx_error(ctx));
    vnm_ctx_reset_step(ctx);
    t->window_s += now_s() - start;
    return 0;
}

static int run_stages(trainer *t)
{
    const vnm_recipe *r = &t->r;
    char path[PATH_LEN];
    int rc = 0;
    t->t0 = now_s();
    int64_t step0 = t->prog.step;
    for (int64_t si = t->prog.stage_index; si < r->n_stages; si++) {
        const vnm_recipe_stage *s = &r->stages[si];
        t->prog.stage_index = si;
        if (s->kind == VNM_RECIPE_STAGE_PRUNE) {
            say(t, "stage %lld/%lld '%s' (prune)\n", (long long)si + 1, (long long)r->n_stages,
                s->name);
            if ((rc = task_rc(t, t->task->prune(t->ts))) || (rc = follow_params(t))) return rc;
        } else {
            if ((rc = task_rc(t, t->task->stage_begin(t->ts, s))) || (rc = follow_params(t)))
                return rc;
            say(t, "stage %lld/%lld '%s' (%s): %lld steps\n", (long long)si + 1,
                (long long)r->n_stages, s->name, vnm_task_stage_kind(s->kind),
                (long long)t->stage_steps[si]);
            while (t->prog.stage_step < t->stage_steps[si]) {
                if (stop_requested) {
                    if ((rc = save_checkpoint(t, path, sizeof path))) return rc;
                    say(t, "stopped by a signal at step %lld; continue with `vnm resume %s`\n",
                        (long long)t->prog.step, t->dir);
                    return 0;
                }
                double lr = 0;
                if ((rc = train_step(t, s, &lr))) return rc;
                t->prog.step++;
                t->prog.stage_step++;
                bool last = t->prog.stage_step == t->stage_steps[si];
                if (t->prog.step % r->log.every == 0 || last) log_step(t, s->name, lr);
                if (r->eval.every > 0 && t->prog.step % r->eval.every == 0 && !last &&
                    (rc = evaluate(t, s->name)))
                    return rc;
                if (r->checkpoint.every > 0 && t->prog.step % r->checkpoint.every == 0 && !last &&
                    (rc = save_checkpoint(t, path, sizeof path)))
                    return rc;
            }
        }
        if ((rc = evaluate(t, s->name))) return rc;
        if ((rc = task_rc(t, t->task->stage_end(t->ts, s))) || (rc = follow_params(t))) return rc;
        /* the end-of-stage checkpoint resumes at the start of the next stage */
        t->prog.stage_index = si + 1;
        t->prog.stage_step = 0;
        if ((rc = save_checkpoint(t, path, sizeof path))) return rc;
    }
    double wall = now_s() - t->t0;
    char text[256];
    metrics_text(t, &t->val, true, "val_", text, sizeof text);
    fprintf(t->metrics, "{\"event\":\"done\",\"step\":%lld,\"train_loss\":%.9g,\"val_loss\":%.9g"
                        "%s,\"wall_s\":%.3f,\"steps_run\":%lld}\n",
            (long long)t->prog.step, t->last_loss, t->val.loss, text, wall,
            (long long)(t->prog.step - step0));
    fflush(t->metrics);
    metrics_text(t, &t->val, false, ", ", text, sizeof text);
    say(t, "done: step %lld, val loss %.4f%s, %.1f s\n", (long long)t->prog.step, t->val.loss,
        text, wall);
    return 0;
}

/* SIGINT/SIGTERM only set a flag; the loop checkpoints at the next step boundary. */
static int run_with_signals(trainer *t)
{
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    stop_requested = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = run_stages(t);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}

static int load_recipe(trainer *t, const char *path, char **overrides, int n)
{
    if (vnm_recipe_load(path, (const char *const *)overrides, n, &t->r, t->err, sizeof t->err)) {
        fprintf(stderr, "vnm: %s\n", t->err);
        return 2;
    }
    t->recipe_text = vnm_recipe_emit_string(&t->r);
    if (!t->recipe_text) return fail(t, 1, "out of memory");
    return 0;
}

int vnm_cmd_train(int argc, char **argv)
{
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        fputs("usage: vnm train RECIPE [key=value ...]\n", argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    trainer t = {0};
    int rc = load_recipe(&t, argv[0], argv + 1, argc - 1);
    if (!rc) rc = setup(&t, false);
    if (!rc) rc = build_optim(&t);
    if (!rc) rc = run_with_signals(&t);
    teardown(&t);
    return rc;
}

/* Prints the lines of the resolved recipe that the overrides changed. */
static void print_recipe_diff(trainer *t, const char *stored)
{
    const char *a = stored, *b = t->recipe_text;
    bool any = false;
    while (*a || *b) {
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        if (la != lb || memcmp(a, b, la)) {
            if (!any) say(t, "resume: recipe changed by overrides:\n");
            any = true;
            say(t, "- %.*s\n+ %.*s\n", (int)la, a, (int)lb, b);
        }
        a += la + (a[la] != 0);
        b += lb + (b[lb] != 0);
    }
}

static void free_overrides(char **ov, int n)
{
    for (int i = 0; ov && i < n; i++) free(ov[i]);
    free(ov);
}

/* The stored recipe holds checkpoint.dir and log.metrics resolved under the old output_dir; a
 * resume into another run.output_dir moves them along unless they are overridden too. Returns a
 * malloc'd copy of the overrides with those added; *n is updated. */
static char **follow_output_dir(char **overrides, int *n)
{
    const char *dir = NULL;
    bool ck = false, metrics = false;
    for (int i = 0; i < *n; i++) {
        if (!strncmp(overrides[i], "run.output_dir=", 15)) dir = overrides[i] + 15;
        ck |= !strncmp(overrides[i], "checkpoint.dir=", 15);
        metrics |= !strncmp(overrides[i], "log.metrics=", 12);
    }
    char **ov = calloc((size_t)*n + 2, sizeof *ov);
    if (!ov) return NULL;
    int m = 0;
    bool ok = true;
    for (int i = 0; i < *n; i++) ok &= (ov[m++] = strdup(overrides[i])) != NULL;
    if (dir && !ck && ok && asprintf(&ov[m], "checkpoint.dir=%s/ckpt", dir) >= 0) m++;
    if (dir && !metrics && ok && asprintf(&ov[m], "log.metrics=%s/metrics.jsonl", dir) >= 0) m++;
    *n = m;
    return ov;
}

/* Reads the stored recipe and progress, has the task rebuild the model as it is in the stage the
 * checkpoint is in, then restores every tensor. */
static int resume_from(trainer *t, const char *path, char **overrides, int n)
{
    char *stored = NULL, *file = t->ckpt;
    const char *cmd = t->env.cmd;
    int64_t stage_index = 0, stage_step = 0;
    vnm_ckpt_reader *rd = vnm_ckpt_open(path, t->err, sizeof t->err);
    if (!rd) return fail(t, 2, "%s: %s", cmd, t->err);
    snprintf(file, sizeof t->ckpt, "%s", vnm_ckpt_file(rd));
    if (vnm_ckpt_get_str(rd, "/", "recipe", &stored, t->err, sizeof t->err) ||
        vnm_ckpt_get_i64(rd, "/", "stage_index", &stage_index, t->err, sizeof t->err) ||
        vnm_ckpt_get_i64(rd, "/", "stage_step", &stage_step, t->err, sizeof t->err)) {
        vnm_ckpt_close(rd);
        free(stored);
        return fail(t, 2, "%s: %s", cmd, t->err);
    }
    /* the stored text goes through the loader again so overrides are checked as in `train` */
    char tmp[] = "/tmp/vnm-resume-XXXXXX";
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int rc = 0;
    if (!f && fd >= 0) close(fd);
    if (!f || fputs(stored, f) < 0 || fclose(f) != 0) rc = fail(t, 1, "%s: temp file failed", cmd);
    char **ov = NULL;
    if (!rc) rc = (ov = follow_output_dir(overrides, &n)) ? 0 : fail(t, 1, "out of memory");
    if (!rc) rc = load_recipe(t, tmp, ov, n);
    free_overrides(ov, n);
    if (fd >= 0) unlink(tmp);
    if (!rc) rc = setup(t, true);
    if (!rc) {
        say(t, "resume: from %s\n", file);
        print_recipe_diff(t, stored);
        rc = task_rc(t, t->task->resume(t->ts, stage_index, stage_step, rd));
        if (!rc && !t->env.read_only) rc = build_optim(t);
    }
    vnm_ckpt_close(rd);
    free(stored);
    if (rc) return rc;
    int np = t->task->state_capacity(t->ts);
    vnm_state_tensor *dense = malloc((size_t)np * sizeof *dense);
    vnm_state_sparse *sparse = malloc((size_t)np * sizeof *sparse);
    if (!dense || !sparse) rc = fail(t, 1, "out of memory");
    vnm_run_state st;
    if (!rc) {
        fill_state(t, &st, dense, sparse);
        if (vnm_state_load(file, &st, NULL, t->err, sizeof t->err))
            rc = fail(t, 2, "%s: %s", cmd, t->err);
    }
    free(dense);
    free(sparse);
    if (!rc) rc = task_rc(t, t->task->state_loaded(t->ts));
    if (!rc) rc = task_rc(t, t->task->set_pos(t->ts, st.data_pos));
    if (rc) return rc;
    t->prog = st.progress;
    if (!t->env.read_only && (rc = trim_metrics(t))) return rc;
    say(t, "resume: step %lld, stage %lld '%s', %lld steps into it\n", (long long)t->prog.step,
        (long long)t->prog.stage_index + 1,
        t->prog.stage_index < t->r.n_stages ? t->r.stages[t->prog.stage_index].name : "(end)",
        (long long)t->prog.stage_step);
    return 0;
}

int vnm_cmd_resume(int argc, char **argv)
{
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        fputs("usage: vnm resume RUN_DIR|CKPT [key=value ...]\n", argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    trainer t = {.env.cmd = "resume"};
    int rc = resume_from(&t, argv[0], argv + 1, argc - 1);
    if (!rc) rc = run_with_signals(&t);
    teardown(&t);
    return rc;
}

/* ---- read-only restore for `vnm eval` and `vnm export` (trainer.h) ---- */

int vnm_trainer_restore(const char *cmd, const char *path, char **overrides, int n,
                        bool with_data, vnm_trainer **out)
{
    *out = NULL;
    trainer *t = calloc(1, sizeof *t);
    if (!t) {
        fprintf(stderr, "vnm %s: out of memory\n", cmd);
        return 1;
    }
    t->env.read_only = true;
    t->env.no_data = !with_data;
    t->env.cmd = cmd;
    int rc = resume_from(t, path, overrides, n);
    if (rc) {
        vnm_trainer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

vnm_restored vnm_trainer_restored(const vnm_trainer *t)
{
    const vnm_progress *p = &t->prog;
    int64_t si = p->stage_step == 0 && p->stage_index > 0 ? p->stage_index - 1 : p->stage_index;
    if (si >= t->r.n_stages) si = t->r.n_stages - 1;
    vnm_restored out = {.ctx = t->ctx, .file = t->ckpt, .step = p->step,
                        .stage = t->r.stages[si].name};
    t->task->restored(t->ts, &out);
    return out;
}

void vnm_trainer_free(vnm_trainer *t)
{
    if (!t) return;
    teardown(t);
    free(t);
}

int vnm_trainer_evaluate(vnm_trainer *t, vnm_eval_result *res)
{
    int rc = evaluate(t, vnm_trainer_restored(t).stage);
    if (!rc)
        *res = (vnm_eval_result){t->val.loss, t->val.top1, t->val.ppl, t->val.items, t->val_s};
    return rc;
}
