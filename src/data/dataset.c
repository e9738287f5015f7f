/* dataset.c — in-memory labelled datasets: Fashion-MNIST loading, schemas, batch gathering.
 *
 * Layer `data`: uses core and data/idx only. Loading decodes whole IDX files in one go and
 * normalises pixels through a 256-entry lookup table, so the 60k training split loads in a
 * fraction of a second. Nothing here keeps per-client copies: clients are index views, and
 * data_gather is the one place that copies samples (into a caller-owned batch buffer).
 * Failed loads return nothing and leave a message naming the folder or file at fault.
 */
#include "data/dataset.h"

#include "core/err.h"
#include "core/mem.h"
#include "data/idx.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define FMNIST_INSTALL_HINT "install it with `apt-get install dataset-fashion-mnist`"

static const char *const fmnist_classes[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

void data_schema_fashion_mnist(data_schema *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "fashion-mnist");
    s->kind = DATA_KIND_IMAGE;
    s->c = 1;
    s->h = 28;
    s->w = 28;
    s->n_classes = 10;
    for (int i = 0; i < 10; i++)
        snprintf(s->class_names[i], sizeof s->class_names[i], "%s", fmnist_classes[i]);
}

int data_schema_compatible(const data_schema *want, const data_schema *have)
{
    return strcmp(want->name, have->name) == 0 && want->kind == have->kind &&
           want->c == have->c && want->h == have->h && want->w == have->w &&
           want->n_classes == have->n_classes;
}

void data_dataset_free(data_dataset *ds)
{
    if (!ds)
        return;
    af_free(ds->x);
    af_free(ds->y);
    free(ds);
}

void data_gather(const data_dataset *ds, const uint32_t *idx, size_t b, float *x, uint8_t *y)
{
    const size_t ss = ds->sample_size;
    for (size_t i = 0; i < b; i++) {
        memcpy(x + i * ss, ds->x + (size_t)idx[i] * ss, ss * sizeof(float));
        y[i] = ds->y[idx[i]];
    }
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds DIR/NAME.gz, else DIR/NAME, into path. 1 if found. */
static int find_idx(const char *dir, const char *name, char *path, size_t cap)
{
    if ((size_t)snprintf(path, cap, "%s/%s.gz", dir, name) < cap && is_file(path))
        return 1;
    if ((size_t)snprintf(path, cap, "%s/%s", dir, name) < cap && is_file(path))
        return 1;
    return 0;
}

/* A folder "holds Fashion-MNIST" when either split's images are there (gz or raw). */
static int holds_fmnist(const char *dir)
{
    char p[4096];
    return find_idx(dir, "train-images-idx3-ubyte", p, sizeof p) ||
           find_idx(dir, "t10k-images-idx3-ubyte", p, sizeof p);
}

static int copy_dir(const char *src, char *dir, size_t cap)
{
    if ((size_t)snprintf(dir, cap, "%s", src) >= cap)
        return af_seterr(AF_EINVAL, "data folder path too long: %s", src);
    return 0;
}

int data_resolve_dir(const char *where, char *dir, size_t cap)
{
    if (!where || !*where)
        return af_seterr(AF_EINVAL, "data: empty dataset name or folder");
    if (strcmp(where, "fashion-mnist") == 0) {
        const char *env = getenv("ARTIFICIEN_DATA");
        char cand[4096];
        if (env && *env) {
            if (holds_fmnist(env))
                return copy_dir(env, dir, cap);
            if ((size_t)snprintf(cand, sizeof cand, "%s/fashion-mnist", env) < sizeof cand &&
                holds_fmnist(cand))
                return copy_dir(cand, dir, cap);
        }
        if (holds_fmnist(FMNIST_DEFAULT_DIR))
            return copy_dir(FMNIST_DEFAULT_DIR, dir, cap);
        if (env && *env)
            return af_seterr(AF_ENOTFOUND,
                             "fashion-mnist: no train-images-idx3-ubyte(.gz) or "
                             "t10k-images-idx3-ubyte(.gz) in %s, %s/fashion-mnist (from "
                             "$ARTIFICIEN_DATA) or " FMNIST_DEFAULT_DIR "; " FMNIST_INSTALL_HINT,
                             env, env);
        return af_seterr(AF_ENOTFOUND,
                         "fashion-mnist: no train-images-idx3-ubyte(.gz) or "
                         "t10k-images-idx3-ubyte(.gz) in " FMNIST_DEFAULT_DIR "; "
                         FMNIST_INSTALL_HINT ", or set ARTIFICIEN_DATA to the folder holding "
                         "the files");
    }
    struct stat st;
    if (stat(where, &st) != 0)
        return af_seterr(errno == ENOENT ? AF_ENOTFOUND : AF_EIO, "data folder %s: %s", where,
                         strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return af_seterr(AF_EINVAL, "data folder %s: not a directory", where);
    return copy_dir(where, dir, cap);
}

/* Reads DIR/NAME.gz or DIR/NAME (its path into path[4096]), or fails naming the folder, the
 * file and how to get it. */
static int read_split_file(const char *dir, const char *name, idx_array *a, char *path)
{
    if (!find_idx(dir, name, path, 4096))
        return af_seterr(AF_ENOTFOUND,
                         "%s: no %s.gz or %s (Fashion-MNIST IDX file); " FMNIST_INSTALL_HINT
                         " or pass the folder that holds it",
                         dir, name, name);
    return idx_read(path, a);
}

int data_load_fashion_mnist(const char *where, int train, float mean, float std, size_t limit,
                            data_dataset **out)
{
    *out = NULL;
    if (!(std > 0.0f) || !isfinite(std) || !isfinite(mean))
        return af_seterr(AF_EINVAL, "fashion-mnist: normalisation needs a finite mean and a "
                                    "std > 0 (got mean %g, std %g)",
                         (double)mean, (double)std);
    char dir[4096];
    int rc = data_resolve_dir(where, dir, sizeof dir);
    if (rc)
        return rc;

    const char *split = train ? "train" : "t10k";
    char img_name[64], lab_name[64];
    snprintf(img_name, sizeof img_name, "%s-images-idx3-ubyte", split);
    snprintf(lab_name, sizeof lab_name, "%s-labels-idx1-ubyte", split);

    idx_array img = {0}, lab = {0};
    data_dataset *ds = NULL;
    char img_path[4096], lab_path[4096];
    if ((rc = read_split_file(dir, img_name, &img, img_path)) != 0)
        goto fail;
    if ((rc = read_split_file(dir, lab_name, &lab, lab_path)) != 0)
        goto fail;
    if (img.ndim != 3) {
        rc = af_seterr(AF_EFORMAT, "%s: images must be 3-D NxHxW, got %d-D", img_path, img.ndim);
        goto fail;
    }
    if (img.dims[1] == 0 || img.dims[2] == 0 || img.dims[1] > 4096 || img.dims[2] > 4096) {
        rc = af_seterr(AF_EFORMAT, "%s: image size %ux%u, expected 1..4096 on each side",
                       img_path, img.dims[1], img.dims[2]);
        goto fail;
    }
    if (lab.ndim != 1) {
        rc = af_seterr(AF_EFORMAT, "%s: labels must be 1-D, got %d-D", lab_path, lab.ndim);
        goto fail;
    }
    if (lab.dims[0] != img.dims[0]) {
        rc = af_seterr(AF_EFORMAT, "%s: %u labels but %s has %u images", lab_path,
                       lab.dims[0], img_path, img.dims[0]);
        goto fail;
    }
    if (img.dims[0] == 0) {
        rc = af_seterr(AF_EFORMAT, "%s: no samples", img_path);
        goto fail;
    }
    size_t n = img.dims[0];
    if (limit > 0 && limit < n)
        n = limit;
    for (size_t i = 0; i < n; i++) {
        if (lab.data[i] >= 10) {
            rc = af_seterr(AF_EFORMAT, "%s: label %u at index %zu is out of range (0..9)",
                           lab_path, lab.data[i], i);
            goto fail;
        }
    }

    ds = calloc(1, sizeof *ds);
    if (!ds) {
        rc = af_seterr(AF_ENOMEM, "fashion-mnist: out of memory");
        goto fail;
    }
    data_schema_fashion_mnist(&ds->schema);
    ds->schema.h = (int)img.dims[1];
    ds->schema.w = (int)img.dims[2];
    ds->n = n;
    ds->sample_size = (size_t)img.dims[1] * img.dims[2];
    ds->x = af_alloc(n * ds->sample_size * sizeof(float));
    ds->y = af_alloc(n);
    if (!ds->x || !ds->y) {
        rc = af_seterr(AF_ENOMEM, "fashion-mnist: out of memory for %zu samples", n);
        goto fail;
    }
    /* x = (p/255 - mean)/std, one table lookup per pixel. */
    float lut[256];
    for (int p = 0; p < 256; p++)
        lut[p] = (float)(((double)p / 255.0 - (double)mean) / (double)std);
    const uint8_t *src = img.data;
    float *dst = ds->x;
    for (size_t i = 0, total = n * ds->sample_size; i < total; i++)
        dst[i] = lut[src[i]];
    memcpy(ds->y, lab.data, n);

    idx_free(&img);
    idx_free(&lab);
    *out = ds;
    return 0;
fail:
    idx_free(&img);
    idx_free(&lab);
    data_dataset_free(ds);
    return rc;
}
