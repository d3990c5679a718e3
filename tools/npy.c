/* SPDX-License-Identifier: MIT
 *
 * npy.c -- .npy reader and writer (see npy.h). The header is a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * which is parsed strictly enough to refuse anything this tool would misread.
 */
#include "npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return -1;
}

const char *npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
    return buf;
}

/* Finds the value after 'key': in the header dict; NULL if absent. */
static const char *dict_value(const char *hdr, const char *key) {
    char quoted[32];
    snprintf(quoted, sizeof quoted, "'%s'", key);
    const char *p = strstr(hdr, quoted);
    if (p == NULL) return NULL;
    p += strlen(quoted);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

static int parse_header(const char *path, const char *hdr, struct npy_array *a, char *err,
                        size_t len) {
    const char *descr = dict_value(hdr, "descr");
    const char *order = dict_value(hdr, "fortran_order");
    const char *shape = dict_value(hdr, "shape");
    if (!descr || !order || !shape)
        return fail(err, len, "%s: malformed .npy header (needs 'descr', 'fortran_order' and 'shape')", path);
    static const struct {
        const char    *descr;
        enum ifl_dtype dtype;
    } known[] = {{"'<f2'", IFL_DTYPE_F16}, {"'<f4'", IFL_DTYPE_F32}, {"'<f8'", IFL_DTYPE_F64}, {"'<i4'", IFL_DTYPE_I32}};
    size_t k = 0;
    while (k < sizeof known / sizeof known[0] && strncmp(descr, known[k].descr, 5) != 0) k++;
    if (k == sizeof known / sizeof known[0]) {
        char d[16] = {0};
        for (int i = 0; i < 15 && descr[i] && descr[i] != ','; i++) d[i] = descr[i];
        return fail(err, len, "%s: dtype %s is not supported, expected little-endian float16, float32, float64 or int32 ('<f2', '<f4', '<f8', '<i4')",
                    path, d);
    }
    a->dtype = known[k].dtype;
    if (strncmp(order, "False", 5) != 0)
        return fail(err, len, "%s: Fortran-order arrays are not supported, expected C order", path);
    if (*shape != '(') return fail(err, len, "%s: malformed .npy header: shape is not a tuple", path);
    const char *p = shape + 1;
    a->ndim       = 0;
    a->count      = 1;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == ')') break;
        if (*p < '0' || *p > '9') return fail(err, len, "%s: malformed .npy header: bad shape entry", path);
        char     *end;
        long long v = strtoll(p, &end, 10);
        if (a->ndim == NPY_MAX_DIMS) return fail(err, len, "%s: more than %d dimensions", path, NPY_MAX_DIMS);
        if (v < 0 || v > ((int64_t)1 << 40) || (v > 0 && a->count > ((int64_t)1 << 40) / v))
            return fail(err, len, "%s: shape too large", path);
        a->shape[a->ndim++] = v;
        a->count *= v;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') p++;
        else if (*p != ')') return fail(err, len, "%s: malformed .npy header: bad shape tuple", path);
    }
    return 0;
}

int npy_read(const char *path, struct npy_array *a, char *err, size_t len) {
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return fail(err, len, "%s: cannot open: %s", path, strerror(errno));
    unsigned char pre[12];
    char         *hdr = NULL;
    int           rc  = -1;
    size_t        got = fread(pre, 1, 10, f);
    if (got < 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        fail(err, len, "%s: not a .npy file (missing the \\x93NUMPY magic)", path);
        goto out;
    }
    uint32_t hlen;
    long     hstart;
    if (pre[6] == 1) {
        hlen   = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
        hstart = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            fail(err, len, "%s: truncated .npy header", path);
            goto out;
        }
        hlen   = (uint32_t)pre[8] | (uint32_t)pre[9] << 8 | (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
        hstart = 12;
    } else {
        fail(err, len, "%s: .npy format version %d.%d is not supported (expected 1.0, 2.0 or 3.0)", path, pre[6], pre[7]);
        goto out;
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        fail(err, len, "%s: cannot seek: %s", path, strerror(errno));
        goto out;
    }
    long fsize = ftell(f);
    if (fsize < 0 || (long)hlen > fsize - hstart) {
        fail(err, len, "%s: truncated .npy header (header length %u, file %ld bytes)", path, hlen, fsize);
        goto out;
    }
    hdr = malloc((size_t)hlen + 1);
    if (hdr == NULL || fseek(f, hstart, SEEK_SET) != 0 || fread(hdr, 1, hlen, f) != hlen) {
        fail(err, len, "%s: cannot read the .npy header", path);
        goto out;
    }
    hdr[hlen] = '\0';
    if (memchr(hdr, '\0', hlen) != NULL) {
        fail(err, len, "%s: malformed .npy header (NUL byte)", path);
        goto out;
    }
    if (parse_header(path, hdr, a, err, len) != 0) goto out;
    size_t  esize = ifl_dtype_size(a->dtype);
    int64_t need  = a->count * (int64_t)esize;
    int64_t have  = fsize - hstart - (long)hlen;
    if (have != need) {
        char s[128];
        fail(err, len, "%s: %s: header says shape %s %s = %lld data bytes, file holds %lld", path,
             have < need ? "truncated" : "trailing bytes", npy_shape_str(a->ndim, a->shape, s, sizeof s),
             ifl_dtype_name(a->dtype), (long long)need, (long long)have);
        goto out;
    }
    a->data = malloc(need > 0 ? (size_t)need : 1);
    if (a->data == NULL) {
        fail(err, len, "%s: out of memory for %lld bytes", path, (long long)need);
        goto out;
    }
    if (need > 0 && fread(a->data, 1, (size_t)need, f) != (size_t)need) {
        fail(err, len, "%s: read error", path);
        goto out;
    }
    rc = 0;
out:
    free(hdr);
    fclose(f);
    if (rc != 0) npy_free(a);
    return rc;
}

void npy_free(struct npy_array *a) {
    free(a->data);
    a->data = NULL;
}

int npy_write(const char *path, enum ifl_dtype dtype, int ndim, const int64_t *shape,
              const void *data, char *err, size_t len) {
    const char *descr = dtype == IFL_DTYPE_F32 ? "<f4" : dtype == IFL_DTYPE_I32 ? "<i4"
                      : dtype == IFL_DTYPE_F64 ? "<f8" : NULL;
    if (descr == NULL) return fail(err, len, "%s: cannot write dtype %s", path, ifl_dtype_name(dtype));
    char dict[256], shp[160];
    int  n = 0;
    for (int i = 0; i < ndim; i++) n += snprintf(shp + n, sizeof shp - (size_t)n, "%lld,%s", (long long)shape[i], i + 1 < ndim ? " " : "");
    if (ndim > 1) shp[n - 1] = '\0'; /* "(3, 4)" but "(3,)" for one dimension */
    if (ndim == 0) shp[0] = '\0';
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shp);
    /* pad with spaces so the data starts at a multiple of 64 bytes, then end with a newline */
    int total = 10 + dl + 1;
    int pad   = (64 - total % 64) % 64;
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) count *= shape[i];
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return fail(err, len, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) return fail(err, len, "%s: cannot create: %s", tmp, strerror(errno));
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    int           hlen    = dl + pad + 1;
    pre[8]                = (unsigned char)(hlen & 0xff);
    pre[9]                = (unsigned char)(hlen >> 8);
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)dl, f) == (size_t)dl;
    for (int i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = ok && fwrite(data, ifl_dtype_size(dtype), (size_t)count, f) == (size_t)count;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return fail(err, len, "%s: write failed: %s", path, strerror(e));
    }
    return 0;
}
