/* accountant.c — RDP accountant for the Poisson-subsampled Gaussian mechanism (accountant.h).
 *
 * Layer `fed`, libm only. A line-by-line port of dp-accounting's rdp_privacy_accountant.py
 * (v0.6: _compute_log_a_int, _compute_log_a_frac, _log_erfc, compute_epsilon, compute_delta)
 * so that its numbers can be checked against the Python reference; everything is in log
 * space because the binomial terms overflow doubles for large orders. No allocation, no
 * globals (lgamma_r rather than lgamma, which writes the global signgam).
 */
#include "fed/accountant.h"

#include <math.h>

#include "core/err.h"

const double acct_default_orders[ACCT_N_DEFAULT_ORDERS] = {
    1.1,  1.2,  1.3,  1.4,  1.5,  1.6,  1.7,  1.8,  1.9,  2.0,  2.1,  2.2,  2.3,  2.4,  2.5,
    2.6,  2.7,  2.8,  2.9,  3.0,  3.1,  3.2,  3.3,  3.4,  3.5,  3.6,  3.7,  3.8,  3.9,  4.0,
    4.1,  4.2,  4.3,  4.4,  4.5,  4.6,  4.7,  4.8,  4.9,  5.0,  5.1,  5.2,  5.3,  5.4,  5.5,
    5.6,  5.7,  5.8,  5.9,  6.0,  6.1,  6.2,  6.3,  6.4,  6.5,  6.6,  6.7,  6.8,  6.9,  7.0,
    7.1,  7.2,  7.3,  7.4,  7.5,  7.6,  7.7,  7.8,  7.9,  8.0,  8.1,  8.2,  8.3,  8.4,  8.5,
    8.6,  8.7,  8.8,  8.9,  9.0,  9.1,  9.2,  9.3,  9.4,  9.5,  9.6,  9.7,  9.8,  9.9,  10.0,
    10.1, 10.2, 10.3, 10.4, 10.5, 10.6, 10.7, 10.8, 10.9, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0,
    17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0,
    32.0, 33.0, 34.0, 35.0, 36.0, 37.0, 38.0, 39.0, 40.0, 41.0, 42.0, 43.0, 44.0, 45.0, 46.0,
    47.0, 48.0, 49.0, 50.0, 51.0, 52.0, 53.0, 54.0, 55.0, 56.0, 57.0, 58.0, 59.0, 60.0, 61.0,
    62.0, 63.0, 128.0, 256.0, 512.0, 1024.0,
};

const double acct_tfp_orders[ACCT_N_TFP_ORDERS] = {
    1.25, 1.5,  1.75, 2.0,  2.25, 2.5,  3.0,  3.5,  4.0,  4.5,  5.0,  6.0,  7.0,  8.0,  9.0,
    10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0,
    25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 32.0, 33.0, 34.0, 35.0, 36.0, 37.0, 38.0, 39.0,
    40.0, 41.0, 42.0, 43.0, 44.0, 45.0, 46.0, 47.0, 48.0, 49.0, 50.0, 51.0, 52.0, 53.0, 54.0,
    55.0, 56.0, 57.0, 58.0, 59.0, 60.0, 61.0, 62.0, 63.0, 128.0, 256.0, 512.0,
};

/* The fractional series stops after this many terms (dp-accounting: _MAX_STEPS_LOG_A_FRAC). */
#define MAX_STEPS_LOG_A_FRAC 1000
/* Noise-multiplier search range and stopping ratio of the bisection (hi/lo − 1). */
#define SOLVE_Z_MIN 1e-6
#define SOLVE_Z_MAX 1e6
#define SOLVE_Z_RTOL 1e-6

/* log(e^x + e^y) without overflow. */
static double log_add(double x, double y)
{
    double a = x < y ? x : y, b = x < y ? y : x;
    if (a == -INFINITY)
        return b;
    if (b == INFINITY)
        return INFINITY;
    return log1p(exp(a - b)) + b; /* e^a + e^b = (e^(a−b) + 1)·e^b */
}

/* log|C(n, k)| for real n, k (log|Γ| like scipy's gammaln, so negative binomials of a
 * fractional n give their magnitude, exactly as dp-accounting's _log_comb does). */
static double log_comb(double n, double k)
{
    int s;
    return lgamma_r(n + 1.0, &s) - lgamma_r(k + 1.0, &s) - lgamma_r(n - k + 1.0, &s);
}

/* log(erfc(x)), accurate where erfc underflows. erfc is a relative-accuracy libm function
 * down to ~1e-300 (x ≈ 26), so it is used directly below x = 20; above, the asymptotic
 * series erfc(x) = e^(−x²)/(x√π) · Σ_k (−1)^k (2k−1)!! / (2x²)^k, whose 9th term at x = 20
 * is < 1e-20. */
static double log_erfc(double x)
{
    if (x < 20.0)
        return log(erfc(x));
    double y = 1.0 / (2.0 * x * x), term = 1.0, s = 1.0;
    for (int k = 1; k <= 8; k++) {
        term *= -(2.0 * k - 1.0) * y;
        s += term;
    }
    return -x * x - log(x) - 0.5723649429247001 + log(s); /* ½·log π */
}

/* log A_α for integer α, 0 < q < 1 (Mironov-Talwar-Zhang 2019, Sec. 3.3):
 *   A_α = Σ_{i=0..α} C(α,i) q^i (1−q)^(α−i) exp((i² − i)/(2σ²)). */
static double log_a_int(double q, double sigma, long alpha)
{
    double log_a = -INFINITY, logq = log(q), log1mq = log1p(-q), two_s2 = 2.0 * sigma * sigma;
    for (long i = 0; i <= alpha; i++) {
        double di = (double)i;
        double log_coef = log_comb((double)alpha, di) + di * logq + (double)(alpha - i) * log1mq;
        log_a = log_add(log_a, log_coef + (di * di - di) / two_s2);
    }
    return log_a;
}

/* log A_α for fractional α, 0 < q < 1 (Mironov-Talwar-Zhang 2019, Sec. 3.3): A_α splits at
 * z0 = σ² log(1/q − 1) + ½ into two series of positive terms
 *   s0_i = |C(α,i)| q^i (1−q)^(α−i) e^((i²−i)/(2σ²)) · ½ erfc((i − z0)/(√2 σ)),
 *   s1_i = |C(α,i)| q^(α−i) (1−q)^i e^((j²−j)/(2σ²)) · ½ erfc((z0 − j)/(√2 σ)), j = α − i,
 * summed until both decrease and are below e^−30 of the total. +inf if it does not converge. */
static double log_a_frac(double q, double sigma, double alpha)
{
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    double z0 = sigma * sigma * log(1.0 / q - 1.0) + 0.5;
    double logq = log(q), log1mq = log1p(-q), two_s2 = 2.0 * sigma * sigma;
    double sqrt2_sigma = sqrt(2.0) * sigma, log_half = log(0.5);
    double last_s0 = -INFINITY, last_s1 = -INFINITY;
    for (int k = 0; k < MAX_STEPS_LOG_A_FRAC; k++) {
        double i = (double)k, j = alpha - i;
        double log_coef = log_comb(alpha, i);
        double log_t0 = log_coef + i * logq + j * log1mq;
        double log_t1 = log_coef + j * logq + i * log1mq;
        double log_e0 = log_half + log_erfc((i - z0) / sqrt2_sigma);
        double log_e1 = log_half + log_erfc((z0 - j) / sqrt2_sigma);
        double log_s0 = log_t0 + (i * i - i) / two_s2 + log_e0;
        double log_s1 = log_t1 + (j * j - j) / two_s2 + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        double total = log_add(log_a0, log_a1);
        double smax = log_s0 > log_s1 ? log_s0 : log_s1;
        if (log_s0 < last_s0 && log_s1 < last_s1 && smax < total - 30.0)
            return total;
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    return INFINITY;
}

/* RDP of one step at order alpha (dp-accounting compute_one_order). */
static double rdp_one(double q, double z, double alpha)
{
    if (q == 0.0)
        return 0.0;
    if (z == 0.0)
        return INFINITY;
    if (q == 1.0)
        return alpha / (2.0 * z * z); /* plain Gaussian mechanism */
    double log_a = alpha == floor(alpha) ? log_a_int(q, z, (long)alpha) : log_a_frac(q, z, alpha);
    return log_a / (alpha - 1.0);
}

static int check_orders(const double *orders, size_t n, double min_order, int strict)
{
    if (!orders || n == 0)
        return af_seterr(AF_EINVAL, "orders: expected a non-empty list of Renyi orders");
    for (size_t i = 0; i < n; i++) {
        double a = orders[i];
        if (!isfinite(a) || (strict ? a <= min_order : a < min_order) || a > ACCT_MAX_ORDER)
            return af_seterr(AF_ERANGE, "orders[%zu] = %g: expected a finite order %s %g and <= %g",
                             i, a, strict ? ">" : ">=", min_order, ACCT_MAX_ORDER);
    }
    return 0;
}

static int check_mechanism(double q, double z, int64_t steps)
{
    if (!(q >= 0.0 && q <= 1.0))
        return af_seterr(AF_ERANGE, "q = %g: expected a sampling rate in [0, 1]", q);
    if (!(z >= 0.0) || !isfinite(z))
        return af_seterr(AF_ERANGE, "noise multiplier z = %g: expected a finite value >= 0", z);
    if (steps < 0)
        return af_seterr(AF_ERANGE, "steps = %lld: expected >= 0", (long long)steps);
    return 0;
}

/* rdp_out[i] = steps · RDP_1(orders[i]); arguments already checked. */
static void rdp_fill(double q, double z, int64_t steps, const double *orders, size_t n,
                     double *rdp_out)
{
    for (size_t i = 0; i < n; i++)
        rdp_out[i] = steps == 0 ? 0.0 : (double)steps * rdp_one(q, z, orders[i]);
}

int acct_compute_rdp(double q, double z, int64_t steps, const double *orders, size_t n_orders,
                     double *rdp_out)
{
    int rc;
    if ((rc = check_mechanism(q, z, steps)) || (rc = check_orders(orders, n_orders, 1.0, 1)))
        return rc;
    if (!rdp_out)
        return af_seterr(AF_EINVAL, "rdp_out: expected an array of %zu doubles", n_orders);
    rdp_fill(q, z, steps, orders, n_orders, rdp_out);
    return 0;
}

static int check_rdp(const double *rdp, size_t n)
{
    if (!rdp)
        return af_seterr(AF_EINVAL, "rdp: expected an array of %zu values", n);
    for (size_t i = 0; i < n; i++)
        if (isnan(rdp[i]))
            return af_seterr(AF_EINVAL, "rdp[%zu] is NaN: expected a number or +inf", i);
    return 0;
}

/* Arguments already checked; delta ∈ [0, 1]. */
static void epsilon_of(const double *orders, const double *rdp, size_t n, double delta,
                       double *eps, double *best_order)
{
    if (delta == 0.0) {
        int all_zero = 1;
        for (size_t i = 0; i < n; i++)
            all_zero &= rdp[i] == 0.0;
        *eps = all_zero ? 0.0 : INFINITY;
        if (best_order)
            *best_order = 0.0;
        return;
    }
    size_t best = 0;
    double best_eps = INFINITY;
    for (size_t i = 0; i < n; i++) {
        double a = orders[i], r = rdp[i], e;
        if (r < 0.0)
            e = 0.0; /* only from rounding in extreme cases; dp-accounting does the same */
        else if (delta * delta + expm1(-r) > 0.0)
            e = 0.0; /* KL bound: δ ≤ sqrt(1 − e^−KL) already holds at ε = 0 */
        else if (a > 1.01)
            /* Canonne-Kamath-Steinke 2020 / Balle et al. 2020:
             * ε = r + log(1 − 1/α) − log(δ·α)/(α − 1); unstable as α → 1, hence α > 1.01. */
            e = r + log1p(-1.0 / a) - log(delta * a) / (a - 1.0);
        else
            e = INFINITY;
        if (i == 0 || e < best_eps) { /* first minimum, like np.argmin */
            best_eps = e;
            best = i;
        }
    }
    *eps = best_eps > 0.0 ? best_eps : 0.0;
    if (best_order)
        *best_order = orders[best];
}

int acct_get_epsilon(const double *orders, const double *rdp, size_t n, double delta, double *eps,
                     double *best_order)
{
    int rc;
    if ((rc = check_orders(orders, n, 1.0, 0)) || (rc = check_rdp(rdp, n)))
        return rc;
    if (!(delta >= 0.0 && delta <= 1.0))
        return af_seterr(AF_ERANGE, "delta = %g: expected a value in [0, 1]", delta);
    if (!eps)
        return af_seterr(AF_EINVAL, "eps: expected an output pointer");
    epsilon_of(orders, rdp, n, delta, eps, best_order);
    return 0;
}

int acct_get_delta(const double *orders, const double *rdp, size_t n, double eps, double *delta,
                   double *best_order)
{
    int rc;
    if ((rc = check_orders(orders, n, 1.0, 0)) || (rc = check_rdp(rdp, n)))
        return rc;
    if (!(eps >= 0.0))
        return af_seterr(AF_ERANGE, "epsilon = %g: expected a value >= 0", eps);
    if (!delta)
        return af_seterr(AF_EINVAL, "delta: expected an output pointer");
    size_t best = 0;
    double best_log = INFINITY;
    for (size_t i = 0; i < n; i++) {
        double a = orders[i], r = rdp[i], ld;
        if (r <= 0.0)
            ld = -INFINITY; /* r < 0 only from rounding: dp-accounting returns δ = 0 too */
        else
            ld = 0.5 * log1p(-exp(-r)); /* KL bound δ ≤ sqrt(1 − e^−KL) */
        if (a > 1.01) {
            /* log δ = (α − 1)(r − ε + log(1 − 1/α)) − log α (Canonne-Kamath-Steinke 2020) */
            double b = (a - 1.0) * (r - eps + log1p(-1.0 / a)) - log(a);
            if (b < ld)
                ld = b;
        }
        if (i == 0 || ld < best_log) {
            best_log = ld;
            best = i;
        }
    }
    double d = exp(best_log);
    *delta = d < 1.0 ? d : 1.0;
    if (best_order)
        *best_order = orders[best];
    return 0;
}

int acct_init(acct *a, const double *orders, size_t n_orders)
{
    if (!a)
        return af_seterr(AF_EINVAL, "acct_init: expected an accountant");
    if (!orders) {
        orders = acct_default_orders;
        n_orders = ACCT_N_DEFAULT_ORDERS;
    }
    int rc = check_orders(orders, n_orders, 1.0, 1);
    if (rc)
        return rc;
    if (n_orders > ACCT_MAX_ORDERS)
        return af_seterr(AF_ERANGE, "orders: %zu given, at most ACCT_MAX_ORDERS = %d", n_orders,
                         ACCT_MAX_ORDERS);
    a->n_orders = n_orders;
    for (size_t i = 0; i < n_orders; i++) {
        a->orders[i] = orders[i];
        a->rdp[i] = 0.0;
    }
    a->steps = 0;
    return 0;
}

static int check_acct(const acct *a)
{
    if (!a || a->n_orders == 0 || a->n_orders > ACCT_MAX_ORDERS)
        return af_seterr(AF_EINVAL, "accountant: expected one set up by acct_init");
    return 0;
}

/* out[i] = a->rdp[i] + rdp of (q, z, steps); arguments already checked. */
static void rdp_after(const acct *a, double q, double z, int64_t steps, double *out)
{
    rdp_fill(q, z, steps, a->orders, a->n_orders, out);
    for (size_t i = 0; i < a->n_orders; i++)
        out[i] += a->rdp[i];
}

int acct_step(acct *a, double q, double z, int64_t steps)
{
    int rc;
    if ((rc = check_acct(a)) || (rc = check_mechanism(q, z, steps)))
        return rc;
    if (a->steps > INT64_MAX - steps)
        return af_seterr(AF_ERANGE, "steps: total would overflow int64");
    double tmp[ACCT_MAX_ORDERS];
    rdp_after(a, q, z, steps, tmp);
    for (size_t i = 0; i < a->n_orders; i++)
        a->rdp[i] = tmp[i];
    a->steps += steps;
    return 0;
}

int acct_epsilon(const acct *a, double delta, double *eps, double *best_order)
{
    int rc = check_acct(a);
    return rc ? rc : acct_get_epsilon(a->orders, a->rdp, a->n_orders, delta, eps, best_order);
}

int acct_delta(const acct *a, double eps, double *delta, double *best_order)
{
    int rc = check_acct(a);
    return rc ? rc : acct_get_delta(a->orders, a->rdp, a->n_orders, eps, delta, best_order);
}

int acct_epsilon_after(const acct *a, double q, double z, int64_t steps, double delta, double *eps,
                       double *best_order)
{
    int rc;
    if ((rc = check_acct(a)) || (rc = check_mechanism(q, z, steps)))
        return rc;
    double tmp[ACCT_MAX_ORDERS];
    rdp_after(a, q, z, steps, tmp);
    return acct_get_epsilon(a->orders, tmp, a->n_orders, delta, eps, best_order);
}

/* Shared checks of the two solvers; fills in the default orders. */
static int check_budget(const double **orders, size_t *n, double delta, double target_eps)
{
    if (!*orders) {
        *orders = acct_default_orders;
        *n = ACCT_N_DEFAULT_ORDERS;
    }
    int rc = check_orders(*orders, *n, 1.0, 1);
    if (rc)
        return rc;
    if (*n > ACCT_MAX_ORDERS)
        return af_seterr(AF_ERANGE, "orders: %zu given, at most ACCT_MAX_ORDERS = %d", *n,
                         ACCT_MAX_ORDERS);
    if (!(delta > 0.0 && delta < 1.0))
        return af_seterr(AF_ERANGE, "delta = %g: expected a value in (0, 1)", delta);
    if (!isfinite(target_eps))
        return af_seterr(AF_EINVAL, "target epsilon = %g: expected a finite number", target_eps);
    return 0;
}

static double eps_for(double q, double z, int64_t steps, double delta, const double *orders,
                      size_t n)
{
    double rdp[ACCT_MAX_ORDERS], eps;
    rdp_fill(q, z, steps, orders, n, rdp);
    epsilon_of(orders, rdp, n, delta, &eps, NULL);
    return eps;
}

int acct_solve_noise(double q, int64_t steps, double delta, double target_eps,
                     const double *orders, size_t n_orders, double *z_out)
{
    int rc;
    if ((rc = check_mechanism(q, 0.0, steps)) ||
        (rc = check_budget(&orders, &n_orders, delta, target_eps)))
        return rc;
    if (!z_out)
        return af_seterr(AF_EINVAL, "z_out: expected an output pointer");
    if (q == 0.0 || steps == 0) {
        *z_out = 0.0; /* nothing is released about anyone: no noise needed */
        return 0;
    }
    if (!(target_eps > 0.0))
        return af_seterr(AF_ERANGE, "target epsilon = %g: expected > 0 when q > 0", target_eps);
    /* Bracket [lo, hi] with ε(lo) > target ≥ ε(hi), doubling/halving from z = 1; ε(z) is
     * non-increasing in z. */
    double hi = 1.0, lo;
    while (eps_for(q, hi, steps, delta, orders, n_orders) > target_eps) {
        hi *= 2.0;
        if (hi > SOLVE_Z_MAX)
            return af_seterr(AF_ERANGE,
                             "target epsilon = %g at delta = %g: not reached by any noise "
                             "multiplier <= %g",
                             target_eps, delta, SOLVE_Z_MAX);
    }
    for (lo = hi / 2.0; eps_for(q, lo, steps, delta, orders, n_orders) <= target_eps; lo /= 2.0) {
        hi = lo;
        if (lo < SOLVE_Z_MIN)
            return af_seterr(AF_ERANGE,
                             "target epsilon = %g: met by every noise multiplier >= %g; "
                             "expected a budget that needs some noise",
                             target_eps, SOLVE_Z_MIN);
    }
    while (hi / lo - 1.0 > SOLVE_Z_RTOL) {
        double mid = sqrt(lo * hi); /* bisection in log z */
        if (eps_for(q, mid, steps, delta, orders, n_orders) <= target_eps)
            hi = mid;
        else
            lo = mid;
    }
    *z_out = hi;
    return 0;
}

/* ε of T steps given the RDP of one step. */
static double eps_scaled(const double *rdp1, int64_t T, double delta, const double *orders,
                         size_t n)
{
    double rdp[ACCT_MAX_ORDERS], eps;
    for (size_t i = 0; i < n; i++)
        rdp[i] = (double)T * rdp1[i];
    epsilon_of(orders, rdp, n, delta, &eps, NULL);
    return eps;
}

int acct_max_steps(double q, double z, double delta, double target_eps, const double *orders,
                   size_t n_orders, int64_t *steps_out)
{
    int rc;
    if ((rc = check_mechanism(q, z, 0)) ||
        (rc = check_budget(&orders, &n_orders, delta, target_eps)))
        return rc;
    if (!steps_out)
        return af_seterr(AF_EINVAL, "steps_out: expected an output pointer");
    if (!(target_eps >= 0.0))
        return af_seterr(AF_ERANGE, "target epsilon = %g: expected >= 0", target_eps);
    /* RDP is linear in the step count: compute one step once, then search on T. */
    double rdp1[ACCT_MAX_ORDERS];
    rdp_fill(q, z, 1, orders, n_orders, rdp1);
    int64_t ok = 0, bad = 1; /* ε(ok) ≤ target < ε(bad), once bracketed */
    while (eps_scaled(rdp1, bad, delta, orders, n_orders) <= target_eps) {
        ok = bad;
        if (bad > INT64_MAX / 2) {
            *steps_out = INT64_MAX; /* the budget never runs out (e.g. q = 0) */
            return 0;
        }
        bad *= 2;
    }
    while (bad - ok > 1) {
        int64_t mid = ok + (bad - ok) / 2;
        if (eps_scaled(rdp1, mid, delta, orders, n_orders) <= target_eps)
            ok = mid;
        else
            bad = mid;
    }
    *steps_out = ok;
    return 0;
}
