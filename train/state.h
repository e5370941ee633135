/* train/state.h — (to be filled in). */
#ifndef VNM_STATE_H
#define VNM_STATE_H

#include "../autograd/autograd.h"

#endif
