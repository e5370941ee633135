/* sparse/cpu/spmm.c — fast CPU products of a compressed weight (to be replaced by the 4-slot
 * panel micro-kernels); for now they call the references. */
#include "../kernels.h"

void vnm_spmm_fwd(const vnm_spmm_weight *w, const float *x, int64_t T, float *y)
{
    vnm_spmm_fwd_ref(w, x, T, y);
}

void vnm_spmm_dx(const vnm_spmm_weight *w, const float *dy, int64_t T, float *dx)
{
    vnm_spmm_dx_ref(w, dy, T, dx);
}

void vnm_spmm_dw(const vnm_spmm_weight *w, const float *dy, const float *x, int64_t T,
                 float *dvals)
{
    vnm_spmm_dw_ref(w, dy, x, T, dvals);
}
