/* libFuzzer target: the connection-info parser, mpixfer__conninfo_parse().
 *
 * The input becomes a C string (the parser's contract) in a buffer of exactly its size, so
 * ASan sees any read past the terminator. When a parse succeeds: the name is 1..255 bytes,
 * NUL-terminated, and is the input's tail after the rank; the rank is 0..INT32_MAX; and
 * formatting the result with mpixfer__conninfo_format() and parsing that gives the same
 * world id, rank and name. */
#include "fuzz_common.h"

#define CONN_PREFIX "mpixfer:1:"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    char name[MPIXFER__NAME_MAX + 1], name2[MPIXFER__NAME_MAX + 1];
    uint64_t wid = 0, wid2 = 0;
    int rank = -1, rank2 = -1;
    char *formatted = NULL, *port = NULL, *port2 = NULL;
    mpixfer_status_t st;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    memset(name, 0xa5, sizeof(name));

    st = mpixfer__conninfo_parse(s, &wid, &rank, &port, name);
    if (st != MPIXFER_OK) {
        FUZZ_CHECK(st == MPIXFER_ERR_BAD_DESC);
        free(s);
        return 0;
    }

    FUZZ_CHECK(memchr(name, '\0', sizeof(name)) != NULL);
    size_t nl = strlen(name);
    FUZZ_CHECK(nl >= 1 && nl <= MPIXFER__NAME_MAX);
    FUZZ_CHECK(rank >= 0);
    size_t sl = strlen(s);
    FUZZ_CHECK(sl > nl && strcmp(s + sl - nl, name) == 0 && s[sl - nl - 1] == ':');
    /* Version 1 carries no address, version 2 a non-empty one without NUL. */
    FUZZ_CHECK(strncmp(s, port ? "mpixfer:2:" : CONN_PREFIX, strlen(CONN_PREFIX)) == 0);
    FUZZ_CHECK(port == NULL || (strlen(port) >= 1 && strlen(port) < MPI_MAX_PORT_NAME));

    FUZZ_CHECK(mpixfer__conninfo_format(wid, rank, port, name, &formatted) == MPIXFER_OK);
    FUZZ_CHECK(mpixfer__conninfo_parse(formatted, &wid2, &rank2, &port2, name2) == MPIXFER_OK);
    FUZZ_CHECK(wid2 == wid && rank2 == rank && strcmp(name2, name) == 0);
    FUZZ_CHECK((port == NULL) == (port2 == NULL) && (port == NULL || strcmp(port, port2) == 0));
    /* A canonical input (lower-case hex, no leading zeros in the rank) formats back to
     * itself, and only a canonical one does. */
    {
        const char *hex = s + strlen(CONN_PREFIX), *r = hex + 17;
        int canonical = r[0] != '0' || r[1] == ':';
        for (int i = 0; i < 16; i++)
            canonical &= !(hex[i] >= 'A' && hex[i] <= 'F');
        if (port != NULL) {
            const char *ph = strchr(r, ':') + 1;
            for (size_t i = 0; i < 2 * strlen(port); i++)
                canonical &= !(ph[i] >= 'A' && ph[i] <= 'F');
        }
        FUZZ_CHECK((strcmp(formatted, s) == 0) == canonical);
    }
    free(formatted);
    free(port);
    free(port2);
    free(s);
    return 0;
}
