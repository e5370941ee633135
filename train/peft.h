/* train/peft.h — LoRA adapters on a LLaMA model as PEFT knows them (ECOSYSTEM.md §3): attaching
 * adapters to the linears PEFT's target_modules select, and the adapter folder PEFT reads and
 * writes — adapter_config.json + adapter_model.safetensors with keys
 * "base_model.model.<module>.lora_A.weight" [r, in] and "….lora_B.weight" [out, r].
 *
 * Target rule (PEFT's): "all-linear" selects every linear but the output layer (lm_head); a list
 * selects a module whose name equals an entry or ends with "." + entry (so "q_proj" selects every
 * layer's q_proj); a single other string is a regular expression the whole module name must match
 * (POSIX extended syntax, which covers the patterns PEFT configs use in practice).
 *
 * An adapter file describes a dense-mode adapter: after sparse LoRA stages (masks, merges) the
 * trained function is the merged model (vnm_llama_save), and the adapters alone do not carry it. */
#ifndef VNM_PEFT_H
#define VNM_PEFT_H

#include <stdbool.h>
#include <stddef.h>

#include "../autograd/autograd.h"
#include "../sparse/sparse.h"
#include "models/llama.h"

/* Whether module (an HF module name) is selected by targets under the rule above. A bad regular
 * expression selects nothing and is reported by vnm_peft_attach. */
bool vnm_peft_target_matches(const char *module, const char *const *targets, int n_targets);

/* VNM_OK when targets select some linear of m; else VNM_ERR_INPUT naming the rule (or the bad
 * regular expression). */
vnm_status vnm_peft_check_targets(const vnm_llama *m, const char *const *targets, int n_targets,
                                  char *err, size_t err_len);

/* Gives every selected linear without an adapter a new one (A drawn from the ctx RNG, B zero),
 * in the model's linear order. Errors: nothing selected, a bad regular expression, a bad config.
 * *n_attached (may be NULL) receives the count. */
vnm_status vnm_peft_attach(vnm_ctx *ctx, vnm_llama *m, const vnm_lora_config *cfg,
                           const char *const *targets, int n_targets, int *n_attached, char *err,
                           size_t err_len);

/* Writes dir/adapter_config.json (peft_type LORA, task_type CAUSAL_LM, r, lora_alpha,
 * lora_dropout, use_rslora, target_modules as the explicit list of adapted modules, bias none,
 * base_model_name_or_path (NULL: null)) and dir/adapter_model.safetensors (f32, metadata format
 * "pt"). Every adapter must share r, scale and dropout (one config); dir is created if needed. */
vnm_status vnm_peft_save(vnm_ctx *ctx, const vnm_llama *m, const char *dir, double lora_alpha,
                         bool rslora, const char *base_model, char *err, size_t err_len);

/* Reads a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors, f32/bf16/f16),
 * attaches adapters with its config to the modules it targets and loads A and B. Refused with a
 * message naming the file and key: another peft_type, DoRA, rank_pattern / alpha_pattern,
 * bias other than "none", fan_in_fan_out, modules_to_save, layers_to_transform, a missing or
 * misshapen tensor, a key for a module the config does not target, linears that already have
 * adapters. */
vnm_status vnm_peft_load(vnm_ctx *ctx, vnm_llama *m, const char *dir, char *err, size_t err_len);

#endif
