/* checkpoint.c — model <-> safetensors (see checkpoint.h). */
#include "nn/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"
#include "nn/safetensors.h"

#define CKPT_MAX_META 32

int nn_checkpoint_serialize(const nn_model *m, const char *const *keys, const char *const *vals,
                            int n_meta, unsigned char **out, size_t *len)
{
    st_out_tensor t[2 * NN_MAX_LAYERS];
    const char *mk[CKPT_MAX_META + 2], *mv[CKPT_MAX_META + 2];
    if (n_meta > CKPT_MAX_META)
        return af_seterr(AF_EINVAL, "checkpoint: at most %d metadata entries", CKPT_MAX_META);
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        t[i].name = p->name;
        t[i].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++)
            t[i].shape[d] = p->shape[d];
        t[i].data = m->params + p->off;
    }
    mk[0] = "format";
    mv[0] = "artificien/1";
    mk[1] = "spec";
    mv[1] = m->spec_json;
    for (int i = 0; i < n_meta; i++) {
        mk[2 + i] = keys[i];
        mv[2 + i] = vals[i];
    }
    return st_serialize(t, m->n_params_t, mk, mv, n_meta + 2, out, len);
}

int nn_checkpoint_save(const nn_model *m, const char *path, const char *const *keys,
                       const char *const *vals, int n_meta)
{
    unsigned char *buf;
    size_t len;
    int rc = nn_checkpoint_serialize(m, keys, vals, n_meta, &buf, &len);
    if (rc)
        return af_preerr(rc, "save %s", path);
    const void *bufs[1] = {buf};
    rc = af_write_file_atomic(path, bufs, &len, 1);
    free(buf);
    return rc;
}

/* Copies every tensor of f into m after checking names, shapes, dtype and finiteness. */
static int fill(nn_model *m, const st_file *f, const char *what)
{
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        const st_tensor *t = st_find(f, p->name);
        if (!t)
            return af_seterr(AF_ESHAPE, "%s: tensor '%s' missing (the spec needs it)", what, p->name);
        if (t->dtype != ST_F32)
            return af_seterr(AF_EFORMAT, "%s: tensor '%s' is %s, expected F32", what, p->name,
                             st_dtype_name(t->dtype));
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++)
            same = t->shape[d] == p->shape[d];
        if (!same) {
            char want[64] = "", got[64] = "";
            for (int d = 0; d < p->ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", d ? "," : "", p->shape[d]);
            for (int d = 0; d < t->ndim; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "", (long long)t->shape[d]);
            return af_seterr(AF_ESHAPE, "%s: tensor '%s' has shape [%s], the spec needs [%s]", what,
                             p->name, got, want);
        }
        const unsigned char *src = t->data;
        float *dst = m->params + p->off;
        memcpy(dst, src, sizeof(float) * p->n);
        for (size_t k = 0; k < p->n; k++)
            if (!isfinite(dst[k]))
                return af_seterr(AF_EFORMAT, "%s: tensor '%s' holds a non-finite value at [%zu]",
                                 what, p->name, k);
    }
    for (int i = 0; i < f->n_tensors; i++)
        if (!nn_model_param(m, f->tensors[i].name))
            return af_seterr(AF_ESHAPE, "%s: unexpected tensor '%s' (not in the spec)", what,
                             f->tensors[i].name);
    return 0;
}

int nn_checkpoint_parse(const void *buf, size_t len, const char *what, const char *spec_json,
                        nn_model **out)
{
    st_file f;
    *out = NULL;
    int rc = st_parse(buf, len, what, &f);
    if (rc)
        return rc;
    const char *spec = spec_json ? spec_json : st_meta(&f, "spec");
    if (!spec) {
        st_free(&f);
        return af_seterr(AF_EFORMAT, "%s: no \"spec\" in __metadata__ (pass the model spec)", what);
    }
    nn_model *m;
    if ((rc = nn_model_from_json(spec, what, NULL, &m))) {
        st_free(&f);
        return rc;
    }
    rc = fill(m, &f, what);
    st_free(&f);
    if (rc) {
        nn_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int nn_checkpoint_load(const char *path, const char *spec_json, nn_model **out)
{
    char *buf;
    size_t len;
    *out = NULL;
    int rc = af_read_file(path, &buf, &len);
    if (rc)
        return rc;
    rc = nn_checkpoint_parse(buf, len, path, spec_json, out);
    free(buf);
    return rc;
}

int nn_checkpoint_load_into(nn_model *m, const void *buf, size_t len, const char *what)
{
    st_file f;
    int rc = st_parse(buf, len, what, &f);
    if (rc)
        return rc;
    /* fill into a copy so a bad file leaves the model untouched */
    nn_model *tmp;
    if ((rc = nn_model_clone(m, &tmp))) {
        st_free(&f);
        return rc;
    }
    rc = fill(tmp, &f, what);
    st_free(&f);
    if (!rc)
        memcpy(m->params, tmp->params, sizeof(float) * m->n_params);
    nn_model_free(tmp);
    return rc;
}

int nn_checkpoint_meta(const char *path, const char *key, char *buf, size_t cap)
{
    st_file f;
    buf[0] = 0;
    int rc = st_read(path, &f);
    if (rc)
        return rc;
    const char *v = st_meta(&f, key);
    if (v)
        snprintf(buf, cap, "%s", v);
    st_free(&f);
    return 0;
}
