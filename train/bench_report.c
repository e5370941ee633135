/* train/bench_report.c — timing (including the linear layer timing shared by `vnm bench spmm`
 * and `vnm select`) and the JSON-line output of DESIGN.md "Benchmarks". */
#include <time.h>

#include "bench.h"

double vnm_bench_time_linear(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, vnm_sparse_weight *sw,
                             vnm_tensor *b, vnm_tensor *dy, int reps)
{
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        vnm_tensor *params[3] = {x, sw ? sw->vals : w, b};
        vnm_zero_grad(ctx, params, 3);
        double t0 = vnm_bench_now();
        vnm_tensor *y = sw ? vnm_sparse_linear(ctx, x, sw, b) : vnm_linear(ctx, x, w, b);
        if (!y || vnm_backward_seed(ctx, y, dy) != VNM_OK) return -1.0;
        double dt = vnm_bench_now() - t0;
        vnm_ctx_reset_step(ctx);
        if (r > 0 && dt < best) best = dt;
    }
    return best;
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
