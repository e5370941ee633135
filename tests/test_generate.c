/* tests/test_generate.c — decoding (train/generate.h) and `vnm generate`: greedy against an
 * argmax loop over vnm_llama_forward, top-k sampling (reproducible for a seed and thread count,
 * different for another seed, inside the k largest logits, top-k 1 = greedy), stopping at EOS,
 * non-finite logits as runtime errors, and the command end to end on model folders written with
 * vnm_llama_save + vnm_llama_config_save (byte and ids tokenizers, shards, a PEFT adapter, bad
 * input). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data.h"
#include "llama_fixture.h"
#include "test_util.h"
#include "train/generate.h"
#include "train/peft.h"

static vnm_llama *tiny(vnm_ctx *ctx)
{
    return lf_model(ctx, "llama_tiny", "model.safetensors", NULL);
}

static const int32_t tiny_prompt[] = {1, 17, 5, 40, 9};
#define TINY_PROMPT_LEN 5

/* vnm_generate into a malloc'd array of opt->max_new ids; *n receives the count. */
static int32_t *generate(vnm_ctx *ctx, vnm_llama *m, const int32_t *prompt, int64_t n_prompt,
                         const vnm_generate_opts *opt, int64_t *n)
{
    char err[512];
    int32_t *out = malloc((size_t)(opt->max_new + 1) * sizeof *out);
    if (vnm_generate(ctx, m, prompt, n_prompt, opt, out, n, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    return out;
}

/* The logits of the last position of ids[T], straight from vnm_llama_forward. */
static float *last_logits(vnm_ctx *ctx, vnm_llama *m, const int32_t *ids, int64_t T)
{
    int64_t *ids64 = malloc((size_t)T * sizeof *ids64);
    for (int64_t t = 0; t < T; t++) ids64[t] = ids[t];
    float *all = lf_logits(ctx, m, ids64, 1, T, 0), *last = malloc((size_t)m->cfg.vocab_size * 4);
    memcpy(last, all + (T - 1) * m->cfg.vocab_size, (size_t)m->cfg.vocab_size * sizeof *last);
    free(all), free(ids64);
    return last;
}

static void test_greedy_is_the_argmax_loop(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = tiny(f->ctx);
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 24;
    int64_t n;
    int32_t *got = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n);
    assert_int_equal(n, 24);
    int32_t ids[TINY_PROMPT_LEN + 24];
    memcpy(ids, tiny_prompt, sizeof tiny_prompt);
    for (int64_t s = 0; s < 24; s++) {
        float *l = last_logits(f->ctx, m, ids, TINY_PROMPT_LEN + s);
        int32_t best = 0;
        for (int32_t v = 1; v < 64; v++)
            if (l[v] > l[best]) best = v;
        if (got[s] != best) fail_msg("step %lld: generated %d, argmax %d", (long long)s, got[s],
                                     best);
        ids[TINY_PROMPT_LEN + s] = best;
        free(l);
    }
    free(got);
    vnm_llama_free(m);
}

static void test_top_k_sampling(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = tiny(f->ctx);
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 32;
    opt.top_k = 3;
    opt.temperature = 2.0;
    opt.seed = 7;
    int64_t n1, n2, n3;
    int32_t *a = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n1);
    int32_t *b = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n2);
    assert_int_equal(n1, 32);
    assert_int_equal(n2, 32);
    assert_memory_equal(a, b, 32 * sizeof *a);
    opt.seed = 8;
    int32_t *c = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n3);
    assert_int_equal(n3, 32);
    assert_true(memcmp(a, c, 32 * sizeof *a) != 0);

    /* each draw is the documented one, recomputed here from the forward's logits: the k largest
     * (ties in id order), softmax of logit / T in double, inverse CDF at Philox(seed, step) */
    int32_t ids[TINY_PROMPT_LEN + 32];
    memcpy(ids, tiny_prompt, sizeof tiny_prompt);
    memcpy(ids + TINY_PROMPT_LEN, a, 32 * sizeof *a);
    int not_argmax = 0;
    for (int64_t s = 0; s < 32; s++) {
        float *l = last_logits(f->ctx, m, ids, TINY_PROMPT_LEN + s);
        int32_t top[3];
        for (int r = 0; r < 3; r++) {
            top[r] = -1;
            for (int32_t v = 0; v < 64; v++) {
                bool taken = false;
                for (int q = 0; q < r; q++) taken |= top[q] == v;
                if (!taken && (top[r] < 0 || l[v] > l[top[r]])) top[r] = v;
            }
        }
        double w[3], total = 0;
        for (int r = 0; r < 3; r++) total += w[r] = exp(((double)l[top[r]] - l[top[0]]) / 2.0);
        uint32_t bits[4];
        vnm_philox4x32(7, (uint64_t)s, 0, bits);
        double u = vnm_philox_uniform(bits[0]) * total, cum = 0;
        int r = 0;
        while (r < 2 && u >= (cum += w[r])) r++;
        if (a[s] != top[r]) fail_msg("step %lld: sampled %d, expected %d", (long long)s, a[s],
                                     top[r]);
        not_argmax += r > 0;
        free(l);
    }
    assert_true(not_argmax > 0);

    /* the same tokens from a context with one thread */
    vnm_ctx *one = vnm_ctx_create(&(vnm_ctx_config){VNM_DEVICE_CPU, 99, 1});
    vnm_llama *m1 = tiny(one);
    opt.seed = 7;
    int32_t *d = generate(one, m1, tiny_prompt, TINY_PROMPT_LEN, &opt, &n1);
    assert_memory_equal(a, d, 32 * sizeof *a);
    vnm_llama_free(m1);
    vnm_ctx_destroy(one);
    free(a), free(b), free(c), free(d);
    vnm_llama_free(m);
}

static void test_top_1_is_greedy(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = tiny(f->ctx);
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 20;
    int64_t n1, n2;
    int32_t *greedy = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n1);
    opt.top_k = 1;
    opt.temperature = 0.3;
    opt.seed = 12345;
    int32_t *top1 = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n2);
    assert_int_equal(n1, 20);
    assert_int_equal(n2, 20);
    assert_memory_equal(greedy, top1, 20 * sizeof *greedy);
    free(greedy), free(top1);
    vnm_llama_free(m);
}

/* lm_head zero: every logit ties at 0. Greedy takes the first maximum, id 0; top-k takes the k
 * first ids, so top-2 draws only 0 and 1, both. */
static void test_ties_go_to_the_lowest_id(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = tiny(f->ctx);
    assert_int_equal(vnm_tensor_fill(f->ctx, m->lm_head.weight, 0), VNM_OK);
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 16;
    int64_t n;
    int32_t *greedy = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n);
    for (int64_t s = 0; s < n; s++) assert_int_equal(greedy[s], 0);
    opt.top_k = 2;
    int32_t *top2 = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n);
    int seen[2] = {0, 0};
    for (int64_t s = 0; s < n; s++) {
        assert_in_range(top2[s], 0, 1);
        seen[top2[s]]++;
    }
    assert_true(seen[0] > 0 && seen[1] > 0);
    free(greedy), free(top2);
    vnm_llama_free(m);
}

/* Stop ids taken from an unstopped run: the stopped run is its prefix up to the first stop id,
 * which is kept. */
static void test_stop_ids(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = tiny(f->ctx);
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 30;
    int64_t n, n_stop;
    int32_t *full = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n);
    opt.stop_ids[opt.n_stop++] = 63; /* an id greedy never picks on this prompt */
    for (int64_t s = 0; s < n; s++) assert_int_not_equal(full[s], 63);
    opt.stop_ids[opt.n_stop++] = full[5];
    int64_t want = 0;
    while (full[want] != full[5]) want++;
    want++;
    int32_t *stopped = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n_stop);
    assert_int_equal(n_stop, want);
    assert_memory_equal(stopped, full, (size_t)want * sizeof *full);
    free(full), free(stopped);
    vnm_llama_free(m);
}

static void test_checks(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = tiny(f->ctx);
    char err[512];
    int32_t out[64];
    int64_t n;
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 60; /* 5 + 60 > max_position_embeddings 64 */
    assert_int_equal(vnm_generate(f->ctx, m, tiny_prompt, 5, &opt, out, &n, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "max_position_embeddings (64)");
    opt.max_new = 59;
    assert_int_equal(vnm_generate(f->ctx, m, tiny_prompt, 5, &opt, out, &n, err, sizeof err),
                     VNM_OK);
    assert_int_equal(n, 59);
    opt.max_new = 4;
    opt.top_k = 65;
    assert_int_equal(vnm_generate(f->ctx, m, tiny_prompt, 5, &opt, out, &n, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "top-k 65");
    opt.top_k = 64;
    opt.temperature = 0;
    assert_int_equal(vnm_generate(f->ctx, m, tiny_prompt, 5, &opt, out, &n, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "temperature");
    opt.temperature = 1;
    const int32_t bad[] = {1, 64};
    assert_int_equal(vnm_generate(f->ctx, m, bad, 2, &opt, out, &n, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "prompt token 1 (id 64) is outside the vocabulary [0, 64)");
    assert_int_equal(vnm_generate(f->ctx, m, bad, 0, &opt, out, &n, err, sizeof err),
                     VNM_ERR_INPUT);
    tu_assert_has(err, "empty prompt");
    vnm_llama_free(m);
}

/* ---- the command ---- */

typedef struct {
    int rc;
    char *out, *err; /* NUL-terminated; out_len counts bytes, NULs included */
    size_t out_len;
} captured;

static char *slurp(FILE *f, size_t *len)
{
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return s;
}

/* Runs `vnm generate args...` with stdout and stderr captured. */
static captured run(int argc, const char *const *args)
{
    FILE *out = tmpfile(), *err = tmpfile();
    assert_true(out && err);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fileno(out), 1);
    dup2(fileno(err), 2);
    captured c;
    c.rc = vnm_cmd_generate(argc, (char **)args);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    c.out = slurp(out, &c.out_len);
    c.err = slurp(err, NULL);
    return c;
}

static void free_captured(captured *c)
{
    free(c->out), free(c->err);
}

/* Writes m as a transformers model folder dir/name (config.json + f32 weights, sharded when
 * shard_bytes > 0); returns the malloc'd folder path. */
static char *save_model(lf_env *f, const vnm_llama *m, const char *name, uint64_t shard_bytes)
{
    char err[512], *dir = tu_path(f->dir, name);
    assert_int_equal(mkdir(dir, 0777), 0);
    char *cfg = tu_path(dir, "config.json");
    char *w = tu_path(dir, shard_bytes ? "model.safetensors.index.json" : "model.safetensors");
    if (vnm_llama_config_save(&m->cfg, cfg, VNM_DTYPE_F32, err, sizeof err) != VNM_OK ||
        vnm_llama_save(f->ctx, m, w, VNM_DTYPE_F32, shard_bytes, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    free(cfg), free(w);
    return dir;
}

/* A small random model over the byte tokenizer's vocabulary. */
static vnm_llama *byte_model(vnm_ctx *ctx)
{
    vnm_llama_config cfg = vnm_llama_config_default();
    cfg.vocab_size = VNM_BYTE_VOCAB;
    cfg.hidden_size = 32;
    cfg.intermediate_size = 64;
    cfg.num_hidden_layers = 2;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.max_position_embeddings = 128;
    cfg.initializer_range = 0.5; /* far from uniform logits, so the text varies */
    cfg.bos_token_id = VNM_BYTE_BOS;
    cfg.n_eos_token_ids = 1;
    cfg.eos_token_ids[0] = VNM_BYTE_EOS;
    vnm_llama *m = vnm_llama_new(ctx, &cfg, NULL);
    if (!m) fail_msg("%s", vnm_ctx_error(ctx));
    return m;
}

static void assert_summary(const captured *c, long prompt, long new_tokens, bool eos)
{
    char want[128];
    snprintf(want, sizeof want, "{\"prompt_tokens\":%ld,\"new_tokens\":%ld,\"stopped_at_eos\":%s,",
             prompt, new_tokens, eos ? "true" : "false");
    tu_assert_has(c->err, want);
    tu_assert_has(c->err, "\"tok_per_s\":");
}

/* Byte tokenizer: BOS + the prompt's bytes in, the decoded continuation out, as the library
 * computes it; the same text for a seed again, with one thread. */
static void test_cli_byte_tokenizer(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = byte_model(f->ctx);
    char *dir = save_model(f, m, "byte", 0);
    const int32_t prompt[] = {VNM_BYTE_BOS, 'h', 'i'};
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 40;
    opt.top_k = 20;
    opt.seed = 5;
    int64_t n;
    int32_t *ids = generate(f->ctx, m, prompt, 3, &opt, &n);
    assert_int_equal(n, 40);
    char want[256];
    size_t want_len = vnm_byte_decode(ids, (size_t)n, false, want, sizeof want);
    assert_true(want_len > 0);
    want[want_len++] = '\n';

    const char *args[] = {dir, "--prompt", "hi", "--max-new", "40", "--top-k", "20",
                          "--seed", "5", "--no-stop-at-eos", "--threads", "1"};
    captured c = run(12, args);
    if (c.rc != 0) fail_msg("exit %d: %s", c.rc, c.err);
    assert_int_equal(c.out_len, want_len);
    assert_memory_equal(c.out, want, want_len);
    assert_summary(&c, 3, 40, false);
    free_captured(&c);
    captured again = run(10, args); /* all threads */
    assert_int_equal(again.rc, 0);
    assert_int_equal(again.out_len, want_len);
    assert_memory_equal(again.out, want, want_len);
    free_captured(&again);
    free(ids), free(dir);
    vnm_llama_free(m);
}

/* A byte model whose every prediction is EOS: each token embeds to ones, attention and MLP
 * outputs are zero (o_proj, down_proj), so the final hidden state is ones at every position and
 * lm_head's only nonzero row, 257's, wins. Its config names another eos id (2): the byte
 * tokenizer stops at 257 whatever the config says. */
static void test_cli_stops_at_byte_eos(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = byte_model(f->ctx);
    assert_int_equal(vnm_tensor_fill(f->ctx, m->embed_tokens, 1.0f), VNM_OK);
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) {
        assert_int_equal(vnm_tensor_fill(f->ctx, m->layers[l].o_proj.weight, 0), VNM_OK);
        assert_int_equal(vnm_tensor_fill(f->ctx, m->layers[l].down_proj.weight, 0), VNM_OK);
    }
    float *head = calloc((size_t)(VNM_BYTE_VOCAB * 32), sizeof *head);
    for (int j = 0; j < 32; j++) head[VNM_BYTE_EOS * 32 + j] = 1;
    assert_int_equal(vnm_tensor_from_host(f->ctx, m->lm_head.weight, head), VNM_OK);
    m->cfg.eos_token_ids[0] = 2;
    char *dir = save_model(f, m, "eos", 0);

    const char *args[] = {dir, "--prompt", "hi", "--max-new", "3", "--no-stop-at-eos"};
    captured c = run(5, args);
    if (c.rc != 0) fail_msg("exit %d: %s", c.rc, c.err);
    assert_string_equal(c.out, "\n"); /* EOS decodes to nothing */
    assert_summary(&c, 3, 1, true);
    free_captured(&c);
    c = run(6, args);
    assert_int_equal(c.rc, 0);
    assert_string_equal(c.out, "\n");
    assert_summary(&c, 3, 3, false);
    free_captured(&c);
    const char *ids_args[] = {dir, "--prompt-ids", "256,104", "--max-new", "3"};
    c = run(5, ids_args); /* the ids tokenizer (--prompt-ids) stops at the config's eos only */
    assert_int_equal(c.rc, 0);
    assert_string_equal(c.out, "{\"ids\":[257,257,257]}\n");
    free_captured(&c);
    free(head), free(dir);
    vnm_llama_free(m);
}

/* The command's ids output line for ids[n]. */
static void ids_json(const int32_t *ids, int64_t n, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "{\"ids\":[");
    for (int64_t i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, i ? ",%d" : "%d", ids[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]}\n");
}

/* ids tokenizer on the fixture model: the config's eos id ends the output (kept in it), from a
 * sharded folder too; --adapter gives what the library computes with the adapter loaded. */
static void test_cli_ids_tokenizer(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = tiny(f->ctx);
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 30;
    int64_t n;
    int32_t *full = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n);
    int stop = 0;
    while (full[stop] != full[6]) stop++;
    m->cfg.n_eos_token_ids = 2;
    m->cfg.eos_token_ids[0] = 63; /* never generated here (see test_stop_ids) */
    m->cfg.eos_token_ids[1] = full[6];
    char *plain = save_model(f, m, "plain", 0), *sharded = save_model(f, m, "sharded", 6000);
    char want[512];
    ids_json(full, stop + 1, want, sizeof want);
    for (int k = 0; k < 2; k++) {
        const char *args[] = {k ? sharded : plain, "--prompt-ids", "1,17,5,40,9",
                              "--max-new", "30"};
        captured c = run(5, args);
        if (c.rc != 0) fail_msg("exit %d: %s", c.rc, c.err);
        assert_string_equal(c.out, want);
        assert_summary(&c, 5, stop + 1, true);
        free_captured(&c);
    }

    char adapter[512];
    lf_fixture_path("llama_tiny/adapter", adapter, sizeof adapter);
    char err[512];
    if (vnm_peft_load(f->ctx, m, adapter, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    opt.top_k = 8;
    opt.seed = 3;
    int32_t *adapted = generate(f->ctx, m, tiny_prompt, TINY_PROMPT_LEN, &opt, &n);
    ids_json(adapted, n, want, sizeof want);
    const char *args[] = {plain, "--adapter", adapter, "--prompt-ids", "1,17,5,40,9",
                          "--max-new", "30", "--top-k", "8", "--seed", "3",
                          "--no-stop-at-eos"};
    captured c = run(12, args);
    if (c.rc != 0) fail_msg("exit %d: %s", c.rc, c.err);
    assert_string_equal(c.out, want);
    assert_true(memcmp(adapted, full, 30 * sizeof *full) != 0); /* the adapter matters */
    free_captured(&c);
    free(full), free(adapted), free(plain), free(sharded);
    vnm_llama_free(m);
}

/* NaN in a weight: a runtime failure of the library (VNM_ERR_RUNTIME) and of the command
 * (exit 1), not a token. */
static void test_non_finite_logits(void **state)
{
    lf_env *f = *state;
    vnm_llama *m = tiny(f->ctx);
    float *head = tu_host(f->ctx, m->lm_head.weight);
    head[7] = NAN;
    assert_int_equal(vnm_tensor_from_host(f->ctx, m->lm_head.weight, head), VNM_OK);
    char err[512], *dir = save_model(f, m, "nan", 0);
    int32_t out[4];
    int64_t n;
    vnm_generate_opts opt = vnm_generate_opts_default();
    opt.max_new = 4;
    assert_int_equal(vnm_generate(f->ctx, m, tiny_prompt, 5, &opt, out, &n, err, sizeof err),
                     VNM_ERR_RUNTIME);
    assert_int_equal(n, 0);
    tu_assert_has(err, "non-finite");
    const char *args[] = {dir, "--prompt-ids", "1,2", "--max-new", "4"};
    captured c = run(5, args);
    assert_int_equal(c.rc, 1);
    tu_assert_has(c.err, "non-finite");
    free_captured(&c);
    free(head), free(dir);
    vnm_llama_free(m);
}

/* Runs the command expecting exit code rc and a message containing needle on stderr. */
static void expect_refusal(int argc, const char *const *args, int rc, const char *needle)
{
    captured c = run(argc, args);
    if (c.rc != rc) fail_msg("%s ...: exit %d, expected %d; stderr: %s", args[0], c.rc, rc, c.err);
    tu_assert_has(c.err, needle);
    assert_int_equal(c.out_len, 0);
    free_captured(&c);
}

static void test_cli_bad_input(void **state)
{
    lf_env *f = *state;
    char tiny_dir[512];
    lf_fixture_path("llama_tiny", tiny_dir, sizeof tiny_dir);
    const char *d = tiny_dir;
#define REFUSED(rc, needle, ...)                                                                \
    do {                                                                                       \
        const char *a_[] = {__VA_ARGS__};                                                      \
        expect_refusal((int)(sizeof a_ / sizeof *a_), a_, rc, needle);                         \
    } while (0)
    REFUSED(2, "no MODEL_DIR", "--prompt-ids", "1");
    REFUSED(2, "MODEL_DIR '/nonexistent/model': No such file", "/nonexistent/model");
    REFUSED(2, "config.json' is missing", f->dir);
    char *cfg_only = tu_path(f->dir, "config.json"), src[512], *cmd;
    lf_fixture_path("llama_tiny/config.json", src, sizeof src);
    assert_true(asprintf(&cmd, "cp '%s' '%s'", src, cfg_only) > 0);
    assert_int_equal(system(cmd), 0);
    REFUSED(2, "neither model.safetensors nor model.safetensors.index.json", f->dir);
    REFUSED(2, "unknown option '--bogus'", d, "--bogus");
    REFUSED(2, "one MODEL_DIR expected", d, d);
    REFUSED(2, "--max-new needs an integer", d, "--max-new", "ten");
    REFUSED(2, "--max-new needs a value", d, "--max-new");
    REFUSED(2, "--top-k needs an integer", d, "--top-k", "-1");
    REFUSED(2, "top-k 65 is outside [0, 64]", d, "--prompt-ids", "1", "--top-k", "65");
    REFUSED(2, "--temperature needs a number > 0", d, "--temperature", "0");
    REFUSED(2, "--temperature needs a number", d, "--temperature", "-1");
    REFUSED(2, "--temperature needs a number", d, "--temperature", "hot");
    REFUSED(2, "--seed needs an integer", d, "--seed", "1.5");
    REFUSED(2, "--threads needs an integer", d, "--threads", "0");
    REFUSED(2, "--tokenizer needs byte or ids, got 'bpe'", d, "--tokenizer", "bpe");
    REFUSED(2, "--tokenizer byte needs vocab_size >= 258", d, "--tokenizer", "byte");
    REFUSED(2, "--prompt needs the byte tokenizer", d, "--prompt", "hello");
    REFUSED(2, "needs --prompt-ids", d);
    REFUSED(2, "exclude each other", d, "--prompt", "a", "--prompt-ids", "1");
    REFUSED(2, "--prompt-ids needs comma-separated token ids", d, "--prompt-ids", "1,,2");
    REFUSED(2, "--prompt-ids needs comma-separated token ids", d, "--prompt-ids", "1,-2");
    REFUSED(2, "--prompt-ids needs comma-separated token ids", d, "--prompt-ids", "");
    REFUSED(2, "prompt token 1 (id 64) is outside the vocabulary", d, "--prompt-ids", "1,64");
    REFUSED(2, "max_position_embeddings (64)", d, "--prompt-ids", "1"); /* default max-new 64 */
    REFUSED(2, "/nonexistent/adapter/adapter_config.json", d, "--prompt-ids", "1", "--max-new",
            "2", "--adapter", "/nonexistent/adapter");
#undef REFUSED
    free(cfg_only), free(cmd);

    const char *help[] = {d, "--help"};
    captured c = run(2, help);
    assert_int_equal(c.rc, 0);
    tu_assert_has(c.out, "usage: vnm generate MODEL_DIR");
    free_captured(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greedy_is_the_argmax_loop, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_top_k_sampling, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_top_1_is_greedy, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_ties_go_to_the_lowest_id, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_stop_ids, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_checks, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_cli_byte_tokenizer, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_cli_stops_at_byte_eos, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_cli_ids_tokenizer, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_non_finite_logits, lf_setup, lf_teardown),
        cmocka_unit_test_setup_teardown(test_cli_bad_input, lf_setup, lf_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
