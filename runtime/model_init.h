/* SPDX-License-Identifier: MIT
 *
 * model_init.h -- randomly initialised MiniCPM4 checkpoints in the Hugging Face layout
 * (config.json with the real keys, model.safetensors or shards + model.safetensors.index.json,
 * generation_config.json), for tests and benchmarks. Tensors are generated and written one
 * piece at a time, so an 8B checkpoint needs little memory.
 */
#ifndef INFLLM_RT_MODEL_INIT_H
#define INFLLM_RT_MODEL_INIT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "linear.h"

/* The config of a named shape: "tiny" (2 layers, H 64, 4 heads, 2 KV heads, V 320, I 128),
 * "minicpm4-0.5b", "minicpm4-8b" (minicpm4.md §1.1). sparse: add a sparse_config (the
 * documented block; for tiny one scaled down so dense_len 128 is crossed early). */
int rt_init_preset(const char *name, int sparse, struct rt_config *cfg, char *err, size_t errlen);

/* Writes cfg's config.json to path (the keys of a released MiniCPM4 config). */
int rt_init_write_config(const char *path, const struct rt_config *cfg, const char *torch_dtype,
                         char *err, size_t errlen);

struct rt_init_options {
    enum rt_wtype dtype;       /* RT_W_BF16 (default), RT_W_F16 or RT_W_F32 */
    uint64_t      seed;        /* 1 */
    int64_t       shard_bytes; /* 0: one model.safetensors up to 5 GB of weights, shards of
                                  about 5 GB above; > 0: shards of about that many bytes */
    void (*progress)(void *user, int64_t done_bytes, int64_t total_bytes); /* or NULL */
    void *user;
};

struct rt_init_options rt_init_options_default(void);

/* Creates dir (one level) if needed and writes config.json, generation_config.json and the
 * weights. Returns 0, or -1 with a message. */
int rt_init_write(const char *dir, const struct rt_config *cfg, const struct rt_init_options *o,
                  char *err, size_t errlen);

#endif /* INFLLM_RT_MODEL_INIT_H */
