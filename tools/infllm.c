/* SPDX-License-Identifier: MIT
 *
 * infllm.c -- the command-line tool: subcommand dispatch, `version` and the top-level help.
 * The tool uses only the public API (include/infllm.h). Exit codes: 0 ok, 1 failure, 2 usage.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: infllm <command> [options]      (infllm <command> --help for its options)\n"
    "\n"
    "InfLLM-V2 dense-sparse switchable attention (arXiv 2509.24663).\n"
    "\n"
    "commands:\n"
    "  demo      a synthetic long-context case with planted needle blocks: dense vs sparse\n"
    "  attn      attention forward on .npy files (selection, sparse or dense)\n"
    "  grad      attention backward on .npy files\n"
    "  bench     time dense vs sparse attention (decode, prefill, backward) on synthetic inputs\n"
    "  run       generate text with a MiniCPM4 checkpoint (tokenizer, chat template, sampling)\n"
    "  model-init  write a randomly initialised MiniCPM4 checkpoint (tiny, 0.5b, 8b shapes)\n"
    "  logits    run a checkpoint over token ids, write the logits of every position (.npy)\n"
    "  version   print the library version and the backends of this build\n";

static int cmd_version(int argc, char **argv) {
    struct cli_opt none[1];
    int            rc = cli_parse("version", argc, argv, 2, none, 0);
    if (rc == CLI_HELP) {
        printf("usage: infllm version\n\nPrints the library version and the backends of this build.\n");
        return CLI_OK;
    }
    if (rc != CLI_OK) return rc;
    printf("infllm %s (backends:", ifl_version());
    const enum ifl_backend all[] = {IFL_BACKEND_REF, IFL_BACKEND_CPU, IFL_BACKEND_CUDA};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (ifl_backend_available(all[i])) printf(" %s", ifl_backend_name(all[i]));
    printf(")\n");
    return CLI_OK;
}

/* Checkpoints are memory-mapped (runtime/safetensors.c): a file truncated while the tool runs
 * makes a later read of its pages raise SIGBUS. The tool's stance (docs/model.md): replace a
 * checkpoint by renaming a new file over it (the running process keeps the old one), never
 * rewrite it in place; if it happens anyway, say so and exit 1 instead of dumping core. */
static void on_sigbus(int sig) {
    (void)sig;
    static const char msg[] = "infllm: a memory-mapped input file (a checkpoint) was truncated or changed "
                              "while in use (SIGBUS); replace checkpoints by renaming, not in place\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
    _exit(CLI_FAILURE);
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigaction(SIGBUS, &sa, NULL);
    if (argc < 2) {
        fputs(usage, stderr);
        return CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return CLI_OK;
    }
    if (strcmp(cmd, "attn") == 0) return cmd_attn(argc, argv, 0);
    if (strcmp(cmd, "grad") == 0) return cmd_attn(argc, argv, 1);
    if (strcmp(cmd, "demo") == 0) return cmd_demo(argc, argv);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc, argv);
    if (strcmp(cmd, "model-init") == 0) return cmd_model_init(argc, argv);
    if (strcmp(cmd, "logits") == 0) return cmd_logits(argc, argv);
    if (strcmp(cmd, "run") == 0) return cmd_run(argc, argv);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) return cmd_version(argc, argv);
    fprintf(stderr, "infllm: unknown command '%s'\n\n%s", cmd, usage);
    return CLI_USAGE;
}
