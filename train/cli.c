/* train/cli.c — see cli.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int vnm_cli_missing(const char *cmd, const char *flag)
{
    fprintf(stderr, "vnm %s: %s needs a value\n", cmd, flag);
    return 2;
}

int vnm_cli_int(const char *cmd, const char *flag, const char *value, int lo, int hi, int *out)
{
    if (!value) return vnm_cli_missing(cmd, flag);
    char *end;
    long v = strtol(value, &end, 10);
    if (end == value || *end || v < lo || v > hi) {
        fprintf(stderr, "vnm %s: %s needs an integer from %d to %d, got '%s'\n", cmd, flag, lo, hi,
                value);
        return 2;
    }
    *out = (int)v;
    return 0;
}

int vnm_cli_double(const char *cmd, const char *flag, const char *value, double lo, double hi,
                   double *out)
{
    if (!value) return vnm_cli_missing(cmd, flag);
    char *end;
    double v = strtod(value, &end);
    if (end == value || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "vnm %s: %s needs a number from %g to %g, got '%s'\n", cmd, flag, lo, hi,
                value);
        return 2;
    }
    *out = v;
    return 0;
}

int vnm_cli_device(const char *cmd, const char *flag, const char *value, vnm_device *out)
{
    if (!value) return vnm_cli_missing(cmd, flag);
    if (strcmp(value, "cpu") && strcmp(value, "cuda")) {
        fprintf(stderr, "vnm %s: %s needs cpu or cuda, got '%s'\n", cmd, flag, value);
        return 2;
    }
    *out = strcmp(value, "cuda") ? VNM_DEVICE_CPU : VNM_DEVICE_CUDA;
    return 0;
}
