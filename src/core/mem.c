/* mem.c — aligned zeroed allocation (see mem.h). libc only. */
#include "core/mem.h"

#include <stdlib.h>
#include <string.h>

void *af_alloc(size_t n)
{
    size_t sz = (n + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, sz ? sz : 64);
    if (p)
        memset(p, 0, sz ? sz : 64);
    return p;
}

void af_free(void *p) { free(p); }
