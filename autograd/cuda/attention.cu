/* autograd/cuda/attention.cu — scaled dot-product attention, forward and backward, with grouped KV
 * heads, as cpu/attention.c: query head h of batch b reads KV head h / (Hq/Hkv) of batch b.
 * Straightforward kernels for correctness and determinism (a cuDNN path is to replace them for
 * speed): one thread block per query row for the forward and for dS/dQ, one per key row for dK/dV.
 * Every sum runs in a fixed order (warp shuffles and per-block partials combined in warp order), no
 * atomics, so results do not change from run to run. The scores, the probabilities p[B,Hq,T,S] and
 * dS live in global memory, so neither S nor D is limited by shared memory.
 *
 * Causal mask: query t sees keys s ≤ t + (S - T) (last query aligned with the last key; the op
 * guarantees T ≤ S). Masked probabilities are stored as 0 and the backward needs no mask. The
 * softmax follows the CPU's (row maximum subtracted, expf, sum in double, one f32 reciprocal), but
 * the dot products round differently from OpenBLAS's, so results agree to rounding, not bits. */
#include "common.cuh"

enum { WARPS = VNM_CUDA_THREADS / 32 };

/* One block per row; past the cap, blocks stride over the rows. */
static unsigned row_blocks(int64_t rows)
{
    return (unsigned)(rows < 65535LL * 8 ? rows : 65535LL * 8);
}

__device__ static inline float warp_sum(float x)
{
    for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    return x;
}

__device__ static inline double warp_sum_double(double x)
{
    for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    return x;
}

__device__ static inline float warp_max(float x)
{
    for (int m = 16; m > 0; m >>= 1) {
        float y = __shfl_xor_sync(0xffffffffu, x, m);
        x = y > x ? y : x;
    }
    return x;
}

/* a[D]·b[D] by one warp; every lane gets the sum. */
__device__ static inline float warp_dot(const float *a, const float *b, int64_t D)
{
    float acc = 0.0f;
    for (int64_t d = threadIdx.x % 32; d < D; d += 32) acc += a[d] * b[d];
    return warp_sum(acc);
}

/* Block-wide reductions (blockDim.x == VNM_CUDA_THREADS); every thread gets the result. The
 * trailing barrier frees buf for the next reduction. Like the CPU, the maximum skips NaNs. */
__device__ static float block_max(float x, float *buf /* [WARPS] */)
{
    x = warp_max(x);
    if (threadIdx.x % 32 == 0) buf[threadIdx.x / 32] = x;
    __syncthreads();
    float mx = buf[0];
    for (int w = 1; w < WARPS; w++) mx = buf[w] > mx ? buf[w] : mx;
    __syncthreads();
    return mx;
}

__device__ static double block_sum(double x, double *buf /* [WARPS] */)
{
    x = warp_sum_double(x);
    if (threadIdx.x % 32 == 0) buf[threadIdx.x / 32] = x;
    __syncthreads();
    double sum = 0.0;
    for (int w = 0; w < WARPS; w++) sum += buf[w];
    __syncthreads();
    return sum;
}

/* One block per query row (bh, t) of rows = B·Hq·T: scores into p's row, softmax in place, then
 * o[t, :] = p[t, :]·V. */
__global__ static void attention_fwd_kernel(float *o, float *p, const float *q, const float *k,
                                            const float *v, int64_t rows, int64_t Hq,
                                            int64_t Hkv, int64_t T, int64_t S, int64_t D,
                                            bool causal, float scale)
{
    __shared__ float max_buf[WARPS];
    __shared__ double sum_buf[WARPS];
    int64_t rep = Hq / Hkv, warp = threadIdx.x / 32;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        int64_t bh = row / T, t = row % T;
        int64_t kv = (bh / Hq) * Hkv + (bh % Hq) / rep;
        const float *qr = q + row * D;                          /* [D] */
        const float *kh = k + kv * S * D, *vh = v + kv * S * D; /* [S, D] */
        float *pr = p + row * S;                                /* [S]: scores, then probs */
        int64_t n = causal ? t + S - T + 1 : S;                 /* keys this query sees */
        for (int64_t s = warp; s < n; s += WARPS) {
            float dot = warp_dot(qr, kh + s * D, D);
            if (threadIdx.x % 32 == 0) pr[s] = scale * dot;
        }
        __syncthreads();
        float mx = -INFINITY;
        for (int64_t s = threadIdx.x; s < n; s += blockDim.x) mx = pr[s] > mx ? pr[s] : mx;
        mx = block_max(mx, max_buf);
        double sum = 0.0;
        for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
            float e = s < n ? expf(pr[s] - mx) : 0.0f;
            pr[s] = e;
            sum += e;
        }
        float inv = (float)(1.0 / block_sum(sum, sum_buf));
        for (int64_t s = threadIdx.x; s < n; s += blockDim.x) pr[s] *= inv;
        __syncthreads();
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float acc = 0.0f;
            for (int64_t s = 0; s < S; s++) acc += pr[s] * vh[s * D + d];
            o[row * D + d] = acc;
        }
    }
}

/* One block per query row (bh, t): dP = dO·Vᵀ into ds's row, dS = P ⊙ (dP - rowsum(P ⊙ dP)) in
 * place, then dQ[t, :] += scale·dS[t, :]·K when dq is given. */
__global__ static void attention_ds_kernel(float *dq, float *ds, const float *dout, const float *p,
                                           const float *k, const float *v, int64_t rows,
                                           int64_t Hq, int64_t Hkv, int64_t T, int64_t S,
                                           int64_t D, float scale)
{
    __shared__ double sum_buf[WARPS];
    int64_t rep = Hq / Hkv, warp = threadIdx.x / 32;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        int64_t bh = row / T;
        int64_t kv = (bh / Hq) * Hkv + (bh % Hq) / rep;
        const float *dor = dout + row * D;                      /* [D] */
        const float *kh = k + kv * S * D, *vh = v + kv * S * D; /* [S, D] */
        const float *pr = p + row * S;                          /* [S] */
        float *dr = ds + row * S;                               /* [S]: dP, then dS */
        for (int64_t s = warp; s < S; s += WARPS) {
            float dot = warp_dot(dor, vh + s * D, D);
            if (threadIdx.x % 32 == 0) dr[s] = dot;
        }
        __syncthreads();
        double dot = 0.0;
        for (int64_t s = threadIdx.x; s < S; s += blockDim.x) dot += (double)pr[s] * dr[s];
        float c = (float)block_sum(dot, sum_buf);
        for (int64_t s = threadIdx.x; s < S; s += blockDim.x) dr[s] = pr[s] * (dr[s] - c);
        __syncthreads();
        if (!dq) continue;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float acc = 0.0f;
            for (int64_t s = 0; s < S; s++) acc += dr[s] * kh[s * D + d];
            dq[row * D + d] += scale * acc;
        }
    }
}

/* One block per key row (g, s) of keys = B·Hkv·S: dV[s, :] += Pᵀ·dO and dK[s, :] += scale·dSᵀ·Q,
 * summed over the group's query heads in order and, within each, over the query rows in order. */
__global__ static void attention_dkv_kernel(float *dk, float *dv, const float *ds,
                                            const float *dout, const float *p, const float *q,
                                            int64_t keys, int64_t Hq, int64_t Hkv, int64_t T,
                                            int64_t S, int64_t D, float scale)
{
    int64_t rep = Hq / Hkv;
    for (int64_t key = blockIdx.x; key < keys; key += gridDim.x) {
        int64_t g = key / S, s = key % S;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float dk_acc = dk ? dk[key * D + d] : 0.0f, dv_acc = dv ? dv[key * D + d] : 0.0f;
            for (int64_t r = 0; r < rep; r++) {
                int64_t bh = (g / Hkv) * Hq + (g % Hkv) * rep + r;
                float sum_k = 0.0f, sum_v = 0.0f;
                for (int64_t t = bh * T; t < (bh + 1) * T; t++) { /* rows of [B·Hq·T] */
                    if (dv) sum_v += p[t * S + s] * dout[t * D + d];
                    if (dk) sum_k += ds[t * S + s] * q[t * D + d];
                }
                dv_acc += sum_v;
                dk_acc += scale * sum_k;
            }
            if (dk) dk[key * D + d] = dk_acc;
            if (dv) dv[key * D + d] = dv_acc;
        }
    }
}

__global__ static void poison_kernel(float *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = NAN;
}

/* The kernel table has no error channel: as on the CPU, if the dS scratch cannot be allocated,
 * NaN gradients make the failure visible (non-finite loss / gradient norm). */
static void poison(float *x, int64_t n)
{
    if (!x || n <= 0) return;
    poison_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS>>>(x, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_attention_fwd(float *o, float *p, const float *q, const float *k, const float *v,
                               int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                               bool causal, float scale)
{
    int64_t rows = B * Hq * T;
    if (rows == 0) return;
    attention_fwd_kernel<<<row_blocks(rows), VNM_CUDA_THREADS>>>(o, p, q, k, v, rows, Hq, Hkv, T,
                                                                 S, D, causal, scale);
    VNM_CUDA_LAUNCHED();
}

static void cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *p,
                               const float *q, const float *k, const float *v, int64_t B,
                               int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                               float scale)
{
    int64_t rows = B * Hq * T, keys = B * Hkv * S;
    if (rows == 0) return;
    float *ds = NULL; /* [B, Hq, T, S]: dP, then dS */
    if (dq || dk) {
        /* stream-ordered, so the pool reuses the block without a device synchronisation */
        cudaError_t err = cudaMallocAsync((void **)&ds, (size_t)(rows * S) * sizeof *ds, 0);
        if (err == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError(); /* clear it, or the next launch check would report it */
            poison(dq, rows * D);
            poison(dk, keys * D);
            poison(dv, keys * D);
            return;
        }
        VNM_CUDA_CHECK(err);
        attention_ds_kernel<<<row_blocks(rows), VNM_CUDA_THREADS>>>(dq, ds, dout, p, k, v, rows,
                                                                    Hq, Hkv, T, S, D, scale);
        VNM_CUDA_LAUNCHED();
    }
    if (dk || dv) {
        attention_dkv_kernel<<<row_blocks(keys), VNM_CUDA_THREADS>>>(dk, dv, ds, dout, p, q, keys,
                                                                     Hq, Hkv, T, S, D, scale);
        VNM_CUDA_LAUNCHED();
    }
    if (ds) VNM_CUDA_CHECK(cudaFreeAsync(ds, 0));
}

void vnm_cuda_register_attention(vnm_backend *be)
{
    be->attention_fwd = cuda_attention_fwd;
    be->attention_bwd = cuda_attention_bwd;
}
