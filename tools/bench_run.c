/* SPDX-License-Identifier: MIT
 *
 * bench_run.c -- the case runners of `infllm bench` (bench.h): the timed jobs (median of runs
 * after a warm-up), the selection statistics and FLOP/byte counts of a case, and the forward,
 * backward and KV-cache decode cases, each ending in a table row (and a JSON object).
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum job { J_DENSE, J_COMPRESS, J_SELECT, J_ATTEND, J_SPARSE, J_DENSE_BWD, J_SPARSE_BWD };
static const char *const job_names[] = {"dense",   "compress",      "select",          "attend",
                                        "sparse", "dense backward", "sparse backward"};

static enum ifl_status run_job_async(struct bench *b, const struct views *w, enum job j) {
    const struct ifl_sparse_config *cfg = &b->cfg;
    enum ifl_status                 st;
    switch (j) {
    case J_DENSE: return ifl_dense_attn_fwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->out, &w->lse);
    case J_COMPRESS:
        return ifl_compress_keys(b->ctx, cfg, NULL, &w->k, w->has_c1 ? &w->c1 : NULL, w->has_c2 ? &w->c2 : NULL);
    case J_SELECT: return ifl_select(b->ctx, cfg, NULL, &w->q, &w->k, &w->sel);
    case J_ATTEND: return ifl_sparse_attn_fwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->sel, &w->out, &w->lse);
    case J_SPARSE:
        st = ifl_select(b->ctx, cfg, NULL, &w->q, &w->k, &w->sel);
        if (st == IFL_STATUS_OK)
            st = ifl_sparse_attn_fwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->sel, &w->out, &w->lse);
        return st;
    case J_DENSE_BWD:
        return ifl_dense_attn_bwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->out, &w->lse, &w->dout, &w->dq, &w->dk,
                                  &w->dv);
    case J_SPARSE_BWD:
        return ifl_sparse_attn_bwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->sel, &w->out2, &w->lse2, &w->dout,
                                   &w->dq, &w->dk, &w->dv);
    }
    return IFL_STATUS_INTERNAL;
}

/* The job, then a wait for the work it queued (a no-op on host backends), so that a host clock
 * around it measures a device backend's work too. */
static enum ifl_status run_job(struct bench *b, const struct views *w, enum job j) {
    enum ifl_status st = run_job_async(b, w, j);
    if (st == IFL_STATUS_OK && b->device) st = ifl_ctx_sync(b->ctx);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One warm-up, then the timed runs; *median in seconds, *runs_done the number of timed runs. */
static int measure(struct bench *b, const struct views *w, enum job j, int default_runs, const char *what,
                   double *median, int *runs_done) {
    bench_progress(0, "%s: %s (warm-up)", what, job_names[j]);
    double          t0   = cli_now();
    enum ifl_status st   = run_job(b, w, j);
    double          warm = cli_now() - t0;
    if (st != IFL_STATUS_OK) goto fail;
    if (b->runs == 0 && warm > 10.0) { /* so long that the warm-up's own costs do not matter */
        *median    = warm;
        *runs_done = 0;
        return CLI_OK;
    }
    int n = b->runs > 0 ? (int)b->runs : warm > 2.0 ? 1 : default_runs;
    double s[MAX_RUNS];
    for (int i = 0; i < n; i++) {
        bench_progress(0, "%s: %s (run %d of %d)", what, job_names[j], i + 1, n);
        t0 = cli_now();
        st = run_job(b, w, j);
        s[i] = cli_now() - t0;
        if (st != IFL_STATUS_OK) goto fail;
    }
    qsort(s, (size_t)n, sizeof s[0], cmp_double);
    *median    = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    *runs_done = n;
    return CLI_OK;
fail:
    bench_progress_clear();
    cli_error(b->cmd, "%s, %s: %s", what, job_names[j], ifl_ctx_errmsg(b->ctx));
    return CLI_FAILURE;
}

/* What the selection implies: keys attended per row and the union of selected blocks. */
struct sel_stats {
    double attended;   /* sum over (KV head, query) rows of the keys each attends */
    double union_keys; /* sum over KV heads of the tokens of the blocks some query selected */
    double union_blk;  /* sum over KV heads of those blocks */
};

static void selection_stats(struct bench *b, const struct views *w, int64_t n_keys, int64_t tq, struct sel_stats *ss) {
    const int64_t bs = b->cfg.block_size, nb = (n_keys + bs - 1) / bs, width = w->sel.shape[2];
    const int64_t past = n_keys - tq;
    memset(ss, 0, sizeof *ss);
    for (int64_t g = 0; g < b->hkv; g++) {
        memset(b->seen, 0, (size_t)nb);
        for (int64_t i = 0; i < tq; i++) {
            const int32_t *row = b->sel_host + (g * tq + i) * width;
            const int64_t  p   = past + i;
            for (int64_t c = 0; c < width && row[c] >= 0; c++) {
                int64_t lo = (int64_t)row[c] * bs, hi = lo + bs;
                if (hi > p + 1) hi = p + 1;
                if (hi > lo) ss->attended += (double)(hi - lo);
                if (row[c] < nb) b->seen[row[c]] = 1;
            }
        }
        for (int64_t blk = 0; blk < nb; blk++)
            if (b->seen[blk]) {
                int64_t hi = (blk + 1) * bs < n_keys ? (blk + 1) * bs : n_keys;
                ss->union_keys += (double)(hi - blk * bs);
                ss->union_blk += 1;
            }
    }
}

/* The selection of w where the host reads it: downloaded from a device backend (untimed). */
static int fetch_selection(struct bench *b, const struct views *w, const char *what) {
    if (!b->device) return CLI_OK;
    size_t bytes = sizeof(int32_t);
    for (int i = 0; i < w->sel.ndim; i++) bytes *= (size_t)w->sel.shape[i];
    if (ifl_buffer_download(b->ctx, b->sel_host, w->sel.data, bytes) != IFL_STATUS_OK) {
        bench_progress_clear();
        cli_error(b->cmd, "%s, downloading the selection: %s", what, ifl_ctx_errmsg(b->ctx));
        return CLI_FAILURE;
    }
    return CLI_OK;
}

/* FLOPs and bytes of a forward case of tq queries at the end of n keys. */
static void count_forward(struct bench *b, int64_t n, int64_t tq, const struct sel_stats *ss, struct result *r) {
    const struct ifl_sparse_config *c    = &b->cfg;
    const double                    hqd  = (double)(b->hq * b->d), es = (double)b->es;
    const int64_t                   past = n - tq;
    double                          vis = 0, vis_c = 0;
    for (int64_t i = 0; i < tq; i++) {
        int64_t p = past + i;
        vis += (double)(p + 1);
        vis_c += (double)ifl_compressed_len(p + 1, c->kernel_size, c->kernel_stride);
        if (c->lse_mode == IFL_LSE_APPROX)
            vis_c += (double)ifl_compressed_len(p + 1, c->coarse_kernel_size, c->coarse_kernel_stride);
    }
    const double qo  = (double)tq * hqd * es * 2 + (double)tq * (double)b->hq * 4; /* Q read, out + lse written */
    const double kvd = (double)(b->hkv * b->d) * es;                               /* one key row of K or V */
    const double selb = (double)(b->hkv * tq) * (double)ifl_select_width(c, n) * 4;
    double       n_c = (double)ifl_compressed_len(n, c->kernel_size, c->kernel_stride);
    if (c->lse_mode == IFL_LSE_APPROX) n_c += (double)ifl_compressed_len(n, c->coarse_kernel_size, c->coarse_kernel_stride);
    r->dense_flop   = 4 * hqd * vis;
    r->select_flop  = 2 * hqd * vis_c;
    r->attend_flop  = 4 * (double)b->d * (double)(b->hq / b->hkv) * ss->attended;
    r->dense_bytes  = 2 * (double)n * kvd + qo;
    r->select_bytes = n_c * kvd + (double)tq * hqd * es + selb;
    r->attend_bytes = 2 * ss->union_keys * (double)b->d * es + qo + selb;
    r->keys_per_row = ss->attended / (double)(b->hkv * tq);
    const int64_t nb = (n + c->block_size - 1) / c->block_size;
    r->union_frac    = ss->union_blk / (double)(b->hkv * nb);
}

static struct views make_views(struct bench *b, int inputs, int64_t n, int64_t tq) {
    struct views   w;
    enum ifl_dtype dt = b->dtype;
    const int64_t  qs[3] = {tq, b->hq, b->d}, ks[3] = {n, b->hkv, b->d}, ls[2] = {tq, b->hq};
    const int64_t  ss[3] = {b->hkv, tq, ifl_select_width(&b->cfg, n)};
    const int64_t  n1 = ifl_compressed_len(n, b->cfg.kernel_size, b->cfg.kernel_stride);
    const int64_t  n2 = ifl_compressed_len(n, b->cfg.coarse_kernel_size, b->cfg.coarse_kernel_stride);
    const int64_t  c1s[3] = {n1, b->hkv, b->d}, c2s[3] = {n2, b->hkv, b->d};
    w.q      = ifl_tensor_make(b->q[inputs], dt, 3, qs);
    w.k      = ifl_tensor_make(b->k[inputs], dt, 3, ks);
    w.v      = ifl_tensor_make(b->v, dt, 3, ks);
    w.out    = ifl_tensor_make(b->out, dt, 3, qs);
    w.lse    = ifl_tensor_make(b->lse, IFL_DTYPE_F32, 2, ls);
    w.out2   = ifl_tensor_make(b->out2, dt, 3, qs);
    w.lse2   = ifl_tensor_make(b->lse2, IFL_DTYPE_F32, 2, ls);
    w.sel    = ifl_tensor_make(b->sel, IFL_DTYPE_I32, 3, ss);
    w.c1     = ifl_tensor_make(b->c1, dt, 3, c1s);
    w.c2     = ifl_tensor_make(b->c2, dt, 3, c2s);
    w.has_c1 = n1 > 0;
    w.has_c2 = n2 > 0;
    w.dout   = ifl_tensor_make(b->dout, dt, 3, qs);
    w.dq     = ifl_tensor_make(b->dq, dt, 3, qs);
    w.dk     = ifl_tensor_make(b->dk, dt, 3, ks);
    w.dv     = ifl_tensor_make(b->dv, dt, 3, ks);
    return w;
}

/* A result row of op on inputs with n keys and tq queries, its times still unset (append -1:
 * only the cache op measures it, and sets it). */
static struct result result_start(int op, int inputs, int64_t n, int64_t tq) {
    struct result r;
    memset(&r, 0, sizeof r);
    r.op        = op;
    r.inputs    = inputs;
    r.n_keys    = n;
    r.n_queries = tq;
    r.append_s  = -1;
    return r;
}

int bench_run_forward(struct bench *b, int op, int inputs, int64_t n, int idx, int total) {
    const int64_t tq = op == OP_DECODE ? 1 : b->chunk;
    const int     nr = op == OP_DECODE ? 5 : 3;
    char          what[96], ks[32];
    snprintf(what, sizeof what, "[%d/%d] %s %s keys, %s", idx, total, bench_op_labels[op], bench_size_str(n, ks, sizeof ks),
             bench_input_names[inputs]);
    bench_progress(1, "%s ...", what);
    struct views  w = make_views(b, inputs, n, tq);
    struct result r = result_start(op, inputs, n, tq);
    int           rc;
    if ((rc = measure(b, &w, J_DENSE, nr, what, &r.dense_s, &r.dense_runs))) return rc;
    if ((rc = measure(b, &w, J_SELECT, nr, what, &r.select_s, &r.select_runs))) return rc;
    if (w.has_c1) {
        if ((rc = measure(b, &w, J_COMPRESS, nr, what, &r.compress_s, &r.compress_runs))) return rc;
    }
    if ((rc = measure(b, &w, J_ATTEND, nr, what, &r.attend_s, &r.attend_runs))) return rc;
    if ((rc = measure(b, &w, J_SPARSE, nr, what, &r.sparse_s, &r.sparse_runs))) return rc;
    struct sel_stats ss;
    if ((rc = fetch_selection(b, &w, what))) return rc;
    selection_stats(b, &w, n, tq, &ss);
    count_forward(b, n, tq, &ss, &r);
    bench_print_row(b, &r);
    if (b->json) bench_print_json(b, &r);
    return CLI_OK;
}

int bench_run_backward(struct bench *b, int inputs, int64_t n, int idx, int total) {
    const int64_t tq = b->chunk;
    char          what[96], ks[32];
    snprintf(what, sizeof what, "[%d/%d] backward %s keys, %s", idx, total, bench_size_str(n, ks, sizeof ks),
             bench_input_names[inputs]);
    bench_progress(1, "%s ...", what);
    struct views w = make_views(b, inputs, n, tq);
    /* the forward results the backward needs: dense into out/lse, sparse into out2/lse2 */
    bench_progress(0, "%s: forward", what);
    enum ifl_status st = ifl_dense_attn_fwd(b->ctx, &b->cfg, NULL, &w.q, &w.k, &w.v, &w.out, &w.lse);
    if (st == IFL_STATUS_OK) st = ifl_select(b->ctx, &b->cfg, NULL, &w.q, &w.k, &w.sel);
    if (st == IFL_STATUS_OK)
        st = ifl_sparse_attn_fwd(b->ctx, &b->cfg, NULL, &w.q, &w.k, &w.v, &w.sel, &w.out2, &w.lse2);
    if (st != IFL_STATUS_OK) {
        bench_progress_clear();
        cli_error(b->cmd, "%s, forward: %s", what, ifl_ctx_errmsg(b->ctx));
        return CLI_FAILURE;
    }
    struct result r = result_start(OP_BACKWARD, inputs, n, tq);
    r.select_s      = -1;
    r.compress_s    = -1;
    int rc;
    if ((rc = measure(b, &w, J_DENSE_BWD, 3, what, &r.dense_s, &r.dense_runs))) return rc;
    if ((rc = measure(b, &w, J_SPARSE_BWD, 3, what, &r.attend_s, &r.attend_runs))) return rc;
    r.sparse_s    = r.attend_s;
    r.sparse_runs = r.attend_runs;
    struct sel_stats ss;
    if ((rc = fetch_selection(b, &w, what))) return rc;
    selection_stats(b, &w, n, tq, &ss);
    count_forward(b, n, tq, &ss, &r);
    /* backward: 2.5x the forward's FLOPs; reads q, k/v (all or the union), out, dout, lse (and the
     * selection), writes dq, dk, dv over all keys */
    const double es = (double)b->es, qd = (double)(tq * b->hq * b->d) * es, kd = (double)(n * b->hkv * b->d) * es;
    const double lseb = (double)(tq * b->hq) * 4;
    const double selb = (double)(b->hkv * tq) * (double)ifl_select_width(&b->cfg, n) * 4;
    r.dense_flop   = 2.5 * r.dense_flop;
    r.attend_flop  = 2.5 * r.attend_flop;
    r.select_flop  = 0;
    r.dense_bytes  = 2 * kd + 4 * qd + lseb + 2 * kd;
    r.attend_bytes = 2 * ss.union_keys * (double)b->d * es + 4 * qd + lseb + selb + 2 * kd;
    r.select_bytes = 0;
    bench_print_row(b, &r);
    if (b->json) bench_print_json(b, &r);
    return CLI_OK;
}

/* ---- decode through a KV cache ---- */

/* The tensors of one cache step: token n-1's key and value, the query, out, lse, sel. */
struct cache_step {
    struct ifl_tensor k1, v1, q, out, lse, sel;
};

/* One step on cache c (holding n-1 tokens): append token n-1, attend its query, truncate back.
 * *step_s and *append_s get the timings; the mode that ran must be `want`. */
static int cache_step(struct bench *b, struct ifl_kv_cache *c, const struct cache_step *t, int sparse, int64_t n,
                      const char *what, double *step_s, double *append_s) {
    enum ifl_mode   mode = sparse ? IFL_MODE_DENSE : IFL_MODE_SPARSE; /* the wrong one until set */
    const char     *call = "ifl_kv_cache_append";
    double          t0   = cli_now();
    enum ifl_status st   = ifl_kv_cache_append(b->ctx, c, 0, &t->k1, &t->v1);
    double          t1   = cli_now();
    if (st == IFL_STATUS_OK) {
        call = "ifl_kv_cache_attn";
        st   = ifl_kv_cache_attn(b->ctx, c, 0, &t->q, &t->out, &t->lse, sparse ? &t->sel : NULL, &mode);
    }
    double t2 = cli_now();
    if (st == IFL_STATUS_OK) {
        call = "ifl_kv_cache_truncate";
        st   = ifl_kv_cache_truncate(b->ctx, c, 0, n - 1);
    }
    if (st != IFL_STATUS_OK) {
        bench_progress_clear();
        cli_error(b->cmd, "%s, %s cache step, %s: %s", what, sparse ? "sparse" : "dense", call,
                  ifl_ctx_errmsg(b->ctx));
        return CLI_FAILURE;
    }
    if (mode != (sparse ? IFL_MODE_SPARSE : IFL_MODE_DENSE)) {
        bench_progress_clear();
        cli_error(b->cmd, "%s: the %s cache ran %s at %lld tokens", what, sparse ? "sparse" : "dense",
                  mode == IFL_MODE_SPARSE ? "sparse" : "dense", (long long)n);
        return CLI_FAILURE;
    }
    *step_s   = t2 - t0;
    *append_s = t1 - t0;
    return CLI_OK;
}

static double median(double *s, int n) {
    qsort(s, (size_t)n, sizeof s[0], cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* The warm-up and the timed steps of one cache, as measure() does for the stateless ops. The
 * append times of the timed runs (of the warm-up when there are none) go to app[*n_app...]. */
static int cache_measure(struct bench *b, struct ifl_kv_cache *c, const struct cache_step *t, int sparse, int64_t n,
                         const char *what, double *step_median, int *runs_done, double *app, int *n_app) {
    const char *job = sparse ? "sparse cache step" : "dense cache step";
    double      warm, warm_app, s[MAX_RUNS];
    int         rc;
    bench_progress(0, "%s: %s (warm-up)", what, job);
    if ((rc = cache_step(b, c, t, sparse, n, what, &warm, &warm_app))) return rc;
    if (b->runs == 0 && warm > 10.0) {
        *step_median   = warm;
        *runs_done     = 0;
        app[(*n_app)++] = warm_app;
        return CLI_OK;
    }
    int runs = b->runs > 0 ? (int)b->runs : warm > 2.0 ? 1 : 5;
    for (int i = 0; i < runs; i++) {
        bench_progress(0, "%s: %s (run %d of %d)", what, job, i + 1, runs);
        if ((rc = cache_step(b, c, t, sparse, n, what, &s[i], &app[*n_app]))) return rc;
        (*n_app)++;
    }
    *step_median = median(s, runs);
    *runs_done   = runs;
    return CLI_OK;
}

/* Keys and values 0..n-2 into cache c, in chunks (untimed). */
static int cache_fill(struct bench *b, struct ifl_kv_cache *c, int inputs, int64_t n, const char *what) {
    const int64_t chunk = 8192, row = b->hkv * b->d;
    for (int64_t r0 = 0; r0 < n - 1; r0 += chunk) {
        const int64_t rows = n - 1 - r0 < chunk ? n - 1 - r0 : chunk, shape[3] = {rows, b->hkv, b->d};
        struct ifl_tensor k = ifl_tensor_make((char *)b->k[inputs] + (size_t)(r0 * row) * b->es, b->dtype, 3, shape);
        struct ifl_tensor v = ifl_tensor_make((char *)b->v + (size_t)(r0 * row) * b->es, b->dtype, 3, shape);
        bench_progress(0, "%s: filling the caches (%lld of %lld tokens)", what, (long long)r0, (long long)(n - 1));
        enum ifl_status st = ifl_kv_cache_append(b->ctx, c, 0, &k, &v);
        if (st != IFL_STATUS_OK) {
            bench_progress_clear();
            cli_error(b->cmd, "%s, filling the cache: %s", what, ifl_ctx_errmsg(b->ctx));
            return CLI_FAILURE;
        }
    }
    return CLI_OK;
}

/* The cache case on two created caches (dense, sparse): fill, time, report. */
static int cache_case(struct bench *b, struct ifl_kv_cache *const cache[2], int inputs, int64_t n, const char *what) {
    int rc;
    for (int sp = 0; sp < 2; sp++)
        if ((rc = cache_fill(b, cache[sp], inputs, n, what)) != CLI_OK) return rc;

    /* token n-1: its key and value, the query (the first row of Q, as decode uses), the outputs */
    struct views      w   = make_views(b, inputs, n, 1);
    const int64_t     row = b->hkv * b->d, kvs[3] = {1, b->hkv, b->d};
    struct cache_step t;
    t.k1  = ifl_tensor_make((char *)b->k[inputs] + (size_t)((n - 1) * row) * b->es, b->dtype, 3, kvs);
    t.v1  = ifl_tensor_make((char *)b->v + (size_t)((n - 1) * row) * b->es, b->dtype, 3, kvs);
    t.q   = w.q;
    t.out = w.out;
    t.lse = w.lse;
    t.sel = w.sel;

    struct result r = result_start(OP_CACHE, inputs, n, 1);
    r.select_s    = -1;
    r.compress_s  = -1;
    r.attend_s    = -1;
    r.cache_bytes = (double)ifl_kv_cache_bytes(cache[1]);
    double app[2 * MAX_RUNS];
    int    n_app = 0;
    if ((rc = cache_measure(b, cache[0], &t, 0, n, what, &r.dense_s, &r.dense_runs, app, &n_app))) return rc;
    if ((rc = cache_measure(b, cache[1], &t, 1, n, what, &r.sparse_s, &r.sparse_runs, app, &n_app))) return rc;
    r.append_s    = median(app, n_app);
    r.append_runs = r.dense_runs + r.sparse_runs; /* 0 when only the warm-ups ran */
    struct sel_stats ss; /* the sparse step's selection (the same on every run) */
    if ((rc = fetch_selection(b, &w, what))) return rc;
    selection_stats(b, &w, n, 1, &ss);
    count_forward(b, n, 1, &ss, &r);
    bench_print_row(b, &r);
    if (b->json) bench_print_json(b, &r);
    return CLI_OK;
}

int bench_run_cache(struct bench *b, int inputs, int64_t n, int idx, int total) {
    char what[96], ks[32];
    snprintf(what, sizeof what, "[%d/%d] %s %s keys, %s", idx, total, bench_op_labels[OP_CACHE],
             bench_size_str(n, ks, sizeof ks), bench_input_names[inputs]);
    bench_progress(1, "%s ...", what);
    /* two caches, freed before the next case: dense (dense_len above every length it reaches)
     * and always sparse */
    struct ifl_kv_cache       *cache[2] = {NULL, NULL};
    struct ifl_kv_cache_params p        = ifl_kv_cache_params_default();
    p.capacity                          = n;
    p.n_seqs                            = 1;
    p.n_heads_kv                        = (int32_t)b->hkv;
    p.head_dim                          = (int32_t)b->d;
    p.dtype                             = b->dtype;
    p.cfg                               = b->cfg;
    int rc = CLI_OK;
    for (int sp = 0; sp < 2 && rc == CLI_OK; sp++) {
        p.cfg.dense_len    = sp ? -1 : n + 1;
        enum ifl_status st = ifl_kv_cache_create(b->ctx, &p, &cache[sp]);
        if (st != IFL_STATUS_OK) {
            bench_progress_clear();
            cli_error(b->cmd, "%s, creating the %s cache: %s%s", what, sp ? "sparse" : "dense",
                      ifl_ctx_errmsg(b->ctx), st == IFL_STATUS_OUT_OF_MEMORY ? "; use smaller --keys" : "");
            rc = CLI_FAILURE;
        }
    }
    if (rc == CLI_OK) rc = cache_case(b, cache, inputs, n, what);
    ifl_kv_cache_destroy(cache[0]);
    ifl_kv_cache_destroy(cache[1]);
    return rc;
}

