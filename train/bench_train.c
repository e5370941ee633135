/* train/bench_train.c — `vnm bench train`: the whole ViT training step as `vnm train` runs it
 * (forward, cross-entropy, zero-grad + backward, gradient clipping when the recipe clips, the
 * optimiser step, step reset) on one fixed synthetic batch (normal(0, 1) images, uniform labels,
 * fixed seed; no dataset), on the CPU or the CUDA context. The batch is made on the device once,
 * so the step is timed without host-side data work. Models: a recipe's (quickstart =
 * recipes/quickstart.yaml, read through train/recipe.h so the sizes cannot drift) or the timm DeiT
 * presets. Reports ms/step and images/s of the best of `reps` windows of `steps` steps, after
 * warm-up steps; each window ends by copying the loss to the host, which waits for all the
 * window's work on the device (everything runs on the default stream). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../optim/loss_scale.h"
#include "../optim/optim.h"
#include "bench.h"
#include "cli.h"
#include "models/vit.h"
#include "recipe.h"
#include "task.h"
#include "trainer.h"

#ifndef VNM_SOURCE_ROOT
#define VNM_SOURCE_ROOT "."
#endif

static const char usage[] =
    "usage: vnm bench train [--model quickstart|deit_small|deit_tiny|RECIPE.yaml]\n"
    "                       [--device cpu|cuda] [--precision f32|bf16|f16] [--batch N]\n"
    "                       [--threads N] [--reps N] [--steps N] [--warmup N]\n"
    "                       [--checkpointing] [--pattern V:N:M] [--profile]\n"
    "\n"
    "Times the full ViT training step (forward, cross-entropy, backward, clipping if the recipe\n"
    "clips, AdamW, step reset) on one fixed synthetic batch (seeded; no dataset needed).\n"
    "  --model M     quickstart (default): recipes/quickstart.yaml's model, batch, optimiser;\n"
    "                RECIPE.yaml: any ViT recipe the same way; deit_small, deit_tiny: the timm\n"
    "                presets (224x224x3, 1000 classes), AdamW lr 5e-4, weight decay 0.05\n"
    "  --device D    cpu (default) or cuda\n"
    "  --precision P f32 (default), or bf16/f16 products and attention (run.precision; f16\n"
    "                with dynamic loss scaling)\n"
    "  --batch N     images per step (default: the recipe's data.batch_size; deit: 64 on cuda,\n"
    "                16 on cpu)\n"
    "  --threads N   OpenMP/OpenBLAS threads (default: all cores)\n"
    "  --reps N      timed windows; the best is reported, all are listed (default 3)\n"
    "  --steps N     steps per window (default 10; deit on cpu: 2)\n"
    "  --warmup N    untimed steps first (default 3; deit on cpu: 1)\n"
    "  --checkpointing  activation checkpointing of every block (model.activation_checkpointing)\n"
    "  --pattern P   the step of a sparse_fixed stage: the blocks' qkv, proj, fc1 and fc2 pruned\n"
    "                to P by magnitude first (the sparse kernels on the cpu, the dense form on\n"
    "                cuda)\n"
    "  --profile     then one more window with every op timed (device synchronised after\n"
    "                each op), printed as a table on stderr, largest first\n"
    "\n"
    "Prints JSON lines on stdout (ms per step, images/s; no baseline: tools/bench_vs_torch.sh\n"
    "compares with PyTorch) and a table on stderr. Exit codes: 0 ok, 1 runtime failure, 2 bad\n"
    "input or no CUDA device.\n";

typedef struct {
    const char *model;
    vnm_device device;
    vnm_dtype precision; /* the matmul dtype */
    bool checkpointing;
    const char *pattern; /* NULL: dense */
    int batch, threads, reps, steps, warmup; /* batch, steps, warmup: -1 = default */
    bool profile;
} train_opts;

/* What one benchmark runs: the model, batch and optimiser. */
typedef struct {
    vnm_vit_config vit;
    int64_t batch;
    vnm_optim_config optim;
    double clip; /* 0: no clipping */
    uint64_t seed;
} train_setup;

/* recipes/quickstart.yaml from the working directory, else from the source tree this program
 * was built from. */
static const char *quickstart_path(char *buf, size_t len)
{
    static const char rel[] = "recipes/quickstart.yaml";
    if (access(rel, R_OK) == 0) return rel;
    snprintf(buf, len, "%s/%s", VNM_SOURCE_ROOT, rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* The model and optimiser of a recipe, mapped as `vnm train` maps them (vnm_task_vit_config,
 * vnm_trainer_optim_config). */
static int setup_from_recipe(const char *path, train_setup *s)
{
    vnm_recipe r;
    char err[1024];
    if (vnm_recipe_load(path, NULL, 0, &r, err, sizeof err)) {
        fprintf(stderr, "vnm bench train: %s\n", err);
        return 2;
    }
    int rc = 0;
    if (r.model.arch != VNM_RECIPE_ARCH_VIT) {
        fprintf(stderr, "vnm bench train: %s: model.arch: only vit is benchmarked\n", path);
        rc = 2;
    } else if (vnm_task_vit_config(&r, &s->vit, err, sizeof err)) {
        fprintf(stderr, "vnm bench train: %s: model.size: %s\n", path, err);
        rc = 2;
    } else {
        s->batch = r.data.batch_size;
        s->optim = vnm_trainer_optim_config(&r);
        s->clip = r.optim.clip_grad_norm;
        s->seed = (uint64_t)r.run.seed;
    }
    vnm_recipe_free(&r);
    return rc;
}

static int resolve_setup(const train_opts *o, train_setup *s)
{
    bool deit = !strcmp(o->model, "deit_small") || !strcmp(o->model, "deit_tiny");
    if (deit) {
        char err[256];
        if (vnm_vit_config_preset(o->model + 5, &s->vit, err, sizeof err)) {
            fprintf(stderr, "vnm bench train: %s\n", err);
            return 2;
        }
        s->batch = o->device == VNM_DEVICE_CUDA ? 64 : 16;
        s->optim = vnm_optim_config_default(VNM_OPTIM_ADAMW);
        s->optim.lr = 5e-4;
        s->optim.weight_decay = 0.05;
        s->clip = 0;
        s->seed = 0;
    } else {
        char buf[4096];
        const char *path = o->model, *dot = strrchr(o->model, '.');
        if (!strcmp(o->model, "quickstart")) {
            if (!(path = quickstart_path(buf, sizeof buf))) {
                fprintf(stderr, "vnm bench train: recipes/quickstart.yaml is neither in the "
                                "working directory nor in %s; pass --model PATH/quickstart.yaml\n",
                        VNM_SOURCE_ROOT);
                return 2;
            }
        } else if (!dot || (strcmp(dot, ".yaml") && strcmp(dot, ".yml"))) {
            fprintf(stderr, "vnm bench train: unknown model '%s' (expected quickstart, deit_small, "
                            "deit_tiny or a recipe file *.yaml)\n", o->model);
            return 2;
        }
        int rc = setup_from_recipe(path, s);
        if (rc) return rc;
    }
    if (o->batch > 0) s->batch = o->batch;
    return 0;
}

/* The blocks' linears pruned to `pattern` by magnitude (l1 columns, no permutation). */
static int prune_blocks(vnm_ctx *ctx, vnm_vit *m, const char *pattern)
{
    vnm_pattern p;
    char err[256];
    if (vnm_pattern_parse(pattern, &p, err, sizeof err)) return 1;
    for (int64_t b = 0; b < m->cfg.depth; b++) {
        vnm_vit_linear *ls[4] = {&m->blocks[b].qkv, &m->blocks[b].proj, &m->blocks[b].fc1,
                                 &m->blocks[b].fc2};
        for (int k = 0; k < 4; k++) {
            vnm_vit_linear *l = ls[k];
            int64_t n = l->out * l->in;
            float *W = malloc((size_t)n * sizeof *W), *S = malloc((size_t)n * sizeof *S);
            uint8_t *mask = malloc((size_t)n);
            vnm_sparse_host h = {0};
            int rc = !W || !S || !mask || vnm_tensor_to_host(ctx, l->weight, W) ||
                     vnm_score_compute(VNM_SCORE_MAGNITUDE, W, l->out, l->in, NULL, 0, S, err,
                                       sizeof err) ||
                     vnm_mask_select(p, VNM_SELECT_L1, S, l->out, l->in, mask, err, sizeof err) ||
                     vnm_sparse_compress(p, W, mask, l->out, l->in, NULL, NULL, &h, err,
                                         sizeof err);
            vnm_sparse_weight *sw = rc ? NULL : vnm_sparse_weight_new(ctx, &h, l->name);
            rc = rc || !sw || vnm_vit_linear_set_sparse(l, sw, err, sizeof err);
            vnm_sparse_host_free(&h);
            free(W), free(S), free(mask);
            if (rc) {
                fprintf(stderr, "vnm bench train: pruning %s: %s\n", l->name,
                        err[0] ? err : vnm_ctx_error(ctx));
                return 1;
            }
        }
    }
    return 0;
}

/* One training step; on the last step of a window *loss receives the loss (a device → host copy
 * that waits for the step to finish). scaler: f16's loss scaling as the trainer does it, or
 * NULL. */
static int train_step(vnm_ctx *ctx, vnm_vit *m, vnm_optim *opt, vnm_tensor *x, vnm_tensor *y,
                      double clip, vnm_loss_scaler *scaler, float *loss)
{
    vnm_tensor *logits = vnm_vit_forward(ctx, m, x, NULL); // [B, classes]
    vnm_tensor *l = vnm_cross_entropy(ctx, logits, y, -100, 0.0f); // [1]
    if (!l) return 1;
    vnm_optim_zero_grad(opt);
    vnm_tensor *seed = scaler ? vnm_tensor_empty(ctx, VNM_DTYPE_F32, l->ndim, l->shape) : NULL;
    if (scaler && (!seed || vnm_tensor_fill(ctx, seed, scaler->scale))) return 1;
    if (scaler ? vnm_backward_seed(ctx, l, seed) : vnm_backward(ctx, l)) return 1;
    vnm_profile_mark(ctx, "(backward tail)");
    if (scaler) {
        bool finite = vnm_loss_scaler_unscale(scaler, opt);
        vnm_loss_scaler_update(scaler, finite);
        vnm_profile_mark(ctx, "(unscale)");
        if (!finite) { /* skipped, as the trainer skips it */
            if (loss) *loss = vnm_item(ctx, l);
            vnm_ctx_reset_step(ctx);
            return vnm_ctx_status(ctx) != VNM_OK;
        }
    }
    if (clip > 0 && !isfinite(vnm_optim_clip_grad_norm(opt, clip))) return 1;
    vnm_profile_mark(ctx, "(clip_grad_norm)");
    if (vnm_optim_step(opt)) return 1;
    vnm_profile_mark(ctx, "(optimiser step)");
    if (loss) *loss = vnm_item(ctx, l);
    vnm_ctx_reset_step(ctx);
    return 0;
}

/* The synthetic batch, made on the context's device: images normal(0, 1) from the context RNG,
 * labels uniform over the classes from a Philox stream of the seed, uploaded once. */
static int make_batch(vnm_ctx *ctx, const train_setup *s, vnm_tensor **x, vnm_tensor **y)
{
    const vnm_vit_config *c = &s->vit;
    int64_t B = s->batch;
    *x = vnm_buffer_new(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(B, c->in_chans, c->img_size, c->img_size),
                        "images"); // [B, C, H, W]
    *y = vnm_buffer_new(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(B), "labels"); // [B]
    int32_t *labels = malloc((size_t)B * sizeof *labels);
    int rc = !*x || !*y || !labels || vnm_rng_normal(ctx, *x, 0.0f, 1.0f);
    for (int64_t i = 0; !rc && i < B; i++) {
        uint32_t bits[4];
        vnm_philox4x32(s->seed, (uint64_t)i, 0x1abe1, bits);
        labels[i] = (int32_t)(bits[0] % (uint32_t)c->num_classes);
    }
    if (!rc) rc = vnm_tensor_from_host(ctx, *y, labels) != VNM_OK;
    free(labels);
    return rc;
}

static int run(const train_opts *o)
{
    train_setup s;
    int rc = resolve_setup(o, &s);
    if (rc) return rc;
    bool cuda = o->device == VNM_DEVICE_CUDA, deit_cpu = !cuda && !strncmp(o->model, "deit_", 5);
    int steps = o->steps > 0 ? o->steps : deit_cpu ? 2 : 10;
    int warmup = o->warmup >= 0 ? o->warmup : deit_cpu ? 1 : 3;
    if (cuda) {
        char reason[256];
        if (!vnm_device_available(VNM_DEVICE_CUDA, reason, sizeof reason)) {
            fprintf(stderr, "vnm bench train: %s%s\n",
                    strstr(reason, "no CUDA device") ? "" : "no CUDA device: ", reason);
            return 2;
        }
    }
    vnm_ctx_config cc = {o->device, s.seed, o->threads};
    vnm_ctx *ctx = vnm_ctx_create(&cc);
    if (!ctx) return 1;
    if (vnm_ctx_set_matmul_dtype(ctx, o->precision)) {
        fprintf(stderr, "vnm bench train: %s\n", vnm_ctx_error(ctx));
        vnm_ctx_destroy(ctx);
        return 2;
    }
    vnm_ctx_set_free_in_backward(ctx, true); /* as `vnm train` runs */
    vnm_loss_scaler scaler_state = vnm_loss_scaler_init(65536.0f, 2000);
    vnm_loss_scaler *scaler = o->precision == VNM_DTYPE_F16 ? &scaler_state : NULL;
    vnm_vit *m = vnm_vit_new(ctx, &s.vit);
    if (m) vnm_vit_set_checkpointing(m, o->checkpointing);
    if (m && o->pattern && prune_blocks(ctx, m, o->pattern)) {
        vnm_vit_free(m);
        vnm_ctx_destroy(ctx);
        return 1;
    }
    vnm_optim *opt = NULL;
    vnm_tensor *x = NULL, *y = NULL;
    int np = m ? vnm_vit_param_count(m) : 0;
    vnm_tensor **params = malloc((size_t)(np > 0 ? np : 1) * sizeof *params);
    rc = !m || !params;
    for (int i = 0; !rc && i < np; i++) params[i] = vnm_vit_param_at(m, i).tensor;
    if (!rc) opt = vnm_optim_create(ctx, &s.optim);
    rc = rc || !opt || vnm_optim_add_decay_groups(opt, params, np, NULL, 0) ||
         make_batch(ctx, &s, &x, &y);
    free(params);

    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const vnm_vit_config *c = &s.vit;
    char where[112];
    const char *prec = o->precision == VNM_DTYPE_F32 ? "" : vnm_dtype_name(o->precision);
    char ck[48];
    snprintf(ck, sizeof ck, "%s%s%s", o->checkpointing ? " checkpointed" : "",
             o->pattern ? " " : "", o->pattern ? o->pattern : "");
    if (cuda) snprintf(where, sizeof where, "cuda%s%s%s", *prec ? " " : "", prec, ck);
    else snprintf(where, sizeof where, "cpu %dt%s%s%s", threads, *prec ? " " : "", prec, ck);
    /* the config line tools/bench_vs_torch.sh compares with tools/bench_torch_step.py's */
    fprintf(stderr,
            "vnm bench train: %s on %s, best of %d windows of %d steps after %d warm-up steps\n"
            "config: img=%lld patch=%lld chans=%lld classes=%lld dim=%lld depth=%lld heads=%lld "
            "mlp_ratio=%g qkv_bias=1 drop_path=%g batch=%lld optim=%s lr=%g wd=%g betas=%g,%g "
            "eps=%g clip=%g\n",
            o->model, where, o->reps, steps, warmup, (long long)c->img_size, (long long)c->patch,
            (long long)c->in_chans, (long long)c->num_classes, (long long)c->embed_dim,
            (long long)c->depth, (long long)c->num_heads, c->mlp_ratio,
            (double)c->drop_path_rate, (long long)s.batch, vnm_optim_kind_name(s.optim.kind),
            s.optim.lr, s.optim.weight_decay, s.optim.beta1, s.optim.beta2, s.optim.eps, s.clip);

    double best = 1e30, *win = calloc((size_t)o->reps, sizeof *win);
    float loss = NAN;
    rc = rc || !win;
    for (int i = 0; !rc && i < warmup; i++)
        rc = train_step(ctx, m, opt, x, y, s.clip, scaler, i == warmup - 1 ? &loss : NULL);
    for (int r = 0; !rc && r < o->reps; r++) {
        double t0 = vnm_bench_now();
        for (int i = 0; !rc && i < steps; i++)
            rc = train_step(ctx, m, opt, x, y, s.clip, scaler, i == steps - 1 ? &loss : NULL);
        win[r] = (vnm_bench_now() - t0) / steps;
        if (win[r] < best) best = win[r];
    }
    if (!rc && o->profile) { /* one more window, each op synchronised and timed */
        rc = vnm_ctx_set_profile(ctx, true) != VNM_OK;
        for (int i = 0; !rc && i < steps; i++)
            rc = train_step(ctx, m, opt, x, y, s.clip, scaler, NULL);
        if (!rc) {
            fprintf(stderr, "profile of %d steps (device synchronised after every op):\n", steps);
            vnm_profile_print(ctx, stderr);
        }
    }
    if (!rc && !isfinite(loss)) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "the loss is %g", (double)loss);
        rc = 1;
    }
    if (rc) {
        fprintf(stderr, "vnm bench train: %s\n",
                vnm_ctx_error(ctx)[0] ? vnm_ctx_error(ctx) : "out of memory");
    } else {
        char name[256];
        snprintf(name, sizeof name, "vit %s B=%lld %s step", o->model, (long long)s.batch, where);
        vnm_bench_report("train", name, best * 1e3, "ms", NULL, 0);
        snprintf(name, sizeof name, "vit %s B=%lld %s throughput", o->model, (long long)s.batch,
                 where);
        vnm_bench_report("train", name, (double)s.batch / best, "img/s", NULL, 0);
        fprintf(stderr, "       windows (ms/step):");
        for (int r = 0; r < o->reps; r++) fprintf(stderr, " %.2f", win[r] * 1e3);
        fprintf(stderr, "; last loss %.4f; %lld params; memory %.1f MB (parameters, grads, "
                        "moments) + %.1f MB (step arena peak)\n",
                (double)loss, (long long)vnm_vit_numel(m),
                (double)vnm_ctx_persistent_bytes(ctx) / 1e6, (double)vnm_ctx_step_bytes(ctx) / 1e6);
    }
    free(win);
    vnm_optim_destroy(opt);
    vnm_vit_free(m);
    vnm_ctx_destroy(ctx);
    return rc;
}

static int parse_precision(const char *opt, const char *v, vnm_dtype *out)
{
    static const char *const names[] = {"f32", "bf16", "f16"};
    static const vnm_dtype dts[] = {VNM_DTYPE_F32, VNM_DTYPE_BF16, VNM_DTYPE_F16};
    if (!v) return vnm_cli_missing("bench train", opt);
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, names[i])) {
            *out = dts[i];
            return 0;
        }
    fprintf(stderr, "vnm bench train: %s: '%s' (expected f32, bf16 or f16)\n", opt, v);
    return 2;
}

int vnm_cmd_bench_train(int argc, char **argv)
{
    train_opts o = {"quickstart", VNM_DEVICE_CPU, VNM_DTYPE_F32, false, NULL, -1, 0, 3, -1, -1,
                    false};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--profile")) {
            o.profile = true;
            continue;
        } else if (!strcmp(a, "--checkpointing")) {
            o.checkpointing = true;
            continue;
        } else if (!strcmp(a, "--model")) {
            if (!v) return vnm_cli_missing("bench train", a);
            o.model = v;
        } else if (!strcmp(a, "--device")) {
            rc = vnm_cli_device("bench train", a, v, &o.device);
        } else if (!strcmp(a, "--precision")) {
            rc = parse_precision(a, v, &o.precision);
        } else if (!strcmp(a, "--pattern")) {
            vnm_pattern p;
            char err[256];
            if (!v) return vnm_cli_missing("bench train", a);
            if (vnm_pattern_parse(v, &p, err, sizeof err)) {
                fprintf(stderr, "vnm bench train: --pattern: %s\n", err);
                return 2;
            }
            o.pattern = v;
        } else if (!strcmp(a, "--batch")) {
            rc = vnm_cli_int("bench train", a, v, 1, 1 << 20, &o.batch);
        } else if (!strcmp(a, "--threads")) {
            rc = vnm_cli_int("bench train", a, v, 1, 1024, &o.threads);
        } else if (!strcmp(a, "--reps")) {
            rc = vnm_cli_int("bench train", a, v, 1, 1024, &o.reps);
        } else if (!strcmp(a, "--steps")) {
            rc = vnm_cli_int("bench train", a, v, 1, 1 << 20, &o.steps);
        } else if (!strcmp(a, "--warmup")) {
            rc = vnm_cli_int("bench train", a, v, 0, 1 << 20, &o.warmup);
        } else {
            fprintf(stderr, "vnm bench train: unknown option '%s'\n%s", a, usage);
            return 2;
        }
        if (rc) return rc;
        i++; /* every other option takes a value */
    }
    return run(&o);
}
