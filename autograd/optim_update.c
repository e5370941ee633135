/* autograd/optim_update.c — fused parameter updates (to be filled in). */
#include "internal.h"
