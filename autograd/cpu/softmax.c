/* autograd/cpu/softmax.c — CPU kernels: softmax (to be filled in). */
#include "../backend.h"

void vnm_cpu_register_softmax(vnm_backend *be) { (void)be; }
