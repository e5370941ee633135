/* train/models/llama.h — the LLaMA causal language model, computed exactly as Hugging Face
 * transformers' LlamaForCausalLM (pre-norm decoder layers: RMSNorm in f32, q/k/v projections,
 * rotate-half RoPE, causal attention with grouped KV heads, o_proj, SwiGLU MLP; final RMSNorm and
 * lm_head, optionally tied to the embedding), on the autograd ops. Parameters carry the Hugging
 * Face state-dict names and shapes (ECOSYSTEM.md §3), so a folder with config.json and
 * model.safetensors (or shards + model.safetensors.index.json) moves to and from transformers.
 *
 * Every projection, lm_head included, is a vnm_llama_linear and runs through
 * vnm_llama_linear_forward: the one place that decides how a linear computes.
 *
 * Frozen base (LoRA): the linear weights can be held as non-trainable bf16 (or f16) buffers;
 * vnm_linear converts such a weight to f32 for each product into a buffer it frees right after,
 * so at most one f32 copy of one weight exists at a time. Memory: the persistent arena cannot
 * free, so freezing a model built in f32 (vnm_llama_freeze_base) leaves the f32 copies in it,
 * unreachable but still counted by vnm_ctx_persistent_bytes; building the model frozen
 * (vnm_llama_options.frozen) and loading into it never allocates them.
 */
#ifndef VNM_LLAMA_H
#define VNM_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../autograd/autograd.h"
#include "../../sparse/sparse.h"

#define VNM_LLAMA_NAME_MAX 64
#define VNM_LLAMA_MAX_EOS 8

/* The keys of a transformers LlamaConfig that define the model. Missing optional keys take
 * LlamaConfig's defaults (see vnm_llama_config_load). */
typedef struct {
    int64_t vocab_size, hidden_size, intermediate_size, num_hidden_layers;
    int64_t num_attention_heads;
    int64_t num_key_value_heads; /* vnm_llama_new reads 0 as num_attention_heads */
    int64_t head_dim; /* HF's optional key; vnm_llama_new reads 0 as hidden / heads */
    int64_t max_position_embeddings;
    double rms_norm_eps, rope_theta, initializer_range;
    bool tie_word_embeddings, attention_bias, mlp_bias;
    int64_t bos_token_id; /* -1: null */
    /* -1: null. Its embedding row starts at zero, as transformers' init leaves it; unlike
     * nn.Embedding(padding_idx) its gradient is not masked, which matters only when the
     * embedding trains on inputs containing it. */
    int64_t pad_token_id;
    int n_eos_token_ids; /* 0: null; Llama 3 configs list several */
    int64_t eos_token_ids[VNM_LLAMA_MAX_EOS];
} vnm_llama_config;

/* LlamaConfig's defaults for the optional keys (required ones zero): a base to fill in. */
vnm_llama_config vnm_llama_config_default(void);

/* Reads a transformers config.json. Required: vocab_size, hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads, and model_type "llama" (or, without model_type,
 * architectures listing LlamaForCausalLM). Optional, with LlamaConfig's defaults:
 * num_key_value_heads (= heads; also for null), head_dim (hidden/heads; also for null),
 * hidden_act ("silu", the only one accepted), max_position_embeddings (2048), rms_norm_eps (1e-6),
 * rope_theta (10000; or rope_parameters.rope_theta as transformers 5 writes it),
 * tie_word_embeddings, attention_bias, mlp_bias (false), initializer_range (0.02),
 * attention_dropout (must be 0), bos/eos/pad_token_id (1, 2, null). rope_scaling must be null
 * or absent and rope_parameters.rope_type "default": scaled RoPE variants are refused. Other keys
 * are ignored. Errors name the file, the key and what was expected. */
vnm_status vnm_llama_config_load(const char *path, vnm_llama_config *cfg, char *err,
                                 size_t err_len);
/* Checks a config as vnm_llama_config_load does (positive sizes, divisible and even heads, a pad
 * id inside the vocabulary); head_dim and num_key_value_heads must be set. */
vnm_status vnm_llama_config_check(const vnm_llama_config *cfg, char *err, size_t err_len);
/* Writes a config.json that transformers (4.x and 5.x) loads into the same LlamaForCausalLM;
 * torch_dtype (f32, bf16 or f16) is recorded as the weights' dtype. */
vnm_status vnm_llama_config_save(const vnm_llama_config *cfg, const char *path,
                                 vnm_dtype torch_dtype, char *err, size_t err_len);

/* One projection: y[..., out] = x[..., in] · Wᵀ + b. */
typedef struct {
    char name[VNM_LLAMA_NAME_MAX]; /* HF module name, e.g. "model.layers.0.mlp.gate_proj" */
    int64_t in, out;
    vnm_tensor *weight; /* [out, in]: an f32 parameter, or a frozen f32/bf16/f16 buffer; a tied
                         * lm_head shares model.embed_tokens.weight */
    vnm_tensor *bias;   /* [out] f32, or NULL (attention_bias / mlp_bias off, lm_head) */
    vnm_lora *lora;     /* LoRA adapters (train/peft.h attaches them; the model frees them), or
                         * NULL */
} vnm_llama_linear;

/* Through vnm_linear (a frozen bf16/f16 weight is converted per product); with
 * adapters, plus the adapter branch (dense mode) or as the masked effective weight
 * (W + s·B·A) ⊙ Mk at the kept positions (masked mode), see sparse/sparse.h. */
vnm_tensor *vnm_llama_linear_forward(vnm_ctx *ctx, vnm_llama_linear *l, vnm_tensor *x);

typedef struct {
    vnm_tensor *input_layernorm;          /* [hidden] */
    vnm_llama_linear q_proj, k_proj, v_proj, o_proj;
    vnm_tensor *post_attention_layernorm; /* [hidden] */
    vnm_llama_linear gate_proj, up_proj, down_proj;
    struct vnm_llama *model; /* the layer's model and the forward's position offset, for */
    int64_t pos;             /* activation checkpointing */
} vnm_llama_layer;

/* One entry of the state dict. For a linear's weight, tensor is the linear's current weight. */
typedef struct {
    char name[VNM_LLAMA_NAME_MAX + 8];
    vnm_tensor *tensor;
    vnm_llama_linear *linear; /* the layer of "<linear>.weight" / ".bias"; NULL otherwise */
} vnm_llama_param;

typedef struct vnm_llama {
    vnm_llama_config cfg;
    vnm_tensor *embed_tokens; /* [vocab, hidden] */
    vnm_llama_layer *layers;  /* [num_hidden_layers] */
    vnm_tensor *norm;         /* [hidden] */
    vnm_llama_linear lm_head; /* [vocab, hidden]; its weight is embed_tokens when tied */
    int n_linears;
    vnm_llama_linear **linears; /* per layer q, k, v, o, gate, up, down; then lm_head */
    int n_params;
    vnm_llama_param *params; /* see vnm_llama_param_at */
    bool checkpoint_layers;  /* vnm_llama_set_checkpointing */
} vnm_llama;

typedef struct {
    bool skip_init;       /* no random init (weights zero, norms one): for a model loaded next */
    bool frozen;          /* build the model as vnm_llama_freeze_base(base_dtype, freeze_norms)
                           * leaves it, without ever allocating trainable f32 weights */
    vnm_dtype base_dtype; /* of the frozen linear weights: f32, bf16 or f16 */
    bool freeze_norms;
} vnm_llama_options;

/* Builds the model (opt NULL: trainable f32, initialised) and initialises it like transformers'
 * _init_weights from the context RNG: linear weights and the embedding normal(0,
 * initializer_range) (the pad_token_id row zero), biases zero, RMSNorm weights one. NULL with a
 * message on ctx for a bad config or options. */
vnm_llama *vnm_llama_new(vnm_ctx *ctx, const vnm_llama_config *cfg, const vnm_llama_options *opt);
void vnm_llama_free(vnm_llama *m);
/* Activation checkpointing of every decoder layer (vnm_checkpoint): the forward keeps the layers'
 * inputs only and backward runs each layer again; same results, about one more forward. */
void vnm_llama_set_checkpointing(vnm_llama *m, bool on);

/* Makes the base non-trainable for adapter training: every linear weight (lm_head included unless
 * tied) becomes a persistent buffer of dtype (f32, bf16 or f16; round to nearest even) that does
 * not require grad; biases and the embedding stay f32 and stop requiring grad (the embedding
 * lookup needs an f32 table, and converting the whole table per step would cost more step memory
 * than it saves); the RMSNorm weights stop requiring grad when freeze_norms. The f32 weights this
 * replaces stay in the persistent arena (see the top of this file). Call it before building an
 * optimiser over the parameters. */
vnm_status vnm_llama_freeze_base(vnm_ctx *ctx, vnm_llama *m, vnm_dtype dtype, bool freeze_norms);

int vnm_llama_param_count(const vnm_llama *m);
vnm_llama_param vnm_llama_param_at(const vnm_llama *m, int i); /* HF state-dict order */
int64_t vnm_llama_numel(const vnm_llama *m); /* as transformers' num_parameters() */

/* logits[B, T, vocab] from ids[B, T] (i32 or i64) at positions pos_offset + t. Without a KV cache
 * the T tokens attend only to each other (causally); pos_offset only shifts their RoPE angles.
 * Plain RoPE has no position table, so positions past max_position_embeddings are computed as
 * transformers computes them (no error). */
vnm_tensor *vnm_llama_forward(vnm_ctx *ctx, vnm_llama *m, vnm_tensor *ids, int64_t pos_offset);

/* Causal-LM loss on packed data: the mean cross-entropy of logits[B, T, V] against targets[B, T]
 * (i32 or i64; already shifted: targets[b, t] is the token after ids[b, t]) over every position
 * whose target is not -100. transformers' loss with labels = ids is this with targets = ids
 * shifted left by one and -100 in the last column. */
vnm_tensor *vnm_llama_loss(vnm_ctx *ctx, vnm_tensor *logits, vnm_tensor *targets);

/* Loads every parameter by HF name from a safetensors file or a sharded "*.index.json" set, from
 * f32, bf16 or f16 data (converted exactly to f32; into a frozen bf16/f16 weight the data is
 * copied as it is when the dtypes agree, else rounded to nearest even). Every parameter must be
 * present with its shape. Any other key is an error, except
 * model.layers.*.self_attn.rotary_emb.inv_freq (older checkpoints carry the RoPE frequencies,
 * which are computed here) and, for a tied model, an lm_head.weight that holds the same values as
 * model.embed_tokens.weight (some exporters write the tied matrix twice); a tied model whose
 * lm_head.weight differs is refused, as loading it would silently drop one of the two. Nothing
 * changes unless the whole file checks out. Messages name the file and key. */
vnm_status vnm_llama_load(vnm_ctx *ctx, vnm_llama *m, const char *path, char *err,
                          size_t err_len);

/* Writes every parameter under its HF name in dtype; a linear with adapters is written merged, as
 * the weight it computes with ((W + s·B·A) ⊙ Mk, PEFT's merge_and_unload of a dense adapter),
 * so the file is the function the model computes (f32, bf16 or f16; round to nearest even),
 * with metadata format "pt" as transformers expects. max_shard_bytes 0 writes the single file
 * path; otherwise path must be "<dir>/model.safetensors.index.json" and the tensors, in state-dict
 * order, go to shards of at most max_shard_bytes of data next to it. A tied model writes no
 * lm_head.weight, as save_pretrained. With vnm_llama_config_save into the same folder
 * ("config.json") the folder is a transformers model directory. */
vnm_status vnm_llama_save(vnm_ctx *ctx, const vnm_llama *m, const char *path, vnm_dtype dtype,
                          uint64_t max_shard_bytes, char *err, size_t err_len);

#endif
