/* autograd/cuda/norm.cu — CUDA kernels: norm (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_norm(vnm_backend *be) { (void)be; }
