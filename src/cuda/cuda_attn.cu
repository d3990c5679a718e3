/* SPDX-License-Identifier: MIT
 *
 * cuda_attn.cu -- stage 2 (sparse) and dense causal attention forward (spec §4.1). Both walk, per
 * tile of query rows of one KV head, a set of 64-key tiles in ascending order with
 * FlashAttention's online softmax (f32 running max, sum and accumulator, P rounded to the storage
 * type before P.V, normalised at the end; LSE = (m + log2 l) ln 2).
 *
 *   attn_mma      bf16/f16, D 64 or 128, G dividing 16 or a multiple of 16 (<= 16*warps): the
 *                 tile is NW warps x 16 rows, row r = token r/G, head r%G of consecutive tokens, so
 *                 the G heads of a token share every K/V tile loaded (and for G < 16 a warp's rows
 *                 hold 16/G tokens). Sparse: the tile walks the union of its tokens' selections
 *                 (one cursor per token, advanced by warp 0 one unit ahead so the next K/V tile is
 *                 prefetched with cp.async while the current one is multiplied), a warp skips a
 *                 unit none of its tokens selected, and rows of tokens that did not select it are
 *                 masked, so each token's result is exact. Dense: the units are all 64-key tiles up
 *                 to the tile's last token. Scores and P.V by mma.sync m16n8k16, f32 accumulation.
 *                 When the tiles cannot fill the device (decode, short chunks) each tile's units are
 *                 split over gridDim.z blocks (every Z-th unit of the walk) that write unnormalised
 *                 partials; attn_combine merges them in z order (flash-decoding; deterministic).
 *   attn_generic  every other case (f32, f64, any D, any G): one warp per (token, query head),
 *                 one key per lane, accumulation in f32 (f64 for f64 inputs).
 *
 * The selection rows were validated on the device before this runs (cuda_check.cu), so every
 * entry read is a block of the sequence; the kernels still stop at the first entry that is not.
 */
#include "cuda_common.cuh"

#include <math.h>

struct attn_params {
    const void *q, *k, *v;
    int64_t     qs0, qs1, ks0, ks1, vs0, vs1;
    struct dtensor out, lse; /* lse.data NULL: not written */
    const int32_t *sel;
    int64_t        ss0, ss1, K;
    const struct dseq *seqs;
    int         n_seqs;
    int64_t     n_tiles, rows;
    int64_t     hq, hkv, G, D, bs;
    float       sl2;   /* scale * log2(e) */
    double      scale;
    int         sparse;
    int         sel_cache; /* attn_mma: the tile's selection rows are copied to shared memory */
    float      *part_o;    /* split (gridDim.z > 1): [tiles*hkv][Z][rows][D] unnormalised outputs */
    float      *part_ml;   /* split: [tiles*hkv][Z][rows][2] running max (log2) and sum */
    /* the backward's dQ pass (BWD kernels) */
    struct dtensor dout;
    const void *ld;        /* [Tq][Hq] struct ld2<A>: the LSE in log2 units and Di = <dO, O> */
    struct dtensor dq;
};

/* ---- the generic kernel ---- */

/* o[x] += sum over the span's n keys j of w_j * row_j[lane + 32x], where lane j holds w_j: one
 * warp, lanes over D. */
template <typename T, typename A>
__device__ __forceinline__ void add_weighted_rows(A (&o)[IFL_MAX_HEAD_DIM / 32], A w, const T *rows, int64_t stride, int64_t n,
                                                  int64_t D, int lane) {
    for (int jj = 0; jj < n; jj++) {
        const A  wj = __shfl_sync(0xffffffffu, w, jj);
        const T *r  = rows + jj * stride;
#pragma unroll
        for (int x = 0; x < IFL_MAX_HEAD_DIM / 32; x++)
            if (lane + 32 * x < D) o[x] += wj * to_acc(r[lane + 32 * x]);
    }
}

/* BWD = 0: the forward. BWD = 1: the backward's dQ = scale sum_j P_j (dP_j - Di) k_j with
 * P_j = exp(s_j - lse) and dP_j = <dO, v_j>, over the same keys the forward saw. */
template <typename T, int BWD>
__global__ void __launch_bounds__(128) attn_generic(struct attn_params p) {
    typedef typename acc_of<T>::type A;
    __shared__ A sq[4][IFL_MAX_HEAD_DIM];
    __shared__ A sdo[BWD ? 4 : 1][BWD ? IFL_MAX_HEAD_DIM : 1];
    const int    warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const A      scale = (A)p.scale;
    for (int64_t r = (int64_t)blockIdx.x * 4 + warp; r < p.rows * p.hq; r += (int64_t)gridDim.x * 4) {
        const int64_t row = r / p.hq, h = r % p.hq, g = h / p.G;
        const int     s   = seq_of_row(p.seqs, p.n_seqs, row);
        const struct dseq sqn = p.seqs[s];
        const int64_t i = row - sqn.cq, token = sqn.q0 + i, pos = sqn.past + i;
        const T      *qh = (const T *)p.q + token * p.qs0 + h * p.qs1;
        const T      *kb = (const T *)p.k + sqn.k0 * p.ks0 + g * p.ks1, *vb = (const T *)p.v + sqn.k0 * p.vs0 + g * p.vs1;
        for (int64_t d = lane; d < p.D; d += 32) sq[warp][d] = to_acc(qh[d]);
        A lse2 = 0, di = 0; /* BWD: the row's LSE in log2 units and <dO, O> */
        if constexpr (BWD) {
            for (int64_t d = lane; d < p.D; d += 32) sdo[warp][d] = (A)load_any(p.dout.data, p.dout.dtype, token * p.dout.s0 + h * p.dout.s1 + d);
            const A *ld = (const A *)p.ld + (token * p.hq + h) * 2;
            lse2 = ld[0], di = ld[1];
        }
        __syncwarp();
        A m = -INFINITY, l = 0, o[IFL_MAX_HEAD_DIM / 32];
#pragma unroll
        for (int x = 0; x < IFL_MAX_HEAD_DIM / 32; x++) o[x] = 0;
        const int32_t *srow = p.sparse ? p.sel + g * p.ss0 + token * p.ss1 : NULL;
        const int64_t  nb   = (sqn.nk + p.bs - 1) / p.bs;
        for (int64_t c = 0; c < (p.sparse ? p.K : 1); c++) {
            int64_t a = 0, e = pos + 1; /* the span of keys [a, e) */
            if (p.sparse) {
                int64_t b = srow[c];
                if (b < 0 || b >= nb || b * p.bs > pos) break; /* ascending: nothing after is visible */
                a = b * p.bs;
                e = a + p.bs < pos + 1 ? a + p.bs : pos + 1;
            }
            for (int64_t base = a; base < e; base += 32) {
                const int64_t key   = base + lane;
                const int     valid = key < e;
                const int64_t n     = e - base < 32 ? e - base : 32;
                if constexpr (BWD) {
                    A ds = 0;
                    if (valid) {
                        const T *kr = kb + key * p.ks0, *vr = vb + key * p.vs0;
                        A        qk = 0, dp = 0;
                        for (int64_t d = 0; d < p.D; d++) qk += sq[warp][d] * to_acc(kr[d]), dp += sdo[warp][d] * to_acc(vr[d]);
                        ds = exp2(scale * (A)1.4426950408889634 * qk - lse2) * (dp - di);
                    }
                    add_weighted_rows<T, A>(o, ds, kb + base * p.ks0, p.ks0, n, p.D, lane); /* dQ += dS K */
                } else {
                    A z = -INFINITY;
                    if (valid) {
                        const T *kr = kb + key * p.ks0;
                        A        d_ = 0;
                        for (int64_t d = 0; d < p.D; d++) d_ += sq[warp][d] * to_acc(kr[d]);
                        z = scale * d_;
                    }
                    A mx = z;
                    for (int off = 16; off > 0; off /= 2) {
                        A y = __shfl_xor_sync(0xffffffffu, mx, off);
                        mx  = y > mx ? y : mx;
                    }
                    const A mn   = m > mx ? m : mx;
                    const A pj   = valid ? exp(z - mn) : (A)0;
                    const A corr = exp(m - mn); /* m = -inf at the first span: 0 */
                    A       sum  = pj;
                    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
                    l = l * corr + sum;
#pragma unroll
                    for (int x = 0; x < IFL_MAX_HEAD_DIM / 32; x++) o[x] *= corr;
                    add_weighted_rows<T, A>(o, pj, vb + base * p.vs0, p.vs0, n, p.D, lane); /* O += P V */
                    m = mn;
                }
            }
        }
        if constexpr (BWD) {
#pragma unroll
            for (int x = 0; x < IFL_MAX_HEAD_DIM / 32; x++)
                if (lane + 32 * x < p.D) store_any(p.dq.data, p.dq.dtype, token * p.dq.s0 + h * p.dq.s1 + lane + 32 * x, (double)(scale * o[x]));
        } else {
#pragma unroll
            for (int x = 0; x < IFL_MAX_HEAD_DIM / 32; x++)
                if (lane + 32 * x < p.D)
                    store_any(p.out.data, p.out.dtype, token * p.out.s0 + h * p.out.s1 + lane + 32 * x, (double)(l > 0 ? o[x] / l : (A)0));
            if (p.lse.data && lane == 0)
                store_any(p.lse.data, p.lse.dtype, token * p.lse.s0 + h, l > 0 ? (double)(m + log(l)) : -(double)INFINITY);
        }
        __syncwarp();
    }
}

/* ---- the tensor-core kernel ---- */

#define UNIT_DONE INT64_MAX

/* BWD = 1: the backward's dQ (see attn_generic) on the same walk: per unit S = Q K^T, P = 2^(S
 * - lse2) (0 where masked), dP = dO V^T, dS = P (dP - Di) rounded to T, dQ += dS K; dQ is scaled
 * and stored at the end (no split: gridDim.z is 1). */
template <typename T, int D, int NW, int BWD>
__global__ void __launch_bounds__(NW * 32) attn_mma(struct attn_params p) {
    constexpr int ROWS = NW * 16, PITCH = D + 8, KT = 64, NT = NW * 32, DC = D / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    T *sQ  = (T *)smem;                      /* [ROWS][PITCH] */
    T *sdO = sQ + ROWS * PITCH;              /* BWD: [ROWS][PITCH] */
    T *sK  = sdO + (BWD ? ROWS * PITCH : 0); /* [2][KT][PITCH] */
    T *sV = sK + 2 * KT * PITCH;    /* [2][KT][PITCH] */
    int32_t *sSel = (int32_t *)(sV + 2 * KT * PITCH); /* [TT][K] when p.sel_cache */
    __shared__ int64_t       sPos[ROWS];
    __shared__ int           sCur[ROWS];
    __shared__ unsigned char sFlag[2][ROWS];
    __shared__ int64_t       sUnitB[2];
    __shared__ int           sUnitJ[2];
    const int     tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int     G = (int)p.G, TT = ROWS / G;
    const int64_t tile = p.n_tiles - 1 - blockIdx.x, g = blockIdx.y; /* latest (heaviest) tiles first */
    const int     s    = seq_of_tile(p.seqs, p.n_seqs, tile);
    const struct dseq sq = p.seqs[s];
    const int64_t i0 = (tile - sq.tile0) * TT;
    const int     nvalid = (int)(sq.nq - i0 < TT ? sq.nq - i0 : TT);
    const int64_t BS = p.sparse ? p.bs : KT, nb = (sq.nk + BS - 1) / BS;
    const int     ntile_blk = (int)((BS + KT - 1) / KT);
    const T      *kbase = (const T *)p.k + sq.k0 * p.ks0 + g * p.ks1, *vbase = (const T *)p.v + sq.k0 * p.vs0 + g * p.vs1;

    const int     Z = (int)gridDim.z, z = (int)blockIdx.z; /* split: this block takes units z, z+Z, ... */
    for (int t = tid; t < TT; t += NT) sPos[t] = sq.past + i0 + t, sCur[t] = 0;
    if (p.sparse && p.sel_cache)
        for (int x = tid; x < TT * p.K; x += NT) {
            int t = x / (int)p.K, c = x % (int)p.K;
            sSel[x] = t < nvalid ? p.sel[g * p.ss0 + (sq.q0 + i0 + t) * p.ss1 + c] : -1;
        }
    for (int c = tid; c < ROWS * DC; c += NT) {
        int      r = c / DC, cc = c % DC, t = r / G;
        int      ok  = t < nvalid;
        const T *src = (const T *)p.q + (sq.q0 + i0 + t) * p.qs0 + (g * G + r % G) * p.qs1 + cc * 8;
        cp_async16(smem_u32(sQ + r * PITCH + cc * 8), ok ? (const void *)src : p.q, ok ? 16 : 0);
        if constexpr (BWD) {
            const T *so = (const T *)p.dout.data + (sq.q0 + i0 + t) * p.dout.s0 + (g * G + r % G) * p.dout.s1 + cc * 8;
            cp_async16(smem_u32(sdO + r * PITCH + cc * 8), ok ? (const void *)so : p.dout.data, ok ? 16 : 0);
        }
    }
    cp_async_commit();
    __syncthreads();

    /* warp 0: the unit after (cur_b, cur_j) of stage `from` into stage `to` (cur_b < 0: the first);
     * returns its block (UNIT_DONE at the end), the same in every lane */
    auto next_unit = [&](int from, int to) -> int64_t {
        __syncwarp();
        int64_t cb = from < 0 ? -1 : sUnitB[from];
        int     cj = from < 0 ? 0 : sUnitJ[from];
        __syncwarp();
        if (cb >= 0 && cj + 1 < ntile_blk) { /* the next 64 keys of the same block */
            for (int t = lane; t < TT; t += 32) sFlag[to][t] = sFlag[from][t];
            if (lane == 0) sUnitB[to] = cb, sUnitJ[to] = cj + 1;
            return cb;
        }
        if (!p.sparse) {
            int64_t u = cb + 1;
            if (u * KT > sq.past + i0 + nvalid - 1) u = UNIT_DONE;
            for (int t = lane; t < TT; t += 32) sFlag[to][t] = u != UNIT_DONE && t < nvalid && u * KT <= sPos[t];
            if (lane == 0) sUnitB[to] = u, sUnitJ[to] = 0;
            return u;
        }
        int64_t cand[ROWS / 32 > 0 ? (ROWS + 31) / 32 : 1];
        int64_t best = UNIT_DONE;
#pragma unroll
        for (int x = 0; x < (ROWS + 31) / 32; x++) {
            int t   = lane + 32 * x;
            cand[x] = UNIT_DONE;
            if (t < TT && t < nvalid && sCur[t] < p.K) {
                int64_t b = p.sel_cache ? sSel[t * p.K + sCur[t]] : p.sel[g * p.ss0 + (sq.q0 + i0 + t) * p.ss1 + sCur[t]];
                if (b >= 0 && b < nb && b * BS <= sPos[t]) cand[x] = b;
            }
            best = cand[x] < best ? cand[x] : best;
        }
        for (int off = 16; off > 0; off /= 2) {
            int64_t o = __shfl_xor_sync(0xffffffffu, best, off);
            best      = o < best ? o : best;
        }
#pragma unroll
        for (int x = 0; x < (ROWS + 31) / 32; x++) {
            int t = lane + 32 * x;
            if (t < TT) {
                int f       = best != UNIT_DONE && cand[x] == best;
                sFlag[to][t] = (unsigned char)f;
                if (f) sCur[t]++;
            }
        }
        if (lane == 0) sUnitB[to] = best, sUnitJ[to] = 0;
        return best;
    };
    /* warp 0: the next unit this block owns (every Z-th of the walk) */
    int64_t ucount = 0;
    auto next_owned = [&](int from, int to) {
        int64_t b = next_unit(from, to);
        while (b != UNIT_DONE) {
            if (ucount++ % Z == z) break;
            b = next_unit(to, to);
        }
        __syncwarp();
    };
    /* stages the K and V rows of a unit (rows past the block or the sequence are zeros) */
    auto load = [&](int st) {
        const int64_t key0 = sUnitB[st] * BS + (int64_t)sUnitJ[st] * KT;
        int64_t       kend = sUnitB[st] * BS + BS;
        kend               = kend < sq.nk ? kend : sq.nk;
        T *dk = sK + st * KT * PITCH, *dv = sV + st * KT * PITCH;
        for (int c = tid; c < KT * DC; c += NT) {
            int     r = c / DC, cc = c % DC;
            int64_t key = key0 + r;
            int     ok  = key < kend;
            cp_async16(smem_u32(dk + r * PITCH + cc * 8), ok ? (const void *)(kbase + key * p.ks0 + cc * 8) : p.k, ok ? 16 : 0);
            cp_async16(smem_u32(dv + r * PITCH + cc * 8), ok ? (const void *)(vbase + key * p.vs0 + cc * 8) : p.v, ok ? 16 : 0);
        }
        cp_async_commit();
    };

    if (warp == 0) next_owned(-1, 0);
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ldsm_x4(smem_u32(sQ + (warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * PITCH + kk * 16 + (lane / 16) * 8), qa[kk][0],
                qa[kk][1], qa[kk][2], qa[kk][3]);
    if (sUnitB[0] != UNIT_DONE) load(0);

    const int ra = warp * 16 + lane / 4, rb = ra + 8, ta = ra / G, tb = rb / G;
    const int t_first = warp * 16 / G, t_last = (warp * 16 + 15) / G;
    float     O[D / 8][4];
#pragma unroll
    for (int x = 0; x < D / 8; x++) O[x][0] = O[x][1] = O[x][2] = O[x][3] = 0.f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;
    float lse2_a = 0.f, di_a = 0.f, lse2_b = 0.f, di_b = 0.f; /* BWD: the rows' LSE (log2 units), Di */
    if constexpr (BWD) {
        const float *ld = (const float *)p.ld;
        const int64_t xa = ((sq.q0 + i0 + ta) * p.hq + g * G + ra % G) * 2, xb = ((sq.q0 + i0 + tb) * p.hq + g * G + rb % G) * 2;
        if (ta < nvalid) lse2_a = ld[xa], di_a = ld[xa + 1];
        if (tb < nvalid) lse2_b = ld[xb], di_b = ld[xb + 1];
    }

    for (int st = 0;; st ^= 1) {
        const int64_t ub = sUnitB[st];
        if (ub == UNIT_DONE) break;
        if (warp == 0) next_owned(st, st ^ 1);
        __syncthreads();
        if (sUnitB[st ^ 1] != UNIT_DONE) {
            load(st ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        int active = 0;
        for (int t = t_first; t <= t_last; t++) active |= sFlag[st][t];
        if (active) {
            const T      *kt = sK + st * KT * PITCH, *vt = sV + st * KT * PITCH;
            const int64_t key0 = ub * BS + (int64_t)sUnitJ[st] * KT, bend = ub * BS + BS;
            const int     fa = sFlag[st][ta], fb = sFlag[st][tb];
            const int64_t lim_a = fa ? (sPos[ta] + 1 < bend ? sPos[ta] + 1 : bend) : key0; /* keys < lim are seen */
            const int64_t lim_b = fb ? (sPos[tb] + 1 < bend ? sPos[tb] + 1 : bend) : key0;
            float         S[8][4];
#pragma unroll
            for (int nt = 0; nt < 8; nt++) S[nt][0] = S[nt][1] = S[nt][2] = S[nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
                for (int np = 0; np < 4; np++) {
                    uint32_t b0, b1, b2, b3;
                    ldsm_x4(smem_u32(kt + (np * 16 + (lane / 16) * 8 + lane % 8) * PITCH + kk * 16 + ((lane / 8) % 2) * 8), b0, b1,
                            b2, b3);
                    mma16816<T>(S[2 * np], qa[kk], b0, b1);
                    mma16816<T>(S[2 * np + 1], qa[kk], b2, b3);
                }
            float mxa = -INFINITY, mxb = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int64_t kp = key0 + nt * 8 + 2 * (lane % 4) + (e & 1);
                    float   z  = kp < (e < 2 ? lim_a : lim_b) ? S[nt][e] * p.sl2 : -INFINITY;
                    S[nt][e]   = z;
                    if (e < 2) mxa = fmaxf(mxa, z);
                    else mxb = fmaxf(mxb, z);
                }
            if constexpr (BWD) {
                float dP[8][4];
#pragma unroll
                for (int nt = 0; nt < 8; nt++) dP[nt][0] = dP[nt][1] = dP[nt][2] = dP[nt][3] = 0.f;
                mma_abt_16x64<T, D>(dP, sdO + warp * 16 * PITCH, vt, PITCH, lane);
#pragma unroll
                for (int nt = 0; nt < 8; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const float z  = S[nt][e];
                        const float pr = z == -INFINITY ? 0.f : fast_exp2(z - (e < 2 ? lse2_a : lse2_b));
                        S[nt][e]       = pr * (dP[nt][e] - (e < 2 ? di_a : di_b)); /* dS */
                    }
                mma_pb_16x64<T, D>(O, S, kt, PITCH, lane); /* dQ += dS K */
            } else {
            float ca, cb;
            online_softmax_unit(reinterpret_cast<float(&)[32]>(S), mxa, mxb, m_a, m_b, l_a, l_b, ca, cb);
#pragma unroll
            for (int x = 0; x < D / 8; x++) O[x][0] *= ca, O[x][1] *= ca, O[x][2] *= cb, O[x][3] *= cb;
            mma_pb_16x64<T, D>(O, S, vt, PITCH, lane); /* O += P V */
            } /* forward */
        }
        __syncthreads();
    }

    if constexpr (BWD) { /* dQ = scale * sum dS K */
        const float sc = (float)p.scale;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int r = half ? rb : ra, t = r / G;
            if (t >= nvalid) continue;
            const int64_t token = sq.q0 + i0 + t, h = g * G + r % G;
            const int64_t ob    = token * p.dq.s0 + h * p.dq.s1 + 2 * (lane % 4);
#pragma unroll
            for (int x = 0; x < D / 8; x++) {
                store_any_f(p.dq.data, p.dq.dtype, ob + x * 8, O[x][2 * half] * sc);
                store_any_f(p.dq.data, p.dq.dtype, ob + x * 8 + 1, O[x][2 * half + 1] * sc);
            }
        }
        return;
    }

    /* ---- split: the unnormalised partials, combined by attn_combine ---- */
    if (Z > 1) {
        l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
        l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
        const int64_t base = ((tile * p.hkv + g) * Z + z) * ROWS;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int r = half ? rb : ra;
            float    *po = p.part_o + (base + r) * D + 2 * (lane % 4);
#pragma unroll
            for (int x = 0; x < D / 8; x++) po[x * 8] = O[x][2 * half], po[x * 8 + 1] = O[x][2 * half + 1];
            if (lane % 4 == 0) p.part_ml[(base + r) * 2] = half ? m_b : m_a, p.part_ml[(base + r) * 2 + 1] = half ? l_b : l_a;
        }
        return;
    }

    store_out_rows<D>(p.out, p.lse, reinterpret_cast<const float(&)[D / 2]>(O), m_a, m_b, l_a, l_b, ra, rb, G, nvalid,
                      sq.q0 + i0, g, lane);
}

/* Merges the Z partials of every row of a split attn_mma launch (in z order: deterministic). One
 * block per (tile, KV head, row), threads over D. */
__global__ void attn_combine(struct attn_params p, int rows_per_tile, int Z) {
    const int64_t idx = blockIdx.x, r = idx % rows_per_tile, tg = idx / rows_per_tile, tile = tg / p.hkv, g = tg % p.hkv;
    const int     G = (int)p.G, TT = rows_per_tile / G;
    const int     s = seq_of_tile(p.seqs, p.n_seqs, tile);
    const struct dseq sq = p.seqs[s];
    const int64_t t = (tile - sq.tile0) * TT + r / G;
    if (t >= sq.nq) return;
    const int64_t token = sq.q0 + t, h = g * G + r % G;
    float         m = -INFINITY, l = 0.f;
    for (int z = 0; z < Z; z++) {
        const float *ml = p.part_ml + ((tg * Z + z) * rows_per_tile + r) * 2;
        m               = fmaxf(m, ml[0]);
    }
    const float base = m == -INFINITY ? 0.f : m;
    for (int z = 0; z < Z; z++) {
        const float *ml = p.part_ml + ((tg * Z + z) * rows_per_tile + r) * 2;
        l += ml[1] * fast_exp2(ml[0] - base);
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) {
        float o = 0.f;
        for (int z = 0; z < Z; z++) {
            const int64_t row = (tg * Z + z) * rows_per_tile + r;
            o += p.part_o[row * p.D + d] * fast_exp2(p.part_ml[row * 2] - base);
        }
        store_any_f(p.out.data, p.out.dtype, token * p.out.s0 + h * p.out.s1 + d, o * inv);
    }
    if (p.lse.data && threadIdx.x == 0)
        store_any(p.lse.data, p.lse.dtype, token * p.lse.s0 + h, l > 0.f ? ((double)m + log2((double)l)) * 0.6931471805599453 : -(double)INFINITY);
}

/* ---- dispatch ---- */

template <typename T, int D, int NW, int BWD>
static enum ifl_status launch_mma(struct ifl_ctx *ctx, struct attn_params &p, int z) {
    struct cuda_state *cs   = cuda_of(ctx);
    const int64_t      tt   = NW * 16 / p.G;
    p.sel_cache             = p.sparse && tt * p.K * 4 <= 16384;
    const size_t       smem = (size_t)((1 + BWD) * NW * 16 + 4 * 64) * (D + 8) * sizeof(T) + (p.sel_cache ? (size_t)(tt * p.K) * 4 : 0);
    CU_TRY(ctx, cudaFuncSetAttribute(attn_mma<T, D, NW, BWD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)p.n_tiles, (unsigned)p.hkv, (unsigned)z);
    attn_mma<T, D, NW, BWD><<<grid, NW * 32, smem, cs->stream>>>(p);
    CU_LAUNCHED(ctx);
    if (z > 1) {
        attn_combine<<<(unsigned)(p.n_tiles * p.hkv * NW * 16), 128, 0, cs->stream>>>(p, NW * 16, z);
        CU_LAUNCHED(ctx);
    }
    return IFL_STATUS_OK;
}

template <int BWD>
static enum ifl_status launch_mma_any(struct ifl_ctx *ctx, struct attn_params &p, enum ifl_dtype dt, int nw, int z) {
    if (dt == IFL_DTYPE_BF16) {
        if (p.D == 64) return nw == 8 ? launch_mma<__nv_bfloat16, 64, 8, BWD>(ctx, p, z) : launch_mma<__nv_bfloat16, 64, 4, BWD>(ctx, p, z);
        return nw == 8 ? launch_mma<__nv_bfloat16, 128, 8, BWD>(ctx, p, z) : launch_mma<__nv_bfloat16, 128, 4, BWD>(ctx, p, z);
    }
    if (p.D == 64) return nw == 8 ? launch_mma<__half, 64, 8, BWD>(ctx, p, z) : launch_mma<__half, 64, 4, BWD>(ctx, p, z);
    return nw == 8 ? launch_mma<__half, 128, 8, BWD>(ctx, p, z) : launch_mma<__half, 128, 4, BWD>(ctx, p, z);
}

template <int BWD> static enum ifl_status launch_generic(struct ifl_ctx *ctx, struct attn_params &p, enum ifl_dtype dt) {
    struct cuda_state *cs     = cuda_of(ctx);
    int64_t            blocks = (p.rows * p.hq + 3) / 4;
    if (blocks > (int64_t)cs->n_sm * 64) blocks = (int64_t)cs->n_sm * 64;
    switch (dt) {
    case IFL_DTYPE_F64: attn_generic<double, BWD><<<(unsigned)blocks, 128, 0, cs->stream>>>(p); break;
    case IFL_DTYPE_F32: attn_generic<float, BWD><<<(unsigned)blocks, 128, 0, cs->stream>>>(p); break;
    case IFL_DTYPE_F16: attn_generic<__half, BWD><<<(unsigned)blocks, 128, 0, cs->stream>>>(p); break;
    default: attn_generic<__nv_bfloat16, BWD><<<(unsigned)blocks, 128, 0, cs->stream>>>(p); break;
    }
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? IFL_STATUS_OK : cuda_fail(ctx, e, "attn_generic launch");
}

int cuda_rows_aligned(const struct ifl_tensor *t) {
    size_t es = ifl_dtype_size(t->dtype);
    return ((uintptr_t)t->data % 16) == 0 && (t->stride[0] * (int64_t)es) % 16 == 0 && (t->stride[1] * (int64_t)es) % 16 == 0;
}

int cuda_mma_operands(const struct cuda_state *cs, const struct ifl__problem *pb, int bwd) {
    const enum ifl_dtype dt = pb->q->dtype;
    return !cs->force_generic && (dt == IFL_DTYPE_BF16 || dt == IFL_DTYPE_F16) && (pb->d == 64 || pb->d == 128) &&
           cuda_rows_aligned(pb->q) && cuda_rows_aligned(pb->k) && cuda_rows_aligned(pb->v) &&
           (!bwd || (pb->dout->dtype == dt && cuda_rows_aligned(pb->dout)));
}

int64_t cuda_attn_max_units(const struct ifl__problem *pb, int sparse) {
    int64_t max_units = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const int64_t u = sparse ? pb->sel->shape[2] * ifl__ceil_div(pb->cfg.block_size, 64) : ifl__ceil_div(pb->seqs[s].nk, 64);
        max_units       = u > max_units ? u : max_units;
    }
    return max_units;
}

/* attn_mma also needs G dividing 16 or a multiple of 16 (at most the tile's nw warps of 16 rows). */
static int attn_fast(const struct cuda_state *cs, const struct ifl__problem *pb, int nw, int bwd) {
    return cuda_mma_operands(cs, pb, bwd) && (16 % pb->g == 0 || (pb->g % 16 == 0 && pb->g <= 16 * nw));
}

/* The parameters common to the forward and the dQ pass; uploads the sequence table (tiles of tt
 * tokens) into *d_seqs. Returns OK with p->rows 0 when there is nothing to do. */
static enum ifl_status attn_setup(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse, int64_t tt,
                                  struct attn_params *p, void **d_seqs) {
    memset(p, 0, sizeof *p);
    *d_seqs = NULL;
    for (int64_t s = 0; s < pb->n_seqs; s++) p->rows += pb->seqs[s].nq;
    if (p->rows == 0) return IFL_STATUS_OK;
    p->q = pb->q->data, p->k = pb->k->data, p->v = pb->v->data;
    p->qs0 = pb->q->stride[0], p->qs1 = pb->q->stride[1], p->ks0 = pb->k->stride[0], p->ks1 = pb->k->stride[1];
    p->vs0 = pb->v->stride[0], p->vs1 = pb->v->stride[1];
    if (sparse) p->sel = (const int32_t *)pb->sel->data, p->ss0 = pb->sel->stride[0], p->ss1 = pb->sel->stride[1], p->K = pb->sel->shape[2];
    p->hq = pb->hq, p->hkv = pb->hkv, p->G = pb->g, p->D = pb->d, p->bs = pb->cfg.block_size;
    p->scale = pb->cfg.scale, p->sl2 = (float)(pb->cfg.scale * 1.4426950408889634), p->sparse = sparse;
    enum ifl_status st = cuda_seqs_upload(ctx, pb, tt, d_seqs, &p->n_tiles, NULL);
    p->seqs = (const struct dseq *)*d_seqs, p->n_seqs = (int)pb->n_seqs;
    if (!st && p->n_tiles > 0x7fffffff) st = IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED, "%s: too many query tiles for one launch", pb->fn);
    return st;
}

enum ifl_status cuda_attn_run(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse) {
    struct cuda_state *cs = cuda_of(ctx);
    struct attn_params p;
    void              *d    = NULL;
    const int          nw   = cs->attn_warps == 8 ? 8 : 4;
    const int          fast = attn_fast(cs, pb, nw, 0);
    int                ran  = 0; /* the wgmma kernel (cuda_attn_wg.cu) takes what suits it */
    enum ifl_status    st   = fast ? cuda_attn_wg_try(ctx, pb, sparse, &ran) : IFL_STATUS_OK;
    if (st || ran) return st;
    st = attn_setup(ctx, pb, sparse, fast ? (int64_t)nw * 16 / pb->g : 0, &p, &d);
    if (st || p.rows == 0) {
        cuda_scratch_free(ctx, d);
        return st;
    }
    p.out = dt_of(pb->out);
    p.lse = dt_of(pb->lse);
    if (fast) {
        /* too few tiles to fill the device (decode, short chunks): split every tile's units over z blocks */
        int     z = 1;
        void   *po = NULL, *pml = NULL;
        const int64_t max_units = cuda_attn_max_units(pb, sparse);
        if (p.n_tiles * pb->hkv * 2 <= cs->n_sm && max_units >= 8) {
            int64_t zz = 2 * cs->n_sm / (p.n_tiles * pb->hkv), cap = ifl__ceil_div(max_units, 2);
            zz         = zz < cap ? zz : cap;
            if (zz >= 2) z = (int)zz;
        }
        if (z > 1) {
            const int64_t rr = p.n_tiles * pb->hkv * z * nw * 16;
            if (!(st = cuda_scratch(ctx, (size_t)(rr * pb->d) * sizeof(float), &po)))
                st = cuda_scratch(ctx, (size_t)(rr * 2) * sizeof(float), &pml);
            p.part_o = (float *)po, p.part_ml = (float *)pml;
        }
        if (!st) st = launch_mma_any<0>(ctx, p, pb->q->dtype, nw, z);
        cuda_scratch_free(ctx, po);
        cuda_scratch_free(ctx, pml);
    } else {
        st = launch_generic<0>(ctx, p, pb->q->dtype);
    }
    cuda_scratch_free(ctx, d);
    return st;
}

enum ifl_status cuda_attn_dq(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse, const void *ld) {
    struct cuda_state *cs = cuda_of(ctx);
    struct attn_params p;
    void              *d    = NULL;
    const int          nw   = cs->attn_warps == 8 ? 8 : 4;
    const int          fast = attn_fast(cs, pb, nw, 1);
    enum ifl_status    st   = attn_setup(ctx, pb, sparse, fast ? (int64_t)nw * 16 / pb->g : 0, &p, &d);
    if (!st && p.rows > 0) {
        p.dout = dt_of(pb->dout), p.dq = dt_of(pb->dq), p.ld = ld;
        st     = fast ? launch_mma_any<1>(ctx, p, pb->q->dtype, nw, 1) : launch_generic<1>(ctx, p, pb->q->dtype);
    }
    cuda_scratch_free(ctx, d);
    return st;
}
