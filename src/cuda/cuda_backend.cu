/* SPDX-License-Identifier: MIT
 *
 * cuda_backend.cu -- the cuda backend's vtable: context state (device, stream, memory pool,
 * pinned staging), device memory for ifl_buffer_*, and each op's entry: the checks the core
 * leaves to a device-memory backend (device pointers, NaN/Inf scan, the selection's contents),
 * then the kernels of cuda_compress.cu, cuda_select.cu, cuda_attn.cu and cuda_bwd.cu, then one stream
 * synchronisation so the call is synchronous and a kernel fault is reported by the op that made it.
 *
 * Environment (read at context creation; for testing and tuning):
 *   INFLLM_CUDA_GENERIC=1      use only the plain kernels (no tensor cores), for every shape
 *   INFLLM_CUDA_SEL_WARPS=N    warps of a stage-1 tile (1, 2, 4, 8; default chosen per shape)
 *   INFLLM_CUDA_ATTN_WARPS=N   warps of an attention tile (4 or 8; default chosen per shape)
 */
#include "cuda_common.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ifl_status cuda_fail(struct ifl_ctx *ctx, cudaError_t err, const char *what) {
    enum ifl_status st = err == cudaErrorMemoryAllocation ? IFL_STATUS_OUT_OF_MEMORY : IFL_STATUS_DEVICE;
    return IFL_FAIL(ctx, st, "cuda: %s (%s) in %s", cudaGetErrorString(err), cudaGetErrorName(err), what);
}

/* ---- memory ---- */

enum ifl_status cuda_scratch(struct ifl_ctx *ctx, size_t bytes, void **out) {
    struct cuda_state *cs = cuda_of(ctx);
    *out                  = NULL;
    if (bytes == 0) bytes = 16;
    cudaError_t e = cs->pool ? cudaMallocFromPoolAsync(out, bytes, cs->pool, cs->stream) : cudaMalloc(out, bytes);
    if (e != cudaSuccess) {
        *out = NULL;
        (void)cudaGetLastError(); /* an allocation failure is not sticky; clear it */
        return cuda_fail(ctx, e, "allocating device scratch");
    }
    return IFL_STATUS_OK;
}

void cuda_scratch_free(struct ifl_ctx *ctx, void *p) {
    struct cuda_state *cs = cuda_of(ctx);
    if (p == NULL) return;
    if (cs->pool) cudaFreeAsync(p, cs->stream);
    else cudaFree(p);
}

/* A pinned staging area of at least n more bytes (grown between ops only: every op syncs). */
static enum ifl_status stage_bytes(struct ifl_ctx *ctx, size_t n, unsigned char **host) {
    struct cuda_state *cs = cuda_of(ctx);
    n                     = (n + 15) & ~(size_t)15;
    if (cs->pinned_used + n > cs->pinned_size) {
        /* grow: wait for earlier copies out of the old area first */
        CU_TRY(ctx, cudaStreamSynchronize(cs->stream));
        size_t want = cs->pinned_size * 2 > cs->pinned_used + n ? cs->pinned_size * 2 : cs->pinned_used + n + 65536;
        unsigned char *p;
        CU_TRY(ctx, cudaHostAlloc((void **)&p, want, cudaHostAllocDefault));
        if (cs->pinned) cudaFreeHost(cs->pinned);
        cs->pinned      = p;
        cs->pinned_size = want;
        cs->pinned_used = 0;
    }
    *host = cs->pinned + cs->pinned_used;
    cs->pinned_used += n;
    return IFL_STATUS_OK;
}

enum ifl_status cuda_upload(struct ifl_ctx *ctx, const void *host, size_t n, void **dev) {
    struct cuda_state *cs = cuda_of(ctx);
    unsigned char     *stage = NULL;
    enum ifl_status    st = stage_bytes(ctx, n, &stage);
    if (st) return st;
    memcpy(stage, host, n);
    if ((st = cuda_scratch(ctx, n, dev))) return st;
    cudaError_t e = cudaMemcpyAsync(*dev, stage, n, cudaMemcpyHostToDevice, cs->stream);
    if (e != cudaSuccess) {
        cuda_scratch_free(ctx, *dev);
        *dev = NULL;
        return cuda_fail(ctx, e, "cudaMemcpyAsync (upload)");
    }
    return IFL_STATUS_OK;
}

int64_t cuda_fill_seqs(const struct ifl__problem *pb, int64_t tt, struct dseq *seqs) {
    const struct ifl_sparse_config *c  = &pb->cfg;
    int64_t                         cq = 0, c1 = 0, c2 = 0, tiles = 0, kt = 0, b = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        const struct ifl__seq *sq = &pb->seqs[s];
        seqs[s].q0    = sq->q0;
        seqs[s].nq    = sq->nq;
        seqs[s].k0    = sq->k0;
        seqs[s].nk    = sq->nk;
        seqs[s].past  = sq->past;
        seqs[s].cq    = cq;
        seqs[s].c1    = c1;
        seqs[s].c2    = c2;
        seqs[s].tile0 = tiles;
        seqs[s].kt0   = kt;
        seqs[s].b0    = b;
        kt += ifl__ceil_div(sq->nk, 64);
        b += ifl__ceil_div(sq->nk, c->block_size);
        cq += sq->nq;
        c1 += ifl_compressed_len(sq->nk, c->kernel_size, c->kernel_stride);
        c2 += ifl_compressed_len(sq->nk, c->coarse_kernel_size, c->coarse_kernel_stride);
        if (tt > 0) tiles += ifl__ceil_div(sq->nq, tt);
    }
    return tiles;
}

enum ifl_status cuda_seqs_upload(struct ifl_ctx *ctx, const struct ifl__problem *pb, int64_t tt, void **d_seqs,
                                 int64_t *n_tiles, struct dseq **host) {
    struct dseq *seqs = (struct dseq *)malloc((size_t)pb->n_seqs * sizeof *seqs);
    *d_seqs           = NULL;
    if (host) *host = NULL;
    if (seqs == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
    const int64_t   tiles = cuda_fill_seqs(pb, tt, seqs);
    enum ifl_status st    = cuda_upload(ctx, seqs, (size_t)pb->n_seqs * sizeof *seqs, d_seqs);
    if (n_tiles) *n_tiles = tiles;
    if (host && st == IFL_STATUS_OK) *host = seqs;
    else free(seqs);
    return st;
}

static enum ifl_status buffer_alloc(struct ifl_ctx *ctx, size_t bytes, void **out) {
    struct cuda_state *cs = cuda_of(ctx);
    enum ifl_status    st = cuda_scratch(ctx, bytes, out);
    if (st) {
        char why[512];
        snprintf(why, sizeof why, "%s", ifl_ctx_errmsg(ctx));
        return IFL_FAIL(ctx, st, "ifl_buffer_alloc: %s (%zu bytes)", why, bytes);
    }
    /* the allocation is stream-ordered: complete it so any stream or copy may use it */
    cudaError_t e = cudaStreamSynchronize(cs->stream);
    if (e != cudaSuccess) {
        cuda_scratch_free(ctx, *out);
        *out = NULL;
        return cuda_fail(ctx, e, "ifl_buffer_alloc");
    }
    return IFL_STATUS_OK;
}

static void buffer_free(struct ifl_ctx *ctx, void *buf) {
    cuda_scratch_free(ctx, buf);
    cudaStreamSynchronize(cuda_of(ctx)->stream);
}

static enum ifl_status buffer_copy(struct ifl_ctx *ctx, void *dst, const void *src, size_t bytes, int to_device) {
    struct cuda_state *cs = cuda_of(ctx);
    CU_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, cs->stream));
    CU_TRY(ctx, cudaStreamSynchronize(cs->stream));
    return IFL_STATUS_OK;
}

static enum ifl_status sync_ctx(struct ifl_ctx *ctx) {
    CU_TRY(ctx, cudaStreamSynchronize(cuda_of(ctx)->stream));
    return IFL_STATUS_OK;
}

/* ---- context ---- */

static int env_int(const char *name, int dflt) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

static void cuda_release(struct ifl_ctx *ctx) {
    struct cuda_state *cs = cuda_of(ctx);
    if (cs == NULL) return;
    if (cs->stream) cudaStreamSynchronize(cs->stream);
    if (cs->dflags) cudaFree(cs->dflags);
    if (cs->pinned) cudaFreeHost(cs->pinned);
    if (cs->pool) cudaMemPoolDestroy(cs->pool);
    /* a stream the caller lent (ifl_ctx_params.cuda_stream) stays alive: it is theirs */
    if (cs->stream && cs->stream != (cudaStream_t)ctx->params.cuda_stream) cudaStreamDestroy(cs->stream);
    (void)cudaGetLastError();
    free(cs);
    ctx->impl = NULL;
}

__global__ void probe_kernel(unsigned long long *flags) {
    if (threadIdx.x < 8) flags[threadIdx.x] = 0;
}

/* No usable device (none, no driver, or no kernel image for it) is IFL_STATUS_DEVICE; there is no
 * context yet to carry a message. */
static enum ifl_status cuda_init(struct ifl_ctx *ctx) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
        (void)cudaGetLastError();
        return IFL_STATUS_DEVICE;
    }
    struct cuda_state *cs = (struct cuda_state *)calloc(1, sizeof *cs);
    if (cs == NULL) return IFL_STATUS_OUT_OF_MEMORY;
    ctx->impl = cs;
    cudaDeviceProp prop;
    int            pools = 0, optin = 0;
    if (cudaGetDevice(&cs->device) != cudaSuccess || cudaGetDeviceProperties(&prop, cs->device) != cudaSuccess ||
        cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, cs->device) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, cs->device) != cudaSuccess)
        goto fail;
    if (ctx->params.cuda_stream != NULL)
        cs->stream = (cudaStream_t)ctx->params.cuda_stream; /* the caller's, never destroyed here */
    else if (cudaStreamCreateWithFlags(&cs->stream, cudaStreamNonBlocking) != cudaSuccess)
        goto fail;
    cs->n_sm       = prop.multiProcessorCount;
    cs->smem_optin = (size_t)optin;
    if (pools) {
        cudaMemPoolProps pp;
        memset(&pp, 0, sizeof pp);
        pp.allocType     = cudaMemAllocationTypePinned;
        pp.handleTypes   = cudaMemHandleTypeNone;
        pp.location.type = cudaMemLocationTypeDevice;
        pp.location.id   = cs->device;
        if (cudaMemPoolCreate(&cs->pool, &pp) != cudaSuccess) goto fail;
        uint64_t keep = UINT64_MAX; /* keep freed memory for the next op instead of returning it */
        cudaMemPoolSetAttribute(cs->pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    if (cudaMalloc((void **)&cs->dflags, 8 * sizeof *cs->dflags) != cudaSuccess) goto fail;
    /* a kernel image for this device must exist (a build for another architecture has none) */
    probe_kernel<<<1, 32, 0, cs->stream>>>(cs->dflags);
    if (cudaGetLastError() != cudaSuccess || cudaStreamSynchronize(cs->stream) != cudaSuccess) goto fail;
    cs->force_generic = env_int("INFLLM_CUDA_GENERIC", 0);
    cs->sel_warps     = env_int("INFLLM_CUDA_SEL_WARPS", 0);
    cs->attn_warps    = env_int("INFLLM_CUDA_ATTN_WARPS", 0);
    {
        const char *ai = getenv("INFLLM_CUDA_ATTN");
        cs->attn_impl  = ai == NULL || !*ai          ? CUDA_ATTN_AUTO
                         : strcmp(ai, "mma") == 0    ? CUDA_ATTN_MMA
                         : strcmp(ai, "wg") == 0     ? CUDA_ATTN_WG
                                                     : CUDA_ATTN_AUTO;
    }
    ctx->n_threads    = 1;
    return IFL_STATUS_OK;
fail:
    (void)cudaGetLastError();
    cuda_release(ctx);
    return IFL_STATUS_DEVICE;
}

/* ---- op entry ---- */

/* Refuses a tensor in host memory that the device cannot address. */
static enum ifl_status check_device_ptr(struct ifl_ctx *ctx, const char *fn, const char *name,
                                        const struct ifl_tensor *t) {
    if (t == NULL) return IFL_STATUS_OK;
    cudaPointerAttributes a;
    cudaError_t           e = cudaPointerGetAttributes(&a, t->data);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s.data is not a pointer the cuda backend can use (%s), expected device memory from ifl_buffer_alloc",
                        fn, name, cudaGetErrorString(e));
    }
    if (a.type == cudaMemoryTypeUnregistered || (a.type == cudaMemoryTypeHost && a.devicePointer == NULL))
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s.data is host memory, expected device memory (ifl_buffer_alloc, ifl_buffer_upload)",
                        fn, name);
    if (a.type == cudaMemoryTypeDevice && a.device != cuda_of(ctx)->device)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s.data lives on device %d, expected the context's device %d",
                        fn, name, a.device, cuda_of(ctx)->device);
    return IFL_STATUS_OK;
}

/* The pointer checks and, when the context asks for it, the NaN/Inf scan of every input. */
static enum ifl_status op_begin(struct ifl_ctx *ctx, const char *fn, const struct ifl__problem *pb,
                                const struct ifl_tensor *const *ins, const char *const *in_names, int n_ins,
                                const struct ifl_tensor *const *outs, const char *const *out_names, int n_outs) {
    enum ifl_status st;
    cuda_of(ctx)->pinned_used = 0;
    for (int i = 0; i < n_ins; i++)
        if ((st = check_device_ptr(ctx, fn, in_names[i], ins[i]))) return st;
    for (int i = 0; i < n_outs; i++)
        if ((st = check_device_ptr(ctx, fn, out_names[i], outs[i]))) return st;
    if (!ctx->params.check_finite) return IFL_STATUS_OK;
    const struct ifl_tensor *fl[8];
    for (int i = 0; i < n_ins && i < 8; i++) fl[i] = ins[i] && ins[i]->dtype != IFL_DTYPE_I32 ? ins[i] : NULL;
    return cuda_check_finite_all(ctx, fn, fl, in_names, n_ins < 8 ? n_ins : 8);
}

static enum ifl_status op_end(struct ifl_ctx *ctx, enum ifl_status st) {
    cudaError_t e = cudaStreamSynchronize(cuda_of(ctx)->stream);
    if (st == IFL_STATUS_OK && e != cudaSuccess) return cuda_fail(ctx, e, "the op's kernels");
    return st;
}

static enum ifl_status compress_keys(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    const char              *fn     = "ifl_compress_keys";
    const struct ifl_tensor *ins[]  = {pb->k};
    const char              *inn[]  = {"k"};
    const struct ifl_tensor *outs[] = {pb->c1, pb->c2};
    const char              *outn[] = {"c1", "c2"};
    enum ifl_status          st     = op_begin(ctx, fn, pb, ins, inn, 1, outs, outn, 2);
    void                    *d_seqs = NULL;
    if (st) return st;
    if ((st = cuda_seqs_upload(ctx, pb, 0, &d_seqs, NULL, NULL))) goto done;
    if (pb->c1 && (st = cuda_compress(ctx, pb, (const struct dseq *)d_seqs, 1, pb->c1->shape[0], dt_of(pb->c1)))) goto done;
    if (pb->c2 && (st = cuda_compress(ctx, pb, (const struct dseq *)d_seqs, 2, pb->c2->shape[0], dt_of(pb->c2)))) goto done;
done:
    cuda_scratch_free(ctx, d_seqs);
    return op_end(ctx, st);
}

static enum ifl_status select_blocks(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    const char              *fn     = pb->fn;
    const struct ifl_tensor *ins[]  = {pb->q, pb->k, pb->c1, pb->c2};
    const char              *inn[]  = {"q", "k", "c1", "c2"};
    const struct ifl_tensor *outs[] = {pb->sel};
    const char              *outn[] = {"sel"};
    enum ifl_status          st     = op_begin(ctx, fn, pb, ins, inn, 4, outs, outn, 1);
    void *d_seqs = NULL, *c1 = NULL, *c2 = NULL;
    if (st) return st;
    const struct ifl_sparse_config *c  = &pb->cfg;
    const size_t                    es = ifl_dtype_size(pb->k->dtype), row = (size_t)(pb->hkv * pb->d) * es;
    int64_t                         n1 = 0, n2 = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        n1 += ifl_compressed_len(pb->seqs[s].nk, c->kernel_size, c->kernel_stride);
        n2 += ifl_compressed_len(pb->seqs[s].nk, c->coarse_kernel_size, c->coarse_kernel_stride);
    }
    /* the compressed keys, contiguous in k's dtype: the caller's (a cache's), or computed here */
    if ((st = cuda_scratch(ctx, (size_t)n1 * row + 16, &c1)) || (st = cuda_scratch(ctx, (size_t)n2 * row + 16, &c2)))
        goto done;
    if ((st = cuda_seqs_upload(ctx, pb, 0, &d_seqs, NULL, NULL))) goto done;
    if (n1 > 0) {
        struct dtensor o = {c1, (int)pb->k->dtype, pb->hkv * pb->d, pb->d};
        st = pb->c1 ? cuda_copy_rows(ctx, pb, pb->c1, c1) : cuda_compress(ctx, pb, (const struct dseq *)d_seqs, 1, n1, o);
        if (st) goto done;
    }
    if (n2 > 0) {
        struct dtensor o = {c2, (int)pb->k->dtype, pb->hkv * pb->d, pb->d};
        st = pb->c2 ? cuda_copy_rows(ctx, pb, pb->c2, c2) : cuda_compress(ctx, pb, (const struct dseq *)d_seqs, 2, n2, o);
        if (st) goto done;
    }
    st = cuda_select_run(ctx, pb, c1, c2);
done:
    cuda_scratch_free(ctx, d_seqs);
    cuda_scratch_free(ctx, c1);
    cuda_scratch_free(ctx, c2);
    return op_end(ctx, st);
}

static enum ifl_status attn_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse) {
    const char              *fn     = pb->fn;
    const struct ifl_tensor *ins[]  = {pb->q, pb->k, pb->v, sparse ? pb->sel : NULL};
    const char              *inn[]  = {"q", "k", "v", "sel"};
    const struct ifl_tensor *outs[] = {pb->out, pb->lse};
    const char              *outn[] = {"out", "lse"};
    enum ifl_status          st     = op_begin(ctx, fn, pb, ins, inn, 4, outs, outn, 2);
    if (st) return st;
    if (sparse && (st = cuda_check_sel(ctx, fn, pb))) return op_end(ctx, st);
    return op_end(ctx, cuda_attn_run(ctx, pb, sparse));
}

static enum ifl_status sparse_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return attn_fwd(ctx, pb, 1); }
static enum ifl_status dense_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return attn_fwd(ctx, pb, 0); }

static enum ifl_status clear_sel(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    cuda_of(ctx)->pinned_used = 0;
    return op_end(ctx, cuda_fill_sel(ctx, pb));
}

static enum ifl_status attn_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb, int sparse) {
    const char              *fn    = pb->fn;
    const struct ifl_tensor *ins[] = {pb->q, pb->k, pb->v, pb->out, pb->dout, sparse ? pb->sel : NULL};
    const char              *inn[] = {"q", "k", "v", "out", "dout", "sel"};
    /* lse is an input too, but not scanned for NaN/Inf (-inf is a legitimate forward result): it
     * rides with the outputs, which get only the pointer check */
    const struct ifl_tensor *outs[] = {pb->dq, pb->dk, pb->dv, pb->lse};
    const char              *outn[] = {"dq", "dk", "dv", "lse"};
    enum ifl_status          st     = op_begin(ctx, fn, pb, ins, inn, 6, outs, outn, 4);
    if (st) return st;
    if (sparse && (st = cuda_check_sel(ctx, fn, pb))) return op_end(ctx, st);
    return op_end(ctx, cuda_bwd_run(ctx, pb, sparse));
}

static enum ifl_status sparse_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return attn_bwd(ctx, pb, 1); }
static enum ifl_status dense_bwd(struct ifl_ctx *ctx, const struct ifl__problem *pb) { return attn_bwd(ctx, pb, 0); }

extern "C" const struct ifl__backend ifl__backend_cuda = {
    "cuda",        cuda_init,  cuda_release,  1,          buffer_alloc, buffer_free, buffer_copy,
    sync_ctx,      clear_sel,  compress_keys, select_blocks, sparse_fwd, dense_fwd,   sparse_bwd,
    dense_bwd,
};
