/* autograd/cuda/loss.cu — cross-entropy kernels over logits[N, C] with hard labels (ignore_index,
 * label smoothing) or soft targets, with autograd/cpu/loss.c's semantics. The log-softmax is
 * shifted by the row maximum so logits of any size stay finite.
 *
 * Forward: one block per row writes the row's softmax and its loss (double) to a scratch buffer;
 * then one block of CHUNKS threads forms the mean exactly as the CPU does: rows split into CHUNKS
 * fixed chunks, each summed in row order, the chunk sums added in chunk order. The count of rows
 * that count is copied back to the host. */
#include "reduce.cuh"

enum { CHUNKS = 64 }; /* as autograd/cpu/loss.c, so the summation order is the same */

__device__ static inline int64_t label_at(const void *labels, bool labels64, int64_t i)
{
    return labels64 ? ((const int64_t *)labels)[i] : ((const int32_t *)labels)[i];
}

/* Per row: prob = softmax(x) as vnm_cpu_softmax_row, and the row loss given lse = log Σ exp(x):
 * -Σ t·logp for soft targets, else (1-ε)·(-logp[y]) + ε·mean_c(-logp[c]) with
 * -logp[c] = lse - x[c]; 0 for an ignored row (the mean kernel skips it). */
__global__ static void ce_rows_kernel(double *row_loss, float *prob, const float *logits,
                                      const void *labels, bool labels64, const float *targets,
                                      int64_t N, int64_t C, int64_t ignore_index, float smoothing)
{
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        const float *x = logits + r * C; /* [C] */
        float *p = prob + r * C;         /* [C] */
        float mx = -INFINITY;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) mx = x[c] > mx ? x[c] : mx;
        mx = block_max(mx);
        double sum = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float e = expf(x[c] - mx);
            p[c] = e;
            sum += e;
        }
        sum = block_sum(sum);
        float inv = (float)(1.0 / sum);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) p[c] *= inv;
        double lse = mx + log(sum), loss = 0.0;
        if (targets) {
            const float *t = targets + r * C; /* [C] */
            double acc = 0.0;
            for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
                acc += (double)t[c] * (lse - x[c]);
            loss = block_sum(acc);
        } else {
            int64_t y = label_at(labels, labels64, r);
            if (y != ignore_index) {
                double nll = lse - x[y];
                loss = nll;
                if (smoothing != 0.0f) {
                    double sx = 0.0;
                    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) sx += x[c];
                    sx = block_sum(sx);
                    loss = (1.0 - smoothing) * nll + smoothing * (lse - sx / (double)C);
                }
            }
        }
        if (threadIdx.x == 0) row_loss[r] = loss;
    }
}

/* One block of CHUNKS threads: loss[0] = mean of the counted rows' losses, count[0] = how many. */
__global__ static void ce_mean_kernel(float *loss, int64_t *count, const double *row_loss,
                                      const void *labels, bool labels64, bool soft, int64_t N,
                                      int64_t ignore_index)
{
    __shared__ double part[CHUNKS];
    __shared__ int64_t counted[CHUNKS];
    int k = threadIdx.x;
    int64_t per = (N + CHUNKS - 1) / CHUNKS;
    int64_t end = (k + 1) * per < N ? (k + 1) * per : N;
    double acc = 0.0;
    int64_t n = 0;
    for (int64_t r = k * per; r < end; r++) {
        if (!soft && label_at(labels, labels64, r) == ignore_index) continue;
        acc += row_loss[r];
        n++;
    }
    part[k] = acc;
    counted[k] = n;
    __syncthreads();
    if (k != 0) return;
    double total = 0.0;
    n = 0;
    for (int i = 0; i < CHUNKS; i++) {
        total += part[i];
        n += counted[i];
    }
    count[0] = n;
    /* no counted row: 0 rather than PyTorch's NaN (see autograd/op_loss.c) */
    loss[0] = n > 0 ? (float)(total / (double)n) : 0.0f;
}

/* count: a host pointer; everything else is on the device. */
static void cuda_cross_entropy_fwd(float *loss, float *prob, int64_t *count, const float *logits,
                                   const void *labels, bool labels64, const float *targets,
                                   int64_t N, int64_t C, int64_t ignore_index, float smoothing)
{
    double *row_loss = vnm_cuda_scratch_doubles(N + 1); /* [N], then the count */
    int64_t *dcount = (int64_t *)(row_loss + N);
    if (N > 0) {
        ce_rows_kernel<<<vnm_cuda_row_blocks(N), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
            row_loss, prob, logits, labels, labels64, targets, N, C, ignore_index, smoothing);
        VNM_CUDA_LAUNCHED();
    }
    ce_mean_kernel<<<1, CHUNKS, 0, vnm_cuda_stream()>>>(
        loss, dcount, row_loss, labels, labels64, targets != NULL, N, ignore_index);
    VNM_CUDA_LAUNCHED();
    VNM_CUDA_CHECK(cudaMemcpyAsync(count, dcount, sizeof *count, cudaMemcpyDeviceToHost,
                                   vnm_cuda_stream()));
    VNM_CUDA_CHECK(cudaStreamSynchronize(vnm_cuda_stream()));
}

/* d row loss / dx[c] = p[c]·Σt - t[c] (soft), or p[c] - ε/C - (1-ε)·[c = y] (hard);
 * g = d(loss)/count, the same for every counted row. */
__global__ static void ce_bwd_kernel(float *dlogits, const float *prob, const void *labels,
                                     bool labels64, const float *targets, int64_t N, int64_t C,
                                     int64_t ignore_index, float off, float hit, float g)
{
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        float *dx = dlogits + r * C;   /* [C] */
        const float *p = prob + r * C; /* [C] */
        if (targets) {
            const float *t = targets + r * C; /* [C] */
            double st = 0.0;
            for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st += t[c];
            float stf = (float)block_sum(st);
            for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dx[c] += g * (p[c] * stf - t[c]);
            continue;
        }
        int64_t y = label_at(labels, labels64, r);
        if (y == ignore_index) continue;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            dx[c] += g * (p[c] - off - (c == y ? hit : 0.0f));
    }
}

static void cuda_cross_entropy_bwd(float *dlogits, const float *prob, const void *labels,
                                   bool labels64, const float *targets, int64_t N, int64_t C,
                                   int64_t ignore_index, float smoothing, float g)
{
    if (N <= 0) return;
    float off = smoothing / (float)C, hit = 1.0f - smoothing;
    ce_bwd_kernel<<<vnm_cuda_row_blocks(N), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dlogits, prob, labels, labels64, targets, N, C, ignore_index, off, hit, g);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_loss(vnm_backend *be)
{
    be->cross_entropy_fwd = cuda_cross_entropy_fwd;
    be->cross_entropy_bwd = cuda_cross_entropy_bwd;
}
