/* train/eval.c — `vnm eval RUN_DIR|CKPT [key=value ...]`: restores a checkpoint read-only through
 * the resume path (vnm_trainer_restore) and runs the trainer's own evaluation on the test split,
 * so a checkpoint written right after an eval reproduces the numbers logged for its step.
 *
 * Output: a human line on stderr and one JSON object on stdout (as `vnm bench` does), with the
 * keys and number formats of the trainer's val records in metrics.jsonl — step, stage, split,
 * loss (%.9g), top1 (%.6f) — then throughput, unit, images and ckpt. */
#include "eval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "trainer.h"

static const char eval_usage[] =
    "usage: vnm eval RUN_DIR|CKPT [key=value ...]\n"
    "\n"
    "Evaluates a checkpoint on the Fashion-MNIST test split. A run directory or ckpt folder\n"
    "resolves to its latest checkpoint, as for `vnm resume`. The model is rebuilt from the recipe\n"
    "stored in the checkpoint plus the overrides (e.g. data.path=DIR, data.val_batch_size=N,\n"
    "run.threads=N); nothing in the run directory changes.\n"
    "\n"
    "Prints loss, top-1 and images/s on stderr and one JSON object on stdout with the keys of the\n"
    "trainer's val records in metrics.jsonl:\n"
    "  {\"step\":…,\"stage\":\"…\",\"split\":\"val\",\"loss\":…,\"top1\":…,\n"
    "   \"throughput\":…,\"unit\":\"img/s\",\"images\":…,\"ckpt\":\"…\"}\n"
    "\n"
    "exit codes: 0 ok, 1 runtime failure, 2 bad input (missing or corrupt checkpoint, bad\n"
    "override, a model that does not match the checkpoint)\n";

/* s as a JSON string literal (quoted, escaped), malloc'd; NULL when out of memory. */
static char *json_quote(const char *s)
{
    vnm_json *v = vnm_json_new_string(s);
    char *text = NULL;
    size_t len;
    if (!v || vnm_json_write(v, &text, &len, NULL, 0) != VNM_OK) text = NULL;
    vnm_json_free(v);
    return text;
}

static int print_result(const vnm_restored *r, const vnm_eval_result *res)
{
    double ips = res->seconds > 0 ? (double)res->images / res->seconds : 0;
    char *stage = json_quote(r->stage), *file = json_quote(r->file);
    if (!stage || !file) {
        free(stage);
        free(file);
        fputs("vnm eval: out of memory\n", stderr);
        return 1;
    }
    if (r->llama) {
        fprintf(stderr, "eval %s (step %lld, stage %s): loss %.4f ppl %.2f (%lld tokens, "
                        "%.0f tok/s)\n", r->file, (long long)r->step, stage, res->loss, res->ppl,
                (long long)res->images, ips);
        printf("{\"step\":%lld,\"stage\":%s,\"split\":\"val\",\"loss\":%.9g,\"ppl\":%.9g,"
               "\"throughput\":%.1f,\"unit\":\"tok/s\",\"tokens\":%lld,\"ckpt\":%s}\n",
               (long long)r->step, stage, res->loss, res->ppl, ips, (long long)res->images, file);
    } else {
        fprintf(stderr, "eval %s (step %lld, stage %s): loss %.4f top1 %.2f%% (%lld images, "
                        "%.0f img/s)\n", r->file, (long long)r->step, stage, res->loss,
                100 * res->top1, (long long)res->images, ips);
        printf("{\"step\":%lld,\"stage\":%s,\"split\":\"val\",\"loss\":%.9g,\"top1\":%.6f,"
               "\"throughput\":%.1f,\"unit\":\"img/s\",\"images\":%lld,\"ckpt\":%s}\n",
               (long long)r->step, stage, res->loss, res->top1, ips, (long long)res->images,
               file);
    }
    fflush(stdout);
    free(stage);
    free(file);
    return 0;
}

int vnm_cmd_eval(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(eval_usage, stdout);
            return 0;
        }
    if (argc < 1) {
        fputs(eval_usage, stderr);
        return 2;
    }
    for (int i = 0; i < argc; i++)
        if (argv[i][0] == '-') {
            fprintf(stderr, "vnm eval: unknown option '%s' (overrides are key=value)\n%s",
                    argv[i], eval_usage);
            return 2;
        }
    vnm_trainer *t;
    int rc = vnm_trainer_restore("eval", argv[0], argv + 1, argc - 1, true, &t);
    if (rc) return rc;
    vnm_eval_result res;
    rc = vnm_trainer_evaluate(t, &res);
    if (!rc) {
        vnm_restored r = vnm_trainer_restored(t);
        rc = print_result(&r, &res);
    }
    vnm_trainer_free(t);
    return rc;
}
