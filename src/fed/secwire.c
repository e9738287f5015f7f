/* secwire.c — secure aggregation over HTTP: records, base64 and the vector layout (see
 * secwire.h). */
#include "fed/secwire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "fed/dp.h"

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void secwire_put_key(uint8_t rec[SECWIRE_KEY_REC], const secagg_advertise *a)
{
    put32(rec, a->id);
    memcpy(rec + 4, a->c_pk, 32);
    memcpy(rec + 36, a->s_pk, 32);
    memcpy(rec + 68, a->sig, 64);
}

void secwire_get_key(const uint8_t rec[SECWIRE_KEY_REC], uint64_t round_id, secagg_advertise *a)
{
    a->round_id = round_id;
    a->id = get32(rec);
    memcpy(a->c_pk, rec + 4, 32);
    memcpy(a->s_pk, rec + 36, 32);
    memcpy(a->sig, rec + 68, 64);
}

void secwire_put_share(uint8_t rec[SECWIRE_SHARE_REC], const secagg_enc_share *s)
{
    put32(rec, s->from);
    put32(rec + 4, s->to);
    memcpy(rec + 8, s->nonce, SECAGG_NONCE_BYTES);
    memcpy(rec + 8 + SECAGG_NONCE_BYTES, s->ct, SECAGG_SHARE_CT_BYTES);
}

void secwire_get_share(const uint8_t rec[SECWIRE_SHARE_REC], secagg_enc_share *s)
{
    s->from = get32(rec);
    s->to = get32(rec + 4);
    memcpy(s->nonce, rec + 8, SECAGG_NONCE_BYTES);
    memcpy(s->ct, rec + 8 + SECAGG_NONCE_BYTES, SECAGG_SHARE_CT_BYTES);
}

void secwire_put_reveal(uint8_t rec[SECWIRE_REVEAL_REC], const secagg_reveal *r)
{
    put32(rec, r->owner);
    put32(rec + 4, r->kind);
    for (int i = 0; i < SECAGG_CHUNKS; i++)
        put64(rec + 8 + 8 * i, r->y[i]);
}

void secwire_get_reveal(const uint8_t rec[SECWIRE_REVEAL_REC], secagg_reveal *r)
{
    r->owner = get32(rec);
    r->kind = get32(rec + 4);
    for (int i = 0; i < SECAGG_CHUNKS; i++)
        r->y[i] = get64(rec + 8 + 8 * i);
}

char *secwire_b64(const void *bin, size_t len)
{
    const int v = sodium_base64_VARIANT_ORIGINAL;
    size_t cap = sodium_base64_encoded_len(len, v);
    char *s = malloc(cap);
    if (s)
        sodium_bin2base64(s, cap, bin, len, v);
    return s;
}

int secwire_unb64(const char *s, const char *what, size_t rec, size_t count, uint8_t **out,
                  size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!s)
        return af_seterr(AF_EFORMAT, "%s: expected a base64 string", what);
    size_t n = strlen(s), cap = n / 4 * 3 + 3;
    uint8_t *b = malloc(cap ? cap : 1);
    if (!b)
        return af_seterr(AF_ENOMEM, "%s: out of memory", what);
    size_t got = 0;
    const char *end = NULL;
    if (n && (sodium_base642bin(b, cap, s, n, NULL, &got, &end, sodium_base64_VARIANT_ORIGINAL) ||
              end != s + n)) {
        free(b);
        return af_seterr(AF_EFORMAT, "%s: not valid base64", what);
    }
    if ((rec && got % rec) || (count && got != rec * count)) {
        free(b);
        if (count)
            return af_seterr(AF_EFORMAT, "%s: %zu bytes, expected %zu", what, got, rec * count);
        return af_seterr(AF_EFORMAT, "%s: %zu bytes is not a whole number of %zu-byte records", what,
                         got, rec);
    }
    *out = b;
    *len = got;
    return 0;
}

int secwire_unb64_fixed(const char *s, const char *what, void *out, size_t n)
{
    uint8_t *b;
    size_t len;
    int rc = secwire_unb64(s, what, n, 1, &b, &len);
    if (rc)
        return rc;
    memcpy(out, b, n);
    free(b);
    return 0;
}

/* ---- the vector ------------------------------------------------------------------------------ */

int secwire_layout_init(secwire_layout *L, const secwire_params *p, size_t n_params, int classes)
{
    secwire_layout l;
    memset(&l, 0, sizeof l);
    l.p = *p;
    int rc;
    if (p->n < 1 || p->n > SECAGG_MAX_DEVICES || !(2 * p->t > p->n) || p->t > p->n)
        return af_seterr(AF_ERANGE, "secagg: n = %u, t = %u: need n/2 < t <= n <= %d", p->n, p->t,
                         SECAGG_MAX_DEVICES);
    if (classes < 1 || classes > POPSTATS_MAX_CLASSES)
        return af_seterr(AF_ERANGE, "secagg: classes must be in [1, %d], got %d", POPSTATS_MAX_CLASSES,
                         classes);
    l.classes = classes;
    if (p->kind == SECWIRE_LABELS) {
        if ((rc = popstats_params_init(&l.ps, classes, p->stats_bound, p->stats_noise, p->n, p->t)))
            return rc;
        l.sigma_dev = l.ps.sigma_dev;
        l.off_tail = (size_t)classes;
        l.len = l.off_tail + 1;
        *L = l;
        return 0;
    }
    if (p->kind != SECWIRE_TRAIN)
        return af_seterr(AF_EINVAL, "secagg: unknown vector kind %d", p->kind);
    if (n_params < 1)
        return af_seterr(AF_ERANGE, "secagg: a model needs parameters");
    l.n_params = n_params;
    l.confusion = classes >= 2 && classes <= SECWIRE_MAX_CONF_CLASSES;
    if (p->clip > 0) {
        if (!isfinite(p->clip) || !(p->noise >= 0 && p->noise <= 1e6) ||
            !(p->count_noise >= 0 && isfinite(p->count_noise)))
            return af_seterr(AF_ERANGE, "secagg: clip %g, noise %g, count noise %g out of range", p->clip,
                             p->noise, p->count_noise);
        if (p->noise > 0 && (rc = dp_split_noise_sigma(p->noise, p->clip, p->n, p->t, &l.sigma_dev)))
            return rc;
        if ((rc = secagg_quant_init(&l.qd, p->clip + 8.0 * l.sigma_dev, p->n)))
            return af_preerr(rc, "secagg");
        if (p->adaptive) {
            l.sigma_b_dev = p->count_noise / sqrt((double)p->t);
            if ((rc = secagg_quant_init(&l.qb, 0.5 + 8.0 * l.sigma_b_dev, p->n)))
                return af_preerr(rc, "secagg");
        }
    } else {
        if (!(p->range > 0 && isfinite(p->range)) || p->max_samples < 1 ||
            p->max_samples > SECWIRE_MAX_SAMPLES)
            return af_seterr(AF_ERANGE, "secagg: range %g must be > 0 and max_samples %u in [1, %u]",
                             p->range, p->max_samples, SECWIRE_MAX_SAMPLES);
        if ((rc = secagg_quant_init(&l.qd, p->range * p->max_samples, p->n)))
            return af_preerr(rc, "secagg");
    }
    l.off_aux = n_params;
    l.off_tail = n_params + 1;
    l.len = l.off_tail + SECWIRE_TAIL + (l.confusion ? (size_t)classes * classes : 0);
    *L = l;
    return 0;
}

static uint32_t capped(double v, double cap)
{
    if (!(v > 0))
        return 0;
    return (uint32_t)llround(v < cap ? v : cap);
}

static void encode_tail(const secwire_layout *L, const secwire_report *r, uint32_t *t)
{
    memset(t, 0, (L->len - L->off_tail) * sizeof *t);
    t[0] = 1;
    if (L->p.kind == SECWIRE_LABELS)
        return;
    t[1] = capped(r->num_samples, SECWIRE_MAX_SAMPLES);
    if (isfinite(r->loss) && r->loss >= 0) {
        t[2] = 1;
        t[3] = capped(1000.0 * r->loss, 1000.0 * SECWIRE_MAX_LOSS);
    }
    if (r->eval_samples > 0) {
        t[4] = capped(r->eval_samples, SECWIRE_MAX_SAMPLES);
        t[5] = capped(r->eval_correct, t[4]);
        t[6] = 1;
        t[7] = isfinite(r->eval_loss) ? capped(1000.0 * r->eval_loss, 1000.0 * SECWIRE_MAX_LOSS) : 0;
        if (L->confusion && r->confusion)
            for (size_t i = 0; i < (size_t)L->classes * L->classes; i++)
                t[SECWIRE_TAIL + i] = capped((double)r->confusion[i], SECWIRE_MAX_SAMPLES);
    }
}

int secwire_encode_train(const secwire_layout *L, float *delta, const secwire_report *r,
                         af_rng *rng, uint32_t *words, int *unclipped)
{
    const size_t n = L->n_params;
    int rc;
    if (L->p.kind != SECWIRE_TRAIN)
        return af_seterr(AF_EINVAL, "secagg: not a training layout");
    if (!(r->num_samples > 0))
        return af_seterr(AF_EINVAL, "secagg: num_samples must be > 0");
    if (L->p.clip > 0) {
        int clipped = 0;
        if ((rc = dp_clip_l2(delta, n, L->p.clip, NULL, &clipped)))
            return rc;
        if (unclipped)
            *unclipped = !clipped;
        if (L->sigma_dev > 0 && (rc = dp_add_gaussian(delta, n, L->sigma_dev, rng)))
            return rc;
        if ((rc = secagg_quantize(&L->qd, delta, n, words, NULL)))
            return rc;
        words[L->off_aux] = 0;
        if (L->p.adaptive) {
            float b = (clipped ? -0.5f : 0.5f) + (float)(L->sigma_b_dev * af_rng_normal(rng));
            if ((rc = secagg_quantize(&L->qb, &b, 1, words + L->off_aux, NULL)))
                return rc;
        }
    } else {
        const uint32_t w = capped(r->num_samples, L->p.max_samples);
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(delta[i]))
                return af_seterr(AF_EINVAL, "secagg: delta[%zu] is not finite", i);
            delta[i] = (float)((double)w * delta[i]);
        }
        if ((rc = secagg_quantize(&L->qd, delta, n, words, NULL)))
            return rc;
        if (unclipped)
            *unclipped = 1;
        words[L->off_aux] = w;
    }
    encode_tail(L, r, words + L->off_tail);
    return 0;
}

int secwire_encode_labels(const secwire_layout *L, const uint32_t *counts, af_rng *rng,
                          uint32_t *words)
{
    if (L->p.kind != SECWIRE_LABELS)
        return af_seterr(AF_EINVAL, "secagg: not a label_stats layout");
    int rc = popstats_device_encode(&L->ps, counts, rng, words, NULL, NULL);
    if (rc)
        return rc;
    secwire_report r = {0};
    encode_tail(L, &r, words + L->off_tail);
    return 0;
}

void secwire_decode(const secwire_layout *L, const uint32_t *sum, float *delta_sum,
                    double *counts, int64_t *confusion, secwire_sums *out)
{
    memset(out, 0, sizeof *out);
    const uint32_t *t = sum + L->off_tail;
    out->count = t[0];
    if (L->p.kind == SECWIRE_LABELS) {
        if (counts)
            popstats_accumulate(&L->ps, sum, counts);
        return;
    }
    if (delta_sum)
        secagg_dequantize(&L->qd, sum, L->n_params, delta_sum);
    if (L->p.clip > 0) {
        if (L->p.adaptive)
            out->weight = (double)(int32_t)sum[L->off_aux] / L->qb.scale;
    } else {
        out->weight = sum[L->off_aux];
    }
    out->samples = t[1];
    out->has_loss = t[2];
    out->loss_sum = t[3] / 1000.0;
    out->eval_samples = t[4];
    out->eval_correct = t[5];
    out->has_eval = t[6];
    out->eval_loss_sum = t[7] / 1000.0;
    if (confusion && L->confusion)
        for (size_t i = 0; i < (size_t)L->classes * L->classes; i++)
            confusion[i] = t[SECWIRE_TAIL + i];
}
