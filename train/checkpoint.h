/* train/checkpoint.h — HDF5 checkpoint files: the storage layer the trainer saves and resumes with.
 *
 * Owns: the on-disk layout of DESIGN.md "Checkpoint" at the level of files, not of models: one file
 * per save, `<run>/ckpt/step_%08lld.h5`, written as `.tmp`, fsync'd, renamed, then the `latest`
 * pointer (a text file holding the file name) replaced atomically, then old files pruned to keep_last.
 * A kill at any moment leaves the previous complete checkpoint loadable. Root attributes: format
 * ("vnm-checkpoint"), format_version, step, epoch, stage_index, stage_step, created (ISO 8601 UTC),
 * program_version, recipe. Every dataset carries a string attribute `dtype` ("f32", "bf16", ...);
 * bf16 is stored as uint16 so h5py/numpy read the raw bits.
 *
 * Errors: every function returns a vnm_status and writes a message naming the file and the HDF5
 * object into the caller's buffer (err, err_len). HDF5's own error-stack printing is switched off
 * process-wide by the first call into this module; its innermost message is quoted in ours instead.
 * One writer per checkpoint directory at a time (rank 0): vnm_ckpt_begin deletes stale .tmp files.
 */
#ifndef VNM_CHECKPOINT_H
#define VNM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "../autograd/autograd.h"

#define VNM_CKPT_FORMAT "vnm-checkpoint"
#define VNM_CKPT_FORMAT_VERSION 1
#define VNM_CKPT_MAX_DIMS 8

typedef enum {
    VNM_CKPT_F32,
    VNM_CKPT_BF16, /* uint16 bits on disk, attribute dtype = "bf16" */
    VNM_CKPT_U8,
    VNM_CKPT_I32,
    VNM_CKPT_I64,
    VNM_CKPT_U64,
    VNM_CKPT_F64,
} vnm_ckpt_dtype;

/* "f32", "bf16", ... as stored in the dtype attribute. */
const char *vnm_ckpt_dtype_name(vnm_ckpt_dtype dt);

/* Root attributes besides format, format_version, step, created and program_version, which the
 * writer fills in itself. */
typedef struct {
    int64_t epoch;
    int64_t stage_index;
    int64_t stage_step; /* steps done inside the current stage */
    const char *recipe; /* the resolved YAML text */
} vnm_ckpt_meta;

/* ---- writing ---- */

typedef struct vnm_ckpt_writer vnm_ckpt_writer;

/* Creates <dir>/ckpt/ if needed, deletes stale step_*.h5.tmp left by a killed writer, and opens
 * <dir>/ckpt/step_<step>.h5.tmp. NULL on failure with the reason in err. */
vnm_ckpt_writer *vnm_ckpt_begin(const char *dir, int64_t step, char *err, size_t err_len);
/* Writes the root attributes; required once before commit. */
vnm_status vnm_ckpt_write_meta(vnm_ckpt_writer *w, const vnm_ckpt_meta *meta, char *err,
                               size_t err_len);
/* Writes a contiguous host buffer as dataset `path` ("/model/blocks.0.attn.qkv.weight"; dots are
 * plain characters), creating intermediate groups. ndim 0 writes a scalar. */
vnm_status vnm_ckpt_write(vnm_ckpt_writer *w, const char *path, vnm_ckpt_dtype dt, int ndim,
                          const int64_t *shape, const void *data, char *err, size_t err_len);
/* Scalar attribute on the group or dataset at `path` (a missing path is created as a group);
 * an existing attribute of that name is replaced. */
vnm_status vnm_ckpt_set_str(vnm_ckpt_writer *w, const char *path, const char *name,
                            const char *value, char *err, size_t err_len);
vnm_status vnm_ckpt_set_i64(vnm_ckpt_writer *w, const char *path, const char *name, int64_t value,
                            char *err, size_t err_len);
vnm_status vnm_ckpt_set_f64(vnm_ckpt_writer *w, const char *path, const char *name, double value,
                            char *err, size_t err_len);
/* Closes and fsyncs the file, renames it to step_<step>.h5, fsyncs the directory, points `latest` at
 * it, then deletes the oldest step_*.h5 beyond keep_last (keep_last <= 0 keeps all; the file just
 * written is never deleted). Refuses (and removes the temp file) if an earlier write failed or
 * vnm_ckpt_write_meta was not called. Frees w in every case. The final path goes to path_out
 * (may be NULL) as soon as the rename succeeded, even if updating `latest` or pruning then fails. */
vnm_status vnm_ckpt_commit(vnm_ckpt_writer *w, int keep_last, char *path_out, size_t path_len,
                           char *err, size_t err_len);
/* Closes and removes the temp file; frees w. NULL is ignored. */
void vnm_ckpt_abort(vnm_ckpt_writer *w);

/* ---- reading ---- */

typedef struct vnm_ckpt_reader vnm_ckpt_reader;

/* `path` is a checkpoint file, a ckpt directory or a run directory (which has ckpt/ inside). A
 * directory resolves through `latest`, or, if that is missing or names a missing file, to the
 * highest-numbered step_*.h5 (never a .tmp). Checks format and format_version. */
vnm_ckpt_reader *vnm_ckpt_open(const char *path, char *err, size_t err_len);
void vnm_ckpt_close(vnm_ckpt_reader *r); /* NULL is ignored */
const char *vnm_ckpt_file(const vnm_ckpt_reader *r); /* the resolved file path */
int64_t vnm_ckpt_step(const vnm_ckpt_reader *r);

vnm_status vnm_ckpt_get_i64(vnm_ckpt_reader *r, const char *path, const char *name, int64_t *out,
                            char *err, size_t err_len);
vnm_status vnm_ckpt_get_f64(vnm_ckpt_reader *r, const char *path, const char *name, double *out,
                            char *err, size_t err_len);
/* *out is malloc'd (caller frees). Fixed- and variable-length strings are both accepted. */
vnm_status vnm_ckpt_get_str(vnm_ckpt_reader *r, const char *path, const char *name, char **out,
                            char *err, size_t err_len);

/* Absolute paths of every dataset below group `path` (recursively, in name order); *names and each
 * entry are malloc'd — free with vnm_ckpt_free_names. A missing group is an error. */
vnm_status vnm_ckpt_list(vnm_ckpt_reader *r, const char *path, char ***names, int64_t *count,
                         char *err, size_t err_len);
void vnm_ckpt_free_names(char **names, int64_t count);

/* dtype and shape of dataset `path`; shape must hold VNM_CKPT_MAX_DIMS entries. */
vnm_status vnm_ckpt_shape(vnm_ckpt_reader *r, const char *path, vnm_ckpt_dtype *dt, int *ndim,
                          int64_t *shape, char *err, size_t err_len);
/* Reads dataset `path` into `out` after checking that it has exactly this dtype and shape. */
vnm_status vnm_ckpt_read(vnm_ckpt_reader *r, const char *path, vnm_ckpt_dtype dt, int ndim,
                         const int64_t *shape, void *out, char *err, size_t err_len);

#endif
