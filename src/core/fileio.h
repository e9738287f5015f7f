/* fileio.h — whole-file reads and atomic whole-file writes.
 *
 * Outputs are written to "PATH.tmp.PID" and renamed into place only when complete, so a
 * failure never leaves a partial file behind under the final name.
 */
#ifndef AF_CORE_FILEIO_H
#define AF_CORE_FILEIO_H

#include <stddef.h>

/* Reads all of path into *out (malloc'd, NUL-terminated for convenience; caller frees) and
 * its length into *len. Returns 0 or AF_EIO/AF_ENOTFOUND/AF_ENOMEM with a message. */
int af_read_file(const char *path, char **out, size_t *len);

/* Writes the `n` buffers (bufs[i], lens[i]) to path atomically. Returns 0 or AF_EIO. */
int af_write_file_atomic(const char *path, const void *const *bufs, const size_t *lens, int n);

/* Creates directory path (one level, like mkdir -p for the last component's parents too).
 * Succeeds if it exists already. */
int af_mkdir_p(const char *path);

#endif
