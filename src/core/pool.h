/* pool.h — a fixed pool of worker threads that run one parallel-for at a time.
 *
 * af_pool_run(pool, fn, ctx, n) calls fn(ctx, i, tid) for every i in [0, n) spread over the
 * threads (the caller is thread 0) and returns when all are done. Which thread runs which
 * i is fixed (i % threads), so work that keeps per-thread state stays deterministic.
 * af_pool_run_claimed does the same but hands each i to whichever thread asks first, so a
 * thread the OS has descheduled delays nothing: for work whose state is kept per i.
 */
#ifndef AF_CORE_POOL_H
#define AF_CORE_POOL_H

typedef struct af_pool af_pool;
typedef void (*af_pool_fn)(void *ctx, int i, int tid);

/* A pool of `threads` (>= 1; 1 means everything runs on the caller). NULL on failure. */
af_pool *af_pool_create(int threads);
void af_pool_free(af_pool *p);
int af_pool_threads(const af_pool *p);
void af_pool_run(af_pool *p, af_pool_fn fn, void *ctx, int n);
void af_pool_run_claimed(af_pool *p, af_pool_fn fn, void *ctx, int n);

#endif
