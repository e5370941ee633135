/* autograd/cpu/attention.c — CPU kernels: attention (to be filled in). */
#include "../backend.h"

void vnm_cpu_register_attention(vnm_backend *be) { (void)be; }
