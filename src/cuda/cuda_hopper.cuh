/* SPDX-License-Identifier: MIT
 *
 * cuda_hopper.cuh -- the Hopper (sm_90a) primitives of the wgmma kernels: shared-memory matrix
 * descriptors for the 128-byte swizzle that the tensor copy engine (TMA) writes, warpgroup matrix
 * products (wgmma.mma_async with A from registers, B from shared memory), mbarriers, 3-d TMA loads.
 *
 * The tile layout the kernels rely on: R rows x 64 16-bit columns loaded by TMA with
 * CU_TENSOR_MAP_SWIZZLE_128B land as R rows of 128 bytes, 1024-byte aligned, the 16-byte chunks of
 * row r permuted by XOR with r % 8. wgmma reads such a tile
 *   - K-major (rows = B's N index, columns = B's K index; the keys in S = Q K^T): 8-row groups
 *     1024 bytes apart (SBO); a 16-column k-step starts 32 bytes further into the rows (the swizzle
 *     is applied to the full address, which is why tiles must be 1024-byte aligned);
 *   - MN-major (B transposed: rows = K, columns = N; V in O += P V): 8-row groups along K at
 *     SBO = 1024 bytes, 64-column groups along N at LBO = the bytes of one 64-column tile.
 */
#ifndef INFLLM_CUDA_HOPPER_CUH
#define INFLLM_CUDA_HOPPER_CUH

#include "cuda_common.cuh"

#include <type_traits>

/* ---- shared-memory matrix descriptor, 128-byte swizzle ---- */

__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) |
           ((uint64_t)((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

/* ---- warpgroup matrix products ---- */

__device__ __forceinline__ void wg_fence(void) { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait(void) {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/* Keeps the compiler from moving accesses of an accumulator across the asynchronous products. */
template <int N> __device__ __forceinline__ void wg_fence_acc(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* The operand lists of wg_mma's asm (mechanical: accumulators first, then A, the descriptor, the
 * accumulate flag and the transpose immediate). */
#define WG_ACC32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define WG_ACC64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
#define WG_OUT32(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define WG_OUT64(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

#define WG_MMA_RS(SHAPE, TY, ACC, OUT, A, DESC, SC, TBN)                                            \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " SC ", 0;\n"                                    \
                 "wgmma.mma_async.sync.aligned." SHAPE ".f32." TY "." TY " " ACC ", " A ", " DESC       \
                 ", p, 1, 1, " TBN ";\n}\n"                                                           \
                 : OUT(d)                                                                            \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "r"(accumulate), "n"(TB))

/* d (+)= A B, one m64nNk16 step, N = 64 or 128 by the accumulator's size: A is this warp's 16 rows
 * of the 64 as an mma.sync m16n8k16 A fragment; B from the descriptor; accumulate 0 overwrites d.
 * TB = 1: B is MN-major. The accumulator layout is mma.sync's per 8 columns: d[4j + e] holds row
 * lane/4 + 8 (e >= 2) of the warp's 16, column 8j + 2 (lane % 4) + (e & 1). */
template <typename T, int TB, int NA>
__device__ __forceinline__ void wg_mma(float (&d)[NA], const uint32_t (&a)[4], uint64_t bdesc, int accumulate) {
    static_assert(NA == 32 || NA == 64, "m64n64 or m64n128");
    constexpr bool bf = std::is_same<T, __nv_bfloat16>::value;
    if constexpr (NA == 32 && bf) WG_MMA_RS("m64n64k16", "bf16", WG_ACC32, WG_OUT32, "{%32,%33,%34,%35}", "%36", "%37", "%38");
    else if constexpr (NA == 32) WG_MMA_RS("m64n64k16", "f16", WG_ACC32, WG_OUT32, "{%32,%33,%34,%35}", "%36", "%37", "%38");
    else if constexpr (bf) WG_MMA_RS("m64n128k16", "bf16", WG_ACC64, WG_OUT64, "{%64,%65,%66,%67}", "%68", "%69", "%70");
    else WG_MMA_RS("m64n128k16", "f16", WG_ACC64, WG_OUT64, "{%64,%65,%66,%67}", "%68", "%69", "%70");
}

/* ---- mbarriers (shared memory, CTA scope) ---- */

__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
/* Makes the initialised barriers visible to the other threads and to the copy engine. */
__device__ __forceinline__ void mbar_init_fence(void) { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
/* One arrival that also announces tx bytes the copy engine will complete. */
__device__ __forceinline__ void mbar_arrive_tx(uint64_t *bar, unsigned tx) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(tx) : "memory");
}
/* Waits until the phase of the given parity has completed. */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, unsigned parity) {
    asm volatile("{\n.reg .pred done;\nwait_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra wait_%=;\n}\n" ::"r"(smem_u32(bar)),
                 "r"(parity)
                 : "memory");
}

/* ---- TMA ---- */

/* The box at coordinates (c0, c1, c2) of the tensor map into shared memory at dst, completing
 * its bytes on bar. */
__device__ __forceinline__ void tma_load_3d(void *dst, const void *tmap, int c0, int c1, int c2, uint64_t *bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
                     smem_u32(dst)),
                 "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
                 : "memory");
}

#endif /* INFLLM_CUDA_HOPPER_CUH */
