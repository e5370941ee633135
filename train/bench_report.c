/* train/bench_report.c — timing (forward + backward through the tape, and the linear layer
 * timing shared by `vnm bench ops`, `vnm bench spmm` and `vnm select`) and the JSON-line output of
 * DESIGN.md "Benchmarks". */
#include <math.h>
#include <time.h>

#include "bench.h"

double vnm_bench_time_fwd_bwd(vnm_ctx *ctx, vnm_bench_fwd fwd, void *user, vnm_tensor **params,
                              int n_params, vnm_tensor *dy, int reps)
{
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        vnm_zero_grad(ctx, params, n_params);
        double t0 = vnm_bench_now();
        vnm_tensor *y = fwd(ctx, user);
        if (!y || vnm_backward_seed(ctx, y, dy) != VNM_OK ||
            (params[0]->grad && isnan(vnm_item(ctx, params[0]->grad))))
            return -1.0;
        double dt = vnm_bench_now() - t0;
        vnm_ctx_reset_step(ctx);
        if (r > 0 && dt < best) best = dt;
    }
    return best;
}

typedef struct {
    vnm_tensor *x, *w, *b;
    vnm_sparse_weight *sw;
} linear_args;

static vnm_tensor *linear_fwd(vnm_ctx *ctx, void *user)
{
    const linear_args *a = user;
    return a->sw ? vnm_sparse_linear(ctx, a->x, a->sw, a->b) : vnm_linear(ctx, a->x, a->w, a->b);
}

double vnm_bench_time_linear(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, vnm_sparse_weight *sw,
                             vnm_tensor *b, vnm_tensor *dy, int reps)
{
    linear_args a = {x, w, b, sw};
    vnm_tensor *params[3] = {x, sw ? sw->vals : w, b};
    return vnm_bench_time_fwd_bwd(ctx, linear_fwd, &a, params, b ? 3 : 2, dy, reps);
}

double vnm_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void vnm_bench_report(const char *bench, const char *case_name, double value, const char *unit,
                      const char *baseline, double baseline_value)
{
    if (!baseline) {
        printf("{\"bench\":\"%s\", \"case\":\"%s\", \"value\":%.4f, \"unit\":\"%s\", "
               "\"baseline\":null, \"baseline_value\":null, \"ratio\":null}\n",
               bench, case_name, value, unit);
        fflush(stdout);
        fprintf(stderr, "%-6s %-44s %10.3f %s\n", bench, case_name, value, unit);
        return;
    }
    double ratio = value > 0 ? baseline_value / value : 0.0;
    printf("{\"bench\":\"%s\", \"case\":\"%s\", \"value\":%.4f, \"unit\":\"%s\", "
           "\"baseline\":\"%s\", \"baseline_value\":%.4f, \"ratio\":%.3f}\n",
           bench, case_name, value, unit, baseline, baseline_value, ratio);
    fflush(stdout);
    fprintf(stderr, "%-6s %-44s %10.3f %-3s  %-22s %10.3f  ratio %.3f\n", bench, case_name, value,
            unit, baseline, baseline_value, ratio);
}
