/* sparse/srste.c — SR-STE dynamic masks (Zhou et al., ICLR'21; METHOD §5): the dense W is the
 * parameter; every `every` steps the mask is recomputed from |W| with the V:N:M selector; the
 * forward and dX use the masked weight through the sparse kernels; dW = dYᵀX + λ_W·(1−Mk)⊙W
 * reaches every weight (straight-through, with decay on the pruned ones). Freezing compresses W
 * under the current mask into a mask-fixed weight that computes the same function. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#include <cblas.h>
#undef I /* complex.h, which cblas.h includes, defines I; here it is the input dimension */

struct vnm_srste {
    vnm_tensor *w; /* [O, I] f32 parameter */
    vnm_pattern pat;
    vnm_selector sel;
    int64_t every;
    float lambda_w;
    int64_t O, I;
    uint8_t *mask;        /* [O][I] current mask */
    float *scores;        /* [O][I] scratch */
    vnm_sparse_host comp; /* W under the current mask, compressed once per step */
    int64_t mask_step;    /* step of the last mask update, -1 before the first */
    int64_t comp_step;    /* step comp was made for, -1 when stale */
};

vnm_srste *vnm_srste_new(vnm_ctx *ctx, vnm_tensor *w, vnm_pattern p, vnm_selector sel,
                         int64_t every, float lambda_w)
{
    char s[96];
    if (!w) return NULL;
    if (w->dtype != VNM_DTYPE_F32 || w->ndim != 2 || !vnm_is_contiguous(w) || every < 1 ||
        !(lambda_w >= 0.0f)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "srste: weight %s must be contiguous f32 [O, I], every "
                     "(%lld) ≥ 1 and lambda_w (%g) ≥ 0", vnm_shape_str(w, s, sizeof s),
                     (long long)every, (double)lambda_w);
        return NULL;
    }
    vnm_srste *sr = calloc(1, sizeof *sr);
    int64_t O = w->shape[0], I = w->shape[1];
    if (sr) {
        sr->mask = malloc((size_t)(O * I) + 1);
        sr->scores = malloc((size_t)(O * I) * sizeof(float) + 1);
    }
    if (!sr || !sr->mask || !sr->scores) {
        vnm_srste_free(sr);
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "srste: out of memory for a %s weight",
                     vnm_shape_str(w, s, sizeof s));
        return NULL;
    }
    sr->w = w;
    sr->pat = p;
    sr->sel = sel;
    sr->every = every;
    sr->lambda_w = lambda_w;
    sr->O = O;
    sr->I = I;
    sr->mask_step = -1;
    sr->comp_step = -1;
    return sr;
}

void vnm_srste_free(vnm_srste *s)
{
    if (!s) return;
    vnm_sparse_host_free(&s->comp);
    free(s->mask);
    free(s->scores);
    free(s);
}

const uint8_t *vnm_srste_mask(const vnm_srste *s) { return s->mask_step < 0 ? NULL : s->mask; }
const vnm_sparse_host *vnm_srste_layout(const vnm_srste *s) { return &s->comp; }
int64_t vnm_srste_mask_step(const vnm_srste *s) { return s->mask_step; }

vnm_status vnm_srste_set_mask(vnm_srste *s, const uint8_t *mask, int64_t mask_step, char *err,
                              size_t err_len)
{
    if (mask_step < 0)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "srste: mask step %lld is negative",
                          (long long)mask_step);
    vnm_status rc = vnm_mask_validate(s->pat, mask, s->O, s->I, err, err_len);
    if (rc != VNM_OK) return rc;
    memcpy(s->mask, mask, (size_t)(s->O * s->I));
    s->mask_step = mask_step;
    s->comp_step = -1;
    return VNM_OK;
}

static vnm_status compress(vnm_ctx *ctx, vnm_srste *s)
{
    char err[256];
    vnm_sparse_host_free(&s->comp);
    if (vnm_sparse_compress(s->pat, (const float *)s->w->data, s->mask, s->O, s->I, NULL, NULL,
                            &s->comp, err, sizeof err) != VNM_OK)
        return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "srste: compression failed: %s", err);
    return VNM_OK;
}

/* Recomputes the mask when due, then compresses W under it once per step: W changes only
 * between steps (the optimiser), and every use of the layer within a step, backward included,
 * reads the same compressed copy. */
static vnm_status refresh(vnm_ctx *ctx, vnm_srste *s, int64_t step)
{
    char err[256];
    const float *W = (const float *)s->w->data;
    bool new_mask = s->mask_step < 0 || step >= s->mask_step + s->every;
    if (new_mask) {
        if (vnm_score_compute(VNM_SCORE_MAGNITUDE, W, s->O, s->I, NULL, 0.0, s->scores, err,
                              sizeof err) != VNM_OK ||
            vnm_mask_select(s->pat, s->sel, s->scores, s->O, s->I, s->mask, err, sizeof err) !=
                VNM_OK)
            return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "srste: mask update failed: %s", err);
        s->mask_step = step;
    }
    if (!new_mask && step == s->comp_step) return VNM_OK;
    s->comp_step = step;
    return compress(ctx, s);
}

/* extra: the srste state; iarg[0]: T */
static void srste_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_srste *s = node->extra;
    vnm_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
    const float *dy = (const float *)node->out->grad->data; /* [T, O] */
    int64_t T = node->iarg[0], O = s->O, I = s->I;
    vnm_spmm_weight v = vnm_spmm_weight_of_host(&s->comp);
    vnm_tensor *dx = vnm_grad_buffer(ctx, x), *dw = vnm_grad_buffer(ctx, w);
    vnm_tensor *db = vnm_grad_buffer(ctx, b);
    if (dx) vnm_spmm_dx(&v, dy, T, (float *)dx->data);
    if (dw) {
        float *g = (float *)dw->data; /* [O, I] */
        const float *W = (const float *)w->data;
        if (T > 0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)O, (blasint)I,
                        (blasint)T, 1.0f, dy, (blasint)O, (const float *)x->data, (blasint)I,
                        1.0f, g, (blasint)I);
        const float lw = s->lambda_w;
#pragma omp parallel for schedule(static) if (O * I > 65536)
        for (int64_t k = 0; k < O * I; k++)
            if (!s->mask[k]) g[k] += lw * W[k];
    }
    if (db) vnm_spmm_bias_grad((float *)db->data, dy, T, O);
}

vnm_tensor *vnm_srste_linear(vnm_ctx *ctx, vnm_srste *s, vnm_tensor *x, vnm_tensor *b,
                             int64_t step)
{
    static const char *op = "srste_linear";
    if (!x || !s) return NULL;
    if (!vnm_sparse_linear_check(ctx, op, x, s->O, s->I, b, false)) return NULL;
    x = vnm_contiguous(ctx, x);
    if (!x || refresh(ctx, s, step) != VNM_OK) return NULL;
    vnm_ctx_call_linear_hook(ctx, s->w->name, x);
    int64_t shape[VNM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = s->O;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, x->ndim, shape); /* [..., O] */
    if (!y) return NULL;
    int64_t T = s->I ? vnm_numel(x) / s->I : 0;
    vnm_spmm_weight v = vnm_spmm_weight_of_host(&s->comp);
    vnm_spmm_bias_fill((float *)y->data, b ? (const float *)b->data : NULL, T, s->O);
    vnm_spmm_fwd(&v, (const float *)x->data, T, (float *)y->data);
    vnm_tensor *in[3] = {x, s->w, b};
    vnm_node *node = vnm_tape_record(ctx, op, srste_backward, y, 3, in);
    vnm_node_reads(node, VNM_READS_IN(0) | VNM_READS_IN(1)); /* x for dW, W for its decay */
    if (node) {
        node->extra = s;
        node->iarg[0] = T;
    }
    return y;
}

vnm_sparse_weight *vnm_srste_freeze(vnm_ctx *ctx, vnm_srste *s, const char *name)
{
    if ((s->mask_step < 0 && refresh(ctx, s, 0) != VNM_OK) || compress(ctx, s) != VNM_OK)
        return NULL;
    s->comp_step = -1; /* made outside any step */
    return vnm_sparse_weight_new(ctx, &s->comp, name);
}
