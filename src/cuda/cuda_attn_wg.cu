/* SPDX-License-Identifier: MIT
 *
 * cuda_attn_wg.cu -- stage 2 (sparse) and dense causal attention forward on Hopper's own machinery
 * (sm_90a): K/V tiles brought into shared memory by the tensor copy engine (TMA), products by
 * warpgroup matrix instructions (wgmma), a producer warpgroup and two consumer warpgroups that meet
 * at mbarriers (FlashAttention-3's division of labour; setmaxnreg gives the consumers the producer's
 * registers). Same results contract as attn_mma in cuda_attn.cu (online softmax in f32, P rounded
 * to the storage type before P.V, LSE = (m + log2 l) ln 2), for bf16/f16, D 64 or 128, G dividing
 * 64.
 *
 * A block owns 128 query rows of one KV head: row r is token r/G, head r%G of consecutive tokens,
 * so every K/V tile loaded serves the G heads of each token. Consumer warpgroup c holds rows
 * 64c..64c+63 (the M = 64 side of its products) with Q as register fragments, S and O as wgmma
 * accumulators.
 *
 *   producer (warp 0 of  walks the units of the block: dense, every 64-key tile up to the last
 *   warpgroup 0; the     token; sparse, the union of its tokens' selections in ascending order
 *   other 3 warps exit)  (one cursor per token, the least next block of any token is the next
 *                        unit). Per unit it writes the unit's first key, block end and which tokens
 *                        (and which consumer warpgroups) take part into the stage's slot, then has
 *                        TMA load the 64 K rows and 64 V rows of that KV head (one 64-column box
 *                        per 64 of D, 128-byte swizzle) into the stage, NS stages ahead.
 *   consumers            wait for the stage, and if any of their tokens take part: S = Q K^T
 *                        (D/16 m64n64k16 steps, K-major B), the mask (tokens not in the unit and
 *                        keys past a token's position or the block's end are -inf), the online
 *                        softmax, O += P V (4 m64nDk16 steps, P from registers, V as MN-major B);
 *                        then release the stage.
 *
 * Work per token stays exact for correlated inputs; on random inputs a warpgroup computes a whole
 * 64x64 tile when only one of its tokens selected the block (the tokens of a warpgroup share each
 * product), which the tile shape trades for wgmma's rate (dev/cuda/NOTES.md).
 */
#include "cuda_hopper.cuh"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <math.h>

#define WG_CONS    2                   /* consumer warpgroups per block */
#define WG_ROWS    (64 * WG_CONS)      /* query rows per block */
#define WG_THREADS (WG_CONS * 128 + 128) /* + the producer warpgroup (one warp of it works) */
#define WG_REG_PRODUCER 56             /* setmaxnreg: per SM sub-partition one producer warp and two */
#define WG_REG_CONSUMER 224            /* consumer warps share 16384 registers: (56 + 2 224) 32 <= 16384 */
#define WG_KT      64                  /* keys per unit */
#define WG_BOX     (64 * 64)           /* elements of one 64-row x 64-column box */
#define WG_DONE    INT64_MAX

struct wg_params {
    const void    *q;
    int64_t        qs0, qs1;
    struct dtensor out, lse; /* lse.data NULL: not written */
    const int32_t *sel;
    int64_t        ss0, ss1, K;
    const struct dseq *seqs;
    int            n_seqs;
    int64_t        n_tiles, hq, G, bs;
    float          sl2; /* scale * log2(e) */
    int            sparse;
    int            sel_cache; /* the block's selection rows are copied to shared memory */
};

/* The shared-memory slots of one block (after the 1024-aligned K and V stages). */
struct wg_slots {
    uint64_t      full[8], empty[8]; /* per stage: loaded (producer + TMA bytes), released (consumers) */
    int64_t       key0[8], bend[8];  /* the unit's first key (WG_DONE: the walk is over), its block's end */
    unsigned char act[8][WG_CONS];   /* consumer warpgroup c has a token in the unit */
    unsigned char flag[8][WG_ROWS];  /* token t (of the block) takes part */
};

__device__ __forceinline__ uint32_t ld_pair(const void *base, int64_t off) { return *(const uint32_t *)((const char *)base + off); }

template <typename T, int D, int NS>
__global__ void __launch_bounds__(WG_THREADS, 1)
    attn_wg(const __grid_constant__ CUtensorMap tmk, const __grid_constant__ CUtensorMap tmv, const struct wg_params p) {
    constexpr int NCH = D / 64;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
    T             *sK   = (T *)smem;                  /* [NS][NCH][64 x 64] */
    T             *sV   = sK + NS * NCH * WG_BOX;     /* [NS][NCH][64 x 64] */
    struct wg_slots *sl = (struct wg_slots *)(sV + NS * NCH * WG_BOX);
    int32_t       *ssel = (int32_t *)(sl + 1);        /* [TT][K] when p.sel_cache */

    const int         tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int         G = (int)p.G, TT = WG_ROWS / G;
    const int64_t     tile = p.n_tiles - 1 - blockIdx.x, g = blockIdx.y; /* latest (heaviest) tiles first */
    const struct dseq sq   = p.seqs[seq_of_tile(p.seqs, p.n_seqs, tile)];
    const int64_t     i0   = (tile - sq.tile0) * TT;
    const int         nvalid = (int)(sq.nq - i0 < TT ? sq.nq - i0 : TT);

    if (tid == 0) {
        for (int st = 0; st < NS; st++) mbar_init(&sl->full[st], 32), mbar_init(&sl->empty[st], WG_CONS * 128);
        mbar_init_fence();
    }
    __syncthreads();

    if (warp < 4) { /* ---- the producer warpgroup: warp 0 walks the units and issues the loads ---- */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(WG_REG_PRODUCER));
        if (warp != 0) return;
        constexpr int XT  = WG_ROWS / 32;
        const int64_t BS  = p.sparse ? p.bs : WG_KT, nb = (sq.nk + BS - 1) / BS;
        const int     nsub = (int)((BS + WG_KT - 1) / WG_KT);
        const int64_t pos_last = sq.past + i0 + nvalid - 1;
        const int32_t *grow = p.sparse ? p.sel + g * p.ss0 + (sq.q0 + i0) * p.ss1 : NULL; /* the block's first selection row */
        if (p.sparse && p.sel_cache) {
            for (int x = lane; x < TT * p.K; x += 32) {
                const int t = x / (int)p.K, c = x % (int)p.K;
                ssel[x] = t < nvalid ? grow[t * p.ss1 + c] : -1;
            }
            __syncwarp();
        }
        int           cur[XT];
        unsigned char fl[XT];
#pragma unroll
        for (int x = 0; x < XT; x++) cur[x] = 0, fl[x] = 0;
        int64_t cb = -1;
        int     cj = 0;
        for (int u = 0;; u++) {
            const int st = u % NS;
            if (u >= NS) mbar_wait(&sl->empty[st], ((u / NS) + 1) & 1);
            int64_t b;
            if (cb >= 0 && cj + 1 < nsub) { /* the next 64 keys of the same block, same tokens */
                b = cb, cj++;
            } else if (!p.sparse) {
                b = cb + 1, cj = 0;
                if (b * WG_KT > pos_last) b = WG_DONE;
#pragma unroll
                for (int x = 0; x < XT; x++) {
                    const int t = lane + 32 * x;
                    fl[x]       = b != WG_DONE && t < nvalid && b * WG_KT <= sq.past + i0 + t;
                }
            } else {
                int64_t cand[XT];
                b = WG_DONE, cj = 0;
#pragma unroll
                for (int x = 0; x < XT; x++) {
                    const int t = lane + 32 * x;
                    cand[x]     = WG_DONE;
                    if (t < nvalid && cur[x] < p.K) {
                        const int64_t bb = p.sel_cache ? ssel[t * p.K + cur[x]] : grow[t * p.ss1 + cur[x]];
                        if (bb >= 0 && bb < nb && bb * BS <= sq.past + i0 + t) cand[x] = bb;
                    }
                    b = cand[x] < b ? cand[x] : b;
                }
                for (int off = 16; off > 0; off /= 2) {
                    const int64_t o = __shfl_xor_sync(0xffffffffu, b, off);
                    b               = o < b ? o : b;
                }
#pragma unroll
                for (int x = 0; x < XT; x++) {
                    fl[x] = b != WG_DONE && cand[x] == b;
                    cur[x] += fl[x];
                }
            }
            cb = b;
            unsigned act = 0; /* bit c: consumer c has a token in the unit */
#pragma unroll
            for (int x = 0; x < XT; x++) {
                const int t = lane + 32 * x;
                if (t < TT) sl->flag[st][t] = fl[x];
                if (fl[x]) act |= 1u << (t * G / 64);
            }
            for (int off = 16; off > 0; off /= 2) act |= __shfl_xor_sync(0xffffffffu, act, off);
            if (lane < WG_CONS) sl->act[st][lane] = (act >> lane) & 1;
            if (lane == 0) {
                sl->key0[st] = b == WG_DONE ? WG_DONE : b * BS + (int64_t)cj * WG_KT;
                sl->bend[st] = b == WG_DONE ? 0 : b * BS + BS;
            }
            __syncwarp();
            if (b == WG_DONE) {
                mbar_arrive(&sl->full[st]);
                break;
            }
            if (lane == 0) {
                const int key = (int)(sq.k0 + b * BS + (int64_t)cj * WG_KT);
                mbar_arrive_tx(&sl->full[st], 2 * NCH * WG_BOX * (unsigned)sizeof(T));
#pragma unroll
                for (int c = 0; c < NCH; c++) {
                    tma_load_3d(sK + (st * NCH + c) * WG_BOX, &tmk, c * 64, (int)g, key, &sl->full[st]);
                    tma_load_3d(sV + (st * NCH + c) * WG_BOX, &tmv, c * 64, (int)g, key, &sl->full[st]);
                }
            } else {
                mbar_arrive(&sl->full[st]);
            }
        }
        return;
    }

    /* ---- the consumer warpgroups ---- */
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(WG_REG_CONSUMER));
    const int     wgi = warp / 4 - 1, w = warp % 4;
    const int     ra = wgi * 64 + w * 16 + lane / 4, rb = ra + 8, ta = ra / G, tb = rb / G;
    const int64_t pa = sq.past + i0 + ta, pb = sq.past + i0 + tb;
    uint32_t      qf[D / 16][4]; /* Q as A fragments: rows ra / rb, columns 16kk + 2(lane%4) (+8) */
    {
        const int64_t es = sizeof(T);
        const int64_t oa = ((sq.q0 + i0 + ta) * p.qs0 + (g * G + ra % G) * p.qs1 + 2 * (lane % 4)) * es;
        const int64_t ob = ((sq.q0 + i0 + tb) * p.qs0 + (g * G + rb % G) * p.qs1 + 2 * (lane % 4)) * es;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            qf[kk][0] = ta < nvalid ? ld_pair(p.q, oa + kk * 16 * es) : 0u;
            qf[kk][1] = tb < nvalid ? ld_pair(p.q, ob + kk * 16 * es) : 0u;
            qf[kk][2] = ta < nvalid ? ld_pair(p.q, oa + (kk * 16 + 8) * es) : 0u;
            qf[kk][3] = tb < nvalid ? ld_pair(p.q, ob + (kk * 16 + 8) * es) : 0u;
        }
    }
    float O[D / 2], S[32];
#pragma unroll
    for (int x = 0; x < D / 2; x++) O[x] = 0.f;
#pragma unroll
    for (int x = 0; x < 32; x++) S[x] = 0.f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

    for (int u = 0;; u++) {
        const int st = u % NS;
        mbar_wait(&sl->full[st], (u / NS) & 1);
        const int64_t key0 = sl->key0[st];
        if (key0 == WG_DONE) break;
        if (sl->act[st][wgi]) {
            const int64_t bend  = sl->bend[st];
            const int64_t lim_a = sl->flag[st][ta] ? (pa + 1 < bend ? pa + 1 : bend) : key0; /* keys < lim are seen */
            const int64_t lim_b = sl->flag[st][tb] ? (pb + 1 < bend ? pb + 1 : bend) : key0;
            const T      *kt = sK + st * NCH * WG_BOX, *vt = sV + st * NCH * WG_BOX;
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wg_mma<T, 0>(S, qf[kk], wg_desc(smem_u32(kt + (kk / 4) * WG_BOX) + (kk % 4) * 32, 16, 1024), kk > 0);
            wg_commit();
            wg_wait<0>();
            wg_fence_acc(S);

            float mxa = -INFINITY, mxb = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int64_t kp = key0 + j * 8 + 2 * (lane % 4) + (e & 1);
                    const float   z  = kp < (e < 2 ? lim_a : lim_b) ? S[4 * j + e] * p.sl2 : -INFINITY;
                    S[4 * j + e]     = z;
                    if (e < 2) mxa = fmaxf(mxa, z);
                    else mxb = fmaxf(mxb, z);
                }
            float ca, cb;
            online_softmax_unit(S, mxa, mxb, m_a, m_b, l_a, l_b, ca, cb);
#pragma unroll
            for (int x = 0; x < D / 8; x++) O[4 * x] *= ca, O[4 * x + 1] *= ca, O[4 * x + 2] *= cb, O[4 * x + 3] *= cb;
            uint32_t pf[4][4]; /* P as A fragments, 16 keys per step */
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                pf[kk][0] = pack2<T>(S[8 * kk + 0], S[8 * kk + 1]);
                pf[kk][1] = pack2<T>(S[8 * kk + 2], S[8 * kk + 3]);
                pf[kk][2] = pack2<T>(S[8 * kk + 4], S[8 * kk + 5]);
                pf[kk][3] = pack2<T>(S[8 * kk + 6], S[8 * kk + 7]);
            }
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) wg_mma<T, 1>(O, pf[kk], wg_desc(smem_u32(vt) + kk * 16 * 128, WG_BOX * sizeof(T), 1024), 1);
            wg_commit();
            wg_wait<0>();
            wg_fence_acc(O);
        }
        mbar_arrive(&sl->empty[st]);
    }

    store_out_rows<D>(p.out, p.lse, O, m_a, m_b, l_a, l_b, ra, rb, G, nvalid, sq.q0 + i0, g, lane);
}

/* ---- host side ---- */

static PFN_cuTensorMapEncodeTiled_v12000 tmap_encode; /* the driver's encoder, looked up once */

/* A TMA map of a [T, Hkv, D] K or V view with boxes of 64 rows x 64 columns of one head. 0 when the
 * driver refuses it (the caller then takes the mma.sync kernel). */
static int wg_tmap(CUtensorMap *m, const struct ifl_tensor *t) {
    if (tmap_encode == NULL) {
        void                            *fn = NULL;
        enum cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
            q != cudaDriverEntryPointSuccess || fn == NULL) {
            (void)cudaGetLastError();
            return 0;
        }
        tmap_encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    }
    const cuuint64_t es      = ifl_dtype_size(t->dtype);
    cuuint64_t       dims[3] = {(cuuint64_t)t->shape[2], (cuuint64_t)t->shape[1], (cuuint64_t)t->shape[0]};
    cuuint64_t       strides[2] = {(cuuint64_t)t->stride[1] * es, (cuuint64_t)t->stride[0] * es};
    cuuint32_t       box[3] = {64, 1, WG_KT}, estr[3] = {1, 1, 1};
    if (t->shape[1] == 1) strides[0] = dims[0] * es; /* any stride describes a single head */
    return tmap_encode(m, t->dtype == IFL_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3,
                       t->data, dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                       CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <typename T, int D>
static enum ifl_status wg_launch(struct ifl_ctx *ctx, const CUtensorMap &mk, const CUtensorMap &mv, const struct wg_params &p) {
    constexpr int NS   = D == 128 ? 4 : 6;
    const size_t  smem = 1024 + (size_t)NS * 2 * (D / 64) * WG_BOX * sizeof(T) + sizeof(struct wg_slots) +
                        (p.sel_cache ? (size_t)(WG_ROWS / p.G * p.K) * 4 : 0);
    CU_TRY(ctx, cudaFuncSetAttribute(attn_wg<T, D, NS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)p.n_tiles, (unsigned)(p.hq / p.G));
    attn_wg<T, D, NS><<<grid, WG_THREADS, smem, cuda_of(ctx)->stream>>>(mk, mv, p);
    CU_LAUNCHED(ctx);
    return IFL_STATUS_OK;
}

enum ifl_status cuda_attn_wg_try(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse, int *ran) {
    struct cuda_state *cs = cuda_of(ctx);
    *ran                  = 0;
    if (cs->attn_impl == CUDA_ATTN_MMA || !cuda_mma_operands(cs, pb, 0) || 64 % pb->g != 0 || pb->k->shape[0] > INT32_MAX)
        return IFL_STATUS_OK;
    const int64_t tt = WG_ROWS / pb->g;
    int64_t       n_tiles = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) n_tiles += ifl__ceil_div(pb->seqs[s].nq, tt);
    /* too few blocks to fill the device: the mma.sync kernel splits each tile's keys (decode) */
    if (cs->attn_impl != CUDA_ATTN_WG && n_tiles * pb->hkv * 2 <= cs->n_sm && cuda_attn_max_units(pb, sparse) >= 8)
        return IFL_STATUS_OK;
    if (n_tiles == 0 || n_tiles > 0x7fffffff) return IFL_STATUS_OK;
    CUtensorMap mk, mv;
    if (!wg_tmap(&mk, pb->k) || !wg_tmap(&mv, pb->v)) return IFL_STATUS_OK;

    struct wg_params p;
    memset(&p, 0, sizeof p);
    void           *d  = NULL;
    enum ifl_status st = cuda_seqs_upload(ctx, pb, tt, &d, &p.n_tiles, NULL);
    if (st) return st;
    p.q = pb->q->data, p.qs0 = pb->q->stride[0], p.qs1 = pb->q->stride[1];
    p.out = dt_of(pb->out), p.lse = dt_of(pb->lse);
    if (sparse) p.sel = (const int32_t *)pb->sel->data, p.ss0 = pb->sel->stride[0], p.ss1 = pb->sel->stride[1], p.K = pb->sel->shape[2];
    p.seqs = (const struct dseq *)d, p.n_seqs = (int)pb->n_seqs;
    p.hq = pb->hq, p.G = pb->g, p.bs = pb->cfg.block_size;
    p.sl2 = (float)(pb->cfg.scale * 1.4426950408889634), p.sparse = sparse;
    p.sel_cache = sparse && tt * p.K * 4 <= 16384;
    const int bf = pb->q->dtype == IFL_DTYPE_BF16;
    if (pb->d == 64) st = bf ? wg_launch<__nv_bfloat16, 64>(ctx, mk, mv, p) : wg_launch<__half, 64>(ctx, mk, mv, p);
    else st = bf ? wg_launch<__nv_bfloat16, 128>(ctx, mk, mv, p) : wg_launch<__half, 128>(ctx, mk, mv, p);
    cuda_scratch_free(ctx, d);
    *ran = st == IFL_STATUS_OK;
    return st;
}
