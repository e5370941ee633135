/* autograd/cuda/common.cuh — what the CUDA kernel files share: error checks, launch sizes, the
 * device Philox (bit-identical to autograd/rng.c, so dropout masks and random fills agree with the
 * CPU backend element for element) and the register functions that assemble the table.
 *
 * Execution model: every kernel runs on the legacy default stream, in issue order; copies to the
 * host synchronise. Kernels are deterministic: no float atomics; reductions run in a fixed order.
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

/* Philox4x32-10, the same rounds and constants as vnm_philox4x32. */
__device__ static inline void vnm_philox_dev(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi,
                                             uint32_t out[4])
{
    uint32_t c0 = (uint32_t)ctr_lo, c1 = (uint32_t)(ctr_lo >> 32);
    uint32_t c2 = (uint32_t)ctr_hi, c3 = (uint32_t)(ctr_hi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
#pragma unroll
    for (int round = 0; round < 10; round++) {
        uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* [0, 1) with 24 random bits, as vnm_philox_uniform. */
__device__ static inline float vnm_philox_uniform_dev(uint32_t bits)
{
    return (float)(bits >> 8) * (1.0f / 16777216.0f);
}

/* The table's gemm_batched (gemm.cu), also called directly by kernels built on cuBLAS products
 * (attention.cu). */
void vnm_cuda_gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, int64_t stride_a, const float *B,
                           int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                           int64_t stride_c, int64_t batch);

/* Each CUDA kernel file fills its part of the table. */
void vnm_cuda_register_memory(vnm_backend *be);
void vnm_cuda_register_gemm(vnm_backend *be);
void vnm_cuda_register_elementwise(vnm_backend *be);
void vnm_cuda_register_activation(vnm_backend *be);
void vnm_cuda_register_norm(vnm_backend *be);
void vnm_cuda_register_softmax(vnm_backend *be);
void vnm_cuda_register_attention(vnm_backend *be);
void vnm_cuda_register_embedding(vnm_backend *be);
void vnm_cuda_register_rope(vnm_backend *be);
void vnm_cuda_register_random(vnm_backend *be);
void vnm_cuda_register_dropout(vnm_backend *be);
void vnm_cuda_register_loss(vnm_backend *be);
void vnm_cuda_register_optim(vnm_backend *be);

#endif
