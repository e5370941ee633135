/* autograd/op_dropout.c — ops: dropout (to be filled in). */
#include "internal.h"
