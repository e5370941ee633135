/* data/data.h — the public interface of the data module: u8 image datasets read from idx files
 * (Fashion-MNIST), augmentation (random crop with zero padding, horizontal flip), and a
 * deterministic batch loader with an optional background prefetch thread; token shards for
 * language models, the packed-sequence loader over them, and a byte-level tokenizer.
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

/* ---- sampler: epoch orders and positions, one definition for every loader ---- */
/* perm[n] = a Fisher–Yates shuffle of 0..n-1 whose step i draws from Philox keyed by seed with
 * counter (i, epoch). */
void vnm_shuffle_order(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);
/* Batches of an epoch of n samples: the last one is partial unless drop_last drops it. */
int64_t vnm_sampler_batches_per_epoch(int64_t n, int64_t batch, bool drop_last);
/* p itself when a batch (a full one, with drop_last) starts there, else the next epoch's start. */
vnm_sampler_pos vnm_sampler_normalise(vnm_sampler_pos p, int64_t n, int64_t batch, bool drop_last);
/* Checks a position handed to a loader (epoch ≥ 0, index in [0, n]) and writes it normalised
 * into *out; who names the caller in the message. */
vnm_status vnm_sampler_seek(const char *who, vnm_sampler_pos pos, int64_t n, int64_t batch,
                            bool drop_last, vnm_sampler_pos *out, char *err, size_t err_len);

/* ---- token shards ----
 * A shard file holds one piece of a token stream. Little-endian throughout:
 *
 *   offset  size  field
 *        0     8  magic "VNMTOKEN"
 *        8     4  u32 version = 1
 *       12     4  u32 token_bytes: 2 (u16 tokens) or 4 (u32 tokens)
 *       16     8  u64 count: number of tokens
 *       24     4  u32 vocab_size: every token is < vocab_size (at most 2^31: ids become int32)
 *       28     4  u32 eos_id: the end-of-document token, 0xFFFFFFFF when there is none
 *       32        count · token_bytes bytes of tokens, and nothing after them
 *
 * Writers pick u16 when vocab_size ≤ 65536, else u32 (readers accept either). A data set is a
 * directory; its split S ("train", "val") is the files S-00000.tok, S-00001.tok, … numbered without
 * gaps, whose concatenation in that order is the split's token stream. All shards of a split
 * agree on vocab_size and eos_id. tools/tokenize_text.py writes the same files from Python. */
#define VNM_TOKENS_MAGIC "VNMTOKEN"
#define VNM_TOKENS_VERSION 1u
#define VNM_TOKENS_HEADER_BYTES 32
#define VNM_TOKENS_NO_EOS 0xFFFFFFFFu
#define VNM_TOKENS_MAX_VOCAB ((uint32_t)1 << 31)

/* One shard, memory-mapped read-only (data sets are GBs; pages load on demand). */
typedef struct {
    char *path;
    int token_bytes; /* 2 or 4 */
    int64_t count;
    uint32_t vocab_size;
    uint32_t eos_id;
    const uint8_t *tokens; /* count · token_bytes bytes of little-endian tokens, in the mapping */
    void *map;
    size_t map_bytes;
} vnm_token_shard;

/* Maps and validates the whole file: magic, version, token_bytes, vocab_size, eos_id, file size ==
 * 32 + count · token_bytes, and every token < vocab_size. */
vnm_status vnm_token_shard_open(const char *path, vnm_token_shard *out, char *err,
                                size_t err_len);
void vnm_token_shard_close(vnm_token_shard *s); /* unmaps and zeroes *s; NULL is allowed */
uint32_t vnm_token_shard_at(const vnm_token_shard *s, int64_t i); /* i ∈ [0, count) */
/* Writes tokens[count] to path atomically: path + ".tmp" first, flushed to disk, then renamed. */
vnm_status vnm_token_shard_write(const char *path, const uint32_t *tokens, int64_t count,
                                 uint32_t vocab_size, uint32_t eos_id, char *err, size_t err_len);

/* Writes one split as shards of at most shard_tokens tokens each (dir/S-00000.tok, …), streaming:
 * tokens are appended as they come and a shard is renamed into place when full. A split that gets
 * no token gets no shard. The directory must exist. */
typedef struct vnm_token_writer vnm_token_writer;
vnm_status vnm_token_writer_open(const char *dir, const char *split, uint32_t vocab_size,
                                 uint32_t eos_id, int64_t shard_tokens, vnm_token_writer **out,
                                 char *err, size_t err_len);
/* Every token must be < vocab_size. After a failure the writer can only be aborted. */
vnm_status vnm_token_writer_append(vnm_token_writer *w, const uint32_t *tokens, int64_t n,
                                   char *err, size_t err_len);
/* Completes the last shard, then removes the split's shards numbered past the ones written (left
 * by an earlier, longer run), so the directory holds exactly this stream. Frees w in every case;
 * tokens and shards (either may be NULL) receive what was written. */
vnm_status vnm_token_writer_close(vnm_token_writer *w, int64_t *tokens, int *shards, char *err,
                                  size_t err_len);
/* Frees w, dropping the shard in progress; shards already completed stay. NULL is allowed. */
void vnm_token_writer_abort(vnm_token_writer *w);

/* ---- token datasets ---- */
typedef struct {
    char *dir, *split;
    int64_t n; /* N: tokens in the split's stream */
    uint32_t vocab_size;
    uint32_t eos_id;
    int shards;
    vnm_token_shard *shard; /* [shards] in stream order */
    int64_t *start;         /* [shards + 1]: shard s holds stream[start[s] … start[s+1] - 1] */
} vnm_token_dataset;

/* Opens every shard of the split (kept mapped until close). Errors: no dir/split-00000.tok, a
 * gap in the numbering, an invalid shard, shards disagreeing on vocab_size or eos_id. */
vnm_status vnm_token_dataset_open(const char *dir, const char *split, vnm_token_dataset *out,
                                  char *err, size_t err_len);
void vnm_token_dataset_close(vnm_token_dataset *ds); /* unmaps, frees and zeroes *ds */
/* dst[n] = stream[start … start + n - 1] as int32, across shard boundaries. */
vnm_status vnm_token_dataset_read(const vnm_token_dataset *ds, int64_t start, int64_t n,
                                  int32_t *dst, char *err, size_t err_len);

/* ---- packed-sequence loader ----
 * The stream of N tokens is cut into n = floor((N - 1) / L) windows of L inputs; window w holds
 * inputs stream[w·L … w·L + L - 1] and targets stream[w·L + 1 … w·L + L], the next token of each
 * input. The last N - n·L - 1 tokens (< L) only serve as targets or are not used. Documents run
 * into each other across windows; the EOS tokens between them mark the boundaries.
 *
 * Windows play the role of the image loader's samples, with the same contract: an epoch visits
 * them in the order vnm_shuffle_order(seed, epoch, n) (shuffle) or 0..n-1 (no shuffle, for
 * evaluation); a batch is a function of (dataset, config, epoch, index) only, so resuming from a
 * saved vnm_sampler_pos gives bit-identical batches; the loader never runs dry. Without drop_last
 * the last batch of an epoch holds the n mod B windows left (a split with fewer than B windows
 * gives one smaller batch per epoch); with drop_last those windows are skipped, and a split with
 * fewer than B windows is an error. There is no prefetch thread: a batch is two copies of B·L
 * tokens out of the mapped shards. */
typedef struct {
    int64_t seq_len; /* L */
    int64_t batch;   /* B */
    uint64_t seed;   /* shuffle */
    bool shuffle;    /* false: windows in stream order every epoch */
    bool drop_last;  /* drop the last partial batch of each epoch */
} vnm_token_loader_config;

/* Training defaults: L = 256, B = 32, seed 0, shuffle, no drop_last. */
vnm_token_loader_config vnm_token_loader_config_default(void);

typedef struct {
    int64_t size;           /* sequences: B, or fewer for the last batch of an epoch */
    int64_t seq_len;        /* L */
    const int32_t *inputs;  /* [size, L] */
    const int32_t *targets; /* [size, L] */
    vnm_sampler_pos pos;    /* where this batch started (index counts windows) */
    bool last_in_epoch;     /* the next batch belongs to the next epoch */
} vnm_token_batch;

typedef struct vnm_token_loader vnm_token_loader;

/* The dataset must outlive the loader and stay unchanged. Starts at {0, 0}. */
vnm_status vnm_token_loader_create(const vnm_token_dataset *ds, const vnm_token_loader_config *cfg,
                                   vnm_token_loader **out, char *err, size_t err_len);
void vnm_token_loader_free(vnm_token_loader *l); /* NULL is allowed */
int64_t vnm_token_loader_windows(const vnm_token_loader *l); /* n */
int64_t vnm_token_loader_batches_per_epoch(const vnm_token_loader *l);
/* The next batch; its buffers stay valid until the next call of next, set_pos or free. */
vnm_status vnm_token_loader_next(vnm_token_loader *l, vnm_token_batch *out, char *err,
                                 size_t err_len);
vnm_sampler_pos vnm_token_loader_get_pos(const vnm_token_loader *l); /* of the next batch */
/* index ∈ [0, n]; a position past the last batch of an epoch moves to the start of the next. */
vnm_status vnm_token_loader_set_pos(vnm_token_loader *l, vnm_sampler_pos pos, char *err,
                                    size_t err_len);

/* ---- byte-level tokenizer ----
 * Ids 0..255 are the bytes themselves, then BOS and EOS: no model file, any input round-trips.
 * A document is encoded as its bytes followed by EOS (no BOS). */
#define VNM_BYTE_VOCAB 258
#define VNM_BYTE_BOS 256
#define VNM_BYTE_EOS 257

/* ids of text[len] into ids[len + end_of_document]; with end_of_document the EOS follows, so a
 * document can be encoded in pieces, the last one ending it. Returns the ids written. */
size_t vnm_byte_encode(const void *text, size_t len, bool end_of_document, uint32_t *ids);
/* The text of ids[n] into text[cap] (NUL-terminated when cap > 0, cut to fit like snprintf).
 * BOS, EOS and ids outside the vocabulary are dropped, or shown as "<bos>", "<eos>", "<unk>" with
 * show_special. Returns the length of the whole text, without the NUL. */
size_t vnm_byte_decode(const int32_t *ids, size_t n, bool show_special, char *text, size_t cap);

#endif
