/* pool.c — persistent pthread workers woken per job through a generation counter
 * (see pool.h). Workers spin briefly before sleeping: jobs in a training loop come every
 * few tens of microseconds, and a futex wake-up would cost more than the spin. The mutex
 * and condition variable are only touched when a worker actually sleeps.
 *
 * The generation is odd while the caller sets a job up and even while it is open; a
 * worker counts itself in `active` before it reads a job and re-checks the generation, so
 * the caller rewrites the job only once no worker can be reading it. */
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
    atomic_uint gen;       /* 2 per job: odd while the job is being set up */
    atomic_int pending;    /* fixed mapping: workers still running their share */
    atomic_int next;       /* claimed mapping: next index to hand out */
    atomic_int done;       /* claimed mapping: indices finished */
    atomic_int active;     /* workers inside the current job */
    atomic_int sleeping;   /* workers blocked (or about to block) on cv */
    atomic_int quit;
    af_pool_fn fn;
    void *ctx;
    int n;
    int claimed;           /* 1: indices go to whichever thread asks first */
};

typedef struct {
    af_pool *p;
    int tid;
} worker_arg;

/* A spin-wait hint: lets the other hardware thread of a core run (and saves power). */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Runs indices of the open job on thread tid (claimed ones until none are left). */
static void run_job(af_pool *p, int tid)
{
    if (!p->claimed) {
        for (int i = tid; i < p->n; i += p->threads)
            p->fn(p->ctx, i, tid);
        return;
    }
    for (int i; (i = atomic_fetch_add(&p->next, 1)) < p->n;) {
        p->fn(p->ctx, i, tid);
        atomic_fetch_add(&p->done, 1);
    }
}

static int job_open(af_pool *p, unsigned seen, unsigned *g)
{
    *g = atomic_load(&p->gen);
    return *g != seen && !(*g & 1u);
}

static void *worker(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    af_pool *p = wa.p;
    /* jobs are numbered from 2: a job opened before this thread got here is still seen */
    unsigned seen = 0, g;
    for (;;) {
        int spins = 0;
        while (!job_open(p, seen, &g) && !atomic_load(&p->quit)) {
            if (++spins < 20000) {
                cpu_relax();
                continue;
            }
            /* announce the sleep before the last look at gen: the caller opens a job
             * before it reads `sleeping` (both seq_cst), so one of the two sees the other */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleeping, 1);
            while (!job_open(p, seen, &g) && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleeping, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit))
            return NULL;
        atomic_fetch_add(&p->active, 1);
        if (atomic_load(&p->gen) != g) { /* a newer job is being set up: look again */
            atomic_fetch_sub(&p->active, 1);
            continue;
        }
        seen = g;
        run_job(p, wa.tid);
        if (!p->claimed)
            atomic_fetch_sub(&p->pending, 1);
        atomic_fetch_sub(&p->active, 1);
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

/* Waits spinning, then yielding (the other thread may have been descheduled). */
static void wait_until_zero(atomic_int *v)
{
    for (int spins = 0; atomic_load_explicit(v, memory_order_acquire) > 0; spins++) {
        if (spins < 2000)
            cpu_relax();
        else
            sched_yield();
    }
}

/* Sets up and opens a job (see the top of the file). */
static void job_start(af_pool *p, af_pool_fn fn, void *ctx, int n, int claimed)
{
    unsigned g = atomic_load(&p->gen);
    atomic_store(&p->gen, g + 1);
    wait_until_zero(&p->active);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->claimed = claimed;
    atomic_store(&p->pending, p->threads - 1);
    atomic_store(&p->next, 0);
    atomic_store(&p->done, 0);
    atomic_store(&p->gen, g + 2);
    if (atomic_load(&p->sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

void af_pool_run(af_pool *p, af_pool_fn fn, void *ctx, int n)
{
    if (p->threads == 1 || n <= 1) {
        for (int i = 0; i < n; i++)
            fn(ctx, i, 0);
        return;
    }
    job_start(p, fn, ctx, n, 0);
    run_job(p, 0);
    wait_until_zero(&p->pending);
}

void af_pool_run_claimed(af_pool *p, af_pool_fn fn, void *ctx, int n)
{
    if (p->threads == 1 || n <= 1) {
        for (int i = 0; i < n; i++)
            fn(ctx, i, 0);
        return;
    }
    job_start(p, fn, ctx, n, 1);
    run_job(p, 0);
    /* every index is claimed: wait for those still running on other threads */
    for (int spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n; spins++) {
        if (spins < 2000)
            cpu_relax();
        else
            sched_yield();
    }
}
