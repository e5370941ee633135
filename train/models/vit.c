/* train/models/vit.c — (to be filled in). */
#include "vit.h"
