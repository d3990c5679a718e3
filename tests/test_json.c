/* SPDX-License-Identifier: MIT
 *
 * test_json.c -- the strict JSON parser (runtime/json.h): every kind of value, escapes and
 * surrogate pairs, strings with NUL, exact int64 and its range, duplicate keys, the depth limit,
 * UTF-8 validation, and a table of invalid texts each with the position its message must name.
 */
#include "harness.h"
#include "../runtime/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct json_doc *parse(const char *s, size_t len, char *err, size_t errlen) {
    struct json_doc *d = NULL;
    if (json_parse(s, len, NULL, &d, err, errlen) != 0) return NULL;
    return d;
}

static void test_values(void) {
    if (!th_case("JSON_VALUES")) return;
    const char text[] = " {\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\\\"\\/\"],\n"
                        "  \"b\": {\"c\": {}}, \"e\": [], \"n\\u0000ul\": \"a\\u0000b\", \"big\": 9223372036854775807,\n"
                        "  \"neg\": -9223372036854775808, \"over\": 9223372036854775808, \"f\": 1.0, \"z\": -0 } ";
    char             err[256];
    struct json_doc *d = parse(text, sizeof text - 1, err, sizeof err);
    if (!TH_CHECK(d != NULL, "parse failed: %s", err)) return;
    const struct json_value *r = json_root(d), *a = json_get(r, "a");
    TH_CHECK(r->type == JSON_OBJECT && json_len(r) == 9, "root: %s with %zu members", json_type_name(r->type), json_len(r));
    TH_CHECK(json_len(a) == 6, "a has %zu items", json_len(a));
    int64_t i64;
    double  dv;
    int     b;
    TH_CHECK(json_int64(json_at(a, 0), &i64) == 0 && i64 == 1, "a[0]");
    TH_CHECK(json_int64(json_at(a, 1), &i64) != 0 && json_double(json_at(a, 1), &dv) == 0 && dv == -2500, "a[1]");
    TH_CHECK(json_bool(json_at(a, 2), &b) == 0 && b == 1 && json_bool(json_at(a, 3), &b) == 0 && b == 0, "bools");
    TH_CHECK(json_is_null(json_at(a, 4)) && json_at(a, 6) == NULL, "null, and no a[6]");
    size_t      len;
    const char *s = json_string(json_at(a, 5), &len);
    TH_CHECK(s && len == 10 && memcmp(s, "x\xC3\xA9\xF0\x9F\x98\x80\n\"/", 10) == 0, "escapes and a surrogate pair");
    s = json_string(json_get_n(r, "n\0ul", 4), &len);
    TH_CHECK(s && len == 3 && memcmp(s, "a\0b", 3) == 0, "NUL in keys and values");
    TH_CHECK(json_get(r, "n") == NULL && json_get(r, "missing") == NULL, "absent keys");
    TH_CHECK(json_int64(json_get(r, "big"), &i64) == 0 && i64 == INT64_MAX, "INT64_MAX");
    TH_CHECK(json_int64(json_get(r, "neg"), &i64) == 0 && i64 == INT64_MIN, "INT64_MIN");
    TH_CHECK(json_int64(json_get(r, "over"), &i64) != 0, "INT64_MAX + 1 is not an int64");
    TH_CHECK(json_int64(json_get(r, "f"), &i64) != 0 && json_double(json_get(r, "f"), &dv) == 0 && dv == 1.0, "1.0");
    TH_CHECK(json_len(json_get(json_get(r, "b"), "c")) == 0 && json_get(r, "e")->type == JSON_ARRAY, "empties");
    TH_CHECK(strcmp(json_number_text(json_get(r, "z"), NULL), "-0") == 0, "number text kept");
    const struct json_member *m = json_member_at(r, 1);
    TH_CHECK(m && strcmp(m->key, "b") == 0 && json_member_at(r, 9) == NULL, "members in document order");
    TH_CHECK(json_string(json_at(a, 0), NULL) == NULL && json_bool(json_at(a, 0), &b) != 0 && json_at(r, 0) == NULL,
             "wrong-type accessors return nothing");
    int64_t line, col;
    json_position(text, sizeof text - 1, json_get(r, "neg")->offset, &line, &col);
    TH_CHECK(line == 3 && col == 10, "position of \"neg\"'s value: line %lld col %lld", (long long)line, (long long)col);
    json_free(d);
    json_free(NULL);
    /* every top-level kind */
    const char *tops[] = {"0", "\"s\"", "true", "null", "[]", "{}", "-1.5E-3", "\t\r\n 7 \n"};
    for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++) {
        d = parse(tops[i], strlen(tops[i]), err, sizeof err);
        TH_CHECK(d != NULL, "'%s' is valid: %s", tops[i], err);
        json_free(d);
    }
}

static void test_large_object(void) {
    if (!th_case("JSON_LARGE_OBJECT")) return;
    /* 50,000 members: lookups by key through the sorted index */
    size_t cap = 50000 * 24 + 16, n = 0;
    char  *s   = malloc(cap);
    n += (size_t)sprintf(s + n, "{");
    for (int i = 0; i < 50000; i++) n += (size_t)sprintf(s + n, "%s\"k%d\": %d", i ? "," : "", (i * 7919) % 50000, i);
    n += (size_t)sprintf(s + n, "}");
    char             err[256];
    struct json_doc *d = parse(s, n, err, sizeof err);
    if (TH_CHECK(d != NULL, "parse: %s", err)) {
        int bad = 0;
        for (int i = 0; i < 50000; i += 7) {
            char    k[16];
            int64_t v;
            snprintf(k, sizeof k, "k%d", (i * 7919) % 50000);
            bad += json_int64(json_get(json_root(d), k), &v) != 0 || v != i;
        }
        TH_CHECK(bad == 0, "%d lookups wrong", bad);
    }
    json_free(d);
    free(s);
}

struct bad_case {
    const char *text;
    size_t      len; /* 0: strlen */
    const char *where; /* must appear in the message */
    const char *what;
};

static void test_invalid(void) {
    static const struct bad_case cases[] = {
        {"", 0, "byte 0", "expected a value"},
        {"   ", 0, "column 4", "expected a value"},
        {"[1,]", 0, "column 4", "expected a value"},
        {"{\"a\":1,}", 0, "column 8", "expected a string key"},
        {"[1 2]", 0, "column 4", "expected ',' or ']'"},
        {"{\"a\" 1}", 0, "column 6", "expected ':'"},
        {"01", 0, "column 1", "leading zero"},
        {"1.", 0, "column 3", "digit must follow '.'"},
        {"1e", 0, "column 3", "exponent"},
        {"-", 0, "column 1", "digit must follow '-'"},
        {"+1", 0, "column 1", "expected a value"},
        {"NaN", 0, "column 1", "expected a value"},
        {"tru", 0, "column 1", "expected a value"},
        {"\"abc", 0, "column 1", "unterminated string"},
        {"\"a\tb\"", 0, "column 3", "control character"},
        {"\"\\x\"", 0, "column 2", "invalid escape \\x"},
        {"\"\\u12G4\"", 0, "column 2", "4 hex digits"},
        {"\"\\ud800\"", 0, "column 2", "not followed by a low surrogate"},
        {"\"\\ud800\\u0041\"", 0, "column 2", "not followed by a low surrogate"},
        {"\"\\udc00\"", 0, "column 2", "lone low surrogate"},
        {"\"\xC0\x80\"", 0, "column 2", "invalid UTF-8"},
        {"\"\xED\xA0\x80\"", 0, "column 2", "invalid UTF-8"},
        {"\"\xF4\x90\x80\x80\"", 0, "column 2", "invalid UTF-8"},
        {"\"\xE4\xB8\"", 0, "column 2", "invalid UTF-8"},
        {"\xEF\xBB\xBF{}", 0, "column 1", "byte order mark"},
        {"{} x", 0, "column 4", "unexpected 'x'"},
        {"[1]\n\n  ]", 0, "line 3, column 3", "unexpected ']'"},
        {"{\"a\":1,\n \"b\":2, \"a\":3}", 0, "line 2, column 9", "duplicate key \"a\" (first at line 1, column 2)"},
        {"[\"a\0\"]", 6, "column 4", "control character 0x00"},
        {"[", 0, "column 2", "expected a value, found end of input"},
        {"[1", 0, "column 1", "unterminated array"},
        {"{\"a\":", 0, "byte 5", "expected a value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bad_case *c = &cases[i];
        if (!th_case("JSON_INVALID(%zu)", i)) continue;
        char             err[256] = "";
        struct json_doc *d        = (struct json_doc *)1;
        int rc = json_parse(c->text, c->len ? c->len : strlen(c->text), NULL, &d, err, sizeof err);
        TH_CHECK(rc == -1 && d == NULL, "accepted");
        TH_CHECK(strstr(err, c->where) && strstr(err, c->what), "message '%s' should name '%s' and '%s'", err,
                 c->where, c->what);
    }
}

static void test_depth(void) {
    if (!th_case("JSON_DEPTH")) return;
    char  err[256];
    char *s = malloc(200002);
    for (int i = 0; i < 100000; i++) s[i] = '[', s[200000 - 1 - i] = ']';
    struct json_doc *d = parse(s, 200000, err, sizeof err);
    TH_CHECK(d == NULL && strstr(err, "nesting deeper than 512"), "deep nesting refused: %s", err);
    struct json_parse_options o = {4};
    TH_CHECK(json_parse("[[[[1]]]]", 9, &o, &d, err, sizeof err) == 0, "depth 4 allowed at limit 4");
    json_free(d);
    TH_CHECK(json_parse("[[[[[1]]]]]", 11, &o, &d, err, sizeof err) != 0 && strstr(err, "column 5"),
             "depth 5 refused at limit 4: %s", err);
    free(s);
    /* errors never overflow a small buffer */
    char tiny[8];
    TH_CHECK(json_parse("[x]", 3, NULL, &d, tiny, sizeof tiny) != 0 && strlen(tiny) < sizeof tiny, "short buffer");
    TH_CHECK(json_parse("[x]", 3, NULL, &d, NULL, 0) != 0, "no buffer");
}

static void test_file(void) {
    if (!th_case("JSON_FILE")) return;
    char             err[512];
    struct json_doc *d;
    TH_CHECK(json_parse_file("/nonexistent/x.json", NULL, &d, err, sizeof err) != 0 &&
                 strstr(err, "/nonexistent/x.json: cannot open"),
             "missing file: %s", err);
    const char *path = "build/test_json_tmp.json";
    FILE       *f    = fopen(path, "wb");
    if (!f) return;
    fputs("{\"x\": [1, 2,]}", f);
    fclose(f);
    TH_CHECK(json_parse_file(path, NULL, &d, err, sizeof err) != 0 && strstr(err, path) && strstr(err, "column 13"),
             "message names the file and the place: %s", err);
    remove(path);
}

int main(int argc, char **argv) {
    th_init(argc, argv);
    test_values();
    test_large_object();
    test_invalid();
    test_depth();
    test_file();
    return th_report();
}
