/* privacy.c — DP-FedAvg and secure aggregation in the simulated round (see privacy.h).
 *
 * Layer `sim` (core, fed). What a vector looks like on the wire with secure aggregation:
 *   without DP: [ n_k·Δ_k quantised with range R·max_samples (n_params words) | n_k (1 word) ]
 *   with DP:    [ clip(Δ_k) + N(0, σ_dev²) quantised with range S + 8σ_dev | (adaptive
 *                 clipping) b_k − ½ + N(0, σ_b,dev²) quantised with range ½ + 8σ_b,dev ]
 * with at most `selected` summands per quantiser, so the secure sum never wraps
 * (fed/secagg.h states the error bound). Hot paths allocate nothing: per-thread buffers are
 * sized once. Never prints. */
#include "sim/privacy.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"
#include "core/rng.h"
#include "fed/accountant.h"
#include "fed/dp.h"
#include "fed/secagg.h"

#define PRIV_MAX_THREADS 64

/* RNG stream tags, distinct from sim.c's (1–4), so DP draws never shift training draws. */
enum { TAG_SERVER_NOISE = 11, TAG_DEVICE_NOISE = 12, TAG_COUNT_NOISE = 13 };

struct sim_privacy {
    /* DP */
    int dp, adaptive;
    double z, z_delta, delta, target, q;
    double clip;           /* S this round (fixed, or the adaptive estimate) */
    dp_adaptive_clip ac;
    acct acct;
    /* the round */
    int K, m, round;
    size_t n;
    uint64_t seed;
    uint8_t *unclipped;    /* per slot: the update's norm was ≤ S (adaptive clipping) */
    /* secure aggregation */
    int secagg;
    uint32_t t;
    size_t len;
    double range_plain;    /* R·max_samples: the quantiser range of n_k·Δ_k without DP */
    double sigma_dev, sigma_b_dev;
    secagg_quant qa, qb;
    secagg_server *srv;
    secagg_client **cl;    /* per slot */
    uint8_t (*id_pk)[SECAGG_SIGN_PK_BYTES], (*id_sk)[SECAGG_SIGN_SK_BYTES];
    const secagg_share_keys **sk_msg;
    const secagg_advertise *list; /* the server's key list of this round (U1) */
    size_t n_list;
    int *rc_slot;
    uint8_t *reporting;
    int threads;
    float *f[PRIV_MAX_THREADS];
    uint32_t *x[PRIV_MAX_THREADS], *y[PRIV_MAX_THREADS];
    uint32_t *sum;
    float *sumf;
    pthread_mutex_t mu;
    int mu_ok;
    uint64_t clamped;      /* quantised values outside the range this round (under mu) */
};

static double default_delta(int clients)
{
    /* δ well below 1/N, the usual rule; never above dp-accounting's favourite 1e-5 */
    double d = 0.1 / clients;
    return d < 1e-5 ? d : 1e-5;
}

int sim_privacy_create(const sim_cfg *c, fed_strategy_kind kind, size_t n_params, int per_round,
                       int threads, int ranks, double max_samples, sim_privacy **out)
{
    *out = NULL;
    const int dp = c->dp_clip > 0.0;
    if (!(c->dp_clip >= 0.0 && isfinite(c->dp_clip)))
        return af_seterr(AF_ERANGE, "--dp-clip must be >= 0 (0 = no DP), got %g", c->dp_clip);
    if (!(c->dp_noise >= 0.0 && c->dp_noise <= 1e6))
        return af_seterr(AF_ERANGE, "--dp-noise must be in [0, 1e6], got %g", c->dp_noise);
    if (!(c->dp_adaptive_quantile >= 0.0 && c->dp_adaptive_quantile <= 1.0))
        return af_seterr(AF_ERANGE, "--dp-adaptive-quantile must be in [0, 1] (0 = fixed clip), got %g",
                         c->dp_adaptive_quantile);
    if (!(c->dp_target_epsilon >= 0.0 && isfinite(c->dp_target_epsilon)))
        return af_seterr(AF_ERANGE, "--dp-target-epsilon must be >= 0 (0 = none), got %g", c->dp_target_epsilon);
    if (!(c->dp_delta >= 0.0 && c->dp_delta < 1.0))
        return af_seterr(AF_ERANGE, "--dp-delta must be in (0, 1) (0 = default), got %g", c->dp_delta);
    if (!dp && (c->dp_noise > 0 || c->dp_adaptive_quantile > 0 || c->dp_target_epsilon > 0 || c->dp_delta > 0))
        return af_seterr(AF_EINVAL, "--dp-noise, --dp-adaptive-quantile, --dp-target-epsilon and --dp-delta "
                                    "need --dp-clip S > 0");
    if (!(c->secagg_range >= 0.0 && isfinite(c->secagg_range)))
        return af_seterr(AF_ERANGE, "--secagg-range must be >= 0 (0 = default), got %g", c->secagg_range);
    if (!c->secagg && (c->secagg_threshold || c->secagg_range > 0))
        return af_seterr(AF_EINVAL, "--secagg-threshold and --secagg-range need --secagg");
    if (!dp && !c->secagg)
        return 0;
    if (kind == FED_FEDMEDIAN || kind == FED_FEDTRIMMEDAVG || kind == FED_KRUM)
        return af_seterr(AF_EINVAL, "--strategy %s cannot be combined with DP or secure aggregation: "
                                    "robust aggregation needs the individual updates, which secure "
                                    "aggregation hides and DP's sensitivity analysis does not cover",
                         kind == FED_FEDMEDIAN ? "fedmedian" : kind == FED_KRUM ? "krum" : "fedtrimmedavg");
    if (kind == FED_SCAFFOLD || kind == FED_FEDNOVA)
        return af_seterr(AF_EINVAL, "--strategy %s cannot be combined with DP or secure aggregation "
                                    "(its extra per-device state is neither clipped nor aggregated securely)",
                         kind == FED_SCAFFOLD ? "scaffold" : "fednova");
    if (ranks > 1 && (c->secagg || c->dp_adaptive_quantile > 0))
        return af_seterr(AF_EINVAL, "--secagg and --dp-adaptive-quantile do not run under MPI yet "
                                    "(one process only)");
    if (threads > PRIV_MAX_THREADS)
        return af_seterr(AF_ERANGE, "--threads: at most %d with DP or secure aggregation", PRIV_MAX_THREADS);
    sim_privacy *p = calloc(1, sizeof *p);
    if (!p)
        return af_seterr(AF_ENOMEM, "sim: out of memory");
    int rc = 0;
    p->dp = dp;
    p->K = c->clients;
    p->m = per_round;
    p->n = n_params;
    p->seed = c->seed;
    p->threads = threads;
    p->q = (double)per_round / c->clients;
    p->unclipped = calloc((size_t)per_round, 1);
    p->reporting = calloc((size_t)per_round, 1);
    if (!p->unclipped || !p->reporting) {
        rc = af_seterr(AF_ENOMEM, "sim: out of memory");
        goto fail;
    }
    if (dp) {
        p->z = p->z_delta = c->dp_noise;
        p->clip = c->dp_clip;
        p->target = c->dp_target_epsilon;
        p->delta = c->dp_delta > 0 ? c->dp_delta : default_delta(c->clients);
        if ((rc = acct_init(&p->acct, NULL, 0)))
            goto fail;
        if (c->dp_adaptive_quantile > 0) {
            /* Andrew et al. 2021's defaults: η = 0.2, σ_b = expected reports / 20 */
            p->adaptive = 1;
            if ((rc = dp_adaptive_clip_init(&p->ac, c->dp_clip, c->dp_adaptive_quantile, 0.2, per_round / 20.0)))
                goto fail;
            if (p->z > 0 && (rc = dp_adaptive_noise_multiplier(p->z, p->ac.count_stddev, &p->z_delta))) {
                af_preerr(rc, "--dp-adaptive-quantile with %d devices per round (count noise %g)", per_round,
                          p->ac.count_stddev);
                goto fail;
            }
        }
    }
    if (c->secagg) {
        p->secagg = 1;
        if (per_round > SECAGG_MAX_DEVICES) {
            rc = af_seterr(AF_ERANGE, "--secagg: at most %d devices per round, got %d", SECAGG_MAX_DEVICES, per_round);
            goto fail;
        }
        p->t = c->secagg_threshold ? (uint32_t)c->secagg_threshold : (uint32_t)((2 * per_round + 2) / 3);
        if (c->secagg_threshold < 0 || !(2 * p->t > (uint32_t)per_round && p->t <= (uint32_t)per_round)) {
            rc = af_seterr(AF_ERANGE, "--secagg-threshold must be in (%d/2, %d] (a majority of the devices per "
                                      "round), got %d", per_round, per_round, c->secagg_threshold);
            goto fail;
        }
        p->len = n_params + 1; /* the delta words, then the weight (or the clip bit) */
        p->range_plain = (c->secagg_range > 0 ? c->secagg_range : 1.0) * (max_samples > 1 ? max_samples : 1);
        p->cl = calloc((size_t)per_round, sizeof *p->cl);
        p->id_pk = calloc((size_t)per_round, sizeof *p->id_pk);
        p->id_sk = calloc((size_t)per_round, sizeof *p->id_sk);
        p->sk_msg = calloc((size_t)per_round, sizeof *p->sk_msg);
        p->rc_slot = calloc((size_t)per_round, sizeof *p->rc_slot);
        p->sum = af_alloc(sizeof(uint32_t) * p->len);
        p->sumf = af_alloc(sizeof(float) * p->len);
        if (!p->cl || !p->id_pk || !p->id_sk || !p->sk_msg || !p->rc_slot || !p->sum || !p->sumf) {
            rc = af_seterr(AF_ENOMEM, "sim: out of memory");
            goto fail;
        }
        for (int t = 0; t < threads; t++) {
            p->f[t] = af_alloc(sizeof(float) * p->len);
            p->x[t] = af_alloc(sizeof(uint32_t) * p->len);
            p->y[t] = af_alloc(sizeof(uint32_t) * p->len);
            if (!p->f[t] || !p->x[t] || !p->y[t]) {
                rc = af_seterr(AF_ENOMEM, "sim: out of memory");
                goto fail;
            }
        }
        /* device identities: enrolled once for the run, like devices registered with a coordinator */
        for (int i = 0; i < per_round; i++)
            if ((rc = secagg_identity_keypair(p->id_pk[i], p->id_sk[i])))
                goto fail;
        if (pthread_mutex_init(&p->mu, NULL)) {
            rc = af_seterr(AF_ENOMEM, "sim: cannot create a mutex");
            goto fail;
        }
        p->mu_ok = 1;
    }
    *out = p;
    return 0;
fail:
    sim_privacy_free(p);
    return rc;
}

static void secagg_round_free(sim_privacy *p)
{
    secagg_server_free(p->srv);
    p->srv = NULL;
    if (p->cl)
        for (int i = 0; i < p->m; i++) {
            secagg_client_free(p->cl[i]);
            p->cl[i] = NULL;
        }
}

void sim_privacy_free(sim_privacy *p)
{
    if (!p)
        return;
    secagg_round_free(p);
    free(p->cl);
    free(p->id_pk);
    if (p->id_sk) {
        memset(p->id_sk, 0, (size_t)p->m * sizeof *p->id_sk);
        free(p->id_sk);
    }
    free(p->sk_msg);
    free(p->rc_slot);
    free(p->unclipped);
    free(p->reporting);
    for (int t = 0; t < PRIV_MAX_THREADS; t++) {
        af_free(p->f[t]);
        af_free(p->x[t]);
        af_free(p->y[t]);
    }
    af_free(p->sum);
    af_free(p->sumf);
    if (p->mu_ok)
        pthread_mutex_destroy(&p->mu);
    free(p);
}

int sim_privacy_allows(const sim_privacy *p, double *eps_after)
{
    double e = NAN;
    if (p && p->dp && acct_epsilon_after(&p->acct, p->q, p->z, 1, p->delta, &e, NULL))
        e = INFINITY;
    if (eps_after)
        *eps_after = e;
    return !(p && p->dp && p->target > 0 && !(e <= p->target));
}

/* Phase 1 of one selected device, on a pool thread (the key list is read-only meanwhile). */
static void share_keys_fn(void *ctx, int i, int tid)
{
    sim_privacy *p = ctx;
    (void)tid;
    p->rc_slot[i] = secagg_client_share_keys(p->cl[i], p->list, p->n_list, &p->sk_msg[i]);
}

uint8_t *sim_privacy_reporting(sim_privacy *p) { return p->reporting; }

int sim_privacy_begin(sim_privacy *p, int r, int m, af_pool *pool)
{
    const uint8_t *reporting = p->reporting;
    double e;
    if (!sim_privacy_allows(p, &e))
        return af_seterr(AF_ESTATE, "privacy budget: round %d would bring epsilon to %g, above the target %g",
                         r, e, p->target);
    p->round = r;
    p->clamped = 0;
    memset(p->unclipped, 0, (size_t)m);
    if (p->dp && p->secagg) {
        /* each device's noise share: any t honest survivors together carry (z_Δ·S)² */
        if (p->z_delta > 0 && dp_split_noise_sigma(p->z_delta, p->clip, (size_t)m, p->t, &p->sigma_dev))
            return AF_ERANGE;
        if (p->z_delta == 0)
            p->sigma_dev = 0;
        p->sigma_b_dev = p->adaptive ? p->ac.count_stddev / sqrt((double)p->t) : 0.0;
        int rc = secagg_quant_init(&p->qa, p->clip + 8.0 * p->sigma_dev, (uint32_t)m);
        if (!rc && p->adaptive)
            rc = secagg_quant_init(&p->qb, 0.5 + 8.0 * p->sigma_b_dev, (uint32_t)m);
        if (rc)
            return rc;
    } else if (p->secagg) {
        int rc = secagg_quant_init(&p->qa, p->range_plain, (uint32_t)m);
        if (rc)
            return rc;
    }
    if (!p->secagg)
        return 0;
    /* phases 0 and 1 among all m selected devices, 2a for those that will report */
    secagg_round_free(p);
    secagg_cfg cfg = {.round_id = (p->seed << 24) ^ (uint64_t)r, .n = (uint32_t)m, .t = p->t, .len = p->len};
    int rc = secagg_server_create(&cfg, &p->srv);
    for (int i = 0; i < m && !rc; i++) {
        secagg_advertise a;
        rc = secagg_server_register(p->srv, (uint32_t)i + 1, p->id_pk[i]);
        if (!rc)
            rc = secagg_client_create(&cfg, (uint32_t)i + 1, p->id_sk[i], &p->cl[i]);
        if (!rc)
            rc = secagg_client_advertise(p->cl[i], &a);
        if (!rc)
            rc = secagg_server_add_advertise(p->srv, &a);
    }
    if (!rc)
        rc = secagg_server_end_advertise(p->srv, &p->list, &p->n_list);
    if (rc)
        return af_preerr(rc, "secure aggregation, round %d", r);
    /* the expensive part (2·(m−1) X25519 per device) runs on the pool */
    if (pool)
        af_pool_run(pool, share_keys_fn, p, m);
    else
        for (int i = 0; i < m; i++)
            share_keys_fn(p, i, 0);
    for (int i = 0; i < m; i++) {
        if (p->rc_slot[i]) /* the message was recorded on the worker's thread */
            return af_seterr(p->rc_slot[i], "secure aggregation, round %d, device %d: sharing keys failed (%s)",
                             r, i + 1, af_strerror(p->rc_slot[i]));
        if ((rc = secagg_server_add_share_keys(p->srv, p->sk_msg[i])))
            return af_preerr(rc, "secure aggregation, round %d, device %d", r, i + 1);
    }
    if ((rc = secagg_server_end_share_keys(p->srv)))
        return af_preerr(rc, "secure aggregation, round %d", r);
    for (int i = 0; i < m; i++) {
        if (!reporting[i])
            continue;
        const secagg_enc_share *in;
        size_t nin;
        if ((rc = secagg_server_shares_for(p->srv, (uint32_t)i + 1, &in, &nin)) ||
            (rc = secagg_client_receive_shares(p->cl[i], in, nin)))
            return af_preerr(rc, "secure aggregation, round %d, device %d", r, i + 1);
    }
    return 0;
}

int sim_privacy_device(sim_privacy *p, int tid, int slot, int device, float *delta, double samples,
                       double *weight, int *sent)
{
    const size_t n = p->n;
    *sent = 0;
    *weight = samples;
    if (p->dp) {
        double norm;
        int clipped;
        int rc = dp_clip_l2(delta, n, p->clip, &norm, &clipped);
        if (rc)
            return rc;
        p->unclipped[slot] = !clipped;
        *weight = 1.0; /* DP-FedAvg: every report counts once, sensitivity S */
    }
    if (!p->secagg)
        return 0;
    float *f = p->f[tid];
    uint32_t *x = p->x[tid];
    size_t nc = 0;
    int rc;
    if (p->dp) {
        memcpy(f, delta, sizeof(float) * n);
        af_rng rng = af_rng_split(p->seed ^ ((uint64_t)TAG_DEVICE_NOISE << 56),
                                  (uint64_t)p->round * (uint64_t)p->K + (uint64_t)device);
        if ((rc = dp_add_gaussian(f, n, p->sigma_dev, &rng)))
            return rc;
        if ((rc = secagg_quantize(&p->qa, f, n, x, &nc)))
            return rc;
        if (p->adaptive) {
            /* the centred clip bit b − ½ with this device's share of the count noise */
            float b = (p->unclipped[slot] ? 0.5f : -0.5f) + (float)(p->sigma_b_dev * af_rng_normal(&rng));
            size_t nb;
            if ((rc = secagg_quantize(&p->qb, &b, 1, x + n, &nb)))
                return rc;
            nc += nb;
        } else {
            x[n] = 0;
        }
    } else {
        for (size_t i = 0; i < n; i++) /* Σ n_k·Δ_k / Σ n_k is FedAvg's weighted mean */
            f[i] = (float)(samples * delta[i]);
        if ((rc = secagg_quantize(&p->qa, f, n, x, &nc)))
            return rc;
        x[n] = (uint32_t)samples; /* exact: Σ n_k < 2^31 training samples */
    }
    const secagg_masked_input *mi;
    rc = secagg_client_masked_input(p->cl[slot], x, p->y[tid], &mi);
    pthread_mutex_lock(&p->mu);
    if (!rc)
        rc = secagg_server_add_masked_input(p->srv, mi);
    p->clamped += nc;
    pthread_mutex_unlock(&p->mu);
    *sent = 1;
    return rc;
}

/* ε after what has been composed, and whether one more round still fits the target. */
static void account(sim_privacy *p, sim_round *out)
{
    double e = NAN;
    if (acct_step(&p->acct, p->q, p->z, 1) == 0 && acct_epsilon(&p->acct, p->delta, &e, NULL) != 0)
        e = INFINITY;
    out->epsilon = e;
    out->budget_exhausted = !sim_privacy_allows(p, NULL);
}

int sim_privacy_end(sim_privacy *p, fed_agg *agg, int lead, sim_round *out)
{
    const size_t n = p->n;
    const int m = p->m;
    int rc = 0;
    out->epsilon = NAN;
    out->dp_clip = p->dp ? p->clip : NAN;
    if (!lead)
        goto account;
    if (p->secagg) {
        const uint32_t *u3;
        size_t n3;
        fed_agg_reset(agg);
        rc = secagg_server_end_masked_input(p->srv, &u3, &n3);
        for (size_t i = 0; i < n3 && !rc; i++) {
            const secagg_unmask *um;
            if (!(rc = secagg_client_unmask(p->cl[u3[i] - 1], u3, n3, &um)))
                rc = secagg_server_add_unmask(p->srv, um);
        }
        if (!rc)
            rc = secagg_server_finish(p->srv, p->sum);
        /* what the protocol costs on top of the update itself: per device, keys, shares
         * and reveals up; the key list, forwarded shares and the survivor list down */
        uint32_t u1, u2, u3n, u5;
        secagg_server_counts(p->srv, &u1, &u2, &u3n, &u5);
        out->bytes_up += (uint64_t)u1 * sizeof(secagg_advertise) +
                         (uint64_t)u2 * ((u1 - 1) * sizeof(secagg_enc_share) + 2 * SECAGG_SIG_BYTES) +
                         (uint64_t)u3n * (SECAGG_SIG_BYTES + sizeof(uint32_t)) +
                         (uint64_t)u5 * (u2 * sizeof(secagg_reveal) + SECAGG_SIG_BYTES);
        out->bytes_down += (uint64_t)u1 * u1 * sizeof(secagg_advertise) +
                           (uint64_t)u2 * (u2 - 1) * sizeof(secagg_enc_share) + (uint64_t)u3n * u3n * 4;
        out->secagg_clamped = p->clamped;
        if (rc == AF_ESTATE) { /* fewer than t: the round is abandoned, the model unchanged */
            out->secagg_abandoned = 1;
            rc = 0;
            goto account;
        }
        if (rc)
            return af_preerr(rc, "secure aggregation, round %d", p->round);
        secagg_dequantize(&p->qa, p->sum, n, p->sumf);
        if (p->dp) {
            /* the noise is already in (shares from the devices): only the fixed denominator */
            for (size_t i = 0; i < n; i++)
                p->sumf[i] = (float)(p->sumf[i] / (double)m);
            if ((rc = fed_agg_add(agg, p->sumf, 1.0, NULL)))
                return rc;
            if (p->adaptive) {
                float sb;
                secagg_dequantize(&p->qb, p->sum + n, 1, &sb);
                double b = sb / (double)m + 0.5; /* (Σ(b_k − ½) + noise)/m + ½ */
                if ((rc = dp_adaptive_clip_update(&p->ac, b < 0 ? 0 : b > 1 ? 1 : b)))
                    return rc;
                p->clip = p->ac.clip;
            }
        } else {
            double W = (double)p->sum[n]; /* Σ n_k over the survivors, exact */
            for (size_t i = 0; i < n; i++)
                p->sumf[i] = (float)(p->sumf[i] / W);
            if (W > 0 && (rc = fed_agg_add(agg, p->sumf, W, NULL)))
                return rc;
        }
    } else if (p->dp) {
        uint64_t count = fed_agg_count(agg);
        if (count > 0) {
            float *sum = af_alloc(sizeof(float) * n);
            if (!sum)
                return af_seterr(AF_ENOMEM, "sim: out of memory");
            fed_agg_mean(agg, sum);
            for (size_t i = 0; i < n; i++) /* Σ clip(Δ_k) = mean · count (weights are 1) */
                sum[i] = (float)(sum[i] * (double)count);
            af_rng rng = af_rng_split(p->seed ^ ((uint64_t)TAG_SERVER_NOISE << 56), (uint64_t)p->round);
            rc = dp_fedavg_noise_average(sum, n, p->clip, p->z_delta, (double)m, &rng);
            fed_agg_reset(agg);
            if (!rc)
                rc = fed_agg_add(agg, sum, 1.0, NULL);
            af_free(sum);
            if (rc)
                return rc;
        }
        if (p->adaptive) {
            int unclipped = 0, reports = 0;
            for (int i = 0; i < m; i++)
                if (p->reporting[i]) {
                    reports++;
                    unclipped += p->unclipped[i];
                }
            af_rng rng = af_rng_split(p->seed ^ ((uint64_t)TAG_COUNT_NOISE << 56), (uint64_t)p->round);
            double b;
            if ((rc = dp_adaptive_clip_fraction(&p->ac, unclipped, reports, (double)m, &rng, &b)) ||
                (rc = dp_adaptive_clip_update(&p->ac, b)))
                return rc;
            p->clip = p->ac.clip;
        }
    }
account:
    if (p->dp)
        account(p, out);
    return 0;
}
