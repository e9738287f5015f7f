/* store.c — SQLite persistence for the coordinator (see store.h).
 *
 * Hot statements are prepared once and cached on the handle (stmt()); every multi-row change
 * runs between BEGIN IMMEDIATE and COMMIT, rolled back on any error so a failed call changes
 * nothing. Migrations are an array of steps, each run in its own transaction together with
 * the user_version bump: a database is always at exactly one schema version.
 */
#include "store/store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "core/err.h"

enum {
    Q_META_GET, Q_META_SET, Q_OWNER_ADD, Q_OWNER_FIND, Q_SECRET_ADD, Q_SECRET_FIND,
    Q_DEVICE_ADD, Q_DEVICE_FIND, Q_DEVICE_DATASET, Q_DEVICE_COUNT, Q_PROJECT_GET,
    Q_CKPT_GET, Q_ROUND_OPEN, Q_ROUND_GET_OPEN, Q_ROUND_LAST, Q_SEL_ADD, Q_SEL_BUMP,
    Q_SEL_PROJECT, Q_REPORT_ADD, Q_COUNT
};

struct store {
    sqlite3 *db;
    char *path;
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

static int (*const migrations[STORE_SCHEMA_VERSION])(store *) = {migrate_0_to_1};

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
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return af_seterr(AF_ENOMEM, "open %s: out of memory", path);
    }
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
        (rc = migrate(st)))
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
}

#define ROUND_COLS "project_id, number, attempt, state, version, opened_at, deadline_at, " \
                   "closed_at, selected, reports, refused, train_loss, eval_samples, "    \
                   "eval_correct, eval_loss, confusion"

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
                                   "= ?, eval_loss = ?, confusion = ? WHERE project_id = ? AND "
                                   "number = ? AND attempt = ? AND state = 'open'",
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
    sqlite3_bind_int64(s, 10, r->project);
    sqlite3_bind_int(s, 11, r->number);
    sqlite3_bind_int(s, 12, r->attempt);
    int rc = step_done(st, s, "close round");
    sqlite3_finalize(s);
    if (!rc && sqlite3_changes(st->db) != 1)
        rc = af_seterr(AF_ESTATE, "project %lld round %d attempt %d is not open",
                       (long long)r->project, r->number, r->attempt);
    return rc;
}

static int delete_reports(store *st, const store_round *r)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "DELETE FROM reports WHERE project_id = ? AND number = ? AND "
                                   "attempt = ?", -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "prepare report delete");
    sqlite3_bind_int64(s, 1, r->project);
    sqlite3_bind_int(s, 2, r->number);
    sqlite3_bind_int(s, 3, r->attempt);
    int rc = step_done(st, s, "delete reports");
    sqlite3_finalize(s);
    return rc;
}

int store_round_commit(store *st, const store_round *r, int64_t new_version, const void *ckpt,
                       size_t len, const void *state, size_t state_len, int done)
{
    int rc = begin(st);
    if (rc)
        return rc;
    if ((rc = close_round(st, r, "committed")) ||
        (rc = insert_checkpoint(st, r->project, new_version, r->number, ckpt, len, state,
                                state_len)) ||
        (rc = delete_reports(st, r)))
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
    return 0;
fail:
    rollback(st);
    return rc;
}

int store_round_abandon(store *st, const store_round *r)
{
    int rc = begin(st);
    if (rc)
        return rc;
    if ((rc = close_round(st, r, "abandoned")) || (rc = delete_reports(st, r)) ||
        (rc = commit(st))) {
        rollback(st);
        return rc;
    }
    return 0;
}

/* ---- selections and reports --------------------------------------------------------------------- */

int store_selection_add(store *st, const store_attempt_key *k, int64_t device)
{
    int rc = begin(st);
    if (rc)
        return rc;
    sqlite3_stmt *s = stmt(st, Q_SEL_ADD, "INSERT INTO selections (project_id, number, attempt, "
                                          "device_id, selected_at) VALUES (?, ?, ?, ?, ?)");
    if (!s) {
        rc = AF_EIO;
        goto fail;
    }
    sqlite3_bind_int64(s, 1, k->project);
    sqlite3_bind_int(s, 2, k->number);
    sqlite3_bind_int(s, 3, k->attempt);
    sqlite3_bind_int64(s, 4, device);
    sqlite3_bind_double(s, 5, store_now());
    if ((rc = step_done(st, s, "select device")))
        goto fail;
    s = stmt(st, Q_SEL_BUMP, "UPDATE rounds SET selected = selected + 1 WHERE project_id = ? AND "
                             "number = ? AND attempt = ?");
    if (!s) {
        rc = AF_EIO;
        goto fail;
    }
    sqlite3_bind_int64(s, 1, k->project);
    sqlite3_bind_int(s, 2, k->number);
    sqlite3_bind_int(s, 3, k->attempt);
    if ((rc = step_done(st, s, "count selection")) || (rc = commit(st)))
        goto fail;
    return 0;
fail:
    rollback(st);
    return rc;
}

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

int store_selection_each(store *st, const store_attempt_key *k,
                         int (*fn)(void *user, int64_t device), void *user)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT device_id FROM selections WHERE project_id = ? AND "
                                   "number = ? AND attempt = ? ORDER BY selected_at",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "list selections");
    sqlite3_bind_int64(s, 1, k->project);
    sqlite3_bind_int(s, 2, k->number);
    sqlite3_bind_int(s, 3, k->attempt);
    int rc = 0, r;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW)
        rc = fn(user, sqlite3_column_int64(s, 0));
    if (!rc && r != SQLITE_DONE)
        rc = db_err(st, "list selections");
    sqlite3_finalize(s);
    return rc;
}

/* Binds every column of a report but the data (parameter 12). */
static sqlite3_stmt *report_insert(store *st, const store_attempt_key *k, const store_report *r)
{
    sqlite3_stmt *s = stmt(st, Q_REPORT_ADD,
                           "INSERT INTO reports (project_id, number, attempt, device_id, "
                           "num_samples, loss, tau, eval_samples, eval_correct, eval_loss, "
                           "eval_confusion, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                           "?, ?, ?, ?)");
    if (!s)
        return NULL;
    sqlite3_bind_int64(s, 1, k->project);
    sqlite3_bind_int(s, 2, k->number);
    sqlite3_bind_int(s, 3, k->attempt);
    sqlite3_bind_int64(s, 4, r->device);
    sqlite3_bind_double(s, 5, r->num_samples);
    bind_double_or_null(s, 6, r->loss);
    bind_double_or_null(s, 7, r->tau);
    sqlite3_bind_int64(s, 8, r->eval_samples);
    sqlite3_bind_int64(s, 9, r->eval_correct);
    bind_double_or_null(s, 10, r->eval_loss);
    if (r->eval_confusion)
        sqlite3_bind_text(s, 11, r->eval_confusion, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 11);
    sqlite3_bind_double(s, 13, store_now());
    return s;
}

static int duplicate_report(const store_attempt_key *k, const store_report *r)
{
    return af_seterr(AF_ESTATE, "device %lld already reported in round %d attempt %d",
                     (long long)r->device, k->number, k->attempt);
}

int store_report_add(store *st, const store_attempt_key *k, const store_report *r)
{
    sqlite3_stmt *s = report_insert(st, k, r);
    if (!s)
        return AF_EIO;
    sqlite3_bind_blob64(s, 12, r->data, r->len, SQLITE_STATIC);
    int rc = step_done(st, s, "insert report");
    return rc == AF_ESTATE ? duplicate_report(k, r) : rc;
}

int store_report_add_stream(store *st, const store_attempt_key *k, const store_report *r,
                            size_t len, int (*fill)(void *user, size_t off, void *buf, size_t n),
                            void *user)
{
    enum { CHUNK = 65536 };
    unsigned char buf[CHUNK];
    sqlite3_blob *b = NULL;
    int rc = begin(st);
    if (rc)
        return rc;
    sqlite3_stmt *s = report_insert(st, k, r);
    if (!s) {
        rc = AF_EIO;
        goto fail;
    }
    sqlite3_bind_zeroblob64(s, 12, len);
    if ((rc = step_done(st, s, "insert report"))) {
        if (rc == AF_ESTATE)
            rc = duplicate_report(k, r);
        goto fail;
    }
    if (sqlite3_blob_open(st->db, "main", "reports", "data", sqlite3_last_insert_rowid(st->db), 1,
                          &b) != SQLITE_OK) {
        rc = db_err(st, "open report blob");
        goto fail;
    }
    for (size_t off = 0; off < len; off += CHUNK) {
        size_t n = len - off < CHUNK ? len - off : CHUNK;
        if ((rc = fill(user, off, buf, n)))
            goto fail;
        if (sqlite3_blob_write(b, buf, (int)n, (int)off) != SQLITE_OK) {
            rc = db_err(st, "write report blob");
            goto fail;
        }
    }
    sqlite3_blob_close(b);
    b = NULL;
    if ((rc = commit(st)))
        goto fail;
    return 0;
fail:
    sqlite3_blob_close(b);
    rollback(st);
    return rc;
}

int store_report_each(store *st, const store_attempt_key *k,
                      int (*fn)(void *user, const store_report *r), void *user)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT device_id, num_samples, loss, tau, eval_samples, "
                                   "eval_correct, eval_loss, eval_confusion, data, created_at FROM "
                                   "reports WHERE project_id = ? AND number = ? AND attempt = ? "
                                   "ORDER BY rowid", -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "list reports");
    sqlite3_bind_int64(s, 1, k->project);
    sqlite3_bind_int(s, 2, k->number);
    sqlite3_bind_int(s, 3, k->attempt);
    int rc = 0, r;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        store_report rep = {
            .device = sqlite3_column_int64(s, 0),
            .num_samples = sqlite3_column_double(s, 1),
            .loss = col_double_or_nan(s, 2),
            .tau = col_double_or_nan(s, 3),
            .eval_samples = sqlite3_column_int64(s, 4),
            .eval_correct = sqlite3_column_int64(s, 5),
            .eval_loss = col_double_or_nan(s, 6),
            .eval_confusion = (const char *)sqlite3_column_text(s, 7),
            .data = sqlite3_column_blob(s, 8),
            .len = (size_t)sqlite3_column_bytes(s, 8),
            .created_at = sqlite3_column_double(s, 9),
        };
        rc = fn(user, &rep);
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_err(st, "list reports");
    sqlite3_finalize(s);
    return rc;
}
