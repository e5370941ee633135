/* train/export.c — `vnm export`: writes the model of a checkpoint (restored read-only through the
 * resume path, vnm_trainer_restore) as a safetensors file under the names and shapes of timm's
 * VisionTransformer state_dict, so `timm.create_model(timm_model, pretrained=False, **config)`
 * (config: model_config without "distilled") loads it with strict=True. Sparse linears are
 * decompressed to dense in the original row and column order (vnm_sparse_decompress undoes the
 * permutations), so the file computes the same function as the sparse model.
 *
 * Beside PATH.safetensors: PATH.json, the sidecar
 *   {"format":"vnm-export","format_version":1,"weights":FILE,"dtype":"f32"|"bf16"|"f16",
 *    "timm_model":"deit_<size>[_distilled]_patch16_224",
 *    "model_config":{embed_dim, depth, num_heads, mlp_ratio, patch_size, img_size, in_chans,
 *                    num_classes, distilled},
 *    "sparse":{"<param>":{"pattern":"V:N:M","O":…,"I":…,"permuted":bool}, …},
 *    "source":{"checkpoint":…,"step":…,"stage":…,"vnm_version":…}[, "sample":FILE]}
 * and with --sample N, PATH.sample.safetensors: "images" [N, C, H, W] (standard normal, drawn
 * from the RNG state stored in the checkpoint, so reruns agree) and "logits" [N, classes] of the
 * restored model, to check the export elsewhere (tools/check_export_timm.py). Every file is
 * written to a temporary name and renamed; the sidecar last, so it names only files that exist. */
#include "export.h"
#include "export_llama.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "safetensors.h"
#include "trainer.h"

#define EXPORT_SUFFIX ".safetensors"
#define EXPORT_ERR_LEN 1024

static const char export_usage[] =
    "usage: vnm export RUN_DIR|CKPT --out PATH.safetensors [--dtype f32|bf16|f16] [--sample N]\n"
    "                  [key=value ...]\n"
    "       vnm export LLAMA_RUN_DIR|CKPT --out DIR [--dtype D] [--sample N] [key=value ...]\n"
    "\n"
    "A LLaMA run is written as a transformers model folder: DIR/config.json and\n"
    "DIR/model.safetensors with the adapters merged ((W + s·B·A) ⊙ mask: the trained function);\n"
    "while no layer is masked (lora_dense) also DIR/base/ and DIR/adapter/ (PEFT's format);\n"
    "--sample N adds DIR/sample.safetensors, two sequences of N tokens and this model's logits\n"
    "(tools/check_export_llama.py compares transformers' and peft's logits with them).\n"
    "\n"
    "A ViT run:\n"
    "Writes the model of a checkpoint (a run directory or ckpt folder resolves to its latest one)\n"
    "as safetensors with timm's VisionTransformer names; sparse weights are decompressed to dense\n"
    "with the permutations undone, so the file computes the same function. Beside it,\n"
    "PATH.json holds timm_model, model_config (embed_dim, depth, num_heads, mlp_ratio,\n"
    "patch_size, img_size, in_chans, num_classes, distilled) and each sparse layer's V:N:M\n"
    "pattern. In Python:\n"
    "  cfg = json.load(open('PATH.json')); kw = dict(cfg['model_config']); kw.pop('distilled')\n"
    "  m = timm.create_model(cfg['timm_model'], pretrained=False, **kw)\n"
    "  m.load_state_dict(safetensors.torch.load_file('PATH.safetensors'))\n"
    "\n"
    "  --out PATH     the weights file; must end in .safetensors\n"
    "  --dtype D      f32 (default), bf16 or f16\n"
    "  --sample N     also write PATH.sample.safetensors: N random images and this model's logits\n"
    "                 (tools/check_export_timm.py compares timm's logits with them)\n"
    "  key=value      recipe overrides, as for `vnm eval`\n"
    "\n"
    "exit codes: 0 ok, 1 runtime failure, 2 bad input (missing or corrupt checkpoint, bad\n"
    "option)\n";

typedef struct {
    const char *ckpt, *out;
    vnm_dtype dtype;
    int sample;
    char **overrides;
    int n_overrides;
} export_opts;

static int parse_dtype(const char *s, vnm_dtype *out)
{
    if (!s) return vnm_cli_missing("export", "--dtype");
    if (!strcmp(s, "f32")) *out = VNM_DTYPE_F32;
    else if (!strcmp(s, "bf16")) *out = VNM_DTYPE_BF16;
    else if (!strcmp(s, "f16")) *out = VNM_DTYPE_F16;
    else {
        fprintf(stderr, "vnm export: --dtype needs f32, bf16 or f16, got '%s'\n", s);
        return 2;
    }
    return 0;
}

/* Fills o from argv; o->overrides (malloc'd) keeps the key=value arguments in order. Returns an
 * exit code, or -1 after printing the help. */
static int parse_args(int argc, char **argv, export_opts *o)
{
    *o = (export_opts){.dtype = VNM_DTYPE_F32};
    o->overrides = calloc((size_t)argc + 1, sizeof *o->overrides);
    if (!o->overrides) {
        fputs("vnm export: out of memory\n", stderr);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(export_usage, stdout);
            return -1;
        } else if (!strcmp(a, "--out")) {
            rc = next ? 0 : vnm_cli_missing("export", "--out");
            o->out = next;
            i++;
        } else if (!strcmp(a, "--dtype")) {
            rc = parse_dtype(next, &o->dtype);
            i++;
        } else if (!strcmp(a, "--sample")) {
            rc = vnm_cli_int("export", "--sample", next, 1, 4096, &o->sample);
            i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "vnm export: unknown option '%s'\n", a);
            rc = 2;
        } else if (!o->ckpt) {
            o->ckpt = a;
        } else {
            o->overrides[o->n_overrides++] = argv[i];
        }
        if (rc) return rc;
    }
    if (!o->ckpt || !o->out) {
        fprintf(stderr, "vnm export: needs a checkpoint and --out PATH\n%s", export_usage);
        return 2;
    }
    return 0;
}

/* A ViT export's --out is the weights file. */
static int check_vit_out(const char *out)
{
    size_t n = strlen(out), ns = strlen(EXPORT_SUFFIX);
    if (n <= ns || strcmp(out + n - ns, EXPORT_SUFFIX)) {
        fprintf(stderr, "vnm export: --out '%s' must end in %s\n", out, EXPORT_SUFFIX);
        return 2;
    }
    return 0;
}

/* out with its .safetensors suffix replaced by suffix; malloc'd. */
static char *sibling(const char *out, const char *suffix)
{
    size_t base = strlen(out) - strlen(EXPORT_SUFFIX);
    char *p = malloc(base + strlen(suffix) + 1);
    if (p) sprintf(p, "%.*s%s", (int)base, out, suffix);
    return p;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The timm model whose defaults the config overrides: DeiT of the matching size (tiny for
 * custom widths; every dimension is in model_config anyway). */
static void timm_model(const vnm_vit_config *c, char *buf, size_t len)
{
    static const struct {
        int64_t dim, heads;
        const char *size;
    } sizes[] = {{192, 3, "tiny"}, {384, 6, "small"}, {768, 12, "base"}};
    const char *size = "tiny";
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        if (c->embed_dim == sizes[i].dim && c->num_heads == sizes[i].heads) size = sizes[i].size;
    snprintf(buf, len, "deit_%s_%spatch16_224", size, c->distilled ? "distilled_" : "");
}

static vnm_json *json_bool(bool b)
{
    vnm_json *v = vnm_json_new(VNM_JSON_BOOL);
    if (v) v->boolean = b;
    return v;
}

/* Adds key → item to obj; a failure (out of memory) sticks in *ok. */
static void add(vnm_json *obj, const char *key, vnm_json *item, bool *ok)
{
    if (!*ok || !obj || !item) {
        vnm_json_free(item);
        *ok = false;
    } else if (vnm_json_add(obj, key, item) != VNM_OK) {
        *ok = false;
    }
}

static vnm_json *model_config_json(const vnm_vit_config *c, bool *ok)
{
    vnm_json *o = vnm_json_new(VNM_JSON_OBJECT);
    if (!o) *ok = false;
    if (!*ok) return o;
    add(o, "embed_dim", vnm_json_new_int(c->embed_dim), ok);
    add(o, "depth", vnm_json_new_int(c->depth), ok);
    add(o, "num_heads", vnm_json_new_int(c->num_heads), ok);
    add(o, "mlp_ratio", vnm_json_new_number(c->mlp_ratio), ok);
    add(o, "patch_size", vnm_json_new_int(c->patch), ok);
    add(o, "img_size", vnm_json_new_int(c->img_size), ok);
    add(o, "in_chans", vnm_json_new_int(c->in_chans), ok);
    add(o, "num_classes", vnm_json_new_int(c->num_classes), ok);
    add(o, "distilled", json_bool(c->distilled), ok);
    return o;
}

static vnm_json *sparse_json(const vnm_restored *r, bool *ok)
{
    vnm_json *o = vnm_json_new(VNM_JSON_OBJECT);
    if (!o) *ok = false;
    for (int i = 0; *ok && i < r->model->n_linears; i++) {
        const vnm_vit_linear *l = r->model->linears[i];
        if (!l->sparse) continue;
        char name[VNM_VIT_NAME_MAX + 8], pat[32];
        snprintf(name, sizeof name, "%s.weight", l->name);
        vnm_json *s = vnm_json_new(VNM_JSON_OBJECT);
        add(o, name, s, ok);
        if (!*ok) break;
        add(s, "pattern", vnm_json_new_string(vnm_pattern_str(l->sparse->pat, pat, sizeof pat)),
            ok);
        add(s, "O", vnm_json_new_int(l->out), ok);
        add(s, "I", vnm_json_new_int(l->in), ok);
        add(s, "permuted", json_bool(r->perm_in[i] != NULL), ok);
    }
    return o;
}

static vnm_json *source_json(const vnm_restored *r, bool *ok)
{
    vnm_json *o = vnm_json_new(VNM_JSON_OBJECT);
    if (!o) *ok = false;
    add(o, "checkpoint", vnm_json_new_string(r->file), ok);
    add(o, "step", vnm_json_new_int(r->step), ok);
    add(o, "stage", vnm_json_new_string(r->stage), ok);
    add(o, "vnm_version", vnm_json_new_string(VNM_VERSION), ok);
    return o;
}

/* The sidecar's text (malloc'd), NULL when out of memory. */
static char *sidecar_text(const vnm_restored *r, const export_opts *o, const char *sample)
{
    static const char *const dtypes[] = {[VNM_DTYPE_F32] = "f32", [VNM_DTYPE_BF16] = "bf16",
                                         [VNM_DTYPE_F16] = "f16"};
    char model[64];
    timm_model(&r->model->cfg, model, sizeof model);
    bool ok = true;
    vnm_json *j = vnm_json_new(VNM_JSON_OBJECT);
    if (!j) return NULL;
    add(j, "format", vnm_json_new_string("vnm-export"), &ok);
    add(j, "format_version", vnm_json_new_int(1), &ok);
    add(j, "weights", vnm_json_new_string(base_name(o->out)), &ok);
    add(j, "dtype", vnm_json_new_string(dtypes[o->dtype]), &ok);
    add(j, "timm_model", vnm_json_new_string(model), &ok);
    add(j, "model_config", model_config_json(&r->model->cfg, &ok), &ok);
    add(j, "sparse", sparse_json(r, &ok), &ok);
    add(j, "source", source_json(r, &ok), &ok);
    if (sample) add(j, "sample", vnm_json_new_string(base_name(sample)), &ok);
    char *text = NULL;
    size_t len;
    if (!ok || vnm_json_write(j, &text, &len, NULL, 0) != VNM_OK) text = NULL;
    vnm_json_free(j);
    return text;
}

/* text + "\n" to path through "<path>.tmp", flushed to disk, then renamed. */
static int write_text_atomic(const char *path, const char *text)
{
    char *tmp = malloc(strlen(path) + 5);
    if (!tmp) return 1;
    sprintf(tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = 0;
    if (!f) {
        fprintf(stderr, "vnm export: cannot create '%s': %s\n", tmp, strerror(errno));
        rc = 2;
    } else {
        bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0 &&
                  fsync(fileno(f)) == 0;
        ok = fclose(f) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) {
            fprintf(stderr, "vnm export: cannot write '%s': %s\n", path, strerror(errno));
            remove(tmp);
            rc = 1;
        }
    }
    free(tmp);
    return rc;
}

/* n standard-normal images and the model's logits for them, as safetensors. */
static vnm_status write_sample(const vnm_restored *r, const char *path, int n, char *err,
                               size_t err_len)
{
    vnm_ctx *ctx = r->ctx;
    const vnm_vit_config *c = &r->model->cfg;
    bool grad = vnm_ctx_set_grad_enabled(ctx, false), training = vnm_ctx_training(ctx);
    vnm_ctx_set_training(ctx, false);
    int64_t ishape[4] = {n, c->in_chans, c->img_size, c->img_size}, lshape[2] = {n, c->num_classes};
    vnm_tensor *x = vnm_tensor_new(ctx, VNM_DTYPE_F32, 4, ishape); // [N, C, H, W]
    vnm_tensor *y = x && vnm_rng_normal(ctx, x, 0.0f, 1.0f) == VNM_OK
                        ? vnm_vit_forward(ctx, r->model, x, NULL) // [N, classes]
                        : NULL;
    float *images = malloc((size_t)(n * c->in_chans * c->img_size * c->img_size) * sizeof(float));
    float *logits = malloc((size_t)(n * c->num_classes) * sizeof(float));
    vnm_status rc = VNM_OK;
    if (!images || !logits)
        rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", path);
    else if (!y || vnm_tensor_to_host(ctx, x, images) || vnm_tensor_to_host(ctx, y, logits))
        rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: forward: %s", path,
                        vnm_ctx_error(ctx));
    vnm_safetensors_entry es[2] = {{"images", VNM_DTYPE_F32, 4, ishape, images},
                                   {"logits", VNM_DTYPE_F32, 2, lshape, logits}};
    static const char *const meta[] = {"format", "pt"};
    if (rc == VNM_OK) rc = vnm_safetensors_write(path, es, 2, meta, 1, err, err_len);
    free(images);
    free(logits);
    vnm_ctx_reset_step(ctx);
    vnm_ctx_set_training(ctx, training);
    vnm_ctx_set_grad_enabled(ctx, grad);
    return rc;
}

/* The weights, the sample, then the sidecar. */
static int write_all(const vnm_restored *r, const export_opts *o, const char *json_path,
                     const char *sample_path)
{
    char err[EXPORT_ERR_LEN];
    vnm_status st = vnm_vit_save_as(r->ctx, r->model, o->out, o->dtype, err, sizeof err);
    if (st == VNM_OK && o->sample) st = write_sample(r, sample_path, o->sample, err, sizeof err);
    if (st != VNM_OK) {
        fprintf(stderr, "vnm export: %s\n", err);
        return st == VNM_ERR_INPUT ? 2 : 1;
    }
    char *text = sidecar_text(r, o, o->sample ? sample_path : NULL);
    if (!text) {
        fputs("vnm export: out of memory\n", stderr);
        return 1;
    }
    int rc = write_text_atomic(json_path, text);
    free(text);
    return rc;
}

int vnm_cmd_export(int argc, char **argv)
{
    export_opts o;
    int rc = parse_args(argc, argv, &o);
    char *json_path = NULL, *sample_path = NULL;
    vnm_trainer *t = NULL;
    if (!rc) rc = vnm_trainer_restore("export", o.ckpt, o.overrides, o.n_overrides, false, &t);
    vnm_restored r = {0};
    if (!rc) r = vnm_trainer_restored(t);
    if (!rc && r.llama) {
        bool adapter = false;
        rc = vnm_export_llama(r.ctx, r.llama, o.out, o.dtype, o.sample, &adapter);
        if (!rc)
            printf("export: %s (step %lld, stage '%s') -> %s/ (config.json, model.safetensors "
                   "merged%s%s)\n", r.file, (long long)r.step, r.stage, o.out,
                   adapter ? ", base/, adapter/" : "", o.sample ? ", sample.safetensors" : "");
    } else if (!rc && !(rc = check_vit_out(o.out))) {
        if (!(json_path = sibling(o.out, ".json")) ||
            !(sample_path = sibling(o.out, ".sample.safetensors")))
            rc = 1;
        if (!rc) rc = write_all(&r, &o, json_path, sample_path);
        int n_sparse = 0;
        for (int i = 0; i < r.model->n_linears; i++)
            n_sparse += r.model->linears[i]->sparse != NULL;
        if (!rc)
            printf("export: %s (step %lld, stage '%s') -> %s (%d sparse layers decompressed), "
                   "%s%s%s\n", r.file, (long long)r.step, r.stage, o.out, n_sparse, json_path,
                   o.sample ? ", " : "", o.sample ? sample_path : "");
    }
    vnm_trainer_free(t);
    free(json_path);
    free(sample_path);
    free(o.overrides);
    return rc < 0 ? 0 : rc;
}
