/* train/task_vit_prune.c — how the ViT task's target linears (sparsity.targets) become V:N:M
 * sparse: the one-shot prune (scores, RIA calibration, permutation search, mask selection,
 * compression) and SR-STE's dynamic masks from the dense weights, frozen at the stage's end.
 *
 * The optimiser hand-over is the loop's: every linear turned sparse bumps params_version, and the
 * loop rebuilds the optimiser over the new parameter list (see train/trainer.c).
 */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "task_vit.h"

static bool matches_target(const vnm_recipe *r, const char *name)
{
    for (int64_t i = 0; i < r->sparsity.targets.n; i++)
        if (fnmatch(r->sparsity.targets.items[i], name, 0) == 0) return true;
    return false;
}

/* ---- one-shot prune ---- */

/* Forward passes over the first sparsity.calibration_batches training batches (dataset order,
 * no augmentation) with the RIA collector attached. */
static vnm_calib_collector *calibrate(vnm_task_vit_state *v)
{
    const vnm_recipe *r = v->env->r;
    vnm_ctx *ctx = v->env->ctx;
    vnm_calib_collector *c =
        vnm_calib_attach(ctx, (const char *const *)r->sparsity.targets.items,
                         (int)r->sparsity.targets.n);
    if (!c) return NULL;
    bool grad = vnm_ctx_set_grad_enabled(ctx, false), training = vnm_ctx_training(ctx);
    vnm_ctx_set_training(ctx, false);
    vnm_loader_config lc = vnm_loader_config_default();
    lc.batch = r->data.batch_size;
    lc.shuffle = lc.augment = lc.prefetch = false;
    lc.mean = VNM_FASHION_MNIST_MEAN;
    lc.std = VNM_FASHION_MNIST_STD;
    vnm_loader *ld = NULL;
    bool ok = vnm_loader_create(&v->train_ds, &lc, &ld, v->err, sizeof v->err) == VNM_OK;
    for (int64_t b = 0; ok && b < r->sparsity.calibration_batches; b++) {
        vnm_batch batch;
        ok = vnm_loader_next(ld, &batch, v->err, sizeof v->err) == VNM_OK;
        if (!ok) break;
        const vnm_dataset *ds = &v->train_ds;
        vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 4,
                                        VNM_SHAPE(batch.size, ds->channels, ds->height, ds->width),
                                        batch.images); // [B, C, H, W]
        ok = vnm_vit_forward(ctx, v->m, x, NULL) != NULL;
        vnm_ctx_reset_step(ctx);
    }
    vnm_loader_free(ld);
    vnm_ctx_set_training(ctx, training);
    vnm_ctx_set_grad_enabled(ctx, grad);
    if (!ok) {
        vnm_calib_detach(c);
        return NULL;
    }
    return c;
}

/* Replaces linear li by its V:N:M compression. `placeholder` builds only a valid structure of the
 * right pattern and shape (magnitude, no permutation) for a checkpoint load to overwrite. */
static vnm_status prune_linear(vnm_task_vit_state *v, int li, bool placeholder,
                               const vnm_calib_collector *c, double *score_total,
                               double *kept_before, double *kept_after)
{
    const vnm_recipe *r = v->env->r;
    vnm_ctx *ctx = v->env->ctx;
    vnm_vit_linear *l = v->m->linears[li];
    int64_t O = l->out, I = l->in;
    vnm_pattern p = r->sparsity.pattern;
    char name[VNM_VIT_NAME_MAX + 8];
    snprintf(name, sizeof name, "%s.weight", l->name);
    float *W = malloc((size_t)(O * I) * sizeof *W), *S = malloc((size_t)(O * I) * sizeof *S),
          *Sp = malloc((size_t)(O * I) * sizeof *Sp);
    uint8_t *mask = malloc((size_t)(O * I));
    double *rms = malloc((size_t)I * sizeof *rms);
    int32_t *po = malloc((size_t)O * sizeof *po), *pi = malloc((size_t)I * sizeof *pi);
    vnm_sparse_host h = {0};
    vnm_status rc = VNM_ERR_RUNTIME;
    snprintf(v->err, sizeof v->err, "out of memory pruning %s", name);
    if (!W || !S || !Sp || !mask || !rms || !po || !pi) goto done;
    if ((rc = vnm_tensor_to_host(ctx, l->weight, W))) {
        snprintf(v->err, sizeof v->err, "%s", vnm_ctx_error(ctx));
        goto done;
    }
    vnm_score_kind kind = placeholder ? VNM_SCORE_MAGNITUDE : r->sparsity.score;
    if (kind == VNM_SCORE_RIA) {
        const vnm_calib *cal = vnm_calib_find(c, name);
        if (!cal) {
            rc = VNM_ERR_RUNTIME;
            snprintf(v->err, sizeof v->err, "prune: no calibration statistics for %s", name);
            goto done;
        }
        vnm_calib_rms(cal, rms);
    }
    if ((rc = vnm_score_compute(kind, W, O, I, rms, 0.5, S, v->err, sizeof v->err))) goto done;
    bool permute = r->sparsity.permute && !placeholder;
    double kb = 0, ka = 0;
    if (permute) {
        vnm_permute_opts po_opts = {(int)r->sparsity.permute_rounds, 0, r->sparsity.selector};
        if ((rc = vnm_permute_search(p, S, O, I, &po_opts, po, pi, &kb, &ka, v->err,
                                     sizeof v->err)))
            goto done;
        for (int64_t o = 0; o < O; o++)
            for (int64_t j = 0; j < I; j++) Sp[o * I + j] = S[(int64_t)po[o] * I + pi[j]];
    } else {
        memcpy(Sp, S, (size_t)(O * I) * sizeof *S);
    }
    if ((rc = vnm_mask_select(p, r->sparsity.selector, Sp, O, I, mask, v->err, sizeof v->err)))
        goto done;
    if (!permute) kb = ka = vnm_mask_kept_score(mask, Sp, O * I);
    double total = 0;
    for (int64_t k = 0; k < O * I; k++) total += S[k];
    *score_total += total;
    *kept_before += kb;
    *kept_after += ka;
    if ((rc = vnm_sparse_compress(p, W, mask, O, I, permute ? po : NULL, permute ? pi : NULL, &h,
                                  v->err, sizeof v->err)))
        goto done;
    vnm_sparse_weight *sw = vnm_sparse_weight_new(ctx, &h, name);
    if (!sw) {
        rc = VNM_ERR_RUNTIME;
        snprintf(v->err, sizeof v->err, "%s", vnm_ctx_error(ctx));
        goto done;
    }
    if ((rc = vnm_vit_linear_set_sparse(l, sw, v->err, sizeof v->err))) {
        vnm_sparse_weight_free(sw);
        goto done;
    }
    v->params_version++;
    if (permute) {
        v->perm_in[li] = pi;
        pi = NULL;
    }
done:
    vnm_sparse_host_free(&h);
    free(W);
    free(S);
    free(Sp);
    free(mask);
    free(rms);
    free(po);
    free(pi);
    return rc;
}

int vnm_task_vit_prune_all(vnm_task_vit_state *v, bool placeholder)
{
    const vnm_recipe *r = v->env->r;
    vnm_ctx *ctx = v->env->ctx;
    vnm_calib_collector *c = NULL;
    if (!placeholder && r->sparsity.score == VNM_SCORE_RIA && !(c = calibrate(v)))
        return vnm_task_fail(v->env, 1, "prune: calibration failed: %s",
                             vnm_ctx_status(ctx) ? vnm_ctx_error(ctx) : v->err);
    double total = 0, before = 0, after = 0;
    int n = 0;
    for (int li = 0; li < v->m->n_linears; li++) {
        char name[VNM_VIT_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s.weight", v->m->linears[li]->name);
        if (v->m->linears[li]->sparse || !matches_target(r, name)) continue;
        if (prune_linear(v, li, placeholder, c, &total, &before, &after)) {
            vnm_calib_detach(c);
            return vnm_task_fail(v->env, 1, "prune %s: %s", name, v->err);
        }
        n++;
    }
    vnm_calib_detach(c);
    if (n == 0) return vnm_task_fail(v->env, 2, "sparsity.targets: no linear weight matches");
    if (!placeholder) {
        char pat[32];
        vnm_pattern_str(r->sparsity.pattern, pat, sizeof pat);
        vnm_task_say(v->env, "prune: %d linears to %s, kept score %.4f before permutation, "
                             "%.4f after (%+.2f%%)\n", n, pat, before / total, after / total,
                     before > 0 ? 100 * (after - before) / before : 0.0);
    }
    return 0;
}

/* ---- SR-STE: dynamic masks from the dense weights, frozen at the stage's end ---- */

int vnm_task_vit_srste_begin(vnm_task_vit_state *v, const vnm_recipe_stage *s)
{
    const vnm_recipe *r = v->env->r;
    vnm_ctx *ctx = v->env->ctx;
    int added = 0, n = 0;
    for (int li = 0; li < v->m->n_linears; li++) {
        vnm_vit_linear *l = v->m->linears[li];
        vnm_task_vit_srste *b = &v->srste[li];
        char name[VNM_VIT_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s.weight", l->name);
        if (l->sparse || !matches_target(r, name)) continue;
        n++;
        if (l->srste) continue;
        vnm_srste *sr = vnm_srste_new(ctx, l->weight, r->sparsity.pattern, r->sparsity.selector,
                                      s->srste.every, (float)s->srste.lambda_w);
        if (!sr)
            return vnm_task_fail(v->env, 2, "stage '%s': %s: %s", s->name, name,
                                 vnm_ctx_error(ctx));
        vnm_vit_linear_set_srste(l, sr);
        snprintf(b->mask_name, sizeof b->mask_name, "%s.srste_mask", name);
        snprintf(b->step_name, sizeof b->step_name, "%s.srste_mask_step", name);
        if (!b->mask) {
            b->mask = vnm_buffer_new(ctx, VNM_DTYPE_U8, 2, VNM_SHAPE(l->out, l->in),
                                     b->mask_name);
            b->step = vnm_buffer_new(ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(1), b->step_name);
            if (!b->mask || !b->step) return vnm_task_fail(v->env, 1, "%s", vnm_ctx_error(ctx));
        }
        added++;
    }
    if (n == 0) return vnm_task_fail(v->env, 2, "sparsity.targets: no dense linear weight matches");
    if (added > 0) {
        char pat[32];
        vnm_pattern_str(r->sparsity.pattern, pat, sizeof pat);
        vnm_task_say(v->env, "sparse_srste: %d linears to %s, masks from |W| every %lld steps, "
                             "lambda_w %g\n", added, pat, (long long)s->srste.every,
                     s->srste.lambda_w);
    }
    return 0;
}

int vnm_task_vit_srste_sync(vnm_task_vit_state *v, bool to_checkpoint)
{
    vnm_ctx *ctx = v->env->ctx;
    for (int li = 0; li < v->m->n_linears; li++) {
        vnm_srste *sr = v->m->linears[li]->srste;
        vnm_task_vit_srste *b = &v->srste[li];
        if (!sr) continue;
        int64_t step = vnm_srste_mask_step(sr);
        if (to_checkpoint) {
            const uint8_t *mask = vnm_srste_mask(sr);
            if ((mask && vnm_tensor_from_host(ctx, b->mask, mask)) ||
                vnm_tensor_from_host(ctx, b->step, &step))
                return vnm_task_fail(v->env, 1, "%s", vnm_ctx_error(ctx));
            continue;
        }
        if (vnm_tensor_to_host(ctx, b->step, &step))
            return vnm_task_fail(v->env, 1, "%s", vnm_ctx_error(ctx));
        if (step < 0) continue; /* saved before its first mask */
        uint8_t *mask = malloc((size_t)vnm_numel(b->mask));
        int rc = !mask ? vnm_task_fail(v->env, 1, "out of memory") : 0;
        if (!rc && vnm_tensor_to_host(ctx, b->mask, mask))
            rc = vnm_task_fail(v->env, 1, "%s", vnm_ctx_error(ctx));
        if (!rc && vnm_srste_set_mask(sr, mask, step, v->err, sizeof v->err))
            rc = vnm_task_fail(v->env, 2, "%s: %s: %s", v->env->cmd, b->mask_name, v->err);
        free(mask);
        if (rc) return rc;
    }
    return 0;
}

int vnm_task_vit_srste_freeze_all(vnm_task_vit_state *v)
{
    vnm_ctx *ctx = v->env->ctx;
    int n = 0;
    for (int li = 0; li < v->m->n_linears; li++) {
        vnm_vit_linear *l = v->m->linears[li];
        if (!l->srste) continue;
        char name[VNM_VIT_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s.weight", l->name);
        vnm_sparse_weight *sw = vnm_srste_freeze(ctx, l->srste, name);
        if (!sw) return vnm_task_fail(v->env, 1, "freeze %s: %s", name, vnm_ctx_error(ctx));
        if (vnm_vit_linear_set_sparse(l, sw, v->err, sizeof v->err)) {
            vnm_sparse_weight_free(sw);
            return vnm_task_fail(v->env, 1, "freeze %s: %s", name, v->err);
        }
        v->params_version++;
        vnm_vit_linear_set_srste(l, NULL);
        n++;
    }
    vnm_task_say(v->env, "sparse_srste: %d masks frozen; training continues mask-fixed\n", n);
    return 0;
}
