/* SPDX-License-Identifier: MIT
 *
 * cpu.h -- the cpu backend's internal interface. The ops are compiled once per instruction set
 * (cpu_simd.h); cpu_backend.c picks a table at context creation and runs it on the thread pool.
 */
#ifndef INFLLM_CPU_H
#define INFLLM_CPU_H

#include "../core/internal.h"
#include "threadpool.h"

/* The ops of one instruction-set build. */
struct cpu_isa_ops {
    enum ifl_status (*compress_keys)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*select)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*sparse_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*dense_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*sparse_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*dense_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
};

extern const struct cpu_isa_ops cpu_ops_scalar, cpu_ops_avx2, cpu_ops_avx512;

/* ctx->impl of a cpu context. */
struct cpu_state {
    struct cpu_pool          *pool;
    const struct cpu_isa_ops *ops;
};

static inline struct cpu_pool *cpu_pool_of(struct ifl_ctx *ctx) {
    return ((struct cpu_state *)ctx->impl)->pool;
}

#endif /* INFLLM_CPU_H */
