/* autograd/cuda/dropout.cu — dropout and drop-path kernels, as cpu/dropout.c. Keep decision i uses
 * word i%4 of the Philox block at counter (offset + i/4) and is kept iff its uniform is >= p, so
 * masks are bit-identical to the CPU's. Values are multiplied by 0 or 1/(1-p) rather than selected
 * (a dropped NaN stays NaN), the scale is computed on the host as on the CPU, and the backward
 * rounds the product before accumulating (__fmul_rn: no FMA, as the CPU build), so outputs and
 * gradients are bit-identical too, NaNs aside (the GPU returns its canonical NaN, not the input's
 * payload). mask and keep are device u8 buffers. */
#include "common.cuh"

#define GRID_STRIDE(i, n)                                                                         \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);                     \
         i += (int64_t)gridDim.x * blockDim.x)

/* keep[4·blk + j] for the up to four decisions of block blk (n decisions in all). */
__device__ static inline void keep_block(uint8_t *keep, int64_t blk, int64_t n, float p,
                                         uint64_t seed, uint64_t offset)
{
    uint32_t r[4];
    vnm_philox4x32_10(seed, offset + (uint64_t)blk, 0, r);
    for (int j = 0; j < 4 && blk * 4 + j < n; j++)
        keep[blk * 4 + j] = vnm_philox_unit(r[j]) >= p;
}

__global__ static void dropout_fwd_kernel(float *y, uint8_t *mask, const float *x, int64_t n,
                                          float p, float scale, uint64_t seed, uint64_t offset)
{
    GRID_STRIDE(blk, (n + 3) / 4)
    {
        keep_block(mask, blk, n, p, seed, offset);
        for (int64_t i = blk * 4; i < blk * 4 + 4 && i < n; i++)
            y[i] = x[i] * (mask[i] ? scale : 0.0f);
    }
}

__global__ static void dropout_bwd_kernel(float *dx, const uint8_t *mask, const float *dy,
                                          int64_t n, float scale)
{
    GRID_STRIDE(i, n) dx[i] = __fadd_rn(dx[i], __fmul_rn(dy[i], mask[i] ? scale : 0.0f));
}

__global__ static void keep_kernel(uint8_t *keep, int64_t N, float p, uint64_t seed,
                                   uint64_t offset)
{
    GRID_STRIDE(blk, (N + 3) / 4) keep_block(keep, blk, N, p, seed, offset);
}

__global__ static void drop_path_fwd_kernel(float *y, const uint8_t *keep, const float *x,
                                            int64_t n, int64_t inner, float scale)
{
    GRID_STRIDE(i, n) y[i] = x[i] * (keep[i / inner] ? scale : 0.0f);
}

__global__ static void drop_path_bwd_kernel(float *dx, const uint8_t *keep, const float *dy,
                                            int64_t n, int64_t inner, float scale)
{
    GRID_STRIDE(i, n)
    dx[i] = __fadd_rn(dx[i], __fmul_rn(dy[i], keep[i / inner] ? scale : 0.0f));
}

static void cuda_dropout_fwd(float *y, uint8_t *mask, const float *x, int64_t n, float p,
                             uint64_t seed, uint64_t offset)
{
    if (n <= 0) return;
    float scale = 1.0f / (1.0f - p);
    dropout_fwd_kernel<<<vnm_cuda_blocks((n + 3) / 4), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        y, mask, x, n, p, scale, seed, offset);
    VNM_CUDA_LAUNCHED();
}

static void cuda_dropout_bwd(float *dx, const uint8_t *mask, const float *dy, int64_t n, float p)
{
    if (n <= 0) return;
    float scale = 1.0f / (1.0f - p);
    dropout_bwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dx, mask, dy, n, scale);
    VNM_CUDA_LAUNCHED();
}

static void cuda_drop_path_fwd(float *y, uint8_t *keep, const float *x, int64_t N, int64_t inner,
                               float p, uint64_t seed, uint64_t offset)
{
    if (N <= 0) return;
    keep_kernel<<<vnm_cuda_blocks((N + 3) / 4), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        keep, N, p, seed, offset);
    VNM_CUDA_LAUNCHED();
    if (inner <= 0) return;
    float scale = 1.0f / (1.0f - p);
    drop_path_fwd_kernel<<<vnm_cuda_blocks(N * inner), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        y, keep, x, N * inner, inner, scale);
    VNM_CUDA_LAUNCHED();
}

static void cuda_drop_path_bwd(float *dx, const uint8_t *keep, const float *dy, int64_t N,
                               int64_t inner, float p)
{
    if (N <= 0 || inner <= 0) return;
    float scale = 1.0f / (1.0f - p);
    drop_path_bwd_kernel<<<vnm_cuda_blocks(N * inner), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dx, keep, dy, N * inner, inner, scale);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_dropout(vnm_backend *be)
{
    be->dropout_fwd = cuda_dropout_fwd;
    be->dropout_bwd = cuda_dropout_bwd;
    be->drop_path_fwd = cuda_drop_path_fwd;
    be->drop_path_bwd = cuda_drop_path_bwd;
}
