/* SPDX-License-Identifier: MIT
 *
 * bench.h -- what the parts of `infllm bench` share: the run's state (struct bench), the tensors
 * of one case, a case's result, the case runners (bench_run.c) and the reporting (bench_report.c:
 * progress line, table, JSON, machine). cmd_bench.c parses the options, allocates and generates
 * the inputs (synth.c) and runs the cases in order.
 */
#ifndef INFLLM_BENCH_H
#define INFLLM_BENCH_H

#include "infllm.h"

#include <stdint.h>
#include <stdio.h>

#define MAX_RUNS 100

enum { OP_DECODE, OP_PREFILL, OP_BACKWARD, OP_CACHE, N_OPS };
enum { IN_RANDOM, IN_CORRELATED, N_INPUTS };
extern const char *const bench_op_labels[N_OPS];      /* output: "decode", ..., "decode_cache" */
extern const char *const bench_input_names[N_INPUTS]; /* "random", "correlated" (also --inputs) */

struct machine {
    char date[64], arch[80], cpu[256];
    long n_cpus;
};

struct bench {
    const char              *cmd;
    struct ifl_ctx          *ctx;
    struct ifl_sparse_config cfg;
    enum ifl_dtype           dtype;
    size_t                   es;
    int64_t                  hq, hkv, d, chunk; /* chunk: queries of prefill/backward */
    long long                runs;              /* 0 = the defaults */
    int                      json;
    FILE                    *tab; /* the table: stdout, or stderr with --json */
    struct machine           mach;
    const char              *backend_name;
    int                      device;   /* the backend computes on device memory (cuda) */
    unsigned                 uploaded; /* the inputs (slot bits, INPUT_SLOT) now in device memory */
    /* The buffers the ops see: host memory on host backends, the backend's memory on a device
     * backend (ifl_buffer_alloc). inputs: k and q per kind (NULL when not asked for), v and dout
     * shared */
    void *k[N_INPUTS], *q[N_INPUTS], *v, *dout;
    /* outputs */
    void    *out, *out2, *c1, *c2, *dq, *dk, *dv;
    float   *lse, *lse2;
    int32_t *sel;
    /* host memory */
    int32_t *sel_host; /* the selection where the host reads it (sel itself on host backends) */
    uint8_t *seen;     /* block bitmap for the union count */
};

/* The tensors of one case. */
struct views {
    struct ifl_tensor q, k, v, out, lse, out2, lse2, sel, c1, c2, dout, dq, dk, dv;
    int               has_c1, has_c2;
};

struct result {
    int       op, inputs;
    long long n_keys, n_queries;
    double    dense_s, compress_s, select_s, attend_s, sparse_s; /* select/compress/attend < 0: none */
    double    append_s;                                          /* < 0: none (all but the cache op) */
    int       dense_runs, compress_runs, select_runs, attend_runs, sparse_runs, append_runs;
    double    cache_bytes;                                       /* of one cache; 0: none */
    double    dense_flop, select_flop, attend_flop;
    double    dense_bytes, select_bytes, attend_bytes;
    double    keys_per_row, union_frac;
};

/* ---- bench_report.c ---- */

extern int bench_stderr_tty; /* stderr is a terminal: progress is one line rewritten in place */

/* A progress message on stderr: line != 0 for a new phase (always shown; a line of its own when
 * stderr is not a terminal), 0 for updates within one (a terminal only, at most 4 a second). */
void bench_progress(int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void bench_progress_clear(void);

/* "32K" for multiples of 1024, else the number. */
const char *bench_size_str(long long n, char *buf, size_t len);

void bench_machine_info(struct machine *m);
void bench_print_header(struct bench *b);
void bench_print_row(struct bench *b, const struct result *r);
void bench_print_json(struct bench *b, const struct result *r);

/* ---- bench_run.c: one case each (index idx of total, for the progress line); CLI_* ---- */

int bench_run_forward(struct bench *b, int op, int inputs, int64_t n, int idx, int total);
int bench_run_backward(struct bench *b, int inputs, int64_t n, int idx, int total);
int bench_run_cache(struct bench *b, int inputs, int64_t n, int idx, int total);

#endif /* INFLLM_BENCH_H */
