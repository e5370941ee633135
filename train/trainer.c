/* train/trainer.c — (to be filled in). */
#include "trainer.h"
