/* autograd/cuda/gemm_lt.cu — the linear forward as one cuBLASLt matmul with the bias added in its
 * epilogue (y = x·wᵀ + b), f32 operands (no TF32: CUBLAS_COMPUTE_32F) or bf16/f16 ones with f32
 * accumulation and output. Saves the separate pass that broadcasts the bias into y before the GEMM.
 *
 * Layout: row-major y[M, N] = x[M, K]·w[N, K]ᵀ is column-major yᵀ (N × M, ld N) = op(A)·B with
 * A = w seen as the column-major K × N matrix wᵀ (ld K, transposed) and B = x seen as xᵀ (K × M,
 * ld K); the bias runs along D's rows, one per output feature.
 *
 * The algorithm comes from cublasLtMatmulAlgoGetHeuristic, asked once per (dtype, M, N, K, bias?,
 * pointer alignments) and cached: the heuristic's choice depends on the alignment of A, B, D and
 * the bias, which is passed as the preference's minimum (views can start anywhere). When no
 * algorithm fits, or the matmul fails, or VNM_CUDA_NO_LT=1, the entry returns false and the op runs
 * the unfused path. Runs on the backend's stream like every other kernel.
 *
 * No GELU epilogue: cuBLASLt's computes the tanh approximation, while the ViT (timm's nn.GELU)
 * uses the exact erf form and LLaMA uses SiLU, so a fused activation would change the results;
 * the activation stays a separate kernel. */
#include "common.cuh"

#include <cublasLt.h>
#include <string.h>

enum { WORKSPACE_BYTES = 32 << 20, CACHE_SIZE = 128 };

typedef struct {
    bool used, found;
    vnm_dtype dt;
    int64_t M, N, K;
    bool bias;
    uint32_t align[4]; /* A, B, D, bias */
    cublasLtMatmulAlgo_t algo;
} algo_entry;

static cublasLtHandle_t lt;
static void *workspace;
static bool disabled, initialised;
static algo_entry cache[CACHE_SIZE];
static int cache_next; /* round-robin replacement once full */

static bool lt_ready(void)
{
    if (!initialised) {
        initialised = true;
        const char *env = getenv("VNM_CUDA_NO_LT");
        disabled = env && env[0] == '1';
        if (!disabled && (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS ||
                          cudaMalloc(&workspace, WORKSPACE_BYTES) != cudaSuccess)) {
            fprintf(stderr, "vnm: cuBLASLt unavailable; linear layers run unfused\n");
            (void)cudaGetLastError(); /* clear a failed allocation */
            disabled = true;
        }
    }
    return !disabled;
}

/* The largest power of two dividing the address, at most 16: the most any cuBLASLt kernel needs,
 * so that a tensor placed at 64, 128 or 256 bytes gets the same algorithm (the same bits). */
static uint32_t alignment(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 16;
    while (al > 1 && a % al) al /= 2;
    return al;
}

static cudaDataType_t operand_type(vnm_dtype dt)
{
    return dt == VNM_DTYPE_BF16 ? CUDA_R_16BF : dt == VNM_DTYPE_F16 ? CUDA_R_16F : CUDA_R_32F;
}

typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulPreference_t pref;
} lt_descs;

static void descs_free(lt_descs *s)
{
    if (s->pref) cublasLtMatmulPreferenceDestroy(s->pref);
    if (s->d) cublasLtMatrixLayoutDestroy(s->d);
    if (s->b) cublasLtMatrixLayoutDestroy(s->b);
    if (s->a) cublasLtMatrixLayoutDestroy(s->a);
    if (s->op) cublasLtMatmulDescDestroy(s->op);
}

static bool desc_set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v,
                     size_t n)
{
    return cublasLtMatmulDescSetAttribute(d, a, v, n) == CUBLAS_STATUS_SUCCESS;
}

static bool pref_set(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a,
                     const void *v, size_t n)
{
    return cublasLtMatmulPreferenceSetAttribute(p, a, v, n) == CUBLAS_STATUS_SUCCESS;
}

static bool layout(cublasLtMatrixLayout_t *l, cudaDataType_t t, int64_t rows, int64_t cols)
{
    return cublasLtMatrixLayoutCreate(l, t, (uint64_t)rows, (uint64_t)cols, rows) ==
           CUBLAS_STATUS_SUCCESS;
}

static bool descs_make(lt_descs *s, vnm_dtype dt, int64_t M, int64_t N, int64_t K,
                       const float *b, const uint32_t align[4])
{
    memset(s, 0, sizeof *s);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    cudaDataType_t t = operand_type(dt);
    uint64_t ws = WORKSPACE_BYTES;
    bool ok = cublasLtMatmulDescCreate(&s->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == 0 &&
              desc_set(s->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) &&
              desc_set(s->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) &&
              desc_set(s->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) &&
              (!b || desc_set(s->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b)) &&
              layout(&s->a, t, K, N) && layout(&s->b, t, K, M) && layout(&s->d, CUDA_R_32F, N, M) &&
              cublasLtMatmulPreferenceCreate(&s->pref) == 0 &&
              pref_set(s->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws) &&
              pref_set(s->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align[0], 4) &&
              pref_set(s->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align[1], 4) &&
              pref_set(s->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align[2], 4) &&
              pref_set(s->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align[2], 4);
    if (!ok) descs_free(s);
    return ok;
}

/* The cached heuristic answer for this problem, asked on a miss. */
static const algo_entry *algo_for(const lt_descs *s, vnm_dtype dt, int64_t M, int64_t N,
                                  int64_t K, bool bias, const uint32_t align[4])
{
    for (int i = 0; i < CACHE_SIZE; i++) {
        const algo_entry *e = &cache[i];
        if (e->used && e->dt == dt && e->M == M && e->N == N && e->K == K && e->bias == bias &&
            !memcmp(e->align, align, sizeof e->align))
            return e;
    }
    algo_entry *e = &cache[cache_next];
    cache_next = (cache_next + 1) % CACHE_SIZE;
    memset(e, 0, sizeof *e);
    e->used = true;
    e->dt = dt;
    e->M = M;
    e->N = N;
    e->K = K;
    e->bias = bias;
    memcpy(e->align, align, sizeof e->align);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (cublasLtMatmulAlgoGetHeuristic(lt, s->op, s->a, s->b, s->d, s->d, s->pref, 1, &res,
                                       &found) == CUBLAS_STATUS_SUCCESS &&
        found > 0) {
        e->found = true;
        e->algo = res.algo;
    }
    return e;
}

static bool cuda_linear_fwd(vnm_dtype dt, int64_t M, int64_t N, int64_t K, const void *x,
                            const void *w, const float *b, float *y)
{
    if (M == 0 || N == 0 || K == 0 || !lt_ready()) return false;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return false;
    uint32_t align[4] = {alignment(w), alignment(x), alignment(y), b ? alignment(b) : 256};
    lt_descs s;
    if (!descs_make(&s, dt, M, N, K, b, align)) return false;
    const algo_entry *e = algo_for(&s, dt, M, N, K, b != NULL, align);
    const float one = 1.0f, zero = 0.0f;
    bool ok = e->found && cublasLtMatmul(lt, s.op, &one, w, s.a, x, s.b, &zero, y, s.d, y, s.d,
                                         &e->algo, workspace, WORKSPACE_BYTES,
                                         vnm_cuda_stream()) ==
                              CUBLAS_STATUS_SUCCESS;
    descs_free(&s);
    return ok;
}

void vnm_cuda_register_gemm_lt(vnm_backend *be) { be->linear_fwd = cuda_linear_fwd; }
