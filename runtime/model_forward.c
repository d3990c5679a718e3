/* SPDX-License-Identifier: MIT
 *
 * model_forward.c -- the MiniCPM4 forward pass over one chunk of tokens (minicpm4.md §2, §4):
 *   x = scale_emb * E[tok]
 *   per layer: a = RMSNorm(x); q,k,v = a·W{q,k,v}ᵀ; LongRoPE on q and k (split-half pairs);
 *              append k, v to the layer's KV cache; attention of q over the cache (libinfllm:
 *              dense below dense_len, InfLLM-V2 sparse from there on); x += r * (att·Woᵀ);
 *              m = RMSNorm(x); x += r * ((silu(m·Wgᵀ) ⊙ m·Wuᵀ)·Wdᵀ)
 *   logits = (RMSNorm(x) / w)·W_headᵀ          r = scale_depth/sqrt(L), w = H/dim_model_base
 * Everything is f32 (weights converted as they are read); the cache rounds k, v (and the
 * queries it attends with) to its storage dtype. This file is the one description of the model:
 * every operation on activations goes through the compute interface m->ex (exec.h), so another
 * implementation (a GPU one) runs the same description.
 */
#define _POSIX_C_SOURCE 200809L
#include "model_impl.h"
#include "errmsg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- RoPE frequencies (§2.4): the fp32 recipe of the HF code ---- */

int rt_model_rope_init(struct rt_model *m, int64_t max_context, char *err, size_t errlen) {
    const struct rt_config *c    = &m->cfg;
    const int64_t           half = c->head_dim / 2;
    struct rt_rope         *r    = &m->rope;
    r->head_dim                  = c->head_dim;
    r->inv                       = malloc(sizeof(float) * (size_t)half);
    r->rext                      = malloc(sizeof(float) * (size_t)half);
    if (!r->inv || !r->rext) return rt_fail(err, errlen, "out of memory");
    int64_t      max_pos = c->max_position_embeddings > max_context ? c->max_position_embeddings : max_context;
    const double *ext    = NULL;
    r->s                 = 1.0f;
    if (c->rope_type == RT_ROPE_LONGROPE) {
        int64_t orig = c->rope_original_max;
        ext          = max_pos > orig ? c->rope_long : c->rope_short; /* the HF rule, fixed at load */
        if (max_pos > orig)
            r->s = (float)sqrt(1.0 + log((double)max_pos / (double)orig) / log((double)orig));
    }
    for (int64_t i = 0; i < half; i++) {
        float e    = (float)(2 * i) / (float)c->head_dim;
        float p    = (float)pow((float)c->rope_theta, e);
        r->inv[i]  = 1.0f / p;
        float x    = 1.0f;
        if (ext) x = (float)ext[i];
        else if (c->rope_type == RT_ROPE_LINEAR) x = (float)c->rope_linear_factor;
        r->rext[i] = 1.0f / x;
    }
    return 0;
}

/* ---- activations ---- */

enum { N_ACT = 9 };

/* The activation buffers, in the order of their sizes in ensure_scratch. */
static void act_slots(struct rt_model *m, float **slot[N_ACT]) {
    float **all[N_ACT] = {&m->x, &m->a, &m->q, &m->k, &m->v, &m->att, &m->o, &m->g, &m->u};
    memcpy(slot, all, sizeof all);
}

void rt_model_scratch_free(struct rt_model *m) {
    float **slot[N_ACT];
    act_slots(m, slot);
    for (int i = 0; i < N_ACT; i++) {
        m->ex->ops->free(m->ex, *slot[i]);
        *slot[i] = NULL;
    }
    m->scratch_n = 0;
}

static int ensure_scratch(struct rt_model *m, int64_t n, char *err, size_t errlen) {
    if (n <= m->scratch_n) return 0;
    const struct rt_config *c = &m->cfg;
    const int64_t H = c->hidden_size, I = c->intermediate_size;
    const int64_t QD = c->num_attention_heads * c->head_dim, KD = c->num_key_value_heads * c->head_dim;
    const int64_t sizes[N_ACT] = {H, H, QD, KD, KD, QD, H, I, I};
    float       **slot[N_ACT];
    act_slots(m, slot);
    rt_model_scratch_free(m);
    for (int i = 0; i < N_ACT; i++)
        if (m->ex->ops->alloc(m->ex, (size_t)(n * sizes[i]), slot[i]) != 0) {
            rt_model_scratch_free(m);
            return rt_fail(err, errlen, "out of memory for a chunk of %lld tokens", (long long)n);
        }
    m->scratch_n = n;
    return 0;
}

/* ---- the chunk ---- */

static int layer_forward(struct rt_model *m, struct rt_layer *L, int64_t n, char *err, size_t errlen) {
    const struct rt_config   *c  = &m->cfg;
    struct rt_exec           *ex = m->ex;
    const struct rt_exec_ops *op = ex->ops;
    const int64_t H = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    const int64_t Hq = c->num_attention_heads, Hkv = c->num_key_value_heads;
    const float   r = (float)(c->scale_depth / sqrt((double)c->num_hidden_layers));

    op->rmsnorm(ex, m->x, L->g_in, m->a, n, H, c->rms_norm_eps, 1.0f);
    struct rt_mat qkv[3] = {L->wq, L->wk, L->wv};
    float        *out3[3] = {m->q, m->k, m->v};
    if (op->linear(ex, qkv, 3, m->a, n, out3) != 0) return rt_fail(err, errlen, "out of memory");
    op->rope(ex, m->q, n, Hq);
    op->rope(ex, m->k, n, Hkv);

    int64_t           shp_kv[3] = {n, Hkv, D}, shp_q[3] = {n, Hq, D};
    struct ifl_tensor tk = ifl_tensor_make(m->k, IFL_DTYPE_F32, 3, shp_kv);
    struct ifl_tensor tv = ifl_tensor_make(m->v, IFL_DTYPE_F32, 3, shp_kv);
    struct ifl_tensor tq = ifl_tensor_make(m->q, IFL_DTYPE_F32, 3, shp_q);
    struct ifl_tensor to = ifl_tensor_make(m->att, IFL_DTYPE_F32, 3, shp_q);
    if (ifl_kv_cache_append(m->ctx, L->cache, 0, &tk, &tv) != IFL_STATUS_OK)
        return rt_fail(err, errlen, "KV cache append: %s", ifl_ctx_errmsg(m->ctx));
    if (ifl_kv_cache_attn(m->ctx, L->cache, 0, &tq, &to, NULL, NULL, NULL) != IFL_STATUS_OK)
        return rt_fail(err, errlen, "attention: %s", ifl_ctx_errmsg(m->ctx));

    if (op->linear(ex, &L->wo, 1, m->att, n, &m->o) != 0) return rt_fail(err, errlen, "out of memory");
    op->residual(ex, m->x, m->o, r, n * H);

    op->rmsnorm(ex, m->x, L->g_post, m->a, n, H, c->rms_norm_eps, 1.0f);
    struct rt_mat gu[2]   = {L->wg, L->wu};
    float        *out2[2] = {m->g, m->u};
    if (op->linear(ex, gu, 2, m->a, n, out2) != 0) return rt_fail(err, errlen, "out of memory");
    op->swiglu(ex, m->g, m->u, n * I);
    if (op->linear(ex, &L->wd, 1, m->g, n, &m->o) != 0) return rt_fail(err, errlen, "out of memory");
    op->residual(ex, m->x, m->o, r, n * H);
    return 0;
}

int rt_model_run_chunk(struct rt_model *m, const int32_t *tokens, int64_t n, float *logits, int all,
                       char *err, size_t errlen) {
    const struct rt_config   *c   = &m->cfg;
    struct rt_exec           *ex  = m->ex;
    const int64_t             H   = c->hidden_size;
    const int64_t             len = ifl_kv_cache_len(m->layers[0].cache, 0);
    if (n < 1) return rt_fail(err, errlen, "no tokens");
    if (len + n > m->capacity)
        return rt_fail(err, errlen, "%lld tokens after %lld cached exceed the context of %lld tokens",
                    (long long)n, (long long)len, (long long)m->capacity);
    for (int64_t t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return rt_fail(err, errlen, "token %lld (at %lld) is outside the vocabulary [0, %lld)",
                        (long long)tokens[t], (long long)t, (long long)c->vocab_size);
    if (ensure_scratch(m, n, err, errlen) != 0) return -1;
    ex->ops->embed(ex, &m->embed, tokens, n, (float)c->scale_emb, m->x);
    if (ex->ops->rope_tables(ex, &m->rope, len, n) != 0) return rt_fail(err, errlen, "out of memory");
    for (int64_t l = 0; l < c->num_hidden_layers; l++)
        if (layer_forward(m, &m->layers[l], n, err, errlen) != 0) {
            for (int64_t j = 0; j <= l; j++) ifl_kv_cache_truncate(m->ctx, m->layers[j].cache, 0, len);
            return -1;
        }
    if (!logits) return 0;
    int64_t rows = all ? n : 1;
    float  *h    = m->x + (all ? 0 : (n - 1) * H);
    ex->ops->rmsnorm(ex, h, m->g_final, m->a, rows, H, c->rms_norm_eps, (float)(c->dim_model_base / (double)H));
    if (ex->ops->logits(ex, &m->head, m->a, rows, logits) != 0) {
        for (int64_t j = 0; j < c->num_hidden_layers; j++) ifl_kv_cache_truncate(m->ctx, m->layers[j].cache, 0, len);
        return rt_fail(err, errlen, "out of memory");
    }
    /* The tokens were valid, so a NaN or Inf logit means the forward pass left float32's range
     * (weights or activations): an error, for generation and for `infllm logits` alike. */
    for (int64_t i = 0; i < rows * c->vocab_size; i++)
        if (!isfinite(logits[i])) {
            for (int64_t j = 0; j < c->num_hidden_layers; j++) ifl_kv_cache_truncate(m->ctx, m->layers[j].cache, 0, len);
            return rt_fail(err, errlen,
                           "the logit of token id %lld at position %lld is %s: the forward pass left the float32 "
                           "range (the checkpoint's weights or activations overflow)",
                           (long long)(i % c->vocab_size), (long long)(len + (all ? i / c->vocab_size : n - 1)),
                           isnan(logits[i]) ? "NaN" : "infinite");
        }
    return 0;
}
