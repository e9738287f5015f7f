/* cmd_worker.c — `artificien worker`: one device process. It holds shard I of N of a
 * dataset's training split (the partition of `artificien sim`: same spec, same seed, so
 * device I here is device I there) and runs the device library against a coordinator until
 * SIGTERM/SIGINT, --rounds-max accepted updates, --idle-exit seconds without a task, or the
 * coordinator saying that every project it could join is done (after it has trained once).
 * Layer `cli`: prints one line per task on stdout and errors on stderr; exits 0 when stopped.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artificien/client.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "data/partition.h"

static artificien_client *volatile g_client;
static volatile sig_atomic_t g_stopped;

/* SIGTERM/SIGINT: a clean stop, also while the shard is still loading */
static void on_signal(int sig)
{
    (void)sig;
    g_stopped = 1;
    if (g_client)
        artificien_client_stop(g_client);
}

/* The device's shard, compacted: its training samples first, then its held-out ones, as the
 * image file's bytes with the loader's table (lut[p] = the normalised float of byte p). */
typedef struct shard {
    uint8_t *x8;
    float lut[256];
    uint8_t *y;
    size_t n, n_train, n_heldout;
    int h, w;
} shard;

static void shard_free(shard *s)
{
    af_free(s->x8);
    af_free(s->y);
}

/* Loads the split as bytes (data_load_fashion_mnist_u8: the engine's normalisation table, so
 * device I here gathers the floats device I of `artificien sim` gathers), partitions its
 * labels and copies device `dev`'s rows out; the whole split is held only while loading
 * (~50 MB peak, then the shard: 784 bytes an image, not 3,136 as floats).
 * max_train > 0 keeps only the first max_train training samples of the shard (and held-out
 * samples in the --heldout proportion). */
static int load_shard(const char *where, const char *spec, size_t dev, size_t n_dev,
                      uint64_t seed, double heldout, size_t max_train, shard *s)
{
    memset(s, 0, sizeof *s);
    data_dataset *ds = NULL;
    data_partition *p = NULL;
    int rc = data_load_fashion_mnist_u8(where, 1, 0.2860f, 0.3530f, 0, &ds);
    if (rc)
        goto done;
    data_partition_opts po;
    data_partition_opts_default(&po);
    po.heldout_frac = heldout;
    if ((rc = data_partition_create(ds->y, ds->n, 10, n_dev, spec, seed, &po, &p)))
        goto done;
    size_t nt, nh;
    const uint32_t *tr = data_partition_train(p, dev, &nt);
    const uint32_t *ho = data_partition_heldout(p, dev, &nh);
    if (max_train > 0 && nt > max_train) {
        size_t keep = (size_t)llround((double)max_train * heldout / (1.0 - heldout));
        nt = max_train;
        nh = keep < nh ? keep : nh;
    }
    size_t na = nt + nh, ss = ds->sample_size;
    s->h = ds->schema.h;
    s->w = ds->schema.w;
    s->x8 = af_alloc(na * ss);
    s->y = af_alloc(na);
    if (!s->x8 || !s->y) {
        rc = af_seterr(AF_ENOMEM, "shard: out of memory for %zu samples", na);
        goto done;
    }
    memcpy(s->lut, ds->lut, sizeof s->lut);
    for (size_t i = 0; i < na; i++) {
        uint32_t k = i < nt ? tr[i] : ho[i - nt];
        memcpy(s->x8 + i * ss, ds->x8 + (size_t)k * ss, ss);
        s->y[i] = ds->y[k];
    }
    s->n = na;
    s->n_train = nt;
    s->n_heldout = nh;
done:
    if (rc)
        shard_free(s);
    data_partition_free(p);
    data_dataset_free(ds);
    return rc;
}

/* Resident memory now (VmRSS) in MiB; 0 if /proc is not there. */
static double rss_now_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lf kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb / 1024.0;
}

typedef struct worker_ctx {
    const char *name;
    int quiet;
    int done_exit;             /* exit when told project_done (after a task) */
    double idle_exit, last_task;
    long tasks;
} worker_ctx;

static int on_cycle(void *user, int rc, const artificien_result *r, double delay)
{
    worker_ctx *w = user;
    double now = af_now();
    if (rc < 0) {
        fprintf(stderr, "%s: %s; retrying in %.1f s\n", w->name, artificien_errmsg(g_client), delay);
        return 0;
    }
    switch (r->action) {
    case ARTIFICIEN_TRAINED:
        w->tasks++;
        w->last_task = now;
        if (!w->quiet) {
            printf("%s: project %d round %d attempt %d: trained %zu samples (%ld steps) in %.1f s "
                   "(loss %.4f)", w->name, r->project, r->round, r->attempt, r->train_samples,
                   r->steps, r->train_seconds, r->train_loss);
            if (r->eval_samples)
                printf(", received model %.4f on %zu held out", (double)r->eval_correct / (double)r->eval_samples,
                       r->eval_samples);
            printf(", update accepted (%d reports), rss %.0f MiB (peak %.0f)\n", r->reports,
                   rss_now_mb(), af_peak_rss_mb());
            fflush(stdout);
        }
        break;
    case ARTIFICIEN_COUNTED:
        w->tasks++;
        w->last_task = now;
        if (!w->quiet) {
            printf("%s: project %d round %d: label counts of %zu samples sent through secure "
                   "aggregation\n", w->name, r->project, r->round, r->train_samples);
            fflush(stdout);
        }
        break;
    case ARTIFICIEN_REFUSED:
    case ARTIFICIEN_REJECTED:
    case ARTIFICIEN_ABANDONED:
        w->last_task = now;
        printf("%s: project %d round %d attempt %d: %s (%s): %s\n", w->name, r->project, r->round,
               r->attempt,
               r->action == ARTIFICIEN_REFUSED ? "task refused"
               : r->action == ARTIFICIEN_REJECTED ? "update rejected"
                                                  : "training abandoned",
               r->reason, r->message);
        fflush(stdout);
        break;
    default:
        break;
    }
    /* the project it trained for is done, and no other it could join is running: a worker
     * that has not trained yet keeps waiting (its project may not exist yet) */
    if (w->done_exit && w->tasks > 0 && r->action == ARTIFICIEN_WAIT &&
        strcmp(r->reason, "project_done") == 0) {
        if (!w->quiet)
            printf("%s: every project this device could join is done: exiting\n", w->name);
        return 1;
    }
    if (w->idle_exit > 0 && w->tasks > 0 && now - w->last_task > w->idle_exit) {
        if (!w->quiet)
            printf("%s: no task for %.0f s after %ld: exiting\n", w->name, now - w->last_task, w->tasks);
        return 1;
    }
    return 0;
}

int cmd_worker(int argc, char **argv)
{
    const char *server = NULL, *secret = NULL, *token = NULL, *token_file = NULL;
    const char *data = "fashion-mnist", *partition = "iid", *shard_s = "0/1";
    uint64_t seed = 1;
    int rounds_max = 0, threads = 1, quiet = 0, max_epochs = 0, max_samples = 0, stay = 0;
    double heldout = 0.1, idle_exit = 0, max_seconds = 0, max_memory_mb = 0, timeout = 60;
    double max_params = 0;
    const char *ledger_file = NULL;
    double eps_limit = 0;
    const arg_opt opts[] = {
        {"server", ARG_STR, &server, "coordinator URL, e.g. http://127.0.0.1:8080 (required)"},
        {"enroll", ARG_STR, &secret, "enrolment secret (used when there is no token yet)"},
        {"token", ARG_STR, &token, "device token"},
        {"token-file", ARG_STR, &token_file, "file keeping the device token (read, or written after enrolling)"},
        {"data", ARG_STR, &data, "dataset: fashion-mnist or a folder of IDX files"},
        {"partition", ARG_STR, &partition, "iid, dirichlet:ALPHA, shards:S, labels:L, quantity:BETA (default iid)"},
        {"shard", ARG_STR, &shard_s, "I/N: this device holds shard I of N (default 0/1)"},
        {"seed", ARG_U64, &seed, "partition seed, and local shuffling (default 1)"},
        {"heldout", ARG_FLOAT, &heldout, "held-out share of the shard for federated evaluation (default 0.1)"},
        {"max-samples", ARG_INT, &max_samples, "keep at most this many of the shard's training samples (a smaller device)"},
        {"rounds-max", ARG_INT, &rounds_max, "exit 0 after this many accepted updates (default: no limit)"},
        {"idle-exit", ARG_FLOAT, &idle_exit, "exit 0 after this many seconds without a task, once one was done"},
        {"no-done-exit", ARG_FLAG, &stay, "keep checking in when every project this device could join is done "
                                          "(default: exit 0 then, once a task was done)"},
        {"threads", ARG_INT, &threads, "training threads (default 1)"},
        {"max-params", ARG_FLOAT, &max_params, "cap: model parameters (default 10,000,000)"},
        {"max-epochs", ARG_INT, &max_epochs, "cap: local epochs (default 20)"},
        {"max-seconds", ARG_FLOAT, &max_seconds, "cap: local training seconds (default 3600)"},
        {"max-memory-mb", ARG_FLOAT, &max_memory_mb, "cap: training memory in MiB (default 1024)"},
        {"ledger", ARG_STR, &ledger_file, "privacy ledger file: epsilon spent per DP project (needs --epsilon-limit)"},
        {"epsilon-limit", ARG_FLOAT, &eps_limit, "refuse DP tasks that would take a project's epsilon past this"},
        {"timeout", ARG_FLOAT, &timeout, "seconds per HTTP request (default 60)"},
        {"quiet", ARG_FLAG, &quiet, "print only errors and refusals"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("worker", "--server URL (--enroll SECRET | --token T | --token-file F) --shard I/N [options]",
                             opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (!server) {
        cli_fail("worker", "--server is required");
        return 2;
    }
    if (!secret && !token && !token_file) {
        cli_fail("worker", "--enroll, --token or --token-file is required");
        return 2;
    }
    unsigned long si, sn;
    char tail;
    if (sscanf(shard_s, "%lu/%lu%c", &si, &sn, &tail) != 2 || sn < 1 || si >= sn) {
        cli_fail("worker", "--shard must be I/N with 0 <= I < N, got '%s'", shard_s);
        return 2;
    }
    if (!(heldout >= 0 && heldout < 1)) {
        cli_fail("worker", "--heldout must be in [0, 1), got %g", heldout);
        return 2;
    }
    if (threads < 1 || threads > 64 || rounds_max < 0 || max_epochs < 0 || max_samples < 0 || !(idle_exit >= 0) ||
        !(max_params >= 0) || !(max_seconds >= 0) || !(max_memory_mb >= 0) || !(timeout > 0)) {
        cli_fail("worker", "--threads must be in [1, 64]; the caps, --max-samples, --timeout and --idle-exit >= 0");
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    shard s;
    double t0 = af_now();
    if (load_shard(data, partition, si, sn, seed, heldout, (size_t)max_samples, &s))
        return cli_fail("worker", "%s", af_errmsg());
    char name[64];
    snprintf(name, sizeof name, "worker %lu/%lu", si, sn);
    if (!quiet)
        printf("%s: %zu training and %zu held-out samples (%s, seed %llu) loaded in %.2f s\n", name,
               s.n_train, s.n_heldout, partition, (unsigned long long)seed, af_now() - t0);
    fflush(stdout);
    artificien_data d = {.name = "fashion-mnist", .channels = 1, .height = s.h, .width = s.w,
                         .classes = 10, .x8 = s.x8, .lut = s.lut, .y = s.y, .n = s.n,
                         .n_heldout = s.n_heldout};
    artificien_config cfg;
    artificien_config_init(&cfg);
    cfg.server = server;
    cfg.token = token;
    cfg.enroll_secret = secret;
    cfg.token_file = token_file;
    cfg.data = &d;
    cfg.threads = threads;
    cfg.ledger_path = ledger_file;
    cfg.epsilon_limit = eps_limit;
    cfg.seed = seed ^ ((uint64_t)si << 32);
    cfg.timeout_s = timeout;
    cfg.caps.max_params = (size_t)max_params;
    cfg.caps.max_epochs = max_epochs;
    cfg.caps.max_seconds = max_seconds;
    cfg.caps.max_memory = (size_t)(max_memory_mb * 1048576.0);
    cfg.backoff_max_s = 30; /* a worker on a LAN: retry a restarted coordinator soon */
    artificien_client *c;
    if (artificien_client_create(&cfg, &c)) {
        shard_free(&s);
        return cli_fail("worker", "%s", artificien_errmsg(NULL));
    }
    g_client = c;
    if (g_stopped) /* a signal before g_client was set */
        artificien_client_stop(c);
    worker_ctx w = {.name = name, .quiet = quiet, .done_exit = !stay, .idle_exit = idle_exit,
                    .last_task = af_now()};
    artificien_run_opts ro = {.max_tasks = rounds_max, .on_cycle = on_cycle, .user = &w};
    int rc = artificien_client_run(c, &ro);
    if (rc)
        cli_fail("worker", "%s", artificien_errmsg(c));
    else if (!quiet)
        printf("%s: stopped after %ld accepted updates, peak rss %.0f MiB\n", name, w.tasks, af_peak_rss_mb());
    g_client = NULL;
    artificien_client_free(c);
    shard_free(&s);
    return rc ? 1 : 0;
}
