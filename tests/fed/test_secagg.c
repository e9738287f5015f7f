/* test_secagg.c — tests of src/fed/secagg.c: Shamir sharing, quantisation, and whole rounds of
 * the four-phase protocol with devices dropping out at each phase, below-threshold rounds,
 * what a masked vector looks like, and tampered / replayed / wrong-round messages.
 *
 * Sums are checked exactly (integer inputs: Σ mod 2^32 bit for bit) and, for float inputs,
 * against the quantisation bound stated in secagg.h. Statistical checks use 5+ standard
 * errors over 2^16 words, so they are not flaky.
 */
#include "fed/secagg.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "core/err.h"
#include "core/rng.h"

#define HMAX 64

/* One round: a server and n devices with enrolled identities. */
typedef struct harness {
    secagg_cfg cfg;
    secagg_server *srv;
    secagg_client *dev[HMAX + 1];
    uint8_t pk[HMAX + 1][SECAGG_SIGN_PK_BYTES], sk[HMAX + 1][SECAGG_SIGN_SK_BYTES];
    uint32_t *y[HMAX + 1]; /* each device's masked-input buffer */
    const secagg_advertise *u1;
    size_t n_u1;
    const uint32_t *u3;
    size_t n_u3;
} harness;

static void h_free(harness *h)
{
    secagg_server_free(h->srv);
    for (int v = 0; v <= HMAX; v++) {
        secagg_client_free(h->dev[v]);
        free(h->y[v]);
    }
    memset(h, 0, sizeof *h);
}

static int h_init(harness *h, uint64_t round, uint32_t n, uint32_t t, size_t len)
{
    memset(h, 0, sizeof *h);
    h->cfg = (secagg_cfg){.round_id = round, .n = n, .t = t, .len = len};
    int rc = secagg_server_create(&h->cfg, &h->srv);
    for (uint32_t v = 1; v <= n && !rc; v++) {
        rc = secagg_identity_keypair(h->pk[v], h->sk[v]);
        if (!rc)
            rc = secagg_server_register(h->srv, v, h->pk[v]);
        if (!rc)
            rc = secagg_client_create(&h->cfg, v, h->sk[v], &h->dev[v]);
        if (!rc && !(h->y[v] = malloc(sizeof(uint32_t) * len)))
            rc = AF_ENOMEM;
    }
    return rc;
}

/* Phase 0 for every device not in skip (may be NULL), then the server's list. */
static int h_advertise(harness *h, const uint8_t *skip)
{
    for (uint32_t v = 1; v <= h->cfg.n; v++) {
        if (skip && skip[v])
            continue;
        secagg_advertise a;
        int rc = secagg_client_advertise(h->dev[v], &a);
        if (!rc)
            rc = secagg_server_add_advertise(h->srv, &a);
        if (rc)
            return rc;
    }
    return secagg_server_end_advertise(h->srv, &h->u1, &h->n_u1);
}

/* Phase 1 for every member of U1 not in skip. */
static int h_share(harness *h, const uint8_t *skip)
{
    for (size_t i = 0; i < h->n_u1; i++) {
        uint32_t v = h->u1[i].id;
        if (skip && skip[v])
            continue;
        const secagg_share_keys *m;
        int rc = secagg_client_share_keys(h->dev[v], h->u1, h->n_u1, &m);
        if (!rc)
            rc = secagg_server_add_share_keys(h->srv, m);
        if (rc)
            return rc;
    }
    return secagg_server_end_share_keys(h->srv);
}

/* Phase 2 for every member of U2 not in skip: receive shares, mask x[v], send. */
static int h_mask(harness *h, uint32_t *const *x, const uint8_t *skip, int end)
{
    for (uint32_t v = 1; v <= h->cfg.n; v++) {
        const secagg_enc_share *in;
        size_t nin;
        if ((skip && skip[v]) || secagg_server_shares_for(h->srv, v, &in, &nin))
            continue; /* not in U2 */
        const secagg_masked_input *m;
        int rc = secagg_client_receive_shares(h->dev[v], in, nin);
        if (!rc)
            rc = secagg_client_masked_input(h->dev[v], x[v], h->y[v], &m);
        if (!rc)
            rc = secagg_server_add_masked_input(h->srv, m);
        if (rc)
            return rc;
    }
    return end ? secagg_server_end_masked_input(h->srv, &h->u3, &h->n_u3) : 0;
}

/* Phase 3 for every survivor not in skip. */
static int h_unmask(harness *h, const uint8_t *skip)
{
    for (size_t i = 0; i < h->n_u3; i++) {
        uint32_t v = h->u3[i];
        if (skip && skip[v])
            continue;
        const secagg_unmask *m;
        int rc = secagg_client_unmask(h->dev[v], h->u3, h->n_u3, &m);
        if (!rc)
            rc = secagg_server_add_unmask(h->srv, m);
        if (rc)
            return rc;
    }
    return 0;
}

/* x[v] = random words (v = 1..n), one allocation. */
static uint32_t **random_inputs(uint32_t n, size_t len, uint64_t seed)
{
    uint32_t **x = calloc(n + 1, sizeof *x);
    af_rng r;
    af_rng_seed(&r, seed, 0);
    for (uint32_t v = 0; v <= n; v++) {
        x[v] = malloc(sizeof(uint32_t) * len);
        for (size_t i = 0; i < len; i++)
            x[v][i] = af_rng_u32(&r);
    }
    return x;
}

static void free_inputs(uint32_t **x, uint32_t n)
{
    for (uint32_t v = 0; v <= n; v++)
        free(x[v]);
    free(x);
}

/* Σ_{v in set} x[v] mod 2^32 */
static void plain_sum(uint32_t *const *x, uint32_t n, size_t len, const uint8_t *in, uint32_t *out)
{
    memset(out, 0, sizeof(uint32_t) * len);
    for (uint32_t v = 1; v <= n; v++)
        if (in[v])
            for (size_t i = 0; i < len; i++)
                out[i] += x[v][i];
}

/* Signs an advertisement the way secagg.h documents it — what a corrupt device holding its
 * identity key can do with keys of its choice. */
static void sign_advertise(secagg_advertise *a, const uint8_t sk[SECAGG_SIGN_SK_BYTES])
{
    static const char dom[] = "artificien/secagg/advertise/v1";
    crypto_generichash_state h;
    uint8_t d[64], b[12];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(a->round_id >> (8 * i));
    for (int i = 0; i < 4; i++)
        b[8 + i] = (uint8_t)(a->id >> (8 * i));
    crypto_generichash_init(&h, NULL, 0, 64);
    crypto_generichash_update(&h, (const uint8_t *)dom, sizeof dom); /* with its NUL */
    crypto_generichash_update(&h, b, 12);
    crypto_generichash_update(&h, a->c_pk, 32);
    crypto_generichash_update(&h, a->s_pk, 32);
    crypto_generichash_final(&h, d, 64);
    crypto_sign_detached(a->sig, NULL, d, 64, sk);
}

/* ---- Shamir ---- */

TEST(secagg_shamir_any_t_of_n_rebuilds_fewer_do_not)
{
    const uint32_t n = 7, t = 4;
    uint32_t xs[7] = {3, 9, 1, 12, 40000, 7, 2};
    uint8_t secret[32], got[32];
    af_rng r;
    af_rng_seed(&r, 11, 0);
    for (int i = 0; i < 32; i++)
        secret[i] = (uint8_t)af_rng_u32(&r);
    secret[0] = 0xff; /* extreme bytes in chunk 0 and in the short last chunk */
    secret[31] = 0xff;
    secagg_share sh[7], sub[7];
    CHECK_EQ_INT(secagg_shamir_split(secret, t, xs, n, sh), 0);
    int subsets = 0, small_ok = 0;
    for (uint32_t mask = 1; mask < (1u << n); mask++) {
        size_t k = 0;
        for (uint32_t i = 0; i < n; i++)
            if (mask >> i & 1)
                sub[k++] = sh[i];
        memset(got, 0, 32);
        int rc = secagg_shamir_combine(sub, k, got);
        if (k >= t) {
            CHECK_EQ_INT(rc, 0);
            CHECK(memcmp(got, secret, 32) == 0);
            subsets++;
        } else {
            /* fewer than t: an error, or a wrong secret — never the secret */
            CHECK(rc == AF_EFORMAT || (rc == 0 && memcmp(got, secret, 32) != 0));
            small_ok += rc == AF_EFORMAT;
        }
    }
    CHECK_EQ_INT(subsets, 35 + 21 + 7 + 1); /* C(7,4) + C(7,5) + C(7,6) + C(7,7) */
    CHECK(small_ok >= 60);                 /* 63 small subsets; almost all flagged */
    /* t = 1: every share is the secret itself; t = n: needs all */
    CHECK_EQ_INT(secagg_shamir_split(secret, 1, xs, n, sh), 0);
    CHECK_EQ_INT(secagg_shamir_combine(&sh[4], 1, got), 0);
    CHECK(memcmp(got, secret, 32) == 0);
    CHECK_EQ_INT(secagg_shamir_split(secret, n, xs, n, sh), 0);
    CHECK_EQ_INT(secagg_shamir_combine(sh, n, got), 0);
    CHECK(memcmp(got, secret, 32) == 0);
    /* two splits of one secret differ (fresh random polynomials) */
    secagg_share sh2[7];
    CHECK_EQ_INT(secagg_shamir_split(secret, t, xs, n, sh2), 0);
    CHECK(memcmp(sh[0].y, sh2[0].y, sizeof sh[0].y) != 0);
}

TEST(secagg_shamir_refuses_bad_input)
{
    uint8_t s[32] = {1}, got[32];
    uint32_t xs[3] = {1, 2, 2}, xz[3] = {1, 0, 3};
    secagg_share sh[3];
    CHECK_EQ_INT(secagg_shamir_split(s, 2, xs, 3, sh), AF_EINVAL); /* repeated x */
    CHECK(strstr(af_errmsg(), "twice") != NULL);
    CHECK_EQ_INT(secagg_shamir_split(s, 2, xz, 3, sh), AF_EINVAL); /* x = 0 */
    CHECK_EQ_INT(secagg_shamir_split(s, 4, xz, 3, sh), AF_EINVAL); /* t > n */
    CHECK_EQ_INT(secagg_shamir_split(s, 0, xz, 3, sh), AF_EINVAL); /* t = 0 */
    uint32_t ok[3] = {5, 6, 7};
    CHECK_EQ_INT(secagg_shamir_split(s, 2, ok, 3, sh), 0);
    sh[1].x = sh[0].x;
    memset(got, 0x55, 32);
    CHECK_EQ_INT(secagg_shamir_combine(sh, 2, got), AF_EINVAL);
    CHECK(got[0] == 0x55); /* unchanged on error */
    sh[1].x = 6;
    sh[1].y[2] = (1ull << 61); /* outside the field */
    CHECK_EQ_INT(secagg_shamir_combine(sh, 2, got), AF_EINVAL);
    CHECK_EQ_INT(secagg_shamir_combine(sh, 0, got), AF_EINVAL);
}

/* ---- quantisation ---- */

TEST(secagg_quantisation_error_bound_and_no_wrap)
{
    secagg_quant q;
    CHECK_EQ_INT(secagg_quant_init(&q, 0.0, 10), AF_ERANGE);
    CHECK_EQ_INT(secagg_quant_init(&q, 1.0, 0), AF_ERANGE);
    CHECK_EQ_INT(secagg_quant_init(&q, 2.5, 50), 0);
    CHECK_EQ_INT(q.bound, 2147483647u / 50);
    CHECK((uint64_t)q.bound * 50 <= 2147483647u);
    const size_t len = 4096;
    const uint32_t m = 50;
    float *x = malloc(sizeof(float) * len), *out = malloc(sizeof(float) * len);
    double *ref = calloc(len, sizeof(double));
    uint32_t *w = malloc(sizeof(uint32_t) * len), *sum = calloc(len, sizeof(uint32_t));
    af_rng r;
    af_rng_seed(&r, 5, 0);
    size_t clamped_total = 0;
    for (uint32_t d = 0; d < m; d++) {
        for (size_t i = 0; i < len; i++)
            x[i] = (float)(3.0 * (2.0 * af_rng_uniform(&r) - 1.0)); /* some outside ±2.5 */
        size_t nc;
        CHECK_EQ_INT(secagg_quantize(&q, x, len, w, &nc), 0);
        clamped_total += nc;
        for (size_t i = 0; i < len; i++) {
            double v = x[i] > 2.5f ? 2.5 : x[i] < -2.5f ? -2.5 : x[i];
            ref[i] += v;
            sum[i] += w[i];
        }
    }
    CHECK(clamped_total > 0);
    secagg_dequantize(&q, sum, len, out);
    double bound = m * q.range / (2.0 * q.bound), worst = 0;
    for (size_t i = 0; i < len; i++) {
        double e = fabs(out[i] - ref[i]) - fabs(ref[i]) * 0x1p-24; /* minus the final float rounding */
        if (e > worst)
            worst = e;
    }
    CHECK_MSG(worst <= bound, "quantisation error %g above the stated bound %g", worst, bound);
    CHECK(worst > bound / 1000); /* the bound is not vacuous: rounding does show */
    /* all n_max devices at +range / −range: the extreme sums do not wrap */
    for (size_t i = 0; i < len; i++)
        x[i] = i % 2 ? 1e9f : -1e9f;
    memset(sum, 0, sizeof(uint32_t) * len);
    for (uint32_t d = 0; d < m; d++) {
        CHECK_EQ_INT(secagg_quantize(&q, x, len, w, NULL), 0);
        for (size_t i = 0; i < len; i++)
            sum[i] += w[i];
    }
    secagg_dequantize(&q, sum, len, out);
    CHECK_NEAR(out[0], -(double)m * 2.5, 1e-4);
    CHECK_NEAR(out[1], (double)m * 2.5, 1e-4);
    /* NaN refused, output untouched */
    x[7] = NAN;
    w[7] = 12345;
    CHECK_EQ_INT(secagg_quantize(&q, x, len, w, NULL), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "element 7") != NULL);
    CHECK_EQ_INT(w[7], 12345);
    free(x);
    free(out);
    free(ref);
    free(w);
    free(sum);
}

/* ---- whole rounds ---- */

/* n devices, `drop` of them drop after sharing keys (before their masked input arrives),
 * `silent` survivors never answer the unmask request: the sum equals Σ x over U3 exactly. */
static int round_with_dropouts(uint32_t n, uint32_t t, size_t len, uint32_t drop, uint32_t silent,
                               uint64_t seed)
{
    harness h;
    uint32_t **x = random_inputs(n, len, seed);
    uint32_t *sum = calloc(len, sizeof(uint32_t)), *want = calloc(len, sizeof(uint32_t));
    uint8_t drop_mask[HMAX + 1] = {0}, no_answer[HMAX + 1] = {0}, survive[HMAX + 1] = {0};
    af_rng r;
    af_rng_seed(&r, seed, 1);
    uint32_t perm[HMAX];
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i + 1;
    af_rng_shuffle_u32(&r, perm, n);
    for (uint32_t i = 0; i < drop; i++)
        drop_mask[perm[i]] = 1;
    for (uint32_t i = drop; i < drop + silent; i++)
        no_answer[perm[i]] = 1;
    for (uint32_t v = 1; v <= n; v++)
        survive[v] = !drop_mask[v];
    int rc = h_init(&h, seed, n, t, len);
    if (!rc)
        rc = h_advertise(&h, NULL);
    if (!rc)
        rc = h_share(&h, NULL);
    if (!rc)
        rc = h_mask(&h, x, drop_mask, 1);
    if (!rc)
        rc = h_unmask(&h, no_answer);
    if (!rc)
        rc = secagg_server_finish(h.srv, sum);
    if (!rc) {
        uint32_t u1, u2, u3, u5;
        secagg_server_counts(h.srv, &u1, &u2, &u3, &u5);
        plain_sum(x, n, len, survive, want);
        if (u1 != n || u2 != n || u3 != n - drop || u5 != n - drop - silent)
            rc = af_seterr(AF_ESTATE, "counts %u %u %u %u", u1, u2, u3, u5);
        else if (memcmp(sum, want, sizeof(uint32_t) * len) != 0)
            rc = af_seterr(AF_ESTATE, "secure sum differs from the plain sum");
    }
    h_free(&h);
    free_inputs(x, n);
    free(sum);
    free(want);
    return rc;
}

TEST(secagg_sum_exact_without_dropouts)
{
    CHECK_MSG(round_with_dropouts(20, 14, 1000, 0, 0, 101) == 0, "%s", af_errmsg());
    CHECK_MSG(round_with_dropouts(2, 2, 3, 0, 0, 102) == 0, "%s", af_errmsg()); /* smallest */
    CHECK_MSG(round_with_dropouts(1, 1, 5, 0, 0, 103) == 0, "%s", af_errmsg()); /* a lone device */
}

TEST(secagg_sum_exact_with_10_percent_dropouts)
{
    CHECK_MSG(round_with_dropouts(30, 20, 1000, 3, 0, 201) == 0, "%s", af_errmsg());
    /* and 3 more survivors that never answer the unmask request */
    CHECK_MSG(round_with_dropouts(30, 20, 1000, 3, 3, 202) == 0, "%s", af_errmsg());
}

TEST(secagg_sum_exact_with_30_percent_dropouts)
{
    CHECK_MSG(round_with_dropouts(50, 34, 777, 15, 0, 301) == 0, "%s", af_errmsg());
    /* exactly t survivors answer */
    CHECK_MSG(round_with_dropouts(50, 34, 777, 15, 1, 302) == 0, "%s", af_errmsg());
}

TEST(secagg_float_sum_within_quantisation_bound)
{
    /* the path the simulator takes: quantise, aggregate with 30% dropouts, dequantise */
    const uint32_t n = 30, t = 20;
    const size_t len = 2000;
    harness h;
    secagg_quant q;
    CHECK_EQ_INT(secagg_quant_init(&q, 1.0, n), 0);
    uint32_t **x = random_inputs(n, len, 1);
    float *f = malloc(sizeof(float) * len), *got = malloc(sizeof(float) * len);
    double *ref = calloc(len, sizeof(double));
    uint32_t *sum = calloc(len, sizeof(uint32_t));
    uint8_t drop[HMAX + 1] = {0};
    for (uint32_t v = 1; v <= n; v += 3)
        drop[v] = 1; /* 10 of 30 */
    af_rng r;
    af_rng_seed(&r, 9, 9);
    for (uint32_t v = 1; v <= n; v++) {
        for (size_t i = 0; i < len; i++)
            f[i] = (float)(0.2 * af_rng_normal(&r));
        CHECK_EQ_INT(secagg_quantize(&q, f, len, x[v], NULL), 0);
        if (!drop[v])
            for (size_t i = 0; i < len; i++)
                ref[i] += f[i];
    }
    CHECK_EQ_INT(h_init(&h, 77, n, t, len), 0);
    CHECK_EQ_INT(h_advertise(&h, NULL), 0);
    CHECK_EQ_INT(h_share(&h, NULL), 0);
    CHECK_EQ_INT(h_mask(&h, x, drop, 1), 0);
    CHECK_EQ_INT(h.n_u3, 20);
    CHECK_EQ_INT(h_unmask(&h, NULL), 0);
    CHECK_EQ_INT(secagg_server_finish(h.srv, sum), 0);
    secagg_dequantize(&q, sum, len, got);
    double bound = 20 * q.range / (2.0 * q.bound), worst = 0;
    for (size_t i = 0; i < len; i++) {
        double e = fabs(got[i] - ref[i]) - fabs(ref[i]) * 0x1p-24;
        worst = e > worst ? e : worst;
    }
    CHECK_MSG(worst <= bound, "error %g above bound %g", worst, bound);
    h_free(&h);
    free_inputs(x, n);
    free(f);
    free(got);
    free(ref);
    free(sum);
}

TEST(secagg_below_threshold_is_abandoned_and_reveals_nothing)
{
    const uint32_t n = 10, t = 7;
    harness h;
    uint32_t **x = random_inputs(n, 64, 4);
    uint8_t drop[HMAX + 1] = {0};
    for (uint32_t v = 1; v <= 4; v++)
        drop[v] = 1; /* 6 survivors < 7 */
    CHECK_EQ_INT(h_init(&h, 5, n, t, 64), 0);
    CHECK_EQ_INT(h_advertise(&h, NULL), 0);
    CHECK_EQ_INT(h_share(&h, NULL), 0);
    CHECK_EQ_INT(h_mask(&h, x, drop, 0), 0);
    const uint32_t *u3;
    size_t n3;
    CHECK_EQ_INT(secagg_server_end_masked_input(h.srv, &u3, &n3), AF_ESTATE);
    CHECK(strstr(af_errmsg(), "abandoned") != NULL);
    CHECK(strstr(af_errmsg(), "threshold 7") != NULL);
    /* every later call is refused; no unmasking happens */
    uint32_t sum[64];
    CHECK_EQ_INT(secagg_server_finish(h.srv, sum), AF_ESTATE);
    const secagg_enc_share *in;
    size_t nin;
    CHECK_EQ_INT(secagg_server_shares_for(h.srv, 5, &in, &nin), AF_ESTATE);
    /* a device told about only 6 survivors reveals nothing and can still answer a valid list */
    uint32_t six[6] = {5, 6, 7, 8, 9, 10};
    const secagg_unmask *um;
    CHECK_EQ_INT(secagg_client_unmask(h.dev[5], six, 6, &um), AF_ESTATE);
    CHECK(strstr(af_errmsg(), "nothing revealed") != NULL);
    uint32_t bad[7] = {5, 6, 7, 8, 9, 10, 10}; /* a repeat */
    CHECK_EQ_INT(secagg_client_unmask(h.dev[5], bad, 7, &um), AF_EINVAL);
    uint32_t without_me[7] = {1, 2, 6, 7, 8, 9, 10};
    CHECK_EQ_INT(secagg_client_unmask(h.dev[5], without_me, 7, &um), AF_ESTATE);
    uint32_t fine[7] = {4, 5, 6, 7, 8, 9, 10};
    CHECK_EQ_INT(secagg_client_unmask(h.dev[5], fine, 7, &um), 0);
    CHECK_EQ_INT(um->n_reveals, 10);
    CHECK_EQ_INT(secagg_client_unmask(h.dev[5], fine, 7, &um), AF_ESTATE); /* only once */
    h_free(&h);
    free_inputs(x, n);
    /* too few devices already at the advertise phase */
    CHECK_EQ_INT(h_init(&h, 6, 10, 7, 8), 0);
    uint8_t skip[HMAX + 1] = {0, 1, 1, 1, 1};
    CHECK_EQ_INT(h_advertise(&h, skip), AF_ESTATE);
    secagg_advertise a;
    CHECK_EQ_INT(secagg_client_advertise(h.dev[1], &a), 0);
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &a), AF_ESTATE); /* abandoned */
    h_free(&h);
}

/* Mean, variance and correlation with the input of the words of v, as fractions of 2^32. */
static void word_stats(const uint32_t *v, const uint32_t *x, size_t len, double *mean, double *var,
                       double *corr)
{
    double s = 0, s2 = 0, sx = 0, sx2 = 0, sxy = 0;
    for (size_t i = 0; i < len; i++) {
        double a = v[i] * 0x1p-32, b = x[i] * 0x1p-32;
        s += a;
        s2 += a * a;
        sx += b;
        sx2 += b * b;
        sxy += a * b;
    }
    double n = (double)len;
    *mean = s / n;
    *var = s2 / n - *mean * *mean;
    double vx = sx2 / n - (sx / n) * (sx / n), cov = sxy / n - *mean * (sx / n);
    *corr = vx > 0 ? cov / sqrt(*var * vx) : 0;
}

TEST(secagg_masked_vector_looks_uniform)
{
    /* the input is very far from uniform: a slow ramp of small quantised values */
    const uint32_t n = 5, t = 3;
    const size_t len = 1 << 16;
    harness h;
    uint32_t **x = random_inputs(n, len, 8);
    for (uint32_t v = 1; v <= n; v++)
        for (size_t i = 0; i < len; i++)
            x[v][i] = (uint32_t)(i * 1000u + v);
    CHECK_EQ_INT(h_init(&h, 9, n, t, len), 0);
    CHECK_EQ_INT(h_advertise(&h, NULL), 0);
    CHECK_EQ_INT(h_share(&h, NULL), 0);
    uint8_t drop[HMAX + 1] = {0, 0, 0, 0, 0, 1};
    CHECK_EQ_INT(h_mask(&h, x, drop, 1), 0);
    /* uniform words on [0,1): mean 1/2 (se 1/sqrt(12 len)), variance 1/12 (se ~ 1/sqrt(180 len)) */
    const double se_mean = 1 / sqrt(12.0 * len), se_var = 1 / sqrt(180.0 * len), se_corr = 1 / sqrt((double)len);
    double mean, var, corr;
    for (uint32_t v = 1; v <= 4; v++) {
        word_stats(h.y[v], x[v], len, &mean, &var, &corr);
        CHECK_MSG(fabs(mean - 0.5) < 5 * se_mean, "device %u: mean %g", v, mean);
        CHECK_MSG(fabs(var - 1.0 / 12) < 5 * se_var, "device %u: variance %g", v, var);
        CHECK_MSG(fabs(corr) < 5 * se_corr, "device %u: correlation with input %g", v, corr);
        /* low bits too: the fraction of odd words */
        size_t odd = 0;
        for (size_t i = 0; i < len; i++)
            odd += h.y[v][i] & 1;
        CHECK(fabs((double)odd / len - 0.5) < 5 * 0.5 / sqrt((double)len));
    }
    word_stats(x[1], x[1], len, &mean, &var, &corr);
    CHECK(fabs(var - 1.0 / 12) > 100 * se_var); /* the input itself is far from uniform */
    /* what the server holds before unmasking: also uniform (device 5 dropped: its pairwise
     * masks are still in) */
    word_stats(secagg_server_masked_sum(h.srv), x[1], len, &mean, &var, &corr);
    CHECK(fabs(mean - 0.5) < 5 * se_mean && fabs(var - 1.0 / 12) < 5 * se_var && fabs(corr) < 5 * se_corr);
    h_free(&h);
    free_inputs(x, n);
}

TEST(secagg_bad_advertisements_are_refused_round_goes_on)
{
    const uint32_t n = 8, t = 5;
    const size_t len = 32;
    harness h, old;
    uint32_t **x = random_inputs(n, len, 12);
    uint32_t sum[32], want[32];
    CHECK_EQ_INT(h_init(&h, 1001, n, t, len), 0);
    CHECK_EQ_INT(h_init(&old, 1000, n, t, len), 0);
    secagg_advertise a;
    /* device 1: a key altered after signing */
    CHECK_EQ_INT(secagg_client_advertise(h.dev[1], &a), 0);
    a.s_pk[3] ^= 1;
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &a), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "device 1") && strstr(af_errmsg(), "does not verify"));
    /* device 2: its advertisement from the previous round, replayed */
    CHECK_EQ_INT(secagg_client_advertise(old.dev[2], &a), 0);
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &a), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "round 1000"));
    /* device 3: a low-order point (all zeros), properly signed by a corrupt device */
    CHECK_EQ_INT(secagg_client_advertise(h.dev[3], &a), 0);
    secagg_advertise evil = a;
    memset(evil.c_pk, 0, 32);
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &evil), AF_EAUTH); /* unsigned change */
    CHECK(strstr(af_errmsg(), "does not verify"));
    sign_advertise(&evil, h.sk[3]); /* signed: the signature format is the documented one */
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &evil), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "device 3 advertised an unusable public key"));
    memcpy(evil.c_pk, evil.s_pk, 32); /* the same key twice */
    sign_advertise(&evil, h.sk[3]);
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &evil), AF_EAUTH);
    /* device 4: signed by someone else's identity key */
    secagg_client *imp;
    CHECK_EQ_INT(secagg_client_create(&h.cfg, 4, h.sk[5], &imp), 0);
    CHECK_EQ_INT(secagg_client_advertise(imp, &a), 0);
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &a), AF_EAUTH);
    secagg_client_free(imp);
    /* the others advertise; device 6 twice */
    for (uint32_t v = 5; v <= n; v++) {
        CHECK_EQ_INT(secagg_client_advertise(h.dev[v], &a), 0);
        CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &a), 0);
        if (v == 6)
            CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &a), AF_ESTATE);
    }
    /* device 4 retries with its own identity and is in; 1, 2 and 3 stay out */
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &(secagg_advertise){0}), AF_EINVAL); /* id 0 */
    secagg_advertise a3;
    CHECK_EQ_INT(secagg_client_advertise(h.dev[4], &a3), 0);
    CHECK_EQ_INT(secagg_server_add_advertise(h.srv, &a3), 0);
    CHECK_EQ_INT(secagg_server_end_advertise(h.srv, &h.u1, &h.n_u1), 0);
    CHECK_EQ_INT(h.n_u1, 5);
    CHECK_EQ_INT(h_share(&h, NULL), 0);
    CHECK_EQ_INT(h_mask(&h, x, NULL, 1), 0);
    CHECK_EQ_INT(h.n_u3, 5);
    CHECK_EQ_INT(h_unmask(&h, NULL), 0);
    CHECK_EQ_INT(secagg_server_finish(h.srv, sum), 0);
    uint8_t in[HMAX + 1] = {0, 0, 0, 0, 1, 1, 1, 1, 1};
    plain_sum(x, n, len, in, want);
    CHECK(memcmp(sum, want, sizeof sum) == 0);
    h_free(&h);
    h_free(&old);
    free_inputs(x, n);
}

TEST(secagg_device_checks_the_key_list)
{
    harness h;
    CHECK_EQ_INT(h_init(&h, 42, 6, 4, 8), 0);
    CHECK_EQ_INT(h_advertise(&h, NULL), 0);
    secagg_advertise list[6];
    memcpy(list, h.u1, sizeof list);
    const secagg_share_keys *m;
    /* too short */
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], list, 3, &m), AF_ESTATE);
    /* my own entry replaced by other keys */
    list[0].s_pk[0] ^= 1;
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], list, 6, &m), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "other keys under my id"));
    list[0] = h.u1[0];
    /* two devices with the same key */
    memcpy(list[3].c_pk, list[2].c_pk, 32);
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], list, 6, &m), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "same public key"));
    list[3] = h.u1[3];
    /* a low-order key */
    memset(list[4].s_pk, 0, 32);
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], list, 6, &m), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "device 5") && strstr(af_errmsg(), "not usable"));
    list[4] = h.u1[4];
    /* another round's entry */
    list[5].round_id = 41;
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], list, 6, &m), AF_EAUTH);
    list[5] = h.u1[5];
    /* after all refusals the device still works with the true list */
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], list, 6, &m), 0);
    CHECK_EQ_INT(m->n_shares, 5);
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], list, 6, &m), AF_ESTATE); /* only once */
    h_free(&h);
}

TEST(secagg_tampered_and_replayed_messages_refused_round_goes_on)
{
    const uint32_t n = 12, t = 7;
    const size_t len = 300;
    harness h, old;
    uint32_t **x = random_inputs(n, len, 21);
    uint32_t *sum = calloc(len, 4), *want = calloc(len, 4);
    CHECK_EQ_INT(h_init(&h, 7, n, t, len), 0);
    CHECK_EQ_INT(h_init(&old, 6, n, t, len), 0);
    CHECK_EQ_INT(h_advertise(&h, NULL), 0);
    CHECK_EQ_INT(h_advertise(&old, NULL), 0);
    /* share keys: device 1's message altered in transit (one ciphertext byte) */
    const secagg_share_keys *m;
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], h.u1, h.n_u1, &m), 0);
    ((secagg_enc_share *)m->shares)[2].ct[5] ^= 0x80;
    CHECK_EQ_INT(secagg_server_add_share_keys(h.srv, m), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "key shares from device 1"));
    /* device 2's shares from the previous round, replayed */
    CHECK_EQ_INT(secagg_client_share_keys(old.dev[2], old.u1, old.n_u1, &m), 0);
    CHECK_EQ_INT(secagg_server_add_share_keys(h.srv, m), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "round 6"));
    /* the others, with device 3's message sent twice */
    for (uint32_t v = 2; v <= n; v++) {
        CHECK_EQ_INT(secagg_client_share_keys(h.dev[v], h.u1, h.n_u1, &m), 0);
        CHECK_EQ_INT(secagg_server_add_share_keys(h.srv, m), 0);
        if (v == 3)
            CHECK_EQ_INT(secagg_server_add_share_keys(h.srv, m), AF_ESTATE);
    }
    CHECK_EQ_INT(secagg_server_end_share_keys(h.srv), 0);
    /* device 1 is out of U2: it gets nothing and its masked input is refused */
    const secagg_enc_share *in;
    size_t nin;
    CHECK_EQ_INT(secagg_server_shares_for(h.srv, 1, &in, &nin), AF_ESTATE);
    /* device 4 receives one share altered after the server (and one from the old round):
     * it refuses that share with AF_EAUTH but goes on */
    CHECK_EQ_INT(secagg_server_shares_for(h.srv, 4, &in, &nin), 0);
    CHECK_EQ_INT(nin, 10);
    secagg_enc_share fwd[10];
    memcpy(fwd, in, sizeof fwd);
    fwd[0].ct[0] ^= 1;
    CHECK_EQ_INT(secagg_client_receive_shares(h.dev[4], fwd, nin), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "does not verify"));
    CHECK_EQ_INT(secagg_client_bad_shares(h.dev[4]), 1);
    /* device 5 receives, for one sender, that sender's share to it from round 6: wrong round */
    CHECK_EQ_INT(secagg_server_shares_for(h.srv, 5, &in, &nin), 0);
    memcpy(fwd, in, sizeof fwd);
    CHECK_EQ_INT(secagg_client_share_keys(old.dev[fwd[1].from], old.u1, old.n_u1, &m), 0);
    for (uint32_t i = 0; i < m->n_shares; i++)
        if (m->shares[i].to == 5)
            fwd[1] = m->shares[i];
    CHECK_EQ_INT(secagg_client_receive_shares(h.dev[5], fwd, nin), AF_EAUTH);
    CHECK_EQ_INT(secagg_client_bad_shares(h.dev[5]), 1);
    /* masked inputs: device 6's altered after signing, device 7's replayed from round 6 */
    const secagg_masked_input *mi;
    uint8_t in_sum[HMAX + 1] = {0};
    for (uint32_t v = 2; v <= n; v++) {
        if (v != 4 && v != 5) {
            CHECK_EQ_INT(secagg_server_shares_for(h.srv, v, &in, &nin), 0);
            CHECK_EQ_INT(secagg_client_receive_shares(h.dev[v], in, nin), 0);
        }
        CHECK_EQ_INT(secagg_client_masked_input(h.dev[v], x[v], h.y[v], &mi), 0);
        if (v == 6) {
            h.y[v][17] += 1;
            CHECK_EQ_INT(secagg_server_add_masked_input(h.srv, mi), AF_EAUTH);
            continue; /* device 6 is treated as dropped */
        }
        if (v == 7) {
            secagg_masked_input rp = *mi;
            rp.round_id = 6;
            CHECK_EQ_INT(secagg_server_add_masked_input(h.srv, &rp), AF_EAUTH);
        }
        CHECK_EQ_INT(secagg_server_add_masked_input(h.srv, mi), 0);
        if (v == 8)
            CHECK_EQ_INT(secagg_server_add_masked_input(h.srv, mi), AF_ESTATE); /* replay */
        in_sum[v] = 1;
    }
    CHECK_EQ_INT(secagg_server_end_masked_input(h.srv, &h.u3, &h.n_u3), 0);
    CHECK_EQ_INT(h.n_u3, 10);
    /* unmask: device 9 is lied to (told device 10 dropped): it reveals 10's key share, which
     * the server refuses as a protocol violation; device 8's answer is altered. Both are left
     * out; 8 answers remain, and even the shares devices 4 and 5 lack are there t = 7 times */
    uint32_t lie[10];
    size_t nl = 0;
    for (size_t i = 0; i < h.n_u3; i++)
        if (h.u3[i] != 10)
            lie[nl++] = h.u3[i];
    CHECK_EQ_INT(nl, 9);
    const secagg_unmask *um;
    CHECK_EQ_INT(secagg_client_unmask(h.dev[9], lie, nl, &um), 0);
    CHECK_EQ_INT(secagg_server_add_unmask(h.srv, um), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "wrong kind") && strstr(af_errmsg(), "device 10"));
    CHECK_EQ_INT(secagg_client_unmask(h.dev[8], h.u3, h.n_u3, &um), 0);
    ((secagg_reveal *)um->reveals)[0].y[0] ^= 1;
    CHECK_EQ_INT(secagg_server_add_unmask(h.srv, um), AF_EAUTH);
    uint8_t skip[HMAX + 1] = {0};
    skip[8] = skip[9] = 1;
    CHECK_EQ_INT(h_unmask(&h, skip), 0);
    uint32_t u5;
    secagg_server_counts(h.srv, NULL, NULL, NULL, &u5);
    CHECK_EQ_INT(u5, 8);
    CHECK_MSG(secagg_server_finish(h.srv, sum) == 0, "%s", af_errmsg());
    plain_sum(x, n, len, in_sum, want);
    CHECK(memcmp(sum, want, 4 * len) == 0);
    h_free(&h);
    h_free(&old);
    free_inputs(x, n);
    free(sum);
    free(want);
}

TEST(secagg_phases_out_of_order_refused)
{
    harness h;
    CHECK_EQ_INT(h_init(&h, 3, 4, 3, 16), 0);
    const secagg_share_keys *m;
    uint32_t y[16] = {0}, sum[16];
    const secagg_masked_input *mi;
    const secagg_unmask *um;
    CHECK_EQ_INT(secagg_client_share_keys(h.dev[1], NULL, 0, &m), AF_ESTATE);
    CHECK_EQ_INT(secagg_client_masked_input(h.dev[1], y, y, &mi), AF_ESTATE);
    CHECK_EQ_INT(secagg_client_unmask(h.dev[1], NULL, 0, &um), AF_ESTATE);
    CHECK_EQ_INT(secagg_server_end_share_keys(h.srv), AF_ESTATE);
    CHECK_EQ_INT(secagg_server_finish(h.srv, sum), AF_ESTATE);
    secagg_advertise a;
    CHECK_EQ_INT(secagg_client_advertise(h.dev[1], &a), 0);
    CHECK_EQ_INT(secagg_client_advertise(h.dev[1], &a), AF_ESTATE);
    /* an unenrolled device */
    secagg_server *s2;
    CHECK_EQ_INT(secagg_server_create(&h.cfg, &s2), 0);
    CHECK_EQ_INT(secagg_server_add_advertise(s2, &a), AF_EAUTH);
    CHECK(strstr(af_errmsg(), "no enrolled identity"));
    secagg_server_free(s2);
    /* bad configurations */
    secagg_cfg c = h.cfg;
    secagg_server *bad;
    c.t = 2; /* not a majority of 4 */
    CHECK_EQ_INT(secagg_server_create(&c, &bad), AF_ERANGE);
    c.t = 5;
    CHECK_EQ_INT(secagg_server_create(&c, &bad), AF_ERANGE);
    c = h.cfg;
    c.len = 0;
    CHECK_EQ_INT(secagg_server_create(&c, &bad), AF_ERANGE);
    secagg_client *cl;
    CHECK_EQ_INT(secagg_client_create(&h.cfg, 5, h.sk[1], &cl), AF_EINVAL); /* id > n */
    h_free(&h);
}
