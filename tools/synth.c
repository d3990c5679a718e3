/* SPDX-License-Identifier: MIT
 *
 * synth.c -- see synth.h.
 */
#include "synth.h"

#include <math.h>
#include <stdlib.h>

void synth_seed(struct synth *s, uint64_t seed, int pairs) {
    rt_rng_init(&s->r, 0x9E3779B97F4A7C15ull ^ seed * 0xBF58476D1CE4E5B9ull);
    s->pairs = pairs;
    s->have  = 0;
}

double synth_normal(struct synth *s) {
    if (!s->pairs) return rt_rng_normal(&s->r, NULL);
    if (s->have) {
        s->have = 0;
        return s->spare;
    }
    s->have = 1;
    return rt_rng_normal(&s->r, &s->spare);
}

double synth_uniform(struct synth *s) { return rt_rng_uniform(&s->r); }

void synth_store(void *buf, enum ifl_dtype dt, size_t i, float x) {
    switch (dt) {
    case IFL_DTYPE_BF16: ((uint16_t *)buf)[i] = ifl_f32_to_bf16(x); break;
    case IFL_DTYPE_F16: ((uint16_t *)buf)[i] = ifl_f32_to_f16(x); break;
    case IFL_DTYPE_F32: ((float *)buf)[i] = x; break;
    default: ((double *)buf)[i] = x; break;
    }
}

void synth_normals(void *buf, enum ifl_dtype dt, size_t n, struct synth *s) {
    for (size_t i = 0; i < n; i++) synth_store(buf, dt, i, (float)synth_normal(s));
}

/* x_t = sqrt(1-w) z_t + sqrt(w) e_t with z_t = rho z_{t-1} + sqrt(1-rho^2) n_t (unit variance). */
#define AR_RHO   0.995
#define AR_NOISE 0.005
int synth_ar1(void *buf, enum ifl_dtype dt, int64_t rows, int64_t heads, int64_t d, struct synth *s) {
    const size_t width = (size_t)(heads * d);
    double      *z     = malloc(width * sizeof *z);
    if (z == NULL) return -1;
    const double a = sqrt(1.0 - AR_RHO * AR_RHO), sz = sqrt(1.0 - AR_NOISE), se = sqrt(AR_NOISE);
    for (size_t j = 0; j < width; j++) z[j] = synth_normal(s);
    for (int64_t t = 0; t < rows; t++)
        for (size_t j = 0; j < width; j++) {
            if (t > 0) z[j] = AR_RHO * z[j] + a * synth_normal(s);
            synth_store(buf, dt, (size_t)t * width + j, (float)(sz * z[j] + se * synth_normal(s)));
        }
    free(z);
    return 0;
}
