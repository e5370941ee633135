/* sparse/choose.c — the two-phase V/M rule of METHOD §3: drop the candidates slower than the
 * required speedup, then take the largest mask diversity κ, ties to the larger V. */
#include <math.h>

#include "sparse.h"

int vnm_vm_choose(vnm_vm_candidate *cands, int n, double required)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        vnm_vm_candidate *c = &cands[i];
        c->kappa = vnm_pattern_kappa(c->pat);
        c->kept = c->speedup >= required;
        if (!c->kept) continue;
        /* κ values equal to rounding count as ties */
        if (best < 0 || c->kappa > cands[best].kappa + 1e-12 ||
            (fabs(c->kappa - cands[best].kappa) <= 1e-12 && c->pat.V > cands[best].pat.V))
            best = i;
    }
    return best;
}
