/* sim.h — federated learning simulated in one process (and across MPI ranks).
 *
 * Layer `sim`: uses core, nn, data, train, fed. Every simulated device is an index view into
 * one shared dataset (a data_partition); the devices selected in a round train in parallel on
 * a thread pool, one model replica, trainer and partial accumulator per thread, so memory
 * grows with the model × threads, not with the number of devices. Per-device state exists
 * only where an algorithm needs it (SCAFFOLD's control variates, allocated on a device's
 * first participation: n_params floats each).
 *
 * Determinism: a device's local training draws from af_rng_split(seed, round, device) and
 * the strategies sum updates exactly (fed/strategy.h), so a run is bitwise the same for a
 * seed whatever the thread count or the number of MPI ranks. The robust strategies
 * (fedmedian, fedtrimmedavg, krum) get the round's updates as one block in selection-slot
 * order (memory: per_round × n_params floats more), so they are thread-count independent
 * too; they do not run under MPI (refused).
 */
#ifndef AF_SIM_SIM_H
#define AF_SIM_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "data/partition.h"
#include "nn/model.h"
#include "nn/optim.h"
#include "train/train.h"

typedef struct sim_cfg {
    int clients;            /* K devices */
    double frac;            /* fraction selected per round, in (0, 1] (used if per_round == 0) */
    int per_round;          /* devices selected per round (overrides frac when > 0) */
    int rounds;
    int local_epochs;
    int batch;
    nn_optim_cfg opt;       /* the devices' local optimizer */
    const char *partition;  /* "iid", "dirichlet:0.5", … (data/partition.h) */
    double heldout_frac;    /* each device's local held-out share, default 0.1 */
    const char *strategy;   /* "fedavg", … (fed/strategy.h) */
    const char *strategy_opts;
    double dropout;         /* probability that a selected device never reports */
    double speed_sigma;     /* device speeds ~ logNormal(0, sigma); 0 = all equal */
    double device_rate;     /* samples/s of a speed-1 device, for the simulated clock */
    double deadline;        /* simulated seconds; devices slower than this are dropped (0 = none) */
    int eval_every;         /* centralised + federated evaluation every K rounds (and the last) */
    int threads;
    uint64_t seed;
    /* differential privacy, DP-FedAvg (docs/privacy.md); all 0 = off */
    double dp_clip;              /* S: each device's delta is clipped to L2 norm S; 0 = no DP */
    double dp_noise;             /* z: Gaussian noise of std z·S on the sum of the clipped deltas */
    double dp_adaptive_quantile; /* γ: the clip tracks this quantile of the norms; 0 = fixed S */
    double dp_target_epsilon;    /* stop before the round that would exceed it; 0 = no target */
    double dp_delta;             /* δ of the reported ε; 0 = min(1e-5, 0.1/clients) */
    /* secure aggregation (fed/secagg.h) of each round's reports */
    int secagg;                  /* 1 = on */
    int secagg_threshold;        /* t; 0 = ceil(2/3 of the devices per round) */
    double secagg_range;         /* without DP: |delta| bound per coordinate for fixed point; 0 = 1 */
    /* Byzantine devices, for robustness experiments: a fixed set of round(frac·K) devices,
     * drawn once from the seed, that send a malicious update whenever they are selected */
    double byzantine_frac;       /* in [0, 1); 0 = every device is honest */
    int byzantine_mode;          /* sim_byzantine_mode */
} sim_cfg;

typedef enum {
    SIM_BYZ_SIGNFLIP = 0, /* send −10 × the honest delta (the default) */
    SIM_BYZ_NOISE = 1,    /* send N(0, 100²) per parameter, fresh each round */
} sim_byzantine_mode;

/* Parses "FRAC[:MODE]" (MODE signflip or noise; default signflip) into cfg->byzantine_frac
 * and cfg->byzantine_mode. 0, or AF_EINVAL/AF_ERANGE with a message naming --byzantine
 * (cfg unchanged then). */
int sim_byzantine_parse(const char *arg, sim_cfg *cfg);

/* Defaults of the FedAvg paper's setting: 100 clients, C=0.1, E=1, B=10, SGD lr 0.05, IID. */
void sim_cfg_defaults(sim_cfg *c);

typedef struct sim_round {
    int round;
    int selected, reported, dropped;   /* dropped = failures + stragglers */
    double train_loss;                 /* sample-weighted mean over reporting devices */
    double test_loss, test_accuracy;   /* NAN when not evaluated this round */
    double dev_acc_mean, dev_acc_p10, dev_acc_min; /* federated evaluation (NAN if none) */
    double seconds;                    /* wall time of the round, evaluation included */
    double sim_seconds;                /* simulated round duration (slowest reporter) */
    uint64_t bytes_down, bytes_up;
    double epsilon;                    /* ε spent after this round at dp_delta (NAN without DP) */
    double dp_clip;                    /* the clip S used this round (NAN without DP) */
    int budget_exhausted;              /* 1: the target ε allows no further round */
    int secagg_abandoned;              /* 1: fewer than t survivors, the model did not change */
    int byzantine;                     /* reports this round that came from Byzantine devices */
    uint64_t secagg_clamped;           /* values outside the fixed-point range (clamped) */
} sim_round;

typedef struct sim sim;

/* Validates cfg, partitions `train` over the devices and builds the strategy, workers and
 * global model (initialised from model's parameters, which the caller sets). train and test
 * must outlive the simulation. 0 or AF_E* with a message naming the option at fault. */
int sim_create(const sim_cfg *cfg, const nn_model *model, const data_dataset *train,
               const data_dataset *test, sim **out);
void sim_free(sim *s);

/* Runs round r (1-based, in order) and fills *out. 0 or AF_E* (AF_ESTATE if the privacy
 * budget does not allow the round: check sim_budget_allows first). */
int sim_run_round(sim *s, int r, sim_round *out);

/* 1 if one more round keeps ε within cfg.dp_target_epsilon (always 1 without a target),
 * else 0; *eps_after (may be NULL) gets ε after that round (NAN without DP). */
int sim_budget_allows(const sim *s, double *eps_after);

/* The global model (owned by s) and the partition (owned by s). */
const nn_model *sim_model(const sim *s);
const data_partition *sim_partition(const sim *s);

/* MPI: rank and size (0 and 1 without MPI). Only rank 0 should print or write files. */
int sim_rank(const sim *s);
int sim_size(const sim *s);

#endif
