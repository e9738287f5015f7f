/* mocksa.c — the mock secure-aggregation coordinator of the device tests (see mocksa.h).
 * One mutex around everything: secagg_server is not thread-safe, and the tests are small. */
#include "mocksa.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "client/task.h"
#include "core/err.h"
#include "nn/model.h"

#define MOCK_ROUND_ID ((7ull << 56) + 12345) /* past 2^53: must travel as a string */
#define MOCK_URL "/v1/projects/1/rounds/1/secagg"
#define MOCK_CKPT "/v1/projects/1/checkpoints/0"
#define MOCK_MAX 64

static const char *const steps[] = {"checkin", "checkpoint", "advertise", "keys", "shares",
                                    "masked", "survivors", "unmask", NULL};

struct mocksa {
    mocksa_cfg cfg;
    struct MHD_Daemon *d;
    char url[64];
    pthread_mutex_t mu;
    secagg_server *srv;
    secwire_layout L;
    double t0, unix0;
    int phase;                      /* 0 advertise … 3 unmask, 4 finished */
    uint32_t n_adv, n_sh, n_masked, n_unmask, u1, u2, u3;
    char *keys_b64;                 /* U1 as the GET keys answer */
    uint32_t u3_ids[MOCK_MAX];
    char tokens[MOCK_MAX][32];      /* device id − 1 → its token */
    char identity[MOCK_MAX][64];
    uint32_t n_dev;
    int requests[8];
    uint8_t *ckpt;
    size_t ckpt_len;
    uint32_t *sum;
};

typedef struct body {
    char *buf;
    size_t len, cap;
} body;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void count(mocksa *m, const char *step)
{
    for (int i = 0; steps[i]; i++)
        if (strcmp(steps[i], step) == 0)
            m->requests[i]++;
}

/* Closes every phase whose devices have all answered or whose deadline passed. */
static void advance(mocksa *m)
{
    if (m->cfg.stall)
        return;
    double now = mono() - m->t0;
    if (m->phase == 0 && (m->n_adv == m->cfg.wire.n || now >= m->cfg.deadline_s[0])) {
        const secagg_advertise *list;
        size_t nl;
        if (secagg_server_end_advertise(m->srv, &list, &nl) == 0) {
            uint8_t *rec = malloc(SECWIRE_KEY_REC * (nl ? nl : 1));
            for (size_t i = 0; i < nl; i++)
                secwire_put_key(rec + i * SECWIRE_KEY_REC, &list[i]);
            m->keys_b64 = secwire_b64(rec, SECWIRE_KEY_REC * nl);
            free(rec);
            m->u1 = (uint32_t)nl;
        }
        m->phase = 1;
    }
    if (m->phase == 1 && (m->n_sh == m->u1 || now >= m->cfg.deadline_s[1])) {
        secagg_server_end_share_keys(m->srv);
        uint32_t a, b, c, d;
        secagg_server_counts(m->srv, &a, &b, &c, &d);
        m->u2 = b;
        m->phase = 2;
    }
    if (m->phase == 2 && (m->n_masked == m->u2 || now >= m->cfg.deadline_s[2])) {
        const uint32_t *u3;
        size_t n3;
        if (secagg_server_end_masked_input(m->srv, &u3, &n3) == 0) {
            memcpy(m->u3_ids, u3, sizeof *u3 * n3);
            m->u3 = (uint32_t)n3;
        }
        m->phase = 3;
    }
}

static enum MHD_Result reply(struct MHD_Connection *conn, int status, const char *json)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(json), (void *)json,
                                                             MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result refuse(struct MHD_Connection *conn, int rc)
{
    if (rc == AF_EAUTH)
        return reply(conn, 403, "{\"error\":\"bad_signature\",\"message\":\"does not verify\"}");
    if (rc == AF_ESTATE)
        return reply(conn, 409, "{\"error\":\"wrong_phase\",\"message\":\"not now\"}");
    return reply(conn, 400, "{\"error\":\"bad_message\",\"message\":\"malformed\"}");
}

static uint32_t device_of(mocksa *m, struct MHD_Connection *conn)
{
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0)
        return 0;
    for (uint32_t i = 0; i < m->n_dev; i++)
        if (strcmp(m->tokens[i], auth + 7) == 0)
            return i + 1;
    return 0;
}

char *mocksa_task_json(mocksa *m, uint32_t id)
{
    const secwire_params *w = &m->cfg.wire;
    const double *dl = m->cfg.deadline_s;
    char *buf = malloc(16384), dp_clip[64] = "";
    if (w->clip > 0) /* the task's dp_clip is this round's S */
        snprintf(dp_clip, sizeof dp_clip, "\"dp_clip\":%.17g,", w->clip);
    snprintf(buf, 16384,
             "{\"project\":1,\"round\":1,\"attempt\":1,\"version\":0,\"checkpoint\":\"" MOCK_CKPT
             "\",\"report\":\"/v1/projects/1/rounds/1/reports\",\"spec\":%s,\"plan\":%s,"
             "\"deadline_at\":%.3f,%s\"secagg\":{\"id\":%u,\"n\":%u,\"t\":%u,\"round_id\":\"%llu\","
             "\"len\":%ld,\"url\":\"" MOCK_URL "\",\"kind\":\"%s\",\"range\":%.17g,"
             "\"max_samples\":%u,\"clip\":%.17g,\"noise\":%.17g,\"adaptive\":%s,"
             "\"count_noise\":%.17g,\"stats_bound\":%.17g,\"stats_noise\":%.17g,"
             "\"deadlines\":{\"advertise\":%.3f,\"share_keys\":%.3f,\"masked_input\":%.3f,"
             "\"unmask\":%.3f}}}",
             m->cfg.spec, m->cfg.plan, m->unix0 + dl[3],
             dp_clip, id, w->n, w->t,
             (unsigned long long)MOCK_ROUND_ID, (long)m->L.len + m->cfg.len_delta,
             w->kind == SECWIRE_LABELS ? "label_stats" : "train", w->range, w->max_samples,
             w->clip, w->noise, w->adaptive ? "true" : "false", w->count_noise, w->stats_bound,
             w->stats_noise, m->unix0 + dl[0], m->unix0 + dl[1], m->unix0 + dl[2],
             m->unix0 + dl[3]);
    return buf;
}

static enum MHD_Result handle(mocksa *m, struct MHD_Connection *conn, const char *url,
                              const char *method, const body *b)
{
    int post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/v1/checkin") == 0) {
        count(m, "checkin");
        const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
        if (!auth || strncmp(auth, "Bearer ", 7) != 0)
            return reply(conn, 401, "{\"error\":\"unauthorized\",\"message\":\"no token\"}");
        uint32_t id = device_of(m, conn);
        if (id || m->n_dev >= m->cfg.wire.n)
            return reply(conn, 200, "{\"action\":\"wait\",\"retry_after\":0.05,\"reason\":"
                                    "\"round_full\"}");
        cJSON *j = cJSON_ParseWithLength(b->buf, b->len);
        const cJSON *ident = cJSON_GetObjectItemCaseSensitive(j, "identity");
        uint8_t pk[SECAGG_SIGN_PK_BYTES];
        if (!cJSON_IsString(ident) ||
            secwire_unb64_fixed(ident->valuestring, "identity", pk, sizeof pk)) {
            cJSON_Delete(j);
            return reply(conn, 200, "{\"action\":\"wait\",\"retry_after\":1,\"reason\":\"caps\"}");
        }
        id = ++m->n_dev;
        snprintf(m->tokens[id - 1], sizeof m->tokens[0], "%s", auth + 7);
        snprintf(m->identity[id - 1], sizeof m->identity[0], "%s", ident->valuestring);
        cJSON_Delete(j);
        secagg_server_register(m->srv, id, pk);
        char *task = mocksa_task_json(m, id);
        size_t n = strlen(task) + 64;
        char *out = malloc(n);
        snprintf(out, n, "{\"action\":\"train\",\"task\":%s}", task);
        free(task);
        enum MHD_Result ok = reply(conn, 200, out);
        free(out);
        return ok;
    }
    if (strcmp(url, MOCK_CKPT) == 0) {
        count(m, "checkpoint");
        struct MHD_Response *r = MHD_create_response_from_buffer(m->ckpt_len, m->ckpt,
                                                                 MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ok = MHD_queue_response(conn, 200, r);
        MHD_destroy_response(r);
        return ok;
    }
    const size_t ul = strlen(MOCK_URL);
    if (strncmp(url, MOCK_URL "/", ul + 1) != 0)
        return reply(conn, 404, "{\"error\":\"not_found\",\"message\":\"no such path\"}");
    const char *step = url + ul + 1;
    count(m, step);
    uint32_t id = device_of(m, conn);
    if (!id)
        return reply(conn, 403, "{\"error\":\"forbidden\",\"message\":\"not selected\"}");
    if (m->cfg.refuse_step && strcmp(step, m->cfg.refuse_step) == 0)
        return reply(conn, 409, "{\"error\":\"wrong_phase\",\"message\":\"refused by the mock\"}");
    advance(m);
    int rc;
    if (!post && (strcmp(step, "keys") == 0 || strcmp(step, "shares") == 0 ||
                  strcmp(step, "survivors") == 0)) {
        int need = step[0] == 'k' ? 1 : step[1] == 'h' ? 2 : 3;
        if (m->phase < need)
            return reply(conn, 202, "{\"wait\":true,\"phase\":\"x\",\"retry_after\":0.05}");
        char *out = NULL;
        if (need == 1) {
            if (!m->keys_b64)
                return reply(conn, 409, "{\"error\":\"late\",\"message\":\"abandoned\"}");
            out = malloc(strlen(m->keys_b64) + 32);
            sprintf(out, "{\"keys\":\"%s\"}", m->keys_b64);
        } else if (need == 2) {
            const secagg_enc_share *in;
            size_t k;
            if ((rc = secagg_server_shares_for(m->srv, id, &in, &k)))
                return refuse(conn, rc);
            uint8_t *rec = malloc(SECWIRE_SHARE_REC * (k ? k : 1));
            for (size_t i = 0; i < k; i++)
                secwire_put_share(rec + i * SECWIRE_SHARE_REC, &in[i]);
            char *b64 = secwire_b64(rec, SECWIRE_SHARE_REC * k);
            free(rec);
            out = malloc(strlen(b64) + 32);
            sprintf(out, "{\"shares\":\"%s\"}", b64);
            free(b64);
        } else {
            out = malloc(16 * (m->u3 + 2) + 32);
            char *p = out + sprintf(out, "{\"survivors\":[");
            for (uint32_t i = 0; i < m->u3; i++)
                p += sprintf(p, "%s%u", i ? "," : "", m->u3_ids[i]);
            sprintf(p, "]}");
        }
        enum MHD_Result ok = reply(conn, 200, out);
        free(out);
        return ok;
    }
    if (!post)
        return reply(conn, 405, "{\"error\":\"method\",\"message\":\"no\"}");
    if (strcmp(step, "masked") == 0) {
        size_t len = m->L.len;
        if (b->len != 4 * len + SECAGG_SIG_BYTES)
            return refuse(conn, AF_EINVAL);
        uint32_t *y = malloc(sizeof *y * len);
        const uint8_t *p = (const uint8_t *)b->buf;
        for (size_t i = 0; i < len; i++)
            y[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                   (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
        secagg_masked_input mi = {.round_id = MOCK_ROUND_ID, .id = id, .len = len, .y = y};
        memcpy(mi.sig, p + 4 * len, SECAGG_SIG_BYTES);
        rc = secagg_server_add_masked_input(m->srv, &mi);
        free(y);
        if (rc)
            return refuse(conn, rc);
        m->n_masked++;
        return reply(conn, 200, "{\"accepted\":true}");
    }
    cJSON *j = cJSON_ParseWithLength(b->buf, b->len);
    const cJSON *sig = cJSON_GetObjectItemCaseSensitive(j, "sig");
    uint8_t s64[SECAGG_SIG_BYTES];
    if (!cJSON_IsString(sig) || secwire_unb64_fixed(sig->valuestring, "sig", s64, sizeof s64)) {
        cJSON_Delete(j);
        return refuse(conn, AF_EINVAL);
    }
    if (strcmp(step, "advertise") == 0) {
        secagg_advertise a = {.round_id = MOCK_ROUND_ID, .id = id};
        memcpy(a.sig, s64, sizeof s64);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "c_pk");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "s_pk");
        rc = !cJSON_IsString(c) || !cJSON_IsString(s) ||
                     secwire_unb64_fixed(c->valuestring, "c_pk", a.c_pk, 32) ||
                     secwire_unb64_fixed(s->valuestring, "s_pk", a.s_pk, 32)
                 ? AF_EINVAL
                 : secagg_server_add_advertise(m->srv, &a);
        m->n_adv += rc == 0;
    } else if (strcmp(step, "shares") == 0) {
        secagg_share_keys sk = {.round_id = MOCK_ROUND_ID, .id = id};
        memcpy(sk.sig, s64, sizeof s64);
        const cJSON *bc = cJSON_GetObjectItemCaseSensitive(j, "b_commit");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shares");
        uint8_t *raw = NULL;
        size_t len = 0;
        secagg_enc_share *es = NULL;
        rc = !cJSON_IsString(bc) || !cJSON_IsString(sh) ||
             secwire_unb64_fixed(bc->valuestring, "b_commit", sk.b_commit, 32) ||
             secwire_unb64(sh->valuestring, "shares", SECWIRE_SHARE_REC, 0, &raw, &len);
        if (!rc) {
            sk.n_shares = (uint32_t)(len / SECWIRE_SHARE_REC);
            es = malloc(sizeof *es * (sk.n_shares + 1));
            for (uint32_t i = 0; i < sk.n_shares; i++)
                secwire_get_share(raw + (size_t)i * SECWIRE_SHARE_REC, &es[i]);
            sk.shares = es;
            rc = secagg_server_add_share_keys(m->srv, &sk);
        } else {
            rc = AF_EINVAL;
        }
        free(raw);
        free(es);
        m->n_sh += rc == 0;
    } else if (strcmp(step, "unmask") == 0) {
        secagg_unmask um = {.round_id = MOCK_ROUND_ID, .id = id};
        memcpy(um.sig, s64, sizeof s64);
        const cJSON *rv = cJSON_GetObjectItemCaseSensitive(j, "reveals");
        uint8_t *raw = NULL;
        size_t len = 0;
        secagg_reveal *r = NULL;
        rc = !cJSON_IsString(rv) ||
             secwire_unb64(rv->valuestring, "reveals", SECWIRE_REVEAL_REC, 0, &raw, &len);
        if (!rc) {
            um.n_reveals = (uint32_t)(len / SECWIRE_REVEAL_REC);
            r = malloc(sizeof *r * (um.n_reveals + 1));
            for (uint32_t i = 0; i < um.n_reveals; i++)
                secwire_get_reveal(raw + (size_t)i * SECWIRE_REVEAL_REC, &r[i]);
            um.reveals = r;
            rc = secagg_server_add_unmask(m->srv, &um);
        } else {
            rc = AF_EINVAL;
        }
        free(raw);
        free(r);
        m->n_unmask += rc == 0;
    } else {
        rc = AF_EINVAL;
    }
    cJSON_Delete(j);
    return rc ? refuse(conn, rc) : reply(conn, 200, "{\"accepted\":true}");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    mocksa *m = cls;
    body *b = *con_cls;
    if (!b) {
        *con_cls = calloc(1, sizeof(body));
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (b->len + n + 1 > b->cap) {
            b->cap = (b->len + n + 1) * 2;
            b->buf = realloc(b->buf, b->cap);
        }
        memcpy(b->buf + b->len, upload_data, n);
        b->len += n;
        b->buf[b->len] = 0;
        *upload_data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&m->mu);
    enum MHD_Result ok = handle(m, conn, url, method, b);
    pthread_mutex_unlock(&m->mu);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    body *b = *con_cls;
    if (b) {
        free(b->buf);
        free(b);
    }
    *con_cls = NULL;
}

int mocksa_start(const mocksa_cfg *cfg, mocksa **out)
{
    *out = NULL;
    mocksa *m = calloc(1, sizeof *m);
    m->cfg = *cfg;
    pthread_mutex_init(&m->mu, NULL);
    nn_model *model = NULL;
    if (nn_model_from_json(cfg->spec, "mock spec", NULL, &model) ||
        secwire_layout_init(&m->L, &cfg->wire, model->n_params, model->n_classes)) {
        printf("    mock: %s\n", af_errmsg());
        nn_model_free(model);
        free(m);
        return -1;
    }
    nn_model_init(model, 11);
    client_report rep = {.num_samples = 1, .loss = 0};
    secagg_cfg sc = {.round_id = MOCK_ROUND_ID, .n = cfg->wire.n, .t = cfg->wire.t, .len = m->L.len};
    int rc = client_delta_serialize(model, model->params, &rep, &m->ckpt, &m->ckpt_len);
    nn_model_free(model);
    if (rc || secagg_server_create(&sc, &m->srv)) {
        printf("    mock: %s\n", af_errmsg());
        mocksa_stop(m);
        return -1;
    }
    m->t0 = mono();
    m->unix0 = unix_now();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, m, MHD_OPTION_END);
    if (!m->d) {
        printf("    mock: cannot listen\n");
        mocksa_stop(m);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(m->url, sizeof m->url, "http://127.0.0.1:%u", (unsigned)info->port);
    *out = m;
    return 0;
}

const char *mocksa_url(const mocksa *m) { return m->url; }

void mocksa_register(mocksa *m, uint32_t id, const uint8_t pk[SECAGG_SIGN_PK_BYTES])
{
    pthread_mutex_lock(&m->mu);
    if (id > m->n_dev)
        m->n_dev = id;
    snprintf(m->tokens[id - 1], sizeof m->tokens[0], "dev%u", id);
    secagg_server_register(m->srv, id, pk);
    pthread_mutex_unlock(&m->mu);
}

const char *mocksa_identity(const mocksa *m, uint32_t id)
{
    return id >= 1 && id <= MOCK_MAX ? m->identity[id - 1] : "";
}

int mocksa_requests(const mocksa *m, const char *step)
{
    for (int i = 0; steps[i]; i++)
        if (strcmp(steps[i], step) == 0)
            return m->requests[i];
    return -1;
}

int mocksa_finish(mocksa *m, float *delta_sum, double *counts, int64_t *confusion,
                  secwire_sums *sums)
{
    pthread_mutex_lock(&m->mu);
    advance(m);
    int rc = 0;
    if (!m->sum) {
        m->sum = calloc(m->L.len, sizeof *m->sum);
        rc = secagg_server_finish(m->srv, m->sum);
        if (rc) {
            free(m->sum);
            m->sum = NULL;
        }
    }
    if (!rc)
        secwire_decode(&m->L, m->sum, delta_sum, counts, confusion, sums);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

void mocksa_counts(const mocksa *m, uint32_t *u1, uint32_t *u2, uint32_t *u3, uint32_t *u5)
{
    secagg_server_counts(m->srv, u1, u2, u3, u5);
}

const secwire_layout *mocksa_layout(const mocksa *m) { return &m->L; }

void mocksa_stop(mocksa *m)
{
    if (!m)
        return;
    if (m->d)
        MHD_stop_daemon(m->d);
    secagg_server_free(m->srv);
    pthread_mutex_destroy(&m->mu);
    free(m->keys_b64);
    free(m->ckpt);
    free(m->sum);
    free(m);
}
