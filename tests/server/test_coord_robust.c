/* test_coord_robust.c — the robust strategies (fedmedian, fedtrimmedavg, krum) at the
 * coordinator: plan validation (refused with DP or secure aggregation, krum's f and m checked
 * against min_reports), and a committed round that equals, bit for bit, the strategy applied
 * to the block of the reports read back from the attempt log — also when the coordinator was
 * restarted in the middle of the round. Two devices send poisoned updates: the robust result
 * stays with the honest ones. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "core/err.h"
#include "core/rng.h"
#include "fed/strategy.h"
#include "nn/checkpoint.h"
#include "server/plan.h"
#include "testsrv.h"

static int plan_rc(const nn_model *m, const char *json)
{
    cJSON *j = cJSON_Parse(json);
    srv_plan sp;
    int rc = srv_plan_parse(j, m, &sp);
    cJSON_Delete(j);
    return rc;
}

TEST(coord_robust_plan_validation)
{
    nn_model *m = NULL;
    CHECK(nn_model_from_file("models/fashion_cnn.json", NULL, &m) == 0);
    CHECK_EQ_INT(plan_rc(m, "{\"rounds\":1,\"strategy\":\"fedmedian\"}"), 0);
    CHECK_EQ_INT(plan_rc(m, "{\"rounds\":1,\"strategy\":\"fedtrimmedavg\",\"strategy_opts\":"
                            "\"beta=0.2\"}"), 0);
    CHECK_EQ_INT(plan_rc(m, "{\"rounds\":1,\"strategy\":\"fedmedian\",\"dp_clip\":1}"), AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "plan.strategy: fedmedian cannot be combined with DP") &&
                  strstr(af_errmsg(), "individual updates"), "%s", af_errmsg());
    CHECK_EQ_INT(plan_rc(m, "{\"rounds\":1,\"strategy\":\"krum\",\"secagg\":true}"), AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "secure aggregation"), "%s", af_errmsg());
    /* 10 per round, min_reports 8 (the default 0.8): f = 2 fits (8 > 6), f = 3 does not */
    CHECK_EQ_INT(plan_rc(m, "{\"rounds\":1,\"strategy\":\"krum\",\"strategy_opts\":\"f=2\"}"), 0);
    CHECK_EQ_INT(plan_rc(m, "{\"rounds\":1,\"strategy\":\"krum\",\"strategy_opts\":\"f=3\"}"),
                 AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "min_reports 8") && strstr(af_errmsg(), "2f+2 = 8"), "%s",
              af_errmsg());
    CHECK_EQ_INT(plan_rc(m, "{\"rounds\":1,\"strategy\":\"krum\",\"strategy_opts\":\"f=2,m=7\"}"),
                 AF_EINVAL);
    CHECK_EQ_INT(plan_rc(m, "{\"rounds\":1,\"strategy\":\"fedtrimmedavg\",\"strategy_opts\":"
                            "\"beta=0.5\"}"), AF_EINVAL);
    nn_model_free(m);
}

#define NDEV 7

/* One round of NDEV reports (5 honest near +0.01, devices 2 and 5 poisoned) under `strategy`
 * with `opts`; with restart, the coordinator is stopped and started again before the last
 * report. The committed model must be bitwise w0 + strategy(block in report order). */
static void robust_round(const char *strategy, const char *opts, int restart)
{
    ts_server t;
    char key[80], db[600], plan[512];
    static char dev[NDEV][80];
    snprintf(db, sizeof db, "%s/r.db", t_tmpdir());
    CHECK(ts_start(&t, db, NULL) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    snprintf(plan, sizeof plan, "{\"rounds\":1,\"devices_per_round\":%d,\"min_reports\":%d,"
                                "\"over_selection\":1,\"round_deadline_s\":120,\"dataset\":\"toy\","
                                "\"strategy\":\"%s\",\"strategy_opts\":\"%s\"}",
             NDEV, NDEV, strategy, opts);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, plan) == 1);
    for (int k = 0; k < NDEV; k++) {
        CHECK(ts_device(&t, TS_TOY_SCHEMA, dev[k], NULL) == 0);
        CHECK_EQ_INT(ts_checkin(&t, dev[k], NULL, NULL, NULL), 1);
    }
    nn_model *w0 = ts_checkpoint(&t, key, 1, 0);
    CHECK(w0 != NULL);
    if (!w0) {
        ts_stop(&t);
        return;
    }
    size_t n = w0->n_params;
    float *d = malloc(NDEV * n * sizeof *d);
    af_rng g;
    af_rng_seed(&g, 5, 1);
    for (int k = 0; k < NDEV; k++)
        for (size_t i = 0; i < n; i++)
            d[k * n + i] = (float)(0.01 + 0.001 * af_rng_normal(&g));
    for (size_t i = 0; i < n; i++) {
        d[2 * n + i] = -10.0f * d[0 * n + i]; /* sign flip */
        d[5 * n + i] = 50.0f;                 /* far away */
    }
    for (int k = 0; k < NDEV; k++) {
        if (restart && k == NDEV - 1) {
            ts_stop(&t);
            CHECK(ts_start(&t, db, NULL) == 0);
        }
        uint8_t *body;
        size_t len;
        const char *keys[] = {"attempt", "num_samples"}, *vals[] = {"1", k == 5 ? "100000" : "20"};
        CHECK(ts_update(w0, d + k * n, keys, vals, 2, &body, &len) == 0);
        ts_resp r;
        CHECK(ts_report(&t, dev[k], 1, 1, body, len, &r) == 0);
        CHECK_MSG(r.status == 200, "report %d: %ld %s", k, r.status, r.body ? r.body : "");
        ts_resp_free(&r);
        free(body);
    }
    nn_model *w1 = ts_checkpoint(&t, key, 1, 1);
    CHECK(w1 != NULL);
    fed_strategy *s;
    CHECK(fed_strategy_create(strategy, opts, n, &s) == 0);
    float *want = malloc(n * sizeof *want);
    memcpy(want, w0->params, n * sizeof *want);
    CHECK(fed_strategy_apply_updates(s, d, NDEV, want) == 0);
    if (w1) {
        CHECK_MSG(memcmp(w1->params, want, n * sizeof *want) == 0, "%s: the commit differs",
                  strategy);
        int near = 1; /* the honest step is ~+0.01 per parameter */
        for (size_t i = 0; i < n; i++)
            near &= fabsf(w1->params[i] - w0->params[i] - 0.01f) < 0.005f;
        CHECK_MSG(near, "%s: the poisoned updates moved the model", strategy);
    }
    fed_strategy_free(s);
    free(want);
    free(d);
    nn_model_free(w0);
    nn_model_free(w1);
    ts_stop(&t);
}

TEST(coord_fedmedian_commit_is_the_median_of_the_stored_reports)
{
    robust_round("fedmedian", "", 0);
}

TEST(coord_multikrum_commit_survives_a_restart_mid_round)
{
    robust_round("krum", "f=2,m=3", 1);
}

TEST(coord_fedtrimmedavg_commit_is_the_trimmed_mean)
{
    robust_round("fedtrimmedavg", "beta=0.3", 0);
}
