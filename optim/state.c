/* optim/state.c — the optimiser state as checkpoints see it: per-parameter state tensors and step
 * counts, and the whole state as a little-endian byte buffer (layout in optim.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char magic[8] = {'V', 'N', 'M', 'O', 'P', 'T', 'I', 'M'};
enum { FORMAT_VERSION = 1, HEADER_BYTES = 8 + 4 * 4 + 8 };

int vnm_optim_num_params(const vnm_optim *opt) { return opt->n_params; }
vnm_tensor *vnm_optim_param(const vnm_optim *opt, int i) { return opt->slots[i].param; }
int vnm_optim_param_group(const vnm_optim *opt, int i) { return opt->slots[i].group; }
int vnm_optim_state_count(const vnm_optim *opt) { return opt->n_state; }
vnm_tensor *vnm_optim_state(const vnm_optim *opt, int i, int k) { return opt->slots[i].state[k]; }
int64_t vnm_optim_param_steps(const vnm_optim *opt, int i) { return opt->slots[i].steps; }
void vnm_optim_set_param_steps(vnm_optim *opt, int i, int64_t steps)
{
    opt->slots[i].steps = steps;
}

const char *vnm_optim_state_name(const vnm_optim *opt, int k)
{
    if (opt->cfg.kind == VNM_OPTIM_SGD) return "momentum_buffer";
    return k == 0 ? "m" : "v";
}

static const char *param_name(const vnm_tensor *p) { return p->name ? p->name : ""; }

size_t vnm_optim_state_bytes(const vnm_optim *opt)
{
    size_t bytes = HEADER_BYTES;
    for (int i = 0; i < opt->n_params; i++) {
        const vnm_tensor *p = opt->slots[i].param;
        bytes += 4 + strlen(param_name(p)) + 8 + 4 + 8 * (size_t)p->ndim +
                 (size_t)opt->n_state * (size_t)vnm_numel(p) * 4;
    }
    return bytes;
}

/* ---- little-endian encoding, independent of the host's byte order ---- */
static void put_u64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static void put_u32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static uint32_t get_u32(const unsigned char *b)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)b[i] << (8 * i);
    return v;
}

vnm_status vnm_optim_save(vnm_optim *opt, void *buf, size_t len)
{
    vnm_ctx *ctx = opt->ctx;
    size_t need = vnm_optim_state_bytes(opt);
    if (!buf || len < need)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                            "optim_save: a buffer of %zu bytes cannot hold the %zu-byte state", len,
                            need);
    unsigned char *b = buf;
    memcpy(b, magic, 8);
    put_u32(b + 8, FORMAT_VERSION);
    put_u32(b + 12, (uint32_t)opt->cfg.kind);
    put_u32(b + 16, (uint32_t)opt->n_params);
    put_u32(b + 20, (uint32_t)opt->n_state);
    put_u64(b + 24, (uint64_t)opt->steps);
    b += HEADER_BYTES;
    for (int i = 0; i < opt->n_params; i++) {
        const vnm_optim_slot *s = &opt->slots[i];
        const char *name = param_name(s->param);
        size_t name_len = strlen(name);
        put_u32(b, (uint32_t)name_len);
        memcpy(b + 4, name, name_len);
        b += 4 + name_len;
        put_u64(b, (uint64_t)s->steps);
        put_u32(b + 8, (uint32_t)s->param->ndim);
        b += 12;
        for (int d = 0; d < s->param->ndim; d++, b += 8) put_u64(b, (uint64_t)s->param->shape[d]);
        int64_t n = vnm_numel(s->param);
        for (int k = 0; k < opt->n_state; k++) {
            float *host = malloc((size_t)n * sizeof *host + 1);
            if (!host) return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "optim_save: out of host memory");
            vnm_status st = vnm_tensor_to_host(ctx, s->state[k], host);
            for (int64_t e = 0; e < n && st == VNM_OK; e++, b += 4) {
                uint32_t bits;
                memcpy(&bits, &host[e], 4);
                put_u32(b, bits);
            }
            free(host);
            if (st != VNM_OK) return st;
        }
    }
    return VNM_OK;
}

/* A bounds-checked reader over the buffer. */
typedef struct {
    const unsigned char *b;
    size_t pos, len;
} reader;

static const unsigned char *take(reader *r, size_t n)
{
    if (r->len - r->pos < n) return NULL;
    const unsigned char *p = r->b + r->pos;
    r->pos += n;
    return p;
}

/* Checks the parameter records against the optimiser; with apply, also copies the state in. Run
 * once to check and once to apply, so a bad buffer changes nothing. */
static vnm_status load_params(vnm_optim *opt, reader *r, bool apply)
{
    vnm_ctx *ctx = opt->ctx;
    const char *op = "optim_load";
    for (int i = 0; i < opt->n_params; i++) {
        const vnm_optim_slot *s = &opt->slots[i];
        const vnm_tensor *p = s->param;
        const char *name = param_name(p);
        const unsigned char *h = take(r, 4);
        uint32_t name_len = h ? get_u32(h) : 0;
        const unsigned char *stored = h ? take(r, name_len) : NULL;
        const unsigned char *rec = stored ? take(r, 12) : NULL;
        if (!rec)
            return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: the buffer ends inside parameter %d",
                                op, i);
        if (name_len != strlen(name) || memcmp(stored, name, name_len) != 0)
            return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                                "%s: parameter %d is '%.*s' in the buffer but '%s' in the "
                                "optimiser", op, i, (int)name_len, (const char *)stored, name);
        int64_t steps = (int64_t)get_u64(rec);
        uint32_t ndim = get_u32(rec + 8);
        if (ndim > VNM_MAX_DIMS)
            return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                                "%s: parameter %d '%s' has %u dims in the buffer, at most %d "
                                "are possible", op, i, name, ndim, VNM_MAX_DIMS);
        const unsigned char *dims = take(r, 8 * (size_t)ndim);
        if (!dims)
            return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: the buffer ends inside parameter %d",
                                op, i);
        bool same = (int)ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++)
            same = (int64_t)get_u64(dims + 8 * d) == p->shape[d];
        if (!same) {
            char want[96], got[96];
            size_t at = (size_t)snprintf(got, sizeof got, "[");
            for (uint32_t d = 0; d < ndim; d++)
                at += (size_t)snprintf(got + at, sizeof got - at, "%s%lld", d ? ", " : "",
                                       (long long)get_u64(dims + 8 * d));
            snprintf(got + at, sizeof got - at, "]");
            return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                                "%s: parameter %d '%s' has shape %s in the buffer but %s in the "
                                "optimiser", op, i, name, got,
                                vnm_shape_str(p, want, sizeof want));
        }
        int64_t n = vnm_numel(p);
        for (int k = 0; k < opt->n_state; k++) {
            const unsigned char *data = take(r, (size_t)n * 4);
            if (!data)
                return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                                    "%s: the buffer ends inside the state of parameter %d '%s'",
                                    op, i, name);
            if (!apply) continue;
            float *host = malloc((size_t)n * sizeof *host + 1);
            if (!host) return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "%s: out of host memory", op);
            for (int64_t e = 0; e < n; e++) {
                uint32_t bits = get_u32(data + 4 * e);
                memcpy(&host[e], &bits, 4);
            }
            vnm_status st = vnm_tensor_from_host(ctx, s->state[k], host);
            free(host);
            if (st != VNM_OK) return st;
        }
        if (apply) opt->slots[i].steps = steps;
    }
    return VNM_OK;
}

vnm_status vnm_optim_load(vnm_optim *opt, const void *buf, size_t len)
{
    vnm_ctx *ctx = opt->ctx;
    const char *op = "optim_load";
    reader r = {buf, 0, buf ? len : 0};
    const unsigned char *h = take(&r, HEADER_BYTES);
    if (!h || memcmp(h, magic, 8) != 0)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                            "%s: not an optimiser state (%zu bytes, no \"VNMOPTIM\" header)", op,
                            len);
    uint32_t version = get_u32(h + 8), kind = get_u32(h + 12);
    uint32_t n_params = get_u32(h + 16), n_state = get_u32(h + 20);
    if (version != FORMAT_VERSION)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: format version %u, this build reads %d", op,
                            version, FORMAT_VERSION);
    if (kind != (uint32_t)opt->cfg.kind || n_state != (uint32_t)opt->n_state)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                            "%s: the buffer holds %s state (%u tensors per parameter) but the "
                            "optimiser is %s (%d per parameter)", op,
                            vnm_optim_kind_name((vnm_optim_kind)kind), n_state,
                            vnm_optim_kind_name(opt->cfg.kind), opt->n_state);
    if (n_params != (uint32_t)opt->n_params)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                            "%s: the buffer holds %u parameters, the optimiser has %d", op,
                            n_params, opt->n_params);
    vnm_status st = load_params(opt, &r, false);
    if (st != VNM_OK) return st;
    if (r.pos != len)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: %zu bytes left over after the state", op,
                            len - r.pos);
    r.pos = HEADER_BYTES;
    st = load_params(opt, &r, true);
    if (st == VNM_OK) opt->steps = (int64_t)get_u64(h + 24);
    return st;
}
