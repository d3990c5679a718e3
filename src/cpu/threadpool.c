/* SPDX-License-Identifier: MIT
 *
 * threadpool.c -- see threadpool.h. Workers sleep on a condition variable between runs; within a
 * run, tasks are claimed with an atomic counter so uneven tasks (causal rows) balance themselves.
 */
#define _POSIX_C_SOURCE 200809L
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct cpu_pool {
    int             n_threads;
    pthread_t      *workers; /* n_threads - 1 */
    pthread_mutex_t lock;
    pthread_cond_t  wake, done;
    uint64_t        generation; /* bumped for every run */
    int             busy;       /* workers still inside the current run */
    int             quit;
    /* the current run */
    cpu_task_fn     fn;
    void           *arg;
    int64_t         n_tasks;
    atomic_llong    next;
};

struct worker_arg {
    struct cpu_pool *pool;
    int              thread;
};

static void claim_tasks(struct cpu_pool *pool, int thread) {
    for (;;) {
        int64_t t = atomic_fetch_add(&pool->next, 1);
        if (t >= pool->n_tasks) return;
        pool->fn(pool->arg, t, thread);
    }
}

static void *worker_main(void *p) {
    struct worker_arg *wa = p;
    struct cpu_pool   *pool = wa->pool;
    int                thread = wa->thread;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->quit && pool->generation == seen) pthread_cond_wait(&pool->wake, &pool->lock);
        if (pool->quit) break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->lock);
        claim_tasks(pool, thread);
        pthread_mutex_lock(&pool->lock);
        if (--pool->busy == 0) pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

int cpu_pool_create(int n_threads, struct cpu_pool **out) {
    *out                  = NULL;
    struct cpu_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL) return -1;
    pool->n_threads = n_threads < 1 ? 1 : n_threads;
    pool->workers   = calloc((size_t)pool->n_threads, sizeof *pool->workers);
    if (pool->workers == NULL) {
        free(pool);
        return -1;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    atomic_init(&pool->next, 0);
    for (int i = 1; i < pool->n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (wa == NULL) goto fail;
        wa->pool   = pool;
        wa->thread = i;
        if (pthread_create(&pool->workers[i - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            goto fail;
        }
        continue;
    fail:
        pool->n_threads = i; /* join the i - 1 workers started so far */
        cpu_pool_destroy(pool);
        return -1;
    }
    *out = pool;
    return 0;
}

void cpu_pool_destroy(struct cpu_pool *pool) {
    if (pool == NULL) return;
    pthread_mutex_lock(&pool->lock);
    pool->quit = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->workers[i - 1], NULL);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    free(pool->workers);
    free(pool);
}

int cpu_pool_threads(const struct cpu_pool *pool) { return pool->n_threads; }

void cpu_pool_run(struct cpu_pool *pool, int64_t n_tasks, cpu_task_fn fn, void *arg) {
    if (n_tasks <= 0) return;
    if (pool->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->fn      = fn;
    pool->arg     = arg;
    pool->n_tasks = n_tasks;
    atomic_store(&pool->next, 0);
    pool->busy = pool->n_threads - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    claim_tasks(pool, 0);
    pthread_mutex_lock(&pool->lock);
    while (pool->busy > 0) pthread_cond_wait(&pool->done, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}
