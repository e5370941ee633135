/* autograd/op_embedding.c — ops: embedding (to be filled in). */
#include "internal.h"
