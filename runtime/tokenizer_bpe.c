/* SPDX-License-Identifier: MIT
 *
 * tokenizer_bpe.c -- tok_encode, in the order of the tokenizers library (minicpm4.md §6.2):
 *   1. invalid UTF-8 -> U+FFFD per maximal subpart (what a UTF-8 decoder does before HF sees text);
 *   2. split on the added tokens that are not normalized (leftmost, longest), lstrip/rstrip;
 *   3. each remaining section: normalizer (Prepend, Replace), then split on normalized added tokens;
 *   4. pre-tokenizer (none, or Metaspace: spaces -> "▁", the prefix, optional split into words);
 *   5. BPE on each word: one symbol per code point (byte-fallback pieces or unk for code points
 *      outside the vocabulary), then the pair of lowest merge rank is merged, leftmost on ties,
 *      until no pair merges -- with a binary heap of candidate merges, O(n log n) in the word
 *      length (a legacy-normalised section is a single word, so long prompts are long words);
 *   6. the post-processor's prefix/suffix ids (BOS) when add_special.
 * The tokenizer is only read, so encodes may run concurrently; all scratch is per call.
 */
#include "tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ids {
    int32_t *v;
    size_t   n, cap;
};

struct symbol {
    int32_t id;
    int32_t prev, next; /* indices, -1 at the ends */
    size_t  len;        /* bytes; 0 once merged into its left neighbour */
};

struct cand {
    uint32_t rank;
    uint32_t pos; /* the left symbol */
    int32_t  merged;
};

struct work {
    struct ids     out;
    char          *nbuf[2]; /* normalizer ping-pong buffers */
    size_t         ncap[2];
    struct symbol *sym;
    size_t         sym_cap;
    struct cand   *heap;
    size_t         heap_n, heap_cap;
    int            oom;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem) return -1;
        n *= 2;
    }
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p   = q;
    *cap = n;
    return 0;
}

static void push_id(struct work *w, int32_t id) {
    if (grow((void **)&w->out.v, &w->out.cap, w->out.n + 1, sizeof *w->out.v) != 0) {
        w->oom = 1;
        return;
    }
    w->out.v[w->out.n++] = id;
}

/* ---- step 1: UTF-8 repair ---- */

/* Length of the maximal subpart at p (a prefix of a well-formed sequence, or one byte), for an
 * invalid position: Unicode §3.9, Table 3-8's practice. */
static size_t maximal_subpart(const unsigned char *p, size_t n) {
    int want, got = tok_utf8_prefix(p, n, &want);
    return got > 0 ? (size_t)got : 1;
}

/* Returns text itself when valid, else a repaired malloc'ed copy in *owned (NULL on OOM). */
static const char *repair_utf8(const char *text, size_t len, size_t *out_len, char **owned) {
    const unsigned char *p = (const unsigned char *)text;
    size_t               i = 0;
    *owned                 = NULL;
    while (i < len) {
        int k = tok_utf8_len(p + i, len - i);
        if (k == 0) break;
        i += (size_t)k;
    }
    *out_len = len;
    if (i == len) return text;
    /* each invalid byte becomes at most 3 bytes */
    if (len > (SIZE_MAX - 1) / 3) return NULL;
    char *o = malloc(3 * len + 1);
    if (!o) return NULL;
    size_t n = 0;
    memcpy(o, text, i);
    n = i;
    while (i < len) {
        int k = tok_utf8_len(p + i, len - i);
        if (k > 0) {
            memcpy(o + n, p + i, (size_t)k);
            n += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(o + n, "\xEF\xBF\xBD", 3);
            n += 3;
            i += maximal_subpart(p + i, len - i);
        }
    }
    *owned   = o;
    *out_len = n;
    return o;
}

/* ---- step 2/3: added tokens ---- */

/* The first match of m in s[from..n): *at and the index of the added token, or 0 when none. */
static int next_match(const struct tok *t, const struct tok_matcher *m, const char *s, size_t n, size_t from,
                      size_t *at, uint32_t *which) {
    if (m->n == 0) return 0;
    for (size_t i = from; i < n; i++) {
        unsigned c = (unsigned char)s[i];
        for (uint32_t k = m->first[c]; k < m->first[c + 1]; k++) {
            const struct tok_added *a = &t->added[m->items[k]];
            if (a->content.len <= n - i && memcmp(s + i, t->pool + a->content.off, a->content.len) == 0) {
                *at    = i;
                *which = m->items[k];
                return 1;
            }
        }
    }
    return 0;
}

/* Rust's char::is_whitespace (the White_Space property): what lstrip/rstrip remove. */
static size_t ws_len_at(const unsigned char *p, size_t n) {
    if (n == 0) return 0;
    if ((p[0] >= 0x09 && p[0] <= 0x0D) || p[0] == 0x20) return 1;
    if (n >= 2 && p[0] == 0xC2 && (p[1] == 0x85 || p[1] == 0xA0)) return 2;
    if (n >= 3 && p[0] == 0xE1 && p[1] == 0x9A && p[2] == 0x80) return 3; /* U+1680 */
    if (n >= 3 && p[0] == 0xE2 && p[1] == 0x80 &&
        (p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF)) return 3; /* U+2000..200A, 2028, 2029, 202F */
    if (n >= 3 && p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) return 3; /* U+205F */
    if (n >= 3 && p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) return 3; /* U+3000 */
    return 0;
}

static size_t trim_start(const char *s, size_t a, size_t b) {
    size_t k;
    while (a < b && (k = ws_len_at((const unsigned char *)s + a, b - a)) > 0) a += k;
    return a;
}

static size_t trim_end(const char *s, size_t a, size_t b) {
    /* step back over whole code points that are white space */
    for (;;) {
        size_t c = b;
        if (c <= a) return b;
        do c--;
        while (c > a && ((unsigned char)s[c] & 0xC0) == 0x80);
        if (ws_len_at((const unsigned char *)s + c, b - c) != b - c) return b;
        b = c;
    }
}

/* ---- step 5: BPE ---- */

static const struct tok_merge_slot *merge_get(const struct tok *t, int32_t a, int32_t b) {
    uint64_t key  = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t   mask = t->merges_cap - 1;
    for (size_t i = (size_t)(tok_hash((const char *)&key, sizeof key) & mask);; i = (i + 1) & mask) {
        const struct tok_merge_slot *e = &t->merges[i];
        if (e->key == key) return e;
        if (e->key == UINT64_MAX) return NULL;
    }
}

static int cand_less(const struct cand *x, const struct cand *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(struct work *w, struct cand c) {
    if (grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap) != 0) {
        w->oom = 1;
        return;
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i          = p;
    }
    w->heap[i] = c;
}

static struct cand heap_pop(struct work *w) {
    struct cand top  = w->heap[0];
    struct cand last = w->heap[--w->heap_n];
    size_t      i = 0, n = w->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct cand *best = &last;
        if (l < n && cand_less(&w->heap[l], best)) m = l, best = &w->heap[l];
        if (r < n && cand_less(&w->heap[r], best)) m = r;
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i          = m;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void add_symbol(struct work *w, size_t *n, int32_t id, size_t len) {
    if (grow((void **)&w->sym, &w->sym_cap, *n + 1, sizeof *w->sym) != 0) {
        w->oom = 1;
        return;
    }
    w->sym[*n].id   = id;
    w->sym[*n].len  = len;
    w->sym[*n].prev = (int32_t)*n - 1;
    w->sym[*n].next = -1;
    if (*n > 0) w->sym[*n - 1].next = (int32_t)*n;
    (*n)++;
}

static void bpe_word(const struct tok *t, struct work *w, const char *s, size_t len) {
    if (len == 0) return;
    if (t->ignore_merges) {
        int32_t id = tok_vocab_find(t, s, len);
        if (id >= 0) {
            push_id(w, id);
            return;
        }
    }
    if (len > INT32_MAX / 2) {
        w->oom = 1;
        return;
    }
    /* the initial symbols, as the library's merge_word builds them (including its order of a
     * pending unk: emitted when the next in-vocabulary code point or the end comes) */
    size_t  n = 0, unk_len = 0;
    int     unk_pending = 0;
    for (size_t i = 0; i < len && !w->oom;) {
        int k = tok_utf8_len((const unsigned char *)s + i, len - i);
        if (k == 0) k = 1; /* cannot happen after the repair; keeps the loop finite */
        int32_t id = tok_vocab_find(t, s + i, (size_t)k);
        if (id >= 0) {
            if (unk_pending) add_symbol(w, &n, t->unk, unk_len), unk_pending = 0;
            add_symbol(w, &n, id, (size_t)k);
        } else {
            int all = t->byte_fallback;
            for (int j = 0; j < k && all; j++) all = t->byte_id[(unsigned char)s[i + j]] >= 0;
            if (all)
                for (int j = 0; j < k; j++) add_symbol(w, &n, t->byte_id[(unsigned char)s[i + j]], 1);
            else if (t->unk >= 0) {
                if (unk_pending && t->fuse_unk) unk_len += (size_t)k;
                else {
                    if (unk_pending) add_symbol(w, &n, t->unk, unk_len);
                    unk_pending = 1;
                    unk_len     = (size_t)k;
                }
            }
        }
        i += (size_t)k;
    }
    if (unk_pending) add_symbol(w, &n, t->unk, unk_len);
    if (w->oom) return;

    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const struct tok_merge_slot *m = merge_get(t, w->sym[i].id, w->sym[i + 1].id);
        if (m) heap_push(w, (struct cand){m->rank, (uint32_t)i, m->merged});
    }
    while (w->heap_n && !w->oom) {
        struct cand    top = heap_pop(w);
        struct symbol *cur = &w->sym[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        struct symbol               *right = &w->sym[cur->next];
        const struct tok_merge_slot *m     = merge_get(t, cur->id, right->id);
        if (!m || m->merged != top.merged) continue; /* stale: a neighbour changed */
        cur->id = top.merged;
        cur->len += right->len;
        right->len = 0;
        cur->next  = right->next;
        if (cur->next >= 0) w->sym[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            const struct tok_merge_slot *pm = merge_get(t, w->sym[cur->prev].id, cur->id);
            if (pm) heap_push(w, (struct cand){pm->rank, (uint32_t)cur->prev, pm->merged});
        }
        if (cur->next >= 0) {
            const struct tok_merge_slot *nm = merge_get(t, cur->id, w->sym[cur->next].id);
            if (nm) heap_push(w, (struct cand){nm->rank, top.pos, nm->merged});
        }
    }
    for (size_t i = 0; i < n; i++)
        if (w->sym[i].len) push_id(w, w->sym[i].id);
}

/* ---- step 4: pre-tokenizer ---- */

static int starts_with(const char *s, size_t n, const char *p, size_t pn) {
    return n >= pn && memcmp(s, p, pn) == 0;
}

/* Metaspace on s[0..n): spaces -> replacement, the prefix, then words. Uses nbuf[1]... the
 * caller's buffers are busy, so this allocates its own. */
static void metaspace(const struct tok *t, struct work *w, const char *s, size_t n, int first) {
    const char *r  = t->pool + t->ms_replacement.off;
    size_t      rl = t->ms_replacement.len;
    size_t      spaces = 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    if (spaces > (SIZE_MAX - n - rl) / (rl + 1)) {
        w->oom = 1;
        return;
    }
    char *o = malloc(n + spaces * rl + rl + 1);
    if (!o) {
        w->oom = 1;
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ') memcpy(o + m, r, rl), m += rl;
        else o[m++] = s[i];
    int prepend = t->ms_prepend == TOK_PREPEND_ALWAYS || (t->ms_prepend == TOK_PREPEND_FIRST && first);
    if (prepend && !starts_with(o, m, r, rl)) {
        memmove(o + rl, o, m);
        memcpy(o, r, rl);
        m += rl;
    }
    if (!t->ms_split) bpe_word(t, w, o, m);
    else {
        /* MergedWithNext: each replacement starts a new word */
        size_t start = 0;
        for (size_t i = 0; i + rl <= m; i++)
            if (i > start && memcmp(o + i, r, rl) == 0) {
                bpe_word(t, w, o + start, i - start);
                start = i;
            }
        bpe_word(t, w, o + start, m - start);
    }
    free(o);
}

static void pre_and_bpe(const struct tok *t, struct work *w, const char *s, size_t n, int first) {
    if (n == 0) return;
    if (t->metaspace) metaspace(t, w, s, n, first);
    else bpe_word(t, w, s, n);
}

/* ---- step 3: normalizer ---- */

/* Normalizes s[0..n) into one of w->nbuf; returns it (or s itself when there are no steps). */
static const char *normalize(const struct tok *t, struct work *w, const char *s, size_t n, size_t *out_n) {
    const char *cur = s;
    size_t      len = n;
    int         b   = 0;
    for (int k = 0; k < t->n_norm && !w->oom; k++) {
        const struct tok_norm_step *st = &t->norm[k];
        const char                 *a  = t->pool + st->a.off;
        size_t                      la = st->a.len;
        if (st->kind == TOK_NORM_PREPEND) {
            if (len == 0) continue; /* the library prepends only to non-empty text */
            if (grow((void **)&w->nbuf[b], &w->ncap[b], len + la + 1, 1) != 0) {
                w->oom = 1;
                break;
            }
            memcpy(w->nbuf[b], a, la);
            memcpy(w->nbuf[b] + la, cur, len);
            len += la;
        } else {
            const char *c  = t->pool + st->b.off;
            size_t      lc = st->b.len, hits = 0;
            for (size_t i = 0; i + la <= len;)
                if (memcmp(cur + i, a, la) == 0) hits++, i += la;
                else i++;
            size_t need = len + hits * (lc > la ? lc - la : 0) + 1;
            if (grow((void **)&w->nbuf[b], &w->ncap[b], need, 1) != 0) {
                w->oom = 1;
                break;
            }
            size_t m = 0;
            for (size_t i = 0; i < len;)
                if (i + la <= len && memcmp(cur + i, a, la) == 0) {
                    memcpy(w->nbuf[b] + m, c, lc);
                    m += lc;
                    i += la;
                } else
                    w->nbuf[b][m++] = cur[i++];
            len = m;
        }
        cur = w->nbuf[b];
        b ^= 1;
    }
    *out_n = len;
    return cur;
}

/* ---- sections ---- */

struct section {
    size_t  a, b; /* text range, or the added token's match */
    int32_t added; /* index into t->added, or -1 for text */
};

struct sections {
    struct section *v;
    size_t          n, cap;
};

/* Splits s[0..n) by matcher m into text and added-token sections, then trims the neighbours of
 * lstrip/rstrip tokens. */
static int split_added(const struct tok *t, const struct tok_matcher *m, const char *s, size_t n,
                       struct sections *out) {
    out->n     = 0;
    size_t pos = 0, at;
    uint32_t which;
    while (pos <= n) {
        int found = next_match(t, m, s, n, pos, &at, &which);
        size_t end = found ? at : n;
        if (grow((void **)&out->v, &out->cap, out->n + 2, sizeof *out->v) != 0) return -1;
        out->v[out->n++] = (struct section){pos, end, -1};
        if (!found) break;
        out->v[out->n++] = (struct section){at, at + t->added[which].content.len, (int32_t)which};
        pos = at + t->added[which].content.len;
    }
    for (size_t i = 0; i < out->n; i++) {
        if (out->v[i].added < 0) continue;
        const struct tok_added *a = &t->added[out->v[i].added];
        if (a->lstrip && i > 0) out->v[i - 1].b = trim_end(s, out->v[i - 1].a, out->v[i - 1].b);
        if (a->rstrip && i + 1 < out->n) out->v[i + 1].a = trim_start(s, out->v[i + 1].a, out->v[i + 1].b);
    }
    return 0;
}

int tok_encode(const struct tok *t, const char *text, size_t len, int add_special, int32_t **ids, size_t *n_ids,
               char *err, size_t errlen) {
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && len)) {
        if (err && errlen) snprintf(err, errlen, "tok_encode: NULL argument");
        return -1;
    }
    struct work     w = {0};
    struct sections outer = {0}, inner = {0};
    char           *owned = NULL, *norm_copy = NULL;
    size_t          n;
    const char     *s = len ? repair_utf8(text, len, &n, &owned) : "";
    if (!len) n = 0;
    if (!s) w.oom = 1;
    if (add_special)
        for (int i = 0; i < t->n_post_prefix; i++) push_id(&w, t->post_prefix[i]);
    if (s && split_added(t, &t->match_raw, s, n, &outer) != 0) w.oom = 1;
    for (size_t i = 0; i < outer.n && !w.oom; i++) {
        const struct section *sec = &outer.v[i];
        if (sec->added >= 0) {
            push_id(&w, t->added[sec->added].id);
            continue;
        }
        if (sec->b <= sec->a) continue;
        size_t      nl;
        const char *ns = normalize(t, &w, s + sec->a, sec->b - sec->a, &nl);
        if (w.oom || nl == 0) continue;
        int first = sec->a == 0;
        if (t->match_norm.n == 0) {
            pre_and_bpe(t, &w, ns, nl, first);
            continue;
        }
        /* the normalized text lives in a work buffer that BPE does not touch, but keep a copy:
         * the inner split and the pre-tokenizer must not see it change */
        free(norm_copy);
        norm_copy = malloc(nl ? nl : 1);
        if (!norm_copy || split_added(t, &t->match_norm, (memcpy(norm_copy, ns, nl), norm_copy), nl, &inner) != 0) {
            w.oom = 1;
            break;
        }
        for (size_t j = 0; j < inner.n && !w.oom; j++) {
            const struct section *sub = &inner.v[j];
            if (sub->added >= 0) push_id(&w, t->added[sub->added].id);
            else if (sub->b > sub->a) pre_and_bpe(t, &w, norm_copy + sub->a, sub->b - sub->a, first && j == 0);
        }
    }
    if (add_special)
        for (int i = 0; i < t->n_post_suffix; i++) push_id(&w, t->post_suffix[i]);
    free(owned);
    free(norm_copy);
    free(outer.v);
    free(inner.v);
    free(w.nbuf[0]);
    free(w.nbuf[1]);
    free(w.sym);
    free(w.heap);
    if (w.oom) {
        free(w.out.v);
        if (err && errlen) snprintf(err, errlen, "tok_encode: out of memory");
        return -1;
    }
    *ids   = w.out.v;
    *n_ids = w.out.n;
    return 0;
}
