/* sparse/cpu/spmm_impl.h — internals shared by the fast CPU products (sparse/cpu/spmm*.c): the
 * run-time ISA choice (with the switch tests use to force the portable kernels), aligned scratch,
 * and the packed activation layout the micro-kernels read.
 *
 * Packed layout: a token-major activation a[T][ld] becomes tiles of W tokens; tile k is a
 * feature-major block [rows][W] whose row j holds feature map[j] (feature j when map is NULL) of
 * tokens kW … kW+W-1, zero past T, where map[j] < 0, and in rows ≥ n (spare zero rows the kernels
 * point padding columns at). Tiles lie `stride` floats apart (vnm_spmm_tile_stride), padded so
 * that the same row of consecutive tiles falls in different L1 sets.
 */
#ifndef VNM_SPARSE_CPU_SPMM_IMPL_H
#define VNM_SPARSE_CPU_SPMM_IMPL_H

#include <stdbool.h>

#include "../kernels.h"

/* The AVX2+FMA kernels exist on x86-64 with GCC-style target attributes; elsewhere only the
 * portable ones are compiled. */
#if defined(__x86_64__) && defined(__GNUC__)
#define VNM_SPMM_X86 1
#include <immintrin.h>
#define VNM_AVX2 __attribute__((target("avx2,fma")))
#else
#define VNM_SPMM_X86 0
/* Rows of a row block sorted by slot code, per group: dX and dW walk them class by class so
 * that the slots (and the x rows) a class uses are fixed for its whole run. */
enum { VNM_SPMM_CLASSES = 6 };
/* Slot code s0 | s1 << 2 of each class, in the order the kernels walk them. */
extern const uint8_t vnm_spmm_class_code[VNM_SPMM_CLASSES];
/* For row block b: order[g][..] lists the live rows (rows[o] ≥ 0, as offsets in the block) of
 * each group by class, class c being order[g][start[g][c] .. start[g][c + 1]); start has
 * VNM_SPMM_CLASSES + 1 entries per group and needs as many again as scratch after the last
 * group. vals_sorted (may be NULL) receives the pair of values of each listed row, in the same
 * order: [gp][V][2]. Returns false on a slot code outside the 6 legal ones. */
bool vnm_spmm_classes(const vnm_spmm_weight *w, int64_t b, uint8_t *order, uint16_t *start,
                      float *vals_sorted);

#endif

/* Tests: true forces the portable kernels, false returns to run-time selection. */
void vnm_spmm_force_portable(bool on);
/* Whether the AVX2+FMA kernels run: the CPU has them and they are not forced off. */
bool vnm_spmm_use_avx2(void);

/* 64-byte aligned scratch of n floats (free with free()); NULL when out of memory. */
float *vnm_spmm_alloc(int64_t n);

int64_t vnm_spmm_tile_stride(int64_t rows, int W);
/* Packs one tile of nt ≤ W tokens (a points at its first token) into dst [rows][W], rows ≥ n. */
void vnm_spmm_pack_tile(const float *a, int64_t ld, int64_t nt, const int32_t *map, int64_t n,
                        int64_t rows, int W, float *dst);
/* Packs a[T][ld] into ceil(T / W) tiles, in parallel over tiles. */
void vnm_spmm_pack(const float *a, int64_t T, int64_t ld, const int32_t *map, int64_t n,
                   int64_t rows, int W, int64_t stride, float *dst);
/* The inverse, accumulating, for one tile of nt ≤ W tokens: dst[w][map[j]] += src[j][w] for
 * j < n with map[j] ≥ 0 (map NULL: identity); dst points at the tile's first token. */
void vnm_spmm_unpack_add(const float *src, int W, int64_t nt, const int32_t *map, int64_t n,
                         float *dst, int64_t ld);

/* Rows of a row block sorted by slot code, per group: dX and dW walk them class by class so
 * that the slots (and the x rows) a class uses are fixed for its whole run. */
enum { VNM_SPMM_CLASSES = 6 };
/* Slot code s0 | s1 << 2 of each class, in the order the kernels walk them. */
extern const uint8_t vnm_spmm_class_code[VNM_SPMM_CLASSES];
/* For row block b: order[g][..] lists the live rows (rows[o] ≥ 0, as offsets in the block) of
 * each group by class, class c being order[g][start[g][c] .. start[g][c + 1]); start has
 * VNM_SPMM_CLASSES + 1 entries per group and needs as many again as scratch after the last
 * group. vals_sorted (may be NULL) receives the pair of values of each listed row, in the same
 * order: [gp][V][2]. Returns false on a slot code outside the 6 legal ones. */
bool vnm_spmm_classes(const vnm_spmm_weight *w, int64_t b, uint8_t *order, uint16_t *start,
                      float *vals_sorted);

#endif
