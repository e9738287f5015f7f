/* test_pool_claimed.c — af_pool_run_claimed: every index runs exactly once (on any thread,
 * with a thread id in range), for 1..4 threads, n below, at and above the thread count,
 * back to back with af_pool_run jobs (the two modes share the wake-up protocol), and when
 * one index is slow the others still all run. Bodies run under the watchdog of watchdog.h
 * so that a deadlock fails its test instead of hanging the suite.
 */
#include "../test.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/pool.h"
#include "watchdog.h"

enum { CMAX_N = 3000 };

typedef struct cjob {
    atomic_int count[CMAX_N];
    atomic_int bad_tid;
    int threads;
    int slow; /* index that sleeps a little (-1: none) */
} cjob;

static void cmark(void *ctx, int i, int tid)
{
    cjob *j = ctx;
    if (i == j->slow) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    atomic_fetch_add(&j->count[i], 1);
    if (tid < 0 || tid >= j->threads)
        atomic_fetch_add(&j->bad_tid, 1);
}

static void plain(void *ctx, int i, int tid)
{
    (void)tid;
    atomic_fetch_add(&((cjob *)ctx)->count[i], 1);
}

#define CFAIL_IF(cond, ...)                                                                    \
    do {                                                                                       \
        if (cond) {                                                                            \
            t_bounded_fail(b, __VA_ARGS__);                                                    \
            goto out;                                                                          \
        }                                                                                      \
    } while (0)

static void claimed_every_index_once(t_bounded *b)
{
    static const int ns[] = {0, 1, 2, 3, 5, 17, 1000, CMAX_N};
    cjob *j = calloc(1, sizeof *j);
    af_pool *p = NULL;
    CFAIL_IF(!j, "out of memory");
    for (int threads = 1; threads <= 4; threads++) {
        p = af_pool_create(threads);
        CFAIL_IF(!p, "af_pool_create(%d) failed", threads);
        for (int rep = 0; rep < 40; rep++)
            for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
                const int n = ns[k];
                memset(j, 0, sizeof *j);
                j->threads = threads;
                j->slow = rep % 4 == 0 && n > 2 ? n / 2 : -1;
                if (rep % 2) /* a fixed-mapping job in between */
                    af_pool_run(p, plain, j, n);
                else
                    af_pool_run_claimed(p, cmark, j, n);
                for (int i = 0; i < n; i++)
                    CFAIL_IF(atomic_load(&j->count[i]) != 1,
                             "threads %d n %d rep %d: index %d ran %d times", threads, n, rep, i,
                             atomic_load(&j->count[i]));
                CFAIL_IF(atomic_load(&j->bad_tid), "threads %d n %d: thread id out of range",
                         threads, n);
            }
        af_pool_free(p);
        p = NULL;
    }
out:
    af_pool_free(p);
    free(j);
}

TEST(pool_claimed_runs_every_index_once) { T_CHECK_BOUNDED(claimed_every_index_once, NULL, 30.0); }
