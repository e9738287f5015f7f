/* upload.c — streaming validation of update bodies (see upload.h).
 *
 * The checks are those of a safetensors reader (nn/safetensors.c) narrowed to what an update
 * must be — exactly the spec's tensors, F32, contiguous — and made incremental: nothing here
 * needs more than the header in memory. Little-endian floats, like the format and the hosts
 * we build for.
 */
#include "server/upload.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/err.h"

#define HDR_MAX ((uint64_t)16 << 20) /* a JSON header of a 64-layer spec is a few KB */
/* The fold buffer: floats are handed to the sink in slices of at most this many (aligned,
 * and whole: a float cut by the network waits here for its last bytes) */
#define FBUF_N 4096
#define MAX_CLASSES 256

typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x8 __attribute__((vector_size(64)));

typedef struct seg {
    size_t begin, end;      /* byte range in the data area */
    size_t poff;            /* float offset of the parameter in the flat buffer */
    int param;              /* index in m->params_t */
} seg;

struct srv_upload {
    srv_upload_rules rules;
    float *delta;           /* direct mode: the floats land here */
    char *spool_dir;        /* NULL in direct mode */
    int fd;                 /* spool file (unlinked) holding the data area, else -1 */
    int status;             /* sticky refusal, 0 while valid */
    const char *code;
    char msg[512];
    uint8_t lenbuf[8];
    size_t got;             /* body bytes received */
    uint64_t hlen;
    char *hdr;
    cJSON *hj;
    const cJSON *meta;      /* __metadata__ in hj, or NULL */
    seg *segs;
    int nseg;
    size_t data_len;
    uint8_t carry[4];       /* a float split across two feeds */
    int ncarry;
    size_t dpos;            /* data bytes checked */
    double lane[8];         /* Σ x² over the floats of index ≡ j (mod 8), in index order */
    uint32_t bigbits;       /* max |x| as its IEEE bit pattern (sign cleared) */
    int64_t *conf;
    char *conf_text;
    /* streaming fold (srv_upload_attach) */
    srv_upload_sink sink;   /* sink.fold NULL: none */
    int attached;           /* sink.release still owed by srv_upload_free */
    double weight, tau;     /* from __metadata__, known once the header is parsed */
    size_t fpos;            /* data bytes handed to the fold buffer */
    size_t fill;            /* of which still in fbuf (a slice not yet folded) */
    size_t folded;          /* data bytes folded: [0, folded) of the spool is in the sink */
    float fbuf[FBUF_N];
};

static int refuse(srv_upload *u, srv_reply *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int refuse(srv_upload *u, srv_reply *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->msg, sizeof u->msg, fmt, ap);
    va_end(ap);
    u->status = status;
    u->code = code;
    return srv_reply_error(r, status, code, "%s", u->msg);
}

static int replay(const srv_upload *u, srv_reply *r)
{
    return srv_reply_error(r, u->status, u->code, "%s", u->msg);
}

/* A temporary file in dir that has no name (O_TMPFILE; else created and unlinked at once). */
static int spool_open(const char *dir)
{
#ifdef O_TMPFILE
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
#endif
    char path[4096];
    if (snprintf(path, sizeof path, "%s/.artificien-upload-XXXXXX", dir) >= (int)sizeof path)
        return -1;
    int f = mkstemp(path);
    if (f >= 0)
        unlink(path);
    return f;
}

int srv_upload_create(const srv_upload_rules *rules, const char *spool_dir, float *delta,
                      srv_upload **out)
{
    *out = NULL;
    srv_upload *u = calloc(1, sizeof *u);
    if (!u)
        return af_seterr(AF_ENOMEM, "out of memory for an upload");
    u->rules = *rules;
    u->delta = delta;
    u->fd = -1;
    if (spool_dir && !(u->spool_dir = strdup(spool_dir))) {
        free(u);
        return af_seterr(AF_ENOMEM, "out of memory for an upload");
    }
    *out = u;
    return 0;
}

void srv_upload_free(srv_upload *u)
{
    if (!u)
        return;
    if (u->attached && u->sink.release) {
        u->attached = 0;
        u->sink.release(u->sink.ctx, u);
    }
    if (u->fd >= 0)
        close(u->fd);
    free(u->spool_dir);
    free(u->hdr);
    cJSON_Delete(u->hj);
    free(u->segs);
    free(u->conf);
    free(u->conf_text);
    free(u);
}

size_t srv_upload_len(const srv_upload *u) { return u->got; }

static const char *param_name(const srv_upload *u, int i) { return u->rules.m->params_t[i].name; }

/* The tensor that holds data byte `at`. */
static const seg *seg_at(const srv_upload *u, size_t at)
{
    for (int i = 0; i < u->nseg; i++)
        if (at >= u->segs[i].begin && at < u->segs[i].end)
            return &u->segs[i];
    return &u->segs[u->nseg - 1];
}

static int meta_number(srv_upload *u, srv_reply *r, const char *key, int required, double lo,
                       double hi, int integral, double *v);

static int cmp_seg(const void *a, const void *b)
{
    const seg *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static void shape_text(char *buf, size_t cap, const int64_t *d, int n)
{
    buf[0] = 0;
    for (int i = 0; i < n; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%lld", i ? "," : "", (long long)d[i]);
}

/* The header has arrived whole: check it against the spec and lay out the data area. */
static int parse_header(srv_upload *u, srv_reply *r)
{
    const nn_model *m = u->rules.m;
    const char *end = NULL;
    u->hj = cJSON_ParseWithLengthOpts(u->hdr, u->hlen, &end, 0);
    if (!cJSON_IsObject(u->hj))
        return refuse(u, r, 400, "bad_safetensors", "update: the %llu-byte header is not a JSON "
                                                    "object", (unsigned long long)u->hlen);
    for (const char *p = end; p < u->hdr + u->hlen; p++)
        if (!isspace((unsigned char)*p))
            return refuse(u, r, 400, "bad_safetensors", "update: bytes after the header's JSON "
                                                        "object (at header byte %zu)",
                          (size_t)(p - u->hdr));
    if (!(u->segs = calloc((size_t)m->n_params_t + 1, sizeof *u->segs)))
        return refuse(u, r, 500, "internal", "out of memory");
    uint8_t seen[2 * NN_MAX_LAYERS] = {0};
    for (const cJSON *t = u->hj->child; t; t = t->next) {
        if (strcmp(t->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(t))
                return refuse(u, r, 400, "bad_safetensors", "update: __metadata__ must be an "
                                                            "object of strings");
            for (const cJSON *kv = t->child; kv; kv = kv->next)
                if (!cJSON_IsString(kv))
                    return refuse(u, r, 400, "bad_safetensors", "update: __metadata__.%s is not "
                                                                "a string", kv->string);
            u->meta = t;
            continue;
        }
        const nn_param *pt = nn_model_param(m, t->string);
        if (!pt)
            return refuse(u, r, 400, "bad_shape", "update: unexpected tensor '%.64s' (not in the "
                                                  "spec)", t->string);
        int pi = (int)(pt - m->params_t);
        if (seen[pi]++)
            return refuse(u, r, 400, "bad_safetensors", "update: tensor '%s' is listed twice",
                          pt->name);
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) ||
            cJSON_GetArraySize(of) != 2 || cJSON_GetArraySize(sh) > 8)
            return refuse(u, r, 400, "bad_safetensors", "update: tensor '%s' needs a dtype, a "
                                                        "shape and two data_offsets", pt->name);
        if (strcmp(dt->valuestring, "F32") != 0)
            return refuse(u, r, 400, "bad_shape", "update: tensor '%s' is %.16s, expected F32",
                          pt->name, dt->valuestring);
        int64_t got[8], want[4];
        int nd = cJSON_GetArraySize(sh), same = nd == pt->ndim;
        for (int d = 0; d < nd; d++) {
            const cJSON *x = cJSON_GetArrayItem(sh, d);
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 1e15 ||
                x->valuedouble != floor(x->valuedouble))
                return refuse(u, r, 400, "bad_safetensors", "update: tensor '%s' has a malformed "
                                                            "shape", pt->name);
            got[d] = (int64_t)x->valuedouble;
        }
        for (int d = 0; d < pt->ndim; d++) {
            want[d] = pt->shape[d];
            same = same && got[d] == want[d];
        }
        if (!same) {
            char g[128], w[128];
            shape_text(g, sizeof g, got, nd);
            shape_text(w, sizeof w, want, pt->ndim);
            return refuse(u, r, 400, "bad_shape", "update: tensor '%s' has shape [%s], expected "
                                                  "[%s]", pt->name, g, w);
        }
        double b = cJSON_GetArrayItem(of, 0)->valuedouble, e = cJSON_GetArrayItem(of, 1)->valuedouble;
        if (!cJSON_IsNumber(cJSON_GetArrayItem(of, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(of, 1)) ||
            !(b >= 0 && e >= b && e <= 1e15) || b != floor(b) || e != floor(e))
            return refuse(u, r, 400, "bad_safetensors", "update: tensor '%s' has malformed "
                                                        "data_offsets", pt->name);
        if ((size_t)(e - b) != pt->n * sizeof(float))
            return refuse(u, r, 400, "bad_safetensors", "update: tensor '%s': data_offsets span "
                                                        "%.0f bytes, its shape needs %zu",
                          pt->name, e - b, pt->n * sizeof(float));
        u->segs[u->nseg++] = (seg){(size_t)b, (size_t)e, pt->off, pi};
    }
    for (int i = 0; i < m->n_params_t; i++)
        if (!seen[i])
            return refuse(u, r, 400, "bad_shape", "update: tensor '%s' is missing",
                          param_name(u, i));
    qsort(u->segs, (size_t)u->nseg, sizeof *u->segs, cmp_seg);
    size_t at = 0;
    for (int i = 0; i < u->nseg; i++) {
        if (u->segs[i].begin != at)
            return refuse(u, r, 400, "bad_safetensors", "update: tensor data %s at byte %zu of "
                                                        "the data area (tensor '%s')",
                          u->segs[i].begin > at ? "leaves a gap" : "overlaps", at,
                          param_name(u, u->segs[i].param));
        at = u->segs[i].end;
    }
    u->data_len = at;
    if (u->rules.body_len && 8 + u->hlen + u->data_len != u->rules.body_len)
        return refuse(u, r, 400, "bad_safetensors", "update: the header promises %llu bytes, the "
                                                    "body has %zu",
                      (unsigned long long)(8 + u->hlen + u->data_len), u->rules.body_len);
    if (8 + u->hlen + u->data_len > u->rules.max_len)
        return refuse(u, r, 413, "too_large", "update of %llu bytes is over the limit of %zu",
                      (unsigned long long)(8 + u->hlen + u->data_len), u->rules.max_len);
    if (u->sink.fold) { /* the fold's weight: needed before the first float */
        double n = 0, tau = NAN;
        if (meta_number(u, r, "num_samples", 1, 1e-9, 1e12, 0, &n) ||
            meta_number(u, r, "tau", u->rules.need_tau, 1e-9, 1e12, 0, &tau))
            return u->status;
        u->weight = u->sink.unit_weight ? 1.0 : n;
        u->tau = tau;
    }
    if (!u->spool_dir)
        return 0;
    if ((u->fd = spool_open(u->spool_dir)) < 0) {
        return refuse(u, r, 500, "internal", "upload spool file in %s: %s", u->spool_dir,
                      strerror(errno));
    }
    return 0;
}

/* Copies data bytes [at, at + n) into the delta vector at their parameters' offsets. */
static void scatter(const srv_upload *u, size_t at, const uint8_t *p, size_t n, float *delta)
{
    uint8_t *dst = (uint8_t *)delta;
    for (int i = 0; i < u->nseg && n; i++) {
        const seg *s = &u->segs[i];
        if (at >= s->end || at + n <= s->begin)
            continue;
        size_t lo = at > s->begin ? at : s->begin, hi = at + n < s->end ? at + n : s->end;
        memcpy(dst + s->poff * sizeof(float) + (lo - s->begin), p + (lo - at), hi - lo);
    }
}

/* ||delta||² so far: the eight lanes summed in a fixed order, so the value does not depend
 * on how the network cut the body. */
static double norm2(const srv_upload *u)
{
    double ss = 0;
    for (int j = 0; j < 8; j++)
        ss += u->lane[j];
    return ss;
}

/* One float of the data area, at data byte `at`: finite, and into the running norm. */
static int check_float(srv_upload *u, const uint8_t *b, size_t at, srv_reply *r)
{
    uint32_t bits;
    float x;
    memcpy(&bits, b, sizeof bits);
    memcpy(&x, b, sizeof x);
    if ((bits & 0x7f800000u) == 0x7f800000u)
        return refuse(u, r, 400, "non_finite", "update: tensor '%s' holds %s",
                      param_name(u, seg_at(u, at)->param), isnan(x) ? "NaN" : "Inf");
    double v = x;
    u->lane[(at / 4) & 7] += v * v; /* ||delta||² */
    bits &= 0x7fffffffu;
    u->bigbits = bits > u->bigbits ? bits : u->bigbits;
    return 0;
}

/* Checks data bytes [dpos, dpos + n) as they pass; refuses as soon as the norm is over.
 * Whole groups of eight floats (float index a multiple of 8) take the vector path: the
 * finiteness test and max |x| on the bit patterns, x² into the eight lanes. */
static int check_data(srv_upload *u, const uint8_t *p, size_t n, srv_reply *r)
{
    size_t i = 0;
    while (i < n) {
        if (u->ncarry || n - i < 4) {
            while (u->ncarry < 4 && i < n)
                u->carry[u->ncarry++] = p[i++];
            if (u->ncarry == 4) {
                if (check_float(u, u->carry, u->dpos, r))
                    return u->status;
                u->dpos += 4;
                u->ncarry = 0;
            }
            continue;
        }
        for (; i + 4 <= n && (u->dpos & 31); i += 4, u->dpos += 4)
            if (check_float(u, p + i, u->dpos, r))
                return u->status;
        /* GCC/Clang vector types: eight lanes side by side, whatever the target ISA */
        f64x8 acc;
        u32x8 big = {0}, bad = {0};
        size_t i0 = i;
        memcpy(&acc, u->lane, sizeof acc);
        for (; i + 32 <= n; i += 32) {
            u32x8 w;
            f32x8 f;
            memcpy(&w, p + i, sizeof w);
            memcpy(&f, p + i, sizeof f);
            u32x8 a = w & 0x7fffffffu;
            bad |= (u32x8)(a >= 0x7f800000u); /* NaN or Inf: exponent all ones */
            u32x8 gt = (u32x8)(a > big);
            big = (a & gt) | (big & ~gt);
            f64x8 d = __builtin_convertvector(f, f64x8);
            acc += d * d;
        }
        uint32_t any = 0, bmax = u->bigbits;
        for (int j = 0; j < 8; j++) {
            any |= bad[j];
            bmax = big[j] > bmax ? big[j] : bmax;
        }
        if (any) /* name the culprit: the scalar path refuses at the first one */
            for (size_t k = i0; k < i; k += 4)
                if (check_float(u, p + k, u->dpos + (k - i0), r))
                    return u->status;
        u->dpos += i - i0;
        memcpy(u->lane, &acc, sizeof acc);
        u->bigbits = bmax;
        for (; i + 4 <= n; i += 4, u->dpos += 4)
            if (check_float(u, p + i, u->dpos, r))
                return u->status;
    }
    double lim = u->rules.max_norm, ss = norm2(u);
    if (ss > lim * lim)
        return refuse(u, r, 400, "over_norm", "update: L2 norm exceeds the plan's "
                                              "max_update_norm %g (%.6g after %zu of %zu values)",
                      lim, sqrt(ss), u->dpos / 4, u->data_len / 4);
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Folds (sub 0) or unfolds the whole floats in fbuf, which start at data byte `start` and
 * lie in one tensor; keeps the 0–3 bytes of a cut float at the front. 0 or AF_E*. */
static int flush_slice(srv_upload *u, size_t start, int sub)
{
    size_t nf = u->fill / 4;
    if (nf) {
        const seg *s = seg_at(u, start);
        int rc = u->sink.fold(u->sink.ctx, s->poff + (start - s->begin) / 4, u->fbuf, nf,
                              u->weight, u->tau, sub);
        if (rc)
            return rc;
    }
    size_t rest = u->fill - nf * 4;
    memmove(u->fbuf, (uint8_t *)u->fbuf + nf * 4, rest);
    u->fill = rest;
    return 0;
}

/* Checked data bytes [fpos, fpos + n) into the sink: one slice per tensor per feed (at most
 * FBUF_N floats each), whole floats only. */
static int fold_bytes(srv_upload *u, const uint8_t *p, size_t n, srv_reply *r)
{
    while (n) {
        const seg *s = seg_at(u, u->fpos);
        size_t k = sizeof u->fbuf - u->fill;
        k = k < n ? k : n;
        k = k < s->end - u->fpos ? k : s->end - u->fpos;
        memcpy((uint8_t *)u->fbuf + u->fill, p, k);
        u->fill += k, u->fpos += k, p += k, n -= k;
        if (u->fill == sizeof u->fbuf || u->fpos == s->end || n == 0) {
            size_t start = u->fpos - u->fill, whole = u->fill / 4 * 4;
            int rc = flush_slice(u, start, 0);
            if (rc == AF_ERANGE)
                return refuse(u, r, 400, "over_norm", "update: num_samples × a value of tensor "
                                                      "'%s' is too large",
                              param_name(u, s->param));
            if (rc)
                return refuse(u, r, 500, "internal", "update fold: %s", af_errmsg());
            u->folded = start + whole;
        }
    }
    return 0;
}

int srv_upload_attach(srv_upload *u, const srv_upload_sink *s)
{
    if (!u->spool_dir || u->got || !s->fold)
        return af_seterr(AF_ESTATE, "upload: a sink needs a spooled upload not yet fed");
    u->sink = *s;
    u->attached = 1;
    return 0;
}

void srv_upload_detach(srv_upload *u) { u->attached = 0; }

int srv_upload_unfold(srv_upload *u)
{
    if (!u->sink.fold || !u->folded)
        return 0;
    /* any slicing undoes exactly: each value's term is the same */
    u->fill = 0;
    for (size_t off = 0; off < u->folded;) {
        const seg *s = seg_at(u, off);
        size_t k = u->folded < s->end ? u->folded - off : s->end - off;
        k = k < sizeof u->fbuf ? k : sizeof u->fbuf;
        ssize_t got = pread(u->fd, u->fbuf, k, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || got % 4)
            return af_seterr(AF_EIO, "upload spool: %s", got < 0 ? strerror(errno) : "short read");
        u->fill = (size_t)got;
        int rc = flush_slice(u, off, 1);
        if (rc)
            return rc;
        off += (size_t)got;
    }
    u->folded = 0;
    u->fill = 0;
    return 0;
}

int srv_upload_feed(srv_upload *u, const void *data, size_t n, srv_reply *r)
{
    const uint8_t *b = data;
    if (u->status)
        return replay(u, r);
    while (n) {
        if (u->got < 8) { /* the header length */
            size_t k = 8 - u->got < n ? 8 - u->got : n;
            memcpy(u->lenbuf + u->got, b, k);
            u->got += k, b += k, n -= k;
            if (u->got < 8)
                break;
            u->hlen = 0;
            for (int i = 7; i >= 0; i--)
                u->hlen = u->hlen << 8 | u->lenbuf[i];
            if (u->hlen == 0)
                return refuse(u, r, 400, "bad_safetensors", "update: header length is 0, "
                                                            "expected a JSON object");
            if (u->hlen > HDR_MAX)
                return refuse(u, r, 400, "bad_safetensors", "update: header length %llu is over "
                                                            "the %llu-byte limit",
                              (unsigned long long)u->hlen, (unsigned long long)HDR_MAX);
            if (u->rules.body_len && 8 + u->hlen > u->rules.body_len)
                return refuse(u, r, 400, "bad_safetensors", "update: header length %llu runs "
                                                            "past the end of the %zu-byte body",
                              (unsigned long long)u->hlen, u->rules.body_len);
            if (8 + u->hlen > u->rules.max_len)
                return refuse(u, r, 413, "too_large", "update header of %llu bytes is over the "
                                                      "limit of %zu",
                              (unsigned long long)u->hlen, u->rules.max_len);
            if (!(u->hdr = malloc(u->hlen)))
                return refuse(u, r, 500, "internal", "out of memory for the header");
            continue;
        }
        if (u->got < 8 + u->hlen) { /* the JSON header */
            size_t k = 8 + u->hlen - u->got < n ? (size_t)(8 + u->hlen - u->got) : n;
            memcpy(u->hdr + (u->got - 8), b, k);
            u->got += k, b += k, n -= k;
            if (u->got == 8 + u->hlen && parse_header(u, r))
                return u->status;
            continue;
        }
        size_t at = u->got - 8 - u->hlen; /* the tensor data */
        if (at >= u->data_len)
            return refuse(u, r, 400, "bad_safetensors", "update: %zu bytes after the end of the "
                                                        "data area (%zu bytes)", n, u->data_len);
        size_t k = u->data_len - at < n ? u->data_len - at : n;
        if (check_data(u, b, k, r))
            return u->status;
        if (u->fd >= 0 && write_all(u->fd, b, k))
            return refuse(u, r, 500, "internal", "upload spool: %s", strerror(errno));
        else if (u->fd < 0)
            scatter(u, at, b, k, u->delta);
        if (u->sink.fold && fold_bytes(u, b, k, r))
            return u->status;
        u->got += k, b += k, n -= k;
    }
    return 0;
}

/* A required or optional number in __metadata__ (strings), checked against [lo, hi]. */
static int meta_number(srv_upload *u, srv_reply *r, const char *key, int required, double lo,
                       double hi, int integral, double *v)
{
    const cJSON *j = u->meta ? cJSON_GetObjectItemCaseSensitive(u->meta, key) : NULL;
    if (!j)
        return required ? refuse(u, r, 400, "bad_field", "__metadata__.%s: required", key) : 0;
    const char *s = j->valuestring;
    char *end;
    double x = strtod(s, &end);
    if (end == s || *end || !isfinite(x) || (integral && x != floor(x)) || !(x >= lo && x <= hi))
        return refuse(u, r, 400, "bad_field", "__metadata__.%s: \"%.40s\" is not %s in [%g, %g]",
                      key, s, integral ? "an integer" : "a number", lo, hi);
    *v = x;
    return 0;
}

/* eval_confusion: a C×C JSON array of non-negative integers, into u->conf. */
static int parse_confusion(srv_upload *u, srv_reply *r, const char *s, int64_t *total)
{
    int C = u->rules.m->n_classes;
    if (C > MAX_CLASSES)
        return refuse(u, r, 400, "bad_field", "__metadata__.eval_confusion: the model has more "
                                              "than %d classes", MAX_CLASSES);
    if (!(u->conf = calloc((size_t)C * C, sizeof *u->conf)))
        return refuse(u, r, 500, "internal", "out of memory");
    cJSON *j = cJSON_Parse(s);
    int ok = cJSON_IsArray(j) && cJSON_GetArraySize(j) == C;
    *total = 0;
    for (int i = 0; ok && i < C; i++) {
        const cJSON *row = cJSON_GetArrayItem(j, i);
        ok = cJSON_IsArray(row) && cJSON_GetArraySize(row) == C;
        int k = 0;
        for (const cJSON *x = ok ? row->child : NULL; ok && x; x = x->next, k++) {
            ok = cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble <= 1e15 &&
                 x->valuedouble == floor(x->valuedouble);
            if (ok) {
                u->conf[(size_t)i * C + k] = (int64_t)x->valuedouble;
                *total += (int64_t)x->valuedouble;
            }
        }
    }
    cJSON_Delete(j);
    if (!ok)
        return refuse(u, r, 400, "bad_field", "__metadata__.eval_confusion: expected a %d×%d JSON "
                                              "array of non-negative integers", C, C);
    return 0;
}

int srv_upload_finish(srv_upload *u, srv_update *out, srv_reply *r)
{
    memset(out, 0, sizeof *out);
    if (u->status)
        return replay(u, r);
    if (u->got < 8 + u->hlen || u->got == 0)
        return refuse(u, r, 400, "bad_safetensors", "update: truncated: the body ends at byte %zu, "
                                                    "inside the %s", u->got,
                      u->got < 8 ? "8-byte header length" : "JSON header");
    if (u->dpos != u->data_len || u->ncarry)
        return refuse(u, r, 400, "bad_safetensors", "update: truncated: %zu of the %zu data bytes "
                                                    "the header promises", u->got - 8 - (size_t)u->hlen,
                      u->data_len);
    if (sqrt(norm2(u)) > u->rules.max_norm)
        return refuse(u, r, 400, "over_norm", "update: L2 norm %.6g exceeds the plan's "
                                              "max_update_norm %g", sqrt(norm2(u)), u->rules.max_norm);
    double attempt = 0, n = 0, loss = NAN, tau = NAN, es = 0, ec = 0, el = NAN, unc = -1;
    if (meta_number(u, r, "attempt", 1, 1, 1e9, 1, &attempt) ||
        meta_number(u, r, "num_samples", 1, 1e-9, 1e12, 0, &n) ||
        meta_number(u, r, "loss", 0, -1e30, 1e30, 0, &loss) ||
        meta_number(u, r, "tau", u->rules.need_tau, 1e-9, 1e12, 0, &tau) ||
        meta_number(u, r, "eval_samples", 0, 0, 1e15, 1, &es) ||
        meta_number(u, r, "eval_correct", 0, 0, es, 1, &ec) ||
        meta_number(u, r, "eval_loss", 0, 0, 1e30, 0, &el) ||
        meta_number(u, r, "unclipped", u->rules.need_unclipped, 0, 1, 1, &unc))
        return u->status;
    const cJSON *cj = u->meta ? cJSON_GetObjectItemCaseSensitive(u->meta, "eval_confusion") : NULL;
    if (cj) {
        int64_t total = 0;
        if (parse_confusion(u, r, cj->valuestring, &total))
            return u->status;
        if (!cJSON_GetObjectItemCaseSensitive(u->meta, "eval_samples"))
            es = (double)total;
        else if ((double)total != es)
            return refuse(u, r, 400, "bad_field", "__metadata__.eval_confusion sums to %lld, "
                                                  "eval_samples is %.0f", (long long)total, es);
        if (!(u->conf_text = strdup(cj->valuestring)))
            return refuse(u, r, 500, "internal", "out of memory");
    }
    /* the exact accumulator refuses terms |n·delta| >= 2^62: refuse them here, as a norm */
    float bigf;
    memcpy(&bigf, &u->bigbits, sizeof bigf);
    double big = bigf;
    if (!(n * big < 0x1p61))
        return refuse(u, r, 400, "over_norm", "update: num_samples × max|delta| = %g is too large",
                      n * big);
    out->attempt = (int)attempt;
    out->num_samples = n;
    out->loss = loss;
    out->tau = tau;
    out->eval_samples = (int64_t)es;
    out->eval_correct = (int64_t)ec;
    out->eval_loss = el;
    out->eval_confusion = u->conf_text;
    out->confusion = u->conf;
    out->unclipped = (int)unc;
    return 0;
}

void srv_upload_body(const srv_upload *u, struct iovec iov[3], int *n, int *fd, size_t *fd_len)
{
    iov[0] = (struct iovec){(void *)u->lenbuf, 8};
    iov[1] = (struct iovec){u->hdr, (size_t)u->hlen};
    *n = 2;
    *fd = -1;
    *fd_len = 0;
    if (u->fd >= 0) {
        *fd = u->fd;
        *fd_len = u->data_len;
    }
}

int srv_upload_delta(srv_upload *u, float *scratch, const float **out)
{
    *out = NULL;
    if (!u->spool_dir || u->status || u->dpos != u->data_len || u->fd < 0)
        return af_seterr(AF_ESTATE, "upload: no finished update to read back");
    uint8_t buf[65536];
    for (size_t off = 0; off < u->data_len;) {
        size_t k = u->data_len - off < sizeof buf ? u->data_len - off : sizeof buf;
        ssize_t got = pread(u->fd, buf, k, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return af_seterr(AF_EIO, "upload spool: %s", got < 0 ? strerror(errno) : "short read");
        scatter(u, off, buf, (size_t)got, scratch);
        off += (size_t)got;
    }
    *out = scratch;
    return 0;
}
