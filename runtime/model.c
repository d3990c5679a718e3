/* SPDX-License-Identifier: MIT
 *
 * model.c -- the model's lifecycle and API (model.h): config, weights (model_load.c), the compute
 * implementation (exec_cpu.c on a libinfllm cpu context) and the attention setup (one KV cache
 * per layer on that context, dense_len by the attention mode), prefill in chunks, decode, the
 * synthetic cache fill of the benchmark.
 */
#define _POSIX_C_SOURCE 200809L
#include "model_impl.h"
#include "errmsg.h"
#include "rng.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rt_model_options rt_model_options_default(void) {
    struct rt_model_options o;
    memset(&o, 0, sizeof o);
    o.attention = RT_ATTN_AUTO;
    o.kv_dtype  = RT_KV_AUTO;
    return o;
}

/* The sparse config of the caches: the checkpoint's sparse_config (coarse kernel 4x the fine
 * one, MiniCPM4.1's rule), libinfllm's defaults without one; dense_len by the mode. The sizes are
 * at most RT_MAX_SPARSE_SIZE (config.c), so 4x never overflows int32. */
static struct ifl_sparse_config cache_config(const struct rt_config *c, int attention) {
    struct ifl_sparse_config s = ifl_sparse_config_default();
    const struct rt_sparse  *p = &c->sparse;
    if (p->present) {
        s.block_size           = p->block_size;
        s.kernel_size          = p->kernel_size;
        s.kernel_stride        = p->kernel_stride;
        s.coarse_kernel_size   = 4 * p->kernel_size;
        s.coarse_kernel_stride = 4 * p->kernel_stride;
        s.init_blocks          = p->init_blocks;
        s.window_size          = p->window_size;
        s.topk                 = p->topk;
        s.dense_len            = p->dense_len;
    }
    if (attention == RT_ATTN_DENSE || (attention == RT_ATTN_AUTO && !p->present)) s.dense_len = INT64_MAX;
    if (attention == RT_ATTN_SPARSE) s.dense_len = -1;
    return s;
}

int rt_model_load(const char *dir, const struct rt_model_options *opt, struct rt_model **out,
                  char *err, size_t errlen) {
    struct rt_model_options o = opt ? *opt : rt_model_options_default();
    char                    path[4096];
    *out = NULL;
    if (o.attention < RT_ATTN_AUTO || o.attention > RT_ATTN_SPARSE)
        return rt_fail(err, errlen, "attention mode %d: expected auto, dense or sparse", o.attention);
    if (o.kv_dtype < RT_KV_AUTO || o.kv_dtype > RT_KV_F32)
        return rt_fail(err, errlen, "kv_dtype %d: expected auto, bf16 or f32", o.kv_dtype);
    if (o.n_threads < 0) return rt_fail(err, errlen, "n_threads %d: expected >= 0", o.n_threads);
    if (o.max_context < 0) return rt_fail(err, errlen, "max_context %lld: expected >= 0", (long long)o.max_context);
    struct rt_model *m = calloc(1, sizeof *m);
    if (!m) return rt_fail(err, errlen, "out of memory");
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (rt_config_load(path, &m->cfg, err, errlen) != 0) goto bad;
    if (rt_model_load_weights(m, dir, err, errlen) != 0) goto bad;
    const struct rt_config *c = &m->cfg;
    m->capacity               = o.max_context ? o.max_context : c->max_position_embeddings;
    if (rt_model_rope_init(m, m->capacity, err, errlen) != 0) goto bad;
    /* one cpu context: its thread pool runs the attention and the linear layers alike */
    struct ifl_ctx_params cp = ifl_ctx_params_default();
    cp.backend               = IFL_BACKEND_CPU;
    cp.n_threads             = o.n_threads;
    enum ifl_status st       = ifl_ctx_create(&cp, &m->ctx);
    if (st != IFL_STATUS_OK) {
        char why[256];
        enum ifl_simd simd;
        if (ifl_simd_resolve(cp.simd, &simd, why, sizeof why) != IFL_STATUS_OK) rt_fail(err, errlen, "%s", why);
        else rt_fail(err, errlen, "cannot create the compute context (%d threads): %s", o.n_threads, ifl_status_str(st));
        goto bad;
    }
    if (rt_exec_cpu_create(m->ctx, &m->ex, err, errlen) != 0) goto bad;
    m->scfg     = cache_config(c, o.attention);
    m->kv_dtype = o.kv_dtype == RT_KV_F32 ? IFL_DTYPE_F32
                  : o.kv_dtype == RT_KV_BF16 ? IFL_DTYPE_BF16
                  : m->embed.type == RT_W_F32 ? IFL_DTYPE_F32 : IFL_DTYPE_BF16;
    if (ifl_sparse_config_check(m->ctx, &m->scfg) != IFL_STATUS_OK) {
        rt_fail(err, errlen, "%s: sparse_config: %s", path, ifl_ctx_errmsg(m->ctx));
        goto bad;
    }
    struct ifl_kv_cache_params kp = ifl_kv_cache_params_default();
    kp.capacity                   = m->capacity;
    kp.n_seqs                     = 1;
    kp.n_heads_kv                 = (int32_t)c->num_key_value_heads;
    kp.head_dim                   = (int32_t)c->head_dim;
    kp.dtype                      = m->kv_dtype;
    kp.cfg                        = m->scfg;
    for (int64_t l = 0; l < c->num_hidden_layers; l++)
        if (ifl_kv_cache_create(m->ctx, &kp, &m->layers[l].cache) != IFL_STATUS_OK) {
            rt_fail(err, errlen, "KV cache of layer %lld (%lld tokens): %s", (long long)l,
                 (long long)m->capacity, ifl_ctx_errmsg(m->ctx));
            goto bad;
        }
    *out = m;
    return 0;
bad:
    rt_model_free(m);
    return -1;
}

void rt_model_free(struct rt_model *m) {
    if (!m) return;
    if (m->layers)
        for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) {
            ifl_kv_cache_destroy(m->layers[l].cache);
            free(m->layers[l].g_in);
            free(m->layers[l].g_post);
        }
    free(m->layers);
    free(m->g_final);
    for (int f = 0; f < m->n_files; f++) st_close(&m->files[f]);
    free(m->files);
    if (m->ex) rt_model_scratch_free(m);
    rt_exec_destroy(m->ex);
    ifl_ctx_destroy(m->ctx);
    free(m->rope.inv), free(m->rope.rext);
    free(m);
}

const struct rt_config *rt_model_config(const struct rt_model *m) { return &m->cfg; }
int64_t rt_model_len(const struct rt_model *m) { return ifl_kv_cache_len(m->layers[0].cache, 0); }
int64_t rt_model_capacity(const struct rt_model *m) { return m->capacity; }
int64_t rt_model_dense_len(const struct rt_model *m) { return m->scfg.dense_len; }
int     rt_model_threads(const struct rt_model *m) { return ifl_ctx_threads(m->ctx); }

void rt_model_reset(struct rt_model *m) {
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) ifl_kv_cache_truncate(m->ctx, m->layers[l].cache, 0, 0);
}

int rt_model_truncate(struct rt_model *m, int64_t n, char *err, size_t errlen) {
    if (n < 0 || n > rt_model_len(m))
        return rt_fail(err, errlen, "truncate to %lld: the cache holds %lld tokens", (long long)n, (long long)rt_model_len(m));
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) ifl_kv_cache_truncate(m->ctx, m->layers[l].cache, 0, n);
    return 0;
}

int rt_model_prefill(struct rt_model *m, const int32_t *tokens, int64_t n, int64_t chunk,
                     void (*progress)(void *user, int64_t done, int64_t total), void *user,
                     float *logits, char *err, size_t errlen) {
    if (!m || !tokens || n < 1) return rt_fail(err, errlen, "prefill: no tokens");
    if (chunk < 0) return rt_fail(err, errlen, "prefill: chunk %lld: expected >= 0", (long long)chunk);
    if (chunk == 0) chunk = 512;
    int64_t len0 = rt_model_len(m);
    if (len0 + n > m->capacity)
        return rt_fail(err, errlen, "%lld tokens after %lld cached exceed the context of %lld tokens",
                    (long long)n, (long long)len0, (long long)m->capacity);
    for (int64_t done = 0; done < n;) {
        int64_t k    = n - done < chunk ? n - done : chunk;
        int     last = done + k == n;
        if (rt_model_run_chunk(m, tokens + done, k, last ? logits : NULL, 0, err, errlen) != 0) {
            rt_model_truncate(m, len0, NULL, 0);
            return -1;
        }
        done += k;
        if (progress) progress(user, done, n);
    }
    return 0;
}

int rt_model_decode(struct rt_model *m, int32_t token, float *logits, char *err, size_t errlen) {
    if (!m) return rt_fail(err, errlen, "decode: no model");
    return rt_model_run_chunk(m, &token, 1, logits, 0, err, errlen);
}

int rt_model_forward(struct rt_model *m, const int32_t *tokens, int64_t n, float *logits,
                     char *err, size_t errlen) {
    if (!m || !tokens || n < 1) return rt_fail(err, errlen, "forward: no tokens");
    return rt_model_run_chunk(m, tokens, n, logits, 1, err, errlen);
}

int rt_model_fill_synthetic(struct rt_model *m, int64_t n, uint64_t seed, char *err, size_t errlen) {
    const struct rt_config *c = &m->cfg;
    const int64_t           Hkv = c->num_key_value_heads, D = c->head_dim, step = 1024;
    if (n < 0 || rt_model_len(m) + n > m->capacity)
        return rt_fail(err, errlen, "%lld synthetic tokens after %lld exceed the context of %lld", (long long)n,
                    (long long)rt_model_len(m), (long long)m->capacity);
    float *buf = malloc(sizeof(float) * (size_t)(2 * step * Hkv * D));
    if (!buf) return rt_fail(err, errlen, "out of memory");
    struct rt_rng r;
    rt_rng_init(&r, seed * 0x9E3779B97F4A7C15ull + 1);
    for (int64_t l = 0; l < c->num_hidden_layers; l++)
        for (int64_t done = 0; done < n; done += step) {
            int64_t k = n - done < step ? n - done : step;
            for (int64_t i = 0; i < 2 * k * Hkv * D; i++) /* uniform, std 1 */
                buf[i] = (float)(1.7320508075688772 * (2 * rt_rng_uniform(&r) - 1));
            int64_t           shp[3] = {k, Hkv, D};
            struct ifl_tensor tk     = ifl_tensor_make(buf, IFL_DTYPE_F32, 3, shp);
            struct ifl_tensor tv     = ifl_tensor_make(buf + k * Hkv * D, IFL_DTYPE_F32, 3, shp);
            if (ifl_kv_cache_append(m->ctx, m->layers[l].cache, 0, &tk, &tv) != IFL_STATUS_OK) {
                free(buf);
                return rt_fail(err, errlen, "KV cache append: %s", ifl_ctx_errmsg(m->ctx));
            }
        }
    free(buf);
    return 0;
}

uint64_t rt_model_weight_bytes(const struct rt_model *m) {
    uint64_t b = 0;
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) {
        const struct rt_layer *L = &m->layers[l];
        const struct rt_mat   *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->wg, &L->wu, &L->wd};
        for (int i = 0; i < 7; i++) b += (uint64_t)(w[i]->rows * w[i]->cols) * (w[i]->type == RT_W_F32 ? 4u : 2u);
    }
    b += (uint64_t)(m->head.rows * m->head.cols) * (m->head.type == RT_W_F32 ? 4u : 2u);
    b += (uint64_t)m->embed.cols * (m->embed.type == RT_W_F32 ? 4u : 2u);
    return b;
}

void rt_model_linear_stats(const struct rt_model *m, double *seconds, double *flops) {
    m->ex->ops->linear_stats(m->ex, seconds, flops);
}
void rt_model_linear_stats_reset(struct rt_model *m) { m->ex->ops->linear_stats_reset(m->ex); }
