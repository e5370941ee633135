/* autograd/cuda/reduce.cuh — block-wide reductions of the row kernels (one block of
 * VNM_CUDA_THREADS threads per row, blocks striding over the rows beyond VNM_CUDA_MAX_ROW_GRID). The
 * shuffle tree is fixed, so a reduction gives the same result on every run and every device. */
#ifndef VNM_CUDA_REDUCE_CUH
#define VNM_CUDA_REDUCE_CUH

#include "common.cuh"

enum { VNM_CUDA_MAX_ROW_GRID = 65535 * 8 };

static inline unsigned vnm_cuda_row_blocks(int64_t rows)
{
    return (unsigned)(rows < VNM_CUDA_MAX_ROW_GRID ? rows : (int64_t)VNM_CUDA_MAX_ROW_GRID);
}

/* Sum / maximum of v over the block (blockDim.x == VNM_CUDA_THREADS), returned to every thread.
 * Every thread of the block must call them. */
__device__ static double block_sum(double v)
{
    __shared__ double part[VNM_CUDA_THREADS / 32];
    __shared__ double total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < VNM_CUDA_THREADS / 32 ? part[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) total = v;
    }
    __syncthreads();
    return total;
}

/* As the CPU's row maximum, a NaN never wins a comparison. */
__device__ static float block_max(float v)
{
    __shared__ float part[VNM_CUDA_THREADS / 32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_down_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < VNM_CUDA_THREADS / 32 ? part[lane] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1) {
            float u = __shfl_down_sync(0xffffffffu, v, o);
            v = u > v ? u : v;
        }
        if (lane == 0) total = v;
    }
    __syncthreads();
    return total;
}

#endif
