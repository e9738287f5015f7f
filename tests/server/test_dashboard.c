/* test_dashboard.c — the web dashboard page (src/server/dashboard.c): a complete,
 * self-contained HTML document with no external reference, whose script inserts API data as
 * text only and calls the documented API paths with a bearer key; and over HTTP, GET / and
 * GET /dashboard answer it without a token. It draws each round's device_accuracy spread
 * (mean, p10, min) beside the pooled accuracy. The page's behaviour in a real browser is
 * tests/browser/test_dashboard.py (not part of this runner). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "server/dashboard.h"
#include "testsrv.h"

/* The page as a NUL-terminated string (caller frees); status and content type out. */
static char *page_text(int *status, const char **ctype, size_t *len)
{
    srv_reply r = {0};
    srv_dashboard_page(&r);
    *status = r.status;
    *ctype = r.ctype;
    *len = 0;
    char *s = NULL;
    if (r.blob && (s = malloc(r.blob->len + 1))) {
        memcpy(s, r.blob->data, r.blob->len);
        s[r.blob->len] = 0;
        *len = r.blob->len;
    }
    srv_reply_clear(&r);
    return s;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* 1 if s[0..len) is well-formed UTF-8 without NUL bytes (the page is served as utf-8). */
static int valid_utf8(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned c = s[i];
        size_t n = c == 0 ? 0 : c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
                 : (c >> 3) == 30 ? 4 : 0;
        if (!n || i + n > len)
            return 0;
        for (size_t k = 1; k < n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += n;
    }
    return 1;
}

TEST(dashboard_page_is_a_complete_html_document)
{
    int status;
    const char *ctype;
    size_t len;
    char *s = page_text(&status, &ctype, &len);
    CHECK(s);
    int ok = status == 200 && ctype && strncmp(ctype, "text/html", 9) == 0 &&
             strstr(ctype, "charset=utf-8") != NULL;
    ok = ok && strncmp(s, "<!DOCTYPE html>", 15) == 0 && strlen(s) == len;
    ok = ok && valid_utf8((const unsigned char *)s, len);
    /* one of each structural element, in order, ending the document */
    const char *order[] = {"<html", "<head>", "<meta charset=\"utf-8\">", "<title>", "<style>",
                           "</style>", "</head>", "<body>", "<script>", "</script>",
                           "</body>", "</html>"};
    const char *at = s;
    for (size_t i = 0; ok && i < sizeof order / sizeof *order; i++) {
        const char *q = strstr(at, order[i]);
        if (!q || count(s, order[i]) != 1) {
            fprintf(stdout, "    missing, repeated or out of order: %s\n", order[i]);
            ok = 0;
        }
        at = q ? q : at;
    }
    ok = ok && strcmp(s + len - 8, "</html>\n") == 0;
    ok = ok && strstr(s, "name=\"viewport\"") != NULL; /* readable on a phone */
    ok = ok && len < 40 * 1024;
    free(s);
    CHECK(ok);
}

TEST(dashboard_page_has_no_external_reference)
{
    int status;
    const char *ctype;
    size_t len;
    char *s = page_text(&status, &ctype, &len);
    CHECK(s);
    /* the only URL allowed is the SVG namespace name, which is never fetched */
    const char *svgns = "http://www.w3.org/2000/svg";
    int ok = count(s, "http://") == count(s, svgns) && count(s, svgns) == 1;
    ok = ok && count(s, "https://") == 0 && count(s, "//cdn") == 0;
    /* nothing loaded from anywhere: no src= attribute, stylesheet import or CSS url() */
    ok = ok && !strstr(s, " src=") && !strstr(s, "@import") && !strstr(s, "url(") &&
         !strstr(s, "rel=\"stylesheet\"");
    /* and the browser is told so: a CSP that only lets the page talk to its own origin */
    ok = ok && strstr(s, "http-equiv=\"Content-Security-Policy\"") &&
         strstr(s, "default-src 'none'") && strstr(s, "connect-src 'self'");
    free(s);
    CHECK(ok);
}

TEST(dashboard_script_inserts_api_data_as_text_only)
{
    int status;
    const char *ctype;
    size_t len;
    char *s = page_text(&status, &ctype, &len);
    CHECK(s);
    /* no HTML is ever parsed from a string at run time */
    const char *banned[] = {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                            "eval(", "new Function", "setTimeout('", "setInterval('"};
    int ok = 1;
    for (size_t i = 0; i < sizeof banned / sizeof *banned; i++)
        if (strstr(s, banned[i])) {
            fprintf(stdout, "    the page uses %s\n", banned[i]);
            ok = 0;
        }
    /* text goes in through text nodes and textContent */
    ok = ok && strstr(s, "createTextNode(") && strstr(s, "textContent");
    free(s);
    CHECK(ok);
}

TEST(dashboard_script_uses_the_documented_api)
{
    int status;
    const char *ctype;
    size_t len;
    char *s = page_text(&status, &ctype, &len);
    CHECK(s);
    /* the two owner endpoints, the bearer header, the tab-scoped key store */
    const char *need[] = {"api('/v1/projects')", "api('/v1/projects/' + id)",
                          "Authorization: 'Bearer ' + st.key", "sessionStorage.setItem(",
                          "e.status === 401", "e.status === 403",
                          /* the fields of docs/api.md it draws */
                          "projects", "'train_loss'", "'eval_accuracy'", "'eval_loss'",
                          "'epsilon'", "population_confusion", "label_stats", "share_std",
                          "r.phase", "r.secagg", "deadline_at", "r.selected", "r.reports",
                          "r.refused", "'abandoned'", "'committed'", "plan.rounds",
                          "plan.devices_per_round", "plan.strategy", "plan.dp_clip",
                          "plan.secagg", "'label_stats'",
                          /* the per-device accuracy spread of each round: chart and table */
                          "'device_accuracy'", "r.device_accuracy", "'mean'", "'p10'", "'min'",
                          "da.p10", "da.min"};
    int ok = 1;
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        if (!strstr(s, need[i])) {
            fprintf(stdout, "    the page lacks %s\n", need[i]);
            ok = 0;
        }
    /* the secure-aggregation phases are the server's names */
    const char *phases[] = {"'advertise'", "'share_keys'", "'masked_input'", "'unmask'"};
    for (size_t i = 0; i < 4; i++)
        ok = ok && strstr(s, phases[i]) != NULL;
    /* it polls every 2 s */
    ok = ok && strstr(s, "schedule(2000)") != NULL;
    free(s);
    CHECK(ok);
}

TEST(dashboard_is_served_without_a_token)
{
    ts_server t;
    char db[600];
    snprintf(db, sizeof db, "%s/dash.db", t_tmpdir());
    CHECK(ts_start(&t, db, NULL) == 0);
    int status;
    const char *ctype;
    size_t len;
    char *want = page_text(&status, &ctype, &len);
    int ok = want != NULL;
    const char *paths[] = {"/", "/dashboard"};
    for (int i = 0; ok && i < 2; i++) {
        ts_resp r = {0};
        ok = ts_http(t.url, "GET", paths[i], NULL, NULL, NULL, 0, NULL, &r) == 0 &&
             r.status == 200 && strncmp(r.ctype, "text/html", 9) == 0 && r.len == len &&
             memcmp(r.body, want, len) == 0;
        if (!ok)
            fprintf(stdout, "    GET %s: status %ld, type %s, %zu bytes\n", paths[i], r.status,
                    r.ctype, r.len);
        ts_resp_free(&r);
    }
    /* a token the server does not know does not matter to the page */
    ts_resp r = {0};
    ok = ok && ts_http(t.url, "GET", "/dashboard", "0123", NULL, NULL, 0, NULL, &r) == 0 &&
         r.status == 200;
    ts_resp_free(&r);
    /* other methods and paths below it are refused as JSON errors */
    ok = ok && ts_post_json(t.url, "/dashboard", NULL, "{}", &r) == 0 && r.status == 405 &&
         ts_is_error(&r, "method_not_allowed", NULL);
    ts_resp_free(&r);
    ok = ok && ts_http(t.url, "GET", "/dashboard/x", NULL, NULL, NULL, 0, NULL, &r) == 0 &&
         r.status == 404;
    ts_resp_free(&r);
    /* the API the page calls still wants the key */
    ok = ok && ts_http(t.url, "GET", "/v1/projects", NULL, NULL, NULL, 0, NULL, &r) == 0 &&
         r.status == 401;
    ts_resp_free(&r);
    free(want);
    ts_stop(&t);
    CHECK(ok);
}
