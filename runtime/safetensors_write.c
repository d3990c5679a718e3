/* SPDX-License-Identifier: MIT
 *
 * safetensors_write.c -- the streaming writer of safetensors.h: the header is computed from the
 * declared tensors (laid out back to back in declaration order, the JSON padded with spaces to a
 * multiple of 8 bytes as the reference writer does), then the data is appended as it comes, so a
 * checkpoint larger than memory can be written one piece at a time.
 */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growing string ---- */

struct sbuf {
    char  *p;
    size_t len, cap;
    int    oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(struct sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_json_string(struct sbuf *b, const char *s) {
    sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char          esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            sb_add(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_add(b, esc, 6);
        } else {
            sb_add(b, (const char *)&c, 1);
        }
    }
    sb_add(b, "\"", 1);
}

int st_writer_open(struct st_writer *w, const char *path, const struct st_writer_tensor *t,
                   int64_t n, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    struct sbuf b = {0};
    char        num[96];
    uint64_t    off = 0;
    sb_str(&b, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int64_t i = 0; i < n; i++) {
        uint64_t bytes = st_dtype_size(t[i].dtype);
        sb_str(&b, ",");
        sb_json_string(&b, t[i].name);
        snprintf(num, sizeof num, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t[i].dtype));
        sb_str(&b, num);
        for (int d = 0; d < t[i].ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
            sb_str(&b, num);
            bytes *= (uint64_t)t[i].shape[d];
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + bytes));
        sb_str(&b, num);
        off += bytes;
    }
    sb_str(&b, "}");
    while (!b.oom && b.len % 8) sb_str(&b, " ");
    if (b.oom) {
        free(b.p);
        snprintf(err, errlen, "%s: out of memory building the header", path);
        return -1;
    }
    size_t plen = strlen(path);
    w->path     = malloc(plen + 1);
    w->tmp_path = malloc(plen + 5);
    if (!w->path || !w->tmp_path) {
        free(b.p), free(w->path), free(w->tmp_path);
        memset(w, 0, sizeof *w);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(w->path, path, plen + 1);
    snprintf(w->tmp_path, plen + 5, "%s.tmp", path);
    w->fp = fopen(w->tmp_path, "wb");
    if (!w->fp) {
        snprintf(err, errlen, "%s: cannot create: %s", w->tmp_path, strerror(errno));
        free(b.p), free(w->path), free(w->tmp_path);
        memset(w, 0, sizeof *w);
        return -1;
    }
    unsigned char hl[8];
    for (int i = 0; i < 8; i++) hl[i] = (unsigned char)((uint64_t)b.len >> (8 * i));
    int ok = fwrite(hl, 1, 8, w->fp) == 8 && fwrite(b.p, 1, b.len, w->fp) == b.len;
    free(b.p);
    w->expected = off;
    if (!ok) {
        snprintf(err, errlen, "%s: write failed: %s", w->tmp_path, strerror(errno));
        st_writer_close(w, 0, NULL, 0);
        return -1;
    }
    return 0;
}

int st_writer_write(struct st_writer *w, const void *data, size_t bytes, char *err, size_t errlen) {
    if (w->written + bytes > w->expected) {
        snprintf(err, errlen, "%s: %llu bytes written, more than the %llu declared", w->path,
                 (unsigned long long)(w->written + bytes), (unsigned long long)w->expected);
        return -1;
    }
    if (bytes && fwrite(data, 1, bytes, w->fp) != bytes) {
        snprintf(err, errlen, "%s: write failed: %s", w->tmp_path, strerror(errno));
        return -1;
    }
    w->written += bytes;
    return 0;
}

int st_writer_close(struct st_writer *w, int ok, char *err, size_t errlen) {
    int rc = 0;
    if (w->fp) {
        if (ok && w->written != w->expected) {
            if (err)
                snprintf(err, errlen, "%s: %llu of %llu data bytes written", w->path,
                         (unsigned long long)w->written, (unsigned long long)w->expected);
            ok = 0, rc = -1;
        }
        if ((ferror(w->fp) | (fclose(w->fp) != 0)) && ok) { /* a failed buffered write, or the last flush */
            if (err) snprintf(err, errlen, "%s: write failed: %s", w->tmp_path, strerror(errno));
            ok = 0, rc = -1;
        }
        if (ok && rename(w->tmp_path, w->path) != 0) {
            if (err) snprintf(err, errlen, "%s: cannot rename: %s", w->tmp_path, strerror(errno));
            ok = 0, rc = -1;
        }
        if (!ok) remove(w->tmp_path);
    }
    free(w->path);
    free(w->tmp_path);
    memset(w, 0, sizeof *w);
    return rc;
}
