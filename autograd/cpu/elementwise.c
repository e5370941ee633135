/* autograd/cpu/elementwise.c — strided copies (views made contiguous, gradients of views and of
 * broadcasts), broadcast binary ops, scale/axpy and axis sums. Every loop over a reduction runs in
 * a fixed order, so results do not depend on the thread count. */
#include <stdbool.h>

#include "../backend.h"

static bool has_zero_stride(const vnm_layout *l)
{
    for (int i = 0; i < l->ndim; i++)
        if (l->shape[i] > 1 && l->strides[i] == 0) return true;
    return false;
}

static void cpu_copy_strided(float *dst, const vnm_layout *dl, const float *src,
                             const vnm_layout *sl, bool accumulate)
{
    vnm_layout d = vnm_layout_pad4(dl), s = vnm_layout_pad4(sl);
    int64_t n0 = d.shape[0], n1 = d.shape[1], n2 = d.shape[2], n3 = d.shape[3];
    int64_t rows = n0 * n1 * n2;
    /* A dst with 0 strides sums several sources into one element: run it serially in index
     * order, which fixes the summation order. */
    bool parallel = !has_zero_stride(&d) && rows * n3 > 16384;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i0 = r / (n1 * n2), i1 = (r / n2) % n1, i2 = r % n2;
        float *dp = dst + i0 * d.strides[0] + i1 * d.strides[1] + i2 * d.strides[2];
        const float *sp = src + i0 * s.strides[0] + i1 * s.strides[1] + i2 * s.strides[2];
        int64_t ds = d.strides[3], ss = s.strides[3];
        /* the common inner layouts get loops the compiler can vectorise */
        if (ds == 1 && ss == 1) {
            if (accumulate)
                for (int64_t i3 = 0; i3 < n3; i3++) dp[i3] += sp[i3];
            else
                for (int64_t i3 = 0; i3 < n3; i3++) dp[i3] = sp[i3];
        } else if (ds == 1 && ss == 0) {
            float v = sp[0];
            if (accumulate)
                for (int64_t i3 = 0; i3 < n3; i3++) dp[i3] += v;
            else
                for (int64_t i3 = 0; i3 < n3; i3++) dp[i3] = v;
        } else if (accumulate) {
            for (int64_t i3 = 0; i3 < n3; i3++) dp[i3 * ds] += sp[i3 * ss];
        } else {
            for (int64_t i3 = 0; i3 < n3; i3++) dp[i3 * ds] = sp[i3 * ss];
        }
    }
}

static inline float apply(vnm_binary_op op, float a, float b)
{
    switch (op) {
    case VNM_BINARY_ADD: return a + b;
    case VNM_BINARY_SUB: return a - b;
    case VNM_BINARY_MUL: return a * b;
    case VNM_BINARY_DIV: return a / b;
    }
    return 0.0f;
}

/* One row of n outputs with both inputs at unit stride, the op fixed so the loop vectorises. */
#define BINARY_ROW(OP)                                                                             \
    for (int64_t i3 = 0; i3 < n; i3++) o[i3] = a[i3] OP b[i3];

static void binary_row(vnm_binary_op op, float *o, const float *a, const float *b, int64_t n)
{
    switch (op) {
    case VNM_BINARY_ADD: BINARY_ROW(+) break;
    case VNM_BINARY_SUB: BINARY_ROW(-) break;
    case VNM_BINARY_MUL: BINARY_ROW(*) break;
    case VNM_BINARY_DIV: BINARY_ROW(/) break;
    }
}

static bool is_contiguous(const vnm_layout *l)
{
    int64_t s = 1;
    for (int i = l->ndim - 1; i >= 0; i--) {
        if (l->shape[i] != 1 && l->strides[i] != s) return false;
        s *= l->shape[i];
    }
    return true;
}

static void cpu_binary(vnm_binary_op op, float *out, const vnm_layout *ol, const float *a,
                       const vnm_layout *al, const float *b, const vnm_layout *bl)
{
    vnm_layout o = vnm_layout_pad4(ol), la = vnm_layout_pad4(al), lb = vnm_layout_pad4(bl);
    int64_t n1 = o.shape[1], n2 = o.shape[2], n3 = o.shape[3];
    int64_t rows = o.shape[0] * n1 * n2;
    if (is_contiguous(al) && is_contiguous(bl)) {
        /* same layout everywhere: one flat loop, split into blocks of whole vectors */
        enum { BLOCK = 8192 };
        int64_t n = rows * n3, blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n > 32768)
        for (int64_t k = 0; k < blocks; k++) {
            int64_t lo = k * BLOCK, len = n - lo < BLOCK ? n - lo : BLOCK;
            binary_row(op, out + lo, a + lo, b + lo, len);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (rows * n3 > 32768)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i0 = r / (n1 * n2), i1 = (r / n2) % n1, i2 = r % n2;
        float *op_ = out + r * n3;
        const float *ap = a + i0 * la.strides[0] + i1 * la.strides[1] + i2 * la.strides[2];
        const float *bp = b + i0 * lb.strides[0] + i1 * lb.strides[1] + i2 * lb.strides[2];
        int64_t as = la.strides[3], bs = lb.strides[3];
        if (as == 1 && bs == 1) {
            binary_row(op, op_, ap, bp, n3);
        } else {
            for (int64_t i3 = 0; i3 < n3; i3++) op_[i3] = apply(op, ap[i3 * as], bp[i3 * bs]);
        }
    }
}

static void cpu_scale(float *y, const float *x, float s, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) y[i] = s * x[i];
}

static void cpu_axpy(float *y, const float *x, float s, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) y[i] += s * x[i];
}

static void cpu_sum_axis(float *y, const float *x, int64_t outer, int64_t n, int64_t inner,
                         bool accumulate)
{
    if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n > 65536)
        for (int64_t o = 0; o < outer; o++) {
            const float *xp = x + o * n;
            double acc = 0.0;
            for (int64_t k = 0; k < n; k++) acc += xp[k];
            y[o] = accumulate ? y[o] + (float)acc : (float)acc;
        }
        return;
    }
    /* Sum the n rows of x[o] (inner floats each) in row order; parallel over blocks of columns,
     * each block accumulated in registers while the rows stream past. 32 columns: enough
     * blocks to share a bias gradient (96 to 384 columns) evenly between threads. */
    enum { COLS = 32 };
    int64_t blocks = (inner + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (outer * n * inner > 65536)
    for (int64_t c = 0; c < outer * blocks; c++) {
        int64_t o = c / blocks, i0 = (c % blocks) * COLS;
        int64_t w = inner - i0 < COLS ? inner - i0 : COLS;
        float acc[COLS] = {0};
        const float *xp = x + o * n * inner + i0;
        for (int64_t k = 0; k < n; k++)
            for (int64_t j = 0; j < w; j++) acc[j] += xp[k * inner + j];
        float *yp = y + o * inner + i0;
        for (int64_t j = 0; j < w; j++) yp[j] = accumulate ? yp[j] + acc[j] : acc[j];
    }
}

static void cpu_scatter(float *out, int64_t n_out, const float *src, const int32_t *idx,
                        int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t k = 0; k < n; k++)
        if (idx[k] >= 0 && idx[k] < n_out) out[idx[k]] = src[k];
}

static void cpu_gather_add(float *dst, const float *src, int64_t n_src, const int32_t *idx,
                           int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t k = 0; k < n; k++)
        if (idx[k] >= 0 && idx[k] < n_src) dst[k] += src[idx[k]];
}

void vnm_cpu_register_elementwise(vnm_backend *be)
{
    be->scatter = cpu_scatter;
    be->gather_add = cpu_gather_add;
    be->copy_strided = cpu_copy_strided;
    be->binary = cpu_binary;
    be->scale = cpu_scale;
    be->axpy = cpu_axpy;
    be->sum_axis = cpu_sum_axis;
}
