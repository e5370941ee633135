/* train/safetensors.h — (to be filled in). */
#ifndef VNM_SAFETENSORS_H
#define VNM_SAFETENSORS_H

#include "../autograd/autograd.h"

#endif
