/* SPDX-License-Identifier: MIT
 *
 * memplan.h -- how much memory a command may use, so that attn and grad can refuse a problem
 * that will not fit before they allocate anything, instead of being killed halfway.
 */
#ifndef INFLLM_MEMPLAN_H
#define INFLLM_MEMPLAN_H

#include <stdint.h>

/* The bytes this process can still get: the smallest of MemAvailable (/proc/meminfo), the
 * cgroup v2 limit less its usage (memory.max - memory.current) and RLIMIT_AS less the address
 * space in use; *source names the one that decided. 0 when none is known. */
int64_t mem_available(const char **source);

/* "8G", "512M", "1048576": bytes with an optional binary suffix K, M, G or T. Returns 0 and the
 * value, or -1 for anything else (negative, empty, overflowing, trailing characters). */
int mem_parse_bytes(const char *s, int64_t *out);

/* "1.5 GiB" into buf. */
const char *mem_str(int64_t bytes, char *buf, int len);

#endif /* INFLLM_MEMPLAN_H */
