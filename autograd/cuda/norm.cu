/* autograd/cuda/norm.cu — LayerNorm and RMSNorm over the rows of x[rows, D], forward and backward,
 * with autograd/cpu/norm.c's semantics: mean == NULL means "not centred" (RMSNorm), row statistics
 * accumulate in double, _bwd adds into dx, dw, db (each may be NULL).
 *
 * One block per row, reduced across the block in a fixed shuffle order. The weight and bias
 * gradients are sums over rows, made without atomics in two passes: each thread sums one column
 * over a fixed chunk of rows into a double partial, then each column adds its chunk partials in
 * chunk order. The chunking depends only on rows and D, so results do not depend on the device. */
#include "reduce.cuh"

enum {
    CHUNK_ROWS = 32,     /* rows per partial of the parameter gradients, at least ... */
    MAX_CELLS = 1 << 20, /* ... but no more than this many partials (bounds the scratch) */
};

/* y = (x - mean)·rstd·w + b per row; mean NULL: RMSNorm (no centring), w·(x·rstd). */
__global__ static void norm_fwd_kernel(float *y, float *mean, float *rstd, const float *x,
                                       const float *w, const float *b, int64_t rows, int64_t D,
                                       float eps)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * D; /* [D] */
        float *yr = y + r * D;       /* [D] */
        double m = 0.0, ss = 0.0;
        if (mean) {
            double s = 0.0;
            for (int64_t j = threadIdx.x; j < D; j += blockDim.x) s += xr[j];
            m = block_sum(s) / (double)D;
        }
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
            ss += ((double)xr[j] - m) * ((double)xr[j] - m);
        ss = block_sum(ss);
        float mf = (float)m, rs = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
        if (threadIdx.x == 0) {
            if (mean) mean[r] = mf;
            rstd[r] = rs;
        }
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            float v = (xr[j] - mf) * rs;
            if (w) v *= w[j];
            if (b) v += b[j];
            yr[j] = v;
        }
    }
}

/* dx += rstd·(g - mean(g) - x̂·mean(g·x̂)) with g = dy·w and x̂ the normalised row; without
 * centring (mean NULL) the mean(g) term drops out. */
__global__ static void norm_bwd_input_kernel(float *dx, const float *dy, const float *x,
                                             const float *mean, const float *rstd,
                                             const float *w, int64_t rows, int64_t D)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * D, *dyr = dy + r * D; /* [D] */
        float *dxr = dx + r * D;                        /* [D] */
        float m = mean ? mean[r] : 0.0f, rs = rstd[r];
        double sg = 0.0, sgx = 0.0;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            float g = w ? dyr[j] * w[j] : dyr[j];
            sg += g;
            sgx += (double)g * ((xr[j] - m) * rs);
        }
        float a = mean ? (float)(block_sum(sg) / (double)D) : 0.0f;
        float c = (float)(block_sum(sgx) / (double)D);
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            float g = w ? dyr[j] * w[j] : dyr[j];
            dxr[j] += rs * (g - a - (xr[j] - m) * rs * c);
        }
    }
}

/* Pass 1 of dw = Σ_rows dy·x̂, db = Σ_rows dy: cell k = (chunk, column) sums the chunk's rows in
 * order into pw[k], pb[k] (either NULL when not wanted). */
__global__ static void norm_params_partial_kernel(double *pw, double *pb, const float *dy,
                                                  const float *x, const float *mean,
                                                  const float *rstd, int64_t rows, int64_t D,
                                                  int64_t per, int64_t cells)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < cells; k += stride) {
        int64_t j = k % D, r0 = k / D * per, r1 = r0 + per < rows ? r0 + per : rows;
        double aw = 0.0, ab = 0.0;
        for (int64_t r = r0; r < r1; r++) {
            float d = dy[r * D + j];
            if (pw) {
                float m = mean ? mean[r] : 0.0f;
                aw += (double)d * ((x[r * D + j] - m) * rstd[r]);
            }
            if (pb) ab += d;
        }
        if (pw) pw[k] = aw;
        if (pb) pb[k] = ab;
    }
}

/* Pass 2: dw[j] += Σ_chunks pw[chunk, j], db likewise, chunks in order. */
__global__ static void norm_params_sum_kernel(float *dw, float *db, const double *pw,
                                              const double *pb, int64_t chunks, int64_t D)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < D; j += stride) {
        double aw = 0.0, ab = 0.0;
        for (int64_t c = 0; c < chunks; c++) {
            if (dw) aw += pw[c * D + j];
            if (db) ab += pb[c * D + j];
        }
        if (dw) dw[j] += (float)aw;
        if (db) db[j] += (float)ab;
    }
}

static void norm_bwd_params(float *dw, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, int64_t rows, int64_t D)
{
    int64_t chunks = (rows + CHUNK_ROWS - 1) / CHUNK_ROWS, most = MAX_CELLS / D;
    if (most < 1) most = 1;
    if (chunks > most) chunks = most;
    int64_t per = (rows + chunks - 1) / chunks;
    chunks = (rows + per - 1) / per;
    int64_t cells = chunks * D;
    double *pw = vnm_cuda_scratch_doubles(2 * cells), *pb = pw + cells; /* [chunks, D] each */
    norm_params_partial_kernel<<<vnm_cuda_blocks(cells), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dw ? pw : NULL, db ? pb : NULL, dy, x, mean, rstd, rows, D, per, cells);
    VNM_CUDA_LAUNCHED();
    norm_params_sum_kernel<<<vnm_cuda_blocks(D), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        dw, db, pw, pb, chunks, D);
    VNM_CUDA_LAUNCHED();
}

static void norm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                     const float *b, int64_t rows, int64_t D, float eps)
{
    if (rows <= 0) return;
    norm_fwd_kernel<<<vnm_cuda_row_blocks(rows), VNM_CUDA_THREADS, 0, vnm_cuda_stream()>>>(
        y, mean, rstd, x, w, b, rows, D, eps);
    VNM_CUDA_LAUNCHED();
}

static void norm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *mean, const float *rstd, const float *w, int64_t rows,
                     int64_t D)
{
    if (rows <= 0 || D <= 0) return;
    if (dx) {
        norm_bwd_input_kernel<<<vnm_cuda_row_blocks(rows), VNM_CUDA_THREADS, 0,
                                vnm_cuda_stream()>>>(
            dx, dy, x, mean, rstd, w, rows, D);
        VNM_CUDA_LAUNCHED();
    }
    if (dw || db) norm_bwd_params(dw, db, dy, x, mean, rstd, rows, D);
}

static void cuda_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                               const float *b, int64_t rows, int64_t D, float eps)
{
    norm_fwd(y, mean, rstd, x, w, b, rows, D, eps);
}

static void cuda_layernorm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *mean, const float *rstd, const float *w, int64_t rows,
                               int64_t D)
{
    norm_bwd(dx, dw, db, dy, x, mean, rstd, w, rows, D);
}

static void cuda_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int64_t rows,
                             int64_t D, float eps)
{
    norm_fwd(y, NULL, rstd, x, w, NULL, rows, D, eps);
}

static void cuda_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x,
                             const float *rstd, const float *w, int64_t rows, int64_t D)
{
    norm_bwd(dx, dw, NULL, dy, x, NULL, rstd, w, rows, D);
}

void vnm_cuda_register_norm(vnm_backend *be)
{
    be->layernorm_fwd = cuda_layernorm_fwd;
    be->layernorm_bwd = cuda_layernorm_bwd;
    be->rmsnorm_fwd = cuda_rmsnorm_fwd;
    be->rmsnorm_bwd = cuda_rmsnorm_bwd;
}
