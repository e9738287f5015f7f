/* test_client.c — tests for the device library without a coordinator: the update's
 * safetensors round trip (names, shapes, values, metadata, the model loader accepting it),
 * refusal of tasks beyond the caps or the data, plan and task parsing, local training
 * (the update is local − received; FedProx pulls it in), the data view, the backoff
 * schedule, and the public API's configuration errors and network failure as values. */
#include "../test.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "artificien/client.h"
#include "client/task.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/rng.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"

/* A small model: 1×4×4 images, conv 1→2 3×3, relu, flatten, linear 8→3 (47 parameters). */
static const char *SPEC =
    "{\"name\":\"tiny\",\"input\":[1,4,4],\"classes\":3,\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"conv1\",\"in_channels\":1,\"out_channels\":2,\"kernel\":3},"
    "{\"type\":\"relu\"},{\"type\":\"flatten\"},"
    "{\"type\":\"linear\",\"name\":\"fc\",\"in_features\":8,\"out_features\":3}]}";

static const char *PLAN =
    "{\"strategy\":\"fedavg\",\"rounds\":3,\"local_epochs\":2,\"batch\":4,\"optimizer\":\"sgd\","
    "\"lr\":0.1,\"eval_every\":1,\"dataset\":\"toy\"}";

/* 60 samples of 1×4×4: class c has a bright pixel at position c (learnable), plus noise. */
#define TOY_N 60
static float toy_x[TOY_N * 16];
static uint8_t toy_y[TOY_N];

static artificien_data toy_data(void)
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
                         .x = toy_x, .y = toy_y, .n = TOY_N, .n_heldout = 12};
    return d;
}

/* A parsed task from SPEC and a plan text. */
static int make_task(const char *plan, client_task *t)
{
    char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"project\":3,\"round\":5,\"attempt\":2,\"version\":4,"
             "\"checkpoint\":\"/v1/projects/3/checkpoints/4\",\"spec\":%s,\"plan\":%s,"
             "\"deadline_at\":1732700060.0,\"report\":\"/v1/projects/3/rounds/5/reports\"}",
             SPEC, plan);
    cJSON *j = cJSON_Parse(buf);
    if (!j)
        return -100;
    int rc = client_task_parse(j, t);
    cJSON_Delete(j);
    return rc;
}

static artificien_caps roomy_caps(void)
{
    artificien_caps k = {.max_params = 1000000, .max_epochs = 10, .max_seconds = 600,
                         .max_memory = (size_t)1 << 30};
    return k;
}

TEST(client_delta_serialize_round_trips)
{
    nn_model *m;
    CHECK(nn_model_from_json(SPEC, "tiny", NULL, &m) == 0);
    CHECK_EQ_INT(m->n_params, 2 * 9 + 2 + 3 * 8 + 3);
    float *delta = malloc(sizeof(float) * m->n_params);
    for (size_t i = 0; i < m->n_params; i++)
        delta[i] = (float)i * 0.25f - 3.0f;
    long conf[9] = {3, 1, 0, 0, 4, 0, 1, 0, 2};
    client_report rep = {.project = 3, .round = 5, .attempt = 2, .version = 4, .num_samples = 48,
                         .loss = 0.625, .steps = 24, .eval_samples = 11, .eval_correct = 9,
                         .eval_loss = 0.5, .k = 3, .confusion = conf};
    uint8_t *buf;
    size_t len;
    CHECK(client_delta_serialize(m, delta, &rep, &buf, &len) == 0);
    st_file f;
    CHECK(st_parse(buf, len, "delta", &f) == 0);
    CHECK_EQ_INT(f.n_tensors, 4);
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        const st_tensor *t = st_find(&f, p->name);
        CHECK_MSG(t != NULL, "tensor %s missing", p->name);
        CHECK(t->dtype == ST_F32);
        CHECK_EQ_INT(t->ndim, p->ndim);
        for (int d = 0; d < p->ndim; d++)
            CHECK_EQ_INT(t->shape[d], p->shape[d]);
        float v[64];
        CHECK_EQ_INT(t->nbytes, p->n * sizeof(float));
        memcpy(v, t->data, t->nbytes);
        CHECK_ALLCLOSE(v, delta + p->off, p->n, 0, 0);
    }
    CHECK(strcmp(st_meta(&f, "attempt"), "2") == 0);
    CHECK(strcmp(st_meta(&f, "num_samples"), "48") == 0);
    CHECK_NEAR(atof(st_meta(&f, "loss")), 0.625, 1e-12);
    CHECK(strcmp(st_meta(&f, "eval_samples"), "11") == 0);
    CHECK(strcmp(st_meta(&f, "eval_correct"), "9") == 0);
    CHECK_NEAR(atof(st_meta(&f, "eval_loss")), 0.5, 1e-12);
    CHECK(st_meta(&f, "tau") == NULL);
    cJSON *cj = cJSON_Parse(st_meta(&f, "eval_confusion"));
    CHECK(cJSON_IsArray(cj) && cJSON_GetArraySize(cj) == 3);
    long sum = 0;
    for (int r = 0; r < 3; r++) {
        const cJSON *row = cJSON_GetArrayItem(cj, r);
        CHECK(cJSON_GetArraySize(row) == 3);
        for (int c = 0; c < 3; c++) {
            CHECK_EQ_INT(cJSON_GetArrayItem(row, c)->valueint, conf[r * 3 + c]);
            sum += cJSON_GetArrayItem(row, c)->valueint;
        }
    }
    CHECK_EQ_INT(sum, 11);
    cJSON_Delete(cj);
    st_free(&f);
    /* the model loader takes the update as a checkpoint of the same spec */
    nn_model *m2;
    CHECK(nn_checkpoint_parse(buf, len, "delta", SPEC, &m2) == 0);
    CHECK_ALLCLOSE(m2->params, delta, m->n_params, 0, 0);
    nn_model_free(m2);
    free(buf);
    /* without evaluation the eval fields are absent */
    rep.eval_samples = 0;
    CHECK(client_delta_serialize(m, delta, &rep, &buf, &len) == 0);
    CHECK(st_parse(buf, len, "delta", &f) == 0);
    CHECK(st_meta(&f, "eval_confusion") == NULL && st_meta(&f, "eval_samples") == NULL);
    st_free(&f);
    free(buf);
    free(delta);
    nn_model_free(m);
}

TEST(client_delta_serialize_refuses_bad_updates)
{
    nn_model *m;
    CHECK(nn_model_from_json(SPEC, "tiny", NULL, &m) == 0);
    float *delta = calloc(m->n_params, sizeof(float));
    client_report rep = {.attempt = 1, .num_samples = 0, .loss = 1.0};
    uint8_t *buf = (uint8_t *)"x";
    size_t len = 7;
    CHECK_EQ_INT(client_delta_serialize(m, delta, &rep, &buf, &len), AF_EINVAL);
    CHECK(buf == NULL && len == 0);
    rep.num_samples = 10;
    delta[7] = NAN;
    CHECK_EQ_INT(client_delta_serialize(m, delta, &rep, &buf, &len), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "value 7 is not finite") != NULL);
    delta[7] = 0;
    rep.loss = INFINITY;
    CHECK_EQ_INT(client_delta_serialize(m, delta, &rep, &buf, &len), AF_EINVAL);
    free(delta);
    nn_model_free(m);
}

TEST(client_plan_defaults_and_errors)
{
    cJSON *j = cJSON_Parse("{\"rounds\": 4}");
    client_plan p;
    CHECK(client_plan_parse(j, &p) == 0);
    cJSON_Delete(j);
    CHECK(strcmp(p.strategy, "fedavg") == 0 && strcmp(p.dataset, "fashion-mnist") == 0);
    CHECK_EQ_INT(p.rounds, 4);
    CHECK_EQ_INT(p.local_epochs, 1);
    CHECK_EQ_INT(p.batch, 10);
    CHECK(p.opt.kind == NN_OPT_SGD);
    CHECK_NEAR(p.opt.lr, 0.05, 1e-7);
    CHECK_EQ_INT(p.eval_every, 1);
    static const struct {
        const char *plan, *msg;
        int rc;
    } bad[] = {
        {"{\"lr\": \"fast\"}", "plan.lr: expected a number", AF_EINVAL},
        {"{\"batch\": 0}", "plan.batch: 0 is outside", AF_ERANGE},
        {"{\"local_epochs\": 1.5}", "plan.local_epochs: expected an integer", AF_EINVAL},
        {"{\"optimizer\": \"lbfgs\"}", "plan.optimizer: 'lbfgs'", AF_EINVAL},
        {"{\"strategy\": 7}", "plan.strategy: expected a string", AF_EINVAL},
        {"[1]", "plan: expected a JSON object", AF_EFORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        j = cJSON_Parse(bad[i].plan);
        int rc = client_plan_parse(j, &p);
        cJSON_Delete(j);
        CHECK_MSG(rc == bad[i].rc, "%s: rc %d", bad[i].plan, rc);
        CHECK_MSG(strstr(af_errmsg(), bad[i].msg) != NULL, "%s: '%s'", bad[i].plan, af_errmsg());
    }
}

TEST(client_task_parse_fields_and_errors)
{
    client_task t;
    CHECK(make_task(PLAN, &t) == 0);
    CHECK_EQ_INT(t.project, 3);
    CHECK_EQ_INT(t.round, 5);
    CHECK_EQ_INT(t.attempt, 2);
    CHECK_EQ_INT(t.version, 4);
    CHECK(strcmp(t.checkpoint, "/v1/projects/3/checkpoints/4") == 0);
    CHECK(strcmp(t.report, "/v1/projects/3/rounds/5/reports") == 0);
    CHECK(strstr(t.spec_json, "\"conv1\"") != NULL);
    CHECK_EQ_INT(t.plan.local_epochs, 2);
    client_task_clear(&t);
    client_task_clear(&t); /* twice is fine */
    cJSON *j = cJSON_Parse("{\"project\":1,\"round\":1,\"spec\":{},\"plan\":{}}");
    CHECK_EQ_INT(client_task_parse(j, &t), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "\"checkpoint\" and \"report\"") != NULL);
    cJSON_Delete(j);
    CHECK(make_task("{\"lr\": -1}", &t) == AF_ERANGE);
    CHECK(strstr(af_errmsg(), "task: plan.lr") != NULL);
}

/* Refusal of the task in plan text `plan` under caps k: 1 and the reason, else 0. */
static int refused(const char *plan, artificien_caps k, double flops, char *reason)
{
    client_task t;
    if (make_task(plan, &t))
        return -1;
    artificien_data d = toy_data();
    client_data_view v;
    char msg[256];
    nn_model *m = NULL;
    int r = client_data_view_init(&d, &v) ? -1
            : client_task_build(&t, k.max_params, &m, reason, 64, msg, sizeof msg);
    if (r == 0)
        r = client_task_check(&k, &t, m, &v, 1, flops, reason, 64, msg, sizeof msg);
    if (r == 1 && !msg[0])
        r = -2; /* a refusal must say why */
    nn_model_free(m);
    client_data_view_clear(&v);
    client_task_clear(&t);
    return r;
}

TEST(client_caps_refuse_tasks_beyond_them)
{
    char reason[64];
    artificien_caps k = roomy_caps();
    CHECK_EQ_INT(refused(PLAN, k, 0, reason), 0);
    CHECK_EQ_INT(refused(PLAN, k, 1e9, reason), 0);
    k.max_params = 46; /* the model has 47 */
    CHECK_EQ_INT(refused(PLAN, k, 0, reason), 1);
    CHECK(strcmp(reason, "max_params") == 0);
    k = roomy_caps();
    k.max_epochs = 1; /* the plan asks 2 */
    CHECK_EQ_INT(refused(PLAN, k, 0, reason), 1);
    CHECK(strcmp(reason, "max_epochs") == 0);
    k = roomy_caps();
    k.max_memory = 1000;
    CHECK_EQ_INT(refused(PLAN, k, 0, reason), 1);
    CHECK(strcmp(reason, "max_memory") == 0);
    k = roomy_caps();
    k.max_seconds = 1; /* 48 samples × 2 epochs at 1 FLOP/s is far more than a second */
    CHECK_EQ_INT(refused(PLAN, k, 1.0, reason), 1);
    CHECK(strcmp(reason, "max_seconds") == 0);
    k = roomy_caps();
    CHECK_EQ_INT(refused("{\"dataset\":\"fashion-mnist\"}", k, 0, reason), 1);
    CHECK(strcmp(reason, "dataset") == 0);
    CHECK_EQ_INT(refused("{\"dataset\":\"toy\",\"strategy\":\"scaffold\"}", k, 0, reason), 1);
    CHECK(strcmp(reason, "strategy") == 0);
}

TEST(client_caps_refuse_a_model_for_other_samples)
{
    /* the toy data is 1×4×4 with 3 classes; a model for 1×4×4 with 4 classes does not fit */
    const char *spec4 =
        "{\"input\":[1,4,4],\"layers\":[{\"type\":\"flatten\"},"
        "{\"type\":\"linear\",\"name\":\"fc\",\"in_features\":16,\"out_features\":4}]}";
    client_task t = {0};
    t.spec_json = strdup(spec4);
    cJSON *pj = cJSON_Parse("{\"dataset\":\"toy\"}");
    CHECK(client_plan_parse(pj, &t.plan) == 0);
    cJSON_Delete(pj);
    artificien_data d = toy_data();
    client_data_view v;
    CHECK(client_data_view_init(&d, &v) == 0);
    nn_model *m;
    char reason[64], msg[256];
    CHECK(client_task_build(&t, 1000, &m, reason, sizeof reason, msg, sizeof msg) == 0);
    artificien_caps k = roomy_caps();
    CHECK_EQ_INT(client_task_check(&k, &t, m, &v, 1, 0, reason, sizeof reason, msg, sizeof msg), 1);
    CHECK(strcmp(reason, "shape") == 0);
    CHECK(strstr(msg, "4 classes") != NULL);
    nn_model_free(m);
    client_data_view_clear(&v);
    client_task_clear(&t);
}

TEST(client_memory_estimate_grows_with_batch_and_threads)
{
    nn_model *m;
    CHECK(nn_model_from_file("models/fashion_cnn.json", NULL, &m) == 0);
    client_plan p;
    cJSON *j = cJSON_Parse("{}");
    CHECK(client_plan_parse(j, &p) == 0);
    cJSON_Delete(j);
    size_t b10 = client_task_memory(m, &p, 1);
    p.batch = 100;
    size_t b100 = client_task_memory(m, &p, 1), b100t2 = client_task_memory(m, &p, 2);
    CHECK(b10 > 4 * m->n_params * sizeof(float));
    CHECK(b100 > b10 && b100t2 > b100);
    /* the tutorial CNN at batch 10 needs a few MiB, not hundreds */
    CHECK_MSG(b10 < (size_t)16 << 20, "%zu bytes", b10);
    nn_model_free(m);
}

TEST(client_train_gives_local_minus_received_and_prox_pulls_in)
{
    artificien_data d = toy_data();
    client_data_view v;
    CHECK(client_data_view_init(&d, &v) == 0);
    CHECK_EQ_INT(v.n_train, TOY_N - 12);
    client_task t;
    CHECK(make_task(PLAN, &t) == 0);
    nn_model *m;
    char reason[64], msg[256];
    CHECK(client_task_build(&t, 1000, &m, reason, sizeof reason, msg, sizeof msg) == 0);
    nn_model_init(m, 3);
    size_t n = m->n_params;
    float *global = malloc(sizeof(float) * n), *delta = malloc(sizeof(float) * n);
    float *delta_prox = malloc(sizeof(float) * n);
    memcpy(global, m->params, sizeof(float) * n);
    client_train_stats st;
    CHECK(client_train(m, global, &t.plan, &v, 5, 1, 9, 0, NULL, delta, &st) == 0);
    CHECK_EQ_INT(st.samples, TOY_N - 12);
    CHECK_EQ_INT(st.steps, 2 * 12); /* 48 samples / batch 4, two epochs */
    CHECK(!st.abandoned && st.loss > 0 && isfinite(st.loss));
    for (size_t i = 0; i < n; i++)
        CHECK_NEAR(delta[i], m->params[i] - global[i], 0);
    double plain = client_l2(delta, n);
    CHECK(plain > 1e-3);
    /* the same training with a strong proximal term moves less */
    memcpy(m->params, global, sizeof(float) * n);
    snprintf(t.plan.strategy, sizeof t.plan.strategy, "fedprox");
    snprintf(t.plan.strategy_opts, sizeof t.plan.strategy_opts, "mu=5");
    CHECK(client_train(m, global, &t.plan, &v, 5, 1, 9, 0, NULL, delta_prox, &st) == 0);
    CHECK_MSG(client_l2(delta_prox, n) < 0.8 * plain, "prox %g vs plain %g", client_l2(delta_prox, n), plain);
    /* a stop request abandons training */
    volatile sig_atomic_t stop = 1;
    memcpy(m->params, global, sizeof(float) * n);
    CHECK(client_train(m, global, &t.plan, &v, 5, 1, 9, 0, &stop, delta, &st) == 0);
    CHECK(st.abandoned);
    CHECK(st.steps <= 1);
    /* a bad strategy option is an error, not a crash */
    snprintf(t.plan.strategy_opts, sizeof t.plan.strategy_opts, "mu=-1");
    CHECK(client_train(m, global, &t.plan, &v, 5, 1, 9, 0, NULL, delta, &st) < 0);
    free(global);
    free(delta);
    free(delta_prox);
    nn_model_free(m);
    client_task_clear(&t);
    client_data_view_clear(&v);
}

TEST(client_data_view_defaults_and_checks)
{
    artificien_data d = toy_data();
    client_data_view v;
    CHECK(client_data_view_init(&d, &v) == 0);
    CHECK_EQ_INT(v.train[0], 0);
    CHECK_EQ_INT(v.train[v.n_train - 1], TOY_N - 13);
    CHECK_EQ_INT(v.heldout[0], TOY_N - 12);
    CHECK_EQ_INT(v.n_heldout, 12);
    CHECK_EQ_INT(v.ds.sample_size, 16);
    CHECK(strcmp(v.ds.schema.name, "toy") == 0);
    client_data_view_clear(&v);
    uint32_t tr[3] = {1, 2, TOY_N};
    d.train = tr;
    d.n_train = 3;
    CHECK_EQ_INT(client_data_view_init(&d, &v), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "data.train[2]") != NULL);
    tr[2] = 3;
    CHECK(client_data_view_init(&d, &v) == 0);
    CHECK(v.train == tr && v.n_train == 3 && v.n_heldout == 12);
    client_data_view_clear(&v);
    d = toy_data();
    d.classes = 1;
    CHECK_EQ_INT(client_data_view_init(&d, &v), AF_EINVAL);
    d = toy_data();
    d.n_heldout = TOY_N;
    CHECK_EQ_INT(client_data_view_init(&d, &v), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "no training samples") != NULL);
}

TEST(client_backoff_schedule)
{
    CHECK_NEAR(artificien_backoff(0, 1, 300, 0.5), 0, 0);
    CHECK_NEAR(artificien_backoff(1, 1, 300, 0.5), 1, 1e-12);
    CHECK_NEAR(artificien_backoff(2, 1, 300, 0.5), 2, 1e-12);
    CHECK_NEAR(artificien_backoff(3, 1, 300, 0.5), 4, 1e-12);
    CHECK_NEAR(artificien_backoff(9, 1, 300, 0.5), 256, 1e-9);
    CHECK_NEAR(artificien_backoff(10, 1, 300, 0.5), 300, 1e-9);   /* capped */
    CHECK_NEAR(artificien_backoff(5000, 1, 300, 0.5), 300, 1e-9); /* no overflow */
    CHECK_NEAR(artificien_backoff(1, 2.5, 300, 0.5), 2.5, 1e-12);
    /* jitter: ±20 % */
    CHECK_NEAR(artificien_backoff(3, 1, 300, 0.0), 3.2, 1e-12);
    CHECK(artificien_backoff(3, 1, 300, 0.9999) < 4.8 && artificien_backoff(3, 1, 300, 0.9999) > 4.79);
    double prev = 0;
    for (int k = 1; k < 20; k++) {
        double d = artificien_backoff(k, 0.5, 60, 0.5);
        CHECK(d >= prev && d <= 60);
        prev = d;
    }
}

TEST(client_create_validates_config)
{
    artificien_data d = toy_data();
    artificien_config cfg;
    artificien_config_init(&cfg);
    artificien_client *c = (artificien_client *)&cfg;
    CHECK_EQ_INT(artificien_client_create(&cfg, &c), ARTIFICIEN_EINVAL);
    CHECK(c == NULL);
    CHECK(strstr(artificien_errmsg(NULL), "config.server") != NULL);
    cfg.server = "ftp://example.com";
    cfg.data = &d;
    cfg.token = "abc";
    CHECK_EQ_INT(artificien_client_create(&cfg, &c), ARTIFICIEN_EINVAL);
    CHECK(strstr(artificien_errmsg(NULL), "http://") != NULL);
    cfg.server = "http://127.0.0.1:9";
    cfg.token = NULL;
    CHECK_EQ_INT(artificien_client_create(&cfg, &c), ARTIFICIEN_EAUTH);
    cfg.token = "has space";
    CHECK_EQ_INT(artificien_client_create(&cfg, &c), ARTIFICIEN_EINVAL);
    cfg.token = "abc";
    CHECK(artificien_client_create(&cfg, &c) == 0);
    CHECK(strcmp(artificien_client_token(c), "abc") == 0);
    artificien_client_free(c);
    artificien_client_free(NULL);
    /* a token file is read and trimmed */
    char path[512];
    snprintf(path, sizeof path, "%s/token", t_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("f00d\n", f);
    fclose(f);
    cfg.token = NULL;
    cfg.token_file = path;
    CHECK(artificien_client_create(&cfg, &c) == 0);
    CHECK(strcmp(artificien_client_token(c), "f00d") == 0);
    artificien_client_free(c);
}

/* A loopback port with nothing listening: bind port 0, read the port, close. */
static int dead_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || getsockname(s, (struct sockaddr *)&a, &l))
        return -1;
    close(s);
    return ntohs(a.sin_port);
}

static int calls;
static int not_now(void *user)
{
    (void)user;
    calls++;
    return 0;
}

typedef struct cycles {
    int n, rc[2];
    double delay[2];
} cycles;

static int stop_after_two(void *user, int rc, const artificien_result *r, double delay)
{
    cycles *cy = user;
    (void)r;
    cy->rc[cy->n] = rc;
    cy->delay[cy->n] = delay;
    return ++cy->n >= 2;
}

TEST(client_network_failure_is_a_value)
{
    int port = dead_port();
    CHECK(port > 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    artificien_data d = toy_data();
    artificien_config cfg;
    artificien_config_init(&cfg);
    cfg.server = url;
    cfg.data = &d;
    cfg.enroll_secret = "s3cret";
    cfg.timeout_s = 2;
    cfg.backoff_base_s = 0.01;
    artificien_client *c;
    CHECK(artificien_client_create(&cfg, &c) == 0);
    artificien_result r;
    CHECK_EQ_INT(artificien_client_run_once(c, &r), ARTIFICIEN_ENET);
    CHECK_MSG(strstr(artificien_errmsg(c), "enrol") && strstr(artificien_errmsg(c), url),
              "'%s'", artificien_errmsg(c));
    /* run: backoff after each failure, stopped by the hook */
    cycles cy = {0};
    artificien_run_opts o = {.on_cycle = stop_after_two, .user = &cy};
    CHECK_EQ_INT(artificien_client_run(c, &o), 0);
    CHECK_EQ_INT(cy.n, 2);
    CHECK(cy.rc[0] == ARTIFICIEN_ENET && cy.rc[1] == ARTIFICIEN_ENET);
    /* base 0.01 s: 0.008..0.012 after the first failure, twice that after the second */
    CHECK_MSG(cy.delay[0] >= 0.008 && cy.delay[0] <= 0.012, "%g", cy.delay[0]);
    CHECK_MSG(cy.delay[1] >= 0.016 && cy.delay[1] <= 0.024, "%g", cy.delay[1]);
    /* max_failures ends the loop with the error */
    artificien_run_opts o2 = {.max_failures = 3};
    CHECK_EQ_INT(artificien_client_run(c, &o2), ARTIFICIEN_ENET);
    artificien_client_free(c);
    /* with a token, good_time is asked first and "not now" sends nothing */
    cfg.enroll_secret = NULL;
    cfg.token = "abc";
    cfg.good_time = not_now;
    cfg.not_now_s = 42;
    CHECK(artificien_client_create(&cfg, &c) == 0);
    CHECK_EQ_INT(artificien_client_run_once(c, &r), 0);
    CHECK(r.action == ARTIFICIEN_NOT_NOW && r.retry_after == 42 && calls == 1);
    /* stop is sticky: run returns at once */
    artificien_client_stop(c);
    CHECK_EQ_INT(artificien_client_run(c, NULL), 0);
    CHECK_EQ_INT(calls, 1);
    artificien_client_free(c);
}

/* Writes a raw (uncompressed) IDX file: magic 0,0,8,ndim, big-endian dims, bytes. */
static int write_idx(const char *dir, const char *name, const uint32_t *dims, int ndim,
                     const uint8_t *data, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint8_t head[4] = {0, 0, 8, (uint8_t)ndim};
    fwrite(head, 1, 4, f);
    for (int i = 0; i < ndim; i++) {
        uint8_t be[4] = {(uint8_t)(dims[i] >> 24), (uint8_t)(dims[i] >> 16), (uint8_t)(dims[i] >> 8),
                         (uint8_t)dims[i]};
        fwrite(be, 1, 4, f);
    }
    fwrite(data, 1, n, f);
    return fclose(f);
}

TEST(client_data_load_reads_idx_files)
{
    const char *dir = t_tmpdir();
    enum { N = 20 };
    static uint8_t img[N * 28 * 28], lab[N];
    for (int i = 0; i < N; i++) {
        lab[i] = (uint8_t)(i % 10);
        for (int j = 0; j < 28 * 28; j++)
            img[i * 784 + j] = (uint8_t)(i * 10);
    }
    uint32_t di[3] = {N, 28, 28}, dl[1] = {N};
    CHECK(write_idx(dir, "train-images-idx3-ubyte", di, 3, img, sizeof img) == 0);
    CHECK(write_idx(dir, "train-labels-idx1-ubyte", dl, 1, lab, sizeof lab) == 0);
    artificien_data *d;
    CHECK(artificien_data_load(dir, 0.25, &d) == 0);
    CHECK(strcmp(d->name, "fashion-mnist") == 0);
    CHECK_EQ_INT(d->n, N);
    CHECK_EQ_INT(d->n_heldout, 5);
    CHECK(d->channels == 1 && d->height == 28 && d->width == 28 && d->classes == 10);
    CHECK_EQ_INT(d->y[13], 3);
    /* 8-bit samples: the pixels as read, and the table (p/255 − 0.2860)/0.3530 */
    CHECK(d->x == NULL && d->x8 != NULL && d->lut != NULL);
    CHECK_EQ_INT(d->x8[13 * 784 + 5], 130);
    CHECK_NEAR(d->lut[d->x8[13 * 784 + 5]], (130 / 255.0 - 0.2860) / 0.3530, 1e-6);
    /* and the client takes it */
    client_data_view v;
    CHECK(client_data_view_init(d, &v) == 0);
    CHECK(v.n_train == 15 && v.heldout[0] == 15);
    client_data_view_clear(&v);
    artificien_data_free(d);
    artificien_data_free(NULL);
    CHECK_EQ_INT(artificien_data_load(dir, 1.0, &d), ARTIFICIEN_ERANGE);
    CHECK(d == NULL);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nothing-here", dir);
    CHECK(artificien_data_load(missing, 0.1, &d) < 0);
    CHECK(strstr(artificien_errmsg(NULL), "nothing-here") != NULL);
}
