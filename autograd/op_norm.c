/* autograd/op_norm.c — ops: norm (to be filled in). */
#include "internal.h"
