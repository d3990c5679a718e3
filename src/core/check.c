/* SPDX-License-Identifier: MIT
 *
 * check.c -- argument validation for every public op (see check.h). Messages follow one pattern:
 * "<function>: <argument> <what is wrong>, expected <what>".
 */
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ifl_status ifl__check_ctx(struct ifl_ctx *ctx) {
    return ifl__ctx_ok(ctx) ? IFL_STATUS_OK : IFL_STATUS_INVALID_ARG;
}

/* ---- config ---- */

struct ifl_sparse_config ifl_sparse_config_default(void) {
    struct ifl_sparse_config c;
    memset(&c, 0, sizeof c);
    c.block_size           = 64;
    c.kernel_size          = 32;
    c.kernel_stride        = 16;
    c.coarse_kernel_size   = 128;
    c.coarse_kernel_stride = 64;
    c.init_blocks          = 1;
    c.window_size          = 2048;
    c.topk                 = 64;
    c.dense_len            = 8192;
    c.lse_mode             = IFL_LSE_APPROX;
    c.scale                = 0.0;
    return c;
}

enum ifl_status ifl__check_config(struct ifl_ctx *ctx, const char *fn,
                                  const struct ifl_sparse_config *cfg,
                                  struct ifl_sparse_config *out) {
    struct ifl_sparse_config c = cfg ? *cfg : ifl_sparse_config_default();
    const enum ifl_status    E = IFL_STATUS_INVALID_ARG;
    const struct {
        const char *name;
        int32_t     value;
    } sizes[] = {
        {"block_size", c.block_size},
        {"kernel_size", c.kernel_size},
        {"kernel_stride", c.kernel_stride},
        {"coarse_kernel_size", c.coarse_kernel_size},
        {"coarse_kernel_stride", c.coarse_kernel_stride},
        {"topk", c.topk},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value <= 0)
            return IFL_FAIL(ctx, E, "%s: config %s=%d, expected a positive size", fn,
                            sizes[i].name, (int)sizes[i].value);
    if (c.block_size % c.kernel_stride != 0)
        return IFL_FAIL(ctx, E, "%s: config block_size=%d, expected a multiple of kernel_stride=%d",
                        fn, (int)c.block_size, (int)c.kernel_stride);
    if (c.kernel_size % c.kernel_stride != 0)
        return IFL_FAIL(ctx, E, "%s: config kernel_size=%d, expected a multiple of kernel_stride=%d",
                        fn, (int)c.kernel_size, (int)c.kernel_stride);
    if (c.coarse_kernel_size % c.coarse_kernel_stride != 0)
        return IFL_FAIL(ctx, E,
                        "%s: config coarse_kernel_size=%d, expected a multiple of "
                        "coarse_kernel_stride=%d",
                        fn, (int)c.coarse_kernel_size, (int)c.coarse_kernel_stride);
    if (c.init_blocks < 0)
        return IFL_FAIL(ctx, E, "%s: config init_blocks=%d, expected >= 0", fn, (int)c.init_blocks);
    if (c.window_size < 0 || c.window_size % c.block_size != 0)
        return IFL_FAIL(ctx, E,
                        "%s: config window_size=%d, expected >= 0 and a multiple of block_size=%d",
                        fn, (int)c.window_size, (int)c.block_size);
    if ((int64_t)c.topk < (int64_t)c.init_blocks + 1)
        return IFL_FAIL(ctx, E,
                        "%s: config topk=%d, expected >= init_blocks + 1 = %d (the forced blocks "
                        "must fit in the selection)",
                        fn, (int)c.topk, (int)c.init_blocks + 1);
    if ((int64_t)c.topk + c.window_size / c.block_size > INT32_MAX / 2)
        return IFL_FAIL(ctx, E, "%s: config topk=%d with window_size=%d is too large", fn,
                        (int)c.topk, (int)c.window_size);
    if (c.dense_len < -1)
        return IFL_FAIL(ctx, E, "%s: config dense_len=%lld, expected >= 0 or -1 (always sparse)",
                        fn, (long long)c.dense_len);
    if (c.lse_mode != IFL_LSE_APPROX && c.lse_mode != IFL_LSE_EXACT)
        return IFL_FAIL(ctx, E, "%s: config lse_mode=%d, expected IFL_LSE_APPROX or IFL_LSE_EXACT",
                        fn, (int)c.lse_mode);
    if (!isfinite(c.scale) || c.scale < 0)
        return IFL_FAIL(ctx, E, "%s: config scale=%g, expected a finite value > 0 (or 0 = 1/sqrt(D))",
                        fn, c.scale);
    *out = c;
    return IFL_STATUS_OK;
}

enum ifl_status ifl_sparse_config_check(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg) {
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if (cfg == NULL)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "ifl_sparse_config_check: cfg is NULL");
    struct ifl_sparse_config c;
    enum ifl_status          st = ifl__check_config(ctx, "ifl_sparse_config_check", cfg, &c);
    if (st == IFL_STATUS_OK) ctx->errmsg[0] = '\0';
    return st;
}

int64_t ifl_compressed_len(int64_t n_keys, int32_t kernel_size, int32_t kernel_stride) {
    if (kernel_size <= 0 || kernel_stride <= 0 || n_keys < kernel_size) return 0;
    return (n_keys - kernel_size) / kernel_stride + 1;
}

int64_t ifl_select_width(const struct ifl_sparse_config *cfg, int64_t n_keys) {
    if (cfg == NULL || cfg->block_size <= 0 || n_keys <= 0) return 0;
    int64_t list = (int64_t)cfg->topk + cfg->window_size / cfg->block_size;
    int64_t nb   = ifl__ceil_div(n_keys, cfg->block_size);
    return list < nb ? list : nb;
}

/* ---- tensors ---- */

static const char *accept_str(enum ifl__accept accept) {
    switch (accept) {
    case IFL__ACCEPT_FLOAT: return "f64, f32, f16 or bf16";
    case IFL__ACCEPT_LSE: return "f64 or f32";
    case IFL__ACCEPT_INDEX: return "i32";
    }
    return "?";
}

static int accepts(enum ifl__accept accept, enum ifl_dtype dtype) {
    switch (accept) {
    case IFL__ACCEPT_FLOAT: return ifl__dtype_is_float(dtype);
    case IFL__ACCEPT_LSE: return dtype == IFL_DTYPE_F64 || dtype == IFL_DTYPE_F32;
    case IFL__ACCEPT_INDEX: return dtype == IFL_DTYPE_I32;
    }
    return 0;
}

/* Largest element offset a tensor may span, so byte offsets never overflow. */
#define IFL__MAX_SPAN (INT64_MAX / 16)
/* Largest element count of one tensor: sizes computed from it never overflow, and rows fit the
 * int32 cumulative counts of a batch. */
#define IFL__MAX_ELEMENTS ((int64_t)1 << 40)

enum ifl_status ifl__check_tensor(struct ifl_ctx *ctx, const char *fn, const char *name,
                                  const struct ifl_tensor *t, int ndim, const int64_t *shape,
                                  enum ifl__accept accept) {
    if (t == NULL) return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s is NULL", fn, name);
    if (t->data == NULL)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s.data is NULL", fn, name);
    if (!accepts(accept, t->dtype))
        return IFL_FAIL(ctx, IFL_STATUS_DTYPE, "%s: %s.dtype=%s, expected %s", fn, name,
                        ifl_dtype_name(t->dtype), accept_str(accept));
    if (t->ndim != ndim)
        return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: %s has rank %d, expected %d", fn, name,
                        t->ndim, ndim);
    int64_t span = 0, count = 1;
    for (int i = 0; i < ndim; i++) {
        if (t->shape[i] <= 0)
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: %s.shape[%d]=%lld, expected > 0", fn, name,
                            i, (long long)t->shape[i]);
        if (shape && shape[i] >= 0 && t->shape[i] != shape[i])
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: %s.shape[%d]=%lld, expected %lld", fn,
                            name, i, (long long)t->shape[i], (long long)shape[i]);
        if (t->stride[i] < 0)
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: %s.stride[%d]=%lld, expected >= 0", fn,
                            name, i, (long long)t->stride[i]);
        if (t->shape[i] > IFL__MAX_ELEMENTS / count)
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: %s has more than 2^40 elements, expected fewer",
                            fn, name);
        count *= t->shape[i];
        int64_t n = t->shape[i] - 1;
        if (n > 0 && t->stride[i] > (IFL__MAX_SPAN - span) / n)
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: %s's shape and strides span too much memory",
                            fn, name);
        span += n * t->stride[i];
    }
    if (t->stride[ndim - 1] != 1)
        return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: %s.stride[%d]=%lld, expected 1 (the last dimension must be contiguous)",
                        fn, name, ndim - 1, (long long)t->stride[ndim - 1]);
    return IFL_STATUS_OK;
}

/* ---- problem ---- */

static enum ifl_status resolve_batch(struct ifl_ctx *ctx, const char *fn,
                                     const struct ifl_batch *batch, struct ifl__problem *pb) {
    const enum ifl_status E = IFL_STATUS_INVALID_ARG;
    if (batch == NULL) {
        if (pb->tk < pb->tq)
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE,
                            "%s: k has %lld rows but q has %lld, expected at least as many keys as "
                            "queries (keys = past + queries)",
                            fn, (long long)pb->tk, (long long)pb->tq);
        pb->seqs = malloc(sizeof *pb->seqs);
        if (pb->seqs == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn);
        pb->n_seqs  = 1;
        pb->seqs[0] = (struct ifl__seq){0, pb->tq, 0, pb->tk, pb->tk - pb->tq};
        return IFL_STATUS_OK;
    }
    if (batch->n_seqs < 1)
        return IFL_FAIL(ctx, E, "%s: batch.n_seqs=%d, expected >= 1", fn, (int)batch->n_seqs);
    /* an op without queries (compression) reads only cu_seqlens_k */
    const int32_t *cq = pb->q ? batch->cu_seqlens_q : batch->cu_seqlens_k;
    const int32_t *ck = batch->cu_seqlens_k;
    const char    *qn = pb->q ? "q" : "k"; /* name cq by what it is */
    if (cq == NULL || ck == NULL)
        return IFL_FAIL(ctx, E, "%s: batch.cu_seqlens_%s is NULL", fn, cq == NULL ? qn : "k");
    int32_t        n  = batch->n_seqs;
    if (cq[0] != 0 || ck[0] != 0)
        return IFL_FAIL(ctx, E, "%s: batch.cu_seqlens_%s[0]=%d, expected 0", fn,
                        cq[0] != 0 ? qn : "k", (int)(cq[0] != 0 ? cq[0] : ck[0]));
    for (int32_t s = 0; s < n; s++) {
        if (cq[s + 1] < cq[s] || ck[s + 1] < ck[s])
            return IFL_FAIL(ctx, E, "%s: batch.cu_seqlens_%s decreases at entry %d, expected a "
                            "non-decreasing cumulative count",
                            fn, cq[s + 1] < cq[s] ? qn : "k", (int)s + 1);
        if (ck[s + 1] - ck[s] < cq[s + 1] - cq[s])
            return IFL_FAIL(ctx, E, "%s: batch sequence %d has %d keys and %d queries, expected "
                            "at least as many keys as queries",
                            fn, (int)s, (int)(ck[s + 1] - ck[s]), (int)(cq[s + 1] - cq[s]));
    }
    if (cq[n] != pb->tq || ck[n] != pb->tk)
        return IFL_FAIL(ctx, IFL_STATUS_SHAPE,
                        "%s: batch covers %d query and %d key rows, expected q's %lld and k's %lld",
                        fn, (int)cq[n], (int)ck[n], (long long)pb->tq, (long long)pb->tk);
    pb->seqs = malloc((size_t)n * sizeof *pb->seqs);
    if (pb->seqs == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn);
    pb->n_seqs = n;
    for (int32_t s = 0; s < n; s++) {
        int64_t nq  = cq[s + 1] - cq[s];
        int64_t nk  = ck[s + 1] - ck[s];
        pb->seqs[s] = (struct ifl__seq){cq[s], nq, ck[s], nk, nk - nq};
    }
    return IFL_STATUS_OK;
}

enum ifl_status ifl__problem_begin(struct ifl_ctx *ctx, const char *fn,
                                   const struct ifl_sparse_config *cfg,
                                   const struct ifl_batch *batch, const struct ifl_tensor *q,
                                   const struct ifl_tensor *k, const struct ifl_tensor *v,
                                   struct ifl__problem *pb) {
    memset(pb, 0, sizeof *pb);
    pb->fn = fn;
    enum ifl_status st;
    if ((st = ifl__check_config(ctx, fn, cfg, &pb->cfg))) return st;
    if (q && (st = ifl__check_tensor(ctx, fn, "q", q, 3, NULL, IFL__ACCEPT_FLOAT))) return st;
    if ((st = ifl__check_tensor(ctx, fn, "k", k, 3, NULL, IFL__ACCEPT_FLOAT))) return st;
    int64_t d = k->shape[2];
    if (d > IFL_MAX_HEAD_DIM)
        return IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED, "%s: head dim k.shape[2]=%lld, expected <= %d",
                        fn, (long long)d, IFL_MAX_HEAD_DIM);
    if (k->shape[0] > INT32_MAX || (q && q->shape[0] > INT32_MAX))
        return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: %s has more than 2^31-1 rows, expected fewer", fn,
                        k->shape[0] > INT32_MAX ? "k" : "q");
    pb->tk  = k->shape[0];
    pb->hkv = k->shape[1];
    pb->d   = d;
    if (q) {
        if (q->dtype != k->dtype)
            return IFL_FAIL(ctx, IFL_STATUS_DTYPE, "%s: q.dtype=%s but k.dtype=%s, expected one dtype",
                            fn, ifl_dtype_name(q->dtype), ifl_dtype_name(k->dtype));
        if (q->shape[2] != d)
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE, "%s: q.shape[2]=%lld, expected k's head dim %lld",
                            fn, (long long)q->shape[2], (long long)d);
        if (q->shape[1] % pb->hkv != 0)
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE,
                            "%s: q.shape[1]=%lld query heads, expected a multiple of k.shape[1]=%lld "
                            "KV heads (GQA)",
                            fn, (long long)q->shape[1], (long long)pb->hkv);
        pb->tq = q->shape[0];
        pb->hq = q->shape[1];
        pb->g  = pb->hq / pb->hkv;
    } else {
        pb->tq = pb->tk; /* ops without queries (compression) treat every key row as its own */
    }
    if (v) {
        const int64_t vshape[3] = {pb->tk, pb->hkv, d};
        if ((st = ifl__check_tensor(ctx, fn, "v", v, 3, vshape, IFL__ACCEPT_FLOAT))) return st;
        if (v->dtype != k->dtype)
            return IFL_FAIL(ctx, IFL_STATUS_DTYPE, "%s: v.dtype=%s but k.dtype=%s, expected one dtype",
                            fn, ifl_dtype_name(v->dtype), ifl_dtype_name(k->dtype));
    }
    pb->q = q;
    pb->k = k;
    pb->v = v;
    if (pb->cfg.scale == 0) pb->cfg.scale = 1.0 / sqrt((double)d);
    return resolve_batch(ctx, fn, batch, pb);
}

void ifl__problem_end(struct ifl__problem *pb) {
    free(pb->seqs);
    pb->seqs = NULL;
}

/* ---- selection tensors ---- */

enum ifl_status ifl__check_sel_input(struct ifl_ctx *ctx, const char *fn,
                                     const struct ifl__problem *pb, const struct ifl_tensor *sel) {
    const int64_t   shape[3] = {pb->hkv, pb->tq, -1};
    enum ifl_status st       = ifl__check_tensor(ctx, fn, "sel", sel, 3, shape, IFL__ACCEPT_INDEX);
    if (st || ctx->backend->device_memory) return st; /* device rows are checked by the backend */
    const int32_t *idx = sel->data;
    int64_t        K   = sel->shape[2];
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const struct ifl__seq *sq = &pb->seqs[s];
        int64_t                nb = ifl__ceil_div(sq->nk, pb->cfg.block_size);
        for (int64_t g = 0; g < pb->hkv; g++)
            for (int64_t i = sq->q0; i < sq->q0 + sq->nq; i++) {
                const int32_t *row  = idx + g * sel->stride[0] + i * sel->stride[1];
                int64_t        prev = -1;
                int            done = 0;
                for (int64_t c = 0; c < K; c++) {
                    int32_t b = row[c];
                    if (done ? b != -1 : (b != -1 && (b <= prev || b >= nb)))
                        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG,
                                        "%s: sel[%lld, %lld, %lld]=%d, expected %s", fn,
                                        (long long)g, (long long)i, (long long)c, (int)b,
                                        done ? "-1 (padding continues to the end of a row)"
                                             : "a block index above the previous one and below the "
                                               "sequence's block count, or -1");
                    if (b == -1) done = 1;
                    prev = b;
                }
            }
    }
    return IFL_STATUS_OK;
}

enum ifl_status ifl__check_sel_output(struct ifl_ctx *ctx, const char *fn,
                                      const struct ifl__problem *pb, const struct ifl_tensor *sel,
                                      const unsigned char *need) {
    const int64_t   shape[3] = {pb->hkv, pb->tq, -1};
    enum ifl_status st       = ifl__check_tensor(ctx, fn, "sel", sel, 3, shape, IFL__ACCEPT_INDEX);
    if (st) return st;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        if (need && !need[s]) continue;
        int64_t w = ifl_select_width(&pb->cfg, pb->seqs[s].nk);
        if (pb->seqs[s].nq > 0 && sel->shape[2] < w)
            return IFL_FAIL(ctx, IFL_STATUS_SHAPE,
                            "%s: sel.shape[2]=%lld, expected at least %lld (the selection width "
                            "min(topk + window/block_size, blocks) of sequence %lld)",
                            fn, (long long)sel->shape[2], (long long)w, (long long)s);
    }
    return IFL_STATUS_OK;
}

/* ---- aliasing ---- */

static void byte_span(const struct ifl_tensor *t, const char **lo, const char **hi) {
    int64_t last = 0;
    for (int i = 0; i < t->ndim; i++) last += (t->shape[i] - 1) * t->stride[i];
    *lo = (const char *)t->data;
    *hi = *lo + (last + 1) * (int64_t)ifl_dtype_size(t->dtype);
}

static int overlaps(const struct ifl_tensor *a, const struct ifl_tensor *b) {
    const char *alo, *ahi, *blo, *bhi;
    byte_span(a, &alo, &ahi);
    byte_span(b, &blo, &bhi);
    return alo < bhi && blo < ahi;
}

enum ifl_status ifl__check_overlap(struct ifl_ctx *ctx, const char *fn,
                                   const struct ifl_tensor *const *outs, const char *const *out_names,
                                   int n_outs, const struct ifl_tensor *const *ins,
                                   const char *const *in_names, int n_ins) {
    for (int i = 0; i < n_outs; i++) {
        if (outs[i] == NULL) continue;
        for (int j = 0; j < n_ins; j++)
            if (ins[j] && overlaps(outs[i], ins[j]))
                return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG,
                                "%s: output %s overlaps input %s, expected separate memory", fn,
                                out_names[i], in_names[j]);
        for (int j = i + 1; j < n_outs; j++)
            if (outs[j] && overlaps(outs[i], outs[j]))
                return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG,
                                "%s: outputs %s and %s overlap, expected separate memory", fn,
                                out_names[i], out_names[j]);
    }
    return IFL_STATUS_OK;
}

enum ifl_status ifl__check_finite(struct ifl_ctx *ctx, const char *fn, const char *name,
                                  const struct ifl_tensor *t) {
    int64_t pos[IFL_MAX_DIMS];
    if (t == NULL || !ctx->params.check_finite || ctx->backend->device_memory ||
        !ifl_tensor_find_nonfinite(t, pos))
        return IFL_STATUS_OK;
    char where[96];
    int  n = 0;
    for (int i = 0; i < t->ndim; i++)
        n += snprintf(where + n, sizeof where - (size_t)n, "%s%lld", i ? ", " : "", (long long)pos[i]);
    double x = ifl__load(t, ifl__off3(t, pos[0], pos[1], pos[2]));
    return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s[%s] is %s, expected finite values", fn,
                    name, where, isnan(x) ? "NaN" : (x > 0 ? "+Inf" : "-Inf"));
}
