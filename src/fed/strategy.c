/* strategy.c — FedAvg-family server strategies and the exact round accumulator (strategy.h).
 *
 * The accumulator keeps Σ w·delta per parameter as a 192-bit two's-complement fixed-point
 * number (3 × uint64, 96 fractional bits). Integer addition is associative, so partial sums
 * merge exactly and the result is independent of arrival order and of the thread / rank
 * split. Each term w·delta is computed in double and truncated once to the 2^-96 grid; it is
 * bounded by 2^62 so 2^32 terms fit. The limbs are stored as three planes (limb 0 of every
 * parameter, then limb 1, then limb 2) so that the fold is a straight vector loop: with
 * AVX-512 eight parameters go through the conversion and the carry chain at once
 * (fold_avx512), bitwise equal to the scalar reference (fold_scalar, fed_agg_add_ref).
 * The robust strategies (fedmedian, fedtrimmedavg, krum) work on the round's m × n block of
 * individual updates instead, with a total order on the values so the result does not depend
 * on the block's row order (Krum's tie-break and Multi-Krum's sum use the slot order).
 * Layer `fed`: core only; allocation only in *_create (and the robust scratch, grown with m).
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

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define FX_FRAC 96             /* fractional bits of the fixed-point sums */
#define FX_TERM_MAX 0x1p62     /* |term| bound: 2^32 terms stay below 2^94 < 2^95 */
#define FX_MAX_UPDATES (1ULL << 32)
#define HDR_WORDS 8 /* count, Σw (3 limbs), Σw·tau (3 limbs), reserved */

struct fed_strategy {
    fed_strategy_kind kind;
    size_t n;
    double eta, beta, mu, beta1, beta2, tau;
    double clients;
    double f, keep; /* krum: Byzantine devices tolerated, updates averaged (Multi-Krum) */
    float *state; /* one block: see fed_strategy_state */
    size_t n_state;
    void *scratch; /* robust aggregation: sort keys, Krum's distances; grown with m */
    size_t scratch_bytes;
};

struct fed_agg {
    fed_strategy_kind kind;
    size_t n;
    uint64_t *block; /* hdr[HDR_WORDS], sum: 3 planes of n limbs, then sum_c likewise */
    size_t bytes;
    uint64_t *sum, *sum_c; /* plane l of parameter i: sum[l·n + i] */
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
 * (random in real deltas): a negative term is added as its two's complement ~v + 1. The
 * scalar reference of the fold (fold_avx512 must match it bit for bit). */
static inline void fx_add3(uint64_t *a0, uint64_t *a1, uint64_t *a2, double t)
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
    uint64_t a[3] = {*a0, *a1, *a2};
    limb3_add(a, v0 ^ mask, v1 ^ mask, v2 ^ mask, neg); /* −v = ~v + 1 */
    *a0 = a[0];
    *a1 = a[1];
    *a2 = a[2];
}

/* The header's sums (Σw, Σw·tau) are three consecutive words. */
static inline void fx_add(uint64_t *a, double t) { fx_add3(a, a + 1, a + 2, t); }

/* The fixed-point value as a double (a deterministic function of the exact sum). */
static inline double fx3_to_double(uint64_t l0, uint64_t l1, uint64_t l2)
{
    int neg = (int)(l2 >> 63);
    if (neg) {
        l0 = ~l0 + 1;
        l1 = ~l1 + (l0 == 0);
        l2 = ~l2 + (l0 == 0 && l1 == 0);
    }
    double v = (double)l0 * 0x1p-96 + (double)l1 * 0x1p-32 + (double)l2 * 0x1p32;
    return neg ? -v : v;
}

static inline double fx_to_double(const uint64_t *a) { return fx3_to_double(a[0], a[1], a[2]); }

/* Parameter i of the planes at p (n parameters). */
static inline double plane_to_double(const uint64_t *p, size_t n, size_t i)
{
    return fx3_to_double(p[i], p[n + i], p[2 * n + i]);
}

/* ---- options ----------------------------------------------------------------------------- */

/* (0,inf), [0,1), [0,inf), integer >= 1, integer >= 0, [0,0.5) */
enum { R_POS, R_UNIT, R_NONNEG, R_COUNT, R_WHOLE, R_HALF };

typedef struct opt_def {
    const char *key;
    size_t off; /* offset of the double in fed_strategy */
    int range;
} opt_def;

#define OPT(k, field, r) {k, offsetof(fed_strategy, field), r}

static const struct strategy_def {
    const char *name;
    fed_strategy_kind kind;
    double eta, beta, mu, beta1, beta2, tau, f, keep;
    opt_def opts[4];
    int n_opts;
    const char *required; /* option that must be given, or NULL */
} defs[] = {
    {"fedavg", FED_FEDAVG, 1.0, 0, 0, 0, 0, 0, 0, 0, {OPT("eta", eta, R_POS)}, 1, NULL},
    {"fedavgm", FED_FEDAVGM, 1.0, 0.9, 0, 0, 0, 0, 0, 0,
     {OPT("eta", eta, R_POS), OPT("beta", beta, R_UNIT)}, 2, NULL},
    {"fedprox", FED_FEDPROX, 1.0, 0, 0.01, 0, 0, 0, 0, 0,
     {OPT("eta", eta, R_POS), OPT("mu", mu, R_NONNEG)}, 2, NULL},
    {"fedadam", FED_FEDADAM, 1e-2, 0, 0, 0.9, 0.99, 1e-3, 0, 0,
     {OPT("eta", eta, R_POS), OPT("beta1", beta1, R_UNIT), OPT("beta2", beta2, R_UNIT),
      OPT("tau", tau, R_POS)},
     4, NULL},
    {"fedyogi", FED_FEDYOGI, 1e-2, 0, 0, 0.9, 0.99, 1e-3, 0, 0,
     {OPT("eta", eta, R_POS), OPT("beta1", beta1, R_UNIT), OPT("beta2", beta2, R_UNIT),
      OPT("tau", tau, R_POS)},
     4, NULL},
    {"fedadagrad", FED_FEDADAGRAD, 1e-2, 0, 0, 0.9, 0, 1e-3, 0, 0,
     {OPT("eta", eta, R_POS), OPT("beta1", beta1, R_UNIT), OPT("tau", tau, R_POS)}, 3, NULL},
    {"scaffold", FED_SCAFFOLD, 1.0, 0, 0, 0, 0, 0, 0, 0,
     {OPT("eta", eta, R_POS), OPT("clients", clients, R_COUNT)}, 2, "clients"},
    {"fednova", FED_FEDNOVA, 1.0, 0, 0, 0, 0, 0, 0, 0, {OPT("eta", eta, R_POS)}, 1, NULL},
    {"fedmedian", FED_FEDMEDIAN, 1.0, 0, 0, 0, 0, 0, 0, 0, {OPT("eta", eta, R_POS)}, 1, NULL},
    {"fedtrimmedavg", FED_FEDTRIMMEDAVG, 1.0, 0.1, 0, 0, 0, 0, 0, 0,
     {OPT("eta", eta, R_POS), OPT("beta", beta, R_HALF)}, 2, NULL},
    {"krum", FED_KRUM, 1.0, 0, 0, 0, 0, 0, 0, 1,
     {OPT("eta", eta, R_POS), OPT("f", f, R_WHOLE), OPT("m", keep, R_COUNT)}, 3, NULL},
};
#define N_DEFS (sizeof defs / sizeof defs[0])
#define STRATEGY_NAMES "fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, scaffold, " \
                       "fednova, fedmedian, fedtrimmedavg, krum"

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
        case R_WHOLE:
            if (!(v >= (d->opts[i].range == R_COUNT ? 1.0 : 0.0) && v <= 0x1p53))
                need = d->opts[i].range == R_COUNT ? "a whole number >= 1" : "a whole number >= 0";
            else if (v != floor(v))
                return af_seterr(AF_EINVAL, "strategy '%s': option %s='%s' is not a whole number",
                                 d->name, tok, val);
            break;
        case R_HALF:
            if (!(v >= 0.0 && v < 0.5))
                need = "in [0, 0.5) (the share cut at each end)";
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
                        .mu = d->mu, .beta1 = d->beta1, .beta2 = d->beta2, .tau = d->tau,
                        .f = d->f, .keep = d->keep};
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
    free(s->scratch);
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

/* max |x[i]|, or Inf if any element is not finite. On the IEEE bit patterns with the sign
 * cleared, |x| orders like the unsigned integer, and NaN/Inf (exponent all ones) are above
 * FLT_MAX's pattern: an integer max that vectorises. */
static float max_abs(const float *x, size_t n)
{
    uint32_t big = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i, sizeof b);
        b &= 0x7fffffffu;
        big = b > big ? b : big;
    }
    if (big > 0x7f7fffffu)
        return INFINITY;
    float f;
    memcpy(&f, &big, sizeof f);
    return f;
}

static size_t first_nonfinite(const float *x, size_t n)
{
    size_t i = 0;
    while (i < n && isfinite(x[i]))
        i++;
    return i;
}

/* planes[l·stride + i] += w·x[i] (w·(x[i]/tau) for FedNova) for i < n: the scalar reference.
 * stride is the accumulator's n_params; n <= stride is the length of this (slice of the)
 * update, planes already advanced to its first parameter. */
static void fold_scalar(uint64_t *planes, size_t stride, size_t n, const float *x, double w,
                        double tau, int nova)
{
    for (size_t i = 0; i < n; i++)
        fx_add3(planes + i, planes + stride + i, planes + 2 * stride + i,
                nova ? w * ((double)x[i] / tau) : w * (double)x[i]);
}

#if defined(__AVX512F__)
/* fold_scalar eight parameters at a time: the same double term, the same truncation to the
 * 2^-96 grid and the same 192-bit two's-complement add, lane by lane (so bitwise equal).
 * t = ±m·2^(e−1075) with m < 2^53; scaled by 2^96 it is m·2^p, p = e − 979: a right shift
 * when p < 0 (truncation toward zero of the magnitude), else a 53-bit window at bit p that
 * covers limbs p/64 and p/64 + 1. A negative term is added as ~v + 1. Lanes past n are
 * masked off (they load 0, add 0 and are not stored). */
static void fold_avx512(uint64_t *planes, size_t stride, size_t n, const float *x, double w,
                        double tau, int nova)
{
    uint64_t *p0 = planes, *p1 = planes + stride, *p2 = planes + 2 * stride;
    const __m512d vw = _mm512_set1_pd(w), vt = _mm512_set1_pd(tau);
    const __m512i mant = _mm512_set1_epi64((1LL << 52) - 1), hidden = _mm512_set1_epi64(1LL << 52);
    const __m512i c7ff = _mm512_set1_epi64(0x7ff), one = _mm512_set1_epi64(1);
    const __m512i bias = _mm512_set1_epi64(1075 - FX_FRAC), c63 = _mm512_set1_epi64(63);
    const __m512i c64 = _mm512_set1_epi64(64), zero = _mm512_setzero_si512();
    for (size_t i = 0; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - i)) - 1);
        __m512d t = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, x + i));
        if (nova)
            t = _mm512_div_pd(t, vt);
        t = _mm512_mul_pd(vw, t);
        __m512i b = _mm512_castpd_si512(t);
        __m512i e = _mm512_and_si512(_mm512_srli_epi64(b, 52), c7ff);
        __m512i m = _mm512_and_si512(b, mant);
        m = _mm512_mask_or_epi64(m, _mm512_test_epi64_mask(e, e), m, hidden); /* normal: 1.m */
        e = _mm512_max_epi64(e, one);                                          /* subnormal: e = 1 */
        __m512i p = _mm512_sub_epi64(e, bias);
        /* p < 0: m >>= −p (a count >= 64 gives 0, like the scalar early return) */
        m = _mm512_srlv_epi64(m, _mm512_max_epi64(_mm512_sub_epi64(zero, p), zero));
        p = _mm512_max_epi64(p, zero);
        __m512i sh = _mm512_and_si512(p, c63);
        __m512i lo = _mm512_sllv_epi64(m, sh);
        __m512i hi = _mm512_srlv_epi64(m, _mm512_sub_epi64(c64, sh)); /* sh = 0: count 64 → 0 */
        __mmask8 up = _mm512_cmpge_epi64_mask(p, c64);
        __m512i neg = _mm512_srai_epi64(b, 63), cin = _mm512_srli_epi64(b, 63);
        __m512i v0 = _mm512_xor_si512(_mm512_maskz_mov_epi64((__mmask8)~up, lo), neg);
        __m512i v1 = _mm512_xor_si512(_mm512_mask_blend_epi64(up, hi, lo), neg);
        __m512i v2 = _mm512_xor_si512(_mm512_maskz_mov_epi64(up, hi), neg);
        __m512i s0 = _mm512_add_epi64(_mm512_maskz_loadu_epi64(k, p0 + i), v0);
        __mmask8 c0 = _mm512_cmplt_epu64_mask(s0, v0);
        s0 = _mm512_add_epi64(s0, cin);
        c0 |= _mm512_cmplt_epu64_mask(s0, cin);
        __m512i s1 = _mm512_add_epi64(_mm512_maskz_loadu_epi64(k, p1 + i), v1);
        __mmask8 c1 = _mm512_cmplt_epu64_mask(s1, v1);
        s1 = _mm512_mask_add_epi64(s1, c0, s1, one);
        c1 |= _mm512_mask_cmpeq_epi64_mask(c0, s1, zero); /* + carry wrapped to 0 */
        __m512i s2 = _mm512_add_epi64(_mm512_maskz_loadu_epi64(k, p2 + i), v2);
        s2 = _mm512_mask_add_epi64(s2, c1, s2, one);
        _mm512_mask_storeu_epi64(p0 + i, k, s0);
        _mm512_mask_storeu_epi64(p1 + i, k, s1);
        _mm512_mask_storeu_epi64(p2 + i, k, s2);
    }
}
#endif

/* The per-update checks shared by fed_agg_add and the slice API: weight, room for one more
 * update, FedNova's tau (*tau_out, 1 for the others). Nothing changes on error. */
static int check_weight(const fed_agg *a, double weight, const fed_extra *extra,
                        double *tau_out)
{
    const char *sn = kind_name(a->kind);
    if (!(weight > 0.0 && weight < FX_TERM_MAX))
        return af_seterr(weight > 0.0 && isfinite(weight) ? AF_ERANGE : AF_EINVAL,
                         "%s update: weight %g must be > 0, finite and < 2^62", sn, weight);
    if (a->block[0] >= FX_MAX_UPDATES)
        return af_seterr(AF_ERANGE, "%s update: %llu updates already in this round", sn,
                         (unsigned long long)a->block[0]);
    double tau = 1.0;
    if (a->kind == FED_FEDNOVA) {
        tau = extra ? extra->tau : 0.0;
        if (!(tau > 0.0 && isfinite(tau)))
            return af_seterr(AF_EINVAL, "fednova update: tau (local steps) %g must be > 0", tau);
        if (!(weight * tau < FX_TERM_MAX))
            return af_seterr(AF_ERANGE, "fednova update: weight·tau %g too large", weight * tau);
    }
    *tau_out = tau;
    return 0;
}

/* Checks an update for fed_agg_add (nothing changes on error); *tau_out gets the tau used. */
static int check_update(const fed_agg *a, const float *delta, double weight,
                        const fed_extra *extra, double *tau_out, const float **dc_out)
{
    const char *sn = kind_name(a->kind);
    if (!delta)
        return af_seterr(AF_EINVAL, "%s update: delta is NULL", sn);
    double tau = 1.0;
    const float *dc = NULL;
    int rc = check_weight(a, weight, extra, &tau);
    if (rc)
        return rc;
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
    *tau_out = tau;
    *dc_out = dc;
    return 0;
}

typedef void (*fold_fn)(uint64_t *, size_t, size_t, const float *, double, double, int);

static int agg_add(fed_agg *a, const float *delta, double weight, const fed_extra *extra,
                   fold_fn fold)
{
    double tau = 1.0;
    const float *dc = NULL;
    int rc = check_update(a, delta, weight, extra, &tau, &dc);
    if (rc)
        return rc;
    fold(a->sum, a->n, a->n, delta, weight, tau, a->kind == FED_FEDNOVA);
    if (dc)
        fold(a->sum_c, a->n, a->n, dc, 1.0, 1.0, 0); /* 1.0·(double)x is x exactly */
    a->block[0]++;
    fx_add(a->block + 1, weight);
    fx_add(a->block + 4, weight * tau);
    return 0;
}

int fed_agg_add(fed_agg *a, const float *delta, double weight, const fed_extra *extra)
{
#if defined(__AVX512F__)
    return agg_add(a, delta, weight, extra, fold_avx512);
#else
    return agg_add(a, delta, weight, extra, fold_scalar);
#endif
}

int fed_agg_add_ref(fed_agg *a, const float *delta, double weight, const fed_extra *extra)
{
    return agg_add(a, delta, weight, extra, fold_scalar);
}

/* ---- the update in slices (streaming) ----------------------------------------------------- */

/* Checks a slice for fed_agg_add_slice / fed_agg_sub_slice exactly as check_update checks the
 * whole update (max over a slice <= max over the update, so a slice of an update fed_agg_add
 * accepts is accepted). Nothing changes on error; *tau_out gets the tau used. */
static int check_slice(const fed_agg *a, fed_agg_part part, size_t offset, const float *x,
                       size_t count, double weight, const fed_extra *extra, double *tau_out)
{
    const char *sn = kind_name(a->kind);
    if (part != FED_AGG_DELTA && !(part == FED_AGG_DELTA_C && a->sum_c))
        return af_seterr(AF_EINVAL, "%s update slice: part %d is not one this strategy sums "
                                    "(delta_c slices are for scaffold only)",
                         sn, (int)part);
    if (count && !x)
        return af_seterr(AF_EINVAL, "%s update slice: values are NULL", sn);
    if (offset > a->n || count > a->n - offset)
        return af_seterr(AF_EINVAL, "%s update slice: [%zu, %zu + %zu) is outside the %zu "
                                    "parameters",
                         sn, offset, offset, count, a->n);
    double tau = 1.0;
    int rc = check_weight(a, weight, extra, &tau);
    if (rc)
        return rc;
    const char *what = part == FED_AGG_DELTA ? "delta" : "delta_c";
    float big = max_abs(x, count);
    if (!(big <= FLT_MAX)) {
        size_t i = first_nonfinite(x, count);
        return af_seterr(AF_EINVAL, "%s update: %s[%zu] is %s", sn, what, offset + i,
                         isnan(x[i]) ? "NaN" : "infinite");
    }
    double term = part == FED_AGG_DELTA ? agg_term(a->kind, weight, big, tau) : (double)big;
    if (!(fabs(term) < FX_TERM_MAX))
        return af_seterr(AF_ERANGE, "%s update: %s value %g (weight %g) is too large "
                                    "(limit 2^62 on the term)",
                         sn, what, (double)big, weight);
    *tau_out = tau;
    return 0;
}

/* Folds sign·(the slice's terms): sign −1 negates the weight (1 for delta_c), which negates
 * every term exactly (IEEE products round symmetrically), and the truncation toward zero is
 * symmetric too, so the −1 fold adds precisely the two's complement of the +1 fold. */
static int agg_slice(fed_agg *a, fed_agg_part part, size_t offset, const float *x,
                     size_t count, double weight, const fed_extra *extra, double sign)
{
    double tau = 1.0;
    int rc = check_slice(a, part, offset, x, count, weight, extra, &tau);
    if (rc)
        return rc;
#if defined(__AVX512F__)
    fold_fn fold = fold_avx512;
#else
    fold_fn fold = fold_scalar;
#endif
    if (!count)
        return 0;
    if (part == FED_AGG_DELTA)
        fold(a->sum + offset, a->n, count, x, sign * weight, tau, a->kind == FED_FEDNOVA);
    else
        fold(a->sum_c + offset, a->n, count, x, sign, 1.0, 0);
    return 0;
}

int fed_agg_add_slice(fed_agg *a, fed_agg_part part, size_t offset, const float *values,
                      size_t count, double weight, const fed_extra *extra)
{
    return agg_slice(a, part, offset, values, count, weight, extra, 1.0);
}

int fed_agg_sub_slice(fed_agg *a, fed_agg_part part, size_t offset, const float *values,
                      size_t count, double weight, const fed_extra *extra)
{
    return agg_slice(a, part, offset, values, count, weight, extra, -1.0);
}

int fed_agg_finish_update(fed_agg *a, double weight, const fed_extra *extra)
{
    double tau = 1.0;
    int rc = check_weight(a, weight, extra, &tau);
    if (rc)
        return rc;
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
    size_t n = dst->n;
    for (int part = 0; part < (dst->sum_c ? 2 : 1); part++) {
        uint64_t *d0 = (part ? dst->sum_c : dst->sum), *d1 = d0 + n, *d2 = d0 + 2 * n;
        const uint64_t *s0 = (part ? src->sum_c : src->sum), *s1 = s0 + n, *s2 = s0 + 2 * n;
        for (size_t i = 0; i < n; i++) {
            uint64_t a[3] = {d0[i], d1[i], d2[i]};
            limb3_add(a, s0[i], s1[i], s2[i], 0);
            d0[i] = a[0];
            d1[i] = a[1];
            d2[i] = a[2];
        }
    }
    return 0;
}

int fed_agg_mean(const fed_agg *a, float *out)
{
    if (!a->block[0])
        return af_seterr(AF_ESTATE, "%s: no updates to average", kind_name(a->kind));
    double W = fx_to_double(a->block + 1);
    for (size_t i = 0; i < a->n; i++)
        out[i] = (float)(plane_to_double(a->sum, a->n, i) / W);
    return 0;
}

/* ---- apply ------------------------------------------------------------------------------- */

int fed_strategy_apply(fed_strategy *s, const fed_agg *a, float *w)
{
    if (a->kind != s->kind || a->n != s->n)
        return af_seterr(AF_ESHAPE, "%s: accumulator was made for %s with %zu parameters, "
                                    "model has %zu",
                         kind_name(s->kind), kind_name(a->kind), a->n, s->n);
    if (fed_strategy_needs_updates(s))
        return af_seterr(AF_EINVAL, "%s: robust aggregation needs the round's individual "
                                    "updates (fed_strategy_apply_updates), not their sum",
                         kind_name(s->kind));
    if (!a->block[0])
        return af_seterr(AF_ESTATE, "%s: no updates this round, nothing to apply",
                         kind_name(s->kind));
    size_t n = s->n;
    const uint64_t *sum = a->sum;
    double W = fx_to_double(a->block + 1), eta = s->eta;
    float *m = s->state, *v = s->state ? s->state + n : NULL;
    double b1 = s->beta1, b2 = s->beta2, tau = s->tau;
    /* d_i = Σ_k w_k·delta_ki / Σ_k w_k: the sample-weighted mean delta */
#define MEAN(i) (plane_to_double(sum, n, i) / W)
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
            m[i] = (float)(m[i] + plane_to_double(a->sum_c, n, i) * inv_n);
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
    case FED_FEDMEDIAN:
    case FED_FEDTRIMMEDAVG:
    case FED_KRUM:
        break; /* refused above */
    }
#undef MEAN
    return 0;
}

/* ---- robust aggregation over the individual updates -------------------------------------- */

int fed_strategy_needs_updates(const fed_strategy *s)
{
    return s->kind == FED_FEDMEDIAN || s->kind == FED_FEDTRIMMEDAVG || s->kind == FED_KRUM;
}

int fed_strategy_check_updates(const fed_strategy *s, size_t m)
{
    const char *sn = kind_name(s->kind);
    if (!fed_strategy_needs_updates(s))
        return af_seterr(AF_EINVAL, "%s aggregates a weighted sum (fed_agg + fed_strategy_apply), "
                                    "not individual updates",
                         sn);
    if (m == 0)
        return af_seterr(AF_ESTATE, "%s: no updates this round, nothing to apply", sn);
    if (s->kind == FED_KRUM) {
        double f = s->f, keep = s->keep;
        /* Blanchard et al. 2017: n > 2f + 2, so that each score has n − f − 2 >= 1 neighbours */
        if (!((double)m > 2.0 * f + 2.0))
            return af_seterr(AF_EINVAL, "krum: %zu updates this round, but f=%.0f needs more than "
                                        "2f+2 = %.0f (lower f or select more devices per round)",
                             m, f, 2.0 * f + 2.0);
        if (!(keep <= (double)m - f))
            return af_seterr(AF_EINVAL, "krum: m=%.0f updates to average, but only n − f = %.0f "
                                        "of the %zu this round may be kept (lower m)",
                             keep, (double)m - f, m);
    }
    if (m > SIZE_MAX / s->n || (s->kind == FED_KRUM && m > 65536))
        return af_seterr(AF_ERANGE, "%s: %zu updates in one round is too many", sn, m);
    return 0;
}

/* A float's bits as an unsigned key that orders like the value, with −0 < +0: a total order,
 * so sorting a multiset of values gives one sequence whatever order they came in. */
static inline uint32_t float_key(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b >> 31 ? ~b : b | 0x80000000u;
}

static inline float key_float(uint32_t k)
{
    uint32_t b = k >> 31 ? k ^ 0x80000000u : ~k;
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int cmp_f64(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts the keys of column i of the m × n block (ascending value). */
static void sorted_column(const float *u, size_t m, size_t n, size_t i, uint32_t *key)
{
    for (size_t k = 0; k < m; k++)
        key[k] = float_key(u[k * n + i]);
    if (m <= 32) { /* insertion sort: the usual round is small */
        for (size_t k = 1; k < m; k++) {
            uint32_t v = key[k];
            size_t j = k;
            for (; j > 0 && key[j - 1] > v; j--)
                key[j] = key[j - 1];
            key[j] = v;
        }
    } else {
        qsort(key, m, sizeof *key, cmp_u32);
    }
}

/* Scratch of at least `bytes`, grown (never shrunk) across rounds. */
static int scratch(fed_strategy *s, size_t bytes, void **out)
{
    if (bytes > s->scratch_bytes) {
        void *p = realloc(s->scratch, bytes);
        if (!p)
            return af_seterr(AF_ENOMEM, "%s: out of memory for %zu bytes of scratch",
                             kind_name(s->kind), bytes);
        s->scratch = p;
        s->scratch_bytes = bytes;
    }
    *out = s->scratch;
    return 0;
}

/* Krum's selection (Blanchard et al. 2017) of u (m × n) into sel[0..keep), ascending slot
 * order. Distances are summed over coordinates in index order, neighbour distances in
 * ascending order, and equal scores go to the lower slot: the choice is a function of the
 * block alone. */
static void krum_select(const float *u, size_t m, size_t n, size_t f, size_t keep, double *d2,
                        double *row, double *score, size_t *sel)
{
    for (size_t a = 0; a < m; a++) { /* d2[a][b] = ||u_a − u_b||² */
        d2[a * m + a] = 0.0;
        for (size_t b = a + 1; b < m; b++) {
            const float *x = u + a * n, *y = u + b * n;
            double acc = 0.0;
            for (size_t i = 0; i < n; i++) {
                double t = (double)x[i] - (double)y[i];
                acc += t * t;
            }
            d2[a * m + b] = d2[b * m + a] = acc;
        }
    }
    size_t nn = m - f - 2; /* score(a) = Σ of the m − f − 2 smallest ||u_a − u_b||², b ≠ a */
    for (size_t a = 0; a < m; a++) {
        size_t r = 0;
        for (size_t b = 0; b < m; b++)
            if (b != a)
                row[r++] = d2[a * m + b];
        qsort(row, r, sizeof *row, cmp_f64);
        double sc = 0.0;
        for (size_t k = 0; k < nn; k++)
            sc += row[k];
        score[a] = sc;
    }
    /* the keep lowest scores (ties: lower slot), by repeated selection; m is small */
    uint8_t *taken = (uint8_t *)row; /* row is free again: m doubles >= m bytes */
    memset(taken, 0, m);
    for (size_t k = 0; k < keep; k++) {
        size_t best = SIZE_MAX;
        for (size_t a = 0; a < m; a++)
            if (!taken[a] && (best == SIZE_MAX || score[a] < score[best]))
                best = a;
        taken[best] = 1;
    }
    size_t k = 0;
    for (size_t a = 0; a < m; a++)
        if (taken[a])
            sel[k++] = a;
}

int fed_strategy_apply_updates(fed_strategy *s, const float *updates, size_t m, float *w)
{
    int rc = fed_strategy_check_updates(s, m);
    if (rc)
        return rc;
    const char *sn = kind_name(s->kind);
    const size_t n = s->n;
    if (!updates || !w)
        return af_seterr(AF_EINVAL, "%s: updates or weights are NULL", sn);
    for (size_t k = 0; k < m; k++) { /* all checked before anything changes */
        const float *u = updates + k * n;
        if (!(max_abs(u, n) <= FLT_MAX)) {
            size_t i = first_nonfinite(u, n);
            return af_seterr(AF_EINVAL, "%s: update %zu: delta[%zu] is %s", sn, k, i,
                             isnan(u[i]) ? "NaN" : "infinite");
        }
    }
    const double eta = s->eta;
    void *mem = NULL;
    if (s->kind == FED_KRUM) {
        const size_t f = (size_t)s->f, keep = (size_t)s->keep;
        if ((rc = scratch(s, (m * m + 2 * m) * sizeof(double) + m * sizeof(size_t), &mem)))
            return rc;
        double *d2 = mem, *row = d2 + m * m, *score = row + m;
        size_t *sel = (size_t *)(score + m);
        krum_select(updates, m, n, f, keep, d2, row, score, sel);
        for (size_t i = 0; i < n; i++) { /* x += eta·(1/keep)·Σ_{k∈sel} u_k, slots ascending */
            double acc = 0.0;
            for (size_t k = 0; k < keep; k++)
                acc += (double)updates[sel[k] * n + i];
            w[i] = (float)(w[i] + eta * (acc / (double)keep));
        }
        return 0;
    }
    if ((rc = scratch(s, m * sizeof(uint32_t), &mem)))
        return rc;
    uint32_t *key = mem;
    /* fedtrimmedavg: cut ⌊β·m⌋ at each end (the 1e-9 keeps 0.29·100 = 28.999… from losing one) */
    size_t cut = s->kind == FED_FEDTRIMMEDAVG ? (size_t)floor(s->beta * (double)m + 1e-9) : 0;
    for (size_t i = 0; i < n; i++) {
        sorted_column(updates, m, n, i, key);
        double d;
        if (s->kind == FED_FEDMEDIAN) { /* the middle value; the mean of the two for even m */
            d = m & 1 ? (double)key_float(key[m / 2])
                      : 0.5 * ((double)key_float(key[m / 2 - 1]) + (double)key_float(key[m / 2]));
        } else { /* mean of the sorted values [cut, m − cut), summed in ascending order */
            double acc = 0.0;
            for (size_t k = cut; k < m - cut; k++)
                acc += (double)key_float(key[k]);
            d = acc / (double)(m - 2 * cut);
        }
        w[i] = (float)(w[i] + eta * d); /* x += eta·d */
    }
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
