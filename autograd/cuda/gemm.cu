/* autograd/cuda/gemm.cu — GEMMs through cuBLAS: f32 (the handle keeps the default math mode, which
 * never uses TF32 for cublasSgemm, so products are as accurate as the CPU's), and bf16/f16 operands
 * with f32 accumulation and output on the tensor cores (gemm_half, mixed precision).
 *
 * The table is row-major and cuBLAS column-major: a row-major C[M,N] is a column-major Cᵀ[N,M] with
 * the same leading dimension, and Cᵀ = op(B)ᵀ·op(A)ᵀ, so each call passes B before A and N before M.
 * K = 0 or alpha = 0 only scales C by beta (BLAS's semantics, as OpenBLAS: beta 0 clears C, and A
 * and B are not read). A batch whose output is shared (stride_c 0) accumulates over the batch one
 * GEMM after another, as the CPU does; otherwise one strided-batched call. */
#include "common.cuh"

#include <cublas_v2.h>

#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)

static void cublas_check(cublasStatus_t st, const char *what, const char *file, int line)
{
    if (st == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr, "vnm: cuBLAS error at %s:%d in %s: %s\n", file, line, what,
            cublasGetStatusString(st));
    abort();
}

/* Created on the first GEMM; it works on the backend's stream like every other kernel. */
static cublasHandle_t handle;

static cublasHandle_t cublas(void)
{
    if (!handle) {
        CUBLAS_CHECK(cublasCreate(&handle));
        CUBLAS_CHECK(cublasSetStream(handle, vnm_cuda_stream()));
        CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    }
    return handle;
}

static cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

/* C[b][i, j] = beta·C[b][i, j] over batch matrices [M, N] (row-major, ldc, stride_c). */
__global__ static void scale_c_kernel(float *C, int64_t M, int64_t N, int64_t ldc,
                                      int64_t stride_c, int64_t batch, float beta)
{
    int64_t total = batch * M * N, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        int64_t b = idx / (M * N), i = idx / N % M, j = idx % N;
        float *c = C + b * stride_c + i * ldc + j;
        *c = beta == 0.0f ? 0.0f : __fmul_rn(beta, *c);
    }
}

static void scale_c(float *C, int64_t M, int64_t N, int64_t ldc, int64_t stride_c, int64_t batch,
                    float beta)
{
    if (beta == 1.0f) return;
    scale_c_kernel<<<vnm_cuda_blocks(batch * M * N), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        C, M, N, ldc, stride_c, batch, beta);
    VNM_CUDA_LAUNCHED();
}

static void cuda_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                      int64_t ldc)
{
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        scale_c(C, M, N, ldc, 0, 1, beta);
        return;
    }
    CUBLAS_CHECK(cublasSgemm(cublas(), op(tb), op(ta), (int)N, (int)M, (int)K, &alpha, B, (int)ldb,
                             A, (int)lda, &beta, C, (int)ldc));
}

void vnm_cuda_gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, int64_t stride_a, const float *B,
                           int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                           int64_t stride_c, int64_t batch)
{
    if (M == 0 || N == 0 || batch == 0) return;
    if (stride_c == 0) {
        for (int64_t i = 0; i < batch; i++)
            cuda_gemm(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb,
                      i > 0 ? 1.0f : beta, C, ldc);
        return;
    }
    if (K == 0 || alpha == 0.0f) {
        scale_c(C, M, N, ldc, stride_c, batch, beta);
        return;
    }
    CUBLAS_CHECK(cublasSgemmStridedBatched(cublas(), op(tb), op(ta), (int)N, (int)M, (int)K, &alpha,
                                           B, (int)ldb, (long long)stride_b, A, (int)lda,
                                           (long long)stride_a, &beta, C, (int)ldc,
                                           (long long)stride_c, (int)batch));
}

/* Half operands on the tensor cores: bf16/f16 A and B, f32 C, f32 accumulation. */
static void cuda_gemm_half(vnm_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const void *A, int64_t lda, int64_t stride_a,
                           const void *B, int64_t ldb, int64_t stride_b, float beta, float *C,
                           int64_t ldc, int64_t stride_c, int64_t batch)
{
    if (M == 0 || N == 0 || batch == 0) return;
    size_t esize = 2; /* bf16 and f16 */
    if (stride_c == 0) {
        for (int64_t i = 0; i < batch; i++)
            cuda_gemm_half(dt, ta, tb, M, N, K, alpha, (const char *)A + i * stride_a * esize, lda,
                           0, (const char *)B + i * stride_b * esize, ldb, 0, i > 0 ? 1.0f : beta,
                           C, ldc, 1, 1);
        return;
    }
    if (K == 0 || alpha == 0.0f) {
        scale_c(C, M, N, ldc, stride_c, batch, beta);
        return;
    }
    cudaDataType_t t = dt == VNM_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas(), op(tb), op(ta), (int)N, (int)M, (int)K,
                                            &alpha, B, t, (int)ldb, (long long)stride_b, A, t,
                                            (int)lda, (long long)stride_a, &beta, C, CUDA_R_32F,
                                            (int)ldc, (long long)stride_c, (int)batch,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void vnm_cuda_register_gemm(vnm_backend *be)
{
    be->gemm = cuda_gemm;
    be->gemm_batched = vnm_cuda_gemm_batched;
    be->gemm_half = cuda_gemm_half;
}
