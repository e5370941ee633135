/* autograd/act_math.h — the elementwise activations and their derivatives as PyTorch defines them
 * (GELU exact and tanh forms, SiLU), one definition for the CPU kernels and the CUDA kernels. */
#ifndef VNM_ACT_MATH_H
#define VNM_ACT_MATH_H

#include <math.h>

#include "backend.h"
#include "host_device.h"

#define VNM_GELU_K 0.7978845608028654f       /* sqrt(2/pi) */
#define VNM_GELU_C 0.044715f
#define VNM_INV_SQRT2 0.7071067811865476f
#define VNM_INV_SQRT_2PI 0.3989422804014327f /* 1/sqrt(2 pi) */

static inline VNM_HOST_DEVICE float vnm_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static inline VNM_HOST_DEVICE float vnm_act_value(vnm_act act, float x)
{
    switch (act) {
    case VNM_ACT_GELU: return 0.5f * x * (1.0f + erff(x * VNM_INV_SQRT2));
    case VNM_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(VNM_GELU_K * (x + VNM_GELU_C * x * x * x)));
    case VNM_ACT_SILU: return x * vnm_sigmoid(x);
    }
    return 0.0f;
}

static inline VNM_HOST_DEVICE float vnm_act_derivative(vnm_act act, float x)
{
    switch (act) {
    case VNM_ACT_GELU:
        return 0.5f * (1.0f + erff(x * VNM_INV_SQRT2)) +
               x * VNM_INV_SQRT_2PI * expf(-0.5f * x * x);
    case VNM_ACT_GELU_TANH: {
        float x2 = x * x;
        float t = tanhf(VNM_GELU_K * (x + VNM_GELU_C * x2 * x));
        return 0.5f * (1.0f + t) +
               0.5f * x * (1.0f - t * t) * VNM_GELU_K * (1.0f + 3.0f * VNM_GELU_C * x2);
    }
    case VNM_ACT_SILU: {
        float s = vnm_sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
    }
    }
    return 0.0f;
}

#endif
