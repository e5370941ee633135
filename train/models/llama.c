/* train/models/llama.c — the LLaMA model of llama.h: config.json reading and writing, construction
 * with transformers' init, the state-dict table under HF names, freezing the base, the forward pass
 * and loss on the autograd ops, and safetensors import/export.
 *
 * Numerics follow modeling_llama.py: RMSNorm computes x·rsqrt(mean(x²) + eps)·w in f32
 * (vnm_rmsnorm); RoPE is the rotate-half form with inv_freq = 1/theta^(2i/head_dim) in f32
 * (vnm_rope); attention scores are scaled by head_dim^-0.5 rounded once to f32, as torch applies
 * the Python float; query head h reads KV head h / (heads / kv_heads) (repeat_kv).
 */
#include "llama.h"

#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../json.h"
#include "../safetensors.h"

/* ---- host dtype conversion (f32, bf16, f16) ---- */

static float host_load(const void *src, vnm_dtype dt, int64_t i)
{
    switch (dt) {
    case VNM_DTYPE_BF16: return vnm_bf16_to_f32(((const uint16_t *)src)[i]);
    case VNM_DTYPE_F16: return vnm_f16_to_f32(((const uint16_t *)src)[i]);
    default: return ((const float *)src)[i];
    }
}

/* dst[n] in dst_dt from src[n] in src_dt; exact widening, round to nearest even narrowing. */
static void host_convert(void *dst, vnm_dtype dst_dt, const void *src, vnm_dtype src_dt, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = host_load(src, src_dt, i);
        if (dst_dt == VNM_DTYPE_BF16)
            ((uint16_t *)dst)[i] = vnm_f32_to_bf16(v);
        else if (dst_dt == VNM_DTYPE_F16)
            ((uint16_t *)dst)[i] = vnm_f32_to_f16(v);
        else
            ((float *)dst)[i] = v;
    }
}

static bool is_weight_dtype(vnm_dtype dt)
{
    return dt == VNM_DTYPE_F32 || dt == VNM_DTYPE_BF16 || dt == VNM_DTYPE_F16;
}

/* ---- config ---- */

vnm_llama_config vnm_llama_config_default(void)
{
    return (vnm_llama_config){.max_position_embeddings = 2048, .rms_norm_eps = 1e-6,
                              .rope_theta = 10000.0, .initializer_range = 0.02,
                              .bos_token_id = 1, .pad_token_id = -1, .n_eos_token_ids = 1,
                              .eos_token_ids = {2}};
}

vnm_status vnm_llama_config_check(const vnm_llama_config *c, char *err, size_t err_len)
{
    const struct {
        const char *key;
        int64_t value;
    } sizes[] = {{"vocab_size", c->vocab_size},
                 {"hidden_size", c->hidden_size},
                 {"intermediate_size", c->intermediate_size},
                 {"num_hidden_layers", c->num_hidden_layers},
                 {"num_attention_heads", c->num_attention_heads},
                 {"num_key_value_heads", c->num_key_value_heads},
                 {"head_dim", c->head_dim},
                 {"max_position_embeddings", c->max_position_embeddings}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value <= 0)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                              "%s is %lld, expected a positive integer", sizes[i].key,
                              (long long)sizes[i].value);
    if (c->num_attention_heads % c->num_key_value_heads)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "num_attention_heads (%lld) is not a multiple of num_key_value_heads "
                          "(%lld): each KV head serves a whole group of query heads",
                          (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
    if (c->head_dim % 2)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "head_dim (%lld) must be even: rotate-half RoPE pairs x[i] with "
                          "x[i + head_dim/2]", (long long)c->head_dim);
    if (!(c->rms_norm_eps >= 0) || isinf(c->rms_norm_eps))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "rms_norm_eps is %g, expected >= 0",
                          c->rms_norm_eps);
    if (!(c->rope_theta > 0) || isinf(c->rope_theta))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "rope_theta is %g, expected > 0",
                          c->rope_theta);
    if (!(c->initializer_range >= 0) || isinf(c->initializer_range))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "initializer_range is %g, expected >= 0",
                          c->initializer_range);
    if (c->pad_token_id >= c->vocab_size)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "pad_token_id (%lld) is outside the vocabulary (vocab_size %lld)",
                          (long long)c->pad_token_id, (long long)c->vocab_size);
    if (c->n_eos_token_ids < 0 || c->n_eos_token_ids > VNM_LLAMA_MAX_EOS)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%d eos_token_id values, at most %d",
                          c->n_eos_token_ids, VNM_LLAMA_MAX_EOS);
    return VNM_OK;
}

/* The file being read, for messages that name it and the key. */
typedef struct {
    const char *path;
    const vnm_json *root;
    char *err;
    size_t err_len;
} cfg_file;

static vnm_status cfg_fail(const cfg_file *f, const vnm_json *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static vnm_status cfg_fail(const cfg_file *f, const vnm_json *at, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at)
        return vnm_errbuf(f->err, f->err_len, VNM_ERR_INPUT, "llama: %s:%d:%d: %s", f->path,
                          at->line, at->column, msg);
    return vnm_errbuf(f->err, f->err_len, VNM_ERR_INPUT, "llama: %s: %s", f->path, msg);
}

/* The value of key in obj; NULL when absent or null. */
static const vnm_json *cfg_value(const vnm_json *obj, const char *key)
{
    const vnm_json *v = vnm_json_get(obj, key);
    return v && v->kind != VNM_JSON_NULL ? v : NULL;
}

static vnm_status cfg_missing(const cfg_file *f, const char *key, const char *expected)
{
    const vnm_json *v = vnm_json_get(f->root, key);
    if (v) return cfg_fail(f, v, "'%s' is null, expected %s", key, expected);
    return cfg_fail(f, NULL, "missing key '%s' (expected %s)", key, expected);
}

/* An integer key; absent or null gives dflt unless required. */
static vnm_status cfg_int(const cfg_file *f, const char *key, bool required, int64_t dflt,
                          int64_t *out)
{
    const vnm_json *v = cfg_value(f->root, key);
    if (!v) {
        if (required) return cfg_missing(f, key, "an integer");
        *out = dflt;
        return VNM_OK;
    }
    if (v->kind != VNM_JSON_NUMBER || !v->is_int)
        return cfg_fail(f, v, "'%s' is a %s, expected an integer", key,
                        v->kind == VNM_JSON_NUMBER ? "fractional number"
                                                   : vnm_json_kind_name(v->kind));
    *out = v->integer;
    return VNM_OK;
}

static vnm_status cfg_number(const cfg_file *f, const vnm_json *obj, const char *key,
                             const char *shown, double dflt, double *out)
{
    const vnm_json *v = cfg_value(obj, key);
    if (!v) {
        *out = dflt;
        return VNM_OK;
    }
    if (v->kind != VNM_JSON_NUMBER)
        return cfg_fail(f, v, "'%s' is a %s, expected a number", shown,
                        vnm_json_kind_name(v->kind));
    *out = v->number;
    return VNM_OK;
}

static vnm_status cfg_bool(const cfg_file *f, const char *key, bool dflt, bool *out)
{
    const vnm_json *v = cfg_value(f->root, key);
    if (!v) {
        *out = dflt;
        return VNM_OK;
    }
    if (v->kind != VNM_JSON_BOOL)
        return cfg_fail(f, v, "'%s' is a %s, expected true or false", key,
                        vnm_json_kind_name(v->kind));
    *out = v->boolean;
    return VNM_OK;
}

/* A string key that, when present, must equal want; *present tells whether it was there. */
static vnm_status cfg_string_is(const cfg_file *f, const vnm_json *obj, const char *key,
                                const char *shown, const char *want, bool *present)
{
    const vnm_json *v = cfg_value(obj, key);
    if (present) *present = v != NULL;
    if (!v) return VNM_OK;
    if (v->kind != VNM_JSON_STRING)
        return cfg_fail(f, v, "'%s' is a %s, expected \"%s\"", shown, vnm_json_kind_name(v->kind),
                        want);
    if (strcmp(v->string, want) != 0)
        return cfg_fail(f, v, "'%s' is \"%s\", expected \"%s\"", shown, v->string, want);
    return VNM_OK;
}

/* model_type "llama", or without it an architectures list naming LlamaForCausalLM. */
static vnm_status cfg_model_type(const cfg_file *f)
{
    bool present;
    vnm_status rc = cfg_string_is(f, f->root, "model_type", "model_type", "llama", &present);
    if (rc != VNM_OK || present) return rc;
    const vnm_json *arch = cfg_value(f->root, "architectures");
    for (size_t i = 0; arch && arch->kind == VNM_JSON_ARRAY && i < arch->count; i++) {
        const vnm_json *a = vnm_json_at(arch, i);
        if (a->kind == VNM_JSON_STRING && strcmp(a->string, "LlamaForCausalLM") == 0)
            return VNM_OK;
    }
    return cfg_fail(f, arch, "missing key 'model_type' (expected \"llama\") and no "
                    "'architectures' entry \"LlamaForCausalLM\"");
}

/* rope_theta at the top level (transformers 4) or in rope_parameters (transformers 5); plain
 * RoPE only: rope_scaling null and rope_parameters.rope_type "default". */
static vnm_status cfg_rope(const cfg_file *f, double *theta)
{
    const vnm_json *scaling = cfg_value(f->root, "rope_scaling");
    if (scaling) {
        const vnm_json *type = scaling->kind == VNM_JSON_OBJECT
                                   ? cfg_value(scaling, "rope_type") : NULL;
        if (!type && scaling->kind == VNM_JSON_OBJECT) type = cfg_value(scaling, "type");
        return cfg_fail(f, scaling, "'rope_scaling' is set%s%s%s; only plain RoPE is supported "
                        "(expected null)", type && type->kind == VNM_JSON_STRING ? " (type \"" : "",
                        type && type->kind == VNM_JSON_STRING ? type->string : "",
                        type && type->kind == VNM_JSON_STRING ? "\")" : "");
    }
    vnm_status rc = cfg_number(f, f->root, "rope_theta", "rope_theta", 10000.0, theta);
    const vnm_json *params = cfg_value(f->root, "rope_parameters");
    if (rc != VNM_OK || !params) return rc;
    if (params->kind != VNM_JSON_OBJECT)
        return cfg_fail(f, params, "'rope_parameters' is a %s, expected an object",
                        vnm_json_kind_name(params->kind));
    rc = cfg_string_is(f, params, "rope_type", "rope_parameters.rope_type", "default", NULL);
    double inner;
    if (rc == VNM_OK)
        rc = cfg_number(f, params, "rope_theta", "rope_parameters.rope_theta", *theta, &inner);
    if (rc != VNM_OK) return rc;
    if (cfg_value(f->root, "rope_theta") && inner != *theta)
        return cfg_fail(f, params, "'rope_parameters.rope_theta' (%g) differs from 'rope_theta' "
                        "(%g)", inner, *theta);
    *theta = inner;
    return VNM_OK;
}

/* A token id: absent gives dflt, null -1. */
static vnm_status cfg_id(const cfg_file *f, const char *key, int64_t dflt, int64_t *out)
{
    if (!vnm_json_get(f->root, key)) {
        *out = dflt;
        return VNM_OK;
    }
    return cfg_int(f, key, false, -1, out);
}

/* eos_token_id: null, an integer, or a list of integers. */
static vnm_status cfg_eos(const cfg_file *f, vnm_llama_config *c)
{
    const vnm_json *v = cfg_value(f->root, "eos_token_id");
    if (!v) {
        c->n_eos_token_ids = vnm_json_get(f->root, "eos_token_id") ? 0 : 1; /* null, or default */
        return VNM_OK;
    }
    size_t n = v->kind == VNM_JSON_ARRAY ? v->count : 1;
    if (n > VNM_LLAMA_MAX_EOS)
        return cfg_fail(f, v, "'eos_token_id' lists %zu ids, at most %d supported", n,
                        VNM_LLAMA_MAX_EOS);
    for (size_t i = 0; i < n; i++) {
        const vnm_json *e = v->kind == VNM_JSON_ARRAY ? vnm_json_at(v, i) : v;
        if (e->kind != VNM_JSON_NUMBER || !e->is_int || e->integer < 0)
            return cfg_fail(f, e, "'eos_token_id' holds a %s, expected a token id (or a list of "
                            "them)", vnm_json_kind_name(e->kind));
        c->eos_token_ids[i] = e->integer;
    }
    c->n_eos_token_ids = (int)n;
    return VNM_OK;
}

static vnm_status cfg_read(const cfg_file *f, vnm_llama_config *c)
{
    if (f->root->kind != VNM_JSON_OBJECT)
        return cfg_fail(f, f->root, "the config is a %s, expected an object",
                        vnm_json_kind_name(f->root->kind));
    vnm_status rc = cfg_model_type(f);
    if (rc == VNM_OK) rc = cfg_string_is(f, f->root, "hidden_act", "hidden_act", "silu", NULL);
    if (rc == VNM_OK) rc = cfg_int(f, "vocab_size", true, 0, &c->vocab_size);
    if (rc == VNM_OK) rc = cfg_int(f, "hidden_size", true, 0, &c->hidden_size);
    if (rc == VNM_OK) rc = cfg_int(f, "intermediate_size", true, 0, &c->intermediate_size);
    if (rc == VNM_OK) rc = cfg_int(f, "num_hidden_layers", true, 0, &c->num_hidden_layers);
    if (rc == VNM_OK) rc = cfg_int(f, "num_attention_heads", true, 0, &c->num_attention_heads);
    if (rc == VNM_OK)
        rc = cfg_int(f, "num_key_value_heads", false, c->num_attention_heads,
                     &c->num_key_value_heads);
    if (rc == VNM_OK) rc = cfg_int(f, "head_dim", false, 0, &c->head_dim);
    if (rc == VNM_OK)
        rc = cfg_int(f, "max_position_embeddings", false, c->max_position_embeddings,
                     &c->max_position_embeddings);
    if (rc == VNM_OK)
        rc = cfg_number(f, f->root, "rms_norm_eps", "rms_norm_eps", c->rms_norm_eps,
                        &c->rms_norm_eps);
    if (rc == VNM_OK) rc = cfg_rope(f, &c->rope_theta);
    if (rc == VNM_OK)
        rc = cfg_number(f, f->root, "initializer_range", "initializer_range",
                        c->initializer_range, &c->initializer_range);
    if (rc == VNM_OK)
        rc = cfg_bool(f, "tie_word_embeddings", false, &c->tie_word_embeddings);
    if (rc == VNM_OK) rc = cfg_bool(f, "attention_bias", false, &c->attention_bias);
    if (rc == VNM_OK) rc = cfg_bool(f, "mlp_bias", false, &c->mlp_bias);
    if (rc == VNM_OK) rc = cfg_id(f, "bos_token_id", c->bos_token_id, &c->bos_token_id);
    if (rc == VNM_OK) rc = cfg_id(f, "pad_token_id", c->pad_token_id, &c->pad_token_id);
    if (rc == VNM_OK) rc = cfg_eos(f, c);
    if (rc != VNM_OK) return rc;
    double dropout;
    rc = cfg_number(f, f->root, "attention_dropout", "attention_dropout", 0.0, &dropout);
    if (rc == VNM_OK && dropout != 0.0)
        return cfg_fail(f, vnm_json_get(f->root, "attention_dropout"),
                        "'attention_dropout' is %g, expected 0 (attention dropout is not "
                        "implemented)", dropout);
    if (rc != VNM_OK || c->head_dim != 0 || c->num_attention_heads <= 0) return rc;
    if (c->hidden_size % c->num_attention_heads)
        return cfg_fail(f, vnm_json_get(f->root, "num_attention_heads"),
                        "'hidden_size' (%lld) is not a multiple of 'num_attention_heads' (%lld) "
                        "and no 'head_dim' is given", (long long)c->hidden_size,
                        (long long)c->num_attention_heads);
    c->head_dim = c->hidden_size / c->num_attention_heads;
    return VNM_OK;
}

vnm_status vnm_llama_config_load(const char *path, vnm_llama_config *cfg, char *err,
                                 size_t err_len)
{
    char jerr[384];
    vnm_json *root = vnm_json_parse_file(path, jerr, sizeof jerr);
    if (!root) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "llama: %s", jerr);
    vnm_llama_config c = vnm_llama_config_default();
    cfg_file f = {path, root, err, err_len};
    vnm_status rc = cfg_read(&f, &c);
    vnm_json_free(root);
    if (rc != VNM_OK) return rc;
    char msg[384];
    if (vnm_llama_config_check(&c, msg, sizeof msg) != VNM_OK)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "llama: %s: %s", path, msg);
    *cfg = c;
    return VNM_OK;
}

static const char *torch_dtype_name(vnm_dtype dt)
{
    switch (dt) {
    case VNM_DTYPE_F32: return "float32";
    case VNM_DTYPE_BF16: return "bfloat16";
    case VNM_DTYPE_F16: return "float16";
    default: return NULL;
    }
}

/* An id that may be null (-1). */
static vnm_json *json_id(int64_t id)
{
    return id < 0 ? vnm_json_new(VNM_JSON_NULL) : vnm_json_new_int(id);
}

static vnm_json *json_bool(bool b)
{
    vnm_json *v = vnm_json_new(VNM_JSON_BOOL);
    if (v) v->boolean = b;
    return v;
}

static vnm_json *json_eos(const vnm_llama_config *c)
{
    if (c->n_eos_token_ids == 0) return vnm_json_new(VNM_JSON_NULL);
    if (c->n_eos_token_ids == 1) return vnm_json_new_int(c->eos_token_ids[0]);
    vnm_json *a = vnm_json_new(VNM_JSON_ARRAY);
    for (int i = 0; a && i < c->n_eos_token_ids; i++)
        if (vnm_json_push(a, vnm_json_new_int(c->eos_token_ids[i])) != VNM_OK) {
            vnm_json_free(a);
            return NULL;
        }
    return a;
}

/* The transformers 4 layout (rope_theta and rope_scaling at the top, torch_dtype), which
 * transformers 5 still reads. */
static vnm_json *config_json(const vnm_llama_config *c, vnm_dtype torch_dtype)
{
    vnm_json *o = vnm_json_new(VNM_JSON_OBJECT), *arch = vnm_json_new(VNM_JSON_ARRAY);
    if (!o || !arch || vnm_json_push(arch, vnm_json_new_string("LlamaForCausalLM")) != VNM_OK) {
        vnm_json_free(o);
        vnm_json_free(arch);
        return NULL;
    }
    struct {
        const char *key;
        vnm_json *value;
    } kv[] = {
        {"architectures", arch},
        {"model_type", vnm_json_new_string("llama")},
        {"vocab_size", vnm_json_new_int(c->vocab_size)},
        {"hidden_size", vnm_json_new_int(c->hidden_size)},
        {"intermediate_size", vnm_json_new_int(c->intermediate_size)},
        {"num_hidden_layers", vnm_json_new_int(c->num_hidden_layers)},
        {"num_attention_heads", vnm_json_new_int(c->num_attention_heads)},
        {"num_key_value_heads", vnm_json_new_int(c->num_key_value_heads)},
        {"head_dim", vnm_json_new_int(c->head_dim)},
        {"hidden_act", vnm_json_new_string("silu")},
        {"max_position_embeddings", vnm_json_new_int(c->max_position_embeddings)},
        {"rms_norm_eps", vnm_json_new_number(c->rms_norm_eps)},
        {"rope_theta", vnm_json_new_number(c->rope_theta)},
        {"rope_scaling", vnm_json_new(VNM_JSON_NULL)},
        {"attention_bias", json_bool(c->attention_bias)},
        {"attention_dropout", vnm_json_new_number(0.0)},
        {"mlp_bias", json_bool(c->mlp_bias)},
        {"tie_word_embeddings", json_bool(c->tie_word_embeddings)},
        {"initializer_range", vnm_json_new_number(c->initializer_range)},
        {"bos_token_id", json_id(c->bos_token_id)},
        {"eos_token_id", json_eos(c)},
        {"pad_token_id", json_id(c->pad_token_id)},
        {"torch_dtype", vnm_json_new_string(torch_dtype_name(torch_dtype))},
    };
    bool ok = true;
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) /* add frees a NULL or failed item */
        ok = kv[i].value && vnm_json_add(o, kv[i].key, kv[i].value) == VNM_OK && ok;
    if (!ok) {
        vnm_json_free(o);
        return NULL;
    }
    return o;
}

vnm_status vnm_llama_config_save(const vnm_llama_config *cfg, const char *path,
                                 vnm_dtype torch_dtype, char *err, size_t err_len)
{
    char msg[384];
    if (vnm_llama_config_check(cfg, msg, sizeof msg) != VNM_OK)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "llama: %s: %s", path, msg);
    if (!torch_dtype_name(torch_dtype))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "llama: %s: torch_dtype %s is not a weight dtype (f32, bf16 or f16)",
                          path, vnm_dtype_name(torch_dtype));
    vnm_json *o = config_json(cfg, torch_dtype);
    char *text = NULL;
    size_t len = 0;
    vnm_status rc = o ? vnm_json_write(o, &text, &len, msg, sizeof msg) : VNM_ERR_RUNTIME;
    vnm_json_free(o);
    if (rc != VNM_OK) {
        free(text);
        return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "llama: %s: %s", path,
                          o ? msg : "out of memory");
    }
    /* to a temporary name, then renamed: a reader never sees half a config */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    bool ok = fp && fwrite(text, 1, len, fp) == len && fputc('\n', fp) != EOF;
    if (fp) ok = fclose(fp) == 0 && ok;
    ok = ok && rename(tmp, path) == 0;
    free(text);
    if (!ok) {
        remove(tmp);
        return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "llama: %s: cannot write the config",
                          path);
    }
    return VNM_OK;
}

/* ---- construction ---- */

static bool linear_make(vnm_ctx *ctx, vnm_llama_linear *l, const char *name, int64_t in,
                        int64_t out, bool bias, vnm_dtype wdtype)
{
    snprintf(l->name, sizeof l->name, "%s", name);
    l->in = in;
    l->out = out;
    char pname[VNM_LLAMA_NAME_MAX + 8];
    snprintf(pname, sizeof pname, "%s.weight", name);
    const int64_t shape[2] = {out, in};
    /* a weight built frozen in a 16-bit dtype is a buffer from the start: see freeze_base */
    l->weight = wdtype == VNM_DTYPE_F32 ? vnm_param_new(ctx, VNM_DTYPE_F32, 2, shape, pname)
                                        : vnm_buffer_new(ctx, wdtype, 2, shape, pname);
    if (!bias) return l->weight != NULL;
    snprintf(pname, sizeof pname, "%s.bias", name);
    l->bias = vnm_param_new(ctx, VNM_DTYPE_F32, 1, &out, pname);
    return l->weight && l->bias;
}

static vnm_tensor *norm_make(vnm_ctx *ctx, int64_t n, const char *name)
{
    vnm_tensor *t = vnm_param_new(ctx, VNM_DTYPE_F32, 1, &n, name);
    if (t && vnm_tensor_fill(ctx, t, 1.0f) != VNM_OK) return NULL;
    return t;
}

static void add_param(vnm_llama *m, const char *name, vnm_tensor *t, vnm_llama_linear *l)
{
    vnm_llama_param *p = &m->params[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->tensor = t;
    p->linear = l;
}

/* A linear's entries: the weight is looked up through the linear (freezing replaces it). */
static void add_linear(vnm_llama *m, vnm_llama_linear *l)
{
    char name[VNM_LLAMA_NAME_MAX + 8];
    snprintf(name, sizeof name, "%s.weight", l->name);
    add_param(m, name, NULL, l);
    if (l->bias) add_param(m, l->bias->name, l->bias, l);
    m->linears[m->n_linears++] = l;
}

static bool build(vnm_ctx *ctx, vnm_llama *m, vnm_dtype wdtype)
{
    const vnm_llama_config *c = &m->cfg;
    int64_t D = c->hidden_size, F = c->intermediate_size, hd = c->head_dim;
    int64_t qo = c->num_attention_heads * hd, kv = c->num_key_value_heads * hd;
    m->embed_tokens = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(c->vocab_size, D),
                                    "model.embed_tokens.weight");
    if (!m->embed_tokens) return false;
    add_param(m, m->embed_tokens->name, m->embed_tokens, NULL);
    char name[VNM_LLAMA_NAME_MAX + 8];
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        vnm_llama_layer *y = &m->layers[i];
        const struct {
            vnm_llama_linear *l;
            const char *suffix;
            int64_t in, out;
            bool bias;
        } lins[] = {{&y->q_proj, "self_attn.q_proj", D, qo, c->attention_bias},
                    {&y->k_proj, "self_attn.k_proj", D, kv, c->attention_bias},
                    {&y->v_proj, "self_attn.v_proj", D, kv, c->attention_bias},
                    {&y->o_proj, "self_attn.o_proj", qo, D, c->attention_bias},
                    {&y->gate_proj, "mlp.gate_proj", D, F, c->mlp_bias},
                    {&y->up_proj, "mlp.up_proj", D, F, c->mlp_bias},
                    {&y->down_proj, "mlp.down_proj", F, D, c->mlp_bias}};
        for (size_t k = 0; k < sizeof lins / sizeof lins[0]; k++) {
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)i, lins[k].suffix);
            if (!linear_make(ctx, lins[k].l, name, lins[k].in, lins[k].out, lins[k].bias,
                             wdtype))
                return false;
            add_linear(m, lins[k].l);
        }
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)i);
        if (!(y->input_layernorm = norm_make(ctx, D, name))) return false;
        add_param(m, name, y->input_layernorm, NULL);
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight",
                 (long long)i);
        if (!(y->post_attention_layernorm = norm_make(ctx, D, name))) return false;
        add_param(m, name, y->post_attention_layernorm, NULL);
    }
    if (!(m->norm = norm_make(ctx, D, "model.norm.weight"))) return false;
    add_param(m, "model.norm.weight", m->norm, NULL);
    if (c->tie_word_embeddings) {
        /* not a parameter of its own: not in the state dict, as in transformers */
        snprintf(m->lm_head.name, sizeof m->lm_head.name, "lm_head");
        m->lm_head.in = D;
        m->lm_head.out = c->vocab_size;
        m->lm_head.weight = m->embed_tokens;
        m->linears[m->n_linears++] = &m->lm_head;
        return true;
    }
    if (!linear_make(ctx, &m->lm_head, "lm_head", D, c->vocab_size, false, wdtype)) return false;
    add_linear(m, &m->lm_head);
    return true;
}

/* t ~ normal(0, std). A 16-bit weight is drawn in f32 into the front of scratch (f32, at least
 * as large) and rounded on the host, so every draw comes from the context stream. */
static vnm_status init_normal(vnm_ctx *ctx, vnm_tensor *t, float std, vnm_tensor *scratch)
{
    if (t->dtype == VNM_DTYPE_F32) return vnm_rng_normal(ctx, t, 0.0f, std);
    int64_t n = vnm_numel(t);
    vnm_tensor front = *scratch; // [n], the first elements of scratch
    front.ndim = 1;
    front.shape[0] = n;
    front.strides[0] = 1;
    float *f = malloc((size_t)n * sizeof *f);
    uint16_t *h = malloc((size_t)n * sizeof *h);
    vnm_status st = f && h ? vnm_rng_normal(ctx, &front, 0.0f, std)
                           : vnm_ctx_fail(ctx, VNM_ERR_RUNTIME,
                                          "llama: out of memory initialising %s", t->name);
    if (st == VNM_OK) st = vnm_tensor_to_host(ctx, &front, f);
    if (st == VNM_OK) {
        host_convert(h, t->dtype, f, VNM_DTYPE_F32, n);
        st = vnm_tensor_from_host(ctx, t, h);
    }
    free(f);
    free(h);
    return st;
}

/* transformers' _init_weights: linears and the embedding normal(0, initializer_range), biases
 * zero (as allocated), the padding row of the embedding zero, RMSNorms one (as built). */
static vnm_status init_weights(vnm_ctx *ctx, vnm_llama *m)
{
    float std = (float)m->cfg.initializer_range;
    vnm_tensor *scratch = NULL; // [largest 16-bit weight] f32
    int64_t most = 0;
    for (int i = 0; i < m->n_linears; i++)
        if (m->linears[i]->weight->dtype != VNM_DTYPE_F32 &&
            vnm_numel(m->linears[i]->weight) > most)
            most = vnm_numel(m->linears[i]->weight);
    if (most > 0 && !(scratch = vnm_tensor_empty(ctx, VNM_DTYPE_F32, 1, &most)))
        return vnm_ctx_status(ctx);
    vnm_status st = vnm_rng_normal(ctx, m->embed_tokens, 0.0f, std);
    for (int i = 0; st == VNM_OK && i < m->n_linears; i++)
        if (m->linears[i]->weight != m->embed_tokens)
            st = init_normal(ctx, m->linears[i]->weight, std, scratch);
    int64_t pad = m->cfg.pad_token_id, D = m->cfg.hidden_size;
    if (st == VNM_OK && pad >= 0) {
        vnm_tensor row = *m->embed_tokens; // [D], row `pad` of the table
        row.ndim = 1;
        row.shape[0] = D;
        row.strides[0] = 1;
        row.data = (float *)m->embed_tokens->data + pad * D;
        st = vnm_tensor_fill(ctx, &row, 0.0f);
    }
    return st;
}

vnm_llama *vnm_llama_new(vnm_ctx *ctx, const vnm_llama_config *cfg, const vnm_llama_options *opt)
{
    static const vnm_llama_options defaults = {0};
    if (!opt) opt = &defaults;
    vnm_llama_config c = *cfg;
    if (c.num_key_value_heads == 0) c.num_key_value_heads = c.num_attention_heads;
    if (c.head_dim == 0 && c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0)
        c.head_dim = c.hidden_size / c.num_attention_heads;
    char msg[384];
    if (vnm_llama_config_check(&c, msg, sizeof msg) != VNM_OK) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "llama: bad config: %s", msg);
        return NULL;
    }
    if (opt->frozen && !is_weight_dtype(opt->base_dtype)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "llama: a frozen base is f32, bf16 or f16, not %s",
                     vnm_dtype_name(opt->base_dtype));
        return NULL;
    }
    vnm_llama *m = calloc(1, sizeof *m);
    int64_t L = c.num_hidden_layers;
    int per_layer = 9 + 4 * c.attention_bias + 3 * c.mlp_bias;
    if (m) {
        m->cfg = c;
        m->layers = calloc((size_t)L, sizeof *m->layers);
        m->linears = calloc((size_t)(7 * L + 1), sizeof *m->linears);
        m->params = calloc((size_t)(per_layer * L + 3), sizeof *m->params);
    }
    if (!m || !m->layers || !m->linears || !m->params) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "llama: out of memory building the model");
        vnm_llama_free(m);
        return NULL;
    }
    for (int64_t i = 0; i < L; i++) m->layers[i].model = m;
    vnm_dtype wdtype = opt->frozen ? opt->base_dtype : VNM_DTYPE_F32;
    vnm_status st = build(ctx, m, wdtype) ? VNM_OK : vnm_ctx_status(ctx);
    if (st == VNM_OK && !opt->skip_init) st = init_weights(ctx, m);
    if (st == VNM_OK && opt->frozen)
        st = vnm_llama_freeze_base(ctx, m, opt->base_dtype, opt->freeze_norms);
    if (st != VNM_OK) {
        vnm_llama_free(m);
        return NULL;
    }
    return m;
}

void vnm_llama_free(vnm_llama *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_linears; i++) vnm_lora_free(m->linears[i]->lora);
    free(m->layers);
    free(m->linears);
    free(m->params);
    free(m);
}

/* ---- the state-dict table ---- */

int vnm_llama_param_count(const vnm_llama *m) { return m->n_params; }

vnm_llama_param vnm_llama_param_at(const vnm_llama *m, int i)
{
    vnm_llama_param p = m->params[i];
    if (!p.tensor) p.tensor = p.linear->weight;
    return p;
}

int64_t vnm_llama_numel(const vnm_llama *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += vnm_numel(vnm_llama_param_at(m, i).tensor);
    return n;
}

/* ---- frozen base ---- */

/* A persistent copy of t (f32/bf16/f16) in dtype, converted on the host. */
static vnm_tensor *buffer_as(vnm_ctx *ctx, const vnm_tensor *t, vnm_dtype dtype)
{
    int64_t n = vnm_numel(t);
    void *src = malloc((size_t)n * vnm_dtype_size(t->dtype));
    void *dst = malloc((size_t)n * vnm_dtype_size(dtype));
    vnm_tensor *b = NULL;
    if (!src || !dst)
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "llama: out of memory converting %s", t->name);
    else if (vnm_tensor_to_host(ctx, t, src) == VNM_OK &&
             (b = vnm_buffer_new(ctx, dtype, t->ndim, t->shape, t->name))) {
        host_convert(dst, dtype, src, t->dtype, n);
        if (vnm_tensor_from_host(ctx, b, dst) != VNM_OK) b = NULL;
    }
    free(src);
    free(dst);
    return b;
}

vnm_status vnm_llama_freeze_base(vnm_ctx *ctx, vnm_llama *m, vnm_dtype dtype, bool freeze_norms)
{
    if (!is_weight_dtype(dtype))
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "llama: cannot freeze the base as %s (f32, bf16 "
                            "or f16)", vnm_dtype_name(dtype));
    for (int i = 0; i < m->n_linears; i++) {
        vnm_llama_linear *l = m->linears[i];
        if (l->weight == m->embed_tokens) continue; /* tied lm_head: the embedding, below */
        if (l->weight->dtype != dtype) {
            vnm_tensor *b = buffer_as(ctx, l->weight, dtype);
            if (!b) return vnm_ctx_status(ctx);
            l->weight = b;
        }
        l->weight->requires_grad = false;
        if (l->bias) l->bias->requires_grad = false;
    }
    m->embed_tokens->requires_grad = false;
    if (freeze_norms) {
        m->norm->requires_grad = false;
        for (int64_t i = 0; i < m->cfg.num_hidden_layers; i++) {
            m->layers[i].input_layernorm->requires_grad = false;
            m->layers[i].post_attention_layernorm->requires_grad = false;
        }
    }
    return VNM_OK;
}

/* ---- forward ---- */

vnm_tensor *vnm_llama_linear_forward(vnm_ctx *ctx, vnm_llama_linear *l, vnm_tensor *x)
{
    if (!x) return NULL;
    if (l->lora && l->lora->mask)
        return vnm_lora_masked_linear(ctx, l->lora, l->weight, x, l->bias);
    vnm_tensor *y = vnm_linear(ctx, x, l->weight, l->bias); // [..., out]
    return l->lora ? vnm_lora_add(ctx, l->lora, x, y) : y;
}

/* x[B, T, H·hd] → heads [B, H, T, hd] (a view) */
static vnm_tensor *split_heads(vnm_ctx *ctx, vnm_tensor *x, int64_t H, int64_t hd)
{
    static const int swap12[4] = {0, 2, 1, 3};
    if (!x) return NULL;
    vnm_tensor *h = vnm_reshape(ctx, x, 4, VNM_SHAPE(x->shape[0], x->shape[1], H, hd));
    return vnm_permute(ctx, h, swap12);
}

/* x[B, T, D] → x + o_proj(attention(rope(q), rope(k), v)) of input_layernorm(x) */
static vnm_tensor *attn_block(vnm_ctx *ctx, const vnm_llama *m, vnm_llama_layer *y,
                              vnm_tensor *x, int64_t pos)
{
    static const int swap12[4] = {0, 2, 1, 3};
    const vnm_llama_config *c = &m->cfg;
    int64_t hd = c->head_dim, Hq = c->num_attention_heads, Hkv = c->num_key_value_heads;
    float theta = (float)c->rope_theta;
    vnm_tensor *h = vnm_rmsnorm(ctx, x, y->input_layernorm, (float)c->rms_norm_eps); // [B, T, D]
    vnm_tensor *q = split_heads(ctx, vnm_llama_linear_forward(ctx, &y->q_proj, h), Hq, hd);
    vnm_tensor *k = split_heads(ctx, vnm_llama_linear_forward(ctx, &y->k_proj, h), Hkv, hd);
    vnm_tensor *v = split_heads(ctx, vnm_llama_linear_forward(ctx, &y->v_proj, h), Hkv, hd);
    q = vnm_rope(ctx, q, pos, theta); // [B, Hq, T, hd]
    k = vnm_rope(ctx, k, pos, theta); // [B, Hkv, T, hd]
    /* transformers multiplies the scores by the Python float head_dim**-0.5, rounded to f32 */
    vnm_tensor *a = vnm_attention(ctx, q, k, v, true, (float)(1.0 / sqrt((double)hd)));
    a = vnm_permute(ctx, a, swap12); // [B, T, Hq, hd]
    if (!a) return NULL;
    a = vnm_reshape(ctx, a, 3, VNM_SHAPE(a->shape[0], a->shape[1], Hq * hd));
    return vnm_add(ctx, x, vnm_llama_linear_forward(ctx, &y->o_proj, a));
}

/* x[B, T, D] → x + down_proj(silu(gate_proj(h)) · up_proj(h)), h = post_attention_layernorm(x) */
static vnm_tensor *mlp_block(vnm_ctx *ctx, const vnm_llama *m, vnm_llama_layer *y, vnm_tensor *x)
{
    vnm_tensor *h = vnm_rmsnorm(ctx, x, y->post_attention_layernorm, (float)m->cfg.rms_norm_eps);
    vnm_tensor *g = vnm_llama_linear_forward(ctx, &y->gate_proj, h); // [B, T, F]
    vnm_tensor *u = vnm_llama_linear_forward(ctx, &y->up_proj, h);   // [B, T, F]
    return vnm_add(ctx, x, vnm_llama_linear_forward(ctx, &y->down_proj, vnm_swiglu(ctx, g, u)));
}

static vnm_tensor *layer_forward(vnm_ctx *ctx, vnm_llama_layer *y, vnm_tensor *x)
{
    return mlp_block(ctx, y->model, y, attn_block(ctx, y->model, y, x, y->pos));
}

static vnm_tensor *layer_segment(vnm_ctx *ctx, vnm_tensor *const *in, int n_in, void *layer)
{
    (void)n_in;
    return layer_forward(ctx, layer, in[0]);
}

void vnm_llama_set_checkpointing(vnm_llama *m, bool on) { m->checkpoint_layers = on; }

static bool is_id_dtype(vnm_dtype dt) { return dt == VNM_DTYPE_I32 || dt == VNM_DTYPE_I64; }

vnm_tensor *vnm_llama_forward(vnm_ctx *ctx, vnm_llama *m, vnm_tensor *ids, int64_t pos_offset)
{
    if (!ids || !m) return NULL;
    char s[96];
    if (!is_id_dtype(ids->dtype) || ids->ndim != 2 || ids->shape[0] < 1 || ids->shape[1] < 1) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "llama: ids are %s, expected [B, T] i32 or i64 with "
                     "B, T >= 1", vnm_shape_str(ids, s, sizeof s));
        return NULL;
    }
    if (pos_offset < 0) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "llama: pos_offset %lld < 0", (long long)pos_offset);
        return NULL;
    }
    vnm_tensor *x = vnm_embedding(ctx, ids, m->embed_tokens); // [B, T, D]
    for (int64_t i = 0; i < m->cfg.num_hidden_layers; i++) {
        vnm_llama_layer *y = &m->layers[i];
        y->pos = pos_offset;
        /* a segment gives back, as it ends, what no backward reads: evaluation and generation
         * hold one layer's activations at a time */
        x = m->checkpoint_layers ? vnm_checkpoint(ctx, layer_segment, y, 1, &x)
                                 : vnm_segment(ctx, layer_segment, y, 1, &x);
    }
    x = vnm_rmsnorm(ctx, x, m->norm, (float)m->cfg.rms_norm_eps);
    return vnm_llama_linear_forward(ctx, &m->lm_head, x); // [B, T, vocab]
}

vnm_tensor *vnm_llama_loss(vnm_ctx *ctx, vnm_tensor *logits, vnm_tensor *targets)
{
    if (!logits || !targets) return NULL;
    char s1[96], s2[96];
    if (logits->ndim != 3 || targets->ndim != 2 || !is_id_dtype(targets->dtype) ||
        targets->shape[0] != logits->shape[0] || targets->shape[1] != logits->shape[1] ||
        !vnm_is_contiguous(targets)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "llama: loss of logits %s against targets %s: expected "
                     "logits [B, T, V] and contiguous targets [B, T] i32 or i64",
                     vnm_shape_str(logits, s1, sizeof s1), vnm_shape_str(targets, s2, sizeof s2));
        return NULL;
    }
    int64_t N = logits->shape[0] * logits->shape[1];
    vnm_tensor *lg = vnm_reshape(ctx, logits, 2, VNM_SHAPE(N, logits->shape[2])); // [B·T, V]
    vnm_tensor *tg = vnm_reshape(ctx, targets, 1, &N);                             // [B·T]
    return vnm_cross_entropy(ctx, lg, tg, -100, 0.0f);
}

/* ---- safetensors ---- */

static int find_param(const vnm_llama *m, const char *name)
{
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

/* Old checkpoints store the RoPE frequencies, which the model computes. */
static bool ignorable(const char *name)
{
    return fnmatch("model.layers.*.self_attn.rotary_emb.inv_freq", name, 0) == 0;
}

/* A tied model accepts lm_head.weight only as a copy of model.embed_tokens.weight. */
static vnm_status check_tied_head(const vnm_llama *m, const vnm_safetensors *st, const char *path,
                                  char *err, size_t err_len)
{
    const vnm_safetensors_tensor *h = vnm_safetensors_find(st, "lm_head.weight");
    const vnm_safetensors_tensor *e = vnm_safetensors_find(st, "model.embed_tokens.weight");
    int64_t n = m->cfg.vocab_size * m->cfg.hidden_size;
    bool same = false;
    if (h->numel == n && e->numel == n && h->ndim == 2 && h->shape[0] == m->cfg.vocab_size) {
        float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
        if (!a || !b) {
            free(a);
            free(b);
            return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "llama: %s: out of memory", path);
        }
        vnm_status rc = vnm_safetensors_read_f32(st, h->name, a, (size_t)n, err, err_len);
        if (rc == VNM_OK) rc = vnm_safetensors_read_f32(st, e->name, b, (size_t)n, err, err_len);
        same = rc == VNM_OK && memcmp(a, b, (size_t)n * sizeof *a) == 0;
        free(a);
        free(b);
        if (rc != VNM_OK) return rc;
    }
    if (same) return VNM_OK;
    return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                      "llama: %s: tensor 'lm_head.weight' differs from "
                      "'model.embed_tokens.weight', but the config ties them "
                      "(tie_word_embeddings true): one of the two would be lost", path);
}

/* Everything a load needs checked before any parameter changes. */
static vnm_status check_file(const vnm_llama *m, const vnm_safetensors *st, const char *path,
                             char *err, size_t err_len)
{
    char want[96], got[96];
    for (int i = 0; i < m->n_params; i++) {
        vnm_llama_param p = vnm_llama_param_at(m, i);
        const vnm_safetensors_tensor *t = vnm_safetensors_find(st, p.name);
        vnm_shape_str(p.tensor, want, sizeof want);
        if (!t)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                              "llama: %s: missing tensor '%s' (the model's is %s)", path, p.name,
                              want);
        vnm_tensor file = {.dtype = t->dtype, .ndim = t->ndim}; /* for its shape text */
        memcpy(file.shape, t->shape, sizeof file.shape);
        vnm_shape_str(&file, got, sizeof got);
        if (!is_weight_dtype(t->dtype))
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                              "llama: %s: tensor '%s' is %s, expected f32, bf16 or f16 data",
                              path, p.name, got);
        if (t->ndim != p.tensor->ndim ||
            memcmp(t->shape, p.tensor->shape, (size_t)t->ndim * sizeof *t->shape) != 0)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                              "llama: %s: tensor '%s' is %s in the file, the model's is %s", path,
                              p.name, got, want);
    }
    for (size_t i = 0; i < vnm_safetensors_count(st); i++) {
        const char *name = vnm_safetensors_tensor_at(st, i)->name;
        if (find_param(m, name) >= 0 || ignorable(name)) continue;
        if (m->cfg.tie_word_embeddings && strcmp(name, "lm_head.weight") == 0) {
            vnm_status rc = check_tied_head(m, st, path, err, err_len);
            if (rc != VNM_OK) return rc;
            continue;
        }
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "llama: %s: unexpected tensor '%s' (not a parameter of this model)",
                          path, name);
    }
    return VNM_OK;
}

/* One checked tensor into p: as stored when the dtypes agree, else through f32. */
static vnm_status load_param(vnm_ctx *ctx, const vnm_safetensors *st, const vnm_llama_param *p,
                             const char *path, char *err, size_t err_len)
{
    vnm_tensor *t = p->tensor;
    const vnm_safetensors_tensor *src = vnm_safetensors_find(st, p->name);
    int64_t n = vnm_numel(t);
    size_t bytes = (size_t)n * vnm_dtype_size(t->dtype);
    void *buf = malloc(bytes);
    float *f = src->dtype == t->dtype ? NULL : malloc((size_t)n * sizeof *f);
    vnm_status rc = buf && (src->dtype == t->dtype || f)
                        ? VNM_OK
                        : vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "llama: %s: out of memory",
                                     path);
    if (rc == VNM_OK && !f) rc = vnm_safetensors_read(st, p->name, buf, bytes, err, err_len);
    if (rc == VNM_OK && f) {
        rc = vnm_safetensors_read_f32(st, p->name, f, (size_t)n, err, err_len);
        if (rc == VNM_OK) host_convert(buf, t->dtype, f, VNM_DTYPE_F32, n);
    }
    if (rc == VNM_OK && vnm_tensor_from_host(ctx, t, buf) != VNM_OK)
        rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "llama: %s: cannot set '%s': %s", path,
                        p->name, vnm_ctx_error(ctx));
    free(buf);
    free(f);
    return rc;
}

vnm_status vnm_llama_load(vnm_ctx *ctx, vnm_llama *m, const char *path, char *err,
                          size_t err_len)
{
    vnm_safetensors *st = NULL;
    vnm_status rc = vnm_safetensors_open(path, &st, err, err_len);
    if (rc != VNM_OK) return rc;
    rc = check_file(m, st, path, err, err_len);
    for (int i = 0; rc == VNM_OK && i < m->n_params; i++) {
        vnm_llama_param p = vnm_llama_param_at(m, i);
        rc = load_param(ctx, st, &p, path, err, err_len);
    }
    vnm_safetensors_close(st);
    return rc;
}

/* Host copy in dtype (malloc'd) of the weight linear l computes with, adapters merged; NULL with
 * a message. */
static void *merged_copy(vnm_ctx *ctx, const vnm_llama_linear *l, vnm_dtype dtype,
                         const char *path, char *err, size_t err_len)
{
    int64_t n = l->out * l->in;
    float *f = malloc((size_t)n * sizeof *f);
    void *out = dtype == VNM_DTYPE_F32 ? (void *)f : malloc((size_t)n * vnm_dtype_size(dtype));
    if (f && out && vnm_lora_effective_weight(ctx, l->lora, l->weight, f) == VNM_OK) {
        if (out != f) {
            host_convert(out, dtype, f, VNM_DTYPE_F32, n);
            free(f);
        }
        return out;
    }
    vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "llama: %s: cannot merge the adapters of '%s': %s",
               path, l->name, f && out ? vnm_ctx_error(ctx) : "out of memory");
    if (out != f) free(out);
    free(f);
    return NULL;
}

/* Host copy of t in dtype (malloc'd), NULL with a message. */
static void *host_copy(vnm_ctx *ctx, const vnm_tensor *t, vnm_dtype dtype, const char *path,
                       char *err, size_t err_len)
{
    int64_t n = vnm_numel(t);
    void *raw = malloc((size_t)n * vnm_dtype_size(t->dtype));
    void *out = t->dtype == dtype ? raw : malloc((size_t)n * vnm_dtype_size(dtype));
    if (!raw || !out) {
        vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "llama: %s: out of memory", path);
    } else if (vnm_tensor_to_host(ctx, t, raw) != VNM_OK) {
        vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "llama: %s: cannot read '%s': %s", path,
                   t->name, vnm_ctx_error(ctx));
    } else {
        if (out != raw) {
            host_convert(out, dtype, raw, t->dtype, n);
            free(raw);
        }
        return out;
    }
    if (out != raw) free(out);
    free(raw);
    return NULL;
}

vnm_status vnm_llama_save(vnm_ctx *ctx, const vnm_llama *m, const char *path, vnm_dtype dtype,
                          uint64_t max_shard_bytes, char *err, size_t err_len)
{
    if (!is_weight_dtype(dtype))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "llama: %s: cannot save as %s (f32, bf16 or f16)", path,
                          vnm_dtype_name(dtype));
    if (m->cfg.tie_word_embeddings && m->lm_head.lora)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "llama: %s: lm_head has adapters but is "
                          "tied to the embedding; a tied file cannot hold the merged head", path);
    int n = m->n_params;
    vnm_safetensors_entry *es = calloc((size_t)n, sizeof *es);
    void **data = calloc((size_t)n, sizeof *data);
    vnm_status rc = es && data ? VNM_OK
                               : vnm_errbuf(err, err_len, VNM_ERR_RUNTIME,
                                            "llama: %s: out of memory", path);
    for (int i = 0; rc == VNM_OK && i < n; i++) {
        const vnm_llama_param *p = &m->params[i];
        vnm_llama_param q = vnm_llama_param_at(m, i);
        const vnm_tensor *t = q.tensor;
        bool merged = q.linear && q.linear->lora && t == q.linear->weight;
        data[i] = merged ? merged_copy(ctx, q.linear, dtype, path, err, err_len)
                         : host_copy(ctx, t, dtype, path, err, err_len);
        if (!data[i]) rc = VNM_ERR_RUNTIME;
        es[i] = (vnm_safetensors_entry){.name = p->name, .dtype = dtype, .ndim = t->ndim,
                                        .shape = t->shape, .data = data[i]};
    }
    static const char *const meta[] = {"format", "pt"};
    if (rc == VNM_OK)
        rc = max_shard_bytes ? vnm_safetensors_write_sharded(path, es, (size_t)n, meta, 1,
                                                             max_shard_bytes, err, err_len)
                             : vnm_safetensors_write(path, es, (size_t)n, meta, 1, err, err_len);
    for (int i = 0; data && i < n; i++) free(data[i]);
    free(data);
    free(es);
    return rc;
}
