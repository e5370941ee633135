/* data/idx.c — (to be filled in). */
#include "data.h"
