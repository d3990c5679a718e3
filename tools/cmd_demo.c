/* SPDX-License-Identifier: MIT
 *
 * cmd_demo.c -- `infllm demo`: a synthetic long-context case with planted "needle" blocks.
 * Keys and queries are Gaussian noise, except that each KV head has a hidden direction u_g: the
 * queries of its group lean towards u_g, and the keys of a few far-away "needle" blocks point
 * along it. Dense attention puts much of its weight on the needles; the sparse selection should
 * find them among all blocks through the compressed keys alone. The demo runs both, reports
 * which needles the selection found, how far sparse output is from dense, and the time of each.
 */
#include "cli.h"

#include "synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char demo_usage[] =
    "usage: infllm demo [options]\n"
    "\n"
    "Runs InfLLM-V2 on a synthetic long context with planted needle blocks, dense and sparse,\n"
    "and prints which needles the selection found, the sparse-vs-dense output difference and\n"
    "the time of each.\n"
    "\n"
    "  --keys N          context length (32768)\n"
    "  --queries N       query tokens at the end of the context (128)\n"
    "  --heads N         query heads (32)\n"
    "  --kv-heads N      KV heads (2)\n"
    "  --head-dim N      (128)\n"
    "  --needles N       needle blocks planted per KV head (4)\n"
    "  --seed N          (1)\n"
    "  --backend NAME    ref|cpu|cuda (cpu; ref is the exact float64 reference, slow at this size)\n"
    "  --threads N       worker threads of the cpu backend (0 = all cores)\n"
    "\n";

/* The synthetic context's Gaussian source (synth.h, as the benchmark's inputs). */
static struct synth rng;
static double       gaussian(void) { return synth_normal(&rng); }

static int contains(const int32_t *row, int64_t n, int32_t b) {
    for (int64_t i = 0; i < n && row[i] >= 0; i++)
        if (row[i] == b) return 1;
    return 0;
}

int cmd_demo(int argc, char **argv) {
    const char *cmd = "demo";
    long long   n_keys = 32768, n_queries = 128, hq = 32, hkv = 2, d = 128, n_needles = 4, seed = 1, threads = 0;
    const char *backend_name = "cpu";
    struct cli_sparse_flags sf;
    cli_sparse_flags_default(&sf);
    struct cli_opt opts[9 + CLI_SPARSE_N_OPTS] = {
        {"keys", CLI_INT, &n_keys, 1, 1 << 24, 0},
        {"queries", CLI_INT, &n_queries, 1, 1 << 20, 0},
        {"heads", CLI_INT, &hq, 1, 256, 0},
        {"kv-heads", CLI_INT, &hkv, 1, 256, 0},
        {"head-dim", CLI_INT, &d, 1, IFL_MAX_HEAD_DIM, 0},
        {"needles", CLI_INT, &n_needles, 0, 64, 0},
        {"seed", CLI_INT, &seed, 0, (long long)1 << 62, 0},
        {"backend", CLI_STR, &backend_name, 0, 0, 0},
        {"threads", CLI_INT, &threads, 0, 4096, 0},
    };
    int n_opts = 9 + cli_sparse_opts(&sf, opts + 9);
    int rc     = cli_parse(cmd, argc, argv, 2, opts, n_opts);
    if (rc == CLI_HELP) {
        printf("%s%s", demo_usage, cli_sparse_help);
        return CLI_OK;
    }
    if (rc != CLI_OK) return rc;
    if (hq % hkv != 0) {
        cli_error(cmd, "--heads %lld must be a multiple of --kv-heads %lld", hq, hkv);
        return CLI_USAGE;
    }
    if (n_queries > n_keys) {
        cli_error(cmd, "--queries %lld must not exceed --keys %lld", n_queries, n_keys);
        return CLI_USAGE;
    }
    enum ifl_backend backend;
    if ((rc = cli_backend(cmd, backend_name, &backend)) != CLI_OK) return rc;
    struct ifl_sparse_config cfg;
    if ((rc = cli_sparse_config(cmd, &sf, &cfg)) != CLI_OK) return rc;

    const int64_t past = n_keys - n_queries, bs = cfg.block_size;
    const int64_t nb = (n_keys + bs - 1) / bs, width = ifl_select_width(&cfg, n_keys);
    /* needles live strictly between the init blocks and the first query's local window */
    const int64_t lo = cfg.init_blocks, hi = past / bs - cfg.window_size / bs; /* [lo, hi) */
    if (n_needles > 0 && hi - lo < n_needles) {
        cli_error(cmd, "no room for %lld needles between the init blocks and the local window; use more --keys", n_needles);
        return CLI_USAGE;
    }
    float   *q = malloc((size_t)(n_queries * hq * d) * sizeof *q);
    float   *k = malloc((size_t)(n_keys * hkv * d) * sizeof *k);
    float   *v = malloc((size_t)(n_keys * hkv * d) * sizeof *v);
    float   *o_dense = malloc((size_t)(n_queries * hq * d) * sizeof *o_dense);
    float   *o_sparse = malloc((size_t)(n_queries * hq * d) * sizeof *o_sparse);
    double  *u = malloc((size_t)(hkv * d) * sizeof *u);  /* the hidden direction of each KV head */
    int32_t *needle = malloc((size_t)(hkv * (n_needles + 1)) * sizeof *needle);
    int32_t *sel = malloc((size_t)(hkv * n_queries * width) * sizeof *sel);
    struct ifl_ctx *ctx = NULL;
    rc = CLI_FAILURE;
    if (!q || !k || !v || !o_dense || !o_sparse || !u || !needle || !sel) {
        cli_error(cmd, "out of memory");
        goto done;
    }

    /* ---- the synthetic context ---- */
    synth_seed(&rng, (uint64_t)seed, 0);
    for (int64_t g = 0; g < hkv; g++) {
        double norm = 0;
        for (int64_t x = 0; x < d; x++) {
            u[g * d + x] = gaussian();
            norm += u[g * d + x] * u[g * d + x];
        }
        for (int64_t x = 0; x < d; x++) u[g * d + x] /= sqrt(norm);
    }
    synth_normals(k, IFL_DTYPE_F32, (size_t)(n_keys * hkv * d), &rng);
    synth_normals(v, IFL_DTYPE_F32, (size_t)(n_keys * hkv * d), &rng);
    /* a query's logit on a needle key rises by scale * q_lean * k_lean = 8 for any head dim, so the
     * needles carry most of the attention, as a retrieved fact does */
    const double lift = 8.0, q_lean = 4.0, k_lean = lift * sqrt((double)d) / q_lean;
    for (int64_t t = 0; t < n_queries; t++)
        for (int64_t h = 0; h < hq; h++)
            for (int64_t x = 0; x < d; x++)
                q[(t * hq + h) * d + x] = (float)(gaussian() + q_lean * u[(h / (hq / hkv)) * d + x]);
    for (int64_t g = 0; g < hkv; g++)
        for (int64_t n = 0; n < n_needles; n++) {
            int32_t b;
            do b = (int32_t)(lo + (int64_t)(synth_uniform(&rng) * (double)(hi - lo)));
            while (contains(needle + g * (n_needles + 1), n, b));
            needle[g * (n_needles + 1) + n] = b;
            needle[g * (n_needles + 1) + n + 1] = -1;
            for (int64_t t = b * bs; t < (b + 1) * bs && t < n_keys; t++)
                for (int64_t x = 0; x < d; x++) k[(t * hkv + g) * d + x] += (float)(k_lean * u[g * d + x]);
        }

    /* ---- dense and sparse ---- */
    struct ifl_ctx_params cp = ifl_ctx_params_default();
    cp.backend               = backend;
    cp.n_threads             = (int)threads;
    if (cli_ctx_create(cmd, &cp, &ctx) != CLI_OK) goto done;
    struct ifl_tensor tq = ifl_tensor_make(q, IFL_DTYPE_F32, 3, (const int64_t[3]){n_queries, hq, d});
    struct ifl_tensor tk = ifl_tensor_make(k, IFL_DTYPE_F32, 3, (const int64_t[3]){n_keys, hkv, d});
    struct ifl_tensor tv = ifl_tensor_make(v, IFL_DTYPE_F32, 3, (const int64_t[3]){n_keys, hkv, d});
    struct ifl_tensor td = ifl_tensor_make(o_dense, IFL_DTYPE_F32, 3, (const int64_t[3]){n_queries, hq, d});
    struct ifl_tensor ts = ifl_tensor_make(o_sparse, IFL_DTYPE_F32, 3, (const int64_t[3]){n_queries, hq, d});
    struct ifl_tensor tsel = ifl_tensor_make(sel, IFL_DTYPE_I32, 3, (const int64_t[3]){hkv, n_queries, width});
    printf("infllm demo: %lld keys, %lld queries at the end (past %lld), Hq %lld, Hkv %lld, D %lld, f32, backend %s\n",
           n_keys, n_queries, (long long)past, hq, hkv, d, backend_name);
    printf("  sparse config: block %d, kernels %d/%d and %d/%d, init %d, window %d, topk %d -> %lld of %lld blocks per row\n",
           cfg.block_size, cfg.kernel_size, cfg.kernel_stride, cfg.coarse_kernel_size, cfg.coarse_kernel_stride,
           cfg.init_blocks, cfg.window_size, cfg.topk, (long long)width, (long long)nb);
    fflush(stdout);
    enum ifl_status st;
    double          t0 = cli_now();
    st                 = ifl_dense_attn_fwd(ctx, &cfg, NULL, &tq, &tk, &tv, &td, NULL);
    double t1          = cli_now();
    if (st == IFL_STATUS_OK) st = ifl_select(ctx, &cfg, NULL, &tq, &tk, &tsel);
    double t2 = cli_now();
    if (st == IFL_STATUS_OK) st = ifl_sparse_attn_fwd(ctx, &cfg, NULL, &tq, &tk, &tv, &tsel, &ts, NULL);
    double t3 = cli_now();
    if (st != IFL_STATUS_OK) {
        cli_error(cmd, "%s", ifl_ctx_errmsg(ctx));
        goto done;
    }

    /* ---- report ---- */
    int64_t found_all = 0;
    for (int64_t g = 0; g < hkv; g++) {
        printf("  KV head %lld needles:", (long long)g);
        for (int64_t n = 0; n < n_needles; n++) {
            int32_t b    = needle[g * (n_needles + 1) + n];
            int64_t rows = 0;
            for (int64_t t = 0; t < n_queries; t++) rows += contains(sel + (g * n_queries + t) * width, width, b);
            found_all += rows == n_queries;
            printf(" block %d %s(%lld/%lld rows)", b, rows == n_queries ? "found " : "MISSED ", (long long)rows, n_queries);
        }
        printf("\n");
    }
    double max_diff = 0, se = 0, ss = 0;
    for (int64_t i = 0; i < n_queries * hq * d; i++) {
        double e = fabs((double)o_sparse[i] - o_dense[i]);
        if (e > max_diff) max_diff = e;
        se += e * e;
        ss += (double)o_dense[i] * o_dense[i];
    }
    printf("  needles found by every query row: %lld of %lld\n", (long long)found_all, hkv * n_needles);
    printf("  sparse vs dense output: max |diff| %.3g, relative RMS %.3g\n", max_diff, sqrt(se / (ss > 0 ? ss : 1)));
    printf("  dense  attention: %8.3f s\n", t1 - t0);
    printf("  sparse attention: %8.3f s  (selection %.3f s + sparse attention %.3f s), %.2fx dense\n", t3 - t1,
           t2 - t1, t3 - t2, (t1 - t0) / (t3 - t1));
    rc = found_all == hkv * n_needles ? CLI_OK : CLI_FAILURE;
    if (rc != CLI_OK) printf("  some needles were missed\n");
done:
    ifl_ctx_destroy(ctx);
    free(q);
    free(k);
    free(v);
    free(o_dense);
    free(o_sparse);
    free(u);
    free(needle);
    free(sel);
    return rc;
}
