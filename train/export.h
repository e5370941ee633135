/* train/export.h — `vnm export`: a checkpoint as timm-named safetensors (train/export.c). */
#ifndef VNM_EXPORT_H
#define VNM_EXPORT_H

/* `vnm export RUN_DIR|CKPT --out PATH.safetensors [--dtype f32|bf16|f16] [--sample N]
 * [key=value ...]`; returns the exit code. */
int vnm_cmd_export(int argc, char **argv);

#endif
