/* testsrv.c — coordinator test helpers (see testsrv.h). Test code only. */
#include "testsrv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "core/err.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"

int ts_read_line(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    if (!ok)
        return -1;
    buf[strcspn(buf, "\r\n")] = 0;
    return 0;
}

int ts_start(ts_server *t, const char *db, const srv_server_config *cfg)
{
    static int curl_ready;
    if (!curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_ready = 1;
    }
    memset(t, 0, sizeof *t);
    srv_server_config c = {0};
    if (cfg)
        c = *cfg;
    snprintf(t->db, sizeof t->db, "%s", db);
    c.db_path = t->db;
    c.host = "127.0.0.1";
    c.port = 0;
    if (!c.tick_s)
        c.tick_s = 0.02;
    if (srv_server_start(&c, &t->s)) {
        fprintf(stdout, "    server start: %s\n", af_errmsg());
        return -1;
    }
    snprintf(t->url, sizeof t->url, "http://127.0.0.1:%d", srv_server_port(t->s));
    if (ts_read_line(srv_server_admin_key_path(t->s), t->admin, sizeof t->admin) ||
        ts_read_line(srv_server_secret_path(t->s), t->secret, sizeof t->secret)) {
        srv_server_stop(t->s);
        t->s = NULL;
        return -1;
    }
    return 0;
}

void ts_stop(ts_server *t)
{
    srv_server_stop(t->s);
    t->s = NULL;
}

typedef struct {
    char *buf;
    size_t len;
} grow;

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    grow *g = user;
    size_t k = size * n;
    char *b = realloc(g->buf, g->len + k + 1);
    if (!b)
        return 0;
    memcpy(b + g->len, p, k);
    g->buf = b;
    g->len += k;
    b[g->len] = 0;
    return k;
}

static size_t on_header(char *p, size_t size, size_t n, void *user)
{
    ts_resp *r = user;
    size_t k = size * n;
    char line[256];
    snprintf(line, sizeof line, "%.*s", (int)(k < 255 ? k : 255), p);
    line[strcspn(line, "\r\n")] = 0;
    if (strncasecmp(line, "ETag: ", 6) == 0)
        snprintf(r->etag, sizeof r->etag, "%.63s", line + 6);
    if (strncasecmp(line, "Content-Type: ", 14) == 0)
        snprintf(r->ctype, sizeof r->ctype, "%.127s", line + 14);
    return k;
}

int ts_http(const char *base, const char *method, const char *path, const char *token,
            const char *ctype, const void *body, size_t len, const char *extra_header,
            ts_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    char url[512], auth[160], ct[160];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (ctype) {
        snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
        h = curl_slist_append(h, ct);
    } else {
        h = curl_slist_append(h, "Content-Type:"); /* no default form type from curl */
    }
    h = curl_slist_append(h, "Expect:");
    if (extra_header)
        h = curl_slist_append(h, extra_header);
    grow g = {NULL, 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &g);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    else
        fprintf(stdout, "    http %s %s: %s\n", method, path, curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    out->body = g.buf ? g.buf : calloc(1, 1);
    out->len = g.len;
    return rc == CURLE_OK ? 0 : -1;
}

int ts_post_json(const char *base, const char *path, const char *token, const char *json,
                 ts_resp *out)
{
    return ts_http(base, "POST", path, token, "application/json", json, strlen(json), NULL, out);
}

void ts_resp_free(ts_resp *r)
{
    free(r->body);
    r->body = NULL;
}

cJSON *ts_json(const ts_resp *r) { return r->body ? cJSON_Parse(r->body) : NULL; }

int ts_is_error(const ts_resp *r, const char *code, const char *needle)
{
    cJSON *j = ts_json(r);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
    int ok = cJSON_IsString(e) && strcmp(e->valuestring, code) == 0 && cJSON_IsString(m) &&
             (!needle || strstr(m->valuestring, needle));
    if (!ok)
        fprintf(stdout, "    expected error %s (%s), got %ld %s\n", code, needle ? needle : "",
                r->status, r->body ? r->body : "");
    cJSON_Delete(j);
    return ok;
}

double ts_num(const ts_resp *r, const char *key)
{
    cJSON *j = ts_json(r);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    cJSON_Delete(j);
    return x;
}

static int str_field(const ts_resp *r, const char *key, char *buf, size_t cap)
{
    cJSON *j = ts_json(r);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    int ok = cJSON_IsString(v);
    if (ok)
        snprintf(buf, cap, "%s", v->valuestring);
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

int ts_owner(const ts_server *t, const char *name, char *key)
{
    char body[256];
    ts_resp r;
    snprintf(body, sizeof body, "{\"name\":\"%s\"}", name);
    int rc = ts_post_json(t->url, "/v1/owners", t->admin, body, &r);
    if (!rc && (r.status != 201 || str_field(&r, "api_key", key, 65)))
        rc = -1;
    ts_resp_free(&r);
    return rc;
}

int ts_device(const ts_server *t, const char *schema, char *token, int64_t *id)
{
    char body[1024];
    ts_resp r;
    snprintf(body, sizeof body, "{\"secret\":\"%s\",\"dataset\":%s}", t->secret, schema);
    int rc = ts_post_json(t->url, "/v1/devices", NULL, body, &r);
    if (!rc && (r.status != 201 || str_field(&r, "token", token, 65)))
        rc = -1;
    if (!rc && id)
        *id = (int64_t)ts_num(&r, "device_id");
    ts_resp_free(&r);
    return rc;
}

int64_t ts_project(const ts_server *t, const char *key, const char *spec, const char *plan)
{
    size_t n = strlen(spec) + strlen(plan) + 64;
    char *body = malloc(n);
    snprintf(body, n, "{\"name\":\"p\",\"spec\":%s,\"plan\":%s}", spec, plan);
    ts_resp r;
    int rc = ts_post_json(t->url, "/v1/projects", key, body, &r);
    free(body);
    int64_t id = !rc && r.status == 201 ? (int64_t)ts_num(&r, "id") : -1;
    if (id < 0)
        fprintf(stdout, "    project create: %ld %s\n", r.status, r.body);
    ts_resp_free(&r);
    return id;
}

int ts_checkin(const ts_server *t, const char *token, const char *body, int *round, int *attempt)
{
    ts_resp r;
    if (ts_post_json(t->url, "/v1/checkin", token, body ? body : "{}", &r) || r.status != 200) {
        fprintf(stdout, "    checkin: %ld %s\n", r.status, r.body);
        ts_resp_free(&r);
        return -1;
    }
    cJSON *j = ts_json(&r);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "action");
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(j, "task");
    int res = -1;
    if (cJSON_IsString(a) && strcmp(a->valuestring, "wait") == 0)
        res = 0;
    else if (cJSON_IsString(a) && strcmp(a->valuestring, "train") == 0 && task) {
        res = 1;
        if (round)
            *round = cJSON_GetObjectItemCaseSensitive(task, "round")->valueint;
        if (attempt)
            *attempt = cJSON_GetObjectItemCaseSensitive(task, "attempt")->valueint;
    }
    cJSON_Delete(j);
    ts_resp_free(&r);
    return res;
}

int ts_update(const nn_model *m, const float *d, const char *const *keys,
              const char *const *vals, int n_meta, uint8_t **out, size_t *len)
{
    st_out_tensor t[2 * NN_MAX_LAYERS];
    for (int i = 0; i < m->n_params_t; i++) {
        const nn_param *p = &m->params_t[i];
        t[i].name = p->name;
        t[i].ndim = p->ndim;
        for (int k = 0; k < p->ndim; k++)
            t[i].shape[k] = p->shape[k];
        t[i].data = d + p->off;
    }
    return st_serialize(t, m->n_params_t, keys, vals, n_meta, out, len);
}

int ts_report(const ts_server *t, const char *token, int64_t project, int round,
              const void *body, size_t len, ts_resp *out)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/projects/%lld/rounds/%d/reports", (long long)project, round);
    return ts_http(t->url, "POST", path, token, "application/octet-stream", body, len, NULL, out);
}

cJSON *ts_status(const ts_server *t, const char *key, int64_t pid)
{
    char path[64];
    ts_resp r;
    snprintf(path, sizeof path, "/v1/projects/%lld", (long long)pid);
    cJSON *j = !ts_http(t->url, "GET", path, key, NULL, NULL, 0, NULL, &r) && r.status == 200
                   ? ts_json(&r)
                   : NULL;
    ts_resp_free(&r);
    return j;
}

nn_model *ts_checkpoint(const ts_server *t, const char *key, int64_t pid, int version)
{
    char path[96];
    ts_resp r;
    if (version < 0)
        snprintf(path, sizeof path, "/v1/projects/%lld/checkpoints/latest", (long long)pid);
    else
        snprintf(path, sizeof path, "/v1/projects/%lld/checkpoints/%d", (long long)pid, version);
    nn_model *m = NULL;
    if (!ts_http(t->url, "GET", path, key, NULL, NULL, 0, NULL, &r) && r.status == 200)
        nn_checkpoint_parse(r.body, r.len, "download", NULL, &m);
    ts_resp_free(&r);
    return m;
}
