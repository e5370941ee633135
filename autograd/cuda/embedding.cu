/* autograd/cuda/embedding.cu — embedding gather (forward) and scatter-add (backward), with
 * autograd/cpu/embedding.c's semantics: the backward adds into dtable and skips ids outside [0, V).
 *
 * Repeated ids make the scatter a reduction. Without atomics, each dtable cell must be added to by
 * one thread, in token order: thread (bucket, column j) walks all n ids and adds the tokens whose
 * id falls in its bucket (id mod buckets) to column j. Every cell then receives the same f32
 * additions in the same order as on the CPU, whatever the bucket count; the buckets only spread
 * the work over more threads than there are columns. */
#include "common.cuh"

enum {
    MAX_BUCKETS = 64,     /* a power of two: each thread still reads all n ids */
    BWD_THREADS = 65536,  /* buckets·D is grown towards this */
};

__device__ static inline int64_t id_at(const void *ids, bool ids64, int64_t i)
{
    return ids64 ? ((const int64_t *)ids)[i] : ((const int32_t *)ids)[i];
}

/* out[i, j] = table[ids[i], j] */
__global__ static void embedding_fwd_kernel(float *out, const void *ids, bool ids64,
                                            const float *table, int64_t n, int64_t D)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n * D; k += stride)
        out[k] = table[id_at(ids, ids64, k / D) * D + k % D];
}

/* cell k = (bucket, column j): dtable[id, j] += dout[i, j] for the tokens i (in order) whose id is
 * in [0, V) and ≡ bucket mod buckets */
__global__ static void embedding_bwd_kernel(float *dtable, const void *ids, bool ids64,
                                            const float *dout, int64_t n, int64_t V, int64_t D,
                                            int64_t buckets)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < buckets * D;
         k += stride) {
        int64_t bucket = k / D, j = k % D;
        for (int64_t i = 0; i < n; i++) {
            int64_t row = id_at(ids, ids64, i);
            if (row < 0 || row >= V || (row & (buckets - 1)) != bucket) continue;
            dtable[row * D + j] += dout[i * D + j];
        }
    }
}

static void cuda_embedding_fwd(float *out, const void *ids, bool ids64, const float *table,
                               int64_t n, int64_t D)
{
    embedding_fwd_kernel<<<vnm_cuda_blocks(n * D), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        out, ids, ids64, table, n, D);
    VNM_CUDA_LAUNCHED();
}

static void cuda_embedding_bwd(float *dtable, const void *ids, bool ids64, const float *dout,
                               int64_t n, int64_t V, int64_t D)
{
    int64_t buckets = 1;
    while (buckets < MAX_BUCKETS && 2 * buckets <= V && 2 * buckets * D <= BWD_THREADS)
        buckets *= 2;
    embedding_bwd_kernel<<<vnm_cuda_blocks(buckets * D), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dtable, ids, ids64, dout, n, V, D, buckets);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_embedding(vnm_backend *be)
{
    be->embedding_fwd = cuda_embedding_fwd;
    be->embedding_bwd = cuda_embedding_bwd;
}
