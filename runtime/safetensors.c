/* SPDX-License-Identifier: MIT
 *
 * safetensors.c -- the validating reader of safetensors.h (st_parse on a byte buffer, st_open on
 * a memory-mapped file). Every check happens before any tensor byte is used; a message names the
 * file and the tensor or key, plus the offending value.
 */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "errmsg.h"

#include "json.h"
#include "readfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- dtypes: the names the format uses, and their sizes ---- */

static const char *const dtype_names[ST_N_DTYPES] = {
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
    "I32", "U32", "F32", "F64", "I64", "U64"};
static const size_t dtype_sizes[ST_N_DTYPES] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};

size_t st_dtype_size(enum st_dtype dt) {
    return (unsigned)dt < ST_N_DTYPES ? dtype_sizes[dt] : 0;
}

const char *st_dtype_name(enum st_dtype dt) {
    return (unsigned)dt < ST_N_DTYPES ? dtype_names[dt] : "?";
}

int st_dtype_parse(const char *s, enum st_dtype *out) {
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(s, dtype_names[i]) == 0) {
            *out = (enum st_dtype)i;
            return 0;
        }
    return -1;
}

/* ---- the reader ---- */

int64_t st_numel(const struct st_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

struct span {
    uint64_t begin, end;
    int64_t  idx;
};

static int cmp_begin(const void *a, const void *b) {
    const struct span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* One tensor entry: exactly dtype, shape, data_offsets. */
static int parse_entry(const char *fname, const struct json_member *m, struct st_tensor *t,
                       char *err, size_t errlen) {
    const struct json_value *v = &m->value;
    if (v->type != JSON_OBJECT)
        return rt_fail(err, errlen, "%s: tensor '%s': expected an object, found %s", fname, m->key,
                    json_type_name(v->type));
    for (size_t i = 0; i < json_len(v); i++) {
        const char *k = json_member_at(v, i)->key;
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return rt_fail(err, errlen, "%s: tensor '%s': unknown key '%s' (expected dtype, shape, data_offsets)",
                        fname, m->key, k);
    }
    const char *ds = json_string(json_get(v, "dtype"), NULL);
    if (!ds) return rt_fail(err, errlen, "%s: tensor '%s': missing or non-string 'dtype'", fname, m->key);
    if (st_dtype_parse(ds, &t->dtype) != 0)
        return rt_fail(err, errlen, "%s: tensor '%s': unknown dtype '%s'", fname, m->key, ds);
    const struct json_value *sh = json_get(v, "shape");
    if (!sh || sh->type != JSON_ARRAY)
        return rt_fail(err, errlen, "%s: tensor '%s': missing 'shape' array", fname, m->key);
    if (json_len(sh) > ST_MAX_DIMS)
        return rt_fail(err, errlen, "%s: tensor '%s': %zu dimensions, at most %d supported", fname,
                    m->key, json_len(sh), ST_MAX_DIMS);
    t->ndim       = (int)json_len(sh);
    uint64_t bytes = st_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) {
        int64_t x;
        if (json_int64(json_at(sh, (size_t)d), &x) != 0 || x < 0)
            return rt_fail(err, errlen, "%s: tensor '%s': shape[%d] is not a non-negative integer", fname,
                        m->key, d);
        t->shape[d] = x;
        if (x != 0 && bytes > UINT64_MAX / (uint64_t)x)
            return rt_fail(err, errlen, "%s: tensor '%s': shape too large (overflow)", fname, m->key);
        bytes *= (uint64_t)x;
    }
    const struct json_value *of = json_get(v, "data_offsets");
    int64_t                  b, e;
    if (!of || of->type != JSON_ARRAY || json_len(of) != 2 || json_int64(json_at(of, 0), &b) != 0 ||
        json_int64(json_at(of, 1), &e) != 0 || b < 0 || e < 0)
        return rt_fail(err, errlen, "%s: tensor '%s': 'data_offsets' must be [begin, end] of non-negative integers",
                    fname, m->key);
    if (e < b)
        return rt_fail(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld] end before begin", fname,
                    m->key, (long long)b, (long long)e);
    if ((uint64_t)(e - b) != bytes)
        return rt_fail(err, errlen,
                    "%s: tensor '%s': data_offsets [%lld, %lld] hold %lld bytes, but %s x shape needs %llu",
                    fname, m->key, (long long)b, (long long)e, (long long)(e - b), ds,
                    (unsigned long long)bytes);
    t->begin = (uint64_t)b, t->end = (uint64_t)e;
    return 0;
}

static int check_metadata(const char *fname, const struct json_value *v, char *err, size_t errlen) {
    if (v->type != JSON_OBJECT)
        return rt_fail(err, errlen, "%s: '__metadata__' must be an object of strings", fname);
    for (size_t i = 0; i < json_len(v); i++) {
        const struct json_member *m = json_member_at(v, i);
        if (m->value.type != JSON_STRING)
            return rt_fail(err, errlen, "%s: '__metadata__' key '%s': expected a string, found %s", fname,
                        m->key, json_type_name(m->value.type));
    }
    return 0;
}

int st_parse(const void *buf, size_t len, const char *name, struct st_file *out, char *err,
             size_t errlen) {
    const uint8_t *p     = buf;
    const char    *fname = name ? name : "<buffer>";
    struct json_doc *doc = NULL;
    struct span     *order = NULL;
    memset(out, 0, sizeof *out);
    if (len < 8) return rt_fail(err, errlen, "%s: %zu bytes, too short for the 8-byte header length", fname, len);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)p[i] << (8 * i);
    if (n > ST_MAX_HEADER_LEN)
        return rt_fail(err, errlen, "%s: header length %llu exceeds the limit of %llu bytes", fname,
                    (unsigned long long)n, (unsigned long long)ST_MAX_HEADER_LEN);
    if (n > len - 8)
        return rt_fail(err, errlen, "%s: header length %llu runs past the end of the file (%zu bytes)",
                    fname, (unsigned long long)n, len);
    if (n < 2 || p[8] != '{')
        return rt_fail(err, errlen, "%s: the header must be a JSON object starting with '{'", fname);
    char jerr[256];
    if (json_parse(p + 8, (size_t)n, NULL, &doc, jerr, sizeof jerr) != 0)
        return rt_fail(err, errlen, "%s: header: %s", fname, jerr);
    const struct json_value *root = json_root(doc);
    if (root->type != JSON_OBJECT) {
        json_free(doc);
        return rt_fail(err, errlen, "%s: the header must be a JSON object", fname);
    }
    size_t nm = json_len(root);
    out->tensors = calloc(nm ? nm : 1, sizeof *out->tensors);
    order        = malloc((nm ? nm : 1) * sizeof *order);
    if (!out->tensors || !order) {
        rt_fail(err, errlen, "%s: out of memory for %zu tensors", fname, nm);
        goto bad;
    }
    for (size_t i = 0; i < nm; i++) {
        const struct json_member *m = json_member_at(root, i);
        if (strcmp(m->key, "__metadata__") == 0) {
            if (check_metadata(fname, &m->value, err, errlen) != 0) goto bad;
            continue;
        }
        if (m->key_len != strlen(m->key)) {
            rt_fail(err, errlen, "%s: a tensor name contains a NUL byte", fname);
            goto bad;
        }
        struct st_tensor *t = &out->tensors[out->n_tensors];
        if (parse_entry(fname, m, t, err, errlen) != 0) goto bad;
        t->name = malloc(m->key_len + 1);
        if (!t->name) {
            rt_fail(err, errlen, "%s: out of memory", fname);
            goto bad;
        }
        memcpy(t->name, m->key, m->key_len + 1);
        out->n_tensors++;
    }
    /* coverage: sorted by begin, each tensor starts where the previous ended (zero-size tensors
     * may sit anywhere inside or at the end of the buffer) */
    uint64_t data_len = (uint64_t)len - 8 - n;
    for (int64_t i = 0; i < out->n_tensors; i++)
        order[i] = (struct span){out->tensors[i].begin, out->tensors[i].end, i};
    qsort(order, (size_t)out->n_tensors, sizeof *order, cmp_begin);
    uint64_t pos = 0;
    for (int64_t i = 0; i < out->n_tensors; i++) {
        const struct st_tensor *t = &out->tensors[order[i].idx];
        if (t->begin == t->end) {
            if (t->begin > data_len) {
                rt_fail(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] past the data buffer (%llu bytes)",
                     fname, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                     (unsigned long long)data_len);
                goto bad;
            }
            continue;
        }
        if (t->begin < pos) {
            rt_fail(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] overlap the previous tensor (ending at %llu)",
                 fname, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                 (unsigned long long)pos);
            goto bad;
        }
        if (t->begin > pos) {
            rt_fail(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] leave a hole of %llu bytes before it",
                 fname, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                 (unsigned long long)(t->begin - pos));
            goto bad;
        }
        if (t->end > data_len) {
            rt_fail(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] run past the data buffer (%llu bytes)",
                 fname, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                 (unsigned long long)data_len);
            goto bad;
        }
        pos = t->end;
    }
    if (pos != data_len) {
        rt_fail(err, errlen, "%s: the tensors cover %llu bytes of the data buffer, which has %llu", fname,
             (unsigned long long)pos, (unsigned long long)data_len);
        goto bad;
    }
    for (int64_t i = 0; i < out->n_tensors; i++)
        out->tensors[i].data = p + 8 + n + out->tensors[i].begin;
    qsort(out->tensors, (size_t)out->n_tensors, sizeof *out->tensors, cmp_name);
    out->header_len = n;
    out->base       = p;
    out->size       = len;
    size_t fl       = strlen(fname);
    out->path       = malloc(fl + 1);
    if (!out->path) {
        rt_fail(err, errlen, "%s: out of memory", fname);
        goto bad;
    }
    memcpy(out->path, fname, fl + 1);
    free(order);
    json_free(doc);
    return 0;
bad:
    free(order);
    json_free(doc);
    st_close(out);
    return -1;
}

int st_open(const char *path, struct st_file *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    int64_t size;
    int     fd = rt_open_regular(path, &size, err, errlen);
    if (fd < 0) return -1;
    size_t len = (size_t)size;
    if (len == 0) {
        close(fd);
        return rt_fail(err, errlen, "%s: empty file", path);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return rt_fail(err, errlen, "%s: cannot map: %s", path, strerror(errno));
    if (st_parse(map, len, path, out, err, errlen) != 0) {
        munmap(map, len);
        return -1;
    }
    out->map = map;
    return 0;
}

void st_close(struct st_file *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    if (f->map) munmap(f->map, f->size);
    memset(f, 0, sizeof *f);
}

const struct st_tensor *st_find(const struct st_file *f, const char *name) {
    int64_t lo = 0, hi = f->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int     c   = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}
