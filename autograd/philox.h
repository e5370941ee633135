/* autograd/philox.h — Philox4x32-10 (Salmon et al., SC'11), one definition compiled both into the
 * C sources and into the CUDA kernels, so a draw is the same function of (key, counter) on every
 * backend. Included by autograd/rng.c (the public vnm_philox4x32) and autograd/cuda/common.cuh. */
#ifndef VNM_PHILOX_H
#define VNM_PHILOX_H

#include <stdint.h>

#include "host_device.h"

static inline VNM_HOST_DEVICE void vnm_philox4x32_10(uint64_t key, uint64_t ctr_lo,
                                                     uint64_t ctr_hi, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)ctr_lo, c1 = (uint32_t)(ctr_lo >> 32);
    uint32_t c2 = (uint32_t)ctr_hi, c3 = (uint32_t)(ctr_hi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* [0, 1) with the 24 high bits of a word. */
static inline VNM_HOST_DEVICE float vnm_philox_unit(uint32_t bits)
{
    return (float)(bits >> 8) * (1.0f / 16777216.0f);
}

#endif
