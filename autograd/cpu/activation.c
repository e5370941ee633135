/* autograd/cpu/activation.c — GELU (exact erf form and tanh approximation, as PyTorch), SiLU and
 * SwiGLU, forward and backward. Every element is independent, so the loops split freely over
 * threads; the formulas follow PyTorch's CPU kernels term for term. */
#include <math.h>

#include "../backend.h"

#define GELU_K 0.7978845608028654f      /* sqrt(2/pi) */
#define GELU_C 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f /* 1/sqrt(2 pi) */

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static inline float act_value(vnm_act act, float x)
{
    switch (act) {
    case VNM_ACT_GELU: return 0.5f * x * (1.0f + erff(x * INV_SQRT2));
    case VNM_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_C * x * x * x)));
    case VNM_ACT_SILU: return x * sigmoid(x);
    }
    return 0.0f;
}

static inline float act_derivative(vnm_act act, float x)
{
    switch (act) {
    case VNM_ACT_GELU:
        return 0.5f * (1.0f + erff(x * INV_SQRT2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    case VNM_ACT_GELU_TANH: {
        float x2 = x * x;
        float t = tanhf(GELU_K * (x + GELU_C * x2 * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * GELU_C * x2);
    }
    case VNM_ACT_SILU: {
        float s = sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
    }
    }
    return 0.0f;
}

static void cpu_act_fwd(vnm_act act, float *y, const float *x, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (int64_t i = 0; i < n; i++) y[i] = act_value(act, x[i]);
}

static void cpu_act_bwd(vnm_act act, float *dx, const float *x, const float *dy, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * act_derivative(act, x[i]);
}

static void cpu_swiglu_fwd(float *y, const float *gate, const float *up, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (int64_t i = 0; i < n; i++) y[i] = act_value(VNM_ACT_SILU, gate[i]) * up[i];
}

static void cpu_swiglu_bwd(float *dgate, float *dup, const float *gate, const float *up,
                           const float *dy, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (int64_t i = 0; i < n; i++) {
        if (dgate) dgate[i] += dy[i] * up[i] * act_derivative(VNM_ACT_SILU, gate[i]);
        if (dup) dup[i] += dy[i] * act_value(VNM_ACT_SILU, gate[i]);
    }
}

void vnm_cpu_register_activation(vnm_backend *be)
{
    be->act_fwd = cpu_act_fwd;
    be->act_bwd = cpu_act_bwd;
    be->swiglu_fwd = cpu_swiglu_fwd;
    be->swiglu_bwd = cpu_swiglu_bwd;
}
