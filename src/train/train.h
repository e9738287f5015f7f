/* train.h — the local training loop and evaluation.
 *
 * Layer `train`: uses core, tensor, nn, data. A trainer binds one model to its workspaces,
 * gradient buffers and optimizer state, all sized once: a step allocates nothing. With
 * threads > 1 a mini-batch is split into equal chunks, one per thread; whichever thread is
 * free runs forward/backward on a chunk, with that chunk's workspace, into that chunk's
 * gradient buffer; then the threads split the parameters into ranges and, per range, sum
 * the buffers in chunk order and apply the optimizer. Results are deterministic for a given
 * thread count (they depend on the chunking, not on which thread ran what).
 * The same trainer serves central training and a simulated device's local epochs.
 */
#ifndef AF_TRAIN_TRAIN_H
#define AF_TRAIN_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/pool.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "nn/model.h"
#include "nn/optim.h"

typedef struct train_ctx train_ctx;

/* Hook called after every step (may be NULL): return non-zero to stop the epoch early. */
typedef int (*train_step_cb)(void *user, long step, long steps, double loss, double seconds);

/* A trainer for model m with batches up to max_batch on `threads` threads (a pool is created
 * when threads > 1). 0 or AF_ENOMEM/AF_ERANGE. The model must outlive the trainer. */
int train_create(nn_model *m, const nn_optim_cfg *opt, int max_batch, int threads,
                 train_ctx **out);
void train_free(train_ctx *t);
nn_optim *train_optim(train_ctx *t);

/* Optional proximal term (FedProx): adds mu·(w - anchor) to every gradient; anchor must stay
 * valid while set; mu = 0 or anchor NULL disables it. */
void train_set_prox(train_ctx *t, const float *anchor, float mu);
/* Optional gradient correction (SCAFFOLD): adds corr[i] to every gradient; NULL disables. */
void train_set_correction(train_ctx *t, const float *corr);

/* One optimizer step on the batch x (b, sample), y (b). Returns the mean loss over the batch
 * in *loss (may be NULL) and argmax hits in *correct (may be NULL). */
void train_step(train_ctx *t, const float *x, const uint8_t *y, int b, uint64_t step_seed,
                double *loss, int *correct);

typedef struct train_epoch_stats {
    double loss;        /* mean training loss over the epoch's samples */
    double accuracy;    /* training accuracy (during the epoch) */
    long steps;
    size_t samples;
    double seconds;     /* wall time of the loop only */
} train_epoch_stats;

/* One epoch over idx[0..n) of ds (all samples if idx is NULL), shuffled with rng, in batches
 * of `batch` (the last one may be smaller). max_steps > 0 stops early. */
void train_epoch(train_ctx *t, const data_dataset *ds, const uint32_t *idx, size_t n, int batch,
                 af_rng *rng, long max_steps, train_step_cb cb, void *user,
                 train_epoch_stats *st);

#define TRAIN_EVAL_MAX_CLASSES 64

/* Evaluation result: mean loss, accuracy, confusion[true*k + pred] (k×k, row-major). */
typedef struct train_eval {
    int k;
    size_t n;
    double loss, accuracy;
    long confusion[TRAIN_EVAL_MAX_CLASSES * TRAIN_EVAL_MAX_CLASSES];
} train_eval;

/* Evaluates m on idx[0..n) of ds (all if idx NULL) in batches of `batch` on the pool's
 * threads (pool may be NULL). The caller provides one workspace per thread (ws[threads]).
 * 0 or AF_ERANGE when the model has more than TRAIN_EVAL_MAX_CLASSES classes. */
int train_evaluate(const nn_model *m, nn_ws **ws, af_pool *pool, const data_dataset *ds,
                   const uint32_t *idx, size_t n, train_eval *out);

/* Convenience: creates workspaces (and a pool if threads > 1), evaluates, frees them. */
int train_evaluate_simple(const nn_model *m, const data_dataset *ds, const uint32_t *idx,
                          size_t n, int threads, train_eval *out);

/* Per-class precision, recall, F1 from a confusion matrix (arrays of e->k). */
void train_eval_prf(const train_eval *e, double *precision, double *recall, double *f1);

#endif
