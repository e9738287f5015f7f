/* secagg.h — secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for
 * Privacy-Preserving Machine Learning", the semi-honest protocol of its Fig. 4) over
 * vectors of 32-bit words: the server learns Σ x_u mod 2^32 of the devices that survive, and
 * nothing about any one x_u, even when devices drop out after masking.
 *
 * Layer `fed` (core + libsodium). Pure protocol logic over message structs, no I/O: the
 * simulator calls it in process, the HTTP coordinator can carry the same messages later.
 * Nothing here prints; secrets are wiped when a party is freed. Randomness comes from
 * libsodium's CSPRNG (never from af_rng: a predictable mask is no mask). Full design,
 * threat model and costs: docs/privacy.md.
 *
 * One round, four phases (n devices with ids 1..n, threshold t):
 *   0 advertise keys   device → server: two X25519 public keys, signed with the device's
 *                      Ed25519 identity key; server → devices: the list U1 (≥ t).
 *   1 share keys       device → server: for every other v in U1, Shamir shares (t of |U1|)
 *                      of its mask secret key s_u and of its self-mask seed b_u, encrypted
 *                      with XChaCha20-Poly1305 under a key from X25519(c_u, c_v);
 *                      server → each device: the shares addressed to it (senders = U2 ≥ t).
 *   2 masked input     y_u = x_u + PRG(b_u) + Σ_{v∈U2, v>u} PRG(s_uv) − Σ_{v∈U2, v<u} PRG(s_uv)
 *                      (mod 2^32, s_uv from X25519(s_u, s_v), PRG = ChaCha20);
 *                      server: U3 = devices whose y arrived (≥ t, else the round is abandoned).
 *   3 unmask           server → devices: U3; each device reveals, for every v in U2, the share
 *                      of b_v if v ∈ U3, of s_v if v ∉ U3 — never both; server: with ≥ t
 *                      answers it rebuilds b_v (survivors) and s_v (dropped), removes the
 *                      masks, and holds Σ_{u∈U3} x_u.
 * The round id enters every signature and every AEAD's associated data, so a message or a
 * share from another round, or altered on the way, fails to verify (AF_EAUTH) and the round
 * continues without its sender.
 *
 *   secagg_server *srv; secagg_client *dev[n];          // see tests/fed/test_secagg.c
 *   secagg_advertise a;  secagg_client_advertise(dev[i], &a);  secagg_server_add_advertise(srv, &a);
 *   secagg_server_end_advertise(srv, &list, &nl);
 *   secagg_client_share_keys(dev[i], list, nl, &sk);    secagg_server_add_share_keys(srv, sk);
 *   secagg_server_end_share_keys(srv);
 *   secagg_server_shares_for(srv, id, &in, &nin);       secagg_client_receive_shares(dev[i], in, nin);
 *   secagg_client_masked_input(dev[i], x, y, &mi);       secagg_server_add_masked_input(srv, mi);
 *   secagg_server_end_masked_input(srv, &u3, &n3);
 *   secagg_client_unmask(dev[i], u3, n3, &um);          secagg_server_add_unmask(srv, um);
 *   secagg_server_finish(srv, sum);                     // sum[len] = Σ_{u∈U3} x_u mod 2^32
 */
#ifndef AF_FED_SECAGG_H
#define AF_FED_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#define SECAGG_MAX_DEVICES 5000      /* ids 1..n, n ≤ this (server memory grows as n²) */
#define SECAGG_KEY_BYTES 32          /* X25519 keys, seeds, commitments */
#define SECAGG_SIGN_PK_BYTES 32      /* Ed25519 identity public key */
#define SECAGG_SIGN_SK_BYTES 64      /* Ed25519 identity secret key (libsodium layout) */
#define SECAGG_SIG_BYTES 64
#define SECAGG_NONCE_BYTES 24
#define SECAGG_CHUNKS 5              /* a 32-byte secret = 5 field elements of ≤ 56 bits */
#define SECAGG_SHARE_PT_BYTES (8 + 2 * 8 * SECAGG_CHUNKS)   /* from, to, two shares: 88 */
#define SECAGG_SHARE_CT_BYTES (SECAGG_SHARE_PT_BYTES + 16)  /* + Poly1305 tag: 104 */

/* ---- quantisation: floats ↔ Z_2^32 ------------------------------------------------------
 * A value is clamped to [−range, range] and rounded to the nearest multiple of 1/scale:
 *   k = round(clamp(x)·scale) ∈ [−B, B],  B = floor((2^31 − 1) / n_max),  scale = B / range,
 * stored as k mod 2^32 (two's complement). A sum of at most n_max such words lies in
 * [−n_max·B, n_max·B] ⊂ [−(2^31 − 1), 2^31 − 1], so it never wraps and reads back exactly as
 * an int32. Error: ≤ 1/(2·scale) = range/(2B) per value and device, so ≤ m·range/(2B) for a
 * sum of m ≤ n_max values (+ the float rounding of the result, relative 2^−24). Example:
 * n_max = 100, range = 1 → B = 21,474,836, error ≤ 2.3e−8 per value, ≤ 2.3e−6 on the sum. */
typedef struct secagg_quant {
    double range;   /* values are clamped to [−range, range] */
    double scale;   /* B / range */
    uint32_t bound; /* B */
    uint32_t n_max; /* most summands */
} secagg_quant;

/* Fills *q for values in [−range, range] (range > 0, finite) and sums of at most n_max
 * (1 ≤ n_max ≤ 2^31 − 1) devices. Returns 0, or AF_ERANGE with *q unchanged. */
int secagg_quant_init(secagg_quant *q, double range, uint32_t n_max);

/* out[i] = round(clamp(x[i])·scale) mod 2^32 for i < n. n_clamped (may be NULL) gets the
 * number of values outside [−range, range] (clamped: that is a bias, not rounding).
 * Returns 0, or AF_EINVAL for a NaN/Inf element (message gives the index; out unchanged). */
int secagg_quantize(const secagg_quant *q, const float *x, size_t n, uint32_t *out,
                    size_t *n_clamped);

/* out[i] = (int32)sum[i] / scale: reads back a sum of at most n_max quantised vectors. */
void secagg_dequantize(const secagg_quant *q, const uint32_t *sum, size_t n, float *out);

/* ---- Shamir t-of-n sharing over GF(2^61 − 1) --------------------------------------------
 * A 32-byte secret is cut into 5 chunks (4 of 7 bytes, 1 of 4 bytes, little-endian), each a
 * field element below 2^56; each chunk gets its own random polynomial of degree t − 1 with
 * the chunk as constant term. A share is the polynomials' values at x (a device id ≠ 0). */
typedef struct secagg_share {
    uint32_t x;
    uint64_t y[SECAGG_CHUNKS];
} secagg_share;

/* Shares `secret` among xs[0..n) (distinct, nonzero) so that any t of them (1 ≤ t ≤ n)
 * rebuild it; out[i] is the share at xs[i]. Coefficients from randombytes_buf.
 * Returns 0, AF_EINVAL (t, n, a zero or repeated x) or AF_ESTATE (libsodium failed). */
int secagg_shamir_split(const uint8_t secret[32], uint32_t t, const uint32_t *xs, size_t n,
                        secagg_share *out);

/* Lagrange interpolation at 0 of k ≥ 1 shares (distinct nonzero x). With at least t shares
 * of one sharing it returns that secret. With fewer, the interpolated chunks are uniformly
 * random field elements: almost always outside the secret's range, reported as AF_EFORMAT
 * ("do not interpolate to a secret"); otherwise a wrong secret. Returns 0, AF_EINVAL or
 * AF_EFORMAT; secret unchanged on error. */
int secagg_shamir_combine(const secagg_share *shares, size_t k, uint8_t secret[32]);

/* ---- messages ----------------------------------------------------------------------------
 * Fixed-size fields, ids 1..n. Arrays inside a message a party produced are owned by that
 * party and stay valid until its next call or its free (don't free them). */

/* Phase 0, device → server (and the server's list back to every device). */
typedef struct secagg_advertise {
    uint64_t round_id;
    uint32_t id;
    uint8_t c_pk[SECAGG_KEY_BYTES]; /* X25519 key for the pairwise share channel */
    uint8_t s_pk[SECAGG_KEY_BYTES]; /* X25519 key for the pairwise masks */
    uint8_t sig[SECAGG_SIG_BYTES];  /* see below */
} secagg_advertise;
/* Every signature is Ed25519 (identity key) over a BLAKE2b-512 digest of
 *   domain string with its NUL ‖ round_id (LE64) ‖ id (LE32) ‖ the fields, little-endian;
 * for an advertisement: "artificien/secagg/advertise/v1" ‖ round ‖ id ‖ c_pk ‖ s_pk. The
 * other messages use ".../share-keys/v1" (b_commit, n_shares, then from, to, nonce, ct of
 * each share), ".../masked-input/v1" (len as LE64, the words) and ".../unmask/v1"
 * (n_reveals, then owner, kind, the 5 share words of each). */

/* One encrypted share pair from `from` to `to`: AEAD(from ‖ to ‖ share of s_from ‖ share of
 * b_from), associated data = domain ‖ round ‖ from ‖ to, key from X25519(c_from, c_to). */
typedef struct secagg_enc_share {
    uint32_t from, to;
    uint8_t nonce[SECAGG_NONCE_BYTES];
    uint8_t ct[SECAGG_SHARE_CT_BYTES];
} secagg_enc_share;

/* Phase 1, device → server: one encrypted share for every other member of U1. */
typedef struct secagg_share_keys {
    uint64_t round_id;
    uint32_t id;
    uint32_t n_shares;
    const secagg_enc_share *shares;
    uint8_t b_commit[SECAGG_KEY_BYTES]; /* BLAKE2b(domain ‖ round ‖ id ‖ b): checks b's rebuild */
    uint8_t sig[SECAGG_SIG_BYTES];      /* over all of the above */
} secagg_share_keys;

/* Phase 2, device → server. */
typedef struct secagg_masked_input {
    uint64_t round_id;
    uint32_t id;
    size_t len;
    const uint32_t *y;              /* len words */
    uint8_t sig[SECAGG_SIG_BYTES];  /* over domain ‖ round ‖ id ‖ len ‖ y (little-endian) */
} secagg_masked_input;

/* Phase 3, device → server: one revealed share per member v of U2 it holds a share of. */
enum { SECAGG_REVEAL_B = 0, SECAGG_REVEAL_SK = 1 };
typedef struct secagg_reveal {
    uint32_t owner;              /* v, whose secret this is a share of */
    uint32_t kind;               /* SECAGG_REVEAL_B (v survived) or SECAGG_REVEAL_SK (v dropped) */
    uint64_t y[SECAGG_CHUNKS];   /* the share at x = the revealing device's id */
} secagg_reveal;

typedef struct secagg_unmask {
    uint64_t round_id;
    uint32_t id;
    uint32_t n_reveals;
    const secagg_reveal *reveals;
    uint8_t sig[SECAGG_SIG_BYTES];
} secagg_unmask;

/* Round parameters, the same on the server and on every device of the round. */
typedef struct secagg_cfg {
    uint64_t round_id; /* unique per round of a population: bound into every signature/AEAD */
    uint32_t n;        /* devices invited, ids 1..n, 1 ≤ n ≤ SECAGG_MAX_DEVICES */
    uint32_t t;        /* threshold: n/2 < t ≤ n (a majority, see docs/privacy.md) */
    size_t len;        /* words per input vector, ≥ 1 */
} secagg_cfg;

/* Checks cfg. Returns 0, or AF_EINVAL/AF_ERANGE naming the field. */
int secagg_cfg_check(const secagg_cfg *cfg);

/* A device identity: an Ed25519 key pair (the server learns pk when the device enrols).
 * Returns 0, or AF_ESTATE if libsodium cannot start. */
int secagg_identity_keypair(uint8_t pk[SECAGG_SIGN_PK_BYTES], uint8_t sk[SECAGG_SIGN_SK_BYTES]);

/* ---- device side ------------------------------------------------------------------------- */
typedef struct secagg_client secagg_client;

/* A device `id` (1..cfg->n) taking part in one round, signing with its identity key
 * sign_sk (copied). Generates its two X25519 key pairs. Memory O(n), about 450 bytes per
 * device of the round; nothing len-sized: the caller provides the masked-input buffer. Returns 0, AF_EINVAL/AF_ERANGE
 * (cfg or id), AF_ENOMEM or AF_ESTATE (libsodium). Free with secagg_client_free. */
int secagg_client_create(const secagg_cfg *cfg, uint32_t id, const uint8_t sign_sk[SECAGG_SIGN_SK_BYTES],
                         secagg_client **out);
/* Wipes the secrets and frees; NULL is fine. */
void secagg_client_free(secagg_client *c);
uint32_t secagg_client_id(const secagg_client *c);

/* Phase 0: fills *out (signed). Only once, first. Returns 0 or AF_ESTATE (wrong phase). */
int secagg_client_advertise(secagg_client *c, secagg_advertise *out);

/* Phase 1: takes the server's list U1 (n_list entries), checks it (this round, ids in range
 * and distinct, this device present with its own keys, all public keys distinct and
 * usable, at least t entries), draws b_u, shares s_u and b_u t-of-|U1| and encrypts one pair
 * of shares per other member. *out points into c. Returns 0; AF_ESTATE (wrong phase, fewer
 * than t), AF_EAUTH (a key that cannot be used, duplicated keys, this device's entry
 * altered) or AF_EINVAL (malformed list); on error c stays in phase 1 and reveals nothing.
 * Costs 2·(|U1| − 1) X25519 (channel keys and mask seeds, both kept until unmasking). */
int secagg_client_share_keys(secagg_client *c, const secagg_advertise *list, size_t n_list,
                             const secagg_share_keys **out);

/* Phase 2a: the shares the server forwards to this device (one from each other member of
 * U2). Each is decrypted and checked (addressee, sender in U1, no repeat, AEAD with this
 * round's associated data). The senders, with this device, form U2 — every sender stays in
 * U2 even if its share fails, because the other devices mask with it too. Returns 0 if every
 * share verified; AF_EAUTH if some did not (they are ignored, the message names the first,
 * and the device may go on: it only lacks those shares at unmasking); AF_ESTATE (wrong phase,
 * |U2| < t). Call once. */
int secagg_client_receive_shares(secagg_client *c, const secagg_enc_share *in, size_t n_in);

/* Phase 2b: y[0..len) = x + PRG(b_u) ± PRG(s_uv) (v ∈ U2 \ {u}); *out points at y (caller's
 * buffer, len words, may alias x) and a signature. Returns 0 or AF_ESTATE (wrong phase). */
int secagg_client_masked_input(secagg_client *c, const uint32_t *x, uint32_t *y,
                               const secagg_masked_input **out);

/* Phase 3: given the server's survivor list U3, reveals for every v ∈ U2 whose share this
 * device holds: b_v's share if v ∈ U3, s_v's share otherwise. Refuses — revealing nothing —
 * a list with fewer than t ids, an id not in U2, a repeat, or one without this device
 * (AF_ESTATE / AF_EINVAL). Only once; the device's secrets are wiped after. */
int secagg_client_unmask(secagg_client *c, const uint32_t *survivors, size_t n_survivors,
                         const secagg_unmask **out);

/* Shares that failed to verify in phase 2a. */
uint32_t secagg_client_bad_shares(const secagg_client *c);

/* ---- server side ------------------------------------------------------------------------- *
 * Not thread-safe: serialise calls on one server (the simulator holds a mutex around add_*).
 * Each add_* either accepts the whole message or refuses it and changes nothing:
 *   AF_EAUTH   the signature does not verify (tampered, other round, replayed from another
 *              round or phase, unknown identity), a public key is unusable;
 *   AF_ESTATE  wrong phase, a second message from the same device, sender not in the set
 *              this phase expects;
 *   AF_EINVAL  malformed (id out of range, wrong length, missing or repeated share).
 * The message names the device. A refused device is simply not in the next set.
 * Once a set falls below t the round is abandoned: every later call returns AF_ESTATE and
 * nothing about the inputs is ever computed. */
typedef struct secagg_server secagg_server;

/* Returns 0, AF_EINVAL/AF_ERANGE (cfg) or AF_ENOMEM. Memory O(n² · 136 bytes) for the
 * shares in transit plus O(len) for the running masked sum. */
int secagg_server_create(const secagg_cfg *cfg, secagg_server **out);
void secagg_server_free(secagg_server *s);

/* Enrols device id's identity public key (before phase 0). AF_EINVAL for an id out of range. */
int secagg_server_register(secagg_server *s, uint32_t id, const uint8_t pk[SECAGG_SIGN_PK_BYTES]);

int secagg_server_add_advertise(secagg_server *s, const secagg_advertise *m);
/* Closes phase 0: *list (owned by s) = the accepted advertisements in id order (U1).
 * AF_ESTATE (and the round is abandoned) if fewer than t. */
int secagg_server_end_advertise(secagg_server *s, const secagg_advertise **list, size_t *n);

int secagg_server_add_share_keys(secagg_server *s, const secagg_share_keys *m);
/* Closes phase 1 (U2 = accepted senders). AF_ESTATE (abandoned) if fewer than t. */
int secagg_server_end_share_keys(secagg_server *s);
/* The shares to forward to device id ∈ U2: *in (owned by s, valid until the next call of
 * this function) gets the |U2| − 1 shares addressed to it. AF_ESTATE if id ∉ U2 or the phase
 * is wrong. */
int secagg_server_shares_for(secagg_server *s, uint32_t id, const secagg_enc_share **in, size_t *n);

/* Adds y into the running sum (mod 2^32) after checking it. */
int secagg_server_add_masked_input(secagg_server *s, const secagg_masked_input *m);
/* Closes phase 2: *u3 (owned by s) = ids whose masked input was accepted, ascending.
 * AF_ESTATE (abandoned, nothing revealed) if fewer than t. */
int secagg_server_end_masked_input(secagg_server *s, const uint32_t **u3, size_t *n);

/* Accepts one device's reveals: the sender must be in U3, every reveal's owner in U2 and of
 * the kind U3 implies (a share of s_v for a survivor v is a protocol violation: AF_EAUTH). */
int secagg_server_add_unmask(secagg_server *s, const secagg_unmask *m);
/* Rebuilds b_v (v ∈ U3) and s_v (v ∈ U2 \ U3) from t shares each, checks them against b_v's
 * commitment and s_v's public key, removes every mask and writes sum[0..len) = Σ_{u∈U3} x_u
 * mod 2^32. Returns 0; AF_ESTATE (fewer than t answers, or fewer than t shares of a secret:
 * abandoned); AF_EAUTH (a rebuilt secret does not match: a wrong share). */
int secagg_server_finish(secagg_server *s, uint32_t *sum);

/* Sizes of U1, U2, U3 and the unmask answers so far (for reports). */
void secagg_server_counts(const secagg_server *s, uint32_t *u1, uint32_t *u2, uint32_t *u3,
                          uint32_t *u5);
/* The running masked sum (len words, owned by s): what the server holds before unmasking. */
const uint32_t *secagg_server_masked_sum(const secagg_server *s);

#endif
