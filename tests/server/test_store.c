/* test_store.c — the coordinator's SQLite store: schema creation and migration from version 0,
 * refusal of newer schemas, atomic migrations, one report per device per attempt, and the
 * all-or-nothing round commit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    CHECK_EQ_INT(count_rows(path, "PRAGMA user_version"), 1);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                  "name IN ('meta','owners','enroll_secrets','devices','projects',"
                                  "'checkpoints','rounds','selections','reports')"), 9);
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

TEST(store_one_report_per_device_and_atomic_commit)
{
    char path[600];
    snprintf(path, sizeof path, "%s/r.db", t_tmpdir());
    store *st;
    CHECK(store_open(path, 0, &st) == 0);
    uint8_t oh[STORE_HASH_BYTES] = {7}, dh[STORE_HASH_BYTES] = {8};
    int64_t owner, dev, pid;
    CHECK(store_owner_add(st, "o", oh, &owner) == 0);
    CHECK(store_device_add(st, dh, "{}", &dev) == 0);
    CHECK(store_project_add(st, owner, "p", "{}", "{}", "v0", 2, &pid) == 0);
    store_round r = {.project = pid, .number = 1, .attempt = 1, .version = 0, .opened_at = 1,
                     .deadline_at = 2};
    CHECK(store_round_open(st, &r) == 0);
    store_attempt_key k = {pid, 1, 1};
    CHECK(store_selection_add(st, &k, dev) == 0);
    CHECK_EQ_INT(store_selection_add(st, &k, dev), AF_ESTATE);
    CHECK_EQ_INT(store_selection_in_project(st, pid, dev), 1);
    store_report rep = {.device = dev, .num_samples = 5, .loss = NAN, .tau = NAN, .eval_loss = NAN,
                        .data = "abc", .len = 3};
    CHECK(store_report_add(st, &k, &rep) == 0);
    CHECK_EQ_INT(store_report_add(st, &k, &rep), AF_ESTATE);
    CHECK_EQ_INT(store_checkpoint_replace_initial(st, pid, "x", 1), AF_ESTATE);
    store_round open;
    CHECK(store_round_get_open(st, pid, &open) == 0);
    CHECK_EQ_INT(open.selected, 1);
    store_round_clear(&open);
    r.reports = 1;
    r.train_loss = NAN;
    r.eval_loss = NAN;
    r.closed_at = NAN;
    CHECK(store_round_commit(st, &r, 1, "v1!", 3, "s", 1, 0) == 0);
    /* a second commit of the same attempt changes nothing */
    CHECK_EQ_INT(store_round_commit(st, &r, 2, "v2", 2, NULL, 0, 0), AF_ESTATE);
    store_close(st);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM reports"), 0);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM checkpoints"), 2);
    CHECK_EQ_INT(count_rows(path, "SELECT version FROM projects"), 1);
    CHECK_EQ_INT(count_rows(path, "SELECT count(*) FROM rounds WHERE state = 'committed' AND "
                                  "reports = 1"), 1);
    CHECK(store_open(path, 0, &st) == 0);
    void *ck, *state;
    size_t len, slen;
    CHECK(store_checkpoint_get(st, pid, 1, &ck, &len, &state, &slen) == 0);
    CHECK(len == 3 && memcmp(ck, "v1!", 3) == 0 && slen == 1 && memcmp(state, "s", 1) == 0);
    free(ck);
    free(state);
    CHECK_EQ_INT(store_round_get_open(st, pid, &open), AF_ENOTFOUND);
    store_close(st);
}
