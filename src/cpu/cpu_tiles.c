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

/* 8 x 8 floats: out row j (stride ldo) = column j of the 8 rows at in (stride ldi), in three
 * rounds of pairwise interleaving (element pairs, then pairs of pairs, then halves). A scalar
 * transpose cost as much as the scores and P.V of a decode step together. */
typedef float    v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));
static inline __attribute__((always_inline)) void transpose_rows_8x8(float *out, int64_t ldo, v8f r[8]) {
    v8f t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i]     = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)
        for (int j = 0; j < 2; j++) {
            u[i + j]     = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + j + 2] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    /* u[0..3] hold columns {0,4}, {2,6}, {1,5}, {3,7} of rows 0-3; u[4..7] the same of rows 4-7 */
    const int col[4] = {0, 2, 1, 3};
    for (int i = 0; i < 4; i++) {
        v8f lo = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        v8f hi = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        memcpy(out + col[i] * ldo, &lo, sizeof lo);
        memcpy(out + (col[i] + 4) * ldo, &hi, sizeof hi);
    }
}

static inline __attribute__((always_inline)) void transpose_8x8(float *out, int64_t ldo, const float *in, int64_t ldi) {
    v8f r[8];
    for (int i = 0; i < 8; i++) memcpy(&r[i], in + i * ldi, sizeof r[i]);
    transpose_rows_8x8(out, ldo, r);
}

/* The same from 8 rows of bf16 (a bf16 is the top half of an f32), converting on the way. */
static inline __attribute__((always_inline)) void transpose_bf16_8x8(float *out, int64_t ldo, const uint16_t *const in[8],
                                                                     int64_t d) {
    v8f r[8];
    for (int i = 0; i < 8; i++) {
        v8h h;
        memcpy(&h, in[i] + d, sizeof h);
        r[i] = (v8f)(__builtin_convertvector(h, v8u) << 16);
    }
    transpose_rows_8x8(out, ldo, r);
}

void CPU_FN(transpose_tile)(float *out, const float *in, int64_t np, int64_t dp) {
    for (int64_t r = 0; r < np; r += 8)
        for (int64_t d = 0; d < dp; d += 8) transpose_8x8(out + d * np + r, np, in + r * dp + d, dp);
}

void CPU_FN(tile_convert)(const struct kv_tiles *t, const struct ifl__problem *pb, int64_t s, int64_t g, int64_t b,
                          float *kt, float *v, float *k, float *vt, int keep_k) {
    const int64_t np = t->np, dp = t->dp, D = pb->d;
    int64_t       first = b * t->bs, n = pb->seqs[s].nk - first < t->bs ? pb->seqs[s].nk - first : t->bs;
    if (!keep_k && vt == NULL && pb->k->dtype == IFL_DTYPE_BF16 && n == np && D == dp && np % 8 == 0) {
        /* the forward's common case: K straight from bf16 rows into the transposed tile */
        for (int64_t r0 = 0; r0 < n; r0 += 8) {
            const uint16_t *rows[8];
            for (int i = 0; i < 8; i++)
                rows[i] = (const uint16_t *)pb->k->data + ifl__off3(pb->k, pb->seqs[s].k0 + first + r0 + i, g, 0);
            for (int64_t d = 0; d < D; d += 8) transpose_bf16_8x8(kt + d * np + r0, np, rows, d);
        }
        for (int64_t r = 0; r < n; r++)
            load_row(v + r * dp, pb->v, ifl__off3(pb->v, pb->seqs[s].k0 + first + r, g, 0), D);
        return;
    }
    for (int64_t r = 0; r < n; r++) {
        int64_t row = pb->seqs[s].k0 + first + r;
        load_row(k + r * dp, pb->k, ifl__off3(pb->k, row, g, 0), D);
        load_row(v + r * dp, pb->v, ifl__off3(pb->v, row, g, 0), D);
    }
    zero_padding(k, n, np, D, dp);
    zero_padding(v, n, np, D, dp);
    CPU_FN(transpose_tile)(kt, k, np, dp);
    if (vt) CPU_FN(transpose_tile)(vt, v, np, dp);
}

static void convert_tile(void *arg, int64_t tile, int thread) {
    const struct convert_job  *job = arg;
    struct kv_tiles           *t   = job->t;
    int64_t                    s, g, b;
    entry_coords(t, job->pb, t->src[tile], &s, &g, &b);
    const int64_t sz = t->np * t->dp;
    /* K rows go to the backward's row-major tile, or to this thread's scratch */
    float *k = t->k ? t->k + tile * sz : t->scratch + thread * sz;
    CPU_FN(tile_convert)(t, job->pb, s, g, b, t->kt + tile * sz, t->v + tile * sz, k, t->vt ? t->vt + tile * sz : NULL,
                         t->k != NULL);
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
