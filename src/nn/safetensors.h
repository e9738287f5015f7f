/* safetensors.h — read and write the safetensors format (Hugging Face).
 *
 * Layer `nn`. A file is: an 8-byte little-endian header length N, N bytes of JSON header
 * {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, …,
 *  "__metadata__": {"key": "string value", …}}, then the raw little-endian tensor bytes.
 * Reading validates everything: header length within the file, JSON well-formed, known
 * dtype, offsets inside the data area, size = product(shape)·dtype size, no overlaps, and
 * the data area fully covered. Every dtype of st_dtype is parsed (the data is left as raw
 * little-endian bytes, possibly unaligned: memcpy it out); loaders of model weights accept only
 * F32 (and I64/I32/U8 for metadata-like tensors). Any lie is an AF_EFORMAT error naming the
 * tensor. Only F32 is written.
 */
#ifndef AF_NN_SAFETENSORS_H
#define AF_NN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum { ST_F32 = 0, ST_F64, ST_I64, ST_I32, ST_U8, ST_F16, ST_BF16, ST_I8, ST_I16, ST_BOOL } st_dtype;

typedef struct st_tensor {
    char *name;           /* owned */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    const uint8_t *data;  /* points into the file buffer (st_file.buf) */
} st_tensor;

typedef struct st_file {
    uint8_t *buf;         /* whole file, owned */
    size_t len;
    int n_tensors;
    st_tensor *tensors;   /* in data-offset order */
    int n_meta;
    char **meta_keys;     /* owned */
    char **meta_vals;     /* owned */
} st_file;

/* Parses a safetensors file from disk. 0 or AF_E* with "PATH: problem" message. */
int st_read(const char *path, st_file *out);
/* Parses from memory (takes a copy of buf). `what` names the source in messages. */
int st_parse(const void *buf, size_t len, const char *what, st_file *out);
void st_free(st_file *f);

/* Looks up a tensor or metadata value by name (NULL if absent). */
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key);

/* Bytes per element of a dtype, and its safetensors name ("F32"). */
size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t);

/* A tensor to write: always F32. */
typedef struct st_out_tensor {
    const char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data;
} st_out_tensor;

/* Serialises tensors (in the given order, contiguous) and metadata into one malloc'd buffer
 * (*out, *len; caller frees). The header is padded with spaces to a multiple of 8 bytes so
 * tensor data is aligned. 0 or AF_ENOMEM/AF_EINVAL. */
int st_serialize(const st_out_tensor *t, int n, const char *const *meta_keys,
                 const char *const *meta_vals, int n_meta, uint8_t **out, size_t *len);
/* st_serialize then an atomic write to path (no partial file on failure). */
int st_write(const char *path, const st_out_tensor *t, int n, const char *const *meta_keys,
             const char *const *meta_vals, int n_meta);

#endif
