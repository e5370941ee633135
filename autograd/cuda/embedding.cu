/* autograd/cuda/embedding.cu — CUDA kernels: embedding (not written yet: entries left NULL make the ops say
 * "not implemented on backend cuda"). */
#include "common.cuh"

void vnm_cuda_register_embedding(vnm_backend *be) { (void)be; }
