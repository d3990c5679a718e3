/* SPDX-License-Identifier: MIT
 *
 * cpu_kernels.h -- the cpu backend's building blocks, included by its per-ISA files:
 *   - row loads/stores between any storage dtype and f32;
 *   - two register-blocked micro-kernels (4 rows x 2 vectors of accumulators):
 *       mk_qk: S[M][N]  = Q[M][D] . Kt[D][N]   (scores; Kt is a key tile stored transposed)
 *       mk_pv: O[M][DP] += P[M][n] . V[n][DP]  (weighted values; also dQ += dS.K, dV += Pt.dO)
 *   - the online-softmax update of one tile of scores.
 * Scores live in the log2 domain: queries are pre-multiplied by scale * log2(e), so the
 * softmax uses exp2 and the natural-log LSE is (m + log2(l)) * ln(2).
 * Padding: head dims are padded to DP (a multiple of VL) and key tiles to NP columns, with zeros,
 * so every vector load is whole; padded keys are masked by the per-row valid counts.
 */
#ifndef INFLLM_CPU_KERNELS_H
#define INFLLM_CPU_KERNELS_H

#include "cpu.h"
#include "cpu_simd.h"

#define LOG2E 1.4426950408889634
#define LN2   0.6931471805599453

static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* n elements of tensor t starting at element offset off (contiguous: the last dim) -> f32. */
static inline void load_row(float *dst, const struct ifl_tensor *t, int64_t off, int64_t n) {
    switch (t->dtype) {
    case IFL_DTYPE_F32: memcpy(dst, (const float *)t->data + off, (size_t)n * sizeof *dst); break;
    case IFL_DTYPE_BF16: load_bf16_row(dst, (const uint16_t *)t->data + off, n); break;
    case IFL_DTYPE_F16: load_f16_row(dst, (const uint16_t *)t->data + off, n); break;
    case IFL_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((const double *)t->data)[off + i];
        break;
    default: memset(dst, 0, (size_t)n * sizeof *dst); break;
    }
}

/* n f32 values -> tensor t at element offset off, rounded to its dtype. */
static inline void store_row(const struct ifl_tensor *t, int64_t off, const float *src, int64_t n) {
    switch (t->dtype) {
    case IFL_DTYPE_F32: memcpy((float *)t->data + off, src, (size_t)n * sizeof *src); break;
    case IFL_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) ((double *)t->data)[off + i] = src[i];
        break;
    default:
        for (int64_t i = 0; i < n; i++) ifl__store(t, off + i, src[i]);
        break;
    }
}

/* Rows r0..r0+R-1 (R <= 6, a compile-time constant after inlining) of S = Q . Kt, columns c..c+2VL. */
static inline __attribute__((always_inline)) void qk_block(const float *Q, int64_t ldq, int64_t r0, int R,
                                                           const float *Kt, int64_t ldk, int64_t D, int64_t c,
                                                           float *S, int64_t lds) {
    vf a0[6] = {{0}}, a1[6] = {{0}};
    const float *q = Q + r0 * ldq;
    for (int64_t d = 0; d < D; d++) {
        vf b0 = vload(Kt + d * ldk + c), b1 = vload(Kt + d * ldk + c + VL);
        for (int i = 0; i < R; i++) {
            float x = q[i * ldq + d];
            a0[i] += x * b0, a1[i] += x * b1;
        }
    }
    for (int i = 0; i < R; i++) vstore(S + (r0 + i) * lds + c, a0[i]), vstore(S + (r0 + i) * lds + c + VL, a1[i]);
}

/* S[M][N] = Q[M][D] . Kt[D][N]; N a multiple of VL; ldk >= N. */
static inline void mk_qk(const float *Q, int64_t ldq, int64_t M, const float *Kt, int64_t ldk,
                         int64_t D, int64_t N, float *S, int64_t lds) {
    int64_t c = 0;
    for (; c + 2 * VL <= N; c += 2 * VL) {
        int64_t r = 0;
        for (; r + 6 <= M; r += 6) qk_block(Q, ldq, r, 6, Kt, ldk, D, c, S, lds);
        if (M - r >= 4) qk_block(Q, ldq, r, 4, Kt, ldk, D, c, S, lds), r += 4;
        if (M - r >= 2) qk_block(Q, ldq, r, 2, Kt, ldk, D, c, S, lds), r += 2;
        if (M - r >= 1) qk_block(Q, ldq, r, 1, Kt, ldk, D, c, S, lds);
    }
    for (; c < N; c += VL)
        for (int64_t r = 0; r < M; r++) {
            vf a = {0};
            const float *q = Q + r * ldq;
            for (int64_t d = 0; d < D; d++) a += q[d] * vload(Kt + d * ldk + c);
            vstore(S + r * lds + c, a);
        }
}

/* O[M][DP] += P[M][n] . V[n][DP]; DP a multiple of VL; ldv >= DP. */
static inline void mk_pv(const float *P, int64_t ldp, int64_t M, int64_t n, const float *V,
                         int64_t ldv, int64_t DP, float *O, int64_t ldo) {
    int64_t c = 0;
    for (; c + 2 * VL <= DP; c += 2 * VL) {
        int64_t r = 0;
        for (; r + 4 <= M; r += 4) {
            float *o0 = O + r * ldo + c, *o1 = o0 + ldo, *o2 = o1 + ldo, *o3 = o2 + ldo;
            vf a00 = vload(o0), a01 = vload(o0 + VL), a10 = vload(o1), a11 = vload(o1 + VL);
            vf a20 = vload(o2), a21 = vload(o2 + VL), a30 = vload(o3), a31 = vload(o3 + VL);
            const float *p0 = P + r * ldp, *p1 = p0 + ldp, *p2 = p1 + ldp, *p3 = p2 + ldp;
            for (int64_t k = 0; k < n; k++) {
                vf b0 = vload(V + k * ldv + c), b1 = vload(V + k * ldv + c + VL);
                a00 += p0[k] * b0, a01 += p0[k] * b1;
                a10 += p1[k] * b0, a11 += p1[k] * b1;
                a20 += p2[k] * b0, a21 += p2[k] * b1;
                a30 += p3[k] * b0, a31 += p3[k] * b1;
            }
            vstore(o0, a00), vstore(o0 + VL, a01), vstore(o1, a10), vstore(o1 + VL, a11);
            vstore(o2, a20), vstore(o2 + VL, a21), vstore(o3, a30), vstore(o3 + VL, a31);
        }
        for (; r < M; r++) {
            float *o = O + r * ldo + c;
            vf a0 = vload(o), a1 = vload(o + VL);
            const float *p = P + r * ldp;
            for (int64_t k = 0; k < n; k++) {
                a0 += p[k] * vload(V + k * ldv + c);
                a1 += p[k] * vload(V + k * ldv + c + VL);
            }
            vstore(o, a0), vstore(o + VL, a1);
        }
    }
    for (; c < DP; c += VL)
        for (int64_t r = 0; r < M; r++) {
            float *o = O + r * ldo + c;
            vf a = vload(o);
            const float *p = P + r * ldp;
            for (int64_t k = 0; k < n; k++) a += p[k] * vload(V + k * ldv + c);
            vstore(o, a);
        }
}

/* Online softmax over one tile: row r of S (NP columns, the first valid[r] real) is turned into
 * probabilities P (in place; invalid columns 0) relative to the row's running max m[r]; the
 * running sum l[r] and the row of O (DP wide) are rescaled when the max grows. */
static inline void softmax_tile(float *S, int64_t lds, int64_t M, int64_t NP, const int32_t *valid,
                                float *m, float *l, float *O, int64_t ldo, int64_t DP) {
    for (int64_t r = 0; r < M; r++) {
        float  *s = S + r * lds;
        int64_t n = valid[r];
        if (n <= 0) {
            memset(s, 0, (size_t)NP * sizeof *s);
            continue;
        }
        float mx = -INFINITY;
        for (int64_t k = 0; k < n; k++) mx = s[k] > mx ? s[k] : mx;
        float mnew = mx > m[r] ? mx : m[r];
        vf    sum  = {0};
        vf    mv   = vset1(mnew);
        for (int64_t k = 0; k < NP; k += VL) {
            vf p = vexp2(vload(s + k) - mv);
            if (k + VL > n) { /* zero the masked columns of the last partial vector(s) */
                vi lane = {0};
                for (int i = 0; i < VL; i++) lane[i] = (int32_t)(k + i);
                p = vselect(lane < (int32_t)n, p, (vf){0});
            }
            sum += p;
            vstore(s + k, p);
        }
        if (mnew > m[r]) {
            float alpha = m[r] == -INFINITY ? 0.0f : exp2f(m[r] - mnew);
            l[r] *= alpha;
            float *o = O + r * ldo;
            for (int64_t c = 0; c < DP; c += VL) vstore(o + c, vload(o + c) * alpha);
            m[r] = mnew;
        }
        l[r] += vsum(sum);
    }
}

#endif /* INFLLM_CPU_KERNELS_H */
