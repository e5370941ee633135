/* tests/llama_fixture.h — what the LLaMA and PEFT tests share: a context + temporary directory
 * fixture, reading the transformers fixtures of tools/gen_llama_fixture.py (config, model, ids,
 * tensors), transformers' shifted labels, logits of a model, and the relative error measure. */
#ifndef VNM_TEST_LLAMA_FIXTURE_H
#define VNM_TEST_LLAMA_FIXTURE_H

#include <stdint.h>

#include "autograd/autograd.h"
#include "train/models/llama.h"
#include "train/safetensors.h"

typedef struct {
    vnm_ctx *ctx;
    char *dir; /* a fresh temporary directory */
} lf_env;

int lf_setup(void **state);
int lf_teardown(void **state);
void lf_fixture_path(const char *rel, char *buf, size_t len);
/* Fixture tensor as f32 (malloc'd); *numel receives its size. */
float *lf_fixture_f32(const vnm_safetensors *st, const char *name, int64_t *numel);
/* max |a − b| / max |b| */
double lf_rel_err(const float *a, const float *b, int64_t n);
/* the config.json of fixture folder `name` */
vnm_llama_config lf_config(const char *name);
/* The fixture model in folder `name` (config.json + weights file `weights`), built with opt. */
vnm_llama *lf_model(vnm_ctx *ctx, const char *name, const char *weights,
                    const vnm_llama_options *opt);
/* ids [B, T] i64 into *B, *T; malloc'd */
int64_t *lf_ids(const vnm_safetensors *st, int64_t *B, int64_t *T);
/* transformers' labels = ids, shifted: targets[b, t] = ids[b, t + 1], the last column -100 */
vnm_tensor *lf_shifted_targets(vnm_ctx *ctx, const int64_t *ids, int64_t B, int64_t T);
float *lf_logits(vnm_ctx *ctx, vnm_llama *m, const int64_t *ids, int64_t B, int64_t T,
                 int64_t pos);

#endif
