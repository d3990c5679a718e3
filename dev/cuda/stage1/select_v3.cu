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
 *   select_mma     bf16/f16, D 64 or 128, G in {1, 2, 4, 8, 16}: each warp holds 16 query rows
 *                  (16/G tokens x G heads) as tensor-core A fragments; 64 compressed keys at a time
 *                  are staged in shared memory (cp.async, two stages) and shared by all warps;
 *                  scores by mma.sync m16n8k16 with f32 accumulation; the group sum is a warp
 *                  shuffle over the rows of a token; pooling is an integer atomicMax on the
 *                  (non-negative) f32 block scores in shared memory, so the result does not depend
 *                  on the order.
 *   select_generic every other case (f32, f64, any D and G, block scores that do not fit in shared
 *                  memory): one block of threads per (token, KV head), scratch rows in device
 *                  memory for a bounded number of resident blocks.
 * Both end in warp_topk: the width-th largest score by a bitwise radix search (ties resolved by
 * index), then one ascending pass that writes the kept blocks <= the query's block and -1 padding.
 */
#include "cuda_common.cuh"

#include <math.h>

#define LOG2E_F 1.4426950408889634f

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
    int64_t     nbp;     /* select_mma: shared-memory pitch of a token's block scores */
    void       *scratch; /* select_generic: per resident block, max_n1 + max_nb accumulators */
    int64_t     per_block;
    int         r, m, rshift; /* block_size/stride, kernel_size/stride, log2(r) or -1 */
    int         mode;         /* select_mma: SEL_* */
    float      *part;         /* split modes: [tiles*hkv][Z][rows][2] partial (max, sum) */
    float      *gblk;         /* split modes: [tiles*hkv][TT][nbp] block scores */
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

/* One warp: of the nb scores sc[], keeps the w best (higher score first, ties to the smaller
 * index), writes those <= qb ascending to out[0..], then -1 up to K. */
template <typename S>
__device__ void warp_topk(const S *sc, int64_t nb64, int64_t w64, int64_t qb64, int32_t *out, int64_t K64) {
    typedef decltype(order_key(sc[0])) U;
    const int      lane = threadIdx.x & 31, nb = (int)nb64, w = (int)w64, qb = (int)qb64, K = (int)K64;
    const unsigned lt   = (1u << lane) - 1u;
    U              T    = 0; /* the w-th largest key, built from the top bit down */
    for (int bit = 8 * (int)sizeof(U) - 1; bit >= 0; bit--) {
        U   cand = T | ((U)1 << bit);
        int cnt  = 0;
        for (int b = lane; b < nb; b += 32) cnt += order_key(sc[b]) >= cand;
        cnt = __reduce_add_sync(0xffffffffu, cnt);
        if (cnt >= w) T = cand;
    }
    int gt = 0;
    for (int b = lane; b < nb; b += 32) gt += order_key(sc[b]) > T;
    gt             = __reduce_add_sync(0xffffffffu, gt);
    const int need = w - gt; /* how many of the scores equal to T are kept, smallest first */
    int       pos = 0, eq_seen = 0;
    for (int base = 0; base < nb && base <= qb; base += 32) {
        int      b   = base + lane;
        U        key = b < nb ? order_key(sc[b]) : 0;
        int      isg = b < nb && key > T, ise = b < nb && key == T;
        unsigned em  = __ballot_sync(0xffffffffu, ise);
        int      chosen = isg || (ise && eq_seen + __popc(em & lt) < need);
        eq_seen += __popc(em);
        int      keep = chosen && b <= qb;
        unsigned km   = __ballot_sync(0xffffffffu, keep);
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
    __shared__ A red[33];
    const int    tid = threadIdx.x, nt = blockDim.x;
    const int64_t max_n1 = p.per_block; /* S first, then the block scores */
    A           *Sx  = (A *)p.scratch + (int64_t)blockIdx.x * 2 * p.per_block;
    A           *blk = Sx + max_n1;
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
        for (int64_t b = tid; b < nb; b += nt) {
            A score;
            if (b < p.init || (b >= qb - p.nloc && b <= qb)) {
                score = INFINITY;
            } else {
                int64_t lo, hi;
                block_keys(p, b, n1, &lo, &hi);
                score = -INFINITY;
                for (int64_t j = lo; j < hi; j++) score = Sx[j] > score ? Sx[j] : score;
            }
            blk[b] = score;
        }
        __syncthreads();
        if (tid < 32) warp_topk(blk, nb, w, qb, p.sel + g * p.ss0 + token * p.ss1, p.K);
        __syncthreads();
    }
}

/* ---- the tensor-core kernel ---- */

/* Modes of select_mma. FULL does everything in one launch with the block scores in shared memory.
 * When there are too few tiles to fill the device (decode, short chunks), the key range of every
 * tile is split over gridDim.z blocks in three launches: LSE (partial log2-sum-exp per row and key
 * slice, to p.part), SCORE (combines the partials in a fixed order, then pools its key slice into
 * block scores in device memory with atomicMax, which is order-independent), TOPK (forced blocks and
 * the top-k). Results are identical either way up to the f32 rounding of the combined normaliser. */
enum { SEL_FULL, SEL_LSE, SEL_SCORE, SEL_TOPK };

template <typename T, int D, int NW>
__global__ void __launch_bounds__(NW * 32, 1) select_mma(struct sel_params p) {
    constexpr int ROWS = NW * 16, PITCH = D + 8, CH = 64, NT = NW * 32, DC = D / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    T *sKey = (T *)smem; /* [2][CH][PITCH]; the Q tile is staged here first */
    __shared__ int64_t sPos[ROWS];
    __shared__ int     sVis1[ROWS], sVis2[ROWS], sCoarse[ROWS];
    const int     tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int     G = (int)p.G, TT = ROWS / G, Z = (int)gridDim.z, z = (int)blockIdx.z, mode = p.mode;
    const int64_t tile = p.n_tiles - 1 - blockIdx.x, g = blockIdx.y; /* latest (heaviest) tiles first */
    const int64_t tg   = tile * p.hkv + g;                             /* this (tile, KV head) */
    const int     s    = seq_of_tile(p.seqs, p.n_seqs, tile);
    const struct dseq sq = p.seqs[s];
    const int64_t i0 = (tile - sq.tile0) * TT;
    const int     n1 = (int)n_compressed(sq.nk, p.ks, p.kst), n2 = (int)n_compressed(sq.nk, p.cks, p.ckst);
    const int     nb = (int)((sq.nk + p.bs - 1) / p.bs), r = p.r, mk = p.m; /* keys per block stride, per window */
    const int64_t krow = p.hkv * D;
    const T      *c1 = (const T *)p.c1 + (sq.c1 * p.hkv + g) * D, *c2 = (const T *)p.c2 + (sq.c2 * p.hkv + g) * D;
    /* block scores: shared memory in FULL mode, else this tile's rows in device memory */
    float *blk = mode == SEL_FULL ? (float *)(sKey + 2 * CH * PITCH) : p.gblk + tg * TT * p.nbp;

    for (int t = tid; t < TT; t += NT) {
        int     valid = i0 + t < sq.nq;
        int64_t pos   = sq.past + i0 + t;
        sPos[t]       = pos;
        sVis1[t]      = valid ? (int)n_visible(pos, p.ks, p.kst) : 0;
        sVis2[t]      = valid ? (int)n_visible(pos, p.cks, p.ckst) : 0;
        sCoarse[t]    = valid && p.approx && sVis2[t] > 0;
    }
    __syncthreads();
    if (mode == SEL_TOPK) goto topk;
    {
    /* the Q tile: row r = token r/G, head g*G + r%G (zeros past the sequence's queries) */
    for (int c = tid; c < ROWS * DC; c += NT) {
        int      rr = c / DC, cc = c % DC, t = rr / G;
        int      ok  = i0 + t < sq.nq;
        const T *src = (const T *)p.q + (sq.q0 + i0 + t) * p.qs0 + (g * G + rr % G) * p.qs1 + cc * 8;
        cp_async16(smem_u32(sKey + rr * PITCH + cc * 8), ok ? (const void *)src : p.q, ok ? 16 : 0);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ldsm_x4(smem_u32(sKey + (warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * PITCH + kk * 16 + (lane / 16) * 8),
                qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3]);
    __syncthreads();

    const int   ra = warp * 16 + lane / 4, rb = ra + 8, ta = ra / G, tb = rb / G;
    const float sl2 = (float)(p.scale * 1.4426950408889634);

    /* S = Q K^T for 64 keys staged at sk: S[nt][e] is row (e < 2 ? ra : rb), key
     * nt*8 + 2*(lane%4) + (e&1) of the chunk. */
    auto scores = [&](const T *sk, float (&S)[8][4]) {
#pragma unroll
        for (int nt = 0; nt < 8; nt++) S[nt][0] = S[nt][1] = S[nt][2] = S[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
            for (int np = 0; np < 4; np++) {
                uint32_t b0, b1, b2, b3;
                ldsm_x4(smem_u32(sk + (np * 16 + (lane / 16) * 8 + lane % 8) * PITCH + kk * 16 + ((lane / 8) % 2) * 8), b0, b1, b2, b3);
                mma16816<T>(S[2 * np], qa[kk], b0, b1);
                mma16816<T>(S[2 * np + 1], qa[kk], b2, b3);
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

    float lse_a = INFINITY, lse_b = INFINITY; /* log2 normaliser per row (no key: contributes nothing) */
    if (mode == SEL_FULL || mode == SEL_LSE) {
        /* ---- pass 1: log2-sum-exp per row, over the coarse keys and/or the fine keys ---- */
        float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;
        for (int pass = 0; pass < 2; pass++) {
            const int coarse = pass == 0;
            int       n      = 0;
            for (int t = 0; t < TT; t++)
                if (sCoarse[t] == coarse) {
                    int v = coarse ? sVis2[t] : sVis1[t];
                    n     = v > n ? v : n;
                }
            const int use_a = sCoarse[ta] == coarse, use_b = sCoarse[tb] == coarse;
            const int va = use_a ? (coarse ? sVis2[ta] : sVis1[ta]) : 0, vb = use_b ? (coarse ? sVis2[tb] : sVis1[tb]) : 0;
            sweep(coarse ? c2 : c1, n, coarse ? n2 : n1, [&](const T *sk, int j0) {
                float S[8][4];
                scores(sk, S);
                float mxa = -INFINITY, mxb = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < 8; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int   j = j0 + nt * 8 + 2 * (lane % 4) + (e & 1);
                        float x = (e < 2 ? j < va : j < vb) ? S[nt][e] * sl2 : -INFINITY;
                        S[nt][e] = x;
                        if (e < 2) mxa = fmaxf(mxa, x);
                        else mxb = fmaxf(mxb, x);
                    }
                mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 1));
                mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 2));
                mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 1));
                mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 2));
                float na = fmaxf(m_a, mxa), nb_ = fmaxf(m_b, mxb);
                float ba = na == -INFINITY ? 0.f : na, bb = nb_ == -INFINITY ? 0.f : nb_;
                float sa = 0.f, sb = 0.f;
#pragma unroll
                for (int nt = 0; nt < 8; nt++) {
                    sa += fast_exp2(S[nt][0] - ba) + fast_exp2(S[nt][1] - ba);
                    sb += fast_exp2(S[nt][2] - bb) + fast_exp2(S[nt][3] - bb);
                }
                l_a = l_a * fast_exp2(m_a - ba) + sa;
                l_b = l_b * fast_exp2(m_b - bb) + sb;
                m_a = na, m_b = nb_;
            });
        }
        l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
        l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
        if (mode == SEL_LSE) {
            if (lane % 4 == 0) {
                float *pp  = p.part + ((tg * Z + z) * ROWS) * 2;
                pp[ra * 2] = m_a, pp[ra * 2 + 1] = l_a;
                pp[rb * 2] = m_b, pp[rb * 2 + 1] = l_b;
            }
            if (z == 0) /* block scores: 0 where the block has a compressed key, else -inf */
                for (int t = 0; t < TT; t++)
                    for (int b = tid; b < nb; b += NT) {
                        int lo = b * r - mk + 1 > 0 ? b * r - mk + 1 : 0, hi = (b + 1) * r < n1 ? (b + 1) * r : n1;
                        blk[t * p.nbp + b] = lo < hi ? 0.f : -INFINITY;
                    }
            return;
        }
        lse_a = l_a > 0.f ? m_a + __log2f(l_a) : INFINITY;
        lse_b = l_b > 0.f ? m_b + __log2f(l_b) : INFINITY;
    } else { /* SEL_SCORE: combine the partials of every key slice, in slice order */
        float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;
        for (int zz = 0; zz < Z; zz++) {
            const float *pp = p.part + ((tg * Z + zz) * ROWS) * 2;
            float        ma = pp[ra * 2], la = pp[ra * 2 + 1], mb = pp[rb * 2], lb = pp[rb * 2 + 1];
            float        na = fmaxf(m_a, ma), nb_ = fmaxf(m_b, mb);
            float        ba = na == -INFINITY ? 0.f : na, bb = nb_ == -INFINITY ? 0.f : nb_;
            l_a = l_a * fast_exp2(m_a - ba) + la * fast_exp2(ma - ba);
            l_b = l_b * fast_exp2(m_b - bb) + lb * fast_exp2(mb - bb);
            m_a = na, m_b = nb_;
        }
        lse_a = l_a > 0.f ? m_a + __log2f(l_a) : INFINITY;
        lse_b = l_b > 0.f ? m_b + __log2f(l_b) : INFINITY;
    }

    if (mode == SEL_FULL) { /* block scores: 0 where the block has a compressed key, else -inf */
        for (int t = 0; t < TT; t++)
            for (int b = tid; b < nb; b += NT) {
                int lo = b * r - mk + 1 > 0 ? b * r - mk + 1 : 0, hi = (b + 1) * r < n1 ? (b + 1) * r : n1;
                blk[t * p.nbp + b] = lo < hi ? 0.f : -INFINITY;
            }
        __syncthreads();
    }

    /* ---- pass 2: group-summed probabilities of the visible fine keys, max-pooled: key j's window
     * overlaps blocks j/r .. (j+m-1)/r (r = block_size/stride, m = kernel_size/stride) ---- */
    {
        int n = 0;
        for (int t = 0; t < TT; t++) n = sVis1[t] > n ? sVis1[t] : n;
        const int va = sVis1[ta], vb = sVis1[tb];
        const int lim = G < 8 ? G : 8; /* lane groups (lane/4) holding rows of one token */
        const int owner = ((lane / 4) % lim) == 0;
        sweep(c1, n, n1, [&](const T *sk, int j0) {
            float S[8][4];
            scores(sk, S);
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                int   j  = j0 + nt * 8 + 2 * (lane % 4);
                float v0 = j < va ? fast_exp2(S[nt][0] * sl2 - lse_a) : 0.f;
                float v1 = j + 1 < va ? fast_exp2(S[nt][1] * sl2 - lse_a) : 0.f;
                float v2 = j < vb ? fast_exp2(S[nt][2] * sl2 - lse_b) : 0.f;
                float v3 = j + 1 < vb ? fast_exp2(S[nt][3] * sl2 - lse_b) : 0.f;
                if (G == 16) v0 += v2, v1 += v3;
                for (int off = 4; off < 4 * lim; off *= 2) {
                    v0 += __shfl_xor_sync(0xffffffffu, v0, off);
                    v1 += __shfl_xor_sync(0xffffffffu, v1, off);
                    if (G < 16) {
                        v2 += __shfl_xor_sync(0xffffffffu, v2, off);
                        v3 += __shfl_xor_sync(0xffffffffu, v3, off);
                    }
                }
                if (!owner) continue;
                const int nrow = G < 16 ? 2 : 1;
                for (int half = 0; half < nrow; half++) {
                    const int t = half ? tb : ta, vt = half ? vb : va;
                    for (int e = 0; e < 2; e++) {
                        int jj = j + e;
                        if (jj >= vt) continue;
                        float v  = half ? (e ? v3 : v2) : (e ? v1 : v0);
                        int   b0 = p.rshift >= 0 ? jj >> p.rshift : jj / r;
                        int   b1 = p.rshift >= 0 ? (jj + mk - 1) >> p.rshift : (jj + mk - 1) / r;
                        b1       = b1 < nb - 1 ? b1 : nb - 1;
                        for (int b = b0; b <= b1; b++) atomicMax((int *)&blk[t * p.nbp + b], __float_as_int(v));
                    }
                }
            }
        });
    }
    if (mode == SEL_SCORE) return;
    }

topk:
    /* ---- forced blocks, then the top-k of each token ---- */
    for (int t = 0; t < TT; t++) {
        if (i0 + t >= sq.nq) break;
        const int qb = (int)(sPos[t] / p.bs), lo = qb - (int)p.nloc;
        for (int b = tid; b < nb; b += NT)
            if (b < p.init || (b >= lo && b <= qb)) blk[t * p.nbp + b] = INFINITY;
    }
    __syncthreads();
    const int64_t w = p.list < nb ? p.list : nb;
    for (int t = warp; t < TT; t += NW)
        if (i0 + t < sq.nq)
            warp_topk(blk + t * p.nbp, (int64_t)nb, w, sPos[t] / p.bs, p.sel + g * p.ss0 + (sq.q0 + i0 + t) * p.ss1, p.K);
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
    case 4: return launch_mma<T, D, 4>(ctx, p, pb, smem, z);
    default: return launch_mma<T, D, 8>(ctx, p, pb, smem, z);
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
static int rows_aligned(const struct ifl_tensor *t) {
    size_t es = ifl_dtype_size(t->dtype);
    return ((uintptr_t)t->data % 16) == 0 && (t->stride[0] * (int64_t)es) % 16 == 0 && (t->stride[1] * (int64_t)es) % 16 == 0;
}

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

    /* the tensor-core kernel when the shape allows and the block scores fit in shared memory */
    const enum ifl_dtype dt = pb->q->dtype;
    int fast = !cs->force_generic && (dt == IFL_DTYPE_BF16 || dt == IFL_DTYPE_F16) && (pb->d == 64 || pb->d == 128) &&
               pb->g <= 16 && 16 % pb->g == 0 && rows_aligned(pb->q);
    int    nw = 0;
    size_t smem = 0;
    if (fast) {
        const int prefs[4] = {cs->sel_warps > 0 ? cs->sel_warps : 4, 4, 2, 1}; /* 4: three blocks per SM (H200) */
        for (int i = 0; i < 4 && nw == 0; i++) {
            int    w  = prefs[i] == 1 || prefs[i] == 2 || prefs[i] == 4 ? prefs[i] : 8;
            int64_t tt = (int64_t)w * 16 / pb->g;
            size_t need = (size_t)(2 * 64 * (pb->d + 8)) * 2 + (size_t)(tt * max_nb) * 4;
            if (need <= cs->smem_optin) nw = w, smem = need;
        }
        if (nw == 0) fast = 0;
    }
    if (!fast) {
        struct dseq *seqs = (struct dseq *)malloc((size_t)pb->n_seqs * sizeof *seqs);
        void        *d    = NULL;
        if (seqs == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
        cuda_fill_seqs(pb, 0, seqs);
        enum ifl_status st = cuda_upload(ctx, seqs, (size_t)pb->n_seqs * sizeof *seqs, &d);
        free(seqs);
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
    int64_t max_nq = 0, tiles = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) max_nq = pb->seqs[s].nq > max_nq ? pb->seqs[s].nq : max_nq;
    for (int64_t s = 0; s < pb->n_seqs; s++) tiles += ifl__ceil_div(pb->seqs[s].nq, (int64_t)nw * 16 / pb->g);
    int z = 1;
    if (tiles * pb->hkv * 2 <= cs->n_sm && max_n1 >= 4 * 64) {
        nw = 8;
        for (int w = 1; w < 8; w *= 2)
            if ((int64_t)w * 16 / pb->g >= max_nq) {
                nw = w;
                break;
            }
        tiles = 0;
        for (int64_t s = 0; s < pb->n_seqs; s++) tiles += ifl__ceil_div(pb->seqs[s].nq, (int64_t)nw * 16 / pb->g);
        int64_t zz = cs->n_sm / (tiles * pb->hkv), nch = ifl__ceil_div(max_n1, 64);
        zz = zz < nch ? zz : nch;
        if (zz >= 2) z = (int)zz;
        smem = (size_t)(2 * 64 * (pb->d + 8)) * 2;
    }
    const int64_t tt   = (int64_t)nw * 16 / pb->g;
    p.r      = (int)(c->block_size / c->kernel_stride);
    p.m      = (int)(c->kernel_size / c->kernel_stride);
    p.rshift = -1;
    for (int b = 0; b < 31; b++)
        if ((1 << b) == p.r) p.rshift = b;
    struct dseq  *seqs = (struct dseq *)malloc((size_t)pb->n_seqs * sizeof *seqs);
    void         *d    = NULL;
    if (seqs == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
    p.n_tiles          = cuda_fill_seqs(pb, tt, seqs);
    enum ifl_status st = cuda_upload(ctx, seqs, (size_t)pb->n_seqs * sizeof *seqs, &d);
    free(seqs);
    if (st) return st;
    p.seqs = (const struct dseq *)d, p.n_seqs = (int)pb->n_seqs, p.nbp = max_nb;
    if (p.n_tiles > 0x7fffffff) {
        st = IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED, "%s: too many query tiles for one launch", pb->fn);
    } else if (z == 1) {
        p.mode = 0; /* SEL_FULL */
        st     = launch_mma_any(ctx, p, pb, nw, smem, 1);
    } else {
        void *part = NULL, *gblk = NULL;
        if (!(st = cuda_scratch(ctx, (size_t)(p.n_tiles * pb->hkv * z * nw * 16 * 2) * sizeof(float), &part)) &&
            !(st = cuda_scratch(ctx, (size_t)(p.n_tiles * pb->hkv * tt * max_nb) * sizeof(float), &gblk))) {
            p.part = (float *)part, p.gblk = (float *)gblk;
            p.mode = 1; /* SEL_LSE */
            if (!(st = launch_mma_any(ctx, p, pb, nw, smem, z))) {
                p.mode = 2; /* SEL_SCORE */
                if (!(st = launch_mma_any(ctx, p, pb, nw, smem, z))) {
                    p.mode = 3; /* SEL_TOPK */
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
