/* artificien/client.h — the device library: check in with an Artificien coordinator, train
 * the owner's model on data that never leaves the device, send back only the weight update.
 *
 * An app links libartificien-client.a (+ -lcurl -lcjson -lsodium -lz -lblis -lm -pthread). The library
 * speaks the HTTP API of docs/api.md with libcurl and trains with Artificien's engine; it
 * never uses SQLite or server code, never prints and never exits: every fallible call returns
 * 0 or a negative ARTIFICIEN_E* code and leaves a message (artificien_errmsg).
 *
 * Worked example — an app holding 3,000 labelled 28×28 images, 300 of them held out for
 * federated evaluation:
 *
 *   #include <artificien/client.h>
 *
 *   static int good_time(void *user) { return charging() && idle() && unmetered(); }
 *
 *   artificien_data data = {
 *       .name = "fashion-mnist", .channels = 1, .height = 28, .width = 28, .classes = 10,
 *       .x = pixels, .y = labels, .n = 3000,   // x: 3000×784 normalised floats, y: labels
 *       .n_heldout = 300,                      // the last 300 samples: evaluation only
 *   };
 *   artificien_config cfg;
 *   artificien_config_init(&cfg);
 *   cfg.server = "https://fl.example.com";
 *   cfg.enroll_secret = secret;               // used once; the token is kept in token_file
 *   cfg.token_file = "/data/app/artificien.token";
 *   cfg.data = &data;
 *   cfg.good_time = good_time;
 *   cfg.caps.max_seconds = 120;               // refuse or abandon longer local training
 *
 *   artificien_client *c;
 *   if (artificien_client_create(&cfg, &c) < 0) { log("%s", artificien_errmsg(NULL)); return; }
 *   artificien_result r;
 *   if (artificien_client_run_once(c, &r) < 0)          // one check-in cycle
 *       log("%s", artificien_errmsg(c));
 *   else if (r.action == ARTIFICIEN_TRAINED)
 *       log("round %d: update of %zu samples accepted", r.round, r.train_samples);
 *   schedule_wakeup(r.retry_after);                     // seconds
 *   artificien_client_free(c);
 *
 * Or on a background thread: artificien_client_run(c, NULL) until artificien_client_stop(c)
 * (which is safe to call from a signal handler or another thread).
 *
 * Secure aggregation (a project whose plan has "secagg": true) needs nothing from the app:
 * the client makes an Ed25519 identity key pair at create (kept in memory only, sent with
 * every check-in), and artificien_client_run_once runs the whole round — advertise keys,
 * share keys, masked input, unmask — so the coordinator only ever sees the sum of at least
 * t devices' updates (docs/client.md "Secure aggregation"). A "label_stats" project asks for
 * the device's label histogram instead of training (ARTIFICIEN_COUNTED).
 *
 * Threads: one client is used by one thread at a time (artificien_client_stop excepted).
 * Memory: the data arrays stay the app's and must outlive the client; nothing is copied.
 * Images can stay as bytes: set x8 (the pixels) and lut (what each byte means) instead of x,
 * a quarter of the memory for bit for bit the same training (artificien_data below).
 */
#ifndef ARTIFICIEN_CLIENT_H
#define ARTIFICIEN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes (the same values as the engine's AF_E* codes). */
#define ARTIFICIEN_OK 0
#define ARTIFICIEN_EINVAL (-1)    /* bad argument or configuration */
#define ARTIFICIEN_ENOMEM (-2)    /* out of memory */
#define ARTIFICIEN_EIO (-3)       /* file read/write failed (token file, data files) */
#define ARTIFICIEN_EFORMAT (-4)   /* the server sent something malformed */
#define ARTIFICIEN_ESHAPE (-5)    /* a checkpoint that does not fit the task's model */
#define ARTIFICIEN_ENOTFOUND (-6) /* a file, or a server path (HTTP 404) */
#define ARTIFICIEN_ERANGE (-7)    /* a value out of range */
#define ARTIFICIEN_ESTATE (-8)    /* not valid now */
#define ARTIFICIEN_EAUTH (-9)     /* no token and no enrolment secret, or the server said 401/403 */
#define ARTIFICIEN_ENET (-10)     /* network failure, timeout, HTTP 5xx */

/* The device's local data: a schema and samples in the app's memory (not copied).
 * Samples 0..n-1 are held one of two ways, exactly one of x and x8 set:
 *   x    rows of channels·height·width floats, normalised the way the project expects
 *        (Fashion-MNIST: (pixel/255 − 0.2860)/0.3530);
 *   x8   rows of channels·height·width bytes (an 8-bit image as stored), with lut the 256
 *        floats the bytes stand for: byte p is the normalised value lut[p]. A quarter of the
 *        memory of x; training reads lut[x8[k]] as it gathers a batch, so the numbers (the
 *        update, the losses) are bit for bit those of x filled with lut[x8[k]]. lut is
 *        copied at artificien_client_create; x8 is read in place.
 * Labels are y[i] < classes. Training uses train[0..n_train) and evaluation
 * heldout[0..n_heldout) (indices into the samples); when train is NULL the first
 * n − n_heldout samples train, and when heldout is NULL the last n_heldout samples are held
 * out. Fields added later go last, so an app that fills the struct by name or in order keeps
 * compiling. */
typedef struct artificien_data {
    const char *name;        /* dataset schema name the projects target: "fashion-mnist" */
    int tabular;             /* 0: image (channels, height, width); 1: named numeric attributes
                                (channels = height = 1, width = attributes) */
    int channels, height, width;
    int classes;
    const float *x;
    const uint8_t *y;
    size_t n;
    const uint32_t *train;
    size_t n_train;
    const uint32_t *heldout;
    size_t n_heldout;
    const uint8_t *x8;       /* instead of x: n × channels·height·width bytes */
    const float *lut;        /* with x8 (required): 256 floats, the value of each byte */
} artificien_data;

/* Files instead of arrays: loads the training split of an IDX dataset of the MNIST family
 * (train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] in folder `where`, or
 * "fashion-mnist" for the installed one) as 8-bit samples: x8 holds the pixels as read, lut
 * the Fashion-MNIST normalisation above, and x is NULL (60,000 28×28 images take 47 MB, not
 * 188). The last heldout_frac (in [0, 1)) of it is held out. The schema is Fashion-MNIST's
 * (name "fashion-mnist", 10 classes): set (*out)->name for another dataset of the family.
 * *out owns its arrays: free with artificien_data_free (only for data from this function).
 * API note: before 8-bit storage this function filled x with floats; an app that read
 * d->x[k] now reads d->lut[d->x8[k]], the same float.
 * 0 or ARTIFICIEN_ENOTFOUND/EIO/EFORMAT/ERANGE/ENOMEM with a message naming the file. */
int artificien_data_load(const char *where, double heldout_frac, artificien_data **out);
void artificien_data_free(artificien_data *d);

/* What the device accepts. A task beyond any cap is refused before anything is downloaded
 * or trained (ARTIFICIEN_REFUSED with reason naming the cap); 0 means the default. */
typedef struct artificien_caps {
    size_t max_params;       /* model parameters (default 10,000,000) */
    int max_epochs;          /* local epochs per task (default 20) */
    double max_seconds;      /* local training wall time (default 3600): refused when the
                                estimate is over, abandoned when the clock is */
    size_t max_memory;       /* bytes for model, gradients, optimizer state and activations
                                (default 1 GiB) */
} artificien_caps;

typedef struct artificien_config {
    const char *server;          /* "http://127.0.0.1:8080" (required) */
    const char *token;           /* device token, or NULL */
    const char *enroll_secret;   /* enrols when there is no token (NULL: token required) */
    const char *token_file;      /* NULL, or a file keeping the token: read at create when
                                    token is NULL, written (0600, atomically) after enrolling */
    void (*on_token)(void *user, const char *token); /* called with a new token (may be NULL) */
    int (*good_time)(void *user); /* consulted before each check-in: non-zero = charging, idle
                                     and unmetered, go ahead (NULL: always) */
    void *user;                  /* passed to the hooks */
    const artificien_data *data; /* required */
    artificien_caps caps;
    int threads;                 /* training threads (default 1) */
    uint64_t seed;               /* local shuffling: reproducible per (seed, project, round) */
    double timeout_s;            /* per HTTP request (default 60) */
    double backoff_base_s;       /* first delay after an error (default 1) */
    double backoff_max_s;        /* longest delay after errors (default 300) */
    double not_now_s;            /* how long to wait when good_time says no (default 60) */
    /* The device's own privacy budget (docs/privacy.md §7). With ledger_path set, a task of a
     * DP project (plan.dp_clip > 0, with or without secure aggregation) is charged (q = 1,
     * z = plan.dp_noise, 1 step) in that file before its update or masked input is sent,
     * a label_stats task one step (q = 1, z = its stats_noise) before its counts are sent;
     * either is refused (ARTIFICIEN_REFUSED, reason "privacy_budget", nothing trained or
     * sent) when the project's ε at plan.dp_delta would pass epsilon_limit. A task without
     * DP is never charged. NULL: no ledger. */
    const char *ledger_path;
    double epsilon_limit;        /* per project, > 0 when ledger_path is set */
} artificien_config;

/* Fills cfg with the defaults (zeroes where "0 = default"). */
void artificien_config_init(artificien_config *cfg);

typedef struct artificien_client artificien_client;

/* Creates a client: validates cfg (a message names the field), reads the token file if any,
 * makes the device's identity key pair for secure aggregation (memory only: a new client is
 * a new identity). Nothing is sent yet. 0 or ARTIFICIEN_EINVAL/ENOMEM/EIO/ESTATE; *out is
 * the caller's (artificien_client_free, which wipes the secret key). On failure the message
 * is artificien_errmsg(NULL). */
int artificien_client_create(const artificien_config *cfg, artificien_client **out);
void artificien_client_free(artificien_client *c);

/* What one cycle did. */
typedef enum artificien_action {
    ARTIFICIEN_NOT_NOW = 0,    /* good_time said no: nothing was sent */
    ARTIFICIEN_WAIT,           /* the coordinator has nothing for this device now */
    ARTIFICIEN_TRAINED,        /* trained, and the update was accepted (on the server's disk) */
    ARTIFICIEN_REFUSED,        /* the task was beyond the caps or this device's data: not run */
    ARTIFICIEN_REJECTED,       /* the coordinator refused the update (late, duplicate, …) */
    ARTIFICIEN_ABANDONED,      /* training ran past max_seconds, or stop was requested */
    ARTIFICIEN_COUNTED,        /* label_stats: the label counts are in the secure sum */
} artificien_action;

typedef struct artificien_result {
    artificien_action action;
    double retry_after;        /* seconds until the next check-in is worth it */
    int project, round, attempt;
    long version;              /* checkpoint version trained from */
    size_t train_samples;
    long steps;
    double train_loss;         /* mean training loss of the last local epoch */
    double train_seconds;
    size_t eval_samples;       /* federated evaluation of the received model (0 if none) */
    long eval_correct;
    double eval_loss;
    double update_norm;        /* L2 norm of the update (local − received) before any DP
                                  clipping */
    size_t bytes_down, bytes_up; /* bodies exchanged this cycle, secure aggregation included */
    int cached;                /* the checkpoint came from the cache (304 or same version) */
    int reports;               /* the round's report count in the coordinator's ack; with
                                  secure aggregation the devices whose input is in the sum */
    long http_status;          /* ARTIFICIEN_REJECTED: the status (409, 400, …) */
    char reason[64];           /* REFUSED: the cap or check ("max_params", "privacy_budget",
                                  "secagg": the task's vector layout does not match this
                                  device's model); REJECTED: the server's code ("late",
                                  "duplicate", "wrong_phase", "bad_signature", …), or
                                  "secagg_deadline" (a secure-aggregation phase did not close
                                  in time) or "secagg" (the coordinator's key or survivor
                                  list failed this device's checks); ABANDONED: "stopped",
                                  "max_seconds"; WAIT: why, as the coordinator says
                                  ("no_task", "round_full", "conditions", "caps", or
                                  "project_done": every project this device could join is
                                  done); "" from an older coordinator */
    char message[256];         /* a readable sentence for REFUSED / REJECTED / ABANDONED */
} artificien_result;

/* One cycle: enrol if needed; consult good_time; check in; if given a task, check it against
 * the caps and the data, download the checkpoint (cached by URL with If-None-Match), evaluate
 * it on the held-out data, train with the plan (epochs, batch, optimizer, lr; FedProx's
 * proximal term when the strategy is fedprox), upload the update (delta = local − received,
 * safetensors with the metadata of docs/api.md; with DP clipped to the task's dp_clip, and
 * with adaptive clipping its "unclipped" bit) and return what happened in *r.
 * An update whose upload failed is kept and re-sent first by the next cycle (a re-send
 * answered "duplicate" means the first one arrived: ARTIFICIEN_TRAINED).
 * A task with secure aggregation runs the round's phases in this call instead of the
 * upload (it lasts until the round's unmask phase, at most the plan's round_deadline_s):
 * ARTIFICIEN_TRAINED or ARTIFICIEN_COUNTED once the device's reveals are accepted,
 * ARTIFICIEN_REJECTED when the coordinator drops it from the round. Nothing of such a round
 * is kept for a re-send: a network failure loses this device's part (the round goes on
 * without it while t devices remain).
 * Returns 0 (see r->action), or a negative code with artificien_errmsg(c): ARTIFICIEN_ENET
 * (no server, timeout, 5xx: retry later), ARTIFICIEN_EAUTH (token refused; with an
 * enrolment secret the next cycle enrols again), ARTIFICIEN_EFORMAT (a malformed answer). */
int artificien_client_run_once(artificien_client *c, artificien_result *r);

/* Called after every cycle of artificien_client_run: rc is the cycle's return code (r is
 * filled when rc == 0), delay the seconds the loop will now sleep. Return non-zero to stop. */
typedef int (*artificien_on_cycle)(void *user, int rc, const artificien_result *r, double delay);

typedef struct artificien_run_opts {
    long max_tasks;            /* stop after this many accepted updates or label counts
                                  (0: no limit) */
    int max_failures;          /* stop after this many consecutive errors (0: never) */
    artificien_on_cycle on_cycle;
    void *user;
} artificien_run_opts;

/* Cycles until artificien_client_stop, opts->max_tasks, or opts->max_failures: sleeps
 * r.retry_after after a cycle (the server's pace steering), not_now_s when good_time said no,
 * and artificien_backoff() after an error. opts may be NULL. Returns 0 when stopped or done,
 * the last error code after max_failures, or ARTIFICIEN_EAUTH when the token is refused and
 * there is no enrolment secret. */
int artificien_client_run(artificien_client *c, const artificien_run_opts *opts);

/* Asks artificien_client_run (and a transfer or training in progress) to stop soon.
 * Async-signal-safe; callable from any thread. */
void artificien_client_stop(artificien_client *c);

/* The device token in use ("" before enrolment); owned by c. */
const char *artificien_client_token(const artificien_client *c);

/* The message of c's last error, or of this thread's last error when c is NULL (after a
 * failed create). Owned by the library; valid until the next call on c. */
const char *artificien_errmsg(const artificien_client *c);
/* Static name of a code ("network failure"). */
const char *artificien_strerror(int code);

/* The delay after `failures` consecutive errors (failures >= 1): base·2^(failures−1), capped
 * at max, times a jitter factor 0.8 + 0.4·u for u in [0, 1) so a fleet that failed together
 * does not retry together. failures <= 0 gives 0. */
double artificien_backoff(int failures, double base_s, double max_s, double u);

#ifdef __cplusplus
}
#endif

#endif
