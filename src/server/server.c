/* server.c — libmicrohttpd glue: routing, auth, limits, replies, metrics, the deadline timer
 * (see server.h).
 *
 * A request is handled in three MHD callbacks: the first (headers only) routes it, checks the
 * token, the role, the content type and the declared length, and for a report asks the
 * coordinator whether this device may report now — refusals are answered before a byte of
 * the body is read. Body chunks are appended to a per-request buffer bounded by max_body. The
 * last call dispatches to coord.c. Never parses HTTP itself.
 */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/timer.h"
#include "server/auth.h"
#include "server/coord.h"
#include "server/dashboard.h"
#include "server/metrics.h"
#include "server/upload.h"
#include "store/store.h"

typedef enum {
    RT_NONE = 0, RT_HEALTH, RT_METRICS, RT_OWNER_CREATE, RT_SECRET_CREATE, RT_ENROLL,
    RT_PROJECT_CREATE, RT_PROJECT_LIST, RT_PROJECT_GET, RT_CKPT_PUT, RT_CKPT_LIST, RT_CKPT_GET,
    RT_CHECKIN, RT_REPORT, RT_SA_GET, RT_SA_POST, RT_SA_MASKED, RT_DASHBOARD, RT_COUNT
} route_id;

enum { BODY_NONE, BODY_JSON, BODY_BINARY };

static const struct {
    int roles;   /* who may call it (bitmask of srv_role); 0: no token */
    int body;
} routes[RT_COUNT] = {
    [RT_HEALTH] = {0, BODY_NONE},
    [RT_METRICS] = {0, BODY_NONE},
    [RT_OWNER_CREATE] = {SRV_ADMIN, BODY_JSON},
    [RT_SECRET_CREATE] = {SRV_ADMIN, BODY_JSON},
    [RT_ENROLL] = {0, BODY_JSON},
    [RT_PROJECT_CREATE] = {SRV_OWNER, BODY_JSON},
    [RT_PROJECT_LIST] = {SRV_OWNER, BODY_NONE},
    [RT_PROJECT_GET] = {SRV_OWNER, BODY_NONE},
    [RT_CKPT_PUT] = {SRV_OWNER, BODY_BINARY},
    [RT_CKPT_LIST] = {SRV_OWNER, BODY_NONE},
    [RT_CKPT_GET] = {SRV_OWNER | SRV_DEVICE, BODY_NONE},
    [RT_CHECKIN] = {SRV_DEVICE, BODY_JSON},
    [RT_REPORT] = {SRV_DEVICE, BODY_BINARY},
    [RT_SA_GET] = {SRV_DEVICE, BODY_NONE},
    [RT_SA_POST] = {SRV_DEVICE, BODY_JSON},
    [RT_SA_MASKED] = {SRV_DEVICE, BODY_BINARY},
    [RT_DASHBOARD] = {0, BODY_NONE},
};

struct srv_server {
    struct MHD_Daemon *d;
    srv_coord *coord;
    srv_metrics metrics;
    size_t max_body;
    int port;
    char *tls_cert, *tls_key;
    pthread_t timer;
    int timer_started;
    pthread_mutex_t tmu;
    pthread_cond_t tcv;
    int stop;
    double tick_s;
};

/* One request's state between MHD callbacks. */
typedef struct req {
    route_id route;
    int64_t project;
    int round;
    char version[32];         /* a checkpoint version, or a secure-aggregation step */
    srv_principal who;
    srv_upload *up;           /* a report's body streams into it */
    double cut_at;            /* store_now() time past which a report still streaming is dropped */
    char *body;
    size_t len, cap;
    int overflow;
    int responded;
    double t0;
} req;

/* Idle seconds after which a report's connection is closed (others: 120). */
#define REPORT_IDLE_S 30

/* ---- routing ------------------------------------------------------------------------------------ */

/* A positive decimal id of at most 15 digits; 0 if s is not one. */
static int64_t parse_id(const char *s)
{
    int64_t v = 0;
    int n = 0;
    for (; *s; s++, n++) {
        if (*s < '0' || *s > '9' || n >= 15)
            return 0;
        v = 10 * v + (*s - '0');
    }
    return v;
}

/* Routes method + url into q: 0, or 404 (unknown path) / 405 (method) with r filled. */
static int route(const char *method, const char *url, req *q, srv_reply *r)
{
    char path[256], *seg[8];
    int n = 0;
    if (strlen(url) >= sizeof path)
        return srv_reply_error(r, 404, "not_found", "no such path");
    snprintf(path, sizeof path, "%s", url);
    for (char *save = NULL, *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == 8)
            return srv_reply_error(r, 404, "not_found", "no such path: %s", url);
        seg[n++] = t;
    }
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0, put = strcmp(method, "PUT") == 0;
    route_id id = RT_NONE;
    int allowed = 0; /* the path exists */
#define IS(i, s) (n > (i) && strcmp(seg[i], s) == 0)
    if (n == 0 || (n == 1 && IS(0, "dashboard")))
        allowed = 1, id = get ? RT_DASHBOARD : RT_NONE;
    else if (n == 1 && IS(0, "healthz"))
        allowed = 1, id = get ? RT_HEALTH : RT_NONE;
    else if (n == 1 && IS(0, "metrics"))
        allowed = 1, id = get ? RT_METRICS : RT_NONE;
    else if (n >= 2 && IS(0, "v1")) {
        if (n == 2 && IS(1, "owners"))
            allowed = 1, id = post ? RT_OWNER_CREATE : RT_NONE;
        else if (n == 2 && IS(1, "enrollment-secrets"))
            allowed = 1, id = post ? RT_SECRET_CREATE : RT_NONE;
        else if (n == 2 && IS(1, "devices"))
            allowed = 1, id = post ? RT_ENROLL : RT_NONE;
        else if (n == 2 && IS(1, "checkin"))
            allowed = 1, id = post ? RT_CHECKIN : RT_NONE;
        else if (n == 2 && IS(1, "projects"))
            allowed = 1, id = get ? RT_PROJECT_LIST : post ? RT_PROJECT_CREATE : RT_NONE;
        else if (n >= 3 && IS(1, "projects")) {
            q->project = parse_id(seg[2]);
            if (!q->project)
                return srv_reply_error(r, 404, "not_found", "project \"%.32s\" not found",
                                       seg[2]);
            if (n == 3)
                allowed = 1, id = get ? RT_PROJECT_GET : RT_NONE;
            else if (n == 4 && IS(3, "checkpoint"))
                allowed = 1, id = put ? RT_CKPT_PUT : RT_NONE;
            else if (n == 4 && IS(3, "checkpoints"))
                allowed = 1, id = get ? RT_CKPT_LIST : RT_NONE;
            else if (n == 5 && IS(3, "checkpoints")) {
                allowed = 1, id = get ? RT_CKPT_GET : RT_NONE;
                snprintf(q->version, sizeof q->version, "%s", seg[4]);
            } else if (n == 6 && IS(3, "rounds") && IS(5, "reports")) {
                int64_t rn = parse_id(seg[4]);
                if (!rn || rn > 1000000000)
                    return srv_reply_error(r, 404, "not_found", "round \"%.32s\" not found",
                                           seg[4]);
                q->round = (int)rn;
                allowed = 1, id = post ? RT_REPORT : RT_NONE;
            } else if (n == 7 && IS(3, "rounds") && IS(5, "secagg")) {
                int64_t rn = parse_id(seg[4]);
                if (!rn || rn > 1000000000)
                    return srv_reply_error(r, 404, "not_found", "round \"%.32s\" not found",
                                           seg[4]);
                q->round = (int)rn;
                snprintf(q->version, sizeof q->version, "%s", seg[6]);
                if (IS(6, "keys") || IS(6, "survivors"))
                    allowed = 1, id = get ? RT_SA_GET : RT_NONE;
                else if (IS(6, "shares"))
                    allowed = 1, id = get ? RT_SA_GET : post ? RT_SA_POST : RT_NONE;
                else if (IS(6, "advertise") || IS(6, "unmask"))
                    allowed = 1, id = post ? RT_SA_POST : RT_NONE;
                else if (IS(6, "masked"))
                    allowed = 1, id = post ? RT_SA_MASKED : RT_NONE;
            }
        }
    }
#undef IS
    if (!allowed)
        return srv_reply_error(r, 404, "not_found", "no such path: %.200s", url);
    if (id == RT_NONE)
        return srv_reply_error(r, 405, "method_not_allowed", "%s is not allowed on %.200s",
                               method, url);
    q->route = id;
    return 0;
}

/* ---- replies ------------------------------------------------------------------------------------ */

static void free_blob_cb(void *cls) { srv_blob_release(cls); }

static enum MHD_Result respond(srv_server *s, struct MHD_Connection *conn, req *q, srv_reply *r)
{
    struct MHD_Response *resp;
    const char *ctype = "application/json";
    size_t len = 0;
    if (r->status == 304) {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else if (r->code || (!r->json && !r->blob)) {
        if (!r->code)
            srv_reply_error(r, 500, "internal", "no reply");
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "error", r->code);
        cJSON_AddStringToObject(e, "message", r->msg);
        char *txt = e ? cJSON_PrintUnformatted(e) : NULL;
        cJSON_Delete(e);
        len = txt ? strlen(txt) : 0;
        resp = txt ? MHD_create_response_from_buffer(len, txt, MHD_RESPMEM_MUST_FREE) : NULL;
        if (r->status >= 500 || r->status == 401 || r->status == 403)
            af_log(r->status >= 500 ? AF_LOG_ERROR : AF_LOG_INFO, "request_refused",
                   "status=%d error=%s message=\"%s\"", r->status, r->code, r->msg);
    } else if (r->blob) {
        srv_blob *b = r->blob;
        r->blob = NULL; /* the response owns the reference now */
        len = b->len;
        ctype = r->ctype ? r->ctype : "application/octet-stream";
        resp = MHD_create_response_from_buffer_with_free_callback_cls(b->len, b->data,
                                                                      free_blob_cb, b);
        if (!resp)
            srv_blob_release(b);
    } else {
        char *txt = cJSON_PrintUnformatted(r->json);
        len = txt ? strlen(txt) : 0;
        resp = txt ? MHD_create_response_from_buffer(len, txt, MHD_RESPMEM_MUST_FREE) : NULL;
    }
    if (!resp) {
        srv_reply_clear(r);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (q->route == RT_DASHBOARD) { /* the page holds an owner key: never framed or cached */
        MHD_add_response_header(resp, "X-Frame-Options", "DENY");
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    }
    if (r->etag[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, r->etag);
    if (q->route == RT_REPORT)
        atomic_fetch_add(&s->metrics.reports[r->code ? srv_metrics_report_index(r->code)
                                                     : SRV_REPORT_ACCEPTED], 1);
    atomic_fetch_add(&s->metrics.bytes_out, len);
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    srv_reply_clear(r);
    q->responded = 1;
    return ok;
}

/* ---- handlers ----------------------------------------------------------------------------------- */

static void handle_metrics(srv_server *s, srv_reply *r)
{
    size_t len;
    char *txt = srv_metrics_render(&s->metrics, srv_coord_devices(s->coord), &len);
    if (!txt) {
        srv_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    r->status = 200;
    r->ctype = "text/plain; version=0.0.4; charset=utf-8";
    r->blob = malloc(sizeof *r->blob + len);
    if (!r->blob) {
        free(txt);
        srv_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    atomic_init(&r->blob->refs, 1);
    r->blob->len = len;
    memcpy(r->blob->data, txt, len);
    free(txt);
}

static int content_type_is(struct MHD_Connection *conn, const char *want)
{
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    size_t n = strlen(want);
    return ct && strncasecmp(ct, want, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

/* The checks made on the headers alone: 0 to read the body, else the refusal in r. */
static int first_call(srv_server *s, struct MHD_Connection *conn, const char *method,
                      const char *url, req *q, srv_reply *r)
{
    int st = route(method, url, q, r);
    if (st)
        return st;
    if (routes[q->route].roles) {
        const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_AUTHORIZATION);
        const char *tok;
        size_t tlen;
        if (srv_bearer(auth, &tok, &tlen) || srv_coord_auth(s->coord, tok, tlen, &q->who)) {
            if (strstr(af_errmsg(), "database"))
                return srv_reply_error(r, 500, "internal", "%s", af_errmsg());
            return srv_reply_error(r, 401, "unauthorized", "%s", af_errmsg());
        }
        if (!(routes[q->route].roles & (int)q->who.role)) {
            static const char *const need[] = {"", "the admin key", "an owner API key", "",
                                               "a device token"};
            int want = routes[q->route].roles;
            return srv_reply_error(r, 403, "forbidden", "%s %s needs %s", method, url,
                                   want & SRV_DEVICE && want & SRV_OWNER ? "an owner or device token"
                                                                         : need[want]);
        }
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_TRANSFER_ENCODING);
    unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
    int has_body = declared > 0 || te != NULL;
    if (routes[q->route].body != BODY_NONE && has_body) {
        const char *want = routes[q->route].body == BODY_JSON ? "application/json"
                                                              : "application/octet-stream";
        if (!content_type_is(conn, want))
            return srv_reply_error(r, 415, "bad_content_type", "Content-Type must be %s", want);
        if (declared > s->max_body)
            return srv_reply_error(r, 413, "too_large", "body of %llu bytes is over the limit "
                                                        "of %zu", declared, s->max_body);
    }
    if (routes[q->route].body == BODY_BINARY && !has_body)
        return q->route == RT_SA_MASKED
                   ? srv_reply_error(r, 400, "bad_message", "empty body: expected a masked input")
                   : srv_reply_error(r, 400, "bad_safetensors", "empty body: expected a "
                                                                "safetensors file");
    if (q->route == RT_REPORT) { /* streamed: no body buffer */
        int st = srv_coord_report_begin(s->coord, &q->who, q->project, q->round,
                                        te ? 0 : (size_t)declared, &q->up, &q->cut_at, r);
        /* a stalled upload holds its round open: idle report connections close sooner */
        if (!st)
            MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, REPORT_IDLE_S);
        return st;
    }
    /* one allocation of the declared size (up to 4 MiB; bigger bodies grow as they arrive,
     * so a large Content-Length alone reserves little): no regrowth for an update */
    size_t first = declared < ((size_t)4 << 20) ? (size_t)declared : (size_t)4 << 20;
    if (routes[q->route].body != BODY_NONE && first > 0 && !(q->body = malloc(first)))
        return srv_reply_error(r, 500, "internal", "out of memory for a %zu-byte body", first);
    q->cap = q->body ? first : 0;
    return 0;
}

static void dispatch(srv_server *s, struct MHD_Connection *conn, req *q, srv_reply *r)
{
    cJSON *body = NULL;
    if (routes[q->route].body == BODY_JSON) {
        const char *end = NULL;
        body = q->len ? cJSON_ParseWithLengthOpts(q->body, q->len, &end, 0) : cJSON_CreateObject();
        if (!body) {
            srv_reply_error(r, 400, "bad_json", "malformed JSON body (at byte %zu)",
                            end && end >= q->body ? (size_t)(end - q->body) : (size_t)0);
            return;
        }
        if (!cJSON_IsObject(body)) {
            cJSON_Delete(body);
            srv_reply_error(r, 400, "bad_json", "body: expected a JSON object");
            return;
        }
    }
    switch (q->route) {
    case RT_HEALTH:
        r->status = 200;
        r->json = cJSON_CreateObject();
        cJSON_AddStringToObject(r->json, "status", "ok");
        break;
    case RT_METRICS:
        handle_metrics(s, r);
        break;
    case RT_OWNER_CREATE:
        srv_coord_owner_create(s->coord, body, r);
        break;
    case RT_SECRET_CREATE:
        srv_coord_secret_create(s->coord, r);
        break;
    case RT_ENROLL:
        srv_coord_device_enroll(s->coord, body, r);
        break;
    case RT_PROJECT_CREATE:
        srv_coord_project_create(s->coord, &q->who, body, r);
        break;
    case RT_PROJECT_LIST:
        srv_coord_project_list(s->coord, &q->who, r);
        break;
    case RT_PROJECT_GET:
        srv_coord_project_get(s->coord, &q->who, q->project, r);
        break;
    case RT_CKPT_PUT:
        srv_coord_checkpoint_put(s->coord, &q->who, q->project, q->body, q->len, r);
        break;
    case RT_CKPT_LIST:
        srv_coord_checkpoint_list(s->coord, &q->who, q->project, r);
        break;
    case RT_CKPT_GET:
        srv_coord_checkpoint_get(s->coord, &q->who, q->project, q->version,
                                 MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_IF_NONE_MATCH),
                                 r);
        break;
    case RT_CHECKIN:
        srv_coord_checkin(s->coord, &q->who, body, r);
        break;
    case RT_REPORT:
        srv_coord_report_finish(s->coord, &q->who, q->project, q->round, q->up, r);
        break;
    case RT_SA_GET:
        srv_coord_secagg_get(s->coord, &q->who, q->project, q->round, q->version, r);
        break;
    case RT_SA_POST:
        srv_coord_secagg_post(s->coord, &q->who, q->project, q->round, q->version, body, r);
        break;
    case RT_SA_MASKED:
        srv_coord_secagg_masked(s->coord, &q->who, q->project, q->round, q->body, q->len, r);
        break;
    case RT_DASHBOARD:
        srv_dashboard_page(r);
        break;
    default:
        srv_reply_error(r, 500, "internal", "unrouted request");
    }
    cJSON_Delete(body);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    srv_server *s = cls;
    req *q = *con_cls;
    srv_reply r = {0};
    (void)version;
    if (!q) {
        if (!(q = calloc(1, sizeof *q)))
            return MHD_NO;
        q->t0 = af_now();
        *con_cls = q;
        if (first_call(s, conn, method, url, q, &r))
            return respond(s, conn, q, &r);
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        atomic_fetch_add(&s->metrics.bytes_in, n);
        if (q->responded || q->overflow || routes[q->route].body == BODY_NONE)
            return MHD_YES;
        if (q->up) { /* a report: validated and spooled as it arrives */
            if (q->cut_at > 0 && store_now() > q->cut_at) {
                /* still arriving well past its round's deadline: drop the connection (the
                 * upload is released and taken back out of the round's sums) */
                af_log(AF_LOG_WARN, "upload_cut", "project=%lld round=%d device=%lld bytes=%zu "
                                                  "reason=\"past the round's deadline\"",
                       (long long)q->project, q->round, (long long)q->who.id, q->len);
                return MHD_NO;
            }
            q->len += n;
            if (q->len > s->max_body)
                q->overflow = 1;
            else
                srv_upload_feed(q->up, upload_data, n, &(srv_reply){0});
            return MHD_YES;
        }
        if (q->len + n > s->max_body) { /* a chunked body past the limit: drop the rest */
            q->overflow = 1;
            free(q->body);
            q->body = NULL;
            q->len = q->cap = 0;
            return MHD_YES;
        }
        if (q->len + n > q->cap) {
            size_t cap = q->cap ? q->cap : 4096;
            while (cap < q->len + n)
                cap *= 2;
            cap = cap > s->max_body ? s->max_body : cap;
            char *b = realloc(q->body, cap);
            if (!b)
                return MHD_NO;
            q->body = b;
            q->cap = cap;
        }
        memcpy(q->body + q->len, upload_data, n);
        q->len += n;
        return MHD_YES;
    }
    if (q->responded)
        return MHD_YES;
    if (q->overflow)
        srv_reply_error(&r, 413, "too_large", "body is over the limit of %zu bytes", s->max_body);
    else
        dispatch(s, conn, q, &r);
    return respond(s, conn, q, &r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    srv_server *s = cls;
    req *q = *con_cls;
    (void)conn;
    (void)toe;
    if (!q)
        return;
    srv_metrics_latency(&s->metrics, af_now() - q->t0);
    srv_upload_free(q->up);
    free(q->body);
    free(q);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    af_log(AF_LOG_WARN, "http", "message=\"%s\"", msg);
}

/* ---- timer ---------------------------------------------------------------------------------------- */

static void *timer_main(void *arg)
{
    srv_server *s = arg;
    pthread_mutex_lock(&s->tmu);
    while (!s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(s->tick_s * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        pthread_cond_timedwait(&s->tcv, &s->tmu, &ts);
        if (s->stop)
            break;
        pthread_mutex_unlock(&s->tmu);
        srv_coord_tick(s->coord);
        pthread_mutex_lock(&s->tmu);
    }
    pthread_mutex_unlock(&s->tmu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------------ */

static int resolve(const char *host, int port, struct sockaddr_storage *sa, int *v6)
{
    struct addrinfo hints = {0}, *res = NULL;
    char ps[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(ps, sizeof ps, "%d", port);
    int e = getaddrinfo(host, ps, &hints, &res);
    if (e || !res)
        return af_seterr(AF_EINVAL, "listen address '%s': %s", host ? host : "*",
                         e ? gai_strerror(e) : "no address");
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
}

int srv_server_start(const srv_server_config *cfg, srv_server **out)
{
    *out = NULL;
    srv_server *s = calloc(1, sizeof *s);
    if (!s)
        return af_seterr(AF_ENOMEM, "out of memory");
    pthread_mutex_init(&s->tmu, NULL);
    pthread_cond_init(&s->tcv, NULL);
    s->max_body = cfg->max_body ? cfg->max_body : (size_t)64 << 20;
    s->tick_s = cfg->tick_s > 0 ? cfg->tick_s : 0.05;
    int rc;
    if (!cfg->db_path || !cfg->db_path[0]) {
        rc = af_seterr(AF_EINVAL, "serve: a database path is required");
        goto fail;
    }
    if (cfg->port < 0 || cfg->port > 65535) {
        rc = af_seterr(AF_EINVAL, "serve: port %d is out of range", cfg->port);
        goto fail;
    }
    if (!cfg->tls_cert != !cfg->tls_key) {
        rc = af_seterr(AF_EINVAL, "serve: TLS needs both a certificate and a key");
        goto fail;
    }
    size_t len;
    if (cfg->tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            rc = af_seterr(AF_EINVAL, "serve: this libmicrohttpd was built without TLS");
            goto fail;
        }
        if ((rc = af_read_file(cfg->tls_cert, &s->tls_cert, &len)) ||
            (rc = af_read_file(cfg->tls_key, &s->tls_key, &len)))
            goto fail;
    }
    srv_coord_config cc = {
        .caps = {cfg->max_params ? cfg->max_params : 5000000,
                 cfg->max_flops > 0 ? cfg->max_flops : 1e9, 20000000},
        .max_body = s->max_body,
        .retry_after_s = cfg->retry_after_s,
        .durable_full = cfg->durable_full,
    };
    if ((rc = srv_coord_open(cfg->db_path, &cc, &s->metrics, &s->coord)))
        goto fail;
    struct sockaddr_storage sa;
    int v6 = 0;
    if ((rc = resolve(cfg->host, cfg->port, &sa, &v6)))
        goto fail;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    int threads = cfg->threads ? cfg->threads : 2;
    if (threads < 0)
        flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
    else
        flags |= MHD_USE_EPOLL;
    if (v6)
        flags |= MHD_USE_IPv6;
    if (s->tls_cert)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[8];
    int no = 0;
    opts[no++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 120, NULL};
    opts[no++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL};
    if (threads > 1)
        opts[no++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
    if (s->tls_cert) {
        opts[no++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert};
        opts[no++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key};
    }
    opts[no++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    s->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->d) {
        rc = af_seterr(AF_ENET, "serve: cannot listen on %s:%d (address in use, bad address, or "
                                "bad TLS files; see the log)", cfg->host ? cfg->host : "*",
                       cfg->port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->port;
    if (pthread_create(&s->timer, NULL, timer_main, s) != 0) {
        rc = af_seterr(AF_ENOMEM, "serve: cannot start the timer thread");
        goto fail;
    }
    s->timer_started = 1;
    af_log(AF_LOG_INFO, "listening", "host=%s port=%d tls=%d threads=%d db=%s",
           cfg->host ? cfg->host : "*", s->port, s->tls_cert != NULL, threads, cfg->db_path);
    *out = s;
    return 0;
fail:
    srv_server_stop(s);
    return rc;
}

int srv_server_port(const srv_server *s) { return s->port; }
const char *srv_server_admin_key_path(const srv_server *s)
{
    return srv_coord_admin_key_path(s->coord);
}
const char *srv_server_secret_path(const srv_server *s) { return srv_coord_secret_path(s->coord); }

void srv_server_stop(srv_server *s)
{
    if (!s)
        return;
    if (s->d)
        MHD_stop_daemon(s->d); /* waits for in-flight requests */
    if (s->timer_started) {
        pthread_mutex_lock(&s->tmu);
        s->stop = 1;
        pthread_cond_signal(&s->tcv);
        pthread_mutex_unlock(&s->tmu);
        pthread_join(s->timer, NULL);
    }
    srv_coord_free(s->coord);
    free(s->tls_cert);
    free(s->tls_key);
    pthread_mutex_destroy(&s->tmu);
    pthread_cond_destroy(&s->tcv);
    free(s);
}
