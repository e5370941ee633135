/* data/data.h — the public interface of the data module: u8 image datasets read from idx files
 * (Fashion-MNIST), augmentation (random crop with zero padding, horizontal flip), and a
 * deterministic batch loader with an optional background prefetch thread.
 *
 * Conventions: functions that can fail on user input return a status and write a message naming
 * the file or argument and what was expected into err (err may be NULL). The loader hands out host
 * f32 buffers; it does not depend on a vnm_ctx (the trainer copies batches into tensors).
 *
 * Determinism: the order of an epoch is a Fisher–Yates shuffle driven by Philox keyed by the seed
 * with counter (epoch, i); the augmentation of a sample is drawn from Philox keyed by the seed with
 * counter (epoch, dataset index). A batch is therefore a function of (dataset, config, epoch,
 * index) only: resuming from a saved position, or turning the prefetch thread on or off, gives
 * bit-identical batches.
 */
#ifndef VNM_DATA_H
#define VNM_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../autograd/autograd.h"

/* Where the Debian package fashion-mnist installs the data set. */
#define VNM_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define VNM_FASHION_MNIST_MEAN 0.2860f
#define VNM_FASHION_MNIST_STD 0.3530f

/* ---- datasets ---- */
typedef struct {
    int64_t n;
    int channels, height, width;
    int classes;
    uint8_t *images; /* [n, channels, height, width] */
    uint8_t *labels; /* [n], each < classes */
} vnm_dataset;

/* One u8 idx file (gzip-compressed or plain): the magic must be 0x0000080<ndim>, every dimension
 * positive, and the file must hold exactly the announced bytes. *data is malloc'd [Π dims]. */
vnm_status vnm_idx_read(const char *path, int ndim, int64_t *dims, uint8_t **data, char *err,
                        size_t err_len);
/* An image file (magic 0x803, [N, rows, cols]) and a label file (magic 0x801, [N]) with the same
 * N and labels < classes. */
vnm_status vnm_dataset_load_idx(const char *images_path, const char *labels_path, int classes,
                                vnm_dataset *out, char *err, size_t err_len);
/* Fashion-MNIST from dir (NULL: VNM_FASHION_MNIST_DIR): train-*-idx?-ubyte.gz when train, else
 * t10k-*-idx?-ubyte.gz. */
vnm_status vnm_fashion_mnist_load(const char *dir, bool train, vnm_dataset *out, char *err,
                                  size_t err_len);
void vnm_dataset_free(vnm_dataset *ds); /* frees the arrays and zeroes *ds */

/* ---- augmentation ---- */
/* dst[C, H, W] = src[C, H, W] zero-padded by pad on every side, cropped back to H×W at offset
 * (dy, dx) ∈ [0, 2·pad]², then mirrored left-right when flip. (dy, dx) = (pad, pad) is the
 * identity crop. */
void vnm_augment_crop_flip(const uint8_t *src, uint8_t *dst, int C, int H, int W, int pad, int dy,
                           int dx, bool flip);

/* ---- loader ---- */
typedef struct {
    int64_t batch;  /* B */
    uint64_t seed;  /* shuffle and augmentation */
    bool shuffle;   /* false: dataset order every epoch */
    bool drop_last; /* drop the last partial batch of each epoch */
    bool augment;   /* random crop (pad) + horizontal flip with p = 0.5; training only */
    int pad;        /* crop padding in pixels; 0 with augment: flips only */
    float mean, std; /* x = (pixel/255 - mean) / std; padding pixels are 0 before normalising */
    bool prefetch;  /* prepare the next batch on a background thread */
} vnm_loader_config;

/* Fashion-MNIST training defaults: B = 64, shuffle, augment with pad 4, no drop_last, prefetch. */
vnm_loader_config vnm_loader_config_default(void);

/* Where the next batch starts: the epoch and the position in that epoch's order. Saved in
 * checkpoints (/data/) and restored with vnm_loader_set_pos. */
typedef struct {
    int64_t epoch;
    int64_t index;
} vnm_sampler_pos;

typedef struct {
    int64_t size;          /* B, or less for the last batch of an epoch without drop_last */
    const float *images;   /* [size, C, H, W] */
    const int32_t *labels; /* [size] */
    vnm_sampler_pos pos;   /* where this batch started */
    bool last_in_epoch;    /* the next batch belongs to the next epoch */
} vnm_batch;

typedef struct vnm_loader vnm_loader;

/* The dataset must outlive the loader and stay unchanged. Starts at {0, 0}. */
vnm_status vnm_loader_create(const vnm_dataset *ds, const vnm_loader_config *cfg,
                             vnm_loader **out, char *err, size_t err_len);
/* Joins the prefetch thread and frees everything; NULL is allowed. */
void vnm_loader_free(vnm_loader *l);
int64_t vnm_loader_batches_per_epoch(const vnm_loader *l);
/* The next batch, in order across epochs (the loader never runs dry). Its buffers stay valid until
 * the next call of vnm_loader_next, vnm_loader_set_pos or vnm_loader_free. */
vnm_status vnm_loader_next(vnm_loader *l, vnm_batch *out, char *err, size_t err_len);
vnm_sampler_pos vnm_loader_get_pos(const vnm_loader *l); /* of the batch next() returns next */
/* index ∈ [0, n]; a position past the last batch of an epoch moves to the start of the next. */
vnm_status vnm_loader_set_pos(vnm_loader *l, vnm_sampler_pos pos, char *err, size_t err_len);
/* The order of an epoch: perm[n], a permutation of 0..n-1 (identity without shuffle). */
void vnm_loader_epoch_order(const vnm_loader *l, int64_t epoch, int64_t *perm);

#endif
