/* autograd/cuda/common.cuh — what the CUDA kernel files share: error checks, launch sizes, the
 * Philox of autograd/philox.h (the CPU's own definition, so dropout masks and random fills agree
 * with the CPU backend element for element) and the register functions that assemble the table.
 *
 * Execution model: every kernel, copy and library call runs on one non-blocking stream of the
 * backend's (vnm_cuda_stream), in issue order; a copy to the host waits for that stream. Other
 * streams (an upload overlapping the step, NCCL's) order themselves against it with events.
 * Kernels are deterministic: no float atomics; reductions run in a fixed order. The exception is
 * cuDNN's fused attention backward (attention_cudnn.cu), whose dQ sums use atomics.
 * A CUDA error inside a kernel-table entry cannot be returned (the table's entries return void):
 * it is printed with the file, line and call, and the process aborts. */
#ifndef VNM_CUDA_COMMON_CUH
#define VNM_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "../backend.h"
}
#include "../philox.h"

#define VNM_CUDA_CHECK(call) vnm_cuda_check((call), #call, __FILE__, __LINE__)
/* Checks the launch of the kernel just issued. */
#define VNM_CUDA_LAUNCHED() vnm_cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static inline void vnm_cuda_check(cudaError_t err, const char *what, const char *file, int line)
{
    if (err == cudaSuccess) return;
    fprintf(stderr, "vnm: CUDA error at %s:%d in %s: %s\n", file, line, what,
            cudaGetErrorString(err));
    abort();
}

enum { VNM_CUDA_THREADS = 256 };

/* Blocks of VNM_CUDA_THREADS covering n elements (grid-stride loops cover the rest). */
static inline unsigned vnm_cuda_blocks(int64_t n)
{
    int64_t b = (n + VNM_CUDA_THREADS - 1) / VNM_CUDA_THREADS;
    if (b < 1) b = 1;
    if (b > 65535LL * 8) b = 65535LL * 8;
    return (unsigned)b;
}

/* The backend's stream, created with the backend (backend_cuda.cu). */
cudaStream_t vnm_cuda_stream(void);

/* Device scratch of n doubles, shared by the kernels that need one (memory.cu): grown on demand
 * and kept. Safe because every kernel runs in issue order on one stream, and cudaFree of an
 * outgrown buffer waits for the kernels still reading it; valid until the next call. */
double *vnm_cuda_scratch_doubles(int64_t n);

/* The table's gemm_batched (gemm.cu), also called directly by kernels built on cuBLAS products
 * (attention.cu). */
void vnm_cuda_gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, int64_t stride_a, const float *B,
                           int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                           int64_t stride_c, int64_t batch);

/* Each CUDA kernel file fills its part of the table. */
void vnm_cuda_register_memory(vnm_backend *be);
void vnm_cuda_register_gemm(vnm_backend *be);
void vnm_cuda_register_gemm_lt(vnm_backend *be);
void vnm_cuda_register_elementwise(vnm_backend *be);
void vnm_cuda_register_activation(vnm_backend *be);
void vnm_cuda_register_norm(vnm_backend *be);
void vnm_cuda_register_softmax(vnm_backend *be);
void vnm_cuda_register_attention(vnm_backend *be);
void vnm_cuda_register_attention_cudnn(vnm_backend *be);
void vnm_cuda_register_embedding(vnm_backend *be);
void vnm_cuda_register_rope(vnm_backend *be);
void vnm_cuda_register_random(vnm_backend *be);
void vnm_cuda_register_dropout(vnm_backend *be);
void vnm_cuda_register_loss(vnm_backend *be);
void vnm_cuda_register_optim(vnm_backend *be);

#endif
