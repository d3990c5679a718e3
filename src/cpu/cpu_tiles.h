/* SPDX-License-Identifier: MIT
 *
 * cpu_tiles.h -- key/value blocks converted once per op into f32 tiles in the layouts the
 * micro-kernels want. Only the blocks some query needs are converted (all past blocks for dense
 * attention, the union of the selections for sparse), so a decode step touches ~100 blocks, not
 * the whole cache. Conversion runs on the thread pool, one task per tile.
 *   kt : [dp][np] K transposed (for scores)        v  : [np][dp] V (for P.V)
 *   k  : [np][dp] K (backward: dQ += dS.K)        vt : [dp][np] V transposed (backward: dP)
 * np = block size rounded up to VL, dp = head dim rounded up to VL; padding is zero.
 */
#ifndef INFLLM_CPU_TILES_H
#define INFLLM_CPU_TILES_H

#include "cpu_kernels.h"

struct kv_tiles {
    int64_t  bs, np, dp;
    int64_t  n_tiles;
    int64_t *seq_base; /* [n_seqs] first entry of sequence s in index */
    int64_t *index;    /* [sum_s hkv * nb_s] (s, g, b) -> tile, or -1; entry seq_base[s] + g*nb_s + b */
    int64_t *src;      /* [n_tiles] the index entry each tile was made from */
    float   *kt, *v;   /* forward layouts */
    float   *k, *vt;   /* backward layouts, NULL unless asked for */
    float   *scratch;  /* per thread: one row-major tile, for the conversion */
};

/* Step 1: allocates the index (all -1); the caller then marks needed entries with 1. */
int CPU_FN(tiles_begin)(struct kv_tiles *t, const struct ifl__problem *pb);

/* Entry of (s, g, b). */
static inline int64_t *tiles_entry(const struct kv_tiles *t, const struct ifl__problem *pb, int64_t s,
                                   int64_t g, int64_t b) {
    int64_t nb = (pb->seqs[s].nk + t->bs - 1) / t->bs;
    return t->index + t->seq_base[s] + g * nb + b;
}

/* Step 2: numbers the marked entries, allocates and converts their tiles (with_bwd adds the
 * backward layouts). Returns 0, or -1 when out of memory. */
int CPU_FN(tiles_build)(struct kv_tiles *t, struct ifl_ctx *ctx, const struct ifl__problem *pb, int with_bwd);

void CPU_FN(tiles_free)(struct kv_tiles *t);

/* Converts block b of (sequence s, KV head g) into kt/v (and vt when not NULL); k receives the
 * row-major K tile when keep_k, else it is scratch the conversion may use (bf16 keys of a whole
 * block go straight into kt without it). Used by tiles_build, and directly by ops whose every
 * block serves one task only (decode), which then skip the shared tile array. */
void CPU_FN(tile_convert)(const struct kv_tiles *t, const struct ifl__problem *pb, int64_t s, int64_t g, int64_t b,
                          float *kt, float *v, float *k, float *vt, int keep_k);

/* out[d][r] = in[r][d] for a [np][dp] row-major tile (np, dp multiples of 8), in 8 x 8 blocks. */
void CPU_FN(transpose_tile)(float *out, const float *in, int64_t np, int64_t dp);

#endif /* INFLLM_CPU_TILES_H */
