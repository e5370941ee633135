/* autograd/op_attention.c — ops: attention (to be filled in). */
#include "internal.h"
