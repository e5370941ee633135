/* optim/loss_scale.h — dynamic loss scaling for f16 products, with the semantics and defaults of
 * torch.amp.GradScaler: backward starts from `scale` instead of 1, so small gradients survive the
 * f16 operands of the backward products; before clipping and the optimiser step every gradient is
 * multiplied by the f32 1/scale and checked. A step whose gradients hold an inf or NaN (an f16
 * operand overflowed) is skipped and the scale multiplied by `backoff`; after `growth_interval`
 * finite steps in a row it is multiplied by `growth` (if that stays finite in f32). The scale is an
 * f32 value, as torch keeps it. A skipped step still counts as a step of the run (the lr schedule
 * moves on, as torch's scheduler.step() does), but not as an optimiser update (AdamW's bias
 * correction step is not advanced). */
#ifndef VNM_LOSS_SCALE_H
#define VNM_LOSS_SCALE_H

#include "optim.h"

typedef struct {
    float scale;
    float growth, backoff;   /* 2, 0.5 */
    int64_t growth_interval; /* 2000 */
    int64_t good_steps;      /* finite steps since the last change (torch's _growth_tracker) */
    int64_t skipped;         /* steps skipped over the run */
} vnm_loss_scaler;

/* torch's defaults with the given initial scale (torch: 65536) and growth interval (2000). */
vnm_loss_scaler vnm_loss_scaler_init(float scale, int64_t growth_interval);

/* Multiplies the gradient of every parameter of opt by 1/scale and returns whether all were
 * finite. On a context error (which the caller reads) it returns false too. */
bool vnm_loss_scaler_unscale(const vnm_loss_scaler *s, vnm_optim *opt);

/* After a step: `finite` is what vnm_loss_scaler_unscale returned. */
void vnm_loss_scaler_update(vnm_loss_scaler *s, bool finite);

#endif
