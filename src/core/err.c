/* err.c — per-thread error message storage (see err.h). libc only. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define AF_ERRMSG_MAX 512

static _Thread_local char errmsg[AF_ERRMSG_MAX];

int af_seterr(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    return code;
}

int af_preerr(int code, const char *fmt, ...)
{
    char prefix[AF_ERRMSG_MAX], old[AF_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errmsg, sizeof old);
    /* compose in a buffer big enough for both, then truncate into errmsg */
    char both[2 * AF_ERRMSG_MAX + 2];
    snprintf(both, sizeof both, "%s: %s", prefix, old[0] ? old : af_strerror(code));
    memcpy(errmsg, both, AF_ERRMSG_MAX - 1);
    errmsg[AF_ERRMSG_MAX - 1] = 0;
    return code;
}

const char *af_errmsg(void) { return errmsg; }

void af_clearerr(void) { errmsg[0] = 0; }

const char *af_strerror(int code)
{
    switch (code) {
    case AF_OK: return "ok";
    case AF_EINVAL: return "invalid argument";
    case AF_ENOMEM: return "out of memory";
    case AF_EIO: return "i/o error";
    case AF_EFORMAT: return "malformed input";
    case AF_ESHAPE: return "shape mismatch";
    case AF_ENOTFOUND: return "not found";
    case AF_ERANGE: return "out of range";
    case AF_ESTATE: return "invalid state";
    case AF_EAUTH: return "not authorised";
    case AF_ENET: return "network error";
    default: return "unknown error";
    }
}
