/* SPDX-License-Identifier: MIT
 *
 * model_init.c -- see model_init.h. Values are drawn from a counter-based generator (splitmix64 of
 * seed, tensor index and element index), uniform with the standard deviation of each kind of
 * tensor, so a checkpoint does not depend on how it is cut into pieces:
 *   embedding / lm_head  2·w/sqrt(H) (w = H/dim_model_base): logits of std ~2, not uniform
 *   projections          1/sqrt(in_features)
 *   norm weights         1 + 0.1·u (so a missing multiplication by g shows)
 */
#define _POSIX_C_SOURCE 200809L
#include "model_init.h"

#include "rng.h"
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

uint16_t ifl_f32_to_bf16(float f); /* libinfllm's conversions (include/infllm.h) */
uint16_t ifl_f32_to_f16(float f);

/* LongRoPE factor lists of minicpm4.md Appendix A.1 (MiniCPM4-8B) and A.4 (head dim 64). */
static const double rope_8b[64] = {
    0.9977997200264581, 1.014658295992452, 1.0349680404997148, 1.059429246056193,
    1.0888815016813513, 1.1243301355211495, 1.166977103606075, 1.2182568066927284,
    1.2798772354275727, 1.3538666751582975, 1.4426259039919596, 1.5489853358570191,
    1.6762658237220625, 1.8283407612492941, 2.0096956085876183, 2.225478927469756,
    2.481536379650452, 2.784415934557119, 3.1413289096347365, 3.560047844772632,
    4.048719380066383, 4.615569542115128, 5.2684819496549835, 6.014438591970396,
    6.858830049237097, 7.804668263503327, 8.851768731513417, 9.99600492938444,
    11.228766118181639, 12.536757560834843, 13.902257701387796, 15.303885189125953,
    16.717837610115794, 18.119465097853947, 19.484965238406907, 20.792956681060105,
    22.02571786985731, 23.16995406772833, 24.217054535738416, 25.16289275000465,
    26.007284207271347, 26.753240849586767, 27.40615325712662, 27.973003419175363,
    28.461674954469114, 28.880393889607006, 29.237306864684626, 29.540186419591297,
    29.79624387177199, 30.01202719065413, 30.193382037992453, 30.34545697551969,
    30.47273746338473, 30.579096895249787, 30.66785612408345, 30.741845563814174,
    30.80346599254902, 30.85474569563567, 30.897392663720595, 30.932841297560394,
    30.962293553185553, 30.986754758742034, 31.007064503249293, 31.02392307921529,
};
static const double rope_05b[32] = {
    1.0004360675811768, 1.0668443441390991, 1.1631425619125366, 1.3025742769241333,
    1.5040205717086792, 1.7941505908966064, 2.2101221084594727, 2.802666664123535,
    3.6389970779418945, 4.804192543029785, 6.39855432510376, 8.527148246765137,
    11.277542114257812, 14.684998512268066, 18.69317054748535, 23.13019371032715,
    27.72362518310547, 32.1606559753418, 36.168827056884766, 39.57627868652344,
    42.32667541503906, 44.45526885986328, 46.04962921142578, 47.21482849121094,
    48.05115509033203, 48.64370346069336, 49.05967712402344, 49.34980392456055,
    49.551246643066406, 49.69068145751953, 49.78697967529297, 49.85338592529297,
};

int rt_init_preset(const char *name, int sparse, struct rt_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "minicpm");
    c->rms_norm_eps   = 1e-6;
    c->rope_theta     = 10000.0;
    c->rope_type      = RT_ROPE_LONGROPE;
    c->scale_emb      = 12;
    c->scale_depth    = 1.4;
    c->dim_model_base = 256;
    c->bos_token_id   = 1;
    c->pad_token_id   = 2;
    const double *list = NULL;
    if (strcmp(name, "tiny") == 0) {
        c->vocab_size = 320, c->hidden_size = 64, c->intermediate_size = 128;
        c->num_hidden_layers = 2, c->num_attention_heads = 4, c->num_key_value_heads = 2;
        c->max_position_embeddings = 4096, c->tie_word_embeddings = 0;
    } else if (strcmp(name, "minicpm4-0.5b") == 0) {
        c->vocab_size = 73448, c->hidden_size = 1024, c->intermediate_size = 4096;
        c->num_hidden_layers = 24, c->num_attention_heads = 16, c->num_key_value_heads = 2;
        c->max_position_embeddings = 32768, c->tie_word_embeddings = 1;
        list = rope_05b;
    } else if (strcmp(name, "minicpm4-8b") == 0) {
        c->vocab_size = 73448, c->hidden_size = 4096, c->intermediate_size = 16384;
        c->num_hidden_layers = 32, c->num_attention_heads = 32, c->num_key_value_heads = 2;
        c->max_position_embeddings = 32768, c->tie_word_embeddings = 0;
        list = rope_8b;
    } else {
        snprintf(err, errlen, "unknown config '%s': expected tiny, minicpm4-0.5b or minicpm4-8b", name);
        return -1;
    }
    c->head_dim          = c->hidden_size / c->num_attention_heads;
    c->rope_original_max = c->max_position_embeddings;
    c->n_rope_factors    = (int)(c->head_dim / 2);
    for (int i = 0; i < c->n_rope_factors; i++) /* tiny: a made-up rising list like the real ones */
        c->rope_long[i] = c->rope_short[i] = list ? list[i] : 1.0 + 0.5 * i * i;
    c->n_eos           = 2;
    c->eos_token_id[0] = 2;
    c->eos_token_id[1] = c->vocab_size - 8; /* <|im_end|> is V-8 in the MiniCPM vocabulary */
    struct rt_sparse *s = &c->sparse;
    s->present          = sparse;
    if (strcmp(name, "tiny") == 0) { /* width (topk + window/block) * block = 128 = dense_len */
        s->kernel_size = 8, s->kernel_stride = 4, s->init_blocks = 1, s->block_size = 16;
        s->window_size = 64, s->topk = 4, s->dense_len = 128;
    } else {
        s->kernel_size = 32, s->kernel_stride = 16, s->init_blocks = 1, s->block_size = 64;
        s->window_size = 2048, s->topk = 64, s->dense_len = 8192;
    }
    return 0;
}

/* ---- config.json ---- */

static void put_double(FILE *f, double x) {
    char buf[64];
    for (int prec = 15; prec <= 17; prec++) { /* shortest text that reads back exactly */
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    fputs(buf, f);
}

static void put_list(FILE *f, const double *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        put_double(f, v[i]);
    }
    fputc(']', f);
}

int rt_init_write_config(const char *path, const struct rt_config *c, const char *torch_dtype,
                         char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "{\n  \"architectures\": [\"MiniCPMForCausalLM\"],\n  \"model_type\": \"%s\",\n",
            c->model_type);
    fprintf(f, "  \"bos_token_id\": %lld,\n  \"eos_token_id\": [", (long long)c->bos_token_id);
    for (int i = 0; i < c->n_eos; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)c->eos_token_id[i]);
    fprintf(f, "],\n");
    if (c->pad_token_id >= 0) fprintf(f, "  \"pad_token_id\": %lld,\n", (long long)c->pad_token_id);
    fprintf(f, "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %lld,\n  \"initializer_range\": 0.1,\n"
               "  \"intermediate_size\": %lld,\n  \"max_position_embeddings\": %lld,\n"
               "  \"num_attention_heads\": %lld,\n  \"num_hidden_layers\": %lld,\n"
               "  \"num_key_value_heads\": %lld,\n  \"rms_norm_eps\": ",
            (long long)c->hidden_size, (long long)c->intermediate_size,
            (long long)c->max_position_embeddings, (long long)c->num_attention_heads,
            (long long)c->num_hidden_layers, (long long)c->num_key_value_heads);
    put_double(f, c->rms_norm_eps);
    fprintf(f, ",\n  \"rope_scaling\": ");
    if (c->rope_type == RT_ROPE_LONGROPE) {
        fprintf(f, "{\n    \"rope_type\": \"longrope\",\n    \"long_factor\": ");
        put_list(f, c->rope_long, c->n_rope_factors);
        fprintf(f, ",\n    \"short_factor\": ");
        put_list(f, c->rope_short, c->n_rope_factors);
        fprintf(f, ",\n    \"original_max_position_embeddings\": %lld\n  }", (long long)c->rope_original_max);
    } else if (c->rope_type == RT_ROPE_LINEAR) {
        fprintf(f, "{\"rope_type\": \"linear\", \"factor\": ");
        put_double(f, c->rope_linear_factor);
        fputc('}', f);
    } else {
        fprintf(f, "null");
    }
    fprintf(f, ",\n  \"rope_theta\": ");
    put_double(f, c->rope_theta);
    fprintf(f, ",\n  \"torch_dtype\": \"%s\",\n  \"transformers_version\": \"4.46.1\",\n"
               "  \"use_cache\": true,\n  \"vocab_size\": %lld,\n  \"scale_emb\": ",
            torch_dtype, (long long)c->vocab_size);
    put_double(f, c->scale_emb);
    fprintf(f, ",\n  \"dim_model_base\": ");
    put_double(f, c->dim_model_base);
    fprintf(f, ",\n  \"scale_depth\": ");
    put_double(f, c->scale_depth);
    fprintf(f, ",\n  \"tie_word_embeddings\": %s,\n  \"attention_bias\": false,\n"
               "  \"pretraining_tp\": 1,\n  \"mup_denominator\": 32",
            c->tie_word_embeddings ? "true" : "false");
    if (c->sparse.present) {
        const struct rt_sparse *s = &c->sparse;
        fprintf(f, ",\n  \"sparse_config\": {\n    \"kernel_size\": %d,\n    \"kernel_stride\": %d,\n"
                   "    \"init_blocks\": %d,\n    \"block_size\": %d,\n    \"window_size\": %d,\n"
                   "    \"topk\": %d,\n    \"use_nope\": %s,\n    \"dense_len\": %lld\n  }",
                s->kernel_size, s->kernel_stride, s->init_blocks, s->block_size, s->window_size,
                s->topk, s->use_nope ? "true" : "false", (long long)s->dense_len);
    }
    fprintf(f, "\n}\n");
    if (ferror(f) | (fclose(f) != 0)) {
        snprintf(err, errlen, "%s: write failed", path);
        return -1;
    }
    return 0;
}

/* ---- the tensors ---- */

struct spec {
    char    name[96];
    int     ndim;
    int64_t shape[2];
    int     kind; /* 0 matrix, 1 norm, 2 embedding-like */
};

/* The tensor list of minicpm4.md §3.4, in layer order. Returns the count (specs NULL: count only). */
static int64_t tensor_specs(const struct rt_config *c, struct spec *s) {
    const int64_t H = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    const int64_t q = c->num_attention_heads * D, kv = c->num_key_value_heads * D;
    int64_t n = 0;
#define ADD(KIND, R, C, ...)                                                       \
    do {                                                                           \
        if (s) {                                                                   \
            snprintf(s[n].name, sizeof s[n].name, __VA_ARGS__);                    \
            s[n].kind = KIND, s[n].shape[0] = R, s[n].shape[1] = C;                \
            s[n].ndim = (C) ? 2 : 1;                                               \
        }                                                                          \
        n++;                                                                       \
    } while (0)
    ADD(2, c->vocab_size, H, "model.embed_tokens.weight");
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        ADD(1, H, 0, "model.layers.%lld.input_layernorm.weight", (long long)l);
        ADD(0, q, H, "model.layers.%lld.self_attn.q_proj.weight", (long long)l);
        ADD(0, kv, H, "model.layers.%lld.self_attn.k_proj.weight", (long long)l);
        ADD(0, kv, H, "model.layers.%lld.self_attn.v_proj.weight", (long long)l);
        ADD(0, H, q, "model.layers.%lld.self_attn.o_proj.weight", (long long)l);
        ADD(1, H, 0, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
        ADD(0, I, H, "model.layers.%lld.mlp.gate_proj.weight", (long long)l);
        ADD(0, I, H, "model.layers.%lld.mlp.up_proj.weight", (long long)l);
        ADD(0, H, I, "model.layers.%lld.mlp.down_proj.weight", (long long)l);
    }
    ADD(1, H, 0, "model.norm.weight");
    if (!c->tie_word_embeddings) ADD(2, c->vocab_size, H, "lm_head.weight");
#undef ADD
    return n;
}

/* the SplitMix64 output after x: a counter-based hash, so any element is drawn independently */
static uint64_t splitmix(uint64_t x) { return rt_splitmix64(&x); }

/* element i of tensor ti: uniform with mean `mean` and standard deviation `std` */
static float value(uint64_t seed, int64_t ti, int64_t i, double mean, double std) {
    uint64_t r = splitmix(splitmix(seed * 0x100000001B3ull + (uint64_t)ti) + (uint64_t)i);
    double   u = (double)(r >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
    return (float)(mean + std * 1.7320508075688772 * (2.0 * u - 1.0));
}

struct rt_init_options rt_init_options_default(void) {
    struct rt_init_options o;
    memset(&o, 0, sizeof o);
    o.dtype = RT_W_BF16;
    o.seed  = 1;
    return o;
}

#define CHUNK (1 << 20) /* elements generated per piece */

static int write_tensor(struct st_writer *w, const struct rt_config *c, const struct spec *s,
                        int64_t ti, const struct rt_init_options *o, void *buf, int64_t *done,
                        int64_t total, char *err, size_t errlen) {
    int64_t n = s->shape[0] * (s->ndim == 2 ? s->shape[1] : 1);
    double  mean = 0, std;
    if (s->kind == 1) {
        mean = 1, std = 0.1;
    } else if (s->kind == 2) {
        std = 2.0 * (c->hidden_size / c->dim_model_base) / sqrt((double)c->hidden_size);
    } else {
        std = 1.0 / sqrt((double)s->shape[1]);
    }
    size_t es = o->dtype == RT_W_F32 ? 4 : 2;
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        for (int64_t i = 0; i < m; i++) {
            float x = value(o->seed, ti, i0 + i, mean, std);
            if (o->dtype == RT_W_F32) ((float *)buf)[i] = x;
            else if (o->dtype == RT_W_BF16) ((uint16_t *)buf)[i] = ifl_f32_to_bf16(x);
            else ((uint16_t *)buf)[i] = ifl_f32_to_f16(x);
        }
        if (st_writer_write(w, buf, (size_t)m * es, err, errlen) != 0) return -1;
        *done += m * (int64_t)es;
        if (o->progress) o->progress(o->user, *done, total);
    }
    return 0;
}

int rt_init_write(const char *dir, const struct rt_config *c, const struct rt_init_options *o,
                  char *err, size_t errlen) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create the directory: %s", dir, strerror(errno));
        return -1;
    }
    const char *dt = o->dtype == RT_W_F32 ? "float32" : o->dtype == RT_W_F16 ? "float16" : "bfloat16";
    enum st_dtype sdt = o->dtype == RT_W_F32 ? ST_F32 : o->dtype == RT_W_F16 ? ST_F16 : ST_BF16;
    size_t es = o->dtype == RT_W_F32 ? 4 : 2;
    char   path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (rt_init_write_config(path, c, dt, err, errlen) != 0) return -1;
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *g = fopen(path, "w");
    if (!g) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    fprintf(g, "{\n  \"bos_token_id\": %lld,\n  \"eos_token_id\": [", (long long)c->bos_token_id);
    for (int i = 0; i < c->n_eos; i++) fprintf(g, "%s%lld", i ? ", " : "", (long long)c->eos_token_id[i]);
    fprintf(g, "],\n  \"pad_token_id\": %lld,\n  \"do_sample\": true,\n  \"temperature\": 0.8,\n"
               "  \"top_p\": 0.8\n}\n", (long long)c->pad_token_id);
    if (ferror(g) | (fclose(g) != 0)) {
        snprintf(err, errlen, "%s: write failed", path);
        return -1;
    }

    int64_t      nt    = tensor_specs(c, NULL);
    struct spec *specs = calloc((size_t)nt, sizeof *specs);
    int         *shard = calloc((size_t)nt, sizeof *shard);
    void        *buf   = malloc(CHUNK * es);
    struct st_writer_tensor *wt = calloc((size_t)nt, sizeof *wt);
    int rc = -1;
    if (!specs || !shard || !buf || !wt) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    tensor_specs(c, specs);
    /* plan the shards */
    int64_t limit = o->shard_bytes > 0 ? o->shard_bytes : (int64_t)5 << 30;
    int64_t total = 0, cur = 0;
    int     n_shards = 1;
    for (int64_t i = 0; i < nt; i++) {
        int64_t bytes = specs[i].shape[0] * (specs[i].ndim == 2 ? specs[i].shape[1] : 1) * (int64_t)es;
        if (cur > 0 && cur + bytes > limit) n_shards++, cur = 0;
        shard[i] = n_shards - 1;
        cur += bytes, total += bytes;
        wt[i].name = specs[i].name, wt[i].dtype = sdt, wt[i].ndim = specs[i].ndim;
        wt[i].shape[0] = specs[i].shape[0], wt[i].shape[1] = specs[i].shape[1];
    }
    int64_t done_bytes = 0;
    for (int sh = 0; sh < n_shards; sh++) {
        int64_t first = 0, last;
        while (shard[first] != sh) first++;
        for (last = first; last < nt && shard[last] == sh; last++) {}
        if (n_shards == 1)
            snprintf(path, sizeof path, "%s/model.safetensors", dir);
        else
            snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, sh + 1, n_shards);
        struct st_writer w;
        if (st_writer_open(&w, path, wt + first, last - first, err, errlen) != 0) goto done;
        for (int64_t i = first; i < last; i++)
            if (write_tensor(&w, c, &specs[i], i, o, buf, &done_bytes, total, err, errlen) != 0) {
                st_writer_close(&w, 0, NULL, 0);
                goto done;
            }
        if (st_writer_close(&w, 1, err, errlen) != 0) goto done;
    }
    if (n_shards > 1) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        FILE *f = fopen(path, "w");
        if (!f) {
            snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
            goto done;
        }
        fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %lld\n  },\n  \"weight_map\": {\n",
                (long long)total);
        for (int64_t i = 0; i < nt; i++)
            fprintf(f, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n", specs[i].name,
                    shard[i] + 1, n_shards, i + 1 < nt ? "," : "");
        fprintf(f, "  }\n}\n");
        if (ferror(f) | (fclose(f) != 0)) {
            snprintf(err, errlen, "%s: write failed", path);
            goto done;
        }
    }
    rc = 0;
done:
    free(specs), free(shard), free(buf), free(wt);
    return rc;
}
