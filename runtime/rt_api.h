/* SPDX-License-Identifier: MIT
 *
 * rt_api.h -- RT_API marks the model runtime's public functions: those declared in model.h,
 * config.h, tokenizer.h, sample.h and chat.h (the runtime's public headers, named rt_* and tok_*).
 * The runtime is built with -fvisibility=hidden, so build/libinfllm_runtime.so exports those and
 * nothing else (tests/test_symbols.sh checks it); it reaches libinfllm through libinfllm.so's
 * public ifl_* functions only (it is linked with --no-undefined against it).
 */
#ifndef INFLLM_RT_API_H
#define INFLLM_RT_API_H

#if defined(__GNUC__)
#define RT_API __attribute__((visibility("default")))
#else
#define RT_API
#endif

#endif /* INFLLM_RT_API_H */
