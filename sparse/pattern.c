/* sparse/pattern.c — (to be filled in). */
#include "sparse.h"
