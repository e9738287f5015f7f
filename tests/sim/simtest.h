/* simtest.h — what the simulator tests share: loading a Fashion-MNIST subset with the
 * tutorial CNN, and running a configuration round by round.
 *
 * Test code only (tests/sim/): never linked into the binary.
 */
#ifndef AF_TESTS_SIM_SIMTEST_H
#define AF_TESTS_SIM_SIMTEST_H

#include <stddef.h>

#include "data/dataset.h"
#include "nn/model.h"
#include "sim/sim.h"

/* The first n_train training and n_test test samples of Fashion-MNIST and the tutorial CNN
 * initialised from seed 1, into *train, *test, *model (kept by the caller until exit).
 * Nothing happens when *model is already set. 0, or AF_E* after printing the message with
 * `who`. */
int simtest_load(const char *who, size_t n_train, size_t n_test, data_dataset **train,
                 data_dataset **test, nn_model **model);

/* Runs cfg for up to cfg->rounds rounds, stopping early when the privacy budget says so:
 * rounds[] (may be NULL) gets each round, *ran (may be NULL) the number run, params (may be
 * NULL) the final global parameters. 0 or AF_E*. */
int simtest_run(const sim_cfg *cfg, const nn_model *model, const data_dataset *train,
                const data_dataset *test, sim_round *rounds, int *ran, float *params);

#endif
