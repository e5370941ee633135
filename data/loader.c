/* data/loader.c — (to be filled in). */
#include "data.h"
