/* autograd/internal.h — what the autograd sources share and nothing outside autograd/ includes:
 * the context struct, arenas, and the checks and helpers every op uses. */
#ifndef VNM_AUTOGRAD_INTERNAL_H
#define VNM_AUTOGRAD_INTERNAL_H

#include "autograd.h"
#include "backend.h"

typedef struct vnm_arena_chunk vnm_arena_chunk;
typedef struct vnm_profile vnm_profile;

typedef struct vnm_arena_free_list vnm_arena_free_list;

/* A bump allocator over chunks obtained from a backend (device data) or malloc (host metadata).
 * Blocks given back with vnm_arena_free are handed out again to requests of the same rounded size
 * before the bump pointer moves (a training step's backward asks for the sizes its forward
 * freed); a reset forgets them with everything else. */
typedef struct {
    const vnm_backend *be; /* NULL: host malloc */
    vnm_arena_chunk *chunks;
    size_t chunk_bytes; /* default chunk size */
    size_t used;        /* bytes taken from the chunks since the last reset */
    size_t high;        /* high-water mark of used: the memory a step needs */
    vnm_arena_free_list *free; /* NULL until a block is freed */
    bool poison;        /* fill freed blocks with NaN (VNM_POISON_FREED=1; device arenas) */
} vnm_arena;

void vnm_arena_init(vnm_arena *a, const vnm_backend *be, size_t chunk_bytes);
void *vnm_arena_alloc(vnm_arena *a, size_t bytes); /* 64-byte aligned, NULL if out of memory */
/* Gives back a block of vnm_arena_alloc(a, bytes) for reuse within this step. */
void vnm_arena_free(vnm_arena *a, void *p, size_t bytes);
void vnm_arena_reset(vnm_arena *a);                 /* keeps the memory for reuse */
void vnm_arena_release(vnm_arena *a);

struct vnm_ctx {
    vnm_device device;
    const vnm_backend *be;
    vnm_arena persist_meta, persist_data; /* parameters and their grads */
    vnm_arena step_meta, step_data;       /* everything of one step */
    vnm_node **tape;
    int64_t tape_len, tape_cap;
    vnm_tensor *last_made; /* the newest step tensor header (a list through prev_made) */
    bool grad_enabled;
    bool training;
    bool free_in_backward;  /* release node storage during backward (autograd/tape.c) */
    bool deterministic;     /* no kernel whose results vary from run to run */
    vnm_dtype matmul_dtype; /* f32, or bf16/f16 for mixed precision (op_linear.c) */
    vnm_rng_state rng;
    vnm_linear_hook linear_hook;
    void *linear_hook_user;
    vnm_profile *profile; /* NULL unless profiling (autograd/profile.c) */
    vnm_status status;
    char error[512];
};

#define VNM_F32(t) ((float *)(t)->data)

/* A tensor header + zeroed storage in the step (persistent = false) or persistent arena. */
vnm_tensor *vnm_tensor_alloc(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                             bool persistent);
/* A new step tensor with x's dtype and shape (contiguous). */
vnm_tensor *vnm_tensor_like(vnm_ctx *ctx, const vnm_tensor *x);
/* A header sharing x's storage with new shape/strides (a view). */
vnm_tensor *vnm_tensor_view(vnm_ctx *ctx, vnm_tensor *x, int ndim, const int64_t *shape,
                            const int64_t *strides, int64_t elem_offset);
void *vnm_step_meta_alloc(vnm_ctx *ctx, size_t bytes); /* host scratch for node extras */
void vnm_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
vnm_layout vnm_layout_of(const vnm_tensor *t);

/* Checks used at the top of ops; each sets a message naming the op and returns false. */
bool vnm_check_f32(vnm_ctx *ctx, const char *op, const vnm_tensor *t, const char *what);
bool vnm_check_ndim(vnm_ctx *ctx, const char *op, const vnm_tensor *t, const char *what, int lo,
                    int hi);
bool vnm_check_kernel(vnm_ctx *ctx, const char *op, bool present); /* be->kernel != NULL */
int vnm_norm_dim(vnm_ctx *ctx, const char *op, const vnm_tensor *t, int dim); /* -1 on error */

/* vnm_tape_record without its checks: records whenever grad is enabled (a node whose gradient
 * reaches parameters that are not among its inputs). */
vnm_node *vnm_tape_push(vnm_ctx *ctx, const char *op, vnm_backward_fn fn, vnm_tensor *out,
                        int n_in, vnm_tensor *const *in);
/* Backward over the tape nodes first..last, in reverse, releasing as the context says; start is
 * the tensor this backward started from (kept). */
vnm_status vnm_tape_run(vnm_ctx *ctx, int64_t first, int64_t last, const vnm_tensor *start);
/* Drops the nodes from first to the end of the tape, giving back what their ops made (outputs,
 * owned saved tensors) except keep. */
void vnm_tape_drop(vnm_ctx *ctx, int64_t first, const vnm_tensor *keep);
/* Gives back the step tensors made after mark (ctx->last_made when it was taken) that no
 * backward of the nodes from first on reads, keep excepted: a segment's activations that only
 * its own forward used. */
void vnm_release_made_since(vnm_ctx *ctx, const vnm_tensor *mark, int64_t first,
                            const vnm_tensor *keep);

/* Attention through the backend's fused half-precision entries (op_attention_half.c), for
 * vnm_attention (checked operands) and vnm_attention_qkv (contiguous qkv, 1 ≤ queries ≤ T):
 * false when the context does not multiply in a half dtype or the backend lacks or declines the
 * case (nothing done); else true with *out the output, NULL on failure (the context says why). */
bool vnm_attention_half(vnm_ctx *ctx, vnm_tensor *q, vnm_tensor *k, vnm_tensor *v, bool causal,
                        float scale, vnm_tensor **out);
bool vnm_attention_qkv_half(vnm_ctx *ctx, vnm_tensor *qkv, int64_t heads, int64_t queries,
                            bool causal, float scale, vnm_tensor **out);

/* Runs node's backward timed for the profile (ctx->profile must be set). */
void vnm_profile_backward(vnm_ctx *ctx, vnm_node *node);

/* Adds g (contiguous, t's shape) into t's gradient buffer when t requires grad. */
void vnm_grad_accumulate(vnm_ctx *ctx, vnm_tensor *t, const vnm_tensor *g);
/* The same for a g that the tape reads no more (an op's output gradient, handed to an input whose
 * gradient it equals element for element, at the end of that op's backward): a step tensor t
 * with no gradient yet takes g's storage as its gradient, which spares clearing a buffer and
 * adding into it. Later gradients of t add into that storage, so after backward the output's
 * gradient holds t's. */
void vnm_grad_take(vnm_ctx *ctx, vnm_tensor *t, vnm_tensor *g);

#endif
