/* autograd/autograd.h — the public interface of the autograd module.
 *
 * Owns: tensors (dtype, up to 4 dims, strided views), the context (device, parameter and step
 * arenas, tape, RNG, error state), the tape (record, reverse-mode backward, gradient accumulation,
 * no-grad regions, reset) and the differentiable ops. Ops are device-agnostic: they check shapes,
 * record tape nodes and call the primitive kernels of the context's backend (autograd/backend.h).
 *
 * Error model: an op given bad input (shape, dtype, argument) returns NULL and sets a message on the
 * context (vnm_ctx_error); an op given a NULL input returns NULL without touching the message, so a
 * chain of ops reports the first failure. Nothing aborts on user input.
 *
 * Memory: every tensor an op creates lives in the step arena and is valid until
 * vnm_ctx_reset_step(). Parameters (vnm_param_new) and their gradients live in the persistent arena.
 */
#ifndef VNM_AUTOGRAD_H
#define VNM_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define VNM_VERSION "0.1.0"
#define VNM_MAX_DIMS 4
#define VNM_NODE_MAX_IN 4
#define VNM_NODE_MAX_SAVED 4
#define VNM_ALL_DIMS (-100) /* reduction over every dimension */

typedef enum {
    VNM_OK = 0,
    VNM_ERR_RUNTIME = 1, /* something failed while running (out of memory, device error) */
    VNM_ERR_INPUT = 2,   /* bad input: shapes, dtypes, arguments, files */
} vnm_status;

typedef enum {
    VNM_DTYPE_F32,
    VNM_DTYPE_BF16,
    VNM_DTYPE_F16,
    VNM_DTYPE_I32,
    VNM_DTYPE_I64,
    VNM_DTYPE_U8,
} vnm_dtype;

typedef enum { VNM_DEVICE_CPU, VNM_DEVICE_CUDA } vnm_device;

typedef struct vnm_ctx vnm_ctx;
typedef struct vnm_node vnm_node;

typedef struct vnm_tensor {
    vnm_dtype dtype;
    vnm_device device;
    int ndim;
    int64_t shape[VNM_MAX_DIMS];
    int64_t strides[VNM_MAX_DIMS]; /* in elements */
    void *data;                    /* address of element [0,0,0,0] */
    bool requires_grad;
    bool persistent;           /* lives in the parameter arena (parameters, their grads) */
    struct vnm_tensor *grad;   /* contiguous, same shape; allocated on first accumulation */
    vnm_node *node;            /* producer on the tape; NULL for leaves */
    struct vnm_tensor *base;   /* for views: the tensor whose storage this one shares */
    const char *name;
    /* bookkeeping of the release during backward (vnm_ctx_set_free_in_backward): */
    int64_t born;    /* the tape length when the header was made: the node whose op made it */
    int32_t holders; /* on a storage's own header: headers using the storage, not released yet */
    bool released;
    bool read_in_backward;        /* some node's backward reads its data */
    struct vnm_tensor *prev_made; /* the step tensor made before this one (a no-grad segment
                                   * gives back what it made, vnm_checkpoint) */
    struct vnm_tensor *half_copy; /* on a step tensor: the half copy a product kept for its
                                   * backward, which later products share (op_linear.c) */
} vnm_tensor;

/* ---- dtypes ---- */
size_t vnm_dtype_size(vnm_dtype dt);
const char *vnm_dtype_name(vnm_dtype dt);
float vnm_bf16_to_f32(uint16_t h);
uint16_t vnm_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
float vnm_f16_to_f32(uint16_t h);
uint16_t vnm_f32_to_f16(float f); /* round to nearest even */

/* ---- context ---- */
typedef struct {
    vnm_device device;
    uint64_t seed;
    int threads; /* 0: keep the OpenMP default */
} vnm_ctx_config;

vnm_ctx *vnm_ctx_create(const vnm_ctx_config *cfg); /* NULL if the device is unavailable */
/* Whether contexts can be created on dev; if not, reason says why (e.g. "no CUDA device"). */
bool vnm_device_available(vnm_device dev, char *reason, size_t len);
void vnm_ctx_destroy(vnm_ctx *ctx);
vnm_status vnm_ctx_status(const vnm_ctx *ctx);
const char *vnm_ctx_error(const vnm_ctx *ctx);
void vnm_ctx_clear_error(vnm_ctx *ctx);
/* Sets the first error only (later ones would describe consequences). Returns status. */
vnm_status vnm_ctx_fail(vnm_ctx *ctx, vnm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for functions that report into a caller's buffer: formats the message into err (when
 * err is not NULL and err_len > 0) and returns status. */
vnm_status vnm_errbuf(char *err, size_t err_len, vnm_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void vnm_ctx_reset_step(vnm_ctx *ctx); /* drops the tape and every step-arena tensor */
bool vnm_ctx_set_grad_enabled(vnm_ctx *ctx, bool enabled); /* returns the previous value */
bool vnm_ctx_grad_enabled(const vnm_ctx *ctx);
void vnm_ctx_set_training(vnm_ctx *ctx, bool training); /* dropout, drop-path active */
bool vnm_ctx_training(const vnm_ctx *ctx);
/* Mixed precision: with bf16 or f16 the products of linear and matmul (forward and backward) take
 * their operands rounded to that dtype and accumulate and write in f32, as tensor cores do, and
 * keep the half copies they need for backward; attention runs fused in that dtype where the
 * backend has the entries (op_attention_half.c), and GELU, SiLU and SwiGLU save half copies of
 * their inputs for backward. f32 (the default) keeps them exact. The rest
 * stays f32: the outputs of ops, sparse products, gradients, parameters (the master copies) and
 * optimiser state. */
vnm_status vnm_ctx_set_matmul_dtype(vnm_ctx *ctx, vnm_dtype dt);
vnm_dtype vnm_ctx_matmul_dtype(const vnm_ctx *ctx);
vnm_device vnm_ctx_device(const vnm_ctx *ctx);
size_t vnm_ctx_step_bytes(const vnm_ctx *ctx);       /* high-water mark of the step arena */
size_t vnm_ctx_persistent_bytes(const vnm_ctx *ctx);

/* Profiling: per-op forward/backward wall time with the device synchronised after every op (slows
 * the step; for finding hotspots). Turning it on or off clears the totals. */
vnm_status vnm_ctx_set_profile(vnm_ctx *ctx, bool on);
/* Charges the time since the last mark (or op) to `name` (a string that outlives the ctx). */
void vnm_profile_mark(vnm_ctx *ctx, const char *name);
/* The totals, largest first, as a table. Nothing when profiling is off. */
void vnm_profile_print(const vnm_ctx *ctx, FILE *f);

/* ---- RNG: Philox4x32-10, counter based. A draw depends on (seed, offset, element index) only, so
 * streams do not depend on the thread count. Each random op reserves a range of offsets. ---- */
typedef struct {
    uint64_t seed;
    uint64_t offset;
} vnm_rng_state;

vnm_rng_state vnm_ctx_rng_get(const vnm_ctx *ctx);
void vnm_ctx_rng_set(vnm_ctx *ctx, vnm_rng_state state);
uint64_t vnm_ctx_rng_reserve(vnm_ctx *ctx, uint64_t n_offsets); /* returns the first offset */
void vnm_philox4x32(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi, uint32_t out[4]);
float vnm_philox_uniform(uint32_t bits); /* [0, 1) with 24 random bits */
/* Fill an f32 tensor (any device) from the context stream. */
vnm_status vnm_rng_uniform(vnm_ctx *ctx, vnm_tensor *t, float lo, float hi);
vnm_status vnm_rng_normal(vnm_ctx *ctx, vnm_tensor *t, float mean, float std);

/* ---- tensors ---- */
int64_t vnm_numel(const vnm_tensor *t);
bool vnm_is_contiguous(const vnm_tensor *t);
bool vnm_same_shape(const vnm_tensor *a, const vnm_tensor *b);
/* "[2, 3, 4] f32" into buf; returns buf. */
const char *vnm_shape_str(const vnm_tensor *t, char *buf, size_t len);

/* Step-arena tensor, zero-filled. */
vnm_tensor *vnm_tensor_new(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape);
/* Step-arena tensor whose storage is not cleared: for op outputs a kernel writes in full. */
vnm_tensor *vnm_tensor_empty(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape);
/* Step-arena tensor copied from host memory (contiguous, row-major). */
vnm_tensor *vnm_tensor_from(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                            const void *host);
/* Persistent, requires_grad f32 parameter, zero-filled; name is copied. */
vnm_tensor *vnm_param_new(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                          const char *name);
/* Persistent tensor that does not require grad (buffers, frozen weights). */
vnm_tensor *vnm_buffer_new(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                           const char *name);
vnm_status vnm_tensor_to_host(vnm_ctx *ctx, const vnm_tensor *t, void *host); /* any layout */
vnm_status vnm_tensor_from_host(vnm_ctx *ctx, vnm_tensor *t, const void *host); /* contiguous t */
vnm_status vnm_tensor_fill(vnm_ctx *ctx, vnm_tensor *t, float value);
float vnm_item(vnm_ctx *ctx, const vnm_tensor *t); /* first element as float; NaN on error */
/* Gives a step tensor back to the step arena now, e.g. a converted copy its caller made and no
 * one else holds (views of it keep the storage until they go too). It must not be used again. */
void vnm_release(vnm_ctx *ctx, vnm_tensor *t);
/* Converts between float dtypes (f32, bf16, f16); no gradient. */
vnm_tensor *vnm_to_dtype(vnm_ctx *ctx, vnm_tensor *x, vnm_dtype dt);

/* In-place x *= s (no tape), e.g. gradient clipping. */
vnm_status vnm_scale_inplace(vnm_ctx *ctx, vnm_tensor *x, float s);

#define VNM_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

/* ---- tape ---- */
typedef void (*vnm_backward_fn)(vnm_ctx *ctx, vnm_node *node);

struct vnm_node {
    const char *op;
    vnm_backward_fn backward;
    vnm_tensor *out;
    int n_in;
    vnm_tensor *in[VNM_NODE_MAX_IN];
    vnm_tensor *saved[VNM_NODE_MAX_SAVED];
    int64_t iarg[8];
    float farg[4];
    void *extra; /* op-specific, step arena */
    unsigned own_saved; /* bit i: saved[i] was made by this op for this node alone, so it can be
                           released after the node's backward (vnm_node_own) */
    unsigned reads;     /* what backward reads the data of (vnm_node_reads) */
    bool reads_declared;
};

/* Records a node producing `out` from `in` when grad is enabled and some input requires grad;
 * marks out->requires_grad. Returns NULL when nothing needs recording. */
vnm_node *vnm_tape_record(vnm_ctx *ctx, const char *op, vnm_backward_fn fn, vnm_tensor *out,
                          int n_in, vnm_tensor *const *in);
/* Sets node->saved[i] = t, made by the op for this node alone (no other node or caller keeps
 * it): with vnm_ctx_set_free_in_backward its storage is given back after the node's backward.
 * Tensors the op did not make (its inputs, a caller's labels) go into saved[] directly. */
void vnm_node_own(vnm_node *node, int i, vnm_tensor *t);
/* What a node's backward reads the data of, besides its saved tensors and its output's gradient:
 * VNM_READS_IN(i) for in[i], VNM_READS_OUT for its output (0: nothing but shapes). Undeclared
 * nodes are taken to read every input and their output. With vnm_ctx_set_free_in_backward, op
 * outputs no backward reads are released when backward starts. */
#define VNM_READS_IN(i) (1u << (i))
#define VNM_READS_OUT (1u << VNM_NODE_MAX_IN)
void vnm_node_reads(vnm_node *node, unsigned what);
/* Memory reuse during backward: when on, op outputs that no backward reads (vnm_node_reads) are
 * given back to the step arena as backward starts, and each node's output, its gradient and the
 * tensors it owns (vnm_node_own) once the node's backward has run, so the gradients reuse them
 * and the step's peak memory drops. Afterwards the op outputs
 * of the step, except the tensor backward started from, must not be read; leaves (uploads,
 * vnm_tensor_new outside ops), parameters and their gradients stay. Off by default. */
void vnm_ctx_set_free_in_backward(vnm_ctx *ctx, bool on);
/* Only kernels that give the same bits on every run (torch.use_deterministic_algorithms): every
 * kernel but the backward of cuDNN's fused attention is, which this setting leaves out (the
 * attention then runs on the f32 kernels). Off by default, as in PyTorch. */
void vnm_ctx_set_deterministic(vnm_ctx *ctx, bool on);
/* Activation checkpointing. A segment of the forward pass, out = fn(ctx, in, n_in, user), whose
 * activations are not kept: with grad enabled, what fn's ops made for backward is given back as
 * soon as fn returns, and backward runs fn again (same inputs, RNG position, training flag and
 * matmul dtype) to back-propagate through it. The output and the gradients of the inputs and of
 * every parameter fn reaches are those of calling fn directly, bit for bit, at the cost of a
 * second forward of the segment; the step keeps the segment's inputs and output only
 * (torchtune's enable_activation_checkpointing, per transformer block). fn must depend only on
 * its inputs, the parameters it reaches and the RNG stream, and must not keep what it makes.
 * Without grad fn runs once and everything it made but its output is given back as it returns
 * (an evaluation holds one segment's activations at a time); with grad and a linear hook set
 * (calibration must see one run) fn just runs. 1 ≤ n_in ≤ VNM_NODE_MAX_IN. */
typedef vnm_tensor *(*vnm_segment_fn)(vnm_ctx *ctx, vnm_tensor *const *in, int n_in, void *user);
vnm_tensor *vnm_checkpoint(vnm_ctx *ctx, vnm_segment_fn fn, void *user, int n_in,
                           vnm_tensor *const *in);
/* The same segment run once, its activations kept for backward, but only those a backward
 * reads: without grad, or when the context releases in backward, what fn made that no backward
 * reads (vnm_node_reads) is given back as fn returns, its output excepted. A transformer block
 * passes on its output alone, so the step never holds the f32 activations that only the block's
 * own forward used (PyTorch frees them by reference counting); the products' half copies of
 * their inputs (mixed precision) take their place. Same rules for fn as vnm_checkpoint. */
vnm_tensor *vnm_segment(vnm_ctx *ctx, vnm_segment_fn fn, void *user, int n_in,
                        vnm_tensor *const *in);
/* Reverse-mode backward from a scalar: seeds d(loss) = 1. */
vnm_status vnm_backward(vnm_ctx *ctx, vnm_tensor *loss);
/* Reverse-mode backward from any tensor with an explicit seed gradient of the same shape. */
vnm_status vnm_backward_seed(vnm_ctx *ctx, vnm_tensor *out, vnm_tensor *seed);
/* The gradient buffer of t (contiguous, zero on creation), NULL if t does not require grad. */
vnm_tensor *vnm_grad_buffer(vnm_ctx *ctx, vnm_tensor *t);
/* t's gradient buffer for a kernel that writes C = beta·C + product: a new (non-persistent)
 * buffer is returned uncleared with *beta = 0 (the kernel must write all of it), an existing one
 * with *beta = 1. NULL when t does not require grad. */
vnm_tensor *vnm_grad_slot(vnm_ctx *ctx, vnm_tensor *t, float *beta);
void vnm_zero_grad(vnm_ctx *ctx, vnm_tensor *const *params, int n);

/* Linear hook: called by every linear op (dense and sparse) with its weight (the name identifies
 * the layer) and its input x[..., I] before the product, e.g. to gather calibration statistics.
 * NULL removes it. */
typedef void (*vnm_linear_hook)(void *user, const char *weight_name, const vnm_tensor *x);
void vnm_ctx_set_linear_hook(vnm_ctx *ctx, vnm_linear_hook hook, void *user);
void vnm_ctx_call_linear_hook(vnm_ctx *ctx, const char *weight_name, const vnm_tensor *x);

/* ---- ops (each has forward and backward) ---- */
/* linear: y[..., O] = x[..., I] · w[O, I]ᵀ + b[O] (b may be NULL). w is f32, or a frozen bf16/f16
 * weight converted to f32 per product into a buffer freed right after (no gradient reaches it). */
vnm_tensor *vnm_linear(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, vnm_tensor *b);
/* batched matmul: a[..., M, K] · b[..., K, N]; batch dims equal, or b is 2-D and shared */
vnm_tensor *vnm_matmul(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b);
/* elementwise with numpy broadcasting */
vnm_tensor *vnm_add(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b);
vnm_tensor *vnm_sub(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b);
vnm_tensor *vnm_mul(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b);
vnm_tensor *vnm_div(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b);
vnm_tensor *vnm_scale(vnm_ctx *ctx, vnm_tensor *a, float s);
/* shape: views where free (reshape of contiguous, transpose, permute, slice) */
vnm_tensor *vnm_reshape(vnm_ctx *ctx, vnm_tensor *x, int ndim, const int64_t *shape); /* one -1 */
vnm_tensor *vnm_transpose(vnm_ctx *ctx, vnm_tensor *x, int d0, int d1);
vnm_tensor *vnm_permute(vnm_ctx *ctx, vnm_tensor *x, const int *perm);
vnm_tensor *vnm_contiguous(vnm_ctx *ctx, vnm_tensor *x);
vnm_tensor *vnm_slice(vnm_ctx *ctx, vnm_tensor *x, int dim, int64_t start, int64_t end);
vnm_tensor *vnm_concat(vnm_ctx *ctx, int n, vnm_tensor *const *xs, int dim);
/* split x along dim into n parts of the given sizes (views); returns status */
vnm_status vnm_split(vnm_ctx *ctx, vnm_tensor *x, int dim, int n, const int64_t *sizes,
                     vnm_tensor **out);
/* reductions: dim may be negative; VNM_ALL_DIMS reduces to a scalar of shape [1] */
vnm_tensor *vnm_sum(vnm_ctx *ctx, vnm_tensor *x, int dim, bool keepdim);
vnm_tensor *vnm_mean(vnm_ctx *ctx, vnm_tensor *x, int dim, bool keepdim);
/* activations */
vnm_tensor *vnm_gelu(vnm_ctx *ctx, vnm_tensor *x);      /* exact, erf */
vnm_tensor *vnm_gelu_tanh(vnm_ctx *ctx, vnm_tensor *x); /* tanh approximation */
vnm_tensor *vnm_silu(vnm_ctx *ctx, vnm_tensor *x);
vnm_tensor *vnm_swiglu(vnm_ctx *ctx, vnm_tensor *gate, vnm_tensor *up); /* silu(gate) * up */
/* normalisation over the last dim; w, b may be NULL */
vnm_tensor *vnm_layernorm(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, vnm_tensor *b, float eps);
vnm_tensor *vnm_rmsnorm(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *w, float eps);
/* over the last dim */
vnm_tensor *vnm_softmax(vnm_ctx *ctx, vnm_tensor *x);
vnm_tensor *vnm_log_softmax(vnm_ctx *ctx, vnm_tensor *x);
/* scaled dot-product attention: q[B, Hq, T, D], k/v[B, Hkv, S, D], Hq a multiple of Hkv (grouped
 * KV heads); scale <= 0 means 1/sqrt(D); causal aligns the last query with the last key. */
vnm_tensor *vnm_attention(vnm_ctx *ctx, vnm_tensor *q, vnm_tensor *k, vnm_tensor *v, bool causal,
                          float scale);
/* multi-head self-attention on a packed projection, as timm's Attention: qkv[B, T, 3·H·D] holds
 * q, k, v, each [B, T, H, D], one after the other along the last dim; returns the attention of the
 * H heads merged back token-major, [B, Tq, H·D]. The same as slicing, reshaping and permuting qkv
 * into q, k, v [B, H, T, D], vnm_attention, and permuting back, minus the copies. queries > 0
 * keeps only the first `queries` tokens as queries (Tq = queries; every token stays a key), for a
 * last block whose only consumer is a class-token head; 0 means all (Tq = T). Causal attention
 * needs all queries. */
vnm_tensor *vnm_attention_qkv(vnm_ctx *ctx, vnm_tensor *qkv, int64_t heads, int64_t queries,
                              bool causal, float scale);
/* Whether a linear hook is installed (it wants to see every token of every linear's input). */
bool vnm_ctx_has_linear_hook(const vnm_ctx *ctx);
/* embedding: ids (i32/i64)[...] into table[V, D] → [..., D] */
vnm_tensor *vnm_embedding(vnm_ctx *ctx, vnm_tensor *ids, vnm_tensor *table);
/* rotary embedding, rotate-half (Hugging Face) pairing, on x[B, H, T, D] at positions
 * pos_offset + t, frequencies theta^(-2i/D). */
vnm_tensor *vnm_rope(vnm_ctx *ctx, vnm_tensor *x, int64_t pos_offset, float theta);
/* regularisation: identity unless the context is training and p > 0 */
vnm_tensor *vnm_dropout(vnm_ctx *ctx, vnm_tensor *x, float p);
vnm_tensor *vnm_drop_path(vnm_ctx *ctx, vnm_tensor *x, float p); /* per sample along dim 0 */
/* out[shape] = 0, then out[index[k]] = src[k] (flat) for every k with 0 ≤ index[k] < numel(out)
 * (an entry out of range is skipped like -1, never followed): index i32, one entry per element
 * of src, each output position at most once; it must outlive the step. Differentiable to src (a
 * gather). */
vnm_tensor *vnm_scatter(vnm_ctx *ctx, vnm_tensor *src, vnm_tensor *index, int ndim,
                        const int64_t *shape);
/* y = x ⊙ mask for a given u8 mask of x's shape (1 keeps, 0 gives 0), e.g. a V:N:M mask on a
 * dense weight; differentiable to x (dx = dy ⊙ mask). The mask must outlive the step. */
vnm_tensor *vnm_mask(vnm_ctx *ctx, vnm_tensor *x, vnm_tensor *mask);
/* losses, mean-reduced to shape [1] */
/* logits[N, C], labels (i32/i64)[N]; rows whose label == ignore_index do not count */
vnm_tensor *vnm_cross_entropy(vnm_ctx *ctx, vnm_tensor *logits, vnm_tensor *labels,
                              int64_t ignore_index, float label_smoothing);
/* logits[N, C], soft targets[N, C] (mixup); loss = mean_n -Σ_c t·log_softmax */
vnm_tensor *vnm_cross_entropy_soft(vnm_ctx *ctx, vnm_tensor *logits, vnm_tensor *targets);
vnm_tensor *vnm_mse(vnm_ctx *ctx, vnm_tensor *a, vnm_tensor *b);

/* ---- fused parameter updates for optim/ (no tape; f32, contiguous, same shapes) ---- */
/* Σ x² accumulated in double; NaN (and an error) on bad input. */
double vnm_sum_squares(vnm_ctx *ctx, const vnm_tensor *x);
/* torch.optim.SGD for one tensor, gradient p->grad; buf is the momentum buffer (NULL when
 * momentum is 0); first_step starts the buffer at the gradient. */
vnm_status vnm_sgd_update(vnm_ctx *ctx, vnm_tensor *p, vnm_tensor *buf, double lr,
                          double momentum, double dampening, double weight_decay, bool nesterov,
                          bool first_step);
/* torch.optim.AdamW for one tensor, gradient p->grad, moments m and v, step counted from 1. */
vnm_status vnm_adamw_update(vnm_ctx *ctx, vnm_tensor *p, vnm_tensor *m, vnm_tensor *v, double lr,
                            double beta1, double beta2, double eps, double weight_decay,
                            int64_t step);

#endif
