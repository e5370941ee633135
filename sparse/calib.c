/* sparse/calib.c — calibration statistics for RIA (METHOD §2.1): per-input-channel Σx² of a
 * linear's input over calibration tokens, and the collector that gathers them for every linear
 * whose weight name matches a glob, through the context's linear hook. */
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sparse.h"

vnm_status vnm_calib_init(vnm_calib *c, int64_t I)
{
    if (!c) return VNM_ERR_INPUT;
    *c = (vnm_calib){0};
    if (I < 1) return VNM_ERR_INPUT;
    c->sumsq = calloc((size_t)I, sizeof *c->sumsq);
    if (!c->sumsq) return VNM_ERR_RUNTIME;
    c->I = I;
    return VNM_OK;
}

void vnm_calib_free(vnm_calib *c)
{
    if (!c) return;
    free(c->sumsq);
    *c = (vnm_calib){0};
}

/* Channels per parallel chunk: a chunk walks all tokens, so each channel's sum keeps the token
 * order whatever the thread count. */
#define CHANNEL_CHUNK 64

void vnm_calib_add(vnm_calib *c, const float *x, int64_t T)
{
    if (!c || !c->sumsq || !x || T < 1) return;
    int64_t I = c->I, chunks = (I + CHANNEL_CHUNK - 1) / CHANNEL_CHUNK;
    double *sumsq = c->sumsq; /* [I] */
#pragma omp parallel for schedule(static) if (T * I > 65536)
    for (int64_t ch = 0; ch < chunks; ch++) {
        int64_t i0 = ch * CHANNEL_CHUNK, i1 = i0 + CHANNEL_CHUNK < I ? i0 + CHANNEL_CHUNK : I;
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = i0; i < i1; i++) {
                double v = x[t * I + i];
                sumsq[i] += v * v;
            }
    }
    c->tokens += T;
}

void vnm_calib_rms(const vnm_calib *c, double *rms)
{
    for (int64_t i = 0; i < c->I; i++)
        rms[i] = c->tokens > 0 ? sqrt(c->sumsq[i] / (double)c->tokens) : 0.0;
}

/* ---- the collector ---- */

typedef struct {
    char *name; /* weight name */
    vnm_calib calib;
} calib_entry;

struct vnm_calib_collector {
    vnm_ctx *ctx;
    char **globs;
    int n_globs;
    calib_entry *entries;
    int n_entries, cap_entries;
    void *raw;    /* host copy of the hook's input in its own dtype */
    float *x;     /* [T, I] the same as f32 */
    size_t x_cap; /* elements of raw and x */
};

static bool matches(const vnm_calib_collector *c, const char *name)
{
    for (int k = 0; k < c->n_globs; k++)
        if (fnmatch(c->globs[k], name, 0) == 0) return true;
    return false;
}

static calib_entry *find_entry(const vnm_calib_collector *c, const char *name)
{
    for (int k = 0; k < c->n_entries; k++)
        if (strcmp(c->entries[k].name, name) == 0) return &c->entries[k];
    return NULL;
}

static calib_entry *add_entry(vnm_calib_collector *c, const char *name, int64_t I)
{
    if (c->n_entries == c->cap_entries) {
        int cap = c->cap_entries ? 2 * c->cap_entries : 8;
        calib_entry *e = realloc(c->entries, (size_t)cap * sizeof *e);
        if (!e) return NULL;
        c->entries = e;
        c->cap_entries = cap;
    }
    calib_entry *e = &c->entries[c->n_entries];
    e->name = strdup(name);
    if (!e->name) return NULL;
    if (vnm_calib_init(&e->calib, I) != VNM_OK) {
        free(e->name);
        return NULL;
    }
    c->n_entries++;
    return e;
}

static bool reserve(vnm_calib_collector *c, size_t n)
{
    if (n <= c->x_cap) return true;
    void *raw = realloc(c->raw, n * sizeof(float));
    if (raw) c->raw = raw;
    float *x = realloc(c->x, n * sizeof *x);
    if (x) c->x = x;
    if (!raw || !x) return false;
    c->x_cap = n;
    return true;
}

/* Errors cannot be returned through the hook, so they go to the context like an op's would. */
static void collect(void *user, const char *weight_name, const vnm_tensor *x)
{
    vnm_calib_collector *c = user;
    if (!weight_name || !x || !matches(c, weight_name)) return;
    if (x->dtype != VNM_DTYPE_F32 && x->dtype != VNM_DTYPE_BF16 && x->dtype != VNM_DTYPE_F16) {
        vnm_ctx_fail(c->ctx, VNM_ERR_INPUT, "calibration: input of '%s' is %s (expected a float)",
                     weight_name, vnm_dtype_name(x->dtype));
        return;
    }
    int64_t I = x->shape[x->ndim - 1], n = vnm_numel(x);
    if (I < 1 || n == 0) return;
    calib_entry *e = find_entry(c, weight_name);
    if (e && e->calib.I != I) {
        vnm_ctx_fail(c->ctx, VNM_ERR_INPUT,
                     "calibration: input of '%s' has %lld features, earlier batches had %lld",
                     weight_name, (long long)I, (long long)e->calib.I);
        return;
    }
    if ((!e && !(e = add_entry(c, weight_name, I))) || !reserve(c, (size_t)n)) {
        vnm_ctx_fail(c->ctx, VNM_ERR_RUNTIME, "calibration: out of memory for '%s' (%lld values)",
                     weight_name, (long long)n);
        return;
    }
    bool f32 = x->dtype == VNM_DTYPE_F32;
    if (vnm_tensor_to_host(c->ctx, x, f32 ? (void *)c->x : c->raw) != VNM_OK) return;
    const uint16_t *h = c->raw; /* bf16 / f16 bits */
    if (!f32)
        for (int64_t k = 0; k < n; k++)
            c->x[k] = x->dtype == VNM_DTYPE_BF16 ? vnm_bf16_to_f32(h[k]) : vnm_f16_to_f32(h[k]);
    vnm_calib_add(&e->calib, c->x, n / I);
}

vnm_calib_collector *vnm_calib_attach(vnm_ctx *ctx, const char *const *globs, int n_globs)
{
    if (!ctx) return NULL;
    if (!globs || n_globs < 1) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                     "calibration: no weight-name globs given (n_globs = %d; use \"*\" for every "
                     "linear)",
                     n_globs);
        return NULL;
    }
    for (int k = 0; k < n_globs; k++)
        if (!globs[k]) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "calibration: glob %d of %d is NULL", k, n_globs);
            return NULL;
        }
    vnm_calib_collector *c = calloc(1, sizeof *c);
    if (c) c->globs = calloc((size_t)n_globs, sizeof *c->globs);
    for (int k = 0; c && c->globs && k < n_globs; k++, c->n_globs++)
        if (!(c->globs[k] = strdup(globs[k]))) break;
    if (!c || c->n_globs < n_globs) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "calibration: out of memory");
        vnm_calib_detach(c);
        return NULL;
    }
    c->ctx = ctx;
    vnm_ctx_set_linear_hook(ctx, collect, c);
    return c;
}

const vnm_calib *vnm_calib_find(const vnm_calib_collector *c, const char *weight_name)
{
    if (!c || !weight_name) return NULL;
    const calib_entry *e = find_entry(c, weight_name);
    return e ? &e->calib : NULL;
}

void vnm_calib_detach(vnm_calib_collector *c)
{
    if (!c) return;
    if (c->ctx) vnm_ctx_set_linear_hook(c->ctx, NULL, NULL);
    for (int k = 0; k < c->n_entries; k++) {
        free(c->entries[k].name);
        vnm_calib_free(&c->entries[k].calib);
    }
    for (int k = 0; k < c->n_globs; k++) free(c->globs[k]);
    free(c->globs);
    free(c->entries);
    free(c->raw);
    free(c->x);
    free(c);
}
