/* SPDX-License-Identifier: MIT
 *
 * cli.c -- option parsing and the sparse-config flags shared by the tool's subcommands.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "infllm %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int set_value(const char *cmd, struct cli_opt *o, const char *val) {
    char *end;
    errno = 0;
    switch (o->kind) {
    case CLI_STR: *(const char **)o->dst = val; return CLI_OK;
    case CLI_FLAG: *(int *)o->dst = 1; return CLI_OK;
    case CLI_INT: {
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end != '\0') {
            cli_error(cmd, "--%s expects an integer, got '%s'", o->name, val);
            return CLI_USAGE;
        }
        if (v < o->min_int || v > o->max_int) {
            cli_error(cmd, "--%s %lld is out of range, expected %lld..%lld", o->name, v, o->min_int, o->max_int);
            return CLI_USAGE;
        }
        *(long long *)o->dst = v;
        return CLI_OK;
    }
    case CLI_REAL: {
        double v = strtod(val, &end);
        if (errno || end == val || *end != '\0' || !isfinite(v)) { /* no flag means NaN or Inf */
            cli_error(cmd, "--%s expects a finite number, got '%s'", o->name, val);
            return CLI_USAGE;
        }
        *(double *)o->dst = v;
        return CLI_OK;
    }
    }
    return CLI_USAGE;
}

int cli_parse(const char *cmd, int argc, char **argv, int first, struct cli_opt *opts, int n_opts) {
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) return CLI_HELP;
        if (strncmp(arg, "--", 2) != 0) {
            cli_error(cmd, "unexpected argument '%s' (options start with --; see 'infllm %s --help')", arg, cmd);
            return CLI_USAGE;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t      nlen = eq ? (size_t)(eq - name) : strlen(name);
        struct cli_opt *o = NULL;
        for (int k = 0; k < n_opts; k++)
            if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0) o = &opts[k];
        if (o == NULL) {
            cli_error(cmd, "unknown option '%.*s' (see 'infllm %s --help')", (int)nlen + 2, arg, cmd);
            return CLI_USAGE;
        }
        if (o->seen) {
            cli_error(cmd, "option --%s given twice", o->name);
            return CLI_USAGE;
        }
        o->seen = 1;
        const char *val = NULL;
        if (o->kind == CLI_FLAG) {
            if (eq) {
                cli_error(cmd, "option --%s takes no value", o->name);
                return CLI_USAGE;
            }
        } else if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            cli_error(cmd, "option --%s needs a value", o->name);
            return CLI_USAGE;
        }
        int rc = set_value(cmd, o, val);
        if (rc != CLI_OK) return rc;
    }
    return CLI_OK;
}

void cli_sparse_flags_default(struct cli_sparse_flags *f) {
    struct ifl_sparse_config c = ifl_sparse_config_default();
    f->block_size           = c.block_size;
    f->kernel_size          = c.kernel_size;
    f->kernel_stride        = c.kernel_stride;
    f->coarse_kernel_size   = 0; /* 0: not given, 4 x the fine kernel's */
    f->coarse_kernel_stride = 0;
    f->init_blocks          = c.init_blocks;
    f->window               = c.window_size;
    f->topk                 = c.topk;
    f->dense_len            = c.dense_len;
    f->lse_mode             = "approx";
    f->scale                = 0.0;
}

int cli_sparse_opts(struct cli_sparse_flags *f, struct cli_opt *o) {
    /* the documented limits (cli.h), checked before any arithmetic on the values */
    const long long size = CLI_MAX_SPARSE_SIZE, len = CLI_MAX_LENGTH;
    const struct cli_opt list[CLI_SPARSE_N_OPTS] = {
        {"block-size", CLI_INT, &f->block_size, 1, size, 0},
        {"kernel-size", CLI_INT, &f->kernel_size, 1, size, 0},
        {"kernel-stride", CLI_INT, &f->kernel_stride, 1, size, 0},
        {"coarse-kernel-size", CLI_INT, &f->coarse_kernel_size, 1, size, 0},
        {"coarse-kernel-stride", CLI_INT, &f->coarse_kernel_stride, 1, size, 0},
        {"init-blocks", CLI_INT, &f->init_blocks, 0, size, 0},
        {"window", CLI_INT, &f->window, 0, len, 0},
        {"topk", CLI_INT, &f->topk, 1, size, 0},
        {"dense-len", CLI_INT, &f->dense_len, -1, len, 0},
        {"lse-mode", CLI_STR, &f->lse_mode, 0, 0, 0},
        {"scale", CLI_REAL, &f->scale, 0, 0, 0},
    };
    for (int i = 0; i < CLI_SPARSE_N_OPTS; i++) o[i] = list[i];
    return CLI_SPARSE_N_OPTS;
}

const char cli_sparse_help[] =
    "sparse config (defaults: MiniCPM4.1's):\n"
    "  --block-size N            tokens per KV block (64)\n"
    "  --kernel-size N           tokens per fine compressed key (32)\n"
    "  --kernel-stride N         fine compressed-key stride (16)\n"
    "  --coarse-kernel-size N    tokens per coarse compressed key (4 x kernel size = 128)\n"
    "  --coarse-kernel-stride N  coarse compressed-key stride (4 x kernel stride = 64)\n"
    "  --init-blocks N           leading blocks always selected (1)\n"
    "  --window N                local window in tokens, a multiple of the block size (2048)\n"
    "  --topk N                  dynamic block budget; a row lists topk + window/block blocks (64)\n"
    "  --dense-len N             fewer keys than this run dense; -1 = always sparse (8192)\n"
    "  (sizes 1..2^20, --init-blocks 0..2^20, --window and --dense-len up to 2^40)\n"
    "  --lse-mode approx|exact   stage-1 normaliser over coarse or fine keys (approx)\n"
    "  --scale S                 softmax scale of both stages (1/sqrt(head dim))\n";

int cli_sparse_config(const char *cmd, const struct cli_sparse_flags *f, struct ifl_sparse_config *cfg) {
    *cfg                      = ifl_sparse_config_default();
    cfg->block_size           = (int32_t)f->block_size;
    cfg->kernel_size          = (int32_t)f->kernel_size;
    cfg->kernel_stride        = (int32_t)f->kernel_stride;
    cfg->coarse_kernel_size   = (int32_t)(f->coarse_kernel_size == 0 ? 4 * f->kernel_size : f->coarse_kernel_size);
    cfg->coarse_kernel_stride = (int32_t)(f->coarse_kernel_stride == 0 ? 4 * f->kernel_stride : f->coarse_kernel_stride);
    cfg->init_blocks          = (int32_t)f->init_blocks;
    cfg->window_size          = (int32_t)f->window;
    cfg->topk                 = (int32_t)f->topk;
    cfg->dense_len            = f->dense_len;
    cfg->scale                = f->scale;
    if (strcmp(f->lse_mode, "approx") == 0) {
        cfg->lse_mode = IFL_LSE_APPROX;
    } else if (strcmp(f->lse_mode, "exact") == 0) {
        cfg->lse_mode = IFL_LSE_EXACT;
    } else {
        cli_error(cmd, "--lse-mode '%s' is not one of approx, exact", f->lse_mode);
        return CLI_USAGE;
    }
    struct ifl_ctx       *ctx = NULL;
    struct ifl_ctx_params p   = ifl_ctx_params_default();
    if (ifl_ctx_create(&p, &ctx) != IFL_STATUS_OK) {
        cli_error(cmd, "cannot create a context");
        return CLI_FAILURE;
    }
    int rc = CLI_OK;
    if (ifl_sparse_config_check(ctx, cfg) != IFL_STATUS_OK) {
        /* the library names config fields (block_size); the flags spell them --block-size */
        cli_error(cmd, "invalid sparse config flags: %s", ifl_ctx_errmsg(ctx));
        rc = CLI_USAGE;
    }
    ifl_ctx_destroy(ctx);
    return rc;
}

int cli_ctx_create(const char *cmd, const struct ifl_ctx_params *p, struct ifl_ctx **out) {
    enum ifl_status st = ifl_ctx_create(p, out);
    if (st == IFL_STATUS_OK) return CLI_OK;
    char          why[256] = "";
    enum ifl_simd simd;
    if (p->backend == IFL_BACKEND_CPU && ifl_simd_resolve(p->simd, &simd, why, sizeof why) != IFL_STATUS_OK)
        cli_error(cmd, "cannot create a cpu context: %s", why);
    else
        cli_error(cmd, "cannot create a %s context (%d threads): %s%s", ifl_backend_name(p->backend), p->n_threads,
                  ifl_status_str(st), p->backend == IFL_BACKEND_CUDA ? " (no usable GPU?)" : "");
    return st == IFL_STATUS_UNSUPPORTED || st == IFL_STATUS_INVALID_ARG ? CLI_USAGE : CLI_FAILURE;
}

int cli_backend(const char *cmd, const char *name, enum ifl_backend *out) {
    static const enum ifl_backend all[] = {IFL_BACKEND_REF, IFL_BACKEND_CPU, IFL_BACKEND_CUDA};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, ifl_backend_name(all[i])) == 0) {
            if (!ifl_backend_available(all[i])) {
                char list[64] = "";
                for (size_t j = 0; j < sizeof all / sizeof all[0]; j++)
                    if (ifl_backend_available(all[j]))
                        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "",
                                 ifl_backend_name(all[j]));
                cli_error(cmd, "--backend %s is not available in this build (available: %s)", name, list);
                return CLI_USAGE;
            }
            *out = all[i];
            return CLI_OK;
        }
    cli_error(cmd, "--backend '%s' is not one of ref, cpu, cuda", name);
    return CLI_USAGE;
}
