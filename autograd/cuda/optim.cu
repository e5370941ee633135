/* autograd/cuda/optim.cu — CUDA kernels: optim (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_optim(vnm_backend *be) { (void)be; }
