/* SPDX-License-Identifier: MIT
 *
 * exec_cpu.c -- the cpu implementation of the runtime's compute interface (exec.h): activations
 * in host memory, the linear layers on linear.c's kernels (the context's instruction set and
 * thread pool), the element-wise operations as plain loops in the calling thread (they cost a
 * few percent of a token next to the weights' reads).
 */
#define _POSIX_C_SOURCE 200809L
#include "exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cpu_exec {
    struct rt_exec    ex;
    struct rt_linear *lin;
    int64_t           half, tables_n; /* RoPE tables: [tables_n][half] floats each */
    float            *cos_t, *sin_t;
};

static struct cpu_exec *cpu(const struct rt_exec *ex) { return ex->impl; }

static int cpu_alloc(struct rt_exec *ex, size_t n, float **out) {
    (void)ex;
    *out = malloc(sizeof(float) * (n ? n : 1));
    return *out ? 0 : -1;
}

static void cpu_free(struct rt_exec *ex, float *p) {
    (void)ex;
    free(p);
}

static int cpu_embed(struct rt_exec *ex, const struct rt_mat *e, const int32_t *tokens, int64_t n, float scale,
                     float *x) {
    (void)ex;
    const int64_t H = e->cols;
    for (int64_t t = 0; t < n; t++) {
        const int64_t id  = tokens[t];
        float        *dst = x + t * H;
        for (int64_t j = 0; j < H; j++) {
            float v;
            if (e->type == RT_W_F32) memcpy(&v, (const float *)e->data + id * H + j, 4);
            else {
                uint16_t h;
                memcpy(&h, (const uint16_t *)e->data + id * H + j, 2);
                v = e->type == RT_W_BF16 ? ifl_bf16_to_f32(h) : ifl_f16_to_f32(h);
            }
            dst[j] = v * scale;
        }
    }
    return 0;
}

static int cpu_rmsnorm(struct rt_exec *ex, const float *x, const float *g, float *y, int64_t n, int64_t H,
                       double eps, float post) {
    (void)ex;
    for (int64_t t = 0; t < n; t++) {
        const float *xt = x + t * H;
        double       ss = 0;
        for (int64_t j = 0; j < H; j++) ss += (double)xt[j] * xt[j];
        float s = (float)(1.0 / sqrt(ss / (double)H + eps));
        for (int64_t j = 0; j < H; j++) y[t * H + j] = xt[j] * s * g[j] * post;
    }
    return 0;
}

static int cpu_linear(struct rt_exec *ex, const struct rt_mat *w, int n_mats, const float *x, int64_t n,
                      float *const *y) {
    return rt_linear_multi(cpu(ex)->lin, w, n_mats, x, n, y);
}

/* the fp32 recipe of the HF code: f32(p * rext), then f32(. * inv) without an FMA */
static int cpu_rope_tables(struct rt_exec *ex, const struct rt_rope *r, int64_t p0, int64_t n) {
    struct cpu_exec *c    = cpu(ex);
    const int64_t    half = r->head_dim / 2;
    if (n * half > c->tables_n * c->half) {
        float *cs = realloc(c->cos_t, sizeof(float) * (size_t)(n * half));
        if (cs) c->cos_t = cs;
        float *sn = cs ? realloc(c->sin_t, sizeof(float) * (size_t)(n * half)) : NULL;
        if (sn) c->sin_t = sn;
        if (!cs || !sn) return -1;
    }
    c->half = half, c->tables_n = n;
    for (int64_t t = 0; t < n; t++) {
        float pf = (float)(p0 + t);
        for (int64_t i = 0; i < half; i++) {
            volatile float a   = pf * r->rext[i];
            float          ang = a * r->inv[i];
            c->cos_t[t * half + i] = (float)cos((double)ang) * r->s;
            c->sin_t[t * half + i] = (float)sin((double)ang) * r->s;
        }
    }
    return 0;
}

static int cpu_rope(struct rt_exec *ex, float *u, int64_t n, int64_t nh) {
    const struct cpu_exec *c = cpu(ex);
    const int64_t          half = c->half, D = 2 * half;
    for (int64_t t = 0; t < n; t++) {
        const float *cs = c->cos_t + t * half, *sn = c->sin_t + t * half;
        for (int64_t h = 0; h < nh; h++) {
            float *x = u + (t * nh + h) * D;
            for (int64_t i = 0; i < half; i++) {
                float x0 = x[i], x1 = x[i + half];
                x[i]        = x0 * cs[i] - x1 * sn[i];
                x[i + half] = x1 * cs[i] + x0 * sn[i];
            }
        }
    }
    return 0;
}

static int cpu_swiglu(struct rt_exec *ex, float *g, const float *u, int64_t n) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) {
        float z = g[i];
        g[i]    = z / (1.0f + expf(-z)) * u[i];
    }
    return 0;
}

static int cpu_residual(struct rt_exec *ex, float *x, const float *o, float r, int64_t n) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) x[i] += r * o[i];
    return 0;
}

static int cpu_logits(struct rt_exec *ex, const struct rt_mat *w, const float *a, int64_t rows, float *logits) {
    return rt_linear_fwd(cpu(ex)->lin, w, a, rows, logits); /* host memory already */
}

static void cpu_linear_stats(const struct rt_exec *ex, double *seconds, double *flops) {
    rt_linear_stats(cpu(ex)->lin, seconds, flops);
}

static void cpu_linear_stats_reset(struct rt_exec *ex) { rt_linear_stats_reset(cpu(ex)->lin); }

static void cpu_destroy(struct rt_exec *ex) {
    struct cpu_exec *c = cpu(ex);
    rt_linear_destroy(c->lin);
    free(c->cos_t);
    free(c->sin_t);
    free(c);
}

static const struct rt_exec_ops cpu_ops = {
    .name               = "cpu",
    .destroy            = cpu_destroy,
    .alloc              = cpu_alloc,
    .free               = cpu_free,
    .embed              = cpu_embed,
    .rmsnorm            = cpu_rmsnorm,
    .linear             = cpu_linear,
    .rope_tables        = cpu_rope_tables,
    .rope               = cpu_rope,
    .swiglu             = cpu_swiglu,
    .residual           = cpu_residual,
    .logits             = cpu_logits,
    .linear_stats       = cpu_linear_stats,
    .linear_stats_reset = cpu_linear_stats_reset,
};

int rt_exec_cpu_create(struct ifl_ctx *ctx, struct rt_exec **out, char *err, size_t errlen) {
    *out               = NULL;
    struct cpu_exec *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (rt_linear_create(ctx, &c->lin, err, errlen) != 0) {
        free(c);
        return -1;
    }
    c->ex.ops  = &cpu_ops;
    c->ex.ctx  = ctx;
    c->ex.impl = c;
    *out       = &c->ex;
    return 0;
}

void rt_exec_destroy(struct rt_exec *ex) {
    if (ex) ex->ops->destroy(ex);
}
