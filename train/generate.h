/* train/generate.h — text generation with a LLaMA model (train/generate.c): greedy or top-k
 * sampled decoding as a library call, and the `vnm generate` command on top of it.
 *
 * There is no KV cache: every new token recomputes the forward over the whole context, so step t
 * costs a forward over t tokens and n new tokens cost O(n²) token passes. That is fine for demos
 * and small models, not for serving.
 *
 * Sampling is reproducible everywhere: the draw of step s (the s-th new token, from 0) is
 * Philox4x32-10 keyed by the seed with counter s, and the softmax over the k largest logits is
 * summed in double in a fixed order, so the same logits give the same tokens on every machine
 * and thread count. */
#ifndef VNM_GENERATE_H
#define VNM_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../autograd/autograd.h"
#include "models/llama.h"

typedef struct {
    int64_t max_new;    /* at most this many new tokens */
    int64_t top_k;      /* 0: greedy (argmax, the first maximum on ties); k: sample from the
                         * softmax of logits / temperature over the k largest logits */
    double temperature; /* > 0; used by top-k sampling only */
    uint64_t seed;      /* Philox key of the top-k draws */
    int n_stop;         /* generation ends after any of stop_ids (kept in the output); 0: never */
    int64_t stop_ids[VNM_LLAMA_MAX_EOS];
    /* Called with each new token as soon as it is chosen (may be NULL): for streaming output. */
    void (*on_token)(void *user, int32_t id);
    void *user;
} vnm_generate_opts;

/* max_new 64, greedy, temperature 1, seed 0, no stop ids, no callback. */
vnm_generate_opts vnm_generate_opts_default(void);

/* Whether a generation of opt from prompt[n_prompt] fits a model of config cfg: a non-empty
 * prompt of ids inside the vocabulary, max_new ≥ 0, prompt + max_new within
 * max_position_embeddings, 0 ≤ top_k ≤ vocab_size, temperature > 0. VNM_ERR_INPUT with a message
 * naming the option otherwise. vnm_generate checks this itself; callers that load weights can
 * check first, before paying for the load. */
vnm_status vnm_generate_check(const vnm_llama_config *cfg, const int32_t *prompt,
                              int64_t n_prompt, const vnm_generate_opts *opt, char *err,
                              size_t err_len);

/* Continues prompt[n_prompt] with up to opt->max_new tokens into out[opt->max_new]; *n_out
 * receives how many were written (also after a failure: the tokens chosen before it). Runs with
 * gradients and training mode off (both restored afterwards) and resets the context's step arena
 * before every step and at the end, so step-arena tensors of the caller do not survive it. A
 * non-finite logit is a runtime error (a broken model, not a token). */
vnm_status vnm_generate(vnm_ctx *ctx, vnm_llama *m, const int32_t *prompt, int64_t n_prompt,
                        const vnm_generate_opts *opt, int32_t *out, int64_t *n_out, char *err,
                        size_t err_len);

/* `vnm generate MODEL_DIR [options]` (see its --help); returns the exit code. */
int vnm_cmd_generate(int argc, char **argv);

#endif
