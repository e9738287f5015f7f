/* test_model.c — tests for nn/model: the tutorial spec's parameters (count, state_dict names,
 * shapes, order, offsets), whole-CNN parity with PyTorch (tests/fixtures/cnn.safetensors:
 * logits, loss, the fc activations through truncated specs, the conv activations through the
 * kernels, every gradient), the PyTorch-default initialisation (bounds, variance, seeds), the
 * forward/backward contracts (accumulating grads, batch splits), and the refusal of bad specs
 * with a message naming the source and the problem.
 */
#include "../test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"
#include "fixtures.h"
#include "nn/model.h"
#include "tensor/kernels.h"

/* ---- the tutorial spec ------------------------------------------------------------------ */

static const struct {
    const char *name;
    int ndim, shape[4];
} cnn_params[10] = {
    {"conv1.weight", 4, {6, 1, 5, 5}}, {"conv1.bias", 1, {6}},
    {"conv2.weight", 4, {12, 6, 5, 5}}, {"conv2.bias", 1, {12}},
    {"fc1.weight", 2, {120, 192}},      {"fc1.bias", 1, {120}},
    {"fc2.weight", 2, {60, 120}},       {"fc2.bias", 1, {60}},
    {"out.weight", 2, {10, 60}},        {"out.bias", 1, {10}},
};

TEST(model_tutorial_spec_matches_state_dict)
{
    nn_model *m;
    int rc = nn_model_from_file(FX_CNN_SPEC, NULL, &m);
    CHECK_MSG(rc == 0, "%s", af_errmsg());
    CHECK_EQ_INT(m->n_params, 32998);
    CHECK_EQ_INT(m->n_params_t, 10);
    CHECK_EQ_INT(m->n_classes, 10);
    CHECK_EQ_INT(m->in_c, 1);
    CHECK_EQ_INT(m->in_h, 28);
    CHECK_EQ_INT(m->in_w, 28);
    size_t off = 0;
    for (int i = 0; i < 10; i++) {
        const nn_param *p = &m->params_t[i];
        CHECK_MSG(strcmp(p->name, cnn_params[i].name) == 0, "tensor %d is '%s', want '%s'", i,
                  p->name, cnn_params[i].name);
        CHECK_EQ_INT(p->ndim, cnn_params[i].ndim);
        size_t n = 1;
        for (int d = 0; d < p->ndim; d++) {
            CHECK_EQ_INT(p->shape[d], cnn_params[i].shape[d]);
            n *= (size_t)p->shape[d];
        }
        CHECK_EQ_INT(p->n, n);
        CHECK_EQ_INT(p->off, off); /* one flat buffer, state_dict order, no gaps */
        off += n;
        CHECK(nn_model_param(m, p->name) == p);
    }
    CHECK(nn_model_param(m, "conv1") == NULL);
    CHECK(nn_model_param(m, "fc3.weight") == NULL);
    /* output shapes per layer: conv 6x24x24, pool 6x12x12, conv 12x8x8, pool 12x4x4, 192 */
    CHECK_EQ_INT(m->n_layers, 12);
    CHECK_EQ_INT(m->layers[0].out_c * m->layers[0].out_h * m->layers[0].out_w, 6 * 24 * 24);
    CHECK_EQ_INT(m->layers[2].out_h, 12);
    CHECK_EQ_INT(m->layers[5].out_c * m->layers[5].out_h * m->layers[5].out_w, 192);
    /* forward FLOPs: 2·(6·24·24·25 + 12·8·8·150 + 192·120 + 120·60 + 60·10) */
    CHECK_NEAR(m->flops_fwd, 2.0 * (86400 + 115200 + 23040 + 7200 + 600), 1.0);
    char buf[4096];
    nn_model_summary(m, buf, sizeof buf);
    CHECK(strstr(buf, "conv1") && strstr(buf, "32998") && strstr(buf, "fc1.weight[120,192]"));
    nn_model_free(m);
    nn_model_free(NULL);
}

TEST(model_clone_copies_spec_and_params)
{
    nn_model *m, *c;
    CHECK(nn_model_from_file(FX_CNN_SPEC, NULL, &m) == 0);
    nn_model_init(m, 7);
    CHECK(nn_model_clone(m, &c) == 0);
    CHECK_EQ_INT(c->n_params, m->n_params);
    CHECK(c->params != m->params);
    CHECK(memcmp(c->params, m->params, sizeof(float) * m->n_params) == 0);
    CHECK(strcmp(c->spec_json, m->spec_json) == 0);
    c->params[0] += 1.0f; /* independent buffers */
    CHECK(c->params[0] != m->params[0]);
    nn_model_free(c);
    nn_model_free(m);
}

/* ---- parity with PyTorch ------------------------------------------------------------------ */

/* The tutorial CNN up to fc1 / fc2, so nn_forward returns act.fc1 / act.fc2 (pre-ReLU). */
#define CNN_TRUNK                                                                              \
    "{\"input\":[1,28,28],\"layers\":["                                                         \
    "{\"type\":\"conv2d\",\"name\":\"conv1\",\"in_channels\":1,\"out_channels\":6,\"kernel\":5}," \
    "{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2,\"stride\":2},"                    \
    "{\"type\":\"conv2d\",\"name\":\"conv2\",\"in_channels\":6,\"out_channels\":12,\"kernel\":5}," \
    "{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2,\"stride\":2},{\"type\":\"flatten\"}," \
    "{\"type\":\"linear\",\"name\":\"fc1\",\"in_features\":192,\"out_features\":120}"
static const char *spec_to_fc1 = CNN_TRUNK "]}";
static const char *spec_to_fc2 =
    CNN_TRUNK ",{\"type\":\"relu\"},{\"type\":\"linear\",\"name\":\"fc2\",\"in_features\":120,"
              "\"out_features\":60}]}";

typedef struct cnn_fx {
    st_file f;
    float *x, *lab, *logits, *loss;
    uint8_t y[4];
} cnn_fx;

static int cnn_fx_open(cnn_fx *c)
{
    memset(c, 0, sizeof *c);
    if (fx_open(&c->f, "cnn.safetensors"))
        return 0;
    c->x = FX_GET(&c->f, "x", NULL, 4, 4, 1, 28, 28);
    c->lab = FX_GET(&c->f, "labels", NULL, 1, 4);
    c->logits = FX_GET(&c->f, "logits", NULL, 2, 4, 10);
    c->loss = FX_GET(&c->f, "loss", NULL, 1, 1);
    return c->x && c->lab && c->logits && c->loss && fx_labels(c->lab, 4, c->y) == 0;
}

static void cnn_fx_close(cnn_fx *c)
{
    free(c->x), free(c->lab), free(c->logits), free(c->loss);
    st_free(&c->f);
}

TEST(model_cnn_parity_logits_loss_grads)
{
    cnn_fx c;
    nn_model *m = NULL;
    nn_ws *ws = NULL;
    float *grads = NULL;
    int opened = cnn_fx_open(&c);
    CHECK(opened);
    CHECK(st_meta(&c.f, "init_seed") && strcmp(st_meta(&c.f, "init_seed"), "1") == 0);
    /* labels of images 0..3 (README) */
    CHECK(c.y[0] == 9 && c.y[1] == 0 && c.y[2] == 0 && c.y[3] == 3);
    CHECK(nn_model_from_file(FX_CNN_SPEC, NULL, &m) == 0);
    CHECK(fx_load_params(m, &c.f, "") == 0);
    ws = nn_ws_create(m, 4);
    grads = calloc(m->n_params, sizeof(float));
    CHECK(ws && grads);
    const float *z = nn_forward(m, ws, c.x, 4, 1, 0);
    size_t bad = t_allclose(z, c.logits, 40, 1e-4, 1e-5);
    CHECK_MSG(bad == (size_t)-1, "logits[%zu] = %.9g, torch %.9g", bad, z[bad], c.logits[bad]);
    int correct = -1;
    double loss = nn_loss(m, ws, c.y, 4, 0.25f, &correct) / 4.0;
    CHECK_NEAR(loss, c.loss[0], 1e-5 + 1e-4 * fabs(c.loss[0]));
    int want_correct = 0; /* argmax hits of the torch logits */
    for (int n = 0; n < 4; n++) {
        int am = 0;
        for (int k = 1; k < 10; k++)
            am = c.logits[n * 10 + k] > c.logits[n * 10 + am] ? k : am;
        want_correct += am == c.y[n];
    }
    CHECK_EQ_INT(correct, want_correct);
    nn_backward(m, ws, c.x, 4, grads);
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        char name[96];
        snprintf(name, sizeof name, "grad.%s", p->name);
        float *g = fx_get(&c.f, name, p->ndim, p->shape, NULL);
        CHECK_MSG(g != NULL, "fixture lacks %s", name);
        bad = t_allclose(grads + p->off, g, p->n, 1e-3, 1e-5);
        float got = bad != (size_t)-1 ? grads[p->off + bad] : 0, want = bad != (size_t)-1 ? g[bad] : 0;
        free(g);
        CHECK_MSG(bad == (size_t)-1, "%s[%zu] = %.9g, torch %.9g", name, bad, got, want);
    }
    free(grads);
    nn_ws_free(ws);
    nn_model_free(m);
    cnn_fx_close(&c);
}

TEST(model_cnn_parity_fc_activations)
{
    cnn_fx c;
    CHECK(cnn_fx_open(&c));
    const char *specs[2] = {spec_to_fc1, spec_to_fc2}, *acts[2] = {"act.fc1", "act.fc2"};
    const int widths[2] = {120, 60};
    for (int k = 0; k < 2; k++) {
        nn_model *m;
        int rc = nn_model_from_json(specs[k], "trunk", NULL, &m);
        CHECK_MSG(rc == 0, "%s", af_errmsg());
        CHECK_EQ_INT(m->n_classes, widths[k]);
        CHECK(fx_load_params(m, &c.f, "") == 0);
        nn_ws *ws = nn_ws_create(m, 4);
        CHECK(ws != NULL);
        float *want = FX_GET(&c.f, acts[k], NULL, 2, 4, widths[k]);
        CHECK(want != NULL);
        const float *z = nn_forward(m, ws, c.x, 4, 0, 0);
        size_t bad = t_allclose(z, want, (size_t)4 * widths[k], 1e-4, 1e-5);
        float got = bad != (size_t)-1 ? z[bad] : 0, ref = bad != (size_t)-1 ? want[bad] : 0;
        free(want);
        nn_ws_free(ws);
        nn_model_free(m);
        CHECK_MSG(bad == (size_t)-1, "%s[%zu] = %.9g, torch %.9g", acts[k], bad, got, ref);
    }
    cnn_fx_close(&c);
}

TEST(model_cnn_parity_conv_activations_through_kernels)
{
    /* the conv activations are internal to the model; recompute them with the same kernels
     * the layers use, from the fixture's weights, and compare with torch's */
    cnn_fx c;
    CHECK(cnn_fx_open(&c));
    float *w1 = FX_GET(&c.f, "conv1.weight", NULL, 4, 6, 1, 5, 5), *b1 = FX_GET(&c.f, "conv1.bias", NULL, 1, 6);
    float *w2 = FX_GET(&c.f, "conv2.weight", NULL, 4, 12, 6, 5, 5), *b2 = FX_GET(&c.f, "conv2.bias", NULL, 1, 12);
    float *a1 = FX_GET(&c.f, "act.conv1", NULL, 4, 4, 6, 24, 24), *p1 = FX_GET(&c.f, "act.pool1", NULL, 4, 4, 6, 12, 12);
    float *a2 = FX_GET(&c.f, "act.conv2", NULL, 4, 4, 12, 8, 8), *p2 = FX_GET(&c.f, "act.pool2", NULL, 4, 4, 12, 4, 4);
    int have = w1 && b1 && w2 && b2 && a1 && p1 && a2 && p2;
    tn_conv2d g1 = {.c = 1, .h = 28, .w = 28, .oc = 6, .kh = 5, .kw = 5, .stride = 1};
    tn_conv2d q1 = {.c = 6, .h = 24, .w = 24, .oc = 6, .kh = 2, .kw = 2, .stride = 2};
    tn_conv2d g2 = {.c = 6, .h = 12, .w = 12, .oc = 12, .kh = 5, .kw = 5, .stride = 1};
    tn_conv2d q2 = {.c = 12, .h = 8, .w = 8, .oc = 12, .kh = 2, .kw = 2, .stride = 2};
    tn_conv2d_geometry(&g1), tn_conv2d_geometry(&q1), tn_conv2d_geometry(&g2), tn_conv2d_geometry(&q2);
    size_t ns = tn_conv2d_scratch(&g1, 4) > tn_conv2d_scratch(&g2, 4) ? tn_conv2d_scratch(&g1, 4)
                                                                       : tn_conv2d_scratch(&g2, 4);
    float *scr = malloc(sizeof(float) * ns), *o1 = malloc(sizeof(float) * 4 * 6 * 24 * 24);
    float *r1 = malloc(sizeof(float) * 4 * 6 * 24 * 24), *o2 = malloc(sizeof(float) * 4 * 6 * 12 * 12);
    float *o3 = malloc(sizeof(float) * 4 * 12 * 8 * 8), *r3 = malloc(sizeof(float) * 4 * 12 * 8 * 8);
    float *o4 = malloc(sizeof(float) * 4 * 12 * 4 * 4);
    uint32_t *arg = malloc(sizeof(uint32_t) * 4 * 6 * 12 * 12);
    size_t bad[4] = {0, 0, 0, 0};
    if (have) {
        tn_conv2d_forward(&g1, 4, c.x, w1, b1, o1, scr);
        bad[0] = t_allclose(o1, a1, 4 * 6 * 24 * 24, 1e-4, 1e-5);
        tn_relu_forward(4 * 6 * 24 * 24, o1, r1);
        tn_maxpool2d_forward(&q1, 4, r1, o2, arg);
        bad[1] = t_allclose(o2, p1, 4 * 6 * 12 * 12, 1e-4, 1e-5);
        /* from torch's pool1, so each stage is checked on its own */
        tn_conv2d_forward(&g2, 4, p1, w2, b2, o3, scr);
        bad[2] = t_allclose(o3, a2, 4 * 12 * 8 * 8, 1e-4, 1e-5);
        tn_relu_forward(4 * 12 * 8 * 8, a2, r3);
        tn_maxpool2d_forward(&q2, 4, r3, o4, arg);
        bad[3] = memcmp(o4, p2, sizeof(float) * 4 * 12 * 4 * 4) == 0 ? (size_t)-1 : 0;
    }
    free(w1), free(b1), free(w2), free(b2), free(a1), free(p1), free(a2), free(p2);
    free(scr), free(o1), free(r1), free(o2), free(o3), free(r3), free(o4), free(arg);
    cnn_fx_close(&c);
    CHECK(have);
    CHECK_MSG(bad[0] == (size_t)-1, "act.conv1 differs at %zu", bad[0]);
    CHECK_MSG(bad[1] == (size_t)-1, "act.pool1 differs at %zu", bad[1]);
    CHECK_MSG(bad[2] == (size_t)-1, "act.conv2 differs at %zu", bad[2]);
    CHECK_MSG(bad[3] == (size_t)-1, "act.pool2 is not exactly relu+pool of torch's act.conv2");
}

TEST(model_backward_accumulates_and_splits_batches)
{
    cnn_fx c;
    nn_model *m;
    CHECK(cnn_fx_open(&c));
    CHECK(nn_model_from_file(FX_CNN_SPEC, NULL, &m) == 0);
    CHECK(fx_load_params(m, &c.f, "") == 0);
    const size_t n = m->n_params, in_n = 28 * 28;
    nn_ws *ws = nn_ws_create(m, 4);
    float *g = calloc(n, sizeof(float)), *g2 = calloc(n, sizeof(float)), *gs = calloc(n, sizeof(float));
    CHECK(ws && g && g2 && gs);
    CHECK_EQ_INT(nn_ws_max_batch(ws), 4);
    nn_forward(m, ws, c.x, 4, 0, 0);
    double full = nn_loss(m, ws, c.y, 4, 0.25f, NULL);
    nn_backward(m, ws, c.x, 4, g);
    /* a second backward adds the same gradient again */
    nn_backward(m, ws, c.x, 4, g2);
    nn_backward(m, ws, c.x, 4, g2);
    for (size_t i = 0; i < n; i++)
        g2[i] *= 0.5f;
    size_t bad = t_allclose(g2, g, n, 1e-6, 1e-9);
    CHECK_MSG(bad == (size_t)-1, "twice backward / 2 differs at %zu", bad);
    /* two chunks of 2 with scale 1/4 sum to the batch of 4 (how the trainer splits work) */
    double part = 0.0;
    for (int h = 0; h < 2; h++) {
        nn_forward(m, ws, c.x + (size_t)2 * h * in_n, 2, 0, 0);
        part += nn_loss(m, ws, c.y + 2 * h, 2, 0.25f, NULL);
        nn_backward(m, ws, c.x + (size_t)2 * h * in_n, 2, gs);
    }
    CHECK_NEAR(part, full, 1e-5);
    bad = t_allclose(gs, g, n, 1e-4, 1e-7);
    CHECK_MSG(bad == (size_t)-1, "split-batch gradient differs at %zu: %.9g vs %.9g", bad,
              bad != (size_t)-1 ? gs[bad] : 0, bad != (size_t)-1 ? g[bad] : 0);
    /* batch 1 (what a predict does) equals row 0 of the batch of 4 */
    nn_ws *w1 = nn_ws_create(m, 1);
    CHECK(w1 != NULL);
    float z4[40];
    memcpy(z4, nn_forward(m, ws, c.x, 4, 0, 0), sizeof z4);
    const float *z1 = nn_forward(m, w1, c.x + 3 * in_n, 1, 0, 0);
    CHECK(t_allclose(z1, z4 + 30, 10, 1e-5, 1e-6) == (size_t)-1);
    nn_ws_free(w1);
    free(g), free(g2), free(gs);
    nn_ws_free(ws);
    nn_model_free(m);
    cnn_fx_close(&c);
}

/* ---- initialisation --------------------------------------------------------------------- */

TEST(model_init_kaiming_uniform_bounds_and_variance)
{
    nn_model *m;
    CHECK(nn_model_from_file(FX_CNN_SPEC, NULL, &m) == 0);
    nn_model_init(m, 1);
    static const int fan_in[10] = {25, 25, 150, 150, 192, 192, 120, 120, 60, 60};
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        const float *w = m->params + p->off;
        const double bound = 1.0 / sqrt((double)fan_in[i]);
        double s = 0.0, s2 = 0.0, mx = 0.0;
        for (size_t k = 0; k < p->n; k++) {
            CHECK_MSG(fabs(w[k]) <= (float)bound * (1.0 + 1e-6), "%s[%zu] = %g beyond %g", p->name,
                      k, w[k], bound);
            s += w[k];
            s2 += (double)w[k] * w[k];
            mx = fabs(w[k]) > mx ? fabs(w[k]) : mx;
        }
        const double n = (double)p->n, mean = s / n, var = s2 / n - mean * mean;
        const double want = bound * bound / 3.0; /* variance of U(-b, b) */
        /* sample variance of a uniform: relative sd sqrt(0.8/n); allow 6 sd */
        CHECK_MSG(fabs(var / want - 1.0) < 6.0 * sqrt(0.8 / n) + 0.02, "%s: variance %g, want %g",
                  p->name, var, want);
        CHECK_MSG(fabs(mean) < 6.0 * bound / sqrt(3.0 * n), "%s: mean %g", p->name, mean);
        if (p->n >= 60) /* the draws reach near the bound: not a narrower distribution */
            CHECK_MSG(mx > 0.85 * bound, "%s: max |w| %g, bound %g", p->name, mx, bound);
    }
    nn_model_free(m);
}

TEST(model_init_reproducible_per_seed)
{
    nn_model *a, *b;
    CHECK(nn_model_from_file(FX_CNN_SPEC, NULL, &a) == 0);
    CHECK(nn_model_from_file(FX_CNN_SPEC, NULL, &b) == 0);
    for (size_t i = 0; i < a->n_params; i++)
        CHECK(a->params[i] == 0.0f); /* built, not initialised: zeros */
    nn_model_init(a, 42);
    nn_model_init(b, 42);
    CHECK(memcmp(a->params, b->params, sizeof(float) * a->n_params) == 0);
    nn_model_init(b, 43);
    size_t same = 0;
    for (size_t i = 0; i < a->n_params; i++)
        same += a->params[i] == b->params[i];
    CHECK(same < a->n_params / 100);
    /* re-initialising overwrites everything (no state carried over) */
    nn_model_init(b, 42);
    CHECK(memcmp(a->params, b->params, sizeof(float) * a->n_params) == 0);
    nn_model_free(a);
    nn_model_free(b);
}

/* ---- bad specs -------------------------------------------------------------------------- */

typedef struct bad_spec {
    const char *json;
    int rc;
    const char *needle;
} bad_spec;

#define L_CONV(extra) "{\"type\":\"conv2d\",\"name\":\"c1\",\"out_channels\":4,\"kernel\":3" extra "}"
#define FC(in, out) "{\"type\":\"linear\",\"name\":\"fc\",\"in_features\":" #in ",\"out_features\":" #out "}"
#define SPEC(input, layers) "{\"name\":\"t\",\"input\":" input ",\"layers\":[" layers "]}"

static const bad_spec bad_specs[] = {
    /* unknown layer type */
    {SPEC("[1,8,8]", "{\"type\":\"conv3d\",\"kernel\":3},{\"type\":\"flatten\"}," FC(64, 10)),
     AF_EFORMAT, "unknown layer type \"conv3d\""},
    /* impossible shapes */
    {SPEC("[1,4,4]", "{\"type\":\"conv2d\",\"name\":\"big\",\"out_channels\":2,\"kernel\":5},{\"type\":\"flatten\"}," FC(2, 10)),
     AF_ESHAPE, "layer 'big': kernel 5 does not fit input 4x4"},
    {SPEC("[1,8,8]", "{\"type\":\"maxpool2d\",\"name\":\"mp\",\"kernel\":9},{\"type\":\"flatten\"}," FC(1, 10)),
     AF_ESHAPE, "layer 'mp': window 9 does not fit"},
    {SPEC("[1,8,8]", L_CONV("") ",{\"type\":\"flatten\"}," FC(100, 10)),
     AF_ESHAPE, "layer 'fc': in_features 100 but the input has 144 features"},
    {SPEC("[1,8,8]", "{\"type\":\"flatten\"}," L_CONV("") "," FC(144, 10)),
     AF_ESHAPE, "layer 'c1': conv2d after flatten"},
    {SPEC("[1,8,8]", "{\"type\":\"flatten\"},{\"type\":\"maxpool2d\",\"name\":\"mp\",\"kernel\":2}," FC(16, 10)),
     AF_ESHAPE, "layer 'mp': maxpool2d after flatten"},
    {SPEC("[1,8,8]", L_CONV("") "," FC(144, 10)), AF_ESHAPE, "layer 'fc': linear on a 4x6x6 input needs a flatten first"},
    {SPEC("[1,8,8]", L_CONV(",\"in_channels\":3") ",{\"type\":\"flatten\"}," FC(144, 10)),
     AF_ESHAPE, "layer 'c1': in_channels 3 but the input has 1 channels"},
    {SPEC("[1,8,8]", L_CONV("")), AF_ESHAPE, "the last layer must output a feature vector"},
    /* missing fields */
    {SPEC("[1,8,8]", "{\"type\":\"conv2d\",\"name\":\"c1\",\"kernel\":3},{\"type\":\"flatten\"}," FC(64, 10)),
     AF_EFORMAT, "layer 'c1': conv2d needs \"out_channels\" and \"kernel\""},
    {SPEC("[1,8,8]", "{\"type\":\"conv2d\",\"name\":\"c1\",\"out_channels\":2},{\"type\":\"flatten\"}," FC(64, 10)),
     AF_EFORMAT, "conv2d needs \"out_channels\" and \"kernel\""},
    {SPEC("[1,8,8]", "{\"type\":\"flatten\"},{\"type\":\"linear\",\"name\":\"fc\"}"),
     AF_EFORMAT, "layer 'fc': linear needs \"out_features\""},
    {SPEC("[1,8,8]", "{\"type\":\"maxpool2d\",\"name\":\"mp\"},{\"type\":\"flatten\"}," FC(64, 10)),
     AF_EFORMAT, "layer 'mp': maxpool2d needs \"kernel\""},
    {SPEC("[1,8,8]", "{\"name\":\"x\"},{\"type\":\"flatten\"}," FC(64, 10)), AF_EFORMAT, "layers[0]: missing \"type\""},
    {"{\"layers\":[{\"type\":\"flatten\"}," FC(64, 10) "]}", AF_EFORMAT, "\"input\" must be [C,H,W] or [features]"},
    {"{\"input\":[1,8,8]}", AF_EFORMAT, "\"layers\" must be a non-empty array"},
    {"{\"input\":[1,8,8],\"layers\":[]}", AF_EFORMAT, "\"layers\" must be a non-empty array"},
    /* unknown fields */
    {SPEC("[1,8,8]", "{\"type\":\"conv2d\",\"name\":\"c1\",\"out_channels\":4,\"kernal\":3},{\"type\":\"flatten\"}," FC(144, 10)),
     AF_EFORMAT, "layer 'c1': unknown field \"kernal\""},
    {SPEC("[1,8,8]", "{\"type\":\"relu\",\"name\":\"r\",\"inplace\":true},{\"type\":\"flatten\"}," FC(64, 10)),
     AF_EFORMAT, "layer 'r': unknown field \"inplace\""},
    {"{\"input\":[1,8,8],\"lyers\":[],\"layers\":[{\"type\":\"flatten\"}," FC(64, 10) "]}", AF_EFORMAT,
     "unknown top-level field \"lyers\""},
    /* not JSON, wrong JSON types */
    {"{\"input\": [1,8,8], \"layers\": [", AF_EFORMAT, "not valid JSON"},
    {"", AF_EFORMAT, "not valid JSON"},
    {"[1,2,3]", AF_EFORMAT, "spec must be a JSON object"},
    {SPEC("[1,8,8]", "\"relu\""), AF_EFORMAT, "layers[0] must be an object"},
    {SPEC("[1,8,8]", "{\"type\":\"flatten\"},{\"type\":\"linear\",\"name\":\"fc\",\"out_features\":2.5}"),
     AF_EFORMAT, "layer 'fc': \"out_features\" must be an integer"},
    {SPEC("[1,8,8]", "{\"type\":\"conv2d\",\"name\":\"c1\",\"out_channels\":4,\"kernel\":3,\"stride\":0},{\"type\":\"flatten\"}," FC(144, 10)),
     AF_ERANGE, "layer 'c1': \"stride\" = 0 out of range"},
    {SPEC("[1,8,8]", "{\"type\":\"conv2d\",\"name\":\"c1\",\"out_channels\":4,\"kernel\":\"3\"},{\"type\":\"flatten\"}," FC(144, 10)),
     AF_EFORMAT, "\"kernel\" must be an integer"},
    {SPEC("[0,8,8]", "{\"type\":\"flatten\"}," FC(64, 10)), AF_EFORMAT, "\"input\"[0] must be a positive integer"},
    {SPEC("[8]", "{\"type\":\"dropout\",\"name\":\"d\",\"p\":1}," FC(8, 10)), AF_ERANGE, "layer 'd': \"p\" must be in [0, 1)"},
    {SPEC("[8]", "{\"type\":\"dropout\",\"name\":\"d\",\"p\":-0.1}," FC(8, 10)), AF_ERANGE, "\"p\" must be in [0, 1)"},
    {SPEC("[8]", "{\"type\":\"relu\",\"name\":\"bad.name\"}," FC(8, 10)), AF_EFORMAT, "\"name\" must be a non-empty string"},
    {SPEC("[8]", "{\"type\":\"relu\",\"name\":\"\"}," FC(8, 10)), AF_EFORMAT, "\"name\" must be a non-empty string"},
    /* duplicate names */
    {SPEC("[8]", "{\"type\":\"linear\",\"name\":\"fc\",\"out_features\":8}," FC(8, 10)), AF_EFORMAT,
     "layers[1]: duplicate name \"fc\""},
    /* classes mismatch, too few classes, no parameters */
    {"{\"input\":[8],\"classes\":5,\"layers\":[" FC(8, 10) "]}", AF_ESHAPE, "\"classes\" is 5 but the last layer outputs 10"},
    {SPEC("[8]", FC(8, 1)), AF_ERANGE, "1 output classes, need 2..256"},
    {SPEC("[8]", FC(8, 300)), AF_ERANGE, "300 output classes"},
    {SPEC("[8]", "{\"type\":\"relu\"}"), AF_EFORMAT, "no parameters"},
};

TEST(model_bad_specs_refused_with_a_clear_message)
{
    for (size_t i = 0; i < sizeof bad_specs / sizeof *bad_specs; i++) {
        const bad_spec *b = &bad_specs[i];
        nn_model *m = (nn_model *)1;
        af_clearerr();
        int rc = nn_model_from_json(b->json, "spec.json", NULL, &m);
        const char *msg = af_errmsg();
        CHECK_MSG(rc == b->rc && m == NULL && strncmp(msg, "spec.json: ", 11) == 0 && strstr(msg, b->needle),
                  "bad spec %zu %s\n      -> rc %d (want %d), message \"%s\"\n      (want it to start "
                  "with \"spec.json: \" and contain \"%s\")", i, b->json, rc, b->rc, msg, b->needle);
        if (rc == 0)
            nn_model_free(m);
    }
}

TEST(model_good_variants_accepted)
{
    /* the other side of the shape rules: specs that must build */
    static const char *good[] = {
        SPEC("[8]", FC(8, 10)), /* 1-D input: linear without flatten */
        SPEC("[1,1,8]", FC(8, 3)), /* 1x1xW is a feature vector already */
        SPEC("[1,4,4]", "{\"type\":\"conv2d\",\"name\":\"c\",\"out_channels\":2,\"kernel\":5,\"padding\":1},{\"type\":\"flatten\"}," FC(8, 10)),
        SPEC("[3,9,9]", "{\"type\":\"maxpool2d\",\"name\":\"mp\",\"kernel\":3,\"stride\":2,\"padding\":1},{\"type\":\"flatten\"}," FC(75, 4)),
        SPEC("[8]", "{\"type\":\"dropout\",\"p\":0}," FC(8, 10)),
        SPEC("[1,8,8]", "{\"type\":\"conv2d\",\"name\":\"c\",\"out_channels\":2,\"kernel\":3,\"bias\":false},{\"type\":\"flatten\"},"
                        "{\"type\":\"linear\",\"name\":\"fc\",\"out_features\":10,\"bias\":false}"),
    };
    static const size_t nparams[] = {90, 27, 2 * 25 + 2 + 8 * 10 + 10, 76 * 4, 90, 18 + 720};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        nn_model *m;
        int rc = nn_model_from_json(good[i], "good.json", NULL, &m);
        CHECK_MSG(rc == 0, "good spec %zu refused: %s", i, af_errmsg());
        CHECK_MSG(m->n_params == nparams[i], "good spec %zu: %zu parameters, want %zu", i,
                  m->n_params, nparams[i]);
        nn_model_free(m);
    }
    /* no bias: no ".bias" tensors */
    nn_model *m;
    CHECK(nn_model_from_json(good[5], "good.json", NULL, &m) == 0);
    CHECK_EQ_INT(m->n_params_t, 2);
    CHECK(nn_model_param(m, "c.bias") == NULL && nn_model_param(m, "fc.weight") != NULL);
    nn_model_free(m);
    /* auto-names are unique per position */
    CHECK(nn_model_from_json(SPEC("[8]", "{\"type\":\"relu\"},{\"type\":\"relu\"}," FC(8, 10)), "g", NULL, &m) == 0);
    CHECK(strcmp(m->layers[0].name, m->layers[1].name) != 0);
    nn_model_free(m);
}

TEST(model_caps_refuse_big_specs)
{
    nn_model *m = (nn_model *)1;
    char *txt;
    size_t len;
    CHECK(af_read_file(FX_CNN_SPEC, &txt, &len) == 0);
    nn_caps caps = {.max_params = 32997, .max_flops = 1e10, .max_act = 50000000};
    int rc = nn_model_from_json(txt, "cnn.json", &caps, &m);
    CHECK_EQ_INT(rc, AF_ERANGE);
    CHECK(m == NULL);
    CHECK(strstr(af_errmsg(), "cnn.json: more than 32997 parameters") != NULL);
    caps = (nn_caps){.max_params = 32998, .max_flops = 1e10, .max_act = 50000000};
    CHECK(nn_model_from_json(txt, "cnn.json", &caps, &m) == 0); /* exactly at the cap */
    nn_model_free(m);
    caps = (nn_caps){.max_params = 50000000, .max_flops = 1e5, .max_act = 50000000};
    rc = nn_model_from_json(txt, "cnn.json", &caps, &m);
    CHECK_EQ_INT(rc, AF_ERANGE);
    CHECK(strstr(af_errmsg(), "FLOPs per sample") != NULL);
    caps = (nn_caps){.max_params = 50000000, .max_flops = 1e10, .max_act = 1000};
    rc = nn_model_from_json(txt, "cnn.json", &caps, &m);
    CHECK_EQ_INT(rc, AF_ERANGE);
    CHECK(strstr(af_errmsg(), "activation floats per sample") != NULL);
    free(txt);
    /* the default caps refuse a model of 10^8 parameters before allocating it */
    rc = nn_model_from_json(SPEC("[10000]", FC(10000, 10000) ",{\"type\":\"relu\"},"
                                 "{\"type\":\"linear\",\"name\":\"out\",\"out_features\":10}"),
                            "huge.json", NULL, &m);
    CHECK_EQ_INT(rc, AF_ERANGE);
    CHECK(strstr(af_errmsg(), "more than 50000000 parameters") != NULL);
}

TEST(model_from_file_errors_name_the_file)
{
    nn_model *m = (nn_model *)1;
    const char *dir = t_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/missing.json", dir);
    CHECK_EQ_INT(nn_model_from_file(path, NULL, &m), AF_ENOTFOUND);
    CHECK(strstr(af_errmsg(), path) != NULL);
    snprintf(path, sizeof path, "%s/bad.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(SPEC("[1,8,8]", "{\"type\":\"conv9d\"}"), f);
    fclose(f);
    m = (nn_model *)1;
    CHECK_EQ_INT(nn_model_from_file(path, NULL, &m), AF_EFORMAT);
    CHECK(m == NULL);
    CHECK(strncmp(af_errmsg(), path, strlen(path)) == 0);
    CHECK(strstr(af_errmsg(), "conv9d") != NULL);
}
