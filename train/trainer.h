/* train/trainer.h — (to be filled in). */
#ifndef VNM_TRAINER_H
#define VNM_TRAINER_H

#include "../autograd/autograd.h"

#endif
