/* sparse/permute.c — (to be filled in). */
#include "sparse.h"
