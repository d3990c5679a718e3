/* SPDX-License-Identifier: MIT
 *
 * model.h -- the MiniCPM4 model runtime: load a Hugging Face checkpoint directory (config.json,
 * model.safetensors or a sharded index), run the forward pass on the CPU with InfLLM-V2
 * attention through libinfllm's KV cache (one cache per layer: chunked prefill and decode, dense
 * below the sparse_config's dense_len, sparse from there on). Spec: shared/docs/minicpm4.md §2, §4,
 * §5; docs/model.md says how this implementation maps onto it.
 *
 * Numerics: weights stay in their file dtype (bf16, f16 or f32, memory-mapped); activations and
 * accumulation are f32; the KV cache stores bf16 for 16-bit checkpoints, f32 for f32 ones
 * (rt_model_options.kv_dtype overrides). Every call returns 0 or -1 with a message in err.
 * A model is not thread-safe (one call at a time); it uses n_threads worker threads inside calls.
 */
#ifndef INFLLM_RT_MODEL_H
#define INFLLM_RT_MODEL_H

#include "rt_api.h"

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    RT_ATTN_AUTO   = 0, /* sparse_config decides (dense_len); no sparse_config: always dense */
    RT_ATTN_DENSE  = 1, /* always dense */
    RT_ATTN_SPARSE = 2, /* always sparse (dense_len -1); without sparse_config, libinfllm's
                           defaults (MiniCPM4.1's 64/32/16/1/2048/64) */
};

enum {
    RT_KV_AUTO = 0, /* bf16 for bf16/f16 checkpoints, f32 for f32 ones */
    RT_KV_BF16 = 1,
    RT_KV_F32  = 2,
};

struct rt_model_options {
    int     n_threads;   /* 0 = all cores */
    int     attention;   /* RT_ATTN_* */
    int64_t max_context; /* cache capacity in tokens; 0 = max_position_embeddings. Above
                            max_position_embeddings the LongRoPE tables are built as the HF code
                            does for a sequence that long (long factors, attention factor s of
                            max_context), once, at load */
    int     kv_dtype;    /* RT_KV_* */
};

RT_API struct rt_model_options rt_model_options_default(void);

struct rt_model; /* a loaded checkpoint + one KV cache per layer + scratch */

/* Loads dir/config.json and dir/model.safetensors (or dir/model.safetensors.index.json and its
 * shards), memory-mapped. 0 ok; else -1 and err names the file and the tensor or key. */
RT_API int  rt_model_load(const char *dir, const struct rt_model_options *opt, struct rt_model **out,
                          char *err, size_t errlen);
RT_API void rt_model_free(struct rt_model *m); /* NULL: no-op */

RT_API const struct rt_config *rt_model_config(const struct rt_model *m);
RT_API int64_t                 rt_model_len(const struct rt_model *m);      /* tokens in the cache */
RT_API int64_t                 rt_model_capacity(const struct rt_model *m); /* cache capacity */
RT_API void                    rt_model_reset(struct rt_model *m);          /* empty the caches */

/* Appends tokens (prefill in chunks of `chunk` tokens, 0 = 512; progress(user, done, total)
 * after each chunk, may be NULL) and writes the logits of the LAST token into logits[vocab]
 * (NULL: none). On error the caches are taken back to their length before the call. Here and in
 * decode and forward, a logit that is NaN or infinite is an error (the forward pass overflowed). */
RT_API int rt_model_prefill(struct rt_model *m, const int32_t *tokens, int64_t n, int64_t chunk,
                            void (*progress)(void *user, int64_t done, int64_t total), void *user,
                            float *logits, char *err, size_t errlen);

/* One token; logits[vocab] (NULL: none). */
RT_API int rt_model_decode(struct rt_model *m, int32_t token, float *logits, char *err, size_t errlen);

/* Appends n tokens as one chunk and writes the logits of EVERY one: logits[n][vocab] (NULL:
 * none). What `infllm logits` uses. */
RT_API int rt_model_forward(struct rt_model *m, const int32_t *tokens, int64_t n, float *logits,
                            char *err, size_t errlen);

/* Shortens the caches to their first n tokens (0 <= n <= rt_model_len). */
RT_API int rt_model_truncate(struct rt_model *m, int64_t n, char *err, size_t errlen);

/* ---- for the benchmark and tests ---- */

/* Appends n rows of synthetic keys and values (N(0,1)·scale, seeded) to every layer's cache,
 * without running the model: a quick way to reach a long context. */
RT_API int rt_model_fill_synthetic(struct rt_model *m, int64_t n, uint64_t seed, char *err, size_t errlen);

/* The dense_len the caches use (-1: always sparse), and the number of worker threads. */
RT_API int64_t rt_model_dense_len(const struct rt_model *m);
RT_API int     rt_model_threads(const struct rt_model *m);

/* Bytes of weights one decode step reads (every matrix once, one embedding row). */
RT_API uint64_t rt_model_weight_bytes(const struct rt_model *m);

/* Seconds spent in the linear layers and their FLOPs since the last reset of the counters. */
RT_API void rt_model_linear_stats(const struct rt_model *m, double *seconds, double *flops);
RT_API void rt_model_linear_stats_reset(struct rt_model *m);

#ifdef __cplusplus
}
#endif

#endif /* INFLLM_RT_MODEL_H */
