/* SPDX-License-Identifier: MIT
 *
 * rng.c -- see rng.h.
 */
#include "rng.h"

#include <math.h>

#define TO_UNIT (1.0 / 9007199254740992.0) /* 2^-53 */

void rt_rng_init(struct rt_rng *r, uint64_t s) { r->s = s ? s : 1; }

double rt_rng_uniform(struct rt_rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (double)((r->s * 0x2545F4914F6CDD1Dull) >> 11) * TO_UNIT;
}

double rt_rng_normal(struct rt_rng *r, double *second) {
    double u = rt_rng_uniform(r), v = rt_rng_uniform(r);
    double m = sqrt(-2.0 * log(u + 1e-300)); /* u may be 0 */
    if (second) *second = m * sin(6.283185307179586 * v);
    return m * cos(6.283185307179586 * v);
}

uint64_t rt_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void rt_rng2_init(struct rt_rng2 *r, uint64_t seed) {
    r->s[0] = rt_splitmix64(&seed);
    r->s[1] = rt_splitmix64(&seed);
    if ((r->s[0] | r->s[1]) == 0) r->s[1] = 1;
}

double rt_rng2_uniform(struct rt_rng2 *r) {
    uint64_t a = r->s[0], b = r->s[1];
    r->s[0] = b;
    a ^= a << 23;
    r->s[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    return (double)((r->s[1] + b) >> 11) * TO_UNIT;
}
