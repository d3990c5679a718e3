/* SPDX-License-Identifier: MIT
 *
 * fuzz_npy.c -- libFuzzer target for the strict .npy parser (npy_parse in tools/npy.h): any bytes
 * must be accepted with a shape whose data fills the rest of the buffer exactly, or refused with
 * a message; never a crash, a leak or undefined behaviour.
 */
#include "../tools/npy.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int accept_i8 = 0; accept_i8 < 2; accept_i8++) {
        struct npy_array a;
        char             err[512] = "";
        if (npy_parse(data, size, "fuzz.npy", accept_i8, &a, err, sizeof err) == 0) {
            int64_t count = 1;
            for (int i = 0; i < a.ndim; i++) count *= a.shape[i];
            if (count != a.count || a.offset > size || (size_t)a.count * a.esize != size - a.offset) __builtin_trap();
            if (a.int64 && !accept_i8) __builtin_trap();
        } else if (strlen(err) == 0) {
            __builtin_trap();
        }
    }
    return 0;
}
