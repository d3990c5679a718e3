/* SPDX-License-Identifier: MIT
 *
 * cpu_select.c -- compressed keys and stage 1 (block selection) on the cpu, fused per query
 * token: the coarse (or fine) log-sum-exp pass, the fine probabilities summed over the GQA group,
 * the pooling onto blocks and the top-k all run inside one task with O(keys / stride) scratch, so
 * no per-head score matrix is ever materialised (spec §3, "Fused head-group summation").
 * One task = one (sequence, KV head, query token); the G query heads of the token are the rows of
 * one micro-kernel call against a tile of 64 compressed keys.
 */
#include "cpu_kernels.h"

#include <stdlib.h>

#define CT 64 /* compressed keys per tile */

/* ---- compressed keys ---- */

/* The compressed keys (kernel/stride) of sequence s, KV head g, as f32 in out[n][dp]: means in
 * f32 rounded to the key dtype (what the reference and a KV cache hold). */
static void compress_seq_head(const struct ifl__problem *pb, const struct ifl__seq *sq, int64_t g,
                              int64_t kernel, int64_t stride, int64_t dp, float *out, float *row) {
    const int64_t n = ifl_compressed_len(sq->nk, (int32_t)kernel, (int32_t)stride), D = pb->d;
    for (int64_t j = 0; j < n; j++) {
        float *c = out + j * dp;
        memset(c, 0, (size_t)dp * sizeof *c);
        for (int64_t tk = j * stride; tk < j * stride + kernel; tk++) {
            load_row(row, pb->k, ifl__off3(pb->k, sq->k0 + tk, g, 0), D);
            for (int64_t d = 0; d < D; d++) c[d] += row[d];
        }
        for (int64_t d = 0; d < D; d++) c[d] = (float)ifl__round(pb->k->dtype, c[d] / (float)kernel);
    }
}

struct compress_job {
    const struct ifl__problem *pb;
    float                     *scratch; /* per thread: the keys of one (s, g) and a row */
    int64_t                    scratch_floats;
};

static void compress_task(void *arg, int64_t task, int thread) {
    const struct compress_job *job = arg;
    const struct ifl__problem *pb  = job->pb;
    const int64_t              s = task / pb->hkv, g = task % pb->hkv, D = pb->d;
    const struct ifl_sparse_config *c = &pb->cfg;
    float *buf = job->scratch + thread * job->scratch_floats, *row = buf + job->scratch_floats - IFL_MAX_HEAD_DIM - 64;
    const struct ifl_tensor *outs[2] = {pb->c1, pb->c2};
    const int64_t kernels[2] = {c->kernel_size, c->coarse_kernel_size}, strides[2] = {c->kernel_stride, c->coarse_kernel_stride};
    for (int w = 0; w < 2; w++) {
        if (outs[w] == NULL) continue;
        int64_t first = 0; /* rows of the earlier sequences */
        for (int64_t i = 0; i < s; i++) first += ifl_compressed_len(pb->seqs[i].nk, (int32_t)kernels[w], (int32_t)strides[w]);
        int64_t n = ifl_compressed_len(pb->seqs[s].nk, (int32_t)kernels[w], (int32_t)strides[w]);
        for (int64_t j0 = 0; j0 < n; j0 += CT) { /* a tile of keys at a time bounds the scratch */
            int64_t cnt = n - j0 < CT ? n - j0 : CT;
            struct ifl__seq part = pb->seqs[s];
            part.k0 += j0 * strides[w];
            part.nk = (cnt - 1) * strides[w] + kernels[w];
            compress_seq_head(pb, &part, g, kernels[w], strides[w], D, buf, row);
            for (int64_t j = 0; j < cnt; j++) store_row(outs[w], ifl__off3(outs[w], first + j0 + j, g, 0), buf + j * D, D);
        }
    }
}

enum ifl_status CPU_FN(cpu_compress_keys)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_compress_keys)(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    struct compress_job job = {pb, NULL, CT * pb->d + IFL_MAX_HEAD_DIM + 64};
    job.scratch = malloc((size_t)(job.scratch_floats * ctx->n_threads) * sizeof(float));
    if (job.scratch == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "ifl_compress_keys: out of memory");
    cpu_pool_run(cpu_pool_of(ctx), pb->n_seqs * pb->hkv, compress_task, &job);
    free(job.scratch);
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
    int64_t                   *task_seq; /* [n_seqs + 1] */
    float                     *scratch;
    int64_t                    scratch_floats;
    /* preparation: the packed rows of pb->c1 / pb->c2 of each sequence, when given */
    int64_t *off1, *off2;
};

/* Builds the tiles of (s, g): from the given compressed keys, else from k. */
static void prep_task(void *arg, int64_t task, int thread) {
    struct select_job         *job = arg;
    const struct ifl__problem *pb  = job->pb;
    const struct ifl_sparse_config *c = &pb->cfg;
    const int64_t s = task / pb->hkv, g = task % pb->hkv, dp = job->dp, D = pb->d;
    float *buf = job->scratch + thread * job->scratch_floats, *row = buf + CT * dp;
    for (int w = 0; w < 2; w++) {
        const int64_t kernel = w ? c->coarse_kernel_size : c->kernel_size, stride = w ? c->coarse_kernel_stride : c->kernel_stride;
        const struct ifl_tensor *given = w ? pb->c2 : pb->c1;
        const int64_t n = ifl_compressed_len(pb->seqs[s].nk, (int32_t)kernel, (int32_t)stride);
        float *tiles = (w ? job->ck.t2 : job->ck.t1) + (w ? job->ck.base2 : job->ck.base1)[task] * dp * CT;
        for (int64_t j0 = 0; j0 < n; j0 += CT) {
            int64_t cnt = n - j0 < CT ? n - j0 : CT;
            if (given) {
                int64_t first = (w ? job->off2 : job->off1)[s] + j0;
                for (int64_t j = 0; j < cnt; j++) {
                    load_row(buf + j * dp, given, ifl__off3(given, first + j, g, 0), D);
                    for (int64_t d = D; d < dp; d++) buf[j * dp + d] = 0;
                }
            } else {
                struct ifl__seq part = pb->seqs[s];
                part.k0 += j0 * stride;
                part.nk = (cnt - 1) * stride + kernel;
                compress_seq_head(pb, &part, g, kernel, stride, dp, buf, row);
            }
            float *tile = tiles + (j0 / CT) * dp * CT; /* transpose, zero padding */
            memset(tile, 0, (size_t)(dp * CT) * sizeof *tile);
            for (int64_t j = 0; j < cnt; j++)
                for (int64_t d = 0; d < D; d++) tile[d * CT + j] = buf[j * dp + d];
        }
    }
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

/* Log2-domain log-sum-exp per row of Qs [G][dp] over the first n keys of transposed tiles. */
static void row_lse(const float *const *qp, int64_t G, int64_t dp, int64_t D, const float *tiles, int64_t n,
                    float *S, float *m, float *l, float *lse) {
    for (int64_t r = 0; r < G; r++) m[r] = -INFINITY, l[r] = 0;
    for (int64_t j0 = 0; j0 < n; j0 += CT) {
        int64_t cnt = n - j0 < CT ? n - j0 : CT;
        mk_qk(qp, G, tiles + (j0 / CT) * dp * CT, CT, D, CT, S, CT);
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
    const float *t1 = job->ck.t1 + job->ck.base1[s * pb->hkv + g] * dp * CT;
    const float *t2 = job->ck.t2 + job->ck.base2[s * pb->hkv + g] * dp * CT;
    /* 1-2: group-summed probabilities over the visible fine keys (0 for the invisible ones) */
    memset(Sh, 0, (size_t)(n1 + 1) * sizeof *Sh);
    if (vis1 > 0) {
        if (c->lse_mode == IFL_LSE_APPROX && vis2 > 0) row_lse((const float *const *)qp, G, dp, D, t2, vis2, S, m, l, lse);
        else row_lse((const float *const *)qp, G, dp, D, t1, vis1, S, m, l, lse); /* decision 4: no coarse key visible */
        for (int64_t j0 = 0; j0 < vis1; j0 += CT) {
            int64_t cnt = vis1 - j0 < CT ? vis1 - j0 : CT;
            mk_qk((const float *const *)qp, G, t1 + (j0 / CT) * dp * CT, CT, D, CT, S, CT);
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
    job.ck.t1 = malloc((size_t)((n_t1 + 1) * job.dp * CT) * sizeof(float));
    job.ck.t2 = malloc((size_t)((n_t2 + 1) * job.dp * CT) * sizeof(float));
    /* scratch: Qs [G][dp], S [G][CT], lse [G], Sh [n1], heap [width] (+ picked when huge) */
    int64_t width = ifl_select_width(c, INT64_MAX / 4);
    if (width > max_nb) width = max_nb;
    job.scratch_floats = pb->g * (job.dp + CT + 3 + 2 * PTR_FLOATS) + round_up(max_n1 + 1, 2) + 3 * (width + 1) +
                         (CT + 1) * job.dp + IFL_MAX_HEAD_DIM + 64;
    job.scratch_floats = round_up(job.scratch_floats, 16); /* 64-byte aligned per thread, so the row pointers at its end are aligned */
    job.scratch = malloc((size_t)(job.scratch_floats * ctx->n_threads) * sizeof(float));
    if (!job.ck.t1 || !job.ck.t2 || !job.scratch) goto oom;
    cpu_pool_run(cpu_pool_of(ctx), H, prep_task, &job);
    cpu_pool_run(cpu_pool_of(ctx), job.task_seq[pb->n_seqs], select_task, &job);
    goto done;
oom:
    st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "ifl_select: out of memory");
done:
    free(job.ck.base1), free(job.ck.base2), free(job.ck.t1), free(job.ck.t2);
    free(job.task_seq), free(job.off1), free(job.off2), free(job.scratch);
    return st;
}
