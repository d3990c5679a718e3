/* SPDX-License-Identifier: MIT
 *
 * errmsg.h -- how the runtime reports a failure: the message goes into the caller's buffer
 * (err, errlen: may be NULL/0), and the function returns -1, so a check reads
 * `if (bad) return rt_fail(err, errlen, "%s: tensor '%s': ...", file, name);`.
 */
#ifndef INFLLM_RT_ERRMSG_H
#define INFLLM_RT_ERRMSG_H

#include <stddef.h>

int rt_fail(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif /* INFLLM_RT_ERRMSG_H */
