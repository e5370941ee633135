/* train/state.c — (to be filled in). */
#include "state.h"
