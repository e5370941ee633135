/* sparse/op_sparse_linear.c — (to be filled in). */
#include "sparse.h"
