/* test_coord.c — the coordinator's round under concurrency and its check-in answers: reports
 * arriving on many connections at once are stored and folded in parallel partial sums and
 * the commit is bitwise the serial FedAvg; a waiting device is told why (no_task, conditions,
 * caps, round_full, project_done); the max_memory and max_seconds caps a device sends keep
 * it out of tasks it would refuse, by the same memory estimate as the device library's. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "client/task.h"
#include "core/rng.h"
#include "fed/strategy.h"
#include "nn/checkpoint.h"
#include "server/plan.h"
#include "testsrv.h"

static int start(ts_server *t, char *key)
{
    char db[600];
    snprintf(db, sizeof db, "%s/c.db", t_tmpdir());
    if (ts_start(t, db, NULL))
        return -1;
    return ts_owner(t, "acme", key);
}

/* The reason of a wait answer ("" for a task, "?" on error). */
static void reason_of(const ts_server *t, const char *dev, const char *body, char *out)
{
    ts_resp r;
    snprintf(out, 32, "?");
    if (ts_post_json(t->url, "/v1/checkin", dev, body, &r) == 0 && r.status == 200) {
        cJSON *j = ts_json(&r);
        const cJSON *why = cJSON_GetObjectItem(j, "reason");
        const cJSON *act = cJSON_GetObjectItem(j, "action");
        if (cJSON_IsString(act) && strcmp(act->valuestring, "train") == 0)
            out[0] = 0;
        else if (cJSON_IsString(why))
            snprintf(out, 32, "%s", why->valuestring);
        cJSON_Delete(j);
    }
    ts_resp_free(&r);
}

#define WIDE_SPEC                                                                            \
    "{\"name\":\"wide\",\"input\":[100],\"classes\":10,\"layers\":[{\"type\":\"linear\","    \
    "\"name\":\"fc\",\"in_features\":100,\"out_features\":10}]}"
#define WIDE_SCHEMA "{\"name\":\"wide\",\"shape\":[100],\"classes\":10}"
#define NDEV 48
#define NTHREADS 8

typedef struct poster {
    const ts_server *t;
    char (*dev)[80];
    uint8_t **body;
    size_t *len;
    int first, ok;
} poster;

static void *post_reports(void *arg)
{
    poster *p = arg;
    for (int k = p->first; k < NDEV; k += NTHREADS) {
        ts_resp r;
        if (ts_report(p->t, p->dev[k], 1, 1, p->body[k], p->len[k], &r) == 0 && r.status == 200)
            p->ok++;
        ts_resp_free(&r);
    }
    return NULL;
}

TEST(coord_concurrent_reports_fold_exactly)
{
    ts_server t;
    char key[80];
    static char dev[NDEV][80];
    CHECK(start(&t, key) == 0);
    CHECK(ts_project(&t, key, WIDE_SPEC, "{\"rounds\":2,\"devices_per_round\":48,\"min_reports\":"
                                         "48,\"over_selection\":1,\"round_deadline_s\":120,"
                                         "\"dataset\":\"wide\"}") == 1);
    for (int k = 0; k < NDEV; k++) {
        CHECK(ts_device(&t, WIDE_SCHEMA, dev[k], NULL) == 0);
        CHECK_EQ_INT(ts_checkin(&t, dev[k], NULL, NULL, NULL), 1);
    }
    nn_model *w0 = ts_checkpoint(&t, key, 1, 0);
    CHECK(w0 != NULL);
    size_t n = w0->n_params;
    /* deltas of many magnitudes, odd sample counts: a sum that rounding would give away */
    float *d = malloc(NDEV * n * sizeof *d);
    uint8_t *body[NDEV];
    size_t len[NDEV];
    double ns[NDEV];
    af_rng g;
    af_rng_seed(&g, 17, 3);
    for (int k = 0; k < NDEV; k++) {
        for (size_t i = 0; i < n; i++)
            d[k * n + i] = (float)(af_rng_normal(&g) * pow(10.0, -7.0 + 7.0 * af_rng_uniform(&g)));
        ns[k] = 1 + af_rng_below(&g, 997);
        char nb[32];
        snprintf(nb, sizeof nb, "%g", ns[k]);
        const char *keys[] = {"attempt", "num_samples"}, *vals[] = {"1", nb};
        CHECK(ts_update(w0, d + k * n, keys, vals, 2, &body[k], &len[k]) == 0);
    }
    pthread_t th[NTHREADS];
    poster ps[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        ps[i] = (poster){&t, dev, body, len, i, 0};
        CHECK(pthread_create(&th[i], NULL, post_reports, &ps[i]) == 0);
    }
    int ok = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        ok += ps[i].ok;
    }
    CHECK_EQ_INT(ok, NDEV);
    /* the goal was reached: committed, version 1 = FedAvg over all 48, bit for bit what one
     * accumulator fed serially gives */
    nn_model *w1 = ts_checkpoint(&t, key, 1, -1);
    CHECK(w1 != NULL);
    fed_strategy *s;
    fed_agg *a;
    CHECK(fed_strategy_create("fedavg", NULL, n, &s) == 0 && fed_agg_create(s, &a) == 0);
    for (int k = NDEV - 1; k >= 0; k--)
        CHECK(fed_agg_add_ref(a, d + k * n, ns[k], NULL) == 0);
    float *want = malloc(n * sizeof *want);
    memcpy(want, w0->params, n * sizeof *want);
    CHECK(fed_strategy_apply(s, a, want) == 0);
    CHECK_MSG(memcmp(w1->params, want, n * sizeof *want) == 0, "the parallel fold differs");
    /* one more than the goal is late */
    ts_resp r;
    CHECK(ts_report(&t, dev[0], 1, 1, body[0], len[0], &r) == 0);
    CHECK_EQ_INT(r.status, 409);
    ts_resp_free(&r);
    for (int k = 0; k < NDEV; k++)
        free(body[k]);
    free(d);
    free(want);
    fed_agg_free(a);
    fed_strategy_free(s);
    nn_model_free(w0);
    nn_model_free(w1);
    ts_stop(&t);
}

TEST(coord_checkin_says_why_a_device_waits)
{
    ts_server t;
    char key[80], a[80], b[80], c[80], why[32];
    CHECK(start(&t, key) == 0);
    CHECK(ts_device(&t, TS_TOY_SCHEMA, a, NULL) == 0);
    CHECK(ts_device(&t, TS_TOY_SCHEMA, c, NULL) == 0);
    CHECK(ts_device(&t, "{\"name\":\"other\",\"shape\":[4]}", b, NULL) == 0);
    reason_of(&t, a, "{}", why);
    CHECK_MSG(strcmp(why, "no_task") == 0, "%s", why); /* no project yet */
    CHECK(ts_project(&t, key, TS_TOY_SPEC, "{\"rounds\":1,\"devices_per_round\":1,"
                                           "\"min_reports\":1,\"over_selection\":1,"
                                           "\"round_deadline_s\":60,\"dataset\":\"toy\"}") == 1);
    reason_of(&t, b, "{}", why);
    CHECK_MSG(strcmp(why, "no_task") == 0, "%s", why); /* nothing for its data */
    reason_of(&t, a, "{\"conditions\":{\"idle\":false}}", why);
    CHECK_MSG(strcmp(why, "conditions") == 0, "%s", why);
    reason_of(&t, a, "{\"caps\":{\"max_memory\":1000}}", why);
    CHECK_MSG(strcmp(why, "caps") == 0, "%s", why);
    /* time: 3 · flops_fwd · samples · epochs at the device's speed, or 1 GFLOP/s */
    reason_of(&t, a, "{\"caps\":{\"max_seconds\":10},\"device\":{\"train_samples\":1e12}}", why);
    CHECK_MSG(strcmp(why, "caps") == 0, "%s", why);
    reason_of(&t, a, "{\"caps\":{\"max_seconds\":10},\"device\":{\"train_samples\":1e8,"
                     "\"flops_per_s\":1e16}}", why);
    CHECK_MSG(why[0] == 0, "%s", why); /* fast enough: the task */
    reason_of(&t, c, "{\"caps\":{\"max_memory\":1e9,\"max_seconds\":3600},\"device\":"
                     "{\"train_samples\":100}}", why);
    CHECK_MSG(strcmp(why, "round_full") == 0, "%s", why); /* 1 device per round: taken */
    /* a's report commits the only round: the project is done */
    nn_model *m = NULL;
    CHECK(nn_model_from_json(TS_TOY_SPEC, "toy", NULL, &m) == 0);
    float d[15] = {0.5f};
    const char *keys[] = {"attempt", "num_samples"}, *vals[] = {"1", "3"};
    uint8_t *u;
    size_t len;
    CHECK(ts_update(m, d, keys, vals, 2, &u, &len) == 0);
    ts_resp r;
    CHECK(ts_report(&t, a, 1, 1, u, len, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    ts_resp_free(&r);
    reason_of(&t, c, "{}", why);
    CHECK_MSG(strcmp(why, "project_done") == 0, "%s", why);
    reason_of(&t, a, "{\"conditions\":{\"idle\":false}}", why);
    CHECK_MSG(strcmp(why, "project_done") == 0, "%s", why); /* done says more than not now */
    reason_of(&t, b, "{}", why);
    CHECK_MSG(strcmp(why, "no_task") == 0, "%s", why);
    /* malformed caps and device facts are refused, naming the field */
    CHECK(ts_post_json(t.url, "/v1/checkin", a, "{\"caps\":{\"max_memory\":\"lots\"}}", &r) == 0);
    CHECK(r.status == 400 && ts_is_error(&r, "bad_field", "caps.max_memory"));
    ts_resp_free(&r);
    CHECK(ts_post_json(t.url, "/v1/checkin", a, "{\"device\":{\"train_samples\":-1}}", &r) == 0);
    CHECK(r.status == 400 && ts_is_error(&r, "bad_field", "device.train_samples"));
    ts_resp_free(&r);
    CHECK(ts_post_json(t.url, "/v1/checkin", a, "{\"device\":[]}", &r) == 0);
    CHECK(r.status == 400 && ts_is_error(&r, "bad_field", "device"));
    ts_resp_free(&r);
    free(u);
    nn_model_free(m);
    ts_stop(&t);
}

TEST(coord_memory_estimate_is_the_device_library_s)
{
    nn_model *m = NULL;
    CHECK(nn_model_from_file("models/fashion_cnn.json", NULL, &m) == 0);
    const char *plans[] = {"{\"rounds\":1,\"batch\":10}",
                           "{\"rounds\":1,\"batch\":64,\"optimizer\":\"adam\"}",
                           "{\"rounds\":1,\"batch\":7,\"momentum\":0.9}"};
    for (int i = 0; i < 3; i++) {
        cJSON *j = cJSON_Parse(plans[i]);
        srv_plan sp;
        client_plan cp;
        CHECK(srv_plan_parse(j, m, &sp) == 0);
        CHECK(client_plan_parse(j, &cp) == 0);
        size_t want = client_task_memory(m, &cp, 1), got = srv_plan_memory(m, &sp);
        CHECK_MSG(got == want, "plan %d: coordinator %zu, device %zu bytes", i, got, want);
        CHECK(client_task_memory(m, &cp, 2) > got); /* more threads need more */
        cJSON_Delete(j);
    }
    /* the time estimate: 3 forward passes per sample per epoch */
    srv_plan sp = {.local_epochs = 2};
    CHECK_NEAR(srv_plan_seconds(m, &sp, 1000, 0), 3 * m->flops_fwd * 1000 * 2 / SRV_DEVICE_FLOPS,
               1e-12);
    CHECK_NEAR(srv_plan_seconds(m, &sp, 1000, 4e9), 3 * m->flops_fwd * 1000 * 2 / 4e9, 1e-12);
    nn_model_free(m);
}

/* The wait a check-in is told (NAN unless the answer is a wait for `reason`). */
static double wait_of(const ts_server *t, const char *dev, const char *reason)
{
    ts_resp r;
    double w = NAN;
    if (ts_post_json(t->url, "/v1/checkin", dev, "{}", &r) == 0 && r.status == 200) {
        cJSON *j = ts_json(&r);
        const cJSON *why = cJSON_GetObjectItem(j, "reason");
        if (cJSON_IsString(why) && strcmp(why->valuestring, reason) == 0)
            w = cJSON_GetObjectItem(j, "retry_after")->valuedouble;
        cJSON_Delete(j);
    }
    ts_resp_free(&r);
    return w;
}

TEST(coord_pace_steering_brings_reported_devices_back_sooner)
{
    ts_server t;
    char key[80], dev[3][80];
    CHECK(start(&t, key) == 0); /* retry_after base 5 s */
    CHECK(ts_project(&t, key, TS_TOY_SPEC, "{\"rounds\":3,\"devices_per_round\":2,"
                                           "\"min_reports\":2,\"over_selection\":1,"
                                           "\"round_deadline_s\":60,\"dataset\":\"toy\"}") == 1);
    for (int k = 0; k < 3; k++)
        CHECK(ts_device(&t, TS_TOY_SCHEMA, dev[k], NULL) == 0);
    CHECK_EQ_INT(ts_checkin(&t, dev[0], NULL, NULL, NULL), 1);
    CHECK_EQ_INT(ts_checkin(&t, dev[1], NULL, NULL, NULL), 1);
    nn_model *m = NULL;
    CHECK(nn_model_from_json(TS_TOY_SPEC, "toy", NULL, &m) == 0);
    float d[15] = {0.25f};
    const char *keys[] = {"attempt", "num_samples"}, *vals[] = {"1", "3"};
    uint8_t *u;
    size_t len;
    CHECK(ts_update(m, d, keys, vals, 2, &u, &len) == 0);
    ts_resp r;
    CHECK(ts_report(&t, dev[0], 1, 1, u, len, &r) == 0 && r.status == 200);
    ts_resp_free(&r);
    /* the round is full: an outsider waits 2 × 5 s, the device that reported 0.5 × 5 s (±20 %) */
    double outsider = wait_of(&t, dev[2], "round_full"), reporter = wait_of(&t, dev[0], "round_full");
    CHECK_MSG(outsider >= 8 && outsider <= 12, "%g", outsider);
    CHECK_MSG(reporter >= 2 && reporter <= 3, "%g", reporter);
    free(u);
    nn_model_free(m);
    ts_stop(&t);
}

TEST(coord_round_reports_the_spread_of_device_accuracy)
{
    ts_server t;
    char key[80], dev[3][80];
    CHECK(start(&t, key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, "{\"rounds\":2,\"devices_per_round\":3,"
                                           "\"min_reports\":3,\"over_selection\":1,"
                                           "\"round_deadline_s\":60,\"dataset\":\"toy\"}") == 1);
    nn_model *m = NULL;
    CHECK(nn_model_from_json(TS_TOY_SPEC, "toy", NULL, &m) == 0);
    float d[15] = {0.1f};
    /* accuracies 0.5, 0.8 and 1 on 10, 10 and 20 held-out samples */
    const char *es[3] = {"10", "10", "20"}, *ec[3] = {"5", "8", "20"};
    for (int k = 0; k < 3; k++) {
        CHECK(ts_device(&t, TS_TOY_SCHEMA, dev[k], NULL) == 0);
        CHECK_EQ_INT(ts_checkin(&t, dev[k], NULL, NULL, NULL), 1);
        const char *keys[] = {"attempt", "num_samples", "eval_samples", "eval_correct"};
        const char *vals[] = {"1", "7", es[k], ec[k]};
        uint8_t *u;
        size_t len;
        ts_resp r;
        CHECK(ts_update(m, d, keys, vals, 4, &u, &len) == 0);
        CHECK(ts_report(&t, dev[k], 1, 1, u, len, &r) == 0 && r.status == 200);
        ts_resp_free(&r);
        free(u);
    }
    ts_resp r;
    CHECK(!ts_http(t.url, "GET", "/v1/projects/1", key, NULL, NULL, 0, NULL, &r) && r.status == 200);
    cJSON *j = ts_json(&r);
    ts_resp_free(&r);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "rounds"), 0);
    const cJSON *da = cJSON_GetObjectItem(r1, "device_accuracy");
    CHECK(cJSON_IsObject(da));
    if (cJSON_IsObject(da)) {
        CHECK_EQ_INT((int)cJSON_GetObjectItem(da, "devices")->valuedouble, 3);
        CHECK_NEAR(cJSON_GetObjectItem(da, "mean")->valuedouble, (0.5 + 0.8 + 1.0) / 3, 1e-12);
        CHECK_NEAR(cJSON_GetObjectItem(da, "p10")->valuedouble, 0.5 * 0.8 + 0.8 * 0.2, 1e-12);
        CHECK_NEAR(cJSON_GetObjectItem(da, "min")->valuedouble, 0.5, 1e-12);
        CHECK_NEAR(cJSON_GetObjectItem(da, "max")->valuedouble, 1.0, 1e-12);
    }
    /* the pooled accuracy weighs samples: 33 / 40 */
    CHECK_NEAR(cJSON_GetObjectItem(r1, "eval_accuracy")->valuedouble, 33.0 / 40.0, 1e-12);
    cJSON_Delete(j);
    nn_model_free(m);
    ts_stop(&t);
}
