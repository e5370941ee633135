/* train/eval.h — `vnm eval`: the test-split evaluation of a checkpoint (train/eval.c). */
#ifndef VNM_EVAL_H
#define VNM_EVAL_H

/* `vnm eval RUN_DIR|CKPT [key=value ...]`; returns the exit code. */
int vnm_cmd_eval(int argc, char **argv);

#endif
