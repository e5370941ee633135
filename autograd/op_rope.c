/* autograd/op_rope.c — ops: rope (to be filled in). */
#include "internal.h"
