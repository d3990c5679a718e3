/* dev/cuda/stage1/s1bench.cu -- times ifl_select (stage 1, compressed keys included) through the
 * public API on the standard shape (Hq 32, Hkv 2, D 128, bf16, batch 1, causal prefill, default
 * config), random and locally correlated inputs, plus decode (one query at the end of N keys).
 * Each figure is the median of --reps synchronous calls after one warm-up (host clock; every op
 * synchronises before it returns). --dump FILE writes the selection of the random input at
 * N = 32768, so that two builds can be compared (dev/cuda/stage1/run.sh links this program
 * once with the library's stage 1 and once with an older cuda_select.cu: run.sh's V3).
 * The input generator is the former dev/cuda/bench.cu's. */
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
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
    int64_t     lens[8] = {8192, 32768, 65536, 131072}, dec[8] = {32768, 131072};
    int         n_lens = 4, n_dec = 2, reps = 5, inputs = 3;
    const char *dump   = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lens") && i + 1 < argc) n_lens = parse_list(argv[++i], lens, 8);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) n_dec = parse_list(argv[++i], dec, 8);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
        else if (!strcmp(argv[i], "--inputs") && i + 1 < argc) {
            const char *m = argv[++i];
            inputs        = !strcmp(m, "random") ? 1 : !strcmp(m, "corr") ? 2 : 3;
        } else {
            fprintf(stderr, "usage: %s [--lens L,..] [--decode L,..] [--reps N] [--inputs random|corr|both] [--dump FILE]\n", argv[0]);
            return 2;
        }
    }
    const int64_t         Hq = 32, Hkv = 2, D = 128;
    struct ifl_ctx_params cp = ifl_ctx_params_default();
    cp.backend               = IFL_BACKEND_CUDA;
    struct ifl_ctx *ctx      = NULL;
    if (ifl_ctx_create(&cp, &ctx) != IFL_STATUS_OK) {
        printf("SKIPPED: no CUDA device\n");
        return 0;
    }
    int64_t nmax = 0;
    for (int i = 0; i < n_lens; i++) nmax = lens[i] > nmax ? lens[i] : nmax;
    for (int i = 0; i < n_dec; i++) nmax = dec[i] > nmax ? dec[i] : nmax;
    __nv_bfloat16 *q  = (__nv_bfloat16 *)dalloc(ctx, (size_t)(nmax * Hq * D) * 2);
    __nv_bfloat16 *k  = (__nv_bfloat16 *)dalloc(ctx, (size_t)(nmax * Hkv * D) * 2);
    int32_t       *s  = (int32_t *)dalloc(ctx, (size_t)(Hkv * nmax * 96) * 4);
    int32_t       *hs = (int32_t *)malloc((size_t)(Hkv * nmax * 96) * 4);
    struct ifl_sparse_config cfg = ifl_sparse_config_default();
    printf("%-6s %7s | %10s\n", "inputs", "N", "select ms");
    for (int kind = 1; kind <= 2; kind++) {
        if (!(inputs & kind)) continue;
        for (int li = 0; li < n_lens; li++) {
            const int64_t N = lens[li];
            fill<<<1024, 256>>>(q, N, Hq, D, 16, kind == 2, 11, 99);
            fill<<<1024, 256>>>(k, N, Hkv, D, 1, kind == 2, 12, 99);
            if (cudaDeviceSynchronize() != cudaSuccess) return 1;
            struct ifl_tensor tq = tens3(q, IFL_DTYPE_BF16, N, Hq, D), tk = tens3(k, IFL_DTYPE_BF16, N, Hkv, D);
            struct ifl_tensor ts = tens3(s, IFL_DTYPE_I32, Hkv, N, ifl_select_width(&cfg, N));
            double t[64];
            int    rr = reps > 63 ? 63 : reps;
            for (int r = 0; r <= rr; r++) {
                double t0 = now();
                CHECK(ifl_select(ctx, &cfg, NULL, &tq, &tk, &ts));
                t[r] = now() - t0;
            }
            qsort(t + 1, (size_t)rr, sizeof t[0], cmp_double);
            printf("%-6s %7lld | %10.3f\n", kind == 1 ? "random" : "corr", (long long)N, t[1 + rr / 2] * 1e3);
            fflush(stdout);
            if (dump && kind == 1 && N == 32768) {
                size_t n = (size_t)(Hkv * N * ts.shape[2]) * 4;
                CHECK(ifl_buffer_download(ctx, hs, s, n));
                FILE *f = fopen(dump, "wb");
                if (f) fwrite(hs, 1, n, f), fclose(f);
            }
        }
    }
    printf("%-7s | %10s\n", "decode N", "select us");
    for (int di = 0; di < n_dec; di++) {
        const int64_t N = dec[di];
        if (N <= 0) continue;
        fill<<<1024, 256>>>(q, 1, Hq, D, 16, 0, 21, 99);
        fill<<<1024, 256>>>(k, N, Hkv, D, 1, 0, 22, 99);
        if (cudaDeviceSynchronize() != cudaSuccess) return 1;
        struct ifl_tensor tq = tens3(q, IFL_DTYPE_BF16, 1, Hq, D), tk = tens3(k, IFL_DTYPE_BF16, N, Hkv, D);
        struct ifl_tensor ts = tens3(s, IFL_DTYPE_I32, Hkv, 1, ifl_select_width(&cfg, N));
        double t[64];
        int    rr = reps * 10 > 63 ? 63 : reps * 10;
        for (int r = 0; r <= rr; r++) {
            double t0 = now();
            CHECK(ifl_select(ctx, &cfg, NULL, &tq, &tk, &ts));
            t[r] = now() - t0;
        }
        qsort(t + 1, (size_t)rr, sizeof t[0], cmp_double);
        printf("%7lld | %10.1f\n", (long long)N, t[1 + rr / 2] * 1e6);
    }
    ifl_ctx_destroy(ctx);
    free(hs);
    return 0;
}
