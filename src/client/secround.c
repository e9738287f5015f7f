/* secround.c — one secure-aggregation round as a device speaks it over HTTP (secround.h):
 * the seven requests under task.secagg.url, polling the three GETs while their phase is
 * open, the records of fed/secwire.h in and out, the protocol state in a secagg_client.
 * Layer `client`: core, fed, client/http, cJSON, libsodium. Prints nothing; the round's
 * secrets (secagg_client, the plaintext vector, the noise generator) are wiped on every exit.
 */
#include "client/secround.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/err.h"
#include "fed/secagg.h"

enum { SR_END = 1, SR_WAIT = 2 }; /* besides 0 (go on) and negative errors */

typedef struct sr {
    const client_secround_io *io;
    const client_task *t;
    artificien_result *res;
} sr;

/* Unix time: the deadlines are the coordinator's wall-clock seconds. */
static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int stopped(const sr *s) { return s->io->stop && *s->io->stop; }

/* Ends the round for this device with action a: res filled, returns SR_END. */
static int sr_end(sr *s, artificien_action a, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int sr_end(sr *s, artificien_action a, const char *reason, const char *fmt, ...)
{
    s->res->action = a;
    snprintf(s->res->reason, sizeof s->res->reason, "%s", reason);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->res->message, sizeof s->res->message, fmt, ap);
    va_end(ap);
    return SR_END;
}

static int sr_stopped(sr *s, const char *step)
{
    return sr_end(s, ARTIFICIEN_ABANDONED, "stopped",
                  "stopped during secure aggregation (%s): this device left the round", step);
}

/* Sleeps `seconds`, waking every 50 ms to look at the stop flag. 1 if stopped. */
static int sr_nap(sr *s, double seconds)
{
    double end = unix_now() + seconds;
    while (!stopped(s)) {
        double left = end - unix_now();
        if (left <= 0)
            return 0;
        if (left > 0.05)
            left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
    return 1;
}

/* One exchange with URL/step. Returns 0 (2xx, *r filled: caller frees), SR_WAIT (a GET's
 * 202, *r filled), SR_END (refused or stopped: res filled, nothing to free) or an error. */
static int sr_call(sr *s, const char *method, const char *step, const char *ctype,
                   const void *body, size_t len, size_t max, client_http_resp *r)
{
    if (stopped(s))
        return sr_stopped(s, step);
    char path[640];
    snprintf(path, sizeof path, "%s/%s", s->t->secagg.url, step);
    int rc = client_http_request(s->io->http, method, path, s->io->token, ctype, body, len, NULL,
                                 max, r);
    if (rc)
        return stopped(s) ? sr_stopped(s, step) : af_preerr(rc, "secure aggregation");
    s->res->bytes_up += len;
    s->res->bytes_down += r->len;
    if (r->status == 202 && strcmp(method, "GET") == 0)
        return SR_WAIT;
    if (r->status >= 200 && r->status < 300)
        return 0;
    if (r->status == 401 || r->status < 400 || r->status >= 500) {
        rc = client_http_status_error(r, method, path);
        client_http_resp_free(r);
        return rc;
    }
    /* any other 4xx: the coordinator dropped this device from the round */
    char code[64], msg[200];
    client_http_error(r, code, sizeof code, msg, sizeof msg);
    if (!code[0])
        snprintf(code, sizeof code, "http_%ld", r->status);
    s->res->http_status = r->status;
    client_http_resp_free(r);
    return sr_end(s, ARTIFICIEN_REJECTED, code, "%s %s: %s", method, step, msg[0] ? msg : code);
}

/* GETs URL/step until its phase has closed: 202 answers are retried after their
 * retry_after, but never past the phase's deadline (plus the grace). */
static int sr_poll(sr *s, const char *step, int phase, size_t max, client_http_resp *r)
{
    const double until = s->t->secagg.deadline[phase] + CLIENT_SECROUND_GRACE_S;
    for (;;) {
        int rc = sr_call(s, "GET", step, NULL, NULL, 0, max, r);
        if (rc != SR_WAIT)
            return rc;
        double wait = 0.5;
        cJSON *j = cJSON_ParseWithLength(r->body, r->len);
        const cJSON *ra = cJSON_GetObjectItemCaseSensitive(j, "retry_after");
        if (cJSON_IsNumber(ra) && isfinite(ra->valuedouble))
            wait = ra->valuedouble;
        cJSON_Delete(j);
        client_http_resp_free(r);
        wait = wait < 0.02 ? 0.02 : wait > 5 ? 5 : wait;
        double left = until - unix_now();
        if (left <= 0)
            return sr_end(s, ARTIFICIEN_REJECTED, "secagg_deadline",
                          "GET %s: the phase was still open %.1f s after its deadline", step,
                          CLIENT_SECROUND_GRACE_S);
        if (sr_nap(s, wait < left ? wait : left))
            return sr_stopped(s, step);
    }
}

/* The protocol state refused what the coordinator sent (a list that fails this device's
 * checks): the device leaves the round. Out of memory stays an error. */
static int sr_refuse(sr *s, int rc, const char *step)
{
    if (rc == AF_ENOMEM)
        return rc;
    return sr_end(s, ARTIFICIEN_REJECTED, "secagg", "%s: %s", step, af_errmsg());
}

static int sr_phase(sr *s, const char *phase)
{
    const client_secround_io *io = s->io;
    if (io->on_phase && io->on_phase(io->phase_user, s->res, phase))
        return sr_end(s, ARTIFICIEN_ABANDONED, "dropped", "left the round after phase %s", phase);
    return 0;
}

/* Adds base64(bin[len]) under key. 0 or AF_ENOMEM. */
static int add_b64(cJSON *o, const char *key, const void *bin, size_t len)
{
    char *b = secwire_b64(bin, len);
    int ok = b && cJSON_AddStringToObject(o, key, b);
    free(b);
    return ok ? 0 : af_seterr(AF_ENOMEM, "secure aggregation: out of memory");
}

/* POSTs a JSON object (consumed) to URL/step. */
static int sr_post_json(sr *s, const char *step, cJSON *o)
{
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt)
        return af_seterr(AF_ENOMEM, "secure aggregation: out of memory");
    client_http_resp r;
    int rc = sr_call(s, "POST", step, "application/json", txt, strlen(txt), 65536, &r);
    free(txt);
    if (rc == 0)
        client_http_resp_free(&r);
    return rc;
}

/* The base64 string field `key` of a JSON answer, decoded into whole records of rec bytes. */
static int sr_records(const client_http_resp *r, const char *step, const char *key, size_t rec,
                      uint8_t **out, size_t *count)
{
    char what[96];
    snprintf(what, sizeof what, "GET %s: \"%s\"", step, key);
    cJSON *j = cJSON_ParseWithLength(r->body, r->len);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, key);
    size_t len = 0;
    int rc = secwire_unb64(cJSON_IsString(f) ? f->valuestring : NULL, what, rec, 0, out, &len);
    cJSON_Delete(j);
    *count = rc ? 0 : len / rec;
    return rc;
}

static int advertise(sr *s, secagg_client *sc)
{
    secagg_advertise a;
    int rc = secagg_client_advertise(sc, &a);
    if (rc)
        return sr_refuse(s, rc, "advertise");
    cJSON *o = cJSON_CreateObject();
    if (!o || add_b64(o, "c_pk", a.c_pk, sizeof a.c_pk) || add_b64(o, "s_pk", a.s_pk, sizeof a.s_pk) ||
        add_b64(o, "sig", a.sig, sizeof a.sig)) {
        cJSON_Delete(o);
        return af_seterr(AF_ENOMEM, "secure aggregation: out of memory");
    }
    return sr_post_json(s, "advertise", o);
}

/* GET keys (U1), then POST this device's encrypted shares to every other member. */
static int share_keys(sr *s, secagg_client *sc)
{
    const uint32_t n = s->t->secagg.wire.n;
    client_http_resp r;
    int rc = sr_poll(s, "keys", CLIENT_SA_ADVERTISE, (size_t)n * 200 + 65536, &r);
    if (rc)
        return rc;
    uint8_t *raw = NULL;
    size_t k = 0;
    rc = sr_records(&r, "keys", "keys", SECWIRE_KEY_REC, &raw, &k);
    client_http_resp_free(&r);
    if (rc)
        return rc;
    secagg_advertise *list = malloc(sizeof *list * (k ? k : 1));
    if (!list) {
        free(raw);
        return af_seterr(AF_ENOMEM, "secure aggregation: out of memory");
    }
    for (size_t i = 0; i < k; i++)
        secwire_get_key(raw + i * SECWIRE_KEY_REC, s->t->secagg.round_id, &list[i]);
    free(raw);
    const secagg_share_keys *m = NULL;
    rc = secagg_client_share_keys(sc, list, k, &m);
    free(list);
    if (rc)
        return sr_refuse(s, rc, "GET keys");
    uint8_t *recs = malloc((size_t)SECWIRE_SHARE_REC * (m->n_shares ? m->n_shares : 1));
    cJSON *o = cJSON_CreateObject();
    if (recs && o)
        for (uint32_t i = 0; i < m->n_shares; i++)
            secwire_put_share(recs + (size_t)i * SECWIRE_SHARE_REC, &m->shares[i]);
    if (!recs || !o || add_b64(o, "b_commit", m->b_commit, sizeof m->b_commit) ||
        add_b64(o, "sig", m->sig, sizeof m->sig) ||
        add_b64(o, "shares", recs, (size_t)SECWIRE_SHARE_REC * m->n_shares)) {
        free(recs);
        cJSON_Delete(o);
        return af_seterr(AF_ENOMEM, "secure aggregation: out of memory");
    }
    free(recs);
    return sr_post_json(s, "shares", o);
}

/* GET the shares addressed to this device (their senders are U2). */
static int receive_shares(sr *s, secagg_client *sc)
{
    const uint32_t n = s->t->secagg.wire.n;
    client_http_resp r;
    int rc = sr_poll(s, "shares", CLIENT_SA_SHARE_KEYS, (size_t)n * 200 + 65536, &r);
    if (rc)
        return rc;
    uint8_t *raw = NULL;
    size_t k = 0;
    rc = sr_records(&r, "shares", "shares", SECWIRE_SHARE_REC, &raw, &k);
    client_http_resp_free(&r);
    if (rc)
        return rc;
    if (k >= n) {
        free(raw);
        return af_seterr(AF_EFORMAT, "GET shares: %zu shares for a round of %u devices", k, n);
    }
    secagg_enc_share *in = malloc(sizeof *in * (k ? k : 1));
    if (!in) {
        free(raw);
        return af_seterr(AF_ENOMEM, "secure aggregation: out of memory");
    }
    for (size_t i = 0; i < k; i++)
        secwire_get_share(raw + i * SECWIRE_SHARE_REC, &in[i]);
    free(raw);
    rc = secagg_client_receive_shares(sc, in, k);
    free(in);
    /* a share that fails to verify only costs its reveal later: go on without it */
    if (rc && rc != AF_EAUTH)
        return sr_refuse(s, rc, "GET shares");
    return 0;
}

/* The vector (from the caller's hook), masked, then POSTed as len words u32 LE ‖ sig. */
static int masked_input(sr *s, secagg_client *sc, const secwire_layout *L, uint32_t *vec)
{
    const client_secround_io *io = s->io;
    af_rng noise;
    uint64_t seed[2];
    randombytes_buf(seed, sizeof seed);
    af_rng_seed(&noise, seed[0], seed[1]);
    sodium_memzero(seed, sizeof seed);
    int rc = io->input(io->user, L, &noise, vec, s->res);
    sodium_memzero(&noise, sizeof noise);
    if (rc)
        return rc;
    const secagg_masked_input *mi = NULL;
    if ((rc = secagg_client_masked_input(sc, vec, vec, &mi)))
        return sr_refuse(s, rc, "masked input");
    uint8_t *b = (uint8_t *)vec;
    for (size_t i = 0; i < L->len; i++) { /* in place: word i becomes its own 4 LE bytes */
        uint32_t w = vec[i];
        b[4 * i] = (uint8_t)w;
        b[4 * i + 1] = (uint8_t)(w >> 8);
        b[4 * i + 2] = (uint8_t)(w >> 16);
        b[4 * i + 3] = (uint8_t)(w >> 24);
    }
    memcpy(b + 4 * L->len, mi->sig, SECAGG_SIG_BYTES);
    client_http_resp r;
    rc = sr_call(s, "POST", "masked", "application/octet-stream", b,
                 4 * L->len + SECAGG_SIG_BYTES, 65536, &r);
    if (rc == 0)
        client_http_resp_free(&r);
    return rc;
}

/* GET the survivors (U3), then POST this device's reveals. *n3 gets |U3|. */
static int unmask(sr *s, secagg_client *sc, size_t *n3)
{
    const uint32_t n = s->t->secagg.wire.n;
    client_http_resp r;
    int rc = sr_poll(s, "survivors", CLIENT_SA_MASKED_INPUT, (size_t)n * 12 + 65536, &r);
    if (rc)
        return rc;
    cJSON *j = cJSON_ParseWithLength(r.body, r.len);
    client_http_resp_free(&r);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "survivors");
    int k = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    if (k < 0 || (uint32_t)k > n) {
        cJSON_Delete(j);
        return af_seterr(AF_EFORMAT, "GET survivors: expected an array of at most %u ids", n);
    }
    uint32_t *ids = malloc(sizeof *ids * (size_t)(k ? k : 1));
    if (!ids) {
        cJSON_Delete(j);
        return af_seterr(AF_ENOMEM, "secure aggregation: out of memory");
    }
    int i = 0;
    for (const cJSON *e = a->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > n ||
            e->valuedouble != floor(e->valuedouble)) {
            free(ids);
            cJSON_Delete(j);
            return af_seterr(AF_EFORMAT, "GET survivors: [%d] is not an id in 1..%u", i, n);
        }
        ids[i] = (uint32_t)e->valuedouble;
    }
    cJSON_Delete(j);
    const secagg_unmask *um = NULL;
    rc = secagg_client_unmask(sc, ids, (size_t)k, &um);
    free(ids);
    if (rc)
        return sr_refuse(s, rc, "GET survivors");
    *n3 = (size_t)k;
    uint8_t *recs = malloc((size_t)SECWIRE_REVEAL_REC * (um->n_reveals ? um->n_reveals : 1));
    cJSON *o = cJSON_CreateObject();
    if (recs && o)
        for (uint32_t q = 0; q < um->n_reveals; q++)
            secwire_put_reveal(recs + (size_t)q * SECWIRE_REVEAL_REC, &um->reveals[q]);
    rc = !recs || !o || add_b64(o, "sig", um->sig, sizeof um->sig) ||
         add_b64(o, "reveals", recs, (size_t)SECWIRE_REVEAL_REC * um->n_reveals);
    if (recs)
        sodium_memzero(recs, (size_t)SECWIRE_REVEAL_REC * um->n_reveals);
    free(recs);
    if (rc) {
        cJSON_Delete(o);
        return af_seterr(AF_ENOMEM, "secure aggregation: out of memory");
    }
    return sr_post_json(s, "unmask", o);
}

int client_secround_run(const client_secround_io *io, const client_task *t,
                        const secwire_layout *L, artificien_result *res)
{
    const client_secagg *sa = &t->secagg;
    sr s = {io, t, res};
    secagg_client *sc = NULL;
    uint32_t *vec = NULL;
    size_t n3 = 0, vec_bytes = sizeof *vec * L->len + SECAGG_SIG_BYTES;
    if (sodium_init() < 0)
        return af_seterr(AF_ESTATE, "secure aggregation: libsodium cannot start");
    secagg_cfg cfg = {.round_id = sa->round_id, .n = sa->wire.n, .t = sa->wire.t, .len = L->len};
    int rc = secagg_client_create(&cfg, sa->id, io->sign_sk, &sc);
    if (rc)
        return af_preerr(rc, "secure aggregation");
    if (!(vec = malloc(vec_bytes))) {
        rc = af_seterr(AF_ENOMEM, "secure aggregation: out of memory for %zu words", L->len);
        goto out;
    }
    if ((rc = advertise(&s, sc)) || (rc = sr_phase(&s, "advertise")) ||
        (rc = share_keys(&s, sc)) || (rc = sr_phase(&s, "share_keys")) ||
        (io->prepare && (rc = io->prepare(io->user, res))) || (rc = receive_shares(&s, sc)) ||
        (rc = masked_input(&s, sc, L, vec)) || (rc = sr_phase(&s, "masked_input")) ||
        (rc = unmask(&s, sc, &n3)))
        goto out;
    res->action = sa->wire.kind == SECWIRE_LABELS ? ARTIFICIEN_COUNTED : ARTIFICIEN_TRAINED;
    res->reports = (int)n3;
out:
    secagg_client_free(sc);
    if (vec)
        sodium_memzero(vec, vec_bytes);
    free(vec);
    return rc > 0 ? 0 : rc;
}
