/* SPDX-License-Identifier: MIT
 *
 * tokenizer_impl.h -- the inside of struct tok, shared by the loader (tokenizer_load.c), the
 * encoder (tokenizer_bpe.c) and the decoder (tokenizer_decode.c). Strings live in one byte pool and
 * are referred to by (offset, length); lookups use two open-addressing hash tables: piece text ->
 * id, and merge pair (left id, right id) -> (rank, merged id).
 */
#ifndef INFLLM_RT_TOKENIZER_IMPL_H
#define INFLLM_RT_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define TOK_NONE UINT32_MAX

struct tok_span {
    uint32_t off, len; /* in tok.pool; off TOK_NONE: no string */
};

struct tok_added {
    int32_t         id;
    struct tok_span content;
    uint8_t         special, lstrip, rstrip, normalized;
};

/* Leftmost-longest literal matching of added-token contents: the candidates of each first byte,
 * longest first (items[first[c] .. first[c+1]) are indices into tok.added). */
struct tok_matcher {
    uint32_t  first[257];
    uint32_t *items;
    uint32_t  n;
};

enum tok_norm_kind { TOK_NORM_PREPEND, TOK_NORM_REPLACE };

struct tok_norm_step {
    enum tok_norm_kind kind;
    struct tok_span    a, b; /* PREPEND: a = text; REPLACE: a = pattern, b = content */
};

enum tok_prepend_scheme { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER };

struct tok_vocab_slot {
    uint64_t hash;
    int32_t  id; /* -1: empty */
    uint32_t off, len;
};

struct tok_merge_slot {
    uint64_t key;  /* (left << 32) | right, UINT64_MAX: empty */
    uint32_t rank;
    int32_t  merged;
};

#define TOK_MAX_NORM    8
#define TOK_MAX_DEC     8
#define TOK_MAX_POST    4

struct tok {
    char  *pool; /* every string, NUL-terminated */
    size_t pool_len, pool_cap;

    int32_t          n_ids;  /* max id + 1 */
    struct tok_span *piece;  /* [n_ids]: the text of each id (added content or vocab piece) */
    uint8_t         *is_special; /* [n_ids] */
    int32_t          byte_id[256]; /* id of the piece <0xHH>, -1 if absent */

    struct tok_vocab_slot *vocab; /* model vocabulary only (not the added tokens) */
    size_t                 vocab_cap; /* power of two */
    struct tok_merge_slot *merges;
    size_t                 merges_cap;

    struct tok_added  *added;
    uint32_t           n_added;
    struct tok_matcher match_raw, match_norm; /* normalized false / true */

    struct tok_norm_step norm[TOK_MAX_NORM];
    int                  n_norm;

    int                     metaspace; /* pre_tokenizer Metaspace (else none) */
    struct tok_span         ms_replacement;
    enum tok_prepend_scheme ms_prepend;
    int                     ms_split;

    int32_t unk, bos, eos;
    int     fuse_unk, byte_fallback, ignore_merges;

    int32_t post_prefix[TOK_MAX_POST], post_suffix[TOK_MAX_POST];
    int     n_post_prefix, n_post_suffix;

    /* decoder: per-token replacements, then byte fallback, then fuse, then strip of up to
     * dec_strip leading dec_strip_char bytes (one ASCII char) of the whole text */
    struct tok_span dec_from[TOK_MAX_DEC], dec_to[TOK_MAX_DEC];
    int             n_dec_replace;
    int             dec_byte_fallback;
    int             dec_strip;
    char            dec_strip_char;
};

/* Looks a piece up in the model vocabulary: its id or -1. */
int32_t tok_vocab_find(const struct tok *t, const char *s, size_t len);

/* 64-bit FNV-1a. */
uint64_t tok_hash(const char *s, size_t len);

/* The byte value of a piece "<0xHH>" as the tokenizers library reads it, or -1. */
int tok_parse_byte_piece(const char *s, size_t len);

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 when it is not valid there. */
int tok_utf8_len(const unsigned char *s, size_t n);
/* The UTF-8 sequence a lead byte s[0] starts: *want = its length (1 for ASCII, 0 when s[0] cannot
 * start one); returns how many of s[0..n) form a prefix of a well-formed sequence (0 for a bad
 * lead, else 1..*want). */
int tok_utf8_prefix(const unsigned char *s, size_t n, int *want);

#endif /* INFLLM_RT_TOKENIZER_IMPL_H */
