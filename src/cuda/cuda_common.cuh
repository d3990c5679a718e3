/* SPDX-License-Identifier: MIT
 *
 * cuda_common.cuh -- what the cuda backend's files share: the context state, the error funnel for
 * CUDA runtime errors, the device view of tensors and sequences, element loads and stores for every
 * dtype, the tensor-core primitives (ldmatrix, mma.sync m16n8k16, cp.async) and the launchers each
 * file exports.
 *
 * Conventions
 *   - Every op runs on the context's own stream and ends with a stream synchronisation, so calls
 *     are synchronous (infllm.h) and an asynchronous kernel fault is reported by the op that caused
 *     it, as IFL_STATUS_DEVICE with cudaGetErrorString in the message.
 *   - Scratch memory comes from the context's stream-ordered memory pool (cudaMallocFromPoolAsync);
 *     it is freed on the stream, so reuse between ops costs no allocation.
 *   - Host code here is C written with nvcc; kernels are templates only over the storage type and
 *     compile-time tile sizes.
 */
#ifndef INFLLM_CUDA_COMMON_CUH
#define INFLLM_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "../core/internal.h"
}

/* ---- context state ---- */

struct cuda_state {
    int          device;
    int          n_sm;          /* multiprocessors */
    size_t       smem_optin;    /* largest dynamic shared memory a block may ask for */
    cudaStream_t stream;
    cudaMemPool_t pool;         /* NULL when the device has no memory pools: plain cudaMalloc */
    int          force_generic; /* INFLLM_CUDA_GENERIC=1: only the plain (non tensor-core) kernels */
    int          sel_warps;     /* INFLLM_CUDA_SEL_WARPS: warps of the stage-1 tile (0 = chosen) */
    int          attn_warps;    /* INFLLM_CUDA_ATTN_WARPS: warps of the attention tile (0 = chosen) */
    int          attn_impl;     /* INFLLM_CUDA_ATTN: CUDA_ATTN_AUTO, _MMA (mma.sync kernel only), _WG (wgmma kernel wherever it applies) */
    /* host staging (pinned) for small uploads and the flag read-back; reused by every op, which is
     * safe because every op synchronises before it returns */
    unsigned char *pinned;
    size_t         pinned_size, pinned_used;
    unsigned long long *dflags; /* [8] device words for first-error positions */
};

enum { CUDA_ATTN_AUTO = 0, CUDA_ATTN_MMA = 1, CUDA_ATTN_WG = 2 };

static inline struct cuda_state *cuda_of(struct ifl_ctx *ctx) { return (struct cuda_state *)ctx->impl; }

/* Records a CUDA error on ctx: DEVICE (OUT_OF_MEMORY for an allocation failure). */
enum ifl_status cuda_fail(struct ifl_ctx *ctx, cudaError_t err, const char *what);

#define CU_TRY(ctx, expr)                                                                          \
    do {                                                                                           \
        cudaError_t cu_err_ = (expr);                                                              \
        if (cu_err_ != cudaSuccess) return cuda_fail((ctx), cu_err_, #expr);                       \
    } while (0)

/* The same, for functions that clean up: sets st and jumps to done. */
#define CU_GOTO(ctx, expr)                                                                         \
    do {                                                                                           \
        cudaError_t cu_err_ = (expr);                                                              \
        if (cu_err_ != cudaSuccess) {                                                              \
            st = cuda_fail((ctx), cu_err_, #expr);                                                 \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* After every launch. */
#define CU_LAUNCHED(ctx) CU_TRY(ctx, cudaGetLastError())

/* Scratch in device memory (stream-ordered); free with cuda_scratch_free (NULL is a no-op). */
enum ifl_status cuda_scratch(struct ifl_ctx *ctx, size_t bytes, void **out);
void            cuda_scratch_free(struct ifl_ctx *ctx, void *p);

/* Copies n bytes of host data to a fresh scratch buffer through the pinned staging area
 * (asynchronous on the stream; the host data may be reused at once). */
enum ifl_status cuda_upload(struct ifl_ctx *ctx, const void *host, size_t n, void **dev);

/* ---- the device view of a problem ---- */

/* A rank-2/3 tensor whose last dimension is contiguous: element (i0, i1, i2) at
 * data + i0*s0 + i1*s1 + i2 (elements). Rank 2 uses s0 only (s1 = 1). */
struct dtensor {
    void   *data;
    int     dtype; /* enum ifl_dtype */
    int64_t s0, s1;
};

static inline struct dtensor dt_of(const struct ifl_tensor *t) {
    struct dtensor d;
    d.data  = t ? t->data : NULL;
    d.dtype = t ? (int)t->dtype : 0;
    d.s0    = t ? t->stride[0] : 0;
    d.s1    = t && t->ndim > 2 ? t->stride[1] : 1;
    return d;
}

/* One sequence of the (sub)problem as the kernels see it. */
struct dseq {
    int64_t q0, nq;   /* query rows */
    int64_t k0, nk;   /* key rows */
    int64_t past;     /* nk - nq */
    int64_t cq;       /* query rows of the earlier sequences of this problem (row index space) */
    int64_t c1, c2;   /* first fine / coarse compressed row of the sequence (packed over the problem) */
    int64_t tile0;    /* first query tile of the sequence (kernels with tiles of tokens) */
    int64_t kt0;      /* first 64-key tile of the sequence (the backward's key-side kernels) */
    int64_t b0;       /* first block of the sequence, blocks of cfg.block_size packed over the problem */
};

/* Fills seqs[pb->n_seqs] (c1, c2 packed with cfg's kernels; tile0 for tiles of tt tokens, 0 = no
 * tiles; kt0 and b0). Returns the total number of tiles. */
int64_t cuda_fill_seqs(const struct ifl__problem *pb, int64_t tt, struct dseq *seqs);

/* The sequence table of pb (cuda_fill_seqs with tt) uploaded to device scratch *d_seqs (free with
 * cuda_scratch_free; NULL on failure). n_tiles (may be NULL) receives the tile count; host (may be
 * NULL) a malloc'd host copy, which the caller frees. */
enum ifl_status cuda_seqs_upload(struct ifl_ctx *ctx, const struct ifl__problem *pb, int64_t tt, void **d_seqs,
                                 int64_t *n_tiles, struct dseq **host);

/* The sequence owning index x of a cumulative field F (cq, tile0, kt0, b0): the largest s with
 * seqs[s].*F <= x. Sequences without rows share their successor's start; the last one wins. */
template <int64_t dseq::*F> __device__ __forceinline__ int seq_find(const struct dseq *seqs, int n, int64_t x) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (seqs[mid].*F <= x) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}
__device__ __forceinline__ int seq_of_row(const struct dseq *seqs, int n, int64_t x) { return seq_find<&dseq::cq>(seqs, n, x); }
__device__ __forceinline__ int seq_of_tile(const struct dseq *seqs, int n, int64_t x) { return seq_find<&dseq::tile0>(seqs, n, x); }

/* ---- element access ---- */

template <typename T> struct acc_of { typedef float type; };
template <> struct acc_of<double> { typedef double type; };

__device__ __forceinline__ float  to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float  to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float  to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

/* x rounded to T (round to nearest even), back in the accumulation type. */
template <typename T> __device__ __forceinline__ typename acc_of<T>::type round_to(typename acc_of<T>::type x);
template <> __device__ __forceinline__ float  round_to<float>(float x) { return x; }
template <> __device__ __forceinline__ double round_to<double>(double x) { return x; }
template <> __device__ __forceinline__ float  round_to<__half>(float x) { return __half2float(__float2half_rn(x)); }
template <> __device__ __forceinline__ float  round_to<__nv_bfloat16>(float x) {
    return __bfloat162float(__float2bfloat16_rn(x));
}

/* The element at offset off of a float tensor of any dtype, as a double. */
__device__ __forceinline__ double load_any(const void *base, int dtype, int64_t off) {
    switch (dtype) {
    case IFL_DTYPE_F64: return ((const double *)base)[off];
    case IFL_DTYPE_F32: return ((const float *)base)[off];
    case IFL_DTYPE_F16: return __half2float(((const __half *)base)[off]);
    case IFL_DTYPE_BF16: return __bfloat162float(((const __nv_bfloat16 *)base)[off]);
    default: return 0;
    }
}

/* Stores x at element offset off of a float tensor of any dtype (rounding to nearest even). */
__device__ __forceinline__ void store_any(void *base, int dtype, int64_t off, double x) {
    switch (dtype) {
    case IFL_DTYPE_F64: ((double *)base)[off] = x; break;
    case IFL_DTYPE_F32: ((float *)base)[off] = (float)x; break;
    case IFL_DTYPE_F16: ((__half *)base)[off] = __float2half_rn((float)x); break;
    case IFL_DTYPE_BF16: ((__nv_bfloat16 *)base)[off] = __float2bfloat16_rn((float)x); break;
    default: break;
    }
}
__device__ __forceinline__ void store_any_f(void *base, int dtype, int64_t off, float x) {
    switch (dtype) {
    case IFL_DTYPE_F64: ((double *)base)[off] = (double)x; break;
    case IFL_DTYPE_F32: ((float *)base)[off] = x; break;
    case IFL_DTYPE_F16: ((__half *)base)[off] = __float2half_rn(x); break;
    case IFL_DTYPE_BF16: ((__nv_bfloat16 *)base)[off] = __float2bfloat16_rn(x); break;
    default: break;
    }
}

/* 2^x on the special-function unit (about 2 ulp; 2^-inf = +0). Used only where the result is
 * rounded to bf16/f16 or compared at the selection's near-tie margin. */
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* ---- tensor-core primitives (sm_80+; used by the fast kernels for bf16/f16) ---- */

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

/* d += a * b, m16n8k16, f32 accumulators. */
template <typename T> __device__ __forceinline__ void mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma16816<__half>(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two floats rounded to T and packed into one 32-bit register (low half = a). */
template <typename T> __device__ __forceinline__ uint32_t pack2(float a, float b);
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *(uint32_t *)&h;
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *(uint32_t *)&h;
}

/* ---- warp-level products on 64-wide tiles (one warp, 16 rows; fragments of mma m16n8k16) ----
 * acc[8][4] is a 16 x 64 f32 accumulator: acc[n][e] holds row lane/4 + 8*(e >= 2), column
 * 8n + 2*(lane%4) + (e&1). Tiles in shared memory are row-major with a pitch in elements. */

/* acc += A B^T: A is 16 rows x D at a16, B is 64 rows x D at b64 (both in shared memory). */
template <typename T, int D>
__device__ __forceinline__ void mma_abt_16x64(float (&acc)[8][4], const T *a16, const T *b64, int pitch, int lane) {
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a[4];
        ldsm_x4(smem_u32(a16 + ((lane % 8) + ((lane / 8) % 2) * 8) * pitch + kk * 16 + (lane / 16) * 8), a[0], a[1], a[2], a[3]);
#pragma unroll
        for (int np = 0; np < 4; np++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4(smem_u32(b64 + (np * 16 + (lane / 16) * 8 + lane % 8) * pitch + kk * 16 + ((lane / 8) % 2) * 8), b0, b1, b2, b3);
            mma16816<T>(acc[2 * np], a, b0, b1);
            mma16816<T>(acc[2 * np + 1], a, b2, b3);
        }
    }
}

/* out (16 x D, the same fragment layout over D/8 column tiles) += P B: P is a 16 x 64 accumulator
 * rounded to T here, B is 64 rows x D at b64 in shared memory. */
template <typename T, int D>
__device__ __forceinline__ void mma_pb_16x64(float (&out)[D / 8][4], const float (&P)[8][4], const T *b64, int pitch, int lane) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        const uint32_t a[4] = {pack2<T>(P[2 * kk][0], P[2 * kk][1]), pack2<T>(P[2 * kk][2], P[2 * kk][3]),
                               pack2<T>(P[2 * kk + 1][0], P[2 * kk + 1][1]), pack2<T>(P[2 * kk + 1][2], P[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4_t(smem_u32(b64 + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * pitch + dp * 16 + (lane / 16) * 8), b0, b1, b2, b3);
            mma16816<T>(out[2 * dp], a, b0, b1);
            mma16816<T>(out[2 * dp + 1], a, b2, b3);
        }
    }
}

/* The online-softmax step of the tensor-core forward kernels over one 64-key unit, for the two
 * rows a lane holds: s[4j + e] are the unit's scores in log2 units (-inf where masked; e < 2 row
 * a, else row b), mxa / mxb this lane's maxima of them. The row maxima are taken over the row's 4
 * lanes; s becomes P = 2^(s - m) with m the new running maxima (m_a, m_b; a row that has seen no
 * key keeps -inf, and its P is 0); l_a / l_b (this lane's part of the sums) become l c + sum P;
 * ca / cb receive the factors c = 2^(m_old - m) by which the rows' O must be scaled. */
__device__ __forceinline__ void online_softmax_unit(float (&s)[32], float mxa, float mxb, float &m_a, float &m_b,
                                                    float &l_a, float &l_b, float &ca, float &cb) {
    mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 1));
    mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 2));
    mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 1));
    mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 2));
    const float na = fmaxf(m_a, mxa), nb = fmaxf(m_b, mxb);
    const float ba = na == -INFINITY ? 0.f : na, bb = nb == -INFINITY ? 0.f : nb;
    ca = fast_exp2(m_a - ba), cb = fast_exp2(m_b - bb);
    m_a = na, m_b = nb;
    float sa = 0.f, sb = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        s[4 * j + 0] = fast_exp2(s[4 * j + 0] - ba), s[4 * j + 1] = fast_exp2(s[4 * j + 1] - ba);
        s[4 * j + 2] = fast_exp2(s[4 * j + 2] - bb), s[4 * j + 3] = fast_exp2(s[4 * j + 3] - bb);
        sa += s[4 * j + 0] + s[4 * j + 1];
        sb += s[4 * j + 2] + s[4 * j + 3];
    }
    l_a = l_a * ca + sa;
    l_b = l_b * cb + sb;
}

/* The epilogue of the tensor-core forward kernels (attn_mma, attn_wg): a lane holds rows ra and rb
 * of the tile (token r / G, head r % G) as o[4x + e] over D/8 column tiles (mma.sync's fragment
 * layout: e < 2 row ra, else rb; column 8x + 2 (lane % 4) + (e & 1)), their running maxima in
 * log2 units and this lane's part of their sums. Reduces the sums over the row's 4 lanes, stores
 * out = o / l for the rows of valid tokens (tok0 = the tile's first token, g the KV head) and, if
 * asked, LSE = (m + log2 l) ln 2 (-inf for a row that saw no key). */
template <int D>
__device__ __forceinline__ void store_out_rows(const struct dtensor &out, const struct dtensor &lse, const float (&o)[D / 2],
                                               float m_a, float m_b, float l_a, float l_b, int ra, int rb, int G,
                                               int nvalid, int64_t tok0, int64_t g, int lane) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const float inv_a = l_a > 0.f ? 1.f / l_a : 0.f, inv_b = l_b > 0.f ? 1.f / l_b : 0.f;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int r = half ? rb : ra, t = r / G;
        if (t >= nvalid) continue;
        const int64_t token = tok0 + t, h = g * G + r % G;
        const float   inv   = half ? inv_b : inv_a;
        const int64_t ob    = token * out.s0 + h * out.s1 + 2 * (lane % 4);
#pragma unroll
        for (int x = 0; x < D / 8; x++) {
            store_any_f(out.data, out.dtype, ob + x * 8, o[4 * x + 2 * half] * inv);
            store_any_f(out.data, out.dtype, ob + x * 8 + 1, o[4 * x + 2 * half + 1] * inv);
        }
        if (lse.data && lane % 4 == 0) {
            const float l = half ? l_b : l_a, m = half ? m_b : m_a;
            store_any(lse.data, lse.dtype, token * lse.s0 + h,
                      l > 0.f ? ((double)m + log2((double)l)) * 0.6931471805599453 : -(double)INFINITY);
        }
    }
}

/* 16-byte asynchronous copy global -> shared; src_bytes 0 writes zeros (src is not read). */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait(void) { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/* ---- launchers (each file) ---- */

/* cuda_compress.cu: compressed keys of every sequence of pb (kernel/stride) into out
 * ([N, Hkv, D], any float dtype, packed per sequence from seqs[].c1 or .c2 by `which`). The mean
 * is taken in f32 (f64 for f64 keys) and rounded to k's dtype, then stored in out's dtype. */
enum ifl_status cuda_compress(struct ifl_ctx *ctx, const struct ifl__problem *pb, const struct dseq *d_seqs,
                              int which, int64_t n_rows, struct dtensor out);

/* cuda_compress.cu: copies a [n, Hkv, D] float tensor of any dtype and strides into a contiguous
 * buffer of k's dtype (used when the caller hands stage 1 its compressed keys). */
enum ifl_status cuda_copy_rows(struct ifl_ctx *ctx, const struct ifl__problem *pb, const struct ifl_tensor *src,
                               void *dst);

/* cuda_select.cu: stage 1 into pb->sel, from contiguous compressed keys c1/c2 ([N, Hkv, D] in k's
 * dtype, packed per sequence as seqs[].c1/.c2 say). */
enum ifl_status cuda_select_run(struct ifl_ctx *ctx, const struct ifl__problem *pb, const void *c1, const void *c2);

/* cuda_attn.cu: stage 2 (sparse = 1, pb->sel already validated) or dense causal attention. */
enum ifl_status cuda_attn_run(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse);

/* cuda_attn_wg.cu: the forward of cuda_attn_run on the wgmma + TMA kernel when the problem suits it
 * (bf16/f16, D 64/128, G dividing 64, TMA-describable K and V, enough query tiles to fill the
 * device or INFLLM_CUDA_ATTN=wg); *ran says whether it did. */
enum ifl_status cuda_attn_wg_try(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse, int *ran);

/* cuda_attn.cu: the backward's dQ into pb->dq, walking the keys as the forward does; ld holds
 * [Tq][Hq] pairs (LSE in log2 units, Di = <dO, O>) in the accumulation type (f64 for f64 inputs). */
enum ifl_status cuda_attn_dq(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse, const void *ld);

/* cuda_attn.cu: the most 64-key units a query tile of pb walks (sparse: the selection width times
 * the units per block; dense: the longest sequence's key tiles), for the split-K decision. */
int64_t cuda_attn_max_units(const struct ifl__problem *pb, int sparse);

/* cuda_attn.cu: 1 when the tensor's rows (and its start) are 16-byte aligned (cp.async). */
int cuda_rows_aligned(const struct ifl_tensor *t);

/* cuda_attn.cu: 1 when the attention operands suit the tensor-core kernels (not forced generic;
 * bf16/f16; D 64 or 128; q, k, v, and with bwd dO in q's dtype, with 16-byte aligned rows). Each
 * kernel adds its own condition on G. */
int cuda_mma_operands(const struct cuda_state *cs, const struct ifl__problem *pb, int bwd);

/* cuda_bwd.cu: the backward of stage 2 (sparse = 1, pb->sel already validated) or of dense causal
 * attention: dq, dk, dv. */
enum ifl_status cuda_bwd_run(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse);

/* cuda_check.cu: device-side checks the core leaves to a device-memory backend. */
enum ifl_status cuda_check_finite_all(struct ifl_ctx *ctx, const char *fn, const struct ifl_tensor *const *ts,
                                      const char *const *names, int n); /* NULL entries skipped; n <= 8 */
enum ifl_status cuda_check_sel(struct ifl_ctx *ctx, const char *fn, const struct ifl__problem *pb);
enum ifl_status cuda_fill_sel(struct ifl_ctx *ctx, const struct ifl__problem *pb);

#endif /* INFLLM_CUDA_COMMON_CUH */
