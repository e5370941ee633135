/* sparse/cpu/spmm_ref.c — reference products of a compressed weight: one output element at a time,
 * reductions in a fixed order (groups ascending, slot 0 before slot 1, tokens ascending). Slow and
 * obviously right; the fast kernels are tested against these. */
#include "../kernels.h"

vnm_spmm_weight vnm_spmm_weight_of_host(const vnm_sparse_host *w)
{
    vnm_spmm_weight v = {w->pat, w->O, w->I, w->O_pad, w->G, w->Gp,
                         w->vals, w->slots, w->cols, w->rows};
    return v;
}

/* The two absolute input columns row o reads in group g (-1: none). */
static void kept_cols(const vnm_spmm_weight *w, int64_t o, int64_t g, int32_t *c0, int32_t *c1)
{
    const int32_t *blk = w->cols + ((o / w->pat.V) * w->Gp + g) * 4;
    uint8_t s = w->slots[o * w->Gp + g];
    *c0 = blk[s & 3];
    *c1 = blk[(s >> 2) & 3];
}

void vnm_spmm_fwd_ref(const vnm_spmm_weight *w, const float *x, int64_t T, float *y)
{
    for (int64_t o = 0; o < w->O_pad; o++) {
        int32_t r = w->rows[o];
        if (r < 0) continue;
        for (int64_t t = 0; t < T; t++) {
            float acc = y[t * w->O + r];
            for (int64_t g = 0; g < w->Gp; g++) {
                int32_t c0, c1;
                kept_cols(w, o, g, &c0, &c1);
                const float *v = w->vals + (o * w->Gp + g) * 2;
                if (c0 >= 0) acc += v[0] * x[t * w->I + c0];
                if (c1 >= 0) acc += v[1] * x[t * w->I + c1];
            }
            y[t * w->O + r] = acc;
        }
    }
}

void vnm_spmm_dx_ref(const vnm_spmm_weight *w, const float *dy, int64_t T, float *dx)
{
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < w->O_pad; o++) {
            int32_t r = w->rows[o];
            if (r < 0) continue;
            float d = dy[t * w->O + r];
            for (int64_t g = 0; g < w->Gp; g++) {
                int32_t c0, c1;
                kept_cols(w, o, g, &c0, &c1);
                const float *v = w->vals + (o * w->Gp + g) * 2;
                if (c0 >= 0) dx[t * w->I + c0] += v[0] * d;
                if (c1 >= 0) dx[t * w->I + c1] += v[1] * d;
            }
        }
}

void vnm_spmm_dw_ref(const vnm_spmm_weight *w, const float *dy, const float *x, int64_t T,
                     float *dvals)
{
    for (int64_t o = 0; o < w->O_pad; o++) {
        int32_t r = w->rows[o];
        if (r < 0) continue;
        for (int64_t g = 0; g < w->Gp; g++) {
            int32_t c[2];
            kept_cols(w, o, g, &c[0], &c[1]);
            for (int k = 0; k < 2; k++) {
                if (c[k] < 0) continue;
                float acc = 0.0f;
                for (int64_t t = 0; t < T; t++) acc += dy[t * w->O + r] * x[t * w->I + c[k]];
                dvals[(o * w->Gp + g) * 2 + k] += acc;
            }
        }
    }
}
