/* tests/test_step_memory.c — what a training step keeps in memory.
 *   - Release during backward (vnm_ctx_set_free_in_backward): the arena's per-size reuse; a ViT
 *     step (drop-path on, so attention probabilities, masks, norm statistics and gradient
 *     hand-overs are all released) and the same step with bf16 products give bit-identical
 *     parameter gradients with and without release while the step's peak memory drops; the
 *     tensor backward started from stays readable.
 *   - Activation checkpointing (vnm_checkpoint): the same ViT step with every block checkpointed
 *     gives bit-identical loss and gradients (the re-run replays drop-path's random draws) with
 *     less memory; a segment whose input needs no gradient still trains the parameters inside
 *     it (a LoRA adapter on a frozen base); a segment returning a view; without grad it just runs.
 *   - Segments without checkpointing (vnm_segment): what no backward reads goes as the segment
 *     ends (with bf16 products, the f32 inputs of the products, which keep half copies); products
 *     of one activation share one half copy.
 * meson runs every test with VNM_POISON_FREED=1, so a released block read later turns into NaN. */
#include <stdlib.h>
#include <string.h>

#include "../autograd/internal.h"
#include "../train/models/vit.h"
#include "test_util.h"

static void test_arena_reuses_same_size(void **state)
{
    (void)state;
    vnm_arena a;
    vnm_arena_init(&a, vnm_backend_cpu(), 1 << 16);
    void *p = vnm_arena_alloc(&a, 1000), *q = vnm_arena_alloc(&a, 3000);
    size_t used = a.used;
    vnm_arena_free(&a, p, 1000);
    vnm_arena_free(&a, q, 3000);
    assert_ptr_equal(vnm_arena_alloc(&a, 990), p); /* the same 64-byte rounded size */
    assert_true(vnm_arena_alloc(&a, 2000) != q);   /* another size takes new memory */
    assert_true(a.used > used);
    assert_ptr_equal(vnm_arena_alloc(&a, 3000), q);
    vnm_arena_reset(&a); /* a reset forgets freed blocks with the rest */
    assert_int_equal(a.used, 0);
    vnm_arena_release(&a);
}

typedef struct {
    float *grads; /* every parameter's gradient, concatenated */
    int64_t n;
    float loss_after; /* the loss read after backward */
    size_t step_bytes;
} step_result;

/* One training-mode step of a small ViT from a fixed seed: forward, cross-entropy, backward. */
static step_result vit_step(bool release, vnm_dtype matmul, bool checkpoint)
{
    vnm_ctx_config cc = {VNM_DEVICE_CPU, 11, 2};
    vnm_ctx *ctx = vnm_ctx_create(&cc);
    assert_non_null(ctx);
    vnm_ctx_set_free_in_backward(ctx, release);
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, matmul), VNM_OK);
    vnm_vit_config cfg = {.embed_dim = 48, .depth = 3, .num_heads = 3, .mlp_ratio = 4, .patch = 4,
                          .img_size = 16, .in_chans = 3, .num_classes = 7,
                          .drop_path_rate = 0.2f};
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    assert_non_null(m);
    vnm_vit_set_checkpointing(m, checkpoint);
    vnm_ctx_set_training(ctx, true);
    vnm_tensor *x = vnm_tensor_new(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(6, 3, 16, 16));
    assert_int_equal(vnm_rng_normal(ctx, x, 0, 1), VNM_OK);
    int32_t labels[6] = {0, 3, 6, 1, 2, 5};
    vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(6), labels);
    vnm_tensor *loss = vnm_cross_entropy(ctx, vnm_vit_forward(ctx, m, x, NULL), y, -100, 0.1f);
    assert_non_null(loss);
    float before = vnm_item(ctx, loss);
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    step_result r = {NULL, 0, vnm_item(ctx, loss), vnm_ctx_step_bytes(ctx)};
    assert_true(r.loss_after == before);
    for (int i = 0; i < vnm_vit_param_count(m); i++)
        r.n += vnm_numel(vnm_vit_param_at(m, i).tensor);
    r.grads = malloc((size_t)r.n * sizeof *r.grads);
    int64_t at = 0;
    for (int i = 0; i < vnm_vit_param_count(m); i++) {
        vnm_tensor *p = vnm_vit_param_at(m, i).tensor;
        assert_non_null(p->grad);
        assert_int_equal(vnm_tensor_to_host(ctx, p->grad, r.grads + at), VNM_OK);
        at += vnm_numel(p);
    }
    vnm_vit_free(m);
    vnm_ctx_destroy(ctx);
    return r;
}

/* a is the reference, b the memory-saving variant: same numbers, at most 4/5 of the memory */
static void check_same_step(step_result a, step_result b)
{
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.grads, b.grads, (size_t)a.n * sizeof *a.grads);
    assert_true(a.loss_after == b.loss_after);
    if (b.step_bytes > a.step_bytes * 4 / 5)
        fail_msg("step memory %zu, against %zu", b.step_bytes, a.step_bytes);
    free(a.grads);
    free(b.grads);
}

static void check_release(vnm_dtype matmul)
{
    check_same_step(vit_step(false, matmul, false), vit_step(true, matmul, false));
}

static void test_vit_step_same_gradients_less_memory(void **state)
{
    (void)state;
    check_release(VNM_DTYPE_F32);
}

static void test_vit_step_bf16_products(void **state)
{
    (void)state;
    check_release(VNM_DTYPE_BF16);
}

static void test_vit_step_checkpointed_blocks(void **state)
{
    (void)state;
    check_same_step(vit_step(true, VNM_DTYPE_F32, false), vit_step(true, VNM_DTYPE_F32, true));
    check_same_step(vit_step(true, VNM_DTYPE_BF16, false), vit_step(true, VNM_DTYPE_BF16, true));
}

/* y = gelu(x·wᵀ + b) reshaped to [rows·O]: a segment handing back a view */
static vnm_tensor *dense_gelu(vnm_ctx *ctx, vnm_tensor *const *in, int n_in, void *params)
{
    (void)n_in;
    vnm_tensor **p = params, *y = vnm_gelu(ctx, vnm_linear(ctx, in[0], p[0], p[1]));
    return y ? vnm_reshape(ctx, y, 1, VNM_SHAPE(vnm_numel(y))) : NULL;
}

/* The same products with and without the segment: the gradients of w, b (parameters the segment
 * reaches, its input needing none) and of the output's consumer agree bit for bit. */
static void test_segment_trains_inner_parameters(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_ctx_set_free_in_backward(ctx, true);
    float *g[2][2];
    for (int k = 0; k < 2; k++) {
        vnm_ctx_rng_set(ctx, (vnm_rng_state){5, 0});
        vnm_tensor *x = vnm_tensor_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(5, 8)); /* no grad */
        vnm_tensor *p[2] = {tu_param(ctx, 2, VNM_SHAPE(6, 8), -1, 1),
                            tu_param(ctx, 1, VNM_SHAPE(6), -1, 1)};
        assert_int_equal(vnm_rng_normal(ctx, x, 0, 1), VNM_OK);
        vnm_tensor *y = k ? vnm_checkpoint(ctx, dense_gelu, p, 1, &x) : dense_gelu(ctx, &x, 1, p);
        assert_non_null(y);
        assert_int_equal(y->ndim, 1);
        vnm_tensor *loss = vnm_sum(ctx, vnm_mul(ctx, y, y), VNM_ALL_DIMS, false);
        assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
        g[k][0] = tu_host(ctx, p[0]->grad);
        g[k][1] = tu_host(ctx, p[1]->grad);
        vnm_ctx_reset_step(ctx);
    }
    assert_memory_equal(g[0][0], g[1][0], 6 * 8 * sizeof(float));
    assert_memory_equal(g[0][1], g[1][1], 6 * sizeof(float));
    for (int k = 0; k < 2; k++) free(g[k][0]), free(g[k][1]);
}

/* Without grad the model's blocks give their activations back as they end: the same logits as a
 * forward that keeps them, in much less memory. */
static void test_vit_eval_holds_one_block(void **state)
{
    (void)state;
    float *logits[2];
    size_t bytes[2];
    for (int k = 0; k < 2; k++) {
        vnm_ctx_config cc = {VNM_DEVICE_CPU, 3, 2};
        vnm_ctx *ctx = vnm_ctx_create(&cc);
        vnm_vit_config cfg = {.embed_dim = 48, .depth = 4, .num_heads = 3, .mlp_ratio = 4,
                              .patch = 4, .img_size = 16, .in_chans = 3, .num_classes = 7};
        vnm_vit *m = vnm_vit_new(ctx, &cfg);
        assert_non_null(m);
        vnm_ctx_set_training(ctx, false);
        vnm_tensor *x = vnm_tensor_new(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(16, 3, 16, 16));
        assert_int_equal(vnm_rng_normal(ctx, x, 0, 1), VNM_OK);
        bool was = vnm_ctx_set_grad_enabled(ctx, k == 0); /* k = 0 keeps everything (a tape) */
        vnm_tensor *y = vnm_vit_forward(ctx, m, x, NULL);
        assert_non_null(y);
        logits[k] = tu_host(ctx, y);
        bytes[k] = vnm_ctx_step_bytes(ctx);
        vnm_ctx_set_grad_enabled(ctx, was);
        vnm_vit_free(m);
        vnm_ctx_destroy(ctx);
    }
    assert_memory_equal(logits[0], logits[1], 16 * 7 * sizeof(float));
    if (bytes[1] > bytes[0] / 2) fail_msg("eval %zu bytes, with a tape %zu", bytes[1], bytes[0]);
    free(logits[0]);
    free(logits[1]);
}

typedef struct {
    vnm_tensor *w1, *w2;
    vnm_tensor *hidden; /* set by the segment: gelu's output, which only the second linear reads */
} mlp_params;

/* linear → gelu → linear */
static vnm_tensor *mlp(vnm_ctx *ctx, vnm_tensor *const *in, int n_in, void *user)
{
    (void)n_in;
    mlp_params *p = user;
    p->hidden = vnm_gelu(ctx, vnm_linear(ctx, in[0], p->w1, NULL));
    return vnm_linear(ctx, p->hidden, p->w2, NULL);
}

/* A segment (vnm_segment) gives back as it ends the f32 activations no backward reads: with bf16
 * products the second linear keeps its input's half copy, so gelu's f32 output goes; in f32 it
 * stays, unless the weight reading it is frozen. The gradients are those of a direct call, bit
 * for bit. */
static void test_segment_gives_back_unread_activations(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_ctx_set_free_in_backward(ctx, true);
    const struct {
        vnm_dtype dt;
        bool w2_trainable, released;
    } cases[] = {{VNM_DTYPE_BF16, true, true}, {VNM_DTYPE_F32, true, false},
                 {VNM_DTYPE_F32, false, true}, {VNM_DTYPE_F16, false, true}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, cases[c].dt), VNM_OK);
        float *g[2][3];
        for (int seg = 0; seg < 2; seg++) {
            vnm_ctx_rng_set(ctx, (vnm_rng_state){7, 0});
            vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(5, 8), -1, 1);
            mlp_params p = {tu_param(ctx, 2, VNM_SHAPE(16, 8), -1, 1),
                            tu_param(ctx, 2, VNM_SHAPE(4, 16), -1, 1), NULL};
            p.w2->requires_grad = cases[c].w2_trainable;
            vnm_tensor *y = seg ? vnm_segment(ctx, mlp, &p, 1, &x) : mlp(ctx, &x, 1, &p);
            assert_non_null(y);
            assert_false(y->released);
            if (seg && p.hidden->released != cases[c].released)
                fail_msg("case %zu: gelu's output %s", c,
                         cases[c].released ? "kept" : "given back");
            if (!seg) assert_false(p.hidden->released);
            vnm_tensor *loss = vnm_sum(ctx, vnm_mul(ctx, y, y), VNM_ALL_DIMS, false);
            assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
            g[seg][0] = tu_host(ctx, x->grad);
            g[seg][1] = tu_host(ctx, p.w1->grad);
            g[seg][2] = cases[c].w2_trainable ? tu_host(ctx, p.w2->grad) : NULL;
            vnm_ctx_reset_step(ctx);
        }
        assert_memory_equal(g[0][0], g[1][0], 5 * 8 * sizeof(float));
        assert_memory_equal(g[0][1], g[1][1], 16 * 8 * sizeof(float));
        if (g[0][2]) assert_memory_equal(g[0][2], g[1][2], 4 * 16 * sizeof(float));
        for (int k = 0; k < 2; k++) free(g[k][0]), free(g[k][1]), free(g[k][2]);
    }
}

/* Three bf16 products of one activation (LLaMA's q, k, v projections) share the half copy the
 * first one kept, which owns it; the weights' gradients are those of three separate activations,
 * bit for bit (a copy given back too early would read as NaN: freed blocks are poisoned). */
static void test_products_share_half_copy(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_ctx_set_free_in_backward(ctx, true);
    assert_int_equal(vnm_ctx_set_matmul_dtype(ctx, VNM_DTYPE_BF16), VNM_OK);
    float *g[2][4];
    for (int shared = 0; shared < 2; shared++) {
        vnm_ctx_rng_set(ctx, (vnm_rng_state){9, 0});
        vnm_tensor *p = tu_param(ctx, 2, VNM_SHAPE(6, 8), -1, 1), *w[3], *y[3];
        for (int i = 0; i < 3; i++) w[i] = tu_param(ctx, 2, VNM_SHAPE(5, 8), -1, 1);
        vnm_tensor *x = vnm_gelu(ctx, p); /* [6, 8] */
        for (int i = 0; i < 3; i++)
            y[i] = vnm_linear(ctx, shared ? x : vnm_gelu(ctx, p), w[i], NULL);
        if (shared) {
            vnm_tensor *copy = y[0]->node->saved[1];
            assert_non_null(copy);
            assert_int_equal(copy->dtype, VNM_DTYPE_BF16);
            for (int i = 1; i < 3; i++) {
                assert_ptr_equal(y[i]->node->saved[1], copy);
                assert_false(y[i]->node->own_saved & 2u);
            }
            assert_true(y[0]->node->own_saved & 2u);
        }
        vnm_tensor *loss = vnm_sum(ctx, vnm_mul(ctx, vnm_add(ctx, vnm_add(ctx, y[0], y[1]), y[2]),
                                                vnm_add(ctx, y[1], y[2])),
                                   VNM_ALL_DIMS, false);
        assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
        g[shared][0] = tu_host(ctx, p->grad);
        for (int i = 0; i < 3; i++) g[shared][i + 1] = tu_host(ctx, w[i]->grad);
        vnm_ctx_reset_step(ctx);
    }
    /* p's gradient sums the three dx in another order (before gelu's backward, not after) */
    double want[6 * 8];
    for (int i = 0; i < 6 * 8; i++) want[i] = g[0][0][i];
    tu_assert_close(g[1][0], want, 6 * 8, 1e-6, 1e-5, "input gradient");
    for (int i = 1; i < 4; i++) assert_memory_equal(g[0][i], g[1][i], 5 * 8 * sizeof(float));
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 4; i++) free(g[k][i]);
}

static void test_segment_without_grad_just_runs(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(3, 8), -1, 1);
    vnm_tensor *p[2] = {tu_param(ctx, 2, VNM_SHAPE(4, 8), -1, 1), NULL};
    bool was = vnm_ctx_set_grad_enabled(ctx, false);
    vnm_tensor *y = vnm_checkpoint(ctx, dense_gelu, p, 1, &x);
    vnm_ctx_set_grad_enabled(ctx, was);
    assert_non_null(y);
    assert_false(y->requires_grad);
    assert_null(vnm_checkpoint(ctx, dense_gelu, p, 0, &x));
    tu_assert_error(ctx, "checkpoint: 1 to 4 inputs, got 0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_reuses_same_size),
        cmocka_unit_test(test_vit_step_same_gradients_less_memory),
        cmocka_unit_test(test_vit_step_bf16_products),
        cmocka_unit_test(test_vit_step_checkpointed_blocks),
        cmocka_unit_test_setup_teardown(test_segment_trains_inner_parameters, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_segment_gives_back_unread_activations, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_products_share_half_copy, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_segment_without_grad_just_runs, tu_setup, tu_teardown),
        cmocka_unit_test(test_vit_eval_holds_one_block),
    };
    return cmocka_run_group_tests_name("step_memory", tests, NULL, NULL);
}
