/* sparse/cpu/bias.c — the bias of the sparse-linear op on token-major outputs: broadcast fill
 * before the (accumulating) forward product, and the row sum of dY for its gradient. */
#include "../kernels.h"

void vnm_spmm_bias_fill(float *y, const float *b, int64_t T, int64_t O)
{
#pragma omp parallel for schedule(static) if (T * O > 65536)
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < O; o++) y[t * O + o] = b ? b[o] : 0.0f;
}

void vnm_spmm_bias_grad(float *db, const float *dy, int64_t T, int64_t O)
{
    /* Column blocks accumulate the tokens in order: the same sums for any thread count. */
    enum { COLS = 64 };
    int64_t blocks = (O + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (T * O > 65536)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t o0 = blk * COLS, w = O - o0 < COLS ? O - o0 : COLS;
        float acc[COLS] = {0};
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < w; j++) acc[j] += dy[t * O + o0 + j];
        for (int64_t j = 0; j < w; j++) db[o0 + j] += acc[j];
    }
}
