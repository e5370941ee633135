/* autograd/cuda/elementwise.cu — strided copies (views made contiguous, gradients of views and of
 * broadcasts), broadcast binary ops, scale/axpy and axis sums, as autograd/cpu/elementwise.c.
 *
 * Layouts are padded to 4 dims on the host and passed to the kernels by value. Every reduction is
 * done by one thread (or, for long f64 row sums, one block) per output element in a fixed order,
 * never with atomics. The copies, binary ops, scale, axpy, the reduction of copy_strided and the
 * column sums of sum_axis add in the CPU's order with the CPU's roundings (__fmul_rn/__fadd_rn keep
 * nvcc from fusing axpy), so they are bit-identical to it; only sum_axis over rows longer than
 * ROW_SERIAL_MAX sums its doubles in another (fixed) order, which shows after the rounding to f32
 * only in rare ties. */
#include "common.cuh"

static int64_t numel4(const vnm_layout *l)
{
    return l->shape[0] * l->shape[1] * l->shape[2] * l->shape[3];
}

/* The row-major indices of linear index idx in a 4-dim shape. */
__device__ static inline void unravel4(int64_t idx, const int64_t *shape, int64_t i[4])
{
    i[3] = idx % shape[3];
    idx /= shape[3];
    i[2] = idx % shape[2];
    idx /= shape[2];
    i[1] = idx % shape[1];
    i[0] = idx / shape[1];
}

__device__ static inline int64_t offset4(const int64_t i[4], const int64_t *strides)
{
    return i[0] * strides[0] + i[1] * strides[1] + i[2] * strides[2] + i[3] * strides[3];
}

/* One thread per element: d and s address distinct elements of dst for distinct indices. */
__global__ static void copy_strided_kernel(float *dst, vnm_layout d, const float *src, vnm_layout s,
                                           int64_t n, bool accumulate)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += stride) {
        int64_t i[4];
        unravel4(idx, d.shape, i);
        float *dp = dst + offset4(i, d.strides);
        float v = src[offset4(i, s.strides)];
        *dp = accumulate ? *dp + v : v;
    }
}

/* A dst with 0 strides: the dims split into kept ones (kd/ks: shape, dst and src strides; 1 where
 * reduced) and reduced ones (r: shape, src strides; 1 where kept). One thread per kept index walks
 * the reduced indices in row-major order, the order in which the CPU's serial loop meets them. */
__global__ static void copy_reduce_kernel(float *dst, vnm_layout kd, const float *src, vnm_layout ks,
                                          vnm_layout r, int64_t n, bool accumulate)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += stride) {
        int64_t i[4];
        unravel4(idx, kd.shape, i);
        float *dp = dst + offset4(i, kd.strides);
        const float *sp = src + offset4(i, ks.strides);
        float acc = *dp;
        for (int64_t j0 = 0; j0 < r.shape[0]; j0++)
            for (int64_t j1 = 0; j1 < r.shape[1]; j1++)
                for (int64_t j2 = 0; j2 < r.shape[2]; j2++)
                    for (int64_t j3 = 0; j3 < r.shape[3]; j3++) {
                        float v = sp[j0 * r.strides[0] + j1 * r.strides[1] + j2 * r.strides[2] +
                                     j3 * r.strides[3]];
                        acc = accumulate ? acc + v : v;
                    }
        *dp = acc;
    }
}

static void cuda_copy_strided(float *dst, const vnm_layout *dl, const float *src,
                              const vnm_layout *sl, bool accumulate)
{
    vnm_layout d = vnm_layout_pad4(dl), s = vnm_layout_pad4(sl);
    vnm_layout kd = d, ks = s, r = s;
    bool reduce = false;
    for (int i = 0; i < VNM_MAX_DIMS; i++) {
        bool reduced = d.shape[i] > 1 && d.strides[i] == 0;
        reduce = reduce || reduced;
        if (reduced) {
            kd.shape[i] = ks.shape[i] = 1;
        } else {
            r.shape[i] = 1;
            r.strides[i] = 0;
        }
    }
    if (reduce) {
        int64_t n = numel4(&kd);
        if (n <= 0) return;
        copy_reduce_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
            dst, kd, src, ks, r, n, accumulate);
    } else {
        int64_t n = numel4(&d);
        if (n <= 0) return;
        copy_strided_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
            dst, d, src, s, n, accumulate);
    }
    VNM_CUDA_LAUNCHED();
}

__device__ static inline float apply(vnm_binary_op op, float a, float b)
{
    switch (op) {
    case VNM_BINARY_ADD: return __fadd_rn(a, b);
    case VNM_BINARY_SUB: return __fsub_rn(a, b);
    case VNM_BINARY_MUL: return __fmul_rn(a, b);
    case VNM_BINARY_DIV: return __fdiv_rn(a, b);
    }
    return 0.0f;
}

/* out is contiguous with o's shape (as on the CPU, o's strides are not read). */
__global__ static void binary_kernel(vnm_binary_op op, float *out, vnm_layout o, const float *a,
                                     vnm_layout la, const float *b, vnm_layout lb, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += stride) {
        int64_t i[4];
        unravel4(idx, o.shape, i);
        out[idx] = apply(op, a[offset4(i, la.strides)], b[offset4(i, lb.strides)]);
    }
}

static void cuda_binary(vnm_binary_op op, float *out, const vnm_layout *ol, const float *a,
                        const vnm_layout *al, const float *b, const vnm_layout *bl)
{
    vnm_layout o = vnm_layout_pad4(ol), la = vnm_layout_pad4(al), lb = vnm_layout_pad4(bl);
    int64_t n = numel4(&o);
    if (n <= 0) return;
    binary_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        op, out, o, a, la, b, lb, n);
    VNM_CUDA_LAUNCHED();
}

__global__ static void scale_kernel(float *y, const float *x, float s, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = __fmul_rn(s, x[i]);
}

static void cuda_scale(float *y, const float *x, float s, int64_t n)
{
    if (n <= 0) return;
    scale_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(y, x, s, n);
    VNM_CUDA_LAUNCHED();
}

__global__ static void axpy_kernel(float *y, const float *x, float s, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = __fadd_rn(y[i], __fmul_rn(s, x[i]));
}

static void cuda_axpy(float *y, const float *x, float s, int64_t n)
{
    if (n <= 0) return;
    axpy_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(y, x, s, n);
    VNM_CUDA_LAUNCHED();
}

/* Rows up to this long are summed by one thread each, in the CPU's order; longer ones by a block. */
enum { ROW_SERIAL_MAX = 1024 };

/* inner == 1, short rows: y[o] (=|+=) Σ_k x[o, k], in f64 in k order. */
__global__ static void sum_rows_serial_kernel(float *y, const float *x, int64_t outer, int64_t n,
                                              bool accumulate)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < outer; o += stride) {
        const float *xp = x + o * n;
        double acc = 0.0;
        for (int64_t k = 0; k < n; k++) acc += xp[k];
        y[o] = accumulate ? y[o] + (float)acc : (float)acc;
    }
}

/* inner == 1, long rows: one block per row; thread t sums k ≡ t (mod VNM_CUDA_THREADS) in f64, then
 * a tree over the threads' sums in a fixed pairing. */
__global__ static void sum_rows_block_kernel(float *y, const float *x, int64_t outer, int64_t n,
                                             bool accumulate)
{
    __shared__ double part[VNM_CUDA_THREADS];
    for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
        const float *xp = x + o * n;
        double acc = 0.0;
        for (int64_t k = threadIdx.x; k < n; k += VNM_CUDA_THREADS) acc += xp[k];
        part[threadIdx.x] = acc;
        __syncthreads();
        for (int w = VNM_CUDA_THREADS / 2; w > 0; w /= 2) {
            if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) y[o] = accumulate ? y[o] + (float)part[0] : (float)part[0];
        __syncthreads(); /* part is reused by the next row */
    }
}

/* inner > 1, short columns: one thread per (o, j) sums column j of x[o] in row order, in f32, from
 * 0, as the CPU does. */
__global__ static void sum_cols_kernel(float *y, const float *x, int64_t outer, int64_t n,
                                       int64_t inner, bool accumulate)
{
    int64_t total = outer * inner, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += stride) {
        int64_t o = idx / inner, j = idx % inner;
        const float *xp = x + o * n * inner + j;
        float acc = 0.0f;
        for (int64_t k = 0; k < n; k++) acc += xp[k * inner];
        y[idx] = accumulate ? y[idx] + acc : acc;
    }
}

/* inner > 1, long columns with few outputs (a bias gradient over all tokens): one thread per
 * (chunk, o, j) sums a fixed chunk of rows in f64 into part[chunk, o, j] ... */
__global__ static void sum_cols_partial_kernel(double *part, const float *x, int64_t outer,
                                               int64_t n, int64_t inner, int64_t chunk_rows,
                                               int64_t chunks)
{
    int64_t cells = outer * inner, total = chunks * cells;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += stride) {
        int64_t c = idx / cells, cell = idx % cells, o = cell / inner, j = cell % inner;
        int64_t k1 = (c + 1) * chunk_rows < n ? (c + 1) * chunk_rows : n;
        const float *xp = x + o * n * inner + j;
        double acc = 0.0;
        for (int64_t k = c * chunk_rows; k < k1; k++) acc += xp[k * inner];
        part[idx] = acc;
    }
}

/* ... then one thread per (o, j) adds its chunks in chunk order. */
__global__ static void sum_cols_finish_kernel(float *y, const double *part, int64_t cells,
                                              int64_t chunks, bool accumulate)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t cell = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; cell < cells;
         cell += stride) {
        double acc = 0.0;
        for (int64_t c = 0; c < chunks; c++) acc += part[c * cells + cell];
        y[cell] = accumulate ? y[cell] + (float)acc : (float)acc;
    }
}

/* The chunked column sum is used when one thread per output would leave the device mostly idle. */
enum { COLS_FEW = 1 << 16, COLS_CHUNK_MIN = 32, COLS_PARTIALS_MAX = 1 << 18 };

static void sum_cols(float *y, const float *x, int64_t outer, int64_t n, int64_t inner,
                     bool accumulate)
{
    int64_t cells = outer * inner;
    int64_t chunks = COLS_PARTIALS_MAX / cells;
    if (chunks > n / COLS_CHUNK_MIN) chunks = n / COLS_CHUNK_MIN;
    if (cells >= COLS_FEW || chunks < 2) {
        sum_cols_kernel<<<vnm_cuda_blocks(cells), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
            y, x, outer, n, inner, accumulate);
        VNM_CUDA_LAUNCHED();
        return;
    }
    int64_t chunk_rows = (n + chunks - 1) / chunks;
    chunks = (n + chunk_rows - 1) / chunk_rows;
    double *part;
    cudaStream_t st = vnm_cuda_stream();
    VNM_CUDA_CHECK(cudaMallocAsync((void **)&part, (size_t)(chunks * cells) * sizeof *part, st));
    sum_cols_partial_kernel<<<vnm_cuda_blocks(chunks * cells), VNM_CUDA_THREADS, 0, st>>>(
        part, x, outer, n, inner, chunk_rows, chunks);
    VNM_CUDA_LAUNCHED();
    sum_cols_finish_kernel<<<vnm_cuda_blocks(cells), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        y, part, cells, chunks, accumulate);
    VNM_CUDA_LAUNCHED();
    VNM_CUDA_CHECK(cudaFreeAsync(part, vnm_cuda_stream()));
}

static void cuda_sum_axis(float *y, const float *x, int64_t outer, int64_t n, int64_t inner,
                          bool accumulate)
{
    if (outer <= 0 || inner <= 0) return;
    if (inner > 1) {
        sum_cols(y, x, outer, n, inner, accumulate);
        return;
    }
    if (n <= ROW_SERIAL_MAX)
        sum_rows_serial_kernel<<<vnm_cuda_blocks(outer), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
            y, x, outer, n, accumulate);
    else
        sum_rows_block_kernel<<<vnm_cuda_blocks(outer * VNM_CUDA_THREADS), VNM_CUDA_THREADS, 0,
                                vnm_cuda_stream()>>>(
            y, x, outer, n, accumulate); /* a block per row */
    VNM_CUDA_LAUNCHED();
}

__global__ static void scatter_kernel(float *out, int64_t n_out, const float *src,
                                      const int32_t *idx, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride)
        if (idx[k] >= 0 && idx[k] < n_out) out[idx[k]] = src[k];
}

__global__ static void gather_add_kernel(float *dst, const float *src, int64_t n_src,
                                         const int32_t *idx, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride)
        if (idx[k] >= 0 && idx[k] < n_src) dst[k] = __fadd_rn(dst[k], src[idx[k]]);
}

/* no index repeats, so the scatter's writes never collide */
static void cuda_scatter(float *out, int64_t n_out, const float *src, const int32_t *idx,
                         int64_t n)
{
    if (n <= 0) return;
    scatter_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        out, n_out, src, idx, n);
    VNM_CUDA_LAUNCHED();
}

static void cuda_gather_add(float *dst, const float *src, int64_t n_src, const int32_t *idx,
                            int64_t n)
{
    if (n <= 0) return;
    gather_add_kernel<<<vnm_cuda_blocks(n), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dst, src, n_src, idx, n);
    VNM_CUDA_LAUNCHED();
}

void vnm_cuda_register_elementwise(vnm_backend *be)
{
    be->scatter = cuda_scatter;
    be->gather_add = cuda_gather_add;
    be->copy_strided = cuda_copy_strided;
    be->binary = cuda_binary;
    be->scale = cuda_scale;
    be->axpy = cuda_axpy;
    be->sum_axis = cuda_sum_axis;
}
