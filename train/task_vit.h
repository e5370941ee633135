/* train/task_vit.h — the state of the ViT / Fashion-MNIST task (vnm_task_vit, train/task.h),
 * shared by its two files and included by nothing else: task_vit.c (data, model, steps,
 * evaluation, checkpoint entries, resume) and task_vit_prune.c (how target linears become V:N:M
 * sparse: the one-shot prune and SR-STE's dynamic masks, frozen at the stage's end).
 */
#ifndef VNM_TASK_VIT_H
#define VNM_TASK_VIT_H

#include "task.h"

/* An SR-STE mask was chosen from an earlier W, so it cannot be recomputed on resume: each SR-STE
 * linear's mask and the step it was chosen at travel in the checkpoint as two model tensors,
 * "<layer>.weight.srste_mask" (u8 [O, I]) and "<layer>.weight.srste_mask_step" (i64 [1]). */
typedef struct {
    char mask_name[VNM_VIT_NAME_MAX + 32], step_name[VNM_VIT_NAME_MAX + 32];
    vnm_tensor *mask, *step;
} vnm_task_vit_srste;

typedef struct {
    vnm_task_env *env;
    vnm_vit *m;
    vnm_dataset train_ds, test_ds;
    vnm_loader *train_ld, *test_ld;
    int32_t **perm_in;          /* [n_linears] input permutation of a pruned layer, or NULL */
    vnm_task_vit_srste *srste;  /* [n_linears] checkpoint images of SR-STE masks */
    uint64_t params_version;    /* counts the linears turned sparse */
    char err[1024];             /* messages of the libraries, before they go into env->msg */
} vnm_task_vit_state;

/* The target linears (sparsity.targets) still dense become sparse: with the recipe's score,
 * calibration and permutation, reported on the console; or, for a resume to load into
 * (placeholder), as a valid structure of the right pattern and shape only. */
int vnm_task_vit_prune_all(vnm_task_vit_state *v, bool placeholder);
/* Gives every target linear still dense SR-STE masks; linears that have them keep theirs (a
 * resumed stage). */
int vnm_task_vit_srste_begin(vnm_task_vit_state *v, const vnm_recipe_stage *s);
/* Copies the SR-STE masks into their checkpoint tensors (to_checkpoint) or back. */
int vnm_task_vit_srste_sync(vnm_task_vit_state *v, bool to_checkpoint);
/* End of an SR-STE stage: every SR-STE linear becomes a mask-fixed sparse weight under its last
 * mask (the same function); the optimiser then starts over on the compressed values, as after a
 * one-shot prune. */
int vnm_task_vit_srste_freeze_all(vnm_task_vit_state *v);

#endif
