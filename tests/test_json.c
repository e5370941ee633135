/* tests/test_json.c — the JSON reader and writer: valid documents (nesting, key order, escapes,
 * unicode, numbers and exact integers), malformed ones with their line and column, the depth
 * bound, and write→parse round trips. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "train/json.h"

static vnm_json *parse_ok(const char *text)
{
    char err[256] = "";
    vnm_json *v = vnm_json_parse(text, strlen(text), "t.json", err, sizeof err);
    if (!v) fail_msg("parse failed: %s", err);
    return v;
}

static void test_nested_document(void **state)
{
    (void)state;
    const char *text = "{\n  \"z\": {\"b\": [1, 2, {\"k\": null}], \"a\": true},\n"
                       "  \"y\": [], \"x\": {}, \"w\": false, \"z\": \"dup\"\n}";
    vnm_json *v = parse_ok(text);
    assert_int_equal(v->kind, VNM_JSON_OBJECT);
    assert_int_equal(v->count, 5); /* duplicates are kept, in order */
    assert_string_equal(v->keys[0], "z");
    assert_string_equal(v->keys[1], "y");
    assert_string_equal(v->keys[4], "z");
    const vnm_json *z = vnm_json_get(v, "z"); /* first match */
    assert_int_equal(z->kind, VNM_JSON_OBJECT);
    assert_int_equal(z->line, 2);
    assert_int_equal(z->column, 8);
    assert_string_equal(z->keys[0], "b"); /* key order kept, not sorted */
    const vnm_json *b = vnm_json_get(z, "b");
    assert_int_equal(b->count, 3);
    assert_int_equal(vnm_json_at(b, 1)->integer, 2);
    assert_int_equal(vnm_json_get(vnm_json_at(b, 2), "k")->kind, VNM_JSON_NULL);
    assert_null(vnm_json_at(b, 3));
    assert_null(vnm_json_get(b, "k")); /* wrong kind */
    assert_int_equal(vnm_json_get(z, "a")->boolean, 1);
    assert_int_equal(vnm_json_get(v, "w")->boolean, 0);
    assert_int_equal(vnm_json_get(v, "y")->count, 0);
    assert_int_equal(vnm_json_get(v, "x")->kind, VNM_JSON_OBJECT);
    assert_null(vnm_json_get(v, "missing"));
    vnm_json_free(v);
}

static void test_escapes_unicode(void **state)
{
    (void)state;
    vnm_json *v = parse_ok("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\u00e9\\u20AC\\uD83D\\uDE00\", "
                           "\"caf\xc3\xa9 \xf0\x9f\x98\x80\", \"a\\u0000b\", \"\"]");
    assert_string_equal(v->items[0]->string, "\"\\/\b\f\n\r\t");
    assert_string_equal(v->items[1]->string, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    assert_string_equal(v->items[2]->string, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    assert_int_equal(v->items[3]->string_len, 3);
    assert_memory_equal(v->items[3]->string, "a\0b", 3);
    assert_string_equal(v->items[4]->string, "");
    vnm_json_free(v);
}

static void test_numbers(void **state)
{
    (void)state;
    vnm_json *v = parse_ok(" [0, -0, 1.5e3, -2E-2, 1e+2, 0.1, 9007199254740993, "
                           "9223372036854775807, -9223372036854775808, 9223372036854775808, 3.0] ");
    const vnm_json *const *n = (const vnm_json *const *)v->items;
    assert_true(n[0]->is_int && n[0]->integer == 0);
    assert_true(n[1]->is_int && n[1]->integer == 0);
    assert_true(!n[2]->is_int && n[2]->number == 1500.0);
    assert_true(!n[3]->is_int && n[3]->number == -0.02);
    assert_true(!n[4]->is_int && n[4]->number == 100.0);
    assert_true(n[5]->number == 0.1);
    /* 2^53 + 1 is not a double: only the int64 is exact. */
    assert_true(n[6]->is_int && n[6]->integer == 9007199254740993LL);
    assert_true(n[7]->is_int && n[7]->integer == INT64_MAX);
    assert_true(n[8]->is_int && n[8]->integer == INT64_MIN);
    assert_false(n[9]->is_int); /* one past INT64_MAX: only a double */
    assert_true(n[9]->number == 9223372036854775808.0);
    assert_false(n[10]->is_int); /* "3.0" is written as a fraction */
    vnm_json_free(v);
}

/* Each malformed document with the position and a distinctive part of the message. */
static void test_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int line, col;
        const char *needle;
    } cases[] = {
        {"[1, 2,]", 1, 7, "trailing comma"},
        {"{\"a\": 1,}", 1, 9, "trailing comma"},
        {"{a: 1}", 1, 2, "expected a string key"},
        {"[\"a\\x\"]", 1, 4, "invalid escape"},
        {"\"\\u12G4\"", 1, 2, "4 hex digits"},
        {"\"\\uD800\"", 1, 2, "lone high surrogate"},
        {"\"\\uD800\\u0041\"", 1, 2, "lone high surrogate"},
        {"[\n \"\\uDC00\"]", 2, 3, "lone low surrogate"},
        {"[01]", 1, 2, "leading zeros"},
        {"{\"k\": \"abc", 1, 7, "unterminated string"},
        {"{} x", 1, 4, "trailing characters"},
        {"{\n  \"a\": 1,\n  \"b\" 2\n}", 3, 7, "expected ':'"},
        {"[1 2]", 1, 4, "expected ',' or ']'"},
        {"tru", 1, 1, "expected 'true'"},
        {"", 1, 1, "expected a value"},
        {"  \n ", 2, 2, "found end of input"},
        {"\"a\tb\"", 1, 3, "control character"},
        {"[1.]", 1, 4, "digit after '.'"},
        {"1e", 1, 3, "digit in exponent"},
        {"-", 1, 2, "expected a digit"},
        {"\"\xff\"", 1, 2, "invalid UTF-8"},
        {"\"\xc0\xaf\"", 1, 2, "invalid UTF-8"}, /* overlong '/' */
        {"[1e999]", 1, 2, "out of range"},
        {"{\"a\" : [1,\n\n   {\"b\": nul}]}", 3, 10, "expected 'null'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "", where[64];
        vnm_json *v =
            vnm_json_parse(cases[i].text, strlen(cases[i].text), "bad.json", err, sizeof err);
        if (v) fail_msg("case %zu (%s) parsed", i, cases[i].text);
        snprintf(where, sizeof where, "bad.json:%d:%d ", cases[i].line, cases[i].col);
        if (strncmp(err, where, strlen(where)) || !strstr(err, cases[i].needle))
            fail_msg("case %zu: message \"%s\", expected prefix \"%s\" and \"%s\"", i, err, where,
                     cases[i].needle);
    }
}

static void test_depth_limit(void **state)
{
    (void)state;
    char text[2 * VNM_JSON_MAX_DEPTH + 8];
    int d = VNM_JSON_MAX_DEPTH;
    memset(text, '[', (size_t)d);
    memset(text + d, ']', (size_t)d);
    text[2 * d] = '\0';
    vnm_json_free(parse_ok(text)); /* exactly the limit is fine */
    memset(text, '[', (size_t)d + 1);
    memset(text + d + 1, ']', (size_t)d + 1);
    text[2 * d + 2] = '\0';
    char err[256] = "", where[64];
    assert_null(vnm_json_parse(text, strlen(text), "deep.json", err, sizeof err));
    snprintf(where, sizeof where, "deep.json:1:%d ", d + 1);
    assert_non_null(strstr(err, where));
    assert_non_null(strstr(err, "nesting deeper than 64"));
}

/* The text is only valid up to len: no terminator is needed and bytes past it are ignored. */
static void test_length_bounded(void **state)
{
    (void)state;
    char err[256] = "";
    vnm_json *v = vnm_json_parse("[1, 2]garbage", 6, "t", err, sizeof err);
    assert_non_null(v);
    assert_int_equal(v->count, 2);
    vnm_json_free(v);
    assert_null(vnm_json_parse("[1, 2]", 5, "t", err, sizeof err));
    assert_non_null(strstr(err, "t:1:6 "));
}

static int json_equal(const vnm_json *a, const vnm_json *b)
{
    if (a->kind != b->kind || a->count != b->count) return 0;
    switch (a->kind) {
    case VNM_JSON_NULL: return 1;
    case VNM_JSON_BOOL: return a->boolean == b->boolean;
    case VNM_JSON_NUMBER:
        return a->is_int == b->is_int &&
               (a->is_int ? a->integer == b->integer : a->number == b->number);
    case VNM_JSON_STRING:
        return a->string_len == b->string_len && !memcmp(a->string, b->string, a->string_len);
    case VNM_JSON_ARRAY:
    case VNM_JSON_OBJECT:
        for (size_t i = 0; i < a->count; i++)
            if ((a->keys && strcmp(a->keys[i], b->keys[i])) ||
                !json_equal(a->items[i], b->items[i]))
                return 0;
        return 1;
    }
    return 0;
}

static void test_write_exact_text(void **state)
{
    (void)state;
    vnm_json *o = vnm_json_new(VNM_JSON_OBJECT), *a = vnm_json_new(VNM_JSON_ARRAY);
    assert_int_equal(vnm_json_push(a, vnm_json_new_int(1)), VNM_OK);
    assert_int_equal(vnm_json_push(a, vnm_json_new_int(-9007199254740993LL)), VNM_OK);
    assert_int_equal(vnm_json_push(a, vnm_json_new_number(0.5)), VNM_OK);
    assert_int_equal(vnm_json_push(a, vnm_json_new(VNM_JSON_NULL)), VNM_OK);
    assert_int_equal(vnm_json_add(o, "b", a), VNM_OK);
    assert_int_equal(vnm_json_add(o, "a", vnm_json_new_string("q\"\\/\n\t\x01\x7f\xc3\xa9")),
                     VNM_OK);
    char *text, err[128];
    size_t len;
    assert_int_equal(vnm_json_write(o, &text, &len, err, sizeof err), VNM_OK);
    const char *want =
        "{\"b\":[1,-9007199254740993,0.5,null],\"a\":\"q\\\"\\\\/\\n\\t\\u0001\x7f\xc3\xa9\"}";
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    free(text);
    vnm_json_free(o);
}

static void test_round_trip(void **state)
{
    (void)state;
    const char *text = "{\"cfg\": {\"lr\": 0.001, \"eps\": 1e-08, \"steps\": 9223372036854775807,"
                       " \"neg\": -9223372036854775808, \"third\": 0.33333333333333331,"
                       " \"big\": 1.7976931348623157e308, \"tiny\": 5e-324},"
                       " \"names\": [\"a\\u0000b\", \"\\ud83d\\ude00\", \"tab\\there\"],"
                       " \"flags\": [true, false, null, [], {}], \"\": 0}";
    vnm_json *v = parse_ok(text);
    char *out, err[128];
    size_t len;
    assert_int_equal(vnm_json_write(v, &out, &len, err, sizeof err), VNM_OK);
    vnm_json *w = vnm_json_parse(out, len, "rt", err, sizeof err);
    if (!w) fail_msg("re-parse of \"%s\": %s", out, err);
    assert_true(json_equal(v, w));
    /* Writing again gives the same text: the writer is a fixed point after one pass. */
    char *out2;
    size_t len2;
    assert_int_equal(vnm_json_write(w, &out2, &len2, err, sizeof err), VNM_OK);
    assert_int_equal(len, len2);
    assert_memory_equal(out, out2, len);
    free(out);
    free(out2);
    vnm_json_free(v);
    vnm_json_free(w);
}

static void test_write_refuses_nonfinite(void **state)
{
    (void)state;
    vnm_json *a = vnm_json_new(VNM_JSON_ARRAY);
    assert_int_equal(vnm_json_push(a, vnm_json_new_number(NAN)), VNM_OK);
    char *out = NULL, err[128] = "";
    size_t len;
    assert_int_equal(vnm_json_write(a, &out, &len, err, sizeof err), VNM_ERR_INPUT);
    assert_null(out);
    assert_non_null(strstr(err, "non-finite"));
    vnm_json_free(a);
    /* Builders refuse the wrong container kind and free what they were given. */
    vnm_json *s = vnm_json_new_string("x");
    assert_int_equal(vnm_json_push(s, vnm_json_new_int(1)), VNM_ERR_INPUT);
    assert_int_equal(vnm_json_add(s, "k", vnm_json_new_int(1)), VNM_ERR_INPUT);
    vnm_json_free(s);
}

static void test_parse_file(void **state)
{
    (void)state;
    char err[512] = "";
    assert_null(vnm_json_parse_file("/nonexistent/dir/x.json", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/dir/x.json: cannot open"));
    const char *dir = getenv("VNM_TEST_DATA");
    assert_non_null(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/st_sharded.safetensors.index.json", dir);
    vnm_json *v = vnm_json_parse_file(path, err, sizeof err);
    if (!v) fail_msg("%s", err);
    assert_int_equal(vnm_json_get(v, "weight_map")->kind, VNM_JSON_OBJECT);
    vnm_json_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_document),
        cmocka_unit_test(test_escapes_unicode),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_length_bounded),
        cmocka_unit_test(test_write_exact_text),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_write_refuses_nonfinite),
        cmocka_unit_test(test_parse_file),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
