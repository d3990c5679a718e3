/* SPDX-License-Identifier: MIT
 *
 * linear.h -- the linear layers of the model: y[n][rows] = x[n][cols] · Wᵀ with W [rows, cols]
 * in bf16, f16 or f32 (PyTorch nn.Linear layout), x and y f32, f32 accumulation.
 *
 * Two kernels (linear_kernels.c, compiled once per instruction set, picked at run time like the
 * cpu backend of libinfllm: AVX-512, AVX2+FMA+F16C, portable):
 *   - GEMV (few tokens, decode): streams each weight row once, 4 rows at a time, dot products
 *     over the row with the token's activations; bounded by reading the weights.
 *   - GEMM (prefill): a panel of NR rows (2 vectors) is converted to f32 and transposed into a
 *     packed [KC][NR] tile, then reused for every token (6 tokens x NR rows of accumulators per
 *     step): each loaded weight serves all tokens of the chunk.
 * Work is split over row blocks and run on the worker threads of a libinfllm cpu context; every output element is
 * computed by one task with a fixed summation order, so results do not depend on the thread
 * count.
 */
#ifndef INFLLM_RT_LINEAR_H
#define INFLLM_RT_LINEAR_H

#include "infllm.h"

#include <stddef.h>
#include <stdint.h>

enum rt_wtype { RT_W_F32, RT_W_BF16, RT_W_F16 };

/* A weight matrix [rows, cols], row-major, not owned (usually inside a mapped file). */
struct rt_mat {
    const void   *data;
    enum rt_wtype type;
    int64_t       rows, cols;
};

struct rt_linear;

/* The linear layers of a libinfllm cpu context: its instruction-set level (ifl_ctx_simd: the
 * best this processor runs, or the one INFLLM_SIMD asks for) and its worker threads
 * (ifl_ctx_parallel), so the model and its attention share one pool. ctx must outlive lin.
 * Returns 0, or -1 with a message. */
int  rt_linear_create(struct ifl_ctx *ctx, struct rt_linear **out, char *err, size_t errlen);
void rt_linear_destroy(struct rt_linear *lin);

/* y_i[n][w_i.rows] = x[n][cols] · w_iᵀ for i < n_mats (all w_i have the same cols), in one
 * parallel run (fusing q/k/v or gate/up saves thread wake-ups). y_i must not overlap x.
 * Returns 0, or -1 when scratch memory cannot be allocated. */
int rt_linear_multi(struct rt_linear *lin, const struct rt_mat *w, int n_mats, const float *x,
                    int64_t n, float *const *y);

/* One matrix. */
int rt_linear_fwd(struct rt_linear *lin, const struct rt_mat *w, const float *x, int64_t n,
                  float *y);

/* Time spent in rt_linear_* and the FLOPs (2·n·rows·cols per matrix) since the last reset. */
void rt_linear_stats(const struct rt_linear *lin, double *seconds, double *flops);
void rt_linear_stats_reset(struct rt_linear *lin);

/* ---- the per-ISA kernels (linear_kernels.c) ---- */

#define RT_GEMM_MR 6   /* tokens per micro-kernel step */
#define RT_GEMM_KC 128 /* columns per packed tile */

struct rt_lin_kernels {
    const char *name;
    int         nr; /* rows of a GEMM panel: 2 vectors */
    /* rows r0..r1-1 of y[t][ldy] for tokens t < n (n small); xp: x de-interleaved by
     * `deinterleave` (used for bf16 weights; may be NULL) */
    void (*gemv)(const struct rt_mat *w, const float *x, const float *xp, int64_t n, float *y,
                 int64_t ldy, int64_t r0, int64_t r1);
    /* rows r0..r1-1 (r0 a multiple of nr) for all n tokens; pack: RT_GEMM_KC*nr floats */
    void (*gemm)(const struct rt_mat *w, const float *x, int64_t n, float *y, int64_t ldy,
                 int64_t r0, int64_t r1, float *pack);
    void (*deinterleave)(const float *x, int64_t n, int64_t cols, float *xp); /* xp [n][cols] */
};

extern const struct rt_lin_kernels rt_lin_kernels_scalar, rt_lin_kernels_avx2,
    rt_lin_kernels_avx512;

#endif /* INFLLM_RT_LINEAR_H */
