/* secwire.h — secure aggregation over HTTP: the bytes of the protocol's messages and the
 * layout of the vector a device feeds into the secure sum. The one contract shared by the
 * coordinator (src/server) and the device library (src/client); docs/api.md "Secure
 * aggregation" describes the same bytes for other implementations.
 *
 * Layer `fed` (core, fed/secagg, fed/dp, fed/popstats, libsodium for base64). No I/O, never
 * prints.
 *
 * Records (little-endian), carried base64-encoded (libsodium's original alphabet, padded) in
 * JSON bodies; every array is one base64 string of concatenated records:
 *   key    132 bytes: id u32 ‖ c_pk[32] ‖ s_pk[32] ‖ sig[64]             (advertise, U1 list)
 *   share  136 bytes: from u32 ‖ to u32 ‖ nonce[24] ‖ ct[104]            (share keys)
 *   reveal  48 bytes: owner u32 ‖ kind u32 ‖ y[5] u64                    (unmask)
 * A masked input travels as application/octet-stream: len words u32 ‖ sig[64].
 *
 * The vector (len words, summed mod 2^32 by secure aggregation; every part's quantiser is
 * sized for n summands, so sums never wrap):
 *   kind "train", no DP:   [ q(w_k·Δ_k), range R·M  (n_params) | w_k (1) | tail ]
 *   kind "train", DP:      [ q(clip_S(Δ_k) + N(0, σ_dev²)), range S + 8σ_dev  (n_params) |
 *                            adaptive: q(b_k − ½ + N(0, σ_b,dev²)), range ½ + 8σ_b,dev, else 0 (1) |
 *                            tail ]
 *   kind "label_stats":    [ popstats_device_encode(label counts) (C) | tail ]
 * with w_k = min(num_samples, M), b_k = 1 if ‖Δ_k‖ ≤ S (not clipped), σ_dev = z·S/√t,
 * σ_b,dev = σ_b/√t (any t devices' noise together has the central variance), and the tail
 * of exact integer words:
 *   count (1) ‖ samples min(n, 2^19) ‖ has_loss ‖ loss_milli round(1000·min(loss, 100)) ‖
 *   eval_samples min(·, 2^19) ‖ eval_correct ‖ has_eval ‖ eval_loss_milli ‖
 *   confusion C×C (each row's counts as reported; only when 2 ≤ C ≤ SECWIRE_MAX_CONF_CLASSES)
 * (label_stats: count only). The tail is exact but not differentially private: the owner
 * learns these sums over at least t devices.
 */
#ifndef AF_FED_SECWIRE_H
#define AF_FED_SECWIRE_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "fed/popstats.h"
#include "fed/secagg.h"

#define SECWIRE_KEY_REC 132
#define SECWIRE_SHARE_REC 136
#define SECWIRE_REVEAL_REC 48
#define SECWIRE_TAIL 8                 /* tail words before the confusion matrix */
#define SECWIRE_MAX_CONF_CLASSES 32
#define SECWIRE_MAX_SAMPLES (1u << 19) /* tail counts are capped here (5000·2^19 < 2^32) */
#define SECWIRE_MAX_LOSS 100.0

/* ---- records ------------------------------------------------------------------------------ */
void secwire_put_key(uint8_t rec[SECWIRE_KEY_REC], const secagg_advertise *a);
/* Fills *a (round_id given: it is not on the wire). */
void secwire_get_key(const uint8_t rec[SECWIRE_KEY_REC], uint64_t round_id, secagg_advertise *a);
void secwire_put_share(uint8_t rec[SECWIRE_SHARE_REC], const secagg_enc_share *s);
void secwire_get_share(const uint8_t rec[SECWIRE_SHARE_REC], secagg_enc_share *s);
void secwire_put_reveal(uint8_t rec[SECWIRE_REVEAL_REC], const secagg_reveal *r);
void secwire_get_reveal(const uint8_t rec[SECWIRE_REVEAL_REC], secagg_reveal *r);

/* malloc'd NUL-terminated base64 of bin[len] (NULL on out of memory). */
char *secwire_b64(const void *bin, size_t len);
/* Decodes base64 text s into a malloc'd buffer (*out, *len; caller frees; an empty string
 * gives len 0 and a non-NULL *out). AF_EFORMAT naming `what` for bad base64, or a length
 * that is not a multiple of rec (rec > 0) or not exactly rec·count when count > 0;
 * AF_ENOMEM. */
int secwire_unb64(const char *s, const char *what, size_t rec, size_t count, uint8_t **out,
                  size_t *len);
/* Decodes exactly n bytes into out (keys, signatures). 0 or AF_EFORMAT naming `what`. */
int secwire_unb64_fixed(const char *s, const char *what, void *out, size_t n);

/* ---- the vector ----------------------------------------------------------------------------- */
enum { SECWIRE_TRAIN = 0, SECWIRE_LABELS = 1 };

/* What a task says (the task's "secagg" object) — the same on every party of the round. */
typedef struct secwire_params {
    int kind;              /* SECWIRE_TRAIN or SECWIRE_LABELS */
    uint32_t n, t;         /* devices of the round (ids 1..n) and the threshold */
    double range;          /* train without DP: R, |w·Δ| clamped to R·M */
    uint32_t max_samples;  /* train without DP: M, the largest weight */
    double clip;           /* train with DP: S this round (> 0 turns DP on) */
    double noise;          /* z: any t devices' noise has std z·S together (0: no noise) */
    double count_noise;    /* adaptive clipping: σ_b of the centred bit sum (0: fixed clip) */
    int adaptive;          /* 1: the aux word carries the clipping bit */
    double stats_bound;    /* label_stats: B */
    double stats_noise;    /* label_stats: z */
} secwire_params;

typedef struct secwire_layout {
    secwire_params p;
    size_t n_params;       /* train: delta words; label_stats: 0 */
    int classes;
    int confusion;         /* 1: the tail carries C×C confusion words */
    double sigma_dev, sigma_b_dev;
    secagg_quant qd, qb;   /* delta, aux bit */
    popstats_params ps;    /* label_stats */
    size_t off_aux, off_tail, len;
} secwire_layout;

/* Builds the layout for a model of n_params parameters and `classes` outputs (label_stats:
 * n_params is ignored). 0, or AF_ERANGE/AF_EINVAL naming the bad value. */
int secwire_layout_init(secwire_layout *L, const secwire_params *p, size_t n_params, int classes);

/* What a device reports besides its delta. */
typedef struct secwire_report {
    double num_samples;    /* > 0 */
    double loss;           /* NaN: none */
    double eval_samples;   /* 0: no evaluation */
    double eval_correct, eval_loss;
    const long *confusion; /* classes×classes or NULL */
} secwire_report;

/* Device side, train: words[0..len) from delta[n_params] (modified in place: weighted, or
 * clipped and noised). rng draws the DP noise (seed it from randombytes: a predictable draw
 * could be subtracted). *unclipped (may be NULL) gets b_k. 0, or AF_EINVAL (non-finite
 * delta). */
int secwire_encode_train(const secwire_layout *L, float *delta, const secwire_report *r,
                         af_rng *rng, uint32_t *words, int *unclipped);
/* Device side, label_stats: counts[classes] → words[0..len). */
int secwire_encode_labels(const secwire_layout *L, const uint32_t *counts, af_rng *rng,
                          uint32_t *words);

/* What the coordinator reads back from a secure sum. */
typedef struct secwire_sums {
    double count;          /* devices summed */
    double weight;         /* no DP: Σ w_k; DP adaptive: Σ(b_k − ½) + noise; else 0 */
    double samples, has_loss, loss_sum, eval_samples, eval_correct, has_eval, eval_loss_sum;
} secwire_sums;

/* Coordinator side: the dequantised sums. delta_sum[n_params] (train: Σ w_k·Δ_k without DP,
 * Σ clip(Δ_k) + noise with DP) and counts[classes] (label_stats, as popstats_accumulate
 * adds: the caller zeroes it) may be NULL when not wanted; confusion[C×C] (may be NULL) gets
 * the summed matrix when L->confusion. */
void secwire_decode(const secwire_layout *L, const uint32_t *sum, float *delta_sum,
                    double *counts, int64_t *confusion, secwire_sums *out);

#endif
