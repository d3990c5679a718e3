/* SPDX-License-Identifier: MIT
 *
 * tokens.h -- token-id files (`infllm logits --tokens`): a 1-D .npy of '<i4' or '<i8' (the strict
 * reader of npy.c, no trailing bytes), or text: decimal integers separated by ASCII whitespace and
 * nothing else (a NUL byte or any other character is refused with its byte offset). Ids are
 * 0..2^31-1; at least one.
 */
#ifndef INFLLM_TOKENS_H
#define INFLLM_TOKENS_H

#include <stddef.h>
#include <stdint.h>

/* Parses buf[0, size) (path names it in messages) into a new array *out of *n ids (free it).
 * Returns 0, or -1 with a message in err. */
int tokens_parse(const char *buf, size_t size, const char *path, int32_t **out, int64_t *n, char *err,
                 size_t errlen);

#endif /* INFLLM_TOKENS_H */
