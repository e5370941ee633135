/* autograd/rng.c — the public Philox4x32-10 entry points (autograd/philox.h) and the context-level
 * random fills. A draw is a pure function of (seed, offset, element index): no state is shared between threads,
 * so results do not depend on the thread count, and a stream resumes exactly from (seed, offset). */
#include <math.h>

#include "internal.h"
#include "philox.h"

void vnm_philox4x32(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi, uint32_t out[4])
{
    vnm_philox4x32_10(key, ctr_lo, ctr_hi, out);
}

float vnm_philox_uniform(uint32_t bits) { return vnm_philox_unit(bits); }

/* An op that draws n numbers reserves ceil(n/4) offsets, one Philox block each. */
static uint64_t blocks_for(int64_t n) { return (uint64_t)(n + 3) / 4; }

typedef void (*fill_kernel)(float *x, int64_t n, float a, float b, uint64_t seed,
                            uint64_t offset);

static vnm_status rng_fill(vnm_ctx *ctx, const char *op, fill_kernel kernel, vnm_tensor *t,
                           float a, float b)
{
    if (!t) return ctx->status;
    if (!vnm_check_f32(ctx, op, t, "tensor") || !vnm_check_kernel(ctx, op, kernel != NULL))
        return ctx->status;
    if (!vnm_is_contiguous(t))
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: tensor is not contiguous", op);
    int64_t n = vnm_numel(t);
    uint64_t off = vnm_ctx_rng_reserve(ctx, blocks_for(n));
    kernel(VNM_F32(t), n, a, b, ctx->rng.seed, off);
    return VNM_OK;
}

vnm_status vnm_rng_uniform(vnm_ctx *ctx, vnm_tensor *t, float lo, float hi)
{
    return rng_fill(ctx, "rng_uniform", ctx->be->rng_uniform, t, lo, hi);
}

vnm_status vnm_rng_normal(vnm_ctx *ctx, vnm_tensor *t, float mean, float std)
{
    return rng_fill(ctx, "rng_normal", ctx->be->rng_normal, t, mean, std);
}
