/* SPDX-License-Identifier: MIT
 *
 * kv_cache.c -- the KV cache (include/infllm.h, "KV cache"; spec §6.1): storage of K, V and the
 * fine and coarse compressed keys of a batch of sequences in the memory of the backend that
 * created it (host memory, or device memory through the backend's buffer slots), incremental
 * emission of compressed keys, rollback, and attention against the cache through the library's
 * one dense/sparse switch (switch.c).
 *
 * Backend-independent: the cache only moves rows and builds problems on tensor views of its
 * storage; every number is computed by ctx->backend, so a cache gives the stateless ops' results
 * bit for bit on the same backend:
 *   - new compressed keys come from the backend's compress_keys run on a view of just the key rows
 *     of the newly completed windows (a window's mean depends on its own rows only, and the
 *     backends round it to the keys' dtype, which here is the storage dtype);
 *   - attention is ifl__problem_begin on views of the first len rows, then ifl__switch_fwd (dense_fwd,
 *     or select with pb.c1/pb.c2 pointing at the cached compressed keys and sparse_fwd);
 *   - rows enter the storage (appends, queries of another dtype) through the backend's copy_rows
 *     slot on device memory, the host loop copy_rows below otherwise.
 * A compressed-key count is a pure function of the length (ifl_compressed_len), so the cache
 * stores one length per sequence and nothing else: truncation is O(1), and rows past the counts
 * are dead until an append rewrites them.
 */
#include "check.h"

#include <stdlib.h>
#include <string.h>

#define IFL__KVC_MAGIC 0x49464c4bu /* "IFLK": a live cache */
#define IFL__KVC_DEAD  0x44454144u /* "DEAD": set by destroy */

struct ifl_kv_cache {
    uint32_t                   magic;
    struct ifl_kv_cache_params params; /* cfg validated (scale left as given: 0 = 1/sqrt(D)) */
    int64_t                    n1_cap, n2_cap; /* C1 / C2 rows per sequence at full capacity */
    int64_t                    row;            /* elements per token row: Hkv * D */
    size_t                     esize;          /* bytes per element of the storage dtype */
    size_t                     bytes;          /* storage bytes (ifl_kv_cache_bytes) */
    unsigned char             *k, *v, *c1, *c2; /* [n_seqs][cap or n*_cap][Hkv][D] each */
    int64_t                   *len;            /* [n_seqs] */
    /* where the storage lives: host memory (calloc), or device memory of `backend` allocated
     * through its buffer slots on `owner`, which must outlive the cache (destroy frees it there) */
    const struct ifl__backend *backend;
    struct ifl_ctx            *owner;
    int                        device;
};

/* ---- small helpers ---- */

static int cache_ok(const struct ifl_kv_cache *c) { return c != NULL && c->magic == IFL__KVC_MAGIC; }

/* A success clears the message of an earlier failure. */
static enum ifl_status finish(struct ifl_ctx *ctx, enum ifl_status st) {
    if (st == IFL_STATUS_OK) ctx->errmsg[0] = '\0';
    return st;
}

/* The live cache and a sequence index of it. */
static enum ifl_status check_cache(struct ifl_ctx *ctx, const char *fn, const struct ifl_kv_cache *c,
                                   int32_t seq) {
    if (c == NULL) return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: cache is NULL", fn);
    if (!cache_ok(c))
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG,
                        "%s: cache is not a live KV cache (destroyed or garbage handle)", fn);
    if (seq < 0 || seq >= c->params.n_seqs)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: seq=%d, expected 0 <= seq < n_seqs=%d", fn,
                        (int)seq, (int)c->params.n_seqs);
    return IFL_STATUS_OK;
}

/* ctx may compute on the cache's storage: host storage with a host backend, device storage with
 * the backend that holds it; with rows_in (append, attention), the backend must also be able to
 * write rows into it (host, or a device backend with a copy_rows slot). */
static enum ifl_status check_storage(struct ifl_ctx *ctx, const char *fn, const struct ifl_kv_cache *c,
                                     int rows_in) {
    if (!c->device && ctx->backend->device_memory)
        return IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED,
                        "%s: the %s backend computes on device memory, expected a host backend (ref, cpu): "
                        "this KV cache keeps its storage in host memory",
                        fn, ctx->backend->name);
    if (c->device && ctx->backend != c->backend)
        return IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED,
                        "%s: this KV cache keeps its storage in the %s backend's device memory, expected a %s "
                        "context (got %s)",
                        fn, c->backend->name, c->backend->name, ctx->backend->name);
    if (rows_in && c->device && ctx->backend->copy_rows == NULL)
        return IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED,
                        "%s: the %s backend cannot write rows into a KV cache yet (no copy_rows kernel)", fn,
                        ctx->backend->name);
    return IFL_STATUS_OK;
}

/* Rows [r0, r0+n) of sequence seq of one storage array (per_seq rows per sequence), as a
 * contiguous [n, Hkv, D] tensor of the storage dtype. n may be 0 (the data stays valid). */
static struct ifl_tensor rows(const struct ifl_kv_cache *c, unsigned char *base, int64_t per_seq,
                              int32_t seq, int64_t r0, int64_t n) {
    const int64_t shape[3] = {n, c->params.n_heads_kv, c->params.head_dim};
    struct ifl_tensor t = ifl_tensor_make(NULL, c->params.dtype, 3, shape);
    t.data = base + (size_t)((seq * per_seq + r0) * c->row) * c->esize;
    return t;
}

static struct ifl_tensor k_rows(const struct ifl_kv_cache *c, int32_t seq, int64_t r0, int64_t n) {
    return rows(c, c->k, c->params.capacity, seq, r0, n);
}
static struct ifl_tensor v_rows(const struct ifl_kv_cache *c, int32_t seq, int64_t r0, int64_t n) {
    return rows(c, c->v, c->params.capacity, seq, r0, n);
}

static int64_t n_fine(const struct ifl_sparse_config *cfg, int64_t len) {
    return ifl_compressed_len(len, cfg->kernel_size, cfg->kernel_stride);
}
static int64_t n_coarse(const struct ifl_sparse_config *cfg, int64_t len) {
    return ifl_compressed_len(len, cfg->coarse_kernel_size, cfg->coarse_kernel_stride);
}

/* Copies src into dst (same shape [n, H, D], last dimension contiguous), converting the dtype. */
static void copy_rows(const struct ifl_tensor *dst, const struct ifl_tensor *src) {
    const int64_t n = src->shape[0], h = src->shape[1], d = src->shape[2];
    const size_t  es = ifl_dtype_size(src->dtype);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < h; j++) {
            int64_t so = ifl__off3(src, i, j, 0), doff = ifl__off3(dst, i, j, 0);
            if (src->dtype == dst->dtype) {
                memcpy((char *)dst->data + (size_t)doff * es, (const char *)src->data + (size_t)so * es,
                       (size_t)d * es);
            } else {
                for (int64_t x = 0; x < d; x++) ifl__store(dst, doff + x, ifl__load(src, so + x));
            }
        }
}

/* Rows into the cache's memory (or a buffer like it): the backend's copy_rows for device
 * memory, the host loop otherwise. */
static enum ifl_status put_rows(struct ifl_ctx *ctx, const struct ifl_tensor *dst, const struct ifl_tensor *src) {
    if (ctx->backend->device_memory) return ctx->backend->copy_rows(ctx, dst, src); /* check_storage */
    copy_rows(dst, src);
    return IFL_STATUS_OK;
}

/* After converting a finite input to the storage dtype: refuses a value that overflowed. (On
 * device memory that scan is the copy_rows kernel's job, as the NaN/Inf scan is the ops'.) */
static enum ifl_status check_converted(struct ifl_ctx *ctx, const char *fn, const char *name,
                                       const struct ifl_tensor *src, const struct ifl_tensor *conv) {
    int64_t pos[IFL_MAX_DIMS];
    if (!ctx->params.check_finite || src->dtype == conv->dtype || ctx->backend->device_memory ||
        !ifl_tensor_find_nonfinite(conv, pos))
        return IFL_STATUS_OK;
    return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG,
                    "%s: %s[%lld, %lld, %lld]=%g overflows the storage dtype %s, expected values "
                    "within its range",
                    fn, name, (long long)pos[0], (long long)pos[1], (long long)pos[2],
                    ifl__load(src, ifl__off3(src, pos[0], pos[1], pos[2])), ifl_dtype_name(conv->dtype));
}

/* ---- creation ---- */

struct ifl_kv_cache_params ifl_kv_cache_params_default(void) {
    struct ifl_kv_cache_params p;
    memset(&p, 0, sizeof p);
    p.capacity   = 65536;
    p.n_seqs     = 1;
    p.n_heads_kv = 2;
    p.head_dim   = 128;
    p.dtype      = IFL_DTYPE_BF16;
    p.cfg        = ifl_sparse_config_default();
    return p;
}

/* a * b into *r when it stays within limit (all non-negative). */
static int mul_within(int64_t a, int64_t b, int64_t limit, int64_t *r) {
    if (a != 0 && b > limit / a) return 0;
    *r = a * b;
    return 1;
}

enum ifl_status ifl_kv_cache_create(struct ifl_ctx *ctx, const struct ifl_kv_cache_params *params,
                                    struct ifl_kv_cache **out) {
    const char     *fn = "ifl_kv_cache_create";
    enum ifl_status st;
    if (out) *out = NULL;
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if (params == NULL || out == NULL)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s is NULL", fn, params ? "out" : "params");
    struct ifl_kv_cache_params p = *params;
    const struct {
        const char *name;
        int64_t     value;
    } sizes[] = {{"capacity", p.capacity}, {"n_seqs", p.n_seqs}, {"n_heads_kv", p.n_heads_kv},
                 {"head_dim", p.head_dim}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value < 1)
            return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: params.%s=%lld, expected >= 1", fn,
                            sizes[i].name, (long long)sizes[i].value);
    if (p.head_dim > IFL_MAX_HEAD_DIM)
        return IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED, "%s: params.head_dim=%d, expected <= %d", fn,
                        (int)p.head_dim, IFL_MAX_HEAD_DIM);
    if (!ifl__dtype_is_float(p.dtype))
        return IFL_FAIL(ctx, IFL_STATUS_DTYPE, "%s: params.dtype=%s, expected f64, f32, f16 or bf16",
                        fn, ifl_dtype_name(p.dtype));
    if ((st = ifl__check_config(ctx, fn, &params->cfg, &p.cfg))) return st;
    /* the ops take at most 2^31-1 rows and 2^40 elements per tensor (check.c) */
    if (p.capacity > INT32_MAX || p.capacity > ((int64_t)1 << 40) / ((int64_t)p.n_heads_kv * p.head_dim))
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG,
                        "%s: params.capacity=%lld, expected at most 2^31-1 tokens and at most 2^40 "
                        "elements per sequence's K (the ops' tensor limits)",
                        fn, (long long)p.capacity);

    /* sizes, refusing anything whose byte count would not fit (the ops need int64 offsets) */
    const int64_t n1 = n_fine(&p.cfg, p.capacity), n2 = n_coarse(&p.cfg, p.capacity);
    const int64_t esize = (int64_t)ifl_dtype_size(p.dtype), row = (int64_t)p.n_heads_kv * p.head_dim;
    const int64_t limit = (int64_t)(SIZE_MAX / 2 < (size_t)INT64_MAX / 16 ? SIZE_MAX / 2 : (size_t)INT64_MAX / 16);
    int64_t       rows_all, elems, bytes;
    if (p.capacity > limit / 4 || /* then 2*capacity + n1 + n2 <= limit */
        !mul_within(p.n_seqs, 2 * p.capacity + n1 + n2, limit, &rows_all) ||
        !mul_within(rows_all, row, limit, &elems) || !mul_within(elems, esize, limit, &bytes))
        return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY,
                        "%s: params.capacity=%lld x n_seqs=%d x %lld elements per token is too large "
                        "to address",
                        fn, (long long)p.capacity, (int)p.n_seqs, (long long)row);

    /* the storage in the backend's memory: its buffer slot on a device backend, else host
     * memory (calloc: lazy zero pages, so an unused capacity costs no memory) */
    struct ifl_kv_cache *c      = calloc(1, sizeof *c);
    int64_t             *len    = c ? calloc((size_t)p.n_seqs, sizeof *len) : NULL;
    const int            device = ctx->backend->device_memory;
    void                *store  = NULL;
    st                          = IFL_STATUS_OUT_OF_MEMORY;
    if (c && len) st = device ? ctx->backend->buffer_alloc(ctx, (size_t)bytes, &store) /* names itself */
                              : (store = calloc((size_t)bytes, 1)) ? IFL_STATUS_OK : IFL_STATUS_OUT_OF_MEMORY;
    if (st != IFL_STATUS_OK) {
        free(c);
        free(len);
        if (device && store == NULL && c && len) return st;
        return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory allocating %lld bytes", fn,
                        (long long)bytes);
    }
    c->magic  = IFL__KVC_MAGIC;
    c->params = p;
    c->n1_cap = n1;
    c->n2_cap = n2;
    c->row    = row;
    c->esize  = (size_t)esize;
    c->bytes  = (size_t)bytes;
    c->k      = store;
    c->v      = c->k + (size_t)(p.n_seqs * p.capacity * row * esize);
    c->c1     = c->v + (size_t)(p.n_seqs * p.capacity * row * esize);
    c->c2     = c->c1 + (size_t)(p.n_seqs * n1 * row * esize);
    c->len     = len;
    c->backend = ctx->backend;
    c->owner   = ctx;
    c->device  = device;
    *out       = c;
    return finish(ctx, IFL_STATUS_OK);
}

void ifl_kv_cache_destroy(struct ifl_kv_cache *cache) {
    if (!cache_ok(cache)) return;
    cache->magic = IFL__KVC_DEAD;
    if (cache->device) cache->backend->buffer_free(cache->owner, cache->k); /* the one storage block */
    else free(cache->k);
    free(cache->len);
    free(cache);
}

int64_t ifl_kv_cache_len(const struct ifl_kv_cache *cache, int32_t seq) {
    if (!cache_ok(cache) || seq < 0 || seq >= cache->params.n_seqs) return -1;
    return cache->len[seq];
}

size_t ifl_kv_cache_bytes(const struct ifl_kv_cache *cache) { return cache_ok(cache) ? cache->bytes : 0; }

enum ifl_status ifl_kv_cache_view(struct ifl_ctx *ctx, const struct ifl_kv_cache *cache, int32_t seq,
                                  struct ifl_tensor *k, struct ifl_tensor *v, struct ifl_tensor *c1,
                                  struct ifl_tensor *c2) {
    const char     *fn = "ifl_kv_cache_view";
    enum ifl_status st;
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if ((st = check_cache(ctx, fn, cache, seq))) return st;
    const int64_t len = cache->len[seq];
    if (k) *k = k_rows(cache, seq, 0, len);
    if (v) *v = v_rows(cache, seq, 0, len);
    if (c1) *c1 = rows(cache, cache->c1, cache->n1_cap, seq, 0, n_fine(&cache->params.cfg, len));
    if (c2) *c2 = rows(cache, cache->c2, cache->n2_cap, seq, 0, n_coarse(&cache->params.cfg, len));
    return finish(ctx, IFL_STATUS_OK);
}

/* ---- append and truncate ---- */

/* Emits the compressed keys (fine when coarse == 0, else coarse) that growing sequence seq from
 * len0 to len1 tokens completes: key j covers keys [j*stride, j*stride + kernel), so the new keys
 * a .. b-1 need exactly the key rows [a*stride, (b-1)*stride + kernel), all stored already. */
static enum ifl_status emit(struct ifl_ctx *ctx, const char *fn, struct ifl_kv_cache *c, int32_t seq,
                            int64_t len0, int64_t len1, int coarse) {
    const struct ifl_sparse_config *cfg = &c->params.cfg;
    const int64_t kernel = coarse ? cfg->coarse_kernel_size : cfg->kernel_size;
    const int64_t stride = coarse ? cfg->coarse_kernel_stride : cfg->kernel_stride;
    const int64_t a = ifl_compressed_len(len0, (int32_t)kernel, (int32_t)stride);
    const int64_t b = ifl_compressed_len(len1, (int32_t)kernel, (int32_t)stride);
    if (b <= a) return IFL_STATUS_OK;
    struct ifl_tensor   keys = k_rows(c, seq, a * stride, (b - 1 - a) * stride + kernel);
    struct ifl_tensor   dst  = coarse ? rows(c, c->c2, c->n2_cap, seq, a, b - a)
                                      : rows(c, c->c1, c->n1_cap, seq, a, b - a);
    struct ifl__problem pb;
    enum ifl_status     st = ifl__problem_begin(ctx, fn, cfg, NULL, NULL, &keys, NULL, &pb);
    if (st == IFL_STATUS_OK) {
        pb.c1 = coarse ? NULL : &dst;
        pb.c2 = coarse ? &dst : NULL;
        st    = ctx->backend->compress_keys(ctx, &pb);
    }
    ifl__problem_end(&pb);
    return st;
}

enum ifl_status ifl_kv_cache_append(struct ifl_ctx *ctx, struct ifl_kv_cache *cache, int32_t seq,
                                    const struct ifl_tensor *k_new, const struct ifl_tensor *v_new) {
    const char     *fn = "ifl_kv_cache_append";
    enum ifl_status st;
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if ((st = check_cache(ctx, fn, cache, seq))) return st;
    if ((st = check_storage(ctx, fn, cache, 1))) return st;
    const struct ifl_kv_cache_params *p = &cache->params;
    const int64_t kshape[3] = {-1, p->n_heads_kv, p->head_dim};
    if ((st = ifl__check_tensor(ctx, fn, "k_new", k_new, 3, kshape, IFL__ACCEPT_FLOAT))) return st;
    const int64_t n = k_new->shape[0], vshape[3] = {n, p->n_heads_kv, p->head_dim};
    if ((st = ifl__check_tensor(ctx, fn, "v_new", v_new, 3, vshape, IFL__ACCEPT_FLOAT))) return st;
    const int64_t len = cache->len[seq];
    if (n > p->capacity - len)
        return IFL_FAIL(ctx, IFL_STATUS_CAPACITY,
                        "%s: sequence %d holds %lld of its %lld tokens, cannot append %lld more "
                        "(capacity exceeded)",
                        fn, (int)seq, (long long)len, (long long)p->capacity, (long long)n);
    struct ifl_tensor dk = k_rows(cache, seq, len, n), dv = v_rows(cache, seq, len, n);
    const struct ifl_tensor *outs[] = {&dk, &dv}, *ins[] = {k_new, v_new};
    const char *onames[] = {"the cache's keys", "the cache's values"}, *inames[] = {"k_new", "v_new"};
    if ((st = ifl__check_overlap(ctx, fn, outs, onames, 2, ins, inames, 2))) return st;
    if ((st = ifl__check_finite(ctx, fn, "k_new", k_new))) return st;
    if ((st = ifl__check_finite(ctx, fn, "v_new", v_new))) return st;

    /* Rows at and past len are dead, so writing them changes nothing visible until len moves. */
    if ((st = put_rows(ctx, &dk, k_new))) return st;
    if ((st = put_rows(ctx, &dv, v_new))) return st;
    if ((st = check_converted(ctx, fn, "k_new", k_new, &dk))) return st;
    if ((st = check_converted(ctx, fn, "v_new", v_new, &dv))) return st;
    if ((st = emit(ctx, fn, cache, seq, len, len + n, 0))) return st;
    if ((st = emit(ctx, fn, cache, seq, len, len + n, 1))) return st;
    cache->len[seq] = len + n;
    return finish(ctx, IFL_STATUS_OK);
}

enum ifl_status ifl_kv_cache_truncate(struct ifl_ctx *ctx, struct ifl_kv_cache *cache, int32_t seq,
                                      int64_t new_len) {
    const char     *fn = "ifl_kv_cache_truncate";
    enum ifl_status st;
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if ((st = check_cache(ctx, fn, cache, seq))) return st;
    if (new_len < 0 || new_len > cache->len[seq])
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG,
                        "%s: new_len=%lld, expected 0 <= new_len <= %lld (the length of sequence %d; "
                        "truncate cannot grow it)",
                        fn, (long long)new_len, (long long)cache->len[seq], (int)seq);
    cache->len[seq] = new_len; /* the compressed-key counts follow from the length */
    return finish(ctx, IFL_STATUS_OK);
}

/* ---- attention ---- */

enum ifl_status ifl_kv_cache_attn(struct ifl_ctx *ctx, struct ifl_kv_cache *cache, int32_t seq,
                                  const struct ifl_tensor *q, const struct ifl_tensor *out,
                                  const struct ifl_tensor *lse, const struct ifl_tensor *sel,
                                  enum ifl_mode *mode) {
    const char         *fn = "ifl_kv_cache_attn";
    struct ifl__problem pb;
    enum ifl_status     st;
    void               *q_buf = NULL; /* q in the storage dtype, when it differs */
    memset(&pb, 0, sizeof pb);
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if ((st = check_cache(ctx, fn, cache, seq))) return st;
    if ((st = check_storage(ctx, fn, cache, 1))) return st;
    const struct ifl_kv_cache_params *p   = &cache->params;
    const struct ifl_sparse_config   *cfg = &p->cfg;
    const int64_t                     len = cache->len[seq];
    const int64_t qshape[3] = {-1, -1, p->head_dim};
    if ((st = ifl__check_tensor(ctx, fn, "q", q, 3, qshape, IFL__ACCEPT_FLOAT))) goto done;
    const int64_t tq = q->shape[0], hq = q->shape[1];
    if (tq > len) {
        st = IFL_FAIL(ctx, IFL_STATUS_SHAPE,
                      "%s: q has %lld rows but sequence %d holds %lld tokens, expected at most one "
                      "query per cached token (append the queries' keys and values first)",
                      fn, (long long)tq, (int)seq, (long long)len);
        goto done;
    }
    if (hq % p->n_heads_kv != 0) {
        st = IFL_FAIL(ctx, IFL_STATUS_SHAPE,
                      "%s: q.shape[1]=%lld query heads, expected a multiple of the cache's %d KV heads "
                      "(GQA)",
                      fn, (long long)hq, (int)p->n_heads_kv);
        goto done;
    }
    const unsigned char sparse = (unsigned char)ifl__runs_sparse(cfg, len);

    struct ifl_tensor k = k_rows(cache, seq, 0, len), v = v_rows(cache, seq, 0, len);
    struct ifl_tensor c1 = rows(cache, cache->c1, cache->n1_cap, seq, 0, n_fine(cfg, len));
    struct ifl_tensor c2 = rows(cache, cache->c2, cache->n2_cap, seq, 0, n_coarse(cfg, len));
    /* outputs first (shapes, overlap), then the input scan, then the q conversion */
    const int64_t oshape[3] = {tq, hq, p->head_dim}, lshape[2] = {tq, hq};
    if ((st = ifl__check_tensor(ctx, fn, "out", out, 3, oshape, IFL__ACCEPT_FLOAT))) goto done;
    if (lse && (st = ifl__check_tensor(ctx, fn, "lse", lse, 2, lshape, IFL__ACCEPT_LSE))) goto done;
    {
        const struct ifl_tensor *outs[] = {out, lse, sel}, *ins[] = {q, &k, &v, c1.shape[0] ? &c1 : NULL,
                                                                      c2.shape[0] ? &c2 : NULL};
        const char *onames[] = {"out", "lse", "sel"};
        const char *inames[] = {"q", "the cache's keys", "the cache's values", "the cache's fine compressed keys",
                                "the cache's coarse compressed keys"};
        if (sel) {
            const int64_t sshape[3] = {p->n_heads_kv, tq, -1};
            if ((st = ifl__check_tensor(ctx, fn, "sel", sel, 3, sshape, IFL__ACCEPT_INDEX))) goto done;
        }
        if ((st = ifl__check_overlap(ctx, fn, outs, onames, 3, ins, inames, 5))) goto done;
    }
    if ((st = ifl__check_finite(ctx, fn, "q", q))) goto done;
    struct ifl_tensor qs = *q;
    if (q->dtype != p->dtype) {
        if ((st = ifl__scratch_alloc(ctx, fn, (size_t)(tq * hq * p->head_dim) * cache->esize, &q_buf))) goto done;
        qs = ifl_tensor_make(q_buf, p->dtype, 3, oshape);
        if ((st = put_rows(ctx, &qs, q))) goto done;
        if ((st = check_converted(ctx, fn, "q", q, &qs))) goto done;
    }

    if ((st = ifl__problem_begin(ctx, fn, cfg, NULL, &qs, &k, &v, &pb))) goto done;
    if (sel && (st = ifl__check_sel_output(ctx, fn, &pb, sel, &sparse))) goto done;
    pb.sel = sel;
    pb.out = out;
    pb.lse = lse;
    /* empty compressed keys stay NULL: the backend then derives none from k either */
    pb.c1 = c1.shape[0] ? &c1 : NULL;
    pb.c2 = c2.shape[0] ? &c2 : NULL;
    if ((st = ifl__switch_fwd(ctx, &pb, &sparse))) goto done;
    if (mode) *mode = sparse ? IFL_MODE_SPARSE : IFL_MODE_DENSE;
done:
    ifl__problem_end(&pb);
    ifl_buffer_free(ctx, q_buf);
    return finish(ctx, st);
}
