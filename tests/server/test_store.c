/* test_store.c — the coordinator's store: schema creation and migration from versions 0 and 1
 * (an open attempt's rows move to its log), refusal of newer schemas, atomic migrations, the
 * attempt log (append, replay, a torn tail cut off, a checksum in full-durability mode, a
 * spooled body copied in), the all-or-nothing round commit that records the selections and
 * drops the log, and the removal of logs left by a crash. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../test.h"
#include "core/err.h"
#include "store/store.h"

static int exec_sql(const char *path, const char *sql)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

static int count_rows(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int n = -1;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

TEST(store_migrates_a_version_0_database)
{
    char path[600];
    snprintf(path, sizeof path, "%s/v0.db", t_tmpdir());
    /* a version-0 file: user_version 0 and a table of someone's own, which must survive */
    CHECK(exec_sql(path, "CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('kept');") == 0);
    CHECK_EQ_INT(count_rows(path, "PRAGMA user_version"), 0);
    store *st;
    CHECK(store_open(path, 0, &st) == 0);
    CHECK_EQ_INT(store_schema_version(st), STORE_SCHEMA_VERSION);
    store_close(st);
    CHECK_EQ_INT(count_rows(path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                  "name IN ('meta','owners','enroll_secrets','devices','projects',"
                                  "'checkpoints','rounds','selections')"), 8);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE name = 'reports'"), 0);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM notes"), 1);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = "
                                  "'wal'"), 1);
    /* opening again is a no-op that keeps the data */
    CHECK(store_open(path, 0, &st) == 0);
    uint8_t h[STORE_HASH_BYTES] = {1};
    int64_t id;
    CHECK(store_owner_add(st, "acme", h, &id) == 0);
    store_close(st);
    CHECK(store_open(path, 0, &st) == 0);
    int64_t found = 0;
    CHECK(store_owner_find(st, h, &found) == 0);
    CHECK_EQ_INT(found, id);
    store_close(st);
}

TEST(store_refuses_a_newer_schema)
{
    char path[600];
    snprintf(path, sizeof path, "%s/new.db", t_tmpdir());
    CHECK(exec_sql(path, "PRAGMA user_version = 99") == 0);
    store *st = NULL;
    int rc = store_open(path, 0, &st);
    CHECK_EQ_INT(rc, AF_EFORMAT);
    CHECK(st == NULL);
    CHECK(strstr(af_errmsg(), "99") && strstr(af_errmsg(), "newer"));
}

TEST(store_failed_migration_changes_nothing)
{
    char path[600];
    snprintf(path, sizeof path, "%s/clash.db", t_tmpdir());
    /* a table in the way of step 0→1: the step fails and is rolled back whole */
    CHECK(exec_sql(path, "CREATE TABLE owners (x);") == 0);
    store *st = NULL;
    CHECK(store_open(path, 0, &st) != 0);
    CHECK(strstr(af_errmsg(), "migrate schema 0 -> 1"));
    CHECK_EQ_INT(count_rows(path, "PRAGMA user_version"), 0);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE name = 'projects'"), 0);
}

/* A store with an owner, a device per id in devs[0..nd) and a project with round 1 attempt 1
 * open. */
static store *round_fixture(const char *path, int durable_full, int64_t *pid, int64_t *devs,
                            int nd)
{
    store *st;
    if (store_open(path, durable_full, &st))
        return NULL;
    uint8_t oh[STORE_HASH_BYTES] = {7};
    int64_t owner;
    store_round r = {.number = 1, .attempt = 1, .version = 0, .opened_at = 1, .deadline_at = 2};
    int rc = store_owner_add(st, "o", oh, &owner);
    for (int i = 0; !rc && i < nd; i++) {
        uint8_t dh[STORE_HASH_BYTES] = {(uint8_t)(8 + i)};
        rc = store_device_add(st, dh, "{}", &devs[i]);
    }
    if (!rc)
        rc = store_project_add(st, owner, "p", "{}", "{}", "v0", 2, pid);
    r.project = *pid;
    if (!rc)
        rc = store_round_open(st, &r);
    if (rc) {
        store_close(st);
        return NULL;
    }
    return st;
}

typedef struct seen {
    int n;
    int type[8];
    int64_t device[8];
    double at[8];
    char data[8][64];
    size_t len[8];
} seen;

static int collect(void *user, const store_log_record *r)
{
    seen *x = user;
    if (x->n == 8)
        return -1;
    x->type[x->n] = r->type;
    x->device[x->n] = r->device;
    x->at[x->n] = r->at;
    x->len[x->n] = r->len;
    if (r->len)
        memcpy(x->data[x->n], r->data, r->len < 64 ? r->len : 64);
    x->n++;
    return 0;
}

static size_t file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return (size_t)-1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return (size_t)n;
}

TEST(store_attempt_log_appends_replays_and_closes)
{
    char path[600], logf[700];
    snprintf(path, sizeof path, "%s/r.db", t_tmpdir());
    int64_t pid, dev[2];
    store *st = round_fixture(path, 0, &pid, dev, 2);
    CHECK(st != NULL);
    snprintf(logf, sizeof logf, "%s.rounds/p%lld-r1-a1.log", path, (long long)pid);
    store_attempt_key k = {pid, 1, 1};
    store_log *l;
    CHECK(store_log_open(st, &k, &l) == 0);
    CHECK(store_log_selection(l, dev[0], 10.5) == 0);
    CHECK(store_log_selection(l, dev[1], 11.5) == 0);
    struct iovec iov[3] = {{"head", 4}, {"-mid-", 5}, {"tail", 4}};
    CHECK(store_log_report(l, dev[1], 12.5, iov, 3, -1, 0) == 0);
    store_log_close(l);
    size_t whole = file_size(logf);
    CHECK(whole != (size_t)-1);
    /* a process killed mid-append leaves a short record at the end: the next open cuts it */
    int fd = open(logf, O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    CHECK(write(fd, "AFR1 torn record, no more", 25) == 25);
    close(fd);
    store_close(st);
    CHECK(store_open(path, 0, &st) == 0);
    CHECK(file_size(logf) == whole + 25); /* an open attempt's log is kept */
    CHECK(store_log_open(st, &k, &l) == 0);
    CHECK_EQ_INT(file_size(logf), whole);
    seen x = {0};
    CHECK(store_log_each(l, collect, &x) == 0);
    CHECK_EQ_INT(x.n, 3);
    CHECK(x.type[0] == STORE_LOG_SELECTION && x.device[0] == dev[0] && x.at[0] == 10.5);
    CHECK(x.type[1] == STORE_LOG_SELECTION && x.device[1] == dev[1] && x.len[1] == 0);
    CHECK(x.type[2] == STORE_LOG_REPORT && x.device[2] == dev[1] && x.at[2] == 12.5);
    CHECK(x.len[2] == 13 && memcmp(x.data[2], "head-mid-tail", 13) == 0);
    /* appends go after the cut */
    CHECK(store_log_report(l, dev[0], 13.0, iov, 1, -1, 0) == 0);
    x.n = 0;
    CHECK(store_log_each(l, collect, &x) == 0);
    CHECK(x.n == 4 && x.len[3] == 4);
    store_log_close(l);
    /* a log belongs to one attempt */
    store_attempt_key other = {pid, 1, 2};
    char logf2[700];
    snprintf(logf2, sizeof logf2, "%s.rounds/p%lld-r1-a2.log", path, (long long)pid);
    CHECK(link(logf, logf2) == 0);
    CHECK_EQ_INT(store_log_open(st, &other, &l), AF_EFORMAT);
    CHECK(unlink(logf2) == 0);

    /* the commit records both selections and drops the log, all or nothing */
    CHECK_EQ_INT(store_checkpoint_replace_initial(st, pid, "x", 1), AF_ESTATE);
    store_round r = {.project = pid, .number = 1, .attempt = 1, .reports = 2, .train_loss = NAN,
                     .eval_loss = NAN, .closed_at = NAN};
    store_selection sel[2] = {{dev[0], 10.5}, {dev[1], 11.5}};
    CHECK(store_round_commit(st, &r, 1, "v1!", 3, "s", 1, 0, sel, 2) == 0);
    CHECK(access(logf, F_OK) != 0);
    /* a second commit of the same attempt changes nothing */
    CHECK_EQ_INT(store_round_commit(st, &r, 2, "v2", 2, NULL, 0, 0, sel, 2), AF_ESTATE);
    CHECK_EQ_INT(store_selection_in_project(st, pid, dev[1]), 1);
    store_close(st);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM selections"), 2);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM checkpoints"), 2);
    CHECK_EQ_INT(count_rows(path, "SELECT version FROM projects"), 1);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM rounds WHERE state = 'committed' AND "
                                  "reports = 2 AND selected = 2"), 1);
    CHECK(store_open(path, 0, &st) == 0);
    void *ck, *state;
    size_t len, slen;
    CHECK(store_checkpoint_get(st, pid, 1, &ck, &len, &state, &slen) == 0);
    CHECK(len == 3 && memcmp(ck, "v1!", 3) == 0 && slen == 1 && memcmp(state, "s", 1) == 0);
    free(ck);
    free(state);
    store_round open;
    CHECK_EQ_INT(store_round_get_open(st, pid, &open), AF_ENOTFOUND);
    store_close(st);
}

TEST(store_log_copies_a_spooled_body_and_checks_it_when_durable)
{
    char path[600], spool[700], logf[700];
    snprintf(path, sizeof path, "%s/d.db", t_tmpdir());
    snprintf(spool, sizeof spool, "%s/spool", t_tmpdir());
    int64_t pid, dev[1];
    store *st = round_fixture(path, 1, &pid, dev, 1);
    CHECK(st != NULL);
    snprintf(logf, sizeof logf, "%s.rounds/p%lld-r1-a1.log", path, (long long)pid);
    /* 200,000 bytes of data in a file, behind a 5-byte header in memory */
    size_t n = 200000;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 7 + (i >> 9));
    int fd = open(spool, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, data, n) == (ssize_t)n);
    store_attempt_key k = {pid, 1, 1};
    store_log *l;
    CHECK(store_log_open(st, &k, &l) == 0);
    struct iovec iov = {"HEAD!", 5};
    CHECK(store_log_report(l, dev[0], 1.0, &iov, 1, fd, n) == 0);
    CHECK(store_log_selection(l, dev[0], 2.0) == 0);
    close(fd);
    store_log_close(l);
    /* replayed whole */
    CHECK(store_log_open(st, &k, &l) == 0);
    seen x = {0};
    CHECK(store_log_each(l, collect, &x) == 0);
    CHECK(x.n == 2 && x.len[0] == 5 + n && memcmp(x.data[0], "HEAD!", 5) == 0 &&
          memcmp(x.data[0] + 5, data, 59) == 0);
    store_log_close(l);
    /* a byte of the body changed (what a power loss can leave): the record and all after it
     * are cut at the next replay */
    fd = open(logf, O_RDWR);
    CHECK(fd >= 0 && pwrite(fd, "X", 1, 32 + 40 + 5 + 1000) == 1);
    close(fd);
    CHECK(store_log_open(st, &k, &l) == 0);
    x.n = 0;
    CHECK(store_log_each(l, collect, &x) == 0);
    CHECK_EQ_INT(x.n, 0);
    CHECK_EQ_INT(file_size(logf), 32);
    store_log_close(l);
    store_close(st);
    free(data);
}

TEST(store_removes_logs_of_closed_attempts_at_open)
{
    char path[600], logf[700], other[700];
    snprintf(path, sizeof path, "%s/p.db", t_tmpdir());
    int64_t pid, dev[1];
    store *st = round_fixture(path, 0, &pid, dev, 1);
    CHECK(st != NULL);
    store_attempt_key k = {pid, 1, 1};
    store_log *l;
    CHECK(store_log_open(st, &k, &l) == 0);
    CHECK(store_log_selection(l, dev[0], 1.0) == 0);
    store_log_close(l);
    store_close(st);
    snprintf(logf, sizeof logf, "%s.rounds/p%lld-r1-a1.log", path, (long long)pid);
    snprintf(other, sizeof other, "%s.rounds/notes.txt", path);
    FILE *f = fopen(other, "w");
    CHECK(f != NULL);
    fclose(f);
    /* the attempt is still open: its log stays */
    CHECK(store_open(path, 0, &st) == 0);
    store_close(st);
    CHECK(access(logf, F_OK) == 0);
    /* a crash after the close committed and before the unlink: removed at the next open */
    CHECK(exec_sql(path, "UPDATE rounds SET state = 'abandoned'") == 0);
    CHECK(store_open(path, 0, &st) == 0);
    store_close(st);
    CHECK(access(logf, F_OK) != 0);
    CHECK(access(other, F_OK) == 0); /* not ours: left alone */
}

TEST(store_migrates_an_open_attempt_of_schema_1_to_its_log)
{
    char path[600];
    snprintf(path, sizeof path, "%s/v1.db", t_tmpdir());
    /* a schema-1 database as the previous build wrote it, round 1 attempt 1 open with two
     * selections and one report in SQLite */
    CHECK(exec_sql(path,
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
        "  FOREIGN KEY (project_id, number, attempt) REFERENCES rounds);"
        "INSERT INTO owners VALUES (1, 'o', x'01', 0);"
        "INSERT INTO devices VALUES (1, x'02', '{}', 0), (2, x'03', '{}', 0);"
        "INSERT INTO projects VALUES (1, 1, 'p', '{}', '{}', 'running', 0, 0);"
        "INSERT INTO rounds (project_id, number, attempt, state, version, opened_at, deadline_at,"
        "  selected) VALUES (1, 1, 1, 'open', 0, 5, 9, 2);"
        "INSERT INTO selections VALUES (1, 1, 1, 2, 6.0), (1, 1, 1, 1, 7.0);"
        "INSERT INTO reports VALUES (1, 1, 1, 1, 3, NULL, NULL, 0, 0, NULL, NULL,"
        "  x'0102030405', 8.0);"
        "PRAGMA user_version = 1;") == 0);
    store *st;
    CHECK(store_open(path, 0, &st) == 0);
    CHECK_EQ_INT(store_schema_version(st), STORE_SCHEMA_VERSION);
    store_attempt_key k = {1, 1, 1};
    store_log *l;
    CHECK(store_log_open(st, &k, &l) == 0);
    seen x = {0};
    CHECK(store_log_each(l, collect, &x) == 0);
    CHECK_EQ_INT(x.n, 3);
    CHECK(x.type[0] == STORE_LOG_SELECTION && x.device[0] == 2 && x.at[0] == 6.0);
    CHECK(x.type[1] == STORE_LOG_SELECTION && x.device[1] == 1 && x.at[1] == 7.0);
    CHECK(x.type[2] == STORE_LOG_REPORT && x.device[2] == 1 && x.len[2] == 5 &&
          memcmp(x.data[2], "\1\2\3\4\5", 5) == 0);
    store_log_close(l);
    store_close(st);
    /* the open attempt lives in its log now; the table holds closed attempts only */
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM selections"), 0);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE name = 'reports'"), 0);
}
