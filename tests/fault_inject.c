/* SPDX-License-Identifier: MIT
 *
 * fault_inject.c -- SQLite-style fault injection for the tool (`make test-faults`). Linked into
 * build/san/infllm-faults with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=write,
 * --wrap=fopen, so every allocation and every file write of the library, the runtime and the tool
 * passes through here (libc's own internal calls do not):
 *   INFLLM_FAULT_ALLOC=N  the N-th allocation (1-based) returns NULL, once;
 *   INFLLM_FAULT_WRITE=N  the N-th write fails with ENOSPC, once: write(2) calls, and the writes
 *                         of every stream opened for writing with fopen (wrapped with fopencookie);
 *   INFLLM_FAULT_REPORT=1 print "fault-inject: A allocations, W writes" to stderr at exit, so a
 *                         driver (tests/test_faults.sh) knows how many N to try.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void   *__real_malloc(size_t n);
void   *__real_calloc(size_t n, size_t size);
void   *__real_realloc(void *p, size_t n);
ssize_t __real_write(int fd, const void *buf, size_t n);
FILE   *__real_fopen(const char *path, const char *mode);
void   *__wrap_malloc(size_t n);
void   *__wrap_calloc(size_t n, size_t size);
void   *__wrap_realloc(void *p, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
FILE   *__wrap_fopen(const char *path, const char *mode);

static atomic_llong n_alloc, n_write;
static long long    fail_alloc = -1, fail_write = -1; /* -1: not read yet; 0: never */

static long long env_number(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoll(v) : 0;
}

static void report(void) {
    fprintf(stderr, "fault-inject: %lld allocations, %lld writes\n", (long long)n_alloc, (long long)n_write);
}

/* The settings, read on first use (getenv allocates nothing). */
static void setup(void) {
    if (fail_alloc >= 0) return;
    fail_write = env_number("INFLLM_FAULT_WRITE");
    fail_alloc = env_number("INFLLM_FAULT_ALLOC");
    if (env_number("INFLLM_FAULT_REPORT")) atexit(report);
}

static int alloc_fails(void) {
    setup();
    return ++n_alloc == fail_alloc;
}

static int write_fails(void) {
    setup();
    return ++n_write == fail_write;
}

void *__wrap_malloc(size_t n) { return alloc_fails() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return alloc_fails() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { return alloc_fails() ? NULL : __real_realloc(p, n); }

ssize_t __wrap_write(int fd, const void *buf, size_t n) {
    if (write_fails()) {
        errno = ENOSPC;
        return -1;
    }
    return __real_write(fd, buf, n);
}

/* ---- streams opened for writing: their writes are counted and can fail too ---- */

static ssize_t cookie_write(void *c, const char *buf, size_t n) {
    if (write_fails()) {
        errno = ENOSPC;
        return -1;
    }
    return (ssize_t)fwrite(buf, 1, n, c) == (ssize_t)n ? (ssize_t)n : -1;
}

static int cookie_close(void *c) { return fclose(c); }

FILE *__wrap_fopen(const char *path, const char *mode) {
    FILE *f = __real_fopen(path, mode);
    if (f == NULL || strpbrk(mode, "wa+") == NULL) return f;
    cookie_io_functions_t io = {NULL, cookie_write, NULL, cookie_close};
    FILE                 *w  = fopencookie(f, mode, io);
    if (w == NULL) fclose(f);
    return w;
}
