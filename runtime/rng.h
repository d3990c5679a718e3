/* SPDX-License-Identifier: MIT
 *
 * rng.h -- the tree's seeded random numbers, in one place: the synthetic inputs of the tool (demo,
 * bench, bench --model's cache fill), the tests' generators, the sampler and the random
 * checkpoints of model-init all draw from here.
 *
 *   - rt_rng: xorshift64* (Marsaglia's xorshift, Vigna's multiplier), 53-bit uniforms in [0, 1)
 *     and Box-Muller normals. Small and fast; plenty for test data and synthetic activations.
 *   - rt_splitmix64: Steele et al.'s SplitMix64 step, the mixer that turns a user's seed (or a
 *     counter, for model-init's random access) into well-spread states.
 *   - rt_rng2: xorshift128+, the sampler's stream (a longer period for long generations), seeded
 *     through rt_splitmix64.
 * Each caller keeps its own seeding rule (so every stream, hence every output, is what it was).
 */
#ifndef INFLLM_RT_RNG_H
#define INFLLM_RT_RNG_H

#include <stdint.h>

struct rt_rng {
    uint64_t s; /* never 0 */
};

/* Starts the stream at state s (0 becomes 1: xorshift stays at 0 forever). */
void rt_rng_init(struct rt_rng *r, uint64_t s);

/* Uniform in [0, 1) with 53 random bits. */
double rt_rng_uniform(struct rt_rng *r);

/* A standard normal from two uniforms (Box-Muller, cosine branch). With second != NULL the sine
 * branch of the same pair is returned there too (an independent normal). */
double rt_rng_normal(struct rt_rng *r, double *second);

/* The next SplitMix64 output; advances *x. */
uint64_t rt_splitmix64(uint64_t *x);

struct rt_rng2 {
    uint64_t s[2]; /* not both 0 */
};

/* Seeds from seed through two SplitMix64 outputs. */
void rt_rng2_init(struct rt_rng2 *r, uint64_t seed);

/* Uniform in [0, 1) with 53 random bits. */
double rt_rng2_uniform(struct rt_rng2 *r);

#endif /* INFLLM_RT_RNG_H */
