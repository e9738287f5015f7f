/* optim.c — SGD (momentum, Nesterov, weight decay) and Adam, as in torch.optim (see optim.h). */
#include "nn/optim.h"

#include <math.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "core/err.h"
#include "core/mem.h"

nn_optim_cfg nn_optim_defaults(nn_opt_kind kind)
{
    nn_optim_cfg c = {.kind = kind, .lr = kind == NN_OPT_ADAM ? 0.001f : 0.01f,
                      .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    return c;
}

int nn_optim_parse_kind(const char *s, nn_opt_kind *kind)
{
    if (strcmp(s, "sgd") == 0)
        *kind = NN_OPT_SGD;
    else if (strcmp(s, "adam") == 0)
        *kind = NN_OPT_ADAM;
    else
        return af_seterr(AF_EINVAL, "unknown optimizer '%s' (known: sgd, adam)", s);
    return 0;
}

int nn_optim_check(const nn_optim_cfg *c)
{
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return af_seterr(AF_ERANGE, "learning rate must be > 0, got %g", (double)c->lr);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return af_seterr(AF_ERANGE, "momentum must be in [0, 1), got %g", (double)c->momentum);
    if (c->nesterov && c->momentum <= 0.0f)
        return af_seterr(AF_ERANGE, "nesterov needs momentum > 0");
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return af_seterr(AF_ERANGE, "weight decay must be >= 0, got %g", (double)c->weight_decay);
    if (c->kind == NN_OPT_ADAM &&
        !(c->beta1 >= 0.0f && c->beta1 < 1.0f && c->beta2 >= 0.0f && c->beta2 < 1.0f && c->eps > 0.0f))
        return af_seterr(AF_ERANGE, "adam needs betas in [0, 1) and eps > 0");
    return 0;
}

int nn_optim_init(nn_optim *o, const nn_optim_cfg *cfg, size_t n)
{
    memset(o, 0, sizeof *o);
    int rc = nn_optim_check(cfg);
    if (rc)
        return rc;
    o->cfg = *cfg;
    o->n = n;
    int need_m = cfg->kind == NN_OPT_ADAM || cfg->momentum > 0.0f;
    if (need_m && !(o->m = af_alloc(sizeof(float) * n)))
        return af_seterr(AF_ENOMEM, "optimizer state: out of memory");
    if (cfg->kind == NN_OPT_ADAM && !(o->v = af_alloc(sizeof(float) * n))) {
        nn_optim_deinit(o);
        return af_seterr(AF_ENOMEM, "optimizer state: out of memory");
    }
    return 0;
}

void nn_optim_deinit(nn_optim *o)
{
    af_free(o->m);
    af_free(o->v);
    o->m = o->v = NULL;
}

void nn_optim_reset(nn_optim *o)
{
    o->step = 0;
    if (o->m)
        memset(o->m, 0, sizeof(float) * o->n);
    if (o->v)
        memset(o->v, 0, sizeof(float) * o->n);
}

void nn_optim_step(nn_optim *o, float *restrict p, const float *restrict grad)
{
    const nn_optim_cfg *c = &o->cfg;
    const size_t n = o->n;
    const float lr = c->lr, wd = c->weight_decay;
    o->step++;
    if (c->kind == NN_OPT_SGD) {
        const float mu = c->momentum;
        float *restrict buf = o->m;
        if (mu == 0.0f) {
            for (size_t i = 0; i < n; i++)
                p[i] -= lr * (grad[i] + wd * p[i]);
            return;
        }
        /* torch: buf = g on the first step, then buf = mu*buf + g (dampening 0);
         * nesterov uses g + mu*buf, otherwise buf. */
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] + wd * p[i];
            float b = o->step == 1 ? g : mu * buf[i] + g;
            buf[i] = b;
            p[i] -= lr * (c->nesterov ? g + mu * b : b);
        }
        return;
    }
    /* Adam (Kingma & Ba), torch 1.13 formulation:
     * m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
     * p -= (lr / (1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps) */
    const float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    /* torch computes the bias corrections in double (Python floats) */
    const double bc1 = 1.0 - pow((double)b1, (double)o->step);
    const float bc2s = (float)sqrt(1.0 - pow((double)b2, (double)o->step));
    const float step = (float)((double)lr / bc1);
    float *restrict m = o->m, *restrict v = o->v;
    size_t i = 0;
#ifdef __AVX512F__
    /* the same operations in the same order, 16 at a time (sqrt and div are correctly
     * rounded in both forms, and no FMA is formed: bit-identical to the loop below, which
     * the compiler cannot vectorise because sqrtf may set errno) */
    const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2), vwd = _mm512_set1_ps(wd);
    const __m512 c1 = _mm512_set1_ps(1.0f - b1), c2 = _mm512_set1_ps(1.0f - b2);
    const __m512 vstep = _mm512_set1_ps(step), vbc = _mm512_set1_ps(bc2s), veps = _mm512_set1_ps(eps);
    for (; i + 16 <= n; i += 16) {
        __m512 pi = _mm512_loadu_ps(p + i);
        __m512 g = _mm512_add_ps(_mm512_loadu_ps(grad + i), _mm512_mul_ps(vwd, pi));
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(m + i), vb1), _mm512_mul_ps(c1, g));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(v + i), vb2),
                                  _mm512_mul_ps(_mm512_mul_ps(c2, g), g));
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vbc), veps);
        _mm512_storeu_ps(p + i, _mm512_sub_ps(pi, _mm512_div_ps(_mm512_mul_ps(vstep, mi), den)));
    }
#endif
    for (; i < n; i++) {
        float g = grad[i] + wd * p[i];
        m[i] = m[i] * b1 + (1.0f - b1) * g;
        v[i] = v[i] * b2 + (1.0f - b2) * g * g;
        p[i] -= step * m[i] / (sqrtf(v[i]) / bc2s + eps);
    }
}
