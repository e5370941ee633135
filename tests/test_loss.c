/* tests/test_loss.c — cross-entropy (hard labels i32/i64, ignore_index, label smoothing; soft
 * targets) and MSE: forward against a naive double reference, finite-difference gradients,
 * all-ignored batches, very large logits, thread-count independence, bad labels and shapes. */
#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/cpu/simd.h"
#include "test_util.h"

/* torch.nn.functional.cross_entropy(reduction='mean') written out in double; y or t is NULL.
 * Returns 0 when no row counts (see autograd/op_loss.c). With grad non-NULL also writes
 * d loss / d x[N, C] = (softmax - target distribution) / counted rows, 0 on ignored rows. */
static double ref_cross_entropy(const float *x, const int64_t *y, const float *t, int64_t N,
                                int64_t C, int64_t ignore_index, double eps, double *grad)
{
    double total = 0.0;
    int64_t counted = 0;
    for (int64_t r = 0; r < N; r++) {
        const float *row = x + r * C;
        for (int64_t c = 0; grad && c < C; c++) grad[r * C + c] = 0.0;
        if (y && y[r] == ignore_index) continue;
        double m = row[0];
        for (int64_t c = 1; c < C; c++) m = fmax(m, row[c]);
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) s += exp(row[c] - m);
        double lse = m + log(s), loss = 0.0;
        double st = t ? 0.0 : 1.0; /* Σ of the row's target weights */
        for (int64_t c = 0; t && c < C; c++) st += t[r * C + c];
        for (int64_t c = 0; c < C; c++) {
            double q = t ? t[r * C + c] : eps / C + (c == y[r] ? 1.0 - eps : 0.0);
            loss += q * (lse - row[c]);
            if (grad) grad[r * C + c] = st * exp(row[c] - lse) - q;
        }
        total += loss;
        counted++;
    }
    for (int64_t i = 0; grad && counted && i < N * C; i++) grad[i] /= (double)counted;
    return counted ? total / counted : 0.0;
}

/* Persistent labels (they outlive the step resets of the gradient check). */
static vnm_tensor *labels_new(vnm_ctx *ctx, const int64_t *y, int64_t N, bool i64)
{
    vnm_tensor *t = vnm_buffer_new(ctx, i64 ? VNM_DTYPE_I64 : VNM_DTYPE_I32, 1, &N, "labels");
    assert_non_null(t);
    if (i64) {
        assert_int_equal(vnm_tensor_from_host(ctx, t, y), VNM_OK);
        return t;
    }
    int32_t *y32 = malloc((size_t)N * sizeof *y32 + 1);
    for (int64_t i = 0; i < N; i++) y32[i] = (int32_t)y[i];
    assert_int_equal(vnm_tensor_from_host(ctx, t, y32), VNM_OK);
    free(y32);
    return t;
}

/* Labels spread over the classes; every `every`-th row (if > 0) set to ignore_index. */
static int64_t *labels_make(int64_t N, int64_t C, int every, int64_t ignore_index)
{
    int64_t *y = malloc((size_t)N * sizeof *y + 1);
    for (int64_t i = 0; i < N; i++)
        y[i] = every > 0 && i % every == 1 ? ignore_index : (i * 7 + 3) % C;
    return y;
}

/* Positive soft targets; normalised: each row sums to 1 as mixup/cutmix produce (the loss is
 * defined for any weights, as in PyTorch). */
static vnm_tensor *targets_new(vnm_ctx *ctx, int64_t N, int64_t C, bool normalised)
{
    vnm_tensor *t = vnm_buffer_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(N, C), "targets");
    assert_int_equal(vnm_rng_uniform(ctx, t, 0.0f, 1.0f), VNM_OK);
    if (!normalised) return t;
    float *h = tu_host(ctx, t);
    for (int64_t r = 0; r < N; r++) {
        float s = 0.0f;
        for (int64_t c = 0; c < C; c++) s += h[r * C + c];
        for (int64_t c = 0; c < C; c++) h[r * C + c] /= s;
    }
    assert_int_equal(vnm_tensor_from_host(ctx, t, h), VNM_OK);
    free(h);
    return t;
}

static void check_ce_forward(vnm_ctx *ctx, int64_t N, int64_t C, bool i64, int every,
                             int64_t ignore_index, float eps)
{
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(N, C), -3, 3);
    int64_t *y = labels_make(N, C, every, ignore_index);
    vnm_tensor *loss = vnm_cross_entropy(ctx, x, labels_new(ctx, y, N, i64), ignore_index, eps);
    if (!loss) fail_msg("cross_entropy failed: %s", vnm_ctx_error(ctx));
    assert_int_equal(loss->ndim, 1);
    assert_int_equal(loss->shape[0], 1);
    float *hx = tu_host(ctx, x), got = vnm_item(ctx, loss);
    double *want_grad = malloc((size_t)(N * C) * sizeof *want_grad);
    double want = ref_cross_entropy(hx, y, NULL, N, C, ignore_index, eps, want_grad);
    tu_assert_close(&got, &want, 1, 1e-5, 1e-5, "cross_entropy forward");
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    float *g = tu_host(ctx, x->grad);
    tu_assert_close(g, want_grad, N * C, 1e-6, 1e-4, "cross_entropy gradient");
    free(hx);
    free(y);
    free(g);
    free(want_grad);
}

static void test_ce_forward_i32(void **state)
{
    vnm_ctx *ctx = *state;
    check_ce_forward(ctx, 1, 1, false, 0, -100, 0.0f);
    check_ce_forward(ctx, 7, 5, false, 0, -100, 0.0f);
    check_ce_forward(ctx, 13, 10, false, 0, -100, 0.0f);
    check_ce_forward(ctx, 3, 1000, false, 0, -100, 0.0f);
}

static void test_ce_forward_i64(void **state)
{
    vnm_ctx *ctx = *state;
    check_ce_forward(ctx, 5, 3, true, 0, -100, 0.0f);
    check_ce_forward(ctx, 130, 201, true, 0, -100, 0.0f); /* above the parallel threshold */
}

static void test_ce_forward_ignore_index(void **state)
{
    vnm_ctx *ctx = *state;
    check_ce_forward(ctx, 11, 6, false, 3, -100, 0.0f);
    check_ce_forward(ctx, 200, 97, true, 4, -1, 0.0f);
    /* an ignore_index that is also a class: rows with that label do not count */
    const int64_t N = 6, C = 4;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(N, C), -2, 2);
    int64_t y[6] = {2, 0, 2, 3, 1, 2};
    vnm_tensor *loss = vnm_cross_entropy(ctx, x, labels_new(ctx, y, N, false), 2, 0.0f);
    assert_non_null(loss);
    float *hx = tu_host(ctx, x), got = vnm_item(ctx, loss);
    double want = ref_cross_entropy(hx, y, NULL, N, C, 2, 0.0, NULL);
    tu_assert_close(&got, &want, 1, 1e-5, 1e-5, "cross_entropy with ignore_index 2");
    /* ignored rows get exactly no gradient */
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    float *g = tu_host(ctx, x->grad);
    for (int64_t r = 0; r < N; r++)
        for (int64_t c = 0; c < C; c++)
            if (y[r] == 2 && g[r * C + c] != 0.0f)
                fail_msg("ignored row %lld has gradient %g", (long long)r, (double)g[r * C + c]);
    free(hx);
    free(g);
}

static void test_ce_forward_label_smoothing(void **state)
{
    vnm_ctx *ctx = *state;
    check_ce_forward(ctx, 9, 7, false, 0, -100, 0.1f);
    check_ce_forward(ctx, 17, 12, true, 3, -100, 0.1f); /* with ignored rows */
    check_ce_forward(ctx, 4, 5, false, 0, -100, 1.0f);  /* all smoothing: uniform target */
}

typedef struct {
    vnm_tensor *labels;
    int64_t ignore_index;
    float eps;
} ce_args;

static vnm_tensor *f_ce(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    ce_args *a = user;
    return vnm_cross_entropy(ctx, in[0], a->labels, a->ignore_index, a->eps);
}

static void test_ce_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    const struct {
        int64_t N, C;
        bool i64;
        int every;
        float eps;
    } cases[] = {{5, 4, false, 0, 0.0f}, {7, 6, true, 3, 0.0f}, {6, 5, false, 4, 0.1f}};
    for (int k = 0; k < 3; k++) {
        int64_t N = cases[k].N, C = cases[k].C;
        int64_t *y = labels_make(N, C, cases[k].every, -100);
        ce_args a = {labels_new(ctx, y, N, cases[k].i64), -100, cases[k].eps};
        vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(N, C), -2, 2);
        tu_gradcheck(ctx, f_ce, 1, &x, &a);
        free(y);
    }
}

static vnm_tensor *f_ce_soft(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    return vnm_cross_entropy_soft(ctx, in[0], user);
}

static void test_ce_soft_forward_and_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t shapes[3][2] = {{1, 3}, {9, 11}, {150, 130}};
    for (int k = 0; k < 3; k++) {
        int64_t N = shapes[k][0], C = shapes[k][1];
        vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(N, C), -3, 3);
        vnm_tensor *t = targets_new(ctx, N, C, k != 1);
        vnm_tensor *loss = vnm_cross_entropy_soft(ctx, x, t);
        if (!loss) fail_msg("cross_entropy_soft failed: %s", vnm_ctx_error(ctx));
        float *hx = tu_host(ctx, x), *ht = tu_host(ctx, t), got = vnm_item(ctx, loss);
        double *want_grad = malloc((size_t)(N * C) * sizeof *want_grad);
        double want = ref_cross_entropy(hx, NULL, ht, N, C, -100, 0.0, want_grad);
        tu_assert_close(&got, &want, 1, 1e-5, 1e-5, "cross_entropy_soft forward");
        assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
        float *g = tu_host(ctx, x->grad);
        tu_assert_close(g, want_grad, N * C, 1e-6, 1e-4, "cross_entropy_soft gradient");
        free(hx);
        free(ht);
        free(g);
        free(want_grad);
    }
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(4, 6), -2, 2);
    tu_gradcheck(ctx, f_ce_soft, 1, &x, targets_new(ctx, 4, 6, false));
}

static vnm_tensor *f_mse(vnm_ctx *ctx, vnm_tensor **in, void *user)
{
    (void)user;
    return vnm_mse(ctx, in[0], in[1]);
}

static void test_mse_forward_and_gradcheck(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t shapes[3][3] = {{1, 1, 1}, {3, 5, 7}, {2, 64, 129}};
    for (int k = 0; k < 3; k++) {
        vnm_tensor *a = tu_param(ctx, 3, shapes[k], -1, 1), *b = tu_param(ctx, 3, shapes[k], -1, 1);
        vnm_tensor *loss = vnm_mse(ctx, a, b);
        assert_non_null(loss);
        assert_int_equal(loss->ndim, 1);
        assert_int_equal(loss->shape[0], 1);
        int64_t n = vnm_numel(a);
        float *ha = tu_host(ctx, a), *hb = tu_host(ctx, b), got = vnm_item(ctx, loss);
        double want = 0.0;
        for (int64_t i = 0; i < n; i++) want += ((double)ha[i] - hb[i]) * ((double)ha[i] - hb[i]);
        want /= (double)n;
        tu_assert_close(&got, &want, 1, 1e-6, 1e-5, "mse forward");
        free(ha);
        free(hb);
    }
    vnm_tensor *in[2] = {tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1),
                         tu_param(ctx, 2, VNM_SHAPE(3, 4), -1, 1)};
    tu_gradcheck(ctx, f_mse, 2, in, NULL);
}

static void test_ce_all_ignored_is_zero(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t N = 3, C = 4;
    int64_t y[3] = {-100, -100, -100};
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(N, C), -1, 1);
    vnm_tensor *loss = vnm_cross_entropy(ctx, x, labels_new(ctx, y, N, true), -100, 0.1f);
    assert_non_null(loss);
    assert_true(vnm_item(ctx, loss) == 0.0f); /* PyTorch gives NaN here; see op_loss.c */
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    float *g = tu_host(ctx, x->grad);
    for (int64_t i = 0; i < N * C; i++) assert_true(g[i] == 0.0f);
    free(g);
}

static void test_ce_large_logits_stay_finite(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t N = 4, C = 3;
    float hx[12] = {1e4f, -1e4f, 0.0f, -1e4f, 1e4f, 1e4f, 0.0f, 0.0f, -1e4f, 1e4f, 1e4f, 1e4f};
    int64_t y[4] = {1, 0, 2, 1};
    vnm_tensor *x = vnm_param_new(ctx, VNM_DTYPE_F32, 2, VNM_SHAPE(N, C), "logits");
    assert_int_equal(vnm_tensor_from_host(ctx, x, hx), VNM_OK);
    vnm_tensor *loss = vnm_cross_entropy(ctx, x, labels_new(ctx, y, N, false), -100, 0.1f);
    assert_non_null(loss);
    float got = vnm_item(ctx, loss);
    double want = ref_cross_entropy(hx, y, NULL, N, C, -100, 0.1, NULL);
    assert_true(want > 1e4); /* the losses of order 2e4 are really exercised */
    tu_assert_close(&got, &want, 1, 0.0, 1e-6, "cross_entropy with logits of 1e4");
    assert_int_equal(vnm_backward(ctx, loss), VNM_OK);
    float *g = tu_host(ctx, x->grad);
    for (int64_t i = 0; i < N * C; i++)
        if (!isfinite(g[i])) fail_msg("gradient %lld is %g", (long long)i, (double)g[i]);
    free(g);
    vnm_tensor *t = targets_new(ctx, N, C, true);
    float *ht = tu_host(ctx, t), soft = vnm_item(ctx, vnm_cross_entropy_soft(ctx, x, t));
    double want_soft = ref_cross_entropy(hx, NULL, ht, N, C, -100, 0.0, NULL);
    tu_assert_close(&soft, &want_soft, 1, 0.0, 1e-5, "soft cross_entropy with logits of 1e4");
    free(ht);
}

static void test_ce_independent_of_threads(void **state)
{
    vnm_ctx *ctx = *state;
    const int64_t N = 300, C = 101; /* above the parallel threshold */
    int64_t *y = labels_make(N, C, 5, -100);
    vnm_tensor *labels = labels_new(ctx, y, N, false);
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(N, C), -3, 3);
#ifdef _OPENMP
    int threads = omp_get_max_threads();
#endif
    float loss[2], *grad[2];
    for (int t = 0; t < 2; t++) {
#ifdef _OPENMP
        omp_set_num_threads(t + 1);
#endif
        vnm_ctx_reset_step(ctx);
        vnm_zero_grad(ctx, &x, 1);
        vnm_tensor *l = vnm_cross_entropy(ctx, x, labels, -100, 0.1f);
        assert_non_null(l);
        assert_int_equal(vnm_backward(ctx, l), VNM_OK);
        loss[t] = vnm_item(ctx, l);
        grad[t] = tu_host(ctx, x->grad);
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    assert_memory_equal(&loss[0], &loss[1], sizeof loss[0]);
    assert_memory_equal(grad[0], grad[1], (size_t)(N * C) * sizeof(float));
    free(grad[0]);
    free(grad[1]);
    free(y);
}

static void test_ce_label_out_of_range(void **state)
{
    vnm_ctx *ctx = *state;
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(4, 5), -1, 1);
    int64_t high[4] = {0, 1, 5, 2}, low[4] = {0, -1, 1, 2}, far[4] = {0, 1, 2, 1LL << 40};
    assert_null(vnm_cross_entropy(ctx, x, labels_new(ctx, high, 4, false), -100, 0.0f));
    tu_assert_error(ctx, "cross_entropy: label 5 at row 2 is out of range [0, 5)");
    assert_null(vnm_cross_entropy(ctx, x, labels_new(ctx, low, 4, true), -100, 0.0f));
    tu_assert_error(ctx, "label -1 at row 1");
    assert_null(vnm_cross_entropy(ctx, x, labels_new(ctx, far, 4, true), -100, 0.0f));
    tu_assert_error(ctx, "label 1099511627776 at row 3");
    /* -1 is fine once it is the ignore_index */
    assert_non_null(vnm_cross_entropy(ctx, x, labels_new(ctx, low, 4, true), -1, 0.0f));
}

static void test_loss_shape_errors(void **state)
{
    vnm_ctx *ctx = *state;
    int64_t y[4] = {0, 1, 2, 3};
    vnm_tensor *x = tu_param(ctx, 2, VNM_SHAPE(4, 5), -1, 1);
    vnm_tensor *labels = labels_new(ctx, y, 4, false);
    vnm_tensor *x3 = tu_param(ctx, 3, VNM_SHAPE(2, 2, 5), -1, 1);
    assert_null(vnm_cross_entropy(ctx, x3, labels, -100, 0.0f));
    tu_assert_error(ctx, "cross_entropy: logits [N, C] must have 2 dims, got [2, 2, 5]");
    assert_null(vnm_cross_entropy(ctx, x, labels_new(ctx, y, 3, false), -100, 0.0f));
    tu_assert_error(ctx, "labels [3] i32 must be i32 or i64 of shape [4] for logits [4, 5]");
    vnm_tensor *flabels = vnm_tensor_new(ctx, VNM_DTYPE_F32, 1, VNM_SHAPE(4));
    assert_null(vnm_cross_entropy(ctx, x, flabels, -100, 0.0f));
    tu_assert_error(ctx, "labels [4] f32 must be i32 or i64");
    assert_null(vnm_cross_entropy(ctx, x, labels, -100, 1.5f));
    tu_assert_error(ctx, "label_smoothing must be in [0, 1], got 1.5");
    vnm_tensor *empty = tu_param(ctx, 2, VNM_SHAPE(4, 0), -1, 1);
    assert_null(vnm_cross_entropy(ctx, empty, labels, -100, 0.0f));
    tu_assert_error(ctx, "have no classes");
    assert_null(vnm_cross_entropy_soft(ctx, x, tu_param(ctx, 2, VNM_SHAPE(4, 4), -1, 1)));
    tu_assert_error(ctx, "cross_entropy_soft: targets [4, 4] f32 must have the shape of logits");
    assert_null(vnm_cross_entropy_soft(ctx, labels, x));
    tu_assert_error(ctx, "cross_entropy_soft: logits must be f32");
    assert_null(vnm_mse(ctx, x, tu_param(ctx, 2, VNM_SHAPE(5, 4), -1, 1)));
    tu_assert_error(ctx, "mse: shapes [4, 5] f32 and [5, 4] f32 must be equal");
    assert_null(vnm_mse(ctx, x, vnm_tensor_new(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(4, 5))));
    tu_assert_error(ctx, "mse: b must be f32");
    assert_null(vnm_cross_entropy(ctx, NULL, labels, -100, 0.0f));
    assert_null(vnm_cross_entropy_soft(ctx, x, NULL));
    assert_null(vnm_mse(ctx, NULL, x));
    assert_int_equal(vnm_ctx_status(ctx), VNM_OK);
}


/* The row softmax the kernel shares with softmax and attention, portable and AVX2 (the default
 * where the CPU has it): the same references hold for both. */
static void test_ce_both_kernels(void **state)
{
    vnm_ctx *ctx = *state;
    for (int portable = 0; portable <= 1; portable++) {
        vnm_cpu_force_portable(portable);
        for (int64_t C = 1; C <= 19; C += 3) {
            vnm_ctx_reset_step(ctx);
            check_ce_forward(ctx, 37, C, false, 5, -100, 0.1f);
        }
        vnm_ctx_reset_step(ctx);
        check_ce_forward(ctx, 300, 101, true, 7, -100, 0.0f);
    }
    vnm_cpu_force_portable(false);
}

static int reset_kernels(void **state)
{
    vnm_cpu_force_portable(false);
    return tu_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ce_both_kernels, tu_setup, reset_kernels),
        cmocka_unit_test_setup_teardown(test_ce_forward_i32, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_forward_i64, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_forward_ignore_index, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_forward_label_smoothing, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_soft_forward_and_gradcheck, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_mse_forward_and_gradcheck, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_all_ignored_is_zero, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_large_logits_stay_finite, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_independent_of_threads, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ce_label_out_of_range, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_loss_shape_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("loss", tests, NULL, NULL);
}
