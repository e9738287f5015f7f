/* coord.h — the coordinator: principals, projects, and the round state machine
 * (check-in → selection → task → reports → commit or abandon) over the store.
 *
 * Layer `server`: uses core, nn (specs, checkpoints, safetensors), fed (strategies, the exact
 * accumulator) and store. Knows nothing about HTTP: each operation takes parsed inputs and
 * fills an srv_reply (status, JSON or binary body, or an error code and message as in
 * docs/api.md); the HTTP layer (server.c) only routes, checks roles and content types, and
 * writes replies. All operations are thread-safe: one lock around the state and the store;
 * parsing and validating an update, appending it to the attempt's log and folding it into a
 * partial sum happen outside it.
 *
 * In memory per project: the global model, the strategy and its state, and the exact
 * accumulator of the open attempt (with a second partial one for parallel folds), into which
 * every acknowledged report has been folded. Every change is first written to the store (a
 * report or a selection to the attempt's log, a close to SQLite), so srv_coord_open rebuilds
 * the same state after a crash: open attempts are reloaded from their logs and their reports
 * folded in again.
 */
#ifndef AF_SERVER_COORD_H
#define AF_SERVER_COORD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "nn/model.h"
#include "server/metrics.h"

/* A reference-counted immutable byte buffer (checkpoints served to many devices at once). */
typedef struct srv_blob {
    atomic_int refs;
    size_t len;
    unsigned char data[];
} srv_blob;
void srv_blob_ref(srv_blob *b);
/* Drops a reference; frees at zero. NULL is fine. */
void srv_blob_release(srv_blob *b);

typedef enum { SRV_ANON = 0, SRV_ADMIN = 1, SRV_OWNER = 2, SRV_DEVICE = 4 } srv_role;
typedef struct srv_principal {
    srv_role role;
    int64_t id;            /* owner or device id */
} srv_principal;

/* What an operation answers: a status and a JSON body, a binary body, or an error. */
typedef struct srv_reply {
    int status;
    const char *code;      /* error code ("bad_field") when status >= 400, else NULL */
    char msg[512];         /* error message naming the field */
    cJSON *json;           /* success body, owned */
    srv_blob *blob;        /* binary body, one reference owned */
    char etag[48];         /* set with blob (and with 304) */
    const char *ctype;     /* Content-Type of a blob body (static; NULL: octet-stream) */
} srv_reply;

void srv_reply_clear(srv_reply *r);
/* Sets an error reply; returns status. */
int srv_reply_error(srv_reply *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef struct srv_coord_config {
    nn_caps caps;          /* limits on submitted specs (params, FLOPs, activations) */
    size_t max_body;       /* the largest update body (0: 64 MiB) */
    double retry_after_s;  /* pace steering: base wait for an idle device (default 5 s) */
    int durable_full;      /* SQLite synchronous=FULL instead of NORMAL */
} srv_coord_config;

typedef struct srv_coord srv_coord;

/* Opens the database at db_path (created and migrated as needed), creates the admin key and
 * an enrolment secret on first start (written to DB.admin-key and DB.enroll-secret, 0600),
 * loads every project and reloads open round attempts with their stored reports. metrics is
 * borrowed (may be NULL). 0 or AF_E* with a message. */
int srv_coord_open(const char *db_path, const srv_coord_config *cfg, srv_metrics *metrics,
                   srv_coord **out);
/* Frees everything and closes the store (open attempts stay open on disk). NULL is fine. */
void srv_coord_free(srv_coord *c);
/* Paths of the key files next to the database (owned by c). */
const char *srv_coord_admin_key_path(const srv_coord *c);
const char *srv_coord_secret_path(const srv_coord *c);
long long srv_coord_devices(srv_coord *c);

/* Resolves a bearer token to a principal: 0, or AF_EAUTH with a message. */
int srv_coord_auth(srv_coord *c, const char *token, size_t len, srv_principal *out);

/* The operations. Callers have checked the principal's role (admin for owners/secrets,
 * owner for projects, device for check-in and reports); each fills r. */
void srv_coord_owner_create(srv_coord *c, const cJSON *body, srv_reply *r);
void srv_coord_secret_create(srv_coord *c, srv_reply *r);
void srv_coord_device_enroll(srv_coord *c, const cJSON *body, srv_reply *r);
void srv_coord_project_create(srv_coord *c, const srv_principal *p, const cJSON *body,
                              srv_reply *r);
void srv_coord_project_list(srv_coord *c, const srv_principal *p, srv_reply *r);
void srv_coord_project_get(srv_coord *c, const srv_principal *p, int64_t id, srv_reply *r);
void srv_coord_checkpoint_put(srv_coord *c, const srv_principal *p, int64_t id,
                              const void *data, size_t len, srv_reply *r);
void srv_coord_checkpoint_list(srv_coord *c, const srv_principal *p, int64_t id, srv_reply *r);
/* version: decimal or "latest"; if_none_match: the request header or NULL (→ 304). */
void srv_coord_checkpoint_get(srv_coord *c, const srv_principal *p, int64_t id,
                              const char *version, const char *if_none_match, srv_reply *r);
/* A device checks in (docs/api.md): a task of the first project whose data and caps it
 * fits (selected, recorded in the attempt's log), or {"action": "wait", "retry_after",
 * "reason"}. */
void srv_coord_checkin(srv_coord *c, const srv_principal *p, const cJSON *body, srv_reply *r);
typedef struct srv_upload srv_upload;
/* Starts a report, before its body arrives: checks that this device may report to round
 * `round` of project id now and opens a streaming upload (upload.h) for the body of
 * body_len bytes (the Content-Length; 0 when unknown). 0 and *up
 * (the caller feeds it with srv_upload_feed and frees it), else the refusal status with r
 * filled (404, 403, 409 late/duplicate, 500). *cut_at (Unix seconds) is when the caller must
 * drop a body still arriving: the attempt's deadline plus a grace (a quarter of
 * round_deadline_s, 5 s to 5 min), since an upload in progress holds its attempt open and a
 * device trickling bytes must not hold it forever. */
int srv_coord_report_begin(srv_coord *c, const srv_principal *who, int64_t id, int round,
                           size_t body_len, srv_upload **up, double *cut_at, srv_reply *r);
/* The body has ended: finishes the validation, re-checks the round's state, appends the
 * update to the attempt's log (from memory, or from the upload's spool file), folds it into
 * the round's accumulator and, when it is the last report in flight of an attempt at its
 * goal count (or past its deadline), closes the attempt. Fills r (200 once the update is on
 * disk, or the refusal). up stays the caller's. */
void srv_coord_report_finish(srv_coord *c, const srv_principal *who, int64_t id, int round,
                             srv_upload *up, srv_reply *r);

/* Secure aggregation (docs/api.md "Secure aggregation"): the phases of a round of a project
 * with plan.secagg, for a device selected in its open attempt. step is the last path
 * segment: GET "keys", "shares", "survivors" (202 while the phase is open); POST
 * "advertise", "shares", "unmask" with a JSON body; srv_coord_secagg_masked takes the masked
 * input's raw body (len words u32 LE ‖ 64-byte signature). */
void srv_coord_secagg_get(srv_coord *c, const srv_principal *who, int64_t id, int round,
                          const char *step, srv_reply *r);
void srv_coord_secagg_post(srv_coord *c, const srv_principal *who, int64_t id, int round,
                           const char *step, const cJSON *body, srv_reply *r);
void srv_coord_secagg_masked(srv_coord *c, const srv_principal *who, int64_t id, int round,
                             const void *data, size_t len, srv_reply *r);

/* Closes every open attempt whose deadline has passed and that has no report in flight:
 * commit if it has min_reports, else abandon (the next check-in opens a new attempt). Called
 * by the server's timer thread. */
void srv_coord_tick(srv_coord *c);

#endif
