/* SPDX-License-Identifier: MIT
 *
 * config.c -- config.json -> struct rt_config (config.h). Defaults are MiniCPMConfig's
 * (minicpm4.md §3.2); every value is range-checked, and the derived shapes (D = H/Hq, the GQA
 * group, the LongRoPE list length) are checked against each other. Also the sampling defaults of
 * generation_config.json (struct rt_gen_config).
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

struct cctx {
    const char *path;
    char       *err;
    size_t      errlen;
};

static int fail(struct cctx *c, const char *key, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail(struct cctx *c, const char *key, const char *fmt, ...) {
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s: key '%s': ", c->path, key);
        if (n < 0) n = 0;
        if ((size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* integer key >= lo (absent or null: def) */
static int get_int(struct cctx *c, const struct json_value *o, const char *key, const char *qual,
                   int64_t def, int64_t lo, int64_t *out) {
    const struct json_value *v = json_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (json_int64(v, out) != 0) return fail(c, qual, "expected an integer, found %s", json_type_name(v->type));
    if (*out < lo) return fail(c, qual, "%lld is below the minimum %lld", (long long)*out, (long long)lo);
    return 0;
}

/* number key > 0 (absent: def; required: refuse absence) */
static int get_pos(struct cctx *c, const struct json_value *o, const char *key, const char *qual,
                   double def, int required, double *out) {
    const struct json_value *v = json_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return fail(c, qual, "missing (a minicpm config must state it: its class default is wrong, minicpm4.md §2.7)");
        *out = def;
        return 0;
    }
    if (json_double(v, out) != 0) return fail(c, qual, "expected a number, found %s", json_type_name(v->type));
    if (!(*out > 0) || !isfinite(*out)) return fail(c, qual, "%g: expected a finite number > 0", *out);
    return 0;
}

static int get_bool(struct cctx *c, const struct json_value *o, const char *key, int def, int *out) {
    const struct json_value *v = json_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (json_bool(v, out) != 0) return fail(c, key, "expected true or false, found %s", json_type_name(v->type));
    return 0;
}

static int get_factors(struct cctx *c, const struct json_value *rs, const char *key, int64_t want,
                       double *dst) {
    char                     q[64];
    const struct json_value *v = json_get(rs, key);
    snprintf(q, sizeof q, "rope_scaling.%s", key);
    if (!v || v->type != JSON_ARRAY) return fail(c, q, "missing or not an array");
    if ((int64_t)json_len(v) != want)
        return fail(c, q, "%zu values, expected head_dim/2 = %lld", json_len(v), (long long)want);
    for (size_t i = 0; i < json_len(v); i++)
        if (json_double(json_at(v, i), &dst[i]) != 0 || !(dst[i] > 0) || !isfinite(dst[i]))
            return fail(c, q, "value %zu is not a finite number > 0", i);
    return 0;
}

static int parse_rope(struct cctx *c, const struct json_value *root, struct rt_config *cfg) {
    const struct json_value *rs = json_get(root, "rope_scaling");
    cfg->rope_type = RT_ROPE_NONE;
    if (!rs || json_is_null(rs)) return 0;
    if (rs->type != JSON_OBJECT) return fail(c, "rope_scaling", "expected an object or null");
    const char *type = json_string(json_get(rs, "rope_type"), NULL);
    if (!type) type = json_string(json_get(rs, "type"), NULL); /* MiniCPM3-era spelling */
    if (!type) return fail(c, "rope_scaling.rope_type", "missing (or not a string)");
    if (strcmp(type, "longrope") == 0) {
        cfg->rope_type = RT_ROPE_LONGROPE;
        int64_t half   = cfg->head_dim / 2;
        if (half > RT_MAX_ROPE_EXT) return fail(c, "rope_scaling", "head_dim %lld too large", (long long)cfg->head_dim);
        cfg->n_rope_factors = (int)half;
        if (get_factors(c, rs, "long_factor", half, cfg->rope_long) ||
            get_factors(c, rs, "short_factor", half, cfg->rope_short))
            return -1;
        const struct json_value *om = json_get(rs, "original_max_position_embeddings");
        if (!om) return fail(c, "rope_scaling.original_max_position_embeddings", "missing");
        return get_int(c, rs, "original_max_position_embeddings",
                       "rope_scaling.original_max_position_embeddings", 0, 1, &cfg->rope_original_max);
    }
    if (strcmp(type, "linear") == 0) {
        cfg->rope_type = RT_ROPE_LINEAR;
        return get_pos(c, rs, "factor", "rope_scaling.factor", 0, 1, &cfg->rope_linear_factor);
    }
    return fail(c, "rope_scaling.rope_type", "'%s' is not supported (longrope, linear, or null)", type);
}

static int parse_sparse(struct cctx *c, const struct json_value *root, struct rt_config *cfg) {
    struct rt_sparse        *s = &cfg->sparse;
    const struct json_value *v = json_get(root, "sparse_config");
    s->present                 = v && !json_is_null(v);
    if (v && !s->present) v = NULL;
    if (v && v->type != JSON_OBJECT) return fail(c, "sparse_config", "expected an object or null");
    int64_t x;
#define SP(KEY, DEF, LO, FIELD)                                                           \
    do {                                                                                  \
        if (get_int(c, v, KEY, "sparse_config." KEY, DEF, LO, &x) != 0) return -1;        \
        if (x > RT_MAX_SPARSE_SIZE)                                                       \
            return fail(c, "sparse_config." KEY, "%lld is above the limit %d", (long long)x, RT_MAX_SPARSE_SIZE); \
        s->FIELD = (int32_t)x;                                                            \
    } while (0)
    SP("kernel_size", 32, 1, kernel_size);
    SP("kernel_stride", 16, 1, kernel_stride);
    SP("init_blocks", 1, 0, init_blocks);
    SP("block_size", 64, 1, block_size);
    SP("window_size", 2048, 0, window_size);
    SP("topk", 64, 1, topk);
#undef SP
    if (get_int(c, v, "dense_len", "sparse_config.dense_len", 8192, -1, &s->dense_len) != 0) return -1;
    if (v && get_bool(c, v, "use_nope", 0, &s->use_nope) != 0) return -1;
    if (!s->present) return 0;
    if (s->use_nope) return fail(c, "sparse_config.use_nope", "true is not supported (stage 1 on pre-RoPE keys)");
    if (s->block_size % s->kernel_stride)
        return fail(c, "sparse_config.block_size", "%d is not a multiple of kernel_stride %d", s->block_size, s->kernel_stride);
    if (s->kernel_size % s->kernel_stride)
        return fail(c, "sparse_config.kernel_size", "%d is not a multiple of kernel_stride %d", s->kernel_size, s->kernel_stride);
    if (s->window_size % s->block_size)
        return fail(c, "sparse_config.window_size", "%d is not a multiple of block_size %d", s->window_size, s->block_size);
    if (s->topk < s->init_blocks + 1)
        return fail(c, "sparse_config.topk", "%d must be at least init_blocks + 1 = %d", s->topk, s->init_blocks + 1);
    return 0;
}

static int parse_ids(struct cctx *c, const struct json_value *root, struct rt_config *cfg) {
    const struct json_value *v = json_get(root, "bos_token_id");
    cfg->bos_token_id          = 1;
    if (v && json_is_null(v)) cfg->bos_token_id = -1;
    else if (get_int(c, root, "bos_token_id", "bos_token_id", 1, 0, &cfg->bos_token_id)) return -1;
    v = json_get(root, "pad_token_id");
    if (v && !json_is_null(v) && get_int(c, root, "pad_token_id", "pad_token_id", -1, 0, &cfg->pad_token_id)) return -1;
    if (!v || json_is_null(v)) cfg->pad_token_id = -1;
    v          = json_get(root, "eos_token_id");
    cfg->n_eos = 0;
    if (!v || json_is_null(v)) {
        cfg->eos_token_id[cfg->n_eos++] = 2;
    } else if (v->type == JSON_ARRAY) {
        if (json_len(v) < 1 || json_len(v) > RT_MAX_EOS)
            return fail(c, "eos_token_id", "%zu ids, expected 1 to %d", json_len(v), RT_MAX_EOS);
        for (size_t i = 0; i < json_len(v); i++) {
            int64_t id;
            if (json_int64(json_at(v, i), &id) != 0 || id < 0)
                return fail(c, "eos_token_id", "item %zu is not a non-negative integer", i);
            cfg->eos_token_id[cfg->n_eos++] = id;
        }
    } else if (get_int(c, root, "eos_token_id", "eos_token_id", 2, 0, &cfg->eos_token_id[0]) == 0) {
        cfg->n_eos = 1;
    } else {
        return -1;
    }
    const int64_t V = cfg->vocab_size;
    if (cfg->bos_token_id >= V) return fail(c, "bos_token_id", "%lld is not below vocab_size %lld", (long long)cfg->bos_token_id, (long long)V);
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_id[i] >= V)
            return fail(c, "eos_token_id", "%lld is not below vocab_size %lld", (long long)cfg->eos_token_id[i], (long long)V);
    return 0;
}

static int parse_root(struct cctx *c, const struct json_value *root, struct rt_config *cfg) {
    if (root->type != JSON_OBJECT) {
        snprintf(c->err, c->errlen, "%s: expected a JSON object, found %s", c->path, json_type_name(root->type));
        return -1;
    }
    const struct json_value *mt = json_get(root, "model_type");
    const char              *type = "minicpm";
    if (mt && !(type = json_string(mt, NULL))) return fail(c, "model_type", "expected a string");
    if (strcmp(type, "minicpm") != 0)
        return fail(c, "model_type", "'%s' is not supported (expected minicpm)", type);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", type);
    if (get_int(c, root, "vocab_size", "vocab_size", 32000, 1, &cfg->vocab_size) ||
        get_int(c, root, "hidden_size", "hidden_size", 4096, 1, &cfg->hidden_size) ||
        get_int(c, root, "intermediate_size", "intermediate_size", 11008, 1, &cfg->intermediate_size) ||
        get_int(c, root, "num_hidden_layers", "num_hidden_layers", 32, 1, &cfg->num_hidden_layers) ||
        get_int(c, root, "num_attention_heads", "num_attention_heads", 32, 1, &cfg->num_attention_heads) ||
        get_int(c, root, "num_key_value_heads", "num_key_value_heads", cfg->num_attention_heads, 1,
                &cfg->num_key_value_heads) ||
        get_int(c, root, "max_position_embeddings", "max_position_embeddings", 2048, 1,
                &cfg->max_position_embeddings))
        return -1;
    const int64_t lim = (int64_t)1 << 31;
    if (cfg->vocab_size >= lim || cfg->hidden_size >= lim || cfg->intermediate_size >= lim ||
        cfg->num_hidden_layers > 100000 || cfg->max_position_embeddings >= lim)
        return fail(c, "vocab_size/hidden_size/intermediate_size/num_hidden_layers/max_position_embeddings", "a value is too large");
    if (cfg->hidden_size % cfg->num_attention_heads)
        return fail(c, "num_attention_heads", "%lld does not divide hidden_size %lld", (long long)cfg->num_attention_heads, (long long)cfg->hidden_size);
    if (cfg->num_attention_heads % cfg->num_key_value_heads)
        return fail(c, "num_key_value_heads", "%lld does not divide num_attention_heads %lld", (long long)cfg->num_key_value_heads, (long long)cfg->num_attention_heads);
    /* every value is below 2^31 here, so these products fit in int64 */
    const int64_t H = cfg->hidden_size, kv_width = H / cfg->num_attention_heads * cfg->num_key_value_heads;
    if (cfg->vocab_size * H > RT_MAX_MATRIX_ELEMENTS || cfg->intermediate_size * H > RT_MAX_MATRIX_ELEMENTS ||
        H * H > RT_MAX_MATRIX_ELEMENTS || kv_width * H > RT_MAX_MATRIX_ELEMENTS)
        return fail(c, "vocab_size/hidden_size/intermediate_size", "a weight matrix would have more than 2^40 elements");
    cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
    if (cfg->head_dim % 2 || cfg->head_dim > 256)
        return fail(c, "num_attention_heads", "head dim hidden_size/num_attention_heads = %lld must be even and at most 256", (long long)cfg->head_dim);
    const char *act = json_string(json_get(root, "hidden_act"), NULL);
    if (json_get(root, "hidden_act") && (!act || strcmp(act, "silu") != 0))
        return fail(c, "hidden_act", "only \"silu\" is supported");
    int bias = 0;
    if (get_bool(c, root, "attention_bias", 0, &bias)) return -1;
    if (bias) return fail(c, "attention_bias", "true is not supported (MiniCPM4 has no biases)");
    if (get_pos(c, root, "rms_norm_eps", "rms_norm_eps", 1e-6, 0, &cfg->rms_norm_eps) ||
        get_pos(c, root, "rope_theta", "rope_theta", 10000.0, 0, &cfg->rope_theta) ||
        get_pos(c, root, "scale_emb", "scale_emb", 1, 1, &cfg->scale_emb) ||
        get_pos(c, root, "scale_depth", "scale_depth", 1, 1, &cfg->scale_depth) ||
        get_pos(c, root, "dim_model_base", "dim_model_base", 1, 1, &cfg->dim_model_base) ||
        get_bool(c, root, "tie_word_embeddings", 1, &cfg->tie_word_embeddings) ||
        parse_rope(c, root, cfg) || parse_ids(c, root, cfg) || parse_sparse(c, root, cfg))
        return -1;
    return 0;
}

int rt_config_parse(const char *text, size_t len, const char *path, struct rt_config *cfg,
                    char *err, size_t errlen) {
    struct cctx      c = {path ? path : "config.json", err, errlen};
    struct json_doc *doc;
    char             jerr[256];
    memset(cfg, 0, sizeof *cfg);
    if (json_parse(text, len, NULL, &doc, jerr, sizeof jerr) != 0) {
        snprintf(err, errlen, "%s: %s", c.path, jerr);
        return -1;
    }
    int rc = parse_root(&c, json_root(doc), cfg);
    json_free(doc);
    return rc;
}

int rt_config_load(const char *path, struct rt_config *cfg, char *err, size_t errlen) {
    struct cctx      c = {path, err, errlen};
    struct json_doc *doc;
    memset(cfg, 0, sizeof *cfg);
    if (json_parse_file(path, NULL, &doc, err, errlen) != 0) return -1;
    int rc = parse_root(&c, json_root(doc), cfg);
    json_free(doc);
    return rc;
}

/* ---- generation_config.json ---- */

int rt_gen_config_load(const char *dir, struct rt_gen_config *g, char *err, size_t errlen) {
    char path[4096];
    memset(g, 0, sizeof *g);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    struct json_doc *doc;
    if (json_parse_file(path, NULL, &doc, err, errlen) != 0) return -1;
    const struct json_value *r = json_root(doc), *v;
    int                      rc = -1;
    if (r->type != JSON_OBJECT) {
        snprintf(err, errlen, "%.512s: must be a JSON object", path);
        goto done;
    }
    if ((v = json_get(r, "temperature")) && !json_is_null(v)) {
        if (json_double(v, &g->temperature) != 0 || g->temperature < 0) {
            snprintf(err, errlen, "%.512s: \"temperature\" must be a number >= 0", path);
            goto done;
        }
        g->has_temperature = 1;
    }
    if ((v = json_get(r, "top_p")) && !json_is_null(v)) {
        if (json_double(v, &g->top_p) != 0 || !(g->top_p > 0 && g->top_p <= 1)) {
            snprintf(err, errlen, "%.512s: \"top_p\" must be a number in (0, 1]", path);
            goto done;
        }
        g->has_top_p = 1;
    }
    int64_t i64;
    if ((v = json_get(r, "top_k")) && !json_is_null(v)) {
        if (json_int64(v, &i64) != 0 || i64 < 0) {
            snprintf(err, errlen, "%.512s: \"top_k\" must be an integer >= 0", path);
            goto done;
        }
        g->has_top_k = 1;
        g->top_k     = i64;
    }
    if ((v = json_get(r, "max_new_tokens")) && !json_is_null(v) && json_int64(v, &i64) == 0 && i64 > 0) {
        g->has_max_new = 1;
        g->max_new     = i64;
    }
    int b;
    if ((v = json_get(r, "do_sample")) && json_bool(v, &b) == 0 && !b) g->do_sample_false = 1;
    if ((v = json_get(r, "eos_token_id")) && !json_is_null(v)) {
        size_t n = v->type == JSON_ARRAY ? json_len(v) : 1;
        for (size_t i = 0; i < n; i++) {
            const struct json_value *e = v->type == JSON_ARRAY ? json_at(v, i) : v;
            if (json_int64(e, &i64) != 0 || i64 < 0 || i64 > INT32_MAX) {
                snprintf(err, errlen, "%.512s: \"eos_token_id\" must be an id or a list of ids", path);
                goto done;
            }
            if (g->n_eos < RT_MAX_GEN_EOS) g->eos[g->n_eos++] = (int32_t)i64;
        }
    }
    rc = 0;
done:
    json_free(doc);
    return rc;
}
