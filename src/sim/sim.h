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
 * seed whatever the thread count or the number of MPI ranks.
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
} sim_cfg;

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
} sim_round;

typedef struct sim sim;

/* Validates cfg, partitions `train` over the devices and builds the strategy, workers and
 * global model (initialised from model's parameters, which the caller sets). train and test
 * must outlive the simulation. 0 or AF_E* with a message naming the option at fault. */
int sim_create(const sim_cfg *cfg, const nn_model *model, const data_dataset *train,
               const data_dataset *test, sim **out);
void sim_free(sim *s);

/* Runs round r (1-based, in order) and fills *out. 0 or AF_E*. */
int sim_run_round(sim *s, int r, sim_round *out);

/* The global model (owned by s) and the partition (owned by s). */
const nn_model *sim_model(const sim *s);
const data_partition *sim_partition(const sim *s);

/* MPI: rank and size (0 and 1 without MPI). Only rank 0 should print or write files. */
int sim_rank(const sim *s);
int sim_size(const sim *s);

#endif
