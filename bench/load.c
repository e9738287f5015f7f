/* load.c — load generator for the coordinator (`artificien serve`) on loopback: simulated
 * devices enrol, check in, download the checkpoint and upload an update of the tutorial CNN
 * (32,998 parameters, a 132 KB safetensors body each way), over --connections threads with
 * one keep-alive connection each. Reports accepted updates/s, p50/p99 latency per request
 * and per device cycle, refusals by reason, the coordinator's RSS (/proc/PID/status) and
 * CPU time, and whether every enrolled device checked in without an error.
 *
 *   build/bench-load --server URL --admin-key-file DB.admin-key --enroll-secret-file
 *       DB.enroll-secret --pid PID [--devices 10000] [--connections 32] [--seconds 20]
 *       [--per-round 1000] [--json FILE]
 *
 * Phases: 1. enrol every device; 2. every device checks in once (no project yet: all must be
 * told to wait); 3. an owner creates a project whose plan takes many reports per round
 * (--per-round, short deadline, no evaluation), and the devices run the protocol for
 * --seconds, honouring the server's retry_after. Bench code: prints, exits.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "client/http.h"
#include "client/task.h"
#include "core/err.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "core/timer.h"
#include "nn/model.h"

#define HBINS 1200         /* log-spaced latency bins: 1 µs · 1.02^i */
#define MAX_ATTEMPT_BODIES 16

typedef struct hist {
    uint64_t n;
    uint32_t b[HBINS];
} hist;

static void hist_add(hist *h, double seconds)
{
    double us = seconds * 1e6;
    int i = us <= 1 ? 0 : (int)(log(us) / log(1.02));
    if (i >= HBINS)
        i = HBINS - 1;
    h->b[i]++;
    h->n++;
}

static void hist_merge(hist *d, const hist *s)
{
    d->n += s->n;
    for (int i = 0; i < HBINS; i++)
        d->b[i] += s->b[i];
}

/* The q-quantile in milliseconds (upper edge of its bin: within 2 %). */
static double hist_q(const hist *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->n), acc = 0;
    for (int i = 0; i < HBINS; i++)
        if ((acc += h->b[i]) >= want)
            return pow(1.02, i + 1) / 1000.0;
    return INFINITY;
}

typedef struct dev {
    char token[80];
    char etag[128];
    double next;       /* af_now() time of its next check-in */
} dev;

enum { REF_LATE, REF_DUP, REF_OTHER, REF_N };

typedef struct worker {
    int id;
    size_t lo, hi;     /* its devices [lo, hi) */
    af_rng rng;
    long ok, errors, waits, tasks, accepted, refused[REF_N], down_200, down_304;
    double bytes;
    hist h_checkin, h_down, h_up, h_cycle, h_enrol;
    char first_error[256];
} worker;

static struct {
    const char *url, *secret;
    dev *devs;
    int phase;         /* 1 enrol, 2 check-in sweep, 3 load */
    double end;
    const uint8_t *body[MAX_ATTEMPT_BODIES + 1];
    size_t body_len[MAX_ATTEMPT_BODIES + 1];
} G;

static const char *SCHEMA = "{\"name\":\"fashion-mnist\",\"kind\":\"image\",\"shape\":[1,28,28],\"classes\":10}";

static void note_error(worker *w, const char *what)
{
    w->errors++;
    if (!w->first_error[0])
        snprintf(w->first_error, sizeof w->first_error, "%s", what);
}

static void enrol_one(worker *w, client_http *h, dev *d)
{
    char body[512];
    snprintf(body, sizeof body, "{\"secret\":\"%s\",\"dataset\":%s}", G.secret, SCHEMA);
    client_http_resp r;
    double t0 = af_now();
    if (client_http_request(h, "POST", "/v1/devices", NULL, "application/json", body, strlen(body), NULL, 65536, &r)) {
        note_error(w, af_errmsg());
        return;
    }
    hist_add(&w->h_enrol, af_now() - t0);
    cJSON *j = r.status == 201 ? cJSON_ParseWithLength(r.body, r.len) : NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "token");
    if (cJSON_IsString(t)) {
        snprintf(d->token, sizeof d->token, "%s", t->valuestring);
        w->ok++;
    } else {
        client_http_status_error(&r, "POST", "/v1/devices");
        note_error(w, af_errmsg());
    }
    cJSON_Delete(j);
    client_http_resp_free(&r);
}

/* One device cycle: check in; when given a task, download and upload. */
static void cycle(worker *w, client_http *h, dev *d)
{
    static const char *body = "{\"dataset\":{\"name\":\"fashion-mnist\",\"kind\":\"image\",\"shape\":[1,28,28],"
                              "\"classes\":10},\"conditions\":{\"charging\":true,\"idle\":true,"
                              "\"unmetered\":true},\"caps\":{\"max_params\":1000000,\"max_epochs\":10}}";
    client_http_resp r;
    double t0 = af_now();
    if (client_http_request(h, "POST", "/v1/checkin", d->token, "application/json", body, strlen(body), NULL, (size_t)1 << 20, &r)) {
        note_error(w, af_errmsg());
        d->next = af_now() + 1;
        return;
    }
    double t1 = af_now();
    hist_add(&w->h_checkin, t1 - t0);
    cJSON *j = r.status == 200 ? cJSON_ParseWithLength(r.body, r.len) : NULL;
    if (!j) {
        client_http_status_error(&r, "POST", "/v1/checkin");
        note_error(w, af_errmsg());
        client_http_resp_free(&r);
        d->next = af_now() + 1;
        return;
    }
    client_http_resp_free(&r);
    w->ok++;
    const char *action = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "action"));
    if (action && strcmp(action, "wait") == 0) {
        w->waits++;
        const cJSON *ra = cJSON_GetObjectItemCaseSensitive(j, "retry_after");
        d->next = t1 + (cJSON_IsNumber(ra) ? ra->valuedouble : 1.0);
        cJSON_Delete(j);
        return;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "task");
    const char *ck = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "checkpoint"));
    const char *rep = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "report"));
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(t, "attempt");
    if (!action || strcmp(action, "train") != 0 || !ck || !rep || !cJSON_IsNumber(att) ||
        att->valueint < 1 || att->valueint > MAX_ATTEMPT_BODIES) {
        note_error(w, "check-in: unexpected answer");
        cJSON_Delete(j);
        d->next = t1 + 1;
        return;
    }
    w->tasks++;
    int a = att->valueint;
    char repath[256];
    snprintf(repath, sizeof repath, "%s", rep);
    if (client_http_request(h, "GET", ck, d->token, NULL, NULL, 0, d->etag, (size_t)4 << 20, &r)) {
        note_error(w, af_errmsg());
        cJSON_Delete(j);
        d->next = af_now() + 1;
        return;
    }
    cJSON_Delete(j);
    double t2 = af_now();
    hist_add(&w->h_down, t2 - t1);
    if (r.status == 200) {
        w->down_200++;
        w->bytes += (double)r.len;
        snprintf(d->etag, sizeof d->etag, "%s", r.etag);
    } else if (r.status == 304) {
        w->down_304++;
    } else {
        client_http_status_error(&r, "GET", ck);
        note_error(w, af_errmsg());
    }
    client_http_resp_free(&r);
    if (client_http_request(h, "POST", repath, d->token, "application/octet-stream", G.body[a], G.body_len[a], NULL, 65536, &r)) {
        note_error(w, af_errmsg());
        d->next = af_now() + 1;
        return;
    }
    double t3 = af_now();
    hist_add(&w->h_up, t3 - t2);
    w->bytes += (double)G.body_len[a];
    if (r.status == 200) {
        w->accepted++;
        hist_add(&w->h_cycle, t3 - t0);
    } else if (r.status == 409) {
        char code[64];
        client_http_error(&r, code, sizeof code, NULL, 0);
        w->refused[strcmp(code, "late") == 0 ? REF_LATE : strcmp(code, "duplicate") == 0 ? REF_DUP : REF_OTHER]++;
    } else {
        client_http_status_error(&r, "POST", repath);
        note_error(w, af_errmsg());
    }
    client_http_resp_free(&r);
    d->next = t3; /* check in again at once: the server's pace steering decides */
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    client_http *h;
    if (client_http_create(G.url, 30, &h)) {
        note_error(w, af_errmsg());
        return NULL;
    }
    if (G.phase == 1) {
        for (size_t i = w->lo; i < w->hi; i++)
            enrol_one(w, h, &G.devs[i]);
    } else if (G.phase == 2) {
        for (size_t i = w->lo; i < w->hi; i++) {
            long waits = w->waits, errs = w->errors;
            cycle(w, h, &G.devs[i]);
            if (w->waits == waits && w->errors == errs)
                note_error(w, "check-in sweep: a device was given a task with no project");
        }
    } else {
        /* round robin over this thread's devices, each when its retry_after has passed */
        size_t i = w->lo;
        while (af_now() < G.end) {
            double now = af_now(), soonest = INFINITY;
            size_t k;
            for (k = 0; k < w->hi - w->lo; k++) {
                dev *d = &G.devs[i];
                if (++i == w->hi)
                    i = w->lo;
                if (d->next <= now) {
                    cycle(w, h, d);
                    break;
                }
                if (d->next < soonest)
                    soonest = d->next;
            }
            if (k == w->hi - w->lo && soonest > now) {
                double s = fmin(soonest, G.end) - now;
                struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    client_http_free(h);
    return NULL;
}

static int run_phase(int phase, worker *ws, int nt)
{
    G.phase = phase;
    pthread_t th[256];
    for (int t = 0; t < nt; t++)
        if (pthread_create(&th[t], NULL, run_worker, &ws[t])) {
            fprintf(stderr, "bench-load: cannot start thread %d\n", t);
            return -1;
        }
    for (int t = 0; t < nt; t++)
        pthread_join(th[t], NULL);
    return 0;
}

/* VmRSS / VmHWM (MiB) and utime+stime (s) of a process. */
static void proc_stats(long pid, double *rss, double *hwm, double *cpu)
{
    char path[64], line[256];
    *rss = *hwm = *cpu = 0;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    double kb;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %lf kB", &kb) == 1)
            *rss = kb / 1024;
        if (sscanf(line, "VmHWM: %lf kB", &kb) == 1)
            *hwm = kb / 1024;
    }
    if (f)
        fclose(f);
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if ((f = fopen(path, "r"))) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        char *p = strrchr(buf, ')');
        unsigned long ut, st;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            *cpu = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static char *read_line_file(const char *path)
{
    char *s;
    size_t n;
    if (af_read_file(path, &s, &n)) {
        fprintf(stderr, "bench-load: %s\n", af_errmsg());
        exit(1);
    }
    s[strcspn(s, "\r\n")] = 0;
    return s;
}

/* An owner and a project whose plan takes `per_round` reports per round. Returns 0. */
static int make_project(const char *admin_key, const char *spec_path, int per_round, double deadline)
{
    client_http *h;
    client_http_resp r;
    if (client_http_create(G.url, 30, &h))
        return -1;
    int rc = client_http_request(h, "POST", "/v1/owners", admin_key, "application/json",
                                 "{\"name\":\"bench\"}", 16, NULL, 65536, &r);
    cJSON *j = !rc && r.status == 201 ? cJSON_ParseWithLength(r.body, r.len) : NULL;
    const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "api_key"));
    if (!key) {
        if (!rc)
            client_http_status_error(&r, "POST", "/v1/owners");
        fprintf(stderr, "bench-load: create owner: %s\n", af_errmsg());
        return -1;
    }
    char owner[128];
    snprintf(owner, sizeof owner, "%s", key);
    cJSON_Delete(j);
    client_http_resp_free(&r);
    char *spec;
    size_t n;
    if (af_read_file(spec_path, &spec, &n)) {
        fprintf(stderr, "bench-load: %s\n", af_errmsg());
        return -1;
    }
    size_t cap = n + 1024;
    char *body = malloc(cap);
    snprintf(body, cap,
             "{\"name\":\"load\",\"spec\":%s,\"plan\":{\"rounds\":100000,\"devices_per_round\":%d,"
             "\"min_reports\":1,\"over_selection\":1.0,\"round_deadline_s\":%g,\"local_epochs\":1,"
             "\"eval_every\":0,\"max_update_norm\":1000}}",
             spec, per_round, deadline);
    free(spec);
    rc = client_http_request(h, "POST", "/v1/projects", owner, "application/json", body, strlen(body), NULL, 65536, &r);
    free(body);
    if (rc || r.status != 201) {
        if (!rc)
            client_http_status_error(&r, "POST", "/v1/projects");
        fprintf(stderr, "bench-load: create project: %s\n", af_errmsg());
        return -1;
    }
    client_http_resp_free(&r);
    client_http_free(h);
    return 0;
}

/* The update bodies, one per attempt number: a small random delta with the metadata. */
static int make_bodies(const char *spec_path)
{
    nn_model *m;
    if (nn_model_from_file(spec_path, NULL, &m)) {
        fprintf(stderr, "bench-load: %s\n", af_errmsg());
        return -1;
    }
    float *delta = malloc(sizeof(float) * m->n_params);
    af_rng g;
    af_rng_seed(&g, 3, 0);
    for (size_t i = 0; i < m->n_params; i++)
        delta[i] = (float)(1e-3 * af_rng_normal(&g));
    for (int a = 1; a <= MAX_ATTEMPT_BODIES; a++) {
        client_report rep = {.attempt = a, .num_samples = 100, .loss = 1.0, .steps = 10};
        uint8_t *b;
        if (client_delta_serialize(m, delta, &rep, &b, &G.body_len[a])) {
            fprintf(stderr, "bench-load: %s\n", af_errmsg());
            return -1;
        }
        G.body[a] = b;
    }
    free(delta);
    nn_model_free(m);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-load --server URL --admin-key-file F --enroll-secret-file F --pid PID\n"
                    "       [--devices 10000] [--connections 32] [--seconds 20] [--per-round 1000]\n"
                    "       [--deadline 10] [--spec models/fashion_cnn.json] [--json FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *admin_file = NULL, *secret_file = NULL, *json_path = NULL;
    const char *spec = "models/fashion_cnn.json";
    long pid = 0, devices = 10000;
    int conns = 32, per_round = 1000;
    double seconds = 20, deadline = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--server")) G.url = v;
        else if (!strcmp(a, "--admin-key-file")) admin_file = v;
        else if (!strcmp(a, "--enroll-secret-file")) secret_file = v;
        else if (!strcmp(a, "--pid")) pid = atol(v);
        else if (!strcmp(a, "--devices")) devices = atol(v);
        else if (!strcmp(a, "--connections")) conns = atoi(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--per-round")) per_round = atoi(v);
        else if (!strcmp(a, "--deadline")) deadline = atof(v);
        else if (!strcmp(a, "--spec")) spec = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else usage();
        i++;
    }
    if (!G.url || !admin_file || !secret_file || pid <= 0 || devices < 1 || conns < 1 ||
        conns > 256 || seconds <= 0 || per_round < 1)
        usage();
    if (conns > devices)
        conns = (int)devices;
    char *admin = read_line_file(admin_file);
    G.secret = read_line_file(secret_file);
    if (make_bodies(spec))
        return 1;
    G.devs = calloc((size_t)devices, sizeof *G.devs);
    worker *ws = calloc((size_t)conns, sizeof *ws);
    for (int t = 0; t < conns; t++) {
        ws[t].id = t;
        ws[t].lo = (size_t)devices * t / conns;
        ws[t].hi = (size_t)devices * (t + 1) / conns;
        af_rng_seed(&ws[t].rng, 11, (uint64_t)t);
    }
    printf("bench-load: %s, %ld devices, %d connections, %.0f s of load, %d reports per round, update %zu bytes\n",
           G.url, devices, conns, seconds, per_round, G.body_len[1]);

    /* 1. enrol */
    double t0 = af_now();
    if (run_phase(1, ws, conns))
        return 1;
    double t_enrol = af_now() - t0;
    long enrolled = 0, enrol_err = 0;
    hist he = {0};
    for (int t = 0; t < conns; t++) {
        enrolled += ws[t].ok;
        enrol_err += ws[t].errors;
        hist_merge(&he, &ws[t].h_enrol);
    }
    printf("enrolled %ld devices in %.2f s (%.0f/s, p50 %.2f ms, p99 %.2f ms), %ld errors\n", enrolled,
           t_enrol, enrolled / t_enrol, hist_q(&he, 0.5), hist_q(&he, 0.99), enrol_err);

    /* 2. every device checks in once */
    for (int t = 0; t < conns; t++)
        ws[t].ok = ws[t].errors = ws[t].waits = 0;
    t0 = af_now();
    if (run_phase(2, ws, conns))
        return 1;
    double t_sweep = af_now() - t0;
    long swept = 0, sweep_err = 0;
    hist hc = {0};
    for (int t = 0; t < conns; t++) {
        swept += ws[t].waits;
        sweep_err += ws[t].errors;
        hist_merge(&hc, &ws[t].h_checkin);
        if (ws[t].first_error[0] && sweep_err)
            fprintf(stderr, "  first error: %s\n", ws[t].first_error);
    }
    printf("check-in sweep: %ld of %ld devices checked in without an error in %.2f s (%.0f/s, p50 %.2f ms, p99 %.2f ms), %ld errors\n",
           swept, devices, t_sweep, swept / t_sweep, hist_q(&hc, 0.5), hist_q(&hc, 0.99), sweep_err);

    /* 3. load */
    if (make_project(admin, spec, per_round, deadline))
        return 1;
    for (int t = 0; t < conns; t++) {
        worker *w = &ws[t];
        memset(&w->h_checkin, 0, sizeof w->h_checkin);
        w->ok = w->errors = w->waits = w->tasks = w->accepted = w->down_200 = w->down_304 = 0;
        memset(w->refused, 0, sizeof w->refused);
        w->bytes = 0;
        w->first_error[0] = 0;
    }
    double srss0, shwm0, scpu0, srss, shwm, scpu;
    proc_stats(pid, &srss0, &shwm0, &scpu0);
    double mycpu0 = self_cpu();
    t0 = af_now();
    G.end = t0 + seconds;
    if (run_phase(3, ws, conns))
        return 1;
    double wall = af_now() - t0;
    proc_stats(pid, &srss, &shwm, &scpu);
    double mycpu = self_cpu() - mycpu0;
    long acc = 0, errs = 0, waits = 0, tasks = 0, refused[REF_N] = {0}, d200 = 0, d304 = 0;
    double bytes = 0;
    hist h[4] = {{0}};
    for (int t = 0; t < conns; t++) {
        worker *w = &ws[t];
        acc += w->accepted;
        errs += w->errors;
        waits += w->waits;
        tasks += w->tasks;
        d200 += w->down_200;
        d304 += w->down_304;
        bytes += w->bytes;
        for (int k = 0; k < REF_N; k++)
            refused[k] += w->refused[k];
        hist_merge(&h[0], &w->h_checkin);
        hist_merge(&h[1], &w->h_down);
        hist_merge(&h[2], &w->h_up);
        hist_merge(&h[3], &w->h_cycle);
        if (w->first_error[0] && errs == w->errors)
            fprintf(stderr, "  first error: %s\n", w->first_error);
    }
    double rate = acc / wall;
    printf("load: %ld updates accepted in %.1f s = %.0f accepted updates/s (%ld tasks, %ld waits, "
           "%ld late, %ld duplicate, %ld other refusals, %ld errors), %.0f MB/s on the wire\n",
           acc, wall, rate, tasks, waits, refused[REF_LATE], refused[REF_DUP], refused[REF_OTHER], errs,
           bytes / wall / 1e6);
    static const char *names[4] = {"check-in", "download", "upload", "device cycle"};
    for (int k = 0; k < 4; k++)
        printf("  %-13s p50 %7.2f ms   p99 %7.2f ms   (%lu)\n", names[k], hist_q(&h[k], 0.5),
               hist_q(&h[k], 0.99), (unsigned long)h[k].n);
    printf("  downloads: %ld full, %ld not modified (304)\n", d200, d304);
    /* CPU per accepted update: the steadier figure on a shared machine; their sum bounds the
     * rate two idle cores could reach with this generator (1 / sum per core) */
    double us_srv = acc ? 1e6 * (scpu - scpu0) / (double)acc : 0, us_gen = acc ? 1e6 * mycpu / (double)acc : 0;
    printf("coordinator: RSS %.1f MiB (peak %.1f MiB), CPU %.1f s of %.1f s wall; generator CPU %.1f s\n",
           srss, shwm, scpu - scpu0, wall, mycpu);
    printf("CPU per accepted update: coordinator %.0f us, generator %.0f us (two idle cores: ~%.0f updates/s)\n",
           us_srv, us_gen, us_srv + us_gen > 0 ? 2e6 / (us_srv + us_gen) : 0.0);
    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (f) {
            fprintf(f, "{\"devices\": %ld, \"connections\": %d, \"per_round\": %d, \"seconds\": %.2f, "
                       "\"enrolled\": %ld, \"enrol_errors\": %ld, \"enrol_per_s\": %.1f, "
                       "\"checkin_sweep_ok\": %ld, \"checkin_sweep_errors\": %ld, "
                       "\"accepted\": %ld, \"accepted_per_s\": %.1f, \"errors\": %ld, "
                       "\"refused_late\": %ld, \"refused_duplicate\": %ld, \"refused_other\": %ld, "
                       "\"checkin_p50_ms\": %.3f, \"checkin_p99_ms\": %.3f, \"download_p50_ms\": %.3f, "
                       "\"download_p99_ms\": %.3f, \"upload_p50_ms\": %.3f, \"upload_p99_ms\": %.3f, "
                       "\"cycle_p50_ms\": %.3f, \"cycle_p99_ms\": %.3f, \"server_rss_mb\": %.1f, "
                       "\"server_peak_rss_mb\": %.1f, \"server_cpu_s\": %.2f, \"generator_cpu_s\": %.2f, "
                       "\"server_cpu_us_per_update\": %.1f, \"generator_cpu_us_per_update\": %.1f}\n",
                    devices, conns, per_round, wall, enrolled, enrol_err, enrolled / t_enrol, swept,
                    sweep_err, acc, rate, errs, refused[REF_LATE], refused[REF_DUP], refused[REF_OTHER],
                    hist_q(&h[0], 0.5), hist_q(&h[0], 0.99), hist_q(&h[1], 0.5), hist_q(&h[1], 0.99),
                    hist_q(&h[2], 0.5), hist_q(&h[2], 0.99), hist_q(&h[3], 0.5), hist_q(&h[3], 0.99),
                    srss, shwm, scpu - scpu0, mycpu, us_srv, us_gen);
            fclose(f);
        }
    }
    free(admin);
    free((void *)G.secret);
    for (int a = 1; a <= MAX_ATTEMPT_BODIES; a++)
        free((void *)G.body[a]);
    free(G.devs);
    free(ws);
    return enrol_err || sweep_err || swept != devices ? 1 : 0;
}
