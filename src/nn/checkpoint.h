/* checkpoint.h — a model as a safetensors file: every parameter tensor under its PyTorch
 * state_dict name and shape, the spec and training metadata in __metadata__.
 *
 * Layer `nn`. A checkpoint loads with `safetensors.torch.load_file` (then
 * `model.load_state_dict`) and with a few lines of plain Python; ours loads theirs if the
 * spec is given. Loading checks that every tensor of the spec is present with the right shape
 * and dtype, that no extra tensor is there, and that every value is finite.
 */
#ifndef AF_NN_CHECKPOINT_H
#define AF_NN_CHECKPOINT_H

#include <stddef.h>

#include "nn/model.h"

/* Serialises m into a malloc'd buffer (*out, *len). meta keys/vals (n_meta, may be 0) are
 * added to __metadata__ next to "format": "artificien/1" and "spec". */
int nn_checkpoint_serialize(const nn_model *m, const char *const *keys, const char *const *vals,
                            int n_meta, unsigned char **out, size_t *len);
/* Writes m to path atomically (no partial file on failure). */
int nn_checkpoint_save(const nn_model *m, const char *path, const char *const *keys,
                       const char *const *vals, int n_meta);

/* Loads a checkpoint. The model is built from the spec in __metadata__ unless spec_json is
 * given (needed for files written by PyTorch, which carry no spec). 0 or AF_E* with a message
 * naming the file and the tensor at fault. */
int nn_checkpoint_load(const char *path, const char *spec_json, nn_model **out);
/* The same from memory (`what` names it in messages). */
int nn_checkpoint_parse(const void *buf, size_t len, const char *what, const char *spec_json,
                        nn_model **out);
/* Copies the tensors of a parsed buffer into an existing model of the same spec (weights for
 * a known model, e.g. a device receiving a new global checkpoint). */
int nn_checkpoint_load_into(nn_model *m, const void *buf, size_t len, const char *what);

/* Reads one __metadata__ value of a checkpoint file into buf (empty if absent). */
int nn_checkpoint_meta(const char *path, const char *key, char *buf, size_t cap);

#endif
