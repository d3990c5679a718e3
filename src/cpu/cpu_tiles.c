/* SPDX-License-Identifier: MIT
 *
 * cpu_tiles.c -- see cpu_tiles.h.
 */
#include "cpu_tiles.h"

#include <stdlib.h>

int CPU_FN(tiles_begin)(struct kv_tiles *t, const struct ifl__problem *pb) {
    memset(t, 0, sizeof *t);
    t->bs       = pb->cfg.block_size;
    t->np       = round_up(t->bs, VL);
    t->dp       = round_up(pb->d, VL);
    t->seq_base = malloc((size_t)pb->n_seqs * sizeof *t->seq_base);
    int64_t n   = 0;
    if (t->seq_base == NULL) return -1;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        t->seq_base[s] = n;
        n += pb->hkv * ((pb->seqs[s].nk + t->bs - 1) / t->bs);
    }
    t->index = malloc((size_t)(n + 1) * sizeof *t->index);
    if (t->index == NULL) return -1;
    for (int64_t i = 0; i < n; i++) t->index[i] = -1;
    return 0;
}

struct convert_job {
    struct kv_tiles           *t;
    const struct ifl__problem *pb;
    int64_t                    n_entries;
    int                        with_bwd;
};

/* The (s, g, b) of an index entry: sequences are few, a linear scan is fine. */
static void entry_coords(const struct kv_tiles *t, const struct ifl__problem *pb, int64_t e, int64_t *s,
                         int64_t *g, int64_t *b) {
    int64_t i = pb->n_seqs - 1;
    while (i > 0 && t->seq_base[i] > e) i--;
    int64_t nb = (pb->seqs[i].nk + t->bs - 1) / t->bs;
    *s         = i;
    *g         = (e - t->seq_base[i]) / nb;
    *b         = (e - t->seq_base[i]) % nb;
}

/* Zeroes the padding of a row-major [np][dp] tile: columns D.. of the n real rows, rows n.. */
static void zero_padding(float *tile, int64_t n, int64_t np, int64_t D, int64_t dp) {
    if (D < dp)
        for (int64_t r = 0; r < n; r++) memset(tile + r * dp + D, 0, (size_t)(dp - D) * sizeof *tile);
    memset(tile + n * dp, 0, (size_t)((np - n) * dp) * sizeof *tile);
}

/* out[d][r] = in[r][d] for a [np][dp] row-major tile; d outer so the writes are sequential and
 * the strided reads stay inside the (L1-resident) source tile. */
static void transpose_tile(float *out, const float *in, int64_t np, int64_t dp) {
    for (int64_t d = 0; d < dp; d++)
        for (int64_t r = 0; r < np; r++) out[d * np + r] = in[r * dp + d];
}

void CPU_FN(tile_convert)(const struct kv_tiles *t, const struct ifl__problem *pb, int64_t s, int64_t g, int64_t b,
                          float *kt, float *v, float *k, float *vt) {
    const int64_t np = t->np, dp = t->dp, D = pb->d;
    int64_t       first = b * t->bs, n = pb->seqs[s].nk - first < t->bs ? pb->seqs[s].nk - first : t->bs;
    for (int64_t r = 0; r < n; r++) {
        int64_t row = pb->seqs[s].k0 + first + r;
        load_row(k + r * dp, pb->k, ifl__off3(pb->k, row, g, 0), D);
        load_row(v + r * dp, pb->v, ifl__off3(pb->v, row, g, 0), D);
    }
    zero_padding(k, n, np, D, dp);
    zero_padding(v, n, np, D, dp);
    transpose_tile(kt, k, np, dp);
    if (vt) transpose_tile(vt, v, np, dp);
}

static void convert_tile(void *arg, int64_t tile, int thread) {
    const struct convert_job  *job = arg;
    struct kv_tiles           *t   = job->t;
    int64_t                    s, g, b;
    entry_coords(t, job->pb, t->src[tile], &s, &g, &b);
    const int64_t sz = t->np * t->dp;
    /* K rows go to the backward's row-major tile, or to this thread's scratch */
    float *k = t->k ? t->k + tile * sz : t->scratch + thread * sz;
    CPU_FN(tile_convert)(t, job->pb, s, g, b, t->kt + tile * sz, t->v + tile * sz, k, t->vt ? t->vt + tile * sz : NULL);
}

int CPU_FN(tiles_build)(struct kv_tiles *t, struct ifl_ctx *ctx, const struct ifl__problem *pb, int with_bwd) {
    int64_t n_entries = t->seq_base[pb->n_seqs - 1] + pb->hkv * ((pb->seqs[pb->n_seqs - 1].nk + t->bs - 1) / t->bs);
    t->n_tiles        = 0;
    for (int64_t e = 0; e < n_entries; e++)
        if (t->index[e] >= 0) t->index[e] = t->n_tiles++;
    const size_t sz = (size_t)(t->np * t->dp) * sizeof(float);
    size_t       n  = (size_t)(t->n_tiles > 0 ? t->n_tiles : 1);
    t->src          = malloc(n * sizeof *t->src);
    t->kt           = malloc(n * sz);
    t->v            = malloc(n * sz);
    if (with_bwd) {
        t->k  = malloc(n * sz);
        t->vt = malloc(n * sz);
    }
    t->scratch = malloc((size_t)ctx->n_threads * sz);
    if (!t->src || !t->kt || !t->v || !t->scratch || (with_bwd && (!t->k || !t->vt))) return -1;
    for (int64_t e = 0; e < n_entries; e++)
        if (t->index[e] >= 0) t->src[t->index[e]] = e;
    struct convert_job job = {t, pb, n_entries, with_bwd};
    cpu_pool_run(cpu_pool_of(ctx), t->n_tiles, convert_tile, &job);
    return 0;
}

void CPU_FN(tiles_free)(struct kv_tiles *t) {
    free(t->seq_base);
    free(t->index);
    free(t->src);
    free(t->kt);
    free(t->v);
    free(t->k);
    free(t->vt);
    free(t->scratch);
    memset(t, 0, sizeof *t);
}
