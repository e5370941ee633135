/* train/recipe.h — training recipes: the typed vnm_recipe loaded from a YAML file (libyaml), checked
 * against one schema table (types, ranges, enums, defaults, help), with `key.sub=value` overrides
 * applied after the file, cross-field rules on stages, and the fully resolved recipe written back as
 * YAML that loads again to the same struct (it is stored in run directories and checkpoints).
 *
 * Every error message starts with where the problem is: "file:line:column: key.path: ..." for the
 * file, "override 'key=value': key.path: ..." for an override. Optional values that are absent are
 * held as sentinels: NULL strings, NaN numbers, -1 integers and enums.
 */
#ifndef VNM_RECIPE_H
#define VNM_RECIPE_H

#include <stdio.h>

#include "../autograd/autograd.h"
#include "../sparse/sparse.h"

typedef enum { VNM_RECIPE_DEVICE_CPU, VNM_RECIPE_DEVICE_CUDA } vnm_recipe_device;
typedef enum {
    VNM_RECIPE_PRECISION_F32,
    VNM_RECIPE_PRECISION_BF16,
    VNM_RECIPE_PRECISION_F16
} vnm_recipe_precision;
typedef enum { VNM_RECIPE_ARCH_VIT, VNM_RECIPE_ARCH_LLAMA } vnm_recipe_arch;
typedef enum {
    VNM_RECIPE_SIZE_TINY,
    VNM_RECIPE_SIZE_SMALL,
    VNM_RECIPE_SIZE_BASE,
    VNM_RECIPE_SIZE_CUSTOM
} vnm_recipe_size;
typedef enum {
    VNM_RECIPE_DATASET_FASHION_MNIST,
    VNM_RECIPE_DATASET_IMAGEFOLDER,
    VNM_RECIPE_DATASET_TOKENS
} vnm_recipe_dataset;
typedef enum { VNM_RECIPE_OPTIM_SGD, VNM_RECIPE_OPTIM_ADAMW } vnm_recipe_optim;
typedef enum {
    VNM_RECIPE_SCHEDULE_CONSTANT,
    VNM_RECIPE_SCHEDULE_COSINE,
    VNM_RECIPE_SCHEDULE_STEP,
    VNM_RECIPE_SCHEDULE_LINEAR
} vnm_recipe_schedule;
typedef enum {
    VNM_RECIPE_STAGE_DENSE,
    VNM_RECIPE_STAGE_PRUNE,
    VNM_RECIPE_STAGE_SPARSE_FIXED,
    VNM_RECIPE_STAGE_SPARSE_SRSTE,
    VNM_RECIPE_STAGE_LORA_DENSE,
    VNM_RECIPE_STAGE_LORA_SPARSE_DYNAMIC,
    VNM_RECIPE_STAGE_LORA_SPARSE_FIXED
} vnm_recipe_stage_kind;

typedef struct {
    char **items;
    int64_t n;
} vnm_recipe_strlist;

typedef struct {
    char *name;
    vnm_recipe_stage_kind kind;
    /* length: exactly one is set (steps ≥ 1, epochs > 0, fraction in (0,1]); the others -1 / NaN */
    int64_t steps;
    double epochs;
    double fraction;
    struct { /* per-stage overrides of the top-level optim section; NaN: inherit */
        double lr, weight_decay, momentum, clip_grad_norm;
    } optim;
    struct {
        int64_t every; /* mask recomputation period in steps */
        double lambda_w;
    } srste;
    struct {
        int64_t every; /* lora_sparse_dynamic: steps between merge + re-prune */
        double lambda; /* its regulariser on the entries the previous mask pruned */
    } lora;
} vnm_recipe_stage;

typedef struct {
    struct {
        char *name, *output_dir; /* output_dir defaults to runs/<name> */
        int64_t seed;
        vnm_recipe_device device;
        vnm_recipe_precision precision; /* of the products' operands (mixed precision) */
        double loss_scale;              /* f16: initial dynamic loss scale */
        int64_t loss_scale_growth_interval;
        bool deterministic; /* vnm_ctx_set_deterministic */
        int64_t threads;    /* 0: OpenMP's choice */
    } run;
    struct {
        vnm_recipe_arch arch;
        vnm_recipe_size size; /* tiny/small/base fill the dims below; custom needs them given */
        int64_t embed_dim, depth, heads;
        double mlp_ratio;
        int64_t patch, image_size, in_chans, num_classes;
        double drop_path;
        bool activation_checkpointing; /* per transformer block (vnm_checkpoint) */
        char *weights; /* safetensors path or NULL */
        /* llama: a transformers config.json (then the dims above are not used), or the dims above
         * with these; 0 takes the default named in the schema */
        char *config;
        int64_t kv_heads, vocab_size, max_positions;
        double rope_theta;
        bool tie_embeddings;
    } model;
    struct {
        vnm_recipe_dataset dataset;
        char *path;
        int64_t batch_size, val_batch_size; /* val_batch_size resolved to batch_size when 0 */
        struct {
            int64_t crop_padding;
            bool flip;
        } augment;
        int64_t workers;
        int64_t seq_len; /* tokens: packed sequence length */
    } data;
    struct {
        bool present; /* the recipe has a sparsity section */
        vnm_pattern pattern;
        vnm_recipe_strlist targets; /* fnmatch globs over weight names */
        vnm_score_kind score;
        vnm_selector selector;
        bool permute;
        int64_t permute_rounds, calibration_batches;
    } sparsity;
    struct {
        bool present;
        int64_t rank;
        double alpha, dropout;
        vnm_recipe_strlist targets; /* PEFT's target_modules (train/peft.h) */
        bool rslora;
        vnm_recipe_precision base_dtype; /* of the frozen base: f32 or bf16 */
    } lora;
    struct {
        vnm_recipe_optim name;
        double lr, weight_decay, momentum;
        bool nesterov;
        double betas[2];
        double eps, clip_grad_norm; /* clip_grad_norm 0: off */
        int64_t gradient_accumulation_steps; /* batches per optimiser step */
    } optim;
    struct {
        vnm_recipe_schedule name;
        int64_t warmup_steps;
        double warmup_fraction; /* NaN: not given; exclusive with warmup_steps > 0 */
        double min_lr;
        int64_t step_size;
        double gamma;
        bool per_stage; /* each training stage runs the schedule over its own steps */
    } schedule;
    struct {
        double label_smoothing; /* training loss only; evaluation uses plain cross-entropy */
    } loss;
    vnm_recipe_stage *stages;
    int64_t n_stages;
    struct {
        char *dir; /* defaults to <output_dir>/ckpt */
        int64_t every, keep_last;
    } checkpoint;
    struct {
        int64_t every;
        char *metrics; /* defaults to <output_dir>/metrics.jsonl */
    } log;
    struct {
        int64_t every; /* 0: only at the end */
    } eval;
} vnm_recipe;

/* Loads path, applies overrides ("a.b=value", value a YAML scalar or flow collection; "stages.N.key"
 * or "stages.<name>.key" reaches one stage), fills defaults, checks everything. On error returns
 * VNM_ERR_INPUT (VNM_ERR_RUNTIME when out of memory) with the message in err, and *out holds
 * nothing to free. */
vnm_status vnm_recipe_load(const char *path, const char *const *overrides, int n_overrides,
                           vnm_recipe *out, char *err, size_t err_len);
/* Writes the resolved recipe as YAML; vnm_recipe_load reads it back to an equal struct. */
vnm_status vnm_recipe_emit(const vnm_recipe *r, FILE *f);
char *vnm_recipe_emit_string(const vnm_recipe *r); /* malloc'd, NULL when out of memory */
bool vnm_recipe_equal(const vnm_recipe *a, const vnm_recipe *b);
/* One line per schema key: path, type and range, default, help. */
void vnm_recipe_help(FILE *f);
void vnm_recipe_free(vnm_recipe *r);

#endif
