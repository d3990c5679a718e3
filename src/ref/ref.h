/* SPDX-License-Identifier: MIT
 *
 * ref.h -- the float64 reference backend: plain scalar loops that read like the spec
 * (../shared/docs/infllmv2.md). Inputs of any dtype are converted to float64 on entry and results
 * rounded to the output dtypes on exit; every sum is accumulated in float64.
 */
#ifndef INFLLM_REF_H
#define INFLLM_REF_H

#include "../core/internal.h"

/* A float64 copy of a whole rank-2/3 tensor, contiguous [shape0, shape1, shape2]; NULL when out
 * of memory (or t is NULL). Free with free(). */
double *ref_load(const struct ifl_tensor *t);

/* Stores rows row0 .. row0+n_rows-1 (first dimension) of x (contiguous, the tensor's shape). */
void ref_store_rows(const struct ifl_tensor *t, const double *x, int64_t row0, int64_t n_rows);

/* Mean-pooled compressed keys of one sequence (spec §2.1): the mean in float64, rounded to
 * `dtype`, the storage dtype of the keys (as the spec stores them, and as a KV cache keeps them).
 *   k   : [nk, hkv, d] contiguous float64 (the sequence's keys only)
 *   out : [ifl_compressed_len(nk, kernel, stride), hkv, d] */
void ref_compress_seq(const double *k, int64_t nk, int64_t hkv, int64_t d, int64_t kernel,
                      int64_t stride, enum ifl_dtype dtype, double *out);

enum ifl_status ref_compress_keys(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status ref_select(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status ref_sparse_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status ref_dense_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status ref_sparse_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status ref_dense_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb);

#endif /* INFLLM_REF_H */
