/* train/trainer.h — `vnm train` and `vnm resume`: a model family's task (train/task.h: the ViT
 * on Fashion-MNIST, the LLaMA on token shards) driven by a recipe (train/recipe.h) through its
 * ordered stages (e.g. dense → prune → sparse_fixed, or lora_dense → lora_sparse_dynamic →
 * lora_sparse_fixed), with evaluation, the progress line, the run directory
 * (DESIGN.md "Run directory"), checkpoints through train/state.h, and exact resume.
 *
 * Step accounting: only training stages take optimiser steps. A prune stage is one-shot and takes
 * none, whatever length it declares. A stage given in epochs takes round(epochs · batches per
 * epoch) steps (drop_last batches); stages given as fractions share what is left of the run:
 * total = Σ(steps of the other training stages) / (1 − Σ fractions), each fraction stage
 * round(fraction · total) steps, at least 1. The lr schedule runs over the total of all stages;
 * a stage's optim.lr scales it by stage lr / optim.lr.
 *
 * Exit codes of the commands: 0 done (or stopped by SIGINT/SIGTERM after writing a checkpoint),
 * 1 runtime failure (e.g. a non-finite loss: no checkpoint is written, the last good one stays),
 * 2 bad input (recipe, paths, unsupported settings).
 */
#ifndef VNM_TRAINER_H
#define VNM_TRAINER_H

#include <stdbool.h>

#include "../autograd/autograd.h"
#include "../optim/optim.h"
#include "models/llama.h"
#include "models/vit.h"
#include "recipe.h"

/* `vnm train RECIPE [key=value ...]`: argv[0] is the recipe path, the rest are overrides. */
int vnm_cmd_train(int argc, char **argv);
/* `vnm resume RUN_DIR|CKPT [key=value ...]`: continues from the checkpoint (a run directory
 * resolves to its latest one) with the recipe stored in it plus the overrides. */
int vnm_cmd_resume(int argc, char **argv);

/* The optimiser settings of a recipe's optim section (kind and hyper-parameters; the lr is the
 * base the schedules scale). */
vnm_optim_config vnm_trainer_optim_config(const vnm_recipe *r);

/* A run restored read-only from a checkpoint, for `vnm eval` and `vnm export` (train/eval.c,
 * train/export.c): the path resolves, the recipe stored in the checkpoint takes the overrides, and
 * the model is rebuilt and its weights (dense, or compressed sparse with permutations) restored by
 * the code of `vnm resume`, without an optimiser. The run directory is not touched; nothing is
 * printed but errors, on stderr, prefixed by cmd. */
typedef struct vnm_trainer vnm_trainer;

typedef struct {
    vnm_ctx *ctx;
    vnm_vit *model;          /* the ViT task's model, or NULL */
    vnm_llama *llama;        /* the LLaMA task's model (with its adapters), or NULL */
    const char *file;        /* the checkpoint file the path resolved to */
    int64_t step;            /* optimiser steps done when it was written */
    const char *stage;       /* the stage the weights come from: the one in progress, or the one
                              * just finished when the checkpoint is at a stage boundary */
    int32_t *const *perm_in; /* [model->n_linears] input permutation of a permuted sparse layer,
                              * NULL for the others */
} vnm_restored;

/* path: a checkpoint file, ckpt directory or run directory. with_data loads the data set (needed
 * by vnm_trainer_evaluate). Returns the exit code (2 for a missing or corrupt checkpoint or a bad
 * override); *out is set when it is 0. */
int vnm_trainer_restore(const char *cmd, const char *path, char **overrides, int n,
                        bool with_data, vnm_trainer **out);
vnm_restored vnm_trainer_restored(const vnm_trainer *t);
void vnm_trainer_free(vnm_trainer *t);

typedef struct {
    double loss, top1; /* mean cross-entropy and top-1 accuracy over the test split */
    double ppl;        /* perplexity (language models; NaN for classifiers, top1 NaN for them) */
    int64_t images;    /* images or tokens evaluated */
    double seconds;    /* wall time of the whole pass */
} vnm_eval_result;

/* The trainer's own evaluation (what it logs as split "val") of the restored model; returns the
 * exit code. */
int vnm_trainer_evaluate(vnm_trainer *t, vnm_eval_result *res);

#endif
