/* train/models/vit.h — (to be filled in). */
#ifndef VNM_VIT_H
#define VNM_VIT_H

#include "../../autograd/autograd.h"

#endif
