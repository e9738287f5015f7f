/* task.c — the device's side of a task without the network (see task.h): plan and task
 * parsing (with the secure-aggregation object), the data view, caps checks, local training,
 * label counts, the update's safetensors encoding.
 * Layer `client`: core, nn, data, train, fed, cJSON. No I/O, no printing.
 */
#include "client/task.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/strbuf.h"
#include "core/timer.h"
#include "fed/strategy.h"
#include "nn/safetensors.h"
#include "train/train.h"

#define EVAL_BATCH 64

/* ---- plan and task ---- */

static int get_num(const cJSON *o, const char *obj, const char *key, double lo, double hi,
                   double *v)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!f || cJSON_IsNull(f))
        return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble))
        return af_seterr(AF_EINVAL, "%s.%s: expected a number", obj, key);
    if (f->valuedouble < lo || f->valuedouble > hi)
        return af_seterr(AF_ERANGE, "%s.%s: %g is outside [%g, %g]", obj, key, f->valuedouble, lo, hi);
    *v = f->valuedouble;
    return 0;
}

static int get_int(const cJSON *o, const char *obj, const char *key, int lo, int hi, int *v)
{
    double d = *v;
    int rc = get_num(o, obj, key, lo, hi, &d);
    if (rc)
        return rc;
    if (d != floor(d))
        return af_seterr(AF_EINVAL, "%s.%s: expected an integer, got %g", obj, key, d);
    *v = (int)d;
    return 0;
}

static int get_str(const cJSON *o, const char *obj, const char *key, char *dst, size_t cap)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!f || cJSON_IsNull(f))
        return 0;
    if (!cJSON_IsString(f))
        return af_seterr(AF_EINVAL, "%s.%s: expected a string", obj, key);
    if (strlen(f->valuestring) >= cap)
        return af_seterr(AF_ERANGE, "%s.%s: longer than %zu characters", obj, key, cap - 1);
    snprintf(dst, cap, "%s", f->valuestring);
    return 0;
}

int client_plan_parse(const cJSON *plan, client_plan *p)
{
    memset(p, 0, sizeof *p);
    if (!cJSON_IsObject(plan))
        return af_seterr(AF_EFORMAT, "plan: expected a JSON object");
    snprintf(p->strategy, sizeof p->strategy, "fedavg");
    snprintf(p->dataset, sizeof p->dataset, "fashion-mnist");
    p->rounds = 10;
    p->local_epochs = 1;
    p->batch = 10;
    p->eval_every = 1;
    p->max_update_norm = 1000;
    p->dp_delta = 1e-5;
    char optname[16] = "sgd";
    double lr = 0.05, momentum = 0;
    int rc;
    if ((rc = get_str(plan, "plan", "strategy", p->strategy, sizeof p->strategy)) ||
        (rc = get_str(plan, "plan", "strategy_opts", p->strategy_opts, sizeof p->strategy_opts)) ||
        (rc = get_str(plan, "plan", "dataset", p->dataset, sizeof p->dataset)) ||
        (rc = get_str(plan, "plan", "optimizer", optname, sizeof optname)) ||
        (rc = get_int(plan, "plan", "rounds", 1, 1000000, &p->rounds)) ||
        (rc = get_int(plan, "plan", "local_epochs", 1, 100000, &p->local_epochs)) ||
        (rc = get_int(plan, "plan", "batch", 1, 65536, &p->batch)) ||
        (rc = get_int(plan, "plan", "eval_every", 0, 1000000, &p->eval_every)) ||
        (rc = get_num(plan, "plan", "lr", 0, 1e6, &lr)) ||
        (rc = get_num(plan, "plan", "momentum", 0, 1, &momentum)) ||
        (rc = get_num(plan, "plan", "max_update_norm", 0, INFINITY, &p->max_update_norm)) ||
        (rc = get_num(plan, "plan", "dp_clip", 0, 1e12, &p->dp_clip)) ||
        (rc = get_num(plan, "plan", "dp_noise", 0, 1e6, &p->dp_noise)) ||
        (rc = get_num(plan, "plan", "dp_delta", 0, 1, &p->dp_delta)) ||
        (rc = get_num(plan, "plan", "dp_adaptive_quantile", 0, 1, &p->dp_adaptive_quantile)))
        return rc;
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(plan, "secagg");
    if (sa && !cJSON_IsNull(sa)) {
        if (!cJSON_IsBool(sa))
            return af_seterr(AF_EINVAL, "plan.secagg: expected true or false");
        p->secagg = cJSON_IsTrue(sa);
    }
    char pkind[16] = "train";
    if ((rc = get_str(plan, "plan", "kind", pkind, sizeof pkind)))
        return rc;
    if (strcmp(pkind, "label_stats") == 0)
        p->label_stats = 1;
    else if (strcmp(pkind, "train") != 0)
        return af_seterr(AF_EINVAL, "plan.kind: '%s' is not \"train\" or \"label_stats\"", pkind);
    nn_opt_kind kind;
    if (nn_optim_parse_kind(optname, &kind))
        return af_seterr(AF_EINVAL, "plan.optimizer: '%s' is not sgd or adam", optname);
    p->opt = nn_optim_defaults(kind);
    p->opt.lr = (float)lr;
    if (kind == NN_OPT_SGD)
        p->opt.momentum = (float)momentum;
    if (nn_optim_check(&p->opt))
        return af_preerr(AF_ERANGE, "plan");
    return 0;
}

/* ---- the secure-aggregation object ---- */

/* A number field of task.secagg: AF_EFORMAT naming it when missing (required), not a finite
 * number, outside [lo, hi] or (integral) not an integer. *v keeps its default when absent. */
static int sa_num(const cJSON *o, const char *key, int required, double lo, double hi,
                  int integral, double *v)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!f || cJSON_IsNull(f)) {
        if (required)
            return af_seterr(AF_EFORMAT, "task.secagg.%s: required", key);
        return 0;
    }
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble))
        return af_seterr(AF_EFORMAT, "task.secagg.%s: expected a number", key);
    double d = f->valuedouble;
    if (d < lo || d > hi || (integral && d != floor(d)))
        return af_seterr(AF_EFORMAT, "task.secagg.%s: %g is not %s in [%g, %g]", key, d,
                         integral ? "an integer" : "a number", lo, hi);
    *v = d;
    return 0;
}

static int secagg_parse(const cJSON *o, client_task *t)
{
    client_secagg *s = &t->secagg;
    memset(s, 0, sizeof *s);
    if (!cJSON_IsObject(o))
        return af_seterr(AF_EFORMAT, "task.secagg: expected an object");
    double id = 0, n = 0, th = 0, len = 0, range = 1, max_samples = 10000, clip = 0, noise = 0,
           count_noise = 0, bound = 100, snoise = 1;
    int rc;
    if ((rc = sa_num(o, "n", 1, 1, SECAGG_MAX_DEVICES, 1, &n)) ||
        (rc = sa_num(o, "id", 1, 1, n, 1, &id)) ||
        (rc = sa_num(o, "t", 1, floor(n / 2) + 1, n, 1, &th)) ||
        (rc = sa_num(o, "len", 1, 1, 1 << 30, 1, &len)) ||
        (rc = sa_num(o, "range", 0, 1e-300, 1e12, 0, &range)) ||
        (rc = sa_num(o, "max_samples", 0, 1, SECWIRE_MAX_SAMPLES, 1, &max_samples)) ||
        (rc = sa_num(o, "clip", 0, 0, 1e12, 0, &clip)) ||
        (rc = sa_num(o, "noise", 0, 0, 1e6, 0, &noise)) ||
        (rc = sa_num(o, "count_noise", 0, 0, 1e12, 0, &count_noise)) ||
        (rc = sa_num(o, "stats_bound", 0, 1e-300, 1e12, 0, &bound)) ||
        (rc = sa_num(o, "stats_noise", 0, 0, 1e6, 0, &snoise)))
        return rc;
    /* round_id: a decimal string, because a JSON number is a double (53 bits) */
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(o, "round_id");
    if (!cJSON_IsString(rid))
        return af_seterr(AF_EFORMAT, "task.secagg.round_id: expected a decimal string");
    const char *r = rid->valuestring;
    size_t rl = strlen(r);
    char *end = NULL;
    errno = 0;
    unsigned long long rv = rl && rl <= 20 && strspn(r, "0123456789") == rl ? strtoull(r, &end, 10) : 0;
    if (!end || *end || errno == ERANGE)
        return af_seterr(AF_EFORMAT, "task.secagg.round_id: '%.40s' is not a decimal 64-bit "
                                     "number", r);
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(o, "url");
    if (!cJSON_IsString(url) || url->valuestring[0] != '/' || strlen(url->valuestring) >= sizeof s->url)
        return af_seterr(AF_EFORMAT, "task.secagg.url: expected a path starting with '/' (at most "
                                     "%zu characters)", sizeof s->url - 1);
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    int k = SECWIRE_TRAIN;
    if (kind && !cJSON_IsNull(kind)) {
        if (!cJSON_IsString(kind) || (strcmp(kind->valuestring, "train") != 0 &&
                                      strcmp(kind->valuestring, "label_stats") != 0))
            return af_seterr(AF_EFORMAT, "task.secagg.kind: expected \"train\" or \"label_stats\"");
        k = strcmp(kind->valuestring, "label_stats") == 0 ? SECWIRE_LABELS : SECWIRE_TRAIN;
    }
    if ((k == SECWIRE_LABELS) != t->plan.label_stats)
        return af_seterr(AF_EFORMAT, "task.secagg.kind: \"%s\" but the plan's kind is \"%s\"",
                         k == SECWIRE_LABELS ? "label_stats" : "train",
                         t->plan.label_stats ? "label_stats" : "train");
    const cJSON *ad = cJSON_GetObjectItemCaseSensitive(o, "adaptive");
    if (ad && !cJSON_IsNull(ad) && !cJSON_IsBool(ad))
        return af_seterr(AF_EFORMAT, "task.secagg.adaptive: expected true or false");
    /* the device's privacy rests on these: never noise less than the plan promises */
    if (k == SECWIRE_TRAIN && t->plan.dp_clip > 0) {
        if (!(clip > 0) || fabs(clip - t->dp_clip) > 1e-9 * t->dp_clip)
            return af_seterr(AF_EFORMAT, "task.secagg.clip: %g, but this DP round clips to %g", clip,
                             t->dp_clip);
        if (noise < t->plan.dp_noise * (1 - 1e-12))
            return af_seterr(AF_EFORMAT, "task.secagg.noise: %g is below the plan's dp_noise %g",
                             noise, t->plan.dp_noise);
    }
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(o, "deadlines");
    if (!cJSON_IsObject(dl))
        return af_seterr(AF_EFORMAT, "task.secagg.deadlines: expected an object {advertise, "
                                     "share_keys, masked_input, unmask}");
    static const char *const phase[CLIENT_SA_PHASES] = {"advertise", "share_keys", "masked_input",
                                                        "unmask"};
    for (int i = 0; i < CLIENT_SA_PHASES; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(dl, phase[i]);
        if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || f->valuedouble < 0 ||
            (i && f->valuedouble < s->deadline[i - 1]))
            return af_seterr(AF_EFORMAT, "task.secagg.deadlines.%s: expected Unix seconds, not "
                                         "before the previous phase's", phase[i]);
        s->deadline[i] = f->valuedouble;
    }
    s->on = 1;
    s->id = (uint32_t)id;
    s->round_id = rv;
    s->len = (size_t)len;
    snprintf(s->url, sizeof s->url, "%s", url->valuestring);
    secwire_params *w = &s->wire;
    w->kind = k;
    w->n = (uint32_t)n;
    w->t = (uint32_t)th;
    w->range = range;
    w->max_samples = (uint32_t)max_samples;
    w->clip = k == SECWIRE_TRAIN ? clip : 0;
    w->noise = noise;
    w->count_noise = count_noise;
    w->adaptive = cJSON_IsTrue(ad);
    w->stats_bound = bound;
    w->stats_noise = snoise;
    return 0;
}

int client_task_parse(const cJSON *task, client_task *t)
{
    memset(t, 0, sizeof *t);
    if (!cJSON_IsObject(task))
        return af_seterr(AF_EFORMAT, "task: expected a JSON object");
    double version = 0;
    int rc;
    if ((rc = get_int(task, "task", "project", 0, 2147483647, &t->project)) ||
        (rc = get_int(task, "task", "round", 0, 2147483647, &t->round)) ||
        (rc = get_int(task, "task", "attempt", 0, 2147483647, &t->attempt)) ||
        (rc = get_num(task, "task", "version", 0, 9e15, &version)) ||
        (rc = get_num(task, "task", "deadline_at", 0, INFINITY, &t->deadline_at)) ||
        (rc = get_str(task, "task", "checkpoint", t->checkpoint, sizeof t->checkpoint)) ||
        (rc = get_str(task, "task", "report", t->report, sizeof t->report)))
        return rc;
    t->version = (long)version;
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(task, "spec");
    if (!cJSON_IsObject(spec))
        return af_seterr(AF_EFORMAT, "task.spec: expected the model spec object");
    if ((rc = client_plan_parse(cJSON_GetObjectItemCaseSensitive(task, "plan"), &t->plan)))
        return af_preerr(rc, "task");
    t->dp_clip = t->plan.dp_clip;
    if ((rc = get_num(task, "task", "dp_clip", 0, 1e12, &t->dp_clip)))
        return rc;
    if (t->plan.dp_clip > 0 && !(t->dp_clip > 0))
        return af_seterr(AF_EFORMAT, "task.dp_clip: a DP task needs a clip norm > 0");
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(task, "secagg");
    if (sa && !cJSON_IsNull(sa)) {
        if ((rc = secagg_parse(sa, t)))
            return rc;
    } else if (t->plan.secagg || t->plan.label_stats) {
        return af_seterr(AF_EFORMAT, "task.secagg: the plan asks for secure aggregation but the "
                                     "task has no \"secagg\" object");
    }
    /* a secure round sends no report; a label count downloads no checkpoint */
    int need_ckpt = !(t->secagg.on && t->secagg.wire.kind == SECWIRE_LABELS);
    if ((need_ckpt && !t->checkpoint[0]) || (!t->secagg.on && !t->report[0]))
        return af_seterr(AF_EFORMAT, "task: \"checkpoint\" and \"report\" paths are required");
    if (!(t->spec_json = cJSON_PrintUnformatted(spec)))
        return af_seterr(AF_ENOMEM, "task: out of memory");
    return 0;
}

void client_task_clear(client_task *t)
{
    if (!t)
        return;
    free(t->spec_json);
    t->spec_json = NULL;
}

/* ---- data ---- */

int client_data_view_init(const artificien_data *d, client_data_view *v)
{
    memset(v, 0, sizeof *v);
    if (!d)
        return af_seterr(AF_EINVAL, "data: required");
    if (!d->name || !*d->name || strlen(d->name) >= DATA_NAME_MAX)
        return af_seterr(AF_EINVAL, "data.name: a schema name of 1..%d characters is required", DATA_NAME_MAX - 1);
    if (d->channels < 1 || d->height < 1 || d->width < 1 ||
        (size_t)d->channels * d->height * d->width > 100000000)
        return af_seterr(AF_EINVAL, "data: channels, height and width must be >= 1");
    if (d->tabular && (d->channels != 1 || d->height != 1))
        return af_seterr(AF_EINVAL, "data: tabular data has channels = height = 1, width = attributes");
    if (d->classes < 2 || d->classes > DATA_MAX_CLASSES)
        return af_seterr(AF_EINVAL, "data.classes: need 2..%d, got %d", DATA_MAX_CLASSES, d->classes);
    if (!d->x && !d->x8)
        return af_seterr(AF_EINVAL, "data: samples are required: x (floats) or x8 with lut (bytes)");
    if (d->x && d->x8)
        return af_seterr(AF_EINVAL, "data.x8: set x (floats) or x8 (bytes), not both");
    if (d->x8 && !d->lut)
        return af_seterr(AF_EINVAL, "data.lut: required with data.x8 (256 floats, the value of each byte)");
    if (d->x && d->lut)
        return af_seterr(AF_EINVAL, "data.lut: only used with data.x8; data.x holds floats already");
    for (int p = 0; d->lut && p < 256; p++)
        if (!isfinite(d->lut[p]))
            return af_seterr(AF_EINVAL, "data.lut[%d]: %g is not a finite number", p, (double)d->lut[p]);
    if (!d->y || d->n == 0 || d->n > UINT32_MAX)
        return af_seterr(AF_EINVAL, "data: y and n >= 1 are required");
    size_t n_train = d->train ? d->n_train : (d->n_heldout < d->n ? d->n - d->n_heldout : 0);
    if (n_train == 0)
        return af_seterr(AF_EINVAL, "data: no training samples (n %zu, n_heldout %zu)", d->n, d->n_heldout);
    if (!d->heldout && d->n_heldout > d->n)
        return af_seterr(AF_EINVAL, "data.n_heldout: %zu is more than n = %zu", d->n_heldout, d->n);
    for (size_t i = 0; d->train && i < d->n_train; i++)
        if (d->train[i] >= d->n)
            return af_seterr(AF_EINVAL, "data.train[%zu]: index %u >= n = %zu", i, d->train[i], d->n);
    for (size_t i = 0; d->heldout && i < d->n_heldout; i++)
        if (d->heldout[i] >= d->n)
            return af_seterr(AF_EINVAL, "data.heldout[%zu]: index %u >= n = %zu", i, d->heldout[i], d->n);
    size_t need = (d->train ? 0 : n_train) + (d->heldout ? 0 : d->n_heldout);
    if (need && !(v->idx_owned = malloc(sizeof(uint32_t) * need)))
        return af_seterr(AF_ENOMEM, "data: out of memory");
    uint32_t *p = v->idx_owned;
    if (d->train) {
        v->train = d->train;
    } else {
        for (size_t i = 0; i < n_train; i++)
            p[i] = (uint32_t)i;
        v->train = p;
        p += n_train;
    }
    if (d->heldout) {
        v->heldout = d->heldout;
    } else {
        for (size_t i = 0; i < d->n_heldout; i++)
            p[i] = (uint32_t)(d->n - d->n_heldout + i);
        v->heldout = p;
    }
    v->n_train = n_train;
    v->n_heldout = d->n_heldout;
    data_schema *s = &v->ds.schema;
    snprintf(s->name, sizeof s->name, "%s", d->name);
    s->kind = d->tabular ? DATA_KIND_TABULAR : DATA_KIND_IMAGE;
    s->c = d->channels;
    s->h = d->height;
    s->w = d->width;
    s->n_classes = d->classes;
    v->ds.n = d->n;
    v->ds.sample_size = (size_t)d->channels * d->height * d->width;
    /* read only: the engine never writes a dataset's samples, and the view is never
     * data_dataset_free'd, so the app's x / x8 / y are not freed either */
    v->ds.x = (float *)d->x;
    v->ds.x8 = (uint8_t *)d->x8;
    if (d->x8)
        memcpy(v->ds.lut, d->lut, sizeof v->ds.lut);
    v->ds.y = (uint8_t *)d->y;
    return 0;
}

void client_data_view_clear(client_data_view *v)
{
    if (!v)
        return;
    free(v->idx_owned);
    memset(v, 0, sizeof *v);
}

/* ---- caps ---- */

size_t client_task_memory(const nn_model *m, const client_plan *p, int threads)
{
    size_t sum_out = m->layers[0].in_n, max_out = m->layers[0].in_n, scratch = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = &m->layers[i];
        sum_out += l->out_n;
        if (l->out_n > max_out)
            max_out = l->out_n;
        if (l->kind == NN_CONV2D) {
            /* im2col: (out_h·out_w) × (in_c·k_h·k_w) per sample */
            size_t s = (size_t)l->out_h * l->out_w * l->geo.c * l->geo.kh * l->geo.kw;
            if (s > scratch)
                scratch = s;
        }
    }
    /* activations + max-pool arguments + two gradient planes + scratch, per sample */
    size_t per_sample = 2 * sum_out + 2 * max_out + scratch;
    size_t chunk = ((size_t)p->batch + (size_t)threads - 1) / (size_t)threads;
    size_t opt_state = p->opt.kind == NN_OPT_ADAM ? 2 : p->opt.momentum > 0 ? 1 : 0;
    /* params, received copy, update, optimizer state, one gradient buffer per thread */
    size_t floats = m->n_params * (3 + opt_state + (size_t)threads);
    floats += (size_t)threads * chunk * per_sample + (size_t)p->batch * m->layers[0].in_n;
    floats += (size_t)EVAL_BATCH * (per_sample + m->layers[0].in_n);
    return floats * sizeof(float);
}

static void refuse(char *reason, size_t rcap, char *msg, size_t mcap, const char *why,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void refuse(char *reason, size_t rcap, char *msg, size_t mcap, const char *why,
                   const char *fmt, ...)
{
    snprintf(reason, rcap, "%s", why);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, mcap, fmt, ap);
    va_end(ap);
}

int client_task_build(const client_task *t, size_t max_params, nn_model **out, char *reason,
                      size_t reason_cap, char *msg, size_t msg_cap)
{
    *out = NULL;
    nn_caps caps = {max_params, 1e10, 50000000};
    char what[64];
    snprintf(what, sizeof what, "project %d spec", t->project);
    int rc = nn_model_from_json(t->spec_json, what, &caps, out);
    if (rc == AF_ENOMEM)
        return rc;
    if (rc) {
        if (strstr(af_errmsg(), "parameters"))
            refuse(reason, reason_cap, msg, msg_cap, "max_params",
                   "model has more than max_params = %zu parameters", max_params);
        else
            refuse(reason, reason_cap, msg, msg_cap, "model", "model spec refused: %s", af_errmsg());
        return 1;
    }
    return 0;
}

int client_task_check(const artificien_caps *caps, const client_task *t, const nn_model *m,
                      const client_data_view *v, int threads, double flops_per_s, char *reason,
                      size_t rcap, char *msg, size_t mcap)
{
    const client_plan *p = &t->plan;
    const data_schema *s = &v->ds.schema;
    if (strcmp(p->dataset, s->name) != 0) {
        refuse(reason, rcap, msg, mcap, "dataset", "the plan needs dataset '%s', this device holds '%s'",
               p->dataset, s->name);
        return 1;
    }
    if ((size_t)m->in_c * m->in_h * m->in_w != v->ds.sample_size || m->in_c != s->c ||
        m->in_h != s->h || m->in_w != s->w || m->n_classes != s->n_classes) {
        refuse(reason, rcap, msg, mcap, "shape",
               "the model takes %dx%dx%d inputs and %d classes; this device's samples are %dx%dx%d with %d classes",
               m->in_c, m->in_h, m->in_w, m->n_classes, s->c, s->h, s->w, s->n_classes);
        return 1;
    }
    if (m->n_params > caps->max_params) {
        refuse(reason, rcap, msg, mcap, "max_params", "model has %zu parameters, max_params is %zu",
               m->n_params, caps->max_params);
        return 1;
    }
    if (p->local_epochs > caps->max_epochs) {
        refuse(reason, rcap, msg, mcap, "max_epochs", "plan asks %d local epochs, max_epochs is %d",
               p->local_epochs, caps->max_epochs);
        return 1;
    }
    size_t mem = client_task_memory(m, p, threads);
    if (mem > caps->max_memory) {
        refuse(reason, rcap, msg, mcap, "max_memory",
               "training needs about %.1f MiB (batch %d), max_memory is %.1f MiB", mem / 1048576.0,
               p->batch, caps->max_memory / 1048576.0);
        return 1;
    }
    if (strcmp(p->strategy, "scaffold") == 0) {
        refuse(reason, rcap, msg, mcap, "strategy",
               "strategy scaffold needs client control variates, which protocol v1 does not carry");
        return 1;
    }
    if (flops_per_s > 0) {
        /* forward + backward ≈ 3 forward passes per sample per epoch */
        double est = 3.0 * m->flops_fwd * (double)v->n_train * p->local_epochs / flops_per_s;
        if (est > caps->max_seconds) {
            refuse(reason, rcap, msg, mcap, "max_seconds",
                   "training would take about %.0f s at this device's measured speed, max_seconds is %.0f",
                   est, caps->max_seconds);
            return 1;
        }
    }
    return 0;
}

/* ---- secure aggregation ---- */

int client_secagg_layout(const client_task *t, const nn_model *m, secwire_layout *L,
                         char *reason, size_t rcap, char *msg, size_t mcap)
{
    if (secwire_layout_init(L, &t->secagg.wire, m->n_params, m->n_classes)) {
        refuse(reason, rcap, msg, mcap, "secagg", "task.secagg: %s", af_errmsg());
        return 1;
    }
    if (L->len != t->secagg.len) {
        refuse(reason, rcap, msg, mcap, "secagg",
               "task.secagg.len: the coordinator expects %zu words, this device's layout of "
               "the model (%zu parameters, %d classes) has %zu: nothing sent",
               t->secagg.len, m->n_params, m->n_classes, L->len);
        return 1;
    }
    return 0;
}

void client_count_labels(const client_data_view *v, uint32_t *counts)
{
    const int k = v->ds.schema.n_classes;
    memset(counts, 0, sizeof *counts * (size_t)k);
    for (size_t i = 0; i < v->n_train; i++) {
        uint8_t y = v->ds.y[v->train[i]];
        if (y < k)
            counts[y]++;
    }
}

/* ---- training ---- */

typedef struct stop_ctx {
    double t0, max_seconds;
    volatile sig_atomic_t *stop;
    int abandoned;
} stop_ctx;

static int on_step(void *user, long step, long steps, double loss, double seconds)
{
    (void)step, (void)steps, (void)loss, (void)seconds;
    stop_ctx *s = user;
    if ((s->stop && *s->stop) || (s->max_seconds > 0 && af_now() - s->t0 > s->max_seconds))
        s->abandoned = 1;
    return s->abandoned;
}

int client_train(nn_model *m, const float *global, const client_plan *p, const client_data_view *v,
                 int round, int threads, uint64_t seed, double max_seconds,
                 volatile sig_atomic_t *stop, float *delta, client_train_stats *st)
{
    memset(st, 0, sizeof *st);
    float mu = 0.0f;
    if (strcmp(p->strategy, "fedprox") == 0) {
        fed_strategy *fs;
        int rc = fed_strategy_create(p->strategy, p->strategy_opts, m->n_params, &fs);
        if (rc)
            return af_preerr(rc, "plan.strategy_opts");
        mu = (float)fed_strategy_mu(fs);
        fed_strategy_free(fs);
    }
    train_ctx *t;
    int rc = train_create(m, &p->opt, p->batch, threads, &t);
    if (rc)
        return rc;
    train_set_prox(t, mu > 0 ? global : NULL, mu);
    af_rng rng = af_rng_split(seed, (uint64_t)round);
    stop_ctx sc = {af_now(), max_seconds, stop, 0};
    for (int e = 0; e < p->local_epochs && !sc.abandoned; e++) {
        train_epoch_stats es;
        train_epoch(t, &v->ds, v->train, v->n_train, p->batch, &rng, 0, on_step, &sc, &es);
        st->samples = es.samples;
        st->steps += es.steps;
        st->loss = es.loss;
    }
    train_free(t);
    st->samples = v->n_train;
    st->seconds = af_now() - sc.t0;
    st->abandoned = sc.abandoned;
    for (size_t i = 0; i < m->n_params; i++)
        delta[i] = m->params[i] - global[i];
    return 0;
}

/* ---- the update on the wire ---- */

double client_l2(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

int client_delta_serialize(const nn_model *m, const float *delta, const client_report *rep,
                           uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (rep->num_samples == 0)
        return af_seterr(AF_EINVAL, "update: num_samples must be > 0");
    if (!isfinite(rep->loss) || (rep->eval_samples && !isfinite(rep->eval_loss)))
        return af_seterr(AF_EINVAL, "update: loss is not finite");
    for (size_t i = 0; i < m->n_params; i++)
        if (!isfinite(delta[i]))
            return af_seterr(AF_EINVAL, "update: value %zu is not finite (training diverged)", i);
    st_out_tensor ts[2 * NN_MAX_LAYERS];
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        ts[i].name = p->name;
        ts[i].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++)
            ts[i].shape[d] = p->shape[d];
        ts[i].data = delta + p->off;
    }
    char v[12][64]; /* 7 always, tau, unclipped, 3 evaluation values */
    const char *keys[13], *vals[13];
    int n = 0;
#define META(k, ...)                                                                       \
    do {                                                                                   \
        snprintf(v[n], sizeof v[n], __VA_ARGS__);                                          \
        keys[n] = k;                                                                       \
        vals[n] = v[n];                                                                    \
        n++;                                                                               \
    } while (0)
    META("attempt", "%d", rep->attempt);
    META("num_samples", "%zu", rep->num_samples);
    META("loss", "%.9g", rep->loss);
    META("steps", "%ld", rep->steps);
    META("project", "%d", rep->project);
    META("round", "%d", rep->round);
    META("version", "%ld", rep->version);
    if (rep->tau > 0)
        META("tau", "%.9g", rep->tau);
    if (rep->has_unclipped)
        META("unclipped", "%d", rep->unclipped ? 1 : 0);
    af_strbuf conf = {0};
    int rc = 0;
    if (rep->eval_samples) {
        META("eval_samples", "%zu", rep->eval_samples);
        META("eval_correct", "%ld", rep->eval_correct);
        META("eval_loss", "%.9g", rep->eval_loss);
#undef META
        rc = af_strbuf_printf(&conf, "[");
        for (int r = 0; !rc && r < rep->k; r++) {
            rc = af_strbuf_printf(&conf, "%s[", r ? "," : "");
            for (int c = 0; !rc && c < rep->k; c++)
                rc = af_strbuf_printf(&conf, "%s%ld", c ? "," : "", rep->confusion[r * rep->k + c]);
            if (!rc)
                rc = af_strbuf_printf(&conf, "]");
        }
        if (!rc)
            rc = af_strbuf_printf(&conf, "]");
        if (rc) {
            free(conf.buf);
            return af_seterr(AF_ENOMEM, "update: out of memory");
        }
        keys[n] = "eval_confusion";
        vals[n] = conf.buf;
        n++;
    }
    rc = st_serialize(ts, m->n_params_t, keys, vals, n, out, len);
    free(conf.buf);
    return rc;
}
