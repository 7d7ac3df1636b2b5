/* mpixfer_strerror / mpixfer_status_name / mpixfer_version: every status of
 * MPIXFER_STATUS_LIST has a non-empty, distinct message and name; the name is the symbol;
 * unknown values give a non-NULL fallback. */
#include "common.h"

typedef struct {
    mpixfer_status_t value;
    const char *symbol;
    const char *msg;
} row_t;

static const row_t rows[] = {
#define ROW_(name, value, msg) {name, #name, msg},
    MPIXFER_STATUS_LIST(ROW_)
#undef ROW_
};

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    size_t n = sizeof rows / sizeof rows[0];
    CHECK(n >= 17);
    for (size_t i = 0; i < n; i++) {
        const char *e = mpixfer_strerror(rows[i].value);
        const char *s = mpixfer_status_name(rows[i].value);
        CHECK(e != NULL && e[0] != '\0');
        CHECK(s != NULL && s[0] != '\0');
        CHECK_MSG(strcmp(s, rows[i].symbol) == 0, "status %d named '%s', expected '%s'",
                  (int)rows[i].value, s, rows[i].symbol);
        CHECK_MSG(strcmp(e, rows[i].msg) == 0, "status %d text '%s', expected '%s'",
                  (int)rows[i].value, e, rows[i].msg);
        for (size_t j = 0; j < i; j++) {
            CHECK(rows[i].value != rows[j].value);
            CHECK(strcmp(e, mpixfer_strerror(rows[j].value)) != 0);
            CHECK(strcmp(s, mpixfer_status_name(rows[j].value)) != 0);
        }
    }
    CHECK(MPIXFER_OK == 0 && MPIXFER_IN_PROGRESS == 1);
    const int unknown[] = {2, 3, -17, -99, 12345, -12345, 0x7fffffff, -0x7fffffff};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *e = mpixfer_strerror((mpixfer_status_t)unknown[i]);
        const char *s = mpixfer_status_name((mpixfer_status_t)unknown[i]);
        CHECK(e != NULL && e[0] != '\0');
        CHECK(s != NULL && s[0] != '\0');
        CHECK_MSG(strcmp(s, "MPIXFER_UNKNOWN") == 0, "unknown %d named '%s'", unknown[i], s);
        CHECK_MSG(strcmp(e, "unknown status") == 0, "unknown %d text '%s'", unknown[i], e);
    }
    const char *v = mpixfer_version();
    char expect[64];
    snprintf(expect, sizeof expect, "%d.%d.%d", MPIXFER_VERSION_MAJOR, MPIXFER_VERSION_MINOR,
             MPIXFER_VERSION_PATCH);
    CHECK(v != NULL);
    CHECK_MSG(strcmp(v, expect) == 0, "version '%s', expected '%s'", v, expect);
    return tst_finish("test_status");
}
