/* autograd/cuda/optim.cu — CUDA kernels of the optimisers: sum of squares (gradient clipping), and
 * the SGD and AdamW updates of one flat tensor, as autograd/cpu/optim.c.
 *
 * The updates are bit-identical to the CPU's (and so to torch's single-tensor path): the host
 * derives the f32 scalars exactly as the CPU does (in double, rounded once), and the kernels fuse
 * with __fmaf_rn exactly where the CPU calls fmaf; every other operation is an explicit _rn
 * intrinsic, because nvcc would otherwise contract a·b + c into an FMA of its own choosing.
 *
 * The sum of squares is deterministic but not bit-identical to the CPU's: each product of two
 * floats is exact in double, but the partial sums are grouped by thread and block instead of the
 * CPU's consecutive runs. The grid depends on n only, and the block sums are added on the host in
 * block order. */
#include "common.cuh"

#include <math.h>

enum { SUMSQ_MAX_BLOCKS = 1024, SUMSQ_PER_THREAD = 8 };

/* The per-block partial sums, copied back for the final sum. */
__device__ static double sumsq_partial[SUMSQ_MAX_BLOCKS];

__global__ static void sum_squares_kernel(const float *x, int64_t n)
{
    __shared__ double part[VNM_CUDA_THREADS];
    double acc = 0.0;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        acc += (double)x[i] * x[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = VNM_CUDA_THREADS / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) sumsq_partial[blockIdx.x] = part[0];
}

static void cuda_sum_squares(double *out, const float *x, int64_t n)
{
    if (n <= 0) {
        *out = 0.0;
        return;
    }
    int64_t blocks = (n + VNM_CUDA_THREADS * SUMSQ_PER_THREAD - 1) /
                     (VNM_CUDA_THREADS * SUMSQ_PER_THREAD);
    if (blocks > SUMSQ_MAX_BLOCKS) blocks = SUMSQ_MAX_BLOCKS;
    sum_squares_kernel<<<(unsigned)blocks, VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(x, n);
    VNM_CUDA_LAUNCHED();
    double partial[SUMSQ_MAX_BLOCKS];
    VNM_CUDA_CHECK(cudaMemcpyFromSymbolAsync(partial, sumsq_partial,
                                             (size_t)blocks * sizeof(double), 0,
                                             cudaMemcpyDeviceToHost, vnm_cuda_stream()));
    VNM_CUDA_CHECK(cudaStreamSynchronize(vnm_cuda_stream()));
    double total = 0.0;
    for (int64_t b = 0; b < blocks; b++) total += partial[b];
    *out = total;
}

/* torch: grad = grad.add(p, alpha=wd); buf = clone(grad) on the first step, else
 * buf.mul_(momentum).add_(grad, alpha=1-dampening); grad = grad.add(buf, alpha=momentum) with
 * nesterov, else buf; p.add_(grad, alpha=-lr). */
__global__ static void sgd_kernel(float *p, const float *g, float *buf, int64_t n, float neg_lr,
                                  float momentum, float keep, float wd, bool nesterov,
                                  bool first_step)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float d = g[i];
        if (wd != 0.0f) d = __fmaf_rn(wd, p[i], d);
        if (momentum != 0.0f) {
            float b = first_step ? d : __fmaf_rn(keep, d, __fmul_rn(buf[i], momentum));
            buf[i] = b;
            d = nesterov ? __fmaf_rn(momentum, b, d) : b;
        }
        p[i] = __fmaf_rn(neg_lr, d, p[i]);
    }
}

static void cuda_sgd_step(float *p, const float *g, float *buf, int64_t n, double lr,
                          double momentum, double dampening, double weight_decay, bool nesterov,
                          bool first_step)
{
    if (n <= 0) return;
    sgd_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        p, g, buf, n, (float)-lr, (float)momentum, (float)(1.0 - dampening), (float)weight_decay,
        nesterov, first_step);
    VNM_CUDA_LAUNCHED();
}

/* torch (_single_tensor_adam, decoupled weight decay): p.mul_(1 - lr*wd); m.lerp_(g, 1-beta1);
 * v.mul_(beta2).addcmul_(g, g, value=1-beta2); p.addcdiv_(m, v.sqrt() / sqrt(bc2) + eps,
 * value=-lr/bc1). lerp switches formula at |weight| = 0.5 (small: |w1| < 0.5); addcdiv is
 * p + (value·m) / denom, unfused. */
__global__ static void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n,
                                    float decay, float w1, float beta2, float w2, float eps,
                                    float neg_step, float bc2_sqrt, bool small)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float gi = g[i], mi = m[i];
        float pi = __fmul_rn(p[i], decay);
        float diff = __fsub_rn(gi, mi);
        mi = small ? __fmaf_rn(w1, diff, mi) : __fmaf_rn(__fsub_rn(w1, 1.0f), diff, gi);
        float vi = __fmaf_rn(__fmul_rn(w2, gi), gi, __fmul_rn(v[i], beta2));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(neg_step, mi), denom));
    }
}

static void cuda_adamw_step(float *p, const float *g, float *m, float *v, int64_t n, double lr,
                            double beta1, double beta2, double eps, double weight_decay,
                            int64_t step)
{
    if (n <= 0) return;
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    /* volatile: the host compiler (C++, where GCC contracts by default) must round lr·wd before
     * the subtraction, as the CPU backend's C17 build does. */
    volatile double lr_wd = lr * weight_decay;
    float w1 = (float)(1.0 - beta1);
    adamw_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        p, g, m, v, n, (float)(1.0 - lr_wd), w1, (float)beta2, (float)(1.0 - beta2), (float)eps,
        (float)-(lr / bc1), (float)sqrt(bc2), fabsf(w1) < 0.5f);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_optim(vnm_backend *be)
{
    be->sum_squares = cuda_sum_squares;
    be->sgd_step = cuda_sgd_step;
    be->adamw_step = cuda_adamw_step;
}
