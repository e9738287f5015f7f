/* popstats.h — the private population label histogram (fed/popstats.h) run in simulation:
 * every simulated device answers through the real secure-aggregation protocol
 * (fed/secagg.h) with its share of DP noise, and the owner gets the noisy histogram, the
 * label balance and the ε of the release. `artificien sim --population-stats` calls it
 * before training and writes RUN_DIR/population.json.
 *
 * Layer `sim` (core, data, fed). Devices are split into groups of about cfg.group devices
 * (contiguous device ids, sizes differing by at most 1); each group runs one secure
 * aggregation with threshold ⌈2n/3⌉, so memory and time stay O(group²) per group instead of
 * O(population²). The coordinator learns each group's noisy sum (each carries noise std
 * ≥ z·B from any t of its devices), never one device's histogram. Devices that drop out do
 * so after sharing keys (the protocol then unmasks); a group with fewer than t survivors is
 * abandoned and contributes nothing. The simulation also records the true histograms — the
 * owner never sees those; they are there to measure the error. Never prints.
 */
#ifndef AF_SIM_POPSTATS_H
#define AF_SIM_POPSTATS_H

#include <stddef.h>
#include <stdint.h>

#include "core/pool.h"
#include "data/partition.h"
#include "fed/popstats.h"

/* What the coordinator receives, for audits and tests: each device's masked input as it
 * arrives (device = the population index, is_sum = 0), then each group's running masked sum
 * just before unmasking (device = the group's first device, is_sum = 1). */
typedef void (*sim_popstats_view_fn)(void *ctx, int group, uint32_t device, const uint32_t *words,
                                     size_t len, int is_sum);

typedef struct sim_popstats_cfg {
    double bound;      /* B: each device counts at most B samples (> 0) */
    double z;          /* noise multiplier (≥ 0; 0 = no DP, ε = inf) */
    double delta;      /* δ of the reported ε, in (0, 1) */
    int group;         /* devices per secure-aggregation group (≥ 1) */
    double dropout;    /* probability that a device drops after sharing keys, in [0, 1) */
    uint64_t seed;     /* noise and dropouts (masks come from libsodium's CSPRNG) */
    sim_popstats_view_fn view; /* may be NULL */
    void *view_ctx;
} sim_popstats_cfg;

/* Defaults: B = 100, z = 2, δ = 1e-5, groups of 100, no dropout, seed 1. */
void sim_popstats_cfg_defaults(sim_popstats_cfg *c);

typedef struct sim_popstats {
    popstats_result r;          /* the release: what the owner learns */
    uint32_t devices;           /* population */
    uint32_t reported;          /* devices whose histogram is in the release */
    uint32_t dropped;           /* dropped after sharing keys (in a surviving group or not) */
    uint32_t clipped;           /* reporting devices whose counts were scaled to B */
    uint32_t groups, groups_abandoned;
    uint64_t clamped;           /* quantised values outside the range (expected 0) */
    uint64_t bytes_up, bytes_down; /* protocol messages, all devices together */
    double seconds;             /* wall time of the whole computation */
    /* simulation only — never part of a release: */
    uint64_t true_count[POPSTATS_MAX_CLASSES];   /* Σ h_u over every device, unclipped */
    double true_clipped[POPSTATS_MAX_CLASSES];   /* Σ clip(h_u) over the reporting devices */
} sim_popstats;

/* Runs the population statistics over the devices of partition p (labels y, the ones the
 * partition was built from; each device counts all its samples, training and held-out).
 * pool (may be NULL) runs the key sharing in parallel. Returns 0; AF_ERANGE/AF_EINVAL
 * naming the bad option; AF_ESTATE if every group was abandoned (nothing released);
 * AF_ENOMEM; AF_EAUTH (a protocol failure that should not happen in process). */
int sim_popstats_run(const data_partition *p, const uint8_t *y, const sim_popstats_cfg *cfg,
                     af_pool *pool, sim_popstats *out);

/* Writes population.json atomically: {"classes": [names], "counts", "count_std", "shares",
 * "share_std", "total", "total_std", "tv_uniform", "tv_noise", "epsilon", "delta", "order",
 * "noise_multiplier", "bound", "group", "devices", "reported", "dropped", "clipped",
 * "groups", "groups_abandoned", "bytes_up", "bytes_down", "seconds",
 * "simulation_truth": {"counts", "clipped_counts", "tv_uniform"}}. class_names may be NULL
 * ("class_0", …). Returns 0, AF_EIO or AF_ENOMEM. */
int sim_popstats_write_json(const sim_popstats *s, const sim_popstats_cfg *cfg,
                            const char *const *class_names, const char *path);

#endif
