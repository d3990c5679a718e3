/* SPDX-License-Identifier: MIT
 *
 * cpu_bwd.c -- backward of dense and sparse attention on the cpu, deterministic for any thread
 * count: instead of accumulating dK/dV from many query tasks (an order that would depend on
 * scheduling), it runs two passes that each own their outputs.
 *   pass A, one task per query-row group (as in the forward): recompute P = exp(s - lse) block by
 *          block, dP = dO.V^T, dS = P (dP - Di) with Di = <dO, O>, and dQ = scale * sum dS.K;
 *   pass B, one task per (sequence, KV head, key block): gather the query rows that attend the
 *          block (all later rows for dense attention; for sparse, the rows whose selection holds
 *          it, from an inverted index), recompute their P and dS against it, and accumulate
 *          dV = sum P^T.dO and dK = scale * sum dS^T.Q in a fixed row order.
 * The price is computing the scores twice, as FlashAttention's backward does once more anyway.
 */
#include "cpu_tiles.h"

#include <stdlib.h>

#define ROWS_B 64 /* query rows per gather in pass B */

struct bwd_job {
    const struct ifl__problem *pb;
    const struct kv_tiles     *tiles;
    int                        sparse;
    int64_t                    tokens_per_task; /* pass A */
    int64_t                   *task_seq;        /* pass A: [n_seqs + 1] */
    float                     *di, *lse2;       /* [Tq][Hq]: <dO, O> and the LSE in log2 units */
    int64_t                   *inv_off;         /* sparse pass B: [n_tiles + 1] */
    int32_t                   *inv_tok;         /* sparse pass B: tokens (within the sequence) */
    float                     *scratch;
    int64_t                    scratch_floats;
};

/* Loads q (scaled into log2 units) and dO rows of token i (sequence sq), heads of KV head g. */
static void load_rows(const struct ifl__problem *pb, const struct ifl__seq *sq, int64_t i, int64_t g,
                      int64_t dp, float *Qs, float *dOs) {
    const float qscale = (float)(pb->cfg.scale * LOG2E);
    for (int64_t hh = 0; hh < pb->g; hh++) {
        float *q = Qs + hh * dp, *o = dOs + hh * dp;
        load_row(q, pb->q, ifl__off3(pb->q, sq->q0 + i, g * pb->g + hh, 0), pb->d);
        load_row(o, pb->dout, ifl__off3(pb->dout, sq->q0 + i, g * pb->g + hh, 0), pb->d);
        for (int64_t d = 0; d < pb->d; d++) q[d] *= qscale;
        for (int64_t d = pb->d; d < dp; d++) q[d] = 0, o[d] = 0;
    }
}

/* S := P = exp2(S - lse2) masked by valid; dP := dS = P (dP - di). Rows r of M. */
static void probs_and_ds(float *S, float *dP, int64_t np, int64_t M, const int32_t *valid, const float *lse2,
                         const float *di) {
    for (int64_t r = 0; r < M; r++) {
        float *s = S + r * np, *dp_ = dP + r * np;
        for (int64_t k = 0; k < np; k += VL) {
            vf p = vexp2(vload(s + k) - lse2[r]);
            for (int i = 0; i < VL; i++)
                if (k + i >= valid[r]) p[i] = 0;
            vstore(s + k, p);
            vstore(dp_ + k, p * (vload(dp_ + k) - di[r]));
        }
    }
}

/* ---- pass A: dQ (and Di, lse2 for pass B) ---- */

static void pass_a(void *arg, int64_t task, int thread) {
    const struct bwd_job      *job = arg;
    const struct ifl__problem *pb  = job->pb;
    const struct kv_tiles     *t   = job->tiles;
    int64_t s = 0;
    while (job->task_seq[s + 1] <= task) s++;
    const struct ifl__seq *sq = &pb->seqs[s];
    const int64_t G = pb->g, D = pb->d, dp = t->dp, np = t->np, bs = t->bs;
    const int64_t per_g = ifl__ceil_div(sq->nq, job->tokens_per_task), local = task - job->task_seq[s];
    const int64_t g = local / per_g, i0 = (local % per_g) * job->tokens_per_task;
    const int64_t nt = sq->nq - i0 < job->tokens_per_task ? sq->nq - i0 : job->tokens_per_task, M = nt * G;

    float *Qs = job->scratch + thread * job->scratch_floats;
    float *dOs = Qs + M * dp, *dQ = dOs + M * dp, *S = dQ + M * dp, *dP = S + M * np;
    float *di = dP + M * np, *lse2 = di + M, *orow = lse2 + M;
    int32_t *valid = (int32_t *)(orow + dp);
    float  **qp = (float **)(valid + M + 8 - M % 8), **gp = qp + M, **dqp = gp + M;
    row_ptrs(Qs, dp, M, qp), row_ptrs(dOs, dp, M, gp), row_ptrs(dQ, dp, M, dqp);
    for (int64_t tk = 0; tk < nt; tk++) {
        load_rows(pb, sq, i0 + tk, g, dp, Qs + tk * G * dp, dOs + tk * G * dp);
        for (int64_t hh = 0; hh < G; hh++) {
            int64_t r = tk * G + hh, row = sq->q0 + i0 + tk, h = g * G + hh;
            load_row(orow, pb->out, ifl__off3(pb->out, row, h, 0), D);
            float acc = 0;
            for (int64_t d = 0; d < D; d++) acc += orow[d] * dOs[r * dp + d];
            di[r]   = acc;
            lse2[r] = (float)(ifl__load(pb->lse, ifl__off3(pb->lse, row, h, 0)) * LOG2E);
            job->di[row * pb->hq + h]   = di[r];
            job->lse2[row * pb->hq + h] = lse2[r];
        }
    }
    memset(dQ, 0, (size_t)(M * dp) * sizeof *dQ);
    const int64_t  p_last  = sq->past + i0 + nt - 1;
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
        for (int64_t r = 0; r < M; r++) {
            int64_t n = sq->past + i0 + r / G - b * bs + 1;
            valid[r]  = (int32_t)(n < 0 ? 0 : n > bs ? bs : n);
        }
        int64_t tile = *tiles_entry(t, pb, s, g, b);
        mk_qk((const float *const *)qp, M, t->kt + tile * np * dp, np, D, np, S, np);
        mk_qk((const float *const *)gp, M, t->vt + tile * np * dp, np, D, np, dP, np);
        probs_and_ds(S, dP, np, M, valid, lse2, di);
        mk_pv(dP, np, M, np, t->k + tile * np * dp, dp, dp, dqp);
    }
    const float scale = (float)pb->cfg.scale;
    for (int64_t r = 0; r < M; r++) {
        float *o = dQ + r * dp;
        for (int64_t d = 0; d < D; d++) o[d] *= scale;
        store_row(pb->dq, ifl__off3(pb->dq, sq->q0 + i0 + r / G, g * G + r % G, 0), o, D);
    }
}

/* ---- pass B: dK, dV of one key block ---- */

static void pass_b(void *arg, int64_t tile, int thread) {
    const struct bwd_job      *job = arg;
    const struct ifl__problem *pb  = job->pb;
    const struct kv_tiles     *t   = job->tiles;
    const int64_t e = t->src[tile];
    int64_t s = pb->n_seqs - 1;
    while (s > 0 && t->seq_base[s] > e) s--;
    const struct ifl__seq *sq = &pb->seqs[s];
    const int64_t G = pb->g, D = pb->d, dp = t->dp, np = t->np, bs = t->bs;
    const int64_t nb = ifl__ceil_div(sq->nk, bs), g = (e - t->seq_base[s]) / nb, b = (e - t->seq_base[s]) % nb;
    const int64_t tokens_per_gather = ROWS_B / G > 0 ? ROWS_B / G : 1, MR = tokens_per_gather * G;

    float *Qs = job->scratch + thread * job->scratch_floats;
    float *dOs = Qs + MR * dp, *S = dOs + MR * dp, *dP = S + MR * np, *Pt = dP + MR * np, *dSt = Pt + np * MR;
    float *dK = dSt + np * MR, *dV = dK + np * dp, *di = dV + np * dp, *lse2 = di + MR;
    int32_t *valid = (int32_t *)(lse2 + MR);
    float  **qp = (float **)(valid + MR + 8 - MR % 8), **gp = qp + MR, **dkp = gp + MR, **dvp = dkp + np;
    row_ptrs(Qs, dp, MR, qp), row_ptrs(dOs, dp, MR, gp), row_ptrs(dK, dp, np, dkp), row_ptrs(dV, dp, np, dvp);
    memset(dK, 0, (size_t)(np * dp) * sizeof *dK);
    memset(dV, 0, (size_t)(np * dp) * sizeof *dV);

    /* the tokens attending this block, ascending: dense = every token at or after the block */
    int64_t        first = b * bs - sq->past < 0 ? 0 : b * bs - sq->past;
    int64_t        n_tok = job->sparse ? job->inv_off[tile + 1] - job->inv_off[tile] : sq->nq - first;
    const int32_t *toks  = job->sparse ? job->inv_tok + job->inv_off[tile] : NULL;
    for (int64_t k0 = 0; k0 < n_tok; k0 += tokens_per_gather) {
        int64_t nt = n_tok - k0 < tokens_per_gather ? n_tok - k0 : tokens_per_gather, M = nt * G;
        for (int64_t tk = 0; tk < nt; tk++) {
            int64_t i = toks ? toks[k0 + tk] : first + k0 + tk, n = sq->past + i - b * bs + 1;
            load_rows(pb, sq, i, g, dp, Qs + tk * G * dp, dOs + tk * G * dp);
            for (int64_t hh = 0; hh < G; hh++) {
                int64_t r = tk * G + hh, at = (sq->q0 + i) * pb->hq + g * G + hh;
                di[r] = job->di[at], lse2[r] = job->lse2[at];
                valid[r] = (int32_t)(n > bs ? bs : n);
            }
        }
        mk_qk((const float *const *)qp, M, t->kt + tile * np * dp, np, D, np, S, np);
        mk_qk((const float *const *)gp, M, t->vt + tile * np * dp, np, D, np, dP, np);
        probs_and_ds(S, dP, np, M, valid, lse2, di);
        for (int64_t r = 0; r < M; r++) /* transpose P and dS to [key][row] */
            for (int64_t k = 0; k < np; k++) Pt[k * MR + r] = S[r * np + k], dSt[k * MR + r] = dP[r * np + k];
        mk_pv(Pt, MR, np, M, dOs, dp, dp, dvp);
        mk_pv(dSt, MR, np, M, Qs, dp, dp, dkp);
    }
    /* Qs carries scale * log2(e); dK wants scale alone */
    const int64_t rows = sq->nk - b * bs < bs ? sq->nk - b * bs : bs;
    for (int64_t r = 0; r < rows; r++) {
        float *k = dK + r * dp;
        for (int64_t d = 0; d < D; d++) k[d] *= (float)LN2;
        store_row(pb->dk, ifl__off3(pb->dk, sq->k0 + b * bs + r, g, 0), k, D);
        store_row(pb->dv, ifl__off3(pb->dv, sq->k0 + b * bs + r, g, 0), dV + r * dp, D);
    }
}

static enum ifl_status attn_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse, const char *fn) {
    struct kv_tiles t;
    struct bwd_job  job;
    memset(&job, 0, sizeof job);
    job.pb              = pb;
    job.tiles           = &t;
    job.sparse          = sparse;
    job.tokens_per_task = sparse ? 1 : (pb->g >= 64 ? 1 : 64 / pb->g);
    enum ifl_status st  = IFL_STATUS_OK;
    float          *zero = NULL;
    job.task_seq        = malloc((size_t)(pb->n_seqs + 1) * sizeof *job.task_seq);
    job.di              = malloc((size_t)(pb->tq * pb->hq) * sizeof *job.di);
    job.lse2            = malloc((size_t)(pb->tq * pb->hq) * sizeof *job.lse2);
    if (CPU_FN(tiles_begin)(&t, pb) != 0 || !job.task_seq || !job.di || !job.lse2) goto oom;
    job.task_seq[0] = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const struct ifl__seq *sq = &pb->seqs[s];
        job.task_seq[s + 1] = job.task_seq[s] + pb->hkv * ifl__ceil_div(sq->nq, job.tokens_per_task);
        for (int64_t g = 0; g < pb->hkv && sq->nq > 0; g++) {
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
    if (CPU_FN(tiles_build)(&t, ctx, pb, 1) != 0) goto oom;
    if (sparse) { /* inverted index: for each tile, the tokens whose selection holds it */
        job.inv_off = calloc((size_t)(t.n_tiles + 2), sizeof *job.inv_off);
        int64_t total = 0;
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1) {
                for (int64_t k = 0; k < t.n_tiles; k++) job.inv_off[k + 1] += job.inv_off[k];
                total       = job.inv_off[t.n_tiles];
                job.inv_tok = malloc((size_t)(total + 1) * sizeof *job.inv_tok);
                if (!job.inv_tok) goto oom;
            }
            if (!job.inv_off) goto oom;
            int64_t *fill = pass ? calloc((size_t)(t.n_tiles + 1), sizeof *fill) : NULL;
            if (pass && !fill) goto oom;
            for (int64_t s = 0; s < pb->n_seqs; s++)
                for (int64_t g = 0; g < pb->hkv; g++)
                    for (int64_t i = 0; i < pb->seqs[s].nq; i++) {
                        const int32_t *row = (const int32_t *)pb->sel->data + g * pb->sel->stride[0] + (pb->seqs[s].q0 + i) * pb->sel->stride[1];
                        for (int64_t c = 0; c < pb->sel->shape[2] && row[c] >= 0; c++) {
                            if (row[c] * t.bs > pb->seqs[s].past + i) continue;
                            int64_t tile = *tiles_entry(&t, pb, s, g, row[c]);
                            if (pass == 0) job.inv_off[tile + 1]++;
                            else job.inv_tok[job.inv_off[tile] + fill[tile]++] = (int32_t)i;
                        }
                    }
            free(fill);
        }
    }
    const int64_t MA = job.tokens_per_task * pb->g, MR = (ROWS_B / pb->g > 0 ? ROWS_B / pb->g : 1) * pb->g;
    const int64_t pf = PTR_FLOATS;
    const int64_t fa = MA * (3 * t.dp + 2 * t.np + 3 + 3 * pf) + t.dp + 64;
    const int64_t fb = MR * (2 * t.dp + 4 * t.np + 3 + 2 * pf) + 2 * t.np * (t.dp + pf) + 64;
    job.scratch_floats = round_up(fa > fb ? fa : fb, 16); /* keeps each thread's scratch 64-byte aligned */
    job.scratch        = malloc((size_t)(job.scratch_floats * ctx->n_threads) * sizeof(float));
    zero               = calloc((size_t)pb->d, sizeof *zero);
    if (!job.scratch || !zero) goto oom;
    cpu_pool_run(cpu_pool_of(ctx), job.task_seq[pb->n_seqs], pass_a, &job);
    cpu_pool_run(cpu_pool_of(ctx), t.n_tiles, pass_b, &job);
    /* keys of blocks no query attends get zero gradients */
    for (int64_t s = 0; s < pb->n_seqs; s++)
        for (int64_t g = 0; g < pb->hkv; g++)
            for (int64_t b = 0; b < ifl__ceil_div(pb->seqs[s].nk, t.bs); b++) {
                if (*tiles_entry(&t, pb, s, g, b) >= 0) continue;
                for (int64_t r = b * t.bs; r < (b + 1) * t.bs && r < pb->seqs[s].nk; r++) {
                    store_row(pb->dk, ifl__off3(pb->dk, pb->seqs[s].k0 + r, g, 0), zero, pb->d);
                    store_row(pb->dv, ifl__off3(pb->dv, pb->seqs[s].k0 + r, g, 0), zero, pb->d);
                }
            }
    goto done;
oom:
    st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn);
done:
    CPU_FN(tiles_free)(&t);
    free(job.task_seq), free(job.di), free(job.lse2), free(job.inv_off), free(job.inv_tok), free(job.scratch);
    free(zero);
    return st;
}

enum ifl_status CPU_FN(cpu_sparse_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_dense_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);

enum ifl_status CPU_FN(cpu_sparse_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_bwd(ctx, pb, 1, pb->fn);
}

enum ifl_status CPU_FN(cpu_dense_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_bwd(ctx, pb, 0, pb->fn);
}
