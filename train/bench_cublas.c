/* train/bench_cublas.c — the raw cuBLAS baseline of `vnm bench ops --device cuda`: the three SGEMMs
 * of a linear layer's forward and backward (y = x·wᵀ, dx = dy·w, dw = dyᵀ·x) on device buffers,
 * best of `reps` after one warm-up, each timed to completion. A build without CUDA has none. */
#include "bench.h"

#include "vnm_config.h"

#ifdef VNM_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

double vnm_bench_raw_cublas(int64_t T, int64_t in, int64_t out, int reps)
{
    float *x = NULL, *w = NULL, *y = NULL, *dx = NULL, *dw = NULL;
    cublasHandle_t h = NULL;
    double best = -1.0;
    size_t nx = (size_t)(T * in) * 4, nw = (size_t)(out * in) * 4, ny = (size_t)(T * out) * 4;
    if (cudaMalloc((void **)&x, nx) || cudaMalloc((void **)&w, nw) || cudaMalloc((void **)&y, ny) ||
        cudaMalloc((void **)&dx, nx) || cudaMalloc((void **)&dw, nw) ||
        cublasCreate(&h) != CUBLAS_STATUS_SUCCESS)
        goto done;
    cudaMemset(x, 0, nx);
    cudaMemset(w, 0, nw);
    const float one = 1.0f, zero = 0.0f;
    int t = (int)T, i = (int)in, o = (int)out;
    best = 1e30;
    for (int r = 0; r <= reps; r++) {
        cudaDeviceSynchronize();
        double t0 = vnm_bench_now();
        /* column-major views of the row-major products */
        cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, o, t, i, &one, w, i, x, i, &zero, y, o);
        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, i, t, o, &one, w, i, y, o, &zero, dx, i);
        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, i, o, t, &one, x, i, y, o, &zero, dw, i);
        cudaDeviceSynchronize();
        double dt = vnm_bench_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
done:
    if (h) cublasDestroy(h);
    cudaFree(x);
    cudaFree(w);
    cudaFree(y);
    cudaFree(dx);
    cudaFree(dw);
    return best;
}
#else
double vnm_bench_raw_cublas(int64_t T, int64_t in, int64_t out, int reps)
{
    (void)T, (void)in, (void)out, (void)reps;
    return -1.0;
}
#endif
