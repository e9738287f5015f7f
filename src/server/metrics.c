/* metrics.c — Prometheus text rendering of srv_metrics (see metrics.h). */
#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const round_names[SRV_ROUND_N] = {"opened", "committed", "abandoned"};
static const char *const checkin_names[SRV_CHECKIN_N] = {"train", "wait"};
static const char *const report_names[SRV_REPORT_N] = {
    "accepted", "bad_safetensors", "bad_shape", "non_finite", "over_norm", "bad_field",
    "duplicate", "late", "wrong_round", "forbidden", "not_found", "too_large",
    "bad_content_type", "unauthorized", "internal"};
/* upper bounds in seconds of the latency buckets (the last one is +Inf) */
static const double lat_le[SRV_LAT_BUCKETS - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                   0.05,   0.1,   0.25,   0.5,   1,    2.5, 10};

int srv_metrics_report_index(const char *code)
{
    for (int i = 0; i < SRV_REPORT_N; i++)
        if (strcmp(code, report_names[i]) == 0)
            return i;
    return SRV_REPORT_INTERNAL;
}

void srv_metrics_latency(srv_metrics *m, double seconds)
{
    int b = 0;
    while (b < SRV_LAT_BUCKETS - 1 && seconds > lat_le[b])
        b++;
    atomic_fetch_add(&m->lat_bucket[b], 1);
    atomic_fetch_add(&m->lat_sum_ns, (unsigned long long)(seconds * 1e9));
    atomic_fetch_add(&m->requests, 1);
}

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} sbuf;

static void put(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *s, const char *fmt, ...)
{
    if (s->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            s->oom = 1;
            return;
        }
        if ((size_t)n < s->cap - s->len) {
            s->len += (size_t)n;
            return;
        }
        size_t cap = 2 * s->cap + (size_t)n;
        char *b = realloc(s->buf, cap);
        if (!b) {
            s->oom = 1;
            return;
        }
        s->buf = b;
        s->cap = cap;
    }
}

char *srv_metrics_render(srv_metrics *m, long long devices, size_t *len)
{
    sbuf s = {malloc(4096), 0, 4096, 0};
    if (!s.buf)
        return NULL;
    put(&s, "# HELP artificien_rounds_total Round attempts by transition.\n"
            "# TYPE artificien_rounds_total counter\n");
    for (int i = 0; i < SRV_ROUND_N; i++)
        put(&s, "artificien_rounds_total{state=\"%s\"} %llu\n", round_names[i],
            atomic_load(&m->rounds[i]));
    put(&s, "# HELP artificien_rounds_open Round attempts open now.\n"
            "# TYPE artificien_rounds_open gauge\nartificien_rounds_open %lld\n",
        atomic_load(&m->rounds_open));
    put(&s, "# HELP artificien_checkins_total Device check-ins by the action answered.\n"
            "# TYPE artificien_checkins_total counter\n");
    for (int i = 0; i < SRV_CHECKIN_N; i++)
        put(&s, "artificien_checkins_total{action=\"%s\"} %llu\n", checkin_names[i],
            atomic_load(&m->checkins[i]));
    put(&s, "# HELP artificien_reports_total Update reports: accepted, or the refusal code.\n"
            "# TYPE artificien_reports_total counter\n");
    for (int i = 0; i < SRV_REPORT_N; i++)
        put(&s, "artificien_reports_total{result=\"%s\"} %llu\n", report_names[i],
            atomic_load(&m->reports[i]));
    put(&s, "# HELP artificien_bytes_total HTTP body bytes.\n"
            "# TYPE artificien_bytes_total counter\n"
            "artificien_bytes_total{direction=\"in\"} %llu\n"
            "artificien_bytes_total{direction=\"out\"} %llu\n",
        atomic_load(&m->bytes_in), atomic_load(&m->bytes_out));
    put(&s, "# HELP artificien_devices Enrolled devices.\n"
            "# TYPE artificien_devices gauge\nartificien_devices %lld\n", devices);
    put(&s, "# HELP artificien_request_seconds Request latency, first byte to response.\n"
            "# TYPE artificien_request_seconds histogram\n");
    unsigned long long cum = 0;
    for (int b = 0; b < SRV_LAT_BUCKETS; b++) {
        cum += atomic_load(&m->lat_bucket[b]);
        if (b < SRV_LAT_BUCKETS - 1)
            put(&s, "artificien_request_seconds_bucket{le=\"%g\"} %llu\n", lat_le[b], cum);
        else
            put(&s, "artificien_request_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    put(&s, "artificien_request_seconds_sum %.9f\nartificien_request_seconds_count %llu\n",
        atomic_load(&m->lat_sum_ns) * 1e-9, cum);
    if (s.oom) {
        free(s.buf);
        return NULL;
    }
    *len = s.len;
    return s.buf;
}
