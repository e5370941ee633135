/* tests/test_optim.c — optim/: SGD and AdamW trajectories with gradient clipping, per-group weight
 * decay and lr scales, and a warm-up + cosine schedule, against torch.optim fixtures written by
 * tools/gen_optim_fixture.py; clipping; the schedules at hand-computed steps; the decay rule;
 * optimiser state round trips (bit-identical resume) and mismatches; argument checks of the fused
 * update kernels. Fixtures are read from $VNM_TEST_DATA (tests/meson.build sets it). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "test_util.h"

/* ---- fixtures (format documented in tools/gen_optim_fixture.py) ---- */

enum { FX_MAX_PARAMS = 4, FX_MAX_GROUPS = 4 };

typedef struct {
    char name[64];
    int group, ndim;
    int64_t shape[VNM_MAX_DIMS];
    int64_t numel, offset; /* offset: where the param starts in a step's concatenated values */
} fx_param;

typedef struct {
    char kind[16];
    double lr, momentum, dampening, beta1, beta2, eps, max_norm;
    bool nesterov;
    vnm_schedule sched;
    int n_groups, n_params, n_steps;
    double weight_decay[FX_MAX_GROUPS], lr_scale[FX_MAX_GROUPS];
    fx_param p[FX_MAX_PARAMS];
    int64_t total;                    /* elements of all parameters */
    float *init;                      /* [total] */
    double *step_lr, *step_norm;      /* [n_steps] */
    int *step_clipped;                /* [n_steps] */
    float *grad, *after;              /* [n_steps, total]: raw gradients, params after the step */
    char *text;                       /* the file, cut into words in place */
} fixture;

static int fx_count(tu_words *r, const char *key, int max)
{
    double v = tu_key_number(r, key);
    if (v < 0 || v > max || v != (int)v)
        fail_msg("%s: %s %g, expected 0..%d", r->file, key, v, max);
    return (int)v;
}

static void fx_values(tu_words *r, const char *key, const fx_param *p, float *dst)
{
    tu_expect_word(r, key);
    tu_expect_word(r, p->name);
    for (int64_t i = 0; i < p->numel; i++) dst[p->offset + i] = (float)tu_number(r);
}

static void fx_load(fixture *fx, const char *file)
{
    const char *dir = getenv("VNM_TEST_DATA");
    if (!dir || !*dir)
        fail_msg("VNM_TEST_DATA is not set: run through `meson test`, or set it to tests/fixtures");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open fixture %s (regenerate with python3 tools/gen_optim_fixture.py)",
                 path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    memset(fx, 0, sizeof *fx);
    fx->text = malloc((size_t)size + 1);
    assert_non_null(fx->text);
    assert_int_equal(fread(fx->text, 1, (size_t)size, f), (size_t)size);
    fx->text[size] = '\0';
    fclose(f);

    tu_words r = {fx->text, file};
    tu_expect_word(&r, "vnm-optim-fixture");
    tu_expect_word(&r, "1");
    tu_expect_word(&r, "kind");
    snprintf(fx->kind, sizeof fx->kind, "%s", tu_word(&r));
    fx->lr = tu_key_number(&r, "lr");
    fx->momentum = tu_key_number(&r, "momentum");
    fx->dampening = tu_key_number(&r, "dampening");
    fx->nesterov = tu_key_number(&r, "nesterov") != 0;
    fx->beta1 = tu_key_number(&r, "beta1");
    fx->beta2 = tu_key_number(&r, "beta2");
    fx->eps = tu_key_number(&r, "eps");
    fx->max_norm = tu_key_number(&r, "max_norm");
    tu_expect_word(&r, "schedule");
    tu_expect_word(&r, "cosine");
    fx->sched.kind = VNM_SCHEDULE_COSINE;
    fx->sched.base_lr = fx->lr;
    fx->sched.warmup_steps = (int64_t)tu_key_number(&r, "warmup_steps");
    fx->sched.warmup_start_lr = tu_key_number(&r, "warmup_start_lr");
    fx->sched.total_steps = (int64_t)tu_key_number(&r, "total_steps");
    fx->sched.min_lr = tu_key_number(&r, "min_lr");
    fx->n_groups = fx_count(&r, "groups", FX_MAX_GROUPS);
    for (int g = 0; g < fx->n_groups; g++) {
        if (tu_key_number(&r, "group") != g) fail_msg("%s: groups out of order", file);
        fx->weight_decay[g] = tu_key_number(&r, "weight_decay");
        fx->lr_scale[g] = tu_key_number(&r, "lr_scale");
    }
    fx->n_params = fx_count(&r, "params", FX_MAX_PARAMS);
    for (int i = 0; i < fx->n_params; i++) {
        fx_param *p = &fx->p[i];
        tu_expect_word(&r, "param");
        snprintf(p->name, sizeof p->name, "%s", tu_word(&r));
        p->group = (int)tu_key_number(&r, "group");
        p->ndim = fx_count(&r, "shape", VNM_MAX_DIMS);
        p->numel = 1;
        for (int d = 0; d < p->ndim; d++) p->numel *= p->shape[d] = (int64_t)tu_number(&r);
        p->offset = fx->total;
        fx->total += p->numel;
    }
    fx->init = malloc((size_t)fx->total * sizeof *fx->init);
    for (int i = 0; i < fx->n_params; i++) fx_values(&r, "init", &fx->p[i], fx->init);
    fx->n_steps = fx_count(&r, "steps", 1000);
    size_t n = (size_t)fx->n_steps;
    fx->step_lr = malloc(n * sizeof *fx->step_lr);
    fx->step_norm = malloc(n * sizeof *fx->step_norm);
    fx->step_clipped = malloc(n * sizeof *fx->step_clipped);
    fx->grad = malloc(n * (size_t)fx->total * sizeof *fx->grad);
    fx->after = malloc(n * (size_t)fx->total * sizeof *fx->after);
    for (int k = 0; k < fx->n_steps; k++) {
        if (tu_key_number(&r, "step") != k) fail_msg("%s: steps out of order", file);
        fx->step_lr[k] = tu_key_number(&r, "lr");
        fx->step_norm[k] = tu_key_number(&r, "total_norm");
        fx->step_clipped[k] = (int)tu_key_number(&r, "clipped");
        for (int i = 0; i < fx->n_params; i++)
            fx_values(&r, "grad", &fx->p[i], fx->grad + (size_t)k * (size_t)fx->total);
        for (int i = 0; i < fx->n_params; i++)
            fx_values(&r, "after", &fx->p[i], fx->after + (size_t)k * (size_t)fx->total);
    }
}

static void fx_free(fixture *fx)
{
    free(fx->text);
    free(fx->init);
    free(fx->step_lr);
    free(fx->step_norm);
    free(fx->step_clipped);
    free(fx->grad);
    free(fx->after);
}

/* The fixture's parameters, named and initialised, with gradient buffers. */
static void fx_params(vnm_ctx *ctx, const fixture *fx, vnm_tensor **params)
{
    for (int i = 0; i < fx->n_params; i++) {
        const fx_param *p = &fx->p[i];
        params[i] = vnm_param_new(ctx, VNM_DTYPE_F32, p->ndim, p->shape, p->name);
        assert_non_null(params[i]);
        assert_int_equal(vnm_tensor_from_host(ctx, params[i], fx->init + p->offset), VNM_OK);
        assert_non_null(vnm_grad_buffer(ctx, params[i]));
    }
}

static void fx_set_grads(vnm_ctx *ctx, const fixture *fx, vnm_tensor **params, int k)
{
    const float *g = fx->grad + (size_t)k * (size_t)fx->total;
    for (int i = 0; i < fx->n_params; i++)
        assert_int_equal(vnm_tensor_from_host(ctx, params[i]->grad, g + fx->p[i].offset), VNM_OK);
}

static vnm_optim *fx_optim(vnm_ctx *ctx, const fixture *fx, vnm_tensor **params)
{
    vnm_optim_config cfg = {
        .kind = strcmp(fx->kind, "adamw") == 0 ? VNM_OPTIM_ADAMW : VNM_OPTIM_SGD,
        .lr = fx->lr, .momentum = fx->momentum, .dampening = fx->dampening,
        .nesterov = fx->nesterov, .beta1 = fx->beta1, .beta2 = fx->beta2, .eps = fx->eps,
    };
    vnm_optim *opt = vnm_optim_create(ctx, &cfg);
    assert_non_null(opt);
    for (int g = 0; g < fx->n_groups; g++) {
        vnm_tensor *members[FX_MAX_PARAMS];
        int n = 0;
        for (int i = 0; i < fx->n_params; i++)
            if (fx->p[i].group == g) members[n++] = params[i];
        assert_int_equal(vnm_optim_add_group(opt, members, n, fx->weight_decay[g],
                                             fx->lr_scale[g]), g);
    }
    return opt;
}

static void assert_rel(double got, double want, double rtol, const char *what)
{
    if (!(fabs(got - want) <= rtol * fabs(want)))
        fail_msg("%s: got %.17g, want %.17g (rel err %.3g > %.3g)", what, got, want,
                 fabs(got - want) / fabs(want), rtol);
}

/* Replays a fixture: per step, its raw gradients, clip_grad_norm (the returned total against
 * torch's), the lr from our schedule (against the script's), one step, and every parameter
 * against torch's.
 *
 * With exact, the gradients are instead clipped with torch's own total norm (the same f32
 * coefficient formula) and the parameters must be bit-identical: the SGD kernel reproduces
 * torch's operations, fused multiply-adds included. That holds for fixtures written by torch's
 * FMA kernels (x86 AVX2/AVX-512, as these were); AdamW cannot be exact through the backend's f32
 * scalars (see autograd/cpu/optim.c), so it runs with tolerances only.
 *
 * Tolerances otherwise: torch's total norm is an f32 reduction, ours a double sum, 1e-6 relative
 * (measured: up to 1 ulp). That ulp changes the clip coefficient, hence some clipped gradients
 * by an ulp, which the steps carry along: measured worst 15 ulp (1.4e-6 relative) on an element of
 * 2.6e-3, 6e-8 absolute overall. So 1e-6 relative plus 1e-7 absolute, about an ulp of the O(1)
 * values the small elements are differences of. AdamW adds the f32 rounding of its scalars (0.9f
 * is not 0.9): measured 1 ulp. The schedule is the script's double formula: 1e-12. */
static void run_fixture(vnm_ctx *ctx, const char *file, bool exact)
{
    fixture fx;
    fx_load(&fx, file);
    vnm_tensor *params[FX_MAX_PARAMS];
    fx_params(ctx, &fx, params);
    vnm_optim *opt = fx_optim(ctx, &fx, params);
    int clipped = 0;
    for (int k = 0; k < fx.n_steps; k++) {
        char what[160];
        fx_set_grads(ctx, &fx, params, k);
        if (exact) {
            float coef = (1.0f / ((float)fx.step_norm[k] + 1e-6f)) * (float)fx.max_norm;
            for (int i = 0; i < fx.n_params && coef < 1.0f; i++)
                assert_int_equal(vnm_scale_inplace(ctx, params[i]->grad, coef), VNM_OK);
        } else {
            double total = vnm_optim_clip_grad_norm(opt, fx.max_norm);
            snprintf(what, sizeof what, "%s step %d total norm", file, k);
            assert_rel(total, fx.step_norm[k], 1e-6, what);
        }
        clipped += fx.step_clipped[k];
        double lr = vnm_schedule_lr(&fx.sched, vnm_optim_steps(opt));
        snprintf(what, sizeof what, "%s step %d lr", file, k);
        assert_rel(lr, fx.step_lr[k], 1e-12, what);
        vnm_optim_set_lr(opt, lr);
        assert_int_equal(vnm_optim_step(opt), VNM_OK);
        for (int i = 0; i < fx.n_params; i++) {
            const fx_param *p = &fx.p[i];
            const float *want_f = fx.after + (size_t)k * (size_t)fx.total + p->offset;
            float *got = tu_host(ctx, params[i]);
            snprintf(what, sizeof what, "%s step %d %s", file, k, p->name);
            if (exact) {
                if (memcmp(got, want_f, (size_t)p->numel * sizeof *got) != 0)
                    fail_msg("%s: not bit-identical to torch", what);
            } else {
                double want[64];
                assert_true(p->numel <= 64);
                for (int64_t e = 0; e < p->numel; e++) want[e] = want_f[e];
                tu_assert_close(got, want, p->numel, 1e-7, 1e-6, what);
            }
            free(got);
        }
    }
    /* the fixture must exercise both sides of the clipping threshold */
    assert_true(clipped > 0 && clipped < fx.n_steps);
    assert_int_equal(vnm_optim_steps(opt), fx.n_steps);
    vnm_optim_destroy(opt);
    fx_free(&fx);
}

static void test_sgd_nesterov_matches_torch(void **state)
{
    run_fixture(*state, "optim_sgd_nesterov.txt", false);
}

static void test_sgd_dampening_matches_torch(void **state)
{
    run_fixture(*state, "optim_sgd_dampening.txt", false);
}

static void test_adamw_matches_torch(void **state)
{
    run_fixture(*state, "optim_adamw.txt", false);
}

static void test_sgd_bit_identical_given_torch_norm(void **state)
{
    run_fixture(*state, "optim_sgd_nesterov.txt", true);
    run_fixture(*state, "optim_sgd_dampening.txt", true);
}

static void test_adamw_bit_identical_given_torch_norm(void **state)
{
    run_fixture(*state, "optim_adamw.txt", true);
}

/* vnm_clip_grad_norm on its own: returns torch's total, scales by max_norm / (total + 1e-6) when
 * that is below 1 and leaves the gradients bit-identical otherwise. */
static void test_clip_grad_norm_matches_torch(void **state)
{
    vnm_ctx *ctx = *state;
    fixture fx;
    fx_load(&fx, "optim_sgd_nesterov.txt");
    vnm_tensor *params[FX_MAX_PARAMS];
    fx_params(ctx, &fx, params);
    for (int k = 0; k < fx.n_steps; k++) {
        fx_set_grads(ctx, &fx, params, k);
        double total = vnm_clip_grad_norm(ctx, params, fx.n_params, fx.max_norm, 2.0);
        char what[96];
        snprintf(what, sizeof what, "step %d total norm", k);
        assert_rel(total, fx.step_norm[k], 1e-6, what);
        double coef = fx.max_norm / (fx.step_norm[k] + 1e-6);
        for (int i = 0; i < fx.n_params; i++) {
            const float *raw = fx.grad + (size_t)k * (size_t)fx.total + fx.p[i].offset;
            float *got = tu_host(ctx, params[i]->grad);
            if (!fx.step_clipped[k]) {
                assert_memory_equal(got, raw, (size_t)fx.p[i].numel * sizeof *got);
            } else {
                double want[64];
                for (int64_t e = 0; e < fx.p[i].numel; e++) want[e] = raw[e] * coef;
                snprintf(what, sizeof what, "step %d clipped grad %s", k, fx.p[i].name);
                tu_assert_close(got, want, fx.p[i].numel, 1e-9, 1e-6, what);
            }
            free(got);
        }
    }
    fx_free(&fx);
}

static void test_clip_grad_norm_nonfinite_and_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *a = tu_param(ctx, 2, VNM_SHAPE(3, 5), -1, 1);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(4), -1, 1);
    vnm_tensor *no_grad = tu_param(ctx, 1, VNM_SHAPE(4), -1, 1);
    vnm_tensor *params[3] = {a, b, no_grad};
    vnm_rng_uniform(ctx, vnm_grad_buffer(ctx, a), -3, 3);
    vnm_rng_uniform(ctx, vnm_grad_buffer(ctx, b), -3, 3);
    /* a parameter without a gradient buffer is skipped, as torch skips grad None */
    float *ga = tu_host(ctx, a->grad), *gb = tu_host(ctx, b->grad);
    double want = 0;
    for (int i = 0; i < 15; i++) want += (double)ga[i] * ga[i];
    for (int i = 0; i < 4; i++) want += (double)gb[i] * gb[i];
    assert_rel(vnm_clip_grad_norm(ctx, params, 3, 1e6, 2.0), sqrt(want), 1e-12, "total");
    assert_null(no_grad->grad);

    gb[1] = NAN;
    assert_int_equal(vnm_tensor_from_host(ctx, b->grad, gb), VNM_OK);
    assert_true(isnan(vnm_clip_grad_norm(ctx, params, 3, 1.0, 2.0)));
    tu_assert_error(ctx, "total gradient norm is nan");
    float *after = tu_host(ctx, a->grad); /* left unscaled */
    assert_memory_equal(after, ga, 15 * sizeof *after);

    assert_true(isnan(vnm_clip_grad_norm(ctx, params, 3, 1.0, 1.0)));
    tu_assert_error(ctx, "only norm_type 2");
    assert_true(isnan(vnm_clip_grad_norm(ctx, params, 3, 0.0, 2.0)));
    tu_assert_error(ctx, "max_norm must be positive");
    vnm_tensor *with_null[2] = {a, NULL};
    assert_true(isnan(vnm_clip_grad_norm(ctx, with_null, 2, 1.0, 2.0)));
    tu_assert_error(ctx, "parameter 1 is NULL");
    free(ga);
    free(gb);
    free(after);
}

/* ---- schedules, at steps computed by hand ---- */

static void assert_lr(const vnm_schedule *s, int64_t step, double want)
{
    char what[64];
    snprintf(what, sizeof what, "%s lr at step %lld", vnm_schedule_kind_name(s->kind),
             (long long)step);
    if (want == 0.0)
        assert_true(vnm_schedule_lr(s, step) == 0.0);
    else
        assert_rel(vnm_schedule_lr(s, step), want, 1e-12, what);
}

static void test_schedule_constant_with_warmup(void **state)
{
    (void)state;
    vnm_schedule s = {.kind = VNM_SCHEDULE_CONSTANT, .base_lr = 1e-3, .warmup_steps = 4,
                      .warmup_start_lr = 1e-4};
    assert_lr(&s, 0, 1e-4);
    assert_lr(&s, 1, 1e-4 + 0.25 * 9e-4);
    assert_lr(&s, 3, 1e-4 + 0.75 * 9e-4);
    assert_lr(&s, 4, 1e-3);
    assert_lr(&s, 1000000, 1e-3);
    s.warmup_steps = 0;
    assert_lr(&s, 0, 1e-3);
}

static void test_schedule_cosine(void **state)
{
    (void)state;
    /* warm-up 10 steps from 0, cosine over steps 10..110 from 1.0 down to 0.1 */
    vnm_schedule s = {.kind = VNM_SCHEDULE_COSINE, .base_lr = 1.0, .warmup_steps = 10,
                      .warmup_start_lr = 0.0, .total_steps = 110, .min_lr = 0.1};
    assert_lr(&s, 0, 0.0);
    assert_lr(&s, 5, 0.5);
    assert_lr(&s, 10, 1.0);                             /* warm-up end = base */
    assert_lr(&s, 35, 0.1 + 0.45 * (1 + sqrt(0.5)));    /* a quarter: cos(π/4) */
    assert_lr(&s, 60, 0.55);                            /* midpoint */
    assert_lr(&s, 85, 0.1 + 0.45 * (1 - sqrt(0.5)));    /* three quarters */
    assert_lr(&s, 110, 0.1);                            /* floor */
    assert_lr(&s, 5000, 0.1);
    assert_lr(&s, 109, 0.1 + 0.45 * (1 - cos(M_PI / 100))); /* cos(0.99π) = -cos(0.01π) */
}

static void test_schedule_step(void **state)
{
    (void)state;
    vnm_schedule s = {.kind = VNM_SCHEDULE_STEP, .base_lr = 0.8, .warmup_steps = 2,
                      .warmup_start_lr = 0.2, .step_size = 30, .gamma = 0.5};
    assert_lr(&s, 1, 0.5);
    assert_lr(&s, 2, 0.8);
    assert_lr(&s, 31, 0.8);  /* last step of the first interval */
    assert_lr(&s, 32, 0.4);  /* first decay */
    assert_lr(&s, 61, 0.4);
    assert_lr(&s, 62, 0.2);
    assert_lr(&s, 92, 0.1);
}

static void test_schedule_linear(void **state)
{
    (void)state;
    vnm_schedule s = {.kind = VNM_SCHEDULE_LINEAR, .base_lr = 2.0, .warmup_steps = 0,
                      .total_steps = 100, .min_lr = 0.0};
    assert_lr(&s, 0, 2.0);
    assert_lr(&s, 25, 1.5);
    assert_lr(&s, 50, 1.0);
    assert_lr(&s, 99, 0.02);
    assert_lr(&s, 100, 0.0);
    assert_lr(&s, 101, 0.0);
    s.warmup_steps = 20;
    s.min_lr = 0.4;
    assert_lr(&s, 10, 1.0);
    assert_lr(&s, 60, 1.2); /* halfway through 20..100 */
}

static void test_schedule_parse_and_validate(void **state)
{
    (void)state;
    const char *names[] = {"constant", "cosine", "step", "linear"};
    for (int k = 0; k < 4; k++) {
        vnm_schedule_kind kind = VNM_SCHEDULE_CONSTANT;
        assert_int_equal(vnm_schedule_parse_kind(names[k], &kind, NULL, 0), VNM_OK);
        assert_int_equal(kind, k);
        assert_string_equal(vnm_schedule_kind_name(kind), names[k]);
    }
    char err[200] = "";
    vnm_schedule_kind kind = VNM_SCHEDULE_STEP;
    assert_int_equal(vnm_schedule_parse_kind("cosin", &kind, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "unknown schedule 'cosin'"));
    assert_non_null(strstr(err, "constant, cosine, step, linear"));
    assert_int_equal(kind, VNM_SCHEDULE_STEP); /* untouched */
    assert_int_equal(vnm_schedule_parse_kind("Cosine", &kind, NULL, 0), VNM_ERR_INPUT);
    assert_int_equal(vnm_schedule_parse_kind("", &kind, NULL, 0), VNM_ERR_INPUT);

    vnm_schedule s = {.kind = VNM_SCHEDULE_COSINE, .base_lr = 1.0, .warmup_steps = 10,
                      .total_steps = 10};
    assert_int_equal(vnm_schedule_validate(&s, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "total_steps (10) must exceed warmup_steps (10)"));
    s.total_steps = 11;
    assert_int_equal(vnm_schedule_validate(&s, err, sizeof err), VNM_OK);
    s.base_lr = -1.0;
    assert_int_equal(vnm_schedule_validate(&s, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "must be >= 0"));
    vnm_schedule st = {.kind = VNM_SCHEDULE_STEP, .base_lr = 1.0, .gamma = 0.5};
    assert_int_equal(vnm_schedule_validate(&st, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "step_size (0)"));
}

/* ---- the decay rule ---- */

static void test_decay_rule_and_groups(void **state)
{
    vnm_ctx *ctx = *state;
    struct {
        const char *name;
        int ndim;
        const int64_t *shape;
        bool no_decay;
    } cases[] = {
        {"blocks.0.attn.qkv.weight", 2, VNM_SHAPE(6, 4), false},
        {"blocks.0.attn.qkv.bias", 1, VNM_SHAPE(6), true},        /* ndim 1 */
        {"blocks.0.norm1.weight", 1, VNM_SHAPE(4), true},         /* ndim 1 */
        {"pos_embed", 3, VNM_SHAPE(1, 5, 4), true},               /* glob */
        {"cls_token", 3, VNM_SHAPE(1, 1, 4), true},               /* glob */
        {"model.embed_tokens.weight", 2, VNM_SHAPE(10, 4), true}, /* glob */
        {"pos_embed.proj.weight", 2, VNM_SHAPE(4, 4), false},     /* glob anchored at the end */
        {"head.weight", 2, VNM_SHAPE(3, 4), false},
    };
    enum { N = sizeof cases / sizeof *cases };
    vnm_tensor *params[N + 1];
    for (int i = 0; i < N; i++) {
        params[i] = vnm_param_new(ctx, VNM_DTYPE_F32, cases[i].ndim, cases[i].shape,
                                  cases[i].name);
        if (vnm_optim_is_no_decay(params[i], NULL, 0) != cases[i].no_decay)
            fail_msg("%s: no_decay should be %d", cases[i].name, cases[i].no_decay);
    }
    params[N] = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(4, 4), "frozen.weight");

    const char *custom[] = {"head.*"}; /* replaces the defaults */
    assert_true(vnm_optim_is_no_decay(params[7], custom, 1));
    assert_false(vnm_optim_is_no_decay(params[3], custom, 1));

    vnm_optim_config cfg = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    cfg.weight_decay = 0.05;
    vnm_optim *opt = vnm_optim_create(ctx, &cfg);
    assert_int_equal(vnm_optim_add_decay_groups(opt, params, N + 1, NULL, 0), VNM_OK);
    assert_int_equal(vnm_optim_num_params(opt), N); /* the frozen buffer is left out */
    /* group 0 holds the no-decay params, group 1 the rest, each in the given order */
    const int want_order[N] = {1, 2, 3, 4, 5, 0, 6, 7};
    for (int i = 0; i < N; i++) {
        assert_ptr_equal(vnm_optim_param(opt, i), params[want_order[i]]);
        assert_int_equal(vnm_optim_param_group(opt, i), cases[want_order[i]].no_decay ? 0 : 1);
    }
    /* the groups' weight decays act: a zero gradient leaves no-decay params unchanged and shrinks
     * the others by 1 - lr·wd */
    for (int i = 0; i < N; i++) {
        vnm_tensor_fill(ctx, params[i], 1.0f);
        vnm_grad_buffer(ctx, params[i]);
    }
    assert_int_equal(vnm_optim_step(opt), VNM_OK);
    for (int i = 0; i < N; i++) {
        float want = cases[i].no_decay ? 1.0f : (float)(1.0 - cfg.lr * 0.05);
        assert_true(vnm_item(ctx, params[i]) == want);
    }
    /* adding a parameter twice is an error */
    assert_int_equal(vnm_optim_add_group(opt, params, 1, 0.0, 1.0), -1);
    tu_assert_error(ctx, "more than one parameter group");
    vnm_optim_destroy(opt);
}

/* ---- state: save, load, accessors ---- */

/* A small model for resume tests: gradients at step k depend on k only. */
enum { RT_PARAMS = 3 };

static void rt_params(vnm_ctx *ctx, vnm_tensor **p, const float *const *init)
{
    const char *names[RT_PARAMS] = {"fc.weight", "fc.bias", "norm.weight"};
    const int64_t *shapes[RT_PARAMS] = {VNM_SHAPE(9, 13), VNM_SHAPE(9), VNM_SHAPE(13)};
    const int ndims[RT_PARAMS] = {2, 1, 1};
    for (int i = 0; i < RT_PARAMS; i++) {
        p[i] = vnm_param_new(ctx, VNM_DTYPE_F32, ndims[i], shapes[i], names[i]);
        if (init)
            vnm_tensor_from_host(ctx, p[i], init[i]);
        else
            vnm_rng_uniform(ctx, p[i], -1, 1);
        vnm_grad_buffer(ctx, p[i]);
    }
}

static vnm_optim *rt_optim(vnm_ctx *ctx, vnm_optim_kind kind, vnm_tensor **p)
{
    vnm_optim_config cfg = vnm_optim_config_default(kind);
    cfg.lr = 0.05;
    cfg.momentum = 0.9;
    cfg.nesterov = true;
    cfg.weight_decay = 0.01;
    vnm_optim *opt = vnm_optim_create(ctx, &cfg);
    assert_non_null(opt);
    assert_int_equal(vnm_optim_add_decay_groups(opt, p, RT_PARAMS, NULL, 0), VNM_OK);
    return opt;
}

static void rt_steps(vnm_ctx *ctx, vnm_optim *opt, vnm_tensor **p, int n)
{
    vnm_schedule s = {.kind = VNM_SCHEDULE_COSINE, .base_lr = 0.05, .warmup_steps = 3,
                      .warmup_start_lr = 0.001, .total_steps = 20, .min_lr = 0.002};
    for (int i = 0; i < n; i++) {
        int64_t k = vnm_optim_steps(opt);
        vnm_ctx_rng_set(ctx, (vnm_rng_state){99, (uint64_t)k * 1000});
        for (int j = 0; j < RT_PARAMS; j++) vnm_rng_normal(ctx, p[j]->grad, 0, 0.3f);
        assert_false(isnan(vnm_optim_clip_grad_norm(opt, 1.0)));
        vnm_optim_set_lr(opt, vnm_schedule_lr(&s, k));
        assert_int_equal(vnm_optim_step(opt), VNM_OK);
    }
}

/* 20 uninterrupted steps against 10 steps, a restore into fresh parameters and a fresh optimiser,
 * and 10 more: bit-identical. restore is vnm_optim_save/load (bytes) or the accessors. */
static void check_resume(vnm_ctx *ctx, vnm_optim_kind kind, bool bytes)
{
    vnm_tensor *a[RT_PARAMS], *b[RT_PARAMS], *c[RT_PARAMS];
    rt_params(ctx, a, NULL);
    float *init[RT_PARAMS];
    for (int i = 0; i < RT_PARAMS; i++) init[i] = tu_host(ctx, a[i]);
    rt_params(ctx, b, (const float *const *)init);
    vnm_optim *oa = rt_optim(ctx, kind, a), *ob = rt_optim(ctx, kind, b);
    rt_steps(ctx, oa, a, 20);
    rt_steps(ctx, ob, b, 10);

    float *mid[RT_PARAMS];
    for (int i = 0; i < RT_PARAMS; i++) mid[i] = tu_host(ctx, b[i]);
    rt_params(ctx, c, (const float *const *)mid);
    vnm_optim *oc = rt_optim(ctx, kind, c);
    if (bytes) {
        size_t len = vnm_optim_state_bytes(ob);
        assert_int_equal(len, vnm_optim_state_bytes(oc));
        unsigned char *buf = malloc(len);
        assert_int_equal(vnm_optim_save(ob, buf, len), VNM_OK);
        assert_int_equal(vnm_optim_load(oc, buf, len), VNM_OK);
        free(buf);
    } else {
        assert_int_equal(vnm_optim_state_count(oc), kind == VNM_OPTIM_ADAMW ? 2 : 1);
        for (int i = 0; i < vnm_optim_num_params(ob); i++) {
            for (int k = 0; k < vnm_optim_state_count(ob); k++) {
                float *h = tu_host(ctx, vnm_optim_state(ob, i, k));
                assert_int_equal(vnm_tensor_from_host(ctx, vnm_optim_state(oc, i, k), h), VNM_OK);
                free(h);
            }
            vnm_optim_set_param_steps(oc, i, vnm_optim_param_steps(ob, i));
        }
        vnm_optim_set_steps(oc, vnm_optim_steps(ob));
    }
    assert_int_equal(vnm_optim_steps(oc), 10);
    rt_steps(ctx, oc, c, 10);
    for (int i = 0; i < RT_PARAMS; i++) {
        float *ha = tu_host(ctx, a[i]), *hc = tu_host(ctx, c[i]), *hb = tu_host(ctx, b[i]);
        assert_memory_equal(ha, hc, (size_t)vnm_numel(a[i]) * sizeof *ha);
        assert_memory_not_equal(ha, hb, (size_t)vnm_numel(a[i]) * sizeof *ha); /* it moved */
        free(ha);
        free(hb);
        free(hc);
        free(init[i]);
        free(mid[i]);
    }
    vnm_optim_destroy(oa);
    vnm_optim_destroy(ob);
    vnm_optim_destroy(oc);
}

static void test_resume_bytes_sgd_bit_identical(void **state)
{
    check_resume(*state, VNM_OPTIM_SGD, true);
}

static void test_resume_bytes_adamw_bit_identical(void **state)
{
    check_resume(*state, VNM_OPTIM_ADAMW, true);
}

static void test_resume_accessors_adamw_bit_identical(void **state)
{
    vnm_ctx *ctx = *state;
    check_resume(ctx, VNM_OPTIM_ADAMW, false);
    vnm_tensor *p[RT_PARAMS];
    rt_params(ctx, p, NULL);
    vnm_optim *opt = rt_optim(ctx, VNM_OPTIM_ADAMW, p);
    assert_string_equal(vnm_optim_state_name(opt, 0), "m");
    assert_string_equal(vnm_optim_state_name(opt, 1), "v");
    assert_true(vnm_same_shape(vnm_optim_state(opt, 2, 1), vnm_optim_param(opt, 2)));
    vnm_optim_destroy(opt);
}

static void test_load_mismatch_is_an_error(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *p[RT_PARAMS];
    rt_params(ctx, p, NULL);
    vnm_optim *src = rt_optim(ctx, VNM_OPTIM_ADAMW, p);
    rt_steps(ctx, src, p, 2);
    size_t len = vnm_optim_state_bytes(src);
    unsigned char *buf = malloc(len);
    assert_int_equal(vnm_optim_save(src, buf, len), VNM_OK);
    assert_int_equal(vnm_optim_save(src, buf, len - 1), VNM_ERR_INPUT);
    tu_assert_error(ctx, "cannot hold");

    /* a different shape under the same name */
    vnm_tensor *q[RT_PARAMS];
    rt_params(ctx, q, NULL);
    q[0] = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(13, 9), "fc.weight");
    vnm_optim *dst = rt_optim(ctx, VNM_OPTIM_ADAMW, q);
    float *m_before = tu_host(ctx, vnm_optim_state(dst, 0, 0));
    assert_int_equal(vnm_optim_load(dst, buf, len), VNM_ERR_INPUT);
    tu_assert_error(ctx, "'fc.weight' has shape [9, 13] in the buffer but [13, 9] f32");
    /* nothing was loaded, not even the parameters before the mismatch */
    assert_int_equal(vnm_optim_steps(dst), 0);
    assert_int_equal(vnm_optim_param_steps(dst, 0), 0);
    float *m_after = tu_host(ctx, vnm_optim_state(dst, 0, 0));
    assert_memory_equal(m_before, m_after, 9 * sizeof *m_after); /* fc.bias comes first */
    vnm_optim_destroy(dst);

    /* a different name */
    rt_params(ctx, q, NULL);
    q[1] = vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(9), "fc.b");
    dst = rt_optim(ctx, VNM_OPTIM_ADAMW, q);
    assert_int_equal(vnm_optim_load(dst, buf, len), VNM_ERR_INPUT);
    tu_assert_error(ctx, "is 'fc.bias' in the buffer but 'fc.b'");
    vnm_optim_destroy(dst);

    /* fewer parameters, another optimiser kind, a truncated or foreign buffer */
    rt_params(ctx, q, NULL);
    vnm_optim_config cfg = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    dst = vnm_optim_create(ctx, &cfg);
    assert_int_equal(vnm_optim_add_group(dst, q, 2, 0.0, 1.0), 0);
    assert_int_equal(vnm_optim_load(dst, buf, len), VNM_ERR_INPUT);
    tu_assert_error(ctx, "holds 3 parameters, the optimiser has 2");
    vnm_optim_destroy(dst);
    dst = rt_optim(ctx, VNM_OPTIM_SGD, q);
    assert_int_equal(vnm_optim_load(dst, buf, len), VNM_ERR_INPUT);
    tu_assert_error(ctx, "holds adamw state");
    vnm_optim_destroy(dst);
    dst = rt_optim(ctx, VNM_OPTIM_ADAMW, q);
    assert_int_equal(vnm_optim_load(dst, buf, len - 3), VNM_ERR_INPUT);
    tu_assert_error(ctx, "the buffer ends inside the state of parameter 2");
    assert_int_equal(vnm_optim_load(dst, buf, 10), VNM_ERR_INPUT);
    tu_assert_error(ctx, "not an optimiser state");
    buf[8] = 7;
    assert_int_equal(vnm_optim_load(dst, buf, len), VNM_ERR_INPUT);
    tu_assert_error(ctx, "format version 7");
    vnm_optim_destroy(dst);
    vnm_optim_destroy(src);
    free(buf);
    free(m_before);
    free(m_after);
}

/* ---- optimiser set-up and steps ---- */

static void test_optim_config_and_group_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_optim_config c = vnm_optim_config_default(VNM_OPTIM_SGD);
    c.lr = -0.1;
    assert_null(vnm_optim_create(ctx, &c));
    tu_assert_error(ctx, "invalid learning rate -0.1");
    c = vnm_optim_config_default(VNM_OPTIM_SGD);
    c.nesterov = true;
    c.momentum = 0.9;
    c.dampening = 0.1;
    assert_null(vnm_optim_create(ctx, &c));
    tu_assert_error(ctx, "Nesterov momentum requires a momentum and zero dampening");
    c = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    c.beta2 = 1.0;
    assert_null(vnm_optim_create(ctx, &c));
    tu_assert_error(ctx, "invalid betas (0.9, 1)");
    c = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    c.eps = NAN;
    assert_null(vnm_optim_create(ctx, &c));
    tu_assert_error(ctx, "invalid epsilon");

    c = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    vnm_optim *opt = vnm_optim_create(ctx, &c);
    assert_non_null(opt);
    vnm_tensor *frozen = vnm_buffer_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(3), "frozen");
    assert_int_equal(vnm_optim_add_group(opt, &frozen, 1, 0.0, 1.0), -1);
    tu_assert_error(ctx, "'frozen' [3] f32 must be a contiguous f32 tensor that requires grad");
    vnm_tensor *w = tu_param(ctx, 1, VNM_SHAPE(3), -1, 1);
    vnm_tensor *twice[2] = {w, w};
    assert_int_equal(vnm_optim_add_group(opt, twice, 2, 0.0, 1.0), -1);
    tu_assert_error(ctx, "more than one parameter group");
    assert_int_equal(vnm_optim_add_group(opt, &w, 1, -0.5, 1.0), -1);
    tu_assert_error(ctx, "weight_decay -0.5 and lr_scale 1 must both be >= 0");
    assert_int_equal(vnm_optim_num_params(opt), 0); /* failed adds leave nothing behind */
    vnm_optim_destroy(opt);
}

/* Parameters without a gradient buffer are skipped and keep their step count at 0; SGD without
 * momentum is p - lr·lr_scale·(g + wd·p), checked against double. */
static void test_step_skips_params_without_grad(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_optim_config c = vnm_optim_config_default(VNM_OPTIM_SGD);
    c.lr = 0.3;
    vnm_optim *opt = vnm_optim_create(ctx, &c);
    assert_int_equal(vnm_optim_state_count(opt), 0);
    vnm_tensor *p[2] = {tu_param(ctx, 2, VNM_SHAPE(5, 3), -1, 1),
                        tu_param(ctx, 1, VNM_SHAPE(4), -1, 1)};
    assert_int_equal(vnm_optim_add_group(opt, p, 2, 0.1, 0.5), 0);
    vnm_rng_uniform(ctx, vnm_grad_buffer(ctx, p[0]), -1, 1);
    float *p0 = tu_host(ctx, p[0]), *g0 = tu_host(ctx, p[0]->grad), *p1 = tu_host(ctx, p[1]);
    assert_int_equal(vnm_optim_step(opt), VNM_OK);
    double want[15];
    for (int i = 0; i < 15; i++) want[i] = p0[i] - 0.15 * (g0[i] + 0.1 * (double)p0[i]);
    float *got = tu_host(ctx, p[0]), *got1 = tu_host(ctx, p[1]);
    tu_assert_close(got, want, 15, 1e-7, 1e-6, "plain sgd");
    assert_memory_equal(got1, p1, 4 * sizeof *p1);
    assert_int_equal(vnm_optim_param_steps(opt, 0), 1);
    assert_int_equal(vnm_optim_param_steps(opt, 1), 0);
    assert_int_equal(vnm_optim_steps(opt), 1);
    vnm_optim_zero_grad(opt);
    float *g_after = tu_host(ctx, p[0]->grad);
    for (int i = 0; i < 15; i++) assert_true(g_after[i] == 0.0f);
    free(p0);
    free(g0);
    free(p1);
    free(got);
    free(got1);
    free(g_after);
    vnm_optim_destroy(opt);
}

/* ---- the fused update kernels ---- */

static void test_sum_squares_large(void **state)
{
    vnm_ctx *ctx = *state;
    /* above the parallel threshold and not a multiple of the block size */
    vnm_tensor *x = tu_param(ctx, 1, VNM_SHAPE(300007), -2, 2);
    float *h = tu_host(ctx, x);
    double want = 0;
    for (int i = 0; i < 300007; i++) want += (double)h[i] * h[i];
    assert_rel(vnm_sum_squares(ctx, x), want, 1e-12, "sum_squares");
    free(h);
}

static void test_update_kernels_reject_bad_arguments(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *p = tu_param(ctx, 2, VNM_SHAPE(4, 3), -1, 1);
    vnm_tensor *bad = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(3, 4), NULL);
    vnm_tensor *ok = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(4, 3), NULL);
    vnm_tensor *half = vnm_buffer_new(ctx, VNM_DTYPE_BF16, 2, VNM_SHAPE(4, 3), NULL);

    assert_int_equal(vnm_sgd_update(ctx, p, ok, 0.1f, 0.9f, 0, 0, false, true), VNM_ERR_INPUT);
    tu_assert_error(ctx, "sgd_update: parameter 'test' has no gradient");
    vnm_grad_buffer(ctx, p);
    assert_int_equal(vnm_sgd_update(ctx, p, bad, 0.1f, 0.9f, 0, 0, false, true), VNM_ERR_INPUT);
    tu_assert_error(ctx, "momentum buffer has shape [3, 4] f32, expected the parameter's [4, 3]");
    assert_int_equal(vnm_sgd_update(ctx, p, NULL, 0.1f, 0.9f, 0, 0, false, true), VNM_ERR_INPUT);
    tu_assert_error(ctx, "momentum buffer is missing");
    assert_int_equal(vnm_sgd_update(ctx, p, NULL, 0.1f, 0.0f, 0, 0, false, true), VNM_OK);

    assert_int_equal(vnm_adamw_update(ctx, p, bad, ok, 0.1f, 0.9f, 0.999f, 1e-8f, 0, 1),
                     VNM_ERR_INPUT);
    tu_assert_error(ctx, "adamw_update: first moment m has shape [3, 4]");
    assert_int_equal(vnm_adamw_update(ctx, p, ok, bad, 0.1f, 0.9f, 0.999f, 1e-8f, 0, 1),
                     VNM_ERR_INPUT);
    tu_assert_error(ctx, "second moment v has shape [3, 4]");
    assert_int_equal(vnm_adamw_update(ctx, p, ok, half, 0.1f, 0.9f, 0.999f, 1e-8f, 0, 1),
                     VNM_ERR_INPUT);
    tu_assert_error(ctx, "second moment v must be f32");
    assert_int_equal(vnm_adamw_update(ctx, p, ok, ok, 0.1f, 0.9f, 0.999f, 1e-8f, 0, 0),
                     VNM_ERR_INPUT);
    tu_assert_error(ctx, "step is 0, counted from 1");

    vnm_tensor *t = vnm_transpose(ctx, p, 0, 1);
    assert_int_equal(vnm_sgd_update(ctx, t, NULL, 0.1f, 0, 0, 0, false, true), VNM_ERR_INPUT);
    tu_assert_error(ctx, "parameter [3, 4] f32 must be contiguous");
    assert_true(isnan(vnm_sum_squares(ctx, half)));
    tu_assert_error(ctx, "sum_squares: input must be f32");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sgd_nesterov_matches_torch, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sgd_dampening_matches_torch, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_adamw_matches_torch, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sgd_bit_identical_given_torch_norm, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_adamw_bit_identical_given_torch_norm, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_clip_grad_norm_matches_torch, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_clip_grad_norm_nonfinite_and_errors, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_constant_with_warmup, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_cosine, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_step, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_linear, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_parse_and_validate, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_decay_rule_and_groups, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_resume_bytes_sgd_bit_identical, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_resume_bytes_adamw_bit_identical, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_resume_accessors_adamw_bit_identical, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_load_mismatch_is_an_error, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_optim_config_and_group_errors, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_step_skips_params_without_grad, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_sum_squares_large, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_update_kernels_reject_bad_arguments, tu_setup,
                                        tu_teardown),
    };
    return cmocka_run_group_tests_name("optim", tests, NULL, NULL);
}
