/* test_upload.c — the streaming validator of update bodies: any chunking gives the same
 * result as one piece, refusals come with the byte that causes them (not at the end),
 * tensors stored out of order land at their parameters, and the body comes back byte for
 * byte for the attempt log (from the spool file) with the floats in parameter
 * order for the fold. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "../test.h"
#include "core/rng.h"
#include "nn/safetensors.h"
#include "server/upload.h"
#include "testsrv.h"

/* conv1-like and fc-like tensors: several parameters, float data not 8-aligned to chunks */
#define SPEC2                                                                                 \
    "{\"input\":[1,6,6],\"classes\":3,\"layers\":[{\"type\":\"conv2d\",\"name\":\"c\","         \
    "\"out_channels\":2,\"kernel\":3},{\"type\":\"flatten\"},{\"type\":\"linear\",\"name\":"   \
    "\"fc\",\"in_features\":32,\"out_features\":3}]}"

/* The body srv_upload_body describes, reassembled; and the floats of srv_upload_delta. */
static int replay(srv_upload *u, uint8_t *copy, size_t len, float *scratch, const float **delta)
{
    struct iovec iov[3];
    int n, fd;
    size_t fd_len, at = 0;
    srv_upload_body(u, iov, &n, &fd, &fd_len);
    for (int i = 0; i < n; i++) {
        if (at + iov[i].iov_len > len)
            return -1;
        memcpy(copy + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    if (at + fd_len != len || (fd_len && pread(fd, copy + at, fd_len, 0) != (ssize_t)fd_len))
        return -1;
    return srv_upload_delta(u, scratch, delta);
}

static uint8_t *body_for(const nn_model *m, const float *d, const char *samples, size_t *len)
{
    const char *k[] = {"attempt", "num_samples", "eval_confusion"};
    const char *v[] = {"1", samples, "[[1,0,0],[0,2,0],[0,0,3]]"};
    uint8_t *b = NULL;
    ts_update(m, d, k, v, 3, &b, len);
    return b;
}

TEST(upload_any_chunking_gives_the_same_update)
{
    nn_model *m = NULL;
    CHECK(nn_model_from_json(SPEC2, "spec2", NULL, &m) == 0);
    size_t n = m->n_params;
    float *d = malloc(n * sizeof *d), *got = malloc(n * sizeof *got), *back = malloc(n * sizeof *back);
    af_rng rng;
    af_rng_seed(&rng, 7, 1);
    for (size_t i = 0; i < n; i++)
        d[i] = (float)(0.01 * af_rng_normal(&rng));
    size_t len;
    uint8_t *body = body_for(m, d, "12.5", &len);
    CHECK(body != NULL);
    srv_upload_rules rules = {m, 1e9, 0, 1 << 20, len, 0};
    size_t steps[] = {1, 3, 7, 4096, 0};
    for (int s = 0; steps[s] || s == 4; s++) {
        memset(got, 0, n * sizeof *got);
        srv_upload *u;
        const char *dir = s % 2 ? t_tmpdir() : NULL; /* spool and direct modes */
        CHECK(srv_upload_create(&rules, dir, dir ? NULL : got, &u) == 0);
        srv_reply r = {0};
        for (size_t off = 0; off < len;) {
            size_t k = steps[s] ? steps[s] : 1 + af_rng_below(&rng, 97); /* 0: random pieces */
            k = k < len - off ? k : len - off;
            CHECK_MSG(srv_upload_feed(u, body + off, k, &r) == 0, "step %zu: %s", steps[s], r.msg);
            off += k;
        }
        srv_update up;
        CHECK_MSG(srv_upload_finish(u, &up, &r) == 0, "%s", r.msg);
        CHECK(up.attempt == 1 && up.num_samples == 12.5 && isnan(up.loss));
        CHECK(up.eval_samples == 6 && up.confusion && up.confusion[4] == 2);
        CHECK_EQ_INT(srv_upload_len(u), len);
        if (dir) { /* the body for the log, the floats for the fold */
            uint8_t *copy = malloc(len);
            const float *delta = NULL;
            CHECK(replay(u, copy, len, back, &delta) == 0);
            CHECK(memcmp(copy, body, len) == 0);
            CHECK(delta && memcmp(delta, d, n * sizeof *d) == 0);
            free(copy);
        } else {
            CHECK(memcmp(got, d, n * sizeof *d) == 0);
        }
        srv_upload_free(u);
        if (!steps[s])
            break;
    }
    free(body);
    free(d);
    free(got);
    free(back);
    nn_model_free(m);
}

TEST(upload_refuses_at_the_offending_byte)
{
    nn_model *m = NULL;
    CHECK(nn_model_from_json(SPEC2, "spec2", NULL, &m) == 0);
    size_t n = m->n_params, len;
    float *d = calloc(n, sizeof *d);
    d[n - 1] = NAN; /* the very last value */
    uint8_t *body = body_for(m, d, "1", &len);
    srv_upload_rules rules = {m, 1e9, 0, 1 << 20, len, 0};
    srv_upload *u;
    srv_reply r = {0};
    CHECK(srv_upload_create(&rules, NULL, d, &u) == 0);
    CHECK_EQ_INT(srv_upload_feed(u, body, len - 4, &r), 0); /* all but the NaN: fine so far */
    CHECK_EQ_INT(srv_upload_feed(u, body + len - 4, 4, &r), 400);
    CHECK(strcmp(r.code, "non_finite") == 0 && strstr(r.msg, "'fc.bias'") && strstr(r.msg, "NaN"));
    srv_update up;
    CHECK_EQ_INT(srv_upload_finish(u, &up, &r), 400); /* the refusal sticks */
    CHECK(strcmp(r.code, "non_finite") == 0);
    srv_upload_free(u);
    free(body);
    /* over the norm: refused while the data streams, long before the end */
    for (size_t i = 0; i < n; i++)
        d[i] = 1.0f;
    body = body_for(m, d, "1", &len);
    rules.max_norm = 3;
    rules.body_len = len;
    CHECK(srv_upload_create(&rules, NULL, d, &u) == 0);
    size_t hdr = len - n * sizeof(float), off = 0;
    int st = 0;
    while (!st && off < len) {
        st = srv_upload_feed(u, body + off, 8, &r);
        off += 8;
    }
    CHECK_EQ_INT(st, 400);
    CHECK(strcmp(r.code, "over_norm") == 0);
    CHECK_MSG(off <= hdr + 16 * sizeof(float), "refused only at byte %zu of %zu", off, len);
    srv_upload_free(u);
    free(body);
    /* a header whose JSON is followed by junk inside its declared length */
    memset(d, 0, n * sizeof *d);
    uint8_t *good = body_for(m, d, "1", &len);
    uint64_t h;
    memcpy(&h, good, 8);
    size_t json = (size_t)h;
    while (good[8 + json - 1] == ' ')
        json--;
    uint64_t h2 = json + 2; /* the JSON, then " x" */
    size_t data = len - 8 - (size_t)h;
    len = 8 + (size_t)h2 + data;
    body = malloc(len);
    memcpy(body, &h2, 8);
    memcpy(body + 8, good + 8, json);
    memcpy(body + 8 + json, " x", 2);
    memcpy(body + 8 + h2, good + 8 + h, data);
    free(good);
    rules.max_norm = 1e9;
    rules.body_len = len;
    CHECK(srv_upload_create(&rules, NULL, d, &u) == 0);
    CHECK_EQ_INT(srv_upload_feed(u, body, len, &r), 400);
    CHECK(strcmp(r.code, "bad_safetensors") == 0 && strstr(r.msg, "after the header"));
    srv_upload_free(u);
    free(body);
    free(d);
    nn_model_free(m);
}

TEST(upload_places_tensors_stored_out_of_order)
{
    nn_model *m = NULL;
    CHECK(nn_model_from_json(SPEC2, "spec2", NULL, &m) == 0);
    size_t n = m->n_params;
    float *d = malloc(n * sizeof *d), *got = calloc(n, sizeof *got);
    for (size_t i = 0; i < n; i++)
        d[i] = (float)i;
    /* the same tensors written in reverse order: data offsets differ from the model's */
    st_out_tensor t[4];
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[m->n_params_t - 1 - i];
        t[i].name = p->name;
        t[i].ndim = p->ndim;
        for (int k = 0; k < p->ndim; k++)
            t[i].shape[k] = p->shape[k];
        t[i].data = d + p->off;
    }
    const char *k[] = {"attempt", "num_samples"}, *v[] = {"3", "2"};
    uint8_t *body;
    size_t len;
    CHECK(st_serialize(t, m->n_params_t, k, v, 2, &body, &len) == 0);
    srv_upload_rules rules = {m, 1e9, 0, 1 << 20, len, 0};
    srv_upload *u;
    srv_reply r = {0};
    srv_update up;
    CHECK(srv_upload_create(&rules, NULL, got, &u) == 0);
    CHECK(srv_upload_feed(u, body, len, &r) == 0 && srv_upload_finish(u, &up, &r) == 0);
    CHECK(up.attempt == 3);
    CHECK(memcmp(got, d, n * sizeof *d) == 0);
    srv_upload_free(u);
    /* kept for the log: the floats for the fold are scattered into the scratch (they are not
     * in the spec's order), the body comes back as sent */
    float *scratch = calloc(n, sizeof *scratch);
    uint8_t *copy = malloc(len);
    const float *delta = NULL;
    CHECK(srv_upload_create(&rules, t_tmpdir(), NULL, &u) == 0);
    CHECK(srv_upload_feed(u, body, len, &r) == 0 && srv_upload_finish(u, &up, &r) == 0);
    CHECK(replay(u, copy, len, scratch, &delta) == 0);
    CHECK(delta == scratch && memcmp(scratch, d, n * sizeof *d) == 0);
    CHECK(memcmp(copy, body, len) == 0);
    srv_upload_free(u);
    free(scratch);
    free(copy);
    /* fednova needs tau; chunked bodies past the limit are too large */
    rules.need_tau = 1;
    CHECK(srv_upload_create(&rules, NULL, got, &u) == 0);
    CHECK(srv_upload_feed(u, body, len, &r) == 0);
    CHECK_EQ_INT(srv_upload_finish(u, &up, &r), 400);
    CHECK(strcmp(r.code, "bad_field") == 0 && strstr(r.msg, "tau"));
    srv_upload_free(u);
    rules.need_tau = 0;
    rules.body_len = 0;
    rules.max_len = len - 1;
    CHECK(srv_upload_create(&rules, NULL, got, &u) == 0);
    CHECK_EQ_INT(srv_upload_feed(u, body, len, &r), 413);
    srv_upload_free(u);
    free(body);
    free(d);
    free(got);
    nn_model_free(m);
}

TEST(upload_spools_large_updates_to_an_unnamed_file)
{
    nn_model *m = NULL; /* 300,100 parameters: a 1.2 MB data area, over the in-memory limit */
    CHECK(nn_model_from_json("{\"input\":[3000],\"layers\":[{\"type\":\"linear\",\"name\":"
                             "\"fc\",\"in_features\":3000,\"out_features\":100}]}", "big", NULL,
                             &m) == 0);
    size_t n = m->n_params, len;
    float *d = malloc(n * sizeof *d), *back = calloc(n, sizeof *back);
    for (size_t i = 0; i < n; i++)
        d[i] = (float)((int)(i % 13) - 6) * 1e-4f;
    const char *k[] = {"attempt", "num_samples"}, *v[] = {"1", "5"};
    uint8_t *body;
    CHECK(ts_update(m, d, k, v, 2, &body, &len) == 0);
    const char *dir = t_tmpdir();
    srv_upload_rules rules = {m, 1e9, 0, 64 << 20, len, 0};
    srv_upload *u;
    srv_reply r = {0};
    srv_update up;
    CHECK(srv_upload_create(&rules, dir, NULL, &u) == 0);
    for (size_t off = 0; off < len; off += 32768)
        CHECK(srv_upload_feed(u, body + off, len - off < 32768 ? len - off : 32768, &r) == 0);
    CHECK(srv_upload_finish(u, &up, &r) == 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    CHECK_MSG(system(cmd) == 0, "the spool file has a name in %s", dir);
    uint8_t *copy = malloc(len);
    const float *delta = NULL;
    CHECK(replay(u, copy, len, back, &delta) == 0);
    CHECK(memcmp(copy, body, len) == 0);
    CHECK(delta == back && memcmp(back, d, n * sizeof *d) == 0);
    srv_upload_free(u);
    free(copy);
    free(body);
    free(d);
    free(back);
    nn_model_free(m);
}
