/* SPDX-License-Identifier: MIT
 *
 * ref_select.c -- stage 1, block selection (spec §2, Design B, with the project's decisions).
 * For one query token at absolute position p and one KV head g:
 *   1. scores of each query head h of the group against the fine compressed keys visible at p,
 *      normalised by a log-sum-exp over the visible coarse keys (approx) or fine keys (exact);
 *   2. the group sum S[j] of those probabilities (0 for keys that exist but are not visible);
 *   3. a block's score is the max of S over the fine keys whose windows overlap the block, -inf
 *      when none does; init blocks and the local window (the query's block and the
 *      window_size/block_size blocks before it) are forced with +inf;
 *   4. the best ifl_select_width() blocks (ties to the smaller index), minus those after the
 *      query's block, ascending, -1 padded.
 * Memory per call is O(keys) per sequence; nothing of size queries x keys is ever held.
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct scored_block {
    double  score;
    int32_t block;
};

/* Best first; equal scores (+inf forced blocks included) go to the smaller block index. A NaN
 * score (only from NaN inputs with check_finite off) ranks last, so the order stays total. */
static int by_score_then_index(const void *a, const void *b) {
    const struct scored_block *x = a, *y = b;
    double xs = isnan(x->score) ? -INFINITY : x->score, ys = isnan(y->score) ? -INFINITY : y->score;
    if (xs != ys) return xs > ys ? -1 : 1;
    return (x->block > y->block) - (x->block < y->block);
}

static int ascending_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static double dot(const double *a, const double *b, int64_t d) {
    double s = 0;
    for (int64_t x = 0; x < d; x++) s += a[x] * b[x];
    return s;
}

/* log sum_j exp(scale * <q, keys[j, g]>) over j < n (n > 0); keys is [*, hkv, d]. */
static double log_sum_exp(const double *q, const double *keys, int64_t n, int64_t hkv, int64_t g,
                          int64_t d, double scale) {
    double m = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        double z = scale * dot(q, keys + (j * hkv + g) * d, d);
        if (z > m) m = z;
    }
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += exp(scale * dot(q, keys + (j * hkv + g) * d, d) - m);
    return m + log(sum);
}

/* Fine compressed keys overlapping block b: j in [*lo, *hi), clipped to [0, n1). */
static void block_keys(int64_t b, const struct ifl_sparse_config *c, int64_t n1, int64_t *lo,
                       int64_t *hi) {
    int64_t first_tok = b * c->block_size, last_tok = first_tok + c->block_size - 1;
    /* window j = [j*stride, j*stride + kernel - 1] overlaps iff it starts <= last_tok and ends >= first_tok */
    int64_t need = first_tok - c->kernel_size + 1; /* j*stride >= need */
    int64_t l    = need <= 0 ? 0 : ifl__ceil_div(need, c->kernel_stride);
    int64_t h    = last_tok / c->kernel_stride + 1;
    *lo          = l;
    *hi          = h < n1 ? h : n1;
}

/* Selection rows of one sequence. q: [nq, hq, d] of the sequence, c1: [n1, hkv, d],
 * c2: [n2, hkv, d]; writes sel rows (g, q0 + i) for all g and i. Scratch sizes in the caller. */
static void select_seq(const struct ifl__problem *pb, const struct ifl__seq *sq, const double *q,
                       const double *c1, int64_t n1, const double *c2, double *S,
                       struct scored_block *blocks, int32_t *picked) {
    const struct ifl_sparse_config *c     = &pb->cfg;
    const int64_t                   d     = pb->d, hkv = pb->hkv, G = pb->g;
    const int64_t                   nb    = ifl__ceil_div(sq->nk, c->block_size);
    const int64_t                   width = ifl_select_width(c, sq->nk);
    const int64_t                   nloc  = ifl__local_blocks(c);
    const struct ifl_tensor        *sel   = pb->sel;
    for (int64_t i = 0; i < sq->nq; i++) {
        const int64_t p   = sq->past + i;
        const int64_t qb  = p / c->block_size;
        const int64_t vis1 = ifl__visible_compressed(p, c->kernel_size, c->kernel_stride);
        const int64_t vis2 = ifl__visible_compressed(p, c->coarse_kernel_size, c->coarse_kernel_stride);
        for (int64_t g = 0; g < hkv; g++) {
            /* 1-2: group-summed probabilities over the visible fine keys */
            for (int64_t j = 0; j < n1; j++) S[j] = 0;
            for (int64_t h = g * G; h < (g + 1) * G && vis1 > 0; h++) {
                const double *qh = q + (i * pb->hq + h) * d;
                /* decision 4: no visible coarse key -> the exact normaliser over the fine keys */
                double lse = (c->lse_mode == IFL_LSE_APPROX && vis2 > 0)
                                 ? log_sum_exp(qh, c2, vis2, hkv, g, d, c->scale)
                                 : log_sum_exp(qh, c1, vis1, hkv, g, d, c->scale);
                for (int64_t j = 0; j < vis1; j++)
                    S[j] += exp(c->scale * dot(qh, c1 + (j * hkv + g) * d, d) - lse);
            }
            /* 3: pooled block scores, forced blocks +inf */
            for (int64_t b = 0; b < nb; b++) {
                double score;
                if (b < c->init_blocks || (b >= qb - nloc && b <= qb)) {
                    score = INFINITY;
                } else {
                    int64_t lo, hi;
                    block_keys(b, c, n1, &lo, &hi);
                    score = -INFINITY;
                    for (int64_t j = lo; j < hi; j++)
                        if (S[j] > score) score = S[j];
                }
                blocks[b] = (struct scored_block){score, (int32_t)b};
            }
            /* 4: top `width`, keep blocks <= qb, ascending, -1 padded */
            qsort(blocks, (size_t)nb, sizeof *blocks, by_score_then_index);
            int64_t n_kept = 0;
            for (int64_t r = 0; r < width; r++)
                if (blocks[r].block <= qb) picked[n_kept++] = blocks[r].block;
            qsort(picked, (size_t)n_kept, sizeof *picked, ascending_i32);
            int32_t *row = (int32_t *)sel->data + g * sel->stride[0] + (sq->q0 + i) * sel->stride[1];
            for (int64_t col = 0; col < sel->shape[2]; col++) row[col] = col < n_kept ? picked[col] : -1;
        }
    }
}

/* The compressed keys of one sequence: copied out of pb->c1/c2 when the caller holds them (a KV
 * cache does), else computed from its keys. off1/off2 are the sequence's first rows there. */
static void seq_compressed(const struct ifl__problem *pb, const struct ifl__seq *sq, const double *k,
                           const double *c1_all, const double *c2_all, int64_t off1, int64_t off2,
                           double *c1, double *c2) {
    const struct ifl_sparse_config *c   = &pb->cfg;
    const int64_t                   row = pb->hkv * pb->d;
    int64_t n1 = ifl_compressed_len(sq->nk, c->kernel_size, c->kernel_stride);
    int64_t n2 = ifl_compressed_len(sq->nk, c->coarse_kernel_size, c->coarse_kernel_stride);
    if (c1_all) memcpy(c1, c1_all + off1 * row, (size_t)(n1 * row) * sizeof *c1);
    else ref_compress_seq(k + sq->k0 * row, sq->nk, pb->hkv, pb->d, c->kernel_size, c->kernel_stride, pb->k->dtype, c1);
    if (c2_all) memcpy(c2, c2_all + off2 * row, (size_t)(n2 * row) * sizeof *c2);
    else ref_compress_seq(k + sq->k0 * row, sq->nk, pb->hkv, pb->d, c->coarse_kernel_size, c->coarse_kernel_stride,
                          pb->k->dtype, c2);
}

enum ifl_status ref_select(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    const struct ifl_sparse_config *c  = &pb->cfg;
    enum ifl_status                 st = IFL_STATUS_OK;
    double *q = ref_load(pb->q), *k = ref_load(pb->k);
    double *c1_all = ref_load(pb->c1), *c2_all = ref_load(pb->c2); /* NULL unless given */
    int64_t max_nk = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++)
        if (pb->seqs[s].nk > max_nk) max_nk = pb->seqs[s].nk;
    int64_t max_n1 = ifl_compressed_len(max_nk, c->kernel_size, c->kernel_stride);
    int64_t max_n2 = ifl_compressed_len(max_nk, c->coarse_kernel_size, c->coarse_kernel_stride);
    int64_t max_nb = ifl__ceil_div(max_nk, c->block_size);
    double *c1 = malloc((size_t)(max_n1 * pb->hkv * pb->d + 1) * sizeof *c1);
    double *c2 = malloc((size_t)(max_n2 * pb->hkv * pb->d + 1) * sizeof *c2);
    double *S  = malloc((size_t)(max_n1 + 1) * sizeof *S);
    struct scored_block *blocks = malloc((size_t)(max_nb + 1) * sizeof *blocks);
    int32_t             *picked = malloc((size_t)(max_nb + 1) * sizeof *picked);
    if (!q || !k || !c1 || !c2 || !S || !blocks || !picked || (pb->c1 && !c1_all) || (pb->c2 && !c2_all)) {
        st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
        goto done;
    }
    int64_t off1 = 0, off2 = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const struct ifl__seq *sq = &pb->seqs[s];
        int64_t n1 = ifl_compressed_len(sq->nk, c->kernel_size, c->kernel_stride);
        if (sq->nq > 0) {
            seq_compressed(pb, sq, k, c1_all, c2_all, off1, off2, c1, c2);
            select_seq(pb, sq, q + sq->q0 * pb->hq * pb->d, c1, n1, c2, S, blocks, picked);
        }
        off1 += n1;
        off2 += ifl_compressed_len(sq->nk, c->coarse_kernel_size, c->coarse_kernel_stride);
    }
done:
    free(q);
    free(k);
    free(c1_all);
    free(c2_all);
    free(c1);
    free(c2);
    free(S);
    free(blocks);
    free(picked);
    return st;
}
