/* autograd/cuda/activation.cu — CUDA kernels: activation (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_activation(vnm_backend *be) { (void)be; }
