/* tests/test_sparse_kernels.c — the fast CPU products of a compressed V:N:M weight
 * (sparse/kernels.h: forward, dX, dW) against the plain-loop references: bit for bit with
 * integer-valued inputs, within the fp32 bound of KERNELS §8 against a double reference with
 * random inputs, on the AVX2 and the portable kernels, independent of the thread count. The
 * compressed weights are built here directly (random valid structure, junk values at padding
 * positions), so the test depends on nothing but the kernels. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparse/cpu/spmm_impl.h"
#include "sparse/kernels.h"
#include "test_util.h"

/* ---- deterministic random numbers (philox, fixed keys) ---- */
typedef struct {
    uint64_t key, ctr;
    uint32_t buf[4];
    int left;
} rng;

static uint32_t rng_u32(rng *r)
{
    if (!r->left) {
        vnm_philox4x32(r->key, r->ctr++, 0, r->buf);
        r->left = 4;
    }
    return r->buf[--r->left];
}

static int rng_int(rng *r, int n) { return (int)(rng_u32(r) % (uint32_t)n); }

/* Integers in [-4, 4] (exact mode) or uniform floats in [-1, 1). */
static float rng_val(rng *r, bool integer)
{
    return integer ? (float)(rng_int(r, 9) - 4) : 2.0f * vnm_philox_uniform(rng_u32(r)) - 1.0f;
}

static void shuffle(int32_t *p, int64_t n, rng *r)
{
    for (int64_t i = 0; i < n; i++) p[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = rng_int(r, (int)(i + 1));
        int32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static float *random_array(int64_t n, bool integer, rng *r)
{
    float *a = malloc((size_t)(n > 0 ? n : 1) * sizeof *a);
    for (int64_t i = 0; i < n; i++) a[i] = rng_val(r, integer);
    return a;
}

static float *copy_array(const float *a, int64_t n)
{
    float *c = malloc((size_t)(n > 0 ? n : 1) * sizeof *c);
    memcpy(c, a, (size_t)n * sizeof *c);
    return c;
}

/* ---- random valid compressed weights ---- */
typedef struct {
    vnm_spmm_weight w;
    float *vals;
    uint8_t *slots;
    int32_t *cols, *rows;
} test_weight;

typedef struct {
    const char *pattern;
    int64_t T, O, I;
    bool perm_in, perm_rows;
} shape;

static const float junk = 3.0f; /* value at padding positions: must contribute nothing */

/* Group g of every block takes 4 distinct random columns among its M (input-permuted) columns;
 * a narrow last group of r < 4 columns keeps them all, with -1 after them, and rows choose among
 * them (r ≤ 2: the padding pair {0, 1}). Padding rows, padding groups and slots naming a -1
 * column hold junk values. */
static void make_weight(test_weight *tw, const shape *s, bool integer, rng *r)
{
    vnm_pattern p;
    assert_int_equal(vnm_pattern_parse(s->pattern, &p, NULL, 0), VNM_OK);
    const int64_t V = p.V, M = p.M, O = s->O, I_ = s->I;
    const int64_t O_pad = (O + V - 1) / V * V, G = (I_ + M - 1) / M, Gp = (G + 7) / 8 * 8;
    tw->vals = malloc((size_t)(O_pad * Gp * 2) * sizeof *tw->vals);
    tw->slots = malloc((size_t)(O_pad * Gp));
    tw->cols = malloc((size_t)(O_pad / V * Gp * 4) * sizeof *tw->cols);
    tw->rows = malloc((size_t)O_pad * sizeof *tw->rows);
    int32_t *perm_in = malloc((size_t)I_ * sizeof *perm_in);
    shuffle(perm_in, I_, r);
    if (!s->perm_in)
        for (int64_t i = 0; i < I_; i++) perm_in[i] = (int32_t)i;
    shuffle(tw->rows, O, r);
    for (int64_t o = 0; o < O_pad; o++)
        if (o >= O || !s->perm_rows) tw->rows[o] = o < O ? (int32_t)o : -1;
    static const uint8_t codes[6] = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE}; /* (s0, s1), s0 < s1 */
    for (int64_t b = 0; b < O_pad / V; b++)
        for (int64_t g = 0; g < Gp; g++) {
            int32_t *c = tw->cols + (b * Gp + g) * 4;
            const int64_t width = g < G ? (I_ - g * M < M ? I_ - g * M : M) : 0;
            const int kept = width < 4 ? (int)width : 4;
            int32_t local[64];
            shuffle(local, width, r);
            for (int k = 0; k < 4; k++) c[k] = k < kept ? perm_in[g * M + local[k]] : -1;
            for (int i = 1; i < kept; i++) /* ascending absolute columns */
                for (int j = i; j > 0 && c[j - 1] > c[j]; j--) {
                    int32_t t = c[j];
                    c[j] = c[j - 1];
                    c[j - 1] = t;
                }
            /* Codes whose both slots name real columns: all 6 for 4, 3 for 3, else {0, 1}. */
            const int n_codes = kept == 4 ? 6 : kept == 3 ? 3 : 1;
            static const uint8_t codes3[3] = {0x4, 0x8, 0x9};
            for (int64_t o = b * V; o < (b + 1) * V; o++) {
                const uint8_t code = kept == 4 ? codes[rng_int(r, 6)]
                                     : kept == 3 ? codes3[rng_int(r, n_codes)]
                                                 : 0x4;
                tw->slots[o * Gp + g] = code;
                for (int k = 0; k < 2; k++) {
                    const int slot = k ? code >> 2 : code & 3;
                    const bool live = o < O && c[slot] >= 0;
                    tw->vals[(o * Gp + g) * 2 + k] = live ? rng_val(r, integer) : junk;
                }
            }
        }
    free(perm_in);
    tw->w = (vnm_spmm_weight){p, O, I_, O_pad, G, Gp, tw->vals, tw->slots, tw->cols, tw->rows};
}

static void free_weight(test_weight *tw)
{
    free(tw->vals);
    free(tw->slots);
    free(tw->cols);
    free(tw->rows);
}

/* ---- comparisons ---- */
static void assert_bits_equal(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s: element %lld is %.9g, reference %.9g", what, (long long)i,
                     (double)got[i], (double)want[i]);
}

typedef enum { FWD, DX, DW } product;
static const char *const product_name[3] = {"forward", "dX", "dW"};

/* Output size of a product, and one call of the fast kernel or of the reference. */
static int64_t out_len(const vnm_spmm_weight *w, product p, int64_t T)
{
    return p == FWD ? T * w->O : p == DX ? T * w->I : w->O_pad * w->Gp * 2;
}

static void run(const vnm_spmm_weight *w, product p, bool ref, const float *x, const float *dy,
                int64_t T, float *out)
{
    if (p == FWD) (ref ? vnm_spmm_fwd_ref : vnm_spmm_fwd)(w, x, T, out);
    if (p == DX) (ref ? vnm_spmm_dx_ref : vnm_spmm_dx)(w, dy, T, out);
    if (p == DW) (ref ? vnm_spmm_dw_ref : vnm_spmm_dw)(w, dy, x, T, out);
}

/* Integer inputs, integer pre-filled outputs: each product must equal its reference bit for bit,
 * with the run-time kernels (AVX2 where the CPU has it) and with the portable ones. */
static void check_exact(const shape *s, uint64_t key)
{
    rng r = {.key = key};
    test_weight tw;
    make_weight(&tw, s, true, &r);
    const vnm_spmm_weight *w = &tw.w;
    float *x = random_array(s->T * s->I, true, &r), *dy = random_array(s->T * s->O, true, &r);
    for (int portable = 0; portable < 2; portable++) {
        vnm_spmm_force_portable(portable);
        for (product p = FWD; p <= DW; p++) {
            const int64_t n = out_len(w, p, s->T);
            float *want = random_array(n, true, &r), *got = copy_array(want, n);
            run(w, p, true, x, dy, s->T, want);
            run(w, p, false, x, dy, s->T, got);
            char what[160];
            snprintf(what, sizeof what, "%s %s T=%lld O=%lld I=%lld%s%s (%s)",
                     product_name[p], s->pattern, (long long)s->T, (long long)s->O,
                     (long long)s->I, s->perm_in ? " perm_in" : "",
                     s->perm_rows ? " perm_rows" : "", portable ? "portable" : "run-time ISA");
            assert_bits_equal(got, want, n, what);
            free(want);
            free(got);
        }
    }
    vnm_spmm_force_portable(false);
    free(x);
    free(dy);
    free_weight(&tw);
}

static const shape exact_shapes[] = {
    {"16:2:4", 37, 50, 45, false, false},    /* tail group of 1 column, 2 padding rows */
    {"64:2:5", 70, 150, 203, false, false},  /* tail of 3 columns */
    {"64:2:8", 300, 100, 333, false, false}, /* tail of 5; several token tiles and groups */
    {"128:2:5", 53, 130, 402, false, false}, /* tail of 2; several chunks of groups */
    {"32:2:7", 129, 97, 257, false, false},
    {"256:2:5", 300, 300, 64, false, false}, /* dW: 2 token blocks; 212 padding rows */
    {"64:2:5", 45, 129, 211, true, true},    /* input and output permutations */
    {"32:2:7", 33, 64, 70, true, false},
    {"16:2:4", 96, 32, 64, false, true}, /* everything divides */
};

static void test_exact_integer_inputs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof exact_shapes / sizeof exact_shapes[0]; i++)
        check_exact(&exact_shapes[i], 100 + i);
}

static void test_exact_one_token(void **state)
{
    (void)state;
    const shape s[] = {{"64:2:5", 1, 150, 203, false, false}, {"128:2:5", 1, 77, 90, true, true}};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) check_exact(&s[i], 200 + i);
}

/* T = 0: nothing is read or written. */
static void test_zero_tokens(void **state)
{
    (void)state;
    rng r = {.key = 300};
    const shape s = {"64:2:5", 0, 70, 33, false, false};
    test_weight tw;
    make_weight(&tw, &s, true, &r);
    float one = 1.0f;
    for (int portable = 0; portable < 2; portable++) {
        vnm_spmm_force_portable(portable);
        for (product p = FWD; p <= DW; p++) {
            const int64_t n = out_len(&tw.w, p, 0) + 1;
            float *out = random_array(n, true, &r), *before = copy_array(out, n);
            run(&tw.w, p, false, &one, &one, 0, out);
            assert_bits_equal(out, before, n, product_name[p]);
            free(out);
            free(before);
        }
    }
    vnm_spmm_force_portable(false);
    free_weight(&tw);
}

/* The input column of kept value k of row o in group g (-1: padding). */
static int32_t kept_col(const vnm_spmm_weight *w, int64_t o, int64_t g, int k)
{
    const uint8_t code = w->slots[o * w->Gp + g];
    return w->cols[((o / w->pat.V) * w->Gp + g) * 4 + (k ? code >> 2 & 3 : code & 3)];
}

/* Double reference and Σ|terms| of one product (written independently of spmm_ref.c): every
 * kept (row o, group g, slot k) pair with a live row and column adds v·a·b somewhere. */
static void reference_double(const vnm_spmm_weight *w, product p, const float *x,
                             const float *dy, int64_t T, const float *init, double *ref,
                             double *mag, int64_t *terms)
{
    const int64_t n = out_len(w, p, T);
    for (int64_t i = 0; i < n; i++) {
        ref[i] = init[i];
        mag[i] = fabs(init[i]);
        terms[i] = 1;
    }
    for (int64_t o = 0; o < w->O_pad; o++) {
        if (w->rows[o] < 0) continue;
        for (int64_t g = 0; g < w->Gp; g++) {
            for (int k = 0; k < 2; k++) {
                const int32_t c = kept_col(w, o, g, k);
                if (c < 0) continue;
                const double v = w->vals[(o * w->Gp + g) * 2 + k];
                for (int64_t t = 0; t < T; t++) {
                    const double a = x[t * w->I + c], d = dy[t * w->O + w->rows[o]];
                    const int64_t i = p == FWD ? t * w->O + w->rows[o]
                                      : p == DX ? t * w->I + c
                                                : (o * w->Gp + g) * 2 + k;
                    const double term = p == FWD ? v * a : p == DX ? v * d : d * a;
                    ref[i] += term;
                    mag[i] += fabs(term);
                    terms[i]++;
                }
            }
        }
    }
}

/* Random inputs: |got - ref| ≤ 2·K·2⁻²⁴·Σ|terms| (KERNELS §8) with K the number of terms,
 * counting the pre-filled output as one. */
static void test_fp32_bound_random_inputs(void **state)
{
    (void)state;
    const shape shapes[] = {{"64:2:5", 300, 150, 403, true, true},
                            {"128:2:8", 77, 260, 515, false, false}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        rng r = {.key = 400 + si};
        test_weight tw;
        make_weight(&tw, s, false, &r);
        const vnm_spmm_weight *w = &tw.w;
        float *x = random_array(s->T * s->I, false, &r);
        float *dy = random_array(s->T * s->O, false, &r);
        for (int portable = 0; portable < 2; portable++) {
            vnm_spmm_force_portable(portable);
            for (product p = FWD; p <= DW; p++) {
                const int64_t n = out_len(w, p, s->T);
                float *got = random_array(n, false, &r);
                double *ref = malloc((size_t)n * sizeof *ref);
                double *mag = malloc((size_t)n * sizeof *mag);
                int64_t *terms = malloc((size_t)n * sizeof *terms);
                reference_double(w, p, x, dy, s->T, got, ref, mag, terms);
                run(w, p, false, x, dy, s->T, got);
                for (int64_t i = 0; i < n; i++) {
                    const double bound = 2.0 * (double)terms[i] * ldexp(1.0, -24) * mag[i];
                    if (fabs(got[i] - ref[i]) > bound)
                        fail_msg("%s %s (%s): element %lld is %.9g, reference %.9g, bound %.3g",
                                 product_name[p], s->pattern, portable ? "portable" : "run-time",
                                 (long long)i, (double)got[i], ref[i], bound);
                }
                free(got);
                free(ref);
                free(mag);
                free(terms);
            }
        }
        vnm_spmm_force_portable(false);
        free(x);
        free(dy);
        free_weight(&tw);
    }
}

/* 1 thread and 2 threads give the same bits on random (inexact) inputs. */
static void test_thread_count_independent(void **state)
{
    (void)state;
    const shape s = {"64:2:5", 530, 150, 333, true, true}; /* 3 row blocks: split for 2 */
    rng r = {.key = 500};
    test_weight tw;
    make_weight(&tw, &s, false, &r);
    float *x = random_array(s.T * s.I, false, &r), *dy = random_array(s.T * s.O, false, &r);
    const int saved = omp_get_max_threads();
    for (int portable = 0; portable < 2; portable++) {
        vnm_spmm_force_portable(portable);
        for (product p = FWD; p <= DW; p++) {
            const int64_t n = out_len(&tw.w, p, s.T);
            float *one = random_array(n, false, &r), *two = copy_array(one, n);
            omp_set_num_threads(1);
            run(&tw.w, p, false, x, dy, s.T, one);
            omp_set_num_threads(2);
            run(&tw.w, p, false, x, dy, s.T, two);
            assert_bits_equal(two, one, n, product_name[p]);
            free(one);
            free(two);
        }
    }
    omp_set_num_threads(saved);
    vnm_spmm_force_portable(false);
    free(x);
    free(dy);
    free_weight(&tw);
}

/* dvals at padding rows and at slots naming a -1 column keep their bits, even -0.0 (which adding
 * a zero would turn into +0.0); live ones change. */
static void test_padding_dvals_untouched(void **state)
{
    (void)state;
    const shape s = {"32:2:7", 41, 45, 71, false, false}; /* 19 padding rows, tail of 1 column */
    rng r = {.key = 600};
    test_weight tw;
    make_weight(&tw, &s, true, &r);
    const vnm_spmm_weight *w = &tw.w;
    float *x = random_array(s.T * s.I, true, &r), *dy = random_array(s.T * s.O, true, &r);
    for (int portable = 0; portable < 2; portable++) {
        vnm_spmm_force_portable(portable);
        const int64_t n = w->O_pad * w->Gp * 2;
        float *dv = malloc((size_t)n * sizeof *dv);
        for (int64_t o = 0; o < w->O_pad; o++)
            for (int64_t g = 0; g < w->Gp; g++)
                for (int k = 0; k < 2; k++)
                    dv[(o * w->Gp + g) * 2 + k] =
                        w->rows[o] < 0 || kept_col(w, o, g, k) < 0 ? -0.0f : 0.5f;
        vnm_spmm_dw(w, dy, x, s.T, dv);
        int64_t live = 0, changed = 0;
        for (int64_t o = 0; o < w->O_pad; o++)
            for (int64_t g = 0; g < w->Gp; g++)
                for (int k = 0; k < 2; k++) {
                    const float v = dv[(o * w->Gp + g) * 2 + k];
                    if (w->rows[o] < 0 || kept_col(w, o, g, k) < 0) {
                        if (memcmp(&v, &(float){-0.0f}, sizeof v) != 0)
                            fail_msg("padding dvals[%lld][%lld][%d] changed to %g", (long long)o,
                                     (long long)g, k, (double)v);
                    } else {
                        live++;
                        changed += v != 0.5f; /* unchanged only where the sum is 0 */
                    }
                }
        assert_true(changed > live / 2);
        free(dv);
    }
    vnm_spmm_force_portable(false);
    free(x);
    free(dy);
    free_weight(&tw);
}

static void test_portable_switch(void **state)
{
    (void)state;
    vnm_spmm_force_portable(true);
    assert_false(vnm_spmm_use_avx2());
    vnm_spmm_force_portable(false);
#if defined(__x86_64__)
    assert_int_equal(vnm_spmm_use_avx2(),
                     __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exact_integer_inputs, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_exact_one_token, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_zero_tokens, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_fp32_bound_random_inputs, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_thread_count_independent, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_padding_dvals_untouched, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_portable_switch, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests_name("sparse_kernels", tests, NULL, NULL);
}
