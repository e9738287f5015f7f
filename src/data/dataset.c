/* dataset.c — in-memory labelled datasets: Fashion-MNIST loading, schemas, batch gathering.
 *
 * Layer `data`: uses core and data/idx only. Loading decodes whole IDX files in one go and
 * keeps the pixels as bytes; a 256-entry table normalises them as they are gathered, so the
 * 60k training split loads in a fraction of a second and takes 47 MB, not 188. Nothing here
 * keeps per-client copies: clients are index views, and data_gather / data_rows are the only
 * places that turn samples into floats (into caller-owned buffers, allocating nothing).
 * Failed loads return nothing and leave a message naming the folder or file at fault.
 */
#include "data/dataset.h"

#include "core/err.h"
#include "core/mem.h"
#include "data/idx.h"

#include <errno.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
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
    free(ds->x8); /* idx_read's buffer, handed over (malloc) */
    af_free(ds->y);
    free(ds);
}

/* dst[k] = lut[src[k]]: the float each byte stands for. The loop at the end is the
 * reference; with AVX-512 the table sits in 16 registers and 16 bytes at a time are looked
 * up by permutes: vpermt2ps picks from a 32-entry pair of registers by the index's low 5 bits,
 * and bits 5, 6 and 7 choose among the 8 pairs through 3 levels of blends. Only table
 * entries move, so the result is the reference's bit for bit; 40% less time than what
 * compilers make of the loop (0.9 vs 1.5 ms for the 10k test images). */
static void decode(const float *restrict lut, const uint8_t *restrict src, size_t len,
                   float *restrict dst)
{
    size_t k = 0;
#if defined(__AVX512F__)
    __m512 t[16];
    for (int i = 0; i < 16; i++)
        t[i] = _mm512_loadu_ps(lut + 16 * i);
    const __m512i bit5 = _mm512_set1_epi32(32), bit6 = _mm512_set1_epi32(64),
                  bit7 = _mm512_set1_epi32(128);
    for (; k + 16 <= len; k += 16) {
        const __m512i i = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + k)));
        const __mmask16 m5 = _mm512_test_epi32_mask(i, bit5), m6 = _mm512_test_epi32_mask(i, bit6),
                        m7 = _mm512_test_epi32_mask(i, bit7);
        __m512 p[8];
        for (int g = 0; g < 8; g++) /* p[g] = lut[32g + (i & 31)] */
            p[g] = _mm512_permutex2var_ps(t[2 * g], i, t[2 * g + 1]);
        const __m512 q0 = _mm512_mask_blend_ps(m5, p[0], p[1]), q1 = _mm512_mask_blend_ps(m5, p[2], p[3]),
                     q2 = _mm512_mask_blend_ps(m5, p[4], p[5]), q3 = _mm512_mask_blend_ps(m5, p[6], p[7]);
        const __m512 r0 = _mm512_mask_blend_ps(m6, q0, q1), r1 = _mm512_mask_blend_ps(m6, q2, q3);
        _mm512_storeu_ps(dst + k, _mm512_mask_blend_ps(m7, r0, r1));
    }
#endif
    for (; k < len; k++)
        dst[k] = lut[src[k]];
}

/* Shuffled batches pick rows at random from tens of MB and the hardware prefetcher cannot
 * guess the next one; asking for the row two samples ahead hides the miss (measured: a 60k
 * epoch's gathering 28 ms without, 10 ms with, 15 ms for the float rows' memcpy). */
static void prefetch_row(const uint8_t *p, size_t len)
{
    for (size_t o = 0; o < len; o += 64)
        __builtin_prefetch(p + o);
}

void data_gather(const data_dataset *ds, const uint32_t *idx, size_t b, float *x, uint8_t *y)
{
    const size_t ss = ds->sample_size;
    if (!ds->x8) {
        for (size_t i = 0; i < b; i++) {
            memcpy(x + i * ss, ds->x + (size_t)idx[i] * ss, ss * sizeof(float));
            y[i] = ds->y[idx[i]];
        }
        return;
    }
    for (size_t i = 0; i < b; i++) {
        if (i + 2 < b)
            prefetch_row(ds->x8 + (size_t)idx[i + 2] * ss, ss);
        decode(ds->lut, ds->x8 + (size_t)idx[i] * ss, ss, x + i * ss);
        y[i] = ds->y[idx[i]];
    }
}

const float *data_rows(const data_dataset *ds, size_t lo, size_t count, float *scratch)
{
    if (!ds->x8)
        return ds->x + lo * ds->sample_size;
    decode(ds->lut, ds->x8 + lo * ds->sample_size, count * ds->sample_size, scratch);
    return scratch;
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

int data_load_fashion_mnist_u8(const char *where, int train, float mean, float std,
                               size_t limit, data_dataset **out)
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
    ds->y = af_alloc(n);
    if (!ds->y) {
        rc = af_seterr(AF_ENOMEM, "fashion-mnist: out of memory for %zu samples", n);
        goto fail;
    }
    /* The pixels stay as read: the image file's buffer becomes x8 (no second copy, so the
     * peak is the bytes once), cut to `limit` samples. */
    ds->x8 = img.data;
    img.data = NULL;
    if (n < img.dims[0]) {
        uint8_t *cut = realloc(ds->x8, n * ds->sample_size);
        if (cut) /* a failed shrink only keeps the longer buffer */
            ds->x8 = cut;
    }
    /* lut[p] = (p/255 - mean)/std, in double, rounded once to float: a gathered pixel is the
     * float that normalising the whole file up front would have stored. */
    for (int p = 0; p < 256; p++)
        ds->lut[p] = (float)(((double)p / 255.0 - (double)mean) / (double)std);
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

int data_load_fashion_mnist(const char *where, int train, float mean, float std, size_t limit,
                            data_dataset **out)
{
    data_dataset *ds;
    int rc = data_load_fashion_mnist_u8(where, train, mean, std, limit, &ds);
    if (rc) {
        *out = NULL;
        return rc;
    }
    ds->x = af_alloc(ds->n * ds->sample_size * sizeof(float));
    if (!ds->x) {
        size_t n = ds->n;
        data_dataset_free(ds);
        *out = NULL;
        return af_seterr(AF_ENOMEM, "fashion-mnist: out of memory for %zu samples as floats", n);
    }
    data_rows(ds, 0, ds->n, ds->x);
    free(ds->x8);
    ds->x8 = NULL;
    *out = ds;
    return 0;
}
