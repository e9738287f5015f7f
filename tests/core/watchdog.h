/* watchdog.h — runs a test body on its own thread with a time limit, so that a deadlock (in
 * the thread pool, say) fails that one test instead of hanging the whole suite.
 *
 * Header-only test helper (static inline). On a timeout the stuck thread and its state are
 * leaked on purpose: nothing can safely free them. Bodies report failure by writing `err`.
 *
 *   static void body(t_bounded *b) { if (bad) t_bounded_fail(b, "what went wrong"); }
 *   TEST(x) { T_CHECK_BOUNDED(body, NULL, 10.0); }
 */
#ifndef AF_TESTS_WATCHDOG_H
#define AF_TESTS_WATCHDOG_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../test.h"
#include "core/timer.h"

typedef struct t_bounded {
    void (*body)(struct t_bounded *);
    void *arg; /* for the body */
    atomic_int done;
    char err[512];
} t_bounded;

/* Records the first failure of a body (later ones are dropped). */
static inline void t_bounded_fail(t_bounded *b, const char *fmt, ...)
{
    if (b->err[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof b->err, fmt, ap);
    va_end(ap);
}

static inline void *t_bounded_main(void *arg)
{
    t_bounded *b = arg;
    b->body(b);
    atomic_store(&b->done, 1);
    return NULL;
}

/* Runs body(arg) on a new thread; 1 if it finished within `seconds` (*out then owns the
 * result, free it), 0 on a timeout (*out is leaked with the thread). */
static inline int t_run_bounded(void (*body)(t_bounded *), void *arg, double seconds,
                                t_bounded **out)
{
    t_bounded *b = calloc(1, sizeof *b);
    pthread_t th;
    *out = b;
    if (!b)
        return 0;
    b->body = body;
    b->arg = arg;
    if (pthread_create(&th, NULL, t_bounded_main, b) != 0) {
        t_bounded_fail(b, "cannot start the test thread");
        return 1;
    }
    double t0 = af_now();
    while (!atomic_load(&b->done) && af_now() - t0 < seconds) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (!atomic_load(&b->done)) {
        pthread_detach(th);
        return 0;
    }
    pthread_join(th, NULL);
    return 1;
}

#define T_CHECK_BOUNDED(body, arg, seconds)                                                    \
    do {                                                                                       \
        t_bounded *tb_;                                                                        \
        int fin_ = t_run_bounded(body, arg, seconds, &tb_);                                    \
        CHECK_MSG(fin_, "%s did not finish within %g s (deadlock?)", #body, (double)(seconds)); \
        int ok_ = tb_->err[0] == 0;                                                            \
        if (!ok_)                                                                              \
            t_fail(__FILE__, __LINE__, "%s", tb_->err);                                        \
        free(tb_);                                                                             \
        if (!ok_)                                                                              \
            return;                                                                            \
    } while (0)

#endif
