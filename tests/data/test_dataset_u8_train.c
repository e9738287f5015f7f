/* test_dataset_u8_train.c — the 8-bit dataset changes no number: training, evaluation and a
 * simulated federated run on Fashion-MNIST loaded as bytes (data_load_fashion_mnist_u8) give
 * bitwise the parameters, losses and confusion matrices they give on the same images loaded
 * as floats (data_load_fashion_mnist), on 1 and 2 threads. Uses the installed dataset (first
 * 2,000 training and 1,000 test images) and models/fashion_cnn.json.
 */
#include "../test.h"

#include "core/err.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "nn/model.h"
#include "nn/optim.h"
#include "sim/sim.h"
#include "train/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N_TRAIN 2000
#define N_TEST 1000

/* [0] float storage, [1] 8-bit storage of the same images; loaded once, kept until exit. */
static data_dataset *g_train[2], *g_test[2];

static int setup(void)
{
    if (g_test[1])
        return 0;
    int rc = 0;
    for (int u8 = 0; u8 < 2 && !rc; u8++) {
        int (*load)(const char *, int, float, float, size_t, data_dataset **) =
            u8 ? data_load_fashion_mnist_u8 : data_load_fashion_mnist;
        rc = load("fashion-mnist", 1, 0.2860f, 0.3530f, N_TRAIN, &g_train[u8]);
        if (!rc)
            rc = load("fashion-mnist", 0, 0.2860f, 0.3530f, N_TEST, &g_test[u8]);
    }
    if (!rc && (g_train[0]->x8 || !g_train[1]->x8 || g_test[0]->x8 || !g_test[1]->x8))
        rc = af_seterr(AF_EINVAL, "the loaders did not give one float and one 8-bit dataset");
    if (rc)
        fprintf(stderr, "test_dataset_u8_train setup: %s\n", af_errmsg());
    return rc;
}

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Trains a fresh CNN (seed 7) for one shuffled epoch of ds, batch 32, on `threads` threads
 * with optimizer `kind`; its parameters go to *params (malloc'd) and the epoch's stats to st.
 * Every sample index is listed in idx (n of them; NULL = all). 0 or AF_E*. */
static int train_once(const data_dataset *ds, const uint32_t *idx, size_t n, nn_opt_kind kind,
                      int threads, float **params, size_t *n_params, train_epoch_stats *st)
{
    nn_model *m = NULL;
    train_ctx *t = NULL;
    *params = NULL;
    int rc = nn_model_from_file("models/fashion_cnn.json", NULL, &m);
    if (rc)
        return rc;
    nn_model_init(m, 7);
    nn_optim_cfg oc = nn_optim_defaults(kind);
    oc.lr = kind == NN_OPT_ADAM ? 0.01f : 0.05f;
    if ((rc = train_create(m, &oc, 32, threads, &t)))
        goto done;
    af_rng rng;
    af_rng_seed(&rng, 11, 1);
    train_epoch(t, ds, idx, n, 32, &rng, 0, NULL, NULL, st);
    if (!(*params = malloc(sizeof(float) * m->n_params))) {
        rc = af_seterr(AF_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(*params, m->params, sizeof(float) * m->n_params);
    *n_params = m->n_params;
done:
    train_free(t);
    nn_model_free(m);
    return rc;
}

TEST(dataset_u8_training_is_bitwise_the_float_training)
{
    if (setup() != 0) {
        CHECK(0);
        return;
    }
    /* an index view too, as a simulated device trains: every third sample */
    static uint32_t view[N_TRAIN / 3];
    for (size_t i = 0; i < N_TRAIN / 3; i++)
        view[i] = (uint32_t)(3 * i + 1);
    const struct {
        nn_opt_kind kind;
        int threads;
        const uint32_t *idx;
        size_t n;
    } runs[] = {{NN_OPT_ADAM, 1, NULL, N_TRAIN}, {NN_OPT_ADAM, 2, NULL, N_TRAIN},
                {NN_OPT_SGD, 2, view, N_TRAIN / 3}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        float *p[2] = {NULL, NULL};
        size_t np[2] = {0, 0};
        train_epoch_stats st[2];
        for (int u8 = 0; u8 < 2; u8++)
            CHECK_EQ_INT(train_once(g_train[u8], runs[r].idx, runs[r].n, runs[r].kind,
                                    runs[r].threads, &p[u8], &np[u8], &st[u8]),
                         0);
        if (p[0] && p[1]) {
            CHECK(np[0] == np[1] && np[0] > 0);
            CHECK_MSG(memcmp(p[0], p[1], sizeof(float) * np[0]) == 0,
                      "run %zu: parameters differ between float and 8-bit data", r);
            CHECK_MSG(same_double(st[0].loss, st[1].loss) && same_double(st[0].accuracy, st[1].accuracy),
                      "run %zu: epoch loss %.9g vs %.9g", r, st[0].loss, st[1].loss);
            CHECK_EQ_INT(st[0].steps, st[1].steps);
            CHECK(st[0].steps >= 20); /* enough steps that a difference would have shown */
            CHECK(isfinite(st[0].loss) && st[0].loss > 0);
        }
        free(p[0]);
        free(p[1]);
    }
}

TEST(dataset_u8_evaluation_is_bitwise_the_float_evaluation)
{
    if (setup() != 0) {
        CHECK(0);
        return;
    }
    nn_model *m;
    CHECK_EQ_INT(nn_model_from_file("models/fashion_cnn.json", NULL, &m), 0);
    if (!m)
        return;
    nn_model_init(m, 3);
    static uint32_t idx[700];
    for (size_t i = 0; i < 700; i++)
        idx[i] = (uint32_t)((i * 7919) % N_TEST);
    for (int threads = 1; threads <= 2; threads++)
        for (int with_idx = 0; with_idx < 2; with_idx++) { /* a contiguous range, an index view */
            static train_eval e[2];
            for (int u8 = 0; u8 < 2; u8++)
                CHECK_EQ_INT(train_evaluate_simple(m, g_test[u8], with_idx ? idx : NULL,
                                                   with_idx ? 700 : 0, threads, &e[u8]),
                             0);
            CHECK_EQ_INT(e[0].n, with_idx ? 700 : N_TEST);
            CHECK_MSG(same_double(e[0].loss, e[1].loss), "threads %d idx %d: loss %.17g vs %.17g",
                      threads, with_idx, e[0].loss, e[1].loss);
            CHECK(same_double(e[0].accuracy, e[1].accuracy));
            CHECK(memcmp(e[0].confusion, e[1].confusion, sizeof e[0].confusion) == 0);
        }
    nn_model_free(m);
}

/* Two rounds of FedAvg over 20 devices (Dirichlet labels, held-out shares, central and
 * federated evaluation) on train[u8]/test[u8]; final parameters into params. */
static int sim_once(int u8, int threads, float *params, size_t cap, sim_round rounds[2])
{
    nn_model *m;
    int rc = nn_model_from_file("models/fashion_cnn.json", NULL, &m);
    if (rc)
        return rc;
    if (m->n_params > cap) {
        nn_model_free(m);
        return af_seterr(AF_ERANGE, "the model has more parameters than the test expects");
    }
    nn_model_init(m, 1);
    sim_cfg c;
    sim_cfg_defaults(&c);
    c.clients = 20;
    c.per_round = 5;
    c.rounds = 2;
    c.partition = "dirichlet:0.5";
    c.threads = threads;
    sim *s;
    if ((rc = sim_create(&c, m, g_train[u8], g_test[u8], &s)) == 0) {
        for (int r = 1; r <= 2 && !rc; r++)
            rc = sim_run_round(s, r, &rounds[r - 1]);
        if (!rc)
            memcpy(params, sim_model(s)->params, sizeof(float) * m->n_params);
        sim_free(s);
    }
    nn_model_free(m);
    return rc;
}

TEST(dataset_u8_simulation_is_bitwise_the_float_simulation)
{
    if (setup() != 0) {
        CHECK(0);
        return;
    }
    static float p[2][1 << 16]; /* the CNN has 32,998 parameters */
    for (int threads = 1; threads <= 2; threads++) {
        sim_round r[2][2];
        for (int u8 = 0; u8 < 2; u8++)
            CHECK_EQ_INT(sim_once(u8, threads, p[u8], 1 << 16, r[u8]), 0);
        CHECK_MSG(memcmp(p[0], p[1], sizeof p[0]) == 0, "threads %d: parameters differ", threads);
        for (int k = 0; k < 2; k++) {
            CHECK(same_double(r[0][k].train_loss, r[1][k].train_loss));
            CHECK(same_double(r[0][k].test_loss, r[1][k].test_loss));
            CHECK(same_double(r[0][k].dev_acc_mean, r[1][k].dev_acc_mean));
            CHECK(r[0][k].reported == 5 && r[1][k].reported == 5);
        }
        CHECK(isfinite(r[0][1].test_loss));
    }
}
