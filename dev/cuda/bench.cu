/* dev/cuda/bench.cu -- times the cuda backend's forward ops through the public API on the standard
 * shape (Hq 32, Hkv 2, D 128, bf16, batch 1, causal prefill, default sparse config) for random and
 * locally correlated inputs, plus sparse and dense decode. Every op is synchronous, so a host clock
 * around a call is its latency; each figure is the median of --reps calls after one warm-up.
 *
 * Build (dev/cuda/bench.sh does it):
 *   nvcc -O2 -std=c++17 -Iinclude dev/cuda/bench.cu build/cuda/libinfllm.a -o build/cuda/bench
 * Run: build/cuda/bench [--lens 8192,32768,65536,131072] [--decode 32768,131072] [--reps 5]
 *                       [--inputs random|corr|both] [--dense-max N] [--check-finite]
 *
 * FLOPs: stage 2 "effective" 4*N*6144*D*Hq (the issue's count); "exact" counts the keys each row
 * really attends (from the selection); dense 2*N^2*D*Hq (causal); stage 1 is reported in ms only.
 */
#include "infllm.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        enum ifl_status st_ = (x);                                                                 \
        if (st_ != IFL_STATUS_OK) {                                                                \
            fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #x, ifl_status_str(st_),     \
                    ifl_ctx_errmsg(ctx));                                                          \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* ---- inputs, generated on the device ---- */

__device__ float hash_normal(uint64_t seed, uint64_t i) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull, x ^= x >> 27, x *= 0x94d049bb133111ebull, x ^= x >> 31;
    uint64_t y = x * 0x2545F4914F6CDD1Dull + 0x632BE59BD9B4E019ull;
    y ^= y >> 29, y *= 0xbf58476d1ce4e5b9ull, y ^= y >> 32;
    float u = ((x >> 40) + 0.5f) / 16777216.0f, v = (y >> 40) / 16777216.0f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* x[t, h, d] for t < n, h < H: random N(0, 1); or locally correlated: a latent trajectory per KV
 * group that moves between random anchors every `period` tokens (shared by the queries and keys of
 * the group), plus a little per-head noise, so neighbouring tokens look alike. */
__global__ void fill(__nv_bfloat16 *x, int64_t n, int64_t H, int64_t D, int64_t G, int corr, uint64_t seed, uint64_t lat_seed) {
    const int64_t period = 256;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * H * D; i += (int64_t)gridDim.x * blockDim.x) {
        float v;
        if (!corr) {
            v = hash_normal(seed, (uint64_t)i);
        } else {
            int64_t d = i % D, h = (i / D) % H, t = i / (D * H), g = h / G;
            int64_t a = t / period;
            float   f = (float)(t % period) / (float)period;
            float   l0 = hash_normal(lat_seed, (uint64_t)((a * 64 + g) * D + d));
            float   l1 = hash_normal(lat_seed, (uint64_t)(((a + 1) * 64 + g) * D + d));
            v          = ((1.0f - f) * l0 + f * l1) / sqrtf((1 - f) * (1 - f) + f * f) + 0.3f * hash_normal(seed, (uint64_t)i);
        }
        x[i] = __float2bfloat16_rn(v);
    }
}

static void *dalloc(struct ifl_ctx *ctx, size_t n) {
    void *p = NULL;
    CHECK(ifl_buffer_alloc(ctx, n, &p));
    return p;
}

static struct ifl_tensor tens3(void *p, enum ifl_dtype dt, int64_t a, int64_t b, int64_t c) {
    const int64_t shape[3] = {a, b, c};
    return ifl_tensor_make(p, dt, 3, shape);
}
static struct ifl_tensor tens2(void *p, enum ifl_dtype dt, int64_t a, int64_t b) {
    const int64_t shape[2] = {a, b};
    return ifl_tensor_make(p, dt, 2, shape);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* median wall time of reps calls (after one warm-up) of the op selected by `which` */
struct job {
    struct ifl_ctx          *ctx;
    struct ifl_sparse_config cfg;
    struct ifl_tensor        q, k, v, out, lse, sel;
};
static double run_op(struct job *j, int which) {
    struct ifl_ctx *ctx = j->ctx;
    switch (which) {
    case 0: CHECK(ifl_select(ctx, &j->cfg, NULL, &j->q, &j->k, &j->sel)); break;
    case 1: CHECK(ifl_sparse_attn_fwd(ctx, &j->cfg, NULL, &j->q, &j->k, &j->v, &j->sel, &j->out, &j->lse)); break;
    case 2: CHECK(ifl_infllmv2_fwd(ctx, &j->cfg, NULL, &j->q, &j->k, &j->v, &j->out, &j->lse, &j->sel, NULL)); break;
    case 3: CHECK(ifl_dense_attn_fwd(ctx, &j->cfg, NULL, &j->q, &j->k, &j->v, &j->out, &j->lse)); break;
    }
    return 0;
}
static double time_op(struct job *j, int which, int reps) {
    double t[64];
    if (reps > 64) reps = 64;
    run_op(j, which);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        run_op(j, which);
        t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

static int parse_list(const char *s, int64_t *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = strtoll(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
    return n;
}

int main(int argc, char **argv) {
    int64_t lens[8] = {8192, 32768, 65536, 131072}, dec[8] = {32768, 131072};
    int     n_lens = 4, n_dec = 2, reps = 5, inputs = 3, check_finite = 0;
    int64_t dense_max = 131072;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lens") && i + 1 < argc) n_lens = parse_list(argv[++i], lens, 8);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) n_dec = parse_list(argv[++i], dec, 8);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dense-max") && i + 1 < argc) dense_max = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--check-finite")) check_finite = 1;
        else if (!strcmp(argv[i], "--inputs") && i + 1 < argc) {
            const char *m = argv[++i];
            inputs        = !strcmp(m, "random") ? 1 : !strcmp(m, "corr") ? 2 : 3;
        } else {
            fprintf(stderr, "usage: %s [--lens L,..] [--decode L,..] [--reps N] [--inputs random|corr|both] [--dense-max N] [--check-finite]\n", argv[0]);
            return 2;
        }
    }
    const int64_t Hq = 32, Hkv = 2, D = 128;
    struct ifl_ctx_params cp = ifl_ctx_params_default();
    cp.backend               = IFL_BACKEND_CUDA;
    cp.check_finite          = check_finite;
    struct ifl_ctx *ctx      = NULL;
    enum ifl_status st       = ifl_ctx_create(&cp, &ctx);
    if (st != IFL_STATUS_OK) {
        printf("SKIPPED: no CUDA device (%s)\n", ifl_status_str(st));
        return 0;
    }
    int64_t nmax = 0;
    for (int i = 0; i < n_lens; i++) nmax = lens[i] > nmax ? lens[i] : nmax;
    for (int i = 0; i < n_dec; i++) nmax = dec[i] > nmax ? dec[i] : nmax;
    __nv_bfloat16 *q = (__nv_bfloat16 *)dalloc(ctx, (size_t)(nmax * Hq * D) * 2);
    __nv_bfloat16 *k = (__nv_bfloat16 *)dalloc(ctx, (size_t)(nmax * Hkv * D) * 2);
    __nv_bfloat16 *v = (__nv_bfloat16 *)dalloc(ctx, (size_t)(nmax * Hkv * D) * 2);
    float         *o = (float *)dalloc(ctx, (size_t)(nmax * Hq * D) * 2);
    float         *l = (float *)dalloc(ctx, (size_t)(nmax * Hq) * 4);
    int32_t       *s = (int32_t *)dalloc(ctx, (size_t)(Hkv * nmax * 96) * 4);
    int32_t       *hs = (int32_t *)malloc((size_t)(Hkv * nmax * 96) * 4);

    printf("standard shape Hq=%lld Hkv=%lld D=%lld bf16, batch 1, causal; default config (bs 64, 32/16, 128/64, init 1, "
           "window 2048, topk 64); check_finite=%d; median of %d\n",
           (long long)Hq, (long long)Hkv, (long long)D, check_finite, reps);
    printf("%-6s %7s | %9s | %9s %7s %7s | %9s | %9s %7s | %6s\n", "inputs", "N", "stage1 ms", "stage2 ms", "eff TF", "exactTF",
           "total ms", "dense ms", "TF/s", "keys/q");
    for (int kind = 1; kind <= 2; kind++) {
        if (!(inputs & kind)) continue;
        for (int li = 0; li < n_lens; li++) {
            const int64_t N = lens[li];
            if (N <= 0) continue;
            fill<<<1024, 256>>>(q, N, Hq, D, 16, kind == 2, 11, 99);
            fill<<<1024, 256>>>(k, N, Hkv, D, 1, kind == 2, 12, 99);
            fill<<<1024, 256>>>(v, N, Hkv, D, 1, 0, 13, 99);
            if (cudaDeviceSynchronize() != cudaSuccess) return 1;
            struct job j;
            j.ctx = ctx;
            j.cfg = ifl_sparse_config_default();
            j.cfg.dense_len = -1; /* the switchable forward runs sparse at every length */
            j.q   = tens3(q, IFL_DTYPE_BF16, N, Hq, D);
            j.k   = tens3(k, IFL_DTYPE_BF16, N, Hkv, D);
            j.v   = tens3(v, IFL_DTYPE_BF16, N, Hkv, D);
            j.out = tens3(o, IFL_DTYPE_BF16, N, Hq, D);
            j.lse = tens2(l, IFL_DTYPE_F32, N, Hq);
            j.sel = tens3(s, IFL_DTYPE_I32, Hkv, N, ifl_select_width(&j.cfg, N));
            double t1 = time_op(&j, 0, reps), t2 = time_op(&j, 1, reps), tt = time_op(&j, 2, reps);
            double td = N <= dense_max ? time_op(&j, 3, N >= 65536 ? (reps < 2 ? reps : 2) : reps) : NAN;
            /* keys each row attends, from the selection */
            const int64_t W = j.sel.shape[2];
            CHECK(ifl_buffer_download(ctx, hs, s, (size_t)(Hkv * N * W) * 4));
            double keys = 0;
            for (int64_t g = 0; g < Hkv; g++)
                for (int64_t i = 0; i < N; i++)
                    for (int64_t c = 0; c < W && hs[(g * N + i) * W + c] >= 0; c++) {
                        int64_t b = hs[(g * N + i) * W + c], n = i - b * 64 + 1;
                        keys += n > 64 ? 64 : n;
                    }
            double eff = 4.0 * N * 6144 * D * Hq, exact = 4.0 * keys / Hkv * D * Hq, dflop = 2.0 * N * N * D * Hq;
            printf("%-6s %7lld | %9.3f | %9.3f %7.1f %7.1f | %9.3f | %9.3f %7.1f | %6.0f\n", kind == 1 ? "random" : "corr",
                   (long long)N, t1 * 1e3, t2 * 1e3, eff / t2 * 1e-12, exact / t2 * 1e-12, tt * 1e3, td * 1e3,
                   dflop / td * 1e-12, keys / (double)(Hkv * N));
            fflush(stdout);
        }
    }
    /* decode: one query at the end of N keys */
    printf("\n%-7s | %12s | %12s %10s | %12s\n", "decode N", "sparse us", "select us", "stage2 us", "dense us");
    for (int di = 0; di < n_dec; di++) {
        const int64_t N = dec[di];
        if (N <= 0) continue;
        fill<<<1024, 256>>>(q, 1, Hq, D, 16, 0, 21, 99);
        fill<<<1024, 256>>>(k, N, Hkv, D, 1, 0, 22, 99);
        fill<<<1024, 256>>>(v, N, Hkv, D, 1, 0, 23, 99);
        if (cudaDeviceSynchronize() != cudaSuccess) return 1;
        struct job j;
        j.ctx = ctx;
        j.cfg = ifl_sparse_config_default();
        j.q   = tens3(q, IFL_DTYPE_BF16, 1, Hq, D);
        j.k   = tens3(k, IFL_DTYPE_BF16, N, Hkv, D);
        j.v   = tens3(v, IFL_DTYPE_BF16, N, Hkv, D);
        j.out = tens3(o, IFL_DTYPE_BF16, 1, Hq, D);
        j.lse = tens2(l, IFL_DTYPE_F32, 1, Hq);
        j.sel = tens3(s, IFL_DTYPE_I32, Hkv, 1, ifl_select_width(&j.cfg, N));
        int    r  = reps * 10;
        double tt = time_op(&j, 2, r), t1 = time_op(&j, 0, r), t2 = time_op(&j, 1, r), td = time_op(&j, 3, r);
        printf("%7lld | %12.1f | %12.1f %10.1f | %12.1f\n", (long long)N, tt * 1e6, t1 * 1e6, t2 * 1e6, td * 1e6);
    }
    ifl_ctx_destroy(ctx);
    free(hs);
    return 0;
}
