/* SPDX-License-Identifier: MIT
 *
 * outfile.h -- the tool's one way to write output files: all of a command's outputs, or none.
 *
 * A command declares its outputs (out_set_add) and its input files (out_set_check_input) before
 * it computes anything, so that bad paths fail fast:
 *   - two outputs naming the same file, or an output naming an input, are refused;
 *   - a target that exists must be a regular file; symlinks, devices, FIFOs and directories are
 *     refused (the tool never writes through a link nor replaces a device node);
 *   - the target's folder must exist.
 * Each output is then written to its own temporary, created with mkstemp beside the target
 * (PATH.tmp.XXXXXX, so that concurrent runs never share one and a user's own PATH.tmp is never
 * touched), with every write, fsync and close checked. Only when every output is complete does
 * out_set_commit rename them into place; any failure before that removes the temporaries and
 * leaves every existing file as it was. A full disk (ENOSPC) is a failure with a message.
 */
#ifndef INFLLM_OUTFILE_H
#define INFLLM_OUTFILE_H

#include <stddef.h>
#include <sys/types.h>

#define OUT_SET_MAX 8

struct out_target {
    const char *flag;    /* the option that named it ("out", "lse", ...), for messages */
    const char *path;    /* as given */
    char       *canon;   /* realpath of its folder + "/" + its name: the identity compared */
    char       *tmp;     /* its temporary, once out_set_write created it */
    int         fd;      /* the temporary's descriptor, -1 when closed */
    int         exists;  /* the target existed (a regular file) when declared */
    dev_t       dev;     /* and was this file */
    ino_t       ino;
};

struct out_set {
    struct out_target t[OUT_SET_MAX];
    int               n;
};

void out_set_init(struct out_set *s);

/* Declares an output. Returns its index (>= 0); -1 with a message in err when the path cannot be
 * an output (see above); -2 when it names the same file as an earlier output (a usage error). */
int out_set_add(struct out_set *s, const char *flag, const char *path, char *err, size_t err_len);

/* Returns 0, or -2 with a message when an output names the file at path (an input of the
 * command, given by the option flag). A path that does not exist matches nothing. */
int out_set_check_input(const struct out_set *s, const char *flag, const char *path, char *err, size_t err_len);

/* Appends n bytes to output i (its temporary is created on the first call). Returns 0 or -1. */
int out_set_write(struct out_set *s, int i, const void *buf, size_t n, char *err, size_t err_len);

/* Completes every output that was written (fsync, close), then renames them all into place.
 * Outputs that were declared but never written are left alone. Returns 0, or -1 with a message;
 * before the first rename a failure changes nothing. Frees the set either way. */
int out_set_commit(struct out_set *s, char *err, size_t err_len);

/* Removes the temporaries and frees the set (after a failure; harmless after commit). */
void out_set_abort(struct out_set *s);

/* A folder of outputs (model-init's checkpoint), built the same way: out_dir_begin checks that
 * path does not exist or is an empty folder (never a symlink) and creates a temporary folder
 * beside it (PATH.tmp.XXXXXX, returned in *tmp); the caller writes its files there; out_dir_commit
 * syncs them and renames the folder into place; out_dir_abort removes it with its files. Each
 * returns 0, or -1 with a message. */
int  out_dir_begin(const char *flag, const char *path, char **tmp, char *err, size_t err_len);
int  out_dir_commit(const char *flag, const char *path, char *tmp, char *err, size_t err_len);
void out_dir_abort(char *tmp);

#endif /* INFLLM_OUTFILE_H */
