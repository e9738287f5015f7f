/* test_rng.c — tests for core/rng: reproducibility per (seed, stream), independence of seeds,
 * streams and splits, exact uniformity of af_rng_below, and the moments of the uniform,
 * normal, gamma and Dirichlet draws. Statistical bounds are ~6 standard errors wide, and
 * every seed is fixed, so a pass is deterministic; a wrong distribution misses them by far.
 */
#include "../test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

TEST(rng_same_seed_same_sequence)
{
    af_rng a, b;
    af_rng_seed(&a, 42, 7);
    af_rng_seed(&b, 42, 7);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ_INT(af_rng_u32(&a), af_rng_u32(&b));
    /* the derived draws follow the same state */
    af_rng_seed(&a, 42, 7);
    af_rng_seed(&b, 42, 7);
    for (int i = 0; i < 100; i++) {
        CHECK(af_rng_uniform(&a) == af_rng_uniform(&b));
        CHECK(af_rng_normal(&a) == af_rng_normal(&b));
        CHECK(af_rng_gamma(&a, 0.5) == af_rng_gamma(&b, 0.5));
    }
}

/* Number of equal positions in the first 1000 outputs of two generators. */
static int matches(af_rng a, af_rng b)
{
    int same = 0;
    for (int i = 0; i < 1000; i++)
        same += af_rng_u32(&a) == af_rng_u32(&b);
    return same;
}

TEST(rng_seeds_streams_and_splits_differ)
{
    af_rng base, other;
    af_rng_seed(&base, 42, 7);
    af_rng_seed(&other, 43, 7);
    CHECK(matches(base, other) < 5);
    af_rng_seed(&other, 42, 8);
    CHECK(matches(base, other) < 5);
    af_rng_seed(&other, 0, 0);
    CHECK(matches(base, other) < 5);
    /* splits: deterministic per (seed, i), distinct across i and across seeds */
    for (uint64_t i = 0; i < 8; i++) {
        af_rng s1 = af_rng_split(1, i), s2 = af_rng_split(1, i);
        CHECK_EQ_INT(matches(s1, s2), 1000);
        for (uint64_t j = 0; j < i; j++)
            CHECK(matches(s1, af_rng_split(1, j)) < 5);
        CHECK(matches(s1, af_rng_split(2, i)) < 5);
    }
    /* u64 is not just a repeated u32 */
    af_rng_seed(&base, 5, 0);
    uint64_t x = af_rng_u64(&base);
    CHECK((uint32_t)x != (uint32_t)(x >> 32));
}

TEST(rng_below_in_range)
{
    static const uint32_t ns[] = {1, 2, 3, 7, 10, 1000, 65537, 0x80000001u, 0xffffffffu};
    af_rng r;
    af_rng_seed(&r, 9, 1);
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
        for (int i = 0; i < 20000; i++) {
            uint32_t v = af_rng_below(&r, ns[k]);
            CHECK_MSG(v < ns[k], "af_rng_below(%u) gave %u", ns[k], v);
        }
    /* n = 1 is always 0 */
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(af_rng_below(&r, 1), 0);
}

TEST(rng_below_uniform_chi_square)
{
    af_rng r;
    af_rng_seed(&r, 2024, 3);
    enum { K = 10, N = 200000 };
    long cnt[K] = {0};
    for (int i = 0; i < N; i++)
        cnt[af_rng_below(&r, K)]++;
    double chi2 = 0.0, e = (double)N / K;
    for (int k = 0; k < K; k++)
        chi2 += (cnt[k] - e) * (cnt[k] - e) / e;
    /* 9 degrees of freedom: P(chi2 > 40) ≈ 7e-6 */
    CHECK_MSG(chi2 < 40.0, "chi2 = %g over 10 bins", chi2);
}

TEST(rng_below_unbiased_for_huge_n)
{
    /* n = 3·2^30: u32 % n would put probability 1/2 on [0, 2^30); the exact answer is 1/3. */
    af_rng r;
    af_rng_seed(&r, 77, 0);
    const uint32_t n = 3u << 30;
    const int N = 200000;
    int low = 0;
    for (int i = 0; i < N; i++)
        low += af_rng_below(&r, n) < (1u << 30);
    CHECK_NEAR((double)low / N, 1.0 / 3.0, 0.007);
}

TEST(rng_uniform_moments)
{
    af_rng r;
    af_rng_seed(&r, 1, 1);
    const int N = 200000;
    double s = 0.0, s2 = 0.0, lo = 1.0, hi = 0.0;
    for (int i = 0; i < N; i++) {
        double u = af_rng_uniform(&r);
        CHECK(u >= 0.0 && u < 1.0);
        s += u;
        s2 += u * u;
        if (u < lo)
            lo = u;
        if (u > hi)
            hi = u;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    CHECK_NEAR(mean, 0.5, 0.004);       /* se 6.5e-4 */
    CHECK_NEAR(var, 1.0 / 12.0, 0.0012); /* se 1.9e-4 */
    CHECK(lo < 1e-4 && hi > 1.0 - 1e-4);
}

TEST(rng_normal_moments)
{
    af_rng r;
    af_rng_seed(&r, 3, 0);
    const int N = 200000;
    double s = 0.0, s2 = 0.0, s4 = 0.0;
    int beyond2 = 0;
    for (int i = 0; i < N; i++) {
        double z = af_rng_normal(&r);
        CHECK(isfinite(z));
        s += z;
        s2 += z * z;
        s4 += z * z * z * z;
        beyond2 += fabs(z) > 2.0;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    CHECK_NEAR(mean, 0.0, 0.015);        /* se 2.2e-3 */
    CHECK_NEAR(var, 1.0, 0.02);          /* se 3.2e-3 */
    CHECK_NEAR(s4 / N, 3.0, 0.1);        /* kurtosis of a normal; se ~0.02 */
    CHECK_NEAR((double)beyond2 / N, 0.0455, 0.003);
}

TEST(rng_gamma_mean_and_variance)
{
    static const double shapes[] = {0.1, 0.5, 1.0, 2.5, 10.0};
    af_rng r;
    af_rng_seed(&r, 11, 2);
    const int N = 100000;
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        double a = shapes[k], s = 0.0, s2 = 0.0;
        for (int i = 0; i < N; i++) {
            double g = af_rng_gamma(&r, a);
            CHECK_MSG(g >= 0.0 && isfinite(g), "gamma(%g) gave %g", a, g);
            s += g;
            s2 += g * g;
        }
        double mean = s / N, var = s2 / N - mean * mean;
        /* Gamma(a,1): mean a, variance a; se of the mean sqrt(a/N) */
        CHECK_MSG(fabs(mean - a) < 6.0 * sqrt(a / N), "gamma(%g): mean %g", a, mean);
        CHECK_MSG(fabs(var - a) < 0.05 * a + 6.0 * sqrt(a / N), "gamma(%g): var %g", a, var);
    }
}

TEST(rng_dirichlet_on_simplex)
{
    static const double alphas[] = {0.01, 0.1, 1.0, 10.0};
    af_rng r;
    af_rng_seed(&r, 5, 5);
    enum { K = 10, N = 20000 };
    for (size_t a = 0; a < sizeof alphas / sizeof *alphas; a++) {
        double mean[K] = {0}, p[K];
        for (int i = 0; i < N; i++) {
            af_rng_dirichlet(&r, alphas[a], p, K);
            double sum = 0.0;
            for (int k = 0; k < K; k++) {
                CHECK_MSG(p[k] >= 0.0 && p[k] <= 1.0, "alpha %g: p[%d] = %g", alphas[a], k, p[k]);
                sum += p[k];
                mean[k] += p[k] / N;
            }
            CHECK_MSG(fabs(sum - 1.0) < 1e-12, "alpha %g: sum %.17g", alphas[a], sum);
        }
        /* symmetric Dirichlet: each coordinate has mean 1/K; var (1/K)(1-1/K)/(K·alpha+1) */
        for (int k = 0; k < K; k++) {
            double sd = sqrt(0.09 / (K * alphas[a] + 1.0) / N);
            CHECK_MSG(fabs(mean[k] - 0.1) < 6.0 * sd, "alpha %g: mean[%d] = %g", alphas[a], k,
                      mean[k]);
        }
    }
    /* concentration: small alpha puts most mass on one coordinate, large alpha spreads it */
    double p[K], maxp_small = 0.0, maxp_large = 0.0;
    for (int i = 0; i < 1000; i++) {
        af_rng_dirichlet(&r, 0.01, p, K);
        double m = 0.0;
        for (int k = 0; k < K; k++)
            m = p[k] > m ? p[k] : m;
        maxp_small += m / 1000;
        af_rng_dirichlet(&r, 100.0, p, K);
        m = 0.0;
        for (int k = 0; k < K; k++)
            m = p[k] > m ? p[k] : m;
        maxp_large += m / 1000;
    }
    CHECK(maxp_small > 0.9);
    CHECK(maxp_large < 0.15);
}

TEST(rng_shuffle_is_a_permutation)
{
    enum { N = 1000 };
    uint32_t idx[N], seen[N];
    af_rng r;
    af_rng_seed(&r, 8, 0);
    for (int i = 0; i < N; i++)
        idx[i] = (uint32_t)i;
    af_rng_shuffle_u32(&r, idx, N);
    memset(seen, 0, sizeof seen);
    int fixed = 0;
    for (int i = 0; i < N; i++) {
        CHECK(idx[i] < N);
        seen[idx[i]]++;
        fixed += idx[i] == (uint32_t)i;
    }
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(seen[i], 1);
    CHECK(fixed < 10); /* expected 1 fixed point */
    /* position 0 takes each value about equally often over many shuffles of 4 */
    int first[4] = {0};
    for (int t = 0; t < 40000; t++) {
        uint32_t s[4] = {0, 1, 2, 3};
        af_rng_shuffle_u32(&r, s, 4);
        first[s[0]]++;
    }
    for (int k = 0; k < 4; k++)
        CHECK_NEAR(first[k] / 40000.0, 0.25, 0.015);
    af_rng_shuffle_u32(&r, idx, 0); /* n = 0 and 1 are no-ops */
    af_rng_shuffle_u32(&r, idx, 1);
}
