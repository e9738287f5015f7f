/* test_strategy.c — tests for fed/strategy: each server rule against numbers worked out by
 * hand from its formula, exact (split- and order-independent) accumulation, the client-side
 * helpers, and refusal of bad names, options and updates. */
#include "../test.h"

#include "core/err.h"
#include "core/rng.h"
#include "fed/strategy.h"

#include <stdlib.h>
#include <string.h>

/* Two devices, three parameters, used by the hand-worked examples:
 *   A: delta (0.1, −0.2, 0),   weight 1
 *   B: delta (0.3,  0.2, 0.5), weight 3
 *   weighted mean d = (1·A + 3·B)/4 = (0.25, 0.1, 0.375) */
static const float DA[3] = {0.1f, -0.2f, 0.0f}, DB[3] = {0.3f, 0.2f, 0.5f};

static int round_ab(fed_strategy *s, float *w)
{
    fed_agg *a;
    int rc = fed_agg_create(s, &a);
    if (rc < 0)
        return rc;
    if ((rc = fed_agg_add(a, DA, 1.0, NULL)) == 0 && (rc = fed_agg_add(a, DB, 3.0, NULL)) == 0)
        rc = fed_strategy_apply(s, a, w);
    fed_agg_free(a);
    return rc;
}

TEST(strategy_fedavg_is_weighted_mean)
{
    fed_strategy *s;
    CHECK(fed_strategy_create("fedavg", NULL, 3, &s) == 0);
    float w[3] = {1, 2, 3};
    CHECK(round_ab(s, w) == 0);
    float want[3] = {1.25f, 2.1f, 3.375f};
    CHECK_ALLCLOSE(w, want, 3, 0, 1e-6);
    fed_strategy_free(s);
    /* server learning rate scales the step */
    CHECK(fed_strategy_create("fedavg", "eta=0.5", 3, &s) == 0);
    float w2[3] = {1, 2, 3}, want2[3] = {1.125f, 2.05f, 3.1875f};
    CHECK(round_ab(s, w2) == 0);
    CHECK_ALLCLOSE(w2, want2, 3, 0, 1e-6);
    fed_strategy_free(s);
}

TEST(strategy_agg_mean_count_weight)
{
    fed_strategy *s;
    fed_agg *a;
    CHECK(fed_strategy_create("fedavg", "", 3, &s) == 0);
    CHECK(fed_agg_create(s, &a) == 0);
    float mean[3];
    CHECK(fed_agg_mean(a, mean) == AF_ESTATE);
    CHECK(fed_agg_add(a, DA, 1.0, NULL) == 0);
    CHECK(fed_agg_add(a, DB, 3.0, NULL) == 0);
    CHECK(fed_agg_mean(a, mean) == 0);
    float want[3] = {0.25f, 0.1f, 0.375f};
    CHECK_ALLCLOSE(mean, want, 3, 0, 1e-7);
    CHECK_EQ_INT(fed_agg_count(a), 2);
    CHECK_NEAR(fed_agg_weight(a), 4.0, 0);
    fed_agg_reset(a);
    CHECK_EQ_INT(fed_agg_count(a), 0);
    CHECK_NEAR(fed_agg_weight(a), 0.0, 0);
    fed_agg_free(a);
    fed_strategy_free(s);
}

TEST(strategy_sums_exactly)
{
    /* 1e18 + 1 − 1e18 in double is 0; the fixed-point sum keeps the 1 */
    fed_strategy *s;
    fed_agg *a;
    CHECK(fed_strategy_create("fedavg", NULL, 2, &s) == 0);
    CHECK(fed_agg_create(s, &a) == 0);
    float d1[2] = {1e18f, 1e-20f}, d2[2] = {1.0f, 0.0f}, d3[2] = {-1e18f, -1e-20f};
    CHECK(fed_agg_add(a, d1, 1, NULL) == 0);
    CHECK(fed_agg_add(a, d2, 1, NULL) == 0);
    CHECK(fed_agg_add(a, d3, 1, NULL) == 0);
    float mean[2];
    CHECK(fed_agg_mean(a, mean) == 0);
    CHECK_NEAR(mean[0], 1.0 / 3.0, 1e-7);
    CHECK_NEAR(mean[1], 0.0, 0);
    /* negative sums and tiny terms survive too */
    fed_agg_reset(a);
    float e1[2] = {-3.0f, 1e-12f}, e2[2] = {-5.0f, 3e-12f};
    CHECK(fed_agg_add(a, e1, 2, NULL) == 0);
    CHECK(fed_agg_add(a, e2, 2, NULL) == 0);
    CHECK(fed_agg_mean(a, mean) == 0);
    CHECK_NEAR(mean[0], -4.0, 0);
    CHECK_NEAR(mean[1], 2e-12, 1e-18);
    fed_agg_free(a);
    fed_strategy_free(s);
}

/* Random updates with a wide range of magnitudes, like real deltas of different layers. */
#define NP 777
#define ND 41
static float g_delta[ND][NP];
static double g_weight[ND];
static void make_updates(void)
{
    af_rng r;
    af_rng_seed(&r, 123, 0);
    for (int k = 0; k < ND; k++) {
        g_weight[k] = 1 + af_rng_below(&r, 600);
        for (int i = 0; i < NP; i++)
            g_delta[k][i] = (float)(af_rng_normal(&r) * pow(10.0, -6.0 + 6.0 * af_rng_uniform(&r)));
    }
}

TEST(strategy_merge_of_split_accumulators_is_bitwise_equal)
{
    make_updates();
    const char *names[] = {"fedavg", "fedadam", "fedyogi", "fedavgm"};
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) {
        fed_strategy *s1, *s2;
        CHECK(fed_strategy_create(names[t], NULL, NP, &s1) == 0);
        CHECK(fed_strategy_create(names[t], NULL, NP, &s2) == 0);
        fed_agg *one, *part[3];
        CHECK(fed_agg_create(s1, &one) == 0);
        for (int j = 0; j < 3; j++)
            CHECK(fed_agg_create(s2, &part[j]) == 0);
        /* one accumulator, canonical order; three partials fed a shuffled order, merged
         * in yet another order */
        uint32_t perm[ND];
        for (int k = 0; k < ND; k++) {
            perm[k] = (uint32_t)k;
            CHECK(fed_agg_add(one, g_delta[k], g_weight[k], NULL) == 0);
        }
        af_rng r;
        af_rng_seed(&r, 5 + t, 1);
        af_rng_shuffle_u32(&r, perm, ND);
        for (int k = 0; k < ND; k++)
            CHECK(fed_agg_add(part[perm[k] % 3], g_delta[perm[k]], g_weight[perm[k]], NULL) == 0);
        CHECK(fed_agg_merge(part[2], part[0]) == 0);
        CHECK(fed_agg_merge(part[2], part[1]) == 0);
        CHECK_EQ_INT(fed_agg_count(part[2]), ND);
        float w1[NP], w2[NP];
        for (int i = 0; i < NP; i++)
            w1[i] = w2[i] = (float)i * 1e-3f;
        for (int round = 0; round < 2; round++) { /* twice: the state must agree too */
            CHECK(fed_strategy_apply(s1, one, w1) == 0);
            CHECK(fed_strategy_apply(s2, part[2], w2) == 0);
        }
        CHECK_MSG(!memcmp(w1, w2, sizeof w1), "%s: split sum differs", names[t]);
        /* and it is the weighted mean, to double precision before the final rounding */
        if (t == 0) {
            float m[NP];
            CHECK(fed_agg_mean(one, m) == 0);
            for (int i = 0; i < NP; i++) {
                double num = 0, den = 0;
                for (int k = 0; k < ND; k++) {
                    num += g_weight[k] * g_delta[k][i];
                    den += g_weight[k];
                }
                CHECK_NEAR(m[i], num / den, 1e-6 * fabs(num / den) + 1e-30);
            }
        }
        fed_agg_free(one);
        for (int j = 0; j < 3; j++)
            fed_agg_free(part[j]);
        fed_strategy_free(s1);
        fed_strategy_free(s2);
    }
}

TEST(strategy_agg_block_travels_as_bytes)
{
    /* what an MPI rank does: send a partial's block, receive into an identical accumulator */
    make_updates();
    fed_strategy *s;
    CHECK(fed_strategy_create("fedavg", NULL, NP, &s) == 0);
    fed_agg *a, *b, *rx, *all;
    CHECK(fed_agg_create(s, &a) == 0 && fed_agg_create(s, &b) == 0);
    CHECK(fed_agg_create(s, &rx) == 0 && fed_agg_create(s, &all) == 0);
    for (int k = 0; k < ND; k++) {
        CHECK(fed_agg_add(k < 10 ? a : b, g_delta[k], g_weight[k], NULL) == 0);
        CHECK(fed_agg_add(all, g_delta[k], g_weight[k], NULL) == 0);
    }
    size_t nb, nrx;
    void *src = fed_agg_data(b, &nb);
    void *dst = fed_agg_data(rx, &nrx);
    CHECK(nb == nrx);
    memcpy(dst, src, nb);
    CHECK(fed_agg_merge(a, rx) == 0);
    size_t n1, n2;
    const void *merged = fed_agg_data(a, &n1), *direct = fed_agg_data(all, &n2);
    CHECK(n1 == n2 && !memcmp(merged, direct, n1));
    fed_agg_free(a);
    fed_agg_free(b);
    fed_agg_free(rx);
    fed_agg_free(all);
    fed_strategy_free(s);
}

TEST(strategy_fedavgm_beta0_is_fedavg_and_momentum_accumulates)
{
    make_updates();
    fed_strategy *avg, *m0;
    CHECK(fed_strategy_create("fedavg", NULL, NP, &avg) == 0);
    CHECK(fed_strategy_create("fedavgm", "beta=0", NP, &m0) == 0);
    fed_agg *a;
    CHECK(fed_agg_create(avg, &a) == 0);
    for (int k = 0; k < ND; k++)
        CHECK(fed_agg_add(a, g_delta[k], g_weight[k], NULL) == 0);
    fed_agg *b;
    CHECK(fed_agg_create(m0, &b) == 0);
    for (int k = 0; k < ND; k++)
        CHECK(fed_agg_add(b, g_delta[k], g_weight[k], NULL) == 0);
    float w1[NP] = {0}, w2[NP] = {0};
    for (int r = 0; r < 3; r++) {
        CHECK(fed_strategy_apply(avg, a, w1) == 0);
        CHECK(fed_strategy_apply(m0, b, w2) == 0);
    }
    CHECK_ALLCLOSE(w2, w1, NP, 1e-6, 1e-12);
    fed_agg_free(a);
    fed_agg_free(b);
    fed_strategy_free(avg);
    fed_strategy_free(m0);

    /* beta 0.9, eta 1: u1 = d, x1 = x0 + d; u2 = 0.9·d + d, x2 = x1 + 1.9·d */
    fed_strategy *s;
    CHECK(fed_strategy_create("fedavgm", NULL, 3, &s) == 0);
    float w[3] = {1, 2, 3};
    CHECK(round_ab(s, w) == 0);
    CHECK(round_ab(s, w) == 0);
    float want[3] = {1 + 2.9f * 0.25f, 2 + 2.9f * 0.1f, 3 + 2.9f * 0.375f};
    CHECK_ALLCLOSE(w, want, 3, 0, 1e-6);
    size_t ns;
    float *u = fed_strategy_state(s, &ns);
    CHECK_EQ_INT(ns, 3);
    CHECK_NEAR(u[0], 1.9 * 0.25, 1e-7);
    fed_strategy_free(s);
}

/* Expected values below are the formulas of Reddi et al. 2021, Algorithm 2, evaluated by hand
 * (in double) for d = (0.25, 0.1, 0.375), x0 = (1, 2, 3), eta 0.01, beta1 0.9, beta2 0.99,
 * tau 0.001, m_{-1} = 0, v_{-1} = tau² = 1e-6, two rounds with the same d:
 *   m1 = 0.1·d = (0.025, 0.01, 0.0375)               m2 = 0.19·d = (0.0475, 0.019, 0.07125)
 *   Adam:    v1 = 0.99e-6 + 0.01·d² = (6.2599e-4, 1.0099e-4, 1.40724e-3)
 *            x1 = x0 + 0.01·m1/(√v1 + 0.001) = (1.009608071, 2.009050283, 3.009736922)
 *            v2 = 0.99·v1 + 0.01·d² = (1.2447301e-3, 1.999801e-4, 2.7994176e-3)
 *            x2 = (1.022700419, 2.021598634, 3.022953511)
 *   Yogi:    v1 = v0 − 0.01·d²·sign(v0 − d²) = v0 + 0.01·d² = (6.26e-4, 1.01e-4, 1.40725e-3)
 *            x1 = (1.009607997, 2.009049876, 3.009736888)
 *            v2 = v1 + 0.01·d² (v1 < d² still) = (1.251e-3, 2.01e-4, 2.8135e-3)
 *            x2 = (1.022668399, 2.021568450, 3.022920972)
 *   Adagrad: v1 = v0 + d² = (0.062501, 0.010001, 0.140626)
 *            x1 = (1.000996008, 2.000990050, 3.000997337)
 *            v2 = v1 + d² = (0.125001, 0.020001, 0.281251)
 *            x2 = (1.002335716, 2.002324086, 3.002338309) */
TEST(strategy_fedadam_yogi_adagrad_hand_worked)
{
    static const struct {
        const char *name;
        float x1[3], x2[3], v2[3];
    } cases[] = {
        {"fedadam",
         {1.009608071f, 2.009050283f, 3.009736922f},
         {1.022700419f, 2.021598634f, 3.022953511f},
         {1.2447301e-3f, 1.999801e-4f, 2.7994176e-3f}},
        {"fedyogi",
         {1.009607997f, 2.009049876f, 3.009736888f},
         {1.022668399f, 2.021568450f, 3.022920972f},
         {1.251e-3f, 2.01e-4f, 2.8135e-3f}},
        {"fedadagrad",
         {1.000996008f, 2.000990050f, 3.000997337f},
         {1.002335716f, 2.002324086f, 3.002338309f},
         {0.125001f, 0.020001f, 0.281251f}},
    };
    for (size_t c = 0; c < 3; c++) {
        fed_strategy *s;
        CHECK(fed_strategy_create(cases[c].name, NULL, 3, &s) == 0);
        size_t ns;
        float *st = fed_strategy_state(s, &ns);
        CHECK_EQ_INT(ns, 6);
        CHECK_NEAR(st[3], 1e-6, 1e-12); /* v_{-1} = tau² */
        float w[3] = {1, 2, 3};
        CHECK(round_ab(s, w) == 0);
        CHECK_ALLCLOSE(w, cases[c].x1, 3, 0, 2e-6);
        CHECK(round_ab(s, w) == 0);
        CHECK_ALLCLOSE(w, cases[c].x2, 3, 0, 2e-6);
        float m2[3] = {0.0475f, 0.019f, 0.07125f};
        CHECK_ALLCLOSE(st, m2, 3, 1e-5, 0);
        CHECK_ALLCLOSE(st + 3, cases[c].v2, 3, 1e-5, 0);
        fed_strategy_free(s);
    }
    /* options reach the update: beta1 = 0, beta2 = 0, tiny tau make Adam a sign step */
    fed_strategy *s;
    CHECK(fed_strategy_create("fedadam", "eta=0.5,beta1=0,beta2=0,tau=1e-9", 3, &s) == 0);
    float w[3] = {1, 2, 3}, want[3] = {1.5f, 2.5f, 3.5f};
    CHECK(round_ab(s, w) == 0);
    CHECK_ALLCLOSE(w, want, 3, 0, 1e-5);
    fed_strategy_free(s);
}

TEST(strategy_fedprox_server_is_fedavg_and_client_grad)
{
    fed_strategy *s;
    CHECK(fed_strategy_create("fedprox", "mu=0.1", 3, &s) == 0);
    CHECK_NEAR(fed_strategy_mu(s), 0.1, 0);
    float w[3] = {1, 2, 3}, want[3] = {1.25f, 2.1f, 3.375f};
    CHECK(round_ab(s, w) == 0);
    CHECK_ALLCLOSE(w, want, 3, 0, 1e-6);
    fed_strategy_free(s);
    CHECK(fed_strategy_create("fedprox", NULL, 3, &s) == 0);
    CHECK_NEAR(fed_strategy_mu(s), 0.01, 0);
    fed_strategy_free(s);
    CHECK(fed_strategy_create("fedavg", NULL, 3, &s) == 0);
    CHECK_NEAR(fed_strategy_mu(s), 0.0, 0);
    CHECK(fed_strategy_control(s) == NULL);
    fed_strategy_free(s);
    /* grad + mu·(w − w_global) */
    float g[3] = {1, -1, 0}, wl[3] = {2, 0, 5}, wg[3] = {1.5f, 1, 5};
    fed_prox_grad(g, wl, wg, 3, 0.1f);
    float gw[3] = {1.05f, -1.1f, 0};
    CHECK_ALLCLOSE(g, gw, 3, 0, 1e-7);
}

TEST(strategy_fednova_equal_tau_is_fedavg_and_normalises)
{
    make_updates();
    fed_strategy *avg, *nova;
    CHECK(fed_strategy_create("fedavg", NULL, NP, &avg) == 0);
    CHECK(fed_strategy_create("fednova", NULL, NP, &nova) == 0);
    fed_agg *a, *b;
    CHECK(fed_agg_create(avg, &a) == 0 && fed_agg_create(nova, &b) == 0);
    fed_extra ex = {.tau = 7};
    for (int k = 0; k < ND; k++) {
        CHECK(fed_agg_add(a, g_delta[k], g_weight[k], NULL) == 0);
        CHECK(fed_agg_add(b, g_delta[k], g_weight[k], &ex) == 0);
    }
    float w1[NP] = {0}, w2[NP] = {0};
    CHECK(fed_strategy_apply(avg, a, w1) == 0);
    CHECK(fed_strategy_apply(nova, b, w2) == 0);
    CHECK_ALLCLOSE(w2, w1, NP, 1e-6, 1e-12);
    fed_agg_free(a);
    fed_agg_free(b);
    fed_strategy_free(avg);
    fed_strategy_free(nova);

    /* two devices, equal weight: delta 1 after 1 step, delta 2 after 4 steps.
     * p = ½ each; Σ p·delta/tau = ½·1 + ½·0.5 = 0.75; tau_eff = 2.5; step 1.875 (FedAvg: 1.5) */
    fed_strategy *s;
    CHECK(fed_strategy_create("fednova", NULL, 1, &s) == 0);
    CHECK(fed_agg_create(s, &a) == 0);
    float d1 = 1, d2 = 2, w = 0;
    fed_extra e1 = {.tau = 1}, e4 = {.tau = 4};
    CHECK(fed_agg_add(a, &d1, 10, &e1) == 0);
    CHECK(fed_agg_add(a, &d2, 10, &e4) == 0);
    CHECK(fed_agg_add(a, &d2, 10, NULL) == AF_EINVAL); /* tau is required */
    CHECK(fed_strategy_apply(s, a, &w) == 0);
    CHECK_NEAR(w, 1.875, 1e-7);
    fed_agg_free(a);
    fed_strategy_free(s);

    CHECK_NEAR(fed_nova_tau(5, 0), 5, 0);
    CHECK_NEAR(fed_nova_tau(1, 0.9), 1, 1e-12);
    CHECK_NEAR(fed_nova_tau(2, 0.9), 2.9, 1e-12); /* a = (1 + rho, 1) */
}

TEST(strategy_scaffold_server_and_client_rules)
{
    fed_strategy *s;
    CHECK(fed_strategy_create("scaffold", "clients=10", 2, &s) == 0);
    const float *c = fed_strategy_control(s);
    CHECK(c && c[0] == 0 && c[1] == 0);
    fed_agg *a;
    CHECK(fed_agg_create(s, &a) == 0);
    float dy1[2] = {1, 0}, dy2[2] = {0, 4}, dc1[2] = {1, 2}, dc2[2] = {3, -2};
    fed_extra e1 = {.delta_c = dc1}, e2 = {.delta_c = dc2};
    CHECK(fed_agg_add(a, dy1, 1, NULL) == AF_EINVAL); /* delta_c is required */
    CHECK(strstr(af_errmsg(), "delta_c"));
    CHECK(fed_agg_add(a, dy1, 1, &e1) == 0);
    CHECK(fed_agg_add(a, dy2, 3, &e2) == 0);
    float w[2] = {0, 0};
    CHECK(fed_strategy_apply(s, a, w) == 0);
    /* x += mean(Δy) (weights 1, 3) = (0.25, 3); c += (1/N)·ΣΔc = (4, 0)/10 */
    CHECK_NEAR(w[0], 0.25, 1e-7);
    CHECK_NEAR(w[1], 3.0, 1e-7);
    CHECK_NEAR(c[0], 0.4, 1e-7);
    CHECK_NEAR(c[1], 0.0, 1e-7);
    fed_agg_free(a);
    fed_strategy_free(s);

    /* corrected gradient g + c − c_i */
    float g[2] = {1, 1}, cg[2] = {0.5f, 0}, cl[2] = {0.25f, 1};
    fed_scaffold_correct_grad(g, cg, cl, 2);
    CHECK_NEAR(g[0], 1.25, 1e-7);
    CHECK_NEAR(g[1], 0.0, 1e-7);
    /* option II: c_i+ = c_i − c + (x − y_i)/(K·lr) = 0.5 − 0.2 + (1 − 0.8)/(4·0.1) = 0.8 */
    float ci = 0.5f, cgl = 0.2f, x = 1.0f, y = 0.8f, dc;
    fed_scaffold_update_control(&ci, &dc, &cgl, &x, &y, 1, 4, 0.1);
    CHECK_NEAR(ci, 0.8, 1e-6);
    CHECK_NEAR(dc, 0.3, 1e-6);
}

TEST(strategy_rejects_bad_names_and_options)
{
    static const struct {
        const char *name, *opts;
        size_t n;
        int code;
        const char *msg;
    } bad[] = {
        {"fedfoo", NULL, 3, AF_EINVAL, "unknown strategy 'fedfoo'"},
        {NULL, NULL, 3, AF_EINVAL, "unknown strategy"},
        {"FedAvg", NULL, 3, AF_EINVAL, "unknown strategy"},
        {"fedadam", "foo=1", 3, AF_EINVAL, "unknown option 'foo' (fedadam takes eta, beta1"},
        {"fedadagrad", "beta2=0.9", 3, AF_EINVAL, "unknown option 'beta2'"},
        {"fedavg", "mu=0.1", 3, AF_EINVAL, "unknown option 'mu'"},
        {"fedadam", "eta", 3, AF_EINVAL, "needs a value"},
        {"fedadam", "eta=abc", 3, AF_EINVAL, "eta='abc' is not a number"},
        {"fedadam", "eta=", 3, AF_EINVAL, "not a number"},
        {"fedadam", "eta=0.1x", 3, AF_EINVAL, "not a number"},
        {"fedadam", "eta=-1", 3, AF_ERANGE, "eta=-1 must be > 0"},
        {"fedadam", "eta=0", 3, AF_ERANGE, "must be > 0"},
        {"fedadam", "eta=inf", 3, AF_ERANGE, "must be > 0"},
        {"fedadam", "tau=0", 3, AF_ERANGE, "tau=0 must be > 0"},
        {"fedadam", "beta1=1", 3, AF_ERANGE, "beta1=1 must be in [0, 1)"},
        {"fedyogi", "beta2=-0.1", 3, AF_ERANGE, "in [0, 1)"},
        {"fedavgm", "beta=1.5", 3, AF_ERANGE, "beta=1.5 must be in [0, 1)"},
        {"fedprox", "mu=-0.1", 3, AF_ERANGE, "mu=-0.1 must be >= 0"},
        {"fedavg", "eta=1,eta=2", 3, AF_EINVAL, "given twice"},
        {"scaffold", NULL, 3, AF_EINVAL, "option 'clients' is required"},
        {"scaffold", "clients=2.5", 3, AF_EINVAL, "not a whole number"},
        {"scaffold", "clients=0", 3, AF_ERANGE, "clients=0 must be a whole number >= 1"},
        {"fedavg", NULL, 0, AF_EINVAL, "no parameters"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fed_strategy *s = (fed_strategy *)1;
        af_clearerr();
        int rc = fed_strategy_create(bad[i].name, bad[i].opts, bad[i].n, &s);
        CHECK_MSG(rc == bad[i].code, "%s '%s': rc %d want %d (%s)", bad[i].name, bad[i].opts, rc,
                  bad[i].code, af_errmsg());
        CHECK(s == NULL);
        CHECK_MSG(strstr(af_errmsg(), bad[i].msg), "%s '%s': '%s' lacks '%s'", bad[i].name,
                  bad[i].opts, af_errmsg(), bad[i].msg);
    }
    /* spaces and empty items are tolerated */
    fed_strategy *s;
    CHECK(fed_strategy_create("fedavgm", " eta = 0.5 , beta=0.5,", 3, &s) == 0);
    CHECK(!strcmp(fed_strategy_name(s), "fedavgm") && fed_strategy_kind_of(s) == FED_FEDAVGM);
    CHECK_EQ_INT(fed_strategy_n_params(s), 3);
    fed_strategy_free(s);
    fed_strategy_free(NULL);
    fed_agg_free(NULL);
}

TEST(strategy_refuses_bad_updates_and_folds_nothing)
{
    fed_strategy *s;
    fed_agg *a;
    CHECK(fed_strategy_create("fedavg", NULL, 3, &s) == 0);
    CHECK(fed_agg_create(s, &a) == 0);
    float w[3] = {1, 2, 3};
    CHECK(fed_strategy_apply(s, a, w) == AF_ESTATE); /* empty round changes nothing */
    CHECK(w[0] == 1 && w[1] == 2 && w[2] == 3);
    float nan_d[3] = {0.5f, NAN, 1.0f}, inf_d[3] = {0.5f, 1.0f, -INFINITY};
    CHECK(fed_agg_add(a, nan_d, 1, NULL) == AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "delta[1] is NaN"), "%s", af_errmsg());
    CHECK(fed_agg_add(a, inf_d, 1, NULL) == AF_EINVAL);
    CHECK(strstr(af_errmsg(), "delta[2] is infinite"));
    CHECK(fed_agg_add(a, DA, 0, NULL) == AF_EINVAL);
    CHECK(fed_agg_add(a, DA, -1, NULL) == AF_EINVAL);
    CHECK(fed_agg_add(a, DA, NAN, NULL) == AF_EINVAL);
    CHECK(fed_agg_add(a, DA, INFINITY, NULL) == AF_EINVAL);
    CHECK(fed_agg_add(a, NULL, 1, NULL) == AF_EINVAL);
    float huge[3] = {0, 0, 1e30f};
    CHECK(fed_agg_add(a, huge, 1, NULL) == AF_ERANGE);
    CHECK_EQ_INT(fed_agg_count(a), 0);
    CHECK_NEAR(fed_agg_weight(a), 0, 0);
    /* the refused updates left no trace: one good update gives exactly its own delta */
    CHECK(fed_agg_add(a, DB, 3, NULL) == 0);
    CHECK(fed_strategy_apply(s, a, w) == 0);
    float want[3] = {1.3f, 2.2f, 3.5f};
    CHECK_ALLCLOSE(w, want, 3, 0, 1e-6);

    /* shapes must agree */
    fed_strategy *s4, *adam;
    fed_agg *a4, *aa;
    CHECK(fed_strategy_create("fedavg", NULL, 4, &s4) == 0 && fed_agg_create(s4, &a4) == 0);
    CHECK(fed_strategy_create("fedadam", NULL, 3, &adam) == 0 && fed_agg_create(adam, &aa) == 0);
    CHECK(fed_agg_merge(a, a4) == AF_ESHAPE);
    CHECK(fed_agg_merge(a, aa) == AF_ESHAPE);
    CHECK(fed_strategy_apply(s4, a, w) == AF_ESHAPE);
    CHECK(fed_strategy_apply(adam, a, w) == AF_ESHAPE);

    /* scaffold: a bad delta_c is refused too */
    fed_strategy *sc;
    fed_agg *ac;
    CHECK(fed_strategy_create("scaffold", "clients=4", 3, &sc) == 0 && fed_agg_create(sc, &ac) == 0);
    fed_extra ex = {.delta_c = nan_d};
    CHECK(fed_agg_add(ac, DA, 1, &ex) == AF_EINVAL);
    CHECK_EQ_INT(fed_agg_count(ac), 0);

    fed_agg_free(a);
    fed_agg_free(a4);
    fed_agg_free(aa);
    fed_agg_free(ac);
    fed_strategy_free(s);
    fed_strategy_free(s4);
    fed_strategy_free(adam);
    fed_strategy_free(sc);
}

/* A value of every kind the fold converts: zero and −0, subnormal floats, terms below the
 * 2^-96 grid (they vanish, or leave a truncated tail), both signs, and terms just under the
 * 2^62 bound, so every shift and carry path of the vector fold is crossed. */
static float edgy(af_rng *r, double weight)
{
    switch (af_rng_below(r, 8)) {
    case 0:
        return af_rng_below(r, 2) ? 0.0f : -0.0f;
    case 1: /* subnormal floats */
        return (float)((af_rng_uniform(r) - 0.5) * 1e-39);
    case 2: /* w·x around the 2^-96 grid */
        return (float)((af_rng_uniform(r) - 0.5) * ldexp(1.0, -90 - (int)af_rng_below(r, 20)) / weight);
    case 3: /* w·x just under 2^62 */
        return (float)((af_rng_below(r, 2) ? 1 : -1) * ldexp(0.99, 61) / weight);
    case 4: /* powers of two: windows starting exactly at a limb boundary */
        return (float)((af_rng_below(r, 2) ? 1 : -1) * ldexp(1.0, (int)af_rng_below(r, 150) - 96) / weight);
    default: /* the usual deltas, many magnitudes */
        return (float)(af_rng_normal(r) * pow(10.0, -12.0 + 14.0 * af_rng_uniform(r)));
    }
}

TEST(strategy_vector_fold_is_bitwise_the_scalar_reference)
{
    /* sizes around the 8-lane vector width (the masked tail) and a CNN-sized one */
    static const size_t sizes[] = {1, 7, 8, 9, 17, 1003, 32998};
    const char *names[] = {"fedavg", "fednova", "scaffold"};
    const char *opts[] = {NULL, NULL, "clients=10"};
    af_rng r;
    af_rng_seed(&r, 99, 7);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *d = malloc(n * sizeof *d), *dc = malloc(n * sizeof *dc);
        CHECK(d && dc);
        for (int t = 0; t < 3; t++) {
            fed_strategy *s;
            fed_agg *fast, *ref;
            CHECK(fed_strategy_create(names[t], opts[t], n, &s) == 0);
            CHECK(fed_agg_create(s, &fast) == 0 && fed_agg_create(s, &ref) == 0);
            for (int k = 0; k < 12; k++) {
                double w = k == 0 ? 1.0 : 1 + (double)af_rng_below(&r, 5000) * 0.37;
                fed_extra ex = {.delta_c = dc, .tau = 1 + af_rng_uniform(&r) * 50};
                double scale = t == 1 ? ex.tau : 1.0; /* FedNova folds w·x/tau */
                for (size_t i = 0; i < n; i++) {
                    d[i] = (float)(edgy(&r, w) * scale);
                    dc[i] = edgy(&r, 1.0);
                }
                if (!(fabs((double)d[0]) < 1e30)) /* keep every term under the bound */
                    d[0] = 0;
                int rf = fed_agg_add(fast, d, w, &ex), rr = fed_agg_add_ref(ref, d, w, &ex);
                CHECK_EQ_INT(rf, rr);
            }
            size_t nf, nr;
            const void *bf = fed_agg_data(fast, &nf), *br = fed_agg_data(ref, &nr);
            CHECK(fed_agg_count(ref) > 0);
            CHECK_MSG(nf == nr && !memcmp(bf, br, nf), "%s n=%zu: the vector fold differs",
                      names[t], n);
            fed_agg_free(fast);
            fed_agg_free(ref);
            fed_strategy_free(s);
        }
        free(d);
        free(dc);
    }
}

/* Feeds x[0..n) to a as slices of random lengths (0 included) in a random order, through
 * fed_agg_add_slice (sign > 0) or fed_agg_sub_slice; returns the first nonzero rc. */
static int fold_in_slices(fed_agg *a, fed_agg_part part, const float *x, size_t n, double w,
                          const fed_extra *ex, af_rng *r, int sign)
{
    size_t *start = malloc((n + 2) * 2 * sizeof *start);
    uint32_t *order = malloc((n + 2) * 2 * sizeof *order);
    size_t k = 0;
    for (size_t off = 0; off <= n;) { /* slice k covers [start[k], start[k+1]) */
        start[k] = off;
        order[k] = (uint32_t)k;
        k++;
        if (off == n)
            break;
        size_t len = af_rng_below(r, 4) == 0 ? 0 : 1 + af_rng_below(r, (uint32_t)(n < 40 ? n : 40));
        off = off + len > n ? n : off + len;
    }
    af_rng_shuffle_u32(r, order, k - 1);
    int rc = 0;
    for (size_t j = 0; j + 1 < k && !rc; j++) {
        size_t s0 = start[order[j]], s1 = start[order[j] + 1];
        rc = sign > 0 ? fed_agg_add_slice(a, part, s0, x + s0, s1 - s0, w, ex)
                      : fed_agg_sub_slice(a, part, s0, x + s0, s1 - s0, w, ex);
    }
    free(start);
    free(order);
    return rc;
}

static int same_block(fed_agg *a, fed_agg *b)
{
    size_t na, nb;
    const void *pa = fed_agg_data(a, &na), *pb = fed_agg_data(b, &nb);
    return na == nb && !memcmp(pa, pb, na);
}

TEST(strategy_slices_in_any_chunking_equal_the_whole_update)
{
    static const size_t sizes[] = {1, 9, 1003};
    const char *names[] = {"fedavg", "fednova", "scaffold"};
    const char *opts[] = {NULL, NULL, "clients=10"};
    af_rng r;
    af_rng_seed(&r, 4242, 3);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *d = malloc(n * sizeof *d), *dc = malloc(n * sizeof *dc);
        CHECK(d && dc);
        for (int t = 0; t < 3; t++) {
            fed_strategy *s;
            fed_agg *whole, *ref, *sl;
            CHECK(fed_strategy_create(names[t], opts[t], n, &s) == 0);
            CHECK(fed_agg_create(s, &whole) == 0 && fed_agg_create(s, &ref) == 0 &&
                  fed_agg_create(s, &sl) == 0);
            for (int k = 0; k < 10; k++) {
                double w = 1 + (double)af_rng_below(&r, 5000) * 0.37;
                fed_extra ex = {.delta_c = dc, .tau = 1 + af_rng_uniform(&r) * 50};
                double scale = t == 1 ? ex.tau : 1.0;
                for (size_t i = 0; i < n; i++) {
                    d[i] = (float)(edgy(&r, w) * scale);
                    dc[i] = edgy(&r, 1.0);
                }
                if (!(fabs((double)d[0]) < 1e30))
                    d[0] = 0;
                CHECK(fed_agg_add(whole, d, w, &ex) == 0);
                CHECK(fed_agg_add_ref(ref, d, w, &ex) == 0);
                CHECK(fold_in_slices(sl, FED_AGG_DELTA, d, n, w, &ex, &r, 1) == 0);
                if (t == 2)
                    CHECK(fold_in_slices(sl, FED_AGG_DELTA_C, dc, n, w, &ex, &r, 1) == 0);
                CHECK(fed_agg_finish_update(sl, w, &ex) == 0);
                CHECK_MSG(same_block(sl, whole) && same_block(sl, ref),
                          "%s n=%zu update %d: slices differ from the whole update", names[t],
                          n, k);
            }
            CHECK_EQ_INT(fed_agg_count(sl), 10);
            fed_agg_free(whole);
            fed_agg_free(ref);
            fed_agg_free(sl);
            fed_strategy_free(s);
        }
        free(d);
        free(dc);
    }
}

TEST(strategy_sub_slice_restores_the_accumulator_bitwise)
{
    make_updates();
    const char *names[] = {"fedavg", "fednova", "scaffold"};
    const char *opts[] = {NULL, NULL, "clients=10"};
    af_rng r;
    af_rng_seed(&r, 77, 2);
    for (int t = 0; t < 3; t++) {
        fed_strategy *s;
        fed_agg *a, *snap;
        CHECK(fed_strategy_create(names[t], opts[t], NP, &s) == 0);
        CHECK(fed_agg_create(s, &a) == 0 && fed_agg_create(s, &snap) == 0);
        fed_extra ex = {.delta_c = g_delta[ND - 1], .tau = 3.5};
        for (int k = 0; k < ND - 2; k++)
            CHECK(fed_agg_add(a, g_delta[k], g_weight[k], &ex) == 0);
        CHECK(fed_agg_merge(snap, a) == 0); /* snap = a */
        /* an update goes in slice by slice, then is refused: undone in another chunking */
        double w = g_weight[ND - 2];
        CHECK(fold_in_slices(a, FED_AGG_DELTA, g_delta[ND - 2], NP, w, &ex, &r, 1) == 0);
        if (t == 2)
            CHECK(fold_in_slices(a, FED_AGG_DELTA_C, g_delta[ND - 1], NP, w, &ex, &r, 1) == 0);
        CHECK_MSG(!same_block(a, snap), "%s: the slices changed nothing", names[t]);
        CHECK_EQ_INT(fed_agg_count(a), ND - 2); /* not counted until finish */
        CHECK(fold_in_slices(a, FED_AGG_DELTA, g_delta[ND - 2], NP, w, &ex, &r, -1) == 0);
        if (t == 2)
            CHECK(fold_in_slices(a, FED_AGG_DELTA_C, g_delta[ND - 1], NP, w, &ex, &r, -1) == 0);
        CHECK_MSG(same_block(a, snap), "%s: add then sub is not the identity", names[t]);
        /* from an empty accumulator too: back to all zeros */
        fed_agg_reset(snap);
        fed_agg_reset(a);
        CHECK(fold_in_slices(a, FED_AGG_DELTA, g_delta[0], NP, w, &ex, &r, 1) == 0);
        CHECK(fold_in_slices(a, FED_AGG_DELTA, g_delta[0], NP, w, &ex, &r, -1) == 0);
        CHECK(same_block(a, snap));
        fed_agg_free(a);
        fed_agg_free(snap);
        fed_strategy_free(s);
    }
}

TEST(strategy_refuses_bad_slices_and_folds_nothing)
{
    fed_strategy *s, *nova;
    fed_agg *a, *b, *na;
    CHECK(fed_strategy_create("fedavg", NULL, 6, &s) == 0);
    CHECK(fed_strategy_create("fednova", NULL, 6, &nova) == 0);
    CHECK(fed_agg_create(s, &a) == 0 && fed_agg_create(s, &b) == 0);
    CHECK(fed_agg_create(nova, &na) == 0);
    float good[3] = {0.5f, -1.0f, 2.0f}, bad[3] = {0.5f, 1.0f, NAN}, huge[3] = {0, 1e30f, 0};
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 0, good, 3, 2.0, NULL) == 0);
    CHECK(fed_agg_merge(b, a) == 0); /* b = a */
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 3, bad, 3, 2.0, NULL) == AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "delta[5] is NaN"), "%s", af_errmsg());
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 3, huge, 3, 2.0, NULL) == AF_ERANGE);
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 4, good, 3, 2.0, NULL) == AF_EINVAL); /* past n */
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 7, good, 0, 2.0, NULL) == AF_EINVAL);
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, (size_t)-1, good, 3, 2.0, NULL) == AF_EINVAL);
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA_C, 0, good, 3, 2.0, NULL) == AF_EINVAL);
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 0, NULL, 3, 2.0, NULL) == AF_EINVAL);
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 3, good, 3, 0.0, NULL) == AF_EINVAL);
    CHECK(fed_agg_sub_slice(a, FED_AGG_DELTA, 3, bad, 3, 2.0, NULL) == AF_EINVAL);
    CHECK(fed_agg_finish_update(a, -1.0, NULL) == AF_EINVAL);
    CHECK(fed_agg_add_slice(na, FED_AGG_DELTA, 0, good, 3, 2.0, NULL) == AF_EINVAL); /* no tau */
    CHECK(fed_agg_finish_update(na, 2.0, NULL) == AF_EINVAL);
    CHECK_EQ_INT(fed_agg_count(na), 0);
    CHECK_MSG(same_block(a, b), "a refused slice changed the accumulator");
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 6, NULL, 0, 2.0, NULL) == 0); /* empty tail */
    CHECK(fed_agg_add_slice(a, FED_AGG_DELTA, 3, good, 3, 2.0, NULL) == 0);
    CHECK(fed_agg_finish_update(a, 2.0, NULL) == 0);
    CHECK_EQ_INT(fed_agg_count(a), 1);
    CHECK_NEAR(fed_agg_weight(a), 2.0, 0);
    float m[6];
    CHECK(fed_agg_mean(a, m) == 0);
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(m[i], good[i % 3], 0);
    fed_agg_free(a);
    fed_agg_free(b);
    fed_agg_free(na);
    fed_strategy_free(s);
    fed_strategy_free(nova);
}

/* ---- robust aggregation (fedmedian, fedtrimmedavg, krum) ---- */

/* Applies strategy `name` with `opts` to the m × n block u from w = w0 (n <= 8). 0 or AF_E*. */
static int robust_round(const char *name, const char *opts, const float *u, size_t m, size_t n,
                        const float *w0, float *w)
{
    fed_strategy *s;
    int rc = fed_strategy_create(name, opts, n, &s);
    if (rc)
        return rc;
    memcpy(w, w0, sizeof(float) * n);
    rc = fed_strategy_apply_updates(s, u, m, w);
    fed_strategy_free(s);
    return rc;
}

TEST(strategy_fedmedian_hand_worked)
{
    /* 5 devices, 3 parameters; columns sorted: (−1, 0, 2, 5, 9), (−3, −3, 1, 4, 100), (0,0,0,0,7) */
    const float u[5 * 3] = {2, 1, 0, 9, -3, 0, -1, 100, 7, 0, 4, 0, 5, -3, 0};
    const float w0[3] = {10, 20, 30};
    float w[3];
    CHECK_EQ_INT(robust_round("fedmedian", NULL, u, 5, 3, w0, w), 0);
    const float want[3] = {12, 21, 30};
    CHECK_ALLCLOSE(w, want, 3, 0, 0);
    /* even m: the mean of the two middle values; eta scales the step */
    CHECK_EQ_INT(robust_round("fedmedian", "eta=0.5", u, 4, 3, w0, w), 0);
    /* first 4 rows: (−1, 0, 2, 9) → 1; (−3, 1, 4, 100) → 2.5; (0, 0, 0, 7) → 0 */
    const float want2[3] = {10.5f, 21.25f, 30};
    CHECK_ALLCLOSE(w, want2, 3, 0, 0);
    /* one update: the update itself */
    CHECK_EQ_INT(robust_round("fedmedian", NULL, u + 6, 1, 3, w0, w), 0);
    const float want3[3] = {9, 120, 37};
    CHECK_ALLCLOSE(w, want3, 3, 0, 0);
}

TEST(strategy_fedtrimmedavg_hand_worked)
{
    const float u[5 * 2] = {1, -50, 2, 0, 3, 1, 4, 2, 1000, 3};
    const float w0[2] = {0, 0};
    float w[2];
    /* beta 0.2, m 5: cut 1 at each end → mean(2, 3, 4) = 3 and mean(0, 1, 2) = 1 */
    CHECK_EQ_INT(robust_round("fedtrimmedavg", "beta=0.2", u, 5, 2, w0, w), 0);
    const float want[2] = {3, 1};
    CHECK_ALLCLOSE(w, want, 2, 0, 0);
    /* default beta 0.1: ⌊0.5⌋ = 0 cut, the plain mean (1010/5, −44/5) */
    CHECK_EQ_INT(robust_round("fedtrimmedavg", NULL, u, 5, 2, w0, w), 0);
    const float want2[2] = {202, -8.8f};
    CHECK_ALLCLOSE(w, want2, 2, 0, 1e-5);
    /* beta 0.49, m 5: cut 2 at each end, the median */
    CHECK_EQ_INT(robust_round("fedtrimmedavg", "beta=0.49", u, 5, 2, w0, w), 0);
    CHECK_ALLCLOSE(w, want, 2, 0, 0);
}

TEST(strategy_krum_and_multikrum_hand_worked)
{
    /* one parameter, values 0, 1, 3, 10, 100 (f = 1: 5 − 1 − 2 = 2 neighbours):
     * scores 0: 1+9 = 10, 1: 1+4 = 5, 3: 4+9 = 13, 10: 49+81 = 130, 100: 8100+9409 */
    const float u[5] = {10, 0, 100, 3, 1};
    const float w0[1] = {0};
    float w[1];
    CHECK_EQ_INT(robust_round("krum", "f=1", u, 5, 1, w0, w), 0);
    CHECK(w[0] == 1.0f);
    CHECK_EQ_INT(robust_round("krum", "f=1,m=2", u, 5, 1, w0, w), 0); /* rows 1 and 0 */
    CHECK(w[0] == 0.5f);
    CHECK_EQ_INT(robust_round("krum", "f=1,m=3", u, 5, 1, w0, w), 0); /* + row 3 */
    CHECK_NEAR(w[0], 4.0 / 3.0, 1e-6);
    /* f = 0, m = 5 = every update: the plain mean */
    CHECK_EQ_INT(robust_round("krum", "m=5", u, 5, 1, w0, w), 0);
    CHECK_NEAR(w[0], 22.8, 1e-5);
    CHECK_EQ_INT(robust_round("krum", "f=1,eta=2", u, 5, 1, w0, w), 0);
    CHECK(w[0] == 2.0f);
}

/* 10 devices, 64 parameters: 7 honest updates near +1, f = 3 attackers sending −10× an honest
 * one (sign flip) or a far point. Krum returns one honest row exactly, Multi-Krum (m = 4) a
 * mean of honest rows, median and trimmed mean (beta 0.3 cuts 3) stay within the honest
 * range, and the weighted mean (FedAvg) is dragged far off. */
TEST(strategy_krum_picks_the_honest_cluster)
{
    enum { M = 10, N = 64, F = 3 };
    float *u = malloc(sizeof(float) * M * N), w[N], zero[N] = {0};
    af_rng r = af_rng_split(7, 0);
    for (int k = 0; k < M; k++)
        for (int i = 0; i < N; i++)
            u[k * N + i] = (float)(1.0 + 0.05 * af_rng_normal(&r));
    /* attackers in slots 2, 5, 9 */
    for (int i = 0; i < N; i++) {
        u[2 * N + i] = -10.0f * u[0 * N + i];
        u[5 * N + i] = -10.0f * u[1 * N + i];
        u[9 * N + i] = 50.0f + (float)i;
    }
    CHECK_EQ_INT(robust_round("krum", "f=3", u, M, N, zero, w), 0);
    int match = -1;
    for (int k = 0; k < M; k++)
        if (!memcmp(w, u + k * N, sizeof w))
            match = k;
    CHECK(match >= 0 && match != 2 && match != 5 && match != 9);
    int ok = 1;
    CHECK_EQ_INT(robust_round("krum", "f=3,m=4", u, M, N, zero, w), 0);
    for (int i = 0; i < N; i++)
        ok &= w[i] > 0.8f && w[i] < 1.2f;
    CHECK(ok);
    CHECK_EQ_INT(robust_round("fedmedian", NULL, u, M, N, zero, w), 0);
    for (int i = 0; i < N; i++)
        ok &= w[i] > 0.8f && w[i] < 1.2f;
    CHECK(ok);
    CHECK_EQ_INT(robust_round("fedtrimmedavg", "beta=0.3", u, M, N, zero, w), 0);
    for (int i = 0; i < N; i++)
        ok &= w[i] > 0.8f && w[i] < 1.2f;
    CHECK(ok);
    /* the sum the FedAvg family would take: far from the honest +1 */
    fed_strategy *s;
    fed_agg *a;
    CHECK(fed_strategy_create("fedavg", NULL, N, &s) == 0);
    CHECK(fed_agg_create(s, &a) == 0);
    for (int k = 0; k < M; k++)
        CHECK(fed_agg_add(a, u + k * N, 1.0, NULL) == 0);
    memset(w, 0, sizeof w);
    CHECK(fed_strategy_apply(s, a, w) == 0);
    CHECK(w[0] < 0.0f || w[0] > 3.0f);
    fed_agg_free(a);
    fed_strategy_free(s);
    free(u);
}

/* The result does not depend on the rows' order: median and trimmed mean sort under a total
 * order; Krum's scores are a function of the set (distinct scores here). Bitwise. */
TEST(strategy_robust_results_do_not_depend_on_row_order)
{
    enum { M = 9, N = 33 };
    float *u = malloc(sizeof(float) * M * N), *v = malloc(sizeof(float) * M * N);
    float w0[N], wa[N], wb[N];
    af_rng r = af_rng_split(11, 0);
    for (int i = 0; i < M * N; i++)
        u[i] = (float)af_rng_normal(&r);
    u[3] = -0.0f; /* signed zeros must not make the order matter */
    u[N + 3] = 0.0f;
    for (int i = 0; i < N; i++)
        w0[i] = (float)af_rng_normal(&r);
    const int perm[M] = {4, 8, 0, 2, 7, 1, 6, 3, 5};
    for (int k = 0; k < M; k++)
        memcpy(v + k * N, u + perm[k] * N, sizeof(float) * N);
    const char *names[] = {"fedmedian", "fedtrimmedavg", "krum"};
    const char *opts[] = {"", "beta=0.25", "f=2"};
    for (int t = 0; t < 3; t++) {
        CHECK_EQ_INT(robust_round(names[t], opts[t], u, M, N, w0, wa), 0);
        CHECK_EQ_INT(robust_round(names[t], opts[t], v, M, N, w0, wb), 0);
        CHECK_MSG(!memcmp(wa, wb, sizeof wa), "%s depends on the row order", names[t]);
        CHECK(memcmp(wa, w0, sizeof wa) != 0);
    }
    free(u);
    free(v);
}

TEST(strategy_robust_refusals)
{
    fed_strategy *s;
    float u[8 * 2] = {0}, w[2] = {1, 2};
    /* option checks at creation */
    CHECK(fed_strategy_create("fedtrimmedavg", "beta=0.5", 2, &s) == AF_ERANGE);
    CHECK(strstr(af_errmsg(), "beta=0.5 must be in [0, 0.5)"));
    CHECK(fed_strategy_create("fedtrimmedavg", "beta=-0.1", 2, &s) == AF_ERANGE);
    CHECK(fed_strategy_create("krum", "f=-1", 2, &s) == AF_ERANGE);
    CHECK(fed_strategy_create("krum", "f=1.5", 2, &s) == AF_EINVAL);
    CHECK(strstr(af_errmsg(), "not a whole number"));
    CHECK(fed_strategy_create("krum", "m=0", 2, &s) == AF_ERANGE);
    CHECK(fed_strategy_create("fedmedian", "beta=0.1", 2, &s) == AF_EINVAL);
    CHECK(strstr(af_errmsg(), "unknown option 'beta'"));
    /* krum needs m > 2f + 2: f = 2 refuses 6 updates, takes 7 */
    CHECK(fed_strategy_create("krum", "f=2", 2, &s) == 0);
    CHECK(fed_strategy_needs_updates(s) == 1);
    CHECK(fed_strategy_apply_updates(s, u, 6, w) == AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "more than 2f+2 = 6"), "%s", af_errmsg());
    CHECK(w[0] == 1 && w[1] == 2);
    CHECK(fed_strategy_check_updates(s, 7) == 0);
    CHECK(fed_strategy_apply_updates(s, u, 7, w) == 0);
    CHECK(fed_strategy_apply_updates(s, u, 0, w) == AF_ESTATE);
    /* the sum API is refused for a robust strategy */
    fed_agg *a;
    CHECK(fed_agg_create(s, &a) == 0);
    CHECK(fed_agg_add(a, u, 1.0, NULL) == 0);
    CHECK(fed_strategy_apply(s, a, w) == AF_EINVAL);
    CHECK(strstr(af_errmsg(), "individual updates"));
    fed_agg_free(a);
    fed_strategy_free(s);
    /* Multi-Krum keeps at most m − f */
    CHECK(fed_strategy_create("krum", "f=1,m=7", 2, &s) == 0);
    CHECK(fed_strategy_apply_updates(s, u, 7, w) == AF_EINVAL);
    CHECK(strstr(af_errmsg(), "m=7"));
    CHECK(fed_strategy_apply_updates(s, u, 8, w) == 0);
    fed_strategy_free(s);
    /* NaN in a row: refused, nothing changes */
    CHECK(fed_strategy_create("fedmedian", NULL, 2, &s) == 0);
    u[2 * 2 + 1] = NAN;
    w[0] = 1;
    w[1] = 2;
    CHECK(fed_strategy_apply_updates(s, u, 3, w) == AF_EINVAL);
    CHECK_MSG(strstr(af_errmsg(), "update 2: delta[1] is NaN"), "%s", af_errmsg());
    CHECK(w[0] == 1 && w[1] == 2);
    fed_strategy_free(s);
    /* the weighted-sum strategies do not take blocks */
    CHECK(fed_strategy_create("fedavg", NULL, 2, &s) == 0);
    CHECK(fed_strategy_needs_updates(s) == 0);
    CHECK(fed_strategy_apply_updates(s, u, 2, w) == AF_EINVAL);
    fed_strategy_free(s);
}
