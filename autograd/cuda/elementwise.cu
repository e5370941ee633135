/* autograd/cuda/elementwise.cu — CUDA kernels: elementwise (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_elementwise(vnm_backend *be) { (void)be; }
