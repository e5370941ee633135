/* train/tokenize.c — `vnm tokenize`: text files cut into documents, byte-level tokenized (each
 * document its bytes then EOS), every K-th document to the val split, written as token shards.
 * tools/tokenize_text.py --byte implements the same rules and must stay byte-identical (the tokens test
 * compares both on a committed fixture). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../data/data.h"
#include "cli.h"
#include "tokenize.h"

static const char tokenize_usage[] =
    "usage: vnm tokenize --out DIR [--doc-sep LINE] [--val-every K] [--shard-tokens N] FILE...\n"
    "\n"
    "Byte-level tokenizes text files into token shards for language-model training: ids 0..255\n"
    "are the bytes, 256 BOS, 257 EOS (vocab_size 258); a document becomes its bytes then EOS.\n"
    "\n"
    "  --out DIR          writes DIR/train-00000.tok, ... and DIR/val-00000.tok, ... (DIR is\n"
    "                     created when missing; shards of a split left there by an earlier,\n"
    "                     longer run are removed)\n"
    "  --doc-sep LINE     documents are separated by lines equal to LINE (e.g. % for fortune\n"
    "                     files); without it each file is one document. Empty documents are\n"
    "                     skipped; a document never spans two files\n"
    "  --val-every K      every K-th document goes to the val split, the others to train, in\n"
    "                     order (default 20; 0: no val split)\n"
    "  --shard-tokens N   at most N tokens per shard (default 100000000)\n"
    "\n"
    "Prints one JSON line: {\"documents\":D,\"train\":{\"documents\":..,\"tokens\":..,\n"
    "\"shards\":..},\"val\":{...}}. tools/tokenize_text.py writes the same files, also with Hugging\n"
    "Face or SentencePiece tokenizers.\n";

typedef struct {
    const char *out, *doc_sep;
    int val_every, shard_tokens;
    char **files;
    int nfiles;
} tokenize_opts;

typedef struct {
    vnm_token_writer *w;
    int64_t documents, tokens;
    int shards;
} split_out;

typedef struct {
    split_out split[2]; /* train, val */
    int64_t documents;
    split_out *doc;   /* the split of the open document, NULL between documents */
    uint32_t *ids;    /* [cap] encoding buffer */
    size_t cap;
    char err[1024];
} tokenize_run;

static int parse_args(int argc, char **argv, tokenize_opts *o)
{
    *o = (tokenize_opts){.val_every = 20, .shard_tokens = 100000000};
    o->files = calloc((size_t)argc + 1, sizeof *o->files);
    if (!o->files) {
        fprintf(stderr, "vnm tokenize: out of memory\n");
        return 1;
    }
    bool options = true;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int rc = 0;
        if (options && !strcmp(a, "--")) {
            options = false;
        } else if (options && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            fputs(tokenize_usage, stdout);
            return -1;
        } else if (options && !strcmp(a, "--out")) {
            if (i + 1 >= argc) return vnm_cli_missing("tokenize", a);
            o->out = argv[++i];
        } else if (options && !strcmp(a, "--doc-sep")) {
            if (i + 1 >= argc) return vnm_cli_missing("tokenize", a);
            o->doc_sep = argv[++i];
        } else if (options && !strcmp(a, "--val-every")) {
            rc = vnm_cli_int("tokenize", a, i + 1 < argc ? argv[++i] : NULL, 0, INT_MAX,
                             &o->val_every);
        } else if (options && !strcmp(a, "--shard-tokens")) {
            rc = vnm_cli_int("tokenize", a, i + 1 < argc ? argv[++i] : NULL, 1, INT_MAX,
                             &o->shard_tokens);
        } else if (options && a[0] == '-' && a[1]) {
            fprintf(stderr, "vnm tokenize: unknown option '%s'\n\n%s", a, tokenize_usage);
            return 2;
        } else {
            o->files[o->nfiles++] = argv[i];
        }
        if (rc) return rc;
    }
    if (!o->out) return vnm_cli_missing("tokenize", "--out");
    if (!o->out[0]) {
        fprintf(stderr, "vnm tokenize: --out needs a directory, got ''\n");
        return 2;
    }
    if (o->nfiles == 0) {
        fprintf(stderr, "vnm tokenize: no input file given\n\n%s", tokenize_usage);
        return 2;
    }
    return 0;
}

/* Every input is checked before anything is written, so a typo costs no partial output. */
static int check_inputs(const tokenize_opts *o)
{
    for (int i = 0; i < o->nfiles; i++) {
        struct stat sb;
        if (stat(o->files[i], &sb) != 0) {
            fprintf(stderr, "vnm tokenize: cannot open input '%s': %s\n", o->files[i],
                    strerror(errno));
            return 2;
        }
        if (S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "vnm tokenize: input '%s' is a directory, expected a text file\n",
                    o->files[i]);
            return 2;
        }
    }
    return 0;
}

/* mkdir -p: every missing component of path, then a check that it is a directory. */
static int make_dirs(const char *path)
{
    char *p = strdup(path);
    if (!p) return 1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        mkdir(p, 0777); /* existing components fail with EEXIST; the final check covers errors */
        *s = '/';
    }
    int made = mkdir(p, 0777) == 0 || errno == EEXIST ? 0 : errno;
    free(p);
    struct stat sb;
    if (made || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "vnm tokenize: --out '%s': cannot create the directory: %s\n", path,
                made ? strerror(made) : "a file of that name exists");
        return 2;
    }
    return 0;
}

static int fail(tokenize_run *r, vnm_status st)
{
    fprintf(stderr, "vnm tokenize: %s\n", r->err);
    return st == VNM_ERR_INPUT ? 2 : 1;
}

/* Appends the ids of text[len] (then EOS when the document ends) to the open document's split. */
static int emit(tokenize_run *r, const char *text, size_t len, bool end_of_document)
{
    if (len + 1 > r->cap) {
        uint32_t *grown = realloc(r->ids, (len + 1) * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "vnm tokenize: out of memory for a line of %zu bytes\n", len);
            return 1;
        }
        r->ids = grown;
        r->cap = len + 1;
    }
    size_t n = vnm_byte_encode(text, len, end_of_document, r->ids);
    vnm_status st = vnm_token_writer_append(r->doc->w, r->ids, (int64_t)n, r->err, sizeof r->err);
    if (st) return fail(r, st);
    r->doc->tokens += (int64_t)n;
    return 0;
}

static int end_document(tokenize_run *r)
{
    if (!r->doc) return 0;
    int rc = emit(r, NULL, 0, true);
    r->doc->documents++;
    r->doc = NULL;
    return rc;
}

/* Whether line (with its '\n', and a '\r' before it, removed) equals sep. */
static bool is_separator(const char *line, size_t len, const char *sep)
{
    if (len && line[len - 1] == '\n') len--;
    if (len && line[len - 1] == '\r') len--;
    return len == strlen(sep) && memcmp(line, sep, len) == 0;
}

static int tokenize_file(tokenize_run *r, const tokenize_opts *o, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "vnm tokenize: cannot open input '%s': %s\n", path, strerror(errno));
        return 2;
    }
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&line, &line_cap, f)) > 0) {
        if (o->doc_sep && is_separator(line, (size_t)len, o->doc_sep)) {
            rc = end_document(r);
            continue;
        }
        if (!r->doc) {
            r->documents++;
            bool val = o->val_every > 0 && r->documents % o->val_every == 0;
            r->doc = &r->split[val];
        }
        rc = emit(r, line, (size_t)len, false);
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "vnm tokenize: cannot read input '%s': %s\n", path, strerror(errno));
        rc = 1;
    }
    free(line);
    fclose(f);
    return rc ? rc : end_document(r); /* a document never spans two files */
}

static int run(const tokenize_opts *o)
{
    int rc = check_inputs(o);
    if (!rc) rc = make_dirs(o->out);
    if (rc) return rc;
    tokenize_run r = {0};
    static const char *const names[2] = {"train", "val"};
    for (int s = 0; s < 2 && !rc; s++) {
        vnm_status st = vnm_token_writer_open(o->out, names[s], VNM_BYTE_VOCAB, VNM_BYTE_EOS,
                                              o->shard_tokens, &r.split[s].w, r.err, sizeof r.err);
        if (st) rc = fail(&r, st);
    }
    for (int i = 0; i < o->nfiles && !rc; i++) rc = tokenize_file(&r, o, o->files[i]);
    if (!rc && r.documents == 0) {
        fprintf(stderr,
                "vnm tokenize: empty input: no document in the %d file(s) (every file is "
                "empty%s)\n",
                o->nfiles, o->doc_sep ? " or holds only separator lines" : "");
        rc = 2;
    }
    for (int s = 0; s < 2; s++) {
        if (rc) {
            vnm_token_writer_abort(r.split[s].w);
            continue;
        }
        vnm_status st = vnm_token_writer_close(r.split[s].w, NULL, &r.split[s].shards, r.err,
                                               sizeof r.err);
        if (st) rc = fail(&r, st);
    }
    free(r.ids);
    if (rc) return rc;
    printf("{\"documents\":%lld", (long long)r.documents);
    for (int s = 0; s < 2; s++)
        printf(",\"%s\":{\"documents\":%lld,\"tokens\":%lld,\"shards\":%d}", names[s],
               (long long)r.split[s].documents, (long long)r.split[s].tokens, r.split[s].shards);
    printf("}\n");
    fflush(stdout);
    return 0;
}

int vnm_cmd_tokenize(int argc, char **argv)
{
    tokenize_opts o;
    int rc = parse_args(argc, argv, &o);
    if (!rc) rc = run(&o);
    free(o.files);
    return rc < 0 ? 0 : rc;
}
