/* safetensors.c — reader and writer for the safetensors format (see safetensors.h).
 *
 * Layer `nn`: core + cJSON only. The reader trusts nothing in a file: every field of the
 * header is checked (types, ranges, overflow, coverage of the data area) before any tensor is
 * exposed, and a failed parse returns nothing. The writer emits F32 tensors contiguously in
 * the caller's order with the header space-padded to a multiple of 8, which is what
 * Python's `safetensors` produces and accepts. Tensor data is never interpreted here: callers
 * read st_tensor.data (little-endian, possibly unaligned for files from other writers).
 */
#include "nn/safetensors.h"

#include "core/err.h"
#include "core/fileio.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Same limit as the reference implementation: a bigger header is hostile, not a model. */
#define ST_MAX_HEADER 100000000ull
/* Largest integer the header may hold: doubles are exact up to 2^53, and cJSON prints
 * integers of 16 digits or more in exponent form, which other readers reject. */
#define ST_MAX_INT 999999999999999.0

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8}, [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
    [ST_U8] = {"U8", 1},   [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_I8] = {"I8", 1},
    [ST_I16] = {"I16", 2}, [ST_BOOL] = {"BOOL", 1},
};
#define ST_N_DTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

size_t st_dtype_size(st_dtype t)
{
    return (int)t >= 0 && (int)t < ST_N_DTYPES ? st_dtypes[t].size : 0;
}

const char *st_dtype_name(st_dtype t)
{
    return (int)t >= 0 && (int)t < ST_N_DTYPES ? st_dtypes[t].name : "?";
}

static int dtype_from_name(const char *s, st_dtype *t)
{
    for (int i = 0; i < ST_N_DTYPES; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *t = (st_dtype)i;
            return 1;
        }
    }
    return 0;
}

static int is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

void st_free(st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

/* ---- reading ---------------------------------------------------------------------------- */

/* A tensor being validated: its entry and its byte range within the data area. */
typedef struct st_parsed {
    st_tensor t;
    uint64_t begin, end;
} st_parsed;

/* A non-negative integer JSON number no larger than ST_MAX_INT, into *v. */
static int json_uint(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j))
        return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_INT || d != floor(d))
        return 0;
    *v = (uint64_t)d;
    return 1;
}

static int parse_tensor(const cJSON *e, const char *what, uint64_t data_len, st_parsed *p)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return af_seterr(AF_EFORMAT, "%s: tensor '%s': entry is not a JSON object", what, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dt)
        return af_seterr(AF_EFORMAT, "%s: tensor '%s': missing \"dtype\"", what, name);
    if (!shape)
        return af_seterr(AF_EFORMAT, "%s: tensor '%s': missing \"shape\"", what, name);
    if (!offs)
        return af_seterr(AF_EFORMAT, "%s: tensor '%s': missing \"data_offsets\"", what, name);
    if (!cJSON_IsString(dt))
        return af_seterr(AF_EFORMAT, "%s: tensor '%s': \"dtype\" is not a string", what, name);
    if (!dtype_from_name(dt->valuestring, &p->t.dtype))
        return af_seterr(AF_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", what, name,
                         dt->valuestring);
    if (!cJSON_IsArray(shape))
        return af_seterr(AF_EFORMAT, "%s: tensor '%s': \"shape\" is not an array", what, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return af_seterr(AF_EFORMAT, "%s: tensor '%s': %d dimensions, at most %d supported",
                         what, name, ndim, ST_MAX_DIMS);
    p->t.ndim = ndim;
    /* elems = prod(shape), checked so that elems * dtype size cannot overflow. */
    uint64_t elems = 1;
    size_t esize = st_dtypes[p->t.dtype].size;
    int k = 0, zero = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape)
    {
        uint64_t v;
        if (!json_uint(d, &v))
            return af_seterr(AF_EFORMAT,
                             "%s: tensor '%s': shape[%d] is not a non-negative integer", what,
                             name, k);
        p->t.shape[k++] = (int64_t)v;
        if (v == 0)
            zero = 1;
        else if (!zero && elems > UINT64_MAX / esize / v)
            return af_seterr(AF_EFORMAT, "%s: tensor '%s': shape product overflows", what,
                             name);
        else if (!zero)
            elems *= v;
    }
    if (zero)
        elems = 0;
    uint64_t nbytes = elems * esize;

    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_uint(cJSON_GetArrayItem(offs, 0), &p->begin) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &p->end))
        return af_seterr(AF_EFORMAT,
                         "%s: tensor '%s': \"data_offsets\" must be [begin, end] with "
                         "non-negative integers",
                         what, name);
    if (p->begin > p->end)
        return af_seterr(AF_EFORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] has begin > end", what,
                         name, (unsigned long long)p->begin, (unsigned long long)p->end);
    if (p->end > data_len)
        return af_seterr(AF_EFORMAT,
                         "%s: tensor '%s': data_offsets end %llu is past the data area "
                         "(%llu bytes)",
                         what, name, (unsigned long long)p->end, (unsigned long long)data_len);
    if (p->end - p->begin != nbytes)
        return af_seterr(AF_EFORMAT,
                         "%s: tensor '%s': data_offsets span %llu bytes but shape and dtype %s "
                         "need %llu",
                         what, name, (unsigned long long)(p->end - p->begin),
                         st_dtypes[p->t.dtype].name, (unsigned long long)nbytes);
    p->t.nbytes = (size_t)nbytes;
    return 0;
}

static int cmp_parsed_name(const void *a, const void *b)
{
    return strcmp(((const st_parsed *)a)->t.name, ((const st_parsed *)b)->t.name);
}

static int cmp_parsed_offset(const void *a, const void *b)
{
    const st_parsed *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Parses the __metadata__ object into out->meta_* (strings only, no duplicate keys). */
static int parse_meta(const cJSON *m, const char *what, st_file *out)
{
    if (!cJSON_IsObject(m))
        return af_seterr(AF_EFORMAT, "%s: __metadata__ is not a JSON object", what);
    int n = cJSON_GetArraySize(m);
    out->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    out->meta_vals = calloc((size_t)n + 1, sizeof(char *));
    if (!out->meta_keys || !out->meta_vals)
        return af_seterr(AF_ENOMEM, "%s: out of memory", what);
    const cJSON *e;
    cJSON_ArrayForEach(e, m)
    {
        if (!cJSON_IsString(e))
            return af_seterr(AF_EFORMAT, "%s: __metadata__ '%s': value is not a string", what,
                             e->string);
        char *k = strdup(e->string), *v = strdup(e->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return af_seterr(AF_ENOMEM, "%s: out of memory", what);
        }
        out->meta_keys[out->n_meta] = k;
        out->meta_vals[out->n_meta] = v;
        out->n_meta++;
    }
    /* Duplicate keys: sort a copy of the key pointers (n log n even for hostile headers). */
    char **sorted = malloc(((size_t)n + 1) * sizeof(char *));
    if (!sorted)
        return af_seterr(AF_ENOMEM, "%s: out of memory", what);
    memcpy(sorted, out->meta_keys, (size_t)n * sizeof(char *));
    qsort(sorted, (size_t)n, sizeof(char *), cmp_str_ptr);
    for (int i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            int rc = af_seterr(AF_EFORMAT, "%s: __metadata__: duplicate key '%s'", what,
                               sorted[i]);
            free(sorted);
            return rc;
        }
    }
    free(sorted);
    return 0;
}

/* Parses buf (taking ownership: it is kept in *out or freed). */
static int st_parse_owned(uint8_t *buf, size_t len, const char *what, st_file *out)
{
    int rc;
    cJSON *root = NULL;
    st_parsed *ps = NULL;
    int np = 0;
    memset(out, 0, sizeof *out);
    out->buf = buf;
    out->len = len;

    if (len < 8) {
        rc = af_seterr(AF_EFORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
                       what, len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > ST_MAX_HEADER) {
        rc = af_seterr(AF_EFORMAT, "%s: header length %llu is over the 100 MB limit", what,
                       (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > len - 8) {
        rc = af_seterr(AF_EFORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes follow)",
                       what, (unsigned long long)hlen, len - 8);
        goto fail;
    }
    if (hlen == 0) {
        rc = af_seterr(AF_EFORMAT, "%s: header length is 0, expected a JSON object", what);
        goto fail;
    }
    const char *hdr = (const char *)buf + 8;
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        rc = af_seterr(AF_EFORMAT, "%s: header is not valid JSON (error near byte %td of %llu)",
                       what, end ? end - hdr : (ptrdiff_t)0, (unsigned long long)hlen);
        goto fail;
    }
    for (const char *q = end; q < hdr + hlen; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            rc = af_seterr(AF_EFORMAT,
                           "%s: header has bytes after the JSON object (at byte %td; only space "
                           "padding is allowed)",
                           what, q - hdr);
            goto fail;
        }
    }
    if (!cJSON_IsObject(root)) {
        rc = af_seterr(AF_EFORMAT, "%s: header is not a JSON object", what);
        goto fail;
    }
    uint64_t data_len = len - 8 - hlen;
    const uint8_t *data = buf + 8 + hlen;

    int n_entries = cJSON_GetArraySize(root);
    ps = calloc((size_t)n_entries + 1, sizeof *ps);
    if (!ps) {
        rc = af_seterr(AF_ENOMEM, "%s: out of memory", what);
        goto fail;
    }
    int have_meta = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (have_meta) {
                rc = af_seterr(AF_EFORMAT, "%s: duplicate __metadata__ entry", what);
                goto fail;
            }
            have_meta = 1;
            if ((rc = parse_meta(e, what, out)) != 0)
                goto fail;
            continue;
        }
        st_parsed *p = &ps[np];
        if ((rc = parse_tensor(e, what, data_len, p)) != 0)
            goto fail;
        if (!(p->t.name = strdup(e->string))) {
            rc = af_seterr(AF_ENOMEM, "%s: out of memory", what);
            goto fail;
        }
        p->t.data = data + p->begin;
        np++;
    }

    qsort(ps, (size_t)np, sizeof *ps, cmp_parsed_name);
    for (int i = 1; i < np; i++) {
        if (strcmp(ps[i - 1].t.name, ps[i].t.name) == 0) {
            rc = af_seterr(AF_EFORMAT, "%s: tensor '%s': duplicate name", what, ps[i].t.name);
            goto fail;
        }
    }
    /* The spec: sorted by offset, each tensor starts where the previous ended, and the last
     * ends at the end of the file. No overlaps, no gaps, no trailing bytes. */
    qsort(ps, (size_t)np, sizeof *ps, cmp_parsed_offset);
    uint64_t pos = 0;
    for (int i = 0; i < np; i++) {
        if (ps[i].begin > pos) {
            rc = af_seterr(AF_EFORMAT,
                           "%s: tensor '%s': gap: data starts at byte %llu but the previous "
                           "tensor ends at %llu (the data area must be fully covered)",
                           what, ps[i].t.name, (unsigned long long)ps[i].begin,
                           (unsigned long long)pos);
            goto fail;
        }
        if (ps[i].begin < pos) {
            rc = af_seterr(AF_EFORMAT,
                           "%s: tensor '%s': overlaps tensor '%s' (starts at byte %llu, before "
                           "'%s' ends at %llu)",
                           what, ps[i].t.name, ps[i - 1].t.name, (unsigned long long)ps[i].begin,
                           ps[i - 1].t.name, (unsigned long long)pos);
            goto fail;
        }
        pos = ps[i].end;
    }
    if (pos != data_len) {
        rc = af_seterr(AF_EFORMAT,
                       "%s: %llu bytes of data after the last tensor (data area is %llu bytes, "
                       "tensors cover %llu)",
                       what, (unsigned long long)(data_len - pos), (unsigned long long)data_len,
                       (unsigned long long)pos);
        goto fail;
    }

    out->tensors = calloc((size_t)np + 1, sizeof *out->tensors);
    if (!out->tensors) {
        rc = af_seterr(AF_ENOMEM, "%s: out of memory", what);
        goto fail;
    }
    for (int i = 0; i < np; i++)
        out->tensors[i] = ps[i].t;
    out->n_tensors = np;
    free(ps);
    cJSON_Delete(root);
    return 0;

fail:
    for (int i = 0; i < np; i++)
        free(ps[i].t.name);
    free(ps);
    cJSON_Delete(root);
    st_free(out);
    return rc;
}

int st_parse(const void *buf, size_t len, const char *what, st_file *out)
{
    memset(out, 0, sizeof *out);
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return af_seterr(AF_ENOMEM, "%s: out of memory for %zu bytes", what, len);
    if (len)
        memcpy(copy, buf, len);
    return st_parse_owned(copy, len, what, out);
}

int st_read(const char *path, st_file *out)
{
    memset(out, 0, sizeof *out);
    char *buf;
    size_t len;
    int rc = af_read_file(path, &buf, &len);
    if (rc)
        return rc;
    return st_parse_owned((uint8_t *)buf, len, path, out);
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_vals[i];
    return NULL;
}

/* ---- writing ---------------------------------------------------------------------------- */

/* Validates the inputs and builds the file's first part: the 8-byte length, the JSON header
 * and its space padding (*hdr, *hdr_len; caller frees). *data_len gets the tensor bytes. */
static int st_build_header(const st_out_tensor *t, int n, const char *const *meta_keys,
                           const char *const *meta_vals, int n_meta, uint8_t **hdr,
                           size_t *hdr_len, size_t *data_len)
{
    *hdr = NULL;
    if (n < 0 || n_meta < 0 || (n > 0 && !t) || (n_meta > 0 && (!meta_keys || !meta_vals)))
        return af_seterr(AF_EINVAL, "safetensors: bad tensor or metadata list");
    int rc = 0;
    cJSON *root = cJSON_CreateObject();
    const char **names = malloc(((size_t)n + (size_t)n_meta + 1) * sizeof(char *));
    char *json = NULL;
    if (!root || !names) {
        rc = af_seterr(AF_ENOMEM, "safetensors: out of memory");
        goto fail;
    }
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        if (!m) {
            rc = af_seterr(AF_ENOMEM, "safetensors: out of memory");
            goto fail;
        }
        for (int i = 0; i < n_meta; i++) {
            if (!meta_keys[i] || !meta_vals[i]) {
                rc = af_seterr(AF_EINVAL, "safetensors: metadata entry %d is NULL", i);
                goto fail;
            }
            names[i] = meta_keys[i];
            if (!cJSON_AddStringToObject(m, meta_keys[i], meta_vals[i])) {
                rc = af_seterr(AF_ENOMEM, "safetensors: out of memory");
                goto fail;
            }
        }
        qsort(names, (size_t)n_meta, sizeof(char *), cmp_str_ptr);
        for (int i = 1; i < n_meta; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                rc = af_seterr(AF_EINVAL, "safetensors: duplicate metadata key '%s'", names[i]);
                goto fail;
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const st_out_tensor *x = &t[i];
        if (!x->name || strcmp(x->name, "__metadata__") == 0) {
            rc = af_seterr(AF_EINVAL, "safetensors: tensor %d has no usable name", i);
            goto fail;
        }
        if (x->ndim < 0 || x->ndim > ST_MAX_DIMS) {
            rc = af_seterr(AF_EINVAL, "safetensors: tensor '%s': %d dimensions (0..%d allowed)",
                           x->name, x->ndim, ST_MAX_DIMS);
            goto fail;
        }
        int zero = 0;
        for (int k = 0; k < x->ndim; k++) {
            if (x->shape[k] < 0 || (double)x->shape[k] > ST_MAX_INT) {
                rc = af_seterr(AF_EINVAL, "safetensors: tensor '%s': shape[%d] = %lld", x->name,
                               k, (long long)x->shape[k]);
                goto fail;
            }
            zero |= x->shape[k] == 0;
        }
        /* nbytes = 4 * prod(shape); every partial product stays within ST_MAX_INT. */
        uint64_t nbytes = zero ? 0 : 4;
        for (int k = 0; k < x->ndim && !zero; k++) {
            uint64_t d = (uint64_t)x->shape[k];
            if (nbytes > (uint64_t)ST_MAX_INT / d) {
                nbytes = UINT64_MAX;
                break;
            }
            nbytes *= d;
        }
        if (nbytes > (uint64_t)ST_MAX_INT - off || nbytes > SIZE_MAX) {
            rc = af_seterr(AF_EINVAL, "safetensors: tensor '%s': too large", x->name);
            goto fail;
        }
        if (nbytes && !x->data) {
            rc = af_seterr(AF_EINVAL, "safetensors: tensor '%s': data is NULL", x->name);
            goto fail;
        }
        cJSON *e = cJSON_AddObjectToObject(root, x->name);
        cJSON *dt = e ? cJSON_AddStringToObject(e, "dtype", "F32") : NULL;
        cJSON *shape = dt ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *offs = shape ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        if (!offs) {
            rc = af_seterr(AF_ENOMEM, "safetensors: out of memory");
            goto fail;
        }
        for (int k = 0; k < x->ndim; k++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)x->shape[k]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nbytes)));
        if (cJSON_GetArraySize(shape) != x->ndim || cJSON_GetArraySize(offs) != 2) {
            rc = af_seterr(AF_ENOMEM, "safetensors: out of memory");
            goto fail;
        }
        names[i] = x->name;
        off += nbytes;
    }
    qsort(names, (size_t)n, sizeof(char *), cmp_str_ptr);
    for (int i = 1; i < n; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            rc = af_seterr(AF_EINVAL, "safetensors: duplicate tensor name '%s'", names[i]);
            goto fail;
        }
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) {
        rc = af_seterr(AF_ENOMEM, "safetensors: out of memory");
        goto fail;
    }
    size_t jlen = strlen(json);
    size_t padded = (jlen + 7) & ~(size_t)7; /* tensor data starts 8-byte aligned */
    uint8_t *h = malloc(8 + padded);
    if (!h) {
        rc = af_seterr(AF_ENOMEM, "safetensors: out of memory");
        goto fail;
    }
    for (int i = 0; i < 8; i++)
        h[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(h + 8, json, jlen);
    memset(h + 8 + jlen, ' ', padded - jlen);
    *hdr = h;
    *hdr_len = 8 + padded;
    *data_len = (size_t)off;
fail:
    free(json);
    free(names);
    cJSON_Delete(root);
    return rc;
}

/* Copies n floats to dst as little-endian bytes. */
static void put_f32_le(uint8_t *dst, const float *src, size_t n)
{
    if (n == 0) /* src may be NULL for an empty tensor */
        return;
    if (is_little_endian()) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        for (int b = 0; b < 4; b++)
            dst[4 * i + b] = (uint8_t)(u >> (8 * b));
    }
}

int st_serialize(const st_out_tensor *t, int n, const char *const *meta_keys,
                 const char *const *meta_vals, int n_meta, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    uint8_t *hdr;
    size_t hlen, dlen;
    int rc = st_build_header(t, n, meta_keys, meta_vals, n_meta, &hdr, &hlen, &dlen);
    if (rc)
        return rc;
    uint8_t *buf = malloc(hlen + dlen);
    if (!buf) {
        free(hdr);
        return af_seterr(AF_ENOMEM, "safetensors: out of memory for %zu bytes", hlen + dlen);
    }
    memcpy(buf, hdr, hlen);
    free(hdr);
    size_t pos = hlen;
    for (int i = 0; i < n; i++) {
        size_t elems = 1;
        for (int k = 0; k < t[i].ndim; k++)
            elems *= (size_t)t[i].shape[k];
        put_f32_le(buf + pos, t[i].data, elems);
        pos += elems * sizeof(float);
    }
    *out = buf;
    *len = hlen + dlen;
    return 0;
}

int st_write(const char *path, const st_out_tensor *t, int n, const char *const *meta_keys,
             const char *const *meta_vals, int n_meta)
{
    int rc;
    if (!is_little_endian()) {
        /* Tensors need byte-swapping: go through one serialised buffer. */
        uint8_t *buf;
        size_t len;
        if ((rc = st_serialize(t, n, meta_keys, meta_vals, n_meta, &buf, &len)) != 0)
            return rc;
        const void *bufs[1] = {buf};
        rc = af_write_file_atomic(path, bufs, &len, 1);
        free(buf);
        return rc;
    }
    /* Little-endian host: write the header, then each tensor straight from the caller. */
    uint8_t *hdr;
    size_t hlen, dlen;
    if ((rc = st_build_header(t, n, meta_keys, meta_vals, n_meta, &hdr, &hlen, &dlen)) != 0)
        return rc;
    const void **bufs = malloc(((size_t)n + 1) * sizeof *bufs);
    size_t *lens = malloc(((size_t)n + 1) * sizeof *lens);
    if (!bufs || !lens) {
        rc = af_seterr(AF_ENOMEM, "write %s: out of memory", path);
        goto done;
    }
    bufs[0] = hdr;
    lens[0] = hlen;
    for (int i = 0; i < n; i++) {
        size_t elems = 1;
        for (int k = 0; k < t[i].ndim; k++)
            elems *= (size_t)t[i].shape[k];
        bufs[i + 1] = t[i].data;
        lens[i + 1] = elems * sizeof(float);
    }
    rc = af_write_file_atomic(path, bufs, lens, n + 1);
done:
    free(bufs);
    free(lens);
    free(hdr);
    return rc;
}
