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
 * the keys/row and union columns. The ops such a backend refuses (the KV cache, host memory only)
 * are found by a one-token probe and skipped with a note.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "../runtime/rng.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
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
    "the cache op (the KV cache lives in host memory); asking only for skipped ops is a usage\n"
    "error. --threads and --simd do not apply.\n"
    "\n";

#define MAX_SIZES 32
#define MAX_RUNS  100

enum { OP_DECODE, OP_PREFILL, OP_BACKWARD, OP_CACHE, N_OPS };
static const char *const op_names[N_OPS]  = {"decode", "prefill", "backward", "cache"};        /* --ops */
static const char *const op_labels[N_OPS] = {"decode", "prefill", "backward", "decode_cache"}; /* output */
/* the order the cases run and print in: the cache steps right after the decode cases */
static const int op_order[N_OPS] = {OP_DECODE, OP_CACHE, OP_PREFILL, OP_BACKWARD};
enum { IN_RANDOM, IN_CORRELATED, N_INPUTS };
static const char *const input_names[N_INPUTS] = {"random", "correlated"};

/* ---- synthetic inputs: rng.h's normals, both of each Box-Muller pair ---- */

struct rng {
    struct rt_rng r;
    int           have;
    double        spare;
};

static void rng_seed(struct rng *r, uint64_t seed) {
    rt_rng_init(&r->r, 0x9E3779B97F4A7C15ull ^ (seed + 1) * 0xBF58476D1CE4E5B9ull);
    r->have = 0;
}

static double rng_gauss(struct rng *r) {
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    r->have = 1;
    return rt_rng_normal(&r->r, &r->spare);
}

static void store(void *buf, enum ifl_dtype dt, size_t i, float x) {
    switch (dt) {
    case IFL_DTYPE_BF16: ((uint16_t *)buf)[i] = ifl_f32_to_bf16(x); break;
    case IFL_DTYPE_F16: ((uint16_t *)buf)[i] = ifl_f32_to_f16(x); break;
    case IFL_DTYPE_F32: ((float *)buf)[i] = x; break;
    default: ((double *)buf)[i] = x; break;
    }
}

static void gen_iid(void *buf, enum ifl_dtype dt, size_t n, struct rng *r) {
    for (size_t i = 0; i < n; i++) store(buf, dt, i, (float)rng_gauss(r));
}

/* rows x heads x d values: per (head, dim) a stationary AR(1) process along the rows,
 * x_t = sqrt(1-w) z_t + sqrt(w) e_t with z_t = rho z_{t-1} + sqrt(1-rho^2) n_t (unit variance). */
#define AR_RHO   0.995
#define AR_NOISE 0.005
static int gen_ar1(void *buf, enum ifl_dtype dt, int64_t rows, int64_t heads, int64_t d, struct rng *r) {
    const size_t width = (size_t)(heads * d);
    double      *z     = malloc(width * sizeof *z);
    if (z == NULL) return -1;
    const double a = sqrt(1.0 - AR_RHO * AR_RHO), sz = sqrt(1.0 - AR_NOISE), se = sqrt(AR_NOISE);
    for (size_t j = 0; j < width; j++) z[j] = rng_gauss(r);
    for (int64_t t = 0; t < rows; t++)
        for (size_t j = 0; j < width; j++) {
            if (t > 0) z[j] = AR_RHO * z[j] + a * rng_gauss(r);
            store(buf, dt, (size_t)t * width + j, (float)(sz * z[j] + se * rng_gauss(r)));
        }
    free(z);
    return 0;
}

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

/* ---- output helpers ---- */

static int stderr_tty;

/* Progress on stderr: on a terminal one line overwritten in place, elsewhere only the `line` ones,
 * one per line. */
static void progress(int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void progress(int line, const char *fmt, ...) {
    static double last;
    if (!line) { /* phase updates: terminal only, at most 4 a second */
        if (!stderr_tty || cli_now() - last < 0.25) return;
    }
    last = cli_now();
    va_list ap;
    va_start(ap, fmt);
    if (stderr_tty) fputs("\r\033[K", stderr);
    fputs("infllm bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (!stderr_tty) fputc('\n', stderr);
    fflush(stderr);
}

static void progress_clear(void) {
    if (stderr_tty) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* A number, or null when it is not finite (no NaN/Infinity in JSON). */
static void json_num(FILE *f, const char *key, double v) {
    fprintf(f, ",\"%s\":", key);
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

static const char *size_str(long long n, char *buf, size_t len) {
    if (n >= 1024 && n % 1024 == 0)
        snprintf(buf, len, "%lldK", n / 1024);
    else
        snprintf(buf, len, "%lld", n);
    return buf;
}

/* ---- the machine ---- */

struct machine {
    char date[64], arch[80], cpu[256];
    long n_cpus;
};

static void machine_info(struct machine *m) {
    time_t    now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv) == NULL || strftime(m->date, sizeof m->date, "%Y-%m-%d %H:%M UTC", &tmv) == 0)
        snprintf(m->date, sizeof m->date, "?");
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(m->arch, sizeof m->arch, "%s", u.machine);
    else
        snprintf(m->arch, sizeof m->arch, "?");
    snprintf(m->cpu, sizeof m->cpu, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            /* x86: "model name"; some ARM kernels: "Model" or "Hardware" */
            if (strncmp(line, "model name", 10) == 0 || strncmp(line, "Model", 5) == 0 ||
                strncmp(line, "Hardware", 8) == 0) {
                char *c = strchr(line, ':');
                if (c == NULL) continue;
                c++;
                while (*c == ' ' || *c == '\t') c++;
                size_t len = strcspn(c, "\r\n");
                while (len > 0 && (c[len - 1] == ' ' || c[len - 1] == '\t')) len--;
                if (len > 0) snprintf(m->cpu, sizeof m->cpu, "%.*s", (int)len, c);
                break;
            }
        }
        fclose(f);
    }
    m->n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
}

/* ---- the benchmark ---- */

struct bench {
    const char              *cmd;
    struct ifl_ctx          *ctx;
    struct ifl_sparse_config cfg;
    enum ifl_dtype           dtype;
    size_t                   es;
    int64_t                  hq, hkv, d, chunk; /* chunk: queries of prefill/backward */
    long long                runs;              /* 0 = the defaults */
    int                      json;
    FILE                    *tab; /* the table: stdout, or stderr with --json */
    struct machine           mach;
    const char              *backend_name;
    int                      device;   /* the backend computes on device memory (cuda) */
    unsigned                 uploaded; /* the inputs (slot bits, INPUT_SLOT) now in device memory */
    /* The buffers the ops see: host memory on host backends, the backend's memory on a device
     * backend (ifl_buffer_alloc). inputs: k and q per kind (NULL when not asked for), v and dout
     * shared */
    void *k[N_INPUTS], *q[N_INPUTS], *v, *dout;
    /* outputs */
    void    *out, *out2, *c1, *c2, *dq, *dk, *dv;
    float   *lse, *lse2;
    int32_t *sel;
    /* host memory */
    int32_t *sel_host; /* the selection where the host reads it (sel itself on host backends) */
    uint8_t *seen;     /* block bitmap for the union count */
};

/* The tensors of one case. */
struct views {
    struct ifl_tensor q, k, v, out, lse, out2, lse2, sel, c1, c2, dout, dq, dk, dv;
    int               has_c1, has_c2;
};

enum job { J_DENSE, J_COMPRESS, J_SELECT, J_ATTEND, J_SPARSE, J_DENSE_BWD, J_SPARSE_BWD };
static const char *const job_names[] = {"dense",   "compress",      "select",          "attend",
                                        "sparse", "dense backward", "sparse backward"};

static enum ifl_status run_job_async(struct bench *b, const struct views *w, enum job j) {
    const struct ifl_sparse_config *cfg = &b->cfg;
    enum ifl_status                 st;
    switch (j) {
    case J_DENSE: return ifl_dense_attn_fwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->out, &w->lse);
    case J_COMPRESS:
        return ifl_compress_keys(b->ctx, cfg, NULL, &w->k, w->has_c1 ? &w->c1 : NULL, w->has_c2 ? &w->c2 : NULL);
    case J_SELECT: return ifl_select(b->ctx, cfg, NULL, &w->q, &w->k, &w->sel);
    case J_ATTEND: return ifl_sparse_attn_fwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->sel, &w->out, &w->lse);
    case J_SPARSE:
        st = ifl_select(b->ctx, cfg, NULL, &w->q, &w->k, &w->sel);
        if (st == IFL_STATUS_OK)
            st = ifl_sparse_attn_fwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->sel, &w->out, &w->lse);
        return st;
    case J_DENSE_BWD:
        return ifl_dense_attn_bwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->out, &w->lse, &w->dout, &w->dq, &w->dk,
                                  &w->dv);
    case J_SPARSE_BWD:
        return ifl_sparse_attn_bwd(b->ctx, cfg, NULL, &w->q, &w->k, &w->v, &w->sel, &w->out2, &w->lse2, &w->dout,
                                   &w->dq, &w->dk, &w->dv);
    }
    return IFL_STATUS_INTERNAL;
}

/* The job, then a wait for the work it queued (a no-op on host backends), so that a host clock
 * around it measures a device backend's work too. */
static enum ifl_status run_job(struct bench *b, const struct views *w, enum job j) {
    enum ifl_status st = run_job_async(b, w, j);
    if (st == IFL_STATUS_OK && b->device) st = ifl_ctx_sync(b->ctx);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One warm-up, then the timed runs; *median in seconds, *runs_done the number of timed runs. */
static int measure(struct bench *b, const struct views *w, enum job j, int default_runs, const char *what,
                   double *median, int *runs_done) {
    progress(0, "%s: %s (warm-up)", what, job_names[j]);
    double          t0   = cli_now();
    enum ifl_status st   = run_job(b, w, j);
    double          warm = cli_now() - t0;
    if (st != IFL_STATUS_OK) goto fail;
    if (b->runs == 0 && warm > 10.0) { /* so long that the warm-up's own costs do not matter */
        *median    = warm;
        *runs_done = 0;
        return CLI_OK;
    }
    int n = b->runs > 0 ? (int)b->runs : warm > 2.0 ? 1 : default_runs;
    double s[MAX_RUNS];
    for (int i = 0; i < n; i++) {
        progress(0, "%s: %s (run %d of %d)", what, job_names[j], i + 1, n);
        t0 = cli_now();
        st = run_job(b, w, j);
        s[i] = cli_now() - t0;
        if (st != IFL_STATUS_OK) goto fail;
    }
    qsort(s, (size_t)n, sizeof s[0], cmp_double);
    *median    = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    *runs_done = n;
    return CLI_OK;
fail:
    progress_clear();
    cli_error(b->cmd, "%s, %s: %s", what, job_names[j], ifl_ctx_errmsg(b->ctx));
    return CLI_FAILURE;
}

/* What the selection implies: keys attended per row and the union of selected blocks. */
struct sel_stats {
    double attended;   /* sum over (KV head, query) rows of the keys each attends */
    double union_keys; /* sum over KV heads of the tokens of the blocks some query selected */
    double union_blk;  /* sum over KV heads of those blocks */
};

static void selection_stats(struct bench *b, const struct views *w, int64_t n_keys, int64_t tq, struct sel_stats *ss) {
    const int64_t bs = b->cfg.block_size, nb = (n_keys + bs - 1) / bs, width = w->sel.shape[2];
    const int64_t past = n_keys - tq;
    memset(ss, 0, sizeof *ss);
    for (int64_t g = 0; g < b->hkv; g++) {
        memset(b->seen, 0, (size_t)nb);
        for (int64_t i = 0; i < tq; i++) {
            const int32_t *row = b->sel_host + (g * tq + i) * width;
            const int64_t  p   = past + i;
            for (int64_t c = 0; c < width && row[c] >= 0; c++) {
                int64_t lo = (int64_t)row[c] * bs, hi = lo + bs;
                if (hi > p + 1) hi = p + 1;
                if (hi > lo) ss->attended += (double)(hi - lo);
                if (row[c] < nb) b->seen[row[c]] = 1;
            }
        }
        for (int64_t blk = 0; blk < nb; blk++)
            if (b->seen[blk]) {
                int64_t hi = (blk + 1) * bs < n_keys ? (blk + 1) * bs : n_keys;
                ss->union_keys += (double)(hi - blk * bs);
                ss->union_blk += 1;
            }
    }
}

/* The selection of w where the host reads it: downloaded from a device backend (untimed). */
static int fetch_selection(struct bench *b, const struct views *w, const char *what) {
    if (!b->device) return CLI_OK;
    size_t bytes = sizeof(int32_t);
    for (int i = 0; i < w->sel.ndim; i++) bytes *= (size_t)w->sel.shape[i];
    if (ifl_buffer_download(b->ctx, b->sel_host, w->sel.data, bytes) != IFL_STATUS_OK) {
        progress_clear();
        cli_error(b->cmd, "%s, downloading the selection: %s", what, ifl_ctx_errmsg(b->ctx));
        return CLI_FAILURE;
    }
    return CLI_OK;
}

struct result {
    int       op, inputs;
    long long n_keys, n_queries;
    double    dense_s, compress_s, select_s, attend_s, sparse_s; /* select/compress/attend < 0: none */
    double    append_s;                                          /* < 0: none (all but the cache op) */
    int       dense_runs, compress_runs, select_runs, attend_runs, sparse_runs, append_runs;
    double    cache_bytes;                                       /* of one cache; 0: none */
    double    dense_flop, select_flop, attend_flop;
    double    dense_bytes, select_bytes, attend_bytes;
    double    keys_per_row, union_frac;
};

static void print_header(struct bench *b) {
    FILE                           *f = b->tab;
    const struct ifl_sparse_config *c = &b->cfg;
    const int nt = ifl_ctx_threads(b->ctx);
    if (b->device)
        fprintf(f, "infllm bench  %s  host %s, %s (%ld cpus)  backend %s (device memory: inputs uploaded once, each "
                   "timed call followed by ifl_ctx_sync)  libinfllm %s\n",
                b->mach.date, b->mach.arch, b->mach.cpu, b->mach.n_cpus, b->backend_name, ifl_version());
    else
        fprintf(f, "infllm bench  %s  %s, %s (%ld cpus)  backend %s, simd %s, %d thread%s  libinfllm %s\n",
                b->mach.date, b->mach.arch, b->mach.cpu, b->mach.n_cpus, b->backend_name,
                ifl_simd_name(ifl_ctx_simd(b->ctx)), nt, nt == 1 ? "" : "s", ifl_version());
    fprintf(f,
            "shape: %lld query heads, %lld KV heads, head dim %lld, %s storage (outputs %s, lse f32); sparse: block %d, "
            "kernels %d/%d + %d/%d (lse %s), init %d, window %d, topk %d\n",
            (long long)b->hq, (long long)b->hkv, (long long)b->d, ifl_dtype_name(b->dtype), ifl_dtype_name(b->dtype),
            c->block_size, c->kernel_size, c->kernel_stride, c->coarse_kernel_size, c->coarse_kernel_stride,
            c->lse_mode == IFL_LSE_APPROX ? "approx" : "exact", c->init_blocks, c->window_size, c->topk);
    if (b->runs > 0)
        fprintf(f, "time: median of %lld runs after 1 warm-up.", b->runs);
    else
        fprintf(f, "time: median of 5 (decode, cache) / 3 (prefill, backward) runs after 1 warm-up; 1 run when the "
                   "warm-up took > 2 s, the warm-up alone when > 10 s.");
    fprintf(f, " sparse = select + attend timed together; ratio = dense / sparse.\n");
    fprintf(f, "decode_cache: one decode step through a KV cache of N-1 tokens, ifl_kv_cache_append of token N-1 + "
               "ifl_kv_cache_attn of its query (dense: dense_len N+1, sparse: dense_len -1; both stages in the one "
               "call, so no select/attend); (append) = the append alone, part of both.\n");
    fprintf(f, "GFLOP/s: dense 4*Hq*D*(p+1) per query at position p; select 2*Hq*D*(visible fine+coarse compressed "
               "keys) per query; attend 4*D*Hq/Hkv*(keys of each query's selected blocks up to p); backward 2.5x "
               "forward.\n");
    fprintf(f, "GB/s: dense K+V of all N keys + Q + out; select compressed keys + Q (ifl_select's own pass over K, "
               "shown as 'compress', not counted); attend K+V of the union of selected blocks + Q + out; backward "
               "adds dout, dq, dk, dv; decode_cache as decode (the append not counted).\n\n");
    /* a row of group labels centred over their columns, then the column names */
    static const struct {
        const char *label;
        int         width;
    } groups[] = {{"", 36}, {"time, ms (median)", 65}, {"", 7}, {"GFLOP/s", 31}, {"GB/s", 13}, {"selection", 15}};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        int len = (int)strlen(groups[i].label), left = (groups[i].width - len) / 2;
        fprintf(f, "%s%*s%s%*s", i ? " | " : "", left, "", groups[i].label, groups[i].width - len - left, "");
    }
    fputc('\n', f);
    fprintf(f, "%-12s %-10s %6s %5s | %10s %10s %10s %10s %10s %10s | %7s | %7s %7s %7s %7s | %6s %6s | %8s %6s\n",
            "op", "inputs", "keys", "qrys", "dense ms", "sparse ms", "select ms", "(compress)", "attend ms", "(append)",
            "ratio", "dense", "sparse", "select", "attend", "dense", "sparse", "keys/row", "union");
    fflush(f);
}

static double ms(double s) { return s * 1e3; }
static double rate(double amount, double s, double unit) { return s > 0 ? amount / s / unit : NAN; }

/* A GFLOP/s column, 7 wide: one decimal, none from 100000 (a GPU's rates). */
static const char *gflops_str(double v, char *buf, size_t len) {
    snprintf(buf, len, "%7.*f", v >= 99999.95 ? 0 : 1, v);
    return buf;
}

static void print_row(struct bench *b, const struct result *r) {
    FILE *f = b->tab;
    char  ks[32], qs[32], g1[32], g2[32], v1[16], v2[16], v3[32], v4[16], v5[16], v6[32], v7[16];
    progress_clear();
    const int has_sel = r->select_s >= 0, has_att = r->attend_s >= 0, has_app = r->append_s >= 0;
    if (has_sel) {
        snprintf(v1, sizeof v1, "%10.3f", ms(r->select_s));
        snprintf(v2, sizeof v2, "%10.3f", ms(r->compress_s));
        gflops_str(rate(r->select_flop, r->select_s, 1e9), v3, sizeof v3);
    } else {
        snprintf(v1, sizeof v1, "%10s", "-");
        snprintf(v2, sizeof v2, "%10s", "-");
        snprintf(v3, sizeof v3, "%7s", "-");
    }
    if (has_att) {
        snprintf(v5, sizeof v5, "%10.3f", ms(r->attend_s));
        gflops_str(rate(r->attend_flop, r->attend_s, 1e9), v6, sizeof v6);
    } else {
        snprintf(v5, sizeof v5, "%10s", "-");
        snprintf(v6, sizeof v6, "%7s", "-");
    }
    if (has_app)
        snprintf(v7, sizeof v7, "%10.3f", ms(r->append_s));
    else
        snprintf(v7, sizeof v7, "%10s", "-");
    snprintf(v4, sizeof v4, "%6.2fx", r->dense_s / r->sparse_s);
    const double gb_d = rate(r->dense_bytes, r->dense_s, 1e9);
    const double gb_s = rate(r->select_bytes + r->attend_bytes, r->sparse_s, 1e9);
    fprintf(f, "%-12s %-10s %6s %5s | %10.3f %10.3f %s %s %s %s | %7s | %s %s %s %s | %6.*f %6.*f | %8.0f %6.3f\n",
            op_labels[r->op], input_names[r->inputs], size_str(r->n_keys, ks, sizeof ks),
            size_str(r->n_queries, qs, sizeof qs), ms(r->dense_s), ms(r->sparse_s), v1, v2, v5, v7, v4,
            gflops_str(rate(r->dense_flop, r->dense_s, 1e9), g1, sizeof g1),
            gflops_str(rate(r->select_flop + r->attend_flop, r->sparse_s, 1e9), g2, sizeof g2), v3, v6,
            gb_d < 10 ? 2 : 1, gb_d, gb_s < 10 ? 2 : 1, gb_s, r->keys_per_row, r->union_frac);
    fflush(f);
}

static void print_json(struct bench *b, const struct result *r) {
    FILE                           *f = stdout;
    const struct ifl_sparse_config *c = &b->cfg;
    const int has_sel = r->select_s >= 0, has_att = r->attend_s >= 0, has_app = r->append_s >= 0;
    fputs("{\"op\":", f);
    json_str(f, op_labels[r->op]);
    fputs(",\"inputs\":", f);
    json_str(f, input_names[r->inputs]);
    fputs(",\"backend\":", f);
    json_str(f, b->backend_name);
    fputs(",\"simd\":", f);
    json_str(f, ifl_simd_name(ifl_ctx_simd(b->ctx)));
    fprintf(f, ",\"threads\":%d", ifl_ctx_threads(b->ctx));
    fputs(",\"dtype\":", f);
    json_str(f, ifl_dtype_name(b->dtype));
    fprintf(f, ",\"n_keys\":%lld,\"n_queries\":%lld,\"heads\":%lld,\"kv_heads\":%lld,\"head_dim\":%lld", r->n_keys,
            r->n_queries, (long long)b->hq, (long long)b->hkv, (long long)b->d);
    json_num(f, "dense_ms", ms(r->dense_s));
    json_num(f, "sparse_ms", ms(r->sparse_s));
    json_num(f, "select_ms", has_sel ? ms(r->select_s) : NAN);
    json_num(f, "attend_ms", has_att ? ms(r->attend_s) : NAN);
    json_num(f, "compress_ms", has_sel ? ms(r->compress_s) : NAN);
    json_num(f, "append_ms", has_app ? ms(r->append_s) : NAN);
    json_num(f, "ratio", r->dense_s / r->sparse_s);
    json_num(f, "dense_gflop", r->dense_flop * 1e-9);
    json_num(f, "sparse_gflop", (r->select_flop + r->attend_flop) * 1e-9);
    json_num(f, "select_gflop", has_sel ? r->select_flop * 1e-9 : NAN);
    json_num(f, "attend_gflop", has_att ? r->attend_flop * 1e-9 : NAN);
    json_num(f, "dense_gflops", rate(r->dense_flop, r->dense_s, 1e9));
    json_num(f, "sparse_gflops", rate(r->select_flop + r->attend_flop, r->sparse_s, 1e9));
    json_num(f, "select_gflops", has_sel ? rate(r->select_flop, r->select_s, 1e9) : NAN);
    json_num(f, "attend_gflops", has_att ? rate(r->attend_flop, r->attend_s, 1e9) : NAN);
    json_num(f, "dense_mb", r->dense_bytes * 1e-6);
    json_num(f, "sparse_mb", (r->select_bytes + r->attend_bytes) * 1e-6);
    json_num(f, "dense_gbs", rate(r->dense_bytes, r->dense_s, 1e9));
    json_num(f, "sparse_gbs", rate(r->select_bytes + r->attend_bytes, r->sparse_s, 1e9));
    json_num(f, "select_gbs", has_sel ? rate(r->select_bytes, r->select_s, 1e9) : NAN);
    json_num(f, "attend_gbs", has_att ? rate(r->attend_bytes, r->attend_s, 1e9) : NAN);
    json_num(f, "keys_per_row", r->keys_per_row);
    json_num(f, "union_frac", r->union_frac);
    json_num(f, "cache_mb", r->cache_bytes > 0 ? r->cache_bytes * 1e-6 : NAN);
    fprintf(f, ",\"dense_runs\":%d", r->dense_runs);
    if (has_sel)
        fprintf(f, ",\"select_runs\":%d,\"compress_runs\":%d", r->select_runs, r->compress_runs);
    else
        fputs(",\"select_runs\":null,\"compress_runs\":null", f);
    if (has_att)
        fprintf(f, ",\"attend_runs\":%d", r->attend_runs);
    else
        fputs(",\"attend_runs\":null", f);
    fprintf(f, ",\"sparse_runs\":%d", r->sparse_runs);
    if (has_app)
        fprintf(f, ",\"append_runs\":%d", r->append_runs);
    else
        fputs(",\"append_runs\":null", f);
    fprintf(f,
            ",\"block_size\":%d,\"kernel_size\":%d,\"kernel_stride\":%d,\"coarse_kernel_size\":%d,"
            "\"coarse_kernel_stride\":%d,\"init_blocks\":%d,\"window\":%d,\"topk\":%d,\"lse_mode\":\"%s\"",
            c->block_size, c->kernel_size, c->kernel_stride, c->coarse_kernel_size, c->coarse_kernel_stride,
            c->init_blocks, c->window_size, c->topk, c->lse_mode == IFL_LSE_APPROX ? "approx" : "exact");
    fputs(",\"date\":", f);
    json_str(f, b->mach.date);
    fputs(",\"machine\":", f);
    json_str(f, b->mach.arch);
    fputs(",\"cpu\":", f);
    json_str(f, b->mach.cpu);
    fprintf(f, ",\"n_cpus\":%ld", b->mach.n_cpus);
    fputs(",\"version\":", f);
    json_str(f, ifl_version());
    fputs("}\n", f);
    fflush(f);
}

/* FLOPs and bytes of a forward case of tq queries at the end of n keys. */
static void count_forward(struct bench *b, int64_t n, int64_t tq, const struct sel_stats *ss, struct result *r) {
    const struct ifl_sparse_config *c    = &b->cfg;
    const double                    hqd  = (double)(b->hq * b->d), es = (double)b->es;
    const int64_t                   past = n - tq;
    double                          vis = 0, vis_c = 0;
    for (int64_t i = 0; i < tq; i++) {
        int64_t p = past + i;
        vis += (double)(p + 1);
        vis_c += (double)ifl_compressed_len(p + 1, c->kernel_size, c->kernel_stride);
        if (c->lse_mode == IFL_LSE_APPROX)
            vis_c += (double)ifl_compressed_len(p + 1, c->coarse_kernel_size, c->coarse_kernel_stride);
    }
    const double qo  = (double)tq * hqd * es * 2 + (double)tq * (double)b->hq * 4; /* Q read, out + lse written */
    const double kvd = (double)(b->hkv * b->d) * es;                               /* one key row of K or V */
    const double selb = (double)(b->hkv * tq) * (double)ifl_select_width(c, n) * 4;
    double       n_c = (double)ifl_compressed_len(n, c->kernel_size, c->kernel_stride);
    if (c->lse_mode == IFL_LSE_APPROX) n_c += (double)ifl_compressed_len(n, c->coarse_kernel_size, c->coarse_kernel_stride);
    r->dense_flop   = 4 * hqd * vis;
    r->select_flop  = 2 * hqd * vis_c;
    r->attend_flop  = 4 * (double)b->d * (double)(b->hq / b->hkv) * ss->attended;
    r->dense_bytes  = 2 * (double)n * kvd + qo;
    r->select_bytes = n_c * kvd + (double)tq * hqd * es + selb;
    r->attend_bytes = 2 * ss->union_keys * (double)b->d * es + qo + selb;
    r->keys_per_row = ss->attended / (double)(b->hkv * tq);
    const int64_t nb = (n + c->block_size - 1) / c->block_size;
    r->union_frac    = ss->union_blk / (double)(b->hkv * nb);
}

static struct views make_views(struct bench *b, int inputs, int64_t n, int64_t tq) {
    struct views   w;
    enum ifl_dtype dt = b->dtype;
    const int64_t  qs[3] = {tq, b->hq, b->d}, ks[3] = {n, b->hkv, b->d}, ls[2] = {tq, b->hq};
    const int64_t  ss[3] = {b->hkv, tq, ifl_select_width(&b->cfg, n)};
    const int64_t  n1 = ifl_compressed_len(n, b->cfg.kernel_size, b->cfg.kernel_stride);
    const int64_t  n2 = ifl_compressed_len(n, b->cfg.coarse_kernel_size, b->cfg.coarse_kernel_stride);
    const int64_t  c1s[3] = {n1, b->hkv, b->d}, c2s[3] = {n2, b->hkv, b->d};
    w.q      = ifl_tensor_make(b->q[inputs], dt, 3, qs);
    w.k      = ifl_tensor_make(b->k[inputs], dt, 3, ks);
    w.v      = ifl_tensor_make(b->v, dt, 3, ks);
    w.out    = ifl_tensor_make(b->out, dt, 3, qs);
    w.lse    = ifl_tensor_make(b->lse, IFL_DTYPE_F32, 2, ls);
    w.out2   = ifl_tensor_make(b->out2, dt, 3, qs);
    w.lse2   = ifl_tensor_make(b->lse2, IFL_DTYPE_F32, 2, ls);
    w.sel    = ifl_tensor_make(b->sel, IFL_DTYPE_I32, 3, ss);
    w.c1     = ifl_tensor_make(b->c1, dt, 3, c1s);
    w.c2     = ifl_tensor_make(b->c2, dt, 3, c2s);
    w.has_c1 = n1 > 0;
    w.has_c2 = n2 > 0;
    w.dout   = ifl_tensor_make(b->dout, dt, 3, qs);
    w.dq     = ifl_tensor_make(b->dq, dt, 3, qs);
    w.dk     = ifl_tensor_make(b->dk, dt, 3, ks);
    w.dv     = ifl_tensor_make(b->dv, dt, 3, ks);
    return w;
}

static int run_forward(struct bench *b, int op, int inputs, int64_t n, int idx, int total) {
    const int64_t tq = op == OP_DECODE ? 1 : b->chunk;
    const int     nr = op == OP_DECODE ? 5 : 3;
    char          what[96], ks[32];
    snprintf(what, sizeof what, "[%d/%d] %s %s keys, %s", idx, total, op_labels[op], size_str(n, ks, sizeof ks),
             input_names[inputs]);
    progress(1, "%s ...", what);
    struct views  w = make_views(b, inputs, n, tq);
    struct result r;
    memset(&r, 0, sizeof r);
    r.op        = op;
    r.inputs    = inputs;
    r.n_keys    = n;
    r.n_queries = tq;
    r.append_s  = -1;
    int rc;
    if ((rc = measure(b, &w, J_DENSE, nr, what, &r.dense_s, &r.dense_runs))) return rc;
    if ((rc = measure(b, &w, J_SELECT, nr, what, &r.select_s, &r.select_runs))) return rc;
    if (w.has_c1) {
        if ((rc = measure(b, &w, J_COMPRESS, nr, what, &r.compress_s, &r.compress_runs))) return rc;
    }
    if ((rc = measure(b, &w, J_ATTEND, nr, what, &r.attend_s, &r.attend_runs))) return rc;
    if ((rc = measure(b, &w, J_SPARSE, nr, what, &r.sparse_s, &r.sparse_runs))) return rc;
    struct sel_stats ss;
    if ((rc = fetch_selection(b, &w, what))) return rc;
    selection_stats(b, &w, n, tq, &ss);
    count_forward(b, n, tq, &ss, &r);
    print_row(b, &r);
    if (b->json) print_json(b, &r);
    return CLI_OK;
}

static int run_backward(struct bench *b, int inputs, int64_t n, int idx, int total) {
    const int64_t tq = b->chunk;
    char          what[96], ks[32];
    snprintf(what, sizeof what, "[%d/%d] backward %s keys, %s", idx, total, size_str(n, ks, sizeof ks),
             input_names[inputs]);
    progress(1, "%s ...", what);
    struct views w = make_views(b, inputs, n, tq);
    /* the forward results the backward needs: dense into out/lse, sparse into out2/lse2 */
    progress(0, "%s: forward", what);
    enum ifl_status st = ifl_dense_attn_fwd(b->ctx, &b->cfg, NULL, &w.q, &w.k, &w.v, &w.out, &w.lse);
    if (st == IFL_STATUS_OK) st = ifl_select(b->ctx, &b->cfg, NULL, &w.q, &w.k, &w.sel);
    if (st == IFL_STATUS_OK)
        st = ifl_sparse_attn_fwd(b->ctx, &b->cfg, NULL, &w.q, &w.k, &w.v, &w.sel, &w.out2, &w.lse2);
    if (st != IFL_STATUS_OK) {
        progress_clear();
        cli_error(b->cmd, "%s, forward: %s", what, ifl_ctx_errmsg(b->ctx));
        return CLI_FAILURE;
    }
    struct result r;
    memset(&r, 0, sizeof r);
    r.op        = OP_BACKWARD;
    r.inputs    = inputs;
    r.n_keys    = n;
    r.n_queries = tq;
    r.select_s  = -1;
    r.compress_s = -1;
    r.append_s   = -1;
    int rc;
    if ((rc = measure(b, &w, J_DENSE_BWD, 3, what, &r.dense_s, &r.dense_runs))) return rc;
    if ((rc = measure(b, &w, J_SPARSE_BWD, 3, what, &r.attend_s, &r.attend_runs))) return rc;
    r.sparse_s    = r.attend_s;
    r.sparse_runs = r.attend_runs;
    struct sel_stats ss;
    if ((rc = fetch_selection(b, &w, what))) return rc;
    selection_stats(b, &w, n, tq, &ss);
    count_forward(b, n, tq, &ss, &r);
    /* backward: 2.5x the forward's FLOPs; reads q, k/v (all or the union), out, dout, lse (and the
     * selection), writes dq, dk, dv over all keys */
    const double es = (double)b->es, qd = (double)(tq * b->hq * b->d) * es, kd = (double)(n * b->hkv * b->d) * es;
    const double lseb = (double)(tq * b->hq) * 4;
    const double selb = (double)(b->hkv * tq) * (double)ifl_select_width(&b->cfg, n) * 4;
    r.dense_flop   = 2.5 * r.dense_flop;
    r.attend_flop  = 2.5 * r.attend_flop;
    r.select_flop  = 0;
    r.dense_bytes  = 2 * kd + 4 * qd + lseb + 2 * kd;
    r.attend_bytes = 2 * ss.union_keys * (double)b->d * es + 4 * qd + lseb + selb + 2 * kd;
    r.select_bytes = 0;
    print_row(b, &r);
    if (b->json) print_json(b, &r);
    return CLI_OK;
}

/* ---- decode through a KV cache ---- */

/* The tensors of one cache step: token n-1's key and value, the query, out, lse, sel. */
struct cache_step {
    struct ifl_tensor k1, v1, q, out, lse, sel;
};

/* One step on cache c (holding n-1 tokens): append token n-1, attend its query, truncate back.
 * *step_s and *append_s get the timings; the mode that ran must be `want`. */
static int cache_step(struct bench *b, struct ifl_kv_cache *c, const struct cache_step *t, int sparse, int64_t n,
                      const char *what, double *step_s, double *append_s) {
    enum ifl_mode   mode = sparse ? IFL_MODE_DENSE : IFL_MODE_SPARSE; /* the wrong one until set */
    const char     *call = "ifl_kv_cache_append";
    double          t0   = cli_now();
    enum ifl_status st   = ifl_kv_cache_append(b->ctx, c, 0, &t->k1, &t->v1);
    double          t1   = cli_now();
    if (st == IFL_STATUS_OK) {
        call = "ifl_kv_cache_attn";
        st   = ifl_kv_cache_attn(b->ctx, c, 0, &t->q, &t->out, &t->lse, sparse ? &t->sel : NULL, &mode);
    }
    double t2 = cli_now();
    if (st == IFL_STATUS_OK) {
        call = "ifl_kv_cache_truncate";
        st   = ifl_kv_cache_truncate(b->ctx, c, 0, n - 1);
    }
    if (st != IFL_STATUS_OK) {
        progress_clear();
        cli_error(b->cmd, "%s, %s cache step, %s: %s", what, sparse ? "sparse" : "dense", call,
                  ifl_ctx_errmsg(b->ctx));
        return CLI_FAILURE;
    }
    if (mode != (sparse ? IFL_MODE_SPARSE : IFL_MODE_DENSE)) {
        progress_clear();
        cli_error(b->cmd, "%s: the %s cache ran %s at %lld tokens", what, sparse ? "sparse" : "dense",
                  mode == IFL_MODE_SPARSE ? "sparse" : "dense", (long long)n);
        return CLI_FAILURE;
    }
    *step_s   = t2 - t0;
    *append_s = t1 - t0;
    return CLI_OK;
}

static double median(double *s, int n) {
    qsort(s, (size_t)n, sizeof s[0], cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* The warm-up and the timed steps of one cache, as measure() does for the stateless ops. The
 * append times of the timed runs (of the warm-up when there are none) go to app[*n_app...]. */
static int cache_measure(struct bench *b, struct ifl_kv_cache *c, const struct cache_step *t, int sparse, int64_t n,
                         const char *what, double *step_median, int *runs_done, double *app, int *n_app) {
    const char *job = sparse ? "sparse cache step" : "dense cache step";
    double      warm, warm_app, s[MAX_RUNS];
    int         rc;
    progress(0, "%s: %s (warm-up)", what, job);
    if ((rc = cache_step(b, c, t, sparse, n, what, &warm, &warm_app))) return rc;
    if (b->runs == 0 && warm > 10.0) {
        *step_median   = warm;
        *runs_done     = 0;
        app[(*n_app)++] = warm_app;
        return CLI_OK;
    }
    int runs = b->runs > 0 ? (int)b->runs : warm > 2.0 ? 1 : 5;
    for (int i = 0; i < runs; i++) {
        progress(0, "%s: %s (run %d of %d)", what, job, i + 1, runs);
        if ((rc = cache_step(b, c, t, sparse, n, what, &s[i], &app[*n_app]))) return rc;
        (*n_app)++;
    }
    *step_median = median(s, runs);
    *runs_done   = runs;
    return CLI_OK;
}

/* Keys and values 0..n-2 into cache c, in chunks (untimed). */
static int cache_fill(struct bench *b, struct ifl_kv_cache *c, int inputs, int64_t n, const char *what) {
    const int64_t chunk = 8192, row = b->hkv * b->d;
    for (int64_t r0 = 0; r0 < n - 1; r0 += chunk) {
        const int64_t rows = n - 1 - r0 < chunk ? n - 1 - r0 : chunk, shape[3] = {rows, b->hkv, b->d};
        struct ifl_tensor k = ifl_tensor_make((char *)b->k[inputs] + (size_t)(r0 * row) * b->es, b->dtype, 3, shape);
        struct ifl_tensor v = ifl_tensor_make((char *)b->v + (size_t)(r0 * row) * b->es, b->dtype, 3, shape);
        progress(0, "%s: filling the caches (%lld of %lld tokens)", what, (long long)r0, (long long)(n - 1));
        enum ifl_status st = ifl_kv_cache_append(b->ctx, c, 0, &k, &v);
        if (st != IFL_STATUS_OK) {
            progress_clear();
            cli_error(b->cmd, "%s, filling the cache: %s", what, ifl_ctx_errmsg(b->ctx));
            return CLI_FAILURE;
        }
    }
    return CLI_OK;
}

/* The cache case on two created caches (dense, sparse): fill, time, report. */
static int cache_case(struct bench *b, struct ifl_kv_cache *const cache[2], int inputs, int64_t n, const char *what) {
    int rc;
    for (int sp = 0; sp < 2; sp++)
        if ((rc = cache_fill(b, cache[sp], inputs, n, what)) != CLI_OK) return rc;

    /* token n-1: its key and value, the query (the first row of Q, as decode uses), the outputs */
    struct views      w   = make_views(b, inputs, n, 1);
    const int64_t     row = b->hkv * b->d, kvs[3] = {1, b->hkv, b->d};
    struct cache_step t;
    t.k1  = ifl_tensor_make((char *)b->k[inputs] + (size_t)((n - 1) * row) * b->es, b->dtype, 3, kvs);
    t.v1  = ifl_tensor_make((char *)b->v + (size_t)((n - 1) * row) * b->es, b->dtype, 3, kvs);
    t.q   = w.q;
    t.out = w.out;
    t.lse = w.lse;
    t.sel = w.sel;

    struct result r;
    memset(&r, 0, sizeof r);
    r.op          = OP_CACHE;
    r.inputs      = inputs;
    r.n_keys      = n;
    r.n_queries   = 1;
    r.select_s    = -1;
    r.compress_s  = -1;
    r.attend_s    = -1;
    r.cache_bytes = (double)ifl_kv_cache_bytes(cache[1]);
    double app[2 * MAX_RUNS];
    int    n_app = 0;
    if ((rc = cache_measure(b, cache[0], &t, 0, n, what, &r.dense_s, &r.dense_runs, app, &n_app))) return rc;
    if ((rc = cache_measure(b, cache[1], &t, 1, n, what, &r.sparse_s, &r.sparse_runs, app, &n_app))) return rc;
    r.append_s    = median(app, n_app);
    r.append_runs = r.dense_runs + r.sparse_runs; /* 0 when only the warm-ups ran */
    struct sel_stats ss; /* the sparse step's selection (the same on every run) */
    if ((rc = fetch_selection(b, &w, what))) return rc;
    selection_stats(b, &w, n, 1, &ss);
    count_forward(b, n, 1, &ss, &r);
    print_row(b, &r);
    if (b->json) print_json(b, &r);
    return CLI_OK;
}

static int run_cache(struct bench *b, int inputs, int64_t n, int idx, int total) {
    char what[96], ks[32];
    snprintf(what, sizeof what, "[%d/%d] %s %s keys, %s", idx, total, op_labels[OP_CACHE],
             size_str(n, ks, sizeof ks), input_names[inputs]);
    progress(1, "%s ...", what);
    /* two caches, freed before the next case: dense (dense_len above every length it reaches)
     * and always sparse */
    struct ifl_kv_cache       *cache[2] = {NULL, NULL};
    struct ifl_kv_cache_params p        = ifl_kv_cache_params_default();
    p.capacity                          = n;
    p.n_seqs                            = 1;
    p.n_heads_kv                        = (int32_t)b->hkv;
    p.head_dim                          = (int32_t)b->d;
    p.dtype                             = b->dtype;
    p.cfg                               = b->cfg;
    int rc = CLI_OK;
    for (int sp = 0; sp < 2 && rc == CLI_OK; sp++) {
        p.cfg.dense_len    = sp ? -1 : n + 1;
        enum ifl_status st = ifl_kv_cache_create(b->ctx, &p, &cache[sp]);
        if (st != IFL_STATUS_OK) {
            progress_clear();
            cli_error(b->cmd, "%s, creating the %s cache: %s%s", what, sp ? "sparse" : "dense",
                      ifl_ctx_errmsg(b->ctx), st == IFL_STATUS_OUT_OF_MEMORY ? "; use smaller --keys" : "");
            rc = CLI_FAILURE;
        }
    }
    if (rc == CLI_OK) rc = cache_case(b, cache, inputs, n, what);
    ifl_kv_cache_destroy(cache[0]);
    ifl_kv_cache_destroy(cache[1]);
    return rc;
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
    stderr_tty = isatty(fileno(stderr));

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
    if ((rc = parse_names(cmd, "inputs", inputs_str, input_names, N_INPUTS, want_in)) != CLI_OK) return rc;
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
    machine_info(&b.mach);
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
                cli_error(cmd, "note: skipping op %s on the %s backend: %s", op_labels[op], backend_name, msg);
                want_op[op] = 0;
                skipped     = 1;
            } else if (st != IFL_STATUS_OK) {
                cli_error(cmd, "asking the %s backend whether it runs op %s: %s", backend_name, op_labels[op], msg);
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
        snprintf(what, sizeof what, "K of %lld keys (%s inputs)", (long long)max_keys, input_names[in]);
        b.k[in] = alloc(cmd, what, (size_t)max_keys * krow, &total, &failed);
        snprintf(what, sizeof what, "Q of %lld queries (%s inputs)", (long long)max_tq, input_names[in]);
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
    progress(1, "generating inputs: %lld keys, %.0f MB in all", (long long)max_keys, total * 1e-6);
    struct rng r;
    rng_seed(&r, (uint64_t)seed * 4 + 0);
    gen_iid(b.v, dtype, (size_t)max_keys * (size_t)(hkv * d), &r);
    if (b.dout) gen_iid(b.dout, dtype, (size_t)(chunk * hq * d), &r);
    for (int in = 0; in < N_INPUTS; in++) {
        if (!want_in[in]) continue;
        rng_seed(&r, (uint64_t)seed * 4 + 1 + (uint64_t)in);
        if (in == IN_RANDOM) {
            gen_iid(b.k[in], dtype, (size_t)max_keys * (size_t)(hkv * d), &r);
            gen_iid(b.q[in], dtype, (size_t)(max_tq * hq * d), &r);
        } else if (gen_ar1(b.k[in], dtype, max_keys, hkv, d, &r) || gen_ar1(b.q[in], dtype, max_tq, hq, d, &r)) {
            cli_error(cmd, "out of memory");
            goto done;
        }
    }
    if (b.device) { /* once, untimed */
        progress(1, "uploading the inputs to the %s backend", backend_name);
        for (int in = 0; in < N_INPUTS; in++) {
            if (!want_in[in]) continue;
            snprintf(what, sizeof what, "K (%s inputs)", input_names[in]);
            if (upload_input(&b, &b.k[in], INPUT_SLOT_K(in), (size_t)max_keys * krow, what, &total)) goto done;
            snprintf(what, sizeof what, "Q (%s inputs)", input_names[in]);
            if (upload_input(&b, &b.q[in], INPUT_SLOT_Q(in), (size_t)max_tq * qrow, what, &total)) goto done;
        }
        if (upload_input(&b, &b.v, INPUT_SLOT_V, (size_t)max_keys * krow, "V", &total)) goto done;
        if (b.dout && upload_input(&b, &b.dout, INPUT_SLOT_DOUT, (size_t)chunk * qrow, "dout", &total)) goto done;
    }

    progress_clear();
    print_header(&b);
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
                    rc = run_backward(&b, in, bwd_keys, idx, total_cases);
                else if (op == OP_CACHE)
                    rc = run_cache(&b, in, dec_keys[i], idx, total_cases);
                else
                    rc = run_forward(&b, op, in, op == OP_DECODE ? dec_keys[i] : pre_keys[i], idx, total_cases);
                if (rc != CLI_OK) goto done;
            }
    }
    progress(1, "done: %d cases in %.1f s", total_cases, cli_now() - t_start);
    if (stderr_tty) fputc('\n', stderr);
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
