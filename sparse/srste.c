/* sparse/srste.c — (to be filled in). */
#include "sparse.h"
