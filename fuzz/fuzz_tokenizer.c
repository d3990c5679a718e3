/* SPDX-License-Identifier: MIT
 *
 * fuzz_tokenizer.c -- libFuzzer target for the tokenizer (runtime/tokenizer.h). The input is a
 * tokenizer.json, optionally followed by "\n--text--\n" and a text: the tokenizer is loaded (or
 * refused with a message), the text encoded, the ids decoded at once and through the stream. The
 * whole input is also encoded and decoded with a fixed tokenizer from tok_write_small, whose
 * round trip must give back the text (after the UTF-8 repair of invalid bytes).
 */
#include "../runtime/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct tok *fixed;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char path[64], err[256];
    snprintf(path, sizeof path, "/tmp/fuzz_tokenizer_%d.json", (int)getpid());
    if (tok_write_small(path, 600, err, sizeof err) != 0 || tok_load(path, NULL, &fixed, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        abort();
    }
    remove(path);
    return 0;
}

static void exercise(const struct tok *t, const char *text, size_t len, int check_round_trip) {
    int32_t *ids = NULL;
    size_t   n   = 0;
    char     err[256];
    if (tok_encode(t, text, len, 1, &ids, &n, err, sizeof err) != 0) return;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(t)) __builtin_trap();
    char  *back = NULL;
    size_t bl;
    if (tok_decode(t, ids, n, 1, &back, &bl, err, sizeof err) == 0) {
        /* valid UTF-8 text without the MiniCPM special tokens' text comes back unchanged */
        int valid = 1;
        for (size_t i = 0; i < len && valid; i++) valid = (unsigned char)text[i] < 0x80 && text[i] != '<';
        if (check_round_trip && valid && (bl != len || memcmp(back, text, len) != 0)) __builtin_trap();
        free(back);
    }
    struct tok_stream *s;
    if (tok_stream_new(t, 0, &s, err, sizeof err) == 0) {
        const char *p;
        size_t      pl;
        for (size_t i = 0; i < n; i++) (void)tok_stream_put(s, ids[i], &p, &pl, err, sizeof err);
        (void)tok_stream_put(s, -5, &p, &pl, err, sizeof err);
        (void)tok_stream_flush(s, &p, &pl);
        tok_stream_free(s);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char sep[] = "\n--text--\n";
    const char       *d     = (const char *)data;
    size_t            jl    = size;
    const char       *text  = "Hello <s>world \xF0\x9F\x98\x80 \xFF";
    size_t            tl    = strlen(text);
    for (size_t i = 0; i + sizeof sep - 1 <= size; i++)
        if (memcmp(d + i, sep, sizeof sep - 1) == 0) {
            jl   = i;
            text = d + i + sizeof sep - 1;
            tl   = size - i - (sizeof sep - 1);
            break;
        }
    struct tok *t = NULL;
    char        err[256];
    if (tok_load_buffer(d, jl, NULL, 0, "fuzz", &t, err, sizeof err) == 0) {
        exercise(t, text, tl, 0);
        tok_free(t);
    } else if (t != NULL || strlen(err) == 0)
        __builtin_trap();
    exercise(fixed, d, size, 1);
    return 0;
}
