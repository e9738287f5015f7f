/* privacy.h — differential privacy and secure aggregation inside the simulated round
 * (internal to the sim layer; sim.c calls it at four points of a round).
 *
 * DP-FedAvg (McMahan et al. 2018): each reporting device clips its delta to L2 norm S and
 * counts with weight 1; the server adds N(0, (z·S)²) to the sum and divides by the expected
 * count (fixed denominator), or — with secure aggregation — every device adds its share of
 * the noise (dp_split_noise_sigma) so nobody holds the un-noised sum. An RDP accountant
 * composes one Poisson-subsampled Gaussian step per round with q = selected / clients.
 * Secure aggregation runs the real protocol of fed/secagg.h among the round's selected
 * devices; devices that drop out do so after sharing keys, so the server must unmask.
 * Nothing here prints; see docs/privacy.md for what is protected from whom.
 */
#ifndef AF_SIM_PRIVACY_H
#define AF_SIM_PRIVACY_H

#include <stddef.h>
#include <stdint.h>

#include "core/pool.h"
#include "fed/strategy.h"
#include "sim/sim.h"

typedef struct sim_privacy sim_privacy;

/* Validates the DP/secagg options of cfg and builds the state for a model of n_params,
 * per_round devices per round, `threads` workers, `ranks` MPI ranks and a largest device
 * training set of max_samples. *out = NULL (and 0 returned) when neither DP nor secure
 * aggregation is on. 0, or AF_EINVAL/AF_ERANGE naming the option, or AF_ENOMEM. */
int sim_privacy_create(const sim_cfg *cfg, fed_strategy_kind kind, size_t n_params, int per_round,
                       int threads, int ranks, double max_samples, sim_privacy **out);
void sim_privacy_free(sim_privacy *p);

/* Would one more round keep ε within the target? 1 yes (or no target), 0 no; *eps_after
 * (may be NULL) gets ε after it (NAN without DP). */
int sim_privacy_allows(const sim_privacy *p, double *eps_after);

/* The round's per-slot flags (m bytes, owned by p) that the caller fills before
 * sim_privacy_begin: 1 if the slot's device will report, 0 if it drops out. */
uint8_t *sim_privacy_reporting(sim_privacy *p);

/* Start of round r with m selected slots. Secure aggregation: every selected device
 * advertises keys and shares them (phases 0–1), and the reporting ones receive their shares
 * (phase 2a); the pool (may be NULL) runs the key sharing. AF_ESTATE if the privacy budget
 * does not allow the round. */
int sim_privacy_begin(sim_privacy *p, int r, int m, af_pool *pool);

/* On a worker thread `tid`, after device `device` in slot `slot` computed its delta[n]
 * (trained on `samples` examples): DP clips delta in place (and, with secure aggregation,
 * adds the device's noise share). *weight gets the weight to fold it in with. *sent = 1 when
 * the update already left through secure aggregation (the caller must not fold it in). */
int sim_privacy_device(sim_privacy *p, int tid, int slot, int device, float *delta, double samples,
                       double *weight, int *sent);

/* End of the round, on every rank (lead = the rank that aggregates): turns what was
 * collected (agg for plain aggregation; the secure sum otherwise) into the one update the
 * strategy applies — agg is reset and holds it afterwards (empty if the secure round was
 * abandoned) — steps the accountant, and fills out->epsilon, out->dp_clip,
 * out->budget_exhausted, out->secagg_abandoned and adds the protocol's bytes. */
int sim_privacy_end(sim_privacy *p, fed_agg *agg, int lead, sim_round *out);

#endif
