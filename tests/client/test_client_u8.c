/* test_client_u8.c — a device may hold its images as bytes (artificien_data.x8 + lut) instead
 * of floats, and nothing it computes changes: local training (SGD, Adam with FedProx, 1 and
 * 2 threads) gives bitwise the update, loss and steps, and federated evaluation the loss and
 * confusion matrix, of the same samples handed over as floats lut[x8[k]]; on a toy model and
 * on the tutorial CNN with the installed Fashion-MNIST (artificien_data_load's bytes against
 * the engine's float loader). Also: the view reads the app's bytes in place and copies the
 * table, the data checks name data.x8 / data.lut, and the public create takes byte data.
 */
#include "../test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "artificien/client.h"
#include "client/task.h"
#include "core/err.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "nn/model.h"
#include "train/train.h"

/* 1×4×4 images, conv 1→2 3×3, relu, flatten, linear 8→3 (47 parameters). */
static const char *SPEC =
    "{\"name\":\"tiny\",\"input\":[1,4,4],\"classes\":3,\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"conv1\",\"in_channels\":1,\"out_channels\":2,\"kernel\":3},"
    "{\"type\":\"relu\"},{\"type\":\"flatten\"},"
    "{\"type\":\"linear\",\"name\":\"fc\",\"in_features\":8,\"out_features\":3}]}";

/* 60 samples of 1×4×4 bytes: class c has a bright pixel at position 5 + c, the rest is dim
 * noise; lut is a normalisation no simple formula reproduces (so a wrong table shows). */
#define TOY_N 60
static uint8_t toy_x8[TOY_N * 16], toy_y[TOY_N];
static float toy_lut[256], toy_x[TOY_N * 16];

static void toy_fill(artificien_data *f, artificien_data *b)
{
    af_rng r;
    af_rng_seed(&r, 5, 0);
    for (int p = 0; p < 256; p++) /* (p/255 − 0.2860)/0.3530 plus a little per-byte wobble */
        toy_lut[p] = (float)(((double)p / 255.0 - (double)0.2860f) / (double)0.3530f +
                             0.01 * af_rng_normal(&r));
    for (int i = 0; i < TOY_N; i++) {
        toy_y[i] = (uint8_t)(i % 3);
        for (int j = 0; j < 16; j++)
            toy_x8[i * 16 + j] = (uint8_t)(af_rng_u32(&r) % 48);
        toy_x8[i * 16 + 5 + toy_y[i]] = (uint8_t)(200 + af_rng_u32(&r) % 56);
    }
    for (int k = 0; k < TOY_N * 16; k++)
        toy_x[k] = toy_lut[toy_x8[k]];
    artificien_data d = {.name = "toy", .channels = 1, .height = 4, .width = 4, .classes = 3,
                         .y = toy_y, .n = TOY_N, .n_heldout = 12};
    *f = d;
    f->x = toy_x;
    *b = d;
    b->x8 = toy_x8;
    b->lut = toy_lut;
}

static int parse_task(const char *spec, const char *plan, client_task *t)
{
    char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"project\":3,\"round\":5,\"attempt\":2,\"version\":4,"
             "\"checkpoint\":\"/v1/projects/3/checkpoints/4\",\"spec\":%s,\"plan\":%s,"
             "\"deadline_at\":1732700060.0,\"report\":\"/v1/projects/3/rounds/5/reports\"}",
             spec, plan);
    cJSON *j = cJSON_Parse(buf);
    if (!j)
        return -100;
    int rc = client_task_parse(j, t);
    cJSON_Delete(j);
    return rc;
}

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* One local training of task t's model (initialised with seed 3) on the float view vf and the
 * byte view vb, as client.c does it (evaluation of the received model first, then training
 * from it): the updates, stats and evaluations must be bitwise equal. Returns the number of
 * differences (0 = bitwise the same); *norm is the update's L2 norm. */
static int train_both(const client_task *t, const client_data_view *vf,
                      const client_data_view *vb, int threads, double *norm)
{
    nn_model *m = NULL;
    char reason[64], msg[256];
    if (client_task_build(t, 10000000, &m, reason, sizeof reason, msg, sizeof msg))
        return 1000;
    nn_model_init(m, 3);
    size_t n = m->n_params;
    float *global = malloc(sizeof(float) * n), *d[2] = {malloc(sizeof(float) * n), malloc(sizeof(float) * n)};
    client_train_stats st[2];
    train_eval ev[2];
    int bad = 0;
    if (!global || !d[0] || !d[1]) {
        bad = 1000;
        goto done;
    }
    memcpy(global, m->params, sizeof(float) * n);
    for (int u8 = 0; u8 < 2; u8++) {
        const client_data_view *v = u8 ? vb : vf;
        memcpy(m->params, global, sizeof(float) * n);
        if (train_evaluate_simple(m, &v->ds, v->heldout, v->n_heldout, threads, &ev[u8]) ||
            client_train(m, global, &t->plan, v, t->round, threads, 9, 0, NULL, d[u8], &st[u8]))
            bad += 1000;
    }
    if (bad)
        goto done;
    bad += memcmp(d[0], d[1], sizeof(float) * n) != 0;
    bad += !same_double(st[0].loss, st[1].loss) || st[0].steps != st[1].steps ||
           st[0].samples != st[1].samples || st[0].abandoned || st[1].abandoned;
    bad += !same_double(ev[0].loss, ev[1].loss) || ev[0].n != ev[1].n || ev[0].n == 0 ||
           memcmp(ev[0].confusion, ev[1].confusion, sizeof(long) * ev[0].k * ev[0].k) != 0;
    *norm = client_l2(d[1], n);
done:
    free(global);
    free(d[0]);
    free(d[1]);
    nn_model_free(m);
    return bad;
}

TEST(client_u8_view_reads_the_apps_bytes_in_place)
{
    artificien_data f, b;
    toy_fill(&f, &b);
    client_data_view v;
    CHECK(client_data_view_init(&b, &v) == 0);
    CHECK(v.ds.x == NULL && v.ds.x8 == toy_x8 && v.ds.y == toy_y);
    CHECK(memcmp(v.ds.lut, toy_lut, sizeof toy_lut) == 0);
    CHECK_EQ_INT(v.ds.sample_size, 16);
    CHECK(v.n_train == TOY_N - 12 && v.n_heldout == 12);
    /* the table is the view's copy: the app may reuse its array */
    float keep = toy_lut[7];
    toy_lut[7] = 1e6f;
    CHECK(v.ds.lut[7] == keep);
    toy_lut[7] = keep;
    /* the rows the engine gathers are the floats of the float view */
    float rows[TOY_N * 16];
    CHECK(memcmp(data_rows(&v.ds, 0, TOY_N, rows), toy_x, sizeof toy_x) == 0);
    client_data_view_clear(&v); /* frees nothing of the app's (ASan would see it) */
    CHECK(toy_x8[5 + toy_y[0]] >= 200);
}

TEST(client_u8_data_checks_name_x8_and_lut)
{
    artificien_data f, b;
    toy_fill(&f, &b);
    client_data_view v;
    artificien_data d = b;
    d.x = toy_x;
    CHECK_EQ_INT(client_data_view_init(&d, &v), AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "data.x8") && strstr(af_errmsg(), "not both"), "'%s'", af_errmsg());
    d = b;
    d.lut = NULL;
    CHECK_EQ_INT(client_data_view_init(&d, &v), AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "data.lut") && strstr(af_errmsg(), "required"), "'%s'", af_errmsg());
    d = f;
    d.lut = toy_lut;
    CHECK_EQ_INT(client_data_view_init(&d, &v), AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "data.lut") && strstr(af_errmsg(), "only used with data.x8"),
              "'%s'", af_errmsg());
    d = b;
    d.x8 = NULL;
    d.lut = NULL;
    CHECK_EQ_INT(client_data_view_init(&d, &v), AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "x (floats) or x8"), "'%s'", af_errmsg());
    float bad[256];
    memcpy(bad, toy_lut, sizeof bad);
    bad[201] = NAN;
    d = b;
    d.lut = bad;
    CHECK_EQ_INT(client_data_view_init(&d, &v), AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "data.lut[201]"), "'%s'", af_errmsg());
    /* the public create runs the same checks, and takes good byte data */
    artificien_config cfg;
    artificien_config_init(&cfg);
    cfg.server = "http://127.0.0.1:9";
    cfg.enroll_secret = "s3cret";
    cfg.data = &d;
    artificien_client *c = NULL;
    d = b;
    d.lut = NULL;
    CHECK_EQ_INT(artificien_client_create(&cfg, &c), ARTIFICIEN_EINVAL);
    CHECK(c == NULL && strstr(artificien_errmsg(NULL), "data.lut"));
    d = b;
    CHECK_EQ_INT(artificien_client_create(&cfg, &c), 0);
    artificien_client_free(c);
}

TEST(client_u8_training_is_bitwise_the_float_training)
{
    artificien_data f, b;
    toy_fill(&f, &b);
    client_data_view vf, vb;
    CHECK(client_data_view_init(&f, &vf) == 0);
    CHECK(client_data_view_init(&b, &vb) == 0);
    static const char *plans[] = {
        "{\"local_epochs\":2,\"batch\":4,\"optimizer\":\"sgd\",\"lr\":0.1,\"momentum\":0.9,"
        "\"dataset\":\"toy\"}",
        "{\"strategy\":\"fedprox\",\"strategy_opts\":\"mu=0.5\",\"local_epochs\":3,\"batch\":5,"
        "\"optimizer\":\"adam\",\"lr\":0.01,\"dataset\":\"toy\"}",
    };
    for (int pi = 0; pi < 2; pi++)
        for (int threads = 1; threads <= 2; threads++) {
            client_task t;
            CHECK(parse_task(SPEC, plans[pi], &t) == 0);
            double norm = 0;
            int bad = train_both(&t, &vf, &vb, threads, &norm);
            CHECK_MSG(bad == 0, "plan %d, %d threads: %d differences", pi, threads, bad);
            CHECK_MSG(norm > 1e-3, "plan %d: the update is %g: nothing was trained", pi, norm);
            client_task_clear(&t);
        }
    /* a table that is not the one behind the floats does change the update: the comparison
     * above can fail */
    float other[256];
    for (int p = 0; p < 256; p++)
        other[p] = toy_lut[p] * 1.5f;
    artificien_data b2 = b;
    b2.lut = other;
    client_data_view v2;
    CHECK(client_data_view_init(&b2, &v2) == 0);
    client_task t;
    CHECK(parse_task(SPEC, plans[0], &t) == 0);
    double norm;
    CHECK(train_both(&t, &vf, &v2, 1, &norm) > 0);
    client_task_clear(&t);
    client_data_view_clear(&v2);
    client_data_view_clear(&vf);
    client_data_view_clear(&vb);
}

/* The tutorial CNN on 600 training and 200 held-out images of the installed Fashion-MNIST:
 * the bytes artificien_data_load hands out against the engine's float loader. */
TEST(client_u8_fashion_mnist_update_is_bitwise_the_float_update)
{
    artificien_data *b = NULL;
    data_dataset *fl = NULL;
    int rc = artificien_data_load("fashion-mnist", 0.1, &b);
    CHECK_MSG(rc == 0, "artificien_data_load: %s", artificien_errmsg(NULL));
    CHECK(data_load_fashion_mnist("fashion-mnist", 1, 0.2860f, 0.3530f, 1000, &fl) == 0);
    if (!b || !fl)
        goto done;
    CHECK(b->x == NULL && b->x8 && b->lut);
    /* the bytes stand for the float loader's values, bit for bit */
    int same = 1;
    for (size_t k = 0; k < 1000 * fl->sample_size; k++)
        same &= memcmp(&b->lut[b->x8[k]], &fl->x[k], sizeof(float)) == 0;
    CHECK(same);
    uint32_t tr[600], ho[200];
    for (uint32_t i = 0; i < 600; i++)
        tr[i] = i;
    for (uint32_t i = 0; i < 200; i++)
        ho[i] = 800 + i;
    artificien_data fd = {.name = "fashion-mnist", .channels = 1, .height = 28, .width = 28,
                          .classes = 10, .x = fl->x, .y = fl->y, .n = fl->n, .train = tr,
                          .n_train = 600, .heldout = ho, .n_heldout = 200};
    artificien_data bd = *b;
    bd.train = tr;
    bd.n_train = 600;
    bd.heldout = ho;
    bd.n_heldout = 200;
    client_data_view vf, vb;
    CHECK(client_data_view_init(&fd, &vf) == 0);
    CHECK(client_data_view_init(&bd, &vb) == 0);
    char *spec = NULL;
    size_t len;
    CHECK(af_read_file("models/fashion_cnn.json", &spec, &len) == 0);
    client_task t;
    CHECK(spec && parse_task(spec, "{\"local_epochs\":1,\"batch\":10,\"lr\":0.05,"
                                   "\"dataset\":\"fashion-mnist\"}", &t) == 0);
    for (int threads = 1; threads <= 2; threads++) {
        double norm = 0;
        int bad = train_both(&t, &vf, &vb, threads, &norm);
        CHECK_MSG(bad == 0, "%d threads: %d differences", threads, bad);
        CHECK(norm > 1e-3);
    }
    client_task_clear(&t);
    free(spec);
    client_data_view_clear(&vf);
    client_data_view_clear(&vb);
done:
    artificien_data_free(b);
    data_dataset_free(fl);
}
