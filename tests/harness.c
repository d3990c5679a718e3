/* SPDX-License-Identifier: MIT
 *
 * harness.c -- see harness.h.
 */
#include "harness.h"

#include "../runtime/rng.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t    base_seed = 1;
static struct rt_rng rng = {1};
static const char *filter;
static char        current[256];
static int         n_cases, n_failed_cases, current_failed, n_failures;

void th_init(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) base_seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) filter = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--seed N] [--filter SUBSTRING]\n", argv[0]);
            exit(2);
        }
    }
}

static void end_case(void) {
    if (current[0] && current_failed) n_failed_cases++;
    current[0]     = '\0';
    current_failed = 0;
}

int th_case(const char *fmt, ...) {
    end_case();
    char    name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (filter && strstr(name, filter) == NULL) return 0;
    snprintf(current, sizeof current, "%s", name);
    n_cases++;
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the name, mixed with the seed */
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    rt_rng_init(&rng, (h ^ (base_seed * 0x9E3779B97F4A7C15ull)) | 1);
    printf("case %s seed=%llu\n", name, (unsigned long long)base_seed);
    fflush(stdout);
    return 1;
}

int th_check(int cond, const char *file, int line, const char *fmt, ...) {
    if (cond) return 1;
    current_failed = 1;
    n_failures++;
    va_list ap;
    va_start(ap, fmt);
    printf("  FAIL %s (%s:%d): ", current, file, line);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    return 0;
}

int th_report(void) {
    end_case();
    printf("%d cases, %d failed (%d failed checks), seed %llu\n", n_cases, n_failed_cases, n_failures,
           (unsigned long long)base_seed);
    return n_failures ? 1 : 0;
}

double th_uniform(void) { return rt_rng_uniform(&rng); }

double th_normal(void) { return rt_rng_normal(&rng, NULL); }

int64_t th_int(int64_t lo, int64_t hi) { return lo + (int64_t)(th_uniform() * (double)(hi - lo + 1)); }

void th_fill_normal(double *x, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = scale * th_normal();
}

double th_max_abs(const double *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m || isnan(x[i])) m = isnan(x[i]) ? INFINITY : fabs(x[i]);
    return m;
}

double th_max_abs_diff(const double *a, const double *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (e > m || isnan(e)) m = isnan(e) ? INFINITY : e;
    }
    return m;
}
