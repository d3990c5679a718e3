/* SPDX-License-Identifier: MIT
 *
 * cli.h -- what the subcommands of the `infllm` tool share: option parsing, the sparse-config
 * flags, and the exit-code convention (0 ok, 1 failure, 2 usage error).
 */
#ifndef INFLLM_CLI_H
#define INFLLM_CLI_H

#include "infllm.h"

#define CLI_OK      0
#define CLI_FAILURE 1
#define CLI_USAGE   2
#define CLI_HELP    3 /* --help was asked for: print usage, exit 0 */

enum cli_kind { CLI_STR, CLI_INT, CLI_REAL, CLI_FLAG };

/* One option "--name VALUE" (or "--name=VALUE"; CLI_FLAG takes no value). */
struct cli_opt {
    const char   *name;
    enum cli_kind kind;
    void         *dst;     /* const char **, long long *, double * or int * */
    long long     min_int; /* accepted range of a CLI_INT */
    long long     max_int;
    int           seen;
};

/* Parses argv[first..argc) into opts. On a problem prints "infllm <cmd>: ..." to stderr and
 * returns CLI_USAGE; returns CLI_HELP for -h/--help; else CLI_OK. */
int cli_parse(const char *cmd, int argc, char **argv, int first, struct cli_opt *opts, int n_opts);

/* The sparse-config flags shared by attn, grad, demo and bench. Limits: block, kernel and coarse
 * sizes and strides, topk and init-blocks at most CLI_MAX_SPARSE_SIZE (sizes >= 1, init-blocks
 * >= 0), window 0..CLI_MAX_LENGTH, dense-len -1..CLI_MAX_LENGTH; anything else is a usage error
 * (a negative value never means a default). Coarse sizes not given (0) are 4x the fine kernel's
 * (MiniCPM4.1's rule). */
#define CLI_MAX_SPARSE_SIZE (1LL << 20)
#define CLI_MAX_LENGTH      (1LL << 40)
struct cli_sparse_flags {
    long long block_size, kernel_size, kernel_stride, coarse_kernel_size, coarse_kernel_stride;
    long long init_blocks, window, topk, dense_len;
    const char *lse_mode;
    double      scale;
};

void cli_sparse_flags_default(struct cli_sparse_flags *f);

/* Appends the options of f to opts (returns how many were added, at most CLI_SPARSE_N_OPTS). */
#define CLI_SPARSE_N_OPTS 11
int cli_sparse_opts(struct cli_sparse_flags *f, struct cli_opt *opts);

/* Turns the flags into a checked config; prints the problem and returns CLI_USAGE if invalid. */
int cli_sparse_config(const char *cmd, const struct cli_sparse_flags *f, struct ifl_sparse_config *cfg);

/* Text of the sparse-config flags for --help. */
extern const char cli_sparse_help[];

/* Parses --backend NAME; prints the problem and returns CLI_USAGE if unknown or not built. */
int cli_backend(const char *cmd, const char *name, enum ifl_backend *out);

/* ifl_ctx_create; on failure prints why (an INFLLM_SIMD value or a simd level the cpu backend
 * refuses, else the status) and returns CLI_USAGE for UNSUPPORTED/INVALID_ARG, else CLI_FAILURE. */
int cli_ctx_create(const char *cmd, const struct ifl_ctx_params *p, struct ifl_ctx **out);

/* Prints "infllm <cmd>: <message>" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Monotonic wall clock in seconds. */
double cli_now(void);

int cmd_attn(int argc, char **argv, int grad);
int cmd_demo(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* the model runtime's commands (runtime/): cmd_model_init.c, cmd_logits.c, cmd_run.c (text
 * generation: tokenizer, sampling, chat), cmd_bench_model.c (`infllm bench --model`) */
int cmd_model_init(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench_model(int argc, char **argv);

#endif /* INFLLM_CLI_H */
