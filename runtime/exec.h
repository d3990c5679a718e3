/* SPDX-License-Identifier: MIT
 *
 * exec.h -- the compute interface of the model runtime: every operation of the MiniCPM4 forward
 * pass that reads or writes activations, behind one table of functions, so that the forward
 * pass (model_forward.c, the one description of the model) runs on whichever implementation the
 * model was given. The attention is not here: it is libinfllm's KV cache on the implementation's
 * context (exec->ctx), which the description calls directly.
 *
 * An implementation owns where activations live (host memory for exec_cpu.c; device memory for a
 * GPU one: then activations are device pointers the description only passes along, and the
 * implementation mirrors the weights it is handed, which are host or memory-mapped). Shapes are
 * row-major f32: x [n][H] is n tokens of H features. Every function returns 0, or -1 when it
 * cannot allocate scratch (the description reports "out of memory"). Implementations must give
 * results that do not depend on the thread count.
 *
 * exec_cpu.c is the cpu implementation (docs/design.md, "adding a runtime backend", says how to
 * add another).
 */
#ifndef INFLLM_RT_EXEC_H
#define INFLLM_RT_EXEC_H

#include "infllm.h"
#include "linear.h"

#include <stddef.h>
#include <stdint.h>

/* RoPE (minicpm4.md §2.4) of one model: angle_i(p) = f32(f32(p * rext[i]) * inv[i]), cos and sin
 * times s, pairs (i, i + D/2). Built once at load (model_forward.c: rt_model_rope_init). */
struct rt_rope {
    int64_t head_dim;
    float  *inv, *rext; /* [head_dim/2] */
    float   s;
};

struct rt_exec;

struct rt_exec_ops {
    const char *name;
    void (*destroy)(struct rt_exec *ex);
    /* n floats of activation memory; free(NULL) is a no-op */
    int (*alloc)(struct rt_exec *ex, size_t n, float **out);
    void (*free)(struct rt_exec *ex, float *p);
    /* x[t] = scale * E[tokens[t]] for t < n; tokens in host memory, each in [0, e->rows) */
    int (*embed)(struct rt_exec *ex, const struct rt_mat *e, const int32_t *tokens, int64_t n, float scale,
                 float *x);
    /* y[t] = g ⊙ x[t] / sqrt(mean(x[t]²) + eps) * post, g [H] f32 (host) */
    int (*rmsnorm)(struct rt_exec *ex, const float *x, const float *g, float *y, int64_t n, int64_t H, double eps,
                   float post);
    /* y_i[n][w_i.rows] = x[n][cols] · w_iᵀ, i < n_mats (<= 8, one cols); y_i must not overlap x */
    int (*linear)(struct rt_exec *ex, const struct rt_mat *w, int n_mats, const float *x, int64_t n,
                  float *const *y);
    /* the cos/sin tables of positions p0 .. p0+n-1, kept for the next `rope` calls */
    int (*rope_tables)(struct rt_exec *ex, const struct rt_rope *r, int64_t p0, int64_t n);
    /* rotates u [n][nh][D] in place with the tables of the last rope_tables */
    int (*rope)(struct rt_exec *ex, float *u, int64_t n, int64_t nh);
    /* g[i] = silu(g[i]) * u[i] for i < n */
    int (*swiglu)(struct rt_exec *ex, float *g, const float *u, int64_t n);
    /* x[i] += r * o[i] for i < n */
    int (*residual)(struct rt_exec *ex, float *x, const float *o, float r, int64_t n);
    /* logits[rows][w.rows] = a[rows][cols] · wᵀ, written to HOST memory */
    int (*logits)(struct rt_exec *ex, const struct rt_mat *w, const float *a, int64_t rows, float *logits);
    /* seconds spent in linear/logits and their FLOPs since the last reset */
    void (*linear_stats)(const struct rt_exec *ex, double *seconds, double *flops);
    void (*linear_stats_reset)(struct rt_exec *ex);
};

struct rt_exec {
    const struct rt_exec_ops *ops;
    struct ifl_ctx           *ctx;  /* libinfllm context: the KV caches and the attention run on it */
    void                     *impl; /* the implementation's state */
};

/* The cpu implementation on a libinfllm cpu context (its instruction set and thread pool; ctx
 * must outlive the exec). Returns 0, or -1 with a message. */
int rt_exec_cpu_create(struct ifl_ctx *ctx, struct rt_exec **out, char *err, size_t errlen);

/* NULL: no-op. */
void rt_exec_destroy(struct rt_exec *ex);

#endif /* INFLLM_RT_EXEC_H */
