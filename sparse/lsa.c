/* sparse/lsa.c — (to be filled in). */
#include "sparse.h"
