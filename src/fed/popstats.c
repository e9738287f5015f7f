/* popstats.c — per-device encoding and owner-side arithmetic of the private label histogram
 * (see popstats.h). Layer `fed`: core, fed/secagg (quantiser), fed/dp (noise), fed/accountant
 * (ε). No allocation, no printing, no protocol driving.
 */
#include "fed/popstats.h"

#include <math.h>
#include <string.h>

#include "core/err.h"
#include "fed/accountant.h"
#include "fed/dp.h"

int popstats_params_init(popstats_params *pp, int n_classes, double bound, double z, uint32_t n,
                         uint32_t t)
{
    if (!pp)
        return af_seterr(AF_EINVAL, "popstats: params must not be NULL");
    if (n_classes < 1 || n_classes > POPSTATS_MAX_CLASSES)
        return af_seterr(AF_ERANGE, "popstats: classes must be in [1, %d], got %d", POPSTATS_MAX_CLASSES, n_classes);
    if (!(bound > 0 && isfinite(bound)))
        return af_seterr(AF_ERANGE, "popstats: the contribution bound must be > 0 and finite, got %g", bound);
    if (!(z >= 0 && z <= 1e6))
        return af_seterr(AF_ERANGE, "popstats: the noise multiplier must be in [0, 1e6], got %g", z);
    if (n < 1 || n > SECAGG_MAX_DEVICES || t < 1 || t > n)
        return af_seterr(AF_ERANGE, "popstats: a group needs 1 <= t <= n <= %d devices, got n = %u, t = %u",
                         SECAGG_MAX_DEVICES, n, t);
    popstats_params p;
    memset(&p, 0, sizeof p);
    p.n_classes = n_classes;
    p.bound = bound;
    p.z = z;
    p.n = n;
    p.t = t;
    int rc = 0;
    if (z > 0 && (rc = dp_split_noise_sigma(z, bound, n, t, &p.sigma_dev)))
        return rc;
    /* 8σ of headroom: a noised count leaves the range with probability ~1e-15 */
    if ((rc = secagg_quant_init(&p.quant, bound + 8.0 * p.sigma_dev, n)))
        return af_preerr(rc, "popstats");
    /* an integer scale makes integer counts quantise and sum exactly; range·scale = B keeps
     * the no-wrap guarantee of secagg_quant (n·B ≤ 2^31 − 1) */
    double s = floor(p.quant.scale);
    if (s < 1)
        return af_seterr(AF_ERANGE, "popstats: bound %g with noise std %g is too large for %u devices in a "
                                    "32-bit secure sum", bound, p.sigma_dev, n);
    p.quant.scale = s;
    p.quant.range = (double)p.quant.bound / s;
    *pp = p;
    return 0;
}

int popstats_clip(const uint32_t *counts, int n_classes, double bound, double *out, int *clipped)
{
    if (!counts || !out || n_classes < 1)
        return af_seterr(AF_EINVAL, "popstats_clip: counts and out must not be NULL");
    double total = 0;
    for (int c = 0; c < n_classes; c++)
        total += counts[c];
    const double f = total > bound ? bound / total : 1.0; /* ‖h‖₂ ≤ ‖h‖₁ ≤ B after scaling */
    for (int c = 0; c < n_classes; c++)
        out[c] = f < 1.0 ? counts[c] * f : (double)counts[c];
    if (clipped)
        *clipped = f < 1.0;
    return 0;
}

int popstats_device_encode(const popstats_params *pp, const uint32_t *counts, af_rng *rng,
                           uint32_t *words, int *clipped, size_t *n_clamped)
{
    if (!pp || !counts || !words || (pp->sigma_dev > 0 && !rng))
        return af_seterr(AF_EINVAL, "popstats_device_encode: params, counts, words (and rng with noise) "
                                    "must not be NULL");
    const int C = pp->n_classes;
    double h[POPSTATS_MAX_CLASSES];
    float x[POPSTATS_MAX_CLASSES];
    int rc = popstats_clip(counts, C, pp->bound, h, clipped);
    if (rc)
        return rc;
    for (int c = 0; c < C; c++)
        x[c] = (float)h[c];
    if (pp->sigma_dev > 0 && (rc = dp_add_gaussian(x, (size_t)C, pp->sigma_dev, rng)))
        return rc;
    return secagg_quantize(&pp->quant, x, (size_t)C, words, n_clamped);
}

void popstats_accumulate(const popstats_params *pp, const uint32_t *sum, double *acc)
{
    for (int c = 0; c < pp->n_classes; c++)
        acc[c] += (double)(int32_t)sum[c] / pp->quant.scale; /* the signed reading is the sum */
}

int popstats_release(const double *acc, int n_classes, double noise_var, double z, double bound,
                     double delta, popstats_result *out)
{
    if (!acc || !out)
        return af_seterr(AF_EINVAL, "popstats_release: acc and out must not be NULL");
    if (n_classes < 1 || n_classes > POPSTATS_MAX_CLASSES)
        return af_seterr(AF_ERANGE, "popstats: classes must be in [1, %d], got %d", POPSTATS_MAX_CLASSES, n_classes);
    if (!(noise_var >= 0 && isfinite(noise_var)))
        return af_seterr(AF_ERANGE, "popstats: noise variance must be >= 0, got %g", noise_var);
    if (!(z >= 0 && isfinite(z)))
        return af_seterr(AF_ERANGE, "popstats: the noise multiplier must be >= 0, got %g", z);
    if (!(bound > 0 && isfinite(bound)))
        return af_seterr(AF_ERANGE, "popstats: the contribution bound must be > 0, got %g", bound);
    if (!(delta > 0 && delta < 1))
        return af_seterr(AF_ERANGE, "popstats: delta must be in (0, 1), got %g", delta);
    /* one Gaussian mechanism over the whole population: q = 1, one step */
    double rdp[ACCT_N_DEFAULT_ORDERS], eps, order;
    int rc = acct_compute_rdp(1.0, z, 1, acct_default_orders, ACCT_N_DEFAULT_ORDERS, rdp);
    if (!rc)
        rc = acct_get_epsilon(acct_default_orders, rdp, ACCT_N_DEFAULT_ORDERS, delta, &eps, &order);
    if (rc)
        return af_preerr(rc, "popstats");
    popstats_result r;
    memset(&r, 0, sizeof r);
    const int C = n_classes;
    r.n_classes = C;
    r.z = z;
    r.bound = bound;
    r.delta = delta;
    r.epsilon = eps;
    r.order = order;
    r.count_std = sqrt(noise_var);
    r.total_std = sqrt((double)C) * r.count_std;
    double T = 0;
    for (int c = 0; c < C; c++) {
        r.count[c] = acc[c];
        r.total += acc[c];
        T += acc[c] > 0 ? acc[c] : 0; /* clamping at 0 is post-processing: no privacy cost */
    }
    r.tv_uniform = r.tv_noise = 0;
    for (int c = 0; c < C; c++) {
        if (!(T > 0)) {
            r.share[c] = r.share_std[c] = NAN;
            continue;
        }
        const double p = (acc[c] > 0 ? acc[c] : 0) / T;
        r.share[c] = p;
        /* ∂p_c/∂X_c = (1 − p_c)/T, ∂p_c/∂X_j = −p_c/T (j ≠ c), each X with variance σ² */
        r.share_std[c] = r.count_std / T * sqrt((1 - p) * (1 - p) + (C - 1) * p * p);
        r.tv_uniform += 0.5 * fabs(p - 1.0 / C);
        r.tv_noise += 0.5 * r.share_std[c] * sqrt(2.0 / M_PI);
    }
    if (!(T > 0))
        r.tv_uniform = r.tv_noise = NAN;
    *out = r;
    return 0;
}
