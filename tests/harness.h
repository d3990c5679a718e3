/* SPDX-License-Identifier: MIT
 *
 * harness.h -- the small test harness every C test uses: named cases with their seeds, a
 * seeded Gaussian source, comparisons, and an exit code that fails the build on any failure.
 *
 *   th_case("SPARSE_FWD(Tq=%d)", tq);     // starts a case: prints its name and the seed
 *   TH_CHECK(err < tol, "err %g", err);   // records and prints a failure, returns the condition
 *   return th_report();                   // summary; non-zero exit status on any failure
 *
 * Every test program takes --seed N (default 1) and --filter SUBSTRING (run matching cases).
 */
#ifndef INFLLM_HARNESS_H
#define INFLLM_HARNESS_H

#include <stdint.h>

/* Parses --seed and --filter. */
void th_init(int argc, char **argv);

/* Starts a case. Returns 0 when --filter excludes it (skip its body). Reseeds the generator
 * from the base seed and the case name, so each case reproduces on its own. */
int th_case(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Records a failure of the current case when cond is 0; returns cond. */
int th_check(int cond, const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
#define TH_CHECK(cond, ...) th_check((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)

/* Prints the summary; returns the process exit status (1 on any failure). */
int th_report(void);

/* Seeded generator (xorshift64*): uniform in [0, 1), standard normal, integer in [lo, hi]. */
double  th_uniform(void);
double  th_normal(void);
int64_t th_int(int64_t lo, int64_t hi);
void    th_fill_normal(double *x, int64_t n, double scale);

double th_max_abs(const double *x, int64_t n);
double th_max_abs_diff(const double *a, const double *b, int64_t n);

#endif /* INFLLM_HARNESS_H */
