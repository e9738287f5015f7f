/* auth.c — tokens, hashes and secret files (see auth.h). */
#include "server/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <strings.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "core/err.h"

int srv_auth_init(void)
{
    if (sodium_init() < 0)
        return af_seterr(AF_EINVAL, "libsodium failed to initialise");
    return 0;
}

void srv_token_new(char out[SRV_TOKEN_CHARS + 1])
{
    unsigned char raw[SRV_TOKEN_CHARS / 2];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(out, SRV_TOKEN_CHARS + 1, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
}

void srv_token_hash(const char *token, size_t len, uint8_t out[SRV_HASH_BYTES])
{
    crypto_hash_sha256(out, (const unsigned char *)token, len);
}

int srv_bearer(const char *header, const char **token, size_t *len)
{
    if (!header)
        return af_seterr(AF_EAUTH, "missing Authorization header (expected \"Bearer TOKEN\")");
    if (strncasecmp(header, "Bearer ", 7) != 0)
        return af_seterr(AF_EAUTH, "Authorization header is not \"Bearer TOKEN\"");
    const char *t = header + 7;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (!n)
        return af_seterr(AF_EAUTH, "empty bearer token");
    *token = t;
    *len = n;
    return 0;
}

int srv_write_secret_file(const char *path, const char *text)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return af_seterr(AF_EIO, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return af_seterr(AF_EIO, "create %s: %s", tmp, strerror(errno));
    size_t n = strlen(text);
    int ok = fchmod(fd, 0600) == 0 && write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1 &&
             fsync(fd) == 0;
    int err = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        if (ok)
            err = errno;
        unlink(tmp);
        return af_seterr(AF_EIO, "write %s: %s", path, strerror(err));
    }
    return 0;
}
