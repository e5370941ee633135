/* tests/test_bench_train.c — `vnm bench train`: a one-step CPU run of the quickstart model prints
 * its two JSON lines (ms per step, images/s) in the `vnm bench` format; --device cuda without a
 * device exits 2 with the reason; bad options exit 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"
#include "train/bench.h"
#include "train/json.h"

typedef struct {
    int rc;
    char *out, *err; /* malloc'd */
} captured;

static char *slurp(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    rewind(f);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

/* Runs `vnm bench train args...` with stdout and stderr captured. */
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
    c.rc = vnm_cmd_bench_train(argc, (char **)args);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    c.out = slurp(out);
    c.err = slurp(err);
    return c;
}

static void test_cpu_one_step_prints_json(void **state)
{
    (void)state;
    const char *args[] = {"--model", "quickstart", "--batch", "4", "--steps", "1", "--reps", "1",
                          "--warmup", "0", "--threads", "2"};
    captured c = run(12, args);
    if (c.rc) fail_msg("exit %d: %s", c.rc, c.err);
    tu_assert_has(c.err, "config: img=28 patch=7 chans=1 classes=10 dim=96 depth=4 heads=4");
    const char *units[2] = {"ms", "img/s"};
    char *line = c.out;
    for (int i = 0; i < 2; i++) {
        char *end = strchr(line, '\n'), msg[256];
        assert_non_null(end);
        vnm_json *j = vnm_json_parse(line, (size_t)(end - line), "stdout", msg, sizeof msg);
        if (!j) fail_msg("%s", msg);
        assert_string_equal(vnm_json_get(j, "bench")->string, "train");
        tu_assert_has(vnm_json_get(j, "case")->string, "quickstart B=4 cpu");
        assert_string_equal(vnm_json_get(j, "unit")->string, units[i]);
        assert_true(vnm_json_get(j, "value")->number > 0);
        assert_int_equal(vnm_json_get(j, "baseline")->kind, VNM_JSON_NULL);
        assert_int_equal(vnm_json_get(j, "ratio")->kind, VNM_JSON_NULL);
        vnm_json_free(j);
        line = end + 1;
    }
    assert_string_equal(line, "");
    free(c.out);
    free(c.err);
}

/* Mixed precision (f16 runs its loss scaling), activation checkpointing and a pruned model: the
 * case says so. */
static void test_cpu_variants(void **state)
{
    (void)state;
    const char *opt[4][2] = {{"--precision", "bf16"}, {"--precision", "f16"},
                             {"--checkpointing", NULL}, {"--pattern", "64:2:5"}};
    const char *tag[4] = {"bf16", "f16", "checkpointed", "64:2:5"};
    for (int i = 0; i < 4; i++) {
        const char *args[] = {"--batch", "4", "--steps", "1", "--reps", "1", "--warmup", "1",
                              "--threads", "2", opt[i][0], opt[i][1]};
        captured c = run(opt[i][1] ? 12 : 11, args);
        if (c.rc) fail_msg("exit %d: %s", c.rc, c.err);
        char want[64];
        snprintf(want, sizeof want, "quickstart B=4 cpu 2t %s step", tag[i]);
        tu_assert_has(c.out, want);
        free(c.out);
        free(c.err);
    }
}

static void test_cuda_without_device_exits_2_with_reason(void **state)
{
    (void)state;
    char reason[256];
    if (vnm_device_available(VNM_DEVICE_CUDA, reason, sizeof reason)) {
        print_message("# skipped: a CUDA device is present (%s)\n", reason);
        skip();
    }
    const char *args[] = {"--device", "cuda"};
    captured c = run(2, args);
    assert_int_equal(c.rc, 2);
    tu_assert_has(c.err, "no CUDA device");
    tu_assert_has(c.err, reason);
    assert_string_equal(c.out, "");
    free(c.out);
    free(c.err);
}

static void test_bad_options_exit_2(void **state)
{
    (void)state;
    static const struct {
        const char *args[2];
        const char *needle;
    } cases[] = {
        {{"--model", "resnet50"}, "unknown model 'resnet50'"},
        {{"--device", "tpu"}, "--device needs cpu or cuda"},
        {{"--batch", "0"}, "--batch needs an integer"},
        {{"--model", "/nonexistent/recipe.yaml"}, "/nonexistent/recipe.yaml"},
        {{"--precision", "fp8"}, "--precision: 'fp8' (expected f32, bf16 or f16)"},
        {{"--pattern", "64:3:5"}, "--pattern: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        captured c = run(2, cases[i].args);
        assert_int_equal(c.rc, 2);
        tu_assert_has(c.err, cases[i].needle);
        free(c.out);
        free(c.err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_one_step_prints_json),
        cmocka_unit_test(test_cpu_variants),
        cmocka_unit_test(test_cuda_without_device_exits_2_with_reason),
        cmocka_unit_test(test_bad_options_exit_2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
