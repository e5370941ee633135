/* autograd/cpu/gemm.c — GEMMs through OpenBLAS. Batched products with small matrices run one
 * matrix per OpenMP thread (OpenBLAS's OpenMP build is single-threaded inside a parallel region);
 * large ones run one after another with OpenBLAS's own threads. A product with beta = 0 clears C
 * with memset first and runs with beta = 1: the same result, faster than OpenBLAS's clearing.
 *
 * Half operands (gemm_half) are widened to f32 and multiplied by sgemm: a product of two bf16 or
 * f16 values is exact in f32, so this is the tensor-core arithmetic (half in, f32 accumulate) up to
 * the order of the sums. AVX2 has no half FMA; mixed precision on the CPU is for checking, not
 * speed. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
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

/* Elements spanned by `batch` matrices op(X) of rows × cols stored with leading dimension ld. */
static int64_t span(bool t, int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch)
{
    int64_t r = t ? cols : rows, c = t ? rows : cols;
    if (r == 0 || c == 0 || batch == 0) return 0;
    return (batch - 1) * stride + (r - 1) * ld + c;
}

/* x[n] half (dt) → f32; NULL when out of memory. */
static float *widen(vnm_dtype dt, const void *x, int64_t n)
{
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    if (!f) return NULL;
    const uint16_t *h = x;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        f[i] = dt == VNM_DTYPE_BF16 ? vnm_bf16_to_f32(h[i]) : vnm_f16_to_f32(h[i]);
    return f;
}

static void cpu_gemm_half(vnm_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                          float alpha, const void *A, int64_t lda, int64_t stride_a, const void *B,
                          int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                          int64_t stride_c, int64_t batch)
{
    float *a = widen(dt, A, span(ta, M, K, lda, stride_a, batch));
    float *b = widen(dt, B, span(tb, K, N, ldb, stride_b, batch));
    if (!a || !b) { /* out of memory: NaN, which the loss check reports (as attention does) */
        for (int64_t i = 0; i < (stride_c ? batch : 1) * M; i++)
            for (int64_t j = 0; j < N; j++) C[i / M * stride_c + i % M * ldc + j] = NAN;
        free(a);
        free(b);
        return;
    }
    cpu_gemm_batched(ta, tb, M, N, K, alpha, a, lda, stride_a, b, ldb, stride_b, beta, C, ldc,
                     stride_c, batch);
    free(a);
    free(b);
}

void vnm_cpu_register_gemm(vnm_backend *be)
{
    be->gemm = cpu_gemm;
    be->gemm_batched = cpu_gemm_batched;
    be->gemm_half = cpu_gemm_half;
}
