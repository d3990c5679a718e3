/* SPDX-License-Identifier: MIT
 *
 * readfile.c -- see readfile.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "readfile.h"

#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int rt_open_regular(const char *path, int64_t *size, char *err, size_t errlen) {
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return rt_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return rt_fail(err, errlen, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return rt_fail(err, errlen, "%s: not a regular file (%s)", path,
                       S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a special file");
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return rt_fail(err, errlen, "%s: cannot open: %s", path, strerror(e));
    }
    *size = (int64_t)st.st_size;
    return fd;
}

int rt_read_file(const char *path, size_t max_bytes, char **buf, size_t *len, char *err, size_t errlen) {
    *buf       = NULL;
    *len       = 0;
    int64_t sz = 0;
    int     fd = rt_open_regular(path, &sz, err, errlen);
    if (fd < 0) return -1;
    if ((uint64_t)sz > max_bytes) {
        close(fd);
        return rt_fail(err, errlen, "%s: %lld bytes, more than the %zu this file may have", path, (long long)sz, max_bytes);
    }
    char *b = malloc((size_t)sz + 1);
    if (b == NULL) {
        close(fd);
        return rt_fail(err, errlen, "%s: out of memory for %lld bytes", path, (long long)sz);
    }
    /* read what the size promised, and no more: a file that grows meanwhile is read up to it */
    size_t n = 0;
    while (n < (size_t)sz) {
        ssize_t k = read(fd, b + n, (size_t)sz - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            free(b);
            close(fd);
            return rt_fail(err, errlen, "%s: read error: %s", path, strerror(e));
        }
        if (k == 0) break; /* it shrank: what was read is what there is */
        n += (size_t)k;
    }
    close(fd);
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

int rt_read_stream(FILE *f, const char *name, size_t max_bytes, char **buf, size_t *len, char *err, size_t errlen) {
    *buf     = NULL;
    *len     = 0;
    char  *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap > max_bytes) {
                free(b);
                return rt_fail(err, errlen, "%s: longer than the %zu bytes it may have", name, max_bytes);
            }
            size_t ncap = cap ? 2 * cap : (size_t)1 << 16;
            char  *q    = realloc(b, ncap + 1);
            if (q == NULL) {
                free(b);
                return rt_fail(err, errlen, "%s: out of memory", name);
            }
            b   = q;
            cap = ncap;
        }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(f);
    if (bad || n > max_bytes) {
        free(b);
        if (bad) return rt_fail(err, errlen, "%s: read error", name);
        return rt_fail(err, errlen, "%s: longer than the %zu bytes it may have", name, max_bytes);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}
