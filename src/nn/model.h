/* model.h — a neural network built from a JSON spec, with one flat parameter buffer.
 *
 * Layer `nn`: uses core and tensor. A model is data, not code: a spec names layers from a
 * fixed vocabulary (conv2d, maxpool2d, relu, flatten, linear, dropout) and is validated
 * (known layers, consistent shapes, size caps) before anything runs it. Parameters live in
 * one float buffer; each parameterised layer holds offsets into it, in the order and with the
 * names and shapes of the equivalent PyTorch state_dict ("conv1.weight" is [6,1,5,5]).
 * Activations live in a separate nn_ws (one per thread), so one model serves many threads.
 *
 *   nn_model *m; nn_model_from_file("models/fashion_cnn.json", &m);
 *   nn_model_init(m, 1);                       // PyTorch default init, seed 1
 *   nn_ws *ws = nn_ws_create(m, 100);          // activations for batches up to 100
 *   const float *logits = nn_forward(m, ws, x, 100, 1, seed);
 *   double loss = nn_loss(m, ws, y, 100, 1.0f/100, &correct);   // sum of losses
 *   nn_backward(m, ws, x, 100, grads);        // grads += d(mean loss)/d params
 */
#ifndef AF_NN_MODEL_H
#define AF_NN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/kernels.h"

#define NN_NAME_MAX 64
#define NN_MAX_LAYERS 64

typedef enum {
    NN_CONV2D = 0,
    NN_MAXPOOL2D,
    NN_RELU,
    NN_FLATTEN,
    NN_LINEAR,
    NN_DROPOUT,
} nn_kind;

typedef struct nn_layer {
    nn_kind kind;
    char name[NN_NAME_MAX];  /* "conv1"; auto-named "relu3" etc. when the spec gives none */
    int in_c, in_h, in_w;    /* per-sample input shape (features: c=n, h=w=1) */
    int out_c, out_h, out_w; /* per-sample output shape */
    size_t in_n, out_n;      /* floats per sample */
    tn_conv2d geo;           /* conv2d / maxpool2d geometry */
    int in_features, out_features; /* linear */
    float p;                 /* dropout probability */
    size_t w_off, w_n;       /* weight offset and count in the flat buffer (0 if none) */
    size_t b_off, b_n;       /* bias */
    int has_bias;
} nn_layer;

/* One named parameter tensor (a view into the flat buffer). */
typedef struct nn_param {
    char name[NN_NAME_MAX + 8];   /* "conv1.weight" */
    int ndim;
    int shape[4];
    size_t off, n;
} nn_param;

typedef struct nn_model {
    char name[NN_NAME_MAX];
    int in_c, in_h, in_w;
    int n_classes;
    int n_layers;
    nn_layer layers[NN_MAX_LAYERS];
    int n_params_t;          /* number of parameter tensors */
    nn_param params_t[2 * NN_MAX_LAYERS];
    size_t n_params;         /* total floats */
    float *params;           /* the flat parameter buffer, owned */
    char *spec_json;         /* canonical spec (compact JSON), owned */
    double flops_fwd;        /* multiply-adds ×2 of one sample's forward pass */
} nn_model;

/* Caps a spec must respect (validated at build time). */
typedef struct nn_caps {
    size_t max_params;       /* default 50,000,000 */
    double max_flops;        /* per-sample forward FLOPs, default 1e10 */
    size_t max_act;          /* per-sample activation floats, default 50,000,000 */
} nn_caps;

/* Builds a model from spec text (not initialised: parameters are zero). `what` names the
 * source in messages. caps may be NULL for the defaults. 0 or AF_EFORMAT/AF_ESHAPE/AF_ERANGE
 * with a message naming the layer and the problem. *out owned by the caller (nn_model_free). */
int nn_model_from_json(const char *json, const char *what, const nn_caps *caps, nn_model **out);
int nn_model_from_file(const char *path, const nn_caps *caps, nn_model **out);
void nn_model_free(nn_model *m);

/* A new model with the same spec and a copy of the parameters. */
int nn_model_clone(const nn_model *m, nn_model **out);

/* PyTorch's default initialisation from an explicit seed: weights and biases of conv2d and
 * linear ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform_ with a=sqrt(5), and the bias
 * rule of nn.Conv2d/nn.Linear.reset_parameters). */
void nn_model_init(nn_model *m, uint64_t seed);

/* Looks up a parameter tensor by state_dict name; NULL if absent. */
const nn_param *nn_model_param(const nn_model *m, const char *name);

/* Writes a human-readable table (layer, type, output shape, parameters) to buf. */
void nn_model_summary(const nn_model *m, char *buf, size_t cap);

/* Per-thread workspace: activations and gradients for batches up to max_batch. */
typedef struct nn_ws nn_ws;
nn_ws *nn_ws_create(const nn_model *m, int max_batch);
void nn_ws_free(nn_ws *ws);
int nn_ws_max_batch(const nn_ws *ws);

/* Forward pass of b <= max_batch samples x (b, in_c, in_h, in_w). train=1 enables dropout
 * (masks from `seed`). Returns the logits (b, n_classes), owned by ws. */
const float *nn_forward(const nn_model *m, nn_ws *ws, const float *x, int b, int train,
                        uint64_t seed);

/* Softmax cross-entropy of the last forward's logits against labels: returns the SUM of the
 * b per-sample losses and stores scale·(softmax - onehot) as the logits' gradient for
 * nn_backward (scale = 1/B for the mean over a batch of B). correct may be NULL. */
double nn_loss(const nn_model *m, nn_ws *ws, const uint8_t *labels, int b, float scale,
               int *correct);

/* Backward pass after nn_forward + nn_loss on the same x: grads (n_params) += dL/dparams. */
void nn_backward(const nn_model *m, nn_ws *ws, const float *x, int b, float *grads);

/* Parameter gradients only for tests: the gradient of the logits wrt x is not needed. */

#endif
