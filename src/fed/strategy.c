/* strategy.c — FedAvg-family server strategies and the exact round accumulator (strategy.h).
 *
 * The accumulator keeps Σ w·delta per parameter as a 192-bit two's-complement fixed-point
 * number (3 × uint64, 96 fractional bits). Integer addition is associative, so partial sums
 * merge exactly and the result is independent of arrival order and of the thread / rank
 * split. Each term w·delta is computed in double and truncated once to the 2^-96 grid; it is
 * bounded by 2^62 so 2^32 terms fit. Layer `fed`: core only; allocation only in *_create.
 */
#include "fed/strategy.h"

#include "core/err.h"
#include "core/mem.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FX_FRAC 96             /* fractional bits of the fixed-point sums */
#define FX_TERM_MAX 0x1p62     /* |term| bound: 2^32 terms stay below 2^94 < 2^95 */
#define FX_MAX_UPDATES (1ULL << 32)
#define HDR_WORDS 8 /* count, Σw (3 limbs), Σw·tau (3 limbs), reserved */

struct fed_strategy {
    fed_strategy_kind kind;
    size_t n;
    double eta, beta, mu, beta1, beta2, tau;
    double clients;
    float *state; /* one block: see fed_strategy_state */
    size_t n_state;
};

struct fed_agg {
    fed_strategy_kind kind;
    size_t n;
    uint64_t *block; /* hdr[HDR_WORDS], sum[3n], then sum_c[3n] for scaffold */
    size_t bytes;
    uint64_t *sum, *sum_c;
};

/* ---- 192-bit fixed point ----------------------------------------------------------------- */

/* a += v + cin over three 64-bit limbs (two's complement, wraps like any integer add). */
static inline void limb3_add(uint64_t *a, uint64_t v0, uint64_t v1, uint64_t v2, uint64_t cin)
{
    uint64_t s0 = a[0] + v0, c0 = s0 < v0;
    s0 += cin;
    c0 += s0 < cin;
    uint64_t s1 = a[1] + v1, c1 = s1 < v1;
    s1 += c0;
    c1 += s1 < c0;
    a[0] = s0;
    a[1] = s1;
    a[2] += v2 + c1;
}

/* a += t·2^96, truncated toward zero; |t| < 2^62 (caller checks). Branch-free in the sign
 * (random in real deltas): a negative term is added as its two's complement ~v + 1. */
static inline void fx_add(uint64_t *a, double t)
{
    uint64_t b;
    memcpy(&b, &t, sizeof b);
    int e = (int)(b >> 52 & 0x7ff);
    uint64_t m = b & ((1ULL << 52) - 1);
    if (e)
        m |= 1ULL << 52;
    else
        e = 1;
    int p = e - 1075 + FX_FRAC; /* t = ±m·2^(e−1075), so t·2^96 = ±m·2^p */
    if (p < 0) {
        if (p <= -53)
            return;
        m >>= -p;
        p = 0;
    }
    /* |t| < 2^62 puts the top bit below 2^158, so m·2^p spans limbs p/64 and p/64 + 1 <= 2 */
    unsigned sh = (unsigned)p & 63;
    uint64_t lo = m << sh, hi = (m >> 1) >> (63 - sh);
    int up = p >= 64;
    uint64_t v0 = up ? 0 : lo, v1 = up ? lo : hi, v2 = up ? hi : 0;
    uint64_t neg = b >> 63, mask = 0 - neg;
    limb3_add(a, v0 ^ mask, v1 ^ mask, v2 ^ mask, neg); /* −v = ~v + 1 */
}

/* The fixed-point value as a double (a deterministic function of the exact sum). */
static inline double fx_to_double(const uint64_t *a)
{
    uint64_t l0 = a[0], l1 = a[1], l2 = a[2];
    int neg = (int)(l2 >> 63);
    if (neg) {
        l0 = ~l0 + 1;
        l1 = ~l1 + (l0 == 0);
        l2 = ~l2 + (l0 == 0 && l1 == 0);
    }
    double v = (double)l0 * 0x1p-96 + (double)l1 * 0x1p-32 + (double)l2 * 0x1p32;
    return neg ? -v : v;
}

/* ---- options ----------------------------------------------------------------------------- */

enum { R_POS, R_UNIT, R_NONNEG, R_COUNT }; /* (0,inf), [0,1), [0,inf), integer >= 1 */

typedef struct opt_def {
    const char *key;
    size_t off; /* offset of the double in fed_strategy */
    int range;
} opt_def;

#define OPT(k, field, r) {k, offsetof(fed_strategy, field), r}

static const struct strategy_def {
    const char *name;
    fed_strategy_kind kind;
    double eta, beta, mu, beta1, beta2, tau;
    opt_def opts[4];
    int n_opts;
    const char *required; /* option that must be given, or NULL */
} defs[] = {
    {"fedavg", FED_FEDAVG, 1.0, 0, 0, 0, 0, 0, {OPT("eta", eta, R_POS)}, 1, NULL},
    {"fedavgm", FED_FEDAVGM, 1.0, 0.9, 0, 0, 0, 0,
     {OPT("eta", eta, R_POS), OPT("beta", beta, R_UNIT)}, 2, NULL},
    {"fedprox", FED_FEDPROX, 1.0, 0, 0.01, 0, 0, 0,
     {OPT("eta", eta, R_POS), OPT("mu", mu, R_NONNEG)}, 2, NULL},
    {"fedadam", FED_FEDADAM, 1e-2, 0, 0, 0.9, 0.99, 1e-3,
     {OPT("eta", eta, R_POS), OPT("beta1", beta1, R_UNIT), OPT("beta2", beta2, R_UNIT),
      OPT("tau", tau, R_POS)},
     4, NULL},
    {"fedyogi", FED_FEDYOGI, 1e-2, 0, 0, 0.9, 0.99, 1e-3,
     {OPT("eta", eta, R_POS), OPT("beta1", beta1, R_UNIT), OPT("beta2", beta2, R_UNIT),
      OPT("tau", tau, R_POS)},
     4, NULL},
    {"fedadagrad", FED_FEDADAGRAD, 1e-2, 0, 0, 0.9, 0, 1e-3,
     {OPT("eta", eta, R_POS), OPT("beta1", beta1, R_UNIT), OPT("tau", tau, R_POS)}, 3, NULL},
    {"scaffold", FED_SCAFFOLD, 1.0, 0, 0, 0, 0, 0,
     {OPT("eta", eta, R_POS), OPT("clients", clients, R_COUNT)}, 2, "clients"},
    {"fednova", FED_FEDNOVA, 1.0, 0, 0, 0, 0, 0, {OPT("eta", eta, R_POS)}, 1, NULL},
};
#define N_DEFS (sizeof defs / sizeof defs[0])
#define STRATEGY_NAMES "fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, scaffold, fednova"

static void opt_list(const struct strategy_def *d, char *buf, size_t cap)
{
    buf[0] = 0;
    for (int i = 0; i < d->n_opts; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? ", " : "", d->opts[i].key);
}

static int parse_opts(const struct strategy_def *d, const char *opts, fed_strategy *s)
{
    char buf[1024], known[128];
    int given[4] = {0};
    opt_list(d, known, sizeof known);
    if (!opts)
        opts = "";
    if (strlen(opts) >= sizeof buf)
        return af_seterr(AF_EINVAL, "strategy '%s': options longer than %zu characters",
                         d->name, sizeof buf - 1);
    memcpy(buf, opts, strlen(opts) + 1);
    char *save = NULL;
    for (char *item = buf;; item = NULL) {
        char *tok = strtok_r(item, ",", &save);
        if (!tok)
            break;
        while (isspace((unsigned char)*tok))
            tok++;
        if (!*tok)
            continue;
        char *eq = strchr(tok, '=');
        if (!eq)
            return af_seterr(AF_EINVAL, "strategy '%s': option '%s' needs a value (k=v)",
                             d->name, tok);
        char *kend = eq;
        while (kend > tok && isspace((unsigned char)kend[-1]))
            kend--;
        *kend = 0;
        const char *val = eq + 1;
        int i;
        for (i = 0; i < d->n_opts; i++)
            if (!strcmp(tok, d->opts[i].key))
                break;
        if (i == d->n_opts)
            return af_seterr(AF_EINVAL, "strategy '%s': unknown option '%s' (%s takes %s)",
                             d->name, tok, d->name, known);
        if (given[i]++)
            return af_seterr(AF_EINVAL, "strategy '%s': option '%s' given twice", d->name, tok);
        char *end;
        errno = 0;
        double v = strtod(val, &end);
        while (isspace((unsigned char)*end))
            end++;
        if (end == val || *end)
            return af_seterr(AF_EINVAL, "strategy '%s': option %s='%s' is not a number",
                             d->name, tok, val);
        const char *need = NULL;
        switch (d->opts[i].range) {
        case R_POS:
            if (!(v > 0.0 && isfinite(v)))
                need = "> 0 and finite";
            break;
        case R_UNIT:
            if (!(v >= 0.0 && v < 1.0))
                need = "in [0, 1)";
            break;
        case R_NONNEG:
            if (!(v >= 0.0 && isfinite(v)))
                need = ">= 0 and finite";
            break;
        case R_COUNT:
            if (!(v >= 1.0 && v <= 0x1p53))
                need = "a whole number >= 1";
            else if (v != floor(v))
                return af_seterr(AF_EINVAL, "strategy '%s': option %s='%s' is not a whole number",
                                 d->name, tok, val);
            break;
        }
        if (need)
            return af_seterr(AF_ERANGE, "strategy '%s': option %s=%s must be %s", d->name, tok,
                             val, need);
        *(double *)((char *)s + d->opts[i].off) = v;
    }
    if (d->required) {
        for (int i = 0; i < d->n_opts; i++)
            if (!strcmp(d->opts[i].key, d->required) && !given[i])
                return af_seterr(AF_EINVAL, "strategy '%s': option '%s' is required", d->name,
                                 d->required);
    }
    return 0;
}

/* ---- strategy ---------------------------------------------------------------------------- */

int fed_strategy_create(const char *name, const char *opts, size_t n_params, fed_strategy **out)
{
    if (!out)
        return af_seterr(AF_EINVAL, "strategy: out is NULL");
    *out = NULL;
    size_t k;
    for (k = 0; k < N_DEFS; k++)
        if (name && !strcmp(name, defs[k].name))
            break;
    if (k == N_DEFS)
        return af_seterr(AF_EINVAL, "unknown strategy '%s' (expected %s)", name ? name : "(null)",
                         STRATEGY_NAMES);
    const struct strategy_def *d = &defs[k];
    if (n_params == 0)
        return af_seterr(AF_EINVAL, "strategy '%s': model has no parameters", d->name);
    if (n_params > SIZE_MAX / 64)
        return af_seterr(AF_ERANGE, "strategy '%s': %zu parameters is too many", d->name,
                         n_params);
    fed_strategy tmp = {.kind = d->kind, .n = n_params, .eta = d->eta, .beta = d->beta,
                        .mu = d->mu, .beta1 = d->beta1, .beta2 = d->beta2, .tau = d->tau};
    int rc = parse_opts(d, opts, &tmp);
    if (rc < 0)
        return rc;
    switch (d->kind) {
    case FED_FEDAVGM:
    case FED_SCAFFOLD:
        tmp.n_state = n_params;
        break;
    case FED_FEDADAM:
    case FED_FEDYOGI:
    case FED_FEDADAGRAD:
        tmp.n_state = 2 * n_params;
        break;
    default:
        tmp.n_state = 0;
    }
    fed_strategy *s = malloc(sizeof *s);
    if (!s)
        goto nomem;
    *s = tmp;
    s->state = NULL;
    if (s->n_state) {
        if (!(s->state = af_alloc(sizeof(float) * s->n_state)))
            goto nomem;
        if (s->n_state == 2 * n_params) /* v_{-1} = tau² (Algorithm 2: v_{-1} >= tau²) */
            for (size_t i = 0; i < n_params; i++)
                s->state[n_params + i] = (float)(s->tau * s->tau);
    }
    *out = s;
    return 0;
nomem:
    fed_strategy_free(s);
    return af_seterr(AF_ENOMEM, "strategy '%s': out of memory for %zu parameters", d->name,
                     n_params);
}

void fed_strategy_free(fed_strategy *s)
{
    if (!s)
        return;
    af_free(s->state);
    free(s);
}

fed_strategy_kind fed_strategy_kind_of(const fed_strategy *s) { return s->kind; }

static const char *kind_name(fed_strategy_kind k)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if (defs[i].kind == k)
            return defs[i].name;
    return "?";
}

const char *fed_strategy_name(const fed_strategy *s) { return kind_name(s->kind); }

size_t fed_strategy_n_params(const fed_strategy *s) { return s->n; }

double fed_strategy_mu(const fed_strategy *s) { return s->kind == FED_FEDPROX ? s->mu : 0.0; }

const float *fed_strategy_control(const fed_strategy *s)
{
    return s->kind == FED_SCAFFOLD ? s->state : NULL;
}

float *fed_strategy_state(fed_strategy *s, size_t *n)
{
    *n = s->n_state;
    return s->state;
}

/* ---- accumulator ------------------------------------------------------------------------- */

int fed_agg_create(const fed_strategy *s, fed_agg **out)
{
    *out = NULL;
    fed_agg *a = malloc(sizeof *a);
    if (!a)
        return af_seterr(AF_ENOMEM, "strategy '%s': out of memory for the accumulator",
                         kind_name(s->kind));
    a->kind = s->kind;
    a->n = s->n;
    size_t words = HDR_WORDS + 3 * s->n * (s->kind == FED_SCAFFOLD ? 2 : 1);
    a->bytes = words * sizeof(uint64_t);
    a->block = af_alloc(a->bytes);
    if (!a->block) {
        free(a);
        return af_seterr(AF_ENOMEM, "strategy '%s': out of memory for the accumulator (%zu bytes)",
                         kind_name(s->kind), words * sizeof(uint64_t));
    }
    a->sum = a->block + HDR_WORDS;
    a->sum_c = s->kind == FED_SCAFFOLD ? a->sum + 3 * s->n : NULL;
    *out = a;
    return 0;
}

void fed_agg_free(fed_agg *a)
{
    if (!a)
        return;
    af_free(a->block);
    free(a);
}

void fed_agg_reset(fed_agg *a) { memset(a->block, 0, a->bytes); }

uint64_t fed_agg_count(const fed_agg *a) { return a->block[0]; }

double fed_agg_weight(const fed_agg *a) { return fx_to_double(a->block + 1); }

void *fed_agg_data(fed_agg *a, size_t *bytes)
{
    *bytes = a->bytes;
    return a->block;
}

/* The term folded in for parameter i: w·delta, or w·delta/tau for FedNova (d_i = delta/tau). */
static inline double agg_term(fed_strategy_kind kind, double w, float x, double tau)
{
    return kind == FED_FEDNOVA ? w * ((double)x / tau) : w * (double)x;
}

/* max |x[i]|, or NaN/Inf if any element is not finite (the comparison keeps them). */
static float max_abs(const float *x, size_t n)
{
    float big = 0.0f;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float v = fabsf(x[i]);
        bad |= !(v <= FLT_MAX);
        big = v > big ? v : big;
    }
    return bad ? INFINITY : big;
}

static size_t first_nonfinite(const float *x, size_t n)
{
    size_t i = 0;
    while (i < n && isfinite(x[i]))
        i++;
    return i;
}

int fed_agg_add(fed_agg *a, const float *delta, double weight, const fed_extra *extra)
{
    const char *sn = kind_name(a->kind);
    if (!delta)
        return af_seterr(AF_EINVAL, "%s update: delta is NULL", sn);
    if (!(weight > 0.0 && weight < FX_TERM_MAX))
        return af_seterr(weight > 0.0 && isfinite(weight) ? AF_ERANGE : AF_EINVAL,
                         "%s update: weight %g must be > 0, finite and < 2^62", sn, weight);
    if (a->block[0] >= FX_MAX_UPDATES)
        return af_seterr(AF_ERANGE, "%s update: %llu updates already in this round", sn,
                         (unsigned long long)a->block[0]);
    double tau = 1.0;
    const float *dc = NULL;
    if (a->kind == FED_FEDNOVA) {
        tau = extra ? extra->tau : 0.0;
        if (!(tau > 0.0 && isfinite(tau)))
            return af_seterr(AF_EINVAL, "fednova update: tau (local steps) %g must be > 0", tau);
        if (!(weight * tau < FX_TERM_MAX))
            return af_seterr(AF_ERANGE, "fednova update: weight·tau %g too large", weight * tau);
    }
    if (a->kind == FED_SCAFFOLD) {
        dc = extra ? extra->delta_c : NULL;
        if (!dc)
            return af_seterr(AF_EINVAL, "scaffold update: delta_c (control variate change) is "
                                        "required");
    }
    /* validate everything first (a refused update leaves no trace): one branch-free pass for
     * the largest |delta| — NaN and Inf fail the <= FLT_MAX test — then the slow path finds
     * the culprit for the message. The term is monotone in |delta|, so bounding the largest
     * bounds them all. */
    float big = max_abs(delta, a->n);
    if (!(big <= FLT_MAX)) {
        size_t i = first_nonfinite(delta, a->n);
        return af_seterr(AF_EINVAL, "%s update: delta[%zu] is %s", sn, i,
                         isnan(delta[i]) ? "NaN" : "infinite");
    }
    if (!(fabs(agg_term(a->kind, weight, big, tau)) < FX_TERM_MAX))
        return af_seterr(AF_ERANGE, "%s update: weight·delta = %g·%g is too large (limit 2^62)",
                         sn, weight, (double)big);
    if (dc) {
        float bc = max_abs(dc, a->n);
        if (!(bc <= FLT_MAX)) {
            size_t i = first_nonfinite(dc, a->n);
            return af_seterr(AF_EINVAL, "scaffold update: delta_c[%zu] is %s", i,
                             isnan(dc[i]) ? "NaN" : "infinite");
        }
        if (!((double)bc < FX_TERM_MAX))
            return af_seterr(AF_ERANGE, "scaffold update: delta_c value %g is too large", (double)bc);
    }
    for (size_t i = 0; i < a->n; i++)
        fx_add(a->sum + 3 * i, agg_term(a->kind, weight, delta[i], tau));
    if (dc)
        for (size_t i = 0; i < a->n; i++)
            fx_add(a->sum_c + 3 * i, (double)dc[i]);
    a->block[0]++;
    fx_add(a->block + 1, weight);
    fx_add(a->block + 4, weight * tau);
    return 0;
}

int fed_agg_merge(fed_agg *dst, const fed_agg *src)
{
    if (dst->kind != src->kind || dst->n != src->n)
        return af_seterr(AF_ESHAPE, "merge: accumulator for %s with %zu parameters into one for "
                                    "%s with %zu",
                         kind_name(src->kind), src->n, kind_name(dst->kind), dst->n);
    if (dst->block[0] + src->block[0] > FX_MAX_UPDATES)
        return af_seterr(AF_ERANGE, "merge: more than 2^32 updates in one round");
    dst->block[0] += src->block[0];
    const uint64_t *s = src->block;
    uint64_t *d = dst->block;
    limb3_add(d + 1, s[1], s[2], s[3], 0); /* Σw */
    limb3_add(d + 4, s[4], s[5], s[6], 0); /* Σw·tau */
    for (size_t j = HDR_WORDS; j < dst->bytes / sizeof(uint64_t); j += 3)
        limb3_add(d + j, s[j], s[j + 1], s[j + 2], 0);
    return 0;
}

int fed_agg_mean(const fed_agg *a, float *out)
{
    if (!a->block[0])
        return af_seterr(AF_ESTATE, "%s: no updates to average", kind_name(a->kind));
    double W = fx_to_double(a->block + 1);
    for (size_t i = 0; i < a->n; i++)
        out[i] = (float)(fx_to_double(a->sum + 3 * i) / W);
    return 0;
}

/* ---- apply ------------------------------------------------------------------------------- */

int fed_strategy_apply(fed_strategy *s, const fed_agg *a, float *w)
{
    if (a->kind != s->kind || a->n != s->n)
        return af_seterr(AF_ESHAPE, "%s: accumulator was made for %s with %zu parameters, "
                                    "model has %zu",
                         kind_name(s->kind), kind_name(a->kind), a->n, s->n);
    if (!a->block[0])
        return af_seterr(AF_ESTATE, "%s: no updates this round, nothing to apply",
                         kind_name(s->kind));
    size_t n = s->n;
    const uint64_t *sum = a->sum;
    double W = fx_to_double(a->block + 1), eta = s->eta;
    float *m = s->state, *v = s->state ? s->state + n : NULL;
    double b1 = s->beta1, b2 = s->beta2, tau = s->tau;
    /* d_i = Σ_k w_k·delta_ki / Σ_k w_k: the sample-weighted mean delta */
#define MEAN(i) (fx_to_double(sum + 3 * (i)) / W)
    switch (s->kind) {
    case FED_FEDAVG:
    case FED_FEDPROX:
        for (size_t i = 0; i < n; i++) /* x += eta·d */
            w[i] = (float)(w[i] + eta * MEAN(i));
        break;
    case FED_FEDAVGM:
        for (size_t i = 0; i < n; i++) { /* u = beta·u + d; x += eta·u */
            m[i] = (float)(s->beta * m[i] + MEAN(i));
            w[i] = (float)(w[i] + eta * m[i]);
        }
        break;
    case FED_FEDADAM:
    case FED_FEDYOGI:
    case FED_FEDADAGRAD:
        for (size_t i = 0; i < n; i++) {
            double d = MEAN(i), d2 = d * d, vi = v[i];
            double mi = b1 * m[i] + (1.0 - b1) * d; /* m = β1·m + (1−β1)·d */
            if (s->kind == FED_FEDADAM)
                vi = b2 * vi + (1.0 - b2) * d2; /* v = β2·v + (1−β2)·d² */
            else if (s->kind == FED_FEDYOGI)    /* v = v − (1−β2)·d²·sign(v − d²) */
                vi = vi - (1.0 - b2) * d2 * (double)((vi > d2) - (vi < d2));
            else
                vi = vi + d2; /* v = v + d² */
            m[i] = (float)mi;
            v[i] = (float)vi;
            w[i] = (float)(w[i] + eta * mi / (sqrt(vi) + tau)); /* x += η·m/(√v + τ) */
        }
        break;
    case FED_SCAFFOLD: {
        double inv_n = 1.0 / s->clients;
        for (size_t i = 0; i < n; i++) {
            w[i] = (float)(w[i] + eta * MEAN(i)); /* x += η_g·mean(Δy) */
            /* c += (|S|/N)·mean(Δc) = (1/N)·Σ_{i∈S} Δc_i */
            m[i] = (float)(m[i] + fx_to_double(a->sum_c + 3 * i) * inv_n);
        }
        break;
    }
    case FED_FEDNOVA: {
        /* x += eta·tau_eff·Σ p_k·delta_k/tau_k,  tau_eff = Σ p_k·tau_k, p_k = w_k/Σw */
        double tau_eff = fx_to_double(a->block + 4) / W;
        for (size_t i = 0; i < n; i++)
            w[i] = (float)(w[i] + eta * tau_eff * MEAN(i));
        break;
    }
    }
#undef MEAN
    return 0;
}

/* ---- client-side helpers ----------------------------------------------------------------- */

void fed_prox_grad(float *grad, const float *w, const float *w_global, size_t n, float mu)
{
    for (size_t i = 0; i < n; i++) /* ∇ (mu/2)·||w − w_g||² = mu·(w − w_g) */
        grad[i] += mu * (w[i] - w_global[i]);
}

void fed_scaffold_correct_grad(float *grad, const float *c_global, const float *c_local, size_t n)
{
    for (size_t i = 0; i < n; i++) /* g + c − c_i */
        grad[i] += c_global[i] - c_local[i];
}

void fed_scaffold_update_control(float *c_local, float *delta_c, const float *c_global,
                                 const float *w_global, const float *w_local, size_t n,
                                 double steps, double lr)
{
    if (!(steps >= 1.0 && lr > 0.0))
        return;
    double inv = 1.0 / (steps * lr);
    for (size_t i = 0; i < n; i++) {
        /* c_i+ = c_i − c + (x − y_i)/(K·η_l) */
        float cn = (float)((double)c_local[i] - c_global[i] +
                           ((double)w_global[i] - w_local[i]) * inv);
        if (delta_c)
            delta_c[i] = cn - c_local[i];
        c_local[i] = cn;
    }
}

double fed_nova_tau(double steps, double rho)
{
    if (rho == 0.0)
        return steps;
    /* ||a||_1 with a_j = (1 − rho^(steps−j))/(1 − rho), j = 0..steps−1 */
    return (steps - rho * (1.0 - pow(rho, steps)) / (1.0 - rho)) / (1.0 - rho);
}
