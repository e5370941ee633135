/* tests/test_sparse_pattern.c — V:N:M patterns (strict parser, text form, density, κ against
 * METHOD §3's numbers), pruning scores (magnitude; RIA against a double reference written here,
 * zero rows and columns, argument errors) and calibration (Σx² / RMS, and the collector through
 * real linear ops on named parameters). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparse/sparse.h"
#include "test_util.h"

/* Uniform in [lo, hi) from a fixed Philox stream: element i of stream key. */
static float urand(uint64_t key, uint64_t i, float lo, float hi)
{
    uint32_t r[4];
    vnm_philox4x32(key, i, 0, r);
    return lo + (hi - lo) * vnm_philox_uniform(r[0]);
}

/* Fails unless |got - want| <= tol (in double, unlike cmocka's float comparison). */
static void assert_near(double got, double want, double tol, const char *what)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("%s: got %.17g, want %.17g (tol %.3g)", what, got, want, tol);
}

/* ---- patterns ---- */

static void test_pattern_parse_valid(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int V, M;
    } ok[] = {{"16:2:4", 16, 4},   {"32:2:5", 32, 5},    {"64:2:5", 64, 5}, {"64:2:8", 64, 8},
              {"32:2:7", 32, 7},   {"128:2:16", 128, 16}, {"256:2:64", 256, 64}};
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        vnm_pattern p = {0, 0, 0};
        char err[256] = "";
        assert_int_equal(vnm_pattern_parse(ok[k].text, &p, err, sizeof err), VNM_OK);
        assert_int_equal(p.V, ok[k].V);
        assert_int_equal(p.N, 2);
        assert_int_equal(p.M, ok[k].M);
        char buf[32];
        assert_string_equal(vnm_pattern_str(p, buf, sizeof buf), ok[k].text);
    }
}

static void test_pattern_parse_rejects_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"64:3:5", "pattern '64:3:5': N must be 2 (the sparse tensor cores keep 2 of 4"},
        {"64:2:3", "pattern '64:2:3': M must be between 4 and 64"},
        {"64:2:65", "pattern '64:2:65': M must be between 4 and 64"},
        {"64:2:0", "pattern '64:2:0': M must be between 4 and 64"},
        {"63:2:5", "pattern '63:2:5': V must be one of 16, 32, 64, 128, 256 (got 63)"},
        {"512:2:5", "V must be one of 16, 32, 64, 128, 256 (got 512)"},
        {"64:2", "pattern '64:2': 2 fields (expected three decimal integers V:N:M"},
        {"64:2:5:1", "pattern '64:2:5:1': 4 fields"},
        {" 64:2:5", "pattern ' 64:2:5': V ' 64' is not a decimal integer"},
        {"64:2:5x", "pattern '64:2:5x': M '5x' is not a decimal integer"},
        {"64:2:5 ", "M '5 ' is not a decimal integer"},
        {"-64:2:5", "pattern '-64:2:5': V '-64' is not a decimal integer"},
        {"+64:2:5", "pattern '+64:2:5': V '+64' is not a decimal integer"},
        {"64:+2:5", "N '+2' is not a decimal integer"},
        {"64:2.0:5", "N '2.0' is not a decimal integer"},
        {"64::5", "pattern '64::5': N is empty"},
        {":2:5", "V is empty"},
        {"", "pattern '': empty (expected three decimal integers"},
        {"64", "pattern '64': 1 field (expected"},
        {"99999999999999999999:2:5", "V '99999999999999999999' is out of range"},
        {"64:2:99999999999999999999", "M '99999999999999999999' is out of range"},
        {"64x2x5", "1 field"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        vnm_pattern p = {7, 7, 7};
        char err[256] = "";
        assert_int_equal(vnm_pattern_parse(bad[k].text, &p, err, sizeof err), VNM_ERR_INPUT);
        if (!strstr(err, bad[k].needle))
            fail_msg("'%s': message '%s' does not contain '%s'", bad[k].text, err, bad[k].needle);
        assert_int_equal(p.V, 7); /* untouched on failure */
    }
    vnm_pattern p;
    char err[128] = "";
    assert_int_equal(vnm_pattern_parse(NULL, &p, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "no text given"));
    assert_int_equal(vnm_pattern_parse("64:3:5", &p, NULL, 0), VNM_ERR_INPUT); /* err optional */
    char tiny[8];
    assert_int_equal(vnm_pattern_parse("64:3:5", &p, tiny, sizeof tiny), VNM_ERR_INPUT);
    assert_int_equal(strlen(tiny), sizeof tiny - 1); /* truncated, terminated */
}

static void test_pattern_density_and_kappa(void **state)
{
    (void)state;
    vnm_pattern p;
    assert_int_equal(vnm_pattern_parse("64:2:5", &p, NULL, 0), VNM_OK);
    assert_near(vnm_pattern_density(p), 0.4, 1e-15, "density");
    assert_near(vnm_pattern_kappa(p), 0.3634, 5e-5, "kappa"); /* METHOD §3 */
    assert_int_equal(vnm_pattern_parse("64:2:8", &p, NULL, 0), VNM_OK);
    assert_near(vnm_pattern_density(p), 0.25, 1e-15, "density");
    assert_near(vnm_pattern_kappa(p), 0.2323, 5e-5, "kappa");
    /* 2:4: C(4,4) = 1 so the block term vanishes and κ = ln 6 / 4 = 0.4479 for every V. */
    for (int V = 16; V <= 256; V *= 2) {
        vnm_pattern q = {V, 2, 4};
        assert_near(vnm_pattern_kappa(q), 0.4479, 5e-5, "kappa of 2:4");
        assert_near(vnm_pattern_kappa(q), log(6.0) / 4.0, 1e-12, "kappa of 2:4");
    }
    /* the formula itself, at a point METHOD does not list: C(16,4) = 1820 */
    vnm_pattern q = {32, 2, 16};
    assert_near(vnm_pattern_kappa(q), (log(1820.0) + 32 * log(6.0)) / (32.0 * 16), 1e-12,
                "kappa 32:2:16");
    /* for M > 4, smaller V (more column sets per weight) means more diversity */
    vnm_pattern a = {16, 2, 5}, b = {64, 2, 5};
    assert_true(vnm_pattern_kappa(a) > vnm_pattern_kappa(b));
}

/* ---- scores ---- */

static void test_score_parse(void **state)
{
    (void)state;
    vnm_score_kind k = VNM_SCORE_RIA;
    assert_int_equal(vnm_score_parse("magnitude", &k, NULL, 0), VNM_OK);
    assert_int_equal(k, VNM_SCORE_MAGNITUDE);
    assert_int_equal(vnm_score_parse("ria", &k, NULL, 0), VNM_OK);
    assert_int_equal(k, VNM_SCORE_RIA);
    char err[128] = "";
    assert_int_equal(vnm_score_parse("RIA ", &k, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "score 'RIA ': unknown (expected 'magnitude' or 'ria')"));
    assert_int_equal(vnm_score_parse(NULL, &k, err, sizeof err), VNM_ERR_INPUT);
}

static void test_score_magnitude(void **state)
{
    (void)state;
    enum { O = 5, I = 11 };
    float W[O * I], S[O * I];
    for (int k = 0; k < O * I; k++) W[k] = urand(1, (uint64_t)k, -2, 2);
    W[3] = -0.0f;
    assert_int_equal(vnm_score_compute(VNM_SCORE_MAGNITUDE, W, O, I, NULL, 0.5, S, NULL, 0),
                     VNM_OK);
    for (int k = 0; k < O * I; k++) assert_true(S[k] == fabsf(W[k]) && !signbit(S[k]));
}

/* RIA straight from METHOD §2.1, one element at a time. */
static double ria_ref(const float *W, int64_t O, int64_t I, const double *rms, double a,
                      int64_t o, int64_t i)
{
    double col = 0, row = 0, w = fabs((double)W[o * I + i]);
    for (int64_t k = 0; k < O; k++) col += fabs((double)W[k * I + i]);
    for (int64_t k = 0; k < I; k++) row += fabs((double)W[o * I + k]);
    double rel = (col == 0 ? 0 : w / col) + (row == 0 ? 0 : w / row);
    return rel * pow(rms[i], a);
}

static void check_ria(const float *W, int64_t O, int64_t I, const double *rms, double a)
{
    float *S = malloc((size_t)(O * I) * sizeof *S);
    double *want = malloc((size_t)(O * I) * sizeof *want);
    assert_int_equal(vnm_score_compute(VNM_SCORE_RIA, W, O, I, rms, a, S, NULL, 0), VNM_OK);
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++) want[o * I + i] = ria_ref(W, O, I, rms, a, o, i);
    for (int64_t k = 0; k < O * I; k++) assert_true(isfinite(S[k]) && S[k] >= 0);
    tu_assert_close(S, want, O * I, 1e-12, 1e-6, "ria");
    free(S);
    free(want);
}

static void test_score_ria_matches_reference(void **state)
{
    (void)state;
    static const int64_t shapes[][2] = {{7, 13}, {1, 9}, {16, 5}, {300, 260}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t O = shapes[s][0], I = shapes[s][1];
        float *W = malloc((size_t)(O * I) * sizeof *W);
        double *rms = malloc((size_t)I * sizeof *rms);
        for (int64_t k = 0; k < O * I; k++) W[k] = urand(2 + s, (uint64_t)k, -1, 1);
        for (int64_t i = 0; i < I; i++) rms[i] = urand(20 + s, (uint64_t)i, 0.05f, 3.0f);
        check_ria(W, O, I, rms, 0.5);
        check_ria(W, O, I, rms, 1.0);
        check_ria(W, O, I, rms, 0.0);
        free(W);
        free(rms);
    }
}

static void test_score_ria_zero_rows_and_columns(void **state)
{
    (void)state;
    enum { O = 6, I = 9 };
    float W[O * I], S[O * I];
    double rms[I];
    for (int k = 0; k < O * I; k++) W[k] = urand(3, (uint64_t)k, -1, 1);
    for (int i = 0; i < I; i++) rms[i] = 1.0 + 0.1 * i;
    for (int i = 0; i < I; i++) W[2 * I + i] = 0.0f; /* row 2 */
    for (int o = 0; o < O; o++) W[o * I + 4] = 0.0f; /* column 4 */
    rms[7] = 0.0;                                    /* a dead input channel */
    check_ria(W, O, I, rms, 0.5);
    assert_int_equal(vnm_score_compute(VNM_SCORE_RIA, W, O, I, rms, 0.5, S, NULL, 0), VNM_OK);
    for (int i = 0; i < I; i++) assert_true(S[2 * I + i] == 0.0f);
    for (int o = 0; o < O; o++) assert_true(S[o * I + 4] == 0.0f && S[o * I + 7] == 0.0f);
    float Z[O * I] = {0};
    check_ria(Z, O, I, rms, 0.5); /* all zero: every term is 0/0 */
}

static void test_score_errors(void **state)
{
    (void)state;
    float W[6] = {1, 2, 3, 4, 5, 6}, S[6];
    double rms[3] = {1, 1, 1};
    char err[256] = "";
    assert_int_equal(vnm_score_compute(VNM_SCORE_RIA, W, 2, 3, NULL, 0.5, S, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "score 'ria': needs the activation RMS of each of the 3 input"));
    rms[1] = -1.0;
    assert_int_equal(vnm_score_compute(VNM_SCORE_RIA, W, 2, 3, rms, 0.5, S, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "act_rms[1] = -1"));
    rms[1] = NAN;
    assert_int_equal(vnm_score_compute(VNM_SCORE_RIA, W, 2, 3, rms, 0.5, S, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "act_rms[1] = nan"));
    rms[1] = 1.0;
    assert_int_equal(vnm_score_compute(VNM_SCORE_RIA, W, 2, 3, rms, -0.5, S, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "exponent a = -0.5"));
    assert_int_equal(vnm_score_compute(VNM_SCORE_MAGNITUDE, W, 0, 3, NULL, 0.5, S, err,
                                       sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "weight shape [0, 3] must have positive sizes"));
    assert_int_equal(vnm_score_compute(VNM_SCORE_MAGNITUDE, NULL, 2, 3, NULL, 0.5, S, err,
                                       sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "must not be NULL"));
    assert_int_equal(vnm_score_compute((vnm_score_kind)9, W, 2, 3, rms, 0.5, S, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "unknown score kind 9"));
}

/* ---- calibration ---- */

static void rms_ref(const float *x, int64_t T, int64_t I, double *rms)
{
    for (int64_t i = 0; i < I; i++) {
        double s = 0;
        for (int64_t t = 0; t < T; t++) s += (double)x[t * I + i] * x[t * I + i];
        rms[i] = sqrt(s / (double)T);
    }
}

static void test_calib_add_and_rms(void **state)
{
    (void)state;
    enum { I = 70, T1 = 3, T2 = 1200 }; /* T2·I is large enough to run the parallel path */
    float *x = malloc((T1 + T2) * I * sizeof *x);
    for (int k = 0; k < (T1 + T2) * I; k++) x[k] = urand(4, (uint64_t)k, -3, 3);
    vnm_calib c;
    assert_int_equal(vnm_calib_init(&c, I), VNM_OK);
    double rms[I], want[I];
    vnm_calib_rms(&c, rms); /* no tokens yet */
    for (int i = 0; i < I; i++) assert_true(rms[i] == 0.0);
    vnm_calib_add(&c, x, T1);
    vnm_calib_add(&c, x + T1 * I, T2);
    assert_int_equal(c.tokens, T1 + T2);
    assert_int_equal(c.I, I);
    vnm_calib_rms(&c, rms);
    rms_ref(x, T1 + T2, I, want);
    for (int i = 0; i < I; i++) assert_near(rms[i], want[i], 1e-12 * want[i], "rms");
    vnm_calib_free(&c);
    assert_null(c.sumsq);
    vnm_calib_free(&c); /* twice is harmless */
    assert_int_equal(vnm_calib_init(&c, 0), VNM_ERR_INPUT);
    free(x);
}

/* Runs x through a linear with weight w (both parameters) and returns x's values. */
static float *run_linear(vnm_ctx *ctx, vnm_tensor *w, int ndim, const int64_t *xs)
{
    vnm_tensor *x = tu_param(ctx, ndim, xs, -2, 2);
    assert_non_null(vnm_linear(ctx, x, w, NULL));
    return tu_host(ctx, x);
}

static void test_calib_collector_through_linears(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *qkv = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(12, 5),
                                    "blocks.0.attn.qkv.weight");
    vnm_tensor *fc1 = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(4, 6),
                                    "blocks.1.mlp.fc1.weight");
    vnm_tensor *head = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(3, 5), "head.weight");
    const char *globs[] = {"blocks.*.attn.*", "*.fc1.weight"};
    vnm_calib_collector *col = vnm_calib_attach(ctx, globs, 2);
    assert_non_null(col);
    /* qkv sees two batches of different leading shapes: 2·3 + 4 = 10 tokens */
    float *x1 = run_linear(ctx, qkv, 3, VNM_SHAPE(2, 3, 5));
    float *x2 = run_linear(ctx, qkv, 2, VNM_SHAPE(4, 5));
    float *xh = run_linear(ctx, head, 2, VNM_SHAPE(7, 5));
    float *xf = run_linear(ctx, fc1, 2, VNM_SHAPE(3, 6));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);

    const vnm_calib *cq = vnm_calib_find(col, "blocks.0.attn.qkv.weight");
    assert_non_null(cq);
    assert_int_equal(cq->I, 5);
    assert_int_equal(cq->tokens, 10);
    float xq[10 * 5];
    memcpy(xq, x1, 6 * 5 * sizeof *xq);
    memcpy(xq + 6 * 5, x2, 4 * 5 * sizeof *xq);
    double rms[6], want[6];
    vnm_calib_rms(cq, rms);
    rms_ref(xq, 10, 5, want);
    for (int i = 0; i < 5; i++) assert_near(rms[i], want[i], 1e-12 * want[i], "rms");

    const vnm_calib *cf = vnm_calib_find(col, "blocks.1.mlp.fc1.weight");
    assert_non_null(cf);
    assert_int_equal(cf->tokens, 3);
    vnm_calib_rms(cf, rms);
    rms_ref(xf, 3, 6, want);
    for (int i = 0; i < 6; i++) assert_near(rms[i], want[i], 1e-12 * want[i], "rms");

    assert_null(vnm_calib_find(col, "head.weight")); /* does not match any glob */
    assert_null(vnm_calib_find(col, "blocks.0.attn"));
    vnm_calib_detach(col);
    free(run_linear(ctx, qkv, 2, VNM_SHAPE(2, 5))); /* hook removed: nothing to call into */
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
    free(x1);
    free(x2);
    free(xh);
    free(xf);
}

static void test_calib_collector_errors(void **state)
{
    vnm_ctx *ctx = *state;
    assert_null(vnm_calib_attach(ctx, NULL, 0));
    tu_assert_error(ctx, "no weight-name globs given");
    const char *globs[] = {"*", NULL};
    assert_null(vnm_calib_attach(ctx, globs, 2));
    tu_assert_error(ctx, "glob 1 of 2 is NULL");
    vnm_calib_collector *col = vnm_calib_attach(ctx, globs, 1);
    assert_non_null(col);
    /* two weights with one name but different input widths: the second batch is refused */
    vnm_tensor *a = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(3, 5), "layer.weight");
    vnm_tensor *b = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(3, 7), "layer.weight");
    free(run_linear(ctx, a, 2, VNM_SHAPE(2, 5)));
    free(run_linear(ctx, b, 2, VNM_SHAPE(2, 7)));
    tu_assert_error(ctx, "input of 'layer.weight' has 7 features, earlier batches had 5");
    assert_int_equal(vnm_calib_find(col, "layer.weight")->tokens, 2);
    vnm_calib_detach(col);
}

/* GPU activations arrive in bf16 / f16: the collector widens them; other dtypes are refused. The
 * hook is called directly, as the sparse-linear op calls it. */
static void test_calib_collector_half_inputs(void **state)
{
    vnm_ctx *ctx = *state;
    const char *globs[] = {"*"};
    vnm_calib_collector *col = vnm_calib_attach(ctx, globs, 1);
    assert_non_null(col);
    enum { T = 4, I = 3 };
    uint16_t hb[T * I], hh[T * I];
    float vb[T * I], vh[T * I];
    for (int k = 0; k < T * I; k++) {
        float v = urand(9, (uint64_t)k, -3, 3);
        hb[k] = vnm_f32_to_bf16(v);
        hh[k] = vnm_f32_to_f16(v);
        vb[k] = vnm_bf16_to_f32(hb[k]);
        vh[k] = vnm_f16_to_f32(hh[k]);
    }
    vnm_tensor *xb = vnm_tensor_from(ctx, VNM_DTYPE_BF16, 2, VNM_SHAPE(T, I), hb);
    vnm_tensor *xh = vnm_tensor_from(ctx, VNM_DTYPE_F16, 2, VNM_SHAPE(T, I), hh);
    vnm_ctx_call_linear_hook(ctx, "a.weight", xb);
    vnm_ctx_call_linear_hook(ctx, "b.weight", xh);
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
    double rms[I], want[I];
    assert_non_null(vnm_calib_find(col, "a.weight"));
    assert_non_null(vnm_calib_find(col, "b.weight"));
    vnm_calib_rms(vnm_calib_find(col, "a.weight"), rms);
    rms_ref(vb, T, I, want);
    for (int i = 0; i < I; i++) assert_near(rms[i], want[i], 1e-12 * want[i], "bf16 rms");
    vnm_calib_rms(vnm_calib_find(col, "b.weight"), rms);
    rms_ref(vh, T, I, want);
    for (int i = 0; i < I; i++) assert_near(rms[i], want[i], 1e-12 * want[i], "f16 rms");
    vnm_tensor *xi = vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(T, I));
    vnm_ctx_call_linear_hook(ctx, "c.weight", xi);
    tu_assert_error(ctx, "calibration: input of 'c.weight' is i32 (expected a float)");
    assert_null(vnm_calib_find(col, "c.weight"));
    vnm_calib_detach(col);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pattern_parse_valid),
        cmocka_unit_test(test_pattern_parse_rejects_malformed),
        cmocka_unit_test(test_pattern_density_and_kappa),
        cmocka_unit_test(test_score_parse),
        cmocka_unit_test(test_score_magnitude),
        cmocka_unit_test(test_score_ria_matches_reference),
        cmocka_unit_test(test_score_ria_zero_rows_and_columns),
        cmocka_unit_test(test_score_errors),
        cmocka_unit_test(test_calib_add_and_rms),
        cmocka_unit_test_setup_teardown(test_calib_collector_through_linears, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_calib_collector_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_calib_collector_half_inputs, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("sparse_pattern", tests, NULL, NULL);
}
