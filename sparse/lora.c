/* sparse/lora.c — LoRA adapter state (METHOD §6): creation with PEFT's initialisation, the masks of
 * the sparse stages and their re-pruning, PEFT's merge / unmerge, and the effective weight for
 * export. The differentiable products are in sparse/op_lora.c. Base weights are read and written
 * through host copies, so the dense-mode functions work on any device and dtype f32/bf16/f16. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#include <cblas.h>
#undef I /* complex.h, which cblas.h includes, defines I; here it is the input dimension */

float vnm_lora_scale(int64_t r, double alpha, bool rslora)
{
    return (float)(rslora ? alpha / sqrt((double)r) : alpha / (double)r);
}

/* PEFT: kaiming_uniform_(A, a=√5): gain √(2/(1+5)), bound gain·√(3/fan_in) = 1/√I. */
static vnm_status init_adapters(vnm_ctx *ctx, vnm_lora *l)
{
    float bound = 1.0f / sqrtf((float)l->I);
    vnm_status st = vnm_rng_uniform(ctx, l->A, -bound, bound);
    return st == VNM_OK ? vnm_tensor_fill(ctx, l->B, 0.0f) : st;
}

vnm_lora *vnm_lora_new(vnm_ctx *ctx, const char *module, int64_t O, int64_t I,
                       const vnm_lora_config *cfg)
{
    if (!(cfg->r >= 1 && cfg->alpha > 0 && cfg->dropout >= 0 && cfg->dropout < 1) || O < 1 ||
        I < 1) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "lora '%s': need r ≥ 1 (%lld), alpha > 0 (%g), dropout "
                     "in [0, 1) (%g) and a [%lld, %lld] base with both dims ≥ 1", module,
                     (long long)cfg->r, cfg->alpha, cfg->dropout, (long long)O, (long long)I);
        return NULL;
    }
    vnm_lora *l = calloc(1, sizeof *l);
    size_t n = strlen(module) + 32;
    char *name = malloc(n);
    if (l) l->module = strdup(module);
    if (!l || !l->module || !name) {
        free(name);
        vnm_lora_free(l);
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "lora '%s': out of memory", module);
        return NULL;
    }
    l->O = O;
    l->I = I;
    l->r = cfg->r;
    l->scale = vnm_lora_scale(cfg->r, cfg->alpha, cfg->rslora);
    l->dropout = (float)cfg->dropout;
    l->mask_step = -1;
    snprintf(name, n, "%s.lora_A.weight", module);
    l->A = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(cfg->r, I), name);
    snprintf(name, n, "%s.lora_B.weight", module);
    l->B = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(O, cfg->r), name);
    free(name);
    if (!l->A || !l->B || init_adapters(ctx, l) != VNM_OK) {
        vnm_lora_free(l);
        return NULL;
    }
    return l;
}

void vnm_lora_free(vnm_lora *l)
{
    if (!l) return;
    vnm_sparse_weight_free(l->kept);
    free(l->mask);
    free(l->prev_mask);
    free(l->module);
    free(l);
}

static bool base_ok(vnm_ctx *ctx, const vnm_lora *l, const vnm_tensor *W, const char *what)
{
    char s[96];
    if (W && W->ndim == 2 && W->shape[0] == l->O && W->shape[1] == l->I &&
        vnm_is_contiguous(W) &&
        (W->dtype == VNM_DTYPE_F32 || W->dtype == VNM_DTYPE_BF16 || W->dtype == VNM_DTYPE_F16))
        return true;
    vnm_ctx_fail(ctx, VNM_ERR_INPUT, "lora '%s' %s: base weight %s must be contiguous "
                 "f32/bf16/f16 [%lld, %lld]", l->module, what,
                 W ? vnm_shape_str(W, s, sizeof s) : "(none)", (long long)l->O, (long long)l->I);
    return false;
}

float *vnm_lora_weight_to_f32(vnm_ctx *ctx, const vnm_tensor *W)
{
    int64_t n = vnm_numel(W);
    size_t es = vnm_dtype_size(W->dtype);
    float *f = malloc((size_t)n * sizeof(float) + 1);
    void *raw = W->dtype == VNM_DTYPE_F32 ? (void *)f : malloc((size_t)n * es + 1);
    if (!f || !raw) {
        free(f);
        if (raw != f) free(raw);
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "lora: out of memory for a copy of '%s'", W->name);
        return NULL;
    }
    if (vnm_tensor_to_host(ctx, W, raw) != VNM_OK) {
        free(f);
        if (raw != f) free(raw);
        return NULL;
    }
    const uint16_t *h = raw;
    if (W->dtype == VNM_DTYPE_BF16)
        for (int64_t i = 0; i < n; i++) f[i] = vnm_bf16_to_f32(h[i]);
    else if (W->dtype == VNM_DTYPE_F16)
        for (int64_t i = 0; i < n; i++) f[i] = vnm_f16_to_f32(h[i]);
    if (raw != f) free(raw);
    return f;
}

/* Stores f into W in W's dtype and leaves in f the values W now holds (rounded). */
static vnm_status weight_store(vnm_ctx *ctx, vnm_tensor *W, float *f)
{
    int64_t n = vnm_numel(W);
    if (W->dtype == VNM_DTYPE_F32) return vnm_tensor_from_host(ctx, W, f);
    uint16_t *h = malloc((size_t)n * sizeof *h + 1);
    if (!h) return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "lora: out of memory storing '%s'", W->name);
    bool bf = W->dtype == VNM_DTYPE_BF16;
    for (int64_t i = 0; i < n; i++) {
        h[i] = bf ? vnm_f32_to_bf16(f[i]) : vnm_f32_to_f16(f[i]);
        f[i] = bf ? vnm_bf16_to_f32(h[i]) : vnm_f16_to_f32(h[i]);
    }
    vnm_status st = vnm_tensor_from_host(ctx, W, h);
    free(h);
    return st;
}

/* W[O][I] += sign · s · (B·A), with B·A formed first as PEFT does. */
static vnm_status add_delta(vnm_ctx *ctx, const vnm_lora *l, float *W, float sign)
{
    int64_t O = l->O, I = l->I, r = l->r;
    float *A = malloc((size_t)(r * I) * sizeof(float));
    float *B = malloc((size_t)(O * r) * sizeof(float));
    float *P = malloc((size_t)(O * I) * sizeof(float));
    vnm_status st = A && B && P ? VNM_OK
                                : vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "lora '%s': out of memory "
                                               "merging", l->module);
    if (st == VNM_OK) st = vnm_tensor_to_host(ctx, l->A, A);
    if (st == VNM_OK) st = vnm_tensor_to_host(ctx, l->B, B);
    if (st == VNM_OK) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)O, (blasint)I,
                    (blasint)r, 1.0f, B, (blasint)r, A, (blasint)I, 0.0f, P, (blasint)I);
        float s = sign * l->scale;
        for (int64_t k = 0; k < O * I; k++) W[k] += P[k] * s;
    }
    free(A);
    free(B);
    free(P);
    return st;
}

vnm_status vnm_lora_merge(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, bool unmerge)
{
    if (l->mask)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "lora '%s': merge/unmerge is for the dense mode; "
                            "a masked layer merges in vnm_lora_reprune", l->module);
    if (!base_ok(ctx, l, W, "merge")) return VNM_ERR_INPUT;
    float *f = vnm_lora_weight_to_f32(ctx, W);
    if (!f) return vnm_ctx_status(ctx);
    vnm_status st = add_delta(ctx, l, f, unmerge ? -1.0f : 1.0f);
    if (st == VNM_OK) st = weight_store(ctx, W, f);
    free(f);
    return st;
}

/* kept ← W (f32 host copy) compressed under the current mask; created on the first call, then
 * overwritten in place (the shapes depend only on the pattern and [O, I]). */
static vnm_status refresh_kept(vnm_ctx *ctx, vnm_lora *l, const float *W)
{
    char err[256];
    vnm_sparse_host h = {0};
    if (vnm_sparse_compress(l->pat, W, l->mask, l->O, l->I, NULL, NULL, &h, err, sizeof err) !=
        VNM_OK)
        return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "lora '%s': compression failed: %s", l->module,
                            err);
    vnm_status st = VNM_OK;
    if (l->kept && (l->kept->pat.V != l->pat.V || l->kept->pat.M != l->pat.M)) {
        vnm_sparse_weight_free(l->kept); /* a new pattern: its tensors stay in the arena */
        l->kept = NULL;
    }
    if (!l->kept) {
        size_t n = strlen(l->module) + 8;
        char *name = malloc(n);
        if (name) snprintf(name, n, "%s.weight", l->module);
        l->kept = name ? vnm_sparse_weight_new(ctx, &h, name) : NULL;
        free(name);
        if (l->kept) l->kept->vals->requires_grad = false;
        else st = vnm_ctx_status(ctx) ? vnm_ctx_status(ctx) : VNM_ERR_RUNTIME;
    } else {
        st = vnm_tensor_from_host(ctx, l->kept->vals, h.vals);
        if (st == VNM_OK) st = vnm_tensor_from_host(ctx, l->kept->slots, h.slots);
        if (st == VNM_OK) st = vnm_tensor_from_host(ctx, l->kept->cols, h.cols);
        if (st == VNM_OK) st = vnm_tensor_from_host(ctx, l->kept->rows, h.rows);
    }
    vnm_sparse_host_free(&h);
    return st;
}

/* dst[O, I] u8 on the device ← m (or its complement), created on the first call */
static vnm_status upload_mask(vnm_ctx *ctx, const vnm_lora *l, vnm_tensor **dst,
                              const uint8_t *m, bool complement, const char *suffix)
{
    size_t n = (size_t)(l->O * l->I);
    uint8_t *h = complement ? malloc(n + 1) : NULL;
    if (complement && !h)
        return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "lora '%s': out of memory", l->module);
    for (size_t k = 0; complement && k < n; k++) h[k] = !m[k];
    char name[256];
    snprintf(name, sizeof name, "%s.%s", l->module, suffix);
    if (!*dst) *dst = vnm_buffer_new(ctx, VNM_DTYPE_U8, 2, VNM_SHAPE(l->O, l->I), name);
    vnm_status st = *dst ? vnm_tensor_from_host(ctx, *dst, h ? h : m) : vnm_ctx_status(ctx);
    free(h);
    return st;
}

vnm_status vnm_lora_refresh_dense_masks(vnm_ctx *ctx, vnm_lora *l)
{
    vnm_status st = upload_mask(ctx, l, &l->mask_dev, l->mask, false, "lora_mask_dev");
    if (st == VNM_OK && l->prev_mask)
        st = upload_mask(ctx, l, &l->pruned_dev, l->prev_mask, true, "lora_pruned_dev");
    return st;
}

/* The masked mode's layout after a mask change: kept (the compressed form) on the CPU, the device
 * masks of the dense form elsewhere, and on the CPU too once a dense-form call made them. */
static vnm_status refresh_layout(vnm_ctx *ctx, vnm_lora *l, const float *W)
{
    bool cpu = vnm_ctx_device(ctx) == VNM_DEVICE_CPU;
    vnm_status st = cpu ? refresh_kept(ctx, l, W) : VNM_OK;
    if (st == VNM_OK && (!cpu || l->mask_dev)) st = vnm_lora_refresh_dense_masks(ctx, l);
    return st;
}

static uint8_t *mask_alloc(vnm_ctx *ctx, const vnm_lora *l, uint8_t *old)
{
    uint8_t *m = old ? old : malloc((size_t)(l->O * l->I) + 1);
    if (!m) vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "lora '%s': out of memory for a mask", l->module);
    return m;
}

vnm_status vnm_lora_set_masks(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_pattern pat,
                              const uint8_t *mask, const uint8_t *prev_mask, int64_t mask_step,
                              char *err, size_t err_len)
{
    if (!base_ok(ctx, l, W, "set_masks"))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s", vnm_ctx_error(ctx));
    vnm_status st = vnm_mask_validate(pat, mask, l->O, l->I, err, err_len);
    if (st == VNM_OK && prev_mask) st = vnm_mask_validate(pat, prev_mask, l->O, l->I, err, err_len);
    if (st != VNM_OK) return st;
    size_t n = (size_t)(l->O * l->I);
    if (!(l->mask = mask_alloc(ctx, l, l->mask))) return VNM_ERR_RUNTIME;
    memcpy(l->mask, mask, n);
    if (prev_mask) {
        if (!(l->prev_mask = mask_alloc(ctx, l, l->prev_mask))) return VNM_ERR_RUNTIME;
        memcpy(l->prev_mask, prev_mask, n);
    } else {
        free(l->prev_mask);
        l->prev_mask = NULL;
    }
    l->pat = pat;
    l->mask_step = mask_step;
    float *f = vnm_lora_weight_to_f32(ctx, W);
    if (!f) return vnm_ctx_status(ctx);
    st = refresh_layout(ctx, l, f);
    free(f);
    return st;
}

vnm_status vnm_lora_reprune(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_pattern pat,
                            vnm_selector sel, vnm_score_kind score, const double *act_rms,
                            double ria_a, int64_t step, char *err, size_t err_len)
{
    if (!base_ok(ctx, l, W, "reprune"))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s", vnm_ctx_error(ctx));
    if (score == VNM_SCORE_RIA && !act_rms)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "lora '%s': the ria score needs "
                          "calibration statistics of the layer input", l->module);
    int64_t n = l->O * l->I;
    float *f = vnm_lora_weight_to_f32(ctx, W);
    float *S = malloc((size_t)n * sizeof(float) + 1);
    uint8_t *fresh = malloc((size_t)n + 1);
    vnm_status st = f && S && fresh ? VNM_OK : VNM_ERR_RUNTIME;
    if (st == VNM_OK) st = add_delta(ctx, l, f, 1.0f);
    if (st == VNM_OK) st = weight_store(ctx, W, f);
    if (st == VNM_OK) st = init_adapters(ctx, l);
    if (st != VNM_OK) {
        vnm_errbuf(err, err_len, st, "lora '%s': merge failed: %s", l->module,
                   vnm_ctx_error(ctx)[0] ? vnm_ctx_error(ctx) : "out of memory");
    } else {
        st = vnm_score_compute(score, f, l->O, l->I, act_rms, ria_a, S, err, err_len);
        if (st == VNM_OK) st = vnm_mask_select(pat, sel, S, l->O, l->I, fresh, err, err_len);
    }
    if (st == VNM_OK) {
        free(l->prev_mask);
        l->prev_mask = l->mask; /* NULL (all ones) after the dense mode */
        l->mask = fresh;
        fresh = NULL;
        l->pat = pat;
        l->mask_step = step;
        st = refresh_layout(ctx, l, f);
        if (st != VNM_OK) vnm_errbuf(err, err_len, st, "%s", vnm_ctx_error(ctx));
    }
    free(f);
    free(S);
    free(fresh);
    return st;
}

vnm_status vnm_lora_effective_weight(vnm_ctx *ctx, const vnm_lora *l, const vnm_tensor *W,
                                     float *out)
{
    if (!base_ok(ctx, l, W, "effective_weight")) return VNM_ERR_INPUT;
    float *f = vnm_lora_weight_to_f32(ctx, W);
    if (!f) return vnm_ctx_status(ctx);
    vnm_status st = add_delta(ctx, l, f, 1.0f);
    int64_t n = l->O * l->I;
    if (st == VNM_OK)
        for (int64_t k = 0; k < n; k++) out[k] = l->mask && !l->mask[k] ? 0.0f : f[k];
    free(f);
    return st;
}
