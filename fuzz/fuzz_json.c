/* SPDX-License-Identifier: MIT
 *
 * fuzz_json.c -- libFuzzer target for the JSON parser (runtime/json.h): any bytes must give a tree
 * or a message, never a crash, a leak or undefined behaviour; a tree must be walkable through the
 * accessors. `make fuzz` builds and runs it (docs/tokenizer.md, "Fuzzing").
 */
#include "../runtime/json.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touches every value; returns a count so the walk is not optimised away. */
static size_t walk(const struct json_value *v, int depth) {
    size_t n = 1;
    if (depth > 600) return n;
    int64_t i;
    double  d;
    size_t  len;
    (void)json_int64(v, &i);
    (void)json_double(v, &d);
    if (json_string(v, &len)) n += len;
    for (size_t k = 0; k < json_len(v); k++) {
        const struct json_member *m = json_member_at(v, k);
        if (m) {
            /* lookup by key must find this member's value (keys are unique) */
            if (json_get_n(v, m->key, m->key_len) != &m->value) __builtin_trap();
            n += walk(&m->value, depth + 1);
        } else
            n += walk(json_at(v, k), depth + 1);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct json_doc *doc = NULL;
    char             err[256];
    struct json_parse_options o = {64};
    if (json_parse(data, size, size & 1 ? &o : NULL, &doc, err, sizeof err) == 0) {
        (void)walk(json_root(doc), 0);
        json_free(doc);
    } else if (doc != NULL || strlen(err) == 0)
        __builtin_trap(); /* a failure must say why and return no tree */
    return 0;
}
