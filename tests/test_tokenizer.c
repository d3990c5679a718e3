/* SPDX-License-Identifier: MIT
 *
 * test_tokenizer.c -- the tokenizer's own rules (runtime/tokenizer.h) on hand-made tokenizer.json
 * texts and on tok_write_small's: merge order and ties, byte fallback, unk fusing, added tokens,
 * both Llama conversions, decode (byte runs, invalid runs, Strip), the stream (never half a
 * character), loader errors, and speed on a 100 KB prompt. Exactness against the Hugging Face
 * library on a real vocabulary is tests/tokenizer/check.sh's job.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "../runtime/chat.h"
#include "../runtime/sample.h"
#include "../runtime/tokenizer.h"

#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A tokenizer.json around a vocabulary, merges and extra top-level members. */
static struct tok *make(const char *vocab, const char *merges, const char *extra, const char *model_extra, char *err,
                        size_t errlen) {
    char json[8192];
    snprintf(json, sizeof json,
             "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {%s}, \"merges\": [%s]%s%s}%s%s}",
             vocab, merges, model_extra ? ", " : "", model_extra ? model_extra : "", extra ? ", " : "",
             extra ? extra : "");
    struct tok *t = NULL;
    tok_load_buffer(json, strlen(json), NULL, 0, "test", &t, err, errlen);
    return t;
}

static int encode_is(const struct tok *t, const char *text, int add, const int32_t *want, size_t n) {
    int32_t *ids;
    size_t   got;
    char     err[256];
    if (tok_encode(t, text, strlen(text), add, &ids, &got, err, sizeof err) != 0) {
        TH_CHECK(0, "encode '%s': %s", text, err);
        return 0;
    }
    int ok = got == n && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!ok) {
        char buf[512];
        int  k = 0;
        for (size_t i = 0; i < got && k < 400; i++) k += snprintf(buf + k, sizeof buf - (size_t)k, " %d", (int)ids[i]);
        buf[k] = 0;
        TH_CHECK(0, "encode '%s' gave [%s ] (%zu ids, expected %zu)", text, buf, got, n);
    }
    free(ids);
    return ok;
}

static int decode_is(const struct tok *t, const int32_t *ids, size_t n, int skip, const char *want) {
    char  *s;
    size_t len;
    char   err[256];
    if (tok_decode(t, ids, n, skip, &s, &len, err, sizeof err) != 0) return TH_CHECK(0, "decode: %s", err);
    int ok = len == strlen(want) && memcmp(s, want, len) == 0;
    TH_CHECK(ok, "decode gave '%s', expected '%s'", s, want);
    free(s);
    return ok;
}

static const char legacy[] =
    "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xE2\x96\x81\"},"
    " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xE2\x96\x81\"}]},"
    " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": "
    "\"\xE2\x96\x81\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": "
    "\"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}";

static void test_merges(void) {
    if (!th_case("TOK_MERGE_ORDER")) return;
    char err[256];
    /* "abc": (b,c) has the lower rank, so b+c first, then a+bc; ties go to the leftmost pair */
    struct tok *t = make("\"<unk>\": 0, \"a\": 1, \"b\": 2, \"c\": 3, \"ab\": 4, \"bc\": 5, \"abc\": 6, \"aa\": 7",
                         "\"b c\", \"a b\", \"a bc\", \"a a\"", NULL, NULL, err, sizeof err);
    if (!TH_CHECK(t != NULL, "load: %s", err)) return;
    encode_is(t, "abc", 0, (const int32_t[]){6}, 1);
    encode_is(t, "abab", 0, (const int32_t[]){4, 4}, 2);
    encode_is(t, "aaa", 0, (const int32_t[]){7, 1}, 2); /* leftmost on a tie */
    encode_is(t, "", 1, NULL, 0);
    encode_is(t, "axyb", 0, (const int32_t[]){1, 0, 0, 2}, 4); /* no fuse_unk: one unk per code point */
    tok_free(t);
}

static void test_unk(void) {
    if (!th_case("TOK_UNK_FUSE")) return;
    char        err[256];
    struct tok *t = make("\"<unk>\": 0, \"a\": 1", "", NULL, "\"fuse_unk\": true", err, sizeof err);
    if (!TH_CHECK(t != NULL, "load: %s", err)) return;
    encode_is(t, "axyza\xC3\xA9", 0, (const int32_t[]){1, 0, 1, 0}, 4);
    tok_free(t);
    t = make("\"<unk>\": 0, \"a\": 1", "", NULL, "\"fuse_unk\": false", err, sizeof err);
    if (t) encode_is(t, "axy", 0, (const int32_t[]){1, 0, 0}, 3);
    tok_free(t);
}

static void test_small(void) {
    if (!th_case("TOK_SMALL")) return;
    const char *dir = "build/test_tokenizer_small";
    char        p[256], c[256], err[512];
    snprintf(p, sizeof p, "%s.json", dir);
    snprintf(c, sizeof c, "%s_config.json", dir);
    TH_CHECK(tok_write_small(p, 100, err, sizeof err) != 0 && strstr(err, "too small"), "vocab 100 refused");
    if (!TH_CHECK(tok_write_small(p, 320, err, sizeof err) == 0 && tok_write_small_config(c, 320, err, sizeof err) == 0,
                  "write: %s", err))
        return;
    struct tok *t;
    if (!TH_CHECK(tok_load(p, c, &t, err, sizeof err) == 0, "load: %s", err)) return;
    TH_CHECK(tok_n_vocab(t) == 320 && tok_bos(t) == 1 && tok_unk(t) == 0, "vocab %d bos %d", tok_n_vocab(t), tok_bos(t));
    TH_CHECK(tok_eos(t) == 312 && tok_find(t, "<|im_start|>", 12) == 313 && tok_find(t, "<|fim_suffix|>", 14) == 319,
             "added tokens at the top: eos %d", tok_eos(t));
    TH_CHECK(tok_adds_bos(t) && !tok_adds_eos(t) && tok_is_special(t, 313) && !tok_is_special(t, 300), "flags");
    size_t      len;
    const char *piece = tok_piece(t, 3 + 0x0A, &len);
    TH_CHECK(piece && len == 6 && memcmp(piece, "<0x0A>", 6) == 0, "byte piece of newline");
    /* special tokens glued to text; the segment after a special token gets its own "▁" */
    int32_t *ids;
    size_t   n;
    const char text[] = "<|im_start|>user\nhi \xF0\x9F\x98\x80<|im_end|>";
    if (TH_CHECK(tok_encode(t, text, strlen(text), 1, &ids, &n, err, sizeof err) == 0, "%s", err)) {
        TH_CHECK(n > 6 && ids[0] == 1 && ids[1] == 313 && ids[n - 1] == 312, "BOS, im_start ... im_end");
        int bytes = 0;
        for (size_t i = 0; i < n; i++) bytes += ids[i] >= 3 && ids[i] < 259;
        TH_CHECK(bytes >= 5, "the emoji and the newline fall back to bytes (%d byte pieces)", bytes);
        char *back;
        if (tok_decode(t, ids, n, 1, &back, &len, err, sizeof err) == 0) {
            TH_CHECK(strcmp(back, "user\nhi \xF0\x9F\x98\x80") == 0, "decode skipping specials: '%s'", back);
            free(back);
        }
        if (tok_decode(t, ids, n, 0, &back, &len, err, sizeof err) == 0) {
            TH_CHECK(strcmp(back, "<s><|im_start|> user\nhi \xF0\x9F\x98\x80<|im_end|>") == 0, "decode: '%s'", back);
            free(back);
        }
        free(ids);
    }
    /* the Strip of one leading space, and ids without a piece */
    decode_is(t, (const int32_t[]){3 + ' ', 3 + 'a'}, 2, 0, "a");
    decode_is(t, (const int32_t[]){3 + 0xE4, 3 + 0xB8}, 2, 0, "\xEF\xBF\xBD\xEF\xBF\xBD"); /* invalid run */
    decode_is(t, (const int32_t[]){3 + 0xE4, 3 + 0xB8, 3 + 0xAD}, 3, 0, "\xE4\xB8\xAD");
    decode_is(t, (const int32_t[]){3 + 'x', 5000, -1}, 3, 0, "x<unk><unk>");
    decode_is(t, (const int32_t[]){3 + 'x', 5000}, 2, 1, "x");
    tok_free(t);
    remove(p);
    remove(c);
}

static void test_stream(void) {
    if (!th_case("TOK_STREAM")) return;
    char        err[512];
    const char *p = "build/test_tokenizer_stream.json";
    struct tok *t;
    if (tok_write_small(p, 1000, err, sizeof err) != 0 || tok_load(p, NULL, &t, err, sizeof err) != 0) {
        TH_CHECK(0, "%s", err);
        return;
    }
    remove(p);
    const char text[] = "Streaming \xE4\xB8\xAD\xE6\x96\x87 and \xF0\x9F\x98\x80 emoji,\n\ttabs and  spaces.";
    int32_t   *ids;
    size_t     n, len;
    if (tok_encode(t, text, strlen(text), 1, &ids, &n, err, sizeof err) != 0) return;
    struct tok_stream *s;
    char               cat[512];
    size_t             nc = 0;
    int                partial = 0;
    if (!TH_CHECK(tok_stream_new(t, 1, &s, err, sizeof err) == 0, "%s", err)) return;
    for (size_t i = 0; i < n; i++) {
        const char *out;
        if (tok_stream_put(s, ids[i], &out, &len, err, sizeof err) != 0) break;
        /* every piece the stream gives is whole UTF-8 */
        for (size_t j = 0; j < len;) {
            unsigned char c = (unsigned char)out[j];
            size_t        k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            partial += j + k > len;
            j += k;
        }
        memcpy(cat + nc, out, len);
        nc += len;
    }
    const char *out;
    tok_stream_flush(s, &out, &len);
    memcpy(cat + nc, out, len);
    nc += len;
    cat[nc] = 0;
    TH_CHECK(partial == 0, "a streamed piece ended inside a character");
    TH_CHECK(strcmp(cat, text) == 0, "stream gave '%s'", cat);
    /* an unfinished character is held, then U+FFFD per byte at the flush */
    tok_stream_put(s, 3 + 0xE4, &out, &len, err, sizeof err);
    TH_CHECK(len == 0, "first byte of a 3-byte character is held");
    tok_stream_put(s, 3 + 0xB8, &out, &len, err, sizeof err);
    TH_CHECK(len == 0, "second byte held");
    tok_stream_flush(s, &out, &len);
    TH_CHECK(len == 6 && memcmp(out, "\xEF\xBF\xBD\xEF\xBF\xBD", 6) == 0, "flush: two U+FFFD");
    tok_stream_put(s, 3 + 0xFF, &out, &len, err, sizeof err);
    TH_CHECK(len == 3 && memcmp(out, "\xEF\xBF\xBD", 3) == 0, "a byte that starts nothing: U+FFFD at once");
    tok_stream_free(s);
    tok_stream_free(NULL);
    free(ids);
    tok_free(t);
}

static void test_metaspace(void) {
    if (!th_case("TOK_METASPACE")) return;
    char        err[256];
    const char *vocab = "\"<unk>\": 0, \"<s>\": 1, \"\xE2\x96\x81\": 2, \"a\": 3, \"\xE2\x96\x81" "a\": 4, \"b\": 5";
    const char *merges = "[\"\xE2\x96\x81\", \"a\"]";
    char        extra[1024];
    snprintf(extra, sizeof extra,
             "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false}],"
             " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\", \"prepend_scheme\": "
             "\"first\", \"split\": false}");
    struct tok *t = make(vocab, merges, extra, NULL, err, sizeof err);
    if (!TH_CHECK(t != NULL, "load: %s", err)) return;
    /* "first": only the segment at offset 0 gets the prefix; " a" already starts with "▁" */
    encode_is(t, "a<s>a", 0, (const int32_t[]){4, 1, 3}, 3);
    encode_is(t, " a", 0, (const int32_t[]){4}, 1);
    encode_is(t, "ab a", 0, (const int32_t[]){4, 5, 4}, 3);
    tok_free(t);
    /* legacy: every segment, even after a special token, gets "▁"; " a" gets two */
    snprintf(extra, sizeof extra,
             "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false}], %s",
             legacy);
    t = make(vocab, merges, extra, NULL, err, sizeof err);
    if (!TH_CHECK(t != NULL, "load: %s", err)) return;
    encode_is(t, "a<s>a", 0, (const int32_t[]){4, 1, 4}, 3);
    encode_is(t, " a", 0, (const int32_t[]){2, 4}, 2);
    tok_free(t);
}

struct bad_tok {
    const char *json;
    const char *what;
};

static void test_load_errors(void) {
    static const struct bad_tok cases[] = {
        {"[]", "top level must be an object"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "\"WordPiece\" is not supported"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", "piece \"b\" is not in the vocabulary"},
        {"{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", "piece \"ab\" is not in the vocabulary"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a  a\"]}}", "not two pieces separated by one space"},
        {"{\"model\": {\"vocab\": {\"a\": -1}, \"merges\": []}}", "id must be an integer"},
        {"{\"model\": {\"vocab\": {\"a\": 99999999}, \"merges\": []}}", "id must be an integer"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": \"<unk>\"}}", "unk_token \"<unk>\" is not"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.1}}", "dropout is not supported"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"NFKC\"}}", "\"NFKC\" is not supported"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": "
         "{\"Regex\": \" +\"}, \"content\": \" \"}}", "not a regex"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}", "\"ByteLevel\" is not supported"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": [{\"id\": 1}]}", "non-empty string \"content\""},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"WordPiece\"}}", "\"WordPiece\" is not supported here"},
        {"{\"model\": {\"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}", "duplicate key \"a\""},
        {"{\"model\": {\"vocab\": {}, \"merges\": []}}", "empty vocabulary"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (!th_case("TOK_LOAD_ERROR(%zu)", i)) continue;
        char        err[512] = "";
        struct tok *t        = (struct tok *)1;
        int         rc = tok_load_buffer(cases[i].json, strlen(cases[i].json), NULL, 0, "bad.json", &t, err, sizeof err);
        TH_CHECK(rc == -1 && t == NULL, "accepted");
        TH_CHECK(strncmp(err, "bad.json: ", 10) == 0 && strstr(err, cases[i].what), "message '%s' should say '%s'", err,
                 cases[i].what);
    }
    if (th_case("TOK_LOAD_FILES")) {
        char        err[512];
        struct tok *t;
        TH_CHECK(tok_load_dir("/nonexistent", &t, err, sizeof err) != 0 && strstr(err, "/nonexistent/tokenizer.json"),
                 "missing dir: %s", err);
        tok_free(NULL);
    }
}

static void test_speed(void) {
    if (!th_case("TOK_SPEED_100KB")) return;
    char        err[512];
    const char *p = "build/test_tokenizer_speed.json";
    struct tok *t;
    if (tok_write_small(p, 2000, err, sizeof err) != 0 || tok_load(p, NULL, &t, err, sizeof err) != 0) {
        TH_CHECK(0, "%s", err);
        return;
    }
    remove(p);
    /* prose (one long word for the legacy normalizer) and a pathological run of one letter */
    const char *inputs[2] = {"The model reads the whole prompt first, then writes the answer. ", "e"};
    for (int k = 0; k < 2; k++) {
        size_t n = 100 * 1024, m = strlen(inputs[k]);
        char  *s = malloc(n + 1);
        for (size_t i = 0; i < n; i++) s[i] = inputs[k][i % m];
        s[n]        = 0;
        int32_t *ids;
        size_t   n_ids;
        double   t0 = now();
        int      rc = tok_encode(t, s, n, 1, &ids, &n_ids, err, sizeof err);
        double   dt = now() - t0;
        printf("  100 KB (%s): %zu ids in %.3f s\n", k ? "one letter" : "prose", n_ids, dt);
        /* a generous bound: sanitizer builds are several times slower than -O2 */
        TH_CHECK(rc == 0 && dt < 2.0, "encode of 100 KB took %.3f s", dt);
        char  *back;
        size_t bl;
        if (rc == 0 && tok_decode(t, ids, n_ids, 1, &back, &bl, err, sizeof err) == 0) {
            TH_CHECK(bl == n && memcmp(back, s, n) == 0, "round trip of 100 KB");
            free(back);
        }
        if (rc == 0) free(ids);
        free(s);
    }
    tok_free(t);
}

/* ---- sampling and the chat template (runtime/sample.h, runtime/chat.h) ---- */

static void test_sample(void) {
    if (!th_case("SAMPLE")) return;
    char                     err[256];
    struct rt_sampler       *s;
    struct rt_sampler_params p = rt_sampler_params_default();
    float logits[6] = {1.0f, 3.0f, NAN, 3.0f, -INFINITY, 2.0f};
    if (!TH_CHECK(rt_sampler_new(&p, 6, &s, err, sizeof err) == 0, "%s", err)) return;
    TH_CHECK(rt_sample(s, logits) == 1, "greedy: the first of the tied maxima, NaN ignored");
    float none[2] = {NAN, -INFINITY};
    rt_sampler_free(s);
    rt_sampler_new(&p, 2, &s, err, sizeof err);
    TH_CHECK(rt_sample(s, none) == -1, "no finite logit: -1");
    rt_sampler_free(s);
    p.temperature = -1;
    TH_CHECK(rt_sampler_new(&p, 6, &s, err, sizeof err) != 0 && strstr(err, "temperature"), "bad temperature");
    p.temperature = 1, p.top_p = 0;
    TH_CHECK(rt_sampler_new(&p, 6, &s, err, sizeof err) != 0 && strstr(err, "top_p"), "bad top_p");
    /* seeded draws: reproducible, and frequencies follow softmax(logits / T) */
    float big[1000];
    for (int i = 0; i < 1000; i++) big[i] = (float)(i % 7) * 0.5f + (float)sin(i) * 3.0f;
    int32_t a[300], b[300];
    p = rt_sampler_params_default();
    p.temperature = 0.9, p.top_p = 0.9, p.top_k = 40, p.seed = 42;
    for (int round = 0; round < 2; round++) {
        rt_sampler_new(&p, 1000, &s, err, sizeof err);
        for (int i = 0; i < 300; i++) (round ? b : a)[i] = rt_sample(s, big);
        rt_sampler_free(s);
    }
    TH_CHECK(memcmp(a, b, sizeof a) == 0, "the same seed draws the same tokens");
    float two[2] = {0.0f, (float)log(3.0)};
    p = rt_sampler_params_default();
    p.temperature = 1, p.seed = 5;
    rt_sampler_new(&p, 2, &s, err, sizeof err);
    int ones = 0;
    for (int i = 0; i < 20000; i++) ones += rt_sample(s, two) == 1;
    rt_sampler_free(s);
    TH_CHECK(fabs(ones / 20000.0 - 0.75) < 0.015, "P(1) = %.4f, expected 0.75", ones / 20000.0);
    p.top_p = 0.5; /* the head with mass >= 0.5 is token 1 alone */
    rt_sampler_new(&p, 2, &s, err, sizeof err);
    ones = 0;
    for (int i = 0; i < 200; i++) ones += rt_sample(s, two) == 1;
    rt_sampler_free(s);
    TH_CHECK(ones == 200, "top_p 0.5 keeps only the top token (%d/200)", ones);
    float huge[3] = {1e30f, 1e30f, -1e30f};
    p.top_p = 1;
    rt_sampler_new(&p, 3, &s, err, sizeof err);
    int32_t t = rt_sample(s, huge);
    TH_CHECK(t == 0 || t == 1, "huge logits: no overflow (%d)", (int)t);
    rt_sampler_free(s);
}

static void test_chat(void) {
    if (!th_case("CHAT_TEMPLATE")) return;
    char                    *out, err[256];
    size_t                   len;
    const struct rt_chat_msg m[3] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}};
    if (TH_CHECK(rt_chat_render(m, 3, 1, 0, &out, &len, err, sizeof err) == 0, "%s", err)) {
        const char *want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                           "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>assistant\n";
        TH_CHECK(strcmp(out, want) == 0 && len == strlen(want), "ChatML: '%s'", out);
        free(out);
    }
    if (TH_CHECK(rt_chat_render(m + 1, 1, 1, 1, &out, &len, err, sizeof err) == 0, "%s", err)) {
        TH_CHECK(strcmp(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n") == 0,
                 "empty think block: '%s'", out);
        free(out);
    }
    const struct rt_chat_msg bad = {"robot", "x"};
    TH_CHECK(rt_chat_render(&bad, 1, 1, 0, &out, &len, err, sizeof err) != 0 && strstr(err, "role"), "unknown role");
}

int main(int argc, char **argv) {
    th_init(argc, argv);
    test_merges();
    test_unk();
    test_small();
    test_stream();
    test_metaspace();
    test_load_errors();
    test_speed();
    test_sample();
    test_chat();
    return th_report();
}
