/* test_secagg_http.c — the device library against the real coordinator with secure
 * aggregation: six devices (artificien_client on threads, one enrolment secret) run a secagg
 * project for two rounds and both commit with every device's input and a changed model; two
 * devices vanishing after their masked input, then two after their shares, still commit
 * (t = 4); a label_stats project releases the devices' exact label counts (no noise); a DP
 * project with adaptive clipping and distributed noise commits, moves its clip and charges
 * the device ledger. Devices are dropped through the library's internal phase hook
 * (client/secround.h). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../test.h"
#include "artificien/client.h"
#include "client/secround.h"
#include "fed/ledger.h"
#include "nn/checkpoint.h"
#include "testsrv.h"

#define NDEV 6
#define TOY_N 24

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 24 samples of 4 attributes, 3 classes: label = argmax of the first three attributes. */
static float toy_x[TOY_N * 4];
static uint8_t toy_y[TOY_N];

static void toy_fill(void)
{
    for (int i = 0; i < TOY_N; i++) {
        for (int f = 0; f < 4; f++)
            toy_x[i * 4 + f] = (float)(((i * 7 + f * 3) % 11) - 5) / 5.0f;
        const float *x = toy_x + i * 4;
        toy_y[i] = (uint8_t)(x[0] > x[1] ? (x[0] > x[2] ? 0 : 2) : (x[1] > x[2] ? 1 : 2));
    }
}

/* One device on its thread: artificien_client_run until its projects are done. */
typedef struct edev {
    artificien_client *c;
    artificien_data data;
    int trained_round[8], n_trained;
    int reports[8];
    int counted, abandoned, rejected, errors;
    size_t bytes_up;
    char last[300];
    double until;
    int drop_round;          /* the round in which it vanishes (0: never) … */
    const char *drop_phase;  /* … after this phase */
} edev;

static int e_cycle(void *user, int rc, const artificien_result *r, double delay)
{
    (void)delay;
    edev *d = user;
    if (rc < 0) {
        d->errors++;
        snprintf(d->last, sizeof d->last, "error %d: %s", rc, artificien_errmsg(d->c));
    } else if (r->action == ARTIFICIEN_TRAINED && d->n_trained < 8) {
        d->reports[d->n_trained] = r->reports;
        d->trained_round[d->n_trained++] = r->round;
        d->bytes_up += r->bytes_up;
    } else if (r->action == ARTIFICIEN_COUNTED) {
        d->counted++;
    } else if (r->action == ARTIFICIEN_ABANDONED) {
        d->abandoned++;
    } else if (r->action == ARTIFICIEN_REJECTED || r->action == ARTIFICIEN_REFUSED) {
        d->rejected++;
        snprintf(d->last, sizeof d->last, "round %d: action %d %s: %.200s", r->round,
                 (int)r->action, r->reason, r->message);
    }
    if (rc == 0 && r->action == ARTIFICIEN_WAIT && strcmp(r->reason, "project_done") == 0)
        return 1;
    return mono() > d->until;
}

static int e_drop(void *user, const artificien_result *res, const char *phase)
{
    const edev *d = user;
    return d->drop_round == res->round && d->drop_phase && strcmp(phase, d->drop_phase) == 0;
}

static void *e_run(void *p)
{
    edev *d = p;
    artificien_run_opts o = {.on_cycle = e_cycle, .user = d};
    artificien_client_run(d->c, &o);
    return NULL;
}

/* Creates the devices (enrolling with the server's secret), runs them to the end. */
static int e_devices(const ts_server *t, edev *dev, int n, double seconds, const char *ledger_path)
{
    pthread_t th[NDEV];
    for (int k = 0; k < n; k++) {
        artificien_config cfg;
        artificien_config_init(&cfg);
        cfg.server = t->url;
        cfg.enroll_secret = t->secret;
        cfg.data = &dev[k].data;
        cfg.timeout_s = 20;
        cfg.backoff_base_s = 0.05;
        cfg.backoff_max_s = 0.5;
        cfg.not_now_s = 0.2;
        cfg.seed = (uint64_t)k + 1;
        if (k == 0 && ledger_path) {
            cfg.ledger_path = ledger_path;
            cfg.epsilon_limit = 1e6;
        }
        if (artificien_client_create(&cfg, &dev[k].c))
            return -1;
        client_set_phase_hook(dev[k].c, e_drop, &dev[k]);
        dev[k].until = mono() + seconds;
    }
    for (int k = 0; k < n; k++)
        if (pthread_create(&th[k], NULL, e_run, &dev[k]))
            return -1;
    for (int k = 0; k < n; k++)
        pthread_join(th[k], NULL);
    return 0;
}

static void e_free(edev *dev, int n)
{
    for (int k = 0; k < n; k++)
        artificien_client_free(dev[k].c);
}

static int e_round_ok(const cJSON *st, int i, int reports)
{
    const cJSON *rd = cJSON_GetArrayItem(cJSON_GetObjectItem(st, "rounds"), i);
    const cJSON *state = cJSON_GetObjectItem(rd, "state");
    return cJSON_IsString(state) && strcmp(state->valuestring, "committed") == 0 &&
           cJSON_GetObjectItem(rd, "number")->valueint == i + 1 &&
           cJSON_GetObjectItem(rd, "attempt")->valueint == 1 &&
           cJSON_GetObjectItem(rd, "reports")->valueint == reports;
}

static void e_init(edev *dev)
{
    toy_fill();
    memset(dev, 0, sizeof *dev * NDEV);
    for (int k = 0; k < NDEV; k++) {
        artificien_data d = {.name = "toy", .tabular = 1, .channels = 1, .height = 1, .width = 4,
                             .classes = 3, .x = toy_x, .y = toy_y, .n = TOY_N,
                             .n_heldout = 2 + (size_t)k}; /* 22, 21, …, 17 training samples */
        dev[k].data = d;
    }
}

TEST(secagg_http_six_devices_train_two_rounds)
{
    ts_server t;
    char db[600], key[80];
    snprintf(db, sizeof db, "%s/sa.db", t_tmpdir());
    srv_server_config sc = {.retry_after_s = 0.2};
    CHECK(ts_start(&t, db, &sc) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    int64_t pid = ts_project(&t, key, TS_TOY_SPEC,
                             "{\"rounds\":2,\"devices_per_round\":6,\"min_reports\":4,"
                             "\"over_selection\":1,\"round_deadline_s\":8,\"dataset\":\"toy\","
                             "\"secagg\":true,\"secagg_threshold\":4,\"local_epochs\":2,"
                             "\"batch\":4,\"lr\":0.2}");
    CHECK(pid == 1);
    static edev dev[NDEV];
    e_init(dev);
    CHECK(e_devices(&t, dev, NDEV, 25, NULL) == 0);
    for (int k = 0; k < NDEV; k++) {
        CHECK_MSG(dev[k].n_trained == 2 && dev[k].trained_round[0] == 1 &&
                      dev[k].trained_round[1] == 2,
                  "device %d: trained %d rounds (%d abandoned, %d rejected, %d errors; %s)", k,
                  dev[k].n_trained, dev[k].abandoned, dev[k].rejected, dev[k].errors, dev[k].last);
        CHECK(dev[k].reports[0] == NDEV && dev[k].reports[1] == NDEV); /* all six in the sum */
        CHECK(dev[k].bytes_up > 2 * 4 * (15 + 1 + 8 + 9));                /* two masked vectors */
    }
    cJSON *st = ts_status(&t, key, pid);
    CHECK(st != NULL);
    CHECK(strcmp(cJSON_GetObjectItem(st, "status")->valuestring, "done") == 0);
    CHECK_EQ_INT(cJSON_GetObjectItem(st, "version")->valueint, 2);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(st, "rounds")), 2);
    CHECK(e_round_ok(st, 0, NDEV) && e_round_ok(st, 1, NDEV));
    cJSON_Delete(st);
    /* the model moved, by a finite amount */
    nn_model *w0 = ts_checkpoint(&t, key, pid, 0), *w2 = ts_checkpoint(&t, key, pid, 2);
    CHECK(w0 && w2);
    double moved = 0;
    for (size_t i = 0; i < w0->n_params; i++) {
        CHECK(isfinite(w2->params[i]));
        moved += fabs((double)w2->params[i] - w0->params[i]);
    }
    CHECK_MSG(moved > 1e-3, "moved %g", moved);
    nn_model_free(w0);
    nn_model_free(w2);
    e_free(dev, NDEV);
    ts_stop(&t);
}

TEST(secagg_http_rounds_survive_devices_that_vanish)
{
    ts_server t;
    char db[600], key[80];
    snprintf(db, sizeof db, "%s/sa_drop.db", t_tmpdir());
    srv_server_config sc = {.retry_after_s = 0.2};
    CHECK(ts_start(&t, db, &sc) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    int64_t pid = ts_project(&t, key, TS_TOY_SPEC,
                             "{\"rounds\":2,\"devices_per_round\":6,\"min_reports\":4,"
                             "\"over_selection\":1,\"round_deadline_s\":6,\"dataset\":\"toy\","
                             "\"secagg\":true,\"secagg_threshold\":4,\"batch\":4}");
    CHECK(pid == 1);
    static edev dev[NDEV];
    e_init(dev);
    /* round 1: two vanish after their masked input (their b is rebuilt from shares);
     * round 2: two vanish after their shares (their pairwise masks are rebuilt) */
    dev[0].drop_round = dev[1].drop_round = 1;
    dev[0].drop_phase = dev[1].drop_phase = "masked_input";
    dev[2].drop_round = dev[3].drop_round = 2;
    dev[2].drop_phase = dev[3].drop_phase = "share_keys";
    CHECK(e_devices(&t, dev, NDEV, 25, NULL) == 0);
    for (int k = 0; k < NDEV; k++) {
        int want = k < 4 ? 1 : 2;
        CHECK_MSG(dev[k].n_trained == want && dev[k].abandoned == 2 - want && dev[k].errors == 0,
                  "device %d: trained %d, abandoned %d, rejected %d, errors %d (%s)", k,
                  dev[k].n_trained, dev[k].abandoned, dev[k].rejected, dev[k].errors, dev[k].last);
    }
    CHECK(dev[4].reports[0] == 6 && dev[4].reports[1] == 4);
    cJSON *st = ts_status(&t, key, pid);
    CHECK(st != NULL);
    CHECK(strcmp(cJSON_GetObjectItem(st, "status")->valuestring, "done") == 0);
    CHECK(e_round_ok(st, 0, 6)); /* the two that vanished after masking are in the sum */
    CHECK(e_round_ok(st, 1, 4));
    cJSON_Delete(st);
    e_free(dev, NDEV);
    ts_stop(&t);
}

TEST(secagg_http_label_stats_from_the_device_library)
{
    ts_server t;
    char db[600], key[80];
    snprintf(db, sizeof db, "%s/sa_stats.db", t_tmpdir());
    srv_server_config sc = {.retry_after_s = 0.2};
    CHECK(ts_start(&t, db, &sc) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    int64_t pid = ts_project(&t, key, TS_TOY_SPEC,
                             "{\"rounds\":1,\"devices_per_round\":6,\"min_reports\":4,"
                             "\"over_selection\":1,\"round_deadline_s\":8,\"dataset\":\"toy\","
                             "\"kind\":\"label_stats\",\"secagg_threshold\":4,"
                             "\"stats_bound\":100,\"stats_noise\":0}");
    CHECK(pid == 1);
    static edev dev[NDEV];
    e_init(dev);
    double want[3] = {0};
    for (int k = 0; k < NDEV; k++)
        for (size_t i = 0; i < TOY_N - dev[k].data.n_heldout; i++)
            want[toy_y[i]] += 1;
    CHECK(e_devices(&t, dev, NDEV, 15, NULL) == 0);
    for (int k = 0; k < NDEV; k++)
        CHECK_MSG(dev[k].counted == 1 && dev[k].n_trained == 0 && dev[k].errors == 0,
                  "device %d: counted %d (%d rejected, %d errors; %s)", k, dev[k].counted,
                  dev[k].rejected, dev[k].errors, dev[k].last);
    cJSON *st = ts_status(&t, key, pid);
    CHECK(st != NULL);
    CHECK(strcmp(cJSON_GetObjectItem(st, "status")->valuestring, "done") == 0);
    const cJSON *ls = cJSON_GetObjectItem(st, "label_stats");
    CHECK(cJSON_IsObject(ls));
    CHECK_EQ_INT(cJSON_GetObjectItem(ls, "devices")->valueint, NDEV);
    const cJSON *count = cJSON_GetObjectItem(ls, "count");
    CHECK_EQ_INT(cJSON_GetArraySize(count), 3);
    for (int j = 0; j < 3; j++) /* no noise, no device over the bound: exact */
        CHECK_NEAR(cJSON_GetArrayItem(count, j)->valuedouble, want[j], 1e-6);
    cJSON_Delete(st);
    e_free(dev, NDEV);
    ts_stop(&t);
}

TEST(secagg_http_dp_adaptive_round_charges_the_ledger)
{
    ts_server t;
    char db[600], key[80], ledger_path[600];
    snprintf(db, sizeof db, "%s/sa_dp.db", t_tmpdir());
    snprintf(ledger_path, sizeof ledger_path, "%s/sa_dp.ledger", t_tmpdir());
    srv_server_config sc = {.retry_after_s = 0.2};
    CHECK(ts_start(&t, db, &sc) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    int64_t pid = ts_project(&t, key, TS_TOY_SPEC,
                             "{\"rounds\":1,\"devices_per_round\":6,\"min_reports\":4,"
                             "\"over_selection\":1,\"round_deadline_s\":8,\"dataset\":\"toy\","
                             "\"secagg\":true,\"secagg_threshold\":4,\"batch\":4,\"lr\":0.2,"
                             "\"dp_clip\":0.01,\"dp_noise\":0.5,\"dp_population\":100,"
                             "\"dp_adaptive_quantile\":0.9,\"dp_adaptive_count_noise\":1}");
    CHECK(pid == 1);
    static edev dev[NDEV];
    e_init(dev);
    CHECK(e_devices(&t, dev, NDEV, 15, ledger_path) == 0);
    for (int k = 0; k < NDEV; k++)
        CHECK_MSG(dev[k].n_trained == 1 && dev[k].errors == 0,
                  "device %d: trained %d (%d rejected, %d errors; %s)", k, dev[k].n_trained,
                  dev[k].rejected, dev[k].errors, dev[k].last);
    cJSON *st = ts_status(&t, key, pid);
    CHECK(st != NULL);
    CHECK(e_round_ok(st, 0, NDEV));
    CHECK(cJSON_GetObjectItem(st, "epsilon")->valuedouble > 0);
    /* every update was clipped (‖Δ‖ ≫ 0.01): the clip grows, S·exp(−η(b̄ − γ)) with b̄ < γ = 0.9 */
    CHECK_MSG(cJSON_GetObjectItem(st, "dp_clip")->valuedouble > 0.01, "dp_clip %g",
              cJSON_GetObjectItem(st, "dp_clip")->valuedouble);
    cJSON_Delete(st);
    ledger *l;
    ledger_entry e;
    CHECK(ledger_open(ledger_path, &l) == 0);
    CHECK(ledger_find(l, "project-1", &e) == 0);
    CHECK_EQ_INT(e.steps, 1);
    ledger_free(l);
    e_free(dev, NDEV);
    ts_stop(&t);
}

/* Central DP with adaptive clipping, no secure aggregation: the library clips to the task's
 * dp_clip and sends the "unclipped" bit the coordinator requires, round after round. */
TEST(secagg_http_central_adaptive_clip_from_the_device_library)
{
    ts_server t;
    char db[600], key[80];
    snprintf(db, sizeof db, "%s/dp_adaptive.db", t_tmpdir());
    srv_server_config sc = {.retry_after_s = 0.2};
    CHECK(ts_start(&t, db, &sc) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    int64_t pid = ts_project(&t, key, TS_TOY_SPEC,
                             "{\"rounds\":2,\"devices_per_round\":3,\"min_reports\":3,"
                             "\"over_selection\":1,\"round_deadline_s\":20,\"dataset\":\"toy\","
                             "\"batch\":4,\"lr\":0.2,\"dp_clip\":0.01,\"dp_noise\":0.5,"
                             "\"dp_population\":100,\"dp_adaptive_quantile\":0.9,"
                             "\"dp_adaptive_count_noise\":1}");
    CHECK(pid == 1);
    static edev dev[NDEV];
    e_init(dev);
    CHECK(e_devices(&t, dev, 3, 15, NULL) == 0);
    for (int k = 0; k < 3; k++)
        CHECK_MSG(dev[k].n_trained == 2 && dev[k].errors == 0,
                  "device %d: trained %d (%d rejected, %d errors; %s)", k, dev[k].n_trained,
                  dev[k].rejected, dev[k].errors, dev[k].last);
    cJSON *st = ts_status(&t, key, pid);
    CHECK(st != NULL);
    CHECK(e_round_ok(st, 0, 3) && e_round_ok(st, 1, 3));
    /* b̄ ≈ 0 < γ twice: S grew twice (exp(0.2·0.9)² ≈ 1.43 without the count noise) */
    CHECK_MSG(cJSON_GetObjectItem(st, "dp_clip")->valuedouble > 0.01, "dp_clip %g",
              cJSON_GetObjectItem(st, "dp_clip")->valuedouble);
    cJSON_Delete(st);
    e_free(dev, 3);
    ts_stop(&t);
}
