/* autograd/cuda/loss.cu — CUDA kernels: loss (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_loss(vnm_backend *be) { (void)be; }
