/* autograd/cpu/rope.c — rotate-half rotary embedding on x[B·H, T, D].
 *
 * Angles follow Hugging Face's LlamaRotaryEmbedding step by step in f32, so positions far into a
 * sequence (where an f32 angle has lost digits) rotate exactly as in transformers:
 *   inv_freq[i] = 1 / theta^((2i) / D)        (f32 exponent, f32 pow, f32 reciprocal)
 *   angle       = (float)(pos_offset + t) · inv_freq[i]   (one f32 product)
 *   cos, sin    = cosf(angle), sinf(angle)    (duplicated over the two halves)
 * The results can still differ from torch by the last-bit rounding of powf/cosf/sinf.
 * Each pair's angle is computed once, in a table, and applied to every head. */
#include <math.h>
#include <stdlib.h>

#include "../backend.h"

/* cos and sin of pair i of position pos (sin negated for the inverse rotation) */
static inline void rope_angle(float theta, int64_t D, int64_t pos, int64_t i, bool inverse,
                              float *c, float *s)
{
    float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)D);
    float angle = (float)pos * inv_freq;
    *c = cosf(angle);
    *s = inverse ? -sinf(angle) : sinf(angle);
}

/* y1 = x1·cos - x2·sin, y2 = x2·cos + x1·sin, i.e. y = x·cos + rotate_half(x)·sin with
 * rotate_half(x) = cat(-x2, x1); inverse negates the angle. The angles of the T·D/2 (t, i) pairs
 * go into a table first (without memory for it, each row computes its own), then the rows are
 * rotated in memory order. */
static void cpu_rope(float *y, const float *x, int64_t BH, int64_t T, int64_t D, int64_t pos_offset,
                     float theta, bool inverse)
{
    int64_t half = D / 2, pairs = T * half;
    float *cs = malloc((size_t)(2 * pairs) * sizeof *cs + 1); /* [T, half] cos, then sin */
    if (cs) {
#pragma omp parallel for schedule(static) if (pairs > 4096)
        for (int64_t j = 0; j < pairs; j++)
            rope_angle(theta, D, pos_offset + j / half, j % half, inverse, &cs[j],
                       &cs[pairs + j]);
    }
#pragma omp parallel for schedule(static) if (BH * pairs > 32768)
    for (int64_t r = 0; r < BH * T; r++) {
        const float *xr = x + r * D; /* [D] */
        float *yr = y + r * D;
        int64_t t = r % T;
        for (int64_t i = 0; i < half; i++) {
            float c, s;
            if (cs) c = cs[t * half + i], s = cs[pairs + t * half + i];
            else rope_angle(theta, D, pos_offset + t, i, inverse, &c, &s);
            float x1 = xr[i], x2 = xr[i + half];
            yr[i] = x1 * c - x2 * s;
            yr[i + half] = x2 * c + x1 * s;
        }
    }
    free(cs);
}

void vnm_cpu_register_rope(vnm_backend *be) { be->rope = cpu_rope; }
