/* train/task_llama.c — the LLaMA causal language model on packed token shards as a task of the
 * training loop (vnm_task_llama, train/task.h), with the three-stage LoRA schedule of METHOD §6:
 *
 * - dense: every parameter trains (pre-training or full fine-tuning).
 * - lora_dense: at the first LoRA stage the base is frozen (lora.base_dtype: bf16 halves its
 *   memory), adapters are attached by PEFT's rule (lora.targets) and only they train.
 * - lora_sparse_dynamic: every stage lora.every steps, from the stage's first step on, each
 *   adapted linear named by sparsity.targets merges, re-draws its adapters and re-prunes to
 *   sparsity.pattern with sparsity.score (RIA from sparsity.calibration_batches training batches
 *   in order); the adapters' optimiser state restarts. The regulariser lora.lambda acts on the
 *   entries the previous mask pruned (the logged training loss includes it). The first mask
 *   choice is evaluated at once and logged as "<stage>/one-shot": the model pruned without
 *   training.
 * - lora_sparse_fixed: the last masks stay; adapters train on the masked effective weight.
 * Every stage runs on any device: the masked stages use the compressed form and the sparse
 * kernels on the CPU, elsewhere the dense form (sparse/sparse.h, vnm_lora_masked_dense).
 *
 * Checkpoints hold the whole model (the base is trained or merged here, so it is not the file it
 * came from), the adapters, and per masked linear "<module>.lora_mask" (u8 [O, I]),
 * "<module>.lora_prev_mask" (u8 [O, I]) and "<module>.lora_mask_info" (i64 [2]: the step the
 * mask was chosen at, -1 before any; whether a previous mask exists), so resume inside any stage
 * is exact. Evaluation: mean token cross-entropy over every window of the val split, and its
 * exponential, the perplexity.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../data/data.h"
#include "models/llama.h"
#include "peft.h"
#include "task.h"

#include <fnmatch.h>

typedef struct {
    char mask_name[VNM_LLAMA_NAME_MAX + 24], prev_name[VNM_LLAMA_NAME_MAX + 24];
    char info_name[VNM_LLAMA_NAME_MAX + 24];
    vnm_tensor *mask, *prev, *info; /* checkpoint images: u8 [O, I], u8 [O, I], i64 [2] */
} mask_buffers;

typedef struct {
    vnm_task_env *env;
    vnm_llama *m;
    vnm_token_dataset train_ds, val_ds;
    vnm_token_loader *train_ld, *val_ld;
    bool lora;                  /* the base is frozen and the adapters train */
    mask_buffers *masks;        /* [n_linears]; mask.mask NULL for linears that are not pruned */
    vnm_tensor **params;        /* the trainable tensors */
    int n_params;
    uint64_t params_version;
    const vnm_recipe_stage *stage; /* the training stage in progress, NULL between stages */
    char err[1024];
} llama_state;

static bool is_lora_kind(vnm_recipe_stage_kind k)
{
    return k == VNM_RECIPE_STAGE_LORA_DENSE || k == VNM_RECIPE_STAGE_LORA_SPARSE_DYNAMIC ||
           k == VNM_RECIPE_STAGE_LORA_SPARSE_FIXED;
}

/* ---- recipe checks ---- */

static int llama_check(vnm_task_env *env)
{
    if (env->r->data.dataset != VNM_RECIPE_DATASET_TOKENS)
        return vnm_task_fail(env, 2, "data.dataset: llama trains on token shards (tokens; "
                                     "`vnm tokenize` writes them)");
    return 0;
}

static int llama_check_stage(vnm_task_env *env, int64_t i)
{
    const vnm_recipe *r = env->r;
    const vnm_recipe_stage *s = &r->stages[i];
    vnm_recipe_stage_kind k = s->kind;
    if (k != VNM_RECIPE_STAGE_DENSE && !is_lora_kind(k))
        return vnm_task_fail(env, 2, "stages[%lld] '%s': kind %s is not implemented for llama "
                                     "(dense, lora_dense, lora_sparse_dynamic, lora_sparse_fixed "
                                     "are)", (long long)i, s->name, vnm_task_stage_kind(k));
    for (int64_t j = 0; k == VNM_RECIPE_STAGE_DENSE && j < i; j++)
        if (is_lora_kind(r->stages[j].kind))
            return vnm_task_fail(env, 2, "stages[%lld] '%s': a dense stage cannot follow the "
                                         "LoRA stage '%s' (the base is frozen from then on)",
                                 (long long)i, s->name, r->stages[j].name);
    return 0;
}

/* ---- set-up ---- */

static int setup_data(llama_state *v)
{
    vnm_task_env *env = v->env;
    const vnm_recipe *r = env->r;
    if ((!env->read_only &&
         vnm_token_dataset_open(r->data.path, "train", &v->train_ds, v->err, sizeof v->err)) ||
        vnm_token_dataset_open(r->data.path, "val", &v->val_ds, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "data.path: %s", v->err);
    vnm_token_loader_config tc = vnm_token_loader_config_default();
    tc.seq_len = r->data.seq_len;
    tc.batch = r->data.batch_size;
    tc.seed = (uint64_t)r->run.seed;
    tc.shuffle = true;
    tc.drop_last = true; /* every step sees a full batch */
    if (!env->read_only &&
        vnm_token_loader_create(&v->train_ds, &tc, &v->train_ld, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "data: %s", v->err);
    vnm_token_loader_config ec = tc;
    ec.batch = r->data.val_batch_size > 0 ? r->data.val_batch_size : r->data.batch_size;
    ec.shuffle = false;
    ec.drop_last = false;
    if (vnm_token_loader_create(&v->val_ds, &ec, &v->val_ld, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "data: %s", v->err);
    return 0;
}

/* The model config: model.config, or the recipe's dims (vocab and context from the data). */
static int model_config(llama_state *v, vnm_llama_config *c)
{
    const vnm_recipe *r = v->env->r;
    if (r->model.config) {
        if (vnm_llama_config_load(r->model.config, c, v->err, sizeof v->err))
            return vnm_task_fail(v->env, 2, "model.config: %s", v->err);
    } else {
        *c = vnm_llama_config_default();
        c->hidden_size = r->model.embed_dim;
        c->num_hidden_layers = r->model.depth;
        c->num_attention_heads = r->model.heads;
        c->num_key_value_heads = r->model.kv_heads;
        c->head_dim = r->model.embed_dim / r->model.heads;
        c->intermediate_size = llround(r->model.mlp_ratio * (double)r->model.embed_dim);
        c->rope_theta = r->model.rope_theta;
        c->tie_word_embeddings = r->model.tie_embeddings;
        c->rms_norm_eps = 1e-5;
        c->vocab_size = r->model.vocab_size;
        c->max_position_embeddings = r->model.max_positions;
        const vnm_token_dataset *ds = v->val_ds.n ? &v->val_ds : &v->train_ds;
        if (c->vocab_size == 0) c->vocab_size = ds->vocab_size;
        if (c->max_position_embeddings == 0) c->max_position_embeddings = r->data.seq_len;
        c->bos_token_id = -1;
        c->n_eos_token_ids = ds->eos_id != VNM_TOKENS_NO_EOS;
        c->eos_token_ids[0] = ds->eos_id;
        if (vnm_llama_config_check(c, v->err, sizeof v->err))
            return vnm_task_fail(v->env, 2, "model: %s", v->err);
    }
    if (c->vocab_size < (int64_t)v->val_ds.vocab_size)
        return vnm_task_fail(v->env, 2, "model: vocab_size %lld is smaller than the token data's "
                                        "%u (%s)", (long long)c->vocab_size, v->val_ds.vocab_size,
                             v->env->r->data.path);
    if (c->max_position_embeddings < v->env->r->data.seq_len)
        return vnm_task_fail(v->env, 2, "data.seq_len: %lld exceeds the model's context of %lld "
                                        "positions", (long long)v->env->r->data.seq_len,
                             (long long)c->max_position_embeddings);
    return 0;
}

/* The trainable tensors: the model's that require grad, then the adapters. */
static int collect_params(llama_state *v)
{
    vnm_llama *m = v->m;
    free(v->params);
    v->params = malloc((size_t)(vnm_llama_param_count(m) + 2 * m->n_linears) * sizeof *v->params);
    if (!v->params) return vnm_task_fail(v->env, 1, "out of memory");
    int n = 0;
    for (int i = 0; i < vnm_llama_param_count(m); i++) {
        vnm_tensor *t = vnm_llama_param_at(m, i).tensor;
        if (t->requires_grad) v->params[n++] = t;
    }
    for (int i = 0; i < m->n_linears; i++)
        if (m->linears[i]->lora) {
            v->params[n++] = m->linears[i]->lora->A;
            v->params[n++] = m->linears[i]->lora->B;
        }
    v->n_params = n;
    v->params_version++;
    return 0;
}

static int setup_model(llama_state *v)
{
    vnm_llama_config c;
    int rc = model_config(v, &c);
    if (rc) return rc;
    /* a run whose first training stage is a LoRA stage never trains the base: it is built
     * frozen, so the weights load straight into base_dtype and no f32 copy is ever made */
    const vnm_recipe *r = v->env->r;
    const char *w = r->model.weights;
    const vnm_recipe_stage *first = NULL;
    for (int64_t i = 0; !first && i < r->n_stages; i++)
        if (r->stages[i].kind != VNM_RECIPE_STAGE_PRUNE) first = &r->stages[i];
    vnm_llama_options o = {
        .skip_init = w != NULL,
        .frozen = first && is_lora_kind(first->kind),
        .base_dtype = r->lora.base_dtype == VNM_RECIPE_PRECISION_BF16 ? VNM_DTYPE_BF16
                                                                      : VNM_DTYPE_F32,
        .freeze_norms = true,
    };
    v->m = vnm_llama_new(v->env->ctx, &c, &o);
    if (!v->m) return vnm_task_fail(v->env, 2, "model: %s", vnm_ctx_error(v->env->ctx));
    vnm_llama_set_checkpointing(v->m, r->model.activation_checkpointing);
    bool masked = false;
    for (int64_t i = 0; i < r->n_stages; i++)
        masked |= r->stages[i].kind == VNM_RECIPE_STAGE_LORA_SPARSE_DYNAMIC ||
                  r->stages[i].kind == VNM_RECIPE_STAGE_LORA_SPARSE_FIXED;
    if (masked && r->run.device != VNM_RECIPE_DEVICE_CPU && !r->model.activation_checkpointing)
        vnm_task_say(v->env, "note: on cuda the masked LoRA stages form every layer's effective "
                             "weights as dense f32 matrices until backward; "
                             "model.activation_checkpointing: true keeps one layer's at a time\n");
    if (w && vnm_llama_load(v->env->ctx, v->m, w, v->err, sizeof v->err))
        return vnm_task_fail(v->env, 2, "model.weights: %s", v->err);
    v->masks = calloc((size_t)v->m->n_linears, sizeof *v->masks);
    if (!v->masks) return vnm_task_fail(v->env, 1, "out of memory");
    /* a lora.targets typo is reported now, not after the stages before the first LoRA stage */
    bool lora_stage = false;
    for (int64_t i = 0; i < r->n_stages; i++) lora_stage |= is_lora_kind(r->stages[i].kind);
    if (lora_stage && vnm_peft_check_targets(v->m, (const char *const *)r->lora.targets.items,
                                             (int)r->lora.targets.n, v->err, sizeof v->err))
        return vnm_task_fail(v->env, 2, "%s", v->err);
    return collect_params(v);
}

static int llama_setup(vnm_task_env *env, void **st)
{
    llama_state *v = calloc(1, sizeof *v);
    *st = v;
    if (!v) return vnm_task_fail(env, 1, "out of memory");
    v->env = env;
    int rc = 0;
    if (!env->no_data) rc = setup_data(v);
    /* without data (`vnm export`), a model sized from the data still needs the val split's
     * header */
    else if ((env->r->model.vocab_size == 0 && !env->r->model.config) &&
             vnm_token_dataset_open(env->r->data.path, "val", &v->val_ds, v->err, sizeof v->err))
        rc = vnm_task_fail(env, 2, "model.vocab_size 0 takes the vocabulary of the token data, "
                                   "which cannot be read (%s); give model.vocab_size=N", v->err);
    return rc ? rc : setup_model(v);
}

static void llama_free(void *st)
{
    llama_state *v = st;
    if (!v) return;
    vnm_llama_free(v->m);
    vnm_token_loader_free(v->train_ld);
    vnm_token_loader_free(v->val_ld);
    vnm_token_dataset_close(&v->train_ds);
    vnm_token_dataset_close(&v->val_ds);
    free(v->masks);
    free(v->params);
    free(v);
}

static int64_t llama_numel(const void *st) { return vnm_llama_numel(((const llama_state *)st)->m); }

/* ---- data ---- */

static int64_t llama_batches_per_epoch(const void *st)
{
    return vnm_token_loader_batches_per_epoch(((const llama_state *)st)->train_ld);
}

static vnm_sampler_pos llama_get_pos(const void *st)
{
    const llama_state *v = st;
    return v->train_ld ? vnm_token_loader_get_pos(v->train_ld) : (vnm_sampler_pos){0, 0};
}

static int llama_set_pos(void *st, vnm_sampler_pos pos)
{
    llama_state *v = st;
    if (v->train_ld && vnm_token_loader_set_pos(v->train_ld, pos, v->err, sizeof v->err))
        return vnm_task_fail(v->env, 2, "%s: %s", v->env->cmd, v->err);
    return 0;
}

/* ---- LoRA: entering the adapter stages, masks ---- */

static bool is_sparsity_target(const vnm_recipe *r, const char *weight_name)
{
    for (int64_t i = 0; i < r->sparsity.targets.n; i++)
        if (fnmatch(r->sparsity.targets.items[i], weight_name, 0) == 0) return true;
    return false;
}

/* Freezes the base, attaches the adapters and, when the recipe has a sparsity section, the
 * mask buffers of the adapted linears it targets. Once per run. */
static int enter_lora(llama_state *v)
{
    vnm_task_env *env = v->env;
    const vnm_recipe *r = env->r;
    vnm_ctx *ctx = env->ctx;
    if (v->lora) return 0;
    vnm_dtype dt = r->lora.base_dtype == VNM_RECIPE_PRECISION_BF16 ? VNM_DTYPE_BF16
                                                                   : VNM_DTYPE_F32;
    if (vnm_llama_freeze_base(ctx, v->m, dt, true)) /* nothing to do when built frozen */
        return vnm_task_fail(env, 2, "lora.base_dtype: %s", vnm_ctx_error(ctx));
    vnm_lora_config lc = {r->lora.rank, r->lora.alpha, r->lora.dropout, r->lora.rslora};
    int n = 0;
    if (vnm_peft_attach(ctx, v->m, &lc, (const char *const *)r->lora.targets.items,
                        (int)r->lora.targets.n, &n, v->err, sizeof v->err))
        return vnm_task_fail(env, 2, "%s", v->err);
    int masked = 0;
    for (int i = 0; r->sparsity.present && i < v->m->n_linears; i++) {
        vnm_llama_linear *l = v->m->linears[i];
        mask_buffers *b = &v->masks[i];
        char wname[VNM_LLAMA_NAME_MAX + 8];
        snprintf(wname, sizeof wname, "%s.weight", l->name);
        if (!is_sparsity_target(r, wname)) continue;
        if (!l->lora)
            return vnm_task_fail(env, 2, "sparsity.targets: '%s' has no adapter (lora.targets): "
                                         "the LoRA schedule prunes adapted linears only", wname);
        snprintf(b->mask_name, sizeof b->mask_name, "%s.lora_mask", l->name);
        snprintf(b->prev_name, sizeof b->prev_name, "%s.lora_prev_mask", l->name);
        snprintf(b->info_name, sizeof b->info_name, "%s.lora_mask_info", l->name);
        b->mask = vnm_buffer_new(ctx, VNM_DTYPE_U8, 2, VNM_SHAPE(l->out, l->in), b->mask_name);
        b->prev = vnm_buffer_new(ctx, VNM_DTYPE_U8, 2, VNM_SHAPE(l->out, l->in), b->prev_name);
        b->info = vnm_buffer_new(ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(2), b->info_name);
        if (!b->mask || !b->prev || !b->info)
            return vnm_task_fail(env, 1, "%s", vnm_ctx_error(ctx));
        masked++;
    }
    if (r->sparsity.present && masked == 0)
        return vnm_task_fail(env, 2, "sparsity.targets: no adapted linear weight matches "
                                     "(names look like 'model.layers.0.mlp.up_proj.weight')");
    v->lora = true;
    vnm_task_say(env, "lora: base frozen (%s), %d adapters of rank %lld, %d of them to be "
                      "pruned\n", vnm_dtype_name(dt), n, (long long)r->lora.rank, masked);
    return collect_params(v);
}

/* Forward passes over the first calibration_batches training windows (in order) with the RIA
 * collector attached; NULL with the message in env->msg. */
static vnm_calib_collector *calibrate(llama_state *v)
{
    vnm_task_env *env = v->env;
    const vnm_recipe *r = env->r;
    vnm_ctx *ctx = env->ctx;
    vnm_calib_collector *c = vnm_calib_attach(ctx, (const char *const *)r->sparsity.targets.items,
                                              (int)r->sparsity.targets.n);
    if (!c) {
        vnm_task_fail(env, 1, "calibration: %s", vnm_ctx_error(ctx));
        return NULL;
    }
    bool grad = vnm_ctx_set_grad_enabled(ctx, false);
    vnm_ctx_set_training(ctx, false);
    vnm_token_loader_config lc = vnm_token_loader_config_default();
    lc.seq_len = r->data.seq_len;
    lc.batch = r->data.batch_size;
    lc.shuffle = false;
    vnm_token_loader *ld = NULL;
    bool ok = vnm_token_loader_create(&v->train_ds, &lc, &ld, v->err, sizeof v->err) == VNM_OK;
    for (int64_t b = 0; ok && b < r->sparsity.calibration_batches; b++) {
        vnm_token_batch batch;
        ok = vnm_token_loader_next(ld, &batch, v->err, sizeof v->err) == VNM_OK;
        if (!ok) break;
        vnm_tensor *ids = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2,
                                          VNM_SHAPE(batch.size, batch.seq_len), batch.inputs);
        ok = vnm_llama_forward(ctx, v->m, ids, 0) != NULL;
        if (!ok) snprintf(v->err, sizeof v->err, "%s", vnm_ctx_error(ctx));
        vnm_ctx_reset_step(ctx);
    }
    vnm_token_loader_free(ld);
    vnm_ctx_set_training(ctx, true);
    vnm_ctx_set_grad_enabled(ctx, grad);
    if (!ok) {
        vnm_calib_detach(c);
        vnm_task_fail(env, 1, "calibration: %s", v->err);
        return NULL;
    }
    return c;
}

/* Merge and re-prune every masked linear at `step` (lora_sparse_dynamic). */
static int reprune_all(llama_state *v, int64_t step)
{
    vnm_task_env *env = v->env;
    const vnm_recipe *r = env->r;
    vnm_calib_collector *c = NULL;
    if (r->sparsity.score == VNM_SCORE_RIA && !(c = calibrate(v))) return 1;
    double *rms = NULL;
    int rc = 0, n = 0;
    for (int i = 0; !rc && i < v->m->n_linears; i++) {
        vnm_llama_linear *l = v->m->linears[i];
        if (!v->masks[i].mask) continue;
        char wname[VNM_LLAMA_NAME_MAX + 8];
        snprintf(wname, sizeof wname, "%s.weight", l->name);
        if (c) {
            const vnm_calib *cal = vnm_calib_find(c, wname);
            free(rms);
            rms = malloc((size_t)l->in * sizeof *rms);
            if (!cal || !rms) {
                rc = vnm_task_fail(env, 1, "re-prune %s: no calibration statistics", wname);
                break;
            }
            vnm_calib_rms(cal, rms);
        }
        if (vnm_lora_reprune(env->ctx, l->lora, l->weight, r->sparsity.pattern,
                             r->sparsity.selector, r->sparsity.score, rms, 0.5, step, v->err,
                             sizeof v->err)) {
            rc = vnm_task_fail(env, 1, "re-prune %s: %s", wname, v->err);
            break;
        }
        vnm_tensor *ab[2] = {l->lora->A, l->lora->B};
        vnm_task_reset_optim_state(env, ab, 2);
        n++;
    }
    free(rms);
    vnm_calib_detach(c);
    if (!rc) vnm_task_say(env, "lora: step %lld, %d linears merged and re-pruned\n",
                          (long long)step, n);
    return rc;
}

/* The first masked linear's adapter (all masked linears share their mask steps). */
static const vnm_lora *first_masked(const llama_state *v)
{
    for (int i = 0; i < v->m->n_linears; i++)
        if (v->masks[i].mask) return v->m->linears[i]->lora;
    return NULL;
}

/* ---- steps and evaluation ---- */

static int llama_step_begin(void *st, int64_t step)
{
    llama_state *v = st;
    const vnm_recipe_stage *s = v->stage;
    if (!s || s->kind != VNM_RECIPE_STAGE_LORA_SPARSE_DYNAMIC) return 0;
    const vnm_lora *l = first_masked(v);
    if (!l || (l->mask_step >= 0 && step < l->mask_step + s->lora.every)) return 0;
    bool first = l->mask_step < 0;
    int rc = reprune_all(v, step);
    if (rc || !first) return rc;
    char label[160];
    snprintf(label, sizeof label, "%s/one-shot", s->name);
    return vnm_task_evaluate(v->env, label);
}

static int llama_train_forward(void *st, vnm_tensor **loss, int64_t *items)
{
    llama_state *v = st;
    vnm_ctx *ctx = v->env->ctx;
    vnm_token_batch b;
    if (vnm_token_loader_next(v->train_ld, &b, v->err, sizeof v->err))
        return vnm_task_fail(v->env, 1, "data: %s", v->err);
    vnm_tensor *ids = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(b.size, b.seq_len),
                                      b.inputs); // [B, L]
    vnm_tensor *tg = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(b.size, b.seq_len),
                                     b.targets); // [B, L]
    *loss = vnm_llama_loss(ctx, vnm_llama_forward(ctx, v->m, ids, 0), tg);
    *items = b.size * b.seq_len;
    return 0;
}

/* The regulariser of lora_sparse_dynamic over every masked linear. */
static int llama_extra_loss(void *st, vnm_tensor **term)
{
    llama_state *v = st;
    const vnm_recipe_stage *s = v->stage;
    *term = NULL;
    if (!s || s->kind != VNM_RECIPE_STAGE_LORA_SPARSE_DYNAMIC || s->lora.lambda == 0) return 0;
    for (int i = 0; i < v->m->n_linears; i++) {
        vnm_llama_linear *l = v->m->linears[i];
        if (!v->masks[i].mask || !l->lora->prev_mask) continue;
        vnm_tensor *p = vnm_lora_penalty(v->env->ctx, l->lora, l->weight, (float)s->lora.lambda);
        *term = *term ? vnm_add(v->env->ctx, *term, p) : p;
        if (!*term) return 0; /* the context holds the error */
    }
    return 0;
}

static int llama_evaluate(void *st, int64_t step, vnm_task_eval *out)
{
    (void)step;
    llama_state *v = st;
    vnm_ctx *ctx = v->env->ctx;
    bool grad = vnm_ctx_set_grad_enabled(ctx, false);
    vnm_ctx_set_training(ctx, false);
    vnm_token_loader_set_pos(v->val_ld, (vnm_sampler_pos){0, 0}, NULL, 0);
    int64_t nb = vnm_token_loader_batches_per_epoch(v->val_ld), tokens = 0;
    double loss_sum = 0;
    int rc = 0;
    for (int64_t i = 0; !rc && i < nb; i++) {
        vnm_token_batch b;
        if (vnm_token_loader_next(v->val_ld, &b, v->err, sizeof v->err)) {
            rc = vnm_task_fail(v->env, 1, "eval: %s", v->err);
            break;
        }
        vnm_tensor *ids = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(b.size, b.seq_len),
                                          b.inputs);
        vnm_tensor *tg = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(b.size, b.seq_len),
                                         b.targets);
        vnm_tensor *loss = vnm_llama_loss(ctx, vnm_llama_forward(ctx, v->m, ids, 0), tg);
        if (!loss) {
            rc = vnm_task_fail(v->env, 1, "eval: %s", vnm_ctx_error(ctx));
            break;
        }
        loss_sum += (double)vnm_item(ctx, loss) * (double)(b.size * b.seq_len);
        tokens += b.size * b.seq_len;
        vnm_ctx_reset_step(ctx);
    }
    vnm_ctx_set_training(ctx, true);
    vnm_ctx_set_grad_enabled(ctx, grad);
    if (rc) return rc;
    double mean = loss_sum / (double)tokens;
    *out = (vnm_task_eval){.loss = mean, .top1 = NAN, .ppl = exp(mean), .items = tokens};
    return 0;
}

/* ---- parameters and checkpoint entries ---- */

static int llama_n_params(const void *st) { return ((const llama_state *)st)->n_params; }

static vnm_tensor *llama_param(const void *st, int i)
{
    return ((const llama_state *)st)->params[i];
}

static uint64_t llama_params_version(const void *st)
{
    return ((const llama_state *)st)->params_version;
}

static int llama_state_capacity(const void *st)
{
    const llama_state *v = st;
    return vnm_llama_param_count(v->m) + 5 * v->m->n_linears;
}

static void llama_state_entries(const void *st, vnm_state_tensor *dense, int *n_dense,
                                vnm_state_sparse *sparse, int *n_sparse)
{
    (void)sparse;
    const llama_state *v = st;
    const vnm_llama *m = v->m;
    int nd = 0;
    for (int i = 0; i < vnm_llama_param_count(m); i++)
        dense[nd++] = (vnm_state_tensor){m->params[i].name, vnm_llama_param_at(m, i).tensor};
    for (int i = 0; i < m->n_linears; i++) {
        const vnm_lora *l = m->linears[i]->lora;
        const mask_buffers *b = &v->masks[i];
        if (l) {
            dense[nd++] = (vnm_state_tensor){l->A->name, l->A};
            dense[nd++] = (vnm_state_tensor){l->B->name, l->B};
        }
        if (b->mask) {
            dense[nd++] = (vnm_state_tensor){b->mask_name, b->mask};
            dense[nd++] = (vnm_state_tensor){b->prev_name, b->prev};
            dense[nd++] = (vnm_state_tensor){b->info_name, b->info};
        }
    }
    *n_dense = nd;
    *n_sparse = 0;
}

/* Masks into their checkpoint buffers. */
static int llama_state_saving(void *st)
{
    llama_state *v = st;
    vnm_ctx *ctx = v->env->ctx;
    for (int i = 0; i < v->m->n_linears; i++) {
        const vnm_lora *l = v->m->linears[i]->lora;
        const mask_buffers *b = &v->masks[i];
        if (!b->mask) continue;
        int64_t info[2] = {l->mask_step, l->prev_mask != NULL};
        vnm_status s = vnm_tensor_from_host(ctx, b->info, info);
        if (!s && l->mask) s = vnm_tensor_from_host(ctx, b->mask, l->mask);
        if (!s && l->prev_mask) s = vnm_tensor_from_host(ctx, b->prev, l->prev_mask);
        if (s) return vnm_task_fail(v->env, 1, "%s", vnm_ctx_error(ctx));
    }
    return 0;
}

/* And back: the masks and the kept values they select from the loaded base. */
static int llama_state_loaded(void *st)
{
    llama_state *v = st;
    vnm_ctx *ctx = v->env->ctx;
    for (int i = 0; i < v->m->n_linears; i++) {
        vnm_llama_linear *l = v->m->linears[i];
        const mask_buffers *b = &v->masks[i];
        int64_t info[2];
        if (!b->mask) continue;
        if (vnm_tensor_to_host(ctx, b->info, info))
            return vnm_task_fail(v->env, 1, "%s", vnm_ctx_error(ctx));
        if (info[0] < 0) continue; /* saved before the first mask */
        size_t n = (size_t)(l->out * l->in);
        uint8_t *mask = malloc(n), *prev = malloc(n);
        int rc = mask && prev ? 0 : vnm_task_fail(v->env, 1, "out of memory");
        if (!rc &&
            (vnm_tensor_to_host(ctx, b->mask, mask) || vnm_tensor_to_host(ctx, b->prev, prev)))
            rc = vnm_task_fail(v->env, 1, "%s", vnm_ctx_error(ctx));
        if (!rc && vnm_lora_set_masks(ctx, l->lora, l->weight, v->env->r->sparsity.pattern, mask,
                                      info[1] ? prev : NULL, info[0], v->err, sizeof v->err))
            rc = vnm_task_fail(v->env, 2, "%s: %s: %s", v->env->cmd, b->mask_name, v->err);
        free(mask);
        free(prev);
        if (rc) return rc;
    }
    return 0;
}

/* ---- stages ---- */

static int llama_stage_begin(void *st, const vnm_recipe_stage *s)
{
    llama_state *v = st;
    v->stage = s;
    return is_lora_kind(s->kind) ? enter_lora(v) : 0;
}

static int llama_stage_end(void *st, const vnm_recipe_stage *s)
{
    (void)s;
    ((llama_state *)st)->stage = NULL;
    return 0;
}

static int llama_prune(void *st)
{
    llama_state *v = st;
    return vnm_task_fail(v->env, 2, "prune stages are not implemented for llama");
}

/* The adapters exist from the first LoRA stage on: rebuild them when the checkpoint was written
 * inside or after one. */
static int llama_resume(void *st, int64_t stage_index, int64_t stage_step, vnm_ckpt_reader *rd)
{
    (void)rd;
    llama_state *v = st;
    const vnm_recipe *r = v->env->r;
    bool lora = false;
    for (int64_t i = 0; i < r->n_stages && i <= stage_index; i++)
        lora |= is_lora_kind(r->stages[i].kind) && (i < stage_index || stage_step > 0);
    return lora ? enter_lora(v) : 0;
}

static void llama_restored(const void *st, vnm_restored *out)
{
    out->model = NULL;
    out->llama = ((const llama_state *)st)->m;
    out->perm_in = NULL;
}

const vnm_task_iface vnm_task_llama = {
    .name = "llama",
    .unit = "tok/s",
    .metrics = VNM_TASK_PPL,
    .check = llama_check,
    .check_stage = llama_check_stage,
    .setup = llama_setup,
    .free = llama_free,
    .numel = llama_numel,
    .batches_per_epoch = llama_batches_per_epoch,
    .get_pos = llama_get_pos,
    .set_pos = llama_set_pos,
    .step_begin = llama_step_begin,
    .train_forward = llama_train_forward,
    .extra_loss = llama_extra_loss,
    .evaluate = llama_evaluate,
    .n_params = llama_n_params,
    .param = llama_param,
    .params_version = llama_params_version,
    .state_capacity = llama_state_capacity,
    .state_entries = llama_state_entries,
    .state_saving = llama_state_saving,
    .state_loaded = llama_state_loaded,
    .stage_begin = llama_stage_begin,
    .stage_end = llama_stage_end,
    .prune = llama_prune,
    .resume = llama_resume,
    .restored = llama_restored,
};
