/* metrics.h — the coordinator's counters and latency histogram, rendered as Prometheus text.
 *
 * Layer `server`: core only. Every counter is a C11 atomic, so request threads update them
 * without a lock; the text is a snapshot (counters are monotonic, each read on its own).
 */
#ifndef AF_SERVER_METRICS_H
#define AF_SERVER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

/* Round transitions counted by artificien_rounds_total{state}. */
enum { SRV_ROUND_OPENED, SRV_ROUND_COMMITTED, SRV_ROUND_ABANDONED, SRV_ROUND_N };
/* Check-in outcomes: artificien_checkins_total{action}. */
enum { SRV_CHECKIN_TRAIN, SRV_CHECKIN_WAIT, SRV_CHECKIN_N };
/* Report results: artificien_reports_total{result} — "accepted" or the refusal code. */
enum {
    SRV_REPORT_ACCEPTED, SRV_REPORT_BAD_SAFETENSORS, SRV_REPORT_BAD_SHAPE, SRV_REPORT_NON_FINITE,
    SRV_REPORT_OVER_NORM, SRV_REPORT_BAD_FIELD, SRV_REPORT_DUPLICATE, SRV_REPORT_LATE,
    SRV_REPORT_WRONG_ROUND, SRV_REPORT_FORBIDDEN, SRV_REPORT_NOT_FOUND, SRV_REPORT_TOO_LARGE,
    SRV_REPORT_BAD_CONTENT_TYPE, SRV_REPORT_UNAUTHORIZED, SRV_REPORT_INTERNAL, SRV_REPORT_N
};
#define SRV_LAT_BUCKETS 14

typedef struct srv_metrics {
    atomic_ullong rounds[SRV_ROUND_N];
    atomic_ullong checkins[SRV_CHECKIN_N];
    atomic_ullong reports[SRV_REPORT_N];
    atomic_ullong bytes_in, bytes_out;
    atomic_ullong requests;
    atomic_ullong lat_bucket[SRV_LAT_BUCKETS]; /* non-cumulative; rendered cumulative */
    atomic_ullong lat_sum_ns;
    atomic_llong rounds_open;                  /* gauge */
} srv_metrics;

/* The report-result index of an error code ("over_norm" → SRV_REPORT_OVER_NORM);
 * SRV_REPORT_INTERNAL when unknown. */
int srv_metrics_report_index(const char *code);
void srv_metrics_latency(srv_metrics *m, double seconds);
/* Renders Prometheus text exposition format into a malloc'd string (*len bytes; caller frees).
 * devices: enrolled devices (a gauge). NULL on out of memory. */
char *srv_metrics_render(srv_metrics *m, long long devices, size_t *len);

#endif
