/* test_secagg_coord.c — secure aggregation at the coordinator over real HTTP, with devices
 * driven by hand (fed/secagg.h + fed/secwire.h, no device library): the committed model is
 * the weighted FedAvg of the devices' updates up to the stated quantisation error with a
 * device dropping after masking; what the coordinator keeps (its attempt log, its database)
 * holds masked vectors and never a device's vector in the clear; bad protocol messages are
 * refused with clear errors and the round goes on without their sender; fewer than t
 * abandons; a restart abandons an open attempt; population label statistics come back exact
 * without noise; central adaptive clipping moves the clip; a target ε that forbids the first
 * round marks the project done on disk. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "../test.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "fed/secagg.h"
#include "fed/secwire.h"
#include "nn/checkpoint.h"
#include "testsrv.h"

#define NDEV 5

/* A device driven by hand through the protocol. */
typedef struct rawdev {
    char token[80];
    uint8_t pk[SECAGG_SIGN_PK_BYTES], sk[SECAGG_SIGN_SK_BYTES];
    uint32_t id;
    secagg_cfg cfg;
    secwire_params w;
    secagg_client *cl;
    char url[128];
    uint32_t *x, *y;   /* the plain vector and the masked one */
    char adv[400];     /* the advertisement as posted */
    uint8_t *mbody;    /* the masked input as posted */
    size_t mlen;
} rawdev;

/* Ends its round (the token and identity stay). */
static void rawdev_free(rawdev *d)
{
    secagg_client_free(d->cl);
    free(d->x);
    free(d->y);
    free(d->mbody);
    d->cl = NULL;
    d->x = d->y = NULL;
    d->mbody = NULL;
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(j) ? j->valuedouble : NAN;
}

/* Checks in with its identity; fills the round parameters from the task. 1 task, 0 wait. */
static int raw_checkin(const ts_server *t, rawdev *d)
{
    char *b64 = secwire_b64(d->pk, sizeof d->pk), body[160];
    snprintf(body, sizeof body, "{\"identity\":\"%s\"}", b64);
    free(b64);
    ts_resp r;
    int res = -1;
    if (ts_post_json(t->url, "/v1/checkin", d->token, body, &r) || r.status != 200) {
        printf("    checkin: %ld %s\n", r.status, r.body);
        ts_resp_free(&r);
        return -1;
    }
    cJSON *j = ts_json(&r);
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(j, "task");
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(task, "secagg");
    if (!task)
        res = 0;
    else if (sa) {
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(sa, "round_id");
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(sa, "kind");
        d->id = (uint32_t)jnum(sa, "id");
        d->cfg.n = (uint32_t)jnum(sa, "n");
        d->cfg.t = (uint32_t)jnum(sa, "t");
        d->cfg.len = (size_t)jnum(sa, "len");
        d->cfg.round_id = strtoull(rid->valuestring, NULL, 10);
        d->w.kind = strcmp(kind->valuestring, "label_stats") == 0 ? SECWIRE_LABELS : SECWIRE_TRAIN;
        d->w.n = d->cfg.n;
        d->w.t = d->cfg.t;
        d->w.range = jnum(sa, "range");
        d->w.max_samples = (uint32_t)jnum(sa, "max_samples");
        d->w.clip = jnum(sa, "clip");
        d->w.noise = jnum(sa, "noise");
        d->w.adaptive = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sa, "adaptive"));
        d->w.count_noise = jnum(sa, "count_noise");
        d->w.stats_bound = jnum(sa, "stats_bound");
        d->w.stats_noise = jnum(sa, "stats_noise");
        snprintf(d->url, sizeof d->url, "%s", cJSON_GetObjectItemCaseSensitive(sa, "url")->valuestring);
        res = secagg_client_create(&d->cfg, d->id, d->sk, &d->cl) == 0 ? 1 : -1;
        d->x = calloc(d->cfg.len, sizeof *d->x);
        d->y = calloc(d->cfg.len, sizeof *d->y);
    }
    cJSON_Delete(j);
    ts_resp_free(&r);
    return res;
}

static long raw_post(const ts_server *t, const rawdev *d, const char *step, const char *json,
                     ts_resp *r)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", d->url, step);
    if (ts_post_json(t->url, path, d->token, json, r))
        return -1;
    return r->status;
}

static long raw_get(const ts_server *t, const rawdev *d, const char *step, ts_resp *r)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", d->url, step);
    if (ts_http(t->url, "GET", path, d->token, NULL, NULL, 0, NULL, r))
        return -1;
    return r->status;
}

/* GET until the phase has closed (200) or max_s passed. */
static long raw_get_wait(const ts_server *t, const rawdev *d, const char *step, ts_resp *r,
                         double max_s)
{
    for (double waited = 0;; waited += 0.05) {
        long st = raw_get(t, d, step, r);
        if (st != 202 || waited > max_s)
            return st;
        ts_resp_free(r);
        usleep(50000);
    }
}

static long raw_advertise(const ts_server *t, rawdev *d)
{
    secagg_advertise a;
    if (secagg_client_advertise(d->cl, &a))
        return -1;
    char *c = secwire_b64(a.c_pk, 32), *s = secwire_b64(a.s_pk, 32), *g = secwire_b64(a.sig, 64);
    snprintf(d->adv, sizeof d->adv, "{\"c_pk\":\"%s\",\"s_pk\":\"%s\",\"sig\":\"%s\"}", c, s, g);
    free(c), free(s), free(g);
    ts_resp r;
    long st = raw_post(t, d, "advertise", d->adv, &r);
    ts_resp_free(&r);
    return st;
}

static long raw_share(const ts_server *t, rawdev *d)
{
    ts_resp r;
    if (raw_get_wait(t, d, "keys", &r, 10) != 200) {
        ts_resp_free(&r);
        return -1;
    }
    cJSON *j = ts_json(&r);
    ts_resp_free(&r);
    uint8_t *recs;
    size_t len;
    if (secwire_unb64(cJSON_GetObjectItemCaseSensitive(j, "keys")->valuestring, "keys",
                      SECWIRE_KEY_REC, 0, &recs, &len)) {
        cJSON_Delete(j);
        return -1;
    }
    cJSON_Delete(j);
    size_t n = len / SECWIRE_KEY_REC;
    secagg_advertise *list = calloc(n, sizeof *list);
    for (size_t i = 0; i < n; i++)
        secwire_get_key(recs + i * SECWIRE_KEY_REC, d->cfg.round_id, &list[i]);
    free(recs);
    const secagg_share_keys *sk;
    int rc = secagg_client_share_keys(d->cl, list, n, &sk);
    free(list);
    if (rc)
        return -1;
    uint8_t *buf = malloc(sk->n_shares * SECWIRE_SHARE_REC + 1);
    for (uint32_t i = 0; i < sk->n_shares; i++)
        secwire_put_share(buf + i * SECWIRE_SHARE_REC, &sk->shares[i]);
    char *sh = secwire_b64(buf, sk->n_shares * SECWIRE_SHARE_REC);
    char *bc = secwire_b64(sk->b_commit, 32), *sg = secwire_b64(sk->sig, 64);
    free(buf);
    size_t cap = strlen(sh) + 400;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"b_commit\":\"%s\",\"sig\":\"%s\",\"shares\":\"%s\"}", bc, sg, sh);
    free(sh), free(bc), free(sg);
    long st = raw_post(t, d, "shares", body, &r);
    free(body);
    ts_resp_free(&r);
    return st;
}

static long raw_receive(const ts_server *t, rawdev *d)
{
    ts_resp r;
    if (raw_get_wait(t, d, "shares", &r, 10) != 200) {
        ts_resp_free(&r);
        return -1;
    }
    cJSON *j = ts_json(&r);
    ts_resp_free(&r);
    uint8_t *recs;
    size_t len;
    int rc = secwire_unb64(cJSON_GetObjectItemCaseSensitive(j, "shares")->valuestring, "shares",
                           SECWIRE_SHARE_REC, 0, &recs, &len);
    cJSON_Delete(j);
    if (rc)
        return -1;
    size_t n = len / SECWIRE_SHARE_REC;
    secagg_enc_share *in = calloc(n + 1, sizeof *in);
    for (size_t i = 0; i < n; i++)
        secwire_get_share(recs + i * SECWIRE_SHARE_REC, &in[i]);
    free(recs);
    rc = secagg_client_receive_shares(d->cl, in, n);
    free(in);
    return rc ? -1 : 200;
}

/* Masks d->x (once) and posts it (again, when called again). */
static long raw_masked(const ts_server *t, rawdev *d)
{
    const secagg_masked_input *mi;
    if (!d->mbody) {
        if (secagg_client_masked_input(d->cl, d->x, d->y, &mi))
            return -1;
        d->mlen = d->cfg.len * 4 + 64;
        d->mbody = malloc(d->mlen);
        for (size_t i = 0; i < d->cfg.len; i++)
            for (int k = 0; k < 4; k++)
                d->mbody[4 * i + k] = (uint8_t)(d->y[i] >> (8 * k));
        memcpy(d->mbody + 4 * d->cfg.len, mi->sig, 64);
    }
    char path[160];
    snprintf(path, sizeof path, "%s/masked", d->url);
    ts_resp r;
    long st = ts_http(t->url, "POST", path, d->token, "application/octet-stream", d->mbody,
                      d->mlen, NULL, &r)
                  ? -1
                  : r.status;
    ts_resp_free(&r);
    return st;
}

static long raw_unmask(const ts_server *t, rawdev *d)
{
    ts_resp r;
    if (raw_get_wait(t, d, "survivors", &r, 10) != 200) {
        ts_resp_free(&r);
        return -1;
    }
    cJSON *j = ts_json(&r);
    ts_resp_free(&r);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "survivors");
    size_t n = (size_t)cJSON_GetArraySize(a);
    uint32_t *u3 = calloc(n + 1, sizeof *u3);
    for (size_t i = 0; i < n; i++)
        u3[i] = (uint32_t)cJSON_GetArrayItem(a, (int)i)->valuedouble;
    cJSON_Delete(j);
    const secagg_unmask *um;
    int rc = secagg_client_unmask(d->cl, u3, n, &um);
    free(u3);
    if (rc)
        return -1;
    uint8_t *buf = malloc(um->n_reveals * SECWIRE_REVEAL_REC + 1);
    for (uint32_t i = 0; i < um->n_reveals; i++)
        secwire_put_reveal(buf + i * SECWIRE_REVEAL_REC, &um->reveals[i]);
    char *rv = secwire_b64(buf, um->n_reveals * SECWIRE_REVEAL_REC), *sg = secwire_b64(um->sig, 64);
    free(buf);
    size_t cap = strlen(rv) + 200;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"sig\":\"%s\",\"reveals\":\"%s\"}", sg, rv);
    free(rv), free(sg);
    long st = raw_post(t, d, "unmask", body, &r);
    free(body);
    ts_resp_free(&r);
    return st;
}

/* Waits until the project's version reaches v (or its last round is abandoned when
 * abandoned=1); the status JSON, or NULL after max_s. */
static cJSON *wait_version(const ts_server *t, const char *key, int64_t pid, int v,
                           double max_s)
{
    for (double w = 0; w < max_s; w += 0.1) {
        cJSON *j = ts_status(t, key, pid);
        if (j && jnum(j, "version") >= v)
            return j;
        cJSON_Delete(j);
        usleep(100000);
    }
    return NULL;
}

static int start(ts_server *t, char *key)
{
    char db[600];
    snprintf(db, sizeof db, "%s/s.db", t_tmpdir());
    if (ts_start(t, db, NULL))
        return -1;
    return ts_owner(t, "acme", key);
}

static int enrol(const ts_server *t, rawdev *d, int n)
{
    for (int k = 0; k < n; k++) {
        memset(&d[k], 0, sizeof d[k]);
        if (ts_device(t, TS_TOY_SCHEMA, d[k].token, NULL) ||
            secagg_identity_keypair(d[k].pk, d[k].sk))
            return -1;
    }
    return 0;
}

/* 1 if `needle` (len bytes) occurs in the file. */
static int file_contains(const char *path, const void *needle, size_t len)
{
    char *buf;
    size_t n;
    if (af_read_file(path, &buf, &n))
        return 0;
    int found = memmem(buf, n, needle, len) != NULL;
    free(buf);
    return found;
}

#define SA_PLAN                                                                              \
    "{\"rounds\":2,\"devices_per_round\":5,\"min_reports\":3,\"over_selection\":1,"          \
    "\"round_deadline_s\":%g,\"dataset\":\"toy\",\"secagg\":true,\"secagg_threshold\":3,"    \
    "\"secagg_range\":1,\"secagg_max_samples\":100}"

TEST(secagg_coord_round_commits_the_weighted_mean_and_keeps_only_masked_vectors)
{
    ts_server t;
    char key[80], plan[400];
    rawdev d[NDEV];
    CHECK(start(&t, key) == 0);
    snprintf(plan, sizeof plan, SA_PLAN, 4.0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, plan) == 1);
    CHECK(enrol(&t, d, NDEV) == 0);
    /* a device without an identity is not given the task */
    char reason[64] = "";
    ts_resp r;
    CHECK(ts_post_json(t.url, "/v1/checkin", d[0].token, "{}", &r) == 0 && r.status == 200);
    cJSON *j = ts_json(&r);
    snprintf(reason, sizeof reason, "%s", cJSON_GetObjectItem(j, "reason")->valuestring);
    cJSON_Delete(j);
    ts_resp_free(&r);
    CHECK(strcmp(reason, "caps") == 0);
    nn_model *w0 = ts_checkpoint(&t, key, 1, 0);
    CHECK(w0 != NULL);
    const size_t n = w0->n_params;
    for (int k = 0; k < NDEV; k++) {
        CHECK_EQ_INT(raw_checkin(&t, &d[k]), 1);
        CHECK_EQ_INT((int)d[k].id, k + 1);
    }
    /* before the phase closes, the keys are not there yet — here all 5 are selected and the
     * phase closes as soon as all have advertised: ask before the last one */
    for (int k = 0; k < NDEV - 1; k++)
        CHECK_EQ_INT((int)raw_advertise(&t, &d[k]), 200);
    CHECK_EQ_INT((int)raw_get(&t, &d[0], "keys", &r), 202);
    j = ts_json(&r);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "wait")));
    CHECK(strcmp(cJSON_GetObjectItem(j, "phase")->valuestring, "advertise") == 0);
    cJSON_Delete(j);
    ts_resp_free(&r);
    CHECK_EQ_INT((int)raw_advertise(&t, &d[NDEV - 1]), 200);
    for (int k = 0; k < NDEV; k++)
        CHECK_EQ_INT((int)raw_share(&t, &d[k]), 200);
    for (int k = 0; k < NDEV; k++)
        CHECK_EQ_INT((int)raw_receive(&t, &d[k]), 200);
    /* the updates: w·Δ with weights 7..100+, one over max_samples (capped) */
    secwire_layout L;
    CHECK(secwire_layout_init(&L, &d[0].w, n, 3) == 0);
    CHECK_EQ_INT((int)L.len, (int)d[0].cfg.len);
    af_rng g;
    af_rng_seed(&g, 5, 9);
    double want[64] = {0}, wsum = 0;
    float delta[64];
    const double ns[NDEV] = {7, 20, 33, 60, 250};
    for (int k = 0; k < NDEV; k++) {
        for (size_t i = 0; i < n; i++)
            delta[i] = (float)(0.01 * af_rng_normal(&g));
        double w = ns[k] < 100 ? ns[k] : 100; /* the last one is capped at max_samples */
        for (size_t i = 0; i < n; i++)
            want[i] += w * delta[i];
        wsum += w;
        secwire_report rep = {.num_samples = ns[k], .loss = 0.5 + k, .eval_samples = 10,
                              .eval_correct = 4 + k, .eval_loss = 1.0};
        CHECK(secwire_encode_train(&L, delta, &rep, NULL, d[k].x, NULL) == 0);
        CHECK_EQ_INT((int)raw_masked(&t, &d[k]), 200);
    }
    /* what the coordinator keeps: the masked vectors in the attempt's log, never the plain */
    char logp[700];
    snprintf(logp, sizeof logp, "%s.rounds/p1-r1-a1.log", t.db);
    for (int k = 0; k < NDEV; k++) {
        CHECK(file_contains(logp, d[k].y, 64));
        CHECK(!file_contains(logp, d[k].x, 64));
        size_t same = 0;
        for (size_t i = 0; i < d[k].cfg.len; i++)
            same += d[k].x[i] == d[k].y[i];
        CHECK(same <= 2); /* a uniform mask leaves a word unchanged with probability 2^-32 */
    }
    j = ts_status(&t, key, 1);
    const cJSON *rd = cJSON_GetObjectItem(j, "round");
    CHECK(strcmp(cJSON_GetObjectItem(rd, "phase")->valuestring, "unmask") == 0);
    CHECK_EQ_INT((int)jnum(cJSON_GetObjectItem(rd, "secagg"), "u3"), NDEV);
    cJSON_Delete(j);
    for (int k = 0; k < NDEV - 1; k++) /* device 5 vanished after masking */
        CHECK_EQ_INT((int)raw_unmask(&t, &d[k]), 200);
    j = wait_version(&t, key, 1, 1, 10);
    CHECK(j != NULL);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "rounds"), 0);
    CHECK(strcmp(cJSON_GetObjectItem(r1, "state")->valuestring, "committed") == 0);
    CHECK_EQ_INT((int)jnum(r1, "reports"), NDEV); /* the sum of the 5 survivors of U3 */
    /* t = 3 answers rebuild every secret: the phase closed a grace period after them, not at
     * the deadline that device 5's silence would otherwise have cost */
    CHECK(jnum(r1, "closed_at") < jnum(r1, "deadline_at") - 1.0);
    cJSON_Delete(j);
    /* U3 held all 5 (device 5 sent its masked input, then vanished before unmasking): its
     * self mask was rebuilt from the others' shares, so its update is in the sum */
    nn_model *w1 = ts_checkpoint(&t, key, 1, 1);
    CHECK(w1 != NULL);
    /* error bound: NDEV·range·M/(2B) on the weighted sum, / Σw on the mean, + float slack */
    double tol = NDEV * L.qd.range / (2.0 * L.qd.bound) / wsum + 1e-6;
    double maxerr = 0;
    for (size_t i = 0; w1 && i < n; i++) {
        double err = fabs((w1->params[i] - w0->params[i]) - want[i] / wsum);
        maxerr = err > maxerr ? err : maxerr;
    }
    CHECK(maxerr <= tol);
    /* nowhere on disk: no plain vector in the database or its write-ahead log */
    char wal[700];
    snprintf(wal, sizeof wal, "%s-wal", t.db);
    for (int k = 0; k < NDEV; k++) {
        CHECK(!file_contains(t.db, d[k].x, 64));
        CHECK(!file_contains(wal, d[k].x, 64));
    }
    for (int k = 0; k < NDEV; k++)
        rawdev_free(&d[k]);
    nn_model_free(w0);
    nn_model_free(w1);
    ts_stop(&t);
}

TEST(secagg_coord_refuses_bad_messages_and_goes_on_without_their_senders)
{
    ts_server t;
    char key[80], plan[400];
    rawdev d[NDEV];
    ts_resp r;
    CHECK(start(&t, key) == 0);
    snprintf(plan, sizeof plan, SA_PLAN, 6.0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, plan) == 1);
    CHECK(enrol(&t, d, NDEV) == 0);
    for (int k = 0; k < NDEV; k++)
        CHECK_EQ_INT(raw_checkin(&t, &d[k]), 1);
    /* a sixth device is not selected (quota 5) and may not speak */
    rawdev x;
    CHECK(enrol(&t, &x, 1) == 0);
    snprintf(x.url, sizeof x.url, "%s", d[0].url);
    CHECK_EQ_INT((int)raw_post(&t, &x, "advertise", "{}", &r), 403);
    ts_resp_free(&r);
    /* malformed: base64 that is not, a missing field, an unknown field */
    CHECK_EQ_INT((int)raw_post(&t, &d[0], "advertise", "{\"c_pk\":\"!!\",\"s_pk\":\"AA==\","
                                                          "\"sig\":\"AA==\"}", &r), 400);
    CHECK(ts_is_error(&r, "bad_message", "c_pk"));
    ts_resp_free(&r);
    CHECK_EQ_INT((int)raw_post(&t, &d[0], "advertise", "{\"extra\":1}", &r), 400);
    ts_resp_free(&r);
    /* signed with someone else's key: does not verify */
    uint8_t opk[32], osk[64];
    CHECK(secagg_identity_keypair(opk, osk) == 0);
    secagg_client *forger;
    CHECK(secagg_client_create(&d[1].cfg, d[1].id, osk, &forger) == 0);
    secagg_advertise fa;
    CHECK(secagg_client_advertise(forger, &fa) == 0);
    secagg_client_free(forger);
    char *c = secwire_b64(fa.c_pk, 32), *s = secwire_b64(fa.s_pk, 32), *g = secwire_b64(fa.sig, 64);
    char body[400];
    snprintf(body, sizeof body, "{\"c_pk\":\"%s\",\"s_pk\":\"%s\",\"sig\":\"%s\"}", c, s, g);
    free(c), free(s), free(g);
    CHECK_EQ_INT((int)raw_post(&t, &d[1], "advertise", body, &r), 403);
    CHECK(ts_is_error(&r, "bad_signature", NULL));
    ts_resp_free(&r);
    /* device 1 advertises properly; a second advertisement is a duplicate */
    for (int k = 0; k < NDEV; k++)
        if (k != 1)
            CHECK_EQ_INT((int)raw_advertise(&t, &d[k]), 200);
    CHECK_EQ_INT((int)raw_post(&t, &d[0], "advertise", d[0].adv, &r), 409);
    CHECK(ts_is_error(&r, "duplicate", NULL));
    ts_resp_free(&r);
    /* a plain report to a secure-aggregation project */
    CHECK(ts_report(&t, d[2].token, 1, 1, "x", 1, &r) == 0);
    CHECK(r.status == 409 && ts_is_error(&r, "wrong_phase", "secure aggregation"));
    ts_resp_free(&r);
    /* the advertise phase closes at its deadline (0.15 · 6 s) without device 2 (d[1]) */
    for (int k = 0; k < NDEV; k++)
        if (k != 1)
            CHECK_EQ_INT((int)raw_share(&t, &d[k]), 200);
    /* a share message for the wrong phase, and one for a closed phase */
    CHECK_EQ_INT((int)raw_advertise(&t, &d[1]), 409);
    for (int k = 0; k < NDEV; k++)
        if (k != 1)
            CHECK_EQ_INT((int)raw_receive(&t, &d[k]), 200);
    /* masked input: wrong length, then a replay of another device's input under our name */
    secwire_layout L;
    CHECK(secwire_layout_init(&L, &d[0].w, 15, 3) == 0);
    char path[160];
    snprintf(path, sizeof path, "%s/masked", d[0].url);
    CHECK(ts_http(t.url, "POST", path, d[0].token, "application/octet-stream", "abcd", 4, NULL,
                  &r) == 0);
    CHECK(r.status == 400 && ts_is_error(&r, "bad_message", "expected"));
    ts_resp_free(&r);
    float delta[15];
    for (int i = 0; i < 15; i++)
        delta[i] = 0.001f * (float)i;
    secwire_report rep = {.num_samples = 10, .loss = NAN};
    for (int k = 0; k < NDEV; k++)
        if (k != 1) {
            float dd[15];
            memcpy(dd, delta, sizeof dd);
            CHECK(secwire_encode_train(&L, dd, &rep, NULL, d[k].x, NULL) == 0);
        }
    CHECK_EQ_INT((int)raw_masked(&t, &d[0]), 200);
    CHECK_EQ_INT((int)raw_masked(&t, &d[0]), 409); /* duplicate */
    {   /* d[2]'s masked bytes sent under d[3]'s token: the signature names device 3 */
        const secagg_masked_input *mi;
        CHECK(secagg_client_masked_input(d[2].cl, d[2].x, d[2].y, &mi) == 0);
        size_t len = L.len * 4 + 64;
        uint8_t *b = malloc(len);
        for (size_t i = 0; i < L.len; i++)
            for (int k = 0; k < 4; k++)
                b[4 * i + k] = (uint8_t)(d[2].y[i] >> (8 * k));
        memcpy(b + 4 * L.len, mi->sig, 64);
        snprintf(path, sizeof path, "%s/masked", d[3].url);
        CHECK(ts_http(t.url, "POST", path, d[3].token, "application/octet-stream", b, len, NULL,
                      &r) == 0);
        CHECK(r.status == 403 && ts_is_error(&r, "bad_signature", NULL));
        ts_resp_free(&r);
        /* d[2] itself posts them: fine */
        snprintf(path, sizeof path, "%s/masked", d[2].url);
        CHECK(ts_http(t.url, "POST", path, d[2].token, "application/octet-stream", b, len, NULL,
                      &r) == 0);
        CHECK_EQ_INT((int)r.status, 200);
        ts_resp_free(&r);
        free(b);
    }
    for (int k = 3; k < NDEV; k++)
        CHECK_EQ_INT((int)raw_masked(&t, &d[k]), 200);
    for (int k = 0; k < NDEV; k++)
        if (k != 1)
            CHECK_EQ_INT((int)raw_unmask(&t, &d[k]), 200);
    cJSON *j = wait_version(&t, key, 1, 1, 10);
    CHECK(j != NULL);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "rounds"), 0);
    CHECK_EQ_INT((int)jnum(r1, "reports"), NDEV - 1);
    cJSON_Delete(j);
    nn_model *w0 = ts_checkpoint(&t, key, 1, 0), *w1 = ts_checkpoint(&t, key, 1, 1);
    CHECK(w0 && w1);
    for (int i = 0; w0 && w1 && i < 15; i++) /* four equal updates: the mean is the update */
        CHECK_NEAR(w1->params[i] - w0->params[i], delta[i], 1e-5);
    nn_model_free(w0);
    nn_model_free(w1);
    for (int k = 0; k < NDEV; k++)
        rawdev_free(&d[k]);
    rawdev_free(&x);
    ts_stop(&t);
}

TEST(secagg_coord_abandons_below_threshold_and_at_restart)
{
    ts_server t;
    char key[80], plan[400];
    rawdev d[NDEV];
    CHECK(start(&t, key) == 0);
    snprintf(plan, sizeof plan, SA_PLAN, 2.0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, plan) == 1);
    CHECK(enrol(&t, d, NDEV) == 0);
    /* only two of five advertise; t = 3: abandoned when the advertise phase ends */
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(raw_checkin(&t, &d[k]), 1);
        CHECK_EQ_INT((int)raw_advertise(&t, &d[k]), 200);
    }
    ts_resp r;
    long st = raw_get_wait(&t, &d[0], "keys", &r, 5);
    CHECK(st == 409 && ts_is_error(&r, "late", "abandoned"));
    ts_resp_free(&r);
    cJSON *j = ts_status(&t, key, 1);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "rounds"), 0);
    CHECK(r1 && strcmp(cJSON_GetObjectItem(r1, "state")->valuestring, "abandoned") == 0);
    CHECK_EQ_INT((int)jnum(j, "version"), 0);
    cJSON_Delete(j);
    for (int k = 0; k < 2; k++)
        rawdev_free(&d[k]);
    /* a new attempt opens; the coordinator restarts in its middle: abandoned at start */
    CHECK_EQ_INT(raw_checkin(&t, &d[0]), 1);
    CHECK_EQ_INT((int)raw_advertise(&t, &d[0]), 200);
    char db[600];
    snprintf(db, sizeof db, "%s", t.db);
    ts_stop(&t);
    CHECK(ts_start(&t, db, NULL) == 0);
    j = ts_status(&t, key, 1);
    CHECK(j && cJSON_IsNull(cJSON_GetObjectItem(j, "round")));
    const cJSON *rs = cJSON_GetObjectItem(j, "rounds");
    CHECK_EQ_INT(cJSON_GetArraySize(rs), 2);
    CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(rs, 1), "state")->valuestring,
                 "abandoned") == 0);
    cJSON_Delete(j);
    ts_resp_free(&r);
    CHECK_EQ_INT((int)raw_post(&t, &d[0], "unmask", "{}", &r), 409);
    ts_resp_free(&r);
    for (int k = 0; k < NDEV; k++)
        rawdev_free(&d[k]);
    ts_stop(&t);
}

TEST(secagg_coord_label_stats_without_noise_are_exact)
{
    ts_server t;
    char key[80];
    rawdev d[NDEV];
    CHECK(start(&t, key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC,
                     "{\"kind\":\"label_stats\",\"rounds\":1,\"devices_per_round\":5,"
                     "\"min_reports\":3,\"over_selection\":1,\"round_deadline_s\":5,"
                     "\"dataset\":\"toy\",\"stats_bound\":100,\"stats_noise\":0}") == 1);
    ts_resp r;
    /* plan checks: label_stats has one round */
    CHECK(ts_post_json(t.url, "/v1/projects", key,
                       "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{\"kind\":\"label_stats\","
                       "\"rounds\":2}}", &r) == 0);
    CHECK(r.status == 400 && ts_is_error(&r, "bad_field", "plan.rounds"));
    ts_resp_free(&r);
    CHECK(enrol(&t, d, NDEV) == 0);
    const uint32_t counts[NDEV][3] = {{5, 0, 1}, {10, 10, 10}, {0, 0, 7}, {3, 2, 1}, {60, 30, 30}};
    for (int k = 0; k < NDEV; k++) {
        CHECK_EQ_INT(raw_checkin(&t, &d[k]), 1);
        CHECK_EQ_INT(d[k].w.kind, SECWIRE_LABELS);
        CHECK_EQ_INT((int)raw_advertise(&t, &d[k]), 200);
    }
    for (int k = 0; k < NDEV; k++)
        CHECK_EQ_INT((int)raw_share(&t, &d[k]), 200);
    secwire_layout L;
    CHECK(secwire_layout_init(&L, &d[0].w, 0, 3) == 0);
    for (int k = 0; k < NDEV; k++) {
        CHECK_EQ_INT((int)raw_receive(&t, &d[k]), 200);
        CHECK(secwire_encode_labels(&L, counts[k], NULL, d[k].x) == 0);
        CHECK_EQ_INT((int)raw_masked(&t, &d[k]), 200);
    }
    for (int k = 0; k < NDEV; k++)
        CHECK_EQ_INT((int)raw_unmask(&t, &d[k]), 200);
    cJSON *j = wait_version(&t, key, 1, 1, 10);
    CHECK(j != NULL);
    CHECK(strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "done") == 0);
    const cJSON *ls = cJSON_GetObjectItem(j, "label_stats");
    CHECK(cJSON_IsObject(ls));
    /* device 5's 120 samples are scaled to the bound 100: 50, 25, 25 */
    const double want[3] = {5 + 10 + 0 + 3 + 50, 0 + 10 + 0 + 2 + 25, 1 + 10 + 7 + 1 + 25};
    const cJSON *cnt = cJSON_GetObjectItem(ls, "count");
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(cJSON_GetArrayItem(cnt, c)->valuedouble, want[c], 1e-6);
    CHECK_EQ_INT((int)jnum(ls, "devices"), NDEV);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(ls, "epsilon"))); /* z = 0: no privacy claimed */
    cJSON_Delete(j);
    for (int k = 0; k < NDEV; k++)
        rawdev_free(&d[k]);
    ts_stop(&t);
}

TEST(secagg_coord_dp_distributed_noise_adaptive_clip_and_epsilon)
{
    ts_server t;
    char key[80];
    rawdev d[NDEV];
    CHECK(start(&t, key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC,
                     "{\"rounds\":3,\"devices_per_round\":5,\"min_reports\":3,"
                     "\"over_selection\":1,\"round_deadline_s\":5,\"dataset\":\"toy\","
                     "\"secagg\":true,\"dp_clip\":1,\"dp_noise\":0.5,\"dp_population\":50,"
                     "\"dp_adaptive_quantile\":0.5,\"dp_adaptive_count_noise\":0.3}") == 1);
    CHECK(enrol(&t, d, NDEV) == 0);
    for (int k = 0; k < NDEV; k++) {
        CHECK_EQ_INT(raw_checkin(&t, &d[k]), 1);
        CHECK(d[k].w.clip == 1.0 && d[k].w.adaptive && d[k].w.noise > 0.5);
        CHECK_EQ_INT((int)raw_advertise(&t, &d[k]), 200);
    }
    for (int k = 0; k < NDEV; k++)
        CHECK_EQ_INT((int)raw_share(&t, &d[k]), 200);
    secwire_layout L;
    CHECK(secwire_layout_init(&L, &d[0].w, 15, 3) == 0);
    af_rng g;
    af_rng_seed(&g, 1, 2);
    for (int k = 0; k < NDEV; k++) {
        float delta[15];
        for (int i = 0; i < 15; i++) /* every norm well under the clip: all unclipped */
            delta[i] = 0.01f;
        secwire_report rep = {.num_samples = 10, .loss = 1};
        int unclipped = -1;
        CHECK(raw_receive(&t, &d[k]) == 200);
        CHECK(secwire_encode_train(&L, delta, &rep, &g, d[k].x, &unclipped) == 0);
        CHECK_EQ_INT(unclipped, 1);
        CHECK_EQ_INT((int)raw_masked(&t, &d[k]), 200);
    }
    for (int k = 0; k < NDEV; k++)
        CHECK_EQ_INT((int)raw_unmask(&t, &d[k]), 200);
    cJSON *j = wait_version(&t, key, 1, 1, 10);
    CHECK(j != NULL);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "rounds"), 0);
    double eps = jnum(r1, "epsilon"), next = jnum(r1, "dp_clip_next");
    CHECK(eps > 0 && isfinite(eps));
    CHECK(fabs(jnum(j, "epsilon") - eps) < 1e-12);
    /* all unclipped (b̄ ≈ 1 ± 0.06 > γ = 0.5): the clip shrinks, by at most e^−0.1 */
    CHECK(next < 1.0 && next > 0.9);
    CHECK_NEAR(jnum(j, "dp_clip"), next, 1e-12);
    cJSON_Delete(j);
    for (int k = 0; k < NDEV; k++)
        rawdev_free(&d[k]);
    /* the next task carries the new clip */
    CHECK(enrol(&t, d, 1) == 0);
    CHECK_EQ_INT(raw_checkin(&t, &d[0]), 1);
    CHECK_NEAR(d[0].w.clip, next, 1e-12);
    rawdev_free(&d[0]);
    ts_stop(&t);
}

TEST(secagg_coord_central_adaptive_clipping_and_budget_done_is_saved)
{
    ts_server t;
    char key[80], tok[3][80];
    CHECK(start(&t, key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC,
                     "{\"rounds\":5,\"devices_per_round\":3,\"min_reports\":3,"
                     "\"over_selection\":1,\"round_deadline_s\":60,\"dataset\":\"toy\","
                     "\"dp_clip\":1,\"dp_noise\":0.3,\"dp_population\":30,"
                     "\"dp_adaptive_quantile\":0.5,\"dp_adaptive_count_noise\":0.2}") == 1);
    nn_model *w0 = ts_checkpoint(&t, key, 1, 0);
    CHECK(w0 != NULL);
    float delta[15];
    for (int i = 0; i < 15; i++)
        delta[i] = 0.5f; /* norm 1.94: clipped by every device → b̄ ≈ 0 < γ: the clip grows */
    ts_resp r;
    for (int k = 0; k < 3; k++) {
        CHECK(ts_device(&t, TS_TOY_SCHEMA, tok[k], NULL) == 0);
        CHECK_EQ_INT(ts_checkin(&t, tok[k], NULL, NULL, NULL), 1);
        float dd[15];
        for (int i = 0; i < 15; i++)
            dd[i] = delta[i] / 1.94f; /* clipped to norm ≤ 1 */
        const char *keys1[] = {"attempt", "num_samples"}, *vals1[] = {"1", "10"};
        const char *keys2[] = {"attempt", "num_samples", "unclipped"}, *vals2[] = {"1", "10", "0"};
        uint8_t *body;
        size_t len;
        if (k == 0) { /* without the bit: refused, naming it */
            CHECK(ts_update(w0, dd, keys1, vals1, 2, &body, &len) == 0);
            CHECK(ts_report(&t, tok[k], 1, 1, body, len, &r) == 0);
            CHECK(r.status == 400 && ts_is_error(&r, "bad_field", "unclipped"));
            ts_resp_free(&r);
            free(body);
        }
        CHECK(ts_update(w0, dd, keys2, vals2, 3, &body, &len) == 0);
        CHECK(ts_report(&t, tok[k], 1, 1, body, len, &r) == 0);
        CHECK_EQ_INT((int)r.status, 200);
        ts_resp_free(&r);
        free(body);
    }
    cJSON *j = wait_version(&t, key, 1, 1, 10);
    CHECK(j != NULL);
    double clip = jnum(j, "dp_clip");
    CHECK(clip > 1.0 && clip < 1.3); /* ×exp(0.2·(0.5 − b̄)) ≤ e^0.1 */
    cJSON_Delete(j);
    nn_model_free(w0);
    /* a second project whose target ε is below even one round's: done, and saved */
    CHECK(ts_project(&t, key, TS_TOY_SPEC,
                     "{\"rounds\":5,\"devices_per_round\":3,\"min_reports\":3,"
                     "\"over_selection\":1,\"round_deadline_s\":60,\"dataset\":\"toy\","
                     "\"dp_clip\":1,\"dp_noise\":0.5,\"dp_population\":30,"
                     "\"dp_target_epsilon\":0.001}") == 2);
    char reason[32] = "";
    for (int k = 0; k < 3; k++) { /* the first project's round 2 takes them, then done */
        CHECK(ts_post_json(t.url, "/v1/checkin", tok[k], "{}", &r) == 0);
        ts_resp_free(&r);
    }
    char tok4[80];
    CHECK(ts_device(&t, TS_TOY_SCHEMA, tok4, NULL) == 0);
    CHECK(ts_post_json(t.url, "/v1/checkin", tok4, "{}", &r) == 0);
    ts_resp_free(&r);
    (void)reason;
    j = ts_status(&t, key, 2);
    CHECK(j && strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "done") == 0);
    cJSON_Delete(j);
    char db[600];
    snprintf(db, sizeof db, "%s", t.db);
    ts_stop(&t);
    CHECK(ts_start(&t, db, NULL) == 0);
    j = ts_status(&t, key, 2);
    CHECK(j && strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "done") == 0);
    cJSON_Delete(j);
    ts_stop(&t);
}
