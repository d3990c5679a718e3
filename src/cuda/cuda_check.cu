/* SPDX-License-Identifier: MIT
 *
 * cuda_check.cu -- the checks the core cannot make on device memory, run on the device before an
 * op writes anything: the NaN/Inf scan of the inputs (when ifl_ctx_params.check_finite is set)
 * and the contents of a stage-2 selection (each row strictly ascending valid block indices of its
 * sequence, then -1 padding). A kernel records the linear index of the first offending element
 * with atomicMin; the host reads it back and writes the same message the host backends give.
 * Also the -1 fill of selection rows (the switchable forward's rows of dense sequences).
 */
#include "cuda_common.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE 0xffffffffffffffffull

/* ---- NaN/Inf scan ---- */

/* 1 when the element's bits are an IEEE infinity or NaN; W is the element width in bytes and
 * bf16 (which shares f16's width) is told apart by `bf16`. */
template <int W> __device__ __forceinline__ int nonfinite_bits(uint64_t u, int bf16);
template <> __device__ __forceinline__ int nonfinite_bits<2>(uint64_t u, int bf16) {
    return bf16 ? (u & 0x7f80u) == 0x7f80u : (u & 0x7c00u) == 0x7c00u;
}
template <> __device__ __forceinline__ int nonfinite_bits<4>(uint64_t u, int bf16) {
    (void)bf16;
    return (u & 0x7f800000u) == 0x7f800000u;
}
template <> __device__ __forceinline__ int nonfinite_bits<8>(uint64_t u, int bf16) {
    (void)bf16;
    return (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
}

/* Elements (a, b, c) of [n0, n1, n2] visited V at a time along c (V*W = 16 when the rows are
 * 16-byte aligned, else V = 1). *first receives the smallest linear index a*n1*n2 + b*n2 + c found. */
template <int W, int V>
__global__ void finite_scan(const unsigned char *base, int64_t n0, int64_t n1, int64_t n2, int64_t s0, int64_t s1,
                            int bf16, unsigned long long *first) {
    const int64_t nc = n2 / V, total = n0 * n1 * nc;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = i % nc, ab = i / nc, b = ab % n1, a = ab / n1;
        const unsigned char *p = base + (a * s0 + b * s1 + c * V) * W;
        uint64_t             u[V];
        if (V * W == 16) {
            uint4 x = *(const uint4 *)p;
            uint32_t w4[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
            for (int e = 0; e < V; e++) {
                if (W == 2) u[e] = (w4[e / 2] >> (16 * (e % 2))) & 0xffffu;
                else if (W == 4) u[e] = w4[e];
                else u[e] = (uint64_t)w4[2 * e] | ((uint64_t)w4[2 * e + 1] << 32);
            }
        } else {
#pragma unroll
            for (int e = 0; e < V; e++) {
                if (W == 2) u[e] = ((const uint16_t *)p)[e];
                else if (W == 4) u[e] = ((const uint32_t *)p)[e];
                else u[e] = ((const uint64_t *)p)[e];
            }
        }
#pragma unroll
        for (int e = 0; e < V; e++)
            if (nonfinite_bits<W>(u[e], bf16)) {
                atomicMin(first, (unsigned long long)((a * n1 + b) * n2 + c * V + e));
                break;
            }
    }
}

template <int W>
static void launch_scan(struct cuda_state *cs, const struct ifl_tensor *t, unsigned long long *slot) {
    const int64_t n0 = t->shape[0], n1 = t->ndim > 2 ? t->shape[1] : 1, n2 = t->shape[t->ndim - 1];
    const int64_t s0 = t->stride[0], s1 = t->ndim > 2 ? t->stride[1] : 0;
    const int     bf16 = t->dtype == IFL_DTYPE_BF16;
    const int     V    = 16 / W;
    int vec = n2 % V == 0 && s0 % V == 0 && (t->ndim < 3 || s1 % V == 0) && ((uintptr_t)t->data % 16) == 0;
    int64_t total = n0 * n1 * (vec ? n2 / V : n2), blocks = (total + 255) / 256;
    if (blocks > (int64_t)cs->n_sm * 16) blocks = (int64_t)cs->n_sm * 16;
    if (blocks < 1) blocks = 1;
    if (vec) finite_scan<W, 16 / W><<<(unsigned)blocks, 256, 0, cs->stream>>>((const unsigned char *)t->data, n0, n1, n2, s0, s1, bf16, slot);
    else finite_scan<W, 1><<<(unsigned)blocks, 256, 0, cs->stream>>>((const unsigned char *)t->data, n0, n1, n2, s0, s1, bf16, slot);
}

enum ifl_status cuda_check_finite_all(struct ifl_ctx *ctx, const char *fn, const struct ifl_tensor *const *ts,
                                      const char *const *names, int n) {
    struct cuda_state *cs = cuda_of(ctx);
    if (n > 8) n = 8;
    CU_TRY(ctx, cudaMemsetAsync(cs->dflags, 0xff, 8 * sizeof *cs->dflags, cs->stream));
    for (int i = 0; i < n; i++) {
        if (ts[i] == NULL) continue;
        switch (ifl_dtype_size(ts[i]->dtype)) {
        case 2: launch_scan<2>(cs, ts[i], cs->dflags + i); break;
        case 4: launch_scan<4>(cs, ts[i], cs->dflags + i); break;
        case 8: launch_scan<8>(cs, ts[i], cs->dflags + i); break;
        default: break;
        }
        CU_LAUNCHED(ctx);
    }
    unsigned long long first[8];
    CU_TRY(ctx, cudaMemcpyAsync(first, cs->dflags, sizeof first, cudaMemcpyDeviceToHost, cs->stream));
    CU_TRY(ctx, cudaStreamSynchronize(cs->stream));
    for (int i = 0; i < n; i++) {
        if (ts[i] == NULL || first[i] == NONE) continue;
        const struct ifl_tensor *t = ts[i];
        int64_t pos[3], rest = (int64_t)first[i];
        for (int d = t->ndim - 1; d >= 0; d--) pos[d] = rest % t->shape[d], rest /= t->shape[d];
        int64_t off = 0;
        for (int d = 0; d < t->ndim; d++) off += pos[d] * t->stride[d];
        unsigned char raw[8];
        size_t        es = ifl_dtype_size(t->dtype);
        CU_TRY(ctx, cudaMemcpy(raw, (const unsigned char *)t->data + off * (int64_t)es, es, cudaMemcpyDeviceToHost));
        const int64_t     one_shape[1] = {1};
        struct ifl_tensor one = ifl_tensor_make(raw, t->dtype, 1, one_shape);
        double            x   = ifl__load(&one, 0);
        char              where[96];
        int               m = 0;
        for (int d = 0; d < t->ndim; d++) m += snprintf(where + m, sizeof where - (size_t)m, "%s%lld", d ? ", " : "", (long long)pos[d]);
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s[%s] is %s, expected finite values", fn, names[i], where,
                        x != x ? "NaN" : (x > 0 ? "+Inf" : "-Inf"));
    }
    return IFL_STATUS_OK;
}

/* ---- selection rows ---- */

/* One warp per (KV head, query row of the problem): the first malformed entry of the row. */
__global__ void sel_check_kernel(const int32_t *sel, int64_t ss0, int64_t ss1, int64_t K, const struct dseq *seqs,
                                 int n_seqs, int64_t rows, int64_t hkv, int64_t tq, int64_t bs,
                                 unsigned long long *first) {
    const int     lane = threadIdx.x & 31;
    const int64_t r    = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    if (r >= rows * hkv) return;
    const int64_t g = r / rows, t = r % rows;
    const int     s = seq_of_row(seqs, n_seqs, t);
    const int64_t token = seqs[s].q0 + (t - seqs[s].cq), nb = (seqs[s].nk + bs - 1) / bs;
    const int32_t *row = sel + g * ss0 + token * ss1;
    int64_t        prev = -1;
    int            done = 0;
    for (int64_t c0 = 0; c0 < K; c0 += 32) {
        int64_t c   = c0 + lane;
        int64_t b   = c < K ? row[c] : -1;
        int64_t pb  = __shfl_up_sync(0xffffffffu, b, 1);
        if (lane == 0) pb = prev;
        unsigned neg = __ballot_sync(0xffffffffu, c < K && b == -1);
        int      pad = done || (neg & ((1u << lane) - 1u)) != 0; /* a -1 came before this entry */
        int      bad = c < K && (pad ? b != -1 : (b != -1 && (b <= pb || b >= nb)));
        unsigned badm = __ballot_sync(0xffffffffu, bad);
        if (badm) {
            if (lane == __ffs(badm) - 1) atomicMin(first, (unsigned long long)((g * tq + token) * K + c));
            return;
        }
        prev = __shfl_sync(0xffffffffu, b, 31);
        done = done || neg != 0;
    }
}

enum ifl_status cuda_check_sel(struct ifl_ctx *ctx, const char *fn, const struct ifl__problem *pb) {
    struct cuda_state       *cs  = cuda_of(ctx);
    const struct ifl_tensor *sel = pb->sel;
    const int64_t            K   = sel->shape[2];
    enum ifl_status          st  = IFL_STATUS_OK;
    void                    *d_seqs = NULL;
    int32_t                 *row    = NULL;
    unsigned long long       first  = NONE;
    int64_t                  rows   = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) rows += pb->seqs[s].nq;
    if (rows == 0) goto done;
    if ((st = cuda_seqs_upload(ctx, pb, 0, &d_seqs, NULL, NULL))) goto done;
    CU_GOTO(ctx, cudaMemsetAsync(cs->dflags, 0xff, sizeof *cs->dflags, cs->stream));
    {
        int64_t warps = rows * pb->hkv, blocks = (warps * 32 + 255) / 256;
        sel_check_kernel<<<(unsigned)blocks, 256, 0, cs->stream>>>((const int32_t *)sel->data, sel->stride[0], sel->stride[1], K,
                                                                   (const struct dseq *)d_seqs, (int)pb->n_seqs, rows,
                                                                   pb->hkv, pb->tq, pb->cfg.block_size, cs->dflags);
        CU_GOTO(ctx, cudaGetLastError());
    }
    CU_GOTO(ctx, cudaMemcpyAsync(&first, cs->dflags, sizeof first, cudaMemcpyDeviceToHost, cs->stream));
    CU_GOTO(ctx, cudaStreamSynchronize(cs->stream));
    if (first != NONE) {
        /* the row back on the host, judged by the same rule as check.c for the same message */
        int64_t g = (int64_t)(first / (unsigned long long)K) / pb->tq, i = (int64_t)(first / (unsigned long long)K) % pb->tq;
        int64_t c = (int64_t)(first % (unsigned long long)K);
        row = (int32_t *)malloc((size_t)K * sizeof *row);
        if (row == NULL) {
            st = IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn);
            goto done;
        }
        CU_GOTO(ctx, cudaMemcpy(row, (const int32_t *)sel->data + g * sel->stride[0] + i * sel->stride[1], (size_t)K * sizeof *row,
                                cudaMemcpyDeviceToHost));
        int done_pad = 0;
        for (int64_t x = 0; x < c; x++) done_pad |= row[x] == -1;
        st = IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: sel[%lld, %lld, %lld]=%d, expected %s", fn, (long long)g, (long long)i,
                      (long long)c, (int)row[c],
                      done_pad ? "-1 (padding continues to the end of a row)"
                               : "a block index above the previous one and below the sequence's block count, or -1");
    }
done:
    cuda_scratch_free(ctx, d_seqs);
    free(row);
    return st;
}

/* One warp per (KV head, query row of the problem): every column -1. */
__global__ void sel_fill_kernel(int32_t *sel, int64_t ss0, int64_t ss1, int64_t K, const struct dseq *seqs, int n_seqs,
                                int64_t rows, int64_t hkv) {
    const int     lane = threadIdx.x & 31;
    const int64_t r    = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    if (r >= rows * hkv) return;
    const int64_t g = r / rows, t = r % rows;
    const int     s = seq_of_row(seqs, n_seqs, t);
    int32_t      *row = sel + g * ss0 + (seqs[s].q0 + (t - seqs[s].cq)) * ss1;
    for (int64_t c = lane; c < K; c += 32) row[c] = -1;
}

enum ifl_status cuda_fill_sel(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    struct cuda_state *cs     = cuda_of(ctx);
    enum ifl_status    st     = IFL_STATUS_OK;
    void              *d_seqs = NULL;
    int64_t            rows   = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) rows += pb->seqs[s].nq;
    if (rows > 0) {
        if ((st = cuda_seqs_upload(ctx, pb, 0, &d_seqs, NULL, NULL))) goto done;
        int64_t blocks = (rows * pb->hkv * 32 + 255) / 256;
        sel_fill_kernel<<<(unsigned)blocks, 256, 0, cs->stream>>>((int32_t *)pb->sel->data, pb->sel->stride[0], pb->sel->stride[1],
                                                                  pb->sel->shape[2], (const struct dseq *)d_seqs, (int)pb->n_seqs,
                                                                  rows, pb->hkv);
        CU_GOTO(ctx, cudaGetLastError());
    }
done:
    cuda_scratch_free(ctx, d_seqs);
    return st;
}
