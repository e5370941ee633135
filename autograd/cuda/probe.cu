/* autograd/cuda/probe.cu — the CUDA entry point of a CUDA build. It reports whether a device is
 * present; the CUDA kernel table is not part of this build yet, so it returns no backend and says
 * why, and callers skip or refuse cleanly. */
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "../backend.h"

const vnm_backend *vnm_backend_cuda(char *reason, size_t len)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        snprintf(reason, len, "no CUDA device (%s)",
                 err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
        return NULL;
    }
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    snprintf(reason, len, "CUDA device %s found, but the CUDA kernel table is not built yet",
             prop.name);
    return NULL;
}
}
