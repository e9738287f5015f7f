/* store.h — the coordinator's persistence: one SQLite database in WAL mode.
 *
 * Layer `store`: uses core and SQLite only; knows nothing about HTTP, models or strategies —
 * weights, updates and strategy state are opaque blobs, specs and plans opaque JSON text.
 * The schema is versioned with PRAGMA user_version and migrated on open, one transaction per
 * step (docs/coordinator.md lists the tables). Every function that changes several rows does
 * it in one transaction, so a process killed at any moment leaves either all or none of it.
 * A store handle is not thread-safe: the server serialises calls with its own lock.
 *
 *   store *st; store_open("artificien.db", 0, &st);
 *   store_report_add(st, &key, &rep);      // committed (in the WAL) when it returns 0
 *   store_close(st);
 */
#ifndef AF_STORE_STORE_H
#define AF_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

/* The schema version this build writes (PRAGMA user_version). */
#define STORE_SCHEMA_VERSION 1
/* SHA-256 digests of keys and tokens. */
#define STORE_HASH_BYTES 32

typedef struct store store;

/* Opens (creating if needed) the database at path: WAL journal, synchronous=NORMAL (durable
 * against a killed process; durable_full=1 gives synchronous=FULL, durable against power
 * loss), foreign keys on, then migrates the schema to STORE_SCHEMA_VERSION. Returns 0,
 * AF_EIO (cannot open), AF_EFORMAT (not a database, or written by a newer version: the
 * message gives both versions) with a message naming path. *out: free with store_close. */
int store_open(const char *path, int durable_full, store **out);
/* Closes it; NULL is fine. */
void store_close(store *st);

/* The database's PRAGMA user_version. */
int store_schema_version(store *st);

/* ---- settings (key/value text) ---- */

/* Copies the value of key into buf (cap bytes). AF_ENOTFOUND if absent. */
int store_meta_get(store *st, const char *key, char *buf, size_t cap);
int store_meta_set(store *st, const char *key, const char *value);

/* ---- principals: owners, enrolment secrets, devices (only hashes are stored) ---- */

/* Adds an owner; *id receives its id. AF_ESTATE if the name is taken. */
int store_owner_add(store *st, const char *name, const uint8_t hash[STORE_HASH_BYTES],
                    int64_t *id);
/* Finds the owner holding the key with this hash: 0 and *id, or AF_ENOTFOUND. */
int store_owner_find(store *st, const uint8_t hash[STORE_HASH_BYTES], int64_t *id);
int store_secret_add(store *st, const uint8_t hash[STORE_HASH_BYTES]);
/* 0 if an enrolment secret with this hash exists, else AF_ENOTFOUND. */
int store_secret_find(store *st, const uint8_t hash[STORE_HASH_BYTES]);
/* Adds a device with its token hash and declared dataset schema (JSON text). */
int store_device_add(store *st, const uint8_t hash[STORE_HASH_BYTES], const char *dataset,
                     int64_t *id);
int store_device_find(store *st, const uint8_t hash[STORE_HASH_BYTES], int64_t *id);
/* The dataset schema a device declared at enrolment (malloc'd text, caller frees). */
int store_device_dataset(store *st, int64_t id, char **dataset);
int64_t store_device_count(store *st);

/* ---- projects and checkpoints ---- */

typedef struct store_project {
    int64_t id, owner_id;
    char name[128];
    char *spec, *plan;      /* JSON text, owned: store_project_clear */
    char status[16];        /* "running" or "done" */
    int64_t version;        /* latest checkpoint version = committed rounds */
    double created_at;
} store_project;

void store_project_clear(store_project *p);

/* Creates a project with its version-0 checkpoint (blob of len bytes) in one transaction. */
int store_project_add(store *st, int64_t owner_id, const char *name, const char *spec,
                      const char *plan, const void *ckpt, size_t len, int64_t *id);
/* 0 and *out (owned strings: store_project_clear), or AF_ENOTFOUND. */
int store_project_get(store *st, int64_t id, store_project *out);
/* Calls fn for every project of owner_id (all projects if owner_id < 0), by id. fn's
 * project is only valid during the call; a non-zero return stops and is returned. */
int store_project_each(store *st, int64_t owner_id,
                       int (*fn)(void *user, const store_project *p), void *user);

/* Replaces the checkpoint of version 0 — only while the project has no round: AF_ESTATE
 * once a round has opened. */
int store_checkpoint_replace_initial(store *st, int64_t project, const void *ckpt, size_t len);
/* A checkpoint's bytes and the strategy state stored with it (malloc'd; *state NULL and
 * *state_len 0 when none; either out pointer may be NULL). AF_ENOTFOUND if absent. */
int store_checkpoint_get(store *st, int64_t project, int64_t version, void **ckpt, size_t *len,
                         void **state, size_t *state_len);
typedef struct store_checkpoint_info {
    int64_t version, round;
    size_t bytes;
    double created_at;
} store_checkpoint_info;
int store_checkpoint_each(store *st, int64_t project,
                          int (*fn)(void *user, const store_checkpoint_info *c), void *user);

/* ---- rounds ---- */

/* One attempt of one round. The stats are written when it closes. */
typedef struct store_round {
    int64_t project;
    int number, attempt;
    char state[16];          /* "open", "committed", "abandoned" */
    int64_t version;         /* the checkpoint it trains from */
    double opened_at, deadline_at, closed_at;
    int selected, reports, refused;
    double train_loss;       /* sample-weighted mean of the reports' loss (NaN if none) */
    int64_t eval_samples, eval_correct;
    double eval_loss;        /* sample-weighted mean eval loss (NaN if none) */
    char *confusion;         /* population confusion matrix as JSON, owned; may be NULL */
} store_round;

void store_round_clear(store_round *r);

/* Inserts an open attempt (r's project, number, attempt, version, opened_at, deadline_at). */
int store_round_open(store *st, const store_round *r);
/* The open attempt of a project: 0 and *out, or AF_ENOTFOUND. */
int store_round_get_open(store *st, int64_t project, store_round *out);
/* The highest attempt of round `number` (0 if the round never opened) and its state. */
int store_round_last_attempt(store *st, int64_t project, int number, int *attempt,
                             char state[16]);
/* Every attempt of a project in order (number, attempt). */
int store_round_each(store *st, int64_t project,
                     int (*fn)(void *user, const store_round *r), void *user);
int store_round_count(store *st, int64_t project);

/* Commits an open attempt in one transaction: inserts checkpoint new_version (its bytes and
 * the strategy state after the update), writes r's stats and state "committed", moves the
 * project to new_version (and to "done" if done), and deletes the attempt's report blobs.
 * AF_ESTATE (nothing changed) if the attempt is not open. */
int store_round_commit(store *st, const store_round *r, int64_t new_version, const void *ckpt,
                       size_t len, const void *state, size_t state_len, int done);
/* Abandons an open attempt: its stats, state "abandoned", its reports deleted; one transaction. */
int store_round_abandon(store *st, const store_round *r);

/* ---- selections and reports of an attempt ---- */

typedef struct store_attempt_key {
    int64_t project;
    int number, attempt;
} store_attempt_key;

/* Records that device was selected for the attempt (and bumps its selected count). AF_ESTATE
 * if it already was. */
int store_selection_add(store *st, const store_attempt_key *k, int64_t device);
/* 1 if the device was ever selected for a round of the project, else 0 (or AF_E*). */
int store_selection_in_project(store *st, int64_t project, int64_t device);
int store_selection_each(store *st, const store_attempt_key *k,
                         int (*fn)(void *user, int64_t device), void *user);

typedef struct store_report {
    int64_t device;
    double num_samples, loss, tau;     /* loss/tau NaN when absent */
    int64_t eval_samples, eval_correct;
    double eval_loss;                  /* NaN when absent */
    const char *eval_confusion;        /* JSON text or NULL */
    const void *data;                  /* the update as received (safetensors) */
    size_t len;
    double created_at;
} store_report;

/* Inserts one report and commits it: when this returns 0 the report survives a killed
 * process. AF_ESTATE (nothing written) if the device already reported in this attempt. */
int store_report_add(store *st, const store_attempt_key *k, const store_report *r);
/* The same, for an update that is not in memory: the len bytes of the blob are produced by
 * fill(user, off, buf, n) chunk by chunk (n <= 64 KiB, in order) and written with incremental
 * blob I/O, the whole in one transaction. A non-zero return of fill aborts (nothing is
 * written) and is returned. r->data is ignored. */
int store_report_add_stream(store *st, const store_attempt_key *k, const store_report *r,
                            size_t len, int (*fill)(void *user, size_t off, void *buf, size_t n),
                            void *user);
/* Calls fn for every stored report of the attempt, in arrival order (data valid during the
 * call only). */
int store_report_each(store *st, const store_attempt_key *k,
                      int (*fn)(void *user, const store_report *r), void *user);

/* Wall-clock time in seconds since the Unix epoch (what the store records). */
double store_now(void);

#endif
