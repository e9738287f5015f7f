/* dashboard.h — the web dashboard: one self-contained HTML page (inline CSS and JavaScript,
 * no external resources) served at GET / and GET /dashboard. The page asks for an owner API
 * key and draws the owner's projects from the JSON API (docs/api.md) in the browser.
 *
 * Layer `server`; no state, no I/O. */
#ifndef AF_SERVER_DASHBOARD_H
#define AF_SERVER_DASHBOARD_H

#include "server/coord.h"

/* Fills r with the page (200, text/html). */
void srv_dashboard_page(srv_reply *r);

#endif
