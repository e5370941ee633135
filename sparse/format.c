/* sparse/format.c — (to be filled in). */
#include "sparse.h"
