/* train/safetensors.c — (to be filled in). */
#include "safetensors.h"
