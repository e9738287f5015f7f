/* mocksa.h — a mock coordinator for the device library's secure-aggregation tests: one round
 * of one project over real HTTP on 127.0.0.1 (libmicrohttpd), speaking the check-in, the
 * checkpoint download and the seven phase requests of docs/api.md "Secure aggregation" with
 * fed/secagg.h's server underneath, so the device side can be tested before and apart from
 * the real coordinator (src/server). Phases close when every device they wait for has
 * answered, or at their deadline.
 *
 * Test code only (tests/client/): never linked into the binary.
 */
#ifndef AF_TESTS_CLIENT_MOCKSA_H
#define AF_TESTS_CLIENT_MOCKSA_H

#include <stddef.h>
#include <stdint.h>

#include "fed/secagg.h"
#include "fed/secwire.h"

typedef struct mocksa_cfg {
    secwire_params wire;       /* the round (n, t, kind, range, …) */
    const char *spec, *plan;   /* JSON texts of the task */
    double deadline_s[4];      /* phase deadlines, seconds after start */
    long len_delta;            /* added to the task's "len": a layout the device must refuse */
    int stall;                 /* never close a phase: GETs answer 202 forever */
    const char *refuse_step;   /* answer this step (e.g. "advertise") 409 wrong_phase */
} mocksa_cfg;

typedef struct mocksa mocksa;

/* Starts the mock on an ephemeral port. 0 or -1 (message on stdout). */
int mocksa_start(const mocksa_cfg *cfg, mocksa **out);
const char *mocksa_url(const mocksa *m);
/* The task JSON (malloc'd) the mock gives device id; what the check-in sends. */
char *mocksa_task_json(mocksa *m, uint32_t id);
/* Registers device id's identity directly (for tests that skip the check-in). */
void mocksa_register(mocksa *m, uint32_t id, const uint8_t pk[SECAGG_SIGN_PK_BYTES]);
/* The identity (base64) device id sent in its check-in ("" if none). */
const char *mocksa_identity(const mocksa *m, uint32_t id);
/* Requests seen for a step ("checkin", "checkpoint", "advertise", "keys", "shares",
 * "masked", "survivors", "unmask"), answered or not. */
int mocksa_requests(const mocksa *m, const char *step);
/* Unmasks the sum (closing whatever is open) and decodes it. 0 or an AF_* code. */
int mocksa_finish(mocksa *m, float *delta_sum, double *counts, int64_t *confusion,
                  secwire_sums *sums);
/* U1, U2, U3 and the unmask answers. */
void mocksa_counts(const mocksa *m, uint32_t *u1, uint32_t *u2, uint32_t *u3, uint32_t *u5);
/* The layout the mock uses (the device must reach the same). */
const secwire_layout *mocksa_layout(const mocksa *m);
void mocksa_stop(mocksa *m);

#endif
