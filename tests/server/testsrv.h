/* testsrv.h — helpers for the coordinator tests: an in-process server on 127.0.0.1 with an
 * ephemeral port and a fresh database, a small libcurl HTTP client, principals and projects
 * in one call, and update bodies built from a model's layout.
 *
 * Test code only (tests/server/): never linked into the binary.
 */
#ifndef AF_TESTS_SERVER_TESTSRV_H
#define AF_TESTS_SERVER_TESTSRV_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "nn/model.h"
#include "server/server.h"

/* A 4-feature, 3-class linear model (15 parameters): fast enough for every test. */
#define TS_TOY_SPEC                                                                        \
    "{\"name\":\"toy\",\"input\":[4],\"classes\":3,\"layers\":[{\"type\":\"linear\","     \
    "\"name\":\"fc\",\"in_features\":4,\"out_features\":3}]}"
#define TS_TOY_SCHEMA "{\"name\":\"toy\",\"kind\":\"tabular\",\"shape\":[4],\"classes\":3}"

typedef struct ts_server {
    srv_server *s;
    char db[512];
    char url[64];       /* http://127.0.0.1:PORT */
    char admin[80];     /* the admin key, read from its file */
    char secret[80];    /* the first enrolment secret */
} ts_server;

/* Starts a server on db (cfg may be NULL; its db_path/host/port are overridden). 0 or -1. */
int ts_start(ts_server *t, const char *db, const srv_server_config *cfg);
void ts_stop(ts_server *t);

typedef struct ts_resp {
    long status;
    char *body;          /* NUL-terminated, malloc'd */
    size_t len;
    char etag[64];
    char ctype[128];
} ts_resp;

/* One HTTP request to base+path. token/ctype/body/extra_header may be NULL (extra_header is
 * one full "Name: value" line). Returns 0, or -1 on a transport error (status 0). */
int ts_http(const char *base, const char *method, const char *path, const char *token,
            const char *ctype, const void *body, size_t len, const char *extra_header,
            ts_resp *out);
/* JSON POST convenience. */
int ts_post_json(const char *base, const char *path, const char *token, const char *json,
                 ts_resp *out);
void ts_resp_free(ts_resp *r);
/* The body parsed as JSON (caller deletes), NULL if it is not JSON. */
cJSON *ts_json(const ts_resp *r);
/* 1 if the body is {"error": code, "message": …} with a message containing `needle` (NULL:
 * any message). */
int ts_is_error(const ts_resp *r, const char *code, const char *needle);
/* A number field of a JSON object body (NAN if absent). */
double ts_num(const ts_resp *r, const char *key);

/* Creates an owner (via the admin key) and returns its API key in key (65 bytes). */
int ts_owner(const ts_server *t, const char *name, char *key);
/* Enrols a device holding the schema (JSON text) and returns its token and id. */
int ts_device(const ts_server *t, const char *schema, char *token, int64_t *id);
/* Creates a project with spec and plan (JSON texts); returns its id or -1. */
int64_t ts_project(const ts_server *t, const char *key, const char *spec, const char *plan);
/* Checks in; returns 1 (task: round/attempt set), 0 (wait), -1 on error. */
int ts_checkin(const ts_server *t, const char *token, const char *body, int *round,
               int *attempt);

/* Builds a safetensors update for model m: delta values in d[n_params], metadata pairs. */
int ts_update(const nn_model *m, const float *d, const char *const *keys,
              const char *const *vals, int n_meta, uint8_t **out, size_t *len);
/* Posts an update to project/round with the given device token. */
int ts_report(const ts_server *t, const char *token, int64_t project, int round,
              const void *body, size_t len, ts_resp *out);

/* GET /v1/projects/PID as `key`: the status JSON (caller deletes), NULL unless 200. */
cJSON *ts_status(const ts_server *t, const char *key, int64_t pid);
/* GET /v1/projects/PID/checkpoints/VERSION (version < 0: "latest") parsed into a model
 * (caller frees), NULL unless 200 and a valid checkpoint. */
nn_model *ts_checkpoint(const ts_server *t, const char *key, int64_t pid, int version);

/* Reads the file (first line, newline stripped) into buf. */
int ts_read_line(const char *path, char *buf, size_t cap);

#endif
