/* test_checkpoint.c — tests for nn/checkpoint: save/load round trips (bitwise parameters,
 * state_dict names and shapes in order, the spec and extra metadata), files without a spec
 * (PyTorch's), and every mismatch a checkpoint can have with its spec (missing, misshapen,
 * transposed, extra, non-F32 or non-finite tensors), each refused with a message naming the
 * file and the tensor; load_into leaves the model untouched on failure; truncated files and
 * lying headers are refused.
 */
#include "../test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/fileio.h"
#include "fixtures.h"
#include "nn/checkpoint.h"
#include "nn/model.h"
#include "nn/safetensors.h"

static nn_model *tutorial(uint64_t seed)
{
    nn_model *m;
    if (nn_model_from_file(FX_CNN_SPEC, NULL, &m))
        return NULL;
    nn_model_init(m, seed);
    return m;
}

/* A checkpoint of m built by hand with st_serialize, with one change:
 * skip (leave the tensor out), reshape (give it `shape`), extra (add a tensor), poison (put
 * `bad` at element 7 of the tensor); with_spec adds the spec to __metadata__. */
typedef struct edit {
    const char *skip, *reshape, *extra, *poison;
    int ndim;
    int64_t shape[4];
    float bad;
    int with_spec;
} edit;

static uint8_t *craft(const nn_model *m, const edit *e, size_t *len)
{
    st_out_tensor t[2 * NN_MAX_LAYERS + 1];
    float *copy = malloc(sizeof(float) * m->n_params), extra[4] = {1, 2, 3, 4};
    memcpy(copy, m->params, sizeof(float) * m->n_params);
    int n = 0;
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        if (e->skip && strcmp(p->name, e->skip) == 0)
            continue;
        t[n].name = p->name;
        t[n].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++)
            t[n].shape[d] = p->shape[d];
        if (e->reshape && strcmp(p->name, e->reshape) == 0) {
            t[n].ndim = e->ndim;
            for (int d = 0; d < e->ndim; d++)
                t[n].shape[d] = e->shape[d];
        }
        if (e->poison && strcmp(p->name, e->poison) == 0)
            copy[p->off + 7] = e->bad;
        t[n].data = copy + p->off;
        n++;
    }
    if (e->extra)
        t[n++] = (st_out_tensor){.name = e->extra, .ndim = 1, .shape = {4}, .data = extra};
    const char *k[1] = {"spec"}, *v[1] = {m->spec_json};
    uint8_t *buf = NULL;
    int rc = st_serialize(t, n, k, v, e->with_spec ? 1 : 0, &buf, len);
    free(copy);
    return rc ? NULL : buf;
}

TEST(checkpoint_save_load_roundtrip_bitwise)
{
    nn_model *m = tutorial(3), *back = NULL;
    CHECK(m != NULL);
    char path[600];
    const char *dir = t_tmpdir();
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const char *keys[2] = {"round", "dataset"}, *vals[2] = {"7", "fashion-mnist"};
    int rc = nn_checkpoint_save(m, path, keys, vals, 2);
    CHECK_MSG(rc == 0, "%s", af_errmsg());
    rc = nn_checkpoint_load(path, NULL, &back);
    CHECK_MSG(rc == 0, "%s", af_errmsg());
    CHECK_EQ_INT(back->n_params, m->n_params);
    CHECK(memcmp(back->params, m->params, sizeof(float) * m->n_params) == 0);
    CHECK(strcmp(back->spec_json, m->spec_json) == 0);
    nn_model_free(back);
    /* metadata: format, the spec, and ours */
    char buf[4096];
    CHECK(nn_checkpoint_meta(path, "format", buf, sizeof buf) == 0);
    CHECK(strcmp(buf, "artificien/1") == 0);
    CHECK(nn_checkpoint_meta(path, "spec", buf, sizeof buf) == 0);
    CHECK(strcmp(buf, m->spec_json) == 0);
    CHECK(nn_checkpoint_meta(path, "round", buf, sizeof buf) == 0);
    CHECK(strcmp(buf, "7") == 0);
    CHECK(nn_checkpoint_meta(path, "absent", buf, sizeof buf) == 0);
    CHECK(buf[0] == 0);
    /* the file holds exactly the state_dict: names, shapes, order, F32 */
    st_file f;
    CHECK(st_read(path, &f) == 0);
    int same = f.n_tensors == m->n_params_t;
    for (int i = 0; same && i < f.n_tensors; i++) {
        const nn_param *p = &m->params_t[i];
        same = strcmp(f.tensors[i].name, p->name) == 0 && f.tensors[i].dtype == ST_F32 &&
               f.tensors[i].ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++)
            same = f.tensors[i].shape[d] == p->shape[d];
    }
    st_free(&f);
    CHECK(same);
    /* nothing else in the folder (no temp file) */
    struct stat st;
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(stat(tmp, &st) != 0);
    nn_model_free(m);
}

TEST(checkpoint_serialize_parse_in_memory)
{
    nn_model *m = tutorial(4), *back = NULL;
    CHECK(m != NULL);
    unsigned char *buf;
    size_t len;
    CHECK(nn_checkpoint_serialize(m, NULL, NULL, 0, &buf, &len) == 0);
    CHECK(len > 32998 * 4);
    int rc = nn_checkpoint_parse(buf, len, "mem", NULL, &back);
    free(buf);
    CHECK_MSG(rc == 0, "%s", af_errmsg());
    CHECK(memcmp(back->params, m->params, sizeof(float) * m->n_params) == 0);
    nn_model_free(back);
    /* too many metadata entries */
    const char *k[40], *v[40];
    char names[40][16];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        k[i] = names[i];
        v[i] = "x";
    }
    CHECK_EQ_INT(nn_checkpoint_serialize(m, k, v, 40, &buf, &len), AF_EINVAL);
    nn_model_free(m);
}

TEST(checkpoint_without_spec_needs_one)
{
    /* a PyTorch state_dict saved with safetensors carries no spec */
    nn_model *m = tutorial(5), *back = NULL;
    CHECK(m != NULL);
    edit e = {0};
    size_t len;
    uint8_t *buf = craft(m, &e, &len);
    CHECK(buf != NULL);
    CHECK_EQ_INT(nn_checkpoint_parse(buf, len, "torch.safetensors", NULL, &back), AF_EFORMAT);
    CHECK(back == NULL);
    CHECK(strstr(af_errmsg(), "torch.safetensors: no \"spec\"") != NULL);
    int rc = nn_checkpoint_parse(buf, len, "torch.safetensors", m->spec_json, &back);
    free(buf);
    CHECK_MSG(rc == 0, "%s", af_errmsg());
    CHECK(memcmp(back->params, m->params, sizeof(float) * m->n_params) == 0);
    nn_model_free(back);
    nn_model_free(m);
}

typedef struct mismatch {
    edit e;
    int rc;
    const char *needle1, *needle2;
} mismatch;

TEST(checkpoint_mismatches_name_the_tensor)
{
    nn_model *m = tutorial(6);
    CHECK(m != NULL);
    const mismatch cases[] = {
        {{.skip = "fc2.bias", .with_spec = 1}, AF_ESHAPE, "tensor 'fc2.bias' missing", NULL},
        {{.reshape = "conv1.weight", .ndim = 3, .shape = {6, 1, 25}, .with_spec = 1}, AF_ESHAPE,
         "tensor 'conv1.weight' has shape [6,1,25]", "the spec needs [6,1,5,5]"},
        {{.reshape = "fc1.weight", .ndim = 2, .shape = {192, 120}, .with_spec = 1}, AF_ESHAPE,
         "tensor 'fc1.weight' has shape [192,120]", "[120,192]"},
        {{.extra = "fc3.weight", .with_spec = 1}, AF_ESHAPE, "unexpected tensor 'fc3.weight'", NULL},
        {{.poison = "fc1.bias", .bad = NAN, .with_spec = 1}, AF_EFORMAT,
         "tensor 'fc1.bias' holds a non-finite value at [7]", NULL},
        {{.poison = "out.weight", .bad = -INFINITY, .with_spec = 1}, AF_EFORMAT,
         "tensor 'out.weight' holds a non-finite value", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len;
        uint8_t *buf = craft(m, &cases[i].e, &len);
        CHECK(buf != NULL);
        nn_model *back = (nn_model *)1;
        af_clearerr();
        int rc = nn_checkpoint_parse(buf, len, "ck.safetensors", NULL, &back);
        const char *msg = af_errmsg();
        int ok = rc == cases[i].rc && back == NULL && strncmp(msg, "ck.safetensors: ", 16) == 0 &&
                 strstr(msg, cases[i].needle1) && (!cases[i].needle2 || strstr(msg, cases[i].needle2));
        /* the same through load_into: refused, and the model keeps its weights */
        nn_model *into = tutorial(99);
        float *before = malloc(sizeof(float) * into->n_params);
        memcpy(before, into->params, sizeof(float) * into->n_params);
        int rc2 = nn_checkpoint_load_into(into, buf, len, "ck.safetensors");
        int kept = memcmp(before, into->params, sizeof(float) * into->n_params) == 0;
        int ok2 = rc2 == cases[i].rc && strstr(af_errmsg(), cases[i].needle1);
        free(before);
        nn_model_free(into);
        free(buf);
        if (rc == 0)
            nn_model_free(back);
        CHECK_MSG(ok, "case %zu: rc %d (want %d), message \"%s\", want \"%s\"", i, rc, cases[i].rc,
                  msg, cases[i].needle1);
        CHECK_MSG(ok2, "case %zu: load_into rc %d, message \"%s\"", i, rc2, af_errmsg());
        CHECK_MSG(kept, "case %zu: load_into changed the model although it failed", i);
    }
    nn_model_free(m);
}

TEST(checkpoint_wrong_dtype_refused)
{
    nn_model *m = tutorial(7), *back = (nn_model *)1;
    CHECK(m != NULL);
    unsigned char *buf;
    size_t len;
    CHECK(nn_checkpoint_serialize(m, NULL, NULL, 0, &buf, &len) == 0);
    /* relabel out.bias as I32 (same element size, so the file stays self-consistent) */
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)buf[i] << (8 * i);
    char *hdr = (char *)buf + 8, *name = NULL;
    for (char *s = hdr; s + 10 < hdr + hl; s++)
        if (memcmp(s, "\"out.bias\"", 10) == 0) {
            name = s;
            break;
        }
    CHECK(name != NULL);
    char *f32 = NULL;
    for (char *s = name; s + 3 < hdr + hl; s++)
        if (memcmp(s, "F32", 3) == 0) {
            f32 = s;
            break;
        }
    CHECK(f32 != NULL);
    f32[0] = 'I';
    int rc = nn_checkpoint_parse(buf, len, "dt.safetensors", NULL, &back);
    free(buf);
    CHECK_EQ_INT(rc, AF_EFORMAT);
    CHECK(back == NULL);
    CHECK(strstr(af_errmsg(), "dt.safetensors: tensor 'out.bias' is I32, expected F32") != NULL);
    nn_model_free(m);
}

TEST(checkpoint_spec_mismatch_on_load)
{
    /* a checkpoint of the tutorial CNN loaded with another spec (eval --spec OTHER.json) */
    nn_model *m = tutorial(8), *back = (nn_model *)1;
    CHECK(m != NULL);
    unsigned char *buf;
    size_t len;
    CHECK(nn_checkpoint_serialize(m, NULL, NULL, 0, &buf, &len) == 0);
    char *wider = malloc(strlen(m->spec_json) + 16);
    const char *at = strstr(m->spec_json, "\"out_features\":120");
    CHECK(at != NULL);
    /* fc1 with 100 units: fc1.weight, fc1.bias and fc2.weight no longer fit */
    snprintf(wider, strlen(m->spec_json) + 16, "%.*s\"out_features\":100%s", (int)(at - m->spec_json),
             m->spec_json, at + strlen("\"out_features\":120"));
    char *fc2in = strstr(wider, "\"in_features\":120");
    CHECK(fc2in != NULL);
    memcpy(fc2in, "\"in_features\":100", strlen("\"in_features\":100"));
    int rc = nn_checkpoint_parse(buf, len, "m.safetensors", wider, &back);
    CHECK_EQ_INT(rc, AF_ESHAPE);
    CHECK(back == NULL);
    CHECK(strstr(af_errmsg(), "m.safetensors: tensor 'fc1.weight' has shape [120,192], the spec needs [100,192]") != NULL);
    /* a smaller spec: the checkpoint has tensors the spec does not know */
    const char *small = "{\"input\":[1,28,28],\"layers\":[{\"type\":\"conv2d\",\"name\":\"conv1\","
                        "\"out_channels\":6,\"kernel\":5},{\"type\":\"flatten\"},{\"type\":\"linear\","
                        "\"name\":\"out\",\"out_features\":10}]}";
    rc = nn_checkpoint_parse(buf, len, "m.safetensors", small, &back);
    CHECK_EQ_INT(rc, AF_ESHAPE);
    CHECK(strstr(af_errmsg(), "out.weight' has shape [10,60]") || strstr(af_errmsg(), "unexpected tensor"));
    /* a spec that is not a spec */
    rc = nn_checkpoint_parse(buf, len, "m.safetensors", "{\"input\":[1,28,28],\"layers\":[{\"type\":\"conv5d\"}]}", &back);
    CHECK(rc != 0);
    CHECK(strstr(af_errmsg(), "conv5d") != NULL);
    free(wider);
    free(buf);
    nn_model_free(m);
}

TEST(checkpoint_load_into_replaces_weights)
{
    nn_model *a = tutorial(10), *b = tutorial(11);
    CHECK(a && b);
    unsigned char *buf;
    size_t len;
    CHECK(nn_checkpoint_serialize(a, NULL, NULL, 0, &buf, &len) == 0);
    CHECK(memcmp(a->params, b->params, sizeof(float) * a->n_params) != 0);
    int rc = nn_checkpoint_load_into(b, buf, len, "a.safetensors");
    CHECK_MSG(rc == 0, "%s", af_errmsg());
    CHECK(memcmp(a->params, b->params, sizeof(float) * a->n_params) == 0);
    /* a corrupt buffer leaves b as it is */
    nn_model_init(b, 12);
    float *before = malloc(sizeof(float) * b->n_params);
    memcpy(before, b->params, sizeof(float) * b->n_params);
    CHECK(nn_checkpoint_load_into(b, buf, len - 1, "a.safetensors") != 0);
    CHECK(memcmp(before, b->params, sizeof(float) * b->n_params) == 0);
    free(before);
    free(buf);
    nn_model_free(a);
    nn_model_free(b);
}

/* Writes n bytes of buf to DIR/name; returns the path (static). */
static const char *put(const char *dir, const char *name, const void *buf, size_t n)
{
    static char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const void *bufs[1] = {buf};
    return af_write_file_atomic(path, bufs, &n, 1) == 0 ? path : NULL;
}

TEST(checkpoint_truncated_and_lying_files)
{
    nn_model *m = tutorial(13), *back = (nn_model *)1;
    CHECK(m != NULL);
    unsigned char *buf;
    size_t len;
    CHECK(nn_checkpoint_serialize(m, NULL, NULL, 0, &buf, &len) == 0);
    const char *dir = t_tmpdir();
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)buf[i] << (8 * i);
    const size_t cuts[] = {0, 5, 8, 8 + (size_t)hl / 2, 8 + (size_t)hl, len - 4, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        const char *path = put(dir, "cut.safetensors", buf, cuts[i]);
        CHECK(path != NULL);
        back = (nn_model *)1;
        af_clearerr();
        int rc = nn_checkpoint_load(path, NULL, &back);
        CHECK_MSG(rc == AF_EFORMAT && back == NULL && strstr(af_errmsg(), path),
                  "file cut to %zu of %zu bytes: rc %d, message \"%s\"", cuts[i], len, rc, af_errmsg());
    }
    /* header length past the end of the file */
    unsigned char *lie = malloc(len);
    memcpy(lie, buf, len);
    uint64_t big = (uint64_t)len + 1000;
    for (int i = 0; i < 8; i++)
        lie[i] = (unsigned char)(big >> (8 * i));
    const char *path = put(dir, "lie.safetensors", lie, len);
    CHECK(path != NULL);
    CHECK_EQ_INT(nn_checkpoint_load(path, NULL, &back), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "lie.safetensors") != NULL);
    /* a huge header length (2^63) must not be trusted either */
    memcpy(lie, buf, len);
    lie[7] = 0x80;
    path = put(dir, "lie2.safetensors", lie, len);
    CHECK_EQ_INT(nn_checkpoint_load(path, NULL, &back), AF_EFORMAT);
    /* extra bytes after the data: the data area is not covered exactly */
    unsigned char *longer = malloc(len + 16);
    memcpy(longer, buf, len);
    memset(longer + len, 0, 16);
    path = put(dir, "long.safetensors", longer, len + 16);
    CHECK_EQ_INT(nn_checkpoint_load(path, NULL, &back), AF_EFORMAT);
    /* a file that does not exist */
    char missing[700];
    snprintf(missing, sizeof missing, "%s/none.safetensors", dir);
    CHECK_EQ_INT(nn_checkpoint_load(missing, NULL, &back), AF_ENOTFOUND);
    CHECK(strstr(af_errmsg(), missing) != NULL);
    CHECK(back == NULL);
    CHECK(nn_checkpoint_meta(missing, "spec", (char[8]){0}, 8) != 0);
    free(lie);
    free(longer);
    free(buf);
    nn_model_free(m);
}

TEST(checkpoint_save_failure_leaves_no_file)
{
    nn_model *m = tutorial(14);
    CHECK(m != NULL);
    const char *dir = t_tmpdir();
    char path[700];
    snprintf(path, sizeof path, "%s/no/such/dir/model.safetensors", dir);
    int rc = nn_checkpoint_save(m, path, NULL, NULL, 0);
    CHECK(rc < 0);
    CHECK(strstr(af_errmsg(), "model.safetensors") != NULL);
    struct stat st;
    CHECK(stat(path, &st) != 0);
    nn_model_free(m);
}
