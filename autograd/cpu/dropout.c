/* autograd/cpu/dropout.c — dropout and drop-path kernels. Keep decision i uses word i%4 of the
 * Philox block at counter (offset + i/4), as the random fills of cpu/random.c, and is kept iff its
 * uniform is >= p; a decision is thus a function of (seed, offset, i), never of the thread count.
 * Values are multiplied by 0 or 1/(1-p) rather than selected, so a dropped NaN stays NaN as in
 * PyTorch (x·mask·scale). */
#include "../backend.h"

enum { PAR_MIN = 65536 }; /* below this many elements threads cost more than they save */

/* keep[4·blk + j] for the up to four decisions of block blk (n decisions in all). */
static void keep_block(uint8_t *keep, int64_t blk, int64_t n, float p, uint64_t seed,
                       uint64_t offset)
{
    uint32_t r[4];
    vnm_philox4x32(seed, offset + (uint64_t)blk, 0, r);
    for (int j = 0; j < 4 && blk * 4 + j < n; j++)
        keep[blk * 4 + j] = vnm_philox_uniform(r[j]) >= p;
}

static void cpu_dropout_fwd(float *y, uint8_t *mask, const float *x, int64_t n, float p,
                            uint64_t seed, uint64_t offset)
{
    float scale = 1.0f / (1.0f - p);
    int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t blk = 0; blk < blocks; blk++) {
        keep_block(mask, blk, n, p, seed, offset);
        for (int64_t i = blk * 4; i < blk * 4 + 4 && i < n; i++)
            y[i] = x[i] * (mask[i] ? scale : 0.0f);
    }
}

static void cpu_dropout_bwd(float *dx, const uint8_t *mask, const float *dy, int64_t n, float p)
{
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * (mask[i] ? scale : 0.0f);
}

static void cpu_drop_path_fwd(float *y, uint8_t *keep, const float *x, int64_t N, int64_t inner,
                              float p, uint64_t seed, uint64_t offset)
{
    /* N is a batch size: drawing the flags serially is cheaper than starting threads */
    for (int64_t blk = 0; blk < (N + 3) / 4; blk++) keep_block(keep, blk, N, p, seed, offset);
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel for collapse(2) schedule(static) if (N * inner > PAR_MIN)
    for (int64_t s = 0; s < N; s++)
        for (int64_t j = 0; j < inner; j++)
            y[s * inner + j] = x[s * inner + j] * (keep[s] ? scale : 0.0f);
}

static void cpu_drop_path_bwd(float *dx, const uint8_t *keep, const float *dy, int64_t N,
                              int64_t inner, float p)
{
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel for collapse(2) schedule(static) if (N * inner > PAR_MIN)
    for (int64_t s = 0; s < N; s++)
        for (int64_t j = 0; j < inner; j++)
            dx[s * inner + j] += dy[s * inner + j] * (keep[s] ? scale : 0.0f);
}

void vnm_cpu_register_dropout(vnm_backend *be)
{
    be->dropout_fwd = cpu_dropout_fwd;
    be->dropout_bwd = cpu_dropout_bwd;
    be->drop_path_fwd = cpu_drop_path_fwd;
    be->drop_path_bwd = cpu_drop_path_bwd;
}
