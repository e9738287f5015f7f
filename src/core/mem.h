/* mem.h — aligned allocation for kernel buffers (64-byte: one cache line, one AVX-512 vector).
 * af_free(NULL) is a no-op. Library code reports allocation failure as AF_ENOMEM. */
#ifndef AF_CORE_MEM_H
#define AF_CORE_MEM_H

#include <stddef.h>

/* Zeroed, 64-byte aligned block of n bytes (n may be 0); NULL on failure. Free with af_free. */
void *af_alloc(size_t n);
void af_free(void *p);

#endif
