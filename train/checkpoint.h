/* train/checkpoint.h — (to be filled in). */
#ifndef VNM_CHECKPOINT_H
#define VNM_CHECKPOINT_H

#include "../autograd/autograd.h"

#endif
