/* strbuf.c — growable text buffer (see strbuf.h). libc only. */
#include "core/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

int af_strbuf_printf(af_strbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return b->oom;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf ? b->buf + b->len : NULL, b->buf ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return b->oom = AF_EINVAL;
        if (b->buf && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return 0;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb)
            return b->oom = AF_ENOMEM;
        b->buf = nb;
        b->cap = cap;
    }
}

void af_strbuf_free(af_strbuf *b)
{
    if (!b)
        return;
    free(b->buf);
    memset(b, 0, sizeof *b);
}
