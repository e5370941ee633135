/* tests/llama_fixture.c — the shared helpers of tests/llama_fixture.h. */
#include "llama_fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

int lf_setup(void **state)
{
    lf_env *f = calloc(1, sizeof *f);
    void *dir = NULL;
    if (!f || tu_setup_tmpdir(&dir) != 0 || !(f->ctx = tu_ctx())) return -1;
    f->dir = dir;
    *state = f;
    return 0;
}

int lf_teardown(void **state)
{
    lf_env *f = *state;
    vnm_ctx_destroy(f->ctx);
    void *dir = f->dir;
    int rc = tu_teardown_tmpdir(&dir);
    free(f);
    return rc;
}

void lf_fixture_path(const char *rel, char *buf, size_t len)
{
    const char *dir = getenv("VNM_TEST_DATA");
    snprintf(buf, len, "%s/%s", dir ? dir : "tests/fixtures", rel);
}

/* Fixture tensor as f32 (malloc'd); *numel receives its size. */
float *lf_fixture_f32(const vnm_safetensors *st, const char *name, int64_t *numel)
{
    const vnm_safetensors_tensor *t = vnm_safetensors_find(st, name);
    if (!t) fail_msg("fixture lacks '%s'", name);
    float *buf = malloc((size_t)t->numel * sizeof *buf);
    char err[256];
    if (vnm_safetensors_read_f32(st, name, buf, (size_t)t->numel, err, sizeof err) != VNM_OK)
        fail_msg("%s", err);
    *numel = t->numel;
    return buf;
}

/* max |a − b| / max |b| */
double lf_rel_err(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - (double)b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return den > 0 ? num / den : num;
}

/* the config.json of fixture folder `name` */
vnm_llama_config lf_config(const char *name)
{
    char rel[128], path[512], err[512];
    snprintf(rel, sizeof rel, "%s/config.json", name);
    lf_fixture_path(rel, path, sizeof path);
    vnm_llama_config cfg;
    if (vnm_llama_config_load(path, &cfg, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    return cfg;
}

/* The fixture model in folder `name` (config.json + weights file `weights`), built with opt. */
vnm_llama *lf_model(vnm_ctx *ctx, const char *name, const char *weights,
                    const vnm_llama_options *opt)
{
    char rel[256], path[512], err[512];
    vnm_llama_config cfg = lf_config(name);
    vnm_llama_options o = opt ? *opt : (vnm_llama_options){0};
    o.skip_init = true;
    vnm_llama *m = vnm_llama_new(ctx, &cfg, &o);
    if (!m) fail_msg("%s", vnm_ctx_error(ctx));
    snprintf(rel, sizeof rel, "%s/%s", name, weights);
    lf_fixture_path(rel, path, sizeof path);
    if (vnm_llama_load(ctx, m, path, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    return m;
}

/* ids [B, T] i64 into *B, *T; malloc'd */
int64_t *lf_ids(const vnm_safetensors *st, int64_t *B, int64_t *T)
{
    const vnm_safetensors_tensor *t = vnm_safetensors_find(st, "input_ids");
    assert_non_null(t);
    assert_int_equal(t->dtype, VNM_DTYPE_I64);
    assert_int_equal(t->ndim, 2);
    *B = t->shape[0];
    *T = t->shape[1];
    int64_t *ids = malloc((size_t)t->numel * sizeof *ids);
    char err[256];
    assert_int_equal(vnm_safetensors_read(st, "input_ids", ids, (size_t)t->numel * sizeof *ids,
                                          err, sizeof err), VNM_OK);
    return ids;
}

/* transformers' labels = ids, shifted: targets[b, t] = ids[b, t + 1], the last column -100 */
vnm_tensor *lf_shifted_targets(vnm_ctx *ctx, const int64_t *ids, int64_t B, int64_t T)
{
    int32_t *tg = malloc((size_t)(B * T) * sizeof *tg);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            tg[b * T + t] = t + 1 < T ? (int32_t)ids[b * T + t + 1] : -100;
    vnm_tensor *y = vnm_tensor_from(ctx, VNM_DTYPE_I32, 2, VNM_SHAPE(B, T), tg);
    free(tg);
    return y;
}

float *lf_logits(vnm_ctx *ctx, vnm_llama *m, const int64_t *ids, int64_t B, int64_t T,
                 int64_t pos)
{
    vnm_ctx_reset_step(ctx);
    vnm_tensor *x = vnm_tensor_from(ctx, VNM_DTYPE_I64, 2, VNM_SHAPE(B, T), ids);
    vnm_tensor *y = vnm_llama_forward(ctx, m, x, pos);
    if (!y) fail_msg("forward: %s", vnm_ctx_error(ctx));
    return tu_host(ctx, y);
}

