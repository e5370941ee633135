/* autograd/dtype.c — element sizes, names and the f32 <-> bf16/f16 conversions (round to nearest
 * even, as PyTorch does). */
#include <math.h>
#include <string.h>

#include "autograd.h"

size_t vnm_dtype_size(vnm_dtype dt)
{
    switch (dt) {
    case VNM_DTYPE_F32: return 4;
    case VNM_DTYPE_BF16: return 2;
    case VNM_DTYPE_F16: return 2;
    case VNM_DTYPE_I32: return 4;
    case VNM_DTYPE_I64: return 8;
    case VNM_DTYPE_U8: return 1;
    }
    return 0;
}

const char *vnm_dtype_name(vnm_dtype dt)
{
    switch (dt) {
    case VNM_DTYPE_F32: return "f32";
    case VNM_DTYPE_BF16: return "bf16";
    case VNM_DTYPE_F16: return "f16";
    case VNM_DTYPE_I32: return "i32";
    case VNM_DTYPE_I64: return "i64";
    case VNM_DTYPE_U8: return "u8";
    }
    return "?";
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float vnm_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t vnm_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float vnm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000 | (man << 13));
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t vnm_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    if (isnan(f)) return sign | 0x7e00;
    float a = fabsf(f);
    if (a >= 65520.0f) return sign | 0x7c00; /* rounds to infinity */
    if (a < ldexpf(1.0f, -14)) {
        /* subnormal: multiples of 2^-24, rounded to nearest even by the FPU */
        float q = nearbyintf(a * ldexpf(1.0f, 24));
        return sign | (uint16_t)q;
    }
    uint32_t exp = ((u >> 23) & 0xff) - 112, man = u & 0x7fffff;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}
