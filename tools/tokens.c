/* SPDX-License-Identifier: MIT
 *
 * tokens.c -- the token-id files of `infllm logits` (see tokens.h).
 */
#include "tokens.h"

#include "npy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tokens_parse(const char *buf, size_t size, const char *path, int32_t **out, int64_t *n, char *err,
                 size_t errlen) {
    *out = NULL;
    *n   = 0;
    int32_t *tok = NULL;
    int64_t  cnt = 0;
    if (size >= 6 && memcmp(buf, "\x93NUMPY", 6) == 0) {
        struct npy_array a;
        if (npy_parse(buf, size, path, 1, &a, err, errlen) != 0) goto fail;
        if (a.ndim != 1 || a.count < 1 || (a.dtype != IFL_DTYPE_I32 && !a.int64)) {
            snprintf(err, errlen, "%s: expected a non-empty 1-D int32 or int64 .npy vector", path);
            goto fail;
        }
        tok = malloc(sizeof *tok * (size_t)a.count);
        if (!tok) goto oom;
        const unsigned char *d = (const unsigned char *)buf + a.offset;
        for (int64_t i = 0; i < a.count; i++) {
            int64_t v = 0;
            for (size_t b = 0; b < a.esize; b++) v |= (int64_t)((uint64_t)d[(size_t)i * a.esize + b] << (8 * b));
            if (a.esize == 4) v = (int32_t)(uint32_t)v;
            if (v < 0 || v > INT32_MAX) {
                snprintf(err, errlen, "%s: token %lld has the id %lld", path, (long long)i, (long long)v);
                goto fail;
            }
            tok[i] = (int32_t)v;
        }
        cnt = a.count;
    } else {
        int64_t cap = 0;
        size_t  i   = 0;
        for (;;) {
            while (i < size && isspace((unsigned char)buf[i])) i++;
            if (i == size) break;
            size_t start = i;
            int64_t v    = 0;
            while (i < size && isdigit((unsigned char)buf[i]) && v <= INT32_MAX) v = v * 10 + (buf[i++] - '0');
            if (i == start || v > INT32_MAX || (i < size && !isspace((unsigned char)buf[i]))) {
                size_t bad = i == start || v > INT32_MAX ? start : i;
                snprintf(err, errlen, "%s: token %lld at byte %zu: %s", path, (long long)cnt, bad,
                         v > INT32_MAX ? "larger than 2^31-1" : buf[bad] == '\0' ? "a NUL byte, expected an integer"
                                                                               : "expected a non-negative integer");
                goto fail;
            }
            if (cnt == cap) {
                cap         = cap ? 2 * cap : 256;
                int32_t *nt = realloc(tok, sizeof *tok * (size_t)cap);
                if (!nt) goto oom;
                tok = nt;
            }
            tok[cnt++] = (int32_t)v;
        }
        if (cnt == 0) {
            snprintf(err, errlen, "%s: no token ids", path);
            goto fail;
        }
    }
    *out = tok, *n = cnt;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
fail:
    free(tok);
    return -1;
}
