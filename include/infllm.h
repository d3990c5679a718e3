/* SPDX-License-Identifier: MIT
 *
 * infllm.h -- the one public header of libinfllm, a C implementation of InfLLM-V2
 * (arXiv 2509.24663), the dense-sparse switchable attention of MiniCPM4/4.1.
 *
 * Overview
 *   Keys are mean-pooled into compressed keys; every query token scores 64-token blocks through
 *   them (summed over the query heads of its GQA group) and attends only to the top blocks plus
 *   the first block and a local window ("stage 1" selects, "stage 2" attends). Short inputs use
 *   plain dense causal attention, long ones switch to sparse. docs/design.md explains the layout
 *   of the library; ../shared/docs/infllmv2.md is the algorithm this code implements.
 *
 * Conventions that hold for every function below
 *   - Every fallible call returns enum ifl_status; on failure ifl_ctx_errmsg(ctx) names the
 *     function, the argument and what was expected. The library never exits or aborts on a
 *     caller's mistake.
 *   - On any error no output byte is written (validation and allocation happen first).
 *   - Outputs are overwritten, never accumulated. Outputs may not overlap any input or each other.
 *   - Argument order: ctx, config, batch, inputs..., outputs...
 *   - Calls are synchronous. A context is not thread-safe; separate contexts are independent.
 *
 * Shapes (one packed "varlen" batch of sequences, as in FlashAttention's varlen API)
 *   q, out, dout, dq : [Tq, Hq, D]       Tq = total query tokens of all sequences
 *   k, v, dk, dv     : [Tk, Hkv, D]      Tk = total key tokens of all sequences
 *   lse              : [Tq, Hq]          natural-log sum of exp of the scaled scores, f32 or f64
 *   sel              : [Hkv, Tq, K]      int32 block indices of each (KV head, query token) row,
 *                                        ascending, -1 padding at the end
 *   Hq must be a multiple of Hkv (G = Hq/Hkv query heads share one KV head: head h uses KV head
 *   h / G). 1 <= D <= 256. The last dimension of every tensor must be contiguous (stride 1);
 *   other strides are free (in elements, non-negative), so views into larger buffers need no copy.
 *
 * Positions and the past offset
 *   Sequence s has Tq_s queries and Tk_s >= Tq_s keys; its past is Tk_s - Tq_s. Its queries sit at
 *   absolute positions past..past+Tq_s-1 and query i sees keys 0..past+i (causal, bottom-right
 *   aligned). So a chunk of a longer prompt, or a single decode token, is the same call with a
 *   larger past; it gives exactly the rows a full prefill gives.
 */
#ifndef INFLLM_H
#define INFLLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* IFL_API marks what libinfllm exports: the library is built with -fvisibility=hidden, so only
 * the functions declared here (all named ifl_*) are visible to programs linking libinfllm.so;
 * tests/test_symbols.sh fails on any other exported symbol. */
#if defined(__GNUC__)
#define IFL_API __attribute__((visibility("default")))
#else
#define IFL_API
#endif

#define IFL_VERSION_MAJOR  0
#define IFL_VERSION_MINOR  1
#define IFL_VERSION_PATCH  0
#define IFL_VERSION_STRING "0.1.0"

#define IFL_MAX_HEAD_DIM 256 /* largest supported D */

/* ==== Status codes ==== */

enum ifl_status {
    IFL_STATUS_OK = 0,
    IFL_STATUS_INVALID_ARG,   /* NULL pointer, bad config value, NaN/Inf input, bad selection */
    IFL_STATUS_SHAPE,         /* a tensor's rank, dimension or stride does not fit the others */
    IFL_STATUS_DTYPE,         /* a tensor's dtype is not one this argument accepts */
    IFL_STATUS_UNSUPPORTED,   /* valid, but this backend or build cannot do it */
    IFL_STATUS_OUT_OF_MEMORY, /* an allocation failed; nothing was written */
    IFL_STATUS_DEVICE,        /* a device (GPU) runtime error */
    IFL_STATUS_CAPACITY,      /* a fixed-size object (KV cache) is full */
    IFL_STATUS_IO,            /* reading or writing a file failed */
    IFL_STATUS_BAD_FORMAT,    /* a file is malformed */
    IFL_STATUS_INTERNAL,      /* a bug in libinfllm: please report it */
};

/* Static, never NULL: "ok", "invalid argument", ... ("unknown status" for other values). */
IFL_API const char *ifl_status_str(enum ifl_status status);

/* Library version, e.g. "0.1.0". */
IFL_API const char *ifl_version(void);

/* ==== Tensors ==== */

enum ifl_dtype {
    IFL_DTYPE_F64,  /* IEEE double */
    IFL_DTYPE_F32,  /* IEEE single */
    IFL_DTYPE_F16,  /* IEEE half (binary16), stored as uint16_t */
    IFL_DTYPE_BF16, /* bfloat16 (top 16 bits of a float), stored as uint16_t */
    IFL_DTYPE_I32,  /* int32_t: block indices only */
};

#define IFL_MAX_DIMS 4

/* A tensor descriptor: it does not own its data. shape[i] and stride[i] (in elements) for
 * i < ndim; the rest is ignored. Element (i0, i1, i2) sits at data + (i0*stride[0] + i1*stride[1]
 * + i2*stride[2]) * ifl_dtype_size(dtype) bytes. */
struct ifl_tensor {
    void          *data;
    enum ifl_dtype dtype;
    int            ndim;
    int64_t        shape[IFL_MAX_DIMS];
    int64_t        stride[IFL_MAX_DIMS];
};

/* A contiguous (C order) descriptor of ndim (1..4) dimensions. Pure; never fails. */
IFL_API struct ifl_tensor ifl_tensor_make(void *data, enum ifl_dtype dtype, int ndim, const int64_t *shape);

/* Size of one element in bytes (0 for an unknown dtype). */
IFL_API size_t ifl_dtype_size(enum ifl_dtype dtype);

/* "f64", "f32", "f16", "bf16", "i32" ("?" for unknown). */
IFL_API const char *ifl_dtype_name(enum ifl_dtype dtype);

/* Conversions used by the library (round to nearest even; NaN stays NaN). */
IFL_API float    ifl_f16_to_f32(uint16_t h);
IFL_API uint16_t ifl_f32_to_f16(float f);
IFL_API float    ifl_bf16_to_f32(uint16_t b);
IFL_API uint16_t ifl_f32_to_bf16(float f);

/* ==== Context ==== */

enum ifl_backend {
    IFL_BACKEND_REF,  /* float64, scalar, single-threaded: the executable specification */
    IFL_BACKEND_CPU,  /* SIMD, multi-threaded CPU backend; f32 compute, f32/f16/bf16 storage */
    IFL_BACKEND_CUDA, /* NVIDIA Hopper backend (builds made with `make CUDA=1`); device memory */
};

/* "ref", "cpu", "cuda" ("?" for unknown). */
IFL_API const char *ifl_backend_name(enum ifl_backend backend);

/* 1 if this build can create a context for the backend, else 0. */
IFL_API int ifl_backend_available(enum ifl_backend backend);

/* Instruction-set level of the cpu backend. AUTO picks the best this processor runs; a lower
 * level may be forced (also with the environment variable INFLLM_SIMD=auto|scalar|avx2|avx512,
 * which AUTO honours; another value is refused). Asking for a level the processor lacks fails
 * with UNSUPPORTED. ifl_simd_resolve says which level a request gets, or why it fails. */
enum ifl_simd {
    IFL_SIMD_AUTO,
    IFL_SIMD_SCALAR, /* portable C, any x86-64 (SSE2) */
    IFL_SIMD_AVX2,   /* AVX2 + FMA + F16C */
    IFL_SIMD_AVX512, /* AVX-512 F/BW/VL (+ BF16 dot products where the processor has them) */
};

/* "auto", "scalar", "avx2", "avx512" ("?" for unknown). */
IFL_API const char *ifl_simd_name(enum ifl_simd simd);

/* The level named name ("auto", "scalar", "avx2", "avx512"; NULL or "" is AUTO) into *out.
 * Errors: INVALID_ARG (any other name, or out NULL). */
IFL_API enum ifl_status ifl_simd_parse(const char *name, enum ifl_simd *out);

/* The level a cpu context asked for want runs: for AUTO, the level INFLLM_SIMD names when it is
 * set (an unknown value is refused, not ignored), else the best this processor runs; a level
 * runs only where the processor has every instruction its build uses (AVX2: AVX2, FMA, F16C;
 * AVX-512: F, BW, VL, DQ plus the AVX2 set). This is the one detection the library's cpu backend
 * and the model runtime use. Errors: INVALID_ARG (want or INFLLM_SIMD unknown, out NULL),
 * UNSUPPORTED (a level this processor lacks). msg (NULL or msglen 0: none) gets a sentence naming
 * the problem, "" on success: ifl_ctx_create has no context to carry it, so a caller whose cpu
 * context failed can ask here why. */
IFL_API enum ifl_status ifl_simd_resolve(enum ifl_simd want, enum ifl_simd *out, char *msg, size_t msglen);

struct ifl_ctx_params {
    enum ifl_backend backend;      /* default IFL_BACKEND_REF */
    int              n_threads;    /* 0 = all cores (the ref backend always uses one) */
    enum ifl_simd    simd;         /* cpu backend only; default IFL_SIMD_AUTO */
    int              check_finite; /* 1 (default): ops refuse inputs holding NaN or Inf with
                                      IFL_STATUS_INVALID_ARG and the position of the first one;
                                      0 skips the scan (it reads every input once) */
    void            *cuda_stream;  /* cuda backend only: a cudaStream_t of the current device
                                      that the context runs every op on, instead of a stream of
                                      its own (NULL, the default). The caller keeps ownership:
                                      it must outlive the context, which never destroys it (so
                                      a framework's stream, e.g. PyTorch's current one, orders
                                      our kernels with its own; for the legacy default stream
                                      pass cudaStreamLegacy, since NULL means "your own").
                                      Ignored by host backends. */
};

IFL_API struct ifl_ctx_params ifl_ctx_params_default(void);

/* The context: backend choice, scratch and the last error message. Opaque. */
struct ifl_ctx;

/* Creates a context. *out is set to NULL on failure. Errors: INVALID_ARG (params or out NULL,
 * n_threads < 0, unknown backend or simd, a cpu context with INFLLM_SIMD set to an unknown
 * value), UNSUPPORTED (backend not in this build, or a simd level this processor lacks),
 * OUT_OF_MEMORY.
 * A failure here has no context to carry a message; ifl_status_str() describes it. */
IFL_API enum ifl_status ifl_ctx_create(const struct ifl_ctx_params *params, struct ifl_ctx **out);

/* Frees the context; NULL is a harmless no-op. */
IFL_API void ifl_ctx_destroy(struct ifl_ctx *ctx);

/* The instruction-set level a cpu context runs (IFL_SIMD_SCALAR for other backends), and its
 * worker thread count (1 for the ref backend). */
IFL_API enum ifl_simd ifl_ctx_simd(const struct ifl_ctx *ctx);
IFL_API int           ifl_ctx_threads(const struct ifl_ctx *ctx);

/* Runs fn(arg, task, thread) for every task in 0 .. n_tasks-1 on the context's worker threads and
 * returns when all are done: on a cpu context its thread pool (the same threads its ops use, so a
 * program needs no second pool), elsewhere in the calling thread. thread, in
 * [0, ifl_ctx_threads(ctx)), names the worker running the task, so per-thread scratch needs no
 * lock; which worker runs which task varies from run to run. fn must not call ctx's functions.
 * Errors: INVALID_ARG (NULL ctx or fn, n_tasks < 0). */
IFL_API enum ifl_status ifl_ctx_parallel(struct ifl_ctx *ctx, int64_t n_tasks,
                                         void (*fn)(void *arg, int64_t task, int thread), void *arg);

/* The message of the last failed call on ctx ("" after a success). Never NULL: for a NULL or
 * destroyed context it returns a static message saying so. */
IFL_API const char *ifl_ctx_errmsg(const struct ifl_ctx *ctx);

/* ==== Memory ====
 * Tensors passed to a context's ops live where its backend computes: host memory for ref and
 * cpu, device memory for cuda. These calls allocate and move such memory portably (on host
 * backends they are malloc, free and memcpy). */

/* Allocates bytes (>= 1) of the backend's memory; *out is NULL on failure.
 * Errors: INVALID_ARG (NULL ctx or out, bytes 0), OUT_OF_MEMORY, DEVICE. */
IFL_API enum ifl_status ifl_buffer_alloc(struct ifl_ctx *ctx, size_t bytes, void **out);

/* Frees a buffer of ifl_buffer_alloc; NULL is a no-op. */
IFL_API void ifl_buffer_free(struct ifl_ctx *ctx, void *buf);

/* Copies bytes from host memory into a backend buffer (upload) or back (download). Synchronous.
 * Errors: INVALID_ARG (NULL pointer), DEVICE. */
IFL_API enum ifl_status ifl_buffer_upload(struct ifl_ctx *ctx, void *buf, const void *host, size_t bytes);
IFL_API enum ifl_status ifl_buffer_download(struct ifl_ctx *ctx, void *host, const void *buf, size_t bytes);

/* Waits for the context's queued work (a no-op on host backends). Errors: DEVICE. */
IFL_API enum ifl_status ifl_ctx_sync(struct ifl_ctx *ctx);

/* ==== Sparse configuration ==== */

enum ifl_lse_mode {
    IFL_LSE_APPROX, /* stage-1 normaliser over the coarse compressed keys (MiniCPM4.1 default) */
    IFL_LSE_EXACT,  /* stage-1 normaliser over the fine compressed keys */
};

/* InfLLM-V2's knobs. Start from ifl_sparse_config_default() and override fields. */
struct ifl_sparse_config {
    int32_t           block_size;           /* BS, tokens per KV block (64) */
    int32_t           kernel_size;          /* tokens per fine compressed key (32) */
    int32_t           kernel_stride;        /* fine compressed-key stride (16) */
    int32_t           coarse_kernel_size;   /* tokens per coarse compressed key (128) */
    int32_t           coarse_kernel_stride; /* coarse compressed-key stride (64) */
    int32_t           init_blocks;          /* leading "sink" blocks always selected (1) */
    int32_t           window_size;          /* local window in tokens, a multiple of block_size:
                                               the query's block and window_size/block_size
                                               blocks before it are always selected (2048) */
    int32_t           topk;                 /* dynamic budget; a row lists at most
                                               topk + window_size/block_size blocks (64) */
    int64_t           dense_len;            /* sequences with fewer keys run dense; -1 = always
                                               sparse (8192) */
    enum ifl_lse_mode lse_mode;             /* IFL_LSE_APPROX */
    double            scale;                /* softmax scale of both stages; 0 = 1/sqrt(D) */
};

/* MiniCPM4.1's values: 64, 32/16, 128/64, 1, 2048, 64, 8192, approx, 1/sqrt(D). */
IFL_API struct ifl_sparse_config ifl_sparse_config_default(void);

/* Checks a config on its own (the ops check it too). Rules: every size > 0; block_size and
 * kernel_size multiples of kernel_stride; coarse_kernel_size a multiple of coarse_kernel_stride;
 * init_blocks >= 0; window_size >= 0 and a multiple of block_size; topk >= init_blocks + 1;
 * topk + window_size/block_size <= 2^30 - 1; dense_len >= 0 or -1; scale finite and >= 0;
 * lse_mode known. Errors: INVALID_ARG. */
IFL_API enum ifl_status ifl_sparse_config_check(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg);

/* Number of compressed keys of n_keys tokens: complete windows only,
 * n_keys >= kernel ? (n_keys - kernel) / stride + 1 : 0. (10000 keys, 32/16 -> 624; 128/64 -> 155.) */
IFL_API int64_t ifl_compressed_len(int64_t n_keys, int32_t kernel_size, int32_t kernel_stride);

/* Width K of a selection row for a sequence of n_keys keys:
 * min(topk + window_size/block_size, ceil(n_keys/block_size)). */
IFL_API int64_t ifl_select_width(const struct ifl_sparse_config *cfg, int64_t n_keys);

/* ==== Batches ==== */

/* A packed batch of sequences of different lengths. Sequence s owns query rows
 * cu_seqlens_q[s] .. cu_seqlens_q[s+1]-1 and key rows cu_seqlens_k[s] .. cu_seqlens_k[s+1]-1;
 * both arrays have n_seqs+1 entries, start at 0, never decrease and end at the tensors' row
 * counts; every sequence needs at least as many keys as queries. Wherever a function takes
 * `const struct ifl_batch *batch`, NULL means one sequence spanning all rows. */
struct ifl_batch {
    int32_t        n_seqs;
    const int32_t *cu_seqlens_q; /* [n_seqs + 1] */
    const int32_t *cu_seqlens_k; /* [n_seqs + 1] */
};

/* ==== Operations ====
 * Common to all: q, k, v share one dtype among f64/f32/f16/bf16; float outputs may be any of
 * those four, lse f32 or f64, sel i32. cfg NULL means ifl_sparse_config_default().
 * Errors common to all: INVALID_ARG (ctx/tensor NULL, NULL data, bad config, bad batch, NaN/Inf
 * in q, k, v, out or dout when check_finite is on (lse is not scanned: -inf is a legitimate
 * forward result), overlapping outputs), SHAPE, DTYPE, OUT_OF_MEMORY. */

/* Compressed keys (spec §2.1). c1[j] = mean(k[j*kernel_stride .. +kernel_size-1]) per sequence
 * and KV head, complete windows only; c2 likewise with the coarse kernel. The mean is rounded to
 * k's dtype (bf16 keys give bf16 compressed keys, as a KV cache stores them); stage 1 uses
 * exactly these values. Rows are packed by
 * sequence: sequence s contributes ifl_compressed_len(Tk_s, ...) rows, in order.
 *   k : [Tk, Hkv, D]     c1 : [N1, Hkv, D] or NULL     c2 : [N2, Hkv, D] or NULL
 * N1 (N2) must equal the sum over sequences; NULL skips that output (a batch with no complete
 * window at all has no rows, so it must pass NULL). Only cu_seqlens_k of the batch is read. */
IFL_API enum ifl_status ifl_compress_keys(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                          const struct ifl_batch *batch, const struct ifl_tensor *k,
                                          const struct ifl_tensor *c1, const struct ifl_tensor *c2);

/* Stage 1: block selection (spec §2, Design B). For each query token and KV head: scores against
 * the visible fine compressed keys, normalised per query head (exactly, or through the coarse
 * keys), summed over the group, max-pooled onto the blocks each key overlaps; the init blocks and
 * the query's block with window_size/block_size blocks before it are forced; the
 * ifl_select_width(cfg, Tk_s) best blocks are kept (ties to the smaller index), those after the
 * query's block dropped, the rest sorted ascending and padded with -1.
 *   q : [Tq, Hq, D]   k : [Tk, Hkv, D]   sel : [Hkv, Tq, K] i32 with K >= the width of every
 *   sequence (extra columns get -1).
 * Memory is O(Tk) per query row; no score matrix is materialised. */
IFL_API enum ifl_status ifl_select(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                   const struct ifl_batch *batch, const struct ifl_tensor *q,
                                   const struct ifl_tensor *k, const struct ifl_tensor *sel);

/* Stage 2: attention of each query token over the tokens of its selected blocks, causal inside
 * the query's own block (keys after the query are never seen).
 *   sel : [Hkv, Tq, K] i32, each row strictly ascending block indices of its sequence
 *         (0 <= b < ceil(Tk_s/block_size)) followed by -1 padding; any K >= 1.
 *   out : [Tq, Hq, D]   lse : [Tq, Hq] or NULL. A row that sees no key gets out 0, lse -inf.
 * Errors also: INVALID_ARG for a malformed sel row (the message gives its position). */
IFL_API enum ifl_status ifl_sparse_attn_fwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                            const struct ifl_batch *batch, const struct ifl_tensor *q,
                                            const struct ifl_tensor *k, const struct ifl_tensor *v,
                                            const struct ifl_tensor *sel, const struct ifl_tensor *out,
                                            const struct ifl_tensor *lse);

/* Dense causal attention (uses only cfg->scale).  out : [Tq, Hq, D]   lse : [Tq, Hq] or NULL. */
IFL_API enum ifl_status ifl_dense_attn_fwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                           const struct ifl_batch *batch, const struct ifl_tensor *q,
                                           const struct ifl_tensor *k, const struct ifl_tensor *v,
                                           const struct ifl_tensor *out, const struct ifl_tensor *lse);

enum ifl_mode {
    IFL_MODE_DENSE,
    IFL_MODE_SPARSE,
};

/* The switchable InfLLM-V2 forward: each sequence runs dense when cfg->dense_len != -1 and
 * Tk_s < dense_len, else ifl_select followed by ifl_sparse_attn_fwd.
 *   out : [Tq, Hq, D]   lse : [Tq, Hq] or NULL
 *   sel : [Hkv, Tq, K] or NULL: receives the selection of sparse sequences (rows of dense ones
 *         are all -1); K must cover the widths of the sparse sequences.
 *   modes : n_seqs entries (1 when batch is NULL) or NULL: the mode each sequence ran. */
IFL_API enum ifl_status ifl_infllmv2_fwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                         const struct ifl_batch *batch, const struct ifl_tensor *q,
                                         const struct ifl_tensor *k, const struct ifl_tensor *v,
                                         const struct ifl_tensor *out, const struct ifl_tensor *lse,
                                         const struct ifl_tensor *sel, enum ifl_mode *modes);

/* Backward of ifl_sparse_attn_fwd with the selection held fixed (selection has no gradient).
 * out and lse are the forward's results (lse required); dout : [Tq, Hq, D].
 * dq : [Tq, Hq, D]   dk, dv : [Tk, Hkv, D] (keys no query attends get 0).
 * On every backend the gradients are bitwise repeatable: the same call gives the same bits (no
 * atomics, sums in a fixed order), for any thread count on cpu; on cuda for the same GPU model
 * (the work split, hence the order of a few sums, follows the number of multiprocessors). */
IFL_API enum ifl_status ifl_sparse_attn_bwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                            const struct ifl_batch *batch, const struct ifl_tensor *q,
                                            const struct ifl_tensor *k, const struct ifl_tensor *v,
                                            const struct ifl_tensor *sel, const struct ifl_tensor *out,
                                            const struct ifl_tensor *lse, const struct ifl_tensor *dout,
                                            const struct ifl_tensor *dq, const struct ifl_tensor *dk,
                                            const struct ifl_tensor *dv);

/* Backward of ifl_dense_attn_fwd; arguments as ifl_sparse_attn_bwd without sel. */
IFL_API enum ifl_status ifl_dense_attn_bwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                           const struct ifl_batch *batch, const struct ifl_tensor *q,
                                           const struct ifl_tensor *k, const struct ifl_tensor *v,
                                           const struct ifl_tensor *out, const struct ifl_tensor *lse,
                                           const struct ifl_tensor *dout, const struct ifl_tensor *dq,
                                           const struct ifl_tensor *dk, const struct ifl_tensor *dv);

/* Finds the first NaN or Inf of a float tensor in index order. Returns 1 and writes its index
 * (ndim entries) to pos when found, 0 when every element is finite or t is not a float tensor. */
IFL_API int ifl_tensor_find_nonfinite(const struct ifl_tensor *t, int64_t pos[IFL_MAX_DIMS]);

/* ==== KV cache ====
 *
 * The keys and values of one attention layer for a batch of n_seqs sequences, each with its own
 * length, together with their fine (C1) and coarse (C2) compressed keys, for incremental decoding
 * and chunked prefill (spec §6.1). Appending tokens emits each compressed key exactly when the
 * new tokens complete its window (fine key j once the length reaches j*kernel_stride +
 * kernel_size), at a cost proportional to the new tokens; truncating (speculative-decoding
 * rollback) drops the compressed keys whose windows are no longer complete. Attention against
 * the cache runs dense while a sequence holds fewer than cfg.dense_len tokens and sparse from then
 * on. It gives exactly the rows ifl_infllmv2_fwd gives for the same queries over the cache's
 * first len keys (bitwise on one backend: the cached compressed keys are the values
 * ifl_compress_keys computes from the stored keys, in the storage dtype).
 *
 * Storage is host memory, allocated once at creation in one storage dtype, per sequence:
 *   K, V : [capacity, Hkv, D]
 *   C1   : [ifl_compressed_len(capacity, kernel_size, kernel_stride), Hkv, D]
 *   C2   : [ifl_compressed_len(capacity, coarse_kernel_size, coarse_kernel_stride), Hkv, D]
 * so the compressed keys cost 1/kernel_stride + 1/coarse_kernel_stride of K: at the default
 * config 1/16 + 1/64 of K, 3.9% over K + V (65536 tokens, 2 KV heads, D 128, bf16: 64 MiB of K + V
 * and 2.5 MiB of compressed keys). ifl_kv_cache_bytes() reports the exact total.
 *
 * The storage lives where the creating context's backend computes. Host memory for ref and cpu:
 * the cache then belongs to no context, any live host context may operate on it, and errors are
 * reported on the context passed. Device memory for cuda (allocated through the backend's
 * buffers): only contexts of that backend may operate on it, and the creating context must
 * outlive the cache (ifl_kv_cache_destroy frees the storage through it); the cuda backend cannot
 * yet write rows into a cache, so append and attn get UNSUPPORTED there. A cache is
 * not thread-safe (one call at a time per cache). On any error the cache is unchanged: no length
 * moves and no row a later call can see is written. Sequences are attended one per call. */

struct ifl_kv_cache_params {
    int64_t                  capacity;   /* tokens per sequence, 1 .. 2^31-1, and
                                            capacity*Hkv*D <= 2^40 (65536) */
    int32_t                  n_seqs;     /* sequences of the batch, >= 1 (1) */
    int32_t                  n_heads_kv; /* Hkv, >= 1 (2) */
    int32_t                  head_dim;   /* D, 1 .. IFL_MAX_HEAD_DIM (128) */
    enum ifl_dtype           dtype;      /* storage of K, V, C1, C2: f64, f32, f16 or bf16 (bf16) */
    struct ifl_sparse_config cfg;        /* used by every call on the cache
                                            (ifl_sparse_config_default()) */
};

/* The values in parentheses above: MiniCPM4.1-8B's KV heads and head dim, 65536 tokens, bf16. */
IFL_API struct ifl_kv_cache_params ifl_kv_cache_params_default(void);

/* The cache. Opaque; it carries a magic number, so a garbage handle is refused. */
struct ifl_kv_cache;

/* Creates an empty cache (every sequence of length 0) and allocates all of its storage.
 * *out is set to NULL on failure. Errors: INVALID_ARG (ctx, params or out NULL, a size < 1, a bad
 * cfg, a capacity above the limits), DTYPE (dtype not f64/f32/f16/bf16), UNSUPPORTED
 * (head_dim > IFL_MAX_HEAD_DIM), OUT_OF_MEMORY (also when the storage would not fit in the
 * address space). */
IFL_API enum ifl_status ifl_kv_cache_create(struct ifl_ctx *ctx, const struct ifl_kv_cache_params *params,
                                            struct ifl_kv_cache **out);

/* Frees the cache; NULL is a harmless no-op. A cache in device memory must be destroyed before
 * the context that created it. */
IFL_API void ifl_kv_cache_destroy(struct ifl_kv_cache *cache);

/* Tokens sequence seq holds; -1 for a NULL or garbage cache or seq outside [0, n_seqs). */
IFL_API int64_t ifl_kv_cache_len(const struct ifl_kv_cache *cache, int32_t seq);

/* Bytes of the cache's storage (0 for a NULL or garbage cache):
 *   n_seqs * Hkv * D * ifl_dtype_size(dtype) * (2*capacity + N1 + N2)
 * with N1 = ifl_compressed_len(capacity, kernel_size, kernel_stride) and N2 likewise with the
 * coarse kernel. Bookkeeping (under 200 bytes + 8 per sequence) is not counted. */
IFL_API size_t ifl_kv_cache_bytes(const struct ifl_kv_cache *cache);

/* Appends n tokens to sequence seq.
 *   k_new, v_new : [n, Hkv, D], n >= 1, any float dtype each (any strides as usual); they are
 *                  converted to the storage dtype (round to nearest even).
 * Then emits every compressed key whose window is now complete: ifl_compressed_len(len + n, ...)
 * - ifl_compressed_len(len, ...) new rows of C1 and of C2, computed by the context's backend from
 * the stored keys, O(n + kernel) work.
 * Errors: INVALID_ARG (NULL argument, garbage cache, seq out of range, NaN/Inf in k_new or v_new
 * or a value that overflows the storage dtype, when check_finite is on; an input overlapping the
 * cache rows it would write), SHAPE (Hkv or D not the cache's, v_new's shape not k_new's), DTYPE,
 * CAPACITY (len + n > capacity), UNSUPPORTED (a context that cannot write into the cache's
 * memory: see above), OUT_OF_MEMORY. */
IFL_API enum ifl_status ifl_kv_cache_append(struct ifl_ctx *ctx, struct ifl_kv_cache *cache, int32_t seq,
                                            const struct ifl_tensor *k_new, const struct ifl_tensor *v_new);

/* Shortens sequence seq to its first new_len tokens (0 <= new_len <= its length), dropping the
 * compressed keys whose windows reach past new_len. Appending afterwards gives exactly the cache
 * that never held the dropped tokens. O(1).
 * Errors: INVALID_ARG (NULL ctx or cache, garbage cache, seq out of range, new_len < 0 or above
 * the sequence's length). */
IFL_API enum ifl_status ifl_kv_cache_truncate(struct ifl_ctx *ctx, struct ifl_kv_cache *cache, int32_t seq,
                                              int64_t new_len);

/* Attention of the newest Tq tokens of sequence seq over its len cached tokens: query i sits at
 * position len - Tq + i and sees keys 0 .. len - Tq + i. Append the tokens' keys and values first
 * (Tq = 1 for a decode step, a chunk for chunked prefill). Runs dense when cfg.dense_len != -1 and
 * len < dense_len, else stage 1 on the cached compressed keys followed by stage 2; the result is
 * ifl_infllmv2_fwd's for q over the first len cached keys and values.
 *   q    : [Tq, Hq, D], 1 <= Tq <= len, Hq a multiple of Hkv; any float dtype (rounded to the
 *          storage dtype first when it differs: the ops take q, k, v in one dtype)
 *   out  : [Tq, Hq, D] any float dtype        lse : [Tq, Hq] f32/f64, or NULL
 *   sel  : [Hkv, Tq, K] i32 or NULL; in sparse mode K >= ifl_select_width(&cfg, len) and it
 *          receives the selection; in dense mode (any K) its rows are set to -1
 *   mode : receives the mode that ran, or NULL
 * Errors: INVALID_ARG (NULL ctx/cache/q/out, garbage cache, seq out of range, NaN/Inf in q when
 * check_finite is on, an output overlapping an input, another output or the sequence's cached
 * rows), SHAPE, DTYPE, UNSUPPORTED (a context that cannot compute on the cache's memory, see
 * above), OUT_OF_MEMORY. No output is written on error. */
IFL_API enum ifl_status ifl_kv_cache_attn(struct ifl_ctx *ctx, struct ifl_kv_cache *cache, int32_t seq,
                                          const struct ifl_tensor *q, const struct ifl_tensor *out,
                                          const struct ifl_tensor *lse, const struct ifl_tensor *sel,
                                          enum ifl_mode *mode);

/* Read-only descriptors of what sequence seq holds, in the storage dtype, contiguous:
 *   k, v : [len, Hkv, D]     c1 : [N1(len), Hkv, D]     c2 : [N2(len), Hkv, D]
 * with N1(len) = ifl_compressed_len(len, kernel_size, kernel_stride), N2 likewise (coarse).
 * Any of k, v, c1, c2 may be NULL. The data is in the cache's memory (device memory for a cuda
 * cache). A descriptor with 0 rows still has valid data (the ops refuse
 * empty tensors, so check the row count before passing one on). The data pointers stay valid
 * until ifl_kv_cache_destroy; the rows until the next append or truncate of that sequence.
 * Writing through them is not allowed (the compressed keys would no longer match the keys).
 * Errors: INVALID_ARG (NULL ctx or cache, garbage cache, seq out of range). */
IFL_API enum ifl_status ifl_kv_cache_view(struct ifl_ctx *ctx, const struct ifl_kv_cache *cache, int32_t seq,
                                          struct ifl_tensor *k, struct ifl_tensor *v, struct ifl_tensor *c1,
                                          struct ifl_tensor *c2);

#ifdef __cplusplus
}
#endif

#endif /* INFLLM_H */
