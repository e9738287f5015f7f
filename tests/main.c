/* main.c — the unit-test runner: runs registered tests (see test.h), prints one line per test
 * and a final "N passed, N failed" line; exit status 1 if any failed. */
#include "test.h"

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/timer.h"

#define T_MAX 2048

static struct {
    const char *name, *file;
    t_fn fn;
} tests[T_MAX];
static int n_tests;
static int cur_failed;
static char tmp_root[256];
static const char *cur_name;

/* A test that hangs fails the run instead of blocking CI: SIGALRM after T_TIMEOUT seconds. */
#define T_TIMEOUT 300
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL (timeout) in test: ";
    if (write(1, msg, sizeof msg - 1) < 0 || write(1, cur_name, strlen(cur_name)) < 0 ||
        write(1, "\n", 1) < 0)
        _exit(3);
    _exit(3);
}

void t_register(const char *name, const char *file, t_fn fn)
{
    if (n_tests < T_MAX) {
        tests[n_tests].name = name;
        tests[n_tests].file = file;
        tests[n_tests].fn = fn;
        n_tests++;
    }
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    cur_failed = 1;
    fprintf(stdout, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

int t_failed(void) { return cur_failed; }

size_t t_allclose(const float *a, const float *b, size_t n, double rtol, double atol)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= atol + rtol * fabs((double)b[i])))
            return i;
    }
    return (size_t)-1;
}

const char *t_fixture(const char *name)
{
    static char buf[1024];
    const char *root = getenv("AF_TEST_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : "tests/fixtures", name);
    return buf;
}

const char *t_tmpdir(void)
{
    static char buf[512];
    static int seq;
    snprintf(buf, sizeof buf, "%s/t%d", tmp_root, ++seq);
    mkdir(buf, 0700);
    return buf;
}

static int cmp(const void *a, const void *b)
{
    const int *x = a, *y = b;
    int c = strcmp(tests[*x].file, tests[*y].file);
    return c ? c : strcmp(tests[*x].name, tests[*y].name);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int order[T_MAX], passed = 0, failed = 0;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/af-tests.%ld", (long)getpid());
    mkdir(tmp_root, 0700);
    for (int i = 0; i < n_tests; i++)
        order[i] = i;
    qsort(order, (size_t)n_tests, sizeof order[0], cmp);
    for (int k = 0; k < n_tests; k++) {
        int i = order[k];
        if (filter && !strstr(tests[i].name, filter) && !strstr(tests[i].file, filter))
            continue;
        cur_failed = 0;
        cur_name = tests[i].name;
        signal(SIGALRM, on_alarm);
        alarm(T_TIMEOUT);
        double t0 = af_now();
        tests[i].fn();
        alarm(0);
        double dt = af_now() - t0;
        if (cur_failed) {
            failed++;
            printf("FAIL %s (%s)\n", tests[i].name, tests[i].file);
        } else {
            passed++;
            printf("ok   %s (%.2fs)\n", tests[i].name, dt);
        }
        fflush(stdout);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp_root);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
