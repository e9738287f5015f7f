/* strategy.h — server-side aggregation strategies over flat float vectors (the FedAvg family).
 *
 * Layer `fed`: uses core only; knows nothing about layers or models, only that a model is one
 * flat float buffer of n parameters. A device's update is delta = w_local − w_global (n floats)
 * with a weight (its sample count). A round folds updates into an accumulator as they arrive
 * (O(n) memory whatever the number of devices), then the strategy applies the result to the
 * global weights in place. Strategy state (momentum, Adam moments, SCAFFOLD's c) is one flat
 * buffer sized at creation; nothing here allocates per round. Full math: docs/strategies.md.
 *
 *   fed_strategy *s; fed_agg *a;
 *   fed_strategy_create("fedadam", "eta=0.01,tau=1e-3", n, &s);
 *   fed_agg_create(s, &a);
 *   for each reporting device: fed_agg_add(a, delta_k, n_k, NULL);
 *   fed_strategy_apply(s, a, w_global);   // new global model
 *   fed_agg_reset(a);                      // next round
 *
 * Determinism: the accumulator sums in exact 192-bit fixed point (each w·delta term is rounded
 * once, toward zero, to a multiple of 2^-96), so the sum does not depend on the order updates
 * arrive in nor on how they are split among partial accumulators (threads, MPI ranks) that
 * are then merged: the applied result is bitwise the same. Terms with |w·delta| >= 2^62
 * are refused (AF_ERANGE) so 2^32 updates can never overflow.
 */
#ifndef AF_FED_STRATEGY_H
#define AF_FED_STRATEGY_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FED_FEDAVG = 0,     /* McMahan et al. 2017: sample-weighted mean of deltas */
    FED_FEDAVGM = 1,    /* Hsu et al. 2019: server momentum */
    FED_FEDPROX = 2,    /* Li et al. 2020: FedAvg on the server, proximal term on clients */
    FED_FEDADAM = 3,    /* Reddi et al. 2021, Algorithm 2 (Adam) */
    FED_FEDYOGI = 4,    /* Reddi et al. 2021, Algorithm 2 (Yogi) */
    FED_FEDADAGRAD = 5, /* Reddi et al. 2021, Algorithm 2 (Adagrad) */
    FED_SCAFFOLD = 6,   /* Karimireddy et al. 2020: control variates */
    FED_FEDNOVA = 7,    /* Wang et al. 2020: normalised averaging */
    FED_FEDMEDIAN = 8,  /* Yin et al. 2018: coordinate-wise median (robust, individual updates) */
    FED_FEDTRIMMEDAVG = 9, /* Yin et al. 2018: coordinate-wise trimmed mean (robust) */
    FED_KRUM = 10,      /* Blanchard et al. 2017: Krum / Multi-Krum (robust) */
} fed_strategy_kind;

typedef struct fed_strategy fed_strategy;
typedef struct fed_agg fed_agg;

/* What a device sends besides its delta, for the strategies that need more.
 * scaffold: delta_c = c_i+ − c_i (n floats, required). fednova: tau = the device's effective
 * number of local steps (> 0, required; see fed_nova_tau). Others ignore it (NULL is fine). */
typedef struct fed_extra {
    const float *delta_c;
    double tau;
} fed_extra;

/* Creates a strategy by name — fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad,
 * scaffold, fednova, fedmedian, fedtrimmedavg, krum — with options "k=v,k=v" (NULL or "" for
 * defaults), for models of n_params parameters. Options (defaults):
 *   fedavg      eta=1
 *   fedavgm     eta=1, beta=0.9                  (beta in [0,1))
 *   fedprox     eta=1, mu=0.01                   (mu >= 0; read back with fed_strategy_mu)
 *   fedadam     eta=0.01, beta1=0.9, beta2=0.99, tau=0.001
 *   fedyogi     eta=0.01, beta1=0.9, beta2=0.99, tau=0.001
 *   fedadagrad  eta=0.01, beta1=0.9, tau=0.001
 *   scaffold    eta=1, clients=N                 (N = total number of clients, required)
 *   fednova     eta=1
 *   fedmedian   eta=1                            (robust: see fed_strategy_apply_updates)
 *   fedtrimmedavg eta=1, beta=0.1                (beta in [0, 0.5): share cut at each end)
 *   krum        eta=1, f=0, m=1                  (f whole >= 0 Byzantine devices tolerated;
 *                                                 m whole >= 1 updates averaged, Multi-Krum)
 * eta > 0 always; beta1, beta2 in [0,1); tau > 0; clients an integer >= 1.
 * Returns 0, AF_EINVAL (unknown strategy or option, malformed value, missing required
 * option, n_params 0), AF_ERANGE (value out of range) or AF_ENOMEM; the message names the
 * strategy and option. *out is the caller's: free with fed_strategy_free. */
int fed_strategy_create(const char *name, const char *opts, size_t n_params, fed_strategy **out);

/* Frees the strategy; NULL is fine. */
void fed_strategy_free(fed_strategy *s);

fed_strategy_kind fed_strategy_kind_of(const fed_strategy *s);
/* Canonical name ("fedadam"); static string. */
const char *fed_strategy_name(const fed_strategy *s);
size_t fed_strategy_n_params(const fed_strategy *s);
/* FedProx's mu for the clients' proximal term (0 for every other strategy). */
double fed_strategy_mu(const fed_strategy *s);
/* SCAFFOLD's server control variate c (n floats, owned by s; zero at start), NULL for other
 * strategies. Clients read it at the start of a round. */
const float *fed_strategy_control(const fed_strategy *s);

/* The server state as one flat float buffer owned by s (fedavgm: momentum [n]; fedadam,
 * fedyogi, fedadagrad: m [n] then v [n]; scaffold: c [n]; others: none, *n = 0, NULL).
 * Read it to checkpoint, write it to restore. v starts at tau², as Algorithm 2 asks
 * (v_{-1} >= tau²). */
float *fed_strategy_state(fed_strategy *s, size_t *n);

/* Creates an empty accumulator shaped for s (n_params, and delta_c sums for scaffold).
 * Memory: 24 bytes per parameter (48 for scaffold). Returns 0 or AF_ENOMEM. */
int fed_agg_create(const fed_strategy *s, fed_agg **out);
/* Frees it; NULL is fine. */
void fed_agg_free(fed_agg *a);
/* Empties it for the next round. */
void fed_agg_reset(fed_agg *a);

/* Folds in one device's update: delta[n_params] = w_local − w_global, weight = its sample
 * count (finite, > 0), extra as fed_extra says. All-or-nothing: on any error nothing is
 * folded in. Returns 0, AF_EINVAL (NULL delta, weight <= 0 or not finite, NaN/Inf in delta
 * or delta_c — the message gives the index —, missing delta_c or tau) or AF_ERANGE
 * (|weight·delta| >= 2^62, or 2^32 updates already in). Allocates nothing. */
int fed_agg_add(fed_agg *a, const float *delta, double weight, const fed_extra *extra);
/* The same, through the scalar reference loop (fed_agg_add is vectorised where the build
 * allows, AVX-512): bitwise the same accumulator; the oracle of the tests. */
int fed_agg_add_ref(fed_agg *a, const float *delta, double weight, const fed_extra *extra);

/* ---- one update in slices (streaming uploads) ----
 * An update can be folded in piece by piece as it arrives, without holding it whole:
 *
 *   fed_agg_add_slice(a, FED_AGG_DELTA, off, chunk, len, w, &extra);   // any chunking/order
 *   ...all n_params values once each (and delta_c's, for scaffold)...
 *   fed_agg_finish_update(a, w, &extra);    // accepted: count it (once)
 *   -- or, refused after some slices went in --
 *   fed_agg_sub_slice(a, FED_AGG_DELTA, off, chunk, len, w, &extra);   // same slices, undone
 *
 * Each value's term is the very term fed_agg_add computes (same double, same truncation), so
 * slices in any chunking plus finish leave the accumulator bitwise as fed_agg_add of the whole
 * update would, and sub of the same slices restores it bitwise (the −term is the exact two's
 * complement). Until finish the slices are in the sums but not in count/weight: do not apply,
 * merge or checkpoint an accumulator with an update half in. Covering every parameter exactly
 * once is the caller's part (nothing here tracks which were folded). */
typedef enum {
    FED_AGG_DELTA = 0,   /* delta (w·delta, w·delta/tau for fednova) */
    FED_AGG_DELTA_C = 1, /* scaffold's delta_c (folded unweighted, as fed_agg_add does) */
} fed_agg_part;

/* Folds values[0..count) as parameters [offset, offset+count) of one update of weight
 * `weight` (fednova: extra->tau is required; extra->delta_c is ignored — send delta_c as
 * FED_AGG_DELTA_C slices). All-or-nothing for the slice: on error nothing of it is folded
 * (earlier slices of the update stay: undo them with fed_agg_sub_slice). count 0 is fine.
 * Returns 0, AF_EINVAL (part not summed by this strategy, NULL values, the range outside
 * n_params, weight/tau as fed_agg_add, NaN/Inf — the message gives the parameter index) or
 * AF_ERANGE (a term >= 2^62, 2^32 updates already in). Allocates nothing. */
int fed_agg_add_slice(fed_agg *a, fed_agg_part part, size_t offset, const float *values,
                      size_t count, double weight, const fed_extra *extra);
/* Subtracts exactly what fed_agg_add_slice with the same arguments added (same checks and
 * return codes; nothing changes on error). */
int fed_agg_sub_slice(fed_agg *a, fed_agg_part part, size_t offset, const float *values,
                      size_t count, double weight, const fed_extra *extra);
/* Counts the update whose slices are in: count += 1, Σw += weight (Σw·tau for fednova).
 * Call once per accepted update, after its last slice. Returns 0 or the weight/tau/count
 * errors of fed_agg_add (nothing changes then). */
int fed_agg_finish_update(fed_agg *a, double weight, const fed_extra *extra);

/* dst += src (exact): combine per-thread or per-rank partial sums. The result is bitwise
 * what one accumulator fed every update would hold, in any order and any split.
 * Returns 0, or AF_ESHAPE if they were made for differently shaped strategies. */
int fed_agg_merge(fed_agg *dst, const fed_agg *src);

/* Updates folded in, and their total weight. */
uint64_t fed_agg_count(const fed_agg *a);
double fed_agg_weight(const fed_agg *a);

/* The weighted mean delta Σ w_k·delta_k / Σ w_k into out[n_params] (for logging, clipping
 * checks, robust aggregation). Returns 0 or AF_ESTATE if empty. */
int fed_agg_mean(const fed_agg *a, float *out);

/* The accumulator's whole state as one contiguous block (*bytes long, owned by a), for
 * sending a partial sum between MPI ranks: receive into the block of an accumulator made
 * for an identical strategy, then fed_agg_merge. Native byte order. */
void *fed_agg_data(fed_agg *a, size_t *bytes);

/* Applies the round to the global weights w[n_params] in place and advances the strategy's
 * state. Allocates nothing. The accumulator is left as is (reset it for the next round).
 * Returns 0, AF_ESTATE if no update was folded in (nothing changes), AF_ESHAPE if a was made
 * for another shape, AF_EINVAL for a robust strategy (fed_strategy_needs_updates). */
int fed_strategy_apply(fed_strategy *s, const fed_agg *a, float *w);

/* ---- robust aggregation (fedmedian, fedtrimmedavg, krum) ----
 * These need the round's individual updates, not a weighted sum: the caller keeps each
 * reporting device's delta and hands the m × n block over at the end of the round.
 *
 *   if (fed_strategy_needs_updates(s)) {
 *       fed_strategy_check_updates(s, per_round);        // early: is krum's f possible?
 *       ...row k of block = the k-th reporting device's delta, in a fixed (slot) order...
 *       fed_strategy_apply_updates(s, block, m, w_global);
 *   }
 *
 * Updates are unweighted (a device's sample count does not count: a Byzantine device could
 * lie about it). Median and trimmed mean sort each coordinate under a total order (−0 < +0),
 * so they do not depend on the row order at all; Krum's scores do not either, and its
 * tie-break (lower row) and Multi-Krum's average (rows ascending) use the row order, which
 * the caller keeps deterministic. An accumulator (fed_agg) can still be created for them and
 * fed, its sum is simply not used. */

/* 1 for fedmedian, fedtrimmedavg and krum, else 0. */
int fed_strategy_needs_updates(const fed_strategy *s);

/* Whether a round of m updates can be aggregated: 0, AF_EINVAL (not a robust strategy;
 * krum with m <= 2f + 2, or Multi-Krum's m option > m − f — the message says which),
 * AF_ESTATE (m = 0), AF_ERANGE (m too large: krum keeps an m × m distance matrix, m <= 65536). */
int fed_strategy_check_updates(const fed_strategy *s, size_t m);

/* Applies the robust aggregate of updates[m × n_params] (row k = one device's delta,
 * row-major) to w[n_params] in place: x += eta·d with
 *   fedmedian      d_i = median_k u_ki (the mean of the two middle values for even m)
 *   fedtrimmedavg  d_i = mean of u_ki after dropping the ⌊beta·m⌋ largest and smallest
 *   krum           d = mean of the m(option) rows of lowest score(k) = Σ of the m − f − 2
 *                  smallest ||u_k − u_j||², j ≠ k (m = 1: the Krum row itself)
 * Returns 0 or fed_strategy_check_updates' codes, AF_EINVAL (NULL pointers, NaN/Inf in a
 * row — the message gives row and index; nothing changes), AF_ENOMEM. Allocates only when
 * m exceeds every earlier round's (scratch: m·4 bytes, krum (m² + 3m)·8 bytes, kept in s). */
int fed_strategy_apply_updates(fed_strategy *s, const float *updates, size_t m, float *w);

/* ---- client-side helpers ---- */

/* FedProx: grad[i] += mu·(w[i] − w_global[i]), the gradient of (mu/2)·||w − w_global||². */
void fed_prox_grad(float *grad, const float *w, const float *w_global, size_t n, float mu);

/* SCAFFOLD: corrected local gradient grad[i] += c[i] − c_i[i] (c_global: the server's, from
 * fed_strategy_control; c_local: this client's). */
void fed_scaffold_correct_grad(float *grad, const float *c_global, const float *c_local,
                               size_t n);

/* SCAFFOLD control update, option II of Karimireddy et al. 2020, after `steps` local steps
 * with learning rate lr from w_global to w_local:
 *   c_i+ = c_i − c + (w_global − w_local) / (steps·lr)
 * c_local is updated in place; delta_c[n] (may be NULL) receives c_i+ − c_i, which is what the
 * client sends. steps >= 1 and lr > 0 (programmer error otherwise: nothing is changed). */
void fed_scaffold_update_control(float *c_local, float *delta_c, const float *c_global,
                                 const float *w_global, const float *w_local, size_t n,
                                 double steps, double lr);

/* FedNova: a client's effective step count tau_i = ||a_i||_1 for `steps` local SGD steps
 * with momentum rho in [0,1) (Wang et al. 2020): steps when rho = 0, else
 *   (steps − rho·(1 − rho^steps)/(1 − rho)) / (1 − rho). */
double fed_nova_tau(double steps, double rho);

#endif
