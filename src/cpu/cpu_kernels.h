/* SPDX-License-Identifier: MIT
 *
 * cpu_kernels.h -- the cpu backend's building blocks, included by its per-ISA files:
 *   - row loads/stores between any storage dtype and f32;
 *   - two register-blocked micro-kernels (6 or 4 rows x 2 vectors of accumulators):
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

/* Scratch is counted in floats; a row pointer takes the room of PTR_FLOATS of them. */
#define PTR_FLOATS 2
_Static_assert(sizeof(float *) <= PTR_FLOATS * sizeof(float), "row pointers must fit PTR_FLOATS floats");

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

/* The micro-kernels take their query/output rows as arrays of row pointers, so a task can run
 * any subset of its rows (the tokens that selected a block) without copying them. */

/* Rows q[0..R-1] (R <= 6, a compile-time constant after inlining) of S = Q . Kt, columns
 * c..c+2VL, written to rows s[0..R-1]. */
static inline __attribute__((always_inline)) void qk_block(const float *const *q, int R, const float *Kt,
                                                           int64_t ldk, int64_t D, int64_t c, float *S,
                                                           int64_t lds) {
    vf a0[6] = {{0}}, a1[6] = {{0}};
    for (int64_t d = 0; d < D; d++) {
        vf b0 = vload(Kt + d * ldk + c), b1 = vload(Kt + d * ldk + c + VL);
        for (int i = 0; i < R; i++) {
            float x = q[i][d];
            a0[i] += x * b0, a1[i] += x * b1;
        }
    }
    for (int i = 0; i < R; i++) vstore(S + i * lds + c, a0[i]), vstore(S + i * lds + c + VL, a1[i]);
}

/* S[M][N] = Q . Kt where row i of Q is q[i][0..D); N a multiple of VL; ldk >= N. */
static inline void mk_qk(const float *const *q, int64_t M, const float *Kt, int64_t ldk, int64_t D,
                         int64_t N, float *S, int64_t lds) {
    int64_t c = 0;
    for (; c + 2 * VL <= N; c += 2 * VL) {
        int64_t r = 0;
        for (; r + 6 <= M; r += 6) qk_block(q + r, 6, Kt, ldk, D, c, S + r * lds, lds);
        if (M - r >= 4) qk_block(q + r, 4, Kt, ldk, D, c, S + r * lds, lds), r += 4;
        if (M - r >= 2) qk_block(q + r, 2, Kt, ldk, D, c, S + r * lds, lds), r += 2;
        if (M - r >= 1) qk_block(q + r, 1, Kt, ldk, D, c, S + r * lds, lds);
    }
    for (; c < N; c += VL)
        for (int64_t r = 0; r < M; r++) {
            vf a = {0};
            for (int64_t d = 0; d < D; d++) a += q[r][d] * vload(Kt + d * ldk + c);
            vstore(S + r * lds + c, a);
        }
}

/* Rows o[0..R-1] (R <= 4) += P rows . V over n keys, columns c..c+2VL. */
static inline __attribute__((always_inline)) void pv_block(const float *P, int64_t ldp, int R, int64_t n,
                                                           const float *V, int64_t ldv, int64_t c,
                                                           float *const *o) {
    vf a0[4], a1[4];
    for (int i = 0; i < R; i++) a0[i] = vload(o[i] + c), a1[i] = vload(o[i] + c + VL);
    for (int64_t k = 0; k < n; k++) {
        vf b0 = vload(V + k * ldv + c), b1 = vload(V + k * ldv + c + VL);
        for (int i = 0; i < R; i++) {
            float x = P[i * ldp + k];
            a0[i] += x * b0, a1[i] += x * b1;
        }
    }
    for (int i = 0; i < R; i++) vstore(o[i] + c, a0[i]), vstore(o[i] + c + VL, a1[i]);
}

/* o[i][0..DP) += P[i][0..n) . V[n][DP] for i < M; DP a multiple of VL; ldv >= DP. */
static inline void mk_pv(const float *P, int64_t ldp, int64_t M, int64_t n, const float *V, int64_t ldv,
                         int64_t DP, float *const *o) {
    int64_t c = 0;
    for (; c + 2 * VL <= DP; c += 2 * VL) {
        int64_t r = 0;
        for (; r + 4 <= M; r += 4) pv_block(P + r * ldp, ldp, 4, n, V, ldv, c, o + r);
        if (M - r >= 2) pv_block(P + r * ldp, ldp, 2, n, V, ldv, c, o + r), r += 2;
        if (M - r >= 1) pv_block(P + r * ldp, ldp, 1, n, V, ldv, c, o + r);
    }
    for (; c < DP; c += VL)
        for (int64_t r = 0; r < M; r++) {
            vf a = vload(o[r] + c);
            for (int64_t k = 0; k < n; k++) a += P[r * ldp + k] * vload(V + k * ldv + c);
            vstore(o[r] + c, a);
        }
}

/* ptr[i] = base + i * ld for i < M: row pointers of a contiguous matrix. */
static inline void row_ptrs(float *base, int64_t ld, int64_t M, float **ptr) {
    for (int64_t i = 0; i < M; i++) ptr[i] = base + i * ld;
}

/* Online softmax over one tile: row i of S (NP columns, the first valid[i] real) is turned into
 * probabilities (in place; invalid columns 0) relative to its running max m[i]; the running sum
 * l[i] and the output row o[i] (DP wide) are rescaled when the max grows. */
static inline void softmax_tile(float *S, int64_t lds, int64_t M, int64_t NP, const int32_t *valid,
                                float *const *m, float *const *l, float *const *o, int64_t DP) {
    for (int64_t r = 0; r < M; r++) {
        float  *s = S + r * lds;
        int64_t n = valid[r];
        if (n <= 0) {
            memset(s, 0, (size_t)NP * sizeof *s);
            continue;
        }
        float mx = -INFINITY;
        for (int64_t k = 0; k < n; k++) mx = s[k] > mx ? s[k] : mx;
        float mold = *m[r], mnew = mx > mold ? mx : mold;
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
        if (mnew > mold) {
            float alpha = mold == -INFINITY ? 0.0f : exp2f(mold - mnew);
            *l[r] *= alpha;
            for (int64_t c = 0; c < DP; c += VL) vstore(o[r] + c, vload(o[r] + c) * alpha);
            *m[r] = mnew;
        }
        *l[r] += vsum(sum);
    }
}

#endif /* INFLLM_CPU_KERNELS_H */
