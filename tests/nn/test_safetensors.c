/* test_safetensors.c — tests for nn/safetensors: write/read round trips, every malformed
 * header the reader must refuse (files built by hand here), writer argument checks, cross-
 * checks with plain Python (struct + json) in both directions, and the PyTorch fixtures.
 */
#include "../test.h"

#include "core/err.h"
#include "nn/safetensors.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */

/* A file image: 8-byte LE length of `json`, the json, then `data_len` bytes 0,1,2,… */
static uint8_t *mk_file(const char *json, size_t data_len, size_t *len)
{
    size_t hl = strlen(json);
    uint8_t *b = malloc(8 + hl + data_len + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    for (size_t i = 0; i < data_len; i++)
        b[8 + hl + i] = (uint8_t)i;
    *len = 8 + hl + data_len;
    return b;
}

/* Parses the hand-built file; 1 if it fails with AF_EFORMAT, `needle` in the message, the
 * source name first, and *out left empty. */
static int rejects(const char *json, size_t data_len, const char *needle)
{
    size_t len;
    uint8_t *b = mk_file(json, data_len, &len);
    st_file f;
    memset(&f, 0x5a, sizeof f);
    int rc = st_parse(b, len, "hand.safetensors", &f);
    free(b);
    const char *m = af_errmsg();
    if (rc != AF_EFORMAT || strncmp(m, "hand.safetensors: ", 18) != 0 || !strstr(m, needle) ||
        f.buf != NULL || f.n_tensors != 0 || f.tensors != NULL || f.n_meta != 0) {
        printf("    %s\n    -> rc %d, message '%s' (wanted '%s')\n", json, rc, m, needle);
        if (rc == 0)
            st_free(&f);
        return 0;
    }
    return 1;
}

static int accepts(const char *json, size_t data_len, st_file *f)
{
    size_t len;
    uint8_t *b = mk_file(json, data_len, &len);
    int rc = st_parse(b, len, "hand.safetensors", f);
    free(b);
    if (rc != 0)
        printf("    %s\n    -> rc %d, message '%s'\n", json, rc, af_errmsg());
    return rc == 0;
}

/* The tutorial CNN's first layer plus odd shapes: a scalar and an empty tensor. */
static float w1[150], b1[6], scal[1] = {3.25f}, mat[12];
static st_out_tensor demo[4];
static const char *mkeys[2] = {"round", "spec"};
static const char *mvals[2] = {"17", "{\"layers\": [\"conv\", \"relu\"]}"};

static void demo_init(void)
{
    for (int i = 0; i < 150; i++)
        w1[i] = (float)(i - 75) / 37.0f;
    for (int i = 0; i < 6; i++)
        b1[i] = -0.5f + 0.125f * (float)i;
    for (int i = 0; i < 12; i++)
        mat[i] = 1e-3f * (float)(i * i);
    demo[0] = (st_out_tensor){.name = "conv1.weight", .ndim = 4, .shape = {6, 1, 5, 5}, .data = w1};
    demo[1] = (st_out_tensor){.name = "conv1.bias", .ndim = 1, .shape = {6}, .data = b1};
    demo[2] = (st_out_tensor){.name = "step", .ndim = 0, .data = scal};
    demo[3] = (st_out_tensor){.name = "fc.weight", .ndim = 2, .shape = {3, 4}, .data = mat};
}

/* Checks that f holds exactly demo[] (in order) and the demo metadata. */
static int demo_matches(const st_file *f)
{
    if (f->n_tensors != 4 || f->n_meta != 2)
        return 0;
    for (int i = 0; i < 4; i++) {
        const st_tensor *t = &f->tensors[i];
        const st_out_tensor *o = &demo[i];
        size_t n = 1;
        if (strcmp(t->name, o->name) != 0 || t->dtype != ST_F32 || t->ndim != o->ndim)
            return 0;
        for (int k = 0; k < o->ndim; k++) {
            if (t->shape[k] != o->shape[k])
                return 0;
            n *= (size_t)o->shape[k];
        }
        if (t->nbytes != n * 4 || memcmp(t->data, o->data, n * 4) != 0)
            return 0;
        if (st_find(f, o->name) != t)
            return 0;
    }
    return st_meta(f, "round") && strcmp(st_meta(f, "round"), "17") == 0 &&
           st_meta(f, "spec") && strcmp(st_meta(f, "spec"), mvals[1]) == 0 &&
           st_find(f, "nope") == NULL && st_meta(f, "nope") == NULL;
}

static int run_capture(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = 0;
    return pclose(p);
}

/* ---- round trips ------------------------------------------------------------------------ */

TEST(st_dtype_names_and_sizes)
{
    CHECK(strcmp(st_dtype_name(ST_F32), "F32") == 0);
    CHECK(strcmp(st_dtype_name(ST_BF16), "BF16") == 0);
    CHECK(strcmp(st_dtype_name(ST_BOOL), "BOOL") == 0);
    CHECK_EQ_INT(st_dtype_size(ST_F32), 4);
    CHECK_EQ_INT(st_dtype_size(ST_F64), 8);
    CHECK_EQ_INT(st_dtype_size(ST_I64), 8);
    CHECK_EQ_INT(st_dtype_size(ST_I32), 4);
    CHECK_EQ_INT(st_dtype_size(ST_U8), 1);
    CHECK_EQ_INT(st_dtype_size(ST_F16), 2);
    CHECK_EQ_INT(st_dtype_size(ST_BF16), 2);
    CHECK_EQ_INT(st_dtype_size(ST_I8), 1);
    CHECK_EQ_INT(st_dtype_size(ST_I16), 2);
    CHECK_EQ_INT(st_dtype_size(ST_BOOL), 1);
    CHECK_EQ_INT(st_dtype_size((st_dtype)99), 0);
}

TEST(st_serialize_parse_round_trip)
{
    demo_init();
    uint8_t *buf;
    size_t len;
    CHECK_EQ_INT(st_serialize(demo, 4, mkeys, mvals, 2, &buf, &len), 0);
    /* Layout: 8-byte length, space-padded header to a multiple of 8, then the data. */
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | buf[i];
    size_t data = (150 + 6 + 1 + 12) * 4;
    int layout = hl % 8 == 0 && 8 + hl + data == len && buf[8] == '{';
    size_t j = 8 + hl;
    while (j > 8 && buf[j - 1] == ' ')
        j--;
    layout = layout && buf[j - 1] == '}' && 8 + hl - j < 8;
    st_file f;
    int rc = st_parse(buf, len, "mem", &f);
    free(buf);
    CHECK(layout);
    CHECK_EQ_INT(rc, 0);
    int ok = demo_matches(&f);
    /* Data pointers are 8-byte aligned relative to the file start: tensors follow in order. */
    int aligned = (size_t)(f.tensors[0].data - f.buf) == 8 + hl &&
                  f.tensors[1].data == f.tensors[0].data + 600 && f.len == len;
    st_free(&f);
    CHECK(ok);
    CHECK(aligned);
    CHECK(f.buf == NULL && f.n_tensors == 0);
    st_free(&f); /* twice is fine */
    st_free(NULL);
}

TEST(st_write_read_round_trip_is_atomic)
{
    demo_init();
    const char *dir = t_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_EQ_INT(st_write(path, demo, 4, mkeys, mvals, 2), 0);
    st_file f;
    CHECK_EQ_INT(st_read(path, &f), 0);
    int ok = demo_matches(&f);
    st_free(&f);
    CHECK(ok);
    /* Same bytes as st_serialize. */
    uint8_t *buf;
    size_t len;
    CHECK_EQ_INT(st_serialize(demo, 4, mkeys, mvals, 2, &buf, &len), 0);
    FILE *fp = fopen(path, "rb");
    uint8_t *disk = malloc(len + 16);
    size_t got = fp ? fread(disk, 1, len + 16, fp) : 0;
    if (fp)
        fclose(fp);
    int same = got == len && memcmp(disk, buf, len) == 0;
    free(disk);
    free(buf);
    CHECK(same);
    /* A failing write leaves neither the file nor a temporary behind. */
    st_out_tensor bad = demo[0];
    bad.data = NULL;
    char path2[600];
    snprintf(path2, sizeof path2, "%s/bad.safetensors", dir);
    CHECK_EQ_INT(st_write(path2, &bad, 1, NULL, NULL, 0), AF_EINVAL);
    DIR *d = opendir(dir);
    int entries = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        entries += e->d_name[0] != '.';
    if (d)
        closedir(d);
    CHECK_EQ_INT(entries, 1);
}

TEST(st_empty_and_zero_size_tensors)
{
    /* No tensors, no metadata: "{}" padded to 8. */
    uint8_t *buf;
    size_t len;
    CHECK_EQ_INT(st_serialize(NULL, 0, NULL, NULL, 0, &buf, &len), 0);
    CHECK_EQ_INT(len, 16);
    st_file f;
    CHECK_EQ_INT(st_parse(buf, len, "mem", &f), 0);
    free(buf);
    CHECK_EQ_INT(f.n_tensors, 0);
    CHECK_EQ_INT(f.n_meta, 0);
    st_free(&f);
    /* Zero-size tensors share an offset with their neighbour; that is not an overlap. */
    float v[2] = {1.5f, -2.0f};
    st_out_tensor t[3] = {
        {.name = "a", .ndim = 2, .shape = {0, 3}, .data = NULL},
        {.name = "b", .ndim = 1, .shape = {2}, .data = v},
        {.name = "c", .ndim = 1, .shape = {0}, .data = NULL},
    };
    CHECK_EQ_INT(st_serialize(t, 3, NULL, NULL, 0, &buf, &len), 0);
    CHECK_EQ_INT(st_parse(buf, len, "mem", &f), 0);
    free(buf);
    const st_tensor *a = st_find(&f, "a"), *b = st_find(&f, "b"), *c = st_find(&f, "c");
    int ok = f.n_tensors == 3 && a && b && c && a->nbytes == 0 && a->ndim == 2 &&
             a->shape[0] == 0 && a->shape[1] == 3 && b->nbytes == 8 &&
             memcmp(b->data, v, 8) == 0 && c->nbytes == 0;
    st_free(&f);
    CHECK(ok);
}

TEST(st_names_are_json_escaped)
{
    float v[1] = {42.0f};
    st_out_tensor t[1] = {{.name = "we\"ird\\name/ü\n", .ndim = 1, .shape = {1}, .data = v}};
    const char *k[1] = {"note"}, *val[1] = {"tab\there \"quoted\""};
    uint8_t *buf;
    size_t len;
    CHECK_EQ_INT(st_serialize(t, 1, k, val, 1, &buf, &len), 0);
    st_file f;
    CHECK_EQ_INT(st_parse(buf, len, "mem", &f), 0);
    free(buf);
    const st_tensor *x = st_find(&f, t[0].name);
    int ok = x && x->nbytes == 4 && memcmp(x->data, v, 4) == 0 && st_meta(&f, "note") &&
             strcmp(st_meta(&f, "note"), val[0]) == 0;
    st_free(&f);
    CHECK(ok);
}

TEST(st_accepts_other_dtypes_and_padding)
{
    st_file f;
    /* What other writers produce: I64/BF16/U8 tensors, whitespace padding, any order. */
    CHECK(accepts("{\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[8,14]},"
                  "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                  "\"c\":{\"dtype\":\"U8\",\"shape\":[2,1],\"data_offsets\":[14,16]},"
                  "\"__metadata__\":{\"format\":\"pt\"}}      ",
                  16, &f));
    int ok = f.n_tensors == 3 && strcmp(f.tensors[0].name, "a") == 0 &&
             strcmp(f.tensors[1].name, "b") == 0 && strcmp(f.tensors[2].name, "c") == 0 &&
             f.tensors[1].dtype == ST_BF16 && f.tensors[1].nbytes == 6 &&
             f.tensors[0].dtype == ST_I64 && f.tensors[2].data[1] == 15 &&
             strcmp(st_meta(&f, "format"), "pt") == 0;
    st_free(&f);
    CHECK(ok); /* tensors come back in data-offset order */
    CHECK(accepts("{}", 0, &f));
    st_free(&f);
    CHECK(accepts("{\"__metadata__\":{}}", 0, &f));
    st_free(&f);
}

/* ---- corruption: each case gets AF_EFORMAT and a message naming the problem ---------- */

TEST(st_rejects_bad_framing)
{
    st_file f;
    uint8_t tiny[5] = {1, 0, 0, 0, 0};
    CHECK_EQ_INT(st_parse(tiny, 5, "tiny", &f), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "tiny: file is 5 bytes, too short"));
    CHECK_EQ_INT(st_parse(tiny, 0, "none", &f), AF_EFORMAT);
    /* Header length past the end of the file. */
    size_t len;
    uint8_t *b = mk_file("{}", 0, &len);
    b[0] = 40;
    CHECK_EQ_INT(st_parse(b, len, "long", &f), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "long: header length 40 runs past the end of the file"));
    /* Header length over 100 MB (and a huge one that would overflow 8 + N). */
    b[0] = 0, b[1] = 0, b[2] = 0, b[3] = 0x10; /* 2^28 */
    CHECK_EQ_INT(st_parse(b, len, "big", &f), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "100 MB"));
    memset(b, 0xff, 8);
    CHECK_EQ_INT(st_parse(b, len, "huge", &f), AF_EFORMAT);
    CHECK(strstr(af_errmsg(), "100 MB"));
    free(b);
    /* Missing file. */
    char path[600];
    snprintf(path, sizeof path, "%s/absent.safetensors", t_tmpdir());
    CHECK_EQ_INT(st_read(path, &f), AF_ENOTFOUND);
    CHECK(strstr(af_errmsg(), path));
    CHECK(f.buf == NULL);
}

TEST(st_rejects_bad_json)
{
    CHECK(rejects("", 0, "header length is 0, expected a JSON object"));
    CHECK(rejects("{\"a\": ", 0, "not valid JSON"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",}", 0, "not valid JSON (error near byte"));
    CHECK(rejects("[1, 2]", 0, "header is not a JSON object"));
    CHECK(rejects("\"x\"", 0, "header is not a JSON object"));
    CHECK(rejects("{} x", 0, "bytes after the JSON object"));
    CHECK(rejects("{}{}", 0, "bytes after the JSON object"));
}

TEST(st_rejects_bad_tensor_entries)
{
    CHECK(rejects("{\"a\":5}", 0, "tensor 'a': entry is not a JSON object"));
    CHECK(rejects("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "tensor 'a': missing \"dtype\""));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                  "tensor 'a': missing \"shape\""));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
                  "tensor 'a': missing \"data_offsets\""));
    CHECK(rejects("{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "tensor 'a': unknown dtype 'F99'"));
    CHECK(rejects("{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                  "tensor 'a': \"dtype\" is not a string"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4,
                  "tensor 'a': \"shape\" is not an array"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                  "tensor 'a': shape[0] is not a non-negative integer"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2.5],\"data_offsets\":[0,4]}}", 4,
                  "tensor 'a': shape[1] is not a non-negative integer"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                  "tensor 'a': shape[0] is not a non-negative integer"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", 8,
                  "tensor 'a': shape[0] is not a non-negative integer"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[100000000000000,100000000000000,"
                  "100000000000000],\"data_offsets\":[0,4]}}",
                  4, "tensor 'a': shape product overflows"));
    CHECK(rejects("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                  "\"data_offsets\":[0,1]}}",
                  1, "tensor 'a': 9 dimensions"));
}

TEST(st_rejects_bad_offsets)
{
    const char *want = "\"data_offsets\" must be [begin, end]";
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", 4, want));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, want));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, want));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, want));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, want));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4]}}", 4, want));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
                  "tensor 'a': data_offsets [8, 4] has begin > end"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16,
                  "tensor 'a': data_offsets end 400 is past the data area (16 bytes)"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16,
                  "tensor 'a': data_offsets span 16 bytes but shape and dtype F32 need 12"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F64\",\"shape\":[2,1],\"data_offsets\":[0,8]}}", 8,
                  "need 16"));
}

TEST(st_rejects_overlaps_gaps_and_trailing_data)
{
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  12, "tensor 'b': overlaps tensor 'a'"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                  8, "overlaps tensor"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                  20, "tensor 'b': gap: data starts at byte 12 but the previous tensor ends at 8"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                  "tensor 'a': gap: data starts at byte 4"));
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
                  "4 bytes of data after the last tensor"));
    CHECK(rejects("{}", 3, "3 bytes of data after the last tensor"));
}

TEST(st_rejects_duplicates_and_bad_metadata)
{
    CHECK(rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  8, "tensor 'a': duplicate name"));
    CHECK(rejects("{\"__metadata__\":3}", 0, "__metadata__ is not a JSON object"));
    CHECK(rejects("{\"__metadata__\":[\"x\"]}", 0, "__metadata__ is not a JSON object"));
    CHECK(rejects("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ 'k': value is not a string"));
    CHECK(rejects("{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, "'k': value is not a string"));
    CHECK(rejects("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0,
                  "__metadata__: duplicate key 'k'"));
    CHECK(rejects("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__"));
}

/* Every truncation of a valid file and every single-byte change to its header must either
 * parse or fail with AF_EFORMAT: never crash, never another code (run under ASan too). */
TEST(st_survives_truncation_and_bit_flips)
{
    demo_init();
    uint8_t *buf;
    size_t len;
    CHECK_EQ_INT(st_serialize(demo, 4, mkeys, mvals, 2, &buf, &len), 0);
    size_t hl = buf[0] | (size_t)buf[1] << 8;
    int bad = 0, parsed_trunc = 0;
    for (size_t n = 0; n < len && !bad; n++) {
        st_file f;
        int rc = st_parse(buf, n, "cut", &f);
        bad |= rc != AF_EFORMAT;
        parsed_trunc += rc == 0;
        if (rc == 0)
            st_free(&f);
    }
    uint8_t *mut = malloc(len);
    for (size_t i = 0; i < 8 + hl && !bad; i++) {
        const uint8_t flips[3] = {0x01, 0x20, 0x80};
        for (int k = 0; k < 3; k++) {
            memcpy(mut, buf, len);
            mut[i] ^= flips[k];
            st_file f;
            int rc = st_parse(mut, len, "flip", &f);
            if (rc == 0)
                st_free(&f);
            else if (rc != AF_EFORMAT)
                bad = 1;
        }
    }
    free(mut);
    free(buf);
    CHECK_EQ_INT(parsed_trunc, 0);
    CHECK(!bad);
}

/* ---- writer argument checks ------------------------------------------------------------- */

TEST(st_serialize_rejects_bad_arguments)
{
    demo_init();
    uint8_t *buf = (uint8_t *)&buf;
    size_t len = 99;
    st_out_tensor t[2] = {demo[0], demo[1]};
    t[1].name = "conv1.weight";
    CHECK_EQ_INT(st_serialize(t, 2, NULL, NULL, 0, &buf, &len), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "duplicate tensor name 'conv1.weight'"));
    CHECK(buf == NULL && len == 0);
    t[1] = demo[1];
    t[1].shape[0] = -6;
    CHECK_EQ_INT(st_serialize(t, 2, NULL, NULL, 0, &buf, &len), AF_EINVAL);
    t[1] = demo[1];
    t[1].ndim = ST_MAX_DIMS + 1;
    CHECK_EQ_INT(st_serialize(t, 2, NULL, NULL, 0, &buf, &len), AF_EINVAL);
    t[1] = demo[1];
    t[1].name = "__metadata__";
    CHECK_EQ_INT(st_serialize(t, 2, NULL, NULL, 0, &buf, &len), AF_EINVAL);
    t[1].name = NULL;
    CHECK_EQ_INT(st_serialize(t, 2, NULL, NULL, 0, &buf, &len), AF_EINVAL);
    t[1] = demo[1];
    t[1].data = NULL;
    CHECK_EQ_INT(st_serialize(t, 2, NULL, NULL, 0, &buf, &len), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "conv1.bias"));
    t[1] = demo[1];
    t[1].ndim = 3;
    t[1].shape[0] = t[1].shape[1] = t[1].shape[2] = 100000000; /* 4e24 bytes */
    CHECK_EQ_INT(st_serialize(t, 2, NULL, NULL, 0, &buf, &len), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "too large"));
    const char *k2[2] = {"a", "a"}, *v2[2] = {"1", "2"};
    CHECK_EQ_INT(st_serialize(demo, 1, k2, v2, 2, &buf, &len), AF_EINVAL);
    CHECK(strstr(af_errmsg(), "duplicate metadata key 'a'"));
    const char *v3[2] = {"1", NULL};
    const char *k3[2] = {"a", "b"};
    CHECK_EQ_INT(st_serialize(demo, 1, k3, v3, 2, &buf, &len), AF_EINVAL);
    CHECK_EQ_INT(st_serialize(demo, -1, NULL, NULL, 0, &buf, &len), AF_EINVAL);
    CHECK(buf == NULL);
}

/* ---- interoperability ------------------------------------------------------------------- */

/* Reads a safetensors file with nothing but struct + json, checks the layout rules, and
 * prints per tensor NAME:DTYPE:SHAPE:CHECKSUM (checksum = sum (i+1)*x_i in doubles). */
static const char *py_reader =
    "import json, struct, sys\n"
    "b = open(sys.argv[1], 'rb').read()\n"
    "n = struct.unpack('<Q', b[:8])[0]\n"
    "assert n % 8 == 0, 'header not padded'\n"
    "h = json.loads(b[8:8 + n].decode('utf-8'))\n"
    "meta = h.pop('__metadata__', {})\n"
    "pos, out = 0, []\n"
    "for k, v in sorted(h.items(), key=lambda kv: kv[1]['data_offsets']):\n"
    "    s, e = v['data_offsets']\n"
    "    assert s == pos and v['dtype'] == 'F32', k\n"
    "    pos = e\n"
    "    xs = struct.unpack('<%df' % ((e - s) // 4), b[8 + n + s:8 + n + e])\n"
    "    c = 0.0\n"
    "    for i, x in enumerate(xs):\n"
    "        c += (i + 1) * x\n"
    "    out.append('%s:%s:%s:%.17g' % (k, v['dtype'], 'x'.join(map(str, v['shape'])), c))\n"
    "assert pos == len(b) - 8 - n, 'data area not covered'\n"
    "print(';'.join(out) + '|' + ','.join('%s=%s' % (k, meta[k]) for k in sorted(meta)))\n";

/* Writes a file the way Python writers do (one F32, one I64 tensor, metadata, unpadded). */
static const char *py_writer =
    "import json, struct, sys\n"
    "w = struct.pack('<6f', 0.5, -1.25, 3.0, 1e-3, -7.5, 2.0)\n"
    "i = struct.pack('<2q', -3, 1 << 40)\n"
    "h = {'__metadata__': {'format': 'pt', 'round': '4'},\n"
    "     'steps': {'dtype': 'I64', 'shape': [2], 'data_offsets': [24, 40]},\n"
    "     'lin.weight': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]}}\n"
    "j = json.dumps(h).encode()\n"
    "open(sys.argv[1], 'wb').write(struct.pack('<Q', len(j)) + j + w + i)\n";

static int write_text(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(s, f);
    return fclose(f);
}

TEST(st_file_is_readable_by_plain_python)
{
    demo_init();
    const char *dir = t_tmpdir();
    char path[600], script[600], cmd[1400], got[4096], want[4096];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    snprintf(script, sizeof script, "%s/read.py", dir);
    CHECK_EQ_INT(st_write(path, demo, 4, mkeys, mvals, 2), 0);
    CHECK_EQ_INT(write_text(script, py_reader), 0);
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' 2>&1", script, path);
    CHECK_EQ_INT(run_capture(cmd, got, sizeof got), 0);
    /* The same line computed here, in data-offset order (= the order written). */
    size_t k = 0;
    for (int t = 0; t < 4; t++) {
        size_t n = 1;
        char shape[64] = "";
        for (int d = 0; d < demo[t].ndim; d++) {
            n *= (size_t)demo[t].shape[d];
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld",
                     d ? "x" : "", (long long)demo[t].shape[d]);
        }
        double c = 0.0;
        for (size_t i = 0; i < n; i++)
            c += (double)(i + 1) * (double)demo[t].data[i];
        k += (size_t)snprintf(want + k, sizeof want - k, "%s%s:F32:%s:%.17g", t ? ";" : "",
                              demo[t].name, shape, c);
    }
    snprintf(want + k, sizeof want - k, "|round=17,spec=%s", mvals[1]);
    CHECK_MSG(strcmp(got, want) == 0, "python: %s\n    want:   %s", got, want);
}

TEST(st_reads_file_written_by_plain_python)
{
    const char *dir = t_tmpdir();
    char path[600], script[600], cmd[1400], out[256];
    snprintf(path, sizeof path, "%s/py.safetensors", dir);
    snprintf(script, sizeof script, "%s/write.py", dir);
    CHECK_EQ_INT(write_text(script, py_writer), 0);
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' 2>&1", script, path);
    CHECK_MSG(run_capture(cmd, out, sizeof out) == 0, "python: %s", out);
    st_file f;
    CHECK_EQ_INT(st_read(path, &f), 0);
    const st_tensor *w = st_find(&f, "lin.weight"), *s = st_find(&f, "steps");
    float wv[6];
    int64_t sv[2];
    int ok = f.n_tensors == 2 && w && s && w->dtype == ST_F32 && w->ndim == 2 &&
             w->shape[0] == 2 && w->shape[1] == 3 && s->dtype == ST_I64 && s->nbytes == 16;
    if (ok) {
        memcpy(wv, w->data, sizeof wv); /* data may be unaligned in foreign files */
        memcpy(sv, s->data, sizeof sv);
    }
    ok = ok && wv[1] == -1.25f && wv[3] == 1e-3f && wv[5] == 2.0f && sv[0] == -3 &&
         sv[1] == (int64_t)1 << 40 && strcmp(st_meta(&f, "format"), "pt") == 0 &&
         strcmp(st_meta(&f, "round"), "4") == 0 && f.tensors[0].dtype == ST_F32;
    st_free(&f);
    CHECK(ok);
}

TEST(st_reads_pytorch_fixture)
{
    st_file f;
    CHECK_EQ_INT(st_read(t_fixture("cnn.safetensors"), &f), 0);
    const st_tensor *c1 = st_find(&f, "conv1.weight"), *fc1 = st_find(&f, "fc1.weight");
    int ok = c1 && fc1 && c1->dtype == ST_F32 && c1->ndim == 4 && c1->shape[0] == 6 &&
             c1->shape[1] == 1 && c1->shape[2] == 5 && c1->shape[3] == 5 && c1->nbytes == 600 &&
             fc1->shape[0] == 120 && fc1->shape[1] == 192 && st_meta(&f, "generator") &&
             strcmp(st_meta(&f, "generator"), "tools/gen_fixtures.py") == 0;
    st_free(&f);
    CHECK(ok);
}

TEST(st_reads_every_fixture)
{
    const char *dir = t_fixture("");
    DIR *d = opendir(dir);
    CHECK_MSG(d, "cannot list %s", dir);
    int n = 0, bad = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors") != 0)
            continue;
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        st_file f;
        if (st_read(path, &f) != 0) {
            printf("    %s\n", af_errmsg());
            bad++;
            continue;
        }
        n++;
        bad += f.n_tensors == 0 || st_meta(&f, "generator") == NULL;
        st_free(&f);
    }
    closedir(d);
    CHECK_EQ_INT(bad, 0);
    CHECK(n >= 1);
}
