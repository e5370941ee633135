/* sparse/op_lora.c — the differentiable LoRA products (METHOD §6): the adapter branch of the dense
 * mode, the adapter product sampled at the kept positions of a V:N:M mask (the masked effective
 * weight in compressed space), and the regulariser on the entries the previous mask pruned. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#include <cblas.h>
#undef I /* complex.h, which cblas.h includes, defines I; here it is the input dimension */

vnm_tensor *vnm_lora_add(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *x, vnm_tensor *y)
{
    if (!x || !y || !l) return NULL;
    vnm_tensor *h = vnm_linear(ctx, vnm_dropout(ctx, x, l->dropout), l->A, NULL); /* [..., r] */
    return vnm_add(ctx, y, vnm_scale(ctx, vnm_linear(ctx, h, l->B, NULL), l->scale));
}

/* extra: the adapter */
static void sampled_backward(vnm_ctx *ctx, vnm_node *node)
{
    const vnm_lora *l = node->extra;
    const vnm_sparse_weight *w = l->kept;
    const float *dv = (const float *)node->out->grad->data; /* [O_pad, Gp, 2] */
    const uint8_t *slots = w->slots->data;
    const int32_t *cols = w->cols->data, *rows = w->rows->data;
    const float *A = l->A->data, *B = l->B->data;
    vnm_tensor *dAt = vnm_grad_buffer(ctx, l->A), *dBt = vnm_grad_buffer(ctx, l->B);
    int64_t r = l->r, I = l->I, Gp = w->Gp, O_pad = w->O_pad;
    float s = l->scale;
    if (dBt) {
        float *dB = dBt->data; /* [O, r]; stored rows are distinct output rows */
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < O_pad; o++) {
            if (rows[o] < 0) continue;
            float *db = dB + (int64_t)rows[o] * r;
            for (int64_t g = 0; g < Gp; g++)
                for (int j = 0; j < 2; j++) {
                    int32_t c = vnm_sparse_kept_col(w, slots, cols, o, g, j);
                    float d = dv[(o * Gp + g) * 2 + j] * s;
                    if (c < 0 || d == 0.0f) continue;
                    for (int64_t k = 0; k < r; k++) db[k] += d * A[k * I + c];
                }
        }
    }
    if (dAt) {
        float *dA = dAt->data; /* [r, I]: one row per thread, rows visited in order */
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < r; k++)
            for (int64_t o = 0; o < O_pad; o++) {
                if (rows[o] < 0) continue;
                float b = B[(int64_t)rows[o] * r + k] * s;
                for (int64_t g = 0; g < Gp; g++)
                    for (int j = 0; j < 2; j++) {
                        int32_t c = vnm_sparse_kept_col(w, slots, cols, o, g, j);
                        if (c >= 0) dA[k * I + c] += b * dv[(o * Gp + g) * 2 + j];
                    }
            }
    }
}

static bool has_mask(vnm_ctx *ctx, const vnm_lora *l, const char *op)
{
    if (l->mask) return true;
    vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: lora '%s' has no mask yet (dense mode)", op, l->module);
    return false;
}

/* The compressed form: the CPU's sparse kernels. */
static bool masked_ok(vnm_ctx *ctx, const vnm_lora *l, const char *op)
{
    if (!has_mask(ctx, l, op)) return false;
    if (!l->kept || vnm_ctx_device(ctx) != VNM_DEVICE_CPU) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: the compressed masked mode runs on the cpu backend "
                     "only (elsewhere the dense form)", op);
        return false;
    }
    return true;
}

vnm_tensor *vnm_lora_sampled(vnm_ctx *ctx, vnm_lora *l)
{
    static const char *op = "lora_sampled";
    if (!l || !masked_ok(ctx, l, op)) return NULL;
    const vnm_sparse_weight *w = l->kept;
    int64_t r = l->r, I = l->I, Gp = w->Gp, O_pad = w->O_pad;
    vnm_tensor *out = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 3, VNM_SHAPE(O_pad, Gp, 2));
    float *At = malloc((size_t)(I * r) * sizeof(float) + 1); /* [I, r]: columns of A */
    if (!out || !At) {
        free(At);
        if (out) vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "%s: out of memory", op);
        return NULL;
    }
    const float *A = l->A->data, *B = l->B->data;
    for (int64_t k = 0; k < r; k++)
        for (int64_t c = 0; c < I; c++) At[c * r + k] = A[k * I + c];
    const uint8_t *slots = w->slots->data;
    const int32_t *cols = w->cols->data, *rows = w->rows->data;
    float *v = out->data, s = l->scale;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < O_pad; o++)
        for (int64_t g = 0; g < Gp; g++)
            for (int j = 0; j < 2; j++) {
                int32_t c = vnm_sparse_kept_col(w, slots, cols, o, g, j);
                float acc = 0.0f;
                if (c >= 0 && rows[o] >= 0) {
                    const float *b = B + (int64_t)rows[o] * r, *a = At + (int64_t)c * r;
                    for (int64_t k = 0; k < r; k++) acc += b[k] * a[k];
                }
                v[(o * Gp + g) * 2 + j] = acc * s;
            }
    free(At);
    vnm_tensor *in[2] = {l->A, l->B};
    vnm_node *node = vnm_tape_record(ctx, op, sampled_backward, out, 2, in);
    vnm_node_reads(node, VNM_READS_IN(0) | VNM_READS_IN(1));
    if (node) node->extra = l;
    return out;
}

/* The dense form's operands: the base as f32 (a step copy of a half base, given back by the caller
 * with vnm_release) and the device masks (made on the first call on the CPU). */
static vnm_tensor *dense_base(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, const char *op)
{
    char s[96];
    if (!W || !has_mask(ctx, l, op)) return NULL;
    if (W->ndim != 2 || W->shape[0] != l->O || W->shape[1] != l->I || !vnm_is_contiguous(W)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: lora '%s' needs its contiguous [%lld, %lld] base, "
                     "got %s", op, l->module, (long long)l->O, (long long)l->I,
                     vnm_shape_str(W, s, sizeof s));
        return NULL;
    }
    if (!l->mask_dev && vnm_lora_refresh_dense_masks(ctx, l) != VNM_OK) return NULL;
    return W->dtype == VNM_DTYPE_F32 ? W : vnm_to_dtype(ctx, W, VNM_DTYPE_F32);
}

/* s·B·A [O, I], differentiable to A and B */
static vnm_tensor *delta_dense(vnm_ctx *ctx, const vnm_lora *l)
{
    return vnm_scale(ctx, vnm_matmul(ctx, l->B, l->A), l->scale);
}

vnm_tensor *vnm_lora_masked_dense(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_tensor *x,
                                  vnm_tensor *b)
{
    if (!x || !l) return NULL;
    vnm_tensor *w = dense_base(ctx, l, W, "lora_masked_dense"); /* [O, I] f32 */
    if (!w) return NULL;
    /* the products below take unnamed weights: calibration hears of the layer here */
    vnm_ctx_call_linear_hook(ctx, W->name, x);
    vnm_tensor *d = delta_dense(ctx, l), *y;
    if (l->dropout == 0.0f) {
        y = vnm_linear(ctx, x, vnm_mask(ctx, vnm_add(ctx, w, d), l->mask_dev), b);
    } else {
        y = vnm_linear(ctx, x, vnm_mask(ctx, w, l->mask_dev), b);
        y = vnm_add(ctx, y, vnm_linear(ctx, vnm_dropout(ctx, x, l->dropout),
                                       vnm_mask(ctx, d, l->mask_dev), NULL));
    }
    if (w != W) vnm_release(ctx, w); /* read by no backward: the sum and the mask are new tensors */
    return y;
}

vnm_tensor *vnm_lora_masked_linear(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_tensor *x,
                                   vnm_tensor *b)
{
    if (vnm_sparse_dense_form(ctx)) return vnm_lora_masked_dense(ctx, l, W, x, b);
    if (!x || !l || !masked_ok(ctx, l, "lora_masked_linear")) return NULL;
    vnm_tensor *delta = vnm_lora_sampled(ctx, l); /* [O_pad, Gp, 2] */
    if (l->dropout == 0.0f)
        return vnm_sparse_linear_vals(ctx, x, l->kept, vnm_add(ctx, l->kept->vals, delta), b);
    vnm_tensor *y = vnm_sparse_linear_vals(ctx, x, l->kept, l->kept->vals, b);
    return vnm_add(ctx, y, vnm_sparse_linear_vals(ctx, vnm_dropout(ctx, x, l->dropout), l->kept,
                                                  delta, NULL));
}

/* E[O][I] = W + s·(B·A) on the host (the penalty recomputes it in backward instead of saving). */
static float *effective_dense(vnm_ctx *ctx, const vnm_lora *l, const vnm_tensor *W)
{
    float *E = vnm_lora_weight_to_f32(ctx, W);
    if (E)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)l->O, (blasint)l->I,
                    (blasint)l->r, l->scale, (const float *)l->B->data, (blasint)l->r,
                    (const float *)l->A->data, (blasint)l->I, 1.0f, E, (blasint)l->I);
    return E;
}

/* extra: the adapter; in[2]: W; farg[0]: λ */
static void penalty_backward(vnm_ctx *ctx, vnm_node *node)
{
    const vnm_lora *l = node->extra;
    float g = *(const float *)node->out->grad->data * node->farg[0];
    int64_t O = l->O, I = l->I, r = l->r;
    float *R = effective_dense(ctx, l, node->in[2]); /* [O, I] becomes λ·(1 − Mprev)⊙E·g */
    if (!R) return;
    for (int64_t k = 0; k < O * I; k++) R[k] = l->prev_mask[k] ? 0.0f : R[k] * g;
    vnm_tensor *dA = vnm_grad_buffer(ctx, l->A), *dB = vnm_grad_buffer(ctx, l->B);
    if (dB) /* dB += s·R·Aᵀ */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)O, (blasint)r, (blasint)I,
                    l->scale, R, (blasint)I, (const float *)l->A->data, (blasint)I, 1.0f,
                    (float *)dB->data, (blasint)r);
    if (dA) /* dA += s·Bᵀ·R */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)r, (blasint)I, (blasint)O,
                    l->scale, (const float *)l->B->data, (blasint)r, R, (blasint)I, 1.0f,
                    (float *)dA->data, (blasint)I);
    free(R);
}

/* The regulariser's segment: in = {A, B}; the base and λ come from the adapter. */
static vnm_tensor *penalty_segment(vnm_ctx *ctx, vnm_tensor *const *in, int n_in, void *lora)
{
    (void)in, (void)n_in;
    vnm_lora *l = lora;
    vnm_tensor *w = dense_base(ctx, l, l->penalty_W, "lora_penalty_dense"); /* [O, I] f32 */
    if (!w) return NULL;
    vnm_tensor *r = vnm_mask(ctx, vnm_add(ctx, w, delta_dense(ctx, l)), l->pruned_dev);
    if (w != l->penalty_W) vnm_release(ctx, w);
    vnm_tensor *sq = vnm_sum(ctx, vnm_mul(ctx, r, r), VNM_ALL_DIMS, false);
    return sq ? vnm_scale(ctx, vnm_reshape(ctx, sq, 1, VNM_SHAPE(1)), 0.5f * l->penalty_lambda)
              : NULL;
}

vnm_tensor *vnm_lora_penalty_dense(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, float lambda)
{
    if (!l || !W) return NULL;
    if (!l->prev_mask) return vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(1));
    if (!(lambda >= 0)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "lora_penalty_dense: lambda %g < 0", (double)lambda);
        return NULL;
    }
    if (!l->pruned_dev && l->mask_dev && vnm_lora_refresh_dense_masks(ctx, l) != VNM_OK)
        return NULL;
    l->penalty_W = W;
    l->penalty_lambda = lambda;
    vnm_tensor *in[2] = {l->A, l->B};
    return vnm_checkpoint(ctx, penalty_segment, l, 2, in);
}

vnm_tensor *vnm_lora_penalty(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, float lambda)
{
    if (l && vnm_sparse_dense_form(ctx)) return vnm_lora_penalty_dense(ctx, l, W, lambda);
    static const char *op = "lora_penalty";
    char s[96];
    if (!l || !W) return NULL;
    vnm_tensor *out = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(1));
    if (!out || !l->prev_mask) return out;
    if (!masked_ok(ctx, l, op)) return NULL;
    if (W->ndim != 2 || W->shape[0] != l->O || W->shape[1] != l->I || !vnm_is_contiguous(W) ||
        !(lambda >= 0)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: lora '%s' needs its contiguous [%lld, %lld] base "
                     "(got %s) and lambda ≥ 0 (%g)", op, l->module, (long long)l->O,
                     (long long)l->I, vnm_shape_str(W, s, sizeof s), (double)lambda);
        return NULL;
    }
    float *E = effective_dense(ctx, l, W);
    if (!E) return NULL;
    double sum = 0.0;
    for (int64_t k = 0; k < l->O * l->I; k++)
        if (!l->prev_mask[k]) sum += (double)E[k] * E[k];
    free(E);
    *(float *)out->data = (float)(0.5 * lambda * sum);
    vnm_tensor *in[3] = {l->A, l->B, W};
    vnm_node *node = vnm_tape_record(ctx, op, penalty_backward, out, 3, in);
    vnm_node_reads(node, VNM_READS_IN(0) | VNM_READS_IN(1) | VNM_READS_IN(2));
    if (node) {
        node->extra = l;
        node->farg[0] = lambda;
    }
    return out;
}
