/* autograd/cuda/memory.cu — device memory for the CUDA backend: allocation, copies (on the
 * backend's stream; host copies wait for it), fills and float dtype conversion.
 *
 * Conversions are bit-identical to autograd/dtype.c: the hardware roundings (cvt.rn) are round to
 * nearest even like the CPU's, but a NaN comes out of them canonical, so NaNs take the CPU's
 * formula (sign and top payload bits kept, quiet bit set) instead. */
#include "common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

/* The stream-ordered pool of the kernels' scratch (cudaMallocAsync): it keeps what is given back
 * for the next step instead of returning it to the system at every synchronisation. */
static cudaMemPool_t pool;

static void *cuda_alloc(size_t bytes)
{
    size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, rounded);
    if (err == cudaErrorMemoryAllocation) { /* the pool may hold what is missing: retry once */
        (void)cudaGetLastError(); /* clear it, so the next launch check does not report it */
        VNM_CUDA_CHECK(cudaStreamSynchronize(vnm_cuda_stream()));
        VNM_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
        err = cudaMalloc(&p, rounded);
    }
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return NULL;
    }
    VNM_CUDA_CHECK(err);
    return p;
}

static void cuda_free(void *p) { VNM_CUDA_CHECK(cudaFree(p)); }

static void cuda_memset0(void *p, size_t bytes)
{
    VNM_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, vnm_cuda_stream()));
}

static void cuda_to_host(void *host, const void *dev, size_t bytes)
{
    VNM_CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, vnm_cuda_stream()));
    VNM_CUDA_CHECK(cudaStreamSynchronize(vnm_cuda_stream()));
}

/* From pageable host memory the call returns once the data is staged, so host may be reused. */
static void cuda_from_host(void *dev, const void *host, size_t bytes)
{
    VNM_CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, vnm_cuda_stream()));
}

static void cuda_copy(void *dst, const void *src, size_t bytes)
{
    VNM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, vnm_cuda_stream()));
}

__global__ static void fill_kernel(float *x, int64_t n, float value)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        x[i] = value;
}

static void cuda_fill(float *x, int64_t n, float value)
{
    if (n <= 0) return;
    fill_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(x, n, value);
    VNM_CUDA_LAUNCHED();
}

__device__ static inline float load(const void *src, vnm_dtype dt, int64_t i)
{
    switch (dt) {
    case VNM_DTYPE_BF16: return __uint_as_float((uint32_t)((const uint16_t *)src)[i] << 16);
    case VNM_DTYPE_F16: {
        uint16_t h = ((const uint16_t *)src)[i];
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) /* NaN: keep the payload */
            return __uint_as_float(((uint32_t)(h & 0x8000) << 16) | 0x7f800000 |
                                   ((uint32_t)(h & 0x3ff) << 13));
        return __half2float(__ushort_as_half(h));
    }
    default: return ((const float *)src)[i];
    }
}

__device__ static inline void store(void *dst, vnm_dtype dt, int64_t i, float v)
{
    uint32_t u = __float_as_uint(v);
    switch (dt) {
    case VNM_DTYPE_BF16:
        ((uint16_t *)dst)[i] = isnan(v) ? (uint16_t)((u >> 16) | 0x40)
                                        : __bfloat16_as_ushort(__float2bfloat16_rn(v));
        break;
    case VNM_DTYPE_F16:
        ((uint16_t *)dst)[i] = isnan(v) ? (uint16_t)(((u >> 16) & 0x8000) | 0x7e00)
                                        : __half_as_ushort(__float2half_rn(v));
        break;
    default: ((float *)dst)[i] = v; break;
    }
}

__global__ static void convert_kernel(void *dst, vnm_dtype dst_dt, const void *src,
                                      vnm_dtype src_dt, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        store(dst, dst_dt, i, load(src, src_dt, i));
}

static void cuda_convert(void *dst, vnm_dtype dst_dt, const void *src, vnm_dtype src_dt, int64_t n)
{
    if (n <= 0) return;
    convert_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dst, dst_dt, src, src_dt, n);
    VNM_CUDA_LAUNCHED();
}

double *vnm_cuda_scratch_doubles(int64_t n)
{
    static double *buf;
    static int64_t cap;
    if (n > cap) {
        if (buf) VNM_CUDA_CHECK(cudaFree(buf));
        VNM_CUDA_CHECK(cudaMalloc((void **)&buf, (size_t)n * sizeof *buf));
        cap = n;
    }
    return buf;
}

static void cuda_synchronize(void) { VNM_CUDA_CHECK(cudaStreamSynchronize(vnm_cuda_stream())); }

void vnm_cuda_register_memory(vnm_backend *be)
{
    int dev = 0;
    uint64_t keep = UINT64_MAX;
    VNM_CUDA_CHECK(cudaGetDevice(&dev));
    VNM_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    VNM_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->memset0 = cuda_memset0;
    be->to_host = cuda_to_host;
    be->from_host = cuda_from_host;
    be->copy = cuda_copy;
    be->fill = cuda_fill;
    be->convert = cuda_convert;
    be->synchronize = cuda_synchronize;
}
