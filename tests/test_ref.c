/* SPDX-License-Identifier: MIT
 *
 * test_ref.c -- the float64 reference against hand-computed cases, identities the spec implies,
 * and float64 finite differences (house-style 2.8 (a)). Every case is named and seeded.
 *
 * Sections: helpers / hand-computed cases / identities / gradients / dtypes and views.
 */
#include "harness.h"
#include "infllm.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== helpers ==== */

static struct ifl_ctx *ctx;

static struct ifl_tensor t3(void *x, enum ifl_dtype dt, int64_t a, int64_t b, int64_t c) {
    return ifl_tensor_make(x, dt, 3, (const int64_t[3]){a, b, c});
}
static struct ifl_tensor t2(void *x, int64_t a, int64_t b) {
    return ifl_tensor_make(x, IFL_DTYPE_F64, 2, (const int64_t[2]){a, b});
}

static double *alloc_d(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }
static int32_t *alloc_i(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(int32_t)); }

/* One attention problem held in float64: q [tq, hq, d], k and v [tk, hkv, d]. */
struct prob {
    int64_t tq, tk, hq, hkv, d;
    double *q, *k, *v;
    struct ifl_sparse_config cfg;
};

static struct prob prob_random(int64_t tq, int64_t tk, int64_t hq, int64_t hkv, int64_t d,
                               struct ifl_sparse_config cfg) {
    struct prob p = {tq, tk, hq, hkv, d, alloc_d(tq * hq * d), alloc_d(tk * hkv * d), alloc_d(tk * hkv * d), cfg};
    th_fill_normal(p.q, tq * hq * d, 1.0);
    th_fill_normal(p.k, tk * hkv * d, 1.0);
    th_fill_normal(p.v, tk * hkv * d, 1.0);
    return p;
}

static void prob_free(struct prob *p) {
    free(p->q);
    free(p->k);
    free(p->v);
}

/* Rows [r0, r0+n) of q with keys [0, r0+n): the chunk a prefill in pieces would run. */
static struct prob prob_chunk(const struct prob *p, int64_t r0, int64_t n) {
    struct prob c = *p;
    c.q           = p->q + (p->tk - p->tq + r0) * 0 + r0 * p->hq * p->d;
    c.tq          = n;
    c.tk          = p->tk - p->tq + r0 + n;
    return c;
}

static int64_t width_of(const struct prob *p) { return ifl_select_width(&p->cfg, p->tk); }

static enum ifl_status do_select(const struct prob *p, int32_t *sel, int64_t width) {
    struct ifl_tensor q = t3(p->q, IFL_DTYPE_F64, p->tq, p->hq, p->d), k = t3(p->k, IFL_DTYPE_F64, p->tk, p->hkv, p->d);
    struct ifl_tensor s = t3(sel, IFL_DTYPE_I32, p->hkv, p->tq, width);
    return ifl_select(ctx, &p->cfg, NULL, &q, &k, &s);
}

/* sel == NULL: dense. */
static enum ifl_status do_fwd(const struct prob *p, const int32_t *sel, int64_t width, double *out, double *lse) {
    struct ifl_tensor q = t3(p->q, IFL_DTYPE_F64, p->tq, p->hq, p->d), k = t3(p->k, IFL_DTYPE_F64, p->tk, p->hkv, p->d);
    struct ifl_tensor v = t3(p->v, IFL_DTYPE_F64, p->tk, p->hkv, p->d), o = t3(out, IFL_DTYPE_F64, p->tq, p->hq, p->d);
    struct ifl_tensor l = t2(lse, p->tq, p->hq), s = t3((void *)sel, IFL_DTYPE_I32, p->hkv, p->tq, width);
    return sel ? ifl_sparse_attn_fwd(ctx, &p->cfg, NULL, &q, &k, &v, &s, &o, &l)
               : ifl_dense_attn_fwd(ctx, &p->cfg, NULL, &q, &k, &v, &o, &l);
}

static enum ifl_status do_bwd(const struct prob *p, const int32_t *sel, int64_t width, const double *out,
                              const double *lse, const double *dout, double *dq, double *dk, double *dv) {
    struct ifl_tensor q = t3(p->q, IFL_DTYPE_F64, p->tq, p->hq, p->d), k = t3(p->k, IFL_DTYPE_F64, p->tk, p->hkv, p->d);
    struct ifl_tensor v = t3(p->v, IFL_DTYPE_F64, p->tk, p->hkv, p->d);
    struct ifl_tensor o = t3((void *)out, IFL_DTYPE_F64, p->tq, p->hq, p->d), l = t2((void *)lse, p->tq, p->hq);
    struct ifl_tensor g = t3((void *)dout, IFL_DTYPE_F64, p->tq, p->hq, p->d);
    struct ifl_tensor gq = t3(dq, IFL_DTYPE_F64, p->tq, p->hq, p->d), gk = t3(dk, IFL_DTYPE_F64, p->tk, p->hkv, p->d);
    struct ifl_tensor gv = t3(dv, IFL_DTYPE_F64, p->tk, p->hkv, p->d), s = t3((void *)sel, IFL_DTYPE_I32, p->hkv, p->tq, width);
    return sel ? ifl_sparse_attn_bwd(ctx, &p->cfg, NULL, &q, &k, &v, &s, &o, &l, &g, &gq, &gk, &gv)
               : ifl_dense_attn_bwd(ctx, &p->cfg, NULL, &q, &k, &v, &o, &l, &g, &gq, &gk, &gv);
}

static int ok(enum ifl_status st) {
    return TH_CHECK(st == IFL_STATUS_OK, "status %s: %s", ifl_status_str(st), ifl_ctx_errmsg(ctx));
}

/* A small config whose blocks, kernels and window all matter at a few hundred tokens. */
static struct ifl_sparse_config small_cfg(void) {
    struct ifl_sparse_config c = ifl_sparse_config_default();
    c.block_size = 16, c.kernel_size = 8, c.kernel_stride = 4;
    c.coarse_kernel_size = 32, c.coarse_kernel_stride = 16;
    c.init_blocks = 1, c.window_size = 32, c.topk = 4, c.dense_len = -1;
    return c;
}

/* ==== hand-computed cases ==== */

static void test_hand_dense(void) {
    if (!th_case("HAND_DENSE(Tq=2,Tk=2,H=1,D=1,scale=1)")) return;
    double q[2] = {1, 2}, k[2] = {1, -1}, v[2] = {3, 5}, out[2], lse[2];
    struct prob p = {2, 2, 1, 1, 1, q, k, v, ifl_sparse_config_default()};
    p.cfg.scale = 1.0;
    if (!ok(do_fwd(&p, NULL, 0, out, lse))) return;
    double e2 = exp(2.0), em2 = exp(-2.0);
    TH_CHECK(fabs(out[0] - 3) < 1e-15 && fabs(lse[0] - 1) < 1e-15, "row 0: out %g lse %g", out[0], lse[0]);
    TH_CHECK(fabs(out[1] - (3 * e2 + 5 * em2) / (e2 + em2)) < 1e-14, "row 1 out %.17g", out[1]);
    TH_CHECK(fabs(lse[1] - log(e2 + em2)) < 1e-14, "row 1 lse %.17g", lse[1]);
}

static void test_hand_compress(void) {
    if (!th_case("HAND_COMPRESS(L=10000 counts; L=11 values, kernel 4/2, coarse 8/4)")) return;
    TH_CHECK(ifl_compressed_len(10000, 32, 16) == 624, "N1 %lld", (long long)ifl_compressed_len(10000, 32, 16));
    TH_CHECK(ifl_compressed_len(10000, 128, 64) == 155, "N2 %lld", (long long)ifl_compressed_len(10000, 128, 64));
    TH_CHECK(ifl_compressed_len(31, 32, 16) == 0 && ifl_compressed_len(32, 32, 16) == 1 &&
                 ifl_compressed_len(47, 32, 16) == 1 && ifl_compressed_len(48, 32, 16) == 2,
             "counts at the first windows");
    struct ifl_sparse_config c = ifl_sparse_config_default();
    TH_CHECK(ifl_select_width(&c, 10000) == 96 && ifl_select_width(&c, 6000) == 94 && ifl_select_width(&c, 1) == 1,
             "selection widths");
    c.kernel_size = 4, c.kernel_stride = 2, c.coarse_kernel_size = 8, c.coarse_kernel_stride = 4, c.block_size = 4;
    double k[11 * 2], c1[4 * 2], c2[1 * 2];
    for (int t = 0; t < 11; t++) k[2 * t] = t, k[2 * t + 1] = -2.0 * t; /* [11, Hkv=1, D=2] */
    struct ifl_tensor tk = t3(k, IFL_DTYPE_F64, 11, 1, 2), tc1 = t3(c1, IFL_DTYPE_F64, 4, 1, 2), tc2 = t3(c2, IFL_DTYPE_F64, 1, 1, 2);
    if (!ok(ifl_compress_keys(ctx, &c, NULL, &tk, &tc1, &tc2))) return;
    for (int j = 0; j < 4; j++) /* mean of 2j .. 2j+3 */
        TH_CHECK(c1[2 * j] == 2 * j + 1.5 && c1[2 * j + 1] == -2 * (2 * j + 1.5), "c1[%d] = %g", j, c1[2 * j]);
    TH_CHECK(c2[0] == 3.5 && c2[1] == -7.0, "c2[0] = %g", c2[0]);
}

/* BS 4, kernel 4/4 (one key per block), no window, topk 3: a row holds block 0, its own block
 * and one dynamic block. */
static void test_hand_select(void) {
    struct ifl_sparse_config c = ifl_sparse_config_default();
    c.block_size = 4, c.kernel_size = 4, c.kernel_stride = 4, c.coarse_kernel_size = 8, c.coarse_kernel_stride = 4;
    c.init_blocks = 1, c.window_size = 0, c.topk = 3, c.dense_len = -1, c.scale = 1.0;
    double  q[24], k[24], v[24];
    int32_t sel[24 * 3];
    for (int t = 0; t < 24; t++) q[t] = 1.0, k[t] = 0.0, v[t] = 0.0;
    if (th_case("HAND_SELECT(one strong block)")) {
        for (int t = 8; t < 12; t++) k[t] = 3.0; /* block 2 */
        struct prob p = {1, 24, 1, 1, 1, q, k, v, c};
        if (ok(do_select(&p, sel, 3)))
            TH_CHECK(sel[0] == 0 && sel[1] == 2 && sel[2] == 5, "sel %d %d %d, expected 0 2 5", sel[0], sel[1], sel[2]);
        for (int t = 8; t < 12; t++) k[t] = 0.0;
    }
    if (th_case("HAND_SELECT(ties go to the smaller block)")) {
        struct prob p = {1, 24, 1, 1, 1, q, k, v, c};
        if (ok(do_select(&p, sel, 3)))
            TH_CHECK(sel[0] == 0 && sel[1] == 1 && sel[2] == 5, "sel %d %d %d, expected 0 1 5", sel[0], sel[1], sel[2]);
    }
    if (th_case("HAND_SELECT(a key window ending after p is invisible)")) {
        /* kernel 8/4 over blocks of 4: key j covers [4j, 4j+7]. Tokens 12..15 (block 3) are
         * strong, so key 2 = [8, 15] scores high and, were it visible at p = 14, would lift block
         * 2; it ends at 15 > 14, so row 14 sees only the flat keys 0 and 1 and the dynamic pick
         * ties between blocks 1 and 2: block 1. At p = 15 key 2 is visible: block 2. */
        struct ifl_sparse_config c8 = c;
        c8.kernel_size = 8, c8.coarse_kernel_size = 16, c8.coarse_kernel_stride = 8;
        for (int t = 12; t < 16; t++) k[t] = 3.0;
        struct prob p = {16, 16, 1, 1, 1, q, k, v, c8};
        if (ok(do_select(&p, sel, 3))) {
            const int32_t *r = sel + 14 * 3;
            TH_CHECK(r[0] == 0 && r[1] == 1 && r[2] == 3, "row 14: %d %d %d, expected 0 1 3", r[0], r[1], r[2]);
            r = sel + 15 * 3;
            TH_CHECK(r[0] == 0 && r[1] == 2 && r[2] == 3, "row 15: %d %d %d, expected 0 2 3", r[0], r[1], r[2]);
        }
        for (int t = 12; t < 16; t++) k[t] = 0.0;
    }
    if (th_case("HAND_SELECT(future blocks dropped, -1 padded)")) {
        /* full prefill: the row of position 5 (block 1) sees no complete key window but its own
         * block is forced; the third pick is a not-yet-visible block (score 0), dropped */
        struct prob p = {24, 24, 1, 1, 1, q, k, v, c};
        if (ok(do_select(&p, sel, 3))) {
            const int32_t *r = sel + 5 * 3;
            TH_CHECK(r[0] == 0 && r[1] == 1 && r[2] == -1, "row 5: %d %d %d, expected 0 1 -1", r[0], r[1], r[2]);
            r = sel + 0;
            TH_CHECK(r[0] == 0 && r[1] == -1 && r[2] == -1, "row 0: %d %d %d, expected 0 -1 -1", r[0], r[1], r[2]);
        }
    }
}

/* The spec's worked example: L = 10000, last position 9999 -> forced {0} U {124..156}, 96 blocks. */
static void test_worked_example(void) {
    if (!th_case("WORKED_EXAMPLE(L=10000,default config,Hq=2,Hkv=1,D=8)")) return;
    struct prob p = prob_random(1, 10000, 2, 1, 8, ifl_sparse_config_default());
    int32_t     sel[96];
    if (ok(do_select(&p, sel, 96))) {
        int has[157] = {0}, valid = 1;
        for (int i = 0; i < 96; i++) {
            valid &= sel[i] >= 0 && sel[i] <= 156 && (i == 0 || sel[i] > sel[i - 1]);
            if (sel[i] >= 0 && sel[i] <= 156) has[sel[i]] = 1;
        }
        TH_CHECK(valid, "96 ascending blocks in 0..156");
        int forced = has[0];
        for (int b = 124; b <= 156; b++) forced &= has[b];
        TH_CHECK(forced, "forced blocks {0} U {124..156} present");
    }
    prob_free(&p);
}

/* ==== identities ==== */

/* Every block selected -> sparse equals dense (up to summation order). */
static void test_all_blocks_equals_dense(void) {
    const int64_t shapes[][5] = {{37, 37, 4, 2, 8}, {5, 70, 3, 1, 16}, {64, 64, 2, 2, 5}};
    for (size_t s = 0; s < 3; s++) {
        const int64_t *sh = shapes[s];
        if (!th_case("SPARSE_ALL_BLOCKS==DENSE(Tq=%lld,Tk=%lld,Hq=%lld,Hkv=%lld,D=%lld,bs=16)", (long long)sh[0],
                     (long long)sh[1], (long long)sh[2], (long long)sh[3], (long long)sh[4]))
            continue;
        struct prob p = prob_random(sh[0], sh[1], sh[2], sh[3], sh[4], small_cfg());
        int64_t nb = (p.tk + 15) / 16, n = p.tq * p.hq * p.d;
        int32_t *sel = alloc_i(p.hkv * p.tq * nb);
        for (int64_t i = 0; i < p.hkv * p.tq; i++)
            for (int64_t b = 0; b < nb; b++) sel[i * nb + b] = (int32_t)b;
        double *o1 = alloc_d(n), *o2 = alloc_d(n), *l1 = alloc_d(p.tq * p.hq), *l2 = alloc_d(p.tq * p.hq);
        if (ok(do_fwd(&p, sel, nb, o1, l1)) && ok(do_fwd(&p, NULL, 0, o2, l2))) {
            TH_CHECK(th_max_abs_diff(o1, o2, n) <= 1e-12 * th_max_abs(o2, n), "out differs by %g", th_max_abs_diff(o1, o2, n));
            TH_CHECK(th_max_abs_diff(l1, l2, p.tq * p.hq) <= 1e-12, "lse differs by %g", th_max_abs_diff(l1, l2, p.tq * p.hq));
        }
        free(sel), free(o1), free(o2), free(l1), free(l2);
        prob_free(&p);
    }
}

/* topk >= blocks -> every row selects exactly blocks 0..qb. */
static void test_topk_covers_all(void) {
    if (!th_case("SELECT_TOPK>=NB(Tq=Tk=90,bs=16,topk=8)")) return;
    struct ifl_sparse_config c = small_cfg();
    c.topk                     = 8;
    struct prob p              = prob_random(90, 90, 4, 2, 8, c);
    int64_t     w              = width_of(&p);
    int32_t    *sel            = alloc_i(p.hkv * p.tq * w);
    if (ok(do_select(&p, sel, w))) {
        int good = 1;
        for (int64_t g = 0; g < p.hkv; g++)
            for (int64_t i = 0; i < p.tq; i++)
                for (int64_t col = 0; col < w; col++)
                    good &= sel[(g * p.tq + i) * w + col] == (col <= i / 16 ? col : -1);
        TH_CHECK(good && w == 6, "rows are not 0..qb then -1 (width %lld)", (long long)w);
    }
    free(sel);
    prob_free(&p);
}

/* Rows before (topk + window/bs) * bs see all their past blocks: the switchable forward in
 * always-sparse mode equals dense there. Also checks that every row holds its forced blocks. */
static void test_early_rows_dense_and_forced(void) {
    const int64_t G[] = {1, 3, 4};
    for (int gi = 0; gi < 3; gi++) {
        struct ifl_sparse_config c = small_cfg();
        c.lse_mode = gi == 1 ? IFL_LSE_EXACT : IFL_LSE_APPROX;
        c.init_blocks = gi == 2 ? 2 : 1;
        c.topk = gi == 2 ? 3 : 4;
        if (!th_case("EARLY_ROWS==DENSE+FORCED(Tq=Tk=300,G=%lld,bs=16,init=%d,topk=%d,lse=%s)", (long long)G[gi],
                     c.init_blocks, c.topk, gi == 1 ? "exact" : "approx"))
            continue;
        struct prob p = prob_random(300, 300, 2 * G[gi], 2, 8, c);
        int64_t w = width_of(&p), n = p.tq * p.hq * p.d, limit = (c.topk + c.window_size / 16) * 16;
        int32_t *sel = alloc_i(p.hkv * p.tq * w);
        double *o1 = alloc_d(n), *o2 = alloc_d(n), *l1 = alloc_d(p.tq * p.hq), *l2 = alloc_d(p.tq * p.hq);
        struct ifl_tensor q = t3(p.q, IFL_DTYPE_F64, p.tq, p.hq, p.d), k = t3(p.k, IFL_DTYPE_F64, p.tk, p.hkv, p.d);
        struct ifl_tensor v = t3(p.v, IFL_DTYPE_F64, p.tk, p.hkv, p.d), o = t3(o1, IFL_DTYPE_F64, p.tq, p.hq, p.d);
        struct ifl_tensor l = t2(l1, p.tq, p.hq), s = t3(sel, IFL_DTYPE_I32, p.hkv, p.tq, w);
        enum ifl_mode mode = IFL_MODE_DENSE;
        if (ok(ifl_infllmv2_fwd(ctx, &c, NULL, &q, &k, &v, &o, &l, &s, &mode)) && ok(do_fwd(&p, NULL, 0, o2, l2))) {
            TH_CHECK(mode == IFL_MODE_SPARSE, "dense_len -1 must run sparse");
            int64_t early = limit * p.hq * p.d;
            TH_CHECK(th_max_abs_diff(o1, o2, early) <= 1e-12, "rows < %lld differ from dense by %g", (long long)limit,
                     th_max_abs_diff(o1, o2, early));
            TH_CHECK(th_max_abs_diff(o1 + early, o2 + early, n - early) > 1e-6, "later rows should differ from dense");
            int forced_ok = 1;
            for (int64_t g = 0; g < p.hkv; g++)
                for (int64_t i = 0; i < p.tq; i++) {
                    const int32_t *r = sel + (g * p.tq + i) * w;
                    int64_t qb = i / 16;
                    for (int64_t b = 0; b <= qb; b++) {
                        if (!(b < c.init_blocks || b >= qb - c.window_size / 16)) continue;
                        int found = 0;
                        for (int64_t col = 0; col < w; col++) found |= r[col] == b;
                        forced_ok &= found;
                    }
                }
            TH_CHECK(forced_ok, "a row misses one of its forced blocks");
        }
        free(sel), free(o1), free(o2), free(l1), free(l2);
        prob_free(&p);
    }
}

/* Chunked prefill and token-by-token decode (via past) give exactly the rows of a full prefill:
 * same selections, same outputs (bitwise: the reference computes each row on its own). */
static void test_chunks_equal_prefill(void) {
    if (!th_case("CHUNKS==PREFILL(Tq=Tk=203,Hq=6,Hkv=2,D=8,chunks random,decode last 9)")) return;
    struct prob p = prob_random(203, 203, 6, 2, 8, small_cfg());
    int64_t w = width_of(&p), n = p.tq * p.hq * p.d;
    int32_t *sel = alloc_i(p.hkv * p.tq * w), *csel = alloc_i(p.hkv * p.tq * w);
    double *o = alloc_d(n), *l = alloc_d(p.tq * p.hq), *co = alloc_d(n), *cl = alloc_d(p.tq * p.hq);
    if (ok(do_select(&p, sel, w)) && ok(do_fwd(&p, sel, w, o, l))) {
        int same_sel = 1;
        for (int64_t r0 = 0, len; r0 < p.tq; r0 += len) {
            len = r0 >= p.tq - 9 ? 1 : th_int(1, 40); /* decode the last 9 tokens one by one */
            if (r0 + len > p.tq) len = p.tq - r0;
            struct prob c = prob_chunk(&p, r0, len);
            int64_t cw = width_of(&c);
            if (!ok(do_select(&c, csel, cw)) || !ok(do_fwd(&c, csel, cw, co + r0 * p.hq * p.d, cl + r0 * p.hq))) break;
            for (int64_t g = 0; g < p.hkv; g++)
                for (int64_t i = 0; i < len; i++)
                    for (int64_t col = 0; col < w; col++) {
                        int32_t want = sel[(g * p.tq + r0 + i) * w + col];
                        int32_t got  = col < cw ? csel[(g * len + i) * cw + col] : -1;
                        same_sel &= want == got;
                    }
        }
        TH_CHECK(same_sel, "chunked selections differ from the full prefill's");
        TH_CHECK(memcmp(o, co, (size_t)n * sizeof *o) == 0, "chunked outputs differ by %g", th_max_abs_diff(o, co, n));
        TH_CHECK(memcmp(l, cl, (size_t)(p.tq * p.hq) * sizeof *l) == 0, "chunked lse differ");
    }
    free(sel), free(csel), free(o), free(l), free(co), free(cl);
    prob_free(&p);
}

/* Changing keys and values after position p changes no row <= p (selection and attention). */
static void test_causality(void) {
    if (!th_case("CAUSALITY(Tq=Tk=400,p=350,bs=16,window=16,topk=4)")) return;
    struct ifl_sparse_config c = small_cfg();
    c.window_size = 16; /* forced: block 0, qb-1, qb; two dynamic picks among many */
    struct prob p = prob_random(400, 400, 4, 2, 8, c);
    const int64_t pos = 350, w = width_of(&p), n = p.tq * p.hq * p.d;
    int32_t *s1 = alloc_i(p.hkv * p.tq * w), *s2 = alloc_i(p.hkv * p.tq * w);
    double *o1 = alloc_d(n), *o2 = alloc_d(n), *l1 = alloc_d(p.tq * p.hq), *l2 = alloc_d(p.tq * p.hq);
    if (ok(do_select(&p, s1, w)) && ok(do_fwd(&p, s1, w, o1, l1))) {
        for (int64_t i = (pos + 1) * p.hkv * p.d; i < p.tk * p.hkv * p.d; i++) p.k[i] += 5 * th_normal(), p.v[i] -= 3;
        if (ok(do_select(&p, s2, w)) && ok(do_fwd(&p, s2, w, o2, l2))) {
            int same = 1;
            for (int64_t g = 0; g < p.hkv; g++)
                same &= memcmp(s1 + g * p.tq * w, s2 + g * p.tq * w, (size_t)((pos + 1) * w) * sizeof *s1) == 0;
            TH_CHECK(same, "selection of rows <= %lld changed", (long long)pos);
            TH_CHECK(memcmp(o1, o2, (size_t)((pos + 1) * p.hq * p.d) * sizeof *o1) == 0, "outputs of rows <= p changed");
            TH_CHECK(th_max_abs_diff(o1, o2, n) > 0, "later rows should change");
        }
    }
    free(s1), free(s2), free(o1), free(o2), free(l1), free(l2);
    prob_free(&p);
}

/* With one query head per KV head the normaliser only rescales a row: exact and approximated
 * LSE select the same blocks. */
static void test_lse_modes_agree_for_g1(void) {
    if (!th_case("LSE_APPROX==EXACT_FOR_G1(Tq=Tk=250,Hq=Hkv=3)")) return;
    struct prob p = prob_random(250, 250, 3, 3, 8, small_cfg());
    int64_t w = width_of(&p);
    int32_t *s1 = alloc_i(p.hkv * p.tq * w), *s2 = alloc_i(p.hkv * p.tq * w);
    if (ok(do_select(&p, s1, w))) {
        p.cfg.lse_mode = IFL_LSE_EXACT;
        if (ok(do_select(&p, s2, w)))
            TH_CHECK(memcmp(s1, s2, (size_t)(p.hkv * p.tq * w) * sizeof *s1) == 0, "selections differ");
    }
    free(s1), free(s2);
    prob_free(&p);
}

/* Stage 2 with a fixed selection: G heads sharing a KV head equal G single-head calls. */
static void test_gqa_heads_independent(void) {
    if (!th_case("GQA_HEADS==SINGLE_HEAD_CALLS(Tq=Tk=120,G=4)")) return;
    struct prob p = prob_random(120, 120, 4, 1, 8, small_cfg());
    int64_t w = width_of(&p), n = p.tq * p.hq * p.d;
    int32_t *sel = alloc_i(p.tq * w);
    double *o = alloc_d(n), *l = alloc_d(p.tq * p.hq), *oh = alloc_d(p.tq * p.d), *lh = alloc_d(p.tq);
    double *qh = alloc_d(p.tq * p.d);
    if (ok(do_select(&p, sel, w)) && ok(do_fwd(&p, sel, w, o, l))) {
        double worst = 0;
        for (int64_t h = 0; h < p.hq; h++) {
            for (int64_t t = 0; t < p.tq; t++) memcpy(qh + t * p.d, p.q + (t * p.hq + h) * p.d, (size_t)p.d * sizeof *qh);
            struct prob one = p;
            one.q = qh, one.hq = 1;
            if (!ok(do_fwd(&one, sel, w, oh, lh))) break;
            for (int64_t t = 0; t < p.tq; t++)
                for (int64_t x = 0; x < p.d; x++) worst = fmax(worst, fabs(oh[t * p.d + x] - o[(t * p.hq + h) * p.d + x]));
        }
        TH_CHECK(worst == 0, "head-by-head outputs differ by %g", worst);
    }
    free(sel), free(o), free(l), free(oh), free(lh), free(qh);
    prob_free(&p);
}

/* A packed batch of sequences of different lengths equals separate calls, for every op. */
static void test_batch_equals_separate(void) {
    if (!th_case("BATCH==SEPARATE(3 seqs: Tq 7/40/1, past 0/100/260)")) return;
    struct ifl_sparse_config c = small_cfg();
    const int32_t cuq[4] = {0, 7, 47, 48}, cuk[4] = {0, 7, 147, 408};
    struct prob all = prob_random(48, 408, 4, 2, 8, c);
    struct ifl_batch batch = {3, cuq, cuk};
    int64_t w = ifl_select_width(&c, 261), n = all.tq * all.hq * all.d;
    int32_t *sel = alloc_i(all.hkv * all.tq * w), *s1 = alloc_i(all.hkv * all.tq * w);
    double *o = alloc_d(n), *l = alloc_d(all.tq * all.hq), *o1 = alloc_d(n), *l1 = alloc_d(all.tq * all.hq);
    double *dout = alloc_d(n), *dq = alloc_d(n), *dk = alloc_d(all.tk * all.hkv * all.d), *dv = alloc_d(all.tk * all.hkv * all.d);
    double *dq1 = alloc_d(n), *dk1 = alloc_d(all.tk * all.hkv * all.d), *dv1 = alloc_d(all.tk * all.hkv * all.d);
    th_fill_normal(dout, n, 1.0);
    struct ifl_tensor q = t3(all.q, IFL_DTYPE_F64, all.tq, all.hq, all.d), k = t3(all.k, IFL_DTYPE_F64, all.tk, all.hkv, all.d);
    struct ifl_tensor v = t3(all.v, IFL_DTYPE_F64, all.tk, all.hkv, all.d), to = t3(o, IFL_DTYPE_F64, all.tq, all.hq, all.d);
    struct ifl_tensor tl = t2(l, all.tq, all.hq), ts = t3(sel, IFL_DTYPE_I32, all.hkv, all.tq, w);
    struct ifl_tensor tdo = t3(dout, IFL_DTYPE_F64, all.tq, all.hq, all.d), tdq = t3(dq, IFL_DTYPE_F64, all.tq, all.hq, all.d);
    struct ifl_tensor tdk = t3(dk, IFL_DTYPE_F64, all.tk, all.hkv, all.d), tdv = t3(dv, IFL_DTYPE_F64, all.tk, all.hkv, all.d);
    if (!ok(ifl_select(ctx, &c, &batch, &q, &k, &ts)) || !ok(ifl_sparse_attn_fwd(ctx, &c, &batch, &q, &k, &v, &ts, &to, &tl)) ||
        !ok(ifl_sparse_attn_bwd(ctx, &c, &batch, &q, &k, &v, &ts, &to, &tl, &tdo, &tdq, &tdk, &tdv)))
        goto out;
    int same_sel = 1;
    for (int s = 0; s < 3; s++) {
        struct prob one = all;
        one.tq = cuq[s + 1] - cuq[s], one.tk = cuk[s + 1] - cuk[s];
        one.q = all.q + cuq[s] * all.hq * all.d, one.k = all.k + cuk[s] * all.hkv * all.d, one.v = all.v + cuk[s] * all.hkv * all.d;
        int64_t w1 = width_of(&one), qo = cuq[s] * all.hq * all.d, ko = cuk[s] * all.hkv * all.d;
        if (!ok(do_select(&one, s1, w1)) || !ok(do_fwd(&one, s1, w1, o1 + qo, l1 + cuq[s] * all.hq)) ||
            !ok(do_bwd(&one, s1, w1, o1 + qo, l1 + cuq[s] * all.hq, dout + qo, dq1 + qo, dk1 + ko, dv1 + ko)))
            goto out;
        for (int64_t g = 0; g < all.hkv; g++)
            for (int64_t i = 0; i < one.tq; i++)
                for (int64_t col = 0; col < w; col++)
                    same_sel &= sel[(g * all.tq + cuq[s] + i) * w + col] == (col < w1 ? s1[(g * one.tq + i) * w1 + col] : -1);
    }
    TH_CHECK(same_sel, "batched selection differs");
    TH_CHECK(memcmp(o, o1, (size_t)n * sizeof *o) == 0, "batched output differs");
    TH_CHECK(memcmp(dq, dq1, (size_t)n * sizeof *o) == 0, "batched dq differs");
    TH_CHECK(memcmp(dk, dk1, (size_t)(all.tk * all.hkv * all.d) * sizeof *o) == 0, "batched dk differs");
    TH_CHECK(memcmp(dv, dv1, (size_t)(all.tk * all.hkv * all.d) * sizeof *o) == 0, "batched dv differs");
out:
    free(sel), free(s1), free(o), free(l), free(o1), free(l1), free(dout), free(dq), free(dk), free(dv);
    free(dq1), free(dk1), free(dv1);
    prob_free(&all);
}

/* The switch: a batch with one short and one long sequence runs one dense and one sparse. */
static void test_switch(void) {
    if (!th_case("SWITCH(dense_len=100: Tk 60 dense, Tk 180 sparse)")) return;
    struct ifl_sparse_config c = small_cfg();
    c.dense_len = 100;
    const int32_t cuq[3] = {0, 10, 30}, cuk[3] = {0, 60, 240};
    struct prob all = prob_random(30, 240, 2, 1, 8, c);
    struct ifl_batch batch = {2, cuq, cuk};
    int64_t w = ifl_select_width(&c, 180), n = all.tq * all.hq * all.d;
    int32_t *sel = alloc_i(all.tq * w), *s1 = alloc_i(all.tq * w);
    double *o = alloc_d(n), *o1 = alloc_d(n), *l = alloc_d(all.tq * all.hq), *l1 = alloc_d(all.tq * all.hq);
    struct ifl_tensor q = t3(all.q, IFL_DTYPE_F64, 30, 2, 8), k = t3(all.k, IFL_DTYPE_F64, 240, 1, 8), v = t3(all.v, IFL_DTYPE_F64, 240, 1, 8);
    struct ifl_tensor to = t3(o, IFL_DTYPE_F64, 30, 2, 8), ts = t3(sel, IFL_DTYPE_I32, 1, 30, w);
    enum ifl_mode modes[2];
    if (ok(ifl_infllmv2_fwd(ctx, &c, &batch, &q, &k, &v, &to, NULL, &ts, modes))) {
        TH_CHECK(modes[0] == IFL_MODE_DENSE && modes[1] == IFL_MODE_SPARSE, "modes %d %d", modes[0], modes[1]);
        struct prob a = all, b = all;
        a.tq = 10, a.tk = 60;
        b.tq = 20, b.tk = 180, b.q = all.q + 10 * 2 * 8, b.k = all.k + 60 * 8, b.v = all.v + 60 * 8;
        int64_t wb = width_of(&b);
        if (ok(do_fwd(&a, NULL, 0, o1, l1)) && ok(do_select(&b, s1, wb)) && ok(do_fwd(&b, s1, wb, o1 + 10 * 16, l1 + 20))) {
            TH_CHECK(memcmp(o, o1, (size_t)n * sizeof *o) == 0, "switched outputs differ");
            int rows_ok = 1;
            for (int64_t i = 0; i < 30; i++)
                for (int64_t col = 0; col < w; col++)
                    rows_ok &= sel[i * w + col] == (i < 10 ? -1 : (col < wb ? s1[(i - 10) * wb + col] : -1));
            TH_CHECK(rows_ok, "selection rows: dense rows must be -1, sparse rows the selection");
        }
    }
    free(sel), free(s1), free(o), free(o1), free(l), free(l1);
    prob_free(&all);
}

/* ==== gradients: central finite differences in float64 ==== */

static void test_grad_fd(int sparse) {
    if (!th_case("%s_BWD_FD(Tq=Tk=70,Hq=4,Hkv=2,D=6,bs=16)", sparse ? "SPARSE" : "DENSE")) return;
    struct ifl_sparse_config c = small_cfg();
    c.topk = 2, c.window_size = 16; /* few blocks per row so the selection matters */
    struct prob p = prob_random(70, 70, 4, 2, 6, c);
    int64_t w = width_of(&p), nq = p.tq * p.hq * p.d, nk = p.tk * p.hkv * p.d;
    int32_t *sel = alloc_i(p.hkv * p.tq * w);
    double *o = alloc_d(nq), *l = alloc_d(p.tq * p.hq), *dout = alloc_d(nq), *dq = alloc_d(nq), *dk = alloc_d(nk), *dv = alloc_d(nk);
    double *o2 = alloc_d(nq), *l2 = alloc_d(p.tq * p.hq);
    th_fill_normal(dout, nq, 1.0);
    const int32_t *s = sparse ? sel : NULL;
    if (sparse && !ok(do_select(&p, sel, w))) goto out;
    if (!ok(do_fwd(&p, s, w, o, l)) || !ok(do_bwd(&p, s, w, o, l, dout, dq, dk, dv))) goto out;
    /* loss = sum(dout * out); perturb 40 random entries of each of q, k, v */
    double *params[3] = {p.q, p.k, p.v}, *grads[3] = {dq, dk, dv};
    int64_t sizes[3] = {nq, nk, nk};
    double worst = 0, gmax = fmax(th_max_abs(dq, nq), fmax(th_max_abs(dk, nk), th_max_abs(dv, nk)));
    for (int a = 0; a < 3; a++)
        for (int r = 0; r < 40; r++) {
            int64_t i = th_int(0, sizes[a] - 1);
            double x = params[a][i], h = 1e-6 * fmax(1.0, fabs(x)), lp = 0, lm = 0;
            params[a][i] = x + h;
            if (!ok(do_fwd(&p, s, w, o2, l2))) goto out;
            for (int64_t j = 0; j < nq; j++) lp += dout[j] * o2[j];
            params[a][i] = x - h;
            if (!ok(do_fwd(&p, s, w, o2, l2))) goto out;
            for (int64_t j = 0; j < nq; j++) lm += dout[j] * o2[j];
            params[a][i] = x;
            worst = fmax(worst, fabs((lp - lm) / (2 * h) - grads[a][i]));
        }
    TH_CHECK(worst <= 1e-6 * gmax, "max |fd - analytic| = %g (max |grad| %g)", worst, gmax);
out:
    free(sel), free(o), free(l), free(dout), free(dq), free(dk), free(dv), free(o2), free(l2);
    prob_free(&p);
}

/* ==== dtypes and views ==== */

static void test_conversions(void) {
    if (!th_case("DTYPE_CONVERSIONS(f16, bf16 bit patterns and rounding)")) return;
    const struct { float f; uint16_t h; } f16[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {65504.0f, 0x7bff}, {65520.0f, 0x7c00}, {5.960464477539063e-08f, 0x0001},
        {2.98023223876953125e-08f, 0x0000}, {6.103515625e-05f, 0x0400}, {1.0009765625f, 0x3c01},
        {1.00048828125f, 0x3c00} /* tie -> even */, {1.00146484375f, 0x3c02} /* tie -> even */,
    };
    for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++)
        TH_CHECK(ifl_f32_to_f16(f16[i].f) == f16[i].h, "f16(%g) = 0x%04x, expected 0x%04x", f16[i].f,
                 ifl_f32_to_f16(f16[i].f), f16[i].h);
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite positive half round-trips */
        if (ifl_f32_to_f16(ifl_f16_to_f32((uint16_t)h)) != h) {
            TH_CHECK(0, "f16 0x%04x does not round-trip", h);
            break;
        }
    TH_CHECK(ifl_f32_to_bf16(1.0f) == 0x3f80 && ifl_f32_to_bf16(1.00390625f) == 0x3f80 &&
                 ifl_f32_to_bf16(1.01171875f) == 0x3f82 && ifl_bf16_to_f32(0x3f81) == 1.0078125f,
             "bf16 rounding");
    TH_CHECK(isnan(ifl_f16_to_f32(ifl_f32_to_f16(NAN))) && isnan(ifl_bf16_to_f32(ifl_f32_to_bf16(NAN))), "NaN stays NaN");
}

/* bf16 inputs are converted on entry: the result equals float64 inputs rounded to bf16. Also
 * f32 outputs are the float64 outputs rounded. */
static void test_dtype_entry(void) {
    if (!th_case("DTYPE_ON_ENTRY(bf16 in == rounded f64 in; f32 out == rounded f64 out)")) return;
    struct prob p = prob_random(40, 90, 4, 2, 8, small_cfg());
    int64_t nq = p.tq * p.hq * p.d, nk = p.tk * p.hkv * p.d, w = width_of(&p);
    uint16_t *bq = malloc((size_t)nq * 2), *bk = malloc((size_t)nk * 2), *bv = malloc((size_t)nk * 2);
    for (int64_t i = 0; i < nq; i++) p.q[i] = ifl_bf16_to_f32(bq[i] = ifl_f32_to_bf16((float)p.q[i]));
    for (int64_t i = 0; i < nk; i++) p.k[i] = ifl_bf16_to_f32(bk[i] = ifl_f32_to_bf16((float)p.k[i]));
    for (int64_t i = 0; i < nk; i++) p.v[i] = ifl_bf16_to_f32(bv[i] = ifl_f32_to_bf16((float)p.v[i]));
    int32_t *s1 = alloc_i(p.hkv * p.tq * w), *s2 = alloc_i(p.hkv * p.tq * w);
    double *o = alloc_d(nq), *l = alloc_d(p.tq * p.hq);
    float *of = malloc((size_t)nq * sizeof *of);
    struct ifl_tensor q = t3(bq, IFL_DTYPE_BF16, p.tq, p.hq, p.d), k = t3(bk, IFL_DTYPE_BF16, p.tk, p.hkv, p.d);
    struct ifl_tensor v = t3(bv, IFL_DTYPE_BF16, p.tk, p.hkv, p.d), ts = t3(s2, IFL_DTYPE_I32, p.hkv, p.tq, w);
    struct ifl_tensor to = t3(of, IFL_DTYPE_F32, p.tq, p.hq, p.d);
    if (ok(do_select(&p, s1, w)) && ok(do_fwd(&p, s1, w, o, l)) && ok(ifl_select(ctx, &p.cfg, NULL, &q, &k, &ts)) &&
        ok(ifl_sparse_attn_fwd(ctx, &p.cfg, NULL, &q, &k, &v, &ts, &to, NULL))) {
        TH_CHECK(memcmp(s1, s2, (size_t)(p.hkv * p.tq * w) * sizeof *s1) == 0, "bf16 selection differs");
        int same = 1;
        for (int64_t i = 0; i < nq; i++) same &= of[i] == (float)o[i];
        TH_CHECK(same, "f32 output is not the rounded f64 output");
    }
    free(bq), free(bk), free(bv), free(s1), free(s2), free(o), free(l), free(of);
    prob_free(&p);
}

/* q, k and v as strided views into one fused [T, Hq + 2 Hkv, D] buffer equal contiguous inputs. */
static void test_strided_views(void) {
    if (!th_case("STRIDED_VIEWS(fused qkv buffer, Tq=Tk=75, Hq=4, Hkv=2, D=8)")) return;
    struct prob p = prob_random(75, 75, 4, 2, 8, small_cfg());
    const int64_t T = 75, H = 4 + 2 * 2, D = 8, w = width_of(&p), n = T * 4 * D;
    double *fused = alloc_d(T * H * D);
    for (int64_t t = 0; t < T; t++) {
        memcpy(fused + (t * H + 0) * D, p.q + t * 4 * D, 4 * D * sizeof(double));
        memcpy(fused + (t * H + 4) * D, p.k + t * 2 * D, 2 * D * sizeof(double));
        memcpy(fused + (t * H + 6) * D, p.v + t * 2 * D, 2 * D * sizeof(double));
    }
    struct ifl_tensor q = t3(fused, IFL_DTYPE_F64, T, 4, D), k = t3(fused + 4 * D, IFL_DTYPE_F64, T, 2, D);
    struct ifl_tensor v = t3(fused + 6 * D, IFL_DTYPE_F64, T, 2, D);
    q.stride[0] = k.stride[0] = v.stride[0] = H * D;
    int32_t *s1 = alloc_i(2 * T * w), *s2 = alloc_i(2 * T * w);
    double *o1 = alloc_d(n), *o2 = alloc_d(n), *l1 = alloc_d(T * 4);
    struct ifl_tensor ts = t3(s2, IFL_DTYPE_I32, 2, T, w), to = t3(o2, IFL_DTYPE_F64, T, 4, D);
    if (ok(do_select(&p, s1, w)) && ok(do_fwd(&p, s1, w, o1, l1)) && ok(ifl_select(ctx, &p.cfg, NULL, &q, &k, &ts)) &&
        ok(ifl_sparse_attn_fwd(ctx, &p.cfg, NULL, &q, &k, &v, &ts, &to, NULL))) {
        TH_CHECK(memcmp(s1, s2, (size_t)(2 * T * w) * sizeof *s1) == 0, "strided selection differs");
        TH_CHECK(memcmp(o1, o2, (size_t)n * sizeof *o1) == 0, "strided output differs");
    }
    free(fused), free(s1), free(s2), free(o1), free(o2), free(l1);
    prob_free(&p);
}

/* ifl_tensor_find_nonfinite against a plain scan: every float dtype, NaN / +Inf / -Inf planted at
 * random places (and none), the largest finite values not flagged, contiguous and strided views. */
static void test_find_nonfinite(void) {
    const enum ifl_dtype dts[] = {IFL_DTYPE_F64, IFL_DTYPE_F32, IFL_DTYPE_F16, IFL_DTYPE_BF16};
    const double         big[] = {1.7976931348623157e308, 3.4028234663852886e38, 65504.0, 3.3895313892515355e38};
    for (int di = 0; di < 4; di++) {
        if (!th_case("FIND_NONFINITE(dtype %d: planted NaN/Inf, largest finite, strided views)", (int)dts[di])) continue;
        const int64_t shape[3] = {5, 3, 37}, n = 5 * 3 * 37;
        const size_t  es       = dts[di] == IFL_DTYPE_F64 ? 8 : dts[di] == IFL_DTYPE_F32 ? 4 : 2;
        unsigned char *buf     = malloc((size_t)n * es);
        for (int trial = 0; trial < 40; trial++) {
            /* values: the largest finite ones and random normals, then 0..2 bad ones */
            double vals[5 * 3 * 37];
            for (int64_t i = 0; i < n; i++) vals[i] = (i % 7 == 0) ? (i % 2 ? -big[di] : big[di]) : th_normal();
            int n_bad = trial % 3;
            for (int b = 0; b < n_bad; b++) vals[th_int(0, n - 1)] = b == 0 ? NAN : (trial % 2 ? INFINITY : -INFINITY);
            for (int64_t i = 0; i < n; i++) {
                double x = vals[i];
                switch (dts[di]) {
                case IFL_DTYPE_F64: memcpy(buf + i * es, &x, 8); break;
                case IFL_DTYPE_F32: { float f = (float)x; memcpy(buf + i * es, &f, 4); break; }
                case IFL_DTYPE_F16: { uint16_t h = ifl_f32_to_f16((float)x); memcpy(buf + i * es, &h, 2); break; }
                default: { uint16_t h = ifl_f32_to_bf16((float)x); memcpy(buf + i * es, &h, 2); break; }
                }
            }
            /* the whole tensor, then a view of every other row of dim 0 and a column range */
            for (int view = 0; view < 2; view++) {
                struct ifl_tensor t = ifl_tensor_make(buf, dts[di], 3, shape);
                int64_t           d0 = 0, d2 = 0;
                if (view) {
                    d2 = 4;
                    t.data     = buf + (size_t)d2 * es;
                    t.shape[0] = 3, t.shape[2] = 30;
                    t.stride[0] *= 2;
                }
                int64_t want = -1;
                for (int64_t a = 0; a < t.shape[0] && want < 0; a++)
                    for (int64_t b = 0; b < t.shape[1] && want < 0; b++)
                        for (int64_t c = 0; c < t.shape[2] && want < 0; c++)
                            if (!isfinite(vals[(d0 + a * (view ? 2 : 1)) * 3 * 37 + b * 37 + d2 + c]))
                                want = (a * t.shape[1] + b) * t.shape[2] + c;
                int64_t pos[4] = {-1, -1, -1, -1};
                int     got    = ifl_tensor_find_nonfinite(&t, pos);
                TH_CHECK(got == (want >= 0), "trial %d view %d: found %d, expected %d", trial, view, got, want >= 0);
                if (got && want >= 0) {
                    int64_t at = (pos[0] * t.shape[1] + pos[1]) * t.shape[2] + pos[2];
                    TH_CHECK(at == want && pos[3] == 0, "trial %d view %d: first at [%lld, %lld, %lld], expected linear %lld",
                             trial, view, (long long)pos[0], (long long)pos[1], (long long)pos[2], (long long)want);
                }
            }
        }
        free(buf);
    }
}

int main(int argc, char **argv) {
    th_init(argc, argv);
    struct ifl_ctx_params params = ifl_ctx_params_default();
    if (ifl_ctx_create(&params, &ctx) != IFL_STATUS_OK) {
        printf("cannot create a ref context\n");
        return 1;
    }
    test_hand_dense();
    test_hand_compress();
    test_hand_select();
    test_worked_example();
    test_all_blocks_equals_dense();
    test_topk_covers_all();
    test_early_rows_dense_and_forced();
    test_chunks_equal_prefill();
    test_causality();
    test_lse_modes_agree_for_g1();
    test_gqa_heads_independent();
    test_batch_equals_separate();
    test_switch();
    test_grad_fd(0);
    test_grad_fd(1);
    test_conversions();
    test_dtype_entry();
    test_strided_views();
    test_find_nonfinite();
    ifl_ctx_destroy(ctx);
    return th_report();
}
