/* test_fileio.c — tests for core/fileio: atomic writes (content, overwrite, no temp file left
 * on success or failure), whole-file reads (empty, large, missing, a directory) with messages
 * naming the path, and af_mkdir_p on nested, existing and impossible paths.
 */
#include "../test.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/fileio.h"

/* Number of entries in dir (not . or ..); with `name` set to the first one's name. */
static int dir_entries(const char *dir, char *name, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (n++ == 0 && name)
            snprintf(name, cap, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

TEST(fileio_atomic_write_roundtrip_no_temp)
{
    const char *dir = t_tmpdir();
    char path[600], name[256];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    const char a[] = "hello, ", b[] = "", c[] = "world\n";
    const void *bufs[3] = {a, b, c};
    size_t lens[3] = {strlen(a), 0, strlen(c)};
    CHECK_EQ_INT(af_write_file_atomic(path, bufs, lens, 3), 0);
    CHECK_EQ_INT(dir_entries(dir, name, sizeof name), 1);
    CHECK(strcmp(name, "out.bin") == 0);
    char *got;
    size_t n;
    CHECK_EQ_INT(af_read_file(path, &got, &n), 0);
    CHECK_EQ_INT(n, 13);
    CHECK(memcmp(got, "hello, world\n", 13) == 0);
    CHECK(got[n] == 0);
    free(got);
    /* overwrite with something shorter: the old tail must be gone */
    const void *b2[1] = {"x"};
    size_t l2[1] = {1};
    CHECK_EQ_INT(af_write_file_atomic(path, b2, l2, 1), 0);
    CHECK_EQ_INT(af_read_file(path, &got, &n), 0);
    CHECK_EQ_INT(n, 1);
    CHECK(got[0] == 'x');
    free(got);
    CHECK_EQ_INT(dir_entries(dir, NULL, 0), 1);
    /* zero buffers make an empty file */
    CHECK_EQ_INT(af_write_file_atomic(path, NULL, NULL, 0), 0);
    CHECK_EQ_INT(af_read_file(path, &got, &n), 0);
    CHECK_EQ_INT(n, 0);
    CHECK(got != NULL && got[0] == 0);
    free(got);
}

TEST(fileio_atomic_write_failure_leaves_nothing)
{
    const char *dir = t_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/missing/sub/out.bin", dir);
    const void *bufs[1] = {"abc"};
    size_t lens[1] = {3};
    af_clearerr();
    int rc = af_write_file_atomic(path, bufs, lens, 1);
    CHECK_EQ_INT(rc, AF_EIO);
    CHECK(strstr(af_errmsg(), "missing/sub/out.bin") != NULL);
    CHECK_EQ_INT(dir_entries(dir, NULL, 0), 0);
    /* renaming onto a directory fails after the temp file is written: it must be removed */
    char target[600];
    snprintf(target, sizeof target, "%s/adir", dir);
    CHECK_EQ_INT(mkdir(target, 0700), 0);
    char inner[700];
    snprintf(inner, sizeof inner, "%s/keep", target);
    FILE *f = fopen(inner, "w");
    CHECK(f != NULL);
    fclose(f);
    rc = af_write_file_atomic(target, bufs, lens, 1);
    CHECK(rc < 0);
    CHECK(strstr(af_errmsg(), "adir") != NULL);
    char name[256];
    CHECK_EQ_INT(dir_entries(dir, name, sizeof name), 1); /* only adir itself */
    CHECK(strcmp(name, "adir") == 0);
}

TEST(fileio_read_large_file)
{
    const char *dir = t_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/big", dir);
    size_t n = 300001; /* past the 64 KiB first buffer, not a power of two */
    unsigned char *data = malloc(n);
    CHECK(data != NULL);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 131 + (i >> 9));
    const void *bufs[1] = {data};
    CHECK_EQ_INT(af_write_file_atomic(path, bufs, &n, 1), 0);
    char *got;
    size_t len;
    int rc = af_read_file(path, &got, &len);
    int same = rc == 0 && len == n && memcmp(got, data, n) == 0 && got[n] == 0;
    if (rc == 0)
        free(got);
    free(data);
    CHECK(same);
    /* exactly 64 KiB, the buffer boundary */
    size_t k = 65536;
    data = calloc(1, k);
    CHECK(data != NULL);
    data[k - 1] = 7;
    bufs[0] = data;
    CHECK_EQ_INT(af_write_file_atomic(path, bufs, &k, 1), 0);
    rc = af_read_file(path, &got, &len);
    same = rc == 0 && len == k && got[k - 1] == 7 && got[k] == 0;
    if (rc == 0)
        free(got);
    free(data);
    CHECK(same);
}

TEST(fileio_read_errors_name_the_path)
{
    const char *dir = t_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/no-such-file.idx", dir);
    char *got = (char *)1;
    size_t n = 99;
    int rc = af_read_file(path, &got, &n);
    CHECK_EQ_INT(rc, AF_ENOTFOUND);
    CHECK(got == NULL && n == 0);
    CHECK(strstr(af_errmsg(), path) != NULL);
    CHECK(strstr(af_errmsg(), "No such file") != NULL);
    /* a directory is not a file */
    rc = af_read_file(dir, &got, &n);
    CHECK(rc == AF_EIO);
    CHECK(got == NULL);
    CHECK(strstr(af_errmsg(), dir) != NULL);
}

TEST(fileio_mkdir_p_nested)
{
    const char *dir = t_tmpdir();
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/a/b/c/d", dir);
    CHECK_EQ_INT(af_mkdir_p(path), 0);
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK_EQ_INT(af_mkdir_p(path), 0); /* exists already */
    snprintf(path, sizeof path, "%s/a/b/e/", dir); /* trailing slash */
    CHECK_EQ_INT(af_mkdir_p(path), 0);
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    /* a component that is a file */
    char file[600];
    snprintf(file, sizeof file, "%s/a/plain", dir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    fclose(f);
    snprintf(path, sizeof path, "%s/a/plain/x", dir);
    CHECK(af_mkdir_p(path) < 0);
    CHECK(strstr(af_errmsg(), "plain") != NULL);
    CHECK(af_mkdir_p(file) < 0); /* the path itself is a file */
    CHECK(strstr(af_errmsg(), "not a directory") != NULL);
    CHECK_EQ_INT(af_mkdir_p(""), AF_EINVAL);
}
