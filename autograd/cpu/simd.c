/* autograd/cpu/simd.c — the run-time ISA choice of simd.h. */
#include "simd.h"

static bool force_portable;

void vnm_cpu_force_portable(bool on) { force_portable = on; }

bool vnm_cpu_use_avx2(void)
{
#if VNM_CPU_X86
    return !force_portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}
