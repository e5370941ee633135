/* tests/test_loss_scale.c — dynamic loss scaling (optim/loss_scale.h) against torch.amp.GradScaler:
 * tools/gen_loss_scale_fixture.py recorded 14 AdamW steps with inf and NaN gradients among them;
 * the same sequence through vnm_loss_scaler and optim/'s AdamW must give the same scales exactly
 * (backoff, growth after 3 good steps, skipped steps leaving the parameters and AdamW's step count
 * alone) and the same parameters to f32 rounding. Also: growth stops short of f32 overflow. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "optim/loss_scale.h"
#include "test_util.h"

static FILE *open_fixture(void)
{
    const char *dir = getenv("VNM_TEST_DATA");
    if (!dir) fail_msg("VNM_TEST_DATA is not set: run through `meson test`");
    char path[4096];
    snprintf(path, sizeof path, "%s/loss_scale_torch.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s (python3 tools/gen_loss_scale_fixture.py)", path);
    return f;
}

static void test_replays_torch_grad_scaler(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *p = vnm_param_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(3), "p");
    assert_int_equal(vnm_tensor_from_host(ctx, p, (float[]){0.25f, -0.5f, 1.0f}), VNM_OK);
    vnm_optim_config cfg = vnm_optim_config_default(VNM_OPTIM_ADAMW);
    cfg.lr = 0.1;
    vnm_optim *opt = vnm_optim_create(ctx, &cfg);
    assert_int_equal(vnm_optim_add_group(opt, &p, 1, 0.01, 1.0), 0);
    vnm_tensor *g = vnm_grad_buffer(ctx, p);
    vnm_loss_scaler s = vnm_loss_scaler_init(1024.0f, 3);
    FILE *f = open_fixture();
    char line[512];
    int steps = 0, skipped = 0;
    const float base[3] = {0.5f, -1.25f, 3.0f};
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        int k, bad;
        double used, after, want[3];
        assert_int_equal(sscanf(line, "%d %d %lf %lf %lf %lf %lf", &k, &bad, &used, &after,
                                &want[0], &want[1], &want[2]), 7);
        assert_true(s.scale == (float)used);
        float gh[3];
        for (int i = 0; i < 3; i++) gh[i] = base[i] * (float)k * s.scale;
        if (bad) gh[1] = k == 10 ? NAN : (k == 9 ? -INFINITY : INFINITY);
        assert_int_equal(vnm_tensor_from_host(ctx, g, gh), VNM_OK);
        bool finite = vnm_loss_scaler_unscale(&s, opt);
        assert_int_equal(finite, !bad);
        if (finite) assert_int_equal(vnm_optim_step(opt), VNM_OK);
        vnm_loss_scaler_update(&s, finite);
        assert_true(s.scale == (float)after);
        float ph[3];
        assert_int_equal(vnm_tensor_to_host(ctx, p, ph), VNM_OK);
        for (int i = 0; i < 3; i++)
            if (fabs(ph[i] - want[i]) > 2e-7 * fmax(1.0, fabs(want[i])))
                fail_msg("step %d: p[%d] = %.9g, torch %.9g", k, i, (double)ph[i], want[i]);
        steps++;
        skipped += bad;
    }
    fclose(f);
    assert_int_equal(steps, 14);
    assert_int_equal(s.skipped, skipped);
    assert_int_equal(vnm_optim_param_steps(opt, 0), steps - skipped);
    vnm_optim_destroy(opt);
}

static void test_growth_stops_before_overflow(void **state)
{
    (void)state;
    vnm_loss_scaler s = vnm_loss_scaler_init(FLT_MAX / 1.5f, 1);
    vnm_loss_scaler_update(&s, true);
    assert_true(s.scale == FLT_MAX / 1.5f);
    assert_int_equal(s.good_steps, 0);
    vnm_loss_scaler_update(&s, false);
    assert_true(s.scale == FLT_MAX / 3.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replays_torch_grad_scaler, tu_setup, tu_teardown),
        cmocka_unit_test(test_growth_stops_before_overflow),
    };
    return cmocka_run_group_tests_name("loss_scale", tests, NULL, NULL);
}
