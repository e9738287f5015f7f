/* strbuf.h — a growable text buffer for building files and messages in memory.
 *
 * Layer `core`, libc only. The first failure sticks (b->oom) so a writer can append many
 * pieces and check once at the end; af_strbuf_printf also returns it for callers that check
 * each step. Zero-initialise (`af_strbuf b = {0};`), free with af_strbuf_free.
 */
#ifndef AF_CORE_STRBUF_H
#define AF_CORE_STRBUF_H

#include <stddef.h>

typedef struct af_strbuf {
    char *buf;   /* NUL-terminated text (NULL until the first append), owned */
    size_t len;  /* bytes used, without the NUL */
    size_t cap;
    int oom;     /* an append failed: the text is incomplete */
} af_strbuf;

/* Appends printf-style text. 0, or AF_ENOMEM (allocation) / AF_EINVAL (bad format); after
 * a failure every later append is a no-op returning the same code. */
int af_strbuf_printf(af_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Frees the text and zeroes b; NULL-safe. */
void af_strbuf_free(af_strbuf *b);

#endif
