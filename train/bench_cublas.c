/* train/bench_cublas.c — the raw cuBLAS baseline of `vnm bench ops --device cuda`: the three GEMMs
 * of a linear layer's forward and backward (y = x·wᵀ, dx = dy·w, dw = dyᵀ·x) on device buffers,
 * best of `reps` after one warm-up, each timed to completion: SGEMMs, or (half) bf16 operands with
 * f32 output and accumulation through cublasGemmEx, as the mixed-precision linear runs them. A
 * build without CUDA has none. */
#include "bench.h"

#include "vnm_config.h"

#ifdef VNM_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

/* C = op(A)·op(B), column-major: f32 in, or bf16 in (half); f32 out. */
static void gemm(cublasHandle_t h, bool half, cublasOperation_t ta, cublasOperation_t tb, int m,
                 int n, int k, const void *A, int lda, const void *B, int ldb, float *C, int ldc)
{
    const float one = 1.0f, zero = 0.0f;
    if (!half) {
        cublasSgemm(h, ta, tb, m, n, k, &one, A, lda, B, ldb, &zero, C, ldc);
        return;
    }
    cublasGemmEx(h, ta, tb, m, n, k, &one, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb, &zero, C,
                 CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

double vnm_bench_raw_cublas(int64_t T, int64_t in, int64_t out, bool half, int reps)
{
    void *x = NULL, *w = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL, *dw = NULL;
    cublasHandle_t h = NULL;
    double best = -1.0;
    size_t e = half ? 2 : 4, nx = (size_t)(T * in), nw = (size_t)(out * in), ny = (size_t)(T * out);
    if (cudaMalloc(&x, nx * e) || cudaMalloc(&w, nw * e) || cudaMalloc(&dy, ny * e) ||
        cudaMalloc((void **)&y, ny * 4) || cudaMalloc((void **)&dx, nx * 4) ||
        cudaMalloc((void **)&dw, nw * 4) || cublasCreate(&h) != CUBLAS_STATUS_SUCCESS)
        goto done;
    cudaMemset(x, 0, nx * e);
    cudaMemset(w, 0, nw * e);
    cudaMemset(dy, 0, ny * e);
    int t = (int)T, i = (int)in, o = (int)out;
    best = 1e30;
    for (int r = 0; r <= reps; r++) {
        cudaDeviceSynchronize();
        double t0 = vnm_bench_now();
        /* column-major views of the row-major products */
        gemm(h, half, CUBLAS_OP_T, CUBLAS_OP_N, o, t, i, w, i, x, i, y, o);
        gemm(h, half, CUBLAS_OP_N, CUBLAS_OP_N, i, t, o, w, i, dy, o, dx, i);
        gemm(h, half, CUBLAS_OP_N, CUBLAS_OP_T, i, o, t, x, i, dy, o, dw, i);
        cudaDeviceSynchronize();
        double dt = vnm_bench_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
done:
    if (h) cublasDestroy(h);
    cudaFree(x);
    cudaFree(w);
    cudaFree(dy);
    cudaFree(y);
    cudaFree(dx);
    cudaFree(dw);
    return best;
}
#else
double vnm_bench_raw_cublas(int64_t T, int64_t in, int64_t out, bool half, int reps)
{
    (void)T, (void)in, (void)out, (void)half, (void)reps;
    return -1.0;
}
#endif
