/* train/bench_spmm.c — `vnm bench spmm`: the three CPU products of a compressed V:N:M weight
 * (forward, dX, dW) at transformer shapes, each against the OpenBLAS sgemm of the same dense
 * product measured in the same run (the transposes a dense linear uses); the sparse-linear op's
 * forward + backward through the tape against the dense linear op's; and the bytes of weights +
 * gradients + AdamW moments, compressed vs dense. The weights have a random valid structure (4
 * random columns per block and group, random slot codes). Times are the best of `reps` runs after
 * one warm-up. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* Before cblas.h: its complex.h defines I, the name of the sparse structs' input width field
 * (so this file never spells that field). */
#include "../sparse/sparse.h"
#include "bench.h"
#include <cblas.h>

typedef struct {
    uint64_t ctr;
    uint32_t buf[4];
    int left;
} bench_rng;

static uint32_t next_u32(bench_rng *r)
{
    if (!r->left) {
        vnm_philox4x32(0x5eed, r->ctr++, 0, r->buf);
        r->left = 4;
    }
    return r->buf[--r->left];
}

static float *random_floats(int64_t n, bench_rng *r)
{
    float *a = malloc((size_t)n * sizeof *a);
    if (a)
        for (int64_t i = 0; i < n; i++) a[i] = 2.0f * vnm_philox_uniform(next_u32(r)) - 1.0f;
    return a;
}

/* A random valid structure: every full group keeps 4 random ascending columns of its M and each
 * row a random pair of them; a narrow last group keeps its columns (rows: the first two). */
static vnm_status random_weight(vnm_pattern p, int64_t O, int64_t in, vnm_sparse_host *h,
                                bench_rng *r)
{
    static const uint8_t codes[6] = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE};
    if (vnm_sparse_host_alloc(h, p, O, in) != VNM_OK) return VNM_ERR_RUNTIME;
    for (int64_t b = 0; b < h->O_pad / p.V; b++)
        for (int64_t g = 0; g < h->G; g++) {
            int32_t *c = h->cols + (b * h->Gp + g) * 4;
            const int64_t width = in - g * p.M < p.M ? in - g * p.M : p.M;
            int n = 0;
            for (int64_t j = 0; j < width && n < 4; j++) /* selection sampling: ascending */
                if ((int64_t)(next_u32(r) % (uint32_t)(width - j)) < 4 - n)
                    c[n++] = (int32_t)(g * p.M + j);
            for (int64_t o = b * p.V; o < (b + 1) * p.V && o < O; o++) {
                h->slots[o * h->Gp + g] = n == 4 ? codes[next_u32(r) % 6] : codes[0];
                for (int k = 0; k < 2; k++)
                    h->vals[(o * h->Gp + g) * 2 + k] = c[k] >= 0 || n == 4 ? 0.02f : 0.0f;
            }
        }
    return VNM_OK;
}

typedef enum { FWD, DX, DW } product;
static const char *const product_name[3] = {"fwd", "dX", "dW"};

static void run_sparse(product p, const vnm_spmm_weight *w, const float *x, const float *dy,
                       int64_t T, float *out)
{
    if (p == FWD) vnm_spmm_fwd(w, x, T, out);
    if (p == DX) vnm_spmm_dx(w, dy, T, out);
    if (p == DW) vnm_spmm_dw(w, dy, x, T, out);
}

/* The dense product of the same shape: y = x·Wᵀ, dx = dy·W, dW = dyᵀ·x. */
static void run_dense(product p, int64_t T, int64_t O, int64_t in, const float *x,
                      const float *W, const float *dy, float *out)
{
    const int t = (int)T, o = (int)O, i = (int)in;
    if (p == FWD)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, o, i, 1.0f, x, i, W, i, 0.0f,
                    out, o);
    if (p == DX)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, i, o, 1.0f, dy, o, W, i, 0.0f,
                    out, i);
    if (p == DW)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o, i, t, 1.0f, dy, o, x, i, 0.0f,
                    out, i);
}

/* Best times of the sparse and the dense product, run alternately so that both see the same
 * machine load. */
static void best_of(int reps, product p, const vnm_spmm_weight *w, int64_t T, int64_t in,
                    const float *x, const float *W, const float *dy, float *out, double *sparse,
                    double *dense)
{
    *sparse = *dense = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = vnm_bench_now();
        run_dense(p, T, w->O, in, x, W, dy, out);
        double t1 = vnm_bench_now();
        run_sparse(p, w, x, dy, T, out);
        double t2 = vnm_bench_now();
        if (r > 0 && t1 - t0 < *dense) *dense = t1 - t0;
        if (r > 0 && t2 - t1 < *sparse) *sparse = t2 - t1;
    }
}

/* The op-level entry: sparse-linear vs dense linear, both with bias, forward + backward. */
static int bench_op(vnm_ctx *ctx, const char *pattern, const vnm_sparse_host *h, int64_t in,
                    int64_t T, int reps)
{
    int64_t O = h->O;
    vnm_tensor *x = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, in), "x");
    vnm_tensor *w = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(O, in), "w");
    vnm_tensor *b = vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(O), "b");
    vnm_tensor *dy = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, O), "dy");
    vnm_sparse_weight *sw = vnm_sparse_weight_new(ctx, h, "sparse");
    if (!x || !w || !b || !dy || !sw) {
        fprintf(stderr, "vnm bench spmm: %s\n", vnm_ctx_error(ctx));
        vnm_sparse_weight_free(sw);
        return 1;
    }
    vnm_rng_normal(ctx, x, 0, 1);
    vnm_rng_normal(ctx, w, 0, 0.02f);
    vnm_rng_normal(ctx, dy, 0, 1);
    double dense = 1e30, sparse = 1e30;
    for (int r = 0; r < 2; r++) { /* alternate, so background load hits both alike */
        double d = vnm_bench_time_linear(ctx, x, w, NULL, b, dy, reps);
        double s = vnm_bench_time_linear(ctx, x, NULL, sw, b, dy, reps);
        if (d < 0 || s < 0) {
            fprintf(stderr, "vnm bench spmm: %s\n", vnm_ctx_error(ctx));
            vnm_sparse_weight_free(sw);
            return 1;
        }
        dense = d < dense ? d : dense;
        sparse = s < sparse ? s : sparse;
    }
    char name[128];
    snprintf(name, sizeof name, "%s T=%lld %lld->%lld op fwd+bwd", pattern, (long long)T,
             (long long)in, (long long)O);
    vnm_bench_report("spmm", name, sparse * 1e3, "ms", "dense linear op", dense * 1e3);
    vnm_sparse_weight_free(sw);
    return 0;
}

static int bench_case(vnm_ctx *ctx, const char *pattern, int64_t T, int64_t O, int64_t in,
                      int reps, bench_rng *r)
{
    vnm_pattern p;
    char err[128];
    vnm_sparse_host h;
    if (vnm_pattern_parse(pattern, &p, err, sizeof err) != VNM_OK ||
        random_weight(p, O, in, &h, r) != VNM_OK) {
        fprintf(stderr, "vnm bench spmm: cannot build a %s weight\n", pattern);
        return 1;
    }
    const vnm_spmm_weight w = vnm_spmm_weight_of_host(&h);
    const int64_t nvals = h.O_pad * h.Gp * 2;
    float *x = random_floats(T * in, r), *dy = random_floats(T * O, r);
    float *W = random_floats(O * in, r);
    const int64_t wide = O > in ? O : in, n_out = O * in > T * wide ? O * in : T * wide;
    float *out = calloc((size_t)n_out, sizeof *out); /* any product's output */
    int rc = !x || !dy || !W || !out;
    double sparse_total = 0.0, dense_total = 0.0;
    char name[128];
    for (product pr = FWD; pr <= DW && !rc; pr++) {
        double sparse, dense;
        best_of(reps, pr, &w, T, in, x, W, dy, out, &sparse, &dense);
        dense_total += dense;
        sparse_total += sparse;
        snprintf(name, sizeof name, "%s T=%lld %lld->%lld %s", pattern, (long long)T,
                 (long long)in, (long long)O, product_name[pr]);
        vnm_bench_report("spmm", name, sparse * 1e3, "ms", "openblas sgemm", dense * 1e3);
    }
    if (!rc) {
        snprintf(name, sizeof name, "%s T=%lld %lld->%lld fwd+dX+dW", pattern, (long long)T,
                 (long long)in, (long long)O);
        vnm_bench_report("spmm", name, sparse_total * 1e3, "ms", "openblas sgemm x3",
                         dense_total * 1e3);
        /* vals, their gradient and two AdamW moments in f32, plus the fixed structure */
        double sparse_bytes = 4.0 * 4.0 * (double)nvals + (double)(h.O_pad * h.Gp) +
                              4.0 * (double)(h.O_pad / p.V * h.Gp * 4) + 4.0 * (double)h.O_pad;
        snprintf(name, sizeof name, "%s %lld->%lld weights+grads+AdamW moments", pattern,
                 (long long)in, (long long)O);
        vnm_bench_report("spmm", name, sparse_bytes, "bytes", "dense f32",
                         4.0 * 4.0 * (double)(O * in));
    }
    free(x);
    free(dy);
    free(W);
    free(out);
    if (rc) fprintf(stderr, "vnm bench spmm: out of memory\n");
    if (!rc) rc = bench_op(ctx, pattern, &h, in, T, reps);
    vnm_sparse_host_free(&h);
    return rc;
}

int vnm_bench_spmm(const vnm_bench_opts *opts)
{
    if (opts->threads > 0) omp_set_num_threads(opts->threads);
    fprintf(stderr, "vnm bench spmm: %d threads, best of %d\n", omp_get_max_threads(),
            opts->reps);
    static const char *const patterns[] = {"64:2:5", "64:2:8", "128:2:5", "128:2:8"};
    static const int64_t shapes[2][2] = {{3072, 768}, {768, 3072}}; /* (O, I) */
    vnm_ctx_config cfg = {VNM_DEVICE_CPU, 1, opts->threads};
    vnm_ctx *ctx = vnm_ctx_create(&cfg);
    if (!ctx) return 1;
    bench_rng r = {0};
    int rc = 0;
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0] && !rc; i++)
        for (int s = 0; s < 2 && !rc; s++)
            rc = bench_case(ctx, patterns[i], 2048, shapes[s][0], shapes[s][1], opts->reps, &r);
    vnm_ctx_destroy(ctx);
    return rc;
}
