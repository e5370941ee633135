/* tests/test_util.h — helpers shared by the cmocka tests: contexts, random tensors, tolerant
 * comparisons, and the finite-difference gradient check. */
#ifndef VNM_TEST_UTIL_H
#define VNM_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "autograd/autograd.h"

/* A CPU context with a fixed seed. */
vnm_ctx *tu_ctx(void);
/* A CUDA context with the same seed, or the test is skipped with the reason (no device). */
vnm_ctx *tu_cuda_ctx_or_skip(void);
/* cmocka setup/teardown that put a fresh context in *state. */
int tu_setup(void **state);
int tu_teardown(void **state);

/* cmocka setup/teardown that put a fresh temporary directory (a malloc'd path) in *state, and
 * remove it with everything in it. */
int tu_setup_tmpdir(void **state);
int tu_teardown_tmpdir(void **state);
/* dir + "/" + rel, malloc'd. */
char *tu_path(const char *dir, const char *rel);
/* The whole file as a NUL-terminated string (malloc'd), NULL when it cannot be opened. */
char *tu_read_file(const char *path);

/* A reader of whitespace-separated words in a fixture text (cut in place; '#' starts a comment
 * line); every helper fails the test with the file named on unexpected input. */
typedef struct {
    char *s;
    const char *file;
} tu_words;
char *tu_word(tu_words *r);
void tu_expect_word(tu_words *r, const char *want);
double tu_number(tu_words *r);
double tu_key_number(tu_words *r, const char *key); /* the word `key`, then a number */

/* Fails the test unless text contains needle. */
void tu_assert_has(const char *text, const char *needle);

/* Persistent f32 tensor requiring grad, uniform in [lo, hi) from the context RNG. */
vnm_tensor *tu_param(vnm_ctx *ctx, int ndim, const int64_t *shape, float lo, float hi);
/* Host copy (malloc'd, caller frees) of an f32 tensor in row-major order. */
float *tu_host(vnm_ctx *ctx, const vnm_tensor *t);
/* Host copy of t's gradient as double[numel] (malloc'd); fails the test if there is none. */
double *tu_grad(vnm_ctx *ctx, const vnm_tensor *t);

/* Fails the test with the first index where |got - want| > atol + rtol·|want|. */
void tu_assert_close(const float *got, const double *want, int64_t n, double atol, double rtol,
                     const char *what);
/* Fails unless the context holds an error whose message contains `needle`; clears it. */
void tu_assert_error(vnm_ctx *ctx, const char *needle);

/* Finite-difference gradient check. f builds the output from the inputs (called many times, each
 * after a step reset and with the same RNG state). L = Σ out·R for fixed pseudo-random R; the
 * analytic dL/dx from the tape is compared with central differences of L accumulated in double,
 * for every input that requires grad (at most max_elems elements each, spread evenly). */
typedef vnm_tensor *(*tu_fn)(vnm_ctx *ctx, vnm_tensor **in, void *user);
void tu_gradcheck(vnm_ctx *ctx, tu_fn f, int n_in, vnm_tensor **in, void *user);
void tu_gradcheck_tol(vnm_ctx *ctx, tu_fn f, int n_in, vnm_tensor **in, void *user, double h,
                      double atol, double rtol);

#endif
