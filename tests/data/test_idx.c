/* test_idx.c — tests for data/idx: raw and gzipped IDX files written here by hand, every
 * corruption the reader must refuse (with the file named in the message), lying headers that
 * must not cause huge allocations, and the installed Fashion-MNIST labels.
 */
#include "../test.h"

#include "core/err.h"
#include "data/idx.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Builds an IDX image: header (type, dims) then `n` payload bytes from `data`. */
static size_t idx_bytes(uint8_t *buf, uint8_t type, int ndim, const uint32_t *dims,
                        const uint8_t *data, size_t n)
{
    size_t k = 0;
    buf[k++] = 0;
    buf[k++] = 0;
    buf[k++] = type;
    buf[k++] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[k++] = (uint8_t)(dims[i] >> 24);
        buf[k++] = (uint8_t)(dims[i] >> 16);
        buf[k++] = (uint8_t)(dims[i] >> 8);
        buf[k++] = (uint8_t)dims[i];
    }
    memcpy(buf + k, data, n);
    return k + n;
}

static int write_raw(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(buf, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int write_gz(const char *path, const void *buf, size_t n)
{
    gzFile g = gzopen(path, "wb");
    if (!g)
        return -1;
    int w = n ? gzwrite(g, buf, (unsigned)n) : 0;
    return gzclose(g) == Z_OK && (size_t)w == n ? 0 : -1;
}

static const char *tpath(const char *dir, const char *name)
{
    static char buf[8][600];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Writes a 2×3×4 array with bytes 0..23 (raw or gz) to path. */
static int write_small(const char *path, int gz)
{
    uint8_t data[24], buf[64];
    for (int i = 0; i < 24; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    uint32_t dims[3] = {2, 3, 4};
    size_t n = idx_bytes(buf, 0x08, 3, dims, data, 24);
    return gz ? write_gz(path, buf, n) : write_raw(path, buf, n);
}

static int check_small(const idx_array *a)
{
    if (a->ndim != 3 || a->dims[0] != 2 || a->dims[1] != 3 || a->dims[2] != 4 || a->count != 24)
        return 0;
    for (int i = 0; i < 24; i++)
        if (a->data[i] != (uint8_t)(i * 7 + 3))
            return 0;
    return 1;
}

TEST(idx_reads_raw_file)
{
    const char *p = tpath(t_tmpdir(), "small-idx3-ubyte");
    CHECK(write_small(p, 0) == 0);
    idx_array a;
    CHECK_EQ_INT(idx_read(p, &a), 0);
    CHECK(check_small(&a));
    idx_free(&a);
    CHECK(a.data == NULL && a.count == 0);
    idx_free(&a); /* twice is fine */
    idx_free(NULL);
}

TEST(idx_reads_gzip_file)
{
    const char *p = tpath(t_tmpdir(), "small-idx3-ubyte.gz");
    CHECK(write_small(p, 1) == 0);
    idx_array a;
    CHECK_EQ_INT(idx_read(p, &a), 0);
    CHECK(check_small(&a));
    idx_free(&a);
}

TEST(idx_detects_gzip_by_magic_not_name)
{
    const char *dir = t_tmpdir();
    const char *gz_named_raw = tpath(dir, "a.gz"), *raw_named_plain = tpath(dir, "b-ubyte");
    CHECK(write_small(gz_named_raw, 0) == 0);   /* raw bytes under a .gz name */
    CHECK(write_small(raw_named_plain, 1) == 0); /* gzip bytes under a plain name */
    idx_array a, b;
    CHECK_EQ_INT(idx_read(gz_named_raw, &a), 0);
    CHECK(check_small(&a));
    CHECK_EQ_INT(idx_read(raw_named_plain, &b), 0);
    CHECK(check_small(&b));
    idx_free(&a);
    idx_free(&b);
}

TEST(idx_reads_1d_and_4d_and_empty)
{
    const char *dir = t_tmpdir();
    uint8_t buf[256], data[120];
    for (int i = 0; i < 120; i++)
        data[i] = (uint8_t)(255 - i);
    uint32_t d1[1] = {7}, d4[4] = {2, 3, 4, 5}, d0[2] = {0, 28};
    CHECK(write_raw(tpath(dir, "one"), buf, idx_bytes(buf, 8, 1, d1, data, 7)) == 0);
    CHECK(write_gz(tpath(dir, "four"), buf, idx_bytes(buf, 8, 4, d4, data, 120)) == 0);
    CHECK(write_gz(tpath(dir, "zero"), buf, idx_bytes(buf, 8, 2, d0, data, 0)) == 0);
    idx_array a;
    CHECK_EQ_INT(idx_read(tpath(dir, "one"), &a), 0);
    CHECK_EQ_INT(a.ndim, 1);
    CHECK_EQ_INT(a.dims[0], 7);
    CHECK_EQ_INT(a.count, 7);
    CHECK(memcmp(a.data, data, 7) == 0);
    idx_free(&a);
    CHECK_EQ_INT(idx_read(tpath(dir, "four"), &a), 0);
    CHECK_EQ_INT(a.ndim, 4);
    CHECK_EQ_INT(a.dims[3], 5);
    CHECK_EQ_INT(a.count, 120);
    CHECK(memcmp(a.data, data, 120) == 0);
    idx_free(&a);
    CHECK_EQ_INT(idx_read(tpath(dir, "zero"), &a), 0);
    CHECK_EQ_INT(a.ndim, 2);
    CHECK_EQ_INT(a.count, 0);
    idx_free(&a);
}

/* Highly compressible payload: the gzip reader must grow its buffer several times. */
TEST(idx_gzip_large_compressible_payload)
{
    const char *p = tpath(t_tmpdir(), "big.gz");
    uint32_t dims[3] = {4000, 32, 32}; /* 4,096,000 bytes that compress to a few KB */
    size_t n = (size_t)dims[0] * dims[1] * dims[2];
    uint8_t *buf = malloc(n + 16);
    CHECK(buf);
    uint8_t *data = malloc(n);
    CHECK(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)((i / 1000) % 251);
    size_t len = idx_bytes(buf, 8, 3, dims, data, n);
    int wr = write_gz(p, buf, len);
    free(buf);
    struct stat st;
    int ok = wr == 0 && stat(p, &st) == 0 && st.st_size < 100000;
    idx_array a = {0};
    int rc = ok ? idx_read(p, &a) : -100;
    int same = rc == 0 && a.count == n && memcmp(a.data, data, n) == 0;
    free(data);
    idx_free(&a);
    CHECK(ok);
    CHECK_EQ_INT(rc, 0);
    CHECK(same);
}

TEST(idx_missing_file_is_notfound)
{
    const char *p = tpath(t_tmpdir(), "nope-idx1-ubyte");
    idx_array a;
    memset(&a, 0x5a, sizeof a);
    CHECK_EQ_INT(idx_read(p, &a), AF_ENOTFOUND);
    char want[700];
    snprintf(want, sizeof want, "open %s: No such file or directory", p);
    CHECK_MSG(strcmp(af_errmsg(), want) == 0, "message: %s", af_errmsg());
    CHECK(a.data == NULL && a.count == 0 && a.ndim == 0);
}

TEST(idx_directory_is_io_error)
{
    idx_array a;
    CHECK_EQ_INT(idx_read(t_tmpdir(), &a), AF_EIO);
    CHECK(a.data == NULL);
}

/* Writes bytes (raw or gz), expects AF_EFORMAT with the path and `needle` in the message. */
static int expect_format(const char *path, const uint8_t *buf, size_t n, int gz,
                         const char *needle)
{
    if ((gz ? write_gz(path, buf, n) : write_raw(path, buf, n)) != 0)
        return 0;
    idx_array a;
    memset(&a, 0x5a, sizeof a);
    int rc = idx_read(path, &a);
    if (rc != AF_EFORMAT) {
        printf("    rc %d for %s: %s\n", rc, path, af_errmsg());
        idx_free(&a);
        return 0;
    }
    if (a.data != NULL || a.count != 0) {
        printf("    output not cleared on failure\n");
        return 0;
    }
    const char *m = af_errmsg();
    if (strncmp(m, path, strlen(path)) != 0 || !strstr(m, needle)) {
        printf("    message '%s' lacks '%s' or the path\n", m, needle);
        return 0;
    }
    return 1;
}

TEST(idx_rejects_bad_magic_and_type)
{
    const char *dir = t_tmpdir();
    uint8_t buf[64], data[4] = {1, 2, 3, 4};
    uint32_t dims[1] = {4};
    for (int gz = 0; gz < 2; gz++) {
        size_t n = idx_bytes(buf, 8, 1, dims, data, 4);
        buf[1] = 1;
        CHECK(expect_format(tpath(dir, gz ? "m.gz" : "m"), buf, n, gz,
                            "not an IDX file (magic starts 00 01"));
        n = idx_bytes(buf, 0x0d, 1, dims, data, 4);
        const char *p = tpath(dir, gz ? "t.gz" : "t");
        CHECK(expect_format(p, buf, n, gz, "unsupported IDX type"));
        char want[700];
        snprintf(want, sizeof want, "%s: unsupported IDX type 0x0d, expected 0x08 (uint8)", p);
        CHECK_MSG(strcmp(af_errmsg(), want) == 0, "message: %s", af_errmsg());
    }
}

TEST(idx_rejects_bad_dimension_count)
{
    const char *dir = t_tmpdir();
    uint8_t buf[64] = {0, 0, 8, 0};
    CHECK(expect_format(tpath(dir, "d0"), buf, 4, 0, "0 dimensions, expected 1 to 4"));
    uint32_t dims[5] = {1, 1, 1, 1, 1};
    uint8_t one = 9;
    size_t n = idx_bytes(buf, 8, 5, dims, &one, 1);
    CHECK(expect_format(tpath(dir, "d5"), buf, n, 1, "5 dimensions, expected 1 to 4"));
}

TEST(idx_rejects_truncated_header)
{
    const char *dir = t_tmpdir();
    uint8_t buf[64] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0};
    CHECK(expect_format(tpath(dir, "empty"), buf, 0, 0, "too short for an IDX header"));
    CHECK(expect_format(tpath(dir, "two"), buf, 2, 1, "too short for an IDX header"));
    CHECK(expect_format(tpath(dir, "dims"), buf, 10, 0, "truncated: IDX header needs 12"));
}

TEST(idx_rejects_truncated_and_trailing_data)
{
    const char *dir = t_tmpdir();
    uint8_t buf[128], data[40] = {0};
    uint32_t dims[3] = {2, 3, 4};
    size_t full = idx_bytes(buf, 8, 3, dims, data, 24);
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tpath(dir, gz ? "short.gz" : "short");
        CHECK(expect_format(p, buf, full - 4, gz, "truncated"));
        char want[700];
        snprintf(want, sizeof want, "%s: truncated: header says 24 bytes of data, found 20", p);
        CHECK_MSG(strcmp(af_errmsg(), want) == 0, "message: %s", af_errmsg());
        CHECK(expect_format(tpath(dir, gz ? "long.gz" : "long"), buf, full + 3, gz,
                            "header says 24 bytes of data, found "));
        CHECK(strstr(af_errmsg(), "trailing"));
    }
}

TEST(idx_lying_header_does_not_allocate)
{
    const char *dir = t_tmpdir();
    uint8_t buf[64], data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    /* 2^32-1 squared (~1.8e19 bytes) fits size_t but could never be allocated: we must
     * report truncation (AF_EFORMAT), not run out of memory (AF_ENOMEM). */
    uint32_t huge[2] = {0xffffffffu, 0xffffffffu};
    size_t n = idx_bytes(buf, 8, 2, huge, data, 8);
    CHECK(expect_format(tpath(dir, "huge"), buf, n, 0, "truncated: header says"));
    CHECK(expect_format(tpath(dir, "huge.gz"), buf, n, 1, "found 8"));
    /* Four such dimensions overflow 64 bits. */
    uint32_t over[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    n = idx_bytes(buf, 8, 4, over, data, 8);
    CHECK(expect_format(tpath(dir, "over"), buf, n, 0, "overflow"));
    CHECK(expect_format(tpath(dir, "over.gz"), buf, n, 1, "overflow"));
}

TEST(idx_rejects_corrupt_gzip)
{
    const char *dir = t_tmpdir();
    const char *good = tpath(dir, "good.gz");
    uint8_t data[3000], buf[3100];
    for (int i = 0; i < 3000; i++)
        data[i] = (uint8_t)((i * 2654435761u) >> 13); /* little redundancy: a long stream */
    uint32_t dims[1] = {3000};
    size_t n = idx_bytes(buf, 8, 1, dims, data, 3000);
    CHECK(write_gz(good, buf, n) == 0);
    char *gz;
    size_t glen;
    {
        FILE *f = fopen(good, "rb");
        CHECK(f);
        gz = malloc(8192);
        glen = fread(gz, 1, 8192, f);
        fclose(f);
    }
    int ok = glen > 200;
    /* Flipped bytes in the middle of the deflate stream. */
    memcpy(buf, gz, glen);
    for (size_t i = glen / 2; i < glen / 2 + 8; i++)
        buf[i] ^= 0xa5;
    const char *flip = tpath(dir, "flip.gz");
    ok = ok && write_raw(flip, buf, glen) == 0;
    idx_array a;
    int rc1 = idx_read(flip, &a);
    char m1[600];
    snprintf(m1, sizeof m1, "%s", af_errmsg());
    /* The stream cut short. */
    const char *cut = tpath(dir, "cut.gz");
    ok = ok && write_raw(cut, gz, glen / 2) == 0;
    int rc2 = idx_read(cut, &a);
    char m2[600];
    snprintf(m2, sizeof m2, "%s", af_errmsg());
    /* A bad CRC in the trailer: the data decodes, the check must still fail. */
    memcpy(buf, gz, glen);
    buf[glen - 6] ^= 1;
    const char *crc = tpath(dir, "crc.gz");
    ok = ok && write_raw(crc, buf, glen) == 0;
    int rc3 = idx_read(crc, &a);
    char m3[600];
    snprintf(m3, sizeof m3, "%s", af_errmsg());
    free(gz);
    CHECK(ok);
    CHECK_EQ_INT(rc1, AF_EFORMAT);
    CHECK_MSG(strstr(m1, flip) == m1 && strstr(m1, "gzip"), "message: %s", m1);
    CHECK_EQ_INT(rc2, AF_EFORMAT);
    CHECK_MSG(strstr(m2, cut) == m2 && strstr(m2, "gzip"), "message: %s", m2);
    CHECK_EQ_INT(rc3, AF_EFORMAT);
    CHECK_MSG(strstr(m3, crc) == m3 && strstr(m3, "gzip"), "message: %s", m3);
}

TEST(idx_reads_installed_fashion_mnist_labels)
{
    idx_array a;
    CHECK_EQ_INT(idx_read(FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", &a), 0);
    CHECK_EQ_INT(a.ndim, 1);
    CHECK_EQ_INT(a.dims[0], 10000);
    CHECK_EQ_INT(a.count, 10000);
    const uint8_t first[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    CHECK(memcmp(a.data, first, 10) == 0);
    size_t hist[10] = {0};
    for (size_t i = 0; i < a.count; i++)
        if (a.data[i] < 10)
            hist[a.data[i]]++;
    idx_free(&a);
    for (int c = 0; c < 10; c++)
        CHECK_EQ_INT(hist[c], 1000); /* the test split is balanced */
}
