/* timer.h — monotonic wall clock in seconds, and peak RSS; for progress lines and metrics. */
#ifndef AF_CORE_TIMER_H
#define AF_CORE_TIMER_H

/* Seconds from an arbitrary fixed point (CLOCK_MONOTONIC). */
double af_now(void);
/* Peak resident set size of this process in MiB (getrusage). */
double af_peak_rss_mb(void);

#endif
