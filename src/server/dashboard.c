/* dashboard.c — placeholder until the web dashboard lands: the routes answer 404. */
#include "server/dashboard.h"

void srv_dashboard_page(srv_reply *r)
{
    srv_reply_error(r, 404, "not_found", "the dashboard is not built yet");
}
