/* idx.h — reader for the IDX format of the MNIST family (LeCun), gzip-compressed or raw.
 *
 * Layer `data`. An IDX file is: 2 zero bytes, a type byte (0x08 = uint8 is the only one the
 * MNIST family uses and the only one accepted), the number of dimensions, then each dimension
 * as a big-endian uint32, then the data. Every size is checked against the bytes present.
 */
#ifndef AF_DATA_IDX_H
#define AF_DATA_IDX_H

#include <stddef.h>
#include <stdint.h>

#define IDX_MAX_DIMS 4

typedef struct idx_array {
    int ndim;
    uint32_t dims[IDX_MAX_DIMS];
    size_t count;   /* product of dims */
    uint8_t *data;  /* count bytes, owned; free with idx_free */
} idx_array;

/* Reads path (gzip detected by magic bytes, not by name). 0 or AF_ENOTFOUND/AF_EIO/AF_EFORMAT
 * with a message naming the file and what is wrong. */
int idx_read(const char *path, idx_array *out);
void idx_free(idx_array *a);

#endif
