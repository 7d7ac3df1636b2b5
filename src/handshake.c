/* The link handshake: who may talk to an agent over a link, decided before any state.
 *
 * An agent reachable by links holds a 128-bit secret (drawn with getrandom at creation);
 * its connection info and descriptor carry it, so holding either is the capability. A
 * client proves it holds the secret, and the server proves it too, by HMAC-SHA-256
 * (libsodium) over fresh nonces of both sides, so a recorded handshake replays nothing.
 *
 * Wire, little-endian, fixed or bounded sizes (read exactly, nothing more, before the
 * proof is checked):
 *   HELLO (client -> server)  magic "MPXL", version u16 (1), name_len u16 (1..255),
 *                             nonce_c[32], the name of the agent asked for
 *   CHAL  (server -> client)  nonce_s[32], mac_s[32]
 *                             mac_s = HMAC(key, "mpixfer-s" | nonce_c | nonce_s | name)
 *   AUTH  (client -> server)  mac_c[32], world u64, rank u32, pid u32, name_len u16,
 *                             reserved u16 (0), the client agent's name
 *                             mac_c = HMAC(key, "mpixfer-c" | nonce_s | nonce_c | name |
 *                                          the 20 identity bytes after mac_c | client name)
 * A server asked for an agent it does not have answers with a random challenge, so a
 * stranger cannot tell which names exist. */
#define _GNU_SOURCE
#include <errno.h>
#include <sodium.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"
#include "wire.h"

mpixfer_status_t mpixfer__random(void *buf, size_t len)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            MPIXFER__FAIL(MPIXFER_ERR_IO, "getrandom failed: %s", strerror(errno));
        }
        p += n;
        len -= (size_t)n;
    }
    return MPIXFER_OK;
}

size_t mpixfer__hs_hello_encode(const unsigned char nonce_c[MPIXFER__HS_NONCE], const char *name,
                                unsigned char *out)
{
    size_t nl = strlen(name);

    memcpy(out, MPIXFER__HS_MAGIC, 4);
    mpixfer__put16(out + 4, MPIXFER__HS_VERSION);
    mpixfer__put16(out + 6, (uint16_t)nl);
    memcpy(out + 8, nonce_c, MPIXFER__HS_NONCE);
    memcpy(out + MPIXFER__HS_HELLO_FIXED, name, nl);
    return MPIXFER__HS_HELLO_FIXED + nl;
}

mpixfer_status_t mpixfer__hs_hello_parse(const void *buf, size_t len, size_t *need_p,
                                         mpixfer__hello_t *out)
{
    const unsigned char *b = buf;
    size_t nl;

    if (len < MPIXFER__HS_HELLO_FIXED) {
        *need_p = MPIXFER__HS_HELLO_FIXED;
        return MPIXFER_IN_PROGRESS;
    }
    if (memcmp(b, MPIXFER__HS_MAGIC, 4) != 0 || mpixfer__get16(b + 4) != MPIXFER__HS_VERSION)
        return MPIXFER_ERR_BAD_DESC;
    nl = mpixfer__get16(b + 6);
    if (nl < 1 || nl > MPIXFER__NAME_MAX)
        return MPIXFER_ERR_BAD_DESC;
    *need_p = MPIXFER__HS_HELLO_FIXED + nl;
    if (len < *need_p)
        return MPIXFER_IN_PROGRESS;
    if (len > *need_p || memchr(b + MPIXFER__HS_HELLO_FIXED, '\0', nl) != NULL)
        return MPIXFER_ERR_BAD_DESC;
    memcpy(out->nonce, b + 8, MPIXFER__HS_NONCE);
    memcpy(out->name, b + MPIXFER__HS_HELLO_FIXED, nl);
    out->name[nl] = '\0';
    return MPIXFER_OK;
}

size_t mpixfer__hs_auth_encode(const unsigned char mac[MPIXFER__HS_MAC], uint64_t world,
                               uint32_t rank, uint32_t pid, const char *name, unsigned char *out)
{
    size_t nl = strlen(name);

    memcpy(out, mac, MPIXFER__HS_MAC);
    mpixfer__put64(out + 32, world);
    mpixfer__put32(out + 40, rank);
    mpixfer__put32(out + 44, pid);
    mpixfer__put16(out + 48, (uint16_t)nl);
    mpixfer__put16(out + 50, 0);
    memcpy(out + MPIXFER__HS_AUTH_FIXED, name, nl);
    return MPIXFER__HS_AUTH_FIXED + nl;
}

mpixfer_status_t mpixfer__hs_auth_parse(const void *buf, size_t len, size_t *need_p,
                                        mpixfer__auth_t *out)
{
    const unsigned char *b = buf;
    size_t nl;

    if (len < MPIXFER__HS_AUTH_FIXED) {
        *need_p = MPIXFER__HS_AUTH_FIXED;
        return MPIXFER_IN_PROGRESS;
    }
    nl = mpixfer__get16(b + 48);
    if (nl < 1 || nl > MPIXFER__NAME_MAX || mpixfer__get16(b + 50) != 0)
        return MPIXFER_ERR_BAD_DESC;
    *need_p = MPIXFER__HS_AUTH_FIXED + nl;
    if (len < *need_p)
        return MPIXFER_IN_PROGRESS;
    if (len > *need_p || memchr(b + MPIXFER__HS_AUTH_FIXED, '\0', nl) != NULL)
        return MPIXFER_ERR_BAD_DESC;
    memcpy(out->mac, b, MPIXFER__HS_MAC);
    memcpy(out->ident, b + 32, sizeof out->ident);
    out->world = mpixfer__get64(b + 32);
    out->rank = mpixfer__get32(b + 40);
    out->pid = mpixfer__get32(b + 44);
    memcpy(out->name, b + MPIXFER__HS_AUTH_FIXED, nl);
    out->name[nl] = '\0';
    return MPIXFER_OK;
}

void mpixfer__hs_mac_server(const unsigned char key[MPIXFER__KEY_LEN],
                            const unsigned char nonce_c[MPIXFER__HS_NONCE],
                            const unsigned char nonce_s[MPIXFER__HS_NONCE], const char *name,
                            unsigned char mac[MPIXFER__HS_MAC])
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, key, MPIXFER__KEY_LEN);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"mpixfer-s", 9);
    crypto_auth_hmacsha256_update(&st, nonce_c, MPIXFER__HS_NONCE);
    crypto_auth_hmacsha256_update(&st, nonce_s, MPIXFER__HS_NONCE);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)name, strlen(name));
    crypto_auth_hmacsha256_final(&st, mac);
}

void mpixfer__hs_mac_client(const unsigned char key[MPIXFER__KEY_LEN],
                            const unsigned char nonce_c[MPIXFER__HS_NONCE],
                            const unsigned char nonce_s[MPIXFER__HS_NONCE], const char *name,
                            const unsigned char ident[20], const char *client,
                            unsigned char mac[MPIXFER__HS_MAC])
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, key, MPIXFER__KEY_LEN);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"mpixfer-c", 9);
    crypto_auth_hmacsha256_update(&st, nonce_s, MPIXFER__HS_NONCE);
    crypto_auth_hmacsha256_update(&st, nonce_c, MPIXFER__HS_NONCE);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)name, strlen(name));
    crypto_auth_hmacsha256_update(&st, ident, 20);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)client, strlen(client));
    crypto_auth_hmacsha256_final(&st, mac);
}

bool mpixfer__hs_mac_equal(const unsigned char a[MPIXFER__HS_MAC],
                           const unsigned char b[MPIXFER__HS_MAC])
{
    return crypto_verify_32(a, b) == 0;
}
