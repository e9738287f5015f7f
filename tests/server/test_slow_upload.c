/* test_slow_upload.c — a device that starts its upload in time and then trickles bytes cannot
 * hold its round open: past the attempt's deadline plus the grace the coordinator drops the
 * connection, takes the partial update back out of the sums, and the round commits with the
 * reports it has — bitwise the update of the device that did report. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../test.h"
#include "core/timer.h"
#include "nn/checkpoint.h"
#include "testsrv.h"

typedef struct trickler {
    int port;
    char token[80];
    const uint8_t *body;
    size_t len;
    double seconds;      /* give up after this long */
    int cut;             /* out: the server closed the connection */
    double cut_after;    /* out: seconds from the first byte to the close */
} trickler;

static void *trickle(void *arg)
{
    trickler *t = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char hdr[512];
    int hl = snprintf(hdr, sizeof hdr,
                      "POST /v1/projects/1/rounds/1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Authorization: Bearer %s\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      t->token, t->len);
    double t0 = af_now();
    size_t half = t->len / 2, sent = 0;
    if (send(fd, hdr, (size_t)hl, MSG_NOSIGNAL) != hl ||
        send(fd, t->body, half, MSG_NOSIGNAL) != (ssize_t)half) {
        close(fd);
        return NULL;
    }
    sent = half;
    while (sent < t->len && af_now() - t0 < t->seconds) {
        usleep(200000);
        if (send(fd, t->body + sent, 1, MSG_NOSIGNAL) != 1) {
            t->cut = 1;
            break;
        }
        sent++;
        char c; /* a closed connection reads as end of file (or an error) */
        ssize_t k = recv(fd, &c, 1, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            t->cut = 1;
            break;
        }
    }
    t->cut_after = af_now() - t0;
    close(fd);
    return NULL;
}

TEST(slow_upload_is_cut_after_the_deadline_and_the_round_commits_without_it)
{
    ts_server t;
    char key[80], db[600], tok[2][80];
    snprintf(db, sizeof db, "%s/slow.db", t_tmpdir());
    CHECK(ts_start(&t, db, NULL) == 0);
    CHECK(ts_owner(&t, "acme", key) == 0);
    /* deadline 1 s: the cut comes at deadline + 5 s (the smallest grace) */
    CHECK(ts_project(&t, key, TS_TOY_SPEC,
                     "{\"rounds\":2,\"devices_per_round\":2,\"min_reports\":1,"
                     "\"over_selection\":1,\"round_deadline_s\":1,\"dataset\":\"toy\"}") == 1);
    for (int k = 0; k < 2; k++) {
        CHECK(ts_device(&t, TS_TOY_SCHEMA, tok[k], NULL) == 0);
        CHECK_EQ_INT(ts_checkin(&t, tok[k], NULL, NULL, NULL), 1);
    }
    ts_resp r;
    nn_model *w0 = ts_checkpoint(&t, key, 1, 0);
    CHECK(w0 != NULL);
    float d0[15], d1[15];
    for (int i = 0; i < 15; i++) {
        d0[i] = 0.01f * (float)(i + 1);
        d1[i] = 100.0f; /* the trickler's update: it must not reach the model */
    }
    const char *keys[] = {"attempt", "num_samples"}, *vals[] = {"1", "10"};
    uint8_t *b0, *b1;
    size_t l0, l1;
    CHECK(ts_update(w0, d0, keys, vals, 2, &b0, &l0) == 0);
    CHECK(ts_update(w0, d1, keys, vals, 2, &b1, &l1) == 0);
    /* device 1 starts in time and then trickles a byte every 0.2 s */
    trickler tr = {.port = atoi(strrchr(t.url, ':') + 1), .body = b1, .len = l1, .seconds = 25};
    snprintf(tr.token, sizeof tr.token, "%s", tok[1]);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, trickle, &tr) == 0);
    usleep(300000);
    /* device 0 reports in full */
    CHECK(ts_report(&t, tok[0], 1, 1, b0, l0, &r) == 0);
    CHECK_EQ_INT((int)r.status, 200);
    ts_resp_free(&r);
    /* without the cut the attempt would wait for the trickle (≈ 25 s); with it, it commits
     * about 6 s after opening */
    double t0 = af_now();
    cJSON *j = NULL;
    while (af_now() - t0 < 15) {
        j = ts_status(&t, key, 1);
        if (j && cJSON_GetObjectItem(j, "version")->valuedouble >= 1)
            break;
        cJSON_Delete(j);
        j = NULL;
        usleep(100000);
    }
    CHECK(j != NULL);
    const cJSON *r1 = j ? cJSON_GetArrayItem(cJSON_GetObjectItem(j, "rounds"), 0) : NULL;
    CHECK(r1 && cJSON_GetObjectItem(r1, "reports")->valuedouble == 1);
    cJSON_Delete(j);
    pthread_join(th, NULL);
    CHECK(tr.cut);
    CHECK(tr.cut_after > 4 && tr.cut_after < 12);
    /* the committed model is exactly device 0's update: the partial one was taken back out */
    nn_model *w1 = ts_checkpoint(&t, key, 1, 1);
    CHECK(w1 != NULL);
    for (int i = 0; w0 && w1 && i < 15; i++)
        CHECK(w1->params[i] == w0->params[i] + d0[i]);
    nn_model_free(w0);
    nn_model_free(w1);
    free(b0);
    free(b1);
    ts_stop(&t);
}
