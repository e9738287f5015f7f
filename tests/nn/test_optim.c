/* test_optim.c — tests for nn/optim: the update formulas against a double-precision
 * transcription of torch 1.13's algebra (tests/fixtures/README.md), on lengths that exercise
 * both the vector body and the scalar tail; the PyTorch replays cnn_adam, cnn_sgd,
 * cnn_sgd_plain and cnn_adam_wd (5 steps of batch 4 through the trainer and through
 * nn_forward/nn_loss/nn_backward + nn_optim_step) under the README's tolerance policy; config
 * validation, defaults, kind parsing and reset.
 */
#include "../test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "fixtures.h"
#include "nn/model.h"
#include "nn/optim.h"
#include "train/train.h"

/* ---- the formulas, by hand in double ----------------------------------------------------- */

/* torch 1.13 single-tensor SGD / Adam on double state (README "The CNN fixtures"). */
static void ref_step(const nn_optim_cfg *c, long t, double *p, const double *grad, double *m,
                     double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double g = grad[i] + (double)c->weight_decay * p[i];
        if (c->kind == NN_OPT_SGD) {
            double d = g;
            if (c->momentum > 0) {
                m[i] = t == 1 ? g : (double)c->momentum * m[i] + g;
                d = c->nesterov ? g + (double)c->momentum * m[i] : m[i];
            }
            p[i] -= (double)c->lr * d;
        } else {
            m[i] = (double)c->beta1 * m[i] + (1.0 - (double)c->beta1) * g;
            v[i] = (double)c->beta2 * v[i] + (1.0 - (double)c->beta2) * g * g;
            double step = (double)c->lr / (1.0 - pow((double)c->beta1, (double)t));
            double bc2 = sqrt(1.0 - pow((double)c->beta2, (double)t));
            p[i] -= step * m[i] / (sqrt(v[i]) / bc2 + (double)c->eps);
        }
    }
}

/* Runs `steps` steps of cfg on n parameters with fresh random gradients each step, in the
 * library (float) and by hand (double); 1 if every parameter agrees to rtol. */
static int formula_ok(const nn_optim_cfg *cfg, size_t n, int steps, double rtol)
{
    nn_optim o;
    if (nn_optim_init(&o, cfg, n)) {
        printf("    init: %s\n", af_errmsg());
        return 0;
    }
    af_rng r;
    af_rng_seed(&r, n, (uint64_t)cfg->kind);
    float *p = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    double *pd = malloc(sizeof(double) * n), *gd = malloc(sizeof(double) * n);
    double *m = calloc(n, sizeof(double)), *v = calloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++)
        pd[i] = p[i] = (float)(af_rng_uniform(&r) - 0.5);
    int ok = 1;
    for (int t = 1; t <= steps && ok; t++) {
        for (size_t i = 0; i < n; i++)
            gd[i] = g[i] = (float)(0.2 * (af_rng_uniform(&r) - 0.5));
        float *g0 = malloc(sizeof(float) * n);
        memcpy(g0, g, sizeof(float) * n);
        nn_optim_step(&o, p, g);
        ref_step(cfg, t, pd, gd, m, v, n);
        if (memcmp(g0, g, sizeof(float) * n) != 0) {
            printf("    step %d modified the gradient\n", t);
            ok = 0;
        }
        free(g0);
        if (o.step != t) {
            printf("    step counter %ld after %d steps\n", o.step, t);
            ok = 0;
        }
        for (size_t i = 0; ok && i < n; i++)
            if (!(fabs(p[i] - pd[i]) <= rtol * fabs(pd[i]) + 1e-7)) {
                printf("    step %d p[%zu] = %.9g, by hand %.9g\n", t, i, p[i], pd[i]);
                ok = 0;
            }
    }
    nn_optim_deinit(&o);
    nn_optim_deinit(&o); /* idempotent */
    free(p), free(g), free(pd), free(gd), free(m), free(v);
    return ok;
}

/* 37 and 53 are not multiples of 8 or 16: vector body and scalar tail both run */
static const size_t lens[] = {1, 37, 53, 256};

TEST(optim_sgd_formulas_by_hand)
{
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_SGD);
    c.lr = 0.1f;
    for (size_t k = 0; k < 4; k++)
        CHECK_MSG(formula_ok(&c, lens[k], 4, 1e-5), "plain SGD, n = %zu", lens[k]);
    c.weight_decay = 0.01f;
    for (size_t k = 0; k < 4; k++)
        CHECK_MSG(formula_ok(&c, lens[k], 4, 1e-5), "SGD + weight decay, n = %zu", lens[k]);
    c.momentum = 0.9f;
    for (size_t k = 0; k < 4; k++)
        CHECK_MSG(formula_ok(&c, lens[k], 6, 1e-5), "SGD + momentum, n = %zu", lens[k]);
    c.nesterov = 1;
    for (size_t k = 0; k < 4; k++)
        CHECK_MSG(formula_ok(&c, lens[k], 6, 1e-5), "SGD + Nesterov, n = %zu", lens[k]);
}

TEST(optim_adam_formulas_by_hand)
{
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_ADAM);
    c.lr = 0.01f;
    for (size_t k = 0; k < 4; k++)
        CHECK_MSG(formula_ok(&c, lens[k], 6, 1e-5), "Adam, n = %zu", lens[k]);
    c.weight_decay = 0.05f;
    c.beta1 = 0.8f;
    c.beta2 = 0.99f;
    c.eps = 1e-6f;
    for (size_t k = 0; k < 4; k++)
        CHECK_MSG(formula_ok(&c, lens[k], 6, 1e-5), "Adam + weight decay, other betas, n = %zu", lens[k]);
}

TEST(optim_first_steps_by_hand)
{
    /* a few numbers worked out on paper */
    nn_optim o;
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_SGD);
    c.lr = 0.5f;
    c.momentum = 0.5f;
    CHECK(nn_optim_init(&o, &c, 1) == 0);
    float p[1] = {1.0f}, g[1] = {1.0f};
    nn_optim_step(&o, p, g); /* buf = 1, p = 1 - 0.5 */
    CHECK_NEAR(p[0], 0.5, 1e-7);
    nn_optim_step(&o, p, g); /* buf = 0.5·1 + 1 = 1.5, p = 0.5 - 0.75 */
    CHECK_NEAR(p[0], -0.25, 1e-7);
    nn_optim_deinit(&o);
    /* Adam's first step moves every parameter by ~lr against the sign of its gradient */
    c = nn_optim_defaults(NN_OPT_ADAM);
    c.lr = 0.01f;
    CHECK(nn_optim_init(&o, &c, 3) == 0);
    float q[3] = {0.0f, 0.0f, 0.0f}, h[3] = {3.0f, -1e-3f, 0.0f};
    nn_optim_step(&o, q, h);
    CHECK_NEAR(q[0], -0.01, 1e-7);
    CHECK_NEAR(q[1], 0.01, 1e-6); /* |g| = 1e-3 >> eps */
    CHECK(q[2] == 0.0f);          /* zero gradient: no move */
    nn_optim_deinit(&o);
}

TEST(optim_vector_body_bitwise_equals_scalar_tail)
{
    /* optim.c computes blocks of elements with SIMD and the tail with scalars and promises the
     * same bits: each element stepped inside a long array equals the same element stepped alone */
    const size_t n = 67;
    for (int kind = 0; kind < 2; kind++) {
        nn_optim_cfg c = nn_optim_defaults((nn_opt_kind)kind);
        c.lr = 0.01f;
        c.weight_decay = 0.01f;
        c.momentum = kind == NN_OPT_SGD ? 0.9f : 0.0f;
        nn_optim big, one;
        CHECK(nn_optim_init(&big, &c, n) == 0);
        af_rng r;
        af_rng_seed(&r, 3, 3);
        float p[67], g[3][67];
        for (size_t i = 0; i < n; i++) {
            p[i] = (float)(af_rng_uniform(&r) - 0.5);
            for (int t = 0; t < 3; t++)
                g[t][i] = (float)(af_rng_uniform(&r) - 0.5);
        }
        float alone[67];
        for (size_t i = 0; i < n; i++) {
            CHECK(nn_optim_init(&one, &c, 1) == 0);
            alone[i] = p[i];
            for (int t = 0; t < 3; t++)
                nn_optim_step(&one, &alone[i], &g[t][i]);
            nn_optim_deinit(&one);
        }
        for (int t = 0; t < 3; t++)
            nn_optim_step(&big, p, g[t]);
        nn_optim_deinit(&big);
        for (size_t i = 0; i < n; i++)
            CHECK_MSG(memcmp(&p[i], &alone[i], sizeof(float)) == 0, "%s element %zu: %.9g in the "
                      "array, %.9g alone", kind ? "Adam" : "SGD", i, p[i], alone[i]);
    }
}

/* ---- PyTorch replays --------------------------------------------------------------------- */

enum { REPLAY_MANUAL = 0, REPLAY_TRAINER = 1 };

/* Replays fixture `file` (5 steps of batch 4) and compares losses and final parameters. */
static int replay_ok(const char *file, int how, int threads)
{
    st_file f;
    if (fx_open(&f, file))
        return 0;
    int ok = 0;
    nn_model *m = NULL;
    nn_ws *ws = NULL;
    train_ctx *t = NULL;
    nn_optim o = {0};
    float *x = NULL, *lab = NULL, *losses = NULL, *grads = NULL;
    uint8_t y[20];
    const char *opt = st_meta(&f, "optimizer");
    const int steps = (int)fx_meta_num(&f, "steps"), B = (int)fx_meta_num(&f, "batch");
    if (!opt || steps != 5 || B != 4) {
        printf("    %s: unexpected metadata\n", file);
        goto done;
    }
    nn_optim_cfg c = nn_optim_defaults(strcmp(opt, "Adam") == 0 ? NN_OPT_ADAM : NN_OPT_SGD);
    c.lr = (float)fx_meta_num(&f, "lr");
    c.weight_decay = (float)fx_meta_num(&f, "weight_decay");
    if (c.kind == NN_OPT_SGD) {
        c.momentum = (float)fx_meta_num(&f, "momentum");
        c.nesterov = strcmp(st_meta(&f, "nesterov"), "true") == 0;
        if (fx_meta_num(&f, "dampening") != 0.0) {
            printf("    %s: dampening is not supported\n", file);
            goto done;
        }
    } else {
        c.beta1 = (float)fx_meta_num(&f, "beta1");
        c.beta2 = (float)fx_meta_num(&f, "beta2");
        c.eps = (float)fx_meta_num(&f, "eps");
        if (strcmp(st_meta(&f, "amsgrad"), "false") != 0)
            goto done;
    }
    x = FX_GET(&f, "x", NULL, 4, 20, 1, 28, 28);
    lab = FX_GET(&f, "labels", NULL, 1, 20);
    losses = FX_GET(&f, "losses", NULL, 1, 5);
    if (!x || !lab || !losses || fx_labels(lab, 20, y))
        goto done;
    if (nn_model_from_file(FX_CNN_SPEC, NULL, &m) || fx_load_params(m, &f, "init.")) {
        printf("    model: %s\n", af_errmsg());
        goto done;
    }
    if (how == REPLAY_TRAINER) {
        if (train_create(m, &c, B, threads, &t)) {
            printf("    train_create: %s\n", af_errmsg());
            goto done;
        }
    } else {
        ws = nn_ws_create(m, B);
        grads = malloc(sizeof(float) * m->n_params);
        if (!ws || !grads || nn_optim_init(&o, &c, m->n_params))
            goto done;
    }
    for (int s = 0; s < steps; s++) {
        const float *xs = x + (size_t)s * B * 784;
        const uint8_t *ys = y + s * B;
        double loss;
        if (how == REPLAY_TRAINER) {
            int correct = -1;
            train_step(t, xs, ys, B, (uint64_t)s, &loss, &correct);
            if (correct < 0 || correct > B) {
                printf("    step %d: %d correct of %d\n", s, correct, B);
                goto done;
            }
        } else {
            memset(grads, 0, sizeof(float) * m->n_params);
            nn_forward(m, ws, xs, B, 1, (uint64_t)s);
            loss = nn_loss(m, ws, ys, B, 1.0f / B, NULL) / B;
            nn_backward(m, ws, xs, B, grads);
            nn_optim_step(&o, m->params, grads);
        }
        /* losses: rtol 1e-3, atol 1e-5 */
        if (!(fabs(loss - losses[s]) <= 1e-5 + 1e-3 * fabs(losses[s]))) {
            printf("    %s step %d: loss %.9g, torch %.9g\n", file, s, loss, losses[s]);
            goto done;
        }
    }
    ok = 1;
    for (int i = 0; ok && i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        char name[96];
        snprintf(name, sizeof name, "final.%s", p->name);
        float *want = fx_get(&f, name, p->ndim, p->shape, NULL);
        if (!want) {
            ok = 0;
            break;
        }
        const float *got = m->params + p->off;
        size_t bad;
        if (c.kind == NN_OPT_SGD) {
            bad = t_allclose(got, want, p->n, 1e-3, 1e-5);
        } else {
            bad = t_allclose(got, want, p->n, 1e-3, 0.1 * c.lr);
            double rel = fx_rel_l2(got, want, p->n);
            if (bad == (size_t)-1 && rel > 1e-4) {
                printf("    %s: %s relative L2 error %.3g > 1e-4\n", file, name, rel);
                ok = 0;
            }
        }
        if (bad != (size_t)-1) {
            printf("    %s: %s[%zu] = %.9g, torch %.9g\n", file, name, bad, got[bad], want[bad]);
            ok = 0;
        }
        free(want);
    }
done:
    train_free(t);
    nn_ws_free(ws);
    nn_optim_deinit(&o);
    nn_model_free(m);
    free(x), free(lab), free(losses), free(grads);
    st_free(&f);
    return ok;
}

static const char *replays[] = {"cnn_adam.safetensors", "cnn_sgd.safetensors",
                                "cnn_sgd_plain.safetensors", "cnn_adam_wd.safetensors"};

TEST(optim_pytorch_replay_manual_loop)
{
    for (int i = 0; i < 4; i++)
        CHECK_MSG(replay_ok(replays[i], REPLAY_MANUAL, 1), "%s via nn_optim_step", replays[i]);
}

TEST(optim_pytorch_replay_trainer)
{
    for (int i = 0; i < 4; i++)
        CHECK_MSG(replay_ok(replays[i], REPLAY_TRAINER, 1), "%s via train_step", replays[i]);
}

TEST(optim_replay_catches_a_wrong_optimizer)
{
    /* the tolerance policy must be tight enough to tell the optimizers apart: replaying
     * cnn_sgd (Nesterov, wd 1e-3) without Nesterov must fail */
    st_file f;
    CHECK(fx_open(&f, "cnn_sgd.safetensors") == 0);
    nn_model *m;
    CHECK(nn_model_from_file(FX_CNN_SPEC, NULL, &m) == 0);
    CHECK(fx_load_params(m, &f, "init.") == 0);
    float *x = FX_GET(&f, "x", NULL, 4, 20, 1, 28, 28), *lab = FX_GET(&f, "labels", NULL, 1, 20);
    float *want = FX_GET(&f, "final.fc1.weight", NULL, 2, 120, 192);
    CHECK(x && lab && want);
    uint8_t y[20];
    CHECK(fx_labels(lab, 20, y) == 0);
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_SGD);
    c.lr = 0.05f;
    c.momentum = 0.9f;
    c.weight_decay = 1e-3f; /* nesterov left off */
    train_ctx *t;
    CHECK(train_create(m, &c, 4, 1, &t) == 0);
    for (int s = 0; s < 5; s++)
        train_step(t, x + (size_t)s * 4 * 784, y + 4 * s, 4, 0, NULL, NULL);
    const nn_param *p = nn_model_param(m, "fc1.weight");
    size_t bad = t_allclose(m->params + p->off, want, p->n, 1e-3, 1e-5);
    train_free(t);
    nn_model_free(m);
    free(x), free(lab), free(want);
    st_free(&f);
    CHECK(bad != (size_t)-1);
}

/* ---- configuration ------------------------------------------------------------------------ */

TEST(optim_config_validation)
{
    nn_optim_cfg ok = nn_optim_defaults(NN_OPT_SGD);
    CHECK_EQ_INT(nn_optim_check(&ok), 0);
    struct {
        nn_optim_cfg c;
        const char *needle;
    } bad[] = {
        {{.kind = NN_OPT_SGD, .lr = -1.0f}, "learning rate"},
        {{.kind = NN_OPT_SGD, .lr = 0.0f}, "learning rate"},
        {{.kind = NN_OPT_SGD, .lr = NAN}, "learning rate"},
        {{.kind = NN_OPT_SGD, .lr = INFINITY}, "learning rate"},
        {{.kind = NN_OPT_SGD, .lr = 0.1f, .momentum = -0.1f}, "momentum"},
        {{.kind = NN_OPT_SGD, .lr = 0.1f, .momentum = 1.0f}, "momentum"},
        {{.kind = NN_OPT_SGD, .lr = 0.1f, .momentum = NAN}, "momentum"},
        {{.kind = NN_OPT_SGD, .lr = 0.1f, .nesterov = 1}, "nesterov"},
        {{.kind = NN_OPT_SGD, .lr = 0.1f, .weight_decay = -1e-4f}, "weight decay"},
        {{.kind = NN_OPT_SGD, .lr = 0.1f, .weight_decay = NAN}, "weight decay"},
        {{.kind = NN_OPT_ADAM, .lr = 0.1f, .beta1 = 1.0f, .beta2 = 0.999f, .eps = 1e-8f}, "betas"},
        {{.kind = NN_OPT_ADAM, .lr = 0.1f, .beta1 = 0.9f, .beta2 = -0.5f, .eps = 1e-8f}, "betas"},
        {{.kind = NN_OPT_ADAM, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 0.0f}, "eps"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        af_clearerr();
        CHECK_MSG(nn_optim_check(&bad[i].c) == AF_ERANGE && strstr(af_errmsg(), bad[i].needle),
                  "case %zu: rc %d, message '%s' (want AF_ERANGE and '%s')", i,
                  nn_optim_check(&bad[i].c), af_errmsg(), bad[i].needle);
        nn_optim o;
        memset(&o, 0x5a, sizeof o);
        CHECK_EQ_INT(nn_optim_init(&o, &bad[i].c, 100), AF_ERANGE);
        CHECK(o.m == NULL && o.v == NULL); /* nothing allocated, safe to deinit */
        nn_optim_deinit(&o);
    }
    /* trainers refuse a bad config too */
    nn_model *m;
    CHECK(nn_model_from_file(FX_CNN_SPEC, NULL, &m) == 0);
    train_ctx *t = (train_ctx *)1;
    CHECK_EQ_INT(train_create(m, &bad[0].c, 10, 1, &t), AF_ERANGE);
    CHECK(t == NULL);
    nn_model_free(m);
}

TEST(optim_defaults_and_kinds)
{
    nn_optim_cfg s = nn_optim_defaults(NN_OPT_SGD), a = nn_optim_defaults(NN_OPT_ADAM);
    CHECK(s.kind == NN_OPT_SGD && a.kind == NN_OPT_ADAM);
    CHECK_NEAR(s.lr, 0.01, 1e-9);
    CHECK_NEAR(a.lr, 0.001, 1e-9);
    CHECK(s.momentum == 0.0f && !s.nesterov && s.weight_decay == 0.0f);
    CHECK_NEAR(a.beta1, 0.9, 1e-7);
    CHECK_NEAR(a.beta2, 0.999, 1e-7);
    CHECK_NEAR(a.eps, 1e-8, 1e-15);
    nn_opt_kind k = (nn_opt_kind)99;
    CHECK(nn_optim_parse_kind("sgd", &k) == 0 && k == NN_OPT_SGD);
    CHECK(nn_optim_parse_kind("adam", &k) == 0 && k == NN_OPT_ADAM);
    CHECK_EQ_INT(nn_optim_parse_kind("foo", &k), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "'foo'") && strstr(af_errmsg(), "sgd, adam"));
    CHECK_EQ_INT(nn_optim_parse_kind("", &k), AF_EINVAL);
    CHECK(k == NN_OPT_ADAM); /* unchanged by the failures */
}

TEST(optim_reset_forgets_state)
{
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_ADAM);
    nn_optim o, fresh;
    CHECK(nn_optim_init(&o, &c, 5) == 0);
    CHECK(nn_optim_init(&fresh, &c, 5) == 0);
    float p[5] = {1, 2, 3, 4, 5}, q[5], g[5] = {0.1f, -0.2f, 0.3f, -0.4f, 0.5f};
    for (int t = 0; t < 3; t++)
        nn_optim_step(&o, p, g);
    nn_optim_reset(&o);
    CHECK_EQ_INT(o.step, 0);
    for (int i = 0; i < 5; i++)
        CHECK(o.m[i] == 0.0f && o.v[i] == 0.0f);
    memcpy(q, p, sizeof p);
    nn_optim_step(&o, p, g);
    nn_optim_step(&fresh, q, g);
    CHECK(memcmp(p, q, sizeof p) == 0);
    nn_optim_deinit(&o);
    nn_optim_deinit(&fresh);
    /* plain SGD keeps no state at all */
    c = nn_optim_defaults(NN_OPT_SGD);
    CHECK(nn_optim_init(&o, &c, 5) == 0);
    CHECK(o.m == NULL && o.v == NULL);
    nn_optim_reset(&o);
    nn_optim_deinit(&o);
}
