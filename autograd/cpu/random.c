/* autograd/cpu/random.c — uniform and normal fills from Philox: element i takes word i%4 of the
 * block at counter (offset + i/4); normals pair words (0,1) and (2,3) through Box–Muller. */
#include <math.h>

#include "../backend.h"

static void cpu_rng_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed,
                            uint64_t offset)
{
    int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t blk = 0; blk < blocks; blk++) {
        uint32_t r[4];
        vnm_philox4x32(seed, offset + (uint64_t)blk, 0, r);
        for (int j = 0; j < 4 && blk * 4 + j < n; j++)
            x[blk * 4 + j] = lo + (hi - lo) * vnm_philox_uniform(r[j]);
    }
}

static void cpu_rng_normal(float *x, int64_t n, float mean, float std, uint64_t seed,
                           uint64_t offset)
{
    int64_t blocks = (n + 3) / 4;
    const double two_pi = 6.283185307179586;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t blk = 0; blk < blocks; blk++) {
        uint32_t r[4];
        vnm_philox4x32(seed, offset + (uint64_t)blk, 0, r);
        for (int j = 0; j < 4 && blk * 4 + j < n; j++) {
            /* u1 in (0, 1] so the log is finite */
            double u1 = ((r[j & ~1] >> 8) + 1.0) / 16777216.0;
            double u2 = (r[j | 1] >> 8) / 16777216.0;
            double rad = sqrt(-2.0 * log(u1));
            double z = (j & 1) ? rad * sin(two_pi * u2) : rad * cos(two_pi * u2);
            x[blk * 4 + j] = mean + std * (float)z;
        }
    }
}

void vnm_cpu_register_random(vnm_backend *be)
{
    be->rng_uniform = cpu_rng_uniform;
    be->rng_normal = cpu_rng_normal;
}
