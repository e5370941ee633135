/* sparse/score.c — (to be filled in). */
#include "sparse.h"
