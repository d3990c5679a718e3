/* SPDX-License-Identifier: MIT
 *
 * check.h -- validation of every public entry point's arguments, and nothing else.
 * Each function returns IFL_STATUS_OK or records a message naming the public function (fn), the
 * argument and what was expected, and returns the failing status. None writes any output.
 */
#ifndef INFLLM_CHECK_H
#define INFLLM_CHECK_H

#include "internal.h"

/* Which float dtypes an argument accepts. */
enum ifl__accept {
    IFL__ACCEPT_FLOAT, /* f64, f32, f16, bf16 */
    IFL__ACCEPT_LSE,   /* f64, f32 */
    IFL__ACCEPT_INDEX, /* i32 */
};

/* ctx must be live; returns INVALID_ARG (without a message: there is no context to hold it). */
enum ifl_status ifl__check_ctx(struct ifl_ctx *ctx);

/* Validates cfg (NULL = default) and copies it to *out (scale still unresolved). */
enum ifl_status ifl__check_config(struct ifl_ctx *ctx, const char *fn,
                                  const struct ifl_sparse_config *cfg,
                                  struct ifl_sparse_config *out);

/* Starts a problem: config, q [Tq,Hq,D], k [Tk,Hkv,D], v (NULL when the op takes none) of one
 * float dtype, the batch resolved into pb->seqs (allocated: release with ifl__problem_end). */
enum ifl_status ifl__problem_begin(struct ifl_ctx *ctx, const char *fn,
                                   const struct ifl_sparse_config *cfg,
                                   const struct ifl_batch *batch, const struct ifl_tensor *q,
                                   const struct ifl_tensor *k, const struct ifl_tensor *v,
                                   struct ifl__problem *pb);

/* Frees what ifl__problem_begin allocated; safe on a zeroed problem. */
void ifl__problem_end(struct ifl__problem *pb);

/* A tensor argument of rank ndim and exactly the given shape (shape[i] < 0 = any), with the last
 * dimension contiguous, non-negative strides and an addressable span. */
enum ifl_status ifl__check_tensor(struct ifl_ctx *ctx, const char *fn, const char *name,
                                  const struct ifl_tensor *t, int ndim, const int64_t *shape,
                                  enum ifl__accept accept);

/* sel as an input of stage 2: [Hkv, Tq, K] i32, each row strictly ascending valid block indices
 * of its sequence followed by -1 padding. */
enum ifl_status ifl__check_sel_input(struct ifl_ctx *ctx, const char *fn,
                                     const struct ifl__problem *pb, const struct ifl_tensor *sel);

/* sel as an output: [Hkv, Tq, K] i32 with K >= the selection width of every sequence s with
 * need[s] != 0 (need NULL = every sequence). */
enum ifl_status ifl__check_sel_output(struct ifl_ctx *ctx, const char *fn,
                                      const struct ifl__problem *pb, const struct ifl_tensor *sel,
                                      const unsigned char *need);

/* No output may overlap an input or another output. NULL entries are skipped. */
enum ifl_status ifl__check_overlap(struct ifl_ctx *ctx, const char *fn,
                                   const struct ifl_tensor *const *outs, const char *const *out_names,
                                   int n_outs, const struct ifl_tensor *const *ins,
                                   const char *const *in_names, int n_ins);

/* When the context asks for it, refuses a NaN or Inf in t, naming its position. */
enum ifl_status ifl__check_finite(struct ifl_ctx *ctx, const char *fn, const char *name,
                                  const struct ifl_tensor *t);

#endif /* INFLLM_CHECK_H */
