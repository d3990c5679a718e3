/* SPDX-License-Identifier: MIT
 *
 * ref_attn.c -- stage 2 (sparse) and dense causal attention, forward and backward (spec §4).
 * Both are one computation over a set of key spans per (query token, KV head):
 *   dense  : keys 0 .. p
 *   sparse : the tokens of each selected block b, [b*BS, (b+1)*BS), cut at p (causal inside the
 *            query's own block; a block after p contributes nothing)
 * Forward, per query head h:  s_t = scale * <q, k_t>,  lse = log sum_t exp(s_t),
 *                             out = sum_t exp(s_t - lse) v_t     (no key: out 0, lse -inf)
 * Backward, with P_t = exp(s_t - lse) and Di = <dout, out> (FlashAttention's identity):
 *   dv_t += P_t dout,  dS_t = P_t (<dout, v_t> - Di),  dq += scale dS_t k_t,  dk_t += scale dS_t q
 * The selection has no gradient (project decision 7).
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct span {
    int64_t begin, end; /* key positions [begin, end) within the sequence */
};

/* The key spans query i of sequence sq (KV head g) attends; returns how many (<= max_spans). */
static int64_t row_spans(const struct ifl__problem *pb, const struct ifl__seq *sq, int64_t i,
                         int64_t g, int sparse, struct span *spans) {
    const int64_t p = sq->past + i;
    if (!sparse) {
        spans[0] = (struct span){0, p + 1};
        return 1;
    }
    const struct ifl_tensor *sel = pb->sel;
    const int64_t            bs  = pb->cfg.block_size;
    const int32_t *row = (const int32_t *)sel->data + g * sel->stride[0] + (sq->q0 + i) * sel->stride[1];
    int64_t        n   = 0;
    for (int64_t c = 0; c < sel->shape[2] && row[c] >= 0; c++) {
        int64_t begin = row[c] * bs, end = begin + bs;
        if (end > p + 1) end = p + 1;
        if (begin < end) spans[n++] = (struct span){begin, end};
    }
    return n;
}

static double dot(const double *a, const double *b, int64_t d) {
    double s = 0;
    for (int64_t x = 0; x < d; x++) s += a[x] * b[x];
    return s;
}

/* ---- forward ---- */

static enum ifl_status attn_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse,
                                const char *fn) {
    const int64_t   d = pb->d, hq = pb->hq, hkv = pb->hkv;
    const double    scale = pb->cfg.scale;
    enum ifl_status st    = IFL_STATUS_OK;
    double *q = ref_load(pb->q), *k = ref_load(pb->k), *v = ref_load(pb->v);
    double *out = malloc((size_t)(pb->tq * hq * d) * sizeof *out); /* [Tq, Hq, D] */
    double *lse = malloc((size_t)(pb->tq * hq) * sizeof *lse);     /* [Tq, Hq] */
    int64_t max_spans = sparse ? pb->sel->shape[2] : 1;
    struct span *spans = malloc((size_t)max_spans * sizeof *spans);
    if (!q || !k || !v || !out || !lse || !spans) {
        st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn);
        goto done;
    }
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const struct ifl__seq *sq = &pb->seqs[s];
        const double          *ks = k + sq->k0 * hkv * d, *vs = v + sq->k0 * hkv * d;
        for (int64_t i = 0; i < sq->nq; i++)
            for (int64_t h = 0; h < hq; h++) {
                const int64_t g       = h / pb->g;
                const int64_t n_spans = row_spans(pb, sq, i, g, sparse, spans);
                const double *qh      = q + ((sq->q0 + i) * hq + h) * d;
                double       *oh      = out + ((sq->q0 + i) * hq + h) * d;
                double        m       = -INFINITY; /* pass 1: the row max, for a stable exp */
                for (int64_t r = 0; r < n_spans; r++)
                    for (int64_t t = spans[r].begin; t < spans[r].end; t++) {
                        double z = scale * dot(qh, ks + (t * hkv + g) * d, d);
                        if (z > m) m = z;
                    }
                double sum = 0; /* pass 2: normaliser and unnormalised output */
                memset(oh, 0, (size_t)d * sizeof *oh);
                for (int64_t r = 0; r < n_spans; r++)
                    for (int64_t t = spans[r].begin; t < spans[r].end; t++) {
                        double w = exp(scale * dot(qh, ks + (t * hkv + g) * d, d) - m);
                        sum += w;
                        for (int64_t x = 0; x < d; x++) oh[x] += w * vs[(t * hkv + g) * d + x];
                    }
                for (int64_t x = 0; x < d; x++) oh[x] = sum > 0 ? oh[x] / sum : 0.0;
                lse[(sq->q0 + i) * hq + h] = sum > 0 ? m + log(sum) : -INFINITY;
            }
    }
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        ref_store_rows(pb->out, out, pb->seqs[s].q0, pb->seqs[s].nq);
        if (pb->lse) ref_store_rows(pb->lse, lse, pb->seqs[s].q0, pb->seqs[s].nq);
    }
done:
    free(q);
    free(k);
    free(v);
    free(out);
    free(lse);
    free(spans);
    return st;
}

enum ifl_status ref_sparse_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_fwd(ctx, pb, 1, pb->fn);
}

enum ifl_status ref_dense_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_fwd(ctx, pb, 0, pb->fn);
}

/* ---- backward ---- */

static enum ifl_status attn_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse,
                                const char *fn) {
    const int64_t   d = pb->d, hq = pb->hq, hkv = pb->hkv;
    const double    scale = pb->cfg.scale;
    enum ifl_status st    = IFL_STATUS_OK;
    double *q = ref_load(pb->q), *k = ref_load(pb->k), *v = ref_load(pb->v);
    double *out = ref_load(pb->out), *lse = ref_load(pb->lse), *dout = ref_load(pb->dout);
    double *dq = calloc((size_t)(pb->tq * hq * d), sizeof *dq);  /* [Tq, Hq, D] */
    double *dk = calloc((size_t)(pb->tk * hkv * d), sizeof *dk); /* [Tk, Hkv, D] */
    double *dv = calloc((size_t)(pb->tk * hkv * d), sizeof *dv); /* [Tk, Hkv, D] */
    int64_t max_spans = sparse ? pb->sel->shape[2] : 1;
    struct span *spans = malloc((size_t)max_spans * sizeof *spans);
    if (!q || !k || !v || !out || !lse || !dout || !dq || !dk || !dv || !spans) {
        st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn);
        goto done;
    }
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const struct ifl__seq *sq = &pb->seqs[s];
        const double          *ks = k + sq->k0 * hkv * d, *vs = v + sq->k0 * hkv * d;
        double                *dks = dk + sq->k0 * hkv * d, *dvs = dv + sq->k0 * hkv * d;
        for (int64_t i = 0; i < sq->nq; i++)
            for (int64_t h = 0; h < hq; h++) {
                const int64_t g       = h / pb->g;
                const int64_t row     = (sq->q0 + i) * hq + h;
                const int64_t n_spans = row_spans(pb, sq, i, g, sparse, spans);
                const double *qh = q + row * d, *doh = dout + row * d;
                double       *dqh = dq + row * d;
                const double  di  = dot(doh, out + row * d, d);
                for (int64_t r = 0; r < n_spans; r++)
                    for (int64_t t = spans[r].begin; t < spans[r].end; t++) {
                        const double *kt = ks + (t * hkv + g) * d, *vt = vs + (t * hkv + g) * d;
                        double       *dkt = dks + (t * hkv + g) * d, *dvt = dvs + (t * hkv + g) * d;
                        double        P   = exp(scale * dot(qh, kt, d) - lse[row]);
                        double        dS  = P * (dot(doh, vt, d) - di);
                        for (int64_t x = 0; x < d; x++) {
                            dvt[x] += P * doh[x];
                            dqh[x] += scale * dS * kt[x];
                            dkt[x] += scale * dS * qh[x];
                        }
                    }
            }
    }
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        ref_store_rows(pb->dq, dq, pb->seqs[s].q0, pb->seqs[s].nq);
        ref_store_rows(pb->dk, dk, pb->seqs[s].k0, pb->seqs[s].nk);
        ref_store_rows(pb->dv, dv, pb->seqs[s].k0, pb->seqs[s].nk);
    }
done:
    free(q);
    free(k);
    free(v);
    free(out);
    free(lse);
    free(dout);
    free(dq);
    free(dk);
    free(dv);
    free(spans);
    return st;
}

enum ifl_status ref_sparse_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_bwd(ctx, pb, 1, pb->fn);
}

enum ifl_status ref_dense_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    return attn_bwd(ctx, pb, 0, pb->fn);
}
