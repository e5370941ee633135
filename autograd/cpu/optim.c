/* autograd/cpu/optim.c — CPU kernels of the optimisers: sum of squares (gradient clipping), and
 * the SGD and AdamW updates of one flat tensor.
 *
 * The updates reproduce torch.optim's single-tensor CPU path (foreach=False) operation by
 * operation in f32. torch's CPU kernels fuse the multiply-adds of add(alpha=), addcmul and lerp
 * (measured on its AVX2 build: bit-identical to fmaf, not to a separate multiply and add), so these
 * use fmaf at the same places. Scalars that torch computes as Python floats are computed here in
 * double and rounded to f32 once, where torch's kernels convert them.
 *
 * fmaf is one instruction only where the compiler may use FMA, which a portable build may not: each
 * update loop is compiled twice, plain and with target("fma"), and vnm_cpu_register_optim picks one
 * at run time. Without FMA hardware fmaf is glibc's correctly rounded software version, so results
 * are the same on every CPU, only slower. */
#include <math.h>

#include "../backend.h"

/* Blocks depend on n only (never on the thread count), and their partial sums are added in block
 * order, so the result is the same for any number of threads. */
enum { SUMSQ_MAX_BLOCKS = 256, SUMSQ_MIN_BLOCK = 4096 };

static void cpu_sum_squares(double *out, const float *x, int64_t n)
{
    int64_t block = (n + SUMSQ_MAX_BLOCKS - 1) / SUMSQ_MAX_BLOCKS;
    if (block < SUMSQ_MIN_BLOCK) block = SUMSQ_MIN_BLOCK;
    int64_t blocks = (n + block - 1) / block;
    double partial[SUMSQ_MAX_BLOCKS];
#pragma omp parallel for schedule(static) if (n > 4 * SUMSQ_MIN_BLOCK)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t end = (b + 1) * block < n ? (b + 1) * block : n;
        double acc = 0.0;
        for (int64_t i = b * block; i < end; i++) acc += (double)x[i] * x[i];
        partial[b] = acc;
    }
    double total = 0.0;
    for (int64_t b = 0; b < blocks; b++) total += partial[b];
    *out = total;
}

/* An update over elements [lo, hi); args points to the kernel's argument struct. */
typedef void (*range_fn)(const void *args, int64_t lo, int64_t hi);

/* Elementwise updates: any split gives the same result; chunks keep each call's loop long. A
 * transformer's weight matrices are a few 10⁴ elements each: two chunks already pay for a
 * thread team (the optimiser step is memory-bound, and a second core adds bandwidth). */
static void run_chunks(range_fn fn, const void *args, int64_t n)
{
    enum { CHUNK = 8192 };
    int64_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n > 2 * CHUNK)
    for (int64_t c = 0; c < chunks; c++)
        fn(args, c * CHUNK, (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n);
}

/* fn_plain, fn_fma and fn_avx2 from one always-inline loop fn (OpenMP must stay outside it: an
 * outlined parallel region would not inherit the target). The AVX2 copy only runs the same
 * operations 8 wide: sqrt, division and fma round the same at any width. */
#define RANGE_VARIANTS(fn)                                                                         \
    static void fn##_plain(const void *a, int64_t lo, int64_t hi) { fn(a, lo, hi); }               \
    __attribute__((target("fma"))) static void fn##_fma(const void *a, int64_t lo, int64_t hi)     \
    {                                                                                              \
        fn(a, lo, hi);                                                                             \
    }                                                                                              \
    __attribute__((target("avx2,fma"))) static void fn##_avx2(const void *a, int64_t lo,           \
                                                               int64_t hi)                         \
    {                                                                                              \
        fn(a, lo, hi);                                                                             \
    }

typedef struct {
    float *p, *buf;
    const float *g;
    float neg_lr, momentum, keep, weight_decay;
    bool nesterov, first_step;
} sgd_args;

/* torch: grad = grad.add(p, alpha=wd); buf = clone(grad) on the first step, else
 * buf.mul_(momentum).add_(grad, alpha=1-dampening); grad = grad.add(buf, alpha=momentum) with
 * nesterov, else buf; p.add_(grad, alpha=-lr). */
static inline __attribute__((always_inline)) void sgd_range(const void *args, int64_t lo,
                                                            int64_t hi)
{
    const sgd_args *a = args;
    /* locals, so stores through p cannot alias the arguments and the loop vectorises */
    float *restrict p = a->p, *restrict buf = a->buf;
    const float *restrict g = a->g;
    const float neg_lr = a->neg_lr, momentum = a->momentum, keep = a->keep, wd = a->weight_decay;
    const bool nesterov = a->nesterov, first_step = a->first_step;
    for (int64_t i = lo; i < hi; i++) {
        float d = g[i];
        if (wd != 0.0f) d = fmaf(wd, p[i], d);
        if (momentum != 0.0f) {
            float b = first_step ? d : fmaf(keep, d, buf[i] * momentum);
            buf[i] = b;
            d = nesterov ? fmaf(momentum, b, d) : b;
        }
        p[i] = fmaf(neg_lr, d, p[i]);
    }
}
RANGE_VARIANTS(sgd_range)

typedef struct {
    float *p, *m, *v;
    const float *g;
    float decay, w1, beta2, w2, eps, neg_step, bc2_sqrt;
} adamw_args;

/* torch (_single_tensor_adam, decoupled weight decay): p.mul_(1 - lr*wd); m.lerp_(g, 1-beta1);
 * v.mul_(beta2).addcmul_(g, g, value=1-beta2); p.addcdiv_(m, v.sqrt() / sqrt(bc2) + eps,
 * value=-lr/bc1). lerp switches formula at |weight| = 0.5 for accuracy; addcdiv is
 * p + (value·m) / denom, unfused. */
static inline __attribute__((always_inline)) void adamw_range(const void *args, int64_t lo,
                                                              int64_t hi)
{
    const adamw_args *a = args;
    float *restrict p = a->p, *restrict m = a->m, *restrict v = a->v;
    const float *restrict g = a->g;
    const float decay = a->decay, w1 = a->w1, beta2 = a->beta2, w2 = a->w2, eps = a->eps;
    const float neg_step = a->neg_step, bc2_sqrt = a->bc2_sqrt;
    const bool small = fabsf(w1) < 0.5f;
    for (int64_t i = lo; i < hi; i++) {
        float gi = g[i], mi = m[i];
        float pi = p[i] * decay;
        mi = small ? fmaf(w1, gi - mi, mi) : fmaf(w1 - 1.0f, gi - mi, gi);
        float vi = fmaf(w2 * gi, gi, v[i] * beta2);
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi + neg_step * mi / denom;
    }
}
RANGE_VARIANTS(adamw_range)

/* Chosen once by vnm_cpu_register_optim. */
static range_fn sgd_run = sgd_range_plain, adamw_run = adamw_range_plain;

static void cpu_sgd_step(float *p, const float *g, float *buf, int64_t n, double lr,
                         double momentum, double dampening, double weight_decay, bool nesterov,
                         bool first_step)
{
    sgd_args a = {p, buf, g, (float)-lr, (float)momentum, (float)(1.0 - dampening),
                  (float)weight_decay, nesterov, first_step};
    run_chunks(sgd_run, &a, n);
}

static void cpu_adamw_step(float *p, const float *g, float *m, float *v, int64_t n, double lr,
                           double beta1, double beta2, double eps, double weight_decay,
                           int64_t step)
{
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    adamw_args a = {p, m, v, g,
                    (float)(1.0 - lr * weight_decay),
                    (float)(1.0 - beta1),
                    (float)beta2,
                    (float)(1.0 - beta2),
                    (float)eps,
                    (float)-(lr / bc1),
                    (float)sqrt(bc2)};
    run_chunks(adamw_run, &a, n);
}

void vnm_cpu_register_optim(vnm_backend *be)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("fma")) {
        sgd_run = sgd_range_fma;
        adamw_run = adamw_range_fma;
    }
    if (__builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2")) {
        sgd_run = sgd_range_avx2;
        adamw_run = adamw_range_avx2;
    }
    be->sum_squares = cpu_sum_squares;
    be->sgd_step = cpu_sgd_step;
    be->adamw_step = cpu_adamw_step;
}
