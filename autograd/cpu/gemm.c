/* autograd/cpu/gemm.c — GEMMs through OpenBLAS. Batched products with small matrices run one
 * matrix per OpenMP thread (OpenBLAS's OpenMP build is single-threaded inside a parallel region);
 * large ones run one after another with OpenBLAS's own threads. A product with beta = 0 clears C
 * with memset first and runs with beta = 1: the same result, faster than OpenBLAS's clearing. */
#include <cblas.h>
#include <string.h>

#include "../backend.h"

static void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta,
                C, (blasint)ldc);
}

static void cpu_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc)
{
    if (M == 0 || N == 0) return;
    if (beta == 0.0f && K > 0) {
        /* OpenBLAS clears C for beta = 0 in a pass slower than memset (≈ 10% of the product
         * for a transformer's linear backward); C = 0 + A·B is bitwise the same result */
#pragma omp parallel for schedule(static) if (M * N > 65536)
        for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof *C);
        beta = 1.0f;
    }
    sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void cpu_gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                             const float *A, int64_t lda, int64_t stride_a, const float *B,
                             int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                             int64_t stride_c, int64_t batch)
{
    /* A shared output (stride_c == 0) accumulates over the batch: keep that sequential. */
    bool small = M * N * K < (int64_t)1 << 18 && stride_c != 0;
#pragma omp parallel for schedule(static) if (small && batch > 1)
    for (int64_t i = 0; i < batch; i++)
        cpu_gemm(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb,
                 stride_c == 0 && i > 0 ? 1.0f : beta, C + i * stride_c, ldc);
}

void vnm_cpu_register_gemm(vnm_backend *be)
{
    be->gemm = cpu_gemm;
    be->gemm_batched = cpu_gemm_batched;
}
