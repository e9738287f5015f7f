/* auth.h — credentials: random tokens, their SHA-256 hashes, and the 0600 key files.
 *
 * Layer `server`: core and libsodium. A token (admin key, owner API key, enrolment secret,
 * device token) is 32 random bytes (randombytes_buf) written as 64 lowercase hex characters;
 * only crypto_hash_sha256(token text) is ever stored. Call srv_auth_init once before use.
 */
#ifndef AF_SERVER_AUTH_H
#define AF_SERVER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define SRV_TOKEN_CHARS 64
#define SRV_HASH_BYTES 32

/* Initialises libsodium (idempotent, thread-safe). 0 or AF_EINVAL. */
int srv_auth_init(void);
/* A fresh random token: 64 hex characters and a NUL in out. */
void srv_token_new(char out[SRV_TOKEN_CHARS + 1]);
/* SHA-256 of the token text. */
void srv_token_hash(const char *token, size_t len, uint8_t out[SRV_HASH_BYTES]);
/* Extracts the token of an "Authorization: Bearer TOKEN" header value: 0 and *token and *len
 * (pointing into the header), or AF_EAUTH when the header is missing or not a Bearer token. */
int srv_bearer(const char *header, const char **token, size_t *len);
/* Writes text + "\n" to path with mode 0600 (created as such, never readable by others,
 * replacing any older file atomically). 0 or AF_EIO. */
int srv_write_secret_file(const char *path, const char *text);

#endif
