/* autograd/cpu/embedding.c — CPU kernels: embedding (to be filled in). */
#include "../backend.h"

void vnm_cpu_register_embedding(vnm_backend *be) { (void)be; }
