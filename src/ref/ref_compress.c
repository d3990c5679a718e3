/* SPDX-License-Identifier: MIT
 *
 * ref_compress.c -- compressed keys (spec §2.1): the mean of every complete window of `kernel`
 * keys, windows starting every `stride` keys. A trailing partial window makes no key. The mean is
 * taken in float64 and rounded to the keys' dtype, so bf16 keys give bf16 compressed keys.
 */
#include "ref.h"

#include <stdlib.h>
#include <string.h>

void ref_compress_seq(const double *k, int64_t nk, int64_t hkv, int64_t d, int64_t kernel,
                      int64_t stride, enum ifl_dtype dtype, double *out) {
    int64_t n = ifl_compressed_len(nk, (int32_t)kernel, (int32_t)stride);
    for (int64_t j = 0; j < n; j++)
        for (int64_t g = 0; g < hkv; g++) {
            double *c = out + (j * hkv + g) * d; /* c[d] = mean of k[j*stride .. +kernel-1, g] */
            memset(c, 0, (size_t)d * sizeof *c);
            for (int64_t t = j * stride; t < j * stride + kernel; t++)
                for (int64_t x = 0; x < d; x++) c[x] += k[(t * hkv + g) * d + x];
            for (int64_t x = 0; x < d; x++) c[x] = ifl__round(dtype, c[x] / (double)kernel);
        }
}

/* Compresses every sequence's keys with one kernel and stores them packed into `out`. */
static enum ifl_status compress_into(struct ifl_ctx *ctx, const struct ifl__problem *pb,
                                     const double *k, int64_t kernel, int64_t stride,
                                     const struct ifl_tensor *out) {
    double *c = malloc((size_t)(out->shape[0] * pb->hkv * pb->d) * sizeof *c);
    if (c == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "ifl_compress_keys: out of memory");
    int64_t row = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const struct ifl__seq *sq = &pb->seqs[s];
        ref_compress_seq(k + sq->k0 * pb->hkv * pb->d, sq->nk, pb->hkv, pb->d, kernel, stride,
                         pb->k->dtype, c + row * pb->hkv * pb->d);
        row += ifl_compressed_len(sq->nk, (int32_t)kernel, (int32_t)stride);
    }
    ref_store_rows(out, c, 0, row);
    free(c);
    return IFL_STATUS_OK;
}

enum ifl_status ref_compress_keys(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    double *k = ref_load(pb->k);
    if (k == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "ifl_compress_keys: out of memory");
    enum ifl_status st = IFL_STATUS_OK;
    if (pb->c1)
        st = compress_into(ctx, pb, k, pb->cfg.kernel_size, pb->cfg.kernel_stride, pb->c1);
    if (st == IFL_STATUS_OK && pb->c2)
        st = compress_into(ctx, pb, k, pb->cfg.coarse_kernel_size, pb->cfg.coarse_kernel_stride, pb->c2);
    free(k);
    return st;
}
