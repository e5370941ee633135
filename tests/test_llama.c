/* tests/test_llama.c — the LLaMA model (train/models/llama.h): config.json reading (good files of
 * transformers 4 and 5, and bad ones whose messages name the file and key) and writing;
 * conformance with real transformers (fixtures from tools/gen_llama_fixture.py: logits, loss and
 * the gradient of every parameter for a GQA model with an untied lm_head, and for a tied
 * multi-head model with biases and an explicit head_dim); the bf16 sharded copy and a frozen bf16
 * base computing bit-identical logits; save → load round trips; load errors; transformers' init;
 * finite differences through a small model; causality. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama_fixture.h"
#include "test_util.h"
#include "train/models/llama.h"
#include "train/safetensors.h"

/* ---- config ---- */

static void test_config_load(void **state)
{
    (void)state;
    vnm_llama_config c = lf_config("llama_tiny");
    assert_int_equal(c.vocab_size, 64);
    assert_int_equal(c.hidden_size, 32);
    assert_int_equal(c.intermediate_size, 88);
    assert_int_equal(c.num_hidden_layers, 2);
    assert_int_equal(c.num_attention_heads, 4);
    assert_int_equal(c.num_key_value_heads, 2);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.max_position_embeddings, 64);
    assert_true(c.rms_norm_eps == 1e-5 && c.rope_theta == 10000.0);
    assert_true(c.initializer_range == 0.02);
    assert_false(c.tie_word_embeddings || c.attention_bias || c.mlp_bias);
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.n_eos_token_ids, 1);
    assert_int_equal(c.eos_token_ids[0], 2);
    assert_int_equal(c.pad_token_id, -1);

    c = lf_config("llama_tied");
    assert_int_equal(c.hidden_size, 24);
    assert_int_equal(c.head_dim, 8); /* explicit, not 24 / 4 */
    assert_int_equal(c.num_key_value_heads, 4);
    assert_true(c.rms_norm_eps == 1e-6 && c.rope_theta == 500000.0);
    assert_true(c.tie_word_embeddings && c.attention_bias && c.mlp_bias);
}

/* Writes text to dir/name and returns the path (malloc'd). */
static char *write_text(const char *dir, const char *name, const char *text)
{
    char *path = tu_path(dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

#define CFG_HEAD "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 64, "
#define CFG_DIMS "\"intermediate_size\": 88, \"num_hidden_layers\": 2, "

/* transformers 4 layout: rope_theta at the top, no model_type (architectures suffices), eos list,
 * pad id, null num_key_value_heads and head_dim (LlamaConfig's defaults). */
static void test_config_v4_layout(void **state)
{
    const char *dir = *state;
    char *path = write_text(dir, "v4.json",
                            CFG_HEAD "\"hidden_size\": 48, " CFG_DIMS
                            "\"num_attention_heads\": 6, \"num_key_value_heads\": null, "
                            "\"head_dim\": null, \"rope_theta\": 500000.0, \"rope_scaling\": null, "
                            "\"torch_dtype\": \"bfloat16\", \"eos_token_id\": [5, 7, 9], "
                            "\"pad_token_id\": 0, \"pretraining_tp\": 1}");
    vnm_llama_config c;
    char err[512];
    if (vnm_llama_config_load(path, &c, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    assert_int_equal(c.num_key_value_heads, 6);
    assert_int_equal(c.head_dim, 8);
    assert_true(c.rope_theta == 500000.0 && c.rms_norm_eps == 1e-6);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_int_equal(c.n_eos_token_ids, 3);
    assert_int_equal(c.eos_token_ids[2], 9);
    assert_int_equal(c.pad_token_id, 0);
    assert_int_equal(c.bos_token_id, 1);
    free(path);
}

static void expect_config_error(const char *dir, const char *text, const char *needle)
{
    char *path = write_text(dir, "bad.json", text);
    vnm_llama_config c;
    char err[512];
    assert_int_equal(vnm_llama_config_load(path, &c, err, sizeof err), VNM_ERR_INPUT);
    if (!strstr(err, needle) || !strstr(err, path))
        fail_msg("error \"%s\" lacks \"%s\" or the file name", err, needle);
    free(path);
}

static void test_config_errors(void **state)
{
    const char *dir = *state;
    expect_config_error(dir, "{\"model_type\": \"mistral\", \"vocab_size\": 64}",
                        "'model_type' is \"mistral\", expected \"llama\"");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": "
                        "\"llama3\", \"factor\": 8.0}}",
                        "'rope_scaling' is set (type \"llama3\"); only plain RoPE");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"rope_parameters\": {\"rope_type\": "
                        "\"yarn\", \"rope_theta\": 10000.0}}",
                        "'rope_parameters.rope_type' is \"yarn\", expected \"default\"");
    expect_config_error(dir, CFG_HEAD CFG_DIMS "\"num_attention_heads\": 4}",
                        "missing key 'hidden_size' (expected an integer)");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": null, " CFG_DIMS
                        "\"num_attention_heads\": 4}", "'hidden_size' is null");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"num_key_value_heads\": 3}",
                        "num_attention_heads (4) is not a multiple of num_key_value_heads (3)");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 30, " CFG_DIMS
                        "\"num_attention_heads\": 4}",
                        "'hidden_size' (30) is not a multiple of 'num_attention_heads' (4)");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}",
                        "'hidden_act' is \"gelu\", expected \"silu\"");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": \"32\", " CFG_DIMS
                        "\"num_attention_heads\": 4}",
                        "'hidden_size' is a string, expected an integer");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"head_dim\": 7}",
                        "head_dim (7) must be even");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"tie_word_embeddings\": 1}",
                        "'tie_word_embeddings' is a number, expected true or false");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"attention_dropout\": 0.1}",
                        "'attention_dropout' is 0.1, expected 0");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"rope_theta\": 1.0, \"rope_parameters\": "
                        "{\"rope_type\": \"default\", \"rope_theta\": 2.0}}",
                        "'rope_parameters.rope_theta' (2) differs from 'rope_theta' (1)");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 0}",
                        "num_attention_heads is 0, expected a positive integer");
    expect_config_error(dir, CFG_HEAD "\"hidden_size\": 32, " CFG_DIMS
                        "\"num_attention_heads\": 4, \"pad_token_id\": 64}",
                        "pad_token_id (64) is outside the vocabulary (vocab_size 64)");
    expect_config_error(dir, "{\"vocab_size\": 64}",
                        "missing key 'model_type' (expected \"llama\")");
    expect_config_error(dir, "{\"model_type\": \"llama\",", "bad.json");

    vnm_llama_config c;
    char err[512];
    assert_int_equal(vnm_llama_config_load("/nonexistent/config.json", &c, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "/nonexistent/config.json"));
}

static void assert_config_equal(const vnm_llama_config *a, const vnm_llama_config *b)
{
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->hidden_size, b->hidden_size);
    assert_int_equal(a->intermediate_size, b->intermediate_size);
    assert_int_equal(a->num_hidden_layers, b->num_hidden_layers);
    assert_int_equal(a->num_attention_heads, b->num_attention_heads);
    assert_int_equal(a->num_key_value_heads, b->num_key_value_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->max_position_embeddings, b->max_position_embeddings);
    assert_true(a->rms_norm_eps == b->rms_norm_eps && a->rope_theta == b->rope_theta &&
                a->initializer_range == b->initializer_range);
    assert_true(a->tie_word_embeddings == b->tie_word_embeddings &&
                a->attention_bias == b->attention_bias && a->mlp_bias == b->mlp_bias);
    assert_int_equal(a->bos_token_id, b->bos_token_id);
    assert_int_equal(a->pad_token_id, b->pad_token_id);
    assert_int_equal(a->n_eos_token_ids, b->n_eos_token_ids);
    for (int i = 0; i < a->n_eos_token_ids; i++)
        assert_int_equal(a->eos_token_ids[i], b->eos_token_ids[i]);
}

/* save → load gives the same config, for both fixtures and for eos lists and null ids. */
static void test_config_save(void **state)
{
    const char *dir = *state;
    char *path = tu_path(dir, "config.json"), err[512];
    const char *cases[] = {"llama_tiny", "llama_tied"};
    vnm_llama_config a, b;
    for (int k = 0; k < 3; k++) {
        if (k < 2) {
            a = lf_config(cases[k]);
        } else { /* the tied config with a list of eos ids, null bos, pad 0 */
            a.n_eos_token_ids = 3;
            a.eos_token_ids[1] = 128008;
            a.bos_token_id = -1;
            a.pad_token_id = 0;
            a.rms_norm_eps = 1.0 / 3.0; /* needs all 17 digits */
        }
        vnm_dtype dt = k == 1 ? VNM_DTYPE_F32 : VNM_DTYPE_BF16;
        if (vnm_llama_config_save(&a, path, dt, err, sizeof err) != VNM_OK) fail_msg("%s", err);
        if (vnm_llama_config_load(path, &b, err, sizeof err) != VNM_OK) fail_msg("%s", err);
        assert_config_equal(&a, &b);
        char *text = tu_read_file(path);
        tu_assert_has(text, "\"architectures\":[\"LlamaForCausalLM\"]");
        tu_assert_has(text, "\"model_type\":\"llama\"");
        tu_assert_has(text, "\"rope_scaling\":null");
        tu_assert_has(text, k == 1 ? "\"torch_dtype\":\"float32\""
                                   : "\"torch_dtype\":\"bfloat16\"");
        free(text);
    }
    vnm_llama_config bad = lf_config("llama_tied");
    bad.num_key_value_heads = 3;
    assert_int_equal(vnm_llama_config_save(&bad, path, VNM_DTYPE_F32, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "not a multiple of num_key_value_heads");
    free(path);
}

/* ---- conformance ---- */

static void check_hf_case(vnm_ctx *ctx, const char *name)
{
    char path[512], err[512];
    vnm_llama *m = lf_model(ctx, name, "model.safetensors", NULL);
    snprintf(path, sizeof path, "%s/expected.safetensors", name);
    char full[640];
    lf_fixture_path(path, full, sizeof full);
    vnm_safetensors *st;
    if (vnm_safetensors_open(full, &st, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    int64_t B, T, n_logits, n_loss;
    int64_t *ids = lf_ids(st, &B, &T);
    float *want_logits = lf_fixture_f32(st, "logits", &n_logits);
    float *want_loss = lf_fixture_f32(st, "loss", &n_loss);
    int64_t V = m->cfg.vocab_size;
    assert_int_equal(n_logits, B * T * V);

    vnm_ctx_reset_step(ctx);
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_I64, 2, VNM_SHAPE(B, T), ids);
    vnm_tensor *logits = vnm_llama_forward(ctx, m, x, 0);
    assert_non_null(logits);
    assert_int_equal(logits->ndim, 3);
    assert_int_equal(logits->shape[2], V);
    float *got = tu_host(ctx, logits);
    double e_logits = lf_rel_err(got, want_logits, n_logits);
    if (e_logits > 1e-4) fail_msg("%s: logits relative error %.3g > 1e-4", name, e_logits);

    vnm_tensor *loss = vnm_llama_loss(ctx, logits, lf_shifted_targets(ctx, ids, B, T));
    assert_non_null(loss);
    double l = vnm_item(ctx, loss), e_loss = fabs(l - want_loss[0]) / fabs(want_loss[0]);
    if (e_loss > 1e-5) fail_msg("%s: loss %.8g vs %.8g (relative %.3g)", name, l, want_loss[0],
                                e_loss);
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);

    double worst = 0;
    char worst_name[96] = "";
    int n_grads = 0;
    for (int i = 0; i < vnm_llama_param_count(m); i++) {
        vnm_llama_param p = vnm_llama_param_at(m, i);
        char gname[128];
        snprintf(gname, sizeof gname, "grad.%s", p.name);
        int64_t n;
        float *want = lf_fixture_f32(st, gname, &n);
        assert_int_equal(n, vnm_numel(p.tensor));
        if (!p.tensor->grad) fail_msg("%s: no gradient for '%s'", name, p.name);
        float *g = tu_host(ctx, p.tensor->grad);
        double e = lf_rel_err(g, want, n);
        if (e > worst) {
            worst = e;
            snprintf(worst_name, sizeof worst_name, "%s", p.name);
        }
        n_grads++;
        free(g);
        free(want);
    }
    /* the fixture holds a gradient for every parameter, and nothing else beyond these */
    assert_int_equal((int)vnm_safetensors_count(st), n_grads + 3);
    print_message("# %s vs transformers: logits %.2g, loss %.2g, worst gradient %.2g (%s)\n",
                  name, e_logits, e_loss, worst, worst_name);
    if (worst > 1e-3)
        fail_msg("%s: gradient of '%s' relative error %.3g > 1e-3", name, worst_name, worst);
    free(got);
    free(ids);
    free(want_logits);
    free(want_loss);
    vnm_safetensors_close(st);
    vnm_llama_free(m);
}

static void test_conformance_tiny(void **state)
{
    check_hf_case(((lf_env *)*state)->ctx, "llama_tiny");
}

/* The same checks on the CUDA backend (the fixtures are transformers' own numbers). */
static void test_conformance_cuda(void **state)
{
    (void)state;
    vnm_ctx *ctx = tu_cuda_ctx_or_skip();
    check_hf_case(ctx, "llama_tiny");
    vnm_ctx_destroy(ctx);
}

static void test_conformance_tied(void **state)
{
    check_hf_case(((lf_env *)*state)->ctx, "llama_tied");
}

/* the fixture's input ids (malloc'd) */
static int64_t *tiny_ids(int64_t *B, int64_t *T)
{
    char path[512], err[512];
    lf_fixture_path("llama_tiny/expected.safetensors", path, sizeof path);
    vnm_safetensors *st;
    if (vnm_safetensors_open(path, &st, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    int64_t *ids = lf_ids(st, B, T);
    vnm_safetensors_close(st);
    return ids;
}

/* The bf16 shards hold the same (bf16-exact) weights: the same logits, bit for bit. */
static void test_bf16_shards(void **state)
{
    vnm_ctx *ctx = ((lf_env *)*state)->ctx;
    int64_t B, T;
    int64_t *ids = tiny_ids(&B, &T);
    vnm_llama *a = lf_model(ctx, "llama_tiny", "model.safetensors", NULL);
    vnm_llama *b = lf_model(ctx, "llama_tiny", "bf16/model.safetensors.index.json", NULL);
    float *la = lf_logits(ctx, a, ids, B, T, 0), *lb = lf_logits(ctx, b, ids, B, T, 0);
    assert_memory_equal(la, lb, (size_t)(B * T * 64) * sizeof *la);
    free(la);
    free(lb);
    free(ids);
    vnm_llama_free(a);
    vnm_llama_free(b);
}

/* Gradients of the still-trainable parameters (malloc'd, NULL where none) after loss.backward. */
static float **train_grads(vnm_ctx *ctx, vnm_llama *m, const int64_t *ids, int64_t B, int64_t T)
{
    vnm_ctx_reset_step(ctx);
    int n = vnm_llama_param_count(m);
    for (int i = 0; i < n; i++) {
        vnm_tensor *p = vnm_llama_param_at(m, i).tensor;
        if (p->requires_grad) vnm_zero_grad(ctx, &p, 1);
    }
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_I64, 2, VNM_SHAPE(B, T), ids);
    vnm_tensor *loss = vnm_llama_loss(ctx, vnm_llama_forward(ctx, m, x, 0),
                                      lf_shifted_targets(ctx, ids, B, T));
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    float **g = calloc((size_t)(n > 0 ? n : 1), sizeof *g);
    for (int i = 0; i < n; i++) {
        vnm_tensor *p = vnm_llama_param_at(m, i).tensor;
        if (p->requires_grad && p->grad) g[i] = tu_host(ctx, p->grad);
    }
    return g;
}

/* A frozen bf16 base computes what the f32 model computes (its weights are bf16-exact), whether
 * frozen after loading or built frozen and loaded from the bf16 shards; its norms still train,
 * with the f32 model's gradients; building it frozen never allocates the f32 weights. */
static void test_frozen_bf16(void **state)
{
    lf_env *f = *state;
    vnm_ctx *ctx = f->ctx;
    int64_t B, T;
    int64_t *ids = tiny_ids(&B, &T);
    size_t n_logits = (size_t)(B * T * 64) * sizeof(float);
    vnm_llama *ref = lf_model(ctx, "llama_tiny", "model.safetensors", NULL);
    float *want = lf_logits(ctx, ref, ids, B, T, 0);
    float **want_g = train_grads(ctx, ref, ids, B, T);

    vnm_llama *a = lf_model(ctx, "llama_tiny", "model.safetensors", NULL);
    assert_int_equal(vnm_llama_freeze_base(ctx, a, VNM_DTYPE_BF16, false), VNM_OK);
    assert_int_equal(a->layers[1].down_proj.weight->dtype, VNM_DTYPE_BF16);
    assert_int_equal(a->lm_head.weight->dtype, VNM_DTYPE_BF16);
    assert_false(a->layers[0].q_proj.weight->requires_grad || a->embed_tokens->requires_grad);
    assert_true(a->norm->requires_grad && a->layers[0].input_layernorm->requires_grad);
    float *got = lf_logits(ctx, a, ids, B, T, 0);
    assert_memory_equal(got, want, n_logits);
    free(got);
    float **g = train_grads(ctx, a, ids, B, T);
    for (int i = 0; i < vnm_llama_param_count(a); i++) {
        vnm_llama_param p = vnm_llama_param_at(a, i);
        assert_true((g[i] != NULL) == (strstr(p.name, "norm.weight") != NULL));
        if (g[i]) assert_memory_equal(g[i], want_g[i], (size_t)vnm_numel(p.tensor) * 4);
        free(g[i]);
    }
    free(g);

    /* built frozen: the persistent arena grows by the bf16 weights, not f32 ones */
    size_t before = vnm_ctx_persistent_bytes(ctx);
    vnm_llama_options opt = {.frozen = true, .base_dtype = VNM_DTYPE_BF16, .freeze_norms = true};
    vnm_llama *b = lf_model(ctx, "llama_tiny", "bf16/model.safetensors.index.json", &opt);
    size_t used = vnm_ctx_persistent_bytes(ctx) - before;
    int64_t linear_w = vnm_llama_numel(b) - 64 * 32 - 5 * 32; /* all but embedding and norms */
    assert_true(used < (size_t)(linear_w * 4)); /* f32 linears alone would need this much */
    assert_false(b->norm->requires_grad);
    got = lf_logits(ctx, b, ids, B, T, 0);
    assert_memory_equal(got, want, n_logits);
    free(got);

    /* saving the frozen model writes its weights unchanged */
    char *path = tu_path(f->dir, "frozen.safetensors");
    char err[512];
    if (vnm_llama_save(ctx, b, path, VNM_DTYPE_F32, 0, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    vnm_llama_config cfg = ref->cfg;
    vnm_llama *c = vnm_llama_new(ctx, &cfg, NULL);
    if (vnm_llama_load(ctx, c, path, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    got = lf_logits(ctx, c, ids, B, T, 0);
    assert_memory_equal(got, want, n_logits);
    free(path);
    free(got);

    for (int i = 0; i < vnm_llama_param_count(ref); i++) free(want_g[i]);
    free(want_g);
    free(want);
    free(ids);
    vnm_llama_free(ref);
    vnm_llama_free(a);
    vnm_llama_free(b);
    vnm_llama_free(c);
}

/* ---- small random models ---- */

static vnm_llama_config small_config(bool tied, bool bias)
{
    vnm_llama_config c = vnm_llama_config_default();
    c.vocab_size = 11;
    c.hidden_size = 8;
    c.intermediate_size = 12;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 4;
    c.tie_word_embeddings = tied;
    c.attention_bias = c.mlp_bias = bias;
    return c;
}

/* Our init leaves norms at one and biases at zero; randomise everything so every path shows. */
static void randomise(vnm_ctx *ctx, vnm_llama *m)
{
    for (int i = 0; i < vnm_llama_param_count(m); i++) {
        vnm_llama_param p = vnm_llama_param_at(m, i);
        bool norm = strstr(p.name, "norm.weight") != NULL;
        assert_int_equal(vnm_rng_uniform(ctx, p.tensor, norm ? 0.5f : -0.5f, norm ? 1.5f : 0.5f),
                         VNM_OK);
    }
}

static const int64_t small_ids[2 * 7] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7};

static void assert_params_equal(vnm_ctx *ctx, const vnm_llama *a, const vnm_llama *b)
{
    assert_int_equal(vnm_llama_param_count(a), vnm_llama_param_count(b));
    for (int i = 0; i < vnm_llama_param_count(a); i++) {
        vnm_llama_param pa = vnm_llama_param_at(a, i), pb = vnm_llama_param_at(b, i);
        assert_string_equal(pa.name, pb.name);
        float *x = tu_host(ctx, pa.tensor), *y = tu_host(ctx, pb.tensor);
        assert_memory_equal(x, y, (size_t)vnm_numel(pa.tensor) * sizeof *x);
        free(x);
        free(y);
    }
}

/* save → load is bit-exact, single file and sharded; a tied model writes no lm_head.weight; a
 * bf16 save holds the weights rounded to nearest even. */
static void test_save_load_round_trip(void **state)
{
    lf_env *f = *state;
    vnm_ctx *ctx = f->ctx;
    char err[512];
    vnm_llama_config cfg = small_config(false, true);
    vnm_llama *a = vnm_llama_new(ctx, &cfg, NULL), *b = vnm_llama_new(ctx, &cfg, NULL);
    vnm_llama *c = vnm_llama_new(ctx, &cfg, NULL);
    randomise(ctx, a);
    float *la = lf_logits(ctx, a, small_ids, 2, 7, 0), *lb = lf_logits(ctx, b, small_ids, 2, 7, 0);
    size_t n_logits = 2 * 7 * 11 * sizeof(float);
    assert_true(memcmp(la, lb, n_logits) != 0);
    free(lb);

    char *single = tu_path(f->dir, "model.safetensors");
    if (vnm_llama_save(ctx, a, single, VNM_DTYPE_F32, 0, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    if (vnm_llama_load(ctx, b, single, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    assert_params_equal(ctx, a, b);
    lb = lf_logits(ctx, b, small_ids, 2, 7, 0);
    assert_memory_equal(la, lb, n_logits);
    free(lb);

    char *index = tu_path(f->dir, "model.safetensors.index.json");
    if (vnm_llama_save(ctx, a, index, VNM_DTYPE_F32, 600, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    vnm_safetensors *st;
    assert_int_equal(vnm_safetensors_open(index, &st, err, sizeof err), VNM_OK);
    assert_int_equal((int)vnm_safetensors_count(st), vnm_llama_param_count(a));
    const vnm_safetensors_tensor *first = vnm_safetensors_tensor_at(st, 0);
    const vnm_safetensors_tensor *last = vnm_safetensors_find(st, "lm_head.weight");
    assert_string_not_equal(first->file, last->file); /* several shards */
    vnm_safetensors *shard;
    assert_int_equal(vnm_safetensors_open(last->file, &shard, err, sizeof err), VNM_OK);
    /* transformers refuses safetensors files without it */
    assert_string_equal(vnm_safetensors_metadata(shard, "format"), "pt");
    vnm_safetensors_close(shard);
    vnm_safetensors_close(st);
    if (vnm_llama_load(ctx, c, index, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    assert_params_equal(ctx, a, c);

    /* bf16: every value rounded to nearest even */
    if (vnm_llama_save(ctx, a, single, VNM_DTYPE_BF16, 0, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    if (vnm_llama_load(ctx, b, single, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    vnm_llama_param pa = vnm_llama_param_at(a, 3), pb = vnm_llama_param_at(b, 3);
    float *x = tu_host(ctx, pa.tensor), *y = tu_host(ctx, pb.tensor);
    for (int64_t i = 0; i < vnm_numel(pa.tensor); i++)
        assert_true(y[i] == vnm_bf16_to_f32(vnm_f32_to_bf16(x[i])));
    free(x);
    free(y);

    /* tied: no lm_head.weight in the file, and it loads back */
    vnm_llama_config tcfg = small_config(true, false);
    vnm_llama *t1 = vnm_llama_new(ctx, &tcfg, NULL), *t2 = vnm_llama_new(ctx, &tcfg, NULL);
    randomise(ctx, t1);
    if (vnm_llama_save(ctx, t1, single, VNM_DTYPE_F32, 0, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    assert_int_equal(vnm_safetensors_open(single, &st, err, sizeof err), VNM_OK);
    assert_null(vnm_safetensors_find(st, "lm_head.weight"));
    assert_int_equal((int)vnm_safetensors_count(st), vnm_llama_param_count(t1));
    vnm_safetensors_close(st);
    if (vnm_llama_load(ctx, t2, single, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    assert_params_equal(ctx, t1, t2);

    assert_int_equal(vnm_llama_save(ctx, a, single, VNM_DTYPE_I32, 0, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "cannot save as i32");
    free(la);
    free(single);
    free(index);
    vnm_llama_free(a);
    vnm_llama_free(b);
    vnm_llama_free(c);
    vnm_llama_free(t1);
    vnm_llama_free(t2);
}

/* Host copies of every parameter of m as safetensors entries. */
typedef struct {
    int n;
    vnm_safetensors_entry e[48];
    float *data[48];
} entry_set;

static void entries_of(vnm_ctx *ctx, const vnm_llama *m, entry_set *s)
{
    s->n = vnm_llama_param_count(m);
    assert_true(s->n <= 46);
    for (int i = 0; i < s->n; i++) {
        vnm_llama_param p = vnm_llama_param_at(m, i);
        s->data[i] = tu_host(ctx, p.tensor);
        s->e[i] = (vnm_safetensors_entry){p.tensor->name, VNM_DTYPE_F32, p.tensor->ndim,
                                          p.tensor->shape, s->data[i]};
    }
}

static int entry_index(const entry_set *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->e[i].name, name) == 0) return i;
    fail_msg("no entry '%s'", name);
    return -1;
}

static vnm_status write_and_load(vnm_ctx *ctx, vnm_llama *m, const entry_set *s,
                                 const char *path, char *err, size_t err_len)
{
    assert_int_equal(vnm_safetensors_write(path, s->e, (size_t)s->n, NULL, 0, err, err_len),
                     VNM_OK);
    return vnm_llama_load(ctx, m, path, err, err_len);
}

static void expect_load_error(vnm_ctx *ctx, vnm_llama *m, const entry_set *s, const char *path,
                              const char *needle)
{
    char err[512];
    assert_int_equal(write_and_load(ctx, m, s, path, err, sizeof err), VNM_ERR_INPUT);
    if (!strstr(err, needle) || !strstr(err, path))
        fail_msg("error \"%s\" lacks \"%s\" or the file name", err, needle);
}

/* Missing tensor, wrong shape, unknown key, integer data: each names the key and the file, and
 * the model is left as it was. inv_freq buffers are skipped; a tied model takes a copy of the
 * embedding as lm_head.weight but refuses a different one. */
static void test_load_errors(void **state)
{
    lf_env *f = *state;
    vnm_ctx *ctx = f->ctx;
    vnm_llama_config cfg = small_config(false, true);
    vnm_llama *m = vnm_llama_new(ctx, &cfg, NULL);
    char *path = tu_path(f->dir, "bad.safetensors"), err[512];
    entry_set s;
    entries_of(ctx, m, &s);
    for (int i = 0; i < s.n; i++) /* values unlike the model's, so a partial load would show */
        for (int64_t j = 0; j < vnm_numel(vnm_llama_param_at(m, i).tensor); j++)
            s.data[i][j] = 0.25f + 0.001f * (float)j;
    float *before = lf_logits(ctx, m, small_ids, 2, 7, 0);

    entry_set t = s;
    int k = entry_index(&t, "model.layers.1.mlp.down_proj.bias");
    t.e[k] = t.e[--t.n];
    expect_load_error(ctx, m, &t, path, "missing tensor 'model.layers.1.mlp.down_proj.bias' "
                                        "(the model's is [8] f32)");

    t = s;
    k = entry_index(&t, "model.layers.0.self_attn.k_proj.weight");
    float big[64] = {0};
    t.e[k].shape = VNM_SHAPE(8, 8);
    t.e[k].data = big;
    expect_load_error(ctx, m, &t, path,
                      "tensor 'model.layers.0.self_attn.k_proj.weight' is [8, 8] f32 in the file, "
                      "the model's is [4, 8] f32");

    t = s;
    float extra[8] = {0};
    t.e[t.n++] = (vnm_safetensors_entry){"model.layers.0.self_attn.q_norm.weight", VNM_DTYPE_F32,
                                         1, VNM_SHAPE(8), extra};
    expect_load_error(ctx, m, &t, path,
                      "unexpected tensor 'model.layers.0.self_attn.q_norm.weight'");

    t = s;
    int64_t ints[8] = {0};
    k = entry_index(&t, "model.norm.weight");
    t.e[k].dtype = VNM_DTYPE_I64;
    t.e[k].data = ints;
    expect_load_error(ctx, m, &t, path,
                      "tensor 'model.norm.weight' is [8] i64, expected f32, bf16 or f16 data");

    float *after = lf_logits(ctx, m, small_ids, 2, 7, 0);
    assert_memory_equal(before, after, 2 * 7 * 11 * sizeof(float));
    free(after);

    t = s;
    float inv_freq[2] = {1.0f, 0.01f};
    t.e[t.n++] = (vnm_safetensors_entry){"model.layers.1.self_attn.rotary_emb.inv_freq",
                                         VNM_DTYPE_F32, 1, VNM_SHAPE(2), inv_freq};
    if (write_and_load(ctx, m, &t, path, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    float *norm = tu_host(ctx, m->norm);
    assert_true(norm[2] == 0.252f);
    free(norm);

    assert_int_not_equal(vnm_llama_load(ctx, m, "/nonexistent/w.safetensors", err, sizeof err),
                         VNM_OK);
    tu_assert_has(err, "/nonexistent/w.safetensors");

    /* tied */
    vnm_llama_config tcfg = small_config(true, false);
    vnm_llama *tm = vnm_llama_new(ctx, &tcfg, NULL);
    entry_set ts;
    entries_of(ctx, tm, &ts);
    int e = entry_index(&ts, "model.embed_tokens.weight");
    float *copy = malloc(11 * 8 * sizeof *copy);
    memcpy(copy, ts.data[e], 11 * 8 * sizeof *copy);
    ts.e[ts.n++] = (vnm_safetensors_entry){"lm_head.weight", VNM_DTYPE_F32, 2, VNM_SHAPE(11, 8),
                                           copy};
    if (write_and_load(ctx, tm, &ts, path, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    copy[17] += 1.0f;
    expect_load_error(ctx, tm, &ts, path,
                      "tensor 'lm_head.weight' differs from 'model.embed_tokens.weight', but the "
                      "config ties them");
    free(copy);
    for (int i = 0; i < ts.n - 1; i++) free(ts.data[i]);

    for (int i = 0; i < s.n; i++) free(s.data[i]);
    free(before);
    free(path);
    vnm_llama_free(m);
    vnm_llama_free(tm);
}

/* ---- gradients, causality ---- */

typedef struct {
    vnm_llama *m;
    int64_t pos;
} fwd_case;

static vnm_tensor *f_llama(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)in; /* the inputs are the model's own parameters */
    fwd_case *c = user;
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_I64, 2, VNM_SHAPE(2, 7), small_ids);
    return vnm_llama_forward(ctx, c->m, x, c->pos);
}

/* Finite differences through the whole model (embedding, norms, every projection, biases, GQA
 * attention, RoPE at an offset, SwiGLU, lm_head; tied: the embedding through both uses). */
static void test_gradcheck(void **state)
{
    vnm_ctx *ctx = ((lf_env *)*state)->ctx;
    for (int tied = 0; tied <= 1; tied++) {
        vnm_llama_config cfg = small_config(tied, !tied);
        vnm_llama *m = vnm_llama_new(ctx, &cfg, NULL);
        assert_non_null(m);
        randomise(ctx, m);
        /* RMSNorm divides by the rows' RMS: a larger embedding keeps the second-order terms of
         * a 1e-2 step small (the norm is scale-invariant, so the function is the same kind) */
        assert_int_equal(vnm_rng_uniform(ctx, m->embed_tokens, -2.0f, 2.0f), VNM_OK);
        fwd_case c = {m, 3};
        vnm_llama_layer *y0 = &m->layers[0], *y1 = &m->layers[1];
        vnm_tensor *in[] = {m->embed_tokens,
                            y0->input_layernorm,
                            y0->q_proj.weight,
                            y0->k_proj.weight,
                            y1->v_proj.weight,
                            y1->o_proj.weight,
                            y0->post_attention_layernorm,
                            y0->gate_proj.weight,
                            y1->up_proj.weight,
                            y1->down_proj.weight,
                            m->norm,
                            tied ? y0->k_proj.weight : m->lm_head.weight,
                            tied ? y0->q_proj.weight : y0->k_proj.bias,
                            tied ? y1->o_proj.weight : y1->down_proj.bias};
        tu_gradcheck(ctx, f_llama, 14, in, &c);
        vnm_llama_free(m);
    }
}

/* Changing a later token leaves every earlier position's logits unchanged, bit for bit; shifting
 * every position (pos_offset) changes the logits only by rounding, as RoPE scores depend on
 * relative positions alone. */
static void test_causal(void **state)
{
    vnm_ctx *ctx = ((lf_env *)*state)->ctx;
    int64_t B, T;
    int64_t *ids = tiny_ids(&B, &T);
    vnm_llama *m = lf_model(ctx, "llama_tiny", "model.safetensors", NULL);
    const int64_t V = 64, t0 = 6;
    float *a = lf_logits(ctx, m, ids, B, T, 0);
    for (int64_t b = 0; b < B; b++) ids[b * T + t0] = (ids[b * T + t0] + 1) % V;
    float *c = lf_logits(ctx, m, ids, B, T, 0);
    for (int64_t b = 0; b < B; b++) {
        const float *ra = a + b * T * V, *rc = c + b * T * V;
        assert_memory_equal(ra, rc, (size_t)(t0 * V) * sizeof *ra);
        assert_true(memcmp(ra + t0 * V, rc + t0 * V, (size_t)V * sizeof *ra) != 0);
    }
    float *s = lf_logits(ctx, m, ids, B, T, 5);
    assert_true(memcmp(s, c, (size_t)(B * T * V) * sizeof *s) != 0);
    double e = lf_rel_err(s, c, B * T * V);
    if (e > 1e-4) fail_msg("pos_offset 5 vs 0: logits differ by %.3g relative", e);
    free(a);
    free(c);
    free(s);
    free(ids);
    vnm_llama_free(m);
}

/* ---- construction ---- */

static void stats(vnm_ctx *ctx, const vnm_tensor *t, double *mean, double *std)
{
    int64_t n = vnm_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    if (t->dtype == VNM_DTYPE_F32) {
        assert_int_equal(vnm_tensor_to_host(ctx, t, h), VNM_OK);
    } else {
        uint16_t *r = malloc((size_t)n * sizeof *r);
        assert_int_equal(vnm_tensor_to_host(ctx, t, r), VNM_OK);
        for (int64_t i = 0; i < n; i++) h[i] = vnm_bf16_to_f32(r[i]);
        free(r);
    }
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s += h[i];
        s2 += (double)h[i] * h[i];
    }
    *mean = s / (double)n;
    *std = sqrt(s2 / (double)n - *mean * *mean);
    free(h);
}

static vnm_llama_config init_config(void)
{
    vnm_llama_config c = vnm_llama_config_default();
    c.vocab_size = 300;
    c.hidden_size = 64;
    c.intermediate_size = 160;
    c.num_hidden_layers = 1;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.initializer_range = 0.05;
    c.pad_token_id = 3;
    c.mlp_bias = true;
    return c; /* head_dim 0: hidden / heads */
}

/* transformers' _init_weights: normal(0, initializer_range) for linears and the embedding (its
 * pad row zero), zero biases, unit norms. A model built frozen in bf16 draws the same stream and
 * holds its rounding. */
static void test_init(void **state)
{
    vnm_ctx *ctx = ((lf_env *)*state)->ctx;
    vnm_llama_config cfg = init_config();
    vnm_llama *m = vnm_llama_new(ctx, &cfg, NULL);
    assert_non_null(m);
    assert_int_equal(m->cfg.head_dim, 16);
    assert_int_equal(m->cfg.num_key_value_heads, 2);
    double mean, std;
    stats(ctx, m->embed_tokens, &mean, &std); /* 19200 draws */
    assert_true(fabs(mean) < 2e-3 && fabs(std - 0.05) < 1.5e-3);
    stats(ctx, m->layers[0].gate_proj.weight, &mean, &std);
    assert_true(fabs(mean) < 3e-3 && fabs(std - 0.05) < 2e-3);
    stats(ctx, m->lm_head.weight, &mean, &std);
    assert_true(fabs(std - 0.05) < 1.5e-3);
    float *e = tu_host(ctx, m->embed_tokens);
    for (int j = 0; j < 64; j++) assert_true(e[3 * 64 + j] == 0.0f && e[4 * 64 + j] != 0.0f);
    free(e);
    stats(ctx, m->layers[0].down_proj.bias, &mean, &std);
    assert_true(mean == 0 && std == 0);
    stats(ctx, m->layers[0].post_attention_layernorm, &mean, &std);
    assert_true(mean == 1 && std == 0);

    /* the same seed built frozen in bf16: the f32 draws, rounded */
    vnm_ctx *c1 = tu_ctx(), *c2 = tu_ctx();
    vnm_llama_options opt = {.frozen = true, .base_dtype = VNM_DTYPE_BF16};
    vnm_llama *f32 = vnm_llama_new(c1, &cfg, NULL), *bf = vnm_llama_new(c2, &cfg, &opt);
    assert_non_null(bf);
    for (int i = 0; i < vnm_llama_param_count(f32); i++) {
        vnm_llama_param p = vnm_llama_param_at(f32, i), q = vnm_llama_param_at(bf, i);
        int64_t n = vnm_numel(p.tensor);
        float *x = tu_host(c1, p.tensor);
        if (q.tensor->dtype == VNM_DTYPE_BF16) {
            assert_false(q.tensor->requires_grad);
            uint16_t *r = malloc((size_t)n * sizeof *r);
            assert_int_equal(vnm_tensor_to_host(c2, q.tensor, r), VNM_OK);
            for (int64_t j = 0; j < n; j++) assert_int_equal(r[j], vnm_f32_to_bf16(x[j]));
            free(r);
        } else {
            float *y = tu_host(c2, q.tensor);
            assert_memory_equal(x, y, (size_t)n * sizeof *x);
            free(y);
        }
        free(x);
    }
    assert_true(bf->norm->requires_grad); /* freeze_norms off */
    vnm_llama_free(f32);
    vnm_llama_free(bf);
    vnm_ctx_destroy(c1);
    vnm_ctx_destroy(c2);
    vnm_llama_free(m);
}

/* State-dict order and names as transformers' named_parameters(), and its parameter counts. */
static void test_params(void **state)
{
    vnm_ctx *ctx = ((lf_env *)*state)->ctx;
    static const char *const layer0[] = {
        "self_attn.q_proj.weight", "self_attn.q_proj.bias",  "self_attn.k_proj.weight",
        "self_attn.k_proj.bias",   "self_attn.v_proj.weight", "self_attn.v_proj.bias",
        "self_attn.o_proj.weight", "self_attn.o_proj.bias",  "mlp.gate_proj.weight",
        "mlp.gate_proj.bias",      "mlp.up_proj.weight",     "mlp.up_proj.bias",
        "mlp.down_proj.weight",    "mlp.down_proj.bias",     "input_layernorm.weight",
        "post_attention_layernorm.weight"};
    vnm_llama_config cfg = lf_config("llama_tied");
    vnm_llama *m = vnm_llama_new(ctx, &cfg, NULL);
    assert_int_equal(vnm_llama_param_count(m), 34);
    assert_int_equal(vnm_llama_numel(m), 13624);
    assert_string_equal(vnm_llama_param_at(m, 0).name, "model.embed_tokens.weight");
    for (int l = 0; l < 2; l++)
        for (int j = 0; j < 16; j++) {
            char want[96];
            snprintf(want, sizeof want, "model.layers.%d.%s", l, layer0[j]);
            vnm_llama_param p = vnm_llama_param_at(m, 1 + 16 * l + j);
            assert_string_equal(p.name, want);
            assert_string_equal(p.tensor->name, want);
            assert_true((p.linear != NULL) == (strstr(want, "_proj.") != NULL));
        }
    assert_string_equal(vnm_llama_param_at(m, 33).name, "model.norm.weight");
    vnm_llama_param q = vnm_llama_param_at(m, 1);
    assert_ptr_equal(q.tensor, q.linear->weight);
    assert_string_equal(q.linear->name, "model.layers.0.self_attn.q_proj");
    assert_int_equal(q.tensor->shape[0], 32); /* heads · head_dim, not hidden */
    assert_int_equal(m->layers[0].o_proj.in, 32);
    assert_int_equal(m->n_linears, 15);
    assert_ptr_equal(m->linears[14], &m->lm_head);
    assert_ptr_equal(m->lm_head.weight, m->embed_tokens);
    vnm_llama_free(m);

    cfg = lf_config("llama_tiny");
    m = vnm_llama_new(ctx, &cfg, NULL);
    assert_int_equal(vnm_llama_param_count(m), 21);
    assert_int_equal(vnm_llama_numel(m), 27296);
    assert_string_equal(vnm_llama_param_at(m, 20).name, "lm_head.weight");
    assert_ptr_equal(vnm_llama_param_at(m, 20).linear, &m->lm_head);
    assert_int_equal(m->layers[1].k_proj.weight->shape[0], 16); /* 2 KV heads · 8 */
    assert_null(m->layers[1].k_proj.bias);
    vnm_llama_free(m);
}

/* Bad configs, options and inputs fail with a message, not a crash. */
static void test_bad_input(void **state)
{
    vnm_ctx *ctx = ((lf_env *)*state)->ctx;
    vnm_llama_config cfg = small_config(false, false);
    cfg.num_key_value_heads = 3;
    assert_null(vnm_llama_new(ctx, &cfg, NULL));
    tu_assert_error(ctx, "num_attention_heads (2) is not a multiple of num_key_value_heads (3)");
    cfg = small_config(false, false);
    cfg.head_dim = 0;
    cfg.hidden_size = 9;
    assert_null(vnm_llama_new(ctx, &cfg, NULL));
    tu_assert_error(ctx, "head_dim is 0");
    cfg = small_config(false, false);
    vnm_llama_options opt = {.frozen = true, .base_dtype = VNM_DTYPE_I32};
    assert_null(vnm_llama_new(ctx, &cfg, &opt));
    tu_assert_error(ctx, "a frozen base is f32, bf16 or f16, not i32");

    vnm_llama *m = vnm_llama_new(ctx, &cfg, NULL);
    assert_int_equal(vnm_llama_freeze_base(ctx, m, VNM_DTYPE_U8, false), VNM_ERR_INPUT);
    tu_assert_error(ctx, "cannot freeze the base as u8");
    vnm_tensor *f = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(2, 3));
    assert_null(vnm_llama_forward(ctx, m, f, 0));
    tu_assert_error(ctx, "expected [B, T] i32 or i64");
    vnm_tensor *ids = vnm_tensor_new(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(3));
    assert_null(vnm_llama_forward(ctx, m, ids, 0));
    tu_assert_error(ctx, "expected [B, T]");
    ids = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(1, 2), (int32_t[]){1, 11});
    assert_null(vnm_llama_forward(ctx, m, ids, 0));
    tu_assert_error(ctx, "out of range");
    ids = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(1, 2), (int32_t[]){1, 10});
    assert_null(vnm_llama_forward(ctx, m, ids, -1));
    tu_assert_error(ctx, "pos_offset -1");
    vnm_tensor *logits = vnm_llama_forward(ctx, m, ids, 0);
    assert_non_null(logits);
    vnm_tensor *tg = vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(1, 3));
    assert_null(vnm_llama_loss(ctx, logits, tg));
    tu_assert_error(ctx, "expected logits [B, T, V] and contiguous targets [B, T]");
    assert_null(vnm_llama_forward(ctx, m, NULL, 0));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
    vnm_llama_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_load),
        cmocka_unit_test_setup_teardown(test_config_v4_layout, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_config_errors, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_config_save, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_conformance_tiny, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_conformance_tied, lf_setup, lf_teardown),
        cmocka_unit_test(test_conformance_cuda),
        cmocka_unit_test_setup_teardown(test_bf16_shards, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_frozen_bf16, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_gradcheck, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_causal, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_init, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_params, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, lf_setup, lf_teardown),
    };
    return cmocka_run_group_tests_name("llama", tests, NULL, NULL);
}
