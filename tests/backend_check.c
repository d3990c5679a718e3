/* SPDX-License-Identifier: MIT
 *
 * backend_check.c -- see backend_check.h. docs/numerics.md derives the cpu's tolerances.
 *
 * Sections: settings / helpers / guarded buffers / specs and instances / reference results / the
 * ops / checks / stage-1 scores and selection check / the table.
 */
#define _POSIX_C_SOURCE 200809L
#include "backend_check.h"

#include "../runtime/rng.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ==== settings ==== */

struct bc_opts  bc = {.prog = "backend_check", .label = "ut", .guard = 64, .seed = 1};
struct ifl_ctx *ref_ctx;

void bc_init(int argc, char **argv, const char *extra_flag, int *extra) {
    char **rest   = xmalloc((size_t)(argc + 1) * sizeof *rest);
    int    n_rest = 0;
    rest[n_rest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--full") == 0) bc.full = 1;
        else if (strcmp(argv[i], "--quick") == 0) bc.full = 0;
        else if (extra_flag && strcmp(argv[i], extra_flag) == 0) *extra = 1;
        else {
            if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) bc.seed = strtoull(argv[i + 1], NULL, 10);
            rest[n_rest++] = argv[i];
        }
    }
    rest[n_rest] = NULL;
    th_init(n_rest, rest);
    free(rest);
}

/* ==== helpers ==== */

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", bc.prog, n);
        exit(2);
    }
    return p;
}
void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "%s: out of memory\n", bc.prog);
        exit(2);
    }
    return p;
}

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Our own input stream (rng.h's xorshift64*), seeded by a string and --seed. */
static struct rt_rng rng = {1};
void                 rng_seed(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    rt_rng_init(&rng, (h ^ (bc.seed * 0x9E3779B97F4A7C15ull)) | 1);
}
double rng_normal(void) { return rt_rng_normal(&rng, NULL); }

uint64_t fnv(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t             h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

double unit_roundoff(enum ifl_dtype dt) {
    switch (dt) {
    case IFL_DTYPE_F64: return U64;
    case IFL_DTYPE_F32: return U32;
    case IFL_DTYPE_F16: return 1.0 / 2048.0;
    case IFL_DTYPE_BF16: return 1.0 / 256.0;
    default: return 0;
    }
}

int is_half(enum ifl_dtype dt) { return dt == IFL_DTYPE_F16 || dt == IFL_DTYPE_BF16; }

/* Spacing of the dtype's numbers at |x| (one unit in the last place). */
double ulp_of(enum ifl_dtype dt, double x) {
    int    bits = dt == IFL_DTYPE_F32 ? 24 : dt == IFL_DTYPE_F16 ? 11 : dt == IFL_DTYPE_BF16 ? 8 : 53;
    double tiny = dt == IFL_DTYPE_F32 ? ldexp(1, -149) : dt == IFL_DTYPE_F16 ? ldexp(1, -24)
                : dt == IFL_DTYPE_BF16 ? ldexp(1, -133) : ldexp(1, -1074);
    if (x == 0) return tiny;
    int e;
    frexp(fabs(x), &e); /* |x| = m 2^e, m in [0.5, 1) */
    double u = ldexp(1, e - bits);
    return u > tiny ? u : tiny;
}

double elem_get(const void *p, enum ifl_dtype dt, int64_t i) {
    switch (dt) {
    case IFL_DTYPE_F64: return ((const double *)p)[i];
    case IFL_DTYPE_F32: return ((const float *)p)[i];
    case IFL_DTYPE_F16: return ifl_f16_to_f32(((const uint16_t *)p)[i]);
    case IFL_DTYPE_BF16: return ifl_bf16_to_f32(((const uint16_t *)p)[i]);
    case IFL_DTYPE_I32: return ((const int32_t *)p)[i];
    }
    return NAN;
}

/* Stores x rounded to the dtype (through f32 for the half types). */
void elem_set(void *p, enum ifl_dtype dt, int64_t i, double x) {
    switch (dt) {
    case IFL_DTYPE_F64: ((double *)p)[i] = x; break;
    case IFL_DTYPE_F32: ((float *)p)[i] = (float)x; break;
    case IFL_DTYPE_F16: ((uint16_t *)p)[i] = ifl_f32_to_f16((float)x); break;
    case IFL_DTYPE_BF16: ((uint16_t *)p)[i] = ifl_f32_to_bf16((float)x); break;
    case IFL_DTYPE_I32: ((int32_t *)p)[i] = (int32_t)x; break;
    }
}

struct ifl_tensor tmake(void *data, enum ifl_dtype dt, int nd, int64_t a, int64_t b, int64_t c) {
    const int64_t shape[3] = {a, b, c};
    return ifl_tensor_make(data, dt, nd, shape);
}

/* ==== guarded output buffers ==== */

int64_t gb_off(const struct gbuf *g, int64_t i) {
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

void gb_make(struct gbuf *g, enum ifl_dtype dt, int nd, int64_t a, int64_t b, int64_t c, int64_t pad) {
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
    g->total     = (size_t)span * es + 2 * bc.guard;
    g->mem       = xmalloc(g->total);
    for (size_t i = 0; i < g->total; i++) g->mem[i] = (unsigned char)(0xA5 ^ (i * 7));
    g->t.data = g->mem + bc.guard;
    for (int64_t i = 0; i < g->n; i++) gb_fill_unwritten((unsigned char *)g->t.data + gb_off(g, i) * (int64_t)es, dt);
    g->init = xmalloc(g->total);
    memcpy(g->init, g->mem, g->total);
    g->td = g->t;
    if (bc.dev_put) {
        g->dmem    = bc.dev_put(g->mem, g->total);
        g->td.data = g->dmem + bc.guard;
    }
}

void gb_free(struct gbuf *g) {
    if (g->dmem) bc.dev_free(g->dmem);
    free(g->mem);
    free(g->init);
    memset(g, 0, sizeof *g);
}

double gb_get(const struct gbuf *g, int64_t i) { return elem_get(g->t.data, g->t.dtype, gb_off(g, i)); }

int gb_untouched_outside(const struct gbuf *g) {
    if (g->mem == NULL) return 1;
    unsigned char *tmp = xmalloc(g->total);
    memcpy(tmp, g->mem, g->total);
    size_t es = ifl_dtype_size(g->t.dtype);
    for (int64_t i = 0; i < g->n; i++) {
        size_t o = bc.guard + (size_t)gb_off(g, i) * es;
        memcpy(tmp + o, g->init + o, es);
    }
    int same = memcmp(tmp, g->init, g->total) == 0;
    free(tmp);
    return same;
}

/* ==== specs and instances ==== */

static const char *const regime_tag[] = {"", ",q*8", ",q*32", ",ties"};

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

void inst_make(struct inst *in, const struct spec *sp, enum ifl_dtype dt) {
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

    /* the stable name: dtype, shapes, config (it also seeds the inputs) */
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
    append(b, n, ",Hq=%d,Hkv=%d,D=%d,bs=%d,topk=%d", sp->hq, sp->hkv, sp->d, in->cfg.block_size, in->cfg.topk);
    if (!bc.short_names && sp->batched) {
        append(b, n, ",past=");
        for (int s = 0; s < sp->nseq; s++) append(b, n, "%s%d", s ? "/" : "", sp->tk[s] - sp->tq[s]);
    } else if (!bc.short_names) {
        append(b, n, ",past=%d", sp->tk[0] - sp->tq[0]);
    }
    append(b, n, ",ks=%d/%d,cks=%d/%d,win=%d,init=%d,lse=%s", in->cfg.kernel_size, in->cfg.kernel_stride,
           in->cfg.coarse_kernel_size, in->cfg.coarse_kernel_stride, in->cfg.window_size, in->cfg.init_blocks,
           in->cfg.lse_mode == IFL_LSE_EXACT ? "exact" : "approx");
    if (!bc.short_names) append(b, n, ",dense_len=%lld", (long long)in->cfg.dense_len);
    append(b, n, "%s%s%s", regime_tag[sp->regime], sp->strided ? ",strided" : "", sp->out_bf16 ? ",out=bf16" : "");

    rng_seed(in->shape);
    const int64_t nq = in->TQ * in->hq * in->d, nk = in->TK * in->hkv * in->d;
    double        qs = sp->regime == REG_PEAKY ? 8.0 : sp->regime == REG_LARGE ? 32.0 : 1.0;
    in->q    = gen_input(dt, nq, qs, &in->rq, NULL);
    in->k    = gen_input(dt, nk, 1.0, &in->rk, &in->kmax);
    if (sp->regime == REG_TIES) { /* periodic keys: exactly equal compressed keys, tied block scores */
        const int64_t P = 4 * in->cfg.block_size, row = in->hkv * in->d * (int64_t)ifl_dtype_size(dt);
        for (int s = 0; s < sp->nseq; s++)
            for (int64_t t = P; t < sp->tk[s]; t++)
                memcpy((unsigned char *)in->k + (in->cuk[s] + t) * row, (unsigned char *)in->k + (in->cuk[s] + t % P) * row,
                       (size_t)row);
    }
    in->v    = gen_input(dt, nk, 1.0, &in->rv, NULL);
    if (bc.with_dout) in->dout = gen_input(dt, nq, 1.0, &in->rdo, NULL);
    in->zfac = fmax(1.0, in->rq * in->rk);
    in->qd   = xmalloc((size_t)nq * sizeof *in->qd);
    for (int64_t i = 0; i < nq; i++) in->qd[i] = elem_get(in->q, dt, i);

    in->tq_ut = tmake(in->q, dt, 3, in->TQ, in->hq, in->d);
    in->tk_ut = tmake(in->k, dt, 3, in->TK, in->hkv, in->d);
    in->tv_ut = tmake(in->v, dt, 3, in->TK, in->hkv, in->d);
    if (sp->strided && in->TQ == in->TK) { /* [T, Hq + 2 Hkv, D], q | k | v per token */
        const int64_t T = in->TQ, H = in->hq + 2 * in->hkv, D = in->d, es = (int64_t)ifl_dtype_size(dt);
        unsigned char *f = xmalloc((size_t)(T * H * D * es));
        for (int64_t t = 0; t < T; t++) {
            memcpy(f + (t * H) * D * es, (unsigned char *)in->q + t * in->hq * D * es, (size_t)(in->hq * D * es));
            memcpy(f + (t * H + in->hq) * D * es, (unsigned char *)in->k + t * in->hkv * D * es, (size_t)(in->hkv * D * es));
            memcpy(f + (t * H + in->hq + in->hkv) * D * es, (unsigned char *)in->v + t * in->hkv * D * es,
                   (size_t)(in->hkv * D * es));
        }
        in->fused       = f;
        in->tq_ut.data  = f;
        in->tk_ut.data  = f + in->hq * D * es;
        in->tv_ut.data  = f + (in->hq + in->hkv) * D * es;
        in->tq_ut.stride[0] = in->tk_ut.stride[0] = in->tv_ut.stride[0] = H * D;
        in->pad             = 5;
    }
    in->hash_in = inst_hash_now(in);

    /* compressed-key offsets per sequence */
    for (int s = 0; s < sp->nseq; s++) {
        in->off1[s + 1] = in->off1[s] + ifl_compressed_len(sp->tk[s], in->cfg.kernel_size, in->cfg.kernel_stride);
        in->off2[s + 1] = in->off2[s] + ifl_compressed_len(sp->tk[s], in->cfg.coarse_kernel_size,
                                                           in->cfg.coarse_kernel_stride);
    }
    in->n1 = in->off1[sp->nseq];
    in->n2 = in->off2[sp->nseq];
}

void inst_free(struct inst *in) {
    free(in->q), free(in->k), free(in->v), free(in->dout), free(in->qd), free(in->fused);
    free(in->c1), free(in->c2), free(in->sel), free(in->sel_masked);
    for (int k = 0; k < N_KINDS; k++) {
        free(in->rf[k].out), free(in->rf[k].lse), free(in->rf[k].out_in), free(in->rf[k].lse_in);
        free(in->rb[k].dq), free(in->rb[k].dk), free(in->rb[k].dv);
    }
    free(in->inf_out), free(in->inf_lse), free(in->inf_sel);
}

uint64_t inst_hash_now(const struct inst *in) {
    const int64_t nq = in->TQ * in->hq * in->d, nk = in->TK * in->hkv * in->d;
    size_t        es = ifl_dtype_size(in->dt);
    uint64_t      h  = fnv(in->q, (size_t)nq * es) ^ 3 * fnv(in->k, (size_t)nk * es);
    h ^= 5 * fnv(in->v, (size_t)nk * es);
    if (in->dout) h ^= 7 * fnv(in->dout, (size_t)nq * es);
    if (in->fused) h ^= 11 * fnv(in->fused, (size_t)(in->TQ * (in->hq + 2 * in->hkv) * in->d) * es);
    return h;
}

void run_sweep(const struct spec *specs, size_t n_specs, const enum ifl_dtype *dts, int n_dts,
               void (*run)(struct inst *in)) {
    for (size_t i = 0; i < n_specs; i++) {
        const struct spec *spc = &specs[i];
        if (spc->full && !bc.full) continue;
        int mask = spc->dtypes ? spc->dtypes : DT_ALL;
        for (int di = 0; di < n_dts; di++) {
            if (!(mask & (1 << dts[di]))) continue;
            struct inst in;
            inst_make(&in, spc, dts[di]);
            run(&in);
            inst_free(&in);
        }
    }
}

/* ==== reference results ==== */

static int ref_ok(enum ifl_status st, const char *what) {
    return TH_CHECK(st == IFL_STATUS_OK, "ref %s: %s: %s", what, ifl_status_str(st), ifl_ctx_errmsg(ref_ctx));
}

struct ifl_tensor in_q(const struct inst *in) { return tmake(in->q, in->dt, 3, in->TQ, in->hq, in->d); }
struct ifl_tensor in_k(const struct inst *in) { return tmake(in->k, in->dt, 3, in->TK, in->hkv, in->d); }
struct ifl_tensor in_v(const struct inst *in) { return tmake(in->v, in->dt, 3, in->TK, in->hkv, in->d); }

int ensure_ck(struct inst *in) {
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

int ensure_sel(struct inst *in) {
    if (in->sel_done) return in->sel_ok;
    in->sel_done = 1;
    const int64_t n = in->hkv * in->TQ * in->K;
    in->sel      = xmalloc((size_t)n * sizeof *in->sel);
    struct ifl_tensor q = in_q(in), k = in_k(in), s = tmake(in->sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
    in->sel_ok = ref_ok(ifl_select(ref_ctx, &in->cfg, in->bp, &q, &k, &s), "ifl_select");
    if (!in->sel_ok) return 0;
    /* masked: every 5th row (from 2) sees no block at all; every 5th (from 4) only a block after
     * the query when one exists (causal: still no key), else none */
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
    if (bc.sel_ready) bc.sel_ready(in);
    return 1;
}

int ensure_fwd(struct inst *in, int kind) {
    struct ref_fwd *r = &in->rf[kind];
    if (r->done) return r->ok;
    r->done = 1;
    if (kind != K_DENSE && !ensure_sel(in)) return 0;
    const int64_t no = in->TQ * in->hq * in->d, nl = in->TQ * in->hq;
    r->out = xmalloc((size_t)no * sizeof *r->out);
    r->lse = xmalloc((size_t)nl * sizeof *r->lse);
    struct ifl_tensor q = in_q(in), k = in_k(in), v = in_v(in);
    struct ifl_tensor o = tmake(r->out, IFL_DTYPE_F64, 3, in->TQ, in->hq, in->d);
    struct ifl_tensor l = tmake(r->lse, IFL_DTYPE_F64, 2, in->TQ, in->hq, 0);
    struct ifl_tensor s = tmake(kind == K_MASKED ? in->sel_masked : in->sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
    r->ok = kind == K_DENSE ? ref_ok(ifl_dense_attn_fwd(ref_ctx, &in->cfg, in->bp, &q, &k, &v, &o, &l), "ifl_dense_attn_fwd")
                            : ref_ok(ifl_sparse_attn_fwd(ref_ctx, &in->cfg, in->bp, &q, &k, &v, &s, &o, &l),
                                     "ifl_sparse_attn_fwd");
    if (!r->ok) return 0;
    r->out_in = xmalloc((size_t)no * ifl_dtype_size(in->dt));
    r->lse_in = xmalloc((size_t)nl * sizeof *r->lse_in);
    for (int64_t i = 0; i < no; i++) elem_set(r->out_in, in->dt, i, r->out[i]);
    for (int64_t i = 0; i < nl; i++) r->lse_in[i] = (float)r->lse[i];
    return 1;
}

struct bwd_in bwd_inputs(struct inst *in, int kind) {
    struct bwd_in b;
    b.sel  = tmake(kind == K_MASKED ? in->sel_masked : in->sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
    b.out  = tmake(in->rf[kind].out_in, in->dt, 3, in->TQ, in->hq, in->d);
    b.lse  = tmake(in->rf[kind].lse_in, IFL_DTYPE_F32, 2, in->TQ, in->hq, 0);
    b.dout = tmake(in->dout, in->dt, 3, in->TQ, in->hq, in->d);
    return b;
}

int ensure_bwd(struct inst *in, int kind) {
    struct ref_bwd *r = &in->rb[kind];
    if (r->done) return r->ok;
    r->done = 1;
    if (!ensure_fwd(in, kind)) return 0;
    const int64_t nq = in->TQ * in->hq * in->d, nk = in->TK * in->hkv * in->d;
    r->dq = xmalloc((size_t)nq * sizeof(double));
    r->dk = xmalloc((size_t)nk * sizeof(double));
    r->dv = xmalloc((size_t)nk * sizeof(double));
    struct ifl_tensor q = in_q(in), k = in_k(in), v = in_v(in);
    struct bwd_in     b  = bwd_inputs(in, kind);
    struct ifl_tensor gq = tmake(r->dq, IFL_DTYPE_F64, 3, in->TQ, in->hq, in->d);
    struct ifl_tensor gk = tmake(r->dk, IFL_DTYPE_F64, 3, in->TK, in->hkv, in->d);
    struct ifl_tensor gv = tmake(r->dv, IFL_DTYPE_F64, 3, in->TK, in->hkv, in->d);
    r->ok = kind == K_DENSE
                ? ref_ok(ifl_dense_attn_bwd(ref_ctx, &in->cfg, in->bp, &q, &k, &v, &b.out, &b.lse, &b.dout, &gq, &gk, &gv),
                         "ifl_dense_attn_bwd")
                : ref_ok(ifl_sparse_attn_bwd(ref_ctx, &in->cfg, in->bp, &q, &k, &v, &b.sel, &b.out, &b.lse, &b.dout, &gq,
                                             &gk, &gv),
                         "ifl_sparse_attn_bwd");
    return r->ok;
}

int ensure_infllm(struct inst *in) {
    if (in->inf_done) return in->inf_ok;
    in->inf_done = 1;
    in->inf_out  = xmalloc((size_t)(in->TQ * in->hq * in->d) * sizeof(double));
    in->inf_lse  = xmalloc((size_t)(in->TQ * in->hq) * sizeof(double));
    in->inf_sel  = xmalloc((size_t)(in->hkv * in->TQ * in->K) * sizeof(int32_t));
    struct ifl_tensor q = in_q(in), k = in_k(in), v = in_v(in);
    struct ifl_tensor o = tmake(in->inf_out, IFL_DTYPE_F64, 3, in->TQ, in->hq, in->d);
    struct ifl_tensor l = tmake(in->inf_lse, IFL_DTYPE_F64, 2, in->TQ, in->hq, 0);
    struct ifl_tensor s = tmake(in->inf_sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
    in->inf_ok = ref_ok(ifl_infllmv2_fwd(ref_ctx, &in->cfg, in->bp, &q, &k, &v, &o, &l, &s, in->inf_modes),
                        "ifl_infllmv2_fwd");
    return in->inf_ok;
}

/* ==== the ops ==== */

const char *const op_name[N_OPS] = {"COMPRESS_KEYS", "SELECT",     "SPARSE_FWD",
                                    "DENSE_FWD",     "INFLLMV2_FWD", "SPARSE_BWD",
                                    "DENSE_BWD",     "SPARSE_FWD_MASKED", "SPARSE_BWD_MASKED"};

int op_kind(enum op op) {
    if (op == OP_DENSE_FWD || op == OP_DENSE_BWD) return K_DENSE;
    return op == OP_MASKED_FWD || op == OP_MASKED_BWD ? K_MASKED : K_SPARSE;
}

int op_is_bwd(enum op op) { return op == OP_SPARSE_BWD || op == OP_DENSE_BWD || op == OP_MASKED_BWD; }

enum ifl_dtype lse_dtype(const struct inst *in) { return in->dt == IFL_DTYPE_F64 ? IFL_DTYPE_F64 : IFL_DTYPE_F32; }

static void outs_set(struct outs *o, const char *a, const char *b, const char *c) {
    o->name[0] = a, o->name[1] = b, o->name[2] = c;
    o->n       = c ? 3 : b ? 2 : 1;
}

void outs_make(struct outs *o, enum op op, const struct inst *in) {
    memset(o, 0, sizeof *o);
    const enum ifl_dtype od = in->out_dt;
    const int64_t        pad = in->pad;
    switch (op) {
    case OP_COMPRESS:
        outs_set(o, "c1", "c2", NULL);
        if (in->n1) gb_make(&o->b[0], od, 3, in->n1, in->hkv, in->d, pad);
        if (in->n2) gb_make(&o->b[1], od, 3, in->n2, in->hkv, in->d, pad);
        break;
    case OP_SELECT:
        outs_set(o, "sel", NULL, NULL);
        gb_make(&o->b[0], IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K, pad);
        break;
    case OP_SPARSE_FWD:
    case OP_DENSE_FWD:
    case OP_MASKED_FWD:
    case OP_INFLLM_FWD:
        outs_set(o, "out", "lse", op == OP_INFLLM_FWD ? "sel" : NULL);
        gb_make(&o->b[0], od, 3, in->TQ, in->hq, in->d, pad);
        gb_make(&o->b[1], lse_dtype(in), 2, in->TQ, in->hq, 0, pad);
        if (op == OP_INFLLM_FWD) gb_make(&o->b[2], IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K, pad);
        if (op == OP_INFLLM_FWD)
            for (int s = 0; s < 4; s++) o->modes[s] = (enum ifl_mode)77;
        break;
    case OP_SPARSE_BWD:
    case OP_DENSE_BWD:
    case OP_MASKED_BWD:
        outs_set(o, "dq", "dk", "dv");
        gb_make(&o->b[0], od, 3, in->TQ, in->hq, in->d, pad);
        gb_make(&o->b[1], od, 3, in->TK, in->hkv, in->d, pad);
        gb_make(&o->b[2], od, 3, in->TK, in->hkv, in->d, pad);
        break;
    default: break;
    }
}

void outs_free(struct outs *o) {
    for (int i = 0; i < 3; i++) gb_free(&o->b[i]);
}

enum ifl_status call_op(struct ifl_ctx *c, enum op op, const struct inst *in, struct outs *o,
                        const struct ifl_tensor *sel, const struct bwd_in *b) {
    const struct ifl_tensor *q = &in->tq_ut, *k = &in->tk_ut, *v = &in->tv_ut;
    struct gbuf             *g = o->b;
    switch (op) {
    case OP_COMPRESS:
        return ifl_compress_keys(c, &in->cfg, in->bp, k, in->n1 ? &g[0].td : NULL, in->n2 ? &g[1].td : NULL);
    case OP_SELECT: return ifl_select(c, &in->cfg, in->bp, q, k, &g[0].td);
    case OP_DENSE_FWD: return ifl_dense_attn_fwd(c, &in->cfg, in->bp, q, k, v, &g[0].td, &g[1].td);
    case OP_SPARSE_FWD:
    case OP_MASKED_FWD: return ifl_sparse_attn_fwd(c, &in->cfg, in->bp, q, k, v, sel, &g[0].td, &g[1].td);
    case OP_INFLLM_FWD: return ifl_infllmv2_fwd(c, &in->cfg, in->bp, q, k, v, &g[0].td, &g[1].td, &g[2].td, o->modes);
    case OP_DENSE_BWD:
        return ifl_dense_attn_bwd(c, &in->cfg, in->bp, q, k, v, &b->out, &b->lse, &b->dout, &g[0].td, &g[1].td,
                                  &g[2].td);
    case OP_SPARSE_BWD:
    case OP_MASKED_BWD:
        return ifl_sparse_attn_bwd(c, &in->cfg, in->bp, q, k, v, sel, &b->out, &b->lse, &b->dout, &g[0].td, &g[1].td,
                                   &g[2].td);
    default: return IFL_STATUS_INVALID_ARG;
    }
}

/* Accumulation lengths for the gates: the keys of a row (sparse: at most K blocks). */
static int64_t n_keys_row(const struct inst *in, int sparse) {
    int64_t n = in->nk_max;
    if (sparse) {
        int64_t lim = in->K * in->cfg.block_size;
        n           = lim < n ? lim : n;
    }
    return n;
}

/* ==== checks ==== */

/* The table of the worst errors: per quantity and input dtype. TOL_CALIBRATED: ratio = worst
 * err/unit, err = max err, nmse in r^2; TOL_PRECISION: ratio = worst err / max|ref|, nmse. Selection
 * lines: count = rows compared, err = near-tie rows, ratio = worst swap in tau (calibrated). */
struct stat {
    char   qty[40];
    int    dt;
    double ratio, err, nmse;
    char   where[400];
    int64_t count;
};
static struct stat stats[128];
static int         n_stats;
char               cur_case[400];

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

static void stat_record(const char *qty, enum ifl_dtype dt, double ratio, double err, double nmse) {
    struct stat *s = stat_of(qty, dt);
    s->count++;
    if (err > s->err) s->err = err;
    if (ratio > s->ratio || s->count == 1) {
        s->ratio = ratio;
        snprintf(s->where, sizeof s->where, "%s", cur_case);
    }
    if (nmse > s->nmse) s->nmse = nmse;
}

/* Worst error over the sweep relative to max|ref| (TOL_PRECISION's table). */
static void stat_record_rel(const char *qty, enum ifl_dtype dt, double rel, double nmse) {
    struct stat *st = stat_of(qty, dt);
    st->count++;
    if (rel > st->ratio) {
        st->ratio = rel;
        snprintf(st->where, sizeof st->where, "%s", cur_case);
    }
    if (nmse > st->nmse) st->nmse = nmse;
}

/* check_float's gates, printed line and table entry under TOL_CALIBRATED (docs/numerics.md):
 *   rms unit  r    = u32 * sqrt((n_acc + D) * zfac)   (LSE: u32 * sqrt(n_acc + D))
 *   magnitude M    = max(max|ref|, floor)
 *   max error      <= c * r * M + u_out * max|ref|
 *   NMSE           <= nmse_c * r^2 + u_out^2
 * floor: 1 for the LSE (its error is absolute, about u32 * |logit|); for dq and dk the typical
 * size of the terms that cancel (with one key per row they are exactly 0 in the ref while f32
 * keeps the rounding of dp - <dO, O>); 0 elsewhere. u_out is the unit roundoff of a narrow output
 * dtype (0 for f32). *units: the error in units of r * M. */
static void gate_calibrated(const char *qty, const struct inst *in, const unsigned char *skip, int64_t n_acc, double c,
                            double nmse_c, int is_lse, double floor, double err, double maxref, double nmse,
                            double *gate, double *ncap, double *units) {
    double r     = U32 * sqrt((double)(n_acc + in->d) * (is_lse ? 1.0 : in->zfac));
    double unit  = r * fmax(maxref, floor);
    double u_out = is_lse || in->out_dt == IFL_DTYPE_F32 ? 0 : unit_roundoff(in->out_dt);
    *gate        = c * unit + u_out * maxref;
    *ncap        = nmse_c * r * r + u_out * u_out;
    double ratio = unit > 0 ? err / unit : (err > 0 ? INFINITY : 0);
    double nrat  = nmse / (r * r);
    *units       = ratio;
    printf("  %-5s max err %.3g = %.3g units (gate %.3g units) | nmse %.3g = %.3g r^2 (cap %.3g r^2) | max|ref| %.3g%s%s\n",
           qty, err, ratio, unit > 0 ? *gate / unit : 0.0, nmse, nrat, *ncap / (r * r), maxref,
           floor > maxref ? " (floor)" : "", skip ? " [rows with a differing selection skipped]" : "");
    if (u_out == 0) {
        stat_record(qty, in->dt, ratio, err, nrat);
    } else { /* a narrow output: the rounding dominates; record err / (u_out * max|ref|) */
        char key[48];
        snprintf(key, sizeof key, "%s (%s out)", qty, ifl_dtype_name(in->out_dt));
        stat_record(key, in->dt, maxref > 0 ? err / (u_out * maxref) : 0, err, nmse / (u_out * u_out));
    }
}

/* The same under TOL_PRECISION (house-style 2.8 (c)): bf16/f16 inputs, whose P (and dS) are
 * rounded to the dtype before their products, 4 u_dtype M (LSE 1e-3 M) and fixed NMSE caps; f32/f64
 * (f32/f64 arithmetic) c * u_acc * sqrt(n_acc + D) * zfac * M, cap nmse_c * u_acc^2 (n_acc + D)
 * zfac^2; M = max(max|ref|, floor) (LSE max(1, max|ref|)): dq and dk are differences of terms of
 * size `floor` (dS = P (dP - Di)), so their error scales with those terms, not with the result,
 * which can be 0 (one key: dP = Di exactly); a narrower output adds its rounding. */
static void gate_precision(const char *qty, const struct inst *in, const unsigned char *skip, int64_t n_acc, double c,
                           double nmse_c, int is_lse, double floor, double err, double maxref, double nmse, double *gate,
                           double *ncap) {
    const enum ifl_dtype dt   = in->dt;
    const double         mag  = is_lse ? fmax(1.0, maxref) : fmax(maxref, floor);
    const double         uacc = dt == IFL_DTYPE_F64 ? U64 : U32;
    if (is_half(dt)) {
        *gate = is_lse ? 1e-3 * mag : 4.0 * unit_roundoff(dt) * mag;
        *ncap = is_lse ? 1e-8 : dt == IFL_DTYPE_BF16 ? 5e-5 : 1e-6;
    } else {
        double unit = uacc * sqrt((double)(n_acc + in->d)) * in->zfac * mag;
        *gate       = c * unit;
        *ncap       = nmse_c * uacc * uacc * (double)(n_acc + in->d) * in->zfac * in->zfac;
    }
    if (!is_lse && in->out_dt != IFL_DTYPE_F32 && in->out_dt != in->dt) { /* a narrower output adds its rounding */
        *gate += unit_roundoff(in->out_dt) * maxref;
        *ncap += unit_roundoff(in->out_dt) * unit_roundoff(in->out_dt);
    }
    printf("  %-5s max err %.3g (gate %.3g, %.3g of it) nmse %.3g (cap %.3g) max|ref| %.3g%s\n", qty, err, *gate,
           *gate > 0 ? err / *gate : 0, nmse, *ncap, maxref, skip ? " [rows with a differing selection skipped]" : "");
    stat_record_rel(qty, dt, mag > 0 ? err / mag : 0, nmse);
}

int check_float(const char *qty, struct inst *in, const struct gbuf *ut, const double *ref, int64_t inner,
                       const unsigned char *skip, int64_t n_acc, double c, double nmse_c, int is_lse, double floor) {
    int64_t n = ut->n, n_nan = 0, n_inf_bad = 0, first_nan = -1, first_inf = -1, n_cmp = 0;
    double  err = 0, maxref = 0, num = 0, den = 0;
    int64_t worst_i = -1;
    for (int64_t i = 0; i < n; i++) {
        if (skip && skip[i / inner]) continue;
        double a = gb_get(ut, i), b = ref[i];
        if (isnan(a) || isnan(b)) {
            if (n_nan++ == 0) first_nan = i;
            continue;
        }
        if (isinf(a) || isinf(b)) {
            if (a != b && n_inf_bad++ == 0) first_inf = i;
            continue;
        }
        double e = fabs(a - b);
        n_cmp++;
        if (e > err) err = e, worst_i = i;
        maxref = fmax(maxref, fabs(b));
        num += e * e;
        den += b * b;
    }
    den = fmax(den, (double)n_cmp * floor * floor);
    double nmse = den > 0 ? num / den : (num > 0 ? INFINITY : 0);
    double gate, ncap, units = 0;
    char   units_s[32] = "";
    if (bc.tol == TOL_CALIBRATED) {
        gate_calibrated(qty, in, skip, n_acc, c, nmse_c, is_lse, floor, err, maxref, nmse, &gate, &ncap, &units);
        snprintf(units_s, sizeof units_s, "%.2f units; ", units);
    } else {
        gate_precision(qty, in, skip, n_acc, c, nmse_c, is_lse, floor, err, maxref, nmse, &gate, &ncap);
    }
    const char *ut_s = bc.label;
    int         pass = 1;
    pass &= TH_CHECK(n_nan == 0, "%s: %lld NaN (first at element %lld: %s %g ref %g)", qty, (long long)n_nan,
                     (long long)first_nan, ut_s, first_nan >= 0 ? gb_get(ut, first_nan) : 0.0,
                     first_nan >= 0 ? ref[first_nan] : 0.0);
    pass &= TH_CHECK(n_inf_bad == 0, "%s: %lld infinities differ from the ref's (first at element %lld: %s %g ref %g)",
                     qty, (long long)n_inf_bad, (long long)first_inf, ut_s, first_inf >= 0 ? gb_get(ut, first_inf) : 0.0,
                     first_inf >= 0 ? ref[first_inf] : 0.0);
    pass &= TH_CHECK(err <= gate, "%s: max err %.4g > gate %.4g (%selement %lld: %s %.9g ref %.9g)", qty, err, gate,
                     units_s, (long long)worst_i, ut_s, worst_i >= 0 ? gb_get(ut, worst_i) : 0.0,
                     worst_i >= 0 ? ref[worst_i] : 0.0);
    pass &= TH_CHECK(nmse <= ncap, "%s: nmse %.4g > cap %.4g", qty, nmse, ncap);
    return pass;
}

/* TOL_CALIBRATED's table records the excess beyond one ulp, in units of a. */
void check_ck(const char *qty, struct inst *in, const struct gbuf *ut, const double *ref, int64_t kernel, double c_acc) {
    double  uacc = in->dt == IFL_DTYPE_F64 ? U64 : U32;
    double  a = uacc * sqrt((double)kernel) * in->kmax, worst_excess = 0, err = 0, worst_ulps = 0;
    int64_t n_diff = 0, n_over_ulp = 0, n_bad = 0, first_bad = -1, n_nan = 0;
    for (int64_t i = 0; i < ut->n; i++) {
        double x = gb_get(ut, i), b = ref[i];
        if (isnan(x)) {
            n_nan++;
            continue;
        }
        double e = fabs(x - b), u = ulp_of(in->dt, b);
        n_diff += e != 0;
        n_over_ulp += e > u;
        err          = fmax(err, e);
        worst_ulps   = fmax(worst_ulps, e / u);
        worst_excess = fmax(worst_excess, (e - u) / a);
        if (e > u + c_acc * a && n_bad++ == 0) first_bad = i;
    }
    if (bc.tol == TOL_CALIBRATED) {
        printf("  %-5s %lld of %lld elements differ, %lld by more than 1 ulp of %s (worst %.3g ulp, max err %.3g, "
               "excess %.3g units of %.3g)\n", qty, (long long)n_diff, (long long)ut->n, (long long)n_over_ulp,
               ifl_dtype_name(in->dt), worst_ulps, err, worst_excess, a);
        stat_record(qty, in->dt, worst_excess, err, 0);
    } else {
        printf("  %-5s %lld of %lld elements differ, worst %.3g ulp of %s (max err %.3g)\n", qty, (long long)n_diff,
               (long long)ut->n, worst_ulps, ifl_dtype_name(in->dt), err);
    }
    TH_CHECK(n_nan == 0, "%s: %lld NaN", qty, (long long)n_nan);
    TH_CHECK(n_bad == 0, "%s: %lld elements beyond 1 ulp + %.3g (first %lld: %s %.9g ref %.9g)", qty, (long long)n_bad,
             c_acc * a, (long long)first_bad, bc.label, first_bad >= 0 ? gb_get(ut, first_bad) : 0.0,
             first_bad >= 0 ? ref[first_bad] : 0.0);
}

/* The compressed keys c1 and c2 of OP_COMPRESS (outputs b[0], b[1]) against the ref's. */
static void check_compress(struct inst *in, const struct outs *o, double c_acc) {
    if (!ensure_ck(in)) return;
    if (in->n1) check_ck("c1", in, &o->b[0], in->c1, in->cfg.kernel_size, c_acc);
    if (in->n2) check_ck("c2", in, &o->b[1], in->c2, in->cfg.coarse_kernel_size, c_acc);
    if (!in->n1 && !in->n2) printf("  (no complete window: c1 and c2 have no rows)\n");
}

/* ==== stage-1 scores (float64, from the spec) and the selection check ==== */

struct scored {
    double  s;
    int32_t b;
};
static int best_first(const void *x, const void *y) { /* score descending, then smaller block */
    const struct scored *a = x, *b = y;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->b > b->b) - (a->b < b->b);
}

static double dotd(const double *a, const double *b, int64_t d) {
    double s = 0;
    for (int64_t x = 0; x < d; x++) s += a[x] * b[x];
    return s;
}

/* Number of compressed keys (kernel ks, stride st) among the first n whose window ends <= p. */
static int64_t visible(int64_t p, int64_t ks, int64_t st, int64_t n) {
    int64_t v = 0;
    while (v < n && v * st + ks - 1 <= p) v++;
    return v;
}

/* Block scores of one selection row (sequence s, its query i, KV head g), written from
 * infllmv2.md §2.3-2.5 and decisions 4-5: per query head of the group, softmax probabilities of the
 * visible fine compressed keys normalised by the log-sum-exp over the visible coarse keys (approx;
 * the fine keys when none is visible) or the visible fine keys (exact); summed over the group (0 for
 * keys not yet visible); a block's score is the max over the fine keys whose windows overlap it,
 * -inf when none does; init blocks and the query's block with window/bs blocks before it are +inf.
 * Uses the ref's compressed keys. blk[nb]; S is scratch of n1 doubles. */
static void block_scores(const struct inst *in, int64_t s, int64_t i, int64_t g, double *S, double *blk) {
    const struct ifl_sparse_config *c  = &in->cfg;
    const int64_t                   d = in->d, hkv = in->hkv, G = in->G;
    const int64_t                   nk = in->sp->tk[s], p = nk - in->sp->tq[s] + i;
    const int64_t                   n1 = in->off1[s + 1] - in->off1[s], n2 = in->off2[s + 1] - in->off2[s];
    const double                   *c1 = in->c1 + in->off1[s] * hkv * d, *c2 = in->c2 + in->off2[s] * hkv * d;
    const int64_t vis1 = visible(p, c->kernel_size, c->kernel_stride, n1);
    const int64_t vis2 = visible(p, c->coarse_kernel_size, c->coarse_kernel_stride, n2);
    for (int64_t j = 0; j < n1; j++) S[j] = 0;
    for (int64_t h = g * G; h < (g + 1) * G && vis1 > 0; h++) {
        const double *qh = in->qd + ((in->cuq[s] + i) * in->hq + h) * d;
        int           coarse = c->lse_mode == IFL_LSE_APPROX && vis2 > 0;
        const double *nk_    = coarse ? c2 : c1;
        int64_t       nn     = coarse ? vis2 : vis1;
        double        m      = -INFINITY, sum = 0;
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
        for (int64_t j = 0; j < n1; j++) /* window [j*st, j*st+ks-1] overlaps [b*bs, b*bs+bs-1] */
            if (j * c->kernel_stride <= b * bs + bs - 1 && j * c->kernel_stride + c->kernel_size - 1 >= b * bs)
                m = fmax(m, S[j]);
        blk[b] = m;
    }
}

/* Reads a selection row of width K into a membership map over nb blocks; returns -1 when the row
 * is malformed (not ascending, out of [0, qb], -1 not only at the end, more than w entries). */
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

/* Scores one selection row (block_scores) and ranks its blocks: ord best first, *kth the w-th best
 * score, *maxfin the largest finite |score|. */
static void score_row(const struct inst *in, int64_t s, int64_t i, int64_t g, int64_t w, int64_t nb, double *S,
                      double *blk, struct scored *ord, double *kth, double *maxfin) {
    block_scores(in, s, i, g, S, blk);
    for (int64_t b = 0; b < nb; b++) ord[b] = (struct scored){blk[b], (int32_t)b};
    qsort(ord, (size_t)nb, sizeof *ord, best_first);
    *kth    = ord[w - 1].s;
    *maxfin = 0;
    for (int64_t b = 0; b < nb; b++)
        if (isfinite(blk[b])) *maxfin = fmax(*maxfin, fabs(blk[b]));
}

/* TOL_CALIBRATED scores every row: a self-check of the scorer against the ref backend, and the
 * near-tie statistics; TOL_PRECISION only the rows that differ. The near-tie unit u is f32's under
 * TOL_CALIBRATED (both backends round the compressed keys identically: numerics.md); under
 * TOL_PRECISION the dtype's for bf16/f16 (the scores are f32 dot products of dtype values, but the
 * compressed keys may round differently by one ulp), 1e3 u64 for f64, else f32's. */
void check_selection(struct inst *in, const int32_t *ref, const struct gbuf *ut, const unsigned char *need_seq,
                     unsigned char *differs) {
    if (!ensure_ck(in)) return;
    const struct ifl_sparse_config *c = &in->cfg;
    const int     score_all = bc.tol == TOL_CALIBRATED;
    const double  u = score_all ? U32 : is_half(in->dt) ? unit_roundoff(in->dt) : in->dt == IFL_DTYPE_F64 ? 1e3 * U64 : U32;
    const int64_t bs = c->block_size, nloc = c->window_size / bs, K = in->K;
    int64_t       rows = 0, n_diff = 0, n_near = 0, n_bad = 0, n_self = 0, n_malformed = 0, n_dense_bad = 0;
    int64_t       n_exact = 0; /* accepted rows whose swapped blocks tie exactly in float64 */
    int64_t       n_margin = 0, n_tied = 0; /* rows whose K-th and (K+1)-th scores are within tau / equal */
    double        worst_gap = 0; /* over accepted differences, in units of tau */
    int64_t       max_nb = (in->nk_max + bs - 1) / bs, max_n1 = 1;
    for (int64_t s = 0; s < in->nseq; s++)
        if (in->off1[s + 1] - in->off1[s] > max_n1) max_n1 = in->off1[s + 1] - in->off1[s];
    double        *S = xmalloc((size_t)max_n1 * sizeof *S), *blk = xmalloc((size_t)max_nb * sizeof *blk);
    struct scored *ord = xmalloc((size_t)max_nb * sizeof *ord);
    unsigned char *mr = xmalloc((size_t)max_nb), *mc = xmalloc((size_t)max_nb), *mm = xmalloc((size_t)max_nb);
    char           ref_label[16]; /* "ref" as wide as the backend's label */
    snprintf(ref_label, sizeof ref_label, "%-*s", (int)strlen(bc.label), "ref");
    for (int64_t s = 0; s < in->nseq; s++) {
        const int64_t nq = in->sp->tq[s], nk = in->sp->tk[s], nb = (nk + bs - 1) / bs;
        const int64_t w  = ifl_select_width(c, nk);
        for (int64_t i = 0; i < nq; i++) {
            const int64_t t = in->cuq[s] + i, p = nk - nq + i, qb = p / bs;
            for (int64_t g = 0; g < in->hkv; g++) {
                if (need_seq && !need_seq[s]) { /* a dense sequence: all -1 on both sides */
                    int all = 1;
                    for (int64_t col = 0; col < K; col++)
                        all &= ref[(g * in->TQ + t) * K + col] == -1 && gb_get(ut, (g * in->TQ + t) * K + col) == -1;
                    n_dense_bad += !all;
                    continue;
                }
                rows++;
                int    nr = read_row(NULL, ref, g, t, in->TQ, K, w, qb, nb, mr);
                int    nc = read_row(ut, NULL, g, t, in->TQ, K, w, qb, nb, mc);
                double kth = 0, maxfin = 0;
                if (score_all) {
                    score_row(in, s, i, g, w, nb, S, blk, ord, &kth, &maxfin);
                    if (w < nb && isfinite(kth) && ord[w - 1].b <= qb) { /* a dynamic choice at the boundary */
                        n_margin += kth - ord[w].s <= TAU_C * u * maxfin;
                        n_tied += kth == ord[w].s;
                    }
                    /* self-check: our scores must reproduce the ref backend's row (up to f64 ties) */
                    memset(mm, 0, (size_t)nb);
                    for (int64_t r = 0; r < w; r++)
                        if (ord[r].b <= qb) mm[ord[r].b] = 1;
                    if (nr < 0 || memcmp(mm, mr, (size_t)nb) != 0) {
                        int explained = nr >= 0;
                        for (int64_t b = 0; b < nb && explained; b++)
                            if (mm[b] != mr[b]) explained = isfinite(blk[b]) && fabs(blk[b] - kth) <= 1e3 * U64 * maxfin;
                        if (!explained && n_self++ < 3) {
                            printf("    scorer self-check: row (g=%lld, t=%lld, p=%lld) of the ref differs from the spec's "
                                   "scores\n", (long long)g, (long long)t, (long long)p);
                            print_row("ref ", mr, nb, blk);
                            print_row("spec", mm, nb, blk);
                        }
                    }
                }
                if (nc < 0) {
                    if (n_malformed++ < 3) {
                        printf("    malformed %s row (g=%lld, t=%lld, p=%lld):", bc.label, (long long)g, (long long)t,
                               (long long)p);
                        for (int64_t col = 0; col < K; col++) printf(" %g", gb_get(ut, (g * in->TQ + t) * K + col));
                        printf("\n");
                    }
                    if (differs) differs[t * in->hkv + g] = 1;
                    continue;
                }
                if (nr >= 0 && memcmp(mr, mc, (size_t)nb) == 0) continue;
                n_diff++;
                if (differs) differs[t * in->hkv + g] = 1;
                if (!score_all) score_row(in, s, i, g, w, nb, S, blk, ord, &kth, &maxfin);
                double tau = TAU_C * u * maxfin, lost = 0, gained = 0, gap = 0;
                int    ok  = isfinite(kth), exact = 1;
                for (int64_t b = 0; b < nb; b++) {
                    int forced = b <= qb && (b < c->init_blocks || b >= qb - nloc);
                    if (forced && !mc[b]) ok = 0;
                    if (mr[b] == mc[b]) continue;
                    if (!isfinite(blk[b]) || fabs(blk[b] - kth) > tau) ok = 0;
                    if (isfinite(blk[b])) gap = fmax(gap, fabs(blk[b] - kth));
                    exact &= blk[b] == kth;
                    if (mr[b]) lost += isfinite(blk[b]) ? blk[b] : 0;
                    else gained += isfinite(blk[b]) ? blk[b] : 0;
                }
                if (lost - gained > (double)w * tau) ok = 0;
                if (ok) {
                    n_near++;
                    n_exact += exact;
                    worst_gap = fmax(worst_gap, tau > 0 ? gap / tau : 0);
                } else if (n_bad++ < 3) {
                    printf("    selection differs beyond the near-tie margin: row (g=%lld, t=%lld, p=%lld), K-th score %.9g, "
                           "tau %.3g\n", (long long)g, (long long)t, (long long)p, kth, tau);
                    print_row(ref_label, mr, nb, blk);
                    print_row(bc.label, mc, nb, blk);
                }
            }
        }
    }
    if (score_all) {
        printf("  sel   %lld rows (%lld with K-th/(K+1)-th ref scores within tau, %lld exactly tied), %lld differ, %lld of "
               "them near-ties (worst swap %.3g tau from the K-th score; %lld exact ties not broken to the smaller block)\n",
               (long long)rows, (long long)n_margin, (long long)n_tied, (long long)n_diff, (long long)n_near, worst_gap,
               (long long)n_exact);
        /* the table's selection line: count = rows compared, err = near-tie rows, ratio = worst swap */
        struct stat *st = stat_of("sel.near_tie_rows", in->dt);
        st->count += rows;
        st->err += (double)n_near;
        if (worst_gap > st->ratio) {
            st->ratio = worst_gap;
            snprintf(st->where, sizeof st->where, "%s", cur_case);
        }
    } else {
        printf("  sel   %lld rows, %lld differ, %lld of them near-ties\n", (long long)rows, (long long)n_diff,
               (long long)n_near);
        struct stat *st = stat_of("sel rows/near-tie", in->dt);
        st->count += rows;
        st->err += (double)n_near;
    }
    TH_CHECK(n_self == 0, "the test's own stage-1 scorer disagrees with the ref backend on %lld rows (a test bug?)",
             (long long)n_self);
    TH_CHECK(n_malformed == 0, "%lld %s selection rows are malformed", (long long)n_malformed, bc.label);
    TH_CHECK(n_dense_bad == 0, "%lld rows of dense sequences are not all -1", (long long)n_dense_bad);
    TH_CHECK(n_bad == 0, "%lld selection rows differ beyond near-ties (or drop a forced block)", (long long)n_bad);
    free(S), free(blk), free(ord), free(mr), free(mc), free(mm);
}

/* skip[t * Hq + h] = 1 for the query heads of each (token, KV head) set in differs; returns how many. */
static int64_t skip_rows(const struct inst *in, const unsigned char *differs, unsigned char *skip) {
    int64_t n_skip = 0;
    for (int64_t t = 0; t < in->TQ; t++)
        for (int64_t h = 0; h < in->hq; h++)
            if (differs[t * in->hkv + h / in->G]) skip[t * in->hq + h] = 1, n_skip++;
    return n_skip;
}

/* ==== the comparison of one op ==== */

void compare_op(struct inst *in, enum op op, struct outs *o, const struct gates *gt) {
    const int     kind = op_kind(op);
    const int64_t nrow = n_keys_row(in, kind != K_DENSE), ncol = in->G * in->nq_max;
    switch (op) {
    case OP_COMPRESS: check_compress(in, o, gt->ck); break;
    case OP_SELECT:
        if (!ensure_sel(in)) return;
        check_selection(in, in->sel, &o->b[0], NULL, NULL);
        break;
    case OP_SPARSE_FWD:
    case OP_DENSE_FWD:
    case OP_MASKED_FWD:
        if (!ensure_fwd(in, kind)) return;
        check_float("out", in, &o->b[0], in->rf[kind].out, in->d, NULL, nrow, gt->out, gt->nmse_fwd, 0, 0.0);
        check_float("lse", in, &o->b[1], in->rf[kind].lse, 1, NULL, nrow, gt->lse, gt->nmse_fwd, 1, 1.0);
        break;
    case OP_INFLLM_FWD: {
        if (!ensure_infllm(in)) return;
        unsigned char need[4] = {0}, *differs = xcalloc((size_t)(in->TQ * in->hkv), 1);
        unsigned char *skip = xcalloc((size_t)(in->TQ * in->hq), 1);
        for (int s = 0; s < in->nseq; s++) {
            int sparse_s = in->cfg.dense_len == -1 || in->sp->tk[s] >= in->cfg.dense_len;
            need[s]      = (unsigned char)sparse_s;
            TH_CHECK(in->inf_modes[s] == (sparse_s ? IFL_MODE_SPARSE : IFL_MODE_DENSE), "ref mode of sequence %d", s);
            TH_CHECK(o->modes[s] == in->inf_modes[s], "mode of sequence %d: %s %d, ref %d", s, bc.label, (int)o->modes[s],
                     (int)in->inf_modes[s]);
        }
        if (bc.tol == TOL_CALIBRATED) { /* its n_acc below depends on them */
            printf("  modes");
            for (int s = 0; s < in->nseq; s++) printf(" %s", in->inf_modes[s] == IFL_MODE_SPARSE ? "sparse" : "dense");
            printf("\n");
        }
        check_selection(in, in->inf_sel, &o->b[2], need, differs);
        int64_t n_skip = skip_rows(in, differs, skip);
        /* TOL_CALIBRATED: the keys a row may see, every key in a dense sequence, K blocks in a sparse
         * one; TOL_PRECISION: the longest sequence */
        int64_t nacc = bc.tol == TOL_CALIBRATED ? 1 : in->nk_max;
        for (int s = 0; s < in->nseq && bc.tol == TOL_CALIBRATED; s++) {
            int64_t n = in->sp->tk[s], lim = in->K * in->cfg.block_size;
            if (need[s] && lim < n) n = lim;
            if (n > nacc) nacc = n;
        }
        check_float("out", in, &o->b[0], in->inf_out, in->d, n_skip ? skip : NULL, nacc, gt->out, gt->nmse_fwd, 0, 0.0);
        check_float("lse", in, &o->b[1], in->inf_lse, 1, n_skip ? skip : NULL, nacc, gt->lse, gt->nmse_fwd, 1, 1.0);
        free(differs), free(skip);
        break;
    }
    case OP_SPARSE_BWD:
    case OP_DENSE_BWD:
    case OP_MASKED_BWD: {
        if (!ensure_bwd(in, kind)) return;
        /* floors: one term of dq = scale sum_j p (dp - <dO,O>) k_j has size p * t * sk with
         * t = scale sqrt(D) sdO sv; nrow terms of weight p ~ 1/nrow add up to about t sk / sqrt(nrow).
         * dk sums ncol = G Tq such terms (with q), each also of weight ~ 1/nrow. */
        double t = in->scale * sqrt((double)in->d) * in->rdo * in->rv;
        check_float("dq", in, &o->b[0], in->rb[kind].dq, in->d, NULL, nrow, gt->dq, gt->nmse_bwd, 0,
                    t * in->rk / sqrt((double)nrow));
        check_float("dk", in, &o->b[1], in->rb[kind].dk, in->d, NULL, ncol, gt->dk, gt->nmse_bwd, 0,
                    t * in->rq * sqrt((double)ncol) / (double)nrow);
        check_float("dv", in, &o->b[2], in->rb[kind].dv, in->d, NULL, ncol, gt->dv, gt->nmse_bwd, 0, 0.0);
        break;
    }
    default: break;
    }
}

/* ==== the table ==== */

void print_table(void) {
    if (bc.tol == TOL_PRECISION) {
        printf("\nworst errors over the sweep (max|err| / max|ref|, LSE over max(1, max|ref|); sel: rows checked / near-tie "
               "rows)\n");
        printf("%-18s %-5s %12s %12s  %s\n", "quantity", "dtype", "worst", "worst nmse", "where");
        for (int i = 0; i < n_stats; i++) {
            const struct stat *s = &stats[i];
            if (strncmp(s->qty, "sel", 3) == 0)
                printf("%-18s %-5s %12lld %12.0f\n", s->qty, ifl_dtype_name((enum ifl_dtype)s->dt), (long long)s->count,
                       s->err);
            else
                printf("%-18s %-5s %12.3g %12.3g  %s\n", s->qty, ifl_dtype_name((enum ifl_dtype)s->dt), s->ratio, s->nmse,
                       s->where);
        }
        return;
    }
    printf("\nmeasured errors, worst over the sweep (\"units\": max err / (r * max|ref|), nmse / r^2, see the gates;"
           " c1/c2: excess beyond 1 ulp in accumulation units; narrow outputs: err / (u_out * max|ref|),"
           " nmse / u_out^2; sel: rows compared, near-tie rows, worst swap in tau)\n");
    printf("%-18s %-5s %12s %12s %12s  %s\n", "quantity", "dtype", "worst units", "max err", "worst nmse", "where");
    for (int i = 0; i < n_stats; i++) {
        const struct stat *s = &stats[i];
        if (strcmp(s->qty, "sel.near_tie_rows") == 0)
            printf("%-18s %-5s %12lld %12.0f %12.3g  %s\n", "sel rows/near/tau", ifl_dtype_name((enum ifl_dtype)s->dt),
                   (long long)s->count, s->err, s->ratio, s->where);
        else
            printf("%-18s %-5s %12.3g %12.3g %12.3g  %s\n", s->qty, ifl_dtype_name((enum ifl_dtype)s->dt), s->ratio,
                   s->err, s->nmse, s->where);
    }
}
