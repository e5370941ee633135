/* train/models/vit.h — the ViT / DeiT image classifier, computed exactly as timm's
 * VisionTransformer (pre-norm blocks, LayerNorm eps 1e-6, qkv bias, exact GELU, class-token
 * pooling) and VisionTransformerDistilled (dist token, head_dist), on the autograd ops. Parameters
 * carry timm's state-dict names and shapes (ECOSYSTEM.md §4), so weights move to and from timm as
 * safetensors files. Every linear can be swapped for a V:N:M sparse weight (sparse/sparse.h) by a
 * prune stage; the model then runs it through vnm_sparse_linear and saves it decompressed.
 */
#ifndef VNM_VIT_H
#define VNM_VIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../autograd/autograd.h"
#include "../../sparse/sparse.h"

#define VNM_VIT_LN_EPS 1e-6f
#define VNM_VIT_NAME_MAX 64

typedef struct {
    int64_t embed_dim, depth, num_heads;
    double mlp_ratio;
    int64_t patch, img_size, in_chans, num_classes;
    bool distilled;       /* dist token + head_dist (DeiT distilled) */
    float drop_path_rate; /* block i gets rate · i / (depth − 1), as timm's linspace */
    bool skip_init;       /* no random init (weights stay zero, LayerNorms ones/zeros): for a
                           * model whose weights are loaded next */
} vnm_vit_config;

/* cfg = the timm preset "tiny" (192/12/3), "small" (384/12/6) or "base" (768/12/12) with mlp_ratio
 * 4, patch 16, 224×224×3, 1000 classes, not distilled, no drop-path; the caller then overrides. */
vnm_status vnm_vit_config_preset(const char *size, vnm_vit_config *cfg, char *err, size_t err_len);

/* One linear: a dense weight, or (after pruning) a sparse one; the bias is always dense. */
typedef struct {
    char name[VNM_VIT_NAME_MAX]; /* timm module name, e.g. "blocks.0.mlp.fc1" */
    int64_t in, out;
    int wndim;                    /* timm's weight shape: [out, in], or the conv's [D, C, p, p] */
    int64_t wshape[VNM_MAX_DIMS];
    vnm_tensor *weight;           /* dense f32 of shape wshape, NULL once sparse */
    vnm_sparse_weight *sparse;    /* owned by the model once set */
    vnm_srste *srste;             /* SR-STE dynamic masks over weight; owned by the model */
    int64_t srste_step;           /* the training step SR-STE masks are due for */
    vnm_tensor *bias;             /* [out] */
} vnm_vit_linear;

/* y[..., out] = x[..., in] · Wᵀ + b through vnm_linear, vnm_sparse_linear or (SR-STE, weight
 * masked by the current dynamic mask) vnm_srste_linear. */
vnm_tensor *vnm_vit_linear_forward(vnm_ctx *ctx, vnm_vit_linear *l, vnm_tensor *x);
/* Replaces l's weight by sw (which must be [out, in]); the model frees it. The dense weight stays
 * in the persistent arena but is no longer a parameter. */
vnm_status vnm_vit_linear_set_sparse(vnm_vit_linear *l, vnm_sparse_weight *sw, char *err,
                                     size_t err_len);
/* Gives l's dense weight SR-STE dynamic masks (s, owned by the model from then on; NULL removes
 * and frees them). */
void vnm_vit_linear_set_srste(vnm_vit_linear *l, vnm_srste *s);

typedef struct {
    vnm_tensor *norm1_w, *norm1_b; /* [D] */
    vnm_vit_linear qkv, proj, fc1, fc2;
    vnm_tensor *norm2_w, *norm2_b; /* [D] */
    float drop_path;
    struct vnm_vit *model; /* the block's model, for activation checkpointing */
    int64_t index;
} vnm_vit_block;

typedef struct vnm_vit {
    vnm_vit_config cfg;
    int64_t grid, num_patches, num_prefix, head_dim, mlp_hidden;
    vnm_vit_linear patch_embed;  /* "patch_embed.proj", weight [D, C, p, p] */
    vnm_tensor *cls_token;       /* [1, 1, D] */
    vnm_tensor *dist_token;      /* [1, 1, D], NULL unless distilled */
    vnm_tensor *pos_embed;       /* [1, num_prefix + num_patches, D] */
    vnm_vit_block *blocks;       /* [depth] */
    vnm_tensor *norm_w, *norm_b; /* [D] */
    vnm_vit_linear head;         /* [num_classes, D] */
    vnm_vit_linear head_dist;    /* distilled only */
    int n_linears;
    vnm_vit_linear **linears;    /* in timm state-dict order */
    int n_params;
    struct vnm_vit_param *params; /* see vnm_vit_param_at */
    bool checkpoint_blocks;       /* vnm_vit_set_checkpointing */
} vnm_vit;

/* Builds the model and initialises it like timm's default ('' mode). NULL with a message on ctx
 * for a bad config. */
vnm_vit *vnm_vit_new(vnm_ctx *ctx, const vnm_vit_config *cfg);
void vnm_vit_free(vnm_vit *m);
/* Activation checkpointing of every block (vnm_checkpoint): the forward keeps the blocks' inputs
 * only and backward runs each block again; same results, about one more forward of compute. */
void vnm_vit_set_checkpointing(vnm_vit *m, bool on);
/* The training step the SR-STE linears' masks are due for (their mask updates follow it). */
void vnm_vit_set_step(vnm_vit *m, int64_t step);

/* One parameter under its timm name. For a linear's weight, tensor is the trainable tensor (the
 * dense weight, or the sparse vals) and linear points at the layer. */
typedef struct vnm_vit_param {
    char name[VNM_VIT_NAME_MAX + 8];
    vnm_tensor *tensor;
    vnm_vit_linear *linear; /* non-NULL for "<linear>.weight" */
} vnm_vit_param;

int vnm_vit_param_count(const vnm_vit *m);
vnm_vit_param vnm_vit_param_at(const vnm_vit *m, int i); /* timm state-dict order */
int64_t vnm_vit_numel(const vnm_vit *m);                 /* dense parameter count, as timm's */

/* logits[B, num_classes] from images[B, C, H, W] f32. A distilled model returns the mean of its
 * two heads, except while training with dist_logits non-NULL: then the class head's logits are
 * returned and *dist_logits receives head_dist's (timm's distilled_training). */
vnm_tensor *vnm_vit_forward(vnm_ctx *ctx, vnm_vit *m, vnm_tensor *images,
                            vnm_tensor **dist_logits);

/* Loads every parameter by timm name from a safetensors file (or sharded index). Every tensor must
 * be present with its shape; any other key is an error unless it matches one of the fnmatch
 * globs in ignore, except head.* / head_dist.* whose class count differs from the model's: those
 * are skipped and the heads keep their initialisation (DeiT --finetune). Messages name the file
 * and key. Sparse linears cannot be loaded into (prune after loading). */
vnm_status vnm_vit_load(vnm_ctx *ctx, vnm_vit *m, const char *path, const char *const *ignore,
                        int n_ignore, char *err, size_t err_len);
/* Writes every parameter under its timm name and shape, sparse linears decompressed (in the
 * original row and column order: the function the sparse model computes) and SR-STE linears under
 * their current mask, as f32. */
vnm_status vnm_vit_save(vnm_ctx *ctx, const vnm_vit *m, const char *path, char *err,
                        size_t err_len);
/* The same in dtype f32, bf16 or f16 (round to nearest even). */
vnm_status vnm_vit_save_as(vnm_ctx *ctx, const vnm_vit *m, const char *path, vnm_dtype dtype,
                           char *err, size_t err_len);

#endif
