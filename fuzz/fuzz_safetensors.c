/* SPDX-License-Identifier: MIT
 *
 * fuzz_safetensors.c -- libFuzzer target for the safetensors header parser (st_parse in
 * runtime/safetensors.h): any bytes must be indexed or refused with a message; an accepted file's
 * tensors must lie inside the buffer and be findable by name.
 */
#include "../runtime/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct st_file f;
    char           err[256] = "";
    memset(&f, 0, sizeof f);
    if (st_parse(data, size, "fuzz", &f, err, sizeof err) == 0) {
        for (int64_t i = 0; i < f.n_tensors; i++) {
            const struct st_tensor *t = &f.tensors[i];
            const uint8_t          *p = t->data;
            if (t->end < t->begin || p < data || p + (t->end - t->begin) > data + size) __builtin_trap();
            if (st_find(&f, t->name) != t) __builtin_trap();
            (void)st_numel(t);
        }
    } else if (strlen(err) == 0)
        __builtin_trap();
    st_close(&f);
    return 0;
}
