/* train/task_vit.c — the ViT / DeiT image classifier on Fashion-MNIST as a task of the training
 * loop (vnm_task_vit, train/task.h): the data sets and loaders, the model built from the recipe,
 * a training step's forward and cross-entropy, evaluation (loss and top-1), the model's entries
 * in checkpoints, and the stage kinds dense, prune, sparse_fixed and sparse_srste (the pruning
 * itself is train/task_vit_prune.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "task_vit.h"

/* ---- recipe checks ---- */

static int vit_check(vnm_task_env *env)
{
    if (env->r->data.dataset != VNM_RECIPE_DATASET_FASHION_MNIST)
        return vnm_task_fail(env, 2, "data.dataset: the trainer reads fashion_mnist only");
    if (env->r->lora.present)
        return vnm_task_fail(env, 2, "lora: LoRA training is not implemented yet");
    return 0;
}

static int vit_check_stage(vnm_task_env *env, int64_t i)
{
    const vnm_recipe_stage *s = &env->r->stages[i];
    vnm_recipe_stage_kind k = s->kind;
    if (k != VNM_RECIPE_STAGE_DENSE && k != VNM_RECIPE_STAGE_PRUNE &&
        k != VNM_RECIPE_STAGE_SPARSE_FIXED && k != VNM_RECIPE_STAGE_SPARSE_SRSTE)
        return vnm_task_fail(env, 2, "stages[%lld] '%s': kind %s is not implemented yet (dense, "
                                     "prune, sparse_fixed, sparse_srste are)", (long long)i,
                             s->name, vnm_task_stage_kind(k));
    if (env->r->run.device == VNM_RECIPE_DEVICE_CUDA && k == VNM_RECIPE_STAGE_SPARSE_SRSTE)
        return vnm_task_fail(env, 2, "stages[%lld] '%s': kind sparse_srste needs run.device: cpu "
                                     "(SR-STE runs on the cpu backend only; cuda runs dense, "
                                     "prune and sparse_fixed stages)", (long long)i, s->name);
    return 0;
}

/* ---- set-up ---- */

static int setup_data(vnm_task_vit_state *v)
{
    vnm_task_env *env = v->env;
    const vnm_recipe *r = env->r;
    /* The schema's default path is a project-relative folder; fall back to the Debian package's
     * location when it is absent so a recipe without data.path runs on a stock machine. */
    const char *dir = r->data.path;
    struct stat sb;
    if (!strcmp(dir, "data/fashion_mnist") && stat(dir, &sb) != 0) dir = VNM_FASHION_MNIST_DIR;
    /* a read-only restore (`vnm eval`) needs the test split only */
    if ((!env->read_only &&
         vnm_fashion_mnist_load(dir, true, &v->train_ds, v->err, sizeof v->err)) ||
        vnm_fashion_mnist_load(dir, false, &v->test_ds, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "data.path: %s", v->err);
    const vnm_dataset *ds = &v->test_ds;
    if (r->model.in_chans != ds->channels || r->model.image_size != ds->height ||
        r->model.image_size != ds->width)
        return vnm_task_fail(env, 2, "model: in_chans %lld and image_size %lld must match the "
                                     "data (%d channels, %d×%d)", (long long)r->model.in_chans,
                             (long long)r->model.image_size, ds->channels, ds->height,
                             ds->width);
    if (r->model.num_classes != ds->classes)
        return vnm_task_fail(env, 2, "model.num_classes: %lld, the data has %d classes",
                             (long long)r->model.num_classes, ds->classes);
    vnm_loader_config lc = vnm_loader_config_default();
    lc.batch = r->data.batch_size;
    lc.seed = (uint64_t)r->run.seed;
    lc.shuffle = true;
    lc.drop_last = true; /* every step sees a full batch */
    lc.pad = (int)r->data.augment.crop_padding;
    lc.augment = r->data.augment.flip || lc.pad > 0;
    lc.mean = VNM_FASHION_MNIST_MEAN;
    lc.std = VNM_FASHION_MNIST_STD;
    lc.prefetch = r->data.workers > 0;
    if (!env->read_only &&
        vnm_loader_create(&v->train_ds, &lc, &v->train_ld, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "data: %s", v->err);
    vnm_loader_config ec = lc;
    ec.batch = r->data.val_batch_size > 0 ? r->data.val_batch_size : r->data.batch_size;
    ec.shuffle = false;
    ec.drop_last = false;
    ec.augment = false;
    ec.prefetch = false;
    if (vnm_loader_create(&v->test_ds, &ec, &v->test_ld, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "data: %s", v->err);
    return 0;
}

vnm_status vnm_task_vit_config(const vnm_recipe *r, vnm_vit_config *cfg, char *err,
                               size_t err_len)
{
    static const char *const sizes[] = {"tiny", "small", "base", "tiny"};
    vnm_status st = vnm_vit_config_preset(sizes[r->model.size], cfg, err, err_len);
    if (st) return st;
    if (r->model.embed_dim > 0) cfg->embed_dim = r->model.embed_dim;
    if (r->model.depth > 0) cfg->depth = r->model.depth;
    if (r->model.heads > 0) cfg->num_heads = r->model.heads;
    cfg->mlp_ratio = r->model.mlp_ratio;
    cfg->patch = r->model.patch;
    cfg->img_size = r->model.image_size;
    cfg->in_chans = r->model.in_chans;
    cfg->num_classes = r->model.num_classes;
    cfg->drop_path_rate = (float)r->model.drop_path;
    return VNM_OK;
}

static int setup_model(vnm_task_vit_state *v)
{
    vnm_task_env *env = v->env;
    const vnm_recipe *r = env->r;
    vnm_vit_config cfg;
    if (vnm_task_vit_config(r, &cfg, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "model.size: %s", v->err);
    v->m = vnm_vit_new(env->ctx, &cfg);
    if (!v->m) return vnm_task_fail(env, 2, "model: %s", vnm_ctx_error(env->ctx));
    vnm_vit_set_checkpointing(v->m, r->model.activation_checkpointing);
    if (r->model.weights &&
        vnm_vit_load(env->ctx, v->m, r->model.weights, NULL, 0, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "model.weights: %s", v->err);
    v->perm_in = calloc((size_t)v->m->n_linears, sizeof *v->perm_in);
    v->srste = calloc((size_t)v->m->n_linears, sizeof *v->srste);
    if (!v->perm_in || !v->srste) return vnm_task_fail(env, 1, "out of memory");
    return 0;
}

static int vit_setup(vnm_task_env *env, void **st)
{
    vnm_task_vit_state *v = calloc(1, sizeof *v);
    *st = v;
    if (!v) return vnm_task_fail(env, 1, "out of memory");
    v->env = env;
    int rc = env->no_data ? 0 : setup_data(v);
    return rc ? rc : setup_model(v);
}

static void vit_free(void *st)
{
    vnm_task_vit_state *v = st;
    if (!v) return;
    if (v->m && v->perm_in)
        for (int i = 0; i < v->m->n_linears; i++) free(v->perm_in[i]);
    free(v->perm_in);
    free(v->srste);
    vnm_vit_free(v->m);
    vnm_loader_free(v->train_ld);
    vnm_loader_free(v->test_ld);
    vnm_dataset_free(&v->train_ds);
    vnm_dataset_free(&v->test_ds);
    free(v);
}

static int64_t vit_numel(const void *st)
{
    return vnm_vit_numel(((const vnm_task_vit_state *)st)->m);
}

/* ---- data ---- */

static int64_t vit_batches_per_epoch(const void *st)
{
    return vnm_loader_batches_per_epoch(((const vnm_task_vit_state *)st)->train_ld);
}

static vnm_sampler_pos vit_get_pos(const void *st)
{
    const vnm_task_vit_state *v = st;
    return v->train_ld ? vnm_loader_get_pos(v->train_ld) : (vnm_sampler_pos){0, 0};
}

static int vit_set_pos(void *st, vnm_sampler_pos pos)
{
    vnm_task_vit_state *v = st;
    if (v->train_ld && vnm_loader_set_pos(v->train_ld, pos, v->err, sizeof v->err))
        return vnm_task_fail(v->env, 2, "%s: %s", v->env->cmd, v->err);
    return 0;
}

/* ---- steps and evaluation ---- */

static int vit_step_begin(void *st, int64_t step)
{
    vnm_vit_set_step(((vnm_task_vit_state *)st)->m, step);
    return 0;
}

/* Images of a batch as the model takes them. */
static vnm_tensor *batch_images(vnm_ctx *ctx, const vnm_dataset *ds, const vnm_batch *b)
{
    return vnm_tensor_from(ctx, VNM_DTYPE_F32, 4,
                           VNM_SHAPE(b->size, ds->channels, ds->height, ds->width),
                           b->images); // [B, C, H, W]
}

static int vit_train_forward(void *st, vnm_tensor **loss, int64_t *items)
{
    vnm_task_vit_state *v = st;
    vnm_ctx *ctx = v->env->ctx;
    vnm_batch batch;
    if (vnm_loader_next(v->train_ld, &batch, v->err, sizeof v->err))
        return vnm_task_fail(v->env, 1, "data: %s", v->err);
    vnm_tensor *x = batch_images(ctx, &v->train_ds, &batch); // [B, C, H, W]
    vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(batch.size), batch.labels);
    vnm_tensor *logits = vnm_vit_forward(ctx, v->m, x, NULL); // [B, classes]
    *loss = vnm_cross_entropy(ctx, logits, y, -100, (float)v->env->r->loss.label_smoothing);
    *items = batch.size;
    return 0;
}

static int vit_evaluate(void *st, int64_t step, vnm_task_eval *out)
{
    vnm_task_vit_state *v = st;
    vnm_ctx *ctx = v->env->ctx;
    const vnm_recipe *r = v->env->r;
    vnm_vit_set_step(v->m, step);
    bool grad = vnm_ctx_set_grad_enabled(ctx, false);
    vnm_ctx_set_training(ctx, false);
    vnm_loader_set_pos(v->test_ld, (vnm_sampler_pos){0, 0}, NULL, 0);
    int64_t nb = vnm_loader_batches_per_epoch(v->test_ld), seen = 0, correct = 0;
    int64_t C = r->model.num_classes;
    double loss_sum = 0;
    int64_t B = r->data.val_batch_size > 0 ? r->data.val_batch_size : r->data.batch_size;
    float *logits = malloc((size_t)(B * C) * sizeof *logits); // [B, classes]
    int rc = logits ? 0 : vnm_task_fail(v->env, 1, "out of memory");
    for (int64_t b = 0; !rc && b < nb; b++) {
        vnm_batch batch;
        if (vnm_loader_next(v->test_ld, &batch, v->err, sizeof v->err)) {
            rc = vnm_task_fail(v->env, 1, "eval: %s", v->err);
            break;
        }
        vnm_tensor *x = batch_images(ctx, &v->test_ds, &batch); // [B, C, H, W]
        vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(batch.size),
                                        batch.labels); // [B]
        vnm_tensor *out_logits = vnm_vit_forward(ctx, v->m, x, NULL); // [B, classes]
        vnm_tensor *loss = vnm_cross_entropy(ctx, out_logits, y, -100, 0.0f);
        if (!loss || vnm_tensor_to_host(ctx, out_logits, logits)) {
            rc = vnm_task_fail(v->env, 1, "eval: %s", vnm_ctx_error(ctx));
            break;
        }
        loss_sum += (double)vnm_item(ctx, loss) * (double)batch.size;
        for (int64_t i = 0; i < batch.size; i++) {
            int64_t best = 0;
            for (int64_t k = 1; k < C; k++)
                if (logits[i * C + k] > logits[i * C + best]) best = k;
            correct += best == batch.labels[i];
        }
        seen += batch.size;
        vnm_ctx_reset_step(ctx);
    }
    free(logits);
    vnm_ctx_set_training(ctx, true);
    vnm_ctx_set_grad_enabled(ctx, grad);
    if (rc) return rc;
    *out = (vnm_task_eval){.loss = loss_sum / (double)seen,
                           .top1 = (double)correct / (double)seen,
                           .ppl = NAN,
                           .items = seen};
    return 0;
}

/* ---- parameters and checkpoint entries ---- */

static int vit_n_params(const void *st)
{
    return vnm_vit_param_count(((const vnm_task_vit_state *)st)->m);
}

static vnm_tensor *vit_param(const void *st, int i)
{
    return vnm_vit_param_at(((const vnm_task_vit_state *)st)->m, i).tensor;
}

static uint64_t vit_params_version(const void *st)
{
    return ((const vnm_task_vit_state *)st)->params_version;
}

/* Every parameter, and two entries per SR-STE linear. */
static int vit_state_capacity(const void *st)
{
    const vnm_task_vit_state *v = st;
    return vnm_vit_param_count(v->m) + 2 * v->m->n_linears;
}

static void vit_state_entries(const void *st, vnm_state_tensor *dense, int *n_dense,
                              vnm_state_sparse *sparse, int *n_sparse)
{
    const vnm_task_vit_state *v = st;
    const vnm_vit *m = v->m;
    int nd = 0, ns = 0;
    for (int i = 0; i < vnm_vit_param_count(m); i++) {
        vnm_vit_param p = vnm_vit_param_at(m, i);
        if (p.linear && p.linear->sparse) {
            int li = 0;
            while (m->linears[li] != p.linear) li++;
            sparse[ns++] = (vnm_state_sparse){m->params[i].name, p.linear->sparse, v->perm_in[li],
                                              v->env->r->sparsity.score == VNM_SCORE_RIA
                                                  ? "ria"
                                                  : "magnitude"};
        } else {
            dense[nd++] = (vnm_state_tensor){m->params[i].name, p.tensor};
        }
    }
    for (int li = 0; li < m->n_linears; li++)
        if (m->linears[li]->srste) {
            dense[nd++] = (vnm_state_tensor){v->srste[li].mask_name, v->srste[li].mask};
            dense[nd++] = (vnm_state_tensor){v->srste[li].step_name, v->srste[li].step};
        }
    *n_dense = nd;
    *n_sparse = ns;
}

static int vit_state_saving(void *st)
{
    return vnm_task_vit_srste_sync(st, true);
}

static int vit_state_loaded(void *st)
{
    return vnm_task_vit_srste_sync(st, false);
}

/* ---- stages ---- */

static int vit_stage_begin(void *st, const vnm_recipe_stage *s)
{
    return s->kind == VNM_RECIPE_STAGE_SPARSE_SRSTE ? vnm_task_vit_srste_begin(st, s) : 0;
}

static int vit_stage_end(void *st, const vnm_recipe_stage *s)
{
    return s->kind == VNM_RECIPE_STAGE_SPARSE_SRSTE ? vnm_task_vit_srste_freeze_all(st) : 0;
}

static int vit_prune(void *st)
{
    return vnm_task_vit_prune_all(st, false);
}

static int vit_resume(void *st, int64_t stage_index, int64_t stage_step, vnm_ckpt_reader *rd)
{
    vnm_task_vit_state *v = st;
    const vnm_recipe *r = v->env->r;
    /* the layers as the checkpoint's stage has them: sparse after a prune or a finished SR-STE
     * stage, with SR-STE masks inside an SR-STE stage */
    bool pruned = false;
    for (int64_t i = 0; i < stage_index && i < r->n_stages; i++)
        pruned |= r->stages[i].kind == VNM_RECIPE_STAGE_PRUNE ||
                  r->stages[i].kind == VNM_RECIPE_STAGE_SPARSE_SRSTE;
    const vnm_recipe_stage *cur = stage_index < r->n_stages ? &r->stages[stage_index] : NULL;
    int rc = 0;
    if (pruned) rc = vnm_task_vit_prune_all(v, true);
    else if (cur && cur->kind == VNM_RECIPE_STAGE_SPARSE_SRSTE && stage_step > 0)
        rc = vnm_task_vit_srste_begin(v, cur);
    for (int li = 0; !rc && li < v->m->n_linears; li++) {
        vnm_vit_linear *l = v->m->linears[li];
        char ds[VNM_VIT_NAME_MAX + 32];
        vnm_ckpt_dtype dt;
        int nd;
        int64_t shape[VNM_CKPT_MAX_DIMS];
        snprintf(ds, sizeof ds, "/sparse/%s.weight/perm_in", l->name);
        if (!l->sparse || vnm_ckpt_shape(rd, ds, &dt, &nd, shape, NULL, 0)) continue;
        v->perm_in[li] = malloc((size_t)l->in * sizeof *v->perm_in[li]);
        if (!v->perm_in[li] ||
            vnm_ckpt_read(rd, ds, VNM_CKPT_I32, 1, VNM_SHAPE(l->in), v->perm_in[li], v->err,
                          sizeof v->err))
            rc = vnm_task_fail(v->env, 2, "%s: %s", v->env->cmd, v->err);
    }
    return rc;
}

static void vit_restored(const void *st, vnm_restored *out)
{
    const vnm_task_vit_state *v = st;
    out->model = v->m;
    out->llama = NULL;
    out->perm_in = v->perm_in;
}

const vnm_task_iface vnm_task_vit = {
    .name = "vit",
    .unit = "img/s",
    .metrics = VNM_TASK_TOP1,
    .check = vit_check,
    .check_stage = vit_check_stage,
    .setup = vit_setup,
    .free = vit_free,
    .numel = vit_numel,
    .batches_per_epoch = vit_batches_per_epoch,
    .get_pos = vit_get_pos,
    .set_pos = vit_set_pos,
    .step_begin = vit_step_begin,
    .train_forward = vit_train_forward,
    .extra_loss = NULL,
    .evaluate = vit_evaluate,
    .n_params = vit_n_params,
    .param = vit_param,
    .params_version = vit_params_version,
    .state_capacity = vit_state_capacity,
    .state_entries = vit_state_entries,
    .state_saving = vit_state_saving,
    .state_loaded = vit_state_loaded,
    .stage_begin = vit_stage_begin,
    .stage_end = vit_stage_end,
    .prune = vit_prune,
    .resume = vit_resume,
    .restored = vit_restored,
};
