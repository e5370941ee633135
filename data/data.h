/* data/data.h — the public interface of the data module (to be filled in). */
#ifndef VNM_DATA_H
#define VNM_DATA_H

#include "../autograd/autograd.h"

#endif
