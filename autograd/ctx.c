/* autograd/ctx.c — the context: device and backend, the four arenas, error state, grad/training
 * flags, the matmul dtype (mixed precision) and the RNG position. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "internal.h"

enum {
    META_CHUNK = 1 << 20,
    DATA_CHUNK = 64 << 20,
};

bool vnm_device_available(vnm_device dev, char *reason, size_t len)
{
    if (dev == VNM_DEVICE_CPU) return true;
    return vnm_backend_cuda(reason, len) != NULL;
}

vnm_ctx *vnm_ctx_create(const vnm_ctx_config *cfg)
{
    const vnm_backend *be;
    if (cfg->device == VNM_DEVICE_CUDA) {
        char reason[256];
        be = vnm_backend_cuda(reason, sizeof reason);
        if (!be) {
            fprintf(stderr, "vnm: cannot use device cuda: %s\n", reason);
            return NULL;
        }
    } else {
        be = vnm_backend_cpu();
    }
    vnm_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->device = cfg->device;
    ctx->be = be;
    vnm_arena_init(&ctx->persist_meta, NULL, META_CHUNK);
    vnm_arena_init(&ctx->persist_data, be, DATA_CHUNK);
    vnm_arena_init(&ctx->step_meta, NULL, META_CHUNK);
    vnm_arena_init(&ctx->step_data, be, DATA_CHUNK);
    ctx->grad_enabled = true;
    ctx->training = true;
    ctx->matmul_dtype = VNM_DTYPE_F32;
    ctx->rng.seed = cfg->seed;
    ctx->rng.offset = 0;
#ifdef _OPENMP
    if (cfg->threads > 0) omp_set_num_threads(cfg->threads);
#endif
    return ctx;
}

void vnm_ctx_destroy(vnm_ctx *ctx)
{
    if (!ctx) return;
    vnm_arena_release(&ctx->persist_meta);
    vnm_arena_release(&ctx->persist_data);
    vnm_arena_release(&ctx->step_meta);
    vnm_arena_release(&ctx->step_data);
    free(ctx->tape);
    free(ctx->profile);
    free(ctx);
}

vnm_status vnm_ctx_status(const vnm_ctx *ctx) { return ctx->status; }
const char *vnm_ctx_error(const vnm_ctx *ctx) { return ctx->error; }

void vnm_ctx_clear_error(vnm_ctx *ctx)
{
    ctx->status = VNM_OK;
    ctx->error[0] = '\0';
}

vnm_status vnm_ctx_fail(vnm_ctx *ctx, vnm_status status, const char *fmt, ...)
{
    if (ctx->status != VNM_OK) return ctx->status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
    ctx->status = status;
    return status;
}

vnm_status vnm_errbuf(char *err, size_t err_len, vnm_status status, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return status;
}

void vnm_ctx_reset_step(vnm_ctx *ctx)
{
    ctx->tape_len = 0;
    ctx->last_made = NULL;
    vnm_arena_reset(&ctx->step_meta);
    vnm_arena_reset(&ctx->step_data);
}

bool vnm_ctx_set_grad_enabled(vnm_ctx *ctx, bool enabled)
{
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return prev;
}

bool vnm_ctx_grad_enabled(const vnm_ctx *ctx) { return ctx->grad_enabled; }
void vnm_ctx_set_training(vnm_ctx *ctx, bool training) { ctx->training = training; }
bool vnm_ctx_training(const vnm_ctx *ctx) { return ctx->training; }

vnm_status vnm_ctx_set_matmul_dtype(vnm_ctx *ctx, vnm_dtype dt)
{
    if (dt != VNM_DTYPE_F32 && dt != VNM_DTYPE_BF16 && dt != VNM_DTYPE_F16)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "matmul dtype must be f32, bf16 or f16, not %s",
                            vnm_dtype_name(dt));
    if (dt != VNM_DTYPE_F32 && !ctx->be->gemm_half)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "backend %s has no half-precision products",
                            ctx->be->name);
    ctx->matmul_dtype = dt;
    return VNM_OK;
}

vnm_dtype vnm_ctx_matmul_dtype(const vnm_ctx *ctx) { return ctx->matmul_dtype; }

void vnm_ctx_set_free_in_backward(vnm_ctx *ctx, bool on) { ctx->free_in_backward = on; }

void vnm_ctx_set_deterministic(vnm_ctx *ctx, bool on) { ctx->deterministic = on; }
vnm_device vnm_ctx_device(const vnm_ctx *ctx) { return ctx->device; }
const vnm_backend *vnm_ctx_backend(const vnm_ctx *ctx) { return ctx->be; }
size_t vnm_ctx_step_bytes(const vnm_ctx *ctx) { return ctx->step_data.high; }
size_t vnm_ctx_persistent_bytes(const vnm_ctx *ctx) { return ctx->persist_data.used; }

vnm_rng_state vnm_ctx_rng_get(const vnm_ctx *ctx) { return ctx->rng; }
void vnm_ctx_rng_set(vnm_ctx *ctx, vnm_rng_state state) { ctx->rng = state; }

uint64_t vnm_ctx_rng_reserve(vnm_ctx *ctx, uint64_t n_offsets)
{
    uint64_t first = ctx->rng.offset;
    ctx->rng.offset += n_offsets;
    return first;
}

void vnm_ctx_set_linear_hook(vnm_ctx *ctx, vnm_linear_hook hook, void *user)
{
    ctx->linear_hook = hook;
    ctx->linear_hook_user = user;
}

bool vnm_ctx_has_linear_hook(const vnm_ctx *ctx) { return ctx->linear_hook != NULL; }

void vnm_ctx_call_linear_hook(vnm_ctx *ctx, const char *weight_name, const vnm_tensor *x)
{
    if (ctx->linear_hook) ctx->linear_hook(ctx->linear_hook_user, weight_name, x);
}

void *vnm_step_meta_alloc(vnm_ctx *ctx, size_t bytes)
{
    void *p = vnm_arena_alloc(&ctx->step_meta, bytes);
    if (!p) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of host memory (%zu bytes)", bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}
