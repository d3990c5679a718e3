/* SPDX-License-Identifier: MIT
 *
 * chat.h -- the MiniCPM4 prompt format (minicpm4.md §6.4): ChatML. The text has no BOS; the
 * tokenizer adds it (add_bos_token), as OpenBMB's examples do.
 *
 *   <|im_start|>system\n{system}<|im_end|>\n        (only when a system message is given)
 *   <|im_start|>user\n{user}<|im_end|>\n
 *   <|im_start|>assistant\n                          (the generation prompt)
 *
 * empty_think appends "<think>\n\n</think>\n\n" after the generation prompt: the reasoning-off
 * form that MiniCPM4.1's template is believed to produce for enable_thinking=False. UNVERIFIED:
 * the 4.1 Jinja text was not available (§6.4); check it against the checkpoint's chat_template.
 * Message text is inserted as is: a message that contains "<|im_end|>" ends its turn there once
 * tokenized, exactly as with the Hugging Face template.
 */
#ifndef INFLLM_RT_CHAT_H
#define INFLLM_RT_CHAT_H

#include "rt_api.h"

#include <stddef.h>

struct rt_chat_msg {
    const char *role;    /* "system", "user", "assistant" or "tool" */
    const char *content;
};

/* Renders the messages (and the generation prompt when add_generation_prompt). *out is malloc'ed
 * and NUL-terminated, *len its length. 0, or -1 with a message (unknown role, NULL). */
RT_API int rt_chat_render(const struct rt_chat_msg *msgs, size_t n, int add_generation_prompt, int empty_think,
                          char **out, size_t *len, char *err, size_t errlen);

#endif /* INFLLM_RT_CHAT_H */
