/* tests/test_lora.c — LoRA adapters (sparse/sparse.h, METHOD §6): PEFT's initialisation and scale,
 * the dense-mode branch against a plain-loop reference, merge / unmerge, the masked mode (adapter
 * product sampled at kept positions) against (W + s·B·A) ⊙ Mk computed densely, finite-difference
 * gradients of A and B in both modes and of the regulariser, re-pruning (merge, B reset, masks
 * shifted, mask from the merged weight, function changed only by the mask), bf16 bases, restore
 * of masks, and errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sparse/sparse.h"
#include "test_util.h"

static vnm_pattern pat(const char *text)
{
    vnm_pattern p;
    assert_int_equal(vnm_pattern_parse(text, &p, NULL, 0), VNM_OK);
    return p;
}

static vnm_lora_config cfg(int64_t r, double alpha, double dropout, bool rslora)
{
    return (vnm_lora_config){.r = r, .alpha = alpha, .dropout = dropout, .rslora = rslora};
}

/* A and B set to random values (B is zero after creation, which would hide half the products). */
static vnm_lora *random_lora(vnm_ctx *ctx, int64_t O, int64_t I, int64_t r, double dropout)
{
    vnm_lora_config c = cfg(r, 2.0 * (double)r, dropout, false);
    vnm_lora *l = vnm_lora_new(ctx, "layer", O, I, &c);
    assert_non_null(l);
    assert_int_equal(vnm_rng_uniform(ctx, l->A, -1, 1), VNM_OK);
    assert_int_equal(vnm_rng_uniform(ctx, l->B, -1, 1), VNM_OK);
    return l;
}

/* ref[O][I] = W + s·B·A in double. */
static double *ref_effective(vnm_ctx *ctx, const vnm_lora *l, const float *W)
{
    float *A = tu_host(ctx, l->A), *B = tu_host(ctx, l->B);
    double *E = malloc((size_t)(l->O * l->I) * sizeof *E);
    for (int64_t o = 0; o < l->O; o++)
        for (int64_t i = 0; i < l->I; i++) {
            double acc = 0;
            for (int64_t k = 0; k < l->r; k++) acc += (double)B[o * l->r + k] * A[k * l->I + i];
            E[o * l->I + i] = W[o * l->I + i] + l->scale * acc;
        }
    free(A);
    free(B);
    return E;
}

/* y[T][O] = x·Eᵀ + b in double. */
static double *ref_linear(const float *x, const double *E, const float *b, int64_t T, int64_t O,
                          int64_t I)
{
    double *y = malloc((size_t)(T * O) * sizeof *y);
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < O; o++) {
            double acc = b ? b[o] : 0.0;
            for (int64_t i = 0; i < I; i++) acc += (double)x[t * I + i] * E[o * I + i];
            y[t * O + o] = acc;
        }
    return y;
}

/* The V:N:M magnitude mask of random scores. */
static uint8_t *random_mask(vnm_ctx *ctx, vnm_pattern p, int64_t O, int64_t I)
{
    vnm_tensor *s = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(O, I));
    vnm_rng_uniform(ctx, s, 0, 1);
    float *S = tu_host(ctx, s);
    uint8_t *m = malloc((size_t)(O * I));
    char err[256];
    assert_int_equal(vnm_mask_select(p, VNM_SELECT_L1, S, O, I, m, err, sizeof err), VNM_OK);
    free(S);
    return m;
}

static void test_init_and_scale(void **state)
{
    vnm_ctx *ctx = *state;
    assert_true(fabsf(vnm_lora_scale(16, 32, false) - 2.0f) < 1e-7f);
    assert_true(fabsf(vnm_lora_scale(16, 32, true) - 8.0f) < 1e-7f);
    vnm_lora_config c = cfg(8, 16, 0, false);
    vnm_lora *l = vnm_lora_new(ctx, "model.layers.0.self_attn.q_proj", 24, 100, &c);
    assert_non_null(l);
    assert_string_equal(l->A->name, "model.layers.0.self_attn.q_proj.lora_A.weight");
    assert_string_equal(l->B->name, "model.layers.0.self_attn.q_proj.lora_B.weight");
    assert_true(l->A->requires_grad && l->B->requires_grad);
    float *A = tu_host(ctx, l->A), *B = tu_host(ctx, l->B);
    float bound = 1.0f / sqrtf(100.0f), amax = 0;
    for (int i = 0; i < 8 * 100; i++) amax = fmaxf(amax, fabsf(A[i]));
    assert_true(amax <= bound && amax > 0.9f * bound); /* U(±1/√I), PEFT's kaiming_uniform(√5) */
    for (int i = 0; i < 24 * 8; i++) assert_true(B[i] == 0.0f);
    assert_null(l->mask);
    assert_int_equal(l->mask_step, -1);
    free(A);
    free(B);
    vnm_lora_free(l);
}

static void test_bad_config(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_lora_config c = cfg(0, 16, 0, false);
    assert_null(vnm_lora_new(ctx, "q_proj", 4, 4, &c));
    tu_assert_error(ctx, "lora 'q_proj'");
    c = cfg(4, 16, 1.0, false);
    assert_null(vnm_lora_new(ctx, "q_proj", 4, 4, &c));
    tu_assert_error(ctx, "dropout");
}

static void test_dense_matches_reference(void **state)
{
    vnm_ctx *ctx = *state;
    int64_t T = 6, O = 9, I = 13, r = 3;
    vnm_lora *l = random_lora(ctx, O, I, r, 0);
    vnm_tensor *W = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(O), -1, 1);
    vnm_tensor *x = tu_param(ctx, 3, VNM_SHAPE(2, 3, I), -1, 1);
    vnm_tensor *y = vnm_lora_add(ctx, l, x, vnm_linear(ctx, x, W, b));
    assert_non_null(y);
    assert_int_equal(y->shape[2], O);
    float *Wh = tu_host(ctx, W), *bh = tu_host(ctx, b), *xh = tu_host(ctx, x);
    float *yh = tu_host(ctx, y);
    double *E = ref_effective(ctx, l, Wh), *want = ref_linear(xh, E, bh, T, O, I);
    tu_assert_close(yh, want, T * O, 1e-5, 1e-5, "dense lora output");
    free(Wh), free(bh), free(xh), free(yh), free(E), free(want);
    vnm_lora_free(l);
}

typedef struct {
    vnm_lora *l;
    vnm_tensor *W, *b;
    bool masked;
} fn_user;

static vnm_tensor *lora_fn(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    fn_user *u = user;
    if (u->masked) return vnm_lora_masked_linear(ctx, u->l, u->W, in[0], u->b);
    return vnm_lora_add(ctx, u->l, in[0], vnm_linear(ctx, in[0], u->W, u->b));
}

static void test_dense_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_lora *l = random_lora(ctx, 7, 10, 2, 0);
    fn_user u = {l, tu_param(ctx, 2, VNM_SHAPE(7, 10), -1, 1), NULL, false};
    u.W->requires_grad = false; /* the frozen base */
    vnm_tensor *in[3] = {tu_param(ctx, 2, VNM_SHAPE(4, 10), -1, 1), l->A, l->B};
    tu_gradcheck(ctx, lora_fn, 3, in, &u);
    vnm_lora_free(l);
}

static void test_merge_unmerge(void **state)
{
    vnm_ctx *ctx = *state;
    int64_t O = 8, I = 12;
    vnm_lora *l = random_lora(ctx, O, I, 4, 0);
    vnm_tensor *W = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    W->requires_grad = false;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(5, I), -1, 1);
    float *before = tu_host(ctx, vnm_lora_add(ctx, l, x, vnm_linear(ctx, x, W, NULL)));
    float *W0 = tu_host(ctx, W);
    assert_int_equal(vnm_lora_merge(ctx, l, W, false), VNM_OK);
    float *merged = tu_host(ctx, vnm_linear(ctx, x, W, NULL));
    double *want = malloc(5 * (size_t)O * sizeof *want);
    for (int64_t k = 0; k < 5 * O; k++) want[k] = before[k];
    tu_assert_close(merged, want, 5 * O, 1e-5, 1e-5, "merged base alone = base + adapter");
    float *eff = malloc((size_t)(O * I) * sizeof *eff);
    assert_int_equal(vnm_lora_merge(ctx, l, W, true), VNM_OK);
    assert_int_equal(vnm_lora_effective_weight(ctx, l, W, eff), VNM_OK);
    float *W1 = tu_host(ctx, W);
    double *w0 = malloc((size_t)(O * I) * sizeof *w0);
    for (int64_t k = 0; k < O * I; k++) w0[k] = W0[k];
    tu_assert_close(W1, w0, O * I, 1e-6, 1e-6, "unmerge restores W");
    double *E = ref_effective(ctx, l, W1);
    tu_assert_close(eff, E, O * I, 1e-6, 1e-6, "effective weight W + s·B·A");
    free(before), free(W0), free(merged), free(want), free(eff), free(W1), free(w0), free(E);
    vnm_lora_free(l);
}

/* A layer in the masked mode with a random mask and, when with_prev, a random previous mask. */
static vnm_lora *masked_lora(vnm_ctx *ctx, vnm_pattern p, int64_t O, int64_t I, int64_t r,
                             double dropout, vnm_tensor **W, bool with_prev)
{
    vnm_lora *l = random_lora(ctx, O, I, r, dropout);
    *W = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    (*W)->requires_grad = false;
    uint8_t *m = random_mask(ctx, p, O, I), *prev = with_prev ? random_mask(ctx, p, O, I) : NULL;
    char err[256];
    if (vnm_lora_set_masks(ctx, l, *W, p, m, prev, 7, err, sizeof err) != VNM_OK)
        fail_msg("set_masks: %s", err);
    assert_int_equal(l->mask_step, 7);
    free(m);
    free(prev);
    return l;
}

static void test_masked_matches_dense_reference(void **state)
{
    vnm_ctx *ctx = *state;
    const char *patterns[] = {"16:2:4", "16:2:5", "32:2:8"};
    const int64_t shapes[][3] = {{5, 37, 23}, {3, 16, 40}, {4, 50, 19}};
    for (int k = 0; k < 3; k++) {
        int64_t T = shapes[k][0], O = shapes[k][1], I = shapes[k][2];
        vnm_tensor *W;
        vnm_lora *l = masked_lora(ctx, pat(patterns[k]), O, I, 3, 0, &W, false);
        vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
        vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(O), -1, 1);
        vnm_tensor *y = vnm_lora_masked_linear(ctx, l, W, x, b);
        assert_non_null(y);
        float *Wh = tu_host(ctx, W), *xh = tu_host(ctx, x), *bh = tu_host(ctx, b);
        float *yh = tu_host(ctx, y), *eff = malloc((size_t)(O * I) * sizeof *eff);
        double *E = ref_effective(ctx, l, Wh);
        for (int64_t i = 0; i < O * I; i++)
            if (!l->mask[i]) E[i] = 0; /* (W + s·B·A) ⊙ Mk */
        double *want = ref_linear(xh, E, bh, T, O, I);
        tu_assert_close(yh, want, T * O, 1e-5, 1e-5, "masked lora output");
        assert_int_equal(vnm_lora_effective_weight(ctx, l, W, eff), VNM_OK);
        tu_assert_close(eff, E, O * I, 1e-6, 1e-6, "exported weight (W + s·B·A) ⊙ Mk");
        /* dropout > 0 outside training is the identity: the two-product path agrees */
        l->dropout = 0.25f;
        vnm_ctx_set_training(ctx, false);
        float *y2 = tu_host(ctx, vnm_lora_masked_linear(ctx, l, W, x, b));
        vnm_ctx_set_training(ctx, true);
        tu_assert_close(y2, want, T * O, 1e-5, 1e-5, "masked lora, dropout path, eval");
        free(Wh), free(xh), free(bh), free(yh), free(eff), free(E), free(want), free(y2);
        vnm_lora_free(l);
        vnm_ctx_reset_step(ctx);
    }
}

static void test_masked_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    for (int dropout = 0; dropout < 2; dropout++) {
        vnm_tensor *W;
        vnm_lora *l = masked_lora(ctx, pat("16:2:5"), 20, 17, 3, dropout ? 0.3 : 0, &W, false);
        fn_user u = {l, W, tu_param(ctx, 1, VNM_SHAPE(20), -1, 1), true};
        vnm_tensor *in[4] = {tu_param(ctx, 2, VNM_SHAPE(3, 17), -1, 1), l->A, l->B, u.b};
        vnm_ctx_set_training(ctx, dropout == 1); /* the gradcheck replays the same RNG state */
        tu_gradcheck(ctx, lora_fn, 4, in, &u);
        vnm_ctx_set_training(ctx, true);
        vnm_lora_free(l);
    }
}

static vnm_tensor *penalty_fn(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)in;
    fn_user *u = user;
    return vnm_lora_penalty(ctx, u->l, u->W, 0.5f);
}

static void test_penalty(void **state)
{
    vnm_ctx *ctx = *state;
    int64_t O = 16, I = 15;
    vnm_tensor *W;
    vnm_lora *l = masked_lora(ctx, pat("16:2:5"), O, I, 2, 0, &W, false);
    vnm_tensor *p = vnm_lora_penalty(ctx, l, W, 0.5f);
    assert_non_null(p);
    assert_true(vnm_item(ctx, p) == 0.0f); /* no previous mask: nothing was pruned before */
    assert_null(p->node);
    vnm_lora_free(l);

    l = masked_lora(ctx, pat("16:2:5"), O, I, 2, 0, &W, true);
    float *Wh = tu_host(ctx, W);
    double *E = ref_effective(ctx, l, Wh), want = 0;
    for (int64_t k = 0; k < O * I; k++)
        if (!l->prev_mask[k]) want += E[k] * E[k];
    want *= 0.25; /* λ/2 */
    float got = vnm_item(ctx, vnm_lora_penalty(ctx, l, W, 0.5f));
    assert_true(fabs(got - want) <= 1e-5 * fabs(want));
    fn_user u = {l, W, NULL, true};
    vnm_tensor *in[2] = {l->A, l->B};
    tu_gradcheck(ctx, penalty_fn, 2, in, &u);
    free(Wh);
    free(E);
    vnm_lora_free(l);
}

/* One training step's products through the compressed masked mode (the CPU's sparse kernels) or
 * the dense form other backends run: output, the gradients of x, A and B, and the regulariser
 * with its gradients. */
typedef struct {
    float *y, *dx, *dA, *dB, pen, *pA, *pB;
} masked_run;

static masked_run run_masked(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_tensor *x,
                             vnm_tensor *b, bool dense)
{
    masked_run r;
    vnm_tensor *params[3] = {x, l->A, l->B};
    vnm_zero_grad(ctx, params, 3);
    vnm_ctx_rng_set(ctx, (vnm_rng_state){9, 0}); /* the same dropout draws */
    vnm_tensor *y = dense ? vnm_lora_masked_dense(ctx, l, W, x, b)
                          : vnm_lora_masked_linear(ctx, l, W, x, b);
    assert_non_null(y);
    assert_int_equal(vnm_backward_seed(ctx, y, vnm_scale(ctx, y, 1.0f)), VNM_OK);
    r.y = tu_host(ctx, y);
    r.dx = tu_host(ctx, x->grad);
    r.dA = tu_host(ctx, l->A->grad);
    r.dB = tu_host(ctx, l->B->grad);
    vnm_ctx_reset_step(ctx);
    vnm_zero_grad(ctx, params, 3);
    vnm_tensor *p = dense ? vnm_lora_penalty_dense(ctx, l, W, 0.5f)
                          : vnm_lora_penalty(ctx, l, W, 0.5f);
    assert_non_null(p);
    r.pen = vnm_item(ctx, p);
    assert_int_equal(vnm_backward(ctx, p), VNM_OK);
    r.pA = tu_host(ctx, l->A->grad);
    r.pB = tu_host(ctx, l->B->grad);
    vnm_ctx_reset_step(ctx);
    return r;
}

static void assert_near(const float *got, const float *want, int64_t n, const char *what)
{
    double *w = malloc((size_t)n * sizeof *w);
    for (int64_t i = 0; i < n; i++) w[i] = want[i];
    tu_assert_close(got, w, n, 1e-5, 1e-5, what);
    free(w);
}

static void test_dense_form_matches_compressed(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_ctx_set_free_in_backward(ctx, true);
    const int64_t T = 6, O = 32, I = 23, r = 3;
    for (int drop = 0; drop < 2; drop++) {
        vnm_tensor *W;
        vnm_lora *l = masked_lora(ctx, pat("16:2:5"), O, I, r, drop ? 0.2 : 0, &W, true);
        assert_int_equal(vnm_rng_uniform(ctx, l->B, -1, 1), VNM_OK);
        vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
        vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(O), -1, 1);
        masked_run c = run_masked(ctx, l, W, x, b, false), d = run_masked(ctx, l, W, x, b, true);
        assert_near(d.y, c.y, T * O, "dense form: output");
        assert_near(d.dx, c.dx, T * I, "dense form: dx");
        assert_near(d.dA, c.dA, r * I, "dense form: dA");
        assert_near(d.dB, c.dB, O * r, "dense form: dB");
        assert_true(fabs(d.pen - c.pen) <= 1e-5 * fabs(c.pen) && c.pen > 0);
        assert_near(d.pA, c.pA, r * I, "dense form: regulariser dA");
        assert_near(d.pB, c.pB, O * r, "dense form: regulariser dB");
        float **all[2] = {(float *[]){c.y, c.dx, c.dA, c.dB, c.pA, c.pB},
                          (float *[]){d.y, d.dx, d.dA, d.dB, d.pA, d.pB}};
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < 6; i++) free(all[k][i]);
        vnm_lora_free(l);
    }
}

/* Reprune from the dense mode, then again from the masked mode; f32 and bf16 bases. */
static void test_reprune(void **state)
{
    vnm_ctx *ctx = *state;
    int64_t O = 32, I = 20, T = 4;
    vnm_pattern p = pat("16:2:5");
    for (int bf = 0; bf < 2; bf++) {
        vnm_lora *l = random_lora(ctx, O, I, 3, 0);
        vnm_tensor *W32 = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1), *W = W32;
        if (bf) W = vnm_buffer_new(ctx, VNM_DTYPE_BF16, 2, VNM_SHAPE(O, I), "w.bf16");
        if (bf) {
            vnm_tensor *c = vnm_to_dtype(ctx, W32, VNM_DTYPE_BF16);
            uint16_t *h = malloc((size_t)(O * I) * 2);
            vnm_tensor_to_host(ctx, c, h);
            vnm_tensor_from_host(ctx, W, h);
            free(h);
        }
        vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
        for (int round = 0; round < 2; round++) {
            float *Wbefore = tu_host(ctx, vnm_to_dtype(ctx, W, VNM_DTYPE_F32));
            double *merged = ref_effective(ctx, l, Wbefore);
            uint8_t *old = l->mask ? malloc((size_t)(O * I)) : NULL;
            if (old) memcpy(old, l->mask, (size_t)(O * I));
            char err[256];
            int64_t step = 10 + 5 * round;
            if (vnm_lora_reprune(ctx, l, W, p, VNM_SELECT_L1, VNM_SCORE_MAGNITUDE, NULL, 0.5, step,
                                 err, sizeof err) != VNM_OK)
                fail_msg("reprune: %s", err);
            assert_int_equal(l->mask_step, step);
            if (old) assert_memory_equal(l->prev_mask, old, (size_t)(O * I));
            else assert_null(l->prev_mask);
            float *B = tu_host(ctx, l->B);
            float *Wafter = tu_host(ctx, vnm_to_dtype(ctx, W, VNM_DTYPE_F32));
            for (int64_t k = 0; k < O * l->r; k++) assert_true(B[k] == 0.0f);
            /* W ← W + s·B·A, rounded to bf16 for a bf16 base */
            tu_assert_close(Wafter, merged, O * I, bf ? 0 : 1e-6, bf ? 1.0 / 128 : 1e-6,
                            "merged base");
            /* the mask is the magnitude mask of the merged weight */
            float *S = malloc((size_t)(O * I) * sizeof *S);
            uint8_t *want = malloc((size_t)(O * I));
            assert_int_equal(vnm_score_compute(VNM_SCORE_MAGNITUDE, Wafter, O, I, NULL, 0, S, err,
                                               sizeof err), VNM_OK);
            assert_int_equal(vnm_mask_select(p, VNM_SELECT_L1, S, O, I, want, err, sizeof err),
                             VNM_OK);
            assert_memory_equal(l->mask, want, (size_t)(O * I));
            /* with B = 0 the layer computes x·(W_merged ⊙ Mk)ᵀ */
            double *E = malloc((size_t)(O * I) * sizeof *E);
            for (int64_t k = 0; k < O * I; k++) E[k] = l->mask[k] ? Wafter[k] : 0.0;
            float *xh = tu_host(ctx, x);
            float *y = tu_host(ctx, vnm_lora_masked_linear(ctx, l, W, x, NULL));
            double *ref = ref_linear(xh, E, NULL, T, O, I);
            tu_assert_close(y, ref, T * O, 1e-5, 1e-5, "layer after re-prune");
            assert_int_equal(vnm_rng_uniform(ctx, l->B, -1, 1), VNM_OK); /* training moves B */
            free(Wbefore), free(merged), free(old), free(B), free(Wafter), free(S), free(want);
            free(E), free(xh), free(y), free(ref);
            vnm_ctx_reset_step(ctx);
        }
        vnm_lora_free(l);
    }
}

static void test_ria_needs_calibration_and_masked_needs_mask(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_lora *l = random_lora(ctx, 16, 10, 2, 0);
    vnm_tensor *W = tu_param(ctx, 2, VNM_SHAPE(16, 10), -1, 1);
    char err[256];
    assert_int_equal(vnm_lora_reprune(ctx, l, W, pat("16:2:5"), VNM_SELECT_L1, VNM_SCORE_RIA, NULL,
                                      0.5, 1, err, sizeof err), VNM_ERR_INPUT);
    tu_assert_has(err, "calibration");
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(2, 10), -1, 1);
    assert_null(vnm_lora_masked_linear(ctx, l, W, x, NULL));
    tu_assert_error(ctx, "no mask yet");
    vnm_tensor *bad = tu_param(ctx, 2, VNM_SHAPE(10, 16), -1, 1);
    assert_int_equal(vnm_lora_merge(ctx, l, bad, false), VNM_ERR_INPUT);
    tu_assert_error(ctx, "[16, 10]");
    uint8_t *m = calloc(160, 1); /* all pruned: not a valid 16:2:5 mask */
    assert_int_equal(vnm_lora_set_masks(ctx, l, W, pat("16:2:5"), m, NULL, 0, err, sizeof err),
                     VNM_ERR_INPUT);
    free(m);
    vnm_lora_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_and_scale, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dense_matches_reference, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dense_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_merge_unmerge, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_masked_matches_dense_reference, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_masked_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_penalty, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dense_form_matches_compressed, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_reprune, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ria_needs_calibration_and_masked_needs_mask, tu_setup,
                                        tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
