/* autograd/op_activation.c — ops: activation (to be filled in). */
#include "internal.h"
