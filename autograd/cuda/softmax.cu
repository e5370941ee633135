/* autograd/cuda/softmax.cu — softmax and log-softmax over the rows of x[rows, D], forward and
 * backward, with autograd/cpu/softmax.c's semantics and rounding steps: the row maximum is
 * subtracted before exponentiating (no overflow at any magnitude), row sums accumulate in double,
 * backward adds into dx. One block per row, reduced across the block in a fixed shuffle order. */
#include "reduce.cuh"

/* y may be x: each thread reads and writes only its own columns, after the maximum is known. */
__global__ static void softmax_fwd_kernel(float *y, const float *x, int64_t rows, int64_t D,
                                          bool take_log)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * D; /* [D] */
        float *yr = y + r * D;       /* [D] */
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) mx = xr[j] > mx ? xr[j] : mx;
        mx = block_max(mx);
        double sum = 0.0;
        if (!take_log) {
            for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
                float e = expf(xr[j] - mx);
                yr[j] = e;
                sum += e;
            }
            float inv = (float)(1.0 / block_sum(sum));
            for (int64_t j = threadIdx.x; j < D; j += blockDim.x) yr[j] *= inv;
            continue;
        }
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) sum += expf(xr[j] - mx);
        /* (x - max) first: adding max back into the log-sum would round it at max's scale */
        float ls = (float)log(block_sum(sum));
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) yr[j] = (xr[j] - mx) - ls;
    }
}

/* softmax: dx += y·(dy - Σ dy·y); log-softmax: dx += dy - exp(y)·Σ dy */
__global__ static void softmax_bwd_kernel(float *dx, const float *y, const float *dy,
                                          int64_t rows, int64_t D, bool take_log)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *yr = y + r * D, *dyr = dy + r * D; /* [D] */
        float *dxr = dx + r * D;                        /* [D] */
        double acc = 0.0;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
            acc += take_log ? (double)dyr[j] : (double)dyr[j] * yr[j];
        float s = (float)block_sum(acc);
        if (take_log)
            for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
                dxr[j] += dyr[j] - expf(yr[j]) * s;
        else
            for (int64_t j = threadIdx.x; j < D; j += blockDim.x) dxr[j] += yr[j] * (dyr[j] - s);
    }
}

static void cuda_softmax_fwd(float *y, const float *x, int64_t rows, int64_t D, bool take_log)
{
    if (rows <= 0) return;
    softmax_fwd_kernel<<<vnm_cuda_row_blocks(rows), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        y, x, rows, D, take_log);
    VNM_CUDA_LAUNCHED();
}

static void cuda_softmax_bwd(float *dx, const float *y, const float *dy, int64_t rows, int64_t D,
                             bool take_log)
{
    if (rows <= 0) return;
    softmax_bwd_kernel<<<vnm_cuda_row_blocks(rows), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dx, y, dy, rows, D, take_log);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_softmax(vnm_backend *be)
{
    be->softmax_fwd = cuda_softmax_fwd;
    be->softmax_bwd = cuda_softmax_bwd;
}
