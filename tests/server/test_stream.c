/* test_stream.c — streaming folds of report bodies (upload.h's sink): an update folded slice
 * by slice as its bytes arrive — in 1-byte, 7-byte or whole pieces, tensors in or out of the
 * spec's order — leaves the accumulator and the applied model bitwise as fed_agg_add of the
 * whole update; a refused upload (over the norm mid-stream, bad metadata at the end, or a
 * request that just ends) is subtracted back out and leaves the sums bitwise unchanged.
 * Test code only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "core/err.h"
#include "core/rng.h"
#include "fed/strategy.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"
#include "server/upload.h"
#include "testsrv.h"

#define SPEC_S                                                                                \
    "{\"input\":[1,6,6],\"classes\":3,\"layers\":[{\"type\":\"conv2d\",\"name\":\"c\","         \
    "\"out_channels\":2,\"kernel\":3},{\"type\":\"flatten\"},{\"type\":\"linear\",\"name\":"   \
    "\"fc\",\"in_features\":32,\"out_features\":3}]}"

typedef struct sink_ctx {
    fed_agg *a;
    int slices, released;
} sink_ctx;

static int t_fold(void *ctx, size_t off, const float *x, size_t n, double w, double tau, int sub)
{
    sink_ctx *s = ctx;
    fed_extra ex = {NULL, tau};
    s->slices++;
    return sub ? fed_agg_sub_slice(s->a, FED_AGG_DELTA, off, x, n, w, &ex)
               : fed_agg_add_slice(s->a, FED_AGG_DELTA, off, x, n, w, &ex);
}

static void t_release(void *ctx, srv_upload *u)
{
    sink_ctx *s = ctx;
    s->released++;
    srv_upload_unfold(u);
}

/* A body of m's tensors holding d, in spec order or reversed; metadata k/v. */
static uint8_t *make_body(const nn_model *m, const float *d, int reverse, const char **k,
                          const char **v, int nkv, size_t *len)
{
    st_out_tensor t[8];
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[reverse ? m->n_params_t - 1 - i : i];
        t[i].name = p->name;
        t[i].ndim = p->ndim;
        for (int j = 0; j < p->ndim; j++)
            t[i].shape[j] = p->shape[j];
        t[i].data = d + p->off;
    }
    uint8_t *b = NULL;
    if (st_serialize(t, m->n_params_t, k, v, nkv, &b, len))
        return NULL;
    return b;
}

/* Feeds body in pieces of `step` bytes (0: whole); the first refusal status, or 0. */
static int feed(srv_upload *u, const uint8_t *b, size_t len, size_t step, srv_reply *r)
{
    for (size_t off = 0; off < len;) {
        size_t k = step ? step : len;
        k = k < len - off ? k : len - off;
        int st = srv_upload_feed(u, b + off, k, r);
        if (st)
            return st;
        off += k;
    }
    return 0;
}

static int same_data(fed_agg *a, const uint8_t *snap, size_t bytes)
{
    size_t nb = 0;
    const void *p = fed_agg_data(a, &nb);
    return nb == bytes && memcmp(p, snap, bytes) == 0;
}

TEST(stream_fold_in_any_pieces_is_fed_agg_add)
{
    nn_model *m = NULL;
    CHECK(nn_model_from_json(SPEC_S, "spec", NULL, &m) == 0);
    size_t n = m->n_params;
    float *d0 = malloc(n * sizeof *d0), *d = malloc(n * sizeof *d);
    float *w_ref = malloc(n * sizeof *w_ref), *w_got = malloc(n * sizeof *w_got);
    af_rng rng;
    af_rng_seed(&rng, 11, 3);
    for (size_t i = 0; i < n; i++) { /* many magnitudes: rounding would show */
        d0[i] = (float)(0.3 * af_rng_normal(&rng));
        d[i] = (float)(ldexp(af_rng_normal(&rng), (int)af_rng_below(&rng, 30) - 20));
    }
    const char *k[] = {"attempt", "num_samples"}, *v[] = {"1", "12.5"};
    fed_strategy *s_ref = NULL, *s_got = NULL;
    fed_agg *ref = NULL;
    CHECK(fed_strategy_create("fedavg", NULL, n, &s_ref) == 0);
    CHECK(fed_strategy_create("fedavg", NULL, n, &s_got) == 0);
    CHECK(fed_agg_create(s_ref, &ref) == 0);
    /* the reference: an earlier update, then this one whole */
    CHECK(fed_agg_add(ref, d0, 3.0, NULL) == 0 && fed_agg_add(ref, d, 12.5, NULL) == 0);
    size_t bytes = 0;
    const void *refdata = fed_agg_data(ref, &bytes);
    memcpy(w_ref, m->params, n * sizeof *w_ref);
    CHECK(fed_strategy_apply(s_ref, ref, w_ref) == 0);
    size_t steps[] = {0, 1, 7};
    for (int rev = 0; rev < 2; rev++) {
        size_t len;
        uint8_t *body = make_body(m, d, rev, k, v, 2, &len);
        CHECK(body != NULL);
        for (int si = 0; si < 3; si++) {
            sink_ctx sc = {0};
            CHECK(fed_agg_create(s_got, &sc.a) == 0);
            CHECK(fed_agg_add(sc.a, d0, 3.0, NULL) == 0);
            srv_upload_rules rules = {m, 1e9, 0, 1 << 20, len, 0};
            srv_upload_sink sink = {t_fold, t_release, &sc, 0};
            srv_upload *u;
            srv_reply r = {0};
            srv_update up;
            CHECK(srv_upload_create(&rules, t_tmpdir(), NULL, &u) == 0);
            CHECK(srv_upload_attach(u, &sink) == 0);
            CHECK_MSG(feed(u, body, len, steps[si], &r) == 0, "step %zu: %s", steps[si], r.msg);
            CHECK_MSG(srv_upload_finish(u, &up, &r) == 0, "%s", r.msg);
            CHECK(sc.slices >= m->n_params_t); /* at least one slice per tensor */
            CHECK(fed_agg_finish_update(sc.a, up.num_samples, NULL) == 0);
            srv_upload_detach(u);
            srv_upload_free(u);
            CHECK_EQ_INT(sc.released, 0);
            CHECK_MSG(same_data(sc.a, refdata, bytes), "reverse %d step %zu: sums differ", rev,
                      steps[si]);
            /* the applied model (the checkpoint's floats): bitwise the same */
            fed_strategy_free(s_got);
            s_got = NULL;
            CHECK(fed_strategy_create("fedavg", NULL, n, &s_got) == 0);
            memcpy(w_got, m->params, n * sizeof *w_got);
            CHECK(fed_strategy_apply(s_got, sc.a, w_got) == 0);
            CHECK(memcmp(w_got, w_ref, n * sizeof *w_ref) == 0);
            fed_agg_free(sc.a);
        }
        free(body);
    }
    fed_agg_free(ref);
    fed_strategy_free(s_ref);
    fed_strategy_free(s_got);
    free(d0);
    free(d);
    free(w_ref);
    free(w_got);
    nn_model_free(m);
}

TEST(stream_refused_upload_leaves_the_sums_bitwise_unchanged)
{
    nn_model *m = NULL;
    CHECK(nn_model_from_json(SPEC_S, "spec", NULL, &m) == 0);
    size_t n = m->n_params;
    float *d0 = malloc(n * sizeof *d0), *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) {
        d0[i] = (float)(0.01 * (double)i - 0.3);
        d[i] = (float)(0.5 + 0.001 * (double)i);
    }
    fed_strategy *s = NULL;
    CHECK(fed_strategy_create("fedavg", NULL, n, &s) == 0);
    sink_ctx sc = {0};
    CHECK(fed_agg_create(s, &sc.a) == 0);
    CHECK(fed_agg_add(sc.a, d0, 7.0, NULL) == 0);
    size_t bytes = 0;
    const void *data = fed_agg_data(sc.a, &bytes);
    uint8_t *snap = malloc(bytes);
    memcpy(snap, data, bytes);
    srv_upload_sink sink = {t_fold, t_release, &sc, 0};
    srv_reply r = {0};
    srv_update up;
    srv_upload *u;
    for (int rev = 0; rev < 2; rev++) {
        /* over the norm part-way: ||d|| ≈ 0.5·sqrt(n) ≈ 8; the limit 3 is crossed mid-stream */
        const char *k[] = {"attempt", "num_samples"}, *v[] = {"1", "4"};
        size_t len;
        uint8_t *body = make_body(m, d, rev, k, v, 2, &len);
        CHECK(body != NULL);
        srv_upload_rules rules = {m, 3.0, 0, 1 << 20, len, 0};
        CHECK(srv_upload_create(&rules, t_tmpdir(), NULL, &u) == 0);
        CHECK(srv_upload_attach(u, &sink) == 0);
        CHECK_EQ_INT(feed(u, body, len, 7, &r), 400);
        CHECK(strcmp(r.code, "over_norm") == 0);
        CHECK(!same_data(sc.a, snap, bytes)); /* some slices went in before the refusal */
        CHECK(srv_upload_unfold(u) == 0);
        CHECK(same_data(sc.a, snap, bytes));
        srv_upload_detach(u);
        srv_upload_free(u);
        free(body);
        /* refused at the end (metadata), after every float went in */
        const char *k2[] = {"attempt", "num_samples", "eval_confusion"};
        const char *v2[] = {"1", "4", "[[1,2]]"};
        body = make_body(m, d, rev, k2, v2, 3, &len);
        CHECK(body != NULL);
        rules = (srv_upload_rules){m, 1e9, 0, 1 << 20, len, 0};
        CHECK(srv_upload_create(&rules, t_tmpdir(), NULL, &u) == 0);
        CHECK(srv_upload_attach(u, &sink) == 0);
        CHECK_EQ_INT(feed(u, body, len, 1, &r), 0);
        CHECK_EQ_INT(srv_upload_finish(u, &up, &r), 400);
        CHECK(strcmp(r.code, "bad_field") == 0);
        CHECK(srv_upload_unfold(u) == 0);
        CHECK(same_data(sc.a, snap, bytes));
        srv_upload_detach(u);
        srv_upload_free(u);
        /* a request that ends half-way without a finish: freed attached, the sink's release
         * takes it back out */
        CHECK(srv_upload_create(&rules, t_tmpdir(), NULL, &u) == 0);
        CHECK(srv_upload_attach(u, &sink) == 0);
        CHECK_EQ_INT(feed(u, body, len / 2 + 3, 7, &r), 0);
        CHECK(!same_data(sc.a, snap, bytes));
        int before = sc.released;
        srv_upload_free(u);
        CHECK_EQ_INT(sc.released, before + 1);
        CHECK(same_data(sc.a, snap, bytes));
        free(body);
    }
    /* num_samples must be in the header for the fold's weight: refused there */
    const char *k3[] = {"attempt"}, *v3[] = {"1"};
    size_t len;
    uint8_t *body = make_body(m, d, 0, k3, v3, 1, &len);
    srv_upload_rules rules = {m, 1e9, 0, 1 << 20, len, 0};
    CHECK(srv_upload_create(&rules, t_tmpdir(), NULL, &u) == 0);
    CHECK(srv_upload_attach(u, &sink) == 0);
    CHECK_EQ_INT(feed(u, body, len, 0, &r), 400);
    CHECK(strcmp(r.code, "bad_field") == 0 && strstr(r.msg, "num_samples"));
    CHECK(same_data(sc.a, snap, bytes));
    srv_upload_detach(u);
    srv_upload_free(u);
    /* a sink needs a spooled upload */
    CHECK(srv_upload_create(&rules, NULL, d0, &u) == 0);
    CHECK(srv_upload_attach(u, &sink) == AF_ESTATE);
    srv_upload_free(u);
    free(body);
    free(snap);
    fed_agg_free(sc.a);
    fed_strategy_free(s);
    free(d0);
    free(d);
    nn_model_free(m);
}

static long post(const ts_server *t, const char *dev, const uint8_t *b, size_t len)
{
    ts_resp r;
    long st = ts_report(t, dev, 1, 1, b, len, &r) == 0 ? r.status : -1;
    ts_resp_free(&r);
    return st;
}

/* Through the server: refused reports (over the norm mid-stream, a wrong attempt and a
 * duplicate after the whole body was folded) leave the committed checkpoint bitwise the
 * FedAvg of the accepted ones. */
TEST(stream_refused_reports_do_not_reach_the_checkpoint)
{
    ts_server t;
    char key[80], db[600], a[80], b[80];
    snprintf(db, sizeof db, "%s/s.db", t_tmpdir());
    CHECK(ts_start(&t, db, NULL) == 0 && ts_owner(&t, "acme", key) == 0);
    CHECK(ts_project(&t, key, TS_TOY_SPEC, "{\"rounds\":2,\"devices_per_round\":2,"
                                           "\"min_reports\":2,\"over_selection\":1,"
                                           "\"round_deadline_s\":120,\"max_update_norm\":2,"
                                           "\"dataset\":\"toy\"}") == 1);
    CHECK(ts_device(&t, TS_TOY_SCHEMA, a, NULL) == 0 && ts_device(&t, TS_TOY_SCHEMA, b, NULL) == 0);
    CHECK_EQ_INT(ts_checkin(&t, a, NULL, NULL, NULL), 1);
    CHECK_EQ_INT(ts_checkin(&t, b, NULL, NULL, NULL), 1);
    nn_model *w0 = ts_checkpoint(&t, key, 1, 0);
    CHECK(w0 != NULL);
    size_t n = w0->n_params;
    float da[64], db_[64], big[64];
    for (size_t i = 0; i < n; i++) {
        da[i] = (float)(0.01 * (double)i - 0.07);
        db_[i] = (float)(0.003 * (double)(i * i % 11) - 0.01);
        big[i] = 0.9f; /* ||big|| ≈ 3.5 > 2 */
    }
    const char *k[] = {"attempt", "num_samples"};
    const char *va[] = {"1", "5"}, *vb[] = {"1", "9"}, *vbad[] = {"2", "9"};
    uint8_t *ba, *bb, *bbig, *bwrong;
    size_t la, lb, lbig, lwrong;
    CHECK(ts_update(w0, da, k, va, 2, &ba, &la) == 0 && ts_update(w0, db_, k, vb, 2, &bb, &lb) == 0);
    CHECK(ts_update(w0, big, k, va, 2, &bbig, &lbig) == 0);
    CHECK(ts_update(w0, db_, k, vbad, 2, &bwrong, &lwrong) == 0);
    CHECK_EQ_INT(post(&t, a, bbig, lbig), 400);   /* over_norm */
    CHECK_EQ_INT(post(&t, b, bwrong, lwrong), 409); /* attempt 2 does not exist */
    CHECK_EQ_INT(post(&t, b, bb, lb), 200);
    CHECK_EQ_INT(post(&t, b, bb, lb), 409);       /* duplicate */
    CHECK_EQ_INT(post(&t, a, ba, la), 200);       /* the goal: commits */
    nn_model *w1 = ts_checkpoint(&t, key, 1, -1);
    CHECK(w1 != NULL);
    fed_strategy *s;
    fed_agg *g;
    CHECK(fed_strategy_create("fedavg", NULL, n, &s) == 0 && fed_agg_create(s, &g) == 0);
    CHECK(fed_agg_add(g, da, 5, NULL) == 0 && fed_agg_add(g, db_, 9, NULL) == 0);
    float want[64];
    memcpy(want, w0->params, n * sizeof *want);
    CHECK(fed_strategy_apply(s, g, want) == 0);
    CHECK(w1 && memcmp(w1->params, want, n * sizeof *want) == 0);
    fed_agg_free(g);
    fed_strategy_free(s);
    free(ba);
    free(bb);
    free(bbig);
    free(bwrong);
    nn_model_free(w0);
    nn_model_free(w1);
    ts_stop(&t);
}
