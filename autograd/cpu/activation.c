/* autograd/cpu/activation.c — CPU kernels: activation (to be filled in). */
#include "../backend.h"

void vnm_cpu_register_activation(vnm_backend *be) { (void)be; }
