/* train/cli.h — option parsing shared by the `vnm` subcommands: each helper prints a message
 * naming the command, the flag and what was expected, and returns 2 (bad input) or 0. */
#ifndef VNM_CLI_H
#define VNM_CLI_H

#include "../autograd/autograd.h"

int vnm_cli_missing(const char *cmd, const char *flag);
int vnm_cli_int(const char *cmd, const char *flag, const char *value, int lo, int hi, int *out);
int vnm_cli_double(const char *cmd, const char *flag, const char *value, double lo, double hi,
                   double *out);
/* "cpu" or "cuda" into *out. */
int vnm_cli_device(const char *cmd, const char *flag, const char *value, vnm_device *out);
int vnm_cmd_select(int argc, char **argv);

#endif
