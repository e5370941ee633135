/* autograd/cuda/attention.cu — scaled dot-product attention, forward and backward, with grouped KV
 * heads, as cpu/attention.c: query head h of batch b reads KV head h / rep (rep = Hq / Hkv) of
 * batch b.
 *
 * Method: the products are cuBLAS strided-batched SGEMMs (vnm_cuda_gemm_batched) over the B·Hkv
 * KV groups, around row kernels (one warp per row, looping over S in steps of 32, so S has no
 * limit). The rep query heads of a group are adjacent in q, o, dout and p, so a group's queries
 * form one [rep·T, D] matrix (and [rep·T, S] probabilities) with group stride rep·T·D (rep·T·S):
 *   forward:  P = scale·Q·Kᵀ into p, causal mask and softmax in place, O = P·V;
 *   backward: dV += Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP - rowsum(P ⊙ dP)) in place,
 *             dQ += scale·dS·K, dK += scale·dSᵀ·Q.
 * dK and dV sum over the group's query heads inside one GEMM (inner dimension rep·T); the
 * gradients accumulate through beta = 1. No atomics: cuBLAS and the row kernels are deterministic.
 * The dP/dS scratch [B, Hq, T, S] is taken from the stream-ordered pool (cudaMallocAsync on the
 * backend's stream) and returned after its last use; if it cannot be allocated, the gradients are
 * filled with NaN, as on the CPU.
 *
 * Causal mask: query t sees keys s ≤ t + (S - T) (last query aligned with the last key; the op
 * guarantees T ≤ S). Masked probabilities are stored as 0 and the backward needs no mask. The
 * softmax follows the CPU's (row maximum skipping NaNs subtracted, expf, sum in double, one f32
 * reciprocal), and so does rowsum(P ⊙ dP) (double); the GEMMs round differently from OpenBLAS's,
 * so results agree to rounding, not bits. */
#include "common.cuh"

enum { ROWS_PER_BLOCK = VNM_CUDA_THREADS / 32 }; /* one warp per row */

/* Blocks of ROWS_PER_BLOCK warps covering rows; past the cap, warps stride over the rows. */
static unsigned row_blocks(int64_t rows)
{
    int64_t b = (rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
    return (unsigned)(b < 65535LL * 8 ? b : 65535LL * 8);
}

/* Butterfly reductions: every lane gets the same (bitwise) result. */
__device__ static inline double warp_sum(double x)
{
    for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    return x;
}

/* Like the CPU's row maximum, a NaN never wins a comparison. */
__device__ static inline float warp_max(float x)
{
    for (int m = 16; m > 0; m >>= 1) {
        float y = __shfl_xor_sync(0xffffffffu, x, m);
        x = y > x ? y : x;
    }
    return x;
}

/* p[rows, S] holds the scaled scores of rows = B·Hq·T queries (query t = row % T); each row
 * becomes the softmax over the keys it sees, the masked keys 0. */
__global__ static void softmax_rows_kernel(float *p, int64_t rows, int64_t T, int64_t S,
                                           bool causal)
{
    int lane = threadIdx.x % 32;
    for (int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32; row < rows;
         row += (int64_t)gridDim.x * ROWS_PER_BLOCK) {
        float *pr = p + row * S;                        /* [S] */
        int64_t n = causal ? row % T + S - T + 1 : S; /* keys this query sees */
        float mx = -INFINITY;
        for (int64_t s = lane; s < n; s += 32) mx = pr[s] > mx ? pr[s] : mx;
        mx = warp_max(mx);
        double sum = 0.0;
        for (int64_t s = lane; s < n; s += 32) {
            float e = expf(pr[s] - mx);
            pr[s] = e;
            sum += e;
        }
        float inv = (float)(1.0 / warp_sum(sum));
        for (int64_t s = lane; s < S; s += 32) pr[s] = s < n ? pr[s] * inv : 0.0f;
    }
}

/* ds[rows, S] holds dP; each row becomes dS = P ⊙ (dP - rowsum(P ⊙ dP)). */
__global__ static void softmax_grad_rows_kernel(float *ds, const float *p, int64_t rows, int64_t S)
{
    int lane = threadIdx.x % 32;
    for (int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32; row < rows;
         row += (int64_t)gridDim.x * ROWS_PER_BLOCK) {
        const float *pr = p + row * S; /* [S] */
        float *dr = ds + row * S;      /* [S]: dP, then dS */
        double dot = 0.0;
        for (int64_t s = lane; s < S; s += 32) dot += (double)pr[s] * dr[s];
        float c = (float)warp_sum(dot);
        for (int64_t s = lane; s < S; s += 32) dr[s] = pr[s] * (dr[s] - c);
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
    poison_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(x, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_attention_fwd(float *o, float *p, const float *q, const float *k, const float *v,
                               int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                               bool causal, float scale)
{
    int64_t rows = B * Hq * T, groups = B * Hkv;
    if (rows == 0) return;
    int64_t gt = Hq / Hkv * T; /* query rows per group */
    vnm_cuda_gemm_batched(false, true, gt, S, D, scale, q, D, gt * D, k, D, S * D, 0.0f, p, S,
                          gt * S, groups);
    softmax_rows_kernel<<<row_blocks(rows), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        p, rows, T, S, causal);
    VNM_CUDA_LAUNCHED();
    vnm_cuda_gemm_batched(false, false, gt, D, S, 1.0f, p, S, gt * S, v, D, S * D, 0.0f, o, D,
                          gt * D, groups);
}

static void cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *p,
                               const float *q, const float *k, const float *v, int64_t B,
                               int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                               float scale)
{
    int64_t rows = B * Hq * T, groups = B * Hkv;
    if (rows == 0) return;
    int64_t gt = Hq / Hkv * T; /* query rows per group */
    if (dv)
        vnm_cuda_gemm_batched(true, false, S, D, gt, 1.0f, p, S, gt * S, dout, D, gt * D, 1.0f,
                              dv, D, S * D, groups);
    if (!dq && !dk) return;
    float *ds; /* [B, Hq, T, S]: dP, then dS */
    /* stream-ordered, so the pool reuses the block without a device synchronisation */
    cudaError_t err =
        cudaMallocAsync((void **)&ds, (size_t)(rows * S) * sizeof *ds, vnm_cuda_stream());
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* clear it, or the next launch check would report it */
        poison(dq, rows * D);
        poison(dk, groups * S * D);
        poison(dv, groups * S * D);
        return;
    }
    VNM_CUDA_CHECK(err);
    vnm_cuda_gemm_batched(false, true, gt, S, D, 1.0f, dout, D, gt * D, v, D, S * D, 0.0f, ds, S,
                          gt * S, groups);
    softmax_grad_rows_kernel<<<row_blocks(rows), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        ds, p, rows, S);
    VNM_CUDA_LAUNCHED();
    if (dq)
        vnm_cuda_gemm_batched(false, false, gt, D, S, scale, ds, S, gt * S, k, D, S * D, 1.0f, dq,
                              D, gt * D, groups);
    if (dk)
        vnm_cuda_gemm_batched(true, false, S, D, gt, scale, ds, S, gt * S, q, D, gt * D, 1.0f, dk,
                              D, S * D, groups);
    VNM_CUDA_CHECK(cudaFreeAsync(ds, vnm_cuda_stream()));
}

void vnm_cuda_register_attention(vnm_backend *be)
{
    be->attention_fwd = cuda_attention_fwd;
    be->attention_bwd = cuda_attention_bwd;
}
