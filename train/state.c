/* train/state.c — saving and restoring the complete training state (train/state.h): the mapping of
 * a described run (tensors, sparse weights, optimiser, RNG, sampler, progress) onto the checkpoint
 * layout of DESIGN.md "Checkpoint". One list of entries (path ↔ tensor) is built from the run
 * description for both directions, so save and load cannot disagree about names. */
#include "state.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"

#define STATE_PATH_LEN 512

/* One dataset backed by a tensor. */
typedef struct {
    char path[STATE_PATH_LEN];
    vnm_tensor *t;
    vnm_ckpt_dtype dt;
    void *host; /* load: the data read, before anything is restored */
    bool seen;  /* load: present in the file */
} state_entry;

/* Entries in a fixed order: the dense tensors, then 4 per sparse weight (vals, slots, cols, rows),
 * then the optimiser states of parameter 0, 1, ... */
typedef struct {
    state_entry *e;
    int n;
    int sparse0;
    const char **optim_names; /* [optim params] the stored name of each optimiser parameter */
} state_plan;

static const char *const sparse_arrays[4] = {"vals", "slots", "cols", "rows"};

static bool ckpt_dtype_of(vnm_dtype dt, vnm_ckpt_dtype *out)
{
    switch (dt) {
    case VNM_DTYPE_F32: *out = VNM_CKPT_F32; return true;
    case VNM_DTYPE_BF16: *out = VNM_CKPT_BF16; return true;
    case VNM_DTYPE_U8: *out = VNM_CKPT_U8; return true;
    case VNM_DTYPE_I32: *out = VNM_CKPT_I32; return true;
    case VNM_DTYPE_I64: *out = VNM_CKPT_I64; return true;
    case VNM_DTYPE_F16: return false;
    }
    return false;
}

static void plan_free(state_plan *p)
{
    if (p->e)
        for (int i = 0; i < p->n; i++) free(p->e[i].host);
    free(p->e);
    free(p->optim_names);
    *p = (state_plan){0};
}

/* Names become HDF5 path components: non-empty, no '/'. */
static bool name_ok(const char *name) { return name && *name && !strchr(name, '/'); }

static vnm_status plan_add(state_plan *p, const char *where, vnm_tensor *t, char *err,
                           size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static vnm_status plan_add(state_plan *p, const char *where, vnm_tensor *t, char *err,
                           size_t err_len, const char *fmt, ...)
{
    state_entry *e = &p->e[p->n];
    *e = (state_entry){0};
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(e->path, sizeof e->path, fmt, ap);
    va_end(ap);
    if (len < 0 || len >= (int)sizeof e->path)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: name too long: %s", where, e->path);
    if (!t)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: %s: tensor is NULL", where, e->path);
    if (!ckpt_dtype_of(t->dtype, &e->dt))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: %s: dtype %s cannot be stored", where,
                          e->path, vnm_dtype_name(t->dtype));
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->e[i].path, e->path))
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: %s: named twice", where, e->path);
    e->t = t;
    p->n++;
    return VNM_OK;
}

/* The stored name of optimiser parameter t: the dense tensor or sparse weight it is. */
static const char *optim_param_name(const vnm_run_state *st, const vnm_tensor *t)
{
    for (int i = 0; i < st->n_tensors; i++)
        if (st->tensors[i].t == t) return st->tensors[i].name;
    for (int i = 0; i < st->n_sparse; i++)
        if (st->sparse[i].w && st->sparse[i].w->vals == t) return st->sparse[i].name;
    return NULL;
}

static vnm_status plan_build(const vnm_run_state *st, bool with_optim, const char *where,
                             state_plan *p, char *err, size_t err_len)
{
    *p = (state_plan){0};
    if (!st || !st->ctx)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: run state or its context is NULL",
                          where);
    if (st->n_tensors < 0 || st->n_sparse < 0 || (st->n_tensors && !st->tensors) ||
        (st->n_sparse && !st->sparse))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: bad tensor or sparse weight list",
                          where);
    int n_opt = with_optim ? vnm_optim_num_params(st->optim) : 0;
    int n_states = with_optim ? vnm_optim_state_count(st->optim) : 0;
    if (with_optim && !st->optim_cfg)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "%s: optimizer given without optim_cfg",
                          where);
    p->e = calloc((size_t)st->n_tensors + 4 * (size_t)st->n_sparse + (size_t)n_opt * n_states + 1,
                  sizeof *p->e);
    p->optim_names = calloc((size_t)n_opt + 1, sizeof *p->optim_names);
    if (!p->e || !p->optim_names) {
        plan_free(p);
        return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "%s: out of memory", where);
    }
    vnm_status rc = VNM_OK;
    for (int i = 0; i < st->n_tensors && rc == VNM_OK; i++) {
        const char *name = st->tensors[i].name;
        rc = name_ok(name) ? plan_add(p, where, st->tensors[i].t, err, err_len, "/model/%s", name)
                           : vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                                        "%s: tensor %d: name is empty or holds '/'", where, i);
    }
    p->sparse0 = p->n;
    for (int i = 0; i < st->n_sparse && rc == VNM_OK; i++) {
        const vnm_state_sparse *s = &st->sparse[i];
        if (!name_ok(s->name) || !s->w) {
            rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                            "%s: sparse weight %d: NULL, or name empty or holding '/'", where, i);
            break;
        }
        vnm_tensor *arrays[4] = {s->w->vals, s->w->slots, s->w->cols, s->w->rows};
        for (int k = 0; k < 4 && rc == VNM_OK; k++)
            rc = plan_add(p, where, arrays[k], err, err_len, "/sparse/%s/%s", s->name,
                          sparse_arrays[k]);
    }
    for (int i = 0; i < n_opt && rc == VNM_OK; i++) {
        const vnm_tensor *t = vnm_optim_param(st->optim, i);
        p->optim_names[i] = optim_param_name(st, t);
        if (!p->optim_names[i]) {
            rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                            "%s: optimizer parameter %d (%s) is neither a listed tensor nor a "
                            "sparse weight's vals",
                            where, i, t && t->name ? t->name : "unnamed");
            break;
        }
        for (int k = 0; k < n_states && rc == VNM_OK; k++)
            rc = plan_add(p, where, vnm_optim_state(st->optim, i, k), err, err_len,
                          "/optim/%s/%s", p->optim_names[i], vnm_optim_state_name(st->optim, k));
    }
    if (rc != VNM_OK) plan_free(p);
    return rc;
}

/* ---- save ---- */

static vnm_status write_tensor(vnm_ckpt_writer *w, vnm_ctx *ctx, const state_entry *e, char *err,
                               size_t err_len)
{
    int64_t n = vnm_numel(e->t);
    void *host = malloc((size_t)(n ? n : 1) * vnm_dtype_size(e->t->dtype));
    if (!host) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "state save: out of memory");
    vnm_status rc = vnm_tensor_to_host(ctx, e->t, host);
    if (rc != VNM_OK)
        vnm_errbuf(err, err_len, rc, "state save: %s: %s", e->path, vnm_ctx_error(ctx));
    else
        rc = vnm_ckpt_write(w, e->path, e->dt, e->t->ndim, e->t->shape, host, err, err_len);
    free(host);
    return rc;
}

/* The hyper-parameters, on /optim and on every parameter's group. */
static vnm_status write_hyper(vnm_ckpt_writer *w, const char *path, const vnm_optim *opt,
                              const vnm_optim_config *cfg, char *err, size_t err_len)
{
    vnm_status rc;
    if ((rc = vnm_ckpt_set_str(w, path, "optimizer", vnm_optim_kind_name(cfg->kind), err,
                               err_len)) ||
        (rc = vnm_ckpt_set_f64(w, path, "lr", vnm_optim_lr(opt), err, err_len)) ||
        (rc = vnm_ckpt_set_f64(w, path, "weight_decay", cfg->weight_decay, err, err_len)))
        return rc;
    if (cfg->kind == VNM_OPTIM_ADAMW) {
        if ((rc = vnm_ckpt_set_f64(w, path, "beta1", cfg->beta1, err, err_len)) ||
            (rc = vnm_ckpt_set_f64(w, path, "beta2", cfg->beta2, err, err_len)) ||
            (rc = vnm_ckpt_set_f64(w, path, "eps", cfg->eps, err, err_len)))
            return rc;
        return VNM_OK;
    }
    if ((rc = vnm_ckpt_set_f64(w, path, "momentum", cfg->momentum, err, err_len)) ||
        (rc = vnm_ckpt_set_f64(w, path, "dampening", cfg->dampening, err, err_len)) ||
        (rc = vnm_ckpt_set_i64(w, path, "nesterov", cfg->nesterov, err, err_len)))
        return rc;
    return VNM_OK;
}

static vnm_status write_sparse_extra(vnm_ckpt_writer *w, vnm_ctx *ctx, const vnm_state_sparse *s,
                                     char *err, size_t err_len)
{
    char path[STATE_PATH_LEN], pat[32];
    snprintf(path, sizeof path, "/sparse/%s", s->name);
    const vnm_sparse_weight *sw = s->w;
    vnm_status rc;
    if ((rc = vnm_ckpt_set_str(w, path, "pattern", vnm_pattern_str(sw->pat, pat, sizeof pat), err,
                               err_len)) ||
        (rc = vnm_ckpt_set_i64(w, path, "O", sw->O, err, err_len)) ||
        (rc = vnm_ckpt_set_i64(w, path, "I", sw->I, err, err_len)) ||
        (rc = vnm_ckpt_set_str(w, path, "score", s->score ? s->score : "magnitude", err,
                               err_len)) ||
        (rc = vnm_ckpt_set_i64(w, path, "permuted", s->perm_in != NULL, err, err_len)))
        return rc;
    if (!s->perm_in) return VNM_OK;
    int32_t *rows = malloc((size_t)sw->O_pad * sizeof *rows); // [O_pad]
    if (!rows) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "state save: out of memory");
    char sub[STATE_PATH_LEN + 16];
    rc = vnm_tensor_to_host(ctx, sw->rows, rows);
    if (rc != VNM_OK) vnm_errbuf(err, err_len, rc, "state save: %s: %s", path, vnm_ctx_error(ctx));
    snprintf(sub, sizeof sub, "%s/perm_out", path);
    if (rc == VNM_OK)
        rc = vnm_ckpt_write(w, sub, VNM_CKPT_I32, 1, &sw->O, rows, err, err_len);
    snprintf(sub, sizeof sub, "%s/perm_in", path);
    if (rc == VNM_OK)
        rc = vnm_ckpt_write(w, sub, VNM_CKPT_I32, 1, &sw->I, s->perm_in, err, err_len);
    free(rows);
    return rc;
}

static vnm_status write_all(vnm_ckpt_writer *w, const vnm_run_state *st, const state_plan *p,
                            char *err, size_t err_len)
{
    vnm_ckpt_meta meta = {st->progress.epoch, st->progress.stage_index, st->progress.stage_step,
                          st->recipe};
    vnm_status rc = vnm_ckpt_write_meta(w, &meta, err, err_len);
    for (int i = 0; i < p->n && rc == VNM_OK; i++)
        rc = write_tensor(w, st->ctx, &p->e[i], err, err_len);
    for (int i = 0; i < st->n_sparse && rc == VNM_OK; i++)
        rc = write_sparse_extra(w, st->ctx, &st->sparse[i], err, err_len);
    if (st->optim) {
        if (rc == VNM_OK) rc = write_hyper(w, "/optim", st->optim, st->optim_cfg, err, err_len);
        if (rc == VNM_OK)
            rc = vnm_ckpt_set_i64(w, "/optim", "steps", vnm_optim_steps(st->optim), err, err_len);
        const vnm_loss_scaler *ls = st->loss_scaler;
        if (ls && rc == VNM_OK &&
            !(rc = vnm_ckpt_set_f64(w, "/optim", "loss_scale", ls->scale, err, err_len)) &&
            !(rc = vnm_ckpt_set_i64(w, "/optim", "loss_scale_good_steps", ls->good_steps, err,
                                    err_len)))
            rc = vnm_ckpt_set_i64(w, "/optim", "loss_scale_skipped", ls->skipped, err, err_len);
        for (int i = 0; i < vnm_optim_num_params(st->optim) && rc == VNM_OK; i++) {
            char path[STATE_PATH_LEN + 8];
            snprintf(path, sizeof path, "/optim/%s", p->optim_names[i]);
            if ((rc = write_hyper(w, path, st->optim, st->optim_cfg, err, err_len)) ||
                (rc = vnm_ckpt_set_i64(w, path, "step", vnm_optim_param_steps(st->optim, i), err,
                                       err_len)))
                break;
            rc = vnm_ckpt_set_i64(w, path, "group", vnm_optim_param_group(st->optim, i), err,
                                  err_len);
        }
    }
    vnm_rng_state rng = vnm_ctx_rng_get(st->ctx);
    int64_t data_pos[2] = {st->data_pos.epoch, st->data_pos.index};
    if (rc == VNM_OK)
        rc = vnm_ckpt_write(w, "/rng/seed", VNM_CKPT_U64, 0, NULL, &rng.seed, err, err_len);
    if (rc == VNM_OK)
        rc = vnm_ckpt_write(w, "/rng/offset", VNM_CKPT_U64, 0, NULL, &rng.offset, err, err_len);
    if (rc == VNM_OK)
        rc = vnm_ckpt_write(w, "/data/epoch", VNM_CKPT_I64, 0, NULL, &data_pos[0], err, err_len);
    if (rc == VNM_OK)
        rc = vnm_ckpt_write(w, "/data/index", VNM_CKPT_I64, 0, NULL, &data_pos[1], err, err_len);
    if (rc == VNM_OK)
        rc = vnm_ckpt_write(w, "/data/seed", VNM_CKPT_U64, 0, NULL, &st->data_seed, err, err_len);
    return rc;
}

vnm_status vnm_state_save(const char *dir, int keep_last, const vnm_run_state *st, char *path_out,
                          size_t path_len, char *err, size_t err_len)
{
    state_plan p;
    vnm_status rc = plan_build(st, st && st->optim, "state save", &p, err, err_len);
    if (rc != VNM_OK) return rc;
    vnm_ckpt_writer *w = vnm_ckpt_begin(dir, st->progress.step, err, err_len);
    if (!w) {
        plan_free(&p);
        return VNM_ERR_INPUT;
    }
    rc = write_all(w, st, &p, err, err_len);
    plan_free(&p);
    if (rc != VNM_OK) {
        vnm_ckpt_abort(w);
        return rc;
    }
    return vnm_ckpt_commit(w, keep_last, path_out, path_len, err, err_len);
}

/* ---- load ---- */

/* Datasets the file may hold besides the plan's: scalars, a permuted layer's permutations, and
 * the optimiser's states when no optimiser is restored. */
static bool extra_allowed(const vnm_run_state *st, bool with_optim, const char *path)
{
    static const char *const scalars[] = {"/rng/seed", "/rng/offset", "/data/epoch",
                                          "/data/index", "/data/seed"};
    for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++)
        if (!strcmp(path, scalars[i])) return true;
    if (!with_optim && !strncmp(path, "/optim/", 7)) return true;
    for (int i = 0; i < st->n_sparse; i++) {
        char a[STATE_PATH_LEN], b[STATE_PATH_LEN];
        snprintf(a, sizeof a, "/sparse/%s/perm_in", st->sparse[i].name);
        snprintf(b, sizeof b, "/sparse/%s/perm_out", st->sparse[i].name);
        if (!strcmp(path, a) || !strcmp(path, b)) return true;
    }
    return false;
}

/* Every dataset of the file is in the plan or allowed, and every plan entry is in the file. */
static vnm_status check_listing(vnm_ckpt_reader *r, const vnm_run_state *st, bool with_optim,
                                state_plan *p, char *err, size_t err_len)
{
    char **names;
    int64_t count;
    vnm_status rc = vnm_ckpt_list(r, "/", &names, &count, err, err_len);
    if (rc != VNM_OK) return rc;
    for (int64_t j = 0; j < count && rc == VNM_OK; j++) {
        bool found = false;
        for (int i = 0; i < p->n && !found; i++)
            if (!strcmp(p->e[i].path, names[j])) found = p->e[i].seen = true;
        if (!found && !extra_allowed(st, with_optim, names[j]))
            rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                            "checkpoint %s: unexpected dataset %s (not part of this run)",
                            vnm_ckpt_file(r), names[j]);
    }
    vnm_ckpt_free_names(names, count);
    for (int i = 0; i < p->n && rc == VNM_OK; i++)
        if (!p->e[i].seen) {
            char shape[96];
            rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                            "checkpoint %s: missing dataset %s (expected %s)", vnm_ckpt_file(r),
                            p->e[i].path, vnm_shape_str(p->e[i].t, shape, sizeof shape));
        }
    return rc;
}

static vnm_status check_sparse_attrs(vnm_ckpt_reader *r, const vnm_state_sparse *s, char *err,
                                     size_t err_len)
{
    char path[STATE_PATH_LEN], want[32];
    snprintf(path, sizeof path, "/sparse/%s", s->name);
    vnm_pattern_str(s->w->pat, want, sizeof want);
    char *pat = NULL;
    int64_t O, I;
    vnm_status rc;
    if ((rc = vnm_ckpt_get_str(r, path, "pattern", &pat, err, err_len)) ||
        (rc = vnm_ckpt_get_i64(r, path, "O", &O, err, err_len)) ||
        (rc = vnm_ckpt_get_i64(r, path, "I", &I, err, err_len))) {
        free(pat);
        return rc;
    }
    if (strcmp(pat, want) || O != s->w->O || I != s->w->I)
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                        "checkpoint %s: %s: pattern %s, O×I %lldx%lld; the run expects %s, "
                        "%lldx%lld",
                        vnm_ckpt_file(r), path, pat, (long long)O, (long long)I, want,
                        (long long)s->w->O, (long long)s->w->I);
    free(pat);
    return rc;
}

static vnm_status read_entries(vnm_ckpt_reader *r, state_plan *p, char *err, size_t err_len)
{
    for (int i = 0; i < p->n; i++) {
        state_entry *e = &p->e[i];
        int64_t n = vnm_numel(e->t);
        e->host = malloc((size_t)(n ? n : 1) * vnm_dtype_size(e->t->dtype));
        if (!e->host) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "state load: out of memory");
        vnm_status rc = vnm_ckpt_read(r, e->path, e->dt, e->t->ndim, e->t->shape, e->host, err,
                                      err_len);
        if (rc != VNM_OK) return rc;
    }
    return VNM_OK;
}

/* The four arrays as read must form a valid compressed weight before they replace the old one. */
static vnm_status validate_sparse(vnm_ckpt_reader *r, const vnm_state_sparse *s,
                                  const state_entry *e /* [4] */, char *err, size_t err_len)
{
    const vnm_sparse_weight *w = s->w;
    vnm_sparse_host h = {w->pat, w->O, w->I, w->O_pad, w->G, w->Gp,
                         e[0].host, e[1].host, e[2].host, e[3].host};
    char why[512];
    if (vnm_sparse_validate(&h, why, sizeof why) == VNM_OK) return VNM_OK;
    return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "checkpoint %s: /sparse/%s: invalid: %s",
                      vnm_ckpt_file(r), s->name, why);
}

/* Everything that is read and checked before the run state changes. */
typedef struct {
    vnm_rng_state rng;
    int64_t data_epoch, data_index;
    uint64_t data_seed;
    vnm_progress progress;
    int64_t optim_steps;
    int64_t *param_steps; /* [optim params] */
    bool has_loss_scale;  /* the checkpoint comes from a run with loss scaling */
    vnm_loss_scaler loss_scaler;
} state_scalars;

static vnm_status read_optim(vnm_ckpt_reader *r, const vnm_run_state *st, const state_plan *p,
                             state_scalars *sc, char *err, size_t err_len)
{
    char *kind = NULL;
    vnm_status rc = vnm_ckpt_get_str(r, "/optim", "optimizer", &kind, err, err_len);
    if (rc != VNM_OK) return rc;
    const char *want = vnm_optim_kind_name(st->optim_cfg->kind);
    if (strcmp(kind, want))
        rc = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                        "checkpoint %s: /optim: optimizer %s, the run uses %s", vnm_ckpt_file(r),
                        kind, want);
    free(kind);
    if (rc == VNM_OK) rc = vnm_ckpt_get_i64(r, "/optim", "steps", &sc->optim_steps, err, err_len);
    double scale;
    /* a checkpoint without loss scaling (an f32 or bf16 run continued in f16) starts afresh */
    sc->has_loss_scale = rc == VNM_OK && st->loss_scaler &&
                         vnm_ckpt_get_f64(r, "/optim", "loss_scale", &scale, NULL, 0) == VNM_OK;
    if (sc->has_loss_scale) {
        sc->loss_scaler = *st->loss_scaler;
        sc->loss_scaler.scale = (float)scale;
        if (!(rc = vnm_ckpt_get_i64(r, "/optim", "loss_scale_good_steps",
                                    &sc->loss_scaler.good_steps, err, err_len)))
            rc = vnm_ckpt_get_i64(r, "/optim", "loss_scale_skipped", &sc->loss_scaler.skipped,
                                  err, err_len);
    }
    int n = vnm_optim_num_params(st->optim);
    sc->param_steps = calloc((size_t)n + 1, sizeof *sc->param_steps);
    if (!sc->param_steps && rc == VNM_OK)
        rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "state load: out of memory");
    for (int i = 0; i < n && rc == VNM_OK; i++) {
        char path[STATE_PATH_LEN + 8];
        snprintf(path, sizeof path, "/optim/%s", p->optim_names[i]);
        rc = vnm_ckpt_get_i64(r, path, "step", &sc->param_steps[i], err, err_len);
    }
    return rc;
}

static vnm_status read_scalars(vnm_ckpt_reader *r, state_scalars *sc, char *err, size_t err_len)
{
    vnm_status rc;
    sc->progress.step = vnm_ckpt_step(r);
    if ((rc = vnm_ckpt_get_i64(r, "/", "epoch", &sc->progress.epoch, err, err_len)) ||
        (rc = vnm_ckpt_get_i64(r, "/", "stage_index", &sc->progress.stage_index, err, err_len)) ||
        (rc = vnm_ckpt_get_i64(r, "/", "stage_step", &sc->progress.stage_step, err, err_len)) ||
        (rc = vnm_ckpt_read(r, "/rng/seed", VNM_CKPT_U64, 0, NULL, &sc->rng.seed, err, err_len)) ||
        (rc = vnm_ckpt_read(r, "/rng/offset", VNM_CKPT_U64, 0, NULL, &sc->rng.offset, err,
                            err_len)) ||
        (rc = vnm_ckpt_read(r, "/data/epoch", VNM_CKPT_I64, 0, NULL, &sc->data_epoch, err,
                            err_len)) ||
        (rc = vnm_ckpt_read(r, "/data/index", VNM_CKPT_I64, 0, NULL, &sc->data_index, err,
                            err_len)))
        return rc;
    return vnm_ckpt_read(r, "/data/seed", VNM_CKPT_U64, 0, NULL, &sc->data_seed, err, err_len);
}

/* Copies the checked data into the run; only a device failure can stop it half-way. */
static vnm_status apply(vnm_run_state *st, const state_plan *p, const state_scalars *sc,
                        char *err, size_t err_len)
{
    for (int i = 0; i < p->n; i++)
        if (vnm_tensor_from_host(st->ctx, p->e[i].t, p->e[i].host) != VNM_OK)
            return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "state load: %s: %s", p->e[i].path,
                              vnm_ctx_error(st->ctx));
    if (st->optim) {
        for (int i = 0; i < vnm_optim_num_params(st->optim); i++)
            vnm_optim_set_param_steps(st->optim, i, sc->param_steps[i]);
        vnm_optim_set_steps(st->optim, sc->optim_steps);
        if (sc->has_loss_scale) *st->loss_scaler = sc->loss_scaler;
    }
    vnm_ctx_rng_set(st->ctx, sc->rng);
    st->progress = sc->progress;
    st->data_pos = (vnm_sampler_pos){sc->data_epoch, sc->data_index};
    st->data_seed = sc->data_seed;
    return VNM_OK;
}

vnm_status vnm_state_load(const char *path, vnm_run_state *st, char **recipe, char *err,
                          size_t err_len)
{
    if (recipe) *recipe = NULL;
    state_plan p;
    bool with_optim = st && st->optim;
    vnm_status rc = plan_build(st, with_optim, "state load", &p, err, err_len);
    if (rc != VNM_OK) return rc;
    vnm_ckpt_reader *r = vnm_ckpt_open(path, err, err_len);
    if (!r) {
        plan_free(&p);
        return VNM_ERR_INPUT;
    }
    state_scalars sc = {0};
    char *text = NULL;
    rc = check_listing(r, st, with_optim, &p, err, err_len);
    for (int i = 0; i < st->n_sparse && rc == VNM_OK; i++)
        rc = check_sparse_attrs(r, &st->sparse[i], err, err_len);
    if (rc == VNM_OK) rc = read_entries(r, &p, err, err_len);
    for (int i = 0; i < st->n_sparse && rc == VNM_OK; i++)
        rc = validate_sparse(r, &st->sparse[i], &p.e[p.sparse0 + 4 * i], err, err_len);
    if (rc == VNM_OK && with_optim) rc = read_optim(r, st, &p, &sc, err, err_len);
    if (rc == VNM_OK) rc = read_scalars(r, &sc, err, err_len);
    if (rc == VNM_OK) rc = vnm_ckpt_get_str(r, "/", "recipe", &text, err, err_len);
    if (rc == VNM_OK) rc = apply(st, &p, &sc, err, err_len);
    if (rc == VNM_OK && recipe) {
        *recipe = text;
        text = NULL;
    }
    free(text);
    free(sc.param_steps);
    vnm_ckpt_close(r);
    plan_free(&p);
    return rc;
}
