/* sparse/sparse.h — the public interface of the sparse module: V:N:M patterns, pruning scores and
 * calibration, mask selection, channel permutation, the canonical compressed format, and the
 * sparse-linear autograd op (mask-fixed and SR-STE dynamic). The algorithms are those of
 * METHOD.md §1–5 and §7.
 *
 * Conventions: a weight W is [O, I] row-major (out, in). Host-side algorithms (pruning,
 * permutation, compression) work on plain arrays; the op works on tensors. Functions that can fail
 * on user input return a status and write a message naming what was wrong into err (err may be
 * NULL).
 */
#ifndef VNM_SPARSE_H
#define VNM_SPARSE_H

#include "../autograd/autograd.h"

/* ---- patterns (METHOD §1) ---- */
typedef struct {
    int V; /* rows sharing a block's columns: 16, 32, 64, 128 or 256 */
    int N; /* kept per row and group: always 2 */
    int M; /* group width: M ≥ 4 */
} vnm_pattern;

/* Strict "V:N:M" parser: decimal integers only, N = 2, M ≥ 4 (M ≤ 64), V ∈ {16,32,64,128,256}. */
vnm_status vnm_pattern_parse(const char *text, vnm_pattern *out, char *err, size_t err_len);
const char *vnm_pattern_str(vnm_pattern p, char *buf, size_t len); /* "64:2:5" */
double vnm_pattern_density(vnm_pattern p);                         /* 2/M */
double vnm_pattern_kappa(vnm_pattern p); /* mask diversity (ln C(M,4) + V·ln 6)/(V·M) */

/* Heuristic V/M selection (METHOD §3): candidates with their measured speedup over dense. */
typedef struct {
    vnm_pattern pat;
    double speedup; /* measured: dense time / sparse time for the workload */
    double kappa;   /* filled by vnm_vm_choose */
    bool kept;      /* speedup ≥ the requirement; filled by vnm_vm_choose */
} vnm_vm_candidate;

/* Phase 2 of the rule: among candidates whose speedup reaches `required`, the largest κ, ties to
 * the larger V. Returns the chosen index, or -1 when no candidate is fast enough. */
int vnm_vm_choose(vnm_vm_candidate *cands, int n, double required);

/* ---- scores and calibration (METHOD §2.1) ---- */
typedef enum { VNM_SCORE_MAGNITUDE, VNM_SCORE_RIA } vnm_score_kind;
vnm_status vnm_score_parse(const char *name, vnm_score_kind *out, char *err, size_t err_len);

/* Per-input-channel statistics of a linear's input over calibration tokens. */
typedef struct {
    int64_t I;
    int64_t tokens;
    double *sumsq; /* [I] Σ x² */
} vnm_calib;

vnm_status vnm_calib_init(vnm_calib *c, int64_t I);
void vnm_calib_free(vnm_calib *c);
void vnm_calib_add(vnm_calib *c, const float *x, int64_t T); /* x[T, I] token-major */
void vnm_calib_rms(const vnm_calib *c, double *rms);         /* rms[I] = sqrt(Σx² / tokens) */

/* Gathers vnm_calib for every linear whose weight name matches one of the fnmatch globs, through
 * the context's linear hook, while it is attached. */
typedef struct vnm_calib_collector vnm_calib_collector;
vnm_calib_collector *vnm_calib_attach(vnm_ctx *ctx, const char *const *globs, int n_globs);
const vnm_calib *vnm_calib_find(const vnm_calib_collector *c, const char *weight_name);
void vnm_calib_detach(vnm_calib_collector *c); /* removes the hook and frees everything */

/* S[O][I] ≥ 0 from W[O][I]. RIA needs act_rms[I] (vnm_calib_rms) and the exponent a (0.5 by
 * default); magnitude ignores both. */
vnm_status vnm_score_compute(vnm_score_kind kind, const float *W, int64_t O, int64_t I,
                             const double *act_rms, double a, float *S, char *err, size_t err_len);

/* ---- mask selection (METHOD §2.2–2.3) ---- */
typedef enum { VNM_SELECT_L1, VNM_SELECT_EXHAUSTIVE } vnm_selector;
vnm_status vnm_selector_parse(const char *name, vnm_selector *out, char *err, size_t err_len);

/* mask[O][I] (1 kept, 0 pruned) maximising the kept score under the pattern, with the tail rule
 * for the last partial group (r = I mod M: keep all r columns if r ≤ 2, else 2 per row of them)
 * and a last partial block of rows when O is not a multiple of V. */
vnm_status vnm_mask_select(vnm_pattern p, vnm_selector sel, const float *S, int64_t O, int64_t I,
                           uint8_t *mask, char *err, size_t err_len);
/* VNM_OK if mask satisfies the pattern, else VNM_ERR_INPUT naming the first bad block/row. */
vnm_status vnm_mask_validate(vnm_pattern p, const uint8_t *mask, int64_t O, int64_t I, char *err,
                             size_t err_len);
double vnm_mask_kept_score(const uint8_t *mask, const float *S, int64_t n);

/* ---- channel permutation (METHOD §4) ---- */
/* Linear sum assignment (Jonker–Volgenant): the permutation col_of_row[n] minimising
 * Σ cost[r][col_of_row[r]] over an n×n cost matrix. O(n³). VNM_ERR_INPUT for NaN/inf costs,
 * n < 0 or NULL pointers (n = 0 accepts NULL); VNM_ERR_RUNTIME when out of memory. */
vnm_status vnm_lsa_solve(const double *cost, int64_t n, int32_t *col_of_row);

typedef struct {
    int rounds;         /* alternating rounds (input then output), default 2 */
    int64_t chunk;      /* channels per independent chunk (0: no chunking) */
    vnm_selector selector;
} vnm_permute_opts;

/* perm_out[O] and perm_in[I] (position in the permuted layer → original index) maximising the
 * score kept by the V:N:M mask of the permuted scores. kept_before / kept_after (may be NULL)
 * report it for the identity and for the result; the result never keeps less than the identity,
 * and is the identity when nothing is gained. opts NULL means 2 rounds, no chunking, l1; a chunk
 * is rounded down to whole groups (inputs) and blocks (outputs). S must be finite and ≥ 0. */
vnm_status vnm_permute_search(vnm_pattern p, const float *S, int64_t O, int64_t I,
                              const vnm_permute_opts *opts, int32_t *perm_out, int32_t *perm_in,
                              double *kept_before, double *kept_after, char *err, size_t err_len);

/* ---- canonical compressed form (METHOD §7) ----
 * On disk (checkpoints, DESIGN.md "Checkpoint"): a group /sparse/<name>/ holding the four arrays
 * as datasets of exactly these shapes and types, little-endian — vals f32 [O_pad, Gp, 2],
 * slots u8 [O_pad, Gp], cols i32 [O_pad/V, Gp, 4], rows i32 [O_pad] — with attributes
 * pattern ("V:N:M"), O, I, score ("magnitude" | "ria") and permuted (0 | 1). A permuted layer also
 * stores perm_out i32 [O] (= rows[0:O]) and perm_in i32 [I] for inspection and export; loading
 * needs only the four arrays, which vnm_sparse_validate checks before use. */
typedef struct {
    vnm_pattern pat;
    int64_t O, I;   /* logical shape of W */
    int64_t O_pad;  /* O rounded up to a multiple of V; rows ≥ O hold zeros */
    int64_t G, Gp;  /* ceil(I / M) groups per row; G padded to a multiple of 8 */
    float *vals;    /* [O_pad][Gp][2] kept values of each row and group, in slot order */
    uint8_t *slots; /* [O_pad][Gp] s0 | s1 << 2 with s0 < s1 < 4: which 2 of the block's 4 cols */
    int32_t *cols;  /* [O_pad / V][Gp][4] kept columns of each block as absolute input indices
                     * (ascending within a block), -1 where unused (padding, narrow tails) */
    int32_t *rows;  /* [O_pad] original output row of each stored row, -1 for padding rows */
} vnm_sparse_host;

vnm_status vnm_sparse_host_alloc(vnm_sparse_host *w, vnm_pattern p, int64_t O, int64_t I);
void vnm_sparse_host_free(vnm_sparse_host *w);
/* Compresses W[O][I] (original order) under mask[O][I] given in the permuted order defined by
 * perm_out / perm_in (NULL: identity): stored row o is W row perm_out[o], stored column j of the
 * mask is input perm_in[j]. The mask must pass vnm_mask_validate. */
vnm_status vnm_sparse_compress(vnm_pattern p, const float *W, const uint8_t *mask, int64_t O,
                               int64_t I, const int32_t *perm_out, const int32_t *perm_in,
                               vnm_sparse_host *out, char *err, size_t err_len);
/* W[O][I] (original order) = the masked weight the compressed form computes with. */
void vnm_sparse_decompress(const vnm_sparse_host *w, float *W);
/* vals[O_pad][Gp][2] = dense[O][I] read at w's kept positions (0 at padding): moves any dense
 * per-weight array (e.g. AdamW moments of W on the hand-over from SR-STE) to w's layout. */
void vnm_sparse_gather(const vnm_sparse_host *w, const float *dense, float *vals);
/* Structure checks: slot codes, distinct in-range columns per block, each input column in at most
 * one group of a block, padding rows and unused columns zero, rows a permutation. */
vnm_status vnm_sparse_validate(const vnm_sparse_host *w, char *err, size_t err_len);

/* ---- products of a compressed weight (CPU kernels, METHOD §5, §7) ----
 * Activations are token-major at this boundary (x[T, I], y[T, O]); the kernels pack them however
 * their micro-kernels want. Every product ACCUMULATES (+=) into its output, so callers pre-fill y
 * with the bias (or zeros) and gradients add up across uses. Stored row o writes output column
 * rows[o] (the output permutation is undone on store); rows[o] < 0 and cols < 0 are padding and
 * contribute nothing. The kernels compute only the kept products, are deterministic whatever the
 * thread count, and with integer-valued inputs small enough for exact f32 sums are bit-identical
 * to the plain-loop references. */
typedef struct {
    vnm_pattern pat;
    int64_t O, I, O_pad, G, Gp;
    const float *vals;    /* [O_pad][Gp][2] */
    const uint8_t *slots; /* [O_pad][Gp] */
    const int32_t *cols;  /* [O_pad / V][Gp][4] */
    const int32_t *rows;  /* [O_pad] */
} vnm_spmm_weight;

vnm_spmm_weight vnm_spmm_weight_of_host(const vnm_sparse_host *w);

/* y[T][O] += x[T][I] · Wᵀ */
void vnm_spmm_fwd(const vnm_spmm_weight *w, const float *x, int64_t T, float *y);
/* dx[T][I] += dy[T][O] · W */
void vnm_spmm_dx(const vnm_spmm_weight *w, const float *dy, int64_t T, float *dx);
/* dvals[O_pad][Gp][2] += (dyᵀ · x) at the kept positions */
void vnm_spmm_dw(const vnm_spmm_weight *w, const float *dy, const float *x, int64_t T,
                 float *dvals);

/* ---- the sparse-linear op (METHOD §5) ---- */
/* A compressed weight on a context: in mask-fixed training vals is the parameter (its gradient
 * and optimiser moments have the compressed shape); slots, cols, rows are fixed buffers. The
 * sparse kernels are the CPU's; other backends run the dense form: the values scattered into
 * the dense [O, I] weight they stand for (dense_index, made on first use), a dense linear, and
 * the gradient gathered back to the kept positions, so training is the same function with the
 * same compressed state (and VNM_SPARSE_DENSE=1 runs it on the CPU too, to check it). */
typedef struct {
    vnm_pattern pat;
    int64_t O, I, O_pad, G, Gp;
    vnm_tensor *vals;  /* f32 [O_pad, Gp, 2], requires grad */
    vnm_tensor *slots; /* u8 [O_pad, Gp] */
    vnm_tensor *cols;  /* i32 [O_pad / V, Gp, 4] */
    vnm_tensor *rows;  /* i32 [O_pad] */
    const char *name;
    vnm_tensor *dense_index; /* i32 [O_pad, Gp, 2]: each value's flat position in the dense
                                [O, I] weight, -1 for none (the dense form); NULL until used */
} vnm_sparse_weight;

/* The tensors live in ctx's persistent arena; the struct is freed with vnm_sparse_weight_free. */
vnm_sparse_weight *vnm_sparse_weight_new(vnm_ctx *ctx, const vnm_sparse_host *host,
                                         const char *name);
void vnm_sparse_weight_free(vnm_sparse_weight *w);
vnm_status vnm_sparse_weight_to_host(vnm_ctx *ctx, const vnm_sparse_weight *w,
                                     vnm_sparse_host *out); /* allocates out */

/* y[..., O] = x[..., I] · (W⊙Mk)ᵀ + b, through the sparse kernels in all three products. */
vnm_tensor *vnm_sparse_linear(vnm_ctx *ctx, vnm_tensor *x, vnm_sparse_weight *w, vnm_tensor *b);
/* The same with the values taken from vals (f32 [O_pad, Gp, 2], any tensor: a parameter, or the
 * output of other ops, which then receive its gradient) and the structure from w. */
vnm_tensor *vnm_sparse_linear_vals(vnm_ctx *ctx, vnm_tensor *x, const vnm_sparse_weight *w,
                                   vnm_tensor *vals, vnm_tensor *b);

/* SR-STE dynamic mode: the dense W[O, I] is the parameter; the mask is recomputed from |W| every
 * `every` steps; forward and dX use the masked weight, dW = dYᵀX + λ_W·(1−Mk)⊙W reaches every
 * weight. vnm_srste_freeze hands over to mask-fixed training with the current mask: the returned
 * weight computes the same function, and vnm_srste_layout + vnm_sparse_gather move the optimiser
 * moments of W to its vals, so training continues where it was. W is compressed once per step
 * number (every use within a step, backward included, reads that copy): change W only between
 * steps, as an optimiser does. */
typedef struct vnm_srste vnm_srste;
vnm_srste *vnm_srste_new(vnm_ctx *ctx, vnm_tensor *w, vnm_pattern p, vnm_selector sel,
                         int64_t every, float lambda_w);
void vnm_srste_free(vnm_srste *s);
vnm_tensor *vnm_srste_linear(vnm_ctx *ctx, vnm_srste *s, vnm_tensor *x, vnm_tensor *b,
                             int64_t step);
const uint8_t *vnm_srste_mask(const vnm_srste *s); /* current mask [O][I], NULL before one */
int64_t vnm_srste_mask_step(const vnm_srste *s);   /* step the mask was chosen at, -1 before */
/* Restores a mask chosen at mask_step (e.g. from a checkpoint): the next update comes at
 * mask_step + every. The mask must pass vnm_mask_validate. */
vnm_status vnm_srste_set_mask(vnm_srste *s, const uint8_t *mask, int64_t mask_step, char *err,
                              size_t err_len);
const vnm_sparse_host *vnm_srste_layout(const vnm_srste *s); /* W under the current mask */
vnm_sparse_weight *vnm_srste_freeze(vnm_ctx *ctx, vnm_srste *s, const char *name);

/* ---- LoRA adapters (METHOD §6, PEFT semantics) ----
 * A linear with a frozen base W [O, I] (f32 or bf16, any device for the dense mode) and adapters
 * A [r, I] (Kaiming-uniform, a = √5, i.e. U(±1/√I), as PEFT), B [O, r] (zeros), scale s = α/r
 * (α/√r with rsLoRA). Two modes:
 * - dense (mask NULL, stage 1): y = x·Wᵀ + b + s·B·A·drop(x), PEFT's forward; the caller computes
 *   the base product and vnm_lora_add adds the adapter branch.
 * - masked (stages 2 and 3): the effective weight (W + s·B·A) ⊙ Mk is computed at the kept
 *   positions only: the base values at the kept positions live in `kept` (frozen), the adapter
 *   product is sampled there (cost ∝ density · r) and the sparse kernels do all three products,
 *   so the gradient of the effective weight exists at kept positions only and dB = s·G·Aᵀ,
 *   dA = s·Bᵀ·G are sparse-times-dense. With dropout p > 0 the adapter term reads drop(x):
 *   y = x·(W⊙Mk)ᵀ + b + drop(x)·(s·B·A ⊙ Mk)ᵀ, which is PEFT's forward on the masked weights.
 * Stage 2 re-prunes every k steps (vnm_lora_reprune): merge W ← W + s·B·A (rounded to W's dtype,
 * as a merge into a bf16 base rounds in PEFT), B ← 0, A re-drawn, the current mask becomes the
 * previous one, and the new mask is the V:N:M mask of the §2 score of the merged W; the function
 * changes only by the mask change. The regulariser (λ/2)·‖(1 − Mk_prev) ⊙ (W + s·B·A)‖² acts on
 * the entries the previous mask pruned (none before the second re-prune: the mask before the
 * first is all ones). Stage 3 keeps the last mask. On the CPU the masked mode and the regulariser
 * run on the compressed form (the sparse kernels); other backends, which have no sparse kernels,
 * compose the same functions of dense ops (vnm_lora_masked_dense, vnm_lora_penalty_dense): the
 * effective weight as a dense [O, I] f32 tensor masked by a u8 copy of the mask on the device
 * (the regulariser checkpointed per linear, so its dense temporaries last one linear at a time;
 * the masked linears want the model's activation checkpointing for the same reason). The
 * optimiser state of A and B refers to the adapters before a re-prune: whoever calls it resets
 * their moments. */
typedef struct {
    int64_t r;
    double alpha;
    double dropout;
    bool rslora;
} vnm_lora_config;

typedef struct {
    char *module;             /* the base linear's module name, e.g. "model.layers.0.mlp.up_proj" */
    int64_t O, I, r;
    float scale;              /* α/r, or α/√r with rsLoRA */
    float dropout;            /* on the adapter input, training only */
    vnm_tensor *A;            /* [r, I] f32 parameter "<module>.lora_A.weight" */
    vnm_tensor *B;            /* [O, r] f32 parameter "<module>.lora_B.weight" */
    vnm_pattern pat;          /* of the masks, once masked */
    uint8_t *mask;            /* [O][I] current mask Mk; NULL in the dense mode */
    uint8_t *prev_mask;       /* [O][I] the mask before the last re-prune; NULL: all ones */
    int64_t mask_step;        /* the step the current mask was chosen at, -1 while dense */
    vnm_sparse_weight *kept;  /* W at the kept positions of mask (vals frozen, named
                               * "<module>.weight") and the layout of the masked mode (CPU) */
    vnm_tensor *mask_dev;     /* [O, I] u8 copy of mask on the device (dense form), or NULL */
    vnm_tensor *pruned_dev;   /* [O, I] u8: 1 where prev_mask pruned (dense form), or NULL */
    vnm_tensor *penalty_W;    /* the base and λ of the last vnm_lora_penalty_dense, for its */
    float penalty_lambda;     /* re-run in backward */
} vnm_lora;

float vnm_lora_scale(int64_t r, double alpha, bool rslora);
/* Adapters for a base of shape [O, I] on ctx (A drawn from the ctx RNG, B zero). NULL with a
 * message on ctx for a bad config (r < 1, α ≤ 0, dropout outside [0, 1)). */
vnm_lora *vnm_lora_new(vnm_ctx *ctx, const char *module, int64_t O, int64_t I,
                       const vnm_lora_config *cfg);
void vnm_lora_free(vnm_lora *l);
/* Dense mode: y + s·B·A·drop(x), y the base output [..., O] of x [..., I]. */
vnm_tensor *vnm_lora_add(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *x, vnm_tensor *y);
/* Masked mode: x·((W + s·B·A) ⊙ Mk)ᵀ + b (see above for dropout), W the frozen base [O, I]:
 * compressed on the CPU, vnm_lora_masked_dense elsewhere. */
vnm_tensor *vnm_lora_masked_linear(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_tensor *x,
                                   vnm_tensor *b);
/* The same function composed of dense ops on any backend (what non-CPU backends run). */
vnm_tensor *vnm_lora_masked_dense(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_tensor *x,
                                  vnm_tensor *b);
/* s·(B·A) at the kept positions of the current mask, in the compressed layout [O_pad, Gp, 2];
 * differentiable to A and B. */
vnm_tensor *vnm_lora_sampled(vnm_ctx *ctx, vnm_lora *l);
/* (λ/2)·Σ over entries the previous mask pruned of (W + s·B·A)², shape [1], differentiable to A
 * and B; a constant 0 when there is no previous mask. */
vnm_tensor *vnm_lora_penalty(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, float lambda);
/* The same composed of dense ops under vnm_checkpoint (what non-CPU backends run). */
vnm_tensor *vnm_lora_penalty_dense(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, float lambda);
/* The stage-2 update described above, at training step `step`. act_rms[I] is needed by RIA (the
 * calibration RMS of the layer input, vnm_calib_rms), ria_a its exponent. */
vnm_status vnm_lora_reprune(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_pattern pat,
                            vnm_selector sel, vnm_score_kind score, const double *act_rms,
                            double ria_a, int64_t step, char *err, size_t err_len);
/* Restores masks (e.g. from a checkpoint): mask must pass vnm_mask_validate for pat; prev_mask
 * NULL means all ones; kept is rebuilt from W. */
vnm_status vnm_lora_set_masks(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, vnm_pattern pat,
                              const uint8_t *mask, const uint8_t *prev_mask, int64_t mask_step,
                              char *err, size_t err_len);
/* PEFT's merge / unmerge in the dense mode: W ← W ± s·B·A (rounded to W's dtype). */
vnm_status vnm_lora_merge(vnm_ctx *ctx, vnm_lora *l, vnm_tensor *W, bool unmerge);
/* out[O][I] = (W + s·B·A) ⊙ Mk (Mk = 1 in the dense mode): the weight the layer computes with. */
vnm_status vnm_lora_effective_weight(vnm_ctx *ctx, const vnm_lora *l, const vnm_tensor *W,
                                     float *out);

#endif
