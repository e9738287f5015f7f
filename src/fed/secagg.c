/* secagg.c — secure aggregation (Bonawitz et al. 2017), see secagg.h and docs/privacy.md.
 *
 * Layer `fed` (core + libsodium). libsodium provides X25519 (crypto_scalarmult), ChaCha20
 * (crypto_stream_chacha20_xor_ic as a PRG), XChaCha20-Poly1305, BLAKE2b, Ed25519 and the
 * CSPRNG; Shamir sharing over GF(2^61 − 1) is written here (libsodium has none). Masks are
 * streamed in 1 KiB chunks: nothing len-sized is allocated per device. Never prints. */
#include "fed/secagg.h"

#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

/* ---- small helpers ----------------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static int sodium_ready(void)
{
    if (sodium_init() < 0)
        return af_seterr(AF_ESTATE, "secagg: libsodium failed to initialise");
    return 0;
}

/* Hash state opened with a domain string, the round and a device id: every digest, key and
 * seed below is bound to its purpose and round. */
static void h_open(crypto_generichash_state *h, size_t outlen, const char *domain, uint64_t round,
                   uint32_t id)
{
    uint8_t b[12];
    crypto_generichash_init(h, NULL, 0, outlen);
    crypto_generichash_update(h, (const uint8_t *)domain, strlen(domain) + 1);
    put_u64(b, round);
    put_u32(b + 8, id);
    crypto_generichash_update(h, b, sizeof b);
}

static void h_u32(crypto_generichash_state *h, uint32_t v)
{
    uint8_t b[4];
    put_u32(b, v);
    crypto_generichash_update(h, b, 4);
}

/* Key for the pair (u, v): BLAKE2b(domain ‖ round ‖ X25519(sk, pk_peer) ‖ pk_lo ‖ pk_hi),
 * symmetric in u and v. Fails (AF_EAUTH) on a low-order peer key (all-zero shared point). */
static int pair_key(uint8_t key[32], const char *domain, uint64_t round, const uint8_t sk[32],
                    const uint8_t my_pk[32], const uint8_t peer_pk[32], uint32_t peer)
{
    uint8_t q[32];
    if (crypto_scalarmult(q, sk, peer_pk) != 0)
        return af_seterr(AF_EAUTH, "secagg: device %u's public key is not usable (low-order point)", peer);
    const uint8_t *lo = my_pk, *hi = peer_pk;
    if (memcmp(lo, hi, 32) > 0) {
        lo = peer_pk;
        hi = my_pk;
    }
    crypto_generichash_state h;
    h_open(&h, 32, domain, round, 0);
    crypto_generichash_update(&h, q, 32);
    crypto_generichash_update(&h, lo, 32);
    crypto_generichash_update(&h, hi, 32);
    crypto_generichash_final(&h, key, 32);
    sodium_memzero(q, sizeof q);
    return 0;
}

/* y[i] += sign·PRG(key)[i] mod 2^32, PRG = the ChaCha20 keystream (zero nonce: every key is
 * used for one stream only) read as little-endian 32-bit words, generated 1 KiB at a time. */
static void prg_apply(uint32_t *y, size_t len, const uint8_t key[32], int sign)
{
    static const uint8_t zeros[1024];
    static const uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
    uint8_t buf[1024];
    for (size_t off = 0; off < len; off += 256) {
        size_t k = len - off < 256 ? len - off : 256;
        /* 256 words = 1024 bytes = 16 ChaCha20 blocks: the block counter of word off is off/16 */
        crypto_stream_chacha20_xor_ic(buf, zeros, k * 4, nonce, (uint64_t)(off / 16), key);
        if (sign > 0)
            for (size_t i = 0; i < k; i++)
                y[off + i] += get_u32(buf + 4 * i);
        else
            for (size_t i = 0; i < k; i++)
                y[off + i] -= get_u32(buf + 4 * i);
    }
    sodium_memzero(buf, sizeof buf);
}

/* ---- quantisation ------------------------------------------------------------------------ */

int secagg_quant_init(secagg_quant *q, double range, uint32_t n_max)
{
    if (!(range > 0.0 && isfinite(range)))
        return af_seterr(AF_ERANGE, "secagg quantiser: range must be > 0 and finite, got %g", range);
    if (n_max < 1 || n_max > 2147483647u)
        return af_seterr(AF_ERANGE, "secagg quantiser: n_max must be in [1, 2^31 - 1], got %u", n_max);
    q->range = range;
    q->n_max = n_max;
    q->bound = 2147483647u / n_max; /* n_max·B ≤ 2^31 − 1: the sum never wraps */
    q->scale = (double)q->bound / range;
    return 0;
}

int secagg_quantize(const secagg_quant *q, const float *x, size_t n, uint32_t *out,
                    size_t *n_clamped)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return af_seterr(AF_EINVAL, "secagg quantiser: element %zu is %g (NaN/Inf cannot be aggregated)",
                             i, (double)x[i]);
    size_t clamped = 0;
    const double r = q->range, B = (double)q->bound;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        if (v > r || v < -r) {
            clamped++;
            v = v > r ? r : -r;
        }
        double k = nearbyint(v * q->scale); /* |v·scale| ≤ B exactly in double, B integer */
        if (k > B)
            k = B;
        if (k < -B)
            k = -B;
        out[i] = (uint32_t)(int32_t)k; /* two's complement: k mod 2^32 */
    }
    if (n_clamped)
        *n_clamped = clamped;
    return 0;
}

void secagg_dequantize(const secagg_quant *q, const uint32_t *sum, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++) {
        int32_t k = (int32_t)sum[i]; /* |Σ| ≤ 2^31 − 1: the signed reading is the integer sum */
        out[i] = (float)((double)k / q->scale);
    }
}

/* ---- GF(2^61 − 1) and Shamir ------------------------------------------------------------- */

#define FP ((uint64_t)0x1FFFFFFFFFFFFFFFull) /* the Mersenne prime 2^61 − 1 */
__extension__ typedef unsigned __int128 u128;

static uint64_t fp_red(u128 x) /* x < 2^122 → x mod p, using 2^61 ≡ 1 */
{
    uint64_t r = ((uint64_t)x & FP) + (uint64_t)(x >> 61);
    r = (r & FP) + (r >> 61);
    return r >= FP ? r - FP : r;
}
static uint64_t fp_mul(uint64_t a, uint64_t b) { return fp_red((u128)a * b); }
static uint64_t fp_add(uint64_t a, uint64_t b)
{
    uint64_t r = a + b;
    return r >= FP ? r - FP : r;
}
static uint64_t fp_sub(uint64_t a, uint64_t b) { return a >= b ? a - b : a + FP - b; }
static uint64_t fp_pow(uint64_t a, uint64_t e)
{
    uint64_t r = 1;
    while (e) {
        if (e & 1)
            r = fp_mul(r, a);
        a = fp_mul(a, a);
        e >>= 1;
    }
    return r;
}
static uint64_t fp_inv(uint64_t a) { return fp_pow(a, FP - 2); } /* Fermat: a^(p−2) = a^−1 */

static uint64_t fp_random(void)
{
    uint64_t v;
    do { /* uniform in [0, p): 61 random bits, reject the one value p itself */
        randombytes_buf(&v, sizeof v);
        v &= FP;
    } while (v == FP);
    return v;
}

/* chunk k of a 32-byte secret: bytes [7k, 7k+7) (the last chunk has 4) little-endian */
static void secret_to_chunks(const uint8_t s[32], uint64_t c[SECAGG_CHUNKS])
{
    for (int k = 0; k < SECAGG_CHUNKS; k++) {
        c[k] = 0;
        for (int j = 0; j < 7 && 7 * k + j < 32; j++)
            c[k] |= (uint64_t)s[7 * k + j] << (8 * j);
    }
}

static int chunks_to_secret(const uint64_t c[SECAGG_CHUNKS], uint8_t s[32])
{
    for (int k = 0; k < SECAGG_CHUNKS; k++)
        if (c[k] >> (k == SECAGG_CHUNKS - 1 ? 32 : 56))
            return af_seterr(AF_EFORMAT, "secagg: shares do not interpolate to a secret "
                                         "(fewer than t shares, or a wrong share)");
    for (int k = 0; k < SECAGG_CHUNKS; k++)
        for (int j = 0; j < 7 && 7 * k + j < 32; j++)
            s[7 * k + j] = (uint8_t)(c[k] >> (8 * j));
    return 0;
}

int secagg_shamir_split(const uint8_t secret[32], uint32_t t, const uint32_t *xs, size_t n,
                        secagg_share *out)
{
    if (t < 1 || n < t || n > SECAGG_MAX_DEVICES)
        return af_seterr(AF_EINVAL, "shamir: need 1 <= t <= n <= %d, got t=%u n=%zu", SECAGG_MAX_DEVICES, t, n);
    for (size_t i = 0; i < n; i++) {
        if (xs[i] == 0)
            return af_seterr(AF_EINVAL, "shamir: x[%zu] is 0 (x = 0 is the secret itself)", i);
        for (size_t j = 0; j < i; j++)
            if (xs[j] == xs[i])
                return af_seterr(AF_EINVAL, "shamir: x = %u appears twice", xs[i]);
    }
    int rc = sodium_ready();
    if (rc)
        return rc;
    uint64_t c0[SECAGG_CHUNKS];
    secret_to_chunks(secret, c0);
    for (size_t i = 0; i < n; i++) {
        out[i].x = xs[i];
        for (int k = 0; k < SECAGG_CHUNKS; k++)
            out[i].y[k] = c0[k];
    }
    /* f_k(x) = c0_k + a_k1·x + … + a_k,t−1·x^(t−1): add one random coefficient at a time,
     * keeping x^j per share, so no coefficient array is needed */
    uint64_t *xp = malloc(sizeof(uint64_t) * n);
    if (!xp)
        return af_seterr(AF_ENOMEM, "shamir: out of memory");
    for (size_t i = 0; i < n; i++)
        xp[i] = 1;
    for (uint32_t j = 1; j < t; j++) {
        uint64_t a[SECAGG_CHUNKS];
        for (int k = 0; k < SECAGG_CHUNKS; k++)
            a[k] = fp_random();
        for (size_t i = 0; i < n; i++) {
            xp[i] = fp_mul(xp[i], xs[i]);
            for (int k = 0; k < SECAGG_CHUNKS; k++)
                out[i].y[k] = fp_add(out[i].y[k], fp_mul(a[k], xp[i]));
        }
        sodium_memzero(a, sizeof a);
    }
    sodium_memzero(c0, sizeof c0);
    free(xp);
    return 0;
}

/* Lagrange basis at 0 for the points xs[0..k): λ_i = Π_{j≠i} x_j / (x_j − x_i). */
static int lagrange0(const uint32_t *xs, size_t k, uint64_t *lambda)
{
    for (size_t i = 0; i < k; i++) {
        uint64_t num = 1, den = 1;
        for (size_t j = 0; j < k; j++) {
            if (j == i)
                continue;
            if (xs[j] == xs[i])
                return af_seterr(AF_EINVAL, "shamir: two shares at x = %u", xs[i]);
            num = fp_mul(num, xs[j]);
            den = fp_mul(den, fp_sub(xs[j], xs[i]));
        }
        lambda[i] = fp_mul(num, fp_inv(den));
    }
    return 0;
}

int secagg_shamir_combine(const secagg_share *shares, size_t k, uint8_t secret[32])
{
    if (k < 1 || k > SECAGG_MAX_DEVICES)
        return af_seterr(AF_EINVAL, "shamir: need 1 to %d shares, got %zu", SECAGG_MAX_DEVICES, k);
    uint32_t *xs = malloc(sizeof(uint32_t) * k);
    uint64_t *lambda = malloc(sizeof(uint64_t) * k);
    int rc = 0;
    if (!xs || !lambda) {
        rc = af_seterr(AF_ENOMEM, "shamir: out of memory");
        goto done;
    }
    for (size_t i = 0; i < k; i++) {
        xs[i] = shares[i].x;
        if (!xs[i]) {
            rc = af_seterr(AF_EINVAL, "shamir: share %zu is at x = 0", i);
            goto done;
        }
        for (int ch = 0; ch < SECAGG_CHUNKS; ch++)
            if (shares[i].y[ch] >= FP) {
                rc = af_seterr(AF_EINVAL, "shamir: share %zu has a value outside GF(2^61 - 1)", i);
                goto done;
            }
    }
    if ((rc = lagrange0(xs, k, lambda)))
        goto done;
    uint64_t c[SECAGG_CHUNKS];
    for (int ch = 0; ch < SECAGG_CHUNKS; ch++) {
        uint64_t acc = 0;
        for (size_t i = 0; i < k; i++)
            acc = fp_add(acc, fp_mul(lambda[i], shares[i].y[ch]));
        c[ch] = acc;
    }
    rc = chunks_to_secret(c, secret);
    sodium_memzero(c, sizeof c);
done:
    free(xs);
    free(lambda);
    return rc;
}

/* ---- configuration and identities -------------------------------------------------------- */

int secagg_cfg_check(const secagg_cfg *cfg)
{
    if (cfg->n < 1 || cfg->n > SECAGG_MAX_DEVICES)
        return af_seterr(AF_ERANGE, "secagg: n must be in [1, %d] devices, got %u", SECAGG_MAX_DEVICES, cfg->n);
    if (!(2 * (uint64_t)cfg->t > cfg->n && cfg->t <= cfg->n))
        return af_seterr(AF_ERANGE, "secagg: threshold t must satisfy n/2 < t <= n (n = %u), got %u",
                         cfg->n, cfg->t);
    if (cfg->len < 1 || (uint64_t)cfg->len > ((uint64_t)1 << 34))
        return af_seterr(AF_ERANGE, "secagg: vector length must be in [1, 2^34] words, got %zu", cfg->len);
    return 0;
}

int secagg_identity_keypair(uint8_t pk[SECAGG_SIGN_PK_BYTES], uint8_t sk[SECAGG_SIGN_SK_BYTES])
{
    int rc = sodium_ready();
    if (rc)
        return rc;
    crypto_sign_keypair(pk, sk);
    return 0;
}

/* Digests that signatures cover (BLAKE2b-512, then Ed25519 over the digest). */
static void digest_advertise(const secagg_advertise *m, uint8_t d[64])
{
    crypto_generichash_state h;
    h_open(&h, 64, "artificien/secagg/advertise/v1", m->round_id, m->id);
    crypto_generichash_update(&h, m->c_pk, 32);
    crypto_generichash_update(&h, m->s_pk, 32);
    crypto_generichash_final(&h, d, 64);
}

static void digest_share_keys(const secagg_share_keys *m, uint8_t d[64])
{
    crypto_generichash_state h;
    h_open(&h, 64, "artificien/secagg/share-keys/v1", m->round_id, m->id);
    crypto_generichash_update(&h, m->b_commit, 32);
    h_u32(&h, m->n_shares);
    for (uint32_t i = 0; i < m->n_shares; i++) {
        const secagg_enc_share *e = &m->shares[i];
        h_u32(&h, e->from);
        h_u32(&h, e->to);
        crypto_generichash_update(&h, e->nonce, sizeof e->nonce);
        crypto_generichash_update(&h, e->ct, sizeof e->ct);
    }
    crypto_generichash_final(&h, d, 64);
}

static void digest_masked_input(const secagg_masked_input *m, uint8_t d[64])
{
    crypto_generichash_state h;
    uint8_t buf[1024];
    h_open(&h, 64, "artificien/secagg/masked-input/v1", m->round_id, m->id);
    put_u64(buf, (uint64_t)m->len);
    crypto_generichash_update(&h, buf, 8);
    for (size_t off = 0; off < m->len; off += 256) {
        size_t k = m->len - off < 256 ? m->len - off : 256;
        for (size_t i = 0; i < k; i++)
            put_u32(buf + 4 * i, m->y[off + i]);
        crypto_generichash_update(&h, buf, 4 * k);
    }
    crypto_generichash_final(&h, d, 64);
}

static void digest_unmask(const secagg_unmask *m, uint8_t d[64])
{
    crypto_generichash_state h;
    uint8_t b[8];
    h_open(&h, 64, "artificien/secagg/unmask/v1", m->round_id, m->id);
    h_u32(&h, m->n_reveals);
    for (uint32_t i = 0; i < m->n_reveals; i++) {
        h_u32(&h, m->reveals[i].owner);
        h_u32(&h, m->reveals[i].kind);
        for (int k = 0; k < SECAGG_CHUNKS; k++) {
            put_u64(b, m->reveals[i].y[k]);
            crypto_generichash_update(&h, b, 8);
        }
    }
    crypto_generichash_final(&h, d, 64);
}

static void b_commitment(uint64_t round, uint32_t id, const uint8_t b[32], uint8_t out[32])
{
    crypto_generichash_state h;
    h_open(&h, 32, "artificien/secagg/b-commit/v1", round, id);
    crypto_generichash_update(&h, b, 32);
    crypto_generichash_final(&h, out, 32);
}

static void share_ad(uint64_t round, uint32_t from, uint32_t to, uint8_t ad[48])
{
    static const char dom[32] = "artificien/secagg/share/v1";
    memcpy(ad, dom, 32);
    put_u64(ad + 32, round);
    put_u32(ad + 40, from);
    put_u32(ad + 44, to);
}

/* ---- device ------------------------------------------------------------------------------ */

enum { C_ADVERTISE, C_SHARE, C_RECEIVE, C_MASK, C_UNMASK, C_DONE };

struct secagg_client {
    secagg_cfg cfg;
    uint32_t id;
    int phase;
    uint8_t sign_sk[SECAGG_SIGN_SK_BYTES];
    uint8_t c_pk[32], c_sk[32], s_pk[32], s_sk[32], b[32];
    /* per peer, indexed by id 0..n (0 unused) */
    uint8_t *in_u1, *in_u2, *have;
    uint8_t (*peer_c_pk)[32], (*peer_s_pk)[32];
    uint8_t (*chan)[32], (*seed)[32]; /* AEAD key and mask seed shared with each peer */
    uint64_t (*sk_share)[SECAGG_CHUNKS], (*b_share)[SECAGG_CHUNKS];
    secagg_enc_share *out_shares;
    secagg_share *tmp_shares;
    uint32_t *tmp_xs;
    secagg_reveal *reveals;
    uint32_t n_bad;
    secagg_share_keys m_share;
    secagg_masked_input m_input;
    secagg_unmask m_unmask;
};

int secagg_client_create(const secagg_cfg *cfg, uint32_t id, const uint8_t sign_sk[SECAGG_SIGN_SK_BYTES],
                         secagg_client **out)
{
    *out = NULL;
    int rc = secagg_cfg_check(cfg);
    if (rc)
        return rc;
    if (id < 1 || id > cfg->n)
        return af_seterr(AF_EINVAL, "secagg: device id %u outside 1..%u", id, cfg->n);
    if ((rc = sodium_ready()))
        return rc;
    secagg_client *c = calloc(1, sizeof *c);
    if (!c)
        return af_seterr(AF_ENOMEM, "secagg: out of memory");
    c->cfg = *cfg;
    c->id = id;
    const size_t n1 = (size_t)cfg->n + 1;
    c->in_u1 = calloc(n1, 1);
    c->in_u2 = calloc(n1, 1);
    c->have = calloc(n1, 1);
    c->peer_c_pk = calloc(n1, 32);
    c->peer_s_pk = calloc(n1, 32);
    c->chan = calloc(n1, 32);
    c->seed = calloc(n1, 32);
    c->sk_share = calloc(n1, sizeof *c->sk_share);
    c->b_share = calloc(n1, sizeof *c->b_share);
    c->out_shares = calloc(n1, sizeof *c->out_shares);
    c->tmp_shares = calloc(n1, sizeof *c->tmp_shares);
    c->tmp_xs = calloc(n1, sizeof *c->tmp_xs);
    c->reveals = calloc(n1, sizeof *c->reveals);
    if (!c->in_u1 || !c->in_u2 || !c->have || !c->peer_c_pk || !c->peer_s_pk || !c->chan || !c->seed ||
        !c->sk_share || !c->b_share || !c->out_shares || !c->tmp_shares || !c->tmp_xs || !c->reveals) {
        secagg_client_free(c);
        return af_seterr(AF_ENOMEM, "secagg: out of memory for device %u", id);
    }
    memcpy(c->sign_sk, sign_sk, sizeof c->sign_sk);
    randombytes_buf(c->c_sk, 32);
    randombytes_buf(c->s_sk, 32);
    crypto_scalarmult_base(c->c_pk, c->c_sk);
    crypto_scalarmult_base(c->s_pk, c->s_sk);
    *out = c;
    return 0;
}

void secagg_client_free(secagg_client *c)
{
    if (!c)
        return;
    const size_t n1 = (size_t)c->cfg.n + 1;
    if (c->chan)
        sodium_memzero(c->chan, n1 * 32);
    if (c->seed)
        sodium_memzero(c->seed, n1 * 32);
    if (c->sk_share)
        sodium_memzero(c->sk_share, n1 * sizeof *c->sk_share);
    if (c->b_share)
        sodium_memzero(c->b_share, n1 * sizeof *c->b_share);
    if (c->tmp_shares)
        sodium_memzero(c->tmp_shares, n1 * sizeof *c->tmp_shares);
    free(c->in_u1);
    free(c->in_u2);
    free(c->have);
    free(c->peer_c_pk);
    free(c->peer_s_pk);
    free(c->chan);
    free(c->seed);
    free(c->sk_share);
    free(c->b_share);
    free(c->out_shares);
    free(c->tmp_shares);
    free(c->tmp_xs);
    free(c->reveals);
    sodium_memzero(c, sizeof *c);
    free(c);
}

uint32_t secagg_client_id(const secagg_client *c) { return c->id; }
uint32_t secagg_client_bad_shares(const secagg_client *c) { return c->n_bad; }

static int wrong_phase(const char *who, uint32_t id, const char *what)
{
    return af_seterr(AF_ESTATE, "secagg %s %u: %s out of order", who, id, what);
}

int secagg_client_advertise(secagg_client *c, secagg_advertise *out)
{
    if (c->phase != C_ADVERTISE)
        return wrong_phase("device", c->id, "advertise keys");
    memset(out, 0, sizeof *out);
    out->round_id = c->cfg.round_id;
    out->id = c->id;
    memcpy(out->c_pk, c->c_pk, 32);
    memcpy(out->s_pk, c->s_pk, 32);
    uint8_t d[64];
    digest_advertise(out, d);
    crypto_sign_detached(out->sig, NULL, d, sizeof d, c->sign_sk);
    c->phase = C_SHARE;
    return 0;
}

int secagg_client_share_keys(secagg_client *c, const secagg_advertise *list, size_t n_list,
                             const secagg_share_keys **out)
{
    if (c->phase != C_SHARE)
        return wrong_phase("device", c->id, "share keys");
    const uint32_t n = c->cfg.n, me = c->id;
    if (n_list < c->cfg.t || n_list > n)
        return af_seterr(AF_ESTATE, "secagg device %u: key list has %zu devices, need %u to %u",
                         me, n_list, c->cfg.t, n);
    memset(c->in_u1, 0, (size_t)n + 1);
    int rc = 0, found = 0;
    for (size_t i = 0; i < n_list; i++) {
        const secagg_advertise *a = &list[i];
        if (a->round_id != c->cfg.round_id) {
            rc = af_seterr(AF_EAUTH, "secagg device %u: key list entry %zu is for round %llu, not %llu",
                           me, i, (unsigned long long)a->round_id, (unsigned long long)c->cfg.round_id);
            goto fail;
        }
        if (a->id < 1 || a->id > n || c->in_u1[a->id]) {
            rc = af_seterr(AF_EINVAL, "secagg device %u: key list entry %zu has id %u (out of range or repeated)",
                           me, i, a->id);
            goto fail;
        }
        c->in_u1[a->id] = 1;
        memcpy(c->peer_c_pk[a->id], a->c_pk, 32);
        memcpy(c->peer_s_pk[a->id], a->s_pk, 32);
        if (a->id == me) {
            if (memcmp(a->c_pk, c->c_pk, 32) || memcmp(a->s_pk, c->s_pk, 32)) {
                rc = af_seterr(AF_EAUTH, "secagg device %u: the key list carries other keys under my id", me);
                goto fail;
            }
            found = 1;
        }
    }
    if (!found) {
        rc = af_seterr(AF_ESTATE, "secagg device %u: not in the key list", me);
        goto fail;
    }
    /* all 2·|U1| public keys distinct (Bonawitz et al.: else pairs could share masks) */
    for (size_t i = 0; i < n_list; i++)
        for (size_t j = 0; j < n_list; j++) {
            if ((i != j && (!memcmp(list[i].c_pk, list[j].c_pk, 32) || !memcmp(list[i].s_pk, list[j].s_pk, 32))) ||
                !memcmp(list[i].c_pk, list[j].s_pk, 32)) {
                rc = af_seterr(AF_EAUTH, "secagg device %u: devices %u and %u advertise the same public key",
                               me, list[i].id, list[j].id);
                goto fail;
            }
        }
    /* pair keys first: a low-order key refuses the list before anything is shared */
    for (size_t i = 0; i < n_list; i++) {
        uint32_t v = list[i].id;
        if (v != me && ((rc = pair_key(c->chan[v], "artificien/secagg/channel/v1", c->cfg.round_id, c->c_sk,
                                       c->c_pk, c->peer_c_pk[v], v)) ||
                        (rc = pair_key(c->seed[v], "artificien/secagg/mask/v1", c->cfg.round_id, c->s_sk,
                                       c->s_pk, c->peer_s_pk[v], v))))
            goto fail;
    }
    /* b_u and the shares of s_u and b_u at every member of U1 (this device included) */
    randombytes_buf(c->b, 32);
    size_t k = 0;
    for (uint32_t v = 1; v <= n; v++)
        if (c->in_u1[v])
            c->tmp_xs[k++] = v;
    if ((rc = secagg_shamir_split(c->s_sk, c->cfg.t, c->tmp_xs, k, c->tmp_shares)))
        goto fail;
    for (size_t i = 0; i < k; i++)
        memcpy(c->sk_share[c->tmp_xs[i]], c->tmp_shares[i].y, sizeof c->sk_share[0]);
    if ((rc = secagg_shamir_split(c->b, c->cfg.t, c->tmp_xs, k, c->tmp_shares)))
        goto fail;
    for (size_t i = 0; i < k; i++)
        memcpy(c->b_share[c->tmp_xs[i]], c->tmp_shares[i].y, sizeof c->b_share[0]);
    sodium_memzero(c->tmp_shares, k * sizeof *c->tmp_shares);
    uint32_t ns = 0;
    for (size_t i = 0; i < k; i++) {
        uint32_t v = c->tmp_xs[i];
        if (v == me)
            continue;
        secagg_enc_share *e = &c->out_shares[ns++];
        uint8_t pt[SECAGG_SHARE_PT_BYTES], ad[48];
        e->from = me;
        e->to = v;
        put_u32(pt, me);
        put_u32(pt + 4, v);
        for (int ch = 0; ch < SECAGG_CHUNKS; ch++) {
            put_u64(pt + 8 + 8 * ch, c->sk_share[v][ch]);
            put_u64(pt + 8 + 8 * SECAGG_CHUNKS + 8 * ch, c->b_share[v][ch]);
        }
        share_ad(c->cfg.round_id, me, v, ad);
        randombytes_buf(e->nonce, sizeof e->nonce);
        crypto_aead_xchacha20poly1305_ietf_encrypt(e->ct, NULL, pt, sizeof pt, ad, sizeof ad, NULL,
                                                   e->nonce, c->chan[v]);
        sodium_memzero(pt, sizeof pt);
    }
    /* the shares this device holds for the others are kept only for itself; it drops its
     * copies of the others' shares of its own secrets */
    for (size_t i = 0; i < k; i++)
        if (c->tmp_xs[i] != me) {
            sodium_memzero(c->sk_share[c->tmp_xs[i]], sizeof c->sk_share[0]);
            sodium_memzero(c->b_share[c->tmp_xs[i]], sizeof c->b_share[0]);
        }
    secagg_share_keys *m = &c->m_share;
    memset(m, 0, sizeof *m);
    m->round_id = c->cfg.round_id;
    m->id = me;
    m->n_shares = ns;
    m->shares = c->out_shares;
    b_commitment(c->cfg.round_id, me, c->b, m->b_commit);
    uint8_t d[64];
    digest_share_keys(m, d);
    crypto_sign_detached(m->sig, NULL, d, sizeof d, c->sign_sk);
    c->have[me] = 1; /* its own shares at x = me */
    c->phase = C_RECEIVE;
    *out = m;
    return 0;
fail:
    memset(c->in_u1, 0, (size_t)n + 1);
    return rc;
}

int secagg_client_receive_shares(secagg_client *c, const secagg_enc_share *in, size_t n_in)
{
    if (c->phase != C_RECEIVE)
        return wrong_phase("device", c->id, "receive shares");
    const uint32_t me = c->id;
    int first_rc = 0;
    char first_msg[256] = "";
    c->in_u2[me] = 1;
    uint32_t u2 = 1;
    for (size_t i = 0; i < n_in; i++) {
        const secagg_enc_share *e = &in[i];
        int bad = 0;
        if (e->to != me)
            bad = af_seterr(AF_EAUTH, "secagg device %u: share %zu is addressed to device %u", me, i, e->to);
        else if (e->from < 1 || e->from > c->cfg.n || !c->in_u1[e->from] || e->from == me)
            bad = af_seterr(AF_EAUTH, "secagg device %u: share %zu comes from device %u, not in the key list",
                            me, i, e->from);
        else if (c->in_u2[e->from])
            bad = af_seterr(AF_EAUTH, "secagg device %u: a second share from device %u (replay)", me, e->from);
        if (!bad) {
            /* the sender is in U2 whether or not its share verifies: the others mask with it */
            c->in_u2[e->from] = 1;
            u2++;
            uint8_t pt[SECAGG_SHARE_PT_BYTES], ad[48];
            share_ad(c->cfg.round_id, e->from, me, ad);
            if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, e->ct, sizeof e->ct, ad, sizeof ad,
                                                           e->nonce, c->chan[e->from]) != 0)
                bad = af_seterr(AF_EAUTH, "secagg device %u: the share from device %u does not verify "
                                          "(altered, or from another round or pair)", me, e->from);
            else if (get_u32(pt) != e->from || get_u32(pt + 4) != me)
                bad = af_seterr(AF_EAUTH, "secagg device %u: the share from device %u names another pair",
                                me, e->from);
            else {
                int ok = 1;
                for (int ch = 0; ch < SECAGG_CHUNKS; ch++) {
                    c->sk_share[e->from][ch] = get_u64(pt + 8 + 8 * ch);
                    c->b_share[e->from][ch] = get_u64(pt + 8 + 8 * SECAGG_CHUNKS + 8 * ch);
                    ok &= c->sk_share[e->from][ch] < FP && c->b_share[e->from][ch] < FP;
                }
                if (ok)
                    c->have[e->from] = 1;
                else
                    bad = af_seterr(AF_EAUTH, "secagg device %u: the share from device %u is malformed", me, e->from);
            }
            sodium_memzero(pt, sizeof pt);
        }
        if (bad) {
            c->n_bad++;
            if (!first_rc) {
                first_rc = bad;
                snprintf(first_msg, sizeof first_msg, "%s", af_errmsg());
            }
        }
    }
    if (u2 < c->cfg.t) {
        memset(c->in_u2, 0, (size_t)c->cfg.n + 1);
        return af_seterr(AF_ESTATE, "secagg device %u: only %u devices shared keys, threshold %u", me, u2,
                         c->cfg.t);
    }
    c->phase = C_MASK;
    if (first_rc)
        return af_seterr(first_rc, "%s (%u share%s refused)", first_msg, c->n_bad, c->n_bad == 1 ? "" : "s");
    return 0;
}

int secagg_client_masked_input(secagg_client *c, const uint32_t *x, uint32_t *y,
                               const secagg_masked_input **out)
{
    if (c->phase != C_MASK)
        return wrong_phase("device", c->id, "masked input");
    const uint32_t me = c->id;
    const size_t len = c->cfg.len;
    if (y != x)
        memcpy(y, x, len * sizeof *y);
    prg_apply(y, len, c->b, +1); /* self mask p_u = PRG(b_u) */
    for (uint32_t v = 1; v <= c->cfg.n; v++) {
        if (v != me && c->in_u2[v])
            prg_apply(y, len, c->seed[v], v > me ? +1 : -1); /* p_uv = ±PRG(s_uv): cancels with p_vu */
    }
    secagg_masked_input *m = &c->m_input;
    memset(m, 0, sizeof *m);
    m->round_id = c->cfg.round_id;
    m->id = me;
    m->len = len;
    m->y = y;
    uint8_t d[64];
    digest_masked_input(m, d);
    crypto_sign_detached(m->sig, NULL, d, sizeof d, c->sign_sk);
    c->phase = C_UNMASK;
    *out = m;
    return 0;
}

int secagg_client_unmask(secagg_client *c, const uint32_t *survivors, size_t n_survivors,
                         const secagg_unmask **out)
{
    if (c->phase != C_UNMASK)
        return wrong_phase("device", c->id, "unmask");
    const uint32_t n = c->cfg.n, me = c->id;
    if (n_survivors < c->cfg.t)
        return af_seterr(AF_ESTATE, "secagg device %u: %zu survivors, below the threshold %u: nothing revealed",
                         me, n_survivors, c->cfg.t);
    /* in_u3 reuses tmp_xs as a flag array (n + 1 words) */
    uint32_t *in_u3 = c->tmp_xs;
    memset(in_u3, 0, sizeof(uint32_t) * ((size_t)n + 1));
    for (size_t i = 0; i < n_survivors; i++) {
        uint32_t v = survivors[i];
        if (v < 1 || v > n || !c->in_u2[v] || in_u3[v]) {
            memset(in_u3, 0, sizeof(uint32_t) * ((size_t)n + 1));
            return af_seterr(AF_EINVAL, "secagg device %u: survivor list entry %zu (%u) is not a distinct "
                                        "member of U2: nothing revealed", me, i, v);
        }
        in_u3[v] = 1;
    }
    if (!in_u3[me]) {
        memset(in_u3, 0, sizeof(uint32_t) * ((size_t)n + 1));
        return af_seterr(AF_ESTATE, "secagg device %u: not in the survivor list: nothing revealed", me);
    }
    uint32_t k = 0;
    for (uint32_t v = 1; v <= n; v++) {
        if (!c->in_u2[v] || !c->have[v])
            continue;
        secagg_reveal *r = &c->reveals[k++];
        r->owner = v;
        /* the one rule that keeps x_v secret: b_v for a survivor, s_v for a dropped device */
        r->kind = in_u3[v] ? SECAGG_REVEAL_B : SECAGG_REVEAL_SK;
        memcpy(r->y, in_u3[v] ? c->b_share[v] : c->sk_share[v], sizeof r->y);
    }
    memset(in_u3, 0, sizeof(uint32_t) * ((size_t)n + 1));
    secagg_unmask *m = &c->m_unmask;
    memset(m, 0, sizeof *m);
    m->round_id = c->cfg.round_id;
    m->id = me;
    m->n_reveals = k;
    m->reveals = c->reveals;
    uint8_t d[64];
    digest_unmask(m, d);
    crypto_sign_detached(m->sig, NULL, d, sizeof d, c->sign_sk);
    /* done: nothing left to reveal, wipe the secrets */
    sodium_memzero(c->sk_share, ((size_t)n + 1) * sizeof *c->sk_share);
    sodium_memzero(c->b_share, ((size_t)n + 1) * sizeof *c->b_share);
    sodium_memzero(c->chan, ((size_t)n + 1) * 32);
    sodium_memzero(c->seed, ((size_t)n + 1) * 32);
    sodium_memzero(c->s_sk, 32);
    sodium_memzero(c->c_sk, 32);
    sodium_memzero(c->b, 32);
    c->phase = C_DONE;
    *out = m;
    return 0;
}

/* ---- server ------------------------------------------------------------------------------ */

enum { S_ADVERTISE, S_SHARE, S_MASK, S_UNMASK, S_DONE, S_ABANDONED };

struct secagg_server {
    secagg_cfg cfg;
    int phase;
    uint8_t *registered, *in_u1, *in_u2, *in_u3, *in_u5;
    uint8_t *seen;               /* scratch flags for checking one message, zero between calls */
    uint8_t (*sign_pk)[32];
    secagg_advertise *adv;       /* by id */
    secagg_advertise *u1_list;   /* compact, id order */
    uint32_t n_u1, n_u2, n_u3, n_u5;
    uint32_t *u3_list;
    uint32_t *u1_pos;            /* id → position in u1_list */
    secagg_enc_share *shares;    /* [pos(from)][pos(to)] over U1, |U1|² */
    uint8_t (*b_commit)[32];
    secagg_enc_share *fwd;       /* shares_for scratch */
    uint32_t *acc;               /* running masked sum */
    /* reveals: up to t per owner, [owner][i] */
    secagg_share *rev;
    uint32_t *n_rev;
    uint8_t *rev_kind;
};

int secagg_server_create(const secagg_cfg *cfg, secagg_server **out)
{
    *out = NULL;
    int rc = secagg_cfg_check(cfg);
    if (rc)
        return rc;
    if ((rc = sodium_ready()))
        return rc;
    secagg_server *s = calloc(1, sizeof *s);
    if (!s)
        return af_seterr(AF_ENOMEM, "secagg server: out of memory");
    s->cfg = *cfg;
    const size_t n1 = (size_t)cfg->n + 1;
    s->registered = calloc(n1, 1);
    s->in_u1 = calloc(n1, 1);
    s->in_u2 = calloc(n1, 1);
    s->in_u3 = calloc(n1, 1);
    s->in_u5 = calloc(n1, 1);
    s->seen = calloc(n1, 1);
    s->sign_pk = calloc(n1, 32);
    s->adv = calloc(n1, sizeof *s->adv);
    s->u1_list = calloc(n1, sizeof *s->u1_list);
    s->u3_list = calloc(n1, sizeof *s->u3_list);
    s->u1_pos = calloc(n1, sizeof *s->u1_pos);
    s->b_commit = calloc(n1, 32);
    s->fwd = calloc(n1, sizeof *s->fwd);
    s->acc = calloc(cfg->len, sizeof *s->acc);
    s->n_rev = calloc(n1, sizeof *s->n_rev);
    s->rev_kind = calloc(n1, 1);
    if (!s->registered || !s->in_u1 || !s->in_u2 || !s->in_u3 || !s->in_u5 || !s->seen || !s->sign_pk || !s->adv ||
        !s->u1_list || !s->u3_list || !s->u1_pos || !s->b_commit || !s->fwd || !s->acc || !s->n_rev ||
        !s->rev_kind) {
        secagg_server_free(s);
        return af_seterr(AF_ENOMEM, "secagg server: out of memory");
    }
    *out = s;
    return 0;
}

void secagg_server_free(secagg_server *s)
{
    if (!s)
        return;
    free(s->registered);
    free(s->in_u1);
    free(s->in_u2);
    free(s->in_u3);
    free(s->in_u5);
    free(s->seen);
    free(s->sign_pk);
    free(s->adv);
    free(s->u1_list);
    free(s->u3_list);
    free(s->u1_pos);
    free(s->shares);
    free(s->b_commit);
    free(s->fwd);
    free(s->acc);
    if (s->rev)
        sodium_memzero(s->rev, (size_t)(s->cfg.n + 1) * s->cfg.t * sizeof *s->rev);
    free(s->rev);
    free(s->n_rev);
    free(s->rev_kind);
    free(s);
}

void secagg_server_counts(const secagg_server *s, uint32_t *u1, uint32_t *u2, uint32_t *u3, uint32_t *u5)
{
    if (u1)
        *u1 = s->n_u1;
    if (u2)
        *u2 = s->n_u2;
    if (u3)
        *u3 = s->n_u3;
    if (u5)
        *u5 = s->n_u5;
}

const uint32_t *secagg_server_masked_sum(const secagg_server *s) { return s->acc; }

int secagg_server_register(secagg_server *s, uint32_t id, const uint8_t pk[SECAGG_SIGN_PK_BYTES])
{
    if (id < 1 || id > s->cfg.n)
        return af_seterr(AF_EINVAL, "secagg server: device id %u outside 1..%u", id, s->cfg.n);
    memcpy(s->sign_pk[id], pk, 32);
    s->registered[id] = 1;
    return 0;
}

/* Common checks of a device message: phase, round, id range, enrolled, signature. */
static int check_msg(secagg_server *s, int phase, const char *what, uint64_t round, uint32_t id,
                     const uint8_t d[64], const uint8_t sig[64])
{
    if (s->phase == S_ABANDONED)
        return af_seterr(AF_ESTATE, "secagg server: round %llu was abandoned; %s from device %u ignored",
                         (unsigned long long)s->cfg.round_id, what, id);
    if (s->phase != phase)
        return af_seterr(AF_ESTATE, "secagg server: %s from device %u out of order", what, id);
    if (id < 1 || id > s->cfg.n)
        return af_seterr(AF_EINVAL, "secagg server: %s from device id %u outside 1..%u", what, id, s->cfg.n);
    if (!s->registered[id])
        return af_seterr(AF_EAUTH, "secagg server: %s from device %u, which has no enrolled identity key", what, id);
    if (round != s->cfg.round_id)
        return af_seterr(AF_EAUTH, "secagg server: %s from device %u is for round %llu, this is round %llu",
                         what, id, (unsigned long long)round, (unsigned long long)s->cfg.round_id);
    if (crypto_sign_verify_detached(sig, d, 64, s->sign_pk[id]) != 0)
        return af_seterr(AF_EAUTH, "secagg server: %s from device %u does not verify against its identity key "
                                   "(altered, replayed or forged)", what, id);
    return 0;
}

static int abandon(secagg_server *s, const char *what, uint32_t have)
{
    s->phase = S_ABANDONED;
    sodium_memzero(s->acc, s->cfg.len * sizeof *s->acc);
    return af_seterr(AF_ESTATE, "secagg server: round %llu abandoned: %u devices %s, threshold %u; nothing revealed",
                     (unsigned long long)s->cfg.round_id, have, what, s->cfg.t);
}

int secagg_server_add_advertise(secagg_server *s, const secagg_advertise *m)
{
    uint8_t d[64];
    digest_advertise(m, d);
    int rc = check_msg(s, S_ADVERTISE, "advertised keys", m->round_id, m->id, d, m->sig);
    if (rc)
        return rc;
    if (s->in_u1[m->id])
        return af_seterr(AF_ESTATE, "secagg server: device %u advertised keys twice", m->id);
    /* a low-order point would give every peer a predictable shared key */
    uint8_t probe[32], q[32];
    randombytes_buf(probe, sizeof probe);
    int bad = crypto_scalarmult(q, probe, m->c_pk) != 0 || crypto_scalarmult(q, probe, m->s_pk) != 0 ||
              !memcmp(m->c_pk, m->s_pk, 32);
    sodium_memzero(probe, sizeof probe);
    if (bad)
        return af_seterr(AF_EAUTH, "secagg server: device %u advertised an unusable public key", m->id);
    s->adv[m->id] = *m;
    s->in_u1[m->id] = 1;
    s->n_u1++;
    return 0;
}

int secagg_server_end_advertise(secagg_server *s, const secagg_advertise **list, size_t *n)
{
    if (s->phase != S_ADVERTISE)
        return af_seterr(AF_ESTATE, "secagg server: advertise phase is not open");
    if (s->n_u1 < s->cfg.t)
        return abandon(s, "advertised keys", s->n_u1);
    const size_t k = s->n_u1;
    free(s->shares);
    s->shares = calloc(k * k, sizeof *s->shares);
    if (!s->shares)
        return af_seterr(AF_ENOMEM, "secagg server: out of memory for %zu x %zu shares", k, k);
    uint32_t p = 0;
    for (uint32_t v = 1; v <= s->cfg.n; v++)
        if (s->in_u1[v]) {
            s->u1_pos[v] = p;
            s->u1_list[p++] = s->adv[v];
        }
    s->phase = S_SHARE;
    *list = s->u1_list;
    *n = k;
    return 0;
}

int secagg_server_add_share_keys(secagg_server *s, const secagg_share_keys *m)
{
    uint8_t d[64];
    if (m->n_shares > s->cfg.n)
        return af_seterr(AF_EINVAL, "secagg server: device %u sent %u shares for %u devices", m->id,
                         m->n_shares, s->cfg.n);
    digest_share_keys(m, d);
    int rc = check_msg(s, S_SHARE, "key shares", m->round_id, m->id, d, m->sig);
    if (rc)
        return rc;
    if (!s->in_u1[m->id])
        return af_seterr(AF_ESTATE, "secagg server: device %u sent key shares but did not advertise keys", m->id);
    if (s->in_u2[m->id])
        return af_seterr(AF_ESTATE, "secagg server: device %u sent key shares twice", m->id);
    if (m->n_shares != s->n_u1 - 1)
        return af_seterr(AF_EINVAL, "secagg server: device %u sent %u shares, expected one for each of the "
                                    "%u other devices", m->id, m->n_shares, s->n_u1 - 1);
    /* one share to every other member of U1: check all before storing any */
    uint8_t *seen = s->seen;
    for (uint32_t i = 0; i < m->n_shares; i++) {
        const secagg_enc_share *e = &m->shares[i];
        if (e->from != m->id || e->to < 1 || e->to > s->cfg.n || !s->in_u1[e->to] || e->to == m->id ||
            seen[e->to]) {
            memset(seen, 0, (size_t)s->cfg.n + 1);
            return af_seterr(AF_EINVAL, "secagg server: device %u's share %u goes from %u to %u "
                                        "(expected from %u to a distinct other device)",
                             m->id, i, e->from, e->to, m->id);
        }
        seen[e->to] = 1;
    }
    memset(seen, 0, (size_t)s->cfg.n + 1);
    const size_t k = s->n_u1, row = s->u1_pos[m->id];
    for (uint32_t i = 0; i < m->n_shares; i++)
        s->shares[row * k + s->u1_pos[m->shares[i].to]] = m->shares[i];
    memcpy(s->b_commit[m->id], m->b_commit, 32);
    s->in_u2[m->id] = 1;
    s->n_u2++;
    return 0;
}

int secagg_server_end_share_keys(secagg_server *s)
{
    if (s->phase != S_SHARE)
        return af_seterr(AF_ESTATE, "secagg server: share-keys phase is not open");
    if (s->n_u2 < s->cfg.t)
        return abandon(s, "shared keys", s->n_u2);
    s->phase = S_MASK;
    return 0;
}

int secagg_server_shares_for(secagg_server *s, uint32_t id, const secagg_enc_share **in, size_t *n)
{
    if (s->phase != S_MASK)
        return af_seterr(AF_ESTATE, "secagg server: shares are forwarded only while masked inputs are collected");
    if (id < 1 || id > s->cfg.n || !s->in_u2[id])
        return af_seterr(AF_ESTATE, "secagg server: device %u did not share keys this round", id);
    const size_t k = s->n_u1, col = s->u1_pos[id];
    size_t c = 0;
    for (uint32_t v = 1; v <= s->cfg.n; v++)
        if (s->in_u2[v] && v != id)
            s->fwd[c++] = s->shares[s->u1_pos[v] * k + col];
    *in = s->fwd;
    *n = c;
    return 0;
}

int secagg_server_add_masked_input(secagg_server *s, const secagg_masked_input *m)
{
    if (s->phase == S_MASK && m->len != s->cfg.len)
        return af_seterr(AF_EINVAL, "secagg server: device %u's masked input has %zu words, expected %zu",
                         m->id, m->len, s->cfg.len);
    uint8_t d[64];
    digest_masked_input(m, d);
    int rc = check_msg(s, S_MASK, "masked input", m->round_id, m->id, d, m->sig);
    if (rc)
        return rc;
    if (!s->in_u2[m->id])
        return af_seterr(AF_ESTATE, "secagg server: masked input from device %u, which did not share keys", m->id);
    if (s->in_u3[m->id])
        return af_seterr(AF_ESTATE, "secagg server: device %u sent a second masked input (replay)", m->id);
    for (size_t i = 0; i < s->cfg.len; i++)
        s->acc[i] += m->y[i]; /* mod 2^32 */
    s->in_u3[m->id] = 1;
    s->n_u3++;
    return 0;
}

int secagg_server_end_masked_input(secagg_server *s, const uint32_t **u3, size_t *n)
{
    if (s->phase != S_MASK)
        return af_seterr(AF_ESTATE, "secagg server: masked-input phase is not open");
    if (s->n_u3 < s->cfg.t)
        return abandon(s, "sent masked inputs", s->n_u3);
    uint32_t c = 0;
    for (uint32_t v = 1; v <= s->cfg.n; v++)
        if (s->in_u3[v])
            s->u3_list[c++] = v;
    /* reveal store: up to t shares for each member of U2 */
    s->rev = calloc(((size_t)s->cfg.n + 1) * s->cfg.t, sizeof *s->rev);
    if (!s->rev)
        return af_seterr(AF_ENOMEM, "secagg server: out of memory for the reveal store");
    for (uint32_t v = 1; v <= s->cfg.n; v++)
        s->rev_kind[v] = s->in_u3[v] ? SECAGG_REVEAL_B : SECAGG_REVEAL_SK;
    s->phase = S_UNMASK;
    *u3 = s->u3_list;
    *n = c;
    return 0;
}

int secagg_server_add_unmask(secagg_server *s, const secagg_unmask *m)
{
    if (m->n_reveals > s->cfg.n)
        return af_seterr(AF_EINVAL, "secagg server: device %u sent %u reveals for %u devices", m->id,
                         m->n_reveals, s->cfg.n);
    uint8_t d[64];
    digest_unmask(m, d);
    int rc = check_msg(s, S_UNMASK, "unmask answer", m->round_id, m->id, d, m->sig);
    if (rc)
        return rc;
    if (!s->in_u3[m->id])
        return af_seterr(AF_ESTATE, "secagg server: unmask answer from device %u, which is not a survivor", m->id);
    if (s->in_u5[m->id])
        return af_seterr(AF_ESTATE, "secagg server: device %u answered unmask twice (replay)", m->id);
    /* validate everything before storing anything: all or nothing */
    uint8_t *seen = s->seen;
    for (uint32_t i = 0; i < m->n_reveals; i++) {
        const secagg_reveal *r = &m->reveals[i];
        int bad = r->owner < 1 || r->owner > s->cfg.n || !s->in_u2[r->owner] || seen[r->owner];
        for (int ch = 0; ch < SECAGG_CHUNKS && !bad; ch++)
            bad = r->y[ch] >= FP;
        if (bad || r->kind != s->rev_kind[r->owner]) {
            memset(seen, 0, (size_t)s->cfg.n + 1);
            if (!bad)
                return af_seterr(AF_EAUTH, "secagg server: device %u revealed the wrong kind of share for device %u "
                                           "(protocol violation), answer refused", m->id, r->owner);
            return af_seterr(AF_EINVAL, "secagg server: device %u's reveal %u (owner %u) is malformed or repeated",
                             m->id, i, r->owner);
        }
        seen[r->owner] = 1;
    }
    memset(seen, 0, (size_t)s->cfg.n + 1);
    for (uint32_t i = 0; i < m->n_reveals; i++) {
        const secagg_reveal *r = &m->reveals[i];
        if (s->n_rev[r->owner] < s->cfg.t) {
            secagg_share *sh = &s->rev[(size_t)r->owner * s->cfg.t + s->n_rev[r->owner]++];
            sh->x = m->id;
            memcpy(sh->y, r->y, sizeof sh->y);
        }
    }
    s->in_u5[m->id] = 1;
    s->n_u5++;
    return 0;
}

int secagg_server_finish(secagg_server *s, uint32_t *sum)
{
    if (s->phase != S_UNMASK)
        return af_seterr(AF_ESTATE, "secagg server: unmask phase is not open");
    if (s->n_u5 < s->cfg.t)
        return abandon(s, "answered the unmask request", s->n_u5);
    const uint32_t n = s->cfg.n, t = s->cfg.t;
    for (uint32_t v = 1; v <= n; v++)
        if (s->in_u2[v] && s->n_rev[v] < t) {
            s->phase = S_ABANDONED;
            return af_seterr(AF_ESTATE, "secagg server: only %u shares of device %u's %s, threshold %u: round "
                                        "abandoned", s->n_rev[v], v, s->in_u3[v] ? "mask seed" : "key", t);
        }
    uint32_t *xs = malloc(sizeof(uint32_t) * t), *cached = malloc(sizeof(uint32_t) * t);
    uint64_t *lambda = malloc(sizeof(uint64_t) * t);
    int rc = 0, have_cache = 0;
    if (!xs || !lambda || !cached) {
        rc = af_seterr(AF_ENOMEM, "secagg server: out of memory");
        goto done;
    }
    for (uint32_t v = 1; v <= n; v++) {
        if (!s->in_u2[v])
            continue;
        const secagg_share *sh = &s->rev[(size_t)v * t];
        for (uint32_t i = 0; i < t; i++)
            xs[i] = sh[i].x;
        /* devices answer in the same order for every owner: usually one Lagrange basis serves all */
        if (!have_cache || memcmp(xs, cached, sizeof(uint32_t) * t)) {
            if ((rc = lagrange0(xs, t, lambda)))
                goto done;
            memcpy(cached, xs, sizeof(uint32_t) * t);
            have_cache = 1;
        }
        uint64_t c[SECAGG_CHUNKS];
        for (int ch = 0; ch < SECAGG_CHUNKS; ch++) {
            uint64_t acc = 0;
            for (uint32_t i = 0; i < t; i++)
                acc = fp_add(acc, fp_mul(lambda[i], sh[i].y[ch]));
            c[ch] = acc;
        }
        uint8_t secret[32];
        if (chunks_to_secret(c, secret)) {
            rc = af_seterr(AF_EAUTH, "secagg server: the shares of device %u's %s do not interpolate: a wrong "
                                     "share; round abandoned", v, s->in_u3[v] ? "mask seed" : "key");
            goto done;
        }
        if (s->in_u3[v]) {
            uint8_t com[32];
            b_commitment(s->cfg.round_id, v, secret, com);
            if (sodium_memcmp(com, s->b_commit[v], 32) != 0) {
                rc = af_seterr(AF_EAUTH, "secagg server: device %u's rebuilt mask seed does not match its "
                                         "commitment (a wrong share); round abandoned", v);
                goto done;
            }
            prg_apply(s->acc, s->cfg.len, secret, -1); /* remove p_v = PRG(b_v) */
        } else {
            uint8_t pk[32];
            crypto_scalarmult_base(pk, secret);
            if (sodium_memcmp(pk, s->adv[v].s_pk, 32) != 0) {
                rc = af_seterr(AF_EAUTH, "secagg server: device %u's rebuilt key does not match its public key "
                                         "(a wrong share); round abandoned", v);
                goto done;
            }
            /* survivor u added +PRG(s_uv) if v > u, −PRG(s_uv) if v < u: undo it */
            for (uint32_t u = 1; u <= n; u++) {
                if (!s->in_u3[u])
                    continue;
                uint8_t key[32];
                if ((rc = pair_key(key, "artificien/secagg/mask/v1", s->cfg.round_id, secret, pk,
                                   s->adv[u].s_pk, u)))
                    goto done;
                prg_apply(s->acc, s->cfg.len, key, v > u ? -1 : +1);
                sodium_memzero(key, sizeof key);
            }
        }
        sodium_memzero(secret, sizeof secret);
    }
    memcpy(sum, s->acc, s->cfg.len * sizeof *sum);
    s->phase = S_DONE;
done:
    if (rc)
        s->phase = S_ABANDONED;
    free(xs);
    free(cached);
    free(lambda);
    return rc;
}
