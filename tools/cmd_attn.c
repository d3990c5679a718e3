/* SPDX-License-Identifier: MIT
 *
 * cmd_attn.c -- `infllm attn` (forward) and `infllm grad` (backward) on .npy files.
 * Every check of the inputs happens before any output file is written.
 */
#include "cli.h"
#include "memplan.h"
#include "npy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char attn_head[] =
    "usage: infllm attn --q Q.npy --k K.npy --v V.npy --out O.npy [options]\n"
    "\n"
    "InfLLM-V2 attention of the queries Q [Tq, Hq, D] over the keys K and values V\n"
    "[past+Tq, Hkv, D] (.npy, little-endian float16/32/64, C order). Query i sits at position\n"
    "past+i and sees keys 0..past+i. Outputs are float32 .npy files.\n"
    "\n";

static const char grad_head[] =
    "usage: infllm grad --q Q.npy --k K.npy --v V.npy --dout DO.npy --dq DQ.npy --dk DK.npy --dv DV.npy\n"
    "                   [options]\n"
    "\n"
    "Gradients of InfLLM-V2 attention (the forward of `infllm attn` with the same flags) with\n"
    "respect to Q, K and V, given the gradient DO [Tq, Hq, D] of its output. The selection is\n"
    "held fixed (it has no gradient). --out, --lse and --blocks-out are optional here.\n"
    "\n"
    "  --dout FILE               gradient of the output [Tq, Hq, D]\n"
    "  --dq, --dk, --dv FILE     outputs: gradients like Q, K, V\n";

static const char common_opts[] =
    "  --q, --k, --v FILE        inputs\n"
    "  --out FILE                output O [Tq, Hq, D]\n"
    "  --lse FILE                log-sum-exp of each row [Tq, Hq] (natural log)\n"
    "  --blocks-out FILE         the selection, int32 [Hkv, Tq, K] (written when sparse ran)\n"
    "  --blocks-in FILE          use this selection for stage 2 instead of computing one\n"
    "  --past N                  check that K holds N keys before the queries (default: rows of K - Tq)\n"
    "  --mode auto|dense|sparse  auto: dense when past+Tq < dense-len, else sparse (auto)\n"
    "  --backend ref|cpu|cuda    (ref)\n"
    "  --dtype f32|f16|bf16      round the inputs to this storage type first (default: as read)\n"
    "  --threads N               worker threads of the cpu backend (0 = all cores)\n"
    "  --max-memory SIZE         refuse, before allocating, a problem whose estimated peak memory\n"
    "                            exceeds SIZE (bytes, or with K, M, G, T); default: the memory\n"
    "                            available (MemAvailable, cgroup limit, ulimit -v)\n"
    "\n";

static const char cache_opts[] =
    "  --cache-chunk N           run through a KV cache (ifl_kv_cache_*), as generation would: append\n"
    "                            the first `past` keys and values, then take the queries N at a time,\n"
    "                            appending each chunk's own keys and values before attending; each\n"
    "                            chunk runs dense or sparse by the cache length at that moment\n"
    "                            (N = 1: token-by-token decoding). Not with --mode dense|sparse,\n"
    "                            --blocks-in or grad. --blocks-out gets the chunks' rows (dense: -1)\n"
    "\n";

/* An input file turned into a tensor of the compute dtype. */
struct input {
    const char      *flag, *path;
    struct npy_array a;
    void            *buf; /* converted copy when --dtype asks for one */
    struct ifl_tensor t;
};

static int load_input(const char *cmd, struct input *in, int want_rank) {
    char err[512];
    if (npy_read(in->path, &in->a, err, sizeof err) != 0) {
        cli_error(cmd, "--%s %s", in->flag, err);
        return CLI_FAILURE;
    }
    if (in->a.ndim != want_rank) {
        char s[128];
        cli_error(cmd, "--%s %s has shape %s, expected %d dimensions", in->flag, in->path,
                  npy_shape_str(in->a.ndim, in->a.shape, s, sizeof s), want_rank);
        return CLI_FAILURE;
    }
    for (int i = 0; i < want_rank; i++)
        if (in->a.shape[i] == 0) {
            char s[128];
            cli_error(cmd, "--%s %s has shape %s, expected no empty dimension", in->flag, in->path,
                      npy_shape_str(in->a.ndim, in->a.shape, s, sizeof s));
            return CLI_FAILURE;
        }
    in->t = ifl_tensor_make(in->a.data, in->a.dtype, in->a.ndim, in->a.shape);
    return CLI_OK;
}

static int check_float_input(const char *cmd, struct input *in) {
    if (in->a.dtype == IFL_DTYPE_I32) {
        cli_error(cmd, "--%s %s holds int32, expected float16, float32 or float64", in->flag, in->path);
        return CLI_FAILURE;
    }
    int64_t pos[IFL_MAX_DIMS];
    if (ifl_tensor_find_nonfinite(&in->t, pos)) {
        cli_error(cmd, "--%s %s: element [%lld, %lld, %lld] is not finite (NaN or Inf), expected finite values",
                  in->flag, in->path, (long long)pos[0], (long long)pos[1], (long long)pos[2]);
        return CLI_FAILURE;
    }
    return CLI_OK;
}

/* Rounds a float input to the storage dtype asked for with --dtype. */
static int convert_input(const char *cmd, struct input *in, enum ifl_dtype dtype) {
    if (dtype == in->a.dtype) return CLI_OK;
    struct ifl_tensor t = ifl_tensor_make(NULL, dtype, in->a.ndim, in->a.shape);
    in->buf = malloc((size_t)in->a.count * ifl_dtype_size(dtype));
    if (in->buf == NULL) {
        cli_error(cmd, "out of memory converting %s", in->path);
        return CLI_FAILURE;
    }
    t.data = in->buf;
    for (int64_t i = 0; i < in->a.count; i++) {
        double x;
        switch (in->a.dtype) {
        case IFL_DTYPE_F64: x = ((double *)in->a.data)[i]; break;
        case IFL_DTYPE_F32: x = ((float *)in->a.data)[i]; break;
        case IFL_DTYPE_F16: x = ifl_f16_to_f32(((uint16_t *)in->a.data)[i]); break;
        default: x = 0; break;
        }
        switch (dtype) {
        case IFL_DTYPE_F32: ((float *)in->buf)[i] = (float)x; break;
        case IFL_DTYPE_F16: ((uint16_t *)in->buf)[i] = ifl_f32_to_f16((float)x); break;
        case IFL_DTYPE_BF16: ((uint16_t *)in->buf)[i] = ifl_f32_to_bf16((float)x); break;
        default: break;
        }
    }
    /* a value past the f16 range becomes Inf: refuse it like any other non-finite input */
    int64_t pos[IFL_MAX_DIMS];
    if (ifl_tensor_find_nonfinite(&t, pos)) {
        cli_error(cmd, "--%s %s: element [%lld, %lld, %lld] overflows %s", in->flag, in->path,
                  (long long)pos[0], (long long)pos[1], (long long)pos[2], ifl_dtype_name(dtype));
        return CLI_FAILURE;
    }
    in->t = t;
    return CLI_OK;
}

/* ---- the memory plan: refuse what will not fit before allocating ----
 * An upper estimate of the peak from the shapes, calibrated on measured peaks (docs/design.md,
 * "Memory"): the inputs as read, their converted and backend-staged copies, every output twice
 * (float64 on the backend and on the host), the backend's own copies (ref: float64 of every
 * operand; cpu: float32 tiles of K and V, three layouts in the backward), a KV cache with
 * --cache-chunk, and 16 MiB for the process itself. */
static int check_memory(const char *cmd, struct input *q, struct input *k, struct input *v, struct input *dout,
                        struct input *sel, enum ifl_dtype dtype, int have_dtype, enum ifl_backend backend,
                        const struct ifl_sparse_config *cfg, int cached, const char *max_memory) {
    int64_t limit = 0;
    const char *source = "--max-memory";
    if (max_memory && mem_parse_bytes(max_memory, &limit) != 0) {
        cli_error(cmd, "--max-memory '%s' is not a size (bytes, or a number with K, M, G or T)", max_memory);
        return CLI_USAGE;
    }
    struct input *ins[] = {q, k, v, dout, sel};
    for (int i = 0; i < 5; i++) {
        char err[512];
        if (ins[i] && npy_read_header(ins[i]->path, &ins[i]->a, err, sizeof err) != 0) {
            cli_error(cmd, "--%s %s", ins[i]->flag, err);
            return CLI_FAILURE;
        }
    }
    if (q->a.ndim != 3 || k->a.ndim != 3) return CLI_OK; /* load_input refuses them with a message */
    /* every count is at most 2^40 (npy.c), so no sum or product below overflows int64 */
    const int64_t Eq = q->a.count, Ek = k->a.count, Tq = q->a.shape[0], Hq = q->a.shape[1];
    const int64_t Tk = k->a.shape[0], Hkv = k->a.shape[1];
    const int64_t width = ifl_select_width(cfg, Tk), cs = (int64_t)ifl_dtype_size(have_dtype ? dtype : q->a.dtype);
    int64_t floats = 0, file = 0;
    for (int i = 0; i < 4; i++)
        if (ins[i]) floats += ins[i]->a.count, file += ins[i]->a.count * (int64_t)ins[i]->a.esize;
    if (sel) file += sel->a.count * 4;
    int64_t need = file + floats * cs * (have_dtype ? 2 : 1) + (sel ? sel->a.count * 4 : 0); /* read, converted, staged */
    need += 16 * (Eq + Tq * Hq) + 8 * Hkv * Tq * width + (dout ? 16 * (Eq + 2 * Ek) : 0); /* outputs */
    if (backend == IFL_BACKEND_REF) need += 8 * floats + (dout ? 8 * (Eq + 2 * Ek) : 0);
    if (backend == IFL_BACKEND_CPU) need += 8 * Ek * (dout ? 3 : 1) + (dout ? 8 * Eq : 0);
    if (cached) need += 2 * Ek * cs * 2; /* the cache's K and V, its compressed keys */
    need += (int64_t)16 << 20;
    need += need / 4; /* margin: the measured peaks were 50-97% of the sum above */
    if (!max_memory) limit = mem_available(&source);
    if (limit > 0 && need > limit) {
        char a[32], b[32];
        cli_error(cmd, "this problem needs about %lld bytes (%s) at its peak, more than the %lld (%s) of %s; "
                       "refused before allocating (--max-memory sets the limit)",
                  (long long)need, mem_str(need, a, sizeof a), (long long)limit, mem_str(limit, b, sizeof b), source);
        return CLI_FAILURE;
    }
    return CLI_OK;
}

/* Rows [r0, r0+n) of dimension dim of t (a view, no copy). */
static struct ifl_tensor row_view(const struct ifl_tensor *t, int dim, int64_t r0, int64_t n) {
    struct ifl_tensor v = *t;
    v.data              = (char *)t->data + (size_t)(r0 * t->stride[dim]) * ifl_dtype_size(t->dtype);
    v.shape[dim]        = n;
    return v;
}

/* --cache-chunk: K and V [past + Tq] through a KV cache, the queries `chunk` at a time. Counts the
 * chunks that ran dense (n_ran[0]) and sparse (n_ran[1]); dense chunks' sel rows are -1. */
static enum ifl_status run_cached(struct ifl_ctx *ctx, const struct ifl_sparse_config *cfg,
                                  const struct ifl_tensor *q, const struct ifl_tensor *k,
                                  const struct ifl_tensor *v, int64_t chunk, const struct ifl_tensor *out,
                                  const struct ifl_tensor *lse, const struct ifl_tensor *sel, int64_t n_ran[2]) {
    const int64_t              tq = q->shape[0], past = k->shape[0] - tq;
    struct ifl_kv_cache_params p  = ifl_kv_cache_params_default();
    p.capacity                    = k->shape[0];
    p.n_heads_kv                  = (int32_t)k->shape[1];
    p.head_dim                    = (int32_t)k->shape[2];
    p.dtype                       = k->dtype;
    p.cfg                         = *cfg;
    struct ifl_kv_cache *cache;
    enum ifl_status      st = ifl_kv_cache_create(ctx, &p, &cache);
    if (st == IFL_STATUS_OK && past > 0) {
        struct ifl_tensor kp = row_view(k, 0, 0, past), vp = row_view(v, 0, 0, past);
        st = ifl_kv_cache_append(ctx, cache, 0, &kp, &vp);
    }
    for (int64_t c0 = 0; st == IFL_STATUS_OK && c0 < tq; c0 += chunk) {
        const int64_t     n  = tq - c0 < chunk ? tq - c0 : chunk;
        struct ifl_tensor kc = row_view(k, 0, past + c0, n), vc = row_view(v, 0, past + c0, n);
        struct ifl_tensor qc = row_view(q, 0, c0, n), oc = row_view(out, 0, c0, n);
        struct ifl_tensor lc = row_view(lse, 0, c0, n), sc = row_view(sel, 1, c0, n);
        enum ifl_mode     mode;
        st = ifl_kv_cache_append(ctx, cache, 0, &kc, &vc);
        if (st == IFL_STATUS_OK) st = ifl_kv_cache_attn(ctx, cache, 0, &qc, &oc, &lc, &sc, &mode);
        if (st == IFL_STATUS_OK) n_ran[mode == IFL_MODE_SPARSE]++;
    }
    ifl_kv_cache_destroy(cache);
    return st;
}

/* Tensors live where the backend computes (device memory for cuda): the tool stages every input
 * into a backend buffer and every output back, through the public buffer API. */
static int64_t tensor_bytes(const struct ifl_tensor *t) {
    int64_t n = (int64_t)ifl_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Replaces t->data (contiguous host memory) by a backend buffer holding the same bytes. */
static int stage_in(const char *cmd, struct ifl_ctx *ctx, struct ifl_tensor *t, void **buf) {
    if (ifl_buffer_alloc(ctx, (size_t)tensor_bytes(t), buf) != IFL_STATUS_OK ||
        ifl_buffer_upload(ctx, *buf, t->data, (size_t)tensor_bytes(t)) != IFL_STATUS_OK) {
        cli_error(cmd, "%s", ifl_ctx_errmsg(ctx));
        return CLI_FAILURE;
    }
    t->data = *buf;
    return CLI_OK;
}

/* An output: a backend buffer (t) and its host copy, written as a float32 (or int32) .npy. Float
 * outputs are computed in float64: the forward's out and lse feed the backward, and the ref
 * backend's results should lose nothing before the final rounding to float32. */
struct output {
    const char       *path;
    int               idx; /* its index in the command's output set */
    void             *host;
    void             *buf;
    struct ifl_tensor t;
};

static int make_output(const char *cmd, struct ifl_ctx *ctx, struct output *o, const char *path,
                       enum ifl_dtype dtype, int ndim, const int64_t *shape) {
    o->path = path; /* o->idx was set when the command line declared it */
    o->t    = ifl_tensor_make(NULL, dtype, ndim, shape);
    o->host = malloc((size_t)tensor_bytes(&o->t));
    if (o->host == NULL || ifl_buffer_alloc(ctx, (size_t)tensor_bytes(&o->t), &o->buf) != IFL_STATUS_OK) {
        cli_error(cmd, "out of memory for an output of %lld bytes", (long long)tensor_bytes(&o->t));
        return CLI_FAILURE;
    }
    o->t.data = o->buf;
    return CLI_OK;
}

static int write_output(const char *cmd, struct ifl_ctx *ctx, struct out_set *set, const struct output *o) {
    if (o->path == NULL) return CLI_OK;
    char err[512];
    if (ifl_buffer_download(ctx, o->host, o->t.data, (size_t)tensor_bytes(&o->t)) != IFL_STATUS_OK) {
        cli_error(cmd, "%s", ifl_ctx_errmsg(ctx));
        return CLI_FAILURE;
    }
    if (o->t.dtype == IFL_DTYPE_F64) { /* to float32 in place: the file format of the outputs */
        const double *x = o->host;
        float        *f = o->host;
        for (int64_t i = 0; i < tensor_bytes(&o->t) / 8; i++) f[i] = (float)x[i];
    }
    enum ifl_dtype file_dtype = o->t.dtype == IFL_DTYPE_F64 ? IFL_DTYPE_F32 : o->t.dtype;
    /* the inputs were finite (checked when read), so a NaN or Inf here means the result left
     * float32's range: an error, never a file of Infs with exit 0. The one exception: the LSE of
     * a row that attends no key (a --blocks-in row without one) is -Inf, with output 0. */
    int64_t bad = -1, n = tensor_bytes(&o->t) / (int64_t)ifl_dtype_size(o->t.dtype);
    for (int64_t i = 0; file_dtype == IFL_DTYPE_F32 && i < n && bad < 0; i++) {
        float x = ((const float *)o->host)[i];
        if (!isfinite(x) && !(o->t.ndim == 2 && x == -INFINITY)) bad = i;
    }
    if (bad >= 0) {
        int64_t pos[IFL_MAX_DIMS];
        for (int d = o->t.ndim - 1; d >= 0; d--) pos[d] = bad % o->t.shape[d], bad /= o->t.shape[d];
        char at[96];
        cli_error(cmd, "--%s %s: element %s is not finite although the inputs are: the result leaves the "
                       "float32 range (--scale too large, or values near the float32 limit?)",
                  set->t[o->idx].flag, o->path, npy_shape_str(o->t.ndim, pos, at, sizeof at));
        return CLI_FAILURE;
    }
    if (npy_write(set, o->idx, file_dtype, o->t.ndim, o->t.shape, o->host, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        return CLI_FAILURE;
    }
    return CLI_OK;
}

static void free_output(struct ifl_ctx *ctx, struct output *o) {
    free(o->host);
    ifl_buffer_free(ctx, o->buf);
}

int cmd_attn(int argc, char **argv, int grad) {
    const char *cmd = grad ? "grad" : "attn";
    struct input q = {.flag = "q"}, k = {.flag = "k"}, v = {.flag = "v"}, dout = {.flag = "dout"};
    struct input sel_in = {.flag = "blocks-in"};
    const char  *out_path = NULL, *lse_path = NULL, *blocks_out = NULL;
    const char  *dq_path = NULL, *dk_path = NULL, *dv_path = NULL;
    const char  *mode = "auto", *backend_name = "ref", *dtype_name = NULL, *max_memory = NULL;
    long long    past = -1, threads = 0, cache_chunk = 0;
    struct cli_sparse_flags sf;
    cli_sparse_flags_default(&sf);
    const long long big = (long long)1 << 40;
    struct cli_opt  opts[32] = {
        {"q", CLI_STR, &q.path, 0, 0, 0},
        {"k", CLI_STR, &k.path, 0, 0, 0},
        {"v", CLI_STR, &v.path, 0, 0, 0},
        {"out", CLI_STR, &out_path, 0, 0, 0},
        {"lse", CLI_STR, &lse_path, 0, 0, 0},
        {"blocks-out", CLI_STR, &blocks_out, 0, 0, 0},
        {"blocks-in", CLI_STR, &sel_in.path, 0, 0, 0},
        {"past", CLI_INT, &past, 0, big, 0},
        {"mode", CLI_STR, &mode, 0, 0, 0},
        {"backend", CLI_STR, &backend_name, 0, 0, 0},
        {"dtype", CLI_STR, &dtype_name, 0, 0, 0},
        {"threads", CLI_INT, &threads, 0, 4096, 0},
        {"cache-chunk", CLI_INT, &cache_chunk, 1, big, 0},
        {"max-memory", CLI_STR, &max_memory, 0, 0, 0},
    };
    int n_opts = 14;
    if (grad) {
        const struct cli_opt g[] = {
            {"dout", CLI_STR, &dout.path, 0, 0, 0},
            {"dq", CLI_STR, &dq_path, 0, 0, 0},
            {"dk", CLI_STR, &dk_path, 0, 0, 0},
            {"dv", CLI_STR, &dv_path, 0, 0, 0},
        };
        for (int i = 0; i < 4; i++) opts[n_opts++] = g[i];
    }
    n_opts += cli_sparse_opts(&sf, opts + n_opts);

    int rc = cli_parse(cmd, argc, argv, 2, opts, n_opts);
    if (rc == CLI_HELP) {
        printf("%s%s%s%s", grad ? grad_head : attn_head, common_opts, grad ? "" : cache_opts, cli_sparse_help);
        return CLI_OK;
    }
    if (rc != CLI_OK) return rc;

    /* ---- the command line ---- */
    const char *required[][2] = {{"q", q.path}, {"k", k.path}, {"v", v.path}, {"out", grad ? "-" : out_path},
                                 {"dout", grad ? dout.path : "-"}, {"dq", grad ? dq_path : "-"},
                                 {"dk", grad ? dk_path : "-"}, {"dv", grad ? dv_path : "-"}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (required[i][1] == NULL) {
            cli_error(cmd, "missing required option --%s (see 'infllm %s --help')", required[i][0], cmd);
            return CLI_USAGE;
        }
    int want_dense = strcmp(mode, "dense") == 0, want_sparse = strcmp(mode, "sparse") == 0;
    if (!want_dense && !want_sparse && strcmp(mode, "auto") != 0) {
        cli_error(cmd, "--mode '%s' is not one of auto, dense, sparse", mode);
        return CLI_USAGE;
    }
    if (sel_in.path && want_dense) {
        cli_error(cmd, "--blocks-in gives stage 2 a selection, which --mode dense does not use");
        return CLI_USAGE;
    }
    if (cache_chunk > 0 && (grad || want_dense || want_sparse || sel_in.path)) {
        cli_error(cmd, "--cache-chunk runs the forward through a KV cache, which picks dense or sparse "
                       "per chunk and computes its own selection; it cannot be combined with %s",
                  grad ? "grad (no backward through a cache)" : sel_in.path ? "--blocks-in" : "--mode dense|sparse");
        return CLI_USAGE;
    }
    enum ifl_dtype dtype = IFL_DTYPE_F64;
    int            have_dtype = dtype_name != NULL;
    if (have_dtype) {
        if (strcmp(dtype_name, "f32") == 0) dtype = IFL_DTYPE_F32;
        else if (strcmp(dtype_name, "f16") == 0) dtype = IFL_DTYPE_F16;
        else if (strcmp(dtype_name, "bf16") == 0) dtype = IFL_DTYPE_BF16;
        else {
            cli_error(cmd, "--dtype '%s' is not one of f32, f16, bf16", dtype_name);
            return CLI_USAGE;
        }
    }
    enum ifl_backend backend;
    if ((rc = cli_backend(cmd, backend_name, &backend)) != CLI_OK) return rc;
    struct ifl_sparse_config cfg;
    if ((rc = cli_sparse_config(cmd, &sf, &cfg)) != CLI_OK) return rc;

    /* ---- the outputs: declared (and their paths checked) before anything is computed ---- */
    struct output   out = {0}, lse = {0}, dq = {0}, dk = {0}, dv = {0}, selo = {0};
    struct out_set  set;
    out_set_init(&set);
    {
        struct output *outs[]  = {&out, &lse, &selo, &dq, &dk, &dv};
        const char    *paths[] = {out_path, lse_path, blocks_out, dq_path, dk_path, dv_path};
        const char    *flags[] = {"out", "lse", "blocks-out", "dq", "dk", "dv"};
        const char    *ins[][2] = {{"q", q.path}, {"k", k.path}, {"v", v.path}, {"dout", dout.path}, {"blocks-in", sel_in.path}};
        char           err[1024];
        for (int i = 0; i < 6; i++) {
            outs[i]->idx = -1;
            if (paths[i] && (outs[i]->idx = out_set_add(&set, flags[i], paths[i], err, sizeof err)) < 0) {
                cli_error(cmd, "%s", err);
                out_set_abort(&set);
                return outs[i]->idx == -2 ? CLI_USAGE : CLI_FAILURE;
            }
        }
        for (int i = 0; i < 5; i++)
            if (ins[i][1] && out_set_check_input(&set, ins[i][0], ins[i][1], err, sizeof err) != 0) {
                cli_error(cmd, "%s", err);
                out_set_abort(&set);
                return CLI_USAGE;
            }
    }

    if ((rc = check_memory(cmd, &q, &k, &v, grad ? &dout : NULL, sel_in.path ? &sel_in : NULL, have_dtype ? dtype : IFL_DTYPE_F64,
                           have_dtype, backend, &cfg, cache_chunk > 0, max_memory)) != CLI_OK) {
        out_set_abort(&set);
        return rc;
    }

    /* ---- the inputs ---- */
    void           *staged[5] = {NULL, NULL, NULL, NULL, NULL}; /* backend copies of the inputs */
    struct ifl_ctx *ctx       = NULL;
    rc                        = CLI_FAILURE;
    struct input *floats[] = {&q, &k, &v, grad ? &dout : NULL};
    for (int i = 0; i < 4; i++)
        if (floats[i] && (load_input(cmd, floats[i], 3) || check_float_input(cmd, floats[i]))) goto done;
    if (!have_dtype) dtype = q.a.dtype;
    for (int i = 0; i < 4; i++)
        if (floats[i] && convert_input(cmd, floats[i], dtype)) goto done;
    const int64_t Tq = q.a.shape[0], Hq = q.a.shape[1], D = q.a.shape[2];
    const int64_t Tk = k.a.shape[0], Hkv = k.a.shape[1];
    char s1[128], s2[128];
    if (k.a.shape[2] != D) {
        cli_error(cmd, "--k %s has head dim %lld but --q %s has %lld, expected equal", k.path,
                  (long long)k.a.shape[2], q.path, (long long)D);
        goto done;
    }
    if (Hq % Hkv != 0) {
        cli_error(cmd, "--q %s has %lld heads, expected a multiple of the %lld KV heads of --k %s (GQA)",
                  q.path, (long long)Hq, (long long)Hkv, k.path);
        goto done;
    }
    if (memcmp(v.a.shape, k.a.shape, sizeof k.a.shape) != 0) {
        cli_error(cmd, "--v %s has shape %s, expected the shape of --k %s", v.path,
                  npy_shape_str(3, v.a.shape, s1, sizeof s1), npy_shape_str(3, k.a.shape, s2, sizeof s2));
        goto done;
    }
    if (Tk < Tq || (past >= 0 && Tk != past + Tq)) {
        cli_error(cmd, "--k %s has %lld rows, expected past + Tq = %lld + %lld", k.path, (long long)Tk,
                  past >= 0 ? past : 0, (long long)Tq);
        goto done;
    }
    if (D > IFL_MAX_HEAD_DIM) {
        cli_error(cmd, "head dim %lld is not supported, expected at most %d", (long long)D, IFL_MAX_HEAD_DIM);
        goto done;
    }
    if (grad && memcmp(dout.a.shape, q.a.shape, sizeof q.a.shape) != 0) {
        cli_error(cmd, "--dout %s has shape %s, expected the shape of --q %s", dout.path,
                  npy_shape_str(3, dout.a.shape, s1, sizeof s1), npy_shape_str(3, q.a.shape, s2, sizeof s2));
        goto done;
    }
    if (sel_in.path) {
        if (load_input(cmd, &sel_in, 3)) goto done;
        if (sel_in.a.dtype != IFL_DTYPE_I32 || sel_in.a.shape[0] != Hkv || sel_in.a.shape[1] != Tq) {
            cli_error(cmd, "--blocks-in %s is %s %s, expected int32 [%lld, %lld, K]", sel_in.path,
                      ifl_dtype_name(sel_in.a.dtype), npy_shape_str(3, sel_in.a.shape, s1, sizeof s1),
                      (long long)Hkv, (long long)Tq);
            goto done;
        }
    }

    /* ---- compute ---- */
    struct ifl_ctx_params cp = ifl_ctx_params_default();
    cp.backend               = backend;
    cp.n_threads             = (int)threads;
    if (cli_ctx_create(cmd, &cp, &ctx) != CLI_OK) goto done;
    const int64_t qshape[3] = {Tq, Hq, D}, kshape[3] = {Tk, Hkv, D}, lshape[2] = {Tq, Hq};
    const int64_t width = ifl_select_width(&cfg, Tk), sshape[3] = {Hkv, Tq, width};
    struct input *staged_in[5] = {&q, &k, &v, grad ? &dout : NULL, sel_in.path ? &sel_in : NULL};
    for (int i = 0; i < 5; i++)
        if (staged_in[i] && stage_in(cmd, ctx, &staged_in[i]->t, &staged[i])) goto done;
    if (make_output(cmd, ctx, &out, out_path, IFL_DTYPE_F64, 3, qshape) ||
        make_output(cmd, ctx, &lse, lse_path, IFL_DTYPE_F64, 2, lshape) ||
        make_output(cmd, ctx, &selo, blocks_out, IFL_DTYPE_I32, 3, sshape))
        goto done;
    struct ifl_tensor sel = selo.t;
    enum ifl_status   st;
    enum ifl_mode     ran;
    int64_t           n_ran[2] = {0, 0}; /* --cache-chunk: dense and sparse chunks */
    if (cache_chunk > 0) {
        st  = run_cached(ctx, &cfg, &q.t, &k.t, &v.t, cache_chunk, &out.t, &lse.t, &sel, n_ran);
        ran = n_ran[1] > 0 ? IFL_MODE_SPARSE : IFL_MODE_DENSE;
    } else if (sel_in.path) {
        sel = sel_in.t;
        ran = IFL_MODE_SPARSE;
        st  = ifl_sparse_attn_fwd(ctx, &cfg, NULL, &q.t, &k.t, &v.t, &sel, &out.t, &lse.t);
    } else if (want_dense) {
        ran = IFL_MODE_DENSE;
        st  = ifl_dense_attn_fwd(ctx, &cfg, NULL, &q.t, &k.t, &v.t, &out.t, &lse.t);
    } else if (want_sparse) {
        ran = IFL_MODE_SPARSE;
        st  = ifl_select(ctx, &cfg, NULL, &q.t, &k.t, &sel);
        if (st == IFL_STATUS_OK) st = ifl_sparse_attn_fwd(ctx, &cfg, NULL, &q.t, &k.t, &v.t, &sel, &out.t, &lse.t);
    } else {
        st = ifl_infllmv2_fwd(ctx, &cfg, NULL, &q.t, &k.t, &v.t, &out.t, &lse.t, &sel, &ran);
    }
    if (st == IFL_STATUS_OK && grad) {
        if (make_output(cmd, ctx, &dq, dq_path, IFL_DTYPE_F64, 3, qshape) ||
            make_output(cmd, ctx, &dk, dk_path, IFL_DTYPE_F64, 3, kshape) ||
            make_output(cmd, ctx, &dv, dv_path, IFL_DTYPE_F64, 3, kshape))
            goto done;
        st = ran == IFL_MODE_SPARSE
                 ? ifl_sparse_attn_bwd(ctx, &cfg, NULL, &q.t, &k.t, &v.t, &sel, &out.t, &lse.t, &dout.t, &dq.t, &dk.t, &dv.t)
                 : ifl_dense_attn_bwd(ctx, &cfg, NULL, &q.t, &k.t, &v.t, &out.t, &lse.t, &dout.t, &dq.t, &dk.t, &dv.t);
    }
    if (st != IFL_STATUS_OK) {
        const char *msg = ifl_ctx_errmsg(ctx);
        if (sel_in.path && strstr(msg, ": sel[") != NULL) /* a bad row of the given selection */
            cli_error(cmd, "--blocks-in %s: %s (%s)", sel_in.path, msg, ifl_status_str(st));
        else
            cli_error(cmd, "%s (%s)", msg, ifl_status_str(st));
        goto done;
    }

    /* ---- outputs: only now is anything written, and renamed into place only when all are ---- */
    const struct output *writes[] = {&out, &lse, &dq, &dk, &dv};
    for (int i = 0; i < 5; i++)
        if (write_output(cmd, ctx, &set, writes[i])) goto done;
    if (blocks_out && ran == IFL_MODE_SPARSE && !sel_in.path && write_output(cmd, ctx, &set, &selo)) goto done;
    char err[1024];
    if (blocks_out && ran == IFL_MODE_SPARSE && sel_in.path && /* the selection given is the one used */
        npy_write(&set, selo.idx, IFL_DTYPE_I32, 3, sel_in.a.shape, sel_in.a.data, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        goto done;
    }
    if (out_set_commit(&set, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        goto done;
    }
    char mode_str[96];
    if (cache_chunk > 0)
        snprintf(mode_str, sizeof mode_str, "kv cache in chunks of %lld: %lld dense + %lld sparse chunks",
                 cache_chunk, (long long)n_ran[0], (long long)n_ran[1]);
    else
        snprintf(mode_str, sizeof mode_str, "%s mode", ran == IFL_MODE_SPARSE ? "sparse" : "dense");
    printf("infllm %s: %s, backend %s, Tq=%lld Tk=%lld (past %lld) Hq=%lld Hkv=%lld D=%lld, dtype %s%s\n",
           cmd, mode_str, backend_name, (long long)Tq, (long long)Tk,
           (long long)(Tk - Tq), (long long)Hq, (long long)Hkv, (long long)D, ifl_dtype_name(dtype),
           blocks_out && ran == IFL_MODE_DENSE ? " (no selection: --blocks-out not written)" : "");
    rc = CLI_OK;
done:
    out_set_abort(&set);
    {
        struct output *outs[] = {&out, &lse, &dq, &dk, &dv, &selo};
        for (int i = 0; i < 6; i++) free_output(ctx, outs[i]);
        for (int i = 0; i < 5; i++) ifl_buffer_free(ctx, staged[i]);
    }
    ifl_ctx_destroy(ctx);
    struct input *ins[] = {&q, &k, &v, &dout, &sel_in};
    for (int i = 0; i < 5; i++) {
        npy_free(&ins[i]->a);
        free(ins[i]->buf);
    }
    return rc;
}
