/* sparse/pattern.c — V:N:M patterns (METHOD §1, §3): the strict "V:N:M" text form, density and the
 * mask-diversity proxy κ. Every other sparse function that takes a vnm_pattern checks it by
 * formatting it and running it through this parser, so the rules and messages live here only. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Values above this are rejected as out of range long before any int overflow. */
#define FIELD_MAX 1000000000LL

vnm_status vnm_pattern_parse(const char *text, vnm_pattern *out, char *err, size_t err_len)
{
    static const char *const names[3] = {"V", "N", "M"};
    static const char *const hint = "three decimal integers V:N:M separated by ':', e.g. '64:2:5'";
    if (!text || !out) return vnm_sparse_fail(err, err_len, "pattern: no text given (expected %s)", hint);
    if (!*text) return vnm_sparse_fail(err, err_len, "pattern '': empty (expected %s)", hint);
    int fields = 1;
    for (const char *s = text; *s; s++) fields += *s == ':';
    if (fields != 3)
        return vnm_sparse_fail(err, err_len, "pattern '%s': %d field%s (expected %s)", text, fields,
                    fields == 1 ? "" : "s", hint);
    long long v[3];
    const char *s = text;
    for (int f = 0; f < 3; f++) {
        const char *start = s;
        size_t n = strcspn(start, ":");
        if (n == 0)
            return vnm_sparse_fail(err, err_len, "pattern '%s': %s is empty (expected %s)", text, names[f],
                        hint);
        v[f] = 0;
        for (size_t k = 0; k < n; k++) {
            if (start[k] < '0' || start[k] > '9')
                return vnm_sparse_fail(err, err_len,
                            "pattern '%s': %s '%.*s' is not a decimal integer (digits only: no "
                            "signs, spaces or other characters)",
                            text, names[f], (int)n, start);
            if (v[f] <= FIELD_MAX) v[f] = v[f] * 10 + (start[k] - '0');
        }
        if (v[f] > FIELD_MAX)
            return vnm_sparse_fail(err, err_len, "pattern '%s': %s '%.*s' is out of range", text, names[f],
                        (int)n, start);
        s = start + n + (f < 2);
    }
    if (v[0] != 16 && v[0] != 32 && v[0] != 64 && v[0] != 128 && v[0] != 256)
        return vnm_sparse_fail(err, err_len, "pattern '%s': V must be one of 16, 32, 64, 128, 256 (got %lld)",
                    text, v[0]);
    if (v[1] != 2)
        return vnm_sparse_fail(err, err_len,
                    "pattern '%s': N must be 2 (the sparse tensor cores keep 2 of 4; got %lld)",
                    text, v[1]);
    if (v[2] < 4 || v[2] > 64)
        return vnm_sparse_fail(err, err_len,
                    "pattern '%s': M must be between 4 and 64 (a block keeps 4 of M columns; "
                    "got %lld)",
                    text, v[2]);
    *out = (vnm_pattern){(int)v[0], (int)v[1], (int)v[2]};
    return VNM_OK;
}

const char *vnm_pattern_str(vnm_pattern p, char *buf, size_t len)
{
    snprintf(buf, len, "%d:%d:%d", p.V, p.N, p.M);
    return buf;
}

double vnm_pattern_density(vnm_pattern p) { return (double)p.N / p.M; }

/* Choices per block: C(M,4) column sets shared by the block, then C(4,2) = 6 per row. */
double vnm_pattern_kappa(vnm_pattern p)
{
    double sets = (double)p.M * (p.M - 1) * (p.M - 2) * (p.M - 3) / 24.0;
    return (log(sets) + p.V * log(6.0)) / ((double)p.V * p.M);
}
