/* SPDX-License-Identifier: MIT
 *
 * cpu_ops.c -- the op table of one instruction-set build (compiled once per ISA, see cpu_simd.h).
 */
#include "cpu_kernels.h"

enum ifl_status CPU_FN(cpu_compress_keys)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_select)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_sparse_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_dense_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_sparse_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
enum ifl_status CPU_FN(cpu_dense_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);

const struct cpu_isa_ops CPU_FN(cpu_ops) = {
    .compress_keys = CPU_FN(cpu_compress_keys),
    .select        = CPU_FN(cpu_select),
    .sparse_fwd    = CPU_FN(cpu_sparse_fwd),
    .dense_fwd     = CPU_FN(cpu_dense_fwd),
    .sparse_bwd    = CPU_FN(cpu_sparse_bwd),
    .dense_bwd     = CPU_FN(cpu_dense_bwd),
};
