/* SPDX-License-Identifier: MIT
 *
 * cuda_compress.cu -- compressed keys (spec §2.1): the mean of every complete window of `kernel`
 * keys, windows every `stride` keys, per sequence and KV head, rounded to the keys' dtype (what
 * the reference and a KV cache hold). Memory-bound: one block per (compressed row, KV head), one
 * thread per head-dim element summing its window in f32 (f64 for f64 keys), coalesced along D.
 */
#include "cuda_common.cuh"

template <typename T>
__global__ void compress_kernel(const T *k, int64_t ks0, int64_t ks1, const struct dseq *seqs, int n_seqs, int which,
                                int64_t kernel, int64_t stride, int64_t hkv, int64_t D, struct dtensor out) {
    typedef typename acc_of<T>::type A;
    const int64_t row = blockIdx.x / hkv, g = blockIdx.x % hkv;
    const int     s   = which == 1 ? seq_find<&dseq::c1>(seqs, n_seqs, row) : seq_find<&dseq::c2>(seqs, n_seqs, row);
    const int64_t j   = row - (which == 1 ? seqs[s].c1 : seqs[s].c2);
    const T      *src = k + (seqs[s].k0 + j * stride) * ks0 + g * ks1;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        A sum = 0;
        for (int64_t t = 0; t < kernel; t++) sum += to_acc(src[t * ks0 + d]);
        store_any(out.data, out.dtype, row * out.s0 + g * out.s1 + d, (double)round_to<T>(sum / (A)kernel));
    }
}

template <typename T>
static enum ifl_status launch_compress(struct ifl_ctx *ctx, const struct ifl__problem *pb, const struct dseq *d_seqs,
                                       int which, int64_t n_rows, struct dtensor out) {
    struct cuda_state *cs     = cuda_of(ctx);
    const int64_t      kernel = which == 1 ? pb->cfg.kernel_size : pb->cfg.coarse_kernel_size;
    const int64_t      stride = which == 1 ? pb->cfg.kernel_stride : pb->cfg.coarse_kernel_stride;
    int64_t            blocks = n_rows * pb->hkv;
    int                threads = pb->d >= 128 ? 128 : (int)((pb->d + 31) / 32 * 32);
    if (blocks == 0) return IFL_STATUS_OK;
    if (blocks > 0x7fffffff) return IFL_FAIL(ctx, IFL_STATUS_UNSUPPORTED, "ifl_compress_keys: too many compressed rows for one launch");
    compress_kernel<T><<<(unsigned)blocks, threads, 0, cs->stream>>>((const T *)pb->k->data, pb->k->stride[0], pb->k->stride[1],
                                                                     d_seqs, (int)pb->n_seqs, which, kernel, stride, pb->hkv,
                                                                     pb->d, out);
    CU_LAUNCHED(ctx);
    return IFL_STATUS_OK;
}

enum ifl_status cuda_compress(struct ifl_ctx *ctx, const struct ifl__problem *pb, const struct dseq *d_seqs, int which,
                              int64_t n_rows, struct dtensor out) {
    switch (pb->k->dtype) {
    case IFL_DTYPE_F64: return launch_compress<double>(ctx, pb, d_seqs, which, n_rows, out);
    case IFL_DTYPE_F32: return launch_compress<float>(ctx, pb, d_seqs, which, n_rows, out);
    case IFL_DTYPE_F16: return launch_compress<__half>(ctx, pb, d_seqs, which, n_rows, out);
    case IFL_DTYPE_BF16: return launch_compress<__nv_bfloat16>(ctx, pb, d_seqs, which, n_rows, out);
    default: return IFL_FAIL(ctx, IFL_STATUS_INTERNAL, "ifl_compress_keys: unexpected key dtype");
    }
}

/* ---- a caller's compressed keys, into k's dtype, contiguous ---- */

template <typename T>
__global__ void copy_rows_kernel(const void *src, int sdt, int64_t s0, int64_t s1, int64_t n, int64_t hkv, int64_t D, T *dst) {
    const int64_t total = n * hkv * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t d = i % D, g = (i / D) % hkv, r = i / (D * hkv);
        dst[i]    = (T)load_any(src, sdt, r * s0 + g * s1 + d);
    }
}
template <>
__global__ void copy_rows_kernel<__half>(const void *src, int sdt, int64_t s0, int64_t s1, int64_t n, int64_t hkv, int64_t D,
                                         __half *dst) {
    const int64_t total = n * hkv * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t d = i % D, g = (i / D) % hkv, r = i / (D * hkv);
        dst[i]    = __float2half_rn((float)load_any(src, sdt, r * s0 + g * s1 + d));
    }
}
template <>
__global__ void copy_rows_kernel<__nv_bfloat16>(const void *src, int sdt, int64_t s0, int64_t s1, int64_t n, int64_t hkv,
                                                int64_t D, __nv_bfloat16 *dst) {
    const int64_t total = n * hkv * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t d = i % D, g = (i / D) % hkv, r = i / (D * hkv);
        dst[i]    = __float2bfloat16_rn((float)load_any(src, sdt, r * s0 + g * s1 + d));
    }
}

enum ifl_status cuda_copy_rows(struct ifl_ctx *ctx, const struct ifl__problem *pb, const struct ifl_tensor *src, void *dst) {
    struct cuda_state *cs = cuda_of(ctx);
    const int64_t      n = src->shape[0], total = n * pb->hkv * pb->d;
    int64_t            blocks = (total + 255) / 256;
    if (blocks > (int64_t)cs->n_sm * 32) blocks = (int64_t)cs->n_sm * 32;
    if (blocks < 1) blocks = 1;
#define COPY(T) copy_rows_kernel<T><<<(unsigned)blocks, 256, 0, cs->stream>>>(src->data, (int)src->dtype, src->stride[0], src->stride[1], n, pb->hkv, pb->d, (T *)dst)
    switch (pb->k->dtype) {
    case IFL_DTYPE_F64: COPY(double); break;
    case IFL_DTYPE_F32: COPY(float); break;
    case IFL_DTYPE_F16: COPY(__half); break;
    case IFL_DTYPE_BF16: COPY(__nv_bfloat16); break;
    default: return IFL_FAIL(ctx, IFL_STATUS_INTERNAL, "%s: unexpected key dtype", pb->fn);
    }
#undef COPY
    CU_LAUNCHED(ctx);
    return IFL_STATUS_OK;
}
