/* autograd/op_softmax.c — ops: softmax (to be filled in). */
#include "internal.h"
