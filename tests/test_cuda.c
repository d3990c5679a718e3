/* SPDX-License-Identifier: MIT
 *
 * test_cuda.c -- the cuda backend against the float64 ref backend (house-style 2.8 (b)-(d)): every
 * op of the public API (ifl_compress_keys, ifl_select, ifl_sparse_attn_fwd fed the ref's
 * selection, ifl_dense_attn_fwd, ifl_infllmv2_fwd, and the backward ops ifl_sparse_attn_bwd /
 * ifl_dense_attn_bwd fed the ref's selection, out and LSE) over a sweep of shapes, configs, dtypes
 * and packed batches, on two cuda contexts: the default one (tensor-core kernels where the shape
 * allows them) and one made with INFLLM_CUDA_GENERIC=1 (the plain kernels for every shape). Then
 * the device-side error paths, and finite-difference checks of the gradients in float32.
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
 *   - Gradients: the same gates on dq, dk, dv (bf16/f16: P and dS are rounded to the dtype before
 *     their products, as the forward rounds P).
 *   - Determinism: every op of the default context runs twice; the two output images must be
 *     bitwise identical (the backward too: it uses no atomics on gradients).
 *   - Finite differences (FD_GRAD cases): in float32, the gradient of L = <dO, out(q, k, v)> with
 *     the selection held fixed, at a few elements of q, k and v, against the central difference of
 *     two cuda forwards; independent of the ref.
 * Without a usable device, ifl_ctx_create(CUDA) must fail cleanly and the test prints
 * "SKIPPED: no CUDA device" and exits 0.
 *
 * Options, besides the harness's --seed N and --filter SUBSTRING:
 *   --full   larger default-config shapes too
 *
 * What it shares with tests/test_backend_ops.c (specs and instances, input generation, the ref
 * results, the comparisons with their tolerance model TOL_PRECISION, the selection check, the table
 * of worst errors) is in tests/backend_check.c; this file holds the sweep, the gates, the device
 * buffers, the runs on the cuda contexts and the device-side error paths.
 *
 * Sections: contexts and device memory / gates / the sweep / device inputs / running the backend
 * under test / the op cases / device-side error paths / main.
 */
#define _POSIX_C_SOURCE 200809L
#include "backend_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== contexts and device memory ==== */

static struct ifl_ctx *cu_ctx;  /* cuda, default kernels */
static struct ifl_ctx *gen_ctx; /* cuda, INFLLM_CUDA_GENERIC=1 */

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

static void dev_free(void *d) { ifl_buffer_free(cu_ctx, d); }

/* Guarded outputs (backend_check.h) get a device image here: bc.dev_put/dev_free. After the call
 * the image is downloaded into the host one. */
static void gb_fetch(struct gbuf *g) {
    if (g->mem) dev_get(g->mem, g->dmem, g->total);
}

static int gb_untouched(const struct gbuf *g) { return g->mem == NULL || memcmp(g->mem, g->init, g->total) == 0; }

/* ==== gates (house-style 2.8 (c); backend_check.h's TOL_PRECISION) ====
 * bf16/f16 inputs: max|out - ref| <= 4 u_dtype max|ref|, NMSE <= 5e-5 (bf16) / 1e-6 (f16), LSE within
 * 1e-3 max(1, max|lse|); f32/f64 inputs: */
#define C_ACC      16.0  /* max err <= C_ACC * u_acc * sqrt(n_acc + D) * zfac * max|ref| */
#define NMSE_C_ACC 256.0 /* NMSE <= NMSE_C_ACC * u_acc^2 * (n_acc + D) * zfac^2 */
#define C_CK       4.0   /* compressed keys: err <= ulp_dtype(ref) + C_CK * u_acc * sqrt(kernel) * max|k| */
/* selection near-tie margin: tau = TAU_C * u * max|finite row score| (backend_check.h) */
static const struct gates gates = {.ck = C_CK, .out = C_ACC, .lse = C_ACC, .nmse_fwd = NMSE_C_ACC,
                                   .dq = C_ACC, .dk = C_ACC, .dv = C_ACC, .nmse_bwd = NMSE_C_ACC};

/* ==== the sweep ==== */

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

/* ==== device inputs ==== */

/* The device copies of an instance's inputs (in->user). */
struct dev_in {
    void  *q, *k, *v, *fused, *sel, *sel_masked;
    void  *dout, *out[N_KINDS], *lse[N_KINDS]; /* the backward's inputs, uploaded on first use */
    size_t nb_q, nb_k;
};
static struct dev_in *dev_of(const struct inst *in) { return in->user; }

/* Uploads q, k, v (and the fused buffer of a strided spec); the views the cuda contexts get point
 * into the device copies. */
static void dev_inputs_make(struct inst *in, struct dev_in *dv) {
    const size_t es = ifl_dtype_size(in->dt);
    memset(dv, 0, sizeof *dv);
    in->user = dv;
    dv->nb_q = (size_t)(in->TQ * in->hq * in->d) * es, dv->nb_k = (size_t)(in->TK * in->hkv * in->d) * es;
    dv->q    = dev_put(in->q, dv->nb_q);
    dv->k    = dev_put(in->k, dv->nb_k);
    dv->v    = dev_put(in->v, dv->nb_k);
    in->tq_ut.data = dv->q, in->tk_ut.data = dv->k, in->tv_ut.data = dv->v;
    if (in->fused) { /* the same views into a device copy of [T, Hq + 2 Hkv, D] */
        dv->fused         = dev_put(in->fused, (size_t)(in->TQ * (in->hq + 2 * in->hkv) * in->d) * es);
        unsigned char *df = dv->fused;
        in->tq_ut.data = df, in->tk_ut.data = df + in->hq * in->d * (int64_t)es;
        in->tv_ut.data = df + (in->hq + in->hkv) * in->d * (int64_t)es;
    }
}

/* The backward's inputs of kind (the ref's out and LSE, dout) as device tensors. */
static struct bwd_in dev_bwd_inputs(struct inst *in, int kind) {
    struct dev_in *dv = dev_of(in);
    struct bwd_in  b  = bwd_inputs(in, kind);
    if (dv->dout == NULL) dv->dout = dev_put(in->dout, dv->nb_q);
    if (dv->out[kind] == NULL) {
        dv->out[kind] = dev_put(b.out.data, dv->nb_q);
        dv->lse[kind] = dev_put(b.lse.data, (size_t)(in->TQ * in->hq) * 4);
    }
    b.out.data = dv->out[kind], b.lse.data = dv->lse[kind], b.dout.data = dv->dout;
    b.sel.data = kind == K_MASKED ? dv->sel_masked : dv->sel;
    return b;
}

/* bc.sel_ready: the ref's selections, uploaded as soon as ensure_sel has them (stage 2 gets them
 * on both sides). */
static void upload_sel(struct inst *in) {
    struct dev_in *dv = dev_of(in);
    size_t         n  = (size_t)(in->hkv * in->TQ * in->K) * 4;
    dv->sel           = dev_put(in->sel, n);
    dv->sel_masked    = dev_put(in->sel_masked, n);
}

/* The device inputs must be what was uploaded. */
static void inst_check_inputs(const struct inst *in) {
    const struct dev_in *dv = dev_of(in);
    size_t         most = dv->nb_q > dv->nb_k ? dv->nb_q : dv->nb_k, nsel = (size_t)(in->hkv * in->TQ * in->K) * 4;
    most                = most > nsel ? most : nsel;
    unsigned char *h    = xmalloc(most);
    dev_get(h, dv->q, dv->nb_q);
    int same = memcmp(h, in->q, dv->nb_q) == 0;
    dev_get(h, dv->k, dv->nb_k);
    same &= memcmp(h, in->k, dv->nb_k) == 0;
    dev_get(h, dv->v, dv->nb_k);
    same &= memcmp(h, in->v, dv->nb_k) == 0;
    TH_CHECK(same, "a device input (q, k or v) was modified");
    if (in->sel && dv->sel) {
        dev_get(h, dv->sel, nsel);
        TH_CHECK(memcmp(h, in->sel, nsel) == 0, "the device input sel was modified");
    }
    free(h);
}

static void dev_inputs_free(struct inst *in) {
    struct dev_in *dv = dev_of(in);
    ifl_buffer_free(cu_ctx, dv->q), ifl_buffer_free(cu_ctx, dv->k), ifl_buffer_free(cu_ctx, dv->v);
    ifl_buffer_free(cu_ctx, dv->fused), ifl_buffer_free(cu_ctx, dv->sel), ifl_buffer_free(cu_ctx, dv->sel_masked);
    ifl_buffer_free(cu_ctx, dv->dout);
    for (int i = 0; i < N_KINDS; i++) ifl_buffer_free(cu_ctx, dv->out[i]), ifl_buffer_free(cu_ctx, dv->lse[i]);
    in->user = NULL;
}

/* ==== running the backend under test ==== */

/* Runs op on ctx c with fresh guarded device outputs, downloads them, checks the status and the
 * guards. Returns 1 when the outputs can be compared. */
static int ut_run(struct ifl_ctx *c, enum op op, struct inst *in, struct outs *o) {
    memset(o, 0, sizeof *o);
    const int masked = op == OP_MASKED_FWD || op == OP_MASKED_BWD;
    if ((op == OP_SPARSE_FWD || op == OP_SPARSE_BWD || masked) && !ensure_sel(in)) return 0;
    struct bwd_in b;
    if (op_is_bwd(op)) {
        if (!ensure_fwd(in, op_kind(op))) return 0;
        b = dev_bwd_inputs(in, op_kind(op));
    }
    outs_make(o, op, in);
    const struct dev_in *dv = dev_of(in);
    struct ifl_tensor    s  = tmake(masked ? dv->sel_masked : dv->sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
    enum ifl_status      st = call_op(c, op, in, o, &s, op_is_bwd(op) ? &b : NULL);
    for (int i = 0; i < o->n; i++) gb_fetch(&o->b[i]);
    for (int i = 0; i < o->n; i++)
        TH_CHECK(gb_untouched_outside(&o->b[i]), "guard bytes or padding around output %d were overwritten", i);
    return TH_CHECK(st == IFL_STATUS_OK, "%s: %s", ifl_status_str(st), ifl_ctx_errmsg(c));
}

/* ==== the op cases ==== */


/* One op on the default context (twice: bitwise repeatable) and on the generic one. */
static void case_op(struct inst *in, enum op op) {
    snprintf(cur_case, sizeof cur_case, "%s(%s)", op_name[op], in->shape);
    if (!th_case("%s", cur_case)) return;
    double      t0 = now_s();
    struct outs o, o2;
    if (ut_run(cu_ctx, op, in, &o)) {
        compare_op(in, op, &o, &gates);
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
    if (ut_run(gen_ctx, op, in, &o)) compare_op(in, op, &o, &gates);
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
    const struct dev_in *dv = dev_of(in);
    const size_t      es = ifl_dtype_size(in->dt), nsel = (size_t)(in->hkv * in->TQ * in->K);
    struct gbuf       ob[2];
    struct ifl_tensor q = tmake(dv->q, in->dt, 3, in->TQ, in->hq, in->d), k = tmake(dv->k, in->dt, 3, in->TK, in->hkv, in->d);
    struct ifl_tensor v = tmake(dv->v, in->dt, 3, in->TK, in->hkv, in->d);
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

    /* the backward: a NaN in dout and a malformed selection are refused, nothing written */
    if (th_case("ERR_BWD(%s)", in->shape) && ensure_fwd(in, K_SPARSE)) {
        struct gbuf g3[3];
        gb_make(&g3[0], in->out_dt, 3, in->TQ, in->hq, in->d, 0);
        gb_make(&g3[1], in->out_dt, 3, in->TK, in->hkv, in->d, 0);
        gb_make(&g3[2], in->out_dt, 3, in->TK, in->hkv, in->d, 0);
        struct bwd_in b  = dev_bwd_inputs(in, K_SPARSE);
        const size_t  nq = (size_t)(in->TQ * in->hq * in->d);
        void         *hb = xmalloc(nq * es);
        memcpy(hb, in->dout, nq * es);
        elem_set(hb, in->dt, (int64_t)nq - 1, NAN);
        void             *db   = dev_put(hb, nq * es);
        struct ifl_tensor bad  = tmake(db, in->dt, 3, in->TQ, in->hq, in->d);
        int32_t          *hs   = xmalloc(nsel * 4);
        memcpy(hs, in->sel, nsel * 4);
        hs[0] = -7; /* sel[0, 0, 0] */
        void             *dsl  = dev_put(hs, nsel * 4);
        struct ifl_tensor tsel = tmake(dsl, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
        char              want[96];
        snprintf(want, sizeof want, "dout[%lld, %lld, %lld] is NaN", (long long)(in->TQ - 1), (long long)(in->hq - 1),
                 (long long)(in->d - 1));
        for (int ci = 0; ci < 2; ci++) {
            enum ifl_status st = ifl_dense_attn_bwd(ctxs[ci], &in->cfg, in->bp, &q, &k, &v, &b.out, &b.lse, &bad, &g3[0].td,
                                                    &g3[1].td, &g3[2].td);
            expect_refused(ctxs[ci], st, IFL_STATUS_INVALID_ARG, want, g3, 3);
            st = ifl_sparse_attn_bwd(ctxs[ci], &in->cfg, in->bp, &q, &k, &v, &tsel, &b.out, &b.lse, &b.dout, &g3[0].td,
                                     &g3[1].td, &g3[2].td);
            expect_refused(ctxs[ci], st, IFL_STATUS_INVALID_ARG, "sel[0, 0, 0]=-7", g3, 3);
        }
        for (int i = 0; i < 3; i++) gb_free(&g3[i]);
        ifl_buffer_free(cu_ctx, db), ifl_buffer_free(cu_ctx, dsl);
        free(hb), free(hs);
    }
    gb_free(&ob[0]);
    gb_free(&ob[1]);
}

/* ---- finite differences (float32): the gradient of L = <dO, out(q, k, v)> (selection fixed) at a
 * few elements of q, k and v against (L(x + h) - L(x - h)) / 2h from two cuda forwards, L summed
 * in double. The central difference errs by O(h^2) (smooth softmax) plus the forwards' f32 rounding
 * over 2h: with h = 1e-2 both stay below about 3e-5 of the gradient's scale on these shapes (seen on
 * the H200), so the gate is 2e-4 max|grad of the tensor| + 1e-3 |grad|. */

static void *dev_alloc(size_t n) {
    void *d = NULL;
    if (ifl_buffer_alloc(cu_ctx, n ? n : 1, &d) != IFL_STATUS_OK) {
        printf("device allocation of %zu bytes failed: %s\n", n, ifl_ctx_errmsg(cu_ctx));
        exit(1);
    }
    return d;
}

struct fd_run {
    struct inst      *in;
    int               sparse;
    struct ifl_tensor q, k, v, sel, out;
    float            *h_out;
};

/* L at the current device inputs (NAN when the forward fails). */
static double fd_loss(struct fd_run *r) {
    struct inst    *in = r->in;
    enum ifl_status st = r->sparse ? ifl_sparse_attn_fwd(cu_ctx, &in->cfg, in->bp, &r->q, &r->k, &r->v, &r->sel, &r->out, NULL)
                                   : ifl_dense_attn_fwd(cu_ctx, &in->cfg, in->bp, &r->q, &r->k, &r->v, &r->out, NULL);
    if (!TH_CHECK(st == IFL_STATUS_OK, "forward: %s: %s", ifl_status_str(st), ifl_ctx_errmsg(cu_ctx))) return NAN;
    const int64_t n = in->TQ * in->hq * in->d;
    dev_get(r->h_out, r->out.data, (size_t)n * 4);
    double L = 0;
    for (int64_t i = 0; i < n; i++) L += (double)r->h_out[i] * elem_get(in->dout, IFL_DTYPE_F32, i);
    return L;
}

static void case_fd(struct inst *in) {
    for (int sparse = 0; sparse < 2; sparse++) {
        if (!th_case("FD_GRAD(%s,%s)", sparse ? "sparse" : "dense", in->shape)) continue;
        if (sparse && !ensure_sel(in)) continue;
        const int64_t nq = in->TQ * in->hq * in->d, nk = in->TK * in->hkv * in->d;
        struct fd_run r;
        memset(&r, 0, sizeof r);
        r.in = in, r.sparse = sparse;
        float        *host[3] = {xmalloc((size_t)nq * 4), xmalloc((size_t)nk * 4), xmalloc((size_t)nk * 4)};
        float        *grad[3] = {xmalloc((size_t)nq * 4), xmalloc((size_t)nk * 4), xmalloc((size_t)nk * 4)};
        const int64_t cnt[3]  = {nq, nk, nk};
        memcpy(host[0], in->q, (size_t)nq * 4), memcpy(host[1], in->k, (size_t)nk * 4), memcpy(host[2], in->v, (size_t)nk * 4);
        r.q   = tmake(dev_put(host[0], (size_t)nq * 4), IFL_DTYPE_F32, 3, in->TQ, in->hq, in->d);
        r.k   = tmake(dev_put(host[1], (size_t)nk * 4), IFL_DTYPE_F32, 3, in->TK, in->hkv, in->d);
        r.v   = tmake(dev_put(host[2], (size_t)nk * 4), IFL_DTYPE_F32, 3, in->TK, in->hkv, in->d);
        r.sel = tmake(dev_of(in)->sel, IFL_DTYPE_I32, 3, in->hkv, in->TQ, in->K);
        r.out = tmake(dev_alloc((size_t)nq * 4), IFL_DTYPE_F32, 3, in->TQ, in->hq, in->d);
        r.h_out = xmalloc((size_t)nq * 4);
        struct ifl_tensor lse  = tmake(dev_alloc((size_t)(in->TQ * in->hq) * 4), IFL_DTYPE_F32, 2, in->TQ, in->hq, 0);
        struct ifl_tensor dout = tmake(dev_put(in->dout, (size_t)nq * 4), IFL_DTYPE_F32, 3, in->TQ, in->hq, in->d);
        struct ifl_tensor g[3] = {tmake(dev_alloc((size_t)nq * 4), IFL_DTYPE_F32, 3, in->TQ, in->hq, in->d),
                                  tmake(dev_alloc((size_t)nk * 4), IFL_DTYPE_F32, 3, in->TK, in->hkv, in->d),
                                  tmake(dev_alloc((size_t)nk * 4), IFL_DTYPE_F32, 3, in->TK, in->hkv, in->d)};
        enum ifl_status st = sparse ? ifl_sparse_attn_fwd(cu_ctx, &in->cfg, in->bp, &r.q, &r.k, &r.v, &r.sel, &r.out, &lse)
                                    : ifl_dense_attn_fwd(cu_ctx, &in->cfg, in->bp, &r.q, &r.k, &r.v, &r.out, &lse);
        if (st == IFL_STATUS_OK)
            st = sparse ? ifl_sparse_attn_bwd(cu_ctx, &in->cfg, in->bp, &r.q, &r.k, &r.v, &r.sel, &r.out, &lse, &dout, &g[0], &g[1], &g[2])
                        : ifl_dense_attn_bwd(cu_ctx, &in->cfg, in->bp, &r.q, &r.k, &r.v, &r.out, &lse, &dout, &g[0], &g[1], &g[2]);
        if (TH_CHECK(st == IFL_STATUS_OK, "%s: %s", ifl_status_str(st), ifl_ctx_errmsg(cu_ctx))) {
            static const char *const names[3] = {"dq", "dk", "dv"};
            const struct ifl_tensor *x[3]     = {&r.q, &r.k, &r.v};
            const double             h        = 1e-2;
            uint64_t                 lcg      = fnv(in->shape, strlen(in->shape)) | 1;
            double                   worst    = 0;
            for (int t = 0; t < 3; t++) {
                dev_get(grad[t], g[t].data, (size_t)cnt[t] * 4);
                double gmax = 0;
                int64_t imax = 0;
                for (int64_t i = 0; i < cnt[t]; i++)
                    if (fabs(grad[t][i]) > gmax) gmax = fabs(grad[t][i]), imax = i;
                for (int e = 0; e < 4; e++) { /* the largest element and three drawn ones */
                    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
                    const int64_t i  = e == 0 ? imax : (int64_t)((lcg >> 33) % (uint64_t)cnt[t]);
                    const float   x0 = host[t][i];
                    host[t][i]       = x0 + (float)h;
                    ifl_buffer_upload(cu_ctx, x[t]->data, host[t], (size_t)cnt[t] * 4);
                    const double lp = fd_loss(&r);
                    host[t][i]      = x0 - (float)h;
                    ifl_buffer_upload(cu_ctx, x[t]->data, host[t], (size_t)cnt[t] * 4);
                    const double lm = fd_loss(&r);
                    host[t][i]      = x0;
                    ifl_buffer_upload(cu_ctx, x[t]->data, host[t], (size_t)cnt[t] * 4);
                    const double fd = (lp - lm) / (((double)(x0 + (float)h) - (double)(x0 - (float)h))), gv = grad[t][i];
                    const double gate = 2e-4 * gmax + 1e-3 * fabs(gv);
                    worst             = fmax(worst, fabs(fd - gv) / gate);
                    TH_CHECK(fabs(fd - gv) <= gate, "%s[%lld]: gradient %.7g, central difference %.7g (gate %.3g, max|%s| %.3g)",
                             names[t], (long long)i, gv, fd, gate, names[t], gmax);
                }
            }
            printf("  worst |fd - grad| / gate %.3f over 12 elements\n", worst);
        }
        for (int t = 0; t < 3; t++) ifl_buffer_free(cu_ctx, g[t].data), free(host[t]), free(grad[t]);
        ifl_buffer_free(cu_ctx, r.q.data), ifl_buffer_free(cu_ctx, r.k.data), ifl_buffer_free(cu_ctx, r.v.data);
        ifl_buffer_free(cu_ctx, r.out.data), ifl_buffer_free(cu_ctx, lse.data), ifl_buffer_free(cu_ctx, dout.data);
        free(r.h_out);
    }
}

static void run_instance(struct inst *in) {
    struct dev_in dv;
    dev_inputs_make(in, &dv);
    for (int op = 0; op < N_OPS; op++) {
        if ((op == OP_MASKED_FWD || op == OP_MASKED_BWD) && !in->sp->masked) continue;
        case_op(in, (enum op)op);
    }
    if (in->sp->errs) case_errors(in);
    if (in->sp->errs && in->dt == IFL_DTYPE_F32) case_fd(in);
    if (th_case("INPUTS_UNCHANGED(%s)", in->shape)) inst_check_inputs(in);
    dev_inputs_free(in);
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
    bc.prog        = "test_cuda";
    bc.label       = "cuda";
    bc.tol         = TOL_PRECISION;
    bc.guard       = 256;
    bc.short_names = 1;
    bc.dev_put     = dev_put;
    bc.dev_free    = dev_free;
    bc.sel_ready   = upload_sel;
    bc.with_dout   = 1;
    bc_init(argc, argv, NULL, NULL);
    double t0 = now_s();

    struct ifl_ctx_params cp = ifl_ctx_params_default();
    cp.backend               = IFL_BACKEND_CUDA;
    enum ifl_status st       = ifl_backend_available(IFL_BACKEND_CUDA) ? ifl_ctx_create(&cp, &cu_ctx) : IFL_STATUS_UNSUPPORTED;
    if (st != IFL_STATUS_OK) {
        int clean = cu_ctx == NULL && (st == IFL_STATUS_DEVICE || st == IFL_STATUS_UNSUPPORTED);
        printf("SKIPPED: no CUDA device (ifl_ctx_create(cuda): %s%s)\n", ifl_status_str(st),
               ifl_backend_available(IFL_BACKEND_CUDA) ? "" : "; this build has no cuda backend");
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
    printf("cuda backend under test (default kernels, and INFLLM_CUDA_GENERIC=1); sweep %s\n", bc.full ? "full" : "quick");
    test_context();

    static const enum ifl_dtype dts[4] = {IFL_DTYPE_BF16, IFL_DTYPE_F16, IFL_DTYPE_F32, IFL_DTYPE_F64};
    run_sweep(specs, sizeof specs / sizeof specs[0], dts, 4, run_instance);

    print_table();
    printf("runtime %.1f s\n", now_s() - t0);
    ifl_ctx_destroy(gen_ctx);
    ifl_ctx_destroy(cu_ctx);
    ifl_ctx_destroy(ref_ctx);
    return th_report();
}
