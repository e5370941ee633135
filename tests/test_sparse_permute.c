/* tests/test_sparse_permute.c — linear sum assignment and the V:N:M channel permutation search.
 * LSA: optimal against brute force over every permutation (random n ≤ 7, ties, negative and huge
 * costs), a known 4×4 answer, edge cases and errors, n = 256 speed. Permutation: valid
 * permutations that never keep less than the identity (shapes that are not multiples of V or M,
 * both selectors, ties) and report select.c's kept scores; strict gains where the identity is
 * bad by construction; chunks keep channels inside their chunk; the permuted, compressed layer
 * computes the same function as the unpermuted masked layer; thread-count independence; errors. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparse/kernels.h"
#include "sparse/sparse.h"
#include "test_util.h"

static uint32_t rbits(uint64_t key, uint64_t i)
{
    uint32_t r[4];
    vnm_philox4x32(key, i, 0, r);
    return r[0];
}

static double urand(uint64_t key, uint64_t i) { return vnm_philox_uniform(rbits(key, i)); }

static double nrand(uint64_t key, uint64_t i)
{
    double u = 1.0 - urand(key, 2 * i), v = urand(key, 2 * i + 1);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ---- linear sum assignment ---- */

static double assignment_cost(const double *cost, int n, const int32_t *col_of_row)
{
    double t = 0.0;
    for (int r = 0; r < n; r++) t += cost[r * n + col_of_row[r]];
    return t;
}

static void assert_permutation(const int32_t *p, int64_t n, const char *what)
{
    uint8_t *seen = calloc((size_t)(n ? n : 1), 1);
    assert_non_null(seen);
    for (int64_t i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]])
            fail_msg("%s: entry %lld = %d is out of range or repeated (n = %lld)", what,
                     (long long)i, p[i], (long long)n);
        seen[p[i]] = 1;
    }
    free(seen);
}

/* Minimum of Σ cost[r][perm[r]] over all n! permutations (Heap's algorithm). */
static double brute_force_min(const double *cost, int n)
{
    int32_t perm[8];
    int c[8] = {0};
    for (int i = 0; i < n; i++) perm[i] = i;
    double best = assignment_cost(cost, n, perm);
    for (int i = 1; i < n;) {
        if (c[i] < i) {
            int j = i % 2 == 0 ? 0 : c[i];
            int32_t t = perm[j];
            perm[j] = perm[i];
            perm[i] = t;
            best = fmin(best, assignment_cost(cost, n, perm));
            c[i]++;
            i = 1;
        } else {
            c[i++] = 0;
        }
    }
    return best;
}

static void check_lsa_optimal(const double *cost, int n, const char *what)
{
    int32_t col[8];
    assert_int_equal(vnm_lsa_solve(cost, n, col), VNM_OK);
    assert_permutation(col, n, what);
    double got = assignment_cost(cost, n, col), want = brute_force_min(cost, n);
    double scale = 0.0;
    for (int k = 0; k < n * n; k++) scale = fmax(scale, fabs(cost[k]));
    if (fabs(got - want) > 1e-12 * n * scale)
        fail_msg("%s (n = %d): assignment costs %.17g, the optimum is %.17g", what, n, got, want);
}

static void test_lsa_brute_force(void **state)
{
    (void)state;
    double cost[49];
    char what[64];
    for (int trial = 0; trial < 600; trial++) {
        int n = 1 + trial % 7, kind = (trial / 7) % 3;
        for (int k = 0; k < n * n; k++) {
            double u = urand(101, (uint64_t)(trial * 64 + k));
            /* uniform in [-10, 10); small integers (many ties); non-negative integers */
            cost[k] = kind == 0   ? 20.0 * u - 10.0
                      : kind == 1 ? floor(5.0 * u) - 2.0
                                  : floor(3.0 * u);
        }
        snprintf(what, sizeof what, "trial %d kind %d", trial, kind);
        check_lsa_optimal(cost, n, what);
    }
}

static void test_lsa_known_4x4(void **state)
{
    (void)state;
    const double cost[16] = {9, 2, 7, 8, 6, 4, 3, 7, 5, 8, 1, 8, 7, 6, 9, 4};
    int32_t col[4];
    assert_int_equal(vnm_lsa_solve(cost, 4, col), VNM_OK);
    assert_int_equal(col[0], 1);
    assert_int_equal(col[1], 0);
    assert_int_equal(col[2], 2);
    assert_int_equal(col[3], 3);
    assert_true(assignment_cost(cost, 4, col) == 13.0);
}

/* Magnitudes near the ends of the double range: the answer is that of the integer matrix. */
static void test_lsa_extreme_magnitudes(void **state)
{
    (void)state;
    const double scales[3] = {1e307, 1e-300, 4.9e-324 * 64};
    double base[36], cost[36];
    for (int trial = 0; trial < 20; trial++) {
        for (int k = 0; k < 36; k++)
            base[k] = floor(31.0 * urand(102, (uint64_t)(trial * 36 + k))) - 15.0;
        int32_t want[6], got[6];
        assert_int_equal(vnm_lsa_solve(base, 6, want), VNM_OK);
        double best = assignment_cost(base, 6, want);
        for (int s = 0; s < 3; s++) {
            for (int k = 0; k < 36; k++) cost[k] = base[k] * scales[s];
            assert_int_equal(vnm_lsa_solve(cost, 6, got), VNM_OK);
            assert_permutation(got, 6, "scaled");
            /* Same optimum on the integer matrix (the scaled one may break ties differently). */
            assert_true(assignment_cost(base, 6, got) == best);
        }
    }
}

static void test_lsa_edges_and_errors(void **state)
{
    (void)state;
    int32_t col[3] = {-7, -7, -7};
    assert_int_equal(vnm_lsa_solve(NULL, 0, NULL), VNM_OK);
    const double one = -3.5;
    assert_int_equal(vnm_lsa_solve(&one, 1, col), VNM_OK);
    assert_int_equal(col[0], 0);
    double c[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    c[4] = NAN;
    assert_int_equal(vnm_lsa_solve(c, 3, col), VNM_ERR_INPUT);
    c[4] = INFINITY;
    assert_int_equal(vnm_lsa_solve(c, 3, col), VNM_ERR_INPUT);
    c[4] = -INFINITY;
    assert_int_equal(vnm_lsa_solve(c, 3, col), VNM_ERR_INPUT);
    c[4] = 5;
    assert_int_equal(vnm_lsa_solve(c, -1, col), VNM_ERR_INPUT);
    assert_int_equal(vnm_lsa_solve(NULL, 3, col), VNM_ERR_INPUT);
    assert_int_equal(vnm_lsa_solve(c, 3, NULL), VNM_ERR_INPUT);
    /* All ties: any permutation is optimal, but it must be one. */
    for (int k = 0; k < 9; k++) c[k] = 2.0;
    assert_int_equal(vnm_lsa_solve(c, 3, col), VNM_OK);
    assert_permutation(col, 3, "all ties");
}

static void test_lsa_n256(void **state)
{
    (void)state;
    const int n = 256;
    double *cost = malloc((size_t)(n * n) * sizeof *cost);
    int32_t *col = malloc((size_t)n * sizeof *col), *id = malloc((size_t)n * sizeof *id);
    assert_true(cost && col && id);
    for (int i = 0; i < n; i++) id[i] = i;
    for (int run = 0; run < 3; run++) {
        for (int k = 0; k < n * n; k++) cost[k] = urand(103 + (uint64_t)run, (uint64_t)k);
        assert_int_equal(vnm_lsa_solve(cost, n, col), VNM_OK);
        assert_permutation(col, n, "n = 256");
        /* Uniform [0,1) costs: the optimum is far below a fixed permutation's ≈ n/2. */
        assert_true(assignment_cost(cost, n, col) < 0.1 * assignment_cost(cost, n, id));
    }
    free(cost);
    free(col);
    free(id);
}

/* ---- permutation search ---- */

/* Kept score of S under the permutations, through select.c; the mask (permuted order) is
 * returned in mask when given. */
static double kept_of(vnm_pattern p, vnm_selector sel, const float *S, int64_t O, int64_t I,
                      const int32_t *perm_out, const int32_t *perm_in, uint8_t *mask_out)
{
    float *Sp = malloc((size_t)(O * I) * sizeof *Sp);
    uint8_t *mask = mask_out ? mask_out : malloc((size_t)(O * I));
    assert_true(Sp && mask);
    for (int64_t o = 0; o < O; o++)
        for (int64_t j = 0; j < I; j++) Sp[o * I + j] = S[(int64_t)perm_out[o] * I + perm_in[j]];
    char err[256] = "";
    if (vnm_mask_select(p, sel, Sp, O, I, mask, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    if (vnm_mask_validate(p, mask, O, I, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    double kept = vnm_mask_kept_score(mask, Sp, O * I);
    free(Sp);
    if (!mask_out) free(mask);
    return kept;
}

static bool is_identity(const int32_t *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (p[i] != i) return false;
    return true;
}

typedef struct {
    int32_t *perm_out, *perm_in;
    double before, after;
} search_result;

static search_result search_ok(vnm_pattern p, const float *S, int64_t O, int64_t I,
                               const vnm_permute_opts *opts)
{
    search_result r = {malloc((size_t)O * sizeof(int32_t)), malloc((size_t)I * sizeof(int32_t)),
                       -1.0, -1.0};
    assert_true(r.perm_out && r.perm_in);
    char err[256] = "";
    if (vnm_permute_search(p, S, O, I, opts, r.perm_out, r.perm_in, &r.before, &r.after, err,
                           sizeof err) != VNM_OK)
        fail_msg("permute_search %d:2:%d [%lld, %lld]: %s", p.V, p.M, (long long)O, (long long)I,
                 err);
    assert_permutation(r.perm_out, O, "perm_out");
    assert_permutation(r.perm_in, I, "perm_in");
    return r;
}

static void result_free(search_result *r)
{
    free(r->perm_out);
    free(r->perm_in);
}

/* Reported scores are select.c's for the identity and for the result; never a loss; identity
 * when there is no gain. */
static void check_result(vnm_pattern p, vnm_selector sel, const float *S, int64_t O, int64_t I,
                         const search_result *r)
{
    int32_t *id_out = malloc((size_t)O * sizeof *id_out),
            *id_in = malloc((size_t)I * sizeof *id_in);
    assert_true(id_out && id_in);
    for (int64_t o = 0; o < O; o++) id_out[o] = (int32_t)o;
    for (int64_t i = 0; i < I; i++) id_in[i] = (int32_t)i;
    double before = kept_of(p, sel, S, O, I, id_out, id_in, NULL);
    double after = kept_of(p, sel, S, O, I, r->perm_out, r->perm_in, NULL);
    if (before != r->before || after != r->after)
        fail_msg("%d:2:%d [%lld, %lld]: reported kept %.9g -> %.9g, select.c gives %.9g -> %.9g",
                 p.V, p.M, (long long)O, (long long)I, r->before, r->after, before, after);
    if (after < before)
        fail_msg("%d:2:%d [%lld, %lld]: kept score fell from %.9g to %.9g", p.V, p.M, (long long)O,
                 (long long)I, before, after);
    if (after == before) {
        assert_true(is_identity(r->perm_out, O));
        assert_true(is_identity(r->perm_in, I));
    }
    free(id_out);
    free(id_in);
}

static float *random_scores(uint64_t key, int64_t n, bool integer)
{
    float *S = malloc((size_t)n * sizeof *S);
    assert_non_null(S);
    for (int64_t k = 0; k < n; k++)
        S[k] = integer ? (float)floor(4.0 * urand(key, (uint64_t)k))
                       : (float)fabs(nrand(key, (uint64_t)k));
    return S;
}

static void test_permute_never_worse(void **state)
{
    (void)state;
    /* {V, M, O, I}: O and I multiples of V and M, and not; tails of width 1..M-1; one partial
     * block. The last two cannot gain: one block and one group; a single group of width 3, where
     * every row keeps its 2 largest whatever the order. */
    const int shapes[][4] = {{16, 4, 32, 16},  {16, 5, 37, 23}, {16, 5, 48, 27}, {16, 6, 50, 20},
                             {16, 8, 33, 30},  {32, 5, 70, 41}, {16, 5, 9, 12},  {16, 9, 64, 44},
                             {16, 4, 100, 13}, {32, 8, 96, 64}, {16, 7, 16, 7},  {16, 5, 40, 3}};
    const size_t n_shapes = sizeof shapes / sizeof *shapes;
    for (size_t si = 0; si < n_shapes; si++)
        for (int sel = 0; sel < 2; sel++)
            for (int integer = 0; integer < 2; integer++) {
                vnm_pattern p = {shapes[si][0], 2, shapes[si][1]};
                int64_t O = shapes[si][2], I = shapes[si][3];
                float *S =
                    random_scores(200 + si * 4 + (uint64_t)(sel * 2 + integer), O * I, integer);
                vnm_permute_opts opts = {2, 0, (vnm_selector)sel};
                search_result r = search_ok(p, S, O, I, &opts);
                check_result(p, (vnm_selector)sel, S, O, I, &r);
                /* Random scores (ties included) always leave something to gain. */
                if ((r.after > r.before) != (si < n_shapes - 2))
                    fail_msg("%d:2:%d [%lld, %lld] selector %d integer %d: kept %.9g -> %.9g", p.V,
                             p.M, (long long)O, (long long)I, sel, integer, r.before, r.after);
                result_free(&r);
                free(S);
            }
}

static void test_permute_defaults_and_zero_rounds(void **state)
{
    (void)state;
    vnm_pattern p = {16, 2, 5};
    const int64_t O = 40, I = 33;
    float *S = random_scores(210, O * I, false);
    search_result d = search_ok(p, S, O, I, NULL);
    vnm_permute_opts two = {2, 0, VNM_SELECT_L1}, none = {0, 0, VNM_SELECT_L1};
    search_result e = search_ok(p, S, O, I, &two), z = search_ok(p, S, O, I, &none);
    check_result(p, VNM_SELECT_L1, S, O, I, &d);
    /* NULL opts is rounds 2, no chunks, l1. */
    assert_memory_equal(d.perm_out, e.perm_out, (size_t)O * sizeof(int32_t));
    assert_memory_equal(d.perm_in, e.perm_in, (size_t)I * sizeof(int32_t));
    assert_true(d.after > d.before);
    assert_true(is_identity(z.perm_out, O) && is_identity(z.perm_in, I));
    assert_true(z.after == z.before && z.before == d.before);
    result_free(&d);
    result_free(&e);
    result_free(&z);
    free(S);
}

/* Five strong columns in one group: the identity keeps 2 of them per row, spreading them over the
 * five groups keeps all 5. */
static void test_permute_spreads_strong_columns(void **state)
{
    (void)state;
    vnm_pattern p = {16, 2, 5};
    const int64_t O = 32, I = 25;
    for (int sel = 0; sel < 2; sel++) {
        float *S = random_scores(220, O * I, false);
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++) S[o * I + i] = i < 5 ? 10.0f : 0.01f * S[o * I + i];
        vnm_permute_opts opts = {2, 0, (vnm_selector)sel};
        search_result r = search_ok(p, S, O, I, &opts);
        check_result(p, (vnm_selector)sel, S, O, I, &r);
        if (r.after < r.before + 29.0 * O)
            fail_msg(
                "selector %d: kept %.6g -> %.6g; spreading the strong columns gains 30 per row",
                sel, r.before, r.after);
        result_free(&r);
        free(S);
    }
}

/* Rows of three kinds, each strong on its own 2 columns of every group, interleaved so every
 * block of the identity holds all three kinds: a block's 4 shared columns serve two kinds only.
 * Blocks of one kind keep every strong score. */
static void test_permute_sorts_rows_into_blocks(void **state)
{
    (void)state;
    vnm_pattern p = {16, 2, 8};
    const int64_t O = 48, I = 16;
    for (int sel = 0; sel < 2; sel++) {
        float *S = random_scores(230, O * I, false);
        double strong_total = 0.0;
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++) {
                bool strong = (i % 8) / 2 == o % 3;
                S[o * I + i] = strong ? 10.0f : 0.01f * S[o * I + i];
                strong_total += strong ? 10.0 : 0.0;
            }
        vnm_permute_opts opts = {2, 0, (vnm_selector)sel};
        search_result r = search_ok(p, S, O, I, &opts);
        check_result(p, (vnm_selector)sel, S, O, I, &r);
        if (r.before > 0.8 * strong_total || r.after < 0.95 * strong_total)
            fail_msg("selector %d: kept %.6g -> %.6g; all strong scores are %.6g", sel, r.before,
                     r.after, strong_total);
        result_free(&r);
        free(S);
    }
}

/* Per-column scales drawn log-normally (where permutation helps most): chunks keep every channel
 * inside its chunk of positions (chunk rounded down to whole groups and blocks) and still gain. */
static void test_permute_chunks(void **state)
{
    (void)state;
    vnm_pattern p = {32, 2, 5};
    const int64_t O = 200, I = 143, chunk = 64; /* 12 groups (60 columns), 2 blocks (64 rows) */
    float *S = random_scores(240, O * I, false);
    for (int64_t i = 0; i < I; i++) {
        float scale = (float)exp(nrand(241, (uint64_t)i));
        for (int64_t o = 0; o < O; o++) S[o * I + i] *= scale;
    }
    vnm_permute_opts opts = {2, chunk, VNM_SELECT_L1};
    search_result r = search_ok(p, S, O, I, &opts);
    check_result(p, VNM_SELECT_L1, S, O, I, &r);
    for (int64_t j = 0; j < I; j++)
        if (r.perm_in[j] / 60 != j / 60)
            fail_msg("input position %lld holds channel %d from another chunk", (long long)j,
                     r.perm_in[j]);
    for (int64_t o = 0; o < O; o++)
        if (r.perm_out[o] / 64 != o / 64)
            fail_msg("output position %lld holds channel %d from another chunk", (long long)o,
                     r.perm_out[o]);
    assert_true(r.after > 1.01 * r.before);
    result_free(&r);
    free(S);
}

static void test_permute_thread_count_independent(void **state)
{
    (void)state;
    vnm_pattern p = {16, 2, 6};
    const int64_t O = 150, I = 100;
    float *S = random_scores(250, O * I, false);
    int threads = omp_get_max_threads();
    for (int sel = 0; sel < 2; sel++) {
        vnm_permute_opts opts = {2, 0, (vnm_selector)sel};
        omp_set_num_threads(1);
        search_result one = search_ok(p, S, O, I, &opts);
        omp_set_num_threads(4);
        search_result four = search_ok(p, S, O, I, &opts);
        omp_set_num_threads(threads);
        assert_memory_equal(one.perm_out, four.perm_out, (size_t)O * sizeof(int32_t));
        assert_memory_equal(one.perm_in, four.perm_in, (size_t)I * sizeof(int32_t));
        assert_true(one.after == four.after);
        result_free(&one);
        result_free(&four);
    }
    free(S);
}

/* The permuted layer — mask chosen on the permuted scores, compressed with the permutations
 * folded into the absolute column indices and the output rows — computes y = x·(W⊙M)ᵀ of the
 * original layer, M being the permuted mask mapped back to original indices. */
static void test_permute_equivalent_function(void **state)
{
    (void)state;
    const int shapes[][4] = {{16, 5, 50, 23}, {16, 8, 64, 45}, {32, 6, 70, 40}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        vnm_pattern p = {shapes[si][0], 2, shapes[si][1]};
        const int64_t O = shapes[si][2], I = shapes[si][3], T = 7;
        float *W = malloc((size_t)(O * I) * sizeof *W), *S = malloc((size_t)(O * I) * sizeof *S);
        float *x = malloc((size_t)(T * I) * sizeof *x), *y = calloc((size_t)(T * O), sizeof *y);
        float *Wd = malloc((size_t)(O * I) * sizeof *Wd);
        uint8_t *mask = malloc((size_t)(O * I)), *morig = calloc((size_t)(O * I), 1);
        double *want = malloc((size_t)(T * O) * sizeof *want);
        assert_true(W && S && x && y && Wd && mask && morig && want);
        for (int64_t i = 0; i < I; i++) {
            double scale = exp(nrand(301 + si, (uint64_t)i)); /* structured: permutation helps */
            for (int64_t o = 0; o < O; o++) {
                W[o * I + i] = (float)(scale * nrand(300 + si, (uint64_t)(o * I + i)));
                S[o * I + i] = fabsf(W[o * I + i]);
            }
        }
        for (int64_t k = 0; k < T * I; k++)
            x[k] = (float)(2.0 * urand(302 + si, (uint64_t)k) - 1.0);
        search_result r = search_ok(p, S, O, I, NULL);
        assert_false(is_identity(r.perm_out, O) && is_identity(r.perm_in, I));
        double kept = kept_of(p, VNM_SELECT_L1, S, O, I, r.perm_out, r.perm_in, mask);
        assert_true(kept == r.after);
        double kept_orig = 0.0;
        for (int64_t o = 0; o < O; o++)
            for (int64_t j = 0; j < I; j++) {
                int64_t k = (int64_t)r.perm_out[o] * I + r.perm_in[j];
                morig[k] = mask[o * I + j];
                kept_orig += mask[o * I + j] ? S[k] : 0.0;
            }
        assert_true(fabs(kept_orig - r.after) <= 1e-9 * r.after);

        vnm_sparse_host h;
        char err[256] = "";
        if (vnm_sparse_compress(p, W, mask, O, I, r.perm_out, r.perm_in, &h, err, sizeof err) !=
            VNM_OK)
            fail_msg("compress: %s", err);
        if (vnm_sparse_validate(&h, err, sizeof err) != VNM_OK) fail_msg("validate: %s", err);
        vnm_spmm_weight wt = vnm_spmm_weight_of_host(&h);
        vnm_spmm_fwd_ref(&wt, x, T, y);
        for (int64_t t = 0; t < T; t++)
            for (int64_t o = 0; o < O; o++) {
                double acc = 0.0;
                for (int64_t i = 0; i < I; i++)
                    if (morig[o * I + i]) acc += (double)x[t * I + i] * W[o * I + i];
                want[t * O + o] = acc;
            }
        tu_assert_close(y, want, T * O, 1e-5, 1e-5, "permuted layer forward");
        vnm_sparse_decompress(&h, Wd);
        for (int64_t k = 0; k < O * I; k++)
            if (Wd[k] != (morig[k] ? W[k] : 0.0f))
                fail_msg("decompressed W[%lld][%lld] = %g, expected %g", (long long)(k / I),
                         (long long)(k % I), (double)Wd[k], morig[k] ? (double)W[k] : 0.0);
        vnm_sparse_host_free(&h);
        result_free(&r);
        free(W);
        free(S);
        free(x);
        free(y);
        free(Wd);
        free(mask);
        free(morig);
        free(want);
    }
}

static void assert_search_fails(vnm_pattern p, const float *S, int64_t O, int64_t I,
                                const vnm_permute_opts *opts, int32_t *po, int32_t *pi,
                                const char *needle)
{
    char err[256] = "";
    double before, after;
    assert_int_equal(vnm_permute_search(p, S, O, I, opts, po, pi, &before, &after, err, sizeof err),
                     VNM_ERR_INPUT);
    if (!strstr(err, needle)) fail_msg("message '%s' does not contain '%s'", err, needle);
}

static void test_permute_errors(void **state)
{
    (void)state;
    vnm_pattern p = {16, 2, 5}, bad_v = {48, 2, 5}, bad_n = {16, 3, 5}, bad_m = {16, 2, 3};
    const int64_t O = 16, I = 10;
    float S[160];
    int32_t po[16], pi[10];
    for (int k = 0; k < 160; k++) S[k] = (float)k;
    assert_search_fails(bad_v, S, O, I, NULL, po, pi, "V must be one of");
    assert_search_fails(bad_n, S, O, I, NULL, po, pi, "N must be 2");
    assert_search_fails(bad_m, S, O, I, NULL, po, pi, "M must be between");
    assert_search_fails(p, S, 0, I, NULL, po, pi, "[O, I] = [0, 10]");
    assert_search_fails(p, S, O, -3, NULL, po, pi, "[O, I] = [16, -3]");
    assert_search_fails(p, NULL, O, I, NULL, po, pi, "must not be NULL");
    assert_search_fails(p, S, O, I, NULL, NULL, pi, "must not be NULL");
    vnm_permute_opts rounds = {-1, 0, VNM_SELECT_L1}, chunk = {2, -5, VNM_SELECT_L1};
    vnm_permute_opts sel = {2, 0, (vnm_selector)7};
    assert_search_fails(p, S, O, I, &rounds, po, pi, "rounds (-1)");
    assert_search_fails(p, S, O, I, &chunk, po, pi, "chunk (-5)");
    assert_search_fails(p, S, O, I, &sel, po, pi, "unknown selector 7");
    S[37] = -1.0f;
    assert_search_fails(p, S, O, I, NULL, po, pi, "S[3][7] = -1");
    S[37] = NAN;
    assert_search_fails(p, S, O, I, NULL, po, pi, "S[3][7] = nan");
    S[37] = INFINITY;
    assert_search_fails(p, S, O, I, NULL, po, pi, "finite and >= 0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lsa_brute_force, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_lsa_known_4x4, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_lsa_extreme_magnitudes, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_lsa_edges_and_errors, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_lsa_n256, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_never_worse, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_defaults_and_zero_rounds, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_spreads_strong_columns, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_sorts_rows_into_blocks, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_chunks, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_thread_count_independent, tu_setup,
                                        tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_equivalent_function, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_permute_errors, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("sparse_permute", tests, NULL, NULL);
}
