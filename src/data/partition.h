/* partition.h — split one labelled dataset over K simulated devices, reproducibly from a seed.
 *
 * Layer `data`: uses core only (err, rng, mem, fileio). A partition is index lists into the
 * shared dataset — nothing is copied per device — kept in one flat array with per-device
 * offsets, so memory is O(n + K) whatever K is. Each device's list is two ranges: training
 * samples first, then its local held-out split (for federated evaluation).
 * Also the balance report: label histograms, skew per device, partition.csv, balance.json.
 * Must not: look at features (labels only), print, or keep K × classes tables.
 *
 *   data_partition *p;
 *   if (data_partition_create(ds->y, ds->n, 10, 100, "dirichlet:0.5", seed, NULL, &p) < 0)
 *       fprintf(stderr, "%s\n", af_errmsg());
 *   size_t nt; const uint32_t *tr = data_partition_train(p, 7, &nt); // device 7's training set
 *   data_partition_free(p);
 */
#ifndef AF_DATA_PARTITION_H
#define AF_DATA_PARTITION_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DATA_PART_IID = 0,       /* "iid": equal random shares, sizes differ by at most 1 */
    DATA_PART_DIRICHLET = 1, /* "dirichlet:ALPHA": per class p ~ Dir(ALPHA·1_K) over devices */
    DATA_PART_SHARDS = 2,    /* "shards:S": sort by label, S·K shards, S random ones each */
    DATA_PART_LABELS = 3,    /* "labels:L": each device holds exactly L distinct classes */
    DATA_PART_QUANTITY = 4,  /* "quantity:BETA": sizes ~ Dir(BETA·1_K), labels random */
} data_partition_kind;

/* A parsed spec string. param is ALPHA, S, L or BETA (0 for iid). */
typedef struct data_partition_spec {
    data_partition_kind kind;
    double param;
} data_partition_spec;

typedef struct data_partition_opts {
    double heldout_frac; /* fraction of each device held out, in [0, 1); default 0.1. Rounded
                            to the nearest count, and at least 1 sample stays for training */
    size_t min_size;     /* dirichlet: redraw until every device has >= min_size samples;
                            0 = default min(10, max(1, n / (2K))) */
    int max_tries;       /* dirichlet: draws before giving up with AF_ERANGE; default 1000 */
} data_partition_opts;

/* The partition. Fields are read-only for callers; the accessors below are the easy way in.
 * Device d's samples are idx[off[d] .. off[d+1]): the first n_train[d] are its training set,
 * the rest its held-out set; each range is sorted ascending (cache-friendly gathers). */
typedef struct data_partition {
    data_partition_spec spec;
    char spec_str[64];    /* the spec as given, for reports */
    uint64_t seed;
    double heldout_frac;
    size_t n_devices;     /* K */
    size_t n_samples;     /* n: every sample 0..n-1 appears exactly once in idx */
    int n_classes;
    uint32_t *idx;        /* n sample indices, grouped by device */
    size_t *off;          /* K + 1 offsets into idx */
    uint32_t *n_train;    /* K training counts */
} data_partition;

/* Default options (heldout 0.1, min_size automatic, 1000 tries). */
void data_partition_opts_default(data_partition_opts *o);

/* Parses "iid", "dirichlet:ALPHA", "shards:S", "labels:L", "quantity:BETA". Checks what can
 * be checked without data (ALPHA, BETA > 0 and finite; S, L integers >= 1).
 * Returns 0, AF_EINVAL (unknown kind, missing or garbage number) or AF_ERANGE (value out of
 * range), with a message such as "partition 'dirichlet:-1': ALPHA must be > 0". */
int data_partition_parse(const char *spec, data_partition_spec *out);

/* Splits n samples with labels y[0..n) (each < n_classes, n_classes in 1..256) over
 * n_devices devices by spec, reproducibly from seed. opts may be NULL for defaults.
 * Errors (nothing allocated, *out NULL): AF_EINVAL for bad arguments, a bad spec or a label
 * out of range; AF_ERANGE for impossible requests — more devices than samples, L > classes,
 * S·K shards from fewer samples, L·K < classes (some class on no device), a device left
 * empty, Dirichlet draws that never satisfy min_size; AF_ENOMEM.
 * On success *out is owned by the caller: free with data_partition_free. */
int data_partition_create(const uint8_t *y, size_t n, int n_classes, size_t n_devices,
                          const char *spec, uint64_t seed, const data_partition_opts *opts,
                          data_partition **out);

/* Frees the partition; NULL is fine. */
void data_partition_free(data_partition *p);

/* Device d's training indices (count in *n), held-out indices, or all of them (train then
 * held-out). Pointers into p, valid until data_partition_free; d < n_devices. */
const uint32_t *data_partition_train(const data_partition *p, size_t d, size_t *n);
const uint32_t *data_partition_heldout(const data_partition *p, size_t d, size_t *n);
const uint32_t *data_partition_device(const data_partition *p, size_t d, size_t *n);

/* Which of a device's samples a histogram counts. */
typedef enum { DATA_PART_ALL = 0, DATA_PART_TRAIN = 1, DATA_PART_HELDOUT = 2 } data_part_range;

/* Label histogram of device d into counts[0..n_classes) (caller's buffer, overwritten).
 * y must be the labels the partition was built from. Returns 0, or AF_ERANGE if d is out of
 * range / AF_EINVAL if a label is >= n_classes (counts then undefined). */
int data_partition_label_counts(const data_partition *p, const uint8_t *y, size_t d,
                                data_part_range r, uint32_t *counts);

/* Label histogram of the whole population (all devices, train + held-out) into
 * counts[0..n_classes). Returns 0 or AF_EINVAL as above. */
int data_partition_population(const data_partition *p, const uint8_t *y, uint64_t *counts);

/* Skew of device d: total-variation distance between its label mix (train + held-out) and
 * the population mix pop[0..n_classes) from data_partition_population:
 *   TV = ½ Σ_c | n_dc / n_d − N_c / N |   in [0, 1]; 0 = same mix as the population.
 * Returns the distance, or a negative AF_E* code (bad d or label). */
double data_partition_skew(const data_partition *p, const uint8_t *y, size_t d,
                           const uint64_t *pop);

/* Summary of skew (TV distance) and size over devices. Percentiles interpolate linearly
 * between order statistics (numpy's default). */
typedef struct data_balance {
    double skew_mean, skew_p50, skew_p90, skew_max;
    size_t size_min, size_max;
    double size_mean;
} data_balance;

/* Computes every device's skew into skew[0..n_devices) (caller's buffer, or NULL if not
 * wanted) and the summary into *out. Allocates K doubles of scratch for the percentiles.
 * Returns 0, AF_EINVAL (bad label) or AF_ENOMEM. */
int data_partition_balance(const data_partition *p, const uint8_t *y, double *skew,
                           data_balance *out);

/* Writes partition.csv: header "device,n_train,n_heldout,<class>…", one row per device with
 * its per-class counts (train + held-out). class_names[n_classes] names the columns (quoted
 * when needed); NULL gives "class_0", "class_1", …. Atomic (af_write_file_atomic).
 * Returns 0, AF_EINVAL, AF_ENOMEM or AF_EIO. */
int data_partition_write_csv(const data_partition *p, const uint8_t *y,
                             const char *const *class_names, const char *path);

/* Writes balance.json: {"spec", "seed", "devices", "samples", "classes", "heldout_frac",
 * "population": [counts], "size": {min, mean, max}, "skew_metric": "total_variation",
 * "skew": {mean, p50, p90, max}, "device_skew": [one per device]}. Atomic.
 * Returns 0, AF_EINVAL, AF_ENOMEM or AF_EIO. */
int data_partition_write_balance_json(const data_partition *p, const uint8_t *y,
                                      const char *path);

#endif
