/* train/peft.c — PEFT's LoRA target rule, adapter attachment, and the adapter folder format (see
 * peft.h). */
#include "peft.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"
#include "safetensors.h"

#define KEY_PREFIX "base_model.model."

static bool regex_matches(const char *pattern, const char *module, bool *bad)
{
    size_t n = strlen(pattern) + 8;
    char *anchored = malloc(n);
    regex_t re;
    bool hit = false;
    if (!anchored) return false;
    snprintf(anchored, n, "^(%s)$", pattern);
    if (regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB) != 0) {
        if (bad) *bad = true;
    } else {
        hit = regexec(&re, module, 0, NULL, 0) == 0;
        regfree(&re);
    }
    free(anchored);
    return hit;
}

/* PEFT's rule (peft.h); is_output marks the output layer, which "all-linear" leaves out. */
static bool name_matches(const char *module, bool is_output, const char *const *targets, int n,
                         bool *bad)
{
    if (n == 1 && !strcmp(targets[0], "all-linear")) return !is_output;
    if (n == 1 && strpbrk(targets[0], "*+?()[]|^$\\"))
        return regex_matches(targets[0], module, bad);
    size_t ln = strlen(module);
    for (int i = 0; i < n; i++) {
        size_t tn = strlen(targets[i]);
        if (!strcmp(module, targets[i]) ||
            (tn < ln && module[ln - tn - 1] == '.' && !strcmp(module + ln - tn, targets[i])))
            return true;
    }
    return false;
}

bool vnm_peft_target_matches(const char *module, const char *const *targets, int n_targets)
{
    return name_matches(module, !strcmp(module, "lm_head"), targets, n_targets, NULL);
}

vnm_status vnm_peft_check_targets(const vnm_llama *m, const char *const *targets, int n_targets,
                                  char *err, size_t err_len)
{
    bool bad = false, any = false;
    for (int i = 0; i < m->n_linears; i++)
        any |= name_matches(m->linears[i]->name, m->linears[i] == &m->lm_head, targets, n_targets,
                            &bad);
    if (bad)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "lora.targets: '%s' is not a valid "
                          "regular expression", targets[0]);
    if (!any)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "lora.targets: no linear of the model "
                          "matches (module names look like 'model.layers.0.self_attn.q_proj'; "
                          "entries match whole names or their last components, e.g. 'q_proj', "
                          "or use 'all-linear')");
    return VNM_OK;
}

vnm_status vnm_peft_attach(vnm_ctx *ctx, vnm_llama *m, const vnm_lora_config *cfg,
                           const char *const *targets, int n_targets, int *n_attached, char *err,
                           size_t err_len)
{
    vnm_status st = vnm_peft_check_targets(m, targets, n_targets, err, err_len);
    if (st != VNM_OK) return st;
    int n = 0;
    for (int i = 0; i < m->n_linears; i++) {
        vnm_llama_linear *l = m->linears[i];
        if (!name_matches(l->name, l == &m->lm_head, targets, n_targets, NULL)) continue;
        n++;
        if (l->lora) continue;
        l->lora = vnm_lora_new(ctx, l->name, l->out, l->in, cfg);
        if (!l->lora)
            return vnm_errbuf(err, err_len, vnm_ctx_status(ctx), "lora: %s", vnm_ctx_error(ctx));
    }
    if (n_attached) *n_attached = n;
    return VNM_OK;
}

/* The adapted linears and their shared config; VNM_ERR_INPUT when none or when they differ. */
static vnm_status adapters_of(const vnm_llama *m, const vnm_lora **first, int *n, char *err,
                              size_t err_len)
{
    *first = NULL;
    *n = 0;
    for (int i = 0; i < m->n_linears; i++) {
        const vnm_lora *l = m->linears[i]->lora;
        if (!l) continue;
        if (*first && (l->r != (*first)->r || l->scale != (*first)->scale ||
                       l->dropout != (*first)->dropout))
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "peft: adapters of '%s' and '%s' "
                              "differ in r, scale or dropout; one adapter file holds one config",
                              (*first)->module, l->module);
        if (!*first) *first = l;
        (*n)++;
    }
    if (!*first) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "peft: the model has no adapters");
    return VNM_OK;
}

static vnm_json *json_bool(bool b)
{
    vnm_json *v = vnm_json_new(VNM_JSON_BOOL);
    if (v) v->boolean = b;
    return v;
}

static vnm_json *config_json(const vnm_llama *m, const vnm_lora *l0, double alpha, bool rslora,
                             const char *base)
{
    vnm_json *o = vnm_json_new(VNM_JSON_OBJECT), *targets = vnm_json_new(VNM_JSON_ARRAY);
    vnm_status st = o && targets ? VNM_OK : VNM_ERR_RUNTIME;
    for (int i = 0; st == VNM_OK && i < m->n_linears; i++)
        if (m->linears[i]->lora)
            st = vnm_json_push(targets, vnm_json_new_string(m->linears[i]->name));
    struct {
        const char *key;
        vnm_json *v;
    } kv[] = {
        {"alpha_pattern", vnm_json_new(VNM_JSON_OBJECT)},
        {"base_model_name_or_path",
         base ? vnm_json_new_string(base) : vnm_json_new(VNM_JSON_NULL)},
        {"bias", vnm_json_new_string("none")},
        {"fan_in_fan_out", json_bool(false)},
        {"inference_mode", json_bool(true)},
        {"init_lora_weights", json_bool(true)},
        {"layers_pattern", vnm_json_new(VNM_JSON_NULL)},
        {"layers_to_transform", vnm_json_new(VNM_JSON_NULL)},
        {"lora_alpha", vnm_json_new_number(alpha)},
        {"lora_dropout", vnm_json_new_number(l0->dropout)},
        {"modules_to_save", vnm_json_new(VNM_JSON_NULL)},
        {"peft_type", vnm_json_new_string("LORA")},
        {"r", vnm_json_new_int(l0->r)},
        {"rank_pattern", vnm_json_new(VNM_JSON_OBJECT)},
        {"target_modules", targets},
        {"task_type", vnm_json_new_string("CAUSAL_LM")},
        {"use_dora", json_bool(false)},
        {"use_rslora", json_bool(rslora)},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        if (st == VNM_OK) st = vnm_json_add(o, kv[i].key, kv[i].v);
        else vnm_json_free(kv[i].v);
    }
    if (st != VNM_OK) {
        vnm_json_free(o);
        return NULL;
    }
    return o;
}

static vnm_status write_text(const char *path, const char *text, size_t len, char *err,
                             size_t err_len)
{
    FILE *f = fopen(path, "w");
    if (!f || fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF || fclose(f) != 0) {
        if (f) fclose(f);
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "peft: cannot write '%s': %s", path,
                          strerror(errno));
    }
    return VNM_OK;
}

vnm_status vnm_peft_save(vnm_ctx *ctx, const vnm_llama *m, const char *dir, double lora_alpha,
                         bool rslora, const char *base_model, char *err, size_t err_len)
{
    const vnm_lora *l0;
    int n;
    vnm_status st = adapters_of(m, &l0, &n, err, err_len);
    if (st != VNM_OK) return st;
    if (fabsf(vnm_lora_scale(l0->r, lora_alpha, rslora) - l0->scale) > 1e-6f * l0->scale)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "peft: lora_alpha %g%s does not give the "
                          "adapters' scale %g at r = %lld", lora_alpha, rslora ? " (rsLoRA)" : "",
                          (double)l0->scale, (long long)l0->r);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "peft: cannot create '%s': %s", dir,
                          strerror(errno));
    size_t pl = strlen(dir) + 64;
    char *path = malloc(pl), **names = calloc((size_t)(2 * n), sizeof *names);
    vnm_safetensors_entry *e = calloc((size_t)(2 * n), sizeof *e);
    float **data = calloc((size_t)(2 * n), sizeof *data);
    vnm_json *cfg = config_json(m, l0, lora_alpha, rslora, base_model);
    char *text = NULL;
    size_t text_len = 0;
    st = path && names && e && data && cfg ? VNM_OK
                                           : vnm_errbuf(err, err_len, VNM_ERR_RUNTIME,
                                                        "peft: out of memory");
    int k = 0;
    for (int i = 0; st == VNM_OK && i < m->n_linears; i++) {
        const vnm_lora *l = m->linears[i]->lora;
        if (!l) continue;
        for (int ab = 0; st == VNM_OK && ab < 2; ab++, k++) {
            const vnm_tensor *t = ab ? l->B : l->A;
            data[k] = malloc((size_t)vnm_numel(t) * sizeof(float));
            if (!data[k] || asprintf(&names[k], KEY_PREFIX "%s.lora_%c.weight", l->module,
                                     ab ? 'B' : 'A') < 0) {
                names[k] = NULL;
                st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "peft: out of memory");
            } else if (vnm_tensor_to_host(ctx, t, data[k]) != VNM_OK) {
                st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "peft: %s", vnm_ctx_error(ctx));
            }
            e[k] = (vnm_safetensors_entry){names[k], VNM_DTYPE_F32, 2, t->shape, data[k]};
        }
    }
    static const char *const meta[] = {"format", "pt"};
    if (st == VNM_OK) {
        snprintf(path, pl, "%s/adapter_model.safetensors", dir);
        st = vnm_safetensors_write(path, e, (size_t)(2 * n), meta, 1, err, err_len);
    }
    if (st == VNM_OK) st = vnm_json_write(cfg, &text, &text_len, err, err_len);
    if (st == VNM_OK) {
        snprintf(path, pl, "%s/adapter_config.json", dir);
        st = write_text(path, text, text_len, err, err_len);
    }
    for (int i = 0; names && data && i < 2 * n; i++) {
        free(names[i]);
        free(data[i]);
    }
    free(text);
    vnm_json_free(cfg);
    free(path);
    free(names);
    free(e);
    free(data);
    return st;
}

/* ---- loading ---- */

static vnm_status cfg_fail(char *err, size_t err_len, const char *file, const char *key,
                           const char *want)
{
    return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: %s: %s", file, key, want);
}

/* Optional keys that select PEFT features we do not implement must be absent, null, false or
 * empty. */
static vnm_status check_unsupported(const vnm_json *c, const char *file, char *err,
                                    size_t err_len)
{
    static const char *const keys[] = {"use_dora", "rank_pattern", "alpha_pattern",
                                       "fan_in_fan_out", "modules_to_save", "layers_to_transform",
                                       "lora_bias", "exclude_modules"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const vnm_json *v = vnm_json_get(c, keys[i]);
        bool off = !v || v->kind == VNM_JSON_NULL || (v->kind == VNM_JSON_BOOL && !v->boolean) ||
                   ((v->kind == VNM_JSON_OBJECT || v->kind == VNM_JSON_ARRAY) && v->count == 0);
        if (!off)
            return cfg_fail(err, err_len, file, keys[i], "must be off (null, false or empty): "
                            "this PEFT feature is not supported");
    }
    const vnm_json *bias = vnm_json_get(c, "bias");
    if (bias && (bias->kind != VNM_JSON_STRING || strcmp(bias->string, "none")))
        return cfg_fail(err, err_len, file, "bias", "must be \"none\"");
    return VNM_OK;
}

/* target_modules as a NULL-free list of strings (malloc'd array of borrowed pointers). */
static vnm_status read_targets(const vnm_json *c, const char *file, const char ***out, int *n,
                               char *err, size_t err_len)
{
    const vnm_json *t = vnm_json_get(c, "target_modules");
    if (t && t->kind == VNM_JSON_STRING) {
        *out = malloc(sizeof **out);
        if (!*out) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "peft: out of memory");
        (*out)[0] = t->string;
        *n = 1;
        return VNM_OK;
    }
    if (!t || t->kind != VNM_JSON_ARRAY || t->count == 0)
        return cfg_fail(err, err_len, file, "target_modules",
                        "expected a non-empty list of module names or a string");
    *out = malloc(t->count * sizeof **out);
    if (!*out) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "peft: out of memory");
    for (size_t i = 0; i < t->count; i++) {
        if (t->items[i]->kind != VNM_JSON_STRING) {
            free(*out);
            return cfg_fail(err, err_len, file, "target_modules", "entries must be strings");
        }
        (*out)[i] = t->items[i]->string;
    }
    *n = (int)t->count;
    return VNM_OK;
}

static vnm_status read_config(const char *file, vnm_json **out, vnm_lora_config *lc,
                              char *err, size_t err_len)
{
    vnm_json *c = vnm_json_parse_file(file, err, err_len);
    if (!c) return VNM_ERR_INPUT;
    const vnm_json *type = vnm_json_get(c, "peft_type"), *r = vnm_json_get(c, "r");
    const vnm_json *alpha = vnm_json_get(c, "lora_alpha"), *drop = vnm_json_get(c, "lora_dropout");
    const vnm_json *rs = vnm_json_get(c, "use_rslora");
    vnm_status st = VNM_OK;
    if (c->kind != VNM_JSON_OBJECT)
        st = cfg_fail(err, err_len, file, "(top)", "expected an object");
    else if (!type || type->kind != VNM_JSON_STRING || strcmp(type->string, "LORA"))
        st = cfg_fail(err, err_len, file, "peft_type", "expected \"LORA\"");
    else if (!r || !r->is_int || r->integer < 1)
        st = cfg_fail(err, err_len, file, "r", "expected an integer ≥ 1");
    else if (!alpha || alpha->kind != VNM_JSON_NUMBER || !(alpha->number > 0))
        st = cfg_fail(err, err_len, file, "lora_alpha", "expected a number > 0");
    else if (drop && (drop->kind != VNM_JSON_NUMBER || !(drop->number >= 0 && drop->number < 1)))
        st = cfg_fail(err, err_len, file, "lora_dropout", "expected a number in [0, 1)");
    else if (rs && rs->kind != VNM_JSON_BOOL)
        st = cfg_fail(err, err_len, file, "use_rslora", "expected true or false");
    if (st == VNM_OK) st = check_unsupported(c, file, err, err_len);
    if (st != VNM_OK) {
        vnm_json_free(c);
        return st;
    }
    *lc = (vnm_lora_config){r->integer, alpha->number, drop ? drop->number : 0.0,
                            rs && rs->boolean};
    *out = c;
    return VNM_OK;
}

/* Every key of the file must be an adapter of an adapted module, every adapter present. */
static vnm_status load_tensors(vnm_ctx *ctx, vnm_llama *m, const vnm_safetensors *st,
                               const char *file, char *err, size_t err_len)
{
    size_t expected = 0;
    for (int i = 0; i < m->n_linears; i++) expected += m->linears[i]->lora ? 2 : 0;
    for (size_t i = 0; i < vnm_safetensors_count(st); i++) {
        const char *key = vnm_safetensors_tensor_at(st, i)->name;
        bool known = false;
        for (int j = 0; !known && j < m->n_linears; j++) {
            const vnm_lora *l = m->linears[j]->lora;
            size_t pn = strlen(KEY_PREFIX), mn = l ? strlen(l->module) : 0;
            known = l && !strncmp(key, KEY_PREFIX, pn) && !strncmp(key + pn, l->module, mn) &&
                    (!strcmp(key + pn + mn, ".lora_A.weight") ||
                     !strcmp(key + pn + mn, ".lora_B.weight"));
        }
        if (!known)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: unexpected tensor '%s' (not the "
                              "lora_A/lora_B weight of a module adapter_config.json targets)",
                              file, key);
    }
    if (vnm_safetensors_count(st) != expected)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: holds %zu tensors, the targeted "
                          "modules need %zu", file, vnm_safetensors_count(st), expected);
    vnm_status rc = VNM_OK;
    for (int j = 0; rc == VNM_OK && j < m->n_linears; j++) {
        vnm_lora *l = m->linears[j]->lora;
        for (int ab = 0; l && rc == VNM_OK && ab < 2; ab++) {
            vnm_tensor *t = ab ? l->B : l->A;
            char *key = NULL;
            if (asprintf(&key, KEY_PREFIX "%s.lora_%c.weight", l->module, ab ? 'B' : 'A') < 0)
                return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "peft: out of memory");
            const vnm_safetensors_tensor *d = vnm_safetensors_find(st, key);
            float *buf = malloc((size_t)vnm_numel(t) * sizeof *buf);
            if (!d) {
                rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: missing tensor '%s'", file, key);
            } else if (d->ndim != 2 || d->shape[0] != t->shape[0] || d->shape[1] != t->shape[1]) {
                rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: tensor '%s' has shape [%lld, "
                                "%lld], expected [%lld, %lld]", file, key,
                                (long long)d->shape[0], (long long)(d->ndim > 1 ? d->shape[1] : 0),
                                (long long)t->shape[0], (long long)t->shape[1]);
            } else if (!buf) {
                rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "peft: out of memory");
            } else {
                rc = vnm_safetensors_read_f32(st, key, buf, (size_t)vnm_numel(t), err, err_len);
                if (rc == VNM_OK && vnm_tensor_from_host(ctx, t, buf) != VNM_OK)
                    rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s", vnm_ctx_error(ctx));
            }
            free(buf);
            free(key);
        }
    }
    return rc;
}

vnm_status vnm_peft_load(vnm_ctx *ctx, vnm_llama *m, const char *dir, char *err, size_t err_len)
{
    for (int i = 0; i < m->n_linears; i++)
        if (m->linears[i]->lora)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "peft: '%s' already has an adapter; "
                              "load adapters into a model without any", m->linears[i]->name);
    char *cfg_path = NULL, *st_path = NULL;
    if (asprintf(&cfg_path, "%s/adapter_config.json", dir) < 0) cfg_path = NULL;
    if (asprintf(&st_path, "%s/adapter_model.safetensors", dir) < 0) st_path = NULL;
    vnm_json *c = NULL;
    vnm_lora_config lc;
    const char **targets = NULL;
    int n = 0;
    vnm_safetensors *st = NULL;
    vnm_status rc = cfg_path && st_path ? VNM_OK
                                        : vnm_errbuf(err, err_len, VNM_ERR_RUNTIME,
                                                     "peft: out of memory");
    if (rc == VNM_OK) rc = read_config(cfg_path, &c, &lc, err, err_len);
    if (rc == VNM_OK) rc = read_targets(c, cfg_path, &targets, &n, err, err_len);
    if (rc == VNM_OK) rc = vnm_safetensors_open(st_path, &st, err, err_len);
    if (rc == VNM_OK) rc = vnm_peft_attach(ctx, m, &lc, targets, n, NULL, err, err_len);
    if (rc == VNM_OK) rc = load_tensors(ctx, m, st, st_path, err, err_len);
    if (rc != VNM_OK)
        for (int i = 0; i < m->n_linears; i++) { /* nothing half-attached stays behind */
            vnm_lora_free(m->linears[i]->lora);
            m->linears[i]->lora = NULL;
        }
    vnm_safetensors_close(st);
    free(targets);
    vnm_json_free(c);
    free(cfg_path);
    free(st_path);
    return rc;
}
