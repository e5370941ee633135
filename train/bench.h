/* train/bench.h — `vnm bench` suites and the JSON-line reporting they share. */
#ifndef VNM_BENCH_H
#define VNM_BENCH_H

#include <stdio.h>

#include "../sparse/sparse.h"

typedef struct {
    int threads; /* 0: OpenMP default */
    int reps;
    vnm_device device; /* bench ops: cpu (OpenBLAS baseline) or cuda (cuBLAS baseline) */
} vnm_bench_opts;

double vnm_bench_now(void); /* seconds, monotonic */
/* One measurement: a JSON object on stdout, a table row on stderr. ratio = baseline / value for
 * times (ratio > 1: faster than the baseline). baseline NULL: none was measured in this run, and
 * baseline, baseline_value and ratio are JSON null. */
void vnm_bench_report(const char *bench, const char *case_name, double value, const char *unit,
                      const char *baseline, double baseline_value);
/* Best-of-reps seconds of forward + backward through the tape after a warm-up: y = fwd(ctx, user)
 * back-propagated from the seed dy, the parameters' gradients cleared before each run; a run ends
 * by reading the first element of params[0]'s gradient, which waits for a device's kernels.
 * Negative on failure (message on ctx). */
typedef vnm_tensor *(*vnm_bench_fwd)(vnm_ctx *ctx, void *user);
double vnm_bench_time_fwd_bwd(vnm_ctx *ctx, vnm_bench_fwd fwd, void *user, vnm_tensor **params,
                              int n_params, vnm_tensor *dy, int reps);
/* The same for one linear layer (dX, dW, db): the sparse op on sw, or the dense op on w when sw
 * is NULL; b may be NULL. */
double vnm_bench_time_linear(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, vnm_sparse_weight *sw,
                             vnm_tensor *b, vnm_tensor *dy, int reps);
/* Best-of-reps seconds of the three raw cuBLAS GEMMs of a linear layer's forward + backward,
 * SGEMMs or (half) bf16 operands with f32 output; negative without CUDA or on a CUDA failure. */
double vnm_bench_raw_cublas(int64_t T, int64_t in, int64_t out, bool half, int reps);
int vnm_bench_ops(const vnm_bench_opts *opts);
/* The attention cases of bench ops (bench_attention.c): bf16 (fused) against f32 on ctx's device;
 * returns the exit code. */
int vnm_bench_attention(vnm_ctx *ctx, int reps);
int vnm_bench_spmm(const vnm_bench_opts *opts);
/* `vnm bench train [options]` (argv after "train"): the whole ViT training step; returns the exit
 * code. */
int vnm_cmd_bench_train(int argc, char **argv);

#endif
