/* SPDX-License-Identifier: MIT
 *
 * api.c -- the public operations: validate every argument (check.c), then hand the resolved
 * problem to the context's backend. ifl_infllmv2_fwd's dense/sparse switch is switch.c's, which
 * the KV cache shares, so every backend and both entry points follow one policy.
 */
#include "check.h"

#include <stdlib.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        if ((st = (expr)) != IFL_STATUS_OK) goto done;                                             \
    } while (0)

/* A success clears the message of an earlier failure. */
static enum ifl_status finish(struct ifl_ctx *ctx, struct ifl__problem *pb, enum ifl_status st) {
    ifl__problem_end(pb);
    if (st == IFL_STATUS_OK) ctx->errmsg[0] = '\0';
    return st;
}

static enum ifl_status check_qkv_finite(struct ifl_ctx *ctx, const char *fn,
                                        const struct ifl__problem *pb) {
    enum ifl_status st;
    if ((st = ifl__check_finite(ctx, fn, "q", pb->q))) return st;
    if ((st = ifl__check_finite(ctx, fn, "k", pb->k))) return st;
    return ifl__check_finite(ctx, fn, "v", pb->v);
}

/* out [Tq, Hq, D] (required) and lse [Tq, Hq] (optional when lse_required is 0). */
static enum ifl_status check_out_lse(struct ifl_ctx *ctx, const char *fn,
                                     const struct ifl__problem *pb, const struct ifl_tensor *out,
                                     const struct ifl_tensor *lse, int lse_required) {
    const int64_t   oshape[3] = {pb->tq, pb->hq, pb->d};
    const int64_t   lshape[2] = {pb->tq, pb->hq};
    enum ifl_status st = ifl__check_tensor(ctx, fn, "out", out, 3, oshape, IFL__ACCEPT_FLOAT);
    if (st) return st;
    if (lse || lse_required) return ifl__check_tensor(ctx, fn, "lse", lse, 2, lshape, IFL__ACCEPT_LSE);
    return IFL_STATUS_OK;
}

/* dout, dq [Tq, Hq, D]; dk, dv [Tk, Hkv, D]; all required. */
static enum ifl_status check_grads(struct ifl_ctx *ctx, const char *fn, const struct ifl__problem *pb,
                                   const struct ifl_tensor *dout, const struct ifl_tensor *dq,
                                   const struct ifl_tensor *dk, const struct ifl_tensor *dv) {
    const int64_t   qshape[3] = {pb->tq, pb->hq, pb->d};
    const int64_t   kshape[3] = {pb->tk, pb->hkv, pb->d};
    enum ifl_status st;
    if ((st = ifl__check_tensor(ctx, fn, "dout", dout, 3, qshape, IFL__ACCEPT_FLOAT))) return st;
    if ((st = ifl__check_tensor(ctx, fn, "dq", dq, 3, qshape, IFL__ACCEPT_FLOAT))) return st;
    if ((st = ifl__check_tensor(ctx, fn, "dk", dk, 3, kshape, IFL__ACCEPT_FLOAT))) return st;
    return ifl__check_tensor(ctx, fn, "dv", dv, 3, kshape, IFL__ACCEPT_FLOAT);
}

/* ---- compressed keys ---- */

enum ifl_status ifl_compress_keys(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                  const struct ifl_batch *batch, const struct ifl_tensor *k,
                                  const struct ifl_tensor *c1, const struct ifl_tensor *c2) {
    const char         *fn = "ifl_compress_keys";
    struct ifl__problem pb;
    enum ifl_status     st;
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    TRY(ifl__problem_begin(ctx, fn, cfg, batch, NULL, k, NULL, &pb));
    int64_t n1 = 0, n2 = 0;
    for (int64_t s = 0; s < pb.n_seqs; s++) {
        n1 += ifl_compressed_len(pb.seqs[s].nk, pb.cfg.kernel_size, pb.cfg.kernel_stride);
        n2 += ifl_compressed_len(pb.seqs[s].nk, pb.cfg.coarse_kernel_size, pb.cfg.coarse_kernel_stride);
    }
    const int64_t s1[3] = {n1, pb.hkv, pb.d}, s2[3] = {n2, pb.hkv, pb.d};
    if (c1) TRY(ifl__check_tensor(ctx, fn, "c1", c1, 3, s1, IFL__ACCEPT_FLOAT));
    if (c2) TRY(ifl__check_tensor(ctx, fn, "c2", c2, 3, s2, IFL__ACCEPT_FLOAT));
    const struct ifl_tensor *outs[] = {c1, c2}, *ins[] = {k};
    const char              *onames[] = {"c1", "c2"}, *inames[] = {"k"};
    TRY(ifl__check_overlap(ctx, fn, outs, onames, 2, ins, inames, 1));
    TRY(ifl__check_finite(ctx, fn, "k", k));
    pb.c1 = c1;
    pb.c2 = c2;
    TRY(ctx->backend->compress_keys(ctx, &pb));
done:
    return finish(ctx, &pb, st);
}

/* ---- stage 1 ---- */

enum ifl_status ifl_select(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                           const struct ifl_batch *batch, const struct ifl_tensor *q,
                           const struct ifl_tensor *k, const struct ifl_tensor *sel) {
    const char         *fn = "ifl_select";
    struct ifl__problem pb;
    enum ifl_status     st;
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if (q == NULL) return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: q is NULL", fn);
    TRY(ifl__problem_begin(ctx, fn, cfg, batch, q, k, NULL, &pb));
    TRY(ifl__check_sel_output(ctx, fn, &pb, sel, NULL));
    const struct ifl_tensor *outs[] = {sel}, *ins[] = {q, k};
    const char              *onames[] = {"sel"}, *inames[] = {"q", "k"};
    TRY(ifl__check_overlap(ctx, fn, outs, onames, 1, ins, inames, 2));
    TRY(check_qkv_finite(ctx, fn, &pb));
    pb.sel = sel;
    TRY(ctx->backend->select(ctx, &pb));
done:
    return finish(ctx, &pb, st);
}

/* ---- stage 2 and dense forward ---- */

/* Stage 2 (sparse: sel is the selection) or dense attention forward. */
static enum ifl_status attn_fwd(struct ifl_ctx *ctx, const char *fn, int sparse, const struct ifl_sparse_config *cfg,
                                const struct ifl_batch *batch, const struct ifl_tensor *q, const struct ifl_tensor *k,
                                const struct ifl_tensor *v, const struct ifl_tensor *sel, const struct ifl_tensor *out,
                                const struct ifl_tensor *lse) {
    struct ifl__problem pb;
    enum ifl_status     st;
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if (q == NULL || v == NULL)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s is NULL", fn, q ? "v" : "q");
    TRY(ifl__problem_begin(ctx, fn, cfg, batch, q, k, v, &pb));
    if (sparse) TRY(ifl__check_sel_input(ctx, fn, &pb, sel));
    TRY(check_out_lse(ctx, fn, &pb, out, lse, 0));
    const struct ifl_tensor *outs[] = {out, lse}, *ins[] = {q, k, v, sel};
    const char              *onames[] = {"out", "lse"}, *inames[] = {"q", "k", "v", "sel"};
    TRY(ifl__check_overlap(ctx, fn, outs, onames, 2, ins, inames, sparse ? 4 : 3));
    TRY(check_qkv_finite(ctx, fn, &pb));
    pb.sel = sparse ? sel : NULL;
    pb.out = out;
    pb.lse = lse;
    TRY(sparse ? ctx->backend->sparse_fwd(ctx, &pb) : ctx->backend->dense_fwd(ctx, &pb));
done:
    return finish(ctx, &pb, st);
}

enum ifl_status ifl_sparse_attn_fwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                    const struct ifl_batch *batch, const struct ifl_tensor *q,
                                    const struct ifl_tensor *k, const struct ifl_tensor *v,
                                    const struct ifl_tensor *sel, const struct ifl_tensor *out,
                                    const struct ifl_tensor *lse) {
    return attn_fwd(ctx, "ifl_sparse_attn_fwd", 1, cfg, batch, q, k, v, sel, out, lse);
}

enum ifl_status ifl_dense_attn_fwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                   const struct ifl_batch *batch, const struct ifl_tensor *q,
                                   const struct ifl_tensor *k, const struct ifl_tensor *v,
                                   const struct ifl_tensor *out, const struct ifl_tensor *lse) {
    return attn_fwd(ctx, "ifl_dense_attn_fwd", 0, cfg, batch, q, k, v, NULL, out, lse);
}

/* ---- the switchable forward ---- */

enum ifl_status ifl_infllmv2_fwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                 const struct ifl_batch *batch, const struct ifl_tensor *q,
                                 const struct ifl_tensor *k, const struct ifl_tensor *v,
                                 const struct ifl_tensor *out, const struct ifl_tensor *lse,
                                 const struct ifl_tensor *sel, enum ifl_mode *modes) {
    const char         *fn = "ifl_infllmv2_fwd";
    struct ifl__problem pb;
    enum ifl_status     st;
    unsigned char      *sparse = NULL; /* [n_seqs] 1 = this sequence runs sparse */
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if (q == NULL || v == NULL)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s is NULL", fn, q ? "v" : "q");
    TRY(ifl__problem_begin(ctx, fn, cfg, batch, q, k, v, &pb));
    sparse = malloc((size_t)pb.n_seqs);
    if (!sparse) TRY(IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn));
    for (int64_t s = 0; s < pb.n_seqs; s++) sparse[s] = (unsigned char)ifl__runs_sparse(&pb.cfg, pb.seqs[s].nk);
    if (sel) TRY(ifl__check_sel_output(ctx, fn, &pb, sel, sparse));
    TRY(check_out_lse(ctx, fn, &pb, out, lse, 0));
    const struct ifl_tensor *outs[] = {out, lse, sel}, *ins[] = {q, k, v};
    const char              *onames[] = {"out", "lse", "sel"}, *inames[] = {"q", "k", "v"};
    TRY(ifl__check_overlap(ctx, fn, outs, onames, 3, ins, inames, 3));
    TRY(check_qkv_finite(ctx, fn, &pb));
    pb.sel = sel;
    pb.out = out;
    pb.lse = lse;
    TRY(ifl__switch_fwd(ctx, &pb, sparse));
    if (modes)
        for (int64_t s = 0; s < pb.n_seqs; s++) modes[s] = sparse[s] ? IFL_MODE_SPARSE : IFL_MODE_DENSE;
done:
    free(sparse);
    return finish(ctx, &pb, st);
}

/* ---- backward ---- */

/* Backward of stage 2 (sparse: sel is the forward's selection) or of dense attention. */
static enum ifl_status attn_bwd(struct ifl_ctx *ctx, const char *fn, int sparse, const struct ifl_sparse_config *cfg,
                                const struct ifl_batch *batch, const struct ifl_tensor *q, const struct ifl_tensor *k,
                                const struct ifl_tensor *v, const struct ifl_tensor *sel, const struct ifl_tensor *out,
                                const struct ifl_tensor *lse, const struct ifl_tensor *dout,
                                const struct ifl_tensor *dq, const struct ifl_tensor *dk,
                                const struct ifl_tensor *dv) {
    struct ifl__problem pb;
    enum ifl_status     st;
    if (ifl__check_ctx(ctx)) return IFL_STATUS_INVALID_ARG;
    if (q == NULL || v == NULL)
        return IFL_FAIL(ctx, IFL_STATUS_INVALID_ARG, "%s: %s is NULL", fn, q ? "v" : "q");
    TRY(ifl__problem_begin(ctx, fn, cfg, batch, q, k, v, &pb));
    if (sparse) TRY(ifl__check_sel_input(ctx, fn, &pb, sel));
    TRY(check_out_lse(ctx, fn, &pb, out, lse, 1));
    TRY(check_grads(ctx, fn, &pb, dout, dq, dk, dv));
    /* the inputs, sel last so that the dense op can leave it out */
    const struct ifl_tensor *outs[] = {dq, dk, dv}, *ins[] = {q, k, v, out, lse, dout, sel};
    const char *onames[] = {"dq", "dk", "dv"}, *inames[] = {"q", "k", "v", "out", "lse", "dout", "sel"};
    TRY(ifl__check_overlap(ctx, fn, outs, onames, 3, ins, inames, sparse ? 7 : 6));
    TRY(check_qkv_finite(ctx, fn, &pb));
    TRY(ifl__check_finite(ctx, fn, "out", out));
    TRY(ifl__check_finite(ctx, fn, "dout", dout));
    pb.sel  = sparse ? sel : NULL;
    pb.out  = out;
    pb.lse  = lse;
    pb.dout = dout;
    pb.dq   = dq;
    pb.dk   = dk;
    pb.dv   = dv;
    TRY(sparse ? ctx->backend->sparse_bwd(ctx, &pb) : ctx->backend->dense_bwd(ctx, &pb));
done:
    return finish(ctx, &pb, st);
}

enum ifl_status ifl_sparse_attn_bwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                    const struct ifl_batch *batch, const struct ifl_tensor *q,
                                    const struct ifl_tensor *k, const struct ifl_tensor *v,
                                    const struct ifl_tensor *sel, const struct ifl_tensor *out,
                                    const struct ifl_tensor *lse, const struct ifl_tensor *dout,
                                    const struct ifl_tensor *dq, const struct ifl_tensor *dk,
                                    const struct ifl_tensor *dv) {
    return attn_bwd(ctx, "ifl_sparse_attn_bwd", 1, cfg, batch, q, k, v, sel, out, lse, dout, dq, dk, dv);
}

enum ifl_status ifl_dense_attn_bwd(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                   const struct ifl_batch *batch, const struct ifl_tensor *q,
                                   const struct ifl_tensor *k, const struct ifl_tensor *v,
                                   const struct ifl_tensor *out, const struct ifl_tensor *lse,
                                   const struct ifl_tensor *dout, const struct ifl_tensor *dq,
                                   const struct ifl_tensor *dk, const struct ifl_tensor *dv) {
    return attn_bwd(ctx, "ifl_dense_attn_bwd", 0, cfg, batch, q, k, v, NULL, out, lse, dout, dq, dk, dv);
}
