/* train/recipe.c — (to be filled in). */
#include "recipe.h"
