/* optim/optim.h — the public interface of the optim module (to be filled in). */
#ifndef VNM_OPTIM_H
#define VNM_OPTIM_H
#include "../autograd/autograd.h"
#endif
