/* SPDX-License-Identifier: MIT
 *
 * sample.c -- rt_sample: greedy, or temperature -> top-k -> top-p -> a draw. The softmax subtracts
 * the largest logit first (no overflow) and works in double; candidates are ordered by logit,
 * then by id, so ties resolve the same way everywhere.
 */
#include "sample.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

struct cand {
    float   logit;
    int32_t id;
};

struct rt_sampler {
    struct rt_sampler_params p;
    int64_t                  n_vocab;
    struct rt_rng2           rng;
    struct cand             *cand;
    double                  *prob;
};

struct rt_sampler_params rt_sampler_params_default(void) {
    struct rt_sampler_params p = {0.0, 1.0, 0, 1};
    return p;
}

int rt_sampler_new(const struct rt_sampler_params *p, int64_t n_vocab, struct rt_sampler **out, char *err,
                   size_t errlen) {
    if (out) *out = NULL;
    const char *bad = NULL;
    if (!p || !out) bad = "NULL argument";
    else if (!(p->temperature >= 0) || !isfinite(p->temperature)) bad = "temperature must be >= 0";
    else if (!(p->top_p > 0 && p->top_p <= 1)) bad = "top_p must be in (0, 1]";
    else if (p->top_k < 0) bad = "top_k must be >= 0";
    else if (n_vocab <= 0 || n_vocab > INT32_MAX) bad = "vocabulary size out of range";
    if (bad) {
        if (err && errlen) snprintf(err, errlen, "sampler: %s", bad);
        return -1;
    }
    struct rt_sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
        s->prob = malloc((size_t)n_vocab * sizeof *s->prob);
    }
    if (!s || !s->cand || !s->prob) {
        rt_sampler_free(s);
        if (err && errlen) snprintf(err, errlen, "sampler: out of memory");
        return -1;
    }
    s->p       = *p;
    s->n_vocab = n_vocab;
    rt_rng2_init(&s->rng, p->seed);
    *out = s;
    return 0;
}

void rt_sampler_free(struct rt_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->prob);
    free(s);
}

static int by_logit_desc(const void *x, const void *y) {
    const struct cand *a = x, *b = y;
    if (a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

int32_t rt_sample(struct rt_sampler *s, const float *logits) {
    if (!s || !logits) return -1;
    int32_t best = -1;
    float   max  = -INFINITY;
    for (int64_t i = 0; i < s->n_vocab; i++)
        if (logits[i] > max) max = logits[i], best = (int32_t)i; /* NaN never compares greater */
    if (best < 0 || s->p.temperature == 0 || isinf(max) != 0) return best;

    /* candidates: finite or +inf logits only; sorted by logit (ties: lower id first) */
    int64_t n = 0;
    for (int64_t i = 0; i < s->n_vocab; i++)
        if (logits[i] > -INFINITY) s->cand[n++] = (struct cand){logits[i], (int32_t)i};
    qsort(s->cand, (size_t)n, sizeof *s->cand, by_logit_desc);
    if (s->p.top_k > 0 && s->p.top_k < n) {
        /* keep ties with the k-th logit out, as transformers' top-k keeps exactly k */
        n = s->p.top_k;
    }
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        s->prob[i] = exp(((double)s->cand[i].logit - (double)max) / s->p.temperature);
        sum += s->prob[i];
    }
    if (s->p.top_p < 1) {
        /* the smallest head of the ordered list whose mass reaches top_p (at least one token) */
        double  acc  = 0;
        int64_t keep = 0;
        while (keep < n) {
            acc += s->prob[keep++] / sum;
            if (acc >= s->p.top_p) break;
        }
        n   = keep;
        sum = 0;
        for (int64_t i = 0; i < n; i++) sum += s->prob[i];
    }
    double r = rt_rng2_uniform(&s->rng) * sum, acc = 0;
    for (int64_t i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc) return s->cand[i].id;
    }
    return s->cand[n - 1].id; /* r landed on the rounding at the very end */
}
