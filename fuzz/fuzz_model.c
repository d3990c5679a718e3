/* SPDX-License-Identifier: MIT
 *
 * fuzz_model.c -- libFuzzer target for the checkpoint loader (rt_model_load in runtime/model.h:
 * config.json, model.safetensors.index.json and its shards, or model.safetensors). The bytes are
 * a little archive of files, each [u8 name length][name][u32 little-endian size][data], written
 * into a fresh folder that is then loaded (context capped at 64 tokens, one thread). Any archive
 * must load or be refused with a message; never a crash, a leak or undefined behaviour. The seeds
 * (fuzz/corpus/model) are a 1-layer checkpoint whole and sharded, made by fuzz/make_model_seeds.py.
 */
#define _DEFAULT_SOURCE
#include "../runtime/model.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void empty_dir(void) {
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[512];
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

/* Writes the archive's files; returns 0, or -1 for an archive that names no usable file. */
static int unpack(const uint8_t *data, size_t size) {
    size_t pos = 0;
    int    n   = 0;
    while (pos < size && n < 16) {
        size_t nl = data[pos++];
        if (nl == 0 || nl > 64 || size - pos < nl + 4) return -1;
        char name[80];
        memcpy(name, data + pos, nl);
        name[nl] = '\0';
        pos += nl;
        if (strchr(name, '/') || strlen(name) != nl || name[0] == '.') return -1;
        uint32_t len = (uint32_t)data[pos] | (uint32_t)data[pos + 1] << 8 | (uint32_t)data[pos + 2] << 16 |
                       (uint32_t)data[pos + 3] << 24;
        pos += 4;
        if (len > size - pos) return -1;
        char path[160];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        FILE *f = fopen(path, "wb");
        if (f == NULL) return -1;
        size_t w = fwrite(data + pos, 1, len, f);
        if (fclose(f) != 0 || w != len) return -1;
        pos += len;
        n++;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (dir[0] == '\0') { /* one folder per process, under $TMPDIR (make fuzz: build/fuzz) */
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/infllm-fuzz-model.XXXXXX", tmp && *tmp && strlen(tmp) < 32 ? tmp : "/tmp");
        if (mkdtemp(dir) == NULL) abort();
    }
    empty_dir();
    if (unpack(data, size) != 0) return 0;
    struct rt_model_options o = rt_model_options_default();
    o.n_threads               = 1;
    o.max_context             = 64;
    struct rt_model *m        = NULL;
    char             err[1024] = "";
    if (rt_model_load(dir, &o, &m, err, sizeof err) == 0) {
        if (m == NULL || rt_model_capacity(m) != 64) __builtin_trap();
        rt_model_free(m);
    } else if (m != NULL || strlen(err) == 0) {
        __builtin_trap();
    }
    return 0;
}
