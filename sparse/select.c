/* sparse/select.c — (to be filled in). */
#include "sparse.h"
