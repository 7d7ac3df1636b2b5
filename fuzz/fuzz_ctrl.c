/* libFuzzer target: the control-message decoder, mpixfer__ctrl_decode().
 *
 * When a decode succeeds: the kind is known, sender and receiver are NUL-terminated names
 * of the lengths in the header without NUL bytes, the payload pointer and length lie
 * inside the input and add up to its size, and re-encoding with mpixfer__ctrl_alloc()
 * gives back the input byte for byte. A descriptor reply's payload then goes through the
 * descriptor decoder the way the library's dispatcher does it. */
#include "fuzz_common.h"

#define CTRL_HEADER 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mpixfer__ctrl_t c;
    mpixfer_status_t st;
    size_t sl, rl;
    const uint8_t *payload;
    unsigned char *buf = NULL;
    size_t n = 0;
    void *dst = NULL;

    memset(&c, 0xa5, sizeof(c));
    st = mpixfer__ctrl_decode(data, size, &c);
    if (st != MPIXFER_OK) {
        FUZZ_CHECK(st == MPIXFER_ERR_BAD_DESC);
        return 0;
    }

    FUZZ_CHECK(c.kind >= MPIXFER__CTRL_SYNC && c.kind <= MPIXFER__CTRL_BYE_ACK);
    FUZZ_CHECK(memchr(c.sender, '\0', sizeof(c.sender)) != NULL);
    FUZZ_CHECK(memchr(c.receiver, '\0', sizeof(c.receiver)) != NULL);
    sl = strlen(c.sender);
    rl = strlen(c.receiver);
    FUZZ_CHECK(sl >= 1 && sl <= MPIXFER__NAME_MAX && rl >= 1 && rl <= MPIXFER__NAME_MAX);
    FUZZ_CHECK(size >= CTRL_HEADER);
    FUZZ_CHECK(sl == (size_t)(data[6] | data[7] << 8) && rl == (size_t)(data[8] | data[9] << 8));
    FUZZ_CHECK(memcmp(c.sender, data + CTRL_HEADER, sl) == 0);
    FUZZ_CHECK(memcmp(c.receiver, data + CTRL_HEADER + sl, rl) == 0);
    payload = c.payload;
    FUZZ_CHECK(payload == data + CTRL_HEADER + sl + rl);
    FUZZ_CHECK(payload >= data && payload <= data + size);
    FUZZ_CHECK(c.payload_len == size - (size_t)(payload - data));
    FUZZ_CHECK(CTRL_HEADER + sl + rl + c.payload_len == size);

    /* Round trip through the encoder. */
    FUZZ_CHECK(mpixfer__ctrl_alloc(c.kind, c.sender, c.receiver, c.payload_len, false, &buf, &n,
                                   &dst) == MPIXFER_OK);
    FUZZ_CHECK(n == size);
    FUZZ_CHECK((unsigned char *)dst == buf + CTRL_HEADER + sl + rl);
    if (c.payload_len)
        memcpy(dst, c.payload, c.payload_len);
    FUZZ_CHECK(memcmp(buf, data, size) == 0);
    free(buf);

    /* What the dispatcher does with a descriptor reply (notify.c: on_desc_reply). */
    if (c.kind == MPIXFER__CTRL_DESC_REP) {
        mpixfer__desc_t d;
        if (mpixfer__desc_decode(c.payload, c.payload_len, MPIXFER__DEFAULT_MAX_REGIONS, &d) ==
            MPIXFER_OK) {
            FUZZ_CHECK(d.nregions <= MPIXFER__DEFAULT_MAX_REGIONS);
            mpixfer__desc_fini(&d);
        }
    }
    return 0;
}
