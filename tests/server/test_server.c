/* test_server.c — the coordinator over HTTP on 127.0.0.1: auth and roles, validation of
 * projects, the round (selection, pace steering, exact FedAvg commit, deadlines, abandon and
 * retry), every refusal of a bad update with its JSON error while the server keeps serving,
 * strategy state across a restart, checkpoints with ETags, metrics, and TLS. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../test.h"
#include "core/err.h"
#include "fed/strategy.h"
#include "nn/checkpoint.h"
#include "testsrv.h"

#define TOY_PLAN(extra)                                                                      \
    "{\"rounds\":3,\"devices_per_round\":3,\"min_reports\":3,\"over_selection\":1,"          \
    "\"round_deadline_s\":60,\"dataset\":\"toy\"" extra "}"

static int start(ts_server *t, const srv_server_config *cfg, char *key)
{
    char db[600];
    snprintf(db, sizeof db, "%s/c.db", t_tmpdir());
    if (ts_start(t, db, cfg))
        return -1;
    return key ? ts_owner(t, "acme", key) : 0;
}

static nn_model *toy_model(void)
{
    nn_model *m = NULL;
    nn_model_from_json(TS_TOY_SPEC, "toy", NULL, &m);
    return m;
}

/* An update body with delta d and metadata attempt / num_samples (+ optional extra pairs). */
static uint8_t *make_update(const nn_model *m, const float *d, int attempt, double n,
                            const char *k2, const char *v2, size_t *len)
{
    char a[16], ns[32];
    snprintf(a, sizeof a, "%d", attempt);
    snprintf(ns, sizeof ns, "%.17g", n);
    const char *keys[3] = {"attempt", "num_samples", k2}, *vals[3] = {a, ns, v2};
    uint8_t *buf = NULL;
    if (ts_update(m, d, keys, vals, k2 ? 3 : 2, &buf, len))
        return NULL;
    return buf;
}

static int get_status(const ts_server *t, const char *key, int64_t pid, cJSON **out)
{
    char path[64];
    ts_resp r;
    snprintf(path, sizeof path, "/v1/projects/%lld", (long long)pid);
    int rc = ts_http(t->url, "GET", path, key, NULL, NULL, 0, NULL, &r);
    *out = !rc && r.status == 200 ? ts_json(&r) : NULL;
    ts_resp_free(&r);
    return *out ? 0 : -1;
}

/* Downloads checkpoint `version` ("latest" or a number) as an owner and parses it. */
static nn_model *get_ckpt(const ts_server *t, const char *key, int64_t pid, const char *version,
                          char *etag)
{
    char path[96];
    ts_resp r;
    snprintf(path, sizeof path, "/v1/projects/%lld/checkpoints/%s", (long long)pid, version);
    nn_model *m = NULL;
    if (!ts_http(t->url, "GET", path, key, NULL, NULL, 0, NULL, &r) && r.status == 200)
        nn_checkpoint_parse(r.body, r.len, "download", NULL, &m);
    if (etag)
        snprintf(etag, 64, "%s", r.etag);
    ts_resp_free(&r);
    return m;
}

static int healthy(const ts_server *t)
{
    ts_resp r;
    int ok = !ts_http(t->url, "GET", "/healthz", NULL, NULL, NULL, 0, NULL, &r) && r.status == 200;
    ts_resp_free(&r);
    return ok;
}

TEST(server_healthz_and_metrics)
{
    ts_server t;
    CHECK(start(&t, NULL, NULL) == 0);
    ts_resp r;
    CHECK(ts_http(t.url, "GET", "/healthz", NULL, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    CHECK(strstr(r.ctype, "application/json"));
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/metrics", NULL, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.ctype, "text/plain"));
    CHECK(strstr(r.body, "# TYPE artificien_rounds_total counter"));
    CHECK(strstr(r.body, "artificien_checkins_total{action=\"train\"} 0"));
    CHECK(strstr(r.body, "artificien_reports_total{result=\"over_norm\"} 0"));
    CHECK(strstr(r.body, "artificien_request_seconds_bucket{le=\"+Inf\"} 1"));
    CHECK(strstr(r.body, "artificien_bytes_total{direction=\"out\"}"));
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/nope", NULL, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(ts_is_error(&r, "not_found", "/nope"));
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "DELETE", "/v1/projects", "x", NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 405);
    CHECK(ts_is_error(&r, "method_not_allowed", "DELETE"));
    ts_resp_free(&r);
    ts_stop(&t);
}

TEST(server_auth_and_roles)
{
    ts_server t;
    char key_a[80], key_b[80], dev[80];
    CHECK(start(&t, NULL, key_a) == 0);
    struct stat sa, ss;
    CHECK(stat(srv_server_admin_key_path(t.s), &sa) == 0 &&
          stat(srv_server_secret_path(t.s), &ss) == 0);
    CHECK_EQ_INT(sa.st_mode & 0777, 0600);
    CHECK_EQ_INT(ss.st_mode & 0777, 0600);
    CHECK_EQ_INT(strlen(t.admin), 64);
    ts_resp r;
    /* missing and unknown tokens: 401 with a JSON error */
    CHECK(ts_post_json(t.url, "/v1/owners", NULL, "{\"name\":\"b\"}", &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    CHECK(ts_is_error(&r, "unauthorized", "Authorization"));
    ts_resp_free(&r);
    CHECK(ts_post_json(t.url, "/v1/owners", "00000000000000000000000000000000000000000000000000"
                                            "00000000000000", "{\"name\":\"b\"}", &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    CHECK(ts_is_error(&r, "unauthorized", "unknown token"));
    ts_resp_free(&r);
    /* a valid token in the wrong role: 403 */
    CHECK(ts_post_json(t.url, "/v1/owners", key_a, "{\"name\":\"b\"}", &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    CHECK(ts_is_error(&r, "forbidden", "admin key"));
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects", t.admin, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    CHECK(ts_is_error(&r, "forbidden", "owner"));
    ts_resp_free(&r);
    CHECK(ts_device(&t, TS_TOY_SCHEMA, dev, NULL) == 0);
    CHECK(ts_http(t.url, "GET", "/v1/projects", dev, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    ts_resp_free(&r);
    CHECK(ts_post_json(t.url, "/v1/checkin", key_a, "{}", &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    CHECK(ts_is_error(&r, "forbidden", "device token"));
    ts_resp_free(&r);
    /* owners are unique by name */
    CHECK(ts_post_json(t.url, "/v1/owners", t.admin, "{\"name\":\"acme\"}", &r) == 0);
    CHECK_EQ_INT(r.status, 409);
    CHECK(ts_is_error(&r, "conflict", "acme"));
    ts_resp_free(&r);
    /* another owner sees nothing of acme's project */
    CHECK(ts_owner(&t, "beta", key_b) == 0);
    int64_t pid = ts_project(&t, key_a, TS_TOY_SPEC, TOY_PLAN(""));
    CHECK(pid > 0);
    char path[96];
    snprintf(path, sizeof path, "/v1/projects/%lld", (long long)pid);
    CHECK(ts_http(t.url, "GET", path, key_b, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    CHECK(ts_is_error(&r, "forbidden", "another owner"));
    ts_resp_free(&r);
    snprintf(path, sizeof path, "/v1/projects/%lld/checkpoints/0", (long long)pid);
    CHECK(ts_http(t.url, "GET", path, key_b, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    ts_resp_free(&r);
    /* a device never selected for the project cannot download its weights */
    CHECK(ts_http(t.url, "GET", path, dev, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    CHECK(ts_is_error(&r, "forbidden", "never selected"));
    ts_resp_free(&r);
    snprintf(path, sizeof path, "/v1/projects/%lld/checkpoint", (long long)pid);
    CHECK(ts_http(t.url, "PUT", path, key_b, "application/octet-stream", "x", 1, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects", key_b, NULL, NULL, 0, NULL, &r) == 0);
    CHECK(strcmp(r.body, "{\"projects\":[]}") == 0);
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects", key_a, NULL, NULL, 0, NULL, &r) == 0);
    CHECK(strstr(r.body, "\"status\":\"running\""));
    ts_resp_free(&r);
    /* enrolment: a wrong secret is refused; a secret made by the admin works */
    CHECK(ts_post_json(t.url, "/v1/devices", NULL, "{\"secret\":\"nope\",\"dataset\":"
                                                   TS_TOY_SCHEMA "}", &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    CHECK(ts_is_error(&r, "unauthorized", "secret"));
    ts_resp_free(&r);
    CHECK(ts_post_json(t.url, "/v1/enrollment-secrets", t.admin, "{}", &r) == 0);
    CHECK_EQ_INT(r.status, 201);
    cJSON *j = ts_json(&r);
    ts_resp_free(&r);
    char body[512];
    snprintf(body, sizeof body, "{\"secret\":\"%s\",\"dataset\":" TS_TOY_SCHEMA "}",
             cJSON_GetObjectItem(j, "secret")->valuestring);
    cJSON_Delete(j);
    CHECK(ts_post_json(t.url, "/v1/devices", NULL, body, &r) == 0);
    CHECK_EQ_INT(r.status, 201);
    CHECK(ts_num(&r, "device_id") == 2);
    ts_resp_free(&r);
    CHECK(ts_post_json(t.url, "/v1/devices", NULL, "{\"secret\":\"x\",\"dataset\":{\"shape\":[4]}}",
                       &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(ts_is_error(&r, "bad_field", "dataset.name"));
    ts_resp_free(&r);
    ts_stop(&t);
}

/* POSTs a project body and checks the 400 names `needle`. */
static int refused_project(const ts_server *t, const char *key, const char *body,
                           const char *code, const char *needle)
{
    ts_resp r;
    int ok = !ts_post_json(t->url, "/v1/projects", key, body, &r) && r.status == 400 &&
             ts_is_error(&r, code, needle);
    ts_resp_free(&r);
    return ok;
}

TEST(server_project_validation)
{
    ts_server t;
    char key[80];
    srv_server_config cfg = {.max_params = 100};
    CHECK(start(&t, &cfg, key) == 0);
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":{\"input\":[4],\"layers\":[{\"type\":"
                                   "\"lstm\"}]},\"plan\":{\"rounds\":1}}", "bad_field", "spec"));
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":{\"input\":[40],\"layers\":[{\"type\":"
                                   "\"linear\",\"in_features\":40,\"out_features\":10}]},"
                                   "\"plan\":{\"rounds\":1}}", "bad_field", "more than 100 param"));
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{}}",
                          "bad_field", "plan.rounds"));
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{\"rounds\":"
                                   "2,\"devices_per_round\":3,\"min_reports\":5}}", "bad_field",
                          "plan.min_reports"));
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{\"rounds\":"
                                   "2,\"epochs\":3}}", "bad_field", "plan.epochs"));
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{\"rounds\":"
                                   "2,\"strategy\":\"fedsgd\"}}", "bad_field", "plan.strategy"));
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{\"rounds\":"
                                   "2,\"strategy_opts\":\"eta=-1\"}}", "bad_field", "eta"));
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{\"rounds\":"
                                   "2,\"lr\":\"fast\"}}", "bad_field", "plan.lr"));
    CHECK(refused_project(&t, key, "{\"spec\":" TS_TOY_SPEC ",\"plan\":{\"rounds\":2}}",
                          "bad_field", "name"));
    CHECK(refused_project(&t, key, "{\"name\":\"x\",\"spec\":", "bad_json", "malformed JSON"));
    CHECK(refused_project(&t, key, "[1,2]", "bad_json", "object"));
    ts_resp r;
    const char *good = "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{\"rounds\":2}}";
    CHECK(ts_http(t.url, "POST", "/v1/projects", key, "text/plain", good, strlen(good), NULL,
                  &r) == 0);
    CHECK_EQ_INT(r.status, 415);
    CHECK(ts_is_error(&r, "bad_content_type", "application/json"));
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects/999", key, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(ts_is_error(&r, "not_found", "project 999"));
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects/abc", key, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    ts_resp_free(&r);
    /* the good one, and its canonical plan with every default filled in */
    CHECK(ts_post_json(t.url, "/v1/projects", key, good, &r) == 0);
    CHECK_EQ_INT(r.status, 201);
    CHECK(ts_num(&r, "id") == 1 && ts_num(&r, "version") == 0);
    ts_resp_free(&r);
    cJSON *st;
    CHECK(get_status(&t, key, 1, &st) == 0);
    const cJSON *plan = cJSON_GetObjectItem(st, "plan");
    CHECK(cJSON_GetObjectItem(plan, "devices_per_round")->valueint == 10);
    CHECK(cJSON_GetObjectItem(plan, "min_reports")->valueint == 8);
    CHECK(strcmp(cJSON_GetObjectItem(plan, "strategy")->valuestring, "fedavg") == 0);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(st, "round")));
    cJSON_Delete(st);
    CHECK(healthy(&t));
    ts_stop(&t);
}

TEST(server_round_commits_fedavg_exactly)
{
    ts_server t;
    char key[80], dev[4][80];
    CHECK(start(&t, NULL, key) == 0);
    int64_t pid = ts_project(&t, key, TS_TOY_SPEC, TOY_PLAN(""));
    CHECK(pid == 1);
    for (int k = 0; k < 4; k++)
        CHECK(ts_device(&t, TS_TOY_SCHEMA, dev[k], NULL) == 0);
    int round = 0, attempt = 0;
    for (int k = 0; k < 3; k++) {
        CHECK_EQ_INT(ts_checkin(&t, dev[k], NULL, &round, &attempt), 1);
        CHECK_EQ_INT(round, 1);
        CHECK_EQ_INT(attempt, 1);
    }
    /* asked again, a selected device gets the same task */
    CHECK_EQ_INT(ts_checkin(&t, dev[0], NULL, &round, &attempt), 1);
    /* the round is full: wait, about 2 × the 5 s base, ±20 % */
    ts_resp r;
    CHECK(ts_post_json(t.url, "/v1/checkin", dev[3], "{}", &r) == 0);
    double ra = ts_num(&r, "retry_after");
    CHECK(strstr(r.body, "\"action\":\"wait\""));
    CHECK(ra >= 8.0 && ra <= 12.0);
    ts_resp_free(&r);
    /* devices in the round may download the checkpoint; with its ETag, 304 */
    char etag[64];
    CHECK(ts_http(t.url, "GET", "/v1/projects/1/checkpoints/0", dev[0], NULL, NULL, 0, NULL,
                  &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strcmp(r.etag, "\"p1-v0\"") == 0);
    CHECK(strcmp(r.ctype, "application/octet-stream") == 0);
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects/1/checkpoints/0", dev[3], NULL, NULL, 0, NULL,
                  &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    ts_resp_free(&r);
    nn_model *w0 = get_ckpt(&t, key, 1, "0", etag);
    CHECK(w0 != NULL);
    size_t n = w0->n_params;
    CHECK_EQ_INT(n, 15);
    /* three updates of different sizes, with losses and federated evaluation counts */
    float d[3][15];
    double ns[3] = {10, 20, 70}, loss[3] = {1.0, 2.0, 0.5};
    const char *conf[3] = {"[[3,1,0],[0,2,0],[0,0,4]]", "[[1,0,0],[0,1,1],[0,0,2]]",
                           "[[5,0,0],[1,3,0],[0,1,5]]"};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < n; i++)
            d[k][i] = (float)((k + 1) * 0.01 * (i + 1) * (i % 2 ? -1 : 1));
        char a[8], nsb[16], lb[16], es[16], ec[16];
        snprintf(a, sizeof a, "1");
        snprintf(nsb, sizeof nsb, "%g", ns[k]);
        snprintf(lb, sizeof lb, "%g", loss[k]);
        int tot = k == 0 ? 10 : k == 1 ? 5 : 15, cor = k == 0 ? 9 : k == 1 ? 4 : 13;
        snprintf(es, sizeof es, "%d", tot);
        snprintf(ec, sizeof ec, "%d", cor);
        const char *keys[] = {"attempt", "num_samples", "loss", "eval_samples", "eval_correct",
                              "eval_loss", "eval_confusion"};
        const char *vals[] = {a, nsb, lb, es, ec, "0.5", conf[k]};
        uint8_t *buf;
        size_t len;
        CHECK(ts_update(w0, d[k], keys, vals, 7, &buf, &len) == 0);
        CHECK(ts_report(&t, dev[k], 1, 1, buf, len, &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(ts_num(&r, "reports") == k + 1);
        ts_resp_free(&r);
        if (k == 0) { /* one report per device per round */
            CHECK(ts_report(&t, dev[0], 1, 1, buf, len, &r) == 0);
            CHECK_EQ_INT(r.status, 409);
            CHECK(ts_is_error(&r, "duplicate", "already reported"));
            ts_resp_free(&r);
        }
        if (k == 2) { /* the round committed at the goal: a report now is late */
            CHECK(ts_report(&t, dev[0], 1, 1, buf, len, &r) == 0);
            CHECK_EQ_INT(r.status, 409);
            CHECK(ts_is_error(&r, "late", "closed"));
            ts_resp_free(&r);
        }
        free(buf);
    }
    nn_model *w1 = get_ckpt(&t, key, 1, "latest", etag);
    CHECK(w1 != NULL);
    CHECK(strcmp(etag, "\"p1-v1\"") == 0);
    /* FedAvg: w1 = w0 + Σ n_k·d_k / Σ n_k */
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < 3; k++)
            s += ns[k] * d[k][i];
        CHECK_NEAR(w1->params[i], w0->params[i] + s / 100.0, 1e-6);
    }
    CHECK(ts_http(t.url, "GET", "/v1/projects/1/checkpoints/1", key, NULL, NULL, 0,
                  "If-None-Match: \"p1-v1\"", &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    CHECK_EQ_INT(r.len, 0);
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects/1/checkpoints/1", key, NULL, NULL, 0,
                  "If-None-Match: \"p1-v0\"", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects/1/checkpoints/7", key, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/v1/projects/1/checkpoints", key, NULL, NULL, 0, NULL, &r) == 0);
    cJSON *cl = ts_json(&r);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(cl, "checkpoints")), 2);
    cJSON_Delete(cl);
    ts_resp_free(&r);
    /* the round's numbers: loss weighted by samples, evaluation summed over the population */
    cJSON *st;
    CHECK(get_status(&t, key, 1, &st) == 0);
    CHECK(cJSON_GetObjectItem(st, "version")->valueint == 1);
    const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(st, "rounds"), 0);
    CHECK(strcmp(cJSON_GetObjectItem(r0, "state")->valuestring, "committed") == 0);
    CHECK(cJSON_GetObjectItem(r0, "reports")->valueint == 3);
    CHECK_NEAR(cJSON_GetObjectItem(r0, "train_loss")->valuedouble, (10 + 40 + 35) / 100.0, 1e-12);
    CHECK_NEAR(cJSON_GetObjectItem(r0, "eval_accuracy")->valuedouble, 26.0 / 30.0, 1e-12);
    CHECK(cJSON_GetObjectItem(r0, "eval_samples")->valueint == 30);
    char *pc = cJSON_PrintUnformatted(cJSON_GetObjectItem(st, "population_confusion"));
    CHECK(strcmp(pc, "[[9,1,0],[1,6,1],[0,1,11]]") == 0);
    free(pc);
    cJSON_Delete(st);
    /* round 2 opens with version 1 */
    CHECK_EQ_INT(ts_checkin(&t, dev[3], NULL, &round, &attempt), 1);
    CHECK_EQ_INT(round, 2);
    nn_model_free(w0);
    nn_model_free(w1);
    ts_stop(&t);
}

typedef struct bad_case {
    const char *what;
    uint8_t *body;
    size_t len;
    int status;
    const char *code, *needle;
} bad_case;

TEST(server_refuses_bad_updates_and_keeps_serving)
{
    ts_server t;
    char key[80], dev[3][80];
    srv_server_config cfg = {.max_body = 2048};
    CHECK(start(&t, &cfg, key) == 0);
    int64_t pid = ts_project(&t, key, TS_TOY_SPEC, "{\"rounds\":1,\"devices_per_round\":5,"
                                                   "\"dataset\":\"toy\",\"max_update_norm\":1}");
    CHECK(pid == 1);
    for (int k = 0; k < 3; k++)
        CHECK(ts_device(&t, TS_TOY_SCHEMA, dev[k], NULL) == 0);
    CHECK_EQ_INT(ts_checkin(&t, dev[0], NULL, NULL, NULL), 1);
    CHECK_EQ_INT(ts_checkin(&t, dev[1], NULL, NULL, NULL), 1);
    nn_model *m = toy_model(), *other = NULL;
    CHECK(m != NULL);
    CHECK(nn_model_from_json("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"name\":\"fc\","
                             "\"in_features\":4,\"out_features\":2}]}", "other", NULL, &other) == 0);
    float d[15], big[15], bad[15];
    for (int i = 0; i < 15; i++)
        d[i] = 0.01f * (float)i, big[i] = 1.0f;
    size_t len;
    ts_resp r;
    bad_case cases[16];
    int nc = 0;
#define CASE(w, b, l, s, c, nd) cases[nc++] = (bad_case){w, b, l, s, c, nd}
    uint8_t *good = make_update(m, d, 1, 10, NULL, NULL, &len);
    size_t good_len = len;
    CASE("wrong shape", make_update(other, d, 1, 10, NULL, NULL, &len), len, 400, "bad_shape",
         "fc.weight");
    memcpy(bad, d, sizeof d);
    bad[7] = NAN;
    CASE("NaN", make_update(m, bad, 1, 10, NULL, NULL, &len), len, 400, "non_finite", "NaN");
    bad[7] = INFINITY;
    CASE("Inf", make_update(m, bad, 1, 10, NULL, NULL, &len), len, 400, "non_finite", "Inf");
    CASE("over norm", make_update(m, big, 1, 10, NULL, NULL, &len), len, 400, "over_norm",
         "max_update_norm");
    uint8_t *trunc = malloc(good_len);
    memcpy(trunc, good, good_len);
    CASE("truncated", trunc, good_len - 4, 400, "bad_safetensors", NULL);
    uint8_t *lying = malloc(good_len);
    memcpy(lying, good, good_len);
    lying[0] = 0xff, lying[1] = 0xff; /* a header length past the end of the body */
    CASE("lying header", lying, good_len, 400, "bad_safetensors", NULL);
    uint8_t *garbage = malloc(64);
    memset(garbage, 'x', 64);
    CASE("garbage", garbage, 64, 400, "bad_safetensors", NULL);
    const char *k1[] = {"attempt"}, *v1[] = {"1"};
    uint8_t *nosamples;
    CHECK(ts_update(m, d, k1, v1, 1, &nosamples, &len) == 0);
    CASE("no num_samples", nosamples, len, 400, "bad_field", "num_samples");
    CASE("negative samples", make_update(m, d, 1, -3, NULL, NULL, &len), len, 400, "bad_field",
         "num_samples");
    CASE("bad confusion", make_update(m, d, 1, 10, "eval_confusion", "[[1,2]]", &len), len, 400,
         "bad_field", "eval_confusion");
    CASE("future attempt", make_update(m, d, 2, 10, NULL, NULL, &len), len, 409, "wrong_round",
         "attempt 2");
    for (int i = 0; i < nc; i++) {
        CHECK_MSG(cases[i].body != NULL, "case %s: no body", cases[i].what);
        CHECK(ts_report(&t, dev[0], 1, 1, cases[i].body, cases[i].len, &r) == 0);
        CHECK_MSG(r.status == cases[i].status, "case %s: status %ld (%s)", cases[i].what, r.status,
                  r.body);
        CHECK_MSG(ts_is_error(&r, cases[i].code, cases[i].needle), "case %s", cases[i].what);
        ts_resp_free(&r);
        CHECK_MSG(healthy(&t), "case %s: server stopped serving", cases[i].what);
        free(cases[i].body);
    }
    /* transport-level refusals */
    CHECK(ts_http(t.url, "POST", "/v1/projects/1/rounds/1/reports", dev[0], "application/json",
                  good, good_len, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 415);
    CHECK(ts_is_error(&r, "bad_content_type", "octet-stream"));
    ts_resp_free(&r);
    uint8_t *huge = calloc(1, 4096);
    CHECK(ts_report(&t, dev[0], 1, 1, huge, 4096, &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(ts_is_error(&r, "too_large", "2048"));
    ts_resp_free(&r);
    /* a chunked body (no length) past the limit is cut off too */
    CHECK(ts_http(t.url, "POST", "/v1/projects/1/rounds/1/reports", dev[0],
                  "application/octet-stream", huge, 4096, "Transfer-Encoding: chunked", &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    ts_resp_free(&r);
    free(huge);
    CHECK(ts_report(&t, dev[2], 1, 1, good, good_len, &r) == 0);
    CHECK_EQ_INT(r.status, 403);
    CHECK(ts_is_error(&r, "forbidden", "not selected"));
    ts_resp_free(&r);
    CHECK(ts_report(&t, dev[0], 1, 7, good, good_len, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(ts_is_error(&r, "not_found", "round 7"));
    ts_resp_free(&r);
    CHECK(ts_report(&t, dev[0], 9, 1, good, good_len, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(ts_is_error(&r, "not_found", "project 9"));
    ts_resp_free(&r);
    CHECK(ts_report(&t, "nobody", 1, 1, good, good_len, &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    ts_resp_free(&r);
    /* none of that used up the device's one report */
    CHECK(ts_report(&t, dev[0], 1, 1, good, good_len, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    ts_resp_free(&r);
    CHECK(ts_report(&t, dev[0], 1, 1, good, good_len, &r) == 0);
    CHECK_EQ_INT(r.status, 409);
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "GET", "/metrics", NULL, NULL, NULL, 0, NULL, &r) == 0);
    CHECK(strstr(r.body, "artificien_reports_total{result=\"accepted\"} 1\n"));
    CHECK(strstr(r.body, "artificien_reports_total{result=\"non_finite\"} 2\n"));
    CHECK(strstr(r.body, "artificien_reports_total{result=\"bad_safetensors\"} 3\n"));
    CHECK(strstr(r.body, "artificien_reports_total{result=\"too_large\"} 2\n"));
    CHECK(strstr(r.body, "artificien_reports_total{result=\"duplicate\"} 1\n"));
    ts_resp_free(&r);
    cJSON *st;
    CHECK(get_status(&t, key, 1, &st) == 0);
    const cJSON *rd = cJSON_GetObjectItem(st, "round");
    CHECK(cJSON_GetObjectItem(rd, "reports")->valueint == 1);
    CHECK(cJSON_GetObjectItem(rd, "refused")->valueint >= 10);
    cJSON_Delete(st);
    free(good);
    nn_model_free(m);
    nn_model_free(other);
    ts_stop(&t);
}

TEST(server_deadline_abandons_and_retries)
{
    ts_server t;
    char key[80], dev[2][80];
    CHECK(start(&t, NULL, key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, "{\"rounds\":2,\"devices_per_round\":3,\"min_reports\""
                                           ":2,\"over_selection\":1,\"round_deadline_s\":0.3,"
                                           "\"dataset\":\"toy\"}") == 1);
    for (int k = 0; k < 2; k++) {
        CHECK(ts_device(&t, TS_TOY_SCHEMA, dev[k], NULL) == 0);
        CHECK_EQ_INT(ts_checkin(&t, dev[k], NULL, NULL, NULL), 1);
    }
    nn_model *m = toy_model();
    float d[15] = {0.1f};
    size_t len;
    uint8_t *u1 = make_update(m, d, 1, 5, NULL, NULL, &len);
    ts_resp r;
    CHECK(ts_report(&t, dev[0], 1, 1, u1, len, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    ts_resp_free(&r);
    usleep(600000);
    /* one report < min_reports 2 at the deadline: abandoned, nothing committed */
    cJSON *st;
    CHECK(get_status(&t, key, 1, &st) == 0);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(st, "round")));
    CHECK(cJSON_GetObjectItem(st, "version")->valueint == 0);
    const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(st, "rounds"), 0);
    CHECK(strcmp(cJSON_GetObjectItem(r0, "state")->valuestring, "abandoned") == 0);
    CHECK(cJSON_GetObjectItem(r0, "reports")->valueint == 1);
    cJSON_Delete(st);
    CHECK(ts_report(&t, dev[1], 1, 1, u1, len, &r) == 0);
    CHECK_EQ_INT(r.status, 409);
    CHECK(ts_is_error(&r, "late", "abandoned"));
    ts_resp_free(&r);
    /* the next check-in opens attempt 2 of the same round, from the same checkpoint */
    int round = 0, attempt = 0;
    CHECK_EQ_INT(ts_checkin(&t, dev[0], NULL, &round, &attempt), 1);
    CHECK_EQ_INT(round, 1);
    CHECK_EQ_INT(attempt, 2);
    CHECK(ts_report(&t, dev[0], 1, 1, u1, len, &r) == 0);
    CHECK_EQ_INT(r.status, 409);
    CHECK(ts_is_error(&r, "late", "attempt 1 was abandoned"));
    ts_resp_free(&r);
    free(u1);
    uint8_t *u2 = make_update(m, d, 2, 5, NULL, NULL, &len);
    CHECK(ts_report(&t, dev[0], 1, 1, u2, len, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    ts_resp_free(&r);
    CHECK_EQ_INT(ts_checkin(&t, dev[1], NULL, NULL, NULL), 1);
    CHECK(ts_report(&t, dev[1], 1, 1, u2, len, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    ts_resp_free(&r);
    free(u2);
    /* two reports reach min_reports: the deadline commits */
    usleep(600000);
    CHECK(get_status(&t, key, 1, &st) == 0);
    CHECK(cJSON_GetObjectItem(st, "version")->valueint == 1);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(st, "rounds"), 1);
    CHECK(strcmp(cJSON_GetObjectItem(r1, "state")->valuestring, "committed") == 0);
    CHECK(cJSON_GetObjectItem(r1, "attempt")->valueint == 2);
    cJSON_Delete(st);
    CHECK(ts_http(t.url, "GET", "/metrics", NULL, NULL, NULL, 0, NULL, &r) == 0);
    CHECK(strstr(r.body, "artificien_rounds_total{state=\"abandoned\"} 1\n"));
    CHECK(strstr(r.body, "artificien_rounds_total{state=\"committed\"} 1\n"));
    ts_resp_free(&r);
    nn_model_free(m);
    ts_stop(&t);
}

TEST(server_checkin_matches_schema_caps_conditions)
{
    ts_server t;
    char key[80], dev[80], other[80];
    CHECK(start(&t, NULL, key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, TOY_PLAN("")) == 1);
    CHECK(ts_device(&t, TS_TOY_SCHEMA, dev, NULL) == 0);
    CHECK(ts_device(&t, "{\"name\":\"toy\",\"shape\":[5],\"classes\":3}", other, NULL) == 0);
    /* the enrolled schema has 5 features: never a task for a 4-feature model */
    CHECK_EQ_INT(ts_checkin(&t, other, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(ts_checkin(&t, dev, "{\"dataset\":{\"name\":\"mnist\",\"shape\":[4]}}", NULL,
                            NULL), 0);
    CHECK_EQ_INT(ts_checkin(&t, dev, "{\"caps\":{\"max_params\":10}}", NULL, NULL), 0);
    CHECK_EQ_INT(ts_checkin(&t, dev, "{\"caps\":{\"max_epochs\":0.5}}", NULL, NULL), 0);
    CHECK_EQ_INT(ts_checkin(&t, dev, "{\"conditions\":{\"charging\":false,\"idle\":true}}", NULL,
                            NULL), 0);
    ts_resp r;
    CHECK(ts_post_json(t.url, "/v1/checkin", dev, "{\"dataset\":{\"name\":7}}", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(ts_is_error(&r, "bad_field", "dataset.name"));
    ts_resp_free(&r);
    CHECK(ts_post_json(t.url, "/v1/checkin", dev, "{\"dataset\":" TS_TOY_SCHEMA ",\"x\":1}", &r)
          == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(ts_is_error(&r, "bad_field", "x: unknown"));
    ts_resp_free(&r);
    /* the wait of an idle device is the 5 s base ±20 % */
    CHECK(ts_post_json(t.url, "/v1/checkin", other, "{}", &r) == 0);
    CHECK(ts_num(&r, "retry_after") >= 4.0 && ts_num(&r, "retry_after") <= 6.0);
    ts_resp_free(&r);
    CHECK_EQ_INT(ts_checkin(&t, dev, "{\"dataset\":" TS_TOY_SCHEMA ",\"conditions\":{\"charging\":"
                                     "true,\"idle\":true,\"unmetered\":true},\"caps\":{"
                                     "\"max_params\":1000,\"max_epochs\":5}}", NULL, NULL), 1);
    ts_stop(&t);
}

/* Runs one round with a single device reporting d (attempt 1, 1 sample). */
static int one_round(const ts_server *t, const char *dev, const nn_model *m, const float *d,
                     int round)
{
    int rd = 0, at = 0;
    if (ts_checkin(t, dev, NULL, &rd, &at) != 1 || rd != round)
        return -1;
    size_t len;
    uint8_t *u = make_update(m, d, at, 1, NULL, NULL, &len);
    ts_resp r;
    int ok = u && !ts_report(t, dev, 1, round, u, len, &r) && r.status == 200;
    ts_resp_free(&r);
    free(u);
    return ok ? 0 : -1;
}

TEST(server_strategy_state_survives_restart)
{
    ts_server t;
    char key[80], dev[80];
    CHECK(start(&t, NULL, key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, "{\"rounds\":3,\"devices_per_round\":1,\"min_reports\":"
                                           "1,\"over_selection\":1,\"dataset\":\"toy\",\"strategy\":"
                                           "\"fedavgm\",\"strategy_opts\":\"eta=1,beta=0.9\"}") == 1);
    CHECK(ts_device(&t, TS_TOY_SCHEMA, dev, NULL) == 0);
    nn_model *w0 = get_ckpt(&t, key, 1, "0", NULL);
    CHECK(w0 != NULL);
    float d1[15], d2[15];
    for (int i = 0; i < 15; i++)
        d1[i] = 0.1f * (float)(i - 7), d2[i] = 0.02f * (float)(i % 4);
    CHECK(one_round(&t, dev, w0, d1, 1) == 0);
    char db[600];
    snprintf(db, sizeof db, "%s", t.db);
    ts_stop(&t);
    CHECK(ts_start(&t, db, NULL) == 0);
    CHECK(one_round(&t, dev, w0, d2, 2) == 0);
    nn_model *w2 = get_ckpt(&t, key, 1, "2", NULL);
    CHECK(w2 != NULL);
    /* the same two rounds in process: momentum carried from round 1 into round 2 */
    fed_strategy *s;
    fed_agg *a;
    CHECK(fed_strategy_create("fedavgm", "eta=1,beta=0.9", 15, &s) == 0);
    CHECK(fed_agg_create(s, &a) == 0);
    float w[15];
    memcpy(w, w0->params, sizeof w);
    CHECK(fed_agg_add(a, d1, 1, NULL) == 0);
    CHECK(fed_strategy_apply(s, a, w) == 0);
    fed_agg_reset(a);
    CHECK(fed_agg_add(a, d2, 1, NULL) == 0);
    CHECK(fed_strategy_apply(s, a, w) == 0);
    CHECK(memcmp(w, w2->params, sizeof w) == 0); /* bitwise: the state was restored exactly */
    fed_agg_free(a);
    fed_strategy_free(s);
    nn_model_free(w0);
    nn_model_free(w2);
    ts_stop(&t);
}

TEST(server_initial_checkpoint_upload)
{
    ts_server t;
    char key[80], dev[80];
    CHECK(start(&t, NULL, key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, TOY_PLAN("")) == 1);
    nn_model *m = toy_model();
    for (int i = 0; i < 15; i++)
        m->params[i] = 0.25f * (float)i;
    uint8_t *buf;
    size_t len;
    CHECK(nn_checkpoint_serialize(m, NULL, NULL, 0, &buf, &len) == 0);
    ts_resp r;
    CHECK(ts_http(t.url, "PUT", "/v1/projects/1/checkpoint", key, "application/octet-stream",
                  buf, len - 8, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(ts_is_error(&r, "bad_safetensors", NULL));
    ts_resp_free(&r);
    CHECK(ts_http(t.url, "PUT", "/v1/projects/1/checkpoint", key, "application/octet-stream",
                  buf, len, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    ts_resp_free(&r);
    nn_model *got = get_ckpt(&t, key, 1, "0", NULL);
    CHECK(got && memcmp(got->params, m->params, 15 * sizeof(float)) == 0);
    nn_model_free(got);
    /* once a round has opened, the initial weights are fixed */
    CHECK(ts_device(&t, TS_TOY_SCHEMA, dev, NULL) == 0);
    CHECK_EQ_INT(ts_checkin(&t, dev, NULL, NULL, NULL), 1);
    CHECK(ts_http(t.url, "PUT", "/v1/projects/1/checkpoint", key, "application/octet-stream",
                  buf, len, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 409);
    CHECK(ts_is_error(&r, "conflict", "rounds have started"));
    ts_resp_free(&r);
    free(buf);
    nn_model_free(m);
    ts_stop(&t);
}

TEST(server_tls_with_a_self_signed_certificate)
{
    const char *dir = t_tmpdir();
    char cmd[2048], cert[600], keyf[600];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(keyf, sizeof keyf, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd, "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' "
                              "-days 1 -subj /CN=127.0.0.1 >/dev/null 2>&1", keyf, cert);
    CHECK_MSG(system(cmd) == 0, "openssl could not make a certificate (tools/install-deps.sh "
                                "installs openssl)");
    ts_server t;
    srv_server_config cfg = {.tls_cert = cert, .tls_key = keyf};
    CHECK(start(&t, &cfg, NULL) == 0);
    char https[64];
    snprintf(https, sizeof https, "https://127.0.0.1:%d", srv_server_port(t.s));
    ts_resp r;
    CHECK(ts_http(https, "GET", "/healthz", NULL, NULL, NULL, 0, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body, "ok"));
    ts_resp_free(&r);
    char key[80];
    snprintf(t.url, sizeof t.url, "%s", https);
    CHECK(ts_owner(&t, "tls-owner", key) == 0);
    /* plain HTTP on the TLS port gets no answer */
    snprintf(https, sizeof https, "http://127.0.0.1:%d", srv_server_port(t.s));
    ts_http(https, "GET", "/healthz", NULL, NULL, NULL, 0, NULL, &r);
    CHECK(r.status != 200);
    ts_resp_free(&r);
    ts_stop(&t);
    /* a missing key file is a clear start error */
    cfg.tls_key = "/nonexistent/key.pem";
    srv_server *s = NULL;
    char db[700];
    snprintf(db, sizeof db, "%s/other.db", dir);
    cfg.db_path = db;
    CHECK(srv_server_start(&cfg, &s) != 0 && s == NULL);
    CHECK(strstr(af_errmsg(), "/nonexistent/key.pem"));
}

TEST(server_large_update_streams_through_a_spool_file)
{
    /* 300,100 parameters: the 1.2 MB update goes through the spool file, not memory */
    const char *spec = "{\"input\":[3000],\"classes\":100,\"layers\":[{\"type\":\"linear\","
                       "\"name\":\"fc\",\"in_features\":3000,\"out_features\":100}]}";
    ts_server t;
    char key[80], dev[80];
    CHECK(start(&t, NULL, key) == 0);
    CHECK(ts_project(&t, key, spec, "{\"rounds\":1,\"devices_per_round\":1,\"min_reports\":1,"
                                    "\"dataset\":\"wide\"}") == 1);
    CHECK(ts_device(&t, "{\"name\":\"wide\",\"shape\":[3000]}", dev, NULL) == 0);
    CHECK_EQ_INT(ts_checkin(&t, dev, NULL, NULL, NULL), 1);
    nn_model *w0 = get_ckpt(&t, key, 1, "0", NULL);
    CHECK(w0 != NULL);
    size_t n = w0->n_params, len;
    float *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = (float)((int)(i % 7) - 3) * 1e-3f;
    uint8_t *u = make_update(w0, d, 1, 4, NULL, NULL, &len);
    CHECK(len > (1u << 20));
    ts_resp r;
    CHECK(ts_report(&t, dev, 1, 1, u, len, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    ts_resp_free(&r);
    nn_model *w1 = get_ckpt(&t, key, 1, "1", NULL);
    CHECK(w1 != NULL);
    for (size_t i = 0; i < n; i++)
        CHECK_NEAR(w1->params[i], w0->params[i] + d[i], 1e-7);
    free(u);
    free(d);
    nn_model_free(w0);
    nn_model_free(w1);
    ts_stop(&t);
}
