/* fileio.c — whole-file read, atomic write, mkdir -p (see fileio.h). libc + POSIX only. */
#define _POSIX_C_SOURCE 200809L
#include "core/fileio.h"

#include "core/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int af_read_file(const char *path, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return af_seterr(errno == ENOENT ? AF_ENOTFOUND : AF_EIO, "open %s: %s", path,
                         strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return af_seterr(AF_ENOMEM, "read %s: out of memory", path);
    }
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) {
            if (ferror(f)) {
                free(buf);
                fclose(f);
                return af_seterr(AF_EIO, "read %s: %s", path, strerror(errno));
            }
            break;
        }
        char *nb = realloc(buf, cap * 2 + 1);
        if (!nb) {
            free(buf);
            fclose(f);
            return af_seterr(AF_ENOMEM, "read %s: out of memory", path);
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int af_write_file_atomic(const char *path, const void *const *bufs, const size_t *lens, int n)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return af_seterr(AF_EINVAL, "write %s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return af_seterr(AF_EIO, "create %s: %s", tmp, strerror(errno));
    for (int i = 0; i < n; i++) {
        if (lens[i] && fwrite(bufs[i], 1, lens[i], f) != lens[i]) {
            int e = errno;
            fclose(f);
            unlink(tmp);
            return af_seterr(AF_EIO, "write %s: %s", path, strerror(e));
        }
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int e = errno;
        fclose(f);
        unlink(tmp);
        return af_seterr(AF_EIO, "write %s: %s", path, strerror(e));
    }
    if (fclose(f) != 0) {
        unlink(tmp);
        return af_seterr(AF_EIO, "write %s: %s", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return af_seterr(AF_EIO, "rename %s: %s", path, strerror(e));
    }
    return 0;
}

int af_mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return af_seterr(AF_EINVAL, "mkdir: bad path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return af_seterr(AF_EIO, "mkdir %s: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return af_seterr(AF_EIO, "mkdir %s: not a directory", path);
    return 0;
}
