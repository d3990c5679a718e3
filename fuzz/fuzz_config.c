/* SPDX-License-Identifier: MIT
 *
 * fuzz_config.c -- libFuzzer target for the meaning of config.json (rt_config_parse in
 * runtime/config.h): any bytes give a validated model description or a message. An accepted
 * description keeps every documented limit (config.h), so the sizes derived from it never
 * overflow.
 */
#include "../runtime/config.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct rt_config c;
    char             err[512] = "";
    if (rt_config_parse((const char *)data, size, "fuzz/config.json", &c, err, sizeof err) != 0) {
        if (strlen(err) == 0) __builtin_trap();
        return 0;
    }
    const int64_t lim = (int64_t)1 << 31, H = c.hidden_size;
    if (c.vocab_size < 1 || c.vocab_size >= lim || H < 1 || H >= lim || c.intermediate_size < 1 ||
        c.intermediate_size >= lim || c.num_hidden_layers < 1 || c.max_position_embeddings < 1)
        __builtin_trap();
    if (c.num_attention_heads < 1 || c.num_key_value_heads < 1 || H % c.num_attention_heads ||
        c.num_attention_heads % c.num_key_value_heads || c.head_dim * c.num_attention_heads != H ||
        c.head_dim % 2 || c.head_dim > 256)
        __builtin_trap();
    if (c.vocab_size * H > RT_MAX_MATRIX_ELEMENTS || c.intermediate_size * H > RT_MAX_MATRIX_ELEMENTS)
        __builtin_trap();
    if (c.bos_token_id >= c.vocab_size) __builtin_trap();
    for (int i = 0; i < c.n_eos; i++)
        if (c.eos_token_id[i] < 0 || c.eos_token_id[i] >= c.vocab_size) __builtin_trap();
    const struct rt_sparse *s = &c.sparse;
    if (s->present) {
        const int32_t sizes[] = {s->kernel_size, s->kernel_stride, s->block_size, s->topk};
        for (int i = 0; i < 4; i++)
            if (sizes[i] < 1 || sizes[i] > RT_MAX_SPARSE_SIZE) __builtin_trap();
        if (s->init_blocks < 0 || s->window_size < 0 || s->window_size > RT_MAX_SPARSE_SIZE || s->dense_len < -1 ||
            s->block_size % s->kernel_stride || s->kernel_size % s->kernel_stride || s->window_size % s->block_size ||
            s->topk < s->init_blocks + 1)
            __builtin_trap();
    }
    return 0;
}
