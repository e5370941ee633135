/* tests/test_vit.c — the ViT / DeiT model (train/models/vit.h): conformance with real timm
 * (fixtures from tools/gen_vit_fixture.py: logits, loss and every parameter gradient of a reduced
 * config; the real deit_tiny_patch16_224 with weights from a hash formula, against its logits, loss
 * and per-tensor gradient summaries), a
 * finite-difference gradient check through the whole model, timm's parameter counts and shapes
 * for the DeiT presets, safetensors save/load round trip and load errors, and a linear swapped to
 * a V:N:M sparse weight. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "train/models/vit.h"
#include "train/safetensors.h"

static void fixture_path(const char *name, char *buf, size_t len)
{
    const char *dir = getenv("VNM_TEST_DATA");
    snprintf(buf, len, "%s/%s", dir ? dir : "tests/fixtures", name);
}

static void tmp_path(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/vnm_test_vit_%d_%s", (int)getpid(), name);
}

/* The dims of the timm fixtures. */
static vnm_vit_config fixture_config(bool distilled)
{
    return (vnm_vit_config){.embed_dim = 24, .depth = 2, .num_heads = 3, .mlp_ratio = 4.0,
                            .patch = 4, .img_size = 16, .in_chans = 1, .num_classes = 10,
                            .distilled = distilled};
}

/* A tiny model for the checks that need no fixture. */
static vnm_vit_config tiny_config(bool distilled)
{
    return (vnm_vit_config){.embed_dim = 8, .depth = 2, .num_heads = 2, .mlp_ratio = 2.0,
                            .patch = 2, .img_size = 4, .in_chans = 2, .num_classes = 3,
                            .distilled = distilled};
}

/* Fixture tensor as f32 (malloc'd); *numel receives its size. */
static float *fixture_f32(const vnm_safetensors *st, const char *name, int64_t *numel)
{
    const vnm_safetensors_tensor *t = vnm_safetensors_find(st, name);
    if (!t) fail_msg("fixture lacks '%s'", name);
    float *buf = malloc((size_t)t->numel * sizeof *buf);
    char err[256];
    if (vnm_safetensors_read_f32(st, name, buf, (size_t)t->numel, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    *numel = t->numel;
    return buf;
}

/* max |a − b| / max |b| */
static double rel_err(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - (double)b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return den > 0 ? num / den : num;
}

static const char *const fixture_extras[] = {"input", "labels", "logits", "loss", "grad.*"};

static void check_timm_case(vnm_ctx *ctx, const char *file, bool distilled)
{
    char path[512], err[512];
    fixture_path(file, path, sizeof path);
    vnm_vit_config cfg = fixture_config(distilled);
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    assert_non_null(m);
    if (vnm_vit_load(ctx, m, path, fixture_extras, 5, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    vnm_safetensors *st;
    assert_int_equal(vnm_safetensors_open(path, &st, err, sizeof err), VNM_OK);

    int64_t n_in, n_logits, n_loss;
    float *input = fixture_f32(st, "input", &n_in);
    float *want_logits = fixture_f32(st, "logits", &n_logits);
    float *want_loss = fixture_f32(st, "loss", &n_loss);
    int64_t labels[3];
    assert_int_equal(vnm_safetensors_read(st, "labels", labels, sizeof labels, err, sizeof err),
                     VNM_OK);

    vnm_ctx_set_training(ctx, false);
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(3, 1, 16, 16), input);
    vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(3), labels);
    vnm_tensor *logits = vnm_vit_forward(ctx, m, x, NULL);
    assert_non_null(logits);
    assert_int_equal(logits->shape[0], 3);
    assert_int_equal(logits->shape[1], 10);
    float *got = tu_host(ctx, logits);
    double e = rel_err(got, want_logits, n_logits);
    if (e > 1e-4) fail_msg("%s: logits relative error %.3g > 1e-4", file, e);

    vnm_tensor *loss = vnm_cross_entropy(ctx, logits, y, -100, 0.0f);
    assert_non_null(loss);
    float l = vnm_item(ctx, loss);
    e = fabs((double)l - want_loss[0]) / fabs((double)want_loss[0]);
    if (e > 1e-5) fail_msg("%s: loss %.8g vs timm %.8g (relative %.3g)", file, l, want_loss[0], e);

    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    double worst = 0;
    char worst_name[96] = "";
    for (int i = 0; i < vnm_vit_param_count(m); i++) {
        vnm_vit_param p = vnm_vit_param_at(m, i);
        char gname[128];
        snprintf(gname, sizeof gname, "grad.%s", p.name);
        int64_t n;
        float *want = fixture_f32(st, gname, &n);
        assert_int_equal(n, vnm_numel(p.tensor));
        assert_non_null(p.tensor->grad);
        float *g = tu_host(ctx, p.tensor->grad);
        e = rel_err(g, want, n);
        if (e > worst) {
            worst = e;
            snprintf(worst_name, sizeof worst_name, "%s", p.name);
        }
        free(g);
        free(want);
    }
    if (worst > 1e-3)
        fail_msg("%s: gradient of '%s' relative error %.3g > 1e-3", file, worst_name, worst);

    free(got);
    free(input);
    free(want_logits);
    free(want_loss);
    vnm_safetensors_close(st);
    vnm_vit_free(m);
}

/* (1) timm's VisionTransformer: logits, loss and every gradient. */
static void test_timm_conformance(void **state)
{
    check_timm_case(*state, "vit_small_case.safetensors", false);
}

/* (1) on the CUDA backend: the same logits, loss and gradients as timm. */
static void test_timm_conformance_cuda(void **state)
{
    (void)state;
    vnm_ctx *ctx = tu_cuda_ctx_or_skip();
    check_timm_case(ctx, "vit_small_case.safetensors", false);
    vnm_ctx_destroy(ctx);
}

/* (1b) timm's VisionTransformerDistilled in eval: mean of the two heads. */
static void test_timm_conformance_distilled(void **state)
{
    check_timm_case(*state, "vit_distilled_case.safetensors", true);
}

/* (1c) the real timm deit_tiny_patch16_224 (5.7 M parameters, 224×224×3, 1000 classes, batch 2)
 * without storing its weights: every parameter and the images come from an integer hash that
 * tools/gen_vit_fixture.py evaluates in numpy and this file in C (the formula is below and in the
 * script's docstring; every value is exact in f32, so both sides hold the same bits). The fixture
 * vit_deit_tiny_formula.txt holds timm's logits [2, 1000], the loss and, per parameter, its
 * gradient's L2 norm, sum, Σ|g|, max |g| and 16 values at indices floor(j·(numel−1)/15), j = 0..15
 * (first, last, evenly spaced). Checks: logits ≤ 1e-4 of the
 * largest; loss ≤ 1e-5 relative; norm, Σ|g| and max |g| ≤ 1e-3 relative; the sum within
 * 1e-3·Σ|g| (the sum cancels to ~0 for everything that feeds a LayerNorm's input, and for the key
 * bias, so it has no relative scale of its own); each sample within 1e-3·max |g| of the tensor. */
#define DEIT_SEED 0x5EED7A11u
#define DEIT_IMAGE_K 1000u
#define DEIT_PARAMS 152
#define DEIT_SAMPLES 16

/* murmur3's 32-bit finaliser; uint32_t arithmetic wraps modulo 2^32 as numpy's uint32 does */
static uint32_t fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

/* k: tensor number in timm's state-dict order (DEIT_IMAGE_K for the images); i: row-major index */
static uint32_t mix32(uint32_t seed, uint32_t k, uint32_t i)
{
    return fmix32(fmix32(seed ^ (k * 0x9E3779B9u)) + i);
}

enum { DEIT_PARAM, DEIT_LN_WEIGHT, DEIT_IMAGE };

/* h = mix32(DEIT_SEED, k, i); LayerNorm weights 0.5 + (h >> 9)·2^-23 ∈ [0.5, 1.5); every other
 * parameter ((h >> 8) − 2^23)·2^-26 ∈ [−1/8, 1/8); images ((h >> 8) − 2^23)·2^-23 ∈ [−1, 1).
 * Integers below 2^24 times powers of two: each step is exact in f32. */
static void deit_formula(uint32_t k, int64_t n, int kind, float *dst)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t h = mix32(DEIT_SEED, k, (uint32_t)i);
        if (kind == DEIT_LN_WEIGHT)
            dst[i] = 0.5f + (float)(h >> 9) * 0x1p-23f;
        else
            dst[i] = (float)((int32_t)(h >> 8) - (1 << 23)) *
                     (kind == DEIT_IMAGE ? 0x1p-23f : 0x1p-26f);
    }
}

typedef struct {
    double norm, sum, abssum, amax;
    int64_t idx[DEIT_SAMPLES];
    double val[DEIT_SAMPLES];
} deit_grad_summary;

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* worst value of one kind of comparison, and where */
typedef struct {
    double err;
    char where[96];
} deit_worst;

static void deit_note(deit_worst *w, double err, const char *where)
{
    if (err > w->err || w->where[0] == '\0') {
        w->err = err;
        snprintf(w->where, sizeof w->where, "%s", where);
    }
}

static void test_timm_conformance_deit_tiny(void **state)
{
    vnm_ctx *ctx = *state;
    const char *file = "vit_deit_tiny_formula.txt";
    char path[512];
    fixture_path(file, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s (python3 tools/gen_vit_fixture.py --only deit_tiny)", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);

    tu_words r = {text, file};
    tu_expect_word(&r, "vnm-vit-formula-fixture");
    tu_expect_word(&r, "1");
    tu_expect_word(&r, "model");
    tu_expect_word(&r, "deit_tiny_patch16_224");
    assert_true(tu_key_number(&r, "seed") == DEIT_SEED);
    assert_true(tu_key_number(&r, "image_k") == DEIT_IMAGE_K);
    tu_expect_word(&r, "input");
    const int64_t B = 2, C = 3, HW = 224, K = 1000;
    assert_true(tu_number(&r) == B && tu_number(&r) == C && tu_number(&r) == HW &&
                tu_number(&r) == HW);
    int64_t labels[2];
    tu_expect_word(&r, "labels");
    for (int b = 0; b < B; b++) labels[b] = (int64_t)tu_number(&r);
    tu_expect_word(&r, "logits");
    assert_true(tu_number(&r) == B && tu_number(&r) == K);
    float want_logits[2 * 1000];
    for (int64_t i = 0; i < B * K; i++) want_logits[i] = (float)tu_number(&r);
    double want_loss = tu_key_number(&r, "loss");

    vnm_vit_config cfg;
    char err[128];
    assert_int_equal(vnm_vit_config_preset("tiny", &cfg, err, sizeof err), VNM_OK);
    cfg.skip_init = true; /* every weight is set from the formula */
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    assert_non_null(m);
    assert_int_equal(vnm_vit_numel(m), 5717416);
    int n_params = (int)tu_key_number(&r, "params");
    assert_int_equal(n_params, DEIT_PARAMS);
    assert_int_equal(vnm_vit_param_count(m), DEIT_PARAMS);

    static deit_grad_summary want[DEIT_PARAMS];
    for (int k = 0; k < n_params; k++) {
        vnm_vit_param p = vnm_vit_param_at(m, k);
        tu_expect_word(&r, "param");
        const char *name = tu_word(&r);
        if (strcmp(name, p.name) != 0)
            fail_msg("%s: parameter %d is '%s' in timm's state dict, '%s' here", file, k, name,
                     p.name);
        int ndim = p.linear ? p.linear->wndim : p.tensor->ndim;
        const int64_t *shape = p.linear ? p.linear->wshape : p.tensor->shape;
        assert_true(tu_key_number(&r, "shape") == ndim);
        for (int d = 0; d < ndim; d++)
            if (tu_number(&r) != (double)shape[d])
                fail_msg("%s: '%s' dimension %d differs from timm's", file, name, d);
        bool ln_weight = !p.linear && p.tensor->ndim == 1 && ends_with(p.name, ".weight");
        assert_true(tu_key_number(&r, "ln_weight") == ln_weight);

        int64_t n = vnm_numel(p.tensor);
        float *w = malloc((size_t)n * sizeof *w);
        deit_formula((uint32_t)k, n, ln_weight ? DEIT_LN_WEIGHT : DEIT_PARAM, w);
        assert_int_equal(vnm_tensor_from_host(ctx, p.tensor, w), VNM_OK);
        free(w);

        deit_grad_summary *s = &want[k];
        s->norm = tu_key_number(&r, "norm");
        s->sum = tu_key_number(&r, "sum");
        s->abssum = tu_key_number(&r, "abssum");
        s->amax = tu_key_number(&r, "amax");
        assert_true(tu_key_number(&r, "samples") == DEIT_SAMPLES);
        for (int j = 0; j < DEIT_SAMPLES; j++) {
            s->idx[j] = (int64_t)tu_number(&r);
            assert_true(s->idx[j] == j * (n - 1) / (DEIT_SAMPLES - 1));
            s->val[j] = tu_number(&r);
        }
    }

    size_t n_img = (size_t)(B * C * HW * HW);
    float *images = malloc(n_img * sizeof *images);
    deit_formula(DEIT_IMAGE_K, (int64_t)n_img, DEIT_IMAGE, images);
    vnm_ctx_set_training(ctx, false);
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(B, C, HW, HW), images);
    vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(B), labels);
    vnm_tensor *logits = vnm_vit_forward(ctx, m, x, NULL);
    assert_non_null(logits);
    assert_int_equal(logits->shape[0], B);
    assert_int_equal(logits->shape[1], K);
    float *got = tu_host(ctx, logits);
    double e_logits = rel_err(got, want_logits, B * K);
    if (e_logits > 1e-4) fail_msg("deit_tiny: logits relative error %.3g > 1e-4", e_logits);
    vnm_tensor *loss = vnm_cross_entropy(ctx, logits, y, -100, 0.0f);
    assert_non_null(loss);
    double l = vnm_item(ctx, loss), e_loss = fabs(l - want_loss) / fabs(want_loss);
    if (e_loss > 1e-5)
        fail_msg("deit_tiny: loss %.8g vs timm %.8g (relative %.3g)", l, want_loss, e_loss);
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);

    deit_worst w_norm = {0}, w_sum = {0}, w_abssum = {0}, w_amax = {0}, w_sample = {0};
    for (int k = 0; k < n_params; k++) {
        vnm_vit_param p = vnm_vit_param_at(m, k);
        assert_non_null(p.tensor->grad);
        const deit_grad_summary *s = &want[k];
        float *g = tu_host(ctx, p.tensor->grad);
        int64_t n = vnm_numel(p.tensor);
        double sq = 0, sum = 0, abssum = 0, amax = 0;
        for (int64_t i = 0; i < n; i++) {
            sq += (double)g[i] * g[i];
            sum += g[i];
            abssum += fabs(g[i]);
            amax = fmax(amax, fabs(g[i]));
        }
        deit_note(&w_norm, fabs(sqrt(sq) - s->norm) / s->norm, p.name);
        deit_note(&w_sum, fabs(sum - s->sum) / s->abssum, p.name);
        deit_note(&w_abssum, fabs(abssum - s->abssum) / s->abssum, p.name);
        deit_note(&w_amax, fabs(amax - s->amax) / s->amax, p.name);
        for (int j = 0; j < DEIT_SAMPLES; j++) {
            char where[96];
            snprintf(where, sizeof where, "%s[%lld]", p.name, (long long)s->idx[j]);
            deit_note(&w_sample, fabs(g[s->idx[j]] - s->val[j]) / s->amax, where);
        }
        free(g);
    }
    print_message("# deit_tiny vs timm: logits %.2g, loss %.2g; gradients: norm %.2g (%s), sum "
                  "%.2g of Σ|g| (%s), Σ|g| %.2g (%s), max|g| %.2g (%s), samples %.2g of max|g| "
                  "(%s)\n", e_logits, e_loss, w_norm.err, w_norm.where, w_sum.err, w_sum.where,
                  w_abssum.err, w_abssum.where, w_amax.err, w_amax.where, w_sample.err,
                  w_sample.where);
    const deit_worst *all[] = {&w_norm, &w_sum, &w_abssum, &w_amax, &w_sample};
    const char *what[] = {"L2 norm", "sum (relative to Σ|g|)", "Σ|g|", "max |g|",
                          "sampled value (relative to max |g|)"};
    for (int c = 0; c < 5; c++)
        if (all[c]->err > 1e-3)
            fail_msg("deit_tiny: gradient %s of '%s' off by %.3g > 1e-3", what[c], all[c]->where,
                     all[c]->err);

    free(got);
    free(images);
    free(text);
    vnm_vit_free(m);
}

typedef struct {
    vnm_vit *m;
    const float *images;
    bool dist_head; /* return head_dist's logits (training, distilled) */
} fwd_case;

static vnm_tensor *f_vit(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)in; /* the inputs are the model's own parameters */
    fwd_case *c = user;
    const vnm_vit_config *cfg = &c->m->cfg;
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 4,
                                    VNM_SHAPE(2, cfg->in_chans, cfg->img_size, cfg->img_size),
                                    c->images);
    vnm_tensor *dist = NULL;
    vnm_tensor *logits = vnm_vit_forward(ctx, c->m, x, c->dist_head ? &dist : NULL);
    return c->dist_head ? dist : logits;
}

static float *random_images(int64_t n, unsigned seed)
{
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return x;
}

/* Our init leaves LayerNorms at ones/zeros and the cls token at ~1e-6; randomise everything so the
 * gradient check sees every path. */
static void randomise(vnm_ctx *ctx, vnm_vit *m)
{
    for (int i = 0; i < vnm_vit_param_count(m); i++)
        assert_int_equal(vnm_rng_uniform(ctx, vnm_vit_param_at(m, i).tensor, -0.5f, 0.5f),
                         VNM_OK);
}

/* (2) finite differences through the whole model (patch embedding, tokens, attention, MLP, head)
 * w.r.t. a set of parameters covering every kind of use; the distilled head in training too. */
static void test_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    for (int distilled = 0; distilled <= 1; distilled++) {
        vnm_vit_config cfg = tiny_config(distilled);
        vnm_vit *m = vnm_vit_new(ctx, &cfg);
        assert_non_null(m);
        randomise(ctx, m);
        float *images = random_images(2 * 2 * 4 * 4, 7u + (unsigned)distilled);
        fwd_case c = {m, images, distilled};
        vnm_ctx_set_training(ctx, distilled); /* no drop-path configured: still deterministic */
        vnm_tensor *in[] = {m->patch_embed.weight, m->cls_token, m->pos_embed,
                            m->blocks[0].norm1_w,  m->blocks[1].qkv.weight,
                            m->blocks[1].fc1.bias, m->norm_b,
                            distilled ? m->dist_token : m->head.weight};
        tu_gradcheck(ctx, f_vit, 8, in, &c);
        vnm_ctx_set_training(ctx, false);
        free(images);
        vnm_vit_free(m);
    }
}

static int param_index(const vnm_vit *m, const char *name)
{
    for (int i = 0; i < vnm_vit_param_count(m); i++)
        if (strcmp(vnm_vit_param_at(m, i).name, name) == 0) return i;
    fail_msg("no parameter '%s'", name);
    return -1;
}

/* dimension dim of the timm shape of a parameter */
static int64_t param_dim(const vnm_vit *m, const char *name, int dim)
{
    vnm_vit_param p = vnm_vit_param_at(m, param_index(m, name));
    return p.linear ? p.linear->wshape[dim] : p.tensor->shape[dim];
}

/* (3) timm's parameter counts and key shapes of the DeiT presets (224, patch 16, 1000 classes). */
static void test_presets(void **state)
{
    vnm_ctx *ctx = *state;
    static const struct {
        const char *size;
        int64_t dim, params;
    } want[] = {{"tiny", 192, 5717416}, {"small", 384, 22050664}, {"base", 768, 86567656}};
    for (size_t k = 0; k < 3; k++) {
        vnm_vit_config cfg;
        char err[128];
        assert_int_equal(vnm_vit_config_preset(want[k].size, &cfg, err, sizeof err), VNM_OK);
        cfg.skip_init = true; /* seconds of RNG for base; test_init covers the init */
        vnm_vit *m = vnm_vit_new(ctx, &cfg);
        assert_non_null(m);
        assert_int_equal(vnm_vit_numel(m), want[k].params);
        assert_int_equal(vnm_vit_param_count(m), 4 + 12 * 12 + 4);
        assert_int_equal(m->n_linears, 1 + 4 * 12 + 1);
        int64_t D = want[k].dim;
        assert_int_equal(param_dim(m, "patch_embed.proj.weight", 0), D);
        assert_int_equal(param_dim(m, "patch_embed.proj.weight", 1), 3);
        assert_int_equal(param_dim(m, "patch_embed.proj.weight", 3), 16);
        assert_int_equal(param_dim(m, "pos_embed", 1), 197);
        assert_int_equal(param_dim(m, "cls_token", 2), D);
        assert_int_equal(param_dim(m, "blocks.11.attn.qkv.weight", 0), 3 * D);
        assert_int_equal(param_dim(m, "blocks.11.mlp.fc2.weight", 1), 4 * D);
        assert_int_equal(param_dim(m, "head.weight", 0), 1000);
        vnm_vit_free(m);
    }
    vnm_vit_config cfg;
    assert_int_equal(vnm_vit_config_preset("tiny", &cfg, NULL, 0), VNM_OK);
    cfg.distilled = true;
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    assert_int_equal(vnm_vit_numel(m), 5910800); /* deit_tiny_distilled_patch16_224 */
    assert_int_equal(param_dim(m, "pos_embed", 1), 198);
    /* one image through deit_tiny: [1, 1000] */
    vnm_ctx_set_grad_enabled(ctx, false);
    vnm_tensor *x = vnm_tensor_new(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(1, 3, 224, 224));
    vnm_tensor *y = vnm_vit_forward(ctx, m, x, NULL);
    assert_non_null(y);
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[1], 1000);
    vnm_vit_free(m);

    char err[128];
    assert_int_not_equal(vnm_vit_config_preset("huge", &cfg, err, sizeof err), VNM_OK);
    assert_non_null(strstr(err, "'huge'"));
}

static float *logits_of(vnm_ctx *ctx, vnm_vit *m, const float *images)
{
    fwd_case c = {m, images, false};
    vnm_tensor *y = f_vit(ctx, NULL, &c);
    assert_non_null(y);
    return tu_host(ctx, y);
}

/* mean, std and max |x| of a tensor */
static void stats(vnm_ctx *ctx, const vnm_tensor *t, double *mean, double *std, double *amax)
{
    float *h = tu_host(ctx, t);
    int64_t n = vnm_numel(t);
    double s = 0, s2 = 0;
    *amax = 0;
    for (int64_t i = 0; i < n; i++) {
        s += h[i];
        s2 += (double)h[i] * h[i];
        *amax = fmax(*amax, fabs(h[i]));
    }
    *mean = s / (double)n;
    *std = sqrt(s2 / (double)n - *mean * *mean);
    free(h);
}

/* timm's default init: Linear trunc_normal(.02) (here cut at ±2 std, std of the truncated law
 * 0.02·0.880) with zero bias, the conv uniform ±1/√fan_in, LayerNorm ones/zeros, cls ~1e-6;
 * drop-path rates linear over the blocks, and a training forward with drop-path runs. */
static void test_init(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_vit_config cfg;
    assert_int_equal(vnm_vit_config_preset("tiny", &cfg, NULL, 0), VNM_OK);
    cfg.drop_path_rate = 0.1f;
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    double mean, std, amax;
    stats(ctx, m->blocks[3].fc1.weight, &mean, &std, &amax); /* 147456 draws */
    assert_true(fabs(mean) < 3e-4);
    assert_true(fabs(std - 0.02 * 0.8796) < 3e-4);
    assert_true(amax <= 0.04 && amax > 0.039);
    stats(ctx, m->pos_embed, &mean, &std, &amax);
    assert_true(amax <= 0.04 && std > 0.017 && std < 0.0183);
    stats(ctx, m->patch_embed.weight, &mean, &std, &amax);
    double bound = 1.0 / sqrt(3.0 * 16 * 16);
    assert_true(amax <= bound && amax > 0.99 * bound && fabs(std - bound / sqrt(3.0)) < 3e-4);
    stats(ctx, m->cls_token, &mean, &std, &amax);
    assert_true(amax > 0 && amax < 1e-5);
    stats(ctx, m->blocks[5].qkv.bias, &mean, &std, &amax);
    assert_true(amax == 0);
    stats(ctx, m->norm_w, &mean, &std, &amax);
    assert_true(mean == 1 && std == 0);
    assert_float_equal(m->blocks[0].drop_path, 0.0f, 0);
    assert_float_equal(m->blocks[6].drop_path, 0.1f * 6 / 11, 1e-7);
    assert_float_equal(m->blocks[11].drop_path, 0.1f, 1e-7);
    vnm_vit_free(m);

    cfg = tiny_config(false);
    cfg.drop_path_rate = 0.5f;
    m = vnm_vit_new(ctx, &cfg);
    float *images = random_images(2 * 2 * 4 * 4, 5u);
    float *eval = logits_of(ctx, m, images);
    vnm_ctx_set_training(ctx, true);
    float *train = logits_of(ctx, m, images);
    vnm_ctx_set_training(ctx, false);
    assert_true(memcmp(eval, train, 6 * sizeof(float)) != 0);
    free(eval);
    free(train);
    free(images);
    vnm_vit_free(m);
}

/* Bad configs and images fail with a message, not a crash. */
static void test_bad_input(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_vit_config cfg = tiny_config(false);
    cfg.num_heads = 3;
    assert_null(vnm_vit_new(ctx, &cfg));
    tu_assert_error(ctx, "not a multiple of heads");
    cfg = tiny_config(false);
    cfg.img_size = 5;
    assert_null(vnm_vit_new(ctx, &cfg));
    tu_assert_error(ctx, "img_size 5 not a multiple of patch 2");
    cfg = tiny_config(false);
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    vnm_tensor *x = vnm_tensor_new(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(2, 3, 4, 4));
    assert_null(vnm_vit_forward(ctx, m, x, NULL));
    tu_assert_error(ctx, "expected [B, 2, 4, 4] f32");
    assert_null(vnm_vit_forward(ctx, m, NULL, NULL));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
    vnm_vit_free(m);
}

/* (4) save → load into a differently initialised model gives identical logits; the file holds
 * exactly the timm keys. */
static void test_save_load_round_trip(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_vit_config cfg = tiny_config(true);
    vnm_vit *a = vnm_vit_new(ctx, &cfg), *b = vnm_vit_new(ctx, &cfg);
    randomise(ctx, a);
    char path[256], err[512];
    tmp_path("round.safetensors", path, sizeof path);
    if (vnm_vit_save(ctx, a, path, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    float *images = random_images(2 * 2 * 4 * 4, 3u);
    float *la = logits_of(ctx, a, images), *before = logits_of(ctx, b, images);
    assert_true(memcmp(la, before, 6 * sizeof(float)) != 0);
    if (vnm_vit_load(ctx, b, path, NULL, 0, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    float *lb = logits_of(ctx, b, images);
    assert_memory_equal(la, lb, 6 * sizeof(float));

    vnm_safetensors *st;
    assert_int_equal(vnm_safetensors_open(path, &st, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_safetensors_count(st), vnm_vit_param_count(a));
    const vnm_safetensors_tensor *w = vnm_safetensors_find(st, "patch_embed.proj.weight");
    assert_non_null(w);
    assert_int_equal(w->ndim, 4);
    assert_non_null(vnm_safetensors_find(st, "head_dist.bias"));
    vnm_safetensors_close(st);
    unlink(path);
    free(images);
    free(la);
    free(lb);
    free(before);
    vnm_vit_free(a);
    vnm_vit_free(b);
}

/* Host copies of every parameter of m as safetensors entries (shapes and data malloc'd). */
typedef struct {
    int n;
    vnm_safetensors_entry e[64];
    int64_t shape[64][VNM_MAX_DIMS];
    float *data[64];
} entry_set;

static void entries_of(vnm_ctx *ctx, const vnm_vit *m, entry_set *s)
{
    s->n = vnm_vit_param_count(m);
    assert_true(s->n <= 64);
    for (int i = 0; i < s->n; i++) {
        vnm_vit_param p = vnm_vit_param_at(m, i);
        s->data[i] = tu_host(ctx, p.tensor);
        memcpy(s->shape[i], p.linear ? p.linear->wshape : p.tensor->shape, sizeof s->shape[i]);
        s->e[i] = (vnm_safetensors_entry){p.tensor->name, VNM_DTYPE_F32,
                                          p.linear ? p.linear->wndim : p.tensor->ndim, s->shape[i],
                                          s->data[i]};
    }
}

static int entry_index(const entry_set *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->e[i].name, name) == 0) return i;
    fail_msg("no entry '%s'", name);
    return -1;
}

static void expect_load_error(vnm_ctx *ctx, vnm_vit *m, const entry_set *s, const char *path,
                              const char *needle)
{
    char err[512];
    assert_int_equal(vnm_safetensors_write(path, s->e, (size_t)s->n, NULL, 0, err, sizeof err),
                     VNM_OK);
    assert_int_equal(vnm_vit_load(ctx, m, path, NULL, 0, err, sizeof err), VNM_ERR_INPUT);
    if (!strstr(err, needle) || !strstr(err, path))
        fail_msg("error \"%s\" lacks \"%s\" or the file name", err, needle);
}

/* (5) missing tensor, wrong shape, unexpected key: each names the key and the file; a head for
 * another class count is skipped (DeiT --finetune) and keeps its initialisation. */
static void test_load_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_vit_config cfg = tiny_config(false);
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    char path[256], err[512];
    tmp_path("bad.safetensors", path, sizeof path);
    entry_set s;
    entries_of(ctx, m, &s);

    entry_set t = s;
    int k = entry_index(&t, "blocks.1.norm2.bias");
    t.e[k] = t.e[--t.n];
    expect_load_error(ctx, m, &t, path, "missing tensor 'blocks.1.norm2.bias' (expected [8])");

    t = s;
    k = entry_index(&t, "pos_embed");
    int64_t flat[2] = {1, 5 * 8};
    t.e[k].ndim = 2;
    t.e[k].shape = flat;
    expect_load_error(ctx, m, &t, path, "'pos_embed' has shape [1, 40], expected [1, 5, 8]");

    t = s;
    float extra[2] = {0};
    t.e[t.n++] = (vnm_safetensors_entry){"blocks.0.attn.q_norm.weight", VNM_DTYPE_F32, 1,
                                        VNM_SHAPE(2), extra};
    expect_load_error(ctx, m, &t, path, "unexpected tensor 'blocks.0.attn.q_norm.weight'");

    assert_int_not_equal(vnm_vit_load(ctx, m, "/nonexistent/w.safetensors", NULL, 0, err,
                                      sizeof err), VNM_OK);
    assert_non_null(strstr(err, "/nonexistent/w.safetensors"));

    /* a 3-class checkpoint into a 5-class model: everything but the head loads */
    vnm_vit_config cfg5 = cfg;
    cfg5.num_classes = 5;
    vnm_vit *m5 = vnm_vit_new(ctx, &cfg5);
    float *head_before = tu_host(ctx, m5->head.weight);
    for (int i = 0; i < s.n; i++) /* distinct values so a load is visible */
        for (int64_t j = 0; j < vnm_numel(vnm_vit_param_at(m, i).tensor); j++)
            s.data[i][j] = 0.25f + 0.001f * (float)j;
    assert_int_equal(vnm_safetensors_write(path, s.e, (size_t)s.n, NULL, 0, err, sizeof err),
                     VNM_OK);
    if (vnm_vit_load(ctx, m5, path, NULL, 0, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    float *head_after = tu_host(ctx, m5->head.weight);
    assert_memory_equal(head_before, head_after, 5 * 8 * sizeof(float));
    float *pos = tu_host(ctx, m5->pos_embed);
    assert_float_equal(pos[3], 0.253f, 1e-7);
    free(pos);
    free(head_before);
    free(head_after);

    unlink(path);
    for (int i = 0; i < s.n; i++) free(s.data[i]);
    vnm_vit_free(m5);
    vnm_vit_free(m);
}

/* (6) blocks.0.mlp.fc1 pruned to 16:2:4: the model computes what the dense model with the masked
 * weight computes, trains the compressed values, saves the decompressed weight and refuses to
 * load into the pruned layer. */
static void test_sparse_linear_swap(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_vit_config cfg = {.embed_dim = 16, .depth = 1, .num_heads = 2, .mlp_ratio = 4.0,
                          .patch = 2, .img_size = 4, .in_chans = 2, .num_classes = 3};
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    randomise(ctx, m);
    vnm_vit_linear *fc1 = &m->blocks[0].fc1;
    assert_string_equal(fc1->name, "blocks.0.mlp.fc1");
    int64_t O = fc1->out, In = fc1->in;
    float *W = tu_host(ctx, fc1->weight), *S = malloc((size_t)(O * In) * sizeof *S);
    uint8_t *mask = malloc((size_t)(O * In));
    char err[512];
    vnm_pattern pat;
    assert_int_equal(vnm_pattern_parse("16:2:4", &pat, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_score_compute(VNM_SCORE_MAGNITUDE, W, O, In, NULL, 0.5, S, err,
                                       sizeof err), VNM_OK);
    assert_int_equal(vnm_mask_select(pat, VNM_SELECT_L1, S, O, In, mask, err, sizeof err), VNM_OK);
    vnm_sparse_host h;
    assert_int_equal(vnm_sparse_compress(pat, W, mask, O, In, NULL, NULL, &h, err, sizeof err),
                     VNM_OK);
    float *Wm = malloc((size_t)(O * In) * sizeof *Wm);
    vnm_sparse_decompress(&h, Wm);

    /* reference: the dense model with the masked weight */
    assert_int_equal(vnm_tensor_from_host(ctx, fc1->weight, Wm), VNM_OK);
    float *images = random_images(2 * 2 * 4 * 4, 11u);
    float *want = logits_of(ctx, m, images);

    vnm_sparse_weight *sw = vnm_sparse_weight_new(ctx, &h, "blocks.0.mlp.fc1.weight");
    assert_non_null(sw);
    assert_int_equal(vnm_vit_linear_set_sparse(&m->blocks[0].fc2, sw, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "the layer needs [16, 64]"));
    assert_int_equal(vnm_vit_linear_set_sparse(fc1, sw, err, sizeof err), VNM_OK);
    int fc1_w = param_index(m, "blocks.0.mlp.fc1.weight");
    assert_ptr_equal(vnm_vit_param_at(m, fc1_w).tensor, sw->vals);

    vnm_ctx_reset_step(ctx);
    fwd_case c = {m, images, false};
    vnm_tensor *y = f_vit(ctx, NULL, &c);
    float *got = tu_host(ctx, y);
    double want_d[6];
    for (int i = 0; i < 6; i++) want_d[i] = want[i];
    tu_assert_close(got, want_d, 6, 1e-5, 1e-5, "sparse fc1 logits");
    vnm_tensor *labels = vnm_tensor_from(ctx, VNM_DTYPE_I64, 1, VNM_SHAPE(2),
                                         (int64_t[]){0, 2});
    vnm_tensor *loss = vnm_cross_entropy(ctx, y, labels, -100, 0.0f);
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    assert_non_null(sw->vals->grad);
    float *gv = tu_host(ctx, sw->vals->grad);
    double norm = 0;
    for (int64_t i = 0; i < vnm_numel(sw->vals); i++) norm += fabs(gv[i]);
    assert_true(norm > 0);

    char path[256];
    tmp_path("sparse.safetensors", path, sizeof path);
    if (vnm_vit_save(ctx, m, path, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    vnm_safetensors *st;
    assert_int_equal(vnm_safetensors_open(path, &st, err, sizeof err), VNM_OK);
    float *saved = malloc((size_t)(O * In) * sizeof *saved);
    assert_int_equal(vnm_safetensors_read_f32(st, "blocks.0.mlp.fc1.weight", saved,
                                              (size_t)(O * In), err, sizeof err), VNM_OK);
    assert_memory_equal(saved, Wm, (size_t)(O * In) * sizeof *saved);
    vnm_safetensors_close(st);
    assert_int_equal(vnm_vit_load(ctx, m, path, NULL, 0, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "pruned (sparse) layer"));
    unlink(path);

    free(W);
    free(S);
    free(mask);
    free(Wm);
    free(want);
    free(got);
    free(gv);
    free(saved);
    free(images);
    vnm_sparse_host_free(&h);
    vnm_vit_free(m);
}


static void no_hook(void *user, const char *weight_name, const vnm_tensor *x)
{
    (void)user, (void)weight_name, (void)x;
}

/* The last block computes only the rows the heads read (class and distillation tokens) after its
 * keys and values; with a linear hook installed (calibration sees every token) it computes them
 * all. Both give the same logits and the same gradient of every parameter. */
static void test_last_block_prefix_rows(void **state)
{
    vnm_ctx *ctx = *state;
    for (int distilled = 0; distilled <= 1; distilled++) {
        vnm_vit_config cfg = fixture_config(distilled);
        vnm_vit *m = vnm_vit_new(ctx, &cfg);
        assert_non_null(m);
        randomise(ctx, m);
        float *images = random_images(2 * 16 * 16, 11u + (unsigned)distilled);
        vnm_ctx_set_training(ctx, distilled);
        int np = vnm_vit_param_count(m);
        float *out[2], **grads[2];
        int64_t nout = 0;
        for (int full = 0; full <= 1; full++) {
            vnm_ctx_set_linear_hook(ctx, full ? no_hook : NULL, NULL);
            vnm_ctx_reset_step(ctx);
            for (int i = 0; i < np; i++) {
                vnm_tensor *p = vnm_vit_param_at(m, i).tensor;
                vnm_zero_grad(ctx, &p, 1);
            }
            fwd_case c = {m, images, distilled};
            vnm_tensor *y = f_vit(ctx, NULL, &c); /* [2, classes] */
            assert_non_null(y);
            nout = vnm_numel(y);
            out[full] = tu_host(ctx, y);
            assert_int_equal(vnm_backward(ctx, vnm_sum(ctx, vnm_mul(ctx, y, y), VNM_ALL_DIMS,
                                                       false)),
                             VNM_OK);
            grads[full] = calloc((size_t)np, sizeof *grads[full]);
            for (int i = 0; i < np; i++) {
                vnm_tensor *p = vnm_vit_param_at(m, i).tensor;
                if (p->grad) grads[full][i] = tu_host(ctx, p->grad);
            }
        }
        vnm_ctx_set_linear_hook(ctx, NULL, NULL);
        vnm_ctx_set_training(ctx, false);
        if (rel_err(out[0], out[1], nout) > 1e-5) fail_msg("logits differ");
        for (int i = 0; i < np; i++) {
            vnm_vit_param p = vnm_vit_param_at(m, i);
            assert_true((grads[0][i] == NULL) == (grads[1][i] == NULL));
            if (grads[0][i] && rel_err(grads[0][i], grads[1][i], vnm_numel(p.tensor)) > 1e-4)
                fail_msg("gradient of '%s' differs: %g", p.name,
                         rel_err(grads[0][i], grads[1][i], vnm_numel(p.tensor)));
            free(grads[0][i]);
            free(grads[1][i]);
        }
        free(grads[0]);
        free(grads[1]);
        free(out[0]);
        free(out[1]);
        free(images);
        vnm_vit_free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_last_block_prefix_rows, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_timm_conformance, tu_setup, tu_teardown),
        cmocka_unit_test(test_timm_conformance_cuda),
        cmocka_unit_test_setup_teardown(test_timm_conformance_distilled, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_timm_conformance_deit_tiny, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_presets, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_init, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sparse_linear_swap, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("vit", tests, NULL, NULL);
}
