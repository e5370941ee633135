/* autograd/cuda/activation.cu — GELU (exact erf form and tanh approximation, as PyTorch), SiLU and
 * SwiGLU, forward and backward, one thread per element, with the formulas of
 * autograd/act_math.h (shared with the CPU) evaluated by the device erff/tanhf/expf: the backends
 * agree to a few ulps. */
#include "common.cuh"
#include "../act_math.h"

__global__ static void act_fwd_kernel(vnm_act act, float *y, const float *x, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = vnm_act_value(act, x[i]);
}

__global__ static void act_bwd_kernel(vnm_act act, float *dx, const float *x, const float *dy,
                                      int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dx[i] += dy[i] * vnm_act_derivative(act, x[i]);
}

__global__ static void swiglu_fwd_kernel(float *y, const float *gate, const float *up, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = vnm_act_value(VNM_ACT_SILU, gate[i]) * up[i];
}

/* dgate and dup may each be NULL (not needed) */
__global__ static void swiglu_bwd_kernel(float *dgate, float *dup, const float *gate,
                                         const float *up, const float *dy, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (dgate) dgate[i] += dy[i] * up[i] * vnm_act_derivative(VNM_ACT_SILU, gate[i]);
        if (dup) dup[i] += dy[i] * vnm_act_value(VNM_ACT_SILU, gate[i]);
    }
}

static void cuda_act_fwd(vnm_act act, float *y, const float *x, int64_t n)
{
    act_fwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(act, y, x, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_act_bwd(vnm_act act, float *dx, const float *x, const float *dy, int64_t n)
{
    act_bwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        act, dx, x, dy, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_swiglu_fwd(float *y, const float *gate, const float *up, int64_t n)
{
    swiglu_fwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        y, gate, up, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_swiglu_bwd(float *dgate, float *dup, const float *gate, const float *up,
                            const float *dy, int64_t n)
{
    if (!dgate && !dup) return;
    swiglu_bwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dgate, dup, gate, up, dy, n);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_activation(vnm_backend *be)
{
    be->act_fwd = cuda_act_fwd;
    be->act_bwd = cuda_act_bwd;
    be->swiglu_fwd = cuda_swiglu_fwd;
    be->swiglu_bwd = cuda_swiglu_bwd;
}
