/* SPDX-License-Identifier: MIT
 *
 * simd.c -- the one place that knows which instruction-set levels this processor runs and what
 * INFLLM_SIMD asks for. The cpu backend (cpu_backend.c) and the model runtime's kernels
 * (runtime/linear.c, through ifl_ctx_simd) both take their level from here, so they can never
 * disagree about a processor or an environment.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 when the processor has every instruction the level's build is compiled with (the ISA_* flags
 * of the Makefile: AVX2 builds use -mavx2 -mfma -mf16c; AVX-512 builds add -mavx512f/bw/vl/dq). */
static int processor_runs(enum ifl_simd simd) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     __builtin_cpu_supports("f16c");
    switch (simd) {
    case IFL_SIMD_AVX512:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case IFL_SIMD_AVX2: return avx2;
    default: return 1;
    }
#else
    return simd == IFL_SIMD_SCALAR || simd == IFL_SIMD_AUTO;
#endif
}

enum ifl_status ifl_simd_parse(const char *name, enum ifl_simd *out) {
    static const enum ifl_simd all[] = {IFL_SIMD_AUTO, IFL_SIMD_SCALAR, IFL_SIMD_AVX2, IFL_SIMD_AVX512};
    if (out == NULL) return IFL_STATUS_INVALID_ARG;
    if (name == NULL || *name == '\0') {
        *out = IFL_SIMD_AUTO;
        return IFL_STATUS_OK;
    }
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, ifl_simd_name(all[i])) == 0) {
            *out = all[i];
            return IFL_STATUS_OK;
        }
    return IFL_STATUS_INVALID_ARG;
}

enum ifl_status ifl_simd_resolve(enum ifl_simd want, enum ifl_simd *out, char *msg, size_t msglen) {
    char  spare[8];
    char *m = msg && msglen ? msg : spare;
    size_t ml = msg && msglen ? msglen : sizeof spare;
    m[0] = '\0';
    if (out == NULL) return IFL_STATUS_INVALID_ARG;
    if (want != IFL_SIMD_AUTO && want != IFL_SIMD_SCALAR && want != IFL_SIMD_AVX2 && want != IFL_SIMD_AVX512) {
        snprintf(m, ml, "simd level %d: expected auto, scalar, avx2 or avx512", (int)want);
        return IFL_STATUS_INVALID_ARG;
    }
    if (want == IFL_SIMD_AUTO) {
        const char *env = getenv("INFLLM_SIMD");
        if (ifl_simd_parse(env, &want) != IFL_STATUS_OK) {
            snprintf(m, ml, "INFLLM_SIMD=%s: expected auto, scalar, avx2 or avx512", env);
            return IFL_STATUS_INVALID_ARG;
        }
        if (want != IFL_SIMD_AUTO && !processor_runs(want)) {
            snprintf(m, ml, "INFLLM_SIMD=%s: this processor does not run it", env);
            return IFL_STATUS_UNSUPPORTED;
        }
    }
    if (want == IFL_SIMD_AUTO)
        want = processor_runs(IFL_SIMD_AVX512) ? IFL_SIMD_AVX512
             : processor_runs(IFL_SIMD_AVX2)   ? IFL_SIMD_AVX2
                                               : IFL_SIMD_SCALAR;
    if (!processor_runs(want)) {
        snprintf(m, ml, "simd %s: this processor does not run it", ifl_simd_name(want));
        return IFL_STATUS_UNSUPPORTED;
    }
    *out = want;
    return IFL_STATUS_OK;
}
