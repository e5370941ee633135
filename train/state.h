/* train/state.h — the complete training state in one checkpoint, so that a resumed run continues
 * bit-identically: named dense tensors, compressed sparse weights, optimiser moments and step
 * counts, the context RNG, the sampler position and the progress record, laid out exactly as
 * DESIGN.md "Checkpoint" on top of train/checkpoint.h:
 *
 *   /                       root attributes (vnm_ckpt_write_meta) and step
 *   /model/<name>           dense tensor (f32 as f32, bf16 as bf16; integer buffers as themselves)
 *   /sparse/<name>/vals, slots, cols, rows [, perm_in, perm_out]
 *                           the canonical compressed form of sparse/sparse.h, attrs pattern, O, I,
 *                           score, permuted
 *   /optim/<param>/<state>  f32, the parameter's shape ("m", "v" or "momentum_buffer"; a sparse
 *                           weight's parameter is its vals, so its moments are compressed), attrs
 *                           optimizer, step, group and the hyper-parameters; /optim carries the
 *                           same hyper-parameters and the global step count, and with loss
 *                           scaling (f16) the scaler's state
 *   /rng/seed, /rng/offset  u64 scalars: the context's Philox stream
 *   /data/epoch, index, seed  i64, i64, u64 scalars: the sampler position and the shuffle seed
 *
 * The module knows nothing about models: the caller describes what a run holds (vnm_run_state)
 * and loading restores INTO those existing tensors, checking every name and shape first, so a
 * failed load changes nothing. Errors go to (err, err_len) and name the checkpoint file and the
 * object.
 */
#ifndef VNM_STATE_H
#define VNM_STATE_H

#include <stdio.h>

#include "../autograd/autograd.h"
#include "../data/data.h"
#include "../optim/loss_scale.h"
#include "../optim/optim.h"
#include "../sparse/sparse.h"

typedef struct {
    const char *name; /* stored as /model/<name> */
    vnm_tensor *t;    /* f32, bf16, u8, i32 or i64; any device */
} vnm_state_tensor;

typedef struct {
    const char *name; /* stored as /sparse/<name>; also the /optim name of its vals */
    vnm_sparse_weight *w;
    const int32_t *perm_in; /* [I] input permutation, or NULL when the layer is not permuted */
    const char *score;      /* "magnitude" | "ria"; NULL writes "magnitude" */
} vnm_state_sparse;

typedef struct {
    int64_t step;        /* optimiser steps done in the whole run */
    int64_t epoch;
    int64_t stage_index;
    int64_t stage_step;  /* steps done inside the current stage */
} vnm_progress;

typedef struct {
    vnm_ctx *ctx; /* its RNG is saved and restored */
    const vnm_state_tensor *tensors;
    int n_tensors;
    const vnm_state_sparse *sparse;
    int n_sparse;
    /* optional: every parameter of it must be one of the tensors or a sparse weight's vals.
     * The optimiser does not expose its configuration, so optim_cfg (required with optim) gives
     * the hyper-parameters recorded as attributes; a load only checks the kind. */
    vnm_optim *optim;
    const vnm_optim_config *optim_cfg;
    /* optional, with optim (f16 runs): saved as attributes loss_scale, loss_scale_good_steps and
     * loss_scale_skipped of /optim; restored when the checkpoint has them, else left as it is */
    vnm_loss_scaler *loss_scaler;
    vnm_sampler_pos data_pos; /* saved; filled by vnm_state_load for the caller to apply */
    uint64_t data_seed;       /* likewise */
    vnm_progress progress;    /* likewise */
    const char *recipe;       /* the resolved recipe text (saved; NULL is stored as "") */
} vnm_run_state;

/* Writes <dir>/ckpt/step_<progress.step>.h5 (atomically, see vnm_ckpt_commit) and prunes to
 * keep_last. path_out (may be NULL) receives the file written. */
vnm_status vnm_state_save(const char *dir, int keep_last, const vnm_run_state *st, char *path_out,
                          size_t path_len, char *err, size_t err_len);

/* Restores from a checkpoint file, ckpt directory or run directory (vnm_ckpt_open) into st's
 * tensors, sparse weights (values and structure: slots, cols, rows) and optimiser, and sets the
 * context RNG. Names, dtypes and shapes must match exactly: a missing or unexpected entry, a
 * different shape, a sparse weight whose pattern or O×I differs, compressed arrays failing
 * vnm_sparse_validate, or another optimiser kind are errors, reported before anything changes.
 * With st->optim NULL, /optim is not read. Fills st->progress, st->data_pos and st->data_seed;
 * *recipe (may be NULL) receives the recipe text, malloc'd. */
vnm_status vnm_state_load(const char *path, vnm_run_state *st, char **recipe, char *err,
                          size_t err_len);

/* `vnm inspect`: a human summary of a checkpoint on out (file, format version, progress, program
 * version, dense tensors and parameters, sparse layers with pattern, O×I and kept fraction,
 * optimiser, RNG and data position, the start of the recipe). VNM_ERR_INPUT for a missing or
 * corrupt file. */
vnm_status vnm_inspect_print(const char *path, FILE *out, char *err, size_t err_len);
/* The subcommand: `vnm inspect CKPT`; returns the exit code. */
int vnm_cmd_inspect(int argc, char **argv);

#endif
