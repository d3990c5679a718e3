/* dev/cuda/atomics/atomics.cu -- what an atomic dQ would cost the backward (docs/benchmarks.md).
 *
 * A non-deterministic backward would add each (query chunk, key tile) contribution to dQ with
 * float atomics from the key-side kernel instead of running the dQ pass. This times that traffic
 * alone: every block adds `tiles` tiles of 64 rows x 128 floats (4 tokens x 16 heads x D 128, one
 * chunk of the key-side kernel) into a [tokens][16][128] f32 buffer at pseudo-random tokens, with
 * red.global.add.f32 or red.global.add.v4.f32, and the same pattern with plain stores for scale.
 *
 *   nvcc -O3 -arch=sm_90a -o /tmp/atomics dev/cuda/atomics/atomics.cu && /tmp/atomics
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

#define ROWS 64
#define D 128

__device__ __forceinline__ uint32_t mix(uint32_t x) {
    x ^= x >> 16, x *= 0x7feb352dU, x ^= x >> 15, x *= 0x846ca68bU, x ^= x >> 16;
    return x;
}

/* mode 0: red.add.f32, 1: red.add.v4.f32, 2: plain float4 stores */
__global__ void add_tiles(float *dq, int64_t tokens, int tiles, int mode) {
    for (int t = 0; t < tiles; t++) {
        const int64_t tok0 = (int64_t)(mix(blockIdx.x * 7919u + t) % (uint32_t)(tokens / 4)) * 4;
        float        *base = dq + tok0 * 16 * D; /* 4 tokens x 16 heads = 64 contiguous rows */
        for (int e = threadIdx.x * 4; e < ROWS * D; e += blockDim.x * 4) {
            const float v = 1e-3f * (float)(e & 7);
            if (mode == 0) {
                for (int i = 0; i < 4; i++) atomicAdd(base + e + i, v);
            } else if (mode == 1) {
                asm volatile("red.global.add.v4.f32 [%0], {%1, %1, %1, %1};" ::"l"(base + e), "f"(v) : "memory");
            } else {
                *(float4 *)(base + e) = make_float4(v, v, v, v);
            }
        }
    }
}

int main(void) {
    const int64_t tokens = 131072;
    float        *dq;
    cudaMalloc(&dq, (size_t)tokens * 16 * D * sizeof(float));
    cudaMemset(dq, 0, (size_t)tokens * 16 * D * sizeof(float));
    const int blocks = 132 * 8, tiles = 256;
    const char *names[3] = {"red.add.f32", "red.add.v4.f32", "float4 store"};
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    for (int mode = 0; mode < 3; mode++) {
        add_tiles<<<blocks, 256>>>(dq, tokens, 8, mode); /* warm-up */
        cudaEventRecord(a);
        add_tiles<<<blocks, 256>>>(dq, tokens, tiles, mode);
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        const double floats = (double)blocks * tiles * ROWS * D;
        printf("%-16s %8.3f ms  %7.1f G float adds/s  (%5.0f GB/s of f32)\n", names[mode], ms, floats / ms / 1e6,
               floats * 4 / ms / 1e6);
    }
    printf("%s\n", cudaGetErrorString(cudaGetLastError()));
    return 0;
}
