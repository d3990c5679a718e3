/* SPDX-License-Identifier: MIT
 *
 * synth.h -- the synthetic inputs of `infllm bench` and `infllm demo`: one seeding rule and one
 * Gaussian source (runtime/rng.h's xorshift64* and Box-Muller), independent values, and locally
 * correlated ones (as in text), stored in any float dtype.
 */
#ifndef INFLLM_SYNTH_H
#define INFLLM_SYNTH_H

#include "infllm.h"

#include "../runtime/rng.h"

#include <stddef.h>
#include <stdint.h>

struct synth {
    struct rt_rng r;
    int           pairs; /* 1: both normals of each Box-Muller pair (the bench's stream), 0: the
                            first of each (the demo's); kept so each tool's inputs stay what they were */
    int           have;
    double        spare;
};

/* The stream of seed s. */
void synth_seed(struct synth *s, uint64_t seed, int pairs);

/* One standard normal; a uniform in [0, 1). */
double synth_normal(struct synth *s);
double synth_uniform(struct synth *s);

/* buf[i] (element i of dtype dt: f64, f32, f16 or bf16) = x, rounded to nearest even. */
void synth_store(void *buf, enum ifl_dtype dt, size_t i, float x);

/* n independent standard normals into buf (dtype dt). */
void synth_normals(void *buf, enum ifl_dtype dt, size_t n, struct synth *s);

/* rows x heads x d values, unit variance: per (head, dim) a stationary AR(1) process along the
 * rows (rho 0.995) plus 0.5% white noise, like the keys of neighbouring tokens of a text.
 * Returns 0, or -1 out of memory. */
int synth_ar1(void *buf, enum ifl_dtype dt, int64_t rows, int64_t heads, int64_t d, struct synth *s);

#endif /* INFLLM_SYNTH_H */
