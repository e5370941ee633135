/* autograd/profile.c — where a step's time goes, op by op. With profiling on, the device is
 * synchronised at every tape record and around every backward node, and the elapsed wall time is
 * added to that op's forward or backward total; vnm_profile_mark charges the time since the last
 * mark to a named bucket (e.g. the optimiser step). Forward time of an op is the time since the
 * previous mark, so host work between ops is charged to the next op. Synchronising removes the
 * overlap of host and device work: totals are each op's upper bound, for ranking hotspots. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

enum { MAX_OPS = 128 };

typedef struct {
    const char *op; /* static strings: op names and mark names */
    double fwd, bwd;
    int64_t fwd_calls, bwd_calls;
} profile_entry;

struct vnm_profile {
    profile_entry e[MAX_OPS];
    int n;
    double last; /* time of the last mark */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double synced_now(const vnm_ctx *ctx)
{
    ctx->be->synchronize();
    return now();
}

static profile_entry *entry(vnm_profile *p, const char *op)
{
    for (int i = 0; i < p->n; i++)
        if (p->e[i].op == op || !strcmp(p->e[i].op, op)) return &p->e[i];
    if (p->n == MAX_OPS) return &p->e[MAX_OPS - 1]; /* the last slot collects the overflow */
    p->e[p->n] = (profile_entry){.op = op};
    return &p->e[p->n++];
}

vnm_status vnm_ctx_set_profile(vnm_ctx *ctx, bool on)
{
    free(ctx->profile);
    ctx->profile = NULL;
    if (!on) return VNM_OK;
    ctx->profile = calloc(1, sizeof *ctx->profile);
    if (!ctx->profile) return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of memory for the profile");
    ctx->profile->last = synced_now(ctx);
    return VNM_OK;
}

void vnm_profile_mark(vnm_ctx *ctx, const char *name)
{
    vnm_profile *p = ctx->profile;
    if (!p) return;
    double t = synced_now(ctx);
    profile_entry *e = entry(p, name);
    e->fwd += t - p->last;
    e->fwd_calls++;
    p->last = t;
}

void vnm_profile_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_profile *p = ctx->profile;
    double t0 = synced_now(ctx);
    node->backward(ctx, node);
    double t1 = synced_now(ctx);
    profile_entry *e = entry(p, node->op);
    e->bwd += t1 - t0;
    e->bwd_calls++;
    p->last = t1;
}

static int by_total(const void *a, const void *b)
{
    const profile_entry *x = a, *y = b;
    double tx = x->fwd + x->bwd, ty = y->fwd + y->bwd;
    return tx < ty ? 1 : tx > ty ? -1 : 0;
}

void vnm_profile_print(const vnm_ctx *ctx, FILE *f)
{
    const vnm_profile *p = ctx->profile;
    if (!p || p->n == 0) return;
    profile_entry e[MAX_OPS];
    memcpy(e, p->e, (size_t)p->n * sizeof e[0]);
    qsort(e, (size_t)p->n, sizeof e[0], by_total);
    double total = 0.0;
    for (int i = 0; i < p->n; i++) total += e[i].fwd + e[i].bwd;
    fprintf(f, "%-24s %10s %8s %10s %8s %6s\n", "op", "fwd ms", "calls", "bwd ms", "calls",
            "share");
    for (int i = 0; i < p->n; i++)
        fprintf(f, "%-24s %10.2f %8lld %10.2f %8lld %5.1f%%\n", e[i].op, e[i].fwd * 1e3,
                (long long)e[i].fwd_calls, e[i].bwd * 1e3, (long long)e[i].bwd_calls,
                total > 0 ? 100.0 * (e[i].fwd + e[i].bwd) / total : 0.0);
}
