/* optim/loss_scale.c — dynamic loss scaling (see loss_scale.h). */
#include "loss_scale.h"

#include <math.h>

vnm_loss_scaler vnm_loss_scaler_init(float scale, int64_t growth_interval)
{
    return (vnm_loss_scaler){scale, 2.0f, 0.5f, growth_interval, 0, 0};
}

bool vnm_loss_scaler_unscale(const vnm_loss_scaler *s, vnm_optim *opt)
{
    vnm_ctx *ctx = vnm_optim_ctx(opt);
    float inv = (float)(1.0 / (double)s->scale); /* torch: scale.double().reciprocal().float() */
    bool finite = true;
    for (int i = 0; i < vnm_optim_num_params(opt); i++) {
        vnm_tensor *g = vnm_optim_param(opt, i)->grad;
        if (!g) continue;
        finite &= isfinite(vnm_sum_squares(ctx, g)) != 0;
        if (vnm_scale_inplace(ctx, g, inv) != VNM_OK) return false;
    }
    return finite && vnm_ctx_status(ctx) == VNM_OK;
}

void vnm_loss_scaler_update(vnm_loss_scaler *s, bool finite)
{
    if (!finite) {
        s->scale *= s->backoff;
        s->good_steps = 0;
        s->skipped++;
        return;
    }
    if (++s->good_steps < s->growth_interval) return;
    float grown = s->scale * s->growth;
    if (isfinite(grown)) s->scale = grown;
    s->good_steps = 0;
}
