/* SPDX-License-Identifier: MIT
 *
 * cmd_bench.c -- `infllm bench`: dense causal attention against InfLLM-V2 sparse attention (stage 1
 * ifl_select, stage 2 ifl_sparse_attn_fwd) on synthetic inputs of the standard shape, for decode (one
 * query after N-1 keys), a prefill chunk (512 queries at the end of N keys) and the backward of such a
 * chunk, and a decode step through a KV cache (append + ifl_kv_cache_attn of token N-1, dense and
 * sparse). Every case runs on random inputs (the worst case for sparse attention) and on locally
 * correlated ones (as in text). Median of several runs after a warm-up; a table on stdout, or with
 * --json one JSON object per case on stdout and the table on stderr. Uses only the public API.
 *
 * On a backend that computes on device memory (cuda) the inputs are generated on the host as for
 * the others, uploaded once (ifl_buffer_upload), and the outputs stay on the device; each timed call
 * ends with ifl_ctx_sync, so its time is the GPU's, and only the selection comes back (untimed) for
 * the keys/row and union columns. The ops such a backend refuses (the KV cache, which the cuda
 * backend cannot write yet) are found by a one-token probe and skipped with a note.
 *
 * This file: the options, the buffers, the inputs (synth.c) and the order of the cases; the case
 * runners are bench_run.c, the table and JSON bench_report.c (bench.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"
#include "cli.h"
#include "synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char bench_usage[] =
    "usage: infllm bench [options]\n"
    "       infllm bench --model DIR [options]   (the model runtime: infllm bench --model x --help)\n"
    "\n"
    "Times dense causal attention against InfLLM-V2 sparse attention on synthetic inputs:\n"
    "decode (1 query after N-1 keys), a prefill chunk (--queries queries at the end of N keys),\n"
    "the backward of such a chunk, and a decode step through a KV cache (token N-1 appended and\n"
    "attended), each on random and on locally correlated inputs. --queries equal to N times\n"
    "the full causal prefill (N queries over N keys).\n"
    "Prints a table on stdout; with --json, one JSON object per case on stdout (the table then\n"
    "goes to stderr). Progress goes to stderr. Exit status 0 ok, 1 failure, 2 usage error.\n"
    "\n"
    "cases:\n"
    "  --ops LIST            decode,prefill,backward,cache (all four; 'cache' is reported as\n"
    "                        op decode_cache)\n"
    "  --keys LIST           key counts N, comma separated; a K suffix means x1024\n"
    "                        (8K,32K,64K,128K)\n"
    "  --queries N           queries of a prefill or backward chunk (512)\n"
    "  --bwd-keys N          keys of the backward case (32K, or with --keys the largest listed\n"
    "                        size <= 32K, else the smallest listed)\n"
    "  --inputs LIST         random,correlated (both)\n"
    "                          random      q, k, v i.i.d. N(0,1): neighbouring queries select\n"
    "                                      unrelated blocks (the worst case)\n"
    "                          correlated  q and k follow an AR(1) process per head along the\n"
    "                                      sequence (coefficient 0.995 plus 0.5% white noise:\n"
    "                                      neighbouring tokens correlate at ~0.99, tokens 64\n"
    "                                      apart at ~0.72), v i.i.d.: neighbouring queries\n"
    "                                      select overlapping blocks, as in text\n"
    "  --quick               a subset: decode and cache at 128K, a prefill chunk at 64K (about\n"
    "                        half a minute on 2 idle AVX-512 cores); not with --keys\n"
    "\n"
    "shape:\n"
    "  --heads N             query heads (32)\n"
    "  --kv-heads N          KV heads (2)\n"
    "  --head-dim N          (128)\n"
    "  --dtype bf16|f16|f32  storage of q, k, v and of every float output (bf16); lse is f32\n"
    "\n"
    "running:\n"
    "  --backend NAME        cpu|ref|cuda (cpu; ref is the float64 reference: tiny sizes only;\n"
    "                        cuda: see below)\n"
    "  --threads N           worker threads of the cpu backend (0 = all cores)\n"
    "  --simd LEVEL          auto|scalar|avx2|avx512, the cpu backend's instruction set (auto)\n"
    "  --runs N              timed runs per measurement, after 1 untimed warm-up; the median is\n"
    "                        reported (default 5 for decode and cache, 3 for prefill and\n"
    "                        backward; 1 when the warm-up took longer than 2 s, none when it\n"
    "                        took longer than 10 s: the warm-up's time is reported, and 0 runs\n"
    "                        in JSON)\n"
    "  --check-finite        keep the library's NaN/Inf scan of the inputs (off by default: it\n"
    "                        reads all of q, k, v on every call; the cache scans only the new\n"
    "                        token's q, k, v)\n"
    "  --seed N              seed of the synthetic inputs (1)\n"
    "  --json                one JSON object per case on stdout\n"
    "\n";

/* (split: ISO C guarantees string literals of 4095 characters only) */
static const char bench_usage2[] =
    "what is timed (dense and sparse on the same inputs):\n"
    "  dense    ifl_dense_attn_fwd (backward: ifl_dense_attn_bwd)\n"
    "  select   stage 1, ifl_select. The public call computes the compressed keys from K on\n"
    "           every call, so it includes one pass over K; 'compress' (ifl_compress_keys alone)\n"
    "           shows that part\n"
    "  attend   stage 2, ifl_sparse_attn_fwd with that selection (backward: ifl_sparse_attn_bwd\n"
    "           with the forward's selection, out and lse)\n"
    "  sparse   ifl_select followed by ifl_sparse_attn_fwd, timed together (backward: = attend;\n"
    "           the selection comes from the forward, so select is not reported)\n"
    "  ratio    dense / sparse\n"
    "\n"
    "FLOPs (query at position p sees the p+1 keys 0..p):\n"
    "  dense    4 * Hq * D * (p+1) per query\n"
    "  select   2 * Hq * D * (fine + coarse compressed keys visible at p) per query (coarse\n"
    "           keys only with --lse-mode approx)\n"
    "  attend   4 * D * (query heads per KV head) * the keys of each (query, KV head) row:\n"
    "           its selected blocks, clipped at p, counted from the selection\n"
    "  sparse   select + attend\n"
    "  backward 2.5 x the forward's count (dense, or stage 2 for sparse)\n"
    "bytes for GB/s (what the op must touch at least once, each tensor once):\n"
    "  dense    K and V of keys 0..N-1, Q, out, lse\n"
    "  select   fine and coarse compressed keys of N keys, Q, the selection (not the pass over\n"
    "           K that computes the compressed keys: a KV cache would keep them)\n"
    "  attend   K and V of the blocks any query of the case selected (union per KV head), Q,\n"
    "           out, lse, the selection\n"
    "  sparse   select + attend (decode: compressed keys + the selected blocks' K and V)\n"
    "  backward the forward's reads (dense: all K, V; sparse: the union) plus out, dout, lse\n"
    "           read and dq, dk, dv written (dk, dv cover all N keys)\n"
    "table columns 'keys/row': mean keys attended per (query, KV head) row; 'union': the\n"
    "fraction of the N/block_size blocks that some query of the case selected.\n"
    "\n";

static const char bench_usage3[] =
    "the cache op (decode_cache): two KV caches (ifl_kv_cache_create, capacity N, 1 sequence)\n"
    "are filled with keys and values 0..N-2 (untimed); one decode step is then timed:\n"
    "ifl_kv_cache_append of token N-1's key and value followed by ifl_kv_cache_attn of its query\n"
    "(1 token, all query heads), after which ifl_kv_cache_truncate (untimed) takes the cache back\n"
    "to N-1 tokens for the next run.\n"
    "  dense    the step on a cache whose dense_len is N+1 (it attends dense)\n"
    "  sparse   the step on a cache whose dense_len is -1 (always sparse): stage 1 on the\n"
    "           cache's compressed keys (no pass over K), then stage 2, in the one call\n"
    "  select, attend, compress: not reported (null in JSON): ifl_kv_cache_attn does both stages\n"
    "  append   the append alone, timed separately in the same runs (median over the runs of\n"
    "           both caches); it stores one row of K and V and emits the compressed keys the new\n"
    "           token completes, and it is part of dense and sparse\n"
    "  FLOPs and bytes as decode (the append's are not counted); keys/row and union from the\n"
    "  selection ifl_kv_cache_attn returns. Memory: the two caches of one size at a time,\n"
    "  2 x ifl_kv_cache_bytes (about 2 x 139 MB at 128K keys of the standard shape in bf16).\n"
    "--dense-len has no effect: decode, prefill and backward call the stages directly, never\n"
    "the switch, and the cache op sets dense_len itself.\n"
    "\n"
    "--backend cuda (tensors in device memory): the inputs are generated on the host as for\n"
    "the other backends and uploaded once; the outputs stay on the device. Every timed call is\n"
    "followed by ifl_ctx_sync inside the timed region, so a time is the GPU's (with the call's\n"
    "host-side validation and launches). The selection is downloaded, untimed, for keys/row and\n"
    "union. The ops the backend refuses (a one-token probe asks it) are skipped with a note:\n"
    "the cache op (the cuda backend cannot write rows into a KV cache yet); asking only for\n"
    "skipped ops is a usage error. --threads and --simd do not apply.\n"
    "\n";

#define MAX_SIZES 32

static const char *const op_names[N_OPS] = {"decode", "prefill", "backward", "cache"}; /* --ops */
/* the order the cases run and print in: the cache steps right after the decode cases */
static const int op_order[N_OPS] = {OP_DECODE, OP_CACHE, OP_PREFILL, OP_BACKWARD};

/* ---- option lists ---- */

/* "8192,32K,128k" -> values (a K suffix multiplies by 1024). */
static int parse_sizes(const char *cmd, const char *flag, const char *s, long long *vals, int *n) {
    *n = 0;
    const char *p = s;
    for (;;) {
        char     *end;
        long long v = strtoll(p, &end, 10);
        if (end == p) goto bad;
        if (*end == 'k' || *end == 'K') {
            v *= 1024;
            end++;
        }
        if (*end != ',' && *end != '\0') goto bad;
        if (v < 1 || v > ((long long)1 << 28)) {
            cli_error(cmd, "--%s: %lld is out of range, expected 1..%lld", flag, v, (long long)1 << 28);
            return CLI_USAGE;
        }
        if (*n == MAX_SIZES) {
            cli_error(cmd, "--%s: at most %d sizes", flag, MAX_SIZES);
            return CLI_USAGE;
        }
        vals[(*n)++] = v;
        if (*end == '\0') return CLI_OK;
        p = end + 1;
    }
bad:
    cli_error(cmd, "--%s '%s' is not a comma-separated list of positive integers (K suffix allowed)", flag, s);
    return CLI_USAGE;
}

/* "decode,prefill" -> want[i] = 1 for each listed name; every name must be known. */
static int parse_names(const char *cmd, const char *flag, const char *s, const char *const *names, int n_names,
                       int *want) {
    for (int i = 0; i < n_names; i++) want[i] = 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t      len = end ? (size_t)(end - p) : strlen(p);
        int         hit = -1;
        for (int i = 0; i < n_names; i++)
            if (strlen(names[i]) == len && strncmp(names[i], p, len) == 0) hit = i;
        if (hit < 0) {
            char list[128] = "";
            for (int i = 0; i < n_names; i++) {
                strcat(list, i ? ", " : "");
                strcat(list, names[i]);
            }
            cli_error(cmd, "--%s: '%.*s' is not one of %s", flag, (int)len, p, list);
            return CLI_USAGE;
        }
        want[hit] = 1;
        if (end == NULL) return CLI_OK;
        p = end + 1;
    }
}

/* malloc with a message naming the buffer; *total counts the bytes. */
static void *alloc(const char *cmd, const char *what, size_t bytes, double *total, int *failed) {
    if (*failed) return NULL;
    void *p = malloc(bytes ? bytes : 1);
    if (p == NULL) {
        cli_error(cmd, "cannot allocate %.1f MB for %s (%.1f MB allocated before it); use smaller --keys or "
                       "--queries", (double)bytes * 1e-6, what, *total * 1e-6);
        *failed = 1;
    }
    *total += (double)bytes;
    return p;
}

/* A buffer the ops read or write: as alloc() on host backends, the backend's memory on a device
 * backend. */
static void *op_alloc(struct bench *b, const char *what, size_t bytes, double *total, int *failed) {
    if (!b->device) return alloc(b->cmd, what, bytes, total, failed);
    if (*failed) return NULL;
    void           *p  = NULL;
    enum ifl_status st = ifl_buffer_alloc(b->ctx, bytes ? bytes : 1, &p);
    if (st != IFL_STATUS_OK) {
        cli_error(b->cmd, "cannot allocate %.1f MB of %s memory for %s (%.1f MB allocated before it): %s%s",
                  (double)bytes * 1e-6, b->backend_name, what, *total * 1e-6, ifl_ctx_errmsg(b->ctx),
                  st == IFL_STATUS_OUT_OF_MEMORY ? "; use smaller --keys or --queries" : "");
        *failed = 1;
    }
    *total += (double)bytes;
    return p;
}

static void op_free(struct bench *b, void *p) {
    if (b->device)
        ifl_buffer_free(b->ctx, p);
    else
        free(p);
}

/* The inputs, numbered for bench.uploaded: k and q of each kind, v, dout. */
#define INPUT_SLOT_K(in) (2 * (in))
#define INPUT_SLOT_Q(in) (2 * (in) + 1)
#define INPUT_SLOT_V     (2 * N_INPUTS)
#define INPUT_SLOT_DOUT  (2 * N_INPUTS + 1)

/* Replaces the generated host buffer *p of input `slot` by a device buffer holding its bytes. */
static int upload_input(struct bench *b, void **p, int slot, size_t bytes, const char *what, double *total) {
    int   failed = 0;
    void *d      = op_alloc(b, what, bytes, total, &failed);
    if (failed) return CLI_FAILURE;
    if (ifl_buffer_upload(b->ctx, d, *p, bytes) != IFL_STATUS_OK) {
        cli_error(b->cmd, "uploading %s: %s", what, ifl_ctx_errmsg(b->ctx));
        ifl_buffer_free(b->ctx, d);
        return CLI_FAILURE;
    }
    free(*p);
    *p = d;
    b->uploaded |= 1u << slot;
    return CLI_OK;
}

static void input_free(struct bench *b, void *p, int slot) {
    if (b->uploaded & (1u << slot))
        ifl_buffer_free(b->ctx, p);
    else
        free(p);
}

/* Does a device backend run the KV cache? Creates a one-token cache. */
static enum ifl_status probe_cache(struct bench *b, char *msg, size_t len) {
    struct ifl_kv_cache_params p = ifl_kv_cache_params_default();
    p.capacity                   = 1;
    p.n_seqs                     = 1;
    p.n_heads_kv                 = (int32_t)b->hkv;
    p.head_dim                   = (int32_t)b->d;
    p.dtype                      = b->dtype;
    p.cfg                        = b->cfg;
    struct ifl_kv_cache *c       = NULL;
    enum ifl_status      st      = ifl_kv_cache_create(b->ctx, &p, &c);
    if (st == IFL_STATUS_OK) { /* a device backend may hold a cache it cannot write yet: append a row */
        const size_t  bytes    = (size_t)(b->hkv * b->d) * b->es;
        const int64_t shape[3] = {1, b->hkv, b->d};
        void         *zeros = calloc(1, bytes), *row = NULL;
        st = zeros ? ifl_buffer_alloc(b->ctx, bytes, &row) : IFL_STATUS_OUT_OF_MEMORY;
        if (st == IFL_STATUS_OK) st = ifl_buffer_upload(b->ctx, row, zeros, bytes);
        if (st == IFL_STATUS_OK) {
            struct ifl_tensor t = ifl_tensor_make(row, b->dtype, 3, shape);
            st                  = ifl_kv_cache_append(b->ctx, c, 0, &t, &t);
        }
        ifl_buffer_free(b->ctx, row);
        free(zeros);
        if (!zeros) {
            snprintf(msg, len, "out of host memory");
            ifl_kv_cache_destroy(c);
            return st;
        }
    }
    snprintf(msg, len, "%s", ifl_ctx_errmsg(b->ctx));
    ifl_kv_cache_destroy(c);
    return st;
}

/* Does a device backend run the backward ops? The forward and backward, dense and sparse, of one
 * token of the bench's shape on zeros in the backend's memory. Returns the status of the first
 * call that failed, and its message in msg. */
static enum ifl_status probe_backward(struct bench *b, char *msg, size_t len) {
    const struct ifl_sparse_config *cfg = &b->cfg;
    const int64_t hq = b->hq, hkv = b->hkv, d = b->d, width = ifl_select_width(cfg, 1);
    const int64_t qs[3] = {1, hq, d}, ks[3] = {1, hkv, d}, ls[2] = {1, hq}, ss[3] = {hkv, 1, width};
    enum { P_Q, P_OUT, P_OUT2, P_DOUT, P_DQ, P_K, P_V, P_DK, P_DV, P_LSE, P_LSE2, P_SEL, P_N };
    size_t off[P_N], total = 0;
    for (int i = 0; i < P_N; i++) {
        size_t bytes = i <= P_DQ   ? (size_t)(hq * d) * b->es
                     : i <= P_DV   ? (size_t)(hkv * d) * b->es
                     : i <= P_LSE2 ? (size_t)hq * sizeof(float)
                                   : (size_t)(hkv * width) * sizeof(int32_t);
        off[i] = total;
        total += (bytes + 255) & ~(size_t)255;
    }
    void *host = calloc(1, total), *dev = NULL;
    if (host == NULL) {
        snprintf(msg, len, "out of host memory");
        return IFL_STATUS_OUT_OF_MEMORY;
    }
    enum ifl_status st = ifl_buffer_alloc(b->ctx, total, &dev);
    if (st == IFL_STATUS_OK) st = ifl_buffer_upload(b->ctx, dev, host, total);
    free(host);
    if (st == IFL_STATUS_OK) {
        char             *base = dev;
        struct ifl_tensor q    = ifl_tensor_make(base + off[P_Q], b->dtype, 3, qs);
        struct ifl_tensor out = ifl_tensor_make(base + off[P_OUT], b->dtype, 3, qs);
        struct ifl_tensor out2 = ifl_tensor_make(base + off[P_OUT2], b->dtype, 3, qs);
        struct ifl_tensor dout = ifl_tensor_make(base + off[P_DOUT], b->dtype, 3, qs);
        struct ifl_tensor dq = ifl_tensor_make(base + off[P_DQ], b->dtype, 3, qs);
        struct ifl_tensor k = ifl_tensor_make(base + off[P_K], b->dtype, 3, ks);
        struct ifl_tensor v = ifl_tensor_make(base + off[P_V], b->dtype, 3, ks);
        struct ifl_tensor dk = ifl_tensor_make(base + off[P_DK], b->dtype, 3, ks);
        struct ifl_tensor dv = ifl_tensor_make(base + off[P_DV], b->dtype, 3, ks);
        struct ifl_tensor lse = ifl_tensor_make(base + off[P_LSE], IFL_DTYPE_F32, 2, ls);
        struct ifl_tensor lse2 = ifl_tensor_make(base + off[P_LSE2], IFL_DTYPE_F32, 2, ls);
        struct ifl_tensor sel = ifl_tensor_make(base + off[P_SEL], IFL_DTYPE_I32, 3, ss);
        st = ifl_dense_attn_fwd(b->ctx, cfg, NULL, &q, &k, &v, &out, &lse);
        if (st == IFL_STATUS_OK)
            st = ifl_dense_attn_bwd(b->ctx, cfg, NULL, &q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv);
        if (st == IFL_STATUS_OK) st = ifl_select(b->ctx, cfg, NULL, &q, &k, &sel);
        if (st == IFL_STATUS_OK) st = ifl_sparse_attn_fwd(b->ctx, cfg, NULL, &q, &k, &v, &sel, &out2, &lse2);
        if (st == IFL_STATUS_OK)
            st = ifl_sparse_attn_bwd(b->ctx, cfg, NULL, &q, &k, &v, &sel, &out2, &lse2, &dout, &dq, &dk, &dv);
        if (st == IFL_STATUS_OK) st = ifl_ctx_sync(b->ctx);
    }
    snprintf(msg, len, "%s", st == IFL_STATUS_OK ? "" : ifl_ctx_errmsg(b->ctx));
    ifl_buffer_free(b->ctx, dev);
    return st;
}

int cmd_bench(int argc, char **argv) {
    const char *cmd = "bench";
    for (int i = 2; i < argc; i++) /* the model runtime's benchmark has its own options */
        if (strcmp(argv[i], "--model") == 0 || strncmp(argv[i], "--model=", 8) == 0) return cmd_bench_model(argc, argv);
    long long   hq = 32, hkv = 2, d = 128, chunk = 512, bwd_keys = -1, runs = 0, threads = 0, seed = 1;
    const char *backend_name = "cpu", *dtype_name = "bf16", *simd_name = "auto", *keys_str = NULL;
    const char *ops_str = NULL, *inputs_str = "random,correlated";
    int         json = 0, quick = 0, check_finite = 0;
    struct cli_sparse_flags sf;
    cli_sparse_flags_default(&sf);
    enum { N_OWN = 17 };
    struct cli_opt opts[N_OWN + CLI_SPARSE_N_OPTS] = {
        {"ops", CLI_STR, &ops_str, 0, 0, 0},
        {"keys", CLI_STR, &keys_str, 0, 0, 0},
        {"queries", CLI_INT, &chunk, 1, 1 << 20, 0},
        {"bwd-keys", CLI_INT, &bwd_keys, 1, (long long)1 << 28, 0},
        {"inputs", CLI_STR, &inputs_str, 0, 0, 0},
        {"quick", CLI_FLAG, &quick, 0, 0, 0},
        {"heads", CLI_INT, &hq, 1, 256, 0},
        {"kv-heads", CLI_INT, &hkv, 1, 256, 0},
        {"head-dim", CLI_INT, &d, 1, IFL_MAX_HEAD_DIM, 0},
        {"dtype", CLI_STR, &dtype_name, 0, 0, 0},
        {"backend", CLI_STR, &backend_name, 0, 0, 0},
        {"threads", CLI_INT, &threads, 0, 4096, 0},
        {"simd", CLI_STR, &simd_name, 0, 0, 0},
        {"runs", CLI_INT, &runs, 1, MAX_RUNS, 0},
        {"check-finite", CLI_FLAG, &check_finite, 0, 0, 0},
        {"seed", CLI_INT, &seed, 0, (long long)1 << 62, 0},
        {"json", CLI_FLAG, &json, 0, 0, 0},
    };
    int n_opts = N_OWN + cli_sparse_opts(&sf, opts + N_OWN);
    int       rc     = cli_parse(cmd, argc, argv, 2, opts, n_opts);
    if (rc == CLI_HELP) {
        printf("%s%s%s%s", bench_usage, bench_usage2, bench_usage3, cli_sparse_help);
        return CLI_OK;
    }
    if (rc != CLI_OK) return rc;
    bench_stderr_tty = isatty(fileno(stderr));

    /* ---- check the flags ---- */
    if (hq % hkv != 0) {
        cli_error(cmd, "--heads %lld must be a multiple of --kv-heads %lld", hq, hkv);
        return CLI_USAGE;
    }
    enum ifl_dtype dtype;
    if (strcmp(dtype_name, "bf16") == 0)
        dtype = IFL_DTYPE_BF16;
    else if (strcmp(dtype_name, "f16") == 0)
        dtype = IFL_DTYPE_F16;
    else if (strcmp(dtype_name, "f32") == 0)
        dtype = IFL_DTYPE_F32;
    else {
        cli_error(cmd, "--dtype '%s' is not one of bf16, f16, f32", dtype_name);
        return CLI_USAGE;
    }
    enum ifl_simd simd;
    if (ifl_simd_parse(simd_name, &simd) != IFL_STATUS_OK) {
        cli_error(cmd, "--simd '%s' is not one of auto, scalar, avx2, avx512", simd_name);
        return CLI_USAGE;
    }
    int want_op[N_OPS] = {1, 1, 1, 1}, want_in[N_INPUTS];
    if (quick) want_op[OP_BACKWARD] = 0;
    if (ops_str && (rc = parse_names(cmd, "ops", ops_str, op_names, N_OPS, want_op)) != CLI_OK) return rc;
    if ((rc = parse_names(cmd, "inputs", inputs_str, bench_input_names, N_INPUTS, want_in)) != CLI_OK) return rc;
    long long dec_keys[MAX_SIZES], pre_keys[MAX_SIZES];
    int       n_dec = 0, n_pre = 0;
    if (quick) {
        if (keys_str) {
            cli_error(cmd, "--quick picks its own sizes (decode and cache at 128K, prefill at 64K); leave out --keys");
            return CLI_USAGE;
        }
        dec_keys[n_dec++] = 131072;
        pre_keys[n_pre++] = 65536;
    } else {
        if ((rc = parse_sizes(cmd, "keys", keys_str ? keys_str : "8K,32K,64K,128K", dec_keys, &n_dec)) != CLI_OK)
            return rc;
        memcpy(pre_keys, dec_keys, sizeof dec_keys);
        n_pre = n_dec;
    }
    if (bwd_keys < 0) {
        bwd_keys = -1;
        if (!keys_str) bwd_keys = 32768;
        for (int i = 0; keys_str && i < n_pre; i++)
            if (pre_keys[i] <= 32768 && pre_keys[i] > bwd_keys) bwd_keys = pre_keys[i];
        for (int i = 0; bwd_keys < 0 && i < n_pre; i++)
            if (bwd_keys < 0 || pre_keys[i] < bwd_keys) bwd_keys = pre_keys[i];
        if (bwd_keys < 0) bwd_keys = 32768;
    }
    if (want_op[OP_PREFILL])
        for (int i = 0; i < n_pre; i++)
            if (pre_keys[i] < chunk) {
                cli_error(cmd, "a prefill chunk of --queries %lld needs at least as many keys, got %lld", chunk,
                          pre_keys[i]);
                return CLI_USAGE;
            }
    if (want_op[OP_BACKWARD] && bwd_keys < chunk) {
        cli_error(cmd, "the backward chunk of --queries %lld needs at least as many keys, got --bwd-keys %lld", chunk,
                  bwd_keys);
        return CLI_USAGE;
    }
    struct ifl_sparse_config cfg;
    if ((rc = cli_sparse_config(cmd, &sf, &cfg)) != CLI_OK) return rc;

    /* the backend: cpu by default; say clearly when this build lacks it */
    enum ifl_backend backend;
    if (strcmp(backend_name, "cpu") == 0 && !ifl_backend_available(IFL_BACKEND_CPU)) {
        cli_error(cmd, "the cpu backend is not in this build (see 'infllm version'); use --backend ref with tiny "
                       "sizes, e.g. --keys 256,512 --queries 16 --heads 4 --head-dim 16 --block-size 16 "
                       "--kernel-size 8 --kernel-stride 4 --window 32 --topk 4");
        return CLI_USAGE;
    }
    if ((rc = cli_backend(cmd, backend_name, &backend)) != CLI_OK) return rc;

    /* ---- the context and the buffers ---- */
    struct bench b;
    memset(&b, 0, sizeof b);
    b.cmd          = cmd;
    b.cfg          = cfg;
    b.dtype        = dtype;
    b.es           = ifl_dtype_size(dtype);
    b.hq           = hq;
    b.hkv          = hkv;
    b.d            = d;
    b.chunk        = chunk;
    b.runs         = runs;
    b.json         = json;
    b.tab          = json ? stderr : stdout;
    b.backend_name = backend_name;
    bench_machine_info(&b.mach);
    struct ifl_ctx_params cp = ifl_ctx_params_default();
    cp.backend               = backend;
    cp.n_threads             = (int)threads;
    cp.simd                  = simd;
    cp.check_finite          = check_finite;
    if ((rc = cli_ctx_create(cmd, &cp, &b.ctx)) != CLI_OK) return rc;
    b.device = backend == IFL_BACKEND_CUDA; /* infllm.h: cuda computes on device memory */
    rc       = CLI_FAILURE;
    if (b.device) { /* the ops such a backend refuses are skipped, with a note */
        static const int probed[] = {OP_CACHE, OP_BACKWARD};
        int              skipped = 0, left = 0;
        for (size_t i = 0; i < sizeof probed / sizeof probed[0]; i++) {
            const int op = probed[i];
            char      msg[512];
            if (!want_op[op]) continue;
            enum ifl_status st = op == OP_CACHE ? probe_cache(&b, msg, sizeof msg) : probe_backward(&b, msg, sizeof msg);
            if (st == IFL_STATUS_UNSUPPORTED) {
                cli_error(cmd, "note: skipping op %s on the %s backend: %s", bench_op_labels[op], backend_name, msg);
                want_op[op] = 0;
                skipped     = 1;
            } else if (st != IFL_STATUS_OK) {
                cli_error(cmd, "asking the %s backend whether it runs op %s: %s", backend_name, bench_op_labels[op], msg);
                goto done;
            }
        }
        for (int op = 0; op < N_OPS; op++) left += want_op[op];
        if (skipped && left == 0) {
            cli_error(cmd, "nothing to run: the %s backend runs none of the ops asked for (--ops %s)", backend_name,
                      ops_str ? ops_str : "");
            rc = CLI_USAGE;
            goto done;
        }
    }

    int64_t max_keys = 1, max_nb = 1, max_w = 1, max_c1 = 0, max_c2 = 0;
    int64_t max_tq = want_op[OP_DECODE] || want_op[OP_CACHE] ? 1 : 0;
    if (want_op[OP_PREFILL] || want_op[OP_BACKWARD]) max_tq = chunk;
    for (int op = 0; op < N_OPS; op++) {
        if (!want_op[op]) continue;
        const int        dec  = op == OP_DECODE || op == OP_CACHE;
        const long long *list = dec ? dec_keys : op == OP_PREFILL ? pre_keys : &bwd_keys;
        int              n    = dec ? n_dec : op == OP_PREFILL ? n_pre : 1;
        for (int i = 0; i < n; i++) {
            int64_t nk = list[i];
            if (nk > max_keys) max_keys = nk;
            int64_t nb = (nk + cfg.block_size - 1) / cfg.block_size, wd = ifl_select_width(&cfg, nk);
            int64_t c1 = ifl_compressed_len(nk, cfg.kernel_size, cfg.kernel_stride);
            int64_t c2 = ifl_compressed_len(nk, cfg.coarse_kernel_size, cfg.coarse_kernel_stride);
            if (nb > max_nb) max_nb = nb;
            if (wd > max_w) max_w = wd;
            if (c1 > max_c1) max_c1 = c1;
            if (c2 > max_c2) max_c2 = c2;
        }
    }
    if (backend == IFL_BACKEND_REF && max_keys > 4096)
        cli_error(cmd, "note: the ref backend is float64 scalar reference code; %lld keys will take very long",
                  (long long)max_keys);
    const size_t es = b.es, krow = (size_t)(hkv * d) * es, qrow = (size_t)(hq * d) * es;
    double       total = 0;
    int          failed = 0;
    char         what[128];
    /* the inputs in host memory (uploaded once generated, on a device backend), the outputs where
     * the ops write them */
    for (int in = 0; in < N_INPUTS; in++) {
        if (!want_in[in]) continue;
        snprintf(what, sizeof what, "K of %lld keys (%s inputs)", (long long)max_keys, bench_input_names[in]);
        b.k[in] = alloc(cmd, what, (size_t)max_keys * krow, &total, &failed);
        snprintf(what, sizeof what, "Q of %lld queries (%s inputs)", (long long)max_tq, bench_input_names[in]);
        b.q[in] = alloc(cmd, what, (size_t)max_tq * qrow, &total, &failed);
    }
    snprintf(what, sizeof what, "V of %lld keys", (long long)max_keys);
    b.v    = alloc(cmd, what, (size_t)max_keys * krow, &total, &failed);
    const size_t sel_bytes = (size_t)(hkv * max_tq * max_w) * sizeof(int32_t);
    b.out  = op_alloc(&b, "out", (size_t)max_tq * qrow, &total, &failed);
    b.out2 = op_alloc(&b, "out", (size_t)max_tq * qrow, &total, &failed);
    b.lse  = op_alloc(&b, "lse", (size_t)(max_tq * hq) * sizeof(float), &total, &failed);
    b.lse2 = op_alloc(&b, "lse", (size_t)(max_tq * hq) * sizeof(float), &total, &failed);
    b.sel  = op_alloc(&b, "the selection", sel_bytes, &total, &failed);
    b.sel_host = b.device ? alloc(cmd, "the selection", sel_bytes, &total, &failed) : b.sel;
    b.seen = alloc(cmd, "a block bitmap", (size_t)max_nb, &total, &failed);
    b.c1   = op_alloc(&b, "compressed keys", (size_t)max_c1 * krow, &total, &failed);
    b.c2   = op_alloc(&b, "compressed keys", (size_t)max_c2 * krow, &total, &failed);
    if (want_op[OP_BACKWARD]) {
        b.dout = alloc(cmd, "dout", (size_t)chunk * qrow, &total, &failed);
        b.dq   = op_alloc(&b, "dq", (size_t)chunk * qrow, &total, &failed);
        snprintf(what, sizeof what, "dk of %lld keys", bwd_keys);
        b.dk = op_alloc(&b, what, (size_t)bwd_keys * krow, &total, &failed);
        snprintf(what, sizeof what, "dv of %lld keys", bwd_keys);
        b.dv = op_alloc(&b, what, (size_t)bwd_keys * krow, &total, &failed);
    }
    if (failed) goto done;

    /* ---- the synthetic inputs (one buffer of the largest size; smaller cases use its first rows) ---- */
    double t_start = cli_now();
    bench_progress(1, "generating inputs: %lld keys, %.0f MB in all", (long long)max_keys, total * 1e-6);
    struct synth r; /* seeds 4 seed + 1 .. 4 seed + 3: v and dout, then each kind of k and q */
    synth_seed(&r, (uint64_t)seed * 4 + 1, 1);
    synth_normals(b.v, dtype, (size_t)max_keys * (size_t)(hkv * d), &r);
    if (b.dout) synth_normals(b.dout, dtype, (size_t)(chunk * hq * d), &r);
    for (int in = 0; in < N_INPUTS; in++) {
        if (!want_in[in]) continue;
        synth_seed(&r, (uint64_t)seed * 4 + 2 + (uint64_t)in, 1);
        if (in == IN_RANDOM) {
            synth_normals(b.k[in], dtype, (size_t)max_keys * (size_t)(hkv * d), &r);
            synth_normals(b.q[in], dtype, (size_t)(max_tq * hq * d), &r);
        } else if (synth_ar1(b.k[in], dtype, max_keys, hkv, d, &r) || synth_ar1(b.q[in], dtype, max_tq, hq, d, &r)) {
            cli_error(cmd, "out of memory");
            goto done;
        }
    }
    if (b.device) { /* once, untimed */
        bench_progress(1, "uploading the inputs to the %s backend", backend_name);
        for (int in = 0; in < N_INPUTS; in++) {
            if (!want_in[in]) continue;
            snprintf(what, sizeof what, "K (%s inputs)", bench_input_names[in]);
            if (upload_input(&b, &b.k[in], INPUT_SLOT_K(in), (size_t)max_keys * krow, what, &total)) goto done;
            snprintf(what, sizeof what, "Q (%s inputs)", bench_input_names[in]);
            if (upload_input(&b, &b.q[in], INPUT_SLOT_Q(in), (size_t)max_tq * qrow, what, &total)) goto done;
        }
        if (upload_input(&b, &b.v, INPUT_SLOT_V, (size_t)max_keys * krow, "V", &total)) goto done;
        if (b.dout && upload_input(&b, &b.dout, INPUT_SLOT_DOUT, (size_t)chunk * qrow, "dout", &total)) goto done;
    }

    bench_progress_clear();
    bench_print_header(&b);
    int total_cases = 0, idx = 0;
    for (int in = 0; in < N_INPUTS; in++) {
        if (!want_in[in]) continue;
        total_cases += (want_op[OP_DECODE] ? n_dec : 0) + (want_op[OP_CACHE] ? n_dec : 0) +
                       (want_op[OP_PREFILL] ? n_pre : 0) + want_op[OP_BACKWARD];
    }
    for (int oi = 0; oi < N_OPS; oi++) {
        const int op = op_order[oi];
        if (!want_op[op]) continue;
        int n = op == OP_DECODE || op == OP_CACHE ? n_dec : op == OP_PREFILL ? n_pre : 1;
        for (int i = 0; i < n; i++)
            for (int in = 0; in < N_INPUTS; in++) {
                if (!want_in[in]) continue;
                idx++;
                if (op == OP_BACKWARD)
                    rc = bench_run_backward(&b, in, bwd_keys, idx, total_cases);
                else if (op == OP_CACHE)
                    rc = bench_run_cache(&b, in, dec_keys[i], idx, total_cases);
                else
                    rc = bench_run_forward(&b, op, in, op == OP_DECODE ? dec_keys[i] : pre_keys[i], idx, total_cases);
                if (rc != CLI_OK) goto done;
            }
    }
    bench_progress(1, "done: %d cases in %.1f s", total_cases, cli_now() - t_start);
    if (bench_stderr_tty) fputc('\n', stderr);
    rc = CLI_OK;
done:
    for (int in = 0; in < N_INPUTS; in++) {
        input_free(&b, b.k[in], INPUT_SLOT_K(in));
        input_free(&b, b.q[in], INPUT_SLOT_Q(in));
    }
    input_free(&b, b.v, INPUT_SLOT_V);
    input_free(&b, b.dout, INPUT_SLOT_DOUT);
    op_free(&b, b.out);
    op_free(&b, b.out2);
    op_free(&b, b.c1);
    op_free(&b, b.c2);
    op_free(&b, b.dq);
    op_free(&b, b.dk);
    op_free(&b, b.dv);
    op_free(&b, b.lse);
    op_free(&b, b.lse2);
    op_free(&b, b.sel);
    if (b.sel_host != b.sel) free(b.sel_host);
    free(b.seen);
    ifl_ctx_destroy(b.ctx);
    return rc;
}
