/* SPDX-License-Identifier: MIT
 *
 * cpu_backend.c -- the cpu backend's vtable: picks the instruction-set build at context creation
 * (ifl_simd_resolve: the best the processor runs, or the one forced by ifl_ctx_params.simd /
 * INFLLM_SIMD), starts the thread pool (which ifl_ctx_parallel also lends to the caller), and
 * forwards every op to that build.
 */
#define _POSIX_C_SOURCE 200809L
#include "cpu.h"

#include <stdlib.h>
#include <unistd.h>

static enum ifl_status cpu_init(struct ifl_ctx *ctx) {
    enum ifl_simd   want;
    enum ifl_status st = ifl_simd_resolve(ctx->params.simd, &want, NULL, 0); /* simd.c */
    if (st != IFL_STATUS_OK) return st;
    struct cpu_state *cs = calloc(1, sizeof *cs);
    if (cs == NULL) return IFL_STATUS_OUT_OF_MEMORY;
    cs->ops = want == IFL_SIMD_AVX512 ? &cpu_ops_avx512 : want == IFL_SIMD_AVX2 ? &cpu_ops_avx2 : &cpu_ops_scalar;
    int n = ctx->params.n_threads;
    if (n == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n           = online > 0 ? (int)(online > 256 ? 256 : online) : 1;
    }
    if (cpu_pool_create(n, &cs->pool) != 0) {
        free(cs);
        return IFL_STATUS_OUT_OF_MEMORY;
    }
    ctx->impl      = cs;
    ctx->simd      = want;
    ctx->n_threads = n;
    return IFL_STATUS_OK;
}

static void cpu_release(struct ifl_ctx *ctx) {
    struct cpu_state *cs = ctx->impl;
    if (cs == NULL) return;
    cpu_pool_destroy(cs->pool);
    free(cs);
    ctx->impl = NULL;
}

static void parallel(struct ifl_ctx *ctx, int64_t n_tasks, void (*fn)(void *, int64_t, int), void *arg) {
    cpu_pool_run(((struct cpu_state *)ctx->impl)->pool, n_tasks, fn, arg);
}

static const struct cpu_isa_ops *ops(struct ifl_ctx *ctx) { return ((struct cpu_state *)ctx->impl)->ops; }

static enum ifl_status compress_keys(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return ops(ctx)->compress_keys(ctx, pb); }
static enum ifl_status select_blocks(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return ops(ctx)->select(ctx, pb); }
static enum ifl_status sparse_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return ops(ctx)->sparse_fwd(ctx, pb); }
static enum ifl_status dense_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return ops(ctx)->dense_fwd(ctx, pb); }
static enum ifl_status sparse_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return ops(ctx)->sparse_bwd(ctx, pb); }
static enum ifl_status dense_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return ops(ctx)->dense_bwd(ctx, pb); }

const struct ifl__backend ifl__backend_cpu = {
    .name          = "cpu",
    .init          = cpu_init,
    .release       = cpu_release,
    .parallel      = parallel,
    .compress_keys = compress_keys,
    .select        = select_blocks,
    .sparse_fwd    = sparse_fwd,
    .dense_fwd     = dense_fwd,
    .sparse_bwd    = sparse_bwd,
    .dense_bwd     = dense_bwd,
};
