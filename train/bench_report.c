/* train/bench_report.c — timing and the JSON-line output of DESIGN.md "Benchmarks". */
#include <time.h>

#include "bench.h"

double vnm_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void vnm_bench_report(const char *bench, const char *case_name, double value, const char *unit,
                      const char *baseline, double baseline_value)
{
    double ratio = value > 0 ? baseline_value / value : 0.0;
    printf("{\"bench\":\"%s\", \"case\":\"%s\", \"value\":%.4f, \"unit\":\"%s\", "
           "\"baseline\":\"%s\", \"baseline_value\":%.4f, \"ratio\":%.3f}\n",
           bench, case_name, value, unit, baseline, baseline_value, ratio);
    fflush(stdout);
    fprintf(stderr, "%-6s %-44s %10.3f %-3s  %-22s %10.3f  ratio %.3f\n", bench, case_name, value,
            unit, baseline, baseline_value, ratio);
}
