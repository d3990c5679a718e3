/* SPDX-License-Identifier: MIT
 *
 * tokenizer_write.c -- tok_write_small: a small but real tokenizer.json of the MiniCPM4 family for
 * generated test checkpoints (`infllm model-init`). Its pieces and merges are learned here, at
 * write time, by plain BPE training on a short built-in English text, so they look like a real
 * vocabulary ("▁t", "he", "▁the", ...) and are consistent by construction: both halves of every
 * merge and its result are pieces of the vocabulary, as the tokenizers library requires.
 */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer.h"
#include "errmsg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Our own words; what matters is that they are ordinary English prose. */
static const char train_text[] =
    "The model reads the whole prompt first, then it writes the answer one token at a time. "
    "Each new token looks back at the tokens before it, and the attention of a long context "
    "is the part that costs the most. With sparse attention the model picks the blocks that "
    "matter for the current token and reads only those, so a long document can be read in a "
    "fraction of the time. The selection is made from compressed keys: every block of the "
    "context is summarised, the query is compared with the summaries, and the best blocks "
    "are kept together with the first block and the local window. When the context is short "
    "the model simply uses dense attention, because there is nothing to gain. This is the "
    "idea of the switchable design: the same weights serve both the short and the long case, "
    "and the runtime decides which path to take from the length of the context. A good "
    "tokenizer helps too: it turns common words into single tokens, and it falls back to "
    "bytes for anything it has never seen, so that no text is ever lost. Then the prompt "
    "is shorter, the cache is smaller and the answer comes sooner. There are other things "
    "to test in a runtime like this one: that the numbers are right, that errors are clear, "
    "and that nothing breaks when the input is strange or very long.";

static const char *const minicpm_added[8] = {
    "<|im_end|>",        "<|im_start|>",   "<|tool_call|>",  "<|execute_start|>",
    "<|execute_end|>",   "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
};

#define N_BASE 259 /* <unk> <s> </s> + 256 byte pieces */

struct piece {
    char s[64];
};

struct vocab_build {
    struct piece *pieces; /* learned pieces, ids N_BASE + i */
    int           n, cap;
    int          (*merges)[2]; /* indices into pieces */
    int           n_merges;
};

static int find_piece(const struct vocab_build *vb, const char *s) {
    for (int i = 0; i < vb->n; i++)
        if (strcmp(vb->pieces[i].s, s) == 0) return i;
    return -1;
}

static size_t cp_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* The training words: the legacy normalisation of the text (a leading "▁", spaces -> "▁"),
 * split before each "▁", each word a list of piece indices. */
struct words {
    int *sym;   /* concatenated symbol sequences, -1 separates words */
    int  n;
};

static int learn(struct vocab_build *vb, int budget) {
    static const char mark[] = "\xE2\x96\x81"; /* U+2581 */
    /* character inventory, by frequency (ties: byte order), as many as 2/3 of the budget */
    struct {
        char c[5];
        int  count;
    } chars[128];
    int n_chars = 0;
    const char *p = train_text;
    int n_syms = 1; /* the leading mark */
    for (; *p; p += cp_len((unsigned char)*p)) {
        char c[5] = {0};
        if (*p == ' ') memcpy(c, mark, 3);
        else memcpy(c, p, cp_len((unsigned char)*p));
        int i = 0;
        while (i < n_chars && strcmp(chars[i].c, c) != 0) i++;
        if (i == n_chars) {
            if (n_chars == 128) continue;
            memcpy(chars[n_chars].c, c, 5);
            chars[n_chars++].count = 0;
        }
        chars[i].count++;
        n_syms++;
    }
    for (int i = 1; i < n_chars; i++) /* insertion sort: few items */
        for (int j = i; j > 0 && (chars[j].count > chars[j - 1].count ||
                                  (chars[j].count == chars[j - 1].count && strcmp(chars[j].c, chars[j - 1].c) < 0));
             j--) {
            char tmp[5];
            int  tc = chars[j].count;
            memcpy(tmp, chars[j].c, 5);
            memcpy(chars[j].c, chars[j - 1].c, 5);
            chars[j].count = chars[j - 1].count;
            memcpy(chars[j - 1].c, tmp, 5);
            chars[j - 1].count = tc;
        }
    int take = budget - budget / 3;
    if (take > n_chars) take = n_chars;
    for (int i = 0; i < take; i++) {
        strcpy(vb->pieces[vb->n].s, chars[i].c);
        vb->n++;
    }
    /* the symbol stream: piece index per character, -1 for characters left out and between words */
    int *sym = malloc((size_t)(2 * n_syms + 2) * sizeof *sym);
    if (!sym) return -1;
    int ns = 0;
    sym[ns++] = find_piece(vb, mark);
    for (p = train_text; *p; p += cp_len((unsigned char)*p)) {
        char c[5] = {0};
        if (*p == ' ') {
            memcpy(c, mark, 3);
            sym[ns++] = -1; /* word boundary before each mark */
        } else
            memcpy(c, p, cp_len((unsigned char)*p));
        sym[ns++] = find_piece(vb, c);
    }
    /* merges: the most frequent adjacent pair (ties: the smaller (left, right) by text), counted
     * in a table indexed by piece pair; the pieces never exceed take + 400 */
    int  dim    = take + 401;
    int *counts = malloc((size_t)dim * (size_t)dim * sizeof *counts);
    if (!counts) {
        free(sym);
        return -1;
    }
    while (vb->n < budget && vb->n_merges < 400) {
        memset(counts, 0, (size_t)dim * (size_t)dim * sizeof *counts);
        for (int i = 0; i + 1 < ns; i++)
            if (sym[i] >= 0 && sym[i + 1] >= 0) counts[sym[i] * dim + sym[i + 1]]++;
        int best_a = -1, best_b = -1, best_count = 1;
        for (int i = 0; i + 1 < ns; i++) {
            int a = sym[i], b = sym[i + 1];
            if (a < 0 || b < 0) continue;
            if (strlen(vb->pieces[a].s) + strlen(vb->pieces[b].s) >= sizeof vb->pieces[0].s) continue;
            int count  = counts[a * dim + b];
            int better = count > best_count;
            if (!better && count == best_count && best_a >= 0) {
                int c = strcmp(vb->pieces[a].s, vb->pieces[best_a].s);
                better = c < 0 || (c == 0 && strcmp(vb->pieces[b].s, vb->pieces[best_b].s) < 0);
            }
            if (better) {
                best_a     = a;
                best_b     = b;
                best_count = count;
            }
        }
        if (best_a < 0) break;
        char   merged[64]; /* the pair's total length was checked above */
        size_t la = strlen(vb->pieces[best_a].s), lb = strlen(vb->pieces[best_b].s);
        memcpy(merged, vb->pieces[best_a].s, la);
        memcpy(merged + la, vb->pieces[best_b].s, lb + 1);
        int id = find_piece(vb, merged);
        if (id < 0) {
            id = vb->n++;
            strcpy(vb->pieces[id].s, merged);
        }
        vb->merges[vb->n_merges][0] = best_a;
        vb->merges[vb->n_merges][1] = best_b;
        vb->n_merges++;
        int w = 0;
        for (int i = 0; i < ns; i++) {
            if (i + 1 < ns && sym[i] == best_a && sym[i + 1] == best_b) {
                sym[w++] = id;
                i++;
            } else
                sym[w++] = sym[i];
        }
        ns = w;
    }
    free(counts);
    free(sym);
    return 0;
}

static void put_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04X", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static int has_added(int32_t vocab_size) { return vocab_size >= N_BASE + 8 + 16; }

static void put_added(FILE *f, int id, const char *content, int first) {
    fprintf(f, "%s\n    {\"id\": %d, \"content\": ", first ? "" : ",", id);
    put_json_string(f, content);
    fprintf(f, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
               "\"special\": true}");
}

int tok_write_small(const char *path, int32_t vocab_size, char *err, size_t errlen) {
    if (vocab_size < N_BASE)
        return rt_fail(err, errlen, "%s: vocab_size %d is too small for a byte-fallback tokenizer (need >= %d)", path,
                    (int)vocab_size, N_BASE);
    int                budget = vocab_size - N_BASE - (has_added(vocab_size) ? 8 : 0);
    struct vocab_build vb   = {0};
    int                rc   = -1;
    FILE              *f    = NULL;
    vb.cap                  = budget;
    vb.pieces               = calloc((size_t)budget + 1, sizeof *vb.pieces);
    vb.merges               = calloc(400, sizeof *vb.merges);
    if (!vb.pieces || !vb.merges) {
        rt_fail(err, errlen, "%s: out of memory", path);
        goto done;
    }
    if (budget > 0 && learn(&vb, budget) != 0) {
        rt_fail(err, errlen, "%s: out of memory", path);
        goto done;
    }
    f = fopen(path, "wb");
    if (!f) {
        rt_fail(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    fprintf(f, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    put_added(f, 0, "<unk>", 1);
    put_added(f, 1, "<s>", 0);
    put_added(f, 2, "</s>", 0);
    if (has_added(vocab_size))
        for (int i = 0; i < 8; i++) put_added(f, vocab_size - 8 + i, minicpm_added[i], 0);
    fprintf(f, "\n  ],\n"
               "  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": "
               "\"\xE2\x96\x81\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": "
               "\"\xE2\x96\x81\"}]},\n"
               "  \"pre_tokenizer\": null,\n"
               "  \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": "
               "\"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": "
               "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": "
               "0}}, {\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", "
               "\"type_id\": 1}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": "
               "[\"<s>\"]}}},\n"
               "  \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
               "{\"String\": \"\xE2\x96\x81\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": "
               "\"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},\n"
               "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": \"<unk>\",\n"
               "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
               "    \"fuse_unk\": true,\n    \"byte_fallback\": true,\n    \"vocab\": {\n"
               "      \"<unk>\": 0,\n      \"<s>\": 1,\n      \"</s>\": 2");
    for (int b = 0; b < 256; b++) fprintf(f, ",\n      \"<0x%02X>\": %d", b, 3 + b);
    for (int i = 0; i < vb.n; i++) {
        fprintf(f, ",\n      ");
        put_json_string(f, vb.pieces[i].s);
        fprintf(f, ": %d", N_BASE + i);
    }
    fprintf(f, "\n    },\n    \"merges\": [");
    for (int i = 0; i < vb.n_merges; i++) {
        char m[130];
        snprintf(m, sizeof m, "%s %s", vb.pieces[vb.merges[i][0]].s, vb.pieces[vb.merges[i][1]].s);
        fprintf(f, "%s\n      ", i ? "," : "");
        put_json_string(f, m);
    }
    fprintf(f, "\n    ]\n  }\n}\n");
    if (ferror(f)) {
        rt_fail(err, errlen, "%s: write error", path);
        goto done;
    }
    rc = 0;
done:
    if (f && (ferror(f) | (fclose(f) != 0)) && rc == 0) rc = rt_fail(err, errlen, "%s: write error", path);
    free(vb.pieces);
    free(vb.merges);
    return rc;
}

int tok_write_small_config(const char *path, int32_t vocab_size, char *err, size_t errlen) {
    FILE *f = fopen(path, "wb");
    if (!f) return rt_fail(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    fprintf(f,
            "{\n  \"add_bos_token\": true,\n  \"add_eos_token\": false,\n  \"bos_token\": \"<s>\",\n"
            "  \"eos_token\": \"%s\",\n  \"unk_token\": \"<unk>\",\n  \"pad_token\": null,\n"
            "  \"legacy\": true,\n  \"clean_up_tokenization_spaces\": false,\n"
            "  \"tokenizer_class\": \"LlamaTokenizer\",\n  \"model_max_length\": 1000000000000000019884624838656\n}\n",
            has_added(vocab_size) ? "<|im_end|>" : "</s>");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return rt_fail(err, errlen, "%s: write error", path);
    return 0;
}
