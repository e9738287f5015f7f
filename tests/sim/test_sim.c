/* test_sim.c — tests for sim/sim: the simulated federated round through the C API, on the
 * first 2,000 Fashion-MNIST training images and the first 1,000 test images (loaded once).
 * Determinism, thread-count independence, dropout and straggler accounting, every strategy,
 * FedProx's shorter updates, the federated-evaluation numbers, and refusal of bad configs.
 * MPI equivalence is checked end to end by tests/cli/test_sim.sh (it needs mpirun). */
#include "../test.h"
#include "simtest.h"

#include "core/err.h"
#include "data/dataset.h"
#include "data/partition.h"
#include "nn/model.h"
#include "sim/sim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N_TRAIN 2000
#define N_TEST 1000

static data_dataset *g_train, *g_test;
static nn_model *g_model; /* the CNN, initialised from seed 1; cloned by sim_create */

/* Loads the data and the model once for the whole file (kept until exit). 0 or AF_E*. */
static int setup(void)
{
    return simtest_load("test_sim", N_TRAIN, N_TEST, &g_train, &g_test, &g_model);
}

/* A small, fast setting: 20 devices of ~90 training samples, 5 per round. */
static sim_cfg small_cfg(void)
{
    sim_cfg c;
    sim_cfg_defaults(&c);
    c.clients = 20;
    c.per_round = 5;
    c.rounds = 2;
    return c;
}

/* Runs cfg for cfg->rounds rounds into rounds[] (may be NULL) and copies the final global
 * parameters into params (g_model->n_params floats, may be NULL). 0 or AF_E*. */
static int run(const sim_cfg *cfg, sim_round *rounds, float *params)
{
    return simtest_run(cfg, g_model, g_train, g_test, rounds, NULL, params);
}

/* ||a − b||₂ over the model's parameters. */
static double dist(const float *a, const float *b)
{
    double s = 0;
    for (size_t i = 0; i < g_model->n_params; i++)
        s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s);
}

static int all_finite(const float *a)
{
    for (size_t i = 0; i < g_model->n_params; i++)
        if (!isfinite(a[i]))
            return 0;
    return 1;
}

/* NaN-aware bitwise equality of two doubles (NAN == NAN here). */
static int same_num(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b));
}

/* The central test loss is summed per batch in batch order (train_evaluate), so it too is
 * bitwise the same for any thread count. */
static int same_test_loss(double a, double b)
{
    return same_num(a, b);
}

/* 1 if every number of the two rounds (but the wall time) is bitwise equal; else names the
 * first field that differs on stderr. */
static int same_round(const sim_round *a, const sim_round *b)
{
    const char *f = a->round != b->round             ? "round"
                    : a->selected != b->selected     ? "selected"
                    : a->reported != b->reported     ? "reported"
                    : a->dropped != b->dropped       ? "dropped"
                    : !same_num(a->train_loss, b->train_loss)       ? "train_loss"
                    : !same_test_loss(a->test_loss, b->test_loss)   ? "test_loss"
                    : !same_num(a->test_accuracy, b->test_accuracy) ? "test_accuracy"
                    : !same_num(a->dev_acc_mean, b->dev_acc_mean)   ? "dev_acc_mean"
                    : !same_num(a->dev_acc_p10, b->dev_acc_p10)     ? "dev_acc_p10"
                    : !same_num(a->dev_acc_min, b->dev_acc_min)     ? "dev_acc_min"
                    : !same_num(a->sim_seconds, b->sim_seconds)     ? "sim_seconds"
                    : a->bytes_down != b->bytes_down ? "bytes_down"
                    : a->bytes_up != b->bytes_up     ? "bytes_up"
                                                     : NULL;
    if (f)
        fprintf(stderr, "  round %d: %s differs (test_loss %.17g vs %.17g)\n", a->round, f,
                a->test_loss, b->test_loss);
    return f == NULL;
}

TEST(sim_same_seed_is_bitwise_reproducible)
{
    CHECK_EQ_INT(setup(), 0);
    const size_t n = g_model->n_params;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n), *c = malloc(sizeof(float) * n);
    sim_round ra[2], rb[2];
    sim_cfg cfg = small_cfg();
    cfg.dropout = 0.2;
    int ok = run(&cfg, ra, a) == 0 && run(&cfg, rb, b) == 0;
    cfg.seed = 2;
    ok = ok && run(&cfg, NULL, c) == 0;
    int same = ok && memcmp(a, b, sizeof(float) * n) == 0 && same_round(&ra[0], &rb[0]) &&
               same_round(&ra[1], &rb[1]);
    int moved = ok && dist(a, g_model->params) > 0;
    int seed_matters = ok && memcmp(a, c, sizeof(float) * n) != 0;
    free(a);
    free(b);
    free(c);
    CHECK(ok);
    CHECK(same);
    CHECK(moved);
    CHECK(seed_matters);
}

/* 1, 2 and 3 threads give bitwise the same parameters and per-round numbers; also for
 * SCAFFOLD, whose per-device state is touched by whichever thread trains the device. */
TEST(sim_thread_count_does_not_change_results)
{
    CHECK_EQ_INT(setup(), 0);
    const size_t n = g_model->n_params;
    const char *strategies[] = {"fedavg", "scaffold"};
    float *p1 = malloc(sizeof(float) * n), *pt = malloc(sizeof(float) * n);
    int ok = 1;
    for (int si = 0; si < 2 && ok; si++) {
        sim_cfg cfg = small_cfg();
        cfg.strategy = strategies[si];
        cfg.per_round = 7; /* not a multiple of 2 or 3 threads */
        cfg.dropout = 0.2;
        cfg.rounds = 2;
        sim_round r1[2], rt[2];
        cfg.threads = 1;
        ok = run(&cfg, r1, p1) == 0;
        for (int t = 2; t <= 3 && ok; t++) {
            cfg.threads = t;
            ok = run(&cfg, rt, pt) == 0;
            int params_same = ok && memcmp(p1, pt, sizeof(float) * n) == 0;
            ok = params_same && same_round(&r1[0], &rt[0]) && same_round(&r1[1], &rt[1]);
            if (!ok)
                fprintf(stderr, "  %s: %d threads differ from 1 (parameters %s)\n", strategies[si],
                        t, params_same ? "equal" : "differ");
        }
    }
    free(p1);
    free(pt);
    CHECK(ok);
}

TEST(sim_dropout_reports_fewer_devices_and_counts_add_up)
{
    CHECK_EQ_INT(setup(), 0);
    sim_cfg cfg = small_cfg();
    cfg.per_round = 10;
    cfg.rounds = 6;
    cfg.dropout = 0.5;
    cfg.eval_every = 0;
    sim_round r[6];
    CHECK_EQ_INT(run(&cfg, r, NULL), 0);
    int short_rounds = 0, dropped = 0;
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_INT(r[i].round, i + 1);
        CHECK_EQ_INT(r[i].selected, 10);
        CHECK_EQ_INT(r[i].reported + r[i].dropped, r[i].selected);
        CHECK_EQ_INT(r[i].bytes_up * (uint64_t)r[i].selected, r[i].bytes_down * (uint64_t)r[i].reported);
        short_rounds += r[i].reported < r[i].selected;
        dropped += r[i].dropped;
    }
    CHECK(short_rounds >= 3);
    /* 60 Bernoulli(0.5) draws: [15, 45] holds with probability 1 − 1e-4 (and the seed is fixed) */
    CHECK(dropped >= 15 && dropped <= 45);
    /* without dropout nobody drops */
    cfg.dropout = 0;
    CHECK_EQ_INT(run(&cfg, r, NULL), 0);
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(r[i].dropped, 0);
}

/* With every device selected and all speeds equal (sigma 0), a device's simulated time is
 * its training size / rate, so the deadline must drop exactly the devices above it (the
 * slow ones) and the round lasts until the slowest reporter... or the deadline. */
TEST(sim_deadline_drops_the_slow_devices)
{
    CHECK_EQ_INT(setup(), 0);
    sim_cfg cfg = small_cfg();
    cfg.partition = "quantity:1"; /* unequal sizes, so unequal times */
    cfg.per_round = cfg.clients;
    cfg.rounds = 1;
    cfg.eval_every = 0;
    cfg.device_rate = 100.0;
    sim *s;
    CHECK_EQ_INT(sim_create(&cfg, g_model, g_train, g_test, &s), 0);
    const data_partition *p = sim_partition(s);
    size_t sizes[64], sorted[64];
    for (int d = 0; d < cfg.clients; d++)
        data_partition_train(p, (size_t)d, &sizes[d]);
    sim_free(s);
    memcpy(sorted, sizes, sizeof(size_t) * (size_t)cfg.clients);
    for (int i = 1; i < cfg.clients; i++) /* insertion sort, 20 values */
        for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
            size_t t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    CHECK(sorted[0] < sorted[cfg.clients - 1]);
    /* a deadline halfway between the 12th and 13th smallest sizes (in simulated seconds) */
    int keep = 12;
    while (keep < cfg.clients && sorted[keep] == sorted[keep - 1])
        keep++;
    CHECK(keep < cfg.clients);
    cfg.deadline = 0.5 * (double)(sorted[keep - 1] + sorted[keep]) / cfg.device_rate;
    sim_round r;
    CHECK_EQ_INT(run(&cfg, &r, NULL), 0);
    CHECK_EQ_INT(r.selected, cfg.clients);
    CHECK_EQ_INT(r.dropped, cfg.clients - keep);
    CHECK_EQ_INT(r.reported, keep);
    CHECK_NEAR(r.sim_seconds, cfg.deadline, 1e-12); /* stragglers keep the round open until then */
    /* with a deadline that drops nobody the round lasts as long as the slowest device */
    cfg.deadline = 2.0 * (double)sorted[cfg.clients - 1] / cfg.device_rate;
    CHECK_EQ_INT(run(&cfg, &r, NULL), 0);
    CHECK_EQ_INT(r.dropped, 0);
    CHECK_NEAR(r.sim_seconds, (double)sorted[cfg.clients - 1] / cfg.device_rate, 1e-9);

    /* random speeds: a tighter deadline never lets more devices through, per round */
    cfg.partition = "iid";
    cfg.speed_sigma = 1.0;
    cfg.per_round = 6;
    cfg.rounds = 2;
    const double deadlines[] = {0.0, 2.0, 1.0, 0.5, 0.25};
    int prev[2] = {0, 0}, some_drop = 0, some_keep = 0;
    for (int k = 0; k < 5; k++) {
        sim_round rr[2];
        cfg.deadline = deadlines[k];
        CHECK_EQ_INT(run(&cfg, rr, NULL), 0);
        for (int i = 0; i < 2; i++) {
            CHECK_EQ_INT(rr[i].reported + rr[i].dropped, 6);
            if (k == 0)
                CHECK_EQ_INT(rr[i].dropped, 0);
            CHECK(rr[i].dropped >= prev[i]);
            if (k > 0)
                CHECK(rr[i].sim_seconds <= cfg.deadline + 1e-12);
            prev[i] = rr[i].dropped;
            if (k == 2) { /* 90 samples at 100/s take 0.9 s at speed 1: logNormal splits them */
                some_drop |= rr[i].dropped > 0;
                some_keep |= rr[i].reported > 0;
            }
        }
    }
    CHECK(some_drop && some_keep);
}

TEST(sim_every_strategy_changes_the_model_and_stays_finite)
{
    CHECK_EQ_INT(setup(), 0);
    const char *names[] = {"fedavg", "fedavgm", "fedprox", "fedadam",
                           "fedyogi", "fedadagrad", "scaffold", "fednova"};
    const size_t n = g_model->n_params;
    float *p = malloc(sizeof(float) * n);
    int bad = -1;
    for (int i = 0; i < 8 && bad < 0; i++) {
        sim_cfg cfg = small_cfg();
        cfg.strategy = names[i];
        cfg.partition = "dirichlet:0.5";
        sim_round r[2];
        if (run(&cfg, r, p) || !all_finite(p) || !(dist(p, g_model->params) > 0) ||
            !(r[1].test_accuracy >= 0 && r[1].test_accuracy <= 1) || !isfinite(r[1].train_loss))
            bad = i;
    }
    if (bad >= 0)
        fprintf(stderr, "  strategy %s: %s\n", names[bad], af_errmsg());
    free(p);
    CHECK(bad < 0);
}

/* The proximal term pulls local weights back toward the global ones: after one round the
 * global model moves less with FedProx (mu = 1) than with FedAvg, all else equal. */
TEST(sim_fedprox_shortens_updates)
{
    CHECK_EQ_INT(setup(), 0);
    const size_t n = g_model->n_params;
    float *pa = malloc(sizeof(float) * n), *pp = malloc(sizeof(float) * n), *p0 = malloc(sizeof(float) * n);
    sim_cfg cfg = small_cfg();
    cfg.rounds = 1;
    cfg.local_epochs = 3;
    cfg.eval_every = 0;
    int ok = run(&cfg, NULL, pa) == 0;
    cfg.strategy = "fedprox";
    cfg.strategy_opts = "mu=0";
    ok = ok && run(&cfg, NULL, p0) == 0;
    cfg.strategy_opts = "mu=1";
    ok = ok && run(&cfg, NULL, pp) == 0;
    double na = ok ? dist(pa, g_model->params) : 0, np = ok ? dist(pp, g_model->params) : 0;
    int mu0_is_fedavg = ok && memcmp(pa, p0, sizeof(float) * n) == 0;
    free(pa);
    free(pp);
    free(p0);
    CHECK(ok);
    CHECK(mu0_is_fedavg);
    CHECK_MSG(np > 0 && np < 0.95 * na, "fedprox update norm %g vs fedavg %g", np, na);
}

TEST(sim_evaluation_numbers_are_fractions_and_ordered)
{
    CHECK_EQ_INT(setup(), 0);
    sim_cfg cfg = small_cfg();
    cfg.partition = "dirichlet:0.3"; /* uneven devices: the fairness view has a spread */
    cfg.per_round = 10;
    cfg.rounds = 5;
    cfg.eval_every = 2;
    sim_round r[5];
    CHECK_EQ_INT(run(&cfg, r, NULL), 0);
    for (int i = 0; i < 5; i++) {
        int evaluated = (i + 1) % 2 == 0 || i == 4; /* rounds 2 and 4, and the last */
        CHECK_EQ_INT(isfinite(r[i].test_accuracy), evaluated);
        CHECK_EQ_INT(isfinite(r[i].dev_acc_mean), evaluated);
        if (!evaluated) {
            CHECK(isnan(r[i].test_loss) && isnan(r[i].dev_acc_p10) && isnan(r[i].dev_acc_min));
            continue;
        }
        CHECK(r[i].test_accuracy >= 0 && r[i].test_accuracy <= 1);
        CHECK(isfinite(r[i].test_loss) && r[i].test_loss > 0);
        CHECK(r[i].dev_acc_min >= 0 && r[i].dev_acc_mean <= 1);
        CHECK(r[i].dev_acc_mean >= r[i].dev_acc_p10);
        CHECK(r[i].dev_acc_p10 >= r[i].dev_acc_min);
        CHECK(r[i].seconds > 0);
    }
    /* five rounds under label skew: better than chance (0.1) and than at round 2 */
    CHECK(r[4].test_accuracy > 0.15);
    CHECK(r[4].test_loss < r[1].test_loss);
    CHECK(r[4].dev_acc_mean > r[4].dev_acc_min);
    /* eval_every 0 evaluates the last round only */
    cfg.eval_every = 0;
    cfg.rounds = 2;
    CHECK_EQ_INT(run(&cfg, r, NULL), 0);
    CHECK(isnan(r[0].test_accuracy) && isfinite(r[1].test_accuracy));
}

/* sim_create must refuse cfg with `code` and a message containing `word`, and leave *out NULL. */
static int refuses(const sim_cfg *cfg, int code, const char *word)
{
    sim *s = (sim *)1;
    int rc = sim_create(cfg, g_model, g_train, g_test, &s);
    if (rc != code || s != NULL || !strstr(af_errmsg(), word)) {
        fprintf(stderr, "  expected %d mentioning '%s', got %d: %s\n", code, word, rc, af_errmsg());
        sim_free(rc == 0 ? s : NULL);
        return 0;
    }
    return 1;
}

TEST(sim_refuses_bad_configs_with_a_message)
{
    CHECK_EQ_INT(setup(), 0);
    sim_cfg c = small_cfg();
    c.clients = N_TRAIN + 1;
    CHECK(refuses(&c, AF_ERANGE, "more devices than"));
    c = small_cfg();
    c.partition = "dirichlet:0";
    CHECK(refuses(&c, AF_ERANGE, "dirichlet"));
    c.partition = "dirichlet:-1";
    CHECK(refuses(&c, AF_ERANGE, "dirichlet"));
    c.partition = "labels:11";
    CHECK(refuses(&c, AF_ERANGE, "labels"));
    c.partition = "zipf:2";
    CHECK(refuses(&c, AF_EINVAL, "zipf"));
    c = small_cfg();
    c.strategy = "fedfoo";
    CHECK(refuses(&c, AF_EINVAL, "fedfoo"));
    c.strategy = "fedprox";
    c.strategy_opts = "nu=1";
    CHECK(refuses(&c, AF_EINVAL, "nu"));
    c.strategy_opts = "mu=-1";
    CHECK(refuses(&c, AF_ERANGE, "mu"));
    c = small_cfg();
    c.per_round = 0;
    c.frac = 0;
    CHECK(refuses(&c, AF_ERANGE, "--frac"));
    c.frac = 1.5;
    CHECK(refuses(&c, AF_ERANGE, "--frac"));
    c.frac = NAN;
    CHECK(refuses(&c, AF_ERANGE, "--frac"));
    c = small_cfg();
    c.per_round = c.clients + 1;
    CHECK(refuses(&c, AF_ERANGE, "--per-round"));
    c = small_cfg();
    c.dropout = 1.0;
    CHECK(refuses(&c, AF_ERANGE, "--dropout"));
    c = small_cfg();
    c.threads = 0;
    CHECK(refuses(&c, AF_ERANGE, "--threads"));
    c = small_cfg();
    c.batch = 0;
    CHECK(refuses(&c, AF_ERANGE, "--batch"));
    c = small_cfg();
    c.rounds = 0;
    CHECK(refuses(&c, AF_ERANGE, "--rounds"));
    /* frac exactly 1 is fine: every device every round */
    c = small_cfg();
    c.per_round = 0;
    c.frac = 1.0;
    c.rounds = 1;
    c.eval_every = 0;
    sim_round r;
    CHECK_EQ_INT(run(&c, &r, NULL), 0);
    CHECK_EQ_INT(r.selected, c.clients);
}
