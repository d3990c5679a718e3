/* SPDX-License-Identifier: MIT
 *
 * bench_report.c -- the reporting of `infllm bench` (bench.h): the progress line on stderr, the
 * machine description, the table header and rows, and one JSON object per case.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"
#include "cli.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

const char *const bench_op_labels[N_OPS]      = {"decode", "prefill", "backward", "decode_cache"};
const char *const bench_input_names[N_INPUTS] = {"random", "correlated"};

/* ---- output helpers ---- */

int bench_stderr_tty;

/* Progress on stderr: on a terminal one line overwritten in place, elsewhere only the `line` ones,
 * one per line. */
void bench_progress(int line, const char *fmt, ...) {
    static double last;
    if (!line) { /* phase updates: terminal only, at most 4 a second */
        if (!bench_stderr_tty || cli_now() - last < 0.25) return;
    }
    last = cli_now();
    va_list ap;
    va_start(ap, fmt);
    if (bench_stderr_tty) fputs("\r\033[K", stderr);
    fputs("infllm bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (!bench_stderr_tty) fputc('\n', stderr);
    fflush(stderr);
}

void bench_progress_clear(void) {
    if (bench_stderr_tty) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* A number, or null when it is not finite (no NaN/Infinity in JSON). */
static void json_num(FILE *f, const char *key, double v) {
    fprintf(f, ",\"%s\":", key);
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

const char *bench_size_str(long long n, char *buf, size_t len) {
    if (n >= 1024 && n % 1024 == 0)
        snprintf(buf, len, "%lldK", n / 1024);
    else
        snprintf(buf, len, "%lld", n);
    return buf;
}

/* ---- the machine ---- */

void bench_machine_info(struct machine *m) {
    time_t    now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv) == NULL || strftime(m->date, sizeof m->date, "%Y-%m-%d %H:%M UTC", &tmv) == 0)
        snprintf(m->date, sizeof m->date, "?");
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(m->arch, sizeof m->arch, "%s", u.machine);
    else
        snprintf(m->arch, sizeof m->arch, "?");
    snprintf(m->cpu, sizeof m->cpu, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            /* x86: "model name"; some ARM kernels: "Model" or "Hardware" */
            if (strncmp(line, "model name", 10) == 0 || strncmp(line, "Model", 5) == 0 ||
                strncmp(line, "Hardware", 8) == 0) {
                char *c = strchr(line, ':');
                if (c == NULL) continue;
                c++;
                while (*c == ' ' || *c == '\t') c++;
                size_t len = strcspn(c, "\r\n");
                while (len > 0 && (c[len - 1] == ' ' || c[len - 1] == '\t')) len--;
                if (len > 0) snprintf(m->cpu, sizeof m->cpu, "%.*s", (int)len, c);
                break;
            }
        }
        fclose(f);
    }
    m->n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
}

/* ---- the table and JSON ---- */

void bench_print_header(struct bench *b) {
    FILE                           *f = b->tab;
    const struct ifl_sparse_config *c = &b->cfg;
    const int nt = ifl_ctx_threads(b->ctx);
    if (b->device)
        fprintf(f, "infllm bench  %s  host %s, %s (%ld cpus)  backend %s (device memory: inputs uploaded once, each "
                   "timed call followed by ifl_ctx_sync)  libinfllm %s\n",
                b->mach.date, b->mach.arch, b->mach.cpu, b->mach.n_cpus, b->backend_name, ifl_version());
    else
        fprintf(f, "infllm bench  %s  %s, %s (%ld cpus)  backend %s, simd %s, %d thread%s  libinfllm %s\n",
                b->mach.date, b->mach.arch, b->mach.cpu, b->mach.n_cpus, b->backend_name,
                ifl_simd_name(ifl_ctx_simd(b->ctx)), nt, nt == 1 ? "" : "s", ifl_version());
    fprintf(f,
            "shape: %lld query heads, %lld KV heads, head dim %lld, %s storage (outputs %s, lse f32); sparse: block %d, "
            "kernels %d/%d + %d/%d (lse %s), init %d, window %d, topk %d\n",
            (long long)b->hq, (long long)b->hkv, (long long)b->d, ifl_dtype_name(b->dtype), ifl_dtype_name(b->dtype),
            c->block_size, c->kernel_size, c->kernel_stride, c->coarse_kernel_size, c->coarse_kernel_stride,
            c->lse_mode == IFL_LSE_APPROX ? "approx" : "exact", c->init_blocks, c->window_size, c->topk);
    if (b->runs > 0)
        fprintf(f, "time: median of %lld runs after 1 warm-up.", b->runs);
    else
        fprintf(f, "time: median of 5 (decode, cache) / 3 (prefill, backward) runs after 1 warm-up; 1 run when the "
                   "warm-up took > 2 s, the warm-up alone when > 10 s.");
    fprintf(f, " sparse = select + attend timed together; ratio = dense / sparse.\n");
    fprintf(f, "decode_cache: one decode step through a KV cache of N-1 tokens, ifl_kv_cache_append of token N-1 + "
               "ifl_kv_cache_attn of its query (dense: dense_len N+1, sparse: dense_len -1; both stages in the one "
               "call, so no select/attend); (append) = the append alone, part of both.\n");
    fprintf(f, "GFLOP/s: dense 4*Hq*D*(p+1) per query at position p; select 2*Hq*D*(visible fine+coarse compressed "
               "keys) per query; attend 4*D*Hq/Hkv*(keys of each query's selected blocks up to p); backward 2.5x "
               "forward.\n");
    fprintf(f, "GB/s: dense K+V of all N keys + Q + out; select compressed keys + Q (ifl_select's own pass over K, "
               "shown as 'compress', not counted); attend K+V of the union of selected blocks + Q + out; backward "
               "adds dout, dq, dk, dv; decode_cache as decode (the append not counted).\n\n");
    /* a row of group labels centred over their columns, then the column names */
    static const struct {
        const char *label;
        int         width;
    } groups[] = {{"", 36}, {"time, ms (median)", 65}, {"", 7}, {"GFLOP/s", 31}, {"GB/s", 13}, {"selection", 15}};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        int len = (int)strlen(groups[i].label), left = (groups[i].width - len) / 2;
        fprintf(f, "%s%*s%s%*s", i ? " | " : "", left, "", groups[i].label, groups[i].width - len - left, "");
    }
    fputc('\n', f);
    fprintf(f, "%-12s %-10s %6s %5s | %10s %10s %10s %10s %10s %10s | %7s | %7s %7s %7s %7s | %6s %6s | %8s %6s\n",
            "op", "inputs", "keys", "qrys", "dense ms", "sparse ms", "select ms", "(compress)", "attend ms", "(append)",
            "ratio", "dense", "sparse", "select", "attend", "dense", "sparse", "keys/row", "union");
    fflush(f);
}

static double ms(double s) { return s * 1e3; }
static double rate(double amount, double s, double unit) { return s > 0 ? amount / s / unit : NAN; }

/* A GFLOP/s column, 7 wide: one decimal, none from 100000 (a GPU's rates). */
static const char *gflops_str(double v, char *buf, size_t len) {
    snprintf(buf, len, "%7.*f", v >= 99999.95 ? 0 : 1, v);
    return buf;
}

void bench_print_row(struct bench *b, const struct result *r) {
    FILE *f = b->tab;
    char  ks[32], qs[32], g1[32], g2[32], v1[16], v2[16], v3[32], v4[16], v5[16], v6[32], v7[16];
    bench_progress_clear();
    const int has_sel = r->select_s >= 0, has_att = r->attend_s >= 0, has_app = r->append_s >= 0;
    if (has_sel) {
        snprintf(v1, sizeof v1, "%10.3f", ms(r->select_s));
        snprintf(v2, sizeof v2, "%10.3f", ms(r->compress_s));
        gflops_str(rate(r->select_flop, r->select_s, 1e9), v3, sizeof v3);
    } else {
        snprintf(v1, sizeof v1, "%10s", "-");
        snprintf(v2, sizeof v2, "%10s", "-");
        snprintf(v3, sizeof v3, "%7s", "-");
    }
    if (has_att) {
        snprintf(v5, sizeof v5, "%10.3f", ms(r->attend_s));
        gflops_str(rate(r->attend_flop, r->attend_s, 1e9), v6, sizeof v6);
    } else {
        snprintf(v5, sizeof v5, "%10s", "-");
        snprintf(v6, sizeof v6, "%7s", "-");
    }
    if (has_app)
        snprintf(v7, sizeof v7, "%10.3f", ms(r->append_s));
    else
        snprintf(v7, sizeof v7, "%10s", "-");
    snprintf(v4, sizeof v4, "%6.2fx", r->dense_s / r->sparse_s);
    const double gb_d = rate(r->dense_bytes, r->dense_s, 1e9);
    const double gb_s = rate(r->select_bytes + r->attend_bytes, r->sparse_s, 1e9);
    fprintf(f, "%-12s %-10s %6s %5s | %10.3f %10.3f %s %s %s %s | %7s | %s %s %s %s | %6.*f %6.*f | %8.0f %6.3f\n",
            bench_op_labels[r->op], bench_input_names[r->inputs], bench_size_str(r->n_keys, ks, sizeof ks),
            bench_size_str(r->n_queries, qs, sizeof qs), ms(r->dense_s), ms(r->sparse_s), v1, v2, v5, v7, v4,
            gflops_str(rate(r->dense_flop, r->dense_s, 1e9), g1, sizeof g1),
            gflops_str(rate(r->select_flop + r->attend_flop, r->sparse_s, 1e9), g2, sizeof g2), v3, v6,
            gb_d < 10 ? 2 : 1, gb_d, gb_s < 10 ? 2 : 1, gb_s, r->keys_per_row, r->union_frac);
    fflush(f);
}

void bench_print_json(struct bench *b, const struct result *r) {
    FILE                           *f = stdout;
    const struct ifl_sparse_config *c = &b->cfg;
    const int has_sel = r->select_s >= 0, has_att = r->attend_s >= 0, has_app = r->append_s >= 0;
    fputs("{\"op\":", f);
    json_str(f, bench_op_labels[r->op]);
    fputs(",\"inputs\":", f);
    json_str(f, bench_input_names[r->inputs]);
    fputs(",\"backend\":", f);
    json_str(f, b->backend_name);
    fputs(",\"simd\":", f);
    json_str(f, ifl_simd_name(ifl_ctx_simd(b->ctx)));
    fprintf(f, ",\"threads\":%d", ifl_ctx_threads(b->ctx));
    fputs(",\"dtype\":", f);
    json_str(f, ifl_dtype_name(b->dtype));
    fprintf(f, ",\"n_keys\":%lld,\"n_queries\":%lld,\"heads\":%lld,\"kv_heads\":%lld,\"head_dim\":%lld", r->n_keys,
            r->n_queries, (long long)b->hq, (long long)b->hkv, (long long)b->d);
    json_num(f, "dense_ms", ms(r->dense_s));
    json_num(f, "sparse_ms", ms(r->sparse_s));
    json_num(f, "select_ms", has_sel ? ms(r->select_s) : NAN);
    json_num(f, "attend_ms", has_att ? ms(r->attend_s) : NAN);
    json_num(f, "compress_ms", has_sel ? ms(r->compress_s) : NAN);
    json_num(f, "append_ms", has_app ? ms(r->append_s) : NAN);
    json_num(f, "ratio", r->dense_s / r->sparse_s);
    json_num(f, "dense_gflop", r->dense_flop * 1e-9);
    json_num(f, "sparse_gflop", (r->select_flop + r->attend_flop) * 1e-9);
    json_num(f, "select_gflop", has_sel ? r->select_flop * 1e-9 : NAN);
    json_num(f, "attend_gflop", has_att ? r->attend_flop * 1e-9 : NAN);
    json_num(f, "dense_gflops", rate(r->dense_flop, r->dense_s, 1e9));
    json_num(f, "sparse_gflops", rate(r->select_flop + r->attend_flop, r->sparse_s, 1e9));
    json_num(f, "select_gflops", has_sel ? rate(r->select_flop, r->select_s, 1e9) : NAN);
    json_num(f, "attend_gflops", has_att ? rate(r->attend_flop, r->attend_s, 1e9) : NAN);
    json_num(f, "dense_mb", r->dense_bytes * 1e-6);
    json_num(f, "sparse_mb", (r->select_bytes + r->attend_bytes) * 1e-6);
    json_num(f, "dense_gbs", rate(r->dense_bytes, r->dense_s, 1e9));
    json_num(f, "sparse_gbs", rate(r->select_bytes + r->attend_bytes, r->sparse_s, 1e9));
    json_num(f, "select_gbs", has_sel ? rate(r->select_bytes, r->select_s, 1e9) : NAN);
    json_num(f, "attend_gbs", has_att ? rate(r->attend_bytes, r->attend_s, 1e9) : NAN);
    json_num(f, "keys_per_row", r->keys_per_row);
    json_num(f, "union_frac", r->union_frac);
    json_num(f, "cache_mb", r->cache_bytes > 0 ? r->cache_bytes * 1e-6 : NAN);
    fprintf(f, ",\"dense_runs\":%d", r->dense_runs);
    if (has_sel)
        fprintf(f, ",\"select_runs\":%d,\"compress_runs\":%d", r->select_runs, r->compress_runs);
    else
        fputs(",\"select_runs\":null,\"compress_runs\":null", f);
    if (has_att)
        fprintf(f, ",\"attend_runs\":%d", r->attend_runs);
    else
        fputs(",\"attend_runs\":null", f);
    fprintf(f, ",\"sparse_runs\":%d", r->sparse_runs);
    if (has_app)
        fprintf(f, ",\"append_runs\":%d", r->append_runs);
    else
        fputs(",\"append_runs\":null", f);
    fprintf(f,
            ",\"block_size\":%d,\"kernel_size\":%d,\"kernel_stride\":%d,\"coarse_kernel_size\":%d,"
            "\"coarse_kernel_stride\":%d,\"init_blocks\":%d,\"window\":%d,\"topk\":%d,\"lse_mode\":\"%s\"",
            c->block_size, c->kernel_size, c->kernel_stride, c->coarse_kernel_size, c->coarse_kernel_stride,
            c->init_blocks, c->window_size, c->topk, c->lse_mode == IFL_LSE_APPROX ? "approx" : "exact");
    fputs(",\"date\":", f);
    json_str(f, b->mach.date);
    fputs(",\"machine\":", f);
    json_str(f, b->mach.arch);
    fputs(",\"cpu\":", f);
    json_str(f, b->mach.cpu);
    fprintf(f, ",\"n_cpus\":%ld", b->mach.n_cpus);
    fputs(",\"version\":", f);
    json_str(f, ifl_version());
    fputs("}\n", f);
    fflush(f);
}

