/* sparse/weight.c — (to be filled in). */
#include "sparse.h"
