/* dataset.h — an in-memory labelled dataset with a schema, and mini-batch gathering.
 *
 * Layer `data`: uses core only. A dataset holds its samples one of two ways: one contiguous
 * float buffer x (n × sample_size, normalised: tabular data, an app's arrays), or the raw
 * bytes x8 of an 8-bit image file plus a 256-entry table lut that normalises a byte as it is
 * gathered (a quarter of the memory, the very same floats). Labels are one array y (n, uint8
 * class ids); a schema says what a sample is. Devices and simulated clients are index views
 * (uint32 arrays) into one dataset; nothing here copies per client. The engine reads samples
 * only through data_gather / data_rows, whichever the storage; x is read directly only where
 * a float array is handed out (data_load_fashion_mnist's callers).
 */
#ifndef AF_DATA_DATASET_H
#define AF_DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DATA_MAX_CLASSES 256
#define DATA_NAME_MAX 64

typedef enum { DATA_KIND_IMAGE = 0, DATA_KIND_TABULAR = 1 } data_kind;

/* What a sample is. Projects and devices declare schemas; a task is only given to a device
 * whose dataset schema matches the project's (data_schema_compatible). */
typedef struct data_schema {
    char name[DATA_NAME_MAX];       /* "fashion-mnist" */
    data_kind kind;
    int c, h, w;                    /* image: channels, height, width; tabular: c=1,h=1,w=features */
    int n_classes;
    char class_names[DATA_MAX_CLASSES][32];
} data_schema;

/* Exactly one of x and x8 is set. A zeroed struct with x and y filled in is a valid float
 * dataset (the device library builds such views over an app's arrays). */
typedef struct data_dataset {
    data_schema schema;
    size_t n;            /* samples */
    size_t sample_size;  /* floats per sample = c*h*w */
    float *x;            /* n × sample_size normalised floats (af_alloc), or NULL if x8 is set */
    uint8_t *x8;         /* n × sample_size raw bytes (malloc), or NULL if x is set */
    float lut[256];      /* with x8: byte p stands for the float lut[p] */
    uint8_t *y;          /* n labels, owned */
} data_dataset;

/* Frees x, x8, y and the struct; NULL is fine. */
void data_dataset_free(data_dataset *ds);

/* Loads a split of the Fashion-MNIST family from IDX files (gzip or raw; "NAME.gz" is tried
 * before "NAME") as 8-bit samples: x8 holds the pixels as read, lut[p] = (p/255 - mean)/std.
 * `where` is "fashion-mnist" (looked up in $ARTIFICIEN_DATA, then
 * /usr/share/datasets/fashion-mnist/) or a folder path. train=1 loads train-*, 0 t10k-*.
 * limit>0 keeps only the first `limit` samples. Returns 0 and *out (free with
 * data_dataset_free), or an AF_E* code with a message naming the file and the problem.
 * 60,000 28×28 images take 47 MB this way, 188 MB as floats. */
int data_load_fashion_mnist_u8(const char *where, int train, float mean, float std,
                               size_t limit, data_dataset **out);

/* The same split as data_load_fashion_mnist_u8, with the samples expanded once into the float
 * buffer x (4× the memory, bit-for-bit the floats the 8-bit dataset gathers). For callers
 * that need one float array (benchmarks that feed x to the network directly, tests comparing
 * float and 8-bit storage); everything else loads 8-bit. */
int data_load_fashion_mnist(const char *where, int train, float mean, float std, size_t limit,
                            data_dataset **out);

/* Resolves `where` to the folder holding the IDX files (buffer of size cap). "fashion-mnist"
 * is $ARTIFICIEN_DATA or $ARTIFICIEN_DATA/fashion-mnist when either holds the image files,
 * else /usr/share/datasets/fashion-mnist (AF_ENOTFOUND with an install hint if none does);
 * anything else must be an existing folder (AF_ENOTFOUND / AF_EINVAL). AF_EINVAL if the path
 * does not fit in cap. */
int data_resolve_dir(const char *where, char *dir, size_t cap);

/* Copies samples idx[0..b) into x (b × sample_size floats, normalised) and their labels into
 * y. Allocates nothing: the training loop calls it every step. */
void data_gather(const data_dataset *ds, const uint32_t *idx, size_t b, float *x, uint8_t *y);

/* Samples lo..lo+count as floats (count × sample_size): a pointer into x for a float dataset
 * (scratch is not touched and may be NULL), else scratch, filled through the table (it must
 * hold count × sample_size floats). The result is read only and valid while ds and scratch
 * are. Labels need no help: they are ds->y + lo. Allocates nothing. */
const float *data_rows(const data_dataset *ds, size_t lo, size_t count, float *scratch);

/* 1 if a device holding `have` can run a task that needs `want` (same name, kind, shape and
 * class count), else 0. */
int data_schema_compatible(const data_schema *want, const data_schema *have);

/* The Fashion-MNIST schema (28×28×1, ten named classes). */
void data_schema_fashion_mnist(data_schema *s);

#endif
