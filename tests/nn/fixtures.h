/* fixtures.h — helpers the engine tests share for the PyTorch fixtures (tests/fixtures/):
 * open a fixture, copy a tensor out as an aligned float array after checking its shape,
 * read numeric metadata, and the tolerance checks of tests/fixtures/README.md.
 *
 * Header-only (static inline) so each test file stays one translation unit; it is a test
 * helper, never linked into the library. Failures print a line saying what is wrong.
 */
#ifndef AF_TESTS_FIXTURES_H
#define AF_TESTS_FIXTURES_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "core/err.h"
#include "nn/model.h"
#include "nn/safetensors.h"

/* Opens tests/fixtures/NAME; 0 or prints why and returns -1. */
static inline int fx_open(st_file *f, const char *name)
{
    memset(f, 0, sizeof *f);
    int rc = st_read(t_fixture(name), f);
    if (rc)
        printf("    fixture %s: %s\n", name, af_errmsg());
    return rc ? -1 : 0;
}

/* A malloc'd copy of tensor `name` (F32), NULL (with a printed reason) if it is missing, not
 * F32, or has a shape other than dims[0..ndim) (ndim < 0 skips the shape check). *n gets
 * the element count when n is not NULL. */
static inline float *fx_get(const st_file *f, const char *name, int ndim, const int *dims,
                            size_t *n)
{
    const st_tensor *t = st_find(f, name);
    if (!t) {
        printf("    fixture tensor '%s' missing\n", name);
        return NULL;
    }
    if (t->dtype != ST_F32) {
        printf("    fixture tensor '%s' is %s, expected F32\n", name, st_dtype_name(t->dtype));
        return NULL;
    }
    if (ndim >= 0) {
        int same = t->ndim == ndim;
        for (int d = 0; same && d < ndim; d++)
            same = t->shape[d] == dims[d];
        if (!same) {
            printf("    fixture tensor '%s' has an unexpected shape (ndim %d)\n", name, t->ndim);
            return NULL;
        }
    }
    size_t cnt = t->nbytes / sizeof(float);
    float *out = malloc(cnt ? t->nbytes : sizeof(float));
    if (!out)
        return NULL;
    memcpy(out, t->data, t->nbytes); /* the data may be unaligned in the file buffer */
    if (n)
        *n = cnt;
    return out;
}

/* fx_get with the shape given inline: FX_GET(f, "x", &n, 2, 3, 9, 8). */
#define FX_GET(f, name, n, ndim, ...) fx_get((f), (name), (ndim), (const int[]){__VA_ARGS__}, (n))

/* Numeric metadata value (strtod), NAN if absent. */
static inline double fx_meta_num(const st_file *f, const char *key)
{
    const char *v = st_meta(f, key);
    return v ? strtod(v, NULL) : NAN;
}

/* Float class ids (3.0 = class 3) as bytes; 0 on success, -1 if one is not an integer 0..255. */
static inline int fx_labels(const float *lab, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        if (!(lab[i] >= 0.0f && lab[i] <= 255.0f) || lab[i] != floorf(lab[i]))
            return -1;
        out[i] = (uint8_t)lab[i];
    }
    return 0;
}

static inline double fx_maxabs(const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)b[i]) > m)
            m = fabs((double)b[i]);
    return m;
}

/* ‖a−b‖₂ / ‖b‖₂ in double (‖a−b‖₂ when b is 0). */
static inline double fx_rel_l2(const float *a, const float *b, size_t n)
{
    double d = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - (double)b[i];
        d += e * e;
        s += (double)b[i] * (double)b[i];
    }
    return s > 0.0 ? sqrt(d / s) : sqrt(d);
}

/* Copies every parameter tensor of m from f, named PREFIX + state_dict name ("init." or "").
 * 0, or -1 after printing which tensor is missing or misshapen. */
static inline int fx_load_params(nn_model *m, const st_file *f, const char *prefix)
{
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        char name[160];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        float *v = fx_get(f, name, p->ndim, p->shape, NULL);
        if (!v)
            return -1;
        memcpy(m->params + p->off, v, sizeof(float) * p->n);
        free(v);
    }
    return 0;
}

/* The tutorial CNN spec shipped in models/. */
#define FX_CNN_SPEC "models/fashion_cnn.json"

#endif
