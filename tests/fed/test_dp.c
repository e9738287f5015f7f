/* test_dp.c — tests of src/fed/dp.c: norm, clipping, Gaussian noise, DP-FedAvg averaging,
 * split noise and adaptive clipping.
 *
 * Norms and clipping are checked exactly on hand examples; noise by recomputing the documented
 * Box-Muller draw order from the same seed (exact) and by moments over a million draws
 * (fixed seeds, bounds of 5+ standard errors so the tests are not flaky); adaptive clipping
 * by its direction of movement and by convergence to the target quantile.
 */
#include "fed/dp.h"

#include <string.h>

#include "../test.h"
#include "core/err.h"
#include "core/mem.h"

/* ---- norm and clipping ---- */

TEST(dp_norm_hand_examples)
{
    float a[2] = {3, 4}, ones[1000], twos[13], big[2] = {1e30f, -1e30f};
    CHECK(dp_l2_norm(a, 2) == 5.0);
    CHECK(dp_l2_norm(a, 0) == 0.0);
    for (int i = 0; i < 1000; i++)
        ones[i] = 1.0f;
    CHECK_NEAR(dp_l2_norm(ones, 1000), sqrt(1000.0), 1e-12);
    for (int i = 0; i < 13; i++) /* not a multiple of the 8 partial sums */
        twos[i] = (i % 2) ? -2.0f : 2.0f;
    CHECK_NEAR(dp_l2_norm(twos, 13), sqrt(52.0), 1e-12);
    /* squares of 1e30 overflow float, not double */
    CHECK_NEAR(dp_l2_norm(big, 2) / ((double)1e30f * sqrt(2.0)), 1.0, 1e-15);
}

TEST(dp_clip_hand_examples)
{
    float x[2] = {3, 4};
    double norm = -1;
    int clipped = -1;
    CHECK_EQ_INT(dp_clip_l2(x, 2, 10.0, &norm, &clipped), 0); /* inside: untouched */
    CHECK(x[0] == 3.0f && x[1] == 4.0f && norm == 5.0 && clipped == 0);
    CHECK_EQ_INT(dp_clip_l2(x, 2, 5.0, &norm, &clipped), 0); /* on the boundary: untouched */
    CHECK(x[0] == 3.0f && x[1] == 4.0f && clipped == 0);
    CHECK_EQ_INT(dp_clip_l2(x, 2, 1.0, &norm, &clipped), 0);
    CHECK(norm == 5.0 && clipped == 1);
    CHECK_NEAR(x[0], 0.6, 1e-6);
    CHECK_NEAR(x[1], 0.8, 1e-6);
    CHECK(dp_l2_norm(x, 2) <= 1.0);         /* the sensitivity bound holds exactly */
    CHECK(dp_l2_norm(x, 2) >= 1.0 - 1e-6);  /* and is barely tightened */
    CHECK_EQ_INT(dp_clip_l2(NULL, 0, 1.0, NULL, NULL), 0); /* empty update */
}

TEST(dp_clip_bound_holds_and_keeps_direction)
{
    af_rng rng;
    af_rng_seed(&rng, 7, 0);
    float x[1001], orig[1001];
    for (int trial = 0; trial < 200; trial++) {
        size_t n = 1 + af_rng_below(&rng, 1000);
        double scale = exp(10.0 * (af_rng_uniform(&rng) - 0.5));
        for (size_t i = 0; i < n; i++)
            orig[i] = x[i] = (float)(scale * af_rng_normal(&rng));
        double clip = 0.1 + 3.0 * af_rng_uniform(&rng), norm;
        int clipped;
        CHECK_EQ_INT(dp_clip_l2(x, n, clip, &norm, &clipped), 0);
        CHECK_NEAR(norm, dp_l2_norm(orig, n), 1e-12 * norm);
        CHECK_EQ_INT(clipped, norm > clip);
        double after = dp_l2_norm(x, n);
        CHECK_MSG(after <= clip, "trial %d: norm %.17g above clip %.17g", trial, after, clip);
        CHECK(after >= fmin(norm, clip) * (1 - 1e-6));
        double k = clipped ? clip / norm : 1.0; /* every coordinate scaled by the same factor */
        for (size_t i = 0; i < n; i++)
            CHECK(fabs(x[i] - k * orig[i]) <= 1e-6 * fabs(k * orig[i]) + 1e-30);
    }
}

TEST(dp_clip_refuses_bad_input)
{
    float x[4] = {1, 2, NAN, 4}, y[2] = {3, 4};
    double norm = -1;
    int clipped = -1;
    CHECK_EQ_INT(dp_clip_l2(x, 4, 1.0, &norm, &clipped), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "update[2]") != NULL);
    CHECK(x[0] == 1 && x[1] == 2 && x[3] == 4 && norm == -1 && clipped == -1);
    x[2] = INFINITY;
    CHECK_EQ_INT(dp_clip_l2(x, 4, 1.0, &norm, &clipped), AF_EINVAL);
    CHECK_EQ_INT(dp_clip_l2(y, 2, 0.0, &norm, &clipped), AF_ERANGE);
    CHECK_EQ_INT(dp_clip_l2(y, 2, -1.0, &norm, &clipped), AF_ERANGE);
    CHECK_EQ_INT(dp_clip_l2(y, 2, NAN, &norm, &clipped), AF_ERANGE);
    CHECK_EQ_INT(dp_clip_l2(y, 2, INFINITY, &norm, &clipped), AF_ERANGE);
    CHECK_EQ_INT(dp_clip_l2(NULL, 2, 1.0, &norm, &clipped), AF_EINVAL);
    CHECK(y[0] == 3 && y[1] == 4 && norm == -1 && clipped == -1);
}

/* ---- Gaussian noise ---- */

TEST(dp_gaussian_follows_documented_draw_order)
{
    /* recompute dp.h's Box-Muller pairs from an identical generator: an exact oracle */
    float x[7] = {1, -2, 3, 0.5f, 0, 0, 10}, base[7];
    memcpy(base, x, sizeof x);
    af_rng a, b;
    af_rng_seed(&a, 123, 4);
    b = a;
    CHECK_EQ_INT(dp_add_gaussian(x, 7, 0.75, &a), 0);
    for (int k = 0; k < 4; k++) {
        double u1 = af_rng_uniform(&b), u2 = af_rng_uniform(&b);
        double r = 0.75 * sqrt(-2.0 * log(1.0 - u1)), t = 6.283185307179586 * u2;
        CHECK(x[2 * k] == (float)((double)base[2 * k] + r * cos(t)));
        if (2 * k + 1 < 7)
            CHECK(x[2 * k + 1] == (float)((double)base[2 * k + 1] + r * sin(t)));
    }
    CHECK(a.state == b.state); /* exactly 2·ceil(n/2) uniforms consumed */
}

TEST(dp_gaussian_zero_sigma_is_a_no_op)
{
    float x[3] = {1, 2, 3};
    af_rng a, b;
    af_rng_seed(&a, 1, 1);
    b = a;
    CHECK_EQ_INT(dp_add_gaussian(x, 3, 0.0, &a), 0);
    CHECK(x[0] == 1 && x[1] == 2 && x[2] == 3 && a.state == b.state);
    CHECK_EQ_INT(dp_add_gaussian(x, 3, -1.0, &a), AF_ERANGE);
    CHECK_EQ_INT(dp_add_gaussian(x, 3, NAN, &a), AF_ERANGE);
    CHECK_EQ_INT(dp_add_gaussian(x, 3, 1.0, NULL), AF_EINVAL);
    CHECK(x[0] == 1 && x[1] == 2 && x[2] == 3);
}

/* mean, variance, kurtosis, P(|x−μ| < σ) and lag-1 correlation of x[0..n) */
static void moments(const float *x, size_t n, double *mean, double *var, double *kurt,
                    double *within1, double *corr1, double sigma)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    double m = s / n, m2 = 0, m4 = 0, c = 0;
    size_t in = 0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - m;
        m2 += d * d;
        m4 += d * d * d * d;
        in += fabs(d) < sigma;
        if (i + 1 < n)
            c += d * (x[i + 1] - m);
    }
    *mean = m;
    *var = m2 / (n - 1);
    *kurt = (m4 / n) / ((m2 / n) * (m2 / n));
    *within1 = (double)in / n;
    *corr1 = (c / (n - 1)) / *var;
}

TEST(dp_gaussian_has_right_moments)
{
    const size_t n = 1u << 20;
    const double sigma = 2.5, offset = 3.0;
    float *x = af_alloc(n * sizeof *x);
    CHECK(x != NULL);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)offset;
    af_rng rng;
    af_rng_seed(&rng, 2024, 0);
    CHECK_EQ_INT(dp_add_gaussian(x, n, sigma, &rng), 0);
    double mean, var, kurt, within1, corr1;
    moments(x, n, &mean, &var, &kurt, &within1, &corr1, sigma);
    af_free(x);
    /* standard errors: mean σ/√n = 0.0024; var σ²√(2/n) = 0.0086; kurtosis √(24/n) = 0.0048;
     * within-1σ √(p(1−p)/n) = 0.00045; correlation 1/√n = 0.001. Bounds are ≥ 5 SE. */
    CHECK_NEAR(mean, offset, 0.015);
    CHECK_NEAR(var, sigma * sigma, 0.05);
    CHECK_NEAR(kurt, 3.0, 0.03);
    CHECK_NEAR(within1, 0.682689492, 0.003);
    CHECK_NEAR(corr1, 0.0, 0.006); /* cos and sin outputs of a pair are independent */
}

/* ---- DP-FedAvg server step ---- */

TEST(dp_fedavg_without_noise_is_the_average)
{
    float sum[3] = {10, -20, 5};
    CHECK_EQ_INT(dp_fedavg_noise_average(sum, 3, 1.0, 0.0, 4.0, NULL), 0);
    CHECK(sum[0] == 2.5f && sum[1] == -5.0f && sum[2] == 1.25f);
    CHECK_EQ_INT(dp_fedavg_noise_average(sum, 3, 1.0, 1.0, 0.0, NULL), AF_ERANGE);
    CHECK_EQ_INT(dp_fedavg_noise_average(sum, 3, 0.0, 1.0, 4.0, NULL), AF_ERANGE);
    CHECK_EQ_INT(dp_fedavg_noise_average(sum, 3, 1.0, 1.0, 4.0, NULL), AF_EINVAL); /* no rng */
    af_rng rng;
    af_rng_seed(&rng, 1, 0);
    CHECK_EQ_INT(dp_fedavg_noise_average(sum, 3, 1e200, 1e200, 4.0, &rng), AF_ERANGE);
    CHECK(sum[0] == 2.5f && sum[1] == -5.0f && sum[2] == 1.25f);
}

TEST(dp_fedavg_noise_has_std_z_clip_over_denom)
{
    const size_t n = 1u << 18;
    const double clip = 0.5, z = 1.2, denom = 100.0, sd = z * clip / denom;
    float *x = af_alloc(n * sizeof *x);
    CHECK(x != NULL);
    for (size_t i = 0; i < n; i++)
        x[i] = 7.0f; /* Σ of clipped updates */
    af_rng rng;
    af_rng_seed(&rng, 99, 3);
    CHECK_EQ_INT(dp_fedavg_noise_average(x, n, clip, z, denom, &rng), 0);
    double mean, var, kurt, within1, corr1;
    moments(x, n, &mean, &var, &kurt, &within1, &corr1, sd);
    af_free(x);
    CHECK_NEAR(mean, 0.07, 6 * sd / sqrt((double)n));
    CHECK_NEAR(sqrt(var) / sd, 1.0, 0.01); /* SE of the std ≈ 1/√(2n) = 0.0014 */
}

TEST(dp_split_noise_sums_to_central_variance)
{
    double s;
    CHECK_EQ_INT(dp_split_noise_sigma(1.1, 2.0, 100, 100, &s), 0);
    CHECK_NEAR(s, 2.2 / 10.0, 1e-15);
    CHECK_EQ_INT(dp_split_noise_sigma(1.1, 2.0, 100, 25, &s), 0);
    CHECK_NEAR(s, 2.2 / 5.0, 1e-15);
    /* any 25 devices' shares together have variance (zS)² */
    const size_t len = 40000;
    float *sum = af_alloc(len * sizeof *sum);
    CHECK(sum != NULL);
    for (int d = 0; d < 25; d++) {
        af_rng dev = af_rng_split(5, (uint64_t)d); /* each device its own stream */
        CHECK_EQ_INT(dp_add_gaussian(sum, len, s, &dev), 0);
    }
    double mean, var, kurt, within1, corr1;
    moments(sum, len, &mean, &var, &kurt, &within1, &corr1, 2.2);
    af_free(sum);
    CHECK_NEAR(sqrt(var), 2.2, 2.2 * 0.02); /* SE of the std 0.35% */
    CHECK_NEAR(mean, 0.0, 0.06);
    double keep = 42;
    CHECK_EQ_INT(dp_split_noise_sigma(1.0, 1.0, 10, 0, &keep), AF_ERANGE);
    CHECK_EQ_INT(dp_split_noise_sigma(1.0, 1.0, 10, 11, &keep), AF_ERANGE);
    CHECK_EQ_INT(dp_split_noise_sigma(-1.0, 1.0, 10, 5, &keep), AF_ERANGE);
    CHECK(keep == 42);
}

/* ---- adaptive clipping ---- */

TEST(dp_adaptive_clip_moves_the_right_way)
{
    dp_adaptive_clip ac;
    CHECK_EQ_INT(dp_adaptive_clip_init(&ac, 1.0, 0.5, 0.2, 0.0), 0);
    /* most updates clipped (b̄ = 0.1 < γ): C grows by e^(0.2·0.4) */
    CHECK_EQ_INT(dp_adaptive_clip_update(&ac, 0.1), 0);
    CHECK_NEAR(ac.clip, exp(0.08), 1e-15);
    CHECK(ac.clip > 1.0);
    /* few clipped (b̄ = 0.9 > γ): C shrinks by the same factor, back to 1 */
    CHECK_EQ_INT(dp_adaptive_clip_update(&ac, 0.9), 0);
    CHECK_NEAR(ac.clip, 1.0, 1e-15);
    CHECK_EQ_INT(dp_adaptive_clip_update(&ac, 0.95), 0);
    CHECK(ac.clip < 1.0);
    double c = ac.clip;
    CHECK_EQ_INT(dp_adaptive_clip_update(&ac, 0.5), 0); /* on target: stays */
    CHECK(ac.clip == c);
    /* a step is at most a factor e^η */
    CHECK_EQ_INT(dp_adaptive_clip_update(&ac, 0.0), 0);
    CHECK_NEAR(ac.clip / c, exp(0.1), 1e-12);
    CHECK_EQ_INT(dp_adaptive_clip_update(&ac, 1.5), AF_ERANGE);
    CHECK_EQ_INT(dp_adaptive_clip_update(&ac, NAN), AF_ERANGE);
    CHECK_NEAR(ac.clip / c, exp(0.1), 1e-12);
}

TEST(dp_adaptive_clip_fraction_is_centred_and_noised)
{
    dp_adaptive_clip ac;
    double b = -1;
    CHECK_EQ_INT(dp_adaptive_clip_init(&ac, 1.0, 0.5, 0.2, 0.0), 0);
    CHECK_EQ_INT(dp_adaptive_clip_fraction(&ac, 30, 100, 100, NULL, &b), 0);
    CHECK_NEAR(b, 0.3, 1e-15);
    /* fixed denominator m = 200 with 100 reports: (30 − 50)/200 + ½ */
    CHECK_EQ_INT(dp_adaptive_clip_fraction(&ac, 30, 100, 200, NULL, &b), 0);
    CHECK_NEAR(b, 0.4, 1e-15);
    CHECK_EQ_INT(dp_adaptive_clip_fraction(&ac, 0, 100, 20, NULL, &b), 0); /* clamped */
    CHECK(b == 0.0);
    CHECK_EQ_INT(dp_adaptive_clip_fraction(&ac, 31, 30, 100, NULL, &b), AF_ERANGE);
    CHECK_EQ_INT(dp_adaptive_clip_fraction(&ac, 3, 30, 0, NULL, &b), AF_ERANGE);
    CHECK(b == 0.0);
    /* with noise σ_b = 5 on m = 100: mean 0.3, std 0.05 */
    CHECK_EQ_INT(dp_adaptive_clip_init(&ac, 1.0, 0.5, 0.2, 5.0), 0);
    CHECK_EQ_INT(dp_adaptive_clip_fraction(&ac, 30, 100, 100, NULL, &b), AF_EINVAL); /* no rng */
    af_rng rng;
    af_rng_seed(&rng, 11, 0);
    double s = 0, s2 = 0;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(dp_adaptive_clip_fraction(&ac, 30, 100, 100, &rng, &b), 0);
        s += b;
        s2 += b * b;
    }
    double mean = s / N, sd = sqrt(s2 / N - mean * mean);
    CHECK_NEAR(mean, 0.3, 0.002); /* SE 0.00035 */
    CHECK_NEAR(sd, 0.05, 0.002);
}

/* Runs `rounds` of adaptive clipping on update norms ~ Uniform(0, 10) (median 5). */
static double run_adaptive(double c0, int rounds, double gamma, af_rng *rng)
{
    dp_adaptive_clip ac;
    const int m = 100;
    if (dp_adaptive_clip_init(&ac, c0, gamma, 0.2, m / 20.0))
        return NAN;
    for (int r = 0; r < rounds; r++) {
        int unclipped = 0;
        for (int i = 0; i < m; i++)
            unclipped += 10.0 * af_rng_uniform(rng) <= ac.clip;
        double b;
        if (dp_adaptive_clip_fraction(&ac, unclipped, m, m, rng, &b) ||
            dp_adaptive_clip_update(&ac, b))
            return NAN;
    }
    return ac.clip;
}

TEST(dp_adaptive_clip_tracks_the_target_quantile)
{
    af_rng rng;
    af_rng_seed(&rng, 31, 0);
    /* from far below and far above, C settles near the γ-quantile 10γ of Uniform(0, 10) */
    double lo = run_adaptive(0.01, 400, 0.5, &rng), hi = run_adaptive(1000.0, 400, 0.5, &rng);
    CHECK_MSG(lo > 4.0 && lo < 6.0, "from 0.01: C = %g", lo);
    CHECK_MSG(hi > 4.0 && hi < 6.0, "from 1000: C = %g", hi);
    double q8 = run_adaptive(1.0, 400, 0.8, &rng);
    CHECK_MSG(q8 > 7.0 && q8 < 9.0, "gamma 0.8: C = %g", q8);
}

TEST(dp_adaptive_noise_multiplier_composes)
{
    double zd = -1;
    CHECK_EQ_INT(dp_adaptive_noise_multiplier(1.0, 5.0, &zd), 0);
    CHECK_NEAR(zd, 1.0 / sqrt(1.0 - 1.0 / 100.0), 1e-15);
    CHECK(zd > 1.0); /* the updates need a bit more noise than z */
    /* and composing back: 1/z² = 1/z_Δ² + 1/(2σ_b)² */
    CHECK_NEAR(1.0 / sqrt(1.0 / (zd * zd) + 1.0 / 100.0), 1.0, 1e-14);
    CHECK_EQ_INT(dp_adaptive_noise_multiplier(1.3, 0.0, &zd), 0);
    CHECK(zd == 1.3);
    zd = -1;
    CHECK_EQ_INT(dp_adaptive_noise_multiplier(1.0, 0.5, &zd), AF_ERANGE); /* 2σ_b = z */
    CHECK(strstr(af_errmsg(), "too small") != NULL);
    CHECK_EQ_INT(dp_adaptive_noise_multiplier(0.0, 5.0, &zd), AF_ERANGE);
    CHECK(zd == -1);
}

TEST(dp_adaptive_clip_init_refuses_bad_fields)
{
    dp_adaptive_clip ac = {2.0, 0.5, 0.2, 1.0}, before = ac;
    CHECK_EQ_INT(dp_adaptive_clip_init(&ac, 0.0, 0.5, 0.2, 1.0), AF_ERANGE);
    CHECK(strstr(af_errmsg(), "clip") != NULL);
    CHECK_EQ_INT(dp_adaptive_clip_init(&ac, 1.0, 1.5, 0.2, 1.0), AF_ERANGE);
    CHECK(strstr(af_errmsg(), "target_quantile") != NULL);
    CHECK_EQ_INT(dp_adaptive_clip_init(&ac, 1.0, 0.5, 0.0, 1.0), AF_ERANGE);
    CHECK_EQ_INT(dp_adaptive_clip_init(&ac, 1.0, 0.5, 0.2, -1.0), AF_ERANGE);
    CHECK(memcmp(&ac, &before, sizeof ac) == 0);
}
