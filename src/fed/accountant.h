/* accountant.h — Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.
 *
 * Layer `fed` (libm only). Computes the RDP of DP-SGD / DP-FedAvg rounds (Mironov 2017;
 * Mironov, Talwar, Zhang 2019), composes it over rounds whose sampling rate q and noise
 * multiplier z may change, converts RDP to (ε, δ) with the conversion Google's dp-accounting
 * uses today (Canonne-Kamath-Steinke 2020 / Balle et al. 2020), and solves for the noise
 * multiplier or the number of steps that a budget allows. It is a port of dp-accounting's
 * rdp_privacy_accountant.py (v0.6) and agrees with it to ~1e-10; see docs/privacy-accountant.md.
 * It never allocates, never prints, and keeps no global state (thread-safe).
 *
 *   acct a;
 *   acct_init(&a, NULL, 0);                      // dp-accounting's default orders
 *   for (round ...) acct_step(&a, q, z, 1);      // one Poisson-sampled Gaussian step
 *   double eps, order;
 *   acct_epsilon(&a, 1e-5, &eps, &order);
 */
#ifndef AF_FED_ACCOUNTANT_H
#define AF_FED_ACCOUNTANT_H

#include <stddef.h>
#include <stdint.h>

/* Most orders an accountant holds (fixed arrays: no allocation per step). */
#define ACCT_MAX_ORDERS 256
/* Largest accepted Rényi order: integer orders cost order+1 terms each. */
#define ACCT_MAX_ORDER 100000.0

/* dp-accounting's DEFAULT_RDP_ORDERS (v0.6): 1.1, 1.2, …, 10.9 (step 0.1), 11, 12, …, 63,
 * 128, 256, 512, 1024 — 156 orders. The library default. */
#define ACCT_N_DEFAULT_ORDERS 156
extern const double acct_default_orders[ACCT_N_DEFAULT_ORDERS];

/* TensorFlow Privacy's older list (compute_dp_sgd_privacy_lib): 1.25, 1.5, 1.75, 2, 2.25,
 * 2.5, 3, 3.5, 4, 4.5, 5, 6, …, 63, 128, 256, 512 — 72 orders. Kept for comparison with
 * published TF Privacy numbers; both lists give ε = 0.724223 at order 19 for the MNIST
 * reference (q = 150/60000, z = 1.3, 6000 steps, δ = 1e-5). */
#define ACCT_N_TFP_ORDERS 72
extern const double acct_tfp_orders[ACCT_N_TFP_ORDERS];

/* RDP of `steps` compositions of the Poisson-subsampled Gaussian mechanism with sampling
 * rate q ∈ [0,1] and noise multiplier z ≥ 0 (noise std / L2 sensitivity), at each of
 * orders[0..n_orders) (each finite, > 1, ≤ ACCT_MAX_ORDER). Writes rdp_out[0..n_orders).
 * q = 0 or steps = 0 → 0; z = 0 → +inf; q = 1 → steps·α/(2z²). An order whose fractional
 * series fails to converge gets +inf (it is then never the best order).
 * Returns 0, or AF_EINVAL / AF_ERANGE (message names the argument); on error rdp_out is
 * unchanged. */
int acct_compute_rdp(double q, double z, int64_t steps, const double *orders, size_t n_orders,
                     double *rdp_out);

/* Best ε for a given δ ∈ [0,1] over the orders:
 *   ε(α) = rdp − (log δ + log α)/(α − 1) + log((α − 1)/α)   for α > 1.01,
 * 0 where the KL bound δ² + expm1(−rdp) > 0 already holds, 0 for a negative rdp (numerical
 * noise), +inf otherwise; ε = max(0, min_α ε(α)). δ = 0 gives ε = +inf unless every rdp is 0.
 * *best_order gets the minimising order (0 when δ = 0), best_order may be NULL.
 * Orders must be ≥ 1. Returns 0, AF_EINVAL or AF_ERANGE; outputs unchanged on error. */
int acct_get_epsilon(const double *orders, const double *rdp, size_t n, double delta, double *eps,
                     double *best_order);

/* Best δ for a given ε ≥ 0 over the orders (dp-accounting compute_delta):
 *   log δ(α) = min( ½·log(1 − e^−rdp),  (α−1)(rdp − ε + log(1 − 1/α)) − log α  [α > 1.01] ),
 * δ = min(1, exp(min_α log δ(α))). best_order may be NULL.
 * Returns 0, AF_EINVAL or AF_ERANGE; outputs unchanged on error. */
int acct_get_delta(const double *orders, const double *rdp, size_t n, double eps, double *delta,
                   double *best_order);

/* An accountant: caller-owned, plain data (copy it, persist orders/rdp, no free needed). */
typedef struct acct {
    size_t n_orders;
    double orders[ACCT_MAX_ORDERS];
    double rdp[ACCT_MAX_ORDERS]; /* RDP composed so far, per order */
    int64_t steps;               /* steps composed so far (for reports) */
} acct;

/* Starts an empty accountant over orders[0..n_orders), or over acct_default_orders when
 * orders is NULL (n_orders ignored). Returns 0, or AF_EINVAL/AF_ERANGE for a bad order list
 * (empty, more than ACCT_MAX_ORDERS, an order ≤ 1 or non-finite); *a unchanged on error. */
int acct_init(acct *a, const double *orders, size_t n_orders);

/* Composes `steps` Poisson-sampled Gaussian steps with rate q and noise multiplier z.
 * Returns 0 or the acct_compute_rdp error; *a unchanged on error. */
int acct_step(acct *a, double q, double z, int64_t steps);

/* ε (and best order) for δ of what has been composed. Same rules as acct_get_epsilon. */
int acct_epsilon(const acct *a, double delta, double *eps, double *best_order);

/* δ (and best order) for ε of what has been composed. Same rules as acct_get_delta. */
int acct_delta(const acct *a, double eps, double *delta, double *best_order);

/* What-if: ε after composing (q, z, steps) on top of *a, without changing *a — for "refuse
 * the round that would exceed the budget". Same errors as acct_step / acct_get_epsilon. */
int acct_epsilon_after(const acct *a, double q, double z, int64_t steps, double delta, double *eps,
                       double *best_order);

/* Smallest noise multiplier z with ε(q, z, steps, δ) ≤ target_eps over orders (NULL →
 * defaults). Bisection on log z; the returned z always meets the target and is within a
 * relative 1e-6 of the exact threshold (tested to 1e-4).
 * q = 0 or steps = 0 → 0. Returns 0; AF_EINVAL for bad arguments; AF_ERANGE when
 * target_eps ≤ 0 or no z ≤ 1e6 reaches it. *z_out unchanged on error. */
int acct_solve_noise(double q, int64_t steps, double delta, double target_eps,
                     const double *orders, size_t n_orders, double *z_out);

/* Largest number of steps T ≥ 0 with ε(q, z, T, δ) ≤ target_eps (0 when even one step
 * exceeds it; INT64_MAX when no number of steps ever does, e.g. q = 0). Exact (integer
 * search on the linear-in-T RDP). orders NULL → defaults. Returns 0, AF_EINVAL or
 * AF_ERANGE; *steps_out unchanged on error. */
int acct_max_steps(double q, double z, double delta, double target_eps, const double *orders,
                   size_t n_orders, int64_t *steps_out);

#endif
