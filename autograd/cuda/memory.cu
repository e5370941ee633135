/* autograd/cuda/memory.cu — CUDA kernels: memory (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_memory(vnm_backend *be) { (void)be; }
