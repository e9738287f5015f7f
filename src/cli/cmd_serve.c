/* cmd_serve.c — `artificien serve`: run the coordinator (server/server.h) until SIGTERM/SIGINT.
 *
 * Prints, once ready, the paths of the admin-key and enrolment-secret files and then the line
 * "listening on http://HOST:PORT" (the real port when --listen asks for port 0); scripts wait
 * for that line. Logs go to stderr (core/log.h). Shutdown is graceful: in-flight requests
 * finish and the database closes; open rounds continue at the next start.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/err.h"
#include "core/log.h"
#include "server/server.h"

/* Splits "HOST:PORT" or "[V6]:PORT" into host (buffer) and port. 0 or -1. */
static int parse_listen(const char *s, char *host, size_t cap, int *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= cap)
            return -1;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = 0;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= cap)
            return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    const char *db = "artificien.db", *listen = "127.0.0.1:8080", *cert = NULL, *key = NULL;
    const char *level = "info", *durable = "normal";
    uint64_t max_body = (uint64_t)64 << 20;
    int threads = 0;
    double retry = 5;
    const arg_opt opts[] = {
        {"db", ARG_STR, &db, "SQLite database file, created on first start (default artificien.db)"},
        {"listen", ARG_STR, &listen, "HOST:PORT to listen on; port 0 picks a free one (default 127.0.0.1:8080)"},
        {"tls-cert", ARG_STR, &cert, "PEM certificate: serve HTTPS (with --tls-key)"},
        {"tls-key", ARG_STR, &key, "PEM private key of --tls-cert"},
        {"max-body", ARG_U64, &max_body, "largest request body in bytes; larger ones get 413 (default 67108864)"},
        {"threads", ARG_INT, &threads, "request threads (epoll pool; default 2; -1 = one per connection)"},
        {"retry-after", ARG_FLOAT, &retry, "pace steering: seconds an idle device waits before checking in again (default 5)"},
        {"durable", ARG_STR, &durable, "normal (survives a killed process) or full (survives power loss; slower)"},
        {"log-level", ARG_STR, &level, "debug, info, warn or error (default info)"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("serve", "--db FILE --listen HOST:PORT [--tls-cert F --tls-key F]",
                             opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    int lv = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(level, levels[i]) == 0)
            lv = i;
    if (lv < 0) {
        cli_fail("serve", "--log-level must be debug, info, warn or error, got '%s'", level);
        return 2;
    }
    if (strcmp(durable, "normal") != 0 && strcmp(durable, "full") != 0) {
        cli_fail("serve", "--durable must be normal or full, got '%s'", durable);
        return 2;
    }
    char host[256];
    int port;
    if (parse_listen(listen, host, sizeof host, &port)) {
        cli_fail("serve", "--listen must be HOST:PORT (e.g. 127.0.0.1:8080, [::1]:0), got '%s'",
                 listen);
        return 2;
    }
    if (!cert != !key) {
        cli_fail("serve", "--tls-cert and --tls-key go together");
        return 2;
    }
    if (max_body < 1024 || max_body > ((uint64_t)1 << 32)) {
        cli_fail("serve", "--max-body must be in [1024, 4294967296], got %llu",
                 (unsigned long long)max_body);
        return 2;
    }
    if (!(retry > 0 && retry <= 86400)) {
        cli_fail("serve", "--retry-after must be in (0, 86400] seconds, got %g", retry);
        return 2;
    }
    af_log_set_level(lv);

    /* the signals are taken by sigwait below: block them before any thread starts */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv_server_config cfg = {
        .db_path = db, .host = host[0] ? host : NULL, .port = port, .tls_cert = cert,
        .tls_key = key, .max_body = (size_t)max_body, .threads = threads,
        .durable_full = strcmp(durable, "full") == 0, .retry_after_s = retry,
    };
    srv_server *s;
    if (srv_server_start(&cfg, &s))
        return cli_fail("serve", "%s", af_errmsg());
    printf("admin key: %s\n", srv_server_admin_key_path(s));
    printf("enrolment secret: %s\n", srv_server_secret_path(s));
    printf("listening on http%s://%s%s%s:%d\n", cert ? "s" : "", strchr(host, ':') ? "[" : "",
           host[0] ? host : "0.0.0.0", strchr(host, ':') ? "]" : "", srv_server_port(s));
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    af_log(AF_LOG_INFO, "shutdown", "signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    srv_server_stop(s);
    af_log(AF_LOG_INFO, "stopped", "db=%s", db);
    return 0;
}
