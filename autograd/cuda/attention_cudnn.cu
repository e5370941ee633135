/* autograd/cuda/attention_cudnn.cu — the optional half-precision attention entries
 * (attention_half_fwd / attention_half_bwd): fused scaled-dot-product attention in bf16 or f16
 * with f32 softmax statistics, run by cuDNN's flash-attention engines through the cuDNN graph
 * (backend) C API. No probabilities are stored: the forward keeps each query row's log-sum-exp
 * (stats) and the backward recomputes the probabilities from it.
 *
 * Method: each pass is an operation graph of cuDNN backend descriptors spelled the way
 * cudnn-frontend's composite SDPA nodes lower theirs, which is the pattern the fused engines
 * recognise (graph_fwd and graph_bwd list the operations). Q, K, V, O and the gradients are
 * described in place, [B, H, rows, D] with the caller's strides, K and V read as Kᵀ and Vᵀ by
 * swapping their last two dimensions and strides; grouped KV heads are expressed by K and V
 * having Hkv heads against Q's Hq, and in the backward dK and dV are computed per query head and
 * summed over each group by a reduction. Intermediates are virtual f32 tensors, except where
 * the frontend has a matmul read or write the io type: the probabilities (and their transposes)
 * and the per-query-head dK, dV. The scale and the mask's -inf travel by value in the variant
 * pack, so one plan serves every scale. The graph and the plan name the handle through the
 * *_HANDLE attributes, which cuDNN 9 marks deprecated (for device-property descriptors) but keeps.
 *
 * Loading: libcudnn.so.9 is opened at the first call (dlopen), not linked, so the programs start
 * on a machine without cuDNN, where attention runs the f32 kernels; the library's sub-libraries
 * sit beside it, as cuDNN's packages install them.
 *
 * Plans: the engine configs come from cuDNN's heuristics (mode A); the first one that finalises
 * into an execution plan is kept. Plans are cached per case (dtype, sizes, causal, the strides of
 * every operand) in a small table with round-robin replacement, together with every descriptor
 * behind them; a case cuDNN cannot plan is cached as such and not retried. The forward also
 * plans the backward, for gradients laid out like their inputs (dout like o), and declines when
 * that fails, so a case it ran is not refused by its backward. Workspace comes from the
 * stream-ordered pool on the backend's stream and is returned after the launch; the backward's
 * two f32 scratch tensors (the row sums of dO∘O and the dQ accumulator, which cuDNN zero-fills
 * itself since 9.6) share that allocation.
 *
 * Declined (false, nothing written; the op runs the f32 kernels): VNM_CUDA_NO_CUDNN=1 (silently);
 * no cuDNN handle; compute capability below 8.0; cuDNN older than 9.10.2 (the frontend excludes
 * 9.10.0/9.10.1 for forward bugs); head size not a multiple of 8 or above 128; a pointer not
 * 16-byte aligned; a stride not a positive multiple of 8 elements; causal with T != S (the mask
 * is top-left aligned); a single key (cuDNN's release notes: its backward does not support a
 * key length of 1); with cuDNN 9.15.0 or older, S not a multiple of 128 (those versions need a
 * padding-mask workaround in the backward that this file does not carry); no engine for the
 * graph (the case keeps its cache entry, without descriptors, so it is not planned again). Each
 * reason is printed once, in one line. A failed execution of an accepted plan prints the cuDNN
 * error and returns false.
 *
 * Not deterministic: this is the frontend's default backward graph, whose engines add dQ up
 * across key blocks in the f32 accumulator (FlashAttention-2's atomics), so dQ need not repeat
 * bit for bit from run to run, unlike the other CUDA kernels (common.cuh). The frontend's
 * deterministic variant (the matmul writes dQ directly) costs a B·Hq·T·S dP workspace.
 *
 * Verification: compiled for sm_80 and sm_90a with warnings as errors; the attribute names,
 * types and element counts follow cudnn_graph.h (9.19) and the graphs cudnn-frontend's lowering.
 * Running it needs a GPU: tests/test_backends.c compares both entries with the CPU's reference
 * entries (autograd/cpu/attention_half.c) in its half-precision attention cases. */
#include "common.cuh"

#include <cudnn_graph.h>
#include <dlfcn.h>
#include <math.h>
#include <string.h>

enum { CACHE_SIZE = 16, MAX_DESCS = 128, MAX_OPS = 40, MAX_CONFIGS = 8, MAX_REASONS = 16 };

/* Tensors the variant pack binds; a slot's UID is slot + 1, virtual tensors number from
 * VIRTUAL_UID. The first N_OPERANDS are the strided [B, H, rows, D] operands. */
enum {
    SLOT_Q, SLOT_K, SLOT_V, SLOT_O, SLOT_DQ, SLOT_DK, SLOT_DV, SLOT_DO, /* io type */
    SLOT_STATS, SLOT_SUM, SLOT_DQ_ACCUM,                                 /* f32 */
    SLOT_SCALE, SLOT_ONE, SLOT_NEG_INF,                                  /* by-value f32 */
    N_SLOTS,
    N_OPERANDS = SLOT_DO + 1,
    VIRTUAL_UID = 100
};

typedef cudnnBackendDescriptor_t desc;

/* One attention problem; all int64 so a key compares with memcmp. */
typedef struct {
    int64_t dt, B, Hq, Hkv, T, S, D, causal;
    vnm_attn_strides st[N_OPERANDS];
} attn_case;

/* The descriptors of one graph and its plan, destroyed together. ok turns false at the first
 * failed cuDNN call; every later call is then skipped. */
typedef struct {
    desc all[MAX_DESCS], ops[MAX_OPS];
    int n, nops;
    int64_t next_uid;
    cudnnDataType_t io;
    bool ok;
} builder;

typedef struct {
    builder b;
    desc exec; /* NULL: cuDNN cannot run this graph */
    int64_t workspace;
    bool tried;
} plan;

typedef struct {
    bool used;
    attn_case key;
    plan fwd, bwd;
} entry;

static cudnnHandle_t handle;
static size_t version;
static bool initialised, disabled;
static const char *said[MAX_REASONS]; /* the decline reasons printed so far */
static int n_said;
static entry cache[CACHE_SIZE];
static int cache_next; /* round-robin replacement once full */

/* cuDNN's entry points, looked up when the library is loaded. */
static struct {
    decltype(&cudnnGetVersion) GetVersion;
    decltype(&cudnnGetErrorString) GetErrorString;
    decltype(&cudnnGetLastErrorString) GetLastErrorString;
    decltype(&cudnnCreate) Create;
    decltype(&cudnnSetStream) SetStream;
    decltype(&cudnnBackendCreateDescriptor) BackendCreateDescriptor;
    decltype(&cudnnBackendDestroyDescriptor) BackendDestroyDescriptor;
    decltype(&cudnnBackendSetAttribute) BackendSetAttribute;
    decltype(&cudnnBackendGetAttribute) BackendGetAttribute;
    decltype(&cudnnBackendFinalize) BackendFinalize;
    decltype(&cudnnBackendExecute) BackendExecute;
} dnn;

/* Loads libcudnn.so.9 (found as the dynamic loader finds libraries: LD_LIBRARY_PATH, the
 * system's paths) and its entry points; false, with the reason printed, where it cannot. */
static bool load_cudnn(void)
{
    void *lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "vnm: cuDNN not loaded (%s); attention runs the f32 kernels\n", dlerror());
        return false;
    }
#define LOAD(name) (dnn.name = (decltype(dnn.name))dlsym(lib, "cudnn" #name)) != NULL
    bool ok = LOAD(GetVersion) && LOAD(GetErrorString) && LOAD(GetLastErrorString) &&
              LOAD(Create) && LOAD(SetStream) && LOAD(BackendCreateDescriptor) &&
              LOAD(BackendDestroyDescriptor) && LOAD(BackendSetAttribute) &&
              LOAD(BackendGetAttribute) && LOAD(BackendFinalize) && LOAD(BackendExecute);
#undef LOAD
    if (!ok) {
        fprintf(stderr, "vnm: cuDNN lacks an entry point (%s); attention runs the f32 kernels\n",
                dlerror());
        dlclose(lib);
    }
    return ok; /* loaded for the process's lifetime */
}

/* Says once per process and reason why a case falls back on the f32 kernels; with_cudnn adds
 * cuDNN's own last message (for a graph it could not plan). */
static bool decline(const char *why, bool with_cudnn)
{
    for (int i = 0; i < n_said; i++)
        if (said[i] == why) return false;
    if (n_said < MAX_REASONS) said[n_said++] = why;
    char detail[256] = "";
    if (with_cudnn) dnn.GetLastErrorString(detail, sizeof detail);
    fprintf(stderr, "vnm: cuDNN attention declined (%s%s%s); attention runs the f32 kernels\n",
            why, detail[0] ? ": " : "", detail);
    return false;
}

static bool cudnn_ready(void)
{
    if (initialised) return !disabled;
    initialised = disabled = true; /* until every check below passes */
    const char *env = getenv("VNM_CUDA_NO_CUDNN");
    if (env && env[0] == '1') return false;
    int dev = 0, major = 0;
    VNM_CUDA_CHECK(cudaGetDevice(&dev));
    VNM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    if (major < 8) return decline("compute capability below 8.0", false);
    if (!load_cudnn()) return false;
    version = dnn.GetVersion();
    if (version < 91002) return decline("cuDNN older than 9.10.2", false);
    if (dnn.Create(&handle) != CUDNN_STATUS_SUCCESS ||
        dnn.SetStream(handle, vnm_cuda_stream()) != CUDNN_STATUS_SUCCESS) {
        fprintf(stderr, "vnm: cuDNN unavailable; attention runs the f32 kernels\n");
        return false;
    }
    disabled = false;
    return true;
}

/* Why this case cannot run here, or NULL. */
static const char *unsupported(const attn_case *c, const void *const *ptr, int nptr)
{
    if (c->dt != VNM_DTYPE_BF16 && c->dt != VNM_DTYPE_F16) return "dtype not bf16 or f16";
    if (c->B < 1 || c->T < 1 || c->S < 1 || c->Hq < 1 || c->Hkv < 1 || c->Hq % c->Hkv)
        return "empty or ungrouped shape";
    if (c->D < 8 || c->D % 8 || c->D > 128) return "head size not a multiple of 8 up to 128";
    if (c->causal && c->T != c->S) return "causal mask with T != S";
    /* cuDNN's release notes: no backward with a key length of 1 */
    if (c->S == 1) return "a single key (S == 1)";
    if (version <= 91500 && c->S % 128) return "cuDNN 9.15.0 or older needs S % 128 == 0";
    for (int i = 0; i < nptr; i++)
        if ((uintptr_t)ptr[i] % 16) return "an operand not 16-byte aligned";
    for (int i = 0; i < N_OPERANDS; i++) {
        const vnm_attn_strides s = c->st[i];
        if (s.b < 1 || s.h < 1 || s.t < 1 || s.b % 8 || s.h % 8 || s.t % 8)
            return "a stride not a positive multiple of 8 elements";
    }
    return NULL;
}

/* ---- graph building: every helper is a no-op once b->ok is false ---- */

static desc make(builder *b, cudnnBackendDescriptorType_t type)
{
    desc d = NULL;
    b->ok = b->ok && b->n < MAX_DESCS &&
            dnn.BackendCreateDescriptor(type, &d) == CUDNN_STATUS_SUCCESS;
    if (!b->ok) return NULL;
    b->all[b->n++] = d;
    return d;
}

static void set(builder *b, desc d, cudnnBackendAttributeName_t name,
                cudnnBackendAttributeType_t type, int64_t count, const void *value)
{
    b->ok = b->ok && dnn.BackendSetAttribute(d, name, type, count, value) == CUDNN_STATUS_SUCCESS;
}

static void set_desc(builder *b, desc d, cudnnBackendAttributeName_t name, desc value)
{
    set(b, d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value);
}

static void finish(builder *b, desc d)
{
    b->ok = b->ok && dnn.BackendFinalize(d) == CUDNN_STATUS_SUCCESS;
}

static void release(builder *b)
{
    while (b->n > 0) dnn.BackendDestroyDescriptor(b->all[--b->n]);
    b->nops = 0;
}

/* Dimensions and element strides of a 4-d tensor. */
typedef struct {
    int64_t dim[4], stride[4];
} shape;

static shape packed(int64_t n0, int64_t n1, int64_t n2, int64_t n3)
{
    shape s = {{n0, n1, n2, n3}, {n1 * n2 * n3, n2 * n3, n3, 1}};
    return s;
}

/* The same memory seen with its last two dimensions swapped. */
static shape transposed(shape s)
{
    shape t = {{s.dim[0], s.dim[1], s.dim[3], s.dim[2]},
               {s.stride[0], s.stride[1], s.stride[3], s.stride[2]}};
    return t;
}

/* Operand i: [B, Hq, T, D] for q, o and their gradients, [B, Hkv, S, D] for k, v and theirs. */
static shape operand(const attn_case *c, int i)
{
    const bool kv = i == SLOT_K || i == SLOT_V || i == SLOT_DK || i == SLOT_DV;
    const vnm_attn_strides st = c->st[i];
    shape s = {{c->B, kv ? c->Hkv : c->Hq, kv ? c->S : c->T, c->D}, {st.b, st.h, st.t, 1}};
    return s;
}

static desc tensor(builder *b, int64_t uid, cudnnDataType_t type, shape s, bool is_virtual,
                   bool by_value)
{
    const int64_t alignment = 16;
    desc t = make(b, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    set(b, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set(b, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    set(b, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, s.dim);
    set(b, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, s.stride);
    set(b, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    if (is_virtual) set(b, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) set(b, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    finish(b, t);
    return t;
}

/* A caller's operand in the io type, optionally seen transposed (Kᵀ, Vᵀ). */
static desc operand_tensor(builder *b, const attn_case *c, int slot, bool transpose)
{
    const shape s = operand(c, slot);
    return tensor(b, slot + 1, b->io, transpose ? transposed(s) : s, false, false);
}

static desc f32_tensor(builder *b, int slot, shape s)
{
    return tensor(b, slot + 1, CUDNN_DATA_FLOAT, s, false, false);
}

static desc scalar(builder *b, int slot)
{
    return tensor(b, slot + 1, CUDNN_DATA_FLOAT, packed(1, 1, 1, 1), false, true);
}

static desc virt(builder *b, cudnnDataType_t type, shape s)
{
    return tensor(b, b->next_uid++, type, s, true, false);
}

static desc add_op(builder *b, desc op, desc y)
{
    finish(b, op);
    b->ok = b->ok && b->nops < MAX_OPS;
    if (b->ok) b->ops[b->nops++] = op;
    return y;
}

/* y = mode(x [, in_b [, in_t]]) computed in math; axis ≥ 0 is GEN_INDEX's axis. */
static desc pointwise_ex(builder *b, cudnnPointwiseMode_t mode, cudnnDataType_t math,
                         int64_t axis, desc y, desc x, desc in_b, desc in_t)
{
    const float one = 1.0f;
    desc pw = make(b, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set(b, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set(b, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (axis >= 0) set(b, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    finish(b, pw);
    desc op = make(b, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set_desc(b, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
    set_desc(b, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
    if (in_b) set_desc(b, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, in_b);
    if (in_t) set_desc(b, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, in_t);
    set_desc(b, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
    set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one);
    set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
    return add_op(b, op, y);
}

static desc pointwise(builder *b, cudnnPointwiseMode_t mode, desc y, desc x, desc in_b)
{
    return pointwise_ex(b, mode, CUDNN_DATA_FLOAT, -1, y, x, in_b, NULL);
}

/* c = a·bm over the last two dimensions, f32 accumulation. */
static desc matmul(builder *b, desc c, desc a, desc bm)
{
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    desc mm = make(b, CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    set(b, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    finish(b, mm);
    desc op = make(b, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set_desc(b, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a);
    set_desc(b, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, bm);
    set_desc(b, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c);
    set_desc(b, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
    return add_op(b, op, c);
}

/* y = x reduced (f32) over the dimensions where y is smaller. */
static desc reduction(builder *b, cudnnReduceTensorOp_t mode, desc y, desc x)
{
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    desc rd = make(b, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    set(b, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    set(b, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    finish(b, rd);
    desc op = make(b, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set_desc(b, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x);
    set_desc(b, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
    set_desc(b, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd);
    return add_op(b, op, y);
}

/* y = x seen through y's dimensions and strides (how the pattern transposes a virtual tensor). */
static desc reshape(builder *b, desc y, desc x)
{
    desc op = make(b, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    set_desc(b, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x);
    set_desc(b, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y);
    return add_op(b, op, y);
}

/* Scores s [B, Hq, T, S] with -inf where the key comes after the query (row < col). */
static desc causal_mask(builder *b, desc s, shape sc)
{
    desc row = pointwise_ex(b, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, 2,
                            virt(b, CUDNN_DATA_INT32, sc), s, NULL, NULL);
    desc col = pointwise_ex(b, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, 3,
                            virt(b, CUDNN_DATA_INT32, sc), s, NULL, NULL);
    desc keep = pointwise_ex(b, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, -1,
                             virt(b, CUDNN_DATA_BOOLEAN, sc), row, col, NULL);
    desc neg_inf = scalar(b, SLOT_NEG_INF);
    return pointwise_ex(b, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, -1,
                        virt(b, CUDNN_DATA_FLOAT, sc), s, neg_inf, keep); /* keep ? s : -inf */
}

/* Forward (scores f32 [B, Hq, T, S], row statistics f32 [B, Hq, T, 1]):
 *   S = Q·Kᵀ                       matmul
 *   S = S·scale                    pointwise MUL, by-value scale
 *   S = row ≥ col ? S : -inf       causal only: GEN_INDEX (rows), GEN_INDEX (cols), CMP_GE,
 *                                  BINARY_SELECT
 *   M = max S, E = exp(S - M)      reduction MAX, pointwise SUB, EXP
 *   Σ = sum E, Stats = M + log Σ   reduction ADD, pointwise LOG, ADD into stats
 *   P = E / Σ (io type)            pointwise DIV
 *   O = P·V                        matmul into o */
static void graph_fwd(builder *b, const attn_case *c)
{
    const shape sc = packed(c->B, c->Hq, c->T, c->S), rows = packed(c->B, c->Hq, c->T, 1);
    desc q = operand_tensor(b, c, SLOT_Q, false), kt = operand_tensor(b, c, SLOT_K, true);
    desc v = operand_tensor(b, c, SLOT_V, false), o = operand_tensor(b, c, SLOT_O, false);
    desc stats = f32_tensor(b, SLOT_STATS, rows), scale = scalar(b, SLOT_SCALE);

    desc s = matmul(b, virt(b, CUDNN_DATA_FLOAT, sc), q, kt);
    s = pointwise(b, CUDNN_POINTWISE_MUL, virt(b, CUDNN_DATA_FLOAT, sc), s, scale);
    if (c->causal) s = causal_mask(b, s, sc);
    desc m = reduction(b, CUDNN_REDUCE_TENSOR_MAX, virt(b, CUDNN_DATA_FLOAT, rows), s);
    desc e = pointwise(b, CUDNN_POINTWISE_SUB, virt(b, CUDNN_DATA_FLOAT, sc), s, m);
    e = pointwise(b, CUDNN_POINTWISE_EXP, virt(b, CUDNN_DATA_FLOAT, sc), e, NULL);
    desc sum = reduction(b, CUDNN_REDUCE_TENSOR_ADD, virt(b, CUDNN_DATA_FLOAT, rows), e);
    desc log_sum = pointwise(b, CUDNN_POINTWISE_LOG, virt(b, CUDNN_DATA_FLOAT, rows), sum, NULL);
    pointwise(b, CUDNN_POINTWISE_ADD, stats, m, log_sum);
    desc p = pointwise(b, CUDNN_POINTWISE_DIV, virt(b, b->io, sc), e, sum);
    matmul(b, o, p, v);
}

/* y [B, Hkv, S, D] = a·bm summed over the query heads of each KV head: with grouped heads the
 * matmul gives one [B, Hq, S, D] (virtual, io type) that a reduction folds. */
static void kv_grad(builder *b, const attn_case *c, desc y, desc a, desc bm)
{
    if (c->Hq == c->Hkv) {
        matmul(b, y, a, bm);
        return;
    }
    desc full = matmul(b, virt(b, b->io, packed(c->B, c->Hq, c->S, c->D)), a, bm);
    reduction(b, CUDNN_REDUCE_TENSOR_ADD, y, full);
}

/* Backward (FlashAttention-2's, as cudnn-frontend's composite SDPA backward spells it):
 *   Σ = sum_d dO∘O, times 1        pointwise MUL, reduction ADD, MUL by the by-value one (the
 *                                  frontend's dropout-scale slot) into the f32 scratch Σ
 *   P = exp(Q·Kᵀ·scale - Stats)    matmul, pointwise MUL, SUB, [causal mask as in the forward],
 *                                  EXP; P stays f32
 *   dV = Pᵀ·dO                     RESHAPE of P to [B, Hq, S, T] (io type), matmul [+ reduction]
 *   dS = P∘(dO·Vᵀ - Σ)·scale       matmul, pointwise SUB, MUL, MUL
 *   dK = dSᵀ·Q                     RESHAPE of dS, matmul [+ reduction]
 *   dQ = dS·K                      RESHAPE of Kᵀ back to K, matmul into the f32 scratch
 *                                  accumulator, pointwise IDENTITY into dq */
static void graph_bwd(builder *b, const attn_case *c)
{
    const shape sc = packed(c->B, c->Hq, c->T, c->S), rows = packed(c->B, c->Hq, c->T, 1);
    const shape qd = packed(c->B, c->Hq, c->T, c->D);
    desc q = operand_tensor(b, c, SLOT_Q, false), kt = operand_tensor(b, c, SLOT_K, true);
    desc vt = operand_tensor(b, c, SLOT_V, true), o = operand_tensor(b, c, SLOT_O, false);
    desc dout = operand_tensor(b, c, SLOT_DO, false), dq = operand_tensor(b, c, SLOT_DQ, false);
    desc dk = operand_tensor(b, c, SLOT_DK, false), dv = operand_tensor(b, c, SLOT_DV, false);
    desc stats = f32_tensor(b, SLOT_STATS, rows), sum = f32_tensor(b, SLOT_SUM, rows);
    desc dq_accum = f32_tensor(b, SLOT_DQ_ACCUM, qd);
    desc scale = scalar(b, SLOT_SCALE), one = scalar(b, SLOT_ONE);

    desc x = pointwise(b, CUDNN_POINTWISE_MUL, virt(b, CUDNN_DATA_FLOAT, qd), dout, o);
    x = reduction(b, CUDNN_REDUCE_TENSOR_ADD, virt(b, CUDNN_DATA_FLOAT, rows), x);
    pointwise(b, CUDNN_POINTWISE_MUL, sum, x, one);

    desc p = matmul(b, virt(b, CUDNN_DATA_FLOAT, sc), q, kt);
    p = pointwise(b, CUDNN_POINTWISE_MUL, virt(b, CUDNN_DATA_FLOAT, sc), p, scale);
    p = pointwise(b, CUDNN_POINTWISE_SUB, virt(b, CUDNN_DATA_FLOAT, sc), p, stats);
    if (c->causal) p = causal_mask(b, p, sc);
    p = pointwise(b, CUDNN_POINTWISE_EXP, virt(b, CUDNN_DATA_FLOAT, sc), p, NULL);
    desc pt = reshape(b, virt(b, b->io, transposed(sc)), p);
    kv_grad(b, c, dv, pt, dout);

    desc ds = matmul(b, virt(b, CUDNN_DATA_FLOAT, sc), dout, vt);
    ds = pointwise(b, CUDNN_POINTWISE_SUB, virt(b, CUDNN_DATA_FLOAT, sc), ds, sum);
    ds = pointwise(b, CUDNN_POINTWISE_MUL, virt(b, CUDNN_DATA_FLOAT, sc), ds, p);
    ds = pointwise(b, CUDNN_POINTWISE_MUL, virt(b, CUDNN_DATA_FLOAT, sc), ds, scale);
    desc dst = reshape(b, virt(b, b->io, transposed(sc)), ds);
    kv_grad(b, c, dk, dst, q);

    desc k = reshape(b, virt(b, CUDNN_DATA_FLOAT, operand(c, SLOT_K)), kt);
    matmul(b, dq_accum, ds, k);
    pointwise(b, CUDNN_POINTWISE_IDENTITY, dq, dq_accum, NULL);
}

/* The operation graph of b's operations and the first engine config of cuDNN's heuristics that
 * finalises into an execution plan (its workspace size in *workspace); NULL when none does. */
static desc make_plan(builder *b, int64_t *workspace)
{
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    desc graph = make(b, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set(b, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    set(b, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, b->nops, b->ops);
    finish(b, graph);
    desc heur = make(b, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    set_desc(b, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    set(b, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    finish(b, heur);
    desc cfg[MAX_CONFIGS]; /* GetAttribute fills descriptors made beforehand */
    for (int i = 0; i < MAX_CONFIGS; i++) cfg[i] = make(b, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t n = 0, count = 0;
    b->ok = b->ok && dnn.BackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, MAX_CONFIGS, &n,
                                              cfg) == CUDNN_STATUS_SUCCESS;
    for (int64_t i = 0; b->ok && i < n && i < MAX_CONFIGS; i++) {
        desc exec = make(b, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        set(b, exec, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
        set_desc(b, exec, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfg[i]);
        if (b->ok && dnn.BackendFinalize(exec) == CUDNN_STATUS_SUCCESS) {
            b->ok = dnn.BackendGetAttribute(exec, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                             CUDNN_TYPE_INT64, 1, &count,
                                             workspace) == CUDNN_STATUS_SUCCESS;
            return b->ok ? exec : NULL;
        }
    }
    return NULL;
}

/* Whether p can run, building it the first time. */
static bool plan_ready(plan *p, const attn_case *c, bool backward)
{
    if (p->tried) return p->exec != NULL;
    p->tried = true;
    builder *b = &p->b;
    b->ok = true;
    b->next_uid = VIRTUAL_UID;
    b->io = c->dt == VNM_DTYPE_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    if (backward)
        graph_bwd(b, c);
    else
        graph_fwd(b, c);
    p->exec = make_plan(b, &p->workspace);
    if (!p->exec) release(b);
    return p->exec != NULL;
}

/* The cache entry of case c; a new case takes the next slot in turn, dropping its plans. */
static entry *entry_for(const attn_case *c)
{
    for (int i = 0; i < CACHE_SIZE; i++)
        if (cache[i].used && !memcmp(&cache[i].key, c, sizeof *c)) return &cache[i];
    entry *e = &cache[cache_next];
    cache_next = (cache_next + 1) % CACHE_SIZE;
    /* A plan may own the code of kernels still queued: let them finish first. */
    if (e->fwd.exec || e->bwd.exec) VNM_CUDA_CHECK(cudaStreamSynchronize(vnm_cuda_stream()));
    release(&e->fwd.b);
    release(&e->bwd.b);
    memset(e, 0, sizeof *e);
    e->used = true;
    e->key = *c;
    return e;
}

static attn_case make_case(vnm_dtype dt, int64_t B, int64_t Hq, int64_t Hkv, int64_t T,
                           int64_t S, int64_t D, bool causal, const vnm_attn_strides *st)
{
    attn_case c = {dt, B, Hq, Hkv, T, S, D, causal, {}};
    memcpy(c.st, st, sizeof c.st);
    return c;
}

#define CUDNN_OK(call) cudnn_ok((call), #call, __FILE__, __LINE__)

static bool cudnn_ok(cudnnStatus_t s, const char *what, const char *file, int line)
{
    if (s == CUDNN_STATUS_SUCCESS) return true;
    fprintf(stderr, "vnm: cuDNN error at %s:%d in %s: %s\n", file, line, what,
            dnn.GetErrorString(s));
    return false;
}

/* Runs p on the backend stream with the tensors of the non-NULL slots of ptr. */
static bool execute(const plan *p, void *const ptr[N_SLOTS], void *workspace)
{
    int64_t uid[N_SLOTS], n = 0;
    void *data[N_SLOTS];
    for (int i = 0; i < N_SLOTS; i++) {
        if (!ptr[i]) continue;
        uid[n] = i + 1;
        data[n++] = ptr[i];
    }
    desc pack = NULL;
    bool ok =
        CUDNN_OK(dnn.BackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack)) &&
        CUDNN_OK(dnn.BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                                          CUDNN_TYPE_INT64, n, uid)) &&
        CUDNN_OK(dnn.BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                          CUDNN_TYPE_VOID_PTR, n, data)) &&
        CUDNN_OK(dnn.BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                          CUDNN_TYPE_VOID_PTR, 1, &workspace)) &&
        CUDNN_OK(dnn.BackendFinalize(pack)) &&
        CUDNN_OK(dnn.BackendExecute(handle, p->exec, pack));
    if (pack) dnn.BackendDestroyDescriptor(pack);
    return ok;
}

static int64_t round_up(int64_t bytes) { return (bytes + 255) / 256 * 256; }

/* Device scratch from the stream-ordered pool, in order with the kernels that use it. */
static char *scratch(int64_t bytes)
{
    void *p = NULL;
    if (bytes > 0) VNM_CUDA_CHECK(cudaMallocAsync(&p, (size_t)bytes, vnm_cuda_stream()));
    return (char *)p;
}

static void scratch_free(void *p)
{
    if (p) VNM_CUDA_CHECK(cudaFreeAsync(p, vnm_cuda_stream()));
}

static bool cuda_attention_half_fwd(vnm_dtype dt, void *o, vnm_attn_strides os, float *stats,
                                    const void *q, vnm_attn_strides qs, const void *k,
                                    vnm_attn_strides ks, const void *v, vnm_attn_strides vs,
                                    int64_t B, int64_t Hq, int64_t Hkv, int64_t T, int64_t S,
                                    int64_t D, bool causal, float scale)
{
    if (!cudnn_ready()) return false;
    /* the backward planned alongside: gradients laid out like q, k, v, and dout like o */
    const vnm_attn_strides st[N_OPERANDS] = {qs, ks, vs, os, qs, ks, vs, os};
    const attn_case c = make_case(dt, B, Hq, Hkv, T, S, D, causal, st);
    const void *const operands[] = {o, stats, q, k, v};
    const char *why = unsupported(&c, operands, 5);
    if (why) return decline(why, false);
    entry *e = entry_for(&c);
    if (!plan_ready(&e->fwd, &c, false) || !plan_ready(&e->bwd, &c, true)) {
        release(&e->fwd.b); /* the entry stays, as a case not to try again */
        e->fwd.exec = NULL;
        return decline("no cuDNN engine for this case", true);
    }
    float neg_inf = -INFINITY;
    void *ptr[N_SLOTS] = {NULL};
    ptr[SLOT_Q] = (void *)q;
    ptr[SLOT_K] = (void *)k;
    ptr[SLOT_V] = (void *)v;
    ptr[SLOT_O] = o;
    ptr[SLOT_STATS] = stats;
    ptr[SLOT_SCALE] = &scale;
    if (causal) ptr[SLOT_NEG_INF] = &neg_inf;
    char *workspace = scratch(e->fwd.workspace);
    const bool ok = execute(&e->fwd, ptr, workspace);
    scratch_free(workspace);
    return ok;
}

static bool cuda_attention_half_bwd(vnm_dtype dt, void *dq, vnm_attn_strides dqs, void *dk,
                                    vnm_attn_strides dks, void *dv, vnm_attn_strides dvs,
                                    const void *dout, vnm_attn_strides dos, const void *o,
                                    vnm_attn_strides os, const float *stats, const void *q,
                                    vnm_attn_strides qs, const void *k, vnm_attn_strides ks,
                                    const void *v, vnm_attn_strides vs, int64_t B, int64_t Hq,
                                    int64_t Hkv, int64_t T, int64_t S, int64_t D, bool causal,
                                    float scale)
{
    if (!cudnn_ready()) return false;
    const vnm_attn_strides st[N_OPERANDS] = {qs, ks, vs, os, dqs, dks, dvs, dos};
    const attn_case c = make_case(dt, B, Hq, Hkv, T, S, D, causal, st);
    const void *const operands[] = {dq, dk, dv, dout, o, stats, q, k, v};
    const char *why = unsupported(&c, operands, 9);
    if (why) return decline(why, false);
    entry *e = entry_for(&c);
    if (!plan_ready(&e->bwd, &c, true)) return decline("no cuDNN engine for this case", true);
    /* one allocation: cuDNN's workspace, then Σ [B, Hq, T] and dQ's accumulator [B, Hq, T, D] */
    const int64_t ws = round_up(e->bwd.workspace), sums = round_up(B * Hq * T * 4);
    char *buf = scratch(ws + sums + B * Hq * T * D * 4);
    float one = 1.0f, neg_inf = -INFINITY;
    void *ptr[N_SLOTS] = {NULL};
    ptr[SLOT_Q] = (void *)q;
    ptr[SLOT_K] = (void *)k;
    ptr[SLOT_V] = (void *)v;
    ptr[SLOT_O] = (void *)o;
    ptr[SLOT_DO] = (void *)dout;
    ptr[SLOT_DQ] = dq;
    ptr[SLOT_DK] = dk;
    ptr[SLOT_DV] = dv;
    ptr[SLOT_STATS] = (void *)stats;
    ptr[SLOT_SUM] = buf + ws;
    ptr[SLOT_DQ_ACCUM] = buf + ws + sums;
    ptr[SLOT_SCALE] = &scale;
    ptr[SLOT_ONE] = &one;
    if (causal) ptr[SLOT_NEG_INF] = &neg_inf;
    const bool ok = execute(&e->bwd, ptr, buf);
    scratch_free(buf);
    return ok;
}

void vnm_cuda_register_attention_cudnn(vnm_backend *be)
{
    be->attention_half_fwd = cuda_attention_half_fwd;
    be->attention_half_bwd = cuda_attention_half_bwd;
    be->attention_half_deterministic = false; /* dQ's atomics */
}
