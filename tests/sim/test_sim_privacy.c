/* test_sim_privacy.c — DP-FedAvg and secure aggregation inside the simulation (sim/privacy.c),
 * on the first 2,000 Fashion-MNIST training images and 1,000 test images.
 *
 * Secure aggregation must not change learning beyond fixed-point rounding (same curve, same
 * weights to ~1e-5); DP noise must have exactly the documented size (central: z·S/m per
 * coordinate of the average; split across devices: z·S·sqrt(reports/t)/m); ε per round must
 * be what the accountant gives for q = per_round/clients; a target ε stops the run before the
 * round that would exceed it; bad combinations are refused.
 */
#include "../test.h"
#include "simtest.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "data/dataset.h"
#include "fed/accountant.h"
#include "nn/model.h"
#include "sim/sim.h"

#define N_TRAIN 2000
#define N_TEST 1000
#define MAX_ROUNDS 8

static data_dataset *g_train, *g_test;
static nn_model *g_model;

static int setup(void)
{
    return simtest_load("test_sim_privacy", N_TRAIN, N_TEST, &g_train, &g_test, &g_model);
}

static sim_cfg small_cfg(void)
{
    sim_cfg c;
    sim_cfg_defaults(&c);
    c.clients = 20;
    c.per_round = 6;
    c.rounds = 3;
    c.seed = 3;
    return c;
}

/* Runs up to cfg->rounds rounds (stopping when the budget says so) into rounds[]; *ran gets
 * the number run; params (may be NULL) the final weights. 0 or AF_E*. */
static int run(const sim_cfg *cfg, sim_round *rounds, int *ran, float *params)
{
    return simtest_run(cfg, g_model, g_train, g_test, rounds, ran, params);
}

/* std of a − b over the parameters */
static double diff_std(const float *a, const float *b)
{
    double s = 0, s2 = 0;
    size_t n = g_model->n_params;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        s += d;
        s2 += d * d;
    }
    return sqrt(s2 / n - (s / n) * (s / n));
}

static double max_abs_diff(const float *a, const float *b)
{
    double m = 0;
    for (size_t i = 0; i < g_model->n_params; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

TEST(sim_secagg_learning_curve_matches_plain)
{
    CHECK(setup() == 0);
    const size_t n = g_model->n_params;
    float *p0 = malloc(sizeof(float) * n), *p1 = malloc(sizeof(float) * n);
    sim_round a[MAX_ROUNDS], b[MAX_ROUNDS];
    for (int drop = 0; drop <= 1; drop++) {
        sim_cfg c = small_cfg();
        if (drop) { /* seed 7 drops 2, 1, 1 of the 6 (the same in both runs); t = 4 survive */
            c.dropout = 0.2;
            c.seed = 7;
        }
        int ran;
        CHECK_EQ_INT(run(&c, a, &ran, p0), 0);
        c.secagg = 1;
        CHECK_MSG(run(&c, b, &ran, p1) == 0, "%s", af_errmsg());
        CHECK_EQ_INT(ran, 3);
        int dropped = 0;
        for (int r = 0; r < 3; r++) {
            CHECK(!b[r].secagg_abandoned);
            CHECK_EQ_INT(b[r].reported, a[r].reported);
            CHECK_EQ_INT(b[r].secagg_clamped, 0);
            CHECK_NEAR(b[r].test_accuracy, a[r].test_accuracy, 0.01);
            CHECK_NEAR(b[r].test_loss, a[r].test_loss, 1e-3);
            CHECK(isnan(b[r].epsilon)); /* no DP, no ε */
            CHECK(b[r].bytes_up > a[r].bytes_up); /* the protocol's extra messages are counted */
            dropped += b[r].dropped;
        }
        if (drop)
            CHECK(dropped > 0); /* unmasking of dropped devices was exercised */
        CHECK_MSG(max_abs_diff(p0, p1) < 1e-4, "weights differ by %g", max_abs_diff(p0, p1));
    }
    free(p0);
    free(p1);
}

TEST(sim_dp_noise_has_the_documented_size)
{
    CHECK(setup() == 0);
    const size_t n = g_model->n_params;
    float *clip_only = malloc(sizeof(float) * n), *noisy = malloc(sizeof(float) * n),
          *again = malloc(sizeof(float) * n), *plain = malloc(sizeof(float) * n);
    sim_round R[MAX_ROUNDS];
    sim_cfg c = small_cfg();
    c.rounds = 1;
    CHECK_EQ_INT(run(&c, R, NULL, plain), 0);
    c.dp_clip = 0.05; /* below the updates' norms: clipping binds */
    CHECK_EQ_INT(run(&c, R, NULL, clip_only), 0);
    CHECK(isinf(R[0].epsilon)); /* clipping without noise: no finite guarantee */
    CHECK(max_abs_diff(plain, clip_only) > 1e-6); /* clipped, weight-1 average differs */
    c.dp_noise = 1.0;
    CHECK_EQ_INT(run(&c, R, NULL, noisy), 0);
    CHECK_EQ_INT(run(&c, R, NULL, again), 0);
    CHECK(memcmp(noisy, again, sizeof(float) * n) == 0); /* seeded: reproducible */
    /* central noise on the average: std z·S/m per coordinate (fixed denominator m = 6) */
    double want = 1.0 * 0.05 / 6, got = diff_std(noisy, clip_only);
    CHECK_MSG(fabs(got / want - 1) < 0.02, "noise std %g, expected %g", got, want);
    /* secure aggregation + DP: each report adds σ = z·S/sqrt(t), t = 4 of 6 */
    c.secagg = 1;
    c.dp_noise = 0;
    CHECK_EQ_INT(run(&c, R, NULL, clip_only), 0);
    c.dp_noise = 1.0;
    CHECK_EQ_INT(run(&c, R, NULL, noisy), 0);
    CHECK_EQ_INT(R[0].reported, 6);
    want = 0.05 * sqrt(6.0 / 4.0) / 6;
    got = diff_std(noisy, clip_only);
    CHECK_MSG(fabs(got / want - 1) < 0.02, "split noise std %g, expected %g", got, want);
    CHECK_EQ_INT(R[0].secagg_clamped, 0);
    free(clip_only);
    free(noisy);
    free(again);
    free(plain);
}

TEST(sim_epsilon_grows_and_matches_the_accountant)
{
    CHECK(setup() == 0);
    sim_round R[MAX_ROUNDS];
    sim_cfg c = small_cfg();
    c.rounds = 4;
    c.eval_every = 0;
    c.dp_clip = 1.0;
    c.dp_noise = 1.1;
    c.dp_delta = 1e-4;
    int ran;
    CHECK_EQ_INT(run(&c, R, &ran, NULL), 0);
    CHECK_EQ_INT(ran, 4);
    acct a;
    CHECK_EQ_INT(acct_init(&a, NULL, 0), 0);
    for (int r = 0; r < 4; r++) {
        double e;
        CHECK_EQ_INT(acct_step(&a, 6.0 / 20.0, 1.1, 1), 0);
        CHECK_EQ_INT(acct_epsilon(&a, 1e-4, &e, NULL), 0);
        CHECK_NEAR(R[r].epsilon, e, 1e-12);
        CHECK(r == 0 || R[r].epsilon > R[r - 1].epsilon);
        CHECK(R[r].dp_clip == 1.0);
        CHECK(!R[r].budget_exhausted);
    }
    /* default δ = min(1e-5, 0.1/clients) */
    c.dp_delta = 0;
    c.rounds = 1;
    CHECK_EQ_INT(run(&c, R, &ran, NULL), 0);
    double e;
    CHECK_EQ_INT(acct_init(&a, NULL, 0), 0);
    CHECK_EQ_INT(acct_step(&a, 0.3, 1.1, 1), 0);
    CHECK_EQ_INT(acct_epsilon(&a, 1e-5, &e, NULL), 0);
    CHECK_NEAR(R[0].epsilon, e, 1e-12);
}

TEST(sim_target_epsilon_stops_before_exceeding)
{
    CHECK(setup() == 0);
    sim_round R[MAX_ROUNDS];
    sim_cfg c = small_cfg();
    c.rounds = 8;
    c.eval_every = 100; /* evaluation only at the last round that runs */
    c.dp_clip = 1.0;
    c.dp_noise = 1.5;
    c.dp_delta = 1e-5;
    int64_t tmax;
    double target = 3.0;
    CHECK_EQ_INT(acct_max_steps(0.3, 1.5, 1e-5, target, NULL, 0, &tmax), 0);
    CHECK(tmax >= 2 && tmax < 8); /* the setting really stops early */
    c.dp_target_epsilon = target;
    int ran;
    CHECK_EQ_INT(run(&c, R, &ran, NULL), 0);
    CHECK_EQ_INT(ran, tmax);
    CHECK(R[ran - 1].epsilon <= target);
    CHECK(R[ran - 1].budget_exhausted);
    CHECK(isfinite(R[ran - 1].test_accuracy)); /* the last round is evaluated */
    for (int r = 0; r < ran - 1; r++) {
        CHECK(!R[r].budget_exhausted);
        CHECK(isnan(R[r].test_accuracy));
    }
    /* running a round past the budget is refused */
    sim *s;
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), 0);
    for (int r = 1; r <= ran; r++)
        CHECK_EQ_INT(sim_run_round(s, r, &R[0]), 0);
    double next;
    CHECK_EQ_INT(sim_budget_allows(s, &next), 0);
    CHECK(next > target);
    CHECK_EQ_INT(sim_run_round(s, ran + 1, &R[0]), AF_ESTATE);
    CHECK(strstr(af_errmsg(), "privacy budget"));
    sim_free(s);
}

TEST(sim_secagg_below_threshold_leaves_the_model_unchanged)
{
    CHECK(setup() == 0);
    sim_round R[MAX_ROUNDS];
    sim_cfg c = small_cfg();
    c.rounds = 6;
    c.secagg = 1;
    c.secagg_threshold = 6; /* every selected device must survive */
    c.dropout = 0.15;
    sim *s;
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), 0);
    const size_t n = g_model->n_params;
    float *before = malloc(sizeof(float) * n);
    int abandoned = 0, applied = 0;
    for (int r = 1; r <= c.rounds; r++) {
        memcpy(before, sim_model(s)->params, sizeof(float) * n);
        CHECK_EQ_INT(sim_run_round(s, r, &R[0]), 0);
        int same = memcmp(before, sim_model(s)->params, sizeof(float) * n) == 0;
        CHECK_EQ_INT(R[0].secagg_abandoned, R[0].dropped > 0);
        CHECK_EQ_INT(same, R[0].secagg_abandoned);
        abandoned += R[0].secagg_abandoned;
        applied += !R[0].secagg_abandoned;
    }
    CHECK(abandoned > 0 && applied > 0); /* both cases happened */
    free(before);
    sim_free(s);
}

TEST(sim_adaptive_clip_shrinks_a_too_large_clip)
{
    CHECK(setup() == 0);
    sim_round R[MAX_ROUNDS];
    for (int sa = 0; sa <= 1; sa++) {
        sim_cfg c = small_cfg();
        c.rounds = 4;
        c.eval_every = 0;
        c.dp_clip = 100.0; /* far above every update's norm: all unclipped, b̄ ≈ 1 */
        c.dp_adaptive_quantile = 0.5; /* no update noise: the clip's path is then clear */
        c.secagg = sa;
        int ran;
        CHECK_MSG(run(&c, R, &ran, NULL) == 0, "%s", af_errmsg());
        CHECK(R[0].dp_clip == 100.0);
        for (int r = 1; r < 4; r++) /* C ← C·exp(−0.2·(b̄ − ½)), b̄ near 1: about ×0.9 */
            CHECK_MSG(R[r].dp_clip < R[r - 1].dp_clip * 0.97 && R[r].dp_clip > R[r - 1].dp_clip * 0.8,
                      "secagg %d round %d: clip %g after %g", sa, r + 1, R[r].dp_clip, R[r - 1].dp_clip);
    }
}

TEST(sim_privacy_options_checked)
{
    CHECK(setup() == 0);
    sim *s = NULL;
    sim_cfg c = small_cfg();
    c.dp_noise = 1.0; /* without a clip */
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "--dp-clip"));
    c = small_cfg();
    c.dp_clip = -1;
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), AF_ERANGE);
    c = small_cfg();
    c.secagg = 1;
    c.secagg_threshold = 3; /* not a majority of 6 */
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), AF_ERANGE);
    CHECK(strstr(af_errmsg(), "--secagg-threshold"));
    c.secagg_threshold = 7;
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), AF_ERANGE);
    c = small_cfg();
    c.secagg_threshold = 4; /* without --secagg */
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), AF_EINVAL);
    c = small_cfg();
    c.secagg = 1;
    c.strategy = "scaffold";
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "scaffold"));
    c = small_cfg();
    c.dp_clip = 1;
    c.dp_noise = 2.0;
    c.dp_adaptive_quantile = 0.5; /* σ_b = 6/20 = 0.3: needs z < 0.6 */
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), AF_ERANGE);
    c = small_cfg();
    c.dp_clip = 1;
    c.dp_delta = 1.0;
    CHECK_EQ_INT(sim_create(&c, g_model, g_train, g_test, &s), AF_ERANGE);
    CHECK(s == NULL);
    /* other strategies work with secagg (the mean enters them like the plain mean) */
    sim_round R[MAX_ROUNDS];
    c = small_cfg();
    c.rounds = 1;
    c.strategy = "fedadam";
    c.secagg = 1;
    CHECK_MSG(run(&c, R, NULL, NULL) == 0, "%s", af_errmsg());
}
