/* test.h — the tiny unit-test harness: TEST(name) registers a test, CHECK* fail it.
 *
 *   TEST(rng_is_reproducible) { ... CHECK(a == b); CHECK_NEAR(x, 1.0, 1e-6); }
 *
 * All test files link into one runner (tests/main.c) that runs every test, or those whose
 * name contains argv[1], and prints one line per test and "N passed, N failed".
 */
#ifndef AF_TEST_H
#define AF_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*t_fn)(void);
void t_register(const char *name, const char *file, t_fn fn);
void t_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int t_failed(void); /* has the current test failed already? */
/* Path of a fixture under tests/fixtures (static buffer). */
const char *t_fixture(const char *name);
/* A fresh empty directory for this test's files (static buffer), removed at the end of the run. */
const char *t_tmpdir(void);

#define TEST(name)                                                                         \
    static void name(void);                                                                \
    __attribute__((constructor)) static void t_reg_##name(void) { t_register(#name, __FILE__, name); } \
    static void name(void)

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            t_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                \
            return;                                                                        \
        }                                                                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                                               \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            t_fail(__FILE__, __LINE__, __VA_ARGS__);                                       \
            return;                                                                        \
        }                                                                                  \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                 \
    do {                                                                                   \
        long long t_a = (long long)(a), t_b = (long long)(b);                              \
        if (t_a != t_b) {                                                                  \
            t_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, t_a, t_b);        \
            return;                                                                        \
        }                                                                                  \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                              \
    do {                                                                                   \
        double t_a = (double)(a), t_b = (double)(b);                                       \
        if (!(fabs(t_a - t_b) <= (tol))) {                                                 \
            t_fail(__FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (tol %g)", #a, #b, t_a, t_b,  \
                   (double)(tol));                                                         \
            return;                                                                        \
        }                                                                                  \
    } while (0)

/* Every element of a[n] within atol + rtol*|b| of b[n]. */
#define CHECK_ALLCLOSE(a, b, n, rtol, atol)                                                \
    do {                                                                                   \
        size_t t_i = t_allclose((a), (b), (n), (rtol), (atol));                            \
        if (t_i != (size_t)-1) {                                                           \
            t_fail(__FILE__, __LINE__, "%s ~ %s at [%zu]: %.9g vs %.9g", #a, #b, t_i,        \
                   (double)(a)[t_i], (double)(b)[t_i]);                                    \
            return;                                                                        \
        }                                                                                  \
    } while (0)

#include <stddef.h>
/* Index of the first element out of tolerance, or (size_t)-1. */
size_t t_allclose(const float *a, const float *b, size_t n, double rtol, double atol);

#endif
