/* tests/test_free_in_backward.c — memory reuse during backward (vnm_ctx_set_free_in_backward):
 * the arena's per-size reuse; a ViT step (dropout and drop-path on, so attention probabilities,
 * masks, norm statistics and gradient hand-overs are all released) and the same step with bf16
 * products (their half copies released) give bit-identical parameter gradients with and without
 * release while the step's peak memory drops; the tensor backward started from stays readable.
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
static step_result vit_step(bool release, vnm_dtype matmul)
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

static void check_release(vnm_dtype matmul)
{
    step_result keep = vit_step(false, matmul), rel = vit_step(true, matmul);
    assert_int_equal(keep.n, rel.n);
    assert_memory_equal(keep.grads, rel.grads, (size_t)keep.n * sizeof *keep.grads);
    assert_true(keep.loss_after == rel.loss_after);
    /* the gradients of earlier layers reuse what later layers gave back */
    if (rel.step_bytes > keep.step_bytes * 4 / 5)
        fail_msg("step memory %zu with release, %zu without", rel.step_bytes, keep.step_bytes);
    free(keep.grads);
    free(rel.grads);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_reuses_same_size),
        cmocka_unit_test(test_vit_step_same_gradients_less_memory),
        cmocka_unit_test(test_vit_step_bf16_products),
    };
    return cmocka_run_group_tests_name("free_in_backward", tests, NULL, NULL);
}
