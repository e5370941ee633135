/* train/bench_ops.c — `vnm bench ops`: the linear op, forward + backward (dX, dW, db) through the
 * tape at transformer shapes, against the raw time of the same three products measured in the same
 * run: OpenBLAS sgemm on the CPU, cuBLAS SGEMM on a CUDA device (train/bench_cublas.c), and there
 * also the mixed-precision (bf16) op against raw bf16 cuBLAS GEMMs and the fused bf16 attention
 * against the f32 one (bench_attention.c). Times are
 * the best of `reps` runs after one warm-up; on CUDA each run ends by copying one gradient element
 * to the host, which waits for the run's kernels. */
#include <stdio.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../autograd/autograd.h"
#include "bench.h"

#include <cblas.h> /* last: its complex.h defines I, a dimension name in the headers above */

typedef struct {
    int64_t T, in, out; /* not I: cblas.h pulls in complex.h */
} linear_case;

static double time_raw_sgemm(const linear_case *c, int reps)
{
    int64_t T = c->T, I_ = c->in, O_ = c->out;
    float *x = calloc((size_t)(T * I_), 4), *w = calloc((size_t)(O_ * I_), 4);
    float *y = calloc((size_t)(T * O_), 4), *dx = calloc((size_t)(T * I_), 4);
    float *dw = calloc((size_t)(O_ * I_), 4);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = vnm_bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)O_, (int)I_, 1.0f, x,
                    (int)I_, w, (int)I_, 0.0f, y, (int)O_);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)I_, (int)O_, 1.0f, y,
                    (int)O_, w, (int)I_, 0.0f, dx, (int)I_);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)O_, (int)I_, (int)T, 1.0f, y,
                    (int)O_, x, (int)I_, 0.0f, dw, (int)I_);
        double dt = vnm_bench_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    free(x);
    free(w);
    free(y);
    free(dx);
    free(dw);
    return best;
}

static double time_linear_op(vnm_ctx *ctx, const linear_case *c, int reps)
{
    vnm_tensor *w = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(c->out, c->in), "w");
    vnm_tensor *b = vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(c->out), "b");
    vnm_tensor *x = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(c->T, c->in), "x");
    vnm_tensor *dy = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(c->T, c->out), "dy");
    if (!w || !b || !x || !dy) return -1.0;
    vnm_rng_normal(ctx, w, 0.0f, 0.02f);
    vnm_rng_normal(ctx, x, 0.0f, 1.0f);
    vnm_rng_normal(ctx, dy, 0.0f, 1.0f);
    return vnm_bench_time_linear(ctx, x, w, NULL, b, dy, reps);
}

/* One shape: the op against the raw GEMMs, a JSON line and a rate line. */
static int bench_case(vnm_ctx *ctx, const linear_case *c, bool cuda, bool half, int reps)
{
    double raw = cuda ? vnm_bench_raw_cublas(c->T, c->in, c->out, half, reps)
                      : time_raw_sgemm(c, reps);
    double op = time_linear_op(ctx, c, reps);
    if (op < 0 || raw < 0) {
        fprintf(stderr, "vnm bench ops: %s\n",
                op < 0 ? vnm_ctx_error(ctx) : "the cuBLAS baseline failed");
        return 1;
    }
    double gflop = 3.0 * 2.0 * (double)c->T * (double)c->in * (double)c->out * 1e-9;
    const char *prec = half ? " bf16" : "";
    char name[128];
    snprintf(name, sizeof name, "linear T=%lld %lld->%lld%s fwd+bwd", (long long)c->T,
             (long long)c->in, (long long)c->out, prec);
    vnm_bench_report("ops", name, op * 1e3, "ms",
                     !cuda ? "openblas sgemm x3" : half ? "cublas bf16 gemm x3" : "cublas sgemm x3",
                     raw * 1e3);
    snprintf(name, sizeof name, "linear T=%lld %lld->%lld%s fwd+bwd rate", (long long)c->T,
             (long long)c->in, (long long)c->out, prec);
    fprintf(stderr, "       %-44s %10.1f GFLOP/s  raw gemm %8.1f GFLOP/s\n", name, gflop / op,
            gflop / raw);
    return 0;
}

int vnm_bench_ops(const vnm_bench_opts *opts)
{
    bool cuda = opts->device == VNM_DEVICE_CUDA;
    char reason[256];
    if (cuda && !vnm_device_available(VNM_DEVICE_CUDA, reason, sizeof reason)) {
        fprintf(stderr, "vnm bench ops: %s\n", reason);
        return 2;
    }
    vnm_ctx_config cfg = {opts->device, 1, opts->threads};
    vnm_ctx *ctx = vnm_ctx_create(&cfg);
    if (!ctx) return 1;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    if (cuda) fprintf(stderr, "vnm bench ops: cuda, best of %d\n", opts->reps);
    else fprintf(stderr, "vnm bench ops: %d threads, best of %d\n", threads, opts->reps);
    static const linear_case cases[] = {{4096, 768, 3072}, {4096, 3072, 768}};
    int rc = 0;
    /* on CUDA also the mixed-precision linear (bf16 operands, its conversions included) against
     * the raw bf16 GEMMs; the CPU's half products are for checking, not speed */
    for (int half = 0; half <= (cuda ? 1 : 0) && !rc; half++) {
        if (vnm_ctx_set_matmul_dtype(ctx, half ? VNM_DTYPE_BF16 : VNM_DTYPE_F32)) {
            fprintf(stderr, "vnm bench ops: %s\n", vnm_ctx_error(ctx));
            rc = 1;
        }
        for (size_t i = 0; !rc && i < sizeof cases / sizeof cases[0]; i++)
            rc = bench_case(ctx, &cases[i], cuda, half, opts->reps);
    }
    if (cuda && !rc) rc = vnm_bench_attention(ctx, opts->reps);
    vnm_ctx_destroy(ctx);
    return rc;
}
