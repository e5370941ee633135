/* train/json.h — (to be filled in). */
#ifndef VNM_JSON_H
#define VNM_JSON_H

#include "../autograd/autograd.h"

#endif
