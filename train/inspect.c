/* train/inspect.c — `vnm inspect CKPT`: a human summary of a checkpoint written by
 * vnm_state_save, read through train/checkpoint.h only (no model is built), so it works on any
 * checkpoint of the DESIGN.md layout. LoRA adapters and the masks of the LoRA and SR-STE stages
 * (stored as /model tensors) are reported apart from the model's parameters. */
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "state.h"

#define INSPECT_RECIPE_LINES 10
#define INSPECT_PATH_LEN 512

typedef struct {
    int64_t tensors, params;        /* /model: parameters other than LoRA adapters */
    int64_t layers, kept, weights;  /* /sparse: layers, kept weights of O·I */
    int64_t adapters, lora_params;  /* /model/<module>.lora_{A,B}.weight */
    int64_t masked, mask_kept, mask_weights, mask_step; /* /model/<module>.lora_mask(_info) */
    int64_t buffers;                /* masks and their bookkeeping (not parameters) */
} inspect_totals;

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* One /model tensor of n elements into the totals: LoRA adapters and the masks of the LoRA and
 * SR-STE stages are told apart from the model's own parameters. */
static vnm_status count_model_tensor(vnm_ckpt_reader *r, const char *name, vnm_ckpt_dtype dt,
                                     int nd, const int64_t *shape, int64_t n, inspect_totals *t,
                                     char *err, size_t err_len)
{
    if (ends_with(name, ".lora_A.weight") || ends_with(name, ".lora_B.weight")) {
        t->adapters += ends_with(name, ".lora_A.weight");
        t->lora_params += n;
        return VNM_OK;
    }
    if (ends_with(name, ".lora_mask_info")) {
        int64_t info[2];
        vnm_status rc = vnm_ckpt_read(r, name, VNM_CKPT_I64, 1, (int64_t[]){2}, info, err,
                                      err_len);
        if (rc == VNM_OK && info[0] > t->mask_step) t->mask_step = info[0];
        t->buffers++;
        return rc;
    }
    if (ends_with(name, ".lora_mask") && dt == VNM_CKPT_U8) {
        uint8_t *m = malloc((size_t)n + 1);
        if (!m) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "inspect: out of memory");
        vnm_status rc = vnm_ckpt_read(r, name, VNM_CKPT_U8, nd, shape, m, err, err_len);
        for (int64_t i = 0; rc == VNM_OK && i < n; i++) t->mask_kept += m[i] != 0;
        free(m);
        t->masked++;
        t->mask_weights += n;
        t->buffers++;
        return rc;
    }
    if (ends_with(name, ".lora_prev_mask") || ends_with(name, ".srste_mask") ||
        ends_with(name, ".srste_mask_step")) {
        t->buffers++;
        return VNM_OK;
    }
    t->tensors++;
    t->params += n;
    return VNM_OK;
}

/* Kept weights of one layer: the slots of real rows (rows ≥ 0) that point at a used column. */
static vnm_status sparse_kept(vnm_ckpt_reader *r, const char *path, vnm_pattern pat,
                              int64_t *kept, char *err, size_t err_len)
{
    char sub[INSPECT_PATH_LEN + 16];
    vnm_ckpt_dtype dt;
    int nd;
    int64_t shape[VNM_CKPT_MAX_DIMS];
    snprintf(sub, sizeof sub, "%s/slots", path);
    vnm_status rc = vnm_ckpt_shape(r, sub, &dt, &nd, shape, err, err_len);
    if (rc != VNM_OK) return rc;
    if (dt != VNM_CKPT_U8 || nd != 2 || shape[0] % pat.V) {
        if (err && err_len)
            snprintf(err, err_len, "checkpoint %s: %s: expected u8 [O_pad, Gp], O_pad a multiple "
                     "of V = %d", vnm_ckpt_file(r), sub, pat.V);
        return VNM_ERR_INPUT;
    }
    int64_t O_pad = shape[0], Gp = shape[1];
    uint8_t *slots = malloc((size_t)(O_pad * Gp) + 1);            // [O_pad, Gp]
    int32_t *cols = malloc((size_t)(O_pad / pat.V * Gp * 4 + 1) * 4); // [O_pad / V, Gp, 4]
    int32_t *rows = malloc((size_t)(O_pad + 1) * 4);               // [O_pad]
    if (!slots || !cols || !rows) {
        if (err && err_len) snprintf(err, err_len, "inspect: out of memory");
        rc = VNM_ERR_RUNTIME;
    }
    if (rc == VNM_OK) rc = vnm_ckpt_read(r, sub, VNM_CKPT_U8, 2, shape, slots, err, err_len);
    snprintf(sub, sizeof sub, "%s/cols", path);
    if (rc == VNM_OK)
        rc = vnm_ckpt_read(r, sub, VNM_CKPT_I32, 3, (int64_t[]){O_pad / pat.V, Gp, 4}, cols, err,
                           err_len);
    snprintf(sub, sizeof sub, "%s/rows", path);
    if (rc == VNM_OK) rc = vnm_ckpt_read(r, sub, VNM_CKPT_I32, 1, &O_pad, rows, err, err_len);
    *kept = 0;
    for (int64_t o = 0; o < O_pad && rc == VNM_OK; o++) {
        if (rows[o] < 0) continue;
        for (int64_t g = 0; g < Gp; g++) {
            const int32_t *c = &cols[((o / pat.V) * Gp + g) * 4];
            uint8_t s = slots[o * Gp + g];
            *kept += (c[s & 3] >= 0) + (c[(s >> 2) & 3] >= 0);
        }
    }
    free(slots);
    free(cols);
    free(rows);
    return rc;
}

static vnm_status print_sparse(vnm_ckpt_reader *r, FILE *out, char **names, int64_t count,
                               inspect_totals *t, char *err, size_t err_len)
{
    for (int64_t i = 0; i < count; i++) {
        size_t len = strlen(names[i]);
        if (len < 5 || strcmp(names[i] + len - 5, "/vals")) continue;
        char path[INSPECT_PATH_LEN];
        if (len - 5 >= sizeof path) continue; /* vnm_state_save never writes such names */
        snprintf(path, sizeof path, "%.*s", (int)(len - 5), names[i]);
        char *pat_text = NULL;
        int64_t O, I, permuted, kept = 0;
        vnm_pattern pat;
        vnm_status rc;
        if ((rc = vnm_ckpt_get_str(r, path, "pattern", &pat_text, err, err_len)) ||
            (rc = vnm_ckpt_get_i64(r, path, "O", &O, err, err_len)) ||
            (rc = vnm_ckpt_get_i64(r, path, "I", &I, err, err_len)) ||
            (rc = vnm_ckpt_get_i64(r, path, "permuted", &permuted, err, err_len)) ||
            (rc = vnm_pattern_parse(pat_text, &pat, err, err_len)) ||
            (rc = sparse_kept(r, path, pat, &kept, err, err_len))) {
            free(pat_text);
            return rc;
        }
        double frac = O * I > 0 ? (double)kept / (double)(O * I) : 0.0;
        fprintf(out, "  %-40s %-10s %lldx%lld  kept %.4f (%lld)%s\n", path + strlen("/sparse/"),
                pat_text, (long long)O, (long long)I, frac, (long long)kept,
                permuted ? "  permuted" : "");
        free(pat_text);
        t->layers++;
        t->kept += kept;
        t->weights += O * I;
    }
    return VNM_OK;
}

static void print_recipe(FILE *out, const char *recipe)
{
    fprintf(out, "recipe:\n");
    const char *p = recipe;
    for (int line = 0; *p && line < INSPECT_RECIPE_LINES; line++) {
        size_t n = strcspn(p, "\n");
        fprintf(out, "  %.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
    }
    if (*p) fprintf(out, "  ...\n");
}

static vnm_status print_all(vnm_ckpt_reader *r, FILE *out, char *err, size_t err_len)
{
    int64_t version, epoch, stage, stage_step, dpos[2];
    uint64_t rng[2], data_seed;
    char *created = NULL, *program = NULL, *recipe = NULL, **names = NULL;
    int64_t count = 0;
    inspect_totals t = {.mask_step = -1};
    vnm_status rc;
    if ((rc = vnm_ckpt_get_i64(r, "/", "format_version", &version, err, err_len)) ||
        (rc = vnm_ckpt_get_i64(r, "/", "epoch", &epoch, err, err_len)) ||
        (rc = vnm_ckpt_get_i64(r, "/", "stage_index", &stage, err, err_len)) ||
        (rc = vnm_ckpt_get_i64(r, "/", "stage_step", &stage_step, err, err_len)) ||
        (rc = vnm_ckpt_get_str(r, "/", "created", &created, err, err_len)) ||
        (rc = vnm_ckpt_get_str(r, "/", "program_version", &program, err, err_len)) ||
        (rc = vnm_ckpt_get_str(r, "/", "recipe", &recipe, err, err_len)) ||
        (rc = vnm_ckpt_read(r, "/rng/seed", VNM_CKPT_U64, 0, NULL, &rng[0], err, err_len)) ||
        (rc = vnm_ckpt_read(r, "/rng/offset", VNM_CKPT_U64, 0, NULL, &rng[1], err, err_len)) ||
        (rc = vnm_ckpt_read(r, "/data/epoch", VNM_CKPT_I64, 0, NULL, &dpos[0], err, err_len)) ||
        (rc = vnm_ckpt_read(r, "/data/index", VNM_CKPT_I64, 0, NULL, &dpos[1], err, err_len)) ||
        (rc = vnm_ckpt_read(r, "/data/seed", VNM_CKPT_U64, 0, NULL, &data_seed, err, err_len)) ||
        (rc = vnm_ckpt_list(r, "/", &names, &count, err, err_len)))
        goto done;
    for (int64_t i = 0; i < count; i++) {
        if (strncmp(names[i], "/model/", 7)) continue;
        vnm_ckpt_dtype dt;
        int nd;
        int64_t shape[VNM_CKPT_MAX_DIMS], n = 1;
        if ((rc = vnm_ckpt_shape(r, names[i], &dt, &nd, shape, err, err_len))) goto done;
        for (int d = 0; d < nd; d++) n *= shape[d];
        if ((rc = count_model_tensor(r, names[i], dt, nd, shape, n, &t, err, err_len))) goto done;
    }
    fprintf(out, "file: %s\n", vnm_ckpt_file(r));
    fprintf(out, "format: %s version %lld, written by vnm %s at %s\n", VNM_CKPT_FORMAT,
            (long long)version, program, created);
    fprintf(out, "progress: step %lld, epoch %lld, stage %lld (step %lld in stage)\n",
            (long long)vnm_ckpt_step(r), (long long)epoch, (long long)stage,
            (long long)stage_step);
    fprintf(out, "dense: %lld tensors, %lld parameters\n", (long long)t.tensors,
            (long long)t.params);
    fprintf(out, "sparse layers:\n");
    if ((rc = print_sparse(r, out, names, count, &t, err, err_len))) goto done;
    fprintf(out, "sparse: %lld layers, %lld kept of %lld weights\n", (long long)t.layers,
            (long long)t.kept, (long long)t.weights);
    if (t.adapters)
        fprintf(out, "lora: %lld adapters, %lld parameters\n", (long long)t.adapters,
                (long long)t.lora_params);
    if (t.masked && t.mask_step >= 0)
        fprintf(out, "lora masks: %lld layers, kept %lld of %lld weights (%.4f), chosen at step "
                     "%lld\n", (long long)t.masked, (long long)t.mask_kept,
                (long long)t.mask_weights, (double)t.mask_kept / (double)t.mask_weights,
                (long long)t.mask_step);
    else if (t.masked)
        fprintf(out, "lora masks: %lld layers, not chosen yet\n", (long long)t.masked);
    fprintf(out, "parameters: %lld (dense %lld + sparse kept %lld + lora %lld)\n",
            (long long)(t.params + t.kept + t.lora_params), (long long)t.params,
            (long long)t.kept, (long long)t.lora_params);
    if (t.buffers) fprintf(out, "buffers: %lld mask tensors\n", (long long)t.buffers);
    char *kind = NULL;
    int64_t steps;
    double lr;
    if (vnm_ckpt_get_str(r, "/optim", "optimizer", &kind, NULL, 0) == VNM_OK &&
        vnm_ckpt_get_i64(r, "/optim", "steps", &steps, NULL, 0) == VNM_OK &&
        vnm_ckpt_get_f64(r, "/optim", "lr", &lr, NULL, 0) == VNM_OK)
        fprintf(out, "optimizer: %s, step %lld, lr %g\n", kind, (long long)steps, lr);
    else
        fprintf(out, "optimizer: none\n");
    free(kind);
    double scale;
    int64_t skipped;
    if (vnm_ckpt_get_f64(r, "/optim", "loss_scale", &scale, NULL, 0) == VNM_OK &&
        vnm_ckpt_get_i64(r, "/optim", "loss_scale_skipped", &skipped, NULL, 0) == VNM_OK)
        fprintf(out, "loss scale: %g (f16), %lld steps skipped\n", scale, (long long)skipped);
    fprintf(out, "rng: seed %llu, offset %llu\n", (unsigned long long)rng[0],
            (unsigned long long)rng[1]);
    fprintf(out, "data: epoch %lld, index %lld, seed %llu\n", (long long)dpos[0],
            (long long)dpos[1], (unsigned long long)data_seed);
    print_recipe(out, recipe);
done:
    vnm_ckpt_free_names(names, count);
    free(created);
    free(program);
    free(recipe);
    return rc;
}

vnm_status vnm_inspect_print(const char *path, FILE *out, char *err, size_t err_len)
{
    vnm_ckpt_reader *r = vnm_ckpt_open(path, err, err_len);
    if (!r) return VNM_ERR_INPUT;
    vnm_status rc = print_all(r, out, err, err_len);
    vnm_ckpt_close(r);
    return rc;
}

static const char inspect_usage[] =
    "usage: vnm inspect CKPT\n"
    "\n"
    "Summarises a checkpoint: CKPT is a step_*.h5 file, a ckpt directory or a run directory\n"
    "(the latest checkpoint). Prints the format version, step/epoch/stage, program version, dense\n"
    "tensors and parameters, each sparse layer (pattern, O×I, kept fraction), the optimizer, the\n"
    "RNG and data position, and the first lines of the recipe.\n";

int vnm_cmd_inspect(int argc, char **argv)
{
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        fputs(inspect_usage, stdout);
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "vnm inspect: expected one checkpoint path, got %d arguments\n%s", argc,
                inspect_usage);
        return 2;
    }
    char err[1024] = "";
    if (vnm_inspect_print(argv[0], stdout, err, sizeof err) != VNM_OK) {
        fprintf(stderr, "vnm inspect: %s\n", err);
        return 2;
    }
    return 0;
}
