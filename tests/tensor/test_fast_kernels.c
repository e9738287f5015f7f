/* test_fast_kernels.c — the fused and specialised kernels against the scalar references.
 *
 * tensor/convpool (conv + bias + ReLU + 2x2 max-pool) is checked against
 * maxpool_ref(relu(conv_ref)) and the adjoint chain of the references, and tensor/dense
 * (linear with fused bias/ReLU) against tn_linear_*_ref, on the tutorial CNN's shapes and on
 * odd ones (batch 1, 3, 7; odd widths; channel counts that leave partial register blocks).
 * Convolution inputs are small dyadic rationals so every sum is exact in float32: the fused
 * kernels must then agree bit for bit, ties between window positions included (first
 * maximum wins). Continuous random data is compared at rtol 1e-5 (forward) / 1e-4.
 * Whole models (fused ops) are compared with a layer-by-layer reference pass, and the
 * vectorised Adam step with its scalar loop (bit for bit).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/rng.h"
#include "nn/model.h"
#include "nn/optim.h"
#include "tensor/convpool.h"
#include "tensor/dense.h"
#include "tensor/kernels.h"
#include "../test.h"

/* Multiples of 1/den in [-r/den, r/den]: products and sums stay exact in float32. */
static void fill_dyadic(af_rng *g, float *a, size_t n, int r, float den)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (float)((int)(af_rng_u32(g) % (uint32_t)(2 * r + 1)) - r) / den;
}

static void fill_uniform(af_rng *g, float *a, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (float)((2.0 * af_rng_uniform(g) - 1.0) * scale);
}

/* Reference of the fused block: conv_ref -> relu -> maxpool_ref, and its backward by the
 * adjoint of each step. y (b,oc,ph,pw); dx may be NULL. */
static void convpool_ref(const tn_conv2d *s, int b, const float *x, const float *w,
                         const float *bias, float *y, const float *dy, float *dx, float *dw,
                         float *db)
{
    tn_conv2d pool = {.c = s->oc, .h = s->oh, .w = s->ow, .oc = s->oc, .kh = 2, .kw = 2,
                      .stride = 2, .pad = 0};
    tn_conv2d_geometry(&pool);
    size_t cn = (size_t)b * s->oc * s->oh * s->ow, pn = (size_t)b * s->oc * pool.oh * pool.ow;
    float *z = af_alloc(sizeof(float) * cn), *r = af_alloc(sizeof(float) * cn);
    float *dr = af_alloc(sizeof(float) * cn);
    uint32_t *arg = af_alloc(sizeof(uint32_t) * pn);
    tn_conv2d_forward_ref(s, b, x, w, bias, z);
    for (size_t i = 0; i < cn; i++)
        r[i] = z[i] > 0.0f ? z[i] : 0.0f;
    tn_maxpool2d_forward_ref(&pool, b, r, y, arg);
    if (dy) {
        /* pool adjoint: dr[arg] += dy; relu adjoint: dz = dr where r > 0 */
        size_t plane = (size_t)s->oh * s->ow, pplane = (size_t)pool.oh * pool.ow;
        for (size_t q = 0; q < (size_t)b * s->oc; q++)
            for (size_t o = 0; o < pplane; o++)
                dr[q * plane + arg[q * pplane + o]] += dy[q * pplane + o];
        for (size_t i = 0; i < cn; i++)
            dr[i] = r[i] > 0.0f ? dr[i] : 0.0f;
        tn_conv2d_backward_ref(s, b, x, w, dr, dx, dw, db);
    }
    af_free(z);
    af_free(r);
    af_free(dr);
    af_free(arg);
}

/* Runs the fused block and the reference on one shape; returns 0 when they agree. */
static int check_convpool(int b, int c, int h, int w, int oc, int k, int dyadic, int want_dx,
                          uint64_t seed)
{
    tn_conv2d s = {.c = c, .h = h, .w = w, .oc = oc, .kh = k, .kw = k, .stride = 1, .pad = 0};
    if (tn_conv2d_geometry(&s))
        return -1;
    tn_convpool *cp;
    if (tn_convpool_create(&s, &cp))
        return -2;
    af_rng g;
    af_rng_seed(&g, seed, 7);
    size_t xn = (size_t)b * c * h * w, wn = (size_t)oc * c * k * k;
    size_t yn = (size_t)b * tn_convpool_out_n(cp);
    float *x = af_alloc(sizeof(float) * xn), *wt = af_alloc(sizeof(float) * wn);
    float *bias = af_alloc(sizeof(float) * oc), *y = af_alloc(sizeof(float) * yn);
    float *yr = af_alloc(sizeof(float) * yn), *dy = af_alloc(sizeof(float) * yn);
    float *dx = af_alloc(sizeof(float) * xn), *dxr = af_alloc(sizeof(float) * xn);
    float *dw = af_alloc(sizeof(float) * wn), *dwr = af_alloc(sizeof(float) * wn);
    float *db = af_alloc(sizeof(float) * oc), *dbr = af_alloc(sizeof(float) * oc);
    uint16_t *mask = af_alloc(sizeof(uint16_t) * b * tn_convpool_mask_n(cp));
    float *scr = af_alloc(sizeof(float) * tn_convpool_scratch(cp));
    if (dyadic) {
        fill_dyadic(&g, x, xn, 2, 4.0f);
        fill_dyadic(&g, wt, wn, 2, 8.0f);
        fill_dyadic(&g, bias, oc, 4, 32.0f);
        fill_dyadic(&g, dy, yn, 3, 8.0f);
    } else {
        fill_uniform(&g, x, xn, 1.0f);
        fill_uniform(&g, wt, wn, 0.3f);
        fill_uniform(&g, bias, oc, 0.1f);
        fill_uniform(&g, dy, yn, 1.0f);
    }
    /* dw/db accumulate: start both from the same non-zero values */
    for (size_t i = 0; i < wn; i++)
        dw[i] = dwr[i] = 0.25f;
    for (int i = 0; i < oc; i++)
        db[i] = dbr[i] = -0.5f;
    tn_convpool_forward(cp, b, x, wt, bias, y, mask, scr);
    convpool_ref(&s, b, x, wt, bias, yr, dy, want_dx ? dxr : NULL, dwr, dbr);
    tn_convpool_backward(cp, b, x, wt, dy, mask, want_dx ? dx : NULL, dw, db, scr);
    int rc = 0;
    double ft = dyadic ? 0.0 : 1e-5, bt = dyadic ? 0.0 : 1e-4;
    if (t_allclose(y, yr, yn, ft, ft) != (size_t)-1)
        rc = 1;
    else if (dyadic && t_allclose(dw, dwr, wn, bt, bt) != (size_t)-1)
        rc = 2;
    else if (dyadic && t_allclose(db, dbr, oc, bt, bt) != (size_t)-1)
        rc = 3;
    else if (dyadic && want_dx && t_allclose(dx, dxr, xn, bt, bt) != (size_t)-1)
        rc = 4;
    af_free(x), af_free(wt), af_free(bias), af_free(y), af_free(yr), af_free(dy);
    af_free(dx), af_free(dxr), af_free(dw), af_free(dwr), af_free(db), af_free(dbr);
    af_free(mask), af_free(scr);
    tn_convpool_free(cp);
    return rc;
}

TEST(convpool_tutorial_shapes_exact)
{
    /* conv1 (1x28x28 -> 6, k5) and conv2 (6x12x12 -> 12, k5) of the tutorial CNN */
    for (int b = 1; b <= 7; b += 2) {
        CHECK_EQ_INT(check_convpool(b, 1, 28, 28, 6, 5, 1, 0, 100 + b), 0);
        CHECK_EQ_INT(check_convpool(b, 1, 28, 28, 6, 5, 1, 1, 200 + b), 0);
        CHECK_EQ_INT(check_convpool(b, 6, 12, 12, 12, 5, 1, 1, 300 + b), 0);
    }
    CHECK_EQ_INT(check_convpool(10, 6, 12, 12, 12, 5, 1, 1, 11), 0);
}

TEST(convpool_odd_shapes_exact)
{
    /* b, c, h, w, oc, k: odd widths and heights (pool drops the last row/column), partial
     * channel blocks (oc 1, 5, 7, 13, 17 > 16), kernels 1..7, pooled planes of 1 to >16;
     * both layouts (channel lanes when the pooled plane is small next to oc) */
    static const int shapes[][6] = {
        {1, 1, 6, 6, 1, 5},   {3, 2, 9, 7, 5, 3},   {7, 3, 13, 11, 7, 3},
        {2, 1, 17, 19, 13, 4}, {3, 4, 11, 12, 17, 5}, {1, 2, 15, 16, 6, 7},
        {2, 3, 8, 10, 9, 2},  {5, 1, 33, 30, 4, 5},  {3, 5, 10, 10, 16, 5},
        {1, 1, 40, 40, 3, 3}, {2, 2, 7, 20, 8, 3},   {4, 6, 12, 12, 12, 5},
        {2, 3, 8, 8, 16, 3},  {2, 2, 7, 9, 14, 2},   {1, 2, 6, 6, 10, 1},
        {3, 4, 9, 9, 11, 4},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const int *q = shapes[i];
        int rc = check_convpool(q[0], q[1], q[2], q[3], q[4], q[5], 1, 1, 1000 + i);
        CHECK_MSG(rc == 0, "shape %zu (b%d c%d %dx%d oc%d k%d): check %d", i, q[0], q[1], q[2],
                  q[3], q[4], q[5], rc);
    }
}

TEST(convpool_random_data_forward)
{
    CHECK_EQ_INT(check_convpool(7, 1, 28, 28, 6, 5, 0, 1, 5), 0);
    CHECK_EQ_INT(check_convpool(3, 6, 12, 12, 12, 5, 0, 1, 6), 0);
    CHECK_EQ_INT(check_convpool(3, 3, 13, 11, 7, 3, 0, 1, 7), 0);
}

TEST(convpool_rejects_unsupported)
{
    tn_convpool *cp = (tn_convpool *)1;
    tn_conv2d s = {.c = 1, .h = 10, .w = 10, .oc = 2, .kh = 3, .kw = 3, .stride = 2, .pad = 0};
    tn_conv2d_geometry(&s);
    CHECK(tn_convpool_create(&s, &cp) != 0);
    CHECK(cp == NULL);
    s.stride = 1;
    s.pad = 1;
    tn_conv2d_geometry(&s);
    CHECK(tn_convpool_create(&s, &cp) != 0);
    s.pad = 0;
    s.kh = s.kw = 9;
    tn_conv2d_geometry(&s);
    CHECK(tn_convpool_create(&s, &cp) != 0);
}

/* dense (both forward forms, tn_transpose) vs tn_linear_*_ref (+ relu), with and without
 * the fused ReLUs. */
static int check_dense(int b, int in, int out, int relu, uint64_t seed)
{
    af_rng g;
    af_rng_seed(&g, seed, 9);
    size_t xn = (size_t)b * in, wn = (size_t)out * in, yn = (size_t)b * out;
    float *x = af_alloc(sizeof(float) * xn), *w = af_alloc(sizeof(float) * wn);
    float *bias = af_alloc(sizeof(float) * out), *y = af_alloc(sizeof(float) * yn);
    float *yr = af_alloc(sizeof(float) * yn), *dy = af_alloc(sizeof(float) * yn);
    float *dx = af_alloc(sizeof(float) * xn), *dxr = af_alloc(sizeof(float) * xn);
    float *dw = af_alloc(sizeof(float) * wn), *dwr = af_alloc(sizeof(float) * wn);
    float *db = af_alloc(sizeof(float) * out), *dbr = af_alloc(sizeof(float) * out);
    fill_uniform(&g, x, xn, 1.0f);
    if (relu) /* x as a ReLU's output: zeros and positives */
        for (size_t i = 0; i < xn; i++)
            x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    fill_uniform(&g, w, wn, 0.2f);
    fill_uniform(&g, bias, out, 0.2f);
    fill_uniform(&g, dy, yn, 1.0f);
    fill_uniform(&g, dw, wn, 0.1f);
    memcpy(dwr, dw, sizeof(float) * wn);
    for (int i = 0; i < out; i++)
        db[i] = dbr[i] = 0.5f;
    tn_linear_forward_ref(b, in, out, x, w, bias, yr);
    if (relu)
        for (size_t i = 0; i < yn; i++)
            yr[i] = yr[i] > 0.0f ? yr[i] : 0.0f;
    /* the transposed-weight form first (y is overwritten by the other next) */
    float *wt = af_alloc(sizeof(float) * wn);
    tn_transpose(out, in, w, wt);
    int bad_t = 0;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++)
            bad_t |= wt[(size_t)i * out + o] != w[(size_t)o * in + i];
    tn_dense_forward_t(b, in, out, x, wt, bias, relu, y);
    bad_t |= t_allclose(y, yr, yn, 1e-5, 1e-5) != (size_t)-1;
    af_free(wt);
    tn_dense_forward(b, in, out, x, w, bias, relu, y);
    tn_dense_backward(b, in, out, x, w, dy, dx, relu, dw, db);
    tn_linear_backward_ref(b, in, out, x, w, dy, dxr, dwr, dbr);
    if (relu)
        for (size_t i = 0; i < xn; i++)
            dxr[i] = x[i] > 0.0f ? dxr[i] : 0.0f;
    int rc = 0;
    if (t_allclose(y, yr, yn, 1e-5, 1e-5) != (size_t)-1)
        rc = 1;
    else if (bad_t)
        rc = 5;
    else if (t_allclose(dx, dxr, xn, 1e-5, 1e-5) != (size_t)-1)
        rc = 2;
    else if (t_allclose(dw, dwr, wn, 1e-4, 1e-5) != (size_t)-1)
        rc = 3;
    else if (t_allclose(db, dbr, out, 1e-5, 1e-5) != (size_t)-1)
        rc = 4;
    af_free(x), af_free(w), af_free(bias), af_free(y), af_free(yr), af_free(dy);
    af_free(dx), af_free(dxr), af_free(dw), af_free(dwr), af_free(db), af_free(dbr);
    return rc;
}

TEST(dense_matches_reference)
{
    static const int bs[] = {1, 3, 7, 10, 100};
    static const int ios[][2] = {{192, 120}, {120, 60}, {60, 10}, {1, 1},  {5, 3},
                                 {16, 4},    {17, 97},  {200, 7}, {33, 130}};
    for (size_t i = 0; i < sizeof bs / sizeof *bs; i++)
        for (size_t j = 0; j < sizeof ios / sizeof *ios; j++)
            for (int relu = 0; relu < 2; relu++) {
                int rc = check_dense(bs[i], ios[j][0], ios[j][1], relu, 31 * i + j);
                CHECK_MSG(rc == 0, "b%d in%d out%d relu%d: check %d", bs[i], ios[j][0],
                          ios[j][1], relu, rc);
            }
}

/* ---- whole models: fused ops vs a layer-by-layer pass over the reference kernels ------ */

typedef struct ref_run {
    float *act[NN_MAX_LAYERS];
    uint32_t *arg[NN_MAX_LAYERS];
} ref_run;

static void ref_forward(const nn_model *m, ref_run *r, const float *x, int b)
{
    const float *in = x, *P = m->params;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = &m->layers[i];
        float *out = r->act[i] = af_alloc(sizeof(float) * b * l->out_n);
        const float *bias = l->has_bias ? P + l->b_off : NULL;
        switch (l->kind) {
        case NN_CONV2D: tn_conv2d_forward_ref(&l->geo, b, in, P + l->w_off, bias, out); break;
        case NN_MAXPOOL2D:
            r->arg[i] = af_alloc(sizeof(uint32_t) * b * l->out_n);
            tn_maxpool2d_forward_ref(&l->geo, b, in, out, r->arg[i]);
            break;
        case NN_RELU:
            for (size_t k = 0; k < b * l->out_n; k++)
                out[k] = in[k] > 0.0f ? in[k] : 0.0f;
            break;
        case NN_LINEAR:
            tn_linear_forward_ref(b, l->in_features, l->out_features, in, P + l->w_off, bias, out);
            break;
        default: memcpy(out, in, sizeof(float) * b * l->out_n); break; /* flatten, eval dropout */
        }
        in = out;
    }
}

static void ref_backward(const nn_model *m, ref_run *r, const float *x, int b, const float *dlog,
                         float *grads)
{
    size_t maxn = (size_t)m->n_classes;
    for (int i = 0; i < m->n_layers; i++) {
        maxn = m->layers[i].in_n > maxn ? m->layers[i].in_n : maxn;
        maxn = m->layers[i].out_n > maxn ? m->layers[i].out_n : maxn;
    }
    float *dout = af_alloc(sizeof(float) * b * maxn), *din = af_alloc(sizeof(float) * b * maxn);
    memcpy(dout, dlog, sizeof(float) * b * m->n_classes);
    for (int i = m->n_layers - 1; i >= 0; i--) {
        const nn_layer *l = &m->layers[i];
        const float *in = i ? r->act[i - 1] : x;
        float *gb = l->has_bias ? grads + l->b_off : NULL;
        switch (l->kind) {
        case NN_CONV2D:
            tn_conv2d_backward_ref(&l->geo, b, in, m->params + l->w_off, dout, din,
                                   grads + l->w_off, gb);
            break;
        case NN_MAXPOOL2D: {
            size_t ip = (size_t)l->in_h * l->in_w, op = (size_t)l->out_h * l->out_w;
            memset(din, 0, sizeof(float) * b * l->in_n);
            for (size_t q = 0; q < (size_t)b * l->in_c; q++)
                for (size_t o = 0; o < op; o++)
                    din[q * ip + r->arg[i][q * op + o]] += dout[q * op + o];
            break;
        }
        case NN_RELU:
            for (size_t k = 0; k < b * l->out_n; k++)
                din[k] = r->act[i][k] > 0.0f ? dout[k] : 0.0f;
            break;
        case NN_LINEAR:
            tn_linear_backward_ref(b, l->in_features, l->out_features, in, m->params + l->w_off,
                                   dout, din, grads + l->w_off, gb);
            break;
        default: memcpy(din, dout, sizeof(float) * b * l->out_n); break;
        }
        float *t = dout;
        dout = din;
        din = t;
    }
    af_free(dout), af_free(din);
    for (int i = 0; i < m->n_layers; i++)
        af_free(r->act[i]), af_free(r->arg[i]);
}

/* Builds spec, runs nn_forward/nn_loss/nn_backward and the reference; 0 when they agree. */
static int check_model(const char *spec, int b, int dyadic, uint64_t seed)
{
    nn_model *m;
    if (nn_model_from_json(spec, "test", NULL, &m))
        return -1;
    nn_model_init(m, seed);
    af_rng g;
    af_rng_seed(&g, seed, 3);
    if (dyadic) /* exact sums through the conv blocks: no argmax can flip on rounding */
        for (int i = 0; i < m->n_layers; i++) {
            const nn_layer *l = &m->layers[i];
            if (l->kind == NN_CONV2D) {
                fill_dyadic(&g, m->params + l->w_off, l->w_n, 2, 16.0f);
                fill_dyadic(&g, m->params + l->b_off, l->b_n, 2, 64.0f);
            }
        }
    size_t xn = (size_t)b * m->layers[0].in_n;
    float *x = af_alloc(sizeof(float) * xn);
    uint8_t *y = af_alloc((size_t)b);
    if (dyadic)
        fill_dyadic(&g, x, xn, 4, 4.0f);
    else
        fill_uniform(&g, x, xn, 1.0f);
    for (int i = 0; i < b; i++)
        y[i] = (uint8_t)(af_rng_u32(&g) % (uint32_t)m->n_classes);
    nn_ws *ws = nn_ws_create(m, b);
    float *gr = af_alloc(sizeof(float) * m->n_params), *grr = af_alloc(sizeof(float) * m->n_params);
    float *dl = af_alloc(sizeof(float) * b * m->n_classes);
    const float *z = nn_forward(m, ws, x, b, 0, 0);
    int c1 = 0, c2 = 0;
    double l1 = nn_loss(m, ws, y, b, 1.0f / b, &c1);
    nn_backward(m, ws, x, b, gr);
    ref_run r = {{0}, {0}};
    ref_forward(m, &r, x, b);
    const float *zr = r.act[m->n_layers - 1];
    int rc = 0;
    if (t_allclose(z, zr, (size_t)b * m->n_classes, 1e-4, 1e-5) != (size_t)-1)
        rc = 1;
    double l2 = tn_softmax_xent(b, m->n_classes, zr, y, 1.0f / b, dl, &c2);
    if (!rc && (fabs(l1 - l2) > 1e-4 * fabs(l2) + 1e-6 || c1 != c2))
        rc = 2;
    ref_backward(m, &r, x, b, dl, grr);
    if (!rc && t_allclose(gr, grr, m->n_params, 1e-3, 1e-5) != (size_t)-1)
        rc = 3;
    af_free(x), af_free(y), af_free(gr), af_free(grr), af_free(dl);
    nn_ws_free(ws);
    nn_model_free(m);
    return rc;
}

static const char *const cnn_spec =
    "{\"input\":[1,28,28],\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"conv1\",\"out_channels\":6,\"kernel\":5},{\"type\":\"relu\"},"
    "{\"type\":\"maxpool2d\",\"kernel\":2,\"stride\":2},"
    "{\"type\":\"conv2d\",\"name\":\"conv2\",\"out_channels\":12,\"kernel\":5},{\"type\":\"relu\"},"
    "{\"type\":\"maxpool2d\",\"kernel\":2,\"stride\":2},{\"type\":\"flatten\"},"
    "{\"type\":\"linear\",\"name\":\"fc1\",\"out_features\":120},{\"type\":\"relu\"},"
    "{\"type\":\"linear\",\"name\":\"fc2\",\"out_features\":60},{\"type\":\"relu\"},"
    "{\"type\":\"linear\",\"name\":\"out\",\"out_features\":10}]}";

TEST(fused_model_matches_layer_references)
{
    for (int b = 1; b <= 7; b += 3)
        CHECK_MSG(check_model(cnn_spec, b, 1, 40 + b) == 0, "tutorial CNN, batch %d", b);
    CHECK_EQ_INT(check_model(cnn_spec, 10, 1, 77), 0);
    CHECK_EQ_INT(check_model(cnn_spec, 5, 0, 78), 0);
}

TEST(unfused_layer_mixes_still_match)
{
    /* padding/stride (no fusion), pool before relu, relu between flatten and linear,
     * a linear+relu that ends the model, dropout in eval mode (the identity both ways), a 3x3 pool */
    static const char *const specs[] = {
        "{\"input\":[2,11,9],\"layers\":[{\"type\":\"conv2d\",\"out_channels\":4,\"kernel\":3,"
        "\"padding\":1},{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},"
        "{\"type\":\"conv2d\",\"out_channels\":5,\"kernel\":3,\"stride\":2},{\"type\":\"relu\"},"
        "{\"type\":\"flatten\"},{\"type\":\"linear\",\"out_features\":7}]}",
        "{\"input\":[1,12,12],\"layers\":[{\"type\":\"conv2d\",\"out_channels\":3,\"kernel\":3},"
        "{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},{\"type\":\"conv2d\","
        "\"out_channels\":4,\"kernel\":2},{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":3},"
        "{\"type\":\"flatten\"},{\"type\":\"relu\"},{\"type\":\"linear\",\"out_features\":6},"
        "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.3},{\"type\":\"linear\","
        "\"out_features\":3},{\"type\":\"relu\"}]}",
        "{\"input\":[3,10,13],\"layers\":[{\"type\":\"conv2d\",\"out_channels\":5,\"kernel\":3},"
        "{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"flatten\"},"
        "{\"type\":\"linear\",\"out_features\":9},{\"type\":\"relu\"},{\"type\":\"linear\","
        "\"out_features\":4}]}",
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        for (int b = 1; b <= 3; b += 2)
            { int rc_ = check_model(specs[i], b, 1, 90 + i); CHECK_MSG(rc_ == 0, "spec %zu batch %d: check %d", i, b, rc_); }
}

/* Adam 16 floats at a time must be the scalar update bit for bit: run n = 37 parameters
 * (two vectors and a scalar tail) and the same numbers one parameter at a time (scalar). */
TEST(adam_vector_path_is_bitwise_scalar)
{
    enum { N = 37, STEPS = 5 };
    af_rng g;
    af_rng_seed(&g, 5, 5);
    float p[N], q[N], grad[STEPS][N];
    fill_uniform(&g, p, N, 1.0f);
    memcpy(q, p, sizeof p);
    for (int s = 0; s < STEPS; s++)
        fill_uniform(&g, grad[s], N, 0.5f);
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_ADAM);
    c.lr = 0.01f;
    c.weight_decay = 0.01f;
    nn_optim all, one[N];
    CHECK_EQ_INT(nn_optim_init(&all, &c, N), 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(nn_optim_init(&one[i], &c, 1), 0);
    for (int s = 0; s < STEPS; s++) {
        nn_optim_step(&all, p, grad[s]);
        for (int i = 0; i < N; i++)
            nn_optim_step(&one[i], &q[i], &grad[s][i]);
    }
    int same = memcmp(p, q, sizeof p) == 0;
    for (int i = 0; i < N; i++) {
        same &= memcmp(&all.m[i], one[i].m, sizeof(float)) == 0;
        same &= memcmp(&all.v[i], one[i].v, sizeof(float)) == 0;
        nn_optim_deinit(&one[i]);
    }
    nn_optim_deinit(&all);
    CHECK(same);
}
