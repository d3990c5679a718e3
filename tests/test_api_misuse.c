/* SPDX-License-Identifier: MIT
 *
 * test_api_misuse.c -- bad calls to the public API (include/infllm.h), each with the exact
 * enum ifl_status its contract promises.
 *
 * Every case runs on a fresh fixture: one small valid problem (Tq=5, Tk=9, Hq=4, Hkv=2, D=8,
 * block 4, kernel 4/2, coarse 8/4, window 4, topk 2) whose every buffer -- inputs and outputs --
 * sits between guard bytes, outputs pre-filled with a known pattern. A case applies up to three
 * mutations, snapshots every buffer, makes one call and checks:
 *   failure : the exact status; every buffer (outputs, inputs, guards) byte-identical; the
 *             context's message non-empty, naming the public function and the argument (and the
 *             element position for NaN/Inf).
 *   success : OK; the message cleared ("" after a success, primed with an earlier failure);
 *             every output written, and no byte outside the outputs' spans changed (guards and
 *             inputs included).
 * Cases are generated from tables: role x generic mutation x every op that takes the role,
 * config rules x every op, batch shapes x every op, plus specific cases and positive controls.
 * Use-after-destroy is undefined behaviour and is not exercised.
 */
#define _POSIX_C_SOURCE 200809L /* fork/waitpid: one case that may crash runs in a child */
#include "harness.h"

#include "infllm.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the fixture problem ---- */

enum { TQ = 5, TK = 9, HQ = 4, HKV = 2, D = 8, KW = 3, N1 = 3, N2 = 1, BIG_D = 257 };
enum { GUARD = 512, IN_CAP = 8192 /* elements of q, k, v: room for views and D = 300 */ };
#define GUARD_BYTE 0xA5
#define FILL_BYTE  0x5C

enum role { R_Q, R_K, R_V, R_SELIN, R_SEL, R_OUT, R_LSE, R_DOUT, R_DQ, R_DK, R_DV, R_C1, R_C2, N_ROLES };
enum { R_MODES = N_ROLES, N_BUFS }; /* the modes array of ifl_infllmv2_fwd: a buffer, no tensor */

static const struct role_info {
    const char    *name; /* the argument's name in the API (and in the messages) */
    int            ndim;
    int64_t        shape[3];
    enum ifl_dtype dtype;
    size_t         cap; /* elements allocated */
} RI[N_ROLES] = {
    [R_Q]     = {"q", 3, {TQ, HQ, D}, IFL_DTYPE_F64, IN_CAP},
    [R_K]     = {"k", 3, {TK, HKV, D}, IFL_DTYPE_F64, IN_CAP},
    [R_V]     = {"v", 3, {TK, HKV, D}, IFL_DTYPE_F64, IN_CAP},
    [R_SELIN] = {"sel", 3, {HKV, TQ, KW}, IFL_DTYPE_I32, HKV * TQ * KW},
    [R_SEL]   = {"sel", 3, {HKV, TQ, KW}, IFL_DTYPE_I32, HKV * TQ * 4}, /* room for K = 4 */
    [R_OUT]   = {"out", 3, {TQ, HQ, D}, IFL_DTYPE_F64, TQ * HQ * D},
    [R_LSE]   = {"lse", 2, {TQ, HQ, 0}, IFL_DTYPE_F64, TQ * HQ},
    [R_DOUT]  = {"dout", 3, {TQ, HQ, D}, IFL_DTYPE_F64, TQ * HQ * D},
    [R_DQ]    = {"dq", 3, {TQ, HQ, D}, IFL_DTYPE_F64, TQ * HQ * D},
    [R_DK]    = {"dk", 3, {TK, HKV, D}, IFL_DTYPE_F64, TK * HKV * D},
    [R_DV]    = {"dv", 3, {TK, HKV, D}, IFL_DTYPE_F64, TK * HKV * D},
    [R_C1]    = {"c1", 3, {N1, HKV, D}, IFL_DTYPE_F64, N1 * HKV * D},
    [R_C2]    = {"c2", 3, {N2, HKV, D}, IFL_DTYPE_F64, N2 * HKV * D},
};

/* ---- the operations ---- */

enum op { OP_CFG, OP_COMPRESS, OP_SELECT, OP_SFWD, OP_DFWD, OP_V2, OP_SBWD, OP_DBWD, N_OPS };

static const char *const OP_NAME[N_OPS] = {
    "ifl_sparse_config_check", "ifl_compress_keys", "ifl_select", "ifl_sparse_attn_fwd",
    "ifl_dense_attn_fwd", "ifl_infllmv2_fwd", "ifl_sparse_attn_bwd", "ifl_dense_attn_bwd",
};

#define OPB(o) (1u << (o))
#define BWD    (OPB(OP_SBWD) | OPB(OP_DBWD))
#define FWD    (OPB(OP_SFWD) | OPB(OP_DFWD) | OPB(OP_V2))
#define VOPS   (FWD | BWD)
#define QOPS   (OPB(OP_SELECT) | VOPS)
#define KOPS   (OPB(OP_COMPRESS) | QOPS)
#define ALLOPS (OPB(OP_CFG) | KOPS)
#define RB(r)  (1u << (r))

/* Which ops take each role, which write it, and where NULL is allowed. */
static const unsigned ROLE_OPS[N_ROLES] = {
    [R_Q] = QOPS,       [R_K] = KOPS,  [R_V] = VOPS,   [R_SELIN] = OPB(OP_SFWD) | OPB(OP_SBWD),
    [R_SEL] = OPB(OP_SELECT) | OPB(OP_V2), [R_OUT] = VOPS, [R_LSE] = VOPS, [R_DOUT] = BWD,
    [R_DQ] = BWD,       [R_DK] = BWD,  [R_DV] = BWD,   [R_C1] = OPB(OP_COMPRESS),
    [R_C2] = OPB(OP_COMPRESS),
};
static const unsigned ROLE_OPTIONAL[N_ROLES] = {
    [R_LSE] = FWD, [R_SEL] = OPB(OP_V2), [R_C2] = OPB(OP_COMPRESS),
};
static const unsigned OP_OUTPUTS[N_OPS] = {
    [OP_CFG] = 0,
    [OP_COMPRESS] = RB(R_C1) | RB(R_C2),
    [OP_SELECT] = RB(R_SEL),
    [OP_SFWD] = RB(R_OUT) | RB(R_LSE),
    [OP_DFWD] = RB(R_OUT) | RB(R_LSE),
    [OP_V2] = RB(R_OUT) | RB(R_LSE) | RB(R_SEL) | RB(R_MODES),
    [OP_SBWD] = RB(R_DQ) | RB(R_DK) | RB(R_DV),
    [OP_DBWD] = RB(R_DQ) | RB(R_DK) | RB(R_DV),
};

/* ---- guarded buffers and the fixture ---- */

struct gbuf {
    unsigned char *base; /* GUARD bytes, data, GUARD bytes */
    size_t         bytes;
    unsigned char *snap;
};

static size_t gtotal(const struct gbuf *b) { return b->bytes + 2 * (size_t)GUARD; }
static unsigned char *gdata(const struct gbuf *b) { return b->base + GUARD; }

struct fx {
    struct ifl_ctx                 *ctx, *ctx_nocheck, *call_ctx;
    struct ifl_sparse_config        cfg;
    const struct ifl_sparse_config *pcfg;
    struct ifl_batch                batch;
    const struct ifl_batch         *pbatch;
    int32_t                         cuq[8], cuk[8];
    struct gbuf                     buf[N_BUFS];
    struct ifl_tensor               t[N_ROLES];
    const struct ifl_tensor        *p[N_ROLES];
    enum ifl_mode                  *modes;
};

static struct ifl_sparse_config small_config(void) {
    struct ifl_sparse_config c = ifl_sparse_config_default();
    c.block_size           = 4;
    c.kernel_size          = 4;
    c.kernel_stride        = 2;
    c.coarse_kernel_size   = 8;
    c.coarse_kernel_stride = 4;
    c.init_blocks          = 1;
    c.window_size          = 4;
    c.topk                 = 2;
    c.dense_len            = -1; /* ifl_infllmv2_fwd runs sparse */
    c.lse_mode             = IFL_LSE_APPROX;
    c.scale                = 0.0;
    return c;
}

/* A valid stage-2 selection of the unbatched fixture: queries 0..3 sit in block 1, query 4 in
 * block 2 (past = 4, 3 blocks of 4 keys). */
static void fill_selin_valid(struct fx *f) {
    int32_t *s = (int32_t *)gdata(&f->buf[R_SELIN]);
    for (int g = 0; g < HKV; g++)
        for (int i = 0; i < TQ; i++) {
            int32_t *row = s + (g * TQ + i) * KW;
            row[0]       = 0;
            row[1]       = 1;
            row[2]       = i == 4 ? 2 : -1;
        }
}

static enum ifl_backend fx_backend = IFL_BACKEND_REF; /* the backend every case runs on */

static void fx_init(struct fx *f) {
    memset(f, 0, sizeof *f);
    struct ifl_ctx_params pr = ifl_ctx_params_default();
    pr.backend               = fx_backend;
    if (ifl_ctx_create(&pr, &f->ctx) != IFL_STATUS_OK) {
        fprintf(stderr, "cannot create a ref context\n");
        exit(1);
    }
    f->call_ctx = f->ctx;
    f->cfg      = small_config();
    f->pcfg     = &f->cfg;
    f->pbatch   = NULL;
    for (int b = 0; b < N_BUFS; b++) {
        struct gbuf *g = &f->buf[b];
        g->bytes = b == R_MODES ? 4 * sizeof(enum ifl_mode) : RI[b].cap * ifl_dtype_size(RI[b].dtype);
        g->base  = malloc(gtotal(g));
        g->snap  = malloc(gtotal(g));
        if (!g->base || !g->snap) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        memset(g->base, GUARD_BYTE, gtotal(g));
        memset(gdata(g), FILL_BYTE, g->bytes);
    }
    const int rand_roles[] = {R_Q, R_K, R_V, R_DOUT};
    for (size_t r = 0; r < sizeof rand_roles / sizeof rand_roles[0]; r++)
        th_fill_normal((double *)gdata(&f->buf[rand_roles[r]]), (int64_t)RI[rand_roles[r]].cap, 1.0);
    double *o = (double *)gdata(&f->buf[R_OUT]), *l = (double *)gdata(&f->buf[R_LSE]);
    for (int i = 0; i < TQ * HQ * D; i++) o[i] = (i % 7) * 0.125 - 0.375; /* known, finite */
    for (int i = 0; i < TQ * HQ; i++) l[i] = 1.0 + (i % 3) * 0.25;
    fill_selin_valid(f);
    for (int r = 0; r < N_ROLES; r++) {
        f->t[r] = ifl_tensor_make(gdata(&f->buf[r]), RI[r].dtype, RI[r].ndim, RI[r].shape);
        f->p[r] = &f->t[r];
    }
    f->modes = (enum ifl_mode *)(void *)gdata(&f->buf[R_MODES]);
    const int32_t cq[3] = {0, 2, 5}, ck[3] = {0, 4, 9};
    memcpy(f->cuq, cq, sizeof cq);
    memcpy(f->cuk, ck, sizeof ck);
    f->batch = (struct ifl_batch){2, f->cuq, f->cuk};
}

static void fx_free(struct fx *f) {
    ifl_ctx_destroy(f->ctx);
    ifl_ctx_destroy(f->ctx_nocheck);
    for (int b = 0; b < N_BUFS; b++) {
        free(f->buf[b].base);
        free(f->buf[b].snap);
    }
}

static enum ifl_status call_op(struct fx *f, enum op op) {
    struct ifl_ctx *c = f->call_ctx;
    const struct ifl_sparse_config *cfg = f->pcfg;
    const struct ifl_batch         *bt  = f->pbatch;
    const struct ifl_tensor *const *p   = f->p;
    switch (op) {
    case OP_CFG: return ifl_sparse_config_check(c, cfg);
    case OP_COMPRESS: return ifl_compress_keys(c, cfg, bt, p[R_K], p[R_C1], p[R_C2]);
    case OP_SELECT: return ifl_select(c, cfg, bt, p[R_Q], p[R_K], p[R_SEL]);
    case OP_SFWD:
        return ifl_sparse_attn_fwd(c, cfg, bt, p[R_Q], p[R_K], p[R_V], p[R_SELIN], p[R_OUT], p[R_LSE]);
    case OP_DFWD: return ifl_dense_attn_fwd(c, cfg, bt, p[R_Q], p[R_K], p[R_V], p[R_OUT], p[R_LSE]);
    case OP_V2:
        return ifl_infllmv2_fwd(c, cfg, bt, p[R_Q], p[R_K], p[R_V], p[R_OUT], p[R_LSE], p[R_SEL],
                                f->modes);
    case OP_SBWD:
        return ifl_sparse_attn_bwd(c, cfg, bt, p[R_Q], p[R_K], p[R_V], p[R_SELIN], p[R_OUT],
                                   p[R_LSE], p[R_DOUT], p[R_DQ], p[R_DK], p[R_DV]);
    case OP_DBWD:
        return ifl_dense_attn_bwd(c, cfg, bt, p[R_Q], p[R_K], p[R_V], p[R_OUT], p[R_LSE],
                                  p[R_DOUT], p[R_DQ], p[R_DK], p[R_DV]);
    case N_OPS: break;
    }
    return IFL_STATUS_INTERNAL;
}

/* ---- mutations ---- */

enum mkind {
    M_NONE,
    M_CTX_NULL,   /* call with ctx NULL */
    M_NOCHECK,    /* call with a context created with check_finite = 0 */
    M_CFG_NULL,   /* cfg NULL (= the default config) */
    M_CFG,        /* config field a = x */
    M_PTR_NULL,   /* role's tensor pointer NULL (R_MODES: modes NULL) */
    M_DATA_NULL,  /* role.data NULL */
    M_NDIM,       /* role.ndim = a */
    M_NDIM_DELTA, /* role.ndim += a */
    M_SHAPE,      /* role.shape[a] = b (a < 0: the last dimension) */
    M_STRIDE,     /* role.stride[a] = b (a = -1: the last dimension, -2: the first of size > 1) */
    M_STRIDE_NEG, /* role.stride[a] = -role.stride[a] */
    M_DTYPE,      /* role.dtype = a */
    M_BATCH,      /* batch = BSPEC[a] */
    M_SELROW,     /* selin row (g = a, i = b) = {c, d, (int)x} */
    M_NONFINITE,  /* role element (a, b, c) = x */
    M_ALIAS,      /* role.data = role a's data + b bytes (an output placed on other memory) */
    M_MOVE,       /* copy role's bytes to role a's data + b bytes and point role there */
    M_RESHAPE,    /* role = contiguous [a, b, c] over its own buffer */
    M_DIM,        /* q, k, v (and the outputs shaped like them) get head dim a, contiguous */
    M_KV_ROWS,    /* k and v get a rows (strides kept) */
    M_QVIEW_GAPS, /* q becomes a strided view with NaN in every element between its elements */
    M_SEL_FILL,   /* every row of role = {a, b, c} */
    M_CONVERT,    /* q, k, v values rounded to dtype a, stored in place (dtype set to a) */
};

struct mut {
    enum mkind kind;
    int        role;
    int64_t    a, b, c, d;
    double     x;
};

enum cfg_field { F_BS, F_KS, F_KSTR, F_CKS, F_CKSTR, F_INIT, F_WIN, F_TOPK, F_DENSE, F_LSE, F_SCALE };

static void set_cfg(struct ifl_sparse_config *c, int field, double x) {
    switch (field) {
    case F_BS: c->block_size = (int32_t)x; break;
    case F_KS: c->kernel_size = (int32_t)x; break;
    case F_KSTR: c->kernel_stride = (int32_t)x; break;
    case F_CKS: c->coarse_kernel_size = (int32_t)x; break;
    case F_CKSTR: c->coarse_kernel_stride = (int32_t)x; break;
    case F_INIT: c->init_blocks = (int32_t)x; break;
    case F_WIN: c->window_size = (int32_t)x; break;
    case F_TOPK: c->topk = (int32_t)x; break;
    case F_DENSE: c->dense_len = (int64_t)x; break;
    case F_LSE: c->lse_mode = (enum ifl_lse_mode)(int)x; break;
    case F_SCALE: c->scale = x; break;
    default: break;
    }
}

/* Batches. fix: the batch is valid, so make the rest of the fixture fit it (every selection row
 * {0, -1, -1}, c1 with fix_n1 rows, c2 NULL when no sequence has a coarse window). */
struct bspec {
    int32_t n, cq[4], ck[4];
    int     null_q, null_k, fix, fix_n1;
};
enum {
    B_OK, B_OK1, B_EMPTY_SEQ, B_NO_QUERIES, B_N0, B_NNEG, B_NULL_Q, B_NULL_K, B_Q0, B_K0, B_QDEC,
    B_KDEC, B_MORE_Q, B_QTOT_LO, B_QTOT_HI, B_KTOT_LO, B_KTOT_HI, N_BSPECS
};
static const struct bspec BSPEC[N_BSPECS] = {
    [B_OK]         = {2, {0, 2, 5}, {0, 4, 9}, 0, 0, 1, 2},
    [B_OK1]        = {1, {0, 5}, {0, 9}, 0, 0, 0, 0},
    [B_EMPTY_SEQ]  = {3, {0, 2, 2, 5}, {0, 4, 4, 9}, 0, 0, 1, 2},
    [B_NO_QUERIES] = {2, {0, 0, 5}, {0, 4, 9}, 0, 0, 1, 2},
    [B_N0]         = {0, {0, 2, 5}, {0, 4, 9}, 0, 0, 0, 0},
    [B_NNEG]       = {-1, {0, 2, 5}, {0, 4, 9}, 0, 0, 0, 0},
    [B_NULL_Q]     = {2, {0, 2, 5}, {0, 4, 9}, 1, 0, 0, 0},
    [B_NULL_K]     = {2, {0, 2, 5}, {0, 4, 9}, 0, 1, 0, 0},
    [B_Q0]         = {2, {1, 2, 5}, {0, 4, 9}, 0, 0, 0, 0},
    [B_K0]         = {2, {0, 2, 5}, {1, 4, 9}, 0, 0, 0, 0},
    [B_QDEC]       = {3, {0, 3, 2, 5}, {0, 4, 6, 9}, 0, 0, 0, 0},
    [B_KDEC]       = {3, {0, 1, 1, 5}, {0, 5, 4, 9}, 0, 0, 0, 0},
    [B_MORE_Q]     = {2, {0, 3, 5}, {0, 2, 9}, 0, 0, 0, 0},
    [B_QTOT_LO]    = {2, {0, 2, 4}, {0, 4, 9}, 0, 0, 0, 0},
    [B_QTOT_HI]    = {2, {0, 2, 6}, {0, 4, 9}, 0, 0, 0, 0},
    [B_KTOT_LO]    = {2, {0, 2, 5}, {0, 4, 8}, 0, 0, 0, 0},
    [B_KTOT_HI]    = {2, {0, 2, 5}, {0, 4, 10}, 0, 0, 0, 0},
};

static void sel_fill(struct fx *f, int role, int32_t a, int32_t b, int32_t c) {
    struct ifl_tensor *t = &f->t[role];
    int32_t           *s = t->data;
    for (int64_t g = 0; g < t->shape[0]; g++)
        for (int64_t i = 0; i < t->shape[1]; i++) {
            int32_t       *row = s + g * t->stride[0] + i * t->stride[1];
            const int32_t  v[3] = {a, b, c};
            for (int64_t col = 0; col < t->shape[2]; col++) row[col] = col < 3 ? v[col] : -1;
        }
}

static int64_t span_elems(const struct ifl_tensor *t) {
    int64_t last = 0;
    for (int i = 0; i < t->ndim; i++) last += (t->shape[i] - 1) * t->stride[i];
    return last + 1;
}

/* Element off of a float tensor = x, rounded to its dtype. */
static void store(const struct ifl_tensor *t, int64_t off, double x) {
    switch (t->dtype) {
    case IFL_DTYPE_F64: ((double *)t->data)[off] = x; break;
    case IFL_DTYPE_F32: ((float *)t->data)[off] = (float)x; break;
    case IFL_DTYPE_F16: ((uint16_t *)t->data)[off] = ifl_f32_to_f16((float)x); break;
    case IFL_DTYPE_BF16: ((uint16_t *)t->data)[off] = ifl_f32_to_bf16((float)x); break;
    case IFL_DTYPE_I32: ((int32_t *)t->data)[off] = (int32_t)x; break;
    }
}

static void apply(struct fx *f, const struct mut *m) {
    struct ifl_tensor *t   = m->role >= 0 && m->role < N_ROLES ? &f->t[m->role] : NULL;
    int                dim = t && m->a < 0 ? RI[m->role].ndim - 1 : (int)m->a;
    switch (m->kind) {
    case M_NONE: break;
    case M_CTX_NULL: f->call_ctx = NULL; break;
    case M_NOCHECK: {
        struct ifl_ctx_params pr = ifl_ctx_params_default();
        pr.backend               = fx_backend;
        pr.check_finite          = 0;
        if (ifl_ctx_create(&pr, &f->ctx_nocheck) != IFL_STATUS_OK) exit(1);
        f->call_ctx = f->ctx_nocheck;
        break;
    }
    case M_CFG_NULL: f->pcfg = NULL; break;
    case M_CFG: set_cfg(&f->cfg, (int)m->a, m->x); break;
    case M_PTR_NULL:
        if (m->role == R_MODES) f->modes = NULL;
        else f->p[m->role] = NULL;
        break;
    case M_DATA_NULL: t->data = NULL; break;
    case M_NDIM: t->ndim = (int)m->a; break;
    case M_NDIM_DELTA: t->ndim += (int)m->a; break;
    case M_SHAPE: t->shape[dim] = m->b; break;
    case M_STRIDE:
        if (m->a == -2) /* the first dimension of more than one element */
            for (dim = 0; dim < RI[m->role].ndim - 1 && t->shape[dim] < 2; dim++) continue;
        t->stride[dim] = m->b;
        break;
    case M_STRIDE_NEG: t->stride[dim] = -t->stride[dim]; break;
    case M_DTYPE: t->dtype = (enum ifl_dtype)m->a; break;
    case M_BATCH: {
        const struct bspec *b = &BSPEC[m->a];
        memcpy(f->cuq, b->cq, sizeof b->cq);
        memcpy(f->cuk, b->ck, sizeof b->ck);
        f->batch  = (struct ifl_batch){b->n, b->null_q ? NULL : f->cuq, b->null_k ? NULL : f->cuk};
        f->pbatch = &f->batch;
        if (b->fix) {
            sel_fill(f, R_SELIN, 0, -1, -1);
            f->t[R_C1].shape[0] = b->fix_n1;
            f->p[R_C2]          = NULL;
        }
        break;
    }
    case M_SELROW: {
        int32_t *row = (int32_t *)f->t[R_SELIN].data + m->a * f->t[R_SELIN].stride[0] +
                       m->b * f->t[R_SELIN].stride[1];
        row[0] = (int32_t)m->c;
        row[1] = (int32_t)m->d;
        row[2] = (int32_t)m->x;
        break;
    }
    case M_NONFINITE:
        store(t, m->a * t->stride[0] + m->b * t->stride[1] + (t->ndim > 2 ? m->c * t->stride[2] : 0), m->x);
        break;
    case M_CONVERT: {
        const int roles[] = {R_Q, R_K, R_V};
        for (size_t r = 0; r < 3; r++) {
            struct ifl_tensor *u = &f->t[roles[r]];
            const double      *x = u->data;
            struct ifl_tensor  w = *u;
            w.dtype              = (enum ifl_dtype)m->a;
            int64_t n            = span_elems(u);
            for (int64_t i = 0; i < n; i++) store(&w, i, x[i]); /* ascending: never overtakes */
            *u = w;
        }
        break;
    }
    case M_ALIAS: t->data = (unsigned char *)f->t[m->a].data + m->b; break;
    case M_MOVE: {
        unsigned char *dst = (unsigned char *)f->t[m->a].data + m->b;
        memmove(dst, t->data, (size_t)span_elems(t) * ifl_dtype_size(t->dtype));
        t->data = dst;
        break;
    }
    case M_RESHAPE: {
        const int64_t s[3] = {m->a, m->b, m->c};
        *t = ifl_tensor_make(gdata(&f->buf[m->role]), t->dtype, RI[m->role].ndim, s);
        break;
    }
    case M_DIM: {
        const int roles[] = {R_Q, R_K, R_V};
        for (size_t r = 0; r < 3; r++) {
            int64_t s[3] = {RI[roles[r]].shape[0], RI[roles[r]].shape[1], m->a};
            f->t[roles[r]] = ifl_tensor_make(gdata(&f->buf[roles[r]]), IFL_DTYPE_F64, 3, s);
        }
        break;
    }
    case M_KV_ROWS:
        f->t[R_K].shape[0] = m->a;
        f->t[R_V].shape[0] = m->a;
        break;
    case M_QVIEW_GAPS: {
        /* q [5, 4, 8] with strides {4*16, 16, 1}: the elements at column 8..15 of each head are
         * not part of the tensor and hold NaN */
        double *q = (double *)gdata(&f->buf[R_Q]);
        for (int64_t i = 0; i < TQ * HQ * 2 * D; i++)
            if (i % (2 * D) >= D) q[i] = NAN;
        t                                  = &f->t[R_Q];
        t->stride[0]                       = HQ * 2 * D;
        t->stride[1]                       = 2 * D;
        t->stride[2]                       = 1;
        break;
    }
    case M_SEL_FILL: sel_fill(f, m->role, (int32_t)m->a, (int32_t)m->b, (int32_t)m->c); break;
    }
}

/* ---- message checks ---- */

static int is_word(int ch) { return isalnum((unsigned char)ch) || ch == '_'; }

/* tok appears in msg as a whole word (so "sel" does not match inside "ifl_select"). */
static int has_token(const char *msg, const char *tok) {
    size_t n = strlen(tok);
    for (const char *p = msg; (p = strstr(p, tok)) != NULL; p++)
        if ((p == msg || !is_word(p[-1])) && !is_word(p[n])) return 1;
    return 0;
}

/* The position (a, b, c) appears as "a, b, c" or "a,b,c". */
static int has_index(const char *msg, const int64_t *idx, int n) {
    char s1[96], s2[96];
    int  l1 = 0, l2 = 0;
    for (int i = 0; i < n; i++) {
        l1 += snprintf(s1 + l1, sizeof s1 - (size_t)l1, "%s%lld", i ? ", " : "", (long long)idx[i]);
        l2 += snprintf(s2 + l2, sizeof s2 - (size_t)l2, "%s%lld", i ? "," : "", (long long)idx[i]);
    }
    return strstr(msg, s1) != NULL || strstr(msg, s2) != NULL;
}

/* ---- the case runner ---- */

struct mcase {
    const char     *name;
    unsigned        ops;     /* ops to run it against */
    enum ifl_status want;
    unsigned        ok_ops;  /* ops among those where it is valid: expect OK instead */
    const char     *tok;     /* a word the message must contain (the argument), or NULL */
    int             n_idx;   /* > 0: the message must give this element position */
    int64_t         idx[3];
    struct mut      m[3];
};

static const char *buf_name(int b) { return b == R_MODES ? "modes" : (b == R_SELIN ? "sel(in)" : RI[b].name); }

/* The buffer holding address p, or -1. */
static int find_buf(const struct fx *f, const void *p) {
    const unsigned char *c = p;
    for (int b = 0; b < N_BUFS; b++)
        if (c >= f->buf[b].base && c < f->buf[b].base + gtotal(&f->buf[b])) return b;
    return -1;
}

static const char *where_in(const struct gbuf *g, size_t off) {
    return off < GUARD ? "guard before" : (off < GUARD + g->bytes ? "data" : "guard after");
}

/* Marks the bytes an output may write: [data, data + span) clipped to its buffer. */
static void mark_span(const struct fx *f, unsigned char **mask, const void *data, size_t bytes) {
    int b = find_buf(f, data);
    if (b < 0) return;
    size_t off = (size_t)((const unsigned char *)data - f->buf[b].base);
    for (size_t i = off; i < off + bytes && i < gtotal(&f->buf[b]); i++) mask[b][i] = 1;
}

static void check_success(struct fx *f, enum op op) {
    const char *msg = ifl_ctx_errmsg(f->call_ctx);
    TH_CHECK(msg != NULL && msg[0] == '\0', "errmsg after a success is \"%s\", expected \"\"",
             msg ? msg : "(NULL)");
    unsigned char *mask[N_BUFS];
    for (int b = 0; b < N_BUFS; b++) {
        mask[b] = calloc(1, gtotal(&f->buf[b]));
        if (!mask[b]) exit(1);
    }
    int64_t n_seqs = f->pbatch ? f->pbatch->n_seqs : 1;
    for (int r = 0; r < N_BUFS; r++) {
        if (!(OP_OUTPUTS[op] & RB(r))) continue;
        if (r == R_MODES) {
            if (f->modes) mark_span(f, mask, f->modes, (size_t)n_seqs * sizeof *f->modes);
            continue;
        }
        if (f->p[r] == NULL) continue;
        mark_span(f, mask, f->t[r].data, (size_t)span_elems(&f->t[r]) * ifl_dtype_size(f->t[r].dtype));
    }
    /* nothing outside the outputs' spans changed: guards, inputs, unused buffers */
    for (int b = 0; b < N_BUFS; b++) {
        const struct gbuf *g = &f->buf[b];
        for (size_t i = 0; i < gtotal(g); i++)
            if (!mask[b][i] && g->base[i] != g->snap[i]) {
                TH_CHECK(0, "%s: byte %lld of buffer %s (%s) changed outside every output",
                         OP_NAME[op], (long long)i - GUARD, buf_name(b), where_in(g, i));
                break;
            }
    }
    /* every output was written (its bytes differ from the fill pattern somewhere) */
    for (int r = 0; r < N_BUFS; r++) {
        if (!(OP_OUTPUTS[op] & RB(r))) continue;
        const unsigned char *p;
        size_t               n;
        if (r == R_MODES) {
            if (!f->modes) continue;
            p = (const unsigned char *)f->modes;
            n = (size_t)n_seqs * sizeof *f->modes;
        } else {
            if (f->p[r] == NULL) continue;
            p = f->t[r].data;
            n = (size_t)span_elems(&f->t[r]) * ifl_dtype_size(f->t[r].dtype);
        }
        int b = find_buf(f, p);
        if (b < 0) continue;
        size_t off = (size_t)(p - f->buf[b].base);
        TH_CHECK(memcmp(p, f->buf[b].snap + off, n) != 0, "%s: output %s was not written",
                 OP_NAME[op], buf_name(r));
    }
    for (int b = 0; b < N_BUFS; b++) free(mask[b]);
}

static void check_failure(struct fx *f, enum op op, const struct mcase *c) {
    for (int b = 0; b < N_BUFS; b++) {
        const struct gbuf *g = &f->buf[b];
        for (size_t i = 0; i < gtotal(g); i++)
            if (g->base[i] != g->snap[i]) {
                TH_CHECK(0, "%s failed but changed byte %lld of buffer %s (%s)", OP_NAME[op],
                         (long long)i - GUARD, buf_name(b), where_in(g, i));
                break;
            }
    }
    if (f->call_ctx == NULL) {
        TH_CHECK(f->ctx != NULL && ifl_ctx_errmsg(f->ctx)[0] == '\0',
                 "a call with ctx NULL left a message on another context");
        return;
    }
    const char *msg = ifl_ctx_errmsg(f->call_ctx);
    if (!TH_CHECK(msg != NULL && msg[0] != '\0', "%s failed with an empty message", OP_NAME[op])) return;
    TH_CHECK(strstr(msg, OP_NAME[op]) != NULL, "message does not name %s: \"%s\"", OP_NAME[op], msg);
    if (c->tok) TH_CHECK(has_token(msg, c->tok), "message does not name '%s': \"%s\"", c->tok, msg);
    if (c->n_idx)
        TH_CHECK(has_index(msg, c->idx, c->n_idx), "message does not give the position: \"%s\"", msg);
}

static int n_runs;
static int verbose; /* IFL_TEST_VERBOSE=1: print every call's status and message */

static void run_case(const struct mcase *c) {
    for (int op = 0; op < N_OPS; op++) {
        if (!(c->ops & OPB(op))) continue;
        if (!th_case("[%s] %s / %s", ifl_backend_name(fx_backend), c->name, OP_NAME[op])) continue;
        n_runs++;
        struct fx f;
        fx_init(&f);
        for (int s = 0; s < 3; s++) apply(&f, &c->m[s]);
        enum ifl_status want = (c->ok_ops & OPB(op)) ? IFL_STATUS_OK : c->want;
        /* a success must clear the message of an earlier failure */
        if (want == IFL_STATUS_OK && f.call_ctx) (void)ifl_sparse_config_check(f.call_ctx, NULL);
        for (int b = 0; b < N_BUFS; b++) memcpy(f.buf[b].snap, f.buf[b].base, gtotal(&f.buf[b]));
        enum ifl_status st = call_op(&f, (enum op)op);
        if (verbose)
            printf("  -> %s: \"%s\"\n", ifl_status_str(st), f.call_ctx ? ifl_ctx_errmsg(f.call_ctx) : "(no context)");
        TH_CHECK(st == want, "%s returned %s (%d), expected %s (%d); errmsg \"%s\"", OP_NAME[op],
                 ifl_status_str(st), (int)st, ifl_status_str(want), (int)want,
                 f.call_ctx ? ifl_ctx_errmsg(f.call_ctx) : "(no context)");
        if (st == want) {
            if (want == IFL_STATUS_OK) check_success(&f, (enum op)op);
            else check_failure(&f, (enum op)op, c);
        } else if (st != IFL_STATUS_OK) {
            check_failure(&f, (enum op)op, c); /* still: nothing may be written */
        }
        fx_free(&f);
    }
}

/* ---- the tables ---- */

#define E_INV IFL_STATUS_INVALID_ARG
#define E_SHP IFL_STATUS_SHAPE
#define E_DTY IFL_STATUS_DTYPE
#define E_UNS IFL_STATUS_UNSUPPORTED
#define E_OK  IFL_STATUS_OK

#define MU(kind, role, a, b, c, d, x) {kind, role, a, b, c, d, x}
#define M0                            MU(M_NONE, -1, 0, 0, 0, 0, 0)
#define MCFG(field, x)                MU(M_CFG, -1, field, 0, 0, 0, x)
#define MSHAPE(role, dim, v)          MU(M_SHAPE, role, dim, v, 0, 0, 0)
#define MSTRIDE(role, dim, v)         MU(M_STRIDE, role, dim, v, 0, 0, 0)
#define MBATCH(id)                    MU(M_BATCH, -1, id, 0, 0, 0, 0)
#define MROW(g, i, c0, c1, c2)        MU(M_SELROW, R_SELIN, g, i, c0, c1, c2)
#define MBAD(role, i, j, k, x)        MU(M_NONFINITE, role, i, j, k, 0, x)
#define MALIAS(role, onto, off)       MU(M_ALIAS, role, onto, off, 0, 0, 0)
#define MMOVE(role, onto, off)        MU(M_MOVE, role, onto, off, 0, 0, 0)
#define MDTYPE(role, dt)              MU(M_DTYPE, role, dt, 0, 0, 0, 0)

/* Generic mutations, applied to every role (of the listed kinds) and every op taking it. */
#define FLOAT_ROLES (RB(R_Q) | RB(R_K) | RB(R_V) | RB(R_OUT) | RB(R_DOUT) | RB(R_DQ) | RB(R_DK) | RB(R_DV) | RB(R_C1) | RB(R_C2))
#define ALL_ROLES   ((1u << N_ROLES) - 1)
#define SEL_ROLES   (RB(R_SEL) | RB(R_SELIN))
static const struct gen {
    const char     *tag;
    unsigned        roles;
    enum ifl_status want;
    struct mut      m;
} GEN[] = {
    {"is NULL", ALL_ROLES & ~RB(R_C1), E_INV, MU(M_PTR_NULL, 0, 0, 0, 0, 0, 0)},
    {"data NULL", ALL_ROLES, E_INV, MU(M_DATA_NULL, 0, 0, 0, 0, 0, 0)},
    {"rank - 1", ALL_ROLES, E_SHP, MU(M_NDIM_DELTA, 0, -1, 0, 0, 0, 0)},
    {"rank + 1", ALL_ROLES, E_SHP, MU(M_NDIM_DELTA, 0, 1, 0, 0, 0, 0)},
    {"rank 0", ALL_ROLES, E_SHP, MU(M_NDIM, 0, 0, 0, 0, 0, 0)},
    {"rank 7", ALL_ROLES, E_SHP, MU(M_NDIM, 0, 7, 0, 0, 0, 0)},
    {"rank -1", ALL_ROLES, E_SHP, MU(M_NDIM, 0, -1, 0, 0, 0, 0)},
    {"shape[0] = 0", ALL_ROLES, E_SHP, MU(M_SHAPE, 0, 0, 0, 0, 0, 0)},
    {"shape[last] = 0", ALL_ROLES, E_SHP, MU(M_SHAPE, 0, -1, 0, 0, 0, 0)},
    {"shape[1] = -3", ALL_ROLES, E_SHP, MU(M_SHAPE, 0, 1, -3, 0, 0, 0)},
    {"stride[0] negative", ALL_ROLES, E_SHP, MU(M_STRIDE_NEG, 0, 0, 0, 0, 0, 0)},
    {"stride[0] = -1", ALL_ROLES, E_SHP, MU(M_STRIDE, 0, 0, -1, 0, 0, 0)},
    {"last stride = 2", ALL_ROLES, E_SHP, MU(M_STRIDE, 0, -1, 2, 0, 0, 0)},
    {"last stride = 0", ALL_ROLES, E_SHP, MU(M_STRIDE, 0, -1, 0, 0, 0, 0)},
    {"last stride = -1", ALL_ROLES, E_SHP, MU(M_STRIDE, 0, -1, -1, 0, 0, 0)},
    {"stride huge (span overflows)", ALL_ROLES, E_SHP, MU(M_STRIDE, 0, -2, INT64_MAX / 2, 0, 0, 0)},
    {"unknown dtype 42", ALL_ROLES, E_DTY, MU(M_DTYPE, 0, 42, 0, 0, 0, 0)},
    {"dtype i32", FLOAT_ROLES | RB(R_LSE), E_DTY, MU(M_DTYPE, 0, IFL_DTYPE_I32, 0, 0, 0, 0)},
    {"dtype f16", RB(R_LSE) | SEL_ROLES, E_DTY, MU(M_DTYPE, 0, IFL_DTYPE_F16, 0, 0, 0, 0)},
    {"dtype bf16", RB(R_LSE) | SEL_ROLES, E_DTY, MU(M_DTYPE, 0, IFL_DTYPE_BF16, 0, 0, 0, 0)},
    {"dtype f32", SEL_ROLES, E_DTY, MU(M_DTYPE, 0, IFL_DTYPE_F32, 0, 0, 0, 0)},
    {"dtype f64", SEL_ROLES, E_DTY, MU(M_DTYPE, 0, IFL_DTYPE_F64, 0, 0, 0, 0)},
};

/* Config rules: each run through ifl_sparse_config_check and every op (all INVALID_ARG). */
static const struct cfg_case {
    const char *name;
    const char *field; /* the config field the message must name */
    int         f1;
    double      x1;
    int         f2; /* second change, -1 none */
    double      x2;
} CFG_BAD[] = {
    {"block_size 0", "block_size", F_BS, 0, -1, 0},
    {"block_size -4", "block_size", F_BS, -4, -1, 0},
    {"kernel_size 0", "kernel_size", F_KS, 0, -1, 0},
    {"kernel_size -4", "kernel_size", F_KS, -4, -1, 0},
    {"kernel_stride 0", "kernel_stride", F_KSTR, 0, -1, 0},
    {"kernel_stride -2", "kernel_stride", F_KSTR, -2, -1, 0},
    {"coarse_kernel_size 0", "coarse_kernel_size", F_CKS, 0, -1, 0},
    {"coarse_kernel_size -8", "coarse_kernel_size", F_CKS, -8, -1, 0},
    {"coarse_kernel_stride 0", "coarse_kernel_stride", F_CKSTR, 0, -1, 0},
    {"coarse_kernel_stride -4", "coarse_kernel_stride", F_CKSTR, -4, -1, 0},
    {"topk 0", "topk", F_TOPK, 0, -1, 0},
    {"topk -1", "topk", F_TOPK, -1, -1, 0},
    {"block_size 5 not a multiple of kernel_stride 2 (window 0)", "block_size", F_BS, 5, F_WIN, 0},
    {"kernel_size 5 not a multiple of kernel_stride 2", "kernel_size", F_KS, 5, -1, 0},
    {"coarse_kernel_size 10 not a multiple of coarse_kernel_stride 4", "coarse_kernel_size", F_CKS, 10, -1, 0},
    {"init_blocks -1", "init_blocks", F_INIT, -1, -1, 0},
    {"window_size 6 not a multiple of block_size 4", "window_size", F_WIN, 6, -1, 0},
    {"window_size -4", "window_size", F_WIN, -4, -1, 0},
    {"topk 2 < init_blocks 2 + 1", "topk", F_TOPK, 2, F_INIT, 2},
    {"topk 1 < init_blocks 1 + 1", "topk", F_TOPK, 1, -1, 0},
    {"dense_len -2", "dense_len", F_DENSE, -2, -1, 0},
    {"dense_len -1000000", "dense_len", F_DENSE, -1e6, -1, 0},
    {"scale NaN", "scale", F_SCALE, NAN, -1, 0},
    {"scale -1", "scale", F_SCALE, -1, -1, 0},
    {"scale +Inf", "scale", F_SCALE, INFINITY, -1, 0},
    {"scale -Inf", "scale", F_SCALE, -INFINITY, -1, 0},
    {"lse_mode 2", "lse_mode", F_LSE, 2, -1, 0},
    {"lse_mode -1", "lse_mode", F_LSE, -1, -1, 0},
};

/* Valid edge configs: OK for ifl_sparse_config_check and every op. */
static const struct cfg_case CFG_GOOD[] = {
    {"init_blocks 0, topk 1, window 0", NULL, F_INIT, 0, F_TOPK, 1},
    {"window 0", NULL, F_WIN, 0, -1, 0},
    {"dense_len 0", NULL, F_DENSE, 0, -1, 0},
    {"dense_len 100 (all dense)", NULL, F_DENSE, 100, -1, 0},
    {"scale 0.5", NULL, F_SCALE, 0.5, -1, 0},
    {"lse_mode exact", NULL, F_LSE, IFL_LSE_EXACT, -1, 0},
    {"coarse 8/8", NULL, F_CKS, 8, F_CKSTR, 8},
};

#define O_OUT_BYTES (TQ * HQ * D * 8)

static const struct mcase SPECIFIC[] = {
    /* ---- the context and the config pointer ---- */
    {"ctx NULL", ALLOPS, E_INV, 0, NULL, 0, {0}, {MU(M_CTX_NULL, -1, 0, 0, 0, 0, 0), M0, M0}},
    {"cfg NULL", OPB(OP_CFG), E_INV, 0, "cfg", 0, {0}, {MU(M_CFG_NULL, -1, 0, 0, 0, 0, 0), M0, M0}},

    /* ---- dtypes ---- */
    {"q f32 but k f64", QOPS, E_DTY, 0, "q", 0, {0}, {MDTYPE(R_Q, IFL_DTYPE_F32), M0, M0}},
    {"k f32 but q f64", QOPS, E_DTY, 0, "k", 0, {0}, {MDTYPE(R_K, IFL_DTYPE_F32), M0, M0}},
    {"k bf16 but q f64", QOPS, E_DTY, 0, "k", 0, {0}, {MDTYPE(R_K, IFL_DTYPE_BF16), M0, M0}},
    {"v f32 but q, k f64", VOPS, E_DTY, 0, "v", 0, {0}, {MDTYPE(R_V, IFL_DTYPE_F32), M0, M0}},
    {"v f16 but q, k f64", VOPS, E_DTY, 0, "v", 0, {0}, {MDTYPE(R_V, IFL_DTYPE_F16), M0, M0}},
    {"q, k, v i32", VOPS, E_DTY, 0, "q", 0, {0},
     {MDTYPE(R_Q, IFL_DTYPE_I32), MDTYPE(R_K, IFL_DTYPE_I32), MDTYPE(R_V, IFL_DTYPE_I32)}},

    /* ---- shapes of q, k, v ---- */
    {"Hq 3 not a multiple of Hkv 2", QOPS, E_SHP, 0, "q", 0, {0}, {MSHAPE(R_Q, 1, 3), M0, M0}},
    {"Hq 4 not a multiple of Hkv 3", QOPS, E_SHP, 0, "k", 0, {0},
     {MSHAPE(R_K, 1, 3), MSHAPE(R_V, 1, 3), M0}},
    {"Hq 2 with Hkv 4 (fewer query heads)", QOPS, E_SHP, 0, "q", 0, {0},
     {MU(M_RESHAPE, R_K, TK, 4, D, 0, 0), MU(M_RESHAPE, R_V, TK, 4, D, 0, 0), MSHAPE(R_Q, 1, 2)}},
    {"q head dim 4, k 8", QOPS, E_SHP, 0, "q", 0, {0}, {MU(M_RESHAPE, R_Q, TQ, HQ, 4, 0, 0), M0, M0}},
    {"k, v head dim 4, q 8", QOPS, E_SHP, 0, "q", 0, {0},
     {MU(M_RESHAPE, R_K, TK, HKV, 4, 0, 0), MU(M_RESHAPE, R_V, TK, HKV, 4, 0, 0), M0}},
    {"head dim 257 > 256", KOPS, E_UNS, 0, "k", 0, {0}, {MU(M_DIM, -1, BIG_D, 0, 0, 0, 0), M0, M0}},
    {"head dim 300", KOPS, E_UNS, 0, "k", 0, {0}, {MU(M_DIM, -1, 300, 0, 0, 0, 0), M0, M0}},
    {"v 8 rows, k 9", VOPS, E_SHP, 0, "v", 0, {0}, {MSHAPE(R_V, 0, 8), M0, M0}},
    {"v 1 head, k 2", VOPS, E_SHP, 0, "v", 0, {0}, {MSHAPE(R_V, 1, 1), M0, M0}},
    {"v head dim 4, k 8", VOPS, E_SHP, 0, "v", 0, {0}, {MU(M_RESHAPE, R_V, TK, HKV, 4, 0, 0), M0, M0}},
    {"v 10 rows, k 9", VOPS, E_SHP, 0, "v", 0, {0}, {MSHAPE(R_V, 0, 10), M0, M0}},
    {"4 keys < 5 queries (no batch)", QOPS, E_SHP, 0, "k", 0, {0}, {MU(M_KV_ROWS, -1, 4, 0, 0, 0, 0), M0, M0}},
    {"1 key < 5 queries (no batch)", QOPS, E_SHP, 0, "k", 0, {0}, {MU(M_KV_ROWS, -1, 1, 0, 0, 0, 0), M0, M0}},
    /* control: Tk = Tq (past 0) is fine where no other argument depends on Tk */
    {"5 keys = 5 queries (control)", OPB(OP_SELECT) | OPB(OP_DFWD) | OPB(OP_V2), E_OK, 0, NULL, 0, {0},
     {MU(M_KV_ROWS, -1, 5, 0, 0, 0, 0), M0, M0}},

    /* ---- shapes of the other tensors ---- */
    {"out 4 rows", VOPS, E_SHP, 0, "out", 0, {0}, {MSHAPE(R_OUT, 0, 4), M0, M0}},
    {"out 2 heads", VOPS, E_SHP, 0, "out", 0, {0}, {MSHAPE(R_OUT, 1, 2), M0, M0}},
    {"out head dim 9", VOPS, E_SHP, 0, "out", 0, {0}, {MSHAPE(R_OUT, 2, 9), M0, M0}},
    {"out 6 rows", VOPS, E_SHP, 0, "out", 0, {0}, {MSHAPE(R_OUT, 0, 6), M0, M0}},
    {"lse 4 rows", VOPS, E_SHP, 0, "lse", 0, {0}, {MSHAPE(R_LSE, 0, 4), M0, M0}},
    {"lse 2 heads", VOPS, E_SHP, 0, "lse", 0, {0}, {MSHAPE(R_LSE, 1, 2), M0, M0}},
    {"lse [5, 4, 1] rank 3", VOPS, E_SHP, 0, "lse", 0, {0}, {MU(M_NDIM, R_LSE, 3, 0, 0, 0, 0), MSHAPE(R_LSE, 2, 1), M0}},
    {"dout 4 rows", BWD, E_SHP, 0, "dout", 0, {0}, {MSHAPE(R_DOUT, 0, 4), M0, M0}},
    {"dout head dim 7", BWD, E_SHP, 0, "dout", 0, {0}, {MSHAPE(R_DOUT, 2, 7), M0, M0}},
    {"dq 4 rows", BWD, E_SHP, 0, "dq", 0, {0}, {MSHAPE(R_DQ, 0, 4), M0, M0}},
    {"dq head dim 7", BWD, E_SHP, 0, "dq", 0, {0}, {MSHAPE(R_DQ, 2, 7), M0, M0}},
    {"dk 8 rows", BWD, E_SHP, 0, "dk", 0, {0}, {MSHAPE(R_DK, 0, 8), M0, M0}},
    {"dk 4 heads (q's)", BWD, E_SHP, 0, "dk", 0, {0}, {MSHAPE(R_DK, 1, 4), M0, M0}},
    {"dv 1 head", BWD, E_SHP, 0, "dv", 0, {0}, {MSHAPE(R_DV, 1, 1), M0, M0}},
    {"dv 10 rows", BWD, E_SHP, 0, "dv", 0, {0}, {MSHAPE(R_DV, 0, 10), M0, M0}},
    {"sel output too narrow (K 2 < width 3)", OPB(OP_SELECT) | OPB(OP_V2), E_SHP, 0, "sel", 0, {0},
     {MSHAPE(R_SEL, 2, 2), M0, M0}},
    {"sel output K 1 < width 3", OPB(OP_SELECT) | OPB(OP_V2), E_SHP, 0, "sel", 0, {0},
     {MU(M_RESHAPE, R_SEL, HKV, TQ, 1, 0, 0), M0, M0}},
    {"sel output K 1, every sequence dense (control)", OPB(OP_SELECT) | OPB(OP_V2), E_SHP, OPB(OP_V2),
     "sel", 0, {0}, {MU(M_RESHAPE, R_SEL, HKV, TQ, 1, 0, 0), MCFG(F_DENSE, 100), M0}},
    {"sel output K 4 > width (control)", OPB(OP_SELECT) | OPB(OP_V2), E_OK, 0, NULL, 0, {0},
     {MU(M_RESHAPE, R_SEL, HKV, TQ, 4, 0, 0), M0, M0}},
    {"sel output 1 KV head", OPB(OP_SELECT) | OPB(OP_V2), E_SHP, 0, "sel", 0, {0}, {MSHAPE(R_SEL, 0, 1), M0, M0}},
    {"sel output 4 rows", OPB(OP_SELECT) | OPB(OP_V2), E_SHP, 0, "sel", 0, {0}, {MSHAPE(R_SEL, 1, 4), M0, M0}},
    {"sel output [Tq, Hkv, K] transposed", OPB(OP_SELECT) | OPB(OP_V2), E_SHP, 0, "sel", 0, {0},
     {MU(M_RESHAPE, R_SEL, TQ, HKV, KW, 0, 0), M0, M0}},
    {"sel input 1 KV head", OPB(OP_SFWD) | OPB(OP_SBWD), E_SHP, 0, "sel", 0, {0}, {MSHAPE(R_SELIN, 0, 1), M0, M0}},
    {"sel input 4 rows", OPB(OP_SFWD) | OPB(OP_SBWD), E_SHP, 0, "sel", 0, {0}, {MSHAPE(R_SELIN, 1, 4), M0, M0}},
    {"sel input K 1 = {0} (control)", OPB(OP_SFWD) | OPB(OP_SBWD), E_OK, 0, NULL, 0, {0},
     {MU(M_RESHAPE, R_SELIN, HKV, TQ, 1, 0, 0), MU(M_SEL_FILL, R_SELIN, 0, 0, 0, 0, 0), M0}},
    {"c1 2 rows (expected 3)", OPB(OP_COMPRESS), E_SHP, 0, "c1", 0, {0}, {MSHAPE(R_C1, 0, 2), M0, M0}},
    {"c1 4 rows (expected 3)", OPB(OP_COMPRESS), E_SHP, 0, "c1", 0, {0}, {MSHAPE(R_C1, 0, 4), M0, M0}},
    {"c1 1 head", OPB(OP_COMPRESS), E_SHP, 0, "c1", 0, {0}, {MSHAPE(R_C1, 1, 1), M0, M0}},
    {"c1 head dim 4", OPB(OP_COMPRESS), E_SHP, 0, "c1", 0, {0}, {MU(M_RESHAPE, R_C1, N1, HKV, 4, 0, 0), M0, M0}},
    {"c2 2 rows (expected 1)", OPB(OP_COMPRESS), E_SHP, 0, "c2", 0, {0}, {MSHAPE(R_C2, 0, 2), M0, M0}},
    {"c2 given but kernel 16 leaves no coarse window", OPB(OP_COMPRESS), E_SHP, 0, "c2", 0, {0},
     {MCFG(F_CKS, 16), MCFG(F_CKSTR, 16), M0}},
    {"c1, c2 f32 outputs (control)", OPB(OP_COMPRESS), E_OK, 0, NULL, 0, {0},
     {MDTYPE(R_C1, IFL_DTYPE_F32), MDTYPE(R_C2, IFL_DTYPE_F16), M0}},

    /* ---- batches ---- */
    {"batch n_seqs 0", KOPS, E_INV, 0, "n_seqs", 0, {0}, {MBATCH(B_N0), M0, M0}},
    {"batch n_seqs -1", KOPS, E_INV, 0, "n_seqs", 0, {0}, {MBATCH(B_NNEG), M0, M0}},
    {"batch cu_seqlens_q NULL", QOPS, E_INV, 0, "cu_seqlens_q", 0, {0}, {MBATCH(B_NULL_Q), M0, M0}},
    {"batch cu_seqlens_k NULL", KOPS, E_INV, 0, "cu_seqlens_k", 0, {0}, {MBATCH(B_NULL_K), M0, M0}},
    {"batch cu_seqlens_q[0] = 1", QOPS, E_INV, 0, "cu_seqlens_q", 0, {0}, {MBATCH(B_Q0), M0, M0}},
    {"batch cu_seqlens_k[0] = 1", KOPS, E_INV, 0, "cu_seqlens_k", 0, {0}, {MBATCH(B_K0), M0, M0}},
    {"batch cu_seqlens_q decreasing", QOPS, E_INV, 0, "cu_seqlens_q", 0, {0}, {MBATCH(B_QDEC), M0, M0}},
    {"batch cu_seqlens_k decreasing", KOPS, E_INV, 0, "cu_seqlens_k", 0, {0}, {MBATCH(B_KDEC), M0, M0}},
    {"batch sequence with 3 queries, 2 keys", QOPS, E_INV, 0, NULL, 0, {0}, {MBATCH(B_MORE_Q), M0, M0}},
    {"batch covers 4 of 5 query rows", QOPS, E_SHP, 0, NULL, 0, {0}, {MBATCH(B_QTOT_LO), M0, M0}},
    {"batch covers 6 of 5 query rows", QOPS, E_SHP, 0, NULL, 0, {0}, {MBATCH(B_QTOT_HI), M0, M0}},
    {"batch covers 8 of 9 key rows", KOPS, E_SHP, 0, NULL, 0, {0}, {MBATCH(B_KTOT_LO), M0, M0}},
    {"batch covers 10 of 9 key rows", KOPS, E_SHP, 0, NULL, 0, {0}, {MBATCH(B_KTOT_HI), M0, M0}},
    {"batch of 2 sequences (control)", KOPS, E_OK, 0, NULL, 0, {0}, {MBATCH(B_OK), M0, M0}},
    {"batch of 1 sequence (control)", KOPS, E_OK, 0, NULL, 0, {0}, {MBATCH(B_OK1), M0, M0}},
    {"batch with an empty sequence (control)", KOPS, E_OK, 0, NULL, 0, {0}, {MBATCH(B_EMPTY_SEQ), M0, M0}},
    {"batch with a sequence of keys only (control)", KOPS, E_OK, 0, NULL, 0, {0}, {MBATCH(B_NO_QUERIES), M0, M0}},
    {"batch: sel block valid in seq 1 but not in seq 0", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3,
     {0, 1, 1}, {MBATCH(B_OK), MROW(0, 1, 0, 1, -1), M0}},

    /* ---- malformed selection input ---- */
    {"sel row not ascending {1, 0, -1}", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3, {1, 2, 1},
     {MROW(1, 2, 1, 0, -1), M0, M0}},
    {"sel row duplicate {0, 0, 2}", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3, {0, 4, 1},
     {MROW(0, 4, 0, 0, 2), M0, M0}},
    {"sel block 3 out of range (3 blocks)", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3, {1, 4, 2},
     {MROW(1, 4, 0, 1, 3), M0, M0}},
    {"sel block 1000 out of range", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3, {0, 0, 0},
     {MROW(0, 0, 1000, -1, -1), M0, M0}},
    {"sel -1 followed by a block {0, -1, 1}", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3, {0, 3, 2},
     {MROW(0, 3, 0, -1, 1), M0, M0}},
    {"sel leading -1 then block {-1, 0, 1}", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3, {1, 3, 1},
     {MROW(1, 3, -1, 0, 1), M0, M0}},
    {"sel -2 {-2, -1, -1}", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3, {1, 0, 0},
     {MROW(1, 0, -2, -1, -1), M0, M0}},
    {"sel padding -5 {0, 1, -5}", OPB(OP_SFWD) | OPB(OP_SBWD), E_INV, 0, "sel", 3, {0, 2, 2},
     {MROW(0, 2, 0, 1, -5), M0, M0}},
    {"sel row all -1 (control: sees no key)", OPB(OP_SFWD) | OPB(OP_SBWD), E_OK, 0, NULL, 0, {0},
     {MROW(0, 0, -1, -1, -1), M0, M0}},
    {"sel block after the query's block (control)", OPB(OP_SFWD) | OPB(OP_SBWD), E_OK, 0, NULL, 0, {0},
     {MROW(0, 0, 0, 2, -1), M0, M0}},
    {"bwd accepts lse -inf of a row that sees no key (control)", OPB(OP_SBWD), E_OK, 0, NULL, 0, {0},
     {MROW(0, 0, -1, -1, -1), MBAD(R_LSE, 0, 0, 0, -INFINITY), MBAD(R_LSE, 0, 1, 0, -INFINITY)}},

    /* ---- NaN / Inf ---- */
    {"NaN in q", QOPS, E_INV, 0, "q", 3, {3, 2, 5}, {MBAD(R_Q, 3, 2, 5, NAN), MBAD(R_Q, 4, 0, 0, NAN), M0}},
    {"+Inf in q", QOPS, E_INV, 0, "q", 3, {0, 0, 1}, {MBAD(R_Q, 0, 0, 1, INFINITY), M0, M0}},
    {"+Inf in k", KOPS, E_INV, 0, "k", 3, {7, 1, 6}, {MBAD(R_K, 7, 1, 6, INFINITY), MBAD(R_K, 8, 1, 7, NAN), M0}},
    {"NaN in k", KOPS, E_INV, 0, "k", 3, {0, 1, 2}, {MBAD(R_K, 0, 1, 2, NAN), M0, M0}},
    {"-Inf in v", VOPS, E_INV, 0, "v", 3, {8, 0, 3}, {MBAD(R_V, 8, 0, 3, -INFINITY), M0, M0}},
    {"NaN in v", VOPS, E_INV, 0, "v", 3, {2, 1, 0}, {MBAD(R_V, 2, 1, 0, NAN), M0, M0}},
    {"NaN in dout", BWD, E_INV, 0, "dout", 3, {4, 3, 7}, {MBAD(R_DOUT, 4, 3, 7, NAN), M0, M0}},
    {"+Inf in dout", BWD, E_INV, 0, "dout", 3, {1, 0, 2}, {MBAD(R_DOUT, 1, 0, 2, INFINITY), M0, M0}},
    {"NaN in out (a backward input)", BWD, E_INV, 0, "out", 3, {1, 2, 4}, {MBAD(R_OUT, 1, 2, 4, NAN), M0, M0}},
    {"NaN in q, check_finite 0 (not refused)", QOPS, E_OK, 0, NULL, 0, {0},
     {MU(M_NOCHECK, -1, 0, 0, 0, 0, 0), MBAD(R_Q, 3, 2, 5, NAN), M0}},
    {"Inf in k, check_finite 0 (not refused)", KOPS, E_OK, 0, NULL, 0, {0},
     {MU(M_NOCHECK, -1, 0, 0, 0, 0, 0), MBAD(R_K, 7, 1, 6, INFINITY), M0}},
    {"NaN in v, check_finite 0 (not refused)", VOPS, E_OK, 0, NULL, 0, {0},
     {MU(M_NOCHECK, -1, 0, 0, 0, 0, 0), MBAD(R_V, 8, 0, 3, NAN), M0}},
    {"NaN in dout, check_finite 0 (not refused)", BWD, E_OK, 0, NULL, 0, {0},
     {MU(M_NOCHECK, -1, 0, 0, 0, 0, 0), MBAD(R_DOUT, 4, 3, 7, NAN), M0}},
    {"NaN only between the elements of a strided q view (control)", QOPS, E_OK, 0, NULL, 0, {0},
     {MU(M_QVIEW_GAPS, R_Q, 0, 0, 0, 0, 0), M0, M0}},

    {"NaN in f16 q", QOPS, E_INV, 0, "q", 3, {2, 3, 4},
     {MU(M_CONVERT, -1, IFL_DTYPE_F16, 0, 0, 0, 0), MBAD(R_Q, 2, 3, 4, NAN), M0}},
    {"-Inf in bf16 k", KOPS, E_INV, 0, "k", 3, {5, 0, 7},
     {MU(M_CONVERT, -1, IFL_DTYPE_BF16, 0, 0, 0, 0), MBAD(R_K, 5, 0, 7, -INFINITY), M0}},
    {"+Inf in f32 v", VOPS, E_INV, 0, "v", 3, {6, 1, 1},
     {MU(M_CONVERT, -1, IFL_DTYPE_F32, 0, 0, 0, 0), MBAD(R_V, 6, 1, 1, INFINITY), M0}},
    {"f16 value past 65504 is +Inf in f16 k", KOPS, E_INV, 0, "k", 3, {1, 1, 1},
     {MU(M_CONVERT, -1, IFL_DTYPE_F16, 0, 0, 0, 0), MBAD(R_K, 1, 1, 1, 1e6), M0}},

    /* ---- overlapping memory ---- */
    {"out on q", FWD, E_INV, 0, "out", 0, {0}, {MALIAS(R_OUT, R_Q, 0), M0, M0}},
    {"out overlaps q's last element", FWD, E_INV, 0, "out", 0, {0}, {MALIAS(R_OUT, R_Q, O_OUT_BYTES - 8), M0, M0}},
    {"out right after q (control: adjacent, no overlap)", FWD, E_OK, 0, NULL, 0, {0},
     {MALIAS(R_OUT, R_Q, O_OUT_BYTES), M0, M0}},
    {"out on k", FWD, E_INV, 0, "out", 0, {0}, {MALIAS(R_OUT, R_K, 8), M0, M0}},
    {"out on v", FWD, E_INV, 0, "out", 0, {0}, {MALIAS(R_OUT, R_V, 0), M0, M0}},
    {"lse on out (two outputs)", FWD, E_INV, 0, "lse", 0, {0}, {MALIAS(R_LSE, R_OUT, 0), M0, M0}},
    {"lse overlaps out's last element", FWD, E_INV, 0, "lse", 0, {0}, {MALIAS(R_LSE, R_OUT, O_OUT_BYTES - 8), M0, M0}},
    {"lse overlaps the sel input", OPB(OP_SFWD), E_INV, 0, "lse", 0, {0}, {MALIAS(R_LSE, R_SELIN, -8), M0, M0}},
    {"lse on q", FWD, E_INV, 0, "lse", 0, {0}, {MALIAS(R_LSE, R_Q, 64), M0, M0}},
    {"sel output on out", OPB(OP_V2), E_INV, 0, "sel", 0, {0}, {MALIAS(R_SEL, R_OUT, 0), M0, M0}},
    {"sel output on lse", OPB(OP_V2), E_INV, 0, "sel", 0, {0}, {MALIAS(R_SEL, R_LSE, 40), M0, M0}},
    {"sel output on q", OPB(OP_SELECT) | OPB(OP_V2), E_INV, 0, "sel", 0, {0}, {MALIAS(R_SEL, R_Q, 0), M0, M0}},
    {"sel output on k", OPB(OP_SELECT) | OPB(OP_V2), E_INV, 0, "sel", 0, {0}, {MALIAS(R_SEL, R_K, 16), M0, M0}},
    {"c1 on k", OPB(OP_COMPRESS), E_INV, 0, "c1", 0, {0}, {MALIAS(R_C1, R_K, 0), M0, M0}},
    {"c2 on k", OPB(OP_COMPRESS), E_INV, 0, "c2", 0, {0}, {MALIAS(R_C2, R_K, 8 * 8), M0, M0}},
    {"c2 overlaps c1 (two outputs)", OPB(OP_COMPRESS), E_INV, 0, "c2", 0, {0}, {MALIAS(R_C2, R_C1, 8 * 8), M0, M0}},
    {"dq on dout", BWD, E_INV, 0, "dq", 0, {0}, {MALIAS(R_DQ, R_DOUT, 0), M0, M0}},
    {"dq on q", BWD, E_INV, 0, "dq", 0, {0}, {MALIAS(R_DQ, R_Q, 0), M0, M0}},
    {"dq on out", BWD, E_INV, 0, "dq", 0, {0}, {MALIAS(R_DQ, R_OUT, 0), M0, M0}},
    {"lse input inside dq", BWD, E_INV, 0, "dq", 0, {0}, {MMOVE(R_LSE, R_DQ, 100 * 8), M0, M0}},
    {"sel input inside dv", OPB(OP_SBWD), E_INV, 0, "dv", 0, {0}, {MMOVE(R_SELIN, R_DV, 0), M0, M0}},
    {"dk on k", BWD, E_INV, 0, "dk", 0, {0}, {MALIAS(R_DK, R_K, 0), M0, M0}},
    {"dv on v", BWD, E_INV, 0, "dv", 0, {0}, {MALIAS(R_DV, R_V, 8), M0, M0}},
    {"dk and dv the same memory", BWD, E_INV, 0, "dv", 0, {0}, {MALIAS(R_DV, R_DK, 0), M0, M0}},
    {"dq overlaps dk", BWD, E_INV, 0, "dq", 0, {0}, {MALIAS(R_DQ, R_DK, 8), M0, M0}},

    /* ---- positive controls ---- */
    {"valid call (control)", ALLOPS, E_OK, 0, NULL, 0, {0}, {M0, M0, M0}},
    {"lse NULL in a forward (control)", FWD, E_OK, 0, NULL, 0, {0}, {MU(M_PTR_NULL, R_LSE, 0, 0, 0, 0, 0), M0, M0}},
    {"sel and modes NULL (control)", OPB(OP_V2), E_OK, 0, NULL, 0, {0},
     {MU(M_PTR_NULL, R_SEL, 0, 0, 0, 0, 0), MU(M_PTR_NULL, R_MODES, 0, 0, 0, 0, 0), M0}},
    {"c2 NULL (control)", OPB(OP_COMPRESS), E_OK, 0, NULL, 0, {0}, {MU(M_PTR_NULL, R_C2, 0, 0, 0, 0, 0), M0, M0}},
    {"cfg NULL = default config (control)", OPB(OP_SELECT) | OPB(OP_DFWD) | OPB(OP_V2) | OPB(OP_DBWD), E_OK, 0,
     NULL, 0, {0}, {MU(M_CFG_NULL, -1, 0, 0, 0, 0, 0), M0, M0}},
    {"out f32, lse f32 (control)", VOPS, E_OK, 0, NULL, 0, {0},
     {MDTYPE(R_OUT, IFL_DTYPE_F32), MDTYPE(R_LSE, IFL_DTYPE_F32), M0}},
    {"out bf16, dq f16, dk f32 (control)", FWD | BWD, E_OK, 0, NULL, 0, {0},
     {MDTYPE(R_OUT, IFL_DTYPE_BF16), MDTYPE(R_DQ, IFL_DTYPE_F16), MDTYPE(R_DK, IFL_DTYPE_F32)}},
    {"k, v broadcast rows (stride 0, control)", KOPS, E_OK, 0, NULL, 0, {0},
     {MSTRIDE(R_K, 0, 0), MSTRIDE(R_V, 0, 0), M0}},
    {"q, k, v f16 (control)", KOPS, E_OK, 0, NULL, 0, {0}, {MU(M_CONVERT, -1, IFL_DTYPE_F16, 0, 0, 0, 0), M0, M0}},
    {"q, k, v bf16 (control)", KOPS, E_OK, 0, NULL, 0, {0}, {MU(M_CONVERT, -1, IFL_DTYPE_BF16, 0, 0, 0, 0), M0, M0}},
    {"q, k, v f32 (control)", KOPS, E_OK, 0, NULL, 0, {0}, {MU(M_CONVERT, -1, IFL_DTYPE_F32, 0, 0, 0, 0), M0, M0}},
};

/* ---- the context ---- */

static void test_ctx(void) {
    enum { P_NULL = 1, OUT_NULL = 2 };
    const struct {
        const char *name;
        int         backend, n_threads, flags;
        int         want; /* -1: OK when ifl_backend_available(backend), else UNSUPPORTED */
    } cases[] = {
        {"params NULL", IFL_BACKEND_REF, 0, P_NULL, IFL_STATUS_INVALID_ARG},
        {"out NULL", IFL_BACKEND_REF, 0, OUT_NULL, IFL_STATUS_INVALID_ARG},
        {"params and out NULL", IFL_BACKEND_REF, 0, P_NULL | OUT_NULL, IFL_STATUS_INVALID_ARG},
        {"n_threads -1", IFL_BACKEND_REF, -1, 0, IFL_STATUS_INVALID_ARG},
        {"n_threads INT_MIN", IFL_BACKEND_REF, INT_MIN, 0, IFL_STATUS_INVALID_ARG},
        {"backend 99 unknown", 99, 0, 0, IFL_STATUS_INVALID_ARG},
        {"backend 3 unknown", 3, 0, 0, IFL_STATUS_INVALID_ARG},
        {"backend -1 unknown", -1, 0, 0, IFL_STATUS_INVALID_ARG},
        {"backend unknown and n_threads -1", 7, -1, 0, IFL_STATUS_INVALID_ARG},
        {"backend cpu", IFL_BACKEND_CPU, 0, 0, -1},
        {"backend cuda", IFL_BACKEND_CUDA, 0, 0, -1},
        {"backend cpu, 4 threads", IFL_BACKEND_CPU, 4, 0, -1},
        {"backend ref (control)", IFL_BACKEND_REF, 0, 0, -1},
        {"backend ref, 3 threads (control)", IFL_BACKEND_REF, 3, 0, IFL_STATUS_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (!th_case("ifl_ctx_create: %s", cases[i].name)) continue;
        n_runs++;
        struct ifl_ctx_params p = ifl_ctx_params_default();
        p.backend               = (enum ifl_backend)cases[i].backend;
        p.n_threads             = cases[i].n_threads;
        int             dummy;
        struct ifl_ctx *ctx  = (struct ifl_ctx *)(void *)&dummy; /* must be reset to NULL */
        int             want = cases[i].want;
        if (want < 0)
            want = ifl_backend_available(p.backend) ? IFL_STATUS_OK : IFL_STATUS_UNSUPPORTED;
        enum ifl_status st = ifl_ctx_create((cases[i].flags & P_NULL) ? NULL : &p,
                                            (cases[i].flags & OUT_NULL) ? NULL : &ctx);
        /* a cuda build on a machine without a GPU: the backend exists, the device does not */
        if (p.backend == IFL_BACKEND_CUDA && want == IFL_STATUS_OK && st == IFL_STATUS_DEVICE)
            want = IFL_STATUS_DEVICE;
        TH_CHECK((int)st == want, "status %s (%d), expected %s (%d)", ifl_status_str(st), (int)st,
                 ifl_status_str((enum ifl_status)want), want);
        if (cases[i].flags & OUT_NULL) continue;
        if (st == IFL_STATUS_OK) {
            TH_CHECK(ctx != NULL && ctx != (struct ifl_ctx *)(void *)&dummy, "ctx not set");
            TH_CHECK(ifl_ctx_errmsg(ctx) != NULL && ifl_ctx_errmsg(ctx)[0] == '\0',
                     "a new context's message is not \"\"");
            ifl_ctx_destroy(ctx);
        } else {
            TH_CHECK(ctx == NULL, "*out not set to NULL on failure");
        }
    }
    /* simd levels: unknown ones are INVALID_ARG; a known one either runs (and is reported by
     * ifl_ctx_simd) or is UNSUPPORTED on this processor */
    const struct {
        const char *name;
        int         simd, want;
    } simds[] = {
        {"simd 99 unknown", 99, IFL_STATUS_INVALID_ARG},
        {"simd -1 unknown", -1, IFL_STATUS_INVALID_ARG},
        {"simd auto", IFL_SIMD_AUTO, -1},
        {"simd scalar", IFL_SIMD_SCALAR, -1},
        {"simd avx2", IFL_SIMD_AVX2, -1},
        {"simd avx512", IFL_SIMD_AVX512, -1},
    };
    const enum ifl_backend bk[] = {IFL_BACKEND_REF, IFL_BACKEND_CPU};
    for (size_t b = 0; b < 2; b++)
        for (size_t i = 0; i < sizeof simds / sizeof simds[0]; i++) {
            if (!ifl_backend_available(bk[b])) continue;
            if (!th_case("ifl_ctx_create: %s backend, %s", ifl_backend_name(bk[b]), simds[i].name)) continue;
            n_runs++;
            struct ifl_ctx_params p = ifl_ctx_params_default();
            p.backend               = bk[b];
            p.simd                  = (enum ifl_simd)simds[i].simd;
            int             dummy;
            struct ifl_ctx *ctx = (struct ifl_ctx *)(void *)&dummy;
            enum ifl_status st  = ifl_ctx_create(&p, &ctx);
            if (simds[i].want >= 0) {
                TH_CHECK((int)st == simds[i].want, "status %s (%d), expected %s", ifl_status_str(st),
                         (int)st, ifl_status_str((enum ifl_status)simds[i].want));
            } else if (bk[b] == IFL_BACKEND_CPU) {
                TH_CHECK(st == IFL_STATUS_OK || st == IFL_STATUS_UNSUPPORTED,
                         "status %s (%d), expected ok or unsupported", ifl_status_str(st), (int)st);
            } else {
                TH_CHECK(st == IFL_STATUS_OK, "status %s (%d): the ref backend ignores simd",
                         ifl_status_str(st), (int)st);
            }
            if (st != IFL_STATUS_OK) {
                TH_CHECK(ctx == NULL, "*out not set to NULL on failure");
                continue;
            }
            enum ifl_simd got = ifl_ctx_simd(ctx);
            if (bk[b] == IFL_BACKEND_REF) {
                TH_CHECK(got == IFL_SIMD_SCALAR, "ref context reports simd %s", ifl_simd_name(got));
                TH_CHECK(ifl_ctx_threads(ctx) == 1, "ref context reports %d threads", ifl_ctx_threads(ctx));
            } else {
                TH_CHECK(got != IFL_SIMD_AUTO, "cpu context reports simd auto, expected a resolved level");
                if (p.simd != IFL_SIMD_AUTO)
                    TH_CHECK(got == p.simd, "asked for simd %s, runs %s", ifl_simd_name(p.simd),
                             ifl_simd_name(got));
                TH_CHECK(ifl_ctx_threads(ctx) >= 1, "cpu context reports %d threads", ifl_ctx_threads(ctx));
            }
            ifl_ctx_destroy(ctx);
        }
    if (th_case("ifl_backend_available")) {
        n_runs++;
        TH_CHECK(ifl_backend_available(IFL_BACKEND_REF) == 1, "ref not available");
        TH_CHECK(ifl_backend_available((enum ifl_backend)99) == 0, "backend 99 available");
        TH_CHECK(ifl_backend_available((enum ifl_backend)-1) == 0, "backend -1 available");
        TH_CHECK(strcmp(ifl_backend_name((enum ifl_backend)99), "?") == 0, "name of backend 99");
    }
    if (th_case("ifl_ctx_destroy(NULL), ifl_ctx_errmsg(NULL), ifl_status_str(unknown)")) {
        n_runs++;
        ifl_ctx_destroy(NULL); /* a no-op */
        const char *m = ifl_ctx_errmsg(NULL);
        TH_CHECK(m != NULL && m[0] != '\0', "ifl_ctx_errmsg(NULL) is NULL or empty");
        const char *s = ifl_status_str((enum ifl_status)999);
        TH_CHECK(s != NULL && s[0] != '\0', "ifl_status_str(999) is NULL or empty");
        s = ifl_status_str((enum ifl_status)-1);
        TH_CHECK(s != NULL && s[0] != '\0', "ifl_status_str(-1) is NULL or empty");
    }
    if (th_case("ifl_sparse_config_check(ctx NULL, cfg NULL)")) {
        n_runs++;
        TH_CHECK(ifl_sparse_config_check(NULL, NULL) == IFL_STATUS_INVALID_ARG, "not INVALID_ARG");
    }
    if (th_case("contexts are independent: a failure on one leaves the other's message")) {
        n_runs++;
        struct ifl_ctx_params p = ifl_ctx_params_default();
        struct ifl_ctx       *a = NULL, *b = NULL;
        if (TH_CHECK(ifl_ctx_create(&p, &a) == IFL_STATUS_OK && ifl_ctx_create(&p, &b) == IFL_STATUS_OK,
                     "cannot create two contexts")) {
            struct ifl_sparse_config c = small_config();
            c.topk                     = 0;
            TH_CHECK(ifl_sparse_config_check(a, &c) == IFL_STATUS_INVALID_ARG, "topk 0 accepted");
            TH_CHECK(ifl_ctx_errmsg(a)[0] != '\0', "no message on a");
            TH_CHECK(ifl_ctx_errmsg(b)[0] == '\0', "b got a's message: \"%s\"", ifl_ctx_errmsg(b));
        }
        ifl_ctx_destroy(a);
        ifl_ctx_destroy(b);
    }
}

/* INFLLM_SIMD and the one resolver (ifl_simd_parse, ifl_simd_resolve): an unknown value is
 * refused with a message, by the resolver and by a cpu context alike. */
static void test_simd_env(void) {
    const char *old = getenv("INFLLM_SIMD");
    char        saved[64] = "";
    if (old) snprintf(saved, sizeof saved, "%s", old);
    if (th_case("ifl_simd_parse: every name, unknown ones, NULL and \"\"")) {
        n_runs++;
        const enum ifl_simd all[] = {IFL_SIMD_AUTO, IFL_SIMD_SCALAR, IFL_SIMD_AVX2, IFL_SIMD_AVX512};
        for (size_t i = 0; i < 4; i++) {
            enum ifl_simd got = (enum ifl_simd)99;
            TH_CHECK(ifl_simd_parse(ifl_simd_name(all[i]), &got) == IFL_STATUS_OK && got == all[i],
                     "%s does not parse to itself", ifl_simd_name(all[i]));
        }
        enum ifl_simd got = IFL_SIMD_AVX2;
        TH_CHECK(ifl_simd_parse(NULL, &got) == IFL_STATUS_OK && got == IFL_SIMD_AUTO, "NULL is not auto");
        TH_CHECK(ifl_simd_parse("", &got) == IFL_STATUS_OK && got == IFL_SIMD_AUTO, "\"\" is not auto");
        TH_CHECK(ifl_simd_parse("AVX2", &got) == IFL_STATUS_INVALID_ARG, "AVX2 (case) accepted");
        TH_CHECK(ifl_simd_parse("sse", &got) == IFL_STATUS_INVALID_ARG, "sse accepted");
        TH_CHECK(ifl_simd_parse("avx2", NULL) == IFL_STATUS_INVALID_ARG, "out NULL accepted");
    }
    if (th_case("INFLLM_SIMD=bogus: the resolver and a cpu context refuse it, a ref context ignores it")) {
        n_runs++;
        setenv("INFLLM_SIMD", "bogus", 1);
        char          msg[256];
        enum ifl_simd got;
        enum ifl_status st = ifl_simd_resolve(IFL_SIMD_AUTO, &got, msg, sizeof msg);
        TH_CHECK(st == IFL_STATUS_INVALID_ARG, "resolve: status %s, expected invalid argument", ifl_status_str(st));
        TH_CHECK(strstr(msg, "INFLLM_SIMD=bogus") != NULL, "message \"%s\" does not name INFLLM_SIMD=bogus", msg);
        TH_CHECK(ifl_simd_resolve(IFL_SIMD_SCALAR, &got, msg, sizeof msg) == IFL_STATUS_OK && got == IFL_SIMD_SCALAR,
                 "an explicit level consults INFLLM_SIMD");
        TH_CHECK(msg[0] == '\0', "a success leaves the message \"%s\"", msg);
        struct ifl_ctx_params p = ifl_ctx_params_default();
        struct ifl_ctx       *ctx = NULL;
        p.backend                 = IFL_BACKEND_CPU;
        st                        = ifl_ctx_create(&p, &ctx);
        TH_CHECK(st == IFL_STATUS_INVALID_ARG && ctx == NULL, "cpu context: status %s, expected invalid argument",
                 ifl_status_str(st));
        ifl_ctx_destroy(ctx);
        p.backend = IFL_BACKEND_REF;
        st        = ifl_ctx_create(&p, &ctx);
        TH_CHECK(st == IFL_STATUS_OK, "ref context: status %s", ifl_status_str(st));
        ifl_ctx_destroy(ctx);
        TH_CHECK(ifl_simd_resolve((enum ifl_simd)42, &got, msg, sizeof msg) == IFL_STATUS_INVALID_ARG && msg[0],
                 "level 42 accepted or no message");
        TH_CHECK(ifl_simd_resolve(IFL_SIMD_AUTO, NULL, NULL, 0) == IFL_STATUS_INVALID_ARG, "out NULL accepted");
    }
    if (th_case("INFLLM_SIMD=scalar and =auto: a cpu context runs what it says")) {
        n_runs++;
        const char *names[] = {"scalar", "auto"};
        for (int i = 0; i < 2; i++) {
            setenv("INFLLM_SIMD", names[i], 1);
            struct ifl_ctx_params p = ifl_ctx_params_default();
            struct ifl_ctx       *ctx = NULL;
            enum ifl_simd         want;
            p.backend = IFL_BACKEND_CPU;
            TH_CHECK(ifl_simd_resolve(IFL_SIMD_AUTO, &want, NULL, 0) == IFL_STATUS_OK && want != IFL_SIMD_AUTO,
                     "INFLLM_SIMD=%s does not resolve", names[i]);
            if (TH_CHECK(ifl_ctx_create(&p, &ctx) == IFL_STATUS_OK, "INFLLM_SIMD=%s: no cpu context", names[i]))
                TH_CHECK(ifl_ctx_simd(ctx) == want, "INFLLM_SIMD=%s: context runs %s, resolver says %s", names[i],
                         ifl_simd_name(ifl_ctx_simd(ctx)), ifl_simd_name(want));
            if (i == 0) TH_CHECK(want == IFL_SIMD_SCALAR, "INFLLM_SIMD=scalar resolves to %s", ifl_simd_name(want));
            ifl_ctx_destroy(ctx);
        }
    }
    if (old) setenv("INFLLM_SIMD", saved, 1);
    else unsetenv("INFLLM_SIMD");
}

/* ifl_ctx_parallel: every task exactly once, on a worker index below ifl_ctx_threads. */
struct par_count {
    int *hits;
    int  bad_thread, n_threads;
};
static void par_task(void *arg, int64_t task, int thread) {
    struct par_count *c = arg;
    __atomic_fetch_add(&c->hits[task], 1, __ATOMIC_RELAXED);
    if (thread < 0 || thread >= c->n_threads) __atomic_store_n(&c->bad_thread, 1, __ATOMIC_RELAXED);
}

static void test_parallel(void) {
    const enum ifl_backend bk[] = {IFL_BACKEND_REF, IFL_BACKEND_CPU};
    for (size_t b = 0; b < 2; b++) {
        if (!th_case("ifl_ctx_parallel: %s backend, 3 threads", ifl_backend_name(bk[b]))) continue;
        n_runs++;
        struct ifl_ctx_params p = ifl_ctx_params_default();
        struct ifl_ctx       *ctx = NULL;
        p.backend   = bk[b];
        p.n_threads = 3;
        if (!TH_CHECK(ifl_ctx_create(&p, &ctx) == IFL_STATUS_OK, "no context")) continue;
        enum { N = 1000 };
        int              hits[N] = {0};
        struct par_count c       = {hits, 0, ifl_ctx_threads(ctx)};
        TH_CHECK(ifl_ctx_parallel(ctx, N, par_task, &c) == IFL_STATUS_OK, "status: %s", ifl_ctx_errmsg(ctx));
        int wrong = 0;
        for (int i = 0; i < N; i++) wrong += hits[i] != 1;
        TH_CHECK(wrong == 0, "%d tasks did not run exactly once", wrong);
        TH_CHECK(!c.bad_thread, "a worker index outside [0, %d)", c.n_threads);
        TH_CHECK(ifl_ctx_parallel(ctx, 0, par_task, &c) == IFL_STATUS_OK, "0 tasks refused");
        TH_CHECK(ifl_ctx_parallel(ctx, 5, NULL, &c) == IFL_STATUS_INVALID_ARG && ifl_ctx_errmsg(ctx)[0],
                 "fn NULL accepted or no message");
        TH_CHECK(ifl_ctx_parallel(ctx, -1, par_task, &c) == IFL_STATUS_INVALID_ARG, "n_tasks -1 accepted");
        TH_CHECK(ifl_ctx_parallel(NULL, 5, par_task, &c) == IFL_STATUS_INVALID_ARG, "ctx NULL accepted");
        ifl_ctx_destroy(ctx);
    }
}

/* Tensors whose element count overflows int64 while their span is tiny (stride-0 broadcast, which
 * the header allows: "other strides are free (in elements, non-negative)"). The call must fail
 * cleanly (SHAPE, INVALID_ARG or OUT_OF_MEMORY), not size its scratch with an overflowed product.
 * check_finite is off, else the scan walks 2^64 elements. Runs in a child: it may crash. */
static void test_huge_broadcast(void) {
    if (!th_case("element count overflows int64 (stride-0 q, k, v, out of [2^28, 2^28, 256]) / ifl_dense_attn_fwd"))
        return;
    n_runs++;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        TH_CHECK(0, "fork failed");
        return;
    }
    if (pid == 0) {
        struct ifl_ctx_params p = ifl_ctx_params_default();
        p.check_finite          = 0;
        struct ifl_ctx *ctx     = NULL;
        if (ifl_ctx_create(&p, &ctx) != IFL_STATUS_OK) _exit(3);
        static double   q[256], k[256], v[256], out[256];
        const int64_t   n = (int64_t)1 << 28;
        struct ifl_tensor tq = {q, IFL_DTYPE_F64, 3, {n, n, 256, 0}, {0, 0, 1, 0}};
        struct ifl_tensor tk = tq, tv = tq, to = tq;
        tk.data = k;
        tv.data = v;
        to.data = out;
        enum ifl_status st = ifl_dense_attn_fwd(ctx, NULL, NULL, &tq, &tk, &tv, &to, NULL);
        printf("  -> %s: \"%s\"\n", ifl_status_str(st), ifl_ctx_errmsg(ctx));
        fflush(stdout);
        ifl_ctx_destroy(ctx);
        _exit(64 + (int)st); /* distinct from a sanitizer's exit code */
    }
    int ws = 0;
    if (waitpid(pid, &ws, 0) != pid) {
        TH_CHECK(0, "waitpid failed");
        return;
    }
    if (!TH_CHECK(WIFEXITED(ws), "the call crashed (signal %d)", WIFSIGNALED(ws) ? WTERMSIG(ws) : 0)) return;
    int code = WEXITSTATUS(ws) - 64;
    TH_CHECK(code == IFL_STATUS_SHAPE || code == IFL_STATUS_INVALID_ARG || code == IFL_STATUS_OUT_OF_MEMORY,
             "the call returned %s (child exit code %d), expected SHAPE, INVALID_ARG or OUT_OF_MEMORY",
             code >= 0 && code <= IFL_STATUS_INTERNAL ? ifl_status_str((enum ifl_status)code) : "nothing: the child failed",
             code + 64);
}

/* ---- main ---- */

static void run_tables(void) {
    /* role x generic mutation x every op taking the role */
    for (int r = 0; r < N_ROLES; r++)
        for (size_t g = 0; g < sizeof GEN / sizeof GEN[0]; g++) {
            if (!(GEN[g].roles & RB(r))) continue;
            char name[128];
            snprintf(name, sizeof name, "%s%s %s", RI[r].name, r == R_SELIN ? " (input)" : "", GEN[g].tag);
            struct mcase c = {name, ROLE_OPS[r], GEN[g].want, 0, RI[r].name, 0, {0}, {GEN[g].m, M0, M0}};
            c.m[0].role    = r;
            if (GEN[g].m.kind == M_PTR_NULL) c.ok_ops = ROLE_OPTIONAL[r];
            run_case(&c);
        }

    /* config rules x every op */
    for (size_t i = 0; i < sizeof CFG_BAD / sizeof CFG_BAD[0]; i++) {
        const struct cfg_case *k = &CFG_BAD[i];
        char                   name[160];
        snprintf(name, sizeof name, "config %s", k->name);
        struct mcase c = {name, ALLOPS, E_INV, 0, k->field, 0, {0},
                          {MCFG(k->f1, k->x1), k->f2 >= 0 ? (struct mut)MCFG(k->f2, k->x2) : (struct mut)M0, M0}};
        run_case(&c);
    }
    for (size_t i = 0; i < sizeof CFG_GOOD / sizeof CFG_GOOD[0]; i++) {
        const struct cfg_case *k = &CFG_GOOD[i];
        char                   name[160];
        snprintf(name, sizeof name, "config %s (control)", k->name);
        struct mcase c = {name, ALLOPS, E_OK, 0, NULL, 0, {0},
                          {MCFG(k->f1, k->x1), k->f2 >= 0 ? (struct mut)MCFG(k->f2, k->x2) : (struct mut)M0, M0}};
        run_case(&c);
    }

    for (size_t i = 0; i < sizeof SPECIFIC / sizeof SPECIFIC[0]; i++) run_case(&SPECIFIC[i]);
}

int main(int argc, char **argv) {
    th_init(argc, argv);
    verbose = getenv("IFL_TEST_VERBOSE") != NULL;
    test_ctx();
    test_simd_env();
    test_parallel();

    /* every table on every host-memory backend this build has (validation is shared, the writes
     * are not). The tables pass host pointers, so the cuda backend, whose tensors live in device
     * memory, is left to tests/test_cuda.c, which runs its own misuse cases on device buffers. */
    const enum ifl_backend backends[] = {IFL_BACKEND_REF, IFL_BACKEND_CPU};
    for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++) {
        if (!ifl_backend_available(backends[b])) continue;
        fx_backend = backends[b];
        run_tables();
    }
    fx_backend = IFL_BACKEND_REF;
    test_huge_broadcast();

    printf("%d calls checked\n", n_runs);
    return th_report();
}
