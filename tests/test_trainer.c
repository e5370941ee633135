/* tests/test_trainer.c — `vnm train` / `vnm resume` end to end on a miniature ViT and the real
 * Fashion-MNIST files: the run directory, bit-exact resume (in the middle of a dense stage, across
 * the prune, and in the middle of a sparse_fixed stage), bad recipes, and a diverging loss
 * (skipped when the data set is not installed); and a miniature LLaMA on byte tokens through the
 * three-stage LoRA schedule: when masks are chosen, what each checkpoint holds, bit-exact resume
 * inside lora_sparse_dynamic and lora_sparse_fixed, vnm eval and vnm export of such a run. The
 * trainer's console output goes to /dev/null so it does not mix with TAP; log.txt keeps it. */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../data/data.h"
#include "../sparse/sparse.h"
#include "../train/checkpoint.h"
#include "../train/eval.h"
#include "../train/export.h"
#include "../train/recipe.h"
#include "../train/state.h"
#include "../train/trainer.h"
#include "test_util.h"

/* dense 6 → prune 16:2:4 (permuted) → sparse_fixed 6, a checkpoint every 4 steps */
static const char mini_recipe[] =
    "run: {name: mini, seed: 7, threads: 2}\n"
    "model: {size: custom, embed_dim: 16, depth: 1, heads: 2, patch: 7}\n"
    "data: {path: " VNM_FASHION_MNIST_DIR ", batch_size: 16, val_batch_size: 1000,\n"
    "       augment: {crop_padding: 2, flip: true}, workers: 1}\n"
    "sparsity: {pattern: '16:2:4', targets: ['blocks.*.mlp.fc*.weight'], permute: true}\n"
    "optim: {name: adamw, lr: 0.003, clip_grad_norm: 1.0}\n"
    "schedule: {name: cosine, warmup_steps: 2}\n"
    "stages:\n"
    "  - {name: dense, kind: dense, steps: 6}\n"
    "  - {name: prune, kind: prune, steps: 1}\n"
    "  - {name: sparse, kind: sparse_fixed, steps: 6}\n"
    "checkpoint: {every: 4, keep_last: 10}\n"
    "log: {every: 1}\n";

/* dense 4 → sparse_srste 6 (masks every 3 steps) → sparse_fixed 2, a checkpoint every 4 steps */
static const char srste_recipe[] =
    "run: {name: srste, seed: 3, threads: 2}\n"
    "model: {size: custom, embed_dim: 16, depth: 1, heads: 2, patch: 7}\n"
    "data: {path: " VNM_FASHION_MNIST_DIR ", batch_size: 16, val_batch_size: 1000, workers: 1}\n"
    "sparsity: {pattern: '16:2:4', targets: ['blocks.*.mlp.fc*.weight', "
    "'blocks.*.attn.proj.weight']}\n"
    "optim: {name: adamw, lr: 0.01}\n"
    "schedule: {name: cosine, warmup_steps: 1, per_stage: true}\n"
    "stages:\n"
    "  - {name: dense, kind: dense, steps: 4}\n"
    "  - {name: dyn, kind: sparse_srste, steps: 6, srste: {every: 3, lambda_w: 0.01}}\n"
    "  - {name: sparse, kind: sparse_fixed, steps: 2}\n"
    "checkpoint: {every: 4, keep_last: 10}\n"
    "log: {every: 1}\n";

static bool have_data(void)
{
    struct stat sb;
    return stat(VNM_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", &sb) == 0;
}

#define REQUIRE_DATA()                                                                  \
    do {                                                                                \
        if (!have_data()) {                                                             \
            print_message("# skipped: " VNM_FASHION_MNIST_DIR " is missing (install the " \
                          "Debian package fashion-mnist)\n");                           \
            skip();                                                                     \
        }                                                                               \
    } while (0)

static char *write_file(const char *dir, const char *name, const char *text)
{
    char *p = tu_path(dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static char *read_in(const char *dir, const char *rel)
{
    char *p = tu_path(dir, rel), *s = tu_read_file(p);
    free(p);
    return s;
}

static bool exists(const char *dir, const char *rel)
{
    char *p = tu_path(dir, rel);
    struct stat sb;
    bool ok = stat(p, &sb) == 0;
    free(p);
    return ok;
}

/* Runs a command entry with its stdout going to the file `to` (NULL: nowhere); returns its exit
 * code. */
static int run_cmd_to(int (*cmd)(int, char **), int argc, char **argv, const char *to)
{
    fflush(stdout);
    int saved = dup(1), fd = open(to ? to : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    close(fd);
    int rc = cmd(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return rc;
}

static int run_cmd_argv(int (*cmd)(int, char **), int argc, char **argv)
{
    return run_cmd_to(cmd, argc, argv, NULL);
}

/* Runs `vnm train|resume ARG overrides...` with the console silenced; returns the exit code. */
static int run_cmd(bool resume, const char *arg, const char *const *overrides, int n)
{
    char *argv[16];
    argv[0] = (char *)arg;
    for (int i = 0; i < n; i++) argv[1 + i] = (char *)overrides[i];
    return run_cmd_argv(resume ? vnm_cmd_resume : vnm_cmd_train, 1 + n, argv);
}

/* The "loss" value of the train line of `step`, as written (NULL when absent); malloc'd. */
static char *train_loss(const char *metrics, int64_t step)
{
    char key[64];
    snprintf(key, sizeof key, "{\"step\":%lld,", (long long)step);
    for (const char *p = strstr(metrics, key); p; p = strstr(p + 1, key)) {
        const char *end = strchr(p, '\n');
        const char *split = strstr(p, "\"split\":\"train\"");
        if (!split || (end && split > end)) continue;
        const char *l = strstr(p, "\"loss\":") + 7;
        return strndup(l, strcspn(l, ",}"));
    }
    return NULL;
}

/* How many lines of metrics are records of `step` (train, val or the final event). */
static int step_records(const char *metrics, int64_t step)
{
    char key[64];
    snprintf(key, sizeof key, "\"step\":%lld,", (long long)step);
    int n = 0;
    for (const char *p = strstr(metrics, key); p; p = strstr(p + 1, key)) n++;
    return n;
}

static const char *last_line(const char *text)
{
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == '\n') n--;
    while (n > 0 && text[n - 1] != '\n') n--;
    return text + n;
}

static size_t ckpt_dtype_size(vnm_ckpt_dtype dt)
{
    static const size_t sizes[] = {4, 2, 1, 4, 8, 8, 8};
    return sizes[dt];
}

/* Every dataset of the two checkpoints under these groups is byte-identical. */
static void assert_same_tensors(const char *a, const char *b)
{
    char err[1024];
    vnm_ckpt_reader *ra = vnm_ckpt_open(a, err, sizeof err), *rb = vnm_ckpt_open(b, err, sizeof err);
    assert_non_null(ra);
    assert_non_null(rb);
    static const char *const groups[] = {"/model", "/sparse", "/optim", "/rng", "/data"};
    int compared = 0;
    for (int g = 0; g < 5; g++) {
        char **na, **nb;
        int64_t ca, cb;
        vnm_status sa = vnm_ckpt_list(ra, groups[g], &na, &ca, err, sizeof err);
        assert_int_equal(vnm_ckpt_list(rb, groups[g], &nb, &cb, err, sizeof err), sa);
        if (sa != VNM_OK) continue; /* a group neither has (/sparse of a model without any) */
        assert_int_equal(ca, cb);
        for (int64_t i = 0; i < ca; i++) {
            assert_string_equal(na[i], nb[i]);
            vnm_ckpt_dtype dt;
            int nd;
            int64_t shape[VNM_CKPT_MAX_DIMS], n = 1;
            assert_int_equal(vnm_ckpt_shape(ra, na[i], &dt, &nd, shape, err, sizeof err), VNM_OK);
            for (int d = 0; d < nd; d++) n *= shape[d];
            size_t bytes = (size_t)n * ckpt_dtype_size(dt);
            char *x = malloc(bytes + 1), *y = malloc(bytes + 1);
            assert_int_equal(vnm_ckpt_read(ra, na[i], dt, nd, shape, x, err, sizeof err), VNM_OK);
            assert_int_equal(vnm_ckpt_read(rb, na[i], dt, nd, shape, y, err, sizeof err), VNM_OK);
            if (memcmp(x, y, bytes)) fail_msg("%s differs between %s and %s", na[i], a, b);
            free(x);
            free(y);
            compared++;
        }
        vnm_ckpt_free_names(na, ca);
        vnm_ckpt_free_names(nb, cb);
    }
    assert_true(compared > 10);
    vnm_ckpt_close(ra);
    vnm_ckpt_close(rb);
}

/* A full run: exit 0, recipe.yaml that loads again, metrics ending in a done line, log.txt with
 * the progress lines and the prune report, the periodic and end-of-stage checkpoints. */
static void test_train_run_dir(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "mini.yaml", mini_recipe);
    char *out = tu_path(dir, "run"), ov[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", out);
    const char *ovs[] = {ov};
    assert_int_equal(run_cmd(false, recipe, ovs, 1), 0);

    char *metrics_path = tu_path(out, "metrics.jsonl"), *metrics = tu_read_file(metrics_path);
    assert_non_null(metrics);
    tu_assert_has(last_line(metrics), "{\"event\":\"done\",\"step\":12,");
    tu_assert_has(metrics, "\"split\":\"val\"");
    tu_assert_has(metrics, "\"unit\":\"img/s\",\"mem_bytes\":");
    for (int64_t s = 1; s <= 12; s++) {
        char *loss = train_loss(metrics, s);
        assert_non_null(loss);
        free(loss);
    }

    char *rpath = tu_path(out, "recipe.yaml"), err[1024];
    vnm_recipe r;
    assert_int_equal(vnm_recipe_load(rpath, NULL, 0, &r, err, sizeof err), VNM_OK);
    assert_int_equal(r.n_stages, 3);
    assert_string_equal(r.run.output_dir, out);
    vnm_recipe_free(&r);

    char *log = read_in(out, "log.txt");
    assert_non_null(log);
    tu_assert_has(log, "step 12/12 [sparse] loss ");
    tu_assert_has(log, "prune: 2 linears to 16:2:4, kept score ");
    tu_assert_has(log, "eval step 12 [sparse] val loss ");
    static const char *const ckpts[] = {"ckpt/step_00000004.h5", "ckpt/step_00000006.h5",
                                        "ckpt/step_00000008.h5", "ckpt/step_00000012.h5",
                                        "ckpt/latest"};
    for (int i = 0; i < 5; i++) assert_true(exists(out, ckpts[i]));
    /* a second `train` into the same directory would mix two runs */
    assert_int_equal(run_cmd(false, recipe, ovs, 1), 2);
    free(log);
    free(rpath);
    free(metrics);
    free(metrics_path);
    free(out);
    free(recipe);
}

/* Resumes the checkpoint of `step` into another directory and checks that the remaining steps
 * log the same losses and end in the same tensors as the uninterrupted run in `full`. */
/* A resume from full's checkpoint of `step` into dir/name reproduces the losses of every later
 * step up to `last` and the final checkpoint's tensors exactly. */
static void check_resume_to(const char *dir, const char *full, int64_t step, int64_t last,
                            const char *name)
{
    char ck[4200], ov[4200];
    snprintf(ck, sizeof ck, "%s/ckpt/step_%08lld.h5", full, (long long)step);
    char *out = tu_path(dir, name);
    snprintf(ov, sizeof ov, "run.output_dir=%s", out);
    const char *ovs[] = {ov};
    assert_int_equal(run_cmd(true, ck, ovs, 1), 0);

    char *fm = tu_path(full, "metrics.jsonl"), *rm = tu_path(out, "metrics.jsonl");
    char *mf = tu_read_file(fm), *mr = tu_read_file(rm);
    assert_non_null(mr);
    assert_null(train_loss(mr, step)); /* nothing before the checkpoint is redone */
    for (int64_t s = step + 1; s <= last; s++) {
        char *a = train_loss(mf, s), *b = train_loss(mr, s);
        assert_non_null(a);
        assert_non_null(b);
        if (strcmp(a, b)) fail_msg("step %lld: loss %s uninterrupted, %s resumed from %lld",
                                   (long long)s, a, b, (long long)step);
        free(a);
        free(b);
    }
    char done[64], final[64];
    snprintf(done, sizeof done, "{\"event\":\"done\",\"step\":%lld,", (long long)last);
    snprintf(final, sizeof final, "ckpt/step_%08lld.h5", (long long)last);
    tu_assert_has(last_line(mr), done);
    char *fa = tu_path(full, final), *fb = tu_path(out, final);
    assert_same_tensors(fa, fb);
    free(fa);
    free(fb);
    free(mf);
    free(mr);
    free(fm);
    free(rm);
    free(out);
}

/* The ViT runs end at step 12. */
static void check_resume(const char *dir, const char *full, int64_t step, const char *name)
{
    check_resume_to(dir, full, step, 12, name);
}

/* THE resume test: 12 uninterrupted steps vs resumes from step 4 (dense; the resumed run then
 * prunes itself), 6 (after the prune: sparse structure and permutation restored) and 8 (in the
 * middle of sparse_fixed): identical losses and final weights, moments, RNG and data position. */
static void test_resume_bit_exact(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "mini.yaml", mini_recipe);
    char *full = tu_path(dir, "full"), ov[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", full);
    const char *ovs[] = {ov};
    assert_int_equal(run_cmd(false, recipe, ovs, 1), 0);
    check_resume(dir, full, 4, "from4");
    check_resume(dir, full, 6, "from6");
    check_resume(dir, full, 8, "from8");
    /* resuming the finished run from step 8 in its own directory: the records of steps 9..12
     * written the first time are replaced, not repeated */
    char *ck = tu_path(full, "ckpt/step_00000008.h5"), *fm = tu_path(full, "metrics.jsonl");
    char *before = tu_read_file(fm);
    assert_int_equal(run_cmd(true, ck, NULL, 0), 0);
    char *after = tu_read_file(fm);
    for (int64_t s = 1; s <= 12; s++) {
        assert_int_equal(step_records(after, s), step_records(before, s));
        char *a = train_loss(before, s), *b = train_loss(after, s);
        assert_string_equal(a, b);
        free(a);
        free(b);
    }
    free(before);
    free(after);
    free(ck);
    free(fm);
    free(full);
    free(recipe);
}

/* The value of `key` in the last train record of metrics (NaN when absent). */
static double last_train_value(const char *metrics, const char *key)
{
    double v = NAN;
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    for (const char *p = metrics; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *end = strchr(p, '\n'), *split = strstr(p, "\"split\":\"train\""), *at;
        if (split && (!end || split < end) && (at = strstr(p, k)) && (!end || at < end))
            v = strtod(at + strlen(k), NULL);
    }
    return v;
}

/* Mixed precision end to end. bf16 products train the mini run to losses near the f32 run's but
 * not equal to them (the operands are rounded). f16 with an initial loss scale too large for the
 * first gradients skips steps, halves the scale and says so; the scale and the skipped steps are
 * in metrics.jsonl; a resume continues bit-exactly, the scaler's state coming from the
 * checkpoint (with the recipe's initial scale instead, the resumed steps would differ). */
static void test_mixed_precision_runs(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "mini.yaml", mini_recipe);
    const char *names[3] = {"f32", "bf16", "f16"};
    char *out[3], *metrics[3];
    for (int i = 0; i < 3; i++) {
        char ov[4200], prec[64];
        out[i] = tu_path(dir, names[i]);
        snprintf(ov, sizeof ov, "run.output_dir=%s", out[i]);
        snprintf(prec, sizeof prec, "run.precision=%s", names[i]);
        const char *ovs[] = {ov, prec, "run.loss_scale=2097152",
                             "run.loss_scale_growth_interval=2"};
        assert_int_equal(run_cmd(false, recipe, ovs, 4), 0);
        metrics[i] = read_in(out[i], "metrics.jsonl");
        tu_assert_has(last_line(metrics[i]), "{\"event\":\"done\",\"step\":12,");
    }
    int differ = 0;
    for (int64_t st = 1; st <= 12; st++) {
        char *a = train_loss(metrics[0], st), *b = train_loss(metrics[1], st);
        double x = strtod(a, NULL), y = strtod(b, NULL);
        if (fabs(x - y) > 0.02 * fmax(1.0, fabs(x)))
            fail_msg("step %lld: loss %s in f32, %s with bf16 products", (long long)st, a, b);
        differ += strcmp(a, b) != 0;
        free(a);
        free(b);
    }
    assert_true(differ > 0);
    assert_null(strstr(metrics[0], "loss_scale"));
    assert_null(strstr(metrics[1], "loss_scale"));
    char *log = read_in(out[2], "log.txt");
    tu_assert_has(log, "f16 gradients overflowed at loss scale 2.09715e+06; step skipped, scale "
                       "now 1.04858e+06");
    double skipped = last_train_value(metrics[2], "skipped_steps");
    assert_true(skipped >= 1 && skipped < 12);
    assert_true(last_train_value(metrics[2], "loss_scale") > 0);
    check_resume(dir, out[2], 4, "f16from4");
    check_resume(dir, out[2], 8, "f16from8");
    char *text = NULL, err[512];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(vnm_inspect_print(out[2], f, err, sizeof err), VNM_OK);
    fclose(f);
    tu_assert_has(text, "loss scale: ");
    tu_assert_has(text, " steps skipped");
    free(text);
    for (int i = 0; i < 3; i++) {
        free(out[i]);
        free(metrics[i]);
    }
    free(log);
    free(recipe);
}

/* SR-STE: a resume in the middle of the dynamic stage (step 8: the masks come from the checkpoint,
 * they were chosen from an earlier W) and after its freeze (step 10) matches the uninterrupted
 * run; the checkpoint inside the stage holds the masks, the one after it sparse weights. */
static void test_srste_stage(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "srste.yaml", srste_recipe);
    char *full = tu_path(dir, "full"), ov[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", full);
    const char *ovs[] = {ov};
    assert_int_equal(run_cmd(false, recipe, ovs, 1), 0);
    char err[1024];
    char *mid = tu_path(full, "ckpt/step_00000008.h5"), *end = tu_path(full, "ckpt/step_00000012.h5");
    vnm_ckpt_reader *r = vnm_ckpt_open(mid, err, sizeof err);
    assert_non_null(r);
    int64_t mask_step = -1;
    assert_int_equal(vnm_ckpt_read(r, "/model/blocks.0.mlp.fc1.weight.srste_mask_step",
                                   VNM_CKPT_I64, 1, VNM_SHAPE(1), &mask_step, err, sizeof err),
                     VNM_OK);
    assert_int_equal(mask_step, 7); /* chosen at steps 4 and 7: at 8 it is not recomputable */
    vnm_ckpt_close(r);
    r = vnm_ckpt_open(end, err, sizeof err);
    assert_non_null(r);
    vnm_ckpt_dtype dt;
    int nd;
    int64_t shape[VNM_CKPT_MAX_DIMS];
    assert_int_equal(vnm_ckpt_shape(r, "/sparse/blocks.0.mlp.fc1.weight/vals", &dt, &nd, shape,
                                    err, sizeof err),
                     VNM_OK);
    assert_int_not_equal(vnm_ckpt_shape(r, "/model/blocks.0.mlp.fc1.weight.srste_mask", &dt, &nd,
                                        shape, NULL, 0),
                         VNM_OK);
    vnm_ckpt_close(r);
    check_resume(dir, full, 8, "from8");
    check_resume(dir, full, 10, "from10");
    free(mid);
    free(end);
    free(full);
    free(recipe);
}

/* RIA scores with calibration batches: the prune runs and the checkpoint records the score. */
static void test_ria_prune(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "mini.yaml", mini_recipe);
    char *out = tu_path(dir, "ria"), ov[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", out);
    const char *ovs[] = {ov, "sparsity.score=ria", "sparsity.calibration_batches=2",
                         "stages.dense.steps=2", "stages.sparse.steps=2"};
    assert_int_equal(run_cmd(false, recipe, ovs, 5), 0);
    char *log = read_in(out, "log.txt"), *ck = tu_path(out, "ckpt"), err[1024], *score = NULL;
    tu_assert_has(log, "prune: 2 linears to 16:2:4");
    vnm_ckpt_reader *r = vnm_ckpt_open(ck, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(vnm_ckpt_get_str(r, "/sparse/blocks.0.mlp.fc1.weight", "score", &score, err,
                                      sizeof err), VNM_OK);
    assert_string_equal(score, "ria");
    vnm_ckpt_close(r);
    free(score);
    free(ck);
    free(log);
    free(out);
    free(recipe);
}

/* Bad input exits 2: an unknown key, a missing recipe, a missing checkpoint, an unimplemented
 * stage kind, a per-stage weight decay the optimiser cannot apply, an SR-STE stage on cuda. */
static void test_bad_input(void **state)
{
    const char *dir = *state;
    char *bad = write_file(dir, "bad.yaml", "run: {name: x}\noptim: {lrr: 0.1}\n");
    assert_int_equal(run_cmd(false, bad, NULL, 0), 2);
    char *missing = tu_path(dir, "missing.yaml");
    assert_int_equal(run_cmd(false, missing, NULL, 0), 2);
    assert_int_equal(run_cmd(true, missing, NULL, 0), 2);
    char *lora = write_file(dir, "lora.yaml",
                            "run: {name: s}\nlora: {rank: 4}\n"
                            "stages: [{name: a, kind: lora_dense, steps: 2}]\n");
    char ov[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s/lora", dir);
    const char *ovs[] = {ov};
    assert_int_equal(run_cmd(false, lora, ovs, 1), 2);
    char *wd = write_file(dir, "wd.yaml",
                          "run: {name: w}\nstages: [{name: a, kind: dense, steps: 2, "
                          "optim: {weight_decay: 0}}]\n");
    assert_int_equal(run_cmd(false, wd, ovs, 1), 2);
    /* SR-STE on cuda: refused with or without a device (it runs on the cpu backend only) */
    char *cuda = write_file(dir, "cuda.yaml",
                            "run: {name: c, device: cuda}\nsparsity: {pattern: '16:2:4'}\n"
                            "stages: [{name: a, kind: dense, steps: 1},\n"
                            "         {name: s, kind: sparse_srste, steps: 1}]\n");
    assert_int_equal(run_cmd(false, cuda, ovs, 1), 2);
    free(cuda);
    free(wd);
    free(lora);
    free(missing);
    free(bad);
}

/* A loss that turns non-finite (the sparse stage's lr overridden to 1e30) stops with exit 1,
 * names the step, writes no checkpoint and no done line; the last good checkpoint stays latest. */
static void test_nan_loss_stops(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "mini.yaml", mini_recipe);
    char *out = tu_path(dir, "nan"), ov[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", out);
    const char *ovs[] = {ov, "stages.sparse.optim.lr=1e30"};
    assert_int_equal(run_cmd(false, recipe, ovs, 2), 1);
    char *log = read_in(out, "log.txt");
    tu_assert_has(log, "[sparse]: loss is ");
    tu_assert_has(log, "stopping without a checkpoint");
    assert_true(exists(out, "ckpt/step_00000006.h5"));
    assert_false(exists(out, "ckpt/step_00000008.h5"));
    char *latest = tu_path(out, "ckpt"), err[1024];
    vnm_ckpt_reader *r = vnm_ckpt_open(latest, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(vnm_ckpt_step(r), 6);
    vnm_ckpt_close(r);
    char *metrics = read_in(out, "metrics.jsonl");
    assert_null(strstr(metrics, "\"event\":\"done\""));
    free(metrics);
    free(latest);
    free(log);
    free(out);
    free(recipe);
}

/* The highest step with a train line in metrics (0 when none). */
static int64_t last_train_step(const char *metrics)
{
    int64_t last = 0;
    for (const char *p = metrics; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        long long s;
        if (sscanf(p, "{\"step\":%lld,", &s) == 1 && strstr(p, "\"split\":\"train\"") &&
            strstr(p, "\"split\":\"train\"") < strchr(p, '\n'))
            last = s;
    }
    return last;
}

/* SIGINT during a long dense stage: the child checkpoints at the next step boundary and exits 0;
 * the checkpoint is at the last logged step, and `vnm resume` (with shortened stages) finishes.
 * Runs first, before this process has started OpenMP threads, because the child is a fork. */
static void test_sigint_checkpoints(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "mini.yaml", mini_recipe);
    char *out = tu_path(dir, "sig"), ov[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", out);
    const char *ovs[] = {ov, "stages.dense.steps=1000000", "checkpoint.every=0"};
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(run_cmd(false, recipe, ovs, 3));
    int64_t seen = 0;
    for (int i = 0; i < 1200 && seen < 3; i++) { /* up to 60 s for the first steps */
        nanosleep(&(struct timespec){0, 50000000}, NULL);
        char *m = read_in(out, "metrics.jsonl");
        seen = m ? last_train_step(m) : 0;
        free(m);
    }
    assert_true(seen >= 3);
    kill(pid, SIGINT);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char *log = read_in(out, "log.txt"), *metrics = read_in(out, "metrics.jsonl");
    tu_assert_has(log, "stopped by a signal at step ");
    int64_t stopped = last_train_step(metrics);
    char *ck = tu_path(out, "ckpt"), err[1024];
    vnm_ckpt_reader *r = vnm_ckpt_open(ck, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(vnm_ckpt_step(r), stopped);
    vnm_ckpt_close(r);
    char steps[64];
    snprintf(steps, sizeof steps, "stages.dense.steps=%lld", (long long)stopped + 1);
    const char *rov[] = {steps, "stages.sparse.steps=1"};
    assert_int_equal(run_cmd(true, out, rov, 2), 0);
    free(metrics);
    metrics = read_in(out, "metrics.jsonl");
    tu_assert_has(last_line(metrics), "\"event\":\"done\"");
    free(metrics);
    free(log);
    free(ck);
    free(out);
    free(recipe);
}

/* ---- the LLaMA task: three-stage LoRA on token shards ---- */

/* dense 6 → lora_dense 4 → lora_sparse_dynamic 9 (re-prune every 3 steps, from step 10) →
 * lora_sparse_fixed 5; a checkpoint after every step */
static const char llama_recipe[] =
    "run: {name: lm, seed: 5, threads: 2}\n"
    "model: {arch: llama, size: custom, embed_dim: 32, depth: 1, heads: 4, kv_heads: 2,\n"
    "        mlp_ratio: 2}\n"
    "data: {dataset: tokens, seq_len: 16, batch_size: 4, val_batch_size: 8}\n"
    "sparsity: {pattern: '16:2:4', score: ria, calibration_batches: 2,\n"
    "           targets: ['model.layers.*_proj.weight']}\n"
    "lora: {rank: 4, alpha: 8, targets: [all-linear], base_dtype: bf16}\n"
    "optim: {name: adamw, lr: 0.01}\n"
    "schedule: {name: constant}\n"
    "stages:\n"
    "  - {name: pre, kind: dense, steps: 6}\n"
    "  - {name: warm, kind: lora_dense, steps: 4}\n"
    "  - {name: dyn, kind: lora_sparse_dynamic, steps: 9, lora: {every: 3, lambda: 0.01}}\n"
    "  - {name: fixed, kind: lora_sparse_fixed, steps: 5}\n"
    "checkpoint: {every: 1, keep_last: 100}\n"
    "log: {every: 1}\n";

/* Byte-token train and val shards of a small pseudo-English text under dir/tok. */
static char *write_tokens(const char *dir)
{
    static const char *const words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat ", "and ",
                                        "dog ", "ran ", "far ", "away. "};
    char *tok = tu_path(dir, "tok"), err[512];
    assert_int_equal(mkdir(tok, 0777), 0);
    for (int split = 0; split < 2; split++) {
        int64_t n = split ? 1500 : 6000, k = 0;
        uint32_t *ids = malloc((size_t)n * sizeof *ids);
        uint64_t x = 12345 + (uint64_t)split;
        while (k < n) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            const char *w = words[(x >> 33) % 11];
            for (size_t i = 0; w[i] && k < n; i++) ids[k++] = (uint8_t)w[i];
        }
        char *path = tu_path(tok, split ? "val-00000.tok" : "train-00000.tok");
        if (vnm_token_shard_write(path, ids, n, VNM_BYTE_VOCAB, VNM_BYTE_EOS, err, sizeof err))
            fail_msg("%s", err);
        free(path);
        free(ids);
    }
    return tok;
}

/* The mask info ([mask step, has previous]), mask and previous mask of the first pruned linear
 * in the checkpoint after `step`; *found false when the checkpoint has none (before the LoRA
 * stages). */
static void lora_mask_at(const char *full, int64_t step, int64_t info[2], uint8_t *mask,
                         uint8_t *prev, bool *found)
{
    char rel[64], err[512];
    snprintf(rel, sizeof rel, "ckpt/step_%08lld.h5", (long long)step);
    char *path = tu_path(full, rel);
    vnm_ckpt_reader *rd = vnm_ckpt_open(path, err, sizeof err);
    if (!rd) fail_msg("%s", err);
    static const char *const base = "/model/model.layers.0.self_attn.q_proj";
    char ds[128];
    snprintf(ds, sizeof ds, "%s.lora_mask_info", base);
    vnm_ckpt_dtype dt;
    int nd;
    int64_t shape[VNM_CKPT_MAX_DIMS];
    *found = vnm_ckpt_shape(rd, ds, &dt, &nd, shape, NULL, 0) == VNM_OK;
    if (*found) {
        assert_int_equal(vnm_ckpt_read(rd, ds, VNM_CKPT_I64, 1, VNM_SHAPE(2), info, err,
                                       sizeof err), VNM_OK);
        snprintf(ds, sizeof ds, "%s.lora_mask", base);
        assert_int_equal(vnm_ckpt_read(rd, ds, VNM_CKPT_U8, 2, VNM_SHAPE(32, 32), mask, err,
                                       sizeof err), VNM_OK);
        snprintf(ds, sizeof ds, "%s.lora_prev_mask", base);
        assert_int_equal(vnm_ckpt_read(rd, ds, VNM_CKPT_U8, 2, VNM_SHAPE(32, 32), prev, err,
                                       sizeof err), VNM_OK);
    }
    vnm_ckpt_close(rd);
    free(path);
}

static char *run_llama_recipe(const char *dir, const char *name, const char *text)
{
    char *recipe = write_file(dir, "lm.yaml", text), *tok = write_tokens(dir);
    char *full = tu_path(dir, name), ov[4200], dp[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", full);
    snprintf(dp, sizeof dp, "data.path=%s", tok);
    const char *ovs[] = {ov, dp};
    assert_int_equal(run_cmd(false, recipe, ovs, 2), 0);
    free(recipe);
    free(tok);
    return full;
}

static char *run_llama(const char *dir, const char *name)
{
    return run_llama_recipe(dir, name, llama_recipe);
}

/* Runs the recipe file into dir/name with the overrides; returns the run directory. */
static char *run_into(const char *dir, const char *recipe, const char *name,
                      const char *const *extra, int n_extra)
{
    char *out = tu_path(dir, name), ov[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", out);
    const char *ovs[8] = {ov};
    for (int i = 0; i < n_extra; i++) ovs[1 + i] = extra[i];
    assert_int_equal(run_cmd(false, recipe, ovs, 1 + n_extra), 0);
    return out;
}

/* The value of "mem_bytes" in the train record of `step` (0 when absent). */
static double train_mem(const char *metrics, int64_t step)
{
    char key[64];
    snprintf(key, sizeof key, "{\"step\":%lld,\"stage\"", (long long)step);
    const char *p = strstr(metrics, key), *m = p ? strstr(p, "\"mem_bytes\":") : NULL;
    return m ? strtod(m + 12, NULL) : 0;
}

/* The run of `recipe` (with the overrides `extra`) with model.activation_checkpointing on logs the
 * same loss at every step up to `last`, ends in byte-identical tensors (weights, masks, moments,
 * RNG, data) and takes less memory in its first step. */
static void check_checkpointing(const char *dir, const char *recipe, const char *tag,
                                const char *const *extra, int n_extra, int64_t last)
{
    char plain[64], ck[64];
    snprintf(plain, sizeof plain, "%s-plain", tag);
    snprintf(ck, sizeof ck, "%s-checkpointed", tag);
    const char *ov[8];
    for (int i = 0; i < n_extra; i++) ov[i] = extra[i];
    ov[n_extra] = "model.activation_checkpointing=true";
    char *a = run_into(dir, recipe, plain, ov, n_extra);
    char *b = run_into(dir, recipe, ck, ov, n_extra + 1);
    char *ma = read_in(a, "metrics.jsonl"), *mb = read_in(b, "metrics.jsonl");
    for (int64_t s = 1; s <= last; s++) {
        char *x = train_loss(ma, s), *y = train_loss(mb, s);
        assert_non_null(x);
        if (!y || strcmp(x, y))
            fail_msg("%s step %lld: loss %s, checkpointed %s", tag, (long long)s, x, y ? y : "-");
        free(x);
        free(y);
    }
    /* the first step's peak, before any evaluation (whose batch can be larger) adds its own */
    if (!(train_mem(mb, 1) < train_mem(ma, 1)))
        fail_msg("%s: %.0f bytes checkpointed, %.0f plain", tag, train_mem(mb, 1),
                 train_mem(ma, 1));
    char final[64];
    snprintf(final, sizeof final, "ckpt/step_%08lld.h5", (long long)last);
    char *fa = tu_path(a, final), *fb = tu_path(b, final);
    assert_same_tensors(fa, fb);
    free(fa), free(fb), free(ma), free(mb), free(a), free(b);
}

/* Activation checkpointing changes nothing but memory: the ViT through prune (calibrated by a
 * linear hook, which runs segments once) and sparse_fixed, and through SR-STE's dynamic masks. */
static void test_checkpointing_vit(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *mini = write_file(dir, "mini.yaml", mini_recipe);
    char *srste = write_file(dir, "srste.yaml", srste_recipe);
    const char *ov[2] = {"model.depth=3", "sparsity.score=ria"};
    check_checkpointing(dir, mini, "mini", ov, 2, 12);
    check_checkpointing(dir, srste, "srste", ov, 1, 12);
    free(mini);
    free(srste);
}

/* ... and the LLaMA through the three LoRA stages, the frozen base's layers taking inputs that
 * need no gradient while their adapters do. */
static void test_checkpointing_llama(void **state)
{
    const char *dir = *state;
    char *recipe = write_file(dir, "lm.yaml", llama_recipe), *tok = write_tokens(dir), dp[4200];
    snprintf(dp, sizeof dp, "data.path=%s", tok);
    const char *ov[2] = {dp, "model.depth=3"};
    check_checkpointing(dir, recipe, "lm", ov, 2, 24);
    free(recipe);
    free(tok);
}

/* The losses of two runs agree to `tol` (relative) at every step up to `last`. */
static void assert_losses_close(const char *a, const char *b, int64_t last, double tol)
{
    char *ma = read_in(a, "metrics.jsonl"), *mb = read_in(b, "metrics.jsonl");
    for (int64_t s = 1; s <= last; s++) {
        char *x = train_loss(ma, s), *y = train_loss(mb, s);
        assert_non_null(x);
        assert_non_null(y);
        double u = strtod(x, NULL), v = strtod(y, NULL);
        if (fabs(u - v) > tol * fabs(u))
            fail_msg("step %lld: loss %s against %s", (long long)s, x, y);
        free(x);
        free(y);
    }
    free(ma);
    free(mb);
}

/* Gradient accumulation: 2 batches of 8 per optimiser step train like batches of 16 (the same
 * samples, augmentations and mean gradient), up to the order of float sums; the data position
 * advances by 2 batches a step, so a resume continues exactly. */
static void test_gradient_accumulation(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "mini.yaml", mini_recipe);
    const char *ov[2] = {"data.batch_size=8", "optim.gradient_accumulation_steps=2"};
    char *a = run_into(dir, recipe, "batch16", NULL, 0);
    char *b = run_into(dir, recipe, "accum2x8", ov, 2);
    assert_losses_close(a, b, 12, 1e-5);
    char *mb = read_in(b, "metrics.jsonl");
    tu_assert_has(mb, "\"unit\":\"img/s\"");
    free(mb);
    check_resume(dir, b, 4, "accum-from4");
    check_resume(dir, b, 8, "accum-from8");
    free(a), free(b), free(recipe);
}

/* The dense form of the ViT's sparse_fixed stage (what a GPU runs: the compressed values
 * scattered into dense weights; forced on the CPU by VNM_SPARSE_DENSE=1) trains like the sparse
 * kernels, through a permuted prune: up to the order of float sums the same losses, the same
 * compressed structure, and bit-exact resume. */
static void test_vit_dense_form(void **state)
{
    REQUIRE_DATA();
    const char *dir = *state;
    char *recipe = write_file(dir, "mini.yaml", mini_recipe);
    char *a = run_into(dir, recipe, "kernels", NULL, 0);
    setenv("VNM_SPARSE_DENSE", "1", 1);
    char *b = run_into(dir, recipe, "dense", NULL, 0);
    assert_losses_close(a, b, 12, 1e-4);
    char err[1024], *fa = tu_path(a, "ckpt/step_00000012.h5");
    char *fb = tu_path(b, "ckpt/step_00000012.h5");
    vnm_ckpt_reader *ra = vnm_ckpt_open(fa, err, sizeof err);
    vnm_ckpt_reader *rb = vnm_ckpt_open(fb, err, sizeof err);
    assert_non_null(ra);
    assert_non_null(rb);
    static const char *const fixed[] = {"slots", "cols", "rows"};
    for (int k = 0; k < 3; k++) {
        char path[128];
        snprintf(path, sizeof path, "/sparse/blocks.0.mlp.fc1.weight/%s", fixed[k]);
        vnm_ckpt_dtype dt;
        int nd;
        int64_t shape[VNM_CKPT_MAX_DIMS], n = 1;
        assert_int_equal(vnm_ckpt_shape(ra, path, &dt, &nd, shape, err, sizeof err), VNM_OK);
        for (int d = 0; d < nd; d++) n *= shape[d];
        size_t bytes = (size_t)n * ckpt_dtype_size(dt);
        char *x = malloc(bytes), *y = malloc(bytes);
        assert_int_equal(vnm_ckpt_read(ra, path, dt, nd, shape, x, err, sizeof err), VNM_OK);
        assert_int_equal(vnm_ckpt_read(rb, path, dt, nd, shape, y, err, sizeof err), VNM_OK);
        assert_memory_equal(x, y, bytes);
        free(x);
        free(y);
    }
    vnm_ckpt_close(ra);
    vnm_ckpt_close(rb);
    check_resume(dir, b, 8, "dense-from8");
    unsetenv("VNM_SPARSE_DENSE");
    free(fa), free(fb), free(a), free(b), free(recipe);
}

/* The dense form of the masked LoRA stages (what a GPU runs; forced on the CPU by
 * VNM_SPARSE_DENSE=1) trains like the compressed form: the same schedule, masks and, up to the
 * order of float sums, the same losses; its checkpoints resume bit-exactly. */
static void test_llama_dense_form(void **state)
{
    const char *dir = *state;
    char *recipe = write_file(dir, "lm.yaml", llama_recipe), *tok = write_tokens(dir), dp[4200];
    snprintf(dp, sizeof dp, "data.path=%s", tok);
    const char *ov[1] = {dp};
    char *a = run_into(dir, recipe, "compressed", ov, 1);
    setenv("VNM_SPARSE_DENSE", "1", 1);
    char *b = run_into(dir, recipe, "dense", ov, 1);
    assert_losses_close(a, b, 24, 1e-4);
    uint8_t m1[32 * 32], p1[32 * 32], m2[32 * 32], p2[32 * 32];
    int64_t i1[2], i2[2];
    bool f1, f2;
    lora_mask_at(a, 24, i1, m1, p1, &f1);
    lora_mask_at(b, 24, i2, m2, p2, &f2);
    assert_true(f1 && f2);
    assert_memory_equal(m1, m2, sizeof m1);
    assert_memory_equal(p1, p2, sizeof p1);
    check_resume_to(dir, b, 14, 24, "dense-from14");
    unsetenv("VNM_SPARSE_DENSE");
    free(a), free(b), free(recipe), free(tok);
}

/* On a CUDA device the LLaMA runs the whole schedule (the masked stages in their dense form) to
 * the CPU's losses: in f32 up to the order of float sums; with bf16 products and attention
 * (cuDNN's fused attention on the GPU, the reference entries on the CPU) up to half-precision
 * rounding. Masks are chosen from scores that differ in their last bits, so the tolerance
 * covers a tie broken the other way. */
static void test_llama_cuda_matches_cpu(void **state)
{
    char reason[256];
    if (!vnm_device_available(VNM_DEVICE_CUDA, reason, sizeof reason)) {
        print_message("# skipped: %s\n", reason);
        skip();
    }
    const char *dir = *state;
    char *recipe = write_file(dir, "lm.yaml", llama_recipe), *tok = write_tokens(dir), dp[4200];
    snprintf(dp, sizeof dp, "data.path=%s", tok);
    const char *precision[2] = {"run.precision=f32", "run.precision=bf16"};
    const double tol[2] = {2e-3, 3e-2};
    for (int p = 0; p < 2; p++) {
        const char *ov[3] = {dp, precision[p], "run.device=cuda"};
        char cpu_name[32], gpu_name[32];
        snprintf(cpu_name, sizeof cpu_name, "cpu-%d", p);
        snprintf(gpu_name, sizeof gpu_name, "cuda-%d", p);
        char *cpu = run_into(dir, recipe, cpu_name, ov, 2);
        char *gpu = run_into(dir, recipe, gpu_name, ov, 3);
        assert_losses_close(cpu, gpu, 24, tol[p]);
        free(cpu);
        free(gpu);
    }
    free(recipe);
    free(tok);
}

/* Stage 1 keeps no mask (all ones); stage 2 chooses masks at its first step and then exactly
 * every 3 steps, each choice shifting the mask before it into the previous one; stage 3 keeps the
 * last mask unchanged; the final mask is a valid 16:2:4 mask; perplexity is logged dense,
 * one-shot pruned and after each stage. */
static void test_llama_lora_schedule(void **state)
{
    const char *dir = *state;
    char *full = run_llama(dir, "full");
    char *metrics = read_in(full, "metrics.jsonl");
    static const char *const labels[] = {"\"stage\":\"pre\",\"split\":\"val\"",
                                         "\"stage\":\"warm\",\"split\":\"val\"",
                                         "\"stage\":\"dyn/one-shot\",\"split\":\"val\"",
                                         "\"stage\":\"dyn\",\"split\":\"val\"",
                                         "\"stage\":\"fixed\",\"split\":\"val\"",
                                         "\"unit\":\"tok/s\"", "\"ppl\":"};
    for (int i = 0; i < 7; i++) tu_assert_has(metrics, labels[i]);
    tu_assert_has(last_line(metrics), "{\"event\":\"done\",\"step\":24,");
    uint8_t mask[32 * 32], prev[32 * 32], before[32 * 32];
    int64_t info[2];
    bool found;
    for (int64_t s = 1; s <= 24; s++) {
        lora_mask_at(full, s, info, mask, prev, &found);
        if (s <= 6) { /* dense: no adapters yet */
            assert_false(found);
            continue;
        }
        assert_true(found);
        int64_t want = s <= 10 ? -1 : s <= 13 ? 10 : s <= 16 ? 13 : 16;
        if (info[0] != want)
            fail_msg("checkpoint %lld: mask chosen at step %lld, expected %lld", (long long)s,
                     (long long)info[0], (long long)want);
        assert_int_equal(info[1], want > 10); /* a previous mask from the second choice on */
        if (s > 11 && info[0] != s - 1) /* unchanged between choices */
            assert_memory_equal(mask, before, sizeof mask);
        if (s > 11 && info[0] == s - 1) /* a choice: the mask before it became the previous */
            assert_memory_equal(prev, before, sizeof mask);
        memcpy(before, mask, sizeof mask);
    }
    char err[512];
    vnm_pattern p;
    assert_int_equal(vnm_pattern_parse("16:2:4", &p, NULL, 0), VNM_OK);
    if (vnm_mask_validate(p, mask, 32, 32, err, sizeof err)) fail_msg("%s", err);
    /* vnm inspect tells adapters and masks apart from the model's parameters */
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    char *last = tu_path(full, "ckpt/step_00000024.h5");
    assert_int_equal(vnm_inspect_print(last, out, err, sizeof err), VNM_OK);
    fclose(out);
    tu_assert_has(text, "lora: 7 adapters");
    tu_assert_has(text, "lora masks: 7 layers");
    tu_assert_has(text, "chosen at step 16");
    free(text);
    free(last);
    free(metrics);
    free(full);
}

/* Resume in the middle of lora_sparse_dynamic (step 15: masks and previous masks from the
 * checkpoint, the next re-prune still due at 16) and of lora_sparse_fixed (step 21). */
static void test_llama_resume_bit_exact(void **state)
{
    const char *dir = *state;
    char *full = run_llama(dir, "full");
    check_resume_to(dir, full, 8, 24, "from8");
    check_resume_to(dir, full, 15, 24, "from15");
    check_resume_to(dir, full, 21, 24, "from21");
    free(full);
}

/* recipes/quickstart.yaml loads and has the documented plan. */
static void test_quickstart_recipe(void **state)
{
    (void)state;
    const char *root = getenv("VNM_SOURCE_ROOT");
    if (!root) skip();
    char *path = tu_path(root, "recipes/quickstart.yaml"), err[1024];
    vnm_recipe r;
    if (vnm_recipe_load(path, NULL, 0, &r, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    assert_int_equal(r.n_stages, 3);
    assert_int_equal(r.stages[1].kind, VNM_RECIPE_STAGE_PRUNE);
    assert_true(r.sparsity.permute);
    assert_int_equal(r.sparsity.pattern.V, 64);
    assert_int_equal(r.sparsity.pattern.M, 5);
    vnm_recipe_free(&r);
    free(path);
}

/* A run that starts with LoRA builds its base frozen in bf16 from the start: the checkpoints hold
 * it as bf16, and resume inside lora_sparse_dynamic is still exact. */
static void test_llama_lora_from_start(void **state)
{
    const char *dir = *state;
    char text[sizeof llama_recipe];
    const char *pre = "  - {name: pre, kind: dense, steps: 6}\n", *at = strstr(llama_recipe, pre);
    assert_non_null(at);
    snprintf(text, sizeof text, "%.*s%s", (int)(at - llama_recipe), llama_recipe,
             at + strlen(pre));
    char *full = run_llama_recipe(dir, "full", text), err[512];
    char *ck = tu_path(full, "ckpt/step_00000002.h5");
    vnm_ckpt_reader *rd = vnm_ckpt_open(ck, err, sizeof err);
    if (!rd) fail_msg("%s", err);
    vnm_ckpt_dtype dt;
    int nd;
    int64_t shape[VNM_CKPT_MAX_DIMS];
    assert_int_equal(vnm_ckpt_shape(rd, "/model/model.layers.0.mlp.up_proj.weight", &dt, &nd,
                                    shape, err, sizeof err), VNM_OK);
    assert_int_equal(dt, VNM_CKPT_BF16);
    vnm_ckpt_close(rd);
    check_resume_to(dir, full, 9, 18, "from9");
    free(ck);
    free(full);
}

/* LLaMA recipe mistakes exit 2 before any training: lora.targets that select nothing, a model
 * vocabulary smaller than the data's. */
static void test_llama_bad_input(void **state)
{
    const char *dir = *state;
    char *recipe = write_file(dir, "lm.yaml", llama_recipe), *tok = write_tokens(dir);
    char *out = tu_path(dir, "bad"), ov[4200], dp[4200];
    snprintf(ov, sizeof ov, "run.output_dir=%s", out);
    snprintf(dp, sizeof dp, "data.path=%s", tok);
    const char *targets[] = {ov, dp, "lora.targets=[nothing_proj]"};
    assert_int_equal(run_cmd(false, recipe, targets, 3), 2);
    assert_false(exists(out, "ckpt/latest"));
    const char *vocab[] = {ov, dp, "model.vocab_size=100"};
    assert_int_equal(run_cmd(false, recipe, vocab, 3), 2);
    free(recipe), free(tok), free(out);
}

/* `vnm eval` and `vnm export` of a LLaMA run: perplexity as the trainer logged it, a
 * transformers folder whose pruned projections hold the masks of the last checkpoint, and, from a
 * lora_dense checkpoint, the base and the PEFT adapter beside the merged model. */
static void test_llama_eval_export(void **state)
{
    const char *dir = *state;
    char *full = run_llama(dir, "full"), *tok = tu_path(dir, "tok"), dp[4200], out[4200];
    snprintf(dp, sizeof dp, "data.path=%s", tok);
    char *metrics = read_in(full, "metrics.jsonl");
    /* eval prints one JSON line on stdout */
    char *cap = tu_path(dir, "eval.json");
    char *eargv[] = {full, dp};
    assert_int_equal(run_cmd_to(vnm_cmd_eval, 2, eargv, cap), 0);
    char *line = tu_read_file(cap);
    const char *ppl = strstr(line, "\"ppl\":"), *want = strstr(last_line(metrics), "\"val_ppl\":");
    assert_non_null(ppl);
    assert_non_null(want);
    double got_ppl = strtod(ppl + 6, NULL), want_ppl = strtod(want + 10, NULL);
    assert_true(fabs(got_ppl - want_ppl) <= 1e-6 * want_ppl);
    tu_assert_has(line, "\"unit\":\"tok/s\"");

    snprintf(out, sizeof out, "%s/export", dir);
    char *xargv[] = {full, "--out", out, "--sample", "8", dp};
    assert_int_equal(run_cmd_argv(vnm_cmd_export, 6, xargv), 0);
    assert_true(exists(out, "config.json") && exists(out, "model.safetensors") &&
                exists(out, "sample.safetensors") && !exists(out, "adapter"));
    char *ck = tu_path(full, "ckpt/step_00000008.h5"), out2[4200];
    snprintf(out2, sizeof out2, "%s/export8", dir);
    char *x2[] = {ck, "--out", out2, dp};
    assert_int_equal(run_cmd_argv(vnm_cmd_export, 4, x2), 0);
    assert_true(exists(out2, "base/model.safetensors") &&
                exists(out2, "adapter/adapter_config.json") &&
                exists(out2, "adapter/adapter_model.safetensors"));
    free(ck), free(line), free(cap), free(metrics), free(tok), free(full);
}

/* The LLaMA recipes load (the 7B one with its path parameters given) with the documented plan. */
static void test_llama_recipes(void **state)
{
    (void)state;
    const char *root = getenv("VNM_SOURCE_ROOT"), *data = getenv("VNM_TEST_DATA");
    if (!root || !data) skip();
    char *quick = tu_path(root, "recipes/quickstart_llm.yaml");
    char *big = tu_path(root, "recipes/llama2_7b_lora_64-2-5.yaml"), err[1024];
    vnm_recipe r;
    if (vnm_recipe_load(quick, NULL, 0, &r, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    assert_int_equal(r.n_stages, 4);
    assert_int_equal(r.stages[1].kind, VNM_RECIPE_STAGE_LORA_DENSE);
    assert_int_equal(r.stages[2].kind, VNM_RECIPE_STAGE_LORA_SPARSE_DYNAMIC);
    assert_int_equal(r.stages[3].kind, VNM_RECIPE_STAGE_LORA_SPARSE_FIXED);
    assert_int_equal(r.sparsity.pattern.V, 64);
    assert_int_equal(r.sparsity.pattern.M, 5);
    vnm_recipe_free(&r);
    char cfg[4200], weights[4200];
    snprintf(cfg, sizeof cfg, "model.config=%s/llama_tiny/config.json", data);
    snprintf(weights, sizeof weights, "model.weights=%s/llama_tiny/model.safetensors", data);
    const char *ov[] = {cfg, weights, "data.path=/data/tokens"};
    if (vnm_recipe_load(big, ov, 3, &r, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    assert_int_equal(r.lora.rank, 16);
    assert_true(r.lora.alpha == 32);
    assert_int_equal(r.stages[1].lora.every, 50);
    assert_true(fabs(r.stages[0].fraction - 0.05) < 1e-12);
    assert_true(fabs(r.stages[1].fraction - 0.05) < 1e-12);
    vnm_recipe_free(&r);
    free(quick);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sigint_checkpoints, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_train_run_dir, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_srste_stage, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_resume_bit_exact, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_ria_prune, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mixed_precision_runs, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_checkpointing_vit, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_checkpointing_llama, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_llama_cuda_matches_cpu, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_llama_dense_form, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_vit_dense_form, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_gradient_accumulation, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test(test_quickstart_recipe),
        cmocka_unit_test(test_llama_recipes),
        cmocka_unit_test_setup_teardown(test_llama_bad_input, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_llama_lora_from_start, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_llama_eval_export, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_llama_lora_schedule, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_llama_resume_bit_exact, tu_setup_tmpdir,
                                        tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_bad_input, tu_setup_tmpdir, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_nan_loss_stops, tu_setup_tmpdir, tu_teardown_tmpdir),
    };
    return cmocka_run_group_tests_name("trainer", tests, NULL, NULL);
}
