/* SPDX-License-Identifier: MIT
 *
 * cpu_simd.h -- the one place where the cpu backend meets the instruction set.
 * The kernels are written once with GCC/Clang vector extensions (`vf`: VL floats) and compiled
 * three times (Makefile): CPU_ISA_AVX512 (-mavx512f -mavx512bw -mavx512vl ...), CPU_ISA_AVX2
 * (-mavx2 -mfma -mf16c) and the portable baseline (plain x86-64 / any target, no flags).
 * cpu_backend.c picks one at run time. Each per-ISA object names its functions through CPU_FN.
 * Intrinsics appear only here (half-float conversion, where the portable form is slow).
 */
#ifndef INFLLM_CPU_SIMD_H
#define INFLLM_CPU_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(CPU_ISA_AVX512)
#define VL        16
#define CPU_FN(f) f##_avx512
#elif defined(CPU_ISA_AVX2)
#define VL        8
#define CPU_FN(f) f##_avx2
#else
#define VL        8 /* two SSE2 registers per vector on plain x86-64 */
#define CPU_FN(f) f##_scalar
#endif

#if defined(CPU_ISA_AVX512) || defined(CPU_ISA_AVX2)
#include <immintrin.h>
#endif

typedef float    vf __attribute__((vector_size(VL * 4)));
typedef int32_t  vi __attribute__((vector_size(VL * 4)));
typedef uint32_t vu __attribute__((vector_size(VL * 4)));

static inline vf vload(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf   vset1(float x) { return (vf){0} + x; }
static inline vf   vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vf   vmax(vf a, vf b) { return vselect(a > b, a, b); }

static inline float vsum(vf v) {
    float s = 0;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}
static inline float vhmax(vf v) {
    float m = v[0];
    for (int i = 1; i < VL; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* 2^x for x <= 128, relative error below 2e-7 (degree-6 polynomial on [-0.5, 0.5]); inputs
 * below -126 give about 1e-38, which callers treat as 0 (masked scores are zeroed explicitly). */
static inline vf vexp2(vf x) {
    x        = vmax(x, vset1(-126.0f));
    vf n     = (x + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    vf f     = x - n;
    vf p     = vset1(1.535336188e-4f);
    p        = p * f + 1.339887440e-3f;
    p        = p * f + 9.618437357e-3f;
    p        = p * f + 5.550332471e-2f;
    p        = p * f + 2.402264791e-1f;
    p        = p * f + 6.931472028e-1f;
    p        = p * f + 1.0f;
    vi scale = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)scale;
}

/* ---- loading storage dtypes into f32 ---- */

static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float    f;
    memcpy(&f, &u, 4);
    return f;
}

/* n bf16 values (n a multiple of VL) to f32 */
static inline void load_bf16_row(float *dst, const uint16_t *src, int64_t n) {
    typedef uint16_t vh __attribute__((vector_size(VL * 2)));
    int64_t i = 0;
    for (; i + VL <= n; i += VL) { /* zero-extend and shift: a bf16 is the top half of a float */
        vh h;
        memcpy(&h, src + i, sizeof h);
        vu u = __builtin_convertvector(h, vu) << 16;
        vstore(dst + i, (vf)u);
    }
    for (; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

float ifl_f16_to_f32(uint16_t h); /* the library's portable conversion */

static inline void load_f16_row(float *dst, const uint16_t *src, int64_t n) {
    int64_t i = 0;
#if defined(CPU_ISA_AVX512)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif defined(CPU_ISA_AVX2)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) dst[i] = ifl_f16_to_f32(src[i]);
}

#endif /* INFLLM_CPU_SIMD_H */
