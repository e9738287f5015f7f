/* upload.h — a report body (the safetensors of an update) validated while it streams in.
 *
 * Layer `server`: uses core and nn (a model's parameter layout). Bytes are fed in whatever
 * pieces the network delivers: the 8-byte header length, then the JSON header (checked at
 * once against the spec: every parameter tensor, F32, the spec's shape, offsets contiguous),
 * then the tensor data, each float checked for finiteness and added to the running norm as it
 * passes. The data goes to an unlinked spool file, and with a sink attached (the
 * coordinator's accumulator) each checked run of whole floats is folded in at once, one
 * slice per tensor, so a connection holds a fixed buffer whatever the model; for a stored
 * report being reloaded it goes straight into a delta vector. A refusal is known as soon as
 * the byte that causes it arrives; srv_upload_finish checks the end (truncation, the norm,
 * the __metadata__). Afterwards srv_upload_body hands the body as received to the attempt
 * log, and a refused upload is taken back out of the sink with srv_upload_unfold.
 */
#ifndef AF_SERVER_UPLOAD_H
#define AF_SERVER_UPLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "nn/model.h"
#include "server/coord.h"

typedef struct srv_upload_rules {
    const nn_model *m;      /* the layout updates must have (borrowed) */
    double max_norm;        /* plan.max_update_norm */
    int need_tau;           /* fednova: __metadata__.tau is required */
    size_t max_len;         /* the body limit (413 beyond) */
    size_t body_len;        /* the declared Content-Length; 0 when unknown (chunked) */
    int need_unclipped;     /* DP adaptive clipping: __metadata__.unclipped (0 or 1) is required */
} srv_upload_rules;

/* What the metadata says, once srv_upload_finish succeeded (strings owned by the upload). */
typedef struct srv_update {
    int attempt;
    double num_samples, loss, tau;   /* loss/tau NaN when absent */
    int64_t eval_samples, eval_correct;
    double eval_loss;                /* NaN when absent */
    const char *eval_confusion;      /* JSON text as sent, or NULL */
    const int64_t *confusion;        /* C×C counts, or NULL */
    int unclipped;                   /* __metadata__.unclipped: 0 or 1, −1 when absent */
} srv_update;

typedef struct srv_upload srv_upload;

/* A new upload. With spool_dir the data bytes are kept (in an unlinked temporary file there,
 * on the database's file system) for srv_upload_body, srv_upload_delta and srv_upload_unfold; with spool_dir NULL they are scattered into delta[n_params] as they
 * come (delta must then be given). 0 or AF_ENOMEM. */
int srv_upload_create(const srv_upload_rules *rules, const char *spool_dir, float *delta,
                      srv_upload **out);
void srv_upload_free(srv_upload *u);

/* Feeds the next n bytes: 0 while the body is valid so far, else the refusal status (400 with
 * bad_safetensors/bad_shape/non_finite, 413 too_large) with r filled; later feeds then return
 * the same status and are ignored. */
int srv_upload_feed(srv_upload *u, const void *p, size_t n, srv_reply *r);
/* The body ended: 0 and *out when it is complete, within the norm and with valid metadata;
 * else the refusal status with r filled (bad_safetensors, over_norm, bad_field). */
int srv_upload_finish(srv_upload *u, srv_update *out, srv_reply *r);

/* Where a streaming upload folds its floats as they arrive. */
typedef struct srv_upload_sink {
    /* Adds (sub 0) or subtracts (sub 1) values[0..count) as parameters [offset, offset+count)
     * of an update of weight `weight` (tau: __metadata__.tau, NaN when absent); 0 or AF_E*
     * with nothing of the slice changed (fed_agg_add_slice / fed_agg_sub_slice). Called from
     * the feeding thread, slices of at most a few thousand floats, any order. */
    int (*fold)(void *ctx, size_t offset, const float *values, size_t count, double weight,
                double tau, int sub);
    /* Called once by srv_upload_free if the upload is still attached (its request ended
     * without the owner concluding it): the owner unfolds it and forgets it. May be NULL. */
    void (*release)(void *ctx, srv_upload *u);
    void *ctx;
    int unit_weight; /* weight 1 for every update (central DP), else __metadata__.num_samples */
} srv_upload_sink;

/* Attaches a sink to an upload made with a spool_dir, before its first byte: from then the
 * header must carry a valid __metadata__.num_samples (and tau when need_tau), refused at the
 * header with bad_field, and the floats are folded as they pass their checks; a fold error
 * refuses the upload (AF_ERANGE: over_norm). 0 or AF_ESTATE. */
int srv_upload_attach(srv_upload *u, const srv_upload_sink *s);
/* The owner has concluded the upload: srv_upload_free will not call sink.release. */
void srv_upload_detach(srv_upload *u);
/* Subtracts from the sink every float folded so far (read back from the spool in slices),
 * leaving it bitwise as before the upload; then nothing is folded. 0, AF_EIO, or the fold's
 * error. */
int srv_upload_unfold(srv_upload *u);

/* Body length, once finished. */
size_t srv_upload_len(const srv_upload *u);
/* The body as received (an upload made with a spool_dir, finished): iov[0..*n) in memory
 * (the length prefix and the JSON header), then *fd_len bytes of the spool file *fd from offset 0 (*fd -1 and *fd_len 0 when there is none). All of
 * it is owned by u. */
void srv_upload_body(const srv_upload *u, struct iovec iov[3], int *n, int *fd, size_t *fd_len);
/* The update's floats in parameter order (n_params of them): *out points to
 * scratch[n_params], filled by scattering the data read back from the spool. 0, AF_ESTATE (not a
 * finished, valid upload made with a spool_dir) or AF_EIO. */
int srv_upload_delta(srv_upload *u, float *scratch, const float **out);

#endif
