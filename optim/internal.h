/* optim/internal.h — the optimiser struct that optim/optim.c (groups, steps, clipping) and
 * optim/state.c (state access, save/load) share; nothing outside optim/ includes it. */
#ifndef VNM_OPTIM_INTERNAL_H
#define VNM_OPTIM_INTERNAL_H

#include "optim.h"

enum { VNM_OPTIM_MAX_STATE = 2 };

/* One parameter and what the optimiser keeps for it. */
typedef struct {
    vnm_tensor *param;
    vnm_tensor *state[VNM_OPTIM_MAX_STATE]; /* momentum buffer, or m and v; the param's shape */
    int group;
    int64_t steps; /* updates applied to this parameter */
} vnm_optim_slot;

typedef struct {
    double weight_decay;
    double lr_scale;
} vnm_optim_group;

struct vnm_optim {
    vnm_ctx *ctx;
    vnm_optim_config cfg; /* cfg.lr is the current base lr */
    int n_state;          /* state tensors per parameter */
    vnm_optim_slot *slots;
    int n_params, cap_params;
    vnm_optim_group *groups;
    int n_groups, cap_groups;
    int64_t steps;
};

#endif
