/* SPDX-License-Identifier: MIT
 *
 * linear.c -- see linear.h: the kernels of the context's instruction-set level, the split of a
 * linear layer into tasks on the context's worker threads (ifl_ctx_parallel), per-thread packing
 * scratch, and time/FLOP counters.
 */
#define _POSIX_C_SOURCE 200809L
#include "linear.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GEMV_MAX_TOKENS 3         /* fewer tokens than this go through the GEMV */
#define GEMV_TASK_BYTES (96 << 10) /* weight bytes per GEMV task */
#define MAX_TASK_MATS   8

struct rt_linear {
    struct ifl_ctx              *ctx; /* whose worker threads run the tasks */
    const struct rt_lin_kernels *k;
    int                          n_threads;
    float                       *pack; /* n_threads x RT_GEMM_KC x k->nr */
    float                       *xp;   /* de-interleaved activations of a GEMV call */
    int64_t                      xp_cap;
    double                       seconds, flops;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int rt_linear_create(struct ifl_ctx *ctx, struct rt_linear **out, char *err, size_t errlen) {
    *out                  = NULL;
    struct rt_linear *lin = calloc(1, sizeof *lin);
    if (!lin) goto oom;
    /* the context's level: libinfllm resolved it once (ifl_simd_resolve) for its own kernels */
    enum ifl_simd simd = ifl_ctx_simd(ctx);
    lin->ctx           = ctx;
    lin->k             = simd == IFL_SIMD_AVX512 ? &rt_lin_kernels_avx512
                         : simd == IFL_SIMD_AVX2 ? &rt_lin_kernels_avx2
                                                 : &rt_lin_kernels_scalar;
    lin->n_threads     = ifl_ctx_threads(ctx);
    lin->pack          = malloc(sizeof(float) * (size_t)lin->n_threads * RT_GEMM_KC * (size_t)lin->k->nr);
    if (!lin->pack) {
        free(lin);
        goto oom;
    }
    *out = lin;
    return 0;
oom:
    snprintf(err, errlen, "out of memory for the linear layers' scratch");
    return -1;
}

void rt_linear_destroy(struct rt_linear *lin) {
    if (!lin) return;
    free(lin->pack);
    free(lin->xp);
    free(lin);
}

/* ---- one run: tasks are (matrix, row range) pieces of every matrix ---- */

struct run {
    const struct rt_linear *lin;
    const struct rt_mat    *w;
    float *const           *y;
    const float            *x, *xp;
    int64_t                 n;
    int                     n_mats, gemv;
    int64_t                 rows_per_task[MAX_TASK_MATS];
    int64_t                 first_task[MAX_TASK_MATS + 1]; /* prefix sums of tasks per matrix */
};

static void run_task(void *arg, int64_t task, int thread) {
    const struct run *r = arg;
    int               m = 0;
    while (task >= r->first_task[m + 1]) m++;
    const struct rt_mat *w  = &r->w[m];
    int64_t              r0 = (task - r->first_task[m]) * r->rows_per_task[m];
    int64_t              r1 = r0 + r->rows_per_task[m] < w->rows ? r0 + r->rows_per_task[m] : w->rows;
    if (r->gemv)
        r->lin->k->gemv(w, r->x, r->xp, r->n, r->y[m], w->rows, r0, r1);
    else
        r->lin->k->gemm(w, r->x, r->n, r->y[m], w->rows, r0, r1,
                        r->lin->pack + (size_t)thread * RT_GEMM_KC * (size_t)r->lin->k->nr);
}

int rt_linear_multi(struct rt_linear *lin, const struct rt_mat *w, int n_mats, const float *x,
                    int64_t n, float *const *y) {
    if (n_mats < 1 || n_mats > MAX_TASK_MATS || n < 1) return -1;
    double     t0 = now();
    struct run r;
    memset(&r, 0, sizeof r);
    r.lin = lin, r.w = w, r.y = y, r.x = x, r.n = n, r.n_mats = n_mats;
    r.gemv = n < GEMV_MAX_TOKENS;
    if (r.gemv) {
        int64_t need = n * w[0].cols;
        if (need > lin->xp_cap) {
            float *p = realloc(lin->xp, sizeof(float) * (size_t)need);
            if (!p) return -1;
            lin->xp = p, lin->xp_cap = need;
        }
        lin->k->deinterleave(x, n, w[0].cols, lin->xp);
        r.xp = lin->xp;
    }
    const int64_t nr = lin->k->nr;
    int64_t total_rows = 0;
    for (int m = 0; m < n_mats; m++) total_rows += w[m].rows;
    for (int m = 0; m < n_mats; m++) {
        int64_t rpt;
        if (r.gemv) {
            int64_t row_bytes = w[m].cols * (w[m].type == RT_W_F32 ? 4 : 2);
            rpt = GEMV_TASK_BYTES / (row_bytes > 0 ? row_bytes : 1);
            rpt = rpt < 4 ? 4 : rpt - rpt % 4;
        } else {
            /* about 8 tasks per thread over all matrices, whole panels */
            int64_t want = total_rows / (8 * lin->n_threads);
            rpt          = (want / nr) * nr;
            if (rpt < nr) rpt = nr;
            if (rpt > 16 * nr) rpt = 16 * nr;
        }
        r.rows_per_task[m]    = rpt;
        r.first_task[m + 1] = r.first_task[m] + (w[m].rows + rpt - 1) / rpt;
        lin->flops += 2.0 * (double)n * (double)w[m].rows * (double)w[m].cols;
    }
    ifl_ctx_parallel(lin->ctx, r.first_task[n_mats], run_task, &r);
    lin->seconds += now() - t0;
    return 0;
}

int rt_linear_fwd(struct rt_linear *lin, const struct rt_mat *w, const float *x, int64_t n, float *y) {
    return rt_linear_multi(lin, w, 1, x, n, &y);
}

void rt_linear_stats(const struct rt_linear *lin, double *seconds, double *flops) {
    if (seconds) *seconds = lin->seconds;
    if (flops) *flops = lin->flops;
}

void rt_linear_stats_reset(struct rt_linear *lin) { lin->seconds = lin->flops = 0; }
