/* popstats.h — privacy-preserving population statistics: the label histogram of a population
 * of devices, released with differential privacy through secure aggregation.
 *
 * Layer `fed` (core, fed/secagg, fed/dp, fed/accountant). Before training, a model owner asks
 * "how balanced are the labels on the devices?". Every device clips its label histogram to a
 * contribution bound B (it counts at most B samples), adds its share of Gaussian noise and
 * quantises it for secure aggregation; the coordinator only ever holds sums of at least t
 * devices, each carrying noise of variance ≥ (z·B)², so the owner learns the noisy population
 * histogram — an (ε, δ)-DP release, one Gaussian mechanism with q = 1 — and no device's own.
 * This file is the per-device encoding and the owner-side arithmetic; running the protocol
 * (in process: sim/popstats.h; over HTTP: later) is the caller's. Never prints, never
 * allocates. Design and what it protects: docs/privacy.md §8.
 *
 *   popstats_params pp;  popstats_params_init(&pp, 10, 100.0, 2.0, n, t);     // every party
 *   popstats_device_encode(&pp, my_counts, rng, words, &clipped, NULL);        // device → secagg
 *   popstats_accumulate(&pp, secure_sum, acc);                                 // coordinator
 *   popstats_release(acc, 10, noise_var, 2.0, 100.0, 1e-5, &res);              // owner's view
 */
#ifndef AF_FED_POPSTATS_H
#define AF_FED_POPSTATS_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "fed/secagg.h"

#define POPSTATS_MAX_CLASSES 256

/* What every party of one secure-aggregation group of n devices (threshold t) agrees on. */
typedef struct popstats_params {
    int n_classes;
    double bound;       /* B > 0: a device's counts are scaled so that they sum to at most B */
    double z;           /* noise multiplier ≥ 0: any t devices' noise together has std z·B */
    uint32_t n, t;      /* devices in the group and the secure-aggregation threshold */
    double sigma_dev;   /* each device's noise std: z·B/√t (dp_split_noise_sigma) */
    secagg_quant quant; /* range ≥ B + 8σ_dev, n_max = n, with an integer scale (see below) */
} popstats_params;

/* Fills *pp. The quantiser's scale is rounded down to an integer, so integer counts quantise
 * and sum exactly: without noise and without clipping the release is the exact histogram.
 * Returns 0, or AF_ERANGE/AF_EINVAL naming the bad value (1 ≤ n_classes ≤ 256, B > 0 finite,
 * 0 ≤ z ≤ 1e6, 1 ≤ t ≤ n ≤ SECAGG_MAX_DEVICES, B + 8σ_dev small enough for n summands);
 * *pp unchanged on error. */
int popstats_params_init(popstats_params *pp, int n_classes, double bound, double z, uint32_t n,
                         uint32_t t);

/* The contribution bound: out[c] = counts[c] · min(1, B / Σ counts) (L1 clipping, so the L2
 * sensitivity of the sum to one device is ≤ B). *clipped (may be NULL) = 1 if scaled.
 * Returns 0 or AF_EINVAL (NULL arguments). */
int popstats_clip(const uint32_t *counts, int n_classes, double bound, double *out, int *clipped);

/* Device side: words[0..n_classes) = quantise(clip(counts) + N(0, σ_dev²) per class), ready
 * for secagg_client_masked_input. rng draws the noise (a deployment must use a secure,
 * unlogged source: docs/privacy-accountant.md §6); with z = 0 nothing is drawn. *clipped and
 * *n_clamped (values outside the quantiser's range: a bias, about 1e-15 per value) may be
 * NULL. Returns 0 or AF_EINVAL. */
int popstats_device_encode(const popstats_params *pp, const uint32_t *counts, af_rng *rng,
                           uint32_t *words, int *clipped, size_t *n_clamped);

/* Coordinator side: adds a group's secure sum (n_classes words, from secagg_server_finish)
 * to acc[0..n_classes) as real numbers: acc[c] += (int32)sum[c] / scale. */
void popstats_accumulate(const popstats_params *pp, const uint32_t *sum, double *acc);

/* The owner's view of a release. */
typedef struct popstats_result {
    int n_classes;
    double count[POPSTATS_MAX_CLASSES];     /* noisy Σ_u clip(h_u)[c] over the counted devices */
    double count_std;                       /* std of the noise on each count */
    double total, total_std;                /* Σ_c count[c]; its noise std √C·count_std */
    double share[POPSTATS_MAX_CLASSES];     /* max(0, count[c]) / Σ max(0, count): the label mix */
    double share_std[POPSTATS_MAX_CLASSES]; /* its noise std (delta method, see below) */
    double tv_uniform;                      /* ½ Σ_c |share[c] − 1/C|: 0 = perfectly balanced */
    double tv_noise;                        /* what noise alone adds to tv_uniform on average */
    double z, bound, delta;
    double epsilon, order;                  /* (ε, δ) of the release and the best Rényi order */
} popstats_result;

/* From the summed noisy counts acc[0..n_classes) and the total noise variance per count
 * (Σ over the counted devices of σ_dev², i.e. what the group sizes imply), fills *out:
 *   share std (delta method, independent noise of std σ on each count, T = Σ counts):
 *     σ_p[c] = σ/T · √((1 − p_c)² + (C − 1)·p_c²);
 *   tv_noise = ½ Σ_c σ_p[c]·√(2/π)  (E|N(0, σ²)| = σ√(2/π): a uniform population's expected TV);
 *   ε: the accountant (fed/accountant.h) for one Gaussian step with q = 1 and multiplier z
 *     (disjoint groups compose in parallel: one device changes one group's sum by ≤ B, and
 *     each group's sum carries noise std ≥ z·B) — +inf for z = 0.
 * Shares are NaN when the clamped counts sum to 0. Returns 0, or AF_ERANGE/AF_EINVAL naming
 * the bad argument (δ ∈ (0, 1), noise_var ≥ 0, z ≥ 0, B > 0). */
int popstats_release(const double *acc, int n_classes, double noise_var, double z, double bound,
                     double delta, popstats_result *out);

#endif
