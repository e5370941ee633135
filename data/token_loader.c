/* data/token_loader.c — the packed-sequence loader: a token stream cut into windows of L inputs
 * (targets shifted by one token), visited per epoch in the shared sampler's order, handed out as
 * int32 batches. A batch is a function of (epoch, index) only, so resuming is bit-exact. */
#include <stdlib.h>
#include <string.h>

#include "data.h"

struct vnm_token_loader {
    const vnm_token_dataset *ds;
    vnm_token_loader_config cfg;
    int64_t windows;    /* n */
    int64_t *perm;      /* [n] order of perm_epoch; only with shuffle */
    int64_t perm_epoch;
    int32_t *inputs;    // [B, L]
    int32_t *targets;   // [B, L]
    vnm_sampler_pos pos; /* where the next batch starts */
};

vnm_token_loader_config vnm_token_loader_config_default(void)
{
    return (vnm_token_loader_config){.seq_len = 256, .batch = 32, .seed = 0, .shuffle = true,
                                     .drop_last = false};
}

vnm_status vnm_token_loader_create(const vnm_token_dataset *ds, const vnm_token_loader_config *cfg,
                                   vnm_token_loader **out, char *err, size_t err_len)
{
    if (!out) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "token loader: out is NULL");
    *out = NULL;
    if (!ds || !cfg || !ds->shard)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "token loader: NULL or unopened dataset, or NULL config");
    if (cfg->seq_len < 1)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "token loader: sequence length %lld, expected ≥ 1",
                          (long long)cfg->seq_len);
    if (cfg->batch < 1)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "token loader: batch %lld, expected ≥ 1",
                          (long long)cfg->batch);
    int64_t L = cfg->seq_len, n = ds->n > 0 ? (ds->n - 1) / L : 0;
    if (n < 1)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "token loader: split '%s' of '%s' holds %lld tokens, too few for one "
                          "window of sequence length %lld: expected at least %lld tokens",
                          ds->split, ds->dir, (long long)ds->n, (long long)L, (long long)(L + 1));
    if (cfg->drop_last && cfg->batch > n)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "token loader: batch %lld with drop_last exceeds the %lld windows of "
                          "split '%s' of '%s' (%lld tokens, sequence length %lld): no batch per "
                          "epoch",
                          (long long)cfg->batch, (long long)n, ds->split, ds->dir,
                          (long long)ds->n, (long long)L);

    vnm_token_loader *l = calloc(1, sizeof *l);
    if (!l) return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "token loader: out of memory");
    l->ds = ds;
    l->cfg = *cfg;
    l->windows = n;
    l->perm_epoch = -1;
    /* batch buffers of at most n windows: an eval batch larger than the split costs nothing */
    int64_t rows = cfg->batch < n ? cfg->batch : n;
    l->inputs = malloc((size_t)(rows * L) * sizeof *l->inputs);
    l->targets = malloc((size_t)(rows * L) * sizeof *l->targets);
    if (cfg->shuffle) l->perm = malloc((size_t)n * sizeof *l->perm);
    if (!l->inputs || !l->targets || (cfg->shuffle && !l->perm)) {
        vnm_token_loader_free(l);
        return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME,
                          "token loader: out of memory for batch %lld × %lld tokens and %lld "
                          "windows",
                          (long long)cfg->batch, (long long)L, (long long)n);
    }
    *out = l;
    return VNM_OK;
}

void vnm_token_loader_free(vnm_token_loader *l)
{
    if (!l) return;
    free(l->perm);
    free(l->inputs);
    free(l->targets);
    free(l);
}

int64_t vnm_token_loader_windows(const vnm_token_loader *l) { return l->windows; }

int64_t vnm_token_loader_batches_per_epoch(const vnm_token_loader *l)
{
    return vnm_sampler_batches_per_epoch(l->windows, l->cfg.batch, l->cfg.drop_last);
}

vnm_status vnm_token_loader_next(vnm_token_loader *l, vnm_token_batch *out, char *err,
                                 size_t err_len)
{
    if (!l || !out)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "token_loader_next: NULL loader or batch");
    vnm_sampler_pos p = l->pos;
    const vnm_token_loader_config *cfg = &l->cfg;
    if (cfg->shuffle && p.epoch != l->perm_epoch) {
        vnm_shuffle_order(cfg->seed, p.epoch, l->windows, l->perm);
        l->perm_epoch = p.epoch;
    }
    int64_t L = cfg->seq_len;
    int64_t size = l->windows - p.index < cfg->batch ? l->windows - p.index : cfg->batch;
    for (int64_t b = 0; b < size; b++) {
        int64_t w = cfg->shuffle ? l->perm[p.index + b] : p.index + b;
        vnm_status st = vnm_token_dataset_read(l->ds, w * L, L, l->inputs + b * L, err, err_len);
        if (!st) st = vnm_token_dataset_read(l->ds, w * L + 1, L, l->targets + b * L, err, err_len);
        if (st) return st;
    }
    vnm_sampler_pos next = vnm_sampler_normalise((vnm_sampler_pos){p.epoch, p.index + size},
                                                 l->windows, cfg->batch, cfg->drop_last);
    *out = (vnm_token_batch){.size = size, .seq_len = L, .inputs = l->inputs,
                             .targets = l->targets, .pos = p,
                             .last_in_epoch = next.epoch != p.epoch};
    l->pos = next;
    return VNM_OK;
}

vnm_sampler_pos vnm_token_loader_get_pos(const vnm_token_loader *l) { return l->pos; }

vnm_status vnm_token_loader_set_pos(vnm_token_loader *l, vnm_sampler_pos pos, char *err,
                                    size_t err_len)
{
    if (!l) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "token_loader_set_pos: NULL loader");
    return vnm_sampler_seek("token_loader_set_pos", pos, l->windows, l->cfg.batch,
                            l->cfg.drop_last, &l->pos, err, err_len);
}
