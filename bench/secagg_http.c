/* secagg_http.c — secure aggregation over HTTP, measured end to end (part of `make bench`).
 * One round of `artificien serve`'s secure aggregation (docs/api.md "Secure aggregation") for
 * the tutorial CNN, with N devices driven by hand over real HTTP through fed/secagg.h and
 * fed/secwire.h (the approach of tests/server/test_secagg_coord.c: no device library, no
 * training, a random update per device; a pool of threads drives them phase by phase), a
 * fraction of them dropping out — after their masked input (they never unmask), or with
 * --drop-at masked after sharing keys (the coordinator then rebuilds their mask keys); then
 * the same N devices posting plain safetensors updates to a project without secure
 * aggregation, the baseline. Per phase: wall time, the coordinator's CPU time
 * (/proc/PID/stat), the devices' CPU time (CLOCK_THREAD_CPUTIME_ID of the threads that drive
 * them, over the devices that took part) and the bytes each way, counted in this file's HTTP
 * layer (bodies, and HTTP headers apart); the expansion of the bytes a device sends over the
 * plain update. Every round must commit and the new model must be the weighted mean of the
 * updates that reached the sum (within the quantisation bound), else it exits 1.
 *
 *   build/bench-secagg-http [--devices 100,500] [--dropout 0,0.1] [--drop-at unmask|masked]
 *       [--threads 8] [--deadline 120] [--server URL --admin-key-file F [--pid PID]]
 *       [--json FILE]
 * Without --server it starts `artificien serve` (the binary next to this one) on a temporary
 * database and stops it at exit. Bench code: prints, exits.
 */
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <sodium.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "core/timer.h"
#include "fed/secagg.h"
#include "fed/secwire.h"
#include "nn/checkpoint.h"
#include "nn/model.h"
#include "nn/safetensors.h"

/* The tutorial CNN (models/fashion_cnn.json without its description): 32,998 parameters. */
static const char SPEC[] =
    "{\"name\":\"fashion_cnn\",\"input\":[1,28,28],\"classes\":10,\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"conv1\",\"in_channels\":1,\"out_channels\":6,\"kernel\":5},"
    "{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2,\"stride\":2},"
    "{\"type\":\"conv2d\",\"name\":\"conv2\",\"in_channels\":6,\"out_channels\":12,\"kernel\":5},"
    "{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2,\"stride\":2},{\"type\":\"flatten\"},"
    "{\"type\":\"linear\",\"name\":\"fc1\",\"in_features\":192,\"out_features\":120},{\"type\":\"relu\"},"
    "{\"type\":\"linear\",\"name\":\"fc2\",\"in_features\":120,\"out_features\":60},{\"type\":\"relu\"},"
    "{\"type\":\"linear\",\"name\":\"out\",\"in_features\":60,\"out_features\":10}]}";
static const char SCHEMA[] =
    "{\"name\":\"fashion-mnist\",\"kind\":\"image\",\"shape\":[1,28,28],\"classes\":10}";
#define CNN_PARAMS 32998
#define MAX_SECAGG_M 1000   /* plan.secagg_max_samples: above every device's weight (50..150) */
#define MAX_WORKERS 64
#define MAX_CONFIGS 16

/* The phases a device goes through (plain: checkin, download, report). */
enum { PH_CHECKIN, PH_DOWNLOAD, PH_ADVERTISE, PH_SHARE, PH_MASKED, PH_UNMASK, PH_REPORT,
       PH_COMMIT, PH_N, PH_ENROL = PH_N };
static const char *const ph_name[PH_N] = {"checkin", "download", "advertise", "share_keys",
                                          "masked_input", "unmask", "report", "commit"};

/* Unix seconds: the clock of the coordinator's deadlines and closed_at (same machine). */
static double real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- HTTP over libcurl, counting bytes -------------------------------------------------- */

typedef struct counters {
    double up, down;          /* bodies */
    double up_hdr, down_hdr;  /* request line + headers, status line + headers */
    long requests;
} counters;

typedef struct conn {
    CURL *c;
    counters *cnt;            /* where the next exchange's bytes go */
    char *buf;                /* the response body being received */
    size_t len, cap;
    size_t hdr_in, hdr_out;
} conn;

typedef struct resp {
    long status;
    char *body;               /* NUL-terminated; owned by the conn until its next request */
    size_t len;
} resp;

static struct {
    const char *url;
    char tmpdir[512];         /* the started coordinator's files ("" when given --server) */
    volatile pid_t spid;      /* the coordinator we started (0: none) */
    long pid;                 /* the coordinator whose CPU is read (0: unknown) */
    double deadline;
    int drop_at;              /* PH_UNMASK: dropped devices never unmask; PH_MASKED: never mask */
} G;

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    conn *k = user;
    size_t m = size * n;
    if (k->len + m + 1 > k->cap) {
        size_t cap = (k->len + m + 1) * 2;
        char *b = realloc(k->buf, cap);
        if (!b)
            return 0;
        k->buf = b;
        k->cap = cap;
    }
    memcpy(k->buf + k->len, p, m);
    k->len += m;
    k->buf[k->len] = 0;
    return m;
}

static size_t on_header(char *p, size_t size, size_t n, void *user)
{
    (void)p;
    ((conn *)user)->hdr_in += size * n;
    return size * n;
}

/* The request line and headers as sent (CURLOPT_VERBOSE routes them here, nothing prints). */
static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *user)
{
    (void)h, (void)data;
    if (type == CURLINFO_HEADER_OUT)
        ((conn *)user)->hdr_out += size;
    return 0;
}

static int conn_init(conn *k)
{
    memset(k, 0, sizeof *k);
    if (!(k->c = curl_easy_init()))
        return -1;
    curl_easy_setopt(k->c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(k->c, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(k->c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(k->c, CURLOPT_HEADERDATA, k);
    curl_easy_setopt(k->c, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(k->c, CURLOPT_DEBUGDATA, k);
    curl_easy_setopt(k->c, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(k->c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k->c, CURLOPT_TIMEOUT, 600L);
    return 0;
}

static void conn_free(conn *k)
{
    if (k->c)
        curl_easy_cleanup(k->c);
    free(k->buf);
    memset(k, 0, sizeof *k);
}

/* One request on k's kept-alive connection; body may be NULL for GET. Returns 0 with *out
 * (any status), or -1 on a transport error (message in errbuf). */
static int http(conn *k, const char *method, const char *path, const char *token,
                const char *ctype, const void *body, size_t len, resp *out, char *err,
                size_t errcap)
{
    char url[512], auth[160], ct[160];
    snprintf(url, sizeof url, "%s%s", G.url, path);
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    snprintf(ct, sizeof ct, "Content-Type:%s%s", ctype ? " " : "", ctype ? ctype : "");
    h = curl_slist_append(h, ct);
    h = curl_slist_append(h, "Expect:");
    k->len = 0;
    if (k->buf)
        k->buf[0] = 0;
    k->hdr_in = k->hdr_out = 0;
    curl_easy_setopt(k->c, CURLOPT_URL, url);
    curl_easy_setopt(k->c, CURLOPT_HTTPHEADER, h);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(k->c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(k->c, CURLOPT_POST, 1L);
        curl_easy_setopt(k->c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(k->c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    }
    CURLcode rc = curl_easy_perform(k->c);
    curl_easy_setopt(k->c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(err, errcap, "%s %s: %s", method, path, curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_getinfo(k->c, CURLINFO_RESPONSE_CODE, &out->status);
    if (!k->buf && !(k->buf = calloc(1, k->cap = 1))) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    out->body = k->buf;
    out->len = k->len;
    if (k->cnt) {
        k->cnt->up += strcmp(method, "GET") == 0 ? 0 : (double)len;
        k->cnt->down += (double)k->len;
        k->cnt->up_hdr += (double)k->hdr_out;
        k->cnt->down_hdr += (double)k->hdr_in;
        k->cnt->requests++;
    }
    return 0;
}

/* ---- devices ---------------------------------------------------------------------------- */

typedef struct dev {
    char token[80];
    uint8_t pk[SECAGG_SIGN_PK_BYTES], sk[SECAGG_SIGN_SK_BYTES];
    char ident[64];           /* pk in base64 */
    /* this configuration's round */
    int ok, drop;             /* still in the round; drops out in this configuration */
    double num_samples;       /* its weight w */
    int attempt;
    char ckpt[256], report[256], url[256];
    uint32_t id;
    secagg_cfg cfg;
    secwire_params w;
    secagg_client *cl;
    double unmask_at;         /* Unix seconds the unmask phase closes at, at the latest */
} dev;

typedef struct worker {
    conn k;
    size_t lo, hi;            /* its devices [lo, hi) */
    int phase;
    counters cnt[PH_N];
    double cpu[PH_N];         /* thread CPU seconds, the stand-in for training excluded */
    long ran[PH_N];           /* devices that took part in the phase */
    double first_ok[PH_N];    /* af_now() of its first 200 to a phase's GET: the phase before
                                 had closed */
    double *acc, wsum;        /* Σ w·Δ and Σ w of the updates it put into the sum */
    long in_sum;              /* how many */
    float *delta;             /* scratch: n_params */
    uint32_t *x, *y;          /* scratch: the vector and its masked form */
    uint8_t *mbody;
    size_t cap_words;
    long errors;
    char first_error[512];
} worker;

static struct {
    dev *devs;
    worker ws[MAX_WORKERS];
    int nw;
    const nn_model *model;
    int64_t project;
    int secagg;
    const char *secret;
    uint64_t seed;
} R;

static void fail_dev(worker *w, dev *d, const char *fmt, ...)
{
    d->ok = 0;
    w->errors++;
    if (w->first_error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->first_error, sizeof w->first_error, fmt, ap);
    va_end(ap);
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(j) ? j->valuedouble : NAN;
}

static const char *jstr(const cJSON *o, const char *k)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* "METHOD PATH: HTTP status body" into the worker's first error. */
static void fail_status(worker *w, dev *d, const char *what, const resp *r)
{
    fail_dev(w, d, "%s: HTTP %ld %.300s", what, r->status, r->body ? r->body : "");
}

static void enrol(worker *w, dev *d)
{
    char body[512], err[256];
    snprintf(body, sizeof body, "{\"secret\":\"%s\",\"dataset\":%s}", R.secret, SCHEMA);
    resp r;
    if (http(&w->k, "POST", "/v1/devices", NULL, "application/json", body, strlen(body), &r, err,
             sizeof err)) {
        fail_dev(w, d, "%s", err);
        return;
    }
    cJSON *j = r.status == 201 ? cJSON_ParseWithLength(r.body, r.len) : NULL;
    const char *t = jstr(j, "token");
    if (!t)
        fail_status(w, d, "POST /v1/devices", &r);
    else
        snprintf(d->token, sizeof d->token, "%s", t);
    cJSON_Delete(j);
    if (secagg_identity_keypair(d->pk, d->sk))
        fail_dev(w, d, "identity: %s", af_errmsg());
    char *b = secwire_b64(d->pk, sizeof d->pk);
    snprintf(d->ident, sizeof d->ident, "%s", b ? b : "");
    free(b);
}

/* Check-in: the device must be given this configuration's task. */
static void checkin(worker *w, dev *d)
{
    char body[1024], err[256];
    snprintf(body, sizeof body,
             "{%s%s%s\"dataset\":%s,\"conditions\":{\"charging\":true,\"idle\":true,"
             "\"unmetered\":true},\"caps\":{\"max_params\":1000000,\"max_epochs\":10}}",
             R.secagg ? "\"identity\":\"" : "", R.secagg ? d->ident : "", R.secagg ? "\"," : "",
             SCHEMA);
    resp r;
    if (http(&w->k, "POST", "/v1/checkin", d->token, "application/json", body, strlen(body), &r,
             err, sizeof err)) {
        fail_dev(w, d, "%s", err);
        return;
    }
    cJSON *j = r.status == 200 ? cJSON_ParseWithLength(r.body, r.len) : NULL;
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(j, "task");
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(task, "secagg");
    const char *ck = jstr(task, "checkpoint"), *rep = jstr(task, "report");
    if (!task || (int64_t)jnum(task, "project") != R.project || !ck || !rep ||
        (R.secagg && !sa)) {
        fail_status(w, d, "POST /v1/checkin (expected this project's task)", &r);
        cJSON_Delete(j);
        return;
    }
    d->attempt = (int)jnum(task, "attempt");
    snprintf(d->ckpt, sizeof d->ckpt, "%s", ck);
    snprintf(d->report, sizeof d->report, "%s", rep);
    if (sa) {
        const char *rid = jstr(sa, "round_id"), *url = jstr(sa, "url");
        if (!rid || !url) {
            fail_status(w, d, "POST /v1/checkin (task.secagg)", &r);
            cJSON_Delete(j);
            return;
        }
        d->id = (uint32_t)jnum(sa, "id");
        d->cfg = (secagg_cfg){strtoull(rid, NULL, 10), (uint32_t)jnum(sa, "n"),
                              (uint32_t)jnum(sa, "t"), (size_t)jnum(sa, "len")};
        d->w = (secwire_params){.kind = SECWIRE_TRAIN, .n = d->cfg.n, .t = d->cfg.t,
                                .range = jnum(sa, "range"),
                                .max_samples = (uint32_t)jnum(sa, "max_samples"),
                                .clip = jnum(sa, "clip"), .noise = jnum(sa, "noise"),
                                .adaptive = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sa, "adaptive")),
                                .count_noise = jnum(sa, "count_noise"),
                                .stats_bound = jnum(sa, "stats_bound"),
                                .stats_noise = jnum(sa, "stats_noise")};
        snprintf(d->url, sizeof d->url, "%s", url);
        d->unmask_at = jnum(cJSON_GetObjectItemCaseSensitive(sa, "deadlines"), "unmask");
    }
    cJSON_Delete(j);
}

static void download(worker *w, dev *d)
{
    char err[256];
    resp r;
    if (http(&w->k, "GET", d->ckpt, d->token, NULL, NULL, 0, &r, err, sizeof err))
        fail_dev(w, d, "%s", err);
    else if (r.status != 200 || r.len < sizeof(float) * CNN_PARAMS)
        fail_status(w, d, "GET checkpoint", &r);
}

static long sa_post(worker *w, dev *d, const char *step, const char *ctype, const void *body,
                    size_t len)
{
    char path[320], err[256];
    snprintf(path, sizeof path, "%s/%s", d->url, step);
    resp r;
    if (http(&w->k, "POST", path, d->token, ctype, body, len, &r, err, sizeof err)) {
        fail_dev(w, d, "%s", err);
        return -1;
    }
    if (r.status != 200)
        fail_status(w, d, path, &r);
    return r.status;
}

/* GET URL/step until its phase has closed (the coordinator answers 202 with retry_after
 * before): the parsed 200 body, or NULL (the device failed). */
static cJSON *sa_get(worker *w, dev *d, const char *step)
{
    char path[320], err[256];
    snprintf(path, sizeof path, "%s/%s", d->url, step);
    double give_up = af_now() + G.deadline + 60;
    for (;;) {
        resp r;
        if (http(&w->k, "GET", path, d->token, NULL, NULL, 0, &r, err, sizeof err)) {
            fail_dev(w, d, "%s", err);
            return NULL;
        }
        if (r.status == 200) {
            w->first_ok[w->phase] = fmin(w->first_ok[w->phase], af_now());
            cJSON *j = cJSON_ParseWithLength(r.body, r.len);
            if (!j)
                fail_status(w, d, path, &r);
            return j;
        }
        if (r.status != 202 || af_now() > give_up) {
            fail_status(w, d, path, &r);
            return NULL;
        }
        cJSON *j = cJSON_ParseWithLength(r.body, r.len);
        double after = jnum(j, "retry_after");
        cJSON_Delete(j);
        after = isfinite(after) ? fmin(fmax(after, 0.01), 0.5) : 0.1;
        struct timespec ts = {0, (long)(after * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static void advertise(worker *w, dev *d)
{
    secagg_advertise a;
    if (secagg_client_create(&d->cfg, d->id, d->sk, &d->cl) ||
        secagg_client_advertise(d->cl, &a)) {
        fail_dev(w, d, "advertise: %s", af_errmsg());
        return;
    }
    char *c = secwire_b64(a.c_pk, 32), *s = secwire_b64(a.s_pk, 32), *g = secwire_b64(a.sig, 64);
    char body[400];
    snprintf(body, sizeof body, "{\"c_pk\":\"%s\",\"s_pk\":\"%s\",\"sig\":\"%s\"}", c, s, g);
    free(c), free(s), free(g);
    sa_post(w, d, "advertise", "application/json", body, strlen(body));
}

static void share_keys(worker *w, dev *d)
{
    cJSON *j = sa_get(w, d, "keys");
    if (!j)
        return;
    uint8_t *recs = NULL;
    size_t len = 0;
    const char *keys = jstr(j, "keys");
    int rc = keys ? secwire_unb64(keys, "keys", SECWIRE_KEY_REC, 0, &recs, &len) : AF_EFORMAT;
    cJSON_Delete(j);
    if (rc) {
        fail_dev(w, d, "keys: %s", keys ? af_errmsg() : "missing");
        return;
    }
    size_t n = len / SECWIRE_KEY_REC;
    secagg_advertise *list = calloc(n + 1, sizeof *list);
    for (size_t i = 0; list && i < n; i++)
        secwire_get_key(recs + i * SECWIRE_KEY_REC, d->cfg.round_id, &list[i]);
    free(recs);
    const secagg_share_keys *sk;
    rc = list ? secagg_client_share_keys(d->cl, list, n, &sk) : AF_ENOMEM;
    free(list);
    if (rc) {
        fail_dev(w, d, "share keys: %s", af_errmsg());
        return;
    }
    uint8_t *buf = malloc(sk->n_shares * SECWIRE_SHARE_REC + 1);
    for (uint32_t i = 0; buf && i < sk->n_shares; i++)
        secwire_put_share(buf + i * SECWIRE_SHARE_REC, &sk->shares[i]);
    char *sh = buf ? secwire_b64(buf, sk->n_shares * SECWIRE_SHARE_REC) : NULL;
    char *bc = secwire_b64(sk->b_commit, 32), *sg = secwire_b64(sk->sig, 64);
    free(buf);
    size_t cap = (sh ? strlen(sh) : 0) + 400;
    char *body = malloc(cap);
    if (sh && bc && sg && body) {
        snprintf(body, cap, "{\"b_commit\":\"%s\",\"sig\":\"%s\",\"shares\":\"%s\"}", bc, sg, sh);
        sa_post(w, d, "shares", "application/json", body, strlen(body));
    } else {
        fail_dev(w, d, "share keys: out of memory");
    }
    free(sh), free(bc), free(sg), free(body);
}

/* The device's update: a random delta (the stand-in for training, its CPU time not counted)
 * added to the worker's expected sum with weight w = num_samples. */
static void make_delta(worker *w, dev *d, size_t i, size_t n)
{
    double c0 = thread_cpu();
    af_rng g;
    af_rng_seed(&g, R.seed, i);
    for (size_t k = 0; k < n; k++) {
        w->delta[k] = (float)(0.01 * af_rng_normal(&g));
        w->acc[k] += d->num_samples * w->delta[k];
    }
    w->wsum += d->num_samples;
    w->in_sum++;
    w->cpu[w->phase] -= thread_cpu() - c0;
}

static void masked_input(worker *w, dev *d, size_t i)
{
    cJSON *j = sa_get(w, d, "shares");
    if (!j)
        return;
    uint8_t *recs = NULL;
    size_t len = 0;
    const char *sh = jstr(j, "shares");
    int rc = sh ? secwire_unb64(sh, "shares", SECWIRE_SHARE_REC, 0, &recs, &len) : AF_EFORMAT;
    cJSON_Delete(j);
    if (rc) {
        fail_dev(w, d, "shares: %s", sh ? af_errmsg() : "missing");
        return;
    }
    size_t n = len / SECWIRE_SHARE_REC;
    secagg_enc_share *in = calloc(n + 1, sizeof *in);
    for (size_t k = 0; in && k < n; k++)
        secwire_get_share(recs + k * SECWIRE_SHARE_REC, &in[k]);
    free(recs);
    rc = in ? secagg_client_receive_shares(d->cl, in, n) : AF_ENOMEM;
    free(in);
    if (rc) {
        fail_dev(w, d, "receive shares: %s", af_errmsg());
        return;
    }
    secwire_layout L;
    const size_t np = R.model->n_params;
    if (secwire_layout_init(&L, &d->w, np, R.model->n_classes) || L.len != d->cfg.len ||
        L.len > w->cap_words) {
        fail_dev(w, d, "layout: %zu words here, %zu in the task", L.len, d->cfg.len);
        return;
    }
    make_delta(w, d, i, np);
    secwire_report rep = {.num_samples = d->num_samples, .loss = 1.0};
    const secagg_masked_input *mi;
    if (secwire_encode_train(&L, w->delta, &rep, NULL, w->x, NULL) ||
        secagg_client_masked_input(d->cl, w->x, w->y, &mi)) {
        fail_dev(w, d, "masked input: %s", af_errmsg());
        return;
    }
    for (size_t k = 0; k < L.len; k++) /* words little-endian, then the signature */
        for (int b = 0; b < 4; b++)
            w->mbody[4 * k + b] = (uint8_t)(w->y[k] >> (8 * b));
    memcpy(w->mbody + 4 * L.len, mi->sig, SECAGG_SIG_BYTES);
    sa_post(w, d, "masked", "application/octet-stream", w->mbody, 4 * L.len + SECAGG_SIG_BYTES);
}

static void unmask(worker *w, dev *d)
{
    cJSON *j = sa_get(w, d, "survivors");
    if (!j)
        return;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "survivors");
    size_t n = (size_t)cJSON_GetArraySize(a);
    uint32_t *u3 = calloc(n + 1, sizeof *u3);
    for (size_t k = 0; u3 && k < n; k++)
        u3[k] = (uint32_t)cJSON_GetArrayItem(a, (int)k)->valuedouble;
    cJSON_Delete(j);
    const secagg_unmask *um;
    int rc = u3 ? secagg_client_unmask(d->cl, u3, n, &um) : AF_ENOMEM;
    free(u3);
    if (rc) {
        fail_dev(w, d, "unmask: %s", af_errmsg());
        return;
    }
    uint8_t *buf = malloc(um->n_reveals * SECWIRE_REVEAL_REC + 1);
    for (uint32_t k = 0; buf && k < um->n_reveals; k++)
        secwire_put_reveal(buf + k * SECWIRE_REVEAL_REC, &um->reveals[k]);
    char *rv = buf ? secwire_b64(buf, um->n_reveals * SECWIRE_REVEAL_REC) : NULL;
    char *sg = secwire_b64(um->sig, 64);
    free(buf);
    size_t cap = (rv ? strlen(rv) : 0) + 200;
    char *body = malloc(cap);
    if (rv && sg && body) {
        snprintf(body, cap, "{\"sig\":\"%s\",\"reveals\":\"%s\"}", sg, rv);
        sa_post(w, d, "unmask", "application/json", body, strlen(body));
    } else {
        fail_dev(w, d, "unmask: out of memory");
    }
    free(rv), free(sg), free(body);
}

/* The plain baseline: the delta as safetensors (ts_update's layout) with its metadata. */
static void report(worker *w, dev *d, size_t i)
{
    const nn_model *m = R.model;
    make_delta(w, d, i, m->n_params);
    st_out_tensor t[2 * NN_MAX_LAYERS];
    for (int k = 0; k < m->n_params_t; k++) {
        const nn_param *p = &m->params_t[k];
        t[k].name = p->name;
        t[k].ndim = p->ndim;
        for (int a = 0; a < p->ndim; a++)
            t[k].shape[a] = p->shape[a];
        t[k].data = w->delta + p->off;
    }
    char att[16], ns[32];
    snprintf(att, sizeof att, "%d", d->attempt);
    snprintf(ns, sizeof ns, "%.0f", d->num_samples);
    const char *keys[3] = {"attempt", "num_samples", "loss"}, *vals[3] = {att, ns, "1"};
    uint8_t *body;
    size_t len;
    if (st_serialize(t, m->n_params_t, keys, vals, 3, &body, &len)) {
        fail_dev(w, d, "serialise: %s", af_errmsg());
        return;
    }
    char err[256];
    resp r;
    if (http(&w->k, "POST", d->report, d->token, "application/octet-stream", body, len, &r, err,
             sizeof err))
        fail_dev(w, d, "%s", err);
    else if (r.status != 200)
        fail_status(w, d, d->report, &r);
    free(body);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    const int ph = w->phase;
    w->k.cnt = ph < PH_N ? &w->cnt[ph] : NULL;
    double c0 = thread_cpu();
    for (size_t i = w->lo; i < w->hi; i++) {
        dev *d = &R.devs[i];
        /* a dropped device is gone from its phase on */
        if (!d->ok || (d->drop && (ph == PH_UNMASK || (ph == PH_MASKED && G.drop_at == PH_MASKED))))
            continue;
        switch (ph) {
        case PH_ENROL: enrol(w, d); break;
        case PH_CHECKIN: checkin(w, d); break;
        case PH_DOWNLOAD: download(w, d); break;
        case PH_ADVERTISE: advertise(w, d); break;
        case PH_SHARE: share_keys(w, d); break;
        case PH_MASKED: masked_input(w, d, i); break;
        case PH_UNMASK: unmask(w, d); break;
        case PH_REPORT: report(w, d, i); break;
        }
        if (ph < PH_N)
            w->ran[ph]++;
    }
    if (ph < PH_N)
        w->cpu[ph] += thread_cpu() - c0;
    return NULL;
}

/* Every worker runs phase ph over its devices [lo, hi); 0, or -1 if any device failed. */
static int run_phase(int ph, size_t n)
{
    pthread_t th[MAX_WORKERS];
    int nt = R.nw < (int)n ? R.nw : (int)n;
    for (int t = 0; t < nt; t++) {
        worker *w = &R.ws[t];
        w->lo = n * (size_t)t / (size_t)nt;
        w->hi = n * (size_t)(t + 1) / (size_t)nt;
        w->phase = ph;
        if (pthread_create(&th[t], NULL, worker_main, w)) {
            fprintf(stderr, "bench-secagg-http: cannot start a thread\n");
            exit(1);
        }
    }
    long errs = 0;
    for (int t = 0; t < nt; t++) {
        pthread_join(th[t], NULL);
        if (R.ws[t].errors && !errs)
            fprintf(stderr, "bench-secagg-http: phase %s: %s\n",
                    ph < PH_N ? ph_name[ph] : "enrol", R.ws[t].first_error);
        errs += R.ws[t].errors;
    }
    if (errs)
        fprintf(stderr, "bench-secagg-http: phase %s: %ld device(s) failed\n",
                ph < PH_N ? ph_name[ph] : "enrol", errs);
    return errs ? -1 : 0;
}

/* ---- the coordinator ------------------------------------------------------------------------ */

/* utime + stime of a process, seconds (0 when unknown). */
static double proc_cpu(long pid)
{
    if (pid <= 0)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void stop_server(void)
{
    pid_t pid = G.spid;
    if (pid > 0) {
        kill(pid, SIGTERM);
        int status, n = 0;
        while (waitpid(pid, &status, WNOHANG) == 0 && n++ < 100)
            usleep(100000);
        if (n > 100) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
        G.spid = 0;
    }
    if (G.tmpdir[0]) {
        nftw(G.tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        G.tmpdir[0] = 0;
    }
}

static void on_signal(int sig)
{
    if (G.spid > 0)
        kill(G.spid, SIGTERM);
    _exit(128 + sig);
}

/* The last lines of the started coordinator's log, when something failed. */
static void show_server_log(void)
{
    if (!G.tmpdir[0])
        return;
    char path[600], *s;
    size_t n;
    snprintf(path, sizeof path, "%s/serve.log", G.tmpdir);
    if (af_read_file(path, &s, &n))
        return;
    if (n)
        fprintf(stderr, "--- coordinator log (tail) ---\n%s\n", n > 3000 ? s + n - 3000 : s);
    free(s);
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench-secagg-http: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    show_server_log();
    exit(1);
}

/* Starts `artificien serve` (next to this binary) on a fresh database in a temporary folder;
 * fills G.url (static storage), G.spid, G.pid and admin_path. */
static void start_server(char *admin_path, size_t cap)
{
    static char url[128];
    char exe[512], bin[600], db[600], out[600], log[600];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        die("cannot find this binary's folder");
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    *slash = 0;
    snprintf(bin, sizeof bin, "%s/artificien", exe);
    if (access(bin, X_OK))
        die("%s not found: build it first (make)", bin);
    const char *tmp = getenv("TMPDIR");
    snprintf(G.tmpdir, sizeof G.tmpdir, "%s/artificien-sahttp.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(G.tmpdir)) {
        G.tmpdir[0] = 0;
        die("mkdtemp: cannot create a temporary folder");
    }
    snprintf(db, sizeof db, "%s/a.db", G.tmpdir);
    snprintf(out, sizeof out, "%s/serve.out", G.tmpdir);
    snprintf(log, sizeof log, "%s/serve.log", G.tmpdir);
    snprintf(admin_path, cap, "%s.admin-key", db);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid == 0) {
        if (!freopen(out, "w", stdout) || !freopen(log, "w", stderr))
            _exit(127);
        execl(bin, bin, "serve", "--db", db, "--listen", "127.0.0.1:0", "--log-level", "warn",
              (char *)NULL);
        _exit(127);
    }
    G.spid = pid;
    G.pid = pid;
    for (int i = 0; i < 300 && !url[0]; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            G.spid = 0;
            die("the coordinator exited at start");
        }
        char *s;
        size_t len;
        if (!af_read_file(out, &s, &len)) {
            char *p = strstr(s, "listening on ");
            if (p && strchr(p, '\n')) {
                p += strlen("listening on ");
                snprintf(url, sizeof url, "%.*s", (int)strcspn(p, "\r\n"), p);
            }
            free(s);
        }
        if (!url[0])
            usleep(100000);
    }
    if (!url[0])
        die("the coordinator did not start within 30 s");
    G.url = url;
}

/* A JSON request by the admin or the owner (not counted as device traffic); the parsed body
 * when the status is `want`, else exits. */
static cJSON *api_json(conn *k, const char *method, const char *path, const char *key,
                       const char *body, long want)
{
    char err[256];
    resp r;
    if (http(k, method, path, key, body ? "application/json" : NULL, body, body ? strlen(body) : 0,
             &r, err, sizeof err))
        die("%s", err);
    cJSON *j = r.status == want ? cJSON_ParseWithLength(r.body, r.len) : NULL;
    if (!j)
        die("%s %s: HTTP %ld %.400s", method, path, r.status, r.body);
    return j;
}

/* Checkpoint `version` of the project, as parameters (malloc'd n_params floats). */
static float *fetch_params(conn *k, const char *key, int64_t project, int version)
{
    char path[128], err[256];
    snprintf(path, sizeof path, "/v1/projects/%lld/checkpoints/%d", (long long)project, version);
    resp r;
    nn_model *m = NULL;
    if (http(k, "GET", path, key, NULL, NULL, 0, &r, err, sizeof err))
        die("%s", err);
    if (r.status != 200 || nn_checkpoint_parse(r.body, r.len, path, NULL, &m))
        die("GET %s: HTTP %ld: %s", path, r.status, r.status == 200 ? af_errmsg() : r.body);
    float *p = malloc(m->n_params * sizeof *p);
    if (!p)
        die("out of memory");
    memcpy(p, m->params, m->n_params * sizeof *p);
    nn_model_free(m);
    return p;
}

/* ---- one configuration ------------------------------------------------------------------------ */

typedef struct result {
    int n, secagg, t, dropped;
    double dropout;
    int did[PH_N];                             /* the phase is one of this round's */
    double wall[PH_N], scpu[PH_N], dcpu[PH_N]; /* seconds; dcpu summed over threads */
    double wait[PH_N];                         /* until its GET was first answered 200 */
    counters cnt[PH_N];                        /* summed over devices */
    long ran[PH_N];                            /* devices that took part */
    double idle;                               /* waiting for phase deadlines */
    double wall_total, scpu_total, dcpu_total;
    long reports;                              /* in the committed round */
    double max_change, max_err, tol;
} result;

enum { V_UP, V_DOWN, V_CPU, V_REQ };

/* What one device that took part in phase p cost: the phase's total over the devices that
 * ran it (a dropped device is not in the phases it missed). hdr: HTTP headers included. */
static double phase_dev(const result *r, int p, int what, int hdr)
{
    if (!r->ran[p])
        return 0;
    const counters *c = &r->cnt[p];
    double v = what == V_UP     ? c->up + (hdr ? c->up_hdr : 0)
               : what == V_DOWN ? c->down + (hdr ? c->down_hdr : 0)
               : what == V_CPU  ? r->dcpu[p]
                                : (double)c->requests;
    return v / (double)r->ran[p];
}

/* The same over the whole round: a device that went through every phase. */
static double round_dev(const result *r, int what, int hdr)
{
    double s = 0;
    for (int p = 0; p < PH_N; p++)
        s += phase_dev(r, p, what, hdr);
    return s;
}

/* t = ⌈2n/3⌉, as bench/secagg.c (and min_reports = t). */
static int threshold(int n) { return (2 * n + 2) / 3; }

static void run_config(conn *k, const char *owner, int n, int secagg, double dropout, double deadline,
                       result *res)
{
    memset(res, 0, sizeof *res);
    const size_t np = R.model->n_params;
    const int t = threshold(n);
    const int dropped = secagg ? (int)lround(dropout * n) : 0;
    *res = (result){.n = n, .secagg = secagg, .t = t, .dropped = dropped, .dropout = dropout};
    char body[2048], name[64];
    snprintf(name, sizeof name, "%s-n%d-drop%g", secagg ? "secagg" : "plain", n, dropout);
    int off = snprintf(body, sizeof body,
                       "{\"name\":\"%s\",\"spec\":%s,\"plan\":{\"rounds\":1,\"devices_per_round\":%d,"
                       "\"min_reports\":%d,\"over_selection\":1,\"round_deadline_s\":%g,"
                       "\"eval_every\":0,\"dataset\":\"fashion-mnist\"",
                       name, SPEC, n, t, deadline);
    if (secagg)
        off += snprintf(body + off, sizeof body - (size_t)off,
                        ",\"secagg\":true,\"secagg_threshold\":%d,\"secagg_max_samples\":%d", t,
                        MAX_SECAGG_M);
    snprintf(body + off, sizeof body - (size_t)off, "}}");
    cJSON *j = api_json(k, "POST", "/v1/projects", owner, body, 201);
    R.project = (int64_t)jnum(j, "id");
    R.secagg = secagg;
    cJSON_Delete(j);
    float *w0 = fetch_params(k, owner, R.project, 0);

    /* which devices drop: a seeded draw of `dropped` of them */
    uint32_t *idx = malloc((size_t)n * sizeof *idx);
    af_rng g;
    af_rng_seed(&g, R.seed, (uint64_t)n * 1000 + (uint64_t)(dropout * 100));
    for (int i = 0; i < n; i++)
        idx[i] = (uint32_t)i;
    af_rng_shuffle_u32(&g, idx, (size_t)n);
    for (int i = 0; i < n; i++) {
        dev *d = &R.devs[i];
        d->ok = 1;
        d->drop = 0;
        d->num_samples = 50 + (double)((i * 37) % 101);
        d->cl = NULL;
    }
    for (int i = 0; i < dropped; i++)
        R.devs[idx[i]].drop = 1;
    free(idx);
    for (int w = 0; w < R.nw; w++) {
        worker *wk = &R.ws[w];
        memset(wk->cnt, 0, sizeof wk->cnt);
        memset(wk->cpu, 0, sizeof wk->cpu);
        memset(wk->ran, 0, sizeof wk->ran);
        for (int p = 0; p < PH_N; p++)
            wk->first_ok[p] = INFINITY;
        memset(wk->acc, 0, np * sizeof *wk->acc);
        wk->wsum = 0;
        wk->in_sum = 0;
    }

    static const int sa_phases[] = {PH_CHECKIN, PH_DOWNLOAD, PH_ADVERTISE, PH_SHARE, PH_MASKED,
                                    PH_UNMASK};
    static const int plain_phases[] = {PH_CHECKIN, PH_DOWNLOAD, PH_REPORT};
    const int *phases = secagg ? sa_phases : plain_phases;
    const int nph = secagg ? 6 : 3;
    const double t0 = af_now(), c0 = proc_cpu(G.pid);
    for (int i = 0; i < nph; i++) {
        const int ph = phases[i];
        double ts = af_now(), cs = proc_cpu(G.pid);
        if (run_phase(ph, (size_t)n))
            die("%s: phase %s failed (a phase that outlives its deadline drops its devices: "
                "try a longer --deadline)", name, ph_name[ph]);
        res->wall[ph] = af_now() - ts;
        res->scpu[ph] = proc_cpu(G.pid) - cs;
        res->did[ph] = 1;
        double first = INFINITY;
        for (int w = 0; w < R.nw; w++)
            first = fmin(first, R.ws[w].first_ok[ph]);
        res->wait[ph] = isfinite(first) ? fmax(first - ts, 0) : 0;
        res->idle += res->wait[ph];
    }
    /* until the round has committed: its closed_at in the project's status. Devices that
     * never unmask keep the coordinator waiting for the unmask deadline; sleep through most
     * of it, so that the status polls cost the coordinator (nearly) nothing meanwhile. */
    const double ts = af_now(), real_ts = real_now(), cs = proc_cpu(G.pid);
    if (secagg && dropped && G.drop_at == PH_UNMASK) {
        double left = R.devs[0].unmask_at - real_now() - 0.5;
        if (left > 0) {
            struct timespec nap = {(time_t)left, (long)((left - floor(left)) * 1e9)};
            nanosleep(&nap, NULL);
        }
    }
    char path[64];
    snprintf(path, sizeof path, "/v1/projects/%lld", (long long)R.project);
    cJSON *st = NULL;
    for (double nap_s = 0.01;; nap_s = fmin(1.5 * nap_s, 0.25)) {
        st = api_json(k, "GET", path, owner, NULL, 200);
        if (jnum(st, "version") >= 1 || af_now() > t0 + deadline + 60)
            break;
        cJSON_Delete(st);
        struct timespec nap = {0, (long)(nap_s * 1e9)};
        nanosleep(&nap, NULL);
    }
    res->scpu[PH_COMMIT] = proc_cpu(G.pid) - cs;
    res->scpu_total = proc_cpu(G.pid) - c0;
    const cJSON *rounds = cJSON_GetObjectItemCaseSensitive(st, "rounds");
    const cJSON *last = cJSON_GetArrayItem(rounds, cJSON_GetArraySize(rounds) - 1);
    const char *state = jstr(last, "state");
    const double closed = jnum(last, "closed_at");
    res->reports = (long)jnum(last, "reports");
    /* the last device message may have committed the round already: 0 then */
    res->wall[PH_COMMIT] = isfinite(closed) && closed > real_ts - 5 && closed < real_now() + 5
                               ? fmax(closed - real_ts, 0)
                               : af_now() - ts;
    res->wall_total = ts - t0 + res->wall[PH_COMMIT];
    res->did[PH_COMMIT] = 1;
    res->idle += res->wall[PH_COMMIT];
    if (jnum(st, "version") < 1 || !state || strcmp(state, "committed") != 0)
        die("%s: the round did not commit (version %g, last attempt %s)", name,
            jnum(st, "version"), state ? state : "none");
    cJSON_Delete(st);

    /* the new model: w0 + Σ w·Δ / Σ w over the updates in the sum */
    long in_sum = 0;
    double wsum = 0;
    for (int w = 0; w < R.nw; w++) {
        in_sum += R.ws[w].in_sum;
        wsum += R.ws[w].wsum;
        for (int p = 0; p < PH_N; p++) {
            res->cnt[p].up += R.ws[w].cnt[p].up;
            res->cnt[p].down += R.ws[w].cnt[p].down;
            res->cnt[p].up_hdr += R.ws[w].cnt[p].up_hdr;
            res->cnt[p].down_hdr += R.ws[w].cnt[p].down_hdr;
            res->cnt[p].requests += R.ws[w].cnt[p].requests;
            res->dcpu[p] += R.ws[w].cpu[p];
            res->ran[p] += R.ws[w].ran[p];
        }
    }
    for (int p = 0; p < PH_N; p++)
        res->dcpu_total += res->dcpu[p];
    if (res->reports != in_sum)
        die("%s: the round committed %ld reports, %ld updates were sent into it", name,
            res->reports, in_sum);
    float *w1 = fetch_params(k, owner, R.project, 1);
    /* secure aggregation: ≤ |U3|·R·M/(2B) on Σ w·Δ (docs/privacy.md §3.2), / Σ w on the mean;
     * both: float rounding of the new weights */
    double quant = 0;
    if (secagg) {
        secwire_layout L;
        if (secwire_layout_init(&L, &R.devs[0].w, np, R.model->n_classes))
            die("%s: layout: %s", name, af_errmsg());
        quant = (double)in_sum * L.qd.range / (2.0 * L.qd.bound) / wsum;
    }
    res->tol = quant + 1e-6;
    for (size_t i = 0; i < np; i++) {
        double want = 0;
        for (int w = 0; w < R.nw; w++)
            want += R.ws[w].acc[i];
        want /= wsum;
        double change = fabs((double)w1[i] - w0[i]), err = fabs(((double)w1[i] - w0[i]) - want);
        res->max_change = fmax(res->max_change, change);
        res->max_err = fmax(res->max_err, err);
    }
    free(w0);
    free(w1);
    for (int i = 0; i < n; i++) {
        secagg_client_free(R.devs[i].cl);
        R.devs[i].cl = NULL;
    }
    if (!(res->max_err <= res->tol) || !(res->max_change > 10 * res->tol))
        die("%s: the committed model is off: largest change %.3g, largest error %.3g (bound %.3g)",
            name, res->max_change, res->max_err, res->tol);
}

/* ---- output ------------------------------------------------------------------------------------ */

static void label(const result *r, char *buf, size_t cap)
{
    if (r->secagg)
        snprintf(buf, cap, "n=%d secagg %g%%", r->n, 100 * r->dropout);
    else
        snprintf(buf, cap, "n=%d plain", r->n);
}

static const result *baseline(const result *rs, int nr, int n)
{
    for (int i = 0; i < nr; i++)
        if (!rs[i].secagg && rs[i].n == n)
            return &rs[i];
    return NULL;
}

static void phase_header(int upto)
{
    printf("%-18s", "");
    for (int p = 0; p < upto; p++)
        printf(" %12s", ph_name[p]);
}

static void print_tables(const result *rs, int nr)
{
    char lb[64];
    printf("\nwall time of each phase, s (commit: from the last device message to the round's "
           "closed_at; idle: waiting for phase deadlines)\n");
    phase_header(PH_N);
    printf(" %8s %8s\n", "total", "idle");
    for (int i = 0; i < nr; i++) {
        label(&rs[i], lb, sizeof lb);
        printf("%-18s", lb);
        for (int p = 0; p < PH_N; p++)
            if (rs[i].did[p])
                printf(" %12.2f", rs[i].wall[p]);
            else
                printf(" %12s", "-");
        printf(" %8.2f %8.2f\n", rs[i].wall_total, rs[i].idle);
    }
    printf("\ncoordinator CPU, s\n");
    phase_header(PH_N);
    printf(" %8s\n", "total");
    for (int i = 0; i < nr; i++) {
        label(&rs[i], lb, sizeof lb);
        printf("%-18s", lb);
        for (int p = 0; p < PH_N; p++)
            if (rs[i].did[p])
                printf(" %12.2f", rs[i].scpu[p]);
            else
                printf(" %12s", "-");
        printf(" %8.2f\n", rs[i].scpu_total);
    }
    static const char *const what[3] = {"KB up per device (bodies)", "KB down per device (bodies)",
                                        "device CPU per device, ms"};
    for (int v = V_UP; v <= V_CPU; v++) {
        printf("\n%s (over the devices that took part in the phase)\n", what[v]);
        phase_header(PH_COMMIT);
        printf(" %8s\n", "round");
        for (int i = 0; i < nr; i++) {
            label(&rs[i], lb, sizeof lb);
            printf("%-18s", lb);
            const double f = v == V_CPU ? 1e3 : 1e-3;
            for (int p = 0; p < PH_COMMIT; p++)
                if (rs[i].ran[p])
                    printf(" %12.2f", f * phase_dev(&rs[i], p, v, 0));
                else
                    printf(" %12s", "-");
            printf(" %8.2f\n", f * round_dev(&rs[i], v, 0));
        }
    }
    printf("\nper device through the whole round, KB: bodies (and with HTTP headers); expansion = "
           "KB up / the plain project's\n");
    printf("%-18s %8s %9s %8s %17s %17s %15s %8s\n", "", "wall s", "coord s", "dev ms",
           "up KB", "down KB", "expansion", "requests");
    for (int i = 0; i < nr; i++) {
        const result *r = &rs[i], *b = baseline(rs, nr, r->n);
        label(r, lb, sizeof lb);
        char ex[32] = "-";
        if (b)
            snprintf(ex, sizeof ex, "%.3f (%.3f)", round_dev(r, V_UP, 0) / round_dev(b, V_UP, 0),
                     round_dev(r, V_UP, 1) / round_dev(b, V_UP, 1));
        printf("%-18s %8.2f %9.2f %8.2f %7.1f (%7.1f) %7.1f (%7.1f) %15s %8.1f\n", lb,
               r->wall_total, r->scpu_total, 1e3 * round_dev(r, V_CPU, 0),
               round_dev(r, V_UP, 0) / 1e3, round_dev(r, V_UP, 1) / 1e3,
               round_dev(r, V_DOWN, 0) / 1e3, round_dev(r, V_DOWN, 1) / 1e3, ex,
               round_dev(r, V_REQ, 0));
    }
    printf("\nchecks: every round committed, and new model = old + the weighted mean of the "
           "updates in the sum:\n");
    for (int i = 0; i < nr; i++) {
        label(&rs[i], lb, sizeof lb);
        printf("  %-18s reports %ld (t = %d, dropped %d), largest change %.2e, largest error "
               "%.2e (bound %.2e)\n",
               lb, rs[i].reports, rs[i].t, rs[i].dropped, rs[i].max_change, rs[i].max_err,
               rs[i].tol);
    }
}

static void write_json(const char *path, const result *rs, int nr, int threads, size_t words)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die("cannot write %s", path);
    fprintf(f, "{\"model_params\": %zu, \"vector_words\": %zu, \"threads\": %d, "
               "\"round_deadline_s\": %g, \"drop_at\": \"%s\", \"server_cpu_known\": %s, "
               "\"per_device\": \"averages over the devices that took part in each phase\", "
               "\"configs\": [",
            R.model->n_params, words, threads, G.deadline,
            G.drop_at == PH_UNMASK ? "unmask" : "masked", G.pid > 0 ? "true" : "false");
    for (int i = 0; i < nr; i++) {
        const result *r = &rs[i], *b = baseline(rs, nr, r->n);
        double up = 0, down = 0;
        for (int p = 0; p < PH_N; p++)
            up += r->cnt[p].up, down += r->cnt[p].down;
        fprintf(f, "%s\n  {\"devices\": %d, \"secagg\": %s, \"dropout\": %g, \"threshold\": %d, "
                   "\"dropped\": %d, \"reports\": %ld, \"wall_s\": %.4f, \"idle_s\": %.4f, "
                   "\"server_cpu_s\": %.4f, \"device_cpu_s_total\": %.4f, "
                   "\"up_bytes_total\": %.0f, \"down_bytes_total\": %.0f, "
                   "\"device_cpu_ms_per_device\": %.4f, \"up_bytes_per_device\": %.1f, "
                   "\"down_bytes_per_device\": %.1f, \"up_bytes_per_device_with_headers\": %.1f, "
                   "\"down_bytes_per_device_with_headers\": %.1f, \"expansion_up\": ",
                i ? "," : "", r->n, r->secagg ? "true" : "false", r->dropout, r->t, r->dropped,
                r->reports, r->wall_total, r->idle, r->scpu_total, r->dcpu_total, up, down,
                1e3 * round_dev(r, V_CPU, 0), round_dev(r, V_UP, 0), round_dev(r, V_DOWN, 0),
                round_dev(r, V_UP, 1), round_dev(r, V_DOWN, 1));
        if (b)
            fprintf(f, "%.4f, \"expansion_up_with_headers\": %.4f",
                    round_dev(r, V_UP, 0) / round_dev(b, V_UP, 0),
                    round_dev(r, V_UP, 1) / round_dev(b, V_UP, 1));
        else
            fprintf(f, "null, \"expansion_up_with_headers\": null");
        fprintf(f, ", \"max_change\": %.4g, \"max_error\": %.4g, \"error_bound\": %.4g, "
                   "\"phases\": {",
                r->max_change, r->max_err, r->tol);
        int first = 1;
        for (int p = 0; p < PH_N; p++) {
            if (!r->did[p])
                continue;
            fprintf(f, "%s\"%s\": {\"wall_s\": %.4f, \"wait_s\": %.4f, \"server_cpu_s\": %.4f, "
                       "\"devices\": %ld, \"device_cpu_ms_per_device\": %.4f, "
                       "\"up_bytes_per_device\": %.1f, \"down_bytes_per_device\": %.1f, "
                       "\"up_header_bytes_per_device\": %.1f, "
                       "\"down_header_bytes_per_device\": %.1f, \"requests_per_device\": %.3f}",
                    first ? "" : ", ", ph_name[p], r->wall[p], p == PH_COMMIT ? r->wall[p] : r->wait[p],
                    r->scpu[p], r->ran[p], 1e3 * phase_dev(r, p, V_CPU, 0),
                    phase_dev(r, p, V_UP, 0), phase_dev(r, p, V_DOWN, 0),
                    phase_dev(r, p, V_UP, 1) - phase_dev(r, p, V_UP, 0),
                    phase_dev(r, p, V_DOWN, 1) - phase_dev(r, p, V_DOWN, 0),
                    phase_dev(r, p, V_REQ, 0));
            first = 0;
        }
        fprintf(f, "}}");
    }
    fprintf(f, "\n]}\n");
    if (fclose(f))
        die("cannot write %s", path);
}

/* ---- main ---------------------------------------------------------------------------------------- */

static int parse_list(const char *s, double *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        out[n++] = strtod(s, &end);
        if (end == s)
            return -1;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench-secagg-http [--devices 100,500] [--dropout 0,0.1] [--drop-at unmask|masked]\n"
            "       [--threads 8] [--deadline 120] [--server URL --admin-key-file F [--pid PID]]\n"
            "       [--json FILE]\n");
    exit(2);
}

static char *read_line_file(const char *path)
{
    char *s;
    size_t n;
    if (af_read_file(path, &s, &n))
        die("%s", af_errmsg());
    s[strcspn(s, "\r\n")] = 0;
    return s;
}

int main(int argc, char **argv)
{
    double ns[MAX_CONFIGS] = {100, 500}, drops[MAX_CONFIGS] = {0, 0.1};
    int nn = 2, nd = 2, threads = 8;
    const char *admin_file = NULL, *json_path = NULL;
    G.deadline = 120;
    G.drop_at = PH_UNMASK;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--devices")) nn = parse_list(v, ns, MAX_CONFIGS);
        else if (!strcmp(a, "--dropout")) nd = parse_list(v, drops, MAX_CONFIGS);
        else if (!strcmp(a, "--drop-at")) G.drop_at = !strcmp(v, "unmask") ? PH_UNMASK : !strcmp(v, "masked") ? PH_MASKED : -1;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--deadline")) G.deadline = atof(v);
        else if (!strcmp(a, "--server")) G.url = v;
        else if (!strcmp(a, "--admin-key-file")) admin_file = v;
        else if (!strcmp(a, "--pid")) G.pid = atol(v);
        else if (!strcmp(a, "--json")) json_path = v;
        else usage();
        i++;
    }
    if (nn < 1 || nd < 1 || G.drop_at < 0 || threads < 1 || threads > MAX_WORKERS ||
        !(G.deadline >= 1) || (G.url && !admin_file) || (!G.url && (admin_file || G.pid)))
        usage();
    int nmax = 0;
    for (int i = 0; i < nn; i++) {
        if (!(ns[i] >= 3 && ns[i] <= SECAGG_MAX_DEVICES) || ns[i] != floor(ns[i]))
            usage();
        nmax = ns[i] > nmax ? (int)ns[i] : nmax;
    }
    for (int i = 0; i < nd; i++) {
        if (!(drops[i] >= 0 && drops[i] < 1))
            usage();
        for (int k = 0; k < nn; k++) {
            const int n = (int)ns[k], left = n - (int)lround(drops[i] * n);
            if (left < threshold(n))
                die("--dropout %g leaves %d of %d devices, fewer than the threshold %d",
                    drops[i], left, n, threshold(n));
        }
    }
    if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT))
        die("libsodium or libcurl cannot start");
    nn_model *model;
    if (nn_model_from_json(SPEC, "spec", NULL, &model) || model->n_params != CNN_PARAMS)
        die("the tutorial CNN: %s", af_errmsg());
    R.model = model;
    R.seed = 20171030;
    R.nw = threads;

    char admin_path[700];
    atexit(stop_server);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (!G.url)
        start_server(admin_path, sizeof admin_path);
    else
        snprintf(admin_path, sizeof admin_path, "%s", admin_file);
    char *admin = read_line_file(admin_path);

    conn k;
    if (conn_init(&k))
        die("libcurl: no handle");
    char body[128];
    snprintf(body, sizeof body, "{\"name\":\"bench-secagg-http-%ld-%ld\"}", (long)getpid(),
             (long)time(NULL));
    cJSON *j = api_json(&k, "POST", "/v1/owners", admin, body, 201);
    char *owner = strdup(jstr(j, "api_key"));
    cJSON_Delete(j);
    j = api_json(&k, "POST", "/v1/enrollment-secrets", admin, "{}", 201);
    R.secret = strdup(jstr(j, "secret"));
    cJSON_Delete(j);

    const size_t np = model->n_params;
    const size_t cap_words = np + 1 + SECWIRE_TAIL +
                             SECWIRE_MAX_CONF_CLASSES * SECWIRE_MAX_CONF_CLASSES;
    R.devs = calloc((size_t)nmax, sizeof *R.devs);
    if (!R.devs)
        die("out of memory");
    for (int w = 0; w < R.nw; w++) {
        worker *wk = &R.ws[w];
        if (conn_init(&wk->k))
            die("libcurl: no handle");
        wk->cap_words = cap_words;
        wk->acc = calloc(np, sizeof *wk->acc);
        wk->delta = calloc(np, sizeof *wk->delta);
        wk->x = calloc(cap_words, sizeof *wk->x);
        wk->y = calloc(cap_words, sizeof *wk->y);
        wk->mbody = malloc(cap_words * 4 + SECAGG_SIG_BYTES);
        if (!wk->acc || !wk->delta || !wk->x || !wk->y || !wk->mbody)
            die("out of memory");
    }
    for (int i = 0; i < nmax; i++)
        R.devs[i].ok = 1;
    printf("bench-secagg-http: coordinator %s%s, tutorial CNN (%zu parameters), %d device threads, "
           "round_deadline_s %g, dropped devices stop before %s\n",
           G.url, G.pid > 0 ? "" : " (CPU unknown: no --pid)", np, threads, G.deadline,
           G.drop_at == PH_UNMASK ? "unmasking (after their masked input)"
                                  : "their masked input (after sharing keys)");
    double te = af_now();
    if (run_phase(PH_ENROL, (size_t)nmax))
        die("enrolment failed");
    printf("enrolled %d devices in %.2f s\n", nmax, af_now() - te);

    result rs[MAX_CONFIGS * (MAX_CONFIGS + 1)];
    int nr = 0;
    for (int i = 0; i < nn; i++) {
        const int n = (int)ns[i];
        run_config(&k, owner, n, 0, 0, G.deadline, &rs[nr]);
        printf("  n=%d plain: committed in %.2f s\n", n, rs[nr].wall_total);
        nr++;
        for (int d = 0; d < nd; d++) {
            run_config(&k, owner, n, 1, drops[d], G.deadline, &rs[nr]);
            printf("  n=%d secagg, %g%% dropping: committed in %.2f s\n", n, 100 * drops[d],
                   rs[nr].wall_total);
            nr++;
        }
    }
    secwire_layout L;
    size_t words = 0;
    if (!secwire_layout_init(&L, &R.devs[0].w, np, model->n_classes))
        words = L.len;
    print_tables(rs, nr);
    if (json_path)
        write_json(json_path, rs, nr, threads, words);

    for (int w = 0; w < R.nw; w++) {
        worker *wk = &R.ws[w];
        conn_free(&wk->k);
        free(wk->acc);
        free(wk->delta);
        free(wk->x);
        free(wk->y);
        free(wk->mbody);
    }
    conn_free(&k);
    free(R.devs);
    free(admin);
    free(owner);
    free((void *)R.secret);
    nn_model_free(model);
    curl_global_cleanup();
    return 0;
}
