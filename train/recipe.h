/* train/recipe.h — (to be filled in). */
#ifndef VNM_RECIPE_H
#define VNM_RECIPE_H

#include "../autograd/autograd.h"

#endif
