/* optim.h — optimizers as pure functions over flat arrays (PyTorch semantics, bit-for-bit
 * the same update formulas as torch.optim 1.13's single-tensor paths).
 *
 * Layer `nn`. The state (momentum, Adam moments) is one flat buffer per kind, allocated once
 * by nn_optim_create; a step allocates nothing.
 */
#ifndef AF_NN_OPTIM_H
#define AF_NN_OPTIM_H

#include <stddef.h>

typedef enum { NN_OPT_SGD = 0, NN_OPT_ADAM = 1 } nn_opt_kind;

typedef struct nn_optim_cfg {
    nn_opt_kind kind;
    float lr;
    float momentum;     /* SGD; 0 = plain SGD */
    int nesterov;       /* SGD, needs momentum > 0 */
    float weight_decay; /* L2 added to the gradient (torch's weight_decay) */
    float beta1, beta2, eps; /* Adam: 0.9, 0.999, 1e-8 */
} nn_optim_cfg;

typedef struct nn_optim {
    nn_optim_cfg cfg;
    size_t n;
    long step;          /* steps taken */
    float *m;           /* SGD momentum buffer or Adam first moment */
    float *v;           /* Adam second moment */
} nn_optim;

/* Defaults for a kind: SGD lr 0.01 or Adam lr 0.001, betas (0.9, 0.999), eps 1e-8. */
nn_optim_cfg nn_optim_defaults(nn_opt_kind kind);
/* Parses "sgd" / "adam" into *kind; AF_EINVAL otherwise. */
int nn_optim_parse_kind(const char *s, nn_opt_kind *kind);
/* Validates cfg (lr > 0, momentum in [0,1), nesterov needs momentum, …). 0 or AF_ERANGE. */
int nn_optim_check(const nn_optim_cfg *cfg);

/* Allocates the state for n parameters. 0 or AF_ENOMEM/AF_ERANGE. */
int nn_optim_init(nn_optim *o, const nn_optim_cfg *cfg, size_t n);
void nn_optim_deinit(nn_optim *o);
/* Forgets the state (new client, new round). */
void nn_optim_reset(nn_optim *o);

/* One step: params -= update(grads). grads is not modified. */
void nn_optim_step(nn_optim *o, float *params, const float *grads);

#endif
