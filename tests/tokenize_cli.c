/* SPDX-License-Identifier: MIT
 *
 * tokenize_cli.c -- the C side of the tokenizer oracle test (tests/tokenizer/check.sh): compares
 * our encoder and decoder with the expectations written by tests/tokenizer/oracle.mjs (the Hugging
 * Face tokenizers library's JavaScript port), case by case, naming the first differing position.
 *
 *   tokenize_cli check TOKENIZER_DIR CORPUS_DIR EXPECTED   compare; "N passed, N failed"
 *   tokenize_cli write-small DIR VOCAB_SIZE                tok_write_small + its config in DIR
 *   tokenize_cli encode TOKENIZER_DIR FILE                 print the ids of FILE (with BOS)
 */
#define _POSIX_C_SOURCE 200809L
#include "../runtime/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char  *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap     = cap ? 2 * cap : 4096;
            char *q = realloc(b, cap + 1);
            if (!q) {
                free(b);
                fclose(f);
                return NULL;
            }
            b = q;
        }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    fclose(f);
    b[n] = 0;
    *len = n;
    return b;
}

/* The text of an id for messages: its piece, or "?" */
static void show(const struct tok *t, int32_t id, char *out, size_t n) {
    size_t      len;
    const char *p = tok_piece(t, id, &len);
    if (!p) snprintf(out, n, "%d (no piece)", (int)id);
    else snprintf(out, n, "%d '%.*s'", (int)id, (int)(len > 40 ? 40 : len), p);
}

static int has_fffd(const char *s, size_t n) {
    for (size_t i = 0; i + 3 <= n; i++)
        if (memcmp(s + i, "\xEF\xBF\xBD", 3) == 0) return 1;
    return 0;
}

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

/* The oracle's E line ids of (name, add=1), kept for the decode checks. */
struct expect_ids {
    char     name[256];
    int32_t *ids;
    size_t   n;
};

static int check(const char *tokdir, const char *corpus, const char *expected) {
    char        err[512];
    struct tok *t;
    if (tok_load_dir(tokdir, &t, err, sizeof err) != 0) {
        fprintf(stderr, "tokenize_cli: %s\n", err);
        return 1;
    }
    size_t elen;
    char  *exp = slurp(expected, &elen);
    if (!exp) {
        fprintf(stderr, "tokenize_cli: cannot read %s\n", expected);
        tok_free(t);
        return 1;
    }
    int               passed = 0, failed = 0;
    struct expect_ids last   = {{0}, NULL, 0};
    for (char *line = strtok(exp, "\n"); line; line = strtok(NULL, "\n")) {
        char kind = line[0], name[256];
        int  flag, off = 0;
        if (sscanf(line + 1, " %255s %d%n", name, &flag, &off) != 2) {
            fprintf(stderr, "tokenize_cli: bad line in %s: %.60s\n", expected, line);
            failed++;
            continue;
        }
        const char *rest = line + 1 + off;
        char        path[1024];
        snprintf(path, sizeof path, "%s/%s", corpus, name);
        size_t tlen;
        char  *text = slurp(path, &tlen);
        if (!text) {
            fprintf(stderr, "tokenize_cli: cannot read %s\n", path);
            failed++;
            continue;
        }
        if (kind == 'E') {
            /* expected ids */
            size_t   cap = 16, n = 0;
            int32_t *want = malloc(cap * sizeof *want);
            char    *end;
            for (const char *p = rest; want;) {
                long v = strtol(p, &end, 10);
                if (end == p) break;
                if (n == cap) want = realloc(want, (cap *= 2) * sizeof *want);
                if (want) want[n++] = (int32_t)v;
                p = end;
            }
            int32_t *got = NULL;
            size_t   ng  = 0;
            int      ok  = want && tok_encode(t, text, tlen, flag, &got, &ng, err, sizeof err) == 0;
            if (!ok) fprintf(stderr, "FAIL encode %s add_special=%d: %s\n", name, flag, err);
            else {
                size_t i = 0;
                while (i < n && i < ng && want[i] == got[i]) i++;
                if (i < n || i < ng) {
                    char a[96] = "(end)", b[96] = "(end)";
                    if (i < n) show(t, want[i], a, sizeof a);
                    if (i < ng) show(t, got[i], b, sizeof b);
                    fprintf(stderr, "FAIL encode %s add_special=%d: first difference at position %zu of %zu/%zu: "
                                    "expected %s, got %s\n", name, flag, i, n, ng, a, b);
                    ok = 0;
                }
            }
            if (ok) passed++;
            else failed++;
            if (flag == 1) {
                free(last.ids);
                snprintf(last.name, sizeof last.name, "%s", name);
                last.ids = want;
                last.n   = n;
                want     = NULL;
            }
            free(want);
            free(got);
        } else if (kind == 'D') {
            /* decode the oracle's ids (not ours: decode is checked on its own) */
            size_t hl = strspn(rest + (*rest == ' '), "0123456789abcdef");
            const char *h = rest + (*rest == ' ');
            char       *want = malloc(hl / 2 + 1);
            for (size_t i = 0; want && i < hl / 2; i++) want[i] = (char)(hexval(h[2 * i]) * 16 + hexval(h[2 * i + 1]));
            char  *got = NULL;
            size_t ng  = 0;
            int    ok  = want && strcmp(last.name, name) == 0 &&
                     tok_decode(t, last.ids, last.n, flag, &got, &ng, err, sizeof err) == 0;
            if (ok && (ng != hl / 2 || memcmp(got, want, ng) != 0)) {
                size_t i = 0;
                while (i < ng && i < hl / 2 && got[i] == want[i]) i++;
                fprintf(stderr, "FAIL decode %s skip_special=%d: first difference at byte %zu of %zu/%zu\n", name, flag,
                        i, hl / 2, ng);
                ok = 0;
            } else if (!ok)
                fprintf(stderr, "FAIL decode %s: could not decode (%s)\n", name, err);
            /* the stream gives the same text (the corpus' byte runs are valid UTF-8 or the case
             * is known to differ: see tokenizer.h) */
            if (ok) {
                struct tok_stream *s;
                char  *cat = malloc(ng + 64);
                size_t nc  = 0;
                int    sok = cat && tok_stream_new(t, flag, &s, err, sizeof err) == 0;
                for (size_t i = 0; sok && i < last.n; i++) {
                    const char *p;
                    size_t      pl;
                    if (tok_stream_put(s, last.ids[i], &p, &pl, err, sizeof err) != 0 || nc + pl > ng + 32) sok = 0;
                    else memcpy(cat + nc, p, pl), nc += pl;
                }
                const char *p;
                size_t      pl;
                if (sok && tok_stream_flush(s, &p, &pl) == 0 && nc + pl <= ng + 32) memcpy(cat + nc, p, pl), nc += pl;
                if (sok) tok_stream_free(s);
                if (!sok || (!has_fffd(got, ng) && (nc != ng || memcmp(cat, got, ng) != 0))) {
                    fprintf(stderr, "FAIL stream decode %s skip_special=%d: the streamed text differs from decode\n",
                            name, flag);
                    ok = 0;
                }
                free(cat);
            }
            if (ok) passed++;
            else failed++;
            free(want);
            free(got);
        } else if (kind == 'R') {
            if (flag == 1) {
                /* the text HF saw: the file after the UTF-8 repair */
                const char *h  = rest + (*rest == ' ');
                size_t      hl = strspn(h, "0123456789abcdef") / 2;
                char       *want = malloc(hl + 1);
                for (size_t i = 0; want && i < hl; i++) want[i] = (char)(hexval(h[2 * i]) * 16 + hexval(h[2 * i + 1]));
                int32_t *ids = NULL;
                size_t   n = 0, ng = 0;
                char    *back = NULL;
                int      ok   = want && tok_encode(t, text, tlen, 0, &ids, &n, err, sizeof err) == 0 &&
                         tok_decode(t, ids, n, 0, &back, &ng, err, sizeof err) == 0 && ng == hl &&
                         memcmp(back, want, hl) == 0;
                free(want);
                if (ok) passed++;
                else {
                    failed++;
                    fprintf(stderr, "FAIL round trip %s: decode(encode(x)) != x, which HF guarantees here\n", name);
                }
                free(ids);
                free(back);
            }
        } else {
            fprintf(stderr, "tokenize_cli: unknown line kind '%c'\n", kind);
            failed++;
        }
        free(text);
    }
    free(last.ids);
    free(exp);
    tok_free(t);
    printf("tokenizer oracle (%s): %d passed, %d failed\n", tokdir, passed, failed);
    return failed ? 1 : 0;
}

int main(int argc, char **argv) {
    char err[512];
    if (argc == 5 && strcmp(argv[1], "check") == 0) return check(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "write-small") == 0) {
        char p[1024], c[1024];
        snprintf(p, sizeof p, "%s/tokenizer.json", argv[2]);
        snprintf(c, sizeof c, "%s/tokenizer_config.json", argv[2]);
        int v = atoi(argv[3]);
        if (tok_write_small(p, v, err, sizeof err) != 0 || tok_write_small_config(c, v, err, sizeof err) != 0) {
            fprintf(stderr, "tokenize_cli: %s\n", err);
            return 1;
        }
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "encode") == 0) {
        struct tok *t;
        size_t      len;
        char       *text = slurp(argv[3], &len);
        if (!text || tok_load_dir(argv[2], &t, err, sizeof err) != 0) {
            fprintf(stderr, "tokenize_cli: %s\n", text ? err : "cannot read the file");
            free(text);
            return 1;
        }
        int32_t *ids;
        size_t   n;
        if (tok_encode(t, text, len, 1, &ids, &n, err, sizeof err) != 0) {
            fprintf(stderr, "tokenize_cli: %s\n", err);
            return 1;
        }
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
        printf("\n");
        free(ids);
        free(text);
        tok_free(t);
        return 0;
    }
    fprintf(stderr, "usage: tokenize_cli check TOKENIZER_DIR CORPUS_DIR EXPECTED\n"
                    "       tokenize_cli write-small DIR VOCAB_SIZE\n"
                    "       tokenize_cli encode TOKENIZER_DIR FILE\n");
    return 2;
}
