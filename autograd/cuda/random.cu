/* autograd/cuda/random.cu — uniform and normal fills from Philox, as cpu/random.c: element i takes
 * word i%4 of the block at counter (offset + i/4); normals pair words (0,1) and (2,3) through
 * Box–Muller. One thread draws one Philox block.
 *
 * Uniform fills are bit-identical to the CPU: the CPU build (C17, baseline x86-64) never fuses
 * lo + (hi-lo)·u into an FMA, so the kernel rounds the product and the sum separately (__fmul_rn,
 * __fadd_rn keep nvcc from contracting them). Normal fills follow the CPU's double-precision
 * Box–Muller step for step, but CUDA's double log/sin/cos may differ from glibc's in the last bit
 * of the double; after the rounding to float that shows, rarely, as a 1-ulp difference. */
#include "common.cuh"

__global__ static void rng_uniform_kernel(float *x, int64_t n, float lo, float hi, uint64_t seed,
                                          uint64_t offset)
{
    int64_t blocks = (n + 3) / 4;
    for (int64_t blk = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; blk < blocks;
         blk += (int64_t)gridDim.x * blockDim.x) {
        uint32_t r[4];
        vnm_philox4x32_10(seed, offset + (uint64_t)blk, 0, r);
        for (int j = 0; j < 4 && blk * 4 + j < n; j++)
            x[blk * 4 + j] = __fadd_rn(lo, __fmul_rn(hi - lo, vnm_philox_unit(r[j])));
    }
}

__global__ static void rng_normal_kernel(float *x, int64_t n, float mean, float std, uint64_t seed,
                                         uint64_t offset)
{
    const double two_pi = 6.283185307179586;
    int64_t blocks = (n + 3) / 4;
    for (int64_t blk = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; blk < blocks;
         blk += (int64_t)gridDim.x * blockDim.x) {
        uint32_t r[4];
        vnm_philox4x32_10(seed, offset + (uint64_t)blk, 0, r);
        for (int j = 0; j < 4 && blk * 4 + j < n; j += 2) {
            /* u1 in (0, 1] so the log is finite */
            double u1 = ((r[j] >> 8) + 1.0) / 16777216.0;
            double u2 = (r[j + 1] >> 8) / 16777216.0;
            double rad = sqrt(-2.0 * log(u1));
            double angle = two_pi * u2;
            x[blk * 4 + j] = __fadd_rn(mean, __fmul_rn(std, (float)(rad * cos(angle))));
            if (blk * 4 + j + 1 < n)
                x[blk * 4 + j + 1] = __fadd_rn(mean, __fmul_rn(std, (float)(rad * sin(angle))));
        }
    }
}

static void cuda_rng_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed,
                             uint64_t offset)
{
    if (n <= 0) return;
    rng_uniform_kernel<<<vnm_cuda_blocks((n + 3) / 4), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        x, n, lo, hi, seed, offset);
    VNM_CUDA_LAUNCHED();
}

static void cuda_rng_normal(float *x, int64_t n, float mean, float std, uint64_t seed,
                            uint64_t offset)
{
    if (n <= 0) return;
    rng_normal_kernel<<<vnm_cuda_blocks((n + 3) / 4), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        x, n, mean, std, seed, offset);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_random(vnm_backend *be)
{
    be->rng_uniform = cuda_rng_uniform;
    be->rng_normal = cuda_rng_normal;
}
