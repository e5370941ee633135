/* tests/test_util.c — see test_util.h. */
#include "test_util.h"

#include <ctype.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

vnm_ctx *tu_ctx(void)
{
    vnm_ctx_config cfg = {VNM_DEVICE_CPU, 1234, 0};
    return vnm_ctx_create(&cfg);
}

vnm_ctx *tu_cuda_ctx_or_skip(void)
{
    char reason[256];
    if (!vnm_device_available(VNM_DEVICE_CUDA, reason, sizeof reason)) {
        print_message("# skipped: %s\n", reason);
        skip();
    }
    vnm_ctx_config cfg = {VNM_DEVICE_CUDA, 1234, 0};
    vnm_ctx *ctx = vnm_ctx_create(&cfg);
    assert_non_null(ctx);
    return ctx;
}

int tu_setup(void **state)
{
    *state = tu_ctx();
    return *state ? 0 : -1;
}

int tu_teardown(void **state)
{
    vnm_ctx_destroy(*state);
    return 0;
}

int tu_setup_tmpdir(void **state)
{
    char *dir = strdup("/tmp/vnm_test_XXXXXX");
    if (!dir || !mkdtemp(dir)) {
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int tu_teardown_tmpdir(void **state)
{
    int rc = nftw(*state, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return rc;
}

char *tu_path(const char *dir, const char *rel)
{
    char *p = malloc(strlen(dir) + strlen(rel) + 2);
    assert_non_null(p);
    sprintf(p, "%s/%s", dir, rel);
    return p;
}

char *tu_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

char *tu_word(tu_words *r)
{
    for (;;) {
        while (isspace((unsigned char)*r->s)) r->s++;
        if (*r->s != '#') break;
        while (*r->s && *r->s != '\n') r->s++;
    }
    if (!*r->s) fail_msg("%s: unexpected end of file", r->file);
    char *w = r->s;
    while (*r->s && !isspace((unsigned char)*r->s)) r->s++;
    if (*r->s) *r->s++ = '\0';
    return w;
}

void tu_expect_word(tu_words *r, const char *want)
{
    const char *w = tu_word(r);
    if (strcmp(w, want) != 0) fail_msg("%s: expected '%s', found '%s'", r->file, want, w);
}

double tu_number(tu_words *r)
{
    char *w = tu_word(r), *end;
    double v = strtod(w, &end);
    if (*end) fail_msg("%s: '%s' is not a number", r->file, w);
    return v;
}

double tu_key_number(tu_words *r, const char *key)
{
    tu_expect_word(r, key);
    return tu_number(r);
}

void tu_assert_has(const char *text, const char *needle)
{
    if (!strstr(text, needle)) fail_msg("expected \"%s\" in: %s", needle, text);
}

vnm_tensor *tu_param(vnm_ctx *ctx, int ndim, const int64_t *shape, float lo, float hi)
{
    vnm_tensor *t = vnm_param_new(ctx, VNM_DTYPE_F32, ndim, shape, "test");
    assert_non_null(t);
    assert_int_equal(vnm_rng_uniform(ctx, t, lo, hi), VNM_OK);
    return t;
}

float *tu_host(vnm_ctx *ctx, const vnm_tensor *t)
{
    float *h = malloc((size_t)vnm_numel(t) * sizeof *h + 1);
    assert_non_null(h);
    assert_int_equal(vnm_tensor_to_host(ctx, t, h), VNM_OK);
    return h;
}

double *tu_grad(vnm_ctx *ctx, const vnm_tensor *t)
{
    assert_non_null(t->grad);
    float *g = tu_host(ctx, t->grad);
    int64_t n = vnm_numel(t);
    double *d = malloc((size_t)n * sizeof *d + 1);
    for (int64_t i = 0; i < n; i++) d[i] = g[i];
    free(g);
    return d;
}

void tu_assert_close(const float *got, const double *want, int64_t n, double atol, double rtol,
                     const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= atol + rtol * fabs(want[i]))) {
            fail_msg("%s: element %lld: got %.9g, want %.9g (|err| %.3g > %.3g + %.3g*|want|)",
                     what, (long long)i, (double)got[i], want[i], err, atol, rtol);
        }
    }
}

void tu_assert_error(vnm_ctx *ctx, const char *needle)
{
    if (vnm_ctx_status(ctx) == VNM_OK) fail_msg("expected an error containing '%s', got none", needle);
    if (!strstr(vnm_ctx_error(ctx), needle))
        fail_msg("error '%s' does not mention '%s'", vnm_ctx_error(ctx), needle);
    vnm_ctx_clear_error(ctx);
}

/* The fixed projection weights R[i]. */
static float proj(int64_t i) { return (float)sin(0.7 + 1.37 * (double)i); }

static double eval_loss(vnm_ctx *ctx, tu_fn f, vnm_tensor **in, void *user, vnm_rng_state rng)
{
    vnm_ctx_reset_step(ctx);
    vnm_ctx_rng_set(ctx, rng);
    bool prev = vnm_ctx_set_grad_enabled(ctx, false);
    vnm_tensor *out = f(ctx, in, user);
    vnm_ctx_set_grad_enabled(ctx, prev);
    if (!out) fail_msg("gradcheck: forward failed: %s", vnm_ctx_error(ctx));
    float *h = tu_host(ctx, out);
    double L = 0.0;
    for (int64_t i = 0; i < vnm_numel(out); i++) L += (double)h[i] * proj(i);
    free(h);
    return L;
}

void tu_gradcheck_tol(vnm_ctx *ctx, tu_fn f, int n_in, vnm_tensor **in, void *user, double h,
                      double atol, double rtol)
{
    vnm_rng_state rng = vnm_ctx_rng_get(ctx);
    vnm_ctx_reset_step(ctx);
    vnm_zero_grad(ctx, in, n_in);
    vnm_tensor *out = f(ctx, in, user);
    if (!out) fail_msg("gradcheck: forward failed: %s", vnm_ctx_error(ctx));
    int64_t n_out = vnm_numel(out);
    vnm_tensor *seed = vnm_tensor_new(ctx, VNM_DTYPE_F32, out->ndim, out->shape);
    float *r = malloc((size_t)n_out * sizeof *r + 1);
    for (int64_t i = 0; i < n_out; i++) r[i] = proj(i);
    vnm_tensor_from_host(ctx, seed, r);
    free(r);
    if (vnm_backward_seed(ctx, out, seed) != VNM_OK)
        fail_msg("gradcheck: backward failed: %s", vnm_ctx_error(ctx));
    const int64_t max_elems = 64;
    int checked = 0;
    for (int k = 0; k < n_in; k++) {
        vnm_tensor *x = in[k];
        if (!x || !x->requires_grad) continue;
        double *analytic = tu_grad(ctx, x);
        int64_t n = vnm_numel(x);
        float *v = tu_host(ctx, x);
        int64_t step = n > max_elems ? n / max_elems : 1;
        for (int64_t j = 0; j < n; j += step) {
            float orig = v[j];
            v[j] = orig + (float)h;
            vnm_tensor_from_host(ctx, x, v);
            double lp = eval_loss(ctx, f, in, user, rng);
            v[j] = orig - (float)h;
            vnm_tensor_from_host(ctx, x, v);
            double lm = eval_loss(ctx, f, in, user, rng);
            v[j] = orig;
            vnm_tensor_from_host(ctx, x, v);
            /* divide by the step actually taken in f32 */
            double fd = (lp - lm) / ((double)(orig + (float)h) - (double)(orig - (float)h));
            double err = fabs(analytic[j] - fd);
            if (!(err <= atol + rtol * fabs(fd)))
                fail_msg("gradcheck: input %d element %lld: analytic %.7g, finite difference "
                         "%.7g (|err| %.3g)", k, (long long)j, analytic[j], fd, err);
            checked++;
        }
        free(v);
        free(analytic);
    }
    if (checked == 0) fail_msg("gradcheck: no input requires grad");
    vnm_ctx_rng_set(ctx, rng);
    vnm_ctx_reset_step(ctx);
}

void tu_gradcheck(vnm_ctx *ctx, tu_fn f, int n_in, vnm_tensor **in, void *user)
{
    tu_gradcheck_tol(ctx, f, n_in, in, user, 1e-2, 5e-4, 2e-3);
}
