/* SPDX-License-Identifier: MIT
 *
 * switch.c -- the dense/sparse switch (spec: dense when dense_len != -1 and Tk < dense_len, else
 * select + sparse), once for the whole library: the stateless ifl_infllmv2_fwd (api.c) and the KV
 * cache's attention (kv_cache.c) both call ifl__switch_fwd, so they cannot drift apart.
 */
#include "internal.h"

#include <stdlib.h>

/* Writes -1 to the sel rows of pb's sequences (through the backend when sel is device memory). */
static enum ifl_status clear_sel(struct ifl_ctx *ctx, const struct ifl__problem *pb) {
    if (ctx->backend->clear_sel) return ctx->backend->clear_sel(ctx, pb);
    const struct ifl_tensor *sel = pb->sel;
    for (int64_t s = 0; s < pb->n_seqs; s++)
        for (int64_t g = 0; g < pb->hkv; g++)
            for (int64_t i = pb->seqs[s].q0; i < pb->seqs[s].q0 + pb->seqs[s].nq; i++)
                for (int64_t c = 0; c < sel->shape[2]; c++) ((int32_t *)sel->data)[ifl__off3(sel, g, i, c)] = -1;
    return IFL_STATUS_OK;
}

/* A copy of pb restricted to the sequences s with keep[s] == want. */
static void subproblem(const struct ifl__problem *pb, const unsigned char *keep, unsigned char want,
                       struct ifl__seq *seqs, struct ifl__problem *sub) {
    *sub        = *pb;
    sub->seqs   = seqs;
    sub->n_seqs = 0;
    for (int64_t s = 0; s < pb->n_seqs; s++)
        if (keep[s] == want) seqs[sub->n_seqs++] = pb->seqs[s];
}

int ifl__runs_sparse(const struct ifl_sparse_config *cfg, int64_t n_keys) {
    return cfg->dense_len == -1 || n_keys >= cfg->dense_len;
}

enum ifl_status ifl__switch_fwd(struct ifl_ctx *ctx, const struct ifl__problem *pb, const unsigned char *sparse) {
    enum ifl_status     st         = IFL_STATUS_OK;
    struct ifl__problem run        = *pb;
    int32_t            *own_sel    = NULL; /* selection scratch when the caller passes no sel */
    int                 any_sparse = 0, any_dense = 0;
    int64_t             width      = 1;
    for (int64_t s = 0; s < pb->n_seqs; s++) {
        any_sparse |= sparse[s];
        any_dense |= !sparse[s];
        int64_t w = ifl_select_width(&pb->cfg, pb->seqs[s].nk);
        if (sparse[s] && w > width) width = w;
    }
    struct ifl__seq *sub_seqs = malloc((size_t)pb->n_seqs * sizeof *sub_seqs); /* for both sub-batches */
    if (sub_seqs == NULL) return IFL_FAIL(ctx, IFL_STATUS_OUT_OF_MEMORY, "%s: out of memory", pb->fn);
    struct ifl_tensor own;
    if (any_sparse && run.sel == NULL) { /* scratch selection, in the backend's memory */
        st = ifl__scratch_alloc(ctx, pb->fn, (size_t)(pb->hkv * pb->tq * width) * sizeof *own_sel, (void **)&own_sel);
        if (st != IFL_STATUS_OK) goto done;
        own     = ifl_tensor_make(own_sel, IFL_DTYPE_I32, 3, (const int64_t[3]){pb->hkv, pb->tq, width});
        run.sel = &own;
    }
    struct ifl__problem sub;
    if (any_sparse) {
        subproblem(&run, sparse, 1, sub_seqs, &sub);
        if ((st = ctx->backend->select(ctx, &sub))) goto done;
        if ((st = ctx->backend->sparse_fwd(ctx, &sub))) goto done;
    }
    if (any_dense) {
        subproblem(&run, sparse, 0, sub_seqs, &sub);
        if ((st = ctx->backend->dense_fwd(ctx, &sub))) goto done;
        if (run.sel) st = clear_sel(ctx, &sub); /* rows of dense sequences carry no selection */
    }
done:
    free(sub_seqs);
    ifl_buffer_free(ctx, own_sel);
    return st;
}
