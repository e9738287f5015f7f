/* store.c — SQLite persistence for the coordinator, and the append-only logs of open
 * attempts (see store.h).
 *
 * Hot statements are prepared once and cached on the handle (stmt()); every multi-row change
 * runs between BEGIN IMMEDIATE and COMMIT, rolled back on any error so a failed call changes
 * nothing. Migrations are an array of steps, each run in its own transaction together with
 * the user_version bump: a database is always at exactly one schema version.
 *
 * An attempt log is a 32-byte file header (magic, attempt key) then records, each a 40-byte
 * header (magic, type, flags, CRC-32 of the body with --durable full, device, time, body
 * length) and its body. Records are appended with one pwritev at the end the handle tracks,
 * under the handle's mutex, so a process killed mid-append leaves at most one short record,
 * at the end, which the next open cuts off. Logs use zlib's crc32, nothing else beyond libc.
 */
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>
#include <zlib.h>

#include "core/err.h"
#include "core/log.h"

enum {
    Q_META_GET, Q_META_SET, Q_OWNER_ADD, Q_OWNER_FIND, Q_SECRET_ADD, Q_SECRET_FIND,
    Q_DEVICE_ADD, Q_DEVICE_FIND, Q_DEVICE_DATASET, Q_DEVICE_COUNT, Q_PROJECT_GET,
    Q_CKPT_GET, Q_ROUND_OPEN, Q_ROUND_GET_OPEN, Q_ROUND_LAST, Q_SEL_ADD, Q_SEL_PROJECT,
    Q_COUNT
};

struct store {
    sqlite3 *db;
    char *path;
    char *log_dir;          /* DB.rounds: the attempt logs */
    int durable_full;
    sqlite3_stmt *q[Q_COUNT];
};

double store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int db_err(store *st, const char *what)
{
    return af_seterr(AF_EIO, "%s: %s: %s", st->path, what, sqlite3_errmsg(st->db));
}

/* The cached prepared statement `id` (prepared on first use), reset and unbound. */
static sqlite3_stmt *stmt(store *st, int id, const char *sql)
{
    if (!st->q[id]) {
        if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st->q[id], NULL) !=
            SQLITE_OK) {
            db_err(st, "prepare");
            return NULL;
        }
    }
    sqlite3_reset(st->q[id]);
    sqlite3_clear_bindings(st->q[id]);
    return st->q[id];
}

static int exec(store *st, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = af_seterr(AF_EIO, "%s: %s", st->path, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int begin(store *st) { return exec(st, "BEGIN IMMEDIATE"); }
static int commit(store *st) { return exec(st, "COMMIT"); }
static void rollback(store *st)
{
    if (!sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Steps a statement that returns no row; SQLITE_CONSTRAINT becomes AF_ESTATE. */
static int step_done(store *st, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return 0;
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return af_seterr(AF_ESTATE, "%s: already exists", what);
    return db_err(st, what);
}

static double col_double_or_nan(sqlite3_stmt *s, int i)
{
    return sqlite3_column_type(s, i) == SQLITE_NULL ? NAN : sqlite3_column_double(s, i);
}

static void bind_double_or_null(sqlite3_stmt *s, int i, double v)
{
    if (isfinite(v))
        sqlite3_bind_double(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

static char *col_strdup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}

/* ---- schema and migrations ---------------------------------------------------------------- */

/* 0 → 1: the first schema. Later versions append a function to `migrations`. */
static int migrate_0_to_1(store *st)
{
    return exec(st,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
        "  key_hash BLOB NOT NULL UNIQUE, created_at REAL NOT NULL);"
        "CREATE TABLE enroll_secrets (id INTEGER PRIMARY KEY, secret_hash BLOB NOT NULL UNIQUE,"
        "  created_at REAL NOT NULL);"
        "CREATE TABLE devices (id INTEGER PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE,"
        "  dataset TEXT NOT NULL, created_at REAL NOT NULL);"
        "CREATE TABLE projects (id INTEGER PRIMARY KEY,"
        "  owner_id INTEGER NOT NULL REFERENCES owners(id), name TEXT NOT NULL,"
        "  spec TEXT NOT NULL, plan TEXT NOT NULL, status TEXT NOT NULL,"
        "  version INTEGER NOT NULL, created_at REAL NOT NULL);"
        "CREATE INDEX projects_owner ON projects(owner_id);"
        "CREATE TABLE checkpoints (project_id INTEGER NOT NULL REFERENCES projects(id),"
        "  version INTEGER NOT NULL, round INTEGER NOT NULL, data BLOB NOT NULL,"
        "  strategy_state BLOB, created_at REAL NOT NULL, PRIMARY KEY (project_id, version));"
        "CREATE TABLE rounds (project_id INTEGER NOT NULL REFERENCES projects(id),"
        "  number INTEGER NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL,"
        "  version INTEGER NOT NULL, opened_at REAL NOT NULL, deadline_at REAL NOT NULL,"
        "  closed_at REAL, selected INTEGER NOT NULL DEFAULT 0, reports INTEGER NOT NULL DEFAULT 0,"
        "  refused INTEGER NOT NULL DEFAULT 0, train_loss REAL, eval_samples INTEGER NOT NULL"
        "  DEFAULT 0, eval_correct INTEGER NOT NULL DEFAULT 0, eval_loss REAL, confusion TEXT,"
        "  PRIMARY KEY (project_id, number, attempt));"
        "CREATE INDEX rounds_open ON rounds(project_id) WHERE state = 'open';"
        "CREATE TABLE selections (project_id INTEGER NOT NULL, number INTEGER NOT NULL,"
        "  attempt INTEGER NOT NULL, device_id INTEGER NOT NULL REFERENCES devices(id),"
        "  selected_at REAL NOT NULL, PRIMARY KEY (project_id, number, attempt, device_id),"
        "  FOREIGN KEY (project_id, number, attempt) REFERENCES rounds);"
        "CREATE INDEX selections_device ON selections(project_id, device_id);"
        "CREATE TABLE reports (project_id INTEGER NOT NULL, number INTEGER NOT NULL,"
        "  attempt INTEGER NOT NULL, device_id INTEGER NOT NULL REFERENCES devices(id),"
        "  num_samples REAL NOT NULL, loss REAL, tau REAL, eval_samples INTEGER NOT NULL,"
        "  eval_correct INTEGER NOT NULL, eval_loss REAL, eval_confusion TEXT,"
        "  data BLOB NOT NULL, created_at REAL NOT NULL,"
        "  PRIMARY KEY (project_id, number, attempt, device_id),"
        "  FOREIGN KEY (project_id, number, attempt) REFERENCES rounds);");
}

static int log_create(store *st, const store_attempt_key *k, store_log **out);
static int log_append(store_log *l, int type, int64_t device, double at, const struct iovec *iov,
                      int iovcnt, int fd, size_t fd_len);
static int log_sync(store_log *l);

/* 1 → 2: the selections and reports of open attempts move to attempt logs (store_log_*), and
 * the reports table goes. Each log is written fresh and synced before the transaction commits,
 * so a step interrupted anywhere is simply run again. */
static int migrate_1_to_2(store *st)
{
    sqlite3_stmt *r = NULL, *s = NULL;
    store_log *l = NULL;
    int rc = 0, x;
    if (sqlite3_prepare_v2(st->db, "SELECT project_id, number, attempt FROM rounds WHERE state = "
                                   "'open'", -1, &r, NULL) != SQLITE_OK)
        return db_err(st, "list open rounds");
    while (!rc && (x = sqlite3_step(r)) == SQLITE_ROW) {
        store_attempt_key k = {sqlite3_column_int64(r, 0), sqlite3_column_int(r, 1),
                               sqlite3_column_int(r, 2)};
        if ((rc = log_create(st, &k, &l)))
            break;
        static const char *const sql[2] = {
            "SELECT device_id, selected_at, NULL FROM selections WHERE project_id = ?1 AND "
            "number = ?2 AND attempt = ?3 ORDER BY selected_at",
            "SELECT device_id, created_at, data FROM reports WHERE project_id = ?1 AND "
            "number = ?2 AND attempt = ?3 ORDER BY rowid"};
        for (int type = STORE_LOG_SELECTION; !rc && type <= STORE_LOG_REPORT; type++) {
            if (sqlite3_prepare_v2(st->db, sql[type - 1], -1, &s, NULL) != SQLITE_OK) {
                rc = db_err(st, "read attempt rows");
                break;
            }
            sqlite3_bind_int64(s, 1, k.project);
            sqlite3_bind_int(s, 2, k.number);
            sqlite3_bind_int(s, 3, k.attempt);
            while (!rc && (x = sqlite3_step(s)) == SQLITE_ROW) {
                struct iovec iov = {(void *)sqlite3_column_blob(s, 2),
                                    (size_t)sqlite3_column_bytes(s, 2)};
                rc = log_append(l, type, sqlite3_column_int64(s, 0), sqlite3_column_double(s, 1),
                                &iov, type == STORE_LOG_REPORT, -1, 0);
            }
            if (!rc && x != SQLITE_DONE)
                rc = db_err(st, "read attempt rows");
            sqlite3_finalize(s);
            s = NULL;
        }
        if (!rc)
            rc = log_sync(l);
        store_log_close(l);
        l = NULL;
    }
    if (!rc && x != SQLITE_DONE)
        rc = db_err(st, "list open rounds");
    sqlite3_finalize(r);
    if (!rc)
        rc = exec(st, "DELETE FROM selections WHERE (project_id, number, attempt) IN (SELECT "
                      "project_id, number, attempt FROM rounds WHERE state = 'open');"
                      "DROP TABLE reports;");
    return rc;
}

/* 2 → 3: a committed DP round keeps the sampling rate it was charged and the ε after it. */
static int migrate_2_to_3(store *st)
{
    return exec(st, "ALTER TABLE rounds ADD COLUMN dp_q REAL;"
                    "ALTER TABLE rounds ADD COLUMN epsilon REAL;");
}

/* 3 → 4: a committed round keeps the DP clip norm the next round uses (adaptive clipping)
 * and a result (the label histogram of a population-statistics project) as JSON. */
static int migrate_3_to_4(store *st)
{
    return exec(st, "ALTER TABLE rounds ADD COLUMN dp_clip REAL;"
                    "ALTER TABLE rounds ADD COLUMN result TEXT;");
}

static int (*const migrations[STORE_SCHEMA_VERSION])(store *) = {migrate_0_to_1, migrate_1_to_2,
                                                                  migrate_2_to_3, migrate_3_to_4};

static int prune_logs(store *st);

int store_schema_version(store *st)
{
    sqlite3_stmt *s;
    int v = -1;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "read user_version");
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return v < 0 ? db_err(st, "read user_version") : v;
}

static int migrate(store *st)
{
    int v = store_schema_version(st);
    if (v < 0)
        return v;
    if (v > STORE_SCHEMA_VERSION)
        return af_seterr(AF_EFORMAT, "%s: schema version %d is newer than this build's %d "
                                     "(written by a newer artificien)",
                         st->path, v, STORE_SCHEMA_VERSION);
    for (; v < STORE_SCHEMA_VERSION; v++) {
        char bump[64];
        int rc = begin(st);
        if (!rc)
            rc = migrations[v](st);
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
        if (!rc)
            rc = exec(st, bump);
        if (!rc)
            rc = commit(st);
        if (rc) {
            rollback(st);
            return af_preerr(rc, "migrate schema %d -> %d", v, v + 1);
        }
    }
    return 0;
}

int store_open(const char *path, int durable_full, store **out)
{
    *out = NULL;
    store *st = calloc(1, sizeof *st);
    size_t dl = strlen(path) + sizeof ".rounds";
    if (!st || !(st->path = strdup(path)) || !(st->log_dir = malloc(dl))) {
        if (st)
            free(st->path);
        free(st);
        return af_seterr(AF_ENOMEM, "open %s: out of memory", path);
    }
    snprintf(st->log_dir, dl, "%s.rounds", path);
    st->durable_full = durable_full;
    int rc;
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                           SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = af_seterr(AF_EIO, "open %s: %s", path,
                       st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    sqlite3_extended_result_codes(st->db, 1);
    /* page_size only takes effect on a new database, before WAL is switched on: 16 KiB pages
     * suit the ~130 KB blobs that dominate the writes */
    if ((rc = exec(st, "PRAGMA page_size = 16384")))
        goto fail;
    {
        sqlite3_stmt *s;
        const char *mode = NULL;
        if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL) != SQLITE_OK) {
            rc = af_seterr(AF_EFORMAT, "open %s: %s", path, sqlite3_errmsg(st->db));
            goto fail;
        }
        if (sqlite3_step(s) == SQLITE_ROW)
            mode = (const char *)sqlite3_column_text(s, 0);
        int wal = mode && strcmp(mode, "wal") == 0;
        sqlite3_finalize(s);
        if (!wal) {
            rc = af_seterr(AF_EFORMAT, "open %s: cannot switch to WAL mode (%s)", path,
                           sqlite3_errmsg(st->db));
            goto fail;
        }
    }
    if ((rc = exec(st, durable_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")) ||
        (rc = exec(st, "PRAGMA foreign_keys = ON")) ||
        /* report blobs are deleted when their round closes: with a WAL that holds a round or
         * so, a checkpoint copies each reused page once instead of every report's bytes
         * (measured: ~15 % less CPU per report than the default 1000 pages, and less than
         * checkpointing from a second connection off the request path) */
        (rc = exec(st, "PRAGMA wal_autocheckpoint = 4096; PRAGMA journal_size_limit = 67108864")) ||
        (rc = migrate(st)) || (rc = prune_logs(st)))
        goto fail;
    *out = st;
    return 0;
fail:
    store_close(st);
    return rc;
}

void store_close(store *st)
{
    if (!st)
        return;
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(st->q[i]);
    sqlite3_close(st->db);
    free(st->path);
    free(st->log_dir);
    free(st);
}

/* ---- meta ----------------------------------------------------------------------------------- */

int store_meta_get(store *st, const char *key, char *buf, size_t cap)
{
    sqlite3_stmt *s = stmt(st, Q_META_GET, "SELECT value FROM meta WHERE key = ?");
    if (!s)
        return AF_EIO;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        snprintf(buf, cap, "%s", (const char *)sqlite3_column_text(s, 0));
        sqlite3_reset(s);
        return 0;
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? af_seterr(AF_ENOTFOUND, "setting '%s' not found", key)
                             : db_err(st, "read setting");
}

int store_meta_set(store *st, const char *key, const char *value)
{
    sqlite3_stmt *s = stmt(st, Q_META_SET, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
    if (!s)
        return AF_EIO;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
    return step_done(st, s, "write setting");
}

/* ---- principals ------------------------------------------------------------------------------ */

static int find_by_hash(store *st, int q, const char *sql, const uint8_t *hash, int64_t *id,
                        const char *what)
{
    sqlite3_stmt *s = stmt(st, q, sql);
    if (!s)
        return AF_EIO;
    sqlite3_bind_blob(s, 1, hash, STORE_HASH_BYTES, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        if (id)
            *id = sqlite3_column_int64(s, 0);
        sqlite3_reset(s);
        return 0;
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? af_seterr(AF_ENOTFOUND, "unknown %s", what) : db_err(st, what);
}

int store_owner_add(store *st, const char *name, const uint8_t hash[STORE_HASH_BYTES],
                    int64_t *id)
{
    sqlite3_stmt *s = stmt(st, Q_OWNER_ADD,
                           "INSERT INTO owners (name, key_hash, created_at) VALUES (?, ?, ?)");
    if (!s)
        return AF_EIO;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, hash, STORE_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, store_now());
    int rc = step_done(st, s, "add owner");
    if (rc == AF_ESTATE)
        return af_seterr(AF_ESTATE, "owner '%s' exists already", name);
    if (!rc && id)
        *id = sqlite3_last_insert_rowid(st->db);
    return rc;
}

int store_owner_find(store *st, const uint8_t hash[STORE_HASH_BYTES], int64_t *id)
{
    return find_by_hash(st, Q_OWNER_FIND, "SELECT id FROM owners WHERE key_hash = ?", hash, id,
                        "owner key");
}

int store_secret_add(store *st, const uint8_t hash[STORE_HASH_BYTES])
{
    sqlite3_stmt *s = stmt(st, Q_SECRET_ADD,
                           "INSERT INTO enroll_secrets (secret_hash, created_at) VALUES (?, ?)");
    if (!s)
        return AF_EIO;
    sqlite3_bind_blob(s, 1, hash, STORE_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, store_now());
    return step_done(st, s, "add enrolment secret");
}

int store_secret_find(store *st, const uint8_t hash[STORE_HASH_BYTES])
{
    return find_by_hash(st, Q_SECRET_FIND, "SELECT id FROM enroll_secrets WHERE secret_hash = ?",
                        hash, NULL, "enrolment secret");
}

int store_device_add(store *st, const uint8_t hash[STORE_HASH_BYTES], const char *dataset,
                     int64_t *id)
{
    sqlite3_stmt *s = stmt(st, Q_DEVICE_ADD, "INSERT INTO devices (token_hash, dataset, "
                                             "created_at) VALUES (?, ?, ?)");
    if (!s)
        return AF_EIO;
    sqlite3_bind_blob(s, 1, hash, STORE_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, dataset, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, store_now());
    int rc = step_done(st, s, "add device");
    if (!rc && id)
        *id = sqlite3_last_insert_rowid(st->db);
    return rc;
}

int store_device_find(store *st, const uint8_t hash[STORE_HASH_BYTES], int64_t *id)
{
    return find_by_hash(st, Q_DEVICE_FIND, "SELECT id FROM devices WHERE token_hash = ?", hash,
                        id, "device token");
}

int store_device_dataset(store *st, int64_t id, char **dataset)
{
    *dataset = NULL;
    sqlite3_stmt *s = stmt(st, Q_DEVICE_DATASET, "SELECT dataset FROM devices WHERE id = ?");
    if (!s)
        return AF_EIO;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *dataset = col_strdup(s, 0);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return af_seterr(AF_ENOTFOUND, "device %lld not found", (long long)id);
    if (rc != SQLITE_ROW)
        return db_err(st, "read device");
    return *dataset ? 0 : af_seterr(AF_ENOMEM, "out of memory");
}

int64_t store_device_count(store *st)
{
    sqlite3_stmt *s = stmt(st, Q_DEVICE_COUNT, "SELECT count(*) FROM devices");
    if (!s)
        return AF_EIO;
    int64_t n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : db_err(st, "count");
    sqlite3_reset(s);
    return n;
}

int64_t store_device_count_dataset(store *st, const char *dataset)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT count(*) FROM devices WHERE json_valid(dataset) AND "
                                   "json_extract(dataset, '$.name') = ?", -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "count devices of a dataset");
    sqlite3_bind_text(s, 1, dataset, -1, SQLITE_STATIC);
    int64_t n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0)
                                              : db_err(st, "count devices of a dataset");
    sqlite3_finalize(s);
    return n;
}

/* ---- projects and checkpoints ----------------------------------------------------------------- */

void store_project_clear(store_project *p)
{
    if (!p)
        return;
    free(p->spec);
    free(p->plan);
    p->spec = p->plan = NULL;
}

static int insert_checkpoint(store *st, int64_t project, int64_t version, int64_t round,
                             const void *ckpt, size_t len, const void *state, size_t state_len)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "INSERT INTO checkpoints (project_id, version, round, data, "
                                   "strategy_state, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "prepare checkpoint insert");
    sqlite3_bind_int64(s, 1, project);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_int64(s, 3, round);
    sqlite3_bind_blob64(s, 4, ckpt, len, SQLITE_STATIC);
    if (state && state_len)
        sqlite3_bind_blob64(s, 5, state, state_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 5);
    sqlite3_bind_double(s, 6, store_now());
    int rc = step_done(st, s, "insert checkpoint");
    sqlite3_finalize(s);
    return rc;
}

int store_project_add(store *st, int64_t owner_id, const char *name, const char *spec,
                      const char *plan, const void *ckpt, size_t len, int64_t *id)
{
    sqlite3_stmt *s = NULL;
    int rc = begin(st);
    if (rc)
        return rc;
    if (sqlite3_prepare_v2(st->db, "INSERT INTO projects (owner_id, name, spec, plan, status, "
                                   "version, created_at) VALUES (?, ?, ?, ?, 'running', 0, ?)",
                           -1, &s, NULL) != SQLITE_OK) {
        rc = db_err(st, "prepare project insert");
        goto fail;
    }
    sqlite3_bind_int64(s, 1, owner_id);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, spec, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, plan, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 5, store_now());
    if ((rc = step_done(st, s, "insert project")))
        goto fail;
    int64_t pid = sqlite3_last_insert_rowid(st->db);
    if ((rc = insert_checkpoint(st, pid, 0, 0, ckpt, len, NULL, 0)) || (rc = commit(st)))
        goto fail;
    sqlite3_finalize(s);
    *id = pid;
    return 0;
fail:
    sqlite3_finalize(s);
    rollback(st);
    return rc;
}

#define PROJECT_COLS "id, owner_id, name, spec, plan, status, version, created_at"

static int read_project(sqlite3_stmt *s, store_project *p)
{
    memset(p, 0, sizeof *p);
    p->id = sqlite3_column_int64(s, 0);
    p->owner_id = sqlite3_column_int64(s, 1);
    snprintf(p->name, sizeof p->name, "%s", (const char *)sqlite3_column_text(s, 2));
    p->spec = col_strdup(s, 3);
    p->plan = col_strdup(s, 4);
    snprintf(p->status, sizeof p->status, "%s", (const char *)sqlite3_column_text(s, 5));
    p->version = sqlite3_column_int64(s, 6);
    p->created_at = sqlite3_column_double(s, 7);
    if (!p->spec || !p->plan) {
        store_project_clear(p);
        return af_seterr(AF_ENOMEM, "out of memory reading project");
    }
    return 0;
}

int store_project_set_done(store *st, int64_t id)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "UPDATE projects SET status = 'done' WHERE id = ?", -1, &s,
                           NULL) != SQLITE_OK)
        return db_err(st, "prepare project status");
    sqlite3_bind_int64(s, 1, id);
    int rc = step_done(st, s, "mark project done");
    sqlite3_finalize(s);
    if (!rc && sqlite3_changes(st->db) != 1)
        rc = af_seterr(AF_ENOTFOUND, "project %lld not found", (long long)id);
    return rc;
}

int store_project_get(store *st, int64_t id, store_project *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = stmt(st, Q_PROJECT_GET, "SELECT " PROJECT_COLS " FROM projects WHERE id = ?");
    if (!s)
        return AF_EIO;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        rc = read_project(s, out);
    else
        rc = rc == SQLITE_DONE ? af_seterr(AF_ENOTFOUND, "project %lld not found", (long long)id)
                               : db_err(st, "read project");
    sqlite3_reset(s);
    return rc;
}

int store_project_each(store *st, int64_t owner_id,
                       int (*fn)(void *user, const store_project *p), void *user)
{
    sqlite3_stmt *s;
    const char *sql = owner_id < 0 ? "SELECT " PROJECT_COLS " FROM projects ORDER BY id"
                                   : "SELECT " PROJECT_COLS " FROM projects WHERE owner_id = ? "
                                     "ORDER BY id";
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "list projects");
    if (owner_id >= 0)
        sqlite3_bind_int64(s, 1, owner_id);
    int rc = 0, r;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        store_project p;
        if (!(rc = read_project(s, &p)))
            rc = fn(user, &p);
        store_project_clear(&p);
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_err(st, "list projects");
    sqlite3_finalize(s);
    return rc;
}

int store_checkpoint_replace_initial(store *st, int64_t project, const void *ckpt, size_t len)
{
    int rc = begin(st);
    if (rc)
        return rc;
    int n = store_round_count(st, project);
    if (n != 0) {
        rc = n < 0 ? n : af_seterr(AF_ESTATE, "project %lld: rounds have started, the initial "
                                              "checkpoint can no longer change", (long long)project);
        rollback(st);
        return rc;
    }
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "UPDATE checkpoints SET data = ?, created_at = ? WHERE "
                                   "project_id = ? AND version = 0", -1, &s, NULL) != SQLITE_OK) {
        rc = db_err(st, "prepare checkpoint update");
        rollback(st);
        return rc;
    }
    sqlite3_bind_blob64(s, 1, ckpt, len, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, store_now());
    sqlite3_bind_int64(s, 3, project);
    rc = step_done(st, s, "update checkpoint");
    sqlite3_finalize(s);
    if (!rc && sqlite3_changes(st->db) != 1)
        rc = af_seterr(AF_ENOTFOUND, "project %lld has no initial checkpoint", (long long)project);
    if (!rc)
        rc = commit(st);
    if (rc)
        rollback(st);
    return rc;
}

static void *dup_blob(sqlite3_stmt *s, int i, size_t *len)
{
    size_t n = (size_t)sqlite3_column_bytes(s, i);
    const void *p = sqlite3_column_blob(s, i);
    *len = n;
    void *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

int store_checkpoint_get(store *st, int64_t project, int64_t version, void **ckpt, size_t *len,
                         void **state, size_t *state_len)
{
    if (ckpt)
        *ckpt = NULL;
    if (state)
        *state = NULL;
    if (state_len)
        *state_len = 0;
    sqlite3_stmt *s = stmt(st, Q_CKPT_GET, "SELECT data, strategy_state FROM checkpoints WHERE "
                                           "project_id = ? AND version = ?");
    if (!s)
        return AF_EIO;
    sqlite3_bind_int64(s, 1, project);
    sqlite3_bind_int64(s, 2, version);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        return rc == SQLITE_DONE ? af_seterr(AF_ENOTFOUND, "project %lld has no checkpoint "
                                                           "version %lld",
                                             (long long)project, (long long)version)
                                 : db_err(st, "read checkpoint");
    }
    rc = 0;
    if (ckpt && !(*ckpt = dup_blob(s, 0, len)))
        rc = AF_ENOMEM;
    if (!rc && state && sqlite3_column_type(s, 1) != SQLITE_NULL &&
        !(*state = dup_blob(s, 1, state_len)))
        rc = AF_ENOMEM;
    sqlite3_reset(s);
    if (rc) {
        if (ckpt) {
            free(*ckpt);
            *ckpt = NULL;
        }
        return af_seterr(rc, "out of memory reading a checkpoint");
    }
    return 0;
}

int store_checkpoint_each(store *st, int64_t project,
                          int (*fn)(void *user, const store_checkpoint_info *c), void *user)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT version, round, length(data), created_at FROM "
                                   "checkpoints WHERE project_id = ? ORDER BY version",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "list checkpoints");
    sqlite3_bind_int64(s, 1, project);
    int rc = 0, r;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        store_checkpoint_info c = {sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1),
                                   (size_t)sqlite3_column_int64(s, 2), sqlite3_column_double(s, 3)};
        rc = fn(user, &c);
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_err(st, "list checkpoints");
    sqlite3_finalize(s);
    return rc;
}

/* ---- rounds ------------------------------------------------------------------------------------- */

void store_round_clear(store_round *r)
{
    if (!r)
        return;
    free(r->confusion);
    r->confusion = NULL;
    free(r->result);
    r->result = NULL;
}

#define ROUND_COLS "project_id, number, attempt, state, version, opened_at, deadline_at, " \
                   "closed_at, selected, reports, refused, train_loss, eval_samples, "    \
                   "eval_correct, eval_loss, confusion, dp_q, epsilon, dp_clip, result"

static void read_round(sqlite3_stmt *s, store_round *r)
{
    memset(r, 0, sizeof *r);
    r->project = sqlite3_column_int64(s, 0);
    r->number = sqlite3_column_int(s, 1);
    r->attempt = sqlite3_column_int(s, 2);
    snprintf(r->state, sizeof r->state, "%s", (const char *)sqlite3_column_text(s, 3));
    r->version = sqlite3_column_int64(s, 4);
    r->opened_at = sqlite3_column_double(s, 5);
    r->deadline_at = sqlite3_column_double(s, 6);
    r->closed_at = col_double_or_nan(s, 7);
    r->selected = sqlite3_column_int(s, 8);
    r->reports = sqlite3_column_int(s, 9);
    r->refused = sqlite3_column_int(s, 10);
    r->train_loss = col_double_or_nan(s, 11);
    r->eval_samples = sqlite3_column_int64(s, 12);
    r->eval_correct = sqlite3_column_int64(s, 13);
    r->eval_loss = col_double_or_nan(s, 14);
    r->confusion = col_strdup(s, 15);
    r->dp_q = col_double_or_nan(s, 16);
    r->epsilon = col_double_or_nan(s, 17);
    r->dp_clip = col_double_or_nan(s, 18);
    r->result = col_strdup(s, 19);
}

int store_round_open(store *st, const store_round *r)
{
    sqlite3_stmt *s = stmt(st, Q_ROUND_OPEN, "INSERT INTO rounds (project_id, number, attempt, "
                                             "state, version, opened_at, deadline_at) VALUES "
                                             "(?, ?, ?, 'open', ?, ?, ?)");
    if (!s)
        return AF_EIO;
    sqlite3_bind_int64(s, 1, r->project);
    sqlite3_bind_int(s, 2, r->number);
    sqlite3_bind_int(s, 3, r->attempt);
    sqlite3_bind_int64(s, 4, r->version);
    sqlite3_bind_double(s, 5, r->opened_at);
    sqlite3_bind_double(s, 6, r->deadline_at);
    return step_done(st, s, "open round");
}

int store_round_get_open(store *st, int64_t project, store_round *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = stmt(st, Q_ROUND_GET_OPEN, "SELECT " ROUND_COLS " FROM rounds WHERE "
                                                 "project_id = ? AND state = 'open'");
    if (!s)
        return AF_EIO;
    sqlite3_bind_int64(s, 1, project);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        read_round(s, out);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? af_seterr(AF_ENOTFOUND, "project %lld has no open round",
                                         (long long)project)
                             : db_err(st, "read open round");
}

int store_round_last_attempt(store *st, int64_t project, int number, int *attempt, char state[16])
{
    *attempt = 0;
    state[0] = 0;
    sqlite3_stmt *s = stmt(st, Q_ROUND_LAST, "SELECT attempt, state FROM rounds WHERE project_id "
                                             "= ? AND number = ? ORDER BY attempt DESC LIMIT 1");
    if (!s)
        return AF_EIO;
    sqlite3_bind_int64(s, 1, project);
    sqlite3_bind_int(s, 2, number);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *attempt = sqlite3_column_int(s, 0);
        snprintf(state, 16, "%s", (const char *)sqlite3_column_text(s, 1));
    }
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(st, "read round");
}

int store_round_each(store *st, int64_t project, int (*fn)(void *user, const store_round *r),
                     void *user)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT " ROUND_COLS " FROM rounds WHERE project_id = ? "
                                   "ORDER BY number, attempt", -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "list rounds");
    sqlite3_bind_int64(s, 1, project);
    int rc = 0, r;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        store_round rd;
        read_round(s, &rd);
        rc = fn(user, &rd);
        store_round_clear(&rd);
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_err(st, "list rounds");
    sqlite3_finalize(s);
    return rc;
}

int store_round_count(store *st, int64_t project)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT count(*) FROM rounds WHERE project_id = ?", -1, &s,
                           NULL) != SQLITE_OK)
        return db_err(st, "count rounds");
    sqlite3_bind_int64(s, 1, project);
    int n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : db_err(st, "count rounds");
    sqlite3_finalize(s);
    return n;
}

/* Writes the closing stats and state of an open attempt; AF_ESTATE if it was not open. */
static int close_round(store *st, const store_round *r, const char *state)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "UPDATE rounds SET state = ?, closed_at = ?, reports = ?, "
                                   "refused = ?, train_loss = ?, eval_samples = ?, eval_correct "
                                   "= ?, eval_loss = ?, confusion = ?, dp_q = ?, epsilon = ?, dp_clip = ?, "
                                   "result = ? WHERE "
                                   "project_id = ? AND number = ? AND attempt = ? AND state = "
                                   "'open'",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "prepare round update");
    sqlite3_bind_text(s, 1, state, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, isfinite(r->closed_at) ? r->closed_at : store_now());
    sqlite3_bind_int(s, 3, r->reports);
    sqlite3_bind_int(s, 4, r->refused);
    bind_double_or_null(s, 5, r->train_loss);
    sqlite3_bind_int64(s, 6, r->eval_samples);
    sqlite3_bind_int64(s, 7, r->eval_correct);
    bind_double_or_null(s, 8, r->eval_loss);
    if (r->confusion)
        sqlite3_bind_text(s, 9, r->confusion, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 9);
    /* 0 is what a zero-initialised row holds: no DP, stored as NULL */
    bind_double_or_null(s, 10, r->dp_q > 0 ? r->dp_q : NAN);
    bind_double_or_null(s, 11, r->dp_q > 0 ? r->epsilon : NAN);
    bind_double_or_null(s, 12, r->dp_clip > 0 ? r->dp_clip : NAN);
    if (r->result)
        sqlite3_bind_text(s, 13, r->result, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 13);
    sqlite3_bind_int64(s, 14, r->project);
    sqlite3_bind_int(s, 15, r->number);
    sqlite3_bind_int(s, 16, r->attempt);
    int rc = step_done(st, s, "close round");
    sqlite3_finalize(s);
    if (!rc && sqlite3_changes(st->db) != 1)
        rc = af_seterr(AF_ESTATE, "project %lld round %d attempt %d is not open",
                       (long long)r->project, r->number, r->attempt);
    return rc;
}

/* Inserts the attempt's selections (a device already there, from a schema-1 database, is
 * kept) and writes their count into the round. */
static int insert_selections(store *st, const store_round *r, const store_selection *sel,
                             size_t n_sel)
{
    sqlite3_stmt *s = stmt(st, Q_SEL_ADD, "INSERT OR IGNORE INTO selections (project_id, number, "
                                          "attempt, device_id, selected_at) VALUES (?, ?, ?, ?, ?)");
    if (!s)
        return AF_EIO;
    for (size_t i = 0; i < n_sel; i++) {
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, r->project);
        sqlite3_bind_int(s, 2, r->number);
        sqlite3_bind_int(s, 3, r->attempt);
        sqlite3_bind_int64(s, 4, sel[i].device);
        sqlite3_bind_double(s, 5, sel[i].at);
        int rc = step_done(st, s, "insert selection");
        if (rc)
            return rc;
    }
    sqlite3_stmt *u;
    if (sqlite3_prepare_v2(st->db, "UPDATE rounds SET selected = (SELECT count(*) FROM selections "
                                   "WHERE project_id = ?1 AND number = ?2 AND attempt = ?3) WHERE "
                                   "project_id = ?1 AND number = ?2 AND attempt = ?3",
                           -1, &u, NULL) != SQLITE_OK)
        return db_err(st, "prepare selection count");
    sqlite3_bind_int64(u, 1, r->project);
    sqlite3_bind_int(u, 2, r->number);
    sqlite3_bind_int(u, 3, r->attempt);
    int rc = step_done(st, u, "count selections");
    sqlite3_finalize(u);
    return rc;
}

static void log_path(const store *st, const store_attempt_key *k, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/p%lld-r%d-a%d.log", st->log_dir, (long long)k->project, k->number,
             k->attempt);
}

/* The attempt's log is garbage once its close has committed (a crash before this unlink
 * leaves it for prune_logs at the next start). */
static void drop_log(store *st, const store_round *r)
{
    char path[4200];
    store_attempt_key k = {r->project, r->number, r->attempt};
    log_path(st, &k, path, sizeof path);
    unlink(path);
}

int store_round_commit(store *st, const store_round *r, int64_t new_version, const void *ckpt,
                       size_t len, const void *state, size_t state_len, int done,
                       const store_selection *sel, size_t n_sel)
{
    int rc = begin(st);
    if (rc)
        return rc;
    if ((rc = close_round(st, r, "committed")) ||
        (rc = insert_checkpoint(st, r->project, new_version, r->number, ckpt, len, state,
                                state_len)) ||
        (rc = insert_selections(st, r, sel, n_sel)))
        goto fail;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "UPDATE projects SET version = ?, status = ? WHERE id = ?", -1,
                           &s, NULL) != SQLITE_OK) {
        rc = db_err(st, "prepare project update");
        goto fail;
    }
    sqlite3_bind_int64(s, 1, new_version);
    sqlite3_bind_text(s, 2, done ? "done" : "running", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, r->project);
    rc = step_done(st, s, "update project");
    sqlite3_finalize(s);
    if (rc || (rc = commit(st)))
        goto fail;
    drop_log(st, r);
    return 0;
fail:
    rollback(st);
    return rc;
}

int store_round_abandon(store *st, const store_round *r, const store_selection *sel,
                        size_t n_sel)
{
    int rc = begin(st);
    if (rc)
        return rc;
    if ((rc = close_round(st, r, "abandoned")) || (rc = insert_selections(st, r, sel, n_sel)) ||
        (rc = commit(st))) {
        rollback(st);
        return rc;
    }
    drop_log(st, r);
    return 0;
}

/* ---- selections ------------------------------------------------------------------------------- */

int store_selection_in_project(store *st, int64_t project, int64_t device)
{
    sqlite3_stmt *s = stmt(st, Q_SEL_PROJECT, "SELECT 1 FROM selections WHERE project_id = ? AND "
                                              "device_id = ? LIMIT 1");
    if (!s)
        return AF_EIO;
    sqlite3_bind_int64(s, 1, project);
    sqlite3_bind_int64(s, 2, device);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : db_err(st, "read selection");
}

/* ---- attempt logs ----------------------------------------------------------------------------- */

#define LOG_FILE_MAGIC "AFLOG\0\2\0"
#define LOG_REC_MAGIC 0x31524641u /* "AFR1" */
#define LOG_FLAG_CRC 1u
#define LOG_MAX_BODY ((uint64_t)1 << 40)

typedef struct log_file_hdr {
    char magic[8];
    int64_t project;
    int32_t number, attempt;
    uint64_t reserved;
} log_file_hdr;

typedef struct log_rec_hdr {
    uint32_t magic;
    uint16_t type, flags;
    uint32_t crc, reserved;
    int64_t device;
    double at;
    uint64_t len;
} log_rec_hdr;

_Static_assert(sizeof(log_file_hdr) == 32 && sizeof(log_rec_hdr) == 40, "log layout");

struct store_log {
    pthread_mutex_t mu;
    int fd;
    off_t end;              /* where the next record goes: the end of the last whole one */
    int durable_full;
    char path[4200];
};

static int log_err(const store_log *l, const char *what)
{
    return af_seterr(AF_EIO, "attempt log %s: %s: %s", l->path, what, strerror(errno));
}

/* fsync of a directory: the name of a new file survives a power loss. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return af_seterr(AF_EIO, "open %s: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : af_seterr(AF_EIO, "fsync %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

static int pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const char *p = buf;
    while (n) {
        ssize_t k = pwrite(fd, p, n, off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k, n -= (size_t)k, off += k;
    }
    return 0;
}

/* Reads exactly n bytes at off: 1, 0 at a short read (the end of the file), -1 on error. */
static int pread_full(int fd, void *buf, size_t n, off_t off)
{
    char *p = buf;
    while (n) {
        ssize_t k = pread(fd, p, n, off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            return 0;
        p += k, n -= (size_t)k, off += k;
    }
    return 1;
}

static store_log *log_new(const store *st, const store_attempt_key *k)
{
    store_log *l = calloc(1, sizeof *l);
    if (!l) {
        af_seterr(AF_ENOMEM, "attempt log: out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    l->fd = -1;
    l->durable_full = st->durable_full;
    log_path(st, k, l->path, sizeof l->path);
    return l;
}

static int log_mkdir(store *st)
{
    if (mkdir(st->log_dir, 0700) != 0 && errno != EEXIST)
        return af_seterr(AF_EIO, "create %s: %s", st->log_dir, strerror(errno));
    return 0;
}

/* A new, empty log for k (an existing file is truncated): the file header, synced. */
static int log_create(store *st, const store_attempt_key *k, store_log **out)
{
    *out = NULL;
    int rc = log_mkdir(st);
    store_log *l = rc ? NULL : log_new(st, k);
    if (!l)
        return rc ? rc : AF_ENOMEM;
    log_file_hdr h = {.project = k->project, .number = k->number, .attempt = k->attempt};
    memcpy(h.magic, LOG_FILE_MAGIC, sizeof h.magic);
    l->fd = open(l->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (l->fd < 0 || pwrite_all(l->fd, &h, sizeof h, 0) != 0) {
        rc = log_err(l, "create");
        goto fail;
    }
    l->end = sizeof h;
    if (l->durable_full && ((rc = log_sync(l)) || (rc = sync_dir(st->log_dir))))
        goto fail;
    *out = l;
    return 0;
fail:
    store_log_close(l);
    return rc;
}

/* CRC-32 of iov[] followed by fd_len bytes of fd (from offset 0). */
static int body_crc(const struct iovec *iov, int iovcnt, int fd, size_t fd_len, uint32_t *out)
{
    uLong c = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < iovcnt; i++)
        for (size_t off = 0; off < iov[i].iov_len; off += 1u << 30) {
            size_t n = iov[i].iov_len - off < (1u << 30) ? iov[i].iov_len - off : (1u << 30);
            c = crc32(c, (const Bytef *)iov[i].iov_base + off, (uInt)n);
        }
    unsigned char buf[65536];
    for (size_t off = 0; off < fd_len;) {
        size_t n = fd_len - off < sizeof buf ? fd_len - off : sizeof buf;
        if (pread_full(fd, buf, n, (off_t)off) != 1)
            return af_seterr(AF_EIO, "read the update spool: %s", strerror(errno));
        c = crc32(c, buf, (uInt)n);
        off += n;
    }
    *out = (uint32_t)c;
    return 0;
}

/* Copies n bytes of fd (from offset 0) to the log at off: in the kernel when it can. */
static int copy_in(store_log *l, int fd, size_t n, off_t off)
{
    loff_t in = 0, out = off;
    size_t left = n;
    while (left) {
        ssize_t k = copy_file_range(fd, &in, l->fd, &out, left, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        left -= (size_t)k;
    }
    unsigned char buf[65536]; /* not supported across these files: read and write */
    while (left) {
        size_t c = left < sizeof buf ? left : sizeof buf;
        if (pread_full(fd, buf, c, in) != 1 || pwrite_all(l->fd, buf, c, out) != 0)
            return -1;
        in += (loff_t)c, out += (loff_t)c, left -= c;
    }
    return 0;
}

static int log_sync(store_log *l)
{
    return fdatasync(l->fd) == 0 ? 0 : log_err(l, "fdatasync");
}

static int log_append(store_log *l, int type, int64_t device, double at, const struct iovec *iov,
                      int iovcnt, int fd, size_t fd_len)
{
    enum { MAX_IOV = 8 };
    if (iovcnt > MAX_IOV - 1)
        return af_seterr(AF_EINVAL, "attempt log: a record of more than %d pieces", MAX_IOV - 1);
    log_rec_hdr h = {.magic = LOG_REC_MAGIC, .type = (uint16_t)type, .device = device, .at = at,
                     .len = fd_len};
    struct iovec v[MAX_IOV];
    v[0] = (struct iovec){&h, sizeof h};
    for (int i = 0; i < iovcnt; i++) {
        v[i + 1] = iov[i];
        h.len += iov[i].iov_len;
    }
    int rc = 0;
    if (l->durable_full) {
        if ((rc = body_crc(iov, iovcnt, fd, fd_len, &h.crc)))
            return rc;
        h.flags |= LOG_FLAG_CRC;
    }
    pthread_mutex_lock(&l->mu);
    off_t at_off = l->end, off = at_off;
    int cnt = iovcnt + 1, first = 0;
    while (first < cnt) { /* pwritev, resumed after a short write */
        ssize_t k = pwritev(l->fd, v + first, cnt - first, off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = log_err(l, "append");
            break;
        }
        off += k;
        while (first < cnt && (size_t)k >= v[first].iov_len)
            k -= (ssize_t)v[first++].iov_len;
        if (first < cnt) {
            v[first].iov_base = (char *)v[first].iov_base + k;
            v[first].iov_len -= (size_t)k;
        }
    }
    if (!rc && fd_len && copy_in(l, fd, fd_len, off) != 0)
        rc = log_err(l, "append the spooled update");
    if (!rc && l->durable_full)
        rc = log_sync(l);
    if (rc) {
        if (ftruncate(l->fd, at_off) != 0) { /* nothing of a failed record stays */
            /* the next open cuts a partial record off anyway */
        }
    } else {
        l->end = at_off + (off_t)sizeof h + (off_t)h.len;
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int store_log_open(store *st, const store_attempt_key *k, store_log **out)
{
    *out = NULL;
    char path[4200];
    log_path(st, k, path, sizeof path);
    if (access(path, F_OK) != 0)
        return log_create(st, k, out);
    store_log *l = log_new(st, k);
    if (!l)
        return AF_ENOMEM;
    int rc = 0;
    log_file_hdr h;
    struct stat sb;
    if ((l->fd = open(l->path, O_RDWR | O_CLOEXEC)) < 0 || fstat(l->fd, &sb) != 0) {
        rc = log_err(l, "open");
        goto fail;
    }
    int got = pread_full(l->fd, &h, sizeof h, 0);
    if (got < 0) {
        rc = log_err(l, "read");
        goto fail;
    }
    if (got == 0) { /* killed while creating it: nothing was ever appended */
        store_log_close(l);
        return log_create(st, k, out);
    }
    if (memcmp(h.magic, LOG_FILE_MAGIC, sizeof h.magic) != 0 || h.project != k->project ||
        h.number != k->number || h.attempt != k->attempt) {
        rc = af_seterr(AF_EFORMAT, "attempt log %s: not the log of project %lld round %d attempt "
                                   "%d", l->path, (long long)k->project, k->number, k->attempt);
        goto fail;
    }
    /* find the end of the last whole record; a torn one after it is cut off */
    off_t off = sizeof h;
    for (;;) {
        log_rec_hdr r;
        int g = pread_full(l->fd, &r, sizeof r, off);
        if (g < 0) {
            rc = log_err(l, "read");
            goto fail;
        }
        if (g == 0 || r.magic != LOG_REC_MAGIC || (r.type != STORE_LOG_SELECTION &&
                                                   r.type != STORE_LOG_REPORT) ||
            r.len > LOG_MAX_BODY || off + (off_t)sizeof r + (off_t)r.len > sb.st_size)
            break;
        off += (off_t)sizeof r + (off_t)r.len;
    }
    if (off < sb.st_size) {
        if (ftruncate(l->fd, off) != 0) {
            rc = log_err(l, "cut a torn record");
            goto fail;
        }
        af_log(AF_LOG_WARN, "attempt_log_cut", "file=%s offset=%lld bytes=%lld", l->path,
               (long long)off, (long long)(sb.st_size - off));
    }
    l->end = off;
    *out = l;
    return 0;
fail:
    store_log_close(l);
    return rc;
}

void store_log_close(store_log *l)
{
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

int store_log_selection(store_log *l, int64_t device, double at)
{
    return log_append(l, STORE_LOG_SELECTION, device, at, NULL, 0, -1, 0);
}

int store_log_report(store_log *l, int64_t device, double at, const struct iovec *iov,
                     int iovcnt, int fd, size_t fd_len)
{
    return log_append(l, STORE_LOG_REPORT, device, at, iov, iovcnt, fd, fd_len);
}

int store_log_each(store_log *l, int (*fn)(void *user, const store_log_record *r), void *user)
{
    off_t off = sizeof(log_file_hdr);
    void *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    while (!rc && off < l->end) {
        log_rec_hdr h;
        if (pread_full(l->fd, &h, sizeof h, off) != 1) {
            rc = log_err(l, "read");
            break;
        }
        if (h.len > cap) {
            void *b = realloc(buf, h.len);
            if (!b) {
                rc = af_seterr(AF_ENOMEM, "attempt log %s: out of memory for a %llu-byte record",
                               l->path, (unsigned long long)h.len);
                break;
            }
            buf = b;
            cap = h.len;
        }
        if (h.len && pread_full(l->fd, buf, h.len, off + (off_t)sizeof h) != 1) {
            rc = log_err(l, "read");
            break;
        }
        store_log_record r = {h.type, h.device, h.at, buf, h.len};
        if ((h.flags & LOG_FLAG_CRC) && (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)h.len) != h.crc) {
            /* a power loss tore the last record in full-durability mode: it was never
             * acknowledged (the ack waits for the sync); everything from here goes */
            af_log(AF_LOG_WARN, "attempt_log_cut", "file=%s offset=%lld reason=checksum", l->path,
                   (long long)off);
            pthread_mutex_lock(&l->mu);
            if (ftruncate(l->fd, off) == 0)
                l->end = off;
            pthread_mutex_unlock(&l->mu);
            break;
        }
        rc = fn(user, &r);
        off += (off_t)sizeof h + (off_t)h.len;
    }
    free(buf);
    return rc;
}

/* Deletes the logs of attempts that are not open (left by a crash between a close's commit
 * and its unlink). Files of other names are left alone. */
static int prune_logs(store *st)
{
    DIR *d = opendir(st->log_dir);
    if (!d)
        return errno == ENOENT ? 0 : af_seterr(AF_EIO, "open %s: %s", st->log_dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        long long p;
        int n, a, end = 0;
        if (sscanf(e->d_name, "p%lld-r%d-a%d.log%n", &p, &n, &a, &end) != 3 ||
            e->d_name[end] != 0)
            continue;
        int last = 0;
        char state[16];
        if ((rc = store_round_last_attempt(st, p, n, &last, state)))
            break;
        if (last == a && strcmp(state, "open") == 0)
            continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", st->log_dir, e->d_name);
        if (unlink(path) != 0 && errno != ENOENT)
            rc = af_seterr(AF_EIO, "remove %s: %s", path, strerror(errno));
    }
    closedir(d);
    return rc;
}

