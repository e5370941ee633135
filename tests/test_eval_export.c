/* tests/test_eval_export.c — `vnm eval` and `vnm export` end to end on one miniature run (dense →
 * prune 16:2:4 with permutation → sparse_fixed, trained once by the group set-up on the real
 * Fashion-MNIST files): eval reproduces the val records the trainer logged for the checkpoints
 * written right after an eval and leaves the run directory as it was; export writes timm-named
 * safetensors that a fresh dense model loads and that compute the sparse model's logits, with
 * weights that satisfy V:N:M once the permutation is applied again; bad input exits 2. Skipped
 * when the data set is not installed. */
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/data.h"
#include "../sparse/sparse.h"
#include "../train/checkpoint.h"
#include "../train/eval.h"
#include "../train/export.h"
#include "../train/json.h"
#include "../train/models/vit.h"
#include "../train/safetensors.h"
#include "../train/trainer.h"
#include "test_util.h"

/* dense 6 → prune 16:2:4 (permuted) → sparse_fixed 4; checkpoints at 4 (no eval before it), 6
 * (after the prune's eval) and 8, 10 (the end) */
static const char recipe[] =
    "run: {name: evx, seed: 11, threads: 2}\n"
    "model: {size: custom, embed_dim: 16, depth: 1, heads: 2, patch: 7}\n"
    "data: {path: " VNM_FASHION_MNIST_DIR ", batch_size: 16, val_batch_size: 1000, workers: 0}\n"
    "sparsity: {pattern: '16:2:4', targets: ['blocks.*.mlp.fc*.weight'], permute: true}\n"
    "optim: {name: adamw, lr: 0.003}\n"
    "stages:\n"
    "  - {name: dense, kind: dense, steps: 6}\n"
    "  - {name: prune, kind: prune, steps: 1}\n"
    "  - {name: sparse, kind: sparse_fixed, steps: 4}\n"
    "checkpoint: {every: 4, keep_last: 10}\n"
    "log: {every: 1}\n";

static const char *const sparse_names[] = {"blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight"};

typedef struct {
    char *dir; /* temporary directory */
    char *run; /* the trained run directory inside it */
    bool trained;
} fixture;

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Runs a `vnm` subcommand with stdout and stderr captured into *out and *err (malloc'd, may be
 * NULL); returns its exit code. */
static int run_capture(const char *dir, int (*cmd)(int, char **), int argc, const char **argv,
                       char **out, char **err)
{
    char *paths[2] = {tu_path(dir, "cap.out"), tu_path(dir, "cap.err")};
    int saved[2];
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < 2; k++) {
        int fd = open(paths[k], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        saved[k] = dup(1 + k);
        dup2(fd, 1 + k);
        close(fd);
    }
    int rc = cmd(argc, (char **)argv);
    fflush(stdout);
    fflush(stderr);
    char **texts[2] = {out, err};
    for (int k = 0; k < 2; k++) {
        dup2(saved[k], 1 + k);
        close(saved[k]);
        char *text = tu_read_file(paths[k]);
        if (texts[k]) *texts[k] = text;
        else free(text);
        unlink(paths[k]);
        free(paths[k]);
    }
    return rc;
}

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || tu_setup_tmpdir((void **)&f->dir)) return -1;
    *state = f;
    if (!exists(VNM_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz")) return 0;
    char *path = tu_path(f->dir, "evx.yaml"), ov[4200];
    FILE *file = fopen(path, "w");
    if (!file) return -1;
    fputs(recipe, file);
    fclose(file);
    f->run = tu_path(f->dir, "run");
    snprintf(ov, sizeof ov, "run.output_dir=%s", f->run);
    const char *argv[] = {path, ov};
    char *out = NULL, *err = NULL;
    int rc = run_capture(f->dir, vnm_cmd_train, 2, argv, &out, &err);
    if (rc) fprintf(stderr, "# training failed (%d): %s\n", rc, err ? err : "");
    f->trained = rc == 0;
    free(out);
    free(err);
    free(path);
    return rc ? -1 : 0;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    void *dir = f->dir;
    int rc = tu_teardown_tmpdir(&dir);
    free(f->run);
    free(f);
    return rc;
}

static fixture *need_run(void **state)
{
    fixture *f = *state;
    if (!f->trained) {
        print_message("# skipped: " VNM_FASHION_MNIST_DIR " is missing (install the Debian "
                      "package fashion-mnist)\n");
        skip();
    }
    return f;
}

/* ---- a snapshot of the run directory: every entry's name, size and modification time ---- */

static char snap_buf[1 << 16];
static size_t snap_len;

static int snap_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)flag, (void)ftw;
    snap_len += (size_t)snprintf(snap_buf + snap_len, sizeof snap_buf - snap_len,
                                 "%s %lld %lld.%09ld\n", path, (long long)sb->st_size,
                                 (long long)sb->st_mtim.tv_sec, sb->st_mtim.tv_nsec);
    return snap_len >= sizeof snap_buf;
}

static char *snapshot(const char *dir)
{
    snap_len = 0;
    assert_int_equal(nftw(dir, snap_entry, 16, FTW_PHYS), 0);
    return strdup(snap_buf);
}

/* ---- eval ---- */

/* The last val record of `step` in metrics.jsonl without its closing brace (malloc'd). */
static char *val_record(const char *metrics, int64_t step)
{
    char key[64];
    snprintf(key, sizeof key, "{\"step\":%lld,", (long long)step);
    char *found = NULL;
    for (const char *p = strstr(metrics, key); p; p = strstr(p + 1, key)) {
        size_t len = strcspn(p, "\n");
        const char *split = strstr(p, "\"split\":\"val\"");
        if (!split || split > p + len) continue;
        free(found);
        found = strndup(p, len - 1); /* the record ends in "}" */
    }
    assert_non_null(found);
    return found;
}

/* `vnm eval ckpt` prints the trainer's record of `step` followed by the eval-only keys, on one
 * JSON line that parses, and changes nothing in the run directory. */
static void check_eval(fixture *f, const char *ckpt, int64_t step, const char *file)
{
    char *metrics_path = tu_path(f->run, "metrics.jsonl"), *metrics = tu_read_file(metrics_path);
    assert_non_null(metrics);
    char *want = val_record(metrics, step), *before = snapshot(f->run), *out, *err;
    const char *argv[] = {ckpt};
    int rc = run_capture(f->dir, vnm_cmd_eval, 1, argv, &out, &err);
    if (rc) fail_msg("vnm eval %s: exit %d: %s", ckpt, rc, err);
    char *after = snapshot(f->run);
    assert_string_equal(before, after);
    if (strncmp(out, want, strlen(want)) || out[strlen(want)] != ',')
        fail_msg("vnm eval %s printed\n  %s\nthe trainer logged\n  %s}", ckpt, out, want);
    tu_assert_has(err, "top1 ");
    tu_assert_has(err, " img/s");
    char jerr[512];
    vnm_json *j = vnm_json_parse(out, strlen(out), "eval stdout", jerr, sizeof jerr);
    if (!j) fail_msg("%s", jerr);
    assert_int_equal(vnm_json_get(j, "step")->integer, step);
    assert_int_equal(vnm_json_get(j, "images")->integer, 10000);
    assert_true(vnm_json_get(j, "throughput")->number > 0);
    assert_string_equal(vnm_json_get(j, "unit")->string, "img/s");
    const char *ck = vnm_json_get(j, "ckpt")->string;
    assert_string_equal(ck + strlen(ck) - strlen(file), file);
    vnm_json_free(j);
    free(out);
    free(err);
    free(before);
    free(after);
    free(want);
    free(metrics);
    free(metrics_path);
}

/* The run directory (latest: the final checkpoint, written after the sparse stage's eval) and the
 * step-6 checkpoint (written after the prune's eval, on the permuted sparse model). */
static void test_eval_matches_trainer(void **state)
{
    fixture *f = need_run(state);
    check_eval(f, f->run, 10, "step_00000010.h5");
    char *ck6 = tu_path(f->run, "ckpt/step_00000006.h5");
    check_eval(f, ck6, 6, "step_00000006.h5");
    free(ck6);
}

/* Exit 2 with a message naming the file and what was expected; the run directory stays as it
 * was. */
static void expect_eval_fails(fixture *f, int argc, const char **argv, const char *needle)
{
    char *err;
    assert_int_equal(run_capture(f->dir, vnm_cmd_eval, argc, argv, NULL, &err), 2);
    tu_assert_has(err, needle);
    free(err);
}

static void test_eval_bad_input(void **state)
{
    fixture *f = need_run(state);
    char *before = snapshot(f->run);
    char *missing = tu_path(f->dir, "nowhere"), *garbage = tu_path(f->dir, "garbage.h5");
    char *cut = tu_path(f->dir, "cut.h5"), *ck = tu_path(f->run, "ckpt/step_00000010.h5");
    FILE *g = fopen(garbage, "w");
    fputs("not a checkpoint\n", g);
    fclose(g);
    char *full = tu_read_file(ck); /* a truncated copy of a real checkpoint */
    FILE *c = fopen(cut, "wb");
    fwrite(full, 1, 4096, c);
    fclose(c);
    free(full);
    expect_eval_fails(f, 1, (const char *[]){missing}, "expected a checkpoint file");
    expect_eval_fails(f, 1, (const char *[]){garbage}, "garbage.h5: cannot open: not an HDF5");
    expect_eval_fails(f, 1, (const char *[]){cut}, "cut.h5: cannot open");
    expect_eval_fails(f, 2, (const char *[]){f->run, "data.val_batch_sise=10"},
                      "did you mean 'val_batch_size'");
    expect_eval_fails(f, 2, (const char *[]){f->run, "model.embed_dim=32"}, "expected");
    expect_eval_fails(f, 2, (const char *[]){f->run, "--top5"}, "unknown option '--top5'");
    expect_eval_fails(f, 0, NULL, "usage: vnm eval");
    char *after = snapshot(f->run);
    assert_string_equal(before, after);
    free(before);
    free(after);
    free(missing);
    free(garbage);
    free(cut);
    free(ck);
}

/* ---- export ---- */

static int64_t json_int(const vnm_json *obj, const char *key)
{
    const vnm_json *v = vnm_json_get(obj, key);
    if (!v || !v->is_int) fail_msg("sidecar: %s is missing or not an integer", key);
    return v->integer;
}

/* A fresh dense model of the sidecar's model_config, loaded from the export (every timm name,
 * nothing else) through vnm_vit_load. */
static vnm_vit *load_export(vnm_ctx *ctx, const char *path, const vnm_json *side)
{
    const vnm_json *mc = vnm_json_get(side, "model_config");
    assert_non_null(mc);
    vnm_vit_config cfg = {.embed_dim = json_int(mc, "embed_dim"), .depth = json_int(mc, "depth"),
                          .num_heads = json_int(mc, "num_heads"),
                          .mlp_ratio = vnm_json_get(mc, "mlp_ratio")->number,
                          .patch = json_int(mc, "patch_size"), .img_size = json_int(mc, "img_size"),
                          .in_chans = json_int(mc, "in_chans"),
                          .num_classes = json_int(mc, "num_classes"),
                          .distilled = vnm_json_get(mc, "distilled")->boolean, .skip_init = true};
    assert_int_equal(cfg.img_size, 28);
    assert_int_equal(cfg.num_classes, 10);
    vnm_vit *m = vnm_vit_new(ctx, &cfg);
    assert_non_null(m);
    char err[1024];
    if (vnm_vit_load(ctx, m, path, NULL, 0, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    return m;
}

/* logits [n, classes] of m on images [n, 1, 28, 28] (eval mode), malloc'd. */
static float *logits_of(vnm_ctx *ctx, vnm_vit *m, const float *images, int64_t n)
{
    bool grad = vnm_ctx_set_grad_enabled(ctx, false), training = vnm_ctx_training(ctx);
    vnm_ctx_set_training(ctx, false);
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_F32, 4, VNM_SHAPE(n, 1, 28, 28), images);
    vnm_tensor *y = vnm_vit_forward(ctx, m, x, NULL);
    assert_non_null(y);
    float *h = tu_host(ctx, y);
    vnm_ctx_reset_step(ctx);
    vnm_ctx_set_training(ctx, training);
    vnm_ctx_set_grad_enabled(ctx, grad);
    return h;
}

/* |got - want| ≤ tol · max |want| everywhere. */
static void assert_logits_close(const float *got, const float *want, int64_t n, double tol,
                                const char *what)
{
    double scale = 0, *w = malloc((size_t)n * sizeof *w);
    for (int64_t i = 0; i < n; i++) {
        w[i] = want[i];
        scale = fmax(scale, fabs(w[i]));
    }
    assert_true(scale > 0);
    tu_assert_close(got, w, n, tol * scale, 0, what);
    free(w);
}

/* Re-applies the layer's permutations (perm_out[O], perm_in[I] from the checkpoint) to the
 * exported W[O][I]: the nonzeros form a valid V:N:M mask. Returns whether perm_in moves a
 * column. */
static bool check_vnm(vnm_safetensors *st, vnm_ckpt_reader *rd, const char *name, vnm_pattern pat)
{
    const vnm_safetensors_tensor *t = vnm_safetensors_find(st, name);
    assert_non_null(t);
    int64_t O = t->shape[0], I = t->shape[1];
    float *W = malloc((size_t)(O * I) * sizeof *W);
    uint8_t *mask = malloc((size_t)(O * I));
    int32_t *po = malloc((size_t)O * sizeof *po), *pi = malloc((size_t)I * sizeof *pi);
    char err[1024], path[256];
    assert_int_equal(vnm_safetensors_read_f32(st, name, W, (size_t)(O * I), err, sizeof err),
                     VNM_OK);
    snprintf(path, sizeof path, "/sparse/%s/perm_out", name);
    assert_int_equal(vnm_ckpt_read(rd, path, VNM_CKPT_I32, 1, &O, po, err, sizeof err), VNM_OK);
    snprintf(path, sizeof path, "/sparse/%s/perm_in", name);
    assert_int_equal(vnm_ckpt_read(rd, path, VNM_CKPT_I32, 1, &I, pi, err, sizeof err), VNM_OK);
    int64_t kept = 0;
    bool moved = false;
    for (int64_t o = 0; o < O; o++)
        for (int64_t j = 0; j < I; j++) {
            mask[o * I + j] = W[(int64_t)po[o] * I + pi[j]] != 0.0f;
            kept += mask[o * I + j];
        }
    for (int64_t j = 0; j < I; j++) moved |= pi[j] != j;
    if (vnm_mask_validate(pat, mask, O, I, err, sizeof err) != VNM_OK)
        fail_msg("%s: the exported weight with its permutation re-applied: %s", name, err);
    assert_int_equal(kept, O * I / 2); /* 2 of every 4 */
    free(W);
    free(mask);
    free(po);
    free(pi);
    return moved;
}

/* The sparse checkpoint exported as f32 with a sample: the files, the sidecar, strict loading into
 * a fresh dense model whose logits equal the sparse model's, and the V:N:M structure. */
static void test_export_sparse(void **state)
{
    fixture *f = need_run(state);
    char *out = tu_path(f->dir, "sparse.safetensors"), *json = tu_path(f->dir, "sparse.json");
    char *sample = tu_path(f->dir, "sparse.sample.safetensors");
    char *tmp = tu_path(f->dir, "sparse.json.tmp");
    const char *argv[] = {f->run, "--out", out, "--sample", "5"};
    char *stdout_text, *err;
    int rc = run_capture(f->dir, vnm_cmd_export, 5, argv, &stdout_text, &err);
    if (rc) fail_msg("vnm export: exit %d: %s", rc, err);
    tu_assert_has(stdout_text, "2 sparse layers decompressed");
    assert_true(exists(out) && exists(json) && exists(sample) && !exists(tmp));

    char jerr[1024];
    vnm_json *side = vnm_json_parse_file(json, jerr, sizeof jerr);
    if (!side) fail_msg("%s", jerr);
    assert_string_equal(vnm_json_get(side, "timm_model")->string, "deit_tiny_patch16_224");
    assert_string_equal(vnm_json_get(side, "dtype")->string, "f32");
    assert_string_equal(vnm_json_get(side, "weights")->string, "sparse.safetensors");
    assert_int_equal(json_int(vnm_json_get(side, "source"), "step"), 10);
    const vnm_json *sp = vnm_json_get(side, "sparse");
    assert_int_equal(sp->count, 2);
    for (int i = 0; i < 2; i++) {
        const vnm_json *layer = vnm_json_get(sp, sparse_names[i]);
        assert_non_null(layer);
        assert_string_equal(vnm_json_get(layer, "pattern")->string, "16:2:4");
        assert_true(vnm_json_get(layer, "permuted")->boolean);
    }

    /* the sparse model, restored as eval/export restore it, and the exported dense one */
    vnm_trainer *t;
    assert_int_equal(vnm_trainer_restore("test", f->run, NULL, 0, false, &t), 0);
    vnm_restored r = vnm_trainer_restored(t);
    assert_non_null(r.model->blocks[0].fc1.sparse);
    vnm_ctx *ctx = tu_ctx();
    vnm_vit *dense = load_export(ctx, out, side);
    vnm_safetensors *st;
    assert_int_equal(vnm_safetensors_open(sample, &st, jerr, sizeof jerr), VNM_OK);
    const int64_t n = 5, nl = n * 10;
    float *images = malloc((size_t)(n * 28 * 28) * sizeof *images);
    float *want = malloc((size_t)nl * sizeof *want);
    assert_int_equal(vnm_safetensors_read_f32(st, "images", images, (size_t)(n * 28 * 28), jerr,
                                              sizeof jerr), VNM_OK);
    assert_int_equal(vnm_safetensors_read_f32(st, "logits", want, (size_t)nl, jerr, sizeof jerr),
                     VNM_OK);
    vnm_safetensors_close(st);
    float *sparse_logits = logits_of(r.ctx, r.model, images, n);
    float *dense_logits = logits_of(ctx, dense, images, n);
    assert_logits_close(sparse_logits, want, nl, 1e-6, "sample logits vs the sparse model");
    assert_logits_close(dense_logits, sparse_logits, nl, 1e-5, "exported dense vs sparse");

    assert_int_equal(vnm_safetensors_open(out, &st, jerr, sizeof jerr), VNM_OK);
    vnm_ckpt_reader *rd = vnm_ckpt_open(r.file, jerr, sizeof jerr);
    assert_non_null(rd);
    bool moved = false;
    for (int i = 0; i < 2; i++)
        moved |= check_vnm(st, rd, sparse_names[i], (vnm_pattern){16, 2, 4});
    assert_true(moved); /* the permutation is really exercised */
    vnm_ckpt_close(rd);
    vnm_safetensors_close(st);

    free(images);
    free(want);
    free(sparse_logits);
    free(dense_logits);
    vnm_vit_free(dense);
    vnm_ctx_destroy(ctx);
    vnm_trainer_free(t);
    vnm_json_free(side);
    free(stdout_text);
    free(err);
    free(out);
    free(json);
    free(sample);
    free(tmp);
}

/* The dense checkpoint of step 4 as bf16: every tensor stored as BF16, each value the rounding of
 * the checkpoint's f32, no sparse layers in the sidecar, no sample file. */
static void test_export_bf16_dense(void **state)
{
    fixture *f = need_run(state);
    char *ck = tu_path(f->run, "ckpt/step_00000004.h5"), *out = tu_path(f->dir, "d4.safetensors");
    char *json = tu_path(f->dir, "d4.json"), *sample = tu_path(f->dir, "d4.sample.safetensors");
    const char *argv[] = {ck, "--dtype", "bf16", "--out", out};
    char *err;
    int rc = run_capture(f->dir, vnm_cmd_export, 5, argv, NULL, &err);
    if (rc) fail_msg("vnm export: exit %d: %s", rc, err);
    assert_false(exists(sample));
    char jerr[1024];
    vnm_json *side = vnm_json_parse_file(json, jerr, sizeof jerr);
    assert_non_null(side);
    assert_int_equal(vnm_json_get(side, "sparse")->count, 0);
    assert_string_equal(vnm_json_get(side, "dtype")->string, "bf16");
    const vnm_json *source = vnm_json_get(side, "source");
    assert_int_equal(json_int(source, "step"), 4);
    assert_string_equal(vnm_json_get(source, "stage")->string, "dense");

    vnm_trainer *t;
    assert_int_equal(vnm_trainer_restore("test", ck, NULL, 0, false, &t), 0);
    vnm_restored r = vnm_trainer_restored(t);
    vnm_safetensors *st;
    assert_int_equal(vnm_safetensors_open(out, &st, jerr, sizeof jerr), VNM_OK);
    assert_int_equal(vnm_safetensors_count(st), vnm_vit_param_count(r.model));
    for (int i = 0; i < vnm_vit_param_count(r.model); i++) {
        vnm_vit_param p = vnm_vit_param_at(r.model, i);
        const vnm_safetensors_tensor *e = vnm_safetensors_find(st, p.name);
        assert_non_null(e);
        assert_int_equal(e->dtype, VNM_DTYPE_BF16);
        int64_t n = vnm_numel(p.tensor);
        float *want = tu_host(r.ctx, p.tensor), *got = malloc((size_t)n * sizeof *got);
        assert_int_equal(vnm_safetensors_read_f32(st, p.name, got, (size_t)n, jerr, sizeof jerr),
                         VNM_OK);
        for (int64_t k = 0; k < n; k++)
            if (got[k] != vnm_bf16_to_f32(vnm_f32_to_bf16(want[k])))
                fail_msg("%s[%lld]: %g, expected bf16(%g)", p.name, (long long)k, (double)got[k],
                         (double)want[k]);
        free(want);
        free(got);
    }
    vnm_safetensors_close(st);
    vnm_trainer_free(t);
    vnm_json_free(side);
    free(err);
    free(ck);
    free(out);
    free(json);
    free(sample);
}

static void expect_export_fails(fixture *f, int argc, const char **argv, const char *needle)
{
    char *err;
    assert_int_equal(run_capture(f->dir, vnm_cmd_export, argc, argv, NULL, &err), 2);
    tu_assert_has(err, needle);
    free(err);
}

/* Bad options and paths exit 2 and write nothing. */
static void test_export_bad_input(void **state)
{
    fixture *f = need_run(state);
    char *out = tu_path(f->dir, "bad.safetensors"), *missing = tu_path(f->dir, "nowhere");
    char *no_dir = tu_path(f->dir, "no/such/dir/x.safetensors");
    expect_export_fails(f, 1, (const char *[]){f->run}, "needs a checkpoint and --out");
    expect_export_fails(f, 3, (const char *[]){f->run, "--out", "model.bin"},
                        "must end in .safetensors");
    expect_export_fails(f, 5, (const char *[]){f->run, "--out", out, "--dtype", "f64"},
                        "--dtype needs f32, bf16 or f16, got 'f64'");
    expect_export_fails(f, 5, (const char *[]){f->run, "--out", out, "--sample", "0"},
                        "--sample needs an integer");
    expect_export_fails(f, 3, (const char *[]){missing, "--out", out}, "nowhere");
    expect_export_fails(f, 4, (const char *[]){f->run, "--out", out, "--bogus"},
                        "unknown option '--bogus'");
    expect_export_fails(f, 3, (const char *[]){f->run, "--out", no_dir}, "cannot create");
    assert_false(exists(out));
    free(out);
    free(missing);
    free(no_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_matches_trainer),
        cmocka_unit_test(test_eval_bad_input),
        cmocka_unit_test(test_export_sparse),
        cmocka_unit_test(test_export_bf16_dense),
        cmocka_unit_test(test_export_bad_input),
    };
    return cmocka_run_group_tests_name("eval_export", tests, group_setup, group_teardown);
}
