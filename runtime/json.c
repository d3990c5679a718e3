/* SPDX-License-Identifier: MIT
 *
 * json.c -- the strict JSON parser of json.h: recursive descent with a depth limit, children
 * gathered on two growable stacks (values, members) and copied into the document's arena when
 * their array or object closes, so every array and object is one contiguous block. Objects get a
 * sorted index of their keys, built once: it finds duplicate keys and makes lookups O(log n).
 */
#define _POSIX_C_SOURCE 200809L
#include "json.h"

#include "readfile.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

struct arena_block {
    struct arena_block *next;
    size_t              used, size;
    max_align_t         data[]; /* size bytes */
};

struct json_doc {
    struct arena_block *blocks;
    struct json_value   root;
};

static void *arena_alloc(struct json_doc *doc, size_t n) {
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    if (n == 0) n = align;
    struct arena_block *b = doc->blocks;
    if (!b || b->size - b->used < n) {
        size_t size = n > (size_t)1 << 16 ? n : (size_t)1 << 16;
        if (size > SIZE_MAX - sizeof *b) return NULL;
        b = malloc(sizeof *b + size);
        if (!b) return NULL;
        b->size = size;
        b->used = 0;
        /* a block bigger than the default goes behind the current one, so the current one's
         * free space stays usable */
        if (doc->blocks && size > ((size_t)1 << 16)) {
            b->next            = doc->blocks->next;
            doc->blocks->next  = b;
        } else {
            b->next     = doc->blocks;
            doc->blocks = b;
        }
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

/* ---- parser state ---- */

struct parser {
    const unsigned char *p, *end, *begin;
    struct json_doc     *doc;
    int                  depth, max_depth;
    struct json_value   *vals; /* pending array items of every open array */
    size_t               n_vals, cap_vals;
    struct json_member  *mems; /* pending members of every open object */
    size_t               n_mems, cap_mems;
    char                *sbuf; /* scratch for one decoded string */
    size_t               cap_sbuf;
    char                *err;
    size_t               errlen;
    int                  failed;
};

static void pos_of(const unsigned char *begin, size_t offset, int64_t *line, int64_t *col) {
    int64_t l = 1;
    size_t  line_start = 0;
    for (size_t i = 0; i < offset; i++)
        if (begin[i] == '\n') {
            l++;
            line_start = i + 1;
        }
    *line = l;
    *col  = (int64_t)(offset - line_start) + 1;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail_at(struct parser *ps, const unsigned char *at, const char *fmt, ...) {
    if (ps->failed) return -1;
    ps->failed = 1;
    if (!ps->err || ps->errlen == 0) return -1;
    size_t  off = (size_t)(at - ps->begin);
    int64_t line, col;
    pos_of(ps->begin, off, &line, &col);
    int k = snprintf(ps->err, ps->errlen, "line %lld, column %lld (byte %zu): ", (long long)line,
                     (long long)col, off);
    if (k < 0 || (size_t)k >= ps->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err + k, ps->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

/* How to show the byte at p in a message. */
static const char *show_byte(const unsigned char *p, const unsigned char *end, char buf[16]) {
    if (p >= end) return "end of input";
    if (*p >= 0x21 && *p < 0x7f) snprintf(buf, 16, "'%c'", *p);
    else snprintf(buf, 16, "byte 0x%02X", *p);
    return buf;
}

static void skip_ws(struct parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem) return -1;
        n *= 2;
    }
    void *q = realloc(*buf, n * elem);
    if (!q) return -1;
    *buf = q;
    *cap = n;
    return 0;
}

/* Length of the valid UTF-8 sequence at p (1..4), 0 when invalid. Rules of RFC 3629 §4. */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    int      n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;       /* overlong */
        else if (c == 0xED) hi = 0x9F;  /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;       /* overlong */
        else if (c == 0xF4) hi = 0x8F;  /* past U+10FFFF */
    } else
        return 0;
    if (end - p < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

static int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses the string starting at the opening quote ps->p; the decoded bytes go to the arena.
 * A decoded string is never longer than its source text, so the scratch buffer is sized once. */
static int parse_string(struct parser *ps, const char **out, size_t *out_len) {
    const unsigned char *start = ps->p;
    ps->p++; /* the quote */
    size_t room = (size_t)(ps->end - ps->p) + 1;
    /* scan for the closing quote first: bounds the scratch size by this string, not the file */
    const unsigned char *q = ps->p;
    while (q < ps->end && *q != '"') q += (*q == '\\' && q + 1 < ps->end) ? 2 : 1;
    room = (size_t)(q - ps->p) + 1;
    if (grow((void **)&ps->sbuf, &ps->cap_sbuf, room, 1) != 0) return fail_at(ps, start, "out of memory");
    size_t n = 0;
    for (;;) {
        if (ps->p >= ps->end) return fail_at(ps, start, "unterminated string");
        unsigned c = *ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20)
            return fail_at(ps, ps->p, "control character 0x%02X in a string (escape it as \\u%04X)", c, c);
        if (c == '\\') {
            if (ps->end - ps->p < 2) return fail_at(ps, start, "unterminated string");
            unsigned e = ps->p[1];
            const unsigned char *esc = ps->p;
            ps->p += 2;
            switch (e) {
            case '"': ps->sbuf[n++] = '"'; break;
            case '\\': ps->sbuf[n++] = '\\'; break;
            case '/': ps->sbuf[n++] = '/'; break;
            case 'b': ps->sbuf[n++] = '\b'; break;
            case 'f': ps->sbuf[n++] = '\f'; break;
            case 'n': ps->sbuf[n++] = '\n'; break;
            case 'r': ps->sbuf[n++] = '\r'; break;
            case 't': ps->sbuf[n++] = '\t'; break;
            case 'u': {
                unsigned cp;
                if (ps->end - ps->p < 4 || hex4(ps->p, &cp) != 0)
                    return fail_at(ps, esc, "\\u must be followed by 4 hex digits");
                ps->p += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || hex4(ps->p + 2, &lo) != 0 ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return fail_at(ps, esc, "high surrogate \\u%04X not followed by a low surrogate \\uDC00..\\uDFFF", cp);
                    ps->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fail_at(ps, esc, "lone low surrogate \\u%04X", cp);
                /* the escape's 6 or 12 source bytes always cover its 1..4 UTF-8 bytes */
                n += put_utf8(ps->sbuf + n, cp);
                break;
            }
            default:
                if (e >= 0x21 && e < 0x7f) return fail_at(ps, esc, "invalid escape \\%c", (char)e);
                return fail_at(ps, esc, "invalid escape: byte 0x%02X after a backslash", e);
            }
            continue;
        }
        int k = utf8_len(ps->p, ps->end);
        if (k == 0) return fail_at(ps, ps->p, "invalid UTF-8 byte 0x%02X in a string", c);
        memcpy(ps->sbuf + n, ps->p, (size_t)k);
        n += (size_t)k;
        ps->p += k;
    }
    char *s = arena_alloc(ps->doc, n + 1);
    if (!s) return fail_at(ps, start, "out of memory");
    memcpy(s, ps->sbuf, n);
    s[n]     = 0;
    *out     = s;
    *out_len = n;
    return 0;
}

static int parse_number(struct parser *ps, struct json_value *v) {
    const unsigned char *s = ps->p, *p = ps->p;
    if (p < ps->end && *p == '-') p++;
    if (p >= ps->end || !(*p >= '0' && *p <= '9')) return fail_at(ps, s, "invalid number: a digit must follow '-'");
    if (*p == '0') {
        p++;
        if (p < ps->end && *p >= '0' && *p <= '9') return fail_at(ps, s, "invalid number: leading zero");
    } else
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    if (p < ps->end && *p == '.') {
        p++;
        if (p >= ps->end || !(*p >= '0' && *p <= '9')) return fail_at(ps, p, "invalid number: a digit must follow '.'");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p >= ps->end || !(*p >= '0' && *p <= '9')) return fail_at(ps, p, "invalid number: a digit must follow the exponent");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    size_t len = (size_t)(p - s);
    char  *t   = arena_alloc(ps->doc, len + 1);
    if (!t) return fail_at(ps, s, "out of memory");
    memcpy(t, s, len);
    t[len]       = 0;
    v->type      = JSON_NUMBER;
    v->u.num.text = t;
    v->u.num.len = len;
    v->u.num.d   = strtod(t, NULL);
    ps->p        = p;
    return 0;
}

static int parse_value(struct parser *ps, struct json_value *v);

static int parse_array(struct parser *ps, struct json_value *v) {
    const unsigned char *start = ps->p;
    ps->p++;
    size_t base = ps->n_vals;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') ps->p++;
    else
        for (;;) {
            struct json_value item;
            if (parse_value(ps, &item) != 0) return -1;
            if (grow((void **)&ps->vals, &ps->cap_vals, ps->n_vals + 1, sizeof *ps->vals) != 0)
                return fail_at(ps, start, "out of memory");
            ps->vals[ps->n_vals++] = item;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == ']') {
                ps->p++;
                break;
            }
            char b[16];
            if (ps->p >= ps->end) return fail_at(ps, start, "unterminated array");
            return fail_at(ps, ps->p, "expected ',' or ']' in an array, found %s", show_byte(ps->p, ps->end, b));
        }
    size_t             n     = ps->n_vals - base;
    struct json_value *items = NULL;
    if (n) {
        items = arena_alloc(ps->doc, n * sizeof *items);
        if (!items) return fail_at(ps, start, "out of memory");
        memcpy(items, ps->vals + base, n * sizeof *items);
    }
    ps->n_vals    = base;
    v->type       = JSON_ARRAY;
    v->u.arr.items = items;
    v->u.arr.n    = n;
    return 0;
}

static int key_cmp(const struct json_member *a, const struct json_member *b) {
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int    c = memcmp(a->key, b->key, n);
    if (c) return c;
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

/* Stable merge sort of the indices idx[0..n) by key (qsort has no context argument in C11). */
static void sort_members(const struct json_member *m, uint32_t *idx, uint32_t *tmp, size_t n) {
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = key_cmp(&m[idx[j]], &m[idx[i]]) < 0 ? idx[j++] : idx[i++];
            while (i < mid) tmp[k++] = idx[i++];
            while (j < hi) tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
}

static int parse_object(struct parser *ps, struct json_value *v) {
    const unsigned char *start = ps->p;
    ps->p++;
    size_t base = ps->n_mems;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') ps->p++;
    else
        for (;;) {
            struct json_member m;
            char               b[16];
            skip_ws(ps);
            if (ps->p >= ps->end) return fail_at(ps, start, "unterminated object");
            if (*ps->p != '"') return fail_at(ps, ps->p, "expected a string key in an object, found %s", show_byte(ps->p, ps->end, b));
            m.key_offset = (size_t)(ps->p - ps->begin);
            if (parse_string(ps, &m.key, &m.key_len) != 0) return -1;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return fail_at(ps, ps->p, "expected ':' after an object key, found %s", show_byte(ps->p, ps->end, b));
            ps->p++;
            if (parse_value(ps, &m.value) != 0) return -1;
            if (grow((void **)&ps->mems, &ps->cap_mems, ps->n_mems + 1, sizeof *ps->mems) != 0)
                return fail_at(ps, start, "out of memory");
            ps->mems[ps->n_mems++] = m;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == '}') {
                ps->p++;
                break;
            }
            if (ps->p >= ps->end) return fail_at(ps, start, "unterminated object");
            return fail_at(ps, ps->p, "expected ',' or '}' in an object, found %s", show_byte(ps->p, ps->end, b));
        }
    size_t n = ps->n_mems - base;
    if (n > UINT32_MAX) return fail_at(ps, start, "object with more than %u members", UINT32_MAX);
    struct json_member *mem = NULL;
    uint32_t           *idx = NULL;
    if (n) {
        mem = arena_alloc(ps->doc, n * sizeof *mem);
        idx = arena_alloc(ps->doc, n * sizeof *idx);
        uint32_t *tmp = malloc(n * sizeof *tmp);
        if (!mem || !idx || !tmp) {
            free(tmp);
            return fail_at(ps, start, "out of memory");
        }
        memcpy(mem, ps->mems + base, n * sizeof *mem);
        for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
        sort_members(mem, idx, tmp, n);
        free(tmp);
        for (size_t i = 1; i < n; i++)
            if (key_cmp(&mem[idx[i - 1]], &mem[idx[i]]) == 0) {
                /* the sort is stable: idx[i] is the later of the two in the document */
                int64_t line, col;
                pos_of(ps->begin, mem[idx[i - 1]].key_offset, &line, &col);
                return fail_at(ps, ps->begin + mem[idx[i]].key_offset,
                               "duplicate key \"%.*s\" (first at line %lld, column %lld)",
                               (int)(mem[idx[i]].key_len > 64 ? 64 : mem[idx[i]].key_len), mem[idx[i]].key,
                               (long long)line, (long long)col);
            }
    }
    ps->n_mems       = base;
    v->type          = JSON_OBJECT;
    v->u.obj.members = mem;
    v->u.obj.n       = n;
    v->u.obj.sorted  = idx;
    return 0;
}

static int match_lit(struct parser *ps, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0) return -1;
    ps->p += n;
    return 0;
}

static int parse_value(struct parser *ps, struct json_value *v) {
    skip_ws(ps);
    memset(v, 0, sizeof *v);
    v->offset = (size_t)(ps->p - ps->begin);
    if (ps->p >= ps->end) return fail_at(ps, ps->p, "expected a value, found end of input");
    char b[16];
    switch (*ps->p) {
    case '{':
    case '[': {
        if (++ps->depth > ps->max_depth)
            return fail_at(ps, ps->p, "nesting deeper than %d arrays/objects", ps->max_depth);
        int rc = *ps->p == '{' ? parse_object(ps, v) : parse_array(ps, v);
        ps->depth--;
        return rc;
    }
    case '"':
        v->type = JSON_STRING;
        return parse_string(ps, &v->u.str.s, &v->u.str.len);
    case 't':
        if (match_lit(ps, "true") != 0) break;
        v->type = JSON_TRUE;
        return 0;
    case 'f':
        if (match_lit(ps, "false") != 0) break;
        v->type = JSON_FALSE;
        return 0;
    case 'n':
        if (match_lit(ps, "null") != 0) break;
        v->type = JSON_NULL;
        return 0;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) return parse_number(ps, v);
        break;
    }
    return fail_at(ps, ps->p, "expected a value, found %s", show_byte(ps->p, ps->end, b));
}

/* ---- public ---- */

void json_free(struct json_doc *doc) {
    if (!doc) return;
    struct arena_block *b = doc->blocks;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(doc);
}

int json_parse(const void *buf, size_t len, const struct json_parse_options *opt, struct json_doc **out,
               char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!out) return -1;
    *out = NULL;
    static const unsigned char empty[1];
    struct parser ps;
    memset(&ps, 0, sizeof ps);
    ps.begin = ps.p = buf ? buf : empty;
    ps.end          = ps.begin + (buf ? len : 0);
    ps.max_depth    = opt && opt->max_depth > 0 ? opt->max_depth : JSON_DEFAULT_MAX_DEPTH;
    ps.err          = err;
    ps.errlen       = errlen;
    ps.doc          = calloc(1, sizeof *ps.doc);
    if (!ps.doc) {
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    if (len >= 3 && ps.p[0] == 0xEF && ps.p[1] == 0xBB && ps.p[2] == 0xBF)
        fail_at(&ps, ps.p, "byte order mark (EF BB BF) before the JSON text (not allowed by RFC 8259; remove it)");
    else if (parse_value(&ps, &ps.doc->root) == 0) {
        skip_ws(&ps);
        if (ps.p < ps.end) {
            char b[16];
            fail_at(&ps, ps.p, "unexpected %s after the JSON value", show_byte(ps.p, ps.end, b));
        } else
            rc = 0;
    }
    free(ps.vals);
    free(ps.mems);
    free(ps.sbuf);
    if (rc != 0) {
        json_free(ps.doc);
        return -1;
    }
    *out = ps.doc;
    return 0;
}

int json_parse_file(const char *path, const struct json_parse_options *opt, struct json_doc **out, char *err,
                    size_t errlen) {
    if (out) *out = NULL;
    char  *buf;
    size_t n;
    if (rt_read_file(path, RT_MAX_JSON_BYTES, &buf, &n, err, errlen) != 0) return -1;
    char msg[512];
    int  rc = json_parse(buf, n, opt, out, msg, sizeof msg);
    free(buf);
    if (rc != 0 && err && errlen) snprintf(err, errlen, "%s: %s", path, msg);
    return rc;
}

const struct json_value *json_root(const struct json_doc *doc) { return doc ? &doc->root : NULL; }

void json_position(const void *buf, size_t len, size_t offset, int64_t *line, int64_t *column) {
    int64_t l = 1, c = 1;
    if (buf) {
        if (offset > len) offset = len;
        pos_of(buf, offset, &l, &c);
    }
    if (line) *line = l;
    if (column) *column = c;
}

const char *json_type_name(enum json_type t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_FALSE: return "false";
    case JSON_TRUE: return "true";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "?";
}

const struct json_value *json_get_n(const struct json_value *v, const char *key, size_t key_len) {
    if (!v || v->type != JSON_OBJECT || !key) return NULL;
    struct json_member probe;
    probe.key     = key;
    probe.key_len = key_len;
    size_t lo = 0, hi = v->u.obj.n;
    while (lo < hi) {
        size_t                    mid = lo + (hi - lo) / 2;
        const struct json_member *m   = &v->u.obj.members[v->u.obj.sorted[mid]];
        int                       c   = key_cmp(m, &probe);
        if (c == 0) return &m->value;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const struct json_value *json_get(const struct json_value *v, const char *key) {
    return key ? json_get_n(v, key, strlen(key)) : NULL;
}

size_t json_len(const struct json_value *v) {
    if (!v) return 0;
    if (v->type == JSON_ARRAY) return v->u.arr.n;
    if (v->type == JSON_OBJECT) return v->u.obj.n;
    return 0;
}

const struct json_value *json_at(const struct json_value *v, size_t i) {
    if (!v || v->type != JSON_ARRAY || i >= v->u.arr.n) return NULL;
    return &v->u.arr.items[i];
}

const struct json_member *json_member_at(const struct json_value *v, size_t i) {
    if (!v || v->type != JSON_OBJECT || i >= v->u.obj.n) return NULL;
    return &v->u.obj.members[i];
}

int json_is_null(const struct json_value *v) { return v && v->type == JSON_NULL; }

const char *json_string(const struct json_value *v, size_t *len) {
    if (!v || v->type != JSON_STRING) return NULL;
    if (len) *len = v->u.str.len;
    return v->u.str.s;
}

int json_bool(const struct json_value *v, int *out) {
    if (!v || (v->type != JSON_TRUE && v->type != JSON_FALSE)) return -1;
    if (out) *out = v->type == JSON_TRUE;
    return 0;
}

int json_int64(const struct json_value *v, int64_t *out) {
    if (!v || v->type != JSON_NUMBER) return -1;
    const char *s   = v->u.num.text;
    int         neg = *s == '-';
    if (neg) s++;
    /* accumulate as a negative number: INT64_MIN has no positive counterpart */
    int64_t acc = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1; /* '.', 'e': not an integer literal */
        int d = *s - '0';
        if (acc < (INT64_MIN + d) / 10) return -1;
        acc = acc * 10 - d;
    }
    if (!neg) {
        if (acc == INT64_MIN) return -1;
        acc = -acc;
    }
    if (out) *out = acc;
    return 0;
}

int json_double(const struct json_value *v, double *out) {
    if (!v || v->type != JSON_NUMBER || isinf(v->u.num.d)) return -1;
    if (out) *out = v->u.num.d;
    return 0;
}

const char *json_number_text(const struct json_value *v, size_t *len) {
    if (!v || v->type != JSON_NUMBER) return NULL;
    if (len) *len = v->u.num.len;
    return v->u.num.text;
}
