/* train/json.c — (to be filled in). */
#include "json.h"
