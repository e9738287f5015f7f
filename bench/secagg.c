/* secagg.c — what secure aggregation (src/fed/secagg.c, Bonawitz et al. 2017) costs on top of
 * sending the update in the clear, for the tutorial CNN (part of `make bench`).
 *
 * For n = 100 and 500 devices per round and 0% / 10% of them dropping after sharing keys
 * (the case that forces the server to rebuild their mask keys), it runs the whole protocol
 * in process on vectors of 32,999 words (the 32,998 parameters plus the weight word that
 * `artificien sim --secagg` sends) and reports: CPU time per device by phase, the server's
 * CPU time (and how much of it is unmasking), bytes up and down per device and for the
 * coordinator, and the expansion over the plain update. Times are per-thread CPU time
 * (CLOCK_THREAD_CPUTIME_ID), so other load on a shared machine inflates them less than wall
 * time. The sum is checked against the plain sum of the survivors every time. Then the same
 * message sizes at the paper's scale, next to what Bonawitz et al. report.
 *
 *   build/bench-secagg [--devices 100,500] [--dropout 0,0.1] [--len 32999] [--threads 2]
 *                      [--json FILE]
 * Bench code: prints, exits.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "core/err.h"
#include "core/pool.h"
#include "fed/secagg.h"

/* On-the-wire sizes of the messages, field by field (no padding; a real encoding adds a few
 * bytes of framing): advertise = round 8 + id 4 + two keys 64 + signature 64. */
#define W_ADVERTISE (8 + 4 + 2 * SECAGG_KEY_BYTES + SECAGG_SIG_BYTES)
#define W_ENC_SHARE (4 + 4 + SECAGG_NONCE_BYTES + SECAGG_SHARE_CT_BYTES)
#define W_SHARE_KEYS_FIXED (8 + 4 + 4 + SECAGG_KEY_BYTES + SECAGG_SIG_BYTES)
#define W_MASKED_FIXED (8 + 4 + 8 + SECAGG_SIG_BYTES)
#define W_REVEAL (4 + 4 + 8 * SECAGG_CHUNKS)
#define W_UNMASK_FIXED (8 + 4 + 4 + SECAGG_SIG_BYTES)

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench-secagg: %s: %s\n", what, af_errmsg());
    exit(1);
}

typedef struct round_ctx {
    secagg_cfg cfg;
    secagg_client **cl;
    uint8_t (*pk)[SECAGG_SIGN_PK_BYTES], (*sk)[SECAGG_SIGN_SK_BYTES];
    secagg_advertise *adv;
    const secagg_advertise *list;
    size_t n_list;
    const secagg_share_keys **skm;
    const secagg_enc_share **in;
    size_t *n_in;
    uint32_t **x, **y;
    const secagg_masked_input **mi;
    int *rc;
    double *t_keys, *t_share, *t_mask; /* CPU seconds per device */
} round_ctx;

static void keys_fn(void *c, int i, int tid)
{
    round_ctx *r = c;
    (void)tid;
    double t = cpu_now();
    r->rc[i] = secagg_client_create(&r->cfg, (uint32_t)i + 1, r->sk[i], &r->cl[i]);
    if (!r->rc[i])
        r->rc[i] = secagg_client_advertise(r->cl[i], &r->adv[i]);
    r->t_keys[i] = cpu_now() - t;
}

static void share_fn(void *c, int i, int tid)
{
    round_ctx *r = c;
    (void)tid;
    double t = cpu_now();
    r->rc[i] = secagg_client_share_keys(r->cl[i], r->list, r->n_list, &r->skm[i]);
    r->t_share[i] = cpu_now() - t;
}

/* Receiving the forwarded shares and masking, for a device that stays. */
static void mask_fn(void *c, int i, int tid)
{
    round_ctx *r = c;
    (void)tid;
    if (!r->in[i])
        return;
    double t = cpu_now();
    r->rc[i] = secagg_client_receive_shares(r->cl[i], r->in[i], r->n_in[i]);
    if (!r->rc[i])
        r->rc[i] = secagg_client_masked_input(r->cl[i], r->x[i], r->y[i], &r->mi[i]);
    r->t_mask[i] = cpu_now() - t;
}

typedef struct result {
    uint32_t n, t, dropped;
    size_t len;
    double dev_keys_ms, dev_share_ms, dev_mask_ms, dev_unmask_ms, dev_total_ms;
    double srv_ms, srv_unmask_ms;
    double up_dev, down_dev, plain;   /* bytes per surviving device, and of the plain update */
    double srv_in, srv_out;           /* bytes for the whole round */
} result;

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static result run_round(uint32_t n, double dropout, size_t len, af_pool *pool, uint64_t round_id)
{
    result res = {.n = n, .len = len};
    round_ctx r = {0};
    r.cfg = (secagg_cfg){.round_id = round_id, .n = n, .t = (2 * n + 2) / 3, .len = len};
    res.t = r.cfg.t;
    r.cl = calloc(n, sizeof *r.cl);
    r.pk = calloc(n, sizeof *r.pk);
    r.sk = calloc(n, sizeof *r.sk);
    r.adv = calloc(n, sizeof *r.adv);
    r.skm = calloc(n, sizeof *r.skm);
    r.in = calloc(n, sizeof *r.in);
    r.n_in = calloc(n, sizeof *r.n_in);
    r.x = calloc(n, sizeof *r.x);
    r.y = calloc(n, sizeof *r.y);
    r.mi = calloc(n, sizeof *r.mi);
    r.rc = calloc(n, sizeof *r.rc);
    r.t_keys = calloc(n, sizeof(double));
    r.t_share = calloc(n, sizeof(double));
    r.t_mask = calloc(n, sizeof(double));
    uint32_t *plain = calloc(len, 4), *sum = calloc(len, 4);
    uint8_t *stay = calloc(n, 1);
    if (!r.cl || !r.pk || !r.sk || !r.adv || !r.skm || !r.in || !r.n_in || !r.x || !r.y || !r.mi || !r.rc ||
        !r.t_keys || !r.t_share || !r.t_mask || !plain || !sum || !stay)
        die("out of memory");
    /* exactly round(dropout·n) devices drop, spread evenly over the ids */
    uint32_t n_drop = (uint32_t)lround(dropout * n);
    for (uint32_t i = 0; i < n; i++)
        stay[i] = 1;
    for (uint32_t k = 0; k < n_drop; k++)
        stay[(uint32_t)((k + 0.5) * n / n_drop)] = 0;
    res.dropped = n_drop;
    for (uint32_t i = 0; i < n; i++) {
        if (secagg_identity_keypair(r.pk[i], r.sk[i]))
            die("identity");
        if (!stay[i])
            continue;
        r.x[i] = malloc(len * 4);
        r.y[i] = malloc(len * 4);
        if (!r.x[i] || !r.y[i])
            die("out of memory");
        randombytes_buf(r.x[i], len * 4);
        for (size_t j = 0; j < len; j++)
            plain[j] += r.x[i][j];
    }
    secagg_server *srv;
    if (secagg_server_create(&r.cfg, &srv))
        die("server");
    for (uint32_t i = 0; i < n; i++)
        if (secagg_server_register(srv, i + 1, r.pk[i]))
            die("register");

    double srv_cpu = 0, t;
    /* phase 0 */
    af_pool_run(pool, keys_fn, &r, (int)n);
    t = cpu_now();
    for (uint32_t i = 0; i < n; i++)
        if (r.rc[i] || secagg_server_add_advertise(srv, &r.adv[i]))
            die("advertise");
    if (secagg_server_end_advertise(srv, &r.list, &r.n_list))
        die("end advertise");
    srv_cpu += cpu_now() - t;
    /* phase 1 */
    af_pool_run(pool, share_fn, &r, (int)n);
    t = cpu_now();
    for (uint32_t i = 0; i < n; i++)
        if (r.rc[i] || secagg_server_add_share_keys(srv, r.skm[i]))
            die("share keys");
    if (secagg_server_end_share_keys(srv))
        die("end share keys");
    srv_cpu += cpu_now() - t;
    /* phase 2: forwarding is the server's (copies of pointers into its store: the server's
     * shares_for buffer is reused per call, so each device receives right after its call) */
    double t_recv_srv = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!stay[i])
            continue;
        t = cpu_now();
        const secagg_enc_share *in;
        size_t nin;
        if (secagg_server_shares_for(srv, i + 1, &in, &nin))
            die("shares_for");
        secagg_enc_share *copy = malloc(nin * sizeof *copy);
        if (!copy)
            die("out of memory");
        memcpy(copy, in, nin * sizeof *copy);
        r.in[i] = copy;
        r.n_in[i] = nin;
        t_recv_srv += cpu_now() - t;
    }
    srv_cpu += t_recv_srv;
    af_pool_run(pool, mask_fn, &r, (int)n);
    t = cpu_now();
    for (uint32_t i = 0; i < n; i++)
        if (stay[i] && (r.rc[i] || secagg_server_add_masked_input(srv, r.mi[i])))
            die("masked input");
    const uint32_t *u3;
    size_t n3;
    if (secagg_server_end_masked_input(srv, &u3, &n3))
        die("end masked input");
    srv_cpu += cpu_now() - t;
    /* phase 3: each survivor reveals (sequential: cheap); the server rebuilds and unmasks */
    uint32_t *u3c = malloc(n3 * 4);
    if (!u3c)
        die("out of memory");
    memcpy(u3c, u3, n3 * 4);
    qsort(u3c, n3, 4, cmp_u32);
    double dev_unmask = 0, srv_unmask = 0;
    size_t reveals = 0;
    for (size_t k = 0; k < n3; k++) {
        const secagg_unmask *um;
        t = cpu_now();
        if (secagg_client_unmask(r.cl[u3c[k] - 1], u3c, n3, &um))
            die("unmask");
        dev_unmask += cpu_now() - t;
        reveals += um->n_reveals;
        t = cpu_now();
        if (secagg_server_add_unmask(srv, um))
            die("add unmask");
        srv_unmask += cpu_now() - t;
    }
    t = cpu_now();
    if (secagg_server_finish(srv, sum))
        die("finish");
    srv_unmask += cpu_now() - t;
    srv_cpu += srv_unmask;
    if (memcmp(sum, plain, len * 4) != 0) {
        fprintf(stderr, "bench-secagg: the secure sum differs from the plain sum (n = %u)\n", n);
        exit(1);
    }
    /* per surviving device: CPU of all its phases; bytes it sends and receives */
    const double ns = (double)n3;
    double keys = 0, share = 0, mask = 0;
    for (uint32_t i = 0; i < n; i++) {
        keys += r.t_keys[i];
        share += r.t_share[i];
        if (stay[i])
            mask += r.t_mask[i];
    }
    res.dev_keys_ms = 1e3 * keys / n;
    res.dev_share_ms = 1e3 * share / n;
    res.dev_mask_ms = 1e3 * mask / ns;
    res.dev_unmask_ms = 1e3 * dev_unmask / ns;
    res.dev_total_ms = res.dev_keys_ms + res.dev_share_ms + res.dev_mask_ms + res.dev_unmask_ms;
    res.srv_ms = 1e3 * srv_cpu;
    res.srv_unmask_ms = 1e3 * srv_unmask;
    res.plain = 4.0 * (double)len;
    const double n1 = n, up_keys = W_ADVERTISE + W_SHARE_KEYS_FIXED + (n1 - 1) * W_ENC_SHARE;
    res.up_dev = up_keys + W_MASKED_FIXED + 4.0 * (double)len + W_UNMASK_FIXED + (double)reveals / ns * W_REVEAL;
    res.down_dev = n1 * W_ADVERTISE + (n1 - 1) * W_ENC_SHARE + ns * 4;
    res.srv_in = n1 * up_keys + ns * (W_MASKED_FIXED + 4.0 * (double)len + W_UNMASK_FIXED) + (double)reveals * W_REVEAL;
    res.srv_out = n1 * n1 * W_ADVERTISE + n1 * (n1 - 1) * W_ENC_SHARE + ns * ns * 4;

    for (uint32_t i = 0; i < n; i++) {
        secagg_client_free(r.cl[i]);
        free(r.x[i]);
        free(r.y[i]);
        free((void *)r.in[i]);
    }
    secagg_server_free(srv);
    sodium_memzero(r.sk, n * sizeof *r.sk);
    free(r.cl); free(r.pk); free(r.sk); free(r.adv); free(r.skm); free(r.in); free(r.n_in);
    free(r.x); free(r.y); free(r.mi); free(r.rc); free(r.t_keys); free(r.t_share); free(r.t_mask);
    free(plain); free(sum); free(stay); free(u3c);
    return res;
}

/* Bytes a device sends for n devices and len words (no dropouts), over the plain update. */
static double expansion(double n, double len, double plain_bytes_per_entry)
{
    double up = W_ADVERTISE + W_SHARE_KEYS_FIXED + (n - 1) * W_ENC_SHARE + W_MASKED_FIXED + 4 * len +
                W_UNMASK_FIXED + n * W_REVEAL;
    return up / (plain_bytes_per_entry * len);
}

static int parse_list(const char *s, double *v, int max)
{
    int k = 0;
    char *end;
    while (*s && k < max) {
        v[k++] = strtod(s, &end);
        if (end == s)
            return -1;
        s = *end == ',' ? end + 1 : end;
    }
    return k;
}

int main(int argc, char **argv)
{
    double devs[8] = {100, 500}, drops[8] = {0, 0.1};
    int nd = 2, np = 2, threads = 2;
    size_t len = 32999;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--devices") && v) {
            nd = parse_list(v, devs, 8);
            i++;
        } else if (!strcmp(a, "--dropout") && v) {
            np = parse_list(v, drops, 8);
            i++;
        } else if (!strcmp(a, "--len") && v) {
            len = (size_t)strtoull(v, NULL, 10);
            i++;
        } else if (!strcmp(a, "--threads") && v) {
            threads = atoi(v);
            i++;
        } else if (!strcmp(a, "--json") && v) {
            json = v;
            i++;
        } else {
            fprintf(stderr, "usage: bench-secagg [--devices 100,500] [--dropout 0,0.1] [--len 32999] "
                            "[--threads 2] [--json FILE]\n");
            return 2;
        }
    }
    if (nd < 1 || np < 1 || len < 1 || threads < 1) {
        fprintf(stderr, "bench-secagg: bad --devices, --dropout, --len or --threads\n");
        return 2;
    }
    for (int i = 0; i < nd; i++)
        if (!(devs[i] >= 2 && devs[i] <= SECAGG_MAX_DEVICES)) {
            fprintf(stderr, "bench-secagg: --devices values must be in [2, %d]\n", SECAGG_MAX_DEVICES);
            return 2;
        }
    for (int i = 0; i < np; i++)
        if (!(drops[i] >= 0 && drops[i] < 1.0 / 3)) {
            fprintf(stderr, "bench-secagg: --dropout values must be in [0, 1/3) (t = 2n/3 must survive)\n");
            return 2;
        }
    if (sodium_init() < 0) {
        fprintf(stderr, "bench-secagg: libsodium cannot start\n");
        return 1;
    }
    af_pool *pool = af_pool_create(threads);
    if (!pool) {
        fprintf(stderr, "bench-secagg: cannot start %d threads\n", threads);
        return 1;
    }
    printf("== secure aggregation cost (bench/secagg.c): %zu-word vectors (the CNN's 32,998 parameters + "
           "1 weight word = %.0f KB in the clear), t = ceil(2n/3), dropouts after sharing keys; "
           "CPU ms per device (mean) and for the server, %d device threads\n",
           len, 4.0 * len / 1000, threads);
    printf("%7s %7s | %8s %8s %8s %8s %8s | %9s %9s | %10s %7s %10s | %9s %9s\n", "devices", "dropout",
           "dev keys", "share", "mask", "unmask", "dev all", "server", "unmasking", "up/dev KB", "x plain",
           "down/dev KB", "srv in MB", "srv out MB");
    result res[64];
    int nr = 0;
    for (int i = 0; i < nd; i++)
        for (int j = 0; j < np; j++) {
            result x = run_round((uint32_t)devs[i], drops[j], len, pool, 1000 + (uint64_t)nr);
            res[nr++] = x;
            printf("%7u %6.0f%% | %8.2f %8.2f %8.2f %8.2f %8.2f | %9.1f %9.1f | %10.1f %7.3f %10.1f | %9.1f %9.1f\n",
                   x.n, 100.0 * x.dropped / x.n, x.dev_keys_ms, x.dev_share_ms, x.dev_mask_ms, x.dev_unmask_ms,
                   x.dev_total_ms, x.srv_ms, x.srv_unmask_ms, x.up_dev / 1000, x.up_dev / x.plain,
                   x.down_dev / 1000, x.srv_in / 1e6, x.srv_out / 1e6);
            fflush(stdout);
        }
    printf("\n== next to Bonawitz et al. 2017 (CCS, \"Practical Secure Aggregation for Privacy-Preserving "
           "Machine Learning\")\n");
    printf("paper, as reported (abstract): 16-bit input values, 1.73x communication expansion for 2^10 users "
           "and 2^20-dimensional vectors, 1.98x for 2^14 users and 2^24-dimensional vectors.\n");
    printf("ours, same message sizes as above (32-bit words): 2^10 users, 2^20 entries: %.3fx over 32-bit "
           "plain entries, %.3fx over 16-bit ones; 2^14 users, 2^24 entries: %.3fx / %.3fx.\n",
           expansion(1024, 1 << 20, 4), expansion(1024, 1 << 20, 2), expansion(16384, 1 << 24, 4),
           expansion(16384, 1 << 24, 2));
    printf("paper's running times (their prototype, client and server over the number of users, the vector "
           "size and the dropout rate): in their Section 7; not quoted here because the exact values could not "
           "be checked (docs/privacy.md §3.6). The shape they report is the one measured above: device cost "
           "linear in n, server cost quadratic in n and dominated by dropouts.\n");
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "bench-secagg: cannot write %s\n", json);
            return 1;
        }
        fprintf(f, "{\"len\": %zu, \"threads\": %d, \"rows\": [", len, threads);
        for (int i = 0; i < nr; i++)
            fprintf(f, "%s{\"devices\": %u, \"t\": %u, \"dropped\": %u, \"device_ms\": {\"keys\": %.3f, "
                       "\"share\": %.3f, \"mask\": %.3f, \"unmask\": %.3f, \"total\": %.3f}, "
                       "\"server_ms\": %.3f, \"server_unmask_ms\": %.3f, \"up_bytes_per_device\": %.0f, "
                       "\"down_bytes_per_device\": %.0f, \"plain_bytes\": %.0f, \"server_in_bytes\": %.0f, "
                       "\"server_out_bytes\": %.0f}",
                    i ? ", " : "", res[i].n, res[i].t, res[i].dropped, res[i].dev_keys_ms, res[i].dev_share_ms,
                    res[i].dev_mask_ms, res[i].dev_unmask_ms, res[i].dev_total_ms, res[i].srv_ms,
                    res[i].srv_unmask_ms, res[i].up_dev, res[i].down_dev, res[i].plain, res[i].srv_in,
                    res[i].srv_out);
        fprintf(f, "]}\n");
        fclose(f);
    }
    af_pool_free(pool);
    return 0;
}
