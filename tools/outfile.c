/* SPDX-License-Identifier: MIT
 *
 * outfile.c -- all-or-nothing output files (see outfile.h).
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* mkstemp, realpath */
#include "outfile.h"

#include "../runtime/errmsg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void out_set_init(struct out_set *s) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < OUT_SET_MAX; i++) s->t[i].fd = -1;
}

static const char *kind_of(mode_t m) {
    return S_ISLNK(m) ? "a symbolic link" : S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO"
         : S_ISCHR(m) || S_ISBLK(m) ? "a device" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

/* What may stand at an output's path: nothing yet, or a regular file (which is replaced). */
static int check_target(const char *flag, const char *path, struct stat *st, int *exists, char *err, size_t len) {
    *exists = 0;
    if (lstat(path, st) != 0) {
        if (errno == ENOENT) return 0;
        return rt_fail(err, len, "--%s %s: cannot check the output: %s", flag, path, strerror(errno));
    }
    if (!S_ISREG(st->st_mode))
        return rt_fail(err, len, "--%s %s is %s; outputs are written only to regular files (or new paths)", flag,
                    path, kind_of(st->st_mode));
    *exists = 1;
    return 0;
}

/* realpath(folder of path) + "/" + name: two spellings of one output compare equal. */
static char *canonical(const char *flag, const char *path, char *err, size_t len) {
    const char *slash = strrchr(path, '/');
    const char *name  = slash ? slash + 1 : path;
    if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        rt_fail(err, len, "--%s %s names a folder, expected a file", flag, path);
        return NULL;
    }
    char folder[PATH_MAX];
    if (slash == NULL) snprintf(folder, sizeof folder, ".");
    else if (slash == path) snprintf(folder, sizeof folder, "/");
    else if ((size_t)(slash - path) >= sizeof folder) {
        rt_fail(err, len, "--%s %s: path too long", flag, path);
        return NULL;
    } else snprintf(folder, sizeof folder, "%.*s", (int)(slash - path), path);
    char real[PATH_MAX];
    if (realpath(folder, real) == NULL) {
        rt_fail(err, len, "--%s %s: folder %s: %s", flag, path, folder, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rt_fail(err, len, "--%s %s: %s is not a folder", flag, path, folder);
        return NULL;
    }
    if (access(real, W_OK | X_OK) != 0) {
        rt_fail(err, len, "--%s %s: cannot write in folder %s: %s", flag, path, folder, strerror(errno));
        return NULL;
    }
    size_t n = strlen(real) + 1 + strlen(name) + 1;
    char  *c = malloc(n);
    if (c == NULL) {
        rt_fail(err, len, "--%s %s: out of memory", flag, path);
        return NULL;
    }
    snprintf(c, n, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", name);
    return c;
}

int out_set_add(struct out_set *s, const char *flag, const char *path, char *err, size_t len) {
    if (s->n == OUT_SET_MAX) return rt_fail(err, len, "--%s: too many outputs", flag);
    struct stat st;
    int         exists;
    if (check_target(flag, path, &st, &exists, err, len) != 0) return -1;
    char *canon = canonical(flag, path, err, len);
    if (canon == NULL) return -1;
    for (int i = 0; i < s->n; i++) {
        const struct out_target *o = &s->t[i];
        if (strcmp(o->canon, canon) == 0 || (exists && o->exists && o->dev == st.st_dev && o->ino == st.st_ino)) {
            free(canon);
            rt_fail(err, len, "--%s %s and --%s %s name the same file; each output needs its own", o->flag, o->path,
                 flag, path);
            return -2;
        }
    }
    struct out_target *o = &s->t[s->n];
    o->flag              = flag;
    o->path              = path;
    o->canon             = canon;
    o->exists            = exists;
    o->dev               = exists ? st.st_dev : 0;
    o->ino               = exists ? st.st_ino : 0;
    o->fd                = -1;
    return s->n++;
}

int out_set_check_input(const struct out_set *s, const char *flag, const char *path, char *err, size_t len) {
    struct stat st;
    if (stat(path, &st) != 0) return 0; /* the reader reports a missing input */
    for (int i = 0; i < s->n; i++) {
        const struct out_target *o = &s->t[i];
        if (o->exists && o->dev == st.st_dev && o->ino == st.st_ino) {
            rt_fail(err, len, "--%s %s is the input --%s %s; an output may not replace an input", o->flag, o->path,
                 flag, path);
            return -2;
        }
    }
    return 0;
}

static int create_tmp(struct out_target *o, char *err, size_t len) {
    size_t n = strlen(o->path) + sizeof ".tmp.XXXXXX";
    o->tmp   = malloc(n);
    if (o->tmp == NULL) return rt_fail(err, len, "--%s %s: out of memory", o->flag, o->path);
    snprintf(o->tmp, n, "%s.tmp.XXXXXX", o->path);
    o->fd = mkstemp(o->tmp);
    if (o->fd < 0) {
        int e = errno;
        free(o->tmp);
        o->tmp = NULL;
        return rt_fail(err, len, "--%s %s: cannot create a temporary file beside it: %s", o->flag, o->path, strerror(e));
    }
    /* mkstemp makes the file 0600; outputs get the permissions a plain create would give */
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(o->fd, 0666 & ~mask) != 0)
        return rt_fail(err, len, "--%s %s: cannot set the permissions of %s: %s", o->flag, o->path, o->tmp, strerror(errno));
    return 0;
}

int out_set_write(struct out_set *s, int i, const void *buf, size_t n, char *err, size_t len) {
    struct out_target *o = &s->t[i];
    if (o->tmp == NULL && create_tmp(o, err, len) != 0) return -1;
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(o->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) /* k == 0 cannot happen for a regular file; treat it as a failure, not a loop */
            return rt_fail(err, len, "--%s %s: cannot write: %s", o->flag, o->path, k < 0 ? strerror(errno) : "no progress");
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void free_set(struct out_set *s) {
    for (int i = 0; i < s->n; i++) {
        struct out_target *o = &s->t[i];
        if (o->fd >= 0) close(o->fd);
        if (o->tmp) unlink(o->tmp);
        free(o->tmp);
        free(o->canon);
    }
    out_set_init(s);
}

void out_set_abort(struct out_set *s) { free_set(s); }

/* Makes the renames durable; a folder that cannot be synced (some file systems) is not an error:
 * the data itself was synced before the rename. */
static void sync_folder(const char *canon) {
    const char *slash = strrchr(canon, '/');
    char        folder[PATH_MAX];
    snprintf(folder, sizeof folder, "%.*s", slash == canon ? 1 : (int)(slash - canon), canon);
    int fd = open(folder, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int out_set_commit(struct out_set *s, char *err, size_t len) {
    int rc = 0;
    for (int i = 0; i < s->n && rc == 0; i++) {
        struct out_target *o = &s->t[i];
        if (o->fd < 0) continue;
        if (fsync(o->fd) != 0 && errno != EINVAL) rc = rt_fail(err, len, "--%s %s: cannot write: %s", o->flag, o->path, strerror(errno));
        int fd = o->fd;
        o->fd  = -1;
        if (close(fd) != 0 && rc == 0) rc = rt_fail(err, len, "--%s %s: cannot write: %s", o->flag, o->path, strerror(errno));
        /* the target may have changed since it was declared: check it again */
        struct stat st;
        int         exists;
        if (rc == 0) rc = check_target(o->flag, o->path, &st, &exists, err, len);
    }
    int done = 0;
    for (int i = 0; i < s->n && rc == 0; i++) {
        struct out_target *o = &s->t[i];
        if (o->tmp == NULL) continue;
        if (rename(o->tmp, o->path) != 0) {
            rc = rt_fail(err, len, "--%s %s: cannot rename %s into place: %s%s", o->flag, o->path, o->tmp, strerror(errno),
                      done ? " (outputs before it were already replaced)" : "");
            break;
        }
        free(o->tmp);
        o->tmp = NULL;
        done++;
        sync_folder(o->canon);
    }
    free_set(s);
    return rc;
}

/* ---- a folder of outputs ---- */

/* Calls fn on each entry of folder dir other than . and ..; stops at the first non-zero. */
static int each_entry(const char *dir, int (*fn)(const char *path, void *user), void *user) {
    DIR *d = opendir(dir);
    if (d == NULL) return -1;
    int            rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) rc = -1;
        else rc = fn(p, user);
    }
    closedir(d);
    return rc;
}

static int count_entry(const char *path, void *user) {
    (void)path;
    ++*(int *)user;
    return 0;
}

int out_dir_begin(const char *flag, const char *path, char **tmp, char *err, size_t len) {
    *tmp = NULL;
    struct stat st;
    if (lstat(path, &st) == 0) {
        int n = 0;
        if (!S_ISDIR(st.st_mode))
            return rt_fail(err, len, "--%s %s is %s; expected a new folder or an empty one", flag, path, kind_of(st.st_mode));
        if (each_entry(path, count_entry, &n) != 0 || n > 0)
            return rt_fail(err, len, "--%s %s is a folder that is not empty; expected a new folder or an empty one", flag, path);
    } else if (errno != ENOENT) {
        return rt_fail(err, len, "--%s %s: %s", flag, path, strerror(errno));
    }
    char *c = canonical(flag, path, err, len); /* the parent folder exists and is writable */
    if (c == NULL) return -1;
    free(c);
    size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
    *tmp     = malloc(n);
    if (*tmp == NULL) return rt_fail(err, len, "--%s %s: out of memory", flag, path);
    snprintf(*tmp, n, "%s.tmp.XXXXXX", path);
    if (mkdtemp(*tmp) == NULL) {
        int e = errno;
        free(*tmp);
        *tmp = NULL;
        return rt_fail(err, len, "--%s %s: cannot create a temporary folder beside it: %s", flag, path, strerror(e));
    }
    mode_t mask = umask(0); /* mkdtemp makes it 0700; give it what mkdir would */
    umask(mask);
    (void)chmod(*tmp, 0777 & ~mask);
    return 0;
}

static int sync_entry(const char *path, void *user) {
    (void)user;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd) != 0 && errno != EINVAL ? -1 : 0;
    close(fd);
    return rc;
}

int out_dir_commit(const char *flag, const char *path, char *tmp, char *err, size_t len) {
    if (each_entry(tmp, sync_entry, NULL) != 0) {
        rt_fail(err, len, "--%s %s: cannot sync the files written: %s", flag, path, strerror(errno));
        out_dir_abort(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) { /* replaces an empty folder; fails on anything else */
        rt_fail(err, len, "--%s %s: cannot rename %s into place: %s", flag, path, tmp, strerror(errno));
        out_dir_abort(tmp);
        return -1;
    }
    char *c = canonical(flag, path, err, len);
    if (c) sync_folder(c);
    free(c);
    free(tmp);
    return 0;
}

static int remove_entry(const char *path, void *user) {
    (void)user;
    (void)unlink(path);
    return 0;
}

void out_dir_abort(char *tmp) {
    if (tmp == NULL) return;
    (void)each_entry(tmp, remove_entry, NULL);
    (void)rmdir(tmp);
    free(tmp);
}
