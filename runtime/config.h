/* SPDX-License-Identifier: MIT
 *
 * config.h -- a MiniCPM4 config.json (minicpm4.md §3.2): the keys the runtime reads, with the
 * class defaults of MiniCPMConfig for absent keys, except scale_emb, scale_depth and
 * dim_model_base, which a minicpm config must state (§2.7: their defaults of 1 give wrong
 * logits). Unknown keys are ignored (released configs carry auto_map, torch_dtype, ...).
 */
#ifndef INFLLM_RT_CONFIG_H
#define INFLLM_RT_CONFIG_H

#include "rt_api.h"

#include <stddef.h>
#include <stdint.h>

#define RT_MAX_EOS      16
#define RT_MAX_ROPE_EXT 512 /* LongRoPE factors (D/2) */

enum rt_rope_type {
    RT_ROPE_NONE,     /* rope_scaling null: plain RoPE */
    RT_ROPE_LONGROPE, /* per-dimension factors (MiniCPM4) */
    RT_ROPE_LINEAR,   /* positions divided by factor */
};

/* Limits checked before any arithmetic on the values (docs/model.md): every sparse_config size
 * (kernel_size, kernel_stride, block_size, window_size, topk, init_blocks) at most
 * RT_MAX_SPARSE_SIZE, so 4 x kernel_size (the coarse kernel) and the selection width stay far
 * inside int32; vocab_size, hidden_size, intermediate_size, max_position_embeddings below 2^31,
 * num_hidden_layers at most 100000; every weight matrix at most RT_MAX_MATRIX_ELEMENTS elements,
 * so its byte count never overflows. */
#define RT_MAX_SPARSE_SIZE     (1 << 20)
#define RT_MAX_MATRIX_ELEMENTS ((int64_t)1 << 40)

struct rt_sparse {
    int     present;              /* sparse_config was given (non-null) */
    int32_t kernel_size;          /* 32 */
    int32_t kernel_stride;        /* 16 */
    int32_t init_blocks;          /* 1 */
    int32_t block_size;           /* 64 */
    int32_t window_size;          /* 2048 */
    int32_t topk;                 /* 64 */
    int     use_nope;             /* false (true is refused) */
    int64_t dense_len;            /* 8192; -1 = always sparse */
};

struct rt_config {
    char    model_type[32];          /* "minicpm" */
    int64_t vocab_size;              /* V */
    int64_t hidden_size;             /* H */
    int64_t intermediate_size;       /* I */
    int64_t num_hidden_layers;       /* L */
    int64_t num_attention_heads;     /* Hq */
    int64_t num_key_value_heads;     /* Hkv */
    int64_t head_dim;                /* D = H / Hq (derived) */
    int64_t max_position_embeddings;
    double  rms_norm_eps;
    double  rope_theta;
    enum rt_rope_type rope_type;
    int64_t rope_original_max;       /* rope_scaling.original_max_position_embeddings */
    double  rope_linear_factor;      /* rope_scaling.factor (linear) */
    int     n_rope_factors;          /* D/2 for longrope, else 0 */
    double  rope_long[RT_MAX_ROPE_EXT];
    double  rope_short[RT_MAX_ROPE_EXT];
    double  scale_emb;
    double  scale_depth;
    double  dim_model_base;
    int     tie_word_embeddings;
    int64_t bos_token_id;            /* -1 if null */
    int     n_eos;
    int64_t eos_token_id[RT_MAX_EOS];
    int64_t pad_token_id;            /* -1 if absent */
    struct rt_sparse sparse;
};

/* Parses and checks the text of a config.json (len bytes); `path` only names it in messages.
 * Returns 0, or -1 with "PATH: key 'K': problem" in err. */
RT_API int rt_config_parse(const char *text, size_t len, const char *path, struct rt_config *cfg,
                           char *err, size_t errlen);

/* Reads and parses a file. */
RT_API int rt_config_load(const char *path, struct rt_config *cfg, char *err, size_t errlen);

/* ---- generation_config.json: the checkpoint's sampling defaults ---- */

#define RT_MAX_GEN_EOS 32

struct rt_gen_config {
    int       has_temperature, has_top_p, has_top_k, has_max_new; /* 1 when the file sets it */
    int       do_sample_false;                                    /* "do_sample": false */
    double    temperature;                                        /* >= 0 */
    double    top_p;                                              /* (0, 1] */
    long long top_k;                                              /* >= 0 */
    long long max_new;                                            /* max_new_tokens, > 0 */
    int32_t   eos[RT_MAX_GEN_EOS];                                /* eos_token_id: one or a list */
    int       n_eos;
};

/* dir/generation_config.json into *g (zeroed first; a missing file sets nothing). Returns 0, or -1
 * with "PATH: ..." naming the key in err (a key of the wrong type or range is refused; a
 * max_new_tokens that is not a positive integer is ignored). */
RT_API int rt_gen_config_load(const char *dir, struct rt_gen_config *g, char *err, size_t errlen);

#endif /* INFLLM_RT_CONFIG_H */
