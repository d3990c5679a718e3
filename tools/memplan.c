/* SPDX-License-Identifier: MIT
 *
 * memplan.c -- see memplan.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "memplan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* The first integer after key in a "key value" text file (scaled by unit), or -1. */
static int64_t read_value(const char *path, const char *key, int64_t unit) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char      line[256];
    long long v   = -1;
    size_t    klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0) {
            char *end;
            v = strtoll(line + klen, &end, 10);
            if (end == line + klen || v < 0) v = -1;
            break;
        }
    fclose(f);
    return v < 0 || v > INT64_MAX / unit ? -1 : (int64_t)v * unit;
}

static void take(int64_t v, const char *what, int64_t *best, const char **source) {
    if (v >= 0 && (*best == 0 || v < *best)) {
        *best   = v > 0 ? v : 1; /* nothing left is still "known": 1 byte */
        *source = what;
    }
}

int64_t mem_available(const char **source) {
    int64_t     best = 0;
    const char *src  = "unknown";
    take(read_value("/proc/meminfo", "MemAvailable:", 1024), "MemAvailable", &best, &src);
    int64_t max = read_value("/sys/fs/cgroup/memory.max", "", 1), cur = read_value("/sys/fs/cgroup/memory.current", "", 1);
    if (max >= 0 && cur >= 0) take(max > cur ? max - cur : 0, "the cgroup's memory.max", &best, &src);
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        int64_t used = read_value("/proc/self/status", "VmSize:", 1024);
        int64_t lim  = rl.rlim_cur > (rlim_t)INT64_MAX ? INT64_MAX : (int64_t)rl.rlim_cur;
        if (used >= 0) take(lim > used ? lim - used : 0, "RLIMIT_AS (ulimit -v)", &best, &src);
    }
    if (source) *source = src;
    return best;
}

int mem_parse_bytes(const char *s, int64_t *out) {
    if (s == NULL || *s < '0' || *s > '9') return -1;
    int64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*s - '0');
    }
    int shift = *s == 'K' ? 10 : *s == 'M' ? 20 : *s == 'G' ? 30 : *s == 'T' ? 40 : 0;
    if (shift) s++;
    if (*s != '\0' || v > (INT64_MAX >> shift)) return -1;
    *out = v << shift;
    return 0;
}

const char *mem_str(int64_t bytes, char *buf, int len) {
    const char *unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double      x      = (double)bytes;
    int         u      = 0;
    while (x >= 1024 && u < 4) x /= 1024, u++;
    snprintf(buf, (size_t)len, u ? "%.1f %s" : "%.0f %s", x, unit[u]);
    return buf;
}
