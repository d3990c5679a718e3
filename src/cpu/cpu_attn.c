/* SPDX-License-Identifier: MIT
 *
 * cpu_attn.c -- dense causal and sparse (stage 2) attention forward on the cpu.
 * One task = one KV head of one sequence and a group of query rows: for sparse attention the G
 * query heads of one token (they share its selected blocks, so each key/value tile loaded serves
 * all of them); for dense attention the G heads of a few consecutive tokens (about 64 rows).
 * Each task runs FlashAttention's online softmax over its blocks in ascending order and writes
 * only its own rows, so results do not depend on the thread count.
 */
#include "cpu_tiles.h"

#include <stdlib.h>

/* Rows per dense task: whole tokens, about 64 rows. */
static int64_t dense_tokens_per_task(int64_t G) { return G >= 64 ? 1 : 64 / G; }

struct fwd_job {
    const struct ifl__problem *pb;
    const struct kv_tiles     *tiles;
    int                        sparse;
    int64_t                    tokens_per_task;
    int64_t                   *task_seq; /* [n_seqs + 1] first task of each sequence */
    float                     *scratch;  /* per thread */
    int64_t                    scratch_floats;
};

/* Per-thread scratch: Qs [M][dp], O [M][dp], S [M][np], m, l [M], valid [M] (as floats). */
static int64_t fwd_scratch_floats(int64_t M, int64_t dp, int64_t np) { return M * (2 * dp + np + 3) + 64; }

static void fwd_task(void *arg, int64_t task, int thread) {
    const struct fwd_job      *job = arg;
    const struct ifl__problem *pb  = job->pb;
    const struct kv_tiles     *t   = job->tiles;
    int64_t s = 0;
    while (job->task_seq[s + 1] <= task) s++;
    const struct ifl__seq *sq = &pb->seqs[s];
    const int64_t          G = pb->g, D = pb->d, dp = t->dp, np = t->np, bs = t->bs;
    const int64_t          per_g = ifl__ceil_div(sq->nq, job->tokens_per_task);
    int64_t                local = task - job->task_seq[s];
    const int64_t          g     = local / per_g;
    const int64_t          chunk = per_g - 1 - local % per_g; /* heaviest (latest) rows first */
    const int64_t          i0    = chunk * job->tokens_per_task;
    const int64_t          nt    = sq->nq - i0 < job->tokens_per_task ? sq->nq - i0 : job->tokens_per_task;
    const int64_t          M     = nt * G;

    float   *Qs = job->scratch + thread * job->scratch_floats;
    float   *O = Qs + M * dp, *S = O + M * dp, *m = S + M * np, *l = m + M;
    int32_t *valid = (int32_t *)(l + M);
    const float qscale = (float)(pb->cfg.scale * LOG2E);
    for (int64_t tk = 0; tk < nt; tk++)
        for (int64_t hh = 0; hh < G; hh++) {
            float *q = Qs + (tk * G + hh) * dp;
            load_row(q, pb->q, ifl__off3(pb->q, sq->q0 + i0 + tk, g * G + hh, 0), D);
            for (int64_t d = 0; d < D; d++) q[d] *= qscale;
            for (int64_t d = D; d < dp; d++) q[d] = 0;
        }
    memset(O, 0, (size_t)(M * dp) * sizeof *O);
    for (int64_t r = 0; r < M; r++) m[r] = -INFINITY, l[r] = 0;

    const int64_t  p_last = sq->past + i0 + nt - 1;
    const int32_t *sel_row = NULL;
    int64_t        n_blocks = p_last / bs + 1;
    if (job->sparse) {
        sel_row  = (const int32_t *)pb->sel->data + g * pb->sel->stride[0] + (sq->q0 + i0) * pb->sel->stride[1];
        n_blocks = pb->sel->shape[2];
    }
    for (int64_t c = 0; c < n_blocks; c++) {
        int64_t b = job->sparse ? sel_row[c] : c;
        if (b < 0) break;
        if (b * bs > p_last) continue;
        int64_t nmax = 0;
        for (int64_t r = 0; r < M; r++) {
            int64_t p = sq->past + i0 + r / G, n = p - b * bs + 1;
            valid[r] = (int32_t)(n < 0 ? 0 : n > bs ? bs : n);
            nmax     = valid[r] > nmax ? valid[r] : nmax;
        }
        int64_t tile = *tiles_entry(t, pb, s, g, b);
        mk_qk(Qs, dp, M, t->kt + tile * np * dp, np, D, np, S, np);
        softmax_tile(S, np, M, np, valid, m, l, O, dp, dp);
        mk_pv(S, np, M, nmax, t->v + tile * np * dp, dp, dp, O, dp);
    }
    for (int64_t r = 0; r < M; r++) {
        int64_t row = sq->q0 + i0 + r / G, h = g * G + r % G;
        float   inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        float  *o   = O + r * dp;
        for (int64_t d = 0; d < D; d++) o[d] *= inv;
        store_row(pb->out, ifl__off3(pb->out, row, h, 0), o, D);
        if (pb->lse) {
            float lse = l[r] > 0 ? (float)((m[r] + log2((double)l[r])) * LN2) : -INFINITY;
            ifl__store(pb->lse, ifl__off3(pb->lse, row, h, 0), lse);
        }
    }
}

static enum ifl_status attn_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse, const char *fn) {
    struct kv_tiles t;
    struct fwd_job  job = {pb, &t, sparse, sparse ? 1 : dense_tokens_per_task(pb->g), NULL, NULL, 0};
    enum ifl_status st  = IFL_STATUS_OK;
    job.task_seq        = malloc((size_t)(pb->n_seqs + 1) * sizeof *job.task_seq);
    if (CPU_FN(tiles_begin)(&t, pb) != 0 || job.task_seq == NULL) goto oom;
    /* mark the blocks some row needs */
    job.task_seq[0] = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const struct ifl__seq *sq = &pb->seqs[s];
        job.task_seq[s + 1] = job.task_seq[s] + pb->hkv * ifl__ceil_div(sq->nq, job.tokens_per_task);
        if (sq->nq == 0) continue;
        for (int64_t g = 0; g < pb->hkv; g++) {
            if (!sparse) {
                for (int64_t b = 0; b <= (sq->past + sq->nq - 1) / t.bs; b++) *tiles_entry(&t, pb, s, g, b) = 1;
                continue;
            }
            for (int64_t i = 0; i < sq->nq; i++) {
                const int32_t *row = (const int32_t *)pb->sel->data + g * pb->sel->stride[0] + (sq->q0 + i) * pb->sel->stride[1];
                for (int64_t c = 0; c < pb->sel->shape[2] && row[c] >= 0; c++)
                    if (row[c] * t.bs <= sq->past + i) *tiles_entry(&t, pb, s, g, row[c]) = 1;
            }
        }
    }
    if (CPU_FN(tiles_build)(&t, ctx, pb, 0) != 0) goto oom;
    int64_t M          = job.tokens_per_task * pb->g;
    int     nth        = ctx->n_threads;
    job.scratch_floats = fwd_scratch_floats(M, t.dp, t.np);
    job.scratch        = malloc((size_t)(job.scratch_floats * nth) * sizeof(float));
    if (job.scratch == NULL) goto oom;
    cpu_pool_run(cpu_pool_of(ctx), job.task_seq[pb->n_seqs], fwd_task, &job);
    goto done;
oom:
    st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn);
done:
    CPU_FN(tiles_free)(&t);
    free(job.task_seq);
    free(job.scratch);
    return st;
}

enum ifl_status CPU_FN(cpu_sparse_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_dense_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);

enum ifl_status CPU_FN(cpu_sparse_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_fwd(ctx, pb, 1, "ifl_sparse_attn_fwd");
}

enum ifl_status CPU_FN(cpu_dense_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_fwd(ctx, pb, 0, "ifl_dense_attn_fwd");
}
