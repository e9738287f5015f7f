/* server.h — the coordinator's HTTP/1.1 API (docs/api.md) over libmicrohttpd.
 *
 * Layer `server`: routes requests, authenticates the bearer token, checks roles, content
 * types and body limits, parses JSON bodies, and hands the rest to coord.h; serves /healthz
 * and /metrics; runs the timer thread that closes rounds at their deadline. Library code: it
 * never prints to stdout and never exits (the `artificien serve` command does that).
 *
 *   srv_server_config cfg = {.db_path = "artificien.db", .host = "127.0.0.1", .port = 0};
 *   srv_server *s; srv_server_start(&cfg, &s);
 *   printf("listening on http://127.0.0.1:%d\n", srv_server_port(s));
 *   ... srv_server_stop(s);   // graceful: in-flight requests finish, the store closes
 */
#ifndef AF_SERVER_SERVER_H
#define AF_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_server_config {
    const char *db_path;      /* SQLite file, created on first start */
    const char *host;         /* address to bind ("127.0.0.1", "0.0.0.0", "::1"); NULL: all */
    int port;                 /* 0: an ephemeral port (read it with srv_server_port) */
    const char *tls_cert;     /* PEM files: both or neither; with them the API is HTTPS */
    const char *tls_key;
    size_t max_body;          /* request bodies above this get 413 (0: 64 MiB) */
    int threads;              /* request threads: >0 a pool of that many over epoll;
                                 0 the default (2); -1 one thread per connection */
    int durable_full;         /* SQLite synchronous=FULL (power-loss durable) */
    double retry_after_s;     /* pace steering base wait (0: 5 s) */
    size_t max_params;        /* spec caps at project creation (0: 5,000,000 parameters) */
    double max_flops;         /* (0: 1e9 forward FLOPs per sample) */
    double tick_s;            /* how often deadlines are checked (0: 0.05 s) */
} srv_server_config;

typedef struct srv_server srv_server;

/* Opens the database (reloading open rounds), starts listening and the deadline timer.
 * 0 or AF_E* with a message (bad address, port in use, unreadable TLS files, database). */
int srv_server_start(const srv_server_config *cfg, srv_server **out);
/* The bound port (the real one when cfg.port was 0). */
int srv_server_port(const srv_server *s);
/* The 0600 files next to the database holding the admin key and an enrolment secret. */
const char *srv_server_admin_key_path(const srv_server *s);
const char *srv_server_secret_path(const srv_server *s);
/* Stops accepting, waits for in-flight requests, stops the timer and closes the store.
 * Open round attempts stay open on disk and continue at the next start. NULL is fine. */
void srv_server_stop(srv_server *s);

#endif
