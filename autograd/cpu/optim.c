/* autograd/cpu/optim.c — CPU kernels: optim (to be filled in). */
#include "../backend.h"

void vnm_cpu_register_optim(vnm_backend *be) { (void)be; }
