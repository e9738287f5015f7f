/* timer.c — clocks and resource usage (see timer.h). libc only. */
#define _POSIX_C_SOURCE 200809L
#include "core/timer.h"

#include <sys/resource.h>
#include <time.h>

double af_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

double af_peak_rss_mb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_maxrss / 1024.0;
}
