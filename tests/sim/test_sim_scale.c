/* test_sim_scale.c — sim at population scale: 100,000 devices registered at once over a
 * synthetic tabular dataset, with a model big enough (≈ 70k parameters) that any per-device
 * copy of the model would cost gigabytes. Memory must grow with the model × threads and the
 * sample count, never with the model × devices. */
#include "../test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "sim/sim.h"

#define FEATURES 16
#define CLASSES 10

/* Resident set size now, in MiB (/proc/self/statm). */
static double rss_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
        res = -1;
    fclose(f);
    return res < 0 ? -1 : (double)res * 4096.0 / (1024.0 * 1024.0);
}

/* n samples of a learnable synthetic task: the label is the argmax of a fixed linear map. */
static data_dataset *synthetic(size_t n, uint64_t seed)
{
    data_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return NULL;
    snprintf(ds->schema.name, sizeof ds->schema.name, "synthetic");
    ds->schema.kind = DATA_KIND_TABULAR;
    ds->schema.c = ds->schema.h = 1;
    ds->schema.w = FEATURES;
    ds->schema.n_classes = CLASSES;
    for (int c = 0; c < CLASSES; c++)
        snprintf(ds->schema.class_names[c], sizeof ds->schema.class_names[c], "class%d", c);
    ds->n = n;
    ds->sample_size = FEATURES;
    ds->x = malloc(sizeof(float) * n * FEATURES);
    ds->y = malloc(n);
    if (!ds->x || !ds->y) {
        data_dataset_free(ds);
        return NULL;
    }
    af_rng r;
    af_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < n; i++) {
        float *x = ds->x + i * FEATURES;
        for (int f = 0; f < FEATURES; f++)
            x[f] = (float)af_rng_normal(&r);
        int best = 0;
        float bv = -1e30f;
        for (int c = 0; c < CLASSES; c++) {
            float v = 0; /* fixed map: w[c][f] = sin(c·f + c) */
            for (int f = 0; f < FEATURES; f++)
                v += x[f] * (float)__builtin_sin((double)(c * f + c));
            if (v > bv) {
                bv = v;
                best = c;
            }
        }
        ds->y[i] = (uint8_t)best;
    }
    return ds;
}

static const char *spec =
    "{\"input\": [16], \"classes\": 10, \"layers\": ["
    "{\"type\": \"linear\", \"name\": \"fc1\", \"out_features\": 256}, {\"type\": \"relu\"},"
    "{\"type\": \"linear\", \"name\": \"fc2\", \"out_features\": 256}, {\"type\": \"relu\"},"
    "{\"type\": \"linear\", \"name\": \"out\", \"out_features\": 10}]}";

TEST(sim_100k_devices_memory_does_not_grow_with_devices)
{
    data_dataset *tr = synthetic(250000, 1), *te = synthetic(5000, 2);
    nn_model *m = NULL;
    CHECK(tr && te);
    CHECK_EQ_INT(nn_model_from_json(spec, "scale spec", NULL, &m), 0);
    nn_model_init(m, 1);
    const double model_mb = (double)m->n_params * 4.0 / (1024.0 * 1024.0);
    sim_cfg c;
    sim_cfg_defaults(&c);
    c.clients = 100000;
    c.per_round = 100;
    c.rounds = 2;
    c.partition = "quantity:1";
    c.threads = 2;
    c.opt.lr = 0.05f;
    double before = rss_mb();
    sim *s = NULL;
    int rc = sim_create(&c, m, tr, te, &s);
    CHECK_MSG(rc == 0, "sim_create: %s", af_errmsg());
    sim_round r[2];
    for (int i = 0; i < 2 && !rc; i++)
        rc = sim_run_round(s, i + 1, &r[i]);
    double grown = rss_mb() - before;
    int changed = 0;
    for (size_t k = 0; !rc && k < m->n_params; k++)
        changed |= sim_model(s)->params[k] != m->params[k];
    sim_free(s);
    nn_model_free(m);
    data_dataset_free(tr);
    data_dataset_free(te);
    CHECK_MSG(rc == 0, "round: %s", af_errmsg());
    CHECK_EQ_INT(r[1].selected, 100);
    CHECK(r[1].reported == 100);
    CHECK(changed); /* the devices trained and the server applied their updates */
    CHECK(r[1].test_accuracy >= 0.0 && r[1].test_accuracy <= 1.0 && isfinite(r[1].test_loss));
    /* one model per device would be 100,000 × model_mb (≈ 28 GB here); allow a few hundred
     * MB for the partition (O(n + K)), per-device counters and the per-thread replicas. */
    CHECK_MSG(grown < 300.0, "RSS grew by %.1f MB for 100,000 devices (model %.2f MB)", grown, model_mb);
    CHECK(model_mb * 100000 > 10 * 1024); /* the test is meaningful: per-device models would not fit */
}
