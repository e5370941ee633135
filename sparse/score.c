/* sparse/score.c — pruning scores S[O][I] ≥ 0 (METHOD §2.1): magnitude |W| and RIA (relative
 * importance of a weight within its input column and its output row, times the input channel's
 * activation RMS to the power a). Sums run in double in a fixed order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

vnm_status vnm_score_parse(const char *name, vnm_score_kind *out, char *err, size_t err_len)
{
    if (name && out && strcmp(name, "magnitude") == 0) *out = VNM_SCORE_MAGNITUDE;
    else if (name && out && strcmp(name, "ria") == 0) *out = VNM_SCORE_RIA;
    else
        return vnm_sparse_fail(err, err_len, "score '%s': unknown (expected 'magnitude' or 'ria')",
                    name ? name : "(null)");
    return VNM_OK;
}

/* Columns per parallel chunk of the column sums: a chunk walks all rows, so each column's sum
 * keeps the row order whatever the thread count. */
#define COL_CHUNK 64

static vnm_status ria(const float *W, int64_t O, int64_t I, const double *act_rms, double a,
                      float *S)
{
    double *colsum = malloc((size_t)I * sizeof *colsum); /* [I] Σ_o |W[o,i]| */
    double *act = malloc((size_t)I * sizeof *act);       /* [I] act_rms^a */
    if (!colsum || !act) {
        free(colsum);
        free(act);
        return VNM_ERR_RUNTIME;
    }
    int64_t chunks = (I + COL_CHUNK - 1) / COL_CHUNK;
#pragma omp parallel for schedule(static) if (O * I > 65536)
    for (int64_t ch = 0; ch < chunks; ch++) {
        int64_t i0 = ch * COL_CHUNK, i1 = i0 + COL_CHUNK < I ? i0 + COL_CHUNK : I;
        for (int64_t i = i0; i < i1; i++) {
            colsum[i] = 0.0;
            act[i] = pow(act_rms[i], a);
        }
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = i0; i < i1; i++) colsum[i] += fabs((double)W[o * I + i]);
    }
#pragma omp parallel for schedule(static) if (O * I > 65536)
    for (int64_t o = 0; o < O; o++) {
        const float *w = W + o * I;
        double rowsum = 0.0;
        for (int64_t i = 0; i < I; i++) rowsum += fabs((double)w[i]);
        for (int64_t i = 0; i < I; i++) {
            /* A zero sum means every |W| in it is zero: the term is 0/0, taken as 0. */
            double aw = fabs((double)w[i]);
            double rel = (colsum[i] > 0.0 ? aw / colsum[i] : 0.0) +
                         (rowsum > 0.0 ? aw / rowsum : 0.0);
            S[o * I + i] = (float)(rel * act[i]);
        }
    }
    free(colsum);
    free(act);
    return VNM_OK;
}

vnm_status vnm_score_compute(vnm_score_kind kind, const float *W, int64_t O, int64_t I,
                             const double *act_rms, double a, float *S, char *err, size_t err_len)
{
    if (!W || !S) return vnm_sparse_fail(err, err_len, "score: W and S must not be NULL");
    if (O < 1 || I < 1)
        return vnm_sparse_fail(err, err_len, "score: weight shape [%lld, %lld] must have positive sizes",
                    (long long)O, (long long)I);
    if (kind == VNM_SCORE_MAGNITUDE) {
#pragma omp parallel for schedule(static) if (O * I > 65536)
        for (int64_t k = 0; k < O * I; k++) S[k] = fabsf(W[k]);
        return VNM_OK;
    }
    if (kind != VNM_SCORE_RIA) return vnm_sparse_fail(err, err_len, "score: unknown score kind %d", (int)kind);
    if (!act_rms)
        return vnm_sparse_fail(err, err_len,
                    "score 'ria': needs the activation RMS of each of the %lld input channels "
                    "(run calibration first; act_rms is NULL)",
                    (long long)I);
    if (!(a >= 0.0) || !isfinite(a))
        return vnm_sparse_fail(err, err_len, "score 'ria': exponent a = %g (expected a finite value >= 0)",
                    a);
    for (int64_t i = 0; i < I; i++)
        if (!(act_rms[i] >= 0.0) || !isfinite(act_rms[i]))
            return vnm_sparse_fail(err, err_len,
                        "score 'ria': act_rms[%lld] = %g (expected a finite value >= 0)",
                        (long long)i, act_rms[i]);
    if (ria(W, O, I, act_rms, a, S) != VNM_OK) {
        if (err && err_len)
            snprintf(err, err_len, "score 'ria': out of memory (I = %lld)", (long long)I);
        return VNM_ERR_RUNTIME;
    }
    return VNM_OK;
}
