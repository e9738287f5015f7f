/* model.c — spec parsing and validation, PyTorch-default init, forward and backward passes.
 *
 * Forward and backward of each layer sit side by side in nn_forward / nn_backward; the
 * kernels themselves are in tensor/. A workspace groups the layers into ops (fused where
 * the tensor layer has a fused kernel, see "workspace" below), keeps each op's output for
 * the backward pass and two gradient buffers that ping-pong between ops.
 */
#include "nn/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/rng.h"
#include "tensor/convpool.h"
#include "tensor/dense.h"

static const char *kind_names[] = {"conv2d", "maxpool2d", "relu", "flatten", "linear", "dropout"};

/* Reads an optional positive int field; *v keeps its default when absent. */
static int get_int(const cJSON *o, const char *key, int *v, int min, int max, const char *what,
                   const char *lname)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it)
        return 0;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
        return af_seterr(AF_EFORMAT, "%s: layer '%s': \"%s\" must be an integer", what, lname, key);
    if (it->valuedouble < min || it->valuedouble > max)
        return af_seterr(AF_ERANGE, "%s: layer '%s': \"%s\" = %g out of range [%d, %d]", what,
                         lname, key, it->valuedouble, min, max);
    *v = (int)it->valuedouble;
    return 0;
}

static int check_keys(const cJSON *o, const char *const *allowed, const char *what,
                      const char *lname)
{
    for (const cJSON *it = o->child; it; it = it->next) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(it->string, allowed[i]) == 0)
                ok = 1;
        if (!ok)
            return af_seterr(AF_EFORMAT, "%s: layer '%s': unknown field \"%s\"", what, lname,
                             it->string);
    }
    return 0;
}

static void add_param(nn_model *m, const char *lname, const char *suffix, int ndim,
                      const int *shape, size_t *off, size_t *count)
{
    nn_param *p = &m->params_t[m->n_params_t++];
    snprintf(p->name, sizeof p->name, "%s.%s", lname, suffix);
    p->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    p->off = m->n_params;
    p->n = n;
    *off = p->off;
    *count = n;
    m->n_params += n;
}

static int build(nn_model *m, const cJSON *root, const char *what, const nn_caps *caps)
{
    static const char *const top_keys[] = {"name", "input", "classes", "layers", "description", NULL};
    if (!cJSON_IsObject(root))
        return af_seterr(AF_EFORMAT, "%s: spec must be a JSON object", what);
    for (const cJSON *it = root->child; it; it = it->next) {
        int ok = 0;
        for (int i = 0; top_keys[i]; i++)
            ok |= strcmp(it->string, top_keys[i]) == 0;
        if (!ok)
            return af_seterr(AF_EFORMAT, "%s: unknown top-level field \"%s\"", what, it->string);
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    snprintf(m->name, sizeof m->name, "%s", cJSON_IsString(name) ? name->valuestring : "model");
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    int dims[3] = {0, 0, 0}, nd = 0;
    if (!cJSON_IsArray(input) || (nd = cJSON_GetArraySize(input)) < 1 || nd > 3)
        return af_seterr(AF_EFORMAT, "%s: \"input\" must be [C,H,W] or [features]", what);
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(input, i);
        if (!cJSON_IsNumber(d) || d->valuedouble < 1 || d->valuedouble > 1e6 ||
            d->valuedouble != floor(d->valuedouble))
            return af_seterr(AF_EFORMAT, "%s: \"input\"[%d] must be a positive integer", what, i);
        dims[i] = (int)d->valuedouble;
    }
    int c = nd == 3 ? dims[0] : 1, h = nd == 3 ? dims[1] : 1, w = nd == 3 ? dims[2] : dims[0];
    if (nd == 2) {
        c = 1;
        h = dims[0];
        w = dims[1];
    }
    m->in_c = c;
    m->in_h = h;
    m->in_w = w;
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) < 1)
        return af_seterr(AF_EFORMAT, "%s: \"layers\" must be a non-empty array", what);
    if (cJSON_GetArraySize(layers) > NN_MAX_LAYERS)
        return af_seterr(AF_ERANGE, "%s: %d layers, at most %d", what,
                         cJSON_GetArraySize(layers), NN_MAX_LAYERS);
    int flat = 0; /* after flatten or linear, the activation is a feature vector */
    size_t act = (size_t)c * h * w;
    double flops = 0;
    int li = 0;
    for (const cJSON *L = layers->child; L; L = L->next, li++) {
        nn_layer *l = &m->layers[m->n_layers];
        memset(l, 0, sizeof *l);
        char lname[NN_NAME_MAX];
        if (!cJSON_IsObject(L))
            return af_seterr(AF_EFORMAT, "%s: layers[%d] must be an object", what, li);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(L, "type");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(L, "name");
        if (!cJSON_IsString(type))
            return af_seterr(AF_EFORMAT, "%s: layers[%d]: missing \"type\"", what, li);
        int kind = -1;
        for (int k = 0; k < (int)(sizeof kind_names / sizeof *kind_names); k++)
            if (strcmp(type->valuestring, kind_names[k]) == 0)
                kind = k;
        if (kind < 0)
            return af_seterr(AF_EFORMAT,
                             "%s: layers[%d]: unknown layer type \"%s\" (known: conv2d, "
                             "maxpool2d, relu, flatten, linear, dropout)",
                             what, li, type->valuestring);
        if (nm && (!cJSON_IsString(nm) || !nm->valuestring[0] ||
                   strlen(nm->valuestring) >= NN_NAME_MAX || strchr(nm->valuestring, '.')))
            return af_seterr(AF_EFORMAT, "%s: layers[%d]: \"name\" must be a non-empty string "
                             "without '.' shorter than %d", what, li, NN_NAME_MAX);
        if (nm)
            snprintf(lname, sizeof lname, "%s", nm->valuestring);
        else
            snprintf(lname, sizeof lname, "%s%d", kind_names[kind], li);
        for (int j = 0; j < m->n_layers; j++)
            if (strcmp(m->layers[j].name, lname) == 0)
                return af_seterr(AF_EFORMAT, "%s: layers[%d]: duplicate name \"%s\"", what, li, lname);
        l->kind = (nn_kind)kind;
        snprintf(l->name, sizeof l->name, "%s", lname);
        l->in_c = c;
        l->in_h = h;
        l->in_w = w;
        int rc = 0;
        switch (l->kind) {
        case NN_CONV2D: {
            static const char *const keys[] = {"type", "name", "in_channels", "out_channels",
                                               "kernel", "stride", "padding", "bias", NULL};
            int inc = c, outc = 0, k = 0, stride = 1, pad = 0;
            if ((rc = check_keys(L, keys, what, lname)) || (rc = get_int(L, "in_channels", &inc, 1, 1 << 16, what, lname)) ||
                (rc = get_int(L, "out_channels", &outc, 1, 1 << 16, what, lname)) ||
                (rc = get_int(L, "kernel", &k, 1, 1024, what, lname)) ||
                (rc = get_int(L, "stride", &stride, 1, 1024, what, lname)) ||
                (rc = get_int(L, "padding", &pad, 0, 1024, what, lname)))
                return rc;
            if (flat)
                return af_seterr(AF_ESHAPE, "%s: layer '%s': conv2d after flatten/linear", what, lname);
            if (!outc || !k)
                return af_seterr(AF_EFORMAT, "%s: layer '%s': conv2d needs \"out_channels\" and \"kernel\"", what, lname);
            if (inc != c)
                return af_seterr(AF_ESHAPE, "%s: layer '%s': in_channels %d but the input has %d channels",
                                 what, lname, inc, c);
            l->geo = (tn_conv2d){.c = c, .h = h, .w = w, .oc = outc, .kh = k, .kw = k,
                                 .stride = stride, .pad = pad};
            if (tn_conv2d_geometry(&l->geo))
                return af_seterr(AF_ESHAPE, "%s: layer '%s': kernel %d does not fit input %dx%d (padding %d)",
                                 what, lname, k, h, w, pad);
            const cJSON *bias = cJSON_GetObjectItemCaseSensitive(L, "bias");
            l->has_bias = !bias || cJSON_IsTrue(bias);
            int ws[4] = {outc, c, k, k};
            add_param(m, lname, "weight", 4, ws, &l->w_off, &l->w_n);
            if (l->has_bias)
                add_param(m, lname, "bias", 1, &outc, &l->b_off, &l->b_n);
            c = outc;
            h = l->geo.oh;
            w = l->geo.ow;
            flops += 2.0 * outc * h * w * l->geo.c * k * k;
            break;
        }
        case NN_MAXPOOL2D: {
            static const char *const keys[] = {"type", "name", "kernel", "stride", "padding", NULL};
            int k = 0, stride = 0, pad = 0;
            if ((rc = check_keys(L, keys, what, lname)) || (rc = get_int(L, "kernel", &k, 1, 1024, what, lname)) ||
                (rc = get_int(L, "stride", &stride, 1, 1024, what, lname)) ||
                (rc = get_int(L, "padding", &pad, 0, 1024, what, lname)))
                return rc;
            if (flat)
                return af_seterr(AF_ESHAPE, "%s: layer '%s': maxpool2d after flatten/linear", what, lname);
            if (!k)
                return af_seterr(AF_EFORMAT, "%s: layer '%s': maxpool2d needs \"kernel\"", what, lname);
            if (2 * pad > k)
                return af_seterr(AF_ERANGE, "%s: layer '%s': padding must be at most half the kernel", what, lname);
            l->geo = (tn_conv2d){.c = c, .h = h, .w = w, .oc = c, .kh = k, .kw = k,
                                 .stride = stride ? stride : k, .pad = pad};
            if (tn_conv2d_geometry(&l->geo))
                return af_seterr(AF_ESHAPE, "%s: layer '%s': window %d does not fit input %dx%d",
                                 what, lname, k, h, w);
            h = l->geo.oh;
            w = l->geo.ow;
            break;
        }
        case NN_RELU:
        case NN_FLATTEN: {
            static const char *const keys[] = {"type", "name", NULL};
            if ((rc = check_keys(L, keys, what, lname)))
                return rc;
            if (l->kind == NN_FLATTEN) {
                w = c * h * w;
                c = h = 1;
                flat = 1;
            }
            break;
        }
        case NN_DROPOUT: {
            static const char *const keys[] = {"type", "name", "p", NULL};
            if ((rc = check_keys(L, keys, what, lname)))
                return rc;
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(L, "p");
            l->p = 0.5f;
            if (p && (!cJSON_IsNumber(p) || p->valuedouble < 0 || p->valuedouble >= 1))
                return af_seterr(AF_ERANGE, "%s: layer '%s': \"p\" must be in [0, 1)", what, lname);
            if (p)
                l->p = (float)p->valuedouble;
            break;
        }
        case NN_LINEAR: {
            static const char *const keys[] = {"type", "name", "in_features", "out_features", "bias", NULL};
            int inf = c * h * w, outf = 0;
            if ((rc = check_keys(L, keys, what, lname)) || (rc = get_int(L, "in_features", &inf, 1, 1 << 30, what, lname)) ||
                (rc = get_int(L, "out_features", &outf, 1, 1 << 24, what, lname)))
                return rc;
            if (!outf)
                return af_seterr(AF_EFORMAT, "%s: layer '%s': linear needs \"out_features\"", what, lname);
            if (!flat && !(c == 1 && h == 1))
                return af_seterr(AF_ESHAPE, "%s: layer '%s': linear on a %dx%dx%d input needs a flatten first",
                                 what, lname, c, h, w);
            if (inf != c * h * w)
                return af_seterr(AF_ESHAPE, "%s: layer '%s': in_features %d but the input has %d features",
                                 what, lname, inf, c * h * w);
            const cJSON *bias = cJSON_GetObjectItemCaseSensitive(L, "bias");
            l->has_bias = !bias || cJSON_IsTrue(bias);
            l->in_features = inf;
            l->out_features = outf;
            int ws[2] = {outf, inf};
            add_param(m, lname, "weight", 2, ws, &l->w_off, &l->w_n);
            if (l->has_bias)
                add_param(m, lname, "bias", 1, &outf, &l->b_off, &l->b_n);
            flops += 2.0 * inf * outf;
            c = h = 1;
            w = outf;
            flat = 1;
            break;
        }
        }
        l->out_c = c;
        l->out_h = h;
        l->out_w = w;
        l->in_n = (size_t)l->in_c * l->in_h * l->in_w;
        l->out_n = (size_t)c * h * w;
        act += l->out_n;
        m->n_layers++;
        if (m->n_params > caps->max_params)
            return af_seterr(AF_ERANGE, "%s: more than %zu parameters", what, caps->max_params);
    }
    const nn_layer *last = &m->layers[m->n_layers - 1];
    if (last->out_c * last->out_h != 1)
        return af_seterr(AF_ESHAPE, "%s: the last layer must output a feature vector (add flatten/linear)", what);
    m->n_classes = last->out_w;
    const cJSON *classes = cJSON_GetObjectItemCaseSensitive(root, "classes");
    if (classes && (!cJSON_IsNumber(classes) || classes->valueint != m->n_classes))
        return af_seterr(AF_ESHAPE, "%s: \"classes\" is %g but the last layer outputs %d", what,
                         cJSON_IsNumber(classes) ? classes->valuedouble : -1.0, m->n_classes);
    if (m->n_classes < 2 || m->n_classes > 256)
        return af_seterr(AF_ERANGE, "%s: %d output classes, need 2..256", what, m->n_classes);
    if (flops > caps->max_flops)
        return af_seterr(AF_ERANGE, "%s: %.3g FLOPs per sample, cap %.3g", what, flops, caps->max_flops);
    if (act > caps->max_act)
        return af_seterr(AF_ERANGE, "%s: %zu activation floats per sample, cap %zu", what, act, caps->max_act);
    if (m->n_params == 0)
        return af_seterr(AF_EFORMAT, "%s: the model has no parameters", what);
    m->flops_fwd = flops;
    return 0;
}

int nn_model_from_json(const char *json, const char *what, const nn_caps *caps, nn_model **out)
{
    static const nn_caps defcaps = {50000000, 1e10, 50000000};
    *out = NULL;
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        return af_seterr(AF_EFORMAT, "%s: not valid JSON near \"%.20s\"", what, e ? e : "");
    }
    nn_model *m = calloc(1, sizeof *m);
    int rc = AF_ENOMEM;
    if (!m) {
        af_seterr(rc, "%s: out of memory", what);
        goto fail;
    }
    if ((rc = build(m, root, what, caps ? caps : &defcaps)))
        goto fail;
    m->params = af_alloc(sizeof(float) * m->n_params);
    m->spec_json = cJSON_PrintUnformatted(root);
    if (!m->params || !m->spec_json) {
        rc = af_seterr(AF_ENOMEM, "%s: out of memory for %zu parameters", what, m->n_params);
        goto fail;
    }
    cJSON_Delete(root);
    *out = m;
    return 0;
fail:
    cJSON_Delete(root);
    nn_model_free(m);
    return rc;
}

int nn_model_from_file(const char *path, const nn_caps *caps, nn_model **out)
{
    char *txt;
    size_t len;
    int rc = af_read_file(path, &txt, &len);
    if (rc)
        return rc;
    rc = nn_model_from_json(txt, path, caps, out);
    free(txt);
    return rc;
}

void nn_model_free(nn_model *m)
{
    if (!m)
        return;
    af_free(m->params);
    free(m->spec_json);
    free(m);
}

int nn_model_clone(const nn_model *m, nn_model **out)
{
    int rc = nn_model_from_json(m->spec_json, m->name, NULL, out);
    if (rc)
        return rc;
    memcpy((*out)->params, m->params, sizeof(float) * m->n_params);
    return 0;
}

void nn_model_init(nn_model *m, uint64_t seed)
{
    af_rng rng;
    af_rng_seed(&rng, seed, 0x696e6974);
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = &m->layers[i];
        if (!l->w_n)
            continue;
        size_t fan_in = l->kind == NN_CONV2D ? (size_t)l->geo.c * l->geo.kh * l->geo.kw
                                             : (size_t)l->in_features;
        /* kaiming_uniform_(a=sqrt(5)): gain = sqrt(2/(1+a^2)) = sqrt(1/3),
         * bound = gain*sqrt(3/fan_in) = 1/sqrt(fan_in); the bias uses the same bound. */
        double bound = 1.0 / sqrt((double)fan_in);
        for (size_t k = 0; k < l->w_n; k++)
            m->params[l->w_off + k] = (float)((2.0 * af_rng_uniform(&rng) - 1.0) * bound);
        for (size_t k = 0; k < l->b_n; k++)
            m->params[l->b_off + k] = (float)((2.0 * af_rng_uniform(&rng) - 1.0) * bound);
    }
}

const nn_param *nn_model_param(const nn_model *m, const char *name)
{
    for (int i = 0; i < m->n_params_t; i++)
        if (strcmp(m->params_t[i].name, name) == 0)
            return &m->params_t[i];
    return NULL;
}

void nn_model_summary(const nn_model *m, char *buf, size_t cap)
{
    size_t n = 0;
#define PUT(...)                                                                               \
    do {                                                                                       \
        int k_ = snprintf(buf + n, n < cap ? cap - n : 0, __VA_ARGS__);                        \
        if (k_ > 0)                                                                            \
            n += (size_t)k_;                                                                   \
    } while (0)
    PUT("model %s: input %dx%dx%d, %d classes\n", m->name, m->in_c, m->in_h, m->in_w, m->n_classes);
    PUT("  %-10s %-10s %-14s %10s\n", "layer", "type", "output", "params");
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = &m->layers[i];
        char shape[32];
        if (l->out_c == 1 && l->out_h == 1)
            snprintf(shape, sizeof shape, "%d", l->out_w);
        else
            snprintf(shape, sizeof shape, "%dx%dx%d", l->out_c, l->out_h, l->out_w);
        PUT("  %-10s %-10s %-14s %10zu\n", l->name, kind_names[l->kind], shape, l->w_n + l->b_n);
    }
    PUT("  parameters: %zu (%.1f KiB as float32), forward %.3f MFLOP per sample\n", m->n_params,
        m->n_params * 4.0 / 1024, m->flops_fwd / 1e6);
    PUT("  tensors:");
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        PUT(" %s[", p->name);
        for (int d = 0; d < p->ndim; d++)
            PUT("%s%d", d ? "," : "", p->shape[d]);
        PUT("]");
    }
    PUT("\n");
#undef PUT
}

/* ---- workspace ---------------------------------------------------------------------- */

/* The workspace runs the layers as ops: a conv → ReLU → 2x2 max-pool run is one fused op
 * (tensor/convpool.h) when the shape allows, a linear (with the ReLU after it when another
 * linear follows) is one dense op whose backward also applies the ReLU before it, flatten
 * is a view (no copy), and anything else runs layer by layer with the kernels of kernels.h.
 * Only op outputs are stored; they are all the backward pass needs. */
typedef enum { OP_LAYER = 0, OP_CONVPOOL, OP_DENSE, OP_VIEW } op_kind;

typedef struct nn_op {
    op_kind kind;
    int first, last;         /* the layers [first, last] it runs */
    int relu;                /* OP_DENSE: fused ReLU on the output */
    int relu_in;             /* OP_DENSE: its input is a fused ReLU's output: mask dx */
    tn_convpool *cp;         /* OP_CONVPOOL plan */
    uint16_t *mask;          /* OP_CONVPOOL pool/ReLU mask (max_batch samples) */
    const float *y;          /* output of the last forward (views point at their input) */
} nn_op;

struct nn_ws {
    int max_batch;
    int n_ops;
    nn_op ops[NN_MAX_LAYERS];
    float *act[NN_MAX_LAYERS];        /* owned layer outputs (max_batch × out_n) */
    uint32_t *arg[NN_MAX_LAYERS];     /* maxpool argmax (unfused) */
    uint8_t *mask[NN_MAX_LAYERS];     /* dropout masks */
    float drop_p[NN_MAX_LAYERS];      /* dropout rate the last forward used (0 in eval mode) */
    float *g0, *g1;                   /* gradient ping-pong (max_batch × max act) */
    float *scratch;
    float *wt;                        /* a dense op's weight, transposed for the forward */
    float *dlogits;
};

static int is_pool2(const nn_layer *l)
{
    return l->kind == NN_MAXPOOL2D && l->geo.kh == 2 && l->geo.kw == 2 && l->geo.stride == 2 &&
           l->geo.pad == 0;
}

/* Groups the layers into ops (see above). */
static void plan_ops(const nn_model *m, nn_ws *ws)
{
    const nn_layer *L = m->layers;
    int n = 0;
    for (int i = 0; i < m->n_layers; n++) {
        nn_op *op = &ws->ops[n];
        memset(op, 0, sizeof *op);
        op->first = op->last = i;
        if (L[i].kind == NN_CONV2D && i + 2 < m->n_layers && L[i + 1].kind == NN_RELU &&
            is_pool2(&L[i + 2])) {
            if (tn_convpool_create(&L[i].geo, &op->cp) == 0) {
                op->kind = OP_CONVPOOL;
                op->last = i + 2;
            } else {
                af_clearerr(); /* unsupported shape: the layers run one by one */
            }
        } else if (L[i].kind == NN_LINEAR) {
            op->kind = OP_DENSE;
            if (i + 2 < m->n_layers && L[i + 1].kind == NN_RELU && L[i + 2].kind == NN_LINEAR) {
                op->relu = 1;
                op->last = i + 1;
            }
            op->relu_in = n > 0 && ws->ops[n - 1].kind == OP_DENSE && ws->ops[n - 1].relu;
        } else if (L[i].kind == NN_FLATTEN) {
            op->kind = OP_VIEW;
        }
        i = op->last + 1;
    }
    ws->n_ops = n;
}

nn_ws *nn_ws_create(const nn_model *m, int max_batch)
{
    nn_ws *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->max_batch = max_batch;
    plan_ops(m, ws);
    size_t maxn = m->layers[0].in_n, scr = 0, wtn = 0;
    for (int i = 0; i < m->n_layers; i++) {
        if (m->layers[i].out_n > maxn)
            maxn = m->layers[i].out_n;
        if (m->layers[i].kind == NN_LINEAR && m->layers[i].w_n > wtn)
            wtn = m->layers[i].w_n;
    }
    for (int j = 0; j < ws->n_ops; j++) {
        nn_op *op = &ws->ops[j];
        const nn_layer *l = &m->layers[op->last];
        if (op->kind == OP_VIEW)
            continue;
        if (!(ws->act[op->last] = af_alloc(sizeof(float) * max_batch * l->out_n)))
            goto fail;
        if (op->kind == OP_CONVPOOL) {
            op->mask = af_alloc(sizeof(uint16_t) * max_batch * tn_convpool_mask_n(op->cp));
            if (!op->mask)
                goto fail;
            size_t s = tn_convpool_scratch(op->cp);
            if (s > scr)
                scr = s;
        }
        if (op->kind != OP_LAYER)
            continue;
        size_t n = (size_t)max_batch * l->out_n;
        if (l->kind == NN_MAXPOOL2D && !(ws->arg[op->last] = af_alloc(sizeof(uint32_t) * n)))
            goto fail;
        if (l->kind == NN_DROPOUT && !(ws->mask[op->last] = af_alloc(n)))
            goto fail;
        if (l->kind == NN_CONV2D) {
            size_t s = tn_conv2d_scratch(&l->geo, max_batch);
            if (s > scr)
                scr = s;
        }
    }
    ws->g0 = af_alloc(sizeof(float) * maxn * max_batch);
    ws->g1 = af_alloc(sizeof(float) * maxn * max_batch);
    ws->scratch = af_alloc(sizeof(float) * (scr ? scr : 1));
    ws->wt = af_alloc(sizeof(float) * (wtn ? wtn : 1));
    ws->dlogits = af_alloc(sizeof(float) * (size_t)max_batch * m->n_classes);
    if (!ws->g0 || !ws->g1 || !ws->scratch || !ws->wt || !ws->dlogits)
        goto fail;
    return ws;
fail:
    nn_ws_free(ws);
    return NULL;
}

void nn_ws_free(nn_ws *ws)
{
    if (!ws)
        return;
    for (int i = 0; i < NN_MAX_LAYERS; i++) {
        af_free(ws->act[i]);
        af_free(ws->arg[i]);
        af_free(ws->mask[i]);
        tn_convpool_free(ws->ops[i].cp);
        af_free(ws->ops[i].mask);
    }
    af_free(ws->g0);
    af_free(ws->g1);
    af_free(ws->scratch);
    af_free(ws->wt);
    af_free(ws->dlogits);
    free(ws);
}

int nn_ws_max_batch(const nn_ws *ws) { return ws->max_batch; }

/* Forward of one unfused layer i into ws->act[i]. */
static void layer_forward(const nn_model *m, nn_ws *ws, int i, const float *in, int b, int train,
                          uint64_t seed)
{
    const nn_layer *l = &m->layers[i];
    const float *P = m->params;
    float *out = ws->act[i];
    switch (l->kind) {
    case NN_CONV2D:
        tn_conv2d_forward(&l->geo, b, in, P + l->w_off, l->has_bias ? P + l->b_off : NULL, out,
                          ws->scratch);
        break;
    case NN_MAXPOOL2D:
        tn_maxpool2d_forward(&l->geo, b, in, out, ws->arg[i]);
        break;
    case NN_RELU:
        tn_relu_forward((size_t)b * l->out_n, in, out);
        break;
    case NN_FLATTEN: /* always a view op */
        break;
    case NN_LINEAR: /* always a dense op */
        break;
    case NN_DROPOUT:
        /* eval mode is the identity, and so is its backward */
        ws->drop_p[i] = train ? l->p : 0.0f;
        if (train && l->p > 0.0f)
            tn_dropout_forward((size_t)b * l->out_n, l->p, in, out, ws->mask[i],
                               seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i);
        else {
            memcpy(out, in, sizeof(float) * b * l->out_n);
            memset(ws->mask[i], 1, (size_t)b * l->out_n);
        }
        break;
    }
}

const float *nn_forward(const nn_model *m, nn_ws *ws, const float *x, int b, int train,
                        uint64_t seed)
{
    const float *in = x;
    const float *P = m->params;
    for (int j = 0; j < ws->n_ops; j++) {
        nn_op *op = &ws->ops[j];
        const nn_layer *l = &m->layers[op->first];
        float *out = ws->act[op->last];
        const float *bias = l->has_bias ? P + l->b_off : NULL;
        switch (op->kind) {
        case OP_CONVPOOL:
            tn_convpool_forward(op->cp, b, in, P + l->w_off, bias, out, op->mask, ws->scratch);
            break;
        case OP_DENSE:
            /* from a few rows on, transposing the weight once beats a dot product per output */
            if (b >= 8) {
                tn_transpose(l->out_features, l->in_features, P + l->w_off, ws->wt);
                tn_dense_forward_t(b, l->in_features, l->out_features, in, ws->wt, bias,
                                   op->relu, out);
            } else {
                tn_dense_forward(b, l->in_features, l->out_features, in, P + l->w_off, bias,
                                 op->relu, out);
            }
            break;
        case OP_VIEW:
            out = (float *)in; /* flatten: same floats, new shape; never written through */
            break;
        case OP_LAYER:
            layer_forward(m, ws, op->first, in, b, train, seed);
            break;
        }
        op->y = out;
        in = out;
    }
    return in;
}

double nn_loss(const nn_model *m, nn_ws *ws, const uint8_t *labels, int b, float scale,
               int *correct)
{
    return tn_softmax_xent(b, m->n_classes, ws->ops[ws->n_ops - 1].y, labels, scale,
                           ws->dlogits, correct);
}

/* Backward of one unfused layer i: din (may be NULL for the first layer) from dout. */
static void layer_backward(const nn_model *m, nn_ws *ws, int i, const float *in, int b,
                           const float *dout, float *din, float *grads)
{
    const nn_layer *l = &m->layers[i];
    const float *P = m->params;
    switch (l->kind) {
    case NN_CONV2D:
        tn_conv2d_backward(&l->geo, b, in, P + l->w_off, dout, din, grads + l->w_off,
                           l->has_bias ? grads + l->b_off : NULL, ws->scratch);
        break;
    case NN_MAXPOOL2D:
        if (din)
            tn_maxpool2d_backward(&l->geo, b, dout, ws->arg[i], din);
        break;
    case NN_RELU:
        if (din)
            tn_relu_backward((size_t)b * l->out_n, ws->act[i], dout, din);
        break;
    case NN_DROPOUT:
        if (din)
            tn_dropout_backward((size_t)b * l->out_n, ws->drop_p[i], dout, ws->mask[i], din);
        break;
    case NN_FLATTEN:
    case NN_LINEAR:
        break; /* never unfused */
    }
}

void nn_backward(const nn_model *m, nn_ws *ws, const float *x, int b, float *grads)
{
    const float *P = m->params;
    const float *dout = ws->dlogits;
    for (int j = ws->n_ops - 1; j >= 0; j--) {
        const nn_op *op = &ws->ops[j];
        const nn_layer *l = &m->layers[op->first];
        const float *in = j ? ws->ops[j - 1].y : x;
        /* the first op needs no input gradient; otherwise write into the buffer dout is not in */
        float *din = j ? (dout == ws->g0 ? ws->g1 : ws->g0) : NULL;
        float *gb = l->has_bias ? grads + l->b_off : NULL;
        switch (op->kind) {
        case OP_CONVPOOL:
            tn_convpool_backward(op->cp, b, in, P + l->w_off, dout, op->mask, din,
                                 grads + l->w_off, gb, ws->scratch);
            break;
        case OP_DENSE:
            tn_dense_backward(b, l->in_features, l->out_features, in, P + l->w_off, dout, din,
                              op->relu_in, grads + l->w_off, gb);
            break;
        case OP_VIEW:
            din = (float *)dout; /* the gradient of a view is the same floats */
            break;
        case OP_LAYER:
            layer_backward(m, ws, op->first, in, b, dout, din, grads);
            break;
        }
        if (!din)
            break;
        dout = din;
    }
}
