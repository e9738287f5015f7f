/* cmd_train.c — `artificien train` and `artificien sweep`: central training runs with a
 * progress display, per-epoch evaluation, and RUN_DIR outputs (model.safetensors,
 * metrics.csv, metrics.json). A sweep trains the cartesian product of hyperparameter lists
 * and writes one table of all runs, best first. */
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
#include "nn/checkpoint.h"
#include "cli/report.h"

#define MAX_EPOCHS 1000

typedef struct run_cfg {
    const char *spec;     /* model spec path */
    int epochs, batch, threads;
    const char *opt;
    double lr, momentum, wd;
    int nesterov;
    uint64_t seed;
    int max_steps;
    int cosine;           /* cosine learning-rate decay over the epochs */
    int quiet;
    const char *run_name; /* "run1" */
} run_cfg;

typedef struct epoch_row {
    int epoch;
    double loss, accuracy, test_loss, test_accuracy, seconds, run_seconds, ips;
} epoch_row;

typedef struct run_result {
    int n_epochs;
    epoch_row rows[MAX_EPOCHS];
    train_eval ev;
    size_t params;
    double seconds;
} run_result;

static const char *opt_name(const run_cfg *c) { return c->opt; }

/* Trains one run; on success writes RUN_DIR outputs when out_dir is set. */
static int run_train(const char *cmd, const run_cfg *c, const data_dataset *tr,
                     const data_dataset *te, const char *out_dir, run_result *res)
{
    nn_model *m = NULL;
    train_ctx *t = NULL;
    int rc = 0;
    memset(res, 0, sizeof *res);
    nn_opt_kind kind;
    if (nn_optim_parse_kind(c->opt, &kind))
        return cli_fail(cmd, "%s", af_errmsg());
    nn_optim_cfg oc = nn_optim_defaults(kind);
    oc.lr = (float)c->lr;
    oc.momentum = (float)c->momentum;
    oc.nesterov = c->nesterov;
    oc.weight_decay = (float)c->wd;
    if (nn_optim_check(&oc))
        return cli_fail(cmd, "%s", af_errmsg());
    if (c->epochs < 1 || c->epochs > MAX_EPOCHS)
        return cli_fail(cmd, "--epochs must be in [1, %d], got %d", MAX_EPOCHS, c->epochs);
    if (c->batch < 1 || c->batch > 65536)
        return cli_fail(cmd, "--batch must be in [1, 65536], got %d", c->batch);
    if (nn_model_from_file(c->spec, NULL, &m))
        return cli_fail(cmd, "%s", af_errmsg());
    if (m->layers[0].in_n != tr->sample_size || m->n_classes != tr->schema.n_classes) {
        rc = cli_fail(cmd, "%s: model takes %zu inputs and gives %d classes, dataset '%s' has %zu and %d",
                      c->spec, m->layers[0].in_n, m->n_classes, tr->schema.name, tr->sample_size,
                      tr->schema.n_classes);
        goto done;
    }
    nn_model_init(m, c->seed);
    if (train_create(m, &oc, c->batch, c->threads, &t)) {
        rc = cli_fail(cmd, "%s", af_errmsg());
        goto done;
    }
    res->params = m->n_params;
    af_rng rng;
    af_rng_seed(&rng, c->seed, 0x7472616e);
    double run_t0 = af_now(), train_s = 0;
    for (int ep = 1; ep <= c->epochs; ep++) {
        char label[96];
        snprintf(label, sizeof label, "%s%sepoch %d/%d", c->run_name ? c->run_name : "",
                 c->run_name ? " " : "", ep, c->epochs);
        if (c->cosine) /* lr_e = lr/2 (1 + cos(pi (e-1) / E)), one value per epoch */
            train_optim(t)->cfg.lr = (float)(c->lr * 0.5 * (1.0 + cos(M_PI * (ep - 1) / c->epochs)));
        cli_progress pg;
        cli_progress_init(&pg, label, c->batch, c->quiet);
        train_epoch_stats st;
        train_epoch(t, tr, NULL, tr->n, c->batch, &rng, c->max_steps, cli_progress_cb, &pg, &st);
        cli_progress_done(&pg);
        train_s += st.seconds;
        if (!isfinite(st.loss)) {
            rc = cli_fail(cmd, "training diverged at epoch %d (loss is %g): lower --lr", ep, st.loss);
            goto done;
        }
        if (train_evaluate_simple(m, te, NULL, te->n, c->threads, &res->ev)) {
            rc = cli_fail(cmd, "%s", af_errmsg());
            goto done;
        }
        epoch_row *r = &res->rows[res->n_epochs++];
        r->epoch = ep;
        r->loss = st.loss;
        r->accuracy = st.accuracy;
        r->test_loss = res->ev.loss;
        r->test_accuracy = res->ev.accuracy;
        r->seconds = st.seconds;
        r->run_seconds = af_now() - run_t0;
        r->ips = st.seconds > 0 ? (double)st.samples / st.seconds : 0;
        if (!c->quiet)
            fprintf(stderr, "%s: loss %.4f  train acc %.4f  test acc %.4f  test loss %.4f  %.2fs  %.0f img/s\n",
                    label, r->loss, r->accuracy, r->test_accuracy, r->test_loss, r->seconds, r->ips);
    }
    res->seconds = af_now() - run_t0;
    if (out_dir) {
        char path[4096], buf[256];
        if (af_mkdir_p(out_dir)) {
            rc = cli_fail(cmd, "%s", af_errmsg());
            goto done;
        }
        char s_ep[16], s_b[16], s_lr[32], s_seed[32], s_acc[32];
        snprintf(s_ep, sizeof s_ep, "%d", c->epochs);
        snprintf(s_b, sizeof s_b, "%d", c->batch);
        snprintf(s_lr, sizeof s_lr, "%g", c->lr);
        snprintf(s_seed, sizeof s_seed, "%llu", (unsigned long long)c->seed);
        snprintf(s_acc, sizeof s_acc, "%.6f", res->ev.accuracy);
        const char *keys[] = {"dataset", "epochs", "batch", "optimizer", "lr", "seed", "test_accuracy"};
        const char *vals[] = {tr->schema.name, s_ep, s_b, opt_name(c), s_lr, s_seed, s_acc};
        snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
        if (nn_checkpoint_save(m, path, keys, vals, 7)) {
            rc = cli_fail(cmd, "%s", af_errmsg());
            goto done;
        }
        /* metrics.csv and metrics.json: one row per epoch with every hyperparameter */
        char *csv = NULL, *json = NULL;
        size_t csv_n = 0, json_n = 0;
        FILE *fc = open_memstream(&csv, &csv_n), *fj = open_memstream(&json, &json_n);
        if (!fc || !fj) {
            if (fc)
                fclose(fc);
            if (fj)
                fclose(fj);
            free(csv);
            free(json);
            rc = cli_fail(cmd, "out of memory");
            goto done;
        }
        fprintf(fc, "run,epoch,loss,accuracy,test_loss,test_accuracy,epoch_seconds,run_seconds,"
                    "images_per_sec,lr,batch,epochs,optimizer,momentum,nesterov,weight_decay,lr_schedule,threads,seed,model\n");
        fprintf(fj, "[\n");
        for (int i = 0; i < res->n_epochs; i++) {
            const epoch_row *r = &res->rows[i];
            const char *run = c->run_name ? c->run_name : "run1";
            fprintf(fc, "%s,%d,%.6f,%.6f,%.6f,%.6f,%.4f,%.4f,%.1f,%g,%d,%d,%s,%g,%d,%g,%s,%d,%llu,%s\n", run,
                    r->epoch, r->loss, r->accuracy, r->test_loss, r->test_accuracy, r->seconds,
                    r->run_seconds, r->ips, c->lr, c->batch, c->epochs, c->opt, c->momentum,
                    c->nesterov, c->wd, c->cosine ? "cosine" : "constant", c->threads,
                    (unsigned long long)c->seed, m->name);
            fprintf(fj, "  {\"run\": \"%s\", \"epoch\": %d, \"loss\": %.6f, \"accuracy\": %.6f, "
                        "\"test_loss\": %.6f, \"test_accuracy\": %.6f, \"epoch_seconds\": %.4f, "
                        "\"run_seconds\": %.4f, \"images_per_sec\": %.1f, \"lr\": %g, \"batch\": %d, "
                        "\"epochs\": %d, \"optimizer\": \"%s\", \"momentum\": %g, \"nesterov\": %s, "
                        "\"weight_decay\": %g, \"lr_schedule\": \"%s\", \"threads\": %d, \"seed\": %llu, \"model\": \"%s\"}%s\n",
                    run, r->epoch, r->loss, r->accuracy, r->test_loss, r->test_accuracy, r->seconds,
                    r->run_seconds, r->ips, c->lr, c->batch, c->epochs, c->opt, c->momentum,
                    c->nesterov ? "true" : "false", c->wd, c->cosine ? "cosine" : "constant", c->threads,
                    (unsigned long long)c->seed,
                    m->name, i + 1 < res->n_epochs ? "," : "");
        }
        fprintf(fj, "]\n");
        fclose(fc);
        fclose(fj);
        const void *b1[1] = {csv}, *b2[1] = {json};
        snprintf(path, sizeof path, "%s/metrics.csv", out_dir);
        int wrc = af_write_file_atomic(path, b1, &csv_n, 1);
        snprintf(buf, sizeof buf, "%s/metrics.json", out_dir);
        if (!wrc)
            wrc = af_write_file_atomic(buf, b2, &json_n, 1);
        free(csv);
        free(json);
        /* report.html: loss and accuracy curves, the final confusion matrix */
        double ex[MAX_EPOCHS], l1[MAX_EPOCHS], l2[MAX_EPOCHS], a1[MAX_EPOCHS], a2[MAX_EPOCHS];
        for (int i = 0; i < res->n_epochs; i++) {
            ex[i] = res->rows[i].epoch;
            l1[i] = res->rows[i].loss;
            l2[i] = res->rows[i].test_loss;
            a1[i] = res->rows[i].accuracy;
            a2[i] = res->rows[i].test_accuracy;
        }
        report_chart ch[2] = {
            {.title = "Loss", .x_label = "epoch", .y_label = "cross-entropy", .n = res->n_epochs,
             .x = ex, .n_series = 2, .names = {"train", "test"}, .y = {l1, l2}},
            {.title = "Accuracy", .x_label = "epoch", .y_label = "accuracy", .n = res->n_epochs,
             .x = ex, .n_series = 2, .names = {"train", "test"}, .y = {a1, a2}},
        };
        char s_mom[32], s_thr[16];
        snprintf(s_mom, sizeof s_mom, "%g", c->momentum);
        snprintf(s_thr, sizeof s_thr, "%d", c->threads);
        const char *rk[] = {"model", "dataset", "optimizer", "lr", "momentum", "batch", "epochs", "threads", "seed", "test accuracy"};
        const char *rv[] = {m->name, tr->schema.name, c->opt, s_lr, s_mom, s_b, s_ep, s_thr, s_seed, s_acc};
        snprintf(path, sizeof path, "%s/report.html", out_dir);
        if (!wrc)
            wrc = report_write_html(path, "Artificien training run", rk, rv, 10, ch, 2, &res->ev, &te->schema);
        if (wrc) {
            rc = cli_fail(cmd, "%s", af_errmsg());
            goto done;
        }
    }
done:
    train_free(t);
    nn_model_free(m);
    return rc;
}

static int load_data(const char *cmd, const char *where, size_t limit, data_dataset **tr,
                     data_dataset **te)
{
    *tr = *te = NULL;
    if (data_load_fashion_mnist_u8(where, 1, 0.2860f, 0.3530f, limit, tr) ||
        data_load_fashion_mnist_u8(where, 0, 0.2860f, 0.3530f, 0, te)) {
        data_dataset_free(*tr);
        *tr = NULL;
        return cli_fail(cmd, "%s", af_errmsg());
    }
    return 0;
}

int cmd_train(int argc, char **argv)
{
    const char *data = "fashion-mnist", *out = NULL, *spec = NULL, *opt = "adam";
    int epochs = 5, batch = 100, threads = 1, json = 0, nesterov = 0, quiet = 0, limit = 0, max_steps = 0;
    const char *schedule = "constant";
    double lr = NAN, momentum = NAN, wd = 0.0;
    uint64_t seed = 1;
    const arg_opt opts[] = {
        {"model", ARG_STR, &spec, "model spec JSON (default: models/fashion_cnn.json)"},
        {"data", ARG_STR, &data, "dataset: fashion-mnist or a folder of IDX files"},
        {"epochs", ARG_INT, &epochs, "epochs (default 5)"},
        {"batch", ARG_INT, &batch, "mini-batch size (default 100)"},
        {"opt", ARG_STR, &opt, "optimizer: adam or sgd (default adam)"},
        {"lr", ARG_FLOAT, &lr, "learning rate (default 0.01)"},
        {"momentum", ARG_FLOAT, &momentum, "SGD momentum (default 0.9 for sgd)"},
        {"nesterov", ARG_FLAG, &nesterov, "SGD with Nesterov momentum"},
        {"weight-decay", ARG_FLOAT, &wd, "L2 weight decay (default 0)"},
        {"lr-schedule", ARG_STR, &schedule, "constant or cosine (decay to 0 over the epochs)"},
        {"threads", ARG_INT, &threads, "threads (default 1)"},
        {"seed", ARG_U64, &seed, "random seed for init and shuffling (default 1)"},
        {"out", ARG_STR, &out, "RUN_DIR for model.safetensors, metrics.csv, metrics.json"},
        {"limit", ARG_INT, &limit, "use only the first N training samples"},
        {"max-steps", ARG_INT, &max_steps, "stop each epoch after N steps"},
        {"quiet", ARG_FLAG, &quiet, "no progress output"},
        {"json", ARG_FLAG, &json, "print a JSON summary as the last line of stdout"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("train", "[options]", opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (threads < 1 || threads > 64)
        return cli_fail("train", "--threads must be in [1, 64], got %d", threads);
    if (limit < 0 || max_steps < 0)
        return cli_fail("train", "--limit and --max-steps must be >= 0");
    int is_sgd = strcmp(opt, "sgd") == 0, cosine = strcmp(schedule, "cosine") == 0;
    if (!cosine && strcmp(schedule, "constant") != 0)
        return cli_fail("train", "--lr-schedule must be constant or cosine, got '%s'", schedule);
    run_cfg c = {.spec = spec ? spec : cli_default_spec(), .epochs = epochs, .batch = batch,
                 .threads = threads, .opt = opt, .lr = isnan(lr) ? 0.01 : lr,
                 .momentum = isnan(momentum) ? (is_sgd ? 0.9 : 0.0) : momentum, .wd = wd,
                 .nesterov = nesterov, .seed = seed, .max_steps = max_steps, .cosine = cosine,
                 .quiet = quiet};
    data_dataset *tr, *te;
    if (load_data("train", data, (size_t)limit, &tr, &te))
        return 1;
    run_result *res = calloc(1, sizeof *res);
    if (!res) {
        data_dataset_free(tr);
        data_dataset_free(te);
        return cli_fail("train", "out of memory");
    }
    int rc = run_train("train", &c, tr, te, out, res);
    if (!rc) {
        if (!quiet || !json) {
            printf("\ntest set evaluation after %d epochs:\n", res->n_epochs);
            cli_print_eval(stdout, &res->ev, &te->schema);
            if (out)
                printf("\nwrote %s/model.safetensors, metrics.csv, metrics.json, report.html\n", out);
        }
        if (json) {
            printf("{\"test_accuracy\": %.6f, \"test_loss\": %.6f, \"epochs\": [", res->ev.accuracy,
                   res->ev.loss);
            for (int i = 0; i < res->n_epochs; i++) {
                const epoch_row *e = &res->rows[i];
                printf("%s{\"epoch\": %d, \"loss\": %.6f, \"accuracy\": %.6f, \"test_accuracy\": %.6f, "
                       "\"test_loss\": %.6f, \"seconds\": %.4f, \"images_per_sec\": %.1f}",
                       i ? ", " : "", e->epoch, e->loss, e->accuracy, e->test_accuracy, e->test_loss,
                       e->seconds, e->ips);
            }
            printf("], \"params\": %zu, \"threads\": %d, \"batch\": %d", res->params, threads, batch);
            if (out)
                printf(", \"model\": \"%s/model.safetensors\"", out);
            else
                printf(", \"model\": null");
            printf("}\n");
        }
    }
    free(res);
    data_dataset_free(tr);
    data_dataset_free(te);
    return rc;
}

/* Splits "a,b,c" into at most max items; returns the count or -1 on an empty item. */
static int split_list(char *s, char **items, int max)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (n >= max || !*tok)
            return -1;
        items[n++] = tok;
    }
    return n;
}

typedef struct sweep_row {
    run_cfg c;
    double acc, loss, seconds;
    char name[32], lr[32], mom[32], batch[16], epochs[16];
} sweep_row;

static int by_acc(const void *a, const void *b)
{
    const sweep_row *x = a, *y = b;
    return x->acc < y->acc ? 1 : x->acc > y->acc ? -1 : strcmp(x->name, y->name);
}

int cmd_sweep(int argc, char **argv)
{
    const char *data = "fashion-mnist", *out = NULL, *spec = NULL;
    const char *lrs = "0.01", *batches = "100", *epochs_l = "1", *opts_l = "adam", *moms = NULL;
    int threads = 1, json = 0, limit = 0, max_steps = 0;
    uint64_t seed = 1;
    const arg_opt opts[] = {
        {"model", ARG_STR, &spec, "model spec JSON (default: models/fashion_cnn.json)"},
        {"data", ARG_STR, &data, "dataset: fashion-mnist or a folder of IDX files"},
        {"lr", ARG_STR, &lrs, "learning rates, comma-separated (default 0.01)"},
        {"batch", ARG_STR, &batches, "batch sizes, comma-separated (default 100)"},
        {"epochs", ARG_STR, &epochs_l, "epoch counts, comma-separated (default 1)"},
        {"opt", ARG_STR, &opts_l, "optimizers, comma-separated: adam,sgd (default adam)"},
        {"momentum", ARG_STR, &moms, "SGD momenta, comma-separated (default 0.9; 0 for adam)"},
        {"threads", ARG_INT, &threads, "threads per run (default 1)"},
        {"seed", ARG_U64, &seed, "random seed (default 1)"},
        {"out", ARG_STR, &out, "folder: one RUN_DIR per run plus sweep.csv and sweep.json"},
        {"limit", ARG_INT, &limit, "use only the first N training samples"},
        {"max-steps", ARG_INT, &max_steps, "stop each epoch after N steps"},
        {"json", ARG_FLAG, &json, "print a JSON summary as the last line of stdout"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("sweep", "--lr A,B --batch X,Y … [options]", opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (threads < 1 || threads > 64 || limit < 0 || max_steps < 0)
        return cli_fail("sweep", "--threads must be in [1, 64]; --limit, --max-steps >= 0");
    char lb[512], bb[512], eb[512], ob[512], mb[512];
    char *L[64], *B[64], *E[64], *O[8], *M[64];
    snprintf(lb, sizeof lb, "%s", lrs);
    snprintf(bb, sizeof bb, "%s", batches);
    snprintf(eb, sizeof eb, "%s", epochs_l);
    snprintf(ob, sizeof ob, "%s", opts_l);
    snprintf(mb, sizeof mb, "%s", moms ? moms : "");
    int nl = split_list(lb, L, 64), nb = split_list(bb, B, 64), ne = split_list(eb, E, 64),
        no = split_list(ob, O, 8), nm = moms ? split_list(mb, M, 64) : 0;
    if (nl <= 0 || nb <= 0 || ne <= 0 || no <= 0 || nm < 0)
        return cli_fail("sweep", "each list must be non-empty comma-separated values (at most 64)");
    int total = nl * nb * ne * no * (nm ? nm : 1);
    if (total > 1000)
        return cli_fail("sweep", "%d runs is too many (at most 1000)", total);
    sweep_row *rows = calloc((size_t)total, sizeof *rows);
    run_result *res = calloc(1, sizeof *res);
    if (!rows || !res) {
        free(rows);
        free(res);
        return cli_fail("sweep", "out of memory");
    }
    int n = 0, rc = 0;
    for (int a = 0; a < nl; a++)
        for (int b = 0; b < nb; b++)
            for (int e = 0; e < ne; e++)
                for (int o = 0; o < no; o++)
                    for (int mm = 0; mm < (nm ? nm : 1); mm++) {
                        sweep_row *s = &rows[n++];
                        char *end;
                        double lr = strtod(L[a], &end);
                        if (*end || !(lr > 0)) {
                            rc = cli_fail("sweep", "--lr: '%s' is not a positive number", L[a]);
                            goto out;
                        }
                        long bt = strtol(B[b], &end, 10);
                        if (*end || bt < 1 || bt > 65536) {
                            rc = cli_fail("sweep", "--batch: '%s' is not in [1, 65536]", B[b]);
                            goto out;
                        }
                        long ep = strtol(E[e], &end, 10);
                        if (*end || ep < 1 || ep > MAX_EPOCHS) {
                            rc = cli_fail("sweep", "--epochs: '%s' is not in [1, %d]", E[e], MAX_EPOCHS);
                            goto out;
                        }
                        nn_opt_kind kind;
                        if (nn_optim_parse_kind(O[o], &kind)) {
                            rc = cli_fail("sweep", "--opt: %s", af_errmsg());
                            goto out;
                        }
                        double mom = kind == NN_OPT_SGD ? 0.9 : 0.0;
                        if (nm) {
                            mom = strtod(M[mm], &end);
                            if (*end || mom < 0 || mom >= 1) {
                                rc = cli_fail("sweep", "--momentum: '%s' is not in [0, 1)", M[mm]);
                                goto out;
                            }
                            if (kind == NN_OPT_ADAM)
                                mom = 0.0;
                        }
                        snprintf(s->name, sizeof s->name, "run%d", n);
                        s->c = (run_cfg){.spec = spec ? spec : cli_default_spec(), .epochs = (int)ep,
                                         .batch = (int)bt, .threads = threads, .opt = O[o], .lr = lr,
                                         .momentum = mom, .seed = seed, .max_steps = max_steps,
                                         .quiet = 1, .run_name = s->name};
                    }
    data_dataset *tr, *te;
    if (load_data("sweep", data, (size_t)limit, &tr, &te)) {
        rc = 1;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        sweep_row *s = &rows[i];
        char dir[4096];
        if (out)
            snprintf(dir, sizeof dir, "%s/%s", out, s->name);
        fprintf(stderr, "sweep %s (%d/%d): opt=%s lr=%g batch=%d epochs=%d momentum=%g\n", s->name,
                i + 1, n, s->c.opt, s->c.lr, s->c.batch, s->c.epochs, s->c.momentum);
        if ((rc = run_train("sweep", &s->c, tr, te, out ? dir : NULL, res)))
            break;
        s->acc = res->ev.accuracy;
        s->loss = res->ev.loss;
        s->seconds = res->seconds;
        fprintf(stderr, "sweep %s: test accuracy %.4f, loss %.4f, %.1fs\n", s->name, s->acc, s->loss, s->seconds);
    }
    data_dataset_free(tr);
    data_dataset_free(te);
    if (rc)
        goto out;
    qsort(rows, (size_t)n, sizeof *rows, by_acc);
    char *csv = NULL;
    size_t csv_n = 0;
    FILE *fc = open_memstream(&csv, &csv_n);
    if (!fc) {
        rc = cli_fail("sweep", "out of memory");
        goto out;
    }
    fprintf(fc, "rank,run,optimizer,lr,batch,epochs,momentum,test_accuracy,test_loss,seconds\n");
    printf("%-5s %-7s %-5s %-9s %-6s %-6s %-8s %-9s %-9s %-8s\n", "rank", "run", "opt", "lr", "batch",
           "epochs", "momentum", "accuracy", "loss", "seconds");
    for (int i = 0; i < n; i++) {
        const sweep_row *s = &rows[i];
        fprintf(fc, "%d,%s,%s,%g,%d,%d,%g,%.6f,%.6f,%.3f\n", i + 1, s->name, s->c.opt, s->c.lr,
                s->c.batch, s->c.epochs, s->c.momentum, s->acc, s->loss, s->seconds);
        printf("%-5d %-7s %-5s %-9g %-6d %-6d %-8g %-9.4f %-9.4f %-8.2f\n", i + 1, s->name, s->c.opt,
               s->c.lr, s->c.batch, s->c.epochs, s->c.momentum, s->acc, s->loss, s->seconds);
    }
    fclose(fc);
    if (out) {
        char path[4096];
        snprintf(path, sizeof path, "%s/sweep.csv", out);
        const void *b1[1] = {csv};
        if (af_write_file_atomic(path, b1, &csv_n, 1))
            rc = cli_fail("sweep", "%s", af_errmsg());
    }
    free(csv);
    if (!rc && json) {
        printf("{\"runs\": [");
        for (int i = 0; i < n; i++)
            printf("%s{\"run\": \"%s\", \"optimizer\": \"%s\", \"lr\": %g, \"batch\": %d, \"epochs\": %d, "
                   "\"momentum\": %g, \"test_accuracy\": %.6f, \"test_loss\": %.6f, \"seconds\": %.3f}",
                   i ? ", " : "", rows[i].name, rows[i].c.opt, rows[i].c.lr, rows[i].c.batch,
                   rows[i].c.epochs, rows[i].c.momentum, rows[i].acc, rows[i].loss, rows[i].seconds);
        printf("], \"best\": \"%s\"}\n", rows[0].name);
    }
out:
    free(rows);
    free(res);
    return rc;
}
