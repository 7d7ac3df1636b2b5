/* libFuzzer target: the link handshake's parsers, the first code a stranger's bytes reach
 * (mpixfer__hs_hello_parse, mpixfer__hs_auth_parse in src/handshake.c).
 *
 * The first byte picks the parser; the rest is fed as a listener feeds it: grown by the
 * amount the parser asks for (IN_PROGRESS), never more than MPIXFER__HS_MAX bytes. An
 * accepted message has a 1..255-byte NUL-free name, asked-for sizes never exceed the
 * bound, and an accepted hello re-encodes to exactly the bytes parsed. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t have, need;
    mpixfer_status_t st;
    int which;

    if (size < 1)
        return 0;
    which = data[0] & 1;
    data++;
    size--;
    have = 0;
    need = which ? MPIXFER__HS_AUTH_FIXED : MPIXFER__HS_HELLO_FIXED;
    for (;;) {
        mpixfer__hello_t h;
        mpixfer__auth_t a;
        unsigned char *buf;

        FUZZ_CHECK(need <= MPIXFER__HS_MAX && need > have);
        if (need > size)
            return 0; /* the peer stopped sending: the listener's timeout closes it */
        have = need;
        /* Exactly as many bytes as the listener read, so ASan sees any read beyond. */
        buf = malloc(have);
        FUZZ_CHECK(buf != NULL);
        memcpy(buf, data, have);
        st = which ? mpixfer__hs_auth_parse(buf, have, &need, &a)
                   : mpixfer__hs_hello_parse(buf, have, &need, &h);
        if (st == MPIXFER_OK) {
            const char *name = which ? a.name : h.name;
            size_t nl = strnlen(name, MPIXFER__NAME_MAX + 1);
            FUZZ_CHECK(nl >= 1 && nl <= MPIXFER__NAME_MAX);
            if (!which) {
                unsigned char out[MPIXFER__HS_MAX];
                size_t n = mpixfer__hs_hello_encode(h.nonce, h.name, out);
                FUZZ_CHECK(n == have && memcmp(out, buf, n) == 0);
            } else {
                unsigned char out[MPIXFER__HS_MAX];
                size_t n = mpixfer__hs_auth_encode(a.mac, a.world, a.rank, a.pid, a.name, out);
                FUZZ_CHECK(n == have && memcmp(out, buf, n) == 0);
            }
            free(buf);
            return 0;
        }
        free(buf);
        if (st != MPIXFER_IN_PROGRESS) {
            FUZZ_CHECK(st == MPIXFER_ERR_BAD_DESC);
            return 0;
        }
    }
}
