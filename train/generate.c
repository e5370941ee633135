/* train/generate.c — decoding with a LLaMA model (greedy or top-k sampling, see generate.h) and
 * `vnm generate`: a transformers model folder (plus an optional PEFT adapter) continuing a byte-
 * tokenizer text prompt or a list of token ids. */
#include "generate.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../data/data.h"
#include "bench.h"
#include "cli.h"
#include "peft.h"

vnm_generate_opts vnm_generate_opts_default(void)
{
    return (vnm_generate_opts){.max_new = 64, .temperature = 1.0};
}

vnm_status vnm_generate_check(const vnm_llama_config *cfg, const int32_t *prompt,
                              int64_t n_prompt, const vnm_generate_opts *opt, char *err,
                              size_t err_len)
{
    if (opt->top_k < 0 || opt->top_k > cfg->vocab_size)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "top-k %lld is outside [0, %lld] (0: greedy; at most the vocabulary "
                          "size)", (long long)opt->top_k, (long long)cfg->vocab_size);
    if (!(opt->temperature > 0) || !isfinite(opt->temperature))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "temperature %g must be a finite number > 0", opt->temperature);
    if (n_prompt < 1)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "empty prompt: generation needs at least one token to continue");
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= cfg->vocab_size)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                              "prompt token %lld (id %d) is outside the vocabulary [0, %lld)",
                              (long long)i, prompt[i], (long long)cfg->vocab_size);
    if (opt->max_new < 0)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "max-new %lld is negative",
                          (long long)opt->max_new);
    if (opt->max_new > cfg->max_position_embeddings - n_prompt)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "prompt (%lld tokens) + max-new (%lld) exceeds the model's "
                          "max_position_embeddings (%lld)",
                          (long long)n_prompt, (long long)opt->max_new,
                          (long long)cfg->max_position_embeddings);
    return VNM_OK;
}

typedef struct {
    float logit;
    int32_t id;
} scored_id;

/* Largest logit first; equal logits in id order, so the first entry is greedy's argmax. */
static int by_logit_desc(const void *pa, const void *pb)
{
    const scored_id *a = pa, *b = pb;
    if (a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* The next token from logits[V] (all finite): the first maximum when greedy, else a draw from the
 * softmax of logit / temperature over the top_k largest, by inverse CDF with Philox
 * (seed, step). scratch[V] is working space. */
static int32_t pick_token(const float *logits, int64_t V, const vnm_generate_opts *opt,
                          int64_t step, scored_id *scratch)
{
    if (opt->top_k == 0) {
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        return (int32_t)best;
    }
    for (int64_t v = 0; v < V; v++) scratch[v] = (scored_id){logits[v], (int32_t)v};
    qsort(scratch, (size_t)V, sizeof *scratch, by_logit_desc);
    uint32_t bits[4];
    vnm_philox4x32(opt->seed, (uint64_t)step, 0, bits);
    /* weights relative to the largest logit, so exp never overflows */
    double total = 0;
    for (int64_t i = 0; i < opt->top_k; i++)
        total += exp(((double)scratch[i].logit - scratch[0].logit) / opt->temperature);
    double target = vnm_philox_uniform(bits[0]) * total, cum = 0;
    for (int64_t i = 0; i < opt->top_k; i++) {
        cum += exp(((double)scratch[i].logit - scratch[0].logit) / opt->temperature);
        if (target < cum) return scratch[i].id;
    }
    return scratch[opt->top_k - 1].id; /* rounding left target at the very end of the CDF */
}

static bool is_stop(const vnm_generate_opts *opt, int32_t id)
{
    for (int i = 0; i < opt->n_stop; i++)
        if (opt->stop_ids[i] == id) return true;
    return false;
}

/* The logits of the last position of ctx_ids[T] into logits[V]. */
static vnm_status last_logits(vnm_ctx *ctx, vnm_llama *m, const int32_t *ctx_ids, int64_t T,
                              float *logits, char *err, size_t err_len)
{
    vnm_ctx_reset_step(ctx);
    vnm_tensor *ids = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(1, T), ctx_ids);
    vnm_tensor *all = vnm_llama_forward(ctx, m, ids, 0);    /* [1, T, V] */
    vnm_tensor *last = vnm_slice(ctx, all, 1, T - 1, T);    /* [1, 1, V] */
    if (!last || vnm_tensor_to_host(ctx, last, logits) != VNM_OK) {
        vnm_status st = vnm_ctx_status(ctx);
        vnm_errbuf(err, err_len, st ? st : VNM_ERR_RUNTIME, "forward over %lld tokens: %s",
                   (long long)T, vnm_ctx_error(ctx));
        vnm_ctx_clear_error(ctx);
        return st ? st : VNM_ERR_RUNTIME;
    }
    return VNM_OK;
}

vnm_status vnm_generate(vnm_ctx *ctx, vnm_llama *m, const int32_t *prompt, int64_t n_prompt,
                        const vnm_generate_opts *opt, int32_t *out, int64_t *n_out, char *err,
                        size_t err_len)
{
    *n_out = 0;
    vnm_status st = vnm_generate_check(&m->cfg, prompt, n_prompt, opt, err, err_len);
    if (st) return st;
    const int64_t V = m->cfg.vocab_size;
    int32_t *ctx_ids = malloc((size_t)(n_prompt + opt->max_new) * sizeof *ctx_ids);
    float *logits = malloc((size_t)V * sizeof *logits);
    scored_id *scratch = opt->top_k ? malloc((size_t)V * sizeof *scratch) : NULL;
    if (!ctx_ids || !logits || (opt->top_k && !scratch)) {
        free(ctx_ids), free(logits), free(scratch);
        return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "out of memory for %lld tokens",
                          (long long)(n_prompt + opt->max_new));
    }
    memcpy(ctx_ids, prompt, (size_t)n_prompt * sizeof *ctx_ids);
    bool grad = vnm_ctx_set_grad_enabled(ctx, false), training = vnm_ctx_training(ctx);
    vnm_ctx_set_training(ctx, false);
    for (int64_t s = 0; s < opt->max_new && !st; s++) {
        st = last_logits(ctx, m, ctx_ids, n_prompt + s, logits, err, err_len);
        for (int64_t v = 0; v < V && !st; v++)
            if (!isfinite(logits[v]))
                st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME,
                                "the logit of id %lld is %g after %lld tokens: the model "
                                "computes non-finite values", (long long)v, logits[v],
                                (long long)(n_prompt + s));
        if (st) break;
        int32_t id = pick_token(logits, V, opt, s, scratch);
        ctx_ids[n_prompt + s] = out[s] = id;
        *n_out = s + 1;
        if (opt->on_token) opt->on_token(opt->user, id);
        if (is_stop(opt, id)) break;
    }
    vnm_ctx_reset_step(ctx);
    vnm_ctx_set_training(ctx, training);
    vnm_ctx_set_grad_enabled(ctx, grad);
    free(ctx_ids), free(logits), free(scratch);
    return st;
}

/* ---- vnm generate ---- */

static const char generate_usage[] =
    "usage: vnm generate MODEL_DIR [--adapter DIR] [--prompt TEXT | --prompt-ids 1,2,3]\n"
    "                    [--tokenizer byte|ids] [--max-new N] [--top-k K] [--temperature T]\n"
    "                    [--seed S] [--stop-at-eos | --no-stop-at-eos] [--threads N]\n"
    "\n"
    "Continues a prompt with a LLaMA model on the CPU. MODEL_DIR is a transformers model folder:\n"
    "config.json and model.safetensors (or the shards of model.safetensors.index.json).\n"
    "\n"
    "  --adapter DIR       a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)\n"
    "                      applied on top of the model\n"
    "  --tokenizer byte    the byte tokenizer of `vnm tokenize` (ids 0..255 bytes, 256 BOS,\n"
    "                      257 EOS): --prompt is encoded after a BOS, the continuation is\n"
    "                      printed as text. Default when vocab_size is 258 and no --prompt-ids\n"
    "                      is given; needs vocab_size >= 258\n"
    "  --tokenizer ids     token ids in and out: --prompt-ids is the prompt, the continuation is\n"
    "                      printed as {\"ids\":[...]}. The default otherwise\n"
    "  --prompt TEXT       the prompt text (byte tokenizer; without it the prompt is BOS alone)\n"
    "  --prompt-ids LIST   the prompt as comma-separated token ids, used as given\n"
    "  --max-new N         at most N new tokens (default 64); prompt + N must fit the model's\n"
    "                      max_position_embeddings\n"
    "  --top-k K           0: greedy, the most likely token (default); K: sample from the K most\n"
    "                      likely. Draws depend on the seed and the step only (Philox): the\n"
    "                      same logits give the same tokens on any machine or thread count\n"
    "  --temperature T     divides the logits before top-k sampling (> 0, default 1)\n"
    "  --seed S            seed of top-k sampling (default 0)\n"
    "  --stop-at-eos       stop after an EOS token (default): 257 with the byte tokenizer,\n"
    "                      the config's eos_token_id otherwise\n"
    "  --no-stop-at-eos    always generate --max-new tokens\n"
    "  --threads N         OpenMP/OpenBLAS threads (default: all cores)\n"
    "\n"
    "Without a KV cache every step recomputes the whole context (O(n^2) in the tokens): meant\n"
    "for demos and small models. Prints the continuation (then a newline) on stdout and one JSON\n"
    "line on stderr: {\"prompt_tokens\":..,\"new_tokens\":..,\"stopped_at_eos\":..,\n"
    "\"seconds\":..,\"tok_per_s\":..}.\n"
    "\n"
    "exit codes: 0 ok, 1 runtime failure, 2 bad input\n";

typedef struct {
    const char *model_dir, *adapter, *prompt, *prompt_ids, *tokenizer;
    int max_new, top_k, seed, threads;
    double temperature;
    bool stop_at_eos;
} generate_args;

/* Returns 0, an exit code, or -1 after --help. */
static int parse_args(int argc, char **argv, generate_args *a)
{
    *a = (generate_args){.max_new = 64, .temperature = 1.0, .stop_at_eos = true};
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        const char **text = !strcmp(f, "--adapter")      ? &a->adapter
                            : !strcmp(f, "--prompt")     ? &a->prompt
                            : !strcmp(f, "--prompt-ids") ? &a->prompt_ids
                            : !strcmp(f, "--tokenizer")  ? &a->tokenizer
                                                         : NULL;
        int rc = 0;
        if (text) {
            if (i + 1 >= argc) return vnm_cli_missing("generate", f);
            *text = argv[++i];
        } else if (!strcmp(f, "--max-new")) {
            rc = vnm_cli_int("generate", f, i + 1 < argc ? argv[++i] : NULL, 0, INT_MAX,
                             &a->max_new);
        } else if (!strcmp(f, "--top-k")) {
            rc = vnm_cli_int("generate", f, i + 1 < argc ? argv[++i] : NULL, 0, INT_MAX,
                             &a->top_k);
        } else if (!strcmp(f, "--seed")) {
            rc = vnm_cli_int("generate", f, i + 1 < argc ? argv[++i] : NULL, 0, INT_MAX,
                             &a->seed);
        } else if (!strcmp(f, "--threads")) {
            rc = vnm_cli_int("generate", f, i + 1 < argc ? argv[++i] : NULL, 1, 1024,
                             &a->threads);
        } else if (!strcmp(f, "--temperature")) {
            rc = vnm_cli_double("generate", f, i + 1 < argc ? argv[++i] : NULL, 0, 1e6,
                                &a->temperature);
            if (!rc && a->temperature == 0) {
                fprintf(stderr, "vnm generate: --temperature needs a number > 0, got '%s'\n",
                        argv[i]);
                rc = 2;
            }
        } else if (!strcmp(f, "--stop-at-eos") || !strcmp(f, "--no-stop-at-eos")) {
            a->stop_at_eos = !strcmp(f, "--stop-at-eos");
        } else if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(generate_usage, stdout);
            return -1;
        } else if (f[0] == '-') {
            fprintf(stderr, "vnm generate: unknown option '%s'\n\n%s", f, generate_usage);
            return 2;
        } else if (a->model_dir) {
            fprintf(stderr, "vnm generate: one MODEL_DIR expected, got '%s' and '%s'\n",
                    a->model_dir, f);
            return 2;
        } else {
            a->model_dir = f;
        }
        if (rc) return rc;
    }
    if (!a->model_dir) {
        fprintf(stderr, "vnm generate: no MODEL_DIR given\n\n%s", generate_usage);
        return 2;
    }
    if (a->prompt && a->prompt_ids) {
        fprintf(stderr, "vnm generate: --prompt and --prompt-ids exclude each other\n");
        return 2;
    }
    if (a->tokenizer && strcmp(a->tokenizer, "byte") && strcmp(a->tokenizer, "ids")) {
        fprintf(stderr, "vnm generate: --tokenizer needs byte or ids, got '%s'\n", a->tokenizer);
        return 2;
    }
    return 0;
}

/* The model folder's config path and weights path (model.safetensors, else the shard index). */
static int find_model_files(const char *dir, char *config, char *weights, size_t len)
{
    struct stat sb;
    int missing = stat(dir, &sb) != 0 ? errno : 0;
    if (missing || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "vnm generate: MODEL_DIR '%s': %s\n", dir,
                missing ? strerror(missing) : "not a directory");
        return 2;
    }
    snprintf(config, len, "%s/config.json", dir);
    if (stat(config, &sb) != 0) {
        fprintf(stderr, "vnm generate: '%s' is missing: MODEL_DIR must be a transformers model "
                        "folder\n", config);
        return 2;
    }
    snprintf(weights, len, "%s/model.safetensors", dir);
    if (stat(weights, &sb) == 0) return 0;
    snprintf(weights, len, "%s/model.safetensors.index.json", dir);
    if (stat(weights, &sb) == 0) return 0;
    fprintf(stderr, "vnm generate: '%s' holds neither model.safetensors nor "
                    "model.safetensors.index.json\n", dir);
    return 2;
}

/* "1,2,3" into ids[] (malloc'd, *n entries). */
static int parse_id_list(const char *list, int32_t **ids, int64_t *n)
{
    *ids = malloc((strlen(list) / 2 + 1) * sizeof **ids); /* every id takes a digit and a comma */
    if (!*ids) {
        fprintf(stderr, "vnm generate: out of memory for --prompt-ids\n");
        return 1;
    }
    *n = 0;
    const char *p = list;
    for (;;) {
        char *end;
        errno = 0;
        long v = *p >= '0' && *p <= '9' ? strtol(p, &end, 10) : -1;
        if (v < 0 || v > INT32_MAX || errno || (*end && *end != ',')) {
            fprintf(stderr, "vnm generate: --prompt-ids needs comma-separated token ids "
                            "(e.g. 1,2,3), got '%s'\n", list);
            return 2;
        }
        (*ids)[(*n)++] = (int32_t)v;
        if (!*end) return 0;
        p = end + 1;
    }
}

/* The prompt's ids: the listed ones, or BOS + the bytes of --prompt (byte tokenizer). */
static int build_prompt(const generate_args *a, int32_t **ids, int64_t *n)
{
    if (a->prompt_ids) return parse_id_list(a->prompt_ids, ids, n);
    size_t len = a->prompt ? strlen(a->prompt) : 0;
    uint32_t *enc = malloc((len + 1) * sizeof *enc);
    *ids = malloc((len + 1) * sizeof **ids);
    if (!enc || !*ids) {
        free(enc);
        fprintf(stderr, "vnm generate: out of memory for --prompt\n");
        return 1;
    }
    enc[0] = VNM_BYTE_BOS;
    *n = 1 + (int64_t)vnm_byte_encode(a->prompt, len, false, enc + 1);
    for (int64_t i = 0; i < *n; i++) (*ids)[i] = (int32_t)enc[i];
    free(enc);
    return 0;
}

static void write_byte_token(void *user, int32_t id)
{
    (void)user;
    char text[8];
    size_t len = vnm_byte_decode(&id, 1, false, text, sizeof text);
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

/* Settles the tokenizer from the arguments and the config, and whether the prompt options suit
 * it; returns an exit code. */
static int choose_tokenizer(const generate_args *a, const vnm_llama_config *cfg, bool *byte)
{
    *byte = a->tokenizer ? !strcmp(a->tokenizer, "byte")
                         : !a->prompt_ids && cfg->vocab_size == VNM_BYTE_VOCAB;
    if (*byte && cfg->vocab_size < VNM_BYTE_VOCAB) {
        fprintf(stderr, "vnm generate: --tokenizer byte needs vocab_size >= %d, the model's is "
                        "%lld\n", VNM_BYTE_VOCAB, (long long)cfg->vocab_size);
        return 2;
    }
    if (!*byte && a->prompt) {
        fprintf(stderr, "vnm generate: --prompt needs the byte tokenizer (vocab_size %d or "
                        "--tokenizer byte); give token ids with --prompt-ids\n", VNM_BYTE_VOCAB);
        return 2;
    }
    if (!*byte && !a->prompt_ids) {
        fprintf(stderr, "vnm generate: the ids tokenizer needs --prompt-ids (vocab_size %lld is "
                        "not the byte tokenizer's %d)\n", (long long)cfg->vocab_size,
                VNM_BYTE_VOCAB);
        return 2;
    }
    return 0;
}

static int report(vnm_status st, const char *err)
{
    fprintf(stderr, "vnm generate: %s\n", err);
    return st == VNM_ERR_INPUT ? 2 : 1;
}

static void print_ids(const int32_t *ids, int64_t n)
{
    printf("{\"ids\":[");
    for (int64_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    printf("]}\n");
}

static int run(const generate_args *a)
{
    char config[4096], weights[4096], err[1024];
    int rc = find_model_files(a->model_dir, config, weights, sizeof config);
    if (rc) return rc;
    vnm_llama_config cfg;
    vnm_status st = vnm_llama_config_load(config, &cfg, err, sizeof err);
    if (st) return report(st, err);
    bool byte;
    if ((rc = choose_tokenizer(a, &cfg, &byte))) return rc;
    int32_t *prompt = NULL, *out = NULL;
    int64_t n_prompt = 0, n_out = 0;
    if ((rc = build_prompt(a, &prompt, &n_prompt))) {
        free(prompt);
        return rc;
    }
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = a->max_new;
    opt.top_k = a->top_k;
    opt.temperature = a->temperature;
    opt.seed = (uint64_t)a->seed;
    if (a->stop_at_eos && byte) opt.stop_ids[opt.n_stop++] = VNM_BYTE_EOS;
    for (int i = 0; a->stop_at_eos && !byte && i < cfg.n_eos_token_ids; i++)
        opt.stop_ids[opt.n_stop++] = cfg.eos_token_ids[i];
    if (byte) opt.on_token = write_byte_token;
    /* flags against the config before the weights are read: a typo costs no load */
    if ((st = vnm_generate_check(&cfg, prompt, n_prompt, &opt, err, sizeof err))) {
        free(prompt);
        return report(st, err);
    }
    vnm_ctx *ctx = vnm_ctx_create(&(vnm_ctx_config){VNM_DEVICE_CPU, 0, a->threads});
    vnm_llama *m = ctx ? vnm_llama_new(ctx, &cfg, &(vnm_llama_options){.skip_init = true})
                       : NULL;
    out = malloc(((size_t)a->max_new + 1) * sizeof *out);
    if (!ctx || !m || !out) {
        st = vnm_errbuf(err, sizeof err, VNM_ERR_RUNTIME, "cannot build the model: %s",
                        ctx ? vnm_ctx_error(ctx) : "no CPU context");
    } else if (!(st = vnm_llama_load(ctx, m, weights, err, sizeof err)) && a->adapter) {
        st = vnm_peft_load(ctx, m, a->adapter, err, sizeof err);
    }
    double t0 = vnm_bench_now(), seconds = 0;
    if (!st) {
        st = vnm_generate(ctx, m, prompt, n_prompt, &opt, out, &n_out, err, sizeof err);
        seconds = vnm_bench_now() - t0;
    }
    if (st) {
        if (byte && n_out) putchar('\n'); /* end the streamed text before the message */
        rc = report(st, err);
    } else {
        if (byte) putchar('\n');
        else print_ids(out, n_out);
        fflush(stdout);
        fprintf(stderr, "{\"prompt_tokens\":%lld,\"new_tokens\":%lld,\"stopped_at_eos\":%s,"
                        "\"seconds\":%.3f,\"tok_per_s\":%.2f}\n",
                (long long)n_prompt, (long long)n_out,
                n_out && is_stop(&opt, out[n_out - 1]) ? "true" : "false", seconds,
                seconds > 0 ? (double)n_out / seconds : 0.0);
    }
    vnm_llama_free(m);
    vnm_ctx_destroy(ctx);
    free(prompt), free(out);
    return rc;
}

int vnm_cmd_generate(int argc, char **argv)
{
    generate_args a;
    int rc = parse_args(argc, argv, &a);
    if (!rc) rc = run(&a);
    return rc < 0 ? 0 : rc;
}
