/* train/json.h — a small strict RFC 8259 JSON reader and writer: a tree of nodes (objects keep
 * key order and duplicates; callers that need unique keys check them), errors with the source
 * name, byte offset, line, column and what was expected, and a compact writer whose output matches
 * serde_json's (what the safetensors library writes), so headers we write are byte-identical. */
#ifndef VNM_JSON_H
#define VNM_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "../autograd/autograd.h"

/* Deeper nesting is refused, so hostile inputs cannot exhaust the stack. */
#define VNM_JSON_MAX_DEPTH 64

typedef enum {
    VNM_JSON_NULL,
    VNM_JSON_BOOL,
    VNM_JSON_NUMBER,
    VNM_JSON_STRING,
    VNM_JSON_ARRAY,
    VNM_JSON_OBJECT,
} vnm_json_kind;

typedef struct vnm_json vnm_json;
struct vnm_json {
    vnm_json_kind kind;
    int boolean;
    double number;
    int is_int;      /* number is an integer literal (no fraction/exponent) that fits int64 */
    int64_t integer; /* exact value when is_int */
    char *string;    /* UTF-8, NUL-terminated; string_len counts bytes (\u0000 may occur inside) */
    size_t string_len;
    size_t count;     /* array elements or object members */
    vnm_json **items; /* [count] array elements or object values */
    char **keys;      /* [count] object keys (NUL-terminated), NULL for arrays */
    int line,
        column; /* where the value begins in the parsed text (1-based), for callers' messages */
};

/* Parses exactly one JSON value (surrounding whitespace allowed). `source` names the text in
 * messages (a file name). Returns NULL with a message "<source>:<line>:<col> (byte <off>): ..." */
vnm_json *vnm_json_parse(const char *text, size_t len, const char *source, char *err,
                         size_t err_len);
/* Reads and parses a whole file. */
vnm_json *vnm_json_parse_file(const char *path, char *err, size_t err_len);
void vnm_json_free(vnm_json *v);

/* Lookups; NULL when v has the wrong kind or the key/index is absent (first match for keys). */
const vnm_json *vnm_json_get(const vnm_json *v, const char *key);
const vnm_json *vnm_json_at(const vnm_json *v, size_t i);
const char *vnm_json_kind_name(vnm_json_kind k);

/* Builders (NULL when out of memory; add/push take ownership of `item` and free it on failure). */
vnm_json *vnm_json_new(vnm_json_kind kind);
vnm_json *vnm_json_new_int(int64_t v);
vnm_json *vnm_json_new_number(double v);
vnm_json *vnm_json_new_string(const char *s);
vnm_status vnm_json_push(vnm_json *array, vnm_json *item);
vnm_status vnm_json_add(vnm_json *object, const char *key, vnm_json *item);

/* Compact text (no spaces); integers exactly, other numbers with %.17g; non-finite numbers are
 * refused (JSON cannot hold them). *out is malloc'd and NUL-terminated, *out_len its length. */
vnm_status vnm_json_write(const vnm_json *v, char **out, size_t *out_len, char *err,
                          size_t err_len);

#endif
