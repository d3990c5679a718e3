/* SPDX-License-Identifier: MIT
 *
 * test_kv_cache.c -- the KV cache (include/infllm.h, "KV cache") against the stateless ops.
 *
 * The claim under test: a cache fed tokens in any pieces gives, for every chunk of queries, what
 * ifl_infllmv2_fwd gives for the same queries over the same keys (the cache's first len rows):
 * the same mode, the same selection, the same output and LSE bit for bit (same backend, same
 * math); its compressed keys are bitwise those ifl_compress_keys computes from its keys, and
 * exist exactly when their windows are complete. Also: truncate-then-append == never appended,
 * every error leaves the cache and the outputs untouched, and the memory is what the header says.
 *
 * Configs are small (block 16, kernels 8/4 and 32/16, window 32, topk 4, dense_len 200) so a few
 * hundred tokens cross the dense/sparse switch and leave most blocks unselected.
 */
#include "harness.h"
#include "infllm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ifl_ctx *ctx;     /* ref */
static struct ifl_ctx *cpu_ctx; /* cpu, when this build has it */
static struct ifl_ctx *aux_ctx; /* ref, for snapshots: keeps ctx's error message intact */

static struct ifl_sparse_config small_cfg(void) {
    struct ifl_sparse_config c = ifl_sparse_config_default();
    c.block_size               = 16;
    c.kernel_size              = 8;
    c.kernel_stride            = 4;
    c.coarse_kernel_size       = 32;
    c.coarse_kernel_stride     = 16;
    c.init_blocks              = 1;
    c.window_size              = 32;
    c.topk                     = 4;
    c.dense_len                = 200;
    return c;
}

/* kernel larger than a block: fine 32/16, coarse 128/64 */
static struct ifl_sparse_config wide_cfg(void) {
    struct ifl_sparse_config c = small_cfg();
    c.kernel_size              = 32;
    c.kernel_stride            = 16;
    c.coarse_kernel_size       = 128;
    c.coarse_kernel_stride     = 64;
    c.dense_len                = 300;
    return c;
}

/* ==== a token stream: q [L, Hq, D], k and v [L, Hkv, D] in one storage dtype ==== */

struct stream {
    int64_t        L, hq, hkv, d;
    enum ifl_dtype dt;
    size_t         es;
    unsigned char *q, *k, *v;
};

static void put(enum ifl_dtype dt, void *buf, int64_t i, double x) {
    switch (dt) {
    case IFL_DTYPE_F64: ((double *)buf)[i] = x; break;
    case IFL_DTYPE_F32: ((float *)buf)[i] = (float)x; break;
    case IFL_DTYPE_F16: ((uint16_t *)buf)[i] = ifl_f32_to_f16((float)x); break;
    case IFL_DTYPE_BF16: ((uint16_t *)buf)[i] = ifl_f32_to_bf16((float)x); break;
    default: break;
    }
}

static unsigned char *random_buf(enum ifl_dtype dt, int64_t n) {
    unsigned char *b = malloc((size_t)n * ifl_dtype_size(dt) + 1);
    for (int64_t i = 0; i < n; i++) put(dt, b, i, th_normal());
    return b;
}

static struct stream stream_make(int64_t L, int64_t hq, int64_t hkv, int64_t d, enum ifl_dtype dt) {
    struct stream s = {L, hq, hkv, d, dt, ifl_dtype_size(dt), NULL, NULL, NULL};
    s.q             = random_buf(dt, L * hq * d);
    s.k             = random_buf(dt, L * hkv * d);
    s.v             = random_buf(dt, L * hkv * d);
    return s;
}

static void stream_free(struct stream *s) {
    free(s->q);
    free(s->k);
    free(s->v);
}

/* rows [r0, r0+n) of one of the stream's arrays (heads = hq for q, hkv for k and v) */
static struct ifl_tensor srows(const struct stream *s, unsigned char *base, int64_t heads, int64_t r0, int64_t n) {
    return ifl_tensor_make(base + (size_t)(r0 * heads * s->d) * s->es, s->dt, 3, (const int64_t[3]){n, heads, s->d});
}
static struct ifl_tensor sq(const struct stream *s, int64_t r0, int64_t n) { return srows(s, s->q, s->hq, r0, n); }
static struct ifl_tensor sk(const struct stream *s, int64_t r0, int64_t n) { return srows(s, s->k, s->hkv, r0, n); }
static struct ifl_tensor sv(const struct stream *s, int64_t r0, int64_t n) { return srows(s, s->v, s->hkv, r0, n); }

/* ==== results of one chunk of queries ==== */

struct result {
    int64_t       n, width;
    double       *out, *lse;
    int32_t      *sel;
    enum ifl_mode mode;
};

static struct result result_make(const struct stream *s, const struct ifl_sparse_config *cfg, int64_t n, int64_t len) {
    struct result r = {n, ifl_select_width(cfg, len), NULL, NULL, NULL, (enum ifl_mode)77};
    r.out           = malloc((size_t)(n * s->hq * s->d) * sizeof(double));
    r.lse           = malloc((size_t)(n * s->hq) * sizeof(double));
    r.sel           = malloc((size_t)(s->hkv * n * r.width) * sizeof(int32_t));
    memset(r.sel, 0x5a, (size_t)(s->hkv * n * r.width) * sizeof(int32_t)); /* must all be written */
    return r;
}

static void result_free(struct result *r) {
    free(r->out);
    free(r->lse);
    free(r->sel);
}

struct tensors {
    struct ifl_tensor out, lse, sel;
};

static struct tensors result_tensors(const struct stream *s, struct result *r) {
    struct tensors t;
    t.out = ifl_tensor_make(r->out, IFL_DTYPE_F64, 3, (const int64_t[3]){r->n, s->hq, s->d});
    t.lse = ifl_tensor_make(r->lse, IFL_DTYPE_F64, 2, (const int64_t[2]){r->n, s->hq});
    t.sel = ifl_tensor_make(r->sel, IFL_DTYPE_I32, 3, (const int64_t[3]){s->hkv, r->n, r->width});
    return t;
}

/* The stateless forward of queries [r0, r0+n) over keys [0, r0+n). */
static enum ifl_status run_stateless(struct ifl_ctx *c, const struct ifl_sparse_config *cfg, const struct stream *s,
                                     int64_t r0, int64_t n, struct result *r) {
    struct tensors    t = result_tensors(s, r);
    struct ifl_tensor q = sq(s, r0, n), k = sk(s, 0, r0 + n), v = sv(s, 0, r0 + n);
    return ifl_infllmv2_fwd(c, cfg, NULL, &q, &k, &v, &t.out, &t.lse, &t.sel, &r->mode);
}

static enum ifl_status run_cache(struct ifl_ctx *c, struct ifl_kv_cache *cache, int32_t seq, const struct stream *s,
                                 int64_t r0, int64_t n, struct result *r) {
    struct tensors    t = result_tensors(s, r);
    struct ifl_tensor q = sq(s, r0, n);
    return ifl_kv_cache_attn(c, cache, seq, &q, &t.out, &t.lse, &t.sel, &r->mode);
}

/* 1 when a and b agree bit for bit; reports the first difference under `what`. */
static int same_results(const struct stream *s, const struct result *a, const struct result *b, const char *what,
                        int64_t r0) {
    int ok = TH_CHECK(a->mode == b->mode, "%s rows %lld..: mode %d vs %d", what, (long long)r0, (int)a->mode, (int)b->mode);
    for (int64_t i = 0; ok && i < a->n * s->hq * s->d; i++)
        ok = TH_CHECK(memcmp(&a->out[i], &b->out[i], sizeof(double)) == 0, "%s rows %lld..: out[%lld] %.17g vs %.17g",
                      what, (long long)r0, (long long)i, a->out[i], b->out[i]);
    for (int64_t i = 0; ok && i < a->n * s->hq; i++)
        ok = TH_CHECK(memcmp(&a->lse[i], &b->lse[i], sizeof(double)) == 0, "%s rows %lld..: lse[%lld] %.17g vs %.17g",
                      what, (long long)r0, (long long)i, a->lse[i], b->lse[i]);
    for (int64_t i = 0; ok && i < s->hkv * a->n * a->width; i++)
        ok = TH_CHECK(a->sel[i] == b->sel[i], "%s rows %lld..: sel[%lld] %d vs %d", what, (long long)r0, (long long)i,
                      (int)a->sel[i], (int)b->sel[i]);
    return ok;
}

/* The cache's view of seq agrees with ifl_compress_keys on its own keys (counts and bits), and
 * its keys and values are the stream's first len rows. */
static int check_contents(struct ifl_ctx *c, struct ifl_kv_cache *cache, int32_t seq, const struct ifl_sparse_config *cfg,
                          const struct stream *s, int64_t len) {
    struct ifl_tensor k, v, c1, c2;
    int ok = TH_CHECK(ifl_kv_cache_view(c, cache, seq, &k, &v, &c1, &c2) == IFL_STATUS_OK, "view: %s", ifl_ctx_errmsg(c));
    if (!ok) return 0;
    const int64_t row = s->hkv * s->d;
    const int64_t n1 = ifl_compressed_len(len, cfg->kernel_size, cfg->kernel_stride);
    const int64_t n2 = ifl_compressed_len(len, cfg->coarse_kernel_size, cfg->coarse_kernel_stride);
    ok = TH_CHECK(ifl_kv_cache_len(cache, seq) == len && k.shape[0] == len && v.shape[0] == len && c1.shape[0] == n1 &&
                      c2.shape[0] == n2 && k.dtype == s->dt && c1.shape[1] == s->hkv && c2.shape[2] == s->d,
                  "len %lld: view rows k %lld v %lld c1 %lld c2 %lld, expected %lld/%lld/%lld", (long long)len,
                  (long long)k.shape[0], (long long)v.shape[0], (long long)c1.shape[0], (long long)c2.shape[0],
                  (long long)len, (long long)n1, (long long)n2);
    if (!ok) return 0;
    ok = TH_CHECK(memcmp(k.data, s->k, (size_t)(len * row) * s->es) == 0 &&
                      memcmp(v.data, s->v, (size_t)(len * row) * s->es) == 0,
                  "len %lld: stored keys/values differ from the appended ones", (long long)len);
    if (n1 == 0) return ok;
    unsigned char    *r1 = malloc((size_t)(n1 * row) * s->es), *r2 = malloc((size_t)(n2 * row) * s->es + 1);
    struct ifl_tensor t1 = ifl_tensor_make(r1, s->dt, 3, (const int64_t[3]){n1, s->hkv, s->d});
    struct ifl_tensor t2 = ifl_tensor_make(r2, s->dt, 3, (const int64_t[3]){n2, s->hkv, s->d});
    ok &= TH_CHECK(ifl_compress_keys(c, cfg, NULL, &k, &t1, n2 ? &t2 : NULL) == IFL_STATUS_OK, "compress: %s",
                   ifl_ctx_errmsg(c));
    ok &= TH_CHECK(memcmp(r1, c1.data, (size_t)(n1 * row) * s->es) == 0, "len %lld: cached C1 != ifl_compress_keys",
                   (long long)len);
    if (n2) ok &= TH_CHECK(memcmp(r2, c2.data, (size_t)(n2 * row) * s->es) == 0,
                           "len %lld: cached C2 != ifl_compress_keys", (long long)len);
    free(r1);
    free(r2);
    return ok;
}

static struct ifl_kv_cache *cache_new(struct ifl_ctx *c, const struct ifl_sparse_config *cfg, const struct stream *s,
                                      int64_t capacity, int32_t n_seqs) {
    struct ifl_kv_cache_params p = ifl_kv_cache_params_default();
    p.capacity                   = capacity;
    p.n_seqs                     = n_seqs;
    p.n_heads_kv                 = (int32_t)s->hkv;
    p.head_dim                   = (int32_t)s->d;
    p.dtype                      = s->dt;
    p.cfg                        = *cfg;
    struct ifl_kv_cache *cache   = NULL;
    TH_CHECK(ifl_kv_cache_create(c, &p, &cache) == IFL_STATUS_OK && cache, "create: %s", ifl_ctx_errmsg(c));
    return cache;
}

static enum ifl_status append(struct ifl_ctx *c, struct ifl_kv_cache *cache, int32_t seq, const struct stream *s,
                              int64_t r0, int64_t n) {
    struct ifl_tensor k = sk(s, r0, n), v = sv(s, r0, n);
    return ifl_kv_cache_append(c, cache, seq, &k, &v);
}

/* Feeds the stream to a cache in chunks (sizes from `chunk(i)`; the first `past` tokens are
 * appended without queries), comparing every chunk with the stateless forward. */
static void run_chunks(struct ifl_ctx *c, const struct ifl_sparse_config *cfg, const struct stream *s, int64_t past,
                       int64_t min_chunk, int64_t max_chunk, int check_every_step) {
    struct ifl_kv_cache *cache = cache_new(c, cfg, s, s->L, 1);
    if (!cache) return;
    int     ok = 1, saw_dense = 0, saw_sparse = 0;
    for (int64_t r0 = 0; ok && r0 < past;) { /* the prompt, in random pieces */
        int64_t n = th_int(1, 64);
        if (n > past - r0) n = past - r0;
        ok = TH_CHECK(append(c, cache, 0, s, r0, n) == IFL_STATUS_OK, "append: %s", ifl_ctx_errmsg(c));
        r0 += n;
        if (ok && check_every_step) ok = check_contents(c, cache, 0, cfg, s, r0);
    }
    for (int64_t r0 = past; ok && r0 < s->L;) {
        int64_t n = th_int(min_chunk, max_chunk);
        if (n > s->L - r0) n = s->L - r0;
        ok = TH_CHECK(append(c, cache, 0, s, r0, n) == IFL_STATUS_OK, "append: %s", ifl_ctx_errmsg(c));
        if (!ok) break;
        if (check_every_step) ok = check_contents(c, cache, 0, cfg, s, r0 + n);
        struct result want = result_make(s, cfg, n, r0 + n), got = result_make(s, cfg, n, r0 + n);
        ok &= TH_CHECK(run_stateless(c, cfg, s, r0, n, &want) == IFL_STATUS_OK, "stateless: %s", ifl_ctx_errmsg(c));
        ok &= TH_CHECK(run_cache(c, cache, 0, s, r0, n, &got) == IFL_STATUS_OK, "cache attn: %s", ifl_ctx_errmsg(c));
        enum ifl_mode expect = (cfg->dense_len != -1 && r0 + n < cfg->dense_len) ? IFL_MODE_DENSE : IFL_MODE_SPARSE;
        ok &= TH_CHECK(got.mode == expect, "rows %lld..%lld (len %lld): mode %d, expected %d", (long long)r0,
                       (long long)(r0 + n - 1), (long long)(r0 + n), (int)got.mode, (int)expect);
        if (ok) ok = same_results(s, &want, &got, "cache vs stateless", r0);
        saw_dense |= got.mode == IFL_MODE_DENSE;
        saw_sparse |= got.mode == IFL_MODE_SPARSE;
        result_free(&want);
        result_free(&got);
        r0 += n;
    }
    if (ok) ok = check_contents(c, cache, 0, cfg, s, s->L);
    if (ok && cfg->dense_len > past + max_chunk && cfg->dense_len < s->L) /* the first chunk cannot jump it */
        TH_CHECK(saw_dense && saw_sparse, "the run should cross dense_len (dense %d, sparse %d)", saw_dense, saw_sparse);
    ifl_kv_cache_destroy(cache);
}

/* ==== item 3: token-by-token decode and random chunks vs the stateless forward ==== */

static void test_decode(enum ifl_dtype dt, int wide, enum ifl_lse_mode lse) {
    if (!th_case("DECODE_TOKEN_BY_TOKEN(%s, %s kernels, lse %s)", ifl_dtype_name(dt), wide ? "32/16+128/64" : "8/4+32/16",
                 lse == IFL_LSE_APPROX ? "approx" : "exact"))
        return;
    struct ifl_sparse_config cfg = wide ? wide_cfg() : small_cfg();
    cfg.lse_mode                 = lse;
    struct stream s              = stream_make(wide ? 400 : 320, 4, 2, 16, dt);
    run_chunks(ctx, &cfg, &s, 0, 1, 1, 1);
    stream_free(&s);
}

static void test_random_chunks(enum ifl_dtype dt, int64_t dense_len) {
    if (!th_case("RANDOM_CHUNKS(%s, dense_len %lld)", ifl_dtype_name(dt), (long long)dense_len)) return;
    struct ifl_sparse_config cfg = small_cfg();
    cfg.dense_len                = dense_len;
    struct stream s              = stream_make(360, 6, 2, 16, dt);
    for (int rep = 0; rep < 3; rep++) {
        int64_t past = rep == 0 ? 0 : th_int(1, 250);
        run_chunks(ctx, &cfg, &s, past, 1, 48, rep == 0);
    }
    stream_free(&s);
}

/* Always sparse: every chunk's rows are the rows of one full prefill (the stateless forward of a
 * chunk equals the full prefill's rows, so the cache's do too). */
static void test_chunks_equal_full_prefill(void) {
    if (!th_case("CHUNKS_EQUAL_FULL_PREFILL(dense_len -1, f32)")) return;
    struct ifl_sparse_config cfg = small_cfg();
    cfg.dense_len                = -1;
    struct stream        s       = stream_make(300, 4, 2, 16, IFL_DTYPE_F32);
    struct result        full    = result_make(&s, &cfg, s.L, s.L);
    struct ifl_kv_cache *cache   = cache_new(ctx, &cfg, &s, s.L, 1);
    int                  ok      = cache && TH_CHECK(run_stateless(ctx, &cfg, &s, 0, s.L, &full) == IFL_STATUS_OK,
                                                     "full prefill: %s", ifl_ctx_errmsg(ctx));
    for (int64_t r0 = 0; ok && r0 < s.L;) {
        int64_t n = th_int(1, 40);
        if (n > s.L - r0) n = s.L - r0;
        struct result got = result_make(&s, &cfg, n, r0 + n);
        ok = TH_CHECK(append(ctx, cache, 0, &s, r0, n) == IFL_STATUS_OK && run_cache(ctx, cache, 0, &s, r0, n, &got) == IFL_STATUS_OK,
                      "%s", ifl_ctx_errmsg(ctx));
        ok = ok && TH_CHECK(got.mode == IFL_MODE_SPARSE, "mode");
        ok = ok && TH_CHECK(memcmp(got.out, full.out + r0 * s.hq * s.d, (size_t)(n * s.hq * s.d) * sizeof(double)) == 0 &&
                                memcmp(got.lse, full.lse + r0 * s.hq, (size_t)(n * s.hq) * sizeof(double)) == 0,
                            "rows %lld..%lld differ from the full prefill", (long long)r0, (long long)(r0 + n - 1));
        for (int64_t g = 0; ok && g < s.hkv; g++)
            for (int64_t i = 0; ok && i < n; i++)
                for (int64_t col = 0; ok && col < full.width; col++) {
                    int32_t a = full.sel[(g * s.L + r0 + i) * full.width + col];
                    int32_t b = col < got.width ? got.sel[(g * n + i) * got.width + col] : -1;
                    ok        = TH_CHECK(a == b, "sel[%lld, %lld, %lld]: full %d, cache %d", (long long)g,
                                         (long long)(r0 + i), (long long)col, (int)a, (int)b);
                }
        result_free(&got);
        r0 += n;
    }
    result_free(&full);
    ifl_kv_cache_destroy(cache);
    stream_free(&s);
}

/* ==== truncate-then-append == never appended ==== */

/* Bitwise equality of two caches' sequences (lengths, K, V, C1, C2). */
static int same_cache(struct ifl_kv_cache *a, int32_t sa, struct ifl_kv_cache *b, int32_t sb, const char *what) {
    struct ifl_tensor ta[4], tb[4];
    if (!TH_CHECK(ifl_kv_cache_view(ctx, a, sa, &ta[0], &ta[1], &ta[2], &ta[3]) == IFL_STATUS_OK &&
                      ifl_kv_cache_view(ctx, b, sb, &tb[0], &tb[1], &tb[2], &tb[3]) == IFL_STATUS_OK,
                  "view"))
        return 0;
    const char *names[4] = {"K", "V", "C1", "C2"};
    for (int i = 0; i < 4; i++) {
        size_t bytes = (size_t)(ta[i].shape[0] * ta[i].shape[1] * ta[i].shape[2]) * ifl_dtype_size(ta[i].dtype);
        if (!TH_CHECK(ta[i].shape[0] == tb[i].shape[0] && memcmp(ta[i].data, tb[i].data, bytes) == 0,
                      "%s: %s differs (%lld vs %lld rows)", what, names[i], (long long)ta[i].shape[0],
                      (long long)tb[i].shape[0]))
            return 0;
    }
    return 1;
}

static void test_truncate(enum ifl_dtype dt) {
    if (!th_case("TRUNCATE_THEN_APPEND(%s)", ifl_dtype_name(dt))) return;
    struct ifl_sparse_config cfg  = small_cfg();
    struct stream            s    = stream_make(320, 4, 2, 16, dt);
    struct stream            junk = stream_make(320, 4, 2, 16, dt);
    struct ifl_kv_cache     *a = cache_new(ctx, &cfg, &s, s.L, 1), *b = cache_new(ctx, &cfg, &s, s.L, 1);
    if (!a || !b) goto out;
    /* b: everything at once */
    TH_CHECK(append(ctx, b, 0, &s, 0, s.L) == IFL_STATUS_OK, "%s", ifl_ctx_errmsg(ctx));
    /* a: real 0..180, truncate mid-window to 133, junk, truncate to 120, real from 120 in 7s */
    TH_CHECK(append(ctx, a, 0, &s, 0, 180) == IFL_STATUS_OK, "%s", ifl_ctx_errmsg(ctx));
    TH_CHECK(ifl_kv_cache_truncate(ctx, a, 0, 133) == IFL_STATUS_OK && ifl_kv_cache_len(a, 0) == 133, "truncate 133");
    check_contents(ctx, a, 0, &cfg, &s, 133);
    TH_CHECK(append(ctx, a, 0, &junk, 133, 50) == IFL_STATUS_OK, "%s", ifl_ctx_errmsg(ctx));
    TH_CHECK(ifl_kv_cache_truncate(ctx, a, 0, 120) == IFL_STATUS_OK, "truncate 120");
    for (int64_t r0 = 120; r0 < s.L; r0 += 7)
        TH_CHECK(append(ctx, a, 0, &s, r0, r0 + 7 <= s.L ? 7 : s.L - r0) == IFL_STATUS_OK, "%s", ifl_ctx_errmsg(ctx));
    same_cache(a, 0, b, 0, "junk rolled back");
    check_contents(ctx, a, 0, &cfg, &s, s.L);

    /* speculative decoding from len 250 (sparse): draft 4 junk tokens, attend them, roll back,
     * accept the real token; every step equals b truncated to the same length */
    TH_CHECK(ifl_kv_cache_truncate(ctx, a, 0, 250) == IFL_STATUS_OK, "truncate 250");
    TH_CHECK(ifl_kv_cache_truncate(ctx, b, 0, 250) == IFL_STATUS_OK, "truncate 250");
    for (int64_t len = 250; len < 262; len++) {
        struct result draft = result_make(&junk, &cfg, 4, len + 4);
        TH_CHECK(append(ctx, a, 0, &junk, len, 4) == IFL_STATUS_OK && run_cache(ctx, a, 0, &junk, len, 4, &draft) == IFL_STATUS_OK &&
                     draft.mode == IFL_MODE_SPARSE,
                 "draft: %s", ifl_ctx_errmsg(ctx));
        TH_CHECK(ifl_kv_cache_truncate(ctx, a, 0, len) == IFL_STATUS_OK, "rollback");
        struct result ga = result_make(&s, &cfg, 1, len + 1), gb = result_make(&s, &cfg, 1, len + 1);
        TH_CHECK(append(ctx, a, 0, &s, len, 1) == IFL_STATUS_OK && append(ctx, b, 0, &s, len, 1) == IFL_STATUS_OK, "append");
        TH_CHECK(run_cache(ctx, a, 0, &s, len, 1, &ga) == IFL_STATUS_OK && run_cache(ctx, b, 0, &s, len, 1, &gb) == IFL_STATUS_OK,
                 "attn: %s", ifl_ctx_errmsg(ctx));
        same_results(&s, &ga, &gb, "after rollback", len);
        result_free(&draft);
        result_free(&ga);
        result_free(&gb);
    }
    same_cache(a, 0, b, 0, "after speculative steps");
    /* to zero and back */
    TH_CHECK(ifl_kv_cache_truncate(ctx, a, 0, 0) == IFL_STATUS_OK && ifl_kv_cache_len(a, 0) == 0, "truncate 0");
    struct ifl_tensor c1;
    TH_CHECK(ifl_kv_cache_view(ctx, a, 0, NULL, NULL, &c1, NULL) == IFL_STATUS_OK && c1.shape[0] == 0 && c1.data, "empty view");
    TH_CHECK(append(ctx, a, 0, &s, 0, 262) == IFL_STATUS_OK, "%s", ifl_ctx_errmsg(ctx));
    same_cache(a, 0, b, 0, "after truncate to 0");
    /* truncating to the current length changes nothing */
    TH_CHECK(ifl_kv_cache_truncate(ctx, a, 0, 262) == IFL_STATUS_OK, "truncate to len");
    same_cache(a, 0, b, 0, "truncate to len");
out:
    ifl_kv_cache_destroy(a);
    ifl_kv_cache_destroy(b);
    stream_free(&s);
    stream_free(&junk);
}

/* ==== a batch of sequences, each with its own length ==== */

static void test_multi_seq(void) {
    if (!th_case("MULTI_SEQ(3 sequences interleaved, bf16)")) return;
    struct ifl_sparse_config cfg = small_cfg();
    struct stream            s[3];
    int64_t                  len[3] = {0, 0, 0}, L[3] = {260, 90, 230};
    for (int i = 0; i < 3; i++) s[i] = stream_make(L[i], 4, 2, 16, IFL_DTYPE_BF16);
    struct ifl_kv_cache *cache = cache_new(ctx, &cfg, &s[0], 260, 3);
    int                  ok    = cache != NULL;
    while (ok && (len[0] < L[0] || len[1] < L[1] || len[2] < L[2])) {
        int32_t i = (int32_t)th_int(0, 2);
        if (len[i] == L[i]) continue;
        int64_t n = th_int(1, 30);
        if (n > L[i] - len[i]) n = L[i] - len[i];
        struct result want = result_make(&s[i], &cfg, n, len[i] + n), got = result_make(&s[i], &cfg, n, len[i] + n);
        ok = TH_CHECK(append(ctx, cache, i, &s[i], len[i], n) == IFL_STATUS_OK, "append: %s", ifl_ctx_errmsg(ctx)) &&
             TH_CHECK(run_stateless(ctx, &cfg, &s[i], len[i], n, &want) == IFL_STATUS_OK &&
                          run_cache(ctx, cache, i, &s[i], len[i], n, &got) == IFL_STATUS_OK,
                      "%s", ifl_ctx_errmsg(ctx)) &&
             same_results(&s[i], &want, &got, "sequence", len[i]);
        len[i] += n;
        result_free(&want);
        result_free(&got);
        for (int32_t j = 0; ok && j < 3; j++) ok = TH_CHECK(ifl_kv_cache_len(cache, j) == len[j], "len of %d", (int)j);
    }
    for (int32_t j = 0; ok && j < 3; j++) check_contents(ctx, cache, j, &cfg, &s[j], L[j]);
    /* capacity is per sequence: seq 0 is full, the others are not */
    ok = ok && TH_CHECK(append(ctx, cache, 0, &s[0], 0, 1) == IFL_STATUS_CAPACITY, "seq 0 full");
    ok = ok && TH_CHECK(append(ctx, cache, 1, &s[0], 0, 1) == IFL_STATUS_OK, "seq 1 not full: %s", ifl_ctx_errmsg(ctx));
    ifl_kv_cache_destroy(cache);
    for (int i = 0; i < 3; i++) stream_free(&s[i]);
}

/* ==== conversions on entry ==== */

/* Keys, values and queries of another dtype are rounded to the storage dtype: the same as
 * handing in pre-rounded data. */
static void test_conversion(void) {
    if (!th_case("CONVERT_ON_ENTRY(f64 in, bf16 storage == pre-rounded bf16 in)")) return;
    struct ifl_sparse_config cfg = small_cfg();
    struct stream            s64 = stream_make(240, 4, 2, 16, IFL_DTYPE_F64), s16 = s64;
    s16.dt = IFL_DTYPE_BF16;
    s16.es = 2;
    s16.q  = malloc((size_t)(s64.L * s64.hq * s64.d) * 2);
    s16.k  = malloc((size_t)(s64.L * s64.hkv * s64.d) * 2);
    s16.v  = malloc((size_t)(s64.L * s64.hkv * s64.d) * 2);
    for (int64_t i = 0; i < s64.L * s64.hq * s64.d; i++) put(IFL_DTYPE_BF16, s16.q, i, ((double *)s64.q)[i]);
    for (int64_t i = 0; i < s64.L * s64.hkv * s64.d; i++) put(IFL_DTYPE_BF16, s16.k, i, ((double *)s64.k)[i]);
    for (int64_t i = 0; i < s64.L * s64.hkv * s64.d; i++) put(IFL_DTYPE_BF16, s16.v, i, ((double *)s64.v)[i]);
    struct ifl_kv_cache *a = cache_new(ctx, &cfg, &s16, s64.L, 1), *b = cache_new(ctx, &cfg, &s16, s64.L, 1);
    for (int64_t r0 = 0; a && b && r0 < s64.L; r0 += 24) {
        TH_CHECK(append(ctx, a, 0, &s64, r0, 24) == IFL_STATUS_OK && append(ctx, b, 0, &s16, r0, 24) == IFL_STATUS_OK,
                 "append: %s", ifl_ctx_errmsg(ctx));
        struct result ra = result_make(&s64, &cfg, 24, r0 + 24), rb = result_make(&s16, &cfg, 24, r0 + 24);
        TH_CHECK(run_cache(ctx, a, 0, &s64, r0, 24, &ra) == IFL_STATUS_OK && run_cache(ctx, b, 0, &s16, r0, 24, &rb) == IFL_STATUS_OK,
                 "attn: %s", ifl_ctx_errmsg(ctx));
        same_results(&s16, &ra, &rb, "f64 in vs bf16 in", r0);
        result_free(&ra);
        result_free(&rb);
    }
    if (a && b) same_cache(a, 0, b, 0, "f64 in vs bf16 in");
    if (b) check_contents(ctx, b, 0, &cfg, &s16, s64.L);
    ifl_kv_cache_destroy(a);
    ifl_kv_cache_destroy(b);
    stream_free(&s64);
    stream_free(&s16);
}

/* ==== errors leave the cache and the outputs untouched ==== */

struct snapshot {
    int64_t        len[2];
    unsigned char *bytes[2][4];
    size_t         n[2][4];
};

static struct snapshot snap(struct ifl_kv_cache *cache) {
    struct snapshot sn;
    for (int32_t q = 0; q < 2; q++) {
        struct ifl_tensor t[4];
        ifl_kv_cache_view(aux_ctx, cache, q, &t[0], &t[1], &t[2], &t[3]);
        sn.len[q] = ifl_kv_cache_len(cache, q);
        for (int i = 0; i < 4; i++) {
            sn.n[q][i]     = (size_t)(t[i].shape[0] * t[i].shape[1] * t[i].shape[2]) * ifl_dtype_size(t[i].dtype);
            sn.bytes[q][i] = malloc(sn.n[q][i] + 1);
            memcpy(sn.bytes[q][i], t[i].data, sn.n[q][i]);
        }
    }
    return sn;
}

static int same_snap(struct ifl_kv_cache *cache, const struct snapshot *a) {
    struct snapshot b  = snap(cache);
    int             ok = 1;
    for (int q = 0; q < 2; q++) {
        ok &= a->len[q] == b.len[q];
        for (int i = 0; i < 4; i++) {
            ok &= a->n[q][i] == b.n[q][i] && memcmp(a->bytes[q][i], b.bytes[q][i], a->n[q][i]) == 0;
            free(b.bytes[q][i]);
        }
    }
    return ok;
}

static void snap_free(struct snapshot *sn) {
    for (int q = 0; q < 2; q++)
        for (int i = 0; i < 4; i++) free(sn->bytes[q][i]);
}

#define EXPECT(call, status)                                                                                 \
    do {                                                                                                     \
        enum ifl_status st_ = (call);                                                                        \
        TH_CHECK(st_ == (status), "%s: got %s, expected %s (%s)", #call, ifl_status_str(st_),               \
                 ifl_status_str(status), ifl_ctx_errmsg(ctx));                                               \
        if ((status) != IFL_STATUS_OK && ctx)                                                                \
            TH_CHECK(ifl_ctx_errmsg(ctx)[0] != '\0' || st_ == IFL_STATUS_OK, "%s: no message", #call);       \
        TH_CHECK(same_snap(cache, &before), "%s changed the cache", #call);                                  \
        TH_CHECK(memcmp(outbuf, guard, sizeof outbuf) == 0 && mode == (enum ifl_mode)77,                     \
                 "%s wrote an output", #call);                                                               \
    } while (0)

static void test_errors(void) {
    if (!th_case("ERRORS_LEAVE_CACHE_UNTOUCHED")) return;
    struct ifl_sparse_config cfg = small_cfg();
    cfg.dense_len                = 32;
    struct stream        s       = stream_make(64, 4, 2, 16, IFL_DTYPE_F32);
    struct ifl_kv_cache *cache   = cache_new(ctx, &cfg, &s, 64, 2);
    if (!cache) return;
    TH_CHECK(append(ctx, cache, 0, &s, 0, 40) == IFL_STATUS_OK && append(ctx, cache, 1, &s, 0, 10) == IFL_STATUS_OK,
             "setup: %s", ifl_ctx_errmsg(ctx));
    struct snapshot before = snap(cache);
    static double   outbuf[4096], guard[4096];
    static int32_t  selbuf[4096];
    for (int i = 0; i < 4096; i++) outbuf[i] = guard[i] = -12345.0;
    enum ifl_mode mode = (enum ifl_mode)77;
    /* outputs are views into outbuf so that any write shows */
    const int64_t    D = s.d;
    struct ifl_tensor q   = sq(&s, 36, 4), k = sk(&s, 0, 5), v = sv(&s, 0, 5);
    struct ifl_tensor out = ifl_tensor_make(outbuf, IFL_DTYPE_F64, 3, (const int64_t[3]){4, 4, D});
    struct ifl_tensor lse = ifl_tensor_make(outbuf + 1024, IFL_DTYPE_F64, 2, (const int64_t[2]){4, 4});
    struct ifl_tensor sel = ifl_tensor_make(outbuf + 2048, IFL_DTYPE_I32, 3, (const int64_t[3]){2, 4, 3});
    struct ifl_tensor bad;

    /* append */
    struct ifl_tensor k25 = sk(&s, 0, 25), v25 = sv(&s, 0, 25);
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &k25, &v25), IFL_STATUS_CAPACITY);
    EXPECT(ifl_kv_cache_append(NULL, cache, 0, &k, &v), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_append(ctx, NULL, 0, &k, &v), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_append(ctx, cache, 2, &k, &v), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_append(ctx, cache, -1, &k, &v), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, NULL, &v), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &k, NULL), IFL_STATUS_INVALID_ARG);
    bad      = k;
    bad.data = NULL;
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &bad, &v), IFL_STATUS_INVALID_ARG);
    bad = ifl_tensor_make(s.k, IFL_DTYPE_F32, 3, (const int64_t[3]){5, 1, 2 * D}); /* Hkv 1 */
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &bad, &v), IFL_STATUS_SHAPE);
    bad = ifl_tensor_make(s.k, IFL_DTYPE_F32, 3, (const int64_t[3]){10, 2, D / 2}); /* D 8 */
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &bad, &v), IFL_STATUS_SHAPE);
    bad = sv(&s, 0, 6); /* rows differ from k's */
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &k, &bad), IFL_STATUS_SHAPE);
    bad = ifl_tensor_make(s.k, IFL_DTYPE_F32, 2, (const int64_t[2]){5, 2 * D});
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &bad, &v), IFL_STATUS_SHAPE);
    bad       = k;
    bad.dtype = IFL_DTYPE_I32;
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &bad, &v), IFL_STATUS_DTYPE);
    float *nan_v = malloc((size_t)(5 * 2 * D) * sizeof(float));
    memcpy(nan_v, s.v, (size_t)(5 * 2 * D) * sizeof(float));
    nan_v[37]                 = NAN;
    struct ifl_tensor vnan    = ifl_tensor_make(nan_v, IFL_DTYPE_F32, 3, (const int64_t[3]){5, 2, D});
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &k, &vnan), IFL_STATUS_INVALID_ARG);
    TH_CHECK(strstr(ifl_ctx_errmsg(ctx), "v_new[1, 0, 5]") != NULL, "message names the NaN: %s", ifl_ctx_errmsg(ctx));
    double *huge = calloc((size_t)(5 * 2 * D), sizeof(double));
    huge[70]     = 1e300; /* finite in f64, overflows the f32 storage */
    struct ifl_tensor khuge = ifl_tensor_make(huge, IFL_DTYPE_F64, 3, (const int64_t[3]){5, 2, D});
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &khuge, &v), IFL_STATUS_INVALID_ARG);
    TH_CHECK(strstr(ifl_ctx_errmsg(ctx), "overflows") != NULL, "message says overflow: %s", ifl_ctx_errmsg(ctx));
    struct ifl_tensor kv_view;
    ifl_kv_cache_view(ctx, cache, 0, &kv_view, NULL, NULL, NULL);
    bad      = k; /* the rows the append would write */
    bad.data = (float *)kv_view.data + 40 * 2 * D;
    EXPECT(ifl_kv_cache_append(ctx, cache, 0, &bad, &v), IFL_STATUS_INVALID_ARG);
    char garbage[512];
    memset(garbage, 0, sizeof garbage);
    EXPECT(ifl_kv_cache_append(ctx, (struct ifl_kv_cache *)(void *)garbage, 0, &k, &v), IFL_STATUS_INVALID_ARG);

    /* truncate */
    EXPECT(ifl_kv_cache_truncate(ctx, cache, 0, 41), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_truncate(ctx, cache, 0, -1), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_truncate(ctx, cache, 2, 0), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_truncate(NULL, cache, 0, 0), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_truncate(ctx, NULL, 0, 0), IFL_STATUS_INVALID_ARG);

    /* attn (seq 0 holds 40 >= dense_len 32: sparse, width min(4 + 2, 3 blocks) = 3) */
    EXPECT(ifl_kv_cache_attn(NULL, cache, 0, &q, &out, &lse, &sel, &mode), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_attn(ctx, cache, 5, &q, &out, &lse, &sel, &mode), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, NULL, &out, &lse, &sel, &mode), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &q, NULL, &lse, &sel, &mode), IFL_STATUS_INVALID_ARG);
    struct ifl_tensor q11 = sq(&s, 0, 11);
    struct ifl_tensor o11 = ifl_tensor_make(outbuf, IFL_DTYPE_F64, 3, (const int64_t[3]){11, 4, D});
    EXPECT(ifl_kv_cache_attn(ctx, cache, 1, &q11, &o11, NULL, NULL, &mode), IFL_STATUS_SHAPE); /* 11 > len 10 */
    bad = ifl_tensor_make(s.q, IFL_DTYPE_F32, 3, (const int64_t[3]){4, 3, D}); /* 3 heads, Hkv 2 */
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &bad, &out, &lse, &sel, &mode), IFL_STATUS_SHAPE);
    bad = ifl_tensor_make(s.q, IFL_DTYPE_F32, 3, (const int64_t[3]){8, 4, D / 2}); /* D 8 */
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &bad, &out, &lse, &sel, &mode), IFL_STATUS_SHAPE);
    bad = ifl_tensor_make(outbuf, IFL_DTYPE_F64, 3, (const int64_t[3]){4, 2, D}); /* out: 2 heads */
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &q, &bad, &lse, &sel, &mode), IFL_STATUS_SHAPE);
    bad       = lse;
    bad.dtype = IFL_DTYPE_F16;
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &q, &out, &bad, &sel, &mode), IFL_STATUS_DTYPE);
    bad = ifl_tensor_make(outbuf + 2048, IFL_DTYPE_I32, 3, (const int64_t[3]){2, 4, 2}); /* narrower than 3 */
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &q, &out, &lse, &bad, &mode), IFL_STATUS_SHAPE);
    bad       = sel;
    bad.dtype = IFL_DTYPE_F32;
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &q, &out, &lse, &bad, &mode), IFL_STATUS_DTYPE);
    bad = ifl_tensor_make(outbuf + 8, IFL_DTYPE_F64, 2, (const int64_t[2]){4, 4}); /* lse inside out */
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &q, &out, &bad, &sel, &mode), IFL_STATUS_INVALID_ARG);
    bad      = out; /* out inside q */
    bad.data = q.data;
    bad.dtype = IFL_DTYPE_F32;
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &q, &bad, &lse, &sel, &mode), IFL_STATUS_INVALID_ARG);
    bad      = ifl_tensor_make(kv_view.data, IFL_DTYPE_F32, 3, (const int64_t[3]){4, 4, D}); /* out inside the cache */
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &q, &bad, &lse, &sel, &mode), IFL_STATUS_INVALID_ARG);
    float *nan_q = malloc((size_t)(4 * 4 * D) * sizeof(float));
    memcpy(nan_q, s.q, (size_t)(4 * 4 * D) * sizeof(float));
    nan_q[3]               = INFINITY;
    struct ifl_tensor qnan = ifl_tensor_make(nan_q, IFL_DTYPE_F32, 3, (const int64_t[3]){4, 4, D});
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &qnan, &out, &lse, &sel, &mode), IFL_STATUS_INVALID_ARG);
    double *qhuge          = calloc((size_t)(4 * 4 * D), sizeof(double));
    qhuge[9]               = -1e300;
    struct ifl_tensor qh   = ifl_tensor_make(qhuge, IFL_DTYPE_F64, 3, (const int64_t[3]){4, 4, D});
    EXPECT(ifl_kv_cache_attn(ctx, cache, 0, &qh, &out, &lse, &sel, &mode), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_attn(ctx, (struct ifl_kv_cache *)(void *)garbage, 0, &q, &out, &lse, &sel, &mode),
           IFL_STATUS_INVALID_ARG);

    /* view */
    struct ifl_tensor tv;
    EXPECT(ifl_kv_cache_view(ctx, cache, 2, &tv, NULL, NULL, NULL), IFL_STATUS_INVALID_ARG);
    EXPECT(ifl_kv_cache_view(ctx, NULL, 0, &tv, NULL, NULL, NULL), IFL_STATUS_INVALID_ARG);

    /* queries, lengths and bytes of bad handles */
    TH_CHECK(ifl_kv_cache_len(NULL, 0) == -1 && ifl_kv_cache_len(cache, 2) == -1 && ifl_kv_cache_len(cache, -1) == -1 &&
                 ifl_kv_cache_len((struct ifl_kv_cache *)(void *)garbage, 0) == -1,
             "len of bad handles");
    TH_CHECK(ifl_kv_cache_bytes(NULL) == 0 && ifl_kv_cache_bytes((struct ifl_kv_cache *)(void *)garbage) == 0, "bytes of bad handles");
    ifl_kv_cache_destroy(NULL);
    ifl_kv_cache_destroy((struct ifl_kv_cache *)(void *)garbage); /* refused: not a cache */

    /* create */
    struct ifl_kv_cache_params p = ifl_kv_cache_params_default();
    struct ifl_kv_cache       *nc;
    const struct {
        const char     *what;
        int             field;
        int64_t         value;
        enum ifl_status want;
    } bad_params[] = {
        {"capacity 0", 0, 0, IFL_STATUS_INVALID_ARG},
        {"capacity 2^31", 0, (int64_t)1 << 31, IFL_STATUS_INVALID_ARG},
        {"n_seqs 0", 1, 0, IFL_STATUS_INVALID_ARG},
        {"n_heads_kv -1", 2, -1, IFL_STATUS_INVALID_ARG},
        {"head_dim 0", 3, 0, IFL_STATUS_INVALID_ARG},
        {"head_dim 257", 3, 257, IFL_STATUS_UNSUPPORTED},
        {"dtype i32", 4, IFL_DTYPE_I32, IFL_STATUS_DTYPE},
        {"cfg topk 0", 5, 0, IFL_STATUS_INVALID_ARG},
        {"n_seqs 2^30 (too large)", 1, (int64_t)1 << 30, IFL_STATUS_OUT_OF_MEMORY},
    };
    for (size_t i = 0; i < sizeof bad_params / sizeof bad_params[0]; i++) {
        struct ifl_kv_cache_params bp = p;
        switch (bad_params[i].field) {
        case 0: bp.capacity = bad_params[i].value; break;
        case 1: bp.n_seqs = (int32_t)bad_params[i].value; break;
        case 2: bp.n_heads_kv = (int32_t)bad_params[i].value; break;
        case 3: bp.head_dim = (int32_t)bad_params[i].value; break;
        case 4: bp.dtype = (enum ifl_dtype)bad_params[i].value; break;
        case 5: bp.cfg.topk = (int32_t)bad_params[i].value; break;
        }
        if (bad_params[i].field == 1 && bad_params[i].value > 1) bp.capacity = (int64_t)1 << 30; /* 2^60 elements */
        nc                 = (struct ifl_kv_cache *)(void *)garbage;
        enum ifl_status st = ifl_kv_cache_create(ctx, &bp, &nc);
        TH_CHECK(st == bad_params[i].want && nc == NULL, "create with %s: got %s, expected %s (%s)", bad_params[i].what,
                 ifl_status_str(st), ifl_status_str(bad_params[i].want), ifl_ctx_errmsg(ctx));
    }
    nc = (struct ifl_kv_cache *)(void *)garbage;
    TH_CHECK(ifl_kv_cache_create(ctx, NULL, &nc) == IFL_STATUS_INVALID_ARG && nc == NULL, "create with NULL params");
    TH_CHECK(ifl_kv_cache_create(ctx, &p, NULL) == IFL_STATUS_INVALID_ARG, "create with NULL out");
    TH_CHECK(ifl_kv_cache_create(NULL, &p, &nc) == IFL_STATUS_INVALID_ARG, "create with NULL ctx");

    /* after all that: the cache still works, fills exactly to capacity, and a success clears the message */
    struct ifl_tensor k24 = sk(&s, 40, 24), v24 = sv(&s, 40, 24), k1 = sk(&s, 0, 1), v1 = sv(&s, 0, 1);
    TH_CHECK(ifl_kv_cache_append(ctx, cache, 0, &k24, &v24) == IFL_STATUS_OK && ifl_kv_cache_len(cache, 0) == 64 &&
                 ifl_ctx_errmsg(ctx)[0] == '\0',
             "fill to capacity: %s", ifl_ctx_errmsg(ctx));
    check_contents(ctx, cache, 0, &cfg, &s, 64);
    TH_CHECK(ifl_kv_cache_append(ctx, cache, 0, &k1, &v1) == IFL_STATUS_CAPACITY && ifl_kv_cache_len(cache, 0) == 64,
             "one past capacity");
    TH_CHECK(ifl_kv_cache_attn(ctx, cache, 1, &q, &out, &lse, &sel, &mode) == IFL_STATUS_OK && mode == IFL_MODE_DENSE,
             "seq 1 (10 tokens) runs dense: %s", ifl_ctx_errmsg(ctx));
    /* dense mode accepts any sel width and sets it to -1 */
    int32_t          *sb   = selbuf;
    struct ifl_tensor sel1 = ifl_tensor_make(sb, IFL_DTYPE_I32, 3, (const int64_t[3]){2, 4, 1});
    sb[0] = sb[7] = 99;
    TH_CHECK(ifl_kv_cache_attn(ctx, cache, 1, &q, &out, NULL, &sel1, NULL) == IFL_STATUS_OK && sb[0] == -1 && sb[7] == -1,
             "dense sel rows -1: %s", ifl_ctx_errmsg(ctx));
    free(nan_v);
    free(huge);
    free(nan_q);
    free(qhuge);
    snap_free(&before);
    ifl_kv_cache_destroy(cache);
    stream_free(&s);
}

/* ==== memory ==== */

static void test_memory(void) {
    if (!th_case("MEMORY(K + V + compressed keys, as documented)")) return;
    struct ifl_kv_cache_params p = ifl_kv_cache_params_default();
    struct ifl_kv_cache       *c = NULL;
    TH_CHECK(ifl_kv_cache_create(ctx, &p, &c) == IFL_STATUS_OK, "default cache: %s", ifl_ctx_errmsg(ctx));
    /* 65536 tokens, 2 KV heads, D 128, bf16: N1 = 4095, N2 = 1023 */
    const size_t kv = (size_t)2 * 65536 * 2 * 128 * 2, comp = (size_t)(4095 + 1023) * 2 * 128 * 2;
    size_t       bytes = ifl_kv_cache_bytes(c);
    double       over  = (double)(bytes - kv) / (double)kv;
    printf("    default config: %zu bytes = K+V %zu + compressed keys %zu (%.3f%% over K+V)\n", bytes, kv, bytes - kv,
           100.0 * over);
    TH_CHECK(bytes == kv + comp && bytes == 69729280u, "default bytes %zu, expected %zu", bytes, kv + comp);
    TH_CHECK(over > 0.035 && over < 0.045, "overhead %.4f, documented as about 4%%", over);
    ifl_kv_cache_destroy(c);

    /* the formula on another shape: 3 sequences, f32, kernels 8/4 and 32/16, capacity 1000 */
    p.capacity   = 1000;
    p.n_seqs     = 3;
    p.n_heads_kv = 3;
    p.head_dim   = 40;
    p.dtype      = IFL_DTYPE_F32;
    p.cfg        = small_cfg();
    TH_CHECK(ifl_kv_cache_create(ctx, &p, &c) == IFL_STATUS_OK, "%s", ifl_ctx_errmsg(ctx));
    size_t want = (size_t)3 * 3 * 40 * 4 * (2 * 1000 + ifl_compressed_len(1000, 8, 4) + ifl_compressed_len(1000, 32, 16));
    TH_CHECK(ifl_kv_cache_bytes(c) == want && ifl_compressed_len(1000, 8, 4) == 249 && ifl_compressed_len(1000, 32, 16) == 61,
             "bytes %zu, expected %zu", ifl_kv_cache_bytes(c), want);
    ifl_kv_cache_destroy(c);
    /* a capacity below the kernels holds no compressed keys */
    p.capacity         = 5;
    enum ifl_status st = ifl_kv_cache_create(ctx, &p, &c);
    TH_CHECK(st == IFL_STATUS_OK && ifl_kv_cache_bytes(c) == (size_t)3 * 3 * 40 * 4 * 10, "capacity 5: %zu bytes",
             ifl_kv_cache_bytes(c));
    ifl_kv_cache_destroy(c);
}

/* ==== emission points, by count, on the spec's worked example ==== */

static void test_emission_points(void) {
    if (!th_case("EMISSION_POINTS(default 32/16 and 128/64, D 8)")) return;
    struct ifl_sparse_config cfg = ifl_sparse_config_default();
    struct stream            s   = stream_make(300, 2, 1, 8, IFL_DTYPE_F32);
    struct ifl_kv_cache     *c   = cache_new(ctx, &cfg, &s, 300, 1);
    int                      ok  = c != NULL;
    int64_t                  prev1 = 0, prev2 = 0;
    for (int64_t len = 1; ok && len <= 300; len++) {
        ok = TH_CHECK(append(ctx, c, 0, &s, len - 1, 1) == IFL_STATUS_OK, "%s", ifl_ctx_errmsg(ctx));
        struct ifl_tensor c1, c2;
        ifl_kv_cache_view(ctx, c, 0, NULL, NULL, &c1, &c2);
        /* spec §6.1: a new C1 exactly when L >= 32 and (L - 32) % 16 == 0; a new C2 when (L - 128) % 64 == 0 */
        int64_t want1 = prev1 + (len >= 32 && (len - 32) % 16 == 0), want2 = prev2 + (len >= 128 && (len - 128) % 64 == 0);
        ok = ok && TH_CHECK(c1.shape[0] == want1 && c2.shape[0] == want2, "L=%lld: %lld/%lld keys, expected %lld/%lld",
                            (long long)len, (long long)c1.shape[0], (long long)c2.shape[0], (long long)want1, (long long)want2);
        prev1 = c1.shape[0];
        prev2 = c2.shape[0];
    }
    TH_CHECK(prev1 == 17 && prev2 == 3, "300 tokens: %lld fine, %lld coarse keys", (long long)prev1, (long long)prev2);
    if (ok) check_contents(ctx, c, 0, &cfg, &s, 300);
    ifl_kv_cache_destroy(c);
    stream_free(&s);
}

/* ==== the cpu backend: the same identities on its own math ==== */

static void test_cpu(enum ifl_dtype dt) {
    if (!th_case("CPU_BACKEND_CHUNKS(%s)", ifl_dtype_name(dt))) return;
    if (cpu_ctx == NULL) {
        printf("    (skipped: no cpu backend in this build)\n");
        return;
    }
    struct ifl_sparse_config cfg = small_cfg();
    struct stream            s   = stream_make(320, 8, 2, 32, dt);
    run_chunks(cpu_ctx, &cfg, &s, 0, 1, 1, 0);
    run_chunks(cpu_ctx, &cfg, &s, 150, 1, 40, 1);
    stream_free(&s);
}

int main(int argc, char **argv) {
    th_init(argc, argv);
    struct ifl_ctx_params params = ifl_ctx_params_default();
    if (ifl_ctx_create(&params, &ctx) != IFL_STATUS_OK || ifl_ctx_create(&params, &aux_ctx) != IFL_STATUS_OK) {
        printf("cannot create a ref context\n");
        return 1;
    }
    params.backend   = IFL_BACKEND_CPU;
    params.n_threads = 2;
    if (ifl_backend_available(IFL_BACKEND_CPU) && ifl_ctx_create(&params, &cpu_ctx) != IFL_STATUS_OK) cpu_ctx = NULL;

    const enum ifl_dtype dts[3] = {IFL_DTYPE_F64, IFL_DTYPE_F32, IFL_DTYPE_BF16};
    for (int i = 0; i < 3; i++) test_decode(dts[i], 0, IFL_LSE_APPROX);
    test_decode(IFL_DTYPE_F32, 0, IFL_LSE_EXACT);
    test_decode(IFL_DTYPE_BF16, 1, IFL_LSE_APPROX);
    for (int i = 0; i < 3; i++) test_random_chunks(dts[i], 200);
    test_random_chunks(IFL_DTYPE_F32, -1);
    test_random_chunks(IFL_DTYPE_F32, 0);
    test_chunks_equal_full_prefill();
    for (int i = 0; i < 3; i++) test_truncate(dts[i]);
    test_multi_seq();
    test_conversion();
    test_emission_points();
    test_errors();
    test_memory();
    test_cpu(IFL_DTYPE_F32);
    test_cpu(IFL_DTYPE_BF16);

    ifl_ctx_destroy(cpu_ctx);
    ifl_ctx_destroy(ctx);
    ifl_ctx_destroy(aux_ctx);
    return th_report();
}
