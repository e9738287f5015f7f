/* client.c — the public device library (include/artificien/client.h): enrolment and the
 * device token, the identity key for secure aggregation, check-in, the checkpoint cache,
 * local training and evaluation through task.c, the upload (kept and re-sent when the
 * network fails) or a secure-aggregation round through secround.c, the privacy ledger, and
 * the run loop with the server's pace steering and exponential backoff.
 * Layer `client`: core, nn, data, train, fed, libcurl (http.c), cJSON, libsodium. Never
 * SQLite or server code; never prints, never exits: errors are values with a message on the
 * handle.
 */
#include "artificien/client.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "client/http.h"
#include "client/secround.h"
#include "client/task.h"
#include "core/err.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/timer.h"
#include "fed/dp.h"
#include "fed/ledger.h"
#include "fed/secagg.h"
#include "fed/secwire.h"
#include "fed/strategy.h"
#include "nn/checkpoint.h"
#include "train/train.h"

_Static_assert(ARTIFICIEN_EINVAL == AF_EINVAL && ARTIFICIEN_ENET == AF_ENET &&
                   ARTIFICIEN_EAUTH == AF_EAUTH && ARTIFICIEN_ESTATE == AF_ESTATE &&
                   ARTIFICIEN_EFORMAT == AF_EFORMAT && ARTIFICIEN_ENOTFOUND == AF_ENOTFOUND,
               "public error codes must equal the engine's");

#define TOKEN_MAX 256
#define PENDING_MAX_TRIES 20
#define EVAL_BATCH 64

struct artificien_client {
    artificien_config cfg;       /* strings below are the client's copies */
    char *server, *secret, *token_file, *ledger_path;
    char token[TOKEN_MAX];
    artificien_data data;
    client_data_view view;
    char schema_json[512];
    client_http *http;
    volatile sig_atomic_t stop;
    char err[1024];
    af_rng jitter;
    double flops_per_s;          /* measured training speed (0 until the first task) */
    /* checkpoint cache: the last one downloaded */
    char ck_url[512], ck_etag[128];
    uint8_t *ck_buf;
    size_t ck_len;
    /* the model of the last task, rebuilt only when the spec changes */
    nn_model *model;
    float *global, *delta;
    /* an update whose upload failed, re-sent first by the next cycle */
    uint8_t *pend_buf;
    size_t pend_len;
    char pend_url[512];
    int pend_tries;
    artificien_result pend_result;
    /* the identity of secure aggregation: Ed25519, made at create, never written anywhere */
    uint8_t id_sk[SECAGG_SIGN_SK_BYTES];
    char identity[64];           /* base64 of the public key, sent with every check-in */
    client_secround_phase_fn on_phase; /* test hook (secround.h) */
    void *on_phase_user;
};

void artificien_config_init(artificien_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->threads = 1;
    cfg->seed = 1;
    cfg->timeout_s = 60;
    cfg->backoff_base_s = 1;
    cfg->backoff_max_s = 300;
    cfg->not_now_s = 60;
}

const char *artificien_strerror(int code) { return af_strerror(code); }

const char *artificien_errmsg(const artificien_client *c) { return c ? c->err : af_errmsg(); }

const char *artificien_client_token(const artificien_client *c) { return c->token; }

void artificien_client_stop(artificien_client *c) { c->stop = 1; }

double artificien_backoff(int failures, double base_s, double max_s, double u)
{
    if (failures <= 0)
        return 0.0;
    /* base·2^(k−1), computed without overflow for large k */
    double d = failures > 60 ? max_s : base_s * ldexp(1.0, failures - 1);
    if (d > max_s)
        d = max_s;
    if (u < 0)
        u = 0;
    if (u >= 1)
        u = 0.999999;
    return d * (0.8 + 0.4 * u);
}

/* Records the thread's message on the handle; returns rc. */
static int fail(artificien_client *c, int rc)
{
    snprintf(c->err, sizeof c->err, "%s", af_errmsg());
    return rc;
}

/* ---- token ---- */

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
}

static int token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n >= TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (t[i] <= ' ' || t[i] > '~')
            return 0;
    return 1;
}

/* Writes the token to path with mode 0600, atomically (temp file + rename). */
static int token_save(const char *path, const char *token)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return af_seterr(AF_EINVAL, "token file '%s': path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return af_seterr(AF_EIO, "token file %s: %s", tmp, strerror(errno));
    size_t n = strlen(token);
    int ok = write(fd, token, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return af_seterr(AF_EIO, "token file %s: %s", path, strerror(e));
    }
    return 0;
}

/* ---- create / free ---- */

static char *dup_or_null(const char *s, int *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

int artificien_client_create(const artificien_config *cfg, artificien_client **out)
{
    *out = NULL;
    if (!cfg)
        return af_seterr(AF_EINVAL, "config: required");
    if (!cfg->server || !*cfg->server)
        return af_seterr(AF_EINVAL, "config.server: the coordinator URL is required");
    if (!cfg->data)
        return af_seterr(AF_EINVAL, "config.data: the device's data is required");
    if (cfg->threads < 1 || cfg->threads > 64)
        return af_seterr(AF_EINVAL, "config.threads: need 1..64, got %d", cfg->threads);
    if (cfg->caps.max_epochs < 0 || !(cfg->caps.max_seconds >= 0) || !(cfg->timeout_s >= 0) ||
        !(cfg->backoff_base_s >= 0) || !(cfg->backoff_max_s >= 0) || !(cfg->not_now_s >= 0))
        return af_seterr(AF_EINVAL, "config: caps, timeouts and delays must be >= 0");
    if (cfg->ledger_path && (!cfg->ledger_path[0] || !(cfg->epsilon_limit > 0) ||
                             !isfinite(cfg->epsilon_limit)))
        return af_seterr(AF_EINVAL, "config.epsilon_limit: a ledger needs a finite limit > 0 "
                                    "(and config.ledger_path a file name)");
    artificien_client *c = calloc(1, sizeof *c);
    if (!c)
        return af_seterr(AF_ENOMEM, "client: out of memory");
    int rc = 0, oom = 0;
    c->cfg = *cfg;
    c->server = dup_or_null(cfg->server, &oom);
    c->secret = dup_or_null(cfg->enroll_secret, &oom);
    c->token_file = dup_or_null(cfg->token_file, &oom);
    c->ledger_path = dup_or_null(cfg->ledger_path, &oom);
    c->cfg.ledger_path = c->ledger_path;
    if (oom) {
        rc = af_seterr(AF_ENOMEM, "client: out of memory");
        goto fail;
    }
    artificien_caps *k = &c->cfg.caps;
    if (!k->max_params)
        k->max_params = 10000000;
    if (!k->max_epochs)
        k->max_epochs = 20;
    if (!k->max_seconds)
        k->max_seconds = 3600;
    if (!k->max_memory)
        k->max_memory = (size_t)1 << 30;
    if (!c->cfg.timeout_s)
        c->cfg.timeout_s = 60;
    if (!c->cfg.backoff_base_s)
        c->cfg.backoff_base_s = 1;
    if (!c->cfg.backoff_max_s)
        c->cfg.backoff_max_s = 300;
    c->data = *cfg->data;
    if ((rc = client_data_view_init(&c->data, &c->view)))
        goto fail;
    const data_schema *s = &c->view.ds.schema;
    snprintf(c->schema_json, sizeof c->schema_json,
             "{\"name\":\"%s\",\"kind\":\"%s\",\"shape\":[%d,%d,%d],\"classes\":%d}", s->name,
             s->kind == DATA_KIND_TABULAR ? "tabular" : "image", s->c, s->h, s->w, s->n_classes);
    if (strchr(s->name, '"') || strchr(s->name, '\\')) {
        rc = af_seterr(AF_EINVAL, "data.name: quotes and backslashes are not allowed");
        goto fail;
    }
    if (cfg->token) {
        if (!token_ok(cfg->token)) {
            rc = af_seterr(AF_EINVAL, "config.token: expected printable characters without spaces");
            goto fail;
        }
        snprintf(c->token, sizeof c->token, "%s", cfg->token);
    } else if (cfg->token_file && access(cfg->token_file, F_OK) == 0) {
        char *txt;
        size_t len;
        if ((rc = af_read_file(cfg->token_file, &txt, &len)))
            goto fail;
        trim(txt);
        int ok = token_ok(txt);
        if (ok)
            snprintf(c->token, sizeof c->token, "%s", txt);
        free(txt);
        if (!ok && !c->secret) {
            rc = af_seterr(AF_EINVAL, "token file %s: not a token, and no enrolment secret", cfg->token_file);
            goto fail;
        }
    }
    if (!c->token[0] && !c->secret) {
        rc = af_seterr(AF_EAUTH, "config: a device token (token or token_file) or an enrolment secret is required");
        goto fail;
    }
    if ((rc = client_http_create(c->server, c->cfg.timeout_s, &c->http)))
        goto fail;
    client_http_set_abort(c->http, &c->stop);
    uint8_t pk[SECAGG_SIGN_PK_BYTES];
    if ((rc = secagg_identity_keypair(pk, c->id_sk)))
        goto fail;
    sodium_bin2base64(c->identity, sizeof c->identity, pk, sizeof pk,
                      sodium_base64_VARIANT_ORIGINAL);
    af_rng_seed(&c->jitter, cfg->seed ^ (uint64_t)getpid() ^ (uint64_t)time(NULL), 7);
    *out = c;
    return 0;
fail:
    artificien_client_free(c);
    return rc;
}

void artificien_client_free(artificien_client *c)
{
    if (!c)
        return;
    client_http_free(c->http);
    client_data_view_clear(&c->view);
    nn_model_free(c->model);
    af_free(c->global);
    af_free(c->delta);
    free(c->ck_buf);
    free(c->pend_buf);
    free(c->server);
    free(c->secret);
    free(c->ledger_path);
    free(c->token_file);
    sodium_memzero(c->id_sk, sizeof c->id_sk);
    free(c);
}

void client_set_phase_hook(artificien_client *c, client_secround_phase_fn fn, void *user)
{
    c->on_phase = fn;
    c->on_phase_user = user;
}

/* ---- the protocol ---- */

static int enrol(artificien_client *c)
{
    char *txt = NULL;
    cJSON *body = cJSON_CreateObject();
    if (body) {
        cJSON *schema = cJSON_Parse(c->schema_json);
        cJSON_AddStringToObject(body, "secret", c->secret);
        if (schema && !cJSON_AddItemToObject(body, "dataset", schema))
            cJSON_Delete(schema);
        if (schema)
            txt = cJSON_PrintUnformatted(body);
        cJSON_Delete(body);
    }
    if (!txt)
        return af_seterr(AF_ENOMEM, "enrol: out of memory");
    client_http_resp r;
    int rc = client_http_request(c->http, "POST", "/v1/devices", NULL, "application/json", txt,
                                 strlen(txt), NULL, 65536, &r);
    free(txt);
    if (rc)
        return af_preerr(rc, "enrol");
    if (r.status != 201 && r.status != 200) {
        rc = client_http_status_error(&r, "POST", "/v1/devices");
        client_http_resp_free(&r);
        return rc;
    }
    cJSON *j = cJSON_ParseWithLength(r.body, r.len);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");
    if (!cJSON_IsString(tok) || !token_ok(tok->valuestring)) {
        cJSON_Delete(j);
        client_http_resp_free(&r);
        return af_seterr(AF_EFORMAT, "POST /v1/devices: the answer has no \"token\"");
    }
    snprintf(c->token, sizeof c->token, "%s", tok->valuestring);
    cJSON_Delete(j);
    client_http_resp_free(&r);
    if (c->token_file && (rc = token_save(c->token_file, c->token)))
        return rc;
    if (c->cfg.on_token)
        c->cfg.on_token(c->cfg.user, c->token);
    return 0;
}

/* POST /v1/checkin (the app's good_time has said yes: every condition is true). *task_root
 * is set (caller frees with cJSON_Delete) when told to train. */
static int checkin(artificien_client *c, artificien_result *res, cJSON **task_root,
                   const cJSON **task)
{
    *task_root = NULL;
    *task = NULL;
    const artificien_caps *k = &c->cfg.caps;
    char body[1536], speed[64] = "";
    /* what the coordinator needs to skip tasks this device would refuse: its caps, its
     * training samples and, once measured, its speed (the time estimate of the task check) */
    if (c->flops_per_s > 0)
        snprintf(speed, sizeof speed, ",\"flops_per_s\":%.4g", c->flops_per_s);
    snprintf(body, sizeof body,
             "{\"dataset\":%s,\"conditions\":{\"charging\":true,\"idle\":true,\"unmetered\":true},"
             "\"caps\":{\"max_params\":%zu,\"max_epochs\":%d,\"max_seconds\":%.0f,\"max_memory\":%zu},"
             "\"device\":{\"train_samples\":%zu%s},\"identity\":\"%s\"}",
             c->schema_json, k->max_params, k->max_epochs, k->max_seconds, k->max_memory,
             c->view.n_train, speed, c->identity);
    client_http_resp r;
    int rc = client_http_request(c->http, "POST", "/v1/checkin", c->token, "application/json",
                                 body, strlen(body), NULL, (size_t)16 << 20, &r);
    if (rc)
        return af_preerr(rc, "check-in");
    res->bytes_down += r.len;
    if (r.status == 401 && c->secret)
        c->token[0] = 0; /* unknown token (a new database?): enrol again next cycle */
    if (r.status != 200) {
        rc = client_http_status_error(&r, "POST", "/v1/checkin");
        client_http_resp_free(&r);
        return rc;
    }
    cJSON *j = cJSON_ParseWithLength(r.body, r.len);
    client_http_resp_free(&r);
    const cJSON *action = cJSON_GetObjectItemCaseSensitive(j, "action");
    if (!cJSON_IsString(action)) {
        cJSON_Delete(j);
        return af_seterr(AF_EFORMAT, "POST /v1/checkin: the answer has no \"action\"");
    }
    if (strcmp(action->valuestring, "wait") == 0) {
        const cJSON *ra = cJSON_GetObjectItemCaseSensitive(j, "retry_after");
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(j, "reason");
        res->action = ARTIFICIEN_WAIT;
        if (cJSON_IsString(why))
            snprintf(res->reason, sizeof res->reason, "%s", why->valuestring);
        res->retry_after = cJSON_IsNumber(ra) && ra->valuedouble >= 0 && ra->valuedouble < 86400 * 7
                               ? ra->valuedouble
                               : 10.0;
        cJSON_Delete(j);
        return 0;
    }
    if (strcmp(action->valuestring, "train") != 0) {
        rc = af_seterr(AF_EFORMAT, "POST /v1/checkin: unknown action '%s'", action->valuestring);
        cJSON_Delete(j);
        return rc;
    }
    *task_root = j;
    *task = cJSON_GetObjectItemCaseSensitive(j, "task");
    return 0;
}

/* Gets the task's checkpoint into c->ck_buf (conditional GET when the URL is cached). */
static int fetch_checkpoint(artificien_client *c, const client_task *t, size_t n_params,
                            artificien_result *res)
{
    int same = strcmp(c->ck_url, t->checkpoint) == 0 && c->ck_buf;
    client_http_resp r;
    size_t max = n_params * sizeof(float) + ((size_t)4 << 20); /* tensors + header + metadata */
    int rc = client_http_request(c->http, "GET", t->checkpoint, c->token, NULL, NULL, 0,
                                 same ? c->ck_etag : NULL, max, &r);
    if (rc)
        return af_preerr(rc, "checkpoint");
    res->bytes_down += r.len;
    if (r.status == 304 && same) {
        res->cached = 1;
        client_http_resp_free(&r);
        return 0;
    }
    if (r.status != 200) {
        rc = client_http_status_error(&r, "GET", t->checkpoint);
        client_http_resp_free(&r);
        return rc;
    }
    free(c->ck_buf);
    c->ck_buf = (uint8_t *)r.body; /* take the buffer over */
    c->ck_len = r.len;
    snprintf(c->ck_url, sizeof c->ck_url, "%s", t->checkpoint);
    snprintf(c->ck_etag, sizeof c->ck_etag, "%s", r.etag);
    return 0;
}

/* Uploads the pending update; fills res from the ack or the refusal. The pending update is
 * dropped on any answer from the server and kept on a network error. */
static int upload(artificien_client *c, artificien_result *res)
{
    *res = c->pend_result;
    client_http_resp r;
    int rc = client_http_request(c->http, "POST", c->pend_url, c->token, "application/octet-stream",
                                 c->pend_buf, c->pend_len, NULL, 65536, &r);
    if (!rc && r.status >= 500) {
        rc = client_http_status_error(&r, "POST", c->pend_url);
        client_http_resp_free(&r);
    }
    if (rc) {
        if (++c->pend_tries >= PENDING_MAX_TRIES) {
            free(c->pend_buf);
            c->pend_buf = NULL;
            return af_preerr(rc, "upload (given up after %d tries)", PENDING_MAX_TRIES);
        }
        return af_preerr(rc, "upload (kept, will retry)");
    }
    free(c->pend_buf);
    c->pend_buf = NULL;
    res->bytes_up += c->pend_len;
    if (r.status == 200 || r.status == 201) {
        cJSON *j = cJSON_ParseWithLength(r.body, r.len);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "reports");
        res->action = ARTIFICIEN_TRAINED;
        res->reports = cJSON_IsNumber(n) ? n->valueint : 0;
        cJSON_Delete(j);
        client_http_resp_free(&r);
        return 0;
    }
    if (r.status == 401 && c->secret)
        c->token[0] = 0;
    if (r.status == 401) {
        rc = client_http_status_error(&r, "POST", c->pend_url);
        client_http_resp_free(&r);
        return rc;
    }
    res->action = ARTIFICIEN_REJECTED;
    res->http_status = r.status;
    client_http_error(&r, res->reason, sizeof res->reason, res->message, sizeof res->message);
    if (!res->reason[0])
        snprintf(res->reason, sizeof res->reason, "http_%ld", r.status);
    client_http_resp_free(&r);
    if (c->pend_tries > 0 && r.status == 409 && strcmp(res->reason, "duplicate") == 0) {
        /* a re-send after a failed exchange: the first one reached the disk, its ack did not */
        res->action = ARTIFICIEN_TRAINED;
        res->http_status = 0;
        res->reason[0] = 0;
        snprintf(res->message, sizeof res->message, "accepted before the connection failed");
    }
    return 0;
}

/* Makes c->model the task's model (reusing it when the spec is the same) with room for the
 * received weights and the update. 0, 1 (refused, res filled) or an error. */
static int prepare_model(artificien_client *c, const client_task *t, artificien_result *res)
{
    if (c->model && strcmp(c->model->spec_json, t->spec_json) == 0)
        return 0;
    /* both specs are cJSON's compact print of the same object when the spec is unchanged */
    nn_model *m;
    int rc = client_task_build(t, c->cfg.caps.max_params, &m, res->reason, sizeof res->reason,
                               res->message, sizeof res->message);
    if (rc)
        return rc;
    float *g = af_alloc(sizeof(float) * m->n_params), *d = af_alloc(sizeof(float) * m->n_params);
    if (!g || !d) {
        af_free(g);
        af_free(d);
        nn_model_free(m);
        return af_seterr(AF_ENOMEM, "out of memory for a model of %zu parameters", m->n_params);
    }
    nn_model_free(c->model);
    af_free(c->global);
    af_free(c->delta);
    c->model = m;
    c->global = g;
    c->delta = d;
    return 0;
}

/* The ledger's name for a project. */
static void ledger_id(const client_task *t, char *buf, size_t cap)
{
    snprintf(buf, cap, "project-%d", t->project);
}

/* What a task costs in the ledger: 1 with its noise multiplier z when it is charged (DP:
 * plan.dp_noise, with or without secure aggregation — adaptive clipping's two releases
 * together cost what z alone does; label_stats: its stats_noise), 0 when it is not. */
static int ledger_cost(const client_task *t, double *z)
{
    if (t->secagg.on && t->secagg.wire.kind == SECWIRE_LABELS) {
        *z = t->secagg.wire.stats_noise;
        return 1;
    }
    *z = t->plan.dp_noise;
    return t->plan.dp_clip > 0;
}

/* Would this task take its project past the device's ε limit? 0 yes/no ledger/no DP, 1
 * refused (res filled), or an error (a corrupt ledger is an error, never a silent reset).
 * Each participation is charged as (q = 1, z, 1 step): the device cannot know the rate it
 * was sampled at, and q = 1 claims no amplification (fed/ledger.h). */
static int ledger_allows(artificien_client *c, const client_task *t, artificien_result *res)
{
    const client_plan *p = &t->plan;
    double z;
    if (!c->cfg.ledger_path || !ledger_cost(t, &z))
        return 0;
    ledger *l;
    char id[64];
    double after = INFINITY;
    int ok = 0, rc = ledger_open(c->cfg.ledger_path, &l);
    if (rc)
        return rc;
    ledger_id(t, id, sizeof id);
    rc = ledger_check(l, id, 1.0, z, 1, p->dp_delta, c->cfg.epsilon_limit, &after, &ok);
    ledger_free(l);
    if (rc)
        return rc;
    if (ok)
        return 0;
    snprintf(res->reason, sizeof res->reason, "privacy_budget");
    snprintf(res->message, sizeof res->message, "project %d: epsilon would reach %.4g at "
             "delta %g, over this device's limit %g: not trained", t->project, after,
             p->dp_delta, c->cfg.epsilon_limit);
    return 1;
}

/* Records the participation in the ledger (when one is configured and the task costs). */
static int ledger_charge(artificien_client *c, const client_task *t)
{
    double z;
    if (!c->cfg.ledger_path || !ledger_cost(t, &z))
        return 0;
    ledger *l;
    char id[64];
    int rc = ledger_open(c->cfg.ledger_path, &l);
    if (rc)
        return rc;
    ledger_id(t, id, sizeof id);
    rc = ledger_record(l, id, 1.0, z, 1, t->plan.dp_delta, 0);
    ledger_free(l);
    return rc;
}

/* The task's checkpoint, loaded into c->model and copied to c->global. */
static int load_checkpoint(artificien_client *c, const client_task *t, artificien_result *res)
{
    nn_model *m = c->model;
    int rc = fetch_checkpoint(c, t, m->n_params, res);
    if (rc)
        return rc;
    char what[600];
    snprintf(what, sizeof what, "checkpoint %s", t->checkpoint);
    if ((rc = nn_checkpoint_load_into(m, c->ck_buf, c->ck_len, what))) {
        c->ck_url[0] = 0; /* never trust that cache entry again */
        return rc;
    }
    memcpy(c->global, m->params, sizeof(float) * m->n_params);
    return 0;
}

/* Federated evaluation of the received model (when the plan asks) into *ev, then local
 * training: c->delta = local − received, res's statistics and update_norm filled. 0, 1
 * (abandoned: res filled, nothing may be sent) or an error. */
static int train_local(artificien_client *c, const client_task *t, train_eval *ev,
                       client_train_stats *st, artificien_result *res)
{
    nn_model *m = c->model;
    const client_plan *p = &t->plan;
    int rc;
    memset(ev, 0, sizeof *ev);
    if (p->eval_every > 0 && t->round % p->eval_every == 0 && c->view.n_heldout > 0) {
        nn_ws *ws = nn_ws_create(m, EVAL_BATCH);
        if (!ws)
            return af_seterr(AF_ENOMEM, "evaluation: out of memory");
        rc = train_evaluate(m, &ws, NULL, &c->view.ds, c->view.heldout, c->view.n_heldout, ev);
        nn_ws_free(ws);
        if (rc)
            return rc;
        res->eval_samples = ev->n;
        res->eval_loss = ev->loss;
        for (int i = 0; i < ev->k; i++)
            res->eval_correct += ev->confusion[i * ev->k + i];
    }
    uint64_t seed = c->cfg.seed ^ ((uint64_t)t->project << 40) ^ ((uint64_t)t->attempt << 32);
    if ((rc = client_train(m, c->global, p, &c->view, t->round, c->cfg.threads, seed,
                           c->cfg.caps.max_seconds, &c->stop, c->delta, st)))
        return rc;
    res->train_samples = st->samples;
    res->steps = st->steps;
    res->train_loss = st->loss;
    res->train_seconds = st->seconds;
    if (st->abandoned) {
        res->action = ARTIFICIEN_ABANDONED;
        snprintf(res->reason, sizeof res->reason, "%s", c->stop ? "stopped" : "max_seconds");
        snprintf(res->message, sizeof res->message, "local training %s after %.1f s: nothing sent",
                 c->stop ? "stopped" : "ran past max_seconds", st->seconds);
        res->retry_after = c->cfg.not_now_s;
        return 1;
    }
    if (st->seconds > 0) {
        double rate = 3.0 * m->flops_fwd * (double)st->samples * p->local_epochs / st->seconds;
        c->flops_per_s = c->flops_per_s > 0 ? 0.5 * (c->flops_per_s + rate) : rate;
    }
    res->update_norm = client_l2(c->delta, m->n_params);
    return 0;
}

/* ---- secure aggregation: what the device feeds into the round (secround.c drives it) ---- */

typedef struct sa_job {
    artificien_client *c;
    const client_task *t;
    train_eval ev;
    client_train_stats st;
} sa_job;

static int sa_prepare(void *user, artificien_result *res)
{
    sa_job *j = user;
    return load_checkpoint(j->c, j->t, res);
}

/* The device's vector: its label counts, or its trained update (weighted, or clipped and
 * noised with DP); the ledger is charged before the masked input leaves. */
static int sa_input(void *user, const secwire_layout *L, af_rng *noise, uint32_t *words,
                    artificien_result *res)
{
    sa_job *j = user;
    artificien_client *c = j->c;
    int rc;
    if (L->p.kind == SECWIRE_LABELS) {
        uint32_t counts[POPSTATS_MAX_CLASSES];
        client_count_labels(&c->view, counts);
        res->train_samples = c->view.n_train;
        if ((rc = secwire_encode_labels(L, counts, noise, words)))
            return rc;
        return ledger_charge(c, j->t);
    }
    if ((rc = train_local(c, j->t, &j->ev, &j->st, res)))
        return rc;
    secwire_report rep = {
        .num_samples = (double)j->st.samples,
        .loss = j->st.loss,
        .eval_samples = (double)j->ev.n,
        .eval_correct = (double)res->eval_correct,
        .eval_loss = j->ev.loss,
        .confusion = j->ev.k == L->classes ? j->ev.confusion : NULL,
    };
    if ((rc = secwire_encode_train(L, c->delta, &rep, noise, words, NULL)))
        return rc;
    return ledger_charge(c, j->t);
}

static int secure_round(artificien_client *c, const client_task *t, const secwire_layout *L,
                        artificien_result *res)
{
    sa_job j = {.c = c, .t = t};
    client_secround_io io = {
        .http = c->http,
        .token = c->token,
        .stop = &c->stop,
        .sign_sk = c->id_sk,
        .prepare = L->p.kind == SECWIRE_TRAIN ? sa_prepare : NULL,
        .input = sa_input,
        .user = &j,
        .on_phase = c->on_phase,
        .phase_user = c->on_phase_user,
    };
    int rc = client_secround_run(&io, t, L, res);
    if (rc == AF_EAUTH && c->secret)
        c->token[0] = 0; /* a 401: enrol again next cycle, as after a check-in */
    if (!rc && res->action == ARTIFICIEN_ABANDONED)
        res->retry_after = c->cfg.not_now_s;
    if (!rc && res->action == ARTIFICIEN_REJECTED) {
        /* out of this attempt for good: come back once it is over, not in a tight loop */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double left = t->secagg.deadline[CLIENT_SA_UNMASK] - (double)now.tv_sec - 1e-9 * now.tv_nsec;
        res->retry_after = left > 0 ? (left < 86400 ? left : 86400) : 0;
    }
    return rc;
}

static int run_task(artificien_client *c, const client_task *t, artificien_result *res)
{
    res->project = t->project;
    res->round = t->round;
    res->attempt = t->attempt;
    res->version = t->version;
    secwire_layout L;
    int rc = prepare_model(c, t, res);
    if (rc < 0)
        return rc;
    if (rc == 0 && client_task_check(&c->cfg.caps, t, c->model, &c->view, c->cfg.threads,
                                     c->flops_per_s, res->reason, sizeof res->reason,
                                     res->message, sizeof res->message))
        rc = 1;
    if (rc == 0 && t->secagg.on &&
        client_secagg_layout(t, c->model, &L, res->reason, sizeof res->reason, res->message,
                             sizeof res->message))
        rc = 1;
    if (rc == 0 && (rc = ledger_allows(c, t, res)) < 0)
        return rc;
    if (rc == 1) {
        res->action = ARTIFICIEN_REFUSED;
        res->retry_after = c->cfg.not_now_s > 0 ? c->cfg.not_now_s : 60;
        return 0;
    }
    if (t->secagg.on)
        return secure_round(c, t, &L, res);
    nn_model *m = c->model;
    const client_plan *p = &t->plan;
    train_eval ev;
    client_train_stats st;
    if ((rc = load_checkpoint(c, t, res)) || (rc = train_local(c, t, &ev, &st, res)))
        return rc < 0 ? rc : 0;
    int clipped = 0;
    if (p->dp_clip > 0) { /* DP-FedAvg: the coordinator refuses anything over S */
        if ((rc = dp_clip_l2(c->delta, m->n_params, t->dp_clip, NULL, &clipped)))
            return rc;
        /* charged before the update leaves: a crash after this over-counts, never under */
        if ((rc = ledger_charge(c, t)))
            return rc;
    }
    client_report rep = {
        .project = t->project,
        .round = t->round,
        .attempt = t->attempt,
        .version = t->version,
        .num_samples = st.samples,
        .loss = st.loss,
        .steps = st.steps,
        .tau = strcmp(p->strategy, "fednova") == 0 ? fed_nova_tau((double)st.steps, p->opt.kind == NN_OPT_SGD ? p->opt.momentum : 0.0) : 0,
        .eval_samples = ev.n,
        .eval_correct = res->eval_correct,
        .eval_loss = ev.loss,
        .k = ev.k,
        .confusion = ev.confusion,
        /* adaptive clipping: the coordinator moves S with the fraction of unclipped updates */
        .has_unclipped = p->dp_clip > 0 && p->dp_adaptive_quantile > 0,
        .unclipped = !clipped,
    };
    uint8_t *buf;
    size_t len;
    if ((rc = client_delta_serialize(m, c->delta, &rep, &buf, &len)))
        return rc;
    free(c->pend_buf);
    c->pend_buf = buf;
    c->pend_len = len;
    c->pend_tries = 0;
    snprintf(c->pend_url, sizeof c->pend_url, "%s", t->report);
    c->pend_result = *res;
    return upload(c, res);
}

int artificien_client_run_once(artificien_client *c, artificien_result *res)
{
    memset(res, 0, sizeof *res);
    c->err[0] = 0;
    int rc;
    if (c->pend_buf)
        return (rc = upload(c, res)) ? fail(c, rc) : 0;
    if (!c->token[0]) {
        if (!c->secret)
            return fail(c, af_seterr(AF_EAUTH, "the device token was refused and there is no enrolment secret"));
        if ((rc = enrol(c)))
            return fail(c, rc);
    }
    if (c->cfg.good_time && !c->cfg.good_time(c->cfg.user)) {
        res->action = ARTIFICIEN_NOT_NOW;
        res->retry_after = c->cfg.not_now_s;
        return 0;
    }
    cJSON *root;
    const cJSON *tj;
    if ((rc = checkin(c, res, &root, &tj)))
        return fail(c, rc);
    if (!root)
        return 0; /* wait */
    client_task t;
    rc = client_task_parse(tj, &t);
    cJSON_Delete(root);
    if (rc)
        return fail(c, af_preerr(rc, "POST /v1/checkin"));
    rc = run_task(c, &t, res);
    client_task_clear(&t);
    return rc ? fail(c, rc) : 0;
}

/* Sleeps up to `seconds`, waking early when stop is requested. */
static void nap(artificien_client *c, double seconds)
{
    double end = af_now() + seconds;
    while (!c->stop) {
        double left = end - af_now();
        if (left <= 0)
            break;
        if (left > 0.05)
            left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

int artificien_client_run(artificien_client *c, const artificien_run_opts *opts)
{
    artificien_run_opts o = {0};
    if (opts)
        o = *opts;
    int failures = 0;
    long tasks = 0;
    while (!c->stop) {
        artificien_result r;
        int rc = artificien_client_run_once(c, &r);
        double delay;
        if (rc < 0) {
            failures++;
            delay = artificien_backoff(failures, c->cfg.backoff_base_s, c->cfg.backoff_max_s,
                                       af_rng_uniform(&c->jitter));
            if (rc == AF_EAUTH && !c->secret)
                return rc;
            if (o.max_failures > 0 && failures >= o.max_failures)
                return rc;
        } else {
            failures = 0;
            delay = r.retry_after;
            tasks += r.action == ARTIFICIEN_TRAINED || r.action == ARTIFICIEN_COUNTED;
        }
        if (c->stop)
            break;
        if (o.on_cycle && o.on_cycle(o.user, rc, rc < 0 ? NULL : &r, delay))
            break;
        if (o.max_tasks > 0 && tasks >= o.max_tasks)
            break;
        nap(c, delay);
    }
    return 0;
}

/* ---- files ---- */

typedef struct owned_data {
    artificien_data d;   /* first: artificien_data_free casts back */
    data_dataset *ds;
} owned_data;

int artificien_data_load(const char *where, double heldout_frac, artificien_data **out)
{
    *out = NULL;
    if (!(heldout_frac >= 0 && heldout_frac < 1))
        return af_seterr(AF_ERANGE, "heldout_frac must be in [0, 1), got %g", heldout_frac);
    owned_data *o = calloc(1, sizeof *o);
    if (!o)
        return af_seterr(AF_ENOMEM, "data: out of memory");
    /* bytes and their table, not floats: a quarter of the memory for the same numbers */
    int rc = data_load_fashion_mnist_u8(where, 1, 0.2860f, 0.3530f, 0, &o->ds);
    if (rc) {
        free(o);
        return rc;
    }
    const data_dataset *ds = o->ds;
    o->d.name = ds->schema.name;
    o->d.tabular = ds->schema.kind == DATA_KIND_TABULAR;
    o->d.channels = ds->schema.c;
    o->d.height = ds->schema.h;
    o->d.width = ds->schema.w;
    o->d.classes = ds->schema.n_classes;
    o->d.x8 = ds->x8;
    o->d.lut = ds->lut;
    o->d.y = ds->y;
    o->d.n = ds->n;
    o->d.n_heldout = (size_t)llround(heldout_frac * (double)ds->n);
    if (o->d.n_heldout >= ds->n)
        o->d.n_heldout = ds->n - 1;
    *out = &o->d;
    return 0;
}

void artificien_data_free(artificien_data *d)
{
    if (!d)
        return;
    owned_data *o = (owned_data *)d;
    data_dataset_free(o->ds);
    free(o);
}
