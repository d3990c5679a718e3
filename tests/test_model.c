/* SPDX-License-Identifier: MIT
 *
 * test_model.c -- the model runtime on tiny random checkpoints (runtime/model_init.h) written to
 * a temporary directory:
 *   - decode step by step == prefill logits, crossing dense_len (dense below, sparse above), for
 *     f32 and bf16 weights and GQA groups 1, 2, 4;
 *   - chunked prefill == one-shot; prefill's last row == forward's; thread counts give the same
 *     bits; truncate + re-append == the first append; forced dense vs forced sparse;
 *   - runtime errors (token out of range, context full) leave the caches as they were;
 *   - every loader error path: a corrupted config.json, safetensors file or sharded index gives
 *     a message naming the file and the key/tensor, never a crash (run under ASan/UBSan by
 *     `make check`); random mutations of a header only ever give a status.
 * Tolerances (the logits of two runs that differ only in f32 summation order): 2^-17·max|ref|
 * with an f32 KV cache, 2^-10·max|ref| with a bf16 one (a different f32 rounding can flip a
 * stored bf16 element by one ulp); derivation in tests/model_oracle/README.md.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include "../runtime/model.h"
#include "../runtime/model_init.h"
#include "../runtime/safetensors.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256]; /* the temporary directory */
static char err[2048];

/* ==== files ==== */

static void rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            rm_tree(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        remove(path);
    }
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0, *len = (size_t)n;
    return b;
}

static void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f) {
        if (len) fwrite(data, 1, len, f);
        fclose(f);
    }
}

static void copy_file(const char *from, const char *to) {
    size_t len;
    char  *b = read_all(from, &len);
    if (b) write_all(to, b, len);
    free(b);
}

/* A tiny checkpoint under root/name. kv_heads 0 / tied -1: the preset's. */
static const char *make_model(const char *name, int sparse, enum rt_wtype dt, int kv_heads, int tied,
                              int64_t shard_bytes) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    struct rt_config c;
    rt_init_preset("tiny", sparse, &c, err, sizeof err);
    if (kv_heads) c.num_key_value_heads = kv_heads;
    if (tied >= 0) c.tie_word_embeddings = tied;
    struct rt_init_options o = rt_init_options_default();
    o.dtype                  = dt;
    o.seed                   = 7;
    o.shard_bytes            = shard_bytes;
    if (rt_init_write(dir, &c, &o, err, sizeof err) != 0) TH_CHECK(0, "model-init: %s", err);
    return dir;
}

static struct rt_model *load(const char *dir, int attention, int threads) {
    struct rt_model_options o = rt_model_options_default();
    o.attention               = attention;
    o.n_threads               = threads;
    struct rt_model *m        = NULL;
    if (rt_model_load(dir, &o, &m, err, sizeof err) != 0) TH_CHECK(0, "load %s: %s", dir, err);
    return m;
}

/* ==== logits helpers ==== */

static int32_t *tokens(int64_t n) {
    int32_t *t = malloc(sizeof *t * (size_t)n);
    for (int64_t i = 0; i < n; i++) t[i] = (int32_t)th_int(0, 319);
    return t;
}

/* max|a-b| <= tol_rel * max|b| over n values; reports the first bad row */
static int close_rows(const float *a, const float *b, int64_t rows, int64_t V, double tol_rel, const char *what) {
    double big = 0, worst = 0;
    int64_t wrow = -1;
    for (int64_t i = 0; i < rows * V; i++) big = fmax(big, fabs(b[i]));
    for (int64_t i = 0; i < rows * V; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= worst)) worst = d, wrow = i / V;
    }
    return TH_CHECK(worst <= tol_rel * big, "%s: max|diff| %.3g at row %lld > %.3g (max|ref| %.3g)", what,
                    worst, (long long)wrow, tol_rel * big, big);
}

static double tol_of(const char *dtype) { return strcmp(dtype, "f32") == 0 ? ldexp(1, -17) : ldexp(1, -10); }

/* ==== numerics cases ==== */

static void case_decode_eq_prefill(const char *dtname, enum rt_wtype dt, int kv_heads) {
    if (!th_case("DECODE_EQ_PREFILL(dtype=%s,Hkv=%d,G=%d,n=200,dense_len=128)", dtname, kv_heads, 4 / kv_heads)) return;
    char name[64];
    snprintf(name, sizeof name, "dec_%s_%d", dtname, kv_heads);
    const char      *dir = make_model(name, 1, dt, kv_heads, -1, 0);
    struct rt_model *m   = load(dir, RT_ATTN_AUTO, 2);
    if (!m) return;
    const int64_t n = 200, V = rt_model_config(m)->vocab_size;
    int32_t *tok = tokens(n);
    float   *all = malloc(sizeof(float) * (size_t)(n * V)), *dec = malloc(sizeof(float) * (size_t)(n * V));
    TH_CHECK(rt_model_forward(m, tok, n, all, err, sizeof err) == 0, "forward: %s", err);
    TH_CHECK(rt_model_len(m) == n, "len %lld", (long long)rt_model_len(m));
    rt_model_reset(m);
    TH_CHECK(rt_model_len(m) == 0, "reset");
    for (int64_t i = 0; i < n; i++)
        if (!TH_CHECK(rt_model_decode(m, tok[i], dec + i * V, err, sizeof err) == 0, "decode %lld: %s", (long long)i, err)) break;
    close_rows(dec, all, n, V, tol_of(dtname), "decode vs one-shot prefill");
    /* the sparse rows really are sparse: a forced-dense model differs at the end */
    rt_model_free(m);
    free(tok), free(all), free(dec);
}

struct prog {
    int     calls;
    int64_t last;
};

static void on_progress(void *user, int64_t done, int64_t total) {
    struct prog *p = user;
    p->calls++;
    p->last = done;
    (void)total;
}

static void case_chunked(void) {
    if (!th_case("CHUNKED_EQ_ONESHOT(dtype=bf16,chunk=37,n=230)")) return;
    const char      *dir = make_model("chunk", 1, RT_W_BF16, 0, -1, 0);
    struct rt_model *m   = load(dir, RT_ATTN_AUTO, 0);
    if (!m) return;
    const int64_t n = 230, V = rt_model_config(m)->vocab_size, chunk = 37;
    int32_t *tok = tokens(n);
    float   *one = malloc(sizeof(float) * (size_t)(n * V)), *ch = malloc(sizeof(float) * (size_t)(n * V));
    float   *last = malloc(sizeof(float) * (size_t)V);
    rt_model_forward(m, tok, n, one, err, sizeof err);
    rt_model_reset(m);
    for (int64_t d = 0; d < n; d += chunk) {
        int64_t k = n - d < chunk ? n - d : chunk;
        TH_CHECK(rt_model_forward(m, tok + d, k, ch + d * V, err, sizeof err) == 0, "%s", err);
    }
    close_rows(ch, one, n, V, tol_of("bf16"), "chunked vs one-shot");
    /* prefill's last row is the chunked forward's last row (the head runs as a GEMV on one row
     * there, a GEMM on all rows here: another summation order) */
    rt_model_reset(m);
    struct prog pr = {0, 0};
    TH_CHECK(rt_model_prefill(m, tok, n, chunk, on_progress, &pr, last, err, sizeof err) == 0, "%s", err);
    close_rows(last, ch + (n - 1) * V, 1, V, tol_of("bf16"), "prefill's last row vs forward's");
    TH_CHECK(pr.calls == (n + chunk - 1) / chunk && pr.last == n, "progress: %d calls, last %lld", pr.calls,
             (long long)pr.last);
    TH_CHECK(rt_model_len(m) == n, "len after prefill %lld", (long long)rt_model_len(m));
    rt_model_free(m);
    free(tok), free(one), free(ch), free(last);
}

static void case_threads_truncate(void) {
    if (!th_case("THREADS_BITWISE_AND_TRUNCATE(dtype=f32,n=160)")) return;
    const char      *dir = make_model("thr", 1, RT_W_F32, 0, -1, 0);
    struct rt_model *m1 = load(dir, RT_ATTN_AUTO, 1), *m2 = load(dir, RT_ATTN_AUTO, 2);
    if (!m1 || !m2) return;
    const int64_t n = 160, V = rt_model_config(m1)->vocab_size;
    int32_t *tok = tokens(n);
    float   *a = malloc(sizeof(float) * (size_t)(n * V)), *b = malloc(sizeof(float) * (size_t)(n * V));
    rt_model_forward(m1, tok, n, a, err, sizeof err);
    rt_model_forward(m2, tok, n, b, err, sizeof err);
    TH_CHECK(memcmp(a, b, sizeof(float) * (size_t)(n * V)) == 0, "1 thread and 2 threads differ");
    /* truncate to 100 and append the same 60 tokens again: the same bits */
    TH_CHECK(rt_model_truncate(m2, 100, err, sizeof err) == 0, "%s", err);
    TH_CHECK(rt_model_len(m2) == 100, "len after truncate");
    rt_model_reset(m1);
    rt_model_forward(m1, tok, 100, a, err, sizeof err);
    rt_model_forward(m1, tok + 100, 60, a, err, sizeof err);
    rt_model_forward(m2, tok + 100, 60, b, err, sizeof err);
    TH_CHECK(memcmp(a, b, sizeof(float) * (size_t)(60 * V)) == 0, "truncate + append differs");
    TH_CHECK(rt_model_truncate(m2, 1000, err, sizeof err) != 0, "truncate past the length accepted");
    rt_model_free(m1), rt_model_free(m2);
    free(tok), free(a), free(b);
}

static void case_modes(void) {
    if (!th_case("DENSE_VS_SPARSE(dtype=f32,n=240)")) return;
    const char      *dir = make_model("modes", 1, RT_W_F32, 0, -1, 0);
    struct rt_model *md = load(dir, RT_ATTN_DENSE, 0), *ms = load(dir, RT_ATTN_SPARSE, 0);
    if (!md || !ms) return;
    TH_CHECK(rt_model_dense_len(ms) == -1 && rt_model_dense_len(md) > 1000000, "dense_len %lld / %lld",
             (long long)rt_model_dense_len(ms), (long long)rt_model_dense_len(md));
    const int64_t n = 240, V = rt_model_config(md)->vocab_size;
    int32_t *tok = tokens(n);
    float   *a = malloc(sizeof(float) * (size_t)(n * V)), *b = malloc(sizeof(float) * (size_t)(n * V));
    rt_model_forward(md, tok, n, a, err, sizeof err);
    rt_model_forward(ms, tok, n, b, err, sizeof err);
    /* positions < 128 see at most 8 blocks = the selection width: sparse selects all of them */
    close_rows(b, a, 128, V, tol_of("f32"), "sparse == dense below the selection width");
    double diff = 0;
    for (int64_t i = 200 * V; i < n * V; i++) diff = fmax(diff, fabs((double)a[i] - b[i]));
    TH_CHECK(diff > 1e-2, "sparse and dense agree at the end (%.3g): sparse did not run", diff);
    rt_model_free(md), rt_model_free(ms);
    free(tok), free(a), free(b);
}

static void case_runtime_errors(void) {
    if (!th_case("RUNTIME_ERRORS")) return;
    const char             *dir = make_model("rterr", 1, RT_W_F32, 0, -1, 0);
    struct rt_model_options o   = rt_model_options_default();
    o.max_context               = 64;
    struct rt_model *m          = NULL;
    if (!TH_CHECK(rt_model_load(dir, &o, &m, err, sizeof err) == 0, "%s", err)) return;
    int32_t *tok = tokens(80);
    float    lg[320];
    TH_CHECK(rt_model_prefill(m, tok, 10, 4, NULL, NULL, lg, err, sizeof err) == 0, "%s", err);
    tok[3] = 320;
    TH_CHECK(rt_model_prefill(m, tok, 10, 4, NULL, NULL, lg, err, sizeof err) != 0 && strstr(err, "vocabulary"),
             "token 320 accepted (%s)", err);
    TH_CHECK(rt_model_len(m) == 10, "len %lld after a refused prefill", (long long)rt_model_len(m));
    TH_CHECK(rt_model_decode(m, -1, lg, err, sizeof err) != 0, "token -1 accepted");
    tok[3] = 5;
    TH_CHECK(rt_model_prefill(m, tok, 60, 16, NULL, NULL, lg, err, sizeof err) != 0 && strstr(err, "exceed"),
             "context overflow accepted (%s)", err);
    TH_CHECK(rt_model_len(m) == 10, "len %lld after overflow", (long long)rt_model_len(m));
    TH_CHECK(rt_model_fill_synthetic(m, 54, 1, err, sizeof err) == 0 && rt_model_len(m) == 64, "synthetic fill: %s", err);
    TH_CHECK(rt_model_decode(m, 1, lg, err, sizeof err) != 0, "decode past the capacity accepted");
    rt_model_free(m);
    rt_model_free(NULL);
    free(tok);
    o.attention = 7;
    TH_CHECK(rt_model_load(dir, &o, &m, err, sizeof err) != 0 && m == NULL, "bad attention mode accepted");
}

/* generation_config.json (rt_gen_config_load): absent, every field, an id list, and refusals. */
static void case_gen_config(void) {
    if (!th_case("GENERATION_CONFIG")) return;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/genconf", root);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    mkdir(dir, 0700);
    struct rt_gen_config g;
    memset(&g, 0xab, sizeof g);
    TH_CHECK(rt_gen_config_load(dir, &g, err, sizeof err) == 0, "no file: %s", err);
    TH_CHECK(!g.has_temperature && !g.has_top_p && !g.has_top_k && !g.has_max_new && !g.do_sample_false && g.n_eos == 0,
             "no file set a field");
    const char *full = "{\"temperature\": 0.7, \"top_p\": 0.9, \"top_k\": 20, \"max_new_tokens\": 64, "
                       "\"do_sample\": false, \"eos_token_id\": [2, 73440]}";
    write_all(path, full, strlen(full));
    TH_CHECK(rt_gen_config_load(dir, &g, err, sizeof err) == 0, "full: %s", err);
    TH_CHECK(g.has_temperature && g.temperature == 0.7 && g.has_top_p && g.top_p == 0.9 && g.has_top_k &&
                 g.top_k == 20 && g.has_max_new && g.max_new == 64 && g.do_sample_false,
             "full: fields not read");
    TH_CHECK(g.n_eos == 2 && g.eos[0] == 2 && g.eos[1] == 73440, "full: eos list (%d ids)", g.n_eos);
    const char *one = "{\"eos_token_id\": 7, \"max_new_tokens\": -3}";
    write_all(path, one, strlen(one));
    TH_CHECK(rt_gen_config_load(dir, &g, err, sizeof err) == 0 && g.n_eos == 1 && g.eos[0] == 7 && !g.has_max_new &&
                 !g.has_temperature,
             "one id, ignored max_new_tokens: %s", err);
    const struct {
        const char *text, *want;
    } bad[] = {{"[1, 2]", "must be a JSON object"},
               {"{\"temperature\": -1}", "temperature"},
               {"{\"top_p\": 0}", "top_p"},
               {"{\"top_k\": 1.5}", "top_k"},
               {"{\"eos_token_id\": [1, \"x\"]}", "eos_token_id"},
               {"{\"top_p\": 0.5,}", "generation_config.json"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_all(path, bad[i].text, strlen(bad[i].text));
        err[0] = '\0';
        TH_CHECK(rt_gen_config_load(dir, &g, err, sizeof err) != 0 && strstr(err, bad[i].want),
                 "%s accepted or message \"%s\" lacks %s", bad[i].text, err, bad[i].want);
    }
}

/* ==== loader errors ==== */

/* The base checkpoint's tensors, sorted by data offset: what the variants start from. */
struct ent {
    char      name[96], dtype[16], shape[64], extra[64];
    long long b, e;
    int       drop;
};

static struct ent *base_ents;
static int64_t     base_n;
static const char *base_data;
static size_t      base_data_len;
static char       *base_file, *base_config;
static size_t      base_file_len, base_config_len;
static char        base_dir[512];

static int cmp_ent(const void *a, const void *b) {
    const struct ent *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b;
}

static int base_init(void) {
    snprintf(base_dir, sizeof base_dir, "%s", make_model("base", 1, RT_W_F32, 0, -1, 0));
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", base_dir);
    base_file = read_all(p, &base_file_len);
    snprintf(p, sizeof p, "%s/config.json", base_dir);
    base_config = read_all(p, &base_config_len);
    struct st_file f;
    if (!base_file || !base_config || st_parse(base_file, base_file_len, "base", &f, err, sizeof err) != 0) return -1;
    base_n    = f.n_tensors;
    base_ents = calloc((size_t)base_n, sizeof *base_ents);
    for (int64_t i = 0; i < base_n; i++) {
        const struct st_tensor *t = &f.tensors[i];
        struct ent             *e = &base_ents[i];
        snprintf(e->name, sizeof e->name, "%s", t->name);
        snprintf(e->dtype, sizeof e->dtype, "%s", st_dtype_name(t->dtype));
        if (t->ndim == 2) snprintf(e->shape, sizeof e->shape, "[%lld,%lld]", (long long)t->shape[0], (long long)t->shape[1]);
        else snprintf(e->shape, sizeof e->shape, "[%lld]", (long long)t->shape[0]);
        e->b = (long long)t->begin, e->e = (long long)t->end;
    }
    qsort(base_ents, (size_t)base_n, sizeof *base_ents, cmp_ent);
    base_data     = base_file + 8 + f.header_len;
    base_data_len = base_file_len - 8 - f.header_len;
    st_close(&f);
    return 0;
}

/* Writes dir/file from entries, the data (data_len bytes of the base, then `pad` zero bytes),
 * `head` inserted first in the header object; hlen_override > 0 replaces the length field. */
static void write_st(const char *path, const struct ent *e, int64_t n, const char *head, size_t data_len,
                     size_t pad, unsigned long long hlen_override) {
    size_t cap = 256 + (size_t)n * 300 + strlen(head), len = 0;
    char  *h   = malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{%s", head);
    int first = head[0] == 0;
    for (int64_t i = 0; i < n; i++) {
        if (e[i].drop) continue;
        len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%lld,%lld]%s}",
                                first ? "" : ",", e[i].name, e[i].dtype, e[i].shape, e[i].b, e[i].e, e[i].extra);
        first = 0;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    unsigned long long hl = hlen_override ? hlen_override : len;
    unsigned char      l8[8];
    for (int i = 0; i < 8; i++) l8[i] = (unsigned char)(hl >> (8 * i));
    FILE *f = fopen(path, "wb");
    fwrite(l8, 1, 8, f);
    fwrite(h, 1, len, f);
    fwrite(base_data, 1, data_len, f);
    for (size_t i = 0; i < pad; i++) fputc(0, f);
    fclose(f);
    free(h);
}

/* A fresh directory root/name holding the base config.json (or `config` when not NULL). */
static const char *variant_dir(const char *name, const char *config) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    mkdir(dir, 0777);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (config) write_all(p, config, strlen(config));
    else write_all(p, base_config, base_config_len);
    return dir;
}

/* Loading dir must fail with every one of the substrings in its message. */
static void expect_fail(const char *dir, const char *want1, const char *want2) {
    struct rt_model *m = (struct rt_model *)&m; /* must come back NULL */
    err[0]             = 0;
    int rc             = rt_model_load(dir, NULL, &m, err, sizeof err);
    TH_CHECK(rc != 0 && m == NULL, "loaded: expected an error mentioning '%s'", want1);
    if (rc == 0) rt_model_free(m);
    TH_CHECK(strstr(err, want1) != NULL, "message '%s' lacks '%s'", err, want1);
    if (want2) TH_CHECK(strstr(err, want2) != NULL, "message '%s' lacks '%s'", err, want2);
}

static struct ent *ents_copy(void) {
    struct ent *e = malloc(sizeof *e * (size_t)base_n);
    memcpy(e, base_ents, sizeof *e * (size_t)base_n);
    return e;
}

static struct ent *find(struct ent *e, const char *name) {
    for (int64_t i = 0; i < base_n; i++)
        if (strcmp(e[i].name, name) == 0) return &e[i];
    return NULL;
}

#define QPROJ "model.layers.1.self_attn.q_proj.weight"

static void st_case(const char *name, void (*mutate)(struct ent *e, size_t *data_len, size_t *pad, char *head,
                                                     unsigned long long *hl), const char *want1, const char *want2) {
    if (!th_case("LOAD_ERROR(safetensors: %s)", name)) return;
    const char *dir = variant_dir(name, NULL);
    struct ent *e   = ents_copy();
    size_t      data_len = base_data_len, pad = 0;
    char        head[512] = "";
    unsigned long long hl = 0;
    mutate(e, &data_len, &pad, head, &hl);
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, e, base_n, head, data_len, pad, hl);
    expect_fail(dir, want1, want2);
    free(e);
}

static void m_hlen_past(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)e, (void)dl, (void)pad, (void)head;
    *hl = 1u << 24;
}
static void m_hlen_huge(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)e, (void)dl, (void)pad, (void)head;
    *hl = 0xFFFFFFFFFFFFFFF0ull;
}
static void m_overlap(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    e[3].b -= 4, e[3].e -= 4;
}
static void m_past_end(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)e, (void)pad, (void)head, (void)hl;
    *dl -= 4;
}
static void m_hole(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)head, (void)hl;
    e[base_n - 1].b += 4, e[base_n - 1].e += 4;
    *pad = 4;
}
static void m_uncovered(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)e, (void)dl, (void)head, (void)hl;
    *pad = 8;
}
static void m_size(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    snprintf(find(e, QPROJ)->shape, 64, "[64,63]");
}
static void m_dtype(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    snprintf(find(e, QPROJ)->dtype, 16, "I32");
}
static void m_unknown_dtype(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    snprintf(find(e, QPROJ)->dtype, 16, "F42");
}
static void m_shape(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    snprintf(find(e, QPROJ)->shape, 64, "[32,128]");
}
static void m_missing(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    strcat(find(e, "model.layers.1.mlp.up_proj.weight")->name, "X");
}
static void m_unexpected(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)e, (void)dl, (void)pad, (void)hl;
    strcpy(head, "\"model.extra.weight\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}");
}
static void m_duplicate(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)e, (void)dl, (void)pad, (void)hl;
    strcpy(head, "\"" QPROJ "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}");
}
static void m_unknown_key(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    strcpy(find(e, QPROJ)->extra, ",\"foo\":1");
}
static void m_negative(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    snprintf(find(e, QPROJ)->shape, 64, "[-64,-64]");
}
static void m_metadata(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)e, (void)dl, (void)pad, (void)hl;
    strcpy(head, "\"__metadata__\":{\"format\":1}");
}
static void m_bad_offsets(struct ent *e, size_t *dl, size_t *pad, char *head, unsigned long long *hl) {
    (void)dl, (void)pad, (void)head, (void)hl;
    e[0].e = -1;
}

static void case_safetensors_errors(void) {
    st_case("header length past the end", m_hlen_past, "runs past the end", "model.safetensors");
    st_case("header length over the limit", m_hlen_huge, "exceeds the limit", NULL);
    st_case("overlapping offsets", m_overlap, "overlap", NULL);
    st_case("offsets past the buffer", m_past_end, "past the data buffer", NULL);
    st_case("hole between tensors", m_hole, "hole", NULL);
    st_case("buffer not covered", m_uncovered, "cover", NULL);
    st_case("offsets vs shape", m_size, "needs", QPROJ);
    st_case("wrong dtype", m_dtype, "dtype I32", QPROJ);
    st_case("unknown dtype", m_unknown_dtype, "unknown dtype 'F42'", QPROJ);
    st_case("wrong shape", m_shape, "shape [32, 128], expected [64, 64]", QPROJ);
    st_case("missing tensor", m_missing, "missing tensor", "model.layers.1.mlp.up_proj.weight");
    st_case("unexpected tensor", m_unexpected, "unexpected tensor", "model.extra.weight");
    st_case("duplicate tensor", m_duplicate, "duplicate", QPROJ);
    st_case("unknown key", m_unknown_key, "unknown key 'foo'", QPROJ);
    st_case("negative shape", m_negative, "shape[0]", QPROJ);
    st_case("metadata not strings", m_metadata, "__metadata__", NULL);
    st_case("negative offsets", m_bad_offsets, "data_offsets", NULL);

    if (th_case("LOAD_ERROR(safetensors: truncated, not JSON, not an object, empty)")) {
        const char *dir = variant_dir("trunc", NULL);
        char        p[600];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        write_all(p, base_file, 5);
        expect_fail(dir, "too short", "model.safetensors");
        unsigned char b[32] = {9, 0, 0, 0, 0, 0, 0, 0, '{', '"', 'a', '"', ':', ' ', '}', ' ', ' '};
        write_all(p, b, 17);
        expect_fail(dir, "header", "model.safetensors");
        unsigned char c[16] = {5, 0, 0, 0, 0, 0, 0, 0, '[', '1', ',', '2', ']'};
        write_all(p, c, 13);
        expect_fail(dir, "'{'", NULL);
        write_all(p, "", 0);
        expect_fail(dir, "empty", NULL);
        remove(p);
        expect_fail(dir, "neither model.safetensors", NULL);
    }
}

/* ---- config.json ---- */

/* the base config with the line holding `key` replaced by `line` ("" drops it) */
static char *config_edit(const char *key, const char *line) {
    const char *at = strstr(base_config, key);
    if (!at) return NULL;
    const char *ls = at, *le = strchr(at, '\n');
    while (ls > base_config && ls[-1] != '\n') ls--;
    size_t n   = (size_t)(ls - base_config);
    char  *out = malloc(base_config_len + strlen(line) + 2);
    memcpy(out, base_config, n);
    strcpy(out + n, line);
    strcat(out, le);
    return out;
}

static void config_case(const char *name, const char *key, const char *line, const char *want1, const char *want2) {
    if (!th_case("LOAD_ERROR(config.json: %s)", name)) return;
    char *cfg = config_edit(key, line);
    if (!TH_CHECK(cfg != NULL, "base config lacks %s", key)) return;
    const char *dir = variant_dir(name, cfg);
    char        p[600], q[600];
    snprintf(p, sizeof p, "%s/model.safetensors", base_dir);
    snprintf(q, sizeof q, "%s/model.safetensors", dir);
    copy_file(p, q);
    expect_fail(dir, want1, want2);
    free(cfg);
}

static void case_config_errors(void) {
    config_case("bad json", "\"hidden_size\"", "  \"hidden_size\": 64,,", "config.json", "line");
    config_case("missing scale_emb", "\"scale_emb\"", "", "scale_emb", "config.json");
    config_case("missing dim_model_base", "\"dim_model_base\"", "", "dim_model_base", NULL);
    config_case("missing scale_depth", "\"scale_depth\"", "", "scale_depth", NULL);
    config_case("heads do not divide", "\"num_attention_heads\"", "  \"num_attention_heads\": 5,",
                "num_attention_heads", NULL);
    config_case("kv heads do not divide", "\"num_key_value_heads\"", "  \"num_key_value_heads\": 3,",
                "num_key_value_heads", NULL);
    config_case("long_factor length", "\"long_factor\"", "    \"long_factor\": [1.0, 2.0],", "long_factor", "head_dim/2");
    config_case("rope type", "\"rope_type\"", "    \"rope_type\": \"yarn\",", "rope_type", "yarn");
    config_case("model_type", "\"model_type\"", "  \"model_type\": \"llama\",", "model_type", "llama");
    config_case("use_nope", "\"use_nope\"", "    \"use_nope\": true,", "use_nope", NULL);
    config_case("sparse block_size", "\"block_size\"", "    \"block_size\": 18,", "block_size", NULL);
    config_case("vocab_size not an integer", "\"vocab_size\"", "  \"vocab_size\": \"320\",", "vocab_size", NULL);
    config_case("vocab_size vs tensors", "\"vocab_size\"", "  \"vocab_size\": 400,", "model.embed_tokens.weight", "expected [400, 64]");
    config_case("eos out of range", "\"eos_token_id\"", "  \"eos_token_id\": [2, 5000],", "eos_token_id", NULL);
    config_case("hidden_act", "\"hidden_act\"", "  \"hidden_act\": \"gelu\",", "hidden_act", NULL);
    if (th_case("LOAD_ERROR(config.json: missing)")) {
        const char *dir = variant_dir("noconfig", NULL);
        char        p[600];
        snprintf(p, sizeof p, "%s/config.json", dir);
        remove(p);
        expect_fail(dir, "config.json", NULL);
    }
}

/* ---- sharded checkpoints ---- */

static void case_index_errors(void) {
    if (!th_case("SHARDED_LOAD_AND_INDEX_ERRORS")) return;
    const char *good = make_model("sharded", 1, RT_W_F32, 0, -1, 100 << 10);
    char        dir[512], p[700], q[700];
    snprintf(dir, sizeof dir, "%s", good);
    struct rt_model *m = load(dir, RT_ATTN_AUTO, 1), *one = load(base_dir, RT_ATTN_AUTO, 1);
    if (!m || !one) return;
    /* the same weights (seed 7) in one file and in shards: the same logits */
    int32_t tok[20];
    for (int i = 0; i < 20; i++) tok[i] = i * 13;
    float a[320], b[320];
    rt_model_prefill(m, tok, 20, 0, NULL, NULL, a, err, sizeof err);
    rt_model_prefill(one, tok, 20, 0, NULL, NULL, b, err, sizeof err);
    TH_CHECK(memcmp(a, b, sizeof a) == 0, "sharded and single-file checkpoints differ");
    rt_model_free(m), rt_model_free(one);

    size_t ilen;
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    char *index = read_all(p, &ilen);
    if (!TH_CHECK(index != NULL, "no index written")) return;
    char *shard1 = strstr(index, "model-00001-of-");
    if (!TH_CHECK(shard1 && strstr(index, "model-00002-of-"), "fewer than 2 shards")) {
        free(index);
        return;
    }

    /* a shard the index names is missing */
    char victim[64];
    snprintf(victim, sizeof victim, "%.*s", (int)(strchr(shard1, '"') - shard1), shard1);
    snprintf(q, sizeof q, "%s/%s", dir, victim);
    char  tmpname[760];
    snprintf(tmpname, sizeof tmpname, "%s.away", q);
    rename(q, tmpname);
    expect_fail(dir, "does not exist", victim);
    rename(tmpname, q);

    /* a shard name with a path */
    char *bad = malloc(ilen + 16);
    memcpy(bad, index, ilen + 1);
    memcpy(strstr(bad, "model-00001-of-"), "../odel", 7);
    write_all(p, bad, strlen(bad));
    expect_fail(dir, "same directory", NULL);

    /* a tensor mapped to the wrong shard: swap the first mention of shard 1 with shard 2 */
    memcpy(bad, index, ilen + 1);
    char *s1 = strstr(bad, "model-00001-of-");
    s1[10]   = '2';
    write_all(p, bad, strlen(bad));
    expect_fail(dir, "the index places it in", NULL);

    /* a tensor of a shard missing from the weight map: drop the first weight_map line */
    memcpy(bad, index, ilen + 1);
    char *line = strstr(bad, "\"weight_map\": {\n") + strlen("\"weight_map\": {\n");
    char *end  = strchr(line, '\n') + 1;
    memmove(line, end, strlen(end) + 1);
    write_all(p, bad, strlen(bad));
    expect_fail(dir, "not in the index's weight_map", NULL);

    /* a weight_map entry naming a tensor its shard lacks */
    memcpy(bad, index, ilen + 1);
    line = strstr(bad, "\"weight_map\": {\n") + strlen("\"weight_map\": {\n");
    char extra[128];
    snprintf(extra, sizeof extra, "    \"model.ghost.weight\": \"%s\",\n", victim);
    char *joined = malloc(ilen + 256);
    snprintf(joined, ilen + 256, "%.*s%s%s", (int)(line - bad), bad, extra, line);
    write_all(p, joined, strlen(joined));
    expect_fail(dir, "lacks", "model.ghost.weight");
    free(joined);

    /* weight_map not an object; broken JSON */
    write_all(p, "{\"weight_map\": [1]}", 19);
    expect_fail(dir, "weight_map", NULL);
    write_all(p, "{\"weight_map\": {", 16);
    expect_fail(dir, "model.safetensors.index.json", NULL);
    write_all(p, index, ilen);

    /* a tensor in two shards: add a zero-size copy of a shard-2 tensor name to shard 1 */
    struct st_file f2;
    char           s2path[700];
    snprintf(s2path, sizeof s2path, "%s/%.*s2%s", dir, 10, victim, victim + 11);
    if (TH_CHECK(st_open(s2path, &f2, err, sizeof err) == 0, "%s", err)) {
        char dup[160];
        snprintf(dup, sizeof dup, "%s", f2.tensors[0].name);
        st_close(&f2);
        struct st_file f1;
        if (TH_CHECK(st_open(q, &f1, err, sizeof err) == 0, "%s", err)) {
            struct ent *e = calloc((size_t)f1.n_tensors + 1, sizeof *e);
            for (int64_t i = 0; i < f1.n_tensors; i++) {
                snprintf(e[i].name, sizeof e[i].name, "%s", f1.tensors[i].name);
                snprintf(e[i].dtype, sizeof e[i].dtype, "F32");
                if (f1.tensors[i].ndim == 2)
                    snprintf(e[i].shape, sizeof e[i].shape, "[%lld,%lld]", (long long)f1.tensors[i].shape[0], (long long)f1.tensors[i].shape[1]);
                else snprintf(e[i].shape, sizeof e[i].shape, "[%lld]", (long long)f1.tensors[i].shape[0]);
                e[i].b = (long long)f1.tensors[i].begin, e[i].e = (long long)f1.tensors[i].end;
            }
            char head[256];
            snprintf(head, sizeof head, "\"%s\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}", dup);
            const char *saved_data = base_data;
            size_t      dlen       = f1.size - 8 - f1.header_len;
            char       *copy       = malloc(dlen);
            memcpy(copy, f1.base + 8 + f1.header_len, dlen);
            int64_t nt = f1.n_tensors;
            st_close(&f1);
            base_data = copy;
            write_st(q, e, nt, head, dlen, 0, 0);
            base_data = saved_data;
            expect_fail(dir, "appears in both", dup);
            free(copy);
            free(e);
        }
    }
    free(bad);
    free(index);
}

/* ---- st_parse on mutated bytes: a status, never a crash ---- */

static void case_parse_mutations(void) {
    if (!th_case("ST_PARSE_MUTATIONS(3000)")) return;
    /* a small valid file: the header of the base checkpoint, with the data */
    unsigned char *buf = malloc(base_file_len);
    int            ok = 0, bad = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, base_file, base_file_len);
        size_t len = base_file_len;
        int    k   = (int)th_int(1, 4);
        for (int j = 0; j < k; j++) {
            int64_t pos = th_int(0, it % 3 == 0 ? 15 : 8 + 600);
            buf[pos]    = (unsigned char)th_int(0, 255);
        }
        if (it % 5 == 0) len = (size_t)th_int(0, (int64_t)base_file_len);
        struct st_file f;
        if (st_parse(buf, len, "mutant", &f, err, sizeof err) == 0) {
            ok++;
            for (int64_t i = 0; i < f.n_tensors; i++) /* every tensor lies inside the buffer */
                TH_CHECK((const unsigned char *)f.tensors[i].data + (f.tensors[i].end - f.tensors[i].begin) <= buf + len,
                         "tensor %s outside the buffer", f.tensors[i].name);
            st_close(&f);
        } else {
            bad++;
            TH_CHECK(strncmp(err, "mutant", 6) == 0, "message does not name the file: %s", err);
        }
    }
    printf("  %d accepted, %d refused\n", ok, bad);
    free(buf);
}

int main(int argc, char **argv) {
    th_init(argc, argv);
    snprintf(root, sizeof root, "/tmp/infllm_test_model_XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    case_decode_eq_prefill("f32", RT_W_F32, 2);
    case_decode_eq_prefill("bf16", RT_W_BF16, 2);
    case_decode_eq_prefill("f32", RT_W_F32, 1);
    case_decode_eq_prefill("bf16", RT_W_BF16, 4);
    case_chunked();
    case_threads_truncate();
    case_modes();
    case_runtime_errors();
    case_gen_config();
    if (base_init() == 0) {
        case_safetensors_errors();
        case_config_errors();
        case_index_errors();
        case_parse_mutations();
    } else {
        th_case("LOAD_ERROR(base checkpoint)");
        TH_CHECK(0, "cannot build the base checkpoint: %s", err);
    }
    free(base_ents), free(base_file), free(base_config);
    rm_tree(root);
    return th_report();
}
