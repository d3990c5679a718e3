/* SPDX-License-Identifier: MIT
 *
 * tokenizer_decode.c -- ids back to text, as the library's decoder chain of the Llama family does
 * it (minicpm4.md §6.3): each token's piece goes through the Replace steps ("▁" -> " "), runs of
 * byte pieces <0xHH> become their bytes when the run is valid UTF-8 and U+FFFD per byte when it
 * is not (ByteFallback), everything is joined (Fuse) and Strip removes up to N leading spaces of
 * the whole text. The stream variant emits text as soon as it is complete; see tokenizer.h for
 * where it can differ from the whole-sequence decode (only on invalid byte runs).
 */
#include "tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct buf {
    char  *p;
    size_t n, cap;
    int    oom;
};

static void put(struct buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p   = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n); /* s may be NULL when n is 0 (an empty buffer) */
    b->n += n;
    b->p[b->n] = 0;
}

static const char fffd[] = "\xEF\xBF\xBD";

/* The piece of id as the decoder sees it, or NULL when the id is skipped. */
static const char *id_piece(const struct tok *t, int32_t id, int skip_special, size_t *len) {
    if (id < 0 || id >= t->n_ids || t->piece[id].off == TOK_NONE) id = t->unk; /* as the JS port */
    if (id < 0) return NULL;
    if (skip_special && t->is_special[id]) return NULL;
    *len = t->piece[id].len;
    return t->pool + t->piece[id].off;
}

/* Applies the Replace steps to s[0..n) into tmp (cleared first). */
static void replace_all(const struct tok *t, const char *s, size_t n, struct buf *tmp, struct buf *tmp2) {
    tmp->n = 0;
    put(tmp, s, n);
    for (int k = 0; k < t->n_dec_replace && !tmp->oom; k++) {
        const char *a = t->pool + t->dec_from[k].off, *c = t->pool + t->dec_to[k].off;
        size_t      la = t->dec_from[k].len, lc = t->dec_to[k].len;
        tmp2->n = 0;
        size_t i = 0, run = 0;
        while (i < tmp->n) {
            if (i + la <= tmp->n && memcmp(tmp->p + i, a, la) == 0) {
                put(tmp2, tmp->p + run, i - run);
                put(tmp2, c, lc);
                i += la;
                run = i;
            } else
                i++;
        }
        put(tmp2, tmp->p + run, tmp->n - run);
        struct buf x = *tmp;
        *tmp         = *tmp2;
        *tmp2        = x;
        tmp->oom |= tmp2->oom;
    }
}

static int run_valid(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        int k = tok_utf8_len(p + i, n - i);
        if (k == 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

static void flush_run(struct buf *out, struct buf *run) {
    if (run_valid((const unsigned char *)run->p, run->n)) put(out, run->p, run->n);
    else
        for (size_t i = 0; i < run->n; i++) put(out, fffd, 3);
    run->n = 0;
}

int tok_decode(const struct tok *t, const int32_t *ids, size_t n_ids, int skip_special, char **text, size_t *len,
               char *err, size_t errlen) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!t || !text || (!ids && n_ids)) {
        if (err && errlen) snprintf(err, errlen, "tok_decode: NULL argument");
        return -1;
    }
    struct buf out = {0}, run = {0}, tmp = {0}, tmp2 = {0};
    put(&out, "", 0);
    for (size_t i = 0; i < n_ids; i++) {
        size_t      pl;
        const char *p = id_piece(t, ids[i], skip_special, &pl);
        if (!p) continue;
        replace_all(t, p, pl, &tmp, &tmp2);
        int byte = t->dec_byte_fallback && !tmp.oom ? tok_parse_byte_piece(tmp.p, tmp.n) : -1;
        if (byte >= 0) {
            char c = (char)byte;
            put(&run, &c, 1);
        } else {
            flush_run(&out, &run);
            put(&out, tmp.p, tmp.n);
        }
    }
    flush_run(&out, &run);
    int oom = out.oom || run.oom || tmp.oom || tmp2.oom;
    free(run.p);
    free(tmp.p);
    free(tmp2.p);
    if (oom) {
        free(out.p);
        if (err && errlen) snprintf(err, errlen, "tok_decode: out of memory");
        return -1;
    }
    size_t cut = 0;
    while ((int)cut < t->dec_strip && cut < out.n && out.p[cut] == t->dec_strip_char) cut++;
    memmove(out.p, out.p + cut, out.n - cut + 1);
    *text = out.p;
    if (len) *len = out.n - cut;
    return 0;
}

/* ---- streaming ---- */

struct tok_stream {
    const struct tok *t;
    int               skip_special;
    unsigned char     pending[4]; /* the start of an incomplete character from byte pieces */
    size_t            n_pending;
    int               strip_left; /* leading strip characters still to remove */
    struct buf        out, tmp, tmp2;
};

int tok_stream_new(const struct tok *t, int skip_special, struct tok_stream **out, char *err, size_t errlen) {
    if (out) *out = NULL;
    if (!t || !out) {
        if (err && errlen) snprintf(err, errlen, "tok_stream_new: NULL argument");
        return -1;
    }
    struct tok_stream *s = calloc(1, sizeof *s);
    if (!s) {
        if (err && errlen) snprintf(err, errlen, "tok_stream_new: out of memory");
        return -1;
    }
    s->t            = t;
    s->skip_special = skip_special;
    s->strip_left   = t->dec_strip;
    *out            = s;
    return 0;
}

void tok_stream_free(struct tok_stream *s) {
    if (!s) return;
    free(s->out.p);
    free(s->tmp.p);
    free(s->tmp2.p);
    free(s);
}

/* Emits text through the Strip filter. */
static void emit(struct tok_stream *s, const char *p, size_t n) {
    while (s->strip_left > 0 && n > 0) {
        if (*p != s->t->dec_strip_char) {
            s->strip_left = 0;
            break;
        }
        p++;
        n--;
        s->strip_left--;
    }
    if (n) s->strip_left = 0;
    put(&s->out, p, n);
}

/* Whether p[0..n) is a proper prefix of a well-formed UTF-8 sequence (more bytes may finish it). */
static int could_complete(const unsigned char *p, size_t n) {
    int want, got = tok_utf8_prefix(p, n, &want);
    return n >= 1 && (size_t)want > n && (size_t)got == n;
}

static void drain_pending(struct tok_stream *s) {
    while (s->n_pending > 0) {
        int k = tok_utf8_len(s->pending, s->n_pending);
        if (k > 0) {
            emit(s, (const char *)s->pending, (size_t)k);
        } else if (s->n_pending < 4 && could_complete(s->pending, s->n_pending)) {
            return; /* wait for the rest of the character */
        } else {
            emit(s, fffd, 3);
            k = 1;
        }
        memmove(s->pending, s->pending + k, s->n_pending - (size_t)k);
        s->n_pending -= (size_t)k;
    }
}

int tok_stream_put(struct tok_stream *s, int32_t id, const char **text, size_t *len, char *err, size_t errlen) {
    if (!s || !text || !len) {
        if (err && errlen) snprintf(err, errlen, "tok_stream_put: NULL argument");
        return -1;
    }
    const struct tok *t = s->t;
    s->out.n            = 0;
    put(&s->out, "", 0);
    size_t      pl;
    const char *p = id_piece(t, id, s->skip_special, &pl);
    if (p) {
        replace_all(t, p, pl, &s->tmp, &s->tmp2);
        int byte = t->dec_byte_fallback && !s->tmp.oom ? tok_parse_byte_piece(s->tmp.p, s->tmp.n) : -1;
        if (byte >= 0) {
            s->pending[s->n_pending++] = (unsigned char)byte;
            drain_pending(s);
        } else {
            for (size_t i = 0; i < s->n_pending; i++) emit(s, fffd, 3);
            s->n_pending = 0;
            emit(s, s->tmp.p, s->tmp.n);
        }
    }
    if (s->out.oom || s->tmp.oom || s->tmp2.oom) {
        s->out.oom = s->tmp.oom = s->tmp2.oom = 0;
        if (err && errlen) snprintf(err, errlen, "tok_stream_put: out of memory");
        return -1;
    }
    *text = s->out.p;
    *len  = s->out.n;
    return 0;
}

int tok_stream_flush(struct tok_stream *s, const char **text, size_t *len) {
    if (!s || !text || !len) return -1;
    s->out.n = 0;
    put(&s->out, "", 0);
    for (size_t i = 0; i < s->n_pending; i++) emit(s, fffd, 3);
    s->n_pending  = 0;
    s->strip_left = s->t->dec_strip;
    if (s->out.oom) {
        s->out.oom = 0;
        return -1;
    }
    *text = s->out.p;
    *len  = s->out.n;
    return 0;
}
