/* SPDX-License-Identifier: MIT
 *
 * test_backend_ops.c -- the cross-backend test (house-style 2.8 (b)-(d)): every op of the public
 * API on the cpu backend against the float64 ref backend, for every input dtype (f32, bf16, f16)
 * over a sweep of shapes, configs and packed batches. docs/numerics.md derives the tolerances and
 * records the errors this test measured.
 *
 *   - Inputs are drawn in double, rounded to the dtype, and the SAME dtype buffers go to both
 *     backends (the ref converts on entry), so a difference is computation error only; the ref's
 *     compressed keys are rounded to the key dtype exactly as the cpu's are.
 *   - Continuous outputs: f32 tensors on the cpu side (one case bf16), f64 on the ref side. Gate:
 *     max|cpu - ref| <= C * u32 * sqrt((n_acc + D) * zfac) * max|ref| (+ u_out * max|ref| for a
 *     narrow output dtype), an NMSE cap, no NaN, and infinities (LSE -inf of a row that sees no
 *     key) exactly where the ref has them.
 *   - Compressed keys: within one ulp of the key dtype (plus the f32 accumulation term).
 *   - Selections are compared per row as sets; a difference is accepted only at a near-tie of the
 *     reference block scores (recomputed here in float64 from the spec), and the cpu row must keep
 *     every forced block.
 *   - Stage 2 and the backward are fed the ref's selection (and its out/lse), so the continuous and
 *     the discrete checks are independent.
 *   - Guard bytes around every cpu output (and the padding of strided outputs) must be unchanged,
 *     outputs are pre-filled with NaN so an unwritten element shows, inputs must be unchanged.
 *   - Determinism: 1, 2, 3 threads and the default count give bitwise-identical outputs; the
 *     forced scalar path (IFL_SIMD_SCALAR) is checked against the ref too.
 *
 * Options, besides the harness's --seed N and --filter SUBSTRING:
 *   --quick        the CI sweep (default; well under a minute on two cores)
 *   --full         more and larger shapes (nightly)
 *   --against-ref  the backend under test is the ref backend itself: proves the harness passes
 *
 * Inputs come from a stream seeded by --seed and the instance's shape string (not the case name),
 * so every op case of one instance sees the same inputs whatever --filter keeps: a failing case
 * reproduces with `--filter 'NAME' --seed N`.
 *
 * What it shares with tests/test_cuda.c (specs and instances, input generation, the ref results,
 * the comparisons with their tolerance model TOL_CALIBRATED, the selection check, the table of
 * worst errors) is in tests/backend_check.c; this file holds the sweep, the gates, the runs on the
 * cpu contexts and the determinism checks.
 *
 * Sections: gates / contexts / the sweep / running the backend under test / the op cases / main.
 */
#define _POSIX_C_SOURCE 200809L
#include "backend_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== gates: docs/numerics.md explains them and records the measurements they came from ====
 * Continuous outputs, with the rms unit r = u32 * sqrt((n_acc + D) * zfac) (LSE: no zfac) and the
 * magnitude M = max(max|ref|, floor) (check_float, backend_check.h, says what the floor is):
 *   max|cpu - ref| <= C * r * M
 *   NMSE = sum (cpu - ref)^2 / max(sum ref^2, n * floor^2) <= NMSE_C * r^2
 * n_acc: the longest accumulation feeding one element (keys of a row for out/lse/dq, G x queries
 * for dk/dv); zfac = max(1, rms(q) * rms(k)), the scale of the logits. Each C is about 4x the
 * worst error measured on the sweep (quick seeds 1-8, full seeds 1-3), NMSE caps 16x. */
#define C_FWD_OUT  12.0  /* worst measured 2.82 (bf16, q*32) */
#define C_FWD_LSE  3.0   /* worst measured 0.72 (f32, q*8) */
#define C_BWD_DQ   20.0  /* worst measured 4.92 (f32, q*32) */
#define C_BWD_DK   27.0  /* worst measured 6.61 (bf16, q*32) */
#define C_BWD_DV   24.0  /* worst measured 5.95 (bf16, q*32) */
#define NMSE_C_FWD 5.0   /* worst measured 0.31 r^2: 16x, i.e. 4x in rms */
#define NMSE_C_BWD 180.0 /* worst measured 11 r^2 (q*32) */
/* compressed keys: err <= ulp_dtype(ref) + C_CK * u32 * sqrt(kernel) * max|k| (worst measured 0.18) */
#define C_CK       0.75
/* selection near-tie margin: tau = TAU_C * u32 * max|finite row score| (TAU_C in backend_check.h;
 * u of f32: see numerics.md) */
static const struct gates gates = {.ck = C_CK, .out = C_FWD_OUT, .lse = C_FWD_LSE, .nmse_fwd = NMSE_C_FWD,
                                   .dq = C_BWD_DQ, .dk = C_BWD_DK, .dv = C_BWD_DV, .nmse_bwd = NMSE_C_BWD};

/* ==== contexts ==== */

static struct ifl_ctx *ut_ctx;  /* the backend under test (cpu; ref with --against-ref) */
static struct ifl_ctx *thr_ctx[3]; /* the same backend with 1, 2 and 3 threads */
static struct ifl_ctx *scalar_ctx; /* the same backend, simd forced to scalar */
static int             opt_against_ref;

/* ==== the sweep ==== */

static const struct spec specs[] = {
    /* lengths around the block (16), fine kernel (8/4) and coarse kernel (32/16) boundaries */
    {.nseq = 1, .tq = {1}, .tk = {1}, .hq = 1, .hkv = 1, .d = 64, .init = 1},
    {.nseq = 1, .tq = {15}, .tk = {15}, .hq = 2, .hkv = 1, .d = 40, .init = 0, .exact = 1},
    {.nseq = 1, .tq = {16}, .tk = {16}, .hq = 4, .hkv = 2, .d = 64, .init = 2},
    {.nseq = 1, .tq = {1}, .tk = {17}, .hq = 8, .hkv = 1, .d = 128, .init = 1},
    {.nseq = 1, .tq = {31}, .tk = {31}, .hq = 16, .hkv = 1, .d = 72, .init = 1, .exact = 1},
    {.nseq = 1, .tq = {9}, .tk = {33}, .hq = 4, .hkv = 1, .d = 128, .init = 0},
    /* Tk = dense_len: the switchable forward runs sparse; masked rows; determinism */
    {.nseq = 1, .tq = {100}, .tk = {100}, .hq = 8, .hkv = 2, .d = 64, .init = 1, .masked = 1, .det = 1},
    {.nseq = 1, .tq = {37}, .tk = {100}, .hq = 2, .hkv = 2, .d = 100, .init = 2, .exact = 1},
    {.nseq = 1, .tq = {99}, .tk = {99}, .hq = 4, .hkv = 1, .d = 64, .init = 1, .regime = REG_PEAKY},
    {.nseq = 1, .tq = {257}, .tk = {257}, .hq = 4, .hkv = 2, .d = 64, .init = 1, .exact = 1},
    {.nseq = 1, .tq = {17}, .tk = {257}, .hq = 8, .hkv = 2, .d = 64, .init = 1},
    {.nseq = 1, .tq = {257}, .tk = {257}, .hq = 2, .hkv = 1, .d = 128, .init = 1, .regime = REG_PEAKY},
    {.nseq = 1, .tq = {33}, .tk = {257}, .hq = 4, .hkv = 1, .d = 40, .init = 0, .regime = REG_LARGE},
    {.nseq = 1, .tq = {700}, .tk = {700}, .hq = 2, .hkv = 1, .d = 64, .init = 2},
    {.nseq = 1, .tq = {60}, .tk = {257}, .hq = 4, .hkv = 1, .d = 64, .init = 1, .regime = REG_TIES},
    {.nseq = 2, .batched = 1, .tq = {100, 20}, .tk = {300, 140}, .hq = 2, .hkv = 2, .d = 40, .init = 0, .exact = 1,
     .regime = REG_TIES},
    {.nseq = 1, .tq = {1}, .tk = {700}, .hq = 16, .hkv = 1, .d = 100, .init = 0},
    /* decode with a task per thread: the selection converts its own compressed-key tiles (more
     * than one tile of 64 fine keys), checked against the ref and, across thread counts, against
     * the prepared-tile path (3 threads) bitwise */
    {.nseq = 1, .tq = {1}, .tk = {900}, .hq = 16, .hkv = 2, .d = 64, .init = 1, .det = 1},
    {.nseq = 3, .batched = 1, .tq = {1, 1, 1}, .tk = {530, 1, 777}, .hq = 8, .hkv = 2, .d = 128, .init = 1,
     .exact = 1, .det = 1},
    {.nseq = 1, .tq = {64}, .tk = {700}, .hq = 8, .hkv = 2, .d = 128, .init = 1, .exact = 1, .det = 1},
    /* packed batches: different past values, a sequence with no queries, a dense one */
    {.nseq = 3, .batched = 1, .tq = {7, 40, 1}, .tk = {7, 140, 261}, .hq = 8, .hkv = 2, .d = 64, .init = 1,
     .masked = 1, .det = 1},
    {.nseq = 3, .batched = 1, .tq = {0, 33, 5}, .tk = {50, 33, 300}, .hq = 4, .hkv = 1, .d = 72, .init = 2,
     .exact = 1, .regime = REG_LARGE},
    /* views into a fused qkv buffer, padded outputs */
    {.nseq = 1, .tq = {75}, .tk = {75}, .hq = 4, .hkv = 2, .d = 64, .init = 1, .strided = 1},
    /* bf16 outputs */
    {.nseq = 1, .tq = {100}, .tk = {257}, .hq = 4, .hkv = 1, .d = 64, .init = 1, .out_bf16 = 1, .dtypes = DT_BF16},
    /* the default config (bs 64, kernel 32/16, coarse 128/64, window 2048, topk 64, dense_len 8192) */
    {.nseq = 1, .tq = {128}, .tk = {2100}, .hq = 2, .hkv = 1, .d = 64, .def_cfg = 1},
    {.nseq = 1, .tq = {1}, .tk = {2100}, .hq = 16, .hkv = 1, .d = 128, .def_cfg = 1, .full = 1},
    {.nseq = 1, .tq = {2100}, .tk = {2100}, .hq = 2, .hkv = 1, .d = 64, .def_cfg = 1, .full = 1},
    /* --full: larger heads and groups */
    {.nseq = 1, .tq = {700}, .tk = {700}, .hq = 16, .hkv = 2, .d = 128, .init = 1, .full = 1},
    {.nseq = 1, .tq = {257}, .tk = {257}, .hq = 16, .hkv = 1, .d = 128, .init = 2, .exact = 1, .full = 1, .det = 1},
    {.nseq = 1, .tq = {700}, .tk = {700}, .hq = 4, .hkv = 1, .d = 72, .init = 0, .regime = REG_PEAKY, .full = 1},
    {.nseq = 4, .batched = 1, .tq = {1, 300, 64, 17}, .tk = {100, 300, 700, 99}, .hq = 8, .hkv = 2, .d = 64,
     .init = 1, .masked = 1, .full = 1, .det = 1},
    {.nseq = 1, .tq = {700}, .tk = {700}, .hq = 8, .hkv = 1, .d = 64, .init = 1, .regime = REG_LARGE, .full = 1},
};

/* ==== running the backend under test ==== */

/* A hash of what op reads besides q, k, v and dout: the ref's selection (stage 2), and the ref's
 * out and lse (the backward, and its selection when sparse). 0 for the other ops. */
static uint64_t extra_inputs_hash(const struct inst *in, enum op op) {
    const int      kind = op_kind(op);
    const int32_t *sel  = kind == K_MASKED ? in->sel_masked : in->sel;
    const size_t   nsel = (size_t)(in->hkv * in->TQ * in->K) * 4;
    if (op == OP_SPARSE_FWD || op == OP_MASKED_FWD) return fnv(sel, nsel);
    if (!op_is_bwd(op)) return 0;
    size_t   no = (size_t)(in->TQ * in->hq * in->d);
    uint64_t h  = fnv(in->rf[kind].out_in, no * ifl_dtype_size(in->dt));
    h ^= fnv(in->rf[kind].lse_in, (size_t)(in->TQ * in->hq) * 4);
    if (kind != K_DENSE) h ^= 3 * fnv(sel, nsel);
    return h;
}

/* Runs op on ctx c with fresh guarded outputs; checks the status, the guards and that no input
 * changed. Returns 1 when the outputs can be compared. */
static int ut_run(struct ifl_ctx *c, enum op op, struct inst *in, struct outs *o) {
    memset(o, 0, sizeof *o);
    const int kind = op_kind(op);
    if ((op == OP_SPARSE_FWD || op == OP_MASKED_FWD) && !ensure_sel(in)) return 0;
    if (op_is_bwd(op) && !ensure_fwd(in, kind)) return 0;
    outs_make(o, op, in);
    struct bwd_in   b       = bwd_inputs(in, kind); /* b.sel: the ref's selection, for stage 2 too */
    uint64_t        h_extra = extra_inputs_hash(in, op);
    enum ifl_status st      = call_op(c, op, in, o, &b.sel, op_is_bwd(op) ? &b : NULL);
    if (op == OP_SPARSE_FWD || op == OP_MASKED_FWD)
        TH_CHECK(h_extra == extra_inputs_hash(in, op), "input sel was modified");
    if (op_is_bwd(op)) TH_CHECK(h_extra == extra_inputs_hash(in, op), "input out/lse/sel was modified");
    for (int i = 0; i < o->n; i++)
        TH_CHECK(gb_untouched_outside(&o->b[i]), "guard bytes or padding around output %s were overwritten",
                 o->name[i]);
    TH_CHECK(inst_hash_now(in) == in->hash_in, "an input (q, k, v or dout) was modified");
    return TH_CHECK(st == IFL_STATUS_OK, "%s: %s", ifl_status_str(st), ifl_ctx_errmsg(c));
}

/* ==== the op cases ==== */


/* One op of one instance on ctx c against the ref. tag goes into the name ("simd=scalar,"). */
static void case_op(struct inst *in, enum op op, struct ifl_ctx *c, const char *tag) {
    snprintf(cur_case, sizeof cur_case, "%s(%s%s)", op_name[op], tag, in->shape);
    if (!th_case("%s", cur_case)) return;
    double      t0 = now_s();
    struct outs o;
    if (ut_run(c, op, in, &o)) compare_op(in, op, &o, &gates);
    outs_free(&o);
    printf("  (%.3f s)\n", now_s() - t0);
}

/* Threads 1, 2, 3 and the default count must give bitwise-identical outputs. */
static void case_threads(struct inst *in, enum op op) {
    snprintf(cur_case, sizeof cur_case, "%s(threads=1/2/3/%d,%s)", op_name[op], ifl_ctx_threads(ut_ctx), in->shape);
    if (!th_case("%s", cur_case)) return;
    struct outs o[4];
    struct ifl_ctx *cs[4] = {thr_ctx[0], thr_ctx[1], thr_ctx[2], ut_ctx};
    int             ok[4];
    for (int r = 0; r < 4; r++) ok[r] = ut_run(cs[r], op, in, &o[r]);
    for (int r = 1; r < 4; r++) {
        if (!ok[0] || !ok[r]) continue;
        for (int i = 0; i < o[0].n; i++)
            TH_CHECK(o[0].b[i].total == o[r].b[i].total && memcmp(o[0].b[i].mem, o[r].b[i].mem, o[0].b[i].total) == 0,
                     "output %d with %d threads differs from 1 thread", i, ifl_ctx_threads(cs[r]));
        if (op == OP_INFLLM_FWD)
            TH_CHECK(memcmp(o[0].modes, o[r].modes, (size_t)in->nseq * sizeof o[0].modes[0]) == 0, "modes differ");
    }
    for (int r = 0; r < 4; r++) outs_free(&o[r]);
}

static void run_instance(struct inst *in) {
    for (int op = 0; op < N_OPS; op++) {
        if ((op == OP_MASKED_FWD || op == OP_MASKED_BWD) && !in->sp->masked) continue;
        case_op(in, (enum op)op, ut_ctx, "");
    }
    if (!in->sp->det) return;
    for (int op = 0; op < N_OPS; op++) {
        if ((op == OP_MASKED_FWD || op == OP_MASKED_BWD) && !in->sp->masked) continue;
        case_threads(in, (enum op)op);
    }
    for (int op = 0; op < N_OPS; op++) {
        if ((op == OP_MASKED_FWD || op == OP_MASKED_BWD) && !in->sp->masked) continue;
        case_op(in, (enum op)op, scalar_ctx, "simd=scalar,");
    }
}

/* ==== main ==== */

int main(int argc, char **argv) {
    bc.prog      = "test_backend_ops";
    bc.label     = "cpu";
    bc.tol       = TOL_CALIBRATED;
    bc.guard     = 64;
    bc.with_dout = 1;
    bc_init(argc, argv, "--against-ref", &opt_against_ref); /* our options; the rest goes to the harness */
    double t0 = now_s();

    struct ifl_ctx_params rp = ifl_ctx_params_default();
    if (ifl_ctx_create(&rp, &ref_ctx) != IFL_STATUS_OK) {
        printf("cannot create a ref context\n");
        return 1;
    }
    enum ifl_backend under = opt_against_ref ? IFL_BACKEND_REF : IFL_BACKEND_CPU;
    struct ifl_ctx_params up = ifl_ctx_params_default();
    up.backend               = under;
    enum ifl_status st       = ifl_backend_available(under) ? ifl_ctx_create(&up, &ut_ctx) : IFL_STATUS_UNSUPPORTED;
    if (st == IFL_STATUS_UNSUPPORTED) {
        const char *msg = "\n"
                          "*****************************************************************\n"
                          "*** SKIPPED: cpu backend not in this build                    ***\n"
                          "*** (test_backend_ops compared nothing; --against-ref runs     ***\n"
                          "***  the harness with the ref backend on both sides)           ***\n"
                          "*****************************************************************\n";
        printf("%s", msg);
        fprintf(stderr, "%s", msg);
        ifl_ctx_destroy(ref_ctx);
        return 0;
    }
    if (st != IFL_STATUS_OK) {
        printf("cannot create a %s context: %s\n", ifl_backend_name(under), ifl_status_str(st));
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        struct ifl_ctx_params p = up;
        p.n_threads             = i + 1;
        if (ifl_ctx_create(&p, &thr_ctx[i]) != IFL_STATUS_OK) {
            printf("cannot create a %s context with %d threads\n", ifl_backend_name(under), i + 1);
            return 1;
        }
    }
    struct ifl_ctx_params sp = up;
    sp.simd                  = IFL_SIMD_SCALAR;
    if (ifl_ctx_create(&sp, &scalar_ctx) != IFL_STATUS_OK) {
        printf("cannot create a %s context with simd=scalar\n", ifl_backend_name(under));
        return 1;
    }
    printf("backend under test: %s%s, simd %s, %d threads (scalar context: simd %s); sweep %s\n",
           ifl_backend_name(under), opt_against_ref ? " (--against-ref: the harness checking itself)" : "",
           ifl_simd_name(ifl_ctx_simd(ut_ctx)), ifl_ctx_threads(ut_ctx), ifl_simd_name(ifl_ctx_simd(scalar_ctx)),
           bc.full ? "full" : "quick");

    static const enum ifl_dtype dts[3] = {IFL_DTYPE_F32, IFL_DTYPE_BF16, IFL_DTYPE_F16};
    run_sweep(specs, sizeof specs / sizeof specs[0], dts, 3, run_instance);

    print_table();
    printf("simd level under test: %s; runtime %.1f s\n", ifl_simd_name(ifl_ctx_simd(ut_ctx)), now_s() - t0);
    for (int i = 0; i < 3; i++) ifl_ctx_destroy(thr_ctx[i]);
    ifl_ctx_destroy(scalar_ctx);
    ifl_ctx_destroy(ut_ctx);
    ifl_ctx_destroy(ref_ctx);
    return th_report();
}
