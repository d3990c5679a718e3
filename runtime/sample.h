/* SPDX-License-Identifier: MIT
 *
 * sample.h -- picking the next token from logits (minicpm4.md §7): greedy at temperature 0, else
 * temperature, then top-k (0: off), then top-p (nucleus), in transformers' order, and a draw from
 * a seeded PRNG, so a given seed gives the same tokens every run on every machine (the draw
 * depends only on the seed and the logits, not on threads or time).
 */
#ifndef INFLLM_RT_SAMPLE_H
#define INFLLM_RT_SAMPLE_H

#include "rt_api.h"

#include <stddef.h>
#include <stdint.h>

struct rt_sampler_params {
    double   temperature; /* 0: greedy (argmax, lowest id on ties); else > 0 */
    double   top_p;       /* (0, 1]; 1: off */
    int64_t  top_k;       /* 0: off */
    uint64_t seed;
};

RT_API struct rt_sampler_params rt_sampler_params_default(void); /* greedy, top_p 1, top_k 0, seed 1 */

struct rt_sampler;

/* A sampler for logits of n_vocab entries. 0, or -1 with a message (bad parameters). */
RT_API int  rt_sampler_new(const struct rt_sampler_params *p, int64_t n_vocab, struct rt_sampler **out, char *err,
                           size_t errlen);
RT_API void rt_sampler_free(struct rt_sampler *s); /* NULL: no-op */

/* The next token id, or -1 when no logit is finite (NaN counts as -inf). logits is not changed. */
RT_API int32_t rt_sample(struct rt_sampler *s, const float *logits);

#endif /* INFLLM_RT_SAMPLE_H */
