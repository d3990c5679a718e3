/* SPDX-License-Identifier: MIT
 *
 * linear_kernels.c -- GEMV and GEMM of linear.h, written once with GCC/Clang vector extensions
 * (`vf`: VL floats) and compiled three times (Makefile RUNTIME_ISA_SRC): -DCPU_ISA_AVX512,
 * -DCPU_ISA_AVX2 (AVX2+FMA+F16C) and the portable baseline. Each object exports one
 * struct rt_lin_kernels named by its instruction set.
 */
#include "linear.h"

#include <string.h>

#if defined(CPU_ISA_AVX512)
#define VL        16
#define ISA_NAME  "avx512"
#define KERNELS   rt_lin_kernels_avx512
#elif defined(CPU_ISA_AVX2)
#define VL        8
#define ISA_NAME  "avx2"
#define KERNELS   rt_lin_kernels_avx2
#else
#define VL        8 /* two SSE2 registers per vector on plain x86-64 */
#define ISA_NAME  "scalar"
#define KERNELS   rt_lin_kernels_scalar
#endif

#if defined(CPU_ISA_AVX512) || defined(CPU_ISA_AVX2)
#include <immintrin.h>
#endif

#define NR (2 * VL)

typedef float    vf __attribute__((vector_size(VL * 4)));
typedef uint32_t vu __attribute__((vector_size(VL * 4)));
typedef uint16_t vh __attribute__((vector_size(VL * 2)));

float ifl_f16_to_f32(uint16_t h); /* libinfllm's portable conversion */

static inline vf vload(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline float hsum(vf v) {
    float s = 0;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}

static inline float bf16_1(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float    f;
    memcpy(&f, &u, 4);
    return f;
}

/* VL weights starting at element k of a row, as f32 */
static inline vf wload(const void *row, enum rt_wtype type, int64_t k) {
    if (type == RT_W_BF16) {
        vh h;
        memcpy(&h, (const uint16_t *)row + k, sizeof h);
        return (vf)(__builtin_convertvector(h, vu) << 16);
    }
    if (type == RT_W_F16) {
#if defined(CPU_ISA_AVX512)
        vf v;
        __m512 r = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + k)));
        memcpy(&v, &r, sizeof v);
        return v;
#elif defined(CPU_ISA_AVX2)
        vf v;
        __m256 r = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k)));
        memcpy(&v, &r, sizeof v);
        return v;
#else
        vf v;
        for (int i = 0; i < VL; i++) v[i] = ifl_f16_to_f32(((const uint16_t *)row)[k + i]);
        return v;
#endif
    }
    return vload((const float *)row + k);
}

static inline float wget(const void *row, enum rt_wtype type, int64_t k) {
    if (type == RT_W_BF16) return bf16_1(((const uint16_t *)row)[k]);
    if (type == RT_W_F16) return ifl_f16_to_f32(((const uint16_t *)row)[k]);
    return ((const float *)row)[k];
}

static inline const void *wrow(const struct rt_mat *w, int64_t r) {
    size_t es = w->type == RT_W_F32 ? 4 : 2;
    return (const char *)w->data + (size_t)r * (size_t)w->cols * es;
}

/* ---- GEMV: 4 rows at a time ----
 * bf16 rows take the even/odd path: 2·VL weights are loaded as VL 32-bit words; word j holds
 * elements 2j (low half) and 2j+1 (high half), so `w << 16` is the f32 of the even elements and
 * `w & 0xFFFF0000` that of the odd ones: two integer ops convert 2·VL weights (a widening load
 * and a shift per VL weights otherwise). The activations come de-interleaved to match (xp: per
 * block of 2·VL, the VL even elements then the VL odd ones; rt_lin_deinterleave). */

static inline void wload_eo(const void *row, int64_t k, vf *even, vf *odd) {
    vu u;
    memcpy(&u, (const uint16_t *)row + k, sizeof u);
    *even = (vf)(u << 16);
    *odd  = (vf)(u & 0xFFFF0000u);
}

static void gemv(const struct rt_mat *w, const float *x, const float *xp, int64_t n, float *y,
                 int64_t ldy, int64_t r0, int64_t r1) {
    const int64_t K = w->cols, K2 = K - K % (2 * VL), K1 = K - K % VL;
    const enum rt_wtype type = w->type;
    const int     eo = type == RT_W_BF16 && xp != NULL;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const void *w0 = wrow(w, r), *w1 = wrow(w, r + 1), *w2 = wrow(w, r + 2), *w3 = wrow(w, r + 3);
        for (int64_t t = 0; t < n; t++) {
            const float *xt = x + t * K;
            vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
            int64_t k = 0;
            if (eo) {
                const float *xpt = xp + t * K;
                for (; k < K2; k += 2 * VL) {
                    vf xe = vload(xpt + k), xo = vload(xpt + k + VL), we, wo;
                    wload_eo(w0, k, &we, &wo);
                    a0 += we * xe;
                    b0 += wo * xo;
                    wload_eo(w1, k, &we, &wo);
                    a1 += we * xe;
                    b1 += wo * xo;
                    wload_eo(w2, k, &we, &wo);
                    a2 += we * xe;
                    b2 += wo * xo;
                    wload_eo(w3, k, &we, &wo);
                    a3 += we * xe;
                    b3 += wo * xo;
                }
            } else {
                for (; k < K2; k += 2 * VL) {
                    vf xa = vload(xt + k), xb = vload(xt + k + VL);
                    a0 += wload(w0, type, k) * xa;
                    b0 += wload(w0, type, k + VL) * xb;
                    a1 += wload(w1, type, k) * xa;
                    b1 += wload(w1, type, k + VL) * xb;
                    a2 += wload(w2, type, k) * xa;
                    b2 += wload(w2, type, k + VL) * xb;
                    a3 += wload(w3, type, k) * xa;
                    b3 += wload(w3, type, k + VL) * xb;
                }
            }
            for (; k < K1; k += VL) {
                vf xa = vload(xt + k);
                a0 += wload(w0, type, k) * xa;
                a1 += wload(w1, type, k) * xa;
                a2 += wload(w2, type, k) * xa;
                a3 += wload(w3, type, k) * xa;
            }
            float s0 = hsum(a0 + b0), s1 = hsum(a1 + b1), s2 = hsum(a2 + b2), s3 = hsum(a3 + b3);
            for (; k < K; k++) {
                s0 += wget(w0, type, k) * xt[k];
                s1 += wget(w1, type, k) * xt[k];
                s2 += wget(w2, type, k) * xt[k];
                s3 += wget(w3, type, k) * xt[k];
            }
            float *yt = y + t * ldy + r;
            yt[0] = s0;
            yt[1] = s1;
            yt[2] = s2;
            yt[3] = s3;
        }
    }
    for (; r < r1; r++) {
        const void *w0 = wrow(w, r);
        for (int64_t t = 0; t < n; t++) {
            const float *xt = x + t * K;
            vf a0 = {0};
            int64_t k = 0;
            for (; k < K1; k += VL) a0 += wload(w0, type, k) * vload(xt + k);
            float s0 = hsum(a0);
            for (; k < K; k++) s0 += wget(w0, type, k) * xt[k];
            y[t * ldy + r] = s0;
        }
    }
}

/* xp[t][k]: per block of 2·VL columns, the even elements then the odd ones (full blocks only) */
static void deinterleave(const float *x, int64_t n, int64_t K, float *xp) {
    const int64_t K2 = K - K % (2 * VL);
    for (int64_t t = 0; t < n; t++)
        for (int64_t k = 0; k < K2; k += 2 * VL)
            for (int j = 0; j < VL; j++) {
                xp[t * K + k + j]      = x[t * K + k + 2 * j];
                xp[t * K + k + VL + j] = x[t * K + k + 2 * j + 1];
            }
}

/* ---- GEMM: packed panels of NR rows x KC columns, RT_GEMM_MR tokens per step ---- */

/* pack[kk][NR] = W[r0 + i][k0 + kk] as f32 for i < nr (rows past nr are zero) */
static void pack_panel(const struct rt_mat *w, int64_t r0, int nr, int64_t k0, int64_t kc, float *pack) {
    if (nr < NR) memset(pack, 0, sizeof(float) * (size_t)(kc * NR));
    for (int i = 0; i < nr; i++) {
        const void *row = wrow(w, r0 + i);
        int64_t     kk  = 0;
        for (; kk + VL <= kc; kk += VL) {
            vf v = wload(row, w->type, k0 + kk);
            for (int j = 0; j < VL; j++) pack[(kk + j) * NR + i] = v[j];
        }
        for (; kk < kc; kk++) pack[kk * NR + i] = wget(row, w->type, k0 + kk);
    }
}

/* acc[MR][2] over kc columns; first: start from 0, else from y (a partial panel adds y at the end) */
static void micro(const float *pack, int64_t kc, const float *const *xp, float *const *yp, int mt,
                  int nr, int first) {
    vf a[RT_GEMM_MR][2];
    for (int i = 0; i < RT_GEMM_MR; i++) {
        if (first || i >= mt || nr < NR) {
            a[i][0] = (vf){0};
            a[i][1] = (vf){0};
        } else {
            a[i][0] = vload(yp[i]);
            a[i][1] = vload(yp[i] + VL);
        }
    }
    for (int64_t kk = 0; kk < kc; kk++) {
        vf w0 = vload(pack + kk * NR), w1 = vload(pack + kk * NR + VL);
        for (int i = 0; i < RT_GEMM_MR; i++) {
            float xv = xp[i][kk];
            a[i][0] += xv * w0;
            a[i][1] += xv * w1;
        }
    }
    for (int i = 0; i < mt; i++) {
        if (nr == NR) {
            vstore(yp[i], a[i][0]);
            vstore(yp[i] + VL, a[i][1]);
        } else {
            float tmp[NR];
            vstore(tmp, a[i][0]);
            vstore(tmp + VL, a[i][1]);
            for (int j = 0; j < nr; j++) yp[i][j] = first ? tmp[j] : yp[i][j] + tmp[j];
        }
    }
}

static void gemm(const struct rt_mat *w, const float *x, int64_t n, float *y, int64_t ldy,
                 int64_t r0, int64_t r1, float *pack) {
    const int64_t K = w->cols;
    for (int64_t r = r0; r < r1; r += NR) {
        int nr = (int)(r1 - r < NR ? r1 - r : NR);
        for (int64_t k0 = 0; k0 < K; k0 += RT_GEMM_KC) {
            int64_t kc = K - k0 < RT_GEMM_KC ? K - k0 : RT_GEMM_KC;
            pack_panel(w, r, nr, k0, kc, pack);
            for (int64_t t0 = 0; t0 < n; t0 += RT_GEMM_MR) {
                int          mt = (int)(n - t0 < RT_GEMM_MR ? n - t0 : RT_GEMM_MR);
                const float *xp[RT_GEMM_MR];
                float       *yp[RT_GEMM_MR];
                for (int i = 0; i < RT_GEMM_MR; i++) {
                    int64_t t = t0 + (i < mt ? i : mt - 1);
                    xp[i]     = x + t * K + k0;
                    yp[i]     = y + t * ldy + r;
                }
                micro(pack, kc, xp, yp, mt, nr, k0 == 0);
            }
        }
    }
}

const struct rt_lin_kernels KERNELS = {ISA_NAME, NR, gemv, gemm, deinterleave};
