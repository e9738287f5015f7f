/* err.h — error codes and the per-thread error message.
 *
 * Every fallible function in Artificien returns int: 0 on success or a negative AF_E* code,
 * and leaves a readable message ("open data/x.idx: No such file or directory") that
 * af_errmsg() returns until the next error on the same thread. Library code never prints
 * and never exits; only main() decides what to do with an error.
 */
#ifndef AF_CORE_ERR_H
#define AF_CORE_ERR_H

enum {
    AF_OK = 0,
    AF_EINVAL = -1,    /* bad argument or option value */
    AF_ENOMEM = -2,    /* allocation failed */
    AF_EIO = -3,       /* read/write/open failed */
    AF_EFORMAT = -4,   /* corrupt or malformed file or message */
    AF_ESHAPE = -5,    /* shapes do not agree */
    AF_ENOTFOUND = -6, /* file, name or key not found */
    AF_ERANGE = -7,    /* value out of the allowed range */
    AF_ESTATE = -8,    /* operation not valid in the current state */
    AF_EAUTH = -9,     /* missing or wrong credentials */
    AF_ENET = -10,     /* network failure */
};

/* Records code and a printf-style message for this thread; returns code so callers can write
 * `return af_seterr(AF_EIO, "open %s: %s", path, strerror(errno));`. */
int af_seterr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with "prefix: " (adds context while unwinding); returns code. */
int af_preerr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message recorded on this thread ("" if none). Owned by the library; valid until
 * the next af_seterr on this thread. */
const char *af_errmsg(void);

/* Static name of a code: "invalid argument", "out of memory", … */
const char *af_strerror(int code);

/* Clears the message of this thread. */
void af_clearerr(void);

#endif
