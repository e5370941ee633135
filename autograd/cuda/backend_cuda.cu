/* autograd/cuda/backend_cuda.cu — the CUDA entry point: finds a device (the first, or the one
 * CUDA_VISIBLE_DEVICES leaves first), then assembles the CUDA kernel table from the per-topic
 * kernel files once. Without a device it returns no backend and says why, so callers skip or refuse
 * cleanly. */
#include "common.cuh"

static vnm_backend cuda_table;
static bool ready;
static cudaStream_t stream;

cudaStream_t vnm_cuda_stream(void) { return stream; }

extern "C" const vnm_backend *vnm_backend_cuda(char *reason, size_t len)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        snprintf(reason, len, "no CUDA device (%s)",
                 err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
        return NULL;
    }
    if (!ready) {
        VNM_CUDA_CHECK(cudaSetDevice(0));
        VNM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        cuda_table.name = "cuda";
        vnm_cuda_register_memory(&cuda_table);
        vnm_cuda_register_gemm(&cuda_table);
        vnm_cuda_register_gemm_lt(&cuda_table);
        vnm_cuda_register_elementwise(&cuda_table);
        vnm_cuda_register_activation(&cuda_table);
        vnm_cuda_register_norm(&cuda_table);
        vnm_cuda_register_softmax(&cuda_table);
        vnm_cuda_register_attention(&cuda_table);
        vnm_cuda_register_attention_cudnn(&cuda_table);
        vnm_cuda_register_embedding(&cuda_table);
        vnm_cuda_register_rope(&cuda_table);
        vnm_cuda_register_random(&cuda_table);
        vnm_cuda_register_dropout(&cuda_table);
        vnm_cuda_register_loss(&cuda_table);
        vnm_cuda_register_optim(&cuda_table);
        ready = true;
    }
    cudaDeviceProp prop;
    VNM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    snprintf(reason, len, "CUDA device %s (sm_%d%d)", prop.name, prop.major, prop.minor);
    return &cuda_table;
}
