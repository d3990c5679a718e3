/* SPDX-License-Identifier: MIT
 *
 * model_load.c -- the checkpoint files of a directory -> the model's weight table
 * (minicpm4.md §3.3, §3.4): model.safetensors.index.json and its shards, or one
 * model.safetensors; every shard memory-mapped and validated (safetensors.c); every tensor
 * name found exactly once, in the shard the index names, with its exact shape and a dtype of
 * BF16, F16 or F32; no tensor left over (lm_head.weight is ignored when the head is tied).
 */
#define _POSIX_C_SOURCE 200809L
#include "model_impl.h"
#include "errmsg.h"

#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A tensor by name: the shard that holds it (and, with an index, the shard the index names). */
struct found {
    const struct st_tensor *t;
    int                     file;
    int                     used;
};

struct table {
    struct found *all; /* every tensor of every shard, sorted by name */
    int64_t       n;
};

static int cmp_found(const void *a, const void *b) {
    return strcmp(((const struct found *)a)->t->name, ((const struct found *)b)->t->name);
}

static struct found *lookup(struct table *tb, const char *name) {
    int64_t lo = 0, hi = tb->n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int     c   = strcmp(tb->all[mid].t->name, name);
        if (c == 0) return &tb->all[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

/* Opens the shards named by the index (in the order first named), checks the weight map. */
static int open_index(struct rt_model *m, const char *dir, const char *ipath,
                      const struct json_value **wmap_out, struct json_doc **doc, char *err, size_t errlen) {
    if (json_parse_file(ipath, NULL, doc, err, errlen) != 0) return -1;
    const struct json_value *root = json_root(*doc);
    const struct json_value *wm   = json_get(root, "weight_map");
    if (root->type != JSON_OBJECT || !wm || wm->type != JSON_OBJECT)
        return rt_fail(err, errlen, "%s: key 'weight_map': missing or not an object", ipath);
    size_t n = json_len(wm);
    if (n == 0) return rt_fail(err, errlen, "%s: key 'weight_map': empty", ipath);
    m->files = calloc(n, sizeof *m->files);
    if (!m->files) return rt_fail(err, errlen, "%s: out of memory", ipath);
    for (size_t i = 0; i < n; i++) {
        const struct json_member *mb = json_member_at(wm, i);
        size_t                    len;
        const char               *shard = json_string(&mb->value, &len);
        if (!shard || len == 0 || len != strlen(shard) || strchr(shard, '/') || strcmp(shard, "..") == 0 ||
            strcmp(shard, ".") == 0)
            return rt_fail(err, errlen, "%s: weight_map['%s']: expected a file name in the same directory",
                        ipath, mb->key);
        int seen = 0;
        for (int f = 0; f < m->n_files && !seen; f++) {
            const char *base = strrchr(m->files[f].path, '/');
            seen             = strcmp(base ? base + 1 : m->files[f].path, shard) == 0;
        }
        if (seen) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, shard);
        if (!exists(path))
            return rt_fail(err, errlen, "%s: weight_map['%s'] names the shard %s, which does not exist", ipath,
                        mb->key, path);
        if (st_open(path, &m->files[m->n_files], err, errlen) != 0) return -1;
        m->n_files++;
    }
    *wmap_out = wm;
    return 0;
}

static int want(struct rt_model *m, struct table *tb, const char *name, int64_t r, int64_t c,
                struct rt_mat *out, char *err, size_t errlen) {
    struct found *f = lookup(tb, name);
    if (!f) return rt_fail(err, errlen, "%s: missing tensor '%s'", m->n_files == 1 ? m->files[0].path : "checkpoint", name);
    const struct st_tensor *t    = f->t;
    const char             *file = m->files[f->file].path;
    f->used                      = 1;
    if (t->dtype != ST_BF16 && t->dtype != ST_F16 && t->dtype != ST_F32)
        return rt_fail(err, errlen, "%s: tensor '%s': dtype %s, expected BF16, F16 or F32", file, name,
                    st_dtype_name(t->dtype));
    int ok = c ? (t->ndim == 2 && t->shape[0] == r && t->shape[1] == c) : (t->ndim == 1 && t->shape[0] == r);
    if (!ok) {
        char got[128] = "[", *p = got + 1;
        for (int d = 0; d < t->ndim; d++)
            p += snprintf(p, (size_t)(got + sizeof got - p), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        snprintf(p, (size_t)(got + sizeof got - p), "]");
        if (c)
            return rt_fail(err, errlen, "%s: tensor '%s': shape %s, expected [%lld, %lld]", file, name, got,
                        (long long)r, (long long)c);
        return rt_fail(err, errlen, "%s: tensor '%s': shape %s, expected [%lld]", file, name, got, (long long)r);
    }
    out->data = t->data;
    out->type = t->dtype == ST_BF16 ? RT_W_BF16 : t->dtype == ST_F16 ? RT_W_F16 : RT_W_F32;
    out->rows = r;
    out->cols = c ? c : 1;
    return 0;
}

static float *norm_f32(const struct rt_mat *w) {
    float *g = malloc(sizeof(float) * (size_t)w->rows);
    if (!g) return NULL;
    for (int64_t i = 0; i < w->rows; i++) {
        if (w->type == RT_W_F32) memcpy(&g[i], (const float *)w->data + i, 4);
        else {
            uint16_t h;
            memcpy(&h, (const uint16_t *)w->data + i, 2);
            g[i] = w->type == RT_W_BF16 ? ifl_bf16_to_f32(h) : ifl_f16_to_f32(h);
        }
    }
    return g;
}

static int want_norm(struct rt_model *m, struct table *tb, const char *name, float **out, char *err,
                     size_t errlen) {
    struct rt_mat w;
    if (want(m, tb, name, m->cfg.hidden_size, 0, &w, err, errlen) != 0) return -1;
    if (!(*out = norm_f32(&w))) return rt_fail(err, errlen, "out of memory");
    return 0;
}

int rt_model_load_weights(struct rt_model *m, const char *dir, char *err, size_t errlen) {
    char                     path[4096];
    struct json_doc         *doc  = NULL;
    const struct json_value *wmap = NULL;
    struct table             tb   = {0};
    int                      rc   = -1;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (exists(path)) {
        if (open_index(m, dir, path, &wmap, &doc, err, errlen) != 0) goto done;
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (!exists(path)) {
            rt_fail(err, errlen, "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
            goto done;
        }
        m->files = calloc(1, sizeof *m->files);
        if (!m->files || st_open(path, &m->files[0], err, errlen) != 0) {
            if (!m->files) rt_fail(err, errlen, "out of memory");
            goto done;
        }
        m->n_files = 1;
    }
    for (int f = 0; f < m->n_files; f++) tb.n += m->files[f].n_tensors;
    tb.all = calloc((size_t)(tb.n ? tb.n : 1), sizeof *tb.all);
    if (!tb.all) {
        rt_fail(err, errlen, "out of memory");
        goto done;
    }
    tb.n = 0;
    for (int f = 0; f < m->n_files; f++)
        for (int64_t i = 0; i < m->files[f].n_tensors; i++) tb.all[tb.n++] = (struct found){&m->files[f].tensors[i], f, 0};
    qsort(tb.all, (size_t)tb.n, sizeof *tb.all, cmp_found);
    for (int64_t i = 1; i < tb.n; i++)
        if (strcmp(tb.all[i].t->name, tb.all[i - 1].t->name) == 0) {
            rt_fail(err, errlen, "tensor '%s' appears in both %s and %s", tb.all[i].t->name,
                 m->files[tb.all[i - 1].file].path, m->files[tb.all[i].file].path);
            goto done;
        }
    if (wmap) { /* every tensor must sit where the index says */
        for (int64_t i = 0; i < tb.n; i++) {
            const char *shard = json_string(json_get(wmap, tb.all[i].t->name), NULL);
            const char *file  = m->files[tb.all[i].file].path;
            const char *base  = strrchr(file, '/');
            base              = base ? base + 1 : file;
            if (!shard) {
                rt_fail(err, errlen, "%s: tensor '%s' is not in the index's weight_map", file, tb.all[i].t->name);
                goto done;
            }
            if (strcmp(shard, base) != 0) {
                rt_fail(err, errlen, "%s: tensor '%s': the index places it in %s", file, tb.all[i].t->name, shard);
                goto done;
            }
        }
        for (size_t i = 0; i < json_len(wmap); i++) {
            const char *name = json_member_at(wmap, i)->key;
            if (!lookup(&tb, name)) {
                rt_fail(err, errlen, "%s/model.safetensors.index.json: weight_map names tensor '%s', which its shard %s lacks",
                     dir, name, json_string(&json_member_at(wmap, i)->value, NULL));
                goto done;
            }
        }
    }

    const struct rt_config *c = &m->cfg;
    const int64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const int64_t QD = c->num_attention_heads * c->head_dim, KD = c->num_key_value_heads * c->head_dim;
    if (want(m, &tb, "model.embed_tokens.weight", V, H, &m->embed, err, errlen)) goto done;
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        rt_fail(err, errlen, "out of memory");
        goto done;
    }
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        struct rt_layer *L = &m->layers[l];
        char             nm[160];
#define W(FIELD, R, C, SUFFIX)                                                       \
    snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, SUFFIX);           \
    if (want(m, &tb, nm, R, C, &L->FIELD, err, errlen)) goto done;
        W(wq, QD, H, "self_attn.q_proj.weight")
        W(wk, KD, H, "self_attn.k_proj.weight")
        W(wv, KD, H, "self_attn.v_proj.weight")
        W(wo, H, QD, "self_attn.o_proj.weight")
        W(wg, I, H, "mlp.gate_proj.weight")
        W(wu, I, H, "mlp.up_proj.weight")
        W(wd, H, I, "mlp.down_proj.weight")
#undef W
        snprintf(nm, sizeof nm, "model.layers.%lld.input_layernorm.weight", (long long)l);
        if (want_norm(m, &tb, nm, &L->g_in, err, errlen)) goto done;
        snprintf(nm, sizeof nm, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
        if (want_norm(m, &tb, nm, &L->g_post, err, errlen)) goto done;
    }
    if (want_norm(m, &tb, "model.norm.weight", &m->g_final, err, errlen)) goto done;
    if (c->tie_word_embeddings) {
        m->head = m->embed;
        struct found *f = lookup(&tb, "lm_head.weight");
        if (f) f->used = 1; /* present in a tied checkpoint: ignored (HF ties it to the embedding) */
    } else if (want(m, &tb, "lm_head.weight", V, H, &m->head, err, errlen)) {
        goto done;
    }
    for (int64_t i = 0; i < tb.n; i++)
        if (!tb.all[i].used) {
            rt_fail(err, errlen, "%s: unexpected tensor '%s' (not part of a MiniCPM4 checkpoint of this config)",
                 m->files[tb.all[i].file].path, tb.all[i].t->name);
            goto done;
        }
    rc = 0;
done:
    free(tb.all);
    json_free(doc);
    return rc;
}
