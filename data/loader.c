/* data/loader.c — the image batch loader: crop/flip augmentation, normalisation to f32, and the
 * prefetch thread filling a ring of two batch buffers; the epoch order and the sampler position
 * come from data/sampler.c. A batch is computed by one function of (epoch, index) whichever thread
 * runs it, which is what makes prefetching and resuming bit-exact. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

/* Counter tag separating the augmentation stream from the shuffle stream under the same key:
 * dataset indices and shuffle positions stay far below 2^63. */
#define AUGMENT_TAG ((uint64_t)1 << 63)

typedef struct {
    float *images;   // [B, C, H, W]
    int32_t *labels; // [B]
    int64_t size;
    vnm_sampler_pos pos;
    bool last;
} batch_slot;

struct vnm_loader {
    const vnm_dataset *ds;
    vnm_loader_config cfg;
    int64_t sample; /* C·H·W */
    float lut[256]; /* pixel value → normalised f32, so every path normalises identically */
    batch_slot ring[2];
    vnm_sampler_pos pos; /* consumer side: where the next handed-out batch starts */

    /* Producer side: only the prefetch thread touches these while it runs, else next(). */
    vnm_sampler_pos prod_pos;
    int64_t *perm; /* [n] order of perm_epoch */
    int64_t perm_epoch;
    uint8_t *scratch; /* [C, H, W] augmented sample */

    /* Ring protocol: slots in use = ready (produced - taken) + the one the consumer holds. */
    bool running;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t produced, taken;
    bool holding, stop;
};

vnm_loader_config vnm_loader_config_default(void)
{
    return (vnm_loader_config){.batch = 64, .seed = 0, .shuffle = true, .drop_last = false,
                               .augment = true, .pad = 4, .mean = VNM_FASHION_MNIST_MEAN,
                               .std = VNM_FASHION_MNIST_STD, .prefetch = true};
}

void vnm_augment_crop_flip(const uint8_t *src, uint8_t *dst, int C, int H, int W, int pad, int dy,
                           int dx, bool flip)
{
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++) {
            int sy = y + dy - pad;
            for (int x = 0; x < W; x++) {
                int sx = (flip ? W - 1 - x : x) + dx - pad;
                bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
                dst[((size_t)c * H + y) * W + x] = inside ? src[((size_t)c * H + sy) * W + sx] : 0;
            }
        }
}

static void epoch_order(const vnm_loader *l, int64_t epoch, int64_t *perm)
{
    if (l->cfg.shuffle)
        vnm_shuffle_order(l->cfg.seed, epoch, l->ds->n, perm);
    else
        for (int64_t i = 0; i < l->ds->n; i++) perm[i] = i;
}

void vnm_loader_epoch_order(const vnm_loader *l, int64_t epoch, int64_t *perm)
{
    epoch_order(l, epoch, perm);
}

static vnm_sampler_pos normalise(const vnm_loader *l, vnm_sampler_pos p)
{
    return vnm_sampler_normalise(p, l->ds->n, l->cfg.batch, l->cfg.drop_last);
}

/* The batch starting at the (normalised) position p. */
static void fill_batch(vnm_loader *l, batch_slot *s, vnm_sampler_pos p)
{
    const vnm_dataset *ds = l->ds;
    const vnm_loader_config *cfg = &l->cfg;
    if (p.epoch != l->perm_epoch) {
        epoch_order(l, p.epoch, l->perm);
        l->perm_epoch = p.epoch;
    }
    int64_t size = ds->n - p.index < cfg->batch ? ds->n - p.index : cfg->batch;
    for (int64_t b = 0; b < size; b++) {
        int64_t idx = l->perm[p.index + b];
        const uint8_t *px = ds->images + idx * l->sample; // [C, H, W]
        if (cfg->augment) {
            uint32_t r[4];
            vnm_philox4x32(cfg->seed, (uint64_t)idx | AUGMENT_TAG, (uint64_t)p.epoch, r);
            uint32_t span = 2 * (uint32_t)cfg->pad + 1;
            vnm_augment_crop_flip(px, l->scratch, ds->channels, ds->height, ds->width, cfg->pad,
                                  (int)(r[0] % span), (int)(r[1] % span),
                                  vnm_philox_uniform(r[2]) < 0.5f);
            px = l->scratch;
        }
        float *dst = s->images + b * l->sample;
        for (int64_t k = 0; k < l->sample; k++) dst[k] = l->lut[px[k]];
        s->labels[b] = ds->labels[idx];
    }
    s->size = size;
    s->pos = p;
    s->last = normalise(l, (vnm_sampler_pos){p.epoch, p.index + size}).epoch != p.epoch;
}

static void *prefetch_main(void *arg)
{
    vnm_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->produced - l->taken + l->holding >= 2)
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        batch_slot *s = &l->ring[l->produced % 2];
        pthread_mutex_unlock(&l->mu);
        fill_batch(l, s, l->prod_pos);
        l->prod_pos = normalise(l, (vnm_sampler_pos){s->pos.epoch, s->pos.index + s->size});
        pthread_mutex_lock(&l->mu);
        l->produced++;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void prefetch_stop(vnm_loader *l)
{
    if (!l->running) return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->running = false;
}

/* Starts producing from l->pos, forgetting whatever the ring held. */
static vnm_status prefetch_start(vnm_loader *l, char *err, size_t err_len)
{
    l->prod_pos = l->pos;
    l->produced = l->taken = 0;
    l->holding = l->stop = false;
    if (pthread_create(&l->thread, NULL, prefetch_main, l) != 0) {
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader: cannot start the prefetch thread");
        return VNM_ERR_RUNTIME;
    }
    l->running = true;
    return VNM_OK;
}

vnm_status vnm_loader_create(const vnm_dataset *ds, const vnm_loader_config *cfg,
                             vnm_loader **out, char *err, size_t err_len)
{
    if (!out) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader: out is NULL");
    *out = NULL;
    if (!ds || !cfg) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader: NULL dataset or config");
    if (ds->n < 1 || ds->channels < 1 || ds->height < 1 || ds->width < 1 || !ds->images ||
        !ds->labels)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                             "loader: empty dataset (n %lld, [%d, %d, %d]), expected n ≥ 1 and "
                             "positive C, H, W",
                             (long long)ds->n, ds->channels, ds->height, ds->width);
    if (cfg->batch < 1)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader: batch %lld, expected ≥ 1",
                             (long long)cfg->batch);
    if (cfg->drop_last && cfg->batch > ds->n)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                             "loader: batch %lld with drop_last exceeds the %lld samples: no "
                             "batch per epoch",
                             (long long)cfg->batch, (long long)ds->n);
    /* the pad only matters with augment; beyond the image size a crop could be all padding */
    if (cfg->augment && (cfg->pad < 0 || cfg->pad > ds->height || cfg->pad > ds->width))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader: pad %d, expected 0..%d (image %d×%d)",
                             cfg->pad, ds->height < ds->width ? ds->height : ds->width,
                             ds->height, ds->width);
    if (!isfinite(cfg->mean) || !isfinite(cfg->std) || !(cfg->std > 0.0f))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader: mean %g, std %g: expected finite, std > 0",
                             (double)cfg->mean, (double)cfg->std);

    vnm_loader *l = calloc(1, sizeof *l);
    if (!l) {
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader: out of memory");
        return VNM_ERR_RUNTIME;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->ds = ds;
    l->cfg = *cfg;
    l->sample = (int64_t)ds->channels * ds->height * ds->width;
    for (int v = 0; v < 256; v++) l->lut[v] = ((float)v / 255.0f - cfg->mean) / cfg->std;
    l->perm = malloc((size_t)ds->n * sizeof *l->perm);
    l->perm_epoch = -1;
    l->scratch = malloc((size_t)l->sample);
    bool ok = l->perm && l->scratch;
    for (int k = 0; k < 2; k++) {
        l->ring[k].images = malloc((size_t)(cfg->batch * l->sample) * sizeof(float));
        l->ring[k].labels = malloc((size_t)cfg->batch * sizeof(int32_t));
        ok = ok && l->ring[k].images && l->ring[k].labels;
    }
    if (!ok) {
        vnm_loader_free(l);
        vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader: out of memory for batch %lld of [%d, %d, %d]",
                      (long long)cfg->batch, ds->channels, ds->height, ds->width);
        return VNM_ERR_RUNTIME;
    }
    if (cfg->prefetch) {
        vnm_status st = prefetch_start(l, err, err_len);
        if (st) {
            vnm_loader_free(l);
            return st;
        }
    }
    *out = l;
    return VNM_OK;
}

void vnm_loader_free(vnm_loader *l)
{
    if (!l) return;
    prefetch_stop(l);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    for (int k = 0; k < 2; k++) {
        free(l->ring[k].images);
        free(l->ring[k].labels);
    }
    free(l->perm);
    free(l->scratch);
    free(l);
}

int64_t vnm_loader_batches_per_epoch(const vnm_loader *l)
{
    return vnm_sampler_batches_per_epoch(l->ds->n, l->cfg.batch, l->cfg.drop_last);
}

vnm_status vnm_loader_next(vnm_loader *l, vnm_batch *out, char *err, size_t err_len)
{
    if (!l || !out) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader_next: NULL loader or batch");
    const batch_slot *s;
    if (l->running) {
        pthread_mutex_lock(&l->mu);
        l->holding = false; /* the previous batch's slot goes back to the producer */
        pthread_cond_broadcast(&l->cv);
        while (l->produced == l->taken) pthread_cond_wait(&l->cv, &l->mu);
        s = &l->ring[l->taken % 2];
        l->taken++;
        l->holding = true;
        pthread_mutex_unlock(&l->mu);
    } else {
        fill_batch(l, &l->ring[0], l->pos);
        s = &l->ring[0];
    }
    *out = (vnm_batch){.size = s->size, .images = s->images, .labels = s->labels, .pos = s->pos,
                       .last_in_epoch = s->last};
    l->pos = normalise(l, (vnm_sampler_pos){s->pos.epoch, s->pos.index + s->size});
    return VNM_OK;
}

vnm_sampler_pos vnm_loader_get_pos(const vnm_loader *l) { return l->pos; }

vnm_status vnm_loader_set_pos(vnm_loader *l, vnm_sampler_pos pos, char *err, size_t err_len)
{
    if (!l) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "loader_set_pos: NULL loader");
    vnm_sampler_pos to;
    vnm_status st = vnm_sampler_seek("loader_set_pos", pos, l->ds->n, l->cfg.batch,
                                     l->cfg.drop_last, &to, err, err_len);
    if (st) return st;
    bool restart = l->running;
    prefetch_stop(l);
    l->pos = to;
    if (restart) {
        st = prefetch_start(l, err, err_len);
        /* without the thread next() computes the same batches itself */
        if (st) l->cfg.prefetch = false;
        return st;
    }
    return VNM_OK;
}
