/* tests/test_sparse_format.c — the canonical compressed form (METHOD §7). Property tests over
 * random shapes (non-multiples of V, M and 8, and exact multiples) and random permutations:
 * compress → decompress gives exactly the masked weight, the validator accepts every produced
 * form and refuses corrupted ones with the right message, Gp is a multiple of 8 and O_pad of V;
 * compress refuses invalid masks and permutations; and the kernels' reference products on a
 * compressed weight equal dense products with the masked weight computed here in double. */
#include <math.h>
#include <stdarg.h>
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

static float *random_floats(uint64_t key, int64_t n, float lo, float hi)
{
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    for (int64_t k = 0; k < n; k++) x[k] = lo + (hi - lo) * vnm_philox_uniform(rbits(key, k));
    return x;
}

/* Integers in [-4, 4]: products and sums of a few hundred of them are exact in f32. */
static float *random_ints(uint64_t key, int64_t n)
{
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    for (int64_t k = 0; k < n; k++) x[k] = (float)((int)(rbits(key, k) % 9) - 4);
    return x;
}

/* Fisher–Yates from a fixed stream. */
static int32_t *random_perm(uint64_t key, int64_t n)
{
    int32_t *p = malloc((size_t)n * sizeof *p);
    for (int64_t k = 0; k < n; k++) p[k] = (int32_t)k;
    for (int64_t k = n - 1; k > 0; k--) {
        int64_t j = rbits(key, k) % (uint64_t)(k + 1);
        int32_t t = p[k];
        p[k] = p[j];
        p[j] = t;
    }
    return p;
}

typedef struct {
    vnm_pattern p;
    int64_t O, I;
} shape_case;

static const vnm_pattern patterns[] = {{16, 2, 4}, {16, 2, 5}, {32, 2, 7}, {64, 2, 5},
                                       {16, 2, 6}, {64, 2, 8}, {32, 2, 5}};
enum { N_PATTERNS = sizeof patterns / sizeof patterns[0], N_RANDOM = 24, N_CASES = 30 };

/* Random cases with O, I off every multiple of V, M and 8, then exact multiples. */
static shape_case make_case(int k)
{
    shape_case c;
    c.p = patterns[k % N_PATTERNS];
    if (k >= N_RANDOM) {
        c.O = c.p.V * (1 + k % 2);
        c.I = c.p.M * 8 * (1 + k % 3);
        return c;
    }
    uint64_t j = 0;
    do c.O = 1 + rbits(300 + (uint64_t)k, j++) % (uint32_t)(3 * c.p.V);
    while (c.O % c.p.V == 0 || c.O % 8 == 0);
    do c.I = 1 + rbits(400 + (uint64_t)k, j++) % (uint32_t)(11 * c.p.M);
    while (c.I % c.p.M == 0 || c.I % 8 == 0);
    return c;
}

/* A weight, its mask in the permuted order (selected on the permuted |W|), and the expected
 * masked weight in the original order: E[perm_out[o]][perm_in[j]] = W[..] iff mask[o][j]. */
typedef struct {
    shape_case c;
    float *W;      /* [O][I] original order */
    uint8_t *mask; /* [O][I] permuted order */
    int32_t *perm_out, *perm_in; /* NULL: identity */
    float *E;      /* [O][I] original order */
} fixture;

static fixture make_fixture(shape_case c, uint64_t key, bool permute, bool ints)
{
    fixture f = {c, NULL, NULL, NULL, NULL, NULL};
    int64_t O = c.O, I = c.I;
    f.W = ints ? random_ints(key, O * I) : random_floats(key, O * I, -1, 1);
    if (permute) {
        f.perm_out = random_perm(key + 1, O);
        f.perm_in = random_perm(key + 2, I);
    }
    float *S = malloc((size_t)(O * I) * sizeof *S); /* permuted scores */
    for (int64_t o = 0; o < O; o++)
        for (int64_t j = 0; j < I; j++) {
            int64_t ro = permute ? f.perm_out[o] : o, ci = permute ? f.perm_in[j] : j;
            S[o * I + j] = fabsf(f.W[ro * I + ci]);
        }
    f.mask = malloc((size_t)(O * I));
    assert_int_equal(vnm_mask_select(c.p, key % 2 ? VNM_SELECT_L1 : VNM_SELECT_EXHAUSTIVE, S, O,
                                     I, f.mask, NULL, 0),
                     VNM_OK);
    free(S);
    f.E = calloc((size_t)(O * I), sizeof *f.E);
    for (int64_t o = 0; o < O; o++)
        for (int64_t j = 0; j < I; j++) {
            int64_t ro = permute ? f.perm_out[o] : o, ci = permute ? f.perm_in[j] : j;
            if (f.mask[o * I + j]) f.E[ro * I + ci] = f.W[ro * I + ci];
        }
    return f;
}

static void free_fixture(fixture *f)
{
    free(f->W);
    free(f->mask);
    free(f->perm_out);
    free(f->perm_in);
    free(f->E);
}

static vnm_sparse_host compress_ok(const fixture *f)
{
    vnm_sparse_host w;
    char err[512] = "";
    if (vnm_sparse_compress(f->c.p, f->W, f->mask, f->c.O, f->c.I, f->perm_out, f->perm_in, &w,
                            err, sizeof err) != VNM_OK)
        fail_msg("compress %d:2:%d [%lld, %lld]: %s", f->c.p.V, f->c.p.M, (long long)f->c.O,
                 (long long)f->c.I, err);
    if (vnm_sparse_validate(&w, err, sizeof err) != VNM_OK)
        fail_msg("compressed %d:2:%d [%lld, %lld] refused: %s", f->c.p.V, f->c.p.M,
                 (long long)f->c.O, (long long)f->c.I, err);
    return w;
}

static void assert_decompresses_to(const vnm_sparse_host *w, const float *E)
{
    float *D = malloc((size_t)(w->O * w->I) * sizeof *D);
    memset(D, 0x7f, (size_t)(w->O * w->I) * sizeof *D); /* decompress must write every element */
    vnm_sparse_decompress(w, D);
    for (int64_t k = 0; k < w->O * w->I; k++)
        if (D[k] != E[k])
            fail_msg("[%lld, %lld]: element (%lld, %lld) decompresses to %g, want %g",
                     (long long)w->O, (long long)w->I, (long long)(k / w->I),
                     (long long)(k % w->I), (double)D[k], (double)E[k]);
    free(D);
}

static void test_alloc_defaults(void **state)
{
    (void)state;
    vnm_sparse_host w;
    vnm_pattern p = {64, 2, 5};
    assert_int_equal(vnm_sparse_host_alloc(&w, p, 70, 23), VNM_OK);
    assert_int_equal(w.O_pad, 128);
    assert_int_equal(w.G, 5);
    assert_int_equal(w.Gp, 8);
    for (int64_t k = 0; k < w.O_pad * w.Gp * 2; k++) assert_true(w.vals[k] == 0.0f);
    for (int64_t k = 0; k < w.O_pad * w.Gp; k++) assert_int_equal(w.slots[k], 0 | 1 << 2);
    for (int64_t k = 0; k < w.O_pad / 64 * w.Gp * 4; k++) assert_int_equal(w.cols[k], -1);
    for (int64_t o = 0; o < w.O_pad; o++) assert_int_equal(w.rows[o], o < 70 ? o : -1);
    vnm_sparse_host_free(&w);
    assert_null(w.vals);
    vnm_sparse_host_free(&w); /* twice is harmless */
    vnm_pattern bad = {64, 2, 3};
    assert_int_equal(vnm_sparse_host_alloc(&w, bad, 70, 23), VNM_ERR_INPUT);
    assert_null(w.vals);
    assert_int_equal(vnm_sparse_host_alloc(&w, p, 0, 23), VNM_ERR_INPUT);
}

static void test_roundtrip_random_shapes(void **state)
{
    (void)state;
    for (int k = 0; k < N_CASES; k++) {
        fixture f = make_fixture(make_case(k), 10 + 7 * (uint64_t)k, false, false);
        vnm_sparse_host w = compress_ok(&f);
        assert_int_equal(w.O_pad % f.c.p.V, 0);
        assert_true(w.O_pad >= f.c.O && w.O_pad < f.c.O + f.c.p.V);
        assert_int_equal(w.G, (f.c.I + f.c.p.M - 1) / f.c.p.M);
        assert_int_equal(w.Gp % 8, 0);
        assert_true(w.Gp >= w.G && w.Gp < w.G + 8);
        assert_decompresses_to(&w, f.E);
        /* slot order is column order: kept values ascend with their columns */
        for (int64_t o = 0; o < f.c.O; o++)
            for (int64_t g = 0; g < w.G; g++) {
                const int32_t *blk = w.cols + ((o / f.c.p.V) * w.Gp + g) * 4;
                uint8_t s = w.slots[o * w.Gp + g];
                int32_t c0 = blk[s & 3], c1 = blk[s >> 2 & 3];
                assert_true(c0 >= 0);
                assert_true(c1 < 0 || c1 > c0);
                assert_true(w.vals[(o * w.Gp + g) * 2] == f.W[o * f.c.I + c0]);
            }
        vnm_sparse_host_free(&w);
        free_fixture(&f);
    }
}

static void test_roundtrip_random_permutations(void **state)
{
    (void)state;
    for (int k = 0; k < N_CASES; k++) {
        fixture f = make_fixture(make_case(k), 500 + 7 * (uint64_t)k, true, false);
        vnm_sparse_host w = compress_ok(&f);
        assert_decompresses_to(&w, f.E);
        for (int64_t o = 0; o < f.c.O; o++) assert_int_equal(w.rows[o], f.perm_out[o]);
        vnm_sparse_host_free(&w);
        free_fixture(&f);
    }
}

/* Identity permutations passed as arrays give the same form as NULL. */
static void test_identity_perms_equal_null(void **state)
{
    (void)state;
    shape_case c = {{32, 2, 7}, 45, 61};
    fixture f = make_fixture(c, 900, false, false);
    vnm_sparse_host a = compress_ok(&f);
    f.perm_out = malloc((size_t)c.O * sizeof *f.perm_out);
    f.perm_in = malloc((size_t)c.I * sizeof *f.perm_in);
    for (int64_t o = 0; o < c.O; o++) f.perm_out[o] = (int32_t)o;
    for (int64_t i = 0; i < c.I; i++) f.perm_in[i] = (int32_t)i;
    vnm_sparse_host b = compress_ok(&f);
    assert_memory_equal(a.vals, b.vals, (size_t)(a.O_pad * a.Gp * 2) * sizeof *a.vals);
    assert_memory_equal(a.slots, b.slots, (size_t)(a.O_pad * a.Gp));
    assert_memory_equal(a.cols, b.cols, (size_t)(a.O_pad / 32 * a.Gp * 4) * sizeof *a.cols);
    assert_memory_equal(a.rows, b.rows, (size_t)a.O_pad * sizeof *a.rows);
    vnm_sparse_host_free(&a);
    vnm_sparse_host_free(&b);
    free_fixture(&f);
}

/* A copy of a valid form, to corrupt. */
static vnm_sparse_host clone(const vnm_sparse_host *w)
{
    vnm_sparse_host c;
    assert_int_equal(vnm_sparse_host_alloc(&c, w->pat, w->O, w->I), VNM_OK);
    memcpy(c.vals, w->vals, (size_t)(w->O_pad * w->Gp * 2) * sizeof *c.vals);
    memcpy(c.slots, w->slots, (size_t)(w->O_pad * w->Gp));
    memcpy(c.cols, w->cols, (size_t)(w->O_pad / w->pat.V * w->Gp * 4) * sizeof *c.cols);
    memcpy(c.rows, w->rows, (size_t)w->O_pad * sizeof *c.rows);
    return c;
}

/* Frees w after checking that it is refused with a message containing the formatted needle. */
static void assert_refused(vnm_sparse_host *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void assert_refused(vnm_sparse_host *w, const char *fmt, ...)
{
    char err[512] = "", needle[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(needle, sizeof needle, fmt, ap);
    va_end(ap);
    assert_int_equal(vnm_sparse_validate(w, err, sizeof err), VNM_ERR_INPUT);
    if (!strstr(err, needle)) fail_msg("message '%s' does not contain '%s'", err, needle);
    vnm_sparse_host_free(w);
}

static void test_validate_rejects_corrupted(void **state)
{
    (void)state;
    /* 3 blocks (the last of 8 rows), G = 5 groups (the last of width 3), Gp = 8 */
    shape_case c = {{16, 2, 5}, 40, 23};
    fixture f = make_fixture(c, 1234, false, false);
    vnm_sparse_host w = compress_ok(&f), x;
    int64_t Gp = w.Gp;

    x = clone(&w); /* s0 > s1 */
    x.slots[3 * Gp + 1] = 2 | 1 << 2;
    assert_refused(&x, "row 3, group 1: slot code 0x6 (s0 = 2, s1 = 1; need s0 < s1 < 4)");
    x = clone(&w); /* s0 == s1 */
    x.slots[0] = 1 | 1 << 2;
    assert_refused(&x, "row 0, group 0: slot code 0x5 (s0 = 1, s1 = 1");
    x = clone(&w); /* stray high bits */
    x.slots[2 * Gp] |= 0x10;
    assert_refused(&x, "row 2, group 0: slot code 0x");

    x = clone(&w); /* a duplicate column inside one group */
    int32_t *blk = x.cols + (1 * Gp + 2) * 4;
    blk[1] = blk[0];
    assert_refused(&x, "block 1, group 2: column %d in slot 1 is not above the previous column",
                   blk[0]);

    x = clone(&w); /* one input column in two groups of a block */
    x.cols[(0 * Gp + 1) * 4 + 0] = x.cols[(0 * Gp + 0) * 4 + 0];
    assert_refused(&x, "block 0: input column %d appears in groups 0 and 1", x.cols[0]);

    x = clone(&w); /* out of range, both ways */
    x.cols[(2 * Gp + 3) * 4 + 3] = 23;
    assert_refused(&x, "block 2, group 3: column 23 in slot 3 is out of range");
    x = clone(&w);
    x.cols[(2 * Gp + 3) * 4 + 0] = -7;
    assert_refused(&x, "block 2, group 3: column -7 in slot 0 is out of range");

    x = clone(&w); /* a used column after an unused slot: the tail of width 3 holds {20,21,22,-1} */
    assert_int_equal(x.cols[(0 * Gp + 4) * 4 + 3], -1);
    x.cols[(0 * Gp + 4) * 4 + 1] = -1;
    assert_refused(&x, "block 0, group 4: column 22 in slot 2 follows an unused slot (-1)");

    x = clone(&w); /* a padding group holding a column that block 1 uses nowhere else */
    int32_t spare = 0;
    for (bool used = true; used; spare += used) {
        used = false;
        for (int64_t k = 0; k < Gp * 4; k++) used |= x.cols[1 * Gp * 4 + k] == spare;
    }
    x.cols[(1 * Gp + 6) * 4] = spare;
    assert_refused(&x, "block 1, group 6 holds 1 columns; its width is 0 (a padding group");

    x = clone(&w); /* a value in a padding row (rows 40..47) */
    x.vals[(45 * Gp + 0) * 2 + 1] = 0.5f;
    assert_refused(&x, "row 45, group 0: value 0.5 in slot 1 must be zero (a padding row)");

    x = clone(&w); /* a value in an unused slot of a padding group */
    x.vals[(7 * Gp + 6) * 2] = -2.0f;
    assert_refused(&x,
                   "row 7, group 6: value -2 in slot 0 must be zero (its column is unused (-1))");

    x = clone(&w); /* a real row pointing one slot at an unused column */
    x.slots[9 * Gp + 4] = 2 | 3 << 2;
    x.vals[(9 * Gp + 4) * 2 + 1] = 0.0f;
    assert_refused(&x, "row 9, group 4 keeps 1 columns (expected 2)");

    x = clone(&w); /* rows: a duplicate, out of range, a padding row with an index */
    x.rows[5] = x.rows[4];
    assert_refused(&x,
                   "rows is not a permutation of 0..39: output row 4 is stored at rows 4 and 5");
    x = clone(&w);
    x.rows[0] = 40;
    assert_refused(&x, "rows[0] = 40 is out of range");
    x = clone(&w);
    x.rows[39] = -1;
    assert_refused(&x, "rows[39] = -1 is out of range");
    x = clone(&w);
    x.rows[44] = 3;
    assert_refused(&x, "padding row 44 has rows[] = 3 (expected -1)");

    x = clone(&w); /* inconsistent shape fields */
    x.Gp = 16;
    assert_refused(&x, "sparse weight 16:2:5 [40, 23]: O_pad = 48, G = 5, Gp = 16 (expected 48, "
                       "5, 8)");
    x = clone(&w);
    x.pat.N = 3;
    assert_refused(&x, "sparse weight: pattern '16:3:5': N must be 2");
    char err[128] = "";
    assert_int_equal(vnm_sparse_validate(NULL, err, sizeof err), VNM_ERR_INPUT);

    vnm_sparse_host_free(&w);
    free_fixture(&f);
}

static void test_compress_errors(void **state)
{
    (void)state;
    shape_case c = {{16, 2, 5}, 20, 13};
    fixture f = make_fixture(c, 77, false, false);
    vnm_sparse_host w;
    char err[512] = "";
    int j = 0;
    while (!f.mask[j]) j++;
    f.mask[j] = 0;
    assert_int_equal(vnm_sparse_compress(c.p, f.W, f.mask, c.O, c.I, NULL, NULL, &w, err,
                                         sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "compress: mask: row 0, group 0 (columns 0..4) keeps 1 weights"));
    assert_null(w.vals);
    f.mask[j] = 1;

    int32_t *po = random_perm(5, c.O), *pi = random_perm(6, c.I);
    po[7] = po[3];
    assert_int_equal(vnm_sparse_compress(c.p, f.W, f.mask, c.O, c.I, po, pi, &w, err, sizeof err),
                     VNM_ERR_INPUT);
    char want[128];
    snprintf(want, sizeof want, "compress: perm_out is not a permutation of 0..19: value %d "
             "appears at positions 3 and 7", po[3]);
    assert_non_null(strstr(err, want));
    free(po);
    po = random_perm(5, c.O);
    pi[12] = 13;
    assert_int_equal(vnm_sparse_compress(c.p, f.W, f.mask, c.O, c.I, po, pi, &w, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "compress: perm_in is not a permutation of 0..12: perm_in[12] = 13 "
                                "is out of range"));
    pi[12] = -1;
    assert_int_equal(vnm_sparse_compress(c.p, f.W, f.mask, c.O, c.I, po, pi, &w, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "perm_in[12] = -1 is out of range"));

    vnm_pattern bad = {16, 2, 65};
    assert_int_equal(vnm_sparse_compress(bad, f.W, f.mask, c.O, c.I, NULL, NULL, &w, err,
                                         sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "compress: pattern '16:2:65': M must be between 4 and 64"));
    assert_int_equal(vnm_sparse_compress(c.p, NULL, f.mask, c.O, c.I, NULL, NULL, &w, err,
                                         sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "W and mask must not be NULL"));
    assert_int_equal(vnm_sparse_compress(c.p, f.W, f.mask, 0, c.I, NULL, NULL, &w, err,
                                         sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "positive sizes"));
    free(po);
    free(pi);
    free_fixture(&f);
}

/* The kernels' reference products on the compressed weight against dense products with the
 * expected masked weight E, in double: y = x·Eᵀ, dx = dy·E, dvals = (dyᵀx) at the kept positions.
 * With integer data in [-4, 4] every f32 sum is exact, so the match must be bit for bit. */
static void check_products(const fixture *f, const vnm_sparse_host *w, int64_t T, uint64_t key,
                           bool ints)
{
    int64_t O = f->c.O, I = f->c.I;
    float *x = ints ? random_ints(key, T * I) : random_floats(key, T * I, -1, 1);
    float *dy = ints ? random_ints(key + 1, T * O) : random_floats(key + 1, T * O, -1, 1);
    float *y = calloc((size_t)(T * O), sizeof *y), *dx = calloc((size_t)(T * I), sizeof *dx);
    float *dv = calloc((size_t)(w->O_pad * w->Gp * 2), sizeof *dv);
    double *want_y = calloc((size_t)(T * O), sizeof *want_y);
    double *want_dx = calloc((size_t)(T * I), sizeof *want_dx);
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++) {
                double e = f->E[o * I + i];
                want_y[t * O + o] += (double)x[t * I + i] * e;
                want_dx[t * I + i] += (double)dy[t * O + o] * e;
            }
    vnm_spmm_weight sw = vnm_spmm_weight_of_host(w);
    vnm_spmm_fwd_ref(&sw, x, T, y);
    vnm_spmm_dx_ref(&sw, dy, T, dx);
    vnm_spmm_dw_ref(&sw, dy, x, T, dv);
    double tol = ints ? 0.0 : 1e-5;
    tu_assert_close(y, want_y, T * O, tol, tol, "fwd_ref vs x·decompress(W)ᵀ");
    tu_assert_close(dx, want_dx, T * I, tol, tol, "dx_ref vs dy·decompress(W)");
    /* dvals: stored row o, slot k reads input column cols[slot] and output row rows[o] */
    for (int64_t o = 0; o < w->O_pad; o++)
        for (int64_t g = 0; g < w->Gp; g++) {
            const int32_t *blk = w->cols + ((o / f->c.p.V) * w->Gp + g) * 4;
            uint8_t s = w->slots[o * w->Gp + g];
            for (int k = 0; k < 2; k++) {
                int32_t col = blk[k ? s >> 2 & 3 : s & 3];
                double want = 0;
                for (int64_t t = 0; w->rows[o] >= 0 && col >= 0 && t < T; t++)
                    want += (double)dy[t * O + w->rows[o]] * x[t * I + col];
                tu_assert_close(&dv[(o * w->Gp + g) * 2 + k], &want, 1, tol, tol,
                                "dw_ref vs dyᵀx at the kept positions");
            }
        }
    free(x);
    free(dy);
    free(y);
    free(dx);
    free(dv);
    free(want_y);
    free(want_dx);
}

static void test_format_feeds_reference_kernels(void **state)
{
    (void)state;
    for (int k = 0; k < 12; k++) {
        bool ints = k % 2 == 0;
        shape_case c = make_case(k < 9 ? 2 * k : N_RANDOM + k - 9); /* 3 exact multiples */
        fixture f = make_fixture(c, 2000 + 7 * (uint64_t)k, k % 3 != 0, ints);
        vnm_sparse_host w = compress_ok(&f);
        check_products(&f, &w, 1 + k % 5, 3000 + (uint64_t)k, ints);
        vnm_sparse_host_free(&w);
        free_fixture(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_defaults),
        cmocka_unit_test(test_roundtrip_random_shapes),
        cmocka_unit_test(test_roundtrip_random_permutations),
        cmocka_unit_test(test_identity_perms_equal_null),
        cmocka_unit_test(test_validate_rejects_corrupted),
        cmocka_unit_test(test_compress_errors),
        cmocka_unit_test(test_format_feeds_reference_kernels),
    };
    return cmocka_run_group_tests_name("sparse_format", tests, NULL, NULL);
}
