/* autograd/cpu/rope.c — CPU kernels: rope (to be filled in). */
#include "../backend.h"

void vnm_cpu_register_rope(vnm_backend *be) { (void)be; }
