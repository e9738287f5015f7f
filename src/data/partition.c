/* partition.c — dataset partitioners (iid, dirichlet, shards, labels, quantity) and the
 * balance report (see partition.h).
 *
 * Every kind first decides a device for each sample (dev[n]), then one counting sort by device
 * builds the flat index array; each device's list is then shuffled with its own stream
 * (af_rng_split), cut into train / held-out and each range sorted. Scratch is O(n + K);
 * nothing is K × n or K × classes. Layer `data`: core only, never prints.
 */
#include "data/partition.h"

#include "core/err.h"
#include "core/strbuf.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "core/rng.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PART_MAX_CLASSES 256
#define PART_KINDS "iid, dirichlet:ALPHA, shards:S, labels:L or quantity:BETA"

/* Stream ids so each stage draws from its own sequence of the one seed. */
#define STREAM_ASSIGN 0x61737367u       /* which device gets which sample */
#define SALT_DEVICE 0x6465766963655f73u /* per-device shuffle before the held-out cut */

void data_partition_opts_default(data_partition_opts *o)
{
    o->heldout_frac = 0.1;
    o->min_size = 0;
    o->max_tries = 1000;
}

/* ---- spec parsing ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    data_partition_kind kind;
    const char *param; /* NULL: takes none */
    int integer;
    const char *what;
} part_kinds[] = {
    {"iid", DATA_PART_IID, NULL, 0, NULL},
    {"dirichlet", DATA_PART_DIRICHLET, "ALPHA", 0, "dirichlet:0.5"},
    {"shards", DATA_PART_SHARDS, "S", 1, "shards:2"},
    {"labels", DATA_PART_LABELS, "L", 1, "labels:2"},
    {"quantity", DATA_PART_QUANTITY, "BETA", 0, "quantity:0.5"},
};

int data_partition_parse(const char *spec, data_partition_spec *out)
{
    if (!spec || !*spec)
        return af_seterr(AF_EINVAL, "partition '': empty spec (expected %s)", PART_KINDS);
    const char *colon = strchr(spec, ':');
    size_t klen = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *arg = colon ? colon + 1 : NULL;
    size_t k;
    for (k = 0; k < sizeof part_kinds / sizeof part_kinds[0]; k++)
        if (strlen(part_kinds[k].name) == klen && !strncmp(spec, part_kinds[k].name, klen))
            break;
    if (k == sizeof part_kinds / sizeof part_kinds[0])
        return af_seterr(AF_EINVAL, "partition '%s': unknown kind '%.*s' (expected %s)", spec,
                         (int)klen, spec, PART_KINDS);
    const char *pname = part_kinds[k].param;
    if (!pname) {
        if (arg)
            return af_seterr(AF_EINVAL, "partition '%s': %s takes no parameter", spec,
                             part_kinds[k].name);
        out->kind = part_kinds[k].kind;
        out->param = 0.0;
        return 0;
    }
    if (!arg || !*arg)
        return af_seterr(AF_EINVAL, "partition '%s': missing %s (write e.g. %s)", spec, pname,
                         part_kinds[k].what);
    double v;
    if (part_kinds[k].integer) {
        const char *s = arg + (*arg == '-');
        if (!*s || strspn(s, "0123456789") != strlen(s))
            return af_seterr(AF_EINVAL, "partition '%s': %s '%s' is not a whole number", spec,
                             pname, arg);
        errno = 0;
        long long iv = strtoll(arg, NULL, 10);
        if (iv < 1)
            return af_seterr(AF_ERANGE, "partition '%s': %s must be >= 1", spec, pname);
        if (errno == ERANGE || iv > 1000000000LL)
            return af_seterr(AF_ERANGE, "partition '%s': %s is too large", spec, pname);
        v = (double)iv;
    } else {
        char *end;
        errno = 0;
        v = strtod(arg, &end);
        if (end == arg || *end || isspace((unsigned char)*arg))
            return af_seterr(AF_EINVAL, "partition '%s': %s '%s' is not a number", spec, pname,
                             arg);
        if (!isfinite(v))
            return af_seterr(AF_ERANGE, "partition '%s': %s must be finite", spec, pname);
        if (!(v > 0.0))
            return af_seterr(AF_ERANGE, "partition '%s': %s must be > 0", spec, pname);
    }
    out->kind = part_kinds[k].kind;
    out->param = v;
    return 0;
}

/* ---- assignment helpers ---------------------------------------------------------------- */

/* Splits a total of `total` over k parts by cumulative shares p (sum 1): part j gets
 * floor(T·cum_j) − floor(T·cum_{j−1}), the last one the rest — numpy.split at
 * (cumsum(p)·T).astype(int), as in the PyTorch peer. Sum is exactly `total`. */
static void split_by_shares(const double *p, size_t k, size_t total, size_t *sizes)
{
    double cum = 0.0;
    size_t prev = 0;
    for (size_t j = 0; j + 1 < k; j++) {
        cum += p[j];
        double c = cum * (double)total;
        size_t cut = c >= (double)total ? total : (size_t)c;
        if (cut < prev)
            cut = prev;
        sizes[j] = cut - prev;
        prev = cut;
    }
    sizes[k - 1] = total - prev;
}

/* order[0..n) = sample indices sorted by label (stable: ascending index within a class);
 * coff[c]..coff[c+1] is class c's run. */
static void sort_by_label(const uint8_t *y, size_t n, int n_classes, uint32_t *order,
                          size_t *coff)
{
    memset(coff, 0, sizeof(size_t) * ((size_t)n_classes + 1));
    for (size_t i = 0; i < n; i++)
        coff[y[i] + 1]++;
    for (int c = 0; c < n_classes; c++)
        coff[c + 1] += coff[c];
    size_t cur[PART_MAX_CLASSES];
    memcpy(cur, coff, sizeof(size_t) * (size_t)n_classes);
    for (size_t i = 0; i < n; i++)
        order[cur[y[i]]++] = (uint32_t)i;
}

/* Gives order[0..sizes[0]) to device 0, the next sizes[1] to device 1, … */
static void assign_runs(const uint32_t *order, const size_t *sizes, size_t k, uint32_t *dev)
{
    size_t pos = 0;
    for (size_t d = 0; d < k; d++)
        for (size_t j = 0; j < sizes[d]; j++)
            dev[order[pos++]] = (uint32_t)d;
}

static void identity_u32(uint32_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (uint32_t)i;
}

/* Scratch shared by the kinds, sized once in data_partition_create. */
typedef struct part_scratch {
    uint32_t *order; /* n */
    size_t *sizes;   /* K */
    double *p;       /* K */
    size_t coff[PART_MAX_CLASSES + 1];
} part_scratch;

static void assign_iid(af_rng *rng, size_t n, size_t k, part_scratch *s, uint32_t *dev)
{
    identity_u32(s->order, n);
    af_rng_shuffle_u32(rng, s->order, n);
    for (size_t d = 0; d < k; d++) /* boundaries floor(d·n/K): sizes differ by at most 1 */
        s->sizes[d] = (d + 1) * n / k - d * n / k;
    assign_runs(s->order, s->sizes, k, dev);
}

static void assign_quantity(af_rng *rng, double beta, size_t n, size_t k, part_scratch *s,
                            uint32_t *dev)
{
    /* size_d = 1 + share of the other n − K samples by p ~ Dir(BETA·1_K): nobody is empty */
    af_rng_dirichlet(rng, beta, s->p, k);
    split_by_shares(s->p, k, n - k, s->sizes);
    for (size_t d = 0; d < k; d++)
        s->sizes[d] += 1;
    identity_u32(s->order, n);
    af_rng_shuffle_u32(rng, s->order, n);
    assign_runs(s->order, s->sizes, k, dev);
}

static int assign_dirichlet(af_rng *rng, const data_partition *p, const uint8_t *y,
                            size_t min_size, int max_tries, part_scratch *s, uint32_t *dev)
{
    size_t n = p->n_samples, k = p->n_devices;
    int nc = p->n_classes;
    sort_by_label(y, n, nc, s->order, s->coff);
    size_t *dsize = af_alloc(sizeof(size_t) * k);
    if (!dsize)
        return af_seterr(AF_ENOMEM, "partition '%s': out of memory", p->spec_str);
    for (int tries = 1;; tries++) {
        memset(dsize, 0, sizeof(size_t) * k);
        for (int c = 0; c < nc; c++) {
            uint32_t *cls = s->order + s->coff[c];
            size_t nc_c = s->coff[c + 1] - s->coff[c];
            af_rng_shuffle_u32(rng, cls, nc_c);
            /* p ~ Dir(ALPHA·1_K): this class's share per device (Hsu et al. 2019) */
            af_rng_dirichlet(rng, p->spec.param, s->p, k);
            split_by_shares(s->p, k, nc_c, s->sizes);
            assign_runs(cls, s->sizes, k, dev);
            for (size_t d = 0; d < k; d++)
                dsize[d] += s->sizes[d];
        }
        size_t mn = SIZE_MAX;
        for (size_t d = 0; d < k; d++)
            if (dsize[d] < mn)
                mn = dsize[d];
        if (mn >= min_size)
            break;
        if (tries >= max_tries) {
            af_free(dsize);
            return af_seterr(AF_ERANGE,
                             "partition '%s': no draw in %d tries gave every one of %zu devices "
                             ">= %zu samples (raise ALPHA, lower min_size or use fewer devices)",
                             p->spec_str, max_tries, k, min_size);
        }
    }
    af_free(dsize);
    return 0;
}

static void assign_shards(af_rng *rng, const data_partition *p, const uint8_t *y, size_t spd,
                          part_scratch *s, uint32_t *dev, uint32_t *shard_perm)
{
    size_t n = p->n_samples, k = p->n_devices, total = spd * k;
    sort_by_label(y, n, p->n_classes, s->order, s->coff);
    identity_u32(shard_perm, total);
    af_rng_shuffle_u32(rng, shard_perm, total);
    for (size_t t = 0; t < total; t++) {
        /* shard i is sorted positions [i·n/T, (i+1)·n/T): sizes differ by at most 1 */
        uint64_t sh = shard_perm[t];
        size_t lo = (size_t)(sh * n / total), hi = (size_t)((sh + 1) * n / total);
        for (size_t pos = lo; pos < hi; pos++)
            dev[s->order[pos]] = (uint32_t)(t / spd);
    }
}

static void shuffle_u8(af_rng *rng, uint8_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = af_rng_below(rng, (uint32_t)i);
        uint8_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* labels:L. Classes are dealt from a shuffled deck, L distinct ones per device, reshuffling
 * when the deck runs out; a card the device already holds is swapped further down the deck
 * for the next one. The first deck is dealt in full and in order, so K·L >= classes covers
 * every class. Then each class's samples are split evenly among the devices that hold it. */
static int assign_labels(af_rng *rng, const data_partition *p, const uint8_t *y, size_t L,
                         part_scratch *s, uint32_t *dev, uint8_t *dc, uint32_t *holders)
{
    size_t n = p->n_samples, k = p->n_devices, C = (size_t)p->n_classes;
    uint8_t deck[PART_MAX_CLASSES], held[PART_MAX_CLASSES] = {0};
    for (size_t c = 0; c < C; c++)
        deck[c] = (uint8_t)c;
    shuffle_u8(rng, deck, C);
    size_t pos = 0;
    for (size_t d = 0; d < k; d++) {
        uint8_t *mine = dc + d * L;
        for (size_t j = 0; j < L; j++) {
            if (pos == C) {
                shuffle_u8(rng, deck, C);
                pos = 0;
            }
            size_t q = pos;
            while (q < C && held[deck[q]])
                q++;
            if (q == C) { /* the rest of this deck is already ours: start a new one */
                shuffle_u8(rng, deck, C);
                pos = q = 0;
                while (held[deck[q]]) /* fewer than L <= C held, so one is free */
                    q++;
            }
            uint8_t t = deck[pos];
            deck[pos] = deck[q];
            deck[q] = t;
            mine[j] = deck[pos++];
            held[mine[j]] = 1;
        }
        for (size_t j = 0; j < L; j++)
            held[mine[j]] = 0;
    }
    /* holders of class c, in device order: holders[hoff[c] .. hoff[c+1]) */
    size_t hoff[PART_MAX_CLASSES + 1] = {0}, cur[PART_MAX_CLASSES];
    for (size_t i = 0; i < k * L; i++)
        hoff[dc[i] + 1]++;
    for (size_t c = 0; c < C; c++)
        hoff[c + 1] += hoff[c];
    memcpy(cur, hoff, sizeof(size_t) * C);
    for (size_t d = 0; d < k; d++)
        for (size_t j = 0; j < L; j++)
            holders[cur[dc[d * L + j]]++] = (uint32_t)d;
    sort_by_label(y, n, (int)C, s->order, s->coff);
    for (size_t c = 0; c < C; c++) {
        uint32_t *cls = s->order + s->coff[c];
        size_t nc_c = s->coff[c + 1] - s->coff[c], h = hoff[c + 1] - hoff[c];
        if (!nc_c)
            continue;
        if (!h) /* unreachable while K·L >= classes; kept so a sample is never dropped */
            return af_seterr(AF_ERANGE, "partition '%s': class %zu is on no device",
                             p->spec_str, c);
        af_rng_shuffle_u32(rng, cls, nc_c);
        for (size_t j = 0; j < h; j++)
            for (size_t q = j * nc_c / h; q < (j + 1) * nc_c / h; q++)
                dev[cls[q]] = holders[hoff[c] + j];
    }
    return 0;
}

/* ---- create / free --------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

void data_partition_free(data_partition *p)
{
    if (!p)
        return;
    af_free(p->idx);
    af_free(p->off);
    af_free(p->n_train);
    free(p);
}

int data_partition_create(const uint8_t *y, size_t n, int n_classes, size_t n_devices,
                          const char *spec, uint64_t seed, const data_partition_opts *opts,
                          data_partition **out)
{
    if (!out)
        return af_seterr(AF_EINVAL, "partition: out is NULL");
    *out = NULL;
    data_partition_spec ps;
    int rc = data_partition_parse(spec, &ps);
    if (rc < 0)
        return rc;
    data_partition_opts o;
    if (opts)
        o = *opts;
    else
        data_partition_opts_default(&o);
    size_t k = n_devices;
    if (n_classes < 1 || n_classes > PART_MAX_CLASSES)
        return af_seterr(AF_EINVAL, "partition '%s': %d classes, expected 1..%d", spec,
                         n_classes, PART_MAX_CLASSES);
    if (!y && n)
        return af_seterr(AF_EINVAL, "partition '%s': labels are NULL", spec);
    if (n == 0)
        return af_seterr(AF_ERANGE, "partition '%s': the dataset has no samples", spec);
    if (n > UINT32_MAX)
        return af_seterr(AF_ERANGE, "partition '%s': %zu samples, at most %u supported", spec,
                         n, UINT32_MAX);
    if (k < 1)
        return af_seterr(AF_EINVAL, "partition '%s': need at least 1 device", spec);
    if (k > n)
        return af_seterr(AF_ERANGE,
                         "partition '%s': %zu devices but only %zu samples (each device "
                         "needs at least one)",
                         spec, k, n);
    if (!(o.heldout_frac >= 0.0 && o.heldout_frac < 1.0))
        return af_seterr(AF_ERANGE, "partition '%s': held-out fraction %g must be in [0, 1)",
                         spec, o.heldout_frac);
    if (o.max_tries < 1)
        return af_seterr(AF_EINVAL, "partition '%s': max_tries %d must be >= 1", spec,
                         o.max_tries);
    for (size_t i = 0; i < n; i++)
        if (y[i] >= n_classes)
            return af_seterr(AF_EINVAL,
                             "partition '%s': label %u of sample %zu is outside [0, %d)", spec,
                             y[i], i, n_classes);
    size_t param = (size_t)ps.param, min_size = o.min_size;
    if (ps.kind == DATA_PART_LABELS) {
        if (param > (size_t)n_classes)
            return af_seterr(AF_ERANGE, "partition '%s': L must be <= %d (the number of classes)",
                             spec, n_classes);
        if (param * k < (size_t)n_classes)
            return af_seterr(AF_ERANGE,
                             "partition '%s': %zu devices × %zu classes each cannot cover all "
                             "%d classes",
                             spec, k, param, n_classes);
    } else if (ps.kind == DATA_PART_SHARDS) {
        if (param > n / k)
            return af_seterr(AF_ERANGE,
                             "partition '%s': %zu shards × %zu devices need at least %zu samples, "
                             "have %zu",
                             spec, param, k, param * k, n);
    } else if (ps.kind == DATA_PART_DIRICHLET) {
        if (min_size == 0) {
            min_size = n / (2 * k);
            min_size = min_size < 1 ? 1 : min_size > 10 ? 10 : min_size;
        } else if (min_size > n / k) {
            return af_seterr(AF_ERANGE,
                             "partition '%s': min_size %zu × %zu devices exceeds %zu samples",
                             spec, min_size, k, n);
        }
    }

    data_partition *p = calloc(1, sizeof *p);
    part_scratch s = {0};
    uint32_t *dev = NULL, *aux = NULL;
    uint8_t *dc = NULL;
    rc = AF_ENOMEM;
    if (!p)
        goto nomem;
    p->spec = ps;
    snprintf(p->spec_str, sizeof p->spec_str, "%s", spec);
    p->seed = seed;
    p->heldout_frac = o.heldout_frac;
    p->n_devices = k;
    p->n_samples = n;
    p->n_classes = n_classes;
    p->idx = af_alloc(sizeof(uint32_t) * n);
    p->off = af_alloc(sizeof(size_t) * (k + 1));
    p->n_train = af_alloc(sizeof(uint32_t) * k);
    dev = af_alloc(sizeof(uint32_t) * n);
    s.order = af_alloc(sizeof(uint32_t) * n);
    s.sizes = af_alloc(sizeof(size_t) * k);
    s.p = af_alloc(sizeof(double) * k);
    if (!p->idx || !p->off || !p->n_train || !dev || !s.order || !s.sizes || !s.p)
        goto nomem;

    af_rng rng;
    af_rng_seed(&rng, seed, STREAM_ASSIGN);
    switch (ps.kind) {
    case DATA_PART_IID:
        assign_iid(&rng, n, k, &s, dev);
        break;
    case DATA_PART_QUANTITY:
        assign_quantity(&rng, ps.param, n, k, &s, dev);
        break;
    case DATA_PART_DIRICHLET:
        rc = assign_dirichlet(&rng, p, y, min_size, o.max_tries, &s, dev);
        if (rc < 0)
            goto fail;
        break;
    case DATA_PART_SHARDS:
        if (!(aux = af_alloc(sizeof(uint32_t) * param * k)))
            goto nomem;
        assign_shards(&rng, p, y, param, &s, dev, aux);
        break;
    case DATA_PART_LABELS:
        aux = af_alloc(sizeof(uint32_t) * param * k);
        dc = af_alloc(param * k);
        if (!aux || !dc)
            goto nomem;
        rc = assign_labels(&rng, p, y, param, &s, dev, dc, aux);
        if (rc < 0)
            goto fail;
        break;
    }

    /* counting sort by device: off[d] .. off[d+1] */
    for (size_t i = 0; i < n; i++)
        p->off[dev[i] + 1]++;
    for (size_t d = 0; d < k; d++) {
        if (!p->off[d + 1]) {
            rc = af_seterr(AF_ERANGE,
                           "partition '%s': device %zu received no samples (use fewer devices "
                           "or another spec)",
                           spec, d);
            goto fail;
        }
        p->off[d + 1] += p->off[d];
    }
    for (size_t d = 0; d < k; d++)
        s.sizes[d] = p->off[d];
    for (size_t i = 0; i < n; i++)
        p->idx[s.sizes[dev[i]]++] = (uint32_t)i;
    /* the held-out split is a random subset of each device, from the device's own stream */
    for (size_t d = 0; d < k; d++) {
        uint32_t *list = p->idx + p->off[d];
        size_t nd = p->off[d + 1] - p->off[d];
        size_t nh = (size_t)(o.heldout_frac * (double)nd + 0.5);
        if (nh >= nd)
            nh = nd - 1;
        af_rng r = af_rng_split(seed ^ SALT_DEVICE, d);
        af_rng_shuffle_u32(&r, list, nd);
        p->n_train[d] = (uint32_t)(nd - nh);
        qsort(list, nd - nh, sizeof *list, cmp_u32);
        qsort(list + nd - nh, nh, sizeof *list, cmp_u32);
    }
    af_free(dev);
    af_free(aux);
    af_free(dc);
    af_free(s.order);
    af_free(s.sizes);
    af_free(s.p);
    *out = p;
    return 0;

nomem:
    rc = af_seterr(AF_ENOMEM, "partition '%s': out of memory for %zu samples over %zu devices",
                   spec, n, k);
fail:
    af_free(dev);
    af_free(aux);
    af_free(dc);
    af_free(s.order);
    af_free(s.sizes);
    af_free(s.p);
    data_partition_free(p);
    return rc;
}

/* ---- accessors ------------------------------------------------------------------------- */

const uint32_t *data_partition_train(const data_partition *p, size_t d, size_t *n)
{
    *n = p->n_train[d];
    return p->idx + p->off[d];
}

const uint32_t *data_partition_heldout(const data_partition *p, size_t d, size_t *n)
{
    *n = p->off[d + 1] - p->off[d] - p->n_train[d];
    return p->idx + p->off[d] + p->n_train[d];
}

const uint32_t *data_partition_device(const data_partition *p, size_t d, size_t *n)
{
    *n = p->off[d + 1] - p->off[d];
    return p->idx + p->off[d];
}

/* ---- balance --------------------------------------------------------------------------- */

int data_partition_label_counts(const data_partition *p, const uint8_t *y, size_t d,
                                data_part_range r, uint32_t *counts)
{
    if (d >= p->n_devices)
        return af_seterr(AF_ERANGE, "partition: device %zu out of range (have %zu)", d,
                         p->n_devices);
    size_t lo = p->off[d], hi = p->off[d + 1];
    if (r == DATA_PART_TRAIN)
        hi = lo + p->n_train[d];
    else if (r == DATA_PART_HELDOUT)
        lo += p->n_train[d];
    memset(counts, 0, sizeof(uint32_t) * (size_t)p->n_classes);
    for (size_t i = lo; i < hi; i++) {
        uint8_t c = y[p->idx[i]];
        if (c >= p->n_classes)
            return af_seterr(AF_EINVAL, "partition: label %u of sample %u is outside [0, %d)",
                             c, p->idx[i], p->n_classes);
        counts[c]++;
    }
    return 0;
}

int data_partition_population(const data_partition *p, const uint8_t *y, uint64_t *counts)
{
    memset(counts, 0, sizeof(uint64_t) * (size_t)p->n_classes);
    for (size_t i = 0; i < p->n_samples; i++) {
        uint8_t c = y[p->idx[i]];
        if (c >= p->n_classes)
            return af_seterr(AF_EINVAL, "partition: label %u of sample %u is outside [0, %d)",
                             c, p->idx[i], p->n_classes);
        counts[c]++;
    }
    return 0;
}

double data_partition_skew(const data_partition *p, const uint8_t *y, size_t d,
                           const uint64_t *pop)
{
    uint32_t cnt[PART_MAX_CLASSES];
    int rc = data_partition_label_counts(p, y, d, DATA_PART_ALL, cnt);
    if (rc < 0)
        return rc;
    uint64_t total = 0;
    for (int c = 0; c < p->n_classes; c++)
        total += pop[c];
    double nd = (double)(p->off[d + 1] - p->off[d]), tv = 0.0;
    /* TV = ½ Σ_c |n_dc/n_d − N_c/N| */
    for (int c = 0; c < p->n_classes; c++)
        tv += fabs((double)cnt[c] / nd - (double)pop[c] / (double)total);
    return 0.5 * tv;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* q-th quantile of sorted a[0..n), linear between order statistics */
static double quantile(const double *a, size_t n, double q)
{
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos, hi = lo + 1 < n ? lo + 1 : lo;
    return a[lo] + (a[hi] - a[lo]) * (pos - (double)lo);
}

int data_partition_balance(const data_partition *p, const uint8_t *y, double *skew,
                           data_balance *out)
{
    size_t k = p->n_devices;
    uint64_t pop[PART_MAX_CLASSES];
    int rc = data_partition_population(p, y, pop);
    if (rc < 0)
        return rc;
    double *sorted = malloc(sizeof(double) * k);
    if (!sorted)
        return af_seterr(AF_ENOMEM, "partition balance: out of memory for %zu devices", k);
    data_balance b = {0};
    b.size_min = SIZE_MAX;
    for (size_t d = 0; d < k; d++) {
        double s = data_partition_skew(p, y, d, pop);
        size_t nd = p->off[d + 1] - p->off[d];
        sorted[d] = s;
        if (skew)
            skew[d] = s;
        b.skew_mean += s;
        b.size_mean += (double)nd;
        if (nd < b.size_min)
            b.size_min = nd;
        if (nd > b.size_max)
            b.size_max = nd;
    }
    b.skew_mean /= (double)k;
    b.size_mean /= (double)k;
    qsort(sorted, k, sizeof *sorted, cmp_double);
    b.skew_p50 = quantile(sorted, k, 0.5);
    b.skew_p90 = quantile(sorted, k, 0.9);
    b.skew_max = sorted[k - 1];
    free(sorted);
    *out = b;
    return 0;
}

/* ---- report files ---------------------------------------------------------------------- */

static int sb_write(af_strbuf *b, const char *path, const char *what)
{
    int rc;
    if (b->oom) {
        rc = af_seterr(AF_ENOMEM, "write %s: out of memory building %s", path, what);
    } else {
        const void *bufs[1] = {b->buf};
        size_t lens[1] = {b->len};
        rc = af_write_file_atomic(path, bufs, lens, 1);
    }
    free(b->buf);
    return rc;
}

/* A CSV field, quoted (with "" for ") when it holds a comma, quote or line break. */
static void sb_csv_field(af_strbuf *b, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        af_strbuf_printf(b, "%s", s);
        return;
    }
    af_strbuf_printf(b, "\"");
    for (; *s; s++)
        af_strbuf_printf(b, *s == '"' ? "\"\"" : "%c", *s);
    af_strbuf_printf(b, "\"");
}

int data_partition_write_csv(const data_partition *p, const uint8_t *y,
                             const char *const *class_names, const char *path)
{
    af_strbuf b = {0};
    uint32_t cnt[PART_MAX_CLASSES];
    af_strbuf_printf(&b, "device,n_train,n_heldout");
    for (int c = 0; c < p->n_classes; c++) {
        af_strbuf_printf(&b, ",");
        if (class_names && class_names[c])
            sb_csv_field(&b, class_names[c]);
        else
            af_strbuf_printf(&b, "class_%d", c);
    }
    af_strbuf_printf(&b, "\n");
    for (size_t d = 0; d < p->n_devices; d++) {
        int rc = data_partition_label_counts(p, y, d, DATA_PART_ALL, cnt);
        if (rc < 0) {
            free(b.buf);
            return af_preerr(rc, "write %s", path);
        }
        size_t nd = p->off[d + 1] - p->off[d];
        af_strbuf_printf(&b, "%zu,%u,%zu", d, p->n_train[d], nd - p->n_train[d]);
        for (int c = 0; c < p->n_classes; c++)
            af_strbuf_printf(&b, ",%u", cnt[c]);
        af_strbuf_printf(&b, "\n");
    }
    return sb_write(&b, path, "partition.csv");
}

static void sb_json_string(af_strbuf *b, const char *s)
{
    af_strbuf_printf(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            af_strbuf_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            af_strbuf_printf(b, "\\u%04x", ch);
        else
            af_strbuf_printf(b, "%c", ch);
    }
    af_strbuf_printf(b, "\"");
}

int data_partition_write_balance_json(const data_partition *p, const uint8_t *y,
                                      const char *path)
{
    size_t k = p->n_devices;
    uint64_t pop[PART_MAX_CLASSES];
    int rc = data_partition_population(p, y, pop);
    if (rc < 0)
        return af_preerr(rc, "write %s", path);
    double *skew = malloc(sizeof(double) * k);
    if (!skew)
        return af_seterr(AF_ENOMEM, "write %s: out of memory for %zu devices", path, k);
    data_balance bal;
    rc = data_partition_balance(p, y, skew, &bal);
    if (rc < 0) {
        free(skew);
        return af_preerr(rc, "write %s", path);
    }
    af_strbuf b = {0};
    af_strbuf_printf(&b, "{\"spec\": ");
    sb_json_string(&b, p->spec_str);
    af_strbuf_printf(&b,
              ", \"seed\": %llu, \"devices\": %zu, \"samples\": %zu, \"classes\": %d, "
              "\"heldout_frac\": %.10g,\n \"population\": [",
              (unsigned long long)p->seed, k, p->n_samples, p->n_classes, p->heldout_frac);
    for (int c = 0; c < p->n_classes; c++)
        af_strbuf_printf(&b, "%s%llu", c ? ", " : "", (unsigned long long)pop[c]);
    af_strbuf_printf(&b,
              "],\n \"size\": {\"min\": %zu, \"mean\": %.10g, \"max\": %zu},\n"
              " \"skew_metric\": \"total_variation\",\n"
              " \"skew\": {\"mean\": %.10g, \"p50\": %.10g, \"p90\": %.10g, \"max\": %.10g},\n"
              " \"device_skew\": [",
              bal.size_min, bal.size_mean, bal.size_max, bal.skew_mean, bal.skew_p50,
              bal.skew_p90, bal.skew_max);
    for (size_t d = 0; d < k; d++)
        af_strbuf_printf(&b, "%s%.6g", d ? (d % 16 ? ", " : ",\n  ") : "", skew[d]);
    af_strbuf_printf(&b, "]}\n");
    free(skew);
    return sb_write(&b, path, "balance.json");
}
