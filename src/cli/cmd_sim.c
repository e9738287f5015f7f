/* cmd_sim.c — `artificien sim`: federated learning simulated over many devices.
 * Writes RUN_DIR/{rounds.csv, partition.csv, balance.json, model.safetensors, config.json}
 * (rank 0 only under MPI) and prints a progress line per round. With --population-stats it
 * first releases the devices' label histogram through secure aggregation with DP noise
 * (sim/popstats.h), prints it and writes RUN_DIR/population.json; --rounds 0 stops there. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
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
        {"strategy", ARG_STR, &c.strategy, "fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, scaffold, fednova"},
        {"strategy-opts", ARG_STR, &c.strategy_opts, "strategy options k=v,k=v (see docs/strategies.md)"},
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
    if (data_load_fashion_mnist(data, 1, 0.2860f, 0.3530f, (size_t)limit, &tr) ||
        data_load_fashion_mnist(data, 0, 0.2860f, 0.3530f, 0, &te)) {
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
                   "  \"stats_delta\": %g\n}\n",
                sim_model(s)->spec_json, init ? "\"" : "", init ? init : "null", init ? "\"" : "", data,
                limit, c.clients, c.frac, c.per_round, c.rounds, c.local_epochs, c.batch, opt,
                (double)c.opt.lr, momentum, wd, c.partition, c.heldout_frac, c.strategy,
                c.strategy_opts ? c.strategy_opts : "", c.dropout, c.speed_sigma, c.device_rate,
                c.deadline, c.eval_every, c.threads, size, (unsigned long long)c.seed, c.dp_clip, c.dp_noise,
                c.dp_adaptive_quantile, c.dp_target_epsilon, c.dp_delta, c.secagg ? "true" : "false",
                c.secagg_threshold, c.secagg_range, popstats ? "true" : "false", pc.z, pc.bound, pc.group, pc.delta);
        fclose(f);
        snprintf(path, sizeof path, "%s/config.json", out);
        b[0] = buf;
        if (!wrc)
            wrc = af_write_file_atomic(path, b, &len, 1);
        free(buf);
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
