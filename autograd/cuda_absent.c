/* autograd/cuda_absent.c — the CUDA entry point of a build without nvcc: no CUDA backend. */
#include <stdio.h>

#include "backend.h"

const vnm_backend *vnm_backend_cuda(char *reason, size_t len)
{
    snprintf(reason, len, "this build has no CUDA (nvcc was not found when it was configured)");
    return NULL;
}
