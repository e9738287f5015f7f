/* test_partition.c — tests for data/partition: every sample used once per kind, sizes,
 * determinism, label-skew properties, bad specs, scale, held-out split and the balance files.
 * Synthetic labels only (no dataset files needed). */
#include "../test.h"

#include "core/err.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/partition.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NC 10

/* n labels drawn uniformly from NC classes (class counts unequal, as in real data). */
static uint8_t *make_labels(size_t n, uint64_t seed)
{
    uint8_t *y = malloc(n);
    af_rng r;
    af_rng_seed(&r, seed, 7);
    for (size_t i = 0; i < n; i++)
        y[i] = (uint8_t)af_rng_below(&r, NC);
    return y;
}

static int distinct_classes(const data_partition *p, const uint8_t *y, size_t d)
{
    uint32_t cnt[NC];
    data_partition_label_counts(p, y, d, DATA_PART_ALL, cnt);
    int k = 0;
    for (int c = 0; c < NC; c++)
        k += cnt[c] > 0;
    return k;
}

/* 1 if every sample 0..n-1 appears exactly once over all devices (train + held-out) and
 * every device has at least one training sample. */
static int covers_exactly_once(const data_partition *p)
{
    unsigned char *seen = calloc(p->n_samples, 1);
    int ok = p->off[0] == 0 && p->off[p->n_devices] == p->n_samples;
    for (size_t d = 0; ok && d < p->n_devices; d++) {
        size_t nt, nh;
        const uint32_t *tr = data_partition_train(p, d, &nt);
        const uint32_t *ho = data_partition_heldout(p, d, &nh);
        ok = nt >= 1 && nt + nh == p->off[d + 1] - p->off[d];
        for (size_t i = 0; ok && i < nt; i++)
            ok = tr[i] < p->n_samples && !seen[tr[i]]++ && (i == 0 || tr[i - 1] < tr[i]);
        for (size_t i = 0; ok && i < nh; i++)
            ok = ho[i] < p->n_samples && !seen[ho[i]]++ && (i == 0 || ho[i - 1] < ho[i]);
    }
    for (size_t i = 0; ok && i < p->n_samples; i++)
        ok = seen[i] == 1;
    free(seen);
    return ok;
}

TEST(partition_every_kind_uses_each_sample_once)
{
    const char *specs[] = {"iid",      "dirichlet:0.1", "dirichlet:1", "shards:2",
                           "labels:1", "labels:3",      "quantity:0.5"};
    size_t n = 6000;
    uint8_t *y = make_labels(n, 1);
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        data_partition *p = NULL;
        int rc = data_partition_create(y, n, NC, 50, specs[i], 42, NULL, &p);
        CHECK_MSG(rc == 0, "%s: %s", specs[i], af_errmsg());
        CHECK_EQ_INT(p->n_devices, 50);
        CHECK_MSG(covers_exactly_once(p), "%s: a sample is missing or repeated", specs[i]);
        /* held-out is ~10% overall */
        size_t held = 0;
        for (size_t d = 0; d < 50; d++)
            held += p->off[d + 1] - p->off[d] - p->n_train[d];
        CHECK_MSG(held > n * 8 / 100 && held < n * 12 / 100, "%s: held %zu", specs[i], held);
        data_partition_free(p);
    }
    free(y);
}

TEST(partition_iid_sizes_differ_by_at_most_one)
{
    size_t n = 1003;
    uint8_t *y = make_labels(n, 2);
    data_partition *p;
    CHECK(data_partition_create(y, n, NC, 10, "iid", 1, NULL, &p) == 0);
    for (size_t d = 0; d < 10; d++) {
        size_t sz = p->off[d + 1] - p->off[d];
        CHECK_MSG(sz == 100 || sz == 101, "device %zu has %zu", d, sz);
        CHECK_EQ_INT(sz - p->n_train[d], 10); /* round(0.1 · 100.x) */
    }
    /* as many devices as samples: one each, nothing held out (training keeps >= 1) */
    data_partition_free(p);
    CHECK(data_partition_create(y, n, NC, n, "iid", 1, NULL, &p) == 0);
    for (size_t d = 0; d < n; d++)
        CHECK(p->off[d + 1] - p->off[d] == 1 && p->n_train[d] == 1);
    CHECK(covers_exactly_once(p));
    data_partition_free(p);
    free(y);
}

TEST(partition_is_deterministic_per_seed)
{
    const char *specs[] = {"iid", "dirichlet:0.5", "shards:2", "labels:2", "quantity:1"};
    size_t n = 3000;
    uint8_t *y = make_labels(n, 3);
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        data_partition *a, *b, *c;
        CHECK(data_partition_create(y, n, NC, 20, specs[i], 9, NULL, &a) == 0);
        CHECK(data_partition_create(y, n, NC, 20, specs[i], 9, NULL, &b) == 0);
        CHECK(data_partition_create(y, n, NC, 20, specs[i], 10, NULL, &c) == 0);
        CHECK_MSG(!memcmp(a->idx, b->idx, n * 4) && !memcmp(a->off, b->off, 21 * sizeof(size_t)) &&
                      !memcmp(a->n_train, b->n_train, 20 * 4),
                  "%s: same seed, different partition", specs[i]);
        CHECK_MSG(memcmp(a->idx, c->idx, n * 4) != 0, "%s: seed ignored", specs[i]);
        data_partition_free(a);
        data_partition_free(b);
        data_partition_free(c);
    }
    free(y);
}

TEST(partition_labels_k_holds_at_most_k_classes)
{
    size_t n = 6000;
    uint8_t *y = make_labels(n, 4);
    for (int L = 1; L <= 3; L++) {
        char spec[32];
        snprintf(spec, sizeof spec, "labels:%d", L);
        data_partition *p;
        CHECK(data_partition_create(y, n, NC, 37, spec, 5, NULL, &p) == 0);
        uint64_t pop[NC];
        CHECK(data_partition_population(p, y, pop) == 0);
        for (size_t d = 0; d < 37; d++) {
            int k = distinct_classes(p, y, d);
            CHECK_MSG(k >= 1 && k <= L, "labels:%d device %zu holds %d classes", L, d, k);
        }
        for (int c = 0; c < NC; c++)
            CHECK(pop[c] > 0); /* every class is on some device */
        data_partition_free(p);
    }
    /* with exactly enough devices to cover the classes, every class still appears */
    data_partition *p;
    CHECK(data_partition_create(y, n, NC, 5, "labels:2", 6, NULL, &p) == 0);
    CHECK(covers_exactly_once(p));
    for (size_t d = 0; d < 5; d++)
        CHECK_EQ_INT(distinct_classes(p, y, d), 2);
    data_partition_free(p);
    free(y);
}

TEST(partition_shards_two_mostly_two_classes)
{
    size_t n = 60000;
    uint8_t *y = make_labels(n, 5);
    data_partition *p;
    CHECK(data_partition_create(y, n, NC, 100, "shards:2", 1, NULL, &p) == 0);
    int le2 = 0;
    for (size_t d = 0; d < 100; d++) {
        int k = distinct_classes(p, y, d);
        CHECK(k <= 4); /* two shards, each straddles at most one class boundary */
        le2 += k <= 2;
        CHECK_EQ_INT(p->off[d + 1] - p->off[d], 600);
    }
    CHECK_MSG(le2 >= 85, "only %d of 100 devices hold <= 2 classes", le2);
    data_partition_free(p);
    free(y);
}

static double mean_skew(const uint8_t *y, size_t n, const char *spec)
{
    data_partition *p;
    data_balance b;
    if (data_partition_create(y, n, NC, 100, spec, 11, NULL, &p) < 0)
        return -1;
    int rc = data_partition_balance(p, y, NULL, &b);
    data_partition_free(p);
    return rc < 0 ? -1 : b.skew_mean;
}

TEST(partition_dirichlet_skew_grows_as_alpha_shrinks)
{
    size_t n = 60000;
    uint8_t *y = make_labels(n, 6);
    double s01 = mean_skew(y, n, "dirichlet:0.1"), s1 = mean_skew(y, n, "dirichlet:1"),
           s100 = mean_skew(y, n, "dirichlet:100"), siid = mean_skew(y, n, "iid");
    CHECK_MSG(s01 > s1 && s1 > s100 && s100 > siid - 0.02, "skew %g %g %g iid %g", s01, s1,
              s100, siid);
    CHECK(s01 > 0.5);  /* mostly one or two classes per device */
    CHECK(s100 < 0.1); /* close to the population mix */
    CHECK(siid < 0.1);
    free(y);
}

static double size_cv(const data_partition *p)
{
    double m = (double)p->n_samples / (double)p->n_devices, v = 0;
    for (size_t d = 0; d < p->n_devices; d++) {
        double s = (double)(p->off[d + 1] - p->off[d]) - m;
        v += s * s;
    }
    return sqrt(v / (double)p->n_devices) / m;
}

TEST(partition_quantity_sizes_vary_more_for_small_beta)
{
    size_t n = 60000;
    uint8_t *y = make_labels(n, 7);
    data_partition *a, *b;
    CHECK(data_partition_create(y, n, NC, 200, "quantity:0.1", 1, NULL, &a) == 0);
    CHECK(data_partition_create(y, n, NC, 200, "quantity:10", 1, NULL, &b) == 0);
    double cva = size_cv(a), cvb = size_cv(b);
    CHECK_MSG(cva > 2.0 && cvb < 0.5 && cva > 4 * cvb, "cv %g vs %g", cva, cvb);
    CHECK(covers_exactly_once(a));
    data_partition_free(a);
    data_partition_free(b);
    free(y);
}

TEST(partition_rejects_bad_specs)
{
    size_t n = 1000;
    uint8_t *y = make_labels(n, 8);
    static const struct {
        const char *spec;
        size_t k;
        int code;
        const char *msg;
    } bad[] = {
        {"", 10, AF_EINVAL, "empty spec"},
        {"gaussian:1", 10, AF_EINVAL, "unknown kind 'gaussian'"},
        {"iid:3", 10, AF_EINVAL, "takes no parameter"},
        {"dirichlet", 10, AF_EINVAL, "missing ALPHA"},
        {"dirichlet:", 10, AF_EINVAL, "missing ALPHA"},
        {"dirichlet:abc", 10, AF_EINVAL, "ALPHA 'abc' is not a number"},
        {"dirichlet:0.5x", 10, AF_EINVAL, "not a number"},
        {"dirichlet:-1", 10, AF_ERANGE, "partition 'dirichlet:-1': ALPHA must be > 0"},
        {"dirichlet:0", 10, AF_ERANGE, "ALPHA must be > 0"},
        {"dirichlet:inf", 10, AF_ERANGE, "ALPHA must be finite"},
        {"quantity:-0.5", 10, AF_ERANGE, "BETA must be > 0"},
        {"quantity", 10, AF_EINVAL, "missing BETA"},
        {"shards:0", 10, AF_ERANGE, "S must be >= 1"},
        {"shards:1.5", 10, AF_EINVAL, "not a whole number"},
        {"shards:200", 10, AF_ERANGE, "200 shards × 10 devices"},
        {"labels:0", 10, AF_ERANGE, "L must be >= 1"},
        {"labels:-2", 10, AF_ERANGE, "L must be >= 1"},
        {"labels:11", 10, AF_ERANGE, "L must be <= 10"},
        {"labels:1", 5, AF_ERANGE, "cannot cover all 10 classes"},
        {"iid", 1001, AF_ERANGE, "1001 devices but only 1000 samples"},
        {"quantity:1", 2000, AF_ERANGE, "devices but only"},
        {"iid", 0, AF_EINVAL, "at least 1 device"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        data_partition *p = (data_partition *)1;
        af_clearerr();
        int rc = data_partition_create(y, n, NC, bad[i].k, bad[i].spec, 1, NULL, &p);
        CHECK_MSG(rc == bad[i].code, "'%s': rc %d, want %d (%s)", bad[i].spec, rc, bad[i].code,
                  af_errmsg());
        CHECK_MSG(p == NULL, "'%s': out not cleared", bad[i].spec);
        CHECK_MSG(strstr(af_errmsg(), bad[i].msg), "'%s': message '%s' lacks '%s'", bad[i].spec,
                  af_errmsg(), bad[i].msg);
    }
    /* parse alone gives the same verdict without any data */
    data_partition_spec s;
    CHECK(data_partition_parse("dirichlet:0.3", &s) == 0 && s.kind == DATA_PART_DIRICHLET &&
          s.param == 0.3);
    CHECK(data_partition_parse("labels:2", &s) == 0 && s.kind == DATA_PART_LABELS && s.param == 2);
    CHECK(data_partition_parse("quantity:-1", &s) == AF_ERANGE);
    /* a label outside the declared classes, a bad held-out fraction, unsatisfiable min_size */
    data_partition *p;
    y[17] = NC;
    CHECK(data_partition_create(y, n, NC, 10, "iid", 1, NULL, &p) == AF_EINVAL);
    CHECK(strstr(af_errmsg(), "sample 17"));
    y[17] = 0;
    data_partition_opts o;
    data_partition_opts_default(&o);
    o.heldout_frac = 1.0;
    CHECK(data_partition_create(y, n, NC, 10, "iid", 1, &o, &p) == AF_ERANGE);
    data_partition_opts_default(&o);
    o.min_size = 101;
    CHECK(data_partition_create(y, n, NC, 10, "dirichlet:1", 1, &o, &p) == AF_ERANGE);
    o.min_size = 90;
    o.max_tries = 5;
    CHECK(data_partition_create(y, n, NC, 10, "dirichlet:0.01", 1, &o, &p) == AF_ERANGE);
    CHECK(strstr(af_errmsg(), "no draw in 5 tries"));
    free(y);
}

TEST(partition_dirichlet_respects_min_size)
{
    size_t n = 6000;
    uint8_t *y = make_labels(n, 12);
    data_partition_opts o;
    data_partition_opts_default(&o);
    o.min_size = 25;
    data_partition *p;
    CHECK_MSG(data_partition_create(y, n, NC, 40, "dirichlet:0.3", 3, &o, &p) == 0, "%s",
              af_errmsg());
    for (size_t d = 0; d < 40; d++)
        CHECK(p->off[d + 1] - p->off[d] >= 25);
    CHECK(covers_exactly_once(p));
    data_partition_free(p);
    free(y);
}

TEST(partition_ten_thousand_devices_quantity_is_fast)
{
    size_t n = 60000, k = 10000;
    uint8_t *y = make_labels(n, 9);
    double t0 = af_now();
    data_partition *p;
    CHECK_MSG(data_partition_create(y, n, NC, k, "quantity:0.5", 1, NULL, &p) == 0, "%s",
              af_errmsg());
    double dt = af_now() - t0;
    CHECK_MSG(dt < 1.0, "took %.3f s", dt);
    CHECK(covers_exactly_once(p));
    data_balance b;
    CHECK(data_partition_balance(p, y, NULL, &b) == 0);
    CHECK(b.size_min >= 1 && b.size_max > 6 * 4);
    CHECK_NEAR(b.size_mean, 6.0, 1e-9);
    /* dirichlet with the automatic min_size (10 here) at 1,000 devices */
    data_partition_free(p);
    CHECK_MSG(data_partition_create(y, n, NC, 1000, "dirichlet:1", 1, NULL, &p) == 0, "%s",
              af_errmsg());
    for (size_t d = 0; d < 1000; d++)
        CHECK(p->off[d + 1] - p->off[d] >= 10);
    data_partition_free(p);
    free(y);
}

TEST(partition_heldout_fraction_is_configurable)
{
    size_t n = 1000;
    uint8_t *y = make_labels(n, 10);
    data_partition_opts o;
    data_partition_opts_default(&o);
    o.heldout_frac = 0.25;
    data_partition *p;
    CHECK(data_partition_create(y, n, NC, 10, "iid", 1, &o, &p) == 0);
    size_t nh, nt;
    data_partition_heldout(p, 3, &nh);
    data_partition_train(p, 3, &nt);
    CHECK_EQ_INT(nh, 25);
    CHECK_EQ_INT(nt, 75);
    uint32_t tr[NC], ho[NC], all[NC];
    CHECK(data_partition_label_counts(p, y, 3, DATA_PART_TRAIN, tr) == 0);
    CHECK(data_partition_label_counts(p, y, 3, DATA_PART_HELDOUT, ho) == 0);
    CHECK(data_partition_label_counts(p, y, 3, DATA_PART_ALL, all) == 0);
    uint32_t st = 0, sh = 0;
    for (int c = 0; c < NC; c++) {
        CHECK_EQ_INT(tr[c] + ho[c], all[c]);
        st += tr[c];
        sh += ho[c];
    }
    CHECK(st == 75 && sh == 25);
    CHECK(data_partition_label_counts(p, y, 10, DATA_PART_ALL, all) == AF_ERANGE);
    data_partition_free(p);
    o.heldout_frac = 0.0;
    CHECK(data_partition_create(y, n, NC, 10, "iid", 1, &o, &p) == 0);
    data_partition_heldout(p, 0, &nh);
    CHECK_EQ_INT(nh, 0);
    data_partition_free(p);
    free(y);
}

TEST(partition_skew_values_and_report_files)
{
    /* 4 devices, hand-checkable: labels 0,0,1,1 repeated; shards:1 sorts by label, so with
     * 4 devices each device holds a single class and population is 50/50: TV = 0.5 each. */
    size_t n = 40;
    uint8_t y[40];
    for (size_t i = 0; i < n; i++)
        y[i] = (uint8_t)((i / 2) % 2);
    data_partition *p;
    CHECK(data_partition_create(y, n, 2, 4, "shards:1", 1, NULL, &p) == 0);
    uint64_t pop[2];
    CHECK(data_partition_population(p, y, pop) == 0);
    CHECK(pop[0] == 20 && pop[1] == 20);
    double skew[4];
    data_balance b;
    CHECK(data_partition_balance(p, y, skew, &b) == 0);
    for (int d = 0; d < 4; d++)
        CHECK_NEAR(skew[d], 0.5, 1e-12);
    CHECK_NEAR(b.skew_mean, 0.5, 1e-12);
    CHECK_NEAR(b.skew_p90, 0.5, 1e-12);
    CHECK(b.size_min == 10 && b.size_max == 10);

    char path[1024];
    snprintf(path, sizeof path, "%s/partition.csv", t_tmpdir());
    const char *names[2] = {"T-shirt/top", "a,b"};
    CHECK(data_partition_write_csv(p, y, names, path) == 0);
    char *txt;
    size_t len;
    CHECK(af_read_file(path, &txt, &len) == 0);
    CHECK_MSG(!strncmp(txt, "device,n_train,n_heldout,T-shirt/top,\"a,b\"\n", 43), "%s", txt);
    int rows = 0;
    for (size_t i = 0; i < len; i++)
        rows += txt[i] == '\n';
    CHECK_EQ_INT(rows, 5);
    CHECK(strstr(txt, "\n0,9,1,"));
    free(txt);

    snprintf(path, sizeof path, "%s/balance.json", t_tmpdir());
    CHECK(data_partition_write_balance_json(p, y, path) == 0);
    CHECK(af_read_file(path, &txt, &len) == 0);
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    CHECK(j);
    CHECK(!strcmp(cJSON_GetObjectItem(j, "spec")->valuestring, "shards:1"));
    CHECK_EQ_INT(cJSON_GetObjectItem(j, "devices")->valueint, 4);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "population")), 2);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "device_skew")), 4);
    cJSON *sk = cJSON_GetObjectItem(j, "skew");
    CHECK_NEAR(cJSON_GetObjectItem(sk, "p50")->valuedouble, 0.5, 1e-12);
    CHECK_NEAR(cJSON_GetObjectItem(sk, "max")->valuedouble, 0.5, 1e-12);
    cJSON_Delete(j);

    /* writing into a missing folder fails cleanly */
    CHECK(data_partition_write_csv(p, y, NULL, "/nonexistent-dir/x/partition.csv") == AF_EIO);
    data_partition_free(p);
    data_partition_free(NULL);
}
