/* train/tokenize.h — `vnm tokenize`: text files into byte-level token shards (train/tokenize.c). */
#ifndef VNM_TOKENIZE_H
#define VNM_TOKENIZE_H

/* `vnm tokenize --out DIR [--doc-sep LINE] [--val-every K] [--shard-tokens N] FILE...`; returns
 * the exit code. */
int vnm_cmd_tokenize(int argc, char **argv);

#endif
