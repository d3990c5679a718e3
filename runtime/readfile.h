/* SPDX-License-Identifier: MIT
 *
 * readfile.h -- how the runtime and the tool open and read the files they are given: never
 * blocking on a FIFO (the file is opened with O_NONBLOCK and checked with fstat before anything
 * is read), only regular files, and never more than a stated number of bytes (a prompt or token
 * file that is really /dev/zero, or a huge one, is refused instead of filling memory).
 */
#ifndef INFLLM_RT_READFILE_H
#define INFLLM_RT_READFILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The limits on text files read whole (documented in docs/model.md). */
#define RT_MAX_JSON_BYTES   ((size_t)1 << 30) /* config.json, index, tokenizer.json: 1 GiB */
#define RT_MAX_PROMPT_BYTES ((size_t)1 << 28) /* --prompt-file: 256 MiB */
#define RT_MAX_TOKENS_BYTES ((size_t)1 << 30) /* --tokens: 1 GiB */

/* Opens path read-only if it is a regular file; returns the descriptor (blocking again) and its
 * size in *size, or -1 with a message naming the file. */
int rt_open_regular(const char *path, int64_t *size, char *err, size_t errlen);

/* Reads the regular file at path whole into a new buffer (*buf, NUL-terminated, length *len;
 * free it), refusing a file larger than max_bytes. Returns 0, or -1 with a message. */
int rt_read_file(const char *path, size_t max_bytes, char **buf, size_t *len, char *err, size_t errlen);

/* The same from a stream (stdin), which has no size to check first: reads at most max_bytes and
 * refuses a longer stream. */
int rt_read_stream(FILE *f, const char *name, size_t max_bytes, char **buf, size_t *len, char *err, size_t errlen);

#endif /* INFLLM_RT_READFILE_H */
