/* secround.h — the device's side of one secure-aggregation round over HTTP (docs/api.md
 * "Secure aggregation"): advertise keys, fetch U1, post the encrypted shares, fetch the
 * shares addressed to this device, send the masked vector, fetch the survivors, reveal.
 * The protocol's state is fed/secagg.h's secagg_client, the bytes are fed/secwire.h's.
 *
 * Layer `client`: core, fed, client/http.h, client/task.h, cJSON, libsodium. What the device
 * feeds into the sum (training, label counts) is the caller's, through two hooks; this file
 * only drives the exchange. Never prints, never exits; the round's secrets live in memory
 * only and are wiped on every exit path.
 */
#ifndef AF_CLIENT_SECROUND_H
#define AF_CLIENT_SECROUND_H

#include <signal.h>
#include <stdint.h>

#include "artificien/client.h"
#include "client/http.h"
#include "client/task.h"
#include "core/rng.h"
#include "fed/secwire.h"

/* How long past a phase's deadline a device still waits for the phase to close: the
 * coordinator closes phases on a timer tick, and clocks differ a little. */
#define CLIENT_SECROUND_GRACE_S 1.0

/* After each of the first three phases this device completed ("advertise", "share_keys",
 * "masked_input"): non-zero ends the round for the device right there, as if it had
 * vanished (ARTIFICIEN_ABANDONED, reason "dropped"). Internal: tests use it to drop
 * devices. */
typedef int (*client_secround_phase_fn)(void *user, const artificien_result *res,
                                        const char *phase);

typedef struct client_secround_io {
    client_http *http;
    const char *token;                 /* the device token */
    volatile sig_atomic_t *stop;       /* artificien_client_stop: honoured between requests and
                                          while polling (may be NULL) */
    const uint8_t *sign_sk;            /* the identity secret key, SECAGG_SIGN_SK_BYTES */
    /* Once the shares are posted, while the other devices post theirs: the work that needs
     * nothing from the round (download the checkpoint). May be NULL. Returns 0, 1 (the round
     * ends for this device: res->action and reason set, nothing more is sent) or an error. */
    int (*prepare)(void *user, artificien_result *res);
    /* Fills words[0..L->len) with the device's vector (secwire_encode_train/_labels) and res's
     * statistics. noise is seeded from the OS's CSPRNG (never from the config seed: a
     * predictable draw could be subtracted). Returns 0, 1 (ends, as above) or an error. */
    int (*input)(void *user, const secwire_layout *L, af_rng *noise, uint32_t *words,
                 artificien_result *res);
    void *user;                        /* passed to prepare and input */
    client_secround_phase_fn on_phase; /* may be NULL */
    void *phase_user;                  /* passed to on_phase */
} client_secround_io;

/* Runs the round of task t (t->secagg.on; L from client_secagg_layout) and fills res:
 *   ARTIFICIEN_TRAINED (kind train) or ARTIFICIEN_COUNTED (label_stats): the reveals were
 *     accepted, so the vector is in the sum; res->reports = |U3|, the devices summed;
 *   ARTIFICIEN_REJECTED: the coordinator refused a message (any 4xx but 401: reason = its
 *     error code, e.g. "late", "wrong_phase", "bad_signature"; http_status set), a phase did
 *     not close by its deadline + CLIENT_SECROUND_GRACE_S (reason "secagg_deadline"), or the
 *     coordinator's lists failed this device's checks (reason "secagg");
 *   ARTIFICIEN_ABANDONED: stop was requested (reason "stopped"), or on_phase said so
 *     ("dropped");
 *   or whatever a hook set when it returned 1.
 * res->bytes_up/bytes_down grow by every exchange. Order (liveness: the share phase closes
 * early): advertise, GET keys, POST shares, prepare(), GET shares, input(), POST masked,
 * GET survivors, POST unmask; a GET answered 202 is retried after its retry_after.
 * Returns 0, or an error: AF_ENET (network, 5xx), AF_EAUTH (HTTP 401: the token was
 * refused), AF_EFORMAT (a malformed answer), AF_ENOMEM, or a hook's error. */
int client_secround_run(const client_secround_io *io, const client_task *t,
                        const secwire_layout *L, artificien_result *res);

/* Test hook (internal, never in the public header): on_phase for every secure round that
 * artificien_client c runs from now on (fn NULL: none). Defined in client.c. */
void client_set_phase_hook(artificien_client *c, client_secround_phase_fn fn, void *user);

#endif
