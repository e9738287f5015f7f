/* http.h — a small blocking HTTP client over libcurl for the device library, the owner
 * commands and the load generator: one connection handle (kept alive between requests),
 * JSON or binary bodies, Bearer tokens, conditional GETs, bounded response sizes.
 *
 * Layer `client`: uses core and libcurl only. Never prints, never exits: a transport failure
 * is AF_ENET with a message naming the method, the URL and curl's reason; an HTTP status is
 * not an error here (the caller reads resp.status and client_http_error_code()).
 */
#ifndef AF_CLIENT_HTTP_H
#define AF_CLIENT_HTTP_H

#include <signal.h>
#include <stddef.h>

typedef struct client_http client_http;

/* A response. body is NUL-terminated for convenience (len excludes the NUL); owned by the
 * response: free with client_http_resp_free. etag is the ETag header as sent (with quotes),
 * "" if none. */
typedef struct client_http_resp {
    long status;
    char *body;
    size_t len;
    char etag[128];
    char content_type[128];
    double seconds;            /* wall time of the exchange */
} client_http_resp;

/* A connection to base_url ("http://127.0.0.1:8080", no trailing slash needed). timeout_s
 * bounds each whole request (0 = 60 s); connecting is bounded by min(timeout_s, 10 s).
 * Initialises libcurl globally on first use. 0, AF_EINVAL (URL not http:// or https://) or
 * AF_ENOMEM. *out is the caller's: client_http_free. */
int client_http_create(const char *base_url, double timeout_s, client_http **out);
void client_http_free(client_http *h);

/* A transfer in progress is abandoned (AF_ENET "stopped") as soon as *flag becomes non-zero;
 * flag may be NULL. The flag must outlive the handle. */
void client_http_set_abort(client_http *h, volatile sig_atomic_t *flag);

/* The base URL (as given, without a trailing slash). */
const char *client_http_base(const client_http *h);

/* One request. path starts with '/' (joined to the base URL) or is a full http(s) URL.
 * token (may be NULL) goes in "Authorization: Bearer"; content_type (may be NULL) and the body
 * (body may be NULL with len 0) are sent for POST/PUT; if_none_match (may be NULL) becomes the
 * If-None-Match header. Responses longer than max_body bytes (0 = 64 MiB) are abandoned with
 * AF_ERANGE. Returns 0 with *out filled (any status), or AF_ENET/AF_ERANGE/AF_ENOMEM with
 * nothing to free. */
int client_http_request(client_http *h, const char *method, const char *path, const char *token,
                        const char *content_type, const void *body, size_t len,
                        const char *if_none_match, size_t max_body, client_http_resp *out);
void client_http_resp_free(client_http_resp *r);

/* The "error" code of a JSON error body ({"error": "late", "message": "…"}) into code and
 * the message into msg (either may be NULL; empty strings when the body is not such JSON). */
void client_http_error(const client_http_resp *r, char *code, size_t code_cap, char *msg,
                       size_t msg_cap);

/* Sets the thread's error for an unexpected HTTP status: "METHOD PATH: HTTP 403 forbidden:
 * message" and returns the code (AF_EAUTH for 401/403, AF_ENOTFOUND for 404, AF_EINVAL for
 * other 4xx, AF_ENET for 5xx and anything else). */
int client_http_status_error(const client_http_resp *r, const char *method, const char *path);

#endif
