/* train/checkpoint.c — (to be filled in). */
#include "checkpoint.h"
