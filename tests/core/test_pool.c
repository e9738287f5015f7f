/* test_pool.c — tests for core/pool: every index of a parallel-for runs exactly once, on the
 * thread pool.h promises (i % threads), for 1..4 threads and for n below, at and above the
 * thread count; jobs run back to back, and a job right after af_pool_create, without losing
 * or repeating work. Each body runs under a watchdog (watchdog.h) so that a deadlocked pool
 * fails its test instead of hanging the whole suite.
 */
#include "../test.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/pool.h"
#include "watchdog.h"

enum { MAX_N = 5000 };

typedef struct job {
    atomic_int count[MAX_N];
    atomic_int bad_tid;
    int threads;
    long sum[4]; /* per-thread partial sums: each written by one thread only */
} job;

static void mark(void *ctx, int i, int tid)
{
    job *j = ctx;
    atomic_fetch_add(&j->count[i], 1);
    if (tid < 0 || tid >= j->threads || tid != i % j->threads)
        atomic_fetch_add(&j->bad_tid, 1);
    else
        j->sum[tid] += i;
}

static void job_reset(job *j, int threads)
{
    memset(j, 0, sizeof *j);
    j->threads = threads;
}

#define FAIL_IF(cond, ...)                                                                     \
    do {                                                                                       \
        if (cond) {                                                                            \
            t_bounded_fail(b, __VA_ARGS__);                                                    \
            goto out;                                                                          \
        }                                                                                      \
    } while (0)

static void every_index_once(t_bounded *b)
{
    static const int ns[] = {0, 1, 2, 3, 4, 5, 17, 1000, MAX_N};
    job *j = calloc(1, sizeof *j);
    af_pool *p = NULL;
    FAIL_IF(!j, "out of memory");
    for (int threads = 1; threads <= 4; threads++) {
        p = af_pool_create(threads);
        FAIL_IF(!p, "af_pool_create(%d) failed", threads);
        FAIL_IF(af_pool_threads(p) != threads, "af_pool_threads = %d, want %d", af_pool_threads(p),
                threads);
        for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
            int n = ns[k];
            job_reset(j, threads);
            af_pool_run(p, mark, j, n);
            long want = (long)n * (n - 1) / 2, got = 0;
            for (int i = 0; i < n; i++)
                FAIL_IF(atomic_load(&j->count[i]) != 1, "threads %d n %d: index %d ran %d times",
                        threads, n, i, atomic_load(&j->count[i]));
            FAIL_IF(atomic_load(&j->bad_tid), "threads %d n %d: an index ran on thread != i %% %d",
                    threads, n, threads);
            for (int t = 0; t < threads; t++)
                got += j->sum[t];
            FAIL_IF(got != want, "threads %d n %d: index sum %ld, want %ld", threads, n, got, want);
        }
        af_pool_free(p);
        p = NULL;
    }
out:
    af_pool_free(p);
    free(j);
}

TEST(pool_runs_every_index_once) { T_CHECK_BOUNDED(every_index_once, NULL, 10.0); }

static void many_jobs_in_a_row(t_bounded *b)
{
    /* back-to-back jobs exercise the wake-up protocol; a lost or doubled job shows up as a
     * wrong count */
    job *j = calloc(1, sizeof *j);
    af_pool *p = NULL;
    FAIL_IF(!j, "out of memory");
    for (int threads = 2; threads <= 4; threads++) {
        job_reset(j, threads);
        p = af_pool_create(threads);
        FAIL_IF(!p, "af_pool_create(%d) failed", threads);
        for (int rep = 0; rep < 350; rep++)
            af_pool_run(p, mark, j, 1 + rep % 7); /* also n < threads */
        for (int i = 0; i < 7; i++) {
            int want = 0;
            for (int rep = 0; rep < 350; rep++)
                want += 1 + rep % 7 > i;
            FAIL_IF(atomic_load(&j->count[i]) != want, "threads %d: index %d ran %d times, want %d",
                    threads, i, atomic_load(&j->count[i]), want);
        }
        FAIL_IF(atomic_load(&j->bad_tid), "threads %d: wrong thread ids", threads);
        af_pool_free(p);
        p = NULL;
    }
out:
    af_pool_free(p);
    free(j);
}

TEST(pool_many_jobs_in_a_row) { T_CHECK_BOUNDED(many_jobs_in_a_row, NULL, 10.0); }

static void first_job_after_create(t_bounded *b)
{
    /* a trainer creates its pool and runs the first step at once: the workers may not have
     * started yet when the first job is posted, and must still take part in it */
    job *j = calloc(1, sizeof *j);
    af_pool *p = NULL;
    FAIL_IF(!j, "out of memory");
    for (int rep = 0; rep < 150; rep++) {
        int threads = 2 + rep % 3;
        job_reset(j, threads);
        p = af_pool_create(threads);
        FAIL_IF(!p, "af_pool_create(%d) failed", threads);
        af_pool_run(p, mark, j, 2 * threads);
        for (int i = 0; i < 2 * threads; i++)
            FAIL_IF(atomic_load(&j->count[i]) != 1, "rep %d: index %d ran %d times", rep, i,
                    atomic_load(&j->count[i]));
        af_pool_free(p);
        p = NULL;
    }
out:
    af_pool_free(p);
    free(j);
}

TEST(pool_first_job_right_after_create) { T_CHECK_BOUNDED(first_job_after_create, NULL, 10.0); }

TEST(pool_create_clamps_and_free_null)
{
    af_pool *p = af_pool_create(0); /* documented as >= 1; the implementation clamps */
    CHECK(p != NULL);
    CHECK_EQ_INT(af_pool_threads(p), 1);
    job *j = calloc(1, sizeof *j);
    CHECK(j != NULL);
    job_reset(j, 1);
    af_pool_run(p, mark, j, 3); /* one thread runs inline: no deadlock possible */
    CHECK_EQ_INT(atomic_load(&j->count[2]), 1);
    CHECK_EQ_INT(atomic_load(&j->bad_tid), 0);
    free(j);
    af_pool_free(p);
    af_pool_free(NULL);
}
