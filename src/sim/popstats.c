/* popstats.c — the private population label histogram run over simulated devices (see
 * popstats.h): one real secure-aggregation round per group of devices, each device sending
 * its clipped, noised, quantised histogram (fed/popstats.h).
 *
 * Layer `sim` (core, data, fed). Noise and dropouts come from the seeded af_rng (reproducible
 * simulation; a deployment must draw the noise from a secure source), masks and keys from
 * libsodium. Buffers are sized once for the largest group. Never prints.
 */
#include "sim/popstats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "core/timer.h"
#include "fed/secagg.h"

/* RNG stream tags, distinct from sim.c's (1–4) and sim/privacy.c's (11–13). */
enum { TAG_POP_NOISE = 21, TAG_POP_DROP = 22 };

void sim_popstats_cfg_defaults(sim_popstats_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->bound = 100.0;
    c->z = 2.0;
    c->delta = 1e-5;
    c->group = 100;
    c->seed = 1;
}

typedef struct work {
    secagg_client **cl;
    const secagg_advertise *list;
    size_t n_list;
    const secagg_share_keys **sk;
    int *rc;
} work;

/* Phase 1 of device i of the group, on a pool thread (the key list is read-only meanwhile). */
static void share_fn(void *ctx, int i, int tid)
{
    work *w = ctx;
    (void)tid;
    w->rc[i] = secagg_client_share_keys(w->cl[i], w->list, w->n_list, &w->sk[i]);
}

static int check_cfg(const sim_popstats_cfg *c)
{
    if (!(c->bound > 0 && isfinite(c->bound)))
        return af_seterr(AF_ERANGE, "--stats-bound must be > 0 (samples a device counts at most), got %g", c->bound);
    if (!(c->z >= 0 && c->z <= 1e6))
        return af_seterr(AF_ERANGE, "--stats-noise must be in [0, 1e6] (0 = no DP), got %g", c->z);
    if (!(c->delta > 0 && c->delta < 1))
        return af_seterr(AF_ERANGE, "--stats-delta must be in (0, 1), got %g", c->delta);
    if (c->group < 1 || c->group > SECAGG_MAX_DEVICES)
        return af_seterr(AF_ERANGE, "--stats-group must be in [1, %d] devices, got %d", SECAGG_MAX_DEVICES, c->group);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return af_seterr(AF_ERANGE, "--dropout must be in [0, 1), got %g", c->dropout);
    return 0;
}

int sim_popstats_run(const data_partition *p, const uint8_t *y, const sim_popstats_cfg *cfg,
                     af_pool *pool, sim_popstats *out)
{
    if (!p || !y || !cfg || !out)
        return af_seterr(AF_EINVAL, "population statistics: partition, labels, cfg and out must not be NULL");
    int rc = check_cfg(cfg);
    if (rc)
        return rc;
    const size_t K = p->n_devices;
    const int C = p->n_classes;
    if (K < 1 || C < 1 || C > POPSTATS_MAX_CLASSES)
        return af_seterr(AF_ERANGE, "population statistics: need >= 1 device and 1..%d classes", POPSTATS_MAX_CLASSES);
    const size_t G = (K + (size_t)cfg->group - 1) / (size_t)cfg->group;
    const size_t gmax = (K + G - 1) / G; /* the largest group: sizes are floor or ceil of K/G */
    const double t0 = af_now();
    memset(out, 0, sizeof *out);
    out->devices = (uint32_t)K;
    out->groups = (uint32_t)G;
    if ((rc = data_partition_population(p, y, out->true_count)))
        return rc;

    secagg_client **cl = calloc(gmax, sizeof *cl);
    uint8_t(*pk)[SECAGG_SIGN_PK_BYTES] = calloc(gmax, sizeof *pk);
    uint8_t(*sk)[SECAGG_SIGN_SK_BYTES] = calloc(gmax, sizeof *sk);
    const secagg_share_keys **skm = calloc(gmax, sizeof *skm);
    int *rcs = calloc(gmax, sizeof *rcs);
    uint8_t *reporting = calloc(gmax, 1);
    secagg_server *srv = NULL;
    if (!cl || !pk || !sk || !skm || !rcs || !reporting) {
        rc = af_seterr(AF_ENOMEM, "population statistics: out of memory");
        goto done;
    }
    double acc[POPSTATS_MAX_CLASSES] = {0}, noise_var = 0;
    for (size_t g = 0; g < G; g++) {
        const size_t lo = g * K / G, hi = (g + 1) * K / G;
        const uint32_t n = (uint32_t)(hi - lo), t = (2 * n + 2) / 3; /* ⌈2n/3⌉: a majority */
        popstats_params pp;
        if ((rc = popstats_params_init(&pp, C, cfg->bound, cfg->z, n, t)))
            goto done;
        /* low 24 bits 0: never the id of a training round ((seed << 24) ^ r, 1 ≤ r < 2^24) */
        secagg_cfg sc = {.round_id = (cfg->seed + g + 1) << 24, .n = n, .t = t, .len = (size_t)C};
        if ((rc = secagg_server_create(&sc, &srv)))
            goto group_fail;
        /* phase 0: every device of the group advertises its keys */
        for (uint32_t i = 0; i < n && !rc; i++) {
            secagg_advertise a;
            rc = secagg_identity_keypair(pk[i], sk[i]);
            if (!rc)
                rc = secagg_server_register(srv, i + 1, pk[i]);
            if (!rc)
                rc = secagg_client_create(&sc, i + 1, sk[i], &cl[i]);
            if (!rc)
                rc = secagg_client_advertise(cl[i], &a);
            if (!rc)
                rc = secagg_server_add_advertise(srv, &a);
        }
        work w = {.cl = cl, .sk = skm, .rc = rcs};
        if (!rc)
            rc = secagg_server_end_advertise(srv, &w.list, &w.n_list);
        if (rc)
            goto group_fail;
        /* phase 1: key sharing, the expensive part (2(n − 1) X25519 per device), in parallel */
        if (pool)
            af_pool_run(pool, share_fn, &w, (int)n);
        else
            for (uint32_t i = 0; i < n; i++)
                share_fn(&w, (int)i, 0);
        for (uint32_t i = 0; i < n && !rc; i++)
            rc = rcs[i] ? af_seterr(rcs[i], "device %zu: sharing keys failed (%s)", lo + i, af_strerror(rcs[i]))
                        : secagg_server_add_share_keys(srv, skm[i]);
        if (!rc)
            rc = secagg_server_end_share_keys(srv);
        if (rc)
            goto group_fail;
        /* phase 2: the devices that stay send their masked histograms */
        double gtrue[POPSTATS_MAX_CLASSES] = {0};
        uint32_t gclipped = 0;
        for (uint32_t i = 0; i < n; i++) {
            const size_t d = lo + i;
            af_rng dr = af_rng_split(cfg->seed ^ ((uint64_t)TAG_POP_DROP << 56), (uint64_t)d);
            reporting[i] = !(cfg->dropout > 0 && af_rng_uniform(&dr) < cfg->dropout);
            if (!reporting[i]) {
                out->dropped++;
                continue;
            }
            uint32_t counts[POPSTATS_MAX_CLASSES], words[POPSTATS_MAX_CLASSES], masked[POPSTATS_MAX_CLASSES];
            double h[POPSTATS_MAX_CLASSES];
            const secagg_enc_share *in;
            const secagg_masked_input *mi;
            size_t nin, nc = 0;
            int clipped = 0;
            af_rng nr = af_rng_split(cfg->seed ^ ((uint64_t)TAG_POP_NOISE << 56), (uint64_t)d);
            if ((rc = secagg_server_shares_for(srv, i + 1, &in, &nin)) ||
                (rc = secagg_client_receive_shares(cl[i], in, nin)) ||
                (rc = data_partition_label_counts(p, y, d, DATA_PART_ALL, counts)) ||
                (rc = popstats_device_encode(&pp, counts, &nr, words, &clipped, &nc)) ||
                (rc = secagg_client_masked_input(cl[i], words, masked, &mi))) {
                af_preerr(rc, "device %zu", d);
                goto group_fail;
            }
            if (cfg->view)
                cfg->view(cfg->view_ctx, (int)g, (uint32_t)d, mi->y, mi->len, 0);
            if ((rc = secagg_server_add_masked_input(srv, mi)))
                goto group_fail;
            popstats_clip(counts, C, cfg->bound, h, NULL); /* the truth, for measuring only */
            for (int c = 0; c < C; c++)
                gtrue[c] += h[c];
            gclipped += (uint32_t)clipped;
            out->clamped += nc;
        }
        /* phase 3: the survivors unmask; fewer than t anywhere abandons the group */
        const uint32_t *u3;
        size_t n3 = 0;
        uint32_t sum[POPSTATS_MAX_CLASSES];
        rc = secagg_server_end_masked_input(srv, &u3, &n3);
        if (!rc && cfg->view)
            cfg->view(cfg->view_ctx, (int)g, (uint32_t)lo, secagg_server_masked_sum(srv), (size_t)C, 1);
        for (size_t k = 0; k < n3 && !rc; k++) {
            const secagg_unmask *um;
            if (!(rc = secagg_client_unmask(cl[u3[k] - 1], u3, n3, &um)))
                rc = secagg_server_add_unmask(srv, um);
        }
        if (!rc)
            rc = secagg_server_finish(srv, sum);
        uint32_t u1, u2, u3n, u5;
        secagg_server_counts(srv, &u1, &u2, &u3n, &u5);
        /* message sizes as the structs carry them (a wire encoding adds framing) */
        out->bytes_up += (uint64_t)u1 * sizeof(secagg_advertise) +
                         (uint64_t)u2 * ((u1 - 1) * sizeof(secagg_enc_share) + SECAGG_KEY_BYTES + SECAGG_SIG_BYTES) +
                         (uint64_t)u3n * ((size_t)C * 4 + SECAGG_SIG_BYTES) +
                         (uint64_t)u5 * (u2 * sizeof(secagg_reveal) + SECAGG_SIG_BYTES);
        out->bytes_down += (uint64_t)u1 * u1 * sizeof(secagg_advertise) +
                           (uint64_t)u2 * (u2 - 1) * sizeof(secagg_enc_share) + (uint64_t)u3n * u3n * 4;
        if (rc == AF_ESTATE) { /* fewer than t survivors: nothing of this group is revealed */
            out->groups_abandoned++;
            rc = 0;
        } else if (rc) {
            goto group_fail;
        } else {
            popstats_accumulate(&pp, sum, acc);
            noise_var += (double)n3 * pp.sigma_dev * pp.sigma_dev; /* each survivor's share */
            out->reported += (uint32_t)n3;
            out->clipped += gclipped;
            for (int c = 0; c < C; c++)
                out->true_clipped[c] += gtrue[c];
        }
        for (uint32_t i = 0; i < n; i++) {
            secagg_client_free(cl[i]);
            cl[i] = NULL;
        }
        secagg_server_free(srv);
        srv = NULL;
        continue;
    group_fail:
        af_preerr(rc, "population statistics, group %zu (devices %zu-%zu)", g, lo, hi - 1);
        goto done;
    }
    if (out->groups_abandoned == out->groups) {
        rc = af_seterr(AF_ESTATE, "population statistics: every group had fewer than t survivors "
                                  "(dropout %g): nothing was released", cfg->dropout);
        goto done;
    }
    rc = popstats_release(acc, C, noise_var, cfg->z, cfg->bound, cfg->delta, &out->r);
    out->seconds = af_now() - t0;
done:
    if (cl)
        for (size_t i = 0; i < gmax; i++)
            secagg_client_free(cl[i]);
    secagg_server_free(srv);
    if (sk) {
        memset(sk, 0, gmax * sizeof *sk);
        free(sk);
    }
    free(cl);
    free(pk);
    free(skm);
    free(rcs);
    free(reporting);
    return rc;
}

static void jnum(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.10g", v);
    else
        fputs("null", f);
}

static void jarr(FILE *f, const double *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i)
            fputs(", ", f);
        jnum(f, v[i]);
    }
    fputc(']', f);
}

/* A JSON string: the class names come from the dataset's schema. */
static void jstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

int sim_popstats_write_json(const sim_popstats *s, const sim_popstats_cfg *cfg,
                            const char *const *class_names, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return af_seterr(AF_ENOMEM, "population.json: out of memory");
    const popstats_result *r = &s->r;
    const int C = r->n_classes;
    double truth[POPSTATS_MAX_CLASSES], tv_true = 0, T = 0;
    for (int c = 0; c < C; c++)
        T += (double)s->true_count[c];
    for (int c = 0; c < C; c++) {
        truth[c] = (double)s->true_count[c];
        tv_true += T > 0 ? 0.5 * fabs(truth[c] / T - 1.0 / C) : NAN;
    }
    fputs("{\n  \"classes\": [", f);
    for (int c = 0; c < C; c++) {
        char name[32];
        snprintf(name, sizeof name, "class_%d", c);
        if (c)
            fputs(", ", f);
        jstr(f, class_names && class_names[c] ? class_names[c] : name);
    }
    fputs("],\n  \"counts\": ", f);
    jarr(f, r->count, C);
    fputs(",\n  \"count_std\": ", f);
    jnum(f, r->count_std);
    fputs(",\n  \"shares\": ", f);
    jarr(f, r->share, C);
    fputs(",\n  \"share_std\": ", f);
    jarr(f, r->share_std, C);
    fputs(",\n  \"total\": ", f);
    jnum(f, r->total);
    fputs(",\n  \"total_std\": ", f);
    jnum(f, r->total_std);
    fputs(",\n  \"tv_uniform\": ", f);
    jnum(f, r->tv_uniform);
    fputs(",\n  \"tv_noise\": ", f);
    jnum(f, r->tv_noise);
    fputs(",\n  \"epsilon\": ", f);
    jnum(f, r->epsilon);
    fputs(",\n  \"delta\": ", f);
    jnum(f, r->delta);
    fputs(",\n  \"order\": ", f);
    jnum(f, r->order);
    fputs(",\n  \"noise_multiplier\": ", f);
    jnum(f, r->z);
    fputs(",\n  \"bound\": ", f);
    jnum(f, r->bound);
    fprintf(f, ",\n  \"group\": %d,\n  \"devices\": %u,\n  \"reported\": %u,\n  \"dropped\": %u,\n"
               "  \"clipped\": %u,\n  \"groups\": %u,\n  \"groups_abandoned\": %u,\n  \"clamped\": %llu,\n"
               "  \"bytes_up\": %llu,\n  \"bytes_down\": %llu,\n  \"seconds\": %.4f,\n",
            cfg->group, s->devices, s->reported, s->dropped, s->clipped, s->groups, s->groups_abandoned,
            (unsigned long long)s->clamped, (unsigned long long)s->bytes_up, (unsigned long long)s->bytes_down,
            s->seconds);
    fputs("  \"simulation_truth\": {\"counts\": ", f);
    jarr(f, truth, C);
    fputs(", \"clipped_counts\": ", f);
    jarr(f, s->true_clipped, C);
    fputs(", \"tv_uniform\": ", f);
    jnum(f, tv_true);
    fputs("}\n}\n", f);
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return af_seterr(AF_ENOMEM, "population.json: out of memory");
    }
    const void *b[1] = {buf};
    int rc = af_write_file_atomic(path, b, &len, 1);
    free(buf);
    return rc;
}
