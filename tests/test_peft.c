/* tests/test_peft.c — LoRA on the LLaMA model against real peft (fixtures from
 * tools/gen_llama_fixture.py: an all-linear r = 4 adapter with random A and B on the GQA model,
 * with its logits, loss, the gradient of every adapter tensor, merge_and_unload's logits and the
 * rsLoRA logits), PEFT's target rule, the adapter folder written and read back, the merged export
 * in the dense and in the masked mode ((W + s·B·A) ⊙ Mk, a valid V:N:M weight computing the
 * model's logits), and bad adapter folders. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama_fixture.h"
#include "test_util.h"
#include "train/peft.h"

static vnm_llama *tiny(vnm_ctx *ctx)
{
    return lf_model(ctx, "llama_tiny", "model.safetensors", NULL);
}

static void load_adapter(vnm_ctx *ctx, vnm_llama *m, const char *dir)
{
    char err[512];
    if (vnm_peft_load(ctx, m, dir, err, sizeof err) != VNM_OK) fail_msg("%s", err);
}

static vnm_safetensors *expected(void)
{
    char path[512], err[512];
    vnm_safetensors *st;
    lf_fixture_path("llama_tiny/adapter_expected.safetensors", path, sizeof path);
    if (vnm_safetensors_open(path, &st, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    return st;
}

static void assert_logits(vnm_ctx *ctx, vnm_llama *m, vnm_safetensors *st, const char *key,
                          double tol)
{
    int64_t B, T, n;
    int64_t *ids = lf_ids(st, &B, &T);
    float *want = lf_fixture_f32(st, key, &n), *got = lf_logits(ctx, m, ids, B, T, 0);
    double e = lf_rel_err(got, want, n);
    if (!(e <= tol)) fail_msg("%s: relative error %.3g > %.1g", key, e, tol);
    free(ids), free(want), free(got);
}

static void test_conformance_with_peft(void **state)
{
    lf_env *f = *state;
    vnm_ctx *ctx = f->ctx;
    char dir[512];
    vnm_llama *m = tiny(ctx);
    lf_fixture_path("llama_tiny/adapter", dir, sizeof dir);
    load_adapter(ctx, m, dir);
    int adapted = 0;
    for (int i = 0; i < m->n_linears; i++) adapted += m->linears[i]->lora != NULL;
    assert_int_equal(adapted, 14); /* all-linear: 7 per layer, not lm_head */
    assert_null(m->lm_head.lora);
    vnm_safetensors *st = expected();
    assert_logits(ctx, m, st, "logits", 1e-4);

    int64_t B, T, n;
    int64_t *ids = lf_ids(st, &B, &T);
    vnm_ctx_reset_step(ctx);
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_I64, 2, VNM_SHAPE(B, T), ids);
    vnm_tensor *loss = vnm_llama_loss(ctx, vnm_llama_forward(ctx, m, x, 0),
                                      lf_shifted_targets(ctx, ids, B, T));
    float *want_loss = lf_fixture_f32(st, "loss", &n);
    assert_true(fabs(vnm_item(ctx, loss) - want_loss[0]) <= 1e-5 * fabs(want_loss[0]));
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    double worst = 0;
    for (int i = 0; i < m->n_linears; i++) {
        vnm_lora *l = m->linears[i]->lora;
        for (int ab = 0; l && ab < 2; ab++) {
            char key[256];
            vnm_tensor *t = ab ? l->B : l->A;
            snprintf(key, sizeof key, "grad.base_model.model.%s.lora_%c.weight", l->module,
                     ab ? 'B' : 'A');
            float *want = lf_fixture_f32(st, key, &n), *got = tu_host(ctx, t->grad);
            assert_int_equal(n, vnm_numel(t));
            double e = lf_rel_err(got, want, n);
            if (!(e <= 1e-3)) fail_msg("%s: relative error %.3g > 1e-3", key, e);
            worst = fmax(worst, e);
            free(want), free(got);
        }
    }
    printf("# peft conformance: worst LoRA gradient relative error %.2g\n", worst);
    free(want_loss), free(ids);
    vnm_safetensors_close(st);
    vnm_llama_free(m);
}

/* The adapter folder with use_rslora switched on gives peft's rsLoRA logits. */
static void test_rslora(void **state)
{
    lf_env *f = *state;
    char src[512], *cfg_path = tu_path(f->dir, "adapter_config.json");
    char *st_path = tu_path(f->dir, "adapter_model.safetensors");
    lf_fixture_path("llama_tiny/adapter/adapter_config.json", src, sizeof src);
    char *text = tu_read_file(src), *at = strstr(text, "\"use_rslora\": false");
    assert_non_null(at);
    memcpy(at, "\"use_rslora\": true ", 19); /* same length */
    FILE *out = fopen(cfg_path, "w");
    fputs(text, out);
    fclose(out);
    lf_fixture_path("llama_tiny/adapter/adapter_model.safetensors", src, sizeof src);
    char *cmd;
    assert_true(asprintf(&cmd, "cp '%s' '%s'", src, st_path) > 0);
    assert_int_equal(system(cmd), 0);
    vnm_llama *m = tiny(f->ctx);
    load_adapter(f->ctx, m, f->dir);
    assert_true(fabsf(m->linears[0]->lora->scale - 4.0f) < 1e-6f); /* α/√r = 8/2 */
    vnm_safetensors *st = expected();
    assert_logits(f->ctx, m, st, "rslora_logits", 1e-4);
    vnm_safetensors_close(st);
    vnm_llama_free(m);
    free(cmd), free(text), free(cfg_path), free(st_path);
}

/* Our merged export, loaded into a model without adapters, gives merge_and_unload's logits. */
static void test_merged_export(void **state)
{
    lf_env *f = *state;
    char dir[512], err[512];
    vnm_llama *m = tiny(f->ctx);
    lf_fixture_path("llama_tiny/adapter", dir, sizeof dir);
    load_adapter(f->ctx, m, dir);
    char *path = tu_path(f->dir, "merged.safetensors");
    if (vnm_llama_save(f->ctx, m, path, VNM_DTYPE_F32, 0, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    vnm_llama *plain = lf_model(f->ctx, "llama_tiny", "model.safetensors", NULL);
    if (vnm_llama_load(f->ctx, plain, path, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    vnm_safetensors *st = expected();
    assert_logits(f->ctx, plain, st, "merged_logits", 1e-4);
    vnm_safetensors_close(st);
    vnm_llama_free(plain);
    vnm_llama_free(m);
    free(path);
}

static void test_adapter_round_trip(void **state)
{
    lf_env *f = *state;
    char err[512];
    vnm_llama *m = tiny(f->ctx);
    const char *targets[] = {"q_proj", "v_proj", "down_proj"};
    vnm_lora_config c = {.r = 3, .alpha = 12, .dropout = 0.1, .rslora = false};
    int n = 0;
    assert_int_equal(vnm_peft_attach(f->ctx, m, &c, targets, 3, &n, err, sizeof err), VNM_OK);
    assert_int_equal(n, 6);
    for (int i = 0; i < m->n_linears; i++)
        if (m->linears[i]->lora) vnm_rng_uniform(f->ctx, m->linears[i]->lora->B, -1, 1);
    char *out = tu_path(f->dir, "adapter");
    if (vnm_peft_save(f->ctx, m, out, 12, false, "meta-llama/Llama-2-7b-hf", err, sizeof err))
        fail_msg("%s", err);
    char *cfg_path = tu_path(out, "adapter_config.json"), *text = tu_read_file(cfg_path);
    tu_assert_has(text, "\"peft_type\":\"LORA\"");
    tu_assert_has(text, "\"r\":3");
    tu_assert_has(text, "\"lora_alpha\":12");
    tu_assert_has(text, "\"model.layers.1.mlp.down_proj\"");
    tu_assert_has(text, "\"base_model_name_or_path\":\"meta-llama/Llama-2-7b-hf\"");
    vnm_llama *back = tiny(f->ctx);
    load_adapter(f->ctx, back, out);
    for (int i = 0; i < m->n_linears; i++) {
        vnm_lora *a = m->linears[i]->lora, *b = back->linears[i]->lora;
        assert_true((a == NULL) == (b == NULL));
        if (!a) continue;
        assert_true(a->scale == b->scale && a->dropout == b->dropout && a->r == b->r);
        for (int ab = 0; ab < 2; ab++) {
            vnm_tensor *ta = ab ? a->B : a->A, *tb = ab ? b->B : b->A;
            float *x = tu_host(f->ctx, ta), *y = tu_host(f->ctx, tb);
            assert_memory_equal(x, y, (size_t)vnm_numel(ta) * sizeof *x);
            free(x), free(y);
        }
    }
    /* loading twice is refused; the first adapters stay */
    assert_int_equal(vnm_peft_load(f->ctx, back, out, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "already has an adapter");
    vnm_llama_free(back);
    vnm_llama_free(m);
    free(out), free(cfg_path), free(text);
}

static void test_target_rule(void **state)
{
    lf_env *f = *state;
    const char *all[] = {"all-linear"}, *names[] = {"q_proj", "model.layers.1.mlp.up_proj"};
    const char *re[] = {"model\\.layers\\.[0-9]+\\.mlp\\..*"}, *none[] = {"proj"};
    assert_true(vnm_peft_target_matches("model.layers.3.self_attn.q_proj", all, 1));
    assert_false(vnm_peft_target_matches("lm_head", all, 1));
    assert_true(vnm_peft_target_matches("model.layers.0.self_attn.q_proj", names, 2));
    assert_true(vnm_peft_target_matches("model.layers.1.mlp.up_proj", names, 2));
    assert_false(vnm_peft_target_matches("model.layers.0.mlp.up_proj", names, 2));
    assert_false(vnm_peft_target_matches("model.layers.0.self_attn.xq_proj", names, 2));
    assert_true(vnm_peft_target_matches("model.layers.12.mlp.gate_proj", re, 1));
    assert_false(vnm_peft_target_matches("model.layers.12.self_attn.q_proj", re, 1));
    char err[512];
    vnm_llama *m = tiny(f->ctx);
    vnm_lora_config c = {.r = 2, .alpha = 4};
    assert_int_equal(vnm_peft_attach(f->ctx, m, &c, none, 1, NULL, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "no linear of the model matches");
    const char *bad[] = {"model.(layers"};
    assert_int_equal(vnm_peft_attach(f->ctx, m, &c, bad, 1, NULL, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "regular expression");
    vnm_llama_free(m);
}

/* A copy of the fixture adapter folder with `from` replaced by `to` in its config. */
static void bad_config(lf_env *f, const char *from, const char *to, const char *needle)
{
    char src[512], err[512];
    lf_fixture_path("llama_tiny/adapter/adapter_config.json", src, sizeof src);
    char *text = tu_read_file(src), *at = strstr(text, from);
    assert_non_null(at);
    char *path = tu_path(f->dir, "adapter_config.json");
    FILE *out = fopen(path, "w");
    fprintf(out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    fclose(out);
    lf_fixture_path("llama_tiny/adapter/adapter_model.safetensors", src, sizeof src);
    char *cmd;
    assert_true(asprintf(&cmd, "cp '%s' '%s/adapter_model.safetensors'", src, f->dir) > 0);
    assert_int_equal(system(cmd), 0);
    vnm_llama *m = tiny(f->ctx);
    assert_int_equal(vnm_peft_load(f->ctx, m, f->dir, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, needle);
    for (int i = 0; i < m->n_linears; i++) assert_null(m->linears[i]->lora); /* nothing stays */
    vnm_llama_free(m);
    free(text), free(path), free(cmd);
}

static void test_bad_adapters(void **state)
{
    lf_env *f = *state;
    bad_config(f, "\"use_dora\": false", "\"use_dora\": true", "use_dora");
    bad_config(f, "\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"", "peft_type");
    bad_config(f, "\"r\": 4", "\"r\": 5", "expected [5, 32]");
    bad_config(f, "\"bias\": \"none\"", "\"bias\": \"all\"", "bias");
    bad_config(f, "\"model.layers.0.self_attn.o_proj\",", "", "unexpected tensor");
    char err[512];
    vnm_llama *m = tiny(f->ctx);
    assert_int_equal(vnm_peft_load(f->ctx, m, "/nonexistent/adapter", err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "/nonexistent/adapter/adapter_config.json");
    vnm_llama_free(m);
}

/* Masked mode: every adapted linear re-pruned to 16:2:4 (B nonzero again afterwards); the merged
 * export is a valid V:N:M weight per layer and computes the model's logits. */
static void test_masked_export(void **state)
{
    lf_env *f = *state;
    vnm_ctx *ctx = f->ctx;
    char dir[512], err[512];
    vnm_llama *m = tiny(ctx);
    lf_fixture_path("llama_tiny/adapter", dir, sizeof dir);
    load_adapter(ctx, m, dir);
    vnm_pattern p;
    assert_int_equal(vnm_pattern_parse("16:2:4", &p, NULL, 0), VNM_OK);
    for (int i = 0; i < m->n_linears; i++) {
        vnm_llama_linear *l = m->linears[i];
        if (!l->lora) continue;
        if (vnm_lora_reprune(ctx, l->lora, l->weight, p, VNM_SELECT_L1, VNM_SCORE_MAGNITUDE, NULL,
                             0.5, 1, err, sizeof err) != VNM_OK)
            fail_msg("%s", err);
        vnm_rng_uniform(ctx, l->lora->B, -0.5f, 0.5f);
    }
    int64_t B = 2, T = 9;
    int64_t ids[18];
    for (int i = 0; i < 18; i++) ids[i] = (i * 7 + 3) % 64;
    float *want = lf_logits(ctx, m, ids, B, T, 0);
    char *path = tu_path(f->dir, "masked.safetensors");
    if (vnm_llama_save(ctx, m, path, VNM_DTYPE_F32, 0, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    vnm_llama *plain = lf_model(ctx, "llama_tiny", "model.safetensors", NULL);
    if (vnm_llama_load(ctx, plain, path, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    for (int i = 0; i < plain->n_linears; i++) {
        vnm_llama_linear *l = plain->linears[i];
        if (!m->linears[i]->lora) continue;
        float *W = tu_host(ctx, l->weight);
        uint8_t *mask = malloc((size_t)(l->out * l->in));
        for (int64_t k = 0; k < l->out * l->in; k++) mask[k] = W[k] != 0.0f;
        assert_memory_equal(mask, m->linears[i]->lora->mask, (size_t)(l->out * l->in));
        if (vnm_mask_validate(p, mask, l->out, l->in, err, sizeof err) != VNM_OK)
            fail_msg("%s: %s", l->name, err);
        free(W), free(mask);
    }
    float *got = lf_logits(ctx, plain, ids, B, T, 0);
    double e = lf_rel_err(got, want, B * T * 64);
    if (!(e <= 1e-5)) fail_msg("masked export: relative error %.3g", e);
    free(want), free(got), free(path);
    vnm_llama_free(plain);
    vnm_llama_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_conformance_with_peft, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_rslora, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_merged_export, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_adapter_round_trip, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_target_rule, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_bad_adapters, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_masked_export, lf_setup, lf_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
