/* train/bench_attention.c — the attention cases of `vnm bench ops`: scaled-dot-product attention,
 * forward + backward through the tape, with bf16 products (the fused half-precision entries:
 * cuDNN's flash-attention SDPA on CUDA) against the f32 op (GEMMs and row kernels, probabilities
 * stored) measured in the same run, at a DeiT-small shape (197 tokens, non-causal) and a
 * LLaMA-7B layer shape (2048 tokens, causal). Where the backend declines the fused case, both
 * rows time the f32 kernels (the decline is printed on stderr). Times are the best of `reps`
 * runs after one warm-up; each run ends by reading one gradient element, which waits for the
 * run's kernels. */
#include <stdio.h>

#include "../autograd/autograd.h"
#include "bench.h"

typedef struct {
    const char *name;
    int64_t B, H, T, D;
    bool causal;
} attention_case;

typedef struct {
    vnm_tensor *q, *k, *v;
    bool causal;
} attention_args;

static vnm_tensor *attention_fwd(vnm_ctx *ctx, void *user)
{
    const attention_args *a = user;
    return vnm_attention(ctx, a->q, a->k, a->v, a->causal, 0.0f);
}

static double time_attention(vnm_ctx *ctx, const attention_case *c, vnm_dtype dt, int reps)
{
    if (vnm_ctx_set_matmul_dtype(ctx, dt) != VNM_OK) return -1.0;
    const int64_t *shape = VNM_SHAPE(c->B, c->H, c->T, c->D);
    vnm_tensor *q = vnm_param_new(ctx, VNM_DTYPE_F32, 4, shape, "q");
    vnm_tensor *k = vnm_param_new(ctx, VNM_DTYPE_F32, 4, shape, "k");
    vnm_tensor *v = vnm_param_new(ctx, VNM_DTYPE_F32, 4, shape, "v");
    vnm_tensor *dy = vnm_buffer_new(ctx, VNM_DTYPE_F32, 4, shape, "dy");
    if (!q || !k || !v || !dy) return -1.0;
    vnm_rng_normal(ctx, q, 0.0f, 1.0f);
    vnm_rng_normal(ctx, k, 0.0f, 1.0f);
    vnm_rng_normal(ctx, v, 0.0f, 1.0f);
    vnm_rng_normal(ctx, dy, 0.0f, 1.0f);
    vnm_tensor *params[3] = {q, k, v};
    attention_args a = {q, k, v, c->causal};
    return vnm_bench_time_fwd_bwd(ctx, attention_fwd, &a, params, 3, dy, reps);
}

int vnm_bench_attention(vnm_ctx *ctx, int reps)
{
    static const attention_case cases[] = {
        {"deit_small", 64, 6, 197, 64, false},
        {"llama_7b", 1, 32, 2048, 128, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const attention_case *c = &cases[i];
        double f32 = time_attention(ctx, c, VNM_DTYPE_F32, reps);
        double half = f32 < 0 ? -1.0 : time_attention(ctx, c, VNM_DTYPE_BF16, reps);
        if (half < 0) {
            fprintf(stderr, "vnm bench ops: %s\n", vnm_ctx_error(ctx));
            return 1;
        }
        char name[128];
        snprintf(name, sizeof name, "attention %s B=%lld H=%lld T=%lld D=%lld%s bf16 fwd+bwd",
                 c->name, (long long)c->B, (long long)c->H, (long long)c->T, (long long)c->D,
                 c->causal ? " causal" : "");
        vnm_bench_report("ops", name, half * 1e3, "ms", "vnm f32 attention", f32 * 1e3);
    }
    return 0;
}
