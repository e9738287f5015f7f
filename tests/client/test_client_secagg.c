/* test_client_secagg.c — the device library's secure aggregation and DP additions without
 * the real coordinator: the plan's new fields, the task's "secagg" object (a good one, and
 * every malformed field refused naming it), the vector length checked against the model,
 * the "unclipped" metadata of an adaptive-clipping update, label counting; then whole rounds
 * against tests/client/mocksa.c (a small coordinator over fed/secagg.h's server): the sum
 * of the devices' vectors with one device dropping after its shares and one after its masked
 * input, label counts and training through artificien_client_run_once (the check-in's
 * identity is what the signatures verify against), and the ways a round ends early —
 * a layout mismatch, a refusal, a phase past its deadline, a stop. */
#include "../test.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "artificien/client.h"
#include "client/http.h"
#include "client/secround.h"
#include "client/task.h"
#include "core/err.h"
#include "core/rng.h"
#include "fed/dp.h"
#include "fed/ledger.h"
#include "mocksa.h"
#include "nn/safetensors.h"

/* 1×4×4 images, conv 1→2 3×3, relu, flatten, linear 8→3: 47 parameters, 3 classes. */
static const char *SPEC =
    "{\"name\":\"tiny\",\"input\":[1,4,4],\"classes\":3,\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"conv1\",\"in_channels\":1,\"out_channels\":2,\"kernel\":3},"
    "{\"type\":\"relu\"},{\"type\":\"flatten\"},"
    "{\"type\":\"linear\",\"name\":\"fc\",\"in_features\":8,\"out_features\":3}]}";
#define SPEC_PARAMS 47
#define TRAIN_LEN (SPEC_PARAMS + 1 + SECWIRE_TAIL + 9) /* delta, weight, tail, 3×3 confusion */

#define TOY_N 60
static float toy_x[TOY_N * 16];
static uint8_t toy_y[TOY_N];

/* Class c has a bright pixel at position 5 + c, plus noise; labels cycle 0, 1, 2. */
static artificien_data toy_data(size_t n_heldout)
{
    af_rng r;
    af_rng_seed(&r, 5, 0);
    for (int i = 0; i < TOY_N; i++) {
        toy_y[i] = (uint8_t)(i % 3);
        for (int j = 0; j < 16; j++)
            toy_x[i * 16 + j] = (float)(0.1 * af_rng_normal(&r));
        toy_x[i * 16 + 5 + toy_y[i]] += 2.0f;
    }
    artificien_data d = {.name = "toy", .channels = 1, .height = 4, .width = 4, .classes = 3,
                         .x = toy_x, .y = toy_y, .n = TOY_N, .n_heldout = n_heldout};
    return d;
}

#define SA_GOOD                                                                            \
    "{\"id\":2,\"n\":6,\"t\":4,\"round_id\":\"18446744073709551557\",\"len\":65,"          \
    "\"url\":\"/v1/projects/3/rounds/5/secagg\",\"kind\":\"train\",\"range\":2,"            \
    "\"max_samples\":500,\"clip\":0,\"noise\":0,\"adaptive\":false,\"count_noise\":0,"      \
    "\"stats_bound\":100,\"stats_noise\":1,\"deadlines\":{\"advertise\":1000.5,"            \
    "\"share_keys\":1001,\"masked_input\":1003,\"unmask\":1004}}"

/* Parses a task of SPEC with plan text `plan`, the secagg object text `sa` (NULL: none) and
 * `extra` top-level members ("" or "\"dp_clip\":0.5,"). */
static int sa_task(const char *plan, const char *sa, const char *extra, client_task *t)
{
    char buf[8192];
    snprintf(buf, sizeof buf,
             "{\"project\":3,\"round\":5,\"attempt\":2,\"version\":4,"
             "\"checkpoint\":\"/v1/projects/3/checkpoints/4\",\"spec\":%s,\"plan\":%s,%s"
             "\"deadline_at\":1004,\"report\":\"/v1/projects/3/rounds/5/reports\"%s%s}",
             SPEC, plan, extra, sa ? ",\"secagg\":" : "", sa ? sa : "");
    cJSON *j = cJSON_Parse(buf);
    if (!j)
        return -100;
    int rc = client_task_parse(j, t);
    cJSON_Delete(j);
    return rc;
}

/* SA_GOOD with member `key` replaced by the JSON text `val` (NULL: removed); malloc'd. */
static char *sa_with(const char *key, const char *val)
{
    cJSON *o = cJSON_Parse(SA_GOOD);
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    if (val)
        cJSON_AddItemToObject(o, key, cJSON_Parse(val));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

TEST(client_plan_secagg_and_adaptive_fields)
{
    cJSON *j = cJSON_Parse("{\"rounds\":1,\"secagg\":true,\"kind\":\"label_stats\","
                           "\"dp_adaptive_quantile\":0.5,\"secagg_threshold\":4,\"stats_bound\":9,"
                           "\"anything_new\":[1]}");
    client_plan p;
    CHECK(client_plan_parse(j, &p) == 0); /* fields a device does not use are ignored */
    cJSON_Delete(j);
    CHECK(p.secagg == 1 && p.label_stats == 1);
    CHECK_NEAR(p.dp_adaptive_quantile, 0.5, 0);
    j = cJSON_Parse("{}");
    CHECK(client_plan_parse(j, &p) == 0);
    cJSON_Delete(j);
    CHECK(p.secagg == 0 && p.label_stats == 0 && p.dp_adaptive_quantile == 0);
    static const struct {
        const char *plan, *msg;
    } bad[] = {
        {"{\"secagg\":1}", "plan.secagg"},
        {"{\"kind\":\"histogram\"}", "plan.kind"},
        {"{\"kind\":3}", "plan.kind"},
        {"{\"dp_adaptive_quantile\":1.5}", "plan.dp_adaptive_quantile"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        j = cJSON_Parse(bad[i].plan);
        int rc = client_plan_parse(j, &p);
        cJSON_Delete(j);
        CHECK_MSG(rc < 0 && strstr(af_errmsg(), bad[i].msg), "%s: rc %d '%s'", bad[i].plan, rc,
                  af_errmsg());
    }
}

TEST(client_task_secagg_object_parses)
{
    client_task t;
    CHECK_MSG(sa_task("{\"dataset\":\"toy\",\"secagg\":true}", SA_GOOD, "", &t) == 0, "%s",
              af_errmsg());
    const client_secagg *s = &t.secagg;
    CHECK(s->on);
    CHECK_EQ_INT(s->id, 2);
    CHECK(s->round_id == 18446744073709551557ull); /* exact past 2^53: a string on the wire */
    CHECK_EQ_INT(s->len, 65);
    CHECK(strcmp(s->url, "/v1/projects/3/rounds/5/secagg") == 0);
    CHECK(s->wire.kind == SECWIRE_TRAIN && s->wire.n == 6 && s->wire.t == 4);
    CHECK_NEAR(s->wire.range, 2, 0);
    CHECK_EQ_INT(s->wire.max_samples, 500);
    CHECK(s->wire.clip == 0 && s->wire.adaptive == 0);
    CHECK_NEAR(s->deadline[CLIENT_SA_ADVERTISE], 1000.5, 0);
    CHECK_NEAR(s->deadline[CLIENT_SA_UNMASK], 1004, 0);
    CHECK(t.dp_clip == 0);
    client_task_clear(&t);
    /* without the object: a plain task; the task's dp_clip overrides the plan's */
    CHECK(sa_task("{\"dataset\":\"toy\",\"dp_clip\":1,\"dp_adaptive_quantile\":0.5}", NULL,
                  "\"dp_clip\":0.25,", &t) == 0);
    CHECK(!t.secagg.on);
    CHECK_NEAR(t.dp_clip, 0.25, 0);
    client_task_clear(&t);
    CHECK(sa_task("{\"dataset\":\"toy\",\"dp_clip\":1}", NULL, "", &t) == 0);
    CHECK_NEAR(t.dp_clip, 1, 0);
    client_task_clear(&t);
    /* a label_stats task needs no checkpoint; a DP secure task names its clip and noise */
    char *lab = sa_with("kind", "\"label_stats\"");
    CHECK(sa_task("{\"kind\":\"label_stats\",\"secagg\":true}", lab, "", &t) == 0);
    CHECK(t.secagg.wire.kind == SECWIRE_LABELS);
    client_task_clear(&t);
    free(lab);
    cJSON *o = cJSON_Parse(SA_GOOD);
    cJSON_ReplaceItemInObject(o, "clip", cJSON_CreateNumber(0.5));
    cJSON_ReplaceItemInObject(o, "noise", cJSON_CreateNumber(1.2));
    cJSON_ReplaceItemInObject(o, "adaptive", cJSON_CreateTrue());
    char *dp = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    CHECK_MSG(sa_task("{\"dp_clip\":1,\"dp_noise\":1}", dp, "\"dp_clip\":0.5,", &t) == 0, "%s",
              af_errmsg());
    CHECK(t.secagg.wire.clip == 0.5 && t.secagg.wire.noise == 1.2 && t.secagg.wire.adaptive == 1);
    client_task_clear(&t);
    /* the device never accepts less noise than the plan promises, nor another clip */
    CHECK_EQ_INT(sa_task("{\"dp_clip\":1,\"dp_noise\":1.5}", dp, "\"dp_clip\":0.5,", &t), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "task.secagg.noise") != NULL);
    CHECK_EQ_INT(sa_task("{\"dp_clip\":1,\"dp_noise\":1}", dp, "\"dp_clip\":0.7,", &t), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "task.secagg.clip") != NULL);
    free(dp);
}

TEST(client_task_secagg_refuses_each_malformed_field)
{
    static const struct {
        const char *key, *val, *field;
    } bad[] = {
        {"id", "0", "task.secagg.id"},
        {"id", "7", "task.secagg.id"},
        {"id", "1.5", "task.secagg.id"},
        {"id", NULL, "task.secagg.id"},
        {"n", "0", "task.secagg.n"},
        {"n", "5001", "task.secagg.n"},
        {"n", "\"6\"", "task.secagg.n"},
        {"t", "3", "task.secagg.t"},
        {"t", "7", "task.secagg.t"},
        {"t", NULL, "task.secagg.t"},
        {"round_id", "1099780063233", "task.secagg.round_id"},
        {"round_id", "\"12a\"", "task.secagg.round_id"},
        {"round_id", "\"\"", "task.secagg.round_id"},
        {"round_id", "\"-5\"", "task.secagg.round_id"},
        {"round_id", "\"18446744073709551616\"", "task.secagg.round_id"},
        {"len", "0", "task.secagg.len"},
        {"len", "2.5", "task.secagg.len"},
        {"url", "5", "task.secagg.url"},
        {"url", "\"v1/secagg\"", "task.secagg.url"},
        {"kind", "\"pizza\"", "task.secagg.kind"},
        {"kind", "\"label_stats\"", "task.secagg.kind"}, /* the plan says train */
        {"range", "0", "task.secagg.range"},
        {"max_samples", "0", "task.secagg.max_samples"},
        {"max_samples", "600000", "task.secagg.max_samples"},
        {"clip", "-1", "task.secagg.clip"},
        {"noise", "\"a\"", "task.secagg.noise"},
        {"adaptive", "1", "task.secagg.adaptive"},
        {"count_noise", "-1", "task.secagg.count_noise"},
        {"stats_bound", "0", "task.secagg.stats_bound"},
        {"stats_noise", "-1", "task.secagg.stats_noise"},
        {"deadlines", "5", "task.secagg.deadlines"},
        {"deadlines", NULL, "task.secagg.deadlines"},
        {"deadlines", "{\"advertise\":2,\"share_keys\":1,\"masked_input\":3,\"unmask\":4}",
         "task.secagg.deadlines.share_keys"},
        {"deadlines", "{\"advertise\":1,\"share_keys\":2,\"masked_input\":3}",
         "task.secagg.deadlines.unmask"},
    };
    client_task t;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *sa = sa_with(bad[i].key, bad[i].val);
        int rc = sa_task("{\"dataset\":\"toy\"}", sa, "", &t);
        CHECK_MSG(rc == AF_EFORMAT && strstr(af_errmsg(), bad[i].field),
                  "%s = %s: rc %d '%s'", bad[i].key, bad[i].val ? bad[i].val : "(none)", rc,
                  af_errmsg());
        free(sa);
    }
    CHECK_EQ_INT(sa_task("{}", "5", "", &t), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "task.secagg: expected an object") != NULL);
    /* a plan that asks for secure aggregation needs the object */
    CHECK_EQ_INT(sa_task("{\"secagg\":true}", NULL, "", &t), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "task.secagg") != NULL);
    CHECK_EQ_INT(sa_task("{\"kind\":\"label_stats\"}", NULL, "", &t), AF_EFORMAT);
}

TEST(client_secagg_layout_must_match_the_tasks_len)
{
    nn_model *m;
    CHECK(nn_model_from_json(SPEC, "tiny", NULL, &m) == 0);
    CHECK_EQ_INT(m->n_params, SPEC_PARAMS);
    client_task t;
    char *sa = sa_with("len", "65");
    CHECK(sa_task("{}", sa, "", &t) == 0);
    free(sa);
    secwire_layout L;
    char reason[64] = "", msg[256] = "";
    CHECK_EQ_INT(client_secagg_layout(&t, m, &L, reason, sizeof reason, msg, sizeof msg), 0);
    CHECK_EQ_INT(L.len, TRAIN_LEN);
    CHECK_EQ_INT(L.len, 65);
    t.secagg.len = 64;
    CHECK_EQ_INT(client_secagg_layout(&t, m, &L, reason, sizeof reason, msg, sizeof msg), 1);
    CHECK(strcmp(reason, "secagg") == 0);
    CHECK_MSG(strstr(msg, "64") && strstr(msg, "65"), "%s", msg);
    /* parameters secwire cannot lay out are refused the same way */
    t.secagg.len = 65;
    t.secagg.wire.range = -1;
    CHECK_EQ_INT(client_secagg_layout(&t, m, &L, reason, sizeof reason, msg, sizeof msg), 1);
    CHECK(strcmp(reason, "secagg") == 0);
    client_task_clear(&t);
    /* label_stats: C counts and the count word */
    sa = sa_with("kind", "\"label_stats\"");
    CHECK(sa_task("{\"kind\":\"label_stats\"}", sa, "", &t) == 0);
    free(sa);
    t.secagg.len = 4;
    CHECK_EQ_INT(client_secagg_layout(&t, m, &L, reason, sizeof reason, msg, sizeof msg), 0);
    client_task_clear(&t);
    nn_model_free(m);
}

TEST(client_update_carries_the_unclipped_bit)
{
    nn_model *m;
    CHECK(nn_model_from_json(SPEC, "tiny", NULL, &m) == 0);
    float delta[SPEC_PARAMS] = {0};
    long conf[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    /* every optional field at once: tau, unclipped, the evaluation and its confusion */
    client_report rep = {.project = 1, .round = 2, .attempt = 1, .version = 1, .num_samples = 9,
                         .loss = 0.5, .steps = 3, .tau = 2.5, .eval_samples = 3,
                         .eval_correct = 3, .eval_loss = 0.1, .k = 3, .confusion = conf,
                         .has_unclipped = 1, .unclipped = 0};
    for (int u = 0; u <= 1; u++) {
        rep.unclipped = u;
        uint8_t *buf;
        size_t len;
        CHECK(client_delta_serialize(m, delta, &rep, &buf, &len) == 0);
        st_file f;
        CHECK(st_parse(buf, len, "update", &f) == 0);
        CHECK(st_meta(&f, "unclipped") && strcmp(st_meta(&f, "unclipped"), u ? "1" : "0") == 0);
        CHECK(st_meta(&f, "tau") && st_meta(&f, "eval_loss") && st_meta(&f, "eval_confusion"));
        CHECK(strcmp(st_meta(&f, "version"), "1") == 0);
        st_free(&f);
        free(buf);
    }
    rep.has_unclipped = 0;
    uint8_t *buf;
    size_t len;
    CHECK(client_delta_serialize(m, delta, &rep, &buf, &len) == 0);
    st_file f;
    CHECK(st_parse(buf, len, "update", &f) == 0);
    CHECK(st_meta(&f, "unclipped") == NULL);
    st_free(&f);
    free(buf);
    nn_model_free(m);
}

TEST(client_counts_training_labels)
{
    artificien_data d = toy_data(12);
    client_data_view v;
    CHECK(client_data_view_init(&d, &v) == 0);
    uint32_t counts[3] = {99, 99, 99};
    client_count_labels(&v, counts);
    CHECK(counts[0] == 16 && counts[1] == 16 && counts[2] == 16); /* 48 samples cycling 0,1,2 */
    client_data_view_clear(&v);
    uint32_t train[5] = {0, 3, 4, 5, 59}; /* labels 0, 0, 1, 2, 2 */
    d.train = train;
    d.n_train = 5;
    CHECK(client_data_view_init(&d, &v) == 0);
    client_count_labels(&v, counts);
    CHECK(counts[0] == 2 && counts[1] == 1 && counts[2] == 2);
    client_data_view_clear(&v);
}

/* ---- whole rounds against the mock coordinator ---- */

static mocksa_cfg mock_cfg(int kind, uint32_t n, uint32_t t, const char *plan)
{
    mocksa_cfg c = {.spec = SPEC, .plan = plan, .deadline_s = {3, 4, 5, 6}};
    c.wire.kind = kind;
    c.wire.n = n;
    c.wire.t = t;
    c.wire.range = 1;
    c.wire.max_samples = 10000;
    c.wire.stats_bound = 100;
    c.wire.stats_noise = 0;
    return c;
}

/* One device driving client_secround_run itself with a known delta. */
typedef struct sa_dev {
    mocksa *m;
    uint32_t id;
    uint8_t pk[32], sk[64];
    int drop_after;          /* 0 none, 1 after share_keys, 2 after masked_input */
    float delta[SPEC_PARAMS];
    double samples;
    int rc;
    artificien_result res;
} sa_dev;

static int sa_input(void *user, const secwire_layout *L, af_rng *noise, uint32_t *words,
                    artificien_result *res)
{
    sa_dev *d = user;
    float x[SPEC_PARAMS];
    memcpy(x, d->delta, sizeof x);
    secwire_report rep = {.num_samples = d->samples, .loss = 0.25, .eval_samples = 0};
    res->train_samples = (size_t)d->samples;
    return secwire_encode_train(L, x, &rep, noise, words, NULL);
}

static int sa_drop(void *user, const artificien_result *res, const char *phase)
{
    (void)res;
    const sa_dev *d = user;
    return (d->drop_after == 1 && strcmp(phase, "share_keys") == 0) ||
           (d->drop_after == 2 && strcmp(phase, "masked_input") == 0);
}

static void *sa_dev_run(void *p)
{
    sa_dev *d = p;
    char *js = mocksa_task_json(d->m, d->id);
    cJSON *j = cJSON_Parse(js);
    free(js);
    client_task t;
    nn_model *model = NULL;
    client_http *h = NULL;
    char token[16], reason[64], msg[256];
    secwire_layout L;
    snprintf(token, sizeof token, "dev%u", d->id);
    d->rc = client_task_parse(j, &t);
    cJSON_Delete(j);
    if (d->rc)
        return NULL;
    if ((d->rc = nn_model_from_json(t.spec_json, "spec", NULL, &model)) ||
        (d->rc = client_secagg_layout(&t, model, &L, reason, sizeof reason, msg, sizeof msg)) ||
        (d->rc = client_http_create(mocksa_url(d->m), 10, &h)))
        goto out;
    client_secround_io io = {.http = h, .token = token, .sign_sk = d->sk, .input = sa_input,
                             .user = d, .on_phase = sa_drop, .phase_user = d};
    d->rc = client_secround_run(&io, &t, &L, &d->res);
out:
    client_http_free(h);
    nn_model_free(model);
    client_task_clear(&t);
    return NULL;
}

TEST(client_secround_sums_with_two_dropouts)
{
    enum { N = 5 };
    mocksa_cfg cfg = mock_cfg(SECWIRE_TRAIN, N, 3, "{\"dataset\":\"toy\",\"secagg\":true}");
    /* device 2 never masks: that phase closes at its deadline */
    cfg.deadline_s[0] = 2.0, cfg.deadline_s[1] = 2.5, cfg.deadline_s[2] = 3.0;
    mocksa *m;
    CHECK(mocksa_start(&cfg, &m) == 0);
    static sa_dev dev[N];
    pthread_t th[N];
    for (int k = 0; k < N; k++) {
        memset(&dev[k], 0, sizeof dev[k]);
        dev[k].m = m;
        dev[k].id = (uint32_t)k + 1;
        CHECK(secagg_identity_keypair(dev[k].pk, dev[k].sk) == 0);
        mocksa_register(m, dev[k].id, dev[k].pk);
        dev[k].drop_after = k == 1 ? 1 : k == 3 ? 2 : 0;
        dev[k].samples = 10.0 * k + 5;
        for (int i = 0; i < SPEC_PARAMS; i++)
            dev[k].delta[i] = (float)(0.01 * (k + 1) * sin(0.7 * i + k));
    }
    for (int k = 0; k < N; k++)
        CHECK(pthread_create(&th[k], NULL, sa_dev_run, &dev[k]) == 0);
    for (int k = 0; k < N; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < N; k++) {
        CHECK_MSG(dev[k].rc == 0, "device %d: rc %d", k + 1, dev[k].rc);
        const artificien_result *r = &dev[k].res;
        if (dev[k].drop_after) {
            CHECK(r->action == ARTIFICIEN_ABANDONED && strcmp(r->reason, "dropped") == 0);
        } else {
            CHECK_MSG(r->action == ARTIFICIEN_TRAINED, "device %d: action %d %s %s", k + 1,
                      (int)r->action, r->reason, r->message);
            CHECK_EQ_INT(r->reports, 4); /* U3: everyone but device 2 */
            CHECK(r->bytes_up > 4 * TRAIN_LEN && r->bytes_down > 0);
        }
    }
    uint32_t u1, u2, u3, u5;
    mocksa_counts(m, &u1, &u2, &u3, &u5);
    CHECK(u1 == 5 && u2 == 5 && u3 == 4 && u5 == 3);
    /* the sum is Σ w·Δ over U3 = {1, 3, 4, 5}: device 4's input counts though it never
     * revealed, device 2's mask is rebuilt from its shares and removed */
    float sum[SPEC_PARAMS];
    secwire_sums s;
    CHECK_MSG(mocksa_finish(m, sum, NULL, NULL, &s) == 0, "%s", af_errmsg());
    CHECK_NEAR(s.count, 4, 0);
    CHECK_NEAR(s.weight, 5 + 25 + 35 + 45, 0);
    CHECK_NEAR(s.samples, 5 + 25 + 35 + 45, 0);
    CHECK_NEAR(s.loss_sum, 4 * 0.25, 1e-9);
    double want[SPEC_PARAMS] = {0};
    for (int k = 0; k < N; k++)
        for (int i = 0; k != 1 && i < SPEC_PARAMS; i++)
            want[i] += dev[k].samples * dev[k].delta[i];
    for (int i = 0; i < SPEC_PARAMS; i++) /* quantiser step R·M/B ≈ 2.3e-5, 4 devices */
        CHECK_NEAR(sum[i], want[i], 1e-4);
    mocksa_stop(m);
}

/* A device of the full library in a thread: run_once until it is given its task. */
typedef struct lib_dev {
    artificien_client *c;
    artificien_result r;
    int rc;
} lib_dev;

static void *lib_dev_run(void *p)
{
    lib_dev *d = p;
    for (int k = 0; k < 200; k++) {
        d->rc = artificien_client_run_once(d->c, &d->r);
        if (d->rc || d->r.action != ARTIFICIEN_WAIT)
            break;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static int lib_client(const char *url, const artificien_data *d, int k, const char *ledger_path,
                      artificien_client **out)
{
    char token[16];
    snprintf(token, sizeof token, "tok%d", k);
    artificien_config cfg;
    artificien_config_init(&cfg);
    cfg.server = url;
    cfg.token = token;
    cfg.data = d;
    cfg.timeout_s = 10;
    cfg.ledger_path = ledger_path;
    cfg.epsilon_limit = 1e9;
    return artificien_client_create(&cfg, out);
}

TEST(client_label_stats_round_counts_and_charges_the_ledger)
{
    enum { N = 4 };
    mocksa_cfg cfg = mock_cfg(SECWIRE_LABELS, N, 3,
                              "{\"dataset\":\"toy\",\"kind\":\"label_stats\",\"secagg\":true,"
                              "\"rounds\":1}");
    cfg.wire.stats_noise = 0.01; /* any t devices' noise: std 1 per count; each device's 0.58 */
    mocksa *m;
    CHECK(mocksa_start(&cfg, &m) == 0);
    static artificien_data data[N];
    static lib_dev dev[N];
    pthread_t th[N];
    char ledger_path[600];
    snprintf(ledger_path, sizeof ledger_path, "%s/device.ledger", t_tmpdir());
    double want[3] = {0};
    for (int k = 0; k < N; k++) {
        data[k] = toy_data(3 + 5 * (size_t)k); /* 57, 52, 47, 42 training samples */
        client_data_view v;
        uint32_t c[3];
        CHECK(client_data_view_init(&data[k], &v) == 0);
        client_count_labels(&v, c);
        client_data_view_clear(&v);
        for (int j = 0; j < 3; j++)
            want[j] += c[j];
        CHECK(lib_client(mocksa_url(m), &data[k], k, k == 0 ? ledger_path : NULL, &dev[k].c) == 0);
    }
    for (int k = 0; k < N; k++)
        CHECK(pthread_create(&th[k], NULL, lib_dev_run, &dev[k]) == 0);
    for (int k = 0; k < N; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < N; k++) {
        CHECK_MSG(dev[k].rc == 0, "device %d: %s", k, artificien_errmsg(dev[k].c));
        CHECK_MSG(dev[k].r.action == ARTIFICIEN_COUNTED, "device %d: action %d %s %s", k,
                  (int)dev[k].r.action, dev[k].r.reason, dev[k].r.message);
        CHECK_EQ_INT(dev[k].r.train_samples, 57 - 5 * k);
        CHECK_EQ_INT(dev[k].r.reports, N);
        CHECK(dev[k].r.bytes_up > 0 && dev[k].r.bytes_down > 0);
        CHECK_EQ_INT(dev[k].r.steps, 0); /* nothing trained */
    }
    CHECK_EQ_INT(mocksa_requests(m, "checkpoint"), 0); /* nothing downloaded */
    /* each check-in carried a distinct 32-byte identity, and every signature of the round
     * verified against it */
    for (uint32_t id = 1; id <= N; id++) {
        uint8_t pk[32];
        CHECK(secwire_unb64_fixed(mocksa_identity(m, id), "identity", pk, 32) == 0);
        for (uint32_t o = 1; o < id; o++)
            CHECK(strcmp(mocksa_identity(m, id), mocksa_identity(m, o)) != 0);
    }
    double counts[3] = {0};
    secwire_sums s;
    CHECK_MSG(mocksa_finish(m, NULL, counts, NULL, &s) == 0, "%s", af_errmsg());
    CHECK_NEAR(s.count, N, 0);
    for (int j = 0; j < 3; j++) /* every device under the bound: the sums plus noise std ≈ 1.2 */
        CHECK_NEAR(counts[j], want[j], 7);
    /* the ledger of device 0: one Gaussian step with z = stats_noise */
    ledger *l;
    ledger_entry e;
    CHECK(ledger_open(ledger_path, &l) == 0);
    CHECK(ledger_find(l, "project-1", &e) == 0);
    CHECK_EQ_INT(e.steps, 1);
    ledger_free(l);
    for (int k = 0; k < N; k++)
        artificien_client_free(dev[k].c);
    mocksa_stop(m);
}

/* Three devices train through the library: the unmasked sum is three times the update the
 * plain path's training gives (same data, seed and checkpoint). With dp, the updates are
 * clipped to S in the sum, and the adaptive bits (no noise) count the unclipped ones. */
static void train_round(int dp)
{
    enum { N = 3 };
    const char *plan = dp ? "{\"dataset\":\"toy\",\"secagg\":true,\"local_epochs\":2,\"batch\":4,"
                            "\"lr\":0.1,\"dp_clip\":0.05,\"dp_adaptive_quantile\":0.5}"
                          : "{\"dataset\":\"toy\",\"secagg\":true,\"local_epochs\":2,\"batch\":4,"
                            "\"lr\":0.1}";
    mocksa_cfg cfg = mock_cfg(SECWIRE_TRAIN, N, 2, plan);
    if (dp) {
        cfg.wire.clip = 0.05;
        cfg.wire.adaptive = 1;
    }
    mocksa *m;
    CHECK(mocksa_start(&cfg, &m) == 0);
    static artificien_data data;
    static lib_dev dev[N];
    pthread_t th[N];
    data = toy_data(12);
    for (int k = 0; k < N; k++)
        CHECK(lib_client(mocksa_url(m), &data, k, NULL, &dev[k].c) == 0);
    for (int k = 0; k < N; k++)
        CHECK(pthread_create(&th[k], NULL, lib_dev_run, &dev[k]) == 0);
    for (int k = 0; k < N; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < N; k++) {
        const artificien_result *r = &dev[k].r;
        CHECK_MSG(dev[k].rc == 0, "device %d: %s", k, artificien_errmsg(dev[k].c));
        CHECK_MSG(r->action == ARTIFICIEN_TRAINED, "device %d: action %d %s %s", k,
                  (int)r->action, r->reason, r->message);
        CHECK(r->train_samples == 48 && r->steps == 24 && r->eval_samples == 12);
        CHECK_EQ_INT(r->reports, N);
        CHECK(r->bytes_up > 4 * TRAIN_LEN + 64);
        CHECK(r->bytes_down > 1000); /* the checkpoint */
    }
    CHECK_EQ_INT(mocksa_requests(m, "checkpoint"), N);
    /* the update the plain path trains: same checkpoint (seed 11), seed, round */
    client_task t;
    char *tj = mocksa_task_json(m, 1);
    cJSON *j = cJSON_Parse(tj);
    free(tj);
    CHECK(client_task_parse(j, &t) == 0);
    cJSON_Delete(j);
    nn_model *model;
    CHECK(nn_model_from_json(SPEC, "tiny", NULL, &model) == 0);
    nn_model_init(model, 11);
    float global[SPEC_PARAMS], delta[SPEC_PARAMS], sum[SPEC_PARAMS];
    memcpy(global, model->params, sizeof global);
    client_data_view v;
    CHECK(client_data_view_init(&data, &v) == 0);
    client_train_stats st;
    uint64_t seed = 1 ^ (1ull << 40) ^ (1ull << 32);
    CHECK(client_train(model, global, &t.plan, &v, 1, 1, seed, 0, NULL, delta, &st) == 0);
    double norm = client_l2(delta, SPEC_PARAMS);
    CHECK_NEAR(dev[0].r.update_norm, norm, 1e-6 * norm);
    secwire_sums s;
    int64_t conf[9];
    CHECK_MSG(mocksa_finish(m, sum, NULL, conf, &s) == 0, "%s", af_errmsg());
    CHECK_NEAR(s.count, N, 0);
    CHECK_NEAR(s.samples, N * 48, 0);
    CHECK_NEAR(s.has_eval, N, 0);
    CHECK_NEAR(s.eval_samples, N * 12, 0);
    CHECK_EQ_INT(conf[0] + conf[1] + conf[2] + conf[3] + conf[4] + conf[5] + conf[6] + conf[7] + conf[8],
                 N * 12);
    if (dp) {
        CHECK(norm > 0.05); /* so every device clipped */
        CHECK(dp_clip_l2(delta, SPEC_PARAMS, 0.05, NULL, NULL) == 0);
        CHECK_NEAR(s.weight, N * -0.5, 1e-6); /* Σ(b − ½) with every b = 0 */
        for (int i = 0; i < SPEC_PARAMS; i++)
            CHECK_NEAR(sum[i], N * delta[i], 1e-6);
    } else {
        CHECK_NEAR(s.weight, N * 48, 0);
        for (int i = 0; i < SPEC_PARAMS; i++) /* Σ w·Δ = 3·48·Δ, quantiser step ≈ 2.3e-5 */
            CHECK_NEAR(sum[i] / (N * 48.0), delta[i], 1e-6);
    }
    client_data_view_clear(&v);
    nn_model_free(model);
    client_task_clear(&t);
    for (int k = 0; k < N; k++)
        artificien_client_free(dev[k].c);
    mocksa_stop(m);
}

TEST(client_secure_training_round_sums_the_plain_update) { train_round(0); }
TEST(client_secure_dp_round_sums_clipped_updates) { train_round(1); }

/* One library device against a mock that misbehaves as cfg says. */
typedef struct stopper {
    artificien_client *c;
    double after_s;
} stopper;

static void *stop_later(void *p)
{
    stopper *s = p;
    struct timespec ts = {0, (long)(s->after_s * 1e9)};
    nanosleep(&ts, NULL);
    artificien_client_stop(s->c);
    return NULL;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

TEST(client_secure_round_ends_early_as_it_must)
{
    static artificien_data data;
    data = toy_data(12);
    const char *plan = "{\"dataset\":\"toy\",\"secagg\":true}";
    artificien_result r;
    lib_dev d = {0};
    mocksa *m;
    /* a task whose len does not fit this device's layout: refused, nothing sent */
    mocksa_cfg cfg = mock_cfg(SECWIRE_TRAIN, 3, 2, plan);
    cfg.len_delta = 1;
    CHECK(mocksa_start(&cfg, &m) == 0);
    CHECK(lib_client(mocksa_url(m), &data, 0, NULL, &d.c) == 0);
    lib_dev_run(&d);
    CHECK(d.rc == 0 && d.r.action == ARTIFICIEN_REFUSED && strcmp(d.r.reason, "secagg") == 0);
    CHECK(mocksa_requests(m, "advertise") == 0 && mocksa_requests(m, "checkpoint") == 0);
    artificien_client_free(d.c);
    mocksa_stop(m);
    /* the coordinator refuses a message: REJECTED with its code */
    cfg = mock_cfg(SECWIRE_TRAIN, 3, 2, plan);
    cfg.refuse_step = "advertise";
    CHECK(mocksa_start(&cfg, &m) == 0);
    CHECK(lib_client(mocksa_url(m), &data, 0, NULL, &d.c) == 0);
    lib_dev_run(&d);
    CHECK_MSG(d.rc == 0 && d.r.action == ARTIFICIEN_REJECTED && strcmp(d.r.reason, "wrong_phase") == 0
                  && d.r.http_status == 409, "rc %d action %d %s", d.rc, (int)d.r.action, d.r.reason);
    CHECK(strstr(d.r.message, "refused by the mock") != NULL);
    CHECK(mocksa_requests(m, "keys") == 0);
    artificien_client_free(d.c);
    mocksa_stop(m);
    /* a phase that never closes: the device gives up at its deadline (+ the grace) */
    cfg = mock_cfg(SECWIRE_TRAIN, 3, 2, plan);
    cfg.stall = 1;
    cfg.deadline_s[0] = 0.3;
    CHECK(mocksa_start(&cfg, &m) == 0);
    CHECK(lib_client(mocksa_url(m), &data, 0, NULL, &d.c) == 0);
    double t0 = mono_now();
    lib_dev_run(&d);
    double took = mono_now() - t0;
    CHECK_MSG(d.rc == 0 && d.r.action == ARTIFICIEN_REJECTED &&
                  strcmp(d.r.reason, "secagg_deadline") == 0,
              "rc %d action %d %s", d.rc, (int)d.r.action, d.r.reason);
    CHECK_MSG(took > 0.3 + CLIENT_SECROUND_GRACE_S - 0.2 && took < 0.3 + CLIENT_SECROUND_GRACE_S + 1.5,
              "%.2f s", took);
    CHECK(mocksa_requests(m, "keys") >= 3); /* polled */
    artificien_client_free(d.c);
    mocksa_stop(m);
    /* a stop while polling ends the round at once */
    cfg = mock_cfg(SECWIRE_TRAIN, 3, 2, plan);
    cfg.stall = 1;
    cfg.deadline_s[0] = 30, cfg.deadline_s[1] = 31, cfg.deadline_s[2] = 32, cfg.deadline_s[3] = 33;
    CHECK(mocksa_start(&cfg, &m) == 0);
    CHECK(lib_client(mocksa_url(m), &data, 0, NULL, &d.c) == 0);
    stopper sp = {d.c, 0.4};
    pthread_t th;
    t0 = mono_now();
    CHECK(pthread_create(&th, NULL, stop_later, &sp) == 0);
    CHECK(artificien_client_run_once(d.c, &r) == 0);
    took = mono_now() - t0;
    pthread_join(th, NULL);
    CHECK_MSG(r.action == ARTIFICIEN_ABANDONED && strcmp(r.reason, "stopped") == 0, "action %d %s",
              (int)r.action, r.reason);
    CHECK_MSG(took < 1.5, "%.2f s", took);
    artificien_client_free(d.c);
    mocksa_stop(m);
}
