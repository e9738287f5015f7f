/* test_dp_http.c — central DP-FedAvg at the coordinator over HTTP: an update over the plan's
 * dp_clip is refused as over_norm, a committed round's checkpoint is the fixed-denominator
 * FedAvg result plus noise of std z·S/devices_per_round, ε per round in the status JSON
 * equals fed/accountant.h for the same (q, z, rounds), and the target ε marks the project
 * done before the round that would pass it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "artificien/client.h"
#include "core/fileio.h"
#include "fed/accountant.h"
#include "nn/checkpoint.h"
#include "testsrv.h"

TEST(dp_http_noise_over_norm_epsilon_and_target)
{
    /* q = 3 / 100, z = 1: the target sits between ε after 2 and after 3 rounds */
    const double q = 0.03, z = 1.0, S = 1.0, delta = 1e-5;
    double eps[4] = {0};
    acct a;
    CHECK(acct_init(&a, NULL, 0) == 0);
    for (int k = 1; k <= 3; k++) {
        CHECK(acct_step(&a, q, z, 1) == 0);
        CHECK(acct_epsilon(&a, delta, &eps[k], NULL) == 0);
    }
    CHECK(eps[1] < eps[2] && eps[2] < eps[3]);
    char plan[512];
    snprintf(plan, sizeof plan,
             "{\"rounds\":10,\"devices_per_round\":3,\"min_reports\":3,\"over_selection\":1,"
             "\"round_deadline_s\":60,\"dataset\":\"toy\",\"dp_clip\":%g,\"dp_noise\":%g,"
             "\"dp_population\":100,\"dp_target_epsilon\":%.17g}",
             S, z, 0.5 * (eps[2] + eps[3]));

    ts_server t;
    char db[600], key[80], dev[3][80];
    snprintf(db, sizeof db, "%s/dp.db", t_tmpdir());
    CHECK(ts_start(&t, db, NULL) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    int64_t pid = ts_project(&t, key, TS_TOY_SPEC, plan);
    CHECK(pid == 1);
    for (int k = 0; k < 3; k++)
        CHECK(ts_device(&t, TS_TOY_SCHEMA, dev[k], NULL) == 0);

    /* DP options without dp_clip are refused */
    ts_resp r;
    CHECK(ts_post_json(t.url, "/v1/projects", key,
                       "{\"name\":\"x\",\"spec\":" TS_TOY_SPEC ",\"plan\":{\"rounds\":1,"
                       "\"dataset\":\"toy\",\"dp_noise\":1}}", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(strstr(r.body, "dp_noise") != NULL);
    ts_resp_free(&r);

    for (int round = 1; round <= 2; round++) {
        int rd = 0, att = 0;
        for (int k = 0; k < 3; k++) {
            CHECK_EQ_INT(ts_checkin(&t, dev[k], NULL, &rd, &att), 1);
            CHECK_EQ_INT(rd, round);
        }
        nn_model *w0 = ts_checkpoint(&t, key, pid, round - 1);
        CHECK(w0 != NULL);
        size_t n = w0->n_params;
        float d[3][15], big[15];
        for (size_t i = 0; i < n; i++) /* ‖big‖ = 2 > S */
            big[i] = (float)(2.0 / sqrt((double)n));
        const char *keys[2] = {"attempt", "num_samples"}, *vals[2] = {"1", "50"};
        uint8_t *buf;
        size_t len;
        if (round == 1) {
            CHECK(ts_update(w0, big, keys, vals, 2, &buf, &len) == 0);
            CHECK(ts_report(&t, dev[0], pid, 1, buf, len, &r) == 0);
            CHECK_EQ_INT(r.status, 400);
            CHECK(ts_is_error(&r, "over_norm", NULL));
            ts_resp_free(&r);
            free(buf);
        }
        double plain[15] = {0};
        for (int k = 0; k < 3; k++) {
            for (size_t i = 0; i < n; i++) { /* ‖d_k‖ < 0.5: within S, sent as is */
                d[k][i] = (float)(0.02 * (k + 1) * ((i % 3) - 1.0));
                plain[i] += d[k][i] / 3.0; /* weights 1, denominator devices_per_round */
            }
            CHECK(ts_update(w0, d[k], keys, vals, 2, &buf, &len) == 0);
            CHECK(ts_report(&t, dev[k], pid, round, buf, len, &r) == 0);
            CHECK_EQ_INT(r.status, 200);
            ts_resp_free(&r);
            free(buf);
        }
        nn_model *w1 = ts_checkpoint(&t, key, pid, round);
        CHECK(w1 != NULL);
        /* w1 − (w0 + plain) is the noise / 3: std z·S/3 per element */
        double ss = 0;
        for (size_t i = 0; i < n; i++) {
            double e = w1->params[i] - (w0->params[i] + plain[i]);
            ss += e * e;
        }
        double rms = sqrt(ss / (double)n), want = z * S / 3.0;
        CHECK(rms > 0.35 * want && rms < 1.8 * want); /* χ²₁₅ bounds, far out in the tails */
        nn_model_free(w0);
        nn_model_free(w1);

        cJSON *st = ts_status(&t, key, pid);
        CHECK(st != NULL);
        CHECK_NEAR(cJSON_GetObjectItem(st, "epsilon")->valuedouble, eps[round], 1e-9);
        cJSON *rounds = cJSON_GetObjectItem(st, "rounds");
        CHECK_EQ_INT(cJSON_GetArraySize(rounds), round);
        cJSON *last = cJSON_GetArrayItem(rounds, round - 1);
        CHECK(cJSON_IsNumber(cJSON_GetObjectItem(last, "epsilon")));
        CHECK_NEAR(cJSON_GetObjectItem(last, "epsilon")->valuedouble, eps[round], 1e-9);
        /* the third round would pass the target: done after the second */
        CHECK(strcmp(cJSON_GetObjectItem(st, "status")->valuestring,
                     round == 2 ? "done" : "running") == 0);
        cJSON_Delete(st);
    }
    int rd, att;
    CHECK_EQ_INT(ts_checkin(&t, dev[0], NULL, &rd, &att), 0);

    /* a restart rebuilds the accountant from the stored rounds */
    ts_stop(&t);
    CHECK(ts_start(&t, db, NULL) == 0);
    cJSON *st = ts_status(&t, key, pid);
    CHECK(st != NULL);
    CHECK_NEAR(cJSON_GetObjectItem(st, "epsilon")->valuedouble, eps[2], 1e-9);
    cJSON_Delete(st);
    ts_stop(&t);
}

/* The device-side ledger (fed/ledger.h) through the device library: with a limit that allows
 * one participation, the first DP task is trained and charged in the ledger file before the
 * upload; the next task of the same project would pass the limit and is refused with reason
 * "privacy_budget", nothing trained, the ledger unchanged. */
TEST(dp_http_client_ledger_refuses_past_the_limit)
{
    const double z = 1.0, delta = 1e-5;
    /* ε of one and of two charged participations (q = 1, z, 1 step each) */
    double e1, e2;
    acct a;
    CHECK(acct_init(&a, NULL, 0) == 0);
    CHECK(acct_step(&a, 1.0, z, 1) == 0);
    CHECK(acct_epsilon(&a, delta, &e1, NULL) == 0);
    CHECK(acct_step(&a, 1.0, z, 1) == 0);
    CHECK(acct_epsilon(&a, delta, &e2, NULL) == 0);
    CHECK(e1 < e2);
    const char *plan = "{\"rounds\":5,\"devices_per_round\":1,\"min_reports\":1,\"over_selection\":1,"
                       "\"round_deadline_s\":60,\"dataset\":\"toy\",\"dp_clip\":1,\"dp_noise\":1,"
                       "\"dp_population\":10,\"local_epochs\":1,\"batch\":4}";
    ts_server t;
    char db[600], key[80], ledger_path[600];
    const char *dir = t_tmpdir();
    snprintf(db, sizeof db, "%s/ledger.db", dir);
    snprintf(ledger_path, sizeof ledger_path, "%s/device.ledger", dir);
    CHECK(ts_start(&t, db, NULL) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, plan) == 1);
    const char *secret = t.secret;

    /* 24 samples of 4 attributes, 3 classes: label = argmax of the first three attributes */
    float x[24 * 4];
    uint8_t y[24];
    for (int i = 0; i < 24; i++) {
        for (int f = 0; f < 4; f++)
            x[i * 4 + f] = (float)(((i * 7 + f * 3) % 11) - 5) / 5.0f;
        y[i] = (uint8_t)(x[i * 4] > x[i * 4 + 1] ? (x[i * 4] > x[i * 4 + 2] ? 0 : 2)
                                                   : (x[i * 4 + 1] > x[i * 4 + 2] ? 1 : 2));
    }
    artificien_data data = {.name = "toy", .tabular = 1, .channels = 1, .height = 1, .width = 4,
                            .classes = 3, .x = x, .y = y, .n = 24, .n_heldout = 4};
    artificien_config cfg;
    artificien_config_init(&cfg);
    cfg.server = t.url;
    cfg.enroll_secret = secret;
    cfg.data = &data;
    cfg.ledger_path = ledger_path;
    cfg.epsilon_limit = 0.5 * (e1 + e2); /* one participation fits, two do not */
    artificien_client *c = NULL;
    CHECK(artificien_client_create(&cfg, &c) == 0);
    artificien_result r;
    CHECK_MSG(artificien_client_run_once(c, &r) == 0, "%s", artificien_errmsg(c));
    CHECK_MSG(r.action == ARTIFICIEN_TRAINED, "first cycle: action %d reason %s %s", (int)r.action,
              r.reason, r.message);
    CHECK(r.update_norm <= 1.0 + 1e-5); /* clipped to dp_clip before the upload */
    char *before = NULL;
    size_t blen = 0;
    CHECK(af_read_file(ledger_path, &before, &blen) == 0 && blen > 0);
    /* round 2 of the same project: would pass the limit */
    int rc = 0;
    for (int k = 0; k < 20; k++) { /* the round commits on the first report; poll the next */
        rc = artificien_client_run_once(c, &r);
        if (rc || r.action != ARTIFICIEN_WAIT)
            break;
    }
    CHECK_MSG(rc == 0, "%s", artificien_errmsg(c));
    CHECK_MSG(r.action == ARTIFICIEN_REFUSED && strcmp(r.reason, "privacy_budget") == 0,
              "second task: action %d reason %s %s", (int)r.action, r.reason, r.message);
    CHECK(r.steps == 0);
    char *after = NULL;
    size_t alen = 0;
    CHECK(af_read_file(ledger_path, &after, &alen) == 0);
    CHECK(alen == blen && memcmp(before, after, blen) == 0); /* nothing more charged */
    free(before);
    free(after);
    artificien_client_free(c);
    ts_stop(&t);
}
