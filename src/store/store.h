/* store.h — the coordinator's persistence: one SQLite database in WAL mode, and beside it one
 * append-only log per open round attempt (its selections and accepted reports).
 *
 * Layer `store`: uses core, SQLite and zlib's crc32 only; knows nothing about HTTP, models or
 * strategies — weights, updates and strategy state are opaque blobs, specs and plans opaque
 * JSON text. The schema is versioned with PRAGMA user_version and migrated on open, one
 * transaction per step (docs/coordinator.md lists the tables). Every function that changes
 * several rows does it in one transaction, so a process killed at any moment leaves either all
 * or none of it. A store handle is not thread-safe: the server serialises calls with its own
 * lock; an attempt log handle is (appends from several threads are serialised inside).
 *
 *   store *st; store_open("artificien.db", 0, &st);
 *   store_log *l; store_log_open(st, &key, &l);
 *   store_log_report(l, device, now, iov, 3, -1, 0);  // survives a killed process when it returns 0
 *   store_round_commit(st, &round, …, sel, n_sel);    // closes the attempt, drops its log
 *   store_log_close(l); store_close(st);
 */
#ifndef AF_STORE_STORE_H
#define AF_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* The schema version this build writes (PRAGMA user_version). */
#define STORE_SCHEMA_VERSION 4
/* SHA-256 digests of keys and tokens. */
#define STORE_HASH_BYTES 32

typedef struct store store;

/* Opens (creating if needed) the database at path: WAL journal, synchronous=NORMAL (durable
 * against a killed process; durable_full=1 gives synchronous=FULL, durable against power
 * loss, and an fdatasync per attempt-log record), foreign keys on, then migrates the schema
 * to STORE_SCHEMA_VERSION and deletes the logs (in the folder PATH.rounds) of attempts that
 * are no longer open. Returns 0,
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
/* Devices whose declared schema has "name" = dataset (the population a DP plan samples
 * from); a count ≥ 0, or AF_EIO. */
int64_t store_device_count_dataset(store *st, const char *dataset);

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

/* Marks a project "done" (its privacy budget cannot pay for another round). */
int store_project_set_done(store *st, int64_t id);
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
    double dp_q;             /* DP rounds: the sampling rate the accountant charged (NaN: no DP) */
    double epsilon;          /* DP rounds: ε spent after this round (NaN: no DP) */
    double dp_clip;          /* DP rounds: the clip norm the next round uses (NaN/0: none) */
    char *result;            /* a round's result as JSON (label statistics), owned; may be NULL */
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

/* A device handed the task of an attempt, and when. */
typedef struct store_selection {
    int64_t device;
    double at;
} store_selection;

/* Commits an open attempt in one transaction: inserts checkpoint new_version (its bytes and
 * the strategy state after the update), writes r's stats and state "committed", records the
 * attempt's selections sel[n_sel] (and their count), and moves the project to new_version
 * (and to "done" if done); then deletes the attempt's log. AF_ESTATE (nothing changed) if
 * the attempt is not open. */
int store_round_commit(store *st, const store_round *r, int64_t new_version, const void *ckpt,
                       size_t len, const void *state, size_t state_len, int done,
                       const store_selection *sel, size_t n_sel);
/* Abandons an open attempt: its stats, state "abandoned" and its selections in one
 * transaction, then deletes its log. */
int store_round_abandon(store *st, const store_round *r, const store_selection *sel,
                        size_t n_sel);

/* ---- selections of closed attempts, and the log of an open one ---- */

typedef struct store_attempt_key {
    int64_t project;
    int number, attempt;
} store_attempt_key;

/* 1 if the device was selected for a closed attempt of the project, else 0 (or AF_E*). */
int store_selection_in_project(store *st, int64_t project, int64_t device);

/* While an attempt is open, its selections and accepted reports are appended to its log,
 * PATH.rounds/pP-rN-aA.log (0600): one pwritev per record and no SQLite transaction, so an
 * append costs about one copy of the bytes into the page cache. When an append returns 0 the
 * record survives a killed process (with durable_full it has also been fdatasync'ed, and it
 * carries a CRC-32 checked on replay: a power loss). A failed append leaves nothing behind.
 * The attempt's close (store_round_commit/abandon) records the selections in SQLite and then
 * deletes the log. */
typedef struct store_log store_log;

enum { STORE_LOG_SELECTION = 1, STORE_LOG_REPORT = 2 };

typedef struct store_log_record {
    int type;              /* STORE_LOG_SELECTION or STORE_LOG_REPORT */
    int64_t device;
    double at;             /* when it was appended (Unix seconds) */
    const void *data;      /* a report's body as received; valid during the callback only */
    size_t len;
} store_log_record;

/* Opens the log of attempt k, creating it (empty) if there is none. A record cut short by a
 * process killed in the middle of an append is removed (it was never acknowledged).
 * AF_EFORMAT if the file is the log of another attempt; AF_EIO. *out: store_log_close. */
int store_log_open(store *st, const store_attempt_key *k, store_log **out);
/* Closes the handle (the file stays until the attempt closes). NULL is fine. */
void store_log_close(store_log *l);
/* Appends "device was selected at time at". 0 or AF_EIO. Thread-safe. */
int store_log_selection(store_log *l, int64_t device, double at);
/* Appends a report of device: its body is iov[0..iovcnt) (at most 7 pieces) followed by
 * fd_len bytes read from fd at offset 0 (fd -1 and fd_len 0 when it is all in memory).
 * 0 or AF_EIO. Thread-safe. */
int store_log_report(store_log *l, int64_t device, double at, const struct iovec *iov,
                     int iovcnt, int fd, size_t fd_len);
/* Calls fn for every record in the order they were appended; a non-zero return stops and is
 * returned. Not concurrently with appends. */
int store_log_each(store_log *l, int (*fn)(void *user, const store_log_record *r), void *user);

/* Wall-clock time in seconds since the Unix epoch (what the store records). */
double store_now(void);

#endif
