/* rng.c — PCG32 (XSH-RR) and the distributions built on it (see rng.h). libc only. */
#include "core/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void af_rng_seed(af_rng *rng, uint64_t seed, uint64_t stream)
{
    uint64_t s = seed;
    rng->state = 0;
    rng->inc = (splitmix64(&s) ^ (stream * 0xda942042e4dd58b5ULL)) << 1 | 1u;
    af_rng_u32(rng);
    rng->state += splitmix64(&s);
    af_rng_u32(rng);
}

af_rng af_rng_split(uint64_t seed, uint64_t i)
{
    af_rng r;
    uint64_t s = seed ^ 0x5851f42d4c957f2dULL;
    uint64_t a = splitmix64(&s);
    s = a ^ (i * 0x2545f4914f6cdd1dULL);
    af_rng_seed(&r, splitmix64(&s), i);
    return r;
}

uint32_t af_rng_u32(af_rng *rng)
{
    uint64_t old = rng->state;
    rng->state = old * 6364136223846793005ULL + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

uint64_t af_rng_u64(af_rng *rng)
{
    uint64_t hi = af_rng_u32(rng);
    return hi << 32 | af_rng_u32(rng);
}

uint32_t af_rng_below(af_rng *rng, uint32_t n)
{
    /* Lemire's nearly-divisionless method with rejection: exact uniformity. */
    uint64_t m = (uint64_t)af_rng_u32(rng) * n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = -n % n;
        while (l < t) {
            m = (uint64_t)af_rng_u32(rng) * n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

double af_rng_uniform(af_rng *rng) { return (double)(af_rng_u64(rng) >> 11) * 0x1.0p-53; }

double af_rng_normal(af_rng *rng)
{
    double u1 = af_rng_uniform(rng), u2 = af_rng_uniform(rng);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double af_rng_gamma(af_rng *rng, double shape)
{
    if (shape < 1.0) {
        /* Gamma(a) = Gamma(a+1) * U^(1/a) */
        double u = af_rng_uniform(rng);
        if (u < 1e-300)
            u = 1e-300;
        return af_rng_gamma(rng, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = af_rng_normal(rng);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = af_rng_uniform(rng);
        if (u < 1.0 - 0.0331 * x * x * x * x)
            return d * v;
        if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v;
    }
}

void af_rng_dirichlet(af_rng *rng, double alpha, double *p, size_t k)
{
    double sum = 0.0;
    for (size_t i = 0; i < k; i++) {
        p[i] = af_rng_gamma(rng, alpha);
        sum += p[i];
    }
    if (sum <= 0.0) { /* all underflowed (tiny alpha): put the mass on one coordinate */
        for (size_t i = 0; i < k; i++)
            p[i] = 0.0;
        p[af_rng_below(rng, (uint32_t)k)] = 1.0;
        return;
    }
    for (size_t i = 0; i < k; i++)
        p[i] /= sum;
}

void af_rng_shuffle_u32(af_rng *rng, uint32_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = af_rng_below(rng, (uint32_t)i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
