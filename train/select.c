/* train/select.c — `vnm select`: the V/M heuristic of METHOD §3 for given layer shapes and a
 * required speedup. For every candidate pattern it measures, with this project's sparse-linear op,
 * forward + backward of each layer against the dense linear op in the same run, then applies the
 * two-phase rule (vnm_vm_choose) and prints the table: candidate, measured speedup, κ, kept. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../sparse/sparse.h"
#include "bench.h"
#include "cli.h"

enum { MAX_SHAPES = 16, MAX_CANDIDATES = 128 };

typedef struct {
    int64_t O, I;
} layer_shape;

typedef struct {
    layer_shape shapes[MAX_SHAPES];
    int n_shapes;
    int64_t tokens;
    double speedup;
    int threads, reps;
} select_opts;

/* A sparse weight of pattern p pruned from w by magnitude (the kernels' speed does not depend on
 * which mask is chosen, only on the pattern). */
static vnm_sparse_weight *prune(vnm_ctx *ctx, vnm_tensor *w, vnm_pattern p)
{
    int64_t O = w->shape[0], I = w->shape[1];
    float *S = malloc((size_t)(O * I) * sizeof *S);
    uint8_t *mask = malloc((size_t)(O * I));
    vnm_sparse_host h = {0};
    vnm_sparse_weight *sw = NULL;
    char err[256];
    if (S && mask &&
        vnm_score_compute(VNM_SCORE_MAGNITUDE, (const float *)w->data, O, I, NULL, 0, S, err,
                          sizeof err) == VNM_OK &&
        vnm_mask_select(p, VNM_SELECT_L1, S, O, I, mask, err, sizeof err) == VNM_OK &&
        vnm_sparse_compress(p, (const float *)w->data, mask, O, I, NULL, NULL, &h, err,
                            sizeof err) == VNM_OK)
        sw = vnm_sparse_weight_new(ctx, &h, "candidate");
    vnm_sparse_host_free(&h);
    free(S);
    free(mask);
    return sw;
}

static int run_select(const select_opts *o)
{
    vnm_ctx_config cfg = {VNM_DEVICE_CPU, 1, o->threads};
    vnm_ctx *ctx = vnm_ctx_create(&cfg);
    if (!ctx) return 1;
    vnm_tensor *x[MAX_SHAPES], *w[MAX_SHAPES], *dy[MAX_SHAPES];
    double dense = 0;
    for (int s = 0; s < o->n_shapes; s++) {
        const layer_shape *L = &o->shapes[s];
        w[s] = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(L->O, L->I), "w");
        x[s] = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(o->tokens, L->I), "x");
        dy[s] = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(o->tokens, L->O), "dy");
        if (!w[s] || !x[s] || !dy[s]) break;
        vnm_rng_normal(ctx, w[s], 0, 0.02f);
        vnm_rng_normal(ctx, x[s], 0, 1);
        vnm_rng_normal(ctx, dy[s], 0, 1);
        w[s]->requires_grad = true; /* the dense baseline computes dW like the sparse op */
        double t = vnm_bench_time_linear(ctx, x[s], w[s], NULL, NULL, dy[s], o->reps);
        w[s]->requires_grad = false;
        if (t < 0) break;
        dense += t;
    }
    if (vnm_ctx_status(ctx) != VNM_OK) {
        fprintf(stderr, "vnm select: %s\n", vnm_ctx_error(ctx));
        vnm_ctx_destroy(ctx);
        return 1;
    }
    static const int Vs[] = {16, 32, 64, 128};
    vnm_vm_candidate cands[MAX_CANDIDATES];
    int n = 0;
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++)
        for (int M = 5; M <= 16; M++) {
            vnm_pattern p = {Vs[vi], 2, M};
            double sparse = 0;
            for (int s = 0; s < o->n_shapes; s++) {
                vnm_sparse_weight *sw = prune(ctx, w[s], p);
                double t = sw ? vnm_bench_time_linear(ctx, x[s], NULL, sw, NULL, dy[s], o->reps) : -1;
                vnm_sparse_weight_free(sw);
                if (t < 0) {
                    fprintf(stderr, "vnm select: %s\n", vnm_ctx_error(ctx));
                    vnm_ctx_destroy(ctx);
                    return 1;
                }
                sparse += t;
            }
            cands[n++] = (vnm_vm_candidate){p, dense / sparse, 0, false};
            fprintf(stderr, "\rmeasured %d candidates", n);
        }
    fprintf(stderr, "\n");
    int best = vnm_vm_choose(cands, n, o->speedup);
    printf("V/M selection: %d layer shapes, T=%lld tokens, required speedup %.2f "
           "(dense fwd+bwd %.1f ms)\n", o->n_shapes, (long long)o->tokens, o->speedup,
           dense * 1e3);
    printf("%-10s %9s %8s %5s\n", "candidate", "speedup", "kappa", "kept");
    for (int i = 0; i < n; i++) {
        char p[32];
        printf("%-10s %9.3f %8.4f %5s%s\n", vnm_pattern_str(cands[i].pat, p, sizeof p),
               cands[i].speedup, cands[i].kappa, cands[i].kept ? "yes" : "no",
               i == best ? "   <- chosen" : "");
    }
    if (best < 0)
        printf("chosen: none (no candidate reaches %.2fx)\n", o->speedup);
    else {
        char p[32];
        printf("chosen: %s (speedup %.3f, kappa %.4f)\n",
               vnm_pattern_str(cands[best].pat, p, sizeof p), cands[best].speedup,
               cands[best].kappa);
    }
    vnm_ctx_destroy(ctx);
    return 0;
}

static const char select_usage[] =
    "usage: vnm select --shapes OxI[,OxI...] [--speedup S] [--tokens T] [--threads N] [--reps N]\n"
    "\n"
    "Chooses V and M for V:N:M sparsity (METHOD §3): measures forward+backward of the sparse\n"
    "linear against the dense linear for V in {16,32,64,128} and M in 5..16 on the given layer\n"
    "shapes (out x in), keeps the candidates at least S times faster, and picks the largest mask\n"
    "diversity kappa (ties: larger V).\n"
    "  --shapes    layer shapes, e.g. 3072x768,768x3072\n"
    "  --speedup   required speedup over dense (default 1.0)\n"
    "  --tokens    tokens per batch (default 512)\n"
    "  --threads   OpenMP/OpenBLAS threads (default: all cores)\n"
    "  --reps      timed repetitions after a warm-up, best kept (default 2)\n";

static int parse_shapes(const char *text, select_opts *o)
{
    const char *p = text;
    while (*p) {
        char *end;
        long long O = strtoll(p, &end, 10);
        if (end == p || *end != 'x') goto bad;
        p = end + 1;
        long long I = strtoll(p, &end, 10);
        if (end == p || (*end && *end != ',') || O < 1 || I < 1 || O > (1 << 20) ||
            I > (1 << 20) || o->n_shapes == MAX_SHAPES)
            goto bad;
        o->shapes[o->n_shapes++] = (layer_shape){O, I};
        p = *end ? end + 1 : end;
    }
    if (o->n_shapes > 0) return 0;
bad:
    fprintf(stderr, "vnm select: --shapes '%s': expected up to %d shapes OxI separated by commas, "
            "e.g. 3072x768,768x3072\n", text, MAX_SHAPES);
    return 2;
}

int vnm_cmd_select(int argc, char **argv)
{
    select_opts o = {.tokens = 512, .speedup = 1.0, .threads = 0, .reps = 2};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(select_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--shapes")) {
            rc = v ? parse_shapes(v, &o) : vnm_cli_missing("select", a);
        } else if (!strcmp(a, "--speedup")) {
            rc = vnm_cli_double("select", a, v, 0.01, 100.0, &o.speedup);
        } else if (!strcmp(a, "--tokens")) {
            int t = 0;
            rc = vnm_cli_int("select", a, v, 1, 1 << 20, &t);
            o.tokens = t;
        } else if (!strcmp(a, "--threads")) {
            rc = vnm_cli_int("select", a, v, 1, 1024, &o.threads);
        } else if (!strcmp(a, "--reps")) {
            rc = vnm_cli_int("select", a, v, 1, 1024, &o.reps);
        } else {
            fprintf(stderr, "vnm select: unknown option '%s'\n%s", a, select_usage);
            return 2;
        }
        if (rc) return rc;
        i++;
    }
    if (o.n_shapes == 0) {
        fprintf(stderr, "vnm select: --shapes is required\n%s", select_usage);
        return 2;
    }
    return run_select(&o);
}
