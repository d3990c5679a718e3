/* SPDX-License-Identifier: MIT
 *
 * internal.h -- what the core layer shares with the backends: the context, the error funnel,
 * the validated "problem" every op is turned into, and the backend vtable.
 * Nothing here is public; include/infllm.h is the only public header.
 */
#ifndef INFLLM_INTERNAL_H
#define INFLLM_INTERNAL_H

#include "infllm.h"

#include <stdarg.h>

/* ---- context ---- */

#define IFL__CTX_MAGIC 0x49464c43u /* "IFLC": a live context */
#define IFL__CTX_DEAD  0x44454144u /* "DEAD": set by destroy, so a stale handle is caught */

struct ifl__backend;

struct ifl_ctx {
    uint32_t                   magic;
    struct ifl_ctx_params      params;
    const struct ifl__backend *backend;
    enum ifl_simd              simd;      /* resolved level (cpu backend) */
    int                        n_threads; /* resolved worker count */
    void                      *impl;      /* the backend's own state (thread pool, ...) */
    char                       errmsg[1024];
};

/* Every failure goes through here: records the message on ctx and returns status. One place to
 * put a breakpoint. file/line are for debuggers, not for the message. */
enum ifl_status ifl__fail(struct ifl_ctx *ctx, enum ifl_status status, const char *file, int line,
                          const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
#define IFL_FAIL(ctx, status, ...) ifl__fail((ctx), (status), __FILE__, __LINE__, __VA_ARGS__)

/* bytes (>= 1) of the backend's memory for an op's scratch (ifl_buffer_alloc, with a message
 * naming fn); free with ifl_buffer_free. */
enum ifl_status ifl__scratch_alloc(struct ifl_ctx *ctx, const char *fn, size_t bytes, void **out);

/* 1 when ctx is a live context. */
int ifl__ctx_ok(const struct ifl_ctx *ctx);

/* ---- tensors (tensor.c) ---- */

/* Offset in elements of element (i0, i1, i2) of a rank-2 or rank-3 tensor. */
static inline int64_t ifl__off3(const struct ifl_tensor *t, int64_t i0, int64_t i1, int64_t i2) {
    return i0 * t->stride[0] + i1 * t->stride[1] + (t->ndim > 2 ? i2 * t->stride[2] : 0);
}

/* Element at offset off (in elements) of a float or int tensor, as a double. */
double ifl__load(const struct ifl_tensor *t, int64_t off);

/* Stores x at offset off, rounding to the tensor's dtype (round to nearest even). */
void ifl__store(const struct ifl_tensor *t, int64_t off, double x);

/* x rounded to a float dtype and back (the identity for f64). */
double ifl__round(enum ifl_dtype dtype, double x);

/* 1 for f64/f32/f16/bf16. */
int ifl__dtype_is_float(enum ifl_dtype dtype);

/* ---- the validated problem (check.c fills it, backends read it) ---- */

/* One sequence of the batch: its query rows [q0, q0+nq) and key rows [k0, k0+nk); its
 * queries sit at absolute positions past .. past+nq-1 with past = nk - nq. */
struct ifl__seq {
    int64_t q0, nq;
    int64_t k0, nk;
    int64_t past;
};

/* Everything an op needs, checked and resolved. Tensor pointers an op does not use are NULL.
 * For select, c1/c2 (when not NULL) hold the compressed keys of every sequence, packed as
 * ifl_compress_keys writes them, so a KV cache need not recompute them; else the backend
 * computes them from k.
 * Shapes: q/out/dout/dq [Tq, Hq, D], k/v/dk/dv [Tk, Hkv, D], lse [Tq, Hq], sel [Hkv, Tq, K],
 * c1 [N1, Hkv, D], c2 [N2, Hkv, D]. */
struct ifl__problem {
    const char              *fn;  /* the public function being served: messages name it */
    struct ifl_sparse_config cfg; /* validated; scale already resolved (never 0) */
    int64_t                  n_seqs;
    struct ifl__seq         *seqs; /* [n_seqs], owned by the dispatch layer */
    int64_t                  tq, tk, hq, hkv, g, d;
    const struct ifl_tensor *q, *k, *v;
    const struct ifl_tensor *sel;
    const struct ifl_tensor *out, *lse;
    const struct ifl_tensor *dout, *dq, *dk, *dv;
    const struct ifl_tensor *c1, *c2;
};

/* ---- backends ---- */

/* A backend: one function per op, each reading a validated problem and writing its outputs.
 * They may fail only on resources (OUT_OF_MEMORY, DEVICE) or internal errors. */
struct ifl__backend {
    const char *name;
    /* (optional) sets ctx->simd, ctx->n_threads and ctx->impl; may fail with UNSUPPORTED or
     * OUT_OF_MEMORY (there is no message yet: the context is not returned on failure) */
    enum ifl_status (*init)(struct ifl_ctx *ctx);
    /* (optional) frees ctx->impl */
    void (*release)(struct ifl_ctx *ctx);
    /* 1 when tensors live in device memory: the core then never reads tensor data (the NaN/Inf
     * scan and the check of a selection's contents are the backend's job) */
    int device_memory;
    /* (optional, all or none) device memory; NULL slots mean host memory (malloc/memcpy) */
    enum ifl_status (*buffer_alloc)(struct ifl_ctx *ctx, size_t bytes, void **out);
    void (*buffer_free)(struct ifl_ctx *ctx, void *buf);
    enum ifl_status (*buffer_copy)(struct ifl_ctx *ctx, void *dst, const void *src, size_t bytes, int to_device);
    enum ifl_status (*sync)(struct ifl_ctx *ctx);
    /* (optional) writes -1 to every sel row of pb's sequences; NULL = a host loop in the core */
    enum ifl_status (*clear_sel)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*compress_keys)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*select)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*sparse_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*dense_fwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*sparse_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    enum ifl_status (*dense_bwd)(struct ifl_ctx *ctx, const struct ifl__problem *pb);
    /* Slots added later sit here, after the ops, so that a table initialised by position (the
     * cuda backend's, C++) stays valid and leaves them NULL. */
    /* (optional) runs fn for tasks 0..n_tasks-1 on the backend's worker threads (ifl_ctx_parallel);
     * NULL = in the calling thread */
    void (*parallel)(struct ifl_ctx *ctx, int64_t n_tasks, void (*fn)(void *arg, int64_t task, int thread),
                     void *arg);
    /* (optional, device-memory backends) copies the rows of src [n, H, D] (any float dtype, in the
     * backend's memory) into dst of the same shape, converting to dst's dtype; with check_finite
     * on it refuses (INVALID_ARG, naming the element) a finite value the conversion overflows.
     * The KV cache writes appended keys/values and converted queries with it; a device backend
     * without it gets UNSUPPORTED from ifl_kv_cache_append and ifl_kv_cache_attn. Host backends
     * leave it NULL (the core's loop does it). */
    enum ifl_status (*copy_rows)(struct ifl_ctx *ctx, const struct ifl_tensor *dst, const struct ifl_tensor *src);
};

extern const struct ifl__backend ifl__backend_ref;
extern const struct ifl__backend ifl__backend_cpu;
#ifdef IFL_WITH_CUDA
extern const struct ifl__backend ifl__backend_cuda;
#endif

/* ---- the dense/sparse switch (switch.c) ---- */

/* 1 when a sequence of n_keys keys runs sparse: dense_len == -1 or n_keys >= dense_len. */
int ifl__runs_sparse(const struct ifl_sparse_config *cfg, int64_t n_keys);

/* The switchable forward on a validated problem whose out and lse are set (and c1/c2, which only
 * select reads): select + sparse_fwd for the sequences with sparse[s] != 0, dense_fwd for the
 * others, whose rows of pb->sel (when not NULL, already checked) get -1. pb->sel NULL: the
 * selection goes to scratch in the backend's memory. Used by ifl_infllmv2_fwd and the KV cache. */
enum ifl_status ifl__switch_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb, const unsigned char *sparse);

/* ---- derived sizes of the sparse config, shared by every backend ---- */

static inline int64_t ifl__ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Number of local blocks before the query's own block. */
static inline int64_t ifl__local_blocks(const struct ifl_sparse_config *c) {
    return c->window_size / c->block_size;
}

/* Number of compressed keys (kernel/stride) whose whole window ends at or before position p. */
static inline int64_t ifl__visible_compressed(int64_t p, int64_t kernel, int64_t stride) {
    return p + 1 >= kernel ? (p + 1 - kernel) / stride + 1 : 0;
}

#endif /* INFLLM_INTERNAL_H */
