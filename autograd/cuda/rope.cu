/* autograd/cuda/rope.cu — rotate-half rotary embedding on x[B·H, T, D], with autograd/cpu/rope.c's
 * angles: inv_freq = 1 / theta^((2i)/D) and angle = (float)(pos_offset + t)·inv_freq, each step
 * rounded to f32 as there (and in Hugging Face's LlamaRotaryEmbedding). The power, cosine and sine
 * are evaluated in double and rounded to f32 once, which agrees with glibc's powf/cosf/sinf (under
 * an ulp off) more often than the device's f32 functions (a few ulps) would. A thread computes the
 * angle of one (t, i) pair and applies it to a strided group of heads. */
#include "common.cuh"

enum { TARGET_THREADS = 1 << 17 }; /* heads are split into groups until about this many threads */

/* y1 = x1·cos - x2·sin, y2 = x2·cos + x1·sin, i.e. y = x·cos + rotate_half(x)·sin with
 * rotate_half(x) = cat(-x2, x1); inverse negates the angle. Cell k = (group, t, i) covers the
 * heads b ≡ group mod groups. */
__global__ static void rope_kernel(float *y, const float *x, int64_t BH, int64_t T, int64_t D,
                                   int64_t pos_offset, float theta, bool inverse, int64_t groups)
{
    int64_t half = D / 2, pairs = T * half;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < groups * pairs;
         k += stride) {
        int64_t group = k / pairs, j = k % pairs, t = j / half, i = j % half;
        float inv_freq = 1.0f / (float)pow((double)theta, (double)((float)(2 * i) / (float)D));
        float angle = (float)(pos_offset + t) * inv_freq;
        double sd, cd;
        sincos((double)angle, &sd, &cd);
        float c = (float)cd, s = inverse ? -(float)sd : (float)sd;
        for (int64_t b = group; b < BH; b += groups) {
            const float *xr = x + (b * T + t) * D; /* [D] */
            float *yr = y + (b * T + t) * D;       /* [D] */
            float x1 = xr[i], x2 = xr[i + half];
            yr[i] = x1 * c - x2 * s;
            yr[i + half] = x2 * c + x1 * s;
        }
    }
}

static void cuda_rope(float *y, const float *x, int64_t BH, int64_t T, int64_t D,
                      int64_t pos_offset, float theta, bool inverse)
{
    int64_t pairs = T * (D / 2);
    if (pairs <= 0 || BH <= 0) return;
    int64_t groups = (TARGET_THREADS + pairs - 1) / pairs;
    if (groups > BH) groups = BH;
    rope_kernel<<<vnm_cuda_blocks(groups * pairs), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        y, x, BH, T, D, pos_offset, theta, inverse, groups);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_rope(vnm_backend *be) { be->rope = cuda_rope; }
