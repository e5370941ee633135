/* sparse/cpu/spmm.c — what the three fast CPU products share: the run-time ISA choice, aligned
 * scratch, packing token-major activations into the tiled feature-major layout of spmm_impl.h
 * (and back, accumulating), and the per-group class lists of a row block. The transposes run on
 * 8×8 blocks with AVX2 where the CPU has it and the block's features are consecutive, otherwise
 * element by element. */
#include <stdlib.h>
#include <string.h>

#include "spmm_impl.h"

static bool force_portable;

void vnm_spmm_force_portable(bool on) { force_portable = on; }

bool vnm_spmm_use_avx2(void)
{
#if VNM_SPMM_X86
    return !force_portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

float *vnm_spmm_alloc(int64_t n)
{
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

int64_t vnm_spmm_tile_stride(int64_t rows, int W)
{
    /* A whole number of 4 KiB pages plus 256 B: row j of 16 consecutive tiles then spreads over
     * all L1 sets instead of piling into one. */
    int64_t n = rows * W;
    return (n + 1023) / 1024 * 1024 + 64;
}

/* Features j0 … j0+7 read 8 consecutive source columns starting at *m0. */
static bool consecutive8(const int32_t *map, int64_t j0, int64_t n, int32_t *m0)
{
    if (j0 + 8 > n) return false;
    if (!map) {
        *m0 = (int32_t)j0;
        return true;
    }
    if (map[j0] < 0) return false;
    for (int i = 1; i < 8; i++)
        if (map[j0 + i] != map[j0] + i) return false;
    *m0 = map[j0];
    return true;
}

/* Rows j0 … j1-1, tokens w0 … w1-1 of a tile, element by element. */
static void pack_rows_scalar(const float *a, int64_t ld, int64_t nt, const int32_t *map,
                             int64_t j0, int64_t j1, int w0, int w1, int W, float *dst)
{
    for (int64_t j = j0; j < j1; j++) {
        int64_t m = map ? map[j] : j;
        float *d = dst + j * W;
        for (int w = w0; w < w1; w++) d[w] = (w < nt && m >= 0) ? a[w * ld + m] : 0.0f;
    }
}

static void unpack_rows_scalar(const float *src, int W, int64_t nt, const int32_t *map,
                               int64_t j0, int64_t j1, float *dst, int64_t ld)
{
    for (int64_t j = j0; j < j1; j++) {
        int64_t m = map ? map[j] : j;
        if (m < 0) continue;
        for (int64_t w = 0; w < nt; w++) dst[w * ld + m] += src[j * W + w];
    }
}

#if VNM_SPMM_X86
static inline __attribute__((always_inline)) VNM_AVX2 void transpose8(__m256 r[8])
{
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x31);
    }
}

static VNM_AVX2 void pack_tile_avx2(const float *a, int64_t ld, int64_t nt, const int32_t *map,
                                    int64_t n, int W, float *dst)
{
    /* Long tiles go 256 tokens at a time: the source rows of a slice stream in order and stay
     * within the TLB's reach. */
    for (int wb = 0; wb < W; wb += 256) {
        const int we = W - wb < 256 ? W : wb + 256;
        for (int64_t j0 = 0; j0 < n; j0 += 8) {
            int32_t m0;
            if (!consecutive8(map, j0, n, &m0)) {
                pack_rows_scalar(a, ld, nt, map, j0, j0 + 8 < n ? j0 + 8 : n, wb, we, W, dst);
                continue;
            }
            for (int w0 = wb; w0 < we; w0 += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = w0 + i < nt ? _mm256_loadu_ps(a + (w0 + i) * ld + m0)
                                       : _mm256_setzero_ps();
                transpose8(r);
                for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (j0 + i) * W + w0, r[i]);
            }
        }
    }
}

static VNM_AVX2 void unpack_add_avx2(const float *src, int W, int64_t nt, const int32_t *map,
                                     int64_t n, float *dst, int64_t ld)
{
    for (int64_t j0 = 0; j0 < n; j0 += 8) {
        int32_t m0;
        if (!consecutive8(map, j0, n, &m0)) {
            unpack_rows_scalar(src, W, nt, map, j0, j0 + 8 < n ? j0 + 8 : n, dst, ld);
            continue;
        }
        for (int w0 = 0; w0 < nt; w0 += 8) {
            const int n = nt - w0 < 8 ? (int)(nt - w0) : 8;
            __m256 r[8], d[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_load_ps(src + (j0 + i) * W + w0);
            transpose8(r);
            /* All loads before any store: token rows often lie a multiple of 4 KiB apart, and a
             * load behind a store with the same low address bits waits for it. */
            for (int i = 0; i < n; i++) d[i] = _mm256_loadu_ps(dst + (w0 + i) * ld + m0);
            for (int i = 0; i < n; i++)
                _mm256_storeu_ps(dst + (w0 + i) * ld + m0, _mm256_add_ps(d[i], r[i]));
        }
    }
}
#endif

void vnm_spmm_pack_tile(const float *a, int64_t ld, int64_t nt, const int32_t *map, int64_t n,
                        int64_t rows, int W, float *dst)
{
#if VNM_SPMM_X86
    if (vnm_spmm_use_avx2())
        pack_tile_avx2(a, ld, nt, map, n, W, dst);
    else
#endif
        for (int64_t j0 = 0; j0 < n; j0 += 8)
            pack_rows_scalar(a, ld, nt, map, j0, j0 + 8 < n ? j0 + 8 : n, 0, W, W, dst);
    memset(dst + n * W, 0, (size_t)((rows - n) * W) * sizeof(float));
}

void vnm_spmm_pack(const float *a, int64_t T, int64_t ld, const int32_t *map, int64_t n,
                   int64_t rows, int W, int64_t stride, float *dst)
{
    const int64_t ntiles = (T + W - 1) / W;
#pragma omp parallel for schedule(static) if (T * n > 65536)
    for (int64_t k = 0; k < ntiles; k++)
        vnm_spmm_pack_tile(a + k * W * ld, ld, T - k * W < W ? T - k * W : W, map, n, rows, W,
                           dst + k * stride);
}

void vnm_spmm_unpack_add(const float *src, int W, int64_t nt, const int32_t *map, int64_t n,
                         float *dst, int64_t ld)
{
#if VNM_SPMM_X86
    if (vnm_spmm_use_avx2()) {
        unpack_add_avx2(src, W, nt, map, n, dst, ld);
        return;
    }
#endif
    unpack_rows_scalar(src, W, nt, map, 0, n, dst, ld);
}

const uint8_t vnm_spmm_class_code[VNM_SPMM_CLASSES] = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE};

bool vnm_spmm_classes(const vnm_spmm_weight *w, int64_t b, uint8_t *order, uint16_t *start,
                      float *vals_sorted)
{
    static const int8_t class_of[16] = {-1, -1, -1, -1, 0, -1, -1, -1,
                                        1,  3,  -1, -1, 2, 4,  5,  -1};
    enum { NC = VNM_SPMM_CLASSES };
    const int64_t V = w->pat.V, gp = w->Gp;
    memset(start, 0, (size_t)(gp * (NC + 1)) * sizeof *start);
    for (int64_t r = 0; r < V; r++) {
        if (w->rows[b * V + r] < 0) continue;
        const uint8_t *s = w->slots + (b * V + r) * gp;
        for (int64_t g = 0; g < gp; g++) {
            const int c = s[g] < 16 ? class_of[s[g]] : -1;
            if (c < 0) return false;
            start[g * (NC + 1) + c + 1]++;
        }
    }
    uint16_t *pos = start + gp * (NC + 1); /* [gp][NC] next free entry of each class */
    for (int64_t g = 0; g < gp; g++)
        for (int c = 0; c < NC; c++) {
            start[g * (NC + 1) + c + 1] += start[g * (NC + 1) + c];
            pos[g * NC + c] = start[g * (NC + 1) + c];
        }
    for (int64_t r = 0; r < V; r++) {
        if (w->rows[b * V + r] < 0) continue;
        const uint8_t *s = w->slots + (b * V + r) * gp;
        const float *v = w->vals + (b * V + r) * gp * 2;
        for (int64_t g = 0; g < gp; g++) {
            const int64_t i = pos[g * NC + class_of[s[g]]]++;
            order[g * V + i] = (uint8_t)r;
            if (vals_sorted) {
                vals_sorted[(g * V + i) * 2] = v[g * 2];
                vals_sorted[(g * V + i) * 2 + 1] = v[g * 2 + 1];
            }
        }
    }
    return true;
}
