/* sim.c — the simulated federated round (see sim.h): select, train locally in parallel,
 * aggregate exactly (or robustly, over the block of individual updates), evaluate centrally
 * and on the devices' held-out splits. Byzantine devices, when asked for, replace their
 * update here, before privacy and aggregation see it. */
#include "sim/sim.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"
#include "core/pool.h"
#include "core/rng.h"
#include "core/timer.h"
#include "fed/strategy.h"
#include "sim/privacy.h"

#ifdef AF_HAVE_MPI
#include <mpi.h>
#endif

#define SIM_MAX_THREADS 64
#define SIM_EVAL_BATCH 256

/* RNG stream tags: every random decision has its own stream, so adding one never shifts
 * another (a run stays comparable across versions and options). */
enum { TAG_SELECT = 1, TAG_DROP = 2, TAG_SPEED = 3, TAG_LOCAL = 4, TAG_BYZ = 5, TAG_BYZ_NOISE = 6 };

typedef struct sim_worker {
    nn_model *replica;
    train_ctx *tr;
    fed_agg *agg;
    float *delta, *corr, *delta_c;
    nn_ws *ews;
    float *bx;
    uint8_t *by;
} sim_worker;

/* Per selected-device outcome, indexed by selection slot (summed in slot order). */
typedef struct slot {
    int device;
    int status;       /* 0 reported, 1 failed (dropout), 2 straggler */
    double loss;      /* mean local training loss of the last epoch */
    double samples;
    double sim_time;
} slot;

struct sim {
    sim_cfg cfg;
    const data_dataset *train, *test;
    data_partition *part;
    nn_model *global;
    fed_strategy *strat;
    fed_agg *agg;
    sim_privacy *priv; /* DP and secure aggregation (NULL when both are off) */
    int threads;
    af_pool *pool;
    sim_worker w[SIM_MAX_THREADS];
    nn_ws *ews[SIM_MAX_THREADS];
    float **c_local;  /* SCAFFOLD: per-device control variates (NULL until first used) */
    uint32_t *perm;   /* K device ids, for sampling without replacement */
    slot *slots;
    int per_round;
    int rank, size;
    /* round in flight */
    int round;
    int n_mine;
    int *mine;        /* slot numbers this rank trains */
    double *dev_acc;  /* federated evaluation, one per device with held-out data */
    long *dev_hits, *dev_n;
    int rc[SIM_MAX_THREADS];
    /* robust strategies: row `slot` = that slot's delta (per_round × n_params), NULL else */
    float *upd;
    uint8_t *byz;     /* per device: 1 = Byzantine (NULL when none) */
};

void sim_cfg_defaults(sim_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->clients = 100;
    c->frac = 0.1;
    c->rounds = 20;
    c->local_epochs = 1;
    c->batch = 10;
    c->opt = nn_optim_defaults(NN_OPT_SGD);
    c->opt.lr = 0.05f;
    c->partition = "iid";
    c->heldout_frac = 0.1;
    c->strategy = "fedavg";
    c->device_rate = 1000.0;
    c->eval_every = 1;
    c->threads = 1;
    c->seed = 1;
}

int sim_byzantine_parse(const char *arg, sim_cfg *cfg)
{
    if (!arg || !*arg)
        return af_seterr(AF_EINVAL, "--byzantine: expected FRAC[:MODE], got nothing");
    char *end;
    double f = strtod(arg, &end);
    if (end == arg || (*end && *end != ':'))
        return af_seterr(AF_EINVAL, "--byzantine '%s': expected FRAC[:MODE] with FRAC a number "
                                    "in [0, 1)", arg);
    if (!(f >= 0.0 && f < 1.0))
        return af_seterr(AF_ERANGE, "--byzantine '%s': FRAC must be in [0, 1)", arg);
    int mode = SIM_BYZ_SIGNFLIP;
    if (*end == ':') {
        if (!strcmp(end + 1, "signflip"))
            mode = SIM_BYZ_SIGNFLIP;
        else if (!strcmp(end + 1, "noise"))
            mode = SIM_BYZ_NOISE;
        else
            return af_seterr(AF_EINVAL, "--byzantine '%s': MODE '%s' is not one of signflip, noise",
                             arg, end + 1);
    }
    cfg->byzantine_frac = f;
    cfg->byzantine_mode = mode;
    return 0;
}

static int check_cfg(const sim_cfg *c, size_t n_samples)
{
    if (c->clients < 1)
        return af_seterr(AF_ERANGE, "--clients must be >= 1, got %d", c->clients);
    if ((size_t)c->clients > n_samples)
        return af_seterr(AF_ERANGE, "--clients %d: more devices than the %zu training samples",
                         c->clients, n_samples);
    if (c->per_round < 0 || c->per_round > c->clients)
        return af_seterr(AF_ERANGE, "--per-round must be in [1, %d], got %d", c->clients, c->per_round);
    if (!c->per_round && !(c->frac > 0.0 && c->frac <= 1.0))
        return af_seterr(AF_ERANGE, "--frac must be in (0, 1], got %g", c->frac);
    if (c->rounds < 1 || c->rounds > 1000000)
        return af_seterr(AF_ERANGE, "--rounds must be >= 1, got %d", c->rounds);
    if (c->local_epochs < 1 || c->local_epochs > 10000)
        return af_seterr(AF_ERANGE, "--local-epochs must be >= 1, got %d", c->local_epochs);
    if (c->batch < 1 || c->batch > 65536)
        return af_seterr(AF_ERANGE, "--batch must be in [1, 65536], got %d", c->batch);
    if (!(c->dropout >= 0.0 && c->dropout < 1.0))
        return af_seterr(AF_ERANGE, "--dropout must be in [0, 1), got %g", c->dropout);
    if (!(c->speed_sigma >= 0.0 && c->speed_sigma <= 10.0))
        return af_seterr(AF_ERANGE, "--speed-sigma must be in [0, 10], got %g", c->speed_sigma);
    if (!(c->deadline >= 0.0) || !(c->device_rate > 0.0))
        return af_seterr(AF_ERANGE, "--deadline must be >= 0 and --device-rate > 0");
    if (c->eval_every < 0)
        return af_seterr(AF_ERANGE, "--eval-every must be >= 0, got %d", c->eval_every);
    if (!(c->byzantine_frac >= 0.0 && c->byzantine_frac < 1.0))
        return af_seterr(AF_ERANGE, "--byzantine: the share of devices must be in [0, 1), got %g",
                         c->byzantine_frac);
    if (c->byzantine_mode != SIM_BYZ_SIGNFLIP && c->byzantine_mode != SIM_BYZ_NOISE)
        return af_seterr(AF_EINVAL, "--byzantine: unknown mode %d", c->byzantine_mode);
    if (c->threads < 1 || c->threads > SIM_MAX_THREADS)
        return af_seterr(AF_ERANGE, "--threads must be in [1, %d], got %d", SIM_MAX_THREADS, c->threads);
    return nn_optim_check(&c->opt);
}

int sim_create(const sim_cfg *cfg, const nn_model *model, const data_dataset *train,
               const data_dataset *test, sim **out)
{
    *out = NULL;
    int rc = check_cfg(cfg, train->n);
    if (rc)
        return rc;
    if (model->layers[0].in_n != train->sample_size || model->n_classes != train->schema.n_classes)
        return af_seterr(AF_ESHAPE, "model takes %zu inputs and %d classes; dataset has %zu and %d",
                         model->layers[0].in_n, model->n_classes, train->sample_size,
                         train->schema.n_classes);
    sim *s = calloc(1, sizeof *s);
    if (!s)
        return af_seterr(AF_ENOMEM, "sim: out of memory");
    s->cfg = *cfg;
    s->train = train;
    s->test = test;
    s->size = 1;
#ifdef AF_HAVE_MPI
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) {
        MPI_Comm_rank(MPI_COMM_WORLD, &s->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &s->size);
    }
#endif
    s->per_round = cfg->per_round ? cfg->per_round : (int)lround(cfg->frac * cfg->clients);
    if (s->per_round < 1)
        s->per_round = 1;
    data_partition_opts po;
    data_partition_opts_default(&po);
    po.heldout_frac = cfg->heldout_frac;
    if ((rc = data_partition_create(train->y, train->n, train->schema.n_classes, (size_t)cfg->clients,
                                    cfg->partition, cfg->seed, &po, &s->part)))
        goto fail;
    if ((rc = nn_model_clone(model, &s->global)))
        goto fail;
    char opts[512];
    snprintf(opts, sizeof opts, "%s", cfg->strategy_opts ? cfg->strategy_opts : "");
    if (strcmp(cfg->strategy, "scaffold") == 0 && !strstr(opts, "clients=")) {
        size_t l = strlen(opts);
        snprintf(opts + l, sizeof opts - l, "%sclients=%d", l ? "," : "", cfg->clients);
    }
    if ((rc = fed_strategy_create(cfg->strategy, opts, model->n_params, &s->strat)))
        goto fail;
    if ((rc = fed_agg_create(s->strat, &s->agg)))
        goto fail;
    if (fed_strategy_needs_updates(s->strat)) {
        if (s->size > 1) {
            rc = af_seterr(AF_EINVAL, "--strategy %s does not run under MPI yet: robust aggregation "
                           "needs every update on one rank (run it in one process)", cfg->strategy);
            goto fail;
        }
        if ((rc = fed_strategy_check_updates(s->strat, (size_t)s->per_round))) {
            af_preerr(rc, "--strategy %s with %d devices per round", cfg->strategy, s->per_round);
            goto fail;
        }
        if ((size_t)s->per_round > SIZE_MAX / sizeof(float) / model->n_params ||
            !(s->upd = af_alloc(sizeof(float) * model->n_params * (size_t)s->per_round))) {
            rc = af_seterr(AF_ENOMEM, "sim: out of memory for %d updates of %zu parameters "
                           "(--strategy %s keeps each one)", s->per_round, model->n_params, cfg->strategy);
            goto fail;
        }
    }
    int n_byz = (int)lround(cfg->byzantine_frac * cfg->clients);
    if (n_byz > 0) { /* a fixed set: the first n_byz of a seeded permutation of the devices */
        uint32_t *perm = malloc(sizeof(uint32_t) * (size_t)cfg->clients);
        s->byz = calloc((size_t)cfg->clients, 1);
        if (!perm || !s->byz) {
            free(perm);
            rc = af_seterr(AF_ENOMEM, "sim: out of memory");
            goto fail;
        }
        af_rng br = af_rng_split(cfg->seed ^ ((uint64_t)TAG_BYZ << 56), 0);
        for (int i = 0; i < cfg->clients; i++)
            perm[i] = (uint32_t)i;
        for (int i = 0; i < n_byz; i++) {
            int j = i + (int)af_rng_below(&br, (uint32_t)(cfg->clients - i));
            uint32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
            s->byz[perm[i]] = 1;
        }
        free(perm);
    }
#ifdef AF_HAVE_MPI
    if (s->size > 1) { /* a partial sum travels in one MPI message, counted in an int */
        size_t bytes;
        fed_agg_data(s->agg, &bytes);
        if (bytes > (size_t)INT_MAX) {
            rc = af_seterr(AF_ERANGE, "sim: a partial sum of %zu bytes is too large for one MPI "
                           "message (models up to about 89M parameters)", bytes);
            goto fail;
        }
    }
#endif
    s->threads = cfg->threads;
    if (s->threads > 1 && !(s->pool = af_pool_create(s->threads))) {
        rc = af_seterr(AF_ENOMEM, "sim: cannot start %d threads", s->threads);
        goto fail;
    }
    const size_t n = model->n_params;
    int scaffold = fed_strategy_kind_of(s->strat) == FED_SCAFFOLD;
    for (int t = 0; t < s->threads; t++) {
        sim_worker *w = &s->w[t];
        if ((rc = nn_model_clone(model, &w->replica)) ||
            (rc = train_create(w->replica, &cfg->opt, cfg->batch, 1, &w->tr)) ||
            (rc = fed_agg_create(s->strat, &w->agg)))
            goto fail;
        w->delta = af_alloc(sizeof(float) * n);
        w->ews = nn_ws_create(model, SIM_EVAL_BATCH);
        w->bx = af_alloc(sizeof(float) * SIM_EVAL_BATCH * train->sample_size);
        w->by = af_alloc(SIM_EVAL_BATCH);
        if (scaffold) {
            w->corr = af_alloc(sizeof(float) * n);
            w->delta_c = af_alloc(sizeof(float) * n);
        }
        if (!w->delta || !w->ews || !w->bx || !w->by || (scaffold && (!w->corr || !w->delta_c))) {
            rc = af_seterr(AF_ENOMEM, "sim: out of memory");
            goto fail;
        }
        s->ews[t] = w->ews;
    }
    s->perm = malloc(sizeof(uint32_t) * (size_t)cfg->clients);
    s->slots = calloc((size_t)s->per_round, sizeof *s->slots);
    s->mine = malloc(sizeof(int) * (size_t)s->per_round);
    s->dev_acc = malloc(sizeof(double) * (size_t)cfg->clients);
    s->dev_hits = calloc((size_t)cfg->clients, sizeof(long));
    s->dev_n = calloc((size_t)cfg->clients, sizeof(long));
    if (scaffold)
        s->c_local = calloc((size_t)cfg->clients, sizeof(float *));
    if (!s->perm || !s->slots || !s->mine || !s->dev_acc || !s->dev_hits || !s->dev_n ||
        (scaffold && !s->c_local)) {
        rc = af_seterr(AF_ENOMEM, "sim: out of memory");
        goto fail;
    }
    double max_samples = 0;
    for (int d = 0; d < cfg->clients; d++) {
        size_t nt;
        data_partition_train(s->part, (size_t)d, &nt);
        max_samples = (double)nt > max_samples ? (double)nt : max_samples;
    }
    if ((rc = sim_privacy_create(cfg, fed_strategy_kind_of(s->strat), n, s->per_round, s->threads, s->size,
                                 max_samples, &s->priv)))
        goto fail;
    *out = s;
    return 0;
fail:
    sim_free(s);
    return rc;
}

void sim_free(sim *s)
{
    if (!s)
        return;
    for (int t = 0; t < SIM_MAX_THREADS; t++) {
        sim_worker *w = &s->w[t];
        train_free(w->tr);
        nn_model_free(w->replica);
        fed_agg_free(w->agg);
        af_free(w->delta);
        af_free(w->corr);
        af_free(w->delta_c);
        nn_ws_free(w->ews);
        af_free(w->bx);
        af_free(w->by);
    }
    if (s->c_local)
        for (int d = 0; d < s->cfg.clients; d++)
            af_free(s->c_local[d]);
    free(s->c_local);
    af_pool_free(s->pool);
    fed_agg_free(s->agg);
    sim_privacy_free(s->priv);
    fed_strategy_free(s->strat);
    nn_model_free(s->global);
    data_partition_free(s->part);
    free(s->perm);
    free(s->slots);
    free(s->mine);
    free(s->dev_acc);
    free(s->dev_hits);
    free(s->dev_n);
    af_free(s->upd);
    free(s->byz);
    free(s);
}

const nn_model *sim_model(const sim *s) { return s->global; }
const data_partition *sim_partition(const sim *s) { return s->part; }
int sim_rank(const sim *s) { return s->rank; }
int sim_size(const sim *s) { return s->size; }
int sim_budget_allows(const sim *s, double *eps_after) { return sim_privacy_allows(s->priv, eps_after); }

static double device_speed(const sim *s, int d)
{
    if (s->cfg.speed_sigma <= 0.0)
        return 1.0;
    af_rng r = af_rng_split(s->cfg.seed ^ ((uint64_t)TAG_SPEED << 56), (uint64_t)d);
    return exp(s->cfg.speed_sigma * af_rng_normal(&r));
}

/* Local training of the device in slot `i` on thread `tid`. */
static void train_device(void *ctx, int k, int tid)
{
    sim *s = ctx;
    sim_worker *w = &s->w[tid];
    slot *sl = &s->slots[s->mine[k]];
    const int d = sl->device;
    const size_t n = s->global->n_params;
    size_t nt;
    const uint32_t *idx = data_partition_train(s->part, (size_t)d, &nt);
    memcpy(w->replica->params, s->global->params, sizeof(float) * n);
    nn_optim_reset(train_optim(w->tr));
    fed_strategy_kind kind = fed_strategy_kind_of(s->strat);
    train_set_prox(w->tr, s->global->params, (float)fed_strategy_mu(s->strat));
    if (kind == FED_SCAFFOLD) {
        if (!s->c_local[d] && !(s->c_local[d] = af_alloc(sizeof(float) * n))) {
            s->rc[tid] = af_seterr(AF_ENOMEM, "sim: out of memory for device %d's control variate", d);
            return;
        }
        const float *c = fed_strategy_control(s->strat), *ci = s->c_local[d];
        for (size_t j = 0; j < n; j++)
            w->corr[j] = c[j] - ci[j];
        train_set_correction(w->tr, w->corr);
    } else {
        train_set_correction(w->tr, NULL);
    }
    af_rng rng = af_rng_split(s->cfg.seed ^ ((uint64_t)TAG_LOCAL << 56),
                              (uint64_t)s->round * (uint64_t)s->cfg.clients + (uint64_t)d);
    train_epoch_stats st = {0};
    long steps = 0;
    for (int e = 0; e < s->cfg.local_epochs; e++) {
        train_epoch(w->tr, s->train, idx, nt, s->cfg.batch, &rng, 0, NULL, NULL, &st);
        steps += st.steps;
    }
    sl->loss = st.loss;
    sl->samples = (double)nt;
    for (size_t j = 0; j < n; j++)
        w->delta[j] = w->replica->params[j] - s->global->params[j];
    fed_extra ex = {0};
    if (kind == FED_SCAFFOLD) {
        fed_scaffold_update_control(s->c_local[d], w->delta_c, fed_strategy_control(s->strat),
                                    s->global->params, w->replica->params, n, (double)steps,
                                    (double)s->cfg.opt.lr);
        ex.delta_c = w->delta_c;
    }
    ex.tau = fed_nova_tau((double)steps, s->cfg.opt.kind == NN_OPT_SGD ? s->cfg.opt.momentum : 0.0);
    if (s->byz && s->byz[d]) { /* the attacker trained honestly; it sends something else */
        if (s->cfg.byzantine_mode == SIM_BYZ_SIGNFLIP) {
            for (size_t j = 0; j < n; j++) /* −10·Δ: ascend the loss, ten times as far */
                w->delta[j] *= -10.0f;
        } else {
            af_rng nr = af_rng_split(s->cfg.seed ^ ((uint64_t)TAG_BYZ_NOISE << 56),
                                     (uint64_t)s->round * (uint64_t)s->cfg.clients + (uint64_t)d);
            for (size_t j = 0; j < n; j++) /* N(0, 100²) per value */
                w->delta[j] = (float)(100.0 * af_rng_normal(&nr));
        }
    }
    double weight = (double)nt;
    int sent = 0, rc = 0;
    if (s->priv) /* DP clipping and noise shares; with secagg the masked update leaves here */
        rc = sim_privacy_device(s->priv, tid, s->mine[k], d, w->delta, (double)nt, &weight, &sent);
    if (!rc && !sent && s->upd) { /* robust: keep the update in its slot's row */
        size_t j = 0;
        while (j < n && isfinite(w->delta[j]))
            j++;
        if (j < n)
            rc = af_seterr(AF_EINVAL, "%s update: delta[%zu] is not finite", s->cfg.strategy, j);
        else
            memcpy(s->upd + (size_t)s->mine[k] * n, w->delta, sizeof(float) * n);
    } else if (!rc && !sent) {
        rc = fed_agg_add(w->agg, w->delta, weight, &ex);
    }
    if (rc) {
        /* a diverged device (NaN update) is refused like on a real coordinator */
        sl->status = 3;
    }
}

/* Federated evaluation of device k (all devices, split over threads). */
static void eval_device(void *ctx, int d, int tid)
{
    sim *s = ctx;
    sim_worker *w = &s->w[tid];
    size_t nh;
    const uint32_t *idx = data_partition_heldout(s->part, (size_t)d, &nh);
    long hits = 0;
    const int k = s->global->n_classes;
    for (size_t lo = 0; lo < nh; lo += SIM_EVAL_BATCH) {
        size_t b = nh - lo < SIM_EVAL_BATCH ? nh - lo : SIM_EVAL_BATCH;
        data_gather(s->train, idx + lo, b, w->bx, w->by);
        const float *z = nn_forward(s->global, w->ews, w->bx, (int)b, 0, 0);
        for (size_t i = 0; i < b; i++) {
            int am = 0;
            for (int c = 1; c < k; c++)
                if (z[i * k + c] > z[i * k + am])
                    am = c;
            hits += am == w->by[i];
        }
    }
    s->dev_hits[d] = hits;
    s->dev_n[d] = (long)nh;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int sim_run_round(sim *s, int r, sim_round *out)
{
    const sim_cfg *c = &s->cfg;
    const size_t n = s->global->n_params;
    const int K = c->clients, m = s->per_round;
    double t0 = af_now();
    memset(out, 0, sizeof *out);
    out->round = r;
    s->round = r;
    /* selection: m of K without replacement (partial Fisher-Yates on a fresh identity) */
    af_rng sel = af_rng_split(c->seed ^ ((uint64_t)TAG_SELECT << 56), (uint64_t)r);
    for (int i = 0; i < K; i++)
        s->perm[i] = (uint32_t)i;
    for (int i = 0; i < m; i++) {
        int j = i + (int)af_rng_below(&sel, (uint32_t)(K - i));
        uint32_t t = s->perm[i];
        s->perm[i] = s->perm[j];
        s->perm[j] = t;
    }
    s->n_mine = 0;
    for (int i = 0; i < m; i++) {
        slot *sl = &s->slots[i];
        memset(sl, 0, sizeof *sl);
        sl->device = (int)s->perm[i];
        af_rng dr = af_rng_split(c->seed ^ ((uint64_t)TAG_DROP << 56), (uint64_t)r * (uint64_t)K + sl->device);
        size_t nt;
        data_partition_train(s->part, (size_t)sl->device, &nt);
        sl->sim_time = (double)c->local_epochs * (double)nt / (c->device_rate * device_speed(s, sl->device));
        if (c->dropout > 0 && af_rng_uniform(&dr) < c->dropout)
            sl->status = 1;
        else if (c->deadline > 0 && sl->sim_time > c->deadline)
            sl->status = 2;
        else if (sl->device % s->size == s->rank)
            s->mine[s->n_mine++] = i;
    }
    if (s->priv) { /* budget check; secure aggregation's key phases among the selected */
        uint8_t *rep = sim_privacy_reporting(s->priv);
        for (int i = 0; i < m; i++)
            rep[i] = s->slots[i].status == 0;
        int rc = sim_privacy_begin(s->priv, r, m, s->pool);
        if (rc)
            return rc;
    }
    for (int t = 0; t < s->threads; t++) {
        fed_agg_reset(s->w[t].agg);
        s->rc[t] = 0;
    }
    if (s->pool)
        af_pool_run(s->pool, train_device, s, s->n_mine);
    else
        for (int k = 0; k < s->n_mine; k++)
            train_device(s, k, 0);
    for (int t = 0; t < s->threads; t++)
        if (s->rc[t])
            return s->rc[t];
    fed_agg_reset(s->agg);
    for (int t = 0; t < s->threads; t++)
        fed_agg_merge(s->agg, s->w[t].agg);
#ifdef AF_HAVE_MPI
    if (s->size > 1) {
        /* exact partial sums travel to rank 0, which merges them in rank order */
        size_t bytes;
        void *blk = fed_agg_data(s->agg, &bytes);
        if (s->rank == 0) {
            fed_agg *tmp;
            int rc = fed_agg_create(s->strat, &tmp);
            if (rc)
                return rc;
            size_t tb;
            void *tblk = fed_agg_data(tmp, &tb);
            for (int src = 1; src < s->size; src++) {
                MPI_Recv(tblk, (int)tb, MPI_BYTE, src, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                fed_agg_merge(s->agg, tmp);
            }
            fed_agg_free(tmp);
        } else {
            MPI_Send(blk, (int)bytes, MPI_BYTE, 0, 7, MPI_COMM_WORLD);
        }
        /* per-slot outcomes: each slot is written by exactly one rank, others hold zeros */
        double *buf = calloc((size_t)m * 3, sizeof(double)), *sum = calloc((size_t)m * 3, sizeof(double));
        if (!buf || !sum) {
            free(buf);
            free(sum);
            return af_seterr(AF_ENOMEM, "sim: out of memory");
        }
        for (int k = 0; k < s->n_mine; k++) {
            slot *sl = &s->slots[s->mine[k]];
            buf[3 * s->mine[k]] = sl->loss;
            buf[3 * s->mine[k] + 1] = sl->samples;
            buf[3 * s->mine[k] + 2] = sl->status == 3;
        }
        MPI_Allreduce(buf, sum, m * 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        for (int i = 0; i < m; i++)
            if (s->slots[i].status == 0 || s->slots[i].status == 3) {
                s->slots[i].loss = sum[3 * i];
                s->slots[i].samples = sum[3 * i + 1];
                s->slots[i].status = sum[3 * i + 2] > 0 ? 3 : 0;
            }
        free(buf);
        free(sum);
    }
#endif
    double loss = 0, wsum = 0, slowest = 0;
    for (int i = 0; i < m; i++) {
        const slot *sl = &s->slots[i];
        if (sl->status == 0) {
            out->reported++;
            out->byzantine += s->byz && s->byz[sl->device];
            loss += sl->loss * sl->samples;
            wsum += sl->samples;
            if (sl->sim_time > slowest)
                slowest = sl->sim_time;
        } else {
            out->dropped++;
            if (sl->status == 2)
                slowest = c->deadline;
        }
    }
    out->selected = m;
    out->train_loss = wsum > 0 ? loss / wsum : NAN;
    out->sim_seconds = slowest;
    int scaffold = fed_strategy_kind_of(s->strat) == FED_SCAFFOLD;
    out->bytes_down = (uint64_t)m * n * sizeof(float) * (scaffold ? 2 : 1);
    out->bytes_up = (uint64_t)out->reported * n * sizeof(float) * (scaffold ? 2 : 1);
    out->epsilon = out->dp_clip = NAN;
    if (s->priv) { /* noise or unmasking: s->agg then holds the one update to apply */
        int rc = sim_privacy_end(s->priv, s->agg, s->rank == 0, out);
        if (rc)
            return rc;
    }
    if (s->upd && out->reported > 0) {
        /* the reports' rows, packed in slot order (rows only move up: memmove in place) */
        size_t k = 0;
        for (int i = 0; i < m; i++)
            if (s->slots[i].status == 0) {
                if (k != (size_t)i)
                    memmove(s->upd + k * n, s->upd + (size_t)i * n, sizeof(float) * n);
                k++;
            }
        int rc = fed_strategy_apply_updates(s->strat, s->upd, k, s->global->params);
        if (rc)
            return af_preerr(rc, "round %d", r);
    } else if (s->rank == 0 && fed_agg_count(s->agg) > 0) {
        int rc = fed_strategy_apply(s->strat, s->agg, s->global->params);
        if (rc)
            return rc;
    }
#ifdef AF_HAVE_MPI
    if (s->size > 1) {
        MPI_Bcast(s->global->params, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (scaffold) {
            size_t sn;
            float *st = fed_strategy_state(s->strat, &sn);
            MPI_Bcast(st, (int)sn, MPI_FLOAT, 0, MPI_COMM_WORLD);
        }
    }
#endif
    out->test_loss = out->test_accuracy = NAN;
    out->dev_acc_mean = out->dev_acc_p10 = out->dev_acc_min = NAN;
    /* every K rounds, and always the last (eval_every 0: the last only) */
    int eval = r == c->rounds || out->budget_exhausted || (c->eval_every > 0 && r % c->eval_every == 0);
    if (eval && s->rank == 0) {
        train_eval ev;
        int rc = train_evaluate(s->global, s->ews, s->pool, s->test, NULL, s->test->n, &ev);
        if (rc)
            return rc;
        out->test_loss = ev.loss;
        out->test_accuracy = ev.accuracy;
        if (s->pool)
            af_pool_run(s->pool, eval_device, s, K);
        else
            for (int d = 0; d < K; d++)
                eval_device(s, d, 0);
        int nd = 0;
        double sum = 0;
        for (int d = 0; d < K; d++)
            if (s->dev_n[d] > 0) {
                s->dev_acc[nd] = (double)s->dev_hits[d] / (double)s->dev_n[d];
                sum += s->dev_acc[nd++];
            }
        if (nd > 0) {
            qsort(s->dev_acc, (size_t)nd, sizeof(double), cmp_double);
            out->dev_acc_mean = sum / nd;
            double pos = 0.1 * (nd - 1);
            int lo = (int)pos;
            double fr = pos - lo;
            out->dev_acc_p10 = lo + 1 < nd ? s->dev_acc[lo] * (1 - fr) + s->dev_acc[lo + 1] * fr : s->dev_acc[lo];
            out->dev_acc_min = s->dev_acc[0];
        }
    }
    out->seconds = af_now() - t0;
    return 0;
}
