/* tests/test_mlp_spiral.c — end to end: a two-layer MLP (linear, GELU, linear) trained with
 * cross-entropy, AdamW (decay / no-decay groups), gradient clipping and a cosine schedule with
 * warm-up on the three-arm spiral data set must reach 99 % train accuracy; the same run repeated
 * gives bit-identical losses. */
#include <math.h>
#include <stdlib.h>

#include "optim/optim.h"
#include "test_util.h"

enum { CLASSES = 3, PER_CLASS = 100, N = CLASSES * PER_CLASS, HIDDEN = 64, STEPS = 1500 };

/* CS231n's spiral: arm k, point i at radius r growing along the arm, angle 4k + 4r + noise. */
static void make_spiral(float *x, int32_t *y)
{
    for (int k = 0; k < CLASSES; k++)
        for (int i = 0; i < PER_CLASS; i++) {
            int n = k * PER_CLASS + i;
            uint32_t r[4];
            vnm_philox4x32(7, (uint64_t)n, 0, r);
            double radius = 0.05 + 0.95 * i / (PER_CLASS - 1); /* arms meet only near 0 */
            double noise = 0.1 * (vnm_philox_uniform(r[0]) + vnm_philox_uniform(r[1]) - 1.0);
            double theta = 4.0 * (double)k + 4.0 * radius + noise;
            x[2 * n] = (float)(radius * sin(theta));
            x[2 * n + 1] = (float)(radius * cos(theta));
            y[n] = k;
        }
}

typedef struct {
    vnm_tensor *w1, *b1, *w2, *b2;
} mlp;

static void mlp_init(vnm_ctx *ctx, mlp *net)
{
    net->w1 = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(HIDDEN, 2), "fc1.weight");
    net->b1 = vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(HIDDEN), "fc1.bias");
    net->w2 = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(CLASSES, HIDDEN), "fc2.weight");
    net->b2 = vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(CLASSES), "fc2.bias");
    /* PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    vnm_rng_uniform(ctx, net->w1, -sqrtf(0.5f), sqrtf(0.5f));
    vnm_rng_uniform(ctx, net->b1, -sqrtf(0.5f), sqrtf(0.5f));
    vnm_rng_uniform(ctx, net->w2, -1.0f / sqrtf(HIDDEN), 1.0f / sqrtf(HIDDEN));
    vnm_rng_uniform(ctx, net->b2, -1.0f / sqrtf(HIDDEN), 1.0f / sqrtf(HIDDEN));
}

/* Trains on the spiral; fills losses[STEPS]; returns the final train accuracy. */
static double train(float *losses)
{
    vnm_ctx *ctx = tu_ctx();
    assert_non_null(ctx);
    static float hx[2 * N];
    static int32_t hy[N];
    make_spiral(hx, hy);
    mlp net;
    mlp_init(ctx, &net);
    vnm_tensor *params[4] = {net.w1, net.b1, net.w2, net.b2};
    vnm_optim_config cfg = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    cfg.weight_decay = 1e-4;
    vnm_optim *opt = vnm_optim_create(ctx, &cfg);
    assert_non_null(opt);
    assert_int_equal(vnm_optim_add_decay_groups(opt, params, 4, NULL, 0), VNM_OK);
    vnm_schedule sched = {.kind = VNM_SCHEDULE_COSINE, .base_lr = 2e-2, .warmup_steps = 50,
                          .warmup_start_lr = 1e-4, .total_steps = STEPS, .min_lr = 1e-4};
    for (int step = 1; step <= STEPS; step++) {
        vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(N, 2), hx); // [N, 2]
        vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I32, 1, VNM_SHAPE(N), hy);    // [N]
        vnm_tensor *h = vnm_gelu(ctx, vnm_linear(ctx, x, net.w1, net.b1));          // [N, H]
        vnm_tensor *logits = vnm_linear(ctx, h, net.w2, net.b2);                     // [N, 3]
        vnm_tensor *loss = vnm_cross_entropy(ctx, logits, y, -100, 0.0f);
        vnm_optim_zero_grad(opt);
        if (!loss || vnm_backward(ctx, loss) != VNM_OK) fail_msg("%s", vnm_ctx_error(ctx));
        losses[step - 1] = vnm_item(ctx, loss);
        vnm_optim_clip_grad_norm(opt, 5.0);
        vnm_optim_set_lr(opt, vnm_schedule_lr(&sched, step - 1));
        if (vnm_optim_step(opt) != VNM_OK) fail_msg("%s", vnm_ctx_error(ctx));
        vnm_ctx_reset_step(ctx);
    }
    bool prev = vnm_ctx_set_grad_enabled(ctx, false);
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(N, 2), hx);
    vnm_tensor *logits = vnm_linear(ctx, vnm_gelu(ctx, vnm_linear(ctx, x, net.w1, net.b1)),
                                    net.w2, net.b2);
    vnm_ctx_set_grad_enabled(ctx, prev);
    float *hl = tu_host(ctx, logits);
    int correct = 0;
    for (int n = 0; n < N; n++) {
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (hl[n * CLASSES + c] > hl[n * CLASSES + best]) best = c;
        correct += best == hy[n];
    }
    free(hl);
    vnm_optim_destroy(opt);
    vnm_ctx_destroy(ctx);
    return (double)correct / N;
}

static void test_mlp_learns_spiral(void **state)
{
    (void)state;
    static float losses[STEPS], again[STEPS];
    double acc = train(losses);
    print_message("# spiral: loss %.4f -> %.4f, train accuracy %.2f %%\n", (double)losses[0],
                  (double)losses[STEPS - 1], 100.0 * acc);
    assert_true(losses[0] > 0.9f);   /* starts near ln 3 */
    assert_true(acc >= 0.99);
    assert_true(train(again) == acc);
    assert_memory_equal(losses, again, sizeof losses); /* bit-identical rerun */
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_mlp_learns_spiral)};
    return cmocka_run_group_tests_name("mlp_spiral", tests, NULL, NULL);
}
