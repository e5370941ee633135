/* train/safetensors.h — safetensors weight files (ECOSYSTEM.md §3): u64 little-endian header
 * length N, N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end]},
 * "__metadata__": {str: str}}, then the raw row-major little-endian data. Reads single files and
 * sharded sets (`*.index.json` with a weight_map), validating every header field against the file
 * before any data is touched; writes single files byte-identical to the Python library's. */
#ifndef VNM_SAFETENSORS_H
#define VNM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../autograd/autograd.h"

/* Headers above this are refused, as the Python library does (hostile length fields). */
#define VNM_SAFETENSORS_MAX_HEADER 100000000ull

typedef struct {
    const char *name;
    vnm_dtype dtype;
    int ndim;
    int64_t shape[VNM_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* byte offsets from the start of the data section of `file` */
    const char *file;    /* path of the file holding the data */
} vnm_safetensors_tensor;

typedef struct vnm_safetensors vnm_safetensors;

/* Opens one .safetensors file, or a sharded set when path ends in ".index.json" (shard files
 * are looked up in the index's directory). Errors name the file, the tensor or key, and what was
 * wrong. */
vnm_status vnm_safetensors_open(const char *path, vnm_safetensors **out, char *err, size_t err_len);
void vnm_safetensors_close(vnm_safetensors *st);

/* Tensors in header order (shard by shard, in index order, for sharded sets). */
size_t vnm_safetensors_count(const vnm_safetensors *st);
const vnm_safetensors_tensor *vnm_safetensors_tensor_at(const vnm_safetensors *st, size_t i);
const vnm_safetensors_tensor *vnm_safetensors_find(const vnm_safetensors *st, const char *name);
/* A "__metadata__" value (of the index's "metadata" for sharded sets), NULL when absent. */
const char *vnm_safetensors_metadata(const vnm_safetensors *st, const char *key);

/* Raw bytes of one tensor; buf_bytes must equal its byte size. */
vnm_status vnm_safetensors_read(const vnm_safetensors *st, const char *name, void *buf,
                                size_t buf_bytes, char *err, size_t err_len);
/* One tensor converted to f32 (bf16/f16 exactly, integers rounded); n must equal its numel. */
vnm_status vnm_safetensors_read_f32(const vnm_safetensors *st, const char *name, float *buf,
                                    size_t n, char *err, size_t err_len);

/* One tensor to write; data holds numel elements of dtype, row-major little-endian. */
typedef struct {
    const char *name;
    vnm_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data;
} vnm_safetensors_entry;

/* Writes a single file atomically (to "<path>.tmp", then rename). Tensors are laid out in the
 * Python library's order (larger dtypes first, then by name) and metadata keys sorted, so the file
 * is byte-identical to safetensors.save_file of the same tensors. meta holds n_meta (key, value)
 * pairs as meta[2i], meta[2i+1]. */
vnm_status vnm_safetensors_write(const char *path, const vnm_safetensors_entry *tensors, size_t n,
                                 const char *const *meta, size_t n_meta, char *err, size_t err_len);

/* Writes a sharded set: "<base>-0000k-of-0000N.safetensors" files next to index_path (which must
 * be "<base>.safetensors.index.json"), each a contiguous run of `tensors` (in the given order) of
 * at most max_shard_bytes of data (a larger tensor gets a shard of its own), every shard with the
 * metadata, then the index {"metadata": {"total_size": bytes}, "weight_map": {name: file}}. */
vnm_status vnm_safetensors_write_sharded(const char *index_path,
                                         const vnm_safetensors_entry *tensors, size_t n,
                                         const char *const *meta, size_t n_meta,
                                         uint64_t max_shard_bytes, char *err, size_t err_len);

#endif
