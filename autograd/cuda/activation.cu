/* autograd/cuda/activation.cu — GELU (exact erf form and tanh approximation, as PyTorch), SiLU and
 * SwiGLU, forward and backward, one thread per element. The formulas are
 * autograd/cpu/activation.c's term for term, with the device erff/tanhf/expf, so the backends agree
 * to a few ulps. */
#include "common.cuh"

#define GELU_K 0.7978845608028654f       /* sqrt(2/pi) */
#define GELU_C 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f /* 1/sqrt(2 pi) */

__device__ static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ static inline float act_value(vnm_act act, float x)
{
    switch (act) {
    case VNM_ACT_GELU: return 0.5f * x * (1.0f + erff(x * INV_SQRT2));
    case VNM_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_C * x * x * x)));
    case VNM_ACT_SILU: return x * sigmoid(x);
    }
    return 0.0f;
}

__device__ static inline float act_derivative(vnm_act act, float x)
{
    switch (act) {
    case VNM_ACT_GELU:
        return 0.5f * (1.0f + erff(x * INV_SQRT2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    case VNM_ACT_GELU_TANH: {
        float x2 = x * x;
        float t = tanhf(GELU_K * (x + GELU_C * x2 * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * GELU_C * x2);
    }
    case VNM_ACT_SILU: {
        float s = sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
    }
    }
    return 0.0f;
}

__global__ static void act_fwd_kernel(vnm_act act, float *y, const float *x, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = act_value(act, x[i]);
}

__global__ static void act_bwd_kernel(vnm_act act, float *dx, const float *x, const float *dy,
                                      int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dx[i] += dy[i] * act_derivative(act, x[i]);
}

__global__ static void swiglu_fwd_kernel(float *y, const float *gate, const float *up, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = act_value(VNM_ACT_SILU, gate[i]) * up[i];
}

/* dgate and dup may each be NULL (not needed) */
__global__ static void swiglu_bwd_kernel(float *dgate, float *dup, const float *gate,
                                         const float *up, const float *dy, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (dgate) dgate[i] += dy[i] * up[i] * act_derivative(VNM_ACT_SILU, gate[i]);
        if (dup) dup[i] += dy[i] * act_value(VNM_ACT_SILU, gate[i]);
    }
}

static void cuda_act_fwd(vnm_act act, float *y, const float *x, int64_t n)
{
    act_fwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS>>>(act, y, x, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_act_bwd(vnm_act act, float *dx, const float *x, const float *dy, int64_t n)
{
    act_bwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS>>>(act, dx, x, dy, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_swiglu_fwd(float *y, const float *gate, const float *up, int64_t n)
{
    swiglu_fwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS>>>(y, gate, up, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_swiglu_bwd(float *dgate, float *dup, const float *gate, const float *up,
                            const float *dy, int64_t n)
{
    if (!dgate && !dup) return;
    swiglu_bwd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS>>>(dgate, dup, gate, up, dy, n);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_activation(vnm_backend *be)
{
    be->act_fwd = cuda_act_fwd;
    be->act_bwd = cuda_act_bwd;
    be->swiglu_fwd = cuda_swiglu_fwd;
    be->swiglu_bwd = cuda_swiglu_bwd;
}
