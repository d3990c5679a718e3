/* SPDX-License-Identifier: MIT
 *
 * cmd_bench_model.c -- `infllm bench --model DIR`: speed of the model runtime on a checkpoint
 * (typically `infllm model-init --config minicpm4-0.5b`): decode tokens/s at several context
 * lengths with dense and with sparse attention, prefill tokens/s with the GFLOP/s of the linear
 * layers, and the machine's memory bandwidth (a streaming read) to judge decode against.
 * Long contexts are reached with --synthetic (the default): the KV caches are filled with random
 * keys and values (ifl_kv_cache_append) instead of running a prefill, which is what attention's
 * cost depends on. A table on stdout, or with --json one JSON object per line (table to stderr).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "../runtime/model.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: infllm bench --model DIR [options]\n"
    "\n"
    "Times the model runtime on the checkpoint in DIR: decode (one token after N of context)\n"
    "with dense and with sparse attention, and prefill. Decode at short context is bounded by\n"
    "reading the weights once per token: the machine's bandwidth is measured first (a streaming\n"
    "read of --bw-mb MiB on all threads) and decode's weight traffic is reported against it.\n"
    "\n"
    "  --model DIR           checkpoint (e.g. from infllm model-init --config minicpm4-0.5b)\n"
    "  --contexts LIST       context lengths N, comma separated, K suffix = x1024 (1K,16K,64K)\n"
    "  --attention LIST      dense,sparse (both); sparse forces dense_len -1, dense never switches;\n"
    "                        a checkpoint without sparse_config uses libinfllm's sparse defaults\n"
    "  --decode-tokens N     timed decode steps per context (8, after 1 untimed)\n"
    "  --prefill N           tokens of the prefill measurement (512; 0 skips it)\n"
    "  --chunk N             prefill chunk (512)\n"
    "  --threads N           worker threads (0 = all cores)\n"
    "  --real-prefill        reach each context by a real prefill instead of synthetic keys\n"
    "                        and values (slow at long contexts)\n"
    "  --bw-mb N             size of the bandwidth probe (1024; 0 skips it)\n"
    "  --json                one JSON object per measurement on stdout\n";

/* ---- memory bandwidth: every thread sums its slice of a large buffer ---- */

struct bw_arg {
    const uint64_t *p;
    size_t          n;
    uint64_t        sum;
};

static void *bw_thread(void *a) {
    struct bw_arg *b = a;
    uint64_t       s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= b->n; i += 4) s0 += b->p[i], s1 += b->p[i + 1], s2 += b->p[i + 2], s3 += b->p[i + 3];
    b->sum = s0 + s1 + s2 + s3;
    return NULL;
}

static double bandwidth(size_t bytes, int threads) {
    size_t    n   = bytes / 8;
    uint64_t *buf = malloc(n * 8);
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = i;
    double best = 0;
    for (int rep = 0; rep < 4; rep++) {
        pthread_t     th[256];
        struct bw_arg args[256];
        double        t0 = cli_now();
        for (int t = 0; t < threads; t++) {
            args[t] = (struct bw_arg){buf + n / (size_t)threads * (size_t)t, n / (size_t)threads, 0};
            pthread_create(&th[t], NULL, bw_thread, &args[t]);
        }
        uint64_t x = 0;
        for (int t = 0; t < threads; t++) pthread_join(th[t], NULL), x += args[t].sum;
        double gbs = (double)(n / (size_t)threads * (size_t)threads) * 8 / (cli_now() - t0) / 1e9;
        if (gbs > best && x != 1) best = gbs;
    }
    free(buf);
    return best;
}

static int parse_list(const char *s, int64_t *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char     *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1) return -1;
        if (*end == 'K' || *end == 'k') v *= 1024, end++;
        out[n++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return n;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cmd_bench_model(int argc, char **argv) {
    const char *model = NULL, *contexts = "1K,16K,64K", *attention = "dense,sparse";
    long long   steps = 8, prefill = 512, chunk = 512, threads = 0, bw_mb = 1024;
    int         json = 0, real = 0;
    struct cli_opt opts[] = {
        {"model", CLI_STR, &model, 0, 0, 0},
        {"contexts", CLI_STR, &contexts, 0, 0, 0},
        {"attention", CLI_STR, &attention, 0, 0, 0},
        {"decode-tokens", CLI_INT, &steps, 1, 100000, 0},
        {"prefill", CLI_INT, &prefill, 0, 1 << 24, 0},
        {"chunk", CLI_INT, &chunk, 1, 1 << 20, 0},
        {"threads", CLI_INT, &threads, 0, 256, 0},
        {"real-prefill", CLI_FLAG, &real, 0, 0, 0},
        {"bw-mb", CLI_INT, &bw_mb, 0, 1 << 20, 0},
        {"json", CLI_FLAG, &json, 0, 0, 0},
    };
    int rc = cli_parse("bench", argc, argv, 2, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc == CLI_HELP) {
        fputs(usage, stdout);
        return CLI_OK;
    }
    if (rc != CLI_OK) return rc;
    int64_t ctx[32];
    int     n_ctx = parse_list(contexts, ctx, 32);
    if (!model || n_ctx < 1) {
        cli_error("bench", n_ctx < 1 ? "--contexts: expected a list like 1K,16K,64K" : "--model DIR is required");
        return CLI_USAGE;
    }
    int modes[2], n_modes = 0;
    if (strstr(attention, "dense")) modes[n_modes++] = RT_ATTN_DENSE;
    if (strstr(attention, "sparse")) modes[n_modes++] = RT_ATTN_SPARSE;
    if (!n_modes) {
        cli_error("bench", "--attention: expected dense, sparse or both");
        return CLI_USAGE;
    }
    FILE   *tab = json ? stderr : stdout;
    int64_t max_ctx = 0;
    for (int i = 0; i < n_ctx; i++) max_ctx = ctx[i] > max_ctx ? ctx[i] : max_ctx;
    if (prefill > max_ctx) max_ctx = prefill;
    char err[1024];
    int  nthreads = (int)threads;
    if (!nthreads) {
        long nc  = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = nc < 1 ? 1 : nc > 256 ? 256 : (int)nc;
    }
    double bw = bw_mb ? bandwidth((size_t)bw_mb << 20, nthreads) : 0;
    fprintf(tab, "machine: %d threads, streaming read %.1f GB/s (%lld MiB, best of 4)\n", nthreads, bw, bw_mb);
    if (json) printf("{\"op\":\"bandwidth\",\"threads\":%d,\"gb_per_s\":%.3f}\n", nthreads, bw);

    for (int mi = 0; mi < n_modes; mi++) {
        struct rt_model_options o = rt_model_options_default();
        o.n_threads               = nthreads;
        o.attention               = modes[mi];
        o.max_context             = max_ctx + steps + 2;
        struct rt_model *m;
        if (rt_model_load(model, &o, &m, err, sizeof err) != 0) {
            cli_error("bench", "%s", err);
            return CLI_FAILURE;
        }
        const char   *mname = modes[mi] == RT_ATTN_DENSE ? "dense" : "sparse";
        const int64_t V     = rt_model_config(m)->vocab_size;
        float        *lg    = malloc(sizeof(float) * (size_t)V);
        int32_t      *tok   = malloc(sizeof(int32_t) * (size_t)(max_ctx + steps + 2));
        for (int64_t i = 0; i < max_ctx + steps + 2; i++) tok[i] = (int32_t)((i * 7919 + 13) % V);
        double wbytes = (double)rt_model_weight_bytes(m);
        if (mi == 0) fprintf(tab, "model: %s, %.0f MB of weights read per decode step\n", model, wbytes / 1e6);
        for (int ci = 0; ci < n_ctx; ci++) {
            rt_model_reset(m);
            int64_t N = ctx[ci];
            double  t0 = cli_now();
            int     ok = real ? rt_model_prefill(m, tok, N - 1, chunk, NULL, NULL, NULL, err, sizeof err)
                              : rt_model_fill_synthetic(m, N - 1, 1, err, sizeof err);
            if (ok != 0) {
                cli_error("bench", "%s", err);
                free(lg), free(tok), rt_model_free(m);
                return CLI_FAILURE;
            }
            double fill = cli_now() - t0;
            double times[64];
            int    nt = 0;
            rt_model_decode(m, tok[N - 1], lg, err, sizeof err); /* warm-up */
            for (long long s = 0; s < steps; s++) {
                double t1 = cli_now();
                if (rt_model_decode(m, tok[N + s], lg, err, sizeof err) != 0) {
                    cli_error("bench", "%s", err);
                    free(lg), free(tok), rt_model_free(m);
                    return CLI_FAILURE;
                }
                if (nt < 64) times[nt++] = cli_now() - t1;
            }
            qsort(times, (size_t)nt, sizeof times[0], cmp_d);
            double med = times[nt / 2], tps = 1.0 / med, wgbs = wbytes / med / 1e9;
            char share[48] = ""; /* the bandwidth share, when the probe ran */
            if (bw > 0) snprintf(share, sizeof share, " (%.0f%% of %.1f)", 100 * wgbs / bw, bw);
            fprintf(tab, "decode  %-6s context %6lld: %7.2f ms/token  %7.2f tokens/s  weights %.1f GB/s%s  [fill %.1f s %s]\n",
                    mname, (long long)N, med * 1e3, tps, wgbs, share, fill, real ? "prefill" : "synthetic");
            if (json)
                printf("{\"op\":\"decode\",\"attention\":\"%s\",\"context\":%lld,\"ms_per_token\":%.4f,"
                       "\"tokens_per_s\":%.3f,\"weight_gb_per_s\":%.3f,\"bandwidth_fraction\":%.4f,\"threads\":%d,"
                       "\"synthetic\":%s}\n",
                       mname, (long long)N, med * 1e3, tps, wgbs, bw > 0 ? wgbs / bw : 0, nthreads,
                       real ? "false" : "true");
            fflush(stdout);
        }
        if (prefill > 0 && mi == 0) {
            rt_model_reset(m);
            rt_model_linear_stats_reset(m);
            double t0 = cli_now();
            if (rt_model_prefill(m, tok, prefill, chunk, NULL, NULL, lg, err, sizeof err) != 0) {
                cli_error("bench", "%s", err);
                free(lg), free(tok), rt_model_free(m);
                return CLI_FAILURE;
            }
            double dt = cli_now() - t0, ls, lf;
            rt_model_linear_stats(m, &ls, &lf);
            fprintf(tab, "prefill %-6s %6lld tokens (chunk %lld): %.2f s, %.1f tokens/s; linear layers %.1f GFLOP/s (%.0f%% of the time)\n",
                    mname, prefill, chunk, dt, (double)prefill / dt, lf / ls / 1e9, 100 * ls / dt);
            if (json)
                printf("{\"op\":\"prefill\",\"attention\":\"%s\",\"tokens\":%lld,\"chunk\":%lld,\"seconds\":%.4f,"
                       "\"tokens_per_s\":%.3f,\"linear_gflop_per_s\":%.3f,\"linear_fraction\":%.4f,\"threads\":%d}\n",
                       mname, prefill, chunk, dt, (double)prefill / dt, lf / ls / 1e9, ls / dt, nthreads);
        }
        free(lg), free(tok);
        rt_model_free(m);
    }
    return CLI_OK;
}
