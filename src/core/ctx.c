/* SPDX-License-Identifier: MIT
 *
 * ctx.c -- contexts, status strings, the error funnel and the library version.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ifl_version(void) { return IFL_VERSION_STRING; }

const char *ifl_status_str(enum ifl_status status) {
    switch (status) {
    case IFL_STATUS_OK: return "ok";
    case IFL_STATUS_INVALID_ARG: return "invalid argument";
    case IFL_STATUS_SHAPE: return "shape mismatch";
    case IFL_STATUS_DTYPE: return "unsupported dtype";
    case IFL_STATUS_UNSUPPORTED: return "unsupported";
    case IFL_STATUS_OUT_OF_MEMORY: return "out of memory";
    case IFL_STATUS_DEVICE: return "device error";
    case IFL_STATUS_CAPACITY: return "capacity exceeded";
    case IFL_STATUS_IO: return "i/o error";
    case IFL_STATUS_BAD_FORMAT: return "bad format";
    case IFL_STATUS_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *ifl_backend_name(enum ifl_backend backend) {
    switch (backend) {
    case IFL_BACKEND_REF: return "ref";
    case IFL_BACKEND_CPU: return "cpu";
    case IFL_BACKEND_CUDA: return "cuda";
    }
    return "?";
}

static const struct ifl__backend *backend_table(enum ifl_backend backend) {
    switch (backend) {
    case IFL_BACKEND_REF: return &ifl__backend_ref;
    case IFL_BACKEND_CPU: return &ifl__backend_cpu;
    case IFL_BACKEND_CUDA:
#ifdef IFL_WITH_CUDA
        return &ifl__backend_cuda;
#else
        return NULL;
#endif
    }
    return NULL;
}

int ifl_backend_available(enum ifl_backend backend) { return backend_table(backend) != NULL; }

struct ifl_ctx_params ifl_ctx_params_default(void) {
    struct ifl_ctx_params p;
    memset(&p, 0, sizeof p);
    p.backend      = IFL_BACKEND_REF;
    p.n_threads    = 0;
    p.check_finite = 1;
    p.simd         = IFL_SIMD_AUTO;
    return p;
}

const char *ifl_simd_name(enum ifl_simd simd) {
    switch (simd) {
    case IFL_SIMD_AUTO: return "auto";
    case IFL_SIMD_SCALAR: return "scalar";
    case IFL_SIMD_AVX2: return "avx2";
    case IFL_SIMD_AVX512: return "avx512";
    }
    return "?";
}

enum ifl_simd ifl_ctx_simd(const struct ifl_ctx *ctx) { return ifl__ctx_ok(ctx) ? ctx->simd : IFL_SIMD_SCALAR; }

int ifl_ctx_threads(const struct ifl_ctx *ctx) { return ifl__ctx_ok(ctx) ? ctx->n_threads : 0; }

enum ifl_status ifl_ctx_create(const struct ifl_ctx_params *params, struct ifl_ctx **out) {
    if (out == NULL) return IFL_STATUS_INVALID_ARG;
    *out = NULL;
    if (params == NULL || params->n_threads < 0) return IFL_STATUS_INVALID_ARG;
    if (params->backend != IFL_BACKEND_REF && params->backend != IFL_BACKEND_CPU &&
        params->backend != IFL_BACKEND_CUDA)
        return IFL_STATUS_INVALID_ARG;
    if (params->simd != IFL_SIMD_AUTO && params->simd != IFL_SIMD_SCALAR &&
        params->simd != IFL_SIMD_AVX2 && params->simd != IFL_SIMD_AVX512)
        return IFL_STATUS_INVALID_ARG;
    const struct ifl__backend *backend = backend_table(params->backend);
    if (backend == NULL) return IFL_STATUS_UNSUPPORTED;
    struct ifl_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) return IFL_STATUS_OUT_OF_MEMORY;
    ctx->magic     = IFL__CTX_MAGIC;
    ctx->params    = *params;
    ctx->backend   = backend;
    ctx->simd      = IFL_SIMD_SCALAR;
    ctx->n_threads = 1;
    if (backend->init) {
        enum ifl_status st = backend->init(ctx);
        if (st != IFL_STATUS_OK) {
            free(ctx);
            return st;
        }
    }
    *out = ctx;
    return IFL_STATUS_OK;
}

void ifl_ctx_destroy(struct ifl_ctx *ctx) {
    if (ctx == NULL || ctx->magic != IFL__CTX_MAGIC) return;
    if (ctx->backend->release) ctx->backend->release(ctx);
    ctx->magic = IFL__CTX_DEAD;
    free(ctx);
}

enum ifl_status ifl_ctx_parallel(struct ifl_ctx *ctx, int64_t n_tasks,
                                 void (*fn)(void *arg, int64_t task, int thread), void *arg) {
    if (!ifl__ctx_ok(ctx)) return IFL_STATUS_INVALID_ARG;
    if (fn == NULL || n_tasks < 0)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "ifl_ctx_parallel: %s",
                        fn == NULL ? "fn is NULL" : "n_tasks < 0, expected >= 0");
    if (ctx->backend->parallel) ctx->backend->parallel(ctx, n_tasks, fn, arg);
    else
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
    ctx->errmsg[0] = '\0';
    return IFL_STATUS_OK;
}

int ifl__ctx_ok(const struct ifl_ctx *ctx) { return ctx != NULL && ctx->magic == IFL__CTX_MAGIC; }

const char *ifl_ctx_errmsg(const struct ifl_ctx *ctx) {
    if (ctx == NULL) return "no context (NULL)";
    if (ctx->magic != IFL__CTX_MAGIC) return "not a live context (destroyed or garbage handle)";
    return ctx->errmsg;
}

enum ifl_status ifl__fail(struct ifl_ctx *ctx, enum ifl_status status, const char *file, int line,
                          const char *fmt, ...) {
    (void)file;
    (void)line;
    if (ifl__ctx_ok(ctx)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* ---- memory ---- */

enum ifl_status ifl__scratch_alloc(struct ifl_ctx *ctx, const char *fn, size_t bytes, void **out) {
    if (ctx->backend->buffer_alloc) return ctx->backend->buffer_alloc(ctx, bytes, out);
    *out = malloc(bytes);
    return *out ? IFL_STATUS_OK : IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory (%zu bytes)", fn, bytes);
}

enum ifl_status ifl_buffer_alloc(struct ifl_ctx *ctx, size_t bytes, void **out) {
    if (out) *out = NULL;
    if (!ifl__ctx_ok(ctx)) return IFL_STATUS_INVALID_ARG;
    if (out == NULL || bytes == 0)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "ifl_buffer_alloc: %s", out ? "bytes is 0" : "out is NULL");
    return ifl__scratch_alloc(ctx, "ifl_buffer_alloc", bytes, out);
}

void ifl_buffer_free(struct ifl_ctx *ctx, void *buf) {
    if (buf == NULL || !ifl__ctx_ok(ctx)) return;
    if (ctx->backend->buffer_free) ctx->backend->buffer_free(ctx, buf);
    else free(buf);
}

static enum ifl_status buffer_copy(struct ifl_ctx *ctx, const char *fn, void *dst, const void *src, size_t bytes,
                                   int to_device) {
    if (!ifl__ctx_ok(ctx)) return IFL_STATUS_INVALID_ARG;
    if ((dst == NULL || src == NULL) && bytes > 0)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s is NULL", fn, dst == NULL ? "destination" : "source");
    if (bytes == 0) return IFL_STATUS_OK;
    if (ctx->backend->buffer_copy) return ctx->backend->buffer_copy(ctx, dst, src, bytes, to_device);
    memmove(dst, src, bytes);
    return IFL_STATUS_OK;
}

enum ifl_status ifl_buffer_upload(struct ifl_ctx *ctx, void *buf, const void *host, size_t bytes) {
    return buffer_copy(ctx, "ifl_buffer_upload", buf, host, bytes, 1);
}

enum ifl_status ifl_buffer_download(struct ifl_ctx *ctx, void *host, const void *buf, size_t bytes) {
    return buffer_copy(ctx, "ifl_buffer_download", host, buf, bytes, 0);
}

enum ifl_status ifl_ctx_sync(struct ifl_ctx *ctx) {
    if (!ifl__ctx_ok(ctx)) return IFL_STATUS_INVALID_ARG;
    return ctx->backend->sync ? ctx->backend->sync(ctx) : IFL_STATUS_OK;
}
