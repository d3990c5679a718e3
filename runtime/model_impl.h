/* SPDX-License-Identifier: MIT
 *
 * model_impl.h -- the insides of struct rt_model, shared by model.c (lifecycle, API),
 * model_load.c (checkpoint files -> weight table) and model_forward.c (the forward pass, on the
 * compute interface of exec.h).
 */
#ifndef INFLLM_RT_MODEL_IMPL_H
#define INFLLM_RT_MODEL_IMPL_H

#include "exec.h"
#include "infllm.h"
#include "model.h"
#include "safetensors.h"

struct rt_layer {
    struct rt_mat        wq, wk, wv, wo;  /* [Hq*D, H], [Hkv*D, H] x2, [H, Hq*D] */
    struct rt_mat        wg, wu, wd;      /* [I, H] x2, [H, I] */
    float               *g_in, *g_post;   /* [H] RMSNorm weights, converted to f32 */
    struct ifl_kv_cache *cache;           /* post-RoPE K, V of this layer */
};

struct rt_model {
    struct rt_config  cfg;
    struct st_file   *files; /* mapped shards */
    int               n_files;
    struct rt_mat     embed; /* [V, H] */
    struct rt_mat     head;  /* [V, H]: lm_head, or embed when tied */
    float            *g_final;
    struct rt_layer  *layers;
    struct rt_exec   *ex;  /* the compute implementation the forward pass runs on */
    struct ifl_ctx   *ctx; /* its libinfllm context: the KV caches */
    int64_t           capacity;
    struct ifl_sparse_config scfg; /* what the caches use (dense_len by the attention mode) */
    enum ifl_dtype    kv_dtype;
    struct rt_rope    rope;
    /* activations (the exec's memory) for chunks of up to scratch_n tokens */
    int64_t           scratch_n;
    float            *x, *a, *q, *k, *v, *att, *o, *g, *u; /* [n][H], ..., [n][I] */
};

/* model_load.c: maps the checkpoint files of dir and fills embed, head, g_final, layers[].
 * m->cfg is already parsed. Returns 0, or -1 with a message. */
int rt_model_load_weights(struct rt_model *m, const char *dir, char *err, size_t errlen);

/* model_forward.c: appends n tokens (one chunk) and writes logits: every row (all != 0:
 * logits[n][V]) or only the last (logits[V]); logits NULL: none. */
int rt_model_run_chunk(struct rt_model *m, const int32_t *tokens, int64_t n, float *logits, int all,
                       char *err, size_t errlen);

/* model_forward.c: the RoPE frequencies of the config for a context of max_context tokens. */
int rt_model_rope_init(struct rt_model *m, int64_t max_context, char *err, size_t errlen);

/* model_forward.c: frees the activations (before the exec goes). */
void rt_model_scratch_free(struct rt_model *m);

#endif /* INFLLM_RT_MODEL_IMPL_H */
