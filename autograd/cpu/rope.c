/* autograd/cpu/rope.c — rotate-half rotary embedding on x[B·H, T, D].
 *
 * Angles follow Hugging Face's LlamaRotaryEmbedding step by step in f32, so positions far into a
 * sequence (where an f32 angle has lost digits) rotate exactly as in transformers:
 *   inv_freq[i] = 1 / theta^((2i) / D)        (f32 exponent, f32 pow, f32 reciprocal)
 *   angle       = (float)(pos_offset + t) · inv_freq[i]   (one f32 product)
 *   cos, sin    = cosf(angle), sinf(angle)    (duplicated over the two halves)
 * The results can still differ from torch by the last-bit rounding of powf/cosf/sinf.
 * Threads split the (t, i) pairs: each computes its angle once and applies it to every head. */
#include <math.h>

#include "../backend.h"

/* y1 = x1·cos - x2·sin, y2 = x2·cos + x1·sin, i.e. y = x·cos + rotate_half(x)·sin with
 * rotate_half(x) = cat(-x2, x1); inverse negates the angle. */
static void cpu_rope(float *y, const float *x, int64_t BH, int64_t T, int64_t D, int64_t pos_offset,
                     float theta, bool inverse)
{
    int64_t half = D / 2, pairs = T * half;
#pragma omp parallel for schedule(static) if (BH * pairs > 32768)
    for (int64_t j = 0; j < pairs; j++) {
        int64_t t = j / half, i = j % half;
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)D);
        float angle = (float)(pos_offset + t) * inv_freq;
        float c = cosf(angle), s = inverse ? -sinf(angle) : sinf(angle);
        for (int64_t b = 0; b < BH; b++) {
            const float *xr = x + (b * T + t) * D; /* [D] */
            float *yr = y + (b * T + t) * D;       /* [D] */
            float x1 = xr[i], x2 = xr[i + half];
            yr[i] = x1 * c - x2 * s;
            yr[i + half] = x2 * c + x1 * s;
        }
    }
}

void vnm_cpu_register_rope(vnm_backend *be) { be->rope = cpu_rope; }
