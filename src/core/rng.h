/* rng.h — explicit, seedable random number state (PCG32, O'Neill 2014).
 *
 * Randomness in Artificien is always a caller-owned af_rng passed in, never a global, so a
 * run is reproducible from its seed whatever the thread count. af_rng_split derives
 * independent streams (one per device, per epoch, …) from a parent seed and an index.
 */
#ifndef AF_CORE_RNG_H
#define AF_CORE_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct af_rng {
    uint64_t state;
    uint64_t inc;
} af_rng;

/* Seeds rng from (seed, stream); different streams give independent sequences. */
void af_rng_seed(af_rng *rng, uint64_t seed, uint64_t stream);

/* A child generator for index `i` of a parent seed: deterministic, independent per i. */
af_rng af_rng_split(uint64_t seed, uint64_t i);

uint32_t af_rng_u32(af_rng *rng);
uint64_t af_rng_u64(af_rng *rng);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint32_t af_rng_below(af_rng *rng, uint32_t n);
/* Uniform double in [0, 1) with 53 random bits. */
double af_rng_uniform(af_rng *rng);
/* Standard normal N(0,1) (Box-Muller, no cached second value so state is simple). */
double af_rng_normal(af_rng *rng);
/* Gamma(shape, 1) for shape > 0 (Marsaglia-Tsang). */
double af_rng_gamma(af_rng *rng, double shape);
/* Fills p[0..k) with a Dirichlet(alpha·1) draw; alpha > 0. */
void af_rng_dirichlet(af_rng *rng, double alpha, double *p, size_t k);
/* Fisher-Yates shuffle of idx[0..n). */
void af_rng_shuffle_u32(af_rng *rng, uint32_t *idx, size_t n);

#endif
