/* test_train.c — tests for train/train: one step on 1, 2 and 3 threads gives the same loss
 * and parameters to float rounding, and bit-identical results on repeat for a fixed thread
 * count (also for batches that do not split evenly); a few hundred steps on 2,000
 * Fashion-MNIST images lower the loss; train_epoch's step/sample accounting, early stop and
 * reproducibility; evaluation (confusion matrix, accuracy, loss, index views, threads);
 * per-class P/R/F1 by hand; the FedProx and SCAFFOLD gradient terms; argument checks.
 * Threaded bodies run under a watchdog so a deadlock fails a test instead of the suite.
 */
#include "../test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/watchdog.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "nn/model.h"
#include "train/train.h"

#define CNN_SPEC "models/fashion_cnn.json"

static nn_model *tutorial(uint64_t seed)
{
    nn_model *m;
    if (nn_model_from_file(CNN_SPEC, NULL, &m))
        return NULL;
    nn_model_init(m, seed);
    return m;
}

/* A synthetic Fashion-MNIST-shaped dataset: n samples of uniform noise with labels that
 * depend on the mean of the first row (so there is something to learn). */
static data_dataset *synth(size_t n, uint64_t seed)
{
    data_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return NULL;
    data_schema_fashion_mnist(&ds->schema);
    ds->n = n;
    ds->sample_size = 784;
    ds->x = af_alloc(sizeof(float) * n * 784);
    ds->y = af_alloc(n);
    if (!ds->x || !ds->y) {
        data_dataset_free(ds);
        return NULL;
    }
    af_rng r;
    af_rng_seed(&r, seed, 5);
    for (size_t i = 0; i < n; i++) {
        double row = 0.0;
        for (int k = 0; k < 784; k++) {
            float v = (float)(2.0 * af_rng_uniform(&r) - 1.0);
            ds->x[i * 784 + k] = v;
            row += k < 28 ? v : 0.0;
        }
        int c = (int)floor((row / 28.0 + 1.0) * 5.0);
        ds->y[i] = (uint8_t)(c < 0 ? 0 : c > 9 ? 9 : c);
    }
    return ds;
}

/* ---- threads ------------------------------------------------------------------------------ */

enum { STEPS = 4, MAXB = 12 };

typedef struct run_out {
    double loss[STEPS];
    int correct[STEPS];
    float *params;
} run_out;

/* STEPS train steps of batch b (<= MAXB) with the trainer on `threads` threads. */
static int run_steps(const data_dataset *ds, int threads, int b, run_out *o)
{
    nn_model *m = tutorial(21);
    train_ctx *t = NULL;
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_SGD);
    c.lr = 0.05f;
    c.momentum = 0.9f;
    if (!m || train_create(m, &c, MAXB, threads, &t)) {
        nn_model_free(m);
        return -1;
    }
    for (int s = 0; s < STEPS; s++)
        train_step(t, ds->x + (size_t)s * b * 784, ds->y + s * b, b, (uint64_t)s, &o->loss[s],
                   &o->correct[s]);
    o->params = malloc(sizeof(float) * m->n_params);
    memcpy(o->params, m->params, sizeof(float) * m->n_params);
    train_free(t);
    nn_model_free(m);
    return 0;
}

static void threads_body(t_bounded *tb)
{
    data_dataset *ds = synth(STEPS * MAXB, 1);
    static const int batches[] = {12, 10, 5, 1}; /* chunks of 12/t; uneven; some threads idle */
    run_out one = {0}, many = {0}, again = {0};
    const size_t np = 32998;
    if (!ds) {
        t_bounded_fail(tb, "out of memory");
        return;
    }
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches && !tb->err[0]; bi++) {
        const int b = batches[bi];
        if (run_steps(ds, 1, b, &one)) {
            t_bounded_fail(tb, "trainer: %s", af_errmsg());
            break;
        }
        for (int threads = 2; threads <= 3 && !tb->err[0]; threads++) {
            if (run_steps(ds, threads, b, &many) || run_steps(ds, threads, b, &again)) {
                t_bounded_fail(tb, "trainer: %s", af_errmsg());
                break;
            }
            for (int s = 0; s < STEPS; s++) {
                if (!(fabs(many.loss[s] - one.loss[s]) <= 1e-6 * fabs(one.loss[s])))
                    t_bounded_fail(tb, "batch %d, %d threads, step %d: loss %.12g, 1 thread %.12g",
                                   b, threads, s, many.loss[s], one.loss[s]);
                if (many.correct[s] != one.correct[s])
                    t_bounded_fail(tb, "batch %d, %d threads, step %d: %d correct, 1 thread %d", b,
                                   threads, s, many.correct[s], one.correct[s]);
                if (memcmp(&many.loss[s], &again.loss[s], sizeof(double)) != 0)
                    t_bounded_fail(tb, "batch %d, %d threads, step %d: loss differs on repeat", b,
                                   threads, s);
            }
            size_t bad = t_allclose(many.params, one.params, np, 1e-5, 1e-5);
            if (bad != (size_t)-1)
                t_bounded_fail(tb, "batch %d, %d threads: param %zu = %.9g, 1 thread %.9g", b,
                               threads, bad, many.params[bad], one.params[bad]);
            if (memcmp(many.params, again.params, sizeof(float) * np) != 0)
                t_bounded_fail(tb, "batch %d, %d threads: parameters differ on repeat", b, threads);
            free(many.params), free(again.params);
            many.params = again.params = NULL;
        }
        /* one thread is deterministic too */
        run_out one2 = {0};
        if (run_steps(ds, 1, b, &one2) == 0) {
            if (memcmp(one.params, one2.params, sizeof(float) * np) != 0 ||
                memcmp(one.loss, one2.loss, sizeof one.loss) != 0)
                t_bounded_fail(tb, "batch %d, 1 thread: differs on repeat", b);
            free(one2.params);
        }
        free(one.params);
        one.params = NULL;
    }
    free(one.params), free(many.params), free(again.params);
    data_dataset_free(ds);
}

TEST(train_step_same_result_on_1_2_3_threads) { T_CHECK_BOUNDED(threads_body, NULL, 60.0); }

/* ---- learning on real data ----------------------------------------------------------------- */

TEST(train_loss_decreases_on_fashion_mnist)
{
    data_dataset *ds;
    int rc = data_load_fashion_mnist("fashion-mnist", 1, 0.2860f, 0.3530f, 2000, &ds);
    CHECK_MSG(rc == 0, "Fashion-MNIST is needed (apt-get install dataset-fashion-mnist): %s",
              af_errmsg());
    CHECK_EQ_INT(ds->n, 2000);
    nn_model *m = tutorial(1);
    CHECK(m != NULL);
    train_eval before;
    CHECK(train_evaluate_simple(m, ds, NULL, 0, 1, &before) == 0);
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_ADAM);
    c.lr = 0.01f;
    train_ctx *t;
    CHECK(train_create(m, &c, 50, 1, &t) == 0);
    af_rng r;
    af_rng_seed(&r, 1, 0);
    train_epoch_stats st[5];
    for (int ep = 0; ep < 5; ep++) { /* 5 × 40 = 200 steps */
        train_epoch(t, ds, NULL, 0, 50, &r, 0, NULL, NULL, &st[ep]);
        CHECK_EQ_INT(st[ep].steps, 40);
        CHECK_EQ_INT(st[ep].samples, 2000);
        CHECK(isfinite(st[ep].loss) && st[ep].seconds > 0);
    }
    train_free(t);
    train_eval after;
    CHECK(train_evaluate_simple(m, ds, NULL, 0, 1, &after) == 0);
    /* an untrained 10-class model sits near ln 10 = 2.30 */
    CHECK_MSG(before.loss > 2.0 && before.accuracy < 0.3, "untrained: loss %g, accuracy %g",
              before.loss, before.accuracy);
    CHECK_MSG(st[4].loss < 0.75 * st[0].loss, "epoch losses %g ... %g", st[0].loss, st[4].loss);
    CHECK_MSG(st[4].loss < 0.9, "last epoch loss %g", st[4].loss);
    CHECK_MSG(st[4].accuracy > st[0].accuracy, "training accuracy %g -> %g", st[0].accuracy,
              st[4].accuracy);
    CHECK_MSG(after.loss < 0.8 && after.accuracy > 0.7, "after training: loss %g, accuracy %g",
              after.loss, after.accuracy);
    nn_model_free(m);
    data_dataset_free(ds);
}

/* ---- train_epoch bookkeeping -------------------------------------------------------------- */

static int stop_at_2(void *user, long step, long steps, double loss, double seconds)
{
    (void)steps, (void)loss, (void)seconds;
    int *calls = user;
    ++*calls;
    return step >= 2;
}

TEST(train_epoch_steps_samples_and_reproducibility)
{
    data_dataset *ds = synth(40, 2);
    CHECK(ds != NULL);
    uint32_t idx[25];
    for (int i = 0; i < 25; i++)
        idx[i] = (uint32_t)(39 - i);
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_SGD);
    float *first = NULL;
    for (int rep = 0; rep < 2; rep++) {
        nn_model *m = tutorial(3);
        train_ctx *t;
        CHECK(train_create(m, &c, 10, 1, &t) == 0);
        af_rng r;
        af_rng_seed(&r, 7, 0);
        train_epoch_stats st;
        train_epoch(t, ds, idx, 25, 10, &r, 0, NULL, NULL, &st);
        CHECK_EQ_INT(st.steps, 3); /* 10 + 10 + 5 */
        CHECK_EQ_INT(st.samples, 25);
        CHECK(st.accuracy >= 0.0 && st.accuracy <= 1.0);
        train_epoch(t, ds, NULL, 0, 10, &r, 2, NULL, NULL, &st); /* max_steps */
        CHECK_EQ_INT(st.steps, 2);
        CHECK_EQ_INT(st.samples, 20);
        int calls = 0;
        train_epoch(t, ds, NULL, 0, 8, &r, 0, stop_at_2, &calls, &st); /* callback stops */
        CHECK_EQ_INT(calls, 2);
        CHECK_EQ_INT(st.steps, 2);
        train_epoch(t, ds, NULL, 0, 64, &r, 0, NULL, NULL, &st); /* batch > max_batch: clamped */
        CHECK_EQ_INT(st.steps, 4);
        CHECK_EQ_INT(st.samples, 40);
        if (rep == 0) {
            first = malloc(sizeof(float) * m->n_params);
            memcpy(first, m->params, sizeof(float) * m->n_params);
        } else {
            /* the same seeds give the same run */
            CHECK(memcmp(first, m->params, sizeof(float) * m->n_params) == 0);
        }
        train_free(t);
        nn_model_free(m);
    }
    free(first);
    data_dataset_free(ds);
}

TEST(train_create_checks_arguments)
{
    nn_model *m = tutorial(1);
    CHECK(m != NULL);
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_ADAM);
    train_ctx *t = (train_ctx *)1;
    CHECK_EQ_INT(train_create(m, &c, 10, 0, &t), AF_ERANGE);
    CHECK(t == NULL && strstr(af_errmsg(), "threads"));
    CHECK_EQ_INT(train_create(m, &c, 10, 65, &t), AF_ERANGE);
    CHECK_EQ_INT(train_create(m, &c, 0, 1, &t), AF_ERANGE);
    CHECK(strstr(af_errmsg(), "batch") != NULL);
    c.lr = -1.0f;
    CHECK_EQ_INT(train_create(m, &c, 10, 1, &t), AF_ERANGE);
    CHECK(t == NULL);
    train_free(NULL);
    nn_model_free(m);
}

/* ---- evaluation ---------------------------------------------------------------------------- */

static long trace(const train_eval *e)
{
    long s = 0;
    for (int c = 0; c < e->k; c++)
        s += e->confusion[c * e->k + c];
    return s;
}

static void eval_body(t_bounded *tb)
{
    data_dataset *ds = tb->arg;
    nn_model *m = tutorial(5);
    train_eval one, many;
    /* some training so that predictions are spread over classes */
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_ADAM);
    c.lr = 0.01f;
    train_ctx *t;
    if (!m || train_create(m, &c, 50, 1, &t)) {
        t_bounded_fail(tb, "setup: %s", af_errmsg());
        nn_model_free(m);
        return;
    }
    af_rng r;
    af_rng_seed(&r, 2, 0);
    train_epoch_stats st;
    train_epoch(t, ds, NULL, 0, 50, &r, 10, NULL, NULL, &st);
    train_free(t);
    if (train_evaluate_simple(m, ds, NULL, 0, 1, &one)) {
        t_bounded_fail(tb, "evaluate: %s", af_errmsg());
        goto out;
    }
    long total = 0, rows[10] = {0}, want_rows[10] = {0};
    for (int i = 0; i < 100; i++)
        total += one.confusion[i], rows[i / 10] += one.confusion[i];
    for (size_t i = 0; i < ds->n; i++)
        want_rows[ds->y[i]]++;
    if (one.k != 10 || one.n != ds->n || total != (long)ds->n)
        t_bounded_fail(tb, "k %d, n %zu, confusion sums to %ld (want %zu)", one.k, one.n, total, ds->n);
    if (memcmp(rows, want_rows, sizeof rows) != 0)
        t_bounded_fail(tb, "confusion rows are not the true-class counts");
    if (one.accuracy != (double)trace(&one) / (double)ds->n)
        t_bounded_fail(tb, "accuracy %.17g != trace/n %.17g", one.accuracy, (double)trace(&one) / ds->n);
    if (!(one.loss > 0.0 && isfinite(one.loss)))
        t_bounded_fail(tb, "loss %g", one.loss);
    int cols_used = 0;
    for (int cc = 0; cc < 10; cc++) {
        long col = 0;
        for (int rr = 0; rr < 10; rr++)
            col += one.confusion[rr * 10 + cc];
        cols_used += col > 0;
    }
    if (cols_used < 3)
        t_bounded_fail(tb, "predictions fall in %d classes only: the test would prove little", cols_used);
    for (int threads = 2; threads <= 3; threads++) {
        if (train_evaluate_simple(m, ds, NULL, 0, threads, &many)) {
            t_bounded_fail(tb, "evaluate on %d threads: %s", threads, af_errmsg());
            break;
        }
        if (memcmp(many.confusion, one.confusion, sizeof(long) * 100) != 0 || many.n != one.n)
            t_bounded_fail(tb, "%d threads: a different confusion matrix", threads);
        if (many.accuracy != one.accuracy)
            t_bounded_fail(tb, "%d threads: accuracy %.17g vs %.17g", threads, many.accuracy, one.accuracy);
        /* the loss is a double sum taken per thread, then combined: equal to ~1 ulp */
        if (!(fabs(many.loss - one.loss) <= 1e-12 * one.loss))
            t_bounded_fail(tb, "%d threads: loss %.17g vs %.17g", threads, many.loss, one.loss);
    }
out:
    nn_model_free(m);
}

TEST(train_evaluate_confusion_accuracy_threads)
{
    data_dataset *ds;
    int rc = data_load_fashion_mnist("fashion-mnist", 0, 0.2860f, 0.3530f, 1000, &ds);
    CHECK_MSG(rc == 0, "Fashion-MNIST is needed: %s", af_errmsg());
    T_CHECK_BOUNDED(eval_body, ds, 60.0);
    data_dataset_free(ds);
}

TEST(train_evaluate_index_view_matches_manual)
{
    data_dataset *ds = synth(100, 9);
    nn_model *m = tutorial(9);
    CHECK(ds && m);
    uint32_t idx[33];
    for (int i = 0; i < 33; i++)
        idx[i] = (uint32_t)(3 * i + 1);
    nn_ws *ws[1] = {nn_ws_create(m, 7)}; /* 33 = 4·7 + 5: a partial last batch */
    CHECK(ws[0] != NULL);
    train_eval e;
    CHECK(train_evaluate(m, ws, NULL, ds, idx, 33, &e) == 0);
    /* the same by hand, batch by batch */
    long conf[100] = {0};
    double loss = 0.0;
    float x[7 * 784];
    uint8_t y[7];
    for (int lo = 0; lo < 33; lo += 7) {
        int b = 33 - lo < 7 ? 33 - lo : 7;
        data_gather(ds, idx + lo, (size_t)b, x, y);
        const float *z = nn_forward(m, ws[0], x, b, 0, 0);
        loss += tn_softmax_xent(b, 10, z, y, 0.0f, NULL, NULL);
        for (int s = 0; s < b; s++) {
            int am = 0;
            for (int k = 1; k < 10; k++)
                am = z[s * 10 + k] > z[s * 10 + am] ? k : am;
            conf[y[s] * 10 + am]++;
        }
    }
    CHECK_EQ_INT(e.n, 33);
    CHECK(memcmp(conf, e.confusion, sizeof conf) == 0);
    CHECK_NEAR(e.loss, loss / 33, 1e-9);
    CHECK(e.accuracy == (double)trace(&e) / 33.0);
    /* a model whose input does not fit the dataset */
    nn_model *small;
    CHECK(nn_model_from_json("{\"input\":[10],\"layers\":[{\"type\":\"linear\",\"name\":\"fc\","
                             "\"out_features\":10}]}", "small", NULL, &small) == 0);
    nn_ws *ws2[1] = {nn_ws_create(small, 4)};
    CHECK_EQ_INT(train_evaluate(small, ws2, NULL, ds, NULL, 0, &e), AF_ESHAPE);
    CHECK(strstr(af_errmsg(), "784") != NULL);
    nn_ws_free(ws2[0]);
    nn_model_free(small);
    /* more classes than the evaluation supports */
    nn_model *wide;
    CHECK(nn_model_from_json("{\"input\":[1,28,28],\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\","
                             "\"name\":\"fc\",\"out_features\":100}]}", "wide", NULL, &wide) == 0);
    CHECK_EQ_INT(train_evaluate_simple(wide, ds, NULL, 0, 1, &e), AF_ERANGE);
    nn_model_free(wide);
    nn_ws_free(ws[0]);
    nn_model_free(m);
    data_dataset_free(ds);
}

TEST(train_eval_prf_by_hand)
{
    train_eval e;
    memset(&e, 0, sizeof e);
    e.k = 3;
    /* rows: true class, columns: predicted */
    const long conf[9] = {5, 1, 0, 2, 3, 1, 0, 0, 0};
    memcpy(e.confusion, conf, sizeof conf);
    e.n = 12;
    double p[3], r[3], f[3];
    train_eval_prf(&e, p, r, f);
    CHECK_NEAR(p[0], 5.0 / 7.0, 1e-12); /* column 0: 5 + 2 */
    CHECK_NEAR(r[0], 5.0 / 6.0, 1e-12); /* row 0: 5 + 1 */
    CHECK_NEAR(f[0], 2 * (5.0 / 7) * (5.0 / 6) / (5.0 / 7 + 5.0 / 6), 1e-12);
    CHECK_NEAR(p[1], 3.0 / 4.0, 1e-12);
    CHECK_NEAR(r[1], 3.0 / 6.0, 1e-12);
    CHECK_NEAR(f[1], 2 * 0.75 * 0.5 / 1.25, 1e-12);
    /* class 2: predicted once, never true: precision 0, recall 0 (no support), F1 0, no NaN */
    CHECK(p[2] == 0.0 && r[2] == 0.0 && f[2] == 0.0);
}

/* ---- FedProx and SCAFFOLD terms -------------------------------------------------------------- */

TEST(train_prox_and_correction_terms)
{
    data_dataset *ds = synth(8, 4);
    nn_model *a = tutorial(30), *b = tutorial(30);
    CHECK(ds && a && b);
    const size_t n = a->n_params;
    nn_optim_cfg c = nn_optim_defaults(NN_OPT_SGD);
    c.lr = 0.1f;
    float *anchor = malloc(sizeof(float) * n), *corr = malloc(sizeof(float) * n);
    af_rng r;
    af_rng_seed(&r, 4, 4);
    for (size_t i = 0; i < n; i++) {
        anchor[i] = a->params[i] + (float)(af_rng_uniform(&r) - 0.5);
        corr[i] = (float)(0.01 * (af_rng_uniform(&r) - 0.5));
    }
    train_ctx *ta, *tb;
    CHECK(train_create(a, &c, 8, 1, &ta) == 0);
    CHECK(train_create(b, &c, 8, 1, &tb) == 0);
    float *w0 = malloc(sizeof(float) * n);
    memcpy(w0, a->params, sizeof(float) * n);
    /* plain SGD: w' = w - lr (g + mu (w - anchor)), so w'_prox - w'_plain = -lr mu (w - anchor) */
    const float mu = 0.5f;
    train_set_prox(ta, anchor, mu);
    train_step(ta, ds->x, ds->y, 8, 0, NULL, NULL);
    train_step(tb, ds->x, ds->y, 8, 0, NULL, NULL);
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        double want = -(double)c.lr * mu * ((double)w0[i] - anchor[i]);
        double got = (double)a->params[i] - (double)b->params[i];
        ok = fabs(got - want) <= 1e-6 + 1e-5 * fabs(want);
        if (!ok)
            printf("    prox: param %zu moved %.9g more, want %.9g\n", i, got, want);
    }
    CHECK(ok);
    /* off again: mu = 0 leaves the step unchanged */
    memcpy(a->params, b->params, sizeof(float) * n);
    train_set_prox(ta, anchor, 0.0f);
    train_step(ta, ds->x, ds->y, 8, 1, NULL, NULL);
    train_step(tb, ds->x, ds->y, 8, 1, NULL, NULL);
    CHECK(memcmp(a->params, b->params, sizeof(float) * n) == 0);
    /* SCAFFOLD: w'_corr - w'_plain = -lr corr */
    memcpy(w0, b->params, sizeof(float) * n);
    train_set_correction(ta, corr);
    train_step(ta, ds->x, ds->y, 8, 2, NULL, NULL);
    train_step(tb, ds->x, ds->y, 8, 2, NULL, NULL);
    for (size_t i = 0; i < n && ok; i++) {
        double got = (double)a->params[i] - (double)b->params[i], want = -(double)c.lr * corr[i];
        ok = fabs(got - want) <= 1e-6 + 1e-5 * fabs(want);
        if (!ok)
            printf("    correction: param %zu moved %.9g more, want %.9g\n", i, got, want);
    }
    CHECK(ok);
    train_set_correction(ta, NULL);
    /* over many steps a strong proximal term keeps the weights near the anchor */
    memcpy(a->params, anchor, sizeof(float) * n);
    memcpy(b->params, anchor, sizeof(float) * n);
    train_set_prox(ta, anchor, 5.0f);
    for (int s = 0; s < 20; s++) {
        train_step(ta, ds->x, ds->y, 8, (uint64_t)s, NULL, NULL);
        train_step(tb, ds->x, ds->y, 8, (uint64_t)s, NULL, NULL);
    }
    double da = 0.0, db = 0.0;
    for (size_t i = 0; i < n; i++) {
        da += ((double)a->params[i] - anchor[i]) * ((double)a->params[i] - anchor[i]);
        db += ((double)b->params[i] - anchor[i]) * ((double)b->params[i] - anchor[i]);
    }
    CHECK_MSG(db > 0.0 && da < 0.5 * db, "distance to the anchor: %g with prox, %g without",
              sqrt(da), sqrt(db));
    train_free(ta);
    train_free(tb);
    free(anchor), free(corr), free(w0);
    nn_model_free(a);
    nn_model_free(b);
    data_dataset_free(ds);
}
