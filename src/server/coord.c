/* coord.c — the coordinator's state machine over the store (see coord.h).
 *
 * Invariants, all under c->mu:
 *   - proj->model holds checkpoint proj->version, which is the store's latest;
 *   - while proj->open, the attempt's log holds its selections (proj->sel, proj->devs
 *     SELECTED) and its stored reports; every stored report is either folded and counted
 *     (in proj->agg, devs REPORTED) or in flight (devs REPORTING,
 *     counted in proj->inflight), and the attempt closes only with none in flight;
 *   - an upload being received (counted in proj->streaming from srv_coord_report_begin to
 *     its conclusion) has its checked floats folded into proj->agg as they arrive; it is
 *     counted there (fed_agg_finish_update) once stored, else subtracted again, and the
 *     attempt closes only with none streaming, so no half-folded update is ever applied;
 *   - the store is written first; memory changes only after the store said yes, so a failed
 *     write leaves memory as it was.
 * A report is folded and stored outside c->mu: the lock is held only to check the state and
 * claim the device's slot, and again to count the report. The log serialises its own
 * appends; the streaming fold goes into proj->agg under proj->fold_mu, taken per slice
 * (integer adds: slices of concurrent uploads interleave exactly).
 */
#include "server/coord.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "fed/accountant.h"
#include "fed/dp.h"
#include "fed/popstats.h"
#include "fed/secagg.h"
#include "fed/secwire.h"
#include "fed/strategy.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"
#include "server/auth.h"
#include "server/plan.h"
#include "server/upload.h"
#include "store/store.h"

#define MAX_CLASSES 256

/* ---- replies and blobs --------------------------------------------------------------------- */

void srv_blob_ref(srv_blob *b) { atomic_fetch_add(&b->refs, 1); }

void srv_blob_release(srv_blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

static srv_blob *blob_from(const void *data, size_t len)
{
    srv_blob *b = malloc(sizeof *b + len);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    memcpy(b->data, data, len);
    return b;
}

void srv_reply_clear(srv_reply *r)
{
    cJSON_Delete(r->json);
    srv_blob_release(r->blob);
    memset(r, 0, sizeof *r);
}

int srv_reply_error(srv_reply *r, int status, const char *code, const char *fmt, ...)
{
    cJSON_Delete(r->json);
    r->json = NULL;
    r->status = status;
    r->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    return status;
}

static void reply_json(srv_reply *r, int status, cJSON *j)
{
    if (!j) {
        srv_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    r->status = status;
    r->json = j;
}

static void reply_internal(srv_reply *r, const char *what)
{
    af_log(AF_LOG_ERROR, "internal", "what=\"%s\" error=\"%s\"", what, af_errmsg());
    srv_reply_error(r, 500, "internal", "%s: %s", what, af_errmsg());
}

/* ---- device sets: open addressing, id -> state ---------------------------------------------- */

enum { DEV_NONE = 0, DEV_SELECTED = 1, DEV_REPORTED = 2, DEV_REPORTING = 3 };

typedef struct devset {
    int64_t *ids;   /* 0 = empty slot (device ids start at 1) */
    uint8_t *st;
    size_t cap, n;
} devset;

static size_t dev_slot(const devset *d, int64_t id)
{
    size_t i = ((uint64_t)id * 0x9E3779B97F4A7C15ULL) >> 20;
    for (i &= d->cap - 1; d->ids[i] && d->ids[i] != id; i = (i + 1) & (d->cap - 1))
        ;
    return i;
}

static int devset_get(const devset *d, int64_t id)
{
    if (!d->cap)
        return DEV_NONE;
    size_t i = dev_slot(d, id);
    return d->ids[i] ? d->st[i] : DEV_NONE;
}

static int devset_put(devset *d, int64_t id, int state)
{
    if (2 * (d->n + 1) > d->cap) {
        devset g = {0};
        g.cap = d->cap ? 2 * d->cap : 64;
        g.ids = calloc(g.cap, sizeof *g.ids);
        g.st = calloc(g.cap, 1);
        if (!g.ids || !g.st) {
            free(g.ids);
            free(g.st);
            return af_seterr(AF_ENOMEM, "out of memory for the round's device set");
        }
        for (size_t i = 0; i < d->cap; i++)
            if (d->ids[i]) {
                size_t j = dev_slot(&g, d->ids[i]);
                g.ids[j] = d->ids[i];
                g.st[j] = d->st[i];
                g.n++;
            }
        free(d->ids);
        free(d->st);
        *d = g;
    }
    size_t i = dev_slot(d, id);
    if (!d->ids[i]) {
        d->ids[i] = id;
        d->n++;
    }
    d->st[i] = (uint8_t)state;
    return 0;
}

static void devset_clear(devset *d)
{
    if (d->cap) {
        memset(d->ids, 0, d->cap * sizeof *d->ids);
        memset(d->st, 0, d->cap);
    }
    d->n = 0;
}

/* ---- state ------------------------------------------------------------------------------------ */

/* Secure aggregation of an open attempt (plan.secagg; docs/api.md "Secure aggregation"). The
 * devices of the attempt are numbered 1..n in selection order; each phase closes at its
 * deadline or once every device it waits for has answered. */
enum { SA_ADVERTISE, SA_SHARE, SA_MASKED, SA_UNMASK, SA_UNMASKING, SA_FINISHED };
static const char *const sa_phase_name[] = {"advertise", "share_keys", "masked_input", "unmask",
                                            "unmasking", "finished"};
/* Once t unmask answers are in (enough to rebuild every secret), the phase waits this much
 * more for the other survivors (devices poll at least every 0.5 s), not until its deadline:
 * 1 s + 2 % of round_deadline_s. */
#define SA_UNMASK_GRACE_S 1.0
#define SA_UNMASK_GRACE 0.02
/* The phases' deadlines as fractions of round_deadline_s after the attempt opened. */
static const double sa_phase_end[4] = {0.15, 0.3, 0.85, 1.0};

typedef struct sa_state {
    secagg_server *srv;
    secagg_cfg cfg;
    secwire_layout L;
    int phase;
    double ends[4];
    int64_t *dev;             /* [n + 1]: number in the round → device id (0: not handed out) */
    uint8_t *sent;            /* [n + 1]: bit k = the device's phase-k message was accepted */
    uint32_t got[4];          /* messages accepted per phase */
    uint32_t u1, u2, u3;      /* sizes of the phases' sets once closed */
    double t_at;              /* when the t-th unmask answer arrived */
    int busy;                 /* the timer thread is unmasking outside c->mu */
    char *keys_b64;           /* U1's key records, once phase 0 closed */
    uint32_t *u3_ids;         /* U3, once phase 2 closed */
    size_t n3;
    uint32_t *sum;            /* the unmasked sum, len words */
} sa_state;

static void sa_free(sa_state *s)
{
    if (!s)
        return;
    secagg_server_free(s->srv);
    free(s->dev);
    free(s->sent);
    free(s->keys_b64);
    free(s->u3_ids);
    af_free(s->sum);
    free(s);
}

typedef struct proj {
    int64_t id, owner_id;
    char name[128];
    int done;
    int64_t version;          /* checkpoint held in model */
    srv_plan plan;
    char *plan_text;          /* canonical plan JSON */
    nn_model *model;
    fed_strategy *strat;
    fed_agg *agg;
    float *w_next;            /* scratch for the next global model (n_params) */
    float *state_backup;      /* strategy state before apply, restored if the commit fails */
    size_t n_state;
    float *delta;             /* scratch for re-folding stored reports at load */
    srv_blob *ckpt;           /* serialized checkpoint `version` */
    int started;              /* a round has opened (the initial checkpoint is fixed) */
    /* the open attempt */
    int open;
    store_round round;
    devset devs;
    store_log *log;           /* its selections and reports (opened at the first record) */
    store_selection *sel;     /* who was handed its task, and when */
    size_t n_sel, cap_sel;
    int inflight;             /* reports admitted and being stored/folded, not yet counted */
    int streaming;            /* uploads begun and not concluded (slices in proj->agg) */
    struct srv_coord *coord;  /* the owner, for an upload released without a finish */
    srv_blob *task;           /* its check-in answer {"action": "train", …}, made once */
    pthread_mutex_t fold_mu;  /* guards proj->agg while uploads fold slices into it as they
                                 stream in (exact integer sums: slices of different uploads
                                 may interleave) */
    double loss_sum, loss_w;  /* Σ n_k·loss_k, Σ n_k over reports with a loss */
    int64_t eval_samples, eval_correct;
    double eval_loss_sum;     /* Σ eval_samples_k·eval_loss_k */
    int64_t *confusion;       /* C×C, summed eval_confusion */
    double *dev_acc;          /* each report's own evaluation accuracy (per-device spread) */
    size_t n_acc, cap_acc;
    int has_confusion;
    /* central DP-FedAvg (plan.dp_clip > 0): every report weighs 1; at commit the sum gets
     * N(0, (z·S)²) noise and the fixed denominator devices_per_round */
    int dp;
    fed_agg *dp_agg;          /* the noised average, handed to the strategy */
    acct acct;                /* RDP of the committed rounds (rebuilt from their dp_q at load) */
    double eps;               /* ε at plan.dp_delta of the committed rounds */
    double clip;              /* S of the open (or next) round: plan.dp_clip, moved by adaptive
                                 clipping and kept in each committed round's row */
    double z_delta;           /* the updates' noise multiplier: z, or z_Δ with adaptive clipping */
    double unclipped;         /* Σ of the open attempt's reports' clipping bits */
    double b_bar;             /* the noised unclipped fraction at commit (NaN: none) */
    sa_state *sa;             /* secure aggregation of the open attempt, or NULL */
    char *result;             /* label_stats: the committed release (JSON) */
} proj;

struct srv_coord {
    pthread_mutex_t mu;
    store *st;
    srv_coord_config cfg;
    srv_metrics *metrics;
    srv_metrics own_metrics;
    uint8_t admin_hash[SRV_HASH_BYTES];
    /* tokens already resolved: every request carries one, and keys and tokens are never
     * revoked, so a hit skips the database (and c->mu). Direct-mapped, bounded. */
    pthread_mutex_t auth_mu;
    struct auth_entry {
        uint8_t hash[SRV_HASH_BYTES];
        srv_principal who;     /* role 0: empty */
    } *auth_cache;
    char *admin_path, *secret_path;
    char *spool_dir;          /* the database's directory: upload spool files */
    size_t max_body;
    proj **projects;
    int n_projects, cap_projects;
    af_rng rng;
};

static void proj_free(proj *p)
{
    if (!p)
        return;
    free(p->plan_text);
    nn_model_free(p->model);
    fed_strategy_free(p->strat);
    fed_agg_free(p->agg);
    fed_agg_free(p->dp_agg);
    af_free(p->w_next);
    af_free(p->state_backup);
    af_free(p->delta);
    srv_blob_release(p->ckpt);
    store_round_clear(&p->round);
    free(p->devs.ids);
    free(p->devs.st);
    free(p->confusion);
    store_log_close(p->log);
    srv_blob_release(p->task);
    free(p->sel);
    sa_free(p->sa);
    free(p->result);
    free(p->dev_acc);
    pthread_mutex_destroy(&p->fold_mu);
    free(p);
}

static proj *find_proj(srv_coord *c, int64_t id)
{
    for (int i = 0; i < c->n_projects; i++)
        if (c->projects[i]->id == id)
            return c->projects[i];
    return NULL;
}

static int add_proj(srv_coord *c, proj *p)
{
    if (c->n_projects == c->cap_projects) {
        int cap = c->cap_projects ? 2 * c->cap_projects : 16;
        proj **a = realloc(c->projects, (size_t)cap * sizeof *a);
        if (!a)
            return af_seterr(AF_ENOMEM, "out of memory for projects");
        c->projects = a;
        c->cap_projects = cap;
    }
    p->coord = c;
    c->projects[c->n_projects++] = p;
    return 0;
}

static void reset_attempt_stats(proj *p)
{
    p->loss_sum = p->loss_w = p->eval_loss_sum = 0;
    p->eval_samples = p->eval_correct = 0;
    p->has_confusion = 0;
    if (p->confusion)
        memset(p->confusion, 0, (size_t)p->model->n_classes * p->model->n_classes * sizeof(int64_t));
    if (p->agg)
        fed_agg_reset(p->agg);
    devset_clear(&p->devs);
    store_log_close(p->log);
    p->log = NULL;
    p->n_sel = 0;
    srv_blob_release(p->task);
    p->task = NULL;
    p->unclipped = 0;
    p->b_bar = NAN;
    p->n_acc = 0;
    sa_free(p->sa);
    p->sa = NULL;
}

/* The open attempt's log, opened (created) at its first record. */
static int attempt_log(srv_coord *c, proj *p)
{
    if (p->log)
        return 0;
    store_attempt_key k = {p->id, p->round.number, p->round.attempt};
    return store_log_open(c->st, &k, &p->log);
}

/* Room for one more selection (so that recording one after the log write cannot fail). */
static int sel_reserve(proj *p)
{
    if (p->n_sel < p->cap_sel)
        return 0;
    size_t cap = p->cap_sel ? 2 * p->cap_sel : 64;
    store_selection *a = realloc(p->sel, cap * sizeof *a);
    if (!a)
        return af_seterr(AF_ENOMEM, "out of memory for the round's selections");
    p->sel = a;
    p->cap_sel = cap;
    return 0;
}

/* The checkpoint of p's current model serialized with its metadata, as a new blob. */
static int serialize_ckpt(proj *p, int64_t version, int round, srv_blob **out)
{
    char pid[32], ver[32], rnd[32];
    snprintf(pid, sizeof pid, "%lld", (long long)p->id);
    snprintf(ver, sizeof ver, "%lld", (long long)version);
    snprintf(rnd, sizeof rnd, "%d", round);
    const char *keys[] = {"project", "version", "round"}, *vals[] = {pid, ver, rnd};
    unsigned char *buf;
    size_t len;
    int rc = nn_checkpoint_serialize(p->model, keys, vals, 3, &buf, &len);
    if (rc)
        return rc;
    *out = blob_from(buf, len);
    free(buf);
    return *out ? 0 : af_seterr(AF_ENOMEM, "out of memory for a checkpoint");
}

/* ---- central differential privacy ----------------------------------------------------------- */

static int dp_replay_round(void *user, const store_round *rd)
{
    proj *p = user;
    if (strcmp(rd->state, "committed") != 0 || !(rd->dp_q > 0))
        return 0;
    if (rd->dp_clip > 0) /* adaptive clipping: the clip this round chose for the next */
        p->clip = rd->dp_clip;
    return acct_step(&p->acct, rd->dp_q, p->plan.dp_noise, 1);
}

/* Rebuilds the accountant from the committed rounds' sampling rates (the noise multiplier is
 * the plan's, fixed for the project's life). */
static int dp_replay(srv_coord *c, proj *p)
{
    int rc = store_round_each(c->st, p->id, dp_replay_round, p);
    if (!rc)
        rc = acct_epsilon(&p->acct, p->plan.dp_delta, &p->eps, NULL);
    return rc;
}

/* The sampling rate one round is charged: q = devices_per_round / N, with N the plan's
 * dp_population or the enrolled devices holding the plan's dataset (capped at 1). */
static double dp_rate(srv_coord *c, const proj *p)
{
    int64_t n = p->plan.dp_population;
    if (n <= 0)
        n = store_device_count_dataset(c->st, p->plan.dataset);
    double q = n > 0 ? (double)p->plan.devices_per_round / (double)n : 1.0;
    return q < 1.0 ? q : 1.0;
}

/* 1 if one more round would take ε past the plan's target (0 without a target). */
static int dp_budget_spent(srv_coord *c, const proj *p)
{
    double e;
    if (!p->dp || !(p->plan.dp_target_epsilon > 0))
        return 0;
    if (acct_epsilon_after(&p->acct, dp_rate(c, p), p->plan.dp_noise, 1, p->plan.dp_delta, &e,
                           NULL))
        return 1;
    return e > p->plan.dp_target_epsilon;
}

/* A generator seeded by the OS (randombytes): DP noise must not be reproducible. */
static void os_rng(af_rng *rng)
{
    uint64_t seed[2];
    randombytes_buf(seed, sizeof seed);
    af_rng_seed(rng, seed[0], seed[1]);
    sodium_memzero(seed, sizeof seed);
}

/* Adaptive clipping, central (no secure aggregation): the noised unclipped fraction of the
 * open attempt's reports, into p->b_bar. */
static int dp_central_fraction(proj *p)
{
    dp_adaptive_clip ac;
    int rc = dp_adaptive_clip_init(&ac, p->clip, p->plan.dp_adaptive_quantile,
                                   p->plan.dp_adaptive_lr, p->plan.dp_adaptive_count_noise);
    af_rng rng;
    os_rng(&rng);
    if (!rc)
        rc = dp_adaptive_clip_fraction(&ac, p->unclipped, p->round.reports,
                                       (double)p->plan.devices_per_round, &rng, &p->b_bar);
    sodium_memzero(&rng, sizeof rng);
    return rc;
}

/* The clip after this round: S·exp(−η(b̄ − γ)) with adaptive clipping, else S. */
static double dp_next_clip(const proj *p)
{
    dp_adaptive_clip ac;
    if (!(p->plan.dp_adaptive_quantile > 0) || !isfinite(p->b_bar) ||
        dp_adaptive_clip_init(&ac, p->clip, p->plan.dp_adaptive_quantile, p->plan.dp_adaptive_lr,
                              0) ||
        dp_adaptive_clip_update(&ac, p->b_bar))
        return p->clip;
    return ac.clip;
}

/* Turns the round's accumulated clipped deltas (weights 1) into the noised average in
 * p->dp_agg: (Σ clip(Δ_k) + N(0, (z·S)² I)) / devices_per_round, as sim/privacy.c does. The
 * noise comes from a generator seeded by the OS (randombytes), never by the plan's seed: a
 * reproducible noise draw could be subtracted. p->agg is left as it was (a failed commit
 * re-noises on retry; the first draw was never released). */
static int dp_noised_average(proj *p)
{
    size_t n = p->model->n_params;
    uint64_t count = fed_agg_count(p->agg);
    float *sum = p->delta; /* no report is in flight at commit: the refold scratch is free */
    int rc;
    fed_agg_reset(p->dp_agg);
    if (count == 0)
        return 0;
    if ((rc = fed_agg_mean(p->agg, sum)))
        return rc;
    for (size_t i = 0; i < n; i++) /* Σ clip(Δ_k) = mean · count (weights are 1) */
        sum[i] = (float)(sum[i] * (double)count);
    af_rng rng;
    os_rng(&rng);
    rc = dp_fedavg_noise_average(sum, n, p->clip, p->z_delta, (double)p->plan.devices_per_round,
                                 &rng);
    sodium_memzero(&rng, sizeof rng);
    if (!rc)
        rc = fed_agg_add(p->dp_agg, sum, 1.0, NULL);
    return rc;
}

/* Builds the runtime of a project from its stored row: model, plan, strategy, checkpoint. */
static int proj_build(srv_coord *c, const store_project *sp, proj **out)
{
    *out = NULL;
    proj *p = calloc(1, sizeof *p);
    cJSON *pj = NULL;
    int rc;
    if (!p)
        return af_seterr(AF_ENOMEM, "out of memory");
    pthread_mutex_init(&p->fold_mu, NULL);
    p->id = sp->id;
    p->owner_id = sp->owner_id;
    snprintf(p->name, sizeof p->name, "%s", sp->name);
    p->done = strcmp(sp->status, "done") == 0;
    p->version = sp->version;
    if ((rc = acct_init(&p->acct, NULL, 0)))
        goto fail;
    /* stored specs passed the caps in force when they were submitted: no caps here */
    if ((rc = nn_model_from_json(sp->spec, "stored spec", NULL, &p->model)))
        goto fail;
    if (!(pj = cJSON_Parse(sp->plan))) {
        rc = af_seterr(AF_EFORMAT, "stored plan is not JSON");
        goto fail;
    }
    if ((rc = srv_plan_parse(pj, p->model, &p->plan)))
        goto fail;
    p->dp = p->plan.dp_clip > 0;
    p->clip = p->plan.dp_clip;
    p->z_delta = p->plan.dp_noise;
    p->b_bar = NAN;
    if (p->dp && p->plan.dp_adaptive_quantile > 0 && p->plan.dp_noise > 0 &&
        (rc = dp_adaptive_noise_multiplier(p->plan.dp_noise, p->plan.dp_adaptive_count_noise,
                                           &p->z_delta)))
        goto fail;
    if (!(p->plan_text = strdup(sp->plan))) {
        rc = af_seterr(AF_ENOMEM, "out of memory");
        goto fail;
    }
    void *ck = NULL, *state = NULL;
    size_t ck_len = 0, state_len = 0;
    if ((rc = store_checkpoint_get(c->st, p->id, p->version, &ck, &ck_len, &state, &state_len)))
        goto fail;
    rc = nn_checkpoint_load_into(p->model, ck, ck_len, "stored checkpoint");
    if (!rc && !(p->ckpt = blob_from(ck, ck_len)))
        rc = af_seterr(AF_ENOMEM, "out of memory");
    free(ck);
    if (!rc)
        rc = fed_strategy_create(p->plan.strategy, p->plan.strategy_opts, p->model->n_params,
                                 &p->strat);
    if (!rc) {
        float *sv = fed_strategy_state(p->strat, &p->n_state);
        if (state_len != (state ? p->n_state * sizeof(float) : state_len))
            rc = af_seterr(AF_EFORMAT, "stored strategy state has %zu bytes, %s needs %zu",
                           state_len, p->plan.strategy, p->n_state * sizeof(float));
        else if (state && state_len)
            memcpy(sv, state, state_len); /* FedAvgM/FedAdam continue exactly */
    }
    free(state);
    if (rc)
        goto fail;
    size_t n = p->model->n_params, C = (size_t)p->model->n_classes;
    if (!p->done) {
        if ((rc = fed_agg_create(p->strat, &p->agg)))
            goto fail;
        p->w_next = af_alloc(n * sizeof(float));
        p->delta = af_alloc(n * sizeof(float));
        p->state_backup = af_alloc((p->n_state ? p->n_state : 1) * sizeof(float));
        p->confusion = C <= MAX_CLASSES ? calloc(C * C, sizeof(int64_t)) : NULL;
        if (!p->w_next || !p->delta || !p->state_backup || (C <= MAX_CLASSES && !p->confusion)) {
            rc = af_seterr(AF_ENOMEM, "out of memory for project %lld", (long long)p->id);
            goto fail;
        }
        if (p->dp && (rc = fed_agg_create(p->strat, &p->dp_agg)))
            goto fail;
    }
    int nr = store_round_count(c->st, p->id);
    if (nr < 0) {
        rc = nr;
        goto fail;
    }
    p->started = nr > 0;
    if (p->dp && (rc = dp_replay(c, p)))
        goto fail;
    cJSON_Delete(pj);
    *out = p;
    return 0;
fail:
    cJSON_Delete(pj);
    proj_free(p);
    return af_preerr(rc, "project %lld", (long long)sp->id);
}

/* ---- updates ------------------------------------------------------------------------------------ */

/* Counts a stored, folded update in the open attempt's statistics (memory only). */
static int count_report(proj *p, const srv_update *u, int64_t device)
{
    if (isfinite(u->loss)) {
        p->loss_sum += u->num_samples * u->loss;
        p->loss_w += u->num_samples;
    }
    p->eval_samples += u->eval_samples;
    p->eval_correct += u->eval_correct;
    if (isfinite(u->eval_loss))
        p->eval_loss_sum += (double)u->eval_samples * u->eval_loss;
    if (u->confusion && p->confusion) {
        size_t cc = (size_t)p->model->n_classes * p->model->n_classes;
        for (size_t i = 0; i < cc; i++)
            p->confusion[i] += u->confusion[i];
        p->has_confusion = 1;
    }
    if (u->unclipped > 0)
        p->unclipped += 1;
    if (u->eval_samples > 0) { /* the device's own accuracy: how the model serves each one */
        if (p->n_acc == p->cap_acc) {
            size_t cap = p->cap_acc ? 2 * p->cap_acc : 64;
            double *a = realloc(p->dev_acc, cap * sizeof *a);
            if (!a)
                return af_seterr(AF_ENOMEM, "out of memory for the round's device accuracies");
            p->dev_acc = a;
            p->cap_acc = cap;
        }
        p->dev_acc[p->n_acc++] = (double)u->eval_correct / (double)u->eval_samples;
    }
    p->round.reports++;
    return devset_put(&p->devs, device, DEV_REPORTED);
}

/* Folds a validated update into the open attempt and counts it (memory only). */
static int fold(proj *p, const float *delta, const srv_update *u, int64_t device)
{
    fed_extra ex = {NULL, u->tau};
    int rc = fed_agg_add(p->agg, delta, p->dp ? 1.0 : u->num_samples, &ex);
    return rc ? rc : count_report(p, u, device);
}

/* ---- closing attempts --------------------------------------------------------------------------- */

static char *confusion_json(const proj *p)
{
    if (!p->has_confusion)
        return NULL;
    int C = p->model->n_classes;
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < C; i++) {
        cJSON *row = cJSON_CreateArray();
        if (!row || !cJSON_AddItemToArray(a, row)) {
            cJSON_Delete(row);
            cJSON_Delete(a);
            return NULL;
        }
        for (int k = 0; k < C; k++)
            cJSON_AddItemToArray(row, cJSON_CreateNumber((double)p->confusion[(size_t)i * C + k]));
    }
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* {"device_accuracy": {"devices", "mean", "p10", "min", "max"}} over the attempt's reports
 * that carried an evaluation — each device's accuracy on its own held-out data, unweighted
 * (p10 interpolated like the simulator's) — or NULL when none did (or out of memory). Sorts
 * p->dev_acc in place. */
static char *device_accuracy_json(proj *p)
{
    size_t n = p->n_acc;
    if (!n)
        return NULL;
    double *a = p->dev_acc, sum = 0;
    qsort(a, n, sizeof *a, cmp_double);
    for (size_t i = 0; i < n; i++)
        sum += a[i];
    double pos = 0.1 * (double)(n - 1), fr = pos - floor(pos);
    size_t lo = (size_t)pos;
    double p10 = lo + 1 < n ? a[lo] * (1 - fr) + a[lo + 1] * fr : a[lo];
    char buf[256];
    snprintf(buf, sizeof buf, "{\"device_accuracy\":{\"devices\":%zu,\"mean\":%.17g,\"p10\":%.17g,"
                              "\"min\":%.17g,\"max\":%.17g}}",
             n, sum / (double)n, p10, a[0], a[n - 1]);
    return strdup(buf);
}

/* Fills the closing stats of the open attempt into a copy of its round row. */
static void closing_stats(const proj *p, store_round *r, double now)
{
    *r = p->round;
    r->confusion = NULL;
    r->dp_q = NAN;
    r->epsilon = NAN;
    r->dp_clip = NAN;
    r->result = NULL;
    r->closed_at = now;
    r->train_loss = p->loss_w > 0 ? p->loss_sum / p->loss_w : NAN;
    r->eval_samples = p->eval_samples;
    r->eval_correct = p->eval_correct;
    r->eval_loss = p->eval_samples > 0 ? p->eval_loss_sum / (double)p->eval_samples : NAN;
}

static void close_attempt(srv_coord *c, proj *p)
{
    p->open = 0;
    reset_attempt_stats(p);
    if (c->metrics)
        atomic_fetch_sub(&c->metrics->rounds_open, 1);
}

static int robust_apply(srv_coord *c, proj *p);

/* Commits the open attempt: new global model = strategy(old, accumulated updates), stored
 * with the strategy state in one transaction. On failure nothing changes (the attempt stays
 * open and the next tick retries). */
static int commit_round(srv_coord *c, proj *p, double now)
{
    size_t n = p->model->n_params;
    /* no report is in flight or streaming (callers check): proj->agg is idle */
    float *state = p->n_state ? fed_strategy_state(p->strat, &p->n_state) : NULL;
    if (state)
        memcpy(p->state_backup, state, p->n_state * sizeof(float));
    memcpy(p->w_next, p->model->params, n * sizeof(float));
    /* with secure aggregation the devices noised their shares and p->dp_agg already holds
     * the average (sa_commit) */
    int rc = p->dp && !p->sa ? dp_noised_average(p) : 0;
    if (!rc && p->dp && !p->sa && p->plan.dp_adaptive_quantile > 0)
        rc = dp_central_fraction(p);
    if (!rc)
        rc = fed_strategy_needs_updates(p->strat)
                 ? robust_apply(c, p)
                 : fed_strategy_apply(p->strat, p->dp ? p->dp_agg : p->agg, p->w_next);
    srv_blob *ck = NULL;
    float *old = p->model->params;
    int64_t v = p->version + 1;
    int done = v >= p->plan.rounds;
    store_round r;
    closing_stats(p, &r, now);
    acct after = p->acct;
    if (!rc && p->dp) { /* one Poisson-subsampled Gaussian step per committed round */
        r.dp_clip = dp_next_clip(p);
        r.dp_q = dp_rate(c, p);
        rc = acct_step(&after, r.dp_q, p->plan.dp_noise, 1);
        if (!rc)
            rc = acct_epsilon(&after, p->plan.dp_delta, &r.epsilon, NULL);
        if (!rc && p->plan.dp_target_epsilon > 0) {
            /* stop now if the next round would take ε past the target */
            double e_next;
            if (acct_epsilon_after(&after, r.dp_q, p->plan.dp_noise, 1, p->plan.dp_delta,
                                   &e_next, NULL) || e_next > p->plan.dp_target_epsilon)
                done = 1;
        }
    }
    char *conf = confusion_json(p);
    r.confusion = conf;
    char *devacc = device_accuracy_json(p);
    r.result = devacc;
    if (!rc) {
        p->model->params = p->w_next;
        rc = serialize_ckpt(p, v, r.number, &ck);
        p->model->params = old;
    }
    if (!rc)
        rc = store_round_commit(c->st, &r, v, ck->data, ck->len, state,
                                p->n_state * sizeof(float), done, p->sel, p->n_sel);
    free(conf);
    free(devacc);
    if (rc) {
        if (state)
            memcpy(state, p->state_backup, p->n_state * sizeof(float));
        srv_blob_release(ck);
        af_log(AF_LOG_ERROR, "round_commit_failed", "project=%lld round=%d attempt=%d error=\"%s\"",
               (long long)p->id, r.number, r.attempt, af_errmsg());
        return rc;
    }
    p->model->params = p->w_next;
    p->w_next = old;
    srv_blob_release(p->ckpt);
    p->ckpt = ck;
    p->version = v;
    if (p->dp) {
        p->acct = after;
        p->eps = r.epsilon;
        p->clip = r.dp_clip;
    }
    af_log(AF_LOG_INFO, "round_commit", "project=%lld round=%d attempt=%d reports=%d version=%lld "
                                        "train_loss=%.6g eval_accuracy=%.6g",
           (long long)p->id, r.number, r.attempt, r.reports, (long long)v, r.train_loss,
           r.eval_samples ? (double)r.eval_correct / (double)r.eval_samples : NAN);
    close_attempt(c, p);
    if (c->metrics)
        atomic_fetch_add(&c->metrics->rounds[SRV_ROUND_COMMITTED], 1);
    if (done) {
        p->done = 1;
        af_log(AF_LOG_INFO, "project_done", "project=%lld rounds=%lld", (long long)p->id,
               (long long)v);
    }
    return 0;
}

static int abandon_round(srv_coord *c, proj *p, double now)
{
    store_round r;
    closing_stats(p, &r, now);
    char *devacc = device_accuracy_json(p);
    r.result = devacc;
    int rc = store_round_abandon(c->st, &r, p->sel, p->n_sel);
    free(devacc);
    if (rc) {
        af_log(AF_LOG_ERROR, "round_abandon_failed", "project=%lld round=%d error=\"%s\"",
               (long long)p->id, r.number, af_errmsg());
        return rc;
    }
    af_log(AF_LOG_INFO, "round_abandon", "project=%lld round=%d attempt=%d reports=%d "
                                         "min_reports=%d",
           (long long)p->id, r.number, r.attempt, r.reports, p->plan.min_reports);
    close_attempt(c, p);
    if (c->metrics)
        atomic_fetch_add(&c->metrics->rounds[SRV_ROUND_ABANDONED], 1);
    return 0;
}

static void sa_advance(srv_coord *c, proj *p, double now);

/* Closes p's open attempt if its deadline passed (once no report is in flight: the last one
 * to land closes it, or the next tick). A secure-aggregation attempt moves through its
 * phases instead. */
static void close_if_due(srv_coord *c, proj *p, double now)
{
    if (p->sa) {
        sa_advance(c, p, now);
        return;
    }
    if (!p->open || now < p->round.deadline_at || p->inflight || p->streaming)
        return;
    if (p->round.reports >= p->plan.min_reports)
        commit_round(c, p, now);
    else
        abandon_round(c, p, now);
}

static void sa_unmask_outside(srv_coord *c);

void srv_coord_tick(srv_coord *c)
{
    pthread_mutex_lock(&c->mu);
    double now = store_now();
    for (int i = 0; i < c->n_projects; i++)
        close_if_due(c, c->projects[i], now);
    pthread_mutex_unlock(&c->mu);
    sa_unmask_outside(c);
}

/* ---- loading --------------------------------------------------------------------------------------- */

typedef struct reload_ctx {
    srv_coord *c;
    proj *p;
} reload_ctx;

static srv_upload_rules upload_rules(const srv_coord *c, const proj *p)
{
    /* DP: devices clip to S, so anything over S (plus float slack) did not clip */
    double lim = p->plan.max_update_norm;
    if (p->dp && p->clip * (1 + 1e-5) < lim)
        lim = p->clip * (1 + 1e-5);
    srv_upload_rules u = {p->model, lim, fed_strategy_kind_of(p->strat) == FED_FEDNOVA,
                          c->max_body, 0, p->dp && p->plan.dp_adaptive_quantile > 0};
    return u;
}

/* Re-folds one stored report through the same validation as when it arrived: it passes
 * again (a failure means the file was edited by hand: the report is skipped, loudly). */
static int reload_report(reload_ctx *x, int64_t device, const void *data, size_t len)
{
    proj *p = x->p;
    srv_reply r = {0};
    srv_update u;
    srv_upload *up;
    if (devset_get(&p->devs, device) == DEV_REPORTED) {
        af_log(AF_LOG_ERROR, "reload_report_duplicate", "project=%lld device=%lld",
               (long long)p->id, (long long)device);
        return 0;
    }
    srv_upload_rules rules = upload_rules(x->c, p);
    rules.max_len = rules.body_len = len;
    int rc = srv_upload_create(&rules, NULL, p->delta, &up);
    if (rc)
        return rc;
    if (srv_upload_feed(up, data, len, &r) || srv_upload_finish(up, &u, &r)) {
        af_log(AF_LOG_ERROR, "reload_report_invalid", "project=%lld device=%lld error=\"%s\"",
               (long long)p->id, (long long)device, r.msg);
        srv_upload_free(up);
        return 0;
    }
    rc = fold(p, p->delta, &u, device);
    srv_upload_free(up);
    if (rc)
        af_log(AF_LOG_ERROR, "reload_fold_failed", "project=%lld device=%lld error=\"%s\"",
               (long long)p->id, (long long)device, af_errmsg());
    return rc == AF_ENOMEM ? rc : 0;
}

static int reload_record(void *user, const store_log_record *rec)
{
    reload_ctx *x = user;
    proj *p = x->p;
    if (rec->type == STORE_LOG_REPORT) /* secure aggregation logs masked vectors: not updates */
        return p->plan.secagg ? 0 : reload_report(x, rec->device, rec->data, rec->len);
    if (devset_get(&p->devs, rec->device) != DEV_NONE)
        return 0;
    int rc = sel_reserve(p);
    if (rc || (rc = devset_put(&p->devs, rec->device, DEV_SELECTED)))
        return rc;
    p->sel[p->n_sel++] = (store_selection){rec->device, rec->at};
    p->round.selected++;
    return 0;
}

/* Robust strategies (fedmedian, fedtrimmedavg, krum; plan.c keeps DP and secure aggregation
 * away from them) need the individual updates, not the streamed sum (which they leave
 * unused): at commit the attempt's stored reports are read back, re-validated as a reload
 * does, into an m × n block in log order (which a restart reproduces) and the strategy
 * applied to w_next. */
typedef struct robust_ctx {
    srv_coord *c;
    proj *p;
    float *block;   /* cap rows of n_params */
    int64_t *ids;   /* the device of each row, to skip a duplicate as reload_report does */
    size_t m, cap;
} robust_ctx;

static int robust_record(void *user, const store_log_record *rec)
{
    robust_ctx *x = user;
    if (rec->type != STORE_LOG_REPORT || x->m == x->cap)
        return 0;
    for (size_t k = 0; k < x->m; k++)
        if (x->ids[k] == rec->device)
            return 0;
    srv_upload_rules rules = upload_rules(x->c, x->p);
    rules.max_len = rules.body_len = rec->len;
    srv_reply r = {0};
    srv_update u;
    srv_upload *up;
    int rc = srv_upload_create(&rules, NULL, x->block + x->m * x->p->model->n_params, &up);
    if (rc)
        return rc;
    if (!srv_upload_feed(up, rec->data, rec->len, &r) && !srv_upload_finish(up, &u, &r))
        x->ids[x->m++] = rec->device; /* an invalid one was skipped (and logged) at reload */
    srv_upload_free(up);
    return 0;
}

static int robust_apply(srv_coord *c, proj *p)
{
    size_t n = p->model->n_params, cap = p->round.reports > 0 ? (size_t)p->round.reports : 0;
    if (cap > SIZE_MAX / sizeof(float) / n)
        return af_seterr(AF_ENOMEM, "%s: %zu updates of %zu parameters do not fit in memory",
                         p->plan.strategy, cap, n);
    robust_ctx x = {c, p, malloc(cap * n * sizeof(float) + 1), malloc(cap * sizeof(int64_t) + 1),
                    0, cap};
    int rc = 0;
    if (!x.block || !x.ids)
        rc = af_seterr(AF_ENOMEM, "%s: out of memory for the round's %zu updates",
                       p->plan.strategy, cap);
    else if (!(rc = store_log_each(p->log, robust_record, &x)))
        rc = fed_strategy_apply_updates(p->strat, x.block, x.m, p->w_next);
    free(x.block);
    free(x.ids);
    return rc;
}

static int load_open_round(srv_coord *c, proj *p)
{
    store_round r;
    int rc = store_round_get_open(c->st, p->id, &r);
    if (rc == AF_ENOTFOUND) {
        af_clearerr();
        return 0;
    }
    if (rc)
        return rc;
    p->round = r;
    p->round.reports = 0;
    p->round.selected = 0;
    p->open = 1;
    if (c->metrics)
        atomic_fetch_add(&c->metrics->rounds_open, 1);
    reload_ctx x = {c, p};
    if (!(rc = attempt_log(c, p)))
        rc = store_log_each(p->log, reload_record, &x);
    if (!rc && p->plan.secagg) {
        /* its devices' secrets lived only in their memory and ours: start the round again */
        af_log(AF_LOG_INFO, "secagg_abandon", "project=%lld round=%d attempt=%d phase=restart",
               (long long)p->id, p->round.number, p->round.attempt);
        rc = abandon_round(c, p, store_now());
    }
    return rc;
}

static int load_project(void *user, const store_project *sp)
{
    srv_coord *c = user;
    proj *p;
    int rc = proj_build(c, sp, &p);
    if (rc)
        return rc;
    if ((rc = add_proj(c, p))) {
        proj_free(p);
        return rc;
    }
    return p->done ? 0 : load_open_round(c, p);
}

/* ---- open / free --------------------------------------------------------------------------------- */

static char *path_with(const char *db, const char *suffix)
{
    size_t n = strlen(db) + strlen(suffix) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s", db, suffix);
    return s;
}

/* First start: an admin key and an enrolment secret, files first, then their hashes. */
static int first_start(srv_coord *c)
{
    char key[SRV_TOKEN_CHARS + 1], secret[SRV_TOKEN_CHARS + 1], hex[2 * SRV_HASH_BYTES + 1];
    uint8_t sh[SRV_HASH_BYTES];
    srv_token_new(key);
    srv_token_new(secret);
    srv_token_hash(key, SRV_TOKEN_CHARS, c->admin_hash);
    srv_token_hash(secret, SRV_TOKEN_CHARS, sh);
    sodium_bin2hex(hex, sizeof hex, c->admin_hash, SRV_HASH_BYTES);
    int rc;
    if ((rc = srv_write_secret_file(c->admin_path, key)) ||
        (rc = srv_write_secret_file(c->secret_path, secret)) || (rc = store_secret_add(c->st, sh)) ||
        (rc = store_meta_set(c->st, "admin_key_hash", hex)))
        return rc;
    sodium_memzero(key, sizeof key);
    sodium_memzero(secret, sizeof secret);
    af_log(AF_LOG_INFO, "first_start", "admin_key_file=%s enroll_secret_file=%s", c->admin_path,
           c->secret_path);
    return 0;
}

int srv_coord_open(const char *db_path, const srv_coord_config *cfg, srv_metrics *metrics,
                   srv_coord **out)
{
    *out = NULL;
    int rc = srv_auth_init();
    if (rc)
        return rc;
    srv_coord *c = calloc(1, sizeof *c);
    if (!c)
        return af_seterr(AF_ENOMEM, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->auth_mu, NULL);
    c->cfg = *cfg;
    if (!(c->cfg.retry_after_s > 0))
        c->cfg.retry_after_s = 5;
    c->metrics = metrics ? metrics : &c->own_metrics;
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    af_rng_seed(&c->rng, seed, 0x5eed);
    c->admin_path = path_with(db_path, ".admin-key");
    c->secret_path = path_with(db_path, ".enroll-secret");
    c->max_body = cfg->max_body ? cfg->max_body : (size_t)64 << 20;
    if ((c->spool_dir = strdup(db_path))) {
        char *slash = strrchr(c->spool_dir, '/');
        if (!slash)
            strcpy(c->spool_dir, ".");
        else
            slash[slash == c->spool_dir] = 0; /* "/x.db" -> "/" */
    }
    if (!c->admin_path || !c->secret_path || !c->spool_dir) {
        rc = af_seterr(AF_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = store_open(db_path, cfg->durable_full, &c->st)))
        goto fail;
    char hex[2 * SRV_HASH_BYTES + 8];
    rc = store_meta_get(c->st, "admin_key_hash", hex, sizeof hex);
    if (rc == AF_ENOTFOUND)
        rc = first_start(c);
    else if (!rc && sodium_hex2bin(c->admin_hash, SRV_HASH_BYTES, hex, strlen(hex), NULL, NULL,
                                   NULL) != 0)
        rc = af_seterr(AF_EFORMAT, "%s: stored admin key hash is malformed", db_path);
    if (rc)
        goto fail;
    if ((rc = store_project_each(c->st, -1, load_project, c)))
        goto fail;
    /* an attempt that had reached its goal when the process died commits now */
    double now = store_now();
    for (int i = 0; i < c->n_projects; i++) {
        proj *p = c->projects[i];
        if (p->open && p->round.reports >= p->plan.devices_per_round)
            commit_round(c, p, now);
        if (p->open)
            af_log(AF_LOG_INFO, "round_reloaded", "project=%lld round=%d attempt=%d reports=%d "
                                                  "selected=%d",
                   (long long)p->id, p->round.number, p->round.attempt, p->round.reports,
                   p->round.selected);
    }
    *out = c;
    return 0;
fail:
    srv_coord_free(c);
    return rc;
}

void srv_coord_free(srv_coord *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_projects; i++)
        proj_free(c->projects[i]);
    free(c->projects);
    store_close(c->st);
    free(c->admin_path);
    free(c->secret_path);
    free(c->spool_dir);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->auth_mu);
    free(c->auth_cache);
    free(c);
}

const char *srv_coord_admin_key_path(const srv_coord *c) { return c->admin_path; }
const char *srv_coord_secret_path(const srv_coord *c) { return c->secret_path; }

long long srv_coord_devices(srv_coord *c)
{
    pthread_mutex_lock(&c->mu);
    long long n = store_device_count(c->st);
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- principals ---------------------------------------------------------------------------------- */

#define AUTH_CACHE 65536 /* entries of 48 bytes: 3 MiB at most */

int srv_coord_auth(srv_coord *c, const char *token, size_t len, srv_principal *out)
{
    uint8_t h[SRV_HASH_BYTES];
    memset(out, 0, sizeof *out);
    srv_token_hash(token, len, h);
    if (sodium_memcmp(h, c->admin_hash, SRV_HASH_BYTES) == 0) {
        out->role = SRV_ADMIN;
        return 0;
    }
    uint64_t slot;
    memcpy(&slot, h, sizeof slot); /* a SHA-256: its bits are already uniform */
    slot %= AUTH_CACHE;
    pthread_mutex_lock(&c->auth_mu);
    struct auth_entry *e = c->auth_cache ? &c->auth_cache[slot] : NULL;
    int hit = e && e->who.role && sodium_memcmp(e->hash, h, SRV_HASH_BYTES) == 0;
    if (hit)
        *out = e->who;
    pthread_mutex_unlock(&c->auth_mu);
    if (hit)
        return 0;
    pthread_mutex_lock(&c->mu);
    int rc = store_device_find(c->st, h, &out->id);
    if (!rc)
        out->role = SRV_DEVICE;
    else if (rc == AF_ENOTFOUND && !(rc = store_owner_find(c->st, h, &out->id)))
        out->role = SRV_OWNER;
    pthread_mutex_unlock(&c->mu);
    if (rc == AF_ENOTFOUND)
        return af_seterr(AF_EAUTH, "unknown token");
    if (rc)
        return rc;
    pthread_mutex_lock(&c->auth_mu);
    if (!c->auth_cache)
        c->auth_cache = calloc(AUTH_CACHE, sizeof *c->auth_cache);
    if (c->auth_cache) {
        memcpy(c->auth_cache[slot].hash, h, SRV_HASH_BYTES);
        c->auth_cache[slot].who = *out;
    }
    pthread_mutex_unlock(&c->auth_mu);
    return 0;
}

static int string_field(const cJSON *body, const char *key, size_t max, const char **out,
                        srv_reply *r)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(body, key);
    if (!cJSON_IsString(j) || !j->valuestring[0] || strlen(j->valuestring) > max)
        return srv_reply_error(r, 400, "bad_field", "%s: required, a non-empty string of at most "
                                                    "%zu characters", key, max);
    *out = j->valuestring;
    return 0;
}

static int only_fields(const cJSON *body, const char *const *keys, srv_reply *r)
{
    if (!cJSON_IsObject(body))
        return srv_reply_error(r, 400, "bad_json", "body: expected a JSON object");
    for (const cJSON *it = body->child; it; it = it->next) {
        int ok = 0;
        for (int i = 0; keys[i]; i++)
            ok |= strcmp(it->string, keys[i]) == 0;
        if (!ok)
            return srv_reply_error(r, 400, "bad_field", "%s: unknown field", it->string);
    }
    return 0;
}

void srv_coord_owner_create(srv_coord *c, const cJSON *body, srv_reply *r)
{
    static const char *const keys[] = {"name", NULL};
    const char *name = NULL;
    if (only_fields(body, keys, r) || string_field(body, "name", 127, &name, r))
        return;
    char key[SRV_TOKEN_CHARS + 1];
    uint8_t h[SRV_HASH_BYTES];
    srv_token_new(key);
    srv_token_hash(key, SRV_TOKEN_CHARS, h);
    int64_t id;
    pthread_mutex_lock(&c->mu);
    int rc = store_owner_add(c->st, name, h, &id);
    pthread_mutex_unlock(&c->mu);
    if (rc == AF_ESTATE) {
        srv_reply_error(r, 409, "conflict", "name: owner \"%s\" exists already", name);
        return;
    }
    if (rc) {
        reply_internal(r, "add owner");
        return;
    }
    af_log(AF_LOG_INFO, "owner_created", "owner=%lld", (long long)id);
    cJSON *j = cJSON_CreateObject();
    if (j && (!cJSON_AddNumberToObject(j, "id", (double)id) ||
              !cJSON_AddStringToObject(j, "name", name) ||
              !cJSON_AddStringToObject(j, "api_key", key))) {
        cJSON_Delete(j);
        j = NULL;
    }
    reply_json(r, 201, j);
}

void srv_coord_secret_create(srv_coord *c, srv_reply *r)
{
    char s[SRV_TOKEN_CHARS + 1];
    uint8_t h[SRV_HASH_BYTES];
    srv_token_new(s);
    srv_token_hash(s, SRV_TOKEN_CHARS, h);
    pthread_mutex_lock(&c->mu);
    int rc = store_secret_add(c->st, h);
    pthread_mutex_unlock(&c->mu);
    if (rc) {
        reply_internal(r, "add enrolment secret");
        return;
    }
    cJSON *j = cJSON_CreateObject();
    if (j && !cJSON_AddStringToObject(j, "secret", s)) {
        cJSON_Delete(j);
        j = NULL;
    }
    reply_json(r, 201, j);
}

void srv_coord_device_enroll(srv_coord *c, const cJSON *body, srv_reply *r)
{
    static const char *const keys[] = {"secret", "dataset", NULL};
    if (only_fields(body, keys, r))
        return;
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(body, "secret");
    if (!cJSON_IsString(sec)) {
        srv_reply_error(r, 401, "unauthorized", "secret: the enrolment secret is required");
        return;
    }
    srv_schema sch;
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(body, "dataset");
    if (srv_schema_parse(ds, "dataset", &sch)) {
        srv_reply_error(r, 400, "bad_field", "%s", af_errmsg());
        return;
    }
    uint8_t h[SRV_HASH_BYTES];
    srv_token_hash(sec->valuestring, strlen(sec->valuestring), h);
    char *ds_text = cJSON_PrintUnformatted(ds);
    char token[SRV_TOKEN_CHARS + 1];
    srv_token_new(token);
    uint8_t th[SRV_HASH_BYTES];
    srv_token_hash(token, SRV_TOKEN_CHARS, th);
    int64_t id = 0;
    pthread_mutex_lock(&c->mu);
    int rc = ds_text ? store_secret_find(c->st, h) : af_seterr(AF_ENOMEM, "out of memory");
    if (!rc)
        rc = store_device_add(c->st, th, ds_text, &id);
    pthread_mutex_unlock(&c->mu);
    free(ds_text);
    if (rc == AF_ENOTFOUND) {
        srv_reply_error(r, 401, "unauthorized", "secret: unknown enrolment secret");
        return;
    }
    if (rc) {
        reply_internal(r, "enrol device");
        return;
    }
    af_log(AF_LOG_DEBUG, "device_enrolled", "device=%lld", (long long)id);
    cJSON *j = cJSON_CreateObject();
    if (j && (!cJSON_AddNumberToObject(j, "device_id", (double)id) ||
              !cJSON_AddStringToObject(j, "token", token))) {
        cJSON_Delete(j);
        j = NULL;
    }
    reply_json(r, 201, j);
}

/* ---- projects ------------------------------------------------------------------------------------ */

/* The project id if p may see it (owner), else fills r (404 unknown, 403 another owner's). */
static proj *owned(srv_coord *c, const srv_principal *who, int64_t id, srv_reply *r)
{
    proj *p = find_proj(c, id);
    if (!p) {
        srv_reply_error(r, 404, "not_found", "project %lld not found", (long long)id);
        return NULL;
    }
    if (who->role != SRV_OWNER || p->owner_id != who->id) {
        srv_reply_error(r, 403, "forbidden", "project %lld belongs to another owner",
                        (long long)id);
        return NULL;
    }
    return p;
}

void srv_coord_project_create(srv_coord *c, const srv_principal *who, const cJSON *body,
                              srv_reply *r)
{
    static const char *const keys[] = {"name", "spec", "plan", NULL};
    const char *name = NULL;
    if (only_fields(body, keys, r) || string_field(body, "name", 127, &name, r))
        return;
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(body, "spec");
    const cJSON *plan = cJSON_GetObjectItemCaseSensitive(body, "plan");
    if (!cJSON_IsObject(spec)) {
        srv_reply_error(r, 400, "bad_field", "spec: required, a model spec object "
                                             "(docs/model-spec.md)");
        return;
    }
    if (!cJSON_IsObject(plan)) {
        srv_reply_error(r, 400, "bad_field", "plan: required, a plan object (docs/api.md)");
        return;
    }
    char *spec_text = cJSON_PrintUnformatted(spec), *plan_text = NULL;
    nn_model *m = NULL;
    srv_plan pl;
    cJSON *pj = NULL;
    if (!spec_text) {
        srv_reply_error(r, 500, "internal", "out of memory");
        goto done;
    }
    if (nn_model_from_json(spec_text, "spec", &c->cfg.caps, &m)) {
        srv_reply_error(r, 400, "bad_field", "%s", af_errmsg());
        goto done;
    }
    if (srv_plan_parse(plan, m, &pl)) {
        srv_reply_error(r, 400, "bad_field", "%s", af_errmsg());
        goto done;
    }
    if (!(pj = srv_plan_to_json(&pl)) || !(plan_text = cJSON_PrintUnformatted(pj))) {
        srv_reply_error(r, 500, "internal", "out of memory");
        goto done;
    }
    nn_model_init(m, pl.seed);
    unsigned char *buf;
    size_t len;
    const char *mk[] = {"version", "round"}, *mv[] = {"0", "0"};
    if (nn_checkpoint_serialize(m, mk, mv, 2, &buf, &len)) {
        reply_internal(r, "serialize initial checkpoint");
        goto done;
    }
    int64_t id;
    pthread_mutex_lock(&c->mu);
    int rc = store_project_add(c->st, who->id, name, m->spec_json, plan_text, buf, len, &id);
    free(buf);
    proj *p = NULL;
    if (!rc) {
        store_project sp;
        if (!(rc = store_project_get(c->st, id, &sp))) {
            rc = proj_build(c, &sp, &p);
            store_project_clear(&sp);
        }
        if (!rc && (rc = add_proj(c, p)))
            proj_free(p);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc) {
        reply_internal(r, "create project");
        goto done;
    }
    af_log(AF_LOG_INFO, "project_created", "project=%lld owner=%lld params=%zu strategy=%s "
                                           "rounds=%d",
           (long long)id, (long long)who->id, m->n_params, pl.strategy, pl.rounds);
    cJSON *j = cJSON_CreateObject();
    if (j && (!cJSON_AddNumberToObject(j, "id", (double)id) ||
              !cJSON_AddNumberToObject(j, "version", 0))) {
        cJSON_Delete(j);
        j = NULL;
    }
    reply_json(r, 201, j);
done:
    free(spec_text);
    free(plan_text);
    cJSON_Delete(pj);
    nn_model_free(m);
}

static cJSON *round_json(const store_round *rd, int live)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "number", rd->number);
    cJSON_AddNumberToObject(o, "attempt", rd->attempt);
    cJSON_AddStringToObject(o, "state", rd->state);
    cJSON_AddNumberToObject(o, "version", (double)rd->version);
    cJSON_AddNumberToObject(o, "selected", rd->selected);
    cJSON_AddNumberToObject(o, "reports", rd->reports);
    cJSON_AddNumberToObject(o, "refused", rd->refused);
    cJSON_AddNumberToObject(o, "opened_at", rd->opened_at);
    cJSON_AddNumberToObject(o, "deadline_at", rd->deadline_at);
    if (!live) {
#define NUM_OR_NULL(k, v)                                                                       \
    do {                                                                                        \
        if (isfinite(v))                                                                        \
            cJSON_AddNumberToObject(o, k, v);                                                   \
        else                                                                                    \
            cJSON_AddNullToObject(o, k);                                                        \
    } while (0)
        NUM_OR_NULL("train_loss", rd->train_loss);
        NUM_OR_NULL("eval_accuracy",
                    rd->eval_samples ? (double)rd->eval_correct / (double)rd->eval_samples : NAN);
        NUM_OR_NULL("eval_loss", rd->eval_loss);
        cJSON_AddNumberToObject(o, "eval_samples", (double)rd->eval_samples);
        NUM_OR_NULL("closed_at", rd->closed_at);
        if (isfinite(rd->epsilon))
            cJSON_AddNumberToObject(o, "epsilon", rd->epsilon);
        if (isfinite(rd->dp_clip))
            cJSON_AddNumberToObject(o, "dp_clip_next", rd->dp_clip);
        cJSON *res = rd->result ? cJSON_Parse(rd->result) : NULL;
        cJSON *da = res ? cJSON_DetachItemFromObjectCaseSensitive(res, "device_accuracy") : NULL;
        if (da)
            cJSON_AddItemToObject(o, "device_accuracy", da);
        else
            cJSON_AddNullToObject(o, "device_accuracy");
        cJSON_Delete(res);
#undef NUM_OR_NULL
    }
    return o;
}

typedef struct status_ctx {
    cJSON *rounds;
    char *confusion;     /* of the latest committed round that has one */
    char *result;        /* of the latest committed round that has one (label_stats) */
} status_ctx;

static int status_round(void *user, const store_round *rd)
{
    status_ctx *x = user;
    if (strcmp(rd->state, "open") == 0)
        return 0;
    cJSON *o = round_json(rd, 0);
    if (!o || !cJSON_AddItemToArray(x->rounds, o)) {
        cJSON_Delete(o);
        return af_seterr(AF_ENOMEM, "out of memory");
    }
    if (strcmp(rd->state, "committed") == 0 && rd->confusion) {
        free(x->confusion);
        x->confusion = strdup(rd->confusion);
    }
    if (strcmp(rd->state, "committed") == 0 && rd->result) {
        free(x->result);
        x->result = strdup(rd->result);
    }
    return 0;
}

void srv_coord_project_get(srv_coord *c, const srv_principal *who, int64_t id, srv_reply *r)
{
    pthread_mutex_lock(&c->mu);
    proj *p = owned(c, who, id, r);
    cJSON *j = NULL;
    status_ctx x = {NULL, NULL, NULL};
    if (!p)
        goto done;
    j = cJSON_CreateObject();
    x.rounds = cJSON_CreateArray();
    if (!j || !x.rounds) {
        cJSON_Delete(x.rounds);
        srv_reply_error(r, 500, "internal", "out of memory");
        goto done;
    }
    cJSON_AddNumberToObject(j, "id", (double)p->id);
    cJSON_AddStringToObject(j, "name", p->name);
    cJSON_AddStringToObject(j, "status", p->done ? "done" : "running");
    cJSON_AddRawToObject(j, "spec", p->model->spec_json);
    cJSON_AddRawToObject(j, "plan", p->plan_text);
    cJSON_AddNumberToObject(j, "params", (double)p->model->n_params);
    cJSON_AddNumberToObject(j, "version", (double)p->version);
    if (p->dp) /* ε at plan.dp_delta spent by the committed rounds */
        cJSON_AddNumberToObject(j, "epsilon", p->eps);
    else
        cJSON_AddNullToObject(j, "epsilon");
    if (p->dp)
        cJSON_AddNumberToObject(j, "dp_clip", p->clip);
    if (p->open) {
        store_round live = p->round;
        cJSON *rj = round_json(&live, 1);
        if (rj && p->sa) {
            const sa_state *s = p->sa;
            cJSON_AddStringToObject(rj, "phase", sa_phase_name[s->phase]);
            cJSON *sj = cJSON_AddObjectToObject(rj, "secagg");
            if (sj) {
                cJSON_AddNumberToObject(sj, "u1", s->phase > SA_ADVERTISE ? s->u1 : s->got[0]);
                cJSON_AddNumberToObject(sj, "u2", s->phase > SA_SHARE ? s->u2 : s->got[1]);
                cJSON_AddNumberToObject(sj, "u3", s->phase > SA_MASKED ? s->u3 : s->got[2]);
                cJSON_AddNumberToObject(sj, "unmasked", s->got[3]);
                cJSON_AddNumberToObject(sj, "t", s->cfg.t);
            }
        }
        cJSON_AddItemToObject(j, "round", rj);
    } else {
        cJSON_AddNullToObject(j, "round");
    }
    int rc = store_round_each(c->st, p->id, status_round, &x);
    cJSON_AddItemToObject(j, "rounds", x.rounds);
    if (rc) {
        reply_internal(r, "list rounds");
        goto done;
    }
    cJSON *conf = x.confusion ? cJSON_Parse(x.confusion) : NULL;
    if (conf)
        cJSON_AddItemToObject(j, "population_confusion", conf);
    else
        cJSON_AddNullToObject(j, "population_confusion");
    if (p->plan.label_stats) {
        cJSON *res = x.result ? cJSON_Parse(x.result) : NULL;
        if (res)
            cJSON_AddItemToObject(j, "label_stats", res);
        else
            cJSON_AddNullToObject(j, "label_stats");
    }
    reply_json(r, 200, j);
    j = NULL;
done:
    pthread_mutex_unlock(&c->mu);
    free(x.confusion);
    free(x.result);
    cJSON_Delete(j);
}

void srv_coord_project_list(srv_coord *c, const srv_principal *who, srv_reply *r)
{
    cJSON *j = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(j, "projects");
    if (!a) {
        cJSON_Delete(j);
        srv_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n_projects; i++) {
        proj *p = c->projects[i];
        if (p->owner_id != who->id)
            continue;
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(a, o)) {
            cJSON_Delete(o);
            continue;
        }
        cJSON_AddNumberToObject(o, "id", (double)p->id);
        cJSON_AddStringToObject(o, "name", p->name);
        cJSON_AddStringToObject(o, "status", p->done ? "done" : "running");
        if (p->open)
            cJSON_AddNumberToObject(o, "round", p->round.number);
        else
            cJSON_AddNullToObject(o, "round");
        cJSON_AddNumberToObject(o, "version", (double)p->version);
    }
    pthread_mutex_unlock(&c->mu);
    reply_json(r, 200, j);
}

void srv_coord_checkpoint_put(srv_coord *c, const srv_principal *who, int64_t id,
                              const void *data, size_t len, srv_reply *r)
{
    pthread_mutex_lock(&c->mu);
    proj *p = owned(c, who, id, r);
    nn_model *m = NULL;
    srv_blob *ck = NULL;
    if (!p)
        goto done;
    if (p->started) {
        srv_reply_error(r, 409, "conflict", "project %lld: rounds have started, the initial "
                                            "checkpoint can no longer change", (long long)id);
        goto done;
    }
    int rc = nn_checkpoint_parse(data, len, "checkpoint", p->model->spec_json, &m);
    if (rc) {
        srv_reply_error(r, 400, rc == AF_ESHAPE ? "bad_shape" : "bad_safetensors", "%s",
                        af_errmsg());
        goto done;
    }
    /* store our canonical serialization (spec and metadata), whatever wrote the upload */
    float *old = p->model->params;
    p->model->params = m->params;
    rc = serialize_ckpt(p, 0, 0, &ck);
    p->model->params = old;
    if (!rc)
        rc = store_checkpoint_replace_initial(c->st, p->id, ck->data, ck->len);
    if (rc == AF_ESTATE) {
        srv_reply_error(r, 409, "conflict", "%s", af_errmsg());
        goto done;
    }
    if (rc) {
        reply_internal(r, "store initial checkpoint");
        goto done;
    }
    memcpy(p->model->params, m->params, p->model->n_params * sizeof(float));
    srv_blob_release(p->ckpt);
    p->ckpt = ck;
    ck = NULL;
    af_log(AF_LOG_INFO, "checkpoint_uploaded", "project=%lld bytes=%zu", (long long)id, len);
    cJSON *j = cJSON_CreateObject();
    if (j && !cJSON_AddNumberToObject(j, "version", 0)) {
        cJSON_Delete(j);
        j = NULL;
    }
    reply_json(r, 200, j);
done:
    pthread_mutex_unlock(&c->mu);
    nn_model_free(m);
    srv_blob_release(ck);
}

static int list_ckpt(void *user, const store_checkpoint_info *ci)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(user, o)) {
        cJSON_Delete(o);
        return af_seterr(AF_ENOMEM, "out of memory");
    }
    cJSON_AddNumberToObject(o, "version", (double)ci->version);
    cJSON_AddNumberToObject(o, "round", (double)ci->round);
    cJSON_AddNumberToObject(o, "bytes", (double)ci->bytes);
    cJSON_AddNumberToObject(o, "created_at", ci->created_at);
    return 0;
}

void srv_coord_checkpoint_list(srv_coord *c, const srv_principal *who, int64_t id, srv_reply *r)
{
    cJSON *j = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(j, "checkpoints");
    if (!a) {
        cJSON_Delete(j);
        srv_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    pthread_mutex_lock(&c->mu);
    proj *p = owned(c, who, id, r);
    int rc = p ? store_checkpoint_each(c->st, id, list_ckpt, a) : 0;
    pthread_mutex_unlock(&c->mu);
    if (!p || rc) {
        if (rc)
            reply_internal(r, "list checkpoints");
        cJSON_Delete(j);
        return;
    }
    reply_json(r, 200, j);
}

/* 1 if an If-None-Match header value names etag (a list, weak tags, or "*"). */
static int etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return 0;
    if (strstr(inm, "*"))
        return 1;
    size_t n = strlen(etag);
    for (const char *s = strstr(inm, etag); s; s = strstr(s + 1, etag))
        if (s[n] == 0 || s[n] == ',' || s[n] == ' ')
            return 1;
    return 0;
}

void srv_coord_checkpoint_get(srv_coord *c, const srv_principal *who, int64_t id,
                              const char *version, const char *if_none_match, srv_reply *r)
{
    pthread_mutex_lock(&c->mu);
    proj *p = find_proj(c, id);
    if (!p) {
        srv_reply_error(r, 404, "not_found", "project %lld not found", (long long)id);
        goto done;
    }
    if (who->role == SRV_DEVICE) {
        int sel = devset_get(&p->devs, who->id) != DEV_NONE ||
                  store_selection_in_project(c->st, id, who->id) == 1;
        if (!sel) {
            srv_reply_error(r, 403, "forbidden", "device %lld was never selected for project %lld",
                            (long long)who->id, (long long)id);
            goto done;
        }
    } else if (who->role != SRV_OWNER || p->owner_id != who->id) {
        srv_reply_error(r, 403, "forbidden", "project %lld belongs to another owner",
                        (long long)id);
        goto done;
    }
    int64_t v;
    if (strcmp(version, "latest") == 0) {
        v = p->version;
    } else {
        char *end;
        long long x = strtoll(version, &end, 10);
        if (!version[0] || *end || x < 0) {
            srv_reply_error(r, 404, "not_found", "checkpoint version \"%.32s\" not found "
                                                 "(a number or \"latest\")", version);
            goto done;
        }
        v = x;
    }
    snprintf(r->etag, sizeof r->etag, "\"p%lld-v%lld\"", (long long)id, (long long)v);
    if (v > p->version) {
        srv_reply_error(r, 404, "not_found", "project %lld has no checkpoint version %lld (latest "
                                             "is %lld)", (long long)id, (long long)v,
                        (long long)p->version);
        r->etag[0] = 0;
        goto done;
    }
    if (etag_matches(if_none_match, r->etag)) {
        r->status = 304;
        goto done;
    }
    if (v == p->version) {
        srv_blob_ref(p->ckpt);
        r->blob = p->ckpt;
    } else {
        void *buf;
        size_t len;
        int rc = store_checkpoint_get(c->st, id, v, &buf, &len, NULL, NULL);
        if (rc == AF_ENOTFOUND) {
            srv_reply_error(r, 404, "not_found", "%s", af_errmsg());
            goto done;
        }
        if (rc || !(r->blob = blob_from(buf, len))) {
            free(rc ? NULL : buf);
            reply_internal(r, "read checkpoint");
            goto done;
        }
        free(buf);
    }
    r->status = 200;
done:
    pthread_mutex_unlock(&c->mu);
}

/* ---- secure aggregation (plan.secagg) ----------------------------------------------------------- */

/* round_id bound into every signature and ciphertext of an attempt: unique per attempt. */
static uint64_t sa_round_id(const proj *p)
{
    return ((uint64_t)p->id << 40) + ((uint64_t)p->round.number << 16) + (uint64_t)p->round.attempt;
}

static secwire_params sa_params(const proj *p)
{
    secwire_params w = {0};
    w.kind = p->plan.label_stats ? SECWIRE_LABELS : SECWIRE_TRAIN;
    w.n = (uint32_t)srv_plan_quota(&p->plan);
    w.t = (uint32_t)p->plan.secagg_threshold;
    w.range = p->plan.secagg_range;
    w.max_samples = (uint32_t)p->plan.secagg_max_samples;
    if (p->dp) {
        w.clip = p->clip;
        w.noise = p->z_delta;
        w.adaptive = p->plan.dp_adaptive_quantile > 0;
        w.count_noise = w.adaptive ? p->plan.dp_adaptive_count_noise : 0;
    }
    w.stats_bound = p->plan.stats_bound;
    w.stats_noise = p->plan.stats_noise;
    return w;
}

/* The secure-aggregation state of a freshly opened attempt. */
static int sa_open(proj *p)
{
    sa_state *s = calloc(1, sizeof *s);
    if (!s)
        return af_seterr(AF_ENOMEM, "out of memory for secure aggregation");
    secwire_params w = sa_params(p);
    int rc = secwire_layout_init(&s->L, &w, p->model->n_params, p->model->n_classes);
    s->cfg = (secagg_cfg){sa_round_id(p), w.n, w.t, s->L.len};
    if (!rc)
        rc = secagg_server_create(&s->cfg, &s->srv);
    if (!rc && (!(s->dev = calloc(w.n + 1, sizeof *s->dev)) || !(s->sent = calloc(w.n + 1, 1)) ||
                !(s->sum = af_alloc(s->L.len * sizeof *s->sum))))
        rc = af_seterr(AF_ENOMEM, "out of memory for secure aggregation");
    if (rc) {
        sa_free(s);
        return af_preerr(rc, "project %lld", (long long)p->id);
    }
    for (int i = 0; i < 4; i++)
        s->ends[i] = p->round.opened_at + sa_phase_end[i] * p->plan.round_deadline_s;
    p->sa = s;
    return 0;
}

/* The device's number in the attempt (1..n), or 0. */
static uint32_t sa_sid(const sa_state *s, int64_t device)
{
    for (uint32_t i = 1; i <= s->cfg.n; i++)
        if (s->dev[i] == device)
            return i;
    return 0;
}

/* The "secagg" object of a device's task. */
static cJSON *sa_task_json(const proj *p, uint32_t sid)
{
    const sa_state *s = p->sa;
    const secwire_params *w = &s->L.p;
    char rid[32], url[128];
    snprintf(rid, sizeof rid, "%llu", (unsigned long long)s->cfg.round_id);
    snprintf(url, sizeof url, "/v1/projects/%lld/rounds/%d/secagg", (long long)p->id,
             p->round.number);
    cJSON *o = cJSON_CreateObject(), *d;
    if (!o || !cJSON_AddNumberToObject(o, "id", sid) || !cJSON_AddNumberToObject(o, "n", w->n) ||
        !cJSON_AddNumberToObject(o, "t", w->t) || !cJSON_AddStringToObject(o, "round_id", rid) ||
        !cJSON_AddNumberToObject(o, "len", (double)s->L.len) ||
        !cJSON_AddStringToObject(o, "url", url) ||
        !cJSON_AddStringToObject(o, "kind", w->kind == SECWIRE_LABELS ? "label_stats" : "train") ||
        !cJSON_AddNumberToObject(o, "range", w->range) ||
        !cJSON_AddNumberToObject(o, "max_samples", w->max_samples) ||
        !cJSON_AddNumberToObject(o, "clip", w->clip) ||
        !cJSON_AddNumberToObject(o, "noise", w->noise) ||
        !cJSON_AddBoolToObject(o, "adaptive", w->adaptive) ||
        !cJSON_AddNumberToObject(o, "count_noise", w->count_noise) ||
        !cJSON_AddNumberToObject(o, "stats_bound", w->stats_bound) ||
        !cJSON_AddNumberToObject(o, "stats_noise", w->stats_noise) ||
        !(d = cJSON_AddObjectToObject(o, "deadlines"))) {
        cJSON_Delete(o);
        return NULL;
    }
    for (int i = 0; i < 4; i++)
        if (!cJSON_AddNumberToObject(d, sa_phase_name[i], s->ends[i])) {
            cJSON_Delete(o);
            return NULL;
        }
    return o;
}

static int commit_label_stats(srv_coord *c, proj *p, double now);
static int sa_commit(srv_coord *c, proj *p, double now);

/* Closes the phases that are due (their deadline passed, or everyone they wait for has
 * answered), under c->mu: fewer than t left at any step abandons the attempt (the secagg
 * server then refuses to compute anything); after the last phase the attempt commits. */
static void sa_advance(srv_coord *c, proj *p, double now)
{
    for (;;) {
        sa_state *s = p->sa;
        if (!p->open || !s)
            return;
        int ph = s->phase, rc = 0;
        int due = ph < SA_UNMASKING && now >= s->ends[ph];
        switch (ph) {
        case SA_ADVERTISE: {
            if (!due && !(p->round.selected >= srv_plan_quota(&p->plan) &&
                          s->got[0] >= (uint32_t)p->round.selected))
                return;
            const secagg_advertise *list;
            size_t nl;
            rc = secagg_server_end_advertise(s->srv, &list, &nl);
            if (!rc) {
                uint8_t *buf = malloc(nl * SECWIRE_KEY_REC + 1);
                for (size_t i = 0; buf && i < nl; i++)
                    secwire_put_key(buf + i * SECWIRE_KEY_REC, &list[i]);
                s->keys_b64 = buf ? secwire_b64(buf, nl * SECWIRE_KEY_REC) : NULL;
                free(buf);
                s->u1 = (uint32_t)nl;
                if (!s->keys_b64)
                    rc = af_seterr(AF_ENOMEM, "out of memory for the key list");
            }
            break;
        }
        case SA_SHARE:
            if (!due && s->got[1] < s->u1)
                return;
            rc = secagg_server_end_share_keys(s->srv);
            secagg_server_counts(s->srv, NULL, &s->u2, NULL, NULL);
            break;
        case SA_MASKED: {
            if (!due && s->got[2] < s->u2)
                return;
            const uint32_t *u3;
            size_t n3;
            rc = secagg_server_end_masked_input(s->srv, &u3, &n3);
            if (!rc) {
                if (!(s->u3_ids = malloc((n3 ? n3 : 1) * sizeof *u3)))
                    rc = af_seterr(AF_ENOMEM, "out of memory for the survivors");
                else
                    memcpy(s->u3_ids, u3, n3 * sizeof *u3);
                s->n3 = n3;
                s->u3 = (uint32_t)n3;
            }
            break;
        }
        case SA_UNMASK:
            if (!due && s->got[3] < s->u3 &&
                !(s->got[3] >= s->cfg.t &&
                  now >= s->t_at + SA_UNMASK_GRACE_S + SA_UNMASK_GRACE * p->plan.round_deadline_s))
                return;
            /* rebuilding the secrets and removing the masks (seconds for hundreds of devices
             * with dropouts) is the timer thread's, outside c->mu: srv_coord_tick */
            break;
        case SA_UNMASKING:
            return;
        default: /* finished: the unmasked sum waits for a commit that failed in the store */
            sa_commit(c, p, now);
            return;
        }
        if (rc) {
            af_log(AF_LOG_INFO, "secagg_abandon", "project=%lld round=%d attempt=%d phase=%s "
                                                  "reason=\"%s\"",
                   (long long)p->id, p->round.number, p->round.attempt, sa_phase_name[ph],
                   af_errmsg());
            abandon_round(c, p, now);
            return;
        }
        af_log(AF_LOG_INFO, "secagg_phase", "project=%lld round=%d attempt=%d closed=%s "
                                            "accepted=%u",
               (long long)p->id, p->round.number, p->round.attempt, sa_phase_name[ph],
               s->got[ph < 4 ? ph : 3]);
        s->phase++;
    }
}

/* The attempt's unmasked sum becomes the round's update (or its label statistics). */
static int sa_commit(srv_coord *c, proj *p, double now)
{
    sa_state *s = p->sa;
    secwire_sums sums;
    if (p->plan.label_stats)
        return commit_label_stats(c, p, now);
    size_t n = p->model->n_params;
    int64_t *conf = p->confusion && s->L.confusion ? p->confusion : NULL;
    secwire_decode(&s->L, s->sum, p->delta, NULL, conf, &sums);
    int rc = 0;
    if (p->dp) {
        /* the devices' noise shares are in the sum: divide by the fixed expected count */
        const double m = (double)p->plan.devices_per_round;
        for (size_t i = 0; i < n; i++)
            p->delta[i] = (float)(p->delta[i] / m);
        fed_agg_reset(p->dp_agg);
        rc = fed_agg_add(p->dp_agg, p->delta, 1.0, NULL);
        if (s->L.p.adaptive) { /* Σ(b − ½) + noise → the unclipped fraction, clamped */
            double b = sums.weight / m + 0.5;
            p->b_bar = b < 0 ? 0 : b > 1 ? 1 : b;
        }
    } else {
        if (!(sums.weight > 0))
            rc = af_seterr(AF_EINVAL, "the unmasked weights sum to %g", sums.weight);
        for (size_t i = 0; !rc && i < n; i++) /* Σ w·Δ / Σ w: FedAvg's weighted mean */
            p->delta[i] = (float)(p->delta[i] / sums.weight);
        fed_agg_reset(p->agg);
        if (!rc)
            rc = fed_agg_add(p->agg, p->delta, sums.weight, NULL);
    }
    if (rc) {
        af_log(AF_LOG_ERROR, "secagg_commit_failed", "project=%lld round=%d error=\"%s\"",
               (long long)p->id, p->round.number, af_errmsg());
        abandon_round(c, p, now);
        return rc;
    }
    /* the round's statistics are the tail's sums: means over devices, not samples */
    p->round.reports = (int)sums.count;
    p->loss_sum = sums.loss_sum;
    p->loss_w = sums.has_loss;
    p->eval_samples = (int64_t)sums.eval_samples;
    p->eval_correct = (int64_t)sums.eval_correct;
    p->eval_loss_sum = sums.has_eval > 0 ? sums.eval_loss_sum / sums.has_eval * sums.eval_samples : 0;
    p->has_confusion = conf && sums.eval_samples > 0;
    s->phase = SA_FINISHED;
    return commit_round(c, p, now);
}

/* A label_stats project's one round: the noisy population histogram becomes its result,
 * stored with the round; the model is unchanged (version + 1 holds the same weights). */
static int commit_label_stats(srv_coord *c, proj *p, double now)
{
    sa_state *s = p->sa;
    const int C = p->model->n_classes;
    double acc[POPSTATS_MAX_CLASSES] = {0};
    secwire_sums sums;
    secwire_decode(&s->L, s->sum, NULL, acc, NULL, &sums);
    popstats_result res;
    const double var = sums.count * s->L.sigma_dev * s->L.sigma_dev;
    int rc = popstats_release(acc, C, var, p->plan.stats_noise, p->plan.stats_bound,
                              p->plan.dp_delta, &res);
    cJSON *j = rc ? NULL : cJSON_CreateObject();
    cJSON *cnt = j ? cJSON_AddArrayToObject(j, "count") : NULL;
    cJSON *sh = j ? cJSON_AddArrayToObject(j, "share") : NULL;
    cJSON *sd = j ? cJSON_AddArrayToObject(j, "share_std") : NULL;
    for (int k = 0; sd && k < C; k++) {
        cJSON_AddItemToArray(cnt, cJSON_CreateNumber(res.count[k]));
        cJSON_AddItemToArray(sh, isfinite(res.share[k]) ? cJSON_CreateNumber(res.share[k])
                                                        : cJSON_CreateNull());
        cJSON_AddItemToArray(sd, isfinite(res.share_std[k]) ? cJSON_CreateNumber(res.share_std[k])
                                                            : cJSON_CreateNull());
    }
    if (sd) {
        cJSON_AddNumberToObject(j, "devices", sums.count);
        cJSON_AddNumberToObject(j, "count_std", res.count_std);
        cJSON_AddNumberToObject(j, "total", res.total);
        cJSON_AddNumberToObject(j, "total_std", res.total_std);
        if (isfinite(res.tv_uniform)) {
            cJSON_AddNumberToObject(j, "tv_uniform", res.tv_uniform);
            cJSON_AddNumberToObject(j, "tv_noise", res.tv_noise);
        }
        if (isfinite(res.epsilon))
            cJSON_AddNumberToObject(j, "epsilon", res.epsilon);
        else
            cJSON_AddNullToObject(j, "epsilon");
        cJSON_AddNumberToObject(j, "delta", res.delta);
        cJSON_AddNumberToObject(j, "z", res.z);
        cJSON_AddNumberToObject(j, "bound", res.bound);
    }
    char *txt = sd ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!rc && !txt)
        rc = af_seterr(AF_ENOMEM, "out of memory for the label statistics");
    srv_blob *ck = NULL;
    store_round r;
    int64_t v = p->version + 1;
    p->round.reports = (int)sums.count;
    closing_stats(p, &r, now);
    r.result = txt;
    if (!rc)
        rc = serialize_ckpt(p, v, r.number, &ck);
    if (!rc)
        rc = store_round_commit(c->st, &r, v, ck->data, ck->len, NULL, 0, 1, p->sel, p->n_sel);
    if (rc) {
        free(txt);
        srv_blob_release(ck);
        af_log(AF_LOG_ERROR, "round_commit_failed", "project=%lld round=%d error=\"%s\"",
               (long long)p->id, r.number, af_errmsg());
        s->phase = SA_FINISHED; /* the next tick retries */
        return rc;
    }
    free(p->result);
    p->result = txt;
    srv_blob_release(p->ckpt);
    p->ckpt = ck;
    p->version = v;
    af_log(AF_LOG_INFO, "label_stats_release", "project=%lld devices=%g total=%g epsilon=%g",
           (long long)p->id, sums.count, res.total, res.epsilon);
    close_attempt(c, p);
    if (c->metrics)
        atomic_fetch_add(&c->metrics->rounds[SRV_ROUND_COMMITTED], 1);
    p->done = 1;
    af_log(AF_LOG_INFO, "project_done", "project=%lld rounds=1 kind=label_stats", (long long)p->id);
    return 0;
}

/* The timer thread's part of secure aggregation: for each attempt whose unmask phase has
 * closed, rebuild the secrets and remove the masks without holding c->mu (every request of
 * that attempt is refused meanwhile without touching its secagg server), then commit under
 * it. Called by srv_coord_tick only (one timer thread). */
static void sa_unmask_outside(srv_coord *c)
{
    for (;;) {
        proj *p = NULL;
        pthread_mutex_lock(&c->mu);
        for (int i = 0; !p && i < c->n_projects; i++) {
            proj *q = c->projects[i];
            if (q->open && q->sa && q->sa->phase == SA_UNMASKING && !q->sa->busy)
                p = q;
        }
        if (p)
            p->sa->busy = 1;
        pthread_mutex_unlock(&c->mu);
        if (!p)
            return;
        sa_state *s = p->sa; /* stays: only a commit or an abandon frees it, both below */
        double t0 = store_now();
        int rc = secagg_server_finish(s->srv, s->sum);
        char why[256];
        snprintf(why, sizeof why, "%s", rc ? af_errmsg() : "");
        pthread_mutex_lock(&c->mu);
        s->busy = 0;
        double now = store_now();
        if (rc) {
            af_log(AF_LOG_INFO, "secagg_abandon", "project=%lld round=%d attempt=%d phase=unmask "
                                                  "reason=\"%s\"",
                   (long long)p->id, p->round.number, p->round.attempt, why);
            abandon_round(c, p, now);
        } else {
            af_log(AF_LOG_INFO, "secagg_unmasked", "project=%lld round=%d attempt=%d answers=%u "
                                                   "seconds=%.3f",
                   (long long)p->id, p->round.number, p->round.attempt, s->got[SA_UNMASK],
                   now - t0);
            s->phase = SA_FINISHED;
            sa_commit(c, p, now);
        }
        pthread_mutex_unlock(&c->mu);
    }
}

/* The checks every protocol request makes (under c->mu): 0 and the device's number, else
 * the refusal in r. */
static int sa_request(srv_coord *c, const srv_principal *who, proj *p, int64_t id, int round,
                      uint32_t *sid, srv_reply *r)
{
    if (!p)
        return srv_reply_error(r, 404, "not_found", "project %lld not found", (long long)id);
    if (!p->plan.secagg)
        return srv_reply_error(r, 409, "wrong_phase", "project %lld does not use secure "
                                                      "aggregation", (long long)id);
    sa_advance(c, p, store_now());
    if (!p->open || p->round.number != round || !p->sa) {
        int last = 0;
        char state[16];
        if (round >= 1 && store_round_last_attempt(c->st, id, round, &last, state))
            return srv_reply_error(r, 500, "internal", "%s", af_errmsg());
        if (last == 0)
            return srv_reply_error(r, 404, "not_found", "project %lld has no round %d",
                                   (long long)id, round);
        return srv_reply_error(r, 409, "late", "round %d of project %lld is closed (%s)", round,
                               (long long)id, state);
    }
    if (!(*sid = sa_sid(p->sa, who->id)))
        return srv_reply_error(r, 403, "forbidden", "device %lld was not selected for round %d "
                                                    "attempt %d", (long long)who->id, round,
                               p->round.attempt);
    return 0;
}

/* Maps a secagg refusal to its answer; the device is simply left out of the next set. */
static void sa_refused(proj *p, uint32_t sid, int rc, const char *phase, srv_reply *r)
{
    af_log(AF_LOG_INFO, "secagg_refused", "project=%lld round=%d device_number=%u phase=%s "
                                          "error=\"%s\"",
           (long long)p->id, p->round.number, sid, phase, af_errmsg());
    if (rc == AF_EAUTH)
        srv_reply_error(r, 403, "bad_signature", "%s", af_errmsg());
    else if (rc == AF_ESTATE)
        srv_reply_error(r, 409, "wrong_phase", "%s", af_errmsg());
    else if (rc == AF_ENOMEM)
        srv_reply_error(r, 500, "internal", "%s", af_errmsg());
    else
        srv_reply_error(r, 400, "bad_message", "%s", af_errmsg());
}

/* 202 {"wait": true, "phase", "retry_after"}: the phase the request needs has not closed. */
static void sa_wait(const proj *p, double now, srv_reply *r)
{
    double left = p->sa->ends[p->sa->phase < 4 ? p->sa->phase : 3] - now;
    double after = left < 0.05 ? 0.05 : left < 0.5 ? left : 0.5;
    cJSON *j = cJSON_CreateObject();
    if (j && (!cJSON_AddTrueToObject(j, "wait") ||
              !cJSON_AddStringToObject(j, "phase", sa_phase_name[p->sa->phase]) ||
              !cJSON_AddNumberToObject(j, "retry_after", after))) {
        cJSON_Delete(j);
        j = NULL;
    }
    reply_json(r, 202, j);
}

static void reply_accepted(srv_reply *r)
{
    cJSON *j = cJSON_CreateObject();
    if (j && !cJSON_AddTrueToObject(j, "accepted")) {
        cJSON_Delete(j);
        j = NULL;
    }
    reply_json(r, 200, j);
}

void srv_coord_secagg_get(srv_coord *c, const srv_principal *who, int64_t id, int round,
                          const char *step, srv_reply *r)
{
    uint32_t sid = 0;
    pthread_mutex_lock(&c->mu);
    proj *p = find_proj(c, id);
    if (sa_request(c, who, p, id, round, &sid, r))
        goto out;
    sa_state *s = p->sa;
    double now = store_now();
    int need = strcmp(step, "keys") == 0 ? SA_SHARE : strcmp(step, "shares") == 0 ? SA_MASKED
                                                                                     : SA_UNMASK;
    if (s->phase < need) {
        sa_wait(p, now, r);
        goto out;
    }
    cJSON *j = cJSON_CreateObject();
    if (!j)
        goto oom;
    if (need == SA_SHARE) {
        if (!cJSON_AddStringToObject(j, "keys", s->keys_b64))
            goto oom_j;
    } else if (need == SA_MASKED) {
        const secagg_enc_share *in;
        size_t nin;
        /* once unmasking starts the timer thread owns s->srv (and the shares are long due) */
        int rc = s->phase >= SA_UNMASKING
                     ? af_seterr(AF_ESTATE, "round %d attempt %d is past the share phases", round,
                                 p->round.attempt)
                     : secagg_server_shares_for(s->srv, sid, &in, &nin);
        if (rc) {
            cJSON_Delete(j);
            sa_refused(p, sid, rc, "share_keys", r);
            goto out;
        }
        uint8_t *buf = malloc(nin * SECWIRE_SHARE_REC + 1);
        for (size_t i = 0; buf && i < nin; i++)
            secwire_put_share(buf + i * SECWIRE_SHARE_REC, &in[i]);
        char *b64 = buf ? secwire_b64(buf, nin * SECWIRE_SHARE_REC) : NULL;
        free(buf);
        int ok = b64 && cJSON_AddStringToObject(j, "shares", b64);
        free(b64);
        if (!ok)
            goto oom_j;
    } else {
        cJSON *a = cJSON_AddArrayToObject(j, "survivors");
        for (size_t i = 0; a && i < s->n3; i++)
            if (!cJSON_AddItemToArray(a, cJSON_CreateNumber(s->u3_ids[i])))
                a = NULL;
        if (!a)
            goto oom_j;
    }
    reply_json(r, 200, j);
    goto out;
oom_j:
    cJSON_Delete(j);
oom:
    srv_reply_error(r, 500, "internal", "out of memory");
out:
    pthread_mutex_unlock(&c->mu);
}

/* Decodes a base64 string field of a protocol message: 0, or 400 naming it. */
static int b64_field(const cJSON *body, const char *key, void *out, size_t n, srv_reply *r)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(body, key);
    if (!cJSON_IsString(j) || secwire_unb64_fixed(j->valuestring, key, out, n))
        return srv_reply_error(r, 400, "bad_message", "%s: expected base64 of %zu bytes", key, n);
    return 0;
}

void srv_coord_secagg_post(srv_coord *c, const srv_principal *who, int64_t id, int round,
                           const char *step, const cJSON *body, srv_reply *r)
{
    uint32_t sid = 0;
    uint8_t *recs = NULL;
    void *arr = NULL;
    size_t nrec = 0;
    pthread_mutex_lock(&c->mu);
    proj *p = find_proj(c, id);
    if (sa_request(c, who, p, id, round, &sid, r))
        goto out;
    sa_state *s = p->sa;
    int ph = strcmp(step, "advertise") == 0 ? SA_ADVERTISE
             : strcmp(step, "shares") == 0  ? SA_SHARE
                                            : SA_UNMASK;
    static const char *const keys[3][4] = {{"c_pk", "s_pk", "sig", NULL},
                                           {"b_commit", "sig", "shares", NULL},
                                           {"sig", "reveals", NULL, NULL}};
    if (only_fields(body, keys[ph == SA_ADVERTISE ? 0 : ph == SA_SHARE ? 1 : 2], r))
        goto out;
    if (s->sent[sid] & (1u << ph)) {
        srv_reply_error(r, 409, "duplicate", "device number %u already sent its %s message",
                        sid, sa_phase_name[ph]);
        goto out;
    }
    if (s->phase != ph) {
        srv_reply_error(r, 409, "wrong_phase", "round %d attempt %d is in phase %s, not %s",
                        round, p->round.attempt, sa_phase_name[s->phase], sa_phase_name[ph]);
        goto out;
    }
    int rc;
    if (ph == SA_ADVERTISE) {
        secagg_advertise a = {.round_id = s->cfg.round_id, .id = sid};
        if (b64_field(body, "c_pk", a.c_pk, sizeof a.c_pk, r) ||
            b64_field(body, "s_pk", a.s_pk, sizeof a.s_pk, r) ||
            b64_field(body, "sig", a.sig, sizeof a.sig, r))
            goto out;
        rc = secagg_server_add_advertise(s->srv, &a);
    } else {
        const char *what = ph == SA_SHARE ? "shares" : "reveals";
        size_t rec = ph == SA_SHARE ? SECWIRE_SHARE_REC : SECWIRE_REVEAL_REC, len;
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(body, what);
        if (!cJSON_IsString(j) ||
            secwire_unb64(j->valuestring, what, rec, 0, &recs, &len)) {
            srv_reply_error(r, 400, "bad_message", "%s: expected base64 of %zu-byte records",
                            what, rec);
            goto out;
        }
        nrec = len / rec;
        if (nrec > s->cfg.n) {
            srv_reply_error(r, 400, "bad_message", "%s: %zu records for a round of %u devices",
                            what, nrec, s->cfg.n);
            goto out;
        }
        if (!(arr = calloc(nrec ? nrec : 1, ph == SA_SHARE ? sizeof(secagg_enc_share)
                                                           : sizeof(secagg_reveal)))) {
            srv_reply_error(r, 500, "internal", "out of memory");
            goto out;
        }
        if (ph == SA_SHARE) {
            secagg_share_keys m = {.round_id = s->cfg.round_id, .id = sid,
                                   .n_shares = (uint32_t)nrec, .shares = arr};
            for (size_t i = 0; i < nrec; i++)
                secwire_get_share(recs + i * rec, (secagg_enc_share *)arr + i);
            if (b64_field(body, "b_commit", m.b_commit, sizeof m.b_commit, r) ||
                b64_field(body, "sig", m.sig, sizeof m.sig, r))
                goto out;
            rc = secagg_server_add_share_keys(s->srv, &m);
        } else {
            secagg_unmask m = {.round_id = s->cfg.round_id, .id = sid,
                               .n_reveals = (uint32_t)nrec, .reveals = arr};
            for (size_t i = 0; i < nrec; i++)
                secwire_get_reveal(recs + i * rec, (secagg_reveal *)arr + i);
            if (b64_field(body, "sig", m.sig, sizeof m.sig, r))
                goto out;
            rc = secagg_server_add_unmask(s->srv, &m);
        }
    }
    if (rc) {
        sa_refused(p, sid, rc, sa_phase_name[ph], r);
        goto out;
    }
    s->sent[sid] |= (uint8_t)(1u << ph);
    s->got[ph]++;
    if (ph == SA_UNMASK && s->got[ph] == s->cfg.t)
        s->t_at = store_now();
    reply_accepted(r);
    sa_advance(c, p, store_now());
out:
    pthread_mutex_unlock(&c->mu);
    free(recs);
    free(arr);
}

void srv_coord_secagg_masked(srv_coord *c, const srv_principal *who, int64_t id, int round,
                             const void *data, size_t len, srv_reply *r)
{
    uint32_t sid = 0;
    uint32_t *y = NULL;
    pthread_mutex_lock(&c->mu);
    proj *p = find_proj(c, id);
    if (sa_request(c, who, p, id, round, &sid, r))
        goto out;
    sa_state *s = p->sa;
    if (s->sent[sid] & (1u << SA_MASKED)) {
        srv_reply_error(r, 409, "duplicate", "device number %u already sent its masked input", sid);
        goto out;
    }
    if (s->phase != SA_MASKED) {
        srv_reply_error(r, 409, "wrong_phase", "round %d attempt %d is in phase %s, not "
                                               "masked_input",
                        round, p->round.attempt, sa_phase_name[s->phase]);
        goto out;
    }
    if (len != s->L.len * 4 + SECAGG_SIG_BYTES) {
        srv_reply_error(r, 400, "bad_message", "masked input: %zu bytes, expected %zu (%zu words "
                                               "and a %d-byte signature)",
                        len, s->L.len * 4 + SECAGG_SIG_BYTES, s->L.len, SECAGG_SIG_BYTES);
        goto out;
    }
    if (!(y = malloc(s->L.len * sizeof *y))) {
        srv_reply_error(r, 500, "internal", "out of memory");
        goto out;
    }
    const uint8_t *b = data;
    for (size_t i = 0; i < s->L.len; i++, b += 4)
        y[i] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    secagg_masked_input m = {.round_id = s->cfg.round_id, .id = sid, .len = s->L.len, .y = y};
    memcpy(m.sig, b, SECAGG_SIG_BYTES);
    int rc = secagg_server_add_masked_input(s->srv, &m);
    if (rc) {
        sa_refused(p, sid, rc, "masked_input", r);
        goto out;
    }
    /* the attempt's log keeps what the coordinator received: the masked vector, as sent */
    struct iovec iov = {(void *)data, len};
    if (attempt_log(c, p) || store_log_report(p->log, who->id, store_now(), &iov, 1, -1, 0))
        af_log(AF_LOG_ERROR, "secagg_log_failed", "project=%lld device=%lld error=\"%s\"",
               (long long)id, (long long)who->id, af_errmsg());
    s->sent[sid] |= 1u << SA_MASKED;
    s->got[SA_MASKED]++;
    p->round.reports++; /* masked inputs so far (the commit sets the unmasked count) */
    devset_put(&p->devs, who->id, DEV_REPORTED);
    af_log(AF_LOG_INFO, "masked_input_accepted", "project=%lld round=%d attempt=%d device=%lld "
                                                 "number=%u",
           (long long)id, round, p->round.attempt, (long long)who->id, sid);
    reply_accepted(r);
    sa_advance(c, p, store_now());
out:
    pthread_mutex_unlock(&c->mu);
    free(y);
}

/* ---- the round: check-in ------------------------------------------------------------------------ */

static double jitter(srv_coord *c, double base)
{
    return base * (0.8 + 0.4 * af_rng_uniform(&c->rng)); /* ±20 % */
}

static cJSON *task_json(const proj *p)
{
    char url[128], rep[128];
    snprintf(url, sizeof url, "/v1/projects/%lld/checkpoints/%lld", (long long)p->id,
             (long long)p->version);
    snprintf(rep, sizeof rep, "/v1/projects/%lld/rounds/%d/reports", (long long)p->id,
             p->round.number);
    cJSON *j = cJSON_CreateObject(), *t;
    if (!cJSON_AddStringToObject(j, "action", "train") ||
        !(t = cJSON_AddObjectToObject(j, "task")) ||
        !cJSON_AddNumberToObject(t, "project", (double)p->id) ||
        !cJSON_AddNumberToObject(t, "round", p->round.number) ||
        !cJSON_AddNumberToObject(t, "attempt", p->round.attempt) ||
        !cJSON_AddNumberToObject(t, "version", (double)p->version) ||
        !cJSON_AddStringToObject(t, "checkpoint", url) ||
        !cJSON_AddRawToObject(t, "spec", p->model->spec_json) ||
        !cJSON_AddRawToObject(t, "plan", p->plan_text) ||
        !cJSON_AddNumberToObject(t, "deadline_at", p->round.deadline_at) ||
        !cJSON_AddStringToObject(t, "report", rep) ||
        (p->dp && !cJSON_AddNumberToObject(t, "dp_clip", p->clip))) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static int open_attempt(srv_coord *c, proj *p, double now)
{
    int number = (int)p->version + 1, last = 0;
    char state[16];
    int rc = store_round_last_attempt(c->st, p->id, number, &last, state);
    if (rc)
        return rc;
    store_round r = {.project = p->id, .number = number, .attempt = last + 1,
                     .version = p->version, .opened_at = now,
                     .deadline_at = now + p->plan.round_deadline_s};
    strcpy(r.state, "open");
    if ((rc = store_round_open(c->st, &r)))
        return rc;
    reset_attempt_stats(p);
    store_round_clear(&p->round);
    p->round = r;
    p->open = 1;
    p->started = 1;
    if (p->plan.secagg && (rc = sa_open(p))) {
        /* the attempt row exists: close it at once so that the next check-in retries */
        af_log(AF_LOG_ERROR, "secagg_open_failed", "project=%lld error=\"%s\"", (long long)p->id,
               af_errmsg());
        abandon_round(c, p, now);
        return rc;
    }
    atomic_fetch_add(&c->metrics->rounds[SRV_ROUND_OPENED], 1);
    atomic_fetch_add(&c->metrics->rounds_open, 1);
    af_log(AF_LOG_INFO, "round_open", "project=%lld round=%d attempt=%d version=%lld deadline_s=%g",
           (long long)p->id, r.number, r.attempt, (long long)p->version, p->plan.round_deadline_s);
    return 0;
}

static int bool_false(const cJSON *obj, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return j && cJSON_IsFalse(j);
}

/* An optional number >= 0 of an object: 0 and *v (untouched when absent), or 400 naming
 * what.key. */
static int opt_number(const cJSON *obj, const char *what, const char *key, double *v,
                      srv_reply *r)
{
    const cJSON *j = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!j)
        return 0;
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0) || !isfinite(j->valuedouble))
        return srv_reply_error(r, 400, "bad_field", "%s.%s: expected a number >= 0", what, key);
    *v = j->valuedouble;
    return 0;
}

/* What a device says at check-in about what it can take (0: no limit / unknown). */
typedef struct dev_caps {
    double max_params, max_epochs, max_seconds, max_memory;
    double train_samples, flops_per_s;
} dev_caps;

/* 1 if a project's task is within the device's caps (the checks the device library makes
 * before it downloads anything, so that a selected device does not refuse its task). */
static int within_caps(const proj *p, const dev_caps *k)
{
    if (k->max_params > 0 && (double)p->model->n_params > k->max_params)
        return 0;
    if (k->max_epochs > 0 && p->plan.local_epochs > k->max_epochs)
        return 0;
    if (k->max_memory > 0 && (double)srv_plan_memory(p->model, &p->plan) > k->max_memory)
        return 0;
    if (k->max_seconds > 0 && k->train_samples > 0 &&
        srv_plan_seconds(p->model, &p->plan, k->train_samples, k->flops_per_s) > k->max_seconds)
        return 0;
    return 1;
}

/* The open attempt takes no more devices and no more reports: its deadline has passed or
 * its goal count is reached, and it closes as soon as the reports in flight have landed. */
static int closing(const proj *p, double now)
{
    return now >= p->round.deadline_at ||
           p->round.reports + p->inflight >= p->plan.devices_per_round;
}

void srv_coord_checkin(srv_coord *c, const srv_principal *who, const cJSON *body, srv_reply *r)
{
    static const char *const keys[] = {"dataset", "conditions", "caps", "device", "identity",
                                       NULL};
    if (only_fields(body, keys, r))
        return;
    /* the Ed25519 key the device signs secure-aggregation messages with */
    uint8_t ident[SECAGG_SIGN_PK_BYTES];
    int has_ident = 0;
    const cJSON *idj = cJSON_GetObjectItemCaseSensitive(body, "identity");
    if (idj) {
        if (!cJSON_IsString(idj) ||
            secwire_unb64_fixed(idj->valuestring, "identity", ident, sizeof ident)) {
            srv_reply_error(r, 400, "bad_field", "identity: expected the base64 of a %d-byte "
                                                 "Ed25519 public key", SECAGG_SIGN_PK_BYTES);
            return;
        }
        has_ident = 1;
    }
    srv_schema sch;
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(body, "dataset");
    const cJSON *cond = cJSON_GetObjectItemCaseSensitive(body, "conditions");
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(body, "caps");
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(body, "device");
    if (ds && srv_schema_parse(ds, "dataset", &sch)) {
        srv_reply_error(r, 400, "bad_field", "%s", af_errmsg());
        return;
    }
    if (!ds) { /* the schema declared at enrolment */
        char *text = NULL;
        pthread_mutex_lock(&c->mu);
        int rc = store_device_dataset(c->st, who->id, &text);
        pthread_mutex_unlock(&c->mu);
        cJSON *dj = rc ? NULL : cJSON_Parse(text);
        rc = rc ? rc : srv_schema_parse(dj, "dataset", &sch);
        cJSON_Delete(dj);
        free(text);
        if (rc) {
            reply_internal(r, "enrolled dataset");
            return;
        }
    }
    const cJSON *objs[3] = {cond, caps, dev};
    const char *names[3] = {"conditions", "caps", "device"};
    for (int i = 0; i < 3; i++)
        if (objs[i] && !cJSON_IsObject(objs[i])) {
            srv_reply_error(r, 400, "bad_field", "%s: expected an object", names[i]);
            return;
        }
    dev_caps k = {0};
    if (opt_number(caps, "caps", "max_params", &k.max_params, r) ||
        opt_number(caps, "caps", "max_epochs", &k.max_epochs, r) ||
        opt_number(caps, "caps", "max_seconds", &k.max_seconds, r) ||
        opt_number(caps, "caps", "max_memory", &k.max_memory, r) ||
        opt_number(dev, "device", "train_samples", &k.train_samples, r) ||
        opt_number(dev, "device", "flops_per_s", &k.flops_per_s, r))
        return;
    /* a device that is not charging, idle and unmetered is told to come back */
    int ready = !(cond && (bool_false(cond, "charging") || bool_false(cond, "idle") ||
                           bool_false(cond, "unmetered")));
    pthread_mutex_lock(&c->mu);
    double now = store_now();
    int running = 0, done = 0, fits = 0, reported = 0;
    proj *chosen = NULL;
    for (int i = 0; !chosen && i < c->n_projects; i++) {
        proj *p = c->projects[i];
        if (!srv_schema_matches(&sch, &p->plan, p->model))
            continue;
        if (!p->done)
            close_if_due(c, p, now);
        if (!p->done && !p->open && dp_budget_spent(c, p)) {
            /* the budget would not cover even the first round (later rounds stop at commit):
             * saved, so the status API and a restart agree */
            if (store_project_set_done(c->st, p->id)) {
                reply_internal(r, "mark project done");
                goto out;
            }
            p->done = 1;
            af_log(AF_LOG_INFO, "project_done", "project=%lld reason=privacy_budget epsilon=%g",
                   (long long)p->id, p->eps);
        }
        if (p->done) {
            done++;
            continue;
        }
        running++;
        if (!ready || !within_caps(p, &k) || (p->plan.secagg && !has_ident))
            continue;
        fits++;
        if (p->open) {
            int st = devset_get(&p->devs, who->id);
            /* asked again: the same task — under secure aggregation only while the device
             * can still take part (it has not advertised yet, and the phase is open): a
             * device whose message was refused, or that lost its keys, sits this attempt
             * out instead of looping on a task it cannot finish */
            if (st == DEV_SELECTED &&
                (!p->sa || (p->sa->phase == SA_ADVERTISE && now < p->sa->ends[SA_ADVERTISE] &&
                            !(p->sa->sent[sa_sid(p->sa, who->id)] & 1u)))) {
                chosen = p;
                break;
            }
            reported |= st == DEV_REPORTED;
            if (st != DEV_NONE || p->round.selected >= srv_plan_quota(&p->plan) ||
                (p->sa ? p->sa->phase != SA_ADVERTISE || now >= p->sa->ends[SA_ADVERTISE]
                       : closing(p, now)))
                continue;
        } else if (open_attempt(c, p, now)) {
            reply_internal(r, "open round");
            goto out;
        }
        if (p->sa && secagg_server_register(p->sa->srv, (uint32_t)p->round.selected + 1, ident)) {
            reply_internal(r, "register identity");
            goto out;
        }
        /* the log first: a selection that is answered survives a crash */
        if (sel_reserve(p) || devset_put(&p->devs, who->id, DEV_NONE) || attempt_log(c, p) ||
            store_log_selection(p->log, who->id, now)) {
            reply_internal(r, "select device");
            goto out;
        }
        devset_put(&p->devs, who->id, DEV_SELECTED); /* the slot exists: cannot fail */
        p->sel[p->n_sel++] = (store_selection){who->id, now};
        p->round.selected++;
        if (p->sa)
            p->sa->dev[p->round.selected] = who->id;
        chosen = p;
        af_log(AF_LOG_DEBUG, "device_selected", "project=%lld round=%d attempt=%d device=%lld",
               (long long)p->id, p->round.number, p->round.attempt, (long long)who->id);
    }
    if (chosen && chosen->sa) {
        /* secure aggregation: the task carries the device's number in the round */
        cJSON *tj = task_json(chosen);
        cJSON *sj = tj ? sa_task_json(chosen, sa_sid(chosen->sa, who->id)) : NULL;
        cJSON *t = tj ? cJSON_GetObjectItemCaseSensitive(tj, "task") : NULL;
        if (!sj || !cJSON_AddItemToObject(t, "secagg", sj)) {
            cJSON_Delete(sj);
            cJSON_Delete(tj);
            srv_reply_error(r, 500, "internal", "out of memory");
            goto out;
        }
        reply_json(r, 200, tj);
        atomic_fetch_add(&c->metrics->checkins[SRV_CHECKIN_TRAIN], 1);
    } else if (chosen) {
        /* every device of an attempt gets the same task: its JSON is printed once */
        if (!chosen->task) {
            cJSON *tj = task_json(chosen);
            char *txt = tj ? cJSON_PrintUnformatted(tj) : NULL;
            chosen->task = txt ? blob_from(txt, strlen(txt)) : NULL;
            free(txt);
            cJSON_Delete(tj);
        }
        if (!chosen->task) {
            srv_reply_error(r, 500, "internal", "out of memory");
            goto out;
        }
        srv_blob_ref(chosen->task);
        r->status = 200;
        r->blob = chosen->task;
        r->ctype = "application/json";
        atomic_fetch_add(&c->metrics->checkins[SRV_CHECKIN_TRAIN], 1);
    } else {
        /* why: every project this device could join is done; none matches its data; its
         * conditions say not now; every running one is beyond its caps; or the rounds that
         * could take it are full (or it has reported to them). Pace steering: a full round
         * will not need the device before it closes, so it waits longer than an idle one. */
        const char *reason = !running ? (done ? "project_done" : "no_task")
                             : !ready ? "conditions"
                             : !fits  ? "caps"
                                      : "round_full";
        int full = strcmp(reason, "round_full") == 0;
        /* a device whose report is in the open round is likely wanted by the next one, which
         * opens as soon as this one commits: it comes back sooner than an idle device */
        double wait = jitter(c, full ? (reported ? 0.5 : 2) * c->cfg.retry_after_s
                                     : c->cfg.retry_after_s);
        cJSON *j = cJSON_CreateObject();
        if (j && (!cJSON_AddStringToObject(j, "action", "wait") ||
                  !cJSON_AddNumberToObject(j, "retry_after", wait) ||
                  !cJSON_AddStringToObject(j, "reason", reason))) {
            cJSON_Delete(j);
            j = NULL;
        }
        reply_json(r, 200, j);
        atomic_fetch_add(&c->metrics->checkins[SRV_CHECKIN_WAIT], 1);
    }
out:
    pthread_mutex_unlock(&c->mu);
}

/* ---- the round: reports ------------------------------------------------------------------------- */

/* The state checks of a report (under the lock). attempt: the report's, or 0 if unknown. */
static int report_state(srv_coord *c, const srv_principal *who, proj *p, int64_t id, int round,
                        int attempt, srv_reply *r)
{
    if (!p)
        return srv_reply_error(r, 404, "not_found", "project %lld not found", (long long)id);
    if (p->plan.secagg)
        return srv_reply_error(r, 409, "wrong_phase", "project %lld uses secure aggregation: "
                                                      "send the masked input to the task's "
                                                      "secagg url", (long long)id);
    if (!p->open || p->round.number != round) {
        int last = 0;
        char state[16];
        if (round >= 1 && store_round_last_attempt(c->st, id, round, &last, state))
            return srv_reply_error(r, 500, "internal", "%s", af_errmsg());
        if (last == 0)
            return srv_reply_error(r, 404, "not_found", "project %lld has no round %d",
                                   (long long)id, round);
        return srv_reply_error(r, 409, "late", "round %d of project %lld is closed (%s)", round,
                               (long long)id, state);
    }
    if (attempt && attempt < p->round.attempt)
        return srv_reply_error(r, 409, "late", "round %d attempt %d was abandoned; attempt %d is "
                                               "open", round, attempt, p->round.attempt);
    if (attempt > p->round.attempt)
        return srv_reply_error(r, 409, "wrong_round", "round %d has no attempt %d (attempt %d is "
                                                      "open)", round, attempt, p->round.attempt);
    int st = devset_get(&p->devs, who->id);
    if (st == DEV_NONE)
        return srv_reply_error(r, 403, "forbidden", "device %lld was not selected for round %d "
                                                    "attempt %d", (long long)who->id, round,
                               p->round.attempt);
    if (st == DEV_REPORTED || st == DEV_REPORTING)
        return srv_reply_error(r, 409, "duplicate", "device %lld already reported in round %d "
                                                    "attempt %d", (long long)who->id, round,
                               p->round.attempt);
    if (closing(p, store_now()))
        return srv_reply_error(r, 409, "late", "round %d attempt %d is closing (%s)", round,
                               p->round.attempt,
                               p->round.reports + p->inflight >= p->plan.devices_per_round
                                   ? "it has all its reports"
                                   : "its deadline has passed");
    return 0;
}

/* The last report in flight or streaming closes an attempt that reached its goal or its
 * deadline (under c->mu). */
static void settle(srv_coord *c, proj *p)
{
    if (!p->open || p->inflight || p->streaming)
        return;
    if (p->round.reports >= p->plan.devices_per_round)
        commit_round(c, p, store_now());
    else
        close_if_due(c, p, store_now());
}

/* srv_upload_sink.fold: one slice into proj->agg, under slot 0's lock (no c->mu). */
static int stream_fold(void *ctx, size_t off, const float *x, size_t n, double w, double tau,
                       int sub)
{
    proj *p = ctx;
    fed_extra ex = {NULL, tau};
    pthread_mutex_lock(&p->fold_mu);
    int rc = sub ? fed_agg_sub_slice(p->agg, FED_AGG_DELTA, off, x, n, w, &ex)
                 : fed_agg_add_slice(p->agg, FED_AGG_DELTA, off, x, n, w, &ex);
    pthread_mutex_unlock(&p->fold_mu);
    return rc;
}

/* Takes a refused upload's slices back out of proj->agg (no c->mu). */
static void stream_unfold(proj *p, srv_upload *up)
{
    if (srv_upload_unfold(up))
        af_log(AF_LOG_ERROR, "unfold_failed", "project=%lld error=\"%s\"", (long long)p->id,
               af_errmsg());
}

/* srv_upload_sink.release: the request ended without srv_coord_report_finish (the client
 * went away, or the body was over the limit): undo and forget the upload. */
static void stream_release(void *ctx, srv_upload *up)
{
    proj *p = ctx;
    srv_coord *c = p->coord;
    stream_unfold(p, up);
    pthread_mutex_lock(&c->mu);
    p->streaming--;
    settle(c, p);
    pthread_mutex_unlock(&c->mu);
}

/* How long past its attempt's deadline an upload that began in time may still stream in:
 * a quarter of round_deadline_s, at least 5 s, at most 5 minutes. */
static double upload_grace(const proj *p)
{
    double g = 0.25 * p->plan.round_deadline_s;
    return g < 5 ? 5 : g > 300 ? 300 : g;
}

int srv_coord_report_begin(srv_coord *c, const srv_principal *who, int64_t id, int round,
                           size_t body_len, srv_upload **up, double *cut_at, srv_reply *r)
{
    *up = NULL;
    *cut_at = 0;
    pthread_mutex_lock(&c->mu);
    proj *p = find_proj(c, id);
    if (p)
        close_if_due(c, p, store_now());
    int st = report_state(c, who, p, id, round, 0, r);
    srv_upload_rules rules = st ? (srv_upload_rules){0} : upload_rules(c, p);
    rules.body_len = body_len;
    srv_upload_sink sink = {stream_fold, stream_release, p, p && p->dp};
    if (!st) {
        if (srv_upload_create(&rules, c->spool_dir, NULL, up) || srv_upload_attach(*up, &sink)) {
            srv_upload_free(*up);
            *up = NULL;
            reply_internal(r, "start upload");
            st = r->status;
        } else {
            p->streaming++; /* from here the attempt waits for this upload's conclusion */
            *cut_at = p->round.deadline_at + upload_grace(p);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return st ? r->status : 0;
}

void srv_coord_report_finish(srv_coord *c, const srv_principal *who, int64_t id, int round,
                             srv_upload *up, srv_reply *r)
{
    srv_update u;
    int bad = srv_upload_finish(up, &u, r);
    srv_upload_detach(up); /* concluded here, whatever happens next */
    pthread_mutex_lock(&c->mu);
    proj *p = find_proj(c, id); /* found at begin: projects are never removed */
    if (bad) {
        if (p->open && p->round.number == round)
            p->round.refused++;
    } else if (report_state(c, who, p, id, round, u.attempt, r) || attempt_log(c, p) ||
               devset_put(&p->devs, who->id, DEV_REPORTING)) {
        if (!r->status)
            reply_internal(r, "store report");
        bad = 1;
    }
    if (bad) { /* nothing of it may stay in the sums */
        pthread_mutex_unlock(&c->mu);
        stream_unfold(p, up);
        pthread_mutex_lock(&c->mu);
        p->streaming--;
        settle(c, p);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    /* the device's slot is claimed: store without the lock (the attempt cannot close while
     * a report is in flight, so p->log stays) */
    p->inflight++;
    p->streaming--;
    store_log *log = p->log;
    int attempt = p->round.attempt;
    pthread_mutex_unlock(&c->mu);

    struct iovec iov[3];
    int niov, fd;
    size_t fd_len;
    srv_upload_body(up, iov, &niov, &fd, &fd_len);
    int rc = store_log_report(log, who->id, store_now(), iov, niov, fd, fd_len);
    int folded = -1;
    if (!rc) { /* on disk: count the update whose slices are in */
        fed_extra ex = {NULL, u.tau};
        pthread_mutex_lock(&p->fold_mu);
        folded = fed_agg_finish_update(p->agg, p->dp ? 1.0 : u.num_samples, &ex);
        pthread_mutex_unlock(&p->fold_mu);
    }
    if (rc || folded)
        stream_unfold(p, up);

    pthread_mutex_lock(&c->mu);
    p->inflight--;
    if (rc) { /* nothing was stored: the device may try again */
        devset_put(&p->devs, who->id, DEV_SELECTED);
        reply_internal(r, "store report");
    } else {
        /* stored: from here the report counts, in memory as after a restart */
        if (folded || count_report(p, &u, who->id))
            af_log(AF_LOG_ERROR, "fold_failed", "project=%lld device=%lld error=\"%s\"",
                   (long long)id, (long long)who->id, af_errmsg());
        int reports = p->round.reports;
        af_log(AF_LOG_INFO, "report_accepted", "project=%lld round=%d attempt=%d device=%lld "
                                               "samples=%g reports=%d",
               (long long)id, round, attempt, (long long)who->id, u.num_samples, reports);
        cJSON *j = cJSON_CreateObject();
        if (j && (!cJSON_AddTrueToObject(j, "accepted") ||
                  !cJSON_AddNumberToObject(j, "reports", reports))) {
            cJSON_Delete(j);
            j = NULL;
        }
        reply_json(r, 200, j);
    }
    settle(c, p);
    pthread_mutex_unlock(&c->mu);
}
