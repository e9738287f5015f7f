/* pool.c — persistent pthread workers woken per job through a generation counter
 * (see pool.h). Workers spin briefly before sleeping: jobs in a training loop come every
 * few hundred microseconds, and a futex wake-up would cost more than the spin. */
#include "core/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

struct af_pool {
    int threads;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;       /* bumped for each job */
    atomic_int pending;    /* workers still running the current job */
    atomic_int quit;
    af_pool_fn fn;
    void *ctx;
    int n;
};

typedef struct {
    af_pool *p;
    int tid;
} worker_arg;

static void run_share(af_pool *p, int tid)
{
    for (int i = tid; i < p->n; i += p->threads)
        p->fn(p->ctx, i, tid);
}

static void *worker(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    af_pool *p = wa.p;
    /* jobs are numbered from 1: a job started before this thread got here is still seen */
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen &&
               !atomic_load(&p->quit)) {
            if (++spins < 20000)
                continue;
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit))
            return NULL;
        seen = atomic_load(&p->gen);
        run_share(p, wa.tid);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

af_pool *af_pool_create(int threads)
{
    if (threads < 1)
        threads = 1;
    af_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->tids = calloc((size_t)threads, sizeof *p->tids);
    if (!p->tids)
        goto fail;
    for (int t = 1; t < threads; t++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa)
            goto fail;
        wa->p = p;
        wa->tid = t;
        if (pthread_create(&p->tids[t], NULL, worker, wa) != 0) {
            free(wa);
            p->threads = t; /* only these exist: stop them */
            goto fail;
        }
    }
    return p;
fail:
    af_pool_free(p);
    return NULL;
}

void af_pool_free(af_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int t = 1; t < p->threads; t++)
        if (p->tids)
            pthread_join(p->tids[t], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->tids);
    free(p);
}

int af_pool_threads(const af_pool *p) { return p->threads; }

void af_pool_run(af_pool *p, af_pool_fn fn, void *ctx, int n)
{
    if (p->threads == 1 || n <= 1) {
        for (int i = 0; i < n; i++)
            fn(ctx, i, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->pending, p->threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_share(p, 0);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
        sched_yield();
}
