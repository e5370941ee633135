/* autograd/cuda/rope.cu — CUDA kernels: rope (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_rope(vnm_backend *be) { (void)be; }
