/* optim/optim.c — optimisers (to be filled in). */
#include "optim.h"
