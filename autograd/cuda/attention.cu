/* autograd/cuda/attention.cu — CUDA kernels: attention (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_attention(vnm_backend *be) { (void)be; }
