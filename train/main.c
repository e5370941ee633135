/* train/main.c — the `vnm` program: command dispatch, --help and --version.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/autograd.h"
#include "bench.h"
#include "cli.h"
#include "eval.h"
#include "export.h"
#include "generate.h"
#include "state.h"
#include "tokenize.h"
#include "trainer.h"

static const char usage[] =
    "usage: vnm <command> [options]\n"
    "\n"
    "V:N:M sparse training for transformers.\n"
    "\n"
    "commands:\n"
    "  train RECIPE [key=value ...]         train through the recipe's stages into run.output_dir\n"
    "  resume RUN_DIR|CKPT [key=value ...]  continue a run from its (latest) checkpoint\n"
    "  eval RUN_DIR|CKPT [key=value ...]    test-split loss, top-1 and img/s of a checkpoint\n"
    "  export RUN_DIR|CKPT --out PATH.safetensors [--dtype f32|bf16|f16]\n"
    "                                       the model as timm safetensors (sparse decompressed)\n"
    "  bench ops [--device D] [--threads N] [--reps N]\n"
    "                                       linear forward+backward vs raw sgemm (OpenBLAS/cuBLAS)\n"
    "  bench spmm [--threads N] [--reps N]  V:N:M sparse products and op vs dense\n"
    "  bench train [--model M] [--device D] the full ViT training step: img/s, ms/step\n"
    "  select --shapes OxI[,OxI...] [--speedup S]\n"
    "                                       choose V and M for a required speedup\n"
    "  inspect CKPT                         summarise a checkpoint (file, ckpt or run directory)\n"
    "  tokenize --out DIR [options] FILE... text files into byte-level token shards (LM data)\n"
    "  generate MODEL_DIR [options]         continue a prompt with a LLaMA model (greedy/top-k)\n"
    "\n"
    "options:\n"
    "  --help       this text (also: vnm <command> --help)\n"
    "  --version    program version\n"
    "\n"
    "exit codes: 0 ok, 1 runtime failure, 2 bad input\n";

static const char bench_usage[] =
    "usage: vnm bench ops|spmm [--device cpu|cuda] [--threads N] [--reps N]\n"
    "       vnm bench train [options]   (see vnm bench train --help)\n"
    "\n"
    "  ops    linear forward+backward through the tape vs raw sgemm (OpenBLAS on cpu, cuBLAS on\n"
    "         cuda)\n"
    "  spmm   CPU forward, dX, dW of compressed V:N:M weights vs the dense OpenBLAS sgemm of\n"
    "         each product; the sparse-linear op's forward+backward vs the dense linear op's;\n"
    "         weights+grads+AdamW bytes vs dense\n"
    "  train  the full ViT training step (forward, loss, backward, AdamW) on synthetic data\n"
    "\n"
    "Prints one JSON object per measurement on stdout (bench, case, value, unit, baseline,\n"
    "baseline_value, ratio; ratio > 1 means faster than the baseline measured in the same run)\n"
    "and a table on stderr.\n"
    "  --device D    cpu (default) or cuda (ops only)\n"
    "  --device D    cpu (default) or cuda (ops only)\n"
    "  --threads N   OpenMP/OpenBLAS threads (default: all cores)\n"
    "  --reps N      timed repetitions after one warm-up; the best is reported (default 3)\n";

static int cmd_bench(int argc, char **argv)
{
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        fputs(bench_usage, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    if (!strcmp(argv[0], "train")) return vnm_cmd_bench_train(argc - 1, argv + 1);
    vnm_bench_opts opts = {0, 3, VNM_DEVICE_CPU};
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        if (!strcmp(argv[i], "--threads"))
            rc = vnm_cli_int("bench", "--threads", i + 1 < argc ? argv[++i] : NULL, 1, 1024,
                             &opts.threads);
        else if (!strcmp(argv[i], "--device"))
            rc = vnm_cli_device("bench", "--device", i + 1 < argc ? argv[++i] : NULL,
                                &opts.device);
        else if (!strcmp(argv[i], "--reps"))
            rc = vnm_cli_int("bench", "--reps", i + 1 < argc ? argv[++i] : NULL, 1, 1024,
                             &opts.reps);
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(bench_usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "vnm bench: unknown option '%s'\n%s", argv[i], bench_usage);
            return 2;
        }
        if (rc) return rc;
    }
    if (!strcmp(argv[0], "ops")) return vnm_bench_ops(&opts);
    if (!strcmp(argv[0], "spmm")) {
        if (opts.device == VNM_DEVICE_CUDA) {
            fprintf(stderr, "vnm bench spmm: the V:N:M kernels exist for the cpu only\n");
            return 2;
        }
        return vnm_bench_spmm(&opts);
    }
    fprintf(stderr, "vnm bench: unknown suite '%s' (available: ops, spmm, train)\n", argv[0]);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("vnm %s\n", VNM_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "train")) return vnm_cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "resume")) return vnm_cmd_resume(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return vnm_cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "export")) return vnm_cmd_export(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "select")) return vnm_cmd_select(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return vnm_cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize")) return vnm_cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "generate")) return vnm_cmd_generate(argc - 2, argv + 2);
    fprintf(stderr, "vnm: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
