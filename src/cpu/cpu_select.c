/* SPDX-License-Identifier: MIT
 *
 * cpu_select.c -- compressed keys and stage 1 (block selection) on the cpu, fused per query
 * token: the coarse (or fine) log-sum-exp pass, the fine probabilities summed over the GQA group,
 * the pooling onto blocks and the top-k all run inside one task with O(keys / stride) scratch, so
 * no per-head score matrix is ever materialised (spec §3, "Fused head-group summation").
 * One task = one (sequence, KV head, query token); the G query heads of the token are the rows of
 * one micro-kernel call against a tile of 64 compressed keys.
 */
#include "cpu_tiles.h"

#include <stdlib.h>

#define CT 64 /* compressed keys per tile */

/* ---- compressed keys ---- */

/* The work of compression is cut into tiles of CT compressed keys of one (sequence, KV head,
 * kind: 0 fine, 1 coarse): one task each, so even a single long sequence spreads over threads. */
struct ctiles {
    int64_t  n_entries; /* n_seqs * hkv * 2 */
    int64_t *first;     /* [n_entries + 1] first task of each (s, g, kind), entry = (s*hkv + g)*2 + kind */
};

static int ctiles_build(struct ctiles *ct, const struct ifl__problem *pb) {
    const struct ifl_sparse_config *c = &pb->cfg;
    ct->n_entries = pb->n_seqs * pb->hkv * 2;
    ct->first     = malloc((size_t)(ct->n_entries + 1) * sizeof *ct->first);
    if (ct->first == NULL) return -1;
    ct->first[0] = 0;
    for (int64_t e = 0; e < ct->n_entries; e++) {
        int64_t s = e / (2 * pb->hkv), kind = e % 2;
        int64_t n = kind ? ifl_compressed_len(pb->seqs[s].nk, c->coarse_kernel_size, c->coarse_kernel_stride)
                         : ifl_compressed_len(pb->seqs[s].nk, c->kernel_size, c->kernel_stride);
        ct->first[e + 1] = ct->first[e] + ifl__ceil_div(n, CT);
    }
    return 0;
}

/* The (s, g, kind) and first key j0 of a task. */
static void ctiles_task(const struct ctiles *ct, const struct ifl__problem *pb, int64_t task, int64_t *s,
                        int64_t *g, int *kind, int64_t *j0) {
    int64_t lo = 0, hi = ct->n_entries - 1; /* the last entry whose first task <= task */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (ct->first[mid] <= task) lo = mid;
        else hi = mid - 1;
    }
    *s    = lo / (2 * pb->hkv);
    *g    = lo / 2 % pb->hkv;
    *kind = (int)(lo % 2);
    *j0   = (task - ct->first[lo]) * CT;
}

/* Keys j0 .. j0+cnt-1 of kind (0 fine, 1 coarse) of sequence s and KV head g, as f32 rows of
 * out[cnt][dp] (padding zeroed): a window is the sum of its kernel/stride chunks of stride rows,
 * each row read once, summed in f32 in a fixed order, divided by the kernel and rounded to the
 * key dtype (what the reference and a KV cache hold). chunk: (cnt + kernel/stride) * dp floats. */
static void compress_tile(const struct ifl__problem *pb, int64_t s, int64_t g, int kind, int64_t j0, int64_t cnt,
                          int64_t dp, float *out, float *chunk) {
    const struct ifl_sparse_config *c = &pb->cfg;
    const int64_t kernel = kind ? c->coarse_kernel_size : c->kernel_size;
    const int64_t stride = kind ? c->coarse_kernel_stride : c->kernel_stride;
    const int64_t per = kernel / stride, D = pb->d, k0 = pb->seqs[s].k0;
    float *row = chunk + (cnt + per) * dp; /* one row of scratch after the chunks */
    memset(row + D, 0, (size_t)(dp - D) * sizeof *row);
    for (int64_t ci = 0; ci < cnt + per - 1; ci++) { /* chunk j0 + ci: rows (j0 + ci) * stride .. + stride */
        float *sum = chunk + ci * dp;
        memset(sum, 0, (size_t)dp * sizeof *sum);
        for (int64_t r = (j0 + ci) * stride; r < (j0 + ci + 1) * stride; r++) {
            load_row(row, pb->k, ifl__off3(pb->k, k0 + r, g, 0), D);
            for (int64_t d = 0; d < D; d += VL) vstore(sum + d, vload(sum + d) + vload(row + d));
        }
    }
    const float inv_kernel = 1.0f / (float)kernel;
    for (int64_t j = 0; j < cnt; j++) {
        float *o = out + j * dp;
        memcpy(o, chunk + j * dp, (size_t)dp * sizeof *o);
        for (int64_t ci = j + 1; ci < j + per; ci++)
            for (int64_t d = 0; d < dp; d += VL) vstore(o + d, vload(o + d) + vload(chunk + ci * dp + d));
        for (int64_t d = 0; d < D; d++) o[d] = (float)ifl__round(pb->k->dtype, o[d] * inv_kernel);
        for (int64_t d = D; d < dp; d++) o[d] = 0;
    }
}

/* Floats of compress_tile's chunk scratch (chunks plus one row). */
static int64_t compress_scratch_floats(const struct ifl__problem *pb, int64_t dp) {
    const struct ifl_sparse_config *c = &pb->cfg;
    int64_t per = c->kernel_size / c->kernel_stride, per2 = c->coarse_kernel_size / c->coarse_kernel_stride;
    return (CT + 1 + (per > per2 ? per : per2)) * dp;
}

struct compress_job {
    const struct ifl__problem *pb;
    struct ctiles              ct;
    int64_t                    dp;
    float                     *scratch; /* per thread: a tile of keys, then the chunks */
    int64_t                    scratch_floats;
};

static void compress_task(void *arg, int64_t task, int thread) {
    const struct compress_job      *job = arg;
    const struct ifl__problem      *pb  = job->pb;
    const struct ifl_sparse_config *c   = &pb->cfg;
    int64_t s, g, j0;
    int     kind;
    ctiles_task(&job->ct, pb, task, &s, &g, &kind, &j0);
    const struct ifl_tensor *out = kind ? pb->c2 : pb->c1;
    if (out == NULL) return;
    const int64_t kernel = kind ? c->coarse_kernel_size : c->kernel_size;
    const int64_t stride = kind ? c->coarse_kernel_stride : c->kernel_stride;
    int64_t first = 0; /* rows of the earlier sequences in the packed output */
    for (int64_t i = 0; i < s; i++) first += ifl_compressed_len(pb->seqs[i].nk, (int32_t)kernel, (int32_t)stride);
    int64_t n = ifl_compressed_len(pb->seqs[s].nk, (int32_t)kernel, (int32_t)stride);
    int64_t cnt = n - j0 < CT ? n - j0 : CT;
    float  *buf = job->scratch + thread * job->scratch_floats;
    compress_tile(pb, s, g, kind, j0, cnt, job->dp, buf, buf + CT * job->dp);
    for (int64_t j = 0; j < cnt; j++) store_row(out, ifl__off3(out, first + j0 + j, g, 0), buf + j * job->dp, pb->d);
}

enum ifl_status CPU_FN(cpu_compress_keys)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_compress_keys)(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    struct compress_job job;
    job.pb             = pb;
    job.dp             = round_up(pb->d, VL);
    job.scratch_floats = round_up(CT * job.dp + compress_scratch_floats(pb, job.dp), 16);
    job.scratch        = malloc((size_t)(job.scratch_floats * ctx->n_threads) * sizeof(float));
    if (job.scratch == NULL || ctiles_build(&job.ct, pb) != 0) {
        free(job.scratch);
        return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "ifl_compress_keys: out of memory");
    }
    cpu_pool_run(cpu_pool_of(ctx), job.ct.first[job.ct.n_entries], compress_task, &job);
    free(job.scratch);
    free(job.ct.first);
    return IFL_STATUS_OK;
}

/* ---- stage 1 ---- */

/* Compressed keys of every (sequence, KV head) as transposed f32 tiles [dp][CT]. */
struct ckeys {
    int64_t *base1, *base2; /* [n_seqs * hkv] first tile of (s, g) */
    float   *t1, *t2;       /* tiles */
};

struct select_job {
    const struct ifl__problem *pb;
    struct ckeys               ck;
    int64_t                    dp;
    int                        lazy;     /* 1: each task converts its own tiles (decode), no ck */
    int64_t                    lazy_off; /* floats from a thread's scratch to its lazy tile, buf */
    int64_t                   *task_seq; /* [n_seqs + 1] */
    float                     *scratch;
    int64_t                    scratch_floats;
    /* preparation: the packed rows of pb->c1 / pb->c2 of each sequence, when given */
    int64_t *off1, *off2;
    struct ctiles ct;
};

/* Builds the tile of compressed keys j0.. of (s, g, kind) into tile (transposed, zero padded):
 * from the given compressed keys, else from k. buf: CT * dp floats, then compress_tile's chunks. */
static void build_tile(const struct select_job *job, int64_t s, int64_t g, int kind, int64_t j0, float *buf,
                       float *tile) {
    const struct ifl__problem      *pb = job->pb;
    const struct ifl_sparse_config *c  = &pb->cfg;
    const int64_t dp = job->dp, D = pb->d;
    const int64_t kernel = kind ? c->coarse_kernel_size : c->kernel_size, stride = kind ? c->coarse_kernel_stride : c->kernel_stride;
    const int64_t n = ifl_compressed_len(pb->seqs[s].nk, (int32_t)kernel, (int32_t)stride), cnt = n - j0 < CT ? n - j0 : CT;
    const struct ifl_tensor *given = kind ? pb->c2 : pb->c1;
    if (given) {
        int64_t first = (kind ? job->off2 : job->off1)[s] + j0;
        for (int64_t j = 0; j < cnt; j++) {
            load_row(buf + j * dp, given, ifl__off3(given, first + j, g, 0), D);
            for (int64_t d = D; d < dp; d++) buf[j * dp + d] = 0;
        }
    } else {
        compress_tile(pb, s, g, kind, j0, cnt, dp, buf, buf + CT * dp);
    }
    memset(buf + cnt * dp, 0, (size_t)((CT - cnt) * dp) * sizeof *buf); /* keys past cnt are zero */
    CPU_FN(transpose_tile)(tile, buf, CT, dp);
}

/* The transposed tile of compressed keys j0.. of (s, g, kind): the prepared one, or in lazy mode
 * built now into the thread's own tile. */
static const float *key_tile(const struct select_job *job, int64_t s, int64_t g, int kind, int64_t j0, int thread) {
    const int64_t dp = job->dp;
    if (!job->lazy) {
        const int64_t base = (kind ? job->ck.base2 : job->ck.base1)[s * job->pb->hkv + g];
        return (kind ? job->ck.t2 : job->ck.t1) + (base + j0 / CT) * dp * CT;
    }
    float *tile = job->scratch + thread * job->scratch_floats + job->lazy_off;
    build_tile(job, s, g, kind, j0, tile + CT * dp, tile);
    return tile;
}

/* One prepared tile per task (when not lazy). */
static void prep_task(void *arg, int64_t task, int thread) {
    struct select_job *job = arg;
    int64_t            s, g, j0;
    int                kind;
    ctiles_task(&job->ct, job->pb, task, &s, &g, &kind, &j0);
    float *buf = job->scratch + thread * job->scratch_floats;
    build_tile(job, s, g, kind, j0, buf, (float *)key_tile(job, s, g, kind, j0, thread));
}

struct scored_block {
    float   score;
    int32_t block;
};

/* a ranks before b: higher score, ties to the smaller block */
static inline int ranks_before(struct scored_block a, struct scored_block b) {
    return a.score > b.score || (a.score == b.score && a.block < b.block);
}

/* Keeps the `width` best blocks in a heap whose root is the worst kept one. */
static void heap_sift_down(struct scored_block *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_before(h[w], h[l])) w = l;
        if (r < n && ranks_before(h[w], h[r])) w = r;
        if (w == i) return;
        struct scored_block tmp = h[i];
        h[i] = h[w], h[w] = tmp, i = w;
    }
}

static void heap_push(struct scored_block *h, int64_t n, struct scored_block x) {
    int64_t i = n;
    h[i]      = x;
    while (i > 0 && ranks_before(h[(i - 1) / 2], h[i])) {
        struct scored_block tmp = h[i];
        h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = tmp, i = (i - 1) / 2;
    }
}

/* Log2-domain log-sum-exp per row of Qs [G][dp] over the first n compressed keys of (s, g, kind). */
static void row_lse(const struct select_job *job, int64_t seq, int64_t g, int kind, int thread, const float *const *qp,
                    int64_t G, int64_t D, int64_t n, float *S, float *m, float *l, float *lse) {
    for (int64_t r = 0; r < G; r++) m[r] = -INFINITY, l[r] = 0;
    for (int64_t j0 = 0; j0 < n; j0 += CT) {
        int64_t cnt = n - j0 < CT ? n - j0 : CT;
        mk_qk(qp, G, key_tile(job, seq, g, kind, j0, thread), CT, D, CT, S, CT);
        for (int64_t r = 0; r < G; r++) {
            float *s  = S + r * CT;
            float  mx = m[r];
            for (int64_t k = 0; k < cnt; k++) mx = s[k] > mx ? s[k] : mx;
            vf sum = {0};
            for (int64_t k = 0; k + VL <= round_up(cnt, VL); k += VL) {
                vf p = vexp2(vload(s + k) - mx);
                for (int i = 0; i < VL; i++)
                    if (k + i >= cnt) p[i] = 0;
                sum += p;
            }
            l[r] = l[r] * exp2f(m[r] - mx) + vsum(sum);
            m[r] = mx;
        }
    }
    for (int64_t r = 0; r < G; r++) lse[r] = m[r] + log2f(l[r]);
}

static void select_task(void *arg, int64_t task, int thread) {
    const struct select_job        *job = arg;
    const struct ifl__problem      *pb  = job->pb;
    const struct ifl_sparse_config *c   = &pb->cfg;
    int64_t s = 0;
    while (job->task_seq[s + 1] <= task) s++;
    const struct ifl__seq *sq = &pb->seqs[s];
    const int64_t local = task - job->task_seq[s], g = local / sq->nq, i = local % sq->nq;
    const int64_t G = pb->g, D = pb->d, dp = job->dp, bs = c->block_size;
    const int64_t p = sq->past + i, qb = p / bs, nb = ifl__ceil_div(sq->nk, bs);
    const int64_t n1 = ifl_compressed_len(sq->nk, c->kernel_size, c->kernel_stride);
    const int64_t vis1 = ifl__visible_compressed(p, c->kernel_size, c->kernel_stride);
    const int64_t vis2 = ifl__visible_compressed(p, c->coarse_kernel_size, c->coarse_kernel_stride);
    const int64_t width = ifl_select_width(c, sq->nk), nloc = ifl__local_blocks(c);

    float *Qs = job->scratch + thread * job->scratch_floats;
    float *S = Qs + G * dp, *lse = S + G * CT, *m = lse + G, *l = m + G, *Sh = l + G;
    struct scored_block *heap = (struct scored_block *)(Sh + round_up(n1 + 1, 2));
    float **qp = (float **)(job->scratch + (thread + 1) * job->scratch_floats) - G; /* tail of the scratch */
    row_ptrs(Qs, dp, G, qp);
    const float qscale = (float)(pb->cfg.scale * LOG2E);
    for (int64_t hh = 0; hh < G; hh++) {
        float *q = Qs + hh * dp;
        load_row(q, pb->q, ifl__off3(pb->q, sq->q0 + i, g * G + hh, 0), D);
        for (int64_t d = 0; d < D; d++) q[d] *= qscale;
        for (int64_t d = D; d < dp; d++) q[d] = 0;
    }
    const float *const *qc = (const float *const *)qp;
    /* 1-2: group-summed probabilities over the visible fine keys (0 for the invisible ones) */
    memset(Sh, 0, (size_t)(n1 + 1) * sizeof *Sh);
    if (vis1 > 0) {
        if (c->lse_mode == IFL_LSE_APPROX && vis2 > 0) row_lse(job, s, g, 1, thread, qc, G, D, vis2, S, m, l, lse);
        else row_lse(job, s, g, 0, thread, qc, G, D, vis1, S, m, l, lse); /* decision 4: no coarse key visible */
        for (int64_t j0 = 0; j0 < vis1; j0 += CT) {
            int64_t cnt = vis1 - j0 < CT ? vis1 - j0 : CT;
            mk_qk(qc, G, key_tile(job, s, g, 0, j0, thread), CT, D, CT, S, CT);
            vf acc[CT / VL];
            for (int64_t v = 0; v < CT / VL; v++) acc[v] = (vf){0};
            for (int64_t r = 0; r < G; r++)
                for (int64_t v = 0; v < CT / VL; v++) acc[v] += vexp2(vload(S + r * CT + v * VL) - lse[r]);
            for (int64_t v = 0; v < CT / VL; v++)
                for (int k = 0; k < VL; k++)
                    if (v * VL + k < cnt) Sh[j0 + v * VL + k] = acc[v][k];
        }
    }
    /* 3-4: pooled block scores, forced blocks +inf, the best `width` (ties to the smaller index) */
    int64_t n_heap = 0;
    for (int64_t b = 0; b < nb; b++) {
        float score;
        if (b < c->init_blocks || (b >= qb - nloc && b <= qb)) {
            score = INFINITY;
        } else {
            int64_t first_tok = b * bs, need = first_tok - c->kernel_size + 1;
            int64_t lo = need <= 0 ? 0 : ifl__ceil_div(need, c->kernel_stride);
            int64_t hi = (first_tok + bs - 1) / c->kernel_stride + 1;
            if (hi > n1) hi = n1;
            score = -INFINITY;
            for (int64_t j = lo; j < hi; j++) score = Sh[j] > score ? Sh[j] : score;
        }
        struct scored_block x = {score, (int32_t)b};
        if (n_heap < width) heap_push(heap, n_heap++, x);
        else if (ranks_before(x, heap[0])) {
            heap[0] = x;
            heap_sift_down(heap, n_heap, 0);
        }
    }
    int32_t kept[4096 + 1], *picked = n_heap <= 4096 ? kept : (int32_t *)(heap + n_heap);
    int64_t n_kept = 0;
    for (int64_t k = 0; k < n_heap; k++) /* drop blocks after the query's, sort ascending */
        if (heap[k].block <= qb) {
            int64_t at = n_kept++;
            while (at > 0 && picked[at - 1] > heap[k].block) picked[at] = picked[at - 1], at--;
            picked[at] = heap[k].block;
        }
    int32_t *row = (int32_t *)pb->sel->data + g * pb->sel->stride[0] + (sq->q0 + i) * pb->sel->stride[1];
    for (int64_t col = 0; col < pb->sel->shape[2]; col++) row[col] = col < n_kept ? picked[col] : -1;
}

enum ifl_status CPU_FN(cpu_select)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_select)(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    const struct ifl_sparse_config *c = &pb->cfg;
    const int64_t                   H = pb->n_seqs * pb->hkv;
    struct select_job               job;
    memset(&job, 0, sizeof job);
    job.pb = pb;
    job.dp = round_up(pb->d, VL);
    job.ck.base1 = malloc((size_t)(H + 1) * sizeof(int64_t));
    job.ck.base2 = malloc((size_t)(H + 1) * sizeof(int64_t));
    job.task_seq = malloc((size_t)(pb->n_seqs + 1) * sizeof(int64_t));
    job.off1 = malloc((size_t)(pb->n_seqs + 1) * sizeof(int64_t));
    job.off2 = malloc((size_t)(pb->n_seqs + 1) * sizeof(int64_t));
    enum ifl_status st = IFL_STATUS_OK;
    if (!job.ck.base1 || !job.ck.base2 || !job.task_seq || !job.off1 || !job.off2) goto oom;
    int64_t n_t1 = 0, n_t2 = 0, max_n1 = 0, max_nb = 0;
    job.task_seq[0] = 0, job.off1[0] = 0, job.off2[0] = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        int64_t nk = pb->seqs[s].nk;
        int64_t n1 = ifl_compressed_len(nk, c->kernel_size, c->kernel_stride);
        int64_t n2 = ifl_compressed_len(nk, c->coarse_kernel_size, c->coarse_kernel_stride);
        for (int64_t g = 0; g < pb->hkv; g++) {
            job.ck.base1[s * pb->hkv + g] = n_t1, n_t1 += ifl__ceil_div(n1, CT);
            job.ck.base2[s * pb->hkv + g] = n_t2, n_t2 += ifl__ceil_div(n2, CT);
        }
        job.off1[s + 1]     = job.off1[s] + n1;
        job.off2[s + 1]     = job.off2[s] + n2;
        job.task_seq[s + 1] = job.task_seq[s] + pb->hkv * pb->seqs[s].nq;
        max_n1              = n1 > max_n1 ? n1 : max_n1;
        max_nb              = ifl__ceil_div(nk, c->block_size) > max_nb ? ifl__ceil_div(nk, c->block_size) : max_nb;
    }
    /* decode (one query token per sequence) with a task per thread at least: each task converts
     * its own tiles of compressed keys as it scores them, in cache, and nothing is prepared (a
     * decode step otherwise writes and re-reads every compressed key of the cache as f32) */
    job.lazy = job.task_seq[pb->n_seqs] == pb->n_seqs * pb->hkv && job.task_seq[pb->n_seqs] >= ctx->n_threads;
    if (!job.lazy) {
        job.ck.t1 = malloc((size_t)((n_t1 + 1) * job.dp * CT) * sizeof(float));
        job.ck.t2 = malloc((size_t)((n_t2 + 1) * job.dp * CT) * sizeof(float));
        if (!job.ck.t1 || !job.ck.t2) goto oom;
    }
    /* scratch: Qs [G][dp], S [G][CT], lse [G], Sh [n1], heap [width] (+ picked when huge); then
     * the lazy tile [CT][dp] and the tile build's buf; the row pointers at the end */
    int64_t width = ifl_select_width(c, INT64_MAX / 4);
    if (width > max_nb) width = max_nb;
    job.lazy_off       = round_up(pb->g * (job.dp + CT + 3) + round_up(max_n1 + 1, 2) + 3 * (width + 1), 16);
    job.scratch_floats = job.lazy_off + 2 * CT * job.dp + compress_scratch_floats(pb, job.dp) +
                         pb->g * 2 * PTR_FLOATS + 64;
    job.scratch_floats = round_up(job.scratch_floats, 16); /* 64-byte aligned per thread, so the row pointers at its end are aligned */
    job.scratch = malloc((size_t)(job.scratch_floats * ctx->n_threads) * sizeof(float));
    if (!job.scratch || ctiles_build(&job.ct, pb) != 0) goto oom;
    if (!job.lazy) cpu_pool_run(cpu_pool_of(ctx), job.ct.first[job.ct.n_entries], prep_task, &job);
    cpu_pool_run(cpu_pool_of(ctx), job.task_seq[pb->n_seqs], select_task, &job);
    goto done;
oom:
    st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
done:
    free(job.ck.base1), free(job.ck.base2), free(job.ck.t1), free(job.ck.t2);
    free(job.task_seq), free(job.off1), free(job.off2), free(job.scratch), free(job.ct.first);
    return st;
}
