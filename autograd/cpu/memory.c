/* autograd/cpu/memory.c — host memory for the CPU backend: allocation, copies, fills and float
 * dtype conversion. */
#include <stdlib.h>
#include <string.h>

#include "../backend.h"

static void *cpu_alloc(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }
static void cpu_free(void *p) { free(p); }
static void cpu_memset0(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void cpu_synchronize(void) {}

static void cpu_fill(float *x, int64_t n, float value)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) x[i] = value;
}

static float load(const void *src, vnm_dtype dt, int64_t i)
{
    switch (dt) {
    case VNM_DTYPE_BF16: return vnm_bf16_to_f32(((const uint16_t *)src)[i]);
    case VNM_DTYPE_F16: return vnm_f16_to_f32(((const uint16_t *)src)[i]);
    default: return ((const float *)src)[i];
    }
}

static void store(void *dst, vnm_dtype dt, int64_t i, float v)
{
    switch (dt) {
    case VNM_DTYPE_BF16: ((uint16_t *)dst)[i] = vnm_f32_to_bf16(v); break;
    case VNM_DTYPE_F16: ((uint16_t *)dst)[i] = vnm_f32_to_f16(v); break;
    default: ((float *)dst)[i] = v; break;
    }
}

static void cpu_convert(void *dst, vnm_dtype dst_dt, const void *src, vnm_dtype src_dt, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) store(dst, dst_dt, i, load(src, src_dt, i));
}

void vnm_cpu_register_memory(vnm_backend *be)
{
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->memset0 = cpu_memset0;
    be->to_host = cpu_copy;
    be->from_host = cpu_copy;
    be->copy = cpu_copy;
    be->fill = cpu_fill;
    be->convert = cpu_convert;
    be->synchronize = cpu_synchronize;
}
