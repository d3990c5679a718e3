/* SPDX-License-Identifier: MIT
 *
 * npy.c -- .npy reader and writer (see npy.h). The header is a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * which is parsed strictly enough to refuse anything this tool would misread.
 */
#define _POSIX_C_SOURCE 200809L
#include "npy.h"

#include "../runtime/errmsg.h"
#include "../runtime/readfile.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
    return buf;
}

/* ---- the header: exactly the Python dict literal numpy writes ----
 * {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * Keys in any order, each once; a trailing comma allowed; spaces between tokens; then spaces and
 * one final newline. Strings in single or double quotes without escapes, True/False, a tuple of
 * decimal integers without leading zeros ("(3)" is not a tuple in Python). Anything else is
 * refused with the byte offset of the problem in the file. */

struct hdr_parser {
    const char *s, *p, *end; /* the header text, the cursor */
    size_t      base;        /* file offset of s */
    const char *name;
    char       *err;
    size_t      len;
};

static int hdr_fail(struct hdr_parser *h, const char *what) {
    return rt_fail(h->err, h->len, "%s: malformed .npy header at byte %zu: %s", h->name,
                h->base + (size_t)(h->p - h->s), what);
}

static void hdr_spaces(struct hdr_parser *h) {
    while (h->p < h->end && *h->p == ' ') h->p++;
}

static int hdr_char(struct hdr_parser *h, char c, const char *what) {
    hdr_spaces(h);
    if (h->p == h->end || *h->p != c) return hdr_fail(h, what);
    h->p++;
    return 0;
}

/* A quoted string without escapes, into out (at most cap-1 characters). */
static int hdr_string(struct hdr_parser *h, char *out, size_t cap) {
    hdr_spaces(h);
    if (h->p == h->end || (*h->p != '\'' && *h->p != '"')) return hdr_fail(h, "expected a quoted string");
    char        q     = *h->p++;
    const char *start = h->p;
    while (h->p < h->end && *h->p != q) {
        if (*h->p == '\\' || (unsigned char)*h->p < 0x20 || (unsigned char)*h->p > 0x7e)
            return hdr_fail(h, "escapes and non-ASCII characters are not accepted in a string");
        h->p++;
    }
    if (h->p == h->end) return hdr_fail(h, "unterminated string");
    size_t n = (size_t)(h->p - start);
    h->p++;
    if (n >= cap) {
        h->p = start;
        return hdr_fail(h, "string too long");
    }
    memcpy(out, start, n);
    out[n] = '\0';
    return 0;
}

static int hdr_word(struct hdr_parser *h, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(h->end - h->p) < n || memcmp(h->p, w, n) != 0) return 0;
    const char *after = h->p + n; /* the word must end there: "Falsey" is not False */
    if (after < h->end && (isalnum((unsigned char)*after) || *after == '_')) return 0;
    h->p = after;
    return 1;
}

static int hdr_shape(struct hdr_parser *h, struct npy_array *a) {
    if (hdr_char(h, '(', "expected the shape tuple '('") != 0) return -1;
    a->ndim  = 0;
    a->count = 1;
    int comma = 0; /* a comma followed the last entry: "(3,)" is a tuple, "(3)" is not */
    for (;;) {
        hdr_spaces(h);
        if (h->p < h->end && *h->p == ')') {
            if (a->ndim == 1 && !comma) return hdr_fail(h, "'(N)' is not a tuple, expected '(N,)'");
            h->p++;
            return 0;
        }
        if (a->ndim > 0 && !comma) return hdr_fail(h, "expected ',' or ')' in the shape");
        if (h->p == h->end || !isdigit((unsigned char)*h->p)) return hdr_fail(h, "expected a non-negative integer in the shape");
        if (*h->p == '0' && h->p + 1 < h->end && isdigit((unsigned char)h->p[1]))
            return hdr_fail(h, "an integer with a leading zero is not a Python literal");
        if (a->ndim == NPY_MAX_DIMS) return hdr_fail(h, "more than " NPY_MAX_DIMS_STR " dimensions");
        int64_t v = 0;
        while (h->p < h->end && isdigit((unsigned char)*h->p)) {
            if (v > (NPY_MAX_ELEMENTS - (*h->p - '0')) / 10) return hdr_fail(h, "dimension too large");
            v = v * 10 + (*h->p++ - '0');
        }
        if (v > 0 && a->count > NPY_MAX_ELEMENTS / v) return hdr_fail(h, "shape too large (more than 2^40 elements)");
        a->shape[a->ndim++] = v;
        a->count *= v;
        hdr_spaces(h);
        comma = h->p < h->end && *h->p == ',';
        if (comma) h->p++;
    }
}

static const struct {
    const char    *descr;
    enum ifl_dtype dtype;
    int            int64;
    size_t         esize;
} npy_types[] = {{"<f2", IFL_DTYPE_F16, 0, 2}, {"<f4", IFL_DTYPE_F32, 0, 4}, {"<f8", IFL_DTYPE_F64, 0, 8},
                 {"<i4", IFL_DTYPE_I32, 0, 4}, {"<i8", IFL_DTYPE_I32, 1, 8}};

static int parse_header(const char *name, const char *hdr, size_t hlen, size_t base, int accept_i8,
                        struct npy_array *a, char *err, size_t len) {
    struct hdr_parser h = {hdr, hdr, hdr + hlen, base, name, err, len};
    int seen_descr = 0, seen_order = 0, seen_shape = 0;
    if (hdr_char(&h, '{', "expected '{'") != 0) return -1;
    for (;;) {
        hdr_spaces(&h);
        if (h.p < h.end && *h.p == '}') {
            h.p++;
            break;
        }
        const char *key_at = h.p;
        char        key[32], val[32];
        if (hdr_string(&h, key, sizeof key) != 0 || hdr_char(&h, ':', "expected ':' after a key") != 0) return -1;
        int *seen = strcmp(key, "descr") == 0 ? &seen_descr : strcmp(key, "fortran_order") == 0 ? &seen_order
                  : strcmp(key, "shape") == 0 ? &seen_shape : NULL;
        if (seen == NULL || *seen) {
            h.p = key_at;
            return hdr_fail(&h, seen ? "a key given twice" : "unknown key (expected 'descr', 'fortran_order', 'shape')");
        }
        *seen = 1;
        hdr_spaces(&h);
        const char *val_at = h.p;
        if (seen == &seen_descr) {
            if (h.p < h.end && (*h.p == '[' || *h.p == '{')) return hdr_fail(&h, "structured dtypes are not supported");
            if (hdr_string(&h, val, sizeof val) != 0) return -1;
            size_t k = 0, nk = sizeof npy_types / sizeof npy_types[0] - (accept_i8 ? 0 : 1);
            while (k < nk && strcmp(val, npy_types[k].descr) != 0) k++;
            if (k == nk) {
                h.p = val_at;
                char msg[160];
                snprintf(msg, sizeof msg, "dtype '%s' is not supported, expected little-endian %s", val,
                         accept_i8 ? "int32 or int64 ('<i4', '<i8')"
                                   : "float16, float32, float64 or int32 ('<f2', '<f4', '<f8', '<i4')");
                return hdr_fail(&h, msg);
            }
            a->dtype = npy_types[k].dtype;
            a->int64 = npy_types[k].int64;
            a->esize = npy_types[k].esize;
        } else if (seen == &seen_order) {
            if (hdr_word(&h, "True")) {
                h.p = val_at;
                return hdr_fail(&h, "Fortran-order arrays are not supported, expected C order (False)");
            }
            if (!hdr_word(&h, "False")) return hdr_fail(&h, "expected True or False");
        } else if (hdr_shape(&h, a) != 0) {
            return -1;
        }
        hdr_spaces(&h);
        if (h.p < h.end && *h.p == ',') h.p++;
        else if (h.p == h.end || *h.p != '}') return hdr_fail(&h, "expected ',' or '}'");
    }
    if (!seen_descr || !seen_order || !seen_shape)
        return hdr_fail(&h, "the dict needs the keys 'descr', 'fortran_order' and 'shape'");
    hdr_spaces(&h);
    if (h.p + 1 != h.end || *h.p != '\n') return hdr_fail(&h, "expected spaces and one newline after '}'");
    return 0;
}

/* The header in the first avail bytes of buf, for a file of size bytes. */
static int parse_prefix(const void *buf, size_t avail, size_t size, const char *name, int accept_i8,
                        struct npy_array *a, char *err, size_t len) {
    memset(a, 0, sizeof *a);
    const unsigned char *b = buf;
    if (avail < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return rt_fail(err, len, "%s: not a .npy file (missing the \\x93NUMPY magic)", name);
    size_t hlen, hstart;
    if (b[6] == 1 && b[7] == 0) {
        hlen   = (size_t)b[8] | (size_t)b[9] << 8;
        hstart = 10;
    } else if ((b[6] == 2 || b[6] == 3) && b[7] == 0) {
        if (avail < 12) return rt_fail(err, len, "%s: truncated .npy header", name);
        hlen   = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        hstart = 12;
    } else {
        return rt_fail(err, len, "%s: .npy format version %d.%d is not supported (expected 1.0, 2.0 or 3.0)", name, b[6], b[7]);
    }
    if (hlen > avail - hstart)
        return rt_fail(err, len, "%s: truncated .npy header (header length %zu, file %zu bytes)", name, hlen, size);
    if (parse_header(name, (const char *)b + hstart, hlen, hstart, accept_i8, a, err, len) != 0) return -1;
    size_t need = (size_t)a->count * a->esize, have = size - hstart - hlen;
    if (have != need) {
        char s[128];
        return rt_fail(err, len, "%s: %s: header says shape %s %s = %zu data bytes, file holds %zu", name,
                    have < need ? "truncated" : "trailing bytes", npy_shape_str(a->ndim, a->shape, s, sizeof s),
                    a->int64 ? "int64" : ifl_dtype_name(a->dtype), need, have);
    }
    a->offset = hstart + hlen;
    return 0;
}

int npy_parse(const void *buf, size_t size, const char *name, int accept_i8, struct npy_array *a, char *err,
              size_t len) {
    return parse_prefix(buf, size, size, name, accept_i8, a, err, len);
}

/* Reads n bytes at offset off; -1 on an error or a file shorter than that. */
static int pread_all(int fd, void *buf, size_t n, off_t off) {
    char *p = buf;
    while (n > 0) {
        ssize_t k = pread(fd, p, n, off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k, off += k, n -= (size_t)k;
    }
    return 0;
}

/* Opens path and parses its header into *a (no data read). Returns the descriptor or -1. */
static int open_header(const char *path, struct npy_array *a, char *err, size_t len) {
    memset(a, 0, sizeof *a);
    int64_t size;
    int     fd = rt_open_regular(path, &size, err, len);
    if (fd < 0) return -1;
    /* the fixed part, then the header it announces */
    unsigned char pre[12] = {0};
    size_t        got     = size < 12 ? (size_t)size : 12;
    if (pread_all(fd, pre, got, 0) != 0) {
        rt_fail(err, len, "%s: read error: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t hlen = 0, hstart = 10;
    if (got >= 10 && memcmp(pre, "\x93NUMPY", 6) == 0) {
        hstart = pre[6] >= 2 ? 12 : 10;
        hlen   = pre[6] >= 2 ? ((size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24)
                             : ((size_t)pre[8] | (size_t)pre[9] << 8);
    }
    size_t prefix = hstart + hlen; /* parse the prefix alone: the data is read straight into place */
    if ((int64_t)prefix > size) prefix = (size_t)size;
    char *head = malloc(prefix + 1);
    int   rc   = -1;
    if (head == NULL) rt_fail(err, len, "%s: out of memory", path);
    else if (pread_all(fd, head, prefix, 0) != 0) rt_fail(err, len, "%s: read error: %s", path, strerror(errno));
    else rc = parse_prefix(head, prefix, (size_t)size, path, 0, a, err, len);
    free(head);
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int npy_read_header(const char *path, struct npy_array *a, char *err, size_t len) {
    int fd = open_header(path, a, err, len);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

int npy_read(const char *path, struct npy_array *a, char *err, size_t len) {
    int fd = open_header(path, a, err, len);
    if (fd < 0) return -1;
    size_t need = (size_t)a->count * a->esize;
    a->data     = malloc(need > 0 ? need : 1);
    int rc      = -1;
    if (a->data == NULL) rt_fail(err, len, "%s: out of memory for %zu bytes", path, need);
    else if (pread_all(fd, a->data, need, (off_t)a->offset) != 0)
        rt_fail(err, len, "%s: read error (did the file change while being read?)", path);
    else rc = 0;
    close(fd);
    if (rc != 0) npy_free(a);
    return rc;
}

void npy_free(struct npy_array *a) {
    free(a->data);
    a->data = NULL;
}

int npy_write(struct out_set *set, int idx, enum ifl_dtype dtype, int ndim, const int64_t *shape,
              const void *data, char *err, size_t len) {
    const char *descr = dtype == IFL_DTYPE_F32 ? "<f4" : dtype == IFL_DTYPE_I32 ? "<i4"
                      : dtype == IFL_DTYPE_F64 ? "<f8" : NULL;
    if (descr == NULL) return rt_fail(err, len, "cannot write dtype %s", ifl_dtype_name(dtype));
    char shp[160] = "";
    int  n        = 0;
    for (int i = 0; i < ndim; i++) n += snprintf(shp + n, sizeof shp - (size_t)n, "%lld,%s", (long long)shape[i], i + 1 < ndim ? " " : "");
    if (ndim > 1) shp[n - 1] = '\0'; /* "(3, 4)" but "(3,)" for one dimension */
    /* magic, version 1.0, header length, then the dict padded with spaces so that the data
     * starts at a multiple of 64 bytes, ending with a newline */
    unsigned char head[512] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    int dl    = snprintf((char *)head + 10, sizeof head - 10, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shp);
    int total = 10 + dl + 1;
    int pad   = (64 - total % 64) % 64;
    memset(head + 10 + dl, ' ', (size_t)pad);
    head[10 + dl + pad] = '\n';
    int hlen            = dl + pad + 1;
    head[8]             = (unsigned char)(hlen & 0xff);
    head[9]             = (unsigned char)(hlen >> 8);
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) count *= shape[i];
    if (out_set_write(set, idx, head, (size_t)(10 + hlen), err, len) != 0) return -1;
    return out_set_write(set, idx, data, (size_t)count * ifl_dtype_size(dtype), err, len);
}
