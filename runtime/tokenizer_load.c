/* SPDX-License-Identifier: MIT
 *
 * tokenizer_load.c -- builds a struct tok from the text of tokenizer.json (and tokenizer_config.json):
 * the vocabulary and merge tables, the added tokens and their matchers, and the normalizer,
 * pre-tokenizer, post-processor and decoder settings. Anything outside the Llama family that this
 * runtime does not implement (a regex normalizer, a ByteLevel pre-tokenizer, BPE dropout, ...) is
 * refused with a message naming it, rather than tokenised differently from the reference.
 */
#define _POSIX_C_SOURCE 200809L
#include "json.h"
#include "readfile.h"
#include "tokenizer_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Ids above this are refused: real vocabularies stay far below (Gemma's 262,144 is among the
 * largest), and a hostile file must not make us allocate gigabytes. */
#define TOK_MAX_IDS (1 << 20)

struct loader {
    struct tok *t;
    const char *name;
    char       *err;
    size_t      errlen;
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int lfail(struct loader *L, const char *fmt, ...) {
    if (L->err && L->errlen) {
        int k = snprintf(L->err, L->errlen, "%s: ", L->name);
        if (k > 0 && (size_t)k < L->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(L->err + k, L->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

uint64_t tok_hash(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int tok_utf8_prefix(const unsigned char *p, size_t n, int *want) {
    *want = 0;
    if (n == 0) return 0;
    unsigned c = p[0], lo = 0x80, hi = 0xBF; /* lo..hi: the second byte's range (Unicode Table 3-7) */
    if (c < 0x80) {
        *want = 1;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) *want = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        *want = 3;
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        *want = 4;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    size_t i = 1;
    if (i < n && p[i] >= lo && p[i] <= hi) {
        i++;
        while (i < n && i < (size_t)*want && p[i] >= 0x80 && p[i] <= 0xBF) i++;
    }
    return (int)i;
}

int tok_utf8_len(const unsigned char *p, size_t n) {
    int want, got = tok_utf8_prefix(p, n, &want);
    return want > 0 && got == want ? want : 0;
}

/* The tokenizers library reads "<0x" + two characters + ">" with u8::from_str_radix(_, 16), which
 * takes either case and also a leading '+' before a single digit. */
int tok_parse_byte_piece(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int  d;
        if (i == 3 && c == '+') continue;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

/* ---- string pool ---- */

static int pool_add(struct loader *L, const char *s, size_t len, struct tok_span *out) {
    struct tok *t = L->t;
    if (len >= UINT32_MAX || t->pool_len > UINT32_MAX - len - 1) return lfail(L, "strings too large");
    if (t->pool_len + len + 1 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 16;
        while (cap < t->pool_len + len + 1) cap *= 2;
        char *p = realloc(t->pool, cap);
        if (!p) return lfail(L, "out of memory");
        t->pool     = p;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, s, len);
    t->pool[t->pool_len + len] = 0;
    out->off                   = (uint32_t)t->pool_len;
    out->len                   = (uint32_t)len;
    t->pool_len += len + 1;
    return 0;
}

/* ---- hash tables ---- */

int32_t tok_vocab_find(const struct tok *t, const char *s, size_t len) {
    if (!t->vocab_cap) return -1;
    uint64_t h    = tok_hash(s, len);
    size_t   mask = t->vocab_cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const struct tok_vocab_slot *e = &t->vocab[i];
        if (e->id < 0) return -1;
        if (e->hash == h && e->len == len && memcmp(t->pool + e->off, s, len) == 0) return e->id;
    }
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

static int merge_put(struct tok *t, int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    uint64_t key  = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t   mask = t->merges_cap - 1;
    for (size_t i = (size_t)(tok_hash((const char *)&key, sizeof key) & mask);; i = (i + 1) & mask) {
        struct tok_merge_slot *e = &t->merges[i];
        if (e->key == UINT64_MAX || e->key == key) {
            /* a repeated pair keeps the later rank, as the library's map collection does */
            e->key    = key;
            e->rank   = rank;
            e->merged = merged;
            return 0;
        }
    }
}

/* ---- small JSON helpers ---- */

static int opt_bool(struct loader *L, const struct json_value *obj, const char *key, int dflt, int *out) {
    const struct json_value *v = json_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (json_bool(v, out) != 0) return lfail(L, "\"%s\" must be true or false", key);
    return 0;
}

static const char *type_of(const struct json_value *obj) {
    return json_string(json_get(obj, "type"), NULL);
}

/* A token named in tokenizer_config.json: a string, or an object with "content". */
static const char *config_token(const struct json_value *cfg, const char *key, size_t *len) {
    const struct json_value *v = json_get(cfg, key);
    if (v && v->type == JSON_OBJECT) v = json_get(v, "content");
    return json_string(v, len);
}

/* ---- model ---- */

static int load_vocab(struct loader *L, const struct json_value *vocab) {
    struct tok *t = L->t;
    if (!vocab || vocab->type != JSON_OBJECT) return lfail(L, "model.vocab must be an object of piece -> id");
    size_t n = json_len(vocab);
    t->vocab_cap = pow2_at_least(2 * n + 1);
    t->vocab     = malloc(t->vocab_cap * sizeof *t->vocab);
    if (!t->vocab) return lfail(L, "out of memory");
    for (size_t i = 0; i < t->vocab_cap; i++) t->vocab[i].id = -1;
    for (size_t i = 0; i < n; i++) {
        const struct json_member *m = json_member_at(vocab, i);
        int64_t                   id;
        if (json_int64(&m->value, &id) != 0 || id < 0 || id >= TOK_MAX_IDS)
            return lfail(L, "model.vocab[\"%.40s\"]: id must be an integer in [0, %d)", m->key, TOK_MAX_IDS);
        struct tok_span sp;
        if (pool_add(L, m->key, m->key_len, &sp) != 0) return -1;
        uint64_t h    = tok_hash(m->key, m->key_len);
        size_t   mask = t->vocab_cap - 1, j = (size_t)h & mask;
        while (t->vocab[j].id >= 0) j = (j + 1) & mask; /* keys are unique: the parser checked */
        t->vocab[j].hash = h;
        t->vocab[j].id   = (int32_t)id;
        t->vocab[j].off  = sp.off;
        t->vocab[j].len  = sp.len;
        if ((int32_t)id + 1 > t->n_ids) t->n_ids = (int32_t)id + 1;
    }
    return 0;
}

static int load_merges(struct loader *L, const struct json_value *merges) {
    struct tok *t = L->t;
    if (merges && json_is_null(merges)) merges = NULL;
    if (merges && merges->type != JSON_ARRAY) return lfail(L, "model.merges must be an array");
    size_t n = json_len(merges);
    if (n > UINT32_MAX / 4) return lfail(L, "model.merges: too many merges");
    t->merges_cap = pow2_at_least(2 * n + 1);
    t->merges     = malloc(t->merges_cap * sizeof *t->merges);
    if (!t->merges) return lfail(L, "out of memory");
    for (size_t i = 0; i < t->merges_cap; i++) t->merges[i].key = UINT64_MAX;
    char  *buf = NULL;
    size_t cap = 0;
    int    rc  = -1;
    for (size_t i = 0; i < n; i++) {
        const struct json_value *m = json_at(merges, i);
        const char              *a, *b;
        size_t                   la, lb;
        if (m->type == JSON_STRING) {
            /* "left right": exactly one space, as the library's parser requires */
            const char *s = m->u.str.s, *sp = memchr(s, ' ', m->u.str.len);
            if (!sp || memchr(sp + 1, ' ', m->u.str.len - (size_t)(sp + 1 - s))) {
                lfail(L, "model.merges[%zu]: \"%.60s\" is not two pieces separated by one space", i, s);
                goto out;
            }
            a  = s;
            la = (size_t)(sp - s);
            b  = sp + 1;
            lb = m->u.str.len - la - 1;
        } else if (m->type == JSON_ARRAY && json_len(m) == 2 && json_at(m, 0)->type == JSON_STRING &&
                   json_at(m, 1)->type == JSON_STRING) {
            a = json_string(json_at(m, 0), &la);
            b = json_string(json_at(m, 1), &lb);
        } else {
            lfail(L, "model.merges[%zu]: must be a string \"a b\" or a pair [\"a\", \"b\"]", i);
            goto out;
        }
        if (la + lb + 1 > cap) {
            cap   = (la + lb + 1) * 2;
            char *q = realloc(buf, cap);
            if (!q) {
                lfail(L, "out of memory");
                goto out;
            }
            buf = q;
        }
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int32_t ia = tok_vocab_find(t, a, la), ib = tok_vocab_find(t, b, lb), im = tok_vocab_find(t, buf, la + lb);
        if (ia < 0 || ib < 0 || im < 0) {
            const char *which = ia < 0 ? a : ib < 0 ? b : buf;
            int         wl    = (int)(ia < 0 ? la : ib < 0 ? lb : la + lb);
            lfail(L, "model.merges[%zu]: piece \"%.*s\" is not in the vocabulary", i, wl > 60 ? 60 : wl, which);
            goto out;
        }
        merge_put(t, ia, ib, (uint32_t)i, im);
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

static int load_model(struct loader *L, const struct json_value *model) {
    struct tok *t = L->t;
    if (!model || model->type != JSON_OBJECT) return lfail(L, "\"model\" must be an object");
    const char *type = type_of(model);
    if (type && strcmp(type, "BPE") != 0)
        return lfail(L, "model type \"%.40s\" is not supported (only BPE, the Llama family's)", type);
    const struct json_value *dropout = json_get(model, "dropout");
    double                   d;
    if (dropout && !json_is_null(dropout) && (json_double(dropout, &d) != 0 || d != 0))
        return lfail(L, "BPE dropout is not supported (tokenisation would be random)");
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        size_t      len;
        const char *s = json_string(json_get(model, keys[i]), &len);
        if (s && len) return lfail(L, "model.%s is not supported", keys[i]);
    }
    if (opt_bool(L, model, "byte_fallback", 0, &t->byte_fallback) || opt_bool(L, model, "fuse_unk", 0, &t->fuse_unk) ||
        opt_bool(L, model, "ignore_merges", 0, &t->ignore_merges))
        return -1;
    if (load_vocab(L, json_get(model, "vocab")) || load_merges(L, json_get(model, "merges"))) return -1;
    t->unk = -1;
    const struct json_value *unk = json_get(model, "unk_token");
    if (unk && !json_is_null(unk)) {
        size_t      len;
        const char *s = json_string(unk, &len);
        if (!s) return lfail(L, "model.unk_token must be a string or null");
        t->unk = tok_vocab_find(t, s, len);
        if (t->unk < 0) return lfail(L, "model.unk_token \"%.40s\" is not in the vocabulary", s);
    }
    for (int b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        t->byte_id[b] = tok_vocab_find(t, piece, 6);
    }
    return 0;
}

/* ---- added tokens ---- */

static int load_added(struct loader *L, const struct json_value *arr) {
    struct tok *t = L->t;
    if (!arr || json_is_null(arr)) return 0;
    if (arr->type != JSON_ARRAY) return lfail(L, "\"added_tokens\" must be an array");
    size_t n = json_len(arr);
    if (n > TOK_MAX_IDS) return lfail(L, "too many added tokens");
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return lfail(L, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const struct json_value *a = json_at(arr, i);
        struct tok_added        *d = &t->added[t->n_added];
        int64_t                  id;
        size_t                   len;
        const char              *content = json_string(json_get(a, "content"), &len);
        if (a->type != JSON_OBJECT || json_int64(json_get(a, "id"), &id) != 0 || id < 0 || id >= TOK_MAX_IDS)
            return lfail(L, "added_tokens[%zu]: needs an integer \"id\" in [0, %d)", i, TOK_MAX_IDS);
        if (!content || len == 0) return lfail(L, "added_tokens[%zu]: needs a non-empty string \"content\"", i);
        int special, lstrip, rstrip, normalized, single_word;
        if (opt_bool(L, a, "special", 0, &special) || opt_bool(L, a, "lstrip", 0, &lstrip) ||
            opt_bool(L, a, "rstrip", 0, &rstrip) || opt_bool(L, a, "normalized", !special, &normalized) ||
            opt_bool(L, a, "single_word", 0, &single_word))
            return -1;
        if (single_word) return lfail(L, "added_tokens[%zu]: single_word tokens are not supported", i);
        if (pool_add(L, content, len, &d->content) != 0) return -1;
        d->id         = (int32_t)id;
        d->special    = (uint8_t)special;
        d->lstrip     = (uint8_t)lstrip;
        d->rstrip     = (uint8_t)rstrip;
        d->normalized = (uint8_t)normalized;
        t->n_added++;
        if (d->id + 1 > t->n_ids) t->n_ids = d->id + 1;
    }
    return 0;
}

/* The matcher of the added tokens whose `normalized` flag is `normalized`. The contents of
 * normalized tokens are matched in normalized text, so they are normalized themselves first
 * (norm_content, as the library does). */
static int build_matcher(struct loader *L, int normalized, struct tok_matcher *m) {
    struct tok *t = L->t;
    m->items      = malloc((t->n_added ? t->n_added : 1) * sizeof *m->items);
    if (!m->items) return lfail(L, "out of memory");
    m->n = 0;
    for (uint32_t i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized) m->items[m->n++] = i;
    /* by first byte, longer first: insertion sort (added tokens are few, and qsort would need a
     * global for its context) */
    for (uint32_t i = 1; i < m->n; i++) {
        uint32_t x = m->items[i], j = i;
        for (; j > 0; j--) {
            const struct tok_added *a = &t->added[x], *b = &t->added[m->items[j - 1]];
            unsigned char fa = (unsigned char)t->pool[a->content.off], fb = (unsigned char)t->pool[b->content.off];
            int less = fa < fb || (fa == fb && a->content.len > b->content.len);
            if (!less) break;
            m->items[j] = m->items[j - 1];
        }
        m->items[j] = x;
    }
    uint32_t k = 0;
    for (int c = 0; c < 256; c++) {
        m->first[c] = k;
        while (k < m->n && (unsigned char)t->pool[t->added[m->items[k]].content.off] == c) k++;
    }
    m->first[256] = k;
    return 0;
}

/* ---- normalizer, pre-tokenizer, post-processor, decoder ---- */

static int load_norm_step(struct loader *L, const struct json_value *n) {
    struct tok *t    = L->t;
    const char *type = type_of(n);
    if (!type) return lfail(L, "normalizer without a \"type\"");
    if (t->n_norm == TOK_MAX_NORM) return lfail(L, "normalizer: more than %d steps", TOK_MAX_NORM);
    struct tok_norm_step *st = &t->norm[t->n_norm];
    size_t                len;
    if (strcmp(type, "Sequence") == 0) {
        const struct json_value *list = json_get(n, "normalizers");
        if (!list || list->type != JSON_ARRAY) return lfail(L, "normalizer Sequence needs \"normalizers\"");
        for (size_t i = 0; i < json_len(list); i++)
            if (load_norm_step(L, json_at(list, i)) != 0) return -1;
        return 0;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *s = json_string(json_get(n, "prepend"), &len);
        if (!s) return lfail(L, "normalizer Prepend needs a string \"prepend\"");
        st->kind = TOK_NORM_PREPEND;
        if (pool_add(L, s, len, &st->a)) return -1;
        t->n_norm++;
        return 0;
    }
    if (strcmp(type, "Replace") == 0) {
        const struct json_value *pat = json_get(n, "pattern");
        const char              *p   = json_string(json_get(pat, "String"), &len);
        size_t                   clen;
        const char              *c = json_string(json_get(n, "content"), &clen);
        if (!p) return lfail(L, "normalizer Replace: only a {\"String\": ...} pattern is supported (not a regex)");
        if (len == 0) return lfail(L, "normalizer Replace: empty pattern");
        if (!c) return lfail(L, "normalizer Replace needs a string \"content\"");
        st->kind = TOK_NORM_REPLACE;
        if (pool_add(L, p, len, &st->a) || pool_add(L, c, clen, &st->b)) return -1;
        t->n_norm++;
        return 0;
    }
    return lfail(L, "normalizer type \"%.40s\" is not supported (the Llama family uses Prepend + Replace)", type);
}

static int load_pre_tokenizer(struct loader *L, const struct json_value *p) {
    struct tok *t = L->t;
    if (!p || json_is_null(p)) return 0;
    const char *type = type_of(p);
    if (type && strcmp(type, "Sequence") == 0 && json_len(json_get(p, "pretokenizers")) == 1)
        return load_pre_tokenizer(L, json_at(json_get(p, "pretokenizers"), 0));
    if (!type || strcmp(type, "Metaspace") != 0)
        return lfail(L, "pre_tokenizer type \"%.40s\" is not supported (only null or Metaspace)", type ? type : "?");
    size_t      len;
    const char *r = json_string(json_get(p, "replacement"), &len);
    if (!r) r = "\xE2\x96\x81", len = 3;
    if (len == 0) return lfail(L, "pre_tokenizer Metaspace: empty replacement");
    if (pool_add(L, r, len, &t->ms_replacement)) return -1;
    const char *scheme = json_string(json_get(p, "prepend_scheme"), NULL);
    if (scheme) {
        if (strcmp(scheme, "always") == 0) t->ms_prepend = TOK_PREPEND_ALWAYS;
        else if (strcmp(scheme, "first") == 0) t->ms_prepend = TOK_PREPEND_FIRST;
        else if (strcmp(scheme, "never") == 0) t->ms_prepend = TOK_PREPEND_NEVER;
        else return lfail(L, "pre_tokenizer Metaspace: unknown prepend_scheme \"%.20s\"", scheme);
    } else {
        int add_prefix; /* older files: add_prefix_space */
        if (opt_bool(L, p, "add_prefix_space", 1, &add_prefix)) return -1;
        t->ms_prepend = add_prefix ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
    }
    if (opt_bool(L, p, "split", 1, &t->ms_split)) return -1;
    t->metaspace = 1;
    return 0;
}

static int special_ids(struct loader *L, const struct json_value *specials, const char *name, int32_t *ids,
                       int *n) {
    const struct json_value *s   = json_get(specials, name);
    const struct json_value *arr = json_get(s, "ids");
    if (!arr || arr->type != JSON_ARRAY) return lfail(L, "post_processor: special token \"%.40s\" has no ids", name);
    for (size_t i = 0; i < json_len(arr); i++) {
        int64_t id;
        if (*n == TOK_MAX_POST) return lfail(L, "post_processor: more than %d special ids", TOK_MAX_POST);
        if (json_int64(json_at(arr, i), &id) != 0 || id < 0 || id >= TOK_MAX_IDS)
            return lfail(L, "post_processor: bad id for \"%.40s\"", name);
        ids[(*n)++] = (int32_t)id;
    }
    return 0;
}

static int load_post(struct loader *L, const struct json_value *p) {
    struct tok *t = L->t;
    if (!p || json_is_null(p)) return 0;
    const char *type = type_of(p);
    if (!type || strcmp(type, "TemplateProcessing") != 0)
        return lfail(L, "post_processor type \"%.40s\" is not supported (only TemplateProcessing)", type ? type : "?");
    const struct json_value *single = json_get(p, "single"), *specials = json_get(p, "special_tokens");
    if (!single || single->type != JSON_ARRAY) return lfail(L, "post_processor: \"single\" must be an array");
    int seen_a = 0;
    for (size_t i = 0; i < json_len(single); i++) {
        const struct json_value *e  = json_at(single, i);
        const struct json_value *sp = json_get(e, "SpecialToken");
        if (json_get(e, "Sequence")) {
            if (seen_a) return lfail(L, "post_processor: \"single\" has two sequences");
            seen_a = 1;
        } else if (sp) {
            const char *name = json_string(json_get(sp, "id"), NULL);
            if (!name) return lfail(L, "post_processor: SpecialToken without an id");
            if (special_ids(L, specials, name, seen_a ? t->post_suffix : t->post_prefix,
                            seen_a ? &t->n_post_suffix : &t->n_post_prefix))
                return -1;
        } else
            return lfail(L, "post_processor: unknown entry in \"single\"");
    }
    if (!seen_a) return lfail(L, "post_processor: \"single\" has no sequence");
    return 0;
}

static int load_decoder_step(struct loader *L, const struct json_value *d, int *stage) {
    struct tok *t    = L->t;
    const char *type = type_of(d);
    size_t      la, lb;
    /* stage: 0 replaces, 1 after ByteFallback, 2 after Fuse, 3 after Strip -- the Llama order */
    if (!type) return lfail(L, "decoder without a \"type\"");
    if (strcmp(type, "Sequence") == 0) {
        const struct json_value *list = json_get(d, "decoders");
        if (!list || list->type != JSON_ARRAY) return lfail(L, "decoder Sequence needs \"decoders\"");
        for (size_t i = 0; i < json_len(list); i++)
            if (load_decoder_step(L, json_at(list, i), stage) != 0) return -1;
        return 0;
    }
    if (strcmp(type, "Replace") == 0 && *stage == 0) {
        const char *a = json_string(json_get(json_get(d, "pattern"), "String"), &la);
        const char *b = json_string(json_get(d, "content"), &lb);
        if (!a || !b || la == 0) return lfail(L, "decoder Replace: needs a {\"String\": ...} pattern and a content");
        if (t->n_dec_replace == TOK_MAX_DEC) return lfail(L, "decoder: too many Replace steps");
        if (pool_add(L, a, la, &t->dec_from[t->n_dec_replace]) || pool_add(L, b, lb, &t->dec_to[t->n_dec_replace]))
            return -1;
        t->n_dec_replace++;
        return 0;
    }
    if (strcmp(type, "ByteFallback") == 0 && *stage < 1) {
        t->dec_byte_fallback = 1;
        *stage               = 1;
        return 0;
    }
    if (strcmp(type, "Fuse") == 0 && *stage < 2) {
        *stage = 2;
        return 0;
    }
    if (strcmp(type, "Strip") == 0 && *stage < 3) {
        const char *c = json_string(json_get(d, "content"), &la);
        int64_t     start = 0, stop = 0;
        if (!c || la != 1 || json_int64(json_get(d, "start"), &start) || json_int64(json_get(d, "stop"), &stop) ||
            start < 0 || start > 64 || stop != 0)
            return lfail(L, "decoder Strip: only one ASCII content character, start 0..64 and stop 0 are supported");
        t->dec_strip      = (int)start;
        t->dec_strip_char = c[0];
        *stage            = 3;
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0 && *stage == 0) {
        const char *r = json_string(json_get(d, "replacement"), &la);
        if (!r) r = "\xE2\x96\x81", la = 3;
        if (t->n_dec_replace == TOK_MAX_DEC || la == 0) return lfail(L, "decoder Metaspace: bad replacement");
        if (pool_add(L, r, la, &t->dec_from[t->n_dec_replace]) || pool_add(L, " ", 1, &t->dec_to[t->n_dec_replace]))
            return -1;
        t->n_dec_replace++;
        const char *scheme = json_string(json_get(d, "prepend_scheme"), NULL);
        int         add    = 1;
        if (scheme) add = strcmp(scheme, "never") != 0;
        else if (opt_bool(L, d, "add_prefix_space", 1, &add)) return -1;
        t->dec_strip      = add;
        t->dec_strip_char = ' ';
        *stage            = 3;
        return 0;
    }
    return lfail(L, "decoder \"%.40s\" is not supported here (the Llama order is Replace, ByteFallback, Fuse, Strip)",
                 type);
}

static int load_config(struct loader *L, const struct json_value *cfg) {
    struct tok *t = L->t;
    if (!cfg) return 0;
    if (cfg->type != JSON_OBJECT) return lfail(L, "tokenizer_config.json must be an object");
    size_t      len;
    const char *s;
    if ((s = config_token(cfg, "bos_token", &len)) != NULL) t->bos = tok_find(t, s, len);
    if ((s = config_token(cfg, "eos_token", &len)) != NULL) {
        t->eos = tok_find(t, s, len);
        if (t->eos < 0) return lfail(L, "tokenizer_config.json: eos_token \"%.40s\" is not a token", s);
    }
    const struct json_value *ab = json_get(cfg, "add_bos_token"), *ae = json_get(cfg, "add_eos_token");
    if (ab || ae) {
        /* LlamaTokenizerFast rebuilds the post-processor from these two flags (defaults true, false) */
        int add_bos, add_eos;
        if (opt_bool(L, cfg, "add_bos_token", 1, &add_bos) || opt_bool(L, cfg, "add_eos_token", 0, &add_eos)) return -1;
        if ((add_bos && t->bos < 0) || (add_eos && t->eos < 0))
            return lfail(L, "tokenizer_config.json: add_%s_token is true but there is no %s token",
                         add_bos && t->bos < 0 ? "bos" : "eos", add_bos && t->bos < 0 ? "bos" : "eos");
        t->n_post_prefix = t->n_post_suffix = 0;
        if (add_bos) t->post_prefix[t->n_post_prefix++] = t->bos;
        if (add_eos) t->post_suffix[t->n_post_suffix++] = t->eos;
    }
    return 0;
}

/* ---- public ---- */

void tok_free(struct tok *t) {
    if (!t) return;
    free(t->pool);
    free(t->piece);
    free(t->is_special);
    free(t->vocab);
    free(t->merges);
    free(t->added);
    free(t->match_raw.items);
    free(t->match_norm.items);
    free(t);
}

int32_t tok_find(const struct tok *t, const char *text, size_t len) {
    if (!t || !text) return -1;
    for (uint32_t i = 0; i < t->n_added; i++)
        if (t->added[i].content.len == len && memcmp(t->pool + t->added[i].content.off, text, len) == 0)
            return t->added[i].id;
    return tok_vocab_find(t, text, len);
}

static int build(struct loader *L, const struct json_value *root, const struct json_value *cfg) {
    struct tok *t = L->t;
    if (!root || root->type != JSON_OBJECT) return lfail(L, "the top level must be an object");
    t->unk = t->bos = t->eos = -1;
    if (load_model(L, json_get(root, "model")) || load_added(L, json_get(root, "added_tokens"))) return -1;
    const struct json_value *norm = json_get(root, "normalizer");
    if (norm && !json_is_null(norm) && load_norm_step(L, norm)) return -1;
    if (load_pre_tokenizer(L, json_get(root, "pre_tokenizer")) || load_post(L, json_get(root, "post_processor")))
        return -1;
    const struct json_value *dec = json_get(root, "decoder");
    int                      stage = 0;
    if (dec && !json_is_null(dec) && load_decoder_step(L, dec, &stage)) return -1;
    /* the pieces of every id: vocabulary first, added contents over them (the library asks the
     * added vocabulary first when decoding) */
    if (t->n_ids <= 0) return lfail(L, "empty vocabulary");
    t->piece      = malloc((size_t)t->n_ids * sizeof *t->piece);
    t->is_special = calloc((size_t)t->n_ids, 1);
    if (!t->piece || !t->is_special) return lfail(L, "out of memory");
    for (int32_t i = 0; i < t->n_ids; i++) t->piece[i].off = TOK_NONE, t->piece[i].len = 0;
    for (size_t i = 0; i < t->vocab_cap; i++)
        if (t->vocab[i].id >= 0) {
            t->piece[t->vocab[i].id].off = t->vocab[i].off;
            t->piece[t->vocab[i].id].len = t->vocab[i].len;
        }
    for (uint32_t i = 0; i < t->n_added; i++) {
        t->piece[t->added[i].id] = t->added[i].content;
        t->is_special[t->added[i].id] |= t->added[i].special;
    }
    if (build_matcher(L, 0, &L->t->match_raw) || build_matcher(L, 1, &L->t->match_norm)) return -1;
    for (int i = 0; i < t->n_post_prefix; i++)
        if (t->post_prefix[i] >= t->n_ids) return lfail(L, "post_processor: id %d has no token", (int)t->post_prefix[i]);
    for (int i = 0; i < t->n_post_suffix; i++)
        if (t->post_suffix[i] >= t->n_ids) return lfail(L, "post_processor: id %d has no token", (int)t->post_suffix[i]);
    /* BOS/EOS defaults: the post-processor's first special id, else "<s>" / "</s>" */
    if (t->n_post_prefix) t->bos = t->post_prefix[0];
    else t->bos = tok_find(t, "<s>", 3);
    t->eos = tok_find(t, "</s>", 4);
    return load_config(L, cfg);
}

int tok_load_buffer(const void *json, size_t json_len, const void *config, size_t config_len, const char *name,
                    struct tok **out, char *err, size_t errlen) {
    struct loader L = {NULL, name ? name : "tokenizer.json", err, errlen};
    if (err && errlen) err[0] = 0;
    if (!out) return lfail(&L, "no output pointer");
    *out = NULL;
    struct json_doc *doc = NULL, *cdoc = NULL;
    char             msg[256];
    if (json_parse(json, json_len, NULL, &doc, msg, sizeof msg) != 0) return lfail(&L, "%s", msg);
    if (config && json_parse(config, config_len, NULL, &cdoc, msg, sizeof msg) != 0) {
        json_free(doc);
        return lfail(&L, "tokenizer_config.json: %s", msg);
    }
    L.t = calloc(1, sizeof *L.t);
    int rc = L.t ? build(&L, json_root(doc), cdoc ? json_root(cdoc) : NULL) : lfail(&L, "out of memory");
    json_free(doc);
    json_free(cdoc);
    if (rc != 0) {
        tok_free(L.t);
        return -1;
    }
    *out = L.t;
    return 0;
}

int tok_load(const char *path, const char *config_path, struct tok **out, char *err, size_t errlen) {
    char  *js = NULL, *cs = NULL;
    size_t jl = 0, cl = 0;
    if (out) *out = NULL;
    if (rt_read_file(path, RT_MAX_JSON_BYTES, &js, &jl, err, errlen) != 0) return -1;
    if (config_path && rt_read_file(config_path, RT_MAX_JSON_BYTES, &cs, &cl, err, errlen) != 0) {
        free(js);
        return -1;
    }
    int rc = tok_load_buffer(js, jl, cs, cl, path, out, err, errlen);
    free(js);
    free(cs);
    return rc;
}

int tok_load_dir(const char *dir, struct tok **out, char *err, size_t errlen) {
    size_t n   = strlen(dir);
    char  *tj  = malloc(n + 32), *tc = malloc(n + 32);
    if (!tj || !tc) {
        free(tj);
        free(tc);
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(tj, n + 32, "%s/tokenizer.json", dir);
    snprintf(tc, n + 32, "%s/tokenizer_config.json", dir);
    struct stat st;
    int         has_cfg = stat(tc, &st) == 0;
    int         rc      = tok_load(tj, has_cfg ? tc : NULL, out, err, errlen);
    free(tj);
    free(tc);
    return rc;
}

int32_t tok_n_vocab(const struct tok *t) { return t ? t->n_ids : 0; }
int32_t tok_bos(const struct tok *t) { return t ? t->bos : -1; }
int32_t tok_eos(const struct tok *t) { return t ? t->eos : -1; }
int32_t tok_unk(const struct tok *t) { return t ? t->unk : -1; }

int tok_adds_bos(const struct tok *t) {
    return t && t->n_post_prefix > 0 && t->post_prefix[0] == t->bos;
}
int tok_adds_eos(const struct tok *t) {
    return t && t->n_post_suffix > 0 && t->post_suffix[t->n_post_suffix - 1] == t->eos;
}

const char *tok_piece(const struct tok *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_ids || t->piece[id].off == TOK_NONE) return NULL;
    if (len) *len = t->piece[id].len;
    return t->pool + t->piece[id].off;
}

int tok_is_special(const struct tok *t, int32_t id) {
    return t && id >= 0 && id < t->n_ids && t->is_special[id];
}
