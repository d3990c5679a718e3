/* SPDX-License-Identifier: MIT
 *
 * cuda_select.cu -- stage 1, block selection (spec §2, Design B), fused per tile of query tokens
 * and KV head: the log-sum-exp pass over the coarse keys (or the fine ones: exact mode, or no
 * coarse key visible yet, decision 4), the fine-key probabilities summed over the GQA group,
 * max-pooled onto the blocks each key's window overlaps, the forced init/local blocks, and the
 * top-k (ties to the smaller block), all in one kernel. Memory is bounded by the tile: the block
 * scores of the tile's tokens live in shared memory; no per-head score and no [tokens x blocks]
 * matrix ever reaches device memory.
 *
 * Two kernels compute the same function:
 *   select_mma     bf16/f16, D 64 or 128, G in {1, 2, 4, 8, 16}, block_size/stride dividing 64:
 *                  tensor cores with the operands swapped (keys are the M side, the tile's query
 *                  rows the N side), so that one warp's 32 query rows (two units of 16 = 16/G
 *                  tokens x G heads) share every ldmatrix'd key fragment, and the probabilities
 *                  leave the score accumulators already in the layout of an A operand: the group
 *                  sum over the G heads of a token is one more mma (f16 probabilities times a 0/1
 *                  matrix, f32 sums), not shuffles. 64 compressed keys at a time are staged in
 *                  shared memory (cp.async, two stages) and shared by all warps.
 *   select_generic every other case (f32, f64, any D and G, block scores that do not fit in shared
 *                  memory): one block of threads per (token, KV head), scratch rows in device
 *                  memory for a bounded number of resident blocks.
 * Both end in warp_topk: the width-th largest score by a bitwise radix search (ties resolved by
 * index), then one ascending pass that writes the kept blocks <= the query's block and -1 padding.
 * Only the blocks up to the query's own are scanned: a later block's keys are all invisible, so it
 * scores exactly 0 (or -inf without a key) and is ranked by count alone.
 */
#include "cuda_common.cuh"

#include <float.h>
#include <limits.h>
#include <math.h>

struct sel_params {
    const void *q;
    int64_t     qs0, qs1;
    const void *c1, *c2; /* [N1, hkv, D], [N2, hkv, D] contiguous, k's dtype */
    int32_t    *sel;
    int64_t     ss0, ss1, K;
    const struct dseq *seqs;
    int         n_seqs;
    int64_t     rows;    /* query rows of the problem (sum of nq) */
    int64_t     n_tiles; /* select_mma: tiles of tokens */
    int64_t     hkv, G, D;
    int64_t     bs, ks, kst, cks, ckst, init, nloc, list; /* list = topk + nloc */
    int         approx;
    double      scale;
    int64_t     nbp;     /* select_mma: pitch of a token's block scores */
    void       *scratch; /* select_generic: per resident block, max_n1 + max_nb accumulators */
    int64_t     per_block;
    int         r, m;    /* block_size/stride, kernel_size/stride */
    int         mode;    /* select_mma: SEL_* */
    float      *part;    /* split modes: [tiles*hkv][Z][cols][2] partial (max, sum) */
    float      *gblk;    /* split modes: [tiles*hkv][TT][nbp] block scores */
};

__device__ __forceinline__ int64_t n_visible(int64_t p, int64_t kernel, int64_t stride) {
    return p + 1 >= kernel ? (p + 1 - kernel) / stride + 1 : 0;
}
__device__ __forceinline__ int64_t n_compressed(int64_t n, int64_t kernel, int64_t stride) {
    return n >= kernel ? (n - kernel) / stride + 1 : 0;
}
/* Fine keys whose windows overlap block b: [*lo, *hi) clipped to [0, n1). */
__device__ __forceinline__ void block_keys(const struct sel_params &p, int64_t b, int64_t n1, int64_t *lo, int64_t *hi) {
    int64_t first = b * p.bs, need = first - p.ks + 1;
    *lo           = need <= 0 ? 0 : (need + p.kst - 1) / p.kst;
    int64_t h     = (first + p.bs - 1) / p.kst + 1;
    *hi           = h < n1 ? h : n1;
}
/* Blocks 0 .. return-1 have at least one compressed key (block b's first key is b*r - m + 1). */
__device__ __forceinline__ int blocks_with_key(int n1, int r, int m, int nb) {
    if (n1 <= 0) return 0;
    int k = (n1 + m - 2) / r + 1;
    return k < nb ? k : nb;
}

/* ---- top-k ---- */

/* Order-preserving unsigned keys of the scores (+0 for -0: equal scores must tie). */
__device__ __forceinline__ uint32_t order_key(float x) {
    uint32_t u = __float_as_uint(x == 0.0f ? 0.0f : x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ uint64_t order_key(double x) {
    uint64_t u = (uint64_t)__double_as_longlong(x == 0.0 ? 0.0 : x);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

/* One warp: of the nb blocks of a row, keeps the w best (higher score first, ties to the smaller
 * index), writes those <= qb ascending to out[0..], then -1 up to K. keys[0..qb] are the order
 * keys of the scores of blocks 0..qb (qb < nb); blocks qb+1 .. nb-1 are later than the query: those
 * below nbk score 0, the rest -inf, so they are only counted. */
template <typename U, typename S>
__device__ void warp_topk(const U *keys, int nb, int nbk, int w, int qb, int32_t *out, int K) {
    const int      lane = threadIdx.x & 31, np = qb + 1;
    const unsigned lt   = (1u << lane) - 1u;
    const int      nf0  = nbk > np ? nbk - np : 0, nfi = nb - (nbk > np ? nbk : np); /* later blocks: 0, -inf */
    const U        k0 = order_key((S)0), kni = order_key((S)-INFINITY);
    U              T  = 0; /* the w-th largest key, built from the top bit down */
    int            gt = nb; /* w >= nb: every block is kept (no key is 0) */
    if (w < nb) {
        int exact = 0;
        for (int bit = 8 * (int)sizeof(U) - 1; bit >= 0; bit--) {
            U   cand = T | ((U)1 << bit);
            int cnt  = 0;
            for (int b = lane; b < np; b += 32) cnt += keys[b] >= cand;
            cnt = __reduce_add_sync(0xffffffffu, cnt) + (k0 >= cand ? nf0 : 0) + (kni >= cand ? nfi : 0);
            if (cnt >= w) {
                T = cand;
                if (cnt == w) { /* the keys >= T are exactly the w best: no tie to break */
                    exact = 1;
                    break;
                }
            }
        }
        if (exact) {
            T -= 1, gt = w;
        } else {
            gt = 0;
            for (int b = lane; b < np; b += 32) gt += keys[b] > T;
            gt = __reduce_add_sync(0xffffffffu, gt) + (k0 > T ? nf0 : 0) + (kni > T ? nfi : 0);
        }
    }
    const int need = w - gt; /* how many of the scores equal to T are kept, smallest first */
    int       pos = 0, eq_seen = 0;
    for (int base = 0; base < np; base += 32) {
        int      b   = base + lane;
        U        key = b < np ? keys[b] : 0;
        int      isg = b < np && key > T, ise = b < np && key == T;
        unsigned em  = __ballot_sync(0xffffffffu, ise);
        int      keep = isg || (ise && eq_seen + __popc(em & lt) < need);
        eq_seen += __popc(em);
        unsigned km = __ballot_sync(0xffffffffu, keep);
        if (keep) out[pos + __popc(km & lt)] = b;
        pos += __popc(km);
    }
    for (int c = pos + lane; c < K; c += 32) out[c] = -1;
}

/* ---- the generic kernel ---- */

template <typename A, int MAX>
__device__ A block_reduce(A v, A *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    for (int off = 16; off > 0; off /= 2) {
        A o = __shfl_xor_sync(0xffffffffu, v, off);
        v   = MAX ? (o > v ? o : v) : v + o;
    }
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? red[lane] : (MAX ? (A)-INFINITY : (A)0);
        for (int off = 16; off > 0; off /= 2) {
            A o = __shfl_xor_sync(0xffffffffu, v, off);
            v   = MAX ? (o > v ? o : v) : v + o;
        }
        if (lane == 0) red[32] = v;
    }
    __syncthreads();
    v = red[32];
    __syncthreads();
    return v;
}

template <typename T>
__device__ __forceinline__ typename acc_of<T>::type dot_row(const T *a, const T *b, int64_t D) {
    typename acc_of<T>::type s = 0;
    for (int64_t d = 0; d < D; d++) s += to_acc(a[d]) * to_acc(b[d]);
    return s;
}

template <typename T>
__global__ void __launch_bounds__(128) select_generic(struct sel_params p) {
    typedef typename acc_of<T>::type A;
    typedef decltype(order_key((A)0)) U; /* same size as A: the block scores become keys in place */
    __shared__ A red[33];
    const int    tid = threadIdx.x, nt = blockDim.x;
    const int64_t max_n1 = p.per_block; /* S first, then the block scores */
    A           *Sx  = (A *)p.scratch + (int64_t)blockIdx.x * 2 * p.per_block;
    U           *keys = (U *)(Sx + max_n1);
    const A      scale = (A)p.scale;
    for (int64_t r = blockIdx.x; r < p.rows * p.hkv; r += gridDim.x) {
        const int64_t g = r / p.rows, t = r % p.rows;
        const int     s = seq_of_row(p.seqs, p.n_seqs, t);
        const struct dseq sq = p.seqs[s];
        const int64_t i = t - sq.cq, token = sq.q0 + i, pos = sq.past + i;
        const int64_t n1 = n_compressed(sq.nk, p.ks, p.kst), nb = (sq.nk + p.bs - 1) / p.bs, qb = pos / p.bs;
        const int64_t w = p.list < nb ? p.list : nb;
        const int64_t vis1 = n_visible(pos, p.ks, p.kst), vis2 = n_visible(pos, p.cks, p.ckst);
        const T      *c1 = (const T *)p.c1 + (sq.c1 * p.hkv + g) * p.D, *c2 = (const T *)p.c2 + (sq.c2 * p.hkv + g) * p.D;
        const int64_t krow = p.hkv * p.D;
        for (int64_t j = tid; j < n1; j += nt) Sx[j] = 0;
        __syncthreads();
        for (int64_t hh = 0; hh < p.G && vis1 > 0; hh++) {
            const T *qh     = (const T *)p.q + token * p.qs0 + (g * p.G + hh) * p.qs1;
            int      coarse = p.approx && vis2 > 0; /* decision 4: else the exact normaliser */
            const T *nk_    = coarse ? c2 : c1;
            int64_t  n      = coarse ? vis2 : vis1;
            A        m      = -INFINITY;
            for (int64_t j = tid; j < n; j += nt) {
                A z = scale * dot_row(qh, nk_ + j * krow, p.D);
                m   = z > m ? z : m;
            }
            m     = block_reduce<A, 1>(m, red);
            A sum = 0;
            for (int64_t j = tid; j < n; j += nt) sum += exp(scale * dot_row(qh, nk_ + j * krow, p.D) - m);
            sum         = block_reduce<A, 0>(sum, red);
            const A lse = m + log(sum);
            for (int64_t j = tid; j < vis1; j += nt) Sx[j] += exp(scale * dot_row(qh, c1 + j * krow, p.D) - lse);
        }
        __syncthreads();
        for (int64_t b = tid; b <= qb; b += nt) { /* qb < nb; later blocks are only counted */
            A score;
            if (b < p.init || (b >= qb - p.nloc && b <= qb)) {
                score = INFINITY;
            } else {
                int64_t lo, hi;
                block_keys(p, b, n1, &lo, &hi);
                score = -INFINITY;
                for (int64_t j = lo; j < hi; j++) score = Sx[j] > score ? Sx[j] : score;
            }
            keys[b] = order_key(score);
        }
        __syncthreads();
        if (tid < 32)
            warp_topk<U, A>(keys, (int)nb, blocks_with_key((int)n1, p.r, p.m, (int)nb), (int)w, (int)qb,
                            p.sel + g * p.ss0 + token * p.ss1, (int)p.K);
        __syncthreads();
    }
}

/* ---- the tensor-core kernel ---- */

/* Modes of select_mma. FULL does everything in one launch with the block scores in shared memory.
 * When there are too few tiles to fill the device (decode, short chunks), the key range of every
 * tile is split over gridDim.z blocks in three launches: LSE (partial log2-sum-exp per column and
 * key slice, to p.part), SCORE (combines the partials in a fixed order, then pools its key slice
 * into block scores in device memory with atomicMax, which is order-independent), TOPK (forced
 * blocks and the top-k). Results are identical either way up to the f32 rounding of the combined
 * normaliser. */
enum { SEL_FULL, SEL_LSE, SEL_SCORE, SEL_TOPK };

/* Geometry of select_mma: a warp holds SEL_U units of 16 query rows ("columns" of the swapped
 * product); keys come in chunks of SEL_CH; each warp keeps the group sums of its tokens for the
 * chunk plus the SEL_PRE keys before it (a block's window may start in the previous chunk). */
#define SEL_U   2
#define SEL_CH  64
#define SEL_PRE 8

static size_t sel_mma_smem(int nw, int d, int g, int64_t nbp) {
    const int cols = nw * SEL_U * 16, krows = cols > 2 * SEL_CH ? cols : 2 * SEL_CH, tw = SEL_U * 16 / g;
    return (size_t)krows * (size_t)(d + 8) * 2 + (size_t)(nw * tw * (SEL_PRE + SEL_CH)) * 4 + (size_t)(nw * tw) * (size_t)nbp * 4;
}

template <typename T, int D, int NW>
__global__ void __launch_bounds__(NW * 32, 12 / NW) select_mma(struct sel_params p) {
    constexpr int U = SEL_U, COLS = NW * U * 16, CH = SEL_CH, PRE = SEL_PRE, PITCH = D + 8, NT = NW * 32, DC = D / 8;
    constexpr int KROWS = COLS > 2 * CH ? COLS : 2 * CH, KP = PRE + CH;
    extern __shared__ __align__(16) unsigned char smem[];
    T *sKey = (T *)smem; /* [2][CH][PITCH] key stages; the Q tile is staged here first */
    __shared__ int sQb[COLS], sVis1[COLS], sVis2[COLS], sCoarse[COLS];
    const int     tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int     G = (int)p.G, lg = __ffs(G) - 1, TPU = 16 / G, TW = U * TPU, TT = NW * TW; /* tokens: unit, warp, tile */
    const int     Z = (int)gridDim.z, z = (int)blockIdx.z, mode = p.mode;
    const int64_t tile = p.n_tiles - 1 - blockIdx.x, g = blockIdx.y; /* latest (heaviest) tiles first */
    const int64_t tg   = tile * p.hkv + g;                             /* this (tile, KV head) */
    const int     s    = seq_of_tile(p.seqs, p.n_seqs, tile);
    const struct dseq sq = p.seqs[s];
    const int64_t i0 = (tile - sq.tile0) * TT;
    const int     n1 = (int)n_compressed(sq.nk, p.ks, p.kst), n2 = (int)n_compressed(sq.nk, p.cks, p.ckst);
    const int     nb = (int)((sq.nk + p.bs - 1) / p.bs), r = p.r, mk = p.m; /* keys per block stride, per window */
    const int     nbk = blocks_with_key(n1, r, mk, nb);
    const int64_t krow = p.hkv * D;
    const T      *c1 = (const T *)p.c1 + (sq.c1 * p.hkv + g) * D, *c2 = (const T *)p.c2 + (sq.c2 * p.hkv + g) * D;
    float *ksum = (float *)(sKey + KROWS * PITCH) + warp * TW * KP; /* this warp's group sums: [TW][PRE + CH] */
    /* block scores: shared memory in FULL mode, else this tile's rows in device memory */
    float *blk = mode == SEL_FULL ? (float *)(sKey + KROWS * PITCH) + NW * TW * KP : p.gblk + tg * TT * p.nbp;

    for (int t = tid; t < TT; t += NT) {
        int     valid = i0 + t < sq.nq;
        int64_t pos   = sq.past + i0 + t;
        sQb[t]        = valid ? (int)(pos / p.bs) : -1;
        sVis1[t]      = valid ? (int)n_visible(pos, p.ks, p.kst) : 0;
        sVis2[t]      = valid ? (int)n_visible(pos, p.cks, p.ckst) : 0;
        sCoarse[t]    = valid && p.approx && sVis2[t] > 0;
    }
    __syncthreads();
    int qbmax = -1; /* the tile's last query block (-1: no valid token) */
    for (int t = 0; t < TT; t++) qbmax = sQb[t] > qbmax ? sQb[t] : qbmax;
    if (mode == SEL_TOPK) goto topk;
    {
    /* the Q tile: column c = token c/G, head g*G + c%G (zeros past the sequence's queries) */
    for (int c = tid; c < COLS * DC; c += NT) {
        int      rr = c / DC, cc = c % DC, t = rr >> lg;
        int      ok  = i0 + t < sq.nq;
        const T *src = (const T *)p.q + (sq.q0 + i0 + t) * p.qs0 + (g * G + (rr & (G - 1))) * p.qs1 + cc * 8;
        cp_async16(smem_u32(sKey + rr * PITCH + cc * 8), ok ? (const void *)src : p.q, ok ? 16 : 0);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    /* B fragments of Q^T (k = head dim, n = column): per unit and 16-wide k step, b0 b1 of the
     * columns 0-7 and b0 b1 of the columns 8-15 */
    uint32_t qf[U][D / 16][4];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            ldsm_x4(smem_u32(sKey + (warp * U * 16 + u * 16 + (lane / 16) * 8 + lane % 8) * PITCH + kk * 16 + ((lane / 8) % 2) * 8),
                    qf[u][kk][0], qf[u][kk][1], qf[u][kk][2], qf[u][kk][3]);
    __syncthreads();

    const float sl2 = (float)(p.scale * 1.4426950408889634);
    /* The thread's accumulator element e of (unit u, half h) is key 16*mt + lane/4 + 8*(e/2) of the
     * chunk and column col0 + 16u + 8h + e%2 of the tile. */
    const int col0 = warp * U * 16 + 2 * (lane % 4);

    /* S^T = K Q^T for the 16 keys at row 16*mt of the stage sk */
    auto scores = [&](const T *sk, int mt, float (&S)[U][2][4]) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int h = 0; h < 2; h++) S[u][h][0] = S[u][h][1] = S[u][h][2] = S[u][h][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t a[4];
            ldsm_x4(smem_u32(sk + (mt * 16 + lane % 8 + ((lane / 8) % 2) * 8) * PITCH + kk * 16 + (lane / 16) * 8), a[0], a[1], a[2], a[3]);
#pragma unroll
            for (int u = 0; u < U; u++) {
                mma16816<T>(S[u][0], a, qf[u][kk][0], qf[u][kk][1]);
                mma16816<T>(S[u][1], a, qf[u][kk][2], qf[u][kk][3]);
            }
        }
    };
    /* stages 64 rows of keys j0.. (rows at or past n_exist are zeros) into stage st */
    auto load = [&](int st, const T *base, int j0, int n_exist) {
        T *dst = sKey + st * CH * PITCH;
        for (int c = tid; c < CH * DC; c += NT) {
            int rr = c / DC, cc = c % DC, j = j0 + rr, ok = j < n_exist;
            cp_async16(smem_u32(dst + rr * PITCH + cc * 8), ok ? (const void *)(base + j * krow + cc * 8) : (const void *)base,
                       ok ? 16 : 0);
        }
        cp_async_commit();
    };
    /* runs body(stage, j0) over this block's chunks of keys [0, n) (chunk z, z+Z, ...), two stages deep */
    auto sweep = [&](const T *base, int n, int n_exist, auto &&body) {
        const int nch = (n + CH - 1) / CH;
        if (z >= nch) return;
        load(0, base, z * CH, n_exist);
        for (int ch = z, it = 0; ch < nch; ch += Z, it++) {
            if (ch + Z < nch) {
                load((it + 1) & 1, base, (ch + Z) * CH, n_exist);
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            body(sKey + (it & 1) * CH * PITCH, ch * CH);
            __syncthreads();
        }
    };

    /* log2 normaliser per column (+inf: no key, every probability 0) */
    float lse[U][2][2];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int h = 0; h < 2; h++) lse[u][h][0] = lse[u][h][1] = INFINITY;

    if (mode == SEL_LSE && lane < 4) /* columns without a normaliser key: an empty partial */
        for (int c = col0; c < col0 + U * 16; c += 8) {
            float *pp = p.part + ((tg * Z + z) * COLS + c) * 2;
            pp[0] = pp[2] = -FLT_MAX, pp[1] = pp[3] = 0.f;
        }
    if (mode == SEL_FULL || mode == SEL_LSE) {
        /* ---- pass 1: log2-sum-exp per column, over the coarse keys, then the fine keys for the
         * tokens that normalise over those. Each thread keeps a running (max, sum) per column
         * over its own keys (lane/4 of every 8); the lanes are combined once at the end. The max
         * starts at -FLT_MAX, not -inf, so that a masked (-inf) score gives 2^-inf = 0, never NaN. ---- */
        for (int pass = 0; pass < 2; pass++) {
            const int coarse = pass == 0;
            int       n = 0, vmin = INT_MAX;
            for (int t = 0; t < TT; t++)
                if (sCoarse[t] == coarse && sVis1[t] > 0) {
                    int v = coarse ? sVis2[t] : sVis1[t];
                    n     = v > n ? v : n;
                    vmin  = v < vmin ? v : vmin;
                }
            if (n == 0) continue;
            float mr[U][2][2], ms[U][2][2], l[U][2][2]; /* max of the raw scores, the same scaled, sum */
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int e = 0; e < 2; e++) mr[u][h][e] = ms[u][h][e] = -FLT_MAX, l[u][h][e] = 0.f;
            sweep(coarse ? c2 : c1, n, coarse ? n2 : n1, [&](const T *sk, int j0) {
                const int masked = j0 + CH > vmin; /* some key of the chunk is invisible to some column */
#pragma unroll
                for (int mt = 0; mt < CH / 16; mt++) {
                    float S[U][2][4];
                    scores(sk, mt, S);
                    if (masked) {
#pragma unroll
                        for (int u = 0; u < U; u++)
#pragma unroll
                            for (int h = 0; h < 2; h++)
#pragma unroll
                                for (int e = 0; e < 4; e++) {
                                    int t = (col0 + u * 16 + h * 8 + (e & 1)) >> lg, j = j0 + mt * 16 + lane / 4 + (e / 2) * 8;
                                    int v = sCoarse[t] == coarse ? (coarse ? sVis2[t] : sVis1[t]) : 0;
                                    if (j >= v) S[u][h][e] = -INFINITY;
                                }
                    }
                    int grow = 0;
#pragma unroll
                    for (int u = 0; u < U; u++)
#pragma unroll
                        for (int h = 0; h < 2; h++)
#pragma unroll
                            for (int e = 0; e < 2; e++) grow |= fmaxf(S[u][h][e], S[u][h][e + 2]) > mr[u][h][e];
                    if (__any_sync(0xffffffffu, grow)) { /* rare once the first keys are in */
#pragma unroll
                        for (int u = 0; u < U; u++)
#pragma unroll
                            for (int h = 0; h < 2; h++)
#pragma unroll
                                for (int e = 0; e < 2; e++) {
                                    float x = fmaxf(S[u][h][e], S[u][h][e + 2]);
                                    if (x > mr[u][h][e]) {
                                        float xs = x * sl2;
                                        l[u][h][e] *= fast_exp2(ms[u][h][e] - xs);
                                        mr[u][h][e] = x, ms[u][h][e] = xs;
                                    }
                                }
                    }
#pragma unroll
                    for (int u = 0; u < U; u++)
#pragma unroll
                        for (int h = 0; h < 2; h++)
#pragma unroll
                            for (int e = 0; e < 4; e++) l[u][h][e & 1] += fast_exp2(fmaf(S[u][h][e], sl2, -ms[u][h][e & 1]));
                }
            });
            /* combine the 8 lanes holding each column (lane/4 differs), in a fixed order */
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float m_ = ms[u][h][e], l_ = l[u][h][e];
#pragma unroll
                        for (int off = 4; off < 32; off *= 2) {
                            float mo = __shfl_xor_sync(0xffffffffu, m_, off), lo = __shfl_xor_sync(0xffffffffu, l_, off);
                            float mn = fmaxf(m_, mo);
                            l_       = l_ * fast_exp2(m_ - mn) + lo * fast_exp2(mo - mn);
                            m_       = mn;
                        }
                        const int c = col0 + u * 16 + h * 8 + e, t = c >> lg;
                        if (sCoarse[t] == coarse && sVis1[t] > 0) {
                            if (mode == SEL_LSE) {
                                if (lane < 4) {
                                    float *pp = p.part + ((tg * Z + z) * COLS + c) * 2;
                                    pp[0] = m_, pp[1] = l_;
                                }
                            } else {
                                lse[u][h][e] = l_ > 0.f ? m_ + __log2f(l_) : INFINITY;
                            }
                        }
                    }
        }
        if (mode == SEL_LSE) {
            if (z == 0) /* block scores: 0 where the block has a compressed key, else -inf */
                for (int t = 0; t < TT; t++)
                    for (int b = tid; b <= qbmax; b += NT) blk[t * p.nbp + b] = b < nbk ? 0.f : -INFINITY;
            return;
        }
    } else { /* SEL_SCORE: combine the partials of every key slice, in slice order */
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int c = col0 + u * 16 + h * 8 + e;
                    float     m_ = -FLT_MAX, l_ = 0.f;
                    for (int zz = 0; zz < Z; zz++) {
                        const float *pp = p.part + ((tg * Z + zz) * COLS + c) * 2;
                        float        mo = pp[0], lo = pp[1], mn = fmaxf(m_, mo);
                        l_ = l_ * fast_exp2(m_ - mn) + lo * fast_exp2(mo - mn);
                        m_ = mn;
                    }
                    lse[u][h][e] = l_ > 0.f ? m_ + __log2f(l_) : INFINITY;
                }
    }

    if (mode == SEL_FULL) { /* block scores: 0 where the block has a compressed key, else -inf */
        for (int t = 0; t < TT; t++)
            for (int b = tid; b <= qbmax; b += NT) blk[t * p.nbp + b] = b < nbk ? 0.f : -INFINITY;
        __syncthreads();
    }

    /* ---- pass 2: group-summed probabilities of the visible fine keys, max-pooled. Only keys
     * below (qb - nloc) * r can reach a block that is not forced, so the sweep stops there. ---- */
    {
        int n = 0, vmin = INT_MAX;
        for (int t = 0; t < TT; t++)
            if (sVis1[t] > 0) {
                int lim = (sQb[t] - (int)p.nloc) * r, v = sVis1[t] < lim ? sVis1[t] : lim;
                n       = v > n ? v : n;
                vmin    = sVis1[t] < vmin ? sVis1[t] : vmin;
            }
        /* the 0/1 matrix that sums the G heads of each token: B[k][n] = (k/G == n % (16/G)), as
         * b0 (k = 2(lane%4) + {0,1}) and b1 (k + 8), column n = lane/4 */
        uint32_t ones[2];
#pragma unroll
        for (int hk = 0; hk < 2; hk++) {
            int   k = 2 * (lane % 4) + 8 * hk, nn = (lane / 4) % TPU;
            float x0 = (k >> lg) == nn ? 1.f : 0.f, x1 = ((k + 1) >> lg) == nn ? 1.f : 0.f;
            ones[hk] = pack2<__half>(x0, x1);
        }
        /* Pools the group sums in ksum onto blocks b0 .. b0+nblk-1 of the warp's tokens, over the
         * keys [lo_clip, hi_clip) of each block's window; ksum holds keys j0 - PRE .. j0 + CH. */
        auto pool = [&](int j0, int b0, int nblk, int lo_clip, int hi_clip) {
            for (int i = lane; i < TW * nblk; i += 32) {
                const int tw = i / nblk, b = b0 + i - tw * nblk;
                int       lo = b * r - mk + 1, hi = b * r + r;
                lo = lo > lo_clip ? lo : lo_clip;
                hi = hi < hi_clip ? hi : hi_clip;
                if (b >= nb || lo >= hi) continue;
                float v = 0.f; /* probabilities are >= 0, and a block with a key scores >= 0 */
                for (int j = lo; j < hi; j++) v = fmaxf(v, ksum[tw * KP + PRE + j - j0]);
                atomicMax((int *)&blk[(warp * TW + tw) * p.nbp + b], __float_as_int(v));
            }
        };
        int jend = 0;
        sweep(c1, n, n1, [&](const T *sk, int j0) {
            const int masked = j0 + CH > vmin;
#pragma unroll
            for (int mt = 0; mt < CH / 16; mt++) {
                float S[U][2][4];
                scores(sk, mt, S);
                const int ja = j0 + mt * 16 + lane / 4;
#pragma unroll
                for (int u = 0; u < U; u++) {
                    float P[2][4];
#pragma unroll
                    for (int h = 0; h < 2; h++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            P[h][e] = fast_exp2(fmaf(S[u][h][e], sl2, -lse[u][h][e & 1]));
                            if (masked && ja + (e / 2) * 8 >= sVis1[(col0 + u * 16 + h * 8 + (e & 1)) >> lg]) P[h][e] = 0.f;
                        }
                    float *kw = ksum + PRE + mt * 16 + lane / 4;
                    if (G == 1) { /* a token is one head: the probabilities are the sums */
#pragma unroll
                        for (int h = 0; h < 2; h++)
#pragma unroll
                            for (int e = 0; e < 4; e++) kw[(u * 16 + h * 8 + 2 * (lane % 4) + (e & 1)) * KP + (e / 2) * 8] = P[h][e];
                    } else {
                        uint32_t pa[4] = {pack2<__half>(P[0][0], P[0][1]), pack2<__half>(P[0][2], P[0][3]),
                                          pack2<__half>(P[1][0], P[1][1]), pack2<__half>(P[1][2], P[1][3])};
                        float    gs[4] = {0.f, 0.f, 0.f, 0.f};
                        mma16816<__half>(gs, pa, ones[0], ones[1]);
                        /* gs: keys lane/4 (0, 1) and +8 (2, 3), token (2(lane%4) + e%2) % TPU of the unit;
                         * columns 0 .. TPU-1 hold each token once */
                        const int nn = 2 * (lane % 4);
                        if (nn < TPU) kw[(u * TPU + nn) * KP] = gs[0], kw[(u * TPU + nn) * KP + 8] = gs[2];
                        if (nn + 1 < TPU) kw[(u * TPU + nn + 1) * KP] = gs[1], kw[(u * TPU + nn + 1) * KP + 8] = gs[3];
                    }
                }
            }
            __syncwarp();
            if (Z == 1) { /* chunks come in order: the blocks ending in this chunk are complete */
                pool(j0, j0 / r, CH / r, j0 - PRE > 0 ? j0 - PRE : 0, j0 + CH < n1 ? j0 + CH : n1);
                __syncwarp();
                for (int i = lane; i < TW * PRE; i += 32) ksum[(i / PRE) * KP + i % PRE] = ksum[(i / PRE) * KP + CH + i % PRE];
            } else { /* every block the chunk's keys reach, partially */
                pool(j0, j0 / r, CH / r + (mk - 2 + r) / r, j0, j0 + CH < n1 ? j0 + CH : n1);
            }
            jend = j0 + CH;
        });
        if (Z == 1 && jend > 0) /* the blocks whose windows start in the last chunk and end past it */
            pool(jend - CH, jend / r, (mk - 2 + r) / r, jend - CH, jend < n1 ? jend : n1);
    }
    if (mode == SEL_SCORE) return;
    }

topk:
    /* ---- forced blocks, keys of the scores, then the top-k of each token ---- */
    __syncthreads();
    for (int t = 0; t < TT; t++) {
        const int qb = sQb[t], lo = qb - (int)p.nloc;
        uint32_t *row = (uint32_t *)(blk + t * p.nbp); /* the scores become their keys in place */
        for (int b = tid; b <= qb; b += NT) row[b] = order_key(b < p.init || b >= lo ? INFINITY : __uint_as_float(row[b]));
    }
    __syncthreads();
    const int w = (int)(p.list < nb ? p.list : nb);
    for (int t = warp; t < TT; t += NW)
        if (sQb[t] >= 0)
            warp_topk<uint32_t, float>((const uint32_t *)(blk + t * p.nbp), nb, nbk, w, sQb[t],
                                       p.sel + g * p.ss0 + (sq.q0 + i0 + t) * p.ss1, (int)p.K);
}

/* ---- dispatch ---- */

template <typename T, int D, int NW>
static enum ifl_status launch_mma(struct ifl_ctx *ctx, struct sel_params &p, const struct ifl__problem *pb, size_t smem, int z) {
    struct cuda_state *cs = cuda_of(ctx);
    CU_TRY(ctx, cudaFuncSetAttribute(select_mma<T, D, NW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)p.n_tiles, (unsigned)pb->hkv, (unsigned)z);
    select_mma<T, D, NW><<<grid, NW * 32, smem, cs->stream>>>(p);
    CU_LAUNCHED(ctx);
    return IFL_STATUS_OK;
}

template <typename T, int D>
static enum ifl_status launch_mma_nw(struct ifl_ctx *ctx, struct sel_params &p, const struct ifl__problem *pb, int nw,
                                     size_t smem, int z) {
    switch (nw) {
    case 1: return launch_mma<T, D, 1>(ctx, p, pb, smem, z);
    case 2: return launch_mma<T, D, 2>(ctx, p, pb, smem, z);
    default: return launch_mma<T, D, 4>(ctx, p, pb, smem, z);
    }
}

static enum ifl_status launch_mma_any(struct ifl_ctx *ctx, struct sel_params &p, const struct ifl__problem *pb, int nw, size_t smem,
                                      int z) {
    if (pb->q->dtype == IFL_DTYPE_BF16)
        return pb->d == 64 ? launch_mma_nw<__nv_bfloat16, 64>(ctx, p, pb, nw, smem, z)
                           : launch_mma_nw<__nv_bfloat16, 128>(ctx, p, pb, nw, smem, z);
    return pb->d == 64 ? launch_mma_nw<__half, 64>(ctx, p, pb, nw, smem, z) : launch_mma_nw<__half, 128>(ctx, p, pb, nw, smem, z);
}

template <typename T>
static enum ifl_status launch_generic(struct ifl_ctx *ctx, struct sel_params &p, const struct ifl__problem *pb, int64_t max_n1,
                                      int64_t max_nb) {
    typedef typename acc_of<T>::type A;
    struct cuda_state *cs     = cuda_of(ctx);
    int64_t            blocks = p.rows * pb->hkv;
    if (blocks > (int64_t)cs->n_sm * 8) blocks = (int64_t)cs->n_sm * 8;
    if (blocks < 1) return IFL_STATUS_OK;
    p.per_block = (max_n1 > max_nb ? max_n1 : max_nb) + 1;
    enum ifl_status st = cuda_scratch(ctx, (size_t)(blocks * 2 * p.per_block) * sizeof(A), &p.scratch);
    if (st) return st;
    select_generic<T><<<(unsigned)blocks, 128, 0, cs->stream>>>(p);
    cudaError_t e = cudaGetLastError();
    cuda_scratch_free(ctx, p.scratch);
    if (e != cudaSuccess) return cuda_fail(ctx, e, "select_generic launch");
    return IFL_STATUS_OK;
}

/* 16-byte aligned rows: the fast kernels stage q with cp.async. */
enum ifl_status cuda_select_run(struct ifl_ctx *ctx, const struct ifl__problem *pb, const void *c1, const void *c2) {
    struct cuda_state              *cs = cuda_of(ctx);
    const struct ifl_sparse_config *c  = &pb->cfg;
    struct sel_params               p;
    memset(&p, 0, sizeof p);
    int64_t max_n1 = 0, max_nb = 0, rows = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        int64_t n1 = ifl_compressed_len(pb->seqs[s].nk, c->kernel_size, c->kernel_stride);
        int64_t nb = ifl__ceil_div(pb->seqs[s].nk, c->block_size);
        if (pb->seqs[s].nq == 0) continue;
        max_n1 = n1 > max_n1 ? n1 : max_n1;
        max_nb = nb > max_nb ? nb : max_nb;
        rows += pb->seqs[s].nq;
    }
    if (rows == 0) return IFL_STATUS_OK;
    p.q = pb->q->data, p.qs0 = pb->q->stride[0], p.qs1 = pb->q->stride[1];
    p.c1 = c1, p.c2 = c2;
    p.sel = (int32_t *)pb->sel->data, p.ss0 = pb->sel->stride[0], p.ss1 = pb->sel->stride[1], p.K = pb->sel->shape[2];
    p.rows = rows, p.hkv = pb->hkv, p.G = pb->g, p.D = pb->d;
    p.bs = c->block_size, p.ks = c->kernel_size, p.kst = c->kernel_stride;
    p.cks = c->coarse_kernel_size, p.ckst = c->coarse_kernel_stride;
    p.init = c->init_blocks, p.nloc = ifl__local_blocks(c), p.list = (int64_t)c->topk + p.nloc;
    p.approx = c->lse_mode == IFL_LSE_APPROX, p.scale = c->scale;
    p.r = (int)(c->block_size / c->kernel_stride), p.m = (int)(c->kernel_size / c->kernel_stride);

    /* the tensor-core kernel when the shape allows and the block scores fit in shared memory: the
     * blocks must tile a chunk of keys, and a block's window may reach at most SEL_PRE keys back */
    const enum ifl_dtype dt = pb->q->dtype;
    int fast = !cs->force_generic && (dt == IFL_DTYPE_BF16 || dt == IFL_DTYPE_F16) && (pb->d == 64 || pb->d == 128) &&
               pb->g <= 16 && 16 % pb->g == 0 && cuda_rows_aligned(pb->q) && SEL_CH % p.r == 0 && p.m <= SEL_PRE + 1 &&
               max_nb < (1 << 30);
    int    nw = 0;
    size_t smem = 0;
    if (fast) {
        const int prefs[3] = {cs->sel_warps == 1 || cs->sel_warps == 2 ? cs->sel_warps : 4, 2, 1};
        for (int i = 0; i < 3 && nw == 0; i++) {
            size_t need = sel_mma_smem(prefs[i], (int)pb->d, (int)pb->g, max_nb);
            if (need <= cs->smem_optin) nw = prefs[i], smem = need;
        }
        if (nw == 0) fast = 0;
    }
    if (!fast) {
        void           *d  = NULL;
        enum ifl_status st = cuda_seqs_upload(ctx, pb, 0, &d, NULL, NULL);
        if (st) return st;
        p.seqs = (const struct dseq *)d, p.n_seqs = (int)pb->n_seqs;
        switch (dt) {
        case IFL_DTYPE_F64: st = launch_generic<double>(ctx, p, pb, max_n1, max_nb); break;
        case IFL_DTYPE_F32: st = launch_generic<float>(ctx, p, pb, max_n1, max_nb); break;
        case IFL_DTYPE_F16: st = launch_generic<__half>(ctx, p, pb, max_n1, max_nb); break;
        default: st = launch_generic<__nv_bfloat16>(ctx, p, pb, max_n1, max_nb); break;
        }
        cuda_scratch_free(ctx, d);
        return st;
    }
    /* too few tiles to fill the device (decode, short chunks): split every tile's keys over Z blocks */
    const int64_t per_warp = SEL_U * 16 / pb->g; /* tokens */
    int64_t       max_nq = 0, tiles = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) max_nq = pb->seqs[s].nq > max_nq ? pb->seqs[s].nq : max_nq;
    for (int64_t s = 0; s < pb->n_seqs; s++) tiles += ifl__ceil_div(pb->seqs[s].nq, (int64_t)nw * per_warp);
    int z = 1;
    if (tiles * pb->hkv * 2 <= cs->n_sm && max_n1 >= 4 * SEL_CH) {
        nw = 4;
        for (int w = 1; w < 4; w *= 2)
            if ((int64_t)w * per_warp >= max_nq) {
                nw = w;
                break;
            }
        tiles = 0;
        for (int64_t s = 0; s < pb->n_seqs; s++) tiles += ifl__ceil_div(pb->seqs[s].nq, (int64_t)nw * per_warp);
        int64_t zz = cs->n_sm / (tiles * pb->hkv), nch = ifl__ceil_div(max_n1, SEL_CH);
        zz = zz < nch ? zz : nch;
        if (zz >= 2) z = (int)zz;
        smem = sel_mma_smem(nw, (int)pb->d, (int)pb->g, 0); /* block scores in device memory */
    }
    const int64_t   tt = (int64_t)nw * per_warp;
    void           *d  = NULL;
    enum ifl_status st = cuda_seqs_upload(ctx, pb, tt, &d, &p.n_tiles, NULL);
    if (st) return st;
    p.seqs = (const struct dseq *)d, p.n_seqs = (int)pb->n_seqs, p.nbp = max_nb;
    if (p.n_tiles > 0x7fffffff) {
        st = IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED, "%s: too many query tiles for one launch", pb->fn);
    } else if (z == 1) {
        p.mode = SEL_FULL;
        st     = launch_mma_any(ctx, p, pb, nw, smem, 1);
    } else {
        void *part = NULL, *gblk = NULL;
        if (!(st = cuda_scratch(ctx, (size_t)(p.n_tiles * pb->hkv * z * nw * SEL_U * 16 * 2) * sizeof(float), &part)) &&
            !(st = cuda_scratch(ctx, (size_t)(p.n_tiles * pb->hkv * tt * max_nb) * sizeof(float), &gblk))) {
            p.part = (float *)part, p.gblk = (float *)gblk;
            p.mode = SEL_LSE;
            if (!(st = launch_mma_any(ctx, p, pb, nw, smem, z))) {
                p.mode = SEL_SCORE;
                if (!(st = launch_mma_any(ctx, p, pb, nw, smem, z))) {
                    p.mode = SEL_TOPK;
                    st     = launch_mma_any(ctx, p, pb, nw, smem, 1);
                }
            }
        }
        cuda_scratch_free(ctx, part);
        cuda_scratch_free(ctx, gblk);
    }
    cuda_scratch_free(ctx, d);
    return st;
}
