/* http.c — the blocking libcurl wrapper of http.h: one easy handle per connection (libcurl
 * keeps the TCP connection alive between requests), a growing response buffer with a hard
 * cap, ETag/Content-Type captured from the headers, and an abort flag polled by curl's
 * progress callback so a stop request never waits for a slow server.
 * Layer `client`: core + libcurl only; prints nothing.
 */
#include "client/http.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "core/err.h"
#include "core/timer.h"

#define HTTP_DEFAULT_MAX_BODY ((size_t)64 << 20)

struct client_http {
    CURL *curl;
    char *base;
    double timeout_s;
    volatile sig_atomic_t *abort_flag;
    char errbuf[CURL_ERROR_SIZE];
};

typedef struct sink {
    client_http_resp *r;
    size_t cap, max;
    int over;
} sink;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int client_http_create(const char *base_url, double timeout_s, client_http **out)
{
    *out = NULL;
    if (!base_url || (strncmp(base_url, "http://", 7) != 0 && strncmp(base_url, "https://", 8) != 0))
        return af_seterr(AF_EINVAL, "server URL '%s': expected http://HOST:PORT or https://…",
                         base_url ? base_url : "(null)");
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return af_seterr(AF_ENET, "libcurl: %s", curl_easy_strerror(curl_init_rc));
    client_http *h = calloc(1, sizeof *h);
    if (!h || !(h->base = strdup(base_url)) || !(h->curl = curl_easy_init())) {
        client_http_free(h);
        return af_seterr(AF_ENOMEM, "http: out of memory");
    }
    size_t n = strlen(h->base);
    while (n > 0 && h->base[n - 1] == '/')
        h->base[--n] = 0;
    h->timeout_s = timeout_s > 0 ? timeout_s : 60.0;
    *out = h;
    return 0;
}

void client_http_free(client_http *h)
{
    if (!h)
        return;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    free(h->base);
    free(h);
}

void client_http_set_abort(client_http *h, volatile sig_atomic_t *flag) { h->abort_flag = flag; }

const char *client_http_base(const client_http *h) { return h->base; }

static size_t on_body(char *p, size_t size, size_t nmemb, void *user)
{
    sink *s = user;
    size_t n = size * nmemb;
    client_http_resp *r = s->r;
    if (r->len + n > s->max) {
        s->over = 1;
        return 0; /* curl aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (r->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b)
            return 0;
        r->body = b;
        s->cap = cap;
    }
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = 0;
    return n;
}

/* Copies the value of header line "Name: value\r\n" into dst if the name matches. */
static void header_value(const char *line, size_t n, const char *name, char *dst, size_t cap)
{
    size_t k = strlen(name);
    if (n <= k + 1 || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return;
    const char *v = line + k + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    size_t len = (size_t)(end - v) < cap - 1 ? (size_t)(end - v) : cap - 1;
    memcpy(dst, v, len);
    dst[len] = 0;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *user)
{
    sink *s = user;
    client_http_resp *r = s->r;
    size_t n = size * nmemb;
    char cl[32] = "";
    header_value(p, n, "ETag", r->etag, sizeof r->etag);
    header_value(p, n, "Content-Type", r->content_type, sizeof r->content_type);
    header_value(p, n, "Content-Length", cl, sizeof cl);
    /* a declared length within the limit: the body buffer is sized once (no regrowth and
     * copy of a 133 KB checkpoint in doubling steps) */
    char *end;
    unsigned long long want = cl[0] ? strtoull(cl, &end, 10) : 0;
    if (want && !*end && want < s->max && want + 1 > s->cap && r->len == 0) {
        char *b = realloc(r->body, (size_t)want + 1);
        if (b) {
            r->body = b;
            s->cap = (size_t)want + 1;
        }
    }
    return n;
}

static int on_progress(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    client_http *h = user;
    return h->abort_flag && *h->abort_flag ? 1 : 0;
}

int client_http_request(client_http *h, const char *method, const char *path, const char *token,
                        const char *content_type, const void *body, size_t len,
                        const char *if_none_match, size_t max_body, client_http_resp *out)
{
    memset(out, 0, sizeof *out);
    char url[2048], hdr[512];
    int full = strncmp(path, "http://", 7) == 0 || strncmp(path, "https://", 8) == 0;
    if ((size_t)snprintf(url, sizeof url, "%s%s", full ? "" : h->base, path) >= sizeof url)
        return af_seterr(AF_EINVAL, "%s %s: URL too long", method, path);
    struct curl_slist *hl = NULL, *t;
#define ADD_HEADER(...)                                                                    \
    do {                                                                                   \
        snprintf(hdr, sizeof hdr, __VA_ARGS__);                                            \
        if (!(t = curl_slist_append(hl, hdr))) {                                           \
            curl_slist_free_all(hl);                                                       \
            return af_seterr(AF_ENOMEM, "http: out of memory");                            \
        }                                                                                  \
        hl = t;                                                                            \
    } while (0)
    if (token && *token)
        ADD_HEADER("Authorization: Bearer %s", token);
    if (content_type)
        ADD_HEADER("Content-Type: %s", content_type);
    if (if_none_match && *if_none_match)
        ADD_HEADER("If-None-Match: %s", if_none_match);
    ADD_HEADER("Expect:"); /* no 100-continue round trip before uploads */
    ADD_HEADER("Accept: application/json, application/octet-stream");
#undef ADD_HEADER
    CURL *c = h->curl;
    curl_easy_reset(c);
    sink s = {.r = out, .max = max_body ? max_body : HTTP_DEFAULT_MAX_BODY};
    h->errbuf[0] = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(h->timeout_s * 1000.0));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)((h->timeout_s < 10 ? h->timeout_s : 10) * 1000.0));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &s);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    double t0 = af_now();
    CURLcode rc = curl_easy_perform(c);
    out->seconds = af_now() - t0;
    curl_slist_free_all(hl);
    if (rc != CURLE_OK) {
        int over = s.over;
        client_http_resp_free(out);
        if (over)
            return af_seterr(AF_ERANGE, "%s %s: response larger than %zu bytes", method, url, s.max);
        if (rc == CURLE_ABORTED_BY_CALLBACK)
            return af_seterr(AF_ENET, "%s %s: stopped", method, url);
        return af_seterr(AF_ENET, "%s %s: %s", method, url, h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    if (!out->body && !(out->body = calloc(1, 1))) {
        client_http_resp_free(out);
        return af_seterr(AF_ENOMEM, "http: out of memory");
    }
    return 0;
}

void client_http_resp_free(client_http_resp *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

void client_http_error(const client_http_resp *r, char *code, size_t code_cap, char *msg, size_t msg_cap)
{
    if (code && code_cap)
        code[0] = 0;
    if (msg && msg_cap)
        msg[0] = 0;
    if (!r->body || !r->len)
        return;
    cJSON *j = cJSON_ParseWithLength(r->body, r->len);
    if (!j)
        return;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (code && code_cap && cJSON_IsString(e))
        snprintf(code, code_cap, "%s", e->valuestring);
    if (msg && msg_cap && cJSON_IsString(m))
        snprintf(msg, msg_cap, "%s", m->valuestring);
    cJSON_Delete(j);
}

int client_http_status_error(const client_http_resp *r, const char *method, const char *path)
{
    char code[64], msg[512];
    client_http_error(r, code, sizeof code, msg, sizeof msg);
    int rc = r->status == 401 || r->status == 403 ? AF_EAUTH
             : r->status == 404                   ? AF_ENOTFOUND
             : r->status >= 400 && r->status < 500 ? AF_EINVAL
                                                   : AF_ENET;
    if (code[0] || msg[0])
        return af_seterr(rc, "%s %s: HTTP %ld %s: %s", method, path, r->status, code, msg);
    /* not our JSON error (a proxy, a crash page): show the start of the body */
    char snippet[120];
    size_t n = r->len < sizeof snippet - 1 ? r->len : sizeof snippet - 1;
    for (size_t i = 0; i < n; i++)
        snippet[i] = isprint((unsigned char)r->body[i]) ? r->body[i] : ' ';
    snippet[n] = 0;
    return af_seterr(rc, "%s %s: HTTP %ld%s%s", method, path, r->status, n ? ": " : "", snippet);
}
