/* SPDX-License-Identifier: MIT
 *
 * threadpool.h -- a small pthreads pool for the cpu backend.
 * cpu_pool_run() hands tasks 0..n-1 to the caller and the workers, which claim them one at a time.
 * Which thread runs a task varies from run to run; results stay bitwise reproducible because
 * every task writes only its own outputs and uses only its thread's scratch, fully overwritten
 * before it is read (no reduction across tasks happens in a thread-dependent order).
 */
#ifndef INFLLM_THREADPOOL_H
#define INFLLM_THREADPOOL_H

#include <stdint.h>

struct cpu_pool;

/* fn(arg, task, thread): thread in [0, n_threads) names the scratch the task may use. */
typedef void (*cpu_task_fn)(void *arg, int64_t task, int thread);

/* n_threads >= 1 (the caller counts as one). Returns 0, or -1 when out of resources. */
int  cpu_pool_create(int n_threads, struct cpu_pool **out);
void cpu_pool_destroy(struct cpu_pool *pool);
int  cpu_pool_threads(const struct cpu_pool *pool);

/* Runs every task and returns when all are done. */
void cpu_pool_run(struct cpu_pool *pool, int64_t n_tasks, cpu_task_fn fn, void *arg);

#endif /* INFLLM_THREADPOOL_H */
