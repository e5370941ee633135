/* autograd/cuda/random.cu — CUDA kernels: random (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_random(vnm_backend *be) { (void)be; }
