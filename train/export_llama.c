/* train/export_llama.c — `vnm export` of a LLaMA run: a transformers model folder.
 *
 *   OUT/config.json, OUT/model.safetensors   the merged model: every adapted linear written as the
 *                                            weight it computes with, (W + s·B·A) ⊙ Mk
 *   OUT/base/, OUT/adapter/                  only while no linear is masked (a lora_dense run):
 *                                            the frozen base and the PEFT adapter folder, which
 *                                            peft loads onto it to the same function
 *   OUT/sample.safetensors                   with --sample N: input_ids [2, N] (i64) and our
 *                                            logits for them, for tools/check_export_llama.py
 *
 * After a sparse LoRA stage the adapters alone no longer describe the model (the base has taken
 * merges and carries masks), so only the merged model is written.
 */
#include "export_llama.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "peft.h"
#include "safetensors.h"

static int fail(const char *what, const char *err)
{
    fprintf(stderr, "vnm export: %s: %s\n", what, err);
    return 2;
}

static int save_folder(vnm_ctx *ctx, vnm_llama *m, const char *dir, vnm_dtype dtype)
{
    char path[4200], err[1024];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return fail(dir, strerror(errno));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (vnm_llama_save(ctx, m, path, dtype, 0, err, sizeof err)) return fail(path, err);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (vnm_llama_config_save(&m->cfg, path, dtype, err, sizeof err)) return fail(path, err);
    return 0;
}

/* The base and the adapters apart: the adapters are set aside while the base is written. */
static int save_base_and_adapter(vnm_ctx *ctx, vnm_llama *m, const char *out, vnm_dtype dtype)
{
    char dir[4200], err[1024];
    vnm_lora **held = calloc((size_t)m->n_linears, sizeof *held);
    if (!held) return fail(out, "out of memory");
    for (int i = 0; i < m->n_linears; i++) {
        held[i] = m->linears[i]->lora;
        m->linears[i]->lora = NULL;
    }
    snprintf(dir, sizeof dir, "%s/base", out);
    int rc = save_folder(ctx, m, dir, dtype);
    for (int i = 0; i < m->n_linears; i++) m->linears[i]->lora = held[i];
    free(held);
    const vnm_lora *l = NULL;
    for (int i = 0; !l && i < m->n_linears; i++) l = m->linears[i]->lora;
    snprintf(dir, sizeof dir, "%s/adapter", out);
    /* lora_alpha = scale · r gives the adapters' scale under PEFT's α/r, rsLoRA or not */
    if (!rc && vnm_peft_save(ctx, m, dir, (double)l->scale * (double)l->r, false, NULL, err,
                             sizeof err))
        rc = fail(dir, err);
    return rc;
}

static int save_sample(vnm_ctx *ctx, vnm_llama *m, const char *out, int n)
{
    char path[4200], err[1024];
    int64_t T = n, *ids = malloc((size_t)(2 * T) * sizeof *ids);
    if (!ids) return fail(out, "out of memory");
    for (int64_t i = 0; i < 2 * T; i++) ids[i] = (i * 7919 + 13) % m->cfg.vocab_size;
    bool grad = vnm_ctx_set_grad_enabled(ctx, false);
    vnm_ctx_set_training(ctx, false);
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_I64, 2, VNM_SHAPE(2, T), ids);
    vnm_tensor *y = vnm_llama_forward(ctx, m, x, 0); // [2, T, vocab]
    float *logits = y ? malloc((size_t)vnm_numel(y) * sizeof *logits) : NULL;
    int rc = logits && !vnm_tensor_to_host(ctx, y, logits) ? 0 : fail(out, vnm_ctx_error(ctx));
    vnm_ctx_set_grad_enabled(ctx, grad);
    if (!rc) {
        vnm_safetensors_entry e[2] = {
            {"input_ids", VNM_DTYPE_I64, 2, VNM_SHAPE(2, T), ids},
            {"logits", VNM_DTYPE_F32, 3, y->shape, logits},
        };
        static const char *const meta[] = {"format", "pt"};
        snprintf(path, sizeof path, "%s/sample.safetensors", out);
        if (vnm_safetensors_write(path, e, 2, meta, 1, err, sizeof err)) rc = fail(path, err);
    }
    free(logits);
    free(ids);
    return rc;
}

int vnm_export_llama(vnm_ctx *ctx, vnm_llama *m, const char *out, vnm_dtype dtype, int sample,
                     bool *with_adapter)
{
    bool adapters = false, masked = false;
    for (int i = 0; i < m->n_linears; i++) {
        adapters |= m->linears[i]->lora != NULL;
        masked |= m->linears[i]->lora && m->linears[i]->lora->mask;
    }
    if (sample > m->cfg.max_position_embeddings)
        return fail("--sample", "longer than the model's context");
    *with_adapter = adapters && !masked;
    int rc = save_folder(ctx, m, out, dtype);
    if (!rc && *with_adapter) rc = save_base_and_adapter(ctx, m, out, dtype);
    if (!rc && sample > 0) rc = save_sample(ctx, m, out, sample);
    return rc;
}
