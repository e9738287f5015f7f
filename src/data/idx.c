/* idx.c — reads IDX files (the MNIST family), gzip-compressed or raw (see idx.h).
 *
 * Layer `data`: core + zlib only. Gzip is recognised by its magic bytes 1f 8b, never by the
 * file name. A header is never trusted: the dimension product is overflow-checked and compared
 * with the bytes really present before a large buffer is allocated (raw: the file size; gzip:
 * the buffer grows as decompressed bytes arrive and reading stops as soon as more than the
 * header announced shows up). On error nothing is returned and *out is left empty.
 */
#include "data/idx.h"

#include "core/err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* A byte source: a raw file descriptor, or a gzip stream over it. */
typedef struct idx_src {
    int fd;      /* raw reads when gz == NULL */
    gzFile gz;
    const char *path;
    int err;     /* AF_E* code of the last failed src_read */
} idx_src;

/* Reads up to n bytes (fewer only at end of input). Returns the count, or -1 with the error
 * set (AF_EIO for a failed read, AF_EFORMAT for corrupt gzip data). */
static long long src_read(idx_src *s, void *dst, size_t n)
{
    uint8_t *p = dst;
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        if (want > (1u << 30))
            want = 1u << 30; /* gzread takes an unsigned count and returns an int */
        if (s->gz) {
            int r = gzread(s->gz, p + got, (unsigned)want);
            if (r < 0) {
                int zerr;
                const char *m = gzerror(s->gz, &zerr);
                if (zerr == Z_ERRNO)
                    s->err = af_seterr(AF_EIO, "read %s: %s", s->path, strerror(errno));
                else
                    s->err = af_seterr(AF_EFORMAT, "%s: corrupt gzip data (%s)", s->path, m);
                return -1;
            }
            if (r == 0) {
                /* End of input: a truncated or corrupt stream also ends here, with the error
                 * recorded in the gzFile instead of a negative return. */
                int zerr;
                const char *m = gzerror(s->gz, &zerr);
                if (zerr != Z_OK) {
                    s->err = af_seterr(AF_EFORMAT, "%s: corrupt gzip data (%s)", s->path, m);
                    return -1;
                }
                break;
            }
            got += (size_t)r;
        } else {
            ssize_t r = read(s->fd, p + got, want);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                s->err = af_seterr(AF_EIO, "read %s: %s", s->path, strerror(errno));
                return -1;
            }
            if (r == 0)
                break;
            got += (size_t)r;
        }
    }
    return (long long)got;
}

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Reads exactly `count` bytes of payload into a buffer that grows with the data actually
 * decompressed (or arriving from a pipe), so a header that lies about its size cannot make us
 * allocate for it. The first allocation is sized from the compressed size `csize` (0 if
 * unknown); MNIST-family files compress less than 4x, so they need a single allocation. */
static int read_growing(idx_src *s, size_t count, size_t csize, uint8_t **out)
{
    size_t cap = csize * 4 + 65536;
    if (cap > count || cap < csize) /* second test: overflow on a 32-bit size_t */
        cap = count;
    int rc;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf)
        return af_seterr(AF_ENOMEM, "%s: out of memory for %zu bytes", s->path, cap);
    size_t have = 0;
    for (;;) {
        long long r = src_read(s, buf + have, cap - have);
        if (r < 0) {
            rc = s->err;
            goto fail;
        }
        have += (size_t)r;
        if (have < cap) {
            rc = af_seterr(AF_EFORMAT, "%s: truncated: header says %zu bytes of data, found %zu",
                           s->path, count, have);
            goto fail;
        }
        if (have == count)
            break;
        size_t ncap = cap > count / 2 ? count : cap * 2;
        uint8_t *nb = realloc(buf, ncap);
        if (!nb) {
            rc = af_seterr(AF_ENOMEM, "%s: out of memory for %zu bytes", s->path, ncap);
            goto fail;
        }
        buf = nb;
        cap = ncap;
    }
    /* Reading on to the end checks the gzip trailer (CRC, length) and finds extra bytes. */
    uint8_t extra;
    long long r = src_read(s, &extra, 1);
    if (r < 0) {
        rc = s->err;
        goto fail;
    }
    if (r > 0) {
        rc = af_seterr(AF_EFORMAT,
                       "%s: header says %zu bytes of data, found more (trailing bytes)", s->path,
                       count);
        goto fail;
    }
    *out = buf;
    return 0;
fail:
    free(buf);
    return rc;
}

int idx_read(const char *path, idx_array *out)
{
    memset(out, 0, sizeof *out);
    idx_src s = {.fd = -1, .gz = NULL, .path = path};
    uint8_t *data = NULL;
    int rc;

    s.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s.fd < 0)
        return af_seterr(errno == ENOENT ? AF_ENOTFOUND : AF_EIO, "open %s: %s", path,
                         strerror(errno));
    struct stat st;
    if (fstat(s.fd, &st) != 0) {
        rc = af_seterr(AF_EIO, "stat %s: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = af_seterr(AF_EIO, "read %s: Is a directory", path);
        goto fail;
    }

    uint8_t magic[2] = {0, 0};
    ssize_t m = pread(s.fd, magic, 2, 0);
    if (m < 0) {
        rc = af_seterr(AF_EIO, "read %s: %s", path, strerror(errno));
        goto fail;
    }
    if (m == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        s.gz = gzdopen(s.fd, "rb");
        if (!s.gz) {
            rc = af_seterr(AF_ENOMEM, "%s: cannot start gzip decoding", path);
            goto fail;
        }
        s.fd = -1; /* owned by the gzFile now */
        gzbuffer(s.gz, 1 << 18); /* big input chunks: fewer syscalls, faster inflate */
    }

    /* Header: 00 00 TYPE NDIM, then NDIM big-endian uint32 dimensions. */
    uint8_t hdr[4 + 4 * IDX_MAX_DIMS];
    long long got = src_read(&s, hdr, 4);
    if (got < 0) {
        rc = s.err;
        goto fail;
    }
    if (got < 4) {
        rc = af_seterr(AF_EFORMAT, "%s: truncated: %lld bytes, too short for an IDX header",
                       path, got);
        goto fail;
    }
    if (hdr[0] != 0 || hdr[1] != 0) {
        rc = af_seterr(AF_EFORMAT, "%s: not an IDX file (magic starts %02x %02x, expected 00 00)",
                       path, hdr[0], hdr[1]);
        goto fail;
    }
    if (hdr[2] != 0x08) {
        rc = af_seterr(AF_EFORMAT, "%s: unsupported IDX type 0x%02x, expected 0x08 (uint8)",
                       path, hdr[2]);
        goto fail;
    }
    int ndim = hdr[3];
    if (ndim < 1 || ndim > IDX_MAX_DIMS) {
        rc = af_seterr(AF_EFORMAT, "%s: IDX header has %d dimensions, expected 1 to %d", path,
                       ndim, IDX_MAX_DIMS);
        goto fail;
    }
    got = src_read(&s, hdr + 4, 4 * (size_t)ndim);
    if (got < 0) {
        rc = s.err;
        goto fail;
    }
    if (got < 4 * ndim) {
        rc = af_seterr(AF_EFORMAT, "%s: truncated: IDX header needs %d dimension bytes, found %lld",
                       path, 4 * ndim, got);
        goto fail;
    }
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = be32(hdr + 4 + 4 * i);
        out->dims[i] = d;
        if (d && count > SIZE_MAX / d) {
            rc = af_seterr(AF_EFORMAT, "%s: IDX dimensions overflow (product too large)", path);
            goto fail;
        }
        count *= d;
    }
    size_t hlen = 4 + 4 * (size_t)ndim;

    if (s.gz || !S_ISREG(st.st_mode)) {
        rc = read_growing(&s, count, s.gz ? (size_t)st.st_size : 0, &data);
        if (rc)
            goto fail;
    } else {
        /* Raw: the file size tells the truth; check it before allocating anything. */
        size_t found = (size_t)st.st_size - hlen;
        if (found != count) {
            if (found < count)
                rc = af_seterr(AF_EFORMAT,
                               "%s: truncated: header says %zu bytes of data, found %zu", path,
                               count, found);
            else
                rc = af_seterr(AF_EFORMAT,
                               "%s: header says %zu bytes of data, found %zu (trailing bytes)",
                               path, count, found);
            goto fail;
        }
        data = malloc(count ? count : 1);
        if (!data) {
            rc = af_seterr(AF_ENOMEM, "%s: out of memory for %zu bytes", path, count);
            goto fail;
        }
        got = src_read(&s, data, count);
        if (got < 0) {
            rc = s.err;
            goto fail;
        }
        if ((size_t)got != count) {
            rc = af_seterr(AF_EFORMAT, "%s: truncated: header says %zu bytes of data, found %lld",
                           path, count, got);
            goto fail;
        }
    }

    if (s.gz)
        gzclose(s.gz);
    else
        close(s.fd);
    out->ndim = ndim;
    out->count = count;
    out->data = data;
    return 0;

fail:
    free(data);
    if (s.gz)
        gzclose(s.gz);
    else if (s.fd >= 0)
        close(s.fd);
    memset(out, 0, sizeof *out);
    return rc;
}

void idx_free(idx_array *a)
{
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}
