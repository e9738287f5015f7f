/* dataset.h — an in-memory labelled dataset with a schema, and mini-batch gathering.
 *
 * Layer `data`: uses core only. A dataset is one contiguous float buffer x (n × sample_size,
 * normalised) and one label array y (n, uint8 class ids), plus a schema that says what a
 * sample is (kind, shape or attribute names, class names). Devices and simulated clients are
 * index views (uint32 arrays) into one dataset; nothing here copies per client.
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

typedef struct data_dataset {
    data_schema schema;
    size_t n;            /* samples */
    size_t sample_size;  /* floats per sample = c*h*w */
    float *x;            /* n × sample_size, owned */
    uint8_t *y;          /* n labels, owned */
} data_dataset;

/* Frees everything; NULL is fine. */
void data_dataset_free(data_dataset *ds);

/* Loads a split of the Fashion-MNIST family from IDX files (gzip or raw; "NAME.gz" is tried
 * before "NAME"). `where` is "fashion-mnist" (looked up in $ARTIFICIEN_DATA, then
 * /usr/share/datasets/fashion-mnist/) or a folder path. train=1 loads train-*, 0 t10k-*.
 * Pixels become (p/255 - mean)/std. limit>0 keeps only the first `limit` samples.
 * Returns 0 and *out, or an AF_E* code with a message naming the file and the problem. */
int data_load_fashion_mnist(const char *where, int train, float mean, float std, size_t limit,
                            data_dataset **out);

/* Resolves `where` to the folder holding the IDX files (buffer of size cap). "fashion-mnist"
 * is $ARTIFICIEN_DATA or $ARTIFICIEN_DATA/fashion-mnist when either holds the image files,
 * else /usr/share/datasets/fashion-mnist (AF_ENOTFOUND with an install hint if none does);
 * anything else must be an existing folder (AF_ENOTFOUND / AF_EINVAL). AF_EINVAL if the path
 * does not fit in cap. */
int data_resolve_dir(const char *where, char *dir, size_t cap);

/* Copies samples idx[0..b) into x (b × sample_size) and their labels into y. */
void data_gather(const data_dataset *ds, const uint32_t *idx, size_t b, float *x, uint8_t *y);

/* 1 if a device holding `have` can run a task that needs `want` (same name, kind, shape and
 * class count), else 0. */
int data_schema_compatible(const data_schema *want, const data_schema *have);

/* The Fashion-MNIST schema (28×28×1, ten named classes). */
void data_schema_fashion_mnist(data_schema *s);

#endif
