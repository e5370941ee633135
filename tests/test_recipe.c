/* tests/test_recipe.c — recipe loading: the good recipes' values and defaults, one test per bad
 * recipe (its first line "# expect: <fragment>" is the message fragment, with line:column),
 * overrides that change values and overrides that fail naming themselves, and emit → load round
 * trips. Recipe files come from VNM_TEST_RECIPES. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../train/recipe.h"
#include "test_util.h"

static const char *recipe_path(const char *rel)
{
    static char buf[1024];
    const char *dir = getenv("VNM_TEST_RECIPES");
    assert_non_null(dir);
    snprintf(buf, sizeof buf, "%s/%s", dir, rel);
    return buf;
}

static void load_ok(const char *rel, const char *const *ov, int n, vnm_recipe *r)
{
    char err[1024] = "";
    vnm_status st = vnm_recipe_load(recipe_path(rel), ov, n, r, err, sizeof err);
    if (st != VNM_OK) fail_msg("%s: %s", rel, err);
}

static void load_fails(const char *rel, const char *const *ov, int n, const char *needle)
{
    vnm_recipe r;
    char err[1024] = "";
    vnm_status st = vnm_recipe_load(recipe_path(rel), ov, n, &r, err, sizeof err);
    if (st != VNM_ERR_INPUT) fail_msg("%s: expected VNM_ERR_INPUT, got %d (%s)", rel, st, err);
    if (!strstr(err, needle)) fail_msg("%s: message\n  %s\nlacks\n  %s", rel, err, needle);
}

/* Every bad recipe names its expected message on its first line. */
static void test_bad_recipe(void **state)
{
    const char *name = *state;
    char rel[256], line[1024] = "";
    snprintf(rel, sizeof rel, "bad/%s", name);
    FILE *f = fopen(recipe_path(rel), "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    const char *tag = "# expect: ";
    assert_int_equal(strncmp(line, tag, strlen(tag)), 0);
    line[strcspn(line, "\n")] = '\0';
    assert_non_null(strstr(line, name)); /* the fragment names the file and a position */
    load_fails(rel, NULL, 0, line + strlen(tag));
}

/* One test case per bad recipe; the folder test below checks the list is complete. */
#define BAD_RECIPES(X) \
    X("bad_bool.yaml") \
    X("bad_device.yaml") \
    X("bad_pattern.yaml") \
    X("betas_length.yaml") \
    X("betas_range.yaml") \
    X("custom_missing_dims.yaml") \
    X("duplicate_key.yaml") \
    X("duplicate_stage_name.yaml") \
    X("empty.yaml") \
    X("fraction_gt1.yaml") \
    X("fraction_sum.yaml") \
    X("heads_divide.yaml") \
    X("label_smoothing_range.yaml") \
    X("lora_without_section.yaml") \
    X("missing_weights.yaml") \
    X("negative_lr.yaml") \
    X("not_mapping.yaml") \
    X("prune_without_sparsity.yaml") \
    X("quoted_number.yaml") \
    X("section_not_mapping.yaml") \
    X("size_conflict.yaml") \
    X("srste_after_prune.yaml") \
    X("stage_missing_kind.yaml") \
    X("stage_not_mapping.yaml") \
    X("stage_order.yaml") \
    X("stages_empty.yaml") \
    X("syntax_error.yaml") \
    X("two_lengths.yaml") \
    X("unknown_key_hint.yaml") \
    X("unknown_section.yaml") \
    X("unknown_stage_kind.yaml") \
    X("warmup_both.yaml") \
    X("wrong_type.yaml")
#define BAD_NAME(file) file,
#define BAD_CASE(file) cmocka_unit_test_prestate(test_bad_recipe, (void *)(file)),
static const char *const BAD_FILES[] = {BAD_RECIPES(BAD_NAME)};
#define N_BAD ((int)(sizeof BAD_FILES / sizeof *BAD_FILES))

/* A bad recipe added to the folder but not to the table above would silently go untested. */
static void test_bad_folder_listed(void **state)
{
    (void)state;
    DIR *d = opendir(recipe_path("bad"));
    assert_non_null(d);
    int seen = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".yaml")) continue;
        bool listed = false;
        for (int i = 0; i < N_BAD; i++) listed |= !strcmp(BAD_FILES[i], e->d_name);
        if (!listed) fail_msg("tests/recipes/bad/%s is not in BAD_FILES", e->d_name);
        seen++;
    }
    closedir(d);
    assert_int_equal(seen, N_BAD);
}

static void test_quickstart_values(void **state)
{
    (void)state;
    vnm_recipe r;
    load_ok("good/quickstart.yaml", NULL, 0, &r);
    assert_string_equal(r.run.name, "quickstart");
    assert_int_equal(r.run.seed, 42);
    assert_int_equal(r.model.arch, VNM_RECIPE_ARCH_VIT);
    assert_int_equal(r.model.embed_dim, 192); /* from size tiny */
    assert_int_equal(r.model.heads, 3);
    assert_true(r.model.drop_path == 0.1);
    assert_int_equal(r.data.val_batch_size, 256);
    assert_int_equal(r.data.augment.crop_padding, 2);
    assert_true(r.data.augment.flip);
    assert_true(r.sparsity.present);
    assert_int_equal(r.sparsity.pattern.V, 64);
    assert_int_equal(r.sparsity.pattern.N, 2);
    assert_int_equal(r.sparsity.pattern.M, 5);
    assert_true(r.sparsity.permute);
    assert_int_equal(r.sparsity.targets.n, 2);
    assert_string_equal(r.sparsity.targets.items[1], "blocks.*.mlp.fc2.weight");
    assert_false(r.lora.present);
    assert_int_equal(r.optim.name, VNM_RECIPE_OPTIM_ADAMW);
    assert_true(r.optim.betas[1] == 0.999 && r.optim.eps == 1e-8 && r.optim.clip_grad_norm == 1);
    assert_int_equal(r.schedule.name, VNM_RECIPE_SCHEDULE_COSINE);
    assert_true(r.schedule.warmup_fraction == 0.05);
    assert_int_equal(r.n_stages, 3);
    assert_string_equal(r.stages[0].name, "dense");
    assert_int_equal(r.stages[0].kind, VNM_RECIPE_STAGE_DENSE);
    assert_true(r.stages[0].epochs == 5 && r.stages[0].steps == -1 && isnan(r.stages[0].fraction));
    assert_int_equal(r.stages[1].kind, VNM_RECIPE_STAGE_PRUNE);
    assert_int_equal(r.stages[1].steps, 1);
    assert_int_equal(r.stages[2].kind, VNM_RECIPE_STAGE_SPARSE_FIXED);
    assert_true(r.stages[2].optim.lr == 0.0005);
    assert_true(isnan(r.stages[2].optim.weight_decay)); /* not overridden: inherits */
    assert_string_equal(r.checkpoint.dir, "runs/quickstart/ckpt");
    assert_int_equal(r.checkpoint.keep_last, 2);
    assert_string_equal(r.log.metrics, "runs/quickstart/metrics.jsonl");
    assert_int_equal(r.eval.every, 500);
    vnm_recipe_free(&r);
}

static void test_defaults(void **state)
{
    (void)state;
    vnm_recipe r;
    load_ok("good/minimal.yaml", NULL, 0, &r);
    assert_string_equal(r.run.name, "minimal");
    assert_string_equal(r.run.output_dir, "runs/minimal");
    assert_int_equal(r.run.seed, 0);
    assert_int_equal(r.run.device, VNM_RECIPE_DEVICE_CPU);
    assert_int_equal(r.run.precision, VNM_RECIPE_PRECISION_F32);
    assert_int_equal(r.model.size, VNM_RECIPE_SIZE_TINY);
    assert_int_equal(r.model.depth, 12);
    assert_true(r.model.mlp_ratio == 4);
    assert_int_equal(r.model.image_size, 28);
    assert_int_equal(r.model.num_classes, 10);
    assert_null(r.model.weights);
    assert_int_equal(r.data.dataset, VNM_RECIPE_DATASET_FASHION_MNIST);
    assert_int_equal(r.data.batch_size, 128);
    assert_int_equal(r.data.val_batch_size, 128); /* resolved to batch_size */
    assert_false(r.sparsity.present);
    assert_int_equal(r.sparsity.pattern.M, 8); /* filled even when the section is absent */
    assert_int_equal(r.optim.name, VNM_RECIPE_OPTIM_ADAMW);
    assert_true(r.optim.lr == 0.001 && r.optim.weight_decay == 0.05);
    assert_true(r.optim.betas[0] == 0.9 && r.optim.betas[1] == 0.999);
    assert_true(isnan(r.schedule.warmup_fraction));
    assert_int_equal(r.schedule.warmup_steps, 0);
    assert_int_equal(r.n_stages, 1);
    assert_string_equal(r.stages[0].name, "train");
    assert_int_equal(r.stages[0].kind, VNM_RECIPE_STAGE_DENSE);
    assert_true(r.stages[0].epochs == 1);
    assert_int_equal(r.stages[0].srste.every, 100);
    assert_int_equal(r.log.every, 10);
    vnm_recipe_free(&r);
}

static void test_flow_style_and_null_section(void **state)
{
    (void)state;
    vnm_recipe r;
    load_ok("good/lora_srste.yaml", NULL, 0, &r);
    assert_string_equal(r.run.name, "lora srste");
    assert_int_equal(r.run.device, VNM_RECIPE_DEVICE_CUDA);
    assert_int_equal(r.model.embed_dim, 64);
    assert_true(r.lora.present);
    assert_int_equal(r.lora.rank, 16); /* METHOD §6 defaults: r 16, α 32, all seven projections */
    assert_true(r.lora.alpha == 32);
    assert_string_equal(r.lora.targets.items[0], "all-linear");
    assert_int_equal(r.stages[3].lora.every, 50);
    assert_true(r.stages[3].lora.lambda == 1e-4);
    assert_int_equal(r.sparsity.score, VNM_SCORE_RIA);
    assert_int_equal(r.sparsity.selector, VNM_SELECT_EXHAUSTIVE);
    assert_int_equal(r.optim.name, VNM_RECIPE_OPTIM_SGD);
    assert_true(r.optim.nesterov);
    assert_int_equal(r.stages[2].kind, VNM_RECIPE_STAGE_SPARSE_SRSTE);
    assert_int_equal(r.stages[2].srste.every, 50);
    assert_true(r.stages[2].srste.lambda_w == 0.0001);
    assert_true(r.stages[3].optim.weight_decay == 0);
    vnm_recipe_free(&r);
}

static void test_overrides(void **state)
{
    (void)state;
    const char *const ov[] = {
        "optim.lr=0.01",          "run.name=other",          "sparsity.pattern=32:2:8",
        "data.augment.flip=false", "stages.sparse.epochs=2", "stages.0.optim.lr=3e-4",
        "sparsity.targets=[a.weight, b.weight]",   "schedule.warmup_fraction=~",
        "lora.rank=4",            "model={size: small}",
    };
    vnm_recipe r;
    load_ok("good/quickstart.yaml", ov, (int)(sizeof ov / sizeof *ov), &r);
    assert_true(r.optim.lr == 0.01);
    assert_string_equal(r.run.output_dir, "runs/other"); /* derived after overrides */
    assert_int_equal(r.sparsity.pattern.V, 32);
    assert_int_equal(r.sparsity.pattern.M, 8);
    assert_false(r.data.augment.flip);
    assert_true(r.stages[2].epochs == 2);
    assert_true(r.stages[0].optim.lr == 3e-4);
    assert_int_equal(r.sparsity.targets.n, 2);
    assert_string_equal(r.sparsity.targets.items[0], "a.weight");
    assert_true(isnan(r.schedule.warmup_fraction));
    assert_true(r.lora.present); /* an override into a section turns it on */
    assert_int_equal(r.lora.rank, 4);
    assert_int_equal(r.model.embed_dim, 384);
    assert_true(r.model.drop_path == 0.1); /* a section override keeps the keys it does not name */
    vnm_recipe_free(&r);
}

static void test_bad_overrides(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"optim.lr=-1", "override 'optim.lr=-1': optim.lr: expected a number > 0, got -1"},
        {"optim.lerning_rate=1", "override 'optim.lerning_rate=1': unknown key 'lerning_rate' in "
                                 "optim (did you mean 'lr'?)"},
        {"optimm.lr=1", "override 'optimm.lr=1': unknown key 'optimm' at top level (did you "
                        "mean 'optim'?)"},
        {"stages.nope.steps=1", "override 'stages.nope.steps=1': stages: no stage 'nope'"},
        {"stages.7.steps=1", "no stage '7'"},
        {"optim.lr.x=1", "override 'optim.lr.x=1': optim.lr: is a value, not a section"},
        {"noequals", "override 'noequals': expected key.path=value"},
        {"=3", "override '=3': expected key.path=value"},
        {"optim..lr=3", "override 'optim..lr=3': expected key.path=value"},
        {"optim.betas=[0.9", "override 'optim.betas=[0.9': YAML syntax error"},
        {"sparsity.pattern=64:3:5", "override 'sparsity.pattern=64:3:5': sparsity.pattern"},
        {"run.device=gpu", "override 'run.device=gpu': run.device: expected one of cpu|cuda"},
        /* a rule across keys broken by an override names the override too */
        {"stages.dense.steps=5", "override 'stages.dense.steps=5': stages[0]: stage 'dense' needs "
                                 "exactly one of steps, epochs, fraction (got 2)"},
        {"stages.sparse.name=dense", "override 'stages.sparse.name=dense': stages[2].name: "
                                     "duplicate stage name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        load_fails("good/quickstart.yaml", &cases[i][0], 1, cases[i][1]);
}

/* emit → load gives an equal struct and the same text again. */
static void roundtrip(const char *rel, const char *const *ov, int n)
{
    vnm_recipe a, b;
    load_ok(rel, ov, n, &a);
    char *text = vnm_recipe_emit_string(&a);
    assert_non_null(text);
    char tmp[] = "/tmp/vnm_recipe_XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    char err[1024] = "";
    vnm_status st = vnm_recipe_load(tmp, NULL, 0, &b, err, sizeof err);
    remove(tmp);
    if (st != VNM_OK) fail_msg("%s re-load: %s\n%s", rel, err, text);
    assert_true(vnm_recipe_equal(&a, &b));
    /* independent of vnm_recipe_equal: a few fields by hand */
    assert_string_equal(a.run.name, b.run.name);
    assert_true(a.optim.lr == b.optim.lr && a.optim.betas[1] == b.optim.betas[1]);
    assert_int_equal(a.n_stages, b.n_stages);
    for (int64_t i = 0; i < a.n_stages; i++) {
        assert_string_equal(a.stages[i].name, b.stages[i].name);
        assert_int_equal(a.stages[i].kind, b.stages[i].kind);
        assert_int_equal(a.stages[i].steps, b.stages[i].steps);
    }
    char *again = vnm_recipe_emit_string(&b);
    assert_non_null(again);
    assert_string_equal(text, again);
    free(text);
    free(again);
    vnm_recipe_free(&a);
    vnm_recipe_free(&b);
}

static void test_roundtrip_quickstart(void **state)
{
    (void)state;
    roundtrip("good/quickstart.yaml", NULL, 0);
}
static void test_roundtrip_minimal(void **state)
{
    (void)state;
    roundtrip("good/minimal.yaml", NULL, 0);
}
static void test_roundtrip_lora_srste(void **state)
{
    (void)state;
    roundtrip("good/lora_srste.yaml", NULL, 0);
}
/* Strings that YAML would misread unquoted, or that need escapes, survive the trip. */
static void test_roundtrip_awkward_strings(void **state)
{
    (void)state;
    const char *const ov[] = {"run.name='we\"ird\\ name: #x'", "data.path='true'",
                              "sparsity.targets=['*', '- a', '{b}']", "log.metrics=\"tab\\there\""};
    roundtrip("good/quickstart.yaml", ov, 4);
    vnm_recipe r;
    load_ok("good/quickstart.yaml", ov, 4, &r);
    assert_string_equal(r.run.name, "we\"ird\\ name: #x");
    assert_string_equal(r.data.path, "true");
    assert_string_equal(r.sparsity.targets.items[1], "- a");
    assert_string_equal(r.log.metrics, "tab\there");
    vnm_recipe_free(&r);
}

/* Given weights may already be sparse, so a sparse stage may come first; the file must exist. */
static void test_weights_allow_sparse_first(void **state)
{
    (void)state;
    char ov[1200];
    snprintf(ov, sizeof ov, "model.weights=%s", recipe_path("good/minimal.yaml"));
    const char *const ovs[] = {ov};
    vnm_recipe r;
    load_ok("bad/stage_order.yaml", ovs, 1, &r);
    assert_int_equal(r.stages[1].kind, VNM_RECIPE_STAGE_SPARSE_FIXED);
    assert_non_null(strstr(r.model.weights, "good/minimal.yaml"));
    vnm_recipe_free(&r);
}

/* vnm_recipe_equal must see a difference anywhere, or the round trip tests prove nothing. */
static void test_equal_detects_changes(void **state)
{
    (void)state;
    static const char *const changes[] = {"optim.betas=[0.9, 0.99]", "stages.prune.srste.every=7",
                                          "sparsity.targets=[x]", "lora.rank=8", "eval.every=1"};
    vnm_recipe a, b;
    load_ok("good/quickstart.yaml", NULL, 0, &a);
    for (size_t i = 0; i < sizeof changes / sizeof *changes; i++) {
        load_ok("good/quickstart.yaml", &changes[i], 1, &b);
        if (vnm_recipe_equal(&a, &b)) fail_msg("'%s' not seen as a change", changes[i]);
        vnm_recipe_free(&b);
    }
    load_ok("good/quickstart.yaml", NULL, 0, &b);
    assert_true(vnm_recipe_equal(&a, &b));
    vnm_recipe_free(&a);
    vnm_recipe_free(&b);
}

static void test_emit_text(void **state)
{
    (void)state;
    vnm_recipe r;
    load_ok("good/quickstart.yaml", NULL, 0, &r);
    char *text = vnm_recipe_emit_string(&r);
    assert_non_null(text);
    assert_non_null(strstr(text, "sparsity:\n  pattern: \"64:2:5\"\n"));
    assert_non_null(strstr(text, "  - name: \"sparse\"\n    kind: sparse_fixed\n    epochs: 3\n"
                                 "    optim:\n      lr: 0.0005\n"));
    assert_non_null(strstr(text, "  betas: [0.9, 0.999]\n"));
    assert_null(strstr(text, "\nlora:")); /* an absent optional section stays absent */
    free(text);
    vnm_recipe_free(&r);
}

static void test_load_errors(void **state)
{
    (void)state;
    vnm_recipe r;
    char err[256];
    assert_int_equal(vnm_recipe_load(NULL, NULL, 0, &r, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "must be given"));
    load_fails("good/does_not_exist.yaml", NULL, 0, "does_not_exist.yaml: cannot open recipe");
    /* a tiny buffer is cut, never overrun */
    char small[8];
    assert_int_equal(vnm_recipe_load(recipe_path("bad/negative_lr.yaml"), NULL, 0, &r, small,
                                     sizeof small),
                     VNM_ERR_INPUT);
    assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_help_lists_schema(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    vnm_recipe_help(f);
    fclose(f);
    assert_non_null(strstr(buf, "optim.lr"));
    assert_non_null(strstr(buf, "stages[].srste.lambda_w"));
    assert_non_null(strstr(buf, "cpu|cuda"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BAD_RECIPES(BAD_CASE)
        cmocka_unit_test(test_bad_folder_listed),
        cmocka_unit_test(test_quickstart_values),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flow_style_and_null_section),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_bad_overrides),
        cmocka_unit_test(test_roundtrip_quickstart),
        cmocka_unit_test(test_roundtrip_minimal),
        cmocka_unit_test(test_roundtrip_lora_srste),
        cmocka_unit_test(test_roundtrip_awkward_strings),
        cmocka_unit_test(test_weights_allow_sparse_first),
        cmocka_unit_test(test_equal_detects_changes),
        cmocka_unit_test(test_emit_text),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_help_lists_schema),
    };
    return cmocka_run_group_tests_name("recipe", tests, NULL, NULL);
}
