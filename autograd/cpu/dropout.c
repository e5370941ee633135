/* autograd/cpu/dropout.c — CPU kernels: dropout (to be filled in). */
#include "../backend.h"

void vnm_cpu_register_dropout(vnm_backend *be) { (void)be; }
