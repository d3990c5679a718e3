/* SPDX-License-Identifier: MIT
 *
 * chat.c -- rt_chat_render: ChatML as chat.h shows it.
 */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rt_chat_render(const struct rt_chat_msg *msgs, size_t n, int add_generation_prompt, int empty_think,
                   char **out, size_t *len, char *err, size_t errlen) {
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    static const char        think[] = "<think>\n\n</think>\n\n";
    if (out) *out = NULL;
    if (!out || (!msgs && n)) {
        if (err && errlen) snprintf(err, errlen, "chat: NULL argument");
        return -1;
    }
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        int known = 0;
        for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++)
            known |= msgs[i].role && strcmp(msgs[i].role, roles[r]) == 0;
        if (!known || !msgs[i].content) {
            if (err && errlen)
                snprintf(err, errlen, "chat: message %zu: %s", i,
                         !msgs[i].content ? "no content" : "role must be system, user, assistant or tool");
            return -1;
        }
        total += strlen(msgs[i].role) + strlen(msgs[i].content) + 32;
    }
    total += 32 + sizeof think;
    char *s = malloc(total);
    if (!s) {
        if (err && errlen) snprintf(err, errlen, "chat: out of memory");
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(s + k, total - k, "<|im_start|>%s\n%s<|im_end|>\n", msgs[i].role, msgs[i].content);
    if (add_generation_prompt) {
        k += (size_t)snprintf(s + k, total - k, "<|im_start|>assistant\n");
        if (empty_think) k += (size_t)snprintf(s + k, total - k, "%s", think);
    }
    *out = s;
    if (len) *len = k;
    return 0;
}
