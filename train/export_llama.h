/* train/export_llama.h — `vnm export` of a LLaMA run as a transformers model folder (see
 * export_llama.c for the files). */
#ifndef VNM_EXPORT_LLAMA_H
#define VNM_EXPORT_LLAMA_H

#include <stdbool.h>

#include "../autograd/autograd.h"
#include "models/llama.h"

/* Writes the folder `out` (created if needed) in dtype (f32, bf16, f16); sample > 0 adds the
 * sample file with sequences of that length. *with_adapter tells whether base/ and adapter/ were
 * written. Returns the exit code (messages on stderr). */
int vnm_export_llama(vnm_ctx *ctx, vnm_llama *m, const char *out, vnm_dtype dtype, int sample,
                     bool *with_adapter);

#endif
