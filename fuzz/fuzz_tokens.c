/* SPDX-License-Identifier: MIT
 *
 * fuzz_tokens.c -- libFuzzer target for the token-id files of `infllm logits` (tokens_parse in
 * tools/tokens.h): any bytes give at least one id in 0..2^31-1, or a message.
 */
#include "../tools/tokens.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int32_t *tok = NULL;
    int64_t  n   = 0;
    char     err[512] = "";
    if (tokens_parse((const char *)data, size, "fuzz.txt", &tok, &n, err, sizeof err) == 0) {
        if (n < 1 || tok == NULL) __builtin_trap();
        for (int64_t i = 0; i < n; i++)
            if (tok[i] < 0) __builtin_trap();
    } else if (strlen(err) == 0 || tok != NULL) {
        __builtin_trap();
    }
    free(tok);
    return 0;
}
