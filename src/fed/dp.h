/* dp.h — differential-privacy primitives for DP-FedAvg: L2 norm, clipping, Gaussian noise,
 * the server's noised average, noise split across devices, and adaptive clipping.
 *
 * Layer `fed` (core + libm). Operates on the flat float buffers of DESIGN.md: an update is
 * one float[n]. Randomness is a caller-owned af_rng (reproducible simulation); see
 * docs/privacy-accountant.md for why a deployment must seed it from a secure source, and
 * for the formulas and references (McMahan et al. 2018; Andrew et al. 2021). Nothing here
 * allocates or prints; the accountant that turns (q, z) into ε lives in fed/accountant.h.
 *
 *   double norm; int clipped;
 *   dp_clip_l2(delta, n, S, &norm, &clipped);          // on each device
 *   ... sum the clipped deltas (plain or secure aggregation) ...
 *   dp_fedavg_noise_average(sum, n, S, z, q * N, rng); // on the server: noise, then average
 */
#ifndef AF_FED_DP_H
#define AF_FED_DP_H

#include <stddef.h>

#include "core/rng.h"

/* ‖x‖₂ of x[0..n), accumulated in double (each float square is exact in double). Inf or NaN
 * elements give inf or NaN. n = 0 → 0. */
double dp_l2_norm(const float *x, size_t n);

/* Clips x[0..n) in place to L2 norm at most `clip` (> 0, finite): x ← x · min(1, clip/‖x‖).
 * The result is guaranteed ‖x‖ ≤ clip as computed by dp_l2_norm (float rounding of the
 * scaled vector is corrected by a further ≤ 1e-6 relative shrink), so the sensitivity the
 * accountant assumes holds exactly. A vector with ‖x‖ ≤ clip is left bit-for-bit unchanged.
 * norm_out (may be NULL) gets the norm before clipping; clipped_out (may be NULL) gets 1 if
 * x was scaled, else 0. Returns 0; AF_EINVAL for NULL x with n > 0 or a non-finite element
 * (message says which), AF_ERANGE for a bad clip; x and the outputs unchanged on error. */
int dp_clip_l2(float *x, size_t n, double clip, double *norm_out, int *clipped_out);

/* x[i] += N(0, sigma²) for i in [0, n), sigma ≥ 0 finite (0 adds nothing, draws nothing).
 * Draw order (fixed, so runs reproduce and tests can recompute it): for each pair
 * (x[2k], x[2k+1]) two uniforms u1, u2 = af_rng_uniform(rng), then Box-Muller's two outputs
 *   r = sqrt(−2 ln(1 − u1)),  x[2k] += σ·r·cos(2πu2),  x[2k+1] += σ·r·sin(2πu2);
 * an odd last element uses the cosine output only. Both outputs of each pair are used, so it
 * costs about half of calling af_rng_normal per element. Returns 0, or AF_EINVAL/AF_ERANGE. */
int dp_add_gaussian(float *x, size_t n, double sigma, af_rng *rng);

/* The DP-FedAvg server step (McMahan et al. 2018): given sum[0..n) = Σ of the round's clipped
 * updates (each ‖Δ‖ ≤ clip), writes in place
 *   avg = (sum + N(0, (z·clip)² I)) / denom.
 * denom > 0 is the estimator's denominator: the fixed expected count q·N (the unbiased
 * "fixed-denominator" estimator that the accountant's analysis covers) or, if the caller
 * chooses, the actual number of reports (lower variance, but the count itself is then
 * released un-noised; see the doc). z = 0 averages without noise. Returns 0, or
 * AF_EINVAL/AF_ERANGE with sum unchanged. */
int dp_fedavg_noise_average(float *sum, size_t n, double clip, double z, double denom, af_rng *rng);

/* Distributed noise for secure aggregation: the std each of n_devices adds to its own clipped
 * update so that the noise of any t_honest of them alone has variance (z·clip)²:
 *   σ_dev = z·clip / sqrt(t_honest),   1 ≤ t_honest ≤ n_devices.
 * With t_honest = n_devices the sum of all shares has exactly the central variance; with
 * t_honest < n_devices the privacy holds as long as at least t_honest honest devices' shares
 * reach the sum, at the cost of n_devices/t_honest times the central variance when all report.
 * Returns 0, or AF_ERANGE with *sigma_out unchanged. */
int dp_split_noise_sigma(double z, double clip, size_t n_devices, size_t t_honest,
                         double *sigma_out);

/* Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021; TF Privacy's
 * QuantileEstimatorQuery with geometric updates). The clip C tracks the γ-quantile of the
 * update norms: each round every report contributes b_i = 1 if ‖Δ_i‖ ≤ C (not clipped) else 0,
 * the server estimates the fraction b̄ with noise, then C ← C · exp(−η (b̄ − γ)). */
typedef struct dp_adaptive_clip {
    double clip;            /* C: the current clipping norm, > 0 */
    double target_quantile; /* γ ∈ [0, 1]: fraction of updates that should be unclipped */
    double lr;              /* η_C > 0: C changes by at most a factor e^η per round */
    double count_stddev;    /* σ_b ≥ 0: std of the noise added to the centred count Σ(b_i − ½) */
} dp_adaptive_clip;

/* Fills *ac; Andrew et al. suggest γ = 0.5, η = 0.2, σ_b = expected reports / 20.
 * Returns 0, or AF_ERANGE naming the bad field with *ac unchanged. */
int dp_adaptive_clip_init(dp_adaptive_clip *ac, double clip0, double target_quantile, double lr,
                          double count_stddev);

/* The noised unclipped fraction of a round:
 *   b̄ = clamp( (Σ(b_i − ½) + N(0, σ_b²)) / expected_count + ½, 0, 1 ),
 * with Σ(b_i − ½) = n_unclipped − n_reports/2 (the ±½ centring halves the sensitivity to ½).
 * expected_count > 0 is the fixed denominator (q·N); 0 ≤ n_unclipped ≤ n_reports.
 * If the devices already noised their centred bits (distributed noise), pass a zero
 * count_stddev in *ac so that no second noise is drawn. Returns 0, or AF_ERANGE/AF_EINVAL
 * with *b_bar unchanged. */
int dp_adaptive_clip_fraction(const dp_adaptive_clip *ac, double n_unclipped, double n_reports,
                              double expected_count, af_rng *rng, double *b_bar);

/* The geometric step C ← C · exp(−η (b̄ − γ)): b̄ > γ (too few updates clipped, C too large)
 * shrinks C; b̄ < γ (most updates clipped) grows it. b_bar ∈ [0, 1]. Returns 0, or AF_ERANGE
 * with *ac unchanged. */
int dp_adaptive_clip_update(dp_adaptive_clip *ac, double b_bar);

/* The noise multiplier to put on the updates so that updates and count together are a
 * Gaussian mechanism with multiplier z (what the accountant must be given):
 *   z_Δ = (z⁻² − (2σ_b)⁻²)^(−½),  which needs 2σ_b > z.
 * σ_b = 0 (no adaptive clipping) gives z_Δ = z. Returns 0, or AF_ERANGE when σ_b is too small
 * for z (message gives the minimum), *z_delta unchanged on error. */
int dp_adaptive_noise_multiplier(double z, double count_stddev, double *z_delta);

#endif
