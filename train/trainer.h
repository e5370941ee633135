/* train/trainer.h — `vnm train` and `vnm resume`: a ViT on Fashion-MNIST driven by a recipe
 * (train/recipe.h) through its ordered stages (dense → prune → sparse_fixed), with evaluation,
 * the progress line, the run directory (DESIGN.md "Run directory"), checkpoints through
 * train/state.h, and exact resume.
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

#include "../autograd/autograd.h"

/* `vnm train RECIPE [key=value ...]`: argv[0] is the recipe path, the rest are overrides. */
int vnm_cmd_train(int argc, char **argv);
/* `vnm resume RUN_DIR|CKPT [key=value ...]`: continues from the checkpoint (a run directory
 * resolves to its latest one) with the recipe stored in it plus the overrides. */
int vnm_cmd_resume(int argc, char **argv);

#endif
