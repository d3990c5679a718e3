/* SPDX-License-Identifier: MIT
 *
 * fuzz_cli.c -- libFuzzer target for the tool's flag parsing (tools/cli.c: cli_parse with every
 * kind of option, the sparse-config flags and their conversion to a checked config; --max-memory
 * sizes): the bytes are an argument vector (NUL-separated). Any vector must be parsed or refused
 * with a usage status; an accepted integer is inside its option's range; an accepted sparse config
 * passes the library's check. Messages go to stderr (`make fuzz` closes it for this target).
 */
#include "../tools/cli.h"
#include "../tools/memplan.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (buf == NULL) return 0;
    memcpy(buf, data, size);
    buf[size]  = '\0';
    char *argv[MAX_ARGS + 2] = {"infllm", "attn"};
    int   argc               = 2;
    for (char *p = buf; p < buf + size && argc < MAX_ARGS + 2; p += strlen(p) + 1) argv[argc++] = p;

    const char             *path = NULL, *mem = NULL;
    long long               past = -1, threads = 0;
    double                  temp = 1;
    int                     flag = 0;
    struct cli_sparse_flags sf;
    cli_sparse_flags_default(&sf);
    struct cli_opt opts[8 + CLI_SPARSE_N_OPTS] = {
        {"q", CLI_STR, &path, 0, 0, 0},        {"past", CLI_INT, &past, 0, (long long)1 << 40, 0},
        {"threads", CLI_INT, &threads, 0, 4096, 0}, {"temperature", CLI_REAL, &temp, 0, 0, 0},
        {"chat", CLI_FLAG, &flag, 0, 0, 0},   {"max-memory", CLI_STR, &mem, 0, 0, 0},
    };
    int n  = 6 + cli_sparse_opts(&sf, opts + 6);
    int rc = cli_parse("attn", argc, argv, 2, opts, n);
    if (rc != CLI_OK && rc != CLI_USAGE && rc != CLI_HELP) __builtin_trap();
    if (rc == CLI_OK) {
        if (past < -1 || past > (long long)1 << 40 || threads < 0 || threads > 4096) __builtin_trap();
        if (opts[3].seen && !(temp == temp && temp - temp == 0)) __builtin_trap(); /* finite */
        int64_t bytes;
        if (mem && mem_parse_bytes(mem, &bytes) == 0 && bytes < 0) __builtin_trap();
        struct ifl_sparse_config cfg;
        int                      crc = cli_sparse_config("attn", &sf, &cfg);
        if (crc != CLI_OK && crc != CLI_USAGE) __builtin_trap();
        if (crc == CLI_OK && (cfg.block_size < 1 || cfg.kernel_size < 1 || cfg.coarse_kernel_size < 1 || cfg.topk < 1))
            __builtin_trap();
    }
    free(buf);
    return 0;
}
