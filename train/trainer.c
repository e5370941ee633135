/* train/trainer.c — the training loop behind `vnm train` and `vnm resume` (see trainer.h): run
 * set-up from a recipe, the stages, one-shot V:N:M pruning of the target linears, evaluation,
 * logging to the console, log.txt and metrics.jsonl, checkpoints and resume, and the read-only
 * restore (resume without a run directory or optimiser) behind `vnm eval` and `vnm export`.
 *
 * Optimiser hand-over at a prune stage: the optimiser is rebuilt over the new parameter list.
 * Parameters that stay keep their moments and step counts; the compressed vals of a pruned layer
 * start with zero moments (the dense moments are not carried into the compressed layout, as a
 * one-shot prune starts a new phase). The old optimiser's state stays in the persistent arena.
 */
#include "trainer.h"

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../data/data.h"
#include "../optim/optim.h"
#include "../sparse/sparse.h"
#include "checkpoint.h"
#include "models/vit.h"
#include "recipe.h"
#include "state.h"

#define ERR_LEN 1024
#define PATH_LEN 4096

struct vnm_trainer {
    vnm_recipe r;
    char *recipe_text; /* resolved YAML, stored in checkpoints and recipe.yaml */
    const char *dir;   /* run.output_dir */
    vnm_ctx *ctx;
    vnm_vit *m;
    vnm_dataset train_ds, test_ds;
    vnm_loader *train_ld, *test_ld;
    vnm_optim_config ocfg;
    vnm_optim *opt;
    vnm_schedule sched;        /* over the whole run */
    vnm_schedule *stage_sched; /* [n_stages] over each stage's steps (schedule.per_stage) */
    int64_t *stage_steps;      /* [n_stages] optimiser steps of each stage */
    int64_t total_steps;
    vnm_progress prog;
    int32_t **perm_in; /* [n_linears] input permutation of a pruned layer, or NULL */
    struct srste_buffers *srste; /* [n_linears] checkpoint images of SR-STE masks */
    FILE *log, *metrics;
    char metrics_path[PATH_LEN];
    double t0, window_s; /* window_s: training-step seconds since the last progress line */
    int64_t window_imgs;
    double last_loss, val_loss, val_top1;
    double val_s;       /* seconds the last evaluation took */
    int64_t val_images; /* images it saw */
    /* vnm_trainer_restore (`vnm eval`, `vnm export`): the run directory is not touched, the
     * console stays quiet, no optimiser is built; no_data: the data set is not loaded either */
    bool read_only, no_data;
    const char *cmd;    /* the command restoring, for messages: "resume", "eval", "export" */
    char ckpt[PATH_LEN]; /* the checkpoint file restored from */
    char err[ERR_LEN];
};
typedef struct vnm_trainer trainer;

/* An SR-STE mask was chosen from an earlier W, so it cannot be recomputed on resume: each SR-STE
 * linear's mask and the step it was chosen at travel in the checkpoint as two model tensors,
 * "<layer>.weight.srste_mask" (u8 [O, I]) and "<layer>.weight.srste_mask_step" (i64 [1]). */
struct srste_buffers {
    char mask_name[VNM_VIT_NAME_MAX + 32], step_name[VNM_VIT_NAME_MAX + 32];
    vnm_tensor *mask, *step;
};

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
static void say(trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(trainer *t, const char *fmt, ...)
{
    if (t->read_only) return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (t->log) {
        va_start(ap, fmt);
        vfprintf(t->log, fmt, ap);
        va_end(ap);
        fflush(t->log);
    }
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

static const char *stage_kind_name(vnm_recipe_stage_kind k)
{
    static const char *const names[] = {"dense", "prune", "sparse_fixed", "sparse_srste",
                                        "lora_dense", "lora_sparse_dynamic", "lora_sparse_fixed"};
    return names[k];
}

static bool matches_target(const vnm_recipe *r, const char *name)
{
    for (int64_t i = 0; i < r->sparsity.targets.n; i++)
        if (fnmatch(r->sparsity.targets.items[i], name, 0) == 0) return true;
    return false;
}

/* ---- set-up ---- */

static int check_supported(trainer *t)
{
    const vnm_recipe *r = &t->r;
    if (r->run.precision != VNM_RECIPE_PRECISION_F32)
        return fail(t, 2, "run.precision: only f32 training is implemented");
    if (r->model.arch != VNM_RECIPE_ARCH_VIT)
        return fail(t, 2, "model.arch: the trainer runs vit only");
    if (r->data.dataset != VNM_RECIPE_DATASET_FASHION_MNIST)
        return fail(t, 2, "data.dataset: the trainer reads fashion_mnist only");
    if (r->lora.present) return fail(t, 2, "lora: LoRA training is not implemented yet");
    for (int64_t i = 0; i < r->n_stages; i++) {
        vnm_recipe_stage_kind k = r->stages[i].kind;
        if (k != VNM_RECIPE_STAGE_DENSE && k != VNM_RECIPE_STAGE_PRUNE &&
            k != VNM_RECIPE_STAGE_SPARSE_FIXED && k != VNM_RECIPE_STAGE_SPARSE_SRSTE)
            return fail(t, 2, "stages[%lld] '%s': kind %s is not implemented yet (dense, prune, "
                              "sparse_fixed, sparse_srste are)", (long long)i, r->stages[i].name,
                        stage_kind_name(k));
        if (r->run.device == VNM_RECIPE_DEVICE_CUDA && k != VNM_RECIPE_STAGE_DENSE)
            return fail(t, 2, "stages[%lld] '%s': kind %s needs run.device: cpu (the V:N:M "
                              "kernels exist for the cpu backend only; cuda runs dense stages)",
                        (long long)i, r->stages[i].name, stage_kind_name(k));
        /* the optimiser's groups fix these at creation; only lr and clipping vary per stage */
        if (!isnan(r->stages[i].optim.weight_decay) || !isnan(r->stages[i].optim.momentum))
            return fail(t, 2, "stages[%lld] '%s': optim.weight_decay and optim.momentum cannot be "
                              "set per stage yet (lr and clip_grad_norm can)", (long long)i,
                        r->stages[i].name);
    }
    return 0;
}

static int setup_data(trainer *t)
{
    const vnm_recipe *r = &t->r;
    /* The schema's default path is a project-relative folder; fall back to the Debian package's
     * location when it is absent so a recipe without data.path runs on a stock machine. */
    const char *dir = r->data.path;
    struct stat sb;
    if (!strcmp(dir, "data/fashion_mnist") && stat(dir, &sb) != 0) dir = VNM_FASHION_MNIST_DIR;
    /* a read-only restore (`vnm eval`) needs the test split only */
    if ((!t->read_only &&
         vnm_fashion_mnist_load(dir, true, &t->train_ds, t->err, sizeof t->err)) ||
        vnm_fashion_mnist_load(dir, false, &t->test_ds, t->err, sizeof t->err))
        return fail(t, 2, "data.path: %s", t->err);
    const vnm_dataset *ds = &t->test_ds;
    if (r->model.in_chans != ds->channels || r->model.image_size != ds->height ||
        r->model.image_size != ds->width)
        return fail(t, 2, "model: in_chans %lld and image_size %lld must match the data "
                          "(%d channels, %d×%d)", (long long)r->model.in_chans,
                    (long long)r->model.image_size, ds->channels, ds->height, ds->width);
    if (r->model.num_classes != ds->classes)
        return fail(t, 2, "model.num_classes: %lld, the data has %d classes",
                    (long long)r->model.num_classes, ds->classes);
    vnm_loader_config lc = vnm_loader_config_default();
    lc.batch = r->data.batch_size;
    lc.seed = (uint64_t)r->run.seed;
    lc.shuffle = true;
    lc.drop_last = true; /* every step sees a full batch */
    lc.pad = (int)r->data.augment.crop_padding;
    lc.augment = r->data.augment.flip || lc.pad > 0;
    lc.mean = VNM_FASHION_MNIST_MEAN;
    lc.std = VNM_FASHION_MNIST_STD;
    lc.prefetch = r->data.workers > 0;
    if (!t->read_only &&
        vnm_loader_create(&t->train_ds, &lc, &t->train_ld, t->err, sizeof t->err))
        return fail(t, 2, "data: %s", t->err);
    vnm_loader_config ec = lc;
    ec.batch = r->data.val_batch_size > 0 ? r->data.val_batch_size : r->data.batch_size;
    ec.shuffle = false;
    ec.drop_last = false;
    ec.augment = false;
    ec.prefetch = false;
    if (vnm_loader_create(&t->test_ds, &ec, &t->test_ld, t->err, sizeof t->err))
        return fail(t, 2, "data: %s", t->err);
    return 0;
}

static int setup_model(trainer *t)
{
    const vnm_recipe *r = &t->r;
    static const char *const sizes[] = {"tiny", "small", "base", "tiny"};
    vnm_vit_config cfg;
    if (vnm_vit_config_preset(sizes[r->model.size], &cfg, t->err, sizeof t->err))
        return fail(t, 2, "model.size: %s", t->err);
    if (r->model.embed_dim > 0) cfg.embed_dim = r->model.embed_dim;
    if (r->model.depth > 0) cfg.depth = r->model.depth;
    if (r->model.heads > 0) cfg.num_heads = r->model.heads;
    cfg.mlp_ratio = r->model.mlp_ratio;
    cfg.patch = r->model.patch;
    cfg.img_size = r->model.image_size;
    cfg.in_chans = r->model.in_chans;
    cfg.num_classes = r->model.num_classes;
    cfg.drop_path_rate = (float)r->model.drop_path;
    t->m = vnm_vit_new(t->ctx, &cfg);
    if (!t->m) return fail(t, 2, "model: %s", vnm_ctx_error(t->ctx));
    if (r->model.weights &&
        vnm_vit_load(t->ctx, t->m, r->model.weights, NULL, 0, t->err, sizeof t->err))
        return fail(t, 2, "model.weights: %s", t->err);
    t->perm_in = calloc((size_t)t->m->n_linears, sizeof *t->perm_in);
    t->srste = calloc((size_t)t->m->n_linears, sizeof *t->srste);
    if (!t->perm_in || !t->srste) return fail(t, 1, "out of memory");
    return 0;
}

/* Resolves every stage's length to optimiser steps (see trainer.h). */
static int resolve_steps(trainer *t)
{
    const vnm_recipe *r = &t->r;
    int64_t bpe = vnm_loader_batches_per_epoch(t->train_ld), fixed = 0;
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
    t->ocfg = vnm_optim_config_default(r->optim.name == VNM_RECIPE_OPTIM_SGD ? VNM_OPTIM_SGD
                                                                             : VNM_OPTIM_ADAMW);
    t->ocfg.lr = r->optim.lr;
    t->ocfg.momentum = r->optim.momentum;
    t->ocfg.nesterov = r->optim.nesterov;
    t->ocfg.beta1 = r->optim.betas[0];
    t->ocfg.beta2 = r->optim.betas[1];
    t->ocfg.eps = r->optim.eps;
    t->ocfg.weight_decay = r->optim.weight_decay;
    return 0;
}

/* (Re)builds the optimiser over the model's current parameters; tensors that were in `old`
 * keep their state and step counts. */
static int build_optim(trainer *t)
{
    int n = vnm_vit_param_count(t->m);
    vnm_tensor **params = malloc((size_t)n * sizeof *params);
    if (!params) return fail(t, 1, "out of memory");
    for (int i = 0; i < n; i++) params[i] = vnm_vit_param_at(t->m, i).tensor;
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
    return 0;
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

/* Everything but the checkpoint: context, data, model, step plan, run directory. */
static int setup(trainer *t, bool resume)
{
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
    t->ctx = vnm_ctx_create(&cc);
    if (!t->ctx) return fail(t, 1, "cannot create a %s context", cuda ? "cuda" : "cpu");
    vnm_ctx_set_training(t->ctx, true);
    if ((!t->read_only && (rc = open_run_dir(t, resume))) ||
        (!t->no_data && (rc = setup_data(t))) || (rc = setup_model(t)))
        return rc;
    if (t->read_only) return 0;
    if ((rc = resolve_steps(t)) || (rc = setup_schedule(t))) return rc;
    say(t, "%s", t->recipe_text);
    say(t, "model: vit %lld params, %lld steps in %lld stages (%lld batches per epoch)\n",
        (long long)vnm_vit_numel(t->m), (long long)t->total_steps, (long long)t->r.n_stages,
        (long long)vnm_loader_batches_per_epoch(t->train_ld));
    return 0;
}

static void teardown(trainer *t)
{
    if (t->m)
        for (int i = 0; i < t->m->n_linears; i++) free(t->perm_in[i]);
    free(t->perm_in);
    free(t->srste);
    vnm_optim_destroy(t->opt);
    vnm_vit_free(t->m);
    vnm_loader_free(t->train_ld);
    vnm_loader_free(t->test_ld);
    vnm_dataset_free(&t->train_ds);
    vnm_dataset_free(&t->test_ds);
    if (t->ctx) vnm_ctx_destroy(t->ctx);
    free(t->stage_steps);
    free(t->stage_sched);
    free(t->recipe_text);
    if (t->log) fclose(t->log);
    if (t->metrics) fclose(t->metrics);
    vnm_recipe_free(&t->r);
}

/* ---- pruning ---- */

/* Forward passes over the first sparsity.calibration_batches training batches (dataset order,
 * no augmentation) with the RIA collector attached. */
static vnm_calib_collector *calibrate(trainer *t)
{
    const vnm_recipe *r = &t->r;
    vnm_calib_collector *c =
        vnm_calib_attach(t->ctx, (const char *const *)r->sparsity.targets.items,
                         (int)r->sparsity.targets.n);
    if (!c) return NULL;
    bool grad = vnm_ctx_set_grad_enabled(t->ctx, false), training = vnm_ctx_training(t->ctx);
    vnm_ctx_set_training(t->ctx, false);
    vnm_loader_config lc = vnm_loader_config_default();
    lc.batch = r->data.batch_size;
    lc.shuffle = lc.augment = lc.prefetch = false;
    lc.mean = VNM_FASHION_MNIST_MEAN;
    lc.std = VNM_FASHION_MNIST_STD;
    vnm_loader *ld = NULL;
    bool ok = vnm_loader_create(&t->train_ds, &lc, &ld, t->err, sizeof t->err) == VNM_OK;
    for (int64_t b = 0; ok && b < r->sparsity.calibration_batches; b++) {
        vnm_batch batch;
        ok = vnm_loader_next(ld, &batch, t->err, sizeof t->err) == VNM_OK;
        if (!ok) break;
        const vnm_dataset *ds = &t->train_ds;
        vnm_tensor *x = vnm_tensor_from(t->ctx, VNM_DTYPE_F32, 4,
                                        VNM_SHAPE(batch.size, ds->channels, ds->height, ds->width),
                                        batch.images); // [B, C, H, W]
        ok = vnm_vit_forward(t->ctx, t->m, x, NULL) != NULL;
        vnm_ctx_reset_step(t->ctx);
    }
    vnm_loader_free(ld);
    vnm_ctx_set_training(t->ctx, training);
    vnm_ctx_set_grad_enabled(t->ctx, grad);
    if (!ok) {
        vnm_calib_detach(c);
        return NULL;
    }
    return c;
}

/* Replaces linear l by its V:N:M compression. `placeholder` builds only a valid structure of the
 * right pattern and shape (magnitude, no permutation) for a checkpoint load to overwrite. */
static vnm_status prune_linear(trainer *t, int li, bool placeholder, const vnm_calib_collector *c,
                               double *score_total, double *kept_before, double *kept_after)
{
    const vnm_recipe *r = &t->r;
    vnm_vit_linear *l = t->m->linears[li];
    int64_t O = l->out, I = l->in;
    vnm_pattern p = r->sparsity.pattern;
    char name[VNM_VIT_NAME_MAX + 8];
    snprintf(name, sizeof name, "%s.weight", l->name);
    float *W = malloc((size_t)(O * I) * sizeof *W), *S = malloc((size_t)(O * I) * sizeof *S),
          *Sp = malloc((size_t)(O * I) * sizeof *Sp);
    uint8_t *mask = malloc((size_t)(O * I));
    double *rms = malloc((size_t)I * sizeof *rms);
    int32_t *po = malloc((size_t)O * sizeof *po), *pi = malloc((size_t)I * sizeof *pi);
    vnm_sparse_host h = {0};
    vnm_status rc = VNM_ERR_RUNTIME;
    snprintf(t->err, sizeof t->err, "out of memory pruning %s", name);
    if (!W || !S || !Sp || !mask || !rms || !po || !pi) goto done;
    if ((rc = vnm_tensor_to_host(t->ctx, l->weight, W))) {
        snprintf(t->err, sizeof t->err, "%s", vnm_ctx_error(t->ctx));
        goto done;
    }
    vnm_score_kind kind = placeholder ? VNM_SCORE_MAGNITUDE : r->sparsity.score;
    if (kind == VNM_SCORE_RIA) {
        const vnm_calib *cal = vnm_calib_find(c, name);
        if (!cal) {
            rc = VNM_ERR_RUNTIME;
            snprintf(t->err, sizeof t->err, "prune: no calibration statistics for %s", name);
            goto done;
        }
        vnm_calib_rms(cal, rms);
    }
    if ((rc = vnm_score_compute(kind, W, O, I, rms, 0.5, S, t->err, sizeof t->err))) goto done;
    bool permute = r->sparsity.permute && !placeholder;
    double kb = 0, ka = 0;
    if (permute) {
        vnm_permute_opts po_opts = {(int)r->sparsity.permute_rounds, 0, r->sparsity.selector};
        if ((rc = vnm_permute_search(p, S, O, I, &po_opts, po, pi, &kb, &ka, t->err,
                                     sizeof t->err)))
            goto done;
        for (int64_t o = 0; o < O; o++)
            for (int64_t j = 0; j < I; j++) Sp[o * I + j] = S[(int64_t)po[o] * I + pi[j]];
    } else {
        memcpy(Sp, S, (size_t)(O * I) * sizeof *S);
    }
    if ((rc = vnm_mask_select(p, r->sparsity.selector, Sp, O, I, mask, t->err, sizeof t->err)))
        goto done;
    if (!permute) kb = ka = vnm_mask_kept_score(mask, Sp, O * I);
    double total = 0;
    for (int64_t k = 0; k < O * I; k++) total += S[k];
    *score_total += total;
    *kept_before += kb;
    *kept_after += ka;
    if ((rc = vnm_sparse_compress(p, W, mask, O, I, permute ? po : NULL, permute ? pi : NULL, &h,
                                  t->err, sizeof t->err)))
        goto done;
    vnm_sparse_weight *sw = vnm_sparse_weight_new(t->ctx, &h, name);
    if (!sw) {
        rc = VNM_ERR_RUNTIME;
        snprintf(t->err, sizeof t->err, "%s", vnm_ctx_error(t->ctx));
        goto done;
    }
    if ((rc = vnm_vit_linear_set_sparse(l, sw, t->err, sizeof t->err))) {
        vnm_sparse_weight_free(sw);
        goto done;
    }
    if (permute) {
        t->perm_in[li] = pi;
        pi = NULL;
    }
done:
    vnm_sparse_host_free(&h);
    free(W);
    free(S);
    free(Sp);
    free(mask);
    free(rms);
    free(po);
    free(pi);
    return rc;
}

static int prune_all(trainer *t, bool placeholder)
{
    const vnm_recipe *r = &t->r;
    vnm_calib_collector *c = NULL;
    if (!placeholder && r->sparsity.score == VNM_SCORE_RIA && !(c = calibrate(t)))
        return fail(t, 1, "prune: calibration failed: %s",
                    vnm_ctx_status(t->ctx) ? vnm_ctx_error(t->ctx) : t->err);
    double total = 0, before = 0, after = 0;
    int n = 0;
    for (int li = 0; li < t->m->n_linears; li++) {
        char name[VNM_VIT_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s.weight", t->m->linears[li]->name);
        if (t->m->linears[li]->sparse || !matches_target(r, name)) continue;
        if (prune_linear(t, li, placeholder, c, &total, &before, &after)) {
            vnm_calib_detach(c);
            return fail(t, 1, "prune %s: %s", name, t->err);
        }
        n++;
    }
    vnm_calib_detach(c);
    if (n == 0) return fail(t, 2, "sparsity.targets: no linear weight matches");
    if (!placeholder) {
        char pat[32];
        vnm_pattern_str(r->sparsity.pattern, pat, sizeof pat);
        say(t, "prune: %d linears to %s, kept score %.4f before permutation, %.4f after "
               "(%+.2f%%)\n", n, pat, before / total, after / total,
            before > 0 ? 100 * (after - before) / before : 0.0);
    }
    return t->read_only ? 0 : build_optim(t);
}

/* ---- SR-STE stages: dynamic masks from the dense weights, frozen at the stage's end ---- */

/* Gives every target linear (still dense) SR-STE masks; linears that have them already keep
 * theirs (a resumed stage). */
static int srste_begin(trainer *t, const vnm_recipe_stage *s)
{
    const vnm_recipe *r = &t->r;
    int added = 0, n = 0;
    for (int li = 0; li < t->m->n_linears; li++) {
        vnm_vit_linear *l = t->m->linears[li];
        struct srste_buffers *b = &t->srste[li];
        char name[VNM_VIT_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s.weight", l->name);
        if (l->sparse || !matches_target(r, name)) continue;
        n++;
        if (l->srste) continue;
        vnm_srste *sr = vnm_srste_new(t->ctx, l->weight, r->sparsity.pattern, r->sparsity.selector,
                                      s->srste.every, (float)s->srste.lambda_w);
        if (!sr) return fail(t, 2, "stage '%s': %s: %s", s->name, name, vnm_ctx_error(t->ctx));
        vnm_vit_linear_set_srste(l, sr);
        snprintf(b->mask_name, sizeof b->mask_name, "%s.srste_mask", name);
        snprintf(b->step_name, sizeof b->step_name, "%s.srste_mask_step", name);
        if (!b->mask) {
            b->mask = vnm_buffer_new(t->ctx, VNM_DTYPE_U8, 2, VNM_SHAPE(l->out, l->in),
                                     b->mask_name);
            b->step = vnm_buffer_new(t->ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(1), b->step_name);
            if (!b->mask || !b->step) return fail(t, 1, "%s", vnm_ctx_error(t->ctx));
        }
        added++;
    }
    if (n == 0) return fail(t, 2, "sparsity.targets: no dense linear weight matches");
    if (added > 0) {
        char pat[32];
        vnm_pattern_str(r->sparsity.pattern, pat, sizeof pat);
        say(t, "sparse_srste: %d linears to %s, masks from |W| every %lld steps, lambda_w %g\n",
            added, pat, (long long)s->srste.every, s->srste.lambda_w);
    }
    return 0;
}

/* Copies the SR-STE masks into their checkpoint tensors (to_checkpoint) or back. */
static int srste_sync(trainer *t, bool to_checkpoint)
{
    for (int li = 0; li < t->m->n_linears; li++) {
        vnm_srste *sr = t->m->linears[li]->srste;
        struct srste_buffers *b = &t->srste[li];
        if (!sr) continue;
        int64_t step = vnm_srste_mask_step(sr);
        if (to_checkpoint) {
            const uint8_t *mask = vnm_srste_mask(sr);
            if ((mask && vnm_tensor_from_host(t->ctx, b->mask, mask)) ||
                vnm_tensor_from_host(t->ctx, b->step, &step))
                return fail(t, 1, "%s", vnm_ctx_error(t->ctx));
            continue;
        }
        if (vnm_tensor_to_host(t->ctx, b->step, &step))
            return fail(t, 1, "%s", vnm_ctx_error(t->ctx));
        if (step < 0) continue; /* saved before its first mask */
        uint8_t *mask = malloc((size_t)vnm_numel(b->mask));
        int rc = !mask ? fail(t, 1, "out of memory") : 0;
        if (!rc && vnm_tensor_to_host(t->ctx, b->mask, mask))
            rc = fail(t, 1, "%s", vnm_ctx_error(t->ctx));
        if (!rc && vnm_srste_set_mask(sr, mask, step, t->err, sizeof t->err))
            rc = fail(t, 2, "%s: %s: %s", t->cmd, b->mask_name, t->err);
        free(mask);
        if (rc) return rc;
    }
    return 0;
}

/* End of an SR-STE stage: every SR-STE linear becomes a mask-fixed sparse weight under its last
 * mask (the same function), and the optimiser starts over on the compressed values, as after a
 * one-shot prune. */
static int srste_freeze_all(trainer *t)
{
    int n = 0;
    for (int li = 0; li < t->m->n_linears; li++) {
        vnm_vit_linear *l = t->m->linears[li];
        if (!l->srste) continue;
        char name[VNM_VIT_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s.weight", l->name);
        vnm_sparse_weight *sw = vnm_srste_freeze(t->ctx, l->srste, name);
        if (!sw) return fail(t, 1, "freeze %s: %s", name, vnm_ctx_error(t->ctx));
        if (vnm_vit_linear_set_sparse(l, sw, t->err, sizeof t->err)) {
            vnm_sparse_weight_free(sw);
            return fail(t, 1, "freeze %s: %s", name, t->err);
        }
        vnm_vit_linear_set_srste(l, NULL);
        n++;
    }
    say(t, "sparse_srste: %d masks frozen; training continues mask-fixed\n", n);
    return t->read_only ? 0 : build_optim(t);
}

/* ---- evaluation, logging, checkpoints ---- */

static int evaluate(trainer *t, const char *stage)
{
    double start = now_s();
    vnm_vit_set_step(t->m, t->prog.step);
    bool grad = vnm_ctx_set_grad_enabled(t->ctx, false);
    vnm_ctx_set_training(t->ctx, false);
    vnm_loader_set_pos(t->test_ld, (vnm_sampler_pos){0, 0}, NULL, 0);
    int64_t nb = vnm_loader_batches_per_epoch(t->test_ld), seen = 0, correct = 0;
    int64_t C = t->r.model.num_classes;
    double loss_sum = 0;
    int64_t B = t->r.data.val_batch_size > 0 ? t->r.data.val_batch_size : t->r.data.batch_size;
    float *logits = malloc((size_t)(B * C) * sizeof *logits); // [B, classes]
    int rc = logits ? 0 : fail(t, 1, "out of memory");
    for (int64_t b = 0; !rc && b < nb; b++) {
        vnm_batch batch;
        if (vnm_loader_next(t->test_ld, &batch, t->err, sizeof t->err)) {
            rc = fail(t, 1, "eval: %s", t->err);
            break;
        }
        const vnm_dataset *ds = &t->test_ds;
        vnm_tensor *x = vnm_tensor_from(t->ctx, VNM_DTYPE_F32, 4,
                                        VNM_SHAPE(batch.size, ds->channels, ds->height, ds->width),
                                        batch.images); // [B, C, H, W]
        vnm_tensor *y = vnm_tensor_from(t->ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(batch.size),
                                        batch.labels); // [B]
        vnm_tensor *out = vnm_vit_forward(t->ctx, t->m, x, NULL); // [B, classes]
        vnm_tensor *loss = vnm_cross_entropy(t->ctx, out, y, -100, 0.0f);
        if (!loss || vnm_tensor_to_host(t->ctx, out, logits)) {
            rc = fail(t, 1, "eval: %s", vnm_ctx_error(t->ctx));
            break;
        }
        loss_sum += (double)vnm_item(t->ctx, loss) * (double)batch.size;
        for (int64_t i = 0; i < batch.size; i++) {
            int64_t best = 0;
            for (int64_t k = 1; k < C; k++)
                if (logits[i * C + k] > logits[i * C + best]) best = k;
            correct += best == batch.labels[i];
        }
        seen += batch.size;
        vnm_ctx_reset_step(t->ctx);
    }
    free(logits);
    vnm_ctx_set_training(t->ctx, true);
    vnm_ctx_set_grad_enabled(t->ctx, grad);
    if (rc) return rc;
    t->val_loss = loss_sum / (double)seen;
    t->val_top1 = (double)correct / (double)seen;
    t->val_images = seen;
    t->val_s = now_s() - start;
    say(t, "eval step %lld [%s] val loss %.4f top1 %.2f%%\n", (long long)t->prog.step, stage,
        t->val_loss, 100 * t->val_top1);
    if (!t->metrics) return 0;
    fprintf(t->metrics, "{\"step\":%lld,\"stage\":\"%s\",\"split\":\"val\",\"loss\":%.9g,"
                        "\"top1\":%.6f}\n", (long long)t->prog.step, stage, t->val_loss,
            t->val_top1);
    fflush(t->metrics);
    return 0;
}

static void fill_state(trainer *t, vnm_run_state *st, vnm_state_tensor *dense,
                       vnm_state_sparse *sparse)
{
    int nd = 0, ns = 0;
    for (int i = 0; i < vnm_vit_param_count(t->m); i++) {
        vnm_vit_param p = vnm_vit_param_at(t->m, i);
        if (p.linear && p.linear->sparse) {
            int li = 0;
            while (t->m->linears[li] != p.linear) li++;
            sparse[ns++] = (vnm_state_sparse){t->m->params[i].name, p.linear->sparse,
                                              t->perm_in[li],
                                              t->r.sparsity.score == VNM_SCORE_RIA ? "ria"
                                                                                  : "magnitude"};
        } else {
            dense[nd++] = (vnm_state_tensor){t->m->params[i].name, p.tensor};
        }
    }
    for (int li = 0; li < t->m->n_linears; li++)
        if (t->m->linears[li]->srste) {
            dense[nd++] = (vnm_state_tensor){t->srste[li].mask_name, t->srste[li].mask};
            dense[nd++] = (vnm_state_tensor){t->srste[li].step_name, t->srste[li].step};
        }
    *st = (vnm_run_state){t->ctx, dense, nd, sparse, ns, t->opt, &t->ocfg,
                          t->train_ld ? vnm_loader_get_pos(t->train_ld) : (vnm_sampler_pos){0, 0},
                          (uint64_t)t->r.run.seed, t->prog, t->recipe_text};
    st->progress.epoch = st->data_pos.epoch;
}

/* Entries fill_state may write: every parameter, and two per SR-STE linear. */
static int state_capacity(const trainer *t)
{
    return vnm_vit_param_count(t->m) + 2 * t->m->n_linears;
}

static int save_checkpoint(trainer *t, char *path, size_t path_len)
{
    int rc = srste_sync(t, true);
    if (rc) return rc;
    int n = state_capacity(t);
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
    double ips = t->window_s > 0 ? (double)t->window_imgs / t->window_s : 0;
    double per_step = (now - t->t0) / (double)(t->prog.step > 0 ? t->prog.step : 1);
    size_t mem = vnm_ctx_step_bytes(t->ctx) + vnm_ctx_persistent_bytes(t->ctx);
    char eta[32];
    format_eta(per_step * (double)(t->total_steps - t->prog.step), eta, sizeof eta);
    say(t, "step %lld/%lld [%s] loss %.3f lr %.1e %.0f img/s ETA %s mem %.0f MB\n",
        (long long)t->prog.step, (long long)t->total_steps, stage, t->last_loss, lr, ips, eta,
        (double)mem / 1e6);
    fprintf(t->metrics, "{\"step\":%lld,\"stage\":\"%s\",\"split\":\"train\",\"loss\":%.9g,"
                        "\"lr\":%.9g,\"throughput\":%.1f,\"unit\":\"img/s\",\"mem_bytes\":%zu}\n",
            (long long)t->prog.step, stage, t->last_loss, lr, ips, mem);
    fflush(t->metrics);
    t->window_s = 0;
    t->window_imgs = 0;
}

/* ---- the loop ---- */

static int train_step(trainer *t, const vnm_recipe_stage *s, double *lr_out)
{
    vnm_ctx *ctx = t->ctx;
    double start = now_s();
    vnm_batch batch;
    if (vnm_loader_next(t->train_ld, &batch, t->err, sizeof t->err))
        return fail(t, 1, "data: %s", t->err);
    const vnm_dataset *ds = &t->train_ds;
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 4,
                                    VNM_SHAPE(batch.size, ds->channels, ds->height, ds->width),
                                    batch.images);                                  // [B, C, H, W]
    vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(batch.size), batch.labels);
    vnm_vit_set_step(t->m, t->prog.step);
    vnm_tensor *logits = vnm_vit_forward(ctx, t->m, x, NULL); // [B, classes]
    vnm_tensor *loss =
        vnm_cross_entropy(ctx, logits, y, -100, (float)t->r.loss.label_smoothing);
    if (!loss) return fail(t, 1, "step %lld: %s", (long long)t->prog.step + 1, vnm_ctx_error(ctx));
    float lv = vnm_item(ctx, loss);
    if (!isfinite(lv))
        return fail(t, 1, "step %lld [%s]: loss is %g; stopping without a checkpoint (the last "
                          "good one stays)", (long long)t->prog.step + 1, s->name, (double)lv);
    vnm_optim_zero_grad(t->opt);
    if (vnm_backward(ctx, loss))
        return fail(t, 1, "step %lld: backward: %s", (long long)t->prog.step + 1,
                    vnm_ctx_error(ctx));
    double clip = isnan(s->optim.clip_grad_norm) ? t->r.optim.clip_grad_norm
                                                 : s->optim.clip_grad_norm;
    if (clip > 0) {
        double norm = vnm_optim_clip_grad_norm(t->opt, clip);
        if (!isfinite(norm))
            return fail(t, 1, "step %lld [%s]: gradient norm is %g; stopping without a "
                              "checkpoint (the last good one stays)",
                        (long long)t->prog.step + 1, s->name, norm);
    }
    double scale = isnan(s->optim.lr) ? 1.0 : s->optim.lr / t->r.optim.lr;
    double lr = t->r.schedule.per_stage
                    ? vnm_schedule_lr(&t->stage_sched[t->prog.stage_index], t->prog.stage_step)
                    : vnm_schedule_lr(&t->sched, t->prog.step);
    lr *= scale;
    vnm_optim_set_lr(t->opt, lr);
    if (vnm_optim_step(t->opt))
        return fail(t, 1, "step %lld: optimiser: %s", (long long)t->prog.step + 1,
                    vnm_ctx_error(ctx));
    vnm_ctx_reset_step(ctx);
    t->last_loss = lv;
    t->window_imgs += batch.size;
    t->window_s += now_s() - start;
    *lr_out = lr;
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
            if ((rc = prune_all(t, false))) return rc;
        } else {
            if (s->kind == VNM_RECIPE_STAGE_SPARSE_SRSTE && (rc = srste_begin(t, s))) return rc;
            say(t, "stage %lld/%lld '%s' (%s): %lld steps\n", (long long)si + 1,
                (long long)r->n_stages, s->name, stage_kind_name(s->kind),
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
        if (s->kind == VNM_RECIPE_STAGE_SPARSE_SRSTE && (rc = srste_freeze_all(t))) return rc;
        /* the end-of-stage checkpoint resumes at the start of the next stage */
        t->prog.stage_index = si + 1;
        t->prog.stage_step = 0;
        if ((rc = save_checkpoint(t, path, sizeof path))) return rc;
    }
    double wall = now_s() - t->t0;
    fprintf(t->metrics, "{\"event\":\"done\",\"step\":%lld,\"train_loss\":%.9g,\"val_loss\":%.9g,"
                        "\"val_top1\":%.6f,\"wall_s\":%.3f,\"steps_run\":%lld}\n",
            (long long)t->prog.step, t->last_loss, t->val_loss, t->val_top1, wall,
            (long long)(t->prog.step - step0));
    fflush(t->metrics);
    say(t, "done: step %lld, val loss %.4f, top1 %.2f%%, %.1f s\n", (long long)t->prog.step,
        t->val_loss, 100 * t->val_top1, wall);
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

/* Reads the stored recipe and progress, rebuilds the model in the stage the checkpoint is in,
 * then restores every tensor. */
static int resume_from(trainer *t, const char *path, char **overrides, int n)
{
    char *stored = NULL, *file = t->ckpt;
    int64_t stage_index = 0, stage_step = 0;
    vnm_ckpt_reader *rd = vnm_ckpt_open(path, t->err, sizeof t->err);
    if (!rd) return fail(t, 2, "%s: %s", t->cmd, t->err);
    snprintf(file, sizeof t->ckpt, "%s", vnm_ckpt_file(rd));
    if (vnm_ckpt_get_str(rd, "/", "recipe", &stored, t->err, sizeof t->err) ||
        vnm_ckpt_get_i64(rd, "/", "stage_index", &stage_index, t->err, sizeof t->err) ||
        vnm_ckpt_get_i64(rd, "/", "stage_step", &stage_step, t->err, sizeof t->err)) {
        vnm_ckpt_close(rd);
        free(stored);
        return fail(t, 2, "%s: %s", t->cmd, t->err);
    }
    /* the stored text goes through the loader again so overrides are checked as in `train` */
    char tmp[] = "/tmp/vnm-resume-XXXXXX";
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int rc = 0;
    if (!f && fd >= 0) close(fd);
    if (!f || fputs(stored, f) < 0 || fclose(f) != 0)
        rc = fail(t, 1, "%s: temp file failed", t->cmd);
    char **ov = NULL;
    if (!rc) rc = (ov = follow_output_dir(overrides, &n)) ? 0 : fail(t, 1, "out of memory");
    if (!rc) rc = load_recipe(t, tmp, ov, n);
    free_overrides(ov, n);
    if (fd >= 0) unlink(tmp);
    if (!rc) rc = setup(t, true);
    if (!rc) {
        say(t, "resume: from %s\n", file);
        print_recipe_diff(t, stored);
        /* rebuild the layers as the checkpoint's stage has them: sparse after a prune or a
         * finished SR-STE stage, with SR-STE masks inside an SR-STE stage */
        bool pruned = false;
        for (int64_t i = 0; i < stage_index && i < t->r.n_stages; i++)
            pruned |= t->r.stages[i].kind == VNM_RECIPE_STAGE_PRUNE ||
                      t->r.stages[i].kind == VNM_RECIPE_STAGE_SPARSE_SRSTE;
        const vnm_recipe_stage *cur =
            stage_index < t->r.n_stages ? &t->r.stages[stage_index] : NULL;
        if (pruned) {
            rc = prune_all(t, true);
        } else {
            if (cur && cur->kind == VNM_RECIPE_STAGE_SPARSE_SRSTE && stage_step > 0)
                rc = srste_begin(t, cur);
            if (!rc && !t->read_only) rc = build_optim(t);
        }
    }
    for (int li = 0; !rc && t->m && li < t->m->n_linears; li++) {
        vnm_vit_linear *l = t->m->linears[li];
        char ds[PATH_LEN];
        vnm_ckpt_dtype dt;
        int nd;
        int64_t shape[VNM_CKPT_MAX_DIMS];
        snprintf(ds, sizeof ds, "/sparse/%s.weight/perm_in", l->name);
        if (!l->sparse || vnm_ckpt_shape(rd, ds, &dt, &nd, shape, NULL, 0)) continue;
        t->perm_in[li] = malloc((size_t)l->in * sizeof *t->perm_in[li]);
        if (!t->perm_in[li] ||
            vnm_ckpt_read(rd, ds, VNM_CKPT_I32, 1, VNM_SHAPE(l->in), t->perm_in[li], t->err,
                          sizeof t->err))
            rc = fail(t, 2, "%s: %s", t->cmd, t->err);
    }
    vnm_ckpt_close(rd);
    free(stored);
    if (rc) return rc;
    int np = state_capacity(t);
    vnm_state_tensor *dense = malloc((size_t)np * sizeof *dense);
    vnm_state_sparse *sparse = malloc((size_t)np * sizeof *sparse);
    if (!dense || !sparse) rc = fail(t, 1, "out of memory");
    vnm_run_state st;
    if (!rc) {
        fill_state(t, &st, dense, sparse);
        if (vnm_state_load(file, &st, NULL, t->err, sizeof t->err))
            rc = fail(t, 2, "%s: %s", t->cmd, t->err);
    }
    free(dense);
    free(sparse);
    if (!rc) rc = srste_sync(t, false);
    if (rc) return rc;
    if (t->train_ld && vnm_loader_set_pos(t->train_ld, st.data_pos, t->err, sizeof t->err))
        return fail(t, 2, "%s: %s", t->cmd, t->err);
    t->prog = st.progress;
    if (!t->read_only && (rc = trim_metrics(t))) return rc;
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
    trainer t = {.cmd = "resume"};
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
    t->read_only = true;
    t->no_data = !with_data;
    t->cmd = cmd;
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
    return (vnm_restored){t->ctx, t->m, t->ckpt, p->step, t->r.stages[si].name, t->perm_in};
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
    if (!rc) *res = (vnm_eval_result){t->val_loss, t->val_top1, t->val_images, t->val_s};
    return rc;
}
