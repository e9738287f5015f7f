/* dp.c — clipping, Gaussian noise and adaptive clipping for DP-FedAvg (see dp.h).
 *
 * Layer `fed`, core + libm. Every function validates all of its input before it writes
 * anything, so a refused call leaves the caller's buffers as they were. Norms are summed in
 * double with independent partial sums (exact squares, better rounding, and loops the
 * compiler can keep in vector registers). Nothing allocates.
 */
#include "fed/dp.h"

#include <math.h>

#include "core/err.h"

#define TWO_PI 6.283185307179586

double dp_l2_norm(const float *x, size_t n)
{
    /* 8 independent partial sums: reassociation the compiler may not do on its own */
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (double)x[i + j] * (double)x[i + j];
    for (; i < n; i++)
        acc[0] += (double)x[i] * (double)x[i];
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    return sqrt(s);
}

static int check_vec(const float *x, size_t n, const char *name)
{
    if (!x && n > 0)
        return af_seterr(AF_EINVAL, "%s: NULL with %zu elements", name, n);
    return 0;
}

static int nonfinite_error(const float *x, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return af_seterr(AF_EINVAL, "%s[%zu] = %g: expected finite values", name, i,
                             (double)x[i]);
    return af_seterr(AF_EINVAL, "%s: norm is not finite", name);
}

int dp_clip_l2(float *x, size_t n, double clip, double *norm_out, int *clipped_out)
{
    int rc = check_vec(x, n, "update");
    if (rc)
        return rc;
    if (!(clip > 0.0) || !isfinite(clip))
        return af_seterr(AF_ERANGE, "clip norm = %g: expected a finite value > 0", clip);
    double norm = dp_l2_norm(x, n);
    if (!isfinite(norm))
        return nonfinite_error(x, n, "update");
    int clipped = norm > clip;
    if (clipped) {
        /* x ← x · clip/‖x‖; float rounding can leave ‖x‖ a few ulps above clip, so shrink
         * by a further 2^-22 until it is not (once, in practice). */
        double scale = clip / norm, cur = norm;
        for (int pass = 0; pass < 16 && cur > clip; pass++) {
            for (size_t i = 0; i < n; i++)
                x[i] = (float)((double)x[i] * scale);
            cur = dp_l2_norm(x, n);
            scale = 1.0 - 0x1.0p-22;
        }
    }
    if (norm_out)
        *norm_out = norm;
    if (clipped_out)
        *clipped_out = clipped;
    return 0;
}

int dp_add_gaussian(float *x, size_t n, double sigma, af_rng *rng)
{
    int rc = check_vec(x, n, "vector");
    if (rc)
        return rc;
    if (!(sigma >= 0.0) || !isfinite(sigma))
        return af_seterr(AF_ERANGE, "noise stddev = %g: expected a finite value >= 0", sigma);
    if (sigma == 0.0 || n == 0)
        return 0;
    if (!rng)
        return af_seterr(AF_EINVAL, "rng: expected a seeded af_rng");
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        /* Box-Muller, both outputs: 1 − u1 ∈ (0, 1] so the log is finite */
        double u1 = af_rng_uniform(rng), u2 = af_rng_uniform(rng);
        double r = sigma * sqrt(-2.0 * log(1.0 - u1)), t = TWO_PI * u2;
        x[i] = (float)((double)x[i] + r * cos(t));
        x[i + 1] = (float)((double)x[i + 1] + r * sin(t));
    }
    if (i < n) {
        double u1 = af_rng_uniform(rng), u2 = af_rng_uniform(rng);
        x[i] = (float)((double)x[i] + sigma * sqrt(-2.0 * log(1.0 - u1)) * cos(TWO_PI * u2));
    }
    return 0;
}

int dp_fedavg_noise_average(float *sum, size_t n, double clip, double z, double denom, af_rng *rng)
{
    int rc = check_vec(sum, n, "sum");
    if (rc)
        return rc;
    if (!(clip > 0.0) || !isfinite(clip))
        return af_seterr(AF_ERANGE, "clip norm = %g: expected a finite value > 0", clip);
    if (!(z >= 0.0) || !isfinite(z))
        return af_seterr(AF_ERANGE, "noise multiplier z = %g: expected a finite value >= 0", z);
    if (!(denom > 0.0) || !isfinite(denom))
        return af_seterr(AF_ERANGE, "denominator = %g: expected a finite count > 0", denom);
    if (z > 0.0 && n > 0 && !rng)
        return af_seterr(AF_EINVAL, "rng: expected a seeded af_rng when z > 0");
    /* avg = (Σ clipped Δ + N(0, (z·S)²)) / denom */
    if ((rc = dp_add_gaussian(sum, n, z * clip, rng))) /* z·S may overflow; sum untouched */
        return rc;
    double inv = 1.0 / denom;
    for (size_t i = 0; i < n; i++)
        sum[i] = (float)((double)sum[i] * inv);
    return 0;
}

int dp_split_noise_sigma(double z, double clip, size_t n_devices, size_t t_honest,
                         double *sigma_out)
{
    if (!(z >= 0.0) || !isfinite(z))
        return af_seterr(AF_ERANGE, "noise multiplier z = %g: expected a finite value >= 0", z);
    if (!(clip > 0.0) || !isfinite(clip))
        return af_seterr(AF_ERANGE, "clip norm = %g: expected a finite value > 0", clip);
    if (n_devices == 0 || t_honest == 0 || t_honest > n_devices)
        return af_seterr(AF_ERANGE, "t_honest = %zu of n_devices = %zu: expected 1 <= t <= n",
                         t_honest, n_devices);
    if (!sigma_out)
        return af_seterr(AF_EINVAL, "sigma_out: expected an output pointer");
    /* Σ of t shares of variance (zS)²/t has variance (zS)² */
    *sigma_out = z * clip / sqrt((double)t_honest);
    return 0;
}

static int check_adaptive(double clip, double gamma, double lr, double sigma_b)
{
    if (!(clip > 0.0) || !isfinite(clip))
        return af_seterr(AF_ERANGE, "adaptive clip: clip = %g: expected a finite value > 0", clip);
    if (!(gamma >= 0.0 && gamma <= 1.0))
        return af_seterr(AF_ERANGE, "adaptive clip: target_quantile = %g: expected [0, 1]", gamma);
    if (!(lr > 0.0) || !isfinite(lr))
        return af_seterr(AF_ERANGE, "adaptive clip: lr = %g: expected a finite value > 0", lr);
    if (!(sigma_b >= 0.0) || !isfinite(sigma_b))
        return af_seterr(AF_ERANGE, "adaptive clip: count_stddev = %g: expected a finite value >= 0",
                         sigma_b);
    return 0;
}

int dp_adaptive_clip_init(dp_adaptive_clip *ac, double clip0, double target_quantile, double lr,
                          double count_stddev)
{
    if (!ac)
        return af_seterr(AF_EINVAL, "adaptive clip: expected a state to fill");
    int rc = check_adaptive(clip0, target_quantile, lr, count_stddev);
    if (rc)
        return rc;
    ac->clip = clip0;
    ac->target_quantile = target_quantile;
    ac->lr = lr;
    ac->count_stddev = count_stddev;
    return 0;
}

int dp_adaptive_clip_fraction(const dp_adaptive_clip *ac, double n_unclipped, double n_reports,
                              double expected_count, af_rng *rng, double *b_bar)
{
    if (!ac || !b_bar)
        return af_seterr(AF_EINVAL, "adaptive clip: expected a state and an output pointer");
    int rc = check_adaptive(ac->clip, ac->target_quantile, ac->lr, ac->count_stddev);
    if (rc)
        return rc;
    if (!(n_reports >= 0.0) || !isfinite(n_reports) || !(n_unclipped >= 0.0) ||
        !(n_unclipped <= n_reports))
        return af_seterr(AF_ERANGE,
                         "adaptive clip: %g unclipped of %g reports: expected 0 <= unclipped <= reports",
                         n_unclipped, n_reports);
    if (!(expected_count > 0.0) || !isfinite(expected_count))
        return af_seterr(AF_ERANGE, "adaptive clip: expected_count = %g: expected > 0",
                         expected_count);
    if (ac->count_stddev > 0.0 && !rng)
        return af_seterr(AF_EINVAL, "rng: expected a seeded af_rng when count_stddev > 0");
    /* b̄ = (Σ(b_i − ½) + N(0, σ_b²)) / m + ½, clamped to [0, 1] */
    double centred = n_unclipped - 0.5 * n_reports;
    if (ac->count_stddev > 0.0)
        centred += ac->count_stddev * af_rng_normal(rng);
    double b = centred / expected_count + 0.5;
    *b_bar = b < 0.0 ? 0.0 : b > 1.0 ? 1.0 : b;
    return 0;
}

int dp_adaptive_clip_update(dp_adaptive_clip *ac, double b_bar)
{
    if (!ac)
        return af_seterr(AF_EINVAL, "adaptive clip: expected a state");
    int rc = check_adaptive(ac->clip, ac->target_quantile, ac->lr, ac->count_stddev);
    if (rc)
        return rc;
    if (!(b_bar >= 0.0 && b_bar <= 1.0))
        return af_seterr(AF_ERANGE, "adaptive clip: b_bar = %g: expected a fraction in [0, 1]",
                         b_bar);
    /* C ← C · exp(−η (b̄ − γ)): the gradient of the pinball loss at C is b̄ − γ */
    double c = ac->clip * exp(-ac->lr * (b_bar - ac->target_quantile));
    if (!(c > 0.0) || !isfinite(c))
        return af_seterr(AF_ERANGE, "adaptive clip: clip %g would become %g", ac->clip, c);
    ac->clip = c;
    return 0;
}

int dp_adaptive_noise_multiplier(double z, double count_stddev, double *z_delta)
{
    if (!(z > 0.0) || !isfinite(z))
        return af_seterr(AF_ERANGE, "noise multiplier z = %g: expected a finite value > 0", z);
    if (!(count_stddev >= 0.0) || !isfinite(count_stddev))
        return af_seterr(AF_ERANGE, "count_stddev = %g: expected a finite value >= 0",
                         count_stddev);
    if (!z_delta)
        return af_seterr(AF_EINVAL, "z_delta: expected an output pointer");
    if (count_stddev == 0.0) {
        *z_delta = z; /* no count released */
        return 0;
    }
    /* 1/z² = 1/z_Δ² + 1/(2σ_b)²  (the count has sensitivity ½, so its multiplier is 2σ_b) */
    double two_sb = 2.0 * count_stddev;
    double rest = 1.0 / (z * z) - 1.0 / (two_sb * two_sb);
    if (!(rest > 0.0))
        return af_seterr(AF_ERANGE,
                         "count_stddev = %g is too small for z = %g: the count alone would use "
                         "the whole budget; expected count_stddev > z/2 = %g",
                         count_stddev, z, z / 2.0);
    *z_delta = 1.0 / sqrt(rest);
    return 0;
}
