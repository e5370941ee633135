/* sparse/calib.c — (to be filled in). */
#include "sparse.h"
