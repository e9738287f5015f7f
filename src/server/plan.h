/* plan.h — a project's training plan and a device's dataset schema, parsed from JSON and
 * validated with messages that name the field ("plan.min_reports: …").
 *
 * Layer `server`: uses core, nn (for the model's input shape) and fed (to validate strategy
 * options). Pure functions: no I/O, no locks. The canonical plan (every field, defaults filled
 * in) is what the coordinator stores and hands to devices.
 */
#ifndef AF_SERVER_PLAN_H
#define AF_SERVER_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "nn/model.h"

typedef struct srv_plan {
    char strategy[32];
    char strategy_opts[256];
    int rounds;
    int devices_per_round;
    int min_reports;
    double over_selection;
    double round_deadline_s;
    int local_epochs;
    int batch;
    char optimizer[16];
    double lr;
    double momentum;
    int eval_every;
    double max_update_norm;
    char dataset[64];
    uint64_t seed;
    /* central DP-FedAvg (docs/privacy.md "Over HTTP"): dp_clip S > 0 turns it on */
    double dp_clip;           /* S: devices clip their delta to this L2 norm; 0 = no DP */
    double dp_noise;          /* z: the coordinator adds N(0, (z·S)²) to the sum */
    double dp_delta;          /* δ of the reported (ε, δ) */
    double dp_target_epsilon; /* stop before a round would take ε past it; 0 = none */
    int64_t dp_population;    /* N for q = devices_per_round / N; 0 = the enrolled devices
                                 holding the plan's dataset */
    /* adaptive clipping (Andrew et al. 2021): γ > 0 turns it on */
    double dp_adaptive_quantile;  /* γ: the fraction of updates that should be unclipped */
    double dp_adaptive_lr;        /* η */
    double dp_adaptive_count_noise; /* σ_b of the noised unclipped count */
    /* secure aggregation (docs/api.md "Secure aggregation") */
    int secagg;               /* 1: devices send masked vectors; the coordinator sees sums */
    int secagg_threshold;     /* t (resolved: never 0 in a parsed plan) */
    double secagg_range;      /* R: without DP, w·Δ is clamped to ±R·M */
    int secagg_max_samples;   /* M: without DP, a device weighs min(num_samples, M) */
    int label_stats;          /* kind "label_stats": one round of the label histogram */
    double stats_bound;       /* B */
    double stats_noise;       /* z */
} srv_plan;

/* Parses and validates a plan object for model m: unknown fields, wrong types and values out
 * of range are refused (AF_EINVAL) with a message naming the field and the allowed range;
 * the strategy and its options are checked with fed_strategy_create. Missing fields get the
 * defaults of docs/api.md ("rounds" is required). */
int srv_plan_parse(const cJSON *plan, const nn_model *m, srv_plan *out);
/* The canonical JSON object of a plan (caller owns; cJSON_Delete). NULL on out of memory. */
cJSON *srv_plan_to_json(const srv_plan *p);
/* ceil(devices_per_round × over_selection): how many devices one attempt hands tasks to. */
int srv_plan_quota(const srv_plan *p);

/* Bytes a device needs to train model m with plan p on one thread: parameters, the received
 * copy, the update, one gradient buffer, optimizer state (Adam 2, momentum 1 per parameter),
 * activations, max-pool arguments, gradient planes and im2col scratch for a batch, and an
 * evaluation batch of 64. The device library's estimate (client_task_memory) at one thread,
 * so a device whose max_memory is below it would refuse the task; one training more threads
 * needs a gradient buffer and a batch share more per thread. */
size_t srv_plan_memory(const nn_model *m, const srv_plan *p);
/* The slowest training speed the coordinator assumes of a device that has not measured its
 * own (FLOP/s; a phone's small core). */
#define SRV_DEVICE_FLOPS 1e9
/* Seconds of local training for `samples` training samples: forward + backward ≈ 3 forward
 * passes per sample per epoch, 3·flops_fwd·samples·local_epochs / flops_per_s, at the
 * device's measured flops_per_s (> 0) or else SRV_DEVICE_FLOPS. */
double srv_plan_seconds(const nn_model *m, const srv_plan *p, double samples, double flops_per_s);

/* A dataset schema as a device declares it: {"name", "kind", "shape", "classes"}. */
typedef struct srv_schema {
    char name[64];
    int c, h, w;        /* shape normalised like a spec's "input": [f] → 1,1,f; [h,w] → 1,h,w */
    int classes;        /* 0 when not given */
} srv_schema;

/* Parses a schema object; AF_EINVAL naming `what`.field on any problem. */
int srv_schema_parse(const cJSON *j, const char *what, srv_schema *out);
/* 1 if a device holding `have` can train a project of model m with plan p. */
int srv_schema_matches(const srv_schema *have, const srv_plan *p, const nn_model *m);

#endif
