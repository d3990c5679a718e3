/* SPDX-License-Identifier: MIT
 *
 * test_cuda.c -- the cuda backend against the float64 ref backend (house-style 2.8 (b)-(d)): every
 * forward op of the public API (ifl_compress_keys, ifl_select, ifl_sparse_attn_fwd fed the ref's
 * selection, ifl_dense_attn_fwd, ifl_infllmv2_fwd) over a sweep of shapes, configs, dtypes and
 * packed batches, on two cuda contexts: the default one (tensor-core kernels where the shape allows
 * them) and one made with INFLLM_CUDA_GENERIC=1 (the plain kernels for every shape). Then the
 * device-side error paths, and that the backward ops say UNSUPPORTED.
 *
 *   - Inputs are drawn in double, rounded to the dtype, uploaded; the ref gets the same dtype
 *     buffers on the host, so a difference is computation error only.
 *   - Outputs are device buffers with guard regions on both sides (and padding between rows of a
 *     strided output) holding a pattern, the logical elements pre-set to NaN: after the call the whole
 *     image is downloaded and everything but the logical elements must be unchanged, and every
 *     logical element written. Device inputs are downloaded at the end and must be unchanged.
 *   - Gates from the precision (house-style 2.8 (c)): for bf16/f16 inputs, whose P is rounded to
 *     the dtype before P.V, max|out - ref| <= 4 u_dtype max|ref| and NMSE <= 5e-5 (bf16) / 1e-6
 *     (f16), LSE within 1e-3 max(1, max|lse|); for f32/f64 (plain kernels, f32/f64 arithmetic)
 *     max err <= 16 u_acc sqrt(n_acc + D) zfac max|ref|. Compressed keys within one ulp of the key
 *     dtype (plus the accumulation term). NaN never passes; infinities must match.
 *   - Selections are compared per row as sets; a difference is accepted only at a near-tie of the
 *     reference block scores (recomputed here in float64 from the spec): tau = 8 u max|finite row
 *     score| with u the dtype's unit roundoff for bf16/f16 (the scores are f32 dot products of
 *     dtype values, but the compressed keys may round differently by one ulp) and f32's otherwise;
 *     the row must keep every forced block.
 *   - Determinism: every op of the default context runs twice; the two output images must be
 *     bitwise identical.
 * Without a usable device, ifl_ctx_create(CUDA) must fail cleanly and the test prints
 * "SKIPPED: no CUDA device" and exits 0.
 *
 * Options, besides the harness's --seed N and --filter SUBSTRING:
 *   --full   larger default-config shapes too
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "infllm.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define U32 (1.0 / 16777216.0)
#define U64 (1.0 / 9007199254740992.0)

static struct ifl_ctx *ref_ctx; /* float64 reference */
static struct ifl_ctx *cu_ctx;  /* cuda, default kernels */
static struct ifl_ctx *gen_ctx; /* cuda, INFLLM_CUDA_GENERIC=1 */
static int             opt_full;
static uint64_t        opt_seed = 1;

/* ==== helpers ==== */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "test_cuda: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}
static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "test_cuda: out of memory\n");
        exit(2);
    }
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_state = 1;
static void     rng_seed(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    rng_state = (h ^ (opt_seed * 0x9E3779B97F4A7C15ull)) | 1;
}
static double rng_uniform(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}
static double rng_normal(void) {
    double u = rng_uniform(), v = rng_uniform();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static double unit_roundoff(enum ifl_dtype dt) {
    switch (dt) {
    case IFL_DTYPE_F64: return U64;
    case IFL_DTYPE_F32: return U32;
    case IFL_DTYPE_F16: return 1.0 / 2048.0;
    case IFL_DTYPE_BF16: return 1.0 / 256.0;
    default: return 0;
    }
}
static int is_half(enum ifl_dtype dt) { return dt == IFL_DTYPE_F16 || dt == IFL_DTYPE_BF16; }

static double ulp_of(enum ifl_dtype dt, double x) {
    int    bits = dt == IFL_DTYPE_F32 ? 24 : dt == IFL_DTYPE_F16 ? 11 : dt == IFL_DTYPE_BF16 ? 8 : 53;
    double tiny = dt == IFL_DTYPE_F32 ? ldexp(1, -149) : dt == IFL_DTYPE_F16 ? ldexp(1, -24)
                : dt == IFL_DTYPE_BF16 ? ldexp(1, -133) : ldexp(1, -1074);
    if (x == 0) return tiny;
    int e;
    frexp(fabs(x), &e);
    double u = ldexp(1, e - bits);
    return u > tiny ? u : tiny;
}

static double elem_get(const void *p, enum ifl_dtype dt, int64_t i) {
    switch (dt) {
    case IFL_DTYPE_F64: return ((const double *)p)[i];
    case IFL_DTYPE_F32: return ((const float *)p)[i];
    case IFL_DTYPE_F16: return ifl_f16_to_f32(((const uint16_t *)p)[i]);
    case IFL_DTYPE_BF16: return ifl_bf16_to_f32(((const uint16_t *)p)[i]);
    case IFL_DTYPE_I32: return ((const int32_t *)p)[i];
    }
    return NAN;
}
static void elem_set(void *p, enum ifl_dtype dt, int64_t i, double x) {
    switch (dt) {
    case IFL_DTYPE_F64: ((double *)p)[i] = x; break;
    case IFL_DTYPE_F32: ((float *)p)[i] = (float)x; break;
    case IFL_DTYPE_F16: ((uint16_t *)p)[i] = ifl_f32_to_f16((float)x); break;
    case IFL_DTYPE_BF16: ((uint16_t *)p)[i] = ifl_f32_to_bf16((float)x); break;
    case IFL_DTYPE_I32: ((int32_t *)p)[i] = (int32_t)x; break;
    }
}

static struct ifl_tensor tmake(void *data, enum ifl_dtype dt, int nd, int64_t a, int64_t b, int64_t c) {
    const int64_t shape[3] = {a, b, c};
    return ifl_tensor_make(data, dt, nd, shape);
}

/* ---- device memory (through the public buffer API of the default cuda context) ---- */

static void *dev_put(const void *host, size_t n) {
    void           *d  = NULL;
    enum ifl_status st = ifl_buffer_alloc(cu_ctx, n ? n : 1, &d);
    if (st == IFL_STATUS_OK && n) st = ifl_buffer_upload(cu_ctx, d, host, n);
    if (st != IFL_STATUS_OK) {
        printf("device allocation/upload of %zu bytes failed: %s: %s\n", n, ifl_status_str(st), ifl_ctx_errmsg(cu_ctx));
        exit(1);
    }
    return d;
}
static void dev_get(void *host, const void *d, size_t n) {
    enum ifl_status st = ifl_buffer_download(cu_ctx, host, d, n);
    if (st != IFL_STATUS_OK) {
        printf("download of %zu bytes failed: %s: %s\n", n, ifl_status_str(st), ifl_ctx_errmsg(cu_ctx));
        exit(1);
    }
}

/* ---- guarded output buffers ----
 * The host image: GUARD bytes of a pattern on each side, the padding between rows of a strided view
 * the same, logical elements NaN (i32: 0x7f7f7f7f). It is uploaded before the call and downloaded
 * after it; everything but the logical elements must be as before. */
#define GUARD 256

struct gbuf {
    unsigned char    *mem, *init, *dmem; /* host image, its initial copy, the device image */
    size_t            total;
    struct ifl_tensor t;                 /* host view */
    struct ifl_tensor td;                /* the same view of the device image */
    int64_t           n;
};

static int64_t gb_off(const struct gbuf *g, int64_t i) {
    int64_t off = 0;
    for (int d = g->t.ndim - 1; d >= 0; d--) {
        off += (i % g->t.shape[d]) * g->t.stride[d];
        i /= g->t.shape[d];
    }
    return off;
}

static void gb_fill_unwritten(void *p, enum ifl_dtype dt) {
    static const uint64_t f64 = 0x7ff8dead0000beefull;
    static const uint32_t f32 = 0x7fc0dead, i32 = 0x7f7f7f7f;
    static const uint16_t f16 = 0x7e01, bf16 = 0x7fc1;
    switch (dt) {
    case IFL_DTYPE_F64: memcpy(p, &f64, 8); break;
    case IFL_DTYPE_F32: memcpy(p, &f32, 4); break;
    case IFL_DTYPE_F16: memcpy(p, &f16, 2); break;
    case IFL_DTYPE_BF16: memcpy(p, &bf16, 2); break;
    case IFL_DTYPE_I32: memcpy(p, &i32, 4); break;
    }
}

static void gb_make(struct gbuf *g, enum ifl_dtype dt, int nd, int64_t a, int64_t b, int64_t c, int64_t pad) {
    const int64_t shape[3] = {a, b, c};
    size_t        es       = ifl_dtype_size(dt);
    memset(g, 0, sizeof *g);
    g->t.dtype = dt;
    g->t.ndim  = nd;
    g->n       = 1;
    for (int d = 0; d < nd; d++) g->t.shape[d] = shape[d], g->n *= shape[d];
    g->t.stride[nd - 1] = 1;
    if (nd >= 2) g->t.stride[nd - 2] = shape[nd - 1] + pad;
    for (int d = nd - 3; d >= 0; d--) g->t.stride[d] = g->t.stride[d + 1] * shape[d + 1];
    int64_t span = g->n ? g->t.stride[0] * shape[0] : 0;
    g->total     = (size_t)span * es + 2 * GUARD;
    g->mem       = xmalloc(g->total);
    for (size_t i = 0; i < g->total; i++) g->mem[i] = (unsigned char)(0xA5 ^ (i * 7));
    g->t.data = g->mem + GUARD;
    for (int64_t i = 0; i < g->n; i++) gb_fill_unwritten((unsigned char *)g->t.data + gb_off(g, i) * (int64_t)es, dt);
    g->init = xmalloc(g->total);
    memcpy(g->init, g->mem, g->total);
    g->dmem    = dev_put(g->mem, g->total);
    g->td      = g->t;
    g->td.data = g->dmem + GUARD;
}

static void gb_fetch(struct gbuf *g) {
    if (g->mem) dev_get(g->mem, g->dmem, g->total);
}

static void gb_free(struct gbuf *g) {
    if (g->dmem) ifl_buffer_free(cu_ctx, g->dmem);
    free(g->mem);
    free(g->init);
    memset(g, 0, sizeof *g);
}

static double gb_get(const struct gbuf *g, int64_t i) { return elem_get(g->t.data, g->t.dtype, gb_off(g, i)); }

static int gb_untouched_outside(const struct gbuf *g) {
    if (g->mem == NULL) return 1;
    unsigned char *tmp = xmalloc(g->total);
    memcpy(tmp, g->mem, g->total);
    size_t es = ifl_dtype_size(g->t.dtype);
    for (int64_t i = 0; i < g->n; i++) {
        size_t o = GUARD + (size_t)gb_off(g, i) * es;
        memcpy(tmp + o, g->init + o, es);
    }
    int same = memcmp(tmp, g->init, g->total) == 0;
    free(tmp);
    return same;
}
static int gb_untouched(const struct gbuf *g) { return g->mem == NULL || memcmp(g->mem, g->init, g->total) == 0; }

/* ==== specs and instances ==== */

enum regime { REG_NORMAL, REG_PEAKY, REG_LARGE, REG_TIES };
static const char *const regime_tag[] = {"", ",q*8", ",q*32", ",ties"};

struct spec {
    int     nseq, batched;
    int32_t tq[4], tk[4];
    int     hq, hkv, d;
    int     def_cfg;                /* ifl_sparse_config_default(), else the small config */
    int     init, exact, dense_len; /* small config */
    int     regime;
    int     out_bf16;               /* outputs in bf16 */
    int     strided;                /* inputs are views into a fused qkv buffer, outputs padded */
    int     masked;                 /* also stage 2 with rows that see no key */
    int     errs;                   /* also the device-side error paths */
    int     full;                   /* --full only */
    int     dtypes;                 /* bit mask of 1 << dtype; 0 = bf16, f16, f32 */
};

#define DT_HALF ((1 << IFL_DTYPE_BF16) | (1 << IFL_DTYPE_F16))
#define DT_ALL  (DT_HALF | (1 << IFL_DTYPE_F32))
#define DT_BF16 (1 << IFL_DTYPE_BF16)
#define DT_F64  (1 << IFL_DTYPE_F64)

static const struct spec specs[] = {
    /* small config (bs 16, kernels 8/4 and 32/16, window 32, topk 4): boundaries, every G */
    {.nseq = 1, .tq = {1}, .tk = {1}, .hq = 1, .hkv = 1, .d = 64, .init = 1},
    {.nseq = 1, .tq = {15}, .tk = {15}, .hq = 2, .hkv = 1, .d = 40, .init = 0, .exact = 1},
    {.nseq = 1, .tq = {16}, .tk = {16}, .hq = 4, .hkv = 2, .d = 64, .init = 2},
    {.nseq = 1, .tq = {1}, .tk = {17}, .hq = 8, .hkv = 1, .d = 128, .init = 1},
    {.nseq = 1, .tq = {31}, .tk = {31}, .hq = 16, .hkv = 1, .d = 72, .init = 1, .exact = 1},
    {.nseq = 1, .tq = {100}, .tk = {100}, .hq = 8, .hkv = 2, .d = 64, .init = 1, .masked = 1, .errs = 1},
    {.nseq = 1, .tq = {37}, .tk = {100}, .hq = 2, .hkv = 2, .d = 128, .init = 2, .exact = 1},
    {.nseq = 1, .tq = {99}, .tk = {99}, .hq = 4, .hkv = 1, .d = 64, .init = 1, .regime = REG_PEAKY},
    {.nseq = 1, .tq = {257}, .tk = {257}, .hq = 4, .hkv = 2, .d = 64, .init = 1, .exact = 1},
    {.nseq = 1, .tq = {17}, .tk = {257}, .hq = 8, .hkv = 2, .d = 64, .init = 1},
    {.nseq = 1, .tq = {257}, .tk = {257}, .hq = 32, .hkv = 2, .d = 128, .init = 1, .regime = REG_PEAKY},
    {.nseq = 1, .tq = {33}, .tk = {257}, .hq = 4, .hkv = 1, .d = 40, .init = 0, .regime = REG_LARGE},
    {.nseq = 1, .tq = {60}, .tk = {257}, .hq = 4, .hkv = 1, .d = 64, .init = 1, .regime = REG_TIES},
    {.nseq = 1, .tq = {200}, .tk = {300}, .hq = 16, .hkv = 1, .d = 128, .init = 1, .regime = REG_TIES},
    {.nseq = 1, .tq = {700}, .tk = {700}, .hq = 2, .hkv = 1, .d = 64, .init = 2},
    {.nseq = 1, .tq = {1}, .tk = {700}, .hq = 16, .hkv = 1, .d = 96, .init = 0},
    {.nseq = 1, .tq = {64}, .tk = {700}, .hq = 8, .hkv = 2, .d = 128, .init = 1, .exact = 1},
    {.nseq = 1, .tq = {300}, .tk = {900}, .hq = 6, .hkv = 2, .d = 64, .init = 1},  /* G = 3: plain kernels */
    {.nseq = 1, .tq = {200}, .tk = {500}, .hq = 32, .hkv = 1, .d = 64, .init = 1}, /* G = 32 */
    {.nseq = 1, .tq = {50}, .tk = {300}, .hq = 64, .hkv = 1, .d = 128, .init = 1, .regime = REG_LARGE}, /* G = 64 */
    {.nseq = 1, .tq = {40}, .tk = {200}, .hq = 4, .hkv = 1, .d = 256, .init = 1},  /* D = 256: plain kernels */
    {.nseq = 1, .tq = {40}, .tk = {120}, .hq = 4, .hkv = 2, .d = 64, .init = 1, .dtypes = DT_F64},
    /* few tiles: the key range of each tile is split over several blocks (decode-like) */
    {.nseq = 1, .tq = {5}, .tk = {1500}, .hq = 4, .hkv = 1, .d = 64, .init = 1},
    {.nseq = 1, .tq = {3}, .tk = {1200}, .hq = 2, .hkv = 2, .d = 128, .init = 0, .exact = 1, .regime = REG_PEAKY},
    /* packed batches: different past values, a sequence with no queries, a dense one */
    {.nseq = 3, .batched = 1, .tq = {7, 40, 1}, .tk = {7, 140, 261}, .hq = 8, .hkv = 2, .d = 64, .init = 1,
     .masked = 1, .errs = 1},
    {.nseq = 3, .batched = 1, .tq = {0, 33, 5}, .tk = {50, 33, 300}, .hq = 4, .hkv = 1, .d = 72, .init = 2,
     .exact = 1, .regime = REG_LARGE},
    {.nseq = 4, .batched = 1, .tq = {1, 300, 64, 17}, .tk = {100, 300, 700, 99}, .hq = 16, .hkv = 2, .d = 128,
     .init = 1, .masked = 1},
    /* views into a fused qkv buffer, padded outputs; bf16 outputs */
    {.nseq = 1, .tq = {75}, .tk = {75}, .hq = 4, .hkv = 2, .d = 64, .init = 1, .strided = 1},
    {.nseq = 1, .tq = {100}, .tk = {257}, .hq = 4, .hkv = 1, .d = 64, .init = 1, .out_bf16 = 1, .dtypes = DT_BF16},
    /* the default config (bs 64, kernel 32/16, coarse 128/64, window 2048, topk 64, dense_len 8192) */
    {.nseq = 1, .tq = {128}, .tk = {2100}, .hq = 2, .hkv = 1, .d = 64, .def_cfg = 1},
    {.nseq = 1, .tq = {1}, .tk = {2100}, .hq = 16, .hkv = 1, .d = 128, .def_cfg = 1},
    {.nseq = 1, .tq = {80}, .tk = {8300}, .hq = 16, .hkv = 1, .d = 128, .def_cfg = 1, .dtypes = DT_BF16},
    {.nseq = 1, .tq = {1}, .tk = {9000}, .hq = 32, .hkv = 2, .d = 128, .def_cfg = 1, .dtypes = DT_HALF},
    {.nseq = 2, .batched = 1, .tq = {3, 40}, .tk = {8200, 7000}, .hq = 32, .hkv = 2, .d = 128, .def_cfg = 1,
     .dtypes = DT_BF16},
    /* --full */
    {.nseq = 1, .tq = {700}, .tk = {700}, .hq = 16, .hkv = 2, .d = 128, .init = 1, .full = 1},
    {.nseq = 1, .tq = {2100}, .tk = {2100}, .hq = 2, .hkv = 1, .d = 64, .def_cfg = 1, .full = 1},
    {.nseq = 1, .tq = {300}, .tk = {9000}, .hq = 32, .hkv = 2, .d = 128, .def_cfg = 1, .full = 1, .dtypes = DT_BF16},
};

enum { K_SPARSE, K_DENSE, K_MASKED, N_KINDS };

struct ref_fwd {
    int     done, ok;
    double *out, *lse;
};

struct inst {
    const struct spec       *sp;
    enum ifl_dtype           dt, out_dt;
    struct ifl_sparse_config cfg;
    double                   scale;
    char                     shape[320];
    int64_t                  nseq, TQ, TK, hq, hkv, G, d, K, nq_max, nk_max;
    int32_t                  cuq[5], cuk[5];
    struct ifl_batch         batch;
    const struct ifl_batch  *bp;
    void                    *q, *k, *v;       /* host, contiguous (what the ref gets) */
    double                  *qd;
    double                   zfac, kmax;
    int64_t                  pad;
    /* device copies */
    void             *dq, *dk, *dv, *dfused;
    size_t            nb_q, nb_k, nb_fused;
    struct ifl_tensor tq, tk, tv; /* device views the cuda contexts get */
    /* reference results */
    int            ck_done, ck_ok;
    double        *c1, *c2;
    int64_t        n1, n2, off1[5], off2[5];
    int            sel_done, sel_ok;
    int32_t       *sel, *sel_masked;
    void          *dsel, *dsel_masked;
    struct ref_fwd rf[N_KINDS];
    int            inf_done, inf_ok;
    double        *inf_out, *inf_lse;
    int32_t       *inf_sel;
    enum ifl_mode  inf_modes[4];
};

static struct ifl_sparse_config spec_cfg(const struct spec *sp) {
    struct ifl_sparse_config c = ifl_sparse_config_default();
    if (sp->def_cfg) return c;
    c.block_size = 16, c.kernel_size = 8, c.kernel_stride = 4;
    c.coarse_kernel_size = 32, c.coarse_kernel_stride = 16;
    c.init_blocks = sp->init, c.window_size = 32, c.topk = 4;
    c.dense_len   = sp->dense_len ? sp->dense_len : 100;
    c.lse_mode    = sp->exact ? IFL_LSE_EXACT : IFL_LSE_APPROX;
    return c;
}

static void *gen_input(enum ifl_dtype dt, int64_t n, double scale, double *rms, double *amax) {
    void  *p  = xmalloc((size_t)n * ifl_dtype_size(dt));
    double ss = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        elem_set(p, dt, i, scale * rng_normal());
        double x = elem_get(p, dt, i);
        ss += x * x;
        m = fmax(m, fabs(x));
    }
    if (rms) *rms = n ? sqrt(ss / (double)n) : 0;
    if (amax) *amax = m;
    return p;
}

static void append(char *buf, size_t size, const char *fmt, ...) {
    size_t  len = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, size - len, fmt, ap);
    va_end(ap);
}

static void inst_make(struct inst *in, const struct spec *sp, enum ifl_dtype dt) {
    memset(in, 0, sizeof *in);
    in->sp     = sp;
    in->dt     = dt;
    in->out_dt = sp->out_bf16 ? IFL_DTYPE_BF16 : dt == IFL_DTYPE_F64 ? IFL_DTYPE_F64 : IFL_DTYPE_F32;
    in->cfg    = spec_cfg(sp);
    in->nseq   = sp->nseq;
    in->hq = sp->hq, in->hkv = sp->hkv, in->G = sp->hq / sp->hkv, in->d = sp->d;
    in->scale = in->cfg.scale > 0 ? in->cfg.scale : 1.0 / sqrt((double)in->d);
    for (int s = 0; s < sp->nseq; s++) {
        in->cuq[s + 1] = in->cuq[s] + sp->tq[s];
        in->cuk[s + 1] = in->cuk[s] + sp->tk[s];
        if (sp->tq[s] > in->nq_max) in->nq_max = sp->tq[s];
        if (sp->tk[s] > in->nk_max) in->nk_max = sp->tk[s];
        int64_t w = ifl_select_width(&in->cfg, sp->tk[s]);
        if (w > in->K) in->K = w;
    }
    in->TQ    = in->cuq[sp->nseq];
    in->TK    = in->cuk[sp->nseq];
    in->batch = (struct ifl_batch){(int32_t)sp->nseq, in->cuq, in->cuk};
    in->bp    = sp->batched ? &in->batch : NULL;

    char  *b = in->shape;
    size_t n = sizeof in->shape;
    b[0]     = '\0';
    append(b, n, "dtype=%s,", ifl_dtype_name(dt));
    if (sp->batched) {
        append(b, n, "B=%d,Tq=", sp->nseq);
        for (int s = 0; s < sp->nseq; s++) append(b, n, "%s%d", s ? "/" : "", sp->tq[s]);
        append(b, n, ",Tk=");
        for (int s = 0; s < sp->nseq; s++) append(b, n, "%s%d", s ? "/" : "", sp->tk[s]);
    } else {
        append(b, n, "Tq=%d,Tk=%d", sp->tq[0], sp->tk[0]);
    }
    append(b, n, ",Hq=%d,Hkv=%d,D=%d,bs=%d,topk=%d,ks=%d/%d,cks=%d/%d,win=%d,init=%d,lse=%s%s%s%s", sp->hq, sp->hkv,
           sp->d, in->cfg.block_size, in->cfg.topk, in->cfg.kernel_size, in->cfg.kernel_stride, in->cfg.coarse_kernel_size,
           in->cfg.coarse_kernel_stride, in->cfg.window_size, in->cfg.init_blocks,
           in->cfg.lse_mode == IFL_LSE_EXACT ? "exact" : "approx", regime_tag[sp->regime], sp->strided ? ",strided" : "",
           sp->out_bf16 ? ",out=bf16" : "");

    rng_seed(in->shape);
    const int64_t nq = in->TQ * in->hq * in->d, nk = in->TK * in->hkv * in->d;
    const size_t  es = ifl_dtype_size(dt);
    double        qs = sp->regime == REG_PEAKY ? 8.0 : sp->regime == REG_LARGE ? 32.0 : 1.0, rq, rk;
    in->q = gen_input(dt, nq, qs, &rq, NULL);
    in->k = gen_input(dt, nk, 1.0, &rk, &in->kmax);
    if (sp->regime == REG_TIES) { /* periodic keys: exactly equal compressed keys, tied block scores */
        const int64_t P = 4 * in->cfg.block_size, row = in->hkv * in->d * (int64_t)es;
        for (int s = 0; s < sp->nseq; s++)
            for (int64_t t = P; t < sp->tk[s]; t++)
                memcpy((unsigned char *)in->k + (in->cuk[s] + t) * row, (unsigned char *)in->k + (in->cuk[s] + t % P) * row,
                       (size_t)row);
    }
    in->v    = gen_input(dt, nk, 1.0, NULL, NULL);
    in->zfac = fmax(1.0, rq * rk);
    in->qd   = xmalloc((size_t)nq * sizeof *in->qd);
    for (int64_t i = 0; i < nq; i++) in->qd[i] = elem_get(in->q, dt, i);

    in->nb_q = (size_t)nq * es, in->nb_k = (size_t)nk * es;
    in->dq   = dev_put(in->q, in->nb_q);
    in->dk   = dev_put(in->k, in->nb_k);
    in->dv   = dev_put(in->v, in->nb_k);
    in->tq   = tmake(in->dq, dt, 3, in->TQ, in->hq, in->d);
    in->tk   = tmake(in->dk, dt, 3, in->TK, in->hkv, in->d);
    in->tv   = tmake(in->dv, dt, 3, in->TK, in->hkv, in->d);
    if (sp->strided && in->TQ == in->TK) { /* [T, Hq + 2 Hkv, D], q | k | v per token */
        const int64_t  T = in->TQ, H = in->hq + 2 * in->hkv, D = in->d;
        unsigned char *f = xmalloc((size_t)(T * H * D) * es);
        for (int64_t t = 0; t < T; t++) {
            memcpy(f + (size_t)(t * H * D) * es, (unsigned char *)in->q + (size_t)(t * in->hq * D) * es, (size_t)(in->hq * D) * es);
            memcpy(f + (size_t)((t * H + in->hq) * D) * es, (unsigned char *)in->k + (size_t)(t * in->hkv * D) * es,
                   (size_t)(in->hkv * D) * es);
            memcpy(f + (size_t)((t * H + in->hq + in->hkv) * D) * es, (unsigned char *)in->v + (size_t)(t * in->hkv * D) * es,
                   (size_t)(in->hkv * D) * es);
        }
        in->nb_fused = (size_t)(T * H * D) * es;
        in->dfused   = dev_put(f, in->nb_fused);
        free(f);
        unsigned char *df = in->dfused;
        in->tq.data = df, in->tk.data = df + in->hq * D * (int64_t)es, in->tv.data = df + (in->hq + in->hkv) * D * (int64_t)es;
        in->tq.stride[0] = in->tk.stride[0] = in->tv.stride[0] = H * D;
        in->pad                                                = 5;
    }
    for (int s = 0; s < sp->nseq; s++) {
        in->off1[s + 1] = in->off1[s] + ifl_compressed_len(sp->tk[s], in->cfg.kernel_size, in->cfg.kernel_stride);
        in->off2[s + 1] = in->off2[s] + ifl_compressed_len(sp->tk[s], in->cfg.coarse_kernel_size, in->cfg.coarse_kernel_stride);
    }
    in->n1 = in->off1[sp->nseq];
    in->n2 = in->off2[sp->nseq];
}

/* The device inputs must be what was uploaded. */
static void inst_check_inputs(const struct inst *in) {
    size_t         most = in->nb_q > in->nb_k ? in->nb_q : in->nb_k, nsel = (size_t)(in->hkv * in->TQ * in->K) * 4;
    most                = most > nsel ? most : nsel;
    unsigned char *h    = xmalloc(most);
    dev_get(h, in->dq, in->nb_q);
    int same = memcmp(h, in->q, in->nb_q) == 0;
    dev_get(h, in->dk, in->nb_k);
    same &= memcmp(h, in->k, in->nb_k) == 0;
    dev_get(h, in->dv, in->nb_k);
    same &= memcmp(h, in->v, in->nb_k) == 0;
    TH_CHECK(same, "a device input (q, k or v) was modified");
    if (in->sel && in->dsel) {
        dev_get(h, in->dsel, nsel);
        TH_CHECK(memcmp(h, in->sel, nsel) == 0, "the device input sel was modified");
    }
    free(h);
}

static void inst_free(struct inst *in) {
    ifl_buffer_free(cu_ctx, in->dq), ifl_buffer_free(cu_ctx, in->dk), ifl_buffer_free(cu_ctx, in->dv);
    ifl_buffer_free(cu_ctx, in->dfused), ifl_buffer_free(cu_ctx, in->dsel), ifl_buffer_free(cu_ctx, in->dsel_masked);
    free(in->q), free(in->k), free(in->v), free(in->qd);
    free(in->c1), free(in->c2), free(in->sel), free(in->sel_masked);
    for (int k = 0; k < N_KINDS; k++) free(in->rf[k].out), free(in->rf[k].lse);
    free(in->inf_out), free(in->inf_lse), free(in->inf_sel);
}

/* ==== reference results ==== */

static int ref_ok(enum ifl_status st, const char *what) {
    return TH_CHECK(st == IFL_STATUS_OK, "ref %s: %s: %s", what, ifl_status_str(st), ifl_ctx_errmsg(ref_ctx));
}
static struct ifl_tensor in_q(const struct inst *in) { return tmake(in->q, in->dt, 3, in->TQ, in->hq, in->d); }
static struct ifl_tensor in_k(const struct inst *in) { return tmake(in->k, in->dt, 3, in->TK, in->hkv, in->d); }
static struct ifl_tensor in_v(const struct inst *in) { return tmake(in->v, in->dt, 3, in->TK, in->hkv, in->d); }

static int ensure_ck(struct inst *in) {
    if (in->ck_done) return in->ck_ok;
    in->ck_done = 1;
    in->c1      = xcalloc((size_t)(in->n1 * in->hkv * in->d), sizeof(double));
    in->c2      = xcalloc((size_t)(in->n2 * in->hkv * in->d), sizeof(double));
    struct ifl_tensor k = in_k(in), c1 = tmake(in->c1, IFL_DTYPE_F64, 3, in->n1, in->hkv, in->d);
    struct ifl_tensor c2 = tmake(in->c2, IFL_DTYPE_F64, 3, in->n2, in->hkv, in->d);
    in->ck_ok = ref_ok(ifl_compress_keys(ref_ctx, &in->cfg, in->bp, &k, in->n1 ? &c1 : NULL, in->n2 ? &c2 : NULL),
                       "ifl_compress_keys");
    return in->ck_ok;
}

static int ensure_sel(struct inst *in) {
    if (in->sel_done) return in->sel_ok;
    in->sel_done = 1;
    const int64_t n = in->hkv * in->TQ * in->K;
    in->sel      = xmalloc((size_t)n * sizeof *in->sel);
    struct ifl_tensor q = in_q(in), k = in_k(in), s = tmake(in->sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
    in->sel_ok = ref_ok(ifl_select(ref_ctx, &in->cfg, in->bp, &q, &k, &s), "ifl_select");
    if (!in->sel_ok) return 0;
    /* masked: every 5th row (from 2) sees no block; every 5th (from 4) only a block after the query */
    in->sel_masked = xmalloc((size_t)n * sizeof *in->sel_masked);
    memcpy(in->sel_masked, in->sel, (size_t)n * sizeof *in->sel);
    for (int64_t s_ = 0; s_ < in->nseq; s_++) {
        int64_t nb = (in->sp->tk[s_] + in->cfg.block_size - 1) / in->cfg.block_size;
        for (int64_t i = 0; i < in->sp->tq[s_]; i++) {
            int64_t t = in->cuq[s_] + i, p = in->sp->tk[s_] - in->sp->tq[s_] + i, qb = p / in->cfg.block_size;
            if (t % 5 != 2 && t % 5 != 4) continue;
            for (int64_t g = 0; g < in->hkv; g++) {
                int32_t *row = in->sel_masked + (g * in->TQ + t) * in->K;
                for (int64_t c = 0; c < in->K; c++) row[c] = -1;
                if (t % 5 == 4 && qb + 1 < nb) row[0] = (int32_t)(qb + 1);
            }
        }
    }
    in->dsel        = dev_put(in->sel, (size_t)n * 4);
    in->dsel_masked = dev_put(in->sel_masked, (size_t)n * 4);
    return 1;
}

static int ensure_fwd(struct inst *in, int kind) {
    struct ref_fwd *r = &in->rf[kind];
    if (r->done) return r->ok;
    r->done = 1;
    if (kind != K_DENSE && !ensure_sel(in)) return 0;
    r->out = xmalloc((size_t)(in->TQ * in->hq * in->d) * sizeof *r->out);
    r->lse = xmalloc((size_t)(in->TQ * in->hq) * sizeof *r->lse);
    struct ifl_tensor q = in_q(in), k = in_k(in), v = in_v(in);
    struct ifl_tensor o = tmake(r->out, IFL_DTYPE_F64, 3, in->TQ, in->hq, in->d);
    struct ifl_tensor l = tmake(r->lse, IFL_DTYPE_F64, 2, in->TQ, in->hq, 0);
    struct ifl_tensor s = tmake(kind == K_MASKED ? in->sel_masked : in->sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
    r->ok = kind == K_DENSE ? ref_ok(ifl_dense_attn_fwd(ref_ctx, &in->cfg, in->bp, &q, &k, &v, &o, &l), "ifl_dense_attn_fwd")
                            : ref_ok(ifl_sparse_attn_fwd(ref_ctx, &in->cfg, in->bp, &q, &k, &v, &s, &o, &l), "ifl_sparse_attn_fwd");
    return r->ok;
}

static int ensure_infllm(struct inst *in) {
    if (in->inf_done) return in->inf_ok;
    in->inf_done = 1;
    in->inf_out  = xmalloc((size_t)(in->TQ * in->hq * in->d) * sizeof(double));
    in->inf_lse  = xmalloc((size_t)(in->TQ * in->hq) * sizeof(double));
    in->inf_sel  = xmalloc((size_t)(in->hkv * in->TQ * in->K) * sizeof(int32_t));
    struct ifl_tensor q = in_q(in), k = in_k(in), v = in_v(in);
    struct ifl_tensor o = tmake(in->inf_out, IFL_DTYPE_F64, 3, in->TQ, in->hq, in->d);
    struct ifl_tensor l = tmake(in->inf_lse, IFL_DTYPE_F64, 2, in->TQ, in->hq, 0);
    struct ifl_tensor s = tmake(in->inf_sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
    in->inf_ok = ref_ok(ifl_infllmv2_fwd(ref_ctx, &in->cfg, in->bp, &q, &k, &v, &o, &l, &s, in->inf_modes), "ifl_infllmv2_fwd");
    return in->inf_ok;
}

/* ==== running the backend under test ==== */

enum op { OP_COMPRESS, OP_SELECT, OP_SPARSE_FWD, OP_DENSE_FWD, OP_INFLLM_FWD, OP_MASKED_FWD, N_OPS };
static const char *const op_name[N_OPS] = {"COMPRESS_KEYS", "SELECT", "SPARSE_FWD", "DENSE_FWD", "INFLLMV2_FWD",
                                           "SPARSE_FWD_MASKED"};

struct outs {
    struct gbuf   b[3];
    int           n;
    enum ifl_mode modes[4];
};
static void outs_free(struct outs *o) {
    for (int i = 0; i < 3; i++) gb_free(&o->b[i]);
}

/* LSE in f64 for f64 inputs (an f32 LSE would be rounding, not computation, error), else f32. */
static enum ifl_dtype lse_dtype(const struct inst *in) { return in->dt == IFL_DTYPE_F64 ? IFL_DTYPE_F64 : IFL_DTYPE_F32; }

/* Runs op on ctx c with fresh guarded device outputs, downloads them, checks the status and the
 * guards. Returns 1 when the outputs can be compared. */
static int ut_run(struct ifl_ctx *c, enum op op, struct inst *in, struct outs *o) {
    memset(o, 0, sizeof *o);
    const enum ifl_dtype od = in->out_dt;
    const int64_t        pad = in->pad;
    struct ifl_tensor   *q = &in->tq, *k = &in->tk, *v = &in->tv;
    enum ifl_status      st = IFL_STATUS_OK;
    switch (op) {
    case OP_COMPRESS:
        o->n = 2;
        if (in->n1) gb_make(&o->b[0], od, 3, in->n1, in->hkv, in->d, pad);
        if (in->n2) gb_make(&o->b[1], od, 3, in->n2, in->hkv, in->d, pad);
        st = ifl_compress_keys(c, &in->cfg, in->bp, k, in->n1 ? &o->b[0].td : NULL, in->n2 ? &o->b[1].td : NULL);
        break;
    case OP_SELECT:
        o->n = 1;
        gb_make(&o->b[0], IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K, pad);
        st = ifl_select(c, &in->cfg, in->bp, q, k, &o->b[0].td);
        break;
    case OP_SPARSE_FWD:
    case OP_DENSE_FWD:
    case OP_MASKED_FWD: {
        if (op != OP_DENSE_FWD && !ensure_sel(in)) return 0;
        o->n = 2;
        gb_make(&o->b[0], od, 3, in->TQ, in->hq, in->d, pad);
        gb_make(&o->b[1], lse_dtype(in), 2, in->TQ, in->hq, 0, pad);
        struct ifl_tensor s = tmake(op == OP_MASKED_FWD ? in->dsel_masked : in->dsel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
        st = op == OP_DENSE_FWD ? ifl_dense_attn_fwd(c, &in->cfg, in->bp, q, k, v, &o->b[0].td, &o->b[1].td)
                                : ifl_sparse_attn_fwd(c, &in->cfg, in->bp, q, k, v, &s, &o->b[0].td, &o->b[1].td);
        break;
    }
    case OP_INFLLM_FWD:
        o->n = 3;
        gb_make(&o->b[0], od, 3, in->TQ, in->hq, in->d, pad);
        gb_make(&o->b[1], lse_dtype(in), 2, in->TQ, in->hq, 0, pad);
        gb_make(&o->b[2], IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K, pad);
        for (int s = 0; s < 4; s++) o->modes[s] = (enum ifl_mode)77;
        st = ifl_infllmv2_fwd(c, &in->cfg, in->bp, q, k, v, &o->b[0].td, &o->b[1].td, &o->b[2].td, o->modes);
        break;
    default: return 0;
    }
    for (int i = 0; i < o->n; i++) gb_fetch(&o->b[i]);
    for (int i = 0; i < o->n; i++)
        TH_CHECK(gb_untouched_outside(&o->b[i]), "guard bytes or padding around output %d were overwritten", i);
    return TH_CHECK(st == IFL_STATUS_OK, "%s: %s", ifl_status_str(st), ifl_ctx_errmsg(c));
}

/* ==== checks ==== */

struct stat {
    char    qty[40];
    int     dt;
    double  err_rel, nmse;
    char    where[400];
    int64_t count;
};
static struct stat stats[128];
static int         n_stats;
static char        cur_case[400];

static struct stat *stat_of(const char *qty, enum ifl_dtype dt) {
    for (int i = 0; i < n_stats; i++)
        if (stats[i].dt == (int)dt && strcmp(stats[i].qty, qty) == 0) return &stats[i];
    if (n_stats == (int)(sizeof stats / sizeof stats[0])) return &stats[0];
    struct stat *s = &stats[n_stats++];
    memset(s, 0, sizeof *s);
    snprintf(s->qty, sizeof s->qty, "%s", qty);
    s->dt = (int)dt;
    return s;
}

/* A continuous output against the ref; skip (may be NULL): rows of `inner` elements not compared. */
static int check_float(const char *qty, struct inst *in, const struct gbuf *ut, const double *ref, int64_t inner,
                       const unsigned char *skip, int64_t n_acc, int is_lse) {
    int64_t n_nan = 0, n_inf_bad = 0, first_bad = -1, worst_i = -1;
    double  err = 0, maxref = 0, num = 0, den = 0;
    for (int64_t i = 0; i < ut->n; i++) {
        if (skip && skip[i / inner]) continue;
        double a = gb_get(ut, i), b = ref[i];
        if (isnan(a) || isnan(b)) {
            if (n_nan++ == 0) first_bad = i;
            continue;
        }
        if (isinf(a) || isinf(b)) {
            if (a != b && n_inf_bad++ == 0 && first_bad < 0) first_bad = i;
            continue;
        }
        double e = fabs(a - b);
        if (e > err) err = e, worst_i = i;
        maxref = fmax(maxref, fabs(b));
        num += e * e;
        den += b * b;
    }
    const enum ifl_dtype dt   = in->dt;
    const double         mag  = is_lse ? fmax(1.0, maxref) : maxref;
    const double         uacc = dt == IFL_DTYPE_F64 ? U64 : U32;
    double               gate, ncap;
    if (is_half(dt)) {
        gate = is_lse ? 1e-3 * mag : 4.0 * unit_roundoff(dt) * mag;
        ncap = is_lse ? 1e-8 : dt == IFL_DTYPE_BF16 ? 5e-5 : 1e-6;
    } else {
        double unit = uacc * sqrt((double)(n_acc + in->d)) * in->zfac * mag;
        gate        = 16.0 * unit;
        ncap        = 256.0 * uacc * uacc * (double)(n_acc + in->d) * in->zfac * in->zfac;
    }
    if (!is_lse && in->out_dt != IFL_DTYPE_F32 && in->out_dt != in->dt) { /* a narrower output adds its rounding */
        gate += unit_roundoff(in->out_dt) * maxref;
        ncap += unit_roundoff(in->out_dt) * unit_roundoff(in->out_dt);
    }
    double nmse = den > 0 ? num / den : (num > 0 ? INFINITY : 0);
    printf("  %-5s max err %.3g (gate %.3g, %.3g of it) nmse %.3g (cap %.3g) max|ref| %.3g%s\n", qty, err, gate,
           gate > 0 ? err / gate : 0, nmse, ncap, maxref, skip ? " [rows with a differing selection skipped]" : "");
    struct stat *st = stat_of(qty, dt);
    st->count++;
    if (mag > 0 && err / mag > st->err_rel) {
        st->err_rel = err / mag;
        snprintf(st->where, sizeof st->where, "%s", cur_case);
    }
    if (nmse > st->nmse) st->nmse = nmse;
    int pass = 1;
    pass &= TH_CHECK(n_nan == 0, "%s: %lld NaN (first at element %lld: cuda %g ref %g)", qty, (long long)n_nan,
                     (long long)first_bad, first_bad >= 0 ? gb_get(ut, first_bad) : 0.0, first_bad >= 0 ? ref[first_bad] : 0.0);
    pass &= TH_CHECK(n_inf_bad == 0, "%s: %lld infinities differ from the ref's (first at %lld: cuda %g ref %g)", qty,
                     (long long)n_inf_bad, (long long)first_bad, first_bad >= 0 ? gb_get(ut, first_bad) : 0.0,
                     first_bad >= 0 ? ref[first_bad] : 0.0);
    pass &= TH_CHECK(err <= gate, "%s: max err %.4g > gate %.4g (element %lld: cuda %.9g ref %.9g)", qty, err, gate,
                     (long long)worst_i, worst_i >= 0 ? gb_get(ut, worst_i) : 0.0, worst_i >= 0 ? ref[worst_i] : 0.0);
    pass &= TH_CHECK(nmse <= ncap, "%s: nmse %.4g > cap %.4g", qty, nmse, ncap);
    return pass;
}

static void check_ck(const char *qty, struct inst *in, const struct gbuf *ut, const double *ref, int64_t kernel) {
    double  acc = 4.0 * (in->dt == IFL_DTYPE_F64 ? U64 : U32) * sqrt((double)kernel) * in->kmax, worst = 0, err = 0;
    int64_t n_diff = 0, n_bad = 0, first_bad = -1, n_nan = 0;
    for (int64_t i = 0; i < ut->n; i++) {
        double a = gb_get(ut, i), b = ref[i];
        if (isnan(a)) {
            n_nan++;
            continue;
        }
        double e = fabs(a - b), u = ulp_of(in->dt, b);
        if (e != 0) n_diff++;
        if (e > err) err = e;
        if (e / u > worst) worst = e / u;
        if (e > u + acc && n_bad++ == 0) first_bad = i;
    }
    printf("  %-5s %lld of %lld elements differ, worst %.3g ulp of %s (max err %.3g)\n", qty, (long long)n_diff,
           (long long)ut->n, worst, ifl_dtype_name(in->dt), err);
    TH_CHECK(n_nan == 0, "%s: %lld NaN", qty, (long long)n_nan);
    TH_CHECK(n_bad == 0, "%s: %lld elements beyond 1 ulp + %.3g (first %lld: cuda %.9g ref %.9g)", qty, (long long)n_bad, acc,
             (long long)first_bad, first_bad >= 0 ? gb_get(ut, first_bad) : 0.0, first_bad >= 0 ? ref[first_bad] : 0.0);
}

/* ---- stage-1 scores (float64, from the spec) and the selection check ---- */

struct scored {
    double  s;
    int32_t b;
};
static int best_first(const void *x, const void *y) {
    const struct scored *a = x, *b = y;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->b > b->b) - (a->b < b->b);
}
static double dotd(const double *a, const double *b, int64_t d) {
    double s = 0;
    for (int64_t x = 0; x < d; x++) s += a[x] * b[x];
    return s;
}
static int64_t visible(int64_t p, int64_t ks, int64_t st, int64_t n) {
    int64_t v = 0;
    while (v < n && v * st + ks - 1 <= p) v++;
    return v;
}

/* Block scores of one selection row (sequence s, its query i, KV head g) from infllmv2.md §2.3-2.5
 * and decisions 4-5, on the ref's compressed keys. blk[nb]; S scratch of n1 doubles. */
static void block_scores(const struct inst *in, int64_t s, int64_t i, int64_t g, double *S, double *blk) {
    const struct ifl_sparse_config *c = &in->cfg;
    const int64_t d = in->d, hkv = in->hkv, G = in->G, nk = in->sp->tk[s], p = nk - in->sp->tq[s] + i;
    const int64_t n1 = in->off1[s + 1] - in->off1[s], n2 = in->off2[s + 1] - in->off2[s];
    const double *c1 = in->c1 + in->off1[s] * hkv * d, *c2 = in->c2 + in->off2[s] * hkv * d;
    const int64_t vis1 = visible(p, c->kernel_size, c->kernel_stride, n1);
    const int64_t vis2 = visible(p, c->coarse_kernel_size, c->coarse_kernel_stride, n2);
    for (int64_t j = 0; j < n1; j++) S[j] = 0;
    for (int64_t h = g * G; h < (g + 1) * G && vis1 > 0; h++) {
        const double *qh     = in->qd + ((in->cuq[s] + i) * in->hq + h) * d;
        int           coarse = c->lse_mode == IFL_LSE_APPROX && vis2 > 0;
        const double *nk_    = coarse ? c2 : c1;
        int64_t       nn     = coarse ? vis2 : vis1;
        double        m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < nn; j++) m = fmax(m, in->scale * dotd(qh, nk_ + (j * hkv + g) * d, d));
        for (int64_t j = 0; j < nn; j++) sum += exp(in->scale * dotd(qh, nk_ + (j * hkv + g) * d, d) - m);
        double lse = m + log(sum);
        for (int64_t j = 0; j < vis1; j++) S[j] += exp(in->scale * dotd(qh, c1 + (j * hkv + g) * d, d) - lse);
    }
    const int64_t bs = c->block_size, nb = (nk + bs - 1) / bs, qb = p / bs, nloc = c->window_size / bs;
    for (int64_t b = 0; b < nb; b++) {
        if (b < c->init_blocks || (b >= qb - nloc && b <= qb)) {
            blk[b] = INFINITY;
            continue;
        }
        double m = -INFINITY;
        for (int64_t j = 0; j < n1; j++)
            if (j * c->kernel_stride <= b * bs + bs - 1 && j * c->kernel_stride + c->kernel_size - 1 >= b * bs) m = fmax(m, S[j]);
        blk[b] = m;
    }
}

static int read_row(const struct gbuf *gb, const int32_t *plain, int64_t g, int64_t t, int64_t TQ, int64_t K, int64_t w,
                    int64_t qb, int64_t nb, unsigned char *mem) {
    memset(mem, 0, (size_t)nb);
    int64_t prev = -1, cnt = 0;
    int     done = 0;
    for (int64_t c = 0; c < K; c++) {
        int64_t b = gb ? (int64_t)gb_get(gb, (g * TQ + t) * K + c) : plain[(g * TQ + t) * K + c];
        if (b == -1) {
            done = 1;
            continue;
        }
        if (done || b <= prev || b < 0 || b > qb || b >= nb || ++cnt > w) return -1;
        mem[b] = 1;
        prev   = b;
    }
    return (int)cnt;
}

static void print_row(const char *label, const unsigned char *mem, int64_t nb, const double *blk) {
    printf("      %s:", label);
    for (int64_t b = 0; b < nb; b++)
        if (mem[b]) printf(" %lld(%.6g)", (long long)b, blk[b]);
    printf("\n");
}

static void check_selection(struct inst *in, const int32_t *ref, const struct gbuf *ut, const unsigned char *need_seq,
                            unsigned char *differs) {
    if (!ensure_ck(in)) return;
    const struct ifl_sparse_config *c = &in->cfg;
    const int64_t bs = c->block_size, nloc = c->window_size / bs, K = in->K;
    const double  u  = is_half(in->dt) ? unit_roundoff(in->dt) : in->dt == IFL_DTYPE_F64 ? 1e3 * U64 : U32;
    int64_t       rows = 0, n_diff = 0, n_near = 0, n_bad = 0, n_malformed = 0, n_dense_bad = 0;
    int64_t       max_nb = (in->nk_max + bs - 1) / bs, max_n1 = 1;
    for (int64_t s = 0; s < in->nseq; s++) max_n1 = in->off1[s + 1] - in->off1[s] > max_n1 ? in->off1[s + 1] - in->off1[s] : max_n1;
    double        *S = xmalloc((size_t)max_n1 * sizeof *S), *blk = xmalloc((size_t)max_nb * sizeof *blk);
    struct scored *ord = xmalloc((size_t)max_nb * sizeof *ord);
    unsigned char *mr = xmalloc((size_t)max_nb), *mc = xmalloc((size_t)max_nb);
    for (int64_t s = 0; s < in->nseq; s++) {
        const int64_t nq = in->sp->tq[s], nk = in->sp->tk[s], nb = (nk + bs - 1) / bs, w = ifl_select_width(c, nk);
        for (int64_t i = 0; i < nq; i++) {
            const int64_t t = in->cuq[s] + i, p = nk - nq + i, qb = p / bs;
            for (int64_t g = 0; g < in->hkv; g++) {
                if (need_seq && !need_seq[s]) {
                    int all = 1;
                    for (int64_t col = 0; col < K; col++)
                        all &= ref[(g * in->TQ + t) * K + col] == -1 && gb_get(ut, (g * in->TQ + t) * K + col) == -1;
                    n_dense_bad += !all;
                    continue;
                }
                rows++;
                int nr = read_row(NULL, ref, g, t, in->TQ, K, w, qb, nb, mr);
                int nc = read_row(ut, NULL, g, t, in->TQ, K, w, qb, nb, mc);
                if (nc < 0) {
                    if (n_malformed++ < 3) {
                        printf("    malformed cuda row (g=%lld, t=%lld, p=%lld):", (long long)g, (long long)t, (long long)p);
                        for (int64_t col = 0; col < K; col++) printf(" %g", gb_get(ut, (g * in->TQ + t) * K + col));
                        printf("\n");
                    }
                    if (differs) differs[t * in->hkv + g] = 1;
                    continue;
                }
                if (nr >= 0 && memcmp(mr, mc, (size_t)nb) == 0) continue;
                n_diff++;
                if (differs) differs[t * in->hkv + g] = 1;
                block_scores(in, s, i, g, S, blk);
                for (int64_t b = 0; b < nb; b++) ord[b] = (struct scored){blk[b], (int32_t)b};
                qsort(ord, (size_t)nb, sizeof *ord, best_first);
                double kth = ord[w - 1].s, maxfin = 0, lost = 0, gained = 0;
                for (int64_t b = 0; b < nb; b++)
                    if (isfinite(blk[b])) maxfin = fmax(maxfin, fabs(blk[b]));
                double tau = 8.0 * u * maxfin;
                int    ok  = isfinite(kth);
                for (int64_t b = 0; b < nb; b++) {
                    int forced = b <= qb && (b < c->init_blocks || b >= qb - nloc);
                    if (forced && !mc[b]) ok = 0;
                    if (mr[b] == mc[b]) continue;
                    if (!isfinite(blk[b]) || fabs(blk[b] - kth) > tau) ok = 0;
                    if (mr[b]) lost += isfinite(blk[b]) ? blk[b] : 0;
                    else gained += isfinite(blk[b]) ? blk[b] : 0;
                }
                if (lost - gained > (double)w * tau) ok = 0;
                if (ok) n_near++;
                else if (n_bad++ < 3) {
                    printf("    selection differs beyond the near-tie margin: row (g=%lld, t=%lld, p=%lld), K-th score %.9g, tau %.3g\n",
                           (long long)g, (long long)t, (long long)p, kth, tau);
                    print_row("ref ", mr, nb, blk);
                    print_row("cuda", mc, nb, blk);
                }
            }
        }
    }
    printf("  sel   %lld rows, %lld differ, %lld of them near-ties\n", (long long)rows, (long long)n_diff, (long long)n_near);
    struct stat *st = stat_of("sel rows/near-tie", in->dt);
    st->count += rows;
    st->err_rel += (double)n_near;
    TH_CHECK(n_malformed == 0, "%lld cuda selection rows are malformed", (long long)n_malformed);
    TH_CHECK(n_dense_bad == 0, "%lld rows of dense sequences are not all -1", (long long)n_dense_bad);
    TH_CHECK(n_bad == 0, "%lld selection rows differ beyond near-ties (or drop a forced block)", (long long)n_bad);
    free(S), free(blk), free(ord), free(mr), free(mc);
}

/* ==== the op cases ==== */

static int64_t n_keys_row(const struct inst *in, int sparse) {
    int64_t n = in->nk_max;
    if (sparse) {
        int64_t lim = in->K * in->cfg.block_size;
        n           = lim < n ? lim : n;
    }
    return n;
}

static void compare_op(struct inst *in, enum op op, struct outs *o) {
    switch (op) {
    case OP_COMPRESS:
        if (!ensure_ck(in)) return;
        if (in->n1) check_ck("c1", in, &o->b[0], in->c1, in->cfg.kernel_size);
        if (in->n2) check_ck("c2", in, &o->b[1], in->c2, in->cfg.coarse_kernel_size);
        if (!in->n1 && !in->n2) printf("  (no complete window: c1 and c2 have no rows)\n");
        break;
    case OP_SELECT:
        if (!ensure_sel(in)) return;
        check_selection(in, in->sel, &o->b[0], NULL, NULL);
        break;
    case OP_SPARSE_FWD:
    case OP_DENSE_FWD:
    case OP_MASKED_FWD: {
        int kind = op == OP_DENSE_FWD ? K_DENSE : op == OP_MASKED_FWD ? K_MASKED : K_SPARSE;
        if (!ensure_fwd(in, kind)) return;
        int64_t nrow = n_keys_row(in, kind != K_DENSE);
        check_float("out", in, &o->b[0], in->rf[kind].out, in->d, NULL, nrow, 0);
        check_float("lse", in, &o->b[1], in->rf[kind].lse, 1, NULL, nrow, 1);
        break;
    }
    case OP_INFLLM_FWD: {
        if (!ensure_infllm(in)) return;
        unsigned char need[4] = {0}, *differs = xcalloc((size_t)(in->TQ * in->hkv), 1);
        unsigned char *skip = xcalloc((size_t)(in->TQ * in->hq), 1);
        for (int s = 0; s < in->nseq; s++) {
            need[s] = (unsigned char)(in->cfg.dense_len == -1 || in->sp->tk[s] >= in->cfg.dense_len);
            TH_CHECK(o->modes[s] == in->inf_modes[s], "mode of sequence %d: cuda %d, ref %d", s, (int)o->modes[s],
                     (int)in->inf_modes[s]);
        }
        check_selection(in, in->inf_sel, &o->b[2], need, differs);
        int64_t n_skip = 0;
        for (int64_t t = 0; t < in->TQ; t++)
            for (int64_t h = 0; h < in->hq; h++)
                if (differs[t * in->hkv + h / in->G]) skip[t * in->hq + h] = 1, n_skip++;
        check_float("out", in, &o->b[0], in->inf_out, in->d, n_skip ? skip : NULL, in->nk_max, 0);
        check_float("lse", in, &o->b[1], in->inf_lse, 1, n_skip ? skip : NULL, in->nk_max, 1);
        free(differs), free(skip);
        break;
    }
    default: break;
    }
}

/* One op on the default context (twice: bitwise repeatable) and on the generic one. */
static void case_op(struct inst *in, enum op op) {
    snprintf(cur_case, sizeof cur_case, "%s(%s)", op_name[op], in->shape);
    if (!th_case("%s", cur_case)) return;
    double      t0 = now_s();
    struct outs o, o2;
    if (ut_run(cu_ctx, op, in, &o)) {
        compare_op(in, op, &o);
        if (ut_run(cu_ctx, op, in, &o2)) {
            int same = 1;
            for (int i = 0; i < o.n; i++) same &= o.b[i].total == o2.b[i].total && memcmp(o.b[i].mem, o2.b[i].mem, o.b[i].total) == 0;
            if (op == OP_INFLLM_FWD) same &= memcmp(o.modes, o2.modes, (size_t)in->nseq * sizeof o.modes[0]) == 0;
            TH_CHECK(same, "a second run gave different bits");
        }
        outs_free(&o2);
    }
    outs_free(&o);
    printf("  (%.3f s)\n", now_s() - t0);
    snprintf(cur_case, sizeof cur_case, "%s(generic,%s)", op_name[op], in->shape);
    if (!th_case("%s", cur_case)) return;
    t0 = now_s();
    if (ut_run(gen_ctx, op, in, &o)) compare_op(in, op, &o);
    outs_free(&o);
    printf("  (%.3f s)\n", now_s() - t0);
}

/* ---- device-side error paths: refused with the exact status, a message naming the position, and
 * every output byte untouched ---- */

static void expect_refused(struct ifl_ctx *c, enum ifl_status st, enum ifl_status want, const char *must_contain,
                           struct gbuf *outs, int n_outs) {
    const char *msg = ifl_ctx_errmsg(c);
    printf("  -> %s: %s\n", ifl_status_str(st), msg);
    TH_CHECK(st == want, "status %s, expected %s", ifl_status_str(st), ifl_status_str(want));
    if (must_contain) TH_CHECK(strstr(msg, must_contain) != NULL, "message '%s' does not contain '%s'", msg, must_contain);
    for (int i = 0; i < n_outs; i++) {
        gb_fetch(&outs[i]);
        TH_CHECK(gb_untouched(&outs[i]), "output %d was written by a refused call", i);
    }
}

static void case_errors(struct inst *in) {
    if (!ensure_sel(in)) return;
    const size_t      es = ifl_dtype_size(in->dt), nsel = (size_t)(in->hkv * in->TQ * in->K);
    struct gbuf       ob[2];
    struct ifl_tensor q = tmake(in->dq, in->dt, 3, in->TQ, in->hq, in->d), k = tmake(in->dk, in->dt, 3, in->TK, in->hkv, in->d);
    struct ifl_tensor v = tmake(in->dv, in->dt, 3, in->TK, in->hkv, in->d);
    gb_make(&ob[0], in->out_dt, 3, in->TQ, in->hq, in->d, 0);
    gb_make(&ob[1], IFL_DTYPE_F32, 2, in->TQ, in->hq, 0, 0);
    struct ifl_ctx *ctxs[2] = {cu_ctx, gen_ctx};

    /* a NaN and an Inf in the inputs (check_finite is on by default) */
    for (int w = 0; w < 2; w++) {
        if (!th_case("ERR_NONFINITE(%s,%s)", w ? "k=-inf" : "q=nan", in->shape)) continue;
        int64_t   row = w ? in->TK - 1 : in->TQ / 2, h = w ? in->hkv - 1 : in->hq - 1, d = in->d / 3;
        int64_t   n   = w ? in->TK * in->hkv * in->d : in->TQ * in->hq * in->d;
        void     *hb  = xmalloc((size_t)n * es);
        memcpy(hb, w ? in->k : in->q, (size_t)n * es);
        int64_t idx = (row * (w ? in->hkv : in->hq) + h) * in->d + d;
        elem_set(hb, in->dt, idx, w ? -INFINITY : NAN);
        void             *db = dev_put(hb, (size_t)n * es);
        struct ifl_tensor bad = tmake(db, in->dt, 3, w ? in->TK : in->TQ, w ? in->hkv : in->hq, in->d);
        char              want[96];
        snprintf(want, sizeof want, "%s[%lld, %lld, %lld] is %s", w ? "k" : "q", (long long)row, (long long)h, (long long)d,
                 w ? "-Inf" : "NaN");
        for (int ci = 0; ci < 2; ci++) {
            enum ifl_status st = w ? ifl_dense_attn_fwd(ctxs[ci], &in->cfg, in->bp, &q, &bad, &v, &ob[0].td, &ob[1].td)
                                   : ifl_dense_attn_fwd(ctxs[ci], &in->cfg, in->bp, &bad, &k, &v, &ob[0].td, &ob[1].td);
            expect_refused(ctxs[ci], st, IFL_STATUS_INVALID_ARG, want, ob, 2);
        }
        ifl_buffer_free(cu_ctx, db);
        free(hb);
    }

    /* malformed selections: not ascending, out of the sequence's blocks, a value after the padding,
     * a negative value other than -1 */
    for (int kind = 0; kind < 4; kind++) {
        static const char *const names[4] = {"descending", "block>=nb", "after-padding", "negative"};
        if (!th_case("ERR_SEL(%s,%s)", names[kind], in->shape)) continue;
        int32_t *hs = xmalloc(nsel * 4);
        memcpy(hs, in->sel, nsel * 4);
        /* the last query row of the last sequence with queries, KV head hkv-1 */
        int64_t s = in->nseq - 1;
        while (s > 0 && in->sp->tq[s] == 0) s--;
        int64_t t = in->cuq[s + 1] - 1, g = in->hkv - 1, nb = (in->sp->tk[s] + in->cfg.block_size - 1) / in->cfg.block_size;
        int32_t *row = hs + (g * in->TQ + t) * in->K;
        int64_t  len = 0, c = 0;
        while (len < in->K && row[len] >= 0) len++;
        int32_t val = 0;
        if (kind == 0 && len >= 2) c = 1, val = row[0];
        else if (kind == 1) c = len > 0 ? len - 1 : 0, val = (int32_t)nb;
        else if (kind == 2 && len < in->K) c = in->K - 1, val = 0, row[c > 0 ? c - 1 : 0] = -1;
        else c = 0, val = -5;
        if (kind == 2 && len >= in->K) c = 0, val = -5; /* a full row has no padding: use a negative value */
        row[c] = val;
        void             *ds   = dev_put(hs, nsel * 4);
        struct ifl_tensor tsel = tmake(ds, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
        char              want[64];
        snprintf(want, sizeof want, "sel[%lld, %lld, %lld]=%d", (long long)g, (long long)t, (long long)c, (int)val);
        /* the message names the first malformed entry of the row, which is c here */
        for (int ci = 0; ci < 2; ci++) {
            enum ifl_status st = ifl_sparse_attn_fwd(ctxs[ci], &in->cfg, in->bp, &q, &k, &v, &tsel, &ob[0].td, &ob[1].td);
            expect_refused(ctxs[ci], st, IFL_STATUS_INVALID_ARG, want, ob, 2);
        }
        ifl_buffer_free(cu_ctx, ds);
        free(hs);
    }

    /* a host pointer where device memory is expected */
    if (th_case("ERR_HOST_POINTER(%s)", in->shape)) {
        struct ifl_tensor hq = in_q(in);
        enum ifl_status   st = ifl_dense_attn_fwd(cu_ctx, &in->cfg, in->bp, &hq, &k, &v, &ob[0].td, &ob[1].td);
        expect_refused(cu_ctx, st, IFL_STATUS_INVALID_ARG, "q.data is host memory", ob, 2);
    }

    /* the backward is not implemented yet: UNSUPPORTED, with a message, nothing written */
    if (th_case("ERR_BWD_UNSUPPORTED(%s)", in->shape)) {
        struct gbuf g3[3];
        gb_make(&g3[0], in->out_dt, 3, in->TQ, in->hq, in->d, 0);
        gb_make(&g3[1], in->out_dt, 3, in->TK, in->hkv, in->d, 0);
        gb_make(&g3[2], in->out_dt, 3, in->TK, in->hkv, in->d, 0);
        struct ifl_tensor o = tmake(in->dq, in->dt, 3, in->TQ, in->hq, in->d); /* any valid tensors */
        float            *lh = xcalloc((size_t)(in->TQ * in->hq), sizeof(float));
        void             *ld = dev_put(lh, (size_t)(in->TQ * in->hq) * 4);
        struct ifl_tensor l = tmake(ld, IFL_DTYPE_F32, 2, in->TQ, in->hq, 0);
        struct ifl_tensor s = tmake(in->dsel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
        enum ifl_status   st = ifl_sparse_attn_bwd(cu_ctx, &in->cfg, in->bp, &q, &k, &v, &s, &o, &l, &q, &g3[0].td, &g3[1].td,
                                                 &g3[2].td);
        expect_refused(cu_ctx, st, IFL_STATUS_UNSUPPORTED, "backward", g3, 3);
        st = ifl_dense_attn_bwd(cu_ctx, &in->cfg, in->bp, &q, &k, &v, &o, &l, &q, &g3[0].td, &g3[1].td, &g3[2].td);
        expect_refused(cu_ctx, st, IFL_STATUS_UNSUPPORTED, "backward", g3, 3);
        for (int i = 0; i < 3; i++) gb_free(&g3[i]);
        ifl_buffer_free(cu_ctx, ld);
        free(lh);
    }
    gb_free(&ob[0]);
    gb_free(&ob[1]);
}

static void run_instance(struct inst *in) {
    for (int op = 0; op < N_OPS; op++) {
        if (op == OP_MASKED_FWD && !in->sp->masked) continue;
        case_op(in, (enum op)op);
    }
    if (in->sp->errs) case_errors(in);
    if (th_case("INPUTS_UNCHANGED(%s)", in->shape)) inst_check_inputs(in);
}

/* The context-level calls: buffers, sync, a context without the finite scan. */
static void test_context(void) {
    if (th_case("CTX(buffers, sync)")) {
        void *p = (void *)1;
        TH_CHECK(ifl_buffer_alloc(cu_ctx, 0, &p) == IFL_STATUS_INVALID_ARG && p == NULL, "alloc of 0 bytes");
        ifl_buffer_free(cu_ctx, NULL);
        TH_CHECK(ifl_ctx_sync(cu_ctx) == IFL_STATUS_OK, "sync: %s", ifl_ctx_errmsg(cu_ctx));
        unsigned char h[1000], back[1000];
        for (int i = 0; i < 1000; i++) h[i] = (unsigned char)(i * 13);
        void *d = dev_put(h, sizeof h);
        dev_get(back, d, sizeof back);
        TH_CHECK(memcmp(h, back, sizeof h) == 0, "upload/download round trip");
        ifl_buffer_free(cu_ctx, d);
        TH_CHECK(ifl_buffer_alloc(cu_ctx, (size_t)1 << 50, &p) == IFL_STATUS_OUT_OF_MEMORY && p == NULL,
                 "a 1 PiB allocation: expected OUT_OF_MEMORY");
        TH_CHECK(ifl_ctx_sync(cu_ctx) == IFL_STATUS_OK, "the context survives a failed allocation: %s", ifl_ctx_errmsg(cu_ctx));
        printf("  backend %s, %d thread(s)\n", ifl_backend_name(IFL_BACKEND_CUDA), ifl_ctx_threads(cu_ctx));
    }
}

int main(int argc, char **argv) {
    char **rest   = xmalloc((size_t)(argc + 1) * sizeof *rest);
    int    n_rest = 0;
    rest[n_rest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--full") == 0) opt_full = 1;
        else if (strcmp(argv[i], "--quick") == 0) opt_full = 0;
        else {
            if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) opt_seed = strtoull(argv[i + 1], NULL, 10);
            rest[n_rest++] = argv[i];
        }
    }
    rest[n_rest] = NULL;
    th_init(n_rest, rest);
    double t0 = now_s();

    struct ifl_ctx_params cp = ifl_ctx_params_default();
    cp.backend               = IFL_BACKEND_CUDA;
    enum ifl_status st       = ifl_backend_available(IFL_BACKEND_CUDA) ? ifl_ctx_create(&cp, &cu_ctx) : IFL_STATUS_UNSUPPORTED;
    if (st != IFL_STATUS_OK) {
        int clean = cu_ctx == NULL && (st == IFL_STATUS_DEVICE || st == IFL_STATUS_UNSUPPORTED);
        printf("SKIPPED: no CUDA device (ifl_ctx_create(cuda): %s%s)\n", ifl_status_str(st),
               ifl_backend_available(IFL_BACKEND_CUDA) ? "" : "; this build has no cuda backend");
        free(rest);
        if (!clean) printf("FAIL: the failed create did not fail cleanly (status %d, ctx %p)\n", (int)st, (void *)cu_ctx);
        return clean ? 0 : 1;
    }
    setenv("INFLLM_CUDA_GENERIC", "1", 1);
    st = ifl_ctx_create(&cp, &gen_ctx);
    unsetenv("INFLLM_CUDA_GENERIC");
    struct ifl_ctx_params rp = ifl_ctx_params_default();
    if (st != IFL_STATUS_OK || ifl_ctx_create(&rp, &ref_ctx) != IFL_STATUS_OK) {
        printf("cannot create the generic cuda or the ref context\n");
        return 1;
    }
    printf("cuda backend under test (default kernels, and INFLLM_CUDA_GENERIC=1); sweep %s\n", opt_full ? "full" : "quick");
    test_context();

    static const enum ifl_dtype dts[4] = {IFL_DTYPE_BF16, IFL_DTYPE_F16, IFL_DTYPE_F32, IFL_DTYPE_F64};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        const struct spec *spc = &specs[i];
        if (spc->full && !opt_full) continue;
        int mask = spc->dtypes ? spc->dtypes : DT_ALL;
        for (int di = 0; di < 4; di++) {
            if (!(mask & (1 << dts[di]))) continue;
            struct inst in;
            inst_make(&in, spc, dts[di]);
            run_instance(&in);
            inst_free(&in);
        }
    }

    printf("\nworst errors over the sweep (max|err| / max|ref|, LSE over max(1, max|ref|); sel: rows checked / near-tie rows)\n");
    printf("%-18s %-5s %12s %12s  %s\n", "quantity", "dtype", "worst", "worst nmse", "where");
    for (int i = 0; i < n_stats; i++) {
        const struct stat *s = &stats[i];
        if (strncmp(s->qty, "sel", 3) == 0)
            printf("%-18s %-5s %12lld %12.0f\n", s->qty, ifl_dtype_name((enum ifl_dtype)s->dt), (long long)s->count, s->err_rel);
        else
            printf("%-18s %-5s %12.3g %12.3g  %s\n", s->qty, ifl_dtype_name((enum ifl_dtype)s->dt), s->err_rel, s->nmse, s->where);
    }
    printf("runtime %.1f s\n", now_s() - t0);
    ifl_ctx_destroy(gen_ctx);
    ifl_ctx_destroy(cu_ctx);
    ifl_ctx_destroy(ref_ctx);
    free(rest);
    return th_report();
}
