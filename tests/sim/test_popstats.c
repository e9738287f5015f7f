/* test_popstats.c — tests of the private population label histogram: fed/popstats.c (encoding,
 * release arithmetic) and sim/popstats.c (the secure-aggregation run over simulated devices).
 *
 * A synthetic, deliberately unbalanced population (class c holds a share ∝ c + 1) is split over
 * a few hundred devices. Without noise and without clipping the release must be the exact
 * histogram; with noise it must sit within a few noise std of the truth, and the standardised
 * errors over several seeds must have variance ≈ 1 (noise neither missing nor inflated); the
 * coordinator's view must be masked (uniform words, not the histograms); ε must be the
 * accountant's for one Gaussian step with q = 1.
 */
#include "sim/popstats.h"

#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "core/err.h"
#include "core/fileio.h"
#include "core/pool.h"
#include "fed/accountant.h"

#define NS 6000
#define NC 10

/* Labels with class c holding (c + 1)/55 of the samples, interleaved. */
static uint8_t *skewed_labels(void)
{
    uint8_t *y = malloc(NS);
    size_t k = 0;
    for (int c = 0; c < NC; c++)
        for (int i = 0; i < (c + 1) * NS / 55 && k < NS; i++)
            y[k++] = (uint8_t)c;
    while (k < NS)
        y[k++] = NC - 1;
    return y;
}

static data_partition *make_part(const uint8_t *y, size_t devices, const char *spec)
{
    data_partition *p = NULL;
    data_partition_opts o;
    data_partition_opts_default(&o);
    o.min_size = 1;
    data_partition_create(y, NS, NC, devices, spec, 7, &o, &p);
    return p;
}

TEST(popstats_without_noise_or_clipping_is_exact)
{
    uint8_t *y = skewed_labels();
    data_partition *p = make_part(y, 300, "dirichlet:0.5");
    CHECK(p != NULL);
    sim_popstats_cfg c;
    sim_popstats_cfg_defaults(&c);
    c.z = 0;
    c.bound = 1e4; /* above every device's size: nothing clipped */
    c.group = 70;  /* 300 devices → 5 groups of 60 */
    sim_popstats s;
    CHECK_EQ_INT(sim_popstats_run(p, y, &c, NULL, &s), 0);
    CHECK_EQ_INT(s.groups, 5);
    CHECK_EQ_INT(s.reported, 300);
    CHECK_EQ_INT(s.clipped, 0);
    CHECK_EQ_INT(s.clamped, 0);
    double T = 0, tv = 0;
    for (int k = 0; k < NC; k++) {
        CHECK_MSG(s.r.count[k] == (double)s.true_count[k], "class %d: %.17g vs %llu", k, s.r.count[k],
                  (unsigned long long)s.true_count[k]);
        T += (double)s.true_count[k];
    }
    CHECK(T == NS);
    for (int k = 0; k < NC; k++)
        tv += 0.5 * fabs(s.true_count[k] / T - 1.0 / NC);
    CHECK_NEAR(s.r.tv_uniform, tv, 1e-12);
    CHECK(tv > 0.2); /* the population really is unbalanced */
    CHECK(s.r.count_std == 0 && s.r.tv_noise == 0);
    CHECK(isinf(s.r.epsilon)); /* no noise, no guarantee */
    data_partition_free(p);
    free(y);
}

TEST(popstats_noisy_histogram_is_within_noise_of_the_truth_and_noise_has_the_stated_size)
{
    uint8_t *y = skewed_labels();
    data_partition *p = make_part(y, 200, "iid");
    CHECK(p != NULL);
    af_pool *pool = af_pool_create(2);
    sim_popstats_cfg c;
    sim_popstats_cfg_defaults(&c);
    c.z = 1.5;
    c.bound = 20; /* devices hold 30 samples: every one is clipped to 20 */
    c.group = 50;
    double chi2 = 0;
    int terms = 0;
    for (uint64_t seed = 1; seed <= 5; seed++) {
        c.seed = seed;
        sim_popstats s;
        CHECK_EQ_INT(sim_popstats_run(p, y, &c, pool, &s), 0);
        CHECK_EQ_INT(s.clipped, 200);
        /* 4 groups of 50, t = 34: each device's share has std zB/√34 */
        const double want_std = sqrt(200.0 * (1.5 * 20) * (1.5 * 20) / 34.0);
        CHECK_NEAR(s.r.count_std, want_std, 1e-9 * want_std);
        for (int k = 0; k < NC; k++) {
            const double err = s.r.count[k] - s.true_clipped[k];
            CHECK_MSG(fabs(err) < 5 * s.r.count_std, "seed %llu class %d: error %g, std %g",
                      (unsigned long long)seed, k, err, s.r.count_std);
            chi2 += err * err / (s.r.count_std * s.r.count_std);
            terms++;
            /* the truth the simulation measures against: 20/30 of every device's counts */
            CHECK_NEAR(s.true_clipped[k], 2.0 / 3.0 * (double)s.true_count[k], 1e-6);
        }
        /* the imbalance is visible through the noise: class 9 holds 10× class 0 (6σ apart) */
        CHECK(s.r.share[NC - 1] > s.r.share[0]);
        CHECK(s.r.tv_uniform > s.r.tv_noise);
    }
    /* Σ of 50 squared standardised errors: mean 1, std √(2/50) = 0.2 if the noise is as stated */
    CHECK_MSG(chi2 / terms > 0.35 && chi2 / terms < 2.0, "mean squared z-score %g", chi2 / terms);
    af_pool_free(pool);
    data_partition_free(p);
    free(y);
}

TEST(popstats_epsilon_is_the_accountants_one_gaussian_step)
{
    const double zs[3] = {0.7, 2.0, 5.0}, deltas[3] = {1e-3, 1e-5, 1e-7};
    for (int i = 0; i < 3; i++) {
        double acc[NC] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
        popstats_result r;
        CHECK_EQ_INT(popstats_release(acc, NC, 4.0, zs[i], 50.0, deltas[i], &r), 0);
        acct a;
        acct_init(&a, NULL, 0);
        acct_step(&a, 1.0, zs[i], 1);
        double e, o;
        acct_epsilon(&a, deltas[i], &e, &o);
        CHECK_NEAR(r.epsilon, e, 1e-12 * e);
        CHECK(r.order == o);
        /* and it shrinks as the noise grows */
        if (i)
            CHECK(r.epsilon < 10.0);
    }
    /* the arithmetic by hand: σ = 2, T = 550 */
    double acc[NC] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
    popstats_result r;
    CHECK_EQ_INT(popstats_release(acc, NC, 4.0, 1.0, 50.0, 1e-5, &r), 0);
    CHECK_NEAR(r.total, 550, 1e-12);
    CHECK_NEAR(r.total_std, 2 * sqrt(10.0), 1e-12);
    const double p0 = 10.0 / 550;
    CHECK_NEAR(r.share[0], p0, 1e-15);
    CHECK_NEAR(r.share_std[0], 2.0 / 550 * sqrt((1 - p0) * (1 - p0) + 9 * p0 * p0), 1e-15);
    double tv = 0;
    for (int k = 0; k < NC; k++)
        tv += 0.5 * fabs(acc[k] / 550 - 0.1);
    CHECK_NEAR(r.tv_uniform, tv, 1e-15);
    /* negative noisy counts are clamped to 0 in the shares, kept in the counts */
    acc[0] = -5;
    CHECK_EQ_INT(popstats_release(acc, NC, 4.0, 1.0, 50.0, 1e-5, &r), 0);
    CHECK(r.count[0] == -5 && r.share[0] == 0);
    CHECK_EQ_INT(popstats_release(acc, NC, 4.0, 1.0, 50.0, 0, &r), AF_ERANGE);
    CHECK_EQ_INT(popstats_release(acc, NC, -1, 1.0, 50.0, 1e-5, &r), AF_ERANGE);
}

/* Records the coordinator's view: masked inputs and masked sums. */
typedef struct view {
    uint32_t words[4000];
    size_t n;
    uint32_t sums[100];
    size_t ns;
} view;

static void record_view(void *ctx, int group, uint32_t device, const uint32_t *w, size_t len, int is_sum)
{
    view *v = ctx;
    (void)group;
    (void)device;
    for (size_t i = 0; i < len; i++) {
        if (is_sum && v->ns < 100)
            v->sums[v->ns++] = w[i];
        else if (!is_sum && v->n < 4000)
            v->words[v->n++] = w[i];
    }
}

TEST(popstats_coordinator_sees_only_masked_words)
{
    uint8_t *y = skewed_labels();
    data_partition *p = make_part(y, 300, "dirichlet:0.3");
    CHECK(p != NULL);
    view *v = calloc(1, sizeof *v);
    sim_popstats_cfg c;
    sim_popstats_cfg_defaults(&c);
    c.z = 0; /* without noise the plain words are small non-negative integers: easy to spot */
    c.bound = 1e4;
    c.group = 100;
    c.view = record_view;
    c.view_ctx = v;
    sim_popstats s;
    CHECK_EQ_INT(sim_popstats_run(p, y, &c, NULL, &s), 0);
    CHECK_EQ_INT(v->n, 300 * NC);
    CHECK_EQ_INT(v->ns, 3 * NC);
    /* a plain word is count·scale ≤ 10^4·scale < 2^31 (scale ≤ 2^31/(100·10^4)): its top bit
     * is 0 and it is below 2^31/100. Masked words are uniform on 2^32. */
    size_t top = 0, small = 0;
    double mean = 0;
    for (size_t i = 0; i < v->n; i++) {
        top += v->words[i] >> 31;
        small += v->words[i] < (1u << 31) / 100;
        mean += v->words[i] / 4294967296.0;
    }
    mean /= (double)v->n;
    const double se_half = sqrt(0.25 / (double)v->n), se_mean = sqrt(1.0 / 12 / (double)v->n);
    CHECK_MSG(fabs((double)top / (double)v->n - 0.5) < 5 * se_half, "top bits %zu of %zu", top, v->n);
    CHECK_MSG(fabs(mean - 0.5) < 5 * se_mean, "mean %g", mean);
    CHECK_MSG(small < 0.005 * 3 * (double)v->n, "%zu small words of %zu", small, v->n);
    /* the running masked sums before unmasking are not the group sums either */
    size_t small_sums = 0;
    for (size_t i = 0; i < v->ns; i++)
        small_sums += v->sums[i] < (1u << 31) / 10;
    CHECK(small_sums < 10);
    /* and still, after unmasking, the exact histogram */
    for (int k = 0; k < NC; k++)
        CHECK(s.r.count[k] == (double)s.true_count[k]);
    free(v);
    data_partition_free(p);
    free(y);
}

TEST(popstats_dropouts_unmask_and_abandoned_groups_reveal_nothing)
{
    uint8_t *y = skewed_labels();
    data_partition *p = make_part(y, 150, "iid");
    CHECK(p != NULL);
    sim_popstats_cfg c;
    sim_popstats_cfg_defaults(&c);
    c.z = 0;
    c.bound = 1e4;
    c.group = 30;
    c.dropout = 0.15; /* t = 20 of 30: groups survive */
    sim_popstats s;
    CHECK_EQ_INT(sim_popstats_run(p, y, &c, NULL, &s), 0);
    CHECK(s.dropped > 8 && s.dropped < 45);
    CHECK_EQ_INT(s.reported + s.dropped, 150);
    CHECK_EQ_INT(s.groups_abandoned, 0);
    double tot = 0;
    for (int k = 0; k < NC; k++) {
        CHECK(s.r.count[k] == s.true_clipped[k]); /* exactly the survivors' histograms */
        tot += s.r.count[k];
    }
    CHECK(tot < NS);
    /* about a third dropping with t = 20 of 30: find a seed where some group (not all) falls
     * below t — it is abandoned, and only the other groups are released */
    c.dropout = 0.33;
    int found = 0;
    for (uint64_t seed = 1; seed <= 60 && !found; seed++) {
        c.seed = seed;
        found = sim_popstats_run(p, y, &c, NULL, &s) == 0 && s.groups_abandoned > 0;
    }
    CHECK(found);
    CHECK(s.groups_abandoned < s.groups);
    CHECK(s.reported + s.dropped < 150); /* the abandoned group's survivors are not counted */
    for (int k = 0; k < NC; k++)
        CHECK(s.r.count[k] == s.true_clipped[k]);
    /* nearly everyone dropping: every group abandoned, nothing released */
    c.dropout = 0.9;
    CHECK_EQ_INT(sim_popstats_run(p, y, &c, NULL, &s), AF_ESTATE);
    CHECK(strstr(af_errmsg(), "nothing was released") != NULL);
    data_partition_free(p);
    free(y);
}

TEST(popstats_bad_options_are_refused_by_name)
{
    uint8_t *y = skewed_labels();
    data_partition *p = make_part(y, 50, "iid");
    CHECK(p != NULL);
    sim_popstats_cfg c;
    sim_popstats s;
    struct {
        const char *opt;
        double bound, z, delta, dropout;
        int group;
    } bad[] = {
        {"--stats-bound", 0, 1, 1e-5, 0, 10},  {"--stats-bound", NAN, 1, 1e-5, 0, 10},
        {"--stats-noise", 10, -1, 1e-5, 0, 10}, {"--stats-delta", 10, 1, 0, 0, 10},
        {"--stats-delta", 10, 1, 1, 0, 10},     {"--stats-group", 10, 1, 1e-5, 0, 0},
        {"--dropout", 10, 1, 1e-5, 1.0, 10},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sim_popstats_cfg_defaults(&c);
        c.bound = bad[i].bound;
        c.z = bad[i].z;
        c.delta = bad[i].delta;
        c.dropout = bad[i].dropout;
        c.group = bad[i].group;
        CHECK_EQ_INT(sim_popstats_run(p, y, &c, NULL, &s), AF_ERANGE);
        CHECK_MSG(strstr(af_errmsg(), bad[i].opt) != NULL, "case %zu: '%s'", i, af_errmsg());
    }
    /* the encoder: integer counts quantise exactly, noise is added only with z > 0 */
    popstats_params pp;
    CHECK_EQ_INT(popstats_params_init(&pp, NC, 100, 0, 50, 34), 0);
    CHECK(pp.quant.scale == floor(pp.quant.scale) && pp.quant.range >= 100);
    uint32_t counts[NC] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 60}, w[NC];
    int clipped = -1;
    CHECK_EQ_INT(popstats_device_encode(&pp, counts, NULL, w, &clipped, NULL), 0);
    CHECK_EQ_INT(clipped, 0);
    for (int k = 0; k < NC; k++)
        CHECK(w[k] == (uint32_t)(counts[k] * pp.quant.scale));
    counts[9] = 160; /* Σ = 196 > 100: scaled by 100/196 */
    CHECK_EQ_INT(popstats_device_encode(&pp, counts, NULL, w, &clipped, NULL), 0);
    CHECK_EQ_INT(clipped, 1);
    CHECK_NEAR((int32_t)w[9] / pp.quant.scale, 160 * 100.0 / 196, 1.0 / pp.quant.scale);
    CHECK_EQ_INT(popstats_params_init(&pp, 0, 100, 0, 50, 34), AF_ERANGE);
    CHECK_EQ_INT(popstats_params_init(&pp, NC, 100, 1, 50, 51), AF_ERANGE);
    data_partition_free(p);
    free(y);
}

TEST(popstats_population_json_has_the_release_and_the_truth_apart)
{
    uint8_t *y = skewed_labels();
    data_partition *p = make_part(y, 100, "iid");
    CHECK(p != NULL);
    sim_popstats_cfg c;
    sim_popstats_cfg_defaults(&c);
    sim_popstats s;
    CHECK_EQ_INT(sim_popstats_run(p, y, &c, NULL, &s), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/population.json", t_tmpdir());
    const char *names[NC] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle \"boot\""};
    CHECK_EQ_INT(sim_popstats_write_json(&s, &c, names, path), 0);
    char *text = NULL;
    size_t len;
    CHECK_EQ_INT(af_read_file(path, &text, &len), 0);
    const char *keys[] = {"\"counts\"", "\"count_std\"", "\"shares\"", "\"share_std\"", "\"tv_uniform\"",
                          "\"tv_noise\"", "\"epsilon\"", "\"delta\"", "\"noise_multiplier\"", "\"bound\"",
                          "\"reported\"", "\"simulation_truth\"", "\"clipped_counts\"", "\"Ankle \\\"boot\\\"\""};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        CHECK_MSG(strstr(text, keys[i]) != NULL, "missing %s", keys[i]);
    /* the truth is only inside simulation_truth, after the release */
    CHECK(strstr(text, "\"simulation_truth\"") > strstr(text, "\"epsilon\""));
    free(text);
    data_partition_free(p);
    free(y);
}
