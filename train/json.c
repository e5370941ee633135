/* train/json.c — the strict JSON parser (recursive descent with a depth bound, UTF-8 validated,
 * \uXXXX escapes and surrogate pairs decoded to UTF-8), node builders and the compact writer. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growable byte buffer, used for decoded strings and for the writer's output. */
typedef struct {
    char *p;
    size_t n, cap;
} jbuf;

static int jbuf_put(jbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

typedef struct {
    const char *s;
    size_t len, pos;
    int line;
    size_t line_start; /* byte offset where the current line begins: newlines only occur in
                          whitespace, so the column of any later error is pos - line_start + 1 */
    const char *source;
    char *err;
    size_t err_len;
    int failed;
} parser;

static void fail(parser *p, size_t pos, const char *fmt, ...)
{
    if (p->failed) return;
    p->failed = 1;
    if (!p->err || !p->err_len) return;
    int n = snprintf(p->err, p->err_len, "%s:%d:%zu (byte %zu): ", p->source, p->line,
                     pos - p->line_start + 1, pos);
    if (n < 0 || (size_t)n >= p->err_len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->err_len - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Describes the byte at pos for "found ..." in messages. */
static const char *found(const parser *p, size_t pos, char buf[16])
{
    if (pos >= p->len) return "end of input";
    unsigned char c = (unsigned char)p->s[pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == '\n') {
            p->line++;
            p->line_start = p->pos + 1;
        } else if (c != ' ' && c != '\t' && c != '\r') {
            return;
        }
        p->pos++;
    }
}

static vnm_json *node(parser *p, vnm_json_kind kind)
{
    vnm_json *v = vnm_json_new(kind);
    if (!v) {
        fail(p, p->pos, "out of memory");
        return NULL;
    }
    v->line = p->line;
    v->column = (int)(p->pos - p->line_start + 1);
    return v;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int put_utf8(jbuf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return jbuf_put(b, u, n);
}

/* Length of the valid UTF-8 sequence at s (at most avail bytes), 0 when invalid (overlong forms,
 * surrogates and code points above U+10FFFF included). */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned c = s[0];
    size_t n;
    unsigned cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0)
        n = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        n = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        n = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n > avail) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

/* Parses a string at p->pos (which holds '"') into b. */
static int parse_string(parser *p, jbuf *b)
{
    size_t start = p->pos++;
    for (;;) {
        if (p->pos >= p->len) {
            fail(p, start, "unterminated string (no closing '\"' before end of input)");
            return -1;
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            if (!b->p && jbuf_put(b, "", 0)) break;
            return 0;
        }
        if (c < 0x20) {
            fail(p, p->pos, "control character 0x%02x in string (expected it escaped)", c);
            return -1;
        }
        if (c != '\\') {
            size_t n = utf8_len((const unsigned char *)p->s + p->pos, p->len - p->pos);
            if (!n) {
                fail(p, p->pos, "invalid UTF-8 byte 0x%02x in string", c);
                return -1;
            }
            if (jbuf_put(b, p->s + p->pos, n)) break;
            p->pos += n;
            continue;
        }
        size_t esc = p->pos;
        char e = p->pos + 1 < p->len ? p->s[p->pos + 1] : '\0';
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char out[] = "\"\\/\b\f\n\r\t";
            if (jbuf_put(b, &out[simple - "\"\\/bfnrt"], 1)) break;
            p->pos += 2;
            continue;
        }
        unsigned cp;
        if (e != 'u') {
            char fb[16];
            fail(p, esc,
                 "invalid escape (expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX, "
                 "found %s after '\\')",
                 found(p, esc + 1, fb));
            return -1;
        }
        if (p->len - esc < 6 || hex4(p->s + esc + 2, &cp)) {
            fail(p, esc, "invalid \\u escape (expected 4 hex digits)");
            return -1;
        }
        p->pos = esc + 6;
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            fail(p, esc, "lone low surrogate \\u%04X (expected a high surrogate before it)", cp);
            return -1;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            unsigned lo;
            if (p->len - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u' ||
                hex4(p->s + p->pos + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                fail(p, esc,
                     "lone high surrogate \\u%04X (expected a \\uDC00-\\uDFFF escape after it)",
                     cp);
                return -1;
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            p->pos += 6;
        }
        if (put_utf8(b, cp)) break;
    }
    fail(p, p->pos, "out of memory");
    return -1;
}

static int is_digit(parser *p, size_t i) { return i < p->len && p->s[i] >= '0' && p->s[i] <= '9'; }

static vnm_json *parse_number(parser *p)
{
    size_t start = p->pos, i = p->pos;
    char fb[16];
    if (p->s[i] == '-') i++;
    if (!is_digit(p, i)) {
        fail(p, i, "expected a digit in number, found %s", found(p, i, fb));
        return NULL;
    }
    if (p->s[i] == '0' && is_digit(p, i + 1)) {
        fail(p, start, "leading zeros are not allowed in numbers");
        return NULL;
    }
    while (is_digit(p, i)) i++;
    int integral = 1;
    if (i < p->len && p->s[i] == '.') {
        integral = 0;
        if (!is_digit(p, ++i)) {
            fail(p, i, "expected a digit after '.', found %s", found(p, i, fb));
            return NULL;
        }
        while (is_digit(p, i)) i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (!is_digit(p, i)) {
            fail(p, i, "expected a digit in exponent, found %s", found(p, i, fb));
            return NULL;
        }
        while (is_digit(p, i)) i++;
    }
    vnm_json *v = node(p, VNM_JSON_NUMBER);
    char *text = malloc(i - start + 1);
    if (!v || !text) {
        free(text);
        vnm_json_free(v);
        fail(p, start, "out of memory");
        return NULL;
    }
    memcpy(text, p->s + start, i - start);
    text[i - start] = '\0';
    errno = 0;
    v->number = strtod(text, NULL);
    int range = errno == ERANGE && isinf(v->number);
    if (integral) {
        /* Exact int64 by digits (doubles lose integers above 2^53). Accumulate negatively so
         * INT64_MIN fits. */
        int64_t acc = 0;
        int fits = 1;
        for (const char *c = text + (text[0] == '-'); *c && fits; c++) {
            int d = *c - '0';
            if (acc < (INT64_MIN + d) / 10)
                fits = 0;
            else
                acc = acc * 10 - d;
        }
        if (fits && text[0] != '-' && acc == INT64_MIN) fits = 0;
        v->is_int = fits;
        v->integer = fits ? (text[0] == '-' ? acc : -acc) : 0;
    }
    free(text);
    if (range) {
        vnm_json_free(v);
        fail(p, start, "number out of range of a double");
        return NULL;
    }
    p->pos = i;
    return v;
}

static vnm_json *parse_value(parser *p, int depth);

/* Arrays and objects: one loop, the object case reads "key":" before each value. */
static vnm_json *parse_container(parser *p, int depth)
{
    int is_obj = p->s[p->pos] == '{';
    char close = is_obj ? '}' : ']';
    char fb[16];
    if (depth >= VNM_JSON_MAX_DEPTH) {
        fail(p, p->pos, "nesting deeper than %d levels", VNM_JSON_MAX_DEPTH);
        return NULL;
    }
    vnm_json *v = node(p, is_obj ? VNM_JSON_OBJECT : VNM_JSON_ARRAY);
    if (!v) return NULL;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return v;
    }
    for (;;) {
        jbuf key = {0};
        if (is_obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"') {
                fail(p, p->pos, "expected a string key in object, found %s", found(p, p->pos, fb));
                goto bad;
            }
            if (parse_string(p, &key)) {
                free(key.p);
                goto bad;
            }
            if (strlen(key.p) != key.n) {
                free(key.p);
                fail(p, p->pos, "object key contains \\u0000 (not supported)");
                goto bad;
            }
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key.p);
                fail(p, p->pos, "expected ':' after object key, found %s", found(p, p->pos, fb));
                goto bad;
            }
            p->pos++;
            skip_ws(p);
        }
        vnm_json *item = parse_value(p, depth + 1);
        if (!item) {
            free(key.p);
            goto bad;
        }
        vnm_status st = is_obj ? vnm_json_add(v, key.p, item) : vnm_json_push(v, item);
        free(key.p);
        if (st != VNM_OK) {
            fail(p, p->pos, "out of memory");
            goto bad;
        }
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == close) {
                fail(p, p->pos, "trailing comma before '%c'", close);
                goto bad;
            }
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return v;
        }
        fail(p, p->pos, "expected ',' or '%c' in %s, found %s", close, is_obj ? "object" : "array",
             found(p, p->pos, fb));
        goto bad;
    }
bad:
    vnm_json_free(v);
    return NULL;
}

static vnm_json *parse_literal(parser *p, const char *word, vnm_json_kind kind, int b)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n)) {
        fail(p, p->pos, "invalid literal (expected '%s')", word);
        return NULL;
    }
    vnm_json *v = node(p, kind);
    if (v) v->boolean = b;
    p->pos += n;
    return v;
}

static vnm_json *parse_value(parser *p, int depth)
{
    char fb[16];
    char c = p->pos < p->len ? p->s[p->pos] : '\0';
    if (p->pos < p->len) {
        if (c == '{' || c == '[') return parse_container(p, depth);
        if (c == '"') {
            vnm_json *v = node(p, VNM_JSON_STRING);
            jbuf b = {0};
            if (!v || parse_string(p, &b)) {
                free(b.p);
                vnm_json_free(v);
                return NULL;
            }
            v->string = b.p;
            v->string_len = b.n;
            return v;
        }
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
        if (c == 't') return parse_literal(p, "true", VNM_JSON_BOOL, 1);
        if (c == 'f') return parse_literal(p, "false", VNM_JSON_BOOL, 0);
        if (c == 'n') return parse_literal(p, "null", VNM_JSON_NULL, 0);
    }
    fail(p, p->pos,
         "expected a value (object, array, string, number, true, false or null), "
         "found %s",
         found(p, p->pos, fb));
    return NULL;
}

vnm_json *vnm_json_parse(const char *text, size_t len, const char *source, char *err,
                         size_t err_len)
{
    parser p = {.s = text,
                .len = len,
                .line = 1,
                .source = source ? source : "<json>",
                .err = err,
                .err_len = err_len};
    skip_ws(&p);
    vnm_json *v = parse_value(&p, 0);
    if (!v) return NULL;
    skip_ws(&p);
    if (p.pos < p.len) {
        char fb[16];
        fail(&p, p.pos, "trailing characters after the JSON value (found %s)",
             found(&p, p.pos, fb));
        vnm_json_free(v);
        return NULL;
    }
    return v;
}

vnm_json *vnm_json_parse_file(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && err_len) snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    jbuf b = {0};
    char chunk[4096];
    size_t n;
    int oom = 0;
    while (!oom && (n = fread(chunk, 1, sizeof chunk, f)) > 0) oom = jbuf_put(&b, chunk, n) != 0;
    int rerr = ferror(f);
    fclose(f);
    vnm_json *v = NULL;
    if (oom || rerr) {
        if (err && err_len)
            snprintf(err, err_len, "%s: %s", path, oom ? "out of memory" : "read error");
    } else {
        v = vnm_json_parse(b.p ? b.p : "", b.n, path, err, err_len);
    }
    free(b.p);
    return v;
}

void vnm_json_free(vnm_json *v)
{
    if (!v) return;
    for (size_t i = 0; i < v->count; i++) {
        vnm_json_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}

const vnm_json *vnm_json_get(const vnm_json *v, const char *key)
{
    if (!v || v->kind != VNM_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < v->count; i++)
        if (!strcmp(v->keys[i], key)) return v->items[i];
    return NULL;
}

const vnm_json *vnm_json_at(const vnm_json *v, size_t i)
{
    if (!v || v->kind != VNM_JSON_ARRAY || i >= v->count) return NULL;
    return v->items[i];
}

const char *vnm_json_kind_name(vnm_json_kind k)
{
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

vnm_json *vnm_json_new(vnm_json_kind kind)
{
    vnm_json *v = calloc(1, sizeof *v);
    if (v) v->kind = kind;
    return v;
}

vnm_json *vnm_json_new_int(int64_t x)
{
    vnm_json *v = vnm_json_new(VNM_JSON_NUMBER);
    if (v) {
        v->is_int = 1;
        v->integer = x;
        v->number = (double)x;
    }
    return v;
}

vnm_json *vnm_json_new_number(double x)
{
    vnm_json *v = vnm_json_new(VNM_JSON_NUMBER);
    if (v) v->number = x;
    return v;
}

vnm_json *vnm_json_new_string(const char *s)
{
    vnm_json *v = vnm_json_new(VNM_JSON_STRING);
    if (!v) return NULL;
    v->string_len = strlen(s);
    v->string = malloc(v->string_len + 1);
    if (!v->string) {
        free(v);
        return NULL;
    }
    memcpy(v->string, s, v->string_len + 1);
    return v;
}

/* Appends item (and key, for objects) to a container. */
static vnm_status append(vnm_json *c, const char *key, vnm_json *item)
{
    char *k = NULL;
    if (key) {
        k = malloc(strlen(key) + 1);
        if (k) strcpy(k, key);
    }
    vnm_json **items = realloc(c->items, (c->count + 1) * sizeof *items);
    if (items) c->items = items;
    char **keys = key ? realloc(c->keys, (c->count + 1) * sizeof *keys) : NULL;
    if (keys) c->keys = keys;
    if (!item || !items || (key && (!k || !keys))) {
        free(k);
        vnm_json_free(item);
        return VNM_ERR_RUNTIME;
    }
    c->items[c->count] = item;
    if (key) c->keys[c->count] = k;
    c->count++;
    return VNM_OK;
}

vnm_status vnm_json_push(vnm_json *array, vnm_json *item)
{
    if (!array || array->kind != VNM_JSON_ARRAY) {
        vnm_json_free(item);
        return VNM_ERR_INPUT;
    }
    return append(array, NULL, item);
}

vnm_status vnm_json_add(vnm_json *object, const char *key, vnm_json *item)
{
    if (!object || object->kind != VNM_JSON_OBJECT || !key) {
        vnm_json_free(item);
        return VNM_ERR_INPUT;
    }
    return append(object, key, item);
}

/* Escapes like serde_json: the short forms where JSON has them, \u00xx (lowercase) for the other
 * control characters, everything else (non-ASCII, '/') verbatim. */
static int write_string(jbuf *b, const char *s, size_t n)
{
    if (jbuf_put(b, "\"", 1)) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        const char *rep = NULL;
        switch (c) {
        case '"': rep = "\\\""; break;
        case '\\': rep = "\\\\"; break;
        case '\b': rep = "\\b"; break;
        case '\f': rep = "\\f"; break;
        case '\n': rep = "\\n"; break;
        case '\r': rep = "\\r"; break;
        case '\t': rep = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                rep = esc;
            }
        }
        if (rep ? jbuf_put(b, rep, strlen(rep)) : jbuf_put(b, s + i, 1)) return -1;
    }
    return jbuf_put(b, "\"", 1);
}

/* Returns 0, -1 (out of memory) or -2 (non-finite number). */
static int write_value(jbuf *b, const vnm_json *v)
{
    char num[32];
    switch (v->kind) {
    case VNM_JSON_NULL: return jbuf_put(b, "null", 4);
    case VNM_JSON_BOOL: return v->boolean ? jbuf_put(b, "true", 4) : jbuf_put(b, "false", 5);
    case VNM_JSON_NUMBER:
        if (v->is_int)
            snprintf(num, sizeof num, "%lld", (long long)v->integer);
        else if (!isfinite(v->number))
            return -2;
        else
            snprintf(num, sizeof num, "%.17g", v->number);
        return jbuf_put(b, num, strlen(num));
    case VNM_JSON_STRING: return write_string(b, v->string, v->string_len);
    case VNM_JSON_ARRAY:
    case VNM_JSON_OBJECT: {
        int is_obj = v->kind == VNM_JSON_OBJECT;
        if (jbuf_put(b, is_obj ? "{" : "[", 1)) return -1;
        for (size_t i = 0; i < v->count; i++) {
            int r = 0;
            if (i) r = jbuf_put(b, ",", 1);
            if (!r && is_obj) r = write_string(b, v->keys[i], strlen(v->keys[i]));
            if (!r && is_obj) r = jbuf_put(b, ":", 1);
            if (!r) r = write_value(b, v->items[i]);
            if (r) return r;
        }
        return jbuf_put(b, is_obj ? "}" : "]", 1);
    }
    }
    return -1;
}

vnm_status vnm_json_write(const vnm_json *v, char **out, size_t *out_len, char *err, size_t err_len)
{
    jbuf b = {0};
    int r = v ? write_value(&b, v) : -1;
    if (r) {
        free(b.p);
        if (err && err_len)
            snprintf(err, err_len, "json write: %s",
                     r == -2 ? "non-finite number (JSON has no NaN or infinity)" : "out of memory");
        return r == -2 ? VNM_ERR_INPUT : VNM_ERR_RUNTIME;
    }
    *out = b.p;
    *out_len = b.n;
    return VNM_OK;
}
