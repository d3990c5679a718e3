/* SPDX-License-Identifier: MIT
 *
 * json.h -- a strict RFC 8259 JSON parser that builds a read-only tree (a DOM) from a byte buffer.
 * Used for config.json, generation_config.json, tokenizer.json, tokenizer_config.json and
 * safetensors headers, so it must accept every valid file and refuse every invalid one with a
 * message a person can act on. What it enforces:
 *   - the grammar of RFC 8259 exactly: one value, surrounded by optional whitespace (space, tab,
 *     CR, LF); no comments, no trailing commas, no NaN/Infinity, no leading zeros, no byte order
 *     mark (RFC 8259 §8.1 lets a parser refuse it; we do, with a message saying so);
 *   - UTF-8 validity of the whole text (no overlong forms, no surrogates, nothing past U+10FFFF);
 *   - string escapes, \uXXXX with surrogate pairs combined; a lone surrogate is refused (it has no
 *     UTF-8 form). Decoded strings may contain NUL, so every string comes with its length;
 *   - duplicate keys in one object are an error (RFC 8259 says names SHOULD be unique; a file that
 *     repeats one is ambiguous, and we name the key and both places instead of picking one);
 *   - a nesting-depth limit (default JSON_DEFAULT_MAX_DEPTH), so hostile input cannot exhaust the
 *     stack.
 * Errors read "line L, column C (byte B): what" (1-based line and column, column counted in bytes,
 * 0-based byte offset). Numbers keep their text; the double is strtod's (C locale: the tool never
 * calls setlocale) and json_int64 gives an exact integer when the text is one.
 *
 * All nodes of one parse live in one arena owned by the struct json_doc; json_free releases it.
 * Nothing here exits or aborts: every function returns a status or NULL.
 *
 *   struct json_doc *doc;
 *   if (json_parse(buf, len, NULL, &doc, err, sizeof err) != 0) { ... err ... }
 *   const struct json_value *v = json_get(json_root(doc), "vocab_size");
 *   int64_t n;
 *   if (!v || json_int64(v, &n) != 0) { ... }
 *   json_free(doc);
 */
#ifndef INFLLM_RT_JSON_H
#define INFLLM_RT_JSON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JSON_DEFAULT_MAX_DEPTH 512

enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

struct json_member;

/* One value. The fields are readable; use the accessors below where they are shorter. */
struct json_value {
    enum json_type type;
    size_t         offset; /* byte offset of the value's first byte in the input (messages) */
    union {
        struct {
            const char *s;   /* decoded UTF-8, NUL-terminated, may also contain NUL inside */
            size_t      len; /* bytes, without the terminator */
        } str;
        struct {
            const char *text; /* the number as written, NUL-terminated */
            size_t      len;
            double      d;    /* strtod of text; +-HUGE_VAL when out of double's range */
        } num;
        struct {
            const struct json_value *items;
            size_t                   n;
        } arr;
        struct {
            const struct json_member *members; /* in document order */
            size_t                    n;
            const uint32_t           *sorted;  /* member indices sorted by key (lookups) */
        } obj;
    } u;
};

struct json_member {
    const char       *key; /* decoded, NUL-terminated, may contain NUL */
    size_t            key_len;
    size_t            key_offset; /* byte offset of the key's opening quote */
    struct json_value value;
};

struct json_parse_options {
    int max_depth; /* arrays/objects nested deeper than this are refused; <= 0: the default */
};

struct json_doc; /* one parse: the arena and the root */

/* Parses len bytes at buf (no terminator needed). opt may be NULL. Returns 0 and *out, or -1 with
 * *out = NULL and "line L, column C (byte B): problem" in err (err may be NULL, errlen 0). */
int json_parse(const void *buf, size_t len, const struct json_parse_options *opt,
               struct json_doc **out, char *err, size_t errlen);

/* Reads the whole file and parses it; messages start with "PATH: ". */
int json_parse_file(const char *path, const struct json_parse_options *opt, struct json_doc **out,
                    char *err, size_t errlen);

void json_free(struct json_doc *doc); /* NULL: no-op */

const struct json_value *json_root(const struct json_doc *doc);

/* Where byte `offset` of the text buf[0..len) lies: 1-based line and column (bytes). For messages
 * about a value found valid by the parser but wrong for the caller (json_value.offset). */
void json_position(const void *buf, size_t len, size_t offset, int64_t *line, int64_t *column);

/* ---- accessors: each is safe on NULL and on a value of the wrong type ---- */

const char *json_type_name(enum json_type t); /* "null", "false", ..., "object" */

/* Object member by key (exact bytes), NULL when v is not an object or has no such key.
 * O(log n): objects keep a sorted index. */
const struct json_value *json_get(const struct json_value *v, const char *key);
const struct json_value *json_get_n(const struct json_value *v, const char *key, size_t key_len);

/* Number of array items or object members; 0 for anything else. */
size_t json_len(const struct json_value *v);

/* Array item i, NULL when v is not an array or i >= its length. */
const struct json_value *json_at(const struct json_value *v, size_t i);

/* Object member i in document order, NULL when v is not an object or i >= its length. */
const struct json_member *json_member_at(const struct json_value *v, size_t i);

int json_is_null(const struct json_value *v); /* 1 when v is JSON null, else 0 (also for NULL) */

/* The string's bytes (NUL-terminated) and length, NULL when v is not a string. len may be NULL. */
const char *json_string(const struct json_value *v, size_t *len);

/* 0 and *out (0 or 1) when v is true/false; -1 otherwise. */
int json_bool(const struct json_value *v, int *out);

/* 0 and *out when v is a number whose text is an integer (optional '-', digits; no fraction, no
 * exponent) that fits int64 exactly; -1 otherwise (not a number, fractional, out of range). */
int json_int64(const struct json_value *v, int64_t *out);

/* 0 and *out when v is a number within double's range (subnormals and rounding accepted);
 * -1 when v is not a number or its magnitude overflows a double. */
int json_double(const struct json_value *v, double *out);

/* The number's text as written, NULL when v is not a number. len may be NULL. */
const char *json_number_text(const struct json_value *v, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* INFLLM_RT_JSON_H */
