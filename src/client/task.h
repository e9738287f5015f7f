/* task.h — what a device does with a task, apart from the network: parse the plan and the
 * task (with its secure-aggregation object), check them against the device's caps and data,
 * train locally, evaluate, count labels, and serialise the update (delta = w_local −
 * w_global) as safetensors with the report metadata of docs/api.md.
 *
 * Layer `client`: uses core, nn, data, train, fed and cJSON; no I/O at all, so every piece is
 * unit-testable without a server. Never prints, never exits.
 */
#ifndef AF_CLIENT_TASK_H
#define AF_CLIENT_TASK_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "artificien/client.h"
#include "data/dataset.h"
#include "fed/secwire.h"
#include "nn/model.h"
#include "nn/optim.h"

/* The part of a plan a device needs (docs/api.md; defaults shown there). */
typedef struct client_plan {
    char strategy[32];
    char strategy_opts[256];
    int rounds;
    int local_epochs;
    int batch;
    nn_optim_cfg opt;
    int eval_every;            /* evaluate when round % eval_every == 0; 0 = never */
    double max_update_norm;
    char dataset[64];
    double dp_clip;            /* DP on when > 0: clip the delta to this L2 norm before upload */
    double dp_noise;           /* the coordinator's noise multiplier z (charged to the ledger) */
    double dp_delta;           /* δ the ledger reports ε at */
    double dp_adaptive_quantile; /* > 0: adaptive clipping, every update carries "unclipped" */
    int secagg;                /* plan.secagg: the round is a secure sum (task.secagg) */
    int label_stats;           /* plan.kind "label_stats": count labels, no training */
} client_plan;

/* Parses a plan object. Missing fields take the API's defaults; present fields of the wrong
 * type or range are AF_EINVAL/AF_ERANGE with a message naming "plan.FIELD"; fields a device
 * does not use (devices_per_round, secagg_threshold, …) are ignored. */
int client_plan_parse(const cJSON *plan, client_plan *out);

/* The phases of a secure-aggregation round, in order (task.secagg.deadlines). */
enum { CLIENT_SA_ADVERTISE, CLIENT_SA_SHARE_KEYS, CLIENT_SA_MASKED_INPUT, CLIENT_SA_UNMASK,
       CLIENT_SA_PHASES };

/* A task's "secagg" object (docs/api.md "Secure aggregation"). */
typedef struct client_secagg {
    int on;                    /* the task has one: the round is a secure sum */
    uint32_t id;               /* this device's number in the round, 1..n */
    uint64_t round_id;         /* bound into every signature (a decimal string on the wire) */
    size_t len;                /* words of the vector, as the coordinator computed them */
    char url[512];             /* the phases' base path */
    secwire_params wire;       /* kind, n, t, range, max_samples, clip, noise, adaptive,
                                  count_noise, stats_bound, stats_noise */
    double deadline[CLIENT_SA_PHASES]; /* Unix seconds each phase closes at (nondecreasing) */
} client_secagg;

/* A task as sent by POST /v1/checkin ({"action": "train", "task": {…}}). */
typedef struct client_task {
    int project, round, attempt;
    long version;
    double deadline_at;
    char checkpoint[512];      /* path of the checkpoint to download ("" for label_stats) */
    char report[512];          /* path to POST the update to ("" with secagg: none is sent) */
    char *spec_json;           /* compact JSON, owned (client_task_clear) */
    client_plan plan;
    double dp_clip;            /* S of this round: the task's "dp_clip", else plan.dp_clip */
    client_secagg secagg;
} client_task;

/* Parses the "task" object. 0 or AF_EFORMAT/AF_EINVAL naming "task.FIELD". The optional
 * "secagg" object is checked field by field (AF_EFORMAT naming "task.secagg.FIELD": id in
 * 1..n, n ≤ SECAGG_MAX_DEVICES, n/2 < t ≤ n, round_id a decimal uint64 string, len ≥ 1, url
 * a path, kind "train"/"label_stats" matching plan.kind, range > 0, max_samples in
 * [1, 2^19], clip/noise/count_noise ≥ 0 (with plan.dp_clip > 0: clip > 0, equal to the
 * task's dp_clip, and noise ≥ plan.dp_noise), adaptive a boolean, stats_bound > 0,
 * stats_noise ≥ 0, the four deadlines nondecreasing). A plan with secagg or label_stats
 * needs the object. Whether len fits the model is client_secagg_layout's check. */
int client_task_parse(const cJSON *task, client_task *out);
void client_task_clear(client_task *t);

/* The data as the engine sees it: a dataset view over the app's arrays (nothing copied but
 * the 1 KiB byte table) and resolved train/held-out index lists. idx_owned is the malloc'd
 * block behind any list the app left NULL (client_data_view_clear frees it). */
typedef struct client_data_view {
    data_dataset ds;           /* x or x8, and y, point into the app's arrays (lut is a copy
                                  of the app's table): never data_dataset_free it */
    const uint32_t *train, *heldout;
    size_t n_train, n_heldout;
    uint32_t *idx_owned;
} client_data_view;

/* Checks d (shape, classes, counts, indices < n; exactly one of x and x8, lut with x8 only
 * and finite) and builds the view. 0 or AF_EINVAL naming "data.FIELD". */
int client_data_view_init(const artificien_data *d, client_data_view *v);
void client_data_view_clear(client_data_view *v);

/* Bytes that local training of m with plan p on `threads` threads needs: parameters, the
 * received copy, the update, gradients per thread, optimizer state, activations and scratch
 * per thread for a batch, evaluation workspaces. An estimate (within ~20 % of the real
 * allocations for conv/linear nets), used for the max_memory cap. */
size_t client_task_memory(const nn_model *m, const client_plan *p, int threads);

/* Checks a task before any download: the plan's dataset against the data's schema, the
 * model's input shape and classes against the samples, and the caps (params, epochs, memory;
 * time when flops_per_s > 0: estimate 3·flops_fwd·samples·epochs / flops_per_s). The model
 * must already be built from the task's spec (client_task_build checks max_params first).
 * Returns 0 if the task can run, or 1 with reason ("max_epochs", "max_memory", "max_seconds",
 * "dataset", "shape", "strategy") and a sentence in msg. */
int client_task_check(const artificien_caps *caps, const client_task *t, const nn_model *m,
                      const client_data_view *v, int threads, double flops_per_s, char *reason,
                      size_t reason_cap, char *msg, size_t msg_cap);

/* Builds the task's model with the device's max_params cap. 0, 1 (refused: reason
 * "max_params" or "model", msg says why), or AF_ENOMEM. *out is the caller's. */
int client_task_build(const client_task *t, size_t max_params, nn_model **out, char *reason,
                      size_t reason_cap, char *msg, size_t msg_cap);

/* The vector layout of a secure-aggregation task for model m (secwire_layout_init with the
 * task's parameters, m->n_params and m->n_classes), checked against task.secagg.len.
 * 0, or 1 (refused: reason "secagg", msg says why — the coordinator computed another
 * layout, so nothing may be sent). */
int client_secagg_layout(const client_task *t, const nn_model *m, secwire_layout *L,
                         char *reason, size_t reason_cap, char *msg, size_t msg_cap);

/* The label histogram of v's training samples: counts[c] for c < v->ds.schema.n_classes
 * (zeroed first; labels outside the classes are not counted). */
void client_count_labels(const client_data_view *v, uint32_t *counts);

/* Local training outcome. */
typedef struct client_train_stats {
    size_t samples;
    long steps;
    double loss;               /* mean loss of the last epoch */
    double seconds;
    int abandoned;             /* 1: max_seconds passed or *stop set; the update is partial */
} client_train_stats;

/* Trains m (holding the received weights, also in global[n_params]) for the plan's local
 * epochs on v's training samples, then writes delta[i] = m->params[i] − global[i]. FedProx
 * adds mu·(w − global) to the gradients (mu from plan.strategy_opts). Shuffling is seeded by
 * (seed, round). Stops early (abandoned) after max_seconds (> 0) or when *stop (may be NULL)
 * becomes non-zero. 0, or AF_ENOMEM/AF_ERANGE/AF_EINVAL (bad optimizer or strategy). */
int client_train(nn_model *m, const float *global, const client_plan *p, const client_data_view *v,
                 int round, int threads, uint64_t seed, double max_seconds,
                 volatile sig_atomic_t *stop, float *delta, client_train_stats *st);

/* What goes in the update's __metadata__. */
typedef struct client_report {
    int project, round, attempt;
    long version;
    size_t num_samples;        /* > 0 */
    double loss;
    long steps;
    double tau;                /* FedNova's effective steps (0: not sent) */
    size_t eval_samples;       /* 0: no evaluation fields */
    long eval_correct;
    double eval_loss;
    int k;                     /* classes of the confusion matrix */
    const long *confusion;     /* k×k, [true·k + pred] */
    int has_unclipped;         /* adaptive clipping: send "unclipped" */
    int unclipped;             /* 1: ‖delta‖ ≤ the task's dp_clip before clipping */
} client_report;

/* Serialises delta[m->n_params] under m's tensor names and shapes (F32) with rep's metadata
 * (attempt, num_samples, loss, steps, round, project, version, tau when > 0, unclipped
 * ("1"/"0") when has_unclipped, and eval_samples, eval_correct, eval_loss, eval_confusion
 * as a JSON array of arrays when eval_samples > 0) into a malloc'd
 * buffer (*out, *len; caller frees). 0, AF_EINVAL (num_samples 0, non-finite values) or
 * AF_ENOMEM. */
int client_delta_serialize(const nn_model *m, const float *delta, const client_report *rep,
                           uint8_t **out, size_t *len);

/* Euclidean norm of x[n] (in double). */
double client_l2(const float *x, size_t n);

#endif
