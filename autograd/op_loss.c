/* autograd/op_loss.c — ops: loss (to be filled in). */
#include "internal.h"
