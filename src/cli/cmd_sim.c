/* cmd_sim.c — `artificien sim`: federated learning simulated over many devices.
 * Writes RUN_DIR/{rounds.csv, partition.csv, balance.json, model.safetensors, config.json,
 * report.html} (rank 0 only under MPI) and prints a progress line per round. With
 * --population-stats it first releases the devices' label histogram through secure
 * aggregation with DP noise (sim/popstats.h), prints it and writes RUN_DIR/population.json;
 * --rounds 0 stops there. The report is built after the last round from numbers the rounds
 * already returned: nothing is added to the simulation loop. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/report.h"
#include "core/err.h"
#include "core/fileio.h"
#include "core/timer.h"
#include "core/pool.h"
#include "fed/accountant.h"
#include "nn/checkpoint.h"
#include "sim/popstats.h"
#include "sim/sim.h"

#ifdef AF_HAVE_MPI
#include <mpi.h>
#endif

static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6f", v);
    else
        fputs("null", f);
}

static void csv_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6f", v);
}

/* The owner's view of the population statistics, as a table. */
static void print_population(FILE *f, const sim_popstats *ps, const data_schema *sc, int group)
{
    const popstats_result *r = &ps->r;
    fprintf(f, "population statistics: %u devices in %u secure-aggregation group%s of about %d, "
               "noise multiplier %g, at most %g samples counted per device\n",
            ps->devices, ps->groups, ps->groups > 1 ? "s" : "", group, r->z, r->bound);
    if (isinf(r->epsilon))
        fprintf(f, "  epsilon inf (no noise: no privacy guarantee) at delta %g\n", r->delta);
    else
        fprintf(f, "  epsilon %.4f at delta %g (one Gaussian release, best order %g)\n", r->epsilon, r->delta,
                r->order);
    fprintf(f, "  %-14s %10s %9s %8s %8s\n", "class", "count", "+- std", "share", "+- std");
    for (int k = 0; k < r->n_classes; k++)
        fprintf(f, "  %-14s %10.1f %9.1f %7.2f%% %7.2f%%\n", sc->class_names[k], r->count[k], r->count_std,
                100 * r->share[k], 100 * r->share_std[k]);
    fprintf(f, "  %-14s %10.1f %9.1f\n", "total", r->total, r->total_std);
    fprintf(f, "  balance: total-variation distance from uniform %.4f (noise alone adds about %.4f)\n",
            r->tv_uniform, r->tv_noise);
    fprintf(f, "  %u devices counted, %u dropped, %u clipped to the bound; %u group%s abandoned; %.2fs, "
               "%.2f MB up, %.2f MB down\n",
            ps->reported, ps->dropped, ps->clipped, ps->groups_abandoned, ps->groups_abandoned == 1 ? "" : "s",
            ps->seconds, ps->bytes_up / 1e6, ps->bytes_down / 1e6);
}

static void json_arr(FILE *f, const double *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i)
            fputs(", ", f);
        json_num(f, v[i]);
    }
    fputc(']', f);
}

/* "population": {…} for the --json summary. */
static void json_population(FILE *f, const sim_popstats *ps)
{
    const popstats_result *r = &ps->r;
    fputs("\"population\": {\"counts\": ", f);
    json_arr(f, r->count, r->n_classes);
    fputs(", \"count_std\": ", f);
    json_num(f, r->count_std);
    fputs(", \"shares\": ", f);
    json_arr(f, r->share, r->n_classes);
    fputs(", \"share_std\": ", f);
    json_arr(f, r->share_std, r->n_classes);
    fputs(", \"tv_uniform\": ", f);
    json_num(f, r->tv_uniform);
    fputs(", \"tv_noise\": ", f);
    json_num(f, r->tv_noise);
    fputs(", \"epsilon\": ", f);
    json_num(f, r->epsilon);
    fprintf(f, ", \"delta\": %g, \"reported\": %u, \"seconds\": %.4f}", r->delta, ps->reported, ps->seconds);
}

/* Runs the population statistics over the simulation's partition (or, with --rounds 0, the
 * same partition built here), prints the table and writes RUN_DIR/population.json. */
static int population_stats(const sim_cfg *c, const sim *s, const data_dataset *tr, const sim_popstats_cfg *pc,
                            const char *out, int json, int quiet, sim_popstats *ps)
{
    data_partition *own = NULL;
    const data_partition *part = s ? sim_partition(s) : NULL;
    int rc = 0;
    if (!part) {
        data_partition_opts po;
        data_partition_opts_default(&po);
        po.heldout_frac = c->heldout_frac; /* as sim_create builds it: the same devices */
        if (c->clients < 1 || (size_t)c->clients > tr->n)
            return cli_fail("sim", "--clients must be in [1, %zu], got %d", tr->n, c->clients);
        if ((rc = data_partition_create(tr->y, tr->n, tr->schema.n_classes, (size_t)c->clients, c->partition,
                                        c->seed, &po, &own)))
            return cli_fail("sim", "%s", af_errmsg());
        part = own;
    }
    af_pool *pool = af_pool_create(c->threads);
    if (!pool) {
        data_partition_free(own);
        return cli_fail("sim", "cannot start %d threads", c->threads);
    }
    rc = sim_popstats_run(part, tr->y, pc, pool, ps);
    af_pool_free(pool);
    data_partition_free(own);
    if (!rc && out) {
        char path[4096];
        const char *names[POPSTATS_MAX_CLASSES];
        for (int k = 0; k < tr->schema.n_classes && k < POPSTATS_MAX_CLASSES; k++)
            names[k] = tr->schema.class_names[k];
        snprintf(path, sizeof path, "%s/population.json", out);
        rc = af_mkdir_p(out);
        if (!rc)
            rc = sim_popstats_write_json(ps, pc, names, path);
    }
    if (rc)
        return cli_fail("sim", "%s", af_errmsg());
    if (!json && !quiet)
        print_population(stdout, ps, &tr->schema, pc->group);
    fflush(stdout);
    return 0;
}

/* The report's settings table: keys and their formatted values. */
#define KV_MAX 48
typedef struct kv_table {
    int n;
    const char *keys[KV_MAX];
    char vals[KV_MAX][160];
    const char *vp[KV_MAX];
} kv_table;

static void kv_add(kv_table *t, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void kv_add(kv_table *t, const char *key, const char *fmt, ...)
{
    if (t->n >= KV_MAX)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->vals[t->n], sizeof t->vals[t->n], fmt, ap);
    va_end(ap);
    t->keys[t->n] = key;
    t->vp[t->n] = t->vals[t->n];
    t->n++;
}

#define REPORT_DEVICES 50 /* rows of the label heat map; more devices are sampled evenly */

/* What the report shows besides the rounds and the partition. */
typedef struct sim_report_info {
    const sim_cfg *c;
    int rounds_asked, per_round, mpi_ranks;
    const char *opt;
    double momentum, wd, train_delta, run_s;
    const nn_model *model;
    const sim_popstats *ps; /* NULL without --population-stats */
    const sim_popstats_cfg *pc;
    double eps_total;
} sim_report_info;

/* RUN_DIR/report.html: the settings, per-round charts (accuracy, loss, devices, ε and the
 * clip under DP), and the label balance of the partition (the numbers of balance.json, a
 * heat map of per-device label mixes, the population histogram). Runs once after training;
 * the simulator computes no confusion matrix, so the report has none. 0 or AF_E*. */
static int write_sim_report(const char *path, const sim_report_info *in, const sim_round *rounds, int n,
                            const data_partition *p, const data_dataset *tr)
{
    const sim_cfg *c = in->c;
    const int k = tr->schema.n_classes;
    const size_t K = p->n_devices;
    const int rows = K < REPORT_DEVICES ? (int)K : REPORT_DEVICES;
    int rc = 0;
    report *r = NULL;
    double *x = calloc((size_t)n * 12, sizeof *x);
    double *skew = calloc(K, sizeof *skew);
    double *shares = calloc((size_t)rows * k, sizeof *shares);
    char(*row_name)[32] = calloc((size_t)rows, sizeof *row_name);
    char(*row_note)[48] = calloc((size_t)rows, sizeof *row_note);
    if (!x || !skew || !shares || !row_name || !row_note) {
        rc = af_seterr(AF_ENOMEM, "report %s: out of memory", path);
        goto fail;
    }
    uint64_t pop[DATA_MAX_CLASSES];
    data_balance bal;
    if ((rc = data_partition_population(p, tr->y, pop)) || (rc = data_partition_balance(p, tr->y, skew, &bal)))
        goto fail;

    /* ---- settings ---- */
    kv_table t = {0};
    int abandoned = 0;
    uint64_t down = 0, up = 0;
    for (int i = 0; i < n; i++) {
        abandoned += rounds[i].secagg_abandoned;
        down += rounds[i].bytes_down;
        up += rounds[i].bytes_up;
    }
    kv_add(&t, "model", "%s (%zu parameters)", in->model->name, in->model->n_params);
    kv_add(&t, "dataset", "%s: %zu training samples over the devices", tr->schema.name, tr->n);
    kv_add(&t, "strategy", "%s%s%s", c->strategy, c->strategy_opts && *c->strategy_opts ? " " : "",
           c->strategy_opts ? c->strategy_opts : "");
    kv_add(&t, "partition", "%s (seed %llu, %.0f%% of each device held out for federated evaluation)",
           p->spec_str, (unsigned long long)p->seed, 100 * p->heldout_frac);
    kv_add(&t, "devices", "%zu", K);
    kv_add(&t, "devices per round", "%d", in->per_round);
    if (n < in->rounds_asked)
        kv_add(&t, "rounds", "%d of %d asked (the privacy budget stopped the run)", n, in->rounds_asked);
    else
        kv_add(&t, "rounds", "%d", n);
    kv_add(&t, "local epochs", "%d", c->local_epochs);
    kv_add(&t, "local batch", "%d", c->batch);
    kv_add(&t, "local optimizer", "%s, lr %g, momentum %g, weight decay %g", in->opt, (double)c->opt.lr,
           in->momentum, in->wd);
    if (c->dropout > 0 || c->speed_sigma > 0 || c->deadline > 0)
        kv_add(&t, "device failures", "dropout %g, speeds logNormal(0, %g) at %g samples/s, deadline %s%g%s",
               c->dropout, c->speed_sigma, c->device_rate, c->deadline > 0 ? "" : "none (", c->deadline,
               c->deadline > 0 ? " s" : ")");
    if (c->eval_every > 0)
        kv_add(&t, "evaluation", "every %d round%s and the last", c->eval_every, c->eval_every > 1 ? "s" : "");
    else
        kv_add(&t, "evaluation", "the last round only");
    if (c->dp_clip > 0) {
        if (c->dp_adaptive_quantile > 0)
            kv_add(&t, "differential privacy", "DP-FedAvg: adaptive clip from S = %g tracking quantile %g, "
                   "noise multiplier %g", c->dp_clip, c->dp_adaptive_quantile, c->dp_noise);
        else
            kv_add(&t, "differential privacy", "DP-FedAvg: clip S = %g, noise multiplier %g", c->dp_clip,
                   c->dp_noise);
        kv_add(&t, "epsilon spent", "%.4f at delta %g", rounds[n - 1].epsilon, in->train_delta);
        if (c->dp_target_epsilon > 0)
            kv_add(&t, "epsilon target", "%g", c->dp_target_epsilon);
    }
    if (c->secagg) {
        char thr[32], range[64];
        if (c->secagg_threshold > 0)
            snprintf(thr, sizeof thr, "%d", c->secagg_threshold);
        else
            snprintf(thr, sizeof thr, "ceil(2/3 of %d)", in->per_round);
        if (c->dp_clip > 0)
            snprintf(range, sizeof range, "fixed point sized by the clip");
        else
            snprintf(range, sizeof range, "fixed point for |delta| <= %g", c->secagg_range > 0 ? c->secagg_range : 1);
        kv_add(&t, "secure aggregation", "threshold t = %s, %s; %d round%s abandoned", thr, range, abandoned,
               abandoned == 1 ? "" : "s");
    }
    if (in->ps) {
        kv_add(&t, "population statistics", "noise multiplier %g, bound %g samples/device, groups of %d; "
               "epsilon %.4f at delta %g", in->pc->z, in->pc->bound, in->pc->group, in->ps->r.epsilon,
               in->pc->delta);
        kv_add(&t, "epsilon, statistics + training", "%.4f at delta %g", in->eps_total, in->train_delta);
    }
    kv_add(&t, "seed", "%llu", (unsigned long long)c->seed);
    kv_add(&t, "threads, MPI ranks", "%d, %d", c->threads, in->mpi_ranks);
    kv_add(&t, "final test accuracy", "%.4f", rounds[n - 1].test_accuracy);
    kv_add(&t, "time", "%.2f s (%.3f s per round)", in->run_s, in->run_s / n);
    kv_add(&t, "traffic", "%.2f MB down, %.2f MB up", down / 1e6, up / 1e6);

    /* ---- per-round charts ---- */
    double *xr = x, *acc = x + n, *dm = x + 2 * n, *dp10 = x + 3 * n, *dmin = x + 4 * n, *tl = x + 5 * n,
           *trl = x + 6 * n, *eps = x + 7 * n, *clip = x + 8 * n, *sel = x + 9 * n, *rep = x + 10 * n,
           *drop = x + 11 * n;
    for (int i = 0; i < n; i++) {
        const sim_round *R = &rounds[i];
        xr[i] = R->round;
        acc[i] = R->test_accuracy;
        dm[i] = R->dev_acc_mean;
        dp10[i] = R->dev_acc_p10;
        dmin[i] = R->dev_acc_min;
        tl[i] = R->test_loss;
        trl[i] = R->train_loss;
        eps[i] = R->epsilon;
        clip[i] = R->dp_clip;
        sel[i] = R->selected;
        rep[i] = R->reported;
        drop[i] = R->dropped;
    }
    report_chart ch[5] = {
        {.title = "Accuracy", .x_label = "round", .y_label = "accuracy", .n = n, .x = xr, .n_series = 4,
         .names = {"central test set", "devices: mean", "devices: 10th percentile", "devices: min"},
         .y = {acc, dm, dp10, dmin}},
        {.title = "Loss", .x_label = "round", .y_label = "cross-entropy", .n = n, .x = xr, .n_series = 2,
         .names = {"central test set", "training (devices)"}, .y = {tl, trl}},
        {.title = "Devices per round", .x_label = "round", .y_label = "devices", .n = n, .x = xr,
         .n_series = 3, .names = {"selected", "reported", "dropped"}, .y = {sel, rep, drop}},
        {.title = "Privacy spent", .x_label = "round", .y_label = "epsilon", .n = n, .x = xr, .n_series = 1,
         .names = {"epsilon"}, .y = {eps}},
        {.title = "Clip norm", .x_label = "round", .y_label = "L2 norm S", .n = n, .x = xr, .n_series = 1,
         .names = {"clip S"}, .y = {clip}},
    };
    const int n_charts = c->dp_clip > 0 ? (c->dp_adaptive_quantile > 0 ? 5 : 4) : 3;
    for (int i = 0; i < n_charts; i++)
        ch[i].legend_right = ch[i].x_whole = 1;

    /* ---- label balance ---- */
    const char *cls[DATA_MAX_CLASSES];
    double popv[DATA_MAX_CLASSES], rel[DATA_MAX_CLASSES], tru[DATA_MAX_CLASSES];
    const char *rowp[REPORT_DEVICES], *notep[REPORT_DEVICES];
    uint32_t cnt[DATA_MAX_CLASSES];
    uint64_t pop_n = 0;
    for (int j = 0; j < k; j++) {
        cls[j] = tr->schema.class_names[j];
        popv[j] = (double)pop[j];
        pop_n += pop[j];
    }
    for (int i = 0; i < rows; i++) {
        size_t d = (size_t)i * K / (size_t)rows; /* evenly spaced ids when K > rows */
        if ((rc = data_partition_label_counts(p, tr->y, d, DATA_PART_ALL, cnt)))
            goto fail;
        size_t nd = p->off[d + 1] - p->off[d];
        for (int j = 0; j < k; j++)
            shares[(size_t)i * k + j] = nd ? (double)cnt[j] / (double)nd : 0;
        snprintf(row_name[i], sizeof row_name[i], "device %zu", d);
        snprintf(row_note[i], sizeof row_note[i], "%zu samples, skew %.3f", nd, skew[d]);
        rowp[i] = row_name[i];
        notep[i] = row_note[i];
    }
    /* device skew (TV distance) in ten bins over [0, 1] */
    double skew_hist[10] = {0};
    static const char *const skew_bins[10] = {"0-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4", "0.4-0.5",
                                              "0.5-0.6", "0.6-0.7", "0.7-0.8", "0.8-0.9", "0.9-1"};
    for (size_t d = 0; d < K; d++) {
        int b = (int)(skew[d] * 10);
        skew_hist[b < 0 ? 0 : b > 9 ? 9 : b] += 1;
    }
    kv_table bt = {0};
    kv_add(&bt, "skew metric", "total-variation distance of a device's label mix from the population's (0 = same mix, 1 = disjoint)");
    kv_add(&bt, "skew mean, median, p90, max", "%.4f, %.4f, %.4f, %.4f", bal.skew_mean, bal.skew_p50, bal.skew_p90,
           bal.skew_max);
    kv_add(&bt, "device size min, mean, max", "%zu, %.1f, %zu", bal.size_min, bal.size_mean, bal.size_max);
    kv_add(&bt, "population", "%llu samples, %d classes", (unsigned long long)pop_n, k);

    if ((rc = report_open("Artificien simulation", &r)))
        goto fail;
    report_heading(r, "Configuration");
    report_table_kv(r, t.keys, t.vp, t.n);
    report_heading(r, "Rounds");
    if (c->eval_every != 1)
        report_text(r, "Central and federated evaluation did not run every round: the lines join the "
                       "evaluated rounds.");
    for (int i = 0; i < n_charts; i++)
        report_line_chart(r, &ch[i]);
    report_heading(r, "Label balance");
    report_table_kv(r, bt.keys, bt.vp, bt.n);
    report_bar_chart(r, &(report_bars){.title = "Population label histogram", .x_label = "class",
                                       .y_label = "samples", .n = k, .names = cls, .n_series = 1,
                                       .y = {popv}});
    report_bar_chart(r, &(report_bars){.title = "Device skew", .x_label = "total-variation distance",
                                       .y_label = "devices", .n = 10, .names = skew_bins, .n_series = 1,
                                       .y = {skew_hist}});
    char note[160];
    if ((size_t)rows < K)
        snprintf(note, sizeof note, "Label mix of %d of the %zu devices, sampled evenly by id (ids about %.3g "
                 "apart); each row is a device's share of each class.", rows, K, (double)K / rows);
    else
        snprintf(note, sizeof note, "Label mix of all %zu devices; each row is a device's share of each class.", K);
    report_text(r, note);
    report_heatmap_svg(r, &(report_heatmap){.title = "Label mix per device", .rows = rows, .cols = k,
                                            .row_names = rowp, .col_names = cls, .row_notes = notep,
                                            .v = shares, .vmax = 1});
    if (in->ps) {
        /* the release compared to the truth, as shares (the counts are clipped to the bound) */
        const popstats_result *pr = &in->ps->r;
        for (int j = 0; j < k; j++) {
            rel[j] = j < pr->n_classes ? pr->share[j] : NAN;
            tru[j] = pop_n ? popv[j] / (double)pop_n : 0;
        }
        report_text(r, "The population statistics release (secure aggregation with DP noise) next to the true "
                       "shares, which the owner never sees.");
        report_bar_chart(r, &(report_bars){.title = "Population statistics: label shares", .x_label = "class",
                                           .y_label = "share", .n = k, .names = cls, .n_series = 2,
                                           .series = {"true", "released"}, .y = {tru, rel}});
    }
    rc = report_close(r, path);
    r = NULL;
fail:
    report_close(r, NULL);
    free(x);
    free(skew);
    free(shares);
    free(row_name);
    free(row_note);
    return rc;
}

int cmd_sim(int argc, char **argv)
{
    sim_cfg c;
    sim_cfg_defaults(&c);
    const char *spec = NULL, *data = "fashion-mnist", *out = NULL, *opt = "sgd", *init = NULL;
    double lr = NAN, momentum = 0.0, wd = 0.0;
    int json = 0, quiet = 0, limit = 0, popstats = 0;
    sim_popstats_cfg pc;
    sim_popstats_cfg_defaults(&pc);
    double st_noise = NAN, st_bound = NAN, st_delta = NAN;
    int st_group = 0;
    const char *byzantine = NULL;
    const arg_opt opts[] = {
        {"model", ARG_STR, &spec, "model spec JSON (default: models/fashion_cnn.json)"},
        {"init", ARG_STR, &init, "initial weights (.safetensors) instead of a fresh init"},
        {"data", ARG_STR, &data, "dataset: fashion-mnist or a folder of IDX files"},
        {"limit", ARG_INT, &limit, "use only the first N training samples"},
        {"clients", ARG_INT, &c.clients, "number of simulated devices (default 100)"},
        {"frac", ARG_FLOAT, &c.frac, "fraction of devices selected per round (default 0.1)"},
        {"per-round", ARG_INT, &c.per_round, "devices selected per round (overrides --frac)"},
        {"rounds", ARG_INT, &c.rounds, "rounds (default 20)"},
        {"local-epochs", ARG_INT, &c.local_epochs, "local epochs per round (default 1)"},
        {"batch", ARG_INT, &c.batch, "local batch size (default 10)"},
        {"opt", ARG_STR, &opt, "local optimizer: sgd or adam (default sgd)"},
        {"lr", ARG_FLOAT, &lr, "local learning rate (default 0.05)"},
        {"momentum", ARG_FLOAT, &momentum, "local SGD momentum (default 0)"},
        {"weight-decay", ARG_FLOAT, &wd, "local weight decay (default 0)"},
        {"partition", ARG_STR, &c.partition, "iid, dirichlet:ALPHA, shards:K, labels:K, quantity:BETA"},
        {"heldout", ARG_FLOAT, &c.heldout_frac, "each device's held-out share for federated eval (default 0.1)"},
        {"strategy", ARG_STR, &c.strategy, "fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, scaffold, fednova, "
                                           "fedmedian, fedtrimmedavg, krum"},
        {"strategy-opts", ARG_STR, &c.strategy_opts, "strategy options k=v,k=v (see docs/strategies.md)"},
        {"byzantine", ARG_STR, &byzantine, "FRAC[:MODE]: a fixed, seeded FRAC of the devices attack; MODE signflip "
                                           "(-10 x their update, default) or noise (N(0, 100^2))"},
        {"dropout", ARG_FLOAT, &c.dropout, "probability a selected device fails to report (default 0)"},
        {"speed-sigma", ARG_FLOAT, &c.speed_sigma, "device speeds ~ logNormal(0, sigma) (default 0)"},
        {"device-rate", ARG_FLOAT, &c.device_rate, "samples/s of a speed-1 device (default 1000)"},
        {"deadline", ARG_FLOAT, &c.deadline, "round deadline in simulated seconds; slower devices drop"},
        {"eval-every", ARG_INT, &c.eval_every, "evaluate every K rounds (default 1; 0 = last only)"},
        {"threads", ARG_INT, &c.threads, "threads (default 1)"},
        {"seed", ARG_U64, &c.seed, "seed (default 1)"},
        {"dp-clip", ARG_FLOAT, &c.dp_clip, "DP-FedAvg: clip each device's delta to L2 norm S (0 = no DP)"},
        {"dp-noise", ARG_FLOAT, &c.dp_noise, "DP-FedAvg: noise multiplier z (noise std z*S on the sum)"},
        {"dp-adaptive-quantile", ARG_FLOAT, &c.dp_adaptive_quantile, "adaptive clipping: target quantile of the norms (0 = fixed S)"},
        {"dp-target-epsilon", ARG_FLOAT, &c.dp_target_epsilon, "stop before the round that would exceed this epsilon"},
        {"dp-delta", ARG_FLOAT, &c.dp_delta, "delta of the reported epsilon (default min(1e-5, 0.1/clients))"},
        {"secagg", ARG_FLAG, &c.secagg, "secure aggregation (Bonawitz et al. 2017) of each round's updates"},
        {"secagg-threshold", ARG_INT, &c.secagg_threshold, "secure aggregation threshold t (default ceil(2/3 of per round))"},
        {"secagg-range", ARG_FLOAT, &c.secagg_range, "secagg without DP: bound on |delta| per value for fixed point (default 1)"},
        {"population-stats", ARG_FLAG, &popstats, "before training, release the devices' label histogram with secure aggregation and DP (--rounds 0: only that)"},
        {"stats-noise", ARG_FLOAT, &st_noise, "population statistics: noise multiplier z (default 2; 0 = no DP)"},
        {"stats-bound", ARG_FLOAT, &st_bound, "population statistics: samples a device counts at most (default 100)"},
        {"stats-group", ARG_INT, &st_group, "population statistics: devices per secure-aggregation group (default 100)"},
        {"stats-delta", ARG_FLOAT, &st_delta, "population statistics: delta (default --dp-delta, else min(1e-5, 0.1/clients))"},
        {"out", ARG_STR, &out, "RUN_DIR for rounds.csv, partition.csv, balance.json, population.json, model, config"},
        {"quiet", ARG_FLAG, &quiet, "no progress lines"},
        {"json", ARG_FLAG, &json, "print a JSON summary as the last line of stdout"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("sim", "[options]", opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    nn_opt_kind kind;
    if (nn_optim_parse_kind(opt, &kind))
        return cli_fail("sim", "--opt: %s", af_errmsg());
    c.opt = nn_optim_defaults(kind);
    c.opt.lr = (float)(isnan(lr) ? 0.05 : lr);
    c.opt.momentum = (float)momentum;
    c.opt.weight_decay = (float)wd;
    if (limit < 0)
        return cli_fail("sim", "--limit must be >= 0");
    if (byzantine && sim_byzantine_parse(byzantine, &c))
        return cli_fail("sim", "%s", af_errmsg());
    if (!popstats && (!isnan(st_noise) || !isnan(st_bound) || !isnan(st_delta) || st_group))
        return cli_fail("sim", "--stats-noise, --stats-bound, --stats-group and --stats-delta need --population-stats");
    if (c.rounds == 0 && !popstats)
        return cli_fail("sim", "--rounds must be >= 1 (0 only with --population-stats), got 0");
    /* the statistics' δ defaults to the training's, so that the two compose at one δ */
    const double train_delta = c.dp_delta > 0 ? c.dp_delta : fmin(1e-5, 0.1 / (c.clients > 0 ? c.clients : 1));
    if (!isnan(st_noise))
        pc.z = st_noise;
    if (!isnan(st_bound))
        pc.bound = st_bound;
    if (st_group)
        pc.group = st_group;
    pc.delta = isnan(st_delta) ? train_delta : st_delta;
    pc.dropout = c.dropout;
    pc.seed = c.seed;
    const int stats_only = popstats && c.rounds == 0;
    int rank = 0, size = 1, mpi = 0;
#ifdef AF_HAVE_MPI
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE")) {
        MPI_Init(NULL, NULL);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        mpi = 1;
    }
#endif
    int rc = 0;
    nn_model *m = NULL;
    data_dataset *tr = NULL, *te = NULL;
    sim *s = NULL;
    sim_round *rounds = NULL;
    if (init ? nn_checkpoint_load(init, NULL, &m) : nn_model_from_file(spec ? spec : cli_default_spec(), NULL, &m)) {
        rc = cli_fail("sim", "%s", af_errmsg());
        goto done;
    }
    if (!init)
        nn_model_init(m, c.seed);
    if (data_load_fashion_mnist_u8(data, 1, 0.2860f, 0.3530f, (size_t)limit, &tr) ||
        data_load_fashion_mnist_u8(data, 0, 0.2860f, 0.3530f, 0, &te)) {
        rc = cli_fail("sim", "%s", af_errmsg());
        goto done;
    }
    sim_popstats ps;
    if (stats_only) { /* the statistics alone, before any training is decided */
        if (rank == 0) {
            rc = population_stats(&c, NULL, tr, &pc, out, json, quiet, &ps);
            if (!rc && json) {
                fputc('{', stdout);
                json_population(stdout, &ps);
                fputs("}\n", stdout);
            }
        }
        goto done;
    }
    if (sim_create(&c, m, tr, te, &s)) {
        rc = cli_fail("sim", "%s", af_errmsg());
        goto done;
    }
    if (popstats && rank == 0 && (rc = population_stats(&c, s, tr, &pc, out, json, quiet, &ps)))
        goto done;
    rounds = calloc((size_t)c.rounds, sizeof *rounds);
    if (!rounds) {
        rc = cli_fail("sim", "out of memory");
        goto done;
    }
    const int lead = rank == 0;
    if (lead && !quiet)
        fprintf(stderr, "sim: %d devices (%s), %d per round, %d rounds, strategy %s, %d thread%s%s\n",
                c.clients, c.partition, sim_partition(s)->n_devices ? (c.per_round ? c.per_round : (int)lround(c.frac * c.clients)) : 0,
                c.rounds, c.strategy, c.threads, c.threads > 1 ? "s" : "",
                mpi ? ", MPI" : "");
    if (lead && !quiet && (c.dp_clip > 0 || c.secagg))
        fprintf(stderr, "privacy:%s%s\n", c.dp_clip > 0 ? " DP-FedAvg (clip, noise, epsilon per round)" : "",
                c.secagg ? " secure aggregation (masked updates, dropouts unmasked)" : "");
    double t0 = af_now(), run_s = 0;
    int n_run = 0;
    const int rounds_asked = c.rounds;
    for (int i = 1; i <= c.rounds; i++) {
        sim_round *R = &rounds[i - 1];
        double eps_next;
        if (!sim_budget_allows(s, &eps_next)) {
            if (lead && !quiet)
                fprintf(stderr, "privacy budget: stopping before round %d (epsilon would reach %.4f > target %g)\n",
                        i, eps_next, c.dp_target_epsilon);
            break;
        }
        if (sim_run_round(s, i, R)) {
            rc = cli_fail("sim", "round %d: %s", i, af_errmsg());
#ifdef AF_HAVE_MPI
            if (size > 1) /* the other ranks would wait forever in the round's reduction */
                MPI_Abort(MPI_COMM_WORLD, 1);
#endif
            goto done;
        }
        run_s = af_now() - t0;
        if (lead && !quiet) {
            double eta = run_s / i * (c.rounds - i);
            fprintf(stderr, "round %d/%d: %d devices (%d reported, %d dropped)", i, c.rounds,
                    R->selected, R->reported, R->dropped);
            if (isfinite(R->test_accuracy))
                fprintf(stderr, ", acc %.4f, loss %.4f, device acc mean %.3f p10 %.3f min %.3f",
                        R->test_accuracy, R->test_loss, R->dev_acc_mean, R->dev_acc_p10, R->dev_acc_min);
            if (!isnan(R->epsilon))
                fprintf(stderr, ", epsilon %.4f", R->epsilon);
            if (c.dp_adaptive_quantile > 0)
                fprintf(stderr, ", clip %.4g", R->dp_clip);
            if (R->secagg_abandoned)
                fprintf(stderr, ", secagg abandoned (fewer than t survivors)");
            fprintf(stderr, ", train loss %.4f, %.2fs, ETA %.1fs\n", R->train_loss, R->seconds, eta);
        }
        n_run = i;
    }
    if (n_run == 0) {
        rc = cli_fail("sim", "--dp-target-epsilon %g allows no round at all (see artificien privacy)",
                      c.dp_target_epsilon);
        goto done;
    }
    c.rounds = n_run; /* the outputs describe the rounds that ran (fewer if the budget stopped it) */
    /* the statistics' release and the training both touch every device: their RDP curves add */
    double eps_total = NAN;
    if (popstats) {
        const int per_round = c.per_round ? c.per_round : (int)fmax(1, lround(c.frac * c.clients));
        acct a;
        if (!acct_init(&a, NULL, 0) && !acct_step(&a, 1.0, pc.z, 1) &&
            (c.dp_clip <= 0 || !acct_step(&a, (double)per_round / c.clients, c.dp_noise, n_run)) &&
            acct_epsilon(&a, train_delta, &eps_total, NULL))
            eps_total = NAN;
        if (c.dp_clip <= 0) /* training without DP has no guarantee at all */
            eps_total = INFINITY;
        if (lead && !quiet)
            fprintf(stderr, "privacy: population statistics (epsilon %.4f at delta %g) and training together: "
                            "epsilon %.4f at delta %g\n",
                    ps.r.epsilon, pc.delta, eps_total, train_delta);
    }
    if (lead && out) {
        char path[4096];
        if (af_mkdir_p(out)) {
            rc = cli_fail("sim", "%s", af_errmsg());
            goto done;
        }
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f) {
            rc = cli_fail("sim", "out of memory");
            goto done;
        }
        fprintf(f, "round,selected,reported,dropped,train_loss,test_loss,test_accuracy,"
                   "device_acc_mean,device_acc_p10,device_acc_min,seconds,sim_seconds,bytes_down,bytes_up,epsilon\n");
        for (int i = 0; i < c.rounds; i++) {
            const sim_round *R = &rounds[i];
            fprintf(f, "%d,%d,%d,%d,", R->round, R->selected, R->reported, R->dropped);
            csv_num(f, R->train_loss);
            fputc(',', f);
            csv_num(f, R->test_loss);
            fputc(',', f);
            csv_num(f, R->test_accuracy);
            fputc(',', f);
            csv_num(f, R->dev_acc_mean);
            fputc(',', f);
            csv_num(f, R->dev_acc_p10);
            fputc(',', f);
            csv_num(f, R->dev_acc_min);
            fprintf(f, ",%.4f,%.3f,%llu,%llu,", R->seconds, R->sim_seconds,
                    (unsigned long long)R->bytes_down, (unsigned long long)R->bytes_up);
            csv_num(f, R->epsilon);
            fputc('\n', f);
        }
        fclose(f);
        snprintf(path, sizeof path, "%s/rounds.csv", out);
        const void *b[1] = {buf};
        int wrc = af_write_file_atomic(path, b, &len, 1);
        free(buf);
        const data_partition *p = sim_partition(s);
        const char *names[DATA_MAX_CLASSES];
        for (int k = 0; k < tr->schema.n_classes; k++)
            names[k] = tr->schema.class_names[k];
        snprintf(path, sizeof path, "%s/partition.csv", out);
        if (!wrc)
            wrc = data_partition_write_csv(p, tr->y, names, path);
        snprintf(path, sizeof path, "%s/balance.json", out);
        if (!wrc)
            wrc = data_partition_write_balance_json(p, tr->y, path);
        char s_rounds[16], s_clients[16], s_acc[32];
        snprintf(s_rounds, sizeof s_rounds, "%d", c.rounds);
        snprintf(s_clients, sizeof s_clients, "%d", c.clients);
        snprintf(s_acc, sizeof s_acc, "%.6f", rounds[c.rounds - 1].test_accuracy);
        const char *keys[] = {"dataset", "rounds", "clients", "strategy", "partition", "test_accuracy"};
        const char *vals[] = {tr->schema.name, s_rounds, s_clients, c.strategy, c.partition, s_acc};
        snprintf(path, sizeof path, "%s/model.safetensors", out);
        if (!wrc)
            wrc = nn_checkpoint_save(sim_model(s), path, keys, vals, 6);
        /* config.json: every option, enough to re-run exactly */
        buf = NULL;
        len = 0;
        f = open_memstream(&buf, &len);
        if (!f) {
            rc = cli_fail("sim", "out of memory");
            goto done;
        }
        fprintf(f, "{\n  \"command\": \"sim\",\n  \"model\": %s,\n  \"init\": %s%s%s,\n  \"data\": \"%s\",\n  \"limit\": %d,\n"
                   "  \"clients\": %d,\n  \"frac\": %g,\n  \"per_round\": %d,\n  \"rounds\": %d,\n"
                   "  \"local_epochs\": %d,\n  \"batch\": %d,\n  \"opt\": \"%s\",\n  \"lr\": %g,\n"
                   "  \"momentum\": %g,\n  \"weight_decay\": %g,\n  \"partition\": \"%s\",\n  \"heldout\": %g,\n"
                   "  \"strategy\": \"%s\",\n  \"strategy_opts\": \"%s\",\n  \"dropout\": %g,\n"
                   "  \"speed_sigma\": %g,\n  \"device_rate\": %g,\n  \"deadline\": %g,\n  \"eval_every\": %d,\n"
                   "  \"threads\": %d,\n  \"mpi_ranks\": %d,\n  \"seed\": %llu,\n  \"dp_clip\": %g,\n"
                   "  \"dp_noise\": %g,\n  \"dp_adaptive_quantile\": %g,\n  \"dp_target_epsilon\": %g,\n"
                   "  \"dp_delta\": %g,\n  \"secagg\": %s,\n  \"secagg_threshold\": %d,\n  \"secagg_range\": %g,\n"
                   "  \"population_stats\": %s,\n  \"stats_noise\": %g,\n  \"stats_bound\": %g,\n  \"stats_group\": %d,\n"
                   "  \"stats_delta\": %g,\n  \"byzantine\": %g,\n  \"byzantine_mode\": \"%s\"\n}\n",
                sim_model(s)->spec_json, init ? "\"" : "", init ? init : "null", init ? "\"" : "", data,
                limit, c.clients, c.frac, c.per_round, c.rounds, c.local_epochs, c.batch, opt,
                (double)c.opt.lr, momentum, wd, c.partition, c.heldout_frac, c.strategy,
                c.strategy_opts ? c.strategy_opts : "", c.dropout, c.speed_sigma, c.device_rate,
                c.deadline, c.eval_every, c.threads, size, (unsigned long long)c.seed, c.dp_clip, c.dp_noise,
                c.dp_adaptive_quantile, c.dp_target_epsilon, c.dp_delta, c.secagg ? "true" : "false",
                c.secagg_threshold, c.secagg_range, popstats ? "true" : "false", pc.z, pc.bound, pc.group, pc.delta,
                c.byzantine_frac, c.byzantine_mode == SIM_BYZ_NOISE ? "noise" : "signflip");
        fclose(f);
        snprintf(path, sizeof path, "%s/config.json", out);
        b[0] = buf;
        if (!wrc)
            wrc = af_write_file_atomic(path, b, &len, 1);
        free(buf);
        snprintf(path, sizeof path, "%s/report.html", out);
        const sim_report_info info = {
            .c = &c, .rounds_asked = rounds_asked, .per_round = c.per_round ? c.per_round : (int)fmax(1, lround(c.frac * c.clients)),
            .mpi_ranks = size, .opt = opt, .momentum = momentum, .wd = wd, .train_delta = train_delta,
            .run_s = run_s, .model = sim_model(s), .ps = popstats ? &ps : NULL, .pc = &pc, .eps_total = eps_total};
        if (!wrc)
            wrc = write_sim_report(path, &info, rounds, c.rounds, p, tr);
        if (wrc) {
            rc = cli_fail("sim", "%s", af_errmsg());
            goto done;
        }
    }
    if (lead && json) {
        printf("{\"rounds\": [");
        for (int i = 0; i < c.rounds; i++) {
            const sim_round *R = &rounds[i];
            printf("%s{\"round\": %d, \"test_accuracy\": ", i ? ", " : "", R->round);
            json_num(stdout, R->test_accuracy);
            printf(", \"test_loss\": ");
            json_num(stdout, R->test_loss);
            printf(", \"train_loss\": ");
            json_num(stdout, R->train_loss);
            printf(", \"device_acc_mean\": ");
            json_num(stdout, R->dev_acc_mean);
            printf(", \"device_acc_p10\": ");
            json_num(stdout, R->dev_acc_p10);
            printf(", \"device_acc_min\": ");
            json_num(stdout, R->dev_acc_min);
            printf(", \"epsilon\": ");
            json_num(stdout, R->epsilon);
            printf(", \"reported\": %d, \"dropped\": %d, \"seconds\": %.4f}", R->reported, R->dropped, R->seconds);
        }
        printf("], \"final_accuracy\": ");
        json_num(stdout, rounds[c.rounds - 1].test_accuracy);
        printf(", \"clients\": %d, \"seconds_per_round\": %.4f, \"peak_rss_mb\": %.1f, \"mpi_ranks\": %d",
               c.clients, run_s / c.rounds, af_peak_rss_mb(), size);
        if (popstats) {
            printf(", ");
            json_population(stdout, &ps);
            printf(", \"epsilon_total\": ");
            json_num(stdout, eps_total);
        }
        printf("}\n");
    } else if (lead && !quiet) {
        printf("final test accuracy %.4f after %d rounds (%.2fs per round)\n",
               rounds[c.rounds - 1].test_accuracy, c.rounds, run_s / c.rounds);
    }
done:
    free(rounds);
    sim_free(s);
    data_dataset_free(tr);
    data_dataset_free(te);
    nn_model_free(m);
#ifdef AF_HAVE_MPI
    if (mpi)
        MPI_Finalize();
#endif
    return rc;
}
