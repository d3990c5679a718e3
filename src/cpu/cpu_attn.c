/* SPDX-License-Identifier: MIT
 *
 * cpu_attn.c -- dense causal and sparse (stage 2) attention forward on the cpu.
 * One task = one KV head of one sequence and the G query heads of a few consecutive tokens. The
 * task walks the union of the blocks its tokens attend in ascending order (all past blocks for
 * dense attention; the merged selections for sparse) and runs each key/value tile once for all
 * the rows that attend it: the G heads of a token share its selection, and neighbouring tokens
 * mostly select the same blocks. FlashAttention's online softmax per row; each task writes only
 * its own rows, so results do not depend on the thread count.
 */
#include "cpu_tiles.h"

#include <stdlib.h>

/* Tokens per task: about 64 rows for dense attention; 128 rows for sparse, where the tokens of a
 * task share every tile that several of them selected (neighbouring tokens select alike). */
static int64_t tokens_per_task(int64_t G, int sparse) {
    int64_t rows = sparse ? 128 : 64;
    return G >= rows ? 1 : rows / G;
}

/* The next selected block of a selection row at or after *cursor that the token at position p
 * can see, or INT64_MAX when none is left. */
static int64_t next_block(const int32_t *row, int64_t width, int64_t *cursor, int64_t p, int64_t bs) {
    while (*cursor < width && row[*cursor] >= 0) {
        int64_t b = row[*cursor];
        if (b * bs <= p) return b;
        ++*cursor; /* a block after the query: nothing visible (rows are ascending, so done) */
    }
    return INT64_MAX;
}

struct fwd_job {
    const struct ifl__problem *pb;
    const struct kv_tiles     *tiles;
    int                        sparse;
    int64_t                    tokens_per_task;
    int64_t                   *task_seq; /* [n_seqs + 1] first task of each sequence */
    int                        lazy;     /* 1: every block serves one task, converted by that task */
    char                      *scratch;  /* per thread */
    int64_t                    scratch_bytes;
};

/* Per-thread scratch of a task of M rows and T tokens (plus three tiles in lazy mode). */
static int64_t fwd_scratch_bytes(int64_t M, int64_t T, int64_t dp, int64_t np, int lazy) {
    return (int64_t)sizeof(float) * (M * (2 * dp + np + 2) + 64 + (lazy ? 3 * np * dp : 0)) +
           (int64_t)sizeof(int32_t) * M + (int64_t)sizeof(float *) * 4 * M + (int64_t)sizeof(int64_t) * T + 64;
}

static void fwd_task(void *arg, int64_t task, int thread) {
    const struct fwd_job      *job = arg;
    const struct ifl__problem *pb  = job->pb;
    const struct kv_tiles     *t   = job->tiles;
    int64_t s = 0;
    while (job->task_seq[s + 1] <= task) s++;
    const struct ifl__seq *sq = &pb->seqs[s];
    const int64_t          G = pb->g, D = pb->d, dp = t->dp, np = t->np, bs = t->bs, TT = job->tokens_per_task;
    const int64_t          per_g = ifl__ceil_div(sq->nq, TT);
    int64_t                local = task - job->task_seq[s];
    const int64_t          g     = local / per_g;
    const int64_t          chunk = per_g - 1 - local % per_g; /* heaviest (latest) rows first */
    const int64_t          i0    = chunk * TT;
    const int64_t          nt    = sq->nq - i0 < TT ? sq->nq - i0 : TT;
    const int64_t          M     = nt * G, p0 = sq->past + i0; /* token k sits at p0 + k */

    float   *Qs = (float *)(job->scratch + thread * job->scratch_bytes);
    float   *O = Qs + M * dp, *S = O + M * dp, *m = S + M * np, *l = m + M;
    int32_t *valid = (int32_t *)(l + M);
    float  **qp = (float **)(valid + M + 8 - (M % 8)), **op = qp + M, **mp = op + M, **lp = mp + M;
    int64_t *cursor = (int64_t *)(lp + M);
    float   *lazy_kt = (float *)(cursor + nt + 8), *lazy_v = lazy_kt + np * dp, *lazy_k = lazy_v + np * dp;
    const float qscale = (float)(pb->cfg.scale * LOG2E);
    for (int64_t r = 0; r < M; r++) {
        float *q = Qs + r * dp;
        load_row(q, pb->q, ifl__off3(pb->q, sq->q0 + i0 + r / G, g * G + r % G, 0), D);
        for (int64_t d = 0; d < D; d++) q[d] *= qscale;
        for (int64_t d = D; d < dp; d++) q[d] = 0;
    }

    /* O accumulates sum_j p_j v_j with every p_j <= 1 before the division by l, so values near
     * the float32 limit can overflow it (V = 3e38, a few keys) where the normalised result fits.
     * Such a task runs again with P scaled by 2^-e, e such that the number of keys times max|v|
     * fits; the power of two is exact, and the result is multiplied back at the end. */
    float pscale = 1.0f;
again:
    for (int64_t r = 0; r < M; r++) m[r] = -INFINITY, l[r] = 0;
    memset(O, 0, (size_t)(M * dp) * sizeof *O);
    const struct ifl_tensor *sel = pb->sel;
    const int64_t            width = job->sparse ? sel->shape[2] : 0;
    for (int64_t k = 0; k < nt; k++) cursor[k] = 0;
    for (int64_t b = 0;; b++) {
        /* the next block some token of the task attends, and which tokens do */
        if (job->sparse) {
            b = INT64_MAX;
            for (int64_t k = 0; k < nt; k++) {
                const int32_t *row = (const int32_t *)sel->data + g * sel->stride[0] + (sq->q0 + i0 + k) * sel->stride[1];
                int64_t        nb  = next_block(row, width, &cursor[k], p0 + k, bs);
                b                  = nb < b ? nb : b;
            }
            if (b == INT64_MAX) break;
        } else if (b * bs > p0 + nt - 1) {
            break;
        }
        int64_t n = 0, nmax = 0;
        for (int64_t k = 0; k < nt; k++) {
            if (job->sparse) {
                const int32_t *row = (const int32_t *)sel->data + g * sel->stride[0] + (sq->q0 + i0 + k) * sel->stride[1];
                if (cursor[k] >= width || row[cursor[k]] != b) continue;
                cursor[k]++;
            } else if (b * bs > p0 + k) {
                continue;
            }
            int64_t cnt = p0 + k - b * bs + 1;
            cnt         = cnt > bs ? bs : cnt;
            nmax        = cnt > nmax ? cnt : nmax;
            for (int64_t hh = 0; hh < G; hh++, n++) {
                int64_t r = k * G + hh;
                qp[n] = Qs + r * dp, op[n] = O + r * dp, mp[n] = m + r, lp[n] = l + r;
                valid[n] = (int32_t)cnt;
            }
        }
        const float *kt = lazy_kt, *vv = lazy_v;
        if (job->lazy) {
            CPU_FN(tile_convert)(t, pb, s, g, b, lazy_kt, lazy_v, lazy_k, NULL, 0);
        } else {
            int64_t tile = *tiles_entry(t, pb, s, g, b);
            kt = t->kt + tile * np * dp, vv = t->v + tile * np * dp;
        }
        mk_qk((const float *const *)qp, n, kt, np, D, np, S, np);
        softmax_tile(S, np, n, np, valid, mp, lp, op, dp);
        if (pscale != 1.0f)
            for (int64_t i = 0; i < n * np; i++) S[i] *= pscale;
        mk_pv(S, np, n, nmax, vv, dp, dp, op);
    }
    if (pscale == 1.0f) {
        int finite = 1;
        for (int64_t i = 0; i < M * dp && finite; i++) finite = isfinite(O[i]);
        if (!finite) {
            /* at most p0 + nt keys < 2^(ilogb + 1): with e = ilogb + 2, |O| <= max|v| / 2 */
            pscale = ldexpf(1.0f, -(ilogb((double)(p0 + nt)) + 2));
            goto again;
        }
    }
    for (int64_t r = 0; r < M; r++) {
        int64_t row = sq->q0 + i0 + r / G, h = g * G + r % G;
        float   inv = l[r] > 0 ? 1.0f / l[r] / pscale : 0.0f;
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
    struct fwd_job  job = {pb, &t, sparse, tokens_per_task(pb->g, sparse), NULL, 0, NULL, 0};
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
    /* when each (sequence, KV head) is one task (decode, short chunks) every block serves one task:
     * it converts its blocks itself into cache-resident scratch instead of a shared tile array */
    job.lazy = 1;
    for (int64_t s = 0; s < pb->n_seqs; s++) job.lazy &= pb->seqs[s].nq <= job.tokens_per_task;
    if (!job.lazy && CPU_FN(tiles_build)(&t, ctx, pb, 0) != 0) goto oom;
    int64_t M         = job.tokens_per_task * pb->g;
    job.scratch_bytes = round_up(fwd_scratch_bytes(M, job.tokens_per_task, t.dp, t.np, job.lazy), 64);
    job.scratch       = malloc((size_t)(job.scratch_bytes * ctx->n_threads));
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
    return attn_fwd(ctx, pb, 1, pb->fn);
}

enum ifl_status CPU_FN(cpu_dense_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_fwd(ctx, pb, 0, pb->fn);
}
