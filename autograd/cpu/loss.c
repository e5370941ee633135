/* autograd/cpu/loss.c — cross-entropy kernels over logits[N, C] with hard labels (ignore_index,
 * label smoothing) or soft targets. The log-softmax is shifted by the row maximum so logits of any
 * size stay finite. The mean is deterministic whatever the thread count: rows are split into a
 * fixed number of chunks, each summed in row order, and the chunk sums are added in chunk order. */
#include <math.h>

#include "../backend.h"
#include "softmax_row.h"

enum {
    CHUNKS = 64,       /* fixed, so the summation order does not depend on the thread count */
    PAR_MIN = 16384,   /* logits below this many elements are done on one thread */
};

static int64_t label_at(const void *labels, bool labels64, int64_t i)
{
    return labels64 ? ((const int64_t *)labels)[i] : ((const int32_t *)labels)[i];
}

/* Loss of one row given its log Σ exp: -Σ t·logp for soft targets, else
 * (1-ε)·(-logp[y]) + ε·mean_c(-logp[c]) with -logp[c] = lse - x[c]. */
static double row_loss(const float *x, double lse, const float *t, int64_t y, int64_t C,
                       float smoothing)
{
    if (t) {
        double acc = 0.0;
        for (int64_t c = 0; c < C; c++) acc += (double)t[c] * (lse - x[c]);
        return acc;
    }
    double nll = lse - x[y];
    if (smoothing == 0.0f) return nll;
    double sx = 0.0;
    for (int64_t c = 0; c < C; c++) sx += x[c];
    return (1.0 - smoothing) * nll + smoothing * (lse - sx / (double)C);
}

static void cpu_cross_entropy_fwd(float *loss, float *prob, int64_t *count, const float *logits,
                                  const void *labels, bool labels64, const float *targets,
                                  int64_t N, int64_t C, int64_t ignore_index, float smoothing)
{
    double part[CHUNKS];
    int64_t counted[CHUNKS];
    int64_t per = (N + CHUNKS - 1) / CHUNKS;
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN)
    for (int k = 0; k < CHUNKS; k++) {
        double acc = 0.0;
        int64_t n = 0;
        int64_t end = (k + 1) * per < N ? (k + 1) * per : N;
        for (int64_t r = k * per; r < end; r++) {
            const float *x = logits + r * C;
            double lse = vnm_cpu_softmax_row(prob + r * C, x, C);
            int64_t y = targets ? 0 : label_at(labels, labels64, r);
            if (!targets && y == ignore_index) continue;
            acc += row_loss(x, lse, targets ? targets + r * C : NULL, y, C, smoothing);
            n++;
        }
        part[k] = acc;
        counted[k] = n;
    }
    double total = 0.0;
    int64_t n = 0;
    for (int k = 0; k < CHUNKS; k++) {
        total += part[k];
        n += counted[k];
    }
    *count = n;
    /* no counted row: 0 rather than PyTorch's NaN (see autograd/op_loss.c) */
    loss[0] = n > 0 ? (float)(total / (double)n) : 0.0f;
}

/* d row loss / dx[c] = p[c]·Σt - t[c] (soft), or p[c] - ε/C - (1-ε)·[c = y] (hard);
 * g = d(loss)/count, the same for every counted row. */
static void cpu_cross_entropy_bwd(float *dlogits, const float *prob, const void *labels,
                                  bool labels64, const float *targets, int64_t N, int64_t C,
                                  int64_t ignore_index, float smoothing, float g)
{
    float off = smoothing / (float)C, hit = 1.0f - smoothing;
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN)
    for (int64_t r = 0; r < N; r++) {
        float *dx = dlogits + r * C;
        const float *p = prob + r * C;
        if (targets) {
            const float *t = targets + r * C;
            double st = 0.0;
            for (int64_t c = 0; c < C; c++) st += t[c];
            for (int64_t c = 0; c < C; c++) dx[c] += g * (p[c] * (float)st - t[c]);
            continue;
        }
        int64_t y = label_at(labels, labels64, r);
        if (y == ignore_index) continue;
        for (int64_t c = 0; c < C; c++) dx[c] += g * (p[c] - off - (c == y ? hit : 0.0f));
    }
}

void vnm_cpu_register_loss(vnm_backend *be)
{
    be->cross_entropy_fwd = cpu_cross_entropy_fwd;
    be->cross_entropy_bwd = cpu_cross_entropy_bwd;
}
