/* tests/test_sparse_linear.c — the sparse-linear op: mask-fixed forward equals the dense linear on
 * the decompressed weight, finite-difference gradients in mask-fixed and SR-STE modes, the SR-STE
 * decay term, mask updates at the configured interval, freezing, a 100-step mask-fixed training run
 * that keeps the mask and every pruned weight exactly zero, and errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "sparse/sparse.h"
#include "test_util.h"

static vnm_pattern pat(const char *text)
{
    vnm_pattern p;
    assert_int_equal(vnm_pattern_parse(text, &p, NULL, 0), VNM_OK);
    return p;
}

/* Random W[O][I] in [-1, 1) pruned by magnitude with the l1 selector, compressed. */
static float *random_compressed(vnm_ctx *ctx, vnm_pattern p, int64_t O, int64_t I,
                                vnm_sparse_host *h)
{
    vnm_tensor *w = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(O, I));
    vnm_rng_uniform(ctx, w, -1, 1);
    float *W = tu_host(ctx, w), *S = malloc((size_t)(O * I) * sizeof *S);
    uint8_t *mask = malloc((size_t)(O * I));
    char err[256];
    assert_int_equal(vnm_score_compute(VNM_SCORE_MAGNITUDE, W, O, I, NULL, 0, S, err, sizeof err),
                     VNM_OK);
    assert_int_equal(vnm_mask_select(p, VNM_SELECT_L1, S, O, I, mask, err, sizeof err), VNM_OK);
    if (vnm_sparse_compress(p, W, mask, O, I, NULL, NULL, h, err, sizeof err) != VNM_OK)
        fail_msg("compress: %s", err);
    free(S);
    free(mask);
    return W;
}

static void test_forward_matches_dense_on_decompressed(void **state)
{
    vnm_ctx *ctx = *state;
    const char *patterns[] = {"16:2:4", "16:2:5", "32:2:8"};
    const int64_t shapes[][3] = {{5, 37, 23}, {3, 16, 40}, {1, 50, 19}};
    for (int k = 0; k < 3; k++) {
        vnm_pattern p = pat(patterns[k]);
        int64_t T = shapes[k][0], O = shapes[k][1], I = shapes[k][2];
        vnm_sparse_host h;
        float *W = random_compressed(ctx, p, O, I, &h);
        vnm_sparse_weight *sw = vnm_sparse_weight_new(ctx, &h, "layer.weight");
        assert_non_null(sw);
        float *Wm = malloc((size_t)(O * I) * sizeof *Wm);
        vnm_sparse_decompress(&h, Wm);
        vnm_tensor *wd = vnm_tensor_from(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(O, I), Wm);
        vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
        vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(O), -1, 1);
        vnm_tensor *ys = vnm_sparse_linear(ctx, x, sw, b), *yd = vnm_linear(ctx, x, wd, b);
        assert_non_null(ys);
        float *hs = tu_host(ctx, ys), *hd = tu_host(ctx, yd);
        double *want = malloc((size_t)(T * O) * sizeof *want);
        for (int64_t i = 0; i < T * O; i++) want[i] = hd[i];
        tu_assert_close(hs, want, T * O, 1e-5, 1e-5, "sparse vs dense forward");
        free(hs);
        free(hd);
        free(want);
        free(W);
        free(Wm);
        vnm_sparse_weight_free(sw);
        vnm_sparse_host_free(&h);
        vnm_ctx_reset_step(ctx);
    }
}

/* One forward + backward of the sparse linear; out, dx, dvals, db as host arrays. */
static float **fixed_step(vnm_ctx *ctx, vnm_sparse_weight *sw, vnm_tensor *x, vnm_tensor *b)
{
    vnm_tensor *params[3] = {x, sw->vals, b};
    vnm_zero_grad(ctx, params, 3);
    vnm_tensor *y = vnm_sparse_linear(ctx, x, sw, b);
    assert_non_null(y);
    assert_int_equal(vnm_backward_seed(ctx, y, vnm_scale(ctx, y, 0.5f)), VNM_OK);
    float **r = malloc(4 * sizeof *r);
    r[0] = tu_host(ctx, y);
    r[1] = tu_host(ctx, x->grad);
    r[2] = tu_host(ctx, sw->vals->grad);
    r[3] = tu_host(ctx, b->grad);
    vnm_ctx_reset_step(ctx);
    return r;
}

/* The dense form (what a GPU runs: the values scattered into the dense weight, forced here by
 * VNM_SPARSE_DENSE=1) computes what the sparse kernels compute: output and every gradient, with
 * and without permutations folded into the compressed form. */
static void test_dense_form_matches_kernels(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t T = 5, O = 40, I = 23;
    vnm_pattern p = pat("16:2:5");
    for (int permuted = 0; permuted < 2; permuted++) {
        vnm_tensor *w = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(O, I));
        vnm_rng_uniform(ctx, w, -1, 1);
        float *W = tu_host(ctx, w), *S = malloc((size_t)(O * I) * sizeof *S);
        uint8_t *mask = malloc((size_t)(O * I));
        int32_t po[O], pi[I];
        for (int64_t o = 0; o < O; o++) po[o] = (int32_t)(permuted ? (o * 7 + 3) % O : o);
        for (int64_t i = 0; i < I; i++) pi[i] = (int32_t)(permuted ? (i * 5 + 2) % I : i);
        char err[256];
        assert_int_equal(vnm_score_compute(VNM_SCORE_MAGNITUDE, W, O, I, NULL, 0, S, err,
                                           sizeof err), VNM_OK);
        assert_int_equal(vnm_mask_select(p, VNM_SELECT_L1, S, O, I, mask, err, sizeof err),
                         VNM_OK);
        vnm_sparse_host h;
        if (vnm_sparse_compress(p, W, mask, O, I, permuted ? po : NULL, permuted ? pi : NULL, &h,
                                err, sizeof err) != VNM_OK)
            fail_msg("compress: %s", err);
        vnm_sparse_weight *sw = vnm_sparse_weight_new(ctx, &h, "layer.weight");
        vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
        vnm_tensor *b = tu_param(ctx, 1, VNM_SHAPE(O), -1, 1);
        float **k = fixed_step(ctx, sw, x, b);
        setenv("VNM_SPARSE_DENSE", "1", 1);
        float **d = fixed_step(ctx, sw, x, b);
        unsetenv("VNM_SPARSE_DENSE");
        assert_non_null(sw->dense_index);
        const int64_t n[4] = {T * O, T * I, vnm_numel(sw->vals), O};
        for (int j = 0; j < 4; j++) {
            double *want = malloc((size_t)n[j] * sizeof *want);
            for (int64_t i = 0; i < n[j]; i++) want[i] = k[j][i];
            tu_assert_close(d[j], want, n[j], 1e-5, 1e-5, "dense form vs sparse kernels");
            free(want);
            free(k[j]);
            free(d[j]);
        }
        free(k), free(d), free(W), free(S), free(mask);
        vnm_sparse_weight_free(sw);
        vnm_sparse_host_free(&h);
    }
}

typedef struct {
    vnm_sparse_weight *w;
} fixed_case;

static vnm_tensor *f_fixed(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)in;
    fixed_case *c = user;
    return vnm_sparse_linear(ctx, in[0], c->w, in[2]);
}

static void test_mask_fixed_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_sparse_host h;
    free(random_compressed(ctx, pat("16:2:5"), 20, 13, &h)); /* partial block, tail group */
    fixed_case c = {vnm_sparse_weight_new(ctx, &h, "w")};
    vnm_tensor *in[3] = {tu_param(ctx, 3, VNM_SHAPE(2, 3, 13), -1, 1), c.w->vals,
                         tu_param(ctx, 1, VNM_SHAPE(20), -1, 1)};
    tu_gradcheck(ctx, f_fixed, 3, in, &c);
    vnm_sparse_weight_free(c.w);
    vnm_sparse_host_free(&h);
}

typedef struct {
    vnm_srste *s;
} srste_case;

static vnm_tensor *f_srste(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    srste_case *c = user;
    return vnm_srste_linear(ctx, c->s, in[0], in[2], 0);
}

static void test_srste_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(16, 10), -1, 1);
    srste_case c = {vnm_srste_new(ctx, w, pat("16:2:5"), VNM_SELECT_L1, 1, 0.0f)};
    assert_non_null(c.s);
    vnm_tensor *in[3] = {tu_param(ctx, 2, VNM_SHAPE(4, 10), -1, 1), w,
                         tu_param(ctx, 1, VNM_SHAPE(16), -1, 1)};
    /* x and b only: the mask is chosen at the first call of step 0 and kept for every perturbed
     * evaluation. dW is not a derivative of the loss under SR-STE (straight-through plus decay);
     * test_srste_weight_gradient_and_decay checks it against its formula. */
    vnm_tensor *only_x_b[3] = {in[0], NULL, in[2]};
    tu_gradcheck(ctx, f_srste, 3, only_x_b, &c);
    vnm_srste_free(c.s);
}

static void test_srste_weight_gradient_and_decay(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t T = 3, O = 16, I = 10;
    const float lambda = 0.25f;
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    vnm_srste *s = vnm_srste_new(ctx, w, pat("16:2:5"), VNM_SELECT_L1, 1, lambda);
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(T, I), -1, 1);
    vnm_tensor *y = vnm_srste_linear(ctx, s, x, NULL, 0);
    vnm_tensor *seed = tu_param(ctx, 2, VNM_SHAPE(T, O), -1, 1);
    assert_int_equal(vnm_backward_seed(ctx, y, seed), VNM_OK);
    const uint8_t *mask = vnm_srste_mask(s);
    float *hx = tu_host(ctx, x), *hw = tu_host(ctx, w), *hdy = tu_host(ctx, seed);
    float *g = tu_host(ctx, w->grad);
    double want[16 * 10];
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++) {
            double acc = 0; /* straight-through dYᵀX at every position */
            for (int64_t t = 0; t < T; t++) acc += (double)hdy[t * O + o] * hx[t * I + i];
            want[o * I + i] = acc + (mask[o * I + i] ? 0.0 : lambda * (double)hw[o * I + i]);
        }
    tu_assert_close(g, want, O * I, 1e-5, 1e-5, "srste dW");
    /* the forward used the masked weight */
    float *hy = tu_host(ctx, y);
    double yw[3 * 16];
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < O; o++) {
            double acc = 0;
            for (int64_t i = 0; i < I; i++)
                if (mask[o * I + i]) acc += (double)hx[t * I + i] * hw[o * I + i];
            yw[t * O + o] = acc;
        }
    tu_assert_close(hy, yw, T * O, 1e-5, 1e-5, "srste forward");
    free(hx);
    free(hw);
    free(hdy);
    free(g);
    free(hy);
    vnm_srste_free(s);
}

static void test_srste_mask_updates_at_interval(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t O = 16, I = 10;
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(2, I), -1, 1);
    vnm_srste *s = vnm_srste_new(ctx, w, pat("16:2:5"), VNM_SELECT_L1, 3, 0.0f);
    uint8_t before[16 * 10];
    for (int64_t step = 0; step < 7; step++) {
        assert_non_null(vnm_srste_linear(ctx, s, x, NULL, step));
        if (step > 0) {
            bool same = memcmp(before, vnm_srste_mask(s), sizeof before) == 0;
            /* the weights were permuted in between, so a recomputed mask differs */
            assert_true(same == (step % 3 != 0));
        }
        memcpy(before, vnm_srste_mask(s), sizeof before);
        vnm_ctx_reset_step(ctx);
        /* reverse W so the magnitude order changes before the next step */
        float *hw = tu_host(ctx, w);
        for (int64_t k = 0; k < O * I / 2; k++) {
            float t = hw[k];
            hw[k] = hw[O * I - 1 - k];
            hw[O * I - 1 - k] = t;
        }
        vnm_tensor_from_host(ctx, w, hw);
        free(hw);
    }
    vnm_srste_free(s);
}

static void test_srste_freeze_computes_same_function(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(32, 24), -1, 1);
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(5, 24), -1, 1);
    vnm_srste *s = vnm_srste_new(ctx, w, pat("16:2:8"), VNM_SELECT_EXHAUSTIVE, 1, 2e-4f);
    float *a = tu_host(ctx, vnm_srste_linear(ctx, s, x, NULL, 0));
    vnm_sparse_weight *fw = vnm_srste_freeze(ctx, s, "frozen");
    assert_non_null(fw);
    float *b = tu_host(ctx, vnm_sparse_linear(ctx, x, fw, NULL));
    assert_memory_equal(a, b, 5 * 32 * sizeof *a);
    free(a);
    free(b);
    vnm_sparse_weight_free(fw);
    vnm_srste_free(s);
}

static vnm_tensor *srste_loss(vnm_ctx *ctx, vnm_srste *s, vnm_sparse_weight *fw, vnm_tensor *x,
                              vnm_tensor *target, int64_t step)
{
    vnm_tensor *y = s ? vnm_srste_linear(ctx, s, x, NULL, step) : vnm_sparse_linear(ctx, x, fw, NULL);
    return vnm_mse(ctx, y, target);
}

/* SR-STE for 3 AdamW steps, freeze, move the moments with vnm_sparse_gather, and one mask-fixed
 * step must land where a 4th SR-STE step (mask unchanged) puts the kept weights. */
static void test_srste_handover_continues_training(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t T = 8, O = 32, I = 24;
    vnm_tensor *w = tu_param(ctx, 2, VNM_SHAPE(O, I), -1, 1);
    vnm_tensor *x = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, I), "x");
    vnm_tensor *target = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, O), "t");
    vnm_rng_normal(ctx, x, 0, 1);
    vnm_rng_normal(ctx, target, 0, 1);
    vnm_srste *s = vnm_srste_new(ctx, w, pat("16:2:8"), VNM_SELECT_L1, 1000, 2e-4f);
    vnm_optim_config cfg = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    cfg.lr = 1e-2;
    vnm_optim *dense_opt = vnm_optim_create(ctx, &cfg);
    assert_int_equal(vnm_optim_add_group(dense_opt, &w, 1, 0.01, 1.0), 0);
    for (int64_t step = 0; step < 3; step++) {
        vnm_optim_zero_grad(dense_opt);
        assert_int_equal(vnm_backward(ctx, srste_loss(ctx, s, NULL, x, target, step)), VNM_OK);
        assert_int_equal(vnm_optim_step(dense_opt), VNM_OK);
        vnm_ctx_reset_step(ctx);
    }
    vnm_sparse_weight *fw = vnm_srste_freeze(ctx, s, "frozen");
    assert_non_null(fw);
    const vnm_sparse_host *layout = vnm_srste_layout(s);
    int64_t nv = vnm_numel(fw->vals);
    float *moment = malloc((size_t)nv * sizeof *moment);
    vnm_optim *sparse_opt = vnm_optim_create(ctx, &cfg);
    assert_int_equal(vnm_optim_add_group(sparse_opt, &fw->vals, 1, 0.01, 1.0), 0);
    for (int k = 0; k < 2; k++) { /* m, v */
        float *dense = tu_host(ctx, vnm_optim_state(dense_opt, 0, k));
        vnm_sparse_gather(layout, dense, moment);
        vnm_tensor_from_host(ctx, vnm_optim_state(sparse_opt, 0, k), moment);
        free(dense);
    }
    vnm_optim_set_param_steps(sparse_opt, 0, vnm_optim_param_steps(dense_opt, 0));
    /* one more step each way */
    vnm_optim_zero_grad(dense_opt);
    assert_int_equal(vnm_backward(ctx, srste_loss(ctx, s, NULL, x, target, 3)), VNM_OK);
    assert_int_equal(vnm_optim_step(dense_opt), VNM_OK);
    vnm_ctx_reset_step(ctx);
    vnm_optim_zero_grad(sparse_opt);
    assert_int_equal(vnm_backward(ctx, srste_loss(ctx, NULL, fw, x, target, 3)), VNM_OK);
    assert_int_equal(vnm_optim_step(sparse_opt), VNM_OK);
    float *W = tu_host(ctx, w), *got = tu_host(ctx, fw->vals);
    vnm_sparse_gather(layout, W, moment);
    double *want = malloc((size_t)nv * sizeof *want);
    for (int64_t k = 0; k < nv; k++) want[k] = moment[k];
    /* dW comes from a dense GEMM on one side and the sparse dW kernel on the other */
    tu_assert_close(got, want, nv, 1e-6, 1e-5, "kept weights after the hand-over step");
    free(W);
    free(got);
    free(want);
    free(moment);
    vnm_optim_destroy(dense_opt);
    vnm_optim_destroy(sparse_opt);
    vnm_sparse_weight_free(fw);
    vnm_srste_free(s);
}

/* 100 AdamW steps of a sparse layer + GELU + dense head on a regression target. */
static void test_mask_fixed_training_keeps_mask_and_zeros(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t T = 32, I = 21, O = 40;
    vnm_pattern p = pat("16:2:5");
    vnm_sparse_host h, after;
    float *W = random_compressed(ctx, p, O, I, &h);
    vnm_sparse_weight *sw = vnm_sparse_weight_new(ctx, &h, "fc1.weight");
    vnm_tensor *b1 = tu_param(ctx, 1, VNM_SHAPE(O), -0.1f, 0.1f);
    vnm_tensor *w2 = tu_param(ctx, 2, VNM_SHAPE(3, O), -0.2f, 0.2f);
    vnm_tensor *x = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, I), "x");
    vnm_tensor *target = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(T, 3), "y");
    vnm_rng_normal(ctx, x, 0, 1);
    vnm_rng_normal(ctx, target, 0, 1);
    vnm_optim_config cfg = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    cfg.lr = 1e-2;
    cfg.weight_decay = 0.05;
    vnm_optim *opt = vnm_optim_create(ctx, &cfg);
    vnm_tensor *params[3] = {sw->vals, b1, w2};
    assert_int_equal(vnm_optim_add_decay_groups(opt, params, 3, NULL, 0), VNM_OK);
    float first = 0, last = 0;
    for (int step = 0; step < 100; step++) {
        vnm_optim_zero_grad(opt);
        vnm_tensor *hdn = vnm_gelu(ctx, vnm_sparse_linear(ctx, x, sw, b1));
        vnm_tensor *loss = vnm_mse(ctx, vnm_linear(ctx, hdn, w2, NULL), target);
        if (!loss || vnm_backward(ctx, loss) != VNM_OK) fail_msg("%s", vnm_ctx_error(ctx));
        last = vnm_item(ctx, loss);
        if (step == 0) first = last;
        assert_int_equal(vnm_optim_step(opt), VNM_OK);
        vnm_ctx_reset_step(ctx);
    }
    assert_true(last < 0.9f * first); /* it trained */
    assert_int_equal(vnm_sparse_weight_to_host(ctx, sw, &after), VNM_OK);
    int64_t blocks = h.O_pad / p.V;
    assert_memory_equal(after.slots, h.slots, (size_t)(h.O_pad * h.Gp));
    assert_memory_equal(after.cols, h.cols, (size_t)(blocks * h.Gp * 4) * sizeof(int32_t));
    assert_memory_equal(after.rows, h.rows, (size_t)h.O_pad * sizeof(int32_t));
    char err[256];
    assert_int_equal(vnm_sparse_validate(&after, err, sizeof err), VNM_OK);
    /* every pruned position of the decompressed weight is exactly zero, kept ones moved */
    float *D0 = malloc((size_t)(O * I) * sizeof *D0), *D1 = malloc((size_t)(O * I) * sizeof *D1);
    vnm_sparse_decompress(&h, D0);
    vnm_sparse_decompress(&after, D1);
    int moved = 0;
    for (int64_t k = 0; k < O * I; k++) {
        if (D0[k] == 0.0f) assert_true(D1[k] == 0.0f && !signbit(D1[k]));
        moved += D0[k] != D1[k];
    }
    assert_true(moved > O * I / 4);
    /* padding values (unused slots, padding rows) stayed exactly zero */
    for (int64_t o = 0; o < h.O_pad; o++)
        for (int64_t g = 0; g < h.Gp; g++) {
            uint8_t s = h.slots[o * h.Gp + g];
            const int32_t *c = h.cols + ((o / p.V) * h.Gp + g) * 4;
            for (int k = 0; k < 2; k++)
                if (h.rows[o] < 0 || c[k ? (s >> 2) & 3 : s & 3] < 0)
                    assert_true(after.vals[(o * h.Gp + g) * 2 + k] == 0.0f);
        }
    free(D0);
    free(D1);
    free(W);
    vnm_optim_destroy(opt);
    vnm_sparse_weight_free(sw);
    vnm_sparse_host_free(&h);
    vnm_sparse_host_free(&after);
}

static void test_sparse_linear_errors(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_sparse_host h;
    free(random_compressed(ctx, pat("16:2:4"), 16, 8, &h));
    vnm_sparse_weight *sw = vnm_sparse_weight_new(ctx, &h, "w");
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(3, 9), -1, 1);
    assert_null(vnm_sparse_linear(ctx, x, sw, NULL));
    tu_assert_error(ctx, "sparse_linear: input [3, 9] f32 must be f32 [..., 8]");
    vnm_tensor *x2 = tu_param(ctx, 2, VNM_SHAPE(3, 8), -1, 1);
    assert_null(vnm_sparse_linear(ctx, x2, sw, tu_param(ctx, 1, VNM_SHAPE(8), -1, 1)));
    tu_assert_error(ctx, "bias [8] f32 must be f32 [16]");
    assert_null(vnm_sparse_linear(ctx, NULL, sw, NULL));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
    vnm_tensor *w3 = tu_param(ctx, 3, VNM_SHAPE(2, 2, 2), -1, 1);
    assert_null(vnm_srste_new(ctx, w3, pat("16:2:4"), VNM_SELECT_L1, 1, 0));
    tu_assert_error(ctx, "must be contiguous f32 [O, I]");
    vnm_sparse_weight_free(sw);
    vnm_sparse_host_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_forward_matches_dense_on_decompressed, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_mask_fixed_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dense_form_matches_kernels, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_srste_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_srste_weight_gradient_and_decay, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_srste_mask_updates_at_interval, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_srste_freeze_computes_same_function, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_srste_handover_continues_training, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_mask_fixed_training_keeps_mask_and_zeros, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_sparse_linear_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("sparse_linear", tests, NULL, NULL);
}
