/* autograd/backend.h — the table of primitive kernels a device implements.
 *
 * Ops (autograd/op_*.c) do shapes, views and the tape; they reach data only through this table, so a
 * new device is a new table (autograd/cpu/, autograd/cuda/). Every kernel takes device pointers to
 * f32 data (gemm_half and convert excepted), contiguous row-major unless strides are passed, and
 * sizes as int64_t.
 * Kernels whose name ends in _bwd accumulate (+=) into the gradient buffers they are given, so
 * gradients from several uses of a tensor add up; a NULL gradient pointer means "not needed".
 * (act_bwd_set and attention_bwd_strided with `overwrite` write instead, for new buffers.)
 * An entry left NULL makes the op fail with "op X is not implemented on backend Y", except the
 * entries marked optional, which the ops replace by copies and the other entries.
 * Kernels must be deterministic for a fixed thread count, with one exception: the backward of
 * cuDNN's fused attention (attention_half_bwd on CUDA) adds dQ up with atomics, as PyTorch's
 * flash and cuDNN attention backward do.
 */
#ifndef VNM_BACKEND_H
#define VNM_BACKEND_H

#include "autograd.h"

typedef enum { VNM_BINARY_ADD, VNM_BINARY_SUB, VNM_BINARY_MUL, VNM_BINARY_DIV } vnm_binary_op;
typedef enum { VNM_ACT_GELU, VNM_ACT_GELU_TANH, VNM_ACT_SILU } vnm_act;

/* A strided view description shared by the copy/broadcast kernels: ndim ≤ 4, strides in elements
 * (0 for a broadcast dimension). */
typedef struct {
    int ndim;
    int64_t shape[VNM_MAX_DIMS];
    int64_t strides[VNM_MAX_DIMS];
} vnm_layout;

/* l padded to 4 dims with leading 1s (stride 0), so kernels walk exactly four indices. */
static inline vnm_layout vnm_layout_pad4(const vnm_layout *l)
{
    vnm_layout p;
    int shift = VNM_MAX_DIMS - l->ndim;
    p.ndim = VNM_MAX_DIMS;
    for (int i = 0; i < VNM_MAX_DIMS; i++) {
        p.shape[i] = i < shift ? 1 : l->shape[i - shift];
        p.strides[i] = i < shift ? 0 : l->strides[i - shift];
    }
    return p;
}

/* Element strides of the batch, head and row dims of an attention operand [B, H, rows, D] whose
 * last dim is contiguous. */
typedef struct {
    int64_t b, h, t;
} vnm_attn_strides;

typedef struct vnm_backend {
    const char *name;

    /* memory */
    void *(*alloc)(size_t bytes); /* 64-byte aligned; NULL when out of memory */
    void (*free)(void *p);
    void (*memset0)(void *p, size_t bytes);
    void (*to_host)(void *host, const void *dev, size_t bytes);
    void (*from_host)(void *dev, const void *host, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*fill)(float *x, int64_t n, float value);
    /* element conversion between float dtypes, n elements, contiguous */
    void (*convert)(void *dst, vnm_dtype dst_dt, const void *src, vnm_dtype src_dt, int64_t n);
    /* waits until every kernel issued so far has finished (a no-op where kernels are synchronous) */
    void (*synchronize)(void);

    /* C[M,N] = alpha·op(A)·op(B) + beta·C, row-major, op = transpose when ta/tb */
    void (*gemm)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
    /* the same over `batch` matrices; stride 0 shares an operand across the batch */
    void (*gemm_batched)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                         const float *A, int64_t lda, int64_t stride_a, const float *B,
                         int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                         int64_t stride_c, int64_t batch);
    /* y[M, N] = x[M, K]·w[N, K]ᵀ + b[N] in one fused product (b may be NULL), x and w in dt (f32,
     * or a half dtype with f32 accumulation), y f32. Optional, and it may decline: false means
     * nothing was written and the op runs the bias broadcast and gemm/gemm_half instead. */
    bool (*linear_fwd)(vnm_dtype dt, int64_t M, int64_t N, int64_t K, const void *x,
                       const void *w, const float *b, float *y);
    /* gemm_batched with A and B in the half dtype dt (bf16 or f16): products of the half values
     * accumulated and written in f32, as tensor cores do (mixed precision) */
    void (*gemm_half)(vnm_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const void *A, int64_t lda, int64_t stride_a, const void *B, int64_t ldb,
                      int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c,
                      int64_t batch);

    /* dst (layout d) = src (layout s), or += when accumulate; both layouts have the same shape.
     * With a 0 stride in d (reduction to a broadcast shape) accumulate must be true and the
     * kernel sums in a fixed order. */
    void (*copy_strided)(float *dst, const vnm_layout *d, const float *src, const vnm_layout *s,
                         bool accumulate);
    /* out[shape of o] = a op b, a and b read through broadcast layouts with o's shape */
    void (*binary)(vnm_binary_op op, float *out, const vnm_layout *o, const float *a,
                   const vnm_layout *la, const float *b, const vnm_layout *lb);
    void (*scale)(float *y, const float *x, float s, int64_t n);
    /* y += s·x */
    void (*axpy)(float *y, const float *x, float s, int64_t n);
    /* sum over the middle axis of x[outer, n, inner] into y[outer, inner], y = or += */
    void (*sum_axis)(float *y, const float *x, int64_t outer, int64_t n, int64_t inner,
                     bool accumulate);

    /* out[idx[k]] = src[k] for the k < n with 0 ≤ idx[k] < n_out (no index twice; out cleared
     * by the caller), and its adjoint dst[k] += src[idx[k]] over the same k (src of n_src); an
     * index out of range is skipped, never followed */
    void (*scatter)(float *out, int64_t n_out, const float *src, const int32_t *idx, int64_t n);
    void (*gather_add)(float *dst, const float *src, int64_t n_src, const int32_t *idx,
                       int64_t n);

    /* activations */
    void (*act_fwd)(vnm_act act, float *y, const float *x, int64_t n);
    void (*act_bwd)(vnm_act act, float *dx, const float *x, const float *dy, int64_t n);
    /* dx = dy·act'(x): act_bwd writing instead of adding, for a gradient buffer that is new
     * (saves clearing it). Optional: NULL where a backend has only act_bwd. */
    void (*act_bwd_set)(vnm_act act, float *dx, const float *x, const float *dy, int64_t n);
    void (*swiglu_fwd)(float *y, const float *gate, const float *up, int64_t n);
    void (*swiglu_bwd)(float *dgate, float *dup, const float *gate, const float *up,
                       const float *dy, int64_t n);

    /* normalisation over rows of x[rows, D]; w, b may be NULL; mean/rstd [rows] are saved */
    void (*layernorm_fwd)(float *y, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int64_t rows, int64_t D, float eps);
    void (*layernorm_bwd)(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *mean, const float *rstd, const float *w, int64_t rows,
                          int64_t D);
    void (*rmsnorm_fwd)(float *y, float *rstd, const float *x, const float *w, int64_t rows,
                        int64_t D, float eps);
    void (*rmsnorm_bwd)(float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                        const float *w, int64_t rows, int64_t D);

    /* softmax / log-softmax over rows of x[rows, D]; backward uses the saved output y */
    void (*softmax_fwd)(float *y, const float *x, int64_t rows, int64_t D, bool log);
    void (*softmax_bwd)(float *dx, const float *y, const float *dy, int64_t rows, int64_t D,
                        bool log);

    /* attention: q[B,Hq,T,D], k,v[B,Hkv,S,D] → o[B,Hq,T,D]; p[B,Hq,T,S] keeps the probabilities
     * for backward */
    void (*attention_fwd)(float *o, float *p, const float *q, const float *k, const float *v,
                          int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                          bool causal, float scale);
    void (*attention_bwd)(float *dq, float *dk, float *dv, const float *dout, const float *p,
                          const float *q, const float *k, const float *v, int64_t B, int64_t Hq,
                          int64_t Hkv, int64_t T, int64_t S, int64_t D, float scale);

    /* The same attention on strided views, so an op can read q, k, v straight out of a packed
     * projection and write o in the token-major layout the next linear wants. Element (b, h, t, d)
     * of q is q[b·qs.b + h·qs.h + t·qs.t + d]; likewise k, v (S rows), o, dout (T rows) and the
     * gradients dq, dk, dv (laid out as q, k, v). Backward overwrites dq, dk, dv when `overwrite`
     * (every element is written; they may share one buffer as long as they do not overlap), and
     * adds into them otherwise. Optional: a backend without them leaves them NULL and the ops
     * fall back on copies and the contiguous entries. */
    void (*attention_fwd_strided)(float *o, vnm_attn_strides os, float *p, const float *q,
                                  vnm_attn_strides qs, const float *k, vnm_attn_strides ks,
                                  const float *v, vnm_attn_strides vs, int64_t B, int64_t Hq,
                                  int64_t Hkv, int64_t T, int64_t S, int64_t D, bool causal,
                                  float scale);
    void (*attention_bwd_strided)(float *dq, vnm_attn_strides dqs, float *dk, vnm_attn_strides dks,
                                  float *dv, vnm_attn_strides dvs, bool overwrite,
                                  const float *dout, vnm_attn_strides dos, const float *p,
                                  const float *q, vnm_attn_strides qs, const float *k,
                                  vnm_attn_strides ks, const float *v, vnm_attn_strides vs,
                                  int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S,
                                  int64_t D, float scale);

    /* Fused attention in a half dtype dt (bf16 or f16), as flash attention computes it: no
     * probabilities are stored, only stats[B, Hq, T] (f32, contiguous), each query row's
     * log-sum-exp of its scaled, masked scores, from which backward recomputes them. q, k, v, o,
     * dout and dq, dk, dv are in dt and strided as in the entries above. Causal masking only with
     * T == S. Backward overwrites dq, dk, dv (every element; dk and dv sum over the rep query
     * heads of their KV head). Optional (cuDNN's fused SDPA on CUDA; on the CPU a reference that
     * widens to the f32 entries); the forward may decline a
     * case (head size, alignment, no library support): false means nothing was written and the
     * op runs the f32 entries. Once a forward has run a case, its backward runs it too (a false
     * return there is a runtime failure). */
    bool (*attention_half_fwd)(vnm_dtype dt, void *o, vnm_attn_strides os, float *stats,
                               const void *q, vnm_attn_strides qs, const void *k,
                               vnm_attn_strides ks, const void *v, vnm_attn_strides vs, int64_t B,
                               int64_t Hq, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                               bool causal, float scale);
    bool attention_half_deterministic; /* whether attention_half_bwd repeats its bits */
    bool (*attention_half_bwd)(vnm_dtype dt, void *dq, vnm_attn_strides dqs, void *dk,
                               vnm_attn_strides dks, void *dv, vnm_attn_strides dvs,
                               const void *dout, vnm_attn_strides dos, const void *o,
                               vnm_attn_strides os, const float *stats, const void *q,
                               vnm_attn_strides qs, const void *k, vnm_attn_strides ks,
                               const void *v, vnm_attn_strides vs, int64_t B, int64_t Hq,
                               int64_t Hkv, int64_t T, int64_t S, int64_t D, bool causal,
                               float scale);

    /* embedding: ids are i32 (ids64 false) or i64; out[n, D] = table[ids[i]] */
    void (*embedding_fwd)(float *out, const void *ids, bool ids64, const float *table,
                          int64_t n, int64_t D);
    void (*embedding_bwd)(float *dtable, const void *ids, bool ids64, const float *dout,
                          int64_t n, int64_t V, int64_t D);
    /* rotate-half rope on x[B,H,T,D]; inverse rotates the other way (backward) */
    void (*rope)(float *y, const float *x, int64_t BH, int64_t T, int64_t D, int64_t pos_offset,
                 float theta, bool inverse);

    /* dropout: y = x·mask/(1-p), mask[i] = philox(seed, offset, i) ≥ p; mask kept as u8 */
    void (*dropout_fwd)(float *y, uint8_t *mask, const float *x, int64_t n, float p,
                        uint64_t seed, uint64_t offset);
    void (*dropout_bwd)(float *dx, const uint8_t *mask, const float *dy, int64_t n, float p);
    /* drop-path: per-sample keep flags for N samples of `inner` elements each */
    void (*drop_path_fwd)(float *y, uint8_t *keep, const float *x, int64_t N, int64_t inner,
                          float p, uint64_t seed, uint64_t offset);
    void (*drop_path_bwd)(float *dx, const uint8_t *keep, const float *dy, int64_t N,
                          int64_t inner, float p);

    /* cross-entropy over logits[N, C]; labels i32/i64 (labels64) or soft targets[N, C];
     * writes the mean loss to loss[0] and the softmax to prob[N, C] for backward; count is the
     * number of rows that count (not ignored). */
    void (*cross_entropy_fwd)(float *loss, float *prob, int64_t *count, const float *logits,
                              const void *labels, bool labels64, const float *targets, int64_t N,
                              int64_t C, int64_t ignore_index, float smoothing);
    void (*cross_entropy_bwd)(float *dlogits, const float *prob, const void *labels,
                              bool labels64, const float *targets, int64_t N, int64_t C,
                              int64_t ignore_index, float smoothing, float dloss_over_count);

    /* random fills (Philox, by element index) */
    void (*rng_uniform)(float *x, int64_t n, float lo, float hi, uint64_t seed, uint64_t offset);
    void (*rng_normal)(float *x, int64_t n, float mean, float std, uint64_t seed,
                       uint64_t offset);

    /* optimisers and clipping over flat f32 arrays */
    /* sum of squares of x[n] into *out (double for accuracy), deterministic */
    void (*sum_squares)(double *out, const float *x, int64_t n);
    /* Hyper-parameters arrive in double: torch derives its scalars (1 - beta, lr / bias
     * correction, ...) as Python floats and rounds each to f32 once, and so must a kernel that
     * wants to match it bit for bit. */
    void (*sgd_step)(float *p, const float *g, float *buf, int64_t n, double lr, double momentum,
                     double dampening, double weight_decay, bool nesterov, bool first_step);
    void (*adamw_step)(float *p, const float *g, float *m, float *v, int64_t n, double lr,
                       double beta1, double beta2, double eps, double weight_decay, int64_t step);
} vnm_backend;

const vnm_backend *vnm_backend_cpu(void);
/* NULL when this build has no CUDA or no device is present; reason says which. */
const vnm_backend *vnm_backend_cuda(char *reason, size_t len);
const vnm_backend *vnm_ctx_backend(const vnm_ctx *ctx);

/* Each CPU kernel file fills its part of the table. */
void vnm_cpu_register_memory(vnm_backend *be);
void vnm_cpu_register_gemm(vnm_backend *be);
void vnm_cpu_register_elementwise(vnm_backend *be);
void vnm_cpu_register_activation(vnm_backend *be);
void vnm_cpu_register_norm(vnm_backend *be);
void vnm_cpu_register_softmax(vnm_backend *be);
void vnm_cpu_register_attention(vnm_backend *be);
void vnm_cpu_register_attention_half(vnm_backend *be);
void vnm_cpu_register_embedding(vnm_backend *be);
void vnm_cpu_register_rope(vnm_backend *be);
void vnm_cpu_register_random(vnm_backend *be);
void vnm_cpu_register_dropout(vnm_backend *be);
void vnm_cpu_register_loss(vnm_backend *be);
void vnm_cpu_register_optim(vnm_backend *be);

#endif
