/* test_gradcheck.c — finite-difference gradient checks of nn_backward for every layer type,
 * through tiny models built from JSON specs.
 *
 * The float32 engine is too noisy for small finite differences, so the loss is recomputed by
 * an independent double-precision interpreter of the same nn_model (written here, plain
 * loops): its logits must match nn_forward's, and its central differences (h = 1e-6, in
 * double) are the oracle for the engine's float gradients. Dropout in train mode has masks
 * only the engine knows; its model is smooth, so it is checked with float central
 * differences on the engine itself (h = 1e-2). The loss kernel is checked on logits on a
 * 2^-10 grid, where the float arithmetic inside it is exact.
 */
#include "../test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "nn/model.h"
#include "tensor/kernels.h"

/* ---- the double-precision interpreter ---------------------------------------------------- */

/* Largest per-sample activation of m (input included). */
static size_t max_act(const nn_model *m)
{
    size_t n = m->layers[0].in_n;
    for (int i = 0; i < m->n_layers; i++)
        n = m->layers[i].out_n > n ? m->layers[i].out_n : n;
    return n;
}

/* One sample through m with parameters P (double); dropout is the identity (eval mode).
 * a, b: scratch of max_act doubles. Returns a pointer to the logits (in a or b). */
static const double *forward_d(const nn_model *m, const double *P, const float *x, double *a,
                               double *b)
{
    for (size_t i = 0; i < m->layers[0].in_n; i++)
        a[i] = x[i];
    double *in = a, *out = b;
    for (int li = 0; li < m->n_layers; li++) {
        const nn_layer *l = &m->layers[li];
        const tn_conv2d *g = &l->geo;
        switch (l->kind) {
        case NN_CONV2D:
            for (int o = 0; o < g->oc; o++)
                for (int i = 0; i < g->oh; i++)
                    for (int j = 0; j < g->ow; j++) {
                        double acc = l->has_bias ? P[l->b_off + o] : 0.0;
                        for (int c = 0; c < g->c; c++)
                            for (int u = 0; u < g->kh; u++)
                                for (int v = 0; v < g->kw; v++) {
                                    int r = i * g->stride - g->pad + u, q = j * g->stride - g->pad + v;
                                    if (r < 0 || r >= g->h || q < 0 || q >= g->w)
                                        continue;
                                    acc += in[(c * g->h + r) * g->w + q] *
                                           P[l->w_off + ((size_t)(o * g->c + c) * g->kh + u) * g->kw + v];
                                }
                        out[(o * g->oh + i) * g->ow + j] = acc;
                    }
            break;
        case NN_MAXPOOL2D:
            for (int c = 0; c < g->c; c++)
                for (int i = 0; i < g->oh; i++)
                    for (int j = 0; j < g->ow; j++) {
                        double best = -INFINITY;
                        for (int u = 0; u < g->kh; u++)
                            for (int v = 0; v < g->kw; v++) {
                                int r = i * g->stride - g->pad + u, q = j * g->stride - g->pad + v;
                                if (r >= 0 && r < g->h && q >= 0 && q < g->w && in[(c * g->h + r) * g->w + q] > best)
                                    best = in[(c * g->h + r) * g->w + q];
                            }
                        out[(c * g->oh + i) * g->ow + j] = best;
                    }
            break;
        case NN_RELU:
            for (size_t i = 0; i < l->out_n; i++)
                out[i] = in[i] > 0.0 ? in[i] : 0.0;
            break;
        case NN_FLATTEN:
        case NN_DROPOUT:
            memcpy(out, in, sizeof(double) * l->out_n);
            break;
        case NN_LINEAR:
            for (int o = 0; o < l->out_features; o++) {
                double acc = l->has_bias ? P[l->b_off + o] : 0.0;
                for (int i = 0; i < l->in_features; i++)
                    acc += in[i] * P[l->w_off + (size_t)o * l->in_features + i];
                out[o] = acc;
            }
            break;
        }
        double *t = in;
        in = out;
        out = t;
    }
    return in;
}

/* Mean cross-entropy over the batch, in double. */
static double loss_d(const nn_model *m, const double *P, const float *x, const uint8_t *y, int B,
                     double *a, double *b)
{
    double total = 0.0;
    for (int n = 0; n < B; n++) {
        const double *z = forward_d(m, P, x + (size_t)n * m->layers[0].in_n, a, b);
        double mx = z[0], s = 0.0;
        for (int k = 1; k < m->n_classes; k++)
            mx = z[k] > mx ? z[k] : mx;
        for (int k = 0; k < m->n_classes; k++)
            s += exp(z[k] - mx);
        total += mx + log(s) - z[y[n]];
    }
    return total / B;
}

/* ---- the check --------------------------------------------------------------------------- */

/* Builds `spec`, initialises it, runs the engine's forward/loss/backward on a random batch of
 * B and compares the parameter gradients with double central differences: every element of
 * each tensor, or `per_tensor` elements spread evenly over it when that is > 0. 1 if all
 * agree. */
static int gradcheck_n(const char *spec, uint64_t seed, int B, size_t per_tensor)
{
    nn_model *m;
    if (nn_model_from_json(spec, "gradcheck", NULL, &m)) {
        printf("    spec refused: %s\n", af_errmsg());
        return 0;
    }
    nn_model_init(m, seed);
    /* larger biases than the default init so that ReLUs sit on both sides of 0 */
    af_rng r;
    af_rng_seed(&r, seed, 99);
    for (int i = 0; i < m->n_layers; i++)
        for (size_t k = 0; k < m->layers[i].b_n; k++)
            m->params[m->layers[i].b_off + k] = (float)(af_rng_uniform(&r) - 0.5);
    const size_t in_n = m->layers[0].in_n, np = m->n_params, na = max_act(m);
    float *x = malloc(sizeof(float) * in_n * B), *g = calloc(np, sizeof(float));
    uint8_t *y = malloc((size_t)B);
    double *P = malloc(sizeof(double) * np), *a = malloc(sizeof(double) * na), *b = malloc(sizeof(double) * na);
    nn_ws *ws = nn_ws_create(m, B);
    int ok = 1;
    for (size_t i = 0; i < in_n * B; i++)
        x[i] = (float)(2.0 * af_rng_uniform(&r) - 1.0);
    for (int n = 0; n < B; n++)
        y[n] = (uint8_t)af_rng_below(&r, (uint32_t)m->n_classes);
    for (size_t i = 0; i < np; i++)
        P[i] = m->params[i];

    /* the engine */
    const float *z = nn_forward(m, ws, x, B, 0, 0);
    for (int n = 0; ok && n < B; n++) {
        const double *zd = forward_d(m, P, x + (size_t)n * in_n, a, b);
        for (int k = 0; k < m->n_classes; k++)
            if (!(fabs(z[n * m->n_classes + k] - zd[k]) <= 1e-5 * (1.0 + fabs(zd[k])))) {
                printf("    forward: logit [%d,%d] = %.9g, double interpreter %.9g\n", n, k,
                       z[n * m->n_classes + k], zd[k]);
                ok = 0;
                break;
            }
    }
    double le = nn_loss(m, ws, y, B, 1.0f / (float)B, NULL) / B;
    double ld = loss_d(m, P, x, y, B, a, b);
    if (ok && !(fabs(le - ld) <= 1e-5 * (1.0 + fabs(ld)))) {
        printf("    loss %.9g, double interpreter %.9g\n", le, ld);
        ok = 0;
    }
    nn_backward(m, ws, x, B, g);

    /* the oracle. A smaller h crosses fewer ReLU/max-pool kinks (the tutorial CNN has ~7000
     * of them per sample, and h = 1e-5 already crossed one); in double, h = 1e-6 still leaves
     * the rounding error of the differences near 1e-9. */
    const double h = 1e-6;
    double *fd = malloc(sizeof(double) * np), gmax = 0.0;
    size_t *step = malloc(sizeof(size_t) * m->n_params_t);
    for (int t = 0; t < m->n_params_t; t++) {
        const nn_param *p = &m->params_t[t];
        step[t] = per_tensor && p->n > per_tensor ? p->n / per_tensor : 1;
    }
    for (int t = 0; t < m->n_params_t; t++)
        for (size_t e = 0; e < m->params_t[t].n; e += step[t]) {
        size_t k = m->params_t[t].off + e;
        double p0 = P[k];
        P[k] = p0 + h;
        double lp = loss_d(m, P, x, y, B, a, b);
        P[k] = p0 - h;
        double lm = loss_d(m, P, x, y, B, a, b);
        P[k] = p0;
        fd[k] = (lp - lm) / (2.0 * h);
        gmax = fabs(fd[k]) > gmax ? fabs(fd[k]) : gmax;
    }
    for (int t = 0; ok && t < m->n_params_t; t++) {
        const nn_param *p = &m->params_t[t];
        for (size_t k = 0; k < p->n; k += step[t]) {
            double want = fd[p->off + k], got = g[p->off + k];
            if (!(fabs(got - want) <= 1e-3 * fabs(want) + 1e-5 * gmax)) {
                printf("    %s[%zu]: backward %.9g, finite difference %.9g\n", p->name, k, got, want);
                ok = 0;
                break;
            }
        }
    }
    if (ok && gmax < 1e-6) {
        printf("    every gradient is ~0: the check would prove nothing\n");
        ok = 0;
    }
    free(fd), free(step), free(x), free(g), free(y), free(P), free(a), free(b);
    nn_ws_free(ws);
    nn_model_free(m);
    return ok;
}

static int gradcheck(const char *spec, uint64_t seed, int B) { return gradcheck_n(spec, seed, B, 0); }

#define CONV(name, extra) "{\"type\":\"conv2d\",\"name\":\"" name "\"," extra "}"
#define POOL(extra) "{\"type\":\"maxpool2d\"," extra "}"
#define LIN(name, extra) "{\"type\":\"linear\",\"name\":\"" name "\",\"out_features\":" extra "}"
#define RELU "{\"type\":\"relu\"}"
#define FLAT "{\"type\":\"flatten\"}"
#define SPEC(input, layers) "{\"input\":" input ",\"layers\":[" layers "]}"

TEST(gradcheck_conv2d_stride1_padding1)
{
    CHECK(gradcheck(SPEC("[2,7,6]", CONV("c1", "\"out_channels\":3,\"kernel\":3,\"padding\":1") "," RELU
                         "," FLAT "," LIN("fc", "4")), 1, 3));
}

TEST(gradcheck_conv2d_stride2_padding2_then_pool)
{
    CHECK(gradcheck(SPEC("[1,9,8]", CONV("c1", "\"out_channels\":2,\"kernel\":3,\"stride\":2,\"padding\":2")
                         "," RELU "," POOL("\"kernel\":2,\"stride\":2") "," FLAT "," LIN("fc", "3")), 2, 3));
}

TEST(gradcheck_maxpool3x3_stride2_padding1)
{
    CHECK(gradcheck(SPEC("[2,7,7]", CONV("c1", "\"out_channels\":2,\"kernel\":1") ","
                         POOL("\"kernel\":3,\"stride\":2,\"padding\":1") "," FLAT "," LIN("fc", "3")), 3, 3));
}

TEST(gradcheck_maxpool_first_layer)
{
    /* a parameter-free first layer: nothing before it needs a gradient */
    CHECK(gradcheck(SPEC("[1,6,6]", POOL("\"kernel\":2") "," CONV("c1", "\"out_channels\":2,\"kernel\":2")
                         "," FLAT "," LIN("fc", "3")), 4, 3));
}

TEST(gradcheck_tutorial_shaped_cnn)
{
    /* conv → relu → 2x2 pool twice, then linear/relu stacks: the shape the engine fuses */
    CHECK(gradcheck(SPEC("[1,12,12]", CONV("conv1", "\"out_channels\":3,\"kernel\":3") "," RELU ","
                         POOL("\"kernel\":2,\"stride\":2") "," CONV("conv2", "\"out_channels\":4,\"kernel\":2")
                         "," RELU "," POOL("\"kernel\":2,\"stride\":2") "," FLAT "," LIN("fc1", "8") ","
                         RELU "," LIN("fc2", "6") "," RELU "," LIN("out", "3")), 5, 4));
}

TEST(gradcheck_tutorial_cnn_itself)
{
    /* the real 32,998-parameter network on two images: 40 elements of each tensor (all of
     * them would take half a minute in double) */
    char *spec = NULL;
    FILE *f = fopen("models/fashion_cnn.json", "rb");
    CHECK(f != NULL);
    spec = calloc(1, 8192);
    size_t n = fread(spec, 1, 8191, f);
    fclose(f);
    CHECK(n > 0);
    int ok = gradcheck_n(spec, 6, 2, 40);
    free(spec);
    CHECK(ok);
}

TEST(gradcheck_without_bias)
{
    CHECK(gradcheck(SPEC("[1,6,6]", CONV("c1", "\"out_channels\":2,\"kernel\":3,\"bias\":false") "," RELU
                         "," FLAT "," LIN("fc", "3,\"bias\":false")), 7, 3));
}

TEST(gradcheck_linear_relu_stack)
{
    CHECK(gradcheck(SPEC("[5]", LIN("fc1", "4") "," RELU "," LIN("fc2", "6") "," RELU "," LIN("out", "3")), 8, 4));
}

TEST(gradcheck_flatten_first)
{
    CHECK(gradcheck(SPEC("[1,3,3]", FLAT "," LIN("fc1", "4") "," RELU "," LIN("out", "3")), 9, 3));
}

TEST(gradcheck_dropout_eval_mode_is_identity)
{
    /* dropout between linear/relu layers breaks the linear+relu pairing: both orders */
    CHECK(gradcheck(SPEC("[6]", LIN("fc1", "8") ",{\"type\":\"dropout\",\"p\":0.5}," RELU "," LIN("out", "3")), 10, 3));
    CHECK(gradcheck(SPEC("[6]", LIN("fc1", "8") "," RELU ",{\"type\":\"dropout\",\"p\":0.5}," LIN("out", "3")), 11, 3));
}

/* ---- dropout in train mode (float differences on the engine) ------------------------------ */

static double engine_loss(const nn_model *m, nn_ws *ws, const float *x, const uint8_t *y, int B,
                          uint64_t seed)
{
    nn_forward(m, ws, x, B, 1, seed);
    return nn_loss(m, ws, y, B, 1.0f / (float)B, NULL) / B;
}

TEST(gradcheck_dropout_train_mode)
{
    nn_model *m;
    const int B = 4;
    int rc = nn_model_from_json(SPEC("[6]", LIN("fc1", "8") ",{\"type\":\"dropout\",\"name\":\"drop\",\"p\":0.5},"
                                     LIN("out", "3")), "dropout", NULL, &m);
    CHECK_MSG(rc == 0, "%s", af_errmsg());
    nn_model_init(m, 12);
    af_rng r;
    af_rng_seed(&r, 12, 1);
    float x[4 * 6], *g = calloc(m->n_params, sizeof(float));
    uint8_t y[4];
    for (int i = 0; i < B * 6; i++)
        x[i] = (float)(2.0 * af_rng_uniform(&r) - 1.0);
    for (int n = 0; n < B; n++)
        y[n] = (uint8_t)af_rng_below(&r, 3);
    nn_ws *ws = nn_ws_create(m, B);
    CHECK(ws && g);
    const uint64_t seed = 77;
    /* train mode drops units (logits differ from eval mode), deterministically per seed */
    float ze[12], zt[12], zt2[12];
    memcpy(ze, nn_forward(m, ws, x, B, 0, seed), sizeof ze);
    memcpy(zt, nn_forward(m, ws, x, B, 1, seed), sizeof zt);
    memcpy(zt2, nn_forward(m, ws, x, B, 1, seed), sizeof zt2);
    CHECK(memcmp(ze, zt, sizeof ze) != 0);
    CHECK(memcmp(zt, zt2, sizeof zt) == 0);
    memcpy(zt2, nn_forward(m, ws, x, B, 1, seed + 1), sizeof zt2);
    CHECK(memcmp(zt, zt2, sizeof zt) != 0);
    engine_loss(m, ws, x, y, B, seed);
    nn_backward(m, ws, x, B, g);
    int zero_cols = 0; /* fc1 units dropped for every sample have zero gradient rows */
    for (size_t k = 0; k < m->n_params; k++) {
        float p0 = m->params[k];
        float pp = p0 + 1e-2f, pm = p0 - 1e-2f;
        m->params[k] = pp;
        double lp = engine_loss(m, ws, x, y, B, seed);
        m->params[k] = pm;
        double lm = engine_loss(m, ws, x, y, B, seed);
        m->params[k] = p0;
        double fd = (lp - lm) / ((double)pp - (double)pm);
        CHECK_MSG(fabs(g[k] - fd) <= 2e-2 * fabs(fd) + 2e-4, "param %zu: backward %.9g, float "
                  "finite difference %.9g", k, g[k], fd);
        zero_cols += k < 48 && g[k] == 0.0f;
    }
    CHECK(zero_cols < 48); /* not everything dropped */
    free(g);
    nn_ws_free(ws);
    nn_model_free(m);
}

/* ---- the loss ------------------------------------------------------------------------------ */

TEST(gradcheck_softmax_xent)
{
    /* logits on a 2^-10 grid with h = 2^-10: z ± h and the max-subtraction inside the kernel
     * are exact in float, so the differences see only double rounding */
    enum { B = 3, K = 7 };
    const float h = 1.0f / 1024.0f;
    float z[B * K], d[B * K];
    uint8_t y[B] = {0, 6, 3};
    af_rng r;
    af_rng_seed(&r, 13, 0);
    for (int i = 0; i < B * K; i++)
        z[i] = (float)((int)af_rng_below(&r, 6000) - 3000) * h;
    const float scale = 1.0f / B;
    tn_softmax_xent(B, K, z, y, scale, d, NULL);
    for (int i = 0; i < B * K; i++) {
        float z0 = z[i];
        z[i] = z0 + h;
        double lp = tn_softmax_xent(B, K, z, y, 1.0f, NULL, NULL);
        z[i] = z0 - h;
        double lm = tn_softmax_xent(B, K, z, y, 1.0f, NULL, NULL);
        z[i] = z0;
        double fd = scale * (lp - lm) / (2.0 * h);
        /* truncation error h^2/6 · |f'''| <= 1e-7 here */
        CHECK_MSG(fabs(d[i] - fd) <= 1e-6 + 1e-5 * fabs(fd), "dlogits[%d] = %.9g, finite "
                  "difference %.9g", i, d[i], fd);
    }
}
