/* libFuzzer target: the connection-info parser, mpixfer__conninfo_parse().
 *
 * The input becomes a C string (the parser's contract) in a buffer of exactly its size, so
 * ASan sees any read past the terminator. When a parse succeeds: the name is 1..255 bytes,
 * NUL-terminated, and is the input's tail after the rank (version 1) or after the key
 * (version 3); the rank is 0..INT32_MAX; a version-3 address is "<digits and dots>:<digits>";
 * and formatting the result with mpixfer__conninfo_format() and parsing that gives the
 * same world id, rank, address, key and name. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    char name[MPIXFER__NAME_MAX + 1], name2[MPIXFER__NAME_MAX + 1];
    unsigned char key[MPIXFER__KEY_LEN], key2[MPIXFER__KEY_LEN];
    uint64_t wid = 0, wid2 = 0;
    int rank = -1, rank2 = -1;
    char *formatted = NULL, *addr = NULL, *addr2 = NULL;
    mpixfer_status_t st;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    memset(name, 0xa5, sizeof(name));

    st = mpixfer__conninfo_parse(s, &wid, &rank, &addr, key, name);
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
    FUZZ_CHECK(strncmp(s, addr ? "mpixfer:3:" : "mpixfer:1:", 10) == 0);
    if (addr != NULL) {
        const char *colon = strchr(addr, ':');
        FUZZ_CHECK(colon != NULL && colon > addr && colon[1] != '\0');
        FUZZ_CHECK(strspn(addr, "0123456789.") == (size_t)(colon - addr));
        FUZZ_CHECK(strspn(colon + 1, "0123456789") == strlen(colon + 1));
        /* The key in the string is what was parsed. */
        const char *k = strstr(s, ":key=");
        FUZZ_CHECK(k != NULL);
        for (int i = 0; i < MPIXFER__KEY_LEN; i++) {
            unsigned v;
            FUZZ_CHECK(sscanf(k + 5 + 2 * i, "%2x", &v) == 1 && v == key[i]);
        }
    }
    FUZZ_CHECK(mpixfer__conninfo_format(wid, rank, addr, key, name, &formatted) == MPIXFER_OK);
    FUZZ_CHECK(mpixfer__conninfo_parse(formatted, &wid2, &rank2, &addr2, key2, name2) ==
               MPIXFER_OK);
    FUZZ_CHECK(wid2 == wid && rank2 == rank && strcmp(name2, name) == 0);
    FUZZ_CHECK((addr == NULL) == (addr2 == NULL));
    FUZZ_CHECK(addr == NULL || (strcmp(addr, addr2) == 0 && memcmp(key, key2, sizeof key) == 0));
    free(formatted);
    free(addr);
    free(addr2);
    free(s);
    return 0;
}
