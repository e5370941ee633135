/* train/recipe.c — recipe loading, checking and emitting. The schema is one table per struct (the
 * recipe, one stage) of key path, type, range, default and help; walking the YAML tree, applying
 * overrides and defaults, emitting, comparing and freeing are all generic over those tables. Only
 * the rules that tie several keys together (stage order, lengths, model size presets) are code.
 */
#include "recipe.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

typedef enum {
    T_SECTION,
    T_INT,
    T_FLOAT,
    T_BOOL,
    T_STR,
    T_ENUM,
    T_STRLIST,
    T_FLOAT2,
    T_PATTERN,
    T_STAGES,
} key_type;

enum { F_PATH_EXISTS = 1, F_REQUIRED = 2 };

/* Enum fields are read and written through int. */
_Static_assert(sizeof(vnm_recipe_device) == sizeof(int) && sizeof(vnm_recipe_stage_kind) ==
                   sizeof(int) && sizeof(vnm_selector) == sizeof(int) &&
                   sizeof(vnm_score_kind) == sizeof(int),
               "recipe enums must be int-sized");

typedef struct {
    const char *path; /* dotted, relative to the table's struct */
    key_type type;
    ptrdiff_t off;         /* field offset; a section's `present` flag, or -1 when always there */
    char lo_kind, hi_kind; /* '[' or '(' / ']' or ')'; 0: unbounded */
    double lo, hi;
    const char *const *names; /* enum values, NULL-terminated, in the C enum's order */
    const char *def;          /* YAML text of the default; NULL: optional (sentinel when absent) */
    unsigned flags;
    const char *aliases; /* names other frameworks use, space-separated: they steer the hint */
    const char *help;
} schema_key;

#define KEY(p, t, o, ...) {.path = p, .type = t, .off = o, __VA_ARGS__}
#define GE(x) .lo_kind = '[', .lo = (x)
#define GT(x) .lo_kind = '(', .lo = (x)
#define LT(x) .hi_kind = ')', .hi = (x)
#define LE(x) .hi_kind = ']', .hi = (x)
#define R(f) offsetof(vnm_recipe, f)
#define S(f) offsetof(vnm_recipe_stage, f)

static const char *const DEVICES[] = {"cpu", "cuda", NULL};
static const char *const PRECISIONS[] = {"f32", "bf16", "f16", NULL};
static const char *const ARCHS[] = {"vit", "llama", NULL};
static const char *const SIZES[] = {"tiny", "small", "base", "custom", NULL};
static const char *const DATASETS[] = {"fashion_mnist", "imagefolder", "tokens", NULL};
static const char *const SCORES[] = {"magnitude", "ria", NULL};
static const char *const SELECTORS[] = {"l1", "exhaustive", NULL};
static const char *const OPTIMS[] = {"sgd", "adamw", NULL};
static const char *const SCHEDULES[] = {"constant", "cosine", "step", "linear", NULL};
static const char *const KINDS[] = {"dense",      "prune",           "sparse_fixed",
                                    "sparse_srste", "lora_dense",    "lora_sparse_dynamic",
                                    "lora_sparse_fixed", NULL};

#define VIT_TARGETS "['blocks.*.attn.qkv.weight', 'blocks.*.attn.proj.weight', " \
                    "'blocks.*.mlp.fc1.weight', 'blocks.*.mlp.fc2.weight']"

static const schema_key RECIPE_KEYS[] = {
    KEY("run", T_SECTION, -1, .help = "name, output directory, seed, placement"),
    KEY("run.name", T_STR, R(run.name), .def = "vnm", .help = "run name"),
    KEY("run.output_dir", T_STR, R(run.output_dir), .help = "run directory (runs/<name>)"),
    KEY("run.seed", T_INT, R(run.seed), GE(0), .def = "0", .help = "global seed"),
    KEY("run.device", T_ENUM, R(run.device), .names = DEVICES, .def = "cpu", .aliases = "backend",
        .help = "where to train"),
    KEY("run.precision", T_ENUM, R(run.precision), .names = PRECISIONS, .def = "f32",
        .aliases = "dtype", .help = "operands of the products (bf16/f16: mixed precision)"),
    KEY("run.loss_scale", T_FLOAT, R(run.loss_scale), GT(0), .def = "65536",
        .aliases = "init_scale", .help = "f16: initial dynamic loss scale"),
    KEY("run.loss_scale_growth_interval", T_INT, R(run.loss_scale_growth_interval), GE(1),
        .def = "2000", .aliases = "growth_interval",
        .help = "f16: good steps before the loss scale doubles"),
    KEY("run.deterministic", T_BOOL, R(run.deterministic), .def = "false",
        .aliases = "use_deterministic_algorithms",
        .help = "only kernels that repeat their bits (bf16 attention on a GPU: not cuDNN's)"),
    KEY("run.threads", T_INT, R(run.threads), GE(0), .def = "0",
        .help = "CPU threads (0: OpenMP's choice)"),
    KEY("model", T_SECTION, -1, .help = "architecture, size, dimensions, initial weights"),
    KEY("model.arch", T_ENUM, R(model.arch), .names = ARCHS, .def = "vit", .help = "architecture"),
    KEY("model.size", T_ENUM, R(model.size), .names = SIZES, .def = "tiny",
        .help = "preset dims (custom: give embed_dim, depth, heads)"),
    KEY("model.embed_dim", T_INT, R(model.embed_dim), GE(0), .def = "0", .aliases = "dim width",
        .help = "embedding width (0: from size)"),
    KEY("model.depth", T_INT, R(model.depth), GE(0), .def = "0", .aliases = "layers n_layers",
        .help = "blocks (0: from size)"),
    KEY("model.heads", T_INT, R(model.heads), GE(0), .def = "0", .aliases = "num_heads n_heads",
        .help = "attention heads (0: from size)"),
    KEY("model.mlp_ratio", T_FLOAT, R(model.mlp_ratio), GT(0), .def = "4",
        .help = "MLP hidden / embed_dim"),
    KEY("model.patch", T_INT, R(model.patch), GE(1), .def = "4", .aliases = "patch_size",
        .help = "patch side in pixels"),
    KEY("model.image_size", T_INT, R(model.image_size), GE(1), .def = "28",
        .aliases = "img_size", .help = "input side in pixels"),
    KEY("model.in_chans", T_INT, R(model.in_chans), GE(1), .def = "1", .aliases = "channels",
        .help = "input channels"),
    KEY("model.num_classes", T_INT, R(model.num_classes), GE(1), .def = "10",
        .aliases = "classes", .help = "classifier outputs"),
    KEY("model.drop_path", T_FLOAT, R(model.drop_path), GE(0), LT(1), .def = "0",
        .aliases = "drop_path_rate", .help = "stochastic depth rate"),
    KEY("model.activation_checkpointing", T_BOOL, R(model.activation_checkpointing),
        .def = "false", .aliases = "enable_activation_checkpointing checkpointing",
        .help = "recompute each block's forward in backward instead of keeping it"),
    KEY("model.weights", T_STR, R(model.weights), .flags = F_PATH_EXISTS,
        .aliases = "checkpoint pretrained", .help = "safetensors to start from (must exist)"),
    KEY("model.config", T_STR, R(model.config), .flags = F_PATH_EXISTS,
        .aliases = "config_json", .help = "llama: transformers config.json (instead of dims)"),
    KEY("model.kv_heads", T_INT, R(model.kv_heads), GE(0), .def = "0",
        .aliases = "num_key_value_heads", .help = "llama: key/value heads (0: heads)"),
    KEY("model.vocab_size", T_INT, R(model.vocab_size), GE(0), .def = "0",
        .help = "llama: vocabulary (0: the token data's)"),
    KEY("model.max_positions", T_INT, R(model.max_positions), GE(0), .def = "0",
        .aliases = "max_position_embeddings", .help = "llama: context length (0: data.seq_len)"),
    KEY("model.rope_theta", T_FLOAT, R(model.rope_theta), GT(0), .def = "10000",
        .help = "llama: RoPE base"),
    KEY("model.tie_embeddings", T_BOOL, R(model.tie_embeddings), .def = "false",
        .aliases = "tie_word_embeddings", .help = "llama: lm_head shares the embedding"),
    KEY("data", T_SECTION, -1, .help = "dataset, batches, augmentation"),
    KEY("data.dataset", T_ENUM, R(data.dataset), .names = DATASETS, .def = "fashion_mnist",
        .aliases = "name", .help = "dataset kind"),
    KEY("data.path", T_STR, R(data.path), .def = "data/fashion_mnist", .aliases = "root dir",
        .help = "dataset location"),
    KEY("data.batch_size", T_INT, R(data.batch_size), GE(1), .def = "128", .aliases = "batch bs",
        .help = "training batch"),
    KEY("data.val_batch_size", T_INT, R(data.val_batch_size), GE(0), .def = "0",
        .help = "evaluation batch (0: batch_size)"),
    KEY("data.augment", T_SECTION, -1, .help = "training augmentation"),
    KEY("data.augment.crop_padding", T_INT, R(data.augment.crop_padding), GE(0), .def = "0",
        .aliases = "padding", .help = "random crop after zero padding (0: off)"),
    KEY("data.augment.flip", T_BOOL, R(data.augment.flip), .def = "false", .aliases = "hflip",
        .help = "random horizontal flip"),
    KEY("data.workers", T_INT, R(data.workers), GE(0), .def = "2", .aliases = "num_workers",
        .help = "loader threads"),
    KEY("data.seq_len", T_INT, R(data.seq_len), GE(1), .def = "256",
        .aliases = "max_seq_len block_size", .help = "tokens: packed sequence length"),
    KEY("sparsity", T_SECTION, R(sparsity.present), .help = "V:N:M pruning"),
    KEY("sparsity.pattern", T_PATTERN, R(sparsity.pattern), .def = "'64:2:8'",
        .help = "V:N:M pattern"),
    KEY("sparsity.targets", T_STRLIST, R(sparsity.targets), .def = VIT_TARGETS,
        .help = "weight name globs to sparsify"),
    KEY("sparsity.score", T_ENUM, R(sparsity.score), .names = SCORES, .def = "magnitude",
        .help = "pruning score"),
    KEY("sparsity.selector", T_ENUM, R(sparsity.selector), .names = SELECTORS, .def = "l1",
        .help = "mask selection"),
    KEY("sparsity.permute", T_BOOL, R(sparsity.permute), .def = "false",
        .help = "channel permutation before pruning"),
    KEY("sparsity.permute_rounds", T_INT, R(sparsity.permute_rounds), GE(1), .def = "2",
        .help = "alternating permutation rounds"),
    KEY("sparsity.calibration_batches", T_INT, R(sparsity.calibration_batches), GE(0),
        .def = "8", .help = "batches of activations for RIA"),
    KEY("lora", T_SECTION, R(lora.present), .help = "low-rank adapters"),
    KEY("lora.rank", T_INT, R(lora.rank), GE(1), .def = "16", .aliases = "r",
        .help = "rank (METHOD §6 default)"),
    KEY("lora.alpha", T_FLOAT, R(lora.alpha), GT(0), .def = "32", .aliases = "lora_alpha",
        .help = "scale numerator"),
    KEY("lora.dropout", T_FLOAT, R(lora.dropout), GE(0), LT(1), .def = "0",
        .aliases = "lora_dropout", .help = "dropout on the adapter input"),
    KEY("lora.targets", T_STRLIST, R(lora.targets), .def = "['all-linear']",
        .aliases = "target_modules", .help = "PEFT target_modules: names, suffixes, all-linear"),
    KEY("lora.rslora", T_BOOL, R(lora.rslora), .def = "false", .aliases = "use_rslora",
        .help = "scale alpha/sqrt(r) instead of alpha/r"),
    KEY("lora.base_dtype", T_ENUM, R(lora.base_dtype), .names = PRECISIONS, .def = "bf16",
        .help = "frozen base weights: f32 or bf16 (halves their memory)"),
    KEY("optim", T_SECTION, -1, .aliases = "optimizer optimiser", .help = "optimiser"),
    KEY("optim.name", T_ENUM, R(optim.name), .names = OPTIMS, .def = "adamw", .aliases = "type",
        .help = "optimiser"),
    KEY("optim.lr", T_FLOAT, R(optim.lr), GT(0), .def = "0.001", .aliases = "learning_rate",
        .help = "peak learning rate"),
    KEY("optim.weight_decay", T_FLOAT, R(optim.weight_decay), GE(0), .def = "0.05",
        .aliases = "wd", .help = "decoupled weight decay"),
    KEY("optim.momentum", T_FLOAT, R(optim.momentum), GE(0), LT(1), .def = "0.9",
        .help = "SGD momentum"),
    KEY("optim.nesterov", T_BOOL, R(optim.nesterov), .def = "false", .help = "SGD Nesterov"),
    KEY("optim.betas", T_FLOAT2, R(optim.betas), GE(0), LT(1), .def = "[0.9, 0.999]",
        .help = "AdamW moment decays"),
    KEY("optim.eps", T_FLOAT, R(optim.eps), GT(0), .def = "1e-8", .aliases = "epsilon",
        .help = "AdamW denominator floor"),
    KEY("optim.clip_grad_norm", T_FLOAT, R(optim.clip_grad_norm), GE(0), .def = "0",
        .aliases = "clip_grad max_grad_norm", .help = "global gradient norm clip (0: off)"),
    KEY("optim.gradient_accumulation_steps", T_INT, R(optim.gradient_accumulation_steps), GE(1),
        .def = "1", .aliases = "grad_accum accumulation_steps",
        .help = "batches whose gradients one optimiser step takes (their mean)"),
    KEY("schedule", T_SECTION, -1, .aliases = "scheduler lr_schedule", .help = "learning rate"),
    KEY("schedule.name", T_ENUM, R(schedule.name), .names = SCHEDULES, .def = "cosine",
        .aliases = "type", .help = "shape"),
    KEY("schedule.warmup_steps", T_INT, R(schedule.warmup_steps), GE(0), .def = "0",
        .aliases = "warmup", .help = "linear warmup steps"),
    KEY("schedule.warmup_fraction", T_FLOAT, R(schedule.warmup_fraction), GE(0), LT(1),
        .aliases = "warmup_ratio", .help = "warmup as a fraction of all steps"),
    KEY("schedule.min_lr", T_FLOAT, R(schedule.min_lr), GE(0), .def = "0",
        .aliases = "lr_min eta_min", .help = "floor of cosine/linear"),
    KEY("schedule.step_size", T_INT, R(schedule.step_size), GE(1), .def = "1000",
        .help = "steps between decays (step)"),
    KEY("schedule.gamma", T_FLOAT, R(schedule.gamma), GT(0), LE(1), .def = "0.1",
        .aliases = "decay", .help = "decay factor (step)"),
    KEY("schedule.per_stage", T_BOOL, R(schedule.per_stage), .def = "false",
        .help = "restart warm-up and decay in every training stage"),
    KEY("loss", T_SECTION, -1, .aliases = "criterion", .help = "training loss"),
    KEY("loss.label_smoothing", T_FLOAT, R(loss.label_smoothing), GE(0), LT(1), .def = "0",
        .aliases = "smoothing", .help = "label smoothing of the training cross-entropy"),
    KEY("stages", T_STAGES, R(stages), .def = "[{name: train, kind: dense, epochs: 1}]",
        .aliases = "phases", .help = "ordered training stages"),
    KEY("checkpoint", T_SECTION, -1, .aliases = "ckpt", .help = "checkpoints"),
    KEY("checkpoint.dir", T_STR, R(checkpoint.dir), .help = "directory (<output_dir>/ckpt)"),
    KEY("checkpoint.every", T_INT, R(checkpoint.every), GE(0), .def = "0",
        .help = "steps between saves (0: end of stages only)"),
    KEY("checkpoint.keep_last", T_INT, R(checkpoint.keep_last), GE(1), .def = "3",
        .aliases = "keep", .help = "checkpoints kept"),
    KEY("log", T_SECTION, -1, .aliases = "logging", .help = "logging"),
    KEY("log.every", T_INT, R(log.every), GE(1), .def = "10", .aliases = "interval",
        .help = "steps between metric lines"),
    KEY("log.metrics", T_STR, R(log.metrics), .help = "metrics file (<output_dir>/metrics.jsonl)"),
    KEY("eval", T_SECTION, -1, .aliases = "evaluation", .help = "evaluation"),
    KEY("eval.every", T_INT, R(eval.every), GE(0), .def = "0", .aliases = "interval",
        .help = "steps between evaluations (0: end of stages only)"),
};

static const schema_key STAGE_KEYS[] = {
    KEY("name", T_STR, S(name), .flags = F_REQUIRED, .help = "unique stage name"),
    KEY("kind", T_ENUM, S(kind), .names = KINDS, .flags = F_REQUIRED, .aliases = "type",
        .help = "what the stage trains"),
    KEY("steps", T_INT, S(steps), GE(1), .aliases = "iters", .help = "length in steps"),
    KEY("epochs", T_FLOAT, S(epochs), GT(0), .help = "length in epochs"),
    KEY("fraction", T_FLOAT, S(fraction), GT(0), LE(1), .help = "length as a fraction of the run"),
    KEY("optim", T_SECTION, -1, .help = "overrides of the optim section"),
    KEY("optim.lr", T_FLOAT, S(optim.lr), GT(0), .aliases = "learning_rate", .help = "lr"),
    KEY("optim.weight_decay", T_FLOAT, S(optim.weight_decay), GE(0), .aliases = "wd",
        .help = "weight decay"),
    KEY("optim.momentum", T_FLOAT, S(optim.momentum), GE(0), LT(1), .help = "momentum"),
    KEY("optim.clip_grad_norm", T_FLOAT, S(optim.clip_grad_norm), GE(0),
        .help = "gradient clip"),
    KEY("srste", T_SECTION, -1, .help = "SR-STE (sparse_srste stages)"),
    KEY("srste.every", T_INT, S(srste.every), GE(1), .def = "100",
        .help = "steps between mask updates"),
    KEY("srste.lambda_w", T_FLOAT, S(srste.lambda_w), GE(0), .def = "0.0002",
        .help = "sparse-refined decay on pruned weights"),
    KEY("lora", T_SECTION, -1, .help = "LoRA re-pruning (lora_sparse_dynamic stages)"),
    KEY("lora.every", T_INT, S(lora.every), GE(1), .def = "50",
        .help = "steps between merge and re-prune"),
    KEY("lora.lambda", T_FLOAT, S(lora.lambda), GE(0), .def = "0.0001",
        .help = "regulariser on entries the previous mask pruned"),
};

typedef struct {
    const schema_key *keys;
    int n;
} schema;

static const schema RECIPE_SCHEMA = {RECIPE_KEYS, (int)(sizeof RECIPE_KEYS / sizeof *RECIPE_KEYS)};
static const schema STAGE_SCHEMA = {STAGE_KEYS, (int)(sizeof STAGE_KEYS / sizeof *STAGE_KEYS)};

/* ---- loader state: where errors are reported, and where each key was set ---- */

typedef struct {
    char *path, *where;
} loc;

typedef struct {
    const char *file;
    const char *fixed; /* reported instead of file positions: the override or "default" */
    int in_default;    /* > 0 while defaults are set: they have no position worth recording */
    char *err;
    size_t err_len;
    vnm_status status;
    loc *locs;
    int n_locs, cap_locs;
} loader;

static vnm_status fail(loader *ld, const char *where, const char *fmt, ...)
{
    if (ld->status != VNM_OK) return ld->status;
    ld->status = VNM_ERR_INPUT;
    if (!ld->err || ld->err_len == 0) return ld->status;
    int n = snprintf(ld->err, ld->err_len, "%s: ", where);
    if (n >= 0 && (size_t)n < ld->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->err_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return ld->status;
}

static vnm_status fail_oom(loader *ld)
{
    if (ld->status == VNM_OK && ld->err && ld->err_len)
        snprintf(ld->err, ld->err_len, "recipe: out of memory");
    if (ld->status == VNM_OK) ld->status = VNM_ERR_RUNTIME;
    return ld->status;
}

/* The position users see for node: "file:line:col" (1-based), or the override being applied. */
static void where_of(const loader *ld, const yaml_node_t *node, char *buf, size_t len)
{
    if (ld->fixed)
        snprintf(buf, len, "%s", ld->fixed);
    else if (node)
        snprintf(buf, len, "%s:%zu:%zu", ld->file, node->start_mark.line + 1,
                 node->start_mark.column + 1);
    else
        snprintf(buf, len, "%s", ld->file);
}

static void record(loader *ld, const char *dpath, const yaml_node_t *node)
{
    if (ld->in_default) return;
    char where[512];
    where_of(ld, node, where, sizeof where);
    if (ld->n_locs == ld->cap_locs) {
        int cap = ld->cap_locs ? 2 * ld->cap_locs : 64;
        loc *l = realloc(ld->locs, (size_t)cap * sizeof *l);
        if (!l) {
            fail_oom(ld);
            return;
        }
        ld->locs = l;
        ld->cap_locs = cap;
    }
    loc *l = &ld->locs[ld->n_locs];
    l->path = strdup(dpath);
    l->where = strdup(where);
    if (!l->path || !l->where) {
        free(l->path);
        free(l->where);
        fail_oom(ld);
        return;
    }
    ld->n_locs++;
}

/* Cross-field errors point at where dpath was last set; defaults only have the file. */
static vnm_status fail_at(loader *ld, const char *dpath, const char *fmt, ...)
{
    const char *where = ld->file;
    for (int i = ld->n_locs - 1; i >= 0; i--)
        if (strcmp(ld->locs[i].path, dpath) == 0) {
            where = ld->locs[i].where;
            break;
        }
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail(ld, where, "%s: %s", dpath, msg);
}

/* ---- did you mean ---- */

/* Optimal-string-alignment Damerau–Levenshtein distance (adjacent swaps count 1). */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[la][lb];
}

/* How well typed matches name: the distance if ≤ 2, 3 for a prefix either way, else -1. */
static int match_score(const char *typed, const char *name)
{
    int d = edit_distance(typed, name);
    if (d <= 2) return d;
    size_t lt = strlen(typed), ln = strlen(name);
    if (lt > 0 && ln > 0 && (strncmp(typed, name, lt) == 0 || strncmp(typed, name, ln) == 0))
        return 3;
    return -1;
}

static int score_with_aliases(const char *typed, const char *name, const char *aliases)
{
    int best = match_score(typed, name);
    for (const char *a = aliases; a && *a;) {
        size_t n = strcspn(a, " ");
        char alias[64];
        if (n < sizeof alias) {
            memcpy(alias, a, n);
            alias[n] = '\0';
            int s = match_score(typed, alias);
            if (s >= 0 && (best < 0 || s < best)) best = s;
        }
        a += n;
        a += *a == ' ';
    }
    return best;
}

static const char *last_component(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

/* True when key is a direct child of the section tprefix ("" for the top level). */
static bool is_child(const schema_key *k, const char *tprefix)
{
    size_t lp = strlen(tprefix);
    if (lp) {
        if (strncmp(k->path, tprefix, lp) != 0 || k->path[lp] != '.') return false;
        return strchr(k->path + lp + 1, '.') == NULL;
    }
    return strchr(k->path, '.') == NULL;
}

static vnm_status fail_unknown(loader *ld, const schema *sc, const char *where, const char *tprefix,
                               const char *dprefix, const char *typed)
{
    const char *best = NULL;
    int best_score = -1;
    char allowed[512] = "";
    size_t used = 0;
    for (int i = 0; i < sc->n; i++) {
        const schema_key *k = &sc->keys[i];
        if (!is_child(k, tprefix)) continue;
        const char *name = last_component(k->path);
        int s = score_with_aliases(typed, name, k->aliases);
        if (s >= 0 && (best_score < 0 || s < best_score)) {
            best = name;
            best_score = s;
        }
        int n = snprintf(allowed + used, sizeof allowed - used, "%s%s", used ? ", " : "", name);
        if (n > 0 && used + (size_t)n < sizeof allowed) used += (size_t)n;
    }
    char place[300];
    if (*dprefix)
        snprintf(place, sizeof place, "in %s", dprefix);
    else
        snprintf(place, sizeof place, "at top level");
    if (best)
        return fail(ld, where, "unknown key '%s' %s (did you mean '%s'?)", typed, place, best);
    return fail(ld, where, "unknown key '%s' %s (allowed: %s)", typed, place, allowed);
}

/* ---- typed values ---- */

static void *field(void *base, const schema_key *k) { return (char *)base + k->off; }
static const void *cfield(const void *base, const schema_key *k)
{
    return (const char *)base + k->off;
}

static bool is_null(const yaml_node_t *n)
{
    if (!n) return true;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static const char *plain(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
               ? (const char *)n->data.scalar.value
               : NULL;
}

/* What the user wrote, for "got ..." */
static void describe(const yaml_node_t *n, char *buf, size_t len)
{
    if (is_null(n))
        snprintf(buf, len, "nothing");
    else if (n->type == YAML_MAPPING_NODE)
        snprintf(buf, len, "a mapping");
    else if (n->type == YAML_SEQUENCE_NODE)
        snprintf(buf, len, "a list of %d",
                 (int)(n->data.sequence.items.top - n->data.sequence.items.start));
    else if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
        snprintf(buf, len, "%s", (const char *)n->data.scalar.value);
    else
        snprintf(buf, len, "'%s'", (const char *)n->data.scalar.value);
}

static void expectation(const schema_key *k, char *buf, size_t len)
{
    const char *noun = k->type == T_INT ? "an integer" : "a number";
    if (k->type == T_FLOAT2) noun = "a list of 2 numbers each";
    if (k->lo_kind && k->hi_kind)
        snprintf(buf, len, "%s in %c%g, %g%c", noun, k->lo_kind, k->lo, k->hi, k->hi_kind);
    else if (k->lo_kind)
        snprintf(buf, len, "%s %s %g", noun, k->lo_kind == '(' ? ">" : ">=", k->lo);
    else if (k->hi_kind)
        snprintf(buf, len, "%s %s %g", noun, k->hi_kind == ')' ? "<" : "<=", k->hi);
    else
        snprintf(buf, len, "%s", noun);
}

static bool in_range(const schema_key *k, double v)
{
    if (k->lo_kind == '[' && !(v >= k->lo)) return false;
    if (k->lo_kind == '(' && !(v > k->lo)) return false;
    if (k->hi_kind == ']' && !(v <= k->hi)) return false;
    if (k->hi_kind == ')' && !(v < k->hi)) return false;
    return true;
}

static bool parse_int(const char *s, int64_t *v)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *v = x;
    return true;
}

static bool parse_float(const char *s, double *v)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || *end || !isfinite(x)) return false;
    *v = x;
    return true;
}

static vnm_status parse_number(loader *ld, const schema_key *k, const char *where,
                               const char *dpath, const yaml_node_t *n, double *out)
{
    char exp[128], got[128];
    expectation(k, exp, sizeof exp);
    if (k->type == T_FLOAT2) /* one element of the pair */
        snprintf(exp, sizeof exp, "a number in %c%g, %g%c", k->lo_kind, k->lo, k->hi, k->hi_kind);
    describe(n, got, sizeof got);
    int64_t i = 0;
    bool ok = k->type == T_INT ? parse_int(plain(n), &i) : parse_float(plain(n), out);
    if (ok && k->type == T_INT) *out = (double)i;
    if (!ok || !in_range(k, *out))
        return fail(ld, where, "%s: expected %s, got %s", dpath, exp, got);
    return VNM_OK;
}

static void strlist_free(vnm_recipe_strlist *l)
{
    for (int64_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static void stages_free(vnm_recipe *r);
static void set_unset(const schema_key *k, void *base);
static vnm_status apply_defaults(loader *ld, const schema *sc, void *base);
static vnm_status walk_mapping(loader *ld, const schema *sc, void *base, const char *tprefix,
                               const char *dprefix, yaml_document_t *doc, yaml_node_t *map);

static vnm_status set_stages(loader *ld, vnm_recipe *r, const char *where, const char *dpath,
                             yaml_document_t *doc, yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE) {
        char got[128];
        describe(n, got, sizeof got);
        return fail(ld, where, "%s: expected a list of stages, got %s", dpath, got);
    }
    stages_free(r);
    int64_t count = n->data.sequence.items.top - n->data.sequence.items.start;
    if (count == 0) return fail(ld, where, "%s: expected at least one stage", dpath);
    r->stages = calloc((size_t)count, sizeof *r->stages);
    if (!r->stages) return fail_oom(ld);
    for (int64_t i = 0; i < count; i++) {
        vnm_recipe_stage *st = &r->stages[i];
        r->n_stages = i + 1;
        if (apply_defaults(ld, &STAGE_SCHEMA, st)) return ld->status;
        yaml_node_t *item = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
        char ipath[64];
        snprintf(ipath, sizeof ipath, "%s[%" PRId64 "]", dpath, i);
        record(ld, ipath, item);
        if (item->type != YAML_MAPPING_NODE) {
            char w[512], got[128];
            where_of(ld, item, w, sizeof w);
            describe(item, got, sizeof got);
            return fail(ld, w, "%s: expected a mapping with name, kind and a length, got %s",
                        ipath, got);
        }
        if (walk_mapping(ld, &STAGE_SCHEMA, st, "", ipath, doc, item)) return ld->status;
    }
    return ld->status;
}

static vnm_status set_strlist(loader *ld, vnm_recipe_strlist *l, const char *where,
                              const char *dpath, yaml_document_t *doc, const yaml_node_t *n)
{
    char got[128];
    describe(n, got, sizeof got);
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(ld, where, "%s: expected a list of strings, got %s", dpath, got);
    int64_t count = n->data.sequence.items.top - n->data.sequence.items.start;
    char **items = calloc((size_t)count + 1, sizeof *items);
    if (!items) return fail_oom(ld);
    for (int64_t i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
        const char *s = scalar(item);
        if (!s || !*s) {
            vnm_recipe_strlist tmp = {items, i};
            strlist_free(&tmp);
            describe(item, got, sizeof got);
            return fail(ld, where, "%s[%" PRId64 "]: expected a non-empty string, got %s", dpath,
                        i, got);
        }
        items[i] = strdup(s);
        if (!items[i]) {
            vnm_recipe_strlist tmp = {items, i};
            strlist_free(&tmp);
            return fail_oom(ld);
        }
    }
    strlist_free(l);
    l->items = items;
    l->n = count;
    return VNM_OK;
}

static vnm_status set_from_text(loader *ld, const schema_key *k, void *base, const char *text,
                                const char *dpath);

/* Sets one leaf from node. Null values reset an optional key to absent and any other key to its
 * default. */
static vnm_status set_leaf(loader *ld, const schema_key *k, void *base, const char *dpath,
                           yaml_document_t *doc, yaml_node_t *n)
{
    char where[512], got[128];
    where_of(ld, n, where, sizeof where);
    describe(n, got, sizeof got);
    if (is_null(n)) {
        if (!k->def) {
            set_unset(k, base);
            return VNM_OK;
        }
        return set_from_text(ld, k, base, k->def, dpath);
    }
    void *f = field(base, k);
    switch (k->type) {
    case T_INT:
    case T_FLOAT: {
        double v;
        if (parse_number(ld, k, where, dpath, n, &v)) return ld->status;
        if (k->type == T_INT)
            parse_int(plain(n), (int64_t *)f);
        else
            *(double *)f = v;
        return VNM_OK;
    }
    case T_BOOL: {
        const char *s = plain(n);
        if (s && !strcmp(s, "true"))
            *(bool *)f = true;
        else if (s && !strcmp(s, "false"))
            *(bool *)f = false;
        else
            return fail(ld, where, "%s: expected true or false, got %s", dpath, got);
        return VNM_OK;
    }
    case T_STR: {
        const char *s = scalar(n);
        if (!s || !*s)
            return fail(ld, where, "%s: expected a non-empty string, got %s", dpath, got);
        struct stat sb;
        if ((k->flags & F_PATH_EXISTS) && stat(s, &sb) != 0)
            return fail(ld, where, "%s: expected an existing file, '%s': %s", dpath, s,
                        strerror(errno));
        char *copy = strdup(s);
        if (!copy) return fail_oom(ld);
        free(*(char **)f);
        *(char **)f = copy;
        return VNM_OK;
    }
    case T_ENUM: {
        const char *s = plain(n);
        char list[256] = "";
        const char *best = NULL;
        int best_score = -1;
        for (int i = 0; k->names[i]; i++) {
            if (s && !strcmp(s, k->names[i])) {
                *(int *)f = i;
                return VNM_OK;
            }
            int sc = s ? match_score(s, k->names[i]) : -1;
            if (sc >= 0 && (best_score < 0 || sc < best_score)) {
                best = k->names[i];
                best_score = sc;
            }
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s%s", i ? "|" : "", k->names[i]);
        }
        if (best)
            return fail(ld, where, "%s: expected one of %s, got %s (did you mean '%s'?)", dpath,
                        list, got, best);
        return fail(ld, where, "%s: expected one of %s, got %s", dpath, list, got);
    }
    case T_PATTERN: {
        const char *s = scalar(n);
        char msg[256];
        vnm_pattern p;
        if (!s)
            return fail(ld, where, "%s: expected a V:N:M pattern such as '64:2:8', got %s", dpath,
                        got);
        if (vnm_pattern_parse(s, &p, msg, sizeof msg))
            return fail(ld, where, "%s: expected a V:N:M pattern, got '%s' (%s)", dpath, s, msg);
        *(vnm_pattern *)f = p;
        return VNM_OK;
    }
    case T_STRLIST:
        return set_strlist(ld, f, where, dpath, doc, n);
    case T_FLOAT2: {
        char exp[128];
        expectation(k, exp, sizeof exp);
        if (n->type != YAML_SEQUENCE_NODE ||
            n->data.sequence.items.top - n->data.sequence.items.start != 2)
            return fail(ld, where, "%s: expected %s, got %s", dpath, exp, got);
        double v[2];
        for (int i = 0; i < 2; i++) {
            yaml_node_t *item = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
            char ipath[300], iwhere[512];
            snprintf(ipath, sizeof ipath, "%s[%d]", dpath, i);
            where_of(ld, item, iwhere, sizeof iwhere);
            if (parse_number(ld, k, iwhere, ipath, item, &v[i])) return ld->status;
        }
        memcpy(f, v, sizeof v);
        return VNM_OK;
    }
    case T_STAGES:
        return set_stages(ld, base, where, dpath, doc, n);
    case T_SECTION:
        break;
    }
    return fail(ld, where, "%s: internal error: not a value", dpath);
}

/* Parses text as one YAML document; on a syntax error fails with the problem at its position
 * (prefix names the file or the override). */
static vnm_status parse_yaml(loader *ld, yaml_parser_t *p, yaml_document_t *doc, const char *prefix,
                             bool positions)
{
    if (yaml_parser_load(p, doc)) return VNM_OK;
    char where[512];
    if (positions)
        snprintf(where, sizeof where, "%s:%zu:%zu", prefix, p->problem_mark.line + 1,
                 p->problem_mark.column + 1);
    else
        snprintf(where, sizeof where, "%s", prefix);
    if (p->error == YAML_MEMORY_ERROR) return fail_oom(ld);
    if (p->context)
        return fail(ld, where, "YAML syntax error: %s %s (line %zu column %zu)", p->problem,
                    p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    return fail(ld, where, "YAML syntax error: %s", p->problem ? p->problem : "unreadable input");
}

/* Defaults (and null values) come through the same parser and checks as user input. */
static vnm_status set_from_text(loader *ld, const schema_key *k, void *base, const char *text,
                                const char *dpath)
{
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) return fail_oom(ld);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    const char *saved = ld->fixed;
    ld->fixed = "default";
    ld->in_default++;
    if (parse_yaml(ld, &p, &doc, "default", false) == VNM_OK) {
        set_leaf(ld, k, base, dpath, &doc, yaml_document_get_root_node(&doc));
        yaml_document_delete(&doc);
    }
    ld->in_default--;
    ld->fixed = saved;
    yaml_parser_delete(&p);
    return ld->status;
}

static void set_unset(const schema_key *k, void *base)
{
    void *f = field(base, k);
    switch (k->type) {
    case T_INT: *(int64_t *)f = -1; break;
    case T_FLOAT: *(double *)f = NAN; break;
    case T_ENUM: *(int *)f = -1; break;
    case T_STR:
        free(*(char **)f);
        *(char **)f = NULL;
        break;
    default: break;
    }
}

static bool is_unset(const schema_key *k, const void *base)
{
    const void *f = cfield(base, k);
    switch (k->type) {
    case T_INT: return *(const int64_t *)f == -1;
    case T_FLOAT: return isnan(*(const double *)f);
    case T_ENUM: return *(const int *)f == -1;
    case T_STR: return *(char *const *)f == NULL;
    default: return false;
    }
}

static vnm_status apply_defaults(loader *ld, const schema *sc, void *base)
{
    for (int i = 0; i < sc->n && ld->status == VNM_OK; i++) {
        const schema_key *k = &sc->keys[i];
        if (k->type == T_SECTION) continue;
        if (k->def)
            set_from_text(ld, k, base, k->def, k->path);
        else
            set_unset(k, base);
    }
    return ld->status;
}

static const schema_key *find_key(const schema *sc, const char *tpath)
{
    for (int i = 0; i < sc->n; i++)
        if (!strcmp(sc->keys[i].path, tpath)) return &sc->keys[i];
    return NULL;
}

/* buf = "prefix.name" (or name); key paths are short, a cut one only shortens a message. */
static void join(char *buf, size_t len, const char *prefix, const char *name)
{
    size_t used = 0;
    for (const char *parts[3] = {prefix, *prefix ? "." : "", name}, **p = parts; p < parts + 3; p++)
        for (const char *c = *p; *c && used + 1 < len; c++) buf[used++] = *c;
    buf[used] = '\0';
}

static vnm_status apply_node(loader *ld, const schema *sc, const schema_key *k, void *base,
                             const char *dpath, yaml_document_t *doc, yaml_node_t *n)
{
    record(ld, dpath, n);
    if (ld->status) return ld->status;
    if (k->type != T_SECTION) return set_leaf(ld, k, base, dpath, doc, n);
    if (k->off >= 0) *(bool *)field(base, k) = true;
    if (is_null(n)) return VNM_OK; /* "lora:" alone turns the section on with its defaults */
    if (n->type != YAML_MAPPING_NODE) {
        char where[512], got[128];
        where_of(ld, n, where, sizeof where);
        describe(n, got, sizeof got);
        return fail(ld, where, "%s: expected a mapping, got %s", dpath, got);
    }
    return walk_mapping(ld, sc, base, k->path, dpath, doc, n);
}

static vnm_status walk_mapping(loader *ld, const schema *sc, void *base, const char *tprefix,
                               const char *dprefix, yaml_document_t *doc, yaml_node_t *map)
{
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *kn = yaml_document_get_node(doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(doc, pr->value);
        char where[512];
        where_of(ld, kn, where, sizeof where);
        const char *name = plain(kn);
        if (!name || !*name) {
            char got[128];
            describe(kn, got, sizeof got);
            return fail(ld, where, "%s: expected a plain key name, got %s",
                        *dprefix ? dprefix : "recipe", got);
        }
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pr; q++) {
            yaml_node_t *qk = yaml_document_get_node(doc, q->key);
            const char *qn = plain(qk);
            if (qn && !strcmp(qn, name))
                return fail(ld, where, "duplicate key '%s' %s%s (first at line %zu column %zu)",
                            name, *dprefix ? "in " : "at top level", dprefix,
                            qk->start_mark.line + 1, qk->start_mark.column + 1);
        }
        char tpath[256], dpath[300];
        join(tpath, sizeof tpath, tprefix, name);
        join(dpath, sizeof dpath, dprefix, name);
        const schema_key *k = find_key(sc, tpath);
        if (!k) return fail_unknown(ld, sc, where, tprefix, dprefix, name);
        if (apply_node(ld, sc, k, base, dpath, doc, vn)) return ld->status;
    }
    return VNM_OK;
}

/* ---- overrides ---- */

static int64_t find_stage(const vnm_recipe *r, const char *sel)
{
    int64_t idx;
    if (parse_int(sel, &idx)) return idx >= 0 && idx < r->n_stages ? idx : -1;
    for (int64_t i = 0; i < r->n_stages; i++)
        if (r->stages[i].name && !strcmp(r->stages[i].name, sel)) return i;
    return -1;
}

/* Resolves the dotted key comps[0..n) within sc and applies node there. */
static vnm_status resolve(loader *ld, const schema *sc, void *base, char **comps, int n,
                          const char *dprefix, yaml_document_t *doc, yaml_node_t *node)
{
    char where[512], tpath[256] = "", dpath[300];
    where_of(ld, NULL, where, sizeof where);
    snprintf(dpath, sizeof dpath, "%s", dprefix);
    for (int i = 0; i < n; i++) {
        char tprev[256], dprev[300];
        snprintf(tprev, sizeof tprev, "%s", tpath);
        snprintf(dprev, sizeof dprev, "%s", dpath);
        join(tpath, sizeof tpath, tprev, comps[i]);
        join(dpath, sizeof dpath, dprev, comps[i]);
        const schema_key *k = find_key(sc, tpath);
        if (!k) return fail_unknown(ld, sc, where, tprev, dprev, comps[i]);
        if (i == n - 1) return apply_node(ld, sc, k, base, dpath, doc, node);
        if (k->type == T_SECTION) {
            if (k->off >= 0) *(bool *)field(base, k) = true;
            continue;
        }
        if (k->type == T_STAGES) {
            vnm_recipe *r = base;
            int64_t s = find_stage(r, comps[i + 1]);
            if (s < 0)
                return fail(ld, where, "stages: no stage '%s' (give an index below %" PRId64
                            " or a stage name)", comps[i + 1], r->n_stages);
            if (i + 2 >= n)
                return fail(ld, where, "stages.%s: expected a key inside the stage", comps[i + 1]);
            char spath[64];
            snprintf(spath, sizeof spath, "stages[%" PRId64 "]", s);
            record(ld, spath, NULL); /* rules on the stage now point at this override */
            return resolve(ld, &STAGE_SCHEMA, &r->stages[s], comps + i + 2, n - i - 2, spath, doc,
                           node);
        }
        return fail(ld, where, "%s: is a value, not a section", dpath);
    }
    return fail(ld, where, "expected key.path=value");
}

static vnm_status apply_override(loader *ld, vnm_recipe *r, const char *text)
{
    char where[512];
    snprintf(where, sizeof where, "override '%s'", text);
    ld->fixed = where;
    const char *eq = strchr(text, '=');
    if (!eq || eq == text) return fail(ld, where, "expected key.path=value");
    char *key = strndup(text, (size_t)(eq - text));
    if (!key) return fail_oom(ld);
    char *comps[16];
    int n = 0;
    bool bad = key[0] == '.' || key[strlen(key) - 1] == '.' || strstr(key, "..");
    for (char *save = NULL, *c = strtok_r(key, ".", &save); c && !bad;
         c = strtok_r(NULL, ".", &save)) {
        bad = n == 16;
        if (!bad) comps[n++] = c;
    }
    if (bad) {
        free(key);
        return fail(ld, where, "expected key.path=value");
    }
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) {
        free(key);
        return fail_oom(ld);
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)eq + 1, strlen(eq + 1));
    if (parse_yaml(ld, &p, &doc, where, false) == VNM_OK) {
        resolve(ld, &RECIPE_SCHEMA, r, comps, n, "", &doc, yaml_document_get_root_node(&doc));
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&p);
    free(key);
    ld->fixed = NULL;
    return ld->status;
}

/* ---- rules across keys ---- */

/* llama: a config.json, or custom dims with kv_heads dividing heads; intermediate size is
 * mlp_ratio · embed_dim (rounded), vocab and context come from the data when 0. */
static vnm_status resolve_llama(loader *ld, vnm_recipe *r)
{
    if (r->model.config) return VNM_OK;
    if (r->model.size != VNM_RECIPE_SIZE_CUSTOM)
        return fail_at(ld, "model.size", "llama has no size presets: give model.config (a "
                       "transformers config.json) or size: custom with embed_dim, depth, heads");
    static const char *const names[3] = {"model.embed_dim", "model.depth", "model.heads"};
    const int64_t dims[3] = {r->model.embed_dim, r->model.depth, r->model.heads};
    for (int i = 0; i < 3; i++)
        if (dims[i] == 0) return fail_at(ld, "model.size", "size custom needs %s", names[i]);
    if (r->model.kv_heads == 0) r->model.kv_heads = r->model.heads;
    if (r->model.embed_dim % r->model.heads || (r->model.embed_dim / r->model.heads) % 2)
        return fail_at(ld, "model.heads", "%" PRId64 " heads must divide embed_dim %" PRId64
                       " into even head sizes (RoPE rotates pairs)", r->model.heads,
                       r->model.embed_dim);
    if (r->model.heads % r->model.kv_heads)
        return fail_at(ld, "model.kv_heads", "%" PRId64 " does not divide heads %" PRId64,
                       r->model.kv_heads, r->model.heads);
    return VNM_OK;
}

static vnm_status resolve_model(loader *ld, vnm_recipe *r)
{
    if (r->model.arch == VNM_RECIPE_ARCH_LLAMA) return resolve_llama(ld, r);
    static const int64_t presets[3][3] = {{192, 12, 3}, {384, 12, 6}, {768, 12, 12}}; /* DeiT */
    int64_t *dims[3] = {&r->model.embed_dim, &r->model.depth, &r->model.heads};
    static const char *const names[3] = {"model.embed_dim", "model.depth", "model.heads"};
    for (int i = 0; i < 3; i++) {
        if (r->model.size == VNM_RECIPE_SIZE_CUSTOM) {
            if (*dims[i] == 0) return fail_at(ld, "model.size", "size custom needs %s", names[i]);
            continue;
        }
        int64_t want = presets[r->model.size][i];
        if (*dims[i] != 0 && *dims[i] != want)
            return fail_at(ld, names[i], "%" PRId64 " conflicts with size %s (%" PRId64
                           "); use size: custom", *dims[i], SIZES[r->model.size], want);
        *dims[i] = want;
    }
    if (r->model.embed_dim % r->model.heads)
        return fail_at(ld, "model.heads", "%" PRId64 " heads do not divide embed_dim %" PRId64,
                       r->model.heads, r->model.embed_dim);
    if (r->model.image_size % r->model.patch)
        return fail_at(ld, "model.patch", "%" PRId64 " does not divide image_size %" PRId64,
                       r->model.patch, r->model.image_size);
    return VNM_OK;
}

static bool kind_is_sparse_trained(vnm_recipe_stage_kind k)
{
    return k == VNM_RECIPE_STAGE_SPARSE_FIXED;
}

static vnm_status check_stages(loader *ld, const vnm_recipe *r)
{
    double fraction_sum = 0;
    bool pruned = r->model.weights != NULL; /* given weights may already be sparse */
    bool masked = false;                    /* a lora_sparse_dynamic stage chose LoRA masks */
    for (int64_t i = 0; i < r->n_stages; i++) {
        const vnm_recipe_stage *st = &r->stages[i];
        char ipath[64], kpath[80];
        snprintf(ipath, sizeof ipath, "stages[%" PRId64 "]", i);
        for (int j = 0; j < STAGE_SCHEMA.n; j++) {
            const schema_key *k = &STAGE_SCHEMA.keys[j];
            if ((k->flags & F_REQUIRED) && is_unset(k, st))
                return fail_at(ld, ipath, "missing key '%s' (%s)", k->path, k->help);
        }
        int lengths = (st->steps != -1) + !isnan(st->epochs) + !isnan(st->fraction);
        if (lengths != 1)
            return fail_at(ld, ipath, "stage '%s' needs exactly one of steps, epochs, fraction "
                           "(got %d)", st->name, lengths);
        for (int64_t j = 0; j < i; j++)
            if (!strcmp(r->stages[j].name, st->name)) {
                snprintf(kpath, sizeof kpath, "%s.name", ipath);
                return fail_at(ld, kpath, "duplicate stage name '%s' (also stages[%" PRId64 "])",
                               st->name, j);
            }
        if (!isnan(st->fraction)) fraction_sum += st->fraction;
        snprintf(kpath, sizeof kpath, "%s.kind", ipath);
        const char *kind = KINDS[st->kind];
        bool lora = st->kind >= VNM_RECIPE_STAGE_LORA_DENSE;
        bool needs_sparsity = st->kind != VNM_RECIPE_STAGE_DENSE &&
                              st->kind != VNM_RECIPE_STAGE_LORA_DENSE;
        if (needs_sparsity && !r->sparsity.present)
            return fail_at(ld, kpath, "stage '%s' (%s) needs a sparsity section", st->name, kind);
        if (lora && !r->lora.present)
            return fail_at(ld, kpath, "stage '%s' (%s) needs a lora section", st->name, kind);
        if (kind_is_sparse_trained(st->kind) && !pruned)
            return fail_at(ld, kpath, "stage '%s' (%s) comes before any prune stage and "
                           "model.weights is not given, so there are no sparse weights to train",
                           st->name, kind);
        /* SR-STE chooses its masks from the dense weights and freezes them at its end: it
         * takes the place of a one-shot prune (dense → sparse_srste → sparse_fixed) */
        if (st->kind == VNM_RECIPE_STAGE_SPARSE_SRSTE && pruned)
            return fail_at(ld, kpath, "stage '%s' (sparse_srste) needs dense weights, but they "
                           "are already sparse (an earlier prune or sparse_srste stage, or "
                           "model.weights); SR-STE replaces the one-shot prune: dense → "
                           "sparse_srste → sparse_fixed", st->name);
        /* lora_sparse_fixed keeps the masks a lora_sparse_dynamic stage chose last (METHOD §6),
         * or adapts a base an earlier prune made sparse */
        if (st->kind == VNM_RECIPE_STAGE_LORA_SPARSE_FIXED && !masked && !pruned)
            return fail_at(ld, kpath, "stage '%s' (lora_sparse_fixed) needs masks: a "
                           "lora_sparse_dynamic or prune stage before it (lora_dense → "
                           "lora_sparse_dynamic → lora_sparse_fixed)", st->name);
        if (st->kind == VNM_RECIPE_STAGE_PRUNE || st->kind == VNM_RECIPE_STAGE_SPARSE_SRSTE)
            pruned = true;
        if (st->kind == VNM_RECIPE_STAGE_LORA_SPARSE_DYNAMIC) masked = true;
    }
    if (fraction_sum > 1 + 1e-9)
        return fail_at(ld, "stages", "stage fractions sum to %g, more than 1", fraction_sum);
    return VNM_OK;
}

static char *dup_printf(loader *ld, const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (!s) {
        fail_oom(ld);
        return NULL;
    }
    snprintf(s, n, fmt, a, b);
    return s;
}

static vnm_status resolve_derived(loader *ld, vnm_recipe *r)
{
    if (!isnan(r->schedule.warmup_fraction) && r->schedule.warmup_steps > 0)
        return fail_at(ld, "schedule.warmup_fraction",
                       "give warmup_steps or warmup_fraction, not both");
    if (resolve_model(ld, r) || check_stages(ld, r)) return ld->status;
    if (r->data.val_batch_size == 0) r->data.val_batch_size = r->data.batch_size;
    if (!r->run.output_dir && !(r->run.output_dir = dup_printf(ld, "%s%s", "runs/", r->run.name)))
        return ld->status;
    if (!r->checkpoint.dir &&
        !(r->checkpoint.dir = dup_printf(ld, "%s%s", r->run.output_dir, "/ckpt")))
        return ld->status;
    if (!r->log.metrics &&
        !(r->log.metrics = dup_printf(ld, "%s%s", r->run.output_dir, "/metrics.jsonl")))
        return ld->status;
    return VNM_OK;
}

/* ---- public entry points ---- */

static void free_table(const schema *sc, void *base)
{
    for (int i = 0; i < sc->n; i++) {
        const schema_key *k = &sc->keys[i];
        if (k->type == T_STR) {
            free(*(char **)field(base, k));
            *(char **)field(base, k) = NULL;
        } else if (k->type == T_STRLIST) {
            strlist_free(field(base, k));
        } else if (k->type == T_STAGES) {
            stages_free(base);
        }
    }
}

static void stages_free(vnm_recipe *r)
{
    for (int64_t i = 0; i < r->n_stages; i++) free_table(&STAGE_SCHEMA, &r->stages[i]);
    free(r->stages);
    r->stages = NULL;
    r->n_stages = 0;
}

void vnm_recipe_free(vnm_recipe *r)
{
    if (r) free_table(&RECIPE_SCHEMA, r);
}

vnm_status vnm_recipe_load(const char *path, const char *const *overrides, int n_overrides,
                           vnm_recipe *out, char *err, size_t err_len)
{
    loader ld = {.file = path ? path : "(null)", .err = err, .err_len = err_len};
    if (err && err_len) err[0] = '\0';
    if (!path || !out || (n_overrides > 0 && !overrides))
        return fail(&ld, "recipe", "vnm_recipe_load: path, out and overrides must be given");
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return fail(&ld, path, "cannot open recipe: %s", strerror(errno));
    yaml_parser_t p;
    yaml_document_t doc;
    bool have_doc = false;
    if (!yaml_parser_initialize(&p)) {
        fclose(f);
        return fail_oom(&ld);
    }
    yaml_parser_set_input_file(&p, f);
    if (apply_defaults(&ld, &RECIPE_SCHEMA, out) == VNM_OK &&
        parse_yaml(&ld, &p, &doc, path, true) == VNM_OK) {
        have_doc = true;
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        char got[128];
        if (!root) {
            fail(&ld, path, "empty recipe (expected a mapping of sections such as run, model, "
                 "stages)");
        } else if (root->type != YAML_MAPPING_NODE) {
            char where[512];
            where_of(&ld, root, where, sizeof where);
            describe(root, got, sizeof got);
            fail(&ld, where, "expected a mapping of sections at top level, got %s", got);
        } else {
            walk_mapping(&ld, &RECIPE_SCHEMA, out, "", "", &doc, root);
        }
    }
    for (int i = 0; i < n_overrides && ld.status == VNM_OK; i++)
        apply_override(&ld, out, overrides[i]);
    if (ld.status == VNM_OK) resolve_derived(&ld, out);
    if (have_doc) yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    fclose(f);
    for (int i = 0; i < ld.n_locs; i++) {
        free(ld.locs[i].path);
        free(ld.locs[i].where);
    }
    free(ld.locs);
    if (ld.status != VNM_OK) vnm_recipe_free(out);
    return ld.status;
}

/* ---- emitting ---- */

static void emit_float(FILE *f, double v)
{
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) { /* shortest text that reads back to the same double */
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

static void emit_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(f, "\\x%02X", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

static bool has_content(const schema *sc, int i, const void *base);

static bool key_emitted(const schema *sc, int i, const void *base)
{
    const schema_key *k = &sc->keys[i];
    if (k->type == T_SECTION) return has_content(sc, i, base);
    return !is_unset(k, base);
}

/* A section is written when it is present and some key inside it has a value. */
static bool has_content(const schema *sc, int i, const void *base)
{
    const schema_key *k = &sc->keys[i];
    if (k->off >= 0 && !*(const bool *)cfield(base, k)) return false;
    size_t lp = strlen(k->path);
    for (int j = i + 1; j < sc->n; j++) {
        if (strncmp(sc->keys[j].path, k->path, lp) != 0 || sc->keys[j].path[lp] != '.') continue;
        if (sc->keys[j].type != T_SECTION && key_emitted(sc, j, base)) return true;
    }
    return false;
}

static void emit_table(FILE *f, const schema *sc, const void *base, int indent, bool dash);

static void emit_value(FILE *f, const schema_key *k, const void *base)
{
    const void *v = cfield(base, k);
    switch (k->type) {
    case T_INT: fprintf(f, "%" PRId64, *(const int64_t *)v); break;
    case T_FLOAT: emit_float(f, *(const double *)v); break;
    case T_BOOL: fputs(*(const bool *)v ? "true" : "false", f); break;
    case T_STR: emit_string(f, *(char *const *)v); break;
    case T_ENUM: fputs(k->names[*(const int *)v], f); break;
    case T_PATTERN: {
        char buf[32];
        emit_string(f, vnm_pattern_str(*(const vnm_pattern *)v, buf, sizeof buf));
        break;
    }
    case T_STRLIST: {
        const vnm_recipe_strlist *l = v;
        fputc('[', f);
        for (int64_t i = 0; i < l->n; i++) {
            if (i) fputs(", ", f);
            emit_string(f, l->items[i]);
        }
        fputc(']', f);
        break;
    }
    case T_FLOAT2:
        fputc('[', f);
        emit_float(f, ((const double *)v)[0]);
        fputs(", ", f);
        emit_float(f, ((const double *)v)[1]);
        fputc(']', f);
        break;
    case T_STAGES: {
        const vnm_recipe *r = base;
        for (int64_t i = 0; i < r->n_stages; i++) {
            fputc('\n', f);
            emit_table(f, &STAGE_SCHEMA, &r->stages[i], 4, true);
        }
        return;
    }
    case T_SECTION: break;
    }
}

static void emit_table(FILE *f, const schema *sc, const void *base, int indent, bool dash)
{
    const char *skip = NULL; /* path of a section left out, with everything under it */
    bool first = true;
    for (int i = 0; i < sc->n; i++) {
        const schema_key *k = &sc->keys[i];
        if (skip && !strncmp(k->path, skip, strlen(skip)) && k->path[strlen(skip)] == '.') continue;
        skip = NULL;
        if (!key_emitted(sc, i, base)) {
            if (k->type == T_SECTION) skip = k->path;
            continue;
        }
        int depth = 0;
        for (const char *c = k->path; *c; c++) depth += *c == '.';
        int pad = indent + 2 * depth;
        if (!first) fputc('\n', f);
        if (first && dash)
            fprintf(f, "%*s- ", pad - 2, "");
        else
            fprintf(f, "%*s", pad, "");
        first = false;
        fprintf(f, "%s:", last_component(k->path));
        if (k->type != T_SECTION && k->type != T_STAGES) fputc(' ', f);
        emit_value(f, k, base);
    }
    if (!first && !dash) fputc('\n', f);
}

vnm_status vnm_recipe_emit(const vnm_recipe *r, FILE *f)
{
    if (!r || !f) return VNM_ERR_INPUT;
    emit_table(f, &RECIPE_SCHEMA, r, 0, false);
    return ferror(f) ? VNM_ERR_RUNTIME : VNM_OK;
}

char *vnm_recipe_emit_string(const vnm_recipe *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    vnm_status st = vnm_recipe_emit(r, f);
    if (fclose(f) != 0 || st != VNM_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---- comparison and help ---- */

static bool table_equal(const schema *sc, const void *a, const void *b)
{
    for (int i = 0; i < sc->n; i++) {
        const schema_key *k = &sc->keys[i];
        const void *x = cfield(a, k), *y = cfield(b, k);
        bool eq = true;
        switch (k->type) {
        case T_SECTION: eq = k->off < 0 || *(const bool *)x == *(const bool *)y; break;
        case T_INT: eq = *(const int64_t *)x == *(const int64_t *)y; break;
        case T_FLOAT: {
            double u = *(const double *)x, v = *(const double *)y;
            eq = u == v || (isnan(u) && isnan(v));
            break;
        }
        case T_BOOL: eq = *(const bool *)x == *(const bool *)y; break;
        case T_ENUM: eq = *(const int *)x == *(const int *)y; break;
        case T_STR: {
            const char *u = *(char *const *)x, *v = *(char *const *)y;
            eq = (!u && !v) || (u && v && !strcmp(u, v));
            break;
        }
        case T_PATTERN: eq = !memcmp(x, y, sizeof(vnm_pattern)); break;
        case T_FLOAT2: eq = !memcmp(x, y, 2 * sizeof(double)); break;
        case T_STRLIST: {
            const vnm_recipe_strlist *u = x, *v = y;
            eq = u->n == v->n;
            for (int64_t j = 0; eq && j < u->n; j++) eq = !strcmp(u->items[j], v->items[j]);
            break;
        }
        case T_STAGES: {
            const vnm_recipe *u = a, *v = b;
            eq = u->n_stages == v->n_stages;
            for (int64_t j = 0; eq && j < u->n_stages; j++)
                eq = table_equal(&STAGE_SCHEMA, &u->stages[j], &v->stages[j]);
            break;
        }
        }
        if (!eq) return false;
    }
    return true;
}

bool vnm_recipe_equal(const vnm_recipe *a, const vnm_recipe *b)
{
    return a && b && table_equal(&RECIPE_SCHEMA, a, b);
}

static void help_table(FILE *f, const schema *sc, const char *prefix)
{
    static const char *const type_names[] = {"section", "int",  "float",   "bool",    "str",
                                             "enum",    "list", "[f, f]", "pattern", "stages"};
    for (int i = 0; i < sc->n; i++) {
        const schema_key *k = &sc->keys[i];
        char range[128] = "";
        if (k->type == T_ENUM) {
            for (int j = 0; k->names[j]; j++) {
                size_t used = strlen(range);
                snprintf(range + used, sizeof range - used, "%s%s", j ? "|" : "", k->names[j]);
            }
        } else if (k->lo_kind || k->hi_kind) {
            expectation(k, range, sizeof range);
        }
        fprintf(f, "%s%-28s %-8s %-28s %-12s %s\n", prefix, k->path, type_names[k->type], range,
                k->def ? k->def : (k->flags & F_REQUIRED) ? "(required)" : "(optional)", k->help);
    }
}

void vnm_recipe_help(FILE *f)
{
    help_table(f, &RECIPE_SCHEMA, "");
    help_table(f, &STAGE_SCHEMA, "stages[].");
}
