/* train/task.h — what the training loop (train/trainer.c) needs from a model family, as a table of
 * function pointers over an opaque state, in the manner of ggml's backend interface. A task owns
 * its data (data sets, loaders, the training sampler), its model and what a stage kind does to
 * the model (one-shot pruning, SR-STE masks, LoRA adapters and their masks). The loop owns the
 * recipe, the run directory, the step plan, the lr schedules, backward, clipping and the
 * optimiser, evaluation logging, checkpoints and resume; it picks the task from model.arch.
 *
 * Conventions of the entries: st is the state setup made. An entry returning int returns an exit
 * code (0 ok, 1 runtime failure, 2 bad input) and, when not 0, leaves its message in env->msg
 * (vnm_task_fail); the loop prints it as it is after "vnm: ". Progress lines go through
 * vnm_task_say, which is silent in a read-only restore. Tensors handed to the loop stay the
 * state's; the loop frees nothing of a task but through free.
 */
#ifndef VNM_TASK_H
#define VNM_TASK_H

#include <stdbool.h>
#include <stdint.h>

#include "../autograd/autograd.h"
#include "../data/data.h"
#include "checkpoint.h"
#include "models/vit.h"
#include "recipe.h"
#include "state.h"
#include "trainer.h"

/* What the loop hands a task; it lives in the loop as long as the task's state does. */
typedef struct {
    vnm_ctx *ctx;         /* the run's context; NULL until set-up (the loop creates it) */
    const vnm_recipe *r;  /* the resolved recipe */
    bool read_only;       /* vnm_trainer_restore: no training split, loader or optimiser */
    bool no_data;         /* no data set at all (`vnm export`) */
    const char *cmd;      /* "resume", "eval", "export": the command a checkpoint is restored
                           * for, to name in messages about it; NULL for `vnm train` */
    void *loop;           /* the loop's own, for vnm_task_say */
    char msg[2048];       /* a failing entry's message */
} vnm_task_env;

/* The metrics an evaluation reports beside the loss (vnm_task_iface.metrics). */
typedef enum { VNM_TASK_TOP1 = 1 << 0, VNM_TASK_PPL = 1 << 1 } vnm_task_metric;

typedef struct {
    double loss;   /* mean loss over the evaluation split */
    double top1;   /* fraction of items classified right (VNM_TASK_TOP1) */
    double ppl;    /* perplexity (VNM_TASK_PPL) */
    int64_t items; /* images or tokens evaluated */
} vnm_task_eval;

typedef struct vnm_task_iface {
    const char *name; /* the model family in the model line: "vit" */
    const char *unit; /* what throughput counts per second: "img/s" or "tok/s" */
    unsigned metrics; /* the vnm_task_metric bits evaluate fills; the loop logs those */

    /* ---- before set-up (no state yet; env->ctx is NULL) ---- */
    /* Whether the task runs the recipe as a whole (data set, sections); then, for each stage in
     * order, check_stage: its kind on its device. The loop's own per-stage checks follow each
     * check_stage, so messages come in recipe order. */
    int (*check)(vnm_task_env *env);
    int (*check_stage)(vnm_task_env *env, int64_t i);

    /* ---- life ---- */
    /* Loads the data (both splits and loaders; the evaluation split only with env->read_only,
     * nothing with env->no_data), then builds the model (and loads model.weights). The task may
     * keep env. *st is set before anything can fail, so free releases a partial set-up too. */
    int (*setup)(vnm_task_env *env, void **st);
    /* Releases everything of the state (NULL is fine), before the loop destroys the context. */
    void (*free)(void *st);
    int64_t (*numel)(const void *st); /* the model's parameter count, for the model line */

    /* ---- data ---- */
    int64_t (*batches_per_epoch)(const void *st); /* training batches per epoch (drop_last) */
    /* The training sampler's position, saved in checkpoints ({0, 0} without a training loader),
     * and set on resume (nothing to do without one). */
    vnm_sampler_pos (*get_pos)(const void *st);
    int (*set_pos)(void *st, vnm_sampler_pos pos);

    /* ---- one training step: step_begin, train_forward, extra_loss; then the loop's backward,
     * clipping, lr and optimiser step, and vnm_ctx_reset_step ---- */
    /* Called first in every step with the number of steps done (SR-STE masks follow it; LoRA
     * re-pruning is due on it). */
    int (*step_begin)(void *st, int64_t step);
    /* The next training batch through the model: *loss the scalar training loss on the tape,
     * *items the images or tokens in the batch (throughput). Returns non-zero for failures
     * outside the ops (the data); an op that fails leaves *loss NULL and the context's error. */
    int (*train_forward)(void *st, vnm_tensor **loss, int64_t *items);
    /* Optional (NULL: none): a scalar term the loop adds to the loss (LoRA's regulariser);
     * *term NULL adds nothing, and a failed op leaves it NULL with the context's error. */
    int (*extra_loss)(void *st, vnm_tensor **term);
    /* One pass over the evaluation split with gradients off and the context in eval mode (after
     * it, gradients are as they were and training mode is on); step: steps done. Fills the loss,
     * items and the fields of the metrics bits. */
    int (*evaluate)(void *st, int64_t step, vnm_task_eval *out);

    /* ---- parameters ---- */
    /* The trainable tensors in a fixed order, the optimiser's; valid while params_version stays. */
    int (*n_params)(const void *st);
    vnm_tensor *(*param)(const void *st, int i);
    /* Changes whenever the parameter list does (a prune swaps a dense weight for compressed
     * values): the loop then rebuilds the optimiser, carrying over the state of the tensors that
     * stay. */
    uint64_t (*params_version)(const void *st);

    /* ---- checkpoints (train/state.h) ---- */
    /* An upper bound of the entries state_entries writes into each of its two arrays. */
    int (*state_capacity)(const void *st);
    /* The model part of a checkpoint: dense tensors (parameters under their names, and buffers
     * such as SR-STE masks) and sparse weights (with input permutation and score). Every
     * parameter must be a tensor or a sparse weight's vals. Names and tensors stay the state's. */
    void (*state_entries)(const void *st, vnm_state_tensor *dense, int *n_dense,
                          vnm_state_sparse *sparse, int *n_sparse);
    /* Before a save: copies what lives outside tensors (SR-STE masks) into the listed buffers.
     * After a load: back from them. */
    int (*state_saving)(void *st);
    int (*state_loaded)(void *st);

    /* ---- stages ---- */
    /* A training stage starts (also when a resume continues inside it), before its stage line. */
    int (*stage_begin)(void *st, const vnm_recipe_stage *s);
    /* A stage (any kind) ends: after its final evaluation, before its end-of-stage checkpoint. */
    int (*stage_end)(void *st, const vnm_recipe_stage *s);
    /* A prune stage: one-shot, after its stage line; takes no optimiser step. */
    int (*prune)(void *st);
    /* Resume, before the checkpoint's tensors are loaded: rebuilds the model's structure as it
     * is stage_step steps into stages[stage_index] (stage_index may be n_stages: the run's end)
     * so they fit, and reads from rd what train/state.h does not restore (input permutations). */
    int (*resume)(void *st, int64_t stage_index, int64_t stage_step, vnm_ckpt_reader *rd);
    /* Fills the model part of a read-only restore (model, perm_in). */
    void (*restored)(const void *st, vnm_restored *out);
} vnm_task_iface;

/* ---- the tasks ---- */
extern const vnm_task_iface vnm_task_vit;   /* ViT on Fashion-MNIST: train/task_vit.c */
extern const vnm_task_iface vnm_task_llama; /* LLaMA on token shards: train/task_llama.c */

/* The ViT config of a recipe's model section (a size preset, then the explicit dims); the
 * message is the preset's. */
vnm_status vnm_task_vit_config(const vnm_recipe *r, vnm_vit_config *cfg, char *err,
                               size_t err_len);

/* ---- what the loop provides to tasks (train/trainer.c) ---- */
/* A console line, also appended to log.txt. */
void vnm_task_say(const vnm_task_env *env, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Leaves the message in env->msg; returns code. */
int vnm_task_fail(vnm_task_env *env, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An evaluation now, logged (console and metrics.jsonl) under `label` as the stage name: e.g. the
 * one-shot pruned model at the first mask choice of a LoRA schedule. */
int vnm_task_evaluate(vnm_task_env *env, const char *label);
/* Zeroes the optimiser state (moments, per-parameter step counts) of these parameters: adapters
 * re-drawn at a LoRA re-prune start a new phase. Nothing without an optimiser. */
void vnm_task_reset_optim_state(const vnm_task_env *env, vnm_tensor *const *params, int n);
/* The recipe's name of a stage kind ("sparse_srste"). */
const char *vnm_task_stage_kind(vnm_recipe_stage_kind k);

#endif
