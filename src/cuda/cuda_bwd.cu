/* SPDX-License-Identifier: MIT
 *
 * cuda_bwd.cu -- the backward of stage 2 and of dense causal attention (spec §4.2): dQ, dK, dV from
 * dO, the forward's out and LSE and (sparse) its selection, held fixed. Bitwise repeatable: no
 * atomics touch a gradient, every sum runs in a fixed order. Three steps on the context's stream:
 *
 *   1. bwd_prep: per (token, query head) the LSE in log2 units and Di = <dO, O> (FlashAttention's
 *      D), in the accumulation type.
 *   2. (sparse) the transposed index: for each (KV head, block) the query tokens whose selection
 *      holds it and that can see it, ascending (CSR). Counted with integer atomics (the counts do not
 *      depend on their order), scanned, filled, and each segment sorted (cub), so its order is fixed.
 *   3. dQ on the query side (cuda_attn.cu: the forward's walk of each query tile over its blocks)
 *      and dK, dV on the key side: per 64-key tile and KV head, the tokens that see it in chunks of
 *      64/G tokens x G heads = 64 query rows:
 *        S^T = K Q^T, P^T = 2^(S^T - lse2) (0 where masked), dP^T = V dO^T, dS^T = P^T (dP^T - Di),
 *        dV += P^T dO, dK += dS^T Q (P and dS rounded to the storage type, f32 accumulation),
 *      by mma.sync for bf16/f16, D 64/128, G <= 64 (bwd_kv_mma); one warp per (key, KV head) for
 *      every other case (bwd_kv_generic). The scores are recomputed on both sides (7 matrix
 *      products per block and query row instead of the 5 of an atomic dQ): that is the price of
 *      determinism.
 *
 * Load balance on the key side: a tile's tokens can be all of the sequence's (the init block of
 * sparse attention, the first tiles of dense), so the host cuts each tile's chunks into work items
 * of at most `cap` chunks (a quarter of a resident block's fair share), launches the cut ones first,
 * and the items of a tile cut in several write f32 partials that bwd_kv_reduce adds in item order.
 */
#include "cuda_common.cuh"

#include <cub/device/device_scan.cuh>
#include <cub/device/device_segmented_sort.cuh>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KV_TILE 64 /* keys per key-side tile; query rows per chunk */

/* ---- step 1: LSE (log2 units) and Di ---- */

/* One warp per (token, query head): ld[(token*hq + h)*2 + {0, 1}] = {lse * log2(e), <dO, O>}. */
template <typename A>
__global__ void bwd_prep(struct dtensor out, struct dtensor dout, struct dtensor lse, int64_t tq, int64_t hq, int64_t D,
                         A *ld) {
    const int lane = threadIdx.x % 32;
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; r < tq * hq;
         r += (int64_t)gridDim.x * blockDim.x / 32) {
        const int64_t token = r / hq, h = r % hq;
        A             di    = 0;
        for (int64_t d = lane; d < D; d += 32)
            di += (A)load_any(out.data, out.dtype, token * out.s0 + h * out.s1 + d) *
                  (A)load_any(dout.data, dout.dtype, token * dout.s0 + h * dout.s1 + d);
        for (int off = 16; off > 0; off /= 2) di += __shfl_xor_sync(0xffffffffu, di, off);
        if (lane == 0) {
            ld[r * 2]     = (A)load_any(lse.data, lse.dtype, token * lse.s0 + h) * (A)1.4426950408889634;
            ld[r * 2 + 1] = di;
        }
    }
}

/* ---- step 2: the transposed index ---- */

struct idx_params {
    const int32_t     *sel;
    int64_t            ss0, ss1, K, bs, rows, hkv, nbt; /* nbt: blocks of all sequences */
    const struct dseq *seqs;
    int                n_seqs;
};

/* One thread per (KV head, query row): the visible blocks of its selection row. fill = 0 counts
 * them into cnt[g*nbt + b0 + b]; fill = 1 writes the token at off[..] + cur[..]++. */
__global__ void idx_walk(struct idx_params p, unsigned long long *cnt, const unsigned long long *off, int32_t *list, int fill) {
    const int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= p.rows * p.hkv) return;
    const int64_t g = x / p.rows, r = x % p.rows;
    const int     s = seq_of_row(p.seqs, p.n_seqs, r);
    const struct dseq sq = p.seqs[s];
    const int64_t i = r - sq.cq, pos = sq.past + i;
    const int32_t *row = p.sel + g * p.ss0 + (sq.q0 + i) * p.ss1;
    for (int64_t c = 0; c < p.K; c++) {
        const int64_t b = row[c];
        if (b < 0 || b * p.bs > pos) break; /* validated: ascending, inside the sequence */
        const int64_t br = g * p.nbt + sq.b0 + b;
        if (fill) list[off[br] + atomicAdd(&cnt[br], 1ull)] = (int32_t)i;
        else atomicAdd(&cnt[br], 1ull);
    }
}

/* ---- step 3: the key side ---- */

struct kv_params {
    const void *q, *k, *v;
    int64_t     qs0, qs1, ks0, ks1, vs0, vs1;
    struct dtensor dout, dk, dv;
    const void *ld;                  /* step 1's pairs, in the accumulation type */
    const int32_t *list;             /* sparse: step 2's tokens */
    const unsigned long long *off;   /* sparse: [hkv*nbt + 1] segment starts */
    const struct dseq *seqs;
    int         n_seqs;
    int64_t     hq, hkv, G, D, bs, nbt, nk_rows;
    double      scale;
    int         sparse;
    const int4 *items;               /* bwd_kv_mma: {key tile, KV head, first chunk, last chunk + 1} */
    const int64_t *item_slot;        /* partial slot of each item, -1: the tile's only item */
    float      *part;                /* [slots][2][KV_TILE][D] partial dK, dV */
};

/* The tokens that may see key `key` of sequence sq (KV head g): those whose selection holds its
 * block (sparse), or those at or after it (dense); n of them, token j being lst[j] (sparse) or
 * first + j (dense). For the first key of a 64-key tile (inside one block), the tile's tokens. */
struct tok_list {
    const int32_t *lst;
    int64_t        first, n;
};
__device__ __forceinline__ struct tok_list tokens_of(const struct kv_params &p, const struct dseq &sq, int64_t g, int64_t key) {
    struct tok_list t;
    if (p.sparse) {
        const int64_t br = g * p.nbt + sq.b0 + key / p.bs;
        t.lst = p.list + p.off[br], t.first = 0, t.n = (int64_t)(p.off[br + 1] - p.off[br]);
    } else {
        t.lst = NULL, t.first = key > sq.past ? key - sq.past : 0;
        t.n   = sq.nq > t.first ? sq.nq - t.first : 0;
    }
    return t;
}

template <typename T, int D>
__global__ void __launch_bounds__(128) bwd_kv_mma(struct kv_params p) {
    constexpr int KT = KV_TILE, QR = KV_TILE, PITCH = D + 8, DC = D / 8, NT = 128;
    extern __shared__ __align__(16) unsigned char smem[];
    T *sK = (T *)smem;        /* [KT][PITCH] */
    T *sV = sK + KT * PITCH;  /* [KT][PITCH] */
    T *sQ = sV + KT * PITCH;  /* [2][QR][PITCH] */
    T *sO = sQ + 2 * QR * PITCH; /* [2][QR][PITCH]: dO */
    __shared__ float   sL[2][QR], sDi[2][QR];
    __shared__ int64_t sPos[2][QR]; /* the row's position, -1 for padding rows */
    const int  tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int4 it = p.items[blockIdx.x];
    const int64_t kt = it.x, g = it.y;
    const int  G = (int)p.G, TT = QR / G, RU = TT * G; /* tokens per chunk, rows used */
    const int  s = seq_find<&dseq::kt0>(p.seqs, p.n_seqs, kt);
    const struct dseq sq = p.seqs[s];
    const int64_t key0 = (kt - sq.kt0) * KT, kend = key0 + KT < sq.nk ? key0 + KT : sq.nk;
    const struct tok_list tl = tokens_of(p, sq, g, key0);
    const float sl2 = (float)(p.scale * 1.4426950408889634);
    const T *kb = (const T *)p.k + sq.k0 * p.ks0 + g * p.ks1, *vb = (const T *)p.v + sq.k0 * p.vs0 + g * p.vs1;

    for (int c = tid; c < KT * DC; c += NT) {
        const int     r = c / DC, cc = c % DC;
        const int64_t key = key0 + r;
        const int     ok  = key < kend;
        cp_async16(smem_u32(sK + r * PITCH + cc * 8), ok ? (const void *)(kb + key * p.ks0 + cc * 8) : p.k, ok ? 16 : 0);
        cp_async16(smem_u32(sV + r * PITCH + cc * 8), ok ? (const void *)(vb + key * p.vs0 + cc * 8) : p.v, ok ? 16 : 0);
    }
    cp_async_commit();
    auto load_chunk = [&](int64_t c, int buf) {
        T *dq_ = sQ + buf * QR * PITCH, *do_ = sO + buf * QR * PITCH;
        for (int x = tid; x < QR * DC; x += NT) {
            const int     r = x / DC, cc = x % DC;
            const int64_t j = c * TT + r / G;
            const int     ok = r < RU && j < tl.n;
            const int64_t token = sq.q0 + (ok ? (tl.lst ? tl.lst[j] : tl.first + j) : 0), h = g * G + r % G;
            cp_async16(smem_u32(dq_ + r * PITCH + cc * 8), ok ? (const void *)((const T *)p.q + token * p.qs0 + h * p.qs1 + cc * 8) : p.q,
                       ok ? 16 : 0);
            cp_async16(smem_u32(do_ + r * PITCH + cc * 8),
                       ok ? (const void *)((const T *)p.dout.data + token * p.dout.s0 + h * p.dout.s1 + cc * 8) : p.dout.data, ok ? 16 : 0);
        }
        for (int r = tid; r < QR; r += NT) {
            const int64_t j  = c * TT + r / G;
            const int     ok = r < RU && j < tl.n;
            const int64_t i  = ok ? (tl.lst ? tl.lst[j] : tl.first + j) : 0;
            const float  *ld = (const float *)p.ld + ((sq.q0 + i) * p.hq + g * G + r % G) * 2;
            sPos[buf][r] = ok ? sq.past + i : -1;
            sL[buf][r]   = ok ? ld[0] : 0.f;
            sDi[buf][r]  = ok ? ld[1] : 0.f;
        }
        cp_async_commit();
    };

    float dK[D / 8][4], dV[D / 8][4];
#pragma unroll
    for (int x = 0; x < D / 8; x++)
#pragma unroll
        for (int e = 0; e < 4; e++) dK[x][e] = dV[x][e] = 0.f;
    const int64_t c_end = it.w;
    if (it.z < c_end) load_chunk(it.z, 0);
    const int64_t kA = key0 + warp * 16 + lane / 4, kB = kA + 8; /* the keys (positions) of this thread's rows */
    for (int64_t c = it.z; c < c_end; c++) {
        const int buf = (int)((c - it.z) & 1);
        if (c + 1 < c_end) {
            load_chunk(c + 1, buf ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const T *q_ = sQ + buf * QR * PITCH, *o_ = sO + buf * QR * PITCH;
        float    S[8][4], dP[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) S[nt][e] = dP[nt][e] = 0.f;
        mma_abt_16x64<T, D>(S, sK + warp * 16 * PITCH, q_, PITCH, lane);  /* S^T = K Q^T */
        mma_abt_16x64<T, D>(dP, sV + warp * 16 * PITCH, o_, PITCH, lane); /* dP^T = V dO^T */
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int     r  = nt * 8 + 2 * (lane % 4) + (e & 1);
                const int64_t kp = e < 2 ? kA : kB;
                const float   pr = kp < kend && kp <= sPos[buf][r] ? fast_exp2(S[nt][e] * sl2 - sL[buf][r]) : 0.f;
                S[nt][e]         = pr;
                dP[nt][e]        = pr * (dP[nt][e] - sDi[buf][r]); /* dS */
            }
        mma_pb_16x64<T, D>(dV, S, o_, PITCH, lane);  /* dV += P^T dO */
        mma_pb_16x64<T, D>(dK, dP, q_, PITCH, lane); /* dK += dS^T Q */
        __syncthreads();
    }
    cp_async_wait<0>();

    const float   sc   = (float)p.scale;
    const int64_t slot = p.item_slot[blockIdx.x];
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int64_t key = half ? kB : kA;
        const int     col = 2 * (lane % 4);
        if (slot >= 0) { /* a partial of a tile cut in several items: every row, f32 */
            float *pk = p.part + ((slot * 2) * KT + (key - key0)) * D + col, *pv = pk + KT * D;
#pragma unroll
            for (int x = 0; x < D / 8; x++) {
                pk[x * 8] = dK[x][2 * half] * sc, pk[x * 8 + 1] = dK[x][2 * half + 1] * sc;
                pv[x * 8] = dV[x][2 * half], pv[x * 8 + 1] = dV[x][2 * half + 1];
            }
            continue;
        }
        if (key >= kend) continue;
        const int64_t row = sq.k0 + key, ok_ = row * p.dk.s0 + g * p.dk.s1 + col, ov = row * p.dv.s0 + g * p.dv.s1 + col;
#pragma unroll
        for (int x = 0; x < D / 8; x++) {
            store_any_f(p.dk.data, p.dk.dtype, ok_ + x * 8, dK[x][2 * half] * sc);
            store_any_f(p.dk.data, p.dk.dtype, ok_ + x * 8 + 1, dK[x][2 * half + 1] * sc);
            store_any_f(p.dv.data, p.dv.dtype, ov + x * 8, dV[x][2 * half]);
            store_any_f(p.dv.data, p.dv.dtype, ov + x * 8 + 1, dV[x][2 * half + 1]);
        }
    }
}

/* Sums the partials of each tile cut in several items, in item order. One block per such tile:
 * cut[t] = {key tile, KV head, items, first slot}. */
__global__ void bwd_kv_reduce(struct kv_params p, const int4 *cut) {
    const int4    c  = cut[blockIdx.x];
    const int     s  = seq_find<&dseq::kt0>(p.seqs, p.n_seqs, c.x);
    const struct dseq sq = p.seqs[s];
    const int64_t key0 = (c.x - sq.kt0) * KV_TILE;
    for (int64_t e = threadIdx.x; e < KV_TILE * p.D; e += blockDim.x) {
        const int64_t r = e / p.D, d = e % p.D;
        if (key0 + r >= sq.nk) break;
        float gk = 0.f, gv = 0.f;
        for (int i = 0; i < c.z; i++) {
            const float *pk = p.part + ((int64_t)(c.w + i) * 2) * KV_TILE * p.D;
            gk += pk[e], gv += pk[KV_TILE * p.D + e];
        }
        const int64_t row = sq.k0 + key0 + r;
        store_any_f(p.dk.data, p.dk.dtype, row * p.dk.s0 + c.y * p.dk.s1 + d, gk);
        store_any_f(p.dv.data, p.dv.dtype, row * p.dv.s0 + c.y * p.dv.s1 + d, gv);
    }
}

/* One warp per (key, KV head), lanes over D: every query row of the group of every token that sees
 * the key, in token order. f32 (f64 for f64 inputs) throughout. */
template <typename T>
__global__ void __launch_bounds__(128) bwd_kv_generic(struct kv_params p) {
    typedef typename acc_of<T>::type A;
    constexpr int NX = IFL_MAX_HEAD_DIM / 32;
    const int     lane = threadIdx.x % 32;
    const A       sl2  = (A)p.scale * (A)1.4426950408889634;
    for (int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; w < p.nk_rows * p.hkv;
         w += (int64_t)gridDim.x * blockDim.x / 32) {
        const int64_t kr = w / p.hkv, g = w % p.hkv;
        const int     s  = seq_find<&dseq::k0>(p.seqs, p.n_seqs, kr);
        const struct dseq sq = p.seqs[s];
        const int64_t key = kr - sq.k0;
        A             kx[NX], vx[NX], gk[NX], gv[NX];
#pragma unroll
        for (int x = 0; x < NX; x++) {
            const int64_t d = lane + 32 * x;
            kx[x] = d < p.D ? to_acc(((const T *)p.k)[kr * p.ks0 + g * p.ks1 + d]) : (A)0;
            vx[x] = d < p.D ? to_acc(((const T *)p.v)[kr * p.vs0 + g * p.vs1 + d]) : (A)0;
            gk[x] = gv[x] = 0;
        }
        if (key < sq.nk) {
            const struct tok_list tl = tokens_of(p, sq, g, key);
            for (int64_t j = 0; j < tl.n; j++) {
                const int64_t i = tl.lst ? tl.lst[j] : tl.first + j;
                if (key > sq.past + i) continue; /* after the query */
                for (int64_t hh = 0; hh < p.G; hh++) {
                    const int64_t token = sq.q0 + i, h = g * p.G + hh;
                    const T      *qr    = (const T *)p.q + token * p.qs0 + h * p.qs1;
                    A             qx[NX], ox[NX], qk = 0, dp = 0;
#pragma unroll
                    for (int x = 0; x < NX; x++) {
                        const int64_t d = lane + 32 * x;
                        qx[x] = d < p.D ? to_acc(qr[d]) : (A)0;
                        ox[x] = d < p.D ? (A)load_any(p.dout.data, p.dout.dtype, token * p.dout.s0 + h * p.dout.s1 + d) : (A)0;
                        qk += qx[x] * kx[x], dp += ox[x] * vx[x];
                    }
                    for (int off = 16; off > 0; off /= 2) {
                        qk += __shfl_xor_sync(0xffffffffu, qk, off);
                        dp += __shfl_xor_sync(0xffffffffu, dp, off);
                    }
                    const A *ld = (const A *)p.ld + (token * p.hq + h) * 2;
                    const A  pr = exp2(sl2 * qk - ld[0]), ds = pr * (dp - ld[1]);
#pragma unroll
                    for (int x = 0; x < NX; x++) gv[x] += pr * ox[x], gk[x] += ds * qx[x];
                }
            }
        }
#pragma unroll
        for (int x = 0; x < NX; x++) {
            const int64_t d = lane + 32 * x;
            if (d >= p.D) continue;
            store_any(p.dk.data, p.dk.dtype, kr * p.dk.s0 + g * p.dk.s1 + d, (double)((A)p.scale * gk[x]));
            store_any(p.dv.data, p.dv.dtype, kr * p.dv.s0 + g * p.dv.s1 + d, (double)gv[x]);
        }
    }
}

/* ---- the host side ---- */

/* The transposed index of pb's selection: *list (tokens) and *off ([hkv*nbt + 1] segment starts,
 * device), *cnt_host ([hkv*nbt] counts, host, malloc'd). */
static enum ifl_status build_index(struct ifl_ctx *ctx, const struct ifl__problem *pb, const struct dseq *d_seqs,
                                   int64_t rows, int64_t nbt, int32_t **list, unsigned long long **off,
                                   unsigned long long **cnt_host) {
    struct cuda_state *cs = cuda_of(ctx);
    const int64_t      nseg = pb->hkv * nbt;
    unsigned long long *cnt = NULL, total = 0;
    int32_t            *raw = NULL;
    void               *tmp = NULL;
    size_t              tmp_bytes = 0, b2 = 0;
    enum ifl_status     st        = IFL_STATUS_OK;
    struct idx_params   ip = {(const int32_t *)pb->sel->data, pb->sel->stride[0], pb->sel->stride[1], pb->sel->shape[2],
                              pb->cfg.block_size, rows, pb->hkv, nbt, d_seqs, (int)pb->n_seqs};
    const unsigned      grid = (unsigned)((rows * pb->hkv + 255) / 256);
    *list = NULL, *off = NULL, *cnt_host = NULL;
    if ((st = cuda_scratch(ctx, (size_t)(nseg + 1) * 8, (void **)&cnt)) || (st = cuda_scratch(ctx, (size_t)(nseg + 1) * 8, (void **)off)))
        goto done;
    CU_GOTO(ctx, cudaMemsetAsync(cnt, 0, (size_t)(nseg + 1) * 8, cs->stream));
    idx_walk<<<grid, 256, 0, cs->stream>>>(ip, cnt, NULL, NULL, 0);
    CU_GOTO(ctx, cudaGetLastError());
    CU_GOTO(ctx, cub::DeviceScan::ExclusiveSum(NULL, tmp_bytes, cnt, *off, nseg + 1, cs->stream));
    if ((st = cuda_scratch(ctx, tmp_bytes, &tmp))) goto done;
    CU_GOTO(ctx, cub::DeviceScan::ExclusiveSum(tmp, tmp_bytes, cnt, *off, nseg + 1, cs->stream));
    cuda_scratch_free(ctx, tmp), tmp = NULL;
    /* the counts go to the host: the key side's work items are cut from them */
    if ((*cnt_host = (unsigned long long *)malloc((size_t)(nseg + 1) * 8)) == NULL) {
        st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
        goto done;
    }
    CU_GOTO(ctx, cudaMemcpyAsync(*cnt_host, cnt, (size_t)nseg * 8, cudaMemcpyDeviceToHost, cs->stream));
    CU_GOTO(ctx, cudaMemcpyAsync(&total, *off + nseg, 8, cudaMemcpyDeviceToHost, cs->stream));
    CU_GOTO(ctx, cudaStreamSynchronize(cs->stream));
    if ((st = cuda_scratch(ctx, (size_t)total * 4, (void **)&raw)) || (st = cuda_scratch(ctx, (size_t)total * 4, (void **)list)))
        goto done;
    CU_GOTO(ctx, cudaMemsetAsync(cnt, 0, (size_t)(nseg + 1) * 8, cs->stream));
    idx_walk<<<grid, 256, 0, cs->stream>>>(ip, cnt, *off, raw, 1);
    CU_GOTO(ctx, cudaGetLastError());
    if (total > 0) {
        CU_GOTO(ctx, cub::DeviceSegmentedSort::SortKeys(NULL, b2, raw, *list, (int64_t)total, nseg, *off, *off + 1, cs->stream));
        if ((st = cuda_scratch(ctx, b2, &tmp))) goto done;
        CU_GOTO(ctx, cub::DeviceSegmentedSort::SortKeys(tmp, b2, raw, *list, (int64_t)total, nseg, *off, *off + 1, cs->stream));
    }
done:
    cuda_scratch_free(ctx, tmp);
    cuda_scratch_free(ctx, raw);
    cuda_scratch_free(ctx, cnt);
    if (st) {
        cuda_scratch_free(ctx, *list), cuda_scratch_free(ctx, *off);
        free(*cnt_host);
        *list = NULL, *off = NULL, *cnt_host = NULL;
    }
    return st;
}

/* A work item of bwd_kv_mma, its chunk count and its partial slot (-1: the tile's only item). */
struct kv_item {
    int4    w;
    int64_t chunks, slot;
};
/* The launch order: the items of cut tiles first (the heaviest work, so it does not finish last),
 * heaviest first; then every other item in tile order, which keeps neighbouring tiles (sharing most
 * of their tokens: the local window, dense attention) in flight together for the L2 cache. Dense
 * tiles come heaviest first in tile order anyway. */
static int launch_order(const void *a, const void *b) {
    const struct kv_item *x = (const struct kv_item *)a, *y = (const struct kv_item *)b;
    const int             cx = x->slot >= 0, cy = y->slot >= 0;
    if (cx != cy) return cx ? -1 : 1;
    if (cx && x->chunks != y->chunks) return x->chunks > y->chunks ? -1 : 1;
    if (x->w.x != y->w.x) return x->w.x < y->w.x ? -1 : 1;
    if (x->w.y != y->w.y) return x->w.y < y->w.y ? -1 : 1;
    return x->w.z < y->w.z ? -1 : x->w.z > y->w.z;
}

/* Cuts every (key tile, KV head) into items of at most cap chunks and launches bwd_kv_mma, then
 * bwd_kv_reduce for the tiles cut in several. */
template <typename T, int D>
static enum ifl_status kv_mma_launch(struct ifl_ctx *ctx, const struct ifl__problem *pb, const struct dseq *seqs,
                                     struct kv_params &p, const unsigned long long *cnt_host) {
    struct cuda_state *cs = cuda_of(ctx);
    const int64_t      TT = KV_TILE / pb->g;
    int64_t            n_tiles = 0, total_chunks = 0, n_items = 0, n_cut = 0, n_slots = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) n_tiles += ifl__ceil_div(pb->seqs[s].nk, KV_TILE);
    int64_t *chunks = (int64_t *)malloc((size_t)(n_tiles * pb->hkv + 1) * sizeof *chunks);
    struct kv_item *items = NULL;
    int4           *cut   = NULL;
    int4           *w_host = NULL;
    int64_t        *slot_host = NULL;
    void           *d_items = NULL, *d_slots = NULL, *d_cut = NULL, *part = NULL;
    enum ifl_status st = IFL_STATUS_OK;
    if (chunks == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
    for (int64_t s = 0; s < pb->n_seqs; s++)
        for (int64_t t = 0; t < ifl__ceil_div(pb->seqs[s].nk, KV_TILE); t++)
            for (int64_t g = 0; g < pb->hkv; g++) {
                int64_t n;
                if (p.sparse) n = (int64_t)cnt_host[g * p.nbt + seqs[s].b0 + t * KV_TILE / pb->cfg.block_size];
                else {
                    int64_t first = t * KV_TILE > pb->seqs[s].past ? t * KV_TILE - pb->seqs[s].past : 0;
                    n             = pb->seqs[s].nq > first ? pb->seqs[s].nq - first : 0;
                }
                chunks[(seqs[s].kt0 + t) * pb->hkv + g] = ifl__ceil_div(n, TT);
                total_chunks += ifl__ceil_div(n, TT);
            }
    /* a quarter of the fair share of a resident block (two per multiprocessor), at least 32 chunks */
    const int64_t cap = total_chunks / (8 * (int64_t)cs->n_sm) > 32 ? total_chunks / (8 * (int64_t)cs->n_sm) : 32;
    for (int64_t x = 0; x < n_tiles * pb->hkv; x++) {
        const int64_t k = chunks[x] > 0 ? ifl__ceil_div(chunks[x], cap) : 1;
        n_items += k;
        if (k > 1) n_cut++, n_slots += k;
    }
    if (n_items > 0x7fffffff || n_tiles > 0x7fffffff || total_chunks > 0x7fffffff) {
        st = IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED, "%s: too many key tiles or query chunks for one launch", pb->fn);
        goto done;
    }
    items     = (struct kv_item *)malloc((size_t)n_items * sizeof *items);
    cut       = (int4 *)malloc((size_t)(n_cut + 1) * sizeof *cut);
    w_host    = (int4 *)malloc((size_t)n_items * sizeof *w_host);
    slot_host = (int64_t *)malloc((size_t)n_items * sizeof *slot_host);
    if (!items || !cut || !w_host || !slot_host) {
        st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
        goto done;
    }
    {
        int64_t ni = 0, nc = 0, ns = 0;
        for (int64_t x = 0; x < n_tiles * pb->hkv; x++) {
            const int64_t k = chunks[x] > 0 ? ifl__ceil_div(chunks[x], cap) : 1, tile = x / pb->hkv, g = x % pb->hkv;
            if (k > 1) cut[nc++] = make_int4((int)tile, (int)g, (int)k, (int)ns);
            for (int64_t i = 0; i < k; i++) {
                const int64_t c0 = i * cap, c1 = c0 + cap < chunks[x] ? c0 + cap : chunks[x];
                items[ni].w      = make_int4((int)tile, (int)g, (int)c0, (int)c1);
                items[ni].chunks = c1 - c0;
                items[ni].slot   = k > 1 ? ns + i : -1;
                ni++;
            }
            if (k > 1) ns += k;
        }
    }
    qsort(items, (size_t)n_items, sizeof *items, launch_order);
    for (int64_t i = 0; i < n_items; i++) w_host[i] = items[i].w, slot_host[i] = items[i].slot;
    if ((st = cuda_upload(ctx, w_host, (size_t)n_items * sizeof *w_host, &d_items)) ||
        (st = cuda_upload(ctx, slot_host, (size_t)n_items * sizeof *slot_host, &d_slots)) ||
        (n_cut > 0 && (st = cuda_upload(ctx, cut, (size_t)n_cut * sizeof *cut, &d_cut))) ||
        (n_slots > 0 && (st = cuda_scratch(ctx, (size_t)n_slots * 2 * KV_TILE * D * sizeof(float), &part))))
        goto done;
    p.items = (const int4 *)d_items, p.item_slot = (const int64_t *)d_slots, p.part = (float *)part;
    {
        const size_t smem = (size_t)6 * KV_TILE * (D + 8) * sizeof(T);
        CU_GOTO(ctx, cudaFuncSetAttribute(bwd_kv_mma<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        bwd_kv_mma<T, D><<<(unsigned)n_items, 128, smem, cs->stream>>>(p);
        CU_GOTO(ctx, cudaGetLastError());
    }
    if (n_cut > 0) {
        bwd_kv_reduce<<<(unsigned)n_cut, 256, 0, cs->stream>>>(p, (const int4 *)d_cut);
        CU_GOTO(ctx, cudaGetLastError());
    }
done:
    cuda_scratch_free(ctx, d_items);
    cuda_scratch_free(ctx, d_slots);
    cuda_scratch_free(ctx, d_cut);
    cuda_scratch_free(ctx, part);
    free(chunks), free(items), free(cut), free(w_host), free(slot_host);
    return st;
}

template <typename T>
static enum ifl_status kv_generic_launch(struct ifl_ctx *ctx, struct kv_params &p) {
    struct cuda_state *cs     = cuda_of(ctx);
    int64_t            blocks = (p.nk_rows * p.hkv + 3) / 4;
    if (blocks > (int64_t)cs->n_sm * 64) blocks = (int64_t)cs->n_sm * 64;
    bwd_kv_generic<T><<<(unsigned)blocks, 128, 0, cs->stream>>>(p);
    CU_LAUNCHED(ctx);
    return IFL_STATUS_OK;
}

enum ifl_status cuda_bwd_run(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse) {
    struct cuda_state *cs = cuda_of(ctx);
    const enum ifl_dtype dt = pb->q->dtype;
    const size_t       acc = dt == IFL_DTYPE_F64 ? sizeof(double) : sizeof(float);
    int64_t            rows = 0, nbt = 0;
    struct dseq       *seqs = NULL;
    void              *d_seqs = NULL, *ld = NULL;
    int32_t           *list = NULL;
    unsigned long long *off = NULL, *cnt_host = NULL;
    enum ifl_status    st = IFL_STATUS_OK;
    for (int64_t s = 0; s < pb->n_seqs; s++) rows += pb->seqs[s].nq, nbt += ifl__ceil_div(pb->seqs[s].nk, pb->cfg.block_size);
    /* the mma key side: bf16/f16, D 64/128, G <= 64, aligned rows, dO in q's dtype, and (sparse) whole
     * 64-key tiles inside one block */
    const int fast = cuda_mma_operands(cs, pb, 1) && pb->g <= KV_TILE && (!sparse || pb->cfg.block_size % KV_TILE == 0);

    if ((st = cuda_seqs_upload(ctx, pb, 0, &d_seqs, NULL, &seqs))) goto done;
    if ((st = cuda_scratch(ctx, (size_t)(pb->tq * pb->hq) * 2 * acc, &ld))) goto done;
    {
        int64_t blocks = (pb->tq * pb->hq + 7) / 8;
        if (blocks > (int64_t)cs->n_sm * 32) blocks = (int64_t)cs->n_sm * 32;
        struct dtensor o = dt_of(pb->out), g = dt_of(pb->dout), l = dt_of(pb->lse);
        if (dt == IFL_DTYPE_F64) bwd_prep<double><<<(unsigned)blocks, 256, 0, cs->stream>>>(o, g, l, pb->tq, pb->hq, pb->d, (double *)ld);
        else bwd_prep<float><<<(unsigned)blocks, 256, 0, cs->stream>>>(o, g, l, pb->tq, pb->hq, pb->d, (float *)ld);
        CU_GOTO(ctx, cudaGetLastError());
    }
    if (sparse && rows > 0 && (st = build_index(ctx, pb, (const struct dseq *)d_seqs, rows, nbt, &list, &off, &cnt_host)))
        goto done;
    if ((st = cuda_attn_dq(ctx, pb, sparse, ld))) goto done;
    {
        struct kv_params p;
        memset(&p, 0, sizeof p);
        p.q = pb->q->data, p.k = pb->k->data, p.v = pb->v->data;
        p.qs0 = pb->q->stride[0], p.qs1 = pb->q->stride[1], p.ks0 = pb->k->stride[0], p.ks1 = pb->k->stride[1];
        p.vs0 = pb->v->stride[0], p.vs1 = pb->v->stride[1];
        p.dout = dt_of(pb->dout), p.dk = dt_of(pb->dk), p.dv = dt_of(pb->dv), p.ld = ld;
        p.list = list, p.off = off, p.seqs = (const struct dseq *)d_seqs, p.n_seqs = (int)pb->n_seqs;
        p.hq = pb->hq, p.hkv = pb->hkv, p.G = pb->g, p.D = pb->d, p.bs = pb->cfg.block_size, p.nbt = nbt, p.nk_rows = pb->tk;
        p.scale = pb->cfg.scale, p.sparse = sparse;
        if (sparse && rows == 0) p.sparse = 0; /* no query: every tile's token range is empty */
        if (fast) {
            if (dt == IFL_DTYPE_BF16) st = pb->d == 64 ? kv_mma_launch<__nv_bfloat16, 64>(ctx, pb, seqs, p, cnt_host)
                                                       : kv_mma_launch<__nv_bfloat16, 128>(ctx, pb, seqs, p, cnt_host);
            else st = pb->d == 64 ? kv_mma_launch<__half, 64>(ctx, pb, seqs, p, cnt_host) : kv_mma_launch<__half, 128>(ctx, pb, seqs, p, cnt_host);
        } else {
            switch (dt) {
            case IFL_DTYPE_F64: st = kv_generic_launch<double>(ctx, p); break;
            case IFL_DTYPE_F32: st = kv_generic_launch<float>(ctx, p); break;
            case IFL_DTYPE_F16: st = kv_generic_launch<__half>(ctx, p); break;
            default: st = kv_generic_launch<__nv_bfloat16>(ctx, p); break;
            }
        }
    }
done:
    cuda_scratch_free(ctx, d_seqs);
    cuda_scratch_free(ctx, ld);
    cuda_scratch_free(ctx, list);
    cuda_scratch_free(ctx, off);
    free(cnt_host);
    free(seqs);
    return st;
}
